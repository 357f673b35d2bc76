//! COPY, ADD and WORKDIR: the selected files streamed as a tar into the step's snapshot
//! through the runner's safe unpacker (every path resolved inside the root), or, for
//! `--link`, straight into a layer of their own; ADD's URLs and local archives.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use runner::snapshot::Mount;

use super::{archive, mount_all, reuse, unique, LocalWorker, RemoveOnDrop};
use crate::cache::{CacheStore, MemoryCache};
use crate::context::{Context, Ignore, Selected};
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, CopyOp, CopySrc, Layer, Vertex, VertexId};
use crate::progress::Event;
use crate::solver::State;

impl LocalWorker<'_> {
    /// Downloads `url` once per build (kept for the copy) and returns its digest, checked
    /// against `--checksum` when given.
    pub(super) fn download(&self, v: &Vertex, url: &str, checksum: Option<&oci::Digest>) -> Result<oci::Digest> {
        let rel = Path::new("tmp").join(format!("downloads-{}", std::process::id()));
        // Claimed first, so a prune now spares it and the next command removes it if berth is killed.
        runner::lease::for_root(&self.root)
            .and_then(|l| l.claim(runner::lease::Claim::Path(&rel)))
            .map_err(Error::io("claim the download directory"))?;
        let dir = self.root.join(&rel);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let file = dir.join(oci::Digest::of(url.as_bytes()).hex());
        if !self.downloads.lock().is_ok_and(|d| d.contains_key(url)) {
            (self.fetch)(url, &file).map_err(|e| {
                // A download error names its URL already.
                let why = match &e {
                    Error::Image { source, .. } => oci::error::chain(source.as_ref()),
                    other => format!("ADD {url}: {}", oci::error::chain(other)),
                };
                self.err_at(v, why)
            })?;
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

    /// Runs a COPY, ADD or WORKDIR step on `inputs[0]` (`inputs[1]` is a `--from` source).
    pub(super) fn copy(&self, id: VertexId, v: &Vertex, c: &CopyOp, inputs: &[State]) -> Result<State> {
        self.copy_step(id, v, c, inputs).map_err(|e| self.at(v, e))
    }

    /// [`LocalWorker::copy`], its errors not yet placed at the step.
    fn copy_step(&self, id: VertexId, v: &Vertex, c: &CopyOp, inputs: &[State]) -> Result<State> {
        if c.link {
            return self.copy_link(v, c, inputs);
        }
        let key = reuse::key(c);
        let plan = key.as_deref().and_then(|k| reuse::Plan::load(self.cache, self.snapshotter, k));
        let (state, known) = match self.copy_onto(id, v, c, inputs, key.is_some(), plan.as_ref())? {
            Ok(done) => done,
            Err(reuse::Failed(why)) => {
                let text = self.err_at(v, format!("linking the unchanged files failed ({why}); copying them all"));
                self.progress.event(Event::Warning { text: text.to_string() });
                self.copy_onto(id, v, c, inputs, key.is_some(), None)?
                    .map_err(|reuse::Failed(why)| Error::Internal(why))?
            }
        };
        if let (Some(key), Some(known)) = (key, known) {
            if state.layers.len() > inputs[0].layers.len() {
                let diff_ids: Vec<String> = state.layers.iter().map(|l| l.diff_id.to_string()).collect();
                let chain = runner::rootfs::chain_ids(&diff_ids).pop().unwrap_or_default();
                reuse::save(self.cache, &key, &chain, known)?;
            }
        }
        Ok(state)
    }

    /// `COPY --link`: the layer is the copied files alone, whatever the destination holds.
    fn copy_link(&self, v: &Vertex, c: &CopyOp, inputs: &[State]) -> Result<State> {
        let source_layers = inputs.get(1).map(|s| s.layers.as_slice());
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
        Ok(State { layers })
    }

    /// The copy into a new snapshot on `inputs[0]`. With `record`, also the manifest of the
    /// files it made (see [`reuse`]); with a `plan`, unchanged files are linked from the last
    /// snapshot, and a failure to link is returned as such, with nothing left behind.
    fn copy_onto(
        &self,
        id: VertexId,
        v: &Vertex,
        c: &CopyOp,
        inputs: &[State],
        record: bool,
        plan: Option<&reuse::Plan>,
    ) -> Result<std::result::Result<Copied, reuse::Failed>> {
        let source_layers = inputs.get(1).map(|s| s.layers.as_slice());
        let parent = self.chain(&inputs[0].layers)?;
        let key = unique("copy", id);
        let mounts = self.snapshotter.prepare(&key, parent.as_deref()).map_err(Error::runner("prepare a snapshot"))?;
        let result = with_rootfs(&mounts, &self.root.join("tmp").join(&key), |root| {
            // `--chown`, or WORKDIR's USER: BuildKit's owner rules, not RUN's (see `owner`).
            let chown = c.chown.as_deref().map(|u| {
                let read = |path| runner::sandbox::read_in_rootfs(&mounts, path).unwrap_or_default();
                super::owner::owner_ids(u, &read("etc/passwd"), &read("etc/group"))
            });
            self.stream_into(v, c, source_layers, Onto { root, chown, plan, record })
        });
        let settled = result.and_then(|(emitted, files)| {
            if !record {
                return Ok(Ok(None));
            }
            let upper = self.snapshotter.upper(&key).map_err(Error::runner("find the snapshot's files"))?;
            match reuse::settle(&upper, plan, &emitted, &files) {
                Ok(known) => Ok(Ok(Some(known))),
                Err(failed) if plan.is_some_and(|_| emitted.iter().any(|e| e.linked.is_some())) => Ok(Err(failed)),
                // Nothing was linked: the copy is whole; only the manifest for next time is lost.
                Err(_) => Ok(Ok(None)),
            }
        });
        match settled {
            Ok(Ok(known)) => {
                let layers = inputs[0].layers.clone();
                Ok(Ok((self.finish_snapshot(id, &key, layers, known.as_deref().unwrap_or_default())?, known)))
            }
            Ok(Err(failed)) => {
                self.snapshotter.remove(&key).map_err(Error::runner("remove a snapshot"))?;
                Ok(Err(failed))
            }
            Err(e) => {
                let _cleanup = self.snapshotter.remove(&key);
                Err(e)
            }
        }
    }

    /// Streams the copy's files as a tar through a pipe into the mounted `onto.root`, by
    /// the runner's safe unpacker; returns what was streamed and, when `onto.record`s, where
    /// the unpacker put each regular file.
    fn stream_into(
        &self,
        v: &Vertex,
        c: &CopyOp,
        source_layers: Option<&[Layer]>,
        onto: Onto<'_>,
    ) -> Result<(Vec<reuse::Emitted>, runner::unpack::UnpackStats)> {
        let (root, report) = (onto.root, onto.record);
        let (mut reader, writer) = copy_pipe()?;
        std::thread::scope(|s| {
            let producer = s.spawn(move || -> Result<Vec<reuse::Emitted>> {
                let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(PIPE_SIZE, writer));
                let emitted = self.emit(v, c, source_layers, Some(onto), &mut tar)?;
                tar.into_inner().and_then(|mut w| w.flush()).map_err(Error::io("stream files"))?;
                Ok(emitted)
            });
            let opts = runner::unpack::UnpackOptions {
                whiteouts: runner::unpack::Whiteouts::Apply,
                allow_devices: false,
                preserve_owners: true,
                lowers: vec![],
                restore_dir_times: true,
                report_files: report,
                placeholders: report,
            };
            let unpacked =
                runner::unpack::unpack(&mut reader, root, &opts).map_err(Error::runner("write the copied files"));
            // Let the producer finish (or fail on the closed pipe) before reporting.
            let _drain = std::io::copy(&mut reader, &mut std::io::sink());
            drop(reader);
            let produced = producer.join().unwrap_or_else(|_| Err(Error::Internal("the copy thread panicked".into())));
            let emitted = produced?;
            Ok((emitted, unpacked?))
        })
    }

    /// Streams the files a copy selects as tar entries at their destination paths.
    /// `dest_root` is the mounted destination with the resolved `--chown` (None for `--link`).
    fn emit(
        &self,
        v: &Vertex,
        c: &CopyOp,
        source_layers: Option<&[Layer]>,
        onto: Option<Onto<'_>>,
        tar: &mut tar::Builder<impl Write>,
    ) -> Result<Vec<reuse::Emitted>> {
        let owner = match (&c.chown, &onto) {
            (Some(u), None) => {
                numeric_owner(u).ok_or_else(|| self.err_at(v, "COPY --link --chown takes numeric ids (uid:gid)"))?
            }
            (_, Some(Onto { chown: Some(o), .. })) => *o,
            _ => (0, 0),
        };
        let root = onto.as_ref().map(|o| o.root);
        // The destination goes where its links point, as BuildKit writes it: a file copied
        // onto a link replaces the link's target, and a directory reached through a link
        // (dangling or not) is the link's target, made if missing. `--link` has no root.
        let as_written = || c.dest.trim_start_matches('/').to_owned();
        let rel = match root.map(|r| crate::context::resolve_dest_in_root(r, &c.dest)) {
            None => as_written(),
            Some(Ok(rel)) => rel,
            // A link to a name that is not UTF-8: left for the unpacker, which resolves links
            // on the way inside the root itself.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => as_written(),
            Some(Err(e)) => return Err(self.err_at(v, format!("destination {}: {e}", c.dest))),
        };
        let exists_dir = root.is_some_and(|r| is_dir_in(r, &rel));
        if c.from == CopyFrom::Nothing && c.sources.is_empty() {
            workdir(tar, root, &rel, owner)?;
            return Ok(Vec::new());
        }
        let exclude = Ignore::parse(&c.exclude.join("\n")).map_err(|e| self.err_at(v, format!("--exclude: {e}")))?;
        // COPY --from: the source stage's files, mounted read-only while we read them.
        let from_root = match (&c.from, source_layers) {
            (CopyFrom::Input, Some(layers)) => Some(self.view_of(layers)?),
            _ => None,
        };
        let from_ctx = match &from_root {
            Some(view) => Some(Context::rootfs(&view.dir)?),
            None => None,
        };
        let ctx = from_ctx.as_ref().or(self.context_of(&c.from));
        let mut count = 0usize;
        let mut selections = Vec::new();
        for s in &c.sources {
            if let CopySrc::Path(p) = s {
                let ctx = ctx.ok_or_else(|| self.err_at(v, "COPY from the context, but the build has no context"))?;
                let sel = ctx.select(p).map_err(|e| self.at(v, e))?;
                let sel = if c.parents { below_pivot(p, sel) } else { sel };
                count += sel.len();
                selections.push((ctx, sel));
            } else {
                count += 1;
            }
        }
        let into_dir = c.dest_is_dir || exists_dir || count > 1;
        let dest = Dest {
            c,
            rel,
            into_dir,
            owner,
            // A stage's or image's files keep their owners, as BuildKit copies them; the
            // context's are root's.
            keep_owners: c.chown.is_none() && from_root.is_some(),
            root,
            plan: onto.as_ref().and_then(|o| o.plan),
            record: onto.as_ref().is_some_and(|o| o.record),
            emitted: RefCell::new(Vec::new()),
            links: RefCell::new(HashMap::new()),
        };
        if c.chown.is_some() {
            // The directories the copy creates on the way are the new owner's too, as
            // BuildKit makes them: `COPY --chown=app f /home/app/dir/` gives app its home.
            let made = if dest.into_dir { dest.rel.as_str() } else { dest.rel.rsplit_once('/').map_or("", |(d, _)| d) };
            workdir(tar, root, made, owner)?;
        }
        self.emit_generated(v, &dest, tar)?;
        let mut budget = if c.unpack_archives { Some(archive::Budget::from_env()?) } else { None };
        for (ctx, sel) in selections {
            for item in sel {
                self.emit_selected(v, &dest, ctx, &item, &exclude, budget.as_mut(), tar)?;
            }
        }
        drop(from_root);
        Ok(dest.emitted.into_inner())
    }

    /// Heredoc files and downloaded URLs.
    fn emit_generated(&self, v: &Vertex, dest: &Dest<'_>, tar: &mut tar::Builder<impl Write>) -> Result<()> {
        let c = dest.c;
        for s in &c.sources {
            match s {
                CopySrc::Inline { name, content } => {
                    let path = if dest.into_dir || c.sources.len() > 1 { dest.below(name) } else { dest.rel.clone() };
                    let e = dest.generated(0o644, content.len() as u64);
                    append_data(tar, &path, e, &mut content.as_bytes())?;
                    dest.note(&path, None, e.size, None);
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
                    let path = if dest.into_dir { dest.below(&url_file_name(url)) } else { dest.rel.clone() };
                    let mut f = std::fs::File::open(&file).map_err(Error::io(format!("open {}", file.display())))?;
                    append_data(tar, &path, dest.generated(0o600, size), &mut f)?;
                    dest.note(&path, None, size, None);
                }
                CopySrc::Path(_) => {}
            }
        }
        Ok(())
    }

    /// One selected file or directory tree (or, for ADD, a local archive's entries).
    #[allow(clippy::too_many_arguments)] // the walk's state, each part used once
    fn emit_selected(
        &self,
        v: &Vertex,
        dest: &Dest<'_>,
        ctx: &Context,
        item: &Selected,
        exclude: &Ignore,
        budget: Option<&mut archive::Budget>,
        tar: &mut tar::Builder<impl Write>,
    ) -> Result<()> {
        let c = dest.c;
        let top_meta = std::fs::metadata(&item.path).map_err(Error::io(format!("stat {}", item.path.display())))?;
        let base = if c.parents {
            // --parents keeps the path below the context root (or below a `/./` pivot).
            dest.below(&item.rel)
        } else if top_meta.is_dir() {
            dest.rel.clone()
        } else if dest.into_dir {
            // The name the source was selected by: a symlink keeps its own name, not its
            // target's.
            dest.below(item.rel.rsplit('/').next().unwrap_or(""))
        } else {
            dest.rel.clone()
        };
        if let (Some(budget), true) = (budget, top_meta.is_file()) {
            if let Some(entries) = archive::open(&item.path)? {
                let owner = c.chown.is_some().then_some(dest.owner);
                return archive::unpack(entries, &item.rel, &dest.rel, tar, budget, owner).map_err(|e| self.at(v, e));
            }
        }
        ctx.walk(item, exclude, &mut |path, rel, meta| {
            let target = if rel.is_empty() { base.clone() } else { join_rel(&base, rel) };
            if target.is_empty() {
                return Ok(());
            }
            // The top of a directory source is its contents: the directory itself
            // exists at the destination only when --parents asks for it.
            if rel.is_empty() && meta.is_dir() && !c.parents {
                if dest.root.is_none_or(|r| !is_dir_in(r, &target)) {
                    append(tar, &format!("{target}/"), Entry { mode: 0o755, ..dest.entry(meta) })?;
                }
                return Ok(());
            }
            let e = dest.entry(meta);
            let ft = meta.file_type();
            if ft.is_dir() {
                // Extended attributes travel with the directory, as BuildKit's.
                append_xattrs(tar, &target, xattrs(path)?)?;
                append(tar, &format!("{target}/"), e)
            } else if ft.is_symlink() {
                let link = std::fs::read_link(path).map_err(Error::io(format!("readlink {}", path.display())))?;
                let mut h = e.header(tar::EntryType::Symlink, 0);
                tar.append_link(&mut h, &target, &link).map_err(Error::io(format!("stream {target}")))
            } else if ft.is_file() {
                self.emit_file(dest, path, meta, &target, Entry { size: meta.len(), ..e }, tar)
            } else {
                // Sockets, fifos and devices are not copied, as docker skips them.
                Ok(())
            }
        })
    }

    /// One regular file at `target`: its bytes, or an empty placeholder where the plan links
    /// the last snapshot's copy of it (see [`reuse`]), or a hard link to where the copy put
    /// another name of the same file.
    fn emit_file(
        &self,
        dest: &Dest<'_>,
        path: &Path,
        meta: &std::fs::Metadata,
        target: &str,
        e: Entry,
        tar: &mut tar::Builder<impl Write>,
    ) -> Result<()> {
        let several_names = meta.nlink() > 1;
        if several_names {
            let mut links = dest.links.borrow_mut();
            match links.entry((meta.dev(), meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    let mut h = e.header(tar::EntryType::Link, 0);
                    return tar.append_link(&mut h, target, first.get()).map_err(Error::io(format!("stream {target}")));
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(target.to_owned());
                }
            }
        }
        let digest = if dest.record { Some(crate::context::file_digest(path, meta, self.cache)?) } else { None };
        // Extended attributes (a file's capabilities) travel with the file, as BuildKit's.
        let xattrs = xattrs(path)?;
        // A file with several names is always written: its links need its bytes there now,
        // and the copy must be the one a full copy makes. So is one with extended
        // attributes: the last snapshot's copy may have others.
        let plan = dest.plan.filter(|_| !several_names && xattrs.is_none());
        let linked = plan.zip(digest.as_ref()).and_then(|(plan, d)| plan.linkable(target, &e, d));
        if linked.is_some() {
            append_placeholder(tar, target, e)?;
        } else {
            append_xattrs(tar, target, xattrs)?;
            let mut f = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
            append_data(tar, target, e, &mut f)?;
        }
        dest.note(target, digest, e.size, linked);
        Ok(())
    }

    /// The digest of exactly the files a `COPY --from` selects in its source's filesystem:
    /// names, content, mode, owner and link targets, never times. Equal digests make an
    /// equal copy, whatever produced the source (BuildKit's content-based keys).
    ///
    /// The layers' diffIDs fix the filesystem, so the digest is remembered under them (with
    /// the selection): a rebuild whose source did not change mounts and reads nothing.
    pub(super) fn input_digest(&self, v: &Vertex, c: &CopyOp, source: &State) -> Result<oci::Digest> {
        let paths: Vec<String> =
            c.sources.iter().filter_map(|s| if let CopySrc::Path(p) = s { Some(p.clone()) } else { None }).collect();
        let mut memo = oci::Algorithm::Sha256.hasher();
        memo.update(b"copy --from v2\n");
        for l in &source.layers {
            memo.update(format!("layer {}\n", l.diff_id).as_bytes());
        }
        memo.update(format!("sources {paths:?}\nexclude {:?}\n", c.exclude).as_bytes());
        let memo = format!("copyfrom/{}", memo.finish());
        let known = self.cache.get(memo.as_bytes())?;
        if let Some(d) = known.and_then(|raw| String::from_utf8(raw).ok()?.parse::<oci::Digest>().ok()) {
            return Ok(d);
        }
        let exclude = Ignore::parse(&c.exclude.join("\n")).map_err(|e| self.err_at(v, format!("--exclude: {e}")))?;
        let digest = self.in_private_mounts(|| {
            let view = self.view_of(&source.layers)?;
            let ctx = Context::rootfs(&view.dir)?;
            // A view of several layers is a fresh mount at a temporary path: stat-cache entries
            // for it would never hit again and only grow the cache, so it is hashed without one.
            let scratch = MemoryCache::default();
            let cache: &dyn CacheStore = if view.mounted { &scratch } else { self.cache };
            let digest = ctx.digest(&paths, &exclude, cache).map_err(|e| self.at(v, e))?;
            Ok(oci::Digest::of(format!("copy --from v2 {digest}").as_bytes()))
        })?;
        self.cache.put(memo.as_bytes(), digest.to_string().as_bytes())?;
        Ok(digest)
    }
}

/// Where a copy's entries go, and whose they become.
struct Dest<'c> {
    c: &'c CopyOp,
    /// The destination below the root, without a leading `/`.
    rel: String,
    /// Sources go below `rel` (it is or must be a directory), not onto it.
    into_dir: bool,
    /// `--chown`, resolved (root when not given).
    owner: (u32, u32),
    /// Copied files keep their own owners (`COPY --from` without `--chown`).
    keep_owners: bool,
    /// The mounted destination filesystem (None for `--link`).
    root: Option<&'c Path>,
    /// The last snapshot to link unchanged files from.
    plan: Option<&'c reuse::Plan>,
    /// Record what is streamed, with the digests of context files.
    record: bool,
    /// The regular files streamed so far, when recording.
    emitted: RefCell<Vec<reuse::Emitted>>,
    /// Where the copy put the first name of each source file with several (by device and
    /// inode): its other names in the copy become hard links to it, as BuildKit copies them.
    links: RefCell<HashMap<(u64, u64), String>>,
}

/// A copy's result, with the manifest of its files when it recorded them (see [`reuse`]).
type Copied = (State, Option<Vec<reuse::Known>>);

/// Where a copy into a snapshot writes, and how.
struct Onto<'a> {
    /// The mounted snapshot.
    root: &'a Path,
    /// `--chown`, resolved in it.
    chown: Option<(u32, u32)>,
    /// The last snapshot of the same copy, to link unchanged files from.
    plan: Option<&'a reuse::Plan>,
    /// Record what is streamed (see [`reuse::settle`]).
    record: bool,
}

impl Dest<'_> {
    /// Records a regular file streamed at `target`, when recording.
    fn note(&self, target: &str, digest: Option<oci::Digest>, size: u64, linked: Option<reuse::Linked>) {
        if self.record {
            let target = target.to_owned();
            self.emitted.borrow_mut().push(reuse::Emitted { target, digest, size, linked });
        }
    }

    fn below(&self, name: &str) -> String {
        join_rel(&self.rel, name)
    }

    /// A copied file's or directory's entry: its own mode through `--chmod`, the owner
    /// (`--chown`, root, or the file's own for `COPY --from`).
    fn entry(&self, meta: &std::fs::Metadata) -> Entry {
        let e = Entry::from_meta(meta);
        let mode = self.c.chmod.as_ref().map_or(e.mode, |m| m.apply(e.mode, meta.is_dir()));
        let (uid, gid) = if self.keep_owners { (e.uid, e.gid) } else { self.owner };
        Entry { mode, uid, gid, ..e }
    }

    /// A heredoc's or download's entry: `mode` through `--chmod`, the owner.
    fn generated(&self, mode: u32, size: u64) -> Entry {
        let mode = self.c.chmod.as_ref().map_or(mode, |m| m.apply(mode, false));
        Entry { mode, uid: self.owner.0, gid: self.owner.1, ..Entry::file(mode, size) }
    }
}

/// Bytes the copy pipe holds, and the producer's writes into it: the tar crate copies file
/// data 8 KiB at a time, and a 64 KiB pipe would wake the unpacking thread every few of them.
const PIPE_SIZE: usize = 1 << 20;

/// The pipe a COPY's tar goes through, made [`PIPE_SIZE`] large where the kernel allows it
/// (`/proc/sys/fs/pipe-max-size`; if not, the default size only costs more wake-ups).
fn copy_pipe() -> Result<(std::io::PipeReader, std::io::PipeWriter)> {
    let (reader, writer) = std::io::pipe().map_err(Error::io("pipe"))?;
    // Refused (EPERM past the user's pipe quota): the pipe keeps the default size, which
    // copies the same bytes with more wake-ups; nothing is lost.
    let _default_size = rustix::pipe::fcntl_setpipe_size(&writer, PIPE_SIZE);
    Ok((reader, writer))
}

/// WORKDIR: each missing directory of `rel`, top down, 0755 and owned by the stage's USER
/// (resolved in the image), dated now (or SOURCE_DATE_EPOCH), as BuildKit creates them.
fn workdir(tar: &mut tar::Builder<impl Write>, root: Option<&Path>, rel: &str, owner: (u32, u32)) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mtime = crate::cache::source_date_epoch().unwrap_or(now);
    let mut prefix = String::new();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        prefix = join_rel(&prefix, part);
        if root.is_none_or(|r| !is_dir_in(r, &prefix)) {
            append(tar, &format!("{prefix}/"), Entry { mode: 0o755, uid: owner.0, gid: owner.1, mtime, size: 0 })?;
        }
    }
    Ok(())
}

/// Runs `f` on the snapshot's filesystem: its directory when it is one, else mounted at `dir`.
fn with_rootfs<T>(mounts: &[Mount], dir: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
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
pub(super) struct Entry {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: u64,
    pub(super) size: u64,
}

impl Entry {
    fn dir(mode: u32) -> Entry {
        Entry { mode, uid: 0, gid: 0, mtime: crate::cache::source_date_epoch().unwrap_or(0), size: 0 }
    }

    fn file(mode: u32, size: u64) -> Entry {
        Entry { mode, uid: 0, gid: 0, mtime: crate::cache::source_date_epoch().unwrap_or(0), size }
    }

    fn from_meta(meta: &std::fs::Metadata) -> Entry {
        let mtime = meta.mtime().max(0) as u64;
        let mtime = crate::cache::source_date_epoch().map_or(mtime, |e| mtime.min(e));
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

fn append(tar: &mut tar::Builder<impl Write>, path: &str, e: Entry) -> Result<()> {
    let mut h = e.header(tar::EntryType::Directory, 0);
    tar.append_data(&mut h, path, std::io::empty()).map_err(Error::io(format!("stream {path}")))
}

/// Appends a regular file of `e.size` bytes read from `data`, exactly (see [`oci::layer::Exactly`]).
fn append_data(tar: &mut tar::Builder<impl Write>, path: &str, e: Entry, data: &mut dyn Read) -> Result<()> {
    let mut h = e.header(tar::EntryType::Regular, e.size);
    tar.append_data(&mut h, path, oci::layer::Exactly::new(data, e.size)).map_err(Error::io(format!("stream {path}")))
}

/// The PAX records of the extended attributes of the source file `path` (None without any).
fn xattrs(path: &Path) -> Result<Option<Vec<u8>>> {
    oci::layer::xattr::records(path, false).map_err(Error::io(format!("read the xattrs of {}", path.display())))
}

/// Appends `records` (if any) for the next entry, `target`.
fn append_xattrs(tar: &mut tar::Builder<impl Write>, target: &str, records: Option<Vec<u8>>) -> Result<()> {
    match records {
        Some(r) => oci::layer::xattr::append(tar, &r).map_err(Error::io(format!("stream {target}"))),
        None => Ok(()),
    }
}

/// An empty regular file at `path` marked as a [`runner::unpack::PLACEHOLDER`] by a PAX
/// record: the unpacker makes room for it, and the copy links the real file there later.
fn append_placeholder(tar: &mut tar::Builder<impl Write>, path: &str, e: Entry) -> Result<()> {
    tar.append_pax_extensions([(runner::unpack::PLACEHOLDER, b"1".as_slice())])
        .map_err(Error::io(format!("stream {path}")))?;
    append_data(tar, path, Entry { size: 0, ..e }, &mut std::io::empty())
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

/// `COPY --parents`: a source with a `/./` pivot (`./src/./pkg/a.go`) keeps only the path
/// below the pivot (`pkg/a.go`), as BuildKit; without one, the whole path from the context.
fn below_pivot(source: &str, sel: Vec<Selected>) -> Vec<Selected> {
    let Some(pivot) = source.split_once("/./").and_then(|(before, _)| crate::context::clean_rel(before)) else {
        return sel;
    };
    if pivot.is_empty() {
        return sel;
    }
    let prefix = format!("{pivot}/");
    sel.into_iter()
        .map(|s| match s.rel.strip_prefix(&prefix) {
            Some(rest) => Selected { rel: rest.to_owned(), ..s },
            None => s,
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> Entry {
        Entry::file(0o644, size)
    }

    #[test]
    fn a_file_that_grew_is_cut_at_its_size_and_the_tar_reads_back() {
        let mut tar = tar::Builder::new(Vec::new());
        append_data(&mut tar, "a", file(3), &mut &b"abcdef"[..]).unwrap();
        append_data(&mut tar, "b", file(2), &mut &b"xy"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let got: Vec<(String, String)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                (e.path().unwrap().display().to_string(), s)
            })
            .collect();
        assert_eq!(got, [("a".to_owned(), "abc".to_owned()), ("b".to_owned(), "xy".to_owned())]);
    }

    #[test]
    fn a_file_that_shrank_fails_the_copy_with_a_message() {
        let mut tar = tar::Builder::new(Vec::new());
        let err = append_data(&mut tar, "app/config", file(10), &mut &b"short"[..]).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(err.to_string().contains("app/config"), "{err}");
        assert!(cause.contains("5 bytes shorter while it was copied"), "{cause}");
    }
}
