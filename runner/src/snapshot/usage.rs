//! What snapshots take on disk and which of them may go: the snapshot side of `berth prune`
//! and `berth system df`.
//!
//! A committed snapshot is *used* when an image of the store needs it (a chain of its
//! layers, or its scaffold), when a live process holds it (see [`crate::lease`]), or when a
//! used snapshot stands on it. An active snapshot is *live* while its owner (a live lease,
//! or a named container's record) is there; otherwise it is an orphan.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci::ImageStore;

use super::owner::snapshot_dirs;
use crate::lease;
use crate::rootfs::chain_ids;

/// How many snapshots of each kind there are and what they take on disk (bytes allocated).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Committed snapshots (layer chains and scaffolds), all of them.
    pub committed: Count,
    /// Those no image uses and no live process holds: what a prune removes.
    pub unused: Count,
    /// Active snapshots of live builds and containers (named containers' included).
    pub active: Count,
    /// Active snapshots and scratch directories whose owner is gone.
    pub orphaned: Count,
}

/// A number of snapshots and their size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// How many.
    pub count: usize,
    /// Bytes on disk.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What one snapshot directory is, for a prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Used,
    Unused,
    Active,
    Orphan,
}

/// The names of the committed snapshots the images of `store` use: each image's layer chains
/// (for this host's platform) and its scaffold.
pub fn image_snapshots(store: &ImageStore) -> oci::Result<HashSet<String>> {
    let mut names = HashSet::new();
    for rec in store.list()? {
        // An image whose blobs are gone (a partial pull) has no snapshots to keep.
        let Ok(image) = store.image(&rec.target) else { continue };
        let chains = chain_ids(image.config.rootfs().diff_ids());
        names.insert(format!("scaffold-v1-{}", chains.last().map_or("empty", String::as_str)));
        names.extend(chains);
    }
    Ok(names)
}

/// Counts the snapshots of `root`, as `berth system df` shows them.
pub fn usage(root: &Path, store: &ImageStore) -> io::Result<Usage> {
    let _gc = lease::gc_lock(root, false)?;
    let mut usage = Usage::default();
    for (path, class) in classify(root, store)? {
        let bytes = disk_usage(&path);
        match class {
            Class::Used => usage.committed.add(bytes),
            Class::Unused => {
                usage.committed.add(bytes);
                usage.unused.add(bytes);
            }
            Class::Active => usage.active.add(bytes),
            Class::Orphan => usage.orphaned.add(bytes),
        }
    }
    Ok(usage)
}

/// Removes the committed snapshots no image uses and no live process holds, and every active
/// snapshot and scratch directory whose owner is gone (left by berth versions before leases,
/// or by a process killed before it could claim them). Returns what was removed.
pub fn prune(root: &Path, store: &ImageStore) -> io::Result<Count> {
    prune_only(root, store, None)
}

/// As [`prune`], limited to the committed snapshots named in `only` (orphans are removed
/// all the same): for `berth builder prune`, which frees the snapshots of the records it drops.
pub fn prune_only(root: &Path, store: &ImageStore, only: Option<&HashSet<String>>) -> io::Result<Count> {
    lease::sweep(root)?;
    let _gc = lease::gc_lock(root, true)?;
    let only: Option<HashSet<String>> =
        only.map(|o| o.iter().map(|n| oci::Digest::of(n.as_bytes()).hex().to_owned()).collect());
    let mut removed = Count::default();
    for (path, class) in classify(root, store)? {
        let chosen = match class {
            Class::Orphan => true,
            Class::Unused => {
                only.as_ref().is_none_or(|o| path.file_name().is_some_and(|f| o.contains(&*f.to_string_lossy())))
            }
            Class::Used | Class::Active => false,
        };
        if chosen {
            let bytes = disk_usage(&path);
            if lease::remove_path(&path) {
                removed.add(bytes);
            }
        }
    }
    Ok(removed)
}

/// Every snapshot directory of `root` and scratch directory of `root/tmp`, classified.
/// Call under the gc lock.
fn classify(root: &Path, store: &ImageStore) -> io::Result<Vec<(PathBuf, Class)>> {
    let claims = lease::live(root)?;
    let hex = |s: &str| oci::Digest::of(s.as_bytes()).hex().to_owned();
    let mut kept: HashSet<String> =
        image_snapshots(store).map_err(io::Error::other)?.iter().chain(&claims.held).map(|n| hex(n)).collect();
    let live_active: HashSet<String> = claims.active.iter().map(|k| hex(k)).collect();
    let live_new: HashSet<String> = claims.active.iter().map(|k| format!(".new-{}", &hex(k)[..12])).collect();
    let mut out = Vec::new();
    for dir in snapshot_dirs(root) {
        let mut found: Vec<(PathBuf, String, Option<String>)> = Vec::new();
        let mut parents: HashMap<String, String> = HashMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with(".new-") {
                if !live_new.contains(&name) {
                    out.push((path, Class::Orphan));
                }
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            let kind = std::fs::read_to_string(path.join("kind")).ok();
            if let Some(p) = std::fs::read_to_string(path.join("parent")).ok().filter(|p| !p.is_empty()) {
                parents.insert(name.clone(), hex(&p));
            }
            found.push((path, name, kind));
        }
        // Live active snapshots keep their parents, as used ones do.
        let mut live: Vec<String> = Vec::new();
        for (_, name, kind) in &found {
            if kind.as_deref() != Some("committed") && live_active.contains(name) {
                live.push(name.clone());
            }
        }
        live.extend(container_keys(root).iter().map(|k| hex(k)));
        let mut stack: Vec<String> = kept.iter().cloned().chain(live.iter().cloned()).collect();
        while let Some(n) = stack.pop() {
            if let Some(p) = parents.get(&n) {
                if kept.insert(p.clone()) {
                    stack.push(p.clone());
                }
            }
        }
        let live: HashSet<String> = live.into_iter().collect();
        for (path, name, kind) in found {
            let class = match (kind.as_deref() == Some("committed"), kept.contains(&name), live.contains(&name)) {
                (true, true, _) => Class::Used,
                (true, false, _) => Class::Unused,
                (false, _, true) => Class::Active,
                (false, _, false) => Class::Orphan,
            };
            out.push((path, class));
        }
    }
    out.extend(orphaned_scratch(root, &claims));
    Ok(out)
}

/// Keys of the snapshots containers' records own.
fn container_keys(root: &Path) -> Vec<String> {
    crate::container::snapshot_keys(root)
}

/// Scratch directories in `tmp/` of builds and runs (`build-*`, `scaffold-*`, `extract-*`,
/// `downloads-*`) that no live process claims.
fn orphaned_scratch(root: &Path, claims: &lease::Claims) -> Vec<(PathBuf, Class)> {
    let Ok(entries) = std::fs::read_dir(root.join("tmp")) else { return vec![] };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = ["build-", "scaffold-", "extract-", "downloads-"].iter().any(|p| name.starts_with(p));
            ours && !claims.active.contains(&name) && !claims.paths.contains(&Path::new("tmp").join(&name))
        })
        .map(|e| (e.path(), Class::Orphan))
        .collect()
}

/// Bytes the snapshot `key` (active or committed) takes, 0 when there is none.
pub fn snapshot_bytes(root: &Path, key: &str) -> u64 {
    let hex = oci::Digest::of(key.as_bytes()).hex().to_owned();
    snapshot_dirs(root).iter().map(|d| d.join(&hex)).filter(|d| d.exists()).map(|d| disk_usage(&d)).sum()
}

/// Bytes allocated to a directory tree (each inode once, as `du` counts).
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::for_root;

    fn store(root: &Path) -> ImageStore {
        ImageStore::open(root).unwrap()
    }

    #[test]
    fn prune_keeps_what_a_live_process_holds_and_removes_what_nothing_uses() {
        let root = tempfile::tempdir().unwrap();
        let s = for_root(root.path()).unwrap();
        s.prepare("a", None).unwrap();
        std::fs::write(s.upper("a").unwrap().join("f"), vec![7u8; 64 * 1024]).unwrap();
        s.commit("chain-a", "a").unwrap();
        s.prepare("b", Some("chain-a")).unwrap();
        // This process holds chain-a (it committed it) and owns b.
        assert_eq!(prune(root.path(), &store(root.path())).unwrap().count, 0);
        let u = usage(root.path(), &store(root.path())).unwrap();
        assert_eq!((u.committed.count, u.unused.count, u.active.count), (1, 0, 1));
        assert!(u.committed.bytes >= 64 * 1024, "{u:?}");
    }

    #[test]
    fn orphans_and_unheld_chains_are_pruned() {
        let root = tempfile::tempdir().unwrap();
        // What another, dead, process left: a committed chain and an active snapshot.
        let dir = root.path().join("snapshots/copy");
        for (key, kind) in [("dead-chain", "committed"), ("dead-active", "active")] {
            let d = dir.join(oci::Digest::of(key.as_bytes()).hex());
            std::fs::create_dir_all(d.join("fs")).unwrap();
            std::fs::write(d.join("kind"), kind).unwrap();
            std::fs::write(d.join("parent"), "").unwrap();
        }
        std::fs::create_dir_all(root.path().join("tmp/build-run-1-2-3/rootfs")).unwrap();
        let removed = prune(root.path(), &store(root.path())).unwrap();
        assert_eq!(removed.count, 3);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(!root.path().join("tmp/build-run-1-2-3").exists());
    }
}
