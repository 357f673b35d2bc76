//! `berth exec`: a command in a running container, as `docker exec` runs it.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use runner::container::{self, exec};

/// Execute a command in a running container
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth exec web cat /etc/hostname\n  berth exec -it web sh\n  berth exec -u nobody -w /tmp -e MODE=ci web env"
)]
#[command(trailing_var_arg = true)]
pub struct Exec {
    /// The container
    container: String,
    /// The command and its arguments
    #[arg(required = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// Keep stdin open and attach it to the command
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a pty as its stdio
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file (docker's format), before -e's
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Run the command in the background: berth returns once it has started
    #[arg(short, long, conflicts_with_all = ["interactive", "tty"])]
    detach: bool,
}

impl Exec {
    /// The supervisor of the container, where it runs: a rootless berth's `exec` joins
    /// its user namespace.
    pub fn supervisor(&self, root: &Path) -> Option<i32> {
        container::find(root, &self.container).ok()?.state().ok()?.supervisor
    }

    /// Joins the container, runs the command with signals forwarded, exits with its code;
    /// with `-d`, returns once it has started (its output discarded, as docker's).
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        // As docker: a container that does not exist is the error to report first.
        super::console::check_tty(self.interactive, self.tty);
        let target = exec::Target::open(&c)?;
        // Until supervise listens for them: see `block_forwarded`.
        super::run::block_forwarded(true);
        // The console's thread must exist before this thread joins the PID namespace.
        let mut console = if self.tty { Some(super::console::Console::start(self.interactive)?) } else { None };
        let process = exec::Process {
            args: self.command.clone(),
            env: super::run::given_env(&self.env_file, &self.env)?,
            cwd: self.workdir.clone(),
            user: self.user.clone(),
            console_socket: console.as_ref().and_then(super::console::Console::child_fd),
            console_size: super::console::terminal_size(),
        };
        // A process that cannot be made (a user the image does not know): docker's 126.
        let mut cmd = match exec::command(&c, &target, &process) {
            Ok(cmd) => cmd,
            Err(e) => {
                eprintln!("berth: exec {:?} in {}: {e}", self.command[0], c.config.name);
                super::run::exit_with(126)
            }
        };
        if !self.interactive {
            cmd.stdin(std::process::Stdio::null());
        }
        if self.detach {
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        }
        let spawned = cmd
            .spawn()
            .map_err(|source| runner::sandbox::SandboxError::exec_failed(&self.command[0], source))
            .with_context(|| format!("exec {:?} in {}", self.command[0], c.config.name));
        let child = match spawned {
            Ok(child) => child,
            // docker's 127 (no such program), else 126: the program could not be run, or
            // the process could not be set up (its working directory, its user).
            Err(e) => {
                eprintln!("berth: {e:#}");
                super::run::exit_with(super::run::start_failure_code(&e).unwrap_or(126))
            }
        };
        drop(cmd);
        if self.detach {
            // It goes on without berth: the host's init (or a subreaper) collects its exit,
            // and it ends with the container, whose PID namespace it is in.
            drop(child);
            return Ok(());
        }
        if let Some(con) = console.as_mut() {
            con.spawned();
        }
        let code = super::run::supervise(child, 10, None, console.as_ref());
        if let Some(con) = console {
            con.finish();
        }
        super::run::exit_with(code?)
    }
}
