//! Joining a running container: `berth exec` and health checks start a process in the
//! container's namespaces (mount, PID, UTS, IPC, network, cgroup), in its cgroups, under its
//! capabilities, seccomp filter and rlimits, as its user unless told otherwise.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use super::{Container, Error, Result, Status};
use crate::sandbox::{SandboxError, Spec, User};
use crate::snapshot::Mount;

/// The process to start, as `berth exec` takes it.
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// Program and arguments.
    pub args: Vec<String>,
    /// `-e KEY=VALUE`, on top of the container's environment.
    pub env: Vec<String>,
    /// `-w`: the working directory (default: the container's).
    pub cwd: Option<String>,
    /// `-u`: the user (default: the container's).
    pub user: Option<String>,
    /// `-t`: the console socket the pty's master is sent over (see [`Spec::console_socket`]).
    pub console_socket: Option<i32>,
    /// The pty's size.
    pub console_size: (u16, u16),
}

/// A running container's namespaces and cgroups, opened while it runs.
pub struct Target {
    pid: i32,
    pid_ns: OwnedFd,
    namespaces: Vec<OwnedFd>,
    cgroups: Vec<PathBuf>,
}

/// Opens `/proc/PID/ns/NAME`.
pub(super) fn open_ns(pid: i32, name: &str) -> Result<OwnedFd> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
    let f = std::fs::File::open(&path).map_err(super::io_err("open", &path))?;
    Ok(f.into())
}

impl Target {
    /// Opens the namespaces of `container`, which must be running.
    pub fn open(container: &Container) -> Result<Target> {
        let name = &container.config.name;
        if container.config.runtime != "berth" {
            // Its recorded pid is the runtime's, not the container's.
            return Err(Error::State(format!(
                "container {name} runs under {}: exec works with berth's own runtime only",
                container.config.runtime
            )));
        }
        let state = container.state()?;
        let pid = match (state.status, state.pid) {
            (Status::Running, Some(pid)) => pid,
            _ => return Err(Error::State(format!("container {name} is not running"))),
        };
        if state.paused {
            return Err(Error::State(format!("container {name} is paused: unpause the container before exec")));
        }
        // The mount namespace last: after joining it, the host's paths are gone.
        let namespaces =
            ["cgroup", "ipc", "uts", "net", "mnt"].iter().map(|n| open_ns(pid, n)).collect::<Result<_>>()?;
        Ok(Target {
            pid,
            pid_ns: open_ns(pid, "pid")?,
            namespaces,
            cgroups: crate::cgroup::Cgroup::existing(&container.config.id).procs_files(),
        })
    }

    /// The container's network namespace, for the port proxy.
    pub fn net_ns(pid: i32) -> Result<OwnedFd> {
        open_ns(pid, "net")
    }
}

/// The command that starts `process` in the container. The calling thread joins the
/// container's PID namespace for its children: spawn only this from it, and create no
/// thread from it afterwards (as with [`crate::sandbox::command`]).
pub fn command(container: &Container, target: &Target, process: &Process) -> Result<Command> {
    let config = &container.config;
    // The container's own files, seen through its root: the user is resolved in its
    // /etc/passwd as it is now.
    let rootfs = vec![Mount::Bind { source: format!("/proc/{}/root", target.pid).into(), read_only: true }];
    let mut spec: Spec = config.spec(rootfs, PathBuf::new(), target.cgroups.clone(), None)?;
    spec.init = false;
    spec.args = process.args.clone();
    // The container's environment (its PATH and HOSTNAME included), TERM=xterm with a
    // terminal (docker's, where the container has none), `-e` on top.
    let mut base = config.env.clone();
    if process.console_socket.is_some() && !base.iter().any(|e| e.starts_with("TERM=")) {
        let after_hostname = base.iter().position(|e| e.starts_with("HOSTNAME=")).map_or(base.len(), |i| i + 1);
        base.insert(after_hostname, "TERM=xterm".into());
    }
    spec.env = super::config::with_overrides(&base, &process.env);
    if let Some(cwd) = &process.cwd {
        spec.cwd = cwd.clone();
    }
    // docker's exec: a -w the container lacks is an error (126), never made.
    spec.make_cwd = false;
    if let Some(user) = &process.user {
        spec.user = Some(User(user.clone()));
    }
    spec.console_socket = process.console_socket;
    spec.console_size = process.console_size;
    if spec.args.is_empty() {
        return Err(Error::Config("exec needs a command".into()));
    }
    spec.ids = crate::sandbox::process_ids(&spec)?;
    let filter_cache = container.root().join("seccomp");
    let confinement = config.security(Some(&filter_cache))?.prepare()?;
    rustix::thread::move_into_link_name_space(target.pid_ns.as_fd(), None)
        .map_err(|e| SandboxError::Start { what: "join the PID namespace", source: e.into() })?;
    let namespaces: Vec<OwnedFd> = target
        .namespaces
        .iter()
        .map(|fd| fd.try_clone())
        .collect::<std::io::Result<_>>()
        .map_err(|e| SandboxError::Start { what: "namespaces", source: e })?;
    let mut cmd = crate::sandbox::process_command(&spec);
    // SAFETY: `join` only makes syscalls and small allocations between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || join(&spec, &namespaces, &confinement));
    }
    Ok(cmd)
}

/// In the forked child: the cgroups (by host path), then each namespace, then the rest of
/// a start.
fn join(spec: &Spec, namespaces: &[OwnedFd], confinement: &crate::security::Confinement) -> std::io::Result<()> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    for procs in &spec.cgroups {
        std::fs::write(procs, "0")?;
    }
    for ns in namespaces {
        rustix::thread::move_into_link_name_space(ns.as_fd(), None).map_err(crate::sandbox::errno)?;
    }
    crate::sandbox::become_process(spec, confinement)
}

/// Runs `process` in the container to its end, from a thread of its own; returns the exit
/// code and the merged output (at most `keep` bytes, the last ones), or -1 and a message
/// when it ran past `timeout` (it is killed) or could not start.
pub fn run_captured(
    container: &Container,
    process: &Process,
    timeout: std::time::Duration,
    keep: usize,
) -> (i32, String) {
    let (container, process) = (container.clone(), process.clone());
    let worker = std::thread::Builder::new().name("berth-probe".into()).spawn(move || {
        let target = Target::open(&container)?;
        let cmd = command(&container, &target, &process)?;
        Ok::<_, Error>(run_with_timeout(cmd, timeout, keep))
    });
    let joined = match worker {
        Ok(w) => w.join().unwrap_or_else(|_| Err(Error::Config("the probe thread panicked".into()))),
        Err(e) => return (-1, format!("start a probe thread: {e}")),
    };
    match joined {
        Ok(Ok((code, out))) => (code, out),
        Ok(Err(e)) => (-1, e.to_string()),
        Err(e) => (-1, e.to_string()),
    }
}

/// Spawns `cmd` with its stdout and stderr into one pipe, keeps the last `keep` bytes, and
/// kills it when it runs past `timeout` (exit code -1, docker's message).
fn run_with_timeout(mut cmd: Command, timeout: std::time::Duration, keep: usize) -> std::io::Result<(i32, String)> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let (mut reader, writer) = std::io::pipe()?;
    cmd.stdin(std::process::Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
    let mut child = cmd.spawn()?;
    // Our copies of the write end must close, or the read below never sees the end.
    drop(cmd);
    let deadline = std::time::Instant::now() + timeout;
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the length given.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready == 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((-1, format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64())));
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > keep {
                    out.drain(..out.len() - keep);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let status = child.wait()?;
    Ok((crate::sandbox::exit_code(status), String::from_utf8_lossy(&out).into_owned()))
}
