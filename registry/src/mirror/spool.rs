//! The mirror's spool directory: one per registry process under the temp directory, locked
//! (`flock` on `.lock`) for the process's life. A process that is killed cannot remove its
//! spool, with the file of any fill it had in progress, so each new one removes the spools
//! whose lock nobody holds.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};

/// The prefix of every spool directory's name.
const PREFIX: &str = "berth-mirror-";

/// A spool without a lock file is left this long: its process may be about to lock it.
const UNLOCKED_GRACE: Duration = Duration::from_secs(600);

/// This process's spool: removed when dropped; its lock held meanwhile.
pub(super) struct Spool {
    /// Removed on drop, while `_lock` is still held (fields drop in order).
    dir: tempfile::TempDir,
    _lock: File,
}

impl Spool {
    /// Removes the spools of processes that are gone, then makes this process's own.
    pub(super) fn new() -> std::io::Result<Spool> {
        sweep(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir()?;
        let lock = File::create(dir.path().join(".lock"))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
        Ok(Spool { dir, _lock: lock })
    }

    /// Where fills write.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes each spool under `tmp` whose lock no process holds, and each one without a lock
/// file (made by an older berth, or by a process killed before it locked it) older than
/// [`UNLOCKED_GRACE`]. Best effort: a spool that cannot be read is left.
fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let stale = match File::open(dir.join(".lock")) {
            Ok(lock) => flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > UNLOCKED_GRACE)),
        };
        if stale {
            let _gone = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_processs_spool_goes_and_a_live_ones_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let live = tmp.path().join(format!("{PREFIX}live"));
        let dead = tmp.path().join(format!("{PREFIX}dead"));
        let young = tmp.path().join(format!("{PREFIX}young"));
        let other = tmp.path().join("someone-else");
        for d in [&live, &dead, &young, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead.join("fill-1"), "half a blob").unwrap();
        File::create(dead.join(".lock")).unwrap();
        let held = File::create(live.join(".lock")).unwrap();
        flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
        sweep(tmp.path());
        assert!(!dead.exists(), "nobody holds its lock");
        assert!(live.exists() && young.exists() && other.exists());
        drop(held);
        sweep(tmp.path());
        assert!(!live.exists(), "its process is gone");
    }
}
