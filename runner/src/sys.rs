//! The syscalls that build a container's filesystem, behind one trait ([`Sys`]), as youki
//! does it: [`Linux`] makes them; the sandbox's unit tests pass a recording double and check
//! the order and arguments of every mount without root.

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::snapshot::Mount;

/// Opens `path` under `base` with openat2 `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: every
/// symlink and `..` is resolved as if `base` were `/`. The kernel answers EAGAIN when a rename
/// or a mount anywhere on the host races a lookup that climbs with `..`; that is retried a
/// few times, as runc's securejoin does, so a busy host does not fail an unpack.
pub fn open_in_root(
    base: impl std::os::fd::AsFd,
    path: impl AsRef<Path>,
    flags: rustix::fs::OFlags,
) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{Mode, ResolveFlags};
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(base.as_fd(), path.as_ref(), flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 32 => tries += 1,
            other => return other,
        }
    }
}

/// Where to mount or write: a path that no symlink in the image can redirect. For
/// [`Linux`] it is `/proc/self/fd/N` of an `O_PATH` fd that this value keeps open.
pub struct Target {
    path: PathBuf,
    _fd: Option<OwnedFd>,
}

impl Target {
    /// The path to give to mount(2) and the file calls.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A target named by a plain path, for doubles that touch no filesystem.
    pub fn plain(path: PathBuf) -> Target {
        Target { path, _fd: None }
    }
}

/// The calls the sandbox makes between mounting the rootfs and pivoting into it.
pub trait Sys {
    /// Mounts the rootfs (an overlay of snapshots, or a bind) on `target`.
    fn mount_rootfs(&self, rootfs: &Mount, target: &Path) -> io::Result<()>;
    /// Mounts a new filesystem of type `fstype` on `target`.
    fn mount(&self, fstype: &str, target: &Path, flags: MountFlags, data: Option<&CStr>) -> io::Result<()>;
    /// Binds `source` onto `target`, with the mounts below it where `recursive`.
    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> io::Result<()>;
    /// Makes the mount on `target` read-only.
    fn remount_read_only(&self, target: &Path) -> io::Result<()>;
    /// Binds the host's node `device` onto `target` (a file), and only that node: opened
    /// without following a link and checked to be the device it was when resolved.
    fn bind_device(&self, device: &crate::device::Device, target: &Path) -> io::Result<()>;
    /// Binds `source` as the mount namespace `ns` (another container's) sees it onto
    /// `target` in this one: a copy of that mount, made inside `ns` and brought back. The
    /// caller must be single-threaded (a forked child before it pivots), whose root and
    /// working directory end up at this namespace's `/`.
    fn bind_from_namespace(&self, ns: std::os::fd::BorrowedFd<'_>, source: &Path, target: &Path) -> io::Result<()>;
    /// Adds `flags` (`NODEV`, `RDONLY`, `NOSUID`, `NOEXEC`) to the mount on `target` and every
    /// mount below it:
    /// nodev so that a device node there opens nothing (what docker's device cgroup gives a
    /// container that may mknod), read-only so that no submount of a read-only volume is
    /// written.
    fn remount_tree(&self, target: &Path, flags: MountFlags) -> io::Result<()>;
    /// Opens `rel` inside `root` (creating it, a directory if `dir`, where it is missing),
    /// every component resolved inside the root.
    fn resolve(&self, root: &Path, rel: &str, dir: bool) -> io::Result<Target>;
    /// Whether `path` is a directory (symlinks followed); `None` when it does not exist.
    fn is_dir(&self, path: &Path) -> io::Result<Option<bool>>;
    /// Writes a file with `content`, creating or truncating it.
    fn write(&self, path: &Path, content: &[u8]) -> io::Result<()>;
    /// Makes the character device `path` (`major:minor`, mode 0666), as runc does outside a
    /// user namespace; EPERM, EACCES or ENOSYS where device nodes cannot be made.
    fn mknod_char(&self, path: &Path, major: u32, minor: u32) -> io::Result<()>;
    /// Makes a symlink `link` that points at `target`.
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// Makes a directory.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn unlink(&self, path: &Path) -> io::Result<()>;
    /// Makes `root` the root directory (pivot_root, then the old root detached) and enters it.
    fn pivot_root(&self, root: &Path) -> io::Result<()>;
    /// The filesystem type and options of the cgroup hierarchy mounted at `dir` in the
    /// caller's mount namespace (`("cgroup", "memory")`, `("cgroup2", "")`); None if none is.
    fn cgroup_mount_at(&self, dir: &Path) -> io::Result<Option<(String, String)>>;
}

/// The cgroup hierarchy mounted at `dir` in a /proc/self/mountinfo text: its type, and the
/// options that mount it again (the controllers, without `rw`/`ro`).
pub fn cgroup_mount_in(mountinfo: &str, dir: &Path) -> Option<(String, String)> {
    mountinfo.lines().rev().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        let point = fields.split(' ').nth(4)?;
        let mut fs = fs.split(' ');
        let (fstype, _source, options) = (fs.next()?, fs.next()?, fs.next()?);
        if Path::new(point) != dir || !fstype.starts_with("cgroup") {
            return None;
        }
        let kept: Vec<&str> = options.split(',').filter(|o| *o != "rw" && *o != "ro").collect();
        Some((fstype.to_owned(), kept.join(",")))
    })
}

/// The mount points of a /proc/self/mountinfo text, in its order (parents first), their
/// octal escapes (`\040` for a space; also tab, newline and backslash) decoded.
pub fn mount_points_in(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| line.split(' ').nth(4)).map(unescape_mount_path)
}

/// A mountinfo path field with its octal escapes decoded, byte for byte.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let (b, mut out, mut i) = (field.as_bytes(), Vec::with_capacity(field.len()), 0);
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The mount points strictly below `dir` in a /proc/self/mountinfo text, parents first.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mount_points_in(mountinfo).filter(|point| point != dir && point.starts_with(dir)).collect()
}

/// The real calls, through rustix.
pub struct Linux;

/// Whether `mount_setattr` (Linux 5.12), which a runtime's `rro` needs, may be called here:
/// neither missing nor refused by a seccomp filter.
pub fn has_mount_setattr() -> bool {
    // SAFETY: no pointer is passed; a kernel that knows the call refuses these arguments
    // (EINVAL for the size, or EBADF).
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, -1, std::ptr::null::<libc::c_char>(), 0, 0usize, 0usize) };
    !(r == -1 && matches!(io::Error::last_os_error().raw_os_error(), Some(libc::ENOSYS | libc::EPERM)))
}

/// The kernel's `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` adding `set` (`MOUNT_ATTR_*`) and, unless 0, setting `propagation`.
fn mount_setattr(dirfd: i32, path: &std::ffi::CStr, flags: libc::c_uint, set: u64, propagation: u64) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation, userns_fd: 0 };
    // SAFETY: a NUL-terminated path and a `mount_attr` of the size given, both alive for the
    // call; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `MOUNT_ATTR_*` bits for mount flags: read-only, nosuid, nodev and noexec only.
fn mount_attrs(flags: MountFlags) -> io::Result<u64> {
    const TABLE: [(MountFlags, u64); 4] =
        [(MountFlags::RDONLY, 0x1), (MountFlags::NOSUID, 0x2), (MountFlags::NODEV, 0x4), (MountFlags::NOEXEC, 0x8)];
    let known = TABLE.iter().fold(MountFlags::empty(), |all, (f, _)| all | *f);
    if !known.contains(flags) {
        return Err(io::Error::other(format!(
            "only rdonly, nosuid, nodev and noexec are set through a tree, not {flags:?}"
        )));
    }
    Ok(TABLE.iter().filter(|(f, _)| flags.contains(*f)).fold(0, |bits, (_, b)| bits | b))
}

/// [`Sys::remount_tree`] without `mount_setattr`: the mount on `target`, then each mount
/// below it, one remount each. The mount table read is the calling thread's, which may have
/// a mount namespace of its own (`cp`'s).
fn remount_each(target: &Path, flags: MountFlags) -> io::Result<()> {
    remount_adding(target, flags)?;
    let at = std::fs::canonicalize(target)?;
    for below in mounts_below(&std::fs::read_to_string("/proc/thread-self/mountinfo")?, &at) {
        remount_adding(&below, flags)?;
    }
    Ok(())
}

/// Remounts the bind on `target` with `add` besides the nosuid, nodev, noexec and rdonly it
/// has: in a user namespace, a remount that would clear one the host set is refused.
fn remount_adding(target: &Path, add: MountFlags) -> io::Result<()> {
    let have = rustix::fs::statvfs(target).map_err(errno)?.f_flag;
    let mut flags = MountFlags::BIND | add;
    for (st, m) in [
        (rustix::fs::StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (rustix::fs::StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (rustix::fs::StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (rustix::fs::StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
    ] {
        if have.contains(st) {
            flags |= m;
        }
    }
    rustix::mount::mount_remount(target, flags, "").map_err(errno)
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

impl Sys for Linux {
    fn mount_rootfs(&self, rootfs: &Mount, target: &Path) -> io::Result<()> {
        rootfs.mount(target).map_err(io::Error::other)
    }

    fn mount(&self, fstype: &str, target: &Path, flags: MountFlags, data: Option<&CStr>) -> io::Result<()> {
        rustix::mount::mount(fstype, target, fstype, flags, data).map_err(errno)
    }

    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
        if recursive {
            rustix::mount::mount_bind_recursive(source, target).map_err(errno)
        } else {
            rustix::mount::mount_bind(source, target).map_err(errno)
        }
    }

    fn remount_read_only(&self, target: &Path) -> io::Result<()> {
        remount_adding(target, MountFlags::RDONLY)
    }

    fn bind_from_namespace(&self, ns: std::os::fd::BorrowedFd<'_>, source: &Path, target: &Path) -> io::Result<()> {
        use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
        use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
        use std::os::fd::{AsFd, AsRawFd};
        let own = rustix::fs::open(
            "/proc/self/ns/mnt",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(errno)?;
        move_into_link_name_space(ns, Some(LinkNameSpaceType::Mount)).map_err(errno)?;
        let tree =
            open_tree(rustix::fs::CWD, source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC);
        // Back home before anything else, whatever the copy gave.
        move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Mount)).map_err(errno)?;
        let tree = tree.map_err(errno)?;
        // Whatever the other namespace made of it (shared with mounts to come, dev, exec),
        // the copy here is private, nosuid, nodev and noexec, as docker's /dev/shm.
        let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
        let attrs = mount_attrs(MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC)?;
        mount_setattr(tree.as_raw_fd(), c"", flags, attrs, libc::MS_PRIVATE)?;
        move_mount(tree.as_fd(), "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH).map_err(errno)
    }

    fn bind_device(&self, device: &crate::device::Device, target: &Path) -> io::Result<()> {
        use rustix::fs::{FileType, Mode, OFlags};
        let fd = rustix::fs::open(&device.host, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno)?;
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::CharacterDevice => 'c',
            FileType::BlockDevice => 'b',
            _ => '-',
        };
        let numbers = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        if (kind, numbers.0, numbers.1) != (device.kind, device.major, device.minor) {
            return Err(io::Error::other(format!("{} is no longer the device it was", device.host.display())));
        }
        let source = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
        rustix::mount::mount_bind(&source, target).map_err(errno)
    }

    fn remount_tree(&self, target: &Path, flags: MountFlags) -> io::Result<()> {
        let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let r = mount_setattr(libc::AT_FDCWD, &path, libc::AT_RECURSIVE as libc::c_uint, mount_attrs(flags)?, 0);
        let Err(e) = r else { return Ok(()) };
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            return Err(e);
        }
        // Before Linux 5.12, or under a seccomp filter that knows no mount_setattr.
        remount_each(target, flags)
    }

    fn resolve(&self, root: &Path, rel: &str, dir: bool) -> io::Result<Target> {
        let fd = crate::sandbox::secure_target(root, rel, dir)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
        Ok(Target { path, _fd: Some(fd) })
    }

    fn is_dir(&self, path: &Path) -> io::Result<Option<bool>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(m.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        std::fs::write(path, content)
    }

    fn mknod_char(&self, path: &Path, major: u32, minor: u32) -> io::Result<()> {
        use rustix::fs::{FileType, Mode, CWD};
        let mode = Mode::from_raw_mode(0o666);
        rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, mode, rustix::fs::makedev(major, minor))
            .map_err(errno)?;
        // mknod applies the umask (022 here); the devices are for everyone.
        rustix::fs::chmod(path, mode).map_err(errno)
    }

    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn cgroup_mount_at(&self, dir: &Path) -> io::Result<Option<(String, String)>> {
        Ok(cgroup_mount_in(&std::fs::read_to_string("/proc/self/mountinfo")?, dir))
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn unlink(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn pivot_root(&self, root: &Path) -> io::Result<()> {
        rustix::process::chdir(root).map_err(errno)?;
        rustix::process::pivot_root(".", ".").map_err(errno)?;
        rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH).map_err(errno)?;
        rustix::process::chdir("/").map_err(errno)
    }
}

/// The running kernel's (major, minor), for features that came with a release.
pub(crate) fn kernel_version() -> (u32, u32) {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Runs `change` (the making or removal of an entry in the directory `dir`, opened for
/// reading or as `O_PATH`) and gives `dir` back the access and modification times it had
/// before: for scaffolding, which must leave no trace in a layer. Only `change` can fail
/// the call: a directory whose times cannot be read or set (not ours to touch, in a user
/// namespace) keeps the new ones, which costs a layer's reproducibility, never a run.
pub fn keeping_times<T>(dir: &OwnedFd, change: impl FnOnce() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    use rustix::fs::{Mode, OFlags};
    // futimens needs a descriptor opened for I/O; an O_PATH one answers EBADF.
    let opened = rustix::fs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty());
    let before = opened.as_ref().ok().and_then(|d| rustix::fs::fstat(d).ok());
    let out = change()?;
    let (Ok(dir), Some(before)) = (opened, before) else { return Ok(out) };
    let ts = |sec: i64, nsec: i64| rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    #[allow(clippy::unnecessary_cast)] // the stat fields are narrower on 32-bit targets
    let times = rustix::fs::Timestamps {
        last_access: ts(before.st_atime as i64, before.st_atime_nsec as i64),
        last_modification: ts(before.st_mtime as i64, before.st_mtime_nsec as i64),
    };
    let _best_effort = rustix::fs::futimens(&dir, &times);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_decoded() {
        let unescape = |field: &str| unescape_mount_path(field).into_os_string().into_string().unwrap();
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn without_mount_setattr_every_mount_below_is_remounted_in_this_threads_namespace() {
        if !rustix::process::geteuid().is_root() {
            return eprintln!("skipping: mounting needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let (top, sub) = (dir.path().join("top"), dir.path().join("top/sub/deeper"));
        std::fs::create_dir(&top).unwrap();
        // In a thread of its own mount namespace, as `cp` binds volumes: the mounts below are
        // in this thread's table, not the process's.
        let written = crate::sandbox::in_private_mounts(|| {
            rustix::mount::mount("tmpfs", &top, "tmpfs", MountFlags::empty(), None).unwrap();
            std::fs::create_dir_all(&sub).unwrap();
            rustix::mount::mount("tmpfs", &sub, "tmpfs", MountFlags::empty(), None).unwrap();
            remount_each(&top, MountFlags::RDONLY | MountFlags::NODEV).unwrap();
            let flags = rustix::fs::statvfs(&sub).unwrap().f_flag;
            let nodev = flags.contains(rustix::fs::StatVfsMountFlags::NODEV);
            (std::fs::write(top.join("x"), "").is_ok(), std::fs::write(sub.join("x"), "").is_ok(), nodev)
        })
        .unwrap();
        assert_eq!(written, (false, false, true), "(top written, below written, below nodev)");
        assert!(has_mount_setattr(), "kernel 6.x has mount_setattr");
    }

    #[test]
    fn mounts_below_a_directory_are_read_from_mountinfo() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 8:2 / /srv rw - ext4 /dev/sda2 rw\n\
                    41 40 8:3 / /srv/data rw - ext4 /dev/sda3 rw\n\
                    42 41 0:40 / /srv/data/my\\040disk rw - tmpfs tmpfs rw\n\
                    43 22 0:41 / /srvx rw - tmpfs tmpfs rw\n";
        let below = mounts_below(info, Path::new("/srv"));
        assert_eq!(below, [PathBuf::from("/srv/data"), PathBuf::from("/srv/data/my disk")]);
        assert!(mounts_below(info, Path::new("/srv/data/my disk")).is_empty());
    }
}
