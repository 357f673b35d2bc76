//! The worker: how each op runs on this machine.
//!
//! RUN prepares an active snapshot on its parent's chain, runs the process through the
//! runner's [`Executor`], and turns the snapshot's upper directory into the new layer
//! (tar, compression and sha256 in one pass). COPY and ADD stream the selected files as a
//! tar into the mounted snapshot through the runner's safe unpacker (every path resolved
//! inside the root), then diff the same way; `--link` copies become a layer directly,
//! without looking at the destination.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci::content::{ContentStore, Expected};
use oci::layer::{Compression, LayerWriter};
use oci::ImageStore;
use runner::exec::Executor;
use runner::sandbox::{Network, Spec, User, Volume};
use runner::snapshot::{Mount, Snapshotter};

use crate::cache::{CacheRecord, CacheStore};
use crate::context::{Context, Ignore};
use crate::dockerfile::mount::{MountType, Sharing};
use crate::error::{Error, Located, Result};
use crate::graph::{CopyFrom, CopyOp, CopySrc, ExecOp, Layer, Op, Vertex, VertexId};
use crate::progress::{Event, Progress};
use crate::solver::{State, Worker};

/// A `--secret` given to the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `src=PATH`: a host file.
    File(PathBuf),
    /// `env=VAR`: a host environment variable's value.
    Env(String),
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
}

impl Worker for LocalWorker<'_> {
    fn sources_digest(&self, v: &Vertex) -> Result<Option<oci::Digest>> {
        match &v.op {
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
                        .context
                        .ok_or_else(|| Error::Option("COPY from the context, but the build has no context".into()))?;
                    let exclude =
                        Ignore::parse(&c.exclude.join("\n")).map_err(|e| Error::Option(format!("--exclude: {e}")))?;
                    h.update(
                        ctx.digest(&paths, &exclude, self.cache).map_err(|e| self.at(v, e))?.to_string().as_bytes(),
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
                    (false, None) => Err(Error::Option("RUN --mount=type=bind needs a build context".into())),
                }
            }
            _ => Ok(None),
        }
    }

    fn execute(&self, id: VertexId, v: &Vertex, inputs: &[State]) -> Result<State> {
        match &v.op {
            Op::Scratch => Ok(State { layers: vec![] }),
            Op::Image { layers, .. } => Ok(State { layers: layers.clone() }),
            Op::Exec(e) => in_private_mounts(|| self.exec(id, v, e, inputs)),
            Op::Copy(c) => in_private_mounts(|| self.copy(v, c, inputs)),
        }
    }

    fn usable(&self, rec: &CacheRecord) -> bool {
        rec.layers.iter().all(|l| self.store.content().info(&l.digest).is_ok_and(|i| i.is_some()))
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

    /// Downloads `url` once per build (kept for the copy) and returns its digest, checked
    /// against `--checksum` when given.
    fn download(&self, v: &Vertex, url: &str, checksum: Option<&oci::Digest>) -> Result<oci::Digest> {
        let dir = self.root.join("tmp").join(format!("downloads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let file = dir.join(oci::Digest::of(url.as_bytes()).hex());
        if !self.downloads.lock().is_ok_and(|d| d.contains_key(url)) {
            (self.fetch)(url, &file).map_err(|e| self.err_at(v, format!("ADD {url}: {}", oci::error::chain(&e))))?;
            if let Ok(mut d) = self.downloads.lock() {
                d.insert(url.to_owned(), file.clone());
            }
        }
        let algo = checksum.map_or(oci::Algorithm::Sha256, |c| c.algorithm());
        let got = crate::context::digest_file(&file, algo)?;
        if let Some(want) = checksum {
            if &got != want {
                return Err(self.err_at(
                    v,
                    format!("ADD {url}: checksum mismatch: --checksum says {want}, the download is {got}"),
                ));
            }
        }
        Ok(got)
    }

    fn at(&self, v: &Vertex, e: Error) -> Error {
        match e {
            Error::Context { path, reason } => self.err_at(v, format!("{path}: {reason}")),
            other => other,
        }
    }

    /// The committed snapshot holding `layers` (unpacked now if it is missing).
    fn chain(&self, layers: &[Layer]) -> Result<Option<String>> {
        let pairs: Vec<(oci::Digest, String)> =
            layers.iter().map(|l| (l.digest.clone(), l.diff_id.to_string())).collect();
        runner::rootfs::ensure_chain(self.store, &pairs, self.snapshotter)
            .map_err(Error::runner("unpack the parent layers"))
    }

    /// Writes a layer with `fill`; None when it holds no entries.
    fn write_layer(&self, fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<Option<Layer>> {
        let ingest = self.store.content().writer(oci::Algorithm::Sha256).map_err(Error::image("start a layer"))?;
        // Steps write plain tars: most never reach an image (intermediate stages), and those
        // that do are compressed once, at export (see `build::export_layers`).
        let mut w = LayerWriter::new(ingest, Compression::None).map_err(Error::image("start a layer"))?;
        fill(&mut w)?;
        let (ingest, info) = w.finish().map_err(Error::image("finish a layer"))?;
        // Two 512-byte end blocks and nothing else: the step changed no file.
        if info.uncompressed_size <= 1024 {
            ingest.abort().map_err(Error::image("drop an empty layer"))?;
            return Ok(None);
        }
        ingest.commit(Expected::exactly(&info.digest, info.size)).map_err(Error::image("store a layer"))?;
        Ok(Some(Layer {
            digest: info.digest,
            diff_id: info.diff_id,
            size: info.size,
            media_type: info.compression.oci_media_type().to_owned(),
        }))
    }

    /// Turns the active snapshot `key` on `parent` into the step's result.
    fn finish_snapshot(&self, key: &str, mut layers: Vec<Layer>) -> Result<State> {
        let layer =
            self.write_layer(&mut |w| self.snapshotter.diff(key, w).map_err(Error::runner("diff the step's changes")));
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
        match self.snapshotter.commit(&name, key) {
            Ok(()) => {}
            // The same chain exists already (another stage made the same layer): keep that one.
            Err(runner::snapshot::SnapshotError::Exists(_)) => {
                self.snapshotter.remove(key).map_err(Error::runner("remove a snapshot"))?;
            }
            Err(e) => return Err(Error::runner("commit a snapshot")(e)),
        }
        Ok(State { layers })
    }

    fn exec(&self, id: VertexId, v: &Vertex, e: &ExecOp, inputs: &[State]) -> Result<State> {
        let parent = self.chain(&inputs[0].layers)?;
        let key = unique("run", id);
        let mounts = self.snapshotter.prepare(&key, parent.as_deref()).map_err(Error::runner("prepare a snapshot"))?;
        let result = self.run_in(id, v, e, inputs, mounts, &key);
        match result {
            Ok(()) => self.finish_snapshot(&key, inputs[0].layers.clone()),
            Err(err) => {
                let _cleanup = self.snapshotter.remove(&key);
                Err(err)
            }
        }
    }

    fn run_in(
        &self,
        id: VertexId,
        v: &Vertex,
        e: &ExecOp,
        inputs: &[State],
        rootfs: Vec<Mount>,
        key: &str,
    ) -> Result<()> {
        let work = self.root.join("tmp").join(key);
        std::fs::create_dir_all(work.join("rootfs")).map_err(Error::io(format!("create {}", work.display())))?;
        let _work_cleanup = RemoveOnDrop(work.clone());
        let mut env = e.env.clone();
        let mut volumes = Vec::new();
        let mut tmpfs = Vec::new();
        let mut locks = Vec::new();
        let mut views = Vec::new();
        for (i, m) in e.mounts.iter().enumerate() {
            let spec = &m.spec;
            match spec.kind {
                MountType::Bind => {
                    let host = match m.input {
                        None => {
                            let ctx = self
                                .context
                                .ok_or_else(|| Error::Option("RUN --mount=type=bind needs a build context".into()))?;
                            let src = spec.source.clone().unwrap_or_else(|| ".".into());
                            let sel = ctx.select(&src).map_err(|err| self.at(v, err))?;
                            sel.into_iter().next().map(|s| s.path).unwrap_or_else(|| ctx.root().to_owned())
                        }
                        Some(input) => {
                            // A stage's or image's filesystem, mounted read-only for this step.
                            let view = self.view_of(&inputs[input].layers)?;
                            let sub = spec.source.as_deref().unwrap_or("/");
                            let host = crate::context::resolve_in_root(&view.dir, sub)
                                .map_err(Error::io(format!("RUN --mount from={:?}: source {sub}", spec.from)))?;
                            views.push(view);
                            host
                        }
                    };
                    let host = if spec.read_only {
                        host
                    } else {
                        // rw: the step may write, but the writes are thrown away with a copy.
                        let copy = work.join(format!("bind-rw-{i}"));
                        std::fs::create_dir_all(&copy).map_err(Error::io(format!("create {}", copy.display())))?;
                        if host.is_dir() {
                            runner::snapshot::copy_dir(&host, &copy)
                                .map_err(Error::runner("copy a writable bind mount"))?;
                            copy
                        } else {
                            let file = copy.join("file");
                            std::fs::copy(&host, &file).map_err(Error::io(format!("copy {}", host.display())))?;
                            file
                        }
                    };
                    volumes.push(Volume { host, container: spec.target.clone(), read_only: spec.read_only });
                }
                MountType::Cache => {
                    let id_key = oci::Digest::of(spec.id.clone().unwrap_or_default().as_bytes());
                    let base = self.root.join("cache-mounts");
                    let mut dir = base.join(id_key.hex());
                    let lock_path = base.join(format!("{}.lock", id_key.hex()));
                    std::fs::create_dir_all(&base).map_err(Error::io(format!("create {}", base.display())))?;
                    if spec.sharing != Sharing::Shared {
                        let f = std::fs::File::create(&lock_path)
                            .map_err(Error::io(format!("create {}", lock_path.display())))?;
                        let blocking = spec.sharing == Sharing::Locked;
                        let flags = if blocking {
                            rustix::fs::FlockOperation::LockExclusive
                        } else {
                            rustix::fs::FlockOperation::NonBlockingLockExclusive
                        };
                        if rustix::fs::flock(&f, flags).is_err() {
                            // sharing=private and in use: this step gets a fresh directory of its own.
                            dir = work.join(format!("cache-{i}"));
                        }
                        locks.push(f);
                    }
                    if !dir.exists() {
                        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
                        let mode = spec.mode.unwrap_or(0o755);
                        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
                            .map_err(Error::io(format!("chmod {}", dir.display())))?;
                        if spec.uid.is_some() || spec.gid.is_some() {
                            std::os::unix::fs::chown(&dir, spec.uid, spec.gid)
                                .map_err(Error::io(format!("chown {}", dir.display())))?;
                        }
                        // from=: a new cache starts as a copy of a stage's or image's directory.
                        if let Some(input) = m.input {
                            let view = self.view_of(&inputs[input].layers)?;
                            let src = spec.source.as_deref().unwrap_or("/");
                            let from = crate::context::resolve_in_root(&view.dir, src)
                                .map_err(Error::io(format!("RUN --mount=type=cache,from: source {src}")))?;
                            runner::snapshot::copy_dir(&from, &dir).map_err(Error::runner("seed a cache mount"))?;
                        }
                    }
                    volumes.push(Volume { host: dir, container: spec.target.clone(), read_only: spec.read_only });
                }
                MountType::Tmpfs => tmpfs.push(match spec.size {
                    Some(size) => format!("{}:mode=1777,size={size}", spec.target),
                    None => spec.target.clone(),
                }),
                MountType::Secret => {
                    let sid = spec.id.clone().unwrap_or_default();
                    let Some(secret) = self.secrets.get(&sid) else {
                        if spec.required {
                            return Err(Error::NotFound {
                                what: format!("secret {sid:?} (give it with --secret id={sid},src=FILE)"),
                            });
                        }
                        continue;
                    };
                    let value_file = match secret {
                        Secret::File(p) => p.clone(),
                        Secret::Env(var) => {
                            let p = work.join(format!("secret-{i}"));
                            let value = std::env::var(var).map_err(|_| Error::NotFound {
                                what: format!("environment variable {var} for secret {sid:?}"),
                            })?;
                            std::fs::write(&p, value).map_err(Error::io(format!("write {}", p.display())))?;
                            p
                        }
                    };
                    match &spec.env {
                        Some(var) => {
                            let value = std::fs::read_to_string(&value_file)
                                .map_err(Error::io(format!("read secret {sid:?}")))?;
                            env.push(format!("{var}={value}"));
                        }
                        None => {
                            volumes.push(Volume { host: value_file, container: spec.target.clone(), read_only: true })
                        }
                    }
                }
                MountType::Ssh => {
                    let sid = spec.id.clone().unwrap_or_default();
                    match self.ssh.get(&sid) {
                        Some(sock) => {
                            volumes.push(Volume {
                                host: sock.clone(),
                                container: spec.target.clone(),
                                read_only: true,
                            });
                            env.push(format!("SSH_AUTH_SOCK={}", spec.target));
                        }
                        None if spec.required => {
                            return Err(Error::NotFound {
                                what: format!("ssh agent {sid:?} (give it with --ssh {sid}=SOCKET)"),
                            })
                        }
                        None => {}
                    }
                }
            }
        }
        // Mount targets this step creates are scaffolding, not content: remember what existed.
        let upper = self.snapshotter.upper(key).map_err(Error::runner("find the snapshot"))?;
        let lowers: Vec<PathBuf> = match rootfs.first() {
            Some(Mount::Overlay { lower, .. }) => lower.clone(),
            _ => vec![],
        };
        // The sandbox's own mount targets too: /etc/hosts and friends, /proc, /sys, /dev.
        let sandbox_targets = runner::sandbox::MOUNTPOINTS.map(|(rel, _)| format!("/{rel}"));
        let scaffold: Vec<String> = volumes
            .iter()
            .map(|vol| vol.container.clone())
            .chain(tmpfs.iter().map(|t| t.split(':').next().unwrap_or(t).to_owned()))
            .chain(sandbox_targets)
            .filter(|t| !exists_in(&lowers, &upper, t))
            .collect();
        let spec = Spec {
            rootfs,
            mountpoint: work.join("rootfs"),
            args: e.args.clone(),
            env,
            cwd: e.cwd.clone(),
            user: e.user.clone().map(User),
            ids: None,
            hostname: "buildkitsandbox".into(),
            network: if e.host_network { Network::Host } else { Network::None },
            volumes,
            tmpfs,
            ulimits: vec![],
            read_only: false,
            etc: Some(runner::sandbox::EtcFiles::new("buildkitsandbox", e.host_network)),
            cgroups: vec![],
            init: false,
            console_socket: None,
            console_size: (24, 80),
        };
        let mut tail = Tail::default();
        let code = self.executor.run(&spec, &mut |chunk| {
            tail.push(chunk);
            self.progress.event(Event::Output { id, data: chunk.to_vec() });
        });
        drop(views);
        drop(locks);
        let code = code.map_err(Error::runner(format!("{}: start the process", v.name)))?;
        for t in &scaffold {
            remove_scaffold(&upper, t);
        }
        for t in &scaffold {
            remove_copied_up_parents(&upper, &lowers, t);
        }
        if code != 0 {
            return Err(Error::StepFailed {
                step: v.name.clone(),
                command: e.args.last().cloned().unwrap_or_default(),
                code,
                tail: tail.lines(),
                at: Box::new(Located::at(self.dockerfile.0, self.dockerfile.1, v.at)),
            });
        }
        Ok(())
    }

    fn copy(&self, v: &Vertex, c: &CopyOp, inputs: &[State]) -> Result<State> {
        let source_layers = inputs.get(1).map(|s| s.layers.as_slice());
        if c.link {
            // The layer is the copied files alone, whatever the destination holds.
            let layer = self.write_layer(&mut |w| {
                let mut tar = tar::Builder::new(w);
                let mut parents = String::new();
                for part in c.dest.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
                    if !c.dest_is_dir && parents.len() + part.len() + 1 >= c.dest.trim_matches('/').len() {
                        break;
                    }
                    parents.push_str(part);
                    parents.push('/');
                    append(&mut tar, &parents, Entry::dir(0o755))?;
                }
                self.emit(v, c, source_layers, None, &mut tar)?;
                tar.finish().map_err(Error::io("write a layer"))
            })?;
            let mut layers = inputs[0].layers.clone();
            layers.extend(layer);
            return Ok(State { layers });
        }
        let parent = self.chain(&inputs[0].layers)?;
        let key = unique("copy", 0);
        let mounts = self.snapshotter.prepare(&key, parent.as_deref()).map_err(Error::runner("prepare a snapshot"))?;
        let result = with_rootfs(&mounts, &self.root.join("tmp").join(&key), &|root| {
            let chown = match &c.chown {
                Some(u) => {
                    let (uid, gid, _) = runner::sandbox::resolve_user(&mounts, u)
                        .map_err(|e| self.err_at(v, format!("--chown={u}: {e}")))?;
                    Some((uid, gid))
                }
                None => None,
            };
            let (mut reader, writer) = std::io::pipe().map_err(Error::io("pipe"))?;
            std::thread::scope(|s| {
                let producer = s.spawn(move || -> Result<()> {
                    let mut tar = tar::Builder::new(writer);
                    self.emit(v, c, source_layers, Some((root, chown)), &mut tar)?;
                    tar.finish().map_err(Error::io("stream files"))
                });
                let opts = runner::unpack::UnpackOptions {
                    whiteouts: runner::unpack::Whiteouts::Apply,
                    allow_devices: false,
                    preserve_owners: true,
                };
                let unpacked =
                    runner::unpack::unpack(&mut reader, root, &opts).map_err(Error::runner("write the copied files"));
                // Let the producer finish (or fail on the closed pipe) before reporting.
                let _drain = std::io::copy(&mut reader, &mut std::io::sink());
                drop(reader);
                let produced =
                    producer.join().unwrap_or_else(|_| Err(Error::Option("the copy thread panicked".into())));
                produced.and(unpacked.map(|_| ()))
            })
        });
        match result {
            Ok(()) => self.finish_snapshot(&key, inputs[0].layers.clone()),
            Err(e) => {
                let _cleanup = self.snapshotter.remove(&key);
                Err(e)
            }
        }
    }

    /// Streams the files a copy selects as tar entries at their destination paths.
    /// `dest_root` is the mounted destination (to see whether the destination is a directory).
    fn emit(
        &self,
        v: &Vertex,
        c: &CopyOp,
        source_layers: Option<&[Layer]>,
        dest_root: Option<(&Path, Option<(u32, u32)>)>,
        tar: &mut tar::Builder<impl Write>,
    ) -> Result<()> {
        let owner = dest_root.and_then(|(_, o)| o).unwrap_or((0, 0));
        let owner = match (&c.chown, dest_root) {
            (Some(u), None) => {
                numeric_owner(u).ok_or_else(|| self.err_at(v, "COPY --link --chown takes numeric ids (uid:gid)"))?
            }
            _ => owner,
        };
        let dest_rel = c.dest.trim_start_matches('/').to_owned();
        let dest_exists_dir = dest_root.is_some_and(|(root, _)| is_dir_in(root, &dest_rel));
        let into_dir = c.dest_is_dir || dest_exists_dir;
        let place = |name: &str| if into_dir { join_rel(&dest_rel, name) } else { dest_rel.clone() };
        let entry_for = |meta: &std::fs::Metadata| {
            let mut e = Entry::from_meta(meta);
            e.uid = owner.0;
            e.gid = owner.1;
            if let Some(m) = c.chmod {
                e.mode = m;
            }
            e
        };
        if c.from == CopyFrom::Nothing && c.sources.is_empty() {
            // WORKDIR: the directory itself, when it is missing.
            if !dest_exists_dir && !dest_rel.is_empty() {
                append(tar, &format!("{dest_rel}/"), Entry::dir(0o755))?;
            }
            return Ok(());
        }
        let exclude = Ignore::parse(&c.exclude.join("\n")).map_err(|e| Error::Option(format!("--exclude: {e}")))?;
        // COPY --from: the source stage's files, mounted read-only while we read them.
        let from_root = match (&c.from, source_layers) {
            (CopyFrom::Input, Some(layers)) => Some(self.view_of(layers)?),
            _ => None,
        };
        let from_ctx = match &from_root {
            Some(view) => Some(Context::rootfs(&view.dir)?),
            None => None,
        };
        let ctx = from_ctx.as_ref().or(self.context);
        let mut count = 0usize;
        let mut selections = Vec::new();
        for s in &c.sources {
            if let CopySrc::Path(p) = s {
                let ctx =
                    ctx.ok_or_else(|| Error::Option("COPY from the context, but the build has no context".into()))?;
                let sel = ctx.select(p).map_err(|e| self.at(v, e))?;
                count += sel.len();
                selections.push((ctx, sel));
            } else {
                count += 1;
            }
        }
        let into_dir = into_dir || count > 1;
        let place = |name: &str| if into_dir { join_rel(&dest_rel, name) } else { place(name) };
        for s in &c.sources {
            match s {
                CopySrc::Inline { name, content } => {
                    let mut e = Entry::file(0o644, content.len() as u64);
                    e.uid = owner.0;
                    e.gid = owner.1;
                    if let Some(m) = c.chmod {
                        e.mode = m;
                    }
                    let path =
                        if into_dir || c.sources.len() > 1 { join_rel(&dest_rel, name) } else { dest_rel.clone() };
                    append_data(tar, &path, e, &mut content.as_bytes())?;
                }
                CopySrc::Url { url, checksum } => {
                    let known = self.downloads.lock().ok().and_then(|d| d.get(url).cloned());
                    let file = match known {
                        Some(f) => f,
                        None => {
                            self.download(v, url, checksum.as_ref())?;
                            self.downloads.lock().ok().and_then(|d| d.get(url).cloned()).unwrap_or_default()
                        }
                    };
                    let size = std::fs::metadata(&file).map_err(Error::io(format!("stat {}", file.display())))?.len();
                    let mut e = Entry::file(0o600, size);
                    e.uid = owner.0;
                    e.gid = owner.1;
                    if let Some(m) = c.chmod {
                        e.mode = m;
                    }
                    let name = url_file_name(url);
                    let path = if into_dir || c.dest_is_dir { join_rel(&dest_rel, &name) } else { dest_rel.clone() };
                    let mut f = std::fs::File::open(&file).map_err(Error::io(format!("open {}", file.display())))?;
                    append_data(tar, &path, e, &mut f)?;
                }
                CopySrc::Path(_) => {}
            }
        }
        for (ctx, sel) in selections {
            for item in sel {
                let top_meta =
                    std::fs::metadata(&item.path).map_err(Error::io(format!("stat {}", item.path.display())))?;
                let base = if c.parents {
                    // --parents keeps the path below the context root (or below a `/./` pivot).
                    join_rel(&dest_rel, &item.rel)
                } else if top_meta.is_dir() {
                    dest_rel.clone()
                } else {
                    place(item.path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
                };
                if c.unpack_archives && top_meta.is_file() {
                    if let Some(entries) = archive_entries(&item.path)? {
                        self.unpack_archive(entries, &dest_rel, tar)?;
                        continue;
                    }
                }
                ctx.walk(&item, &exclude, &mut |path, rel, meta| {
                    let target = if rel.is_empty() { base.clone() } else { join_rel(&base, rel) };
                    if target.is_empty() {
                        return Ok(());
                    }
                    // The top of a directory source is its contents: the directory itself
                    // exists at the destination only when --parents asks for it.
                    if rel.is_empty() && meta.is_dir() && !c.parents {
                        if dest_root.is_none()
                            || !is_dir_in(dest_root.map(|(r, _)| r).unwrap_or(Path::new("/")), &target)
                        {
                            append(tar, &format!("{target}/"), Entry { mode: 0o755, ..entry_for(meta) })?;
                        }
                        return Ok(());
                    }
                    let e = entry_for(meta);
                    let ft = meta.file_type();
                    if ft.is_dir() {
                        append(tar, &format!("{target}/"), e)
                    } else if ft.is_symlink() {
                        let link =
                            std::fs::read_link(path).map_err(Error::io(format!("readlink {}", path.display())))?;
                        let mut h = e.header(tar::EntryType::Symlink, 0);
                        tar.append_link(&mut h, &target, &link).map_err(Error::io(format!("stream {target}")))
                    } else if ft.is_file() {
                        let mut f = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
                        append_data(tar, &target, Entry { size: meta.len(), ..e }, &mut f)
                    } else {
                        // Sockets, fifos and devices are not copied, as docker skips them.
                        Ok(())
                    }
                })?;
            }
        }
        drop(from_root);
        Ok(())
    }

    fn unpack_archive(
        &self,
        mut entries: tar::Archive<Box<dyn Read>>,
        dest: &str,
        out: &mut tar::Builder<impl Write>,
    ) -> Result<()> {
        for entry in entries.entries().map_err(Error::io("read an archive"))? {
            let mut entry = entry.map_err(Error::io("read an archive"))?;
            let path = entry.path().map_err(Error::io("read an archive"))?.to_string_lossy().into_owned();
            let Some(clean) = crate::context::clean_rel(&path) else {
                return Err(Error::Context { path, reason: "an archive entry climbs out with '..'".into() });
            };
            let mut h = entry.header().clone();
            let target = join_rel(dest, &clean);
            match h.entry_type() {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let link =
                        entry.link_name().map_err(Error::io("read an archive"))?.unwrap_or_default().into_owned();
                    let link = if h.entry_type() == tar::EntryType::Link {
                        PathBuf::from(join_rel(
                            dest,
                            &crate::context::clean_rel(&link.to_string_lossy()).unwrap_or_default(),
                        ))
                    } else {
                        link
                    };
                    out.append_link(&mut h, &target, &link).map_err(Error::io(format!("stream {target}")))?;
                }
                _ => out.append_data(&mut h, &target, &mut entry).map_err(Error::io(format!("stream {target}")))?,
            }
        }
        Ok(())
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

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on a thread of its own in a private mount namespace (as root), so every
/// mount a step makes (overlay roots, stage views) is gone when the step ends, even if
/// berth dies half-way. Threads `f` starts, and their children, share that namespace.
fn in_private_mounts<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    runner::sandbox::in_private_mounts(f).map_err(Error::runner("private mount namespace"))?
}

fn mount_all(mounts: &[Mount], dir: &Path) -> Result<()> {
    for m in mounts {
        m.mount(dir).map_err(Error::runner(format!("mount {}", dir.display())))?;
    }
    Ok(())
}

/// Runs `f` on the snapshot's filesystem: its directory when it is one, else mounted at `dir`.
fn with_rootfs(mounts: &[Mount], dir: &Path, f: &(dyn Fn(&Path) -> Result<()> + Sync)) -> Result<()> {
    if let [Mount::Bind { source, .. }] = mounts {
        return f(source);
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let _cleanup = RemoveOnDrop(dir.to_owned());
    mount_all(mounts, dir)?;
    let result = f(dir);
    runner::snapshot::unmount(dir).map_err(Error::runner(format!("unmount {}", dir.display())))?;
    result
}

/// A tar entry's metadata.
#[derive(Debug, Clone, Copy)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    size: u64,
}

impl Entry {
    fn dir(mode: u32) -> Entry {
        Entry { mode, uid: 0, gid: 0, mtime: source_epoch().unwrap_or(0), size: 0 }
    }

    fn file(mode: u32, size: u64) -> Entry {
        Entry { mode, uid: 0, gid: 0, mtime: source_epoch().unwrap_or(0), size }
    }

    fn from_meta(meta: &std::fs::Metadata) -> Entry {
        let mtime = meta.mtime().max(0) as u64;
        let mtime = source_epoch().map_or(mtime, |e| mtime.min(e));
        Entry { mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid(), mtime, size: 0 }
    }

    fn header(&self, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(self.mode);
        h.set_uid(u64::from(self.uid));
        h.set_gid(u64::from(self.gid));
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }
}

fn source_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse().ok())
}

fn append(tar: &mut tar::Builder<impl Write>, path: &str, e: Entry) -> Result<()> {
    let mut h = e.header(tar::EntryType::Directory, 0);
    tar.append_data(&mut h, path, std::io::empty()).map_err(Error::io(format!("stream {path}")))
}

fn append_data(tar: &mut tar::Builder<impl Write>, path: &str, e: Entry, data: &mut dyn Read) -> Result<()> {
    let mut h = e.header(tar::EntryType::Regular, e.size);
    tar.append_data(&mut h, path, data.take(e.size)).map_err(Error::io(format!("stream {path}")))
}

fn join_rel(base: &str, name: &str) -> String {
    let base = base.trim_matches('/');
    let name = name.trim_matches('/');
    match (base.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}/{name}"),
    }
}

/// The file name ADD gives a URL's content: its last path segment (`index.html` for none).
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = path.split_once("://").map_or(path, |(_, r)| r);
    match after_scheme.split_once('/') {
        Some((_, p)) => p.rsplit('/').find(|s| !s.is_empty()).unwrap_or("index.html").to_owned(),
        None => "index.html".to_owned(),
    }
}

fn numeric_owner(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// True when `rel` is a directory inside `root`, symlinks resolved inside it.
fn is_dir_in(root: &Path, rel: &str) -> bool {
    if rel.is_empty() {
        return true;
    }
    let Ok(rootfd) =
        rustix::fs::open(root, rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty())
    else {
        return false;
    };
    runner::sys::open_in_root(&rootfd, rel, rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY).is_ok()
}

/// True when `target` exists in the snapshot (its upper, then its lowers).
fn exists_in(lowers: &[PathBuf], upper: &Path, target: &str) -> bool {
    let rel = target.trim_start_matches('/');
    std::iter::once(upper)
        .chain(lowers.iter().map(PathBuf::as_path))
        .any(|d| std::fs::symlink_metadata(d.join(rel)).is_ok())
}

/// Removes a mount target a RUN step's sandbox created (an empty file or directory).
/// After the scaffolding is gone, its parent directories may be left in the upper directory
/// as overlayfs copied them up: empty, not opaque, with the lower directory's mode and owner.
/// Those are no change, and are removed so that they make no layer entry.
fn remove_copied_up_parents(upper: &Path, lowers: &[PathBuf], target: &str) {
    let mut rel = Path::new(target.trim_start_matches('/')).parent();
    while let Some(dir) = rel.filter(|d| !d.as_os_str().is_empty()) {
        let up = upper.join(dir);
        let Ok(meta) = std::fs::symlink_metadata(&up) else { break };
        let empty = std::fs::read_dir(&up).is_ok_and(|mut d| d.next().is_none());
        let opaque = rustix::fs::getxattr(&up, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok();
        let same_as_lower = lowers
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(dir)).ok())
            .is_some_and(|l| l.is_dir() && l.mode() == meta.mode() && l.uid() == meta.uid() && l.gid() == meta.gid());
        if !(meta.is_dir() && empty && !opaque && same_as_lower) || std::fs::remove_dir(&up).is_err() {
            break;
        }
        rel = dir.parent();
    }
}

fn remove_scaffold(upper: &Path, target: &str) {
    let p = upper.join(target.trim_start_matches('/'));
    if let Ok(m) = std::fs::symlink_metadata(&p) {
        let _ = if m.is_dir() {
            std::fs::remove_dir(&p)
        } else if m.len() == 0 {
            std::fs::remove_file(&p)
        } else {
            Ok(())
        };
    }
}

/// A local file ADD unpacks: a tar, plain or compressed (gzip, zstd); None for other files.
/// The file is opened once; the bytes read to recognise it are put back in front.
fn archive_entries(path: &Path) -> Result<Option<tar::Archive<Box<dyn Read>>>> {
    let read_err = || Error::io(format!("read {}", path.display()));
    let file = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
    let (head, file) = peek(Box::new(file), 512).map_err(read_err())?;
    let decoded: Box<dyn Read> = match Compression::detect(&head) {
        Compression::None => file,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(read_err())?),
    };
    // A compressed file that is not a tar inside is copied as it is.
    let (inner, decoded) = match peek(decoded, 512) {
        Ok(peeked) => peeked,
        Err(_) => return Ok(None),
    };
    let is_tar = inner.len() >= 262 && &inner[257..262] == b"ustar";
    Ok(is_tar.then(|| tar::Archive::new(decoded)))
}

/// Reads up to `n` bytes of `r` and returns them with a reader that yields them again first.
fn peek(mut r: Box<dyn Read>, n: usize) -> std::io::Result<(Vec<u8>, Box<dyn Read>)> {
    let mut head = Vec::with_capacity(n);
    (&mut r).take(n as u64).read_to_end(&mut head)?;
    Ok((head.clone(), Box::new(std::io::Cursor::new(head).chain(r))))
}

/// The last lines a step printed, for the error report.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > 64 * 1024 {
            let cut = self.buf.len() - 16 * 1024;
            self.buf.drain(..cut);
        }
    }

    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[lines.len().saturating_sub(10)..].to_vec()
    }
}
