//! Leases: what a running berth process owns in a root, so that whatever a killed process
//! leaves behind is found and removed by the next berth command.
//!
//! Each process that makes snapshots holds one lease per root: the file
//! `<root>/leases/<pid>-<nanos>`, opened and `flock`ed (exclusive) for the life of the
//! process. The kernel drops the lock when the process dies, however it dies (SIGKILL too),
//! so "its owner is gone" is exactly "its lock can be taken". Before the process makes
//! something it may leave behind, it appends one line naming it to its lease (a *claim*):
//!
//! ```text
//! active build-run-4242-7-0     an active snapshot (and its scratch directory tmp/<key>)
//! hold sha256:4f1c...           a committed snapshot this process uses (protects it from prune)
//! path tmp/downloads-4242       a temporary file or directory under the root
//! volume 3f0a...                an anonymous volume of a container without a record
//! ```
//!
//! [`sweep`] (every berth command runs it) takes the lock of each lease it finds; one it
//! gets belongs to a dead process: everything it claims is removed, then the lease file.
//! A snapshot `container-<name>` that a named container's record (`containers/<name>.json`)
//! still names belongs to that record, not to the process, and is kept.
//!
//! [`gc_lock`] orders claims against garbage collection: a claim of a committed snapshot is
//! made, and its existence checked, under the shared lock; `berth prune` reads the claims
//! and removes snapshots under the exclusive lock, so it never takes one a live process holds.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use rustix::fs::{flock, FlockOperation};

/// What a process claims in its lease.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// An active snapshot by key; its scratch directory is `tmp/<key>`.
    Active(&'a str),
    /// A committed snapshot by name, in use by this process.
    Hold(&'a str),
    /// A temporary file or directory, relative to the root.
    Path(&'a Path),
    /// An anonymous volume of a container that has no record (an unnamed foreground run),
    /// removed with it: by the run itself, or by the sweep when the run was killed.
    Volume(&'a str),
}

/// This process's lease on one root: held until the process exits.
#[derive(Debug)]
pub struct Lease {
    root: PathBuf,
    path: PathBuf,
    file: Mutex<File>,
    claimed: Mutex<HashSet<String>>,
    /// Snapshot operations run under the read side; [`cancel`] takes the write side for good.
    gate: RwLock<()>,
    cancelled: AtomicBool,
}

static LEASES: Mutex<Vec<Arc<Lease>>> = Mutex::new(Vec::new());

/// This process's lease on `root`, taken on first use.
pub fn for_root(root: &Path) -> io::Result<Arc<Lease>> {
    let mut leases = LEASES.lock().map_err(|_| io::Error::other("lease registry poisoned"))?;
    if let Some(l) = leases.iter().find(|l| l.root == root) {
        return Ok(l.clone());
    }
    let lease = Arc::new(Lease::take(root)?);
    leases.push(lease.clone());
    Ok(lease)
}

impl Lease {
    /// Creates and locks a new lease file. It is locked under a temporary name and then
    /// renamed, so a sweeper never sees an unlocked lease of a live process.
    fn take(root: &Path) -> io::Result<Lease> {
        let dir = root.join("leases");
        fs::create_dir_all(&dir)?;
        loop {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let id = format!("{}-{nanos}", std::process::id());
            let tmp = dir.join(format!(".new-{id}"));
            let file = OpenOptions::new().create_new(true).read(true).append(true).open(&tmp)?;
            flock(&file, FlockOperation::LockExclusive)?;
            match fs::rename(&tmp, dir.join(&id)) {
                Ok(()) => {
                    return Ok(Lease {
                        root: root.to_owned(),
                        path: dir.join(&id),
                        file: Mutex::new(file),
                        claimed: Mutex::new(HashSet::new()),
                        gate: RwLock::new(()),
                        cancelled: AtomicBool::new(false),
                    })
                }
                // A sweeper took the new file for a dead one between create and lock: again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The root this lease is on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records a claim (once; repeats cost nothing).
    pub fn claim(&self, claim: Claim<'_>) -> io::Result<()> {
        let line = match claim {
            Claim::Active(key) => format!("active {key}\n"),
            Claim::Hold(name) => format!("hold {name}\n"),
            Claim::Path(p) => format!("path {}\n", p.display()),
            Claim::Volume(name) => format!("volume {name}\n"),
        };
        let mut claimed = self.claimed.lock().map_err(|_| io::Error::other("lease poisoned"))?;
        if claimed.contains(&line) {
            return Ok(());
        }
        let mut file = self.file.lock().map_err(|_| io::Error::other("lease poisoned"))?;
        // One write of one line to an O_APPEND file: never interleaved with another.
        file.write_all(line.as_bytes())?;
        claimed.insert(line);
        Ok(())
    }

    /// Enters a snapshot operation: fails once the process is being cancelled, so that
    /// nothing new is made after [`cancel`] has cleaned up.
    pub fn enter(&self) -> io::Result<RwLockReadGuard<'_, ()>> {
        let guard = self.gate.read().map_err(|_| io::Error::other("lease poisoned"))?;
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "berth is being stopped"));
        }
        Ok(guard)
    }
}

/// For SIGTERM and SIGINT handlers: stops new snapshot operations of this process, waits for
/// those running, and removes everything this process claims (its active snapshots, their
/// scratch directories, its temporary paths). The process must exit afterwards: snapshot
/// operations stay blocked. Returns how many claims were removed.
pub fn cancel() -> usize {
    let leases: Vec<Arc<Lease>> = LEASES.lock().map(|l| l.clone()).unwrap_or_default();
    let mut removed = 0;
    for lease in leases {
        lease.cancelled.store(true, Ordering::SeqCst);
        if let Ok(gate) = lease.gate.write() {
            // Held until the process exits.
            std::mem::forget(gate);
        }
        let Ok(mut file) = lease.file.lock() else { continue };
        let mut text = String::new();
        // Reads start where the offset is set; the appends go to the end whatever it is.
        if file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text)).is_err() {
            continue;
        }
        removed += remove_claims(&lease.root, &text);
        // Nothing of it is left to claim.
        let _gone = fs::remove_file(&lease.path);
    }
    removed
}

/// Removes what the leases of dead processes claim, and those leases; returns how many
/// leases were swept. A root without leases costs one failed directory read.
pub fn sweep(root: &Path) -> io::Result<usize> {
    let dir = root.join("leases");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut swept = 0;
    for entry in entries {
        let path = entry?.path();
        let Ok(mut file) = OpenOptions::new().read(true).open(&path) else { continue };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
        // Its owner is gone (or it is an unfinished `.new-` file of a dead process).
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        remove_claims(root, &text);
        match fs::remove_file(&path) {
            Ok(()) => swept += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(swept)
}

/// Removes every `active` and `path` claim in a lease's text; returns how many existed.
fn remove_claims(root: &Path, text: &str) -> usize {
    let mut removed = 0;
    for line in text.lines() {
        let gone = match line.split_once(' ') {
            Some(("active", key)) => crate::snapshot::owner::remove_active(root, key),
            Some(("path", rel)) => remove_path(&root.join(rel)),
            Some(("volume", name)) => remove_anonymous_volume(root, name),
            _ => false,
        };
        removed += usize::from(gone);
    }
    removed
}

/// Removes a dead process's anonymous volume: only an anonymous one (a name is never taken
/// again, but a claim is no reason to remove a named volume), and only when no running
/// container holds it. True when it was removed.
fn remove_anonymous_volume(root: &Path, name: &str) -> bool {
    let vols = crate::volume::Volumes::new(root);
    if !vols.get(name).is_ok_and(|v| v.anonymous()) {
        return false;
    }
    // No record names it (its container had none): the flock of a running user is the check.
    vols.remove(name, |_| Ok::<_, crate::volume::Error>(Vec::new())).is_ok()
}

/// Removes a file or directory tree; true when something was there.
pub(crate) fn remove_path(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).is_ok(),
        Ok(_) => fs::remove_file(path).is_ok(),
        Err(_) => false,
    }
}

/// What the live processes of a root claim.
#[derive(Debug, Default, Clone)]
pub struct Claims {
    /// Active snapshot keys.
    pub active: HashSet<String>,
    /// Committed snapshot names in use.
    pub held: HashSet<String>,
    /// Temporary paths, relative to the root.
    pub paths: HashSet<PathBuf>,
}

/// The claims of every live lease of `root` (call [`sweep`] first to drop the dead ones).
pub fn live(root: &Path) -> io::Result<Claims> {
    let mut claims = Claims::default();
    let entries = match fs::read_dir(root.join("leases")) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(claims),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let Ok(text) = fs::read_to_string(entry?.path()) else { continue };
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("active", key)) => claims.active.insert(key.to_owned()),
                Some(("hold", name)) => claims.held.insert(name.to_owned()),
                Some(("path", rel)) => claims.paths.insert(PathBuf::from(rel)),
                _ => false,
            };
        }
    }
    Ok(claims)
}

/// The lock that orders claims of committed snapshots against their removal: shared for a
/// claim and the check that follows it, exclusive for a prune. Released when dropped.
pub fn gc_lock(root: &Path, exclusive: bool) -> io::Result<OwnedFd> {
    let dir = root.join("snapshots");
    fs::create_dir_all(&dir)?;
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("gc.lock"))?;
    flock(&file, if exclusive { FlockOperation::LockExclusive } else { FlockOperation::LockShared })?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lease_is_not_swept_and_its_claims_are_listed() {
        let root = tempfile::tempdir().unwrap();
        let lease = for_root(root.path()).unwrap();
        fs::create_dir_all(root.path().join("tmp/x")).unwrap();
        lease.claim(Claim::Path(Path::new("tmp/x"))).unwrap();
        lease.claim(Claim::Hold("sha256:abc")).unwrap();
        lease.claim(Claim::Hold("sha256:abc")).unwrap();
        assert_eq!(sweep(root.path()).unwrap(), 0);
        assert!(root.path().join("tmp/x").exists());
        let claims = live(root.path()).unwrap();
        assert!(claims.held.contains("sha256:abc") && claims.paths.contains(Path::new("tmp/x")));
    }

    #[test]
    fn the_claims_of_a_lease_whose_lock_is_free_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("leases");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(root.path().join("tmp/left/deep")).unwrap();
        // A lease file nobody holds: what a killed process leaves.
        fs::write(dir.join("1-2"), "path tmp/left\nhold sha256:abc\n").unwrap();
        assert_eq!(sweep(root.path()).unwrap(), 1);
        assert!(!root.path().join("tmp/left").exists());
        assert!(!dir.join("1-2").exists());
    }
}
