//! fuse-overlayfs: overlay snapshots where the kernel's overlayfs cannot be mounted (a user
//! namespace on Linux before 5.11), as podman and BuildKit fall back to it.

use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{io_err, Result, SnapshotError};

/// The program, looked up on `PATH`.
const PROGRAM: &str = "fuse-overlayfs";

/// True when fuse-overlayfs can mount here: the program is on `PATH` and `/dev/fuse` opens.
pub(crate) fn available() -> bool {
    let on_path =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(PROGRAM).is_file()));
    on_path && std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok()
}

/// True when something is mounted on the directory `dir` (it is on another device than its
/// parent).
pub(crate) fn is_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    match (dev(dir), dir.parent().map(dev)) {
        (Ok(a), Some(Ok(b))) => a != b,
        _ => false,
    }
}

/// The daemons this process started, by mount point, to reap when they are stopped.
static DAEMONS: Mutex<Vec<(PathBuf, Child)>> = Mutex::new(Vec::new());

/// Where a snapshot directory records the pid of the fuse-overlayfs serving it.
const PID_FILE: &str = "fuse.pid";

/// Mounts `lower` (top first) with `upper` and its work directory (none: read-only) on
/// `target` (made if missing; a snapshot directory's `merged`) with fuse-overlayfs, which
/// runs on as the filesystem's daemon, a child of berth recorded in the snapshot directory,
/// until [`stop`]. `allow_other`: the steps' processes run as the image's users.
pub(crate) fn mount(lower: &[PathBuf], upper: Option<(&Path, &Path)>, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).map_err(io_err("create", target))?;
    let refuse = |why: String| SnapshotError::Io {
        op: "mount with fuse-overlayfs",
        path: target.display().to_string(),
        source: std::io::Error::other(why),
    };
    let path = |p: &Path| -> Result<String> {
        let s = p.to_str().filter(|s| !s.contains([',', ':', '\\']));
        s.map(str::to_owned).ok_or_else(|| refuse(format!("{} has a character its options cannot hold", p.display())))
    };
    let lowers = lower.iter().map(|l| path(l)).collect::<Result<Vec<_>>>()?;
    let mut opts = format!("lowerdir={},allow_other", lowers.join(":"));
    if let Some((upper, work)) = upper {
        opts.push_str(&format!(",upperdir={},workdir={}", path(upper)?, path(work)?));
    }
    // Its messages go to a file, read if it fails.
    let memfd = rustix::fs::memfd_create(c"fuse-overlayfs-messages", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io_err("create a file for", target)(e.into()))?;
    let mut messages = std::fs::File::from(memfd);
    let errors = messages.try_clone().map_err(io_err("create a file for", target))?;
    let mut child = Command::new(PROGRAM)
        .args(["-f", "-o", &opts])
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors)
        .spawn()
        .map_err(|e| refuse(format!("run {PROGRAM}: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_mounted(target) {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let mut said = String::new();
            let _ = messages.rewind().and_then(|()| messages.read_to_string(&mut said));
            return Err(refuse(format!("{PROGRAM} did not mount ({status}): {}", said.trim())));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let Some(dir) = target.parent() {
        let pid = dir.join(PID_FILE);
        std::fs::write(&pid, child.id().to_string()).map_err(io_err("write", &pid))?;
    }
    DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).push((target.to_owned(), child));
    Ok(())
}

/// Stops the fuse-overlayfs serving the snapshot directory `dir`, if one does: its `merged`
/// unmounted where this process sees it mounted, then the daemon recorded in `dir` ended
/// (wherever its mount is: a build step's mount namespace, a container's) and, if this
/// process started it, reaped.
pub(crate) fn stop(dir: &Path) {
    let merged = dir.join("merged");
    if is_mounted(&merged) {
        let _gone = rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH);
    }
    let Ok(pid) = std::fs::read_to_string(dir.join(PID_FILE)) else { return };
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    let ours = {
        let mut daemons = DAEMONS.lock().unwrap_or_else(|e| e.into_inner());
        let at = daemons.iter().position(|(m, _)| *m == merged);
        at.map(|i| daemons.swap_remove(i).1)
    };
    if let Some(mut child) = ours {
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    // Another berth's: signalled only while the pid is still this mount's fuse-overlayfs.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
    let target = merged.as_os_str().as_encoded_bytes();
    let serves = cmdline.windows(target.len()).any(|w| w == target);
    if let Some(pid) = pid.trim().parse::<i32>().ok().and_then(rustix::process::Pid::from_raw).filter(|_| serves) {
        let _gone = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// fuse-overlayfs marks every directory it makes opaque (a `.wh..wh..opq` file and a
/// `.wh..opq` whiteout in it); the kernel marks only one that hides a lower directory. Removes
/// the markers of each directory of `upper` that no directory of `lowers` is at, so that the
/// diff and the scaffold's clean-up see what the kernel's overlayfs leaves. Harmless to the
/// mount: an opaque directory over nothing hides nothing.
pub(crate) fn drop_needless_opaque_markers(upper: &Path, lowers: &[PathBuf]) -> Result<()> {
    use oci::layer::FUSE_OPAQUE_MARKERS as MARKERS;
    fn walk(dir: &Path, rel: &Path, lowers: &[OwnedFd]) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(io_err("read", dir))?;
        for e in entries {
            let e = e.map_err(io_err("read", dir))?;
            if e.file_type().map_err(io_err("stat", dir))?.is_dir() {
                walk(&e.path(), &rel.join(e.file_name()), lowers)?;
            }
        }
        let marker = dir.join(MARKERS[0]);
        if marker.exists() && !lowers.iter().any(|l| is_dir_beneath(l, rel)) {
            for m in MARKERS {
                let m = dir.join(m);
                std::fs::remove_file(&m)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                    .map_err(io_err("remove", &m))?;
            }
        }
        Ok(())
    }
    let lowers = lowers.iter().map(|l| super::scaffold::open_dir(l)).collect::<Result<Vec<_>>>()?;
    walk(upper, Path::new(""), &lowers)
}

/// True when `rel` under the directory `lower` is a directory, no symlink followed on the way.
fn is_dir_beneath(lower: &OwnedFd, rel: &Path) -> bool {
    let Some(rel) = rel.to_str() else { return false };
    rel.is_empty()
        || super::scaffold::stat_beneath(lower, rel)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
}
