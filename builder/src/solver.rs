//! The solver: walks the graph from the wanted vertices down, each vertex once, inputs in
//! parallel, each looked up by its cache key before it runs.
//!
//! It knows nothing of Dockerfiles: a [`Worker`] says what a vertex's sources digest to
//! and how to execute it; the solver does keys, cache, ordering, parallelism and events.

use std::sync::OnceLock;
use std::time::Instant;

use crate::cache::{CacheKey, CacheRecord, CacheStore, KeyRecipe};
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, Graph, Layer, Op, Vertex, VertexId};
use crate::progress::{Event, Progress};

/// The result of a vertex: its filesystem as a layer chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The layers, base first.
    pub layers: Vec<Layer>,
}

/// A solved vertex: its key, its state, and when its result was made (None for base images).
type Solved = (CacheKey, State, Option<String>);

/// Executes vertices for the solver.
pub trait Worker: Sync {
    /// The digest of exactly the files a vertex reads: context files, or the files a
    /// `COPY --from` selects in its source input (then the key leaves that input's key out).
    fn sources_digest(&self, v: &Vertex, inputs: &[State]) -> Result<Option<oci::Digest>>;
    /// Runs the vertex on its inputs' results.
    fn execute(&self, id: VertexId, v: &Vertex, inputs: &[State]) -> Result<State>;
    /// True while a cached result is still usable (its blobs exist).
    fn usable(&self, rec: &CacheRecord) -> bool;
}

/// Solves vertices of one graph; each is solved at most once, from any thread.
pub struct Solver<'a> {
    graph: &'a Graph,
    worker: &'a dyn Worker,
    cache: &'a dyn CacheStore,
    progress: &'a dyn Progress,
    done: Vec<OnceLock<std::result::Result<Solved, String>>>,
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
        let done = (0..graph.vertices.len()).map(|_| OnceLock::new()).collect();
        Solver { graph, worker, cache, progress, done, errors: std::sync::Mutex::new(Vec::new()) }
    }

    /// Solves `targets` (in parallel) and returns their states.
    pub fn solve(&self, targets: &[VertexId]) -> Result<Vec<State>> {
        let results: Vec<Option<State>> = std::thread::scope(|s| {
            let handles: Vec<_> =
                targets.iter().map(|t| s.spawn(move || self.vertex(*t).ok().map(|(_, st, _)| st))).collect();
            handles.into_iter().map(|h| h.join().ok().flatten()).collect()
        });
        if let Some(first) =
            self.errors.lock().ok().and_then(|mut e| if e.is_empty() { None } else { Some(e.remove(0)) })
        {
            return Err(first);
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::Internal("a build step failed without an error".into())))
            .collect()
    }

    /// The key and state of one vertex, solving its inputs first (the others in parallel with the first).
    fn vertex(&self, id: VertexId) -> std::result::Result<Solved, String> {
        self.done[id]
            .get_or_init(|| {
                let v = &self.graph.vertices[id];
                let inputs: Vec<std::result::Result<Solved, String>> = std::thread::scope(|s| {
                    let rest: Vec<_> = v.inputs.iter().skip(1).map(|i| s.spawn(move || self.vertex(*i))).collect();
                    let first = v.inputs.first().map(|i| self.vertex(*i));
                    first
                        .into_iter()
                        .chain(
                            rest.into_iter()
                                .map(|h| h.join().unwrap_or_else(|_| Err("a build thread panicked".into()))),
                        )
                        .collect()
                });
                let inputs: Vec<(CacheKey, State)> =
                    inputs.into_iter().map(|r| r.map(|(k, st, _)| (k, st))).collect::<std::result::Result<_, _>>()?;
                self.run(id, v, &inputs).map_err(|e| {
                    let msg = e.to_string();
                    if let Ok(mut errs) = self.errors.lock() {
                        errs.push(e);
                    }
                    msg
                })
            })
            .clone()
    }

    fn run(&self, id: VertexId, v: &Vertex, inputs: &[(CacheKey, State)]) -> Result<Solved> {
        let started = Instant::now();
        if let Op::Image { manifest, layers } = &v.op {
            // A base image is its own key; it was resolved before the solve.
            self.progress.event(Event::Cached { id, name: v.name.clone() });
            return Ok((CacheKey(manifest.clone()), State { layers: layers.clone() }, None));
        }
        let epoch = crate::cache::source_date_epoch();
        // A `COPY --from` is first looked up by its definition (the source stage's key, not
        // its files): a hit then needs no byte of the source stage, which may live only in
        // an imported cache. Its record names the content key the result is known by.
        let definition = definition_key(v, inputs, epoch);
        if let (false, Some(dk)) = (v.no_cache, &definition) {
            if let Some(hit) = self.hit(id, v, dk, inputs)? {
                return Ok(hit);
            }
        }
        let states: Vec<State> = inputs.iter().map(|(_, s)| s.clone()).collect();
        let sources = self.worker.sources_digest(v, &states)?;
        // Every layer a step writes has its mtimes clamped to SOURCE_DATE_EPOCH.
        let key = key_of(v, inputs, sources.as_ref(), epoch);
        if v.no_cache {
            self.progress.event(Event::Miss { id, reason: "caching is off for this step (--no-cache)".into() });
        } else {
            match self.hit(id, v, &key, inputs)? {
                Some(hit) => {
                    self.alias(definition.as_ref(), &hit.0)?;
                    return Ok(hit);
                }
                None => self.progress.event(Event::Miss { id, reason: miss_reason(v, sources.as_ref()) }),
            }
        }
        self.progress.event(Event::Started { id, name: v.name.clone() });
        let result = self.worker.execute(id, v, &states);
        self.progress.event(Event::Done {
            id,
            took: started.elapsed(),
            error: result.as_ref().err().map(|e| oci::error::one_line(e)),
        });
        let state = result?;
        let created = oci::store::created_now();
        let below = inputs.first().map_or(0, |(_, s)| s.layers.len());
        let layers = if is_link(v) {
            // Remember only the linked layer: it is valid on any destination.
            let own = if state.layers.len() > below { state.layers.last().cloned() } else { None };
            own.into_iter().collect()
        } else {
            state.layers.clone()
        };
        self.cache.set_record(&key, &CacheRecord { layers, created: Some(created.clone()), result_key: None })?;
        self.alias(definition.as_ref(), &key)?;
        Ok((key, state, Some(created)))
    }

    /// Records the result of `key` under the definition key too (a `COPY --from`).
    fn alias(&self, definition: Option<&CacheKey>, key: &CacheKey) -> Result<()> {
        let (Some(dk), Some(rec)) = (definition, self.cache.record(key)?) else { return Ok(()) };
        self.cache.set_record(dk, &CacheRecord { result_key: Some(key.clone()), ..rec })
    }

    /// The cached result of `key`, if the cache has a usable one.
    fn hit(&self, id: VertexId, v: &Vertex, key: &CacheKey, inputs: &[(CacheKey, State)]) -> Result<Option<Solved>> {
        let rec = match self.cache.record(key)? {
            Some(rec) if self.worker.usable(&rec) => rec,
            Some(_) => {
                self.progress.event(Event::Miss { id, reason: "cached layers were pruned".into() });
                return Ok(None);
            }
            None => return Ok(None),
        };
        self.progress.event(Event::Cached { id, name: v.name.clone() });
        let created = match rec.created.clone() {
            Some(c) => c,
            None => {
                // A record from before berth kept times: date it now, once.
                let c = oci::store::created_now();
                self.cache.set_record(key, &CacheRecord { created: Some(c.clone()), ..rec.clone() })?;
                c
            }
        };
        let layers = if is_link(v) {
            // The cached layer goes on top of whatever the destination is now.
            let mut l = inputs.first().map(|(_, s)| s.layers.clone()).unwrap_or_default();
            l.extend(rec.layers.last().cloned());
            l
        } else {
            rec.layers
        };
        Ok(Some((rec.result_key.unwrap_or_else(|| key.clone()), State { layers }, Some(created))))
    }
}

/// True for a `--link` copy: its layer does not depend on what it is copied onto.
fn is_link(v: &Vertex) -> bool {
    matches!(&v.op, Op::Copy(c) if c.link)
}

/// The definition key of a `COPY --from` another stage: every input's key and no file
/// digest (None for other steps).
fn definition_key(v: &Vertex, inputs: &[(CacheKey, State)], epoch: Option<u64>) -> Option<CacheKey> {
    let Op::Copy(c) = &v.op else { return None };
    if c.from != CopyFrom::Input {
        return None;
    }
    let link = c.link;
    Some(
        KeyRecipe {
            version: 2,
            op: &v.op,
            inputs: inputs.iter().enumerate().filter(|(i, _)| !(link && *i == 0)).map(|(_, (k, _))| k).collect(),
            sources: None,
            epoch,
        }
        .key(),
    )
}

/// The cache key of a vertex from its op, its inputs' keys and its sources' digest.
///
/// An input the key leaves out: the destination of a `--link` copy (the layer does not depend
/// on it), and the source stage of a `COPY --from` whose selected files were digested (the copy
/// depends on those files' content, not on how the stage made them: BuildKit's content keys).
fn key_of(v: &Vertex, inputs: &[(CacheKey, State)], sources: Option<&oci::Digest>, epoch: Option<u64>) -> CacheKey {
    let (link, by_content) = match &v.op {
        Op::Copy(c) => (c.link, c.from == CopyFrom::Input && sources.is_some()),
        _ => (false, false),
    };
    let skip = |i: usize| (link && i == 0) || (by_content && i == 1);
    KeyRecipe {
        version: 2,
        op: &v.op,
        inputs: inputs.iter().enumerate().filter(|(i, _)| !skip(*i)).map(|(_, (k, _))| k).collect(),
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
    /// The state of a vertex solved by [`Solver::solve`] (None if it was not needed or failed).
    pub fn state(&self, id: VertexId) -> Option<State> {
        self.done.get(id)?.get()?.as_ref().ok().map(|(_, s, _)| s.clone())
    }

    /// When the result of a solved vertex was made: now for a step that ran, the cache
    /// record's time for a hit, None for a base image. The image history's `created`.
    pub fn created(&self, id: VertexId) -> Option<String> {
        self.done.get(id)?.get()?.as_ref().ok().and_then(|(_, _, c)| c.clone())
    }

    /// The steps a cache export carries, each with the record the cache holds for it:
    /// `mode=min` the steps of `target`'s own filesystem chain (the final image's), `mode=max`
    /// every step that was solved, in every stage. Base images are not steps.
    pub fn steps(&self, target: VertexId, mode: crate::cache::remote::Mode) -> Vec<crate::cache::remote::export::Step> {
        let ids: Vec<VertexId> = match mode {
            crate::cache::remote::Mode::Max => (0..self.graph.vertices.len()).collect(),
            crate::cache::remote::Mode::Min => {
                let mut chain = vec![];
                let mut at = Some(target);
                while let Some(id) = at {
                    chain.push(id);
                    at = self.graph.vertices[id].inputs.first().copied();
                }
                chain.reverse();
                chain
            }
        };
        ids.into_iter().flat_map(|id| self.step(id)).collect()
    }

    /// One solved step as an export carries it: its record, and for a `COPY --from` the
    /// same record under its definition key (none for base images and unsolved vertices).
    fn step(&self, id: VertexId) -> Vec<crate::cache::remote::export::Step> {
        let v = &self.graph.vertices[id];
        if matches!(v.op, Op::Image { .. } | Op::Scratch) {
            return vec![];
        }
        let Some(step) = self.content_step(id, v) else { return vec![] };
        let inputs: Option<Vec<(CacheKey, State)>> = v
            .inputs
            .iter()
            .map(|i| self.done.get(*i)?.get()?.as_ref().ok().map(|(k, s, _)| (k.clone(), s.clone())))
            .collect();
        let definition = inputs.and_then(|i| definition_key(v, &i, crate::cache::source_date_epoch()));
        let alias = definition.map(|dk| crate::cache::remote::export::Step {
            key: dk,
            record: CacheRecord { result_key: Some(step.key.clone()), ..step.record.clone() },
            ..step.clone()
        });
        std::iter::once(step).chain(alias).collect()
    }

    /// A solved step under the key it is known by.
    fn content_step(&self, id: VertexId, v: &Vertex) -> Option<crate::cache::remote::export::Step> {
        let (key, state, created) = self.done.get(id)?.get()?.as_ref().ok()?.clone();
        let input = |i: &VertexId| self.done.get(*i)?.get()?.as_ref().ok().map(|(k, s, _)| (k.clone(), s.layers.len()));
        let inputs: Vec<(CacheKey, usize)> = v.inputs.iter().filter_map(input).collect();
        // A `--link` copy's record is its own layer alone, as the solver stored it.
        let link = matches!(&v.op, Op::Copy(c) if c.link);
        let layers = match (link, inputs.first()) {
            (true, Some((_, below))) if state.layers.len() > *below => {
                state.layers.last().cloned().into_iter().collect()
            }
            (true, _) => vec![],
            (false, _) => state.layers,
        };
        Some(crate::cache::remote::export::Step {
            key,
            inputs: inputs.into_iter().map(|(k, _)| k).collect(),
            record: CacheRecord { layers, created, result_key: None },
            name: v.name.clone(),
        })
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
        Vertex { op, inputs, name: name.into(), stage: None, at: 0, no_cache: false }
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
        // Different selected files: the copy runs again.
        worker.sources.lock().unwrap().insert("copy".into(), oci::Digest::of(b"other files"));
        Solver::new(&new, &worker, &cache, &NoProgress).solve(&[2]).unwrap();
        assert_eq!(worker.runs.load(Ordering::SeqCst), 2, "new content: a miss");
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
        let inputs: Vec<(CacheKey, State)> =
            [0u8, 1].iter().map(|n| (CacheKey(oci::Digest::of(&[*n])), State { layers: vec![] })).collect();
        let v = &g.vertices[2];
        let none = key_of(v, &inputs, None, None);
        assert_ne!(none, key_of(v, &inputs, None, Some(1_700_000_000)));
        assert_ne!(key_of(v, &inputs, None, Some(1)), key_of(v, &inputs, None, Some(2)));
        assert_eq!(none, key_of(v, &inputs, None, None), "keys are stable");
    }
}
