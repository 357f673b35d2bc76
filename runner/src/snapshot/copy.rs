//! The copy snapshotter: each snapshot is a full copy of its parent plus its own changes.
//! It needs no overlayfs (nor root, but to keep owners); its diff walks both trees.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::scaffold::{self, Scaffold};
use super::{io_err, Dirs, Mount, Result, SnapshotError, Snapshotter};
use crate::unpack::Whiteouts;

/// Snapshots as full directory copies under one directory.
#[derive(Debug, Clone)]
pub struct CopySnapshotter {
    dirs: Dirs,
}

impl CopySnapshotter {
    /// Snapshots under `root`.
    pub fn new(root: &Path) -> Result<Self> {
        Ok(CopySnapshotter { dirs: Dirs::new(root)? })
    }

    fn make(&self, key: &str, parent: Option<&str>, kind: &str) -> Result<PathBuf> {
        let dir = self.dirs.create(key, parent, kind, false)?;
        if let Some(p) = parent {
            let from = self.dirs.dir(p).join("fs");
            let copied = copy_tree(&from, &dir.join("fs"), &mut HashMap::new()).and_then(|()| {
                if kind == "active" {
                    record_dirs(&dir)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = copied {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        Ok(dir.join("fs"))
    }
}

/// The `fs` directories of the committed snapshots below the copy snapshot whose `fs` is
/// `fs`, nearest first (its parent, the parent's parent, ...), read from the snapshots'
/// `parent` files: for `--isolation none`, which asks whether `/` holds one of them.
pub fn ancestors(fs: &Path) -> Vec<PathBuf> {
    let (Some(snapshot), Some(root)) = (fs.parent(), fs.parent().and_then(Path::parent)) else { return Vec::new() };
    let parent = fs::read_to_string(snapshot.join("parent")).unwrap_or_default();
    Dirs { root: root.to_owned() }.chain(Some(parent.as_str()).filter(|p| !p.is_empty()))
}

/// Where an active snapshot keeps the identity of every directory copied from its parent.
const DIR_INODES: &str = "dir-inodes";

/// Records the [`identity`] of every directory under `<dir>/fs` (`id NUL path NUL`): a
/// directory that a step removed and made again has a new one, and its diff says so as overlayfs
/// does, with an opaque whiteout instead of one whiteout per old entry.
fn record_dirs(dir: &Path) -> Result<()> {
    fn walk(d: &Path, rel: &Path, out: &mut Vec<u8>) -> Result<()> {
        for e in fs::read_dir(d).map_err(io_err("read", d))? {
            let e = e.map_err(io_err("read", d))?;
            if e.file_type().map_err(io_err("stat", d))?.is_dir() {
                let r = rel.join(e.file_name());
                out.extend_from_slice(format!("{}\0", identity(&e.path())).as_bytes());
                out.extend_from_slice(r.as_os_str().as_encoded_bytes());
                out.push(0);
                walk(&e.path(), &r, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&dir.join("fs"), Path::new(""), &mut out)?;
    let file = dir.join(DIR_INODES);
    fs::write(&file, out).map_err(io_err("write", &file))
}

/// Which directory `path` is: its inode and birth time (a freed inode is soon reused by the
/// next directory made, the birth time tells them apart), `ino.sec.nsec`.
pub fn identity(path: &Path) -> String {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    match statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::INO | StatxFlags::BTIME) {
        Ok(x) => format!("{}.{}.{}", x.stx_ino, x.stx_btime.tv_sec, x.stx_btime.tv_nsec),
        Err(_) => String::new(),
    }
}

/// What [`record_dirs`] wrote for a snapshot (empty where it wrote nothing).
fn recorded_dirs(dir: &Path) -> HashMap<PathBuf, String> {
    let raw = fs::read(dir.join(DIR_INODES)).unwrap_or_default();
    let mut fields = raw.split(|b| *b == 0);
    let mut out = HashMap::new();
    while let (Some(ino), Some(path)) = (fields.next(), fields.next()) {
        if let Ok(id) = std::str::from_utf8(ino) {
            // SAFETY: the bytes came from `as_encoded_bytes` of an OsStr, written by record_dirs.
            let path = unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(path) };
            out.insert(PathBuf::from(path), id.to_owned());
        }
    }
    out
}

/// Copies the contents of the directory `from` into the existing directory `to`, as
/// [`CopySnapshotter`] copies a parent (the builder uses it for writable bind mounts).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    copy_tree(from, to, &mut HashMap::new())
}

/// Copies the contents of `from` into the existing directory `to`: types, modes, owners
/// (as root), times, symlinks as written, hardlinks as links, device nodes.
fn copy_tree(from: &Path, to: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(from)
        .map_err(io_err("read", from))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("read", from))?;
    names.sort();
    for name in names {
        let src = from.join(&name);
        let m = fs::symlink_metadata(&src).map_err(io_err("stat", &src))?;
        copy_entry(&src, &to.join(&name), &m, links)?;
    }
    set_meta(to, &fs::symlink_metadata(from).map_err(io_err("stat", from))?)
}

/// Copies the one entry `src` (its metadata `m`) to `dst`, which must not exist: a directory
/// with all it holds, a file (or a hardlink to where `links` says its inode was copied before),
/// a symlink, a device node or a fifo. Sockets are left out.
pub(super) fn copy_entry(
    src: &Path,
    dst: &Path,
    m: &fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let ft = m.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).map_err(io_err("create", dst))?;
        return copy_tree(src, dst, links);
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_err("read link", src))?;
        std::os::unix::fs::symlink(target, dst).map_err(io_err("create", dst))?;
    } else if let Some(first) = links.get(&(m.dev(), m.ino())).filter(|_| m.nlink() > 1) {
        return fs::hard_link(first, dst).map_err(io_err("link", dst));
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(io_err("copy", src))?;
        if m.nlink() > 1 {
            links.insert((m.dev(), m.ino()), dst.to_owned());
        }
    } else {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else if ft.is_fifo() {
            rustix::fs::FileType::Fifo
        } else {
            return Ok(());
        };
        let mode = rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777);
        rustix::fs::mknodat(rustix::fs::CWD, dst, kind, mode, m.rdev()).map_err(|e| SnapshotError::Io {
            op: "create node",
            path: dst.display().to_string(),
            source: e.into(),
        })?;
    }
    set_meta(dst, m)
}

pub(super) fn set_meta(path: &Path, m: &fs::Metadata) -> Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let err =
        |op| move |e: rustix::io::Errno| SnapshotError::Io { op, path: path.display().to_string(), source: e.into() };
    if rustix::process::geteuid().is_root() {
        let (u, g) = (rustix::fs::Uid::from_raw(m.uid()), rustix::fs::Gid::from_raw(m.gid()));
        rustix::fs::chownat(CWD, path, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW).map_err(err("chown"))?;
    }
    if !m.file_type().is_symlink() {
        rustix::fs::chmodat(CWD, path, rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777), AtFlags::empty())
            .map_err(err("chmod"))?;
    }
    let t = |s: i64, ns: i64| Timespec { tv_sec: s, tv_nsec: ns as _ };
    let times =
        Timestamps { last_access: t(m.atime(), m.atime_nsec()), last_modification: t(m.mtime(), m.mtime_nsec()) };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(err("set times"))
}

/// True when two entries differ in what a layer records (type, mode, owner, size, mtime,
/// link target); contents are taken as equal when size and mtime are. A directory's mtime
/// does not count (the sandbox's mount targets, made and removed, change it). A file with
/// more links than before counts, as overlayfs copies a link's source up before linking it.
pub(super) fn changed(a: &fs::Metadata, b: &fs::Metadata, pa: &Path, pb: &Path) -> bool {
    let kind = |m: &fs::Metadata| m.mode() & 0o170000;
    if kind(a) != kind(b) || a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return true;
    }
    if a.is_dir() {
        return false;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(pa).ok() != fs::read_link(pb).ok();
    }
    a.len() != b.len()
        || a.mtime() != b.mtime()
        || a.mtime_nsec() != b.mtime_nsec()
        || a.rdev() != b.rdev()
        || b.nlink() > a.nlink()
}

/// One entry of a copy snapshot's diff.
enum Change {
    /// The entry at this path (absolute) is written as `rel`.
    Add(PathBuf, PathBuf),
    /// `rel` is gone.
    Whiteout(PathBuf),
    /// The directory `rel` was made anew: nothing of the parent's shows through.
    Opaque(PathBuf),
}

/// What changed from `old` (None: nothing) to `new` under `rel`, in the order and form an
/// overlay upper directory gives: names in byte order with whiteouts in their place, every
/// directory on the way to a change written before it (overlayfs copies each up), and a
/// directory made anew (its identity is not the one `copied` recorded) opaque.
fn double_walk(old: Option<&Path>, new: &Path, rel: &Path, copied: &HashMap<PathBuf, String>) -> Result<Vec<Change>> {
    let list = |d: &Path| -> Result<Vec<std::ffi::OsString>> {
        Ok(fs::read_dir(d).map_err(io_err("read", d))?.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
    };
    let mut names = list(new)?;
    if let Some(old) = old {
        names.extend(list(old)?);
    }
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let (pn, r) = (new.join(&name), rel.join(&name));
        let po = old.map(|o| o.join(&name));
        let mo = po.as_ref().and_then(|p| fs::symlink_metadata(p).ok());
        let Ok(mn) = fs::symlink_metadata(&pn) else {
            out.push(Change::Whiteout(r));
            continue;
        };
        let differs = match (&mo, &po) {
            (Some(mo), Some(po)) => changed(mo, &mn, po, &pn),
            _ => true,
        };
        let old_dir = po.filter(|_| mn.is_dir() && mo.as_ref().is_some_and(fs::Metadata::is_dir));
        let remade = old_dir.is_some() && copied.get(&r).is_some_and(|id| !id.is_empty() && *id != identity(&pn));
        let below = match (mn.is_dir(), remade) {
            (false, _) => Vec::new(),
            (true, false) => double_walk(old_dir.as_deref(), &pn, &r, copied)?,
            (true, true) => double_walk(None, &pn, &r, copied)?,
        };
        if differs || remade || !below.is_empty() {
            out.push(Change::Add(pn, r.clone()));
        }
        if remade {
            out.push(Change::Opaque(r));
        }
        out.extend(below);
    }
    Ok(out)
}

impl Snapshotter for CopySnapshotter {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let fs = self.make(key, parent, "active")?;
        Ok(vec![Mount::Bind { source: fs, read_only: false }])
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        Ok(vec![Mount::Bind { source: self.dirs.require(key, "active")?.join("fs"), read_only: false }])
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let fs = self.make(key, parent, "view")?;
        Ok(vec![Mount::Bind { source: fs, read_only: true }])
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.dirs.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.dirs.remove(key)
    }

    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<()> {
        let new = self.upper(key)?;
        let old = self.dirs.parent(key).map(|p| self.dirs.dir(&p).join("fs"));
        let opts = oci::layer::TarOptions::from_env();
        let mut w = oci::layer::TarWriter::new(out, &opts);
        let copied = recorded_dirs(&self.dirs.dir(key));
        for change in double_walk(old.as_deref(), &new, Path::new(""), &copied)? {
            let (done, rel) = match change {
                Change::Add(path, rel) => (w.add_path(&path, &rel), rel),
                Change::Whiteout(rel) => (w.add_whiteout(&rel), rel),
                Change::Opaque(rel) => (w.add_opaque(&rel), rel),
            };
            done.map_err(|e| SnapshotError::Diff(rel.display().to_string(), Box::new(e)))?;
        }
        w.finish().map_err(|e| SnapshotError::Diff(key.to_owned(), Box::new(e)))?;
        Ok(())
    }

    fn upper(&self, key: &str) -> Result<PathBuf> {
        Ok(self.dirs.require(key, "active")?.join("fs"))
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Apply
    }

    fn exists(&self, name: &str) -> bool {
        self.dirs.kind(name).as_deref() == Some("committed")
    }

    fn scaffold(&self, key: &str, targets: &[String]) -> Result<Scaffold> {
        // The snapshot's directory is the whole tree: no copy-ups to undo later.
        scaffold::missing(&[self.upper(key)?], targets)
    }

    fn remove_scaffold(&self, key: &str, scaffold: &Scaffold) -> Result<()> {
        scaffold::remove_targets(&self.upper(key)?, scaffold)
    }
}
