//! Starting a container's process: the one way berth starts one, for detached containers
//! (the supervisor) and build steps (`runner::exec::NamespaceExecutor`).
//!
//! The process is started from a thread of its own: that thread enters a new PID namespace
//! for its children (and so may create no thread afterwards), and the process's parent-death
//! signal is tied to it, so it stays until the process has exited. The exit is read without
//! reaping; the process is reaped only once the [`Launched`] handle is dropped, so that until
//! its owner has recorded the exit, the pid cannot be reused.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use crate::sandbox::{SandboxError, Spec};

/// A started process.
pub struct Launched {
    /// Its pid, as the host sees it.
    pub pid: i32,
    /// A pidfd of it (signals through it never reach a reused pid).
    pub pidfd: OwnedFd,
    /// Dropped to let the starting thread reap the process.
    _reap: std::sync::mpsc::Sender<()>,
}

/// The process's stdio.
pub struct Stdio3 {
    /// Its stdin.
    pub stdin: Stdio,
    /// Its stdout.
    pub stdout: Stdio,
    /// Its stderr.
    pub stderr: Stdio,
}

/// Starts `spec`'s process with `stdio` and returns once it runs (or could not start);
/// `on_exit` gets its exit code (128 + N for signal N) when it ends, before it is reaped.
/// The caller's copies of the stdio's pipe ends are closed in the starting thread once the
/// process has them, so a reader of its output sees the end when it exits.
pub fn launch(
    spec: &Spec,
    stdio: Stdio3,
    on_exit: impl FnOnce(i32) + Send + 'static,
) -> Result<Launched, SandboxError> {
    let spec = spec.clone();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(i32, OwnedFd), SandboxError>>();
    let (reap_tx, reap_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new().name("berth-container".into()).spawn(move || {
        let started = (|| {
            let mut cmd = crate::sandbox::command(&spec)?;
            cmd.stdin(stdio.stdin).stdout(stdio.stdout).stderr(stdio.stderr);
            let child = cmd.spawn().map_err(|e| SandboxError::exec_failed(&spec.args[0], e))?;
            // The command holds copies of the write ends: they close here.
            drop(cmd);
            let pid = rustix::process::Pid::from_child(&child);
            let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                .map_err(|e| SandboxError::Start { what: "pidfd", source: e.into() })?;
            Ok((child, pid.as_raw_nonzero().get(), pidfd))
        })();
        // What it held open for the start (another container's namespaces) goes now, not
        // with the process.
        drop(spec);
        match started {
            Err(e) => {
                let _ = started_tx.send(Err(e));
            }
            Ok((mut child, pid, pidfd)) => {
                let fd = pidfd.as_raw_fd();
                let sent = pidfd.try_clone().map_err(|e| SandboxError::Start { what: "pidfd", source: e });
                let _ = started_tx.send(sent.map(|pidfd| (pid, pidfd)));
                on_exit(wait_no_reap(fd));
                // Until the handle is dropped (or its owner is gone).
                let _ = reap_rx.recv();
                let _ = child.wait();
            }
        }
    });
    thread.map_err(|e| SandboxError::Start { what: "start thread", source: e })?;
    let (pid, pidfd) = started_rx.recv().map_err(|_| SandboxError::Start {
        what: "start thread",
        source: std::io::Error::other("the starting thread ended"),
    })??;
    Ok(Launched { pid, pidfd, _reap: reap_tx })
}

/// Waits for the exit of the process behind `pidfd` (a child of the caller) without reaping
/// it; 128 + N for signal N. Until it is reaped, its pid cannot be reused.
pub fn wait_no_reap(pidfd: i32) -> i32 {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own pidfd, writing into `info`.
        let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            // SAFETY: after a successful waitid for WEXITED, si_status and si_code are set.
            let (status, code) = unsafe { (info.si_status(), info.si_code) };
            return if code == libc::CLD_EXITED { status } else { 128 + status };
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 255;
        }
    }
}
