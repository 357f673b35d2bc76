//! What berth does about processes that are stopped: every command first removes what dead
//! berth processes left in the root (see `runner::lease`), and `berth build` stops cleanly on
//! SIGTERM and SIGINT (a CI cancel, Ctrl-C): its RUN processes killed, its snapshots and
//! scratch directories removed, exit status 143 or 130 as a shell's.

use std::path::Path;

use anyhow::{Context, Result};

/// Removes what the leases of dead berth processes claim. A failure is reported and does not
/// stop the command: the next one tries again.
pub fn sweep(root: &Path) {
    if let Err(e) = runner::lease::sweep(root) {
        eprintln!("berth: warning: remove what stopped berth processes left in {}: {e}", root.display());
    }
}

/// Installs the handlers: from now on SIGTERM and SIGINT stop this process after its cleanup.
pub fn clean_up_on_signals() -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    std::thread::Builder::new()
        .name("berth-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let code = rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let streams = signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
                let (mut term, mut int) = match streams {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return None;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = term.recv() => Some(("SIGTERM", 143)),
                    _ = int.recv() => Some(("SIGINT", 130)),
                }
            });
            if let Some((name, code)) = code {
                stop(name, code);
            }
        })
        .context("start the signal thread")?;
    ready_rx.recv().context("the signal thread stopped")?.context("listen for SIGTERM and SIGINT")
}

/// Kills the running steps, removes what this process owns, exits.
fn stop(signal: &str, code: i32) -> ! {
    let killed = runner::exec::kill_running();
    let removed = runner::lease::cancel();
    eprintln!("\nberth: {signal}: stopped; killed {killed} running step(s), removed {removed} temporary snapshot(s)");
    std::process::exit(code)
}
