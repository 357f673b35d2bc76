//! `--isolation none`: RUN steps run in the build container's own root filesystem, the way
//! kaniko runs them, for containers where not even chroot(2) is allowed.
//!
//! Before each step, `/` is made to hold exactly the step's copy snapshot (the rest of the
//! container's files go); the step's process runs with no isolation of any kind; afterwards
//! `/` is mirrored back onto the snapshot, whose diff (the copy snapshotter's) is the step's
//! layer, the same as under namespaces. Steps run one at a time. Never touched, on either
//! side ([`Keep`]): /proc, /sys, /dev, every mount point (the container's /etc/hosts,
//! /etc/resolv.conf, volumes, secrets), berth's executable and state, and the paths the
//! build reads or writes (context, Dockerfile, outputs, `--ignore-path`).
//!
//! What it does not protect against: anything. The step runs as the build container's own
//! process, with its capabilities, network and PIDs, and may change or remove any file of
//! the container, berth's included; the container is the only boundary, and it is meant to be
//! thrown away after one build (as kaniko's is). berth refuses to run it where it would
//! replace a machine's root filesystem (see [`InPlaceExecutor::new`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::exec::Executor;
use crate::sandbox::{SandboxError, Spec};
use crate::snapshot::mirror::{mirror, Keep, Toward};

/// The environment variable that lets `--isolation none` run where berth cannot tell it is
/// in a container: set it to `1` only in a container that is thrown away after the build.
pub const FORCE_ENV: &str = "BERTH_FORCE_ISOLATION_NONE";

/// Runs each step in this process's own root filesystem (see the module docs).
#[derive(Debug)]
pub struct InPlaceExecutor {
    keep: Keep,
    /// Held while a step has `/`: one step at a time. It holds the identity of the snapshot
    /// `/` was last mirrored back onto, once a step succeeded (see [`Toward::Root`]).
    busy: Mutex<Option<String>>,
}

/// Why `--isolation none` will not run here.
#[derive(Debug, thiserror::Error)]
pub enum InPlaceError {
    /// berth sees the machine's own PID namespace: `/` is likely a machine's, not a build
    /// container's.
    #[error(
        "--isolation none replaces the root filesystem with the image's, and this looks like a machine, \
         not a container ({0}); run it in a container made for one build, or set {FORCE_ENV}=1 if this is one"
    )]
    NotInContainer(&'static str),
    /// A plain user's berth: `/` is a machine's, and the user's own files would go.
    #[error(
        "--isolation none replaces the root filesystem with the image's, and would remove every file this \
         user may remove; it is for root in a container made for one build"
    )]
    Rootless,
    /// A path the build needs is `/` itself.
    #[error("--isolation none cannot keep {0} (it is the root directory) while it replaces the root filesystem")]
    KeepsRoot(String),
    /// Reading the mount table or finding berth's executable failed.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
}

/// Why this process seems to run on a machine rather than in a container, if it does: kernel
/// threads in sight (kthreadd is PID 2 only in the machine's own PID namespace), or no
/// /proc to tell by.
fn on_a_machine() -> Option<&'static str> {
    if std::fs::metadata("/proc/self").is_err() {
        return Some("no /proc to tell by");
    }
    match std::fs::read_to_string("/proc/2/comm") {
        Ok(comm) if comm.trim() == "kthreadd" => Some("kernel threads are visible"),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some("/proc/2 cannot be read"),
    }
}

impl InPlaceExecutor {
    /// An executor that leaves `keep` (absolute paths: berth's state, the build's inputs and
    /// outputs) alone besides /proc, /sys, /dev, the mount points and berth's executable.
    ///
    /// Refused where kernel threads are visible (kthreadd is PID 2): that is the machine's
    /// own PID namespace, so `/` is most likely the machine's, not a container's made for
    /// this build. [`FORCE_ENV`] overrides it (a container sharing the host's PIDs).
    pub fn new(keep: &[PathBuf]) -> Result<InPlaceExecutor, InPlaceError> {
        if crate::userns::entered() {
            return Err(InPlaceError::Rootless);
        }
        let forced = std::env::var_os(FORCE_ENV).is_some_and(|v| v == "1");
        if let Some(why) = on_a_machine().filter(|_| !forced) {
            return Err(InPlaceError::NotInContainer(why));
        }
        let mut paths: Vec<PathBuf> = ["/proc", "/sys", "/dev"].iter().map(PathBuf::from).collect();
        paths.extend(mount_points().map_err(|e| InPlaceError::Io("read /proc/self/mountinfo", e))?);
        paths.push(std::fs::read_link("/proc/self/exe").map_err(|e| InPlaceError::Io("find berth's executable", e))?);
        for path in keep {
            let real = real_path(path);
            if real == Path::new("/") {
                return Err(InPlaceError::KeepsRoot(path.display().to_string()));
            }
            paths.push(real);
        }
        Ok(InPlaceExecutor { keep: Keep::new(paths.iter().map(PathBuf::as_path)), busy: Mutex::new(None) })
    }
}

impl Executor for InPlaceExecutor {
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError> {
        let dir = crate::chroot::rootfs_dir(spec, "--isolation none")?;
        let mut last = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // `/` holds one of the snapshot's ancestors: size and times tell files apart.
        let trusted = last
            .take()
            .is_some_and(|id| crate::snapshot::copy_ancestors(&dir).iter().any(|a| crate::snapshot::identity(a) == id));
        let swap = |e: crate::snapshot::SnapshotError| SandboxError::Start {
            what: "mirror the root filesystem",
            source: std::io::Error::other(format!(
                "{e}: {}",
                std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()
            )),
        };
        let root = Path::new("/");
        let dirs = mirror(&dir, root, &self.keep, Toward::Root { trusted }).map_err(swap)?;
        let code = crate::chroot::run_process(spec, None, output)?;
        if code == 0 {
            mirror(root, &dir, &self.keep, Toward::Snapshot(&dirs)).map_err(swap)?;
            *last = Some(crate::snapshot::identity(&dir));
        }
        Ok(code)
    }

    fn mounts(&self) -> bool {
        false
    }
}

/// Every mount point but `/`, from this process's mount table.
fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(crate::sys::mount_points_in(&table).filter(|p| p != Path::new("/")).collect())
}

/// `path` made absolute with its symlinks resolved as far as it exists (an output that is
/// not written yet keeps its last components as given).
fn real_path(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(real) = cur.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_not_yet_written_keep_their_real_parent() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(real_path(&link.join("out/iid")), real.join("out/iid"));
    }

    #[test]
    fn the_machines_own_root_is_refused() {
        // This test runs on the machine itself (or in a container sharing its PIDs).
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd")
            && std::env::var_os(FORCE_ENV).is_none()
        {
            assert!(matches!(InPlaceExecutor::new(&[]), Err(InPlaceError::NotInContainer(_))));
        }
    }
}
