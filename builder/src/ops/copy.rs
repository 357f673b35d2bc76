//! COPY, ADD and WORKDIR: the selected files streamed as a tar into the step's snapshot
//! through the runner's safe unpacker (every path resolved inside the root), or, for
//! `--link`, straight into a layer of their own; ADD's URLs and local archives.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci::layer::Compression;
use runner::snapshot::Mount;

use super::{mount_all, unique, LocalWorker, RemoveOnDrop};
use crate::context::{Context, Ignore};
use crate::error::{Error, Result};
use crate::graph::{CopyFrom, CopyOp, CopySrc, Layer, Vertex};
use crate::solver::State;

impl LocalWorker<'_> {
    /// Downloads `url` once per build (kept for the copy) and returns its digest, checked
    /// against `--checksum` when given.
    pub(super) fn download(&self, v: &Vertex, url: &str, checksum: Option<&oci::Digest>) -> Result<oci::Digest> {
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

    /// Runs a COPY, ADD or WORKDIR step on `inputs[0]` (`inputs[1]` is a `--from` source).
    pub(super) fn copy(&self, v: &Vertex, c: &CopyOp, inputs: &[State]) -> Result<State> {
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
                    producer.join().unwrap_or_else(|_| Err(Error::Internal("the copy thread panicked".into())));
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
        let ctx = from_ctx.as_ref().or(self.context);
        let mut count = 0usize;
        let mut selections = Vec::new();
        for s in &c.sources {
            if let CopySrc::Path(p) = s {
                let ctx = ctx.ok_or_else(|| self.err_at(v, "COPY from the context, but the build has no context"))?;
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
