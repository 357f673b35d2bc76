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
