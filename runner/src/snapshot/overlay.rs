//! The overlay snapshotter: each snapshot holds only its own changes; overlayfs stacks them.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Dirs, Mount, Result, SnapshotError, Snapshotter};
use crate::unpack::Whiteouts;

/// Snapshots as overlayfs layers under one directory (needs root to mount).
#[derive(Debug, Clone)]
pub struct OverlaySnapshotter {
    dirs: Dirs,
}

impl OverlaySnapshotter {
    /// Snapshots under `root`.
    pub fn new(root: &Path) -> Result<Self> {
        Ok(OverlaySnapshotter { dirs: Dirs::new(root)? })
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let dir = self.dirs.create(key, parent, "active", true)?;
        let lower = self.dirs.chain(parent);
        if lower.is_empty() {
            return Ok(vec![Mount::Bind { source: dir.join("fs"), read_only: false }]);
        }
        Ok(vec![Mount::Overlay { lower, upper: Some((dir.join("fs"), dir.join("work"))) }])
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let dir = self.dirs.create(key, parent, "view", false)?;
        let mut lower = self.dirs.chain(parent);
        Ok(match lower.len() {
            0 => vec![Mount::Bind { source: dir.join("fs"), read_only: true }],
            1 => vec![Mount::Bind { source: lower.remove(0), read_only: true }],
            _ => vec![Mount::Overlay { lower, upper: None }],
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
        let opts = oci::layer::TarOptions { overlay_upper: true, ..oci::layer::TarOptions::from_env() };
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

    fn scratch(&self, parent: &str) -> Result<Option<Vec<Mount>>> {
        if !self.exists(parent) {
            return Err(SnapshotError::NotFound(parent.to_owned()));
        }
        Ok(Some(vec![Mount::Scratch { lower: self.dirs.chain(Some(parent)) }]))
    }
}
