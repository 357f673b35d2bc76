//! Unchanged files of a COPY, linked instead of written.
//!
//! A COPY from the context whose sources changed misses the cache and runs again, though
//! most of its files are often what they were last time (one file edited in a large tree).
//! Each file whose content, size, mode, owner and time equal those of the file at the same
//! destination in the last snapshot the same instruction made is streamed as an empty
//! placeholder; once the copy is in and unmounted, each placeholder is replaced by a hard
//! link to that file. Only the changed files are written. The snapshot, and so the layer
//! its diff makes, is the one a full copy makes: the same bytes and metadata at the same
//! paths, each file with one name within the layer.
//!
//! It applies only where [`Snapshotter::linkable`] allows it (kernel overlayfs, which copies
//! a lower file up before any change to it). The files of the last snapshot are known from
//! a manifest kept under the instruction ([`key`]): destination, resolved path, content
//! digest and size of each regular file. The manifest holds for any snapshot of that chain,
//! since the chain's diffIDs fix every byte of it. Anything unexpected while linking is
//! [`Failed`], and the caller copies again in full.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use runner::snapshot::Snapshotter;
use runner::unpack::{UnpackStats, UnpackedFile};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};

use super::copy::Entry;
use crate::cache::CacheStore;
use crate::error::Result;
use crate::graph::{CopyFrom, CopyOp, CopySrc};

/// The cache entry holding the manifest of the last snapshot `c` made; None for copies that
/// never link (`--link`, `--from`, ADD of archives, WORKDIR).
pub(super) fn key(c: &CopyOp) -> Option<String> {
    let from_context = c.from == CopyFrom::Context && c.sources.iter().any(|s| matches!(s, CopySrc::Path(_)));
    if c.link || c.unpack_archives || !from_context {
        return None;
    }
    let op = serde_json::to_vec(c).ok()?;
    Some(format!("copyreuse/{}", oci::Digest::of(&op)))
}

/// One regular file of a snapshot's manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Known {
    /// The copy's destination path (its tar entry, below the root).
    target: String,
    /// Where it landed below the root, symlinks resolved: its path in the upper directory.
    path: String,
    /// The content's digest.
    digest: oci::Digest,
    /// The content's size.
    size: u64,
}

impl Known {
    /// Where the file is below the snapshot's root, its digest and size: what a skeleton
    /// needs to name it (see [`crate::cache::remote::skeleton`]).
    pub(super) fn hint(&self) -> (String, oci::Digest, u64) {
        (self.path.clone(), self.digest.clone(), self.size)
    }
}

/// What is kept under [`key`].
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The committed snapshot the files are in.
    chain: String,
    files: Vec<Known>,
}

/// Stores the manifest of the snapshot `chain` a copy just made, for the next one.
pub(super) fn save(cache: &dyn CacheStore, key: &str, chain: &str, files: Vec<Known>) -> Result<()> {
    let manifest = Manifest { chain: chain.to_owned(), files };
    let raw = serde_json::to_vec(&manifest).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    cache.put(key.as_bytes(), &raw)
}

/// The last snapshot of a copy, whose unchanged files the copy running now may link.
pub(super) struct Plan {
    /// Its files' directory, open.
    dir: OwnedFd,
    /// Its manifest, by destination path.
    files: HashMap<String, Known>,
}

/// A file the copy links instead of writing: its path in the last snapshot, and its inode
/// when it was chosen (a different one at link time means that snapshot changed).
#[derive(Debug, Clone)]
pub(super) struct Linked {
    path: PathBuf,
    ino: u64,
}

/// A regular file the copy streamed, in order.
#[derive(Debug)]
pub(super) struct Emitted {
    /// Its destination path.
    pub target: String,
    /// Its content's digest, when known (files from the context).
    pub digest: Option<oci::Digest>,
    /// Its size.
    pub size: u64,
    /// Streamed as an empty placeholder for this file.
    pub linked: Option<Linked>,
}

/// Linking went wrong; the copy must run again without linking.
#[derive(Debug)]
pub(super) struct Failed(pub String);

impl Plan {
    /// The plan for the copy under `key`, when its last snapshot is still there and may be
    /// linked from. Claimed by the snapshotter (see [`Snapshotter::linkable`]).
    pub(super) fn load(cache: &dyn CacheStore, snapshotter: &dyn Snapshotter, key: &str) -> Option<Plan> {
        let raw = cache.get(key.as_bytes()).ok()??;
        let manifest: Manifest = serde_json::from_slice(&raw).ok()?;
        let fs = snapshotter.linkable(&manifest.chain)?;
        let dir = rustix::fs::open(&fs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let files = manifest.files.into_iter().map(|k| (k.target.clone(), k)).collect();
        Some(Plan { dir, files })
    }

    /// The file to link at `target` instead of streaming `digest`'s bytes with the metadata
    /// `want`: the last snapshot's file there, when it is exactly that.
    pub(super) fn linkable(&self, target: &str, want: &Entry, digest: &oci::Digest) -> Option<Linked> {
        let known = self.files.get(target).filter(|k| &k.digest == digest && k.size == want.size)?;
        let fd = open_beneath(&self.dir, Path::new(&known.path), OFlags::PATH | OFlags::NOFOLLOW).ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        #[allow(clippy::unnecessary_cast)] // the stat fields are narrower on 32-bit targets
        let same = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_size as u64 == want.size
            && st.st_mode & 0o7777 == want.mode
            && (st.st_uid, st.st_gid) == (want.uid, want.gid)
            && st.st_mtime as i64 == want.mtime as i64
            && st.st_mtime_nsec == 0
            // A source with extended attributes is never linked (see `emit_file`): nor may
            // the copy linked to have some the source no longer has.
            && no_xattrs(&fd);
        #[allow(clippy::unnecessary_cast)]
        same.then(|| Linked { path: PathBuf::from(&known.path), ino: st.st_ino as u64 })
    }
}

/// Whether the file `fd` (an `O_PATH` descriptor) has no extended attributes of its own.
fn no_xattrs(fd: &impl std::os::fd::AsRawFd) -> bool {
    let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    matches!(oci::layer::xattr::records(&at, true), Ok(None))
}

/// After the copy's unpack into the unmounted upper directory `upper`: puts each linked
/// file in its placeholder's place, and returns the manifest of what the snapshot now holds.
/// `files` are the unpacker's reports (`whiteouts` the whiteout entries it applied),
/// `emitted` the producer's record, both in stream order.
pub(super) fn settle(
    upper: &Path,
    plan: Option<&Plan>,
    emitted: &[Emitted],
    stats: &UnpackStats,
) -> std::result::Result<Vec<Known>, Failed> {
    let failed = |what: &str, path: &Path, e: rustix::io::Errno| Failed(format!("{what} {}: {e}", path.display()));
    if emitted.iter().any(|e| e.linked.is_some()) {
        // A whiteout, or an entry that replaced a directory, could have taken a placeholder's
        // place (or its parent) away after it was made, and a later entry made it again.
        if stats.whiteouts > 0 {
            return Err(Failed("the copy holds whiteout entries".into()));
        }
        if stats.dirs_replaced > 0 {
            return Err(Failed("an entry of the copy replaced a directory".into()));
        }
    }
    let files = &stats.files[..];
    let root = rustix::fs::open(upper, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| failed("open", upper, e))?;
    let mut reports: HashMap<&Path, Vec<&UnpackedFile>> = HashMap::new();
    for f in files {
        reports.entry(f.entry.as_path()).or_default().push(f);
    }
    let mut manifest = Vec::new();
    let mut links: BTreeMap<&Path, Vec<(&std::ffi::OsStr, &Linked)>> = BTreeMap::new();
    // Later entries first: a place a later entry wrote is that entry's.
    let mut taken: HashSet<&Path> = HashSet::new();
    for e in emitted.iter().rev() {
        let Some(report) = reports.get_mut(Path::new(&e.target)).and_then(Vec::pop) else {
            if e.linked.is_some() {
                return Err(Failed(format!("the unpack did not say where {} went", e.target)));
            }
            continue;
        };
        if !taken.insert(report.resolved.as_path()) {
            continue;
        }
        let parent_rel = report.resolved.parent().unwrap_or(Path::new(""));
        let name = report.resolved.file_name().unwrap_or_default();
        let parent = match open_beneath(&root, parent_rel, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(err) if e.linked.is_some() => return Err(failed("open", parent_rel, err)),
            // A written file whose directory a later entry replaced: not in the snapshot.
            Err(_) => continue,
        };
        let here = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW);
        match (&e.linked, report.ino) {
            (Some(linked), None) => {
                match here {
                    // Nothing there, or overlayfs's mark that a lower layer's entry is gone.
                    Err(rustix::io::Errno::NOENT) => {}
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0 => {}
                    Ok(_) => return Err(Failed(format!("something took the place of {}", e.target))),
                    Err(err) => return Err(failed("stat", &report.resolved, err)),
                }
                links.entry(parent_rel).or_default().push((name, linked));
            }
            #[allow(clippy::unnecessary_cast)] // the stat fields are narrower on 32-bit targets
            (None, Some(ino)) if here.is_ok_and(|st| st.st_ino as u64 == ino) => {}
            // Replaced by a later entry that is not a regular file.
            (None, Some(_)) => continue,
            _ => return Err(Failed(format!("{} was not streamed as it was planned", e.target))),
        }
        if let Some(digest) = &e.digest {
            let path = report.resolved.to_string_lossy().into_owned();
            manifest.push(Known { target: e.target.clone(), path, digest: digest.clone(), size: e.size });
        }
    }
    if let Some(plan) = plan {
        for (dir, names) in links {
            let parent =
                open_beneath(&root, dir, OFlags::PATH | OFlags::DIRECTORY).map_err(|err| failed("open", dir, err))?;
            // Keeping the directory's times: the layer records them.
            runner::sys::keeping_times(&parent, || {
                names.iter().try_for_each(|(name, linked)| link_into(plan, linked, &parent, name))
            })
            .map_err(|err| failed("link into", dir, err))?;
        }
    } else if !links.is_empty() {
        return Err(Failed("placeholders without a plan".into()));
    }
    manifest.reverse();
    Ok(manifest)
}

/// Puts a hard link to `linked` (in the plan's snapshot) at `name` in `parent`, over the
/// whiteout there if there is one.
fn link_into(plan: &Plan, linked: &Linked, parent: &OwnedFd, name: &std::ffi::OsStr) -> rustix::io::Result<()> {
    let old = open_beneath(&plan.dir, &linked.path, OFlags::PATH | OFlags::NOFOLLOW)?;
    #[allow(clippy::unnecessary_cast)]
    if rustix::fs::fstat(&old)?.st_ino as u64 != linked.ino {
        return Err(rustix::io::Errno::STALE);
    }
    // Through /proc: linking an O_PATH descriptor with AT_EMPTY_PATH needs a capability.
    let from = format!("/proc/self/fd/{}", old.as_raw_fd());
    match rustix::fs::linkat(rustix::fs::CWD, from.as_str(), parent, name, AtFlags::SYMLINK_FOLLOW) {
        Err(rustix::io::Errno::EXIST) => {
            let tmp = format!(".berth-link-{}", std::process::id());
            rustix::fs::linkat(rustix::fs::CWD, from.as_str(), parent, tmp.as_str(), AtFlags::SYMLINK_FOLLOW)?;
            rustix::fs::renameat(parent, tmp.as_str(), parent, name)
        }
        other => other,
    }
}

/// Opens `rel` below `dir`, never through a symlink or out of `dir`.
fn open_beneath(dir: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, Mode::empty(), resolve)
}
