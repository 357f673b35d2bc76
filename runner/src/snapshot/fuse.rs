//! fuse-overlayfs: overlay snapshots where the kernel's overlayfs cannot be mounted (a user
//! namespace on Linux before 5.11), as podman and BuildKit fall back to it.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Mounts `lower` (top first) with `upper` and its work directory (none: read-only) on
/// `target` (made if missing) with fuse-overlayfs, which stays behind as the filesystem's
/// daemon until it is unmounted. `allow_other`: the steps' processes run as the image's users.
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
    // Its messages go to a file: the daemon it leaves keeps its stderr open.
    let memfd = rustix::fs::memfd_create(c"fuse-overlayfs-messages", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io_err("create a file for", target)(e.into()))?;
    let mut messages = std::fs::File::from(memfd);
    let errors = messages.try_clone().map_err(io_err("create a file for", target))?;
    let status = Command::new(PROGRAM)
        .args(["-o", &opts])
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors)
        .status()
        .map_err(|e| refuse(format!("run {PROGRAM}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    let _ = messages.rewind().and_then(|()| messages.read_to_string(&mut said));
    Err(refuse(format!("{PROGRAM} failed ({status}): {}", said.trim())))
}

/// Unmounts `target` if something is mounted there; its daemon then exits.
pub(crate) fn unmount(target: &Path) {
    if is_mounted(target) {
        let _gone = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
    }
}

/// fuse-overlayfs marks every directory it makes opaque (a `.wh..wh..opq` file and a
/// `.wh..opq` whiteout in it); the kernel marks only one that hides a lower directory. Removes
/// the markers of each directory of `upper` that no directory of `lowers` is at, so that the
/// diff and the scaffold's clean-up see what the kernel's overlayfs leaves. Harmless to the
/// mount: an opaque directory over nothing hides nothing.
pub(crate) fn drop_needless_opaque_markers(upper: &Path, lowers: &[PathBuf]) -> Result<()> {
    fn walk(dir: &Path, rel: &Path, lowers: &[PathBuf]) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(io_err("read", dir))?;
        for e in entries {
            let e = e.map_err(io_err("read", dir))?;
            if e.file_type().map_err(io_err("stat", dir))?.is_dir() {
                walk(&e.path(), &rel.join(e.file_name()), lowers)?;
            }
        }
        let marker = dir.join(OPAQUE_MARKERS[0]);
        if marker.exists() && !lowers.iter().any(|l| l.join(rel).is_dir()) {
            for m in OPAQUE_MARKERS {
                let m = dir.join(m);
                std::fs::remove_file(&m)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                    .map_err(io_err("remove", &m))?;
            }
        }
        Ok(())
    }
    walk(upper, Path::new(""), lowers)
}

/// What fuse-overlayfs puts in a directory it marks opaque.
const OPAQUE_MARKERS: [&str; 2] = [".wh..wh..opq", ".wh..opq"];
