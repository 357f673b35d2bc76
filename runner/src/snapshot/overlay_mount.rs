//! Mounting an overlay of many layers.
//!
//! mount(2) copies its option string into one page (4096 bytes): `lowerdir=` with one
//! absolute snapshot path per layer (about 100 bytes each) overflows it near 38 layers, and
//! the kernel answers with a bare `EINVAL` or `ENOENT`. So berth mounts overlays through the
//! new mount API (fsopen/fsconfig/fsmount/move_mount), giving each lower directory as its
//! own `lowerdir+` parameter (Linux 6.8+): no option string to overflow. Where the kernel
//! lacks it, the legacy mount(2) is used, with the lower directories passed as
//! `/proc/self/fd/N` of directory fds opened for the mount when the plain paths do not fit:
//! about 18 bytes a layer, over 200 layers in a page. Past what either path allows, the
//! error says which limit was hit.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MountFlags, MoveMountFlags,
};

use super::{Result, SnapshotError};

/// overlayfs's own limit on lower directories in one mount (`OVL_MAX_STACK`).
pub(crate) const MAX_LOWERS: usize = 500;

/// The size of the page mount(2) copies its option string into.
const OPTIONS_PAGE: usize = 4096;

/// fsconfig copies a string value into at most this many bytes, its NUL included.
const FSCONFIG_STRING_MAX: usize = 256;

/// One overlay mount: `lower` top first; `upper` (upper, work) for a writable one.
pub(crate) struct Overlay<'a> {
    /// Lower directories, top first.
    pub lower: &'a [PathBuf],
    /// The upper and work directories; `None` for a read-only overlay.
    pub upper: Option<(&'a Path, &'a Path)>,
    /// Mounted `volatile`.
    pub volatile: bool,
}

/// A failed mount at `target`, with `message` as its cause.
fn failed(target: &Path, kind: io::ErrorKind, message: String) -> SnapshotError {
    SnapshotError::Io { op: "mount", path: target.display().to_string(), source: io::Error::new(kind, message) }
}

impl Overlay<'_> {
    /// Mounts the overlay at `target`: the new mount API where the kernel has `lowerdir+`,
    /// else mount(2).
    pub(crate) fn mount(&self, target: &Path) -> Result<()> {
        if self.lower.len() > MAX_LOWERS {
            return Err(failed(
                target,
                io::ErrorKind::InvalidInput,
                format!(
                    "{} layers: overlayfs stacks at most {MAX_LOWERS} lower directories (docker's overlay2 allows 127)",
                    self.lower.len()
                ),
            ));
        }
        match self.mount_new_api(target)? {
            Some(()) => Ok(()),
            None => self.mount_legacy(target),
        }
    }

    /// Through fsopen and `lowerdir+`; `Ok(None)` when the kernel has no such API or
    /// parameter (older than Linux 6.8), so that the caller falls back to mount(2).
    fn mount_new_api(&self, target: &Path) -> Result<Option<()>> {
        // Any fsopen failure (an old kernel, a seccomp filter that refuses it) leaves mount(2).
        let Ok(fs) = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else { return Ok(None) };
        let ctx = |what: &str, e: Errno| {
            let log = kernel_log(&fs);
            let detail = if log.is_empty() { String::new() } else { format!(" ({})", log.join("; ")) };
            failed(target, io::Error::from(e).kind(), format!("overlay {what}: {e}{detail}"))
        };
        fsconfig_set_string(&fs, "source", "overlay").map_err(|e| ctx("source", e))?;
        let mut held = Vec::new();
        for (i, dir) in self.lower.iter().enumerate() {
            let value = short_path(dir, FSCONFIG_STRING_MAX - 1, &mut held).map_err(|e| io_at(target, dir, e))?;
            match fsconfig_set_string(&fs, "lowerdir+", value.as_str()) {
                Ok(()) => {}
                // The parameter is unknown: a kernel before 6.8.
                Err(Errno::INVAL) if i == 0 => return Ok(None),
                Err(e) => return Err(ctx(&format!("lower directory {}", dir.display()), e)),
            }
        }
        if let Some((upper, work)) = self.upper {
            for (key, dir) in [("upperdir", upper), ("workdir", work)] {
                let value = short_path(dir, FSCONFIG_STRING_MAX - 1, &mut held).map_err(|e| io_at(target, dir, e))?;
                fsconfig_set_string(&fs, key, value.as_str()).map_err(|e| ctx(key, e))?;
            }
            if self.volatile {
                fsconfig_set_flag(&fs, "volatile").map_err(|e| ctx("volatile", e))?;
            }
        }
        if crate::userns::rootless() {
            fsconfig_set_flag(&fs, "userxattr").map_err(|e| ctx("userxattr", e))?;
        }
        fsconfig_create(&fs).map_err(|e| ctx("create", e))?;
        let attrs = if self.upper.is_none() { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| ctx("fsmount", e))?;
        move_mount(&mnt, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH).map_err(|e| ctx("move", e))?;
        drop(held);
        Ok(Some(()))
    }

    /// Through mount(2): plain paths when the options fit one page, else every lower as a
    /// `/proc/self/fd/N`; an error naming the page when even those do not fit.
    fn mount_legacy(&self, target: &Path) -> Result<()> {
        let mut held = Vec::new();
        let plain: Vec<String> = self.lower.iter().map(|l| l.display().to_string()).collect();
        let mut data = self.options(&plain);
        if data.len() >= OPTIONS_PAGE {
            let mut short = Vec::with_capacity(self.lower.len());
            for dir in self.lower {
                short.push(short_path(dir, 0, &mut held).map_err(|e| io_at(target, dir, e))?);
            }
            data = self.options(&short);
        }
        if data.len() >= OPTIONS_PAGE {
            return Err(failed(
                target,
                io::ErrorKind::InvalidInput,
                format!(
                    "{} layers do not fit the {OPTIONS_PAGE}-byte page of mount options on this kernel \
                     (overlayfs's lowerdir+, Linux 6.8, has no such limit)",
                    self.lower.len()
                ),
            ));
        }
        let flags = if self.upper.is_none() { MountFlags::RDONLY } else { MountFlags::empty() };
        let data = CString::new(data).map_err(|e| failed(target, io::ErrorKind::InvalidInput, e.to_string()))?;
        let mounted = rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()));
        drop(held);
        mounted.map_err(|e| SnapshotError::Io { op: "mount", path: target.display().to_string(), source: e.into() })
    }

    /// The mount(2) option string with `lowers` as given.
    fn options(&self, lowers: &[String]) -> String {
        let mut data = format!("lowerdir={}", lowers.join(":"));
        if let Some((u, w)) = self.upper {
            data.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
            if self.volatile {
                data.push_str(",volatile");
            }
        }
        if crate::userns::rootless() {
            // In a user namespace overlayfs keeps its markers in user.overlay.* xattrs.
            data.push_str(",userxattr");
        }
        data
    }
}

/// An error opening the directory `dir` for the mount at `target`.
fn io_at(target: &Path, dir: &Path, e: Errno) -> SnapshotError {
    failed(target, io::Error::from(e).kind(), format!("open {}: {e}", dir.display()))
}

/// `dir` as a string of at most `max` bytes: itself when it fits, else `/proc/self/fd/N` of
/// a directory fd kept in `held` until the mount is made.
fn short_path(dir: &Path, max: usize, held: &mut Vec<OwnedFd>) -> std::result::Result<String, Errno> {
    let plain = dir.display().to_string();
    if plain.len() <= max {
        return Ok(plain);
    }
    let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    held.push(fd);
    Ok(path)
}

/// The messages the kernel left on a filesystem context (overlayfs says there why it
/// refused a parameter), oldest first.
fn kernel_log(fs: &OwnedFd) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; an error (ENODATA) means none is left.
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 || out.len() >= 16 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        // "e overlay: ...": a severity letter, then the message.
        out.push(line.get(2..).unwrap_or(&line).trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` lower directories under `root`, each a snapshot-like long path with one file of
    /// its own and one it overrides, top first.
    fn lowers(root: &Path, n: usize) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = (0..n)
            .map(|i| {
                let dir = root.join(format!("{:064x}", i)).join("fs");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("layer-{i}")), i.to_string()).unwrap();
                std::fs::write(dir.join("top"), i.to_string()).unwrap();
                dir
            })
            .collect();
        out.reverse();
        out
    }

    fn check_merged(target: &Path, n: usize) {
        assert_eq!(std::fs::read_to_string(target.join("layer-0")).unwrap(), "0");
        let last = (n - 1).to_string();
        assert_eq!(std::fs::read_to_string(target.join(format!("layer-{last}"))).unwrap(), last);
        assert_eq!(std::fs::read_to_string(target.join("top")).unwrap(), last, "the top layer wins");
    }

    fn root() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        assert!(std::env::var_os("BERTH_TEST_STRICT").is_none(), "overlay mounts need root");
        eprintln!("skipping: overlay mounts need root");
        false
    }

    /// The kernel is 6.8 or newer.
    fn has_lowerdir_add() -> bool {
        crate::sys::kernel_version() >= (6, 8)
    }

    fn unmount(target: &Path) {
        rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).unwrap();
    }

    #[test]
    fn many_lowers_mount_through_each_path_writable_and_read_only() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lower = lowers(&dir.path().join("snapshots"), 130);
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        std::fs::create_dir(&upper).unwrap();
        let target = dir.path().join("mnt");
        std::fs::create_dir(&target).unwrap();
        for legacy in [false, true] {
            std::fs::create_dir_all(&work).unwrap();
            let ov = Overlay { lower: &lower, upper: Some((&upper, &work)), volatile: true };
            if legacy {
                ov.mount_legacy(&target).unwrap();
            } else {
                let used_new_api = ov.mount_new_api(&target).unwrap().is_some();
                assert!(used_new_api || !has_lowerdir_add(), "Linux 6.8+ has lowerdir+");
                if !used_new_api {
                    ov.mount(&target).unwrap();
                }
            }
            check_merged(&target, 130);
            std::fs::write(target.join("new"), "x").unwrap();
            unmount(&target);
            assert!(upper.join("new").exists(), "writes go to the upper directory");
            std::fs::remove_dir_all(&work).unwrap();
            let ro = Overlay { lower: &lower, upper: None, volatile: false };
            if legacy { ro.mount_legacy(&target) } else { ro.mount(&target) }.unwrap();
            check_merged(&target, 130);
            assert_eq!(
                std::fs::write(target.join("x"), "x").unwrap_err().raw_os_error(),
                Some(Errno::ROFS.raw_os_error())
            );
            unmount(&target);
        }
    }

    #[test]
    fn past_overlayfs_stack_limit_the_error_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let lower: Vec<PathBuf> = (0..=MAX_LOWERS).map(|i| dir.path().join(i.to_string())).collect();
        let err = Overlay { lower: &lower, upper: None, volatile: false }.mount(dir.path()).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("501 layers") && text.contains("at most 500"), "{text}");
    }

    #[test]
    fn legacy_mount_past_its_page_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // Missing directories cannot be opened, so build ones that exist but are too many
        // for /proc/self/fd/N to fit: 400 fds of ~19 bytes each.
        let lower = lowers(&dir.path().join("s"), 400);
        let err = Overlay { lower: &lower, upper: None, volatile: false }.mount_legacy(dir.path()).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("400 layers do not fit the 4096-byte page"), "{text}");
    }
}
