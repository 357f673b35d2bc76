//! `berth run`: one process in an image, in namespaces, for smoke tests.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::open_store;
use runner::sandbox::{Network, Spec, User};
use runner::snapshot::{CopySnapshotter, OverlaySnapshotter, Snapshotter};

/// Run a command in a new container
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run busybox echo hello\n  berth run -e MODE=ci -w /app app:ci /app/selftest\n  berth run --network host -u 1000 busybox id"
)]
#[command(trailing_var_arg = true)]
pub struct Run {
    /// The image
    image: String,
    /// The command and its arguments (default: the image's entrypoint and cmd)
    command: Vec<String>,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Network: none (loopback only) or host
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    network: String,
    /// Container host name
    #[arg(long, default_value = "berth")]
    hostname: String,
    /// Remove the container when it exits (containers are always ephemeral today)
    #[arg(long)]
    rm: bool,
}

impl Run {
    /// Prepares the rootfs, runs the process, removes the container, exits with its code.
    pub fn run(self, root: &Path) -> Result<()> {
        if !rustix::process::geteuid().is_root() {
            bail!("berth run needs root (namespaces and mounts); rootless containers are not supported yet");
        }
        let store = open_store(root)?;
        let rec = store.resolve(&self.image)?;
        let image = store.image(&rec.target)?;
        let cfg = image.config.config().clone().unwrap_or_default();
        let mut args: Vec<String> = match &self.entrypoint {
            Some(e) if e.is_empty() => Vec::new(),
            Some(e) => vec![e.clone()],
            None => cfg.entrypoint().clone().unwrap_or_default(),
        };
        if self.command.is_empty() {
            if self.entrypoint.is_none() {
                args.extend(cfg.cmd().clone().unwrap_or_default());
            }
        } else {
            args.extend(self.command.iter().cloned());
        }
        if args.is_empty() {
            bail!("no command specified: the image has no entrypoint or cmd");
        }
        let mut env = cfg.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        for kv in &self.env {
            let key = kv.split('=').next().unwrap_or(kv);
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(if kv.contains('=') {
                kv.clone()
            } else {
                format!("{kv}={}", std::env::var(kv).unwrap_or_default())
            });
        }
        env.push(format!("HOSTNAME={}", self.hostname));
        let overlay_ok = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay"));
        let snapshots = root.join("snapshots");
        let snapshotter: Box<dyn Snapshotter> = if overlay_ok {
            Box::new(OverlaySnapshotter::new(&snapshots.join("overlay"))?)
        } else {
            Box::new(CopySnapshotter::new(&snapshots.join("copy"))?)
        };
        let id = format!("{:x}", rand_id());
        let key = format!("container-{id}");
        let mountpoint = root.join("containers").join(&id);
        std::fs::create_dir_all(&mountpoint).with_context(|| format!("create {}", mountpoint.display()))?;
        let result = (|| -> Result<i32> {
            let rootfs = runner::rootfs::prepare(&store, &image, snapshotter.as_ref(), &key)
                .with_context(|| format!("prepare the rootfs of {}", self.image))?;
            let spec = Spec {
                rootfs,
                mountpoint: mountpoint.clone(),
                args,
                env,
                cwd: self
                    .workdir
                    .clone()
                    .or_else(|| cfg.working_dir().clone())
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into()),
                user: self.user.clone().or_else(|| cfg.user().clone()).filter(|u| !u.is_empty()).map(User),
                ids: None,
                hostname: self.hostname.clone(),
                network: if self.network == "host" { Network::Host } else { Network::None },
            };
            Ok(runner::sandbox::run(&spec)?)
        })();
        let _ = snapshotter.remove(&key);
        let _ = std::fs::remove_dir(&mountpoint);
        let code = result?;
        std::process::exit(code);
    }
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}
