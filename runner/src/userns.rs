//! Rootless berth: a plain user's berth runs inside a user namespace of its own.
//!
//! As podman and buildah do, berth started by a non-root user re-executes itself in a new
//! user namespace ([`enter_rootless`]) where the user is root and the user's subordinate
//! ranges (`/etc/subuid`, `/etc/subgid`, written by Debian's `newuidmap`/`newgidmap`) are
//! every other ID. Everything berth does from there (unpacking layers with their owners,
//! overlay snapshots, RUN steps, containers) works as it does for root, on files that the
//! kernel stores with the user's own and subordinate IDs. With no subordinate ranges the
//! namespace maps the user alone to root: a layer with a file owned by anyone else cannot be
//! unpacked, and berth says so.
//!
//! The child also gets a mount namespace of its own, so its mounts are invisible to the
//! host and vanish with it. [`rootless`] tells the rest of berth where it runs: overlayfs
//! keeps its whiteout and opaque markers in `user.overlay.*` xattrs there (mount option
//! `userxattr`, Linux 5.11), and cgroups and device nodes are out of reach.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// Set in the environment of the re-executed berth: it is already inside its namespace.
const INSIDE: &str = "BERTH_ROOTLESS_CHILD";

/// Why berth could not enter its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The kernel or a seccomp profile refuses unprivileged user namespaces.
    #[error(
        "cannot create a user namespace ({0}): the kernel forbids them to unprivileged users \
         (user.max_user_namespaces=0 or kernel.unprivileged_userns_clone=0) or a seccomp profile \
         forbids unshare, and rootless berth needs one: run berth as root (in an unprivileged \
         container, build with --isolation chroot)"
    )]
    Refused(std::io::Error),
    /// `newuidmap`/`newgidmap` refused the subordinate ranges.
    #[error("{tool} failed for the ranges of /etc/subuid and /etc/subgid: {detail}")]
    Map {
        /// The helper that failed.
        tool: &'static str,
        /// Its own message, or why it could not run.
        detail: String,
    },
    /// Something else on the way (a pipe, the spawn, the wait).
    #[error("rootless start: {0}")]
    Io(#[from] std::io::Error),
}

/// One line of an ID map: `count` IDs from `inside` in the namespace are `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First ID in the namespace.
    pub inside: u32,
    /// First ID on the host.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// The user's subordinate range from an `/etc/subuid`-style file: the first line naming
/// `name` or `id` (as shadow's tools read it).
pub fn subordinate(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    file.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse::<u32>().ok()?);
        (count > 0).then_some((start, count))
    })
}

/// The ID maps for `id` with its subordinate range (if any): the user is root, the range
/// is 1 and up.
pub fn maps(id: u32, range: Option<(u32, u32)>) -> Vec<IdRange> {
    let mut m = vec![IdRange { inside: 0, outside: id, count: 1 }];
    if let Some((start, count)) = range {
        m.push(IdRange { inside: 1, outside: start, count });
    }
    m
}

/// Whether this process runs in a user namespace that maps only part of the ID space: a
/// rootless berth (the whole map `0 0 4294967295` is the host's, or a container's that
/// shares the host's IDs).
pub fn rootless() -> bool {
    static ROOTLESS: OnceLock<bool> = OnceLock::new();
    *ROOTLESS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
            .unwrap_or(false)
    })
}

/// Where overlayfs keeps its markers (opaque directories) on this berth's snapshots:
/// `user.overlay.*` rootless (mounted with `userxattr`), else `trusted.overlay.*`.
pub fn overlay_xattrs() -> oci::layer::OverlayXattrs {
    if rootless() {
        oci::layer::OverlayXattrs::User
    } else {
        oci::layer::OverlayXattrs::Trusted
    }
}

/// The user's name from `/etc/passwd`, for `/etc/subuid` lines that name it.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// The pid of the re-executed berth, for the signal forwarder.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Whether berth runs as a plain user outside its user namespace: [`enter_rootless`] would
/// re-execute it.
pub fn outside() -> bool {
    !rustix::process::geteuid().is_root() && std::env::var_os(INSIDE).is_none()
}

/// For a non-root user outside a user namespace: runs this same berth command (`args`) in
/// a new user and mount namespace with `root` as its store, waits, and returns its exit
/// code; in the user namespace of process `join` instead where given (a rootless
/// container's supervisor, for `exec`: the container's namespaces belong to that one).
/// Returns `None` where berth runs as it is: as root, or already inside.
pub fn enter_rootless(root: &Path, args: Vec<OsString>, join: Option<i32>) -> Result<Option<i32>, UsernsError> {
    if !outside() {
        return Ok(None);
    }
    if let Some(pid) = join {
        return rejoin(root, args, pid);
    }
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    let name = user_name(uid);
    let read = |f| std::fs::read_to_string(f).unwrap_or_default();
    let ranges = (subordinate(&read("/etc/subuid"), &name, uid), subordinate(&read("/etc/subgid"), &name, gid));
    let ranges = match ranges {
        (Some(u), Some(g)) if helpers_present() => Some((u, g)),
        _ => {
            eprintln!(
                "berth: warning: no subordinate IDs for {name} in /etc/subuid and /etc/subgid (or no \
                 newuidmap): only your own ID is mapped, so layers with files of other owners cannot be \
                 unpacked; see docs/rootless.md"
            );
            None
        }
    };
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io)?;
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io)?;
    let (ready_r_fd, go_w_fd) = (ready_r.as_raw_fd(), go_w.as_raw_fd());
    let mapper = std::thread::spawn(move || map_child(ready_r, go_w, uid, gid, ranges));
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(args).env(INSIDE, "1").env("BERTH_ROOT", root);
    let fds = [ready_w.as_raw_fd(), go_r.as_raw_fd(), ready_r_fd, go_w_fd];
    // SAFETY: the closure makes only syscalls (close, unshare, read, write, mount) between
    // fork and exec.
    unsafe { cmd.pre_exec(move || in_child(fds)) };
    let spawned = cmd.spawn();
    drop((ready_w, go_r));
    let mapped = mapper.join().unwrap_or_else(|_| Err(UsernsError::Io(std::io::Error::other("mapper panicked"))));
    let child = match (spawned, mapped) {
        (Ok(c), Ok(())) => c,
        (_, Err(e)) => return Err(e),
        (Err(e), Ok(()))
            if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSPC | libc::EUSERS | libc::EINVAL)) =>
        {
            return Err(UsernsError::Refused(e))
        }
        (Err(e), Ok(())) => return Err(e.into()),
    };
    wait_forwarding(child)
}

/// Waits for the re-executed berth, forwarding SIGTERM and SIGHUP; its exit code.
fn wait_forwarding(mut child: std::process::Child) -> Result<Option<i32>, UsernsError> {
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    // SAFETY: installing handlers that only call kill; a terminal's ^C and ^\ reach the
    // child directly (same process group), so the parent ignores them.
    unsafe {
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait()?;
    Ok(Some(crate::sandbox::exit_code(status)))
}

/// [`enter_rootless`] into the user namespace of `pid` (owned by this user, so joining it
/// gives every capability there), with a private mount namespace of its own.
fn rejoin(root: &Path, args: Vec<OsString>, pid: i32) -> Result<Option<i32>, UsernsError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(args).env(INSIDE, "1").env("BERTH_ROOT", root);
    let fd = ns.as_raw_fd();
    // SAFETY: only syscalls (setns, unshare, mount) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
            rustix::thread::move_into_link_name_space(ns, Some(rustix::thread::LinkNameSpaceType::User))?;
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)?;
            rustix::mount::mount_change(
                Path::new("/"),
                rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
            )?;
            Ok(())
        })
    };
    let child = cmd.spawn()?;
    drop(ns);
    wait_forwarding(child)
}

fn io(e: rustix::io::Errno) -> UsernsError {
    UsernsError::Io(e.into())
}

/// Both of shadow's set-uid helpers are installed (Debian's `uidmap`).
fn helpers_present() -> bool {
    ["newuidmap", "newgidmap"]
        .iter()
        .all(|t| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file())))
}

/// The forked child, before exec: a new user namespace, a word to the parent (our pid),
/// wait for the maps, then a private mount namespace. `fds` are the pipes' ends: ours to
/// write and read, then the parent's, which the child closes so that a parent that gives up
/// ends our wait.
fn in_child([ready, go, parent_read, parent_write]: [i32; 4]) -> std::io::Result<()> {
    // SAFETY: closing this process's copies of the parent's ends of the pipes.
    unsafe {
        libc::close(parent_read);
        libc::close(parent_write);
    }
    // SAFETY: only the single thread of the forked child runs here.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }?;
    let pid = std::process::id().to_ne_bytes();
    // SAFETY: raw fds of pipes that the parent keeps open until spawn returns.
    if unsafe { libc::write(ready, pid.as_ptr().cast(), pid.len()) } != pid.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    let mut byte = 0u8;
    // SAFETY: as above; one byte into a local.
    if unsafe { libc::read(go, (&mut byte as *mut u8).cast(), 1) } != 1 {
        return Err(std::io::Error::other("the parent could not write the ID maps"));
    }
    // SAFETY: as above.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
    rustix::mount::mount_change(
        Path::new("/"),
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// The parent's side: read the child's pid, write its maps, say go (or close the pipe).
fn map_child(
    ready: OwnedFd,
    go: OwnedFd,
    uid: u32,
    gid: u32,
    ranges: Option<((u32, u32), (u32, u32))>,
) -> Result<(), UsernsError> {
    let mut pid = [0u8; 4];
    let mut r = std::fs::File::from(ready);
    if r.read_exact(&mut pid).is_err() {
        // The child failed before it could ask (spawn reports why).
        return Ok(());
    }
    let pid = i32::from_ne_bytes(pid);
    match ranges {
        Some((u, g)) => {
            run_map("newuidmap", pid, &maps(uid, Some(u)))?;
            run_map("newgidmap", pid, &maps(gid, Some(g)))?;
        }
        None => {
            let proc = format!("/proc/{pid}");
            std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))?;
            std::fs::write(format!("{proc}/setgroups"), "deny")?;
            std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n"))?;
        }
    }
    std::fs::File::from(go).write_all(&[1])?;
    Ok(())
}

/// Runs `newuidmap PID IN OUT COUNT...` (or newgidmap).
fn run_map(tool: &'static str, pid: i32, ranges: &[IdRange]) -> Result<(), UsernsError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([r.inside, r.outside, r.count].map(|n| n.to_string()));
    }
    let out = cmd.output().map_err(|e| UsernsError::Map { tool, detail: e.to_string() })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(UsernsError::Map { tool, detail });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_naming_the_user_or_its_id_is_its_range() {
        let f = "# comment\nalice:100000:65536\nbob:165536:65536\n1001:231072:1000\nempty:300000:0\n";
        assert_eq!(subordinate(f, "bob", 1000), Some((165536, 65536)));
        assert_eq!(subordinate(f, "carol", 1001), Some((231072, 1000)));
        assert_eq!(subordinate(f, "dave", 1002), None);
        assert_eq!(subordinate(f, "empty", 7), None, "a zero count is no range");
    }

    #[test]
    fn the_user_is_root_and_its_range_the_rest() {
        assert_eq!(
            maps(1000, Some((100000, 65536))),
            vec![IdRange { inside: 0, outside: 1000, count: 1 }, IdRange { inside: 1, outside: 100000, count: 65536 }]
        );
        assert_eq!(maps(1000, None), vec![IdRange { inside: 0, outside: 1000, count: 1 }]);
    }
}
