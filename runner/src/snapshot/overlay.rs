//! The overlay snapshotter: each snapshot holds only its own changes; overlayfs stacks them.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, OFlags};

use super::scaffold::{self, open_beneath, open_dir, split, stat_beneath, Scaffold};
use super::{Dirs, Mount, Result, SnapshotError, Snapshotter};
use crate::unpack::Whiteouts;

/// Snapshots as overlayfs layers under one directory (needs root to mount).
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    dirs: Dirs,
    volatile: bool,
    /// Mounted by fuse-overlayfs (see [`OverlaySnapshotter::fuse`]).
    fuse: bool,
}

impl OverlaySnapshotter {
    /// Snapshots under `root`.
    pub fn new(root: &Path) -> Result<Self> {
        Ok(OverlaySnapshotter { dirs: Dirs::new(root)?, volatile: false, fuse: false })
    }

    /// The same snapshots, mounted by fuse-overlayfs instead of the kernel: for a user
    /// namespace on a kernel before 5.11, whose overlayfs it cannot mount. The directories
    /// are the same (fuse-overlayfs reads the kernel's whiteouts and `user.overlay.opaque`),
    /// so a store moves between the two. Each active snapshot is mounted once, at its
    /// `merged` directory, in the calling thread's mount namespace, and handed out as a bind
    /// mount of that directory.
    pub fn fuse(self) -> Self {
        OverlaySnapshotter { fuse: true, ..self }
    }

    /// How to mount a snapshot of `dir` on `lower` (top first) with `upper`: overlayfs for
    /// the sandbox to mount, or, with fuse-overlayfs, mounted now at `dir/merged`.
    fn stacked(&self, dir: &Path, lower: Vec<PathBuf>, upper: Option<(PathBuf, PathBuf)>) -> Result<Vec<Mount>> {
        if !self.fuse {
            return Ok(vec![Mount::Overlay { lower, upper, volatile: self.volatile }]);
        }
        let merged = dir.join("merged");
        if !super::fuse::is_mounted(&merged) {
            let upper = upper.as_ref().map(|(u, w)| (u.as_path(), w.as_path()));
            super::fuse::mount(&lower, upper, &merged)?;
        }
        Ok(vec![Mount::Bind { source: merged, read_only: upper.is_none() }])
    }

    /// With fuse-overlayfs: see [`super::fuse::drop_needless_opaque_markers`].
    fn drop_fuse_markers(&self, key: &str) -> Result<()> {
        if !self.fuse {
            return Ok(());
        }
        let lowers = self.dirs.chain(self.dirs.parent(key).as_deref());
        super::fuse::drop_needless_opaque_markers(&self.upper(key)?, &lowers)
    }

    /// The layer an upper directory `fs` (of snapshot `key`) makes: its entries, and its
    /// whiteouts and opaque directories as layer entries.
    fn tar_upper(&self, fs: &Path, key: &str, source_date_epoch: Option<u64>, out: &mut dyn Write) -> Result<()> {
        let markers =
            if self.fuse { oci::layer::OverlayXattrs::FuseOverlayfs } else { crate::userns::overlay_xattrs() };
        let opts = oci::layer::TarOptions { overlay_upper: Some(markers), source_date_epoch };
        oci::layer::tar_directory(fs, out, &opts).map_err(|e| SnapshotError::Diff(key.to_owned(), Box::new(e)))
    }

    /// Active snapshots mounted `volatile` (fsyncs inside are no-ops), made durable by one
    /// syncfs at commit: for build steps, where a package manager's thousands of fsyncs
    /// otherwise dominate (see [`super::for_build`]).
    pub fn volatile(self) -> Self {
        OverlaySnapshotter { volatile: true, ..self }
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let dir = self.dirs.create(key, parent, "active", true)?;
        self.mounts(key).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let dir = self.dirs.require(key, "active")?;
        let lower = self.dirs.chain(self.dirs.parent(key).as_deref());
        if lower.is_empty() {
            return Ok(vec![Mount::Bind { source: dir.join("fs"), read_only: false }]);
        }
        self.stacked(&dir, lower, Some((dir.join("fs"), dir.join("work"))))
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let dir = self.dirs.create(key, parent, "view", false)?;
        let mut lower = self.dirs.chain(parent);
        match lower.len() {
            0 => Ok(vec![Mount::Bind { source: dir.join("fs"), read_only: true }]),
            1 => Ok(vec![Mount::Bind { source: lower.remove(0), read_only: true }]),
            _ => self.stacked(&dir, lower, None).inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&dir);
            }),
        }
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.dirs.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.dirs.remove(key)
    }

    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<()> {
        // The upper directory is the change set: no walk of the merged tree.
        let fs = self.upper(key)?;
        self.drop_fuse_markers(key)?;
        self.tar_upper(&fs, key, oci::layer::TarOptions::from_env().source_date_epoch, out)
    }

    fn rediffs(&self) -> bool {
        true
    }

    fn rediff(&self, name: &str, source_date_epoch: Option<u64>, out: &mut dyn Write) -> Result<()> {
        // Committed, the upper directory is the snapshot's own files, as the diff saw them.
        let fs = self.dirs.require(name, "committed")?.join("fs");
        self.tar_upper(&fs, name, source_date_epoch, out)
    }

    fn upper(&self, key: &str) -> Result<PathBuf> {
        Ok(self.dirs.require(key, "active")?.join("fs"))
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Overlay
    }

    fn lowers(&self, key: &str) -> Vec<PathBuf> {
        self.dirs.chain(self.dirs.parent(key).as_deref())
    }

    fn exists(&self, name: &str) -> bool {
        self.dirs.kind(name).as_deref() == Some("committed")
    }

    fn scaffold(&self, key: &str, targets: &[String]) -> Result<Scaffold> {
        let mut layers = vec![self.upper(key)?];
        layers.extend(self.dirs.chain(self.dirs.parent(key).as_deref()));
        scaffold::missing(&layers, targets)
    }

    fn remove_scaffold(&self, key: &str, scaffold: &Scaffold) -> Result<()> {
        let upper = self.upper(key)?;
        self.drop_fuse_markers(key)?;
        scaffold::remove_targets(&upper, scaffold)?;
        remove_copied_up_parents(&upper, &self.dirs.chain(self.dirs.parent(key).as_deref()), scaffold)
    }

    fn linkable(&self, name: &str) -> Option<PathBuf> {
        // fuse-overlayfs keeps an active snapshot mounted until commit: its upper directory
        // must not change under it.
        let dir = self.dirs.require(name, "committed").ok().filter(|_| !self.fuse)?;
        Some(dir.join("fs"))
    }

    fn scratch(&self, parent: &str) -> Result<Option<Vec<Mount>>> {
        if self.fuse {
            // A scratch rootfs is mounted inside the sandbox; fuse-overlayfs is mounted here.
            return Ok(None);
        }
        if !self.exists(parent) {
            return Err(SnapshotError::NotFound(parent.to_owned()));
        }
        Ok(Some(vec![Mount::Scratch { lower: self.dirs.chain(Some(parent)) }]))
    }
}

/// After the scaffolding is gone, its parent directories may be left in the upper directory
/// as overlayfs copied them up: empty, not opaque, with the lower directory's mode and owner.
/// Those are no change, and are removed so that they make no layer entry.
fn remove_copied_up_parents(upper: &Path, lowers: &[PathBuf], scaffold: &Scaffold) -> Result<()> {
    let root = open_dir(upper)?;
    let lowers: Vec<OwnedFd> = lowers.iter().map(|l| open_dir(l)).collect::<Result<_>>()?;
    let parents = scaffold::deepest_first(scaffold.targets().iter().map(|t| split(t).0));
    for rel in parents {
        if copied_up_unchanged(&root, &lowers, rel) {
            let (parent, name) = split(rel);
            if let Ok(dir) = open_beneath(&root, parent, OFlags::PATH | OFlags::DIRECTORY) {
                let _kept = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
            }
        }
    }
    Ok(())
}

/// True when the upper directory's `rel` is an empty, non-opaque directory with the mode and
/// owner of the topmost lower directory at `rel`: a copy-up with no change of its own.
fn copied_up_unchanged(upper: &OwnedFd, lowers: &[OwnedFd], rel: &str) -> bool {
    let Ok(dir) = open_beneath(upper, rel, OFlags::RDONLY | OFlags::DIRECTORY) else { return false };
    let Ok(st) = rustix::fs::fstat(&dir) else { return false };
    let opaque = rustix::fs::fgetxattr_query(&dir, crate::userns::overlay_xattrs().opaque()).is_ok();
    let empty = rustix::fs::Dir::read_from(&dir)
        .is_ok_and(|d| d.flatten().all(|e| matches!(e.file_name().to_bytes(), b"." | b"..")));
    let lower = lowers.iter().find_map(|l| stat_beneath(l, rel).ok());
    let same = lower.is_some_and(|l| {
        FileType::from_raw_mode(l.st_mode) == FileType::Directory
            && l.st_mode == st.st_mode
            && l.st_uid == st.st_uid
            && l.st_gid == st.st_gid
    });
    !opaque && empty && same
}
