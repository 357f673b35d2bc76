//! Applying a layer's tar stream to a directory without ever writing outside it.
//!
//! Every path is resolved inside the root with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`: a symlink in the layer (`etc -> /host/etc`, `up -> ../../..`)
//! is followed as if the root were `/`, so it can only lead somewhere under the root.
//! Entries are then created relative to their parent's fd with the `*at` calls, never
//! following a symlink at the last component: an existing path is unlinked and created
//! afresh (`O_EXCL | O_NOFOLLOW`), metadata is set on the new fd or with
//! `AT_SYMLINK_NOFOLLOW`. Symlink targets are stored as written. A hardlink's target must
//! resolve inside the root to an existing non-directory. `..` is refused; a leading `/`
//! is confined (as docker does). Device nodes need real root and the policy's consent;
//! `*.overlay.*` xattrs are dropped.
//!
//! Whiteouts (`.wh.name`, `.wh..wh..opq`) become what the snapshotter needs:
//! [`Whiteouts::Overlay`] writes overlayfs's own form (a 0/0 character device, the
//! `trusted.overlay.opaque` xattr) into a layer's own directory; [`Whiteouts::Apply`]
//! deletes from a merged tree, as the copy snapshotter needs. An opaque whiteout hides
//! lower layers only, never what the same layer put there.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

/// What a bad layer or a failed syscall is.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream itself is broken.
    #[error("layer is not a valid tar stream")]
    Tar(#[source] io::Error),
    /// An entry that could only land outside the root, or is malformed.
    #[error("refused entry {path:?}: {reason}")]
    Refused {
        /// The entry's path as written in the layer.
        path: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A rootless berth's user namespace does not map the entry's owner.
    #[error(
        "{path:?} is owned by {uid}:{gid}, which this user namespace does not map (it maps {mapped}): \
         rootless berth needs a subordinate range in /etc/subuid and /etc/subgid large enough for \
         that owner (see docs/rootless.md)"
    )]
    Unmapped {
        /// The entry.
        path: String,
        /// What the namespace maps ([`crate::userns::mapped_ids`]).
        mapped: String,
        /// Its owner in the layer.
        uid: u32,
        /// Its group in the layer.
        gid: u32,
    },
    /// A syscall failed for an entry.
    #[error("{op} {path:?}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The entry.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// `Result` for unpacking.
pub type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// As overlayfs wants them in a lower directory (needs root for the device nodes).
    Overlay,
    /// Deleting from the tree being unpacked into.
    Apply,
    /// None: `.wh.` names are plain files, as in `berth cp`'s archives, which are trees and
    /// not layers.
    Keep,
}

/// The unpack policy.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// How whiteouts are written.
    pub whiteouts: Whiteouts,
    /// Create device nodes (only honoured for real root); otherwise they are skipped.
    pub allow_devices: bool,
    /// Set owners from the layer (only honoured for real root).
    pub preserve_owners: bool,
    /// The layers below, topmost first, when unpacking into an overlay's empty upper
    /// directory: a parent directory the layer does not list is made with the mode and owner
    /// it has there, as containerd makes it, so that it does not mask the lower one.
    pub lowers: Vec<PathBuf>,
    /// Give the directories the layer lists their times again once the whole layer is in
    /// (their entries moved them). Off for the layers of image snapshots: the snapshotters'
    /// diffs must see the same parents whichever one made them (kernel overlayfs keeps a
    /// parent's times on copy-up, fuse-overlayfs does not), which unpack-time parents give.
    pub restore_dir_times: bool,
    /// List each regular file written in [`UnpackStats::files`]: a COPY needs to know
    /// where, below the root, each of its files landed (see the builder's `ops::reuse`).
    pub report_files: bool,
    /// Honour [`PLACEHOLDER`] entries. For berth's own streams only (a COPY's), never for a
    /// layer from elsewhere.
    pub placeholders: bool,
}

/// The PAX key that makes a regular file entry a placeholder (with
/// [`UnpackOptions::placeholders`]): whatever is at its path is removed and its parent
/// directory made in the root's own layer, but no file is created; the caller puts one there
/// afterwards (a COPY links an unchanged file from its last snapshot).
pub const PLACEHOLDER: &str = "BERTH.placeholder";

impl Default for UnpackOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        UnpackOptions {
            whiteouts: Whiteouts::Apply,
            allow_devices: false,
            preserve_owners: root,
            lowers: vec![],
            restore_dir_times: true,
            report_files: false,
            placeholders: false,
        }
    }
}

/// What an unpack did, beyond creating files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries written.
    pub entries: u64,
    /// Device nodes skipped by policy.
    pub skipped_devices: u64,
    /// xattrs dropped (overlay-internal ones).
    pub dropped_xattrs: u64,
    /// With [`UnpackOptions::report_files`]: each regular file written, in the layer's order.
    pub files: Vec<UnpackedFile>,
    /// Whiteout entries applied.
    pub whiteouts: u64,
    /// Directories an entry of another kind took the place of (their trees removed).
    pub dirs_replaced: u64,
}

/// A regular file an unpack wrote, for [`UnpackOptions::report_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedFile {
    /// The entry's path, cleaned (no leading `/`, no `.`).
    pub entry: PathBuf,
    /// Where it was written below the root: the entry's path with the symlinks on the way
    /// resolved, as the root's own directories name it.
    pub resolved: PathBuf,
    /// Its inode, to tell it from whatever replaces it later; None for a [`PLACEHOLDER`].
    pub ino: Option<u64>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies the uncompressed layer `tar` to the directory `root`.
pub fn unpack(tar: impl Read, root: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let root_fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| UnpackError::Io { op: "open root", path: root.display().to_string(), source: e.into() })?;
    let is_root = rustix::process::geteuid().is_root();
    let real_root = is_root && !crate::userns::rootless();
    let lowers = opts
        .lowers
        .iter()
        .map(|l| {
            rustix::fs::open(l, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(io_err("open lower layer", l))
        })
        .collect::<Result<Vec<_>>>()?;
    // Where the root is, to name where each reported file went (`Unpacker::resolved`).
    let root_path = if opts.report_files {
        Some(std::fs::read_link(format!("/proc/self/fd/{}", root_fd.as_raw_fd())).map_err(|e| UnpackError::Io {
            op: "locate root",
            path: root.display().to_string(),
            source: e,
        })?)
    } else {
        None
    };
    let mut u = Unpacker {
        root_path,
        lowers,
        root: root_fd,
        opts: opts.clone(),
        is_root,
        real_root,
        stats: UnpackStats::default(),
        written: HashSet::new(),
        on_the_way: HashSet::new(),
        copy_buf: Vec::new(),
        dir_times: Vec::new(),
        touched: HashSet::new(),
        dirs_replaced: std::cell::Cell::new(0),
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        u.entry(&mut entry)?;
    }
    u.restore_dir_times()?;
    u.stats.dirs_replaced = u.dirs_replaced.get();
    Ok(u.stats)
}

struct Unpacker {
    root: OwnedFd,
    /// The root's path, as `/proc/self/fd` shows it, when files are reported.
    root_path: Option<PathBuf>,
    opts: UnpackOptions,
    is_root: bool,
    /// Root of the host's ID space (not a rootless user namespace): device nodes and
    /// `trusted.*` xattrs can be made.
    real_root: bool,
    stats: UnpackStats,
    /// Paths this layer wrote, which its own opaque whiteouts must not hide.
    written: HashSet<PathBuf>,
    /// `opts.lowers`, opened once.
    lowers: Vec<OwnedFd>,
    /// The directories above what this layer wrote (listed or made as parents): an opaque
    /// whiteout keeps them, clearing only their lower contents.
    on_the_way: HashSet<PathBuf>,
    /// The buffer file data goes through: one large buffer, reused, so that a big file costs
    /// few read and write calls (`io::copy` would use 8 KiB).
    copy_buf: Vec<u8>,
    /// The parents of placeholders, made part of the root's own layer already.
    touched: HashSet<PathBuf>,
    /// Directories `remove` took away (see [`UnpackStats::dirs_replaced`]).
    dirs_replaced: std::cell::Cell<u64>,
    /// The directories this layer lists, with their times: set again once the layer is in,
    /// because adding their entries moved them (the same layer must unpack to the same tree).
    dir_times: Vec<(PathBuf, Timespec)>,
}

/// Bytes per read and write of file data.
const COPY_CHUNK: usize = 256 << 10;

/// Copies `from` to `to` through `buf` (grown to [`COPY_CHUNK`] on first use) until `from` ends.
fn copy_data(from: &mut impl Read, to: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<u64> {
    buf.resize(COPY_CHUNK, 0);
    let mut n = 0;
    loop {
        let got = match from.read(buf) {
            Ok(0) => return Ok(n),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..got])?;
        n += got as u64;
    }
}

/// Normalises an entry path: drops `.` and a leading `/`, refuses `..`.
fn clean(raw: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err("'..' in an entry path"),
            Component::Prefix(_) => return Err("path prefix"),
        }
    }
    Ok(out)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io { op, path: path.display().to_string(), source: e.into() }
}

impl Unpacker {
    /// Opens (creating as needed) the directory `dir`, resolved inside the root.
    fn dir(&self, dir: &Path) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let target = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        match crate::sys::open_in_root(&self.root, target, flags) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::NOENT) => {
                let parent = dir.parent().unwrap_or(Path::new(""));
                let pfd = self.dir(parent)?;
                let name = dir.file_name().unwrap_or_default();
                match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => self.like_lower(&pfd, name, dir)?,
                    Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io_err("create directory", dir)(e)),
                }
                match crate::sys::open_in_root(&self.root, target, flags) {
                    Err(rustix::io::Errno::NOENT) => Err(UnpackError::Refused {
                        path: dir.display().to_string(),
                        reason: "a parent is a symlink whose target is missing inside the root",
                    }),
                    other => other.map_err(io_err("open directory", dir)),
                }
            }
            Err(e) => Err(io_err("open directory", dir)(e)),
        }
    }

    /// Gives the directory just made at `dir` (`name` in `parent`) the mode and owner of the
    /// topmost lower layer's entry there, when that is a directory.
    fn like_lower(&self, parent: &OwnedFd, name: &std::ffi::OsStr, dir: &Path) -> Result<()> {
        for lower in &self.lowers {
            let st = match crate::sys::open_in_root(lower, dir, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC) {
                Ok(fd) => rustix::fs::fstat(&fd).map_err(io_err("stat", dir))?,
                Err(rustix::io::Errno::NOENT) => continue,
                // A whiteout, a file or a link above hides anything deeper: a new directory.
                Err(_) => return Ok(()),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Ok(());
            }
            let fd = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err("open directory", dir))?;
            if self.is_root && self.opts.preserve_owners {
                let (uid, gid) = (rustix::fs::Uid::from_raw(st.st_uid), rustix::fs::Gid::from_raw(st.st_gid));
                rustix::fs::fchown(&fd, Some(uid), Some(gid)).map_err(|e| chown_err(e, dir, (uid, gid)))?;
            }
            return rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(io_err("chmod", dir));
        }
        Ok(())
    }

    /// Removes whatever is at `name` in `parent` (a file, a link, or a whole tree).
    fn remove(&self, parent: &OwnedFd, name: &std::ffi::OsStr, path: &Path) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("stat", path)(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                self.dirs_replaced.set(self.dirs_replaced.get() + 1);
                // std's remove_dir_all never follows symlinks; the parent fd pins the location.
                let p = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
                std::fs::remove_dir_all(&p).map_err(|e| UnpackError::Io {
                    op: "remove",
                    path: path.display().to_string(),
                    source: e,
                })
            }
            Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(io_err("remove", path)),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let shown = raw.display().to_string();
        let path = clean(&raw).map_err(|reason| UnpackError::Refused { path: shown.clone(), reason })?;
        let kind = entry.header().entry_type();
        let Some(name) = path.file_name().map(|n| n.to_owned()) else {
            if kind.is_dir() {
                return self.root_entry(entry, &path);
            }
            return Err(UnpackError::Refused { path: shown, reason: "only a directory may name the root" });
        };
        let parent_path = path.parent().unwrap_or(Path::new("")).to_owned();
        let name_str = name.to_string_lossy().into_owned();

        if name_str.starts_with(WHITEOUT) && self.opts.whiteouts != Whiteouts::Keep {
            return self.whiteout(&parent_path, &name_str, shown);
        }
        if pax_sparse(entry) {
            // GNU tar's PAX sparse formats: the entry's data is a sparse map, not the file.
            return Err(UnpackError::Refused {
                path: shown,
                reason: "a PAX sparse file (write the layer with --format=gnu)",
            });
        }

        let parent = self.dir(&parent_path)?;
        let mode = Mode::from_raw_mode(entry.header().mode().map_err(UnpackError::Tar)? & 0o7777);
        match kind {
            tar::EntryType::Directory => self.directory(entry, (&parent, &name), &path, mode)?,
            // A GNU sparse file reads back whole from the tar reader, its holes as zeros.
            tar::EntryType::Regular if self.opts.placeholders && is_placeholder(entry) => {
                self.remove(&parent, &name, &path)?;
                self.placeholder(&parent, &parent_path, &path)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.regular(entry, (&parent, &name), &path, mode)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or(UnpackError::Refused { path: shown.clone(), reason: "symlink without a target" })?;
                self.remove(&parent, &name, &path)?;
                rustix::fs::symlinkat(target.as_ref(), &parent, &name).map_err(io_err("create symlink", &path))?;
                self.owner_at(&parent, &name, entry, &path)?;
                let t = mtime(entry)?;
                rustix::fs::utimensat(
                    &parent,
                    &name,
                    &Timestamps { last_access: t, last_modification: t },
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(io_err("set times", &path))?;
            }
            tar::EntryType::Link => self.hardlink(entry, (&parent, &name), &path, shown)?,
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let ft = match kind {
                    tar::EntryType::Fifo => FileType::Fifo,
                    tar::EntryType::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                if ft != FileType::Fifo && !(self.real_root && self.opts.allow_devices) {
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let dev = rustix::fs::makedev(
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                self.remove(&parent, &name, &path)?;
                rustix::fs::mknodat(&parent, &name, ft, mode, dev).map_err(io_err("create node", &path))?;
                self.owner_at(&parent, &name, entry, &path)?;
            }
            // PAX and GNU extension headers are consumed by the tar reader; anything else
            // (sockets, unknown types) has nothing to write.
            _ => return Ok(()),
        }
        // Ancestors up to the first already known (whose own ancestors are known too).
        for dir in path.ancestors().skip(1) {
            if self.on_the_way.contains(dir) {
                break;
            }
            self.on_the_way.insert(dir.to_path_buf());
        }
        self.written.insert(path);
        self.stats.entries += 1;
        Ok(())
    }

    /// A regular file entry at `path` (`name` in `parent`): whatever was there is replaced by
    /// a new file with the entry's data, mode and metadata.
    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        (parent, name): (&OwnedFd, &std::ffi::OsStr),
        path: &Path,
        mode: Mode,
    ) -> Result<()> {
        self.remove(parent, name, path)?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err("create file", path))?;
        let mut file = std::fs::File::from(fd);
        copy_data(entry, &mut file, &mut self.copy_buf).map_err(|e| UnpackError::Io {
            op: "write",
            path: path.display().to_string(),
            source: e,
        })?;
        rustix::fs::fchmod(&file, mode).map_err(io_err("chmod", path))?;
        let fd = OwnedFd::from(file);
        self.metadata_fd(&fd, entry, path)?;
        if self.root_path.is_some() {
            #[allow(clippy::unnecessary_cast)] // narrower on 32-bit targets
            let ino = rustix::fs::fstat(&fd).map_err(io_err("stat", path))?.st_ino as u64;
            self.report(parent, Some(ino), path);
        }
        Ok(())
    }

    /// A directory entry at `path` (`name` in `parent`): made unless a directory is there
    /// already, then given the entry's mode and metadata; its times are set again at the end.
    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        (parent, name): (&OwnedFd, &std::ffi::OsStr),
        path: &Path,
        mode: Mode,
    ) -> Result<()> {
        let existing = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW);
        if !matches!(existing, Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory) {
            self.remove(parent, name, path)?;
            rustix::fs::mkdirat(parent, name, mode).map_err(io_err("create directory", path))?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(io_err("open directory", path))?;
        rustix::fs::fchmod(&fd, mode).map_err(io_err("chmod", path))?;
        self.metadata_fd(&fd, entry, path)?;
        self.note_dir_time(entry, path)
    }

    /// The root directory itself: metadata only.
    fn root_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<()> {
        // Metadata needs a real descriptor, not the O_PATH one `dir` returns.
        let fd =
            rustix::fs::openat(&self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(io_err("open root", path))?;
        let mode = entry.header().mode().map_err(UnpackError::Tar)? & 0o7777;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io_err("chmod", path))?;
        self.metadata_fd(&fd, entry, path)?;
        self.note_dir_time(entry, path)
    }

    /// Lists the regular file (inode `ino`, None for a placeholder) just written at `path`
    /// in `parent`, when asked to. A parent whose place the kernel cannot name below the root
    /// is left out of the list.
    fn report(&mut self, parent: &OwnedFd, ino: Option<u64>, path: &Path) {
        let Some(root) = &self.root_path else { return };
        let Ok(at) = std::fs::read_link(format!("/proc/self/fd/{}", parent.as_raw_fd())) else { return };
        let Ok(below) = at.strip_prefix(root) else { return };
        let resolved = below.join(path.file_name().unwrap_or_default());
        self.stats.files.push(UnpackedFile { entry: path.to_owned(), resolved, ino });
    }

    /// A [`PLACEHOLDER`] at `path` (its old entry already removed from `parent`): the parent
    /// is made part of the root's own layer (an overlay copies a lower directory up when its
    /// time changes), dated now as a new file in it would leave it, and the place reported.
    fn placeholder(&mut self, parent: &OwnedFd, parent_path: &Path, path: &Path) -> Result<()> {
        if self.touched.insert(parent_path.to_owned()) {
            let dir =
                rustix::fs::openat(parent, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(io_err("open directory", parent_path))?;
            let keep = Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT };
            let now = Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
            rustix::fs::futimens(&dir, &Timestamps { last_access: keep, last_modification: now })
                .map_err(io_err("set times", parent_path))?;
        }
        self.report(parent, None, path);
        Ok(())
    }

    /// Remembers a listed directory's time for [`Unpacker::restore_dir_times`], when asked to.
    fn note_dir_time<R: Read>(&mut self, entry: &tar::Entry<'_, R>, path: &Path) -> Result<()> {
        if self.opts.restore_dir_times {
            self.dir_times.push((path.to_owned(), mtime(entry)?));
        }
        Ok(())
    }

    /// Gives each directory the layer lists its time from the layer again, after everything
    /// below it was written. A directory a later entry replaced or removed is left alone.
    fn restore_dir_times(&self) -> Result<()> {
        for (dir, t) in &self.dir_times {
            let times = Timestamps { last_access: *t, last_modification: *t };
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let target = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
            // Resolved inside the root, as every other path: a directory that a later entry
            // turned into a symlink is not followed.
            let fd = match crate::sys::open_in_root(&self.root, target, flags | OFlags::NOFOLLOW) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => continue,
                Err(e) => return Err(io_err("open directory", dir)(e)),
            };
            rustix::fs::futimens(&fd, &times).map_err(io_err("set times", dir))?;
        }
        Ok(())
    }

    /// A whiteout entry `name` (`.wh.x`, or the opaque `.wh..wh..opq`) in `dir`.
    fn whiteout(&mut self, dir: &Path, name: &str, shown: String) -> Result<()> {
        let parent = self.dir(dir)?;
        if name == OPAQUE {
            return self.opaque(&parent, dir);
        }
        let hidden = &name[WHITEOUT.len()..];
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.starts_with(WHITEOUT) {
            return Err(UnpackError::Refused { path: shown, reason: "whiteout of an empty, '.' or '..' name" });
        }
        let target = dir.join(hidden);
        self.remove(&parent, std::ffi::OsStr::new(hidden), &target)?;
        self.stats.whiteouts += 1;
        if self.opts.whiteouts == Whiteouts::Overlay {
            rustix::fs::mknodat(&parent, hidden, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
                .map_err(io_err("create whiteout", &target))?;
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A hardlink entry at `path` (`name` in `parent`): its target must resolve inside the
    /// root to an existing non-directory.
    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        (parent, name): (&OwnedFd, &std::ffi::OsStr),
        path: &Path,
        shown: String,
    ) -> Result<()> {
        let refused = |reason| UnpackError::Refused { path: shown.clone(), reason };
        let raw_target = entry.link_name().map_err(UnpackError::Tar)?.ok_or(refused("hardlink without a target"))?;
        let target = clean(&raw_target).map_err(refused)?;
        let tname = target.file_name().ok_or(refused("hardlink to the root"))?;
        let tparent = self.dir(target.parent().unwrap_or(Path::new("")))?;
        match rustix::fs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(refused("hardlink to a directory"))
            }
            Ok(_) => {}
            Err(_) => return Err(refused("hardlink target is not in the layer's tree")),
        }
        self.remove(parent, name, path)?;
        rustix::fs::linkat(&tparent, tname, parent, name, AtFlags::empty()).map_err(io_err("create hardlink", path))
    }

    /// An opaque whiteout: hide what lower layers put in `dir`.
    fn opaque(&mut self, dir_fd: &OwnedFd, dir: &Path) -> Result<()> {
        self.stats.entries += 1;
        self.stats.whiteouts += 1;
        match self.opts.whiteouts {
            Whiteouts::Overlay => {
                let fd = rustix::fs::openat(
                    dir_fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory", dir))?;
                rustix::fs::fsetxattr(
                    &fd,
                    crate::userns::overlay_xattrs().opaque(),
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(io_err("mark opaque", dir))
            }
            Whiteouts::Apply => self.clear_lower(dir_fd, dir),
            Whiteouts::Keep => Ok(()),
        }
    }

    /// Removes from `dir` everything lower layers put there, at any depth: what this layer
    /// wrote stays, and so do the directories on the way to it (written or made as parents),
    /// whose own lower contents are cleared in turn.
    fn clear_lower(&self, dir_fd: &OwnedFd, dir: &Path) -> Result<()> {
        let listing = |e| UnpackError::Io { op: "list", path: dir.display().to_string(), source: e };
        let p = PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()));
        for child in std::fs::read_dir(&p).map_err(listing)? {
            let child = child.map_err(listing)?;
            let (name, rel) = (child.file_name(), dir.join(child.file_name()));
            let is_dir = child.file_type().map_err(listing)?.is_dir();
            if is_dir && (self.written.contains(&rel) || self.on_the_way.contains(&rel)) {
                let fd = rustix::fs::openat(
                    dir_fd,
                    &name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory", &rel))?;
                self.clear_lower(&fd, &rel)?;
            } else if !self.written.contains(&rel) {
                self.remove(dir_fd, &name, &rel)?;
            }
        }
        Ok(())
    }

    fn owner_at<R: Read>(
        &self,
        parent: &OwnedFd,
        name: &std::ffi::OsStr,
        entry: &tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<()> {
        if !(self.is_root && self.opts.preserve_owners) {
            return Ok(());
        }
        let (uid, gid) = ids(entry)?;
        rustix::fs::chownat(parent, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| chown_err(e, path, (uid, gid)))
    }

    /// Owner, times and xattrs on an open file or directory.
    fn metadata_fd<R: Read>(&mut self, fd: &OwnedFd, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<()> {
        if self.is_root && self.opts.preserve_owners {
            let (uid, gid) = ids(entry)?;
            rustix::fs::fchown(fd, Some(uid), Some(gid)).map_err(|e| chown_err(e, path, (uid, gid)))?;
            // chown clears set-id bits; put the mode back.
            let mode = entry.header().mode().map_err(UnpackError::Tar)? & 0o7777;
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io_err("chmod", path))?;
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
                    continue;
                };
                if name.contains(".overlay.") {
                    self.stats.dropped_xattrs += 1;
                    continue;
                }
                if name.starts_with("trusted.") && !self.real_root {
                    continue;
                }
                rustix::fs::fsetxattr(fd.as_fd(), name, ext.value_bytes(), rustix::fs::XattrFlags::empty())
                    .map_err(io_err("set xattr", path))?;
            }
        }
        let t = mtime(entry)?;
        rustix::fs::futimens(fd, &Timestamps { last_access: t, last_modification: t })
            .map_err(io_err("set times", path))
    }
}

/// A failed chown; EINVAL in a rootless user namespace means an owner it does not map.
fn chown_err(e: rustix::io::Errno, path: &Path, (uid, gid): (rustix::fs::Uid, rustix::fs::Gid)) -> UnpackError {
    let path = path.display().to_string();
    // EPERM is a missing CAP_CHOWN (an owner a user namespace does not map is EINVAL).
    if e == rustix::io::Errno::PERM {
        let source = io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: berth needs CAP_CHOWN to give a layer's files their owners", io::Error::from(e)),
        );
        return UnpackError::Io { op: "chown", path, source };
    }
    if e == rustix::io::Errno::INVAL && crate::userns::rootless() {
        let mapped = crate::userns::mapped_ids().unwrap_or_else(|| "no ID".into());
        return UnpackError::Unmapped { path, mapped, uid: uid.as_raw(), gid: gid.as_raw() };
    }
    UnpackError::Io { op: "chown", path, source: e.into() }
}

fn ids<R: Read>(entry: &tar::Entry<'_, R>) -> Result<(rustix::fs::Uid, rustix::fs::Gid)> {
    let h = entry.header();
    let uid = u32::try_from(h.uid().map_err(UnpackError::Tar)?).unwrap_or(u32::MAX);
    let gid = u32::try_from(h.gid().map_err(UnpackError::Tar)?).unwrap_or(u32::MAX);
    Ok((rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid)))
}

/// Whether `entry` carries the [`PLACEHOLDER`] key.
fn is_placeholder<R: Read>(entry: &mut tar::Entry<'_, R>) -> bool {
    let Ok(Some(exts)) = entry.pax_extensions() else { return false };
    exts.flatten().any(|e| e.key() == Ok(PLACEHOLDER))
}

/// Whether `entry` is a sparse file in one of GNU tar's PAX formats (`GNU.sparse.*` keys),
/// which the tar reader hands over as its sparse map.
fn pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> bool {
    let Ok(Some(exts)) = entry.pax_extensions() else { return false };
    exts.flatten().any(|e| e.key().is_ok_and(|k| k.starts_with("GNU.sparse.")))
}

fn mtime<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Timespec> {
    let secs = entry.header().mtime().map_err(UnpackError::Tar)?;
    Ok(Timespec { tv_sec: i64::try_from(secs).unwrap_or(0), tv_nsec: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tar entry written byte for byte, so that names `tar::Builder` would refuse
    /// (`..`, absolute paths) can be crafted.
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8], link: &str) {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn layer(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            raw(&mut b, name, *kind, data, link);
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as L, Regular as F, Symlink as S};

    /// A root dir inside a sandbox dir, so anything escaping lands in the sandbox where
    /// the test can see it.
    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        (t, root)
    }

    fn apply(tar: &[u8], root: &Path) -> Result<UnpackStats> {
        unpack(tar, root, &UnpackOptions { whiteouts: Whiteouts::Apply, ..Default::default() })
    }

    #[test]
    fn placeholders_make_room_only_when_asked_and_every_file_is_reported_where_it_went() {
        // a/old (to be replaced by a placeholder), a/new, and a symlink l -> a.
        let (_t, root) = sandbox();
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/old"), "old").unwrap();
        std::os::unix::fs::symlink("a", root.join("l")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        // A PAX record: its length (23 bytes, these digits included), the key, the value.
        let record = format!("23 {PLACEHOLDER}=1\n");
        assert_eq!(record.len(), 23);
        raw(&mut b, "PaxHeader", tar::EntryType::XHeader, record.as_bytes(), "");
        raw(&mut b, "l/old", F, b"", "");
        raw(&mut b, "l/new", F, b"data", "");
        let tar = b.into_inner().unwrap();

        // A layer from elsewhere: the mark means nothing, an empty file is written.
        let stats = apply(&tar, &root).unwrap();
        assert_eq!(std::fs::read(root.join("a/old")).unwrap(), b"");
        assert!(stats.files.is_empty(), "files are reported only when asked");

        std::fs::write(root.join("a/old"), "old").unwrap();
        let opts = UnpackOptions { report_files: true, placeholders: true, ..Default::default() };
        let stats = unpack(&tar[..], &root, &opts).unwrap();
        assert!(!root.join("a/old").exists(), "a placeholder removes what was there and writes nothing");
        let ino = std::fs::metadata(root.join("a/new")).unwrap().ino();
        assert_eq!(
            stats.files,
            [
                UnpackedFile { entry: "l/old".into(), resolved: "a/old".into(), ino: None },
                UnpackedFile { entry: "l/new".into(), resolved: "a/new".into(), ino: Some(ino) },
            ]
        );
    }

    #[test]
    fn unpacks_files_dirs_links_with_modes_and_times() {
        let (_t, root) = sandbox();
        let tar = layer(&[
            ("./", D, b"", ""),
            ("bin/", D, b"", ""),
            ("bin/tool", F, b"#!/bin/sh\n", ""),
            ("bin/alias", S, b"", "tool"),
            ("bin/hard", L, b"", "bin/tool"),
        ]);
        let stats = apply(&tar, &root).unwrap();
        assert_eq!(stats.entries, 4, "the root entry changes metadata only");
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(root.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(std::fs::read_link(root.join("bin/alias")).unwrap(), Path::new("tool"));
        let (a, b) =
            (std::fs::metadata(root.join("bin/tool")).unwrap(), std::fs::metadata(root.join("bin/hard")).unwrap());
        assert_eq!(a.ino(), b.ino(), "hardlink shares the inode");
        assert_eq!(a.permissions().mode() & 0o777, 0o644);
        assert_eq!(a.mtime(), 1_000_000);
        // Directories keep the layer's time though their entries came after them, so one
        // layer unpacks to the same tree on every machine.
        assert_eq!(std::fs::metadata(root.join("bin")).unwrap().mtime(), 1_000_000);
        assert_eq!(std::fs::metadata(&root).unwrap().mtime(), 1_000_000);
    }

    /// Bytes that differ at every offset, so that a chunk written twice or out of place shows.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn file_data_is_whole_on_both_sides_of_a_copy_chunk() {
        let (_t, root) = sandbox();
        let sizes = [0, 1, COPY_CHUNK - 1, COPY_CHUNK, COPY_CHUNK + 1, 3 * COPY_CHUNK + 5];
        let datas: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n)).collect();
        let names: Vec<String> = sizes.iter().map(|n| format!("f{n}")).collect();
        let entries: Vec<_> = names.iter().zip(&datas).map(|(n, d)| (n.as_str(), F, d.as_slice(), "")).collect();
        // Through a reader that hands out a few bytes at a time, as a pipe may.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(70_001);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let tar = layer(&entries);
        unpack(Trickle(&tar), &root, &UnpackOptions { whiteouts: Whiteouts::Apply, ..Default::default() }).unwrap();
        for (name, data) in names.iter().zip(&datas) {
            assert!(std::fs::read(root.join(name)).unwrap() == *data, "{name} differs");
        }
    }

    #[test]
    fn dot_dot_is_refused() {
        let (t, root) = sandbox();
        let err = apply(&layer(&[("../evil", F, b"x", "")]), &root).unwrap_err();
        assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
        assert!(!t.path().join("evil").exists());
        let err = apply(&layer(&[("a/../../evil", F, b"x", "")]), &root).unwrap_err();
        assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
    }

    #[test]
    fn absolute_paths_are_confined() {
        let (t, root) = sandbox();
        let target = t.path().join("outside");
        let name = format!("{}", target.display());
        apply(&layer(&[(&name, F, b"x", "")]), &root).unwrap();
        assert!(!target.exists(), "nothing written at the absolute host path");
        assert!(root.join(name.trim_start_matches('/')).exists(), "written under the root instead");
    }

    #[test]
    fn absolute_symlink_cannot_lead_out() {
        let (t, root) = sandbox();
        let outside = t.path().join("host-etc");
        std::fs::create_dir(&outside).unwrap();
        let tar = layer(&[("etc", S, b"", &outside.display().to_string()), ("etc/passwd", F, b"owned", "")]);
        let err = apply(&tar, &root).unwrap_err();
        assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
        assert!(!outside.join("passwd").exists(), "the write followed the symlink out of the root");
        // Where the link's target exists inside the root, the write lands there.
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        apply(&tar, &root).unwrap();
        assert!(inside.join("passwd").exists(), "it lands inside the root");
        assert!(!outside.join("passwd").exists());
    }

    #[test]
    fn relative_symlink_climbing_out_is_confined() {
        let (t, root) = sandbox();
        let tar = layer(&[("up", S, b"", "../../../../.."), ("up/escaped", F, b"x", "")]);
        apply(&tar, &root).unwrap();
        assert!(!t.path().join("escaped").exists());
        assert!(root.join("escaped").exists(), "'..' from the root stays at the root");
    }

    #[test]
    fn a_file_over_an_existing_symlink_replaces_the_link() {
        let (t, root) = sandbox();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "original").unwrap();
        let tar = layer(&[("x", S, b"", &victim.display().to_string()), ("x", F, b"new", "")]);
        apply(&tar, &root).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
        assert_eq!(std::fs::read_to_string(root.join("x")).unwrap(), "new");
    }

    #[test]
    fn hardlinks_must_stay_inside() {
        let (t, root) = sandbox();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        for target in ["../secret", "/../secret"] {
            let err = apply(&layer(&[("leak", L, b"", target)]), &root).unwrap_err();
            assert!(matches!(err, UnpackError::Refused { .. }), "{target}: {err}");
        }
        // An absolute target resolves inside the root, where there is no such file.
        let abs = t.path().join("secret").display().to_string();
        assert!(apply(&layer(&[("leak", L, b"", &abs)]), &root).is_err());
        // Through a symlinked directory that points out: still resolved inside.
        let tar = layer(&[("d", S, b"", &t.path().display().to_string()), ("leak", L, b"", "d/secret")]);
        assert!(apply(&tar, &root).is_err());
        assert!(!root.join("leak").exists());
        let tar = layer(&[("dir/", D, b"", ""), ("dirlink", L, b"", "dir")]);
        assert!(matches!(
            apply(&tar, &root).unwrap_err(),
            UnpackError::Refused { reason: "hardlink to a directory", .. }
        ));
    }

    #[test]
    fn devices_are_skipped_by_default() {
        let (_t, root) = sandbox();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(1).unwrap();
        h.set_mode(0o666);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "dev/mem", io::empty()).unwrap();
        let stats = apply(&b.into_inner().unwrap(), &root).unwrap();
        assert_eq!(stats.skipped_devices, 1);
        assert!(!root.join("dev/mem").exists());
    }

    #[test]
    fn whiteouts_delete_in_apply_mode() {
        let (_t, root) = sandbox();
        apply(
            &layer(&[
                ("a/", D, b"", ""),
                ("a/gone", F, b"x", ""),
                ("a/keep", F, b"x", ""),
                ("b/", D, b"", ""),
                ("b/sub/", D, b"", ""),
                ("b/old", F, b"x", ""),
            ]),
            &root,
        )
        .unwrap();
        // The upper layer deletes a/gone, makes b opaque, and adds b/new (before and after the marker).
        apply(
            &layer(&[
                ("a/.wh.gone", F, b"", ""),
                ("b/new", F, b"n", ""),
                ("b/.wh..wh..opq", F, b"", ""),
                ("b/later", F, b"l", ""),
            ]),
            &root,
        )
        .unwrap();
        assert!(!root.join("a/gone").exists());
        assert!(root.join("a/keep").exists());
        assert!(!root.join("b/old").exists() && !root.join("b/sub").exists(), "opaque hides lower content");
        assert!(root.join("b/new").exists() && root.join("b/later").exists(), "but not this layer's own");
        assert!(!root.join("a/.wh.gone").exists(), "whiteout files are never written");
    }

    #[test]
    fn a_parent_the_layer_does_not_list_takes_the_lower_directorys_mode_and_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (_t, upper) = sandbox();
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("home/user")).unwrap();
        std::fs::create_dir(lower.path().join("scratch")).unwrap();
        std::fs::set_permissions(lower.path().join("scratch"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::set_permissions(lower.path().join("home/user"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(lower.path().join("home/user"), Some(1000), Some(1000)).unwrap();
        }
        let tar = layer(&[("scratch/new", F, b"n", ""), ("home/user/.profile", F, b"p", ""), ("fresh/x", F, b"x", "")]);
        let opts = UnpackOptions { lowers: vec![lower.path().to_owned()], ..Default::default() };
        unpack(&tar[..], &upper, &opts).unwrap();
        let meta = |p: &str| std::fs::metadata(upper.join(p)).unwrap();
        assert_eq!(meta("scratch").permissions().mode() & 0o7777, 0o1777);
        assert_eq!(meta("home/user").permissions().mode() & 0o7777, 0o700);
        assert_eq!(meta("fresh").permissions().mode() & 0o7777, 0o755, "no lower directory: a plain one");
        if root {
            assert_eq!((meta("home/user").uid(), meta("home/user").gid()), (1000, 1000));
        }
    }

    #[test]
    fn gnu_sparse_files_are_written_whole_and_pax_sparse_ones_refused() {
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("sparse.bin");
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(1 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"tail", (1 << 20) - 4).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
        for (format, whole) in [("gnu", true), ("pax", false)] {
            let tar = src.path().join(format!("{format}.tar"));
            let made = std::process::Command::new("tar")
                .args(["--sparse", &format!("--format={format}"), "-C"])
                .arg(src.path())
                .args(["-cf"])
                .arg(&tar)
                .arg("sparse.bin")
                .status();
            if !made.is_ok_and(|s| s.success()) {
                return; // no GNU tar here
            }
            let (_t, root) = sandbox();
            let got = apply(&std::fs::read(&tar).unwrap(), &root);
            if whole {
                got.unwrap();
                let data = std::fs::read(root.join("sparse.bin")).unwrap();
                assert_eq!(data.len(), 1 << 20);
                assert_eq!((&data[..4], &data[data.len() - 4..]), (&b"head"[..], &b"tail"[..]));
                assert!(data[4..data.len() - 4].iter().all(|b| *b == 0), "holes read as zeros");
            } else {
                let err = got.unwrap_err().to_string();
                assert!(err.contains("PAX sparse"), "{err}");
                assert!(std::fs::read_dir(&root).unwrap().next().is_none(), "nothing written for it");
            }
        }
    }

    #[test]
    fn an_opaque_directory_keeps_this_layers_tree_at_any_depth_and_nothing_below_of_the_lowers() {
        let (_t, root) = sandbox();
        let lower = layer(&[
            ("b/", D, b"", ""),
            ("b/sub/", D, b"", ""),
            ("b/sub/old2", F, b"x", ""),
            ("c/", D, b"", ""),
            ("c/x/", D, b"", ""),
            ("c/x/old", F, b"x", ""),
        ]);
        apply(&lower, &root).unwrap();
        // The marker after the layer's own entries: b/sub/ listed, c/x made as a parent.
        let upper = layer(&[
            ("b/sub/", D, b"", ""),
            ("b/sub/new", F, b"n", ""),
            ("b/.wh..wh..opq", F, b"", ""),
            ("c/x/new", F, b"n", ""),
            ("c/.wh..wh..opq", F, b"", ""),
        ]);
        apply(&upper, &root).unwrap();
        assert!(root.join("b/sub/new").exists() && root.join("c/x/new").exists(), "this layer's files stay");
        assert!(!root.join("b/sub/old2").exists(), "a lower file under a listed directory goes");
        assert!(!root.join("c/x/old").exists(), "and under a directory made as a parent");
    }

    #[test]
    fn malformed_whiteouts_are_refused() {
        let (_t, root) = sandbox();
        for name in [".wh.", "a/.wh..", "a/.wh..wh.x"] {
            let err = apply(&layer(&[(name, F, b"", "")]), &root).unwrap_err();
            assert!(matches!(err, UnpackError::Refused { .. }), "{name}: {err}");
        }
    }

    #[test]
    fn overlay_whiteouts_are_device_nodes_and_xattrs() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: overlay whiteouts need root (mknod, trusted.* xattrs)");
            return;
        }
        let (_t, root) = sandbox();
        let opts = UnpackOptions { whiteouts: Whiteouts::Overlay, ..Default::default() };
        unpack(&layer(&[("a/.wh.gone", F, b"", ""), ("b/.wh..wh..opq", F, b"", "")])[..], &root, &opts).unwrap();
        let st = std::fs::symlink_metadata(root.join("a/gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()));
        assert_eq!(st.rdev(), 0);
        let mut buf = [0u8; 4];
        let n = rustix::fs::getxattr(root.join("b"), crate::userns::overlay_xattrs().opaque(), &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"y");
    }

    #[test]
    fn truncated_layers_are_errors() {
        let (_t, root) = sandbox();
        let mut tar = layer(&[("big", F, &[7u8; 5000], "")]);
        tar.truncate(1500);
        assert!(apply(&tar, &root).is_err());
    }
}
