//! The solver: walks the graph from the wanted vertices down, each vertex once, inputs in
//! parallel, each looked up by its cache key before it runs.
//!
//! Two phases per vertex, both lazy: its *key* (from its inputs' keys and the digest of the
//! files it reads), then, only when something needs its files, its *state* (the cached
//! result for a hit; for a miss, its inputs' states and an execution). So a build whose
//! final steps hit never runs, mounts or downloads the stages under them, as BuildKit does.
//!
//! It knows nothing of Dockerfiles: a [`Worker`] says what a vertex's sources digest to
//! and how to execute it; the solver does keys, cache, ordering, parallelism and events.

use std::sync::OnceLock;
use std::time::Instant;

use crate::cache::remote::export::Step;
use crate::cache::{key_version, CacheKey, CacheRecord, CacheStore, KeyRecipe};
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, Graph, Layer, Op, Vertex, VertexId};
use crate::progress::{Event, Progress};

/// The result of a vertex: its filesystem as a layer chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The layers, base first.
    pub layers: Vec<Layer>,
}

/// A solved vertex's files and when its result was made (None for a base image).
type Solved = (State, Option<String>);

/// A failure already reported (its error is in the solver's list): its message.
type Outcome<T> = std::result::Result<T, String>;

/// What the key phase learned of a vertex.
#[derive(Debug, Clone)]
struct Keyed {
    /// The key its result is known by.
    key: CacheKey,
    /// The cached result, as recorded, when the cache had a usable one (a base image's
    /// layers for `FROM`).
    hit: Option<CacheRecord>,
    /// Its definition key, when that differs from `key`: its record is aliased under it.
    definition: Option<CacheKey>,
}

/// What a vertex is by definition, known without running anything.
#[derive(Debug, Clone)]
struct Defined {
    /// Its definition key: from its inputs' definition keys and the context files it reads,
    /// never another stage's files.
    key: CacheKey,
    /// The digest of its context sources.
    sources: Option<oci::Digest>,
    /// True when it or a step under it has caching off (`--no-cache`, `--no-cache-filter`):
    /// such a step runs, so what depends on it is keyed by what it makes, not by definition.
    uncached: bool,
}

/// Executes vertices for the solver.
pub trait Worker: Sync {
    /// The digest of exactly the files a vertex reads: context files, or the files a
    /// `COPY --from` selects in its source input (then the key leaves that input's key out).
    /// Only a `COPY --from` gets its inputs' states; other vertices get empty ones.
    fn sources_digest(&self, v: &Vertex, inputs: &[State]) -> Result<Option<oci::Digest>>;
    /// Runs the vertex on its inputs' results.
    fn execute(&self, id: VertexId, v: &Vertex, inputs: &[State]) -> Result<State>;
    /// True while a cached result is still usable (its blobs exist, here or in an imported cache).
    fn usable(&self, rec: &CacheRecord) -> bool;
}

/// Solves vertices of one graph; each is keyed and run at most once, from any thread.
pub struct Solver<'a> {
    graph: &'a Graph,
    worker: &'a dyn Worker,
    cache: &'a dyn CacheStore,
    progress: &'a dyn Progress,
    keys: Vec<OnceLock<Outcome<Keyed>>>,
    definitions: Vec<OnceLock<Outcome<Defined>>>,
    states: Vec<OnceLock<Outcome<Solved>>>,
    errors: std::sync::Mutex<Vec<Error>>,
}

impl<'a> Solver<'a> {
    /// A solver for `graph`.
    pub fn new(
        graph: &'a Graph,
        worker: &'a dyn Worker,
        cache: &'a dyn CacheStore,
        progress: &'a dyn Progress,
    ) -> Self {
        let n = graph.vertices.len();
        Solver {
            graph,
            worker,
            cache,
            progress,
            keys: (0..n).map(|_| OnceLock::new()).collect(),
            definitions: (0..n).map(|_| OnceLock::new()).collect(),
            states: (0..n).map(|_| OnceLock::new()).collect(),
            errors: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Solves `targets` (in parallel) and returns their states. Every step under them with
    /// caching off runs, even under a step that hits, as `--no-cache-filter` promises.
    pub fn solve(&self, targets: &[VertexId]) -> Result<Vec<State>> {
        let all: Vec<VertexId> = targets.iter().copied().chain(self.uncached_under(targets)).collect();
        let results = self
            .parallel(&all, |t| self.state_of(t).map(|(s, _)| s))
            .map(|mut states| states.drain(..targets.len()).collect::<Vec<_>>());
        if let Some(first) =
            self.errors.lock().ok().and_then(|mut e| if e.is_empty() { None } else { Some(e.remove(0)) })
        {
            return Err(first);
        }
        results.map_err(|e| Error::Internal(format!("a build step failed without an error: {e}")))
    }

    /// The top steps with caching off that `targets` depend on (running one runs what is
    /// under it).
    fn uncached_under(&self, targets: &[VertexId]) -> Vec<VertexId> {
        let mut seen = vec![false; self.graph.vertices.len()];
        let mut todo: Vec<VertexId> = targets.to_vec();
        let mut out = Vec::new();
        while let Some(id) = todo.pop() {
            if std::mem::replace(&mut seen[id], true) {
                continue;
            }
            let v = &self.graph.vertices[id];
            match v.no_cache {
                true => out.push(id),
                false => todo.extend(&v.inputs),
            }
        }
        out
    }

    /// `f` of every id, the first on this thread and the others on threads of their own.
    fn parallel<T: Send>(&self, ids: &[VertexId], f: impl Fn(VertexId) -> Outcome<T> + Sync) -> Outcome<Vec<T>> {
        let f = &f;
        std::thread::scope(|s| {
            let rest: Vec<_> = ids.iter().skip(1).map(|i| s.spawn(move || f(*i))).collect();
            let first = ids.first().map(|i| f(*i));
            first
                .into_iter()
                .chain(rest.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a build thread panicked".into()))))
                .collect()
        })
    }

    /// Keeps a vertex's own error for [`Solver::solve`] and passes on its message.
    fn report<T>(&self, r: Result<T>) -> Outcome<T> {
        r.map_err(|e| {
            let msg = e.to_string();
            if let Ok(mut errs) = self.errors.lock() {
                errs.push(e);
            }
            msg
        })
    }

    fn key(&self, id: VertexId) -> Outcome<Keyed> {
        self.keys[id].get_or_init(|| self.compute_key(id)).clone()
    }

    fn state_of(&self, id: VertexId) -> Outcome<Solved> {
        self.states[id].get_or_init(|| self.compute_state(id)).clone()
    }

    fn defined(&self, id: VertexId) -> Outcome<Defined> {
        self.definitions[id].get_or_init(|| self.compute_definition(id)).clone()
    }

    /// A vertex's definition key: what its key would be if every `COPY --from` were keyed
    /// by its source stage's definition instead of the files it selects. Computing it never
    /// runs, mounts or downloads anything.
    fn compute_definition(&self, id: VertexId) -> Outcome<Defined> {
        let v = &self.graph.vertices[id];
        if let Op::Image { manifest, .. } = &v.op {
            return Ok(Defined { key: CacheKey(manifest.clone()), sources: None, uncached: false });
        }
        let below = self.parallel(&v.inputs, |i| self.defined(i))?;
        let uncached = v.no_cache || below.iter().any(|d| d.uncached);
        let inputs: Vec<CacheKey> = below.into_iter().map(|d| d.key).collect();
        let epoch = crate::cache::source_date_epoch();
        if let Op::Copy(c) = &v.op {
            if c.from == CopyFrom::Input {
                let link = c.link;
                let inputs = inputs.iter().enumerate().filter(|(i, _)| !(link && *i == 0)).map(|(_, k)| k).collect();
                let key = KeyRecipe { version: key_version(&v.op), op: &v.op, inputs, sources: None, epoch }.key();
                return Ok(Defined { key, sources: None, uncached });
            }
        }
        let no_states = vec![State { layers: vec![] }; v.inputs.len()];
        let sources = self.report(self.worker.sources_digest(v, &no_states))?;
        Ok(Defined { key: key_of(v, &inputs, sources.as_ref(), epoch), sources, uncached })
    }

    /// A vertex's key, and its cached result if the cache has one. Looked up by its
    /// definition first: a hit there needs nothing of the stages under it. Else its inputs'
    /// keys, and their files only for a `COPY --from`.
    fn compute_key(&self, id: VertexId) -> Outcome<Keyed> {
        let v = &self.graph.vertices[id];
        if let Op::Image { manifest, layers } = &v.op {
            // A base image is its own key; it was resolved before the solve.
            self.progress.event(Event::Cached { id, name: v.name.clone() });
            let hit = CacheRecord { layers: layers.clone(), created: None, result_key: None };
            return Ok(Keyed { key: CacheKey(manifest.clone()), hit: Some(hit), definition: None });
        }
        let Defined { key: dk, sources: cheap_sources, uncached } = self.defined(id)?;
        if !uncached {
            if let Some(rec) = self.report(self.lookup(id, v, &dk))? {
                let key = rec.result_key.clone().unwrap_or_else(|| dk.clone());
                let definition = (key != dk).then_some(dk);
                return Ok(Keyed { key, hit: Some(rec), definition });
            }
        }
        // A `COPY --from` reads its sources' files: every input's key and files at once, so
        // two stages it copies from (through the chain under it) are built in parallel.
        let copy_from = matches!(&v.op, Op::Copy(c) if c.from == CopyFrom::Input);
        let below = self.parallel(&v.inputs, |i| {
            let key = self.key(i)?.key;
            Ok((key, if copy_from { Some(self.state_of(i)?.0) } else { None }))
        })?;
        let (inputs, states): (Vec<CacheKey>, Vec<Option<State>>) = below.into_iter().unzip();
        let sources = match copy_from {
            true => self.report(self.worker.sources_digest(v, &states.into_iter().flatten().collect::<Vec<_>>()))?,
            false => cheap_sources,
        };
        // Every layer a step writes has its mtimes clamped to SOURCE_DATE_EPOCH.
        let key = key_of(v, &inputs, sources.as_ref(), crate::cache::source_date_epoch());
        let definition = (key != dk).then_some(dk);
        if v.no_cache {
            self.progress.event(Event::Miss { id, reason: "caching is off for this step (--no-cache)".into() });
            return Ok(Keyed { key, hit: None, definition });
        }
        let hit = match (&definition, uncached) {
            (None, false) => None, // the definition key was this key, and it missed
            _ => self.report(self.lookup(id, v, &key))?,
        };
        match &hit {
            Some(_) => self.report(self.alias(definition.as_ref(), &key))?,
            None => self.progress.event(Event::Miss { id, reason: miss_reason(v, sources.as_ref()) }),
        }
        Ok(Keyed { key, hit, definition })
    }

    /// The usable record of `key`, if the cache has one (dated now if it never was).
    fn lookup(&self, id: VertexId, v: &Vertex, key: &CacheKey) -> Result<Option<CacheRecord>> {
        let rec = match self.cache.record(key)? {
            Some(rec) if self.worker.usable(&rec) => rec,
            Some(_) => {
                self.progress.event(Event::Miss { id, reason: "cached layers were pruned".into() });
                return Ok(None);
            }
            None => return Ok(None),
        };
        self.progress.event(Event::Cached { id, name: v.name.clone() });
        if rec.created.is_some() {
            return Ok(Some(rec));
        }
        // A record from before berth kept times: date it now, once.
        let rec = CacheRecord { created: Some(oci::store::created_now()), ..rec };
        self.cache.set_record(key, &rec)?;
        Ok(Some(rec))
    }

    /// Records the result of `key` under the definition key too (a `COPY --from`).
    fn alias(&self, definition: Option<&CacheKey>, key: &CacheKey) -> Result<()> {
        let (Some(dk), Some(rec)) = (definition, self.cache.record(key)?) else { return Ok(()) };
        self.cache.set_record(dk, &CacheRecord { result_key: Some(key.clone()), ..rec })
    }

    /// A vertex's files: the cached layers for a hit, else its inputs' states and a run.
    fn compute_state(&self, id: VertexId) -> Outcome<Solved> {
        let keyed = self.key(id)?;
        let v = &self.graph.vertices[id];
        if let Some(rec) = &keyed.hit {
            let layers = match (is_link(v), v.inputs.first()) {
                // The cached layer goes on top of whatever the destination is now.
                (true, Some(dest)) => {
                    let mut l = self.state_of(*dest)?.0.layers;
                    l.extend(rec.layers.last().cloned());
                    l
                }
                _ => rec.layers.clone(),
            };
            return Ok((State { layers }, rec.created.clone()));
        }
        let states = self.parallel(&v.inputs, |i| self.state_of(i).map(|(s, _)| s))?;
        self.report(self.execute(id, v, &keyed, &states))
    }

    /// Runs a step that missed and records its result.
    fn execute(&self, id: VertexId, v: &Vertex, keyed: &Keyed, inputs: &[State]) -> Result<Solved> {
        let started = Instant::now();
        self.progress.event(Event::Started { id, name: v.name.clone() });
        let result = self.worker.execute(id, v, inputs);
        self.progress.event(Event::Done {
            id,
            took: started.elapsed(),
            error: result.as_ref().err().map(|e| oci::error::one_line(e)),
        });
        let state = result?;
        let created = oci::store::created_now();
        let below = inputs.first().map_or(0, |s| s.layers.len());
        let layers = own_layers(v, &state, below);
        self.cache.set_record(&keyed.key, &CacheRecord { layers, created: Some(created.clone()), result_key: None })?;
        self.alias(keyed.definition.as_ref(), &keyed.key)?;
        Ok((state, Some(created)))
    }
}

/// What a step's record holds: its whole chain, or for a `--link` copy only its own layer
/// (valid on any destination).
fn own_layers(v: &Vertex, state: &State, below: usize) -> Vec<Layer> {
    match is_link(v) {
        true if state.layers.len() > below => state.layers.last().cloned().into_iter().collect(),
        true => vec![],
        false => state.layers.clone(),
    }
}

/// True for a `--link` copy: its layer does not depend on what it is copied onto.
fn is_link(v: &Vertex) -> bool {
    matches!(&v.op, Op::Copy(c) if c.link)
}

/// The cache key of a vertex from its op, its inputs' keys and its sources' digest.
///
/// An input the key leaves out: the destination of a `--link` copy (the layer does not depend
/// on it), and the source stage of a `COPY --from` whose selected files were digested (the copy
/// depends on those files' content, not on how the stage made them: BuildKit's content keys).
fn key_of(v: &Vertex, inputs: &[CacheKey], sources: Option<&oci::Digest>, epoch: Option<u64>) -> CacheKey {
    let (link, by_content) = match &v.op {
        Op::Copy(c) => (c.link, c.from == CopyFrom::Input && sources.is_some()),
        _ => (false, false),
    };
    let skip = |i: usize| (link && i == 0) || (by_content && i == 1);
    KeyRecipe {
        version: key_version(&v.op),
        op: &v.op,
        inputs: inputs.iter().enumerate().filter(|(i, _)| !skip(*i)).map(|(_, k)| k).collect(),
        sources: sources.cloned(),
        epoch,
    }
    .key()
}

fn miss_reason(v: &Vertex, sources: Option<&oci::Digest>) -> String {
    match sources {
        Some(d) => format!("no cached result for these inputs (sources {})", d.short()),
        None => match v.op {
            Op::Exec(_) => "no cached result for this command on this parent".into(),
            _ => "no cached result for this step on this parent".into(),
        },
    }
}

impl Solver<'_> {
    /// What is known of a vertex after the solve without running anything: its key phase,
    /// or, for a vertex only defined (the steps under a hit), its record under its definition.
    fn known(&self, id: VertexId) -> Option<Keyed> {
        if let Some(k) = self.keys.get(id)?.get() {
            return k.as_ref().ok().cloned();
        }
        if let Op::Image { manifest, layers } = &self.graph.vertices.get(id)?.op {
            let hit = CacheRecord { layers: layers.clone(), created: None, result_key: None };
            return Some(Keyed { key: CacheKey(manifest.clone()), hit: Some(hit), definition: None });
        }
        let dk = self.definitions.get(id)?.get()?.as_ref().ok()?.key.clone();
        let rec = self.cache.record(&dk).ok()??;
        if !self.worker.usable(&rec) {
            return None;
        }
        let key = rec.result_key.clone().unwrap_or_else(|| dk.clone());
        let definition = (key != dk).then_some(dk);
        Some(Keyed { key, hit: Some(rec), definition })
    }

    /// The files of a solved vertex: known for every step that ran or hit, without running
    /// anything (None if it was not needed, missed without running, or failed).
    pub fn state(&self, id: VertexId) -> Option<State> {
        if let Some(Ok((s, _))) = self.states.get(id)?.get() {
            return Some(s.clone());
        }
        let rec = self.known(id)?.hit?;
        let v = &self.graph.vertices[id];
        match (is_link(v), v.inputs.first()) {
            (true, Some(dest)) => {
                let mut l = self.state(*dest)?.layers;
                l.extend(rec.layers.last().cloned());
                Some(State { layers: l })
            }
            _ => Some(State { layers: rec.layers }),
        }
    }

    /// When the result of a solved vertex was made: now for a step that ran, the cache
    /// record's time for a hit, None for a base image. The image history's `created`.
    pub fn created(&self, id: VertexId) -> Option<String> {
        if let Some(Ok((_, c))) = self.states.get(id)?.get() {
            return c.clone();
        }
        self.known(id)?.hit?.created
    }

    /// The steps a cache export carries, each with the record the cache holds for it:
    /// `mode=min` the steps of `target`'s own filesystem chain (the final image's), `mode=max`
    /// every step that ran or hit, in every stage. Base images are not steps.
    pub fn steps(&self, targets: &[VertexId], mode: crate::cache::remote::Mode) -> Vec<Step> {
        let ids: Vec<VertexId> = match mode {
            crate::cache::remote::Mode::Max => (0..self.graph.vertices.len()).collect(),
            crate::cache::remote::Mode::Min => self.graph.chains(targets),
        };
        ids.into_iter().flat_map(|id| self.step(id)).collect()
    }

    /// One step as an export carries it: its record, and for a `COPY --from` the same record
    /// under its definition key (nothing for base images and steps without a result).
    fn step(&self, id: VertexId) -> Vec<Step> {
        let v = &self.graph.vertices[id];
        if matches!(v.op, Op::Image { .. } | Op::Scratch) {
            return vec![];
        }
        let Some(keyed) = self.known(id) else { return vec![] };
        let record = match (&keyed.hit, self.states[id].get()) {
            (Some(rec), _) => CacheRecord { result_key: None, ..rec.clone() },
            (None, Some(Ok((state, created)))) => {
                let below = v.inputs.first().and_then(|i| self.state(*i)).map_or(0, |s| s.layers.len());
                CacheRecord { layers: own_layers(v, state, below), created: created.clone(), result_key: None }
            }
            _ => return vec![],
        };
        let inputs = v.inputs.iter().filter_map(|i| self.known(*i).map(|k| k.key)).collect();
        let step = Step { key: keyed.key.clone(), inputs, record, name: v.name.clone() };
        let alias = keyed.definition.clone().map(|dk| Step {
            key: dk,
            record: CacheRecord { result_key: Some(keyed.key.clone()), ..step.record.clone() },
            ..step.clone()
        });
        std::iter::once(step).chain(alias).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::cache::MemoryCache;
    use crate::graph::{CopyOp, CopySrc};
    use crate::progress::NoProgress;

    /// A worker that makes one fake layer per executed step and counts those executions.
    #[derive(Default)]
    struct FakeWorker {
        runs: AtomicUsize,
        /// What `sources_digest` answers, by vertex name.
        sources: Mutex<HashMap<String, oci::Digest>>,
    }

    impl Worker for FakeWorker {
        fn sources_digest(&self, v: &Vertex, _inputs: &[State]) -> Result<Option<oci::Digest>> {
            Ok(self.sources.lock().unwrap().get(&v.name).cloned())
        }
        fn execute(&self, _id: VertexId, v: &Vertex, inputs: &[State]) -> Result<State> {
            if matches!(v.op, Op::Scratch) {
                return Ok(State { layers: vec![] });
            }
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            let mut layers = inputs.first().map(|s| s.layers.clone()).unwrap_or_default();
            let d = oci::Digest::of(format!("{} run {n}", v.name).as_bytes());
            layers.push(Layer { digest: d.clone(), diff_id: d, size: 1, media_type: "tar".into() });
            Ok(State { layers })
        }
        fn usable(&self, _rec: &CacheRecord) -> bool {
            true
        }
    }

    fn vertex(op: Op, inputs: Vec<VertexId>, name: &str) -> Vertex {
        Vertex { op, inputs, name: name.into(), at: 0, no_cache: false }
    }

    fn image(n: u8) -> Op {
        Op::Image { manifest: oci::Digest::of(&[n]), layers: vec![] }
    }

    /// `FROM image(base)` as the source stage, `FROM scratch` + `COPY --from=0 /out /out`.
    fn copy_from_graph(base: u8) -> Graph {
        let mut g = Graph::default();
        let src = g.add(vertex(image(base), vec![], "source"));
        let dest = g.add(vertex(Op::Scratch, vec![], "dest"));
        let copy = CopyOp {
            from: CopyFrom::Input,
            sources: vec![CopySrc::Path("/out".into())],
            dest: "/out".into(),
            dest_is_dir: false,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: vec![],
            unpack_archives: false,
        };
        g.add(vertex(Op::Copy(copy), vec![dest, src], "copy"));
        g
    }

    #[test]
    fn a_cached_rebuild_keeps_each_steps_creation_time() {
        let cache = MemoryCache::default();
        let worker = FakeWorker::default();
        let g = copy_from_graph(1);
        let first = Solver::new(&g, &worker, &cache, &NoProgress);
        first.solve(&[2]).unwrap();
        let made = first.created(2).expect("a step that ran is dated");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = Solver::new(&g, &worker, &cache, &NoProgress);
        again.solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 1, "the rebuild is a cache hit");
        assert_eq!(again.created(2), Some(made), "a hit keeps the first run's time");
        assert_eq!(again.created(0), None, "a base image has no time of its own");
    }

    #[test]
    fn copy_from_with_the_same_selected_files_hits_although_the_source_changed() {
        let cache = MemoryCache::default();
        let worker = FakeWorker::default();
        worker.sources.lock().unwrap().insert("copy".into(), oci::Digest::of(b"same files"));
        let old = copy_from_graph(1);
        Solver::new(&old, &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        // The source stage is another image now, but the files the COPY selects are the same.
        let new = copy_from_graph(2);
        let s = Solver::new(&new, &worker, &cache, &NoProgress);
        s.solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 1, "same content: cached");
        // A third source stage with other files: the copy runs again.
        worker.sources.lock().unwrap().insert("copy".into(), oci::Digest::of(b"other files"));
        Solver::new(&copy_from_graph(3), &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2, "new content: a miss");
        // The same source stage again: its definition key hits without reading its files.
        worker.sources.lock().unwrap().insert("copy".into(), oci::Digest::of(b"not asked"));
        Solver::new(&copy_from_graph(3), &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2, "same source stage: a hit by definition");
    }

    /// `FROM image(1)`, a RUN on it, and `FROM scratch` + `COPY --from` of that RUN's stage.
    fn two_stage_graph() -> Graph {
        let mut g = copy_from_graph(1);
        let Op::Copy(mut step) = g.vertices[2].op.clone() else { unreachable!("a copy") };
        step.from = CopyFrom::Context;
        let run = g.add(vertex(Op::Copy(step), vec![0], "build step"));
        g.vertices[2].inputs[1] = run;
        g
    }

    #[test]
    fn a_final_step_that_hits_never_runs_the_stages_under_it() {
        let cache = MemoryCache::default();
        let worker = FakeWorker::default();
        let g = two_stage_graph();
        Solver::new(&g, &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2, "the build step and the copy ran");
        // The build step's record is lost (a cache that carried the final steps only).
        let key = Solver::new(&g, &worker, &cache, &NoProgress);
        key.solve(&[2]).unwrap();
        let lost = key.definitions[3].get().unwrap().as_ref().unwrap().key.clone();
        cache.put(format!("result/{lost}").as_bytes(), b"{}").unwrap();
        let again = Solver::new(&g, &worker, &cache, &NoProgress);
        let state = again.solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2, "the copy hit by definition; its stage did not run");
        assert_eq!(state[0].layers.len(), 1);
        assert_eq!(again.state(3), None, "the build stage was keyed, never run");
    }

    #[test]
    fn a_stage_with_caching_off_runs_under_a_final_step_that_hits() {
        let cache = MemoryCache::default();
        let worker = FakeWorker::default();
        worker.sources.lock().unwrap().insert("copy".into(), oci::Digest::of(b"the built files"));
        let g = two_stage_graph();
        Solver::new(&g, &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2);
        // --no-cache-filter on the build stage: it runs; its files are the same, so the
        // copy hits by content.
        let mut filtered = two_stage_graph();
        filtered.vertices[3].no_cache = true;
        Solver::new(&filtered, &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 3, "the build stage ran, the copy hit");
    }

    #[test]
    fn without_a_content_digest_copy_from_follows_the_source_stage() {
        let cache = MemoryCache::default();
        let worker = FakeWorker::default();
        Solver::new(&copy_from_graph(1), &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        Solver::new(&copy_from_graph(2), &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn source_date_epoch_is_part_of_every_steps_key() {
        let g = copy_from_graph(1);
        let inputs: Vec<CacheKey> = [0u8, 1].iter().map(|n| CacheKey(oci::Digest::of(&[*n]))).collect();
        let v = &g.vertices[2];
        let none = key_of(v, &inputs, None, None);
        assert_ne!(none, key_of(v, &inputs, None, Some(1_700_000_000)));
        assert_ne!(key_of(v, &inputs, None, Some(1)), key_of(v, &inputs, None, Some(2)));
        assert_eq!(none, key_of(v, &inputs, None, None), "keys are stable");
    }
}
