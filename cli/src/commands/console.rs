//! `berth run -t`: the host side of the container's pty.
//!
//! The container opens a pty in its own devpts and sends the master here over a unix
//! socket (see `runner::sandbox::Spec::console_socket`). A thread started *before* the
//! sandbox is entered (entering its PID namespace forbids new threads on the main one)
//! receives it, sizes it like berth's terminal, copies its output to stdout and, with
//! `-i`, stdin to it. berth's terminal is raw meanwhile, and restored after.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};

/// The host side of a container's pty.
pub struct Console {
    child_end: Option<UnixStream>,
    master: Arc<OnceLock<OwnedFd>>,
    output: Option<std::thread::JoinHandle<()>>,
    saved: Option<rustix::termios::Termios>,
}

impl Console {
    /// Starts the thread that will receive the master; call before entering the sandbox.
    pub fn start(interactive: bool) -> Result<Console> {
        let (ours, theirs) = UnixStream::pair().context("console socket")?;
        let master: Arc<OnceLock<OwnedFd>> = Arc::new(OnceLock::new());
        let slot = master.clone();
        let output = std::thread::Builder::new()
            .name("berth-console".into())
            .spawn(move || {
                let Ok(fd) = runner::sandbox::receive_pty(&ours) else { return };
                if interactive {
                    if let Ok(mut to) = fd.try_clone().map(std::fs::File::from) {
                        // Not joined: it may sit in a read of stdin when the container ends.
                        let _ = std::thread::Builder::new().name("berth-stdin".into()).spawn(move || {
                            let mut buf = [0u8; 4096];
                            let mut stdin = std::io::stdin();
                            while let Ok(n) = stdin.read(&mut buf) {
                                if n == 0 || to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                }
                let mut from = match fd.try_clone() {
                    Ok(f) => std::fs::File::from(f),
                    Err(_) => return,
                };
                let _ = slot.set(fd);
                let mut buf = [0u8; 16 * 1024];
                let mut out = std::io::stdout();
                // EIO once every slave is closed: the container is gone.
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            })
            .context("start the console thread")?;
        let saved = if interactive && std::io::stdin().is_terminal_fd() { raw_stdin() } else { None };
        Ok(Console { child_end: Some(theirs), master, output: Some(output), saved })
    }

    /// The fd number the container sends the master on.
    pub fn child_fd(&self) -> Option<i32> {
        self.child_end.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// After the spawn: our copy of the container's end must close, so a container that
    /// fails before sending does not leave the console thread waiting forever.
    pub fn spawned(&mut self) {
        self.child_end = None;
    }

    /// Copies berth's terminal size to the pty (on SIGWINCH).
    pub fn resize(&self) {
        if let Some(m) = self.master.get() {
            set_size(m);
        }
    }

    /// Waits for the last output and restores berth's terminal.
    pub fn finish(mut self) {
        self.child_end = None;
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(t) = self.saved.take() {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &t);
        }
    }
}

/// docker's check before `-it`: a pty fed from stdin needs a terminal there. Piped input
/// would be echoed back by the pty, and its end would never reach the command. Exits 1 at
/// once with docker's message; `-t` alone (stdin not attached) passes.
pub fn check_tty(interactive: bool, tty: bool) {
    if interactive && tty && !std::io::stdin().is_terminal_fd() {
        eprintln!("berth: the input device is not a TTY");
        super::run::exit_with(1);
    }
}

trait IsTerminalFd {
    fn is_terminal_fd(&self) -> bool;
}

impl<T: AsFd> IsTerminalFd for T {
    fn is_terminal_fd(&self) -> bool {
        rustix::termios::isatty(self)
    }
}

/// Puts stdin in raw mode; returns the settings to restore.
fn raw_stdin() -> Option<rustix::termios::Termios> {
    let saved = rustix::termios::tcgetattr(std::io::stdin()).ok()?;
    let mut raw = saved.clone();
    raw.make_raw();
    rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &raw).ok()?;
    Some(saved)
}

/// berth's terminal size (stdout's, else stdin's) as (rows, columns), or 24x80 without one.
pub fn terminal_size() -> (u16, u16) {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()
        .filter(|w| w.ws_row > 0 && w.ws_col > 0)
        .map_or((24, 80), |w| (w.ws_row, w.ws_col))
}

/// Gives the pty berth's terminal size (on SIGWINCH).
fn set_size(master: &OwnedFd) {
    let (ws_row, ws_col) = terminal_size();
    let _ =
        rustix::termios::tcsetwinsize(master, rustix::termios::Winsize { ws_row, ws_col, ws_xpixel: 0, ws_ypixel: 0 });
}
