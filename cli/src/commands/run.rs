//! `berth run`: one process in an image, in namespaces, for smoke tests.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::open_store;
use runner::sandbox::{Network, Spec, User, Volume};

/// Run a command in a new container
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run busybox echo hello\n  berth run -e MODE=ci -w /app app:ci /app/selftest\n  berth run --network host -u 1000 busybox id"
)]
#[command(trailing_var_arg = true)]
pub struct Run {
    /// The image
    image: String,
    /// The command and its arguments (default: the image's entrypoint and cmd); everything
    /// after the image is the container's, also words that start with `-`, as in docker
    #[arg(allow_hyphen_values = true)]
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
    /// Remove the container when it exits (unnamed containers always are)
    #[arg(long)]
    rm: bool,
    /// Keep the container under this name after it exits (for `berth commit`, `berth rm`)
    #[arg(long)]
    name: Option<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments)
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Bind mount a host path: HOST:CONTAINER[:ro]
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<Volume>,
    /// Mount a fresh tmpfs at this container path
    #[arg(long, value_name = "PATH")]
    tmpfs: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Set a resource limit: NAME=SOFT[:HARD] (nofile, nproc, core, stack, ...; -1 is unlimited),
    /// never above berth's own hard limit
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<runner::rlimit::Ulimit>,
    /// Run an init as PID 1 that forwards signals and reaps zombies
    #[arg(long)]
    init: bool,
    /// Keep stdin open and attach it to the container (without it the container's stdin is empty)
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a pty (sized like berth's terminal) as its stdio
    #[arg(short, long)]
    tty: bool,
    /// Seconds to wait after forwarding SIGTERM/SIGINT before SIGKILL
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    stop_timeout: u64,
    /// Stop the container after this many seconds and exit 124 (a hung smoke test fails)
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Memory limit (e.g. 64m, 1g)
    #[arg(short, long, value_parser = runner::cgroup::parse_size)]
    memory: Option<u64>,
    /// Maximum number of processes
    #[arg(long, value_name = "N")]
    pids_limit: Option<u64>,
    /// Number of CPUs (e.g. 0.5)
    #[arg(long)]
    cpus: Option<f64>,
    /// Add Linux capabilities (SYS_PTRACE, CAP_NET_ADMIN, ALL)
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (NET_RAW, ALL)
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Give the container every capability and no seccomp filter
    #[arg(long)]
    privileged: bool,
    /// Security options: seccomp=unconfined, seccomp=PROFILE.json (docker's format), no-new-privileges
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// Run with berth's own sandbox, or hand an OCI bundle to runc or crun
    #[arg(long, default_value = "berth", value_parser = ["berth", "runc", "crun"])]
    runtime: String,
    #[command(flatten)]
    remote: super::transfer::Remote,
}

impl Run {
    /// Prepares the rootfs, runs the process, removes the container, exits with its code.
    pub fn run(self, root: &Path) -> Result<()> {
        if !rustix::process::geteuid().is_root() {
            bail!("berth run needs root (namespaces and mounts); rootless containers are not supported yet");
        }
        let store = open_store(root)?;
        let rec = match store.resolve(&self.image) {
            Ok(rec) => rec,
            Err(oci::Error::ImageNotFound(_)) => self.pull(&store)?,
            Err(e) => return Err(e.into()),
        };
        let image = store.image(&rec.target)?;
        let cfg = image.config.config().clone().unwrap_or_default();
        let args = self.command_line(&cfg)?;
        let env = self.environment(&cfg)?;
        let mut security =
            runner::security::Security::docker(&self.cap_add, &self.cap_drop, self.privileged, &self.security_opt)?;
        // Compiling docker's profile costs more than the rest of a start: keep it compiled.
        security.filter_cache = Some(root.join("seccomp"));
        self.warn_capped_ulimits();
        let snapshotter = super::container::snapshotter(root)?;
        let id = format!("{:x}", rand_id());
        let record = self.record(root, &rec, &args)?;
        let key = match &record {
            Some(r) => super::container::key(&r.name),
            None => format!("container-{id}"),
        };
        // berth's own sandbox mounts the rootfs in the container's private mount namespace, so
        // every container can use one directory; runc and crun get a bundle of their own.
        let own_runtime = self.runtime == "berth";
        let mountpoint = root.join("containers").join(if own_runtime { ".rootfs" } else { id.as_str() });
        std::fs::create_dir_all(&mountpoint).with_context(|| format!("create {}", mountpoint.display()))?;
        let limits = runner::cgroup::Limits { memory: self.memory, pids: self.pids_limit, cpus: self.cpus };
        let cgroup = if limits.is_empty() {
            None
        } else {
            Some(runner::cgroup::Cgroup::create(&id, &limits).context("set up cgroup limits")?)
        };
        let cgroups = cgroup.as_ref().map(runner::cgroup::Cgroup::procs_files).unwrap_or_default();
        // Whether the snapshot `key` was made, and so must be removed or kept afterwards.
        let mut snapshot_made = false;
        let result = (|| -> Result<i32> {
            let context = || format!("prepare the rootfs of {}", self.image);
            let rootfs = if record.is_none() && own_runtime {
                // Nothing of an unnamed container is kept: its writes can live in memory.
                match runner::rootfs::prepare_throwaway(&store, &image, snapshotter.as_ref(), &key)
                    .with_context(context)?
                {
                    runner::rootfs::Throwaway::Scratch(mounts) => mounts,
                    runner::rootfs::Throwaway::Snapshot(mounts) => {
                        snapshot_made = true;
                        mounts
                    }
                }
            } else {
                let mounts =
                    runner::rootfs::prepare(&store, &image, snapshotter.as_ref(), &key).with_context(context)?;
                snapshot_made = true;
                mounts
            };
            let mut console = if self.tty && self.runtime == "berth" {
                Some(super::console::Console::start(self.interactive)?)
            } else {
                None
            };
            let mut spec = self.spec(&cfg, (args, env), rootfs, mountpoint.clone(), cgroups, console.as_ref());
            spec.security = security;
            let child = self.spawn(&spec, &limits, &id, console.as_mut())?;
            let code = supervise(child, self.stop_timeout, self.timeout, console.as_ref());
            if let Some(c) = console {
                c.finish();
            }
            code
        })();
        if let Some(cg) = cgroup {
            cg.remove();
        }
        match record {
            Some(mut r) if !self.rm => {
                r.exit_code = result.as_ref().ok().copied();
                super::container::save(root, &r)?;
            }
            Some(r) => {
                if snapshot_made {
                    let _ = snapshotter.remove(&key);
                }
                let _ = std::fs::remove_file(root.join("containers").join(format!("{}.json", r.name)));
            }
            None if snapshot_made => {
                let _ = snapshotter.remove(&key);
            }
            None => {}
        }
        if !own_runtime {
            remove_bundle(&mountpoint);
        }
        let code = result?;
        exit_with(code)
    }

    /// What the sandbox runs: the process, the rootfs and every setting of the flags.
    fn spec(
        &self,
        cfg: &oci::spec::Config,
        (args, env): (Vec<String>, Vec<String>),
        rootfs: Vec<runner::snapshot::Mount>,
        mountpoint: std::path::PathBuf,
        cgroups: Vec<std::path::PathBuf>,
        console: Option<&super::console::Console>,
    ) -> Spec {
        Spec {
            rootfs,
            mountpoint,
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
            volumes: self.volume.clone(),
            tmpfs: self.tmpfs.clone(),
            ulimits: self.ulimit.clone(),
            read_only: self.read_only,
            etc: Some(runner::sandbox::EtcFiles::new(&self.hostname, self.network == "host")),
            cgroups,
            init: self.init,
            console_socket: console.and_then(super::console::Console::child_fd),
            console_size: super::console::terminal_size(),
            security: Default::default(),
        }
    }

    /// Starts the container with berth's sandbox, or through runc or crun (`--runtime`).
    fn spawn(
        &self,
        spec: &Spec,
        limits: &runner::cgroup::Limits,
        id: &str,
        console: Option<&mut super::console::Console>,
    ) -> Result<std::process::Child> {
        if self.runtime == "berth" {
            let mut cmd = runner::sandbox::command(spec)?;
            if !self.interactive {
                cmd.stdin(std::process::Stdio::null());
            }
            let child = cmd.spawn().context("start the container")?;
            if let Some(c) = console {
                c.spawned();
            }
            return Ok(child);
        }
        if !limits.is_empty() {
            bail!("--memory, --pids-limit and --cpus work with berth's own runtime only");
        }
        if self.init || self.tty {
            bail!("--init and -t work with berth's own runtime only");
        }
        spawn_external(&self.runtime, spec, &spec.mountpoint.with_extension("bundle"), id)
    }

    /// The process to run: the entrypoint (or `--entrypoint`) followed by the command given
    /// after the image, else the image's cmd (not with `--entrypoint`, as docker does).
    fn command_line(&self, cfg: &oci::spec::Config) -> Result<Vec<String>> {
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
        Ok(args)
    }

    /// The image's environment (with docker's default PATH when it has none), then
    /// `--env-file` lines, then `-e` (a bare `-e KEY` copies berth's own value), then HOSTNAME.
    fn environment(&self, cfg: &oci::spec::Config) -> Result<Vec<String>> {
        let mut env = cfg.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        let mut given = Vec::new();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
            given
                .extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
        }
        given.extend(self.env.iter().cloned());
        for kv in &given {
            let key = kv.split('=').next().unwrap_or(kv);
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(if kv.contains('=') {
                kv.clone()
            } else {
                format!("{kv}={}", std::env::var(kv).unwrap_or_default())
            });
        }
        env.push(format!("HOSTNAME={}", self.hostname));
        Ok(env)
    }

    /// One line per `--ulimit` whose hard limit had to be lowered to berth's own.
    fn warn_capped_ulimits(&self) {
        for u in &self.ulimit {
            if let (capped, Some(host)) = u.capped() {
                let shown = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
                eprintln!(
                    "berth: --ulimit {}: the hard limit is capped at berth's own, {host} (soft {}, hard {})",
                    u.name,
                    shown(capped.soft),
                    shown(capped.hard)
                );
            }
        }
    }

    /// For `--name`: the container's record, saved before it starts (the name must be free).
    fn record(&self, root: &Path, rec: &oci::ImageRecord, args: &[String]) -> Result<Option<super::container::Record>> {
        let Some(name) = &self.name else { return Ok(None) };
        super::container::check_name(name)?;
        if super::container::load(root, name).is_ok() {
            bail!("the container name {name:?} is already in use: berth rm {name} first");
        }
        let r = super::container::Record {
            name: name.clone(),
            image: self.image.clone(),
            manifest: rec.target.digest.to_string(),
            command: args.to_vec(),
            created: oci::store::created_now(),
            exit_code: None,
        };
        super::container::save(root, &r)?;
        Ok(Some(r))
    }
}

/// Removes what running under runc or crun left: the mountpoint and the bundle beside it.
fn remove_bundle(mountpoint: &Path) {
    let _ = std::fs::remove_dir(mountpoint);
    let bundle = mountpoint.with_extension("bundle");
    if bundle.exists() {
        // Unmount the rootfs first: removing the bundle must never walk into it.
        let _ = runner::snapshot::unmount(&bundle.join("rootfs"));
        let _ = std::fs::remove_file(bundle.join("config.json"));
        let _ = std::fs::remove_dir(bundle.join("rootfs"));
        let _ = std::fs::remove_dir(&bundle);
    }
}

/// Ends berth with the container's exit code, without the exit-time destructors that
/// `std::process::exit` runs: tearing down rocksdb's C++ statics is a measurable part of a
/// smoke test's start-to-exit time, and berth has nothing left to finish but its stdio.
fn exit_with(code: i32) -> ! {
    use std::io::Write;
    // As with std::process::exit, a failed flush at exit has no one left to report to.
    let _stdout = std::io::stdout().flush();
    let _stderr = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; no Rust state is touched afterwards.
    unsafe { libc::_exit(code) }
}

/// Runs `spec` through an OCI runtime: a bundle with the same process and rootfs, in a
/// private mount namespace of berth's, so the rootfs mount goes away with berth.
fn spawn_external(runtime: &str, spec: &Spec, bundle: &Path, id: &str) -> Result<std::process::Child> {
    // SAFETY: berth is single-threaded here (any pull runtime was shut down).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.context("new mount namespace")?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .context("make mounts private")?;
    let ids = match &spec.user {
        Some(User(u)) => runner::sandbox::resolve_user(&spec.rootfs, u)?,
        None => (0, 0, vec![0]),
    };
    runner::bundle::write(bundle, spec, ids).context("write the OCI bundle")?;
    let mut cmd = std::process::Command::new(runtime);
    if runtime == "crun" {
        cmd.arg("--cgroup-manager=disabled");
        hide_unified_controllers()?;
    }
    cmd.args(["run", "--bundle"]).arg(bundle).arg(format!("berth-{id}"));
    cmd.spawn().with_context(|| format!("start {runtime}"))
}

/// crun 1.8 refuses every container on hybrid cgroups (v1 plus cgroup2 at
/// /sys/fs/cgroup/unified) once that cgroup2 tree has a controller, before it reads
/// `--cgroup-manager=disabled`; on this kind of host the hierarchy has hugetlb. In berth's
/// private mount namespace (see [`spawn_external`]) an empty file is bound over that list,
/// so crun sees no controller there. Nothing outside berth changes.
fn hide_unified_controllers() -> Result<()> {
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    match std::fs::read_to_string(controllers) {
        Ok(list) if !list.trim().is_empty() => {
            rustix::mount::mount_bind("/dev/null", controllers)
                .with_context(|| format!("hide {} from crun", controllers.display()))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

impl Run {
    /// Pulls the image, as docker run does when it is not in the store. The runtime is
    /// shut down (its threads joined) before any namespace is made: after
    /// unshare(CLONE_NEWPID) no thread may be created, and the fork must be single-threaded.
    fn pull(&self, store: &oci::ImageStore) -> Result<oci::ImageRecord> {
        let reference: oci::Reference = self.image.parse()?;
        eprintln!("Unable to find image '{}' locally", reference.familiar());
        let client = self.remote.client()?;
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the async runtime")?;
        let display = crate::progress::Display::new(crate::progress::Mode::Auto, false, "Downloading");
        let pulled = rt.block_on(oci::client::pull(&client, store, &reference, &Default::default(), &display));
        display.finish();
        drop(client);
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
        pulled.with_context(|| format!("pull {}", reference.familiar()))
    }
}

fn rand_id() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}

/// Waits for the container, forwarding SIGTERM and SIGINT to it, then SIGKILL after
/// `stop_timeout`; with `timeout`, stops it when time runs out and returns 124.
fn supervise(
    mut child: std::process::Child,
    stop_timeout: u64,
    timeout: Option<u64>,
    console: Option<&super::console::Console>,
) -> Result<i32> {
    use rustix::process::{kill_process, Pid, Signal};
    use std::time::Duration;
    use tokio::signal::unix::{signal, SignalKind};
    let pid = Pid::from_child(&child);
    // No waiter thread: after unshare(CLONE_NEWPID) this process may not create threads.
    // A pidfd becomes readable when the child exits, and tokio can wait on it.
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).context("open a pidfd")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the async runtime")?;
    rt.block_on(async move {
        // SAFETY: the pidfd is owned by the AsyncFd and closed only when it is dropped.
        let exited = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| anyhow::anyhow!("watch the container process: {e}"))?;
        let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
        let mut winch = signal(SignalKind::window_change()).context("listen for SIGWINCH")?;
        let far = Duration::from_secs(u64::MAX / 4);
        let deadline = tokio::time::sleep(timeout.map_or(far, Duration::from_secs));
        let kill_at = tokio::time::sleep(far);
        tokio::pin!(deadline, kill_at);
        let mut timed_out = false;
        loop {
            let forward = tokio::select! {
                _ready = exited.readable() => {
                    let status = child.wait().context("wait for the container")?;
                    if timed_out {
                        eprintln!("berth: the container ran past --timeout {}s and was stopped", timeout.unwrap_or(0));
                        return Ok(124);
                    }
                    return Ok(runner::sandbox::exit_code(status));
                }
                _ = term.recv() => Signal::TERM,
                _ = int.recv() => Signal::INT,
                _ = winch.recv() => {
                    // The pty follows berth's terminal; the kernel tells the command.
                    if let Some(c) = console {
                        c.resize();
                    }
                    continue;
                }
                () = &mut deadline, if !timed_out => {
                    timed_out = true;
                    Signal::TERM
                }
                () = &mut kill_at => Signal::KILL,
            };
            let _ = kill_process(pid, forward);
            if forward != Signal::KILL {
                kill_at.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(stop_timeout));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Run;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: Run,
    }

    fn parse(args: &[&str]) -> Run {
        let argv = std::iter::once("run").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.run).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn words_after_the_image_belong_to_the_container_even_with_dashes() {
        let r = parse(&["--rm", "-e", "A=1", "app", "--port", "9000", "-e", "x", "--rm"]);
        assert!(r.rm);
        assert_eq!(r.env, ["A=1"]);
        assert_eq!(r.image, "app");
        assert_eq!(r.command, ["--port", "9000", "-e", "x", "--rm"]);
        let r = parse(&["app", "-c", "echo hi"]);
        assert_eq!((r.image.as_str(), r.command.as_slice()), ("app", ["-c", "echo hi"].map(String::from).as_slice()));
        // `--` still works, and is not passed on.
        assert_eq!(parse(&["--network", "host", "app", "--", "ls", "-l"]).command, ["ls", "-l"]);
        assert_eq!(parse(&["app"]).command, Vec::<String>::new());
    }
}
