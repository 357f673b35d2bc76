//! Owned snapshots: every snapshotter [`super::for_root`] and [`super::for_build`] hand out
//! records in this process's [`Lease`] what it makes and uses before it makes or uses it, so
//! an active snapshot left by a killed process is removed by the next berth command and a
//! committed one in use is never pruned (see [`crate::lease`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Mount, Result, Scaffold, SnapshotError, Snapshotter};
use crate::lease::{self, Claim, Lease};
use crate::unpack::Whiteouts;

/// A snapshotter whose every active snapshot is claimed by this process's lease.
pub(crate) struct Owned {
    inner: Box<dyn Snapshotter>,
    lease: Arc<Lease>,
}

fn lease_err(e: std::io::Error) -> SnapshotError {
    SnapshotError::Io { op: "claim", path: "the process's lease".into(), source: e }
}

impl Owned {
    /// Wraps `inner`, a snapshotter under `<root>/snapshots/`.
    pub(crate) fn new(root: &Path, inner: Box<dyn Snapshotter>) -> Result<Owned> {
        Ok(Owned { inner, lease: lease::for_root(root).map_err(lease_err)? })
    }

    fn claim(&self, c: Claim<'_>) -> Result<()> {
        self.lease.claim(c).map_err(lease_err)
    }

    /// Claims `key` (active) and `parent` (held, under the gc lock so a prune that runs now
    /// sees the claim first), then runs `make`.
    fn make<T>(&self, key: &str, parent: Option<&str>, make: impl FnOnce() -> Result<T>) -> Result<T> {
        let _op = self.lease.enter().map_err(lease_err)?;
        self.claim(Claim::Active(key))?;
        let _gc = lease::gc_lock(self.lease.root(), false).map_err(lease_err)?;
        if let Some(p) = parent {
            self.claim(Claim::Hold(p))?;
        }
        make()
    }
}

impl Snapshotter for Owned {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.make(key, parent, || self.inner.prepare(key, parent))
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.make(key, parent, || self.inner.view(key, parent))
    }

    /// Only containers' snapshots are mounted again, and those belong to their records.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.inner.mounts(key)
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        let _op = self.lease.enter().map_err(lease_err)?;
        let _gc = lease::gc_lock(self.lease.root(), false).map_err(lease_err)?;
        self.claim(Claim::Hold(name))?;
        self.inner.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<()> {
        let _op = self.lease.enter().map_err(lease_err)?;
        self.inner.remove(key)
    }

    fn diff(&self, key: &str, out: &mut dyn Write) -> Result<()> {
        self.inner.diff(key, out)
    }

    fn upper(&self, key: &str) -> Result<PathBuf> {
        self.inner.upper(key)
    }

    fn whiteouts(&self) -> Whiteouts {
        self.inner.whiteouts()
    }

    /// A committed snapshot found here is about to be used: claimed before the answer.
    fn exists(&self, name: &str) -> bool {
        let Ok(_gc) = lease::gc_lock(self.lease.root(), false) else { return false };
        self.inner.exists(name) && self.claim(Claim::Hold(name)).is_ok()
    }

    fn rediffs(&self) -> bool {
        self.inner.rediffs()
    }

    /// A committed snapshot whose layer is about to be written again: claimed, as for `exists`.
    fn rediff(&self, name: &str, source_date_epoch: Option<u64>, out: &mut dyn Write) -> Result<()> {
        {
            let _gc = lease::gc_lock(self.lease.root(), false).map_err(lease_err)?;
            if !self.inner.exists(name) {
                return Err(SnapshotError::NotFound(name.to_owned()));
            }
            self.claim(Claim::Hold(name))?;
        }
        self.inner.rediff(name, source_date_epoch, out)
    }

    /// A committed snapshot whose files are about to be linked: claimed, as for `exists`.
    fn linkable(&self, name: &str) -> Option<PathBuf> {
        let Ok(_gc) = lease::gc_lock(self.lease.root(), false) else { return None };
        let dir = self.inner.linkable(name)?;
        self.claim(Claim::Hold(name)).ok()?;
        Some(dir)
    }

    fn scaffold(&self, key: &str, targets: &[String]) -> Result<Scaffold> {
        self.inner.scaffold(key, targets)
    }

    fn remove_scaffold(&self, key: &str, scaffold: &Scaffold) -> Result<()> {
        self.inner.remove_scaffold(key, scaffold)
    }

    fn scratch(&self, parent: &str) -> Result<Option<Vec<Mount>>> {
        let _gc = lease::gc_lock(self.lease.root(), false).map_err(lease_err)?;
        self.claim(Claim::Hold(parent))?;
        self.inner.scratch(parent)
    }
}

/// The snapshotter directories under a root, overlay's and copy's.
pub(crate) fn snapshot_dirs(root: &Path) -> [PathBuf; 2] {
    let dir = root.join("snapshots");
    [dir.join("overlay"), dir.join("copy")]
}

/// Whether `key` is the snapshot of a container whose record still exists: such a snapshot
/// belongs to the record (`berth start`, `berth commit` and `berth rm` need it).
pub(crate) fn kept_by_record(root: &Path, key: &str) -> bool {
    crate::container::owns_snapshot(root, key)
}

/// Removes the active snapshot `key` of a dead (or stopping) owner and its scratch
/// directory `tmp/<key>`, never a committed snapshot; true when something was there.
pub(crate) fn remove_active(root: &Path, key: &str) -> bool {
    if kept_by_record(root, key) {
        return false;
    }
    let digest = oci::Digest::of(key.as_bytes());
    let mut removed = false;
    for dir in snapshot_dirs(root) {
        let snap = dir.join(digest.hex());
        let kind = std::fs::read_to_string(snap.join("kind")).ok();
        if snap.exists() && kind.as_deref() != Some("committed") {
            super::fuse::stop(&snap);
            removed |= std::fs::remove_dir_all(&snap).is_ok();
        }
        // A snapshot its owner was still creating.
        removed |= lease::remove_path(&dir.join(format!(".new-{}", digest.short())));
    }
    removed | lease::remove_path(&root.join("tmp").join(key))
}
