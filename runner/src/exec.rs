//! The [`Executor`]: one process run to its end in a rootfs, its output streamed back.
//!
//! `berth build` runs every RUN step through it, from several threads at once;
//! `berth run` uses the sandbox directly because it also forwards signals and times out.

use std::io::Read;

use crate::sandbox::{self, SandboxError, Spec};

/// Runs one process in a rootfs with mounts and returns its exit code.
///
/// Lifecycle: the caller prepares the rootfs (a snapshot's mounts) and a [`Spec`]; `run`
/// starts the process, hands every chunk of its merged stdout and stderr to `output` as it
/// arrives, waits for it and returns the exit code (128 + N when killed by signal N).
pub trait Executor: Send + Sync {
    /// Runs `spec` to its end.
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError>;
}

/// The executor of [`crate::sandbox`]: new namespaces, pivot_root, limits, exec.
///
/// Each process is started from a thread of its own: entering a PID namespace for its
/// children forbids that thread from creating threads, so it must not be a caller's.
#[derive(Debug, Default, Clone, Copy)]
pub struct NamespaceExecutor;

enum Msg {
    Output(Vec<u8>),
    Exit(Result<i32, SandboxError>),
}

impl Executor for NamespaceExecutor {
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let spec = spec.clone();
        let starter = std::thread::Builder::new()
            .name("berth-exec".into())
            .spawn(move || {
                let result = start_and_pump(&spec, &tx);
                // The receiver only goes away when the caller is gone too.
                let _ = tx.send(Msg::Exit(result));
            })
            .map_err(|e| SandboxError::Start { what: "start thread", source: e })?;
        let mut exit = None;
        for msg in rx {
            match msg {
                Msg::Output(chunk) => output(&chunk),
                Msg::Exit(r) => exit = Some(r),
            }
        }
        let _ = starter.join();
        exit.unwrap_or_else(|| {
            Err(SandboxError::Start { what: "wait", source: std::io::Error::other("the executor thread panicked") })
        })
    }
}

fn start_and_pump(spec: &Spec, tx: &std::sync::mpsc::Sender<Msg>) -> Result<i32, SandboxError> {
    let (mut reader, writer) = std::io::pipe().map_err(|e| SandboxError::Start { what: "pipe", source: e })?;
    let mut cmd = sandbox::command(spec)?;
    let stderr = writer.try_clone().map_err(|e| SandboxError::Start { what: "pipe", source: e })?;
    cmd.stdin(std::process::Stdio::null()).stdout(writer).stderr(stderr);
    let mut child = cmd.spawn().map_err(|e| SandboxError::Start { what: "fork and exec", source: e })?;
    let _running = Running::register(&child);
    // Our copies of the write end must close, or the read below never sees the end.
    drop(cmd);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = tx.send(Msg::Output(buf[..n].to_vec()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::Start { what: "read output", source: e });
            }
        }
    }
    let status = child.wait().map_err(|e| SandboxError::Start { what: "wait", source: e })?;
    Ok(sandbox::exit_code(status))
}

/// The processes this executor is running now, each as a pidfd (a reused pid can never be
/// mistaken for one of them), so that [`kill_running`] can stop them when berth is stopped.
static RUNNING: std::sync::Mutex<Vec<(u32, std::os::fd::OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// A registration in [`RUNNING`], dropped when the process has been waited for.
struct Running(u32);

impl Running {
    fn register(child: &std::process::Child) -> Running {
        let pid = rustix::process::Pid::from_child(child);
        // Without a pidfd (a kernel before 5.3) the process is not killed early; it still
        // dies with berth, by its parent-death signal.
        if let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            if let Ok(mut r) = RUNNING.lock() {
                r.push((child.id(), fd));
            }
        }
        Running(child.id())
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
