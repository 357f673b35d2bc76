//! The solver: walks the graph from the wanted vertices down, each vertex once, inputs in
//! parallel, each looked up by its cache key before it runs.
//!
//! It knows nothing of Dockerfiles: a [`Worker`] says what a vertex's sources digest to
//! and how to execute it; the solver does keys, cache, ordering, parallelism and events.

use std::sync::OnceLock;
use std::time::Instant;

use crate::cache::{CacheKey, CacheRecord, CacheStore, KeyRecipe};
use crate::error::{Error, Result};
use crate::graph::{Graph, Layer, Op, Vertex, VertexId};
use crate::progress::{Event, Progress};

/// The result of a vertex: its filesystem as a layer chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The layers, base first.
    pub layers: Vec<Layer>,
}

/// Executes vertices for the solver.
pub trait Worker: Sync {
    /// The digest of the files a vertex reads from outside the graph (context files), if any.
    fn sources_digest(&self, v: &Vertex) -> Result<Option<oci::Digest>>;
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
    done: Vec<OnceLock<std::result::Result<(CacheKey, State), String>>>,
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
                targets.iter().map(|t| s.spawn(move || self.vertex(*t).ok().map(|(_, st)| st))).collect();
            handles.into_iter().map(|h| h.join().ok().flatten()).collect()
        });
        if let Some(first) =
            self.errors.lock().ok().and_then(|mut e| if e.is_empty() { None } else { Some(e.remove(0)) })
        {
            return Err(first);
        }
        results.into_iter().map(|r| r.ok_or_else(|| Error::Internal("a build step failed without an error".into()))).collect()
    }

    /// The key and state of one vertex, solving its inputs first (the others in parallel with the first).
    fn vertex(&self, id: VertexId) -> std::result::Result<(CacheKey, State), String> {
        self.done[id]
            .get_or_init(|| {
                let v = &self.graph.vertices[id];
                let inputs: Vec<std::result::Result<(CacheKey, State), String>> = std::thread::scope(|s| {
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
                let inputs: Vec<(CacheKey, State)> = inputs.into_iter().collect::<std::result::Result<_, _>>()?;
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

    fn run(&self, id: VertexId, v: &Vertex, inputs: &[(CacheKey, State)]) -> Result<(CacheKey, State)> {
        let started = Instant::now();
        if let Op::Image { manifest, layers } = &v.op {
            // A base image is its own key; it was resolved before the solve.
            self.progress.event(Event::Cached { id, name: v.name.clone() });
            return Ok((CacheKey(manifest.clone()), State { layers: layers.clone() }));
        }
        let sources = self.worker.sources_digest(v)?;
        // `--link` copies do not depend on what they are copied onto.
        let link = matches!(&v.op, Op::Copy(c) if c.link);
        let recipe = KeyRecipe {
            version: 2,
            op: &v.op,
            inputs: inputs.iter().enumerate().filter(|(i, _)| !(link && *i == 0)).map(|(_, (k, _))| k).collect(),
            sources: sources.clone(),
        };
        let key = recipe.key();
        let base_layers =
            |inputs: &[(CacheKey, State)]| inputs.first().map(|(_, s)| s.layers.clone()).unwrap_or_default();
        if !v.no_cache {
            match self.cache.record(&key)? {
                Some(rec) if self.worker.usable(&rec) => {
                    self.progress.event(Event::Cached { id, name: v.name.clone() });
                    let layers = if link {
                        // The cached layer goes on top of whatever the destination is now.
                        let mut l = base_layers(inputs);
                        l.extend(rec.layers.last().cloned());
                        l
                    } else {
                        rec.layers
                    };
                    return Ok((key, State { layers }));
                }
                Some(_) => self.progress.event(Event::Miss { id, reason: "cached layers were pruned".into() }),
                None => self.progress.event(Event::Miss { id, reason: miss_reason(v, sources.as_ref()) }),
            }
        } else {
            self.progress.event(Event::Miss { id, reason: "caching is off for this step (--no-cache)".into() });
        }
        self.progress.event(Event::Started { id, name: v.name.clone() });
        let states: Vec<State> = inputs.iter().map(|(_, s)| s.clone()).collect();
        let result = self.worker.execute(id, v, &states);
        self.progress.event(Event::Done {
            id,
            took: started.elapsed(),
            error: result.as_ref().err().map(|e| oci::error::one_line(e)),
        });
        let state = result?;
        let record = if link {
            // Remember only the linked layer: it is valid on any destination.
            let own = if state.layers.len() > base_layers(inputs).len() { state.layers.last().cloned() } else { None };
            CacheRecord { layers: own.into_iter().collect() }
        } else {
            CacheRecord { layers: state.layers.clone() }
        };
        self.cache.set_record(&key, &record)?;
        Ok((key, state))
    }
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
        self.done.get(id)?.get()?.as_ref().ok().map(|(_, s)| s.clone())
    }
}
