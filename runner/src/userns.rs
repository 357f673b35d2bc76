//! Rootless berth: a plain user's berth runs inside a user namespace of its own.
//!
//! As podman and buildah do, berth started by a non-root user moves into a new user
//! namespace ([`enter_rootless`], first thing in `main`, in the same process) where the user
//! is root and the user's subordinate ranges (`/etc/subuid`, `/etc/subgid`, written by
//! Debian's `newuidmap`/`newgidmap`) are every other ID. Everything berth does from there
//! (unpacking layers with their owners, overlay snapshots, RUN steps, containers) works as
//! it does for root, on files that the kernel stores with the user's own and subordinate IDs. With no subordinate ranges the
//! namespace maps the user alone to root: a layer with a file owned by anyone else cannot be
//! unpacked, and berth says so.
//!
//! The process also gets a mount namespace of its own, so its mounts are invisible to the
//! host and vanish with it. [`rootless`] tells the rest of berth where it runs: overlayfs
//! keeps its whiteout and opaque markers in `user.overlay.*` xattrs there (mount option
//! `userxattr`, Linux 5.11), and cgroups and device nodes are out of reach.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

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

/// The user IDs this process's user namespace maps, as "IDs 0 to N" (every ID from 0 up to
/// the end of its last range): what an owner must fall in, for errors met rootless. None
/// where `/proc/self/uid_map` cannot be read.
pub fn mapped_ids() -> Option<String> {
    let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    let end = map
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            (f.len() == 3).then(|| f[0] + f[2])
        })
        .max()?;
    Some(match end {
        1 => "only ID 0, your own".to_owned(),
        n => format!("IDs 0 to {}", n - 1),
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

/// Whether berth runs as a plain user outside its user namespace: [`enter_rootless`] would
/// move it into one.
pub fn outside() -> bool {
    !rustix::process::geteuid().is_root()
}

/// For a plain user: moves this process into a new user namespace where the user is root
/// (and the user's subordinate ranges the other IDs), and a private mount namespace, or
/// into the user namespace of process `join` where given (a rootless container's
/// supervisor, for `exec`: the container's namespaces belong to that one). Nothing is
/// re-executed: the process gains every capability in the namespace and goes on. As root
/// it does nothing.
///
/// Call it first thing in `main`: a process may enter a user namespace only while it has
/// one thread. `root` (the user's store) is put in `BERTH_ROOT`, as root's default differs.
pub fn enter_rootless(root: &Path, join: Option<i32>) -> Result<(), UsernsError> {
    if !outside() {
        return Ok(());
    }
    match join {
        Some(pid) => {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::User),
            )
            .map_err(|e| {
                let why = format!("join the user namespace of the container's supervisor (pid {pid}): {e}");
                UsernsError::Io(std::io::Error::other(why))
            })?;
        }
        None => new_namespace()?,
    }
    // SAFETY: the process has one thread (documented above); unsharing the mount namespace
    // changes only its own view of mounts.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(io)?;
    rustix::mount::mount_change(
        Path::new("/"),
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(io)?;
    std::env::set_var("BERTH_ROOT", root);
    ENTERED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Set once [`enter_rootless`] has moved berth into a user namespace.
static ENTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when this berth was started by a plain user and entered its user namespace itself
/// (unlike a root berth in a container that has its own user namespace): it runs on a
/// machine, in that user's files.
pub fn entered() -> bool {
    ENTERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A new user namespace for this process, its maps written by a forked helper that stays
/// in the parent namespace (only a process there may write them, through newuidmap).
fn new_namespace() -> Result<(), UsernsError> {
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    let name = user_name(uid);
    let read = |f| std::fs::read_to_string(f).unwrap_or_default();
    let ranges = match (subordinate(&read("/etc/subuid"), &name, uid), subordinate(&read("/etc/subgid"), &name, gid)) {
        (Some(u), Some(g)) if helpers_present() => Some((u, g)),
        found => {
            let missing = match found {
                (Some(_), Some(_)) => "newuidmap and newgidmap are not on PATH (Debian's uidmap package)".to_owned(),
                _ => format!("no subordinate IDs for {name} in /etc/subuid and /etc/subgid"),
            };
            eprintln!(
                "berth: warning: {missing}: only your own ID is mapped, so layers with files of other owners \
                 cannot be unpacked; see docs/rootless.md"
            );
            None
        }
    };
    let (go_r, go_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io)?;
    let (done_r, done_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io)?;
    let me = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: berth has one thread here (see enter_rootless): the child is a whole process
    // and may run commands; it leaves with _exit, never returning into main.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if helper == 0 {
        drop((go_w, done_r));
        let mut byte = [0u8; 1];
        let outcome = match std::fs::File::from(go_r).read_exact(&mut byte) {
            Ok(()) => write_maps(me, uid, gid, ranges).map_err(|e| e.to_string()),
            Err(_) => Err(String::new()),
        };
        let reply = match outcome {
            Ok(()) => vec![1],
            Err(e) => e.into_bytes(),
        };
        let _ = std::fs::File::from(done_w).write_all(&reply);
        // SAFETY: leaves the forked helper without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop((go_r, done_w));
    // SAFETY: one thread (see enter_rootless).
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) };
    if unshared.is_ok() {
        let _ = std::fs::File::from(go_w).write_all(&[1]);
    } else {
        drop(go_w);
    }
    let mut reply = Vec::new();
    let _ = std::fs::File::from(done_r).read_to_end(&mut reply);
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(helper, std::ptr::null_mut(), 0) };
    if let Err(e) = unshared {
        return Err(UsernsError::Refused(e.into()));
    }
    if reply != [1] {
        let detail = String::from_utf8_lossy(&reply).into_owned();
        return Err(UsernsError::Map { tool: "newuidmap", detail });
    }
    Ok(())
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

/// Writes the maps of process `pid`: the subordinate ranges through newuidmap and
/// newgidmap, else the user alone (which a process may write for itself, groups denied).
fn write_maps(pid: i32, uid: u32, gid: u32, ranges: Option<((u32, u32), (u32, u32))>) -> Result<(), UsernsError> {
    match ranges {
        Some((u, g)) => {
            // Both at once: each is a set-uid program's start-up.
            let users = start_map("newuidmap", pid, &maps(uid, Some(u)))?;
            let groups = start_map("newgidmap", pid, &maps(gid, Some(g)));
            let users = finish_map("newuidmap", users);
            finish_map("newgidmap", groups?)?;
            users?;
        }
        None => {
            let proc = format!("/proc/{pid}");
            std::fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))?;
            std::fs::write(format!("{proc}/setgroups"), "deny")?;
            std::fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n"))?;
        }
    }
    Ok(())
}

/// Starts `newuidmap PID IN OUT COUNT...` (or newgidmap), its stderr kept for the error.
fn start_map(tool: &'static str, pid: i32, ranges: &[IdRange]) -> Result<std::process::Child, UsernsError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string()).stderr(std::process::Stdio::piped());
    for r in ranges {
        cmd.args([r.inside, r.outside, r.count].map(|n| n.to_string()));
    }
    cmd.spawn().map_err(|e| UsernsError::Map { tool, detail: e.to_string() })
}

/// Waits for a map helper [`start_map`] started.
fn finish_map(tool: &'static str, child: std::process::Child) -> Result<(), UsernsError> {
    let out = child.wait_with_output().map_err(|e| UsernsError::Map { tool, detail: e.to_string() })?;
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
