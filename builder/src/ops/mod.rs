//! The worker: how each op runs on this machine.
//!
//! RUN prepares an active snapshot on its parent's chain, runs the process through the
//! runner's [`Executor`], and turns the snapshot's upper directory into the new layer
//! (tar, compression and sha256 in one pass). COPY and ADD stream the selected files as a
//! tar into the mounted snapshot through the runner's safe unpacker (every path resolved
//! inside the root), then diff the same way; `--link` copies become a layer directly,
//! without looking at the destination.

pub(crate) mod archive;
mod copy;
mod exec;
mod mounts;
mod owner;
mod reuse;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci::content::{ContentStore, Expected};
use oci::layer::{Compression, LayerWriter};
use oci::ImageStore;
use runner::exec::Executor;
use runner::snapshot::{Mount, Snapshotter};

use crate::cache::deferred::Deferred;
use crate::cache::remote::export::Codec;
use crate::cache::remote::skeleton::{self, ContextFiles};
use crate::cache::remote::LazyBlobs;
use crate::cache::{CacheRecord, CacheStore};
use crate::context::{Context, Ignore};
use crate::dockerfile::mount::MountType;
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, CopySrc, Layer, Op, Vertex, VertexId};
use crate::progress::Progress;
use crate::solver::{State, Worker};

/// A `--secret` given to the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `src=PATH`: a host file.
    File(PathBuf),
    /// `env=VAR`: a host environment variable's value.
    Env(String),
}

/// Writes a plain tar layer into the content store with `fill`; None when the tar holds no
/// entry. Steps write plain tars: most never reach an image (intermediate stages), and those
/// that do are compressed once, at export (see `build::export_layers`).
pub(crate) fn write_plain_layer(
    store: &ImageStore,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Option<Layer>> {
    let ingest = store.content().writer(oci::Algorithm::Sha256).map_err(Error::image("start a layer"))?;
    plain_layer(ingest, fill)
}

/// A plain tar layer written by `fill` into `ingest` (a store's, or one that keeps nothing);
/// None when the tar holds no entry.
fn plain_layer(
    ingest: Box<dyn oci::content::BlobWriter>,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Option<Layer>> {
    Ok(layer_into(ingest, Compression::None, None, fill)?.map(|(layer, _)| layer))
}

/// The layer `fill` writes into `ingest`, compressed as asked, committed, with its tar's
/// size; None (and nothing kept) when the tar holds no entry.
fn layer_into(
    ingest: Box<dyn oci::content::BlobWriter>,
    compression: Compression,
    level: Option<u32>,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Option<(Layer, u64)>> {
    let mut w = LayerWriter::into_ingest(ingest, compression, level).map_err(Error::image("start a layer"))?;
    fill(&mut w)?;
    let (ingest, info) = w.finish().map_err(Error::image("finish a layer"))?;
    // Two 512-byte end blocks and nothing else: no file changed (an empty cache mount).
    if info.uncompressed_size <= 1024 {
        ingest.abort().map_err(Error::image("drop an empty layer"))?;
        return Ok(None);
    }
    ingest.commit(Expected::exactly(&info.digest, info.size)).map_err(Error::image("store a layer"))?;
    let layer = Layer {
        digest: info.digest,
        diff_id: info.diff_id,
        size: info.size,
        media_type: info.compression.oci_media_type().to_owned(),
    };
    Ok(Some((layer, info.uncompressed_size)))
}

/// Writes every byte to both: a layer's tar to its digest and to its skeleton.
struct Tee<A, B>(A, B);

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

/// Executes ops against the local store, snapshots and sandbox.
pub struct LocalWorker<'a> {
    /// Layers and images.
    pub store: &'a ImageStore,
    /// Snapshots of layer chains.
    pub snapshotter: &'a dyn Snapshotter,
    /// Runs RUN steps.
    pub executor: &'a dyn Executor,
    /// The build context, if the build has one.
    pub context: Option<&'a Context>,
    /// `--build-context`s by name (their local directories are read by `COPY --from`).
    pub named: &'a std::collections::BTreeMap<String, crate::context::NamedContext>,
    /// The stat cache for context hashing.
    pub cache: &'a dyn CacheStore,
    /// Where step output goes.
    pub progress: &'a dyn Progress,
    /// Where temporary mountpoints and cache mounts live (`$BERTH_ROOT`).
    pub root: PathBuf,
    /// `--secret`s by id.
    pub secrets: HashMap<String, Secret>,
    /// `--ssh` agent sockets by id.
    pub ssh: HashMap<String, PathBuf>,
    /// The Dockerfile, for errors that point at a step.
    pub dockerfile: (&'a str, &'a str),
    /// Downloads a URL to a file (ADD of a URL).
    pub fetch: &'a (dyn Fn(&str, &Path) -> Result<()> + Sync),
    /// URLs downloaded while computing keys, by URL, for the step that copies them.
    pub downloads: std::sync::Mutex<HashMap<String, PathBuf>>,
    /// Layers of imported cache records, fetched only when a step needs their files.
    pub lazy: &'a dyn LazyBlobs,
    /// By step: the codec of the compressed twin a cache export will want of its layer
    /// (see [`crate::cache::remote::early`]), made from the same diff as the layer's digest.
    pub twin_codec: &'a (dyn Fn(VertexId) -> Option<Codec> + Sync),
}

impl LocalWorker<'_> {
    /// The directory a copy reads from: the build context, or a named one.
    fn context_of(&self, from: &CopyFrom) -> Option<&Context> {
        match from {
            CopyFrom::Named(name) => match self.named.get(name) {
                Some(crate::context::NamedContext::Dir(ctx)) => Some(ctx),
                _ => None,
            },
            _ => self.context,
        }
    }
}

impl Worker for LocalWorker<'_> {
    fn sources_digest(&self, v: &Vertex, inputs: &[State]) -> Result<Option<oci::Digest>> {
        match &v.op {
            Op::Copy(c) if c.from == CopyFrom::Input => inputs.get(1).map(|s| self.input_digest(v, c, s)).transpose(),
            Op::Copy(c)
                if c.from != CopyFrom::Input && c.sources.iter().any(|s| !matches!(s, CopySrc::Inline { .. })) =>
            {
                let mut h = oci::Algorithm::Sha256.hasher();
                let paths: Vec<String> = c
                    .sources
                    .iter()
                    .filter_map(|s| if let CopySrc::Path(p) = s { Some(p.clone()) } else { None })
                    .collect();
                if !paths.is_empty() {
                    let ctx = self
                        .context_of(&c.from)
                        .ok_or_else(|| self.err_at(v, "COPY from the context, but the build has no context"))?;
                    let exclude =
                        Ignore::parse(&c.exclude.join("\n")).map_err(|e| self.err_at(v, format!("--exclude: {e}")))?;
                    h.update(
                        ctx.copy_digest(&paths, &exclude, self.cache)
                            .map_err(|e| self.at(v, e))?
                            .to_string()
                            .as_bytes(),
                    );
                }
                for s in &c.sources {
                    if let CopySrc::Url { url, checksum } = s {
                        // A URL is keyed by what it serves now; --checksum pins it.
                        h.update(format!("\nurl {url} {}", self.download(v, url, checksum.as_ref())?).as_bytes());
                    }
                }
                Ok(Some(h.finish()))
            }
            Op::Exec(e) => {
                let binds: Vec<String> = e
                    .mounts
                    .iter()
                    .filter(|m| m.spec.kind == MountType::Bind && m.input.is_none())
                    .map(|m| m.spec.source.clone().unwrap_or_else(|| ".".into()))
                    .collect();
                match (binds.is_empty(), self.context) {
                    (true, _) => Ok(None),
                    (false, Some(ctx)) => ctx.digest(&binds, &Ignore::default(), self.cache).map(Some),
                    (false, None) => Err(self.err_at(v, "RUN --mount=type=bind needs a build context")),
                }
            }
            _ => Ok(None),
        }
    }

    fn execute(&self, id: VertexId, v: &Vertex, inputs: &[State]) -> Result<State> {
        match &v.op {
            Op::Scratch => Ok(State { layers: vec![] }),
            Op::Image { layers, .. } => Ok(State { layers: layers.clone() }),
            Op::Exec(e) => self.in_private_mounts(|| self.exec(id, v, e, inputs)),
            Op::Copy(c) => self.in_private_mounts(|| self.copy(id, v, c, inputs)),
        }
    }

    fn usable(&self, rec: &CacheRecord) -> bool {
        rec.layers
            .iter()
            .all(|l| self.lazy.has(&l.digest) || self.store.content().info(&l.digest).is_ok_and(|i| i.is_some()))
    }
}

/// A unique name for temporary snapshots and directories of this process.
fn unique(tag: &str, id: VertexId) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("build-{tag}-{}-{id}-{n}", std::process::id())
}

impl LocalWorker<'_> {
    /// An error at the Dockerfile line of step `v`.
    fn err_at(&self, v: &Vertex, message: impl Into<String>) -> Error {
        Error::at(self.dockerfile.0, self.dockerfile.1, v.at, message)
    }

    /// `e` at step `v`'s line, where the user must change something for it: a refused
    /// source, or a context file berth may not read.
    fn at(&self, v: &Vertex, e: Error) -> Error {
        match e {
            Error::Context { path, reason } => self.err_at(v, format!("{path}: {reason}")),
            Error::Io { what, source } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                self.err_at(v, format!("{what}: {source}"))
            }
            other => other,
        }
    }

    /// The committed snapshot holding `layers` (unpacked now if it is missing). Only the
    /// layers above the longest chain that is already unpacked need their blobs: those that
    /// came from an imported cache are fetched now, once.
    fn chain(&self, layers: &[Layer]) -> Result<Option<String>> {
        let pairs: Vec<(oci::Digest, String)> =
            layers.iter().map(|l| (l.digest.clone(), l.diff_id.to_string())).collect();
        let diff_ids: Vec<String> = pairs.iter().map(|(_, d)| d.clone()).collect();
        let chains = runner::rootfs::chain_ids(&diff_ids);
        let unpacked = chains.iter().rposition(|c| self.snapshotter.exists(c)).map_or(0, |i| i + 1);
        // A layer made as it is read (from a skeleton) is unpacked without being stored.
        let mut streams = HashMap::new();
        for l in &layers[unpacked..] {
            match self.lazy.stream(self.store, &l.digest)? {
                Some(r) => drop(streams.insert(l.digest.clone(), r)),
                None => self.lazy.ensure(self.store, &l.digest)?,
            }
        }
        let streamed: Vec<oci::Digest> = streams.keys().cloned().collect();
        let streams = std::sync::Mutex::new(streams);
        let stream = |d: &oci::Digest| streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(d);
        runner::rootfs::ensure_chain_from(self.store, &pairs, self.snapshotter, &stream).map_err(|e| {
            // A cache's layer whose diffID is not its record's (its cache is dropped), or that
            // could not be written from its skeleton (that skeleton is no longer used).
            let spoilt = match &e {
                runner::rootfs::RootfsError::DiffId { layer, .. } => Some(layer),
                runner::rootfs::RootfsError::Unpack(layer, _) => streamed.contains(layer).then_some(layer),
                _ => None,
            };
            // A layer written from its skeleton is named as the cache's, like one stored first.
            let what = spoilt.filter(|l| streamed.contains(l)).and_then(|l| self.lazy.origin(l));
            if let Some(layer) = spoilt {
                self.lazy.reject(self.store, layer);
            }
            match what {
                Some(what) => Error::RemoteCache { what, source: Box::new(e) },
                None => Error::runner("unpack the parent layers")(e),
            }
        })
    }

    /// Writes a layer with `fill`; None when it holds no entries.
    fn write_layer(&self, fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<Option<Layer>> {
        write_plain_layer(self.store, fill)
    }

    /// Turns the active snapshot `key` on `parent` into step `id`'s result. Where the
    /// snapshotter can write the layer again later, only its digest is taken now (see
    /// [`crate::cache::deferred`]), and the compressed twin a cache export wants of it is
    /// made from the same diff. `known` are the files a copy wrote, with their digests.
    fn finish_snapshot(
        &self,
        id: VertexId,
        key: &str,
        mut layers: Vec<Layer>,
        known: &[reuse::Known],
    ) -> Result<State> {
        let deferred = Deferred { cache: self.cache, snapshotter: self.snapshotter };
        let epoch = oci::layer::TarOptions::from_env().source_date_epoch;
        let diff =
            &mut |w: &mut dyn Write| self.snapshotter.diff(key, w).map_err(Error::runner("diff the step's changes"));
        let codec = (self.twin_codec)(id);
        let skeleton = codec.is_some_and(|c| c.skeleton).then_some(self.context).flatten();
        let twin = codec.and_then(|c| Some((c.compression, c.twin()?)));
        let layer = match (deferred.enabled(), skeleton, twin) {
            (true, Some(ctx), _) => self.layer_with_skeleton(ctx.files(), known, diff),
            (true, None, Some((compression, (name, level)))) => self.layer_with_twin(compression, &name, level, diff),
            (true, None, None) => plain_layer(oci::content::discarding(oci::Algorithm::Sha256), diff),
            (false, ..) => self.write_layer(diff),
        };
        let layer = match layer {
            Ok(l) => l,
            Err(e) => {
                let _cleanup = self.snapshotter.remove(key);
                return Err(e);
            }
        };
        let Some(layer) = layer else {
            self.snapshotter.remove(key).map_err(Error::runner("remove a snapshot"))?;
            return Ok(State { layers });
        };
        layers.push(layer);
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let name = runner::rootfs::chain_ids(&diff_ids).pop().unwrap_or_default();
        let top = layers.last().map(|l| l.digest.clone()).ok_or_else(|| Error::Internal("a layer vanished".into()))?;
        match self.snapshotter.commit(&name, key) {
            Ok(()) if deferred.enabled() => deferred.note(&top, &name, epoch)?,
            Ok(()) => {}
            // The same chain exists already (another stage made the same layer, or it was
            // unpacked from a blob, whose directories may carry other times): keep that one,
            // and where the layer has no blob yet, store it from this snapshot first.
            Err(runner::snapshot::SnapshotError::Exists(_)) => {
                let stored = self.store.content().contains(&top).map_err(Error::image("look up a layer"))?;
                let kept = match deferred.enabled() && !stored {
                    true => self.write_layer(diff).map(drop),
                    false => Ok(()),
                };
                self.snapshotter.remove(key).map_err(Error::runner("remove a snapshot"))?;
                kept?;
            }
            Err(e) => return Err(Error::runner("commit a snapshot")(e)),
        }
        Ok(State { layers })
    }

    /// The plain layer `fill` writes, hashed and not stored, and its twin compressed at
    /// `level`, stored and remembered in the cache as `name` for the export that sends it:
    /// the diff is read, tarred and hashed once for both. None when the tar holds no entry.
    fn layer_with_twin(
        &self,
        compression: Compression,
        name: &str,
        level: Option<u32>,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Option<Layer>> {
        let ingest = self.store.content().writer(oci::Algorithm::Sha256).map_err(Error::image("start a layer"))?;
        let Some((twin, tar_size)) = layer_into(ingest, compression, level, fill)? else { return Ok(None) };
        self.cache.set_compressed(&twin.diff_id, name, &twin)?;
        Ok(Some(Layer {
            digest: twin.diff_id.clone(),
            diff_id: twin.diff_id,
            size: tar_size,
            media_type: Compression::None.oci_media_type().to_owned(),
        }))
    }

    /// The plain layer `fill` writes, hashed and not stored, and its skeleton (see
    /// [`crate::cache::remote::skeleton`]), stored and remembered for the export that
    /// sends it, from the one diff (the files `known` to the copy not hashed again). When a
    /// file is not the context's, there is no skeleton
    /// and the export compresses the layer instead. None when the tar holds no entry.
    fn layer_with_skeleton(
        &self,
        files: &ContextFiles,
        known: &[reuse::Known],
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Option<Layer>> {
        let ingest = self.store.content().writer(oci::Algorithm::Sha256).map_err(Error::image("start a skeleton"))?;
        let hints = known.iter().map(reuse::Known::hint);
        let mut skeleton =
            skeleton::Writer::new(ingest, files).map_err(Error::io("start a skeleton"))?.with_hints(hints);
        let plain = LayerWriter::into_ingest(oci::content::discarding(oci::Algorithm::Sha256), Compression::None, None)
            .map_err(Error::image("start a layer"))?;
        let mut tee = Tee(plain, &mut skeleton);
        fill(&mut tee)?;
        let (ingest, info) = tee.0.finish().map_err(Error::image("finish a layer"))?;
        ingest.abort().map_err(Error::image("finish a layer"))?;
        if let Some(s) = skeleton::commit(skeleton, &info.diff_id, info.uncompressed_size)? {
            self.cache.set_compressed(&info.diff_id, skeleton::TWIN_NAME, &s)?;
        }
        Ok((info.uncompressed_size > 1024).then(|| Layer {
            digest: info.diff_id.clone(),
            diff_id: info.diff_id,
            size: info.uncompressed_size,
            media_type: Compression::None.oci_media_type().to_owned(),
        }))
    }

    /// A read-only mount of a layer chain for reading files (COPY --from).
    fn view_of(&self, layers: &[Layer]) -> Result<View<'_>> {
        let chain = self.chain(layers)?;
        let key = unique("from", 0);
        let mounts = self.snapshotter.view(&key, chain.as_deref()).map_err(Error::runner("view a stage"))?;
        let mut view =
            View { snapshotter: self.snapshotter, dir: self.root.join("tmp").join(&key), key, mounted: false };
        match mounts.as_slice() {
            // One layer: its directory is the view, nothing to mount.
            [Mount::Bind { source, .. }] => view.dir = source.clone(),
            _ => {
                std::fs::create_dir_all(&view.dir).map_err(Error::io(format!("create {}", view.dir.display())))?;
                mount_all(&mounts, &view.dir)?;
                view.mounted = true;
            }
        }
        Ok(view)
    }
}

/// A mounted read-only view, unmounted and removed when dropped.
struct View<'a> {
    snapshotter: &'a dyn Snapshotter,
    key: String,
    dir: PathBuf,
    mounted: bool,
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = runner::snapshot::unmount(&self.dir);
            let _ = std::fs::remove_dir(&self.dir);
        }
        let _ = self.snapshotter.remove(&self.key);
    }
}

/// A temporary file or directory tree, removed when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if std::fs::remove_dir_all(&self.0).is_err() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl LocalWorker<'_> {
    /// Runs `f` on a thread of its own in a private mount namespace (as root), so every
    /// mount a step makes (overlay roots, stage views) is gone when the step ends, even if
    /// berth dies half-way. Threads `f` starts, and their children, share that namespace.
    /// An executor that mounts nothing (`--isolation chroot`) runs `f` as it is.
    fn in_private_mounts<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        if !self.executor.mounts() {
            return f();
        }
        runner::sandbox::in_private_mounts(f).map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::PermissionDenied {
                std::io::Error::other(
                    "unshare is not permitted (no CAP_SYS_ADMIN, or a seccomp profile forbids it, as in an \
                     unprivileged container): build with --isolation chroot",
                )
            } else {
                e
            };
            Error::runner("private mount namespace")(e)
        })?
    }
}

fn mount_all(mounts: &[Mount], dir: &Path) -> Result<()> {
    for m in mounts {
        m.mount(dir).map_err(Error::runner(format!("mount {}", dir.display())))?;
    }
    Ok(())
}
