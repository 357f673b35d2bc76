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
}

impl OverlaySnapshotter {
    /// Snapshots under `root`.
    pub fn new(root: &Path) -> Result<Self> {
        Ok(OverlaySnapshotter { dirs: Dirs::new(root)?, volatile: false })
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
        let lower = self.dirs.chain(parent);
        if lower.is_empty() {
            return Ok(vec![Mount::Bind { source: dir.join("fs"), read_only: false }]);
        }
        Ok(vec![Mount::Overlay { lower, upper: Some((dir.join("fs"), dir.join("work"))), volatile: self.volatile }])
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let dir = self.dirs.require(key, "active")?;
        let lower = self.dirs.chain(self.dirs.parent(key).as_deref());
        if lower.is_empty() {
            return Ok(vec![Mount::Bind { source: dir.join("fs"), read_only: false }]);
        }
        Ok(vec![Mount::Overlay { lower, upper: Some((dir.join("fs"), dir.join("work"))), volatile: self.volatile }])
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let dir = self.dirs.create(key, parent, "view", false)?;
        let mut lower = self.dirs.chain(parent);
        Ok(match lower.len() {
            0 => vec![Mount::Bind { source: dir.join("fs"), read_only: true }],
            1 => vec![Mount::Bind { source: lower.remove(0), read_only: true }],
            _ => vec![Mount::Overlay { lower, upper: None, volatile: false }],
        })
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
        let opts = oci::layer::TarOptions {
            overlay_upper: Some(crate::userns::overlay_xattrs()),
            ..oci::layer::TarOptions::from_env()
        };
        oci::layer::tar_directory(&fs, out, &opts).map_err(|e| SnapshotError::Diff(key.to_owned(), Box::new(e)))
    }

    fn upper(&self, key: &str) -> Result<PathBuf> {
        Ok(self.dirs.require(key, "active")?.join("fs"))
    }

    fn whiteouts(&self) -> Whiteouts {
        Whiteouts::Overlay
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
        scaffold::remove_targets(&upper, scaffold)?;
        remove_copied_up_parents(&upper, &self.dirs.chain(self.dirs.parent(key).as_deref()), scaffold)
    }

    fn scratch(&self, parent: &str) -> Result<Option<Vec<Mount>>> {
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
