//! The [`Executor`]: one process run to its end in a rootfs, its output streamed back.
//!
//! `berth build` runs every RUN step through it, from several threads at once. Its process
//! starts as a detached container's does ([`crate::container::launch`]); `berth run` in the
//! foreground starts its own through the sandbox, as it forwards signals and times out.

use std::io::Read;

use crate::sandbox::{SandboxError, Spec};

/// Runs one process in a rootfs with mounts and returns its exit code.
///
/// Lifecycle: the caller prepares the rootfs (a snapshot's mounts) and a [`Spec`]; `run`
/// starts the process, hands every chunk of its merged stdout and stderr to `output` as it
/// arrives, waits for it and returns the exit code (128 + N when killed by signal N).
pub trait Executor: Send + Sync {
    /// Runs `spec` to its end.
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError>;

    /// Whether steps run with mount namespaces and may mount (snapshots, views); false for
    /// [`crate::chroot::ChrootExecutor`], which runs where nothing can be mounted.
    fn mounts(&self) -> bool {
        true
    }
}

/// How RUN steps are isolated, as buildah's `--isolation` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// New namespaces, pivot_root, capabilities and seccomp: [`NamespaceExecutor`].
    #[default]
    Oci,
    /// chroot alone, for unprivileged containers: [`crate::chroot::ChrootExecutor`].
    Chroot,
    /// No isolation: steps run in the build container's own `/`, as kaniko runs them, where
    /// not even chroot is allowed: [`crate::inplace::InPlaceExecutor`].
    None,
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Isolation, String> {
        match s {
            "oci" | "default" => Ok(Isolation::Oci),
            "chroot" => Ok(Isolation::Chroot),
            "none" => Ok(Isolation::None),
            other => Err(format!("unknown isolation {other:?}: oci, chroot or none")),
        }
    }
}

impl Isolation {
    /// The executor for this isolation; `keep` lists the paths a `none` build must leave
    /// alone in `/` (berth's state, the build's inputs and outputs).
    pub fn executor(self, keep: &[std::path::PathBuf]) -> Result<Box<dyn Executor>, crate::inplace::InPlaceError> {
        Ok(match self {
            Isolation::Oci => Box::new(NamespaceExecutor),
            Isolation::Chroot => Box::new(crate::chroot::ChrootExecutor),
            Isolation::None => Box::new(crate::inplace::InPlaceExecutor::new(keep)?),
        })
    }
}

/// The executor of [`crate::sandbox`]: new namespaces, pivot_root, limits, exec; each
/// process started by [`crate::container::launch`], as a detached container's is.
#[derive(Debug, Default, Clone, Copy)]
pub struct NamespaceExecutor;

impl Executor for NamespaceExecutor {
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError> {
        let pipe_err = |e| SandboxError::Start { what: "pipe", source: e };
        let (mut reader, writer) = std::io::pipe().map_err(pipe_err)?;
        let stderr = writer.try_clone().map_err(pipe_err)?;
        let stdio = crate::container::launch::Stdio3 {
            stdin: std::process::Stdio::null(),
            stdout: writer.into(),
            stderr: stderr.into(),
        };
        let (exit_tx, exit_rx) = std::sync::mpsc::channel();
        let launched = crate::container::launch::launch(spec, stdio, move |code| {
            let _ = exit_tx.send(code);
        })?;
        let _running = Running::register(launched.pid as u32, &launched.pidfd);
        if let Err(e) = pump(&mut reader, output, None) {
            let _ = rustix::process::pidfd_send_signal(&launched.pidfd, rustix::process::Signal::KILL);
            let _ = exit_rx.recv();
            return Err(SandboxError::Start { what: "read output", source: e });
        }
        exit_rx.recv().map_err(|_| SandboxError::Start {
            what: "wait",
            source: std::io::Error::other("the starting thread ended"),
        })
    }
}

/// Reads a step's merged stdout and stderr, handing each chunk to `output`, until it ends, or,
/// once `ended` is set (the step's processes are gone but one that left its group may still
/// hold the pipe), until nothing came for a tenth of a second.
pub(crate) fn pump(
    reader: &mut std::io::PipeReader,
    output: &mut dyn FnMut(&[u8]),
    ended: Option<&std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let was_ended = ended.is_some_and(|e| e.load(std::sync::atomic::Ordering::SeqCst));
        let mut pfd = libc::pollfd { fd: reader.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the length given.
        let ready = unsafe { libc::poll(&mut pfd, 1, if ended.is_some() { 100 } else { -1 }) };
        if ready == 0 && was_ended {
            return Ok(());
        }
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if ready <= 0 {
            continue;
        }
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => output(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The processes this executor is running now, each as a pidfd (a reused pid can never be
/// mistaken for one of them), so that [`kill_running`] can stop them when berth is stopped.
static RUNNING: std::sync::Mutex<Vec<(u32, std::os::fd::OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// A registration in [`RUNNING`], dropped when the process has been waited for.
pub(crate) struct Running(u32);

impl Running {
    /// Registers process `pid` (its pidfd `fd`) until the registration is dropped.
    pub(crate) fn register(pid: u32, fd: &std::os::fd::OwnedFd) -> Running {
        if let (Ok(fd), Ok(mut r)) = (fd.try_clone(), RUNNING.lock()) {
            r.push((pid, fd));
        }
        Running(pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut r) = RUNNING.lock() {
            r.retain(|(pid, _)| *pid != self.0);
        }
    }
}

/// Kills every process the executor is running (SIGKILL to each sandbox's init, which takes
/// its whole PID namespace with it) and waits until each has exited; for berth's SIGTERM and
/// SIGINT handling, before it removes the steps' snapshots. Returns how many were killed.
pub fn kill_running() -> usize {
    let Ok(running) = RUNNING.lock() else { return 0 };
    for (_, fd) in running.iter() {
        let _gone = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
    }
    for (_, fd) in running.iter() {
        use std::os::fd::AsRawFd;
        // A pidfd becomes readable when its process exits.
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the length given.
        let _ = unsafe { libc::poll(&mut pfd, 1, 5000) };
    }
    running.len()
}
