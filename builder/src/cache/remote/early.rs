//! Export work done while the build runs (issue 15 item 6): each layer a step writes is
//! compressed on one thread and sent to the registry caches the build will export to on
//! another, while the next steps run: a layer's upload overlaps the next one's compression.
//! A step whose layer stays deferred makes the first carrying export's twin itself, from
//! the diff that gives the layer its digest ([`Early::codec_of`]); here it is then found
//! made and only sent. The export at the end finds the compressed twins made and the blobs
//! present (HEAD-skip), and sends only the rest and the manifest.
//!
//! Early work is an optimisation only: a compression or upload that fails here is done
//! again by the export at the end, which reports its error as the export's.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::Instant;

use oci::content::ContentStore;
use oci::ImageStore;

use super::export::Codec;
use super::{CacheBackend, ExportSpec, Location, Mode, Net};
use crate::cache::CacheRecord;
use crate::error::Result;
use crate::graph::{Graph, Layer, Op, Vertex, VertexId};
use crate::solver::{State, Worker};

/// One `--cache-to` that takes layers early.
struct Target<'a> {
    backend: Box<dyn CacheBackend + 'a>,
    codec: Codec,
    /// By vertex: whether the export carries that step's layers (all for mode=max; the
    /// final image's chain for mode=min).
    carries: Vec<bool>,
    /// By vertex: whether its layer may travel as a skeleton (mode=max, a COPY from the
    /// context outside the final images' chains; see [`super::skeleton`]).
    skeletons: Vec<bool>,
}

impl Target<'_> {
    /// The codec step `id`'s layer is wanted in.
    fn codec_for(&self, id: VertexId) -> Codec {
        match self.skeletons.get(id).copied().unwrap_or(false) {
            true => self.codec.skeleton(),
            false => self.codec,
        }
    }
}

/// The early part of a build's cache exports: a queue of new layers and where they go.
pub struct Early<'a> {
    targets: Vec<Target<'a>>,
    queue: Mutex<Option<Sender<(VertexId, Layer)>>>,
    work: Mutex<Option<Receiver<(VertexId, Layer)>>>,
    cancelled: AtomicBool,
    /// Layers handed over and not yet compressed and sent: what the build's end waits for.
    pending: AtomicUsize,
    /// The base images' layers, by the vertex that pulls them in: sent first, while the
    /// first steps run (the export at the end would otherwise wait on the largest blob).
    bases: Vec<(VertexId, Layer)>,
}

/// What the early export still had to do when the image was written, for the progress
/// output: the export's time would otherwise hide the wait.
pub struct Unfinished {
    /// Layers not yet compressed and sent then.
    pub layers: usize,
    /// When the image was written.
    pub since: Instant,
}

impl Unfinished {
    /// The progress line once the early work is done, or `None` when nothing was left.
    pub fn note(&self) -> Option<String> {
        (self.layers > 0).then(|| {
            let (n, s) = (self.layers, if self.layers == 1 { "" } else { "s" });
            let waited = self.since.elapsed().as_secs_f64();
            format!("exporting cache: {n} layer{s} still being compressed and sent when the image was written, done in {waited:.1}s")
        })
    }
}

impl<'a> Early<'a> {
    /// The early work of `specs` for a build of `targets` (one per platform) in `graph`:
    /// registry caches only (a local directory or S3 gains nothing from it). A cache that
    /// cannot be opened is left to the export at the end, which reports why.
    pub fn new(graph: &Graph, targets: &[VertexId], specs: &[ExportSpec], net: Option<Net<'a>>) -> Self {
        let chain = graph.chains(targets);
        let candidates = super::skeleton::candidates(graph, targets);
        let targets = specs
            .iter()
            .filter(|s| matches!(s.location, Location::Registry { .. }))
            .filter_map(|s| {
                let backend = super::open(&s.location, net).ok()??;
                let carries = match s.mode {
                    Mode::Max => vec![true; graph.vertices.len()],
                    Mode::Min => (0..graph.vertices.len()).map(|v| chain.contains(&v)).collect(),
                };
                let skeletons = match s.mode {
                    Mode::Max => candidates.clone(),
                    Mode::Min => vec![],
                };
                Some(Target { backend, codec: s.codec(), carries, skeletons })
            })
            .collect();
        let bases = graph
            .vertices
            .iter()
            .enumerate()
            .filter_map(|(id, v)| if let Op::Image { layers, .. } = &v.op { Some((id, layers)) } else { None })
            .flat_map(|(id, layers)| layers.iter().map(move |l| (id, l.clone())))
            .collect();
        let (tx, rx) = channel();
        Early {
            targets,
            queue: Mutex::new(Some(tx)),
            work: Mutex::new(Some(rx)),
            cancelled: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            bases,
        }
    }

    /// Runs the queue on two threads of `scope` until [`Early::close`]: one compresses each
    /// layer (`compress` makes or finds its twin), the other sends the twins.
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
        // Base layers this machine holds go first (a lazy one is not fetched for this).
        for (id, layer) in &self.bases {
            if store.content().contains(&layer.digest).unwrap_or(false) {
                self.push(*id, layer.clone());
            }
        }
        // Per layer: the twin for each target that carries it (`None` where compression
        // failed, left to the export at the end).
        let (twins_tx, twins_rx) = channel::<Vec<(usize, Option<Layer>)>>();
        scope.spawn(move || {
            for (id, layer) in rx {
                if self.cancelled.load(Ordering::Relaxed) {
                    break;
                }
                let twins = self.carriers(id).map(|(i, t)| (i, compress(&layer, t.codec_for(id)).ok())).collect();
                let _ = twins_tx.send(twins); // the sender stops only when this one does
            }
        });
        scope.spawn(move || {
            for twins in twins_rx {
                if !self.cancelled.load(Ordering::Relaxed) {
                    self.send(store, &twins);
                }
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    /// The codec of the twin the first target carrying step `id` wants of its layers, for
    /// the step to make while it diffs them (the others' twins are made here).
    pub fn codec_of(&self, id: VertexId) -> Option<Codec> {
        self.carriers(id).map(|(_, t)| t.codec_for(id)).next()
    }

    /// The targets that carry step `id`'s layers, with their index.
    fn carriers(&self, id: VertexId) -> impl Iterator<Item = (usize, &Target<'a>)> {
        self.targets.iter().enumerate().filter(move |(_, t)| t.carries.get(id).copied().unwrap_or(false))
    }

    /// One layer's twins to their targets. Errors are left to the export at the end (see
    /// the module's comment).
    fn send(&self, store: &ImageStore, twins: &[(usize, Option<Layer>)]) {
        for (i, twin) in twins {
            if let (Some(t), Some(z)) = (self.targets.get(*i), twin) {
                let _ = t.backend.send_early(store, &[(z.digest.clone(), z.size)]);
            }
        }
    }

    /// Hands a step's new layer to the queue (nothing when no target takes layers early).
    fn push(&self, id: VertexId, layer: Layer) {
        if self.targets.is_empty() {
            return;
        }
        if let Some(tx) = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            self.pending.fetch_add(1, Ordering::Relaxed);
            // The queue's threads are gone only after close(), or after a panic: then the
            // layer is left to the export at the end.
            if tx.send((id, layer)).is_err() {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Ends the queue: its threads finish what is queued (or, when `cancel`, stop after the
    /// layer at hand) and exit. Returns what was left to do, for [`Unfinished::note`].
    pub fn close(&self, cancel: bool) -> Unfinished {
        self.cancelled.store(cancel, Ordering::Relaxed);
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        Unfinished { layers: self.pending.load(Ordering::Relaxed), since: Instant::now() }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use oci::layer::Compression;

    use super::*;
    use crate::cache::remote::{Published, Upload};

    /// Layers compressed so far, and a signal for each.
    type Count = Arc<(Mutex<usize>, Condvar)>;

    /// Records what it is sent. Its first send waits (up to 10 s) until a second layer has
    /// been compressed, which happens only when sending and compressing overlap.
    struct Recorder {
        sent: Mutex<Vec<oci::Digest>>,
        /// Whether the first send saw the next layer compressed while it ran.
        overlapped: Mutex<Option<bool>>,
        compressed: Count,
    }

    impl CacheBackend for Arc<Recorder> {
        fn describe(&self) -> String {
            "recorder".into()
        }
        fn manifest(&self, _: &ImageStore) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn fetch(&self, _: &ImageStore, _: &oci::Digest, _: u64) -> Result<()> {
            Ok(())
        }
        fn publish(&self, _: &ImageStore, _: &Upload<'_>) -> Result<Published> {
            Ok(Published::default())
        }
        fn send_early(&self, _: &ImageStore, blobs: &[(oci::Digest, u64)]) -> Result<()> {
            let mut overlapped = self.overlapped.lock().unwrap();
            if overlapped.is_none() {
                let (count, cv) = &*self.compressed;
                let wait = cv.wait_timeout_while(count.lock().unwrap(), Duration::from_secs(10), |n| *n < 2);
                *overlapped = Some(!wait.unwrap().1.timed_out());
            }
            self.sent.lock().unwrap().extend(blobs.iter().map(|(d, _)| d.clone()));
            Ok(())
        }
    }

    fn layer(n: u8) -> Layer {
        let digest = oci::Digest::of(&[n]);
        Layer { digest: digest.clone(), diff_id: digest, size: 1, media_type: String::new() }
    }

    #[test]
    fn layers_go_to_the_targets_that_carry_their_step_and_sending_overlaps_compressing() {
        let compressed: Count = Arc::default();
        let recorders: Vec<Arc<Recorder>> = (0..2)
            .map(|_| {
                let compressed = Arc::clone(&compressed);
                Arc::new(Recorder { sent: Mutex::default(), overlapped: Mutex::default(), compressed })
            })
            .collect();
        let target = |r: &Arc<Recorder>, carries: Vec<bool>| Target {
            backend: Box::new(Arc::clone(r)),
            codec: Codec::from(Compression::Gzip),
            carries,
            skeletons: vec![],
        };
        let (tx, rx) = channel();
        let early = Early {
            targets: vec![
                target(&recorders[0], vec![true, true, true]),
                target(&recorders[1], vec![true, false, false]),
            ],
            queue: Mutex::new(Some(tx)),
            work: Mutex::new(Some(rx)),
            cancelled: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            bases: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        // Layer n's twin is layer n + 10.
        let compress = |l: &Layer, _: Codec| {
            let n = (0..=255u8).find(|n| layer(*n).digest == l.digest).unwrap();
            let (count, cv) = &*compressed;
            *count.lock().unwrap() += 1;
            cv.notify_all();
            Ok(layer(n + 10))
        };
        let unfinished = std::thread::scope(|s| {
            early.start(s, &store, &compress);
            for n in 0..3u8 {
                early.push(n.into(), layer(n));
            }
            early.close(false)
        });
        assert!(unfinished.layers <= 3);
        assert_eq!(early.pending.load(Ordering::Relaxed), 0, "every layer handed over was dealt with");
        let sent = |i: usize| recorders[i].sent.lock().unwrap().clone();
        assert_eq!(sent(0), [10, 11, 12].map(|n| layer(n).digest), "target 0 carries every step");
        assert_eq!(sent(1), [layer(10).digest], "target 1 carries step 0 only");
        assert_eq!(*recorders[0].overlapped.lock().unwrap(), Some(true), "the next layer compressed during a send");
    }

    #[test]
    fn the_note_counts_what_was_left_and_says_nothing_when_nothing_was() {
        let none = Unfinished { layers: 0, since: Instant::now() };
        assert_eq!(none.note(), None);
        let one = Unfinished { layers: 1, since: Instant::now() }.note().unwrap();
        assert!(one.starts_with("exporting cache: 1 layer still being compressed and sent"), "{one}");
        let two = Unfinished { layers: 2, since: Instant::now() }.note().unwrap();
        assert!(two.starts_with("exporting cache: 2 layers still"), "{two}");
    }
}
