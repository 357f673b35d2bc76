//! Cache mounts that travel (`--cache-to ...,mounts=true`): the directory of a
//! `RUN --mount=type=cache` packed into one layer per mount id for an export, and an
//! imported mount layer unpacked into an empty directory before the first RUN that mounts it.
//!
//! Packing is deterministic: entries in byte order of their paths, each with its own mode,
//! numeric owner and mtime, and nothing of the time of the export, so an unchanged directory
//! gives the same tar (the same diffID, then the same compressed twin) and a backend finds
//! the blob present instead of uploading it again. A restored directory gets its entries'
//! mtimes back (directories last), so packing it unchanged gives the imported layer again.
//! Symlinks are stored as written and never followed; sockets, fifos and devices are skipped.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci::content::ContentStore;
use oci::layer::{TarOptions, TarWriter};
use oci::ImageStore;
use rustix::fs::{OFlags, Timespec, Timestamps};

use super::export::MountLayer;
use super::format::Blob;
use super::{Imported, LazyBlobs};
use crate::error::{Error, Result};
use crate::graph::Layer;

/// The directory of cache mount `id` under `$BERTH_ROOT`: the one identity RUN and export share.
pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join("cache-mounts").join(oci::Digest::of(id.as_bytes()).hex())
}

/// The lock file of cache mount `id` (`sharing=locked|private` steps hold it while they run).
pub fn lock_path(root: &Path, id: &str) -> PathBuf {
    root.join("cache-mounts").join(format!("{}.lock", oci::Digest::of(id.as_bytes()).hex()))
}

/// The layer an export carries for mount `id`: its directory on this machine packed, or,
/// when this machine has no such directory (every step that mounts it was a cache hit),
/// the imported layer carried on. None when there is nothing to carry.
pub fn export_layer(store: &ImageStore, root: &Path, id: &str, imported: &Imported<'_>) -> Result<Option<MountLayer>> {
    let path = dir(root, id);
    if !path.exists() {
        let carried = imported.mount(id).map(|b| Layer {
            digest: b.digest.clone(),
            diff_id: b.diff_id.clone(),
            size: b.size,
            media_type: b.media_type.clone(),
        });
        return Ok(carried.map(|layer| MountLayer { id: id.to_owned(), layer }));
    }
    // A step of another build holding the mount (`sharing=locked|private`) finishes first.
    let lock_file = lock_path(root, id);
    let lock = File::create(&lock_file).map_err(Error::io(format!("create {}", lock_file.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(format!("lock {}", lock_file.display()))(e.into()))?;
    Ok(pack(store, &path)?.map(|layer| MountLayer { id: id.to_owned(), layer }))
}

/// Packs the tree under `dir` (not `dir` itself) into a plain tar layer in the content
/// store; None when it holds nothing that can be packed.
pub fn pack(store: &ImageStore, dir: &Path) -> Result<Option<Layer>> {
    crate::ops::write_plain_layer(store, &mut |w| {
        let opts = TarOptions::default();
        let mut tar = TarWriter::new(w, &opts);
        walk(&mut tar, dir, Path::new(""))?;
        tar.finish().map(drop).map_err(Error::image(format!("pack {}", dir.display())))
    })
}

/// Adds what is under `dir` as `rel/...`, sorted: directories (descended into, never
/// through a symlink), regular files, symlinks; nothing else.
fn walk<W: std::io::Write>(tar: &mut TarWriter<'_, W>, dir: &Path, rel: &Path) -> Result<()> {
    let read = |e: std::io::Error| Error::io(format!("read directory {}", dir.display()))(e);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    names.sort();
    for name in names {
        let (path, rel) = (dir.join(&name), rel.join(&name));
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io(format!("stat {}", path.display())))?;
        let ft = meta.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            continue;
        }
        tar.add_path(&path, &rel).map_err(Error::image(format!("pack {}", path.display())))?;
        if ft.is_dir() {
            walk(tar, &path, &rel)?;
        }
    }
    Ok(())
}

/// Which mount ids a build has restored (or tried to): each at most once per build, the
/// second step that mounts an id waiting while the first restores it.
#[derive(Default)]
pub struct Restores {
    /// By id: whether a step of this build tried it.
    ids: crate::cache::KeyedLocks<String, bool>,
}

impl Restores {
    /// Fills `dir` from `blob` (mount `id`'s imported layer) when `dir` is missing or empty
    /// and this build has not tried `id` yet; true when it did. A restore that fails leaves
    /// the directory empty.
    pub fn restore(
        &self,
        lazy: &dyn LazyBlobs,
        store: &ImageStore,
        id: &str,
        blob: Option<&Blob>,
        dir: &Path,
    ) -> Result<bool> {
        let Some(blob) = blob else { return Ok(false) };
        self.ids.with(id.to_owned(), |tried| match std::mem::replace(tried, true) {
            true => Ok(false),
            false => fill(lazy, store, blob, dir),
        })
    }
}

/// Fills `dir` from `blob` when it is missing or empty; true when it did.
fn fill(lazy: &dyn LazyBlobs, store: &ImageStore, blob: &Blob, dir: &Path) -> Result<bool> {
    if !is_empty(dir)? {
        return Ok(false);
    }
    lazy.ensure(store, &blob.digest)?;
    std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    match unpack(store, blob, dir) {
        Ok(()) => Ok(true),
        Err(e) => {
            clear(dir);
            Err(e)
        }
    }
}

/// True when `dir` is missing or holds no entry.
fn is_empty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(format!("read directory {}", dir.display()))(e)),
    }
}

/// Removes everything under `dir` (never through a symlink), keeping `dir`.
fn clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

/// Unpacks the imported layer `blob` into `dir` through the runner's safe unpacker (every
/// path resolved inside `dir`, no device nodes), checks its diffID, then sets the
/// directories' mtimes the unpack disturbed by filling them.
fn unpack(store: &ImageStore, blob: &Blob, dir: &Path) -> Result<()> {
    let what = format!("restore cache mount layer {}", blob.digest);
    let open = || {
        let raw = store.content().reader(&blob.digest).map_err(Error::image(what.clone()))?;
        oci::layer::LayerReader::new(raw, blob.uncompressed_size).map_err(Error::image(what.clone()))
    };
    let mut reader = open()?;
    let opts = runner::unpack::UnpackOptions { allow_devices: false, ..Default::default() };
    runner::unpack::unpack(&mut reader, dir, &opts).map_err(Error::runner(what.clone()))?;
    let (diff_id, _) = reader.finish().map_err(Error::image(what.clone()))?;
    if diff_id != blob.diff_id {
        return Err(Error::Invalid(format!("{what}: its tar is {diff_id}, the cache says {}", blob.diff_id)));
    }
    let root = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, rustix::fs::Mode::empty())
        .map_err(|e| Error::io(format!("open {}", dir.display()))(e.into()))?;
    let mut archive = tar::Archive::new(open()?);
    for entry in archive.entries().map_err(Error::io(what.clone()))? {
        let entry = entry.map_err(Error::io(what.clone()))?;
        if entry.header().entry_type() == tar::EntryType::Directory {
            let (Ok(path), Ok(mtime)) = (entry.path(), entry.header().mtime()) else { continue };
            set_mtime(&root, &path, mtime);
        }
    }
    Ok(())
}

/// Sets the mtime of the directory `rel`, resolved inside `root` (best effort: times only).
fn set_mtime(root: &OwnedFd, rel: &Path, secs: u64) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(fd) = runner::sys::open_in_root(root, rel, flags) else { return };
    let t = Timespec { tv_sec: i64::try_from(secs).unwrap_or(0), tv_nsec: 0 };
    let _ = rustix::fs::futimens(&fd, &Timestamps { last_access: t, last_modification: t });
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, MetadataExt};

    use super::*;
    use crate::cache::remote::NoLazy;

    fn blob_of(l: &Layer) -> Blob {
        Blob {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
            diff_id: l.diff_id.clone(),
            uncompressed_size: l.size,
        }
    }

    fn names(store: &ImageStore, l: &Layer) -> Vec<String> {
        let raw = store.content().reader(&l.digest).unwrap();
        let mut a = tar::Archive::new(raw);
        a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn an_unchanged_directory_packs_the_same_and_restores_to_the_same_layer() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub/deep")).unwrap();
        std::fs::write(src.join("b"), "bee").unwrap();
        std::fs::write(src.join("sub/deep/a"), "a").unwrap();
        std::fs::hard_link(src.join("b"), src.join("sub/hard")).unwrap();
        symlink("/etc/passwd", src.join("out")).unwrap();
        std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        let first = pack(&store, &src).unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = pack(&store, &src).unwrap().unwrap();
        assert_eq!(first, again, "an unchanged directory gives the same layer");
        let listed = names(&store, &first);
        assert_eq!(listed, ["b", "out", "sub/", "sub/deep/", "sub/deep/a", "sub/hard"], "sorted, socket skipped");

        let restored = t.path().join("restored");
        let r = Restores::default();
        assert!(r.restore(&NoLazy, &store, "c", Some(&blob_of(&first)), &restored).unwrap());
        assert_eq!(std::fs::read_to_string(restored.join("sub/deep/a")).unwrap(), "a");
        assert_eq!(std::fs::read_link(restored.join("out")).unwrap(), Path::new("/etc/passwd"));
        let (b, hard) = (restored.join("b").metadata().unwrap(), restored.join("sub/hard").metadata().unwrap());
        assert_eq!(b.ino(), hard.ino(), "hardlinks stay links");
        let repacked = pack(&store, &restored).unwrap().unwrap();
        assert_eq!(repacked.diff_id, first.diff_id, "a restored, unchanged directory packs to the imported layer");
    }

    #[test]
    fn restore_is_once_per_id_and_never_over_a_directory_that_has_files() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "from the cache").unwrap();
        let blob = blob_of(&pack(&store, &src).unwrap().unwrap());
        assert!(pack(&store, &t.path().join("src/missing")).is_err());
        std::fs::create_dir_all(t.path().join("empty")).unwrap();
        assert_eq!(pack(&store, &t.path().join("empty")).unwrap(), None, "an empty cache is no layer");

        let own = t.path().join("own");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("mine"), "x").unwrap();
        let r = Restores::default();
        assert!(!r.restore(&NoLazy, &store, "own", Some(&blob), &own).unwrap(), "a runner's own cache is kept");
        assert!(!own.join("f").exists());

        let dir = t.path().join("d");
        assert!(r.restore(&NoLazy, &store, "d", Some(&blob), &dir).unwrap());
        std::fs::remove_file(dir.join("f")).unwrap();
        assert!(!r.restore(&NoLazy, &store, "d", Some(&blob), &dir).unwrap(), "once per id per build");
        assert!(!dir.join("f").exists());
        assert!(!r.restore(&NoLazy, &store, "none", None, &t.path().join("n")).unwrap());
    }

    #[test]
    fn a_layer_that_is_not_what_the_cache_says_leaves_the_directory_empty() {
        let t = tempfile::tempdir().unwrap();
        let store = ImageStore::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "data").unwrap();
        let mut blob = blob_of(&pack(&store, &src).unwrap().unwrap());
        blob.diff_id = oci::Digest::of(b"something else");
        let dir = t.path().join("d");
        assert!(Restores::default().restore(&NoLazy, &store, "d", Some(&blob), &dir).is_err());
        assert!(is_empty(&dir).unwrap());
    }
}
