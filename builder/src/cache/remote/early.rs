//! Export work done while the build runs (issue 15 item 6): each layer a step writes is
//! compressed, and sent to the registry caches the build will export to, on a thread of its
//! own while the next steps run. The export at the end then finds the compressed twins made
//! and the blobs present (HEAD-skip), and sends only the rest and the manifest.
//!
//! Early work is an optimisation only: a compression or upload that fails here is done
//! again by the export at the end, which reports its error as the export's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use oci::ImageStore;

use super::export::Codec;
use super::{CacheBackend, ExportSpec, Location, Mode, Net};
use crate::cache::CacheRecord;
use crate::error::Result;
use crate::graph::{Graph, Layer, Vertex, VertexId};
use crate::solver::{State, Worker};

/// One `--cache-to` that takes layers early.
struct Target<'a> {
    backend: Box<dyn CacheBackend + 'a>,
    codec: Codec,
    /// By vertex: whether the export carries that step's layers (all for mode=max; the
    /// final image's chain for mode=min).
    carries: Vec<bool>,
}

/// The early part of a build's cache exports: a queue of new layers and where they go.
pub struct Early<'a> {
    targets: Vec<Target<'a>>,
    queue: Mutex<Option<Sender<(VertexId, Layer)>>>,
    work: Mutex<Option<Receiver<(VertexId, Layer)>>>,
    cancelled: AtomicBool,
}

impl<'a> Early<'a> {
    /// The early work of `specs` for a build of `targets` (one per platform) in `graph`:
    /// registry caches only (a local directory or S3 gains nothing from it). A cache that
    /// cannot be opened is left to the export at the end, which reports why.
    pub fn new(graph: &Graph, targets: &[VertexId], specs: &[ExportSpec], net: Option<Net<'a>>) -> Self {
        let chain = graph.chains(targets);
        let targets = specs
            .iter()
            .filter(|s| matches!(s.location, Location::Registry { .. }))
            .filter_map(|s| {
                let backend = super::open(&s.location, net).ok()??;
                let carries = match s.mode {
                    Mode::Max => vec![true; graph.vertices.len()],
                    Mode::Min => (0..graph.vertices.len()).map(|v| chain.contains(&v)).collect(),
                };
                Some(Target { backend, codec: s.codec(), carries })
            })
            .collect();
        let (tx, rx) = channel();
        Early { targets, queue: Mutex::new(Some(tx)), work: Mutex::new(Some(rx)), cancelled: AtomicBool::new(false) }
    }

    /// Runs the queue on a thread of `scope` until [`Early::close`]; `compress` makes (or
    /// finds) a layer's compressed twin.
    pub fn start<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        store: &'s ImageStore,
        compress: &'s (dyn Fn(&Layer, Codec) -> Result<Layer> + Sync),
    ) {
        let Some(rx) = self.work.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else { return };
        if self.targets.is_empty() {
            return;
        }
        scope.spawn(move || {
            for (id, layer) in rx {
                if self.cancelled.load(Ordering::Relaxed) {
                    break;
                }
                self.send(store, compress, id, &layer);
            }
        });
    }

    /// One layer to every target that carries its step. Errors are left to the export at
    /// the end (see the module's comment).
    fn send(&self, store: &ImageStore, compress: &dyn Fn(&Layer, Codec) -> Result<Layer>, id: VertexId, l: &Layer) {
        for t in self.targets.iter().filter(|t| t.carries.get(id).copied().unwrap_or(false)) {
            if let Ok(z) = compress(l, t.codec) {
                let _ = t.backend.send_early(store, &[(z.digest, z.size)]);
            }
        }
    }

    /// Hands a step's new layer to the queue (nothing when no target takes layers early).
    fn push(&self, id: VertexId, layer: Layer) {
        if self.targets.is_empty() {
            return;
        }
        if let Some(tx) = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            let _ = tx.send((id, layer)); // the queue's thread is gone only after close()
        }
    }

    /// Ends the queue: its thread finishes what is queued (or, when `cancel`, stops after
    /// the layer at hand) and exits.
    pub fn close(&self, cancel: bool) {
        self.cancelled.store(cancel, Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

/// A [`Worker`] that hands every layer a step writes to an [`Early`] export.
pub struct EarlyWorker<'w> {
    /// Does the work.
    pub inner: &'w dyn Worker,
    /// Takes the new layers.
    pub early: &'w Early<'w>,
}

impl Worker for EarlyWorker<'_> {
    fn sources_digest(&self, v: &Vertex, inputs: &[State]) -> Result<Option<oci::Digest>> {
        self.inner.sources_digest(v, inputs)
    }

    fn execute(&self, id: VertexId, v: &Vertex, inputs: &[State]) -> Result<State> {
        let state = self.inner.execute(id, v, inputs)?;
        let below = inputs.first().map_or(0, |s| s.layers.len());
        for l in state.layers.iter().skip(below) {
            self.early.push(id, l.clone());
        }
        Ok(state)
    }

    fn usable(&self, rec: &CacheRecord) -> bool {
        self.inner.usable(rec)
    }
}
