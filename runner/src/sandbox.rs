//! Running one process in an image: new mount, PID, UTS, IPC (and network) namespaces,
//! pivot_root into the rootfs, /proc and a minimal /dev, the image's user, docker's
//! default capabilities and seccomp filter, no_new_privs when asked for (see
//! [`crate::security`]).
//!
//! The order follows runc and crun: namespaces; the mount namespace made private; the
//! rootfs mounted; /proc and /dev; `pivot_root(".", ".")` and the old root lazily
//! unmounted; hostname; the bounding set; a missing working directory made; the seccomp
//! filter (without no_new_privs, docker's default: the kernel takes it then only from a
//! process with CAP_SYS_ADMIN); groups, gid, uid; chdir; capabilities; limits; with
//! no_new_privs, no_new_privs and then the filter; exec. berth's own binary is never
//! re-executed inside the container:
//! all of this runs in the forked child between `fork` and `exec`. Everything mounted
//! lives in the child's mount namespace and vanishes with it, so a killed berth leaves
//! no mounts behind.

use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;

use crate::snapshot::Mount;
use crate::sys::{Sys, Target};

/// The network a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace: nothing but a loopback interface.
    None,
    /// The host's network.
    Host,
    /// A network namespace made beforehand (the bridge's, see [`crate::network`]), by an
    /// fd number that stays open in the starting process until the process runs.
    Join(i32),
}

/// The IPC namespace and /dev/shm a container gets (docker's `--ipc`).
#[derive(Debug, Clone)]
pub enum Ipc {
    /// Its own namespace.
    Own {
        /// docker's /dev/shm tmpfs; none for `--ipc none`.
        shm: bool,
    },
    /// The host's namespace and /dev/shm (`--ipc host`).
    Host,
    /// Another container's (`--ipc container:X`), by fds opened while it ran, kept open
    /// until this process runs.
    Join {
        /// Its IPC namespace (`/proc/PID/ns/ipc`).
        ns: std::sync::Arc<std::os::fd::OwnedFd>,
        /// Its mount namespace (`/proc/PID/ns/mnt`), where its /dev/shm is.
        mnt: std::sync::Arc<std::os::fd::OwnedFd>,
    },
}

impl Default for Ipc {
    fn default() -> Ipc {
        Ipc::Own { shm: true }
    }
}

/// The PID namespace a container's processes get (docker's `--pid`).
#[derive(Debug, Clone, Default)]
pub enum Pid {
    /// Its own: the first process is PID 1, and its end is every process's end.
    #[default]
    Own,
    /// The host's (`--pid host`): the container sees, and may signal, the host's processes.
    Host,
    /// Another container's (`--pid container:X`), by an fd of its namespace opened while it
    /// ran, kept open until this process runs.
    Join(std::sync::Arc<std::os::fd::OwnedFd>),
}

/// Whether a container gets a namespace of its own or shares the host's (docker's `--uts`
/// and `--cgroupns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Namespace {
    /// Its own (`private`, docker's default for both here).
    #[default]
    Own,
    /// The host's (`host`).
    Host,
}

/// Who the process runs as, as given: `name`, `uid`, `uid:gid`, `name:group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// Everything needed to start the process.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How to mount the rootfs.
    pub rootfs: Vec<Mount>,
    /// Where to mount it on the host side (an empty directory).
    pub mountpoint: PathBuf,
    /// The program and its arguments.
    pub args: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// The working directory inside the container.
    pub cwd: String,
    /// The user, as given; resolved through the image's /etc/passwd and /etc/group.
    pub user: Option<User>,
    /// The resolved (uid, gid, groups), filled in by [`run`] before the fork.
    pub ids: Option<(u32, u32, Vec<u32>)>,
    /// The UTS hostname.
    pub hostname: String,
    /// The network namespace.
    pub network: Network,
    /// Host directories or files bound into the container.
    pub volumes: Vec<Volume>,
    /// Container paths that get a fresh tmpfs, `PATH[:OPTIONS]` (default options `mode=1777`).
    pub tmpfs: Vec<String>,
    /// Resource limits (`--ulimit`), on top of docker's open-files default.
    pub ulimits: Vec<crate::rlimit::Ulimit>,
    /// Mount the rootfs read-only (volumes and tmpfs stay as given).
    pub read_only: bool,
    /// The container's /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub etc: Option<EtcFiles>,
    /// `cgroup.procs` files to join before exec (see [`crate::cgroup`]).
    pub cgroups: Vec<PathBuf>,
    /// `--init`: PID 1 is a small init that forwards signals to the command and reaps
    /// orphaned processes, instead of the command itself.
    pub init: bool,
    /// `-t`: the command gets a pty of the container's own devpts as its stdio and
    /// controlling terminal; the master is sent over this unix socket (fd number in the
    /// parent, inherited by the child) with SCM_RIGHTS, as runc's console socket does.
    pub console_socket: Option<i32>,
    /// The pty's size (rows, columns), set before the command starts.
    pub console_size: (u16, u16),
    /// Capabilities and seccomp (docker's defaults unless `--cap-add`, `--security-opt`...).
    pub security: crate::security::Security,
    /// `--shm-size`: bytes of the /dev/shm tmpfs; `None` for docker's 64 MiB.
    pub shm_size: Option<u64>,
    /// `--group-add`: more supplementary groups, by name (the image's /etc/group) or number.
    pub group_add: Vec<String>,
    /// A working directory the rootfs lacks is made (`run -w`, as docker makes it); without
    /// it, a missing one fails the start (`exec -w`, as docker's 126).
    pub make_cwd: bool,
    /// `--device`: host nodes bound where the container sees them.
    pub devices: Vec<crate::device::Device>,
    /// `--sysctl`: settings of the container's namespaces, checked, in the order given.
    pub sysctls: Vec<(String, String)>,
    /// `--ipc`: its IPC namespace and /dev/shm.
    pub ipc: Ipc,
    /// `--pid`: its PID namespace.
    pub pid: Pid,
    /// `--uts`: its own UTS namespace (with `hostname`) or the host's (and its name).
    pub uts: Namespace,
    /// `--cgroupns`: a cgroup namespace rooted at its group, or the host's.
    pub cgroupns: Namespace,
    /// `--oom-score-adj`: how readily the OOM killer picks the process (-1000 to 1000).
    pub oom_score_adj: Option<i32>,
}

/// A bind mount from the host into the container: a `-v` bind or volume, or a build mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path (must exist).
    pub host: PathBuf,
    /// The absolute path inside the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// What becomes of the mounts below the host path (docker's `bind-recursive`).
    pub recursive: BindRecursive,
}

/// What a bind does with the mounts below its source: docker's `--mount` key
/// `bind-recursive` (Docker Engine 25), whose default makes `-v SRC:DEST:ro` read-only all
/// the way down instead of at its top mount only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindRecursive {
    /// The mounts below come along; a read-only bind is read-only in all of them.
    #[default]
    Enabled,
    /// The mounts below are left out: their mount points show what is under them.
    Disabled,
    /// The mounts below come along and stay writable under a read-only bind (docker's
    /// behaviour before 25).
    Writable,
    /// As `Enabled`, asked for explicitly (docker's, which fails where the kernel cannot;
    /// berth then remounts each mount below, so it never has to).
    Readonly,
}

impl BindRecursive {
    /// Whether the default is taken (kept out of stored configs).
    pub fn is_default(&self) -> bool {
        *self == BindRecursive::Enabled
    }

    /// Whether a read-only bind is read-only in every mount below it too.
    fn read_only_below(self) -> bool {
        matches!(self, BindRecursive::Enabled | BindRecursive::Readonly)
    }
}

impl std::str::FromStr for BindRecursive {
    type Err = String;

    fn from_str(s: &str) -> Result<BindRecursive, String> {
        match s {
            "enabled" => Ok(BindRecursive::Enabled),
            "disabled" => Ok(BindRecursive::Disabled),
            "writable" => Ok(BindRecursive::Writable),
            "readonly" => Ok(BindRecursive::Readonly),
            other => Err(format!("bind-recursive {other:?}: enabled, disabled, writable or readonly")),
        }
    }
}

/// What the sandbox mounts on, `(path, is a directory)`: created in the rootfs where the
/// image lacks them, through [`secure_target`], so a symlink in the image never moves a
/// mount onto the host. [`crate::rootfs::ensure_scaffold`] makes them once per image.
pub const MOUNTPOINTS: [(&str, bool); 6] = [
    ("proc", true),
    ("dev", true),
    ("sys", true),
    ("etc/hosts", false),
    ("etc/resolv.conf", false),
    ("etc/hostname", false),
];

/// Creates every one of [`MOUNTPOINTS`] that `root` (a mounted rootfs) lacks.
pub fn create_mountpoints(root: &Path) -> std::io::Result<()> {
    for (rel, dir) in MOUNTPOINTS {
        secure_target(root, rel, dir)?;
    }
    Ok(())
}

/// Runs `f` on a thread of its own in a private mount namespace (as root; otherwise on
/// the calling thread), so that every mount `f` makes is gone when it returns, even if
/// berth is killed half-way. The calling thread's own mounts and cwd are untouched.
pub fn in_private_mounts<T: Send>(f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    if !rustix::process::geteuid().is_root() {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new().name("berth-mounts".into()).spawn_scoped(s, || {
            // SAFETY: unsharing the mount namespace and the fs struct changes only this
            // thread's view of mounts and cwd; no other thread's state is touched.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::FS) }.map_err(errno)?;
            rustix::mount::mount_change(Path::new("/"), MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
                .map_err(errno)?;
            Ok(f())
        })?;
        worker.join().unwrap_or_else(|_| Err(std::io::Error::other("a thread in a private mount namespace panicked")))
    })
}

/// The device nodes of every container's /dev, with their numbers, as the OCI runtime
/// spec's default devices.
const DEVICES: [(&str, u32, u32); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// Paths under /proc that runc masks by default: files get /dev/null, directories an
/// empty read-only tmpfs.
const MASKED: [&str; 9] =
    ["acpi", "asound", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "scsi"];

/// Paths under /sys that runc and docker mask with an empty read-only tmpfs: firmware
/// tables and EFI variables, and the RAPL energy counters (a power side channel).
const MASKED_SYS: [&str; 2] = ["firmware", "devices/virtual/powercap"];

/// Paths under /proc that runc makes read-only by default.
const READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Opens (creating it as a directory or an empty file) `rel` inside `root`, resolving every
/// component inside the root, and returns an `O_PATH` fd to mount on through
/// `/proc/self/fd/N`: a symlink in the image cannot redirect a mount to the host. A
/// dangling symlink on the way has its target made inside the root, as runc's securejoin
/// does.
pub(crate) fn secure_target(root: &Path, rel: &str, dir: bool) -> std::io::Result<std::os::fd::OwnedFd> {
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return Err(std::io::Error::other(format!("mount target {rel:?} has '..'")));
    }
    let target = secure_target_at(root, rel, dir, 0)?;
    // A symlink in the image (`/dev -> /`) must not stack a mount on the rootfs itself.
    if !rel.is_empty() {
        let (t, r) = (rustix::fs::fstat(&target).map_err(errno)?, rustix::fs::stat(root).map_err(errno)?);
        if (t.st_dev, t.st_ino) == (r.st_dev, r.st_ino) {
            return Err(std::io::Error::other(format!("mount target /{rel} resolves to the root itself")));
        }
    }
    Ok(target)
}

fn secure_target_at(root: &Path, rel: &str, dir: bool, links: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    if links > 40 {
        return Err(errno(rustix::io::Errno::LOOP));
    }
    let base =
        rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(errno)?;
    // Where the whole path already exists (the image's scaffold has every mount point), one
    // lookup is enough; the walk below is for what must be made first.
    match open_in_root(&base, Path::new(if rel.is_empty() { "." } else { rel }), OFlags::empty()) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(errno(e)),
    }
    let mut prefix = PathBuf::new();
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    for (i, c) in comps.iter().enumerate() {
        let parent = if prefix.as_os_str().is_empty() { PathBuf::from(".") } else { prefix.clone() };
        let pfd = open_in_root(&base, &parent, OFlags::DIRECTORY).map_err(errno)?;
        prefix.push(c);
        let last = i + 1 == comps.len();
        match open_in_root(&base, &prefix, OFlags::empty()) {
            Ok(_) => {}
            // Missing, or a dangling symlink; any other error (a magic link, a loop) stands.
            Err(rustix::io::Errno::NOENT) => {
                if let Ok(link) = rustix::fs::readlinkat(&pfd, *c, Vec::new()) {
                    // A dangling symlink: continue at its target, taken inside the root.
                    let link = link.to_string_lossy().into_owned();
                    // A relative target counts from where the parent really is: the
                    // parent path itself may have gone through symlinks.
                    let from = if link.starts_with('/') {
                        String::new()
                    } else {
                        path_in_root(&base, &pfd).unwrap_or_else(|| parent.to_string_lossy().into_owned())
                    };
                    let next = lexical_in_root(&format!("{from}/{link}/{}", comps[i + 1..].join("/")));
                    return secure_target_at(root, &next, dir, links + 1);
                }
                // A mount point is scaffolding, no change of the step's: the directory it is
                // made in keeps its times (else /etc of every RUN would be dated now).
                crate::sys::keeping_times(&pfd, || {
                    if last && !dir {
                        rustix::fs::openat(
                            &pfd,
                            *c,
                            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                            Mode::from_raw_mode(0o644),
                        )
                        .map(drop)
                    } else {
                        match rustix::fs::mkdirat(&pfd, *c, Mode::from_raw_mode(0o755)) {
                            Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                })
                .map_err(errno)?;
            }
            Err(e) => return Err(errno(e)),
        }
    }
    let target = if prefix.as_os_str().is_empty() { PathBuf::from(".") } else { prefix };
    open_in_root(&base, &target, OFlags::empty()).map_err(errno)
}

/// Where the directory `dir` is inside the root `base`, both open fds, as the kernel sees it.
fn path_in_root(base: &std::os::fd::OwnedFd, dir: &std::os::fd::OwnedFd) -> Option<String> {
    let real = |fd: &std::os::fd::OwnedFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))).ok()
    };
    Some(real(dir)?.strip_prefix(real(base)?).ok()?.to_string_lossy().into_owned())
}

/// An `O_PATH` open of `path` under `base`, resolved inside it ([`crate::sys::open_in_root`]).
fn open_in_root(
    base: &std::os::fd::OwnedFd,
    path: &Path,
    extra: rustix::fs::OFlags,
) -> rustix::io::Result<std::os::fd::OwnedFd> {
    crate::sys::open_in_root(base, path, rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC | extra)
}

/// `path` with `.` and `..` applied by name, never climbing above the root.
fn lexical_in_root(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// Mounts a new `fstype` on the directory `rel` inside `root` and returns the mounted
/// filesystem's root.
fn mount_in(
    sys: &dyn Sys,
    root: &Path,
    rel: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&std::ffi::CStr>,
) -> std::io::Result<Target> {
    sys.mount(fstype, sys.resolve(root, rel, true)?.path(), flags, data)?;
    // The first target names the directory under the mount; a fresh walk ends on the mount.
    sys.resolve(root, rel, true)
}

/// How [`bind_into`] binds: read-only or not, what becomes of the mounts below the source,
/// and whether a device node opens in it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BindOptions {
    pub(crate) read_only: bool,
    pub(crate) recursive: BindRecursive,
    pub(crate) nodev: bool,
}

impl BindOptions {
    /// Read-only or not; every mount below comes along (and is read-only with it).
    pub(crate) fn read_only(read_only: bool) -> BindOptions {
        BindOptions { read_only, ..BindOptions::default() }
    }
}

/// Binds `source` (a host path) onto `rel` inside `root`, resolved in the root (made when
/// missing), as `options` ask: a volume's mount, in a container or for `cp`.
pub(crate) fn bind_into(
    sys: &dyn Sys,
    root: &Path,
    source: &Path,
    rel: &str,
    options: BindOptions,
) -> std::io::Result<()> {
    let is_dir = sys.is_dir(source)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} does not exist", source.display()))
    })?;
    let recursive = options.recursive != BindRecursive::Disabled;
    sys.bind(source, sys.resolve(root, rel, is_dir)?.path(), recursive)?;
    // The first target names what is under the bind; a fresh walk ends on the bind.
    let target = sys.resolve(root, rel, is_dir)?;
    let mut down = MountFlags::empty();
    if options.nodev {
        down |= MountFlags::NODEV;
    }
    if options.read_only && options.recursive.read_only_below() {
        down |= MountFlags::RDONLY;
    } else if options.read_only {
        sys.remount_read_only(target.path())?;
    }
    if !down.is_empty() {
        sys.remount_tree(target.path(), down)?;
    }
    Ok(())
}

/// Why the process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The user or group is not in the image.
    #[error("{0}")]
    User(String),
    /// The capabilities or the seccomp profile cannot be applied.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// Creating the PID namespace or forking failed.
    #[error("start the container process ({what})")]
    Start {
        /// The step.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// The failure to execute `program`, naming it (`/bin/sh: No such file or directory`):
    /// the OS error alone does not say which file was missing. The error's kind is kept. A
    /// failure of the container's set-up before the exec (see [`SetupStage`]) says which
    /// step failed and is berth's own (docker's 125), not the program's.
    pub fn exec_failed(program: &str, e: std::io::Error) -> SandboxError {
        if let Some((stage, errno)) = SetupStage::decode(&e) {
            let mut source = std::io::Error::from_raw_os_error(errno);
            // Rootless, the likely cause is a user or group the namespace does not map.
            if matches!(stage, SetupStage::Process) && [libc::EPERM, libc::EINVAL].contains(&errno) {
                if let Some(ids) = crate::userns::mapped_ids().filter(|_| crate::userns::rootless()) {
                    let hint = format!(
                        "{source}; this user namespace maps {ids}: a user or group outside them cannot be \
                         taken (see docs/rootless.md)"
                    );
                    source = std::io::Error::new(source.kind(), hint);
                }
            }
            return SandboxError::Start { what: stage.what(), source };
        }
        let source = std::io::Error::new(e.kind(), format!("{program}: {e}"));
        SandboxError::Start { what: "fork and exec", source }
    }

    /// docker's exit code when the program itself could not be executed: 127 when it is not
    /// there, 126 when it cannot be run; `None` for every other failure (berth's own).
    pub fn exec_exit_code(&self) -> Option<i32> {
        match self {
            SandboxError::Start { what: "fork and exec", source } if source.kind() == std::io::ErrorKind::NotFound => {
                Some(127)
            }
            SandboxError::Start { what: "fork and exec", .. } => Some(126),
            _ => None,
        }
    }
}

/// The step of a container's set-up in the forked child that failed. Only an errno crosses
/// from the child to `spawn`'s caller, so the step travels in the bits above it: a code
/// no errno has, which tells the caller the set-up failed and not the exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStage {
    /// Namespaces, cgroups, the network, the hostname.
    Namespaces = 1,
    /// The root, volumes, tmpfs, /proc, /dev and the other mounts.
    Filesystem = 2,
    /// The working directory.
    Workdir = 3,
    /// User, capabilities, limits, seccomp, the init or the pty.
    Process = 4,
}

/// The bit that marks a set-up failure's code (errnos stay far below it).
const SETUP_MARK: i32 = 1 << 24;

impl SetupStage {
    /// `e` marked as a failure of this step (an error marked already keeps its step).
    pub fn mark(self, e: std::io::Error) -> std::io::Error {
        if SetupStage::decode(&e).is_some() {
            return e;
        }
        let errno = e.raw_os_error().filter(|n| (1..0xffff).contains(n)).unwrap_or(libc::EINVAL);
        std::io::Error::from_raw_os_error(SETUP_MARK | (self as i32) << 16 | errno)
    }

    /// The step and the errno of a marked error.
    fn decode(e: &std::io::Error) -> Option<(SetupStage, i32)> {
        let code = e.raw_os_error().filter(|c| c & SETUP_MARK != 0)?;
        let stage = match (code >> 16) & 0xff {
            1 => SetupStage::Namespaces,
            2 => SetupStage::Filesystem,
            3 => SetupStage::Workdir,
            _ => SetupStage::Process,
        };
        Some((stage, code & 0xffff))
    }

    /// The step, for the error message.
    fn what(self) -> &'static str {
        match self {
            SetupStage::Namespaces => "set up the container's namespaces",
            SetupStage::Filesystem => "mount the container's filesystem (its root, volumes, tmpfs and /proc)",
            SetupStage::Workdir => "enter the working directory",
            SetupStage::Process => "set up the container process (user, capabilities, limits)",
        }
    }
}

/// The most of /etc/passwd or /etc/group berth reads (a file of gigabytes is not read whole).
const MAX_ACCOUNTS_FILE: u64 = 16 << 20;

/// Reads a file of the rootfs-to-be from its snapshot directories, as the merged root will
/// show it, without mounting (see [`crate::merged`]); public for the builder's `--chown`,
/// which reads the image's /etc/passwd and /etc/group by BuildKit's rules, not USER's.
pub fn read_in_rootfs(mounts: &[Mount], path: &str) -> Option<String> {
    let dirs: Vec<PathBuf> = match mounts.first()? {
        Mount::Overlay { lower, upper, .. } => {
            upper.iter().map(|(u, _)| u.clone()).chain(lower.iter().cloned()).collect()
        }
        Mount::Scratch { lower } => lower.clone(),
        Mount::Bind { source, .. } => vec![source.clone()],
    };
    crate::merged::read(&dirs, path, MAX_ACCOUNTS_FILE)
}

/// Resolves `user` (`name`, `uid`, `uid:gid`, `name:group`) through the image's own
/// /etc/passwd and /etc/group, never the host's: (uid, gid, all gids).
pub fn resolve_user(mounts: &[Mount], user: &str) -> Result<(u32, u32, Vec<u32>), SandboxError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_rootfs(mounts, "etc/passwd").unwrap_or_default();
    let group = read_in_rootfs(mounts, "etc/group").unwrap_or_default();
    let entry = passwd_entry(&passwd, u);
    let uid: u32 = match (u.parse(), &entry) {
        (Ok(n), _) => n,
        (Err(_), Some(f)) => f[2].parse().unwrap_or(0),
        (Err(_), None) => {
            return Err(SandboxError::User(format!("unable to find user {u}: no matching entries in passwd file")))
        }
    };
    let name = entry.as_ref().map(|f| f[0].to_owned());
    // A uid the passwd file does not list gets group 0, as runc and BuildKit give it.
    let mut gid: u32 = entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0);
    if let Some(g) = g {
        gid = group_id(&group, g)?;
    }
    let mut groups = vec![gid];
    // A group given with the user is the only one (as runc): the user's memberships count
    // only when no group is named.
    if let (Some(name), None) = (name, g) {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() > 3) {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse() {
                    groups.push(n);
                }
            }
        }
    }
    Ok((uid, gid, groups))
}

/// A group as a number, or by name through `group_file` (the image's /etc/group), as runc
/// resolves it.
fn group_id(group_file: &str, group: &str) -> Result<u32, SandboxError> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    group_file
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == group)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| SandboxError::User(format!("unable to find group {group}: no matching entries in group file")))
}

/// The identity a namespaced process takes: its user's, or root's with root's groups in
/// the image's /etc/group (as runc gives a process with no user), never the groups of
/// whoever started berth. None where berth is not root and cannot change ids.
pub(crate) fn process_ids(spec: &Spec) -> Result<Option<(u32, u32, Vec<u32>)>, SandboxError> {
    let mut ids = match &spec.user {
        Some(User(u)) => resolve_user(&spec.rootfs, u)?,
        None if rustix::process::geteuid().is_root() => resolve_user(&spec.rootfs, "0")?,
        None => return Ok(None),
    };
    add_groups(&spec.rootfs, &spec.group_add, &mut ids.2)?;
    Ok(Some(ids))
}

/// Adds `--group-add`'s groups to `groups`, each once: a number as it is, a name through the
/// image's /etc/group (a name it lacks is an error, as docker's).
pub fn add_groups(mounts: &[Mount], names: &[String], groups: &mut Vec<u32>) -> Result<(), SandboxError> {
    if names.is_empty() {
        return Ok(());
    }
    let file = read_in_rootfs(mounts, "etc/group").unwrap_or_default();
    for name in names {
        let gid = group_id(&file, name)?;
        if !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    Ok(())
}

/// Brings up the loopback interface of a fresh network namespace (`ip link set lo up`).
fn loopback_up() -> std::io::Result<()> {
    use rustix::ioctl::{ioctl, Updater};
    const SIOCGIFFLAGS: rustix::ioctl::Opcode = 0x8913;
    const SIOCSIFFLAGS: rustix::ioctl::Opcode = 0x8914;
    const IFF_UP: i16 = 0x1;
    const IFF_RUNNING: i16 = 0x40;
    /// `struct ifreq` with the flags member of its union.
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        _pad: [u8; 22],
    }
    let sock =
        rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None).map_err(errno)?;
    let mut req = IfReq { name: [0; 16], flags: 0, _pad: [0; 22] };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: both opcodes take a `struct ifreq`, which IfReq lays out.
    unsafe { ioctl(&sock, Updater::<SIOCGIFFLAGS, IfReq>::new(&mut req)) }.map_err(errno)?;
    req.flags |= IFF_UP | IFF_RUNNING;
    // SAFETY: as above.
    unsafe { ioctl(&sock, Updater::<SIOCSIFFLAGS, IfReq>::new(&mut req)) }.map_err(errno)?;
    Ok(())
}

pub(crate) fn errno(e: rustix::io::Errno) -> std::io::Error {
    e.into()
}

/// Where the host mounts its cgroup hierarchies.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// docker's /sys/fs/cgroup at `target`: each hierarchy the container joined (for its limits)
/// mounted read-only through its cgroup namespace, whose root is the container's own group,
/// so `memory.limit_in_bytes` or `memory.max` is the container's limit where the JVM, Node.js
/// and Go look for it; on a hybrid or v1 host under a read-only tmpfs. A hierarchy the
/// container did not join is not mounted: its namespace root would be berth's own group.
/// `ro` is empty for docker's `--privileged`, whose cgroups are writable.
fn mount_cgroups(sys: &dyn Sys, target: &Path, joined: &[PathBuf], ro: MountFlags) -> std::io::Result<()> {
    if joined.is_empty() || sys.is_dir(target)? != Some(true) {
        return Ok(());
    }
    let hidden = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | ro;
    if let Some((fstype, _)) = sys.cgroup_mount_at(Path::new(CGROUP_ROOT))? {
        // The unified hierarchy alone (pure v2): it is /sys/fs/cgroup itself.
        return sys.mount(&fstype, target, hidden, None);
    }
    sys.mount("tmpfs", target, MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, Some(c"mode=755"))?;
    let mut names: Vec<&std::ffi::OsStr> = joined
        .iter()
        .filter_map(|procs| procs.strip_prefix(CGROUP_ROOT).ok()?.components().next())
        .map(|c| c.as_os_str())
        .collect();
    names.dedup();
    for name in names {
        let Some((fstype, options)) = sys.cgroup_mount_at(&Path::new(CGROUP_ROOT).join(name))? else { continue };
        let dir = target.join(name);
        sys.mkdir(&dir)?;
        let data = std::ffi::CString::new(options).map_err(std::io::Error::other)?;
        let data = (fstype == "cgroup").then_some(data.as_c_str());
        sys.mount(&fstype, &dir, hidden, data)?;
    }
    if ro.is_empty() {
        return Ok(());
    }
    sys.remount_read_only(target)
}

/// The child's side, between fork and exec.
/// Builds the container's filesystem on `spec.mountpoint` and pivots into it: the rootfs,
/// /proc, /sys (read-only but privileged), a small /dev, runc's masked and read-only paths
/// (none when unmasked), the /etc
/// files, volumes and tmpfs, in runc's order. Every call goes through `sys`; below each new
/// mount it works through the mount's own [`Target`](crate::sys::Target), never through
/// `root` joined with a path the image controls.
fn build_filesystem(sys: &dyn Sys, spec: &Spec) -> std::io::Result<()> {
    let root = &spec.mountpoint;
    let rootfs = spec.rootfs.first().ok_or_else(|| std::io::Error::other("no rootfs to mount"))?;
    sys.mount_rootfs(rootfs, root)?;
    // Without a device cgroup, a node the container reaches or makes (CAP_MKNOD is docker's
    // default) would open the host's device: every mount it could make one on, or reach
    // one through, is nodev.
    let confined = !spec.security.all_devices;
    if confined {
        sys.remount_tree(root, MountFlags::NODEV)?;
    }
    let hidden = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc_dir = mount_in(sys, root, "proc", "proc", hidden, None)?;
    // /sys read-only, as runc mounts it (writable under docker's --privileged): the
    // container sees its own network devices.
    let sys_ro = if spec.security.writable_sys { MountFlags::empty() } else { MountFlags::RDONLY };
    let sys_dir = match mount_in(sys, root, "sys", "sysfs", hidden | sys_ro, None) {
        Ok(d) => d,
        // A rootless berth's user namespace does not own the host's network namespace, so
        // with the host network it may not mount sysfs: the host's is bound read-only, as
        // rootless podman does.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && spec.network == Network::Host => {
            bind_into(sys, root, Path::new("/sys"), "sys", BindOptions::read_only(true))?;
            sys.resolve(root, "sys", true)?
        }
        Err(e) => return Err(e),
    };
    let masked_sys: &[&str] = if spec.security.unmasked_paths { &[] } else { &MASKED_SYS };
    for m in masked_sys {
        let p = sys_dir.path().join(m);
        if sys.is_dir(&p)? == Some(true) {
            sys.mount("tmpfs", &p, MountFlags::RDONLY, Some(c"size=0"))?;
        }
    }
    mount_cgroups(sys, &sys_dir.path().join("fs/cgroup"), &spec.cgroups, sys_ro)?;
    let dev_flags = if confined { MountFlags::NOSUID | MountFlags::NODEV } else { MountFlags::NOSUID };
    let dev_dir = mount_in(sys, root, "dev", "tmpfs", dev_flags, Some(c"mode=755,size=65536k"))?;
    let (proc_dir, dev) = (proc_dir.path(), dev_dir.path());
    populate_dev(sys, dev, spec, confined)?;
    // `--device`: each a bind of the host's node, which the nodev mounts do not cover.
    for d in &spec.devices {
        // A `--privileged` node the host no longer has is left out (`bind_device` still
        // checks the one it binds).
        if d.optional && sys.is_dir(&d.host)?.is_none() {
            continue;
        }
        sys.bind_device(d, sys.resolve(root, &d.container, false)?.path())?;
    }
    // Masked paths: /dev/null over files, an empty read-only tmpfs over directories.
    let (masked, read_only): (&[&str], &[&str]) =
        if spec.security.unmasked_paths { (&[], &[]) } else { (&MASKED, &READ_ONLY) };
    for m in masked {
        let p = proc_dir.join(m);
        match sys.is_dir(&p)? {
            Some(true) => sys.mount("tmpfs", &p, MountFlags::RDONLY, Some(c"size=0"))?,
            Some(false) => sys.bind(Path::new("/dev/null"), &p, false)?,
            None => {}
        }
    }
    for r in read_only {
        let p = proc_dir.join(r);
        if sys.is_dir(&p)?.is_some() {
            sys.bind(&p, &p, true)?;
            sys.remount_read_only(&p)?;
        }
    }
    mount_user_mounts(sys, root, spec, confined)?;
    // The /etc files last, as docker's come after a volume on /etc.
    if let Some(files) = &spec.etc {
        for (name, content) in files.entries() {
            // Written into the container's /dev tmpfs and unlinked once bound: the mount
            // keeps the file, and nothing is left behind on disk or in /dev.
            let staged = dev.join(format!(".berth-{name}"));
            sys.write(&staged, content.as_bytes())?;
            // Read-only with the root, as docker mounts them under --read-only.
            bind_into(sys, root, &staged, &format!("etc/{name}"), BindOptions::read_only(spec.read_only))?;
            sys.unlink(&staged)?;
        }
    }
    if spec.read_only {
        // The working directory is made while the root can still be written, as docker
        // makes `-w`'s at create; the chdir later reports what is wrong with it.
        let _made = sys.resolve(root, spec.cwd.trim_start_matches('/'), true);
        sys.remount_read_only(root)?;
    }
    sys.pivot_root(root)
}

/// The spec's volumes and tmpfs, a parent before what is mounted below it (docker's order:
/// by depth), so that `-v a:/x/y -v b:/x` leaves /x/y on a; all nodev where `confined`.
fn mount_user_mounts(sys: &dyn Sys, root: &Path, spec: &Spec, confined: bool) -> std::io::Result<()> {
    for m in user_mounts(spec) {
        match m {
            UserMount::Volume(v) => {
                // Every volume nodev, read-only ones and files too: a node made through
                // another path to the same directory (another volume, another container, a
                // stage) would open here, and a read-only mount does not keep a device
                // from being written. `--device` is the way to give one.
                let options = BindOptions { read_only: v.read_only, recursive: v.recursive, nodev: confined };
                bind_into(sys, root, &v.host, &v.container, options)?;
            }
            UserMount::Tmpfs(path, opts) => {
                let target = sys.resolve(root, path, true)?;
                let (mut flags, data) =
                    tmpfs_options(opts).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                if confined {
                    // `dev` in the options asks for nodes that open: only a privileged
                    // container gets them, as docker's device cgroup has it.
                    flags |= MountFlags::NODEV;
                }
                let data = std::ffi::CString::new(data).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("tmpfs options {opts:?}"))
                })?;
                sys.mount("tmpfs", target.path(), flags, Some(data.as_c_str()))?;
            }
        }
    }
    Ok(())
}

/// A volume or a tmpfs of the spec, in the order they are mounted.
enum UserMount<'a> {
    Volume(&'a Volume),
    /// A tmpfs: its path and options (`PATH[:OPTIONS]` as docker's --tmpfs takes it).
    Tmpfs(&'a str, &'a str),
}

/// The spec's volumes and tmpfs mounts, fewest path components first (a stable sort: the
/// given order among equals), as docker sorts its mounts.
fn user_mounts(spec: &Spec) -> Vec<UserMount<'_>> {
    let mut all: Vec<(usize, UserMount<'_>)> = spec
        .volumes
        .iter()
        .map(|v| (depth(&v.container), UserMount::Volume(v)))
        .chain(spec.tmpfs.iter().map(|t| {
            let (path, opts) = t.split_once(':').unwrap_or((t.as_str(), "mode=1777"));
            (depth(path), UserMount::Tmpfs(path, opts))
        }))
        .collect();
    all.sort_by_key(|(d, _)| *d);
    all.into_iter().map(|(_, m)| m).collect()
}

/// The number of components of a container path: mounts go on fewest first.
pub(crate) fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").count()
}

/// The size of a container's /dev/shm without `--shm-size`: docker's 64 MiB.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// The container's /dev, on its fresh tmpfs `dev`: docker's device nodes, the fd links,
/// /dev/shm (`shm_size` bytes, docker's 64 MiB by default) and a pty instance of its own.
/// The nodes are the host's, bound, where /dev is `confined` (nodev); otherwise made.
fn populate_dev(sys: &dyn Sys, dev: &Path, spec: &Spec, confined: bool) -> std::io::Result<()> {
    for (node, major, minor) in DEVICES {
        let target = dev.join(node);
        // Where device nodes would not open (nodev) or cannot be made (a user namespace,
        // a seccomp filter), the host's are bound.
        let made = !confined
            && match sys.mknod_char(&target, major, minor) {
                Ok(()) => true,
                Err(e)
                    if matches!(
                        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
                        Some(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS | rustix::io::Errno::NOSYS)
                    ) =>
                {
                    false
                }
                Err(e) => return Err(e),
            };
        if !made {
            sys.write(&target, b"")?;
            sys.bind(&Path::new("/dev").join(node), &target, false)?;
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(target, &dev.join(link))?;
    }
    mount_shm(sys, &dev.join("shm"), spec)?;
    // The container's own pty instance: /dev/pts and /dev/ptmx, as runc makes them.
    let pts = dev.join("pts");
    sys.mkdir(&pts)?;
    sys.mount("devpts", &pts, MountFlags::NOSUID | MountFlags::NOEXEC, Some(c"newinstance,ptmxmode=0666,mode=0620"))?;
    sys.symlink("pts/ptmx", &dev.join("ptmx"))?;
    Ok(())
}

/// docker's /dev/shm at `shm`, as `--ipc` has it: a tmpfs every user may write (POSIX shared
/// memory) of `--shm-size`; the host's or another container's, bound; none for `--ipc none`.
fn mount_shm(sys: &dyn Sys, shm: &Path, spec: &Spec) -> std::io::Result<()> {
    if let Ipc::Own { shm: false } = spec.ipc {
        return Ok(());
    }
    sys.mkdir(shm)?;
    match &spec.ipc {
        Ipc::Own { .. } => {
            let data = std::ffi::CString::new(format!("mode=1777,size={}", spec.shm_size.unwrap_or(DEFAULT_SHM_SIZE)))
                .map_err(std::io::Error::other)?;
            sys.mount("tmpfs", shm, MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, Some(&data))
        }
        // nosuid, nodev and noexec, as docker's /dev/shm, whatever the host's is.
        Ipc::Host => {
            sys.bind(Path::new("/dev/shm"), shm, false)?;
            sys.remount_tree(shm, MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC)
        }
        // A mount of another namespace cannot be bound from here: it is copied there (and
        // made private, nosuid, nodev and noexec on the way).
        Ipc::Join { mnt, .. } => sys.bind_from_namespace(mnt.as_fd(), Path::new("/dev/shm"), shm),
    }
}

/// A tmpfs's mount flags (`ro`, `noexec`, `exec`, ... as mount(8) spells them; nosuid and
/// nodev unless `suid`/`dev`) and the options left for the filesystem (`size=`, `mode=`).
fn tmpfs_options(opts: &str) -> Result<(MountFlags, String), String> {
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let (on, off) = match o {
            "rw" => (MountFlags::empty(), MountFlags::RDONLY),
            "ro" => (MountFlags::RDONLY, MountFlags::empty()),
            "noexec" => (MountFlags::NOEXEC, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::NOEXEC),
            "nosuid" => (MountFlags::NOSUID, MountFlags::empty()),
            "suid" => (MountFlags::empty(), MountFlags::NOSUID),
            "nodev" => (MountFlags::NODEV, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::NODEV),
            "noatime" => (MountFlags::NOATIME, MountFlags::empty()),
            "atime" => (MountFlags::empty(), MountFlags::NOATIME),
            "nodiratime" => (MountFlags::NODIRATIME, MountFlags::empty()),
            "diratime" => (MountFlags::empty(), MountFlags::NODIRATIME),
            "relatime" => (MountFlags::RELATIME, MountFlags::empty()),
            "norelatime" => (MountFlags::empty(), MountFlags::RELATIME),
            "strictatime" => (MountFlags::STRICTATIME, MountFlags::empty()),
            "nostrictatime" => (MountFlags::empty(), MountFlags::STRICTATIME),
            "sync" => (MountFlags::SYNCHRONOUS, MountFlags::empty()),
            "async" => (MountFlags::empty(), MountFlags::SYNCHRONOUS),
            "dirsync" => (MountFlags::DIRSYNC, MountFlags::empty()),
            "defaults" => (MountFlags::empty(), MountFlags::empty()),
            // What tmpfs itself takes, as docker admits it.
            other if TMPFS_DATA.contains(&other.split('=').next().unwrap_or(other)) => {
                data.push(other);
                continue;
            }
            other => return Err(format!("invalid tmpfs option {other:?}")),
        };
        flags.insert(on);
        flags.remove(off);
    }
    if !data.iter().any(|o| o.starts_with("mode=")) {
        data.push("mode=1777");
    }
    Ok((flags, data.join(",")))
}

/// The tmpfs options docker's `--tmpfs` passes on to the filesystem.
const TMPFS_DATA: [&str; 7] = ["size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"];

/// Checks a `--tmpfs PATH[:OPTIONS]` before anything starts: an absolute path and options
/// docker admits (flag words and tmpfs's own `size=`, `mode=`, ...).
pub fn check_tmpfs(flag: &str) -> Result<(), String> {
    let (path, opts) = flag.split_once(':').unwrap_or((flag, ""));
    if !path.starts_with('/') {
        return Err(format!("--tmpfs {flag}: the path must be absolute"));
    }
    tmpfs_options(opts).map(drop).map_err(|e| format!("--tmpfs {flag}: {e}"))
}

/// docker's `--tmpfs` defaults, `noexec,nosuid,nodev`, put in front of the options of
/// `PATH[:OPTIONS]`, which can turn them off (`/x:exec`) as docker merges them. Only
/// `berth run` takes them: a build's `RUN --mount=type=tmpfs` keeps BuildKit's exec.
pub fn with_docker_tmpfs_defaults(flag: &str) -> String {
    match flag.split_once(':') {
        Some((path, opts)) if !opts.is_empty() => format!("{path}:{DOCKER_TMPFS_DEFAULTS},{opts}"),
        Some((path, _)) => format!("{path}:{DOCKER_TMPFS_DEFAULTS}"),
        None => format!("{flag}:{DOCKER_TMPFS_DEFAULTS}"),
    }
}

/// The mount flags docker gives every `--tmpfs` before the user's own options.
const DOCKER_TMPFS_DEFAULTS: &str = "noexec,nosuid,nodev";

/// The longest host name the kernel takes (`HOST_NAME_MAX`).
pub const HOST_NAME_MAX: usize = 64;

fn enter(spec: &Spec, confinement: &crate::security::Confinement) -> std::io::Result<()> {
    // docker's umask, whatever berth was started with: the files and mount points made
    // below, and the container's own, are readable by its other users.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    // Join the limits first, so that nothing the container does escapes them.
    for procs in &spec.cgroups {
        std::fs::write(procs, "0")?;
    }
    // If berth dies, so does the container (and with it every mount of its namespace).
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).map_err(errno)?;
    // The cgroup namespace comes after joining the limits: its root is the container's group.
    let mut flags = UnshareFlags::NEWNS;
    if spec.uts == Namespace::Own {
        flags |= UnshareFlags::NEWUTS;
    }
    if spec.cgroupns == Namespace::Own {
        flags |= UnshareFlags::NEWCGROUP;
    }
    if spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    if matches!(spec.ipc, Ipc::Own { .. }) {
        flags |= UnshareFlags::NEWIPC;
    }
    // SAFETY: we are the only thread of the freshly forked child.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(errno)?;
    if let Ipc::Join { ns, .. } = &spec.ipc {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::InterProcessCommunication),
        )
        .map_err(errno)?;
    }
    match spec.network {
        Network::None => {
            loopback_up()?;
            crate::network::set_namespace_sysctls()?;
        }
        Network::Join(fd) => {
            // SAFETY: the fd was opened by the parent and stays open until exec.
            let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            rustix::thread::move_into_link_name_space(ns, Some(rustix::thread::LinkNameSpaceType::Network))
                .map_err(errno)?;
        }
        Network::Host => {}
    }
    // In the container's network and IPC namespaces now, whose settings these are.
    crate::sysctl::write_all(&spec.sysctls)?;
    rustix::mount::mount_change(Path::new("/"), MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
        .map_err(errno)?;
    // Masked files get /dev/null: check that it is the real one (1:3) first.
    let null = std::fs::metadata("/dev/null")?;
    if std::os::unix::fs::MetadataExt::rdev(&null) != rustix::fs::makedev(1, 3) {
        return Err(std::io::Error::other("/dev/null is not the null device"));
    }
    build_filesystem(&crate::sys::Linux, spec).map_err(|e| SetupStage::Filesystem.mark(e))?;
    if spec.uts == Namespace::Own {
        rustix::system::sethostname(spec.hostname.as_bytes()).map_err(errno)?;
    }
    become_process(spec, confinement).map_err(|e| SetupStage::Process.mark(e))
}

/// The second half of a start, shared with `exec` (which joins namespaces instead of making
/// them): bounding set, user and groups, working directory, capabilities, limits, the init
/// or the pty; the seccomp filter right after the bounding set (docker's default, no
/// no_new_privs) or, with no_new_privs, last.
pub(crate) fn become_process(spec: &Spec, confinement: &crate::security::Confinement) -> std::io::Result<()> {
    // Signals berth's caller ignored (`nohup`, `cmd &`) or blocked are not the container's.
    default_signals()?;
    if spec.console_socket.is_none() {
        // A session of its own, without a controlling terminal: the caller's terminal is
        // only its stdout, so the container cannot push input into it (TIOCSTI) or take it
        // over. With a console, `attach_pty` makes the session and gives it the pty.
        rustix::process::setsid().map_err(errno)?;
    }
    if let Some(adj) = spec.oom_score_adj {
        // Before the user and the capabilities change: lowering it needs CAP_SYS_RESOURCE.
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())?;
    }
    let root = rustix::process::geteuid().is_root();
    if root {
        // Before the user changes: a non-root user keeps the bounding set alone.
        confinement.restrict_bounding()?;
    }
    // A working directory the image lacks is made, as docker and runc make it (still as
    // root, inside the container's root).
    if spec.make_cwd && rustix::fs::stat(spec.cwd.as_str()).is_err() {
        let _made = std::fs::create_dir_all(&spec.cwd);
    }
    // Without no_new_privs the filter needs CAP_SYS_ADMIN, which the user change drops: load
    // it now, as runc does. Every call that follows (setgroups, setres[ug]id, prctl,
    // chdir, capset, prlimit64, clone for the init, the pty's open and ioctls, close_range,
    // execve) is in docker's default profile; a custom profile must allow them too.
    let filtered = confinement.load_seccomp_early()?;
    if let Some(ids) = &spec.ids {
        // The kernel clears the parent-death signal when the ids change: set it again, or
        // a container with a USER would outlive berth.
        let death = rustix::process::parent_process_death_signal().map_err(errno)?;
        become_user(ids)?;
        rustix::process::set_parent_process_death_signal(death).map_err(errno)?;
    }
    rustix::process::chdir(spec.cwd.as_str()).map_err(|e| SetupStage::Workdir.mark(e.into()))?;
    if rustix::process::geteuid().is_root() {
        confinement.set_capabilities()?;
    }
    // Open files: docker's 1048576, then --ulimit; never above the hard limits berth was
    // given (raising them fails, and this machine's open-files limit is 20000).
    crate::rlimit::apply(&spec.ulimits)?;
    confinement.set_no_new_privs(filtered)?;
    if spec.init {
        // The init is confined too: the filter is on before the fork (what follows,
        // a pty and close_range, is allowed by every profile docker ships).
        confinement.finish(filtered)?;
        // SAFETY: this is the single-threaded child between fork and exec; the branch that
        // stays behind only makes async-signal-safe calls and never returns.
        match unsafe { libc::fork() } {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            command => init(command),
        }
    }
    if let Some(socket) = spec.console_socket {
        attach_pty(socket, spec.console_size)?;
    }
    // No descriptor of berth's reaches the command, whoever opened it without
    // close-on-exec (berth's own parent included): all but stdio close at exec.
    // SAFETY: marking descriptors close-on-exec frees nothing that is in use before exec.
    if unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !spec.init {
        // With no_new_privs, the last step before exec: as little of berth's own setup as
        // possible runs under the filter.
        confinement.finish(filtered)?;
    }
    Ok(())
}

/// Every signal back to its default action and none blocked, as a fresh process has them.
fn default_signals() -> std::io::Result<()> {
    // SAFETY: rt_sigaction with a zeroed kernel structure (SIG_DFL, no flags, empty mask;
    // larger than any architecture's) and sigprocmask with an empty set; between fork and
    // exec no handler of berth's is needed. The raw call reaches the signals glibc keeps
    // for itself too (32 and 33), which its sigaction refuses.
    unsafe {
        let default = [0u64; 8];
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            libc::syscall(libc::SYS_rt_sigaction, sig, default.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes the user's groups, then its group, then its uid (real, effective and saved): the
/// last step of a process's identity, for the sandbox and the chroot executor alike.
pub(crate) fn become_user((uid, gid, groups): &(u32, u32, Vec<u32>)) -> std::io::Result<()> {
    let only_primary = groups.iter().all(|g| g == gid);
    let groups: Vec<_> = groups.iter().map(|g| rustix::fs::Gid::from_raw(*g)).collect();
    match rustix::thread::set_thread_groups(&groups) {
        Ok(()) => {}
        // A user namespace that maps one id denies setgroups (/proc/self/setgroups): with
        // no supplementary group asked for, there is none to drop.
        Err(rustix::io::Errno::PERM) if only_primary && setgroups_denied() => {}
        Err(e) => return Err(errno(e)),
    }
    let gid = rustix::fs::Gid::from_raw(*gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(errno)?;
    let uid = rustix::fs::Uid::from_raw(*uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(errno)
}

/// Whether this process's user namespace forbids setgroups(2).
fn setgroups_denied() -> bool {
    // Read with plain syscalls: this runs between fork and exec.
    let Ok(fd) = rustix::fs::open("/proc/self/setgroups", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()) else {
        return false;
    };
    let mut buf = [0u8; 8];
    rustix::io::read(&fd, &mut buf).is_ok_and(|n| buf[..n].starts_with(b"deny"))
}

/// Opens a pty in the container's devpts, makes its slave the command's stdio and
/// controlling terminal, and sends the master to berth over `socket`.
fn attach_pty(socket: i32, (rows, cols): (u16, u16)) -> std::io::Result<()> {
    use rustix::pty::{ioctl_tiocgptpeer, openpt, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(errno)?;
    unlockpt(&master).map_err(errno)?;
    // Sized before the command runs: it must never see 0x0.
    let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(&master, size).map_err(errno)?;
    let slave = ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY).map_err(errno)?;
    rustix::process::setsid().map_err(errno)?;
    rustix::process::ioctl_tiocsctty(&slave).map_err(errno)?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the stdio numbers of this process, which the exec keeps.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&slave), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: the socket number was inherited from berth and stays open until exec.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) };
    let fds = [std::os::fd::AsFd::as_fd(&master)];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(socket, &[std::io::IoSlice::new(b"t")], &mut control, rustix::net::SendFlags::empty())
        .map_err(errno)?;
    Ok(())
}

/// Receives the pty master that [`attach_pty`] sends over a console socket: the other end
/// of [`Spec::console_socket`], for `berth run -t`, `exec -t` and a detached container's
/// supervisor.
pub fn receive_pty(socket: &std::os::unix::net::UnixStream) -> std::io::Result<std::os::fd::OwnedFd> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    loop {
        // A signal (SIGWINCH, SIGCHLD) may interrupt the wait; the message is still coming.
        match rustix::net::recvmsg(
            socket,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => break,
        }
    }
    for msg in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(std::io::Error::other("the container sent no pty"))
}

/// The command's pid, for the init's signal handler.
static INIT_CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = INIT_CHILD.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// PID 1 of a container run with `--init`: forwards signals to the command, reaps every
/// orphan that is reparented to it, and exits as the command did (128 + N for signal N).
fn init(command: libc::pid_t) -> ! {
    INIT_CHILD.store(command, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: only async-signal-safe calls from here on (prctl, memory writes, close_range,
    // sigaction, waitpid, _exit); the handler only reads an atomic and calls kill.
    unsafe {
        // The init is a fork of berth, never exec'd: its memory is berth's. Not dumpable,
        // so the container cannot read it (/proc/1/mem, /proc/1/environ), and berth's
        // environment wiped from it (the container's own is the command's).
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        // Not PID 1 in the host's or another container's PID namespace (`--pid`): the
        // command's orphans come to it all the same.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        wipe_environment();
        // The exec-status pipe of the spawn (and anything else) must not stay open here,
        // or the parent would wait for this process to exec.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        for sig in
            [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH]
        {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                let code =
                    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                libc::_exit(code);
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(127);
            }
        }
    }
}

/// Overwrites the bytes of every environment string of this process with zeros.
///
/// # Safety
/// Only in a single-threaded process that reads no environment variable afterwards.
unsafe fn wipe_environment() {
    extern "C" {
        static mut environ: *const *mut libc::c_char;
    }
    // SAFETY: the caller guarantees no other thread; `environ` is a null-terminated array
    // of null-terminated strings.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let s = *entry;
            std::ptr::write_bytes(s, 0, libc::strlen(s));
            entry = entry.add(1);
        }
    }
}

/// Runs the process to its end and returns its exit code (128 + N when killed by signal N).
pub fn run(spec: &Spec) -> Result<i32, SandboxError> {
    let mut child = spawn(spec)?;
    let status = child.wait().map_err(|e| SandboxError::Start { what: "wait", source: e })?;
    Ok(exit_code(status))
}

/// The exit code docker reports for a status: the code, or 128 + the signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Starts the process and returns it, for callers that forward signals or time it out.
pub fn spawn(spec: &Spec) -> Result<std::process::Child, SandboxError> {
    command(spec)?.spawn().map_err(|e| SandboxError::exec_failed(&spec.args[0], e))
}

/// The command that starts the process, for callers that choose its stdio before spawning.
///
/// The calling thread enters the container's PID namespace for its children (a new one,
/// unless `--pid` shares one): it may spawn this one command and must create no threads
/// afterwards (see [`crate::exec::NamespaceExecutor`]
/// for a caller that runs each command on a thread of its own).
pub fn command(spec: &Spec) -> Result<Command, SandboxError> {
    // Resolve the user first: an error must be reported with its message, which an
    // error in the forked child (only an errno crosses back) could not carry.
    let mut child_spec = spec.clone();
    child_spec.ids = process_ids(spec)?;
    if spec.args.is_empty() {
        return Err(SandboxError::Start {
            what: "exec",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
        });
    }
    // The filter is compiled here, before the fork: the child only hands it to the kernel.
    let confinement = spec.security.prepare()?;
    enter_pid_namespace(&spec.pid)?;
    let mut cmd = process_command(spec);
    // SAFETY: `enter` only makes syscalls and small allocations (glibc's fork keeps malloc
    // usable in the child).
    unsafe {
        cmd.pre_exec(move || enter(&child_spec, &confinement).map_err(|e| SetupStage::Namespaces.mark(e)));
    }
    Ok(cmd)
}

/// Makes the calling thread's children start in `pid`'s namespace: a new one, where the
/// container's first process is PID 1, another container's, or (for the host's) the
/// thread's own.
fn enter_pid_namespace(pid: &Pid) -> Result<(), SandboxError> {
    let failed = |what| move |e: rustix::io::Errno| SandboxError::Start { what, source: e.into() };
    match pid {
        // SAFETY: the caller spawns only this command from this thread and creates no
        // threads from it afterwards (documented on [`command`]).
        Pid::Own => {
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }.map_err(failed("new PID namespace"))
        }
        Pid::Host => Ok(()),
        Pid::Join(ns) => {
            rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::ProcessID))
                .map_err(failed("join the PID namespace"))
        }
    }
}

/// The command for `spec`'s program, arguments and environment (nothing of berth's own). A
/// bare program name is looked up by execvp in the container, on the PATH of its environment.
/// Callers must not call `env` on it: std would then replace the environment set here.
pub(crate) fn process_command(spec: &Spec) -> Command {
    let mut cmd = Command::new(&spec.args[0]);
    cmd.args(&spec.args[1..]);
    // In the given order; a name given twice keeps its first place and its last value (as
    // std's sorted map gave the last).
    let mut env: Vec<&str> = Vec::with_capacity(spec.env.len() + 1);
    let mut at = std::collections::HashMap::with_capacity(spec.env.len());
    for kv in &spec.env {
        let Some((key, _)) = kv.split_once('=') else { continue };
        match at.get(key) {
            Some(&i) => env[i] = kv.as_str(),
            None => {
                at.insert(key, env.len());
                env.push(kv);
            }
        }
    }
    let home = format!("HOME={}", home(&spec.rootfs, spec.user.as_ref()));
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        env.push(&home);
    }
    let environ = Environ::new(&env);
    // SAFETY: `install` only stores a pointer to memory the closure owns (see `Environ`).
    unsafe {
        cmd.pre_exec(move || environ.as_ref().map(Environ::install).map_err(|e| std::io::Error::other(e.clone())));
    }
    cmd
}

/// A process environment in the order it is given, as docker and runc pass it (std's
/// `Command::env` would sort it by name): the strings and the null-terminated array of
/// pointers to them that becomes `environ` in the child, just before the exec.
struct Environ {
    _strings: Vec<std::ffi::CString>,
    pointers: Vec<*const std::ffi::c_char>,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and never changed
// after `new`; they are only read (by the exec, in the forked child).
unsafe impl Send for Environ {}
// SAFETY: as above.
unsafe impl Sync for Environ {}

impl Environ {
    /// The environment of `vars` (`KEY=VALUE` each); an error names a variable with a NUL byte.
    fn new(vars: &[&str]) -> Result<Environ, String> {
        let strings = vars
            .iter()
            .map(|kv| std::ffi::CString::new(*kv).map_err(|_| format!("environment variable {kv:?} holds a NUL byte")))
            .collect::<Result<Vec<_>, _>>()?;
        let pointers = strings.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        Ok(Environ { _strings: strings, pointers })
    }

    /// Makes this the process's environment: called in the forked child before the exec,
    /// which std then makes with `execvp` and the environment it finds (it sets none of its
    /// own: `env` is never called on the command).
    fn install(&self) {
        extern "C" {
            static mut environ: *const *const std::ffi::c_char;
        }
        // SAFETY: the child is single-threaded after fork; the array is null-terminated and
        // outlives the exec (the closure owning it lives until `spawn` returns).
        unsafe { environ = self.pointers.as_ptr() };
    }
}

/// The HOME of a process whose environment sets none, as runc gives it: the user's home
/// directory in the image's /etc/passwd (root's for no user), else `/`.
fn home(mounts: &[Mount], user: Option<&User>) -> String {
    let u = user.map_or("0", |User(u)| u.split(':').next().unwrap_or(u));
    let passwd = read_in_rootfs(mounts, "etc/passwd").unwrap_or_default();
    let home = passwd_entry(&passwd, u).and_then(|f| f.get(5).copied()).filter(|h| !h.is_empty());
    home.unwrap_or("/").to_owned()
}

/// The fields of the /etc/passwd line of `user`, a name or a uid (at least four fields).
fn passwd_entry<'a>(passwd: &'a str, user: &str) -> Option<Vec<&'a str>> {
    passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 3 && (f[0] == user || f[2] == user))
}

/// The lines docker's /etc/hosts starts with.
const DOCKER_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                            fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
                            ff02::2\tip6-allrouters\n";

/// An `--add-host` entry of `run` and `build`: a name and its address in /etc/hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    /// The name.
    pub host: String,
    /// The address; None for docker's `host-gateway`, the host as the container reaches it.
    pub ip: Option<std::net::IpAddr>,
}

impl std::fmt::Display for ExtraHost {
    /// docker's normal form, `HOST:IP`, as `inspect` shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{}:{ip}", self.host),
            None => write!(f, "{}:host-gateway", self.host),
        }
    }
}

impl std::str::FromStr for ExtraHost {
    type Err = String;

    /// docker's `HOST:IP` (an IPv6 address after the first `:`, bracketed or not), `HOST=IP`,
    /// and `host-gateway` for IP.
    fn from_str(s: &str) -> Result<ExtraHost, String> {
        let (host, ip) = s
            .split_once('=')
            .or_else(|| s.split_once(':'))
            .ok_or_else(|| format!("bad format for add-host: {s:?} (HOST:IP)"))?;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(format!("invalid hostname in add-host: {host:?}"));
        }
        let ip = match ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip) {
            "host-gateway" => None,
            ip => Some(ip.parse().map_err(|_| format!("invalid IP address in add-host: {ip:?}"))?),
        };
        Ok(ExtraHost { host: host.to_owned(), ip })
    }
}

/// The container's /etc/hosts, /etc/resolv.conf and /etc/hostname, as docker writes them.
///
/// They are written into the container's own /dev tmpfs and bound from there, so a run
/// writes nothing to disk for them and leaves nothing to clean up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// /etc/hosts: localhost and the hostname.
    pub hosts: String,
    /// /etc/resolv.conf: the host's with the host network, empty without a network.
    pub resolv_conf: String,
    /// /etc/hostname.
    pub hostname: String,
}

impl EtcFiles {
    /// docker's files for a container on the bridge at `ip`: its address in /etc/hosts, and
    /// the host's name servers that it can reach (see [`crate::network::resolv_conf`]).
    pub fn bridged(hostname: &str, net: &crate::network::Attachment) -> EtcFiles {
        let ip = net.ip;
        EtcFiles {
            hosts: format!("{DOCKER_HOSTS}{ip}\t{hostname}\n"),
            resolv_conf: net.resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
            hostname: format!("{hostname}\n"),
        }
    }

    /// docker's files for a container called `hostname`.
    pub fn new(hostname: &str, host_network: bool) -> EtcFiles {
        EtcFiles {
            hosts: format!("{DOCKER_HOSTS}127.0.1.1\t{hostname}\n"),
            // A host without /etc/resolv.conf gives the container none either; without a
            // network there are no name servers to reach.
            resolv_conf: if host_network {
                std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
            } else {
                String::new()
            },
            hostname: format!("{hostname}\n"),
        }
    }

    /// The same with a copy of the host's /etc/hosts, as docker gives a container on the
    /// host's network (these files stay when the host has none).
    pub fn with_hosts_of_host(self) -> EtcFiles {
        match std::fs::read_to_string("/etc/hosts") {
            Ok(hosts) => EtcFiles { hosts, ..self },
            Err(_) => self,
        }
    }

    /// The same with `--add-host` lines, `host-gateway` written as `gateway` (the host as
    /// the container reaches it): after docker's own lines and before the container's own
    /// name, as docker orders them (so they can also give the container's name another
    /// address).
    pub fn with_extra_hosts(mut self, extra: &[ExtraHost], gateway: std::net::IpAddr) -> EtcFiles {
        if extra.is_empty() {
            return self;
        }
        let own = format!("\t{}", self.hostname.trim_end());
        let body = self.hosts.trim_end_matches('\n');
        let (head, last) = match body.rsplit_once('\n') {
            Some((head, last)) if last.ends_with(&own) => (format!("{head}\n"), format!("{last}\n")),
            _ => (format!("{body}\n"), String::new()),
        };
        let lines: String = extra.iter().map(|h| format!("{}\t{}\n", h.ip.unwrap_or(gateway), h.host)).collect();
        self.hosts = head + &lines + &last;
        self
    }

    /// The files' names under /etc, in the order they are bound.
    pub(crate) const NAMES: [&'static str; 3] = ["hosts", "resolv.conf", "hostname"];

    /// Each file's name under /etc and its content, in the order they are bound.
    pub(crate) fn entries(&self) -> [(&'static str, &str); 3] {
        let [hosts, resolv_conf, hostname] = Self::NAMES;
        [(hosts, &self.hosts), (resolv_conf, &self.resolv_conf), (hostname, &self.hostname)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recording double: every call as a line. In its /proc, acpi, asound, scsi, bus,
    /// fs, irq and sys are directories, sysrq-trigger and timer_stats are missing, the rest
    /// are files; everything under /sys and /host (volume sources) is a directory.
    #[derive(Default)]
    struct Recorder {
        calls: std::cell::RefCell<Vec<String>>,
        /// Answer mknod with EPERM, as inside a user namespace.
        no_mknod: bool,
    }

    impl Recorder {
        fn log(&self, line: String) -> std::io::Result<()> {
            self.calls.borrow_mut().push(line);
            Ok(())
        }

        fn position(&self, line: &str) -> usize {
            let calls = self.calls.borrow();
            calls.iter().position(|c| c == line).unwrap_or_else(|| panic!("no call {line:?} in {calls:#?}"))
        }
    }

    impl Sys for Recorder {
        fn mount_rootfs(&self, _: &Mount, target: &Path) -> std::io::Result<()> {
            self.log(format!("rootfs {}", target.display()))
        }
        fn mount(
            &self,
            fstype: &str,
            target: &Path,
            flags: MountFlags,
            _: Option<&std::ffi::CStr>,
        ) -> std::io::Result<()> {
            let nodev = if flags.contains(MountFlags::NODEV) { " nodev" } else { "" };
            let ro = if flags.contains(MountFlags::RDONLY) { " ro" } else { "" };
            self.log(format!("mount {fstype} {}{nodev}{ro}", target.display()))
        }
        fn bind(&self, source: &Path, target: &Path, recursive: bool) -> std::io::Result<()> {
            let only = if recursive { "" } else { " (one mount)" };
            self.log(format!("bind {} {}{only}", source.display(), target.display()))
        }
        fn remount_read_only(&self, target: &Path) -> std::io::Result<()> {
            self.log(format!("remount-ro {}", target.display()))
        }
        fn remount_tree(&self, target: &Path, flags: MountFlags) -> std::io::Result<()> {
            let words = [
                (MountFlags::NOSUID, " nosuid"),
                (MountFlags::NODEV, " nodev"),
                (MountFlags::NOEXEC, " noexec"),
                (MountFlags::RDONLY, " ro"),
            ];
            let said: String = words.iter().filter(|(f, _)| flags.contains(*f)).map(|(_, w)| *w).collect();
            self.log(format!("tree{said} {}", target.display()))
        }
        fn bind_device(&self, d: &crate::device::Device, target: &Path) -> std::io::Result<()> {
            self.log(format!("bind-device {} {}", d.host.display(), target.display()))
        }
        fn bind_from_namespace(
            &self,
            _: std::os::fd::BorrowedFd<'_>,
            source: &Path,
            target: &Path,
        ) -> std::io::Result<()> {
            self.log(format!("bind-from-namespace {} {}", source.display(), target.display()))
        }
        fn resolve(&self, root: &Path, rel: &str, _: bool) -> std::io::Result<Target> {
            Ok(Target::plain(root.join(rel.trim_start_matches('/'))))
        }
        fn is_dir(&self, path: &Path) -> std::io::Result<Option<bool>> {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            Ok(if path.starts_with("/c/proc") {
                // This /proc has no sysrq-trigger and no timer_stats.
                (!["sysrq-trigger", "timer_stats"].contains(&name))
                    .then(|| ["acpi", "asound", "scsi", "bus", "fs", "irq", "sys"].contains(&name))
            } else if path.starts_with("/c/sys") || path.starts_with("/host") {
                Some(true)
            } else if path.to_string_lossy().starts_with("/c/dev/.berth-") {
                Some(false)
            } else {
                None
            })
        }
        fn write(&self, path: &Path, _: &[u8]) -> std::io::Result<()> {
            self.log(format!("write {}", path.display()))
        }
        fn mknod_char(&self, path: &Path, major: u32, minor: u32) -> std::io::Result<()> {
            if self.no_mknod {
                return Err(std::io::Error::from_raw_os_error(rustix::io::Errno::PERM.raw_os_error()));
            }
            self.log(format!("mknod {} {major}:{minor}", path.display()))
        }
        fn symlink(&self, target: &str, link: &Path) -> std::io::Result<()> {
            self.log(format!("symlink {} -> {target}", link.display()))
        }
        fn mkdir(&self, path: &Path) -> std::io::Result<()> {
            self.log(format!("mkdir {}", path.display()))
        }
        fn unlink(&self, path: &Path) -> std::io::Result<()> {
            self.log(format!("unlink {}", path.display()))
        }
        fn pivot_root(&self, root: &Path) -> std::io::Result<()> {
            self.log(format!("pivot_root {}", root.display()))
        }
        fn cgroup_mount_at(&self, dir: &Path) -> std::io::Result<Option<(String, String)>> {
            // A hybrid host: v1 controllers under a tmpfs, as this VM's.
            let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                             39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";
            Ok(crate::sys::cgroup_mount_in(mountinfo, dir))
        }
    }

    fn spec(read_only: bool) -> Spec {
        Spec {
            rootfs: vec![Mount::Bind { source: "/snap".into(), read_only: false }],
            mountpoint: "/c".into(),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: None,
            ids: None,
            hostname: "box".into(),
            network: Network::None,
            volumes: vec![Volume {
                host: "/host/data".into(),
                container: "/data".into(),
                read_only: true,
                recursive: BindRecursive::Enabled,
            }],
            tmpfs: vec!["/run:size=1m".into()],
            ulimits: vec![],
            read_only,
            etc: Some(EtcFiles::new("box", false)),
            cgroups: vec![],
            init: false,
            console_socket: None,
            console_size: (24, 80),
            security: Default::default(),
            shm_size: None,
            group_add: vec![],
            make_cwd: true,
            devices: vec![],
            sysctls: vec![],
            ipc: Default::default(),
            pid: Default::default(),
            uts: Default::default(),
            cgroupns: Default::default(),
            oom_score_adj: None,
        }
    }

    #[test]
    fn the_process_gets_its_environment_in_the_given_order_with_each_name_once() {
        let mut s = spec(false);
        s.args = vec!["env".into()];
        s.env = ["ZED=1", "PATH=/usr/bin:/bin", "ALPHA=2", "ZED=3", "BARE"].map(String::from).to_vec();
        // `env` is found on the given PATH and prints what the exec handed it: none of the
        // test process's own variables, the given ones in order, a name given twice once.
        let out = process_command(&s).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(printed, "ZED=3\nPATH=/usr/bin:/bin\nALPHA=2\nHOME=/\n");
    }

    #[test]
    fn the_filesystem_is_built_in_runcs_order() {
        let sys = Recorder::default();
        build_filesystem(&sys, &spec(true)).unwrap();
        let at = |line: &str| sys.position(line);
        assert_eq!(at("rootfs /c"), 0, "the rootfs comes first");
        let last = sys.calls.borrow().len() - 1;
        assert_eq!(at("pivot_root /c"), last, "pivot_root comes last");
        assert!(
            at("mount proc /c/proc nodev") < at("bind /dev/null /c/proc/keys (one mount)"),
            "masks go on the new /proc"
        );
        assert!(at("mount sysfs /c/sys nodev ro") < at("mount tmpfs /c/sys/firmware ro"));
        at("mount tmpfs /c/sys/devices/virtual/powercap ro");
        at("mount tmpfs /c/proc/acpi ro");
        assert!(at("bind /c/proc/sys /c/proc/sys") < at("remount-ro /c/proc/sys"));
        // No device cgroup: the root, /dev and what the container writes are nodev, and /dev's
        // nodes are the host's.
        assert_eq!(at("tree nodev /c"), 1, "the root is nodev before anything is mounted in it");
        assert!(at("mount tmpfs /c/dev nodev") < at("write /c/dev/null"));
        assert!(at("write /c/dev/null") < at("bind /dev/null /c/dev/null (one mount)"));
        at("bind /dev/urandom /c/dev/urandom (one mount)");
        at("bind /dev/tty /c/dev/tty (one mount)");
        assert!(at("mkdir /c/dev/pts") < at("mount devpts /c/dev/pts"));
        // /etc files: staged in /dev's tmpfs, bound, then unlinked.
        let (w, b, u) = (
            at("write /c/dev/.berth-hosts"),
            at("bind /c/dev/.berth-hosts /c/etc/hosts"),
            at("unlink /c/dev/.berth-hosts"),
        );
        assert!(w < b && b < u);
        assert!(
            at("bind /host/data /c/data") < at("tree nodev ro /c/data"),
            "a :ro volume is bound, then made read-only and nodev all the way down in one go"
        );
        at("mount tmpfs /c/run nodev");
        assert_eq!(at("remount-ro /c"), last - 1, "--read-only: the root is made read-only after every mount in it");
    }

    #[test]
    fn the_hierarchies_a_container_joined_are_mounted_read_only_in_its_sys_fs_cgroup() {
        let sys = Recorder::default();
        let mut s = spec(false);
        s.cgroups = ["/sys/fs/cgroup/memory/berth/x/cgroup.procs", "/sys/fs/cgroup/pids/berth/x/cgroup.procs"]
            .map(PathBuf::from)
            .to_vec();
        build_filesystem(&sys, &s).unwrap();
        let at = |line: &str| sys.position(line);
        assert!(at("mount sysfs /c/sys nodev ro") < at("mount tmpfs /c/sys/fs/cgroup nodev"));
        assert!(at("mkdir /c/sys/fs/cgroup/memory") < at("mount cgroup /c/sys/fs/cgroup/memory nodev ro"));
        at("mount cgroup /c/sys/fs/cgroup/pids nodev ro");
        assert!(at("mount cgroup /c/sys/fs/cgroup/pids nodev ro") < at("remount-ro /c/sys/fs/cgroup"));
        // Nothing joined (no limits): no hierarchy, whose namespace root would be berth's.
        let sys = Recorder::default();
        build_filesystem(&sys, &spec(false)).unwrap();
        assert!(!sys.calls.borrow().iter().any(|c| c.contains("fs/cgroup")));
    }

    #[test]
    fn cgroup_mounts_are_read_from_mountinfo() {
        let info = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n";
        let at = |p: &str| crate::sys::cgroup_mount_in(info, Path::new(p));
        assert_eq!(at("/sys/fs/cgroup/memory"), Some(("cgroup".into(), "memory".into())));
        assert_eq!(at("/sys/fs/cgroup/systemd"), Some(("cgroup".into(), "name=systemd".into())));
        assert_eq!(at("/sys/fs/cgroup/unified"), Some(("cgroup2".into(), "".into())));
        assert_eq!(at("/sys/fs/cgroup"), None, "a tmpfs is no hierarchy");
    }

    #[test]
    fn a_privileged_container_makes_its_nodes_and_binds_the_hosts_where_it_cannot() {
        let mut s = spec(false);
        s.security.all_devices = true;
        let sys = Recorder::default();
        build_filesystem(&sys, &s).unwrap();
        assert!(sys.position("mount tmpfs /c/dev") < sys.position("mknod /c/dev/null 1:3"));
        sys.position("mknod /c/dev/tty 5:0");
        assert!(!sys.calls.borrow().iter().any(|c| c.starts_with("tree nodev")), "{:#?}", sys.calls.borrow());
        // The masks stay unless asked away; /sys is writable only when asked.
        sys.position("bind /dev/null /c/proc/keys (one mount)");
        sys.position("mount sysfs /c/sys nodev ro");
        s.security.unmasked_paths = true;
        s.security.writable_sys = true;
        let sys = Recorder::default();
        build_filesystem(&sys, &s).unwrap();
        let calls = sys.calls.borrow();
        assert!(!calls.iter().any(|c| c.contains("/c/proc/keys") || c.contains("/c/proc/sys")), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.contains("/c/sys/firmware")), "{calls:#?}");
        drop(calls);
        sys.position("mount sysfs /c/sys nodev");
        // In a user namespace mknod is refused.
        let sys = Recorder { no_mknod: true, ..Recorder::default() };
        build_filesystem(&sys, &s).unwrap();
        for (node, _, _) in DEVICES {
            assert!(
                sys.position(&format!("write /c/dev/{node}"))
                    < sys.position(&format!("bind /dev/{node} /c/dev/{node} (one mount)"))
            );
        }
    }

    #[test]
    fn no_volume_opens_device_nodes_and_read_only_reaches_below_as_bind_recursive_asks() {
        let sys = Recorder::default();
        let mut s = spec(false);
        let vol = |host: &str, container: &str, read_only, recursive| Volume {
            host: host.into(),
            container: container.into(),
            read_only,
            recursive,
        };
        // Sources under /host are directories to the recorder.
        use BindRecursive::*;
        s.volumes = vec![
            vol("/host/rw", "/rw", false, Enabled),
            vol("/host/ro", "/ro", true, Enabled),
            vol("/host/forced", "/forced", true, Readonly),
            vol("/host/w", "/w", true, Writable),
            vol("/host/d", "/d", true, Disabled),
        ];
        s.tmpfs = vec!["/t:dev,size=1m".into()];
        build_filesystem(&sys, &s).unwrap();
        let at = |line: &str| sys.position(line);
        assert!(at("bind /host/rw /c/rw") < at("tree nodev /c/rw"));
        // Read-only too: the same directory may be written through another path.
        assert!(at("bind /host/ro /c/ro") < at("tree nodev ro /c/ro"));
        at("tree nodev ro /c/forced");
        // writable: read-only at the top alone, as docker before 25; disabled: one mount.
        assert!(at("remount-ro /c/w") < at("tree nodev /c/w"));
        assert!(at("bind /host/d /c/d (one mount)") < at("remount-ro /c/d"));
        at("tree nodev /c/d");
        let calls = sys.calls.borrow();
        assert!(calls.iter().any(|c| c == "mount tmpfs /c/t nodev"), "`dev` is refused: {calls:#?}");
        assert!(!calls.iter().any(|c| c == "remount-ro /c/ro"), "one call makes the tree read-only: {calls:#?}");
    }

    #[test]
    fn a_privileged_node_the_host_lost_is_left_out_and_a_given_one_is_not() {
        let device = |host: &str, optional| crate::device::Device {
            host: host.into(),
            container: host.trim_start_matches("/host").to_owned(),
            kind: 'c',
            major: 10,
            minor: 200,
            mode: 0o666,
            uid: 0,
            gid: 0,
            access: "rwm".into(),
            optional,
        };
        let mut s = spec(false);
        // To the recorder, /host paths exist and /gone ones do not.
        s.devices =
            vec![device("/host/dev/net/tun", true), device("/gone/dev/sdz", true), device("/gone/dev/sdy", false)];
        let sys = Recorder::default();
        build_filesystem(&sys, &s).unwrap();
        let calls = sys.calls.borrow();
        let binds: Vec<&String> = calls.iter().filter(|c| c.starts_with("bind-device")).collect();
        assert_eq!(
            binds,
            ["bind-device /host/dev/net/tun /c/dev/net/tun", "bind-device /gone/dev/sdy /c/gone/dev/sdy"]
        );
    }

    #[test]
    fn dev_shm_is_the_ipc_modes() {
        let shm_calls = |ipc: Ipc| {
            let sys = Recorder::default();
            let mut s = spec(false);
            s.ipc = ipc;
            build_filesystem(&sys, &s).unwrap();
            let calls = sys.calls.borrow();
            calls.iter().filter(|c| c.contains("/c/dev/shm")).cloned().collect::<Vec<_>>()
        };
        assert_eq!(shm_calls(Ipc::Own { shm: true }), ["mkdir /c/dev/shm", "mount tmpfs /c/dev/shm nodev"]);
        assert!(shm_calls(Ipc::Own { shm: false }).is_empty(), "--ipc none: no /dev/shm");
        assert_eq!(
            shm_calls(Ipc::Host),
            ["mkdir /c/dev/shm", "bind /dev/shm /c/dev/shm (one mount)", "tree nosuid nodev noexec /c/dev/shm"],
            "the host's, as docker's /dev/shm whatever the host's is"
        );
    }

    #[test]
    fn without_read_only_the_root_stays_writable_and_missing_proc_entries_are_skipped() {
        let sys = Recorder::default();
        let mut s = spec(false);
        s.volumes.clear();
        build_filesystem(&sys, &s).unwrap();
        let calls = sys.calls.borrow();
        assert!(!calls.iter().any(|c| c == "remount-ro /c"), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.contains("sysrq-trigger")), "a path /proc lacks is not mounted on");
    }

    #[test]
    fn mounts_go_on_parents_first_and_the_etc_files_after_them() {
        let sys = Recorder::default();
        let mut s = spec(false);
        let vol = |host: &str, container: &str| Volume {
            host: host.into(),
            container: container.into(),
            read_only: false,
            recursive: BindRecursive::Enabled,
        };
        // Given deepest first: before, /x hid the volume at /x/y, and one at /etc hid /etc/hosts.
        s.volumes = vec![vol("/host/y", "/x/y"), vol("/host/x", "/x"), vol("/host/etc", "/etc")];
        s.tmpfs = vec!["/x/y/z:size=1m".into(), "/x/t:size=1m".into()];
        build_filesystem(&sys, &s).unwrap();
        let at = |line: &str| sys.position(line);
        assert!(at("bind /host/x /c/x") < at("bind /host/y /c/x/y"));
        assert!(at("bind /host/x /c/x") < at("mount tmpfs /c/x/t nodev"));
        assert!(at("bind /host/y /c/x/y") < at("mount tmpfs /c/x/y/z nodev"));
        assert!(at("bind /host/etc /c/etc") < at("bind /c/dev/.berth-hosts /c/etc/hosts"));
    }

    #[test]
    fn a_volume_whose_source_is_missing_is_an_error() {
        let sys = Recorder::default();
        let mut s = spec(false);
        s.volumes = vec![Volume {
            host: "/nowhere".into(),
            container: "/data".into(),
            read_only: false,
            recursive: BindRecursive::Enabled,
        }];
        let err = build_filesystem(&sys, &s).unwrap_err();
        assert!(err.to_string().contains("/nowhere does not exist"), "{err}");
    }

    #[test]
    fn dot_dot_never_climbs_above_the_root() {
        assert_eq!(lexical_in_root("/a/./b/../c"), "a/c");
        assert_eq!(lexical_in_root("../../../tmp/x/"), "tmp/x");
        assert_eq!(lexical_in_root("/"), "");
    }

    #[test]
    fn tmpfs_flag_words_become_mount_flags_as_dockers_example_writes_them() {
        // Before, `rw,noexec,nosuid` went to tmpfs as data, which refused them (EINVAL).
        let (flags, data) = tmpfs_options("rw,noexec,nosuid,size=65536k").unwrap();
        assert_eq!(flags, MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC);
        assert_eq!(data, "size=65536k,mode=1777");
        let (flags, data) = tmpfs_options("ro,exec,dev,mode=755").unwrap();
        assert_eq!((flags, data.as_str()), (MountFlags::NOSUID | MountFlags::RDONLY, "mode=755"));
        // What docker refuses is refused before the container starts, naming the word.
        assert_eq!(
            check_tmpfs("/x:size=1m,bogus"),
            Err("--tmpfs /x:size=1m,bogus: invalid tmpfs option \"bogus\"".into())
        );
        assert_eq!(check_tmpfs("/x:bogus=1"), Err("--tmpfs /x:bogus=1: invalid tmpfs option \"bogus=1\"".into()));
        assert_eq!(check_tmpfs("x"), Err("--tmpfs x: the path must be absolute".into()));
        assert_eq!(check_tmpfs("/x:noatime,sync,uid=1000"), Ok(()));
    }

    #[test]
    fn run_tmpfs_is_noexec_by_default_as_dockers_and_exec_turns_it_back_on() {
        let flags = |flag: &str| {
            let with = with_docker_tmpfs_defaults(flag);
            tmpfs_options(with.split_once(':').unwrap().1).unwrap()
        };
        let hidden = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        assert_eq!(flags("/x"), (hidden, "mode=1777".into()));
        assert_eq!(flags("/x:"), (hidden, "mode=1777".into()));
        assert_eq!(flags("/x:size=1m"), (hidden, "size=1m,mode=1777".into()));
        assert_eq!(flags("/x:exec").0, MountFlags::NOSUID | MountFlags::NODEV);
        assert_eq!(flags("/x:rw,exec,suid,dev,mode=755"), (MountFlags::empty(), "mode=755".into()));
        // A build's tmpfs (a bare path in the sandbox) stays executable.
        assert_eq!(tmpfs_options("").unwrap().0, MountFlags::NOSUID | MountFlags::NODEV);
    }

    #[test]
    fn mount_targets_behind_dangling_symlinks_are_made_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let escape = outside.path().join("made");
        std::os::unix::fs::symlink(&escape, root.path().join("proc")).unwrap();
        std::os::unix::fs::symlink("../../../../../../x/y", root.path().join("dev")).unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/real-hosts", root.path().join("etc/hosts")).unwrap();
        create_mountpoints(root.path()).unwrap();
        assert!(!escape.exists(), "a mount point was made outside the root");
        let inside = root.path().join(escape.strip_prefix("/").unwrap());
        assert!(inside.is_dir(), "/proc's target is made inside the root");
        assert!(root.path().join("x/y").is_dir(), "'..' stops at the root");
        assert!(root.path().join("etc/real-hosts").is_file(), "a file target is a file");
        assert!(root.path().join("sys").is_dir() && root.path().join("etc/hostname").is_file());
    }

    #[test]
    fn a_relative_dangling_link_counts_from_its_real_directory() {
        // /etc -> private/etc, and /etc/hosts -> ../var/hosts: the kernel resolves that to
        // /private/var/hosts, so that is where the mount point must be made.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("private/etc")).unwrap();
        std::os::unix::fs::symlink("private/etc", root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("../var/hosts", root.path().join("private/etc/hosts")).unwrap();
        secure_target(root.path(), "etc/hosts", false).unwrap();
        assert!(root.path().join("private/var/hosts").is_file());
        assert!(!root.path().join("var").exists(), "not next to the symlinked /etc");
    }

    #[test]
    fn a_mount_target_that_is_the_root_itself_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", root.path().join("dev")).unwrap();
        std::os::unix::fs::symlink("../..", root.path().join("proc")).unwrap();
        for rel in ["dev", "proc"] {
            let err = secure_target(root.path(), rel, true).unwrap_err();
            assert!(err.to_string().contains("resolves to the root itself"), "{rel}: {err}");
        }
        secure_target(root.path(), "", true).unwrap();
    }

    #[test]
    fn a_symlink_loop_is_an_error_not_a_hang() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/b", root.path().join("a")).unwrap();
        std::os::unix::fs::symlink("/a", root.path().join("b")).unwrap();
        let err = secure_target(root.path(), "a", true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }
}
