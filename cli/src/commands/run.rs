//! `berth run`: one process in an image, in namespaces, for smoke tests.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::open_store;
use runner::sandbox::Spec;

/// Run a command in a new container
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run busybox echo hello\n  berth run -e MODE=ci -w /app app:ci /app/selftest\n  berth run --network host -u 1000 busybox id"
)]
#[command(trailing_var_arg = true)]
pub struct Run {
    /// The image, then the command and its arguments (default: the image's entrypoint and
    /// cmd). Everything after the image is the container's, also words that start with `-`
    /// and berth's own flags (`--entrypoint sh IMAGE -c ...`), as in docker
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, value_name = "IMAGE [COMMAND [ARG...]]")]
    words: Vec<String>,
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
    /// The platform's image of a multi-platform image (os/arch[/variant]; pulled if missing);
    /// a foreign one runs through its registered QEMU emulator
    #[arg(long)]
    platform: Option<oci::Platform>,
    /// Network: bridge (its own namespace on berth's bridge berth0, with an address, NAT and
    /// DNS), none (loopback only; published ports reach it through the supervisor), host, or
    /// a network made by `berth network create` (containers there reach each other by name)
    #[arg(long, visible_alias = "net", default_value = "bridge")]
    network: String,
    /// Another name the container has on a user-defined network (repeatable)
    #[arg(long = "network-alias", visible_alias = "net-alias", value_name = "ALIAS")]
    network_alias: Vec<String>,
    /// Container host name (default: the container ID's first 12 digits, as docker; the
    /// host's name with `--network host`)
    #[arg(long)]
    hostname: Option<String>,
    /// Remove the container when it exits (unnamed containers always are)
    #[arg(long)]
    rm: bool,
    /// Keep the container under this name after it exits (for `berth commit`, `berth rm`)
    #[arg(long)]
    name: Option<String>,
    /// Add a line to /etc/hosts: HOST:IP (IP `host-gateway`: the host, as the container reaches it)
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = check_add_host)]
    add_host: Vec<String>,
    /// A name server for the container's /etc/resolv.conf, in place of the host's (repeatable;
    /// on a user-defined network, where its resolver forwards the names it does not know)
    #[arg(long, value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// A search domain for /etc/resolv.conf, in place of the host's (repeatable)
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// An option for /etc/resolv.conf, e.g. ndots:2 (repeatable)
    #[arg(long = "dns-option", visible_alias = "dns-opt", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// Set a label on the container: KEY=VALUE (KEY alone: an empty value)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Read labels from a file (KEY=VALUE lines, # comments), before --label
    #[arg(long = "label-file", value_name = "FILE")]
    label_file: Vec<std::path::PathBuf>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments)
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Mount a volume or a host path: NAME:CONTAINER[:ro], HOST:CONTAINER[:ro], or CONTAINER
    /// alone (an anonymous volume)
    #[arg(short, long = "volume", value_name = "[SOURCE:]CONTAINER[:MODES]")]
    volume: Vec<runner::volume::VolumeArg>,
    /// Mount a volume, host path or tmpfs: type=volume|bind|tmpfs,source=...,target=...[,readonly]
    #[arg(long, value_name = "type=TYPE,source=SRC,target=DEST")]
    mount: Vec<runner::volume::MountArg>,
    /// Mount the volumes and binds of another container, at the same paths (:ro or :rw for all)
    #[arg(long, value_name = "CONTAINER[:ro|:rw]")]
    volumes_from: Vec<String>,
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
    #[command(flatten)]
    resources: super::resources::Resources,
    /// How readily the kernel swaps the container's memory out, 0 to 100 (cgroup v1 only)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    memory_swappiness: Option<i64>,
    /// Never let the OOM killer kill the container's processes (cgroup v1 only; with --memory)
    #[arg(long)]
    oom_kill_disable: bool,
    /// How readily the OOM killer picks the container's processes, -1000 to 1000
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    oom_score_adj: Option<i32>,
    /// Add Linux capabilities (SYS_PTRACE, CAP_NET_ADMIN, ALL)
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities (NET_RAW, ALL)
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Give the container every capability, no seccomp filter, the host's devices, no masked
    /// paths and a writable /sys
    #[arg(long)]
    privileged: bool,
    /// Security options: seccomp=unconfined, seccomp=PROFILE.json (docker's format),
    /// no-new-privileges[=true|false], systempaths=unconfined, apparmor=unconfined, label=disable
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// Run the container in the background under a supervisor and print its ID
    #[arg(short, long)]
    detach: bool,
    /// Publish a container's port, or a range of them, to the host:
    /// [IP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp]
    #[arg(short, long, value_name = "[IP:][HOSTPORT:]PORT[/PROTO]", value_parser = runner::container::ports::publish)]
    publish: Vec<Vec<runner::container::ports::PortSpec>>,
    /// Restart policy when the container exits (with -d): no, always, unless-stopped,
    /// on-failure[:MAX-RETRIES]
    #[arg(long, default_value = "no", value_name = "POLICY")]
    restart: runner::container::restart::Policy,
    /// Expose a port or a range of ports (PORT[/PROTO], FROM-TO[/PROTO]) besides the image's
    /// EXPOSE: listed in the container's config, published by -P
    #[arg(long, value_name = "PORT", value_parser = runner::container::ports::expose)]
    expose: Vec<Vec<String>>,
    /// Publish every exposed port to a free host port
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// With -d: return only once the container is healthy (or running, without a health check);
    /// fail with its last health output and log lines if it becomes unhealthy or exits
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (e.g. 60s, 2m; default 60s)
    #[arg(long, value_name = "DURATION")]
    wait_timeout: Option<String>,
    /// Command to run to check health (a shell command)
    #[arg(long, value_name = "CMD")]
    health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s)
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Maximum time a health check may take
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Time to initialize before failing checks count
    #[arg(long, value_name = "DURATION")]
    health_start_period: Option<String>,
    /// Time between health checks during the start period
    #[arg(long, value_name = "DURATION")]
    health_start_interval: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long, value_name = "N")]
    health_retries: Option<u32>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    no_healthcheck: bool,
    /// Signal to stop the container (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Size of /dev/shm (e.g. 256m, 1g; default 64m)
    #[arg(long, value_name = "SIZE", value_parser = runner::cgroup::parse_size)]
    shm_size: Option<u64>,
    /// Add a supplementary group the process runs with: a name in the image's /etc/group, or
    /// a number (repeatable)
    #[arg(long, value_name = "GROUP")]
    group_add: Vec<String>,
    /// Give the container a host device: HOST[:CONTAINER[:PERMS]] (a directory gives every
    /// node under it; PERMS rw or rwm, the default)
    #[arg(long, value_name = "HOST[:CONTAINER[:PERMS]]")]
    device: Vec<String>,
    /// Set a kernel setting of the container's own namespaces: KEY=VALUE (net.*, kernel.shm*,
    /// kernel.msg*, kernel.sem, fs.mqueue.*; repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
    /// IPC namespace: private (default), shareable, none (no /dev/shm), host, container:NAME
    #[arg(long, default_value = "private", value_name = "MODE")]
    ipc: String,
    /// PID namespace: the container's own (default), host, or container:NAME
    #[arg(long, default_value = "", hide_default_value = true, value_name = "MODE")]
    pid: String,
    /// UTS namespace (the host name): the container's own (default) or host
    #[arg(long, default_value = "", hide_default_value = true, value_name = "MODE")]
    uts: String,
    /// Cgroup namespace: private (default) or host
    #[arg(long, default_value = "private", value_name = "MODE")]
    cgroupns: String,
    /// User namespace: host, the only one (berth maps no user namespace)
    #[arg(long, default_value = "", hide_default_value = true, value_name = "MODE")]
    userns: String,
    /// Pull the image before running: missing (only when it is not stored), always, never
    #[arg(long, default_value = "missing", value_parser = ["missing", "always", "never"])]
    pull: String,
    /// Suppress the pull output
    #[arg(short, long)]
    quiet: bool,
    /// Write the container's ID to this file (which must not exist yet)
    #[arg(long, value_name = "FILE")]
    cidfile: Option<String>,
    /// Run with berth's own sandbox, or hand an OCI bundle to runc or crun
    #[arg(long, default_value = "berth", value_parser = ["berth", "runc", "crun"])]
    runtime: String,
    #[command(flatten)]
    remote: super::transfer::Remote,
    /// `berth create`: make the container (record, rootfs) without starting it.
    #[arg(skip)]
    create_only: bool,
    /// The user-defined network's ID, once `--network` is found.
    #[arg(skip)]
    network_id: String,
}

/// Create a new container without starting it (`berth start` starts it)
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth create --name t app:test ./selftest\n  berth start -a t\n  berth cp t:/out/report.xml .\n  berth rm t"
)]
pub struct Create {
    #[command(flatten)]
    run: Run,
}

impl Create {
    /// Makes the container as `run -d` would, prints its ID, and leaves it `Created`.
    pub fn run(self, root: &Path) -> Result<()> {
        let mut run = self.run;
        if run.detach || run.wait {
            bail!("-d and --wait belong to run: a created container starts with berth start");
        }
        // Everything a detached container may have (published ports, health checks).
        run.detach = true;
        run.create_only = true;
        run.run(root)
    }
}

impl Run {
    /// The image: the first of the words after the options (clap takes them as one list, so
    /// that nothing after the image is read as berth's option).
    fn image(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// The command: the words after the image, less one `--` right after it (a separator, as
    /// berth has always read it).
    fn command(&self) -> &[String] {
        let rest = self.words.get(1..).unwrap_or_default();
        rest.strip_prefix(&["--".to_owned()]).unwrap_or(rest)
    }

    /// Prepares the rootfs and runs the process: in the foreground to its end (exiting with
    /// its code), or detached under a supervisor (printing the container's ID).
    pub fn run(mut self, root: &Path) -> Result<()> {
        if !rustix::process::geteuid().is_root() {
            bail!("berth run needs root (namespaces and mounts); rootless containers are not supported yet");
        }
        // Root without CAP_SYS_ADMIN (an unprivileged container) cannot mount a rootfs: say
        // so first, and what works there.
        if !runner::security::caps::Capabilities::all().has("SYS_ADMIN") {
            bail!(
                "berth run needs CAP_SYS_ADMIN (namespaces and mounts), which this berth does not hold, as in an \
                 unprivileged container; builds work there: berth build --isolation chroot"
            );
        }
        self.check_flags()?;
        (self.network, self.network_id) = self.check_network(root)?;
        self.ipc = self.check_ipc(root)?;
        self.pid = self.check_namespaces(root)?;
        if !self.detach {
            super::console::check_tty(self.interactive, self.tty);
        }
        // An empty --cidfile is none, as docker reads it.
        let cidfile =
            self.cidfile.as_deref().filter(|f| !f.is_empty()).map(|f| CidFile::create(f.as_ref())).transpose()?;
        let store = open_store(root)?;
        let rec = self.image_record(&store)?;
        let platform = self.platform.clone().unwrap_or_else(oci::Platform::host);
        let (rec, image) = self.platform_image(&store, rec, &platform)?;
        if !image.config.architecture().to_string().is_empty() {
            let runs_on = oci::Platform::of_config(&image.config);
            // A one-platform image is taken as it is: it must be the platform asked for.
            if let Some(asked) = self.platform.as_ref().filter(|a| !is_platform(&runs_on, a)) {
                bail!("image {} is for {runs_on}, not for {asked} (--platform)", self.image());
            }
            runner::emulation::check(&runs_on, &runner::emulation::binfmt_dir()).map_err(anyhow::Error::msg)?;
        }
        let config = self.container_config(root, &rec, &image)?;
        self.warn_capped_ulimits();
        if self.detach {
            return self.run_detached(root, &store, &image, config, cidfile);
        }
        self.run_foreground(root, &store, &image, config, cidfile)
    }

    /// `rec`'s image for `platform`. With `--platform`, one the store lacks (an index without
    /// it, or another platform's image under the name) is pulled, as docker 20.10 does,
    /// unless `--pull never`; a failed pull names the platform that is stored.
    fn platform_image(
        &self,
        store: &oci::ImageStore,
        rec: oci::ImageRecord,
        platform: &oci::Platform,
    ) -> Result<(oci::ImageRecord, oci::store::Image)> {
        let found = match store.image_for(&rec.target, platform) {
            Ok(image) => Some(image),
            Err(oci::Error::ImageNotFound(_)) if self.platform.is_some() => None,
            Err(e) => return Err(e.into()),
        };
        let other = found.as_ref().and_then(|image| {
            let arch = image.config.architecture().to_string();
            let on = oci::Platform::of_config(&image.config);
            (self.platform.is_some() && !arch.is_empty() && !is_platform(&on, platform)).then_some(on)
        });
        match (found, &other) {
            (Some(image), None) => return Ok((rec, image)),
            (Some(image), Some(_)) if self.pull == "never" => return Ok((rec, image)),
            _ => {}
        }
        let pulled = self.pull(store, true).and_then(|rec| Ok((store.image_for(&rec.target, platform)?, rec)));
        match (pulled, other) {
            (Ok((image, rec)), _) => Ok((rec, image)),
            (Err(e), Some(on)) => {
                Err(e.context(format!("image {} is for {on}, not for {platform} (--platform)", self.image())))
            }
            (Err(e), None) => Err(e),
        }
    }

    /// The image to run, pulled as `--pull` says: when it is not stored (`missing`), every
    /// time (`always`), or never.
    fn image_record(&self, store: &oci::ImageStore) -> Result<oci::ImageRecord> {
        if self.pull == "always" {
            return self.pull(store, false);
        }
        match store.resolve(self.image()) {
            Ok(rec) => Ok(rec),
            Err(oci::Error::ImageNotFound(_)) if self.pull == "never" => {
                bail!("No such image: {} (--pull never)", self.image())
            }
            Err(oci::Error::ImageNotFound(_)) => self.pull(store, true),
            Err(e) => Err(e.into()),
        }
    }

    /// The network's name: a predefined one, or one in the store (given by name or ID);
    /// aliases need a user-defined one, as docker's.
    fn check_network(&self, root: &Path) -> Result<(String, String)> {
        if runner::network::user::PREDEFINED.contains(&self.network.as_str()) {
            if !self.network_alias.is_empty() {
                bail!("network-scoped aliases are supported only for containers in user-defined networks");
            }
            return Ok((self.network.clone(), String::new()));
        }
        if let Some(other) = self.network.strip_prefix(runner::container::config::SHARED_PREFIX) {
            return self.shared_network(root, other);
        }
        for alias in &self.network_alias {
            runner::container::check_name(alias).with_context(|| format!("--network-alias {alias:?}"))?;
        }
        let network = runner::network::user::find(root, &self.network)?;
        Ok((network.name, network.id))
    }

    /// `--network container:NAME`: that container's namespace, recorded by its ID, as
    /// docker records it; it must be running to run (`create` checks at `start`, as docker).
    fn shared_network(&self, root: &Path, other: &str) -> Result<(String, String)> {
        if !self.network_alias.is_empty() {
            bail!("network-scoped aliases are supported only for containers in user-defined networks");
        }
        Ok((self.shared_container(root, other, "network")?, String::new()))
    }

    /// `--network` or `--ipc container:NAME` (`what`) as recorded: `container:ID`; the other
    /// container must be running to run (`create` checks at `start`, as docker).
    fn shared_container(&self, root: &Path, other: &str, what: &str) -> Result<String> {
        if other.is_empty() {
            bail!("--{} container:NAME: the name or ID of a container is missing", what.to_lowercase());
        }
        let c = runner::container::find(root, other)?;
        if !self.create_only && c.state()?.status != runner::container::Status::Running {
            bail!("cannot join {what} of a non running container: {other}");
        }
        Ok(format!("{}{}", runner::container::config::SHARED_PREFIX, c.config.id))
    }

    /// `--ipc` as recorded: a mode docker knows, another container's by its ID (which must
    /// be running to run, and made `--ipc shareable`, checked at each start); IPC settings
    /// (`--sysctl kernel.*`, `fs.mqueue.*`) are refused in the host's namespace, as docker
    /// refuses them.
    fn check_ipc(&self, root: &Path) -> Result<String> {
        if self.ipc.starts_with(runner::container::config::SHARED_PREFIX) && self.runtime != "berth" {
            bail!("--ipc container:NAME works with berth's own runtime only");
        }
        if let Some(other) = self.ipc.strip_prefix(runner::container::config::SHARED_PREFIX) {
            self.check_ipc_sysctls("another container's IPC namespace (--ipc container:NAME)")?;
            return self.shared_container(root, other, "IPC");
        }
        if !["private", "shareable", "none", "host"].contains(&self.ipc.as_str()) {
            bail!("invalid IPC mode {:?}: private, shareable, none, host or container:NAME", self.ipc);
        }
        self.check_ipc_sysctls("the host's IPC namespace (--ipc host)")?;
        Ok(self.ipc.clone())
    }

    /// `--pid` as recorded (another container's by its ID, which must be running to run),
    /// `--uts`, `--cgroupns` and `--userns` checked, each as docker checks it.
    fn check_namespaces(&self, root: &Path) -> Result<String> {
        let valid = [
            ("UTS", "--uts", ["", "host"].contains(&self.uts.as_str()), "host"),
            ("CGROUP", "--cgroupns", ["", "private", "host"].contains(&self.cgroupns.as_str()), "private or host"),
            ("USER", "--userns", ["", "host"].contains(&self.userns.as_str()), "host"),
        ];
        if let Some((mode, flag, _, modes)) = valid.iter().find(|(_, _, ok, _)| !ok) {
            bail!("{flag}: invalid {mode} mode (valid: {modes})");
        }
        if self.uts == "host" && self.hostname.as_ref().is_some_and(|h| !h.is_empty()) {
            bail!("conflicting options: hostname and the UTS mode");
        }
        if !self.pid.is_empty() && self.runtime == "crun" {
            // crun's `run` never returns once such a container's first process has ended.
            bail!("--pid {}: crun does not end a container without a PID namespace of its own; use berth's own runtime or runc", self.pid);
        }
        match self.pid.as_str() {
            "" | "host" => Ok(self.pid.clone()),
            mode => match mode.strip_prefix(runner::container::config::SHARED_PREFIX) {
                Some(other) => self.shared_container(root, other, "PID"),
                None => bail!("--pid: invalid PID mode (valid: host or container:NAME)"),
            },
        }
    }

    /// IPC settings (`--sysctl kernel.*`, `fs.mqueue.*`) refused where the namespace is not
    /// the container's own (`where` says whose it is).
    fn check_ipc_sysctls(&self, whose: &str) -> Result<()> {
        let own = matches!(self.ipc.as_str(), "private" | "shareable" | "none");
        let key = |s: &String| s.split_once('=').map_or(s.as_str(), |(k, _)| k).trim().to_owned();
        match self.sysctl.iter().find(|s| runner::sysctl::in_ipc_namespace(&key(s))) {
            Some(s) if !own => bail!("sysctl {s:?} is not allowed in {whose}"),
            _ => Ok(()),
        }
    }

    /// How long `--wait` waits: `--wait-timeout`, 60 s by default.
    fn wait_timeout(&self) -> Result<std::time::Duration> {
        let Some(given) = &self.wait_timeout else { return Ok(std::time::Duration::from_secs(60)) };
        runner::container::health::parse_duration(given)
            .or_else(|_| given.parse::<u64>().map(std::time::Duration::from_secs))
            .map_err(|_| anyhow::anyhow!("invalid --wait-timeout {given:?} (try 60s)"))
    }

    /// Refuses combinations that cannot work, before anything is made.
    fn check_flags(&self) -> Result<()> {
        if self.wait_timeout.is_some() && !self.wait {
            bail!("--wait-timeout says how long --wait waits: add --wait");
        }
        self.wait_timeout()?;
        // A device that is not there, or a bad --device, fails before anything is made.
        for d in &self.device {
            runner::device::resolve(d)?;
        }
        for s in &self.sysctl {
            runner::sysctl::parse(s, self.network == "host").map_err(anyhow::Error::msg)?;
        }
        let restarts = self.restart != runner::container::restart::Policy::No;
        if restarts && self.rm {
            bail!("conflicting options: --restart and --rm");
        }
        if restarts && !self.detach && !self.create_only {
            bail!("--restart restarts detached containers (their supervisor does): add -d");
        }
        if self.detach {
            if self.runtime != "berth" {
                bail!("-d works with berth's own runtime only");
            }
            if self.timeout.is_some() {
                bail!("--timeout applies to foreground runs: with -d, use berth stop");
            }
        } else {
            if self.wait {
                bail!("--wait waits for a detached container: add -d");
            }
            if self.health_flags()? != runner::container::health::HealthFlags::default() {
                // docker runs them for every container; berth's foreground run has no one to
                // run them (a detached container's supervisor does).
                eprintln!(
                    "berth: warning: health checks run for detached containers (-d): the --health-* flags are ignored"
                );
            }
        }
        if self.network.starts_with(runner::container::config::SHARED_PREFIX) {
            // docker's conflicts: that container's network decides these.
            let conflicts = [
                (!self.publish.is_empty() || self.publish_all, "port publishing and the container type network mode"),
                (self.hostname.is_some(), "hostname and the network mode"),
                (!self.add_host.is_empty(), "custom host-to-IP mapping and the network mode"),
                (
                    // docker 20.10 takes --dns-search and --dns-option there (and ignores them).
                    !self.dns.is_empty(),
                    "dns and the network mode",
                ),
            ];
            if let Some((_, what)) = conflicts.iter().find(|(set, _)| *set) {
                bail!("conflicting options: {what}");
            }
        }
        if self.network == "host" && (!self.publish.is_empty() || self.publish_all) {
            eprintln!("berth: warning: published ports are discarded when using host network mode");
        }
        Ok(())
    }

    /// The container as the flags and the image make it.
    fn container_config(
        &self,
        root: &Path,
        rec: &oci::ImageRecord,
        image: &oci::store::Image,
    ) -> Result<runner::container::Config> {
        use runner::container::{config, health};
        let cfg = image.config.config().clone().unwrap_or_default();
        let id = runner::container::new_id();
        let name = match &self.name {
            Some(n) => {
                runner::container::check_name(n)?;
                n.clone()
            }
            // A detached container gets a made-up name when it is recorded.
            None => String::new(),
        };
        // The raw config holds docker's fields the OCI types lack (Healthcheck, StopSignal).
        let raw: serde_json::Value = serde_json::from_slice(&image.config_bytes).context("parse the image config")?;
        let (publish, exposed) = self.ports(&cfg)?;
        let health = if self.detach {
            health::HealthConfig::resolve(raw.pointer("/config/Healthcheck"), &self.health_flags()?)
                .map_err(anyhow::Error::msg)?
        } else {
            None
        };
        let stop_signal = self.stop_signal.clone().or_else(|| {
            raw.pointer("/config/StopSignal").and_then(|s| s.as_str()).filter(|s| !s.is_empty()).map(String::from)
        });
        let stop_signal = stop_signal.unwrap_or_else(|| "SIGTERM".into());
        runner::container::control::parse_signal(&stop_signal).map_err(anyhow::Error::msg)?;
        let (volumes, tmpfs) = self.mounts(root, &cfg)?;
        let hostname = self.checked_hostname(root, &id)?;
        Ok(runner::container::Config {
            id,
            name,
            image: self.image().to_owned(),
            image_id: image.id.to_string(),
            manifest: rec.target.digest.to_string(),
            created: runner::container::state::now(),
            args: self.command_line(&cfg)?,
            entrypoint: self.entrypoint(&cfg),
            env: config::environment(&cfg.env().clone().unwrap_or_default(), &self.given_env()?, &hostname, self.tty),
            cwd: config::working_dir(self.workdir.as_deref(), cfg.working_dir().as_deref()),
            user: self.user.clone().or_else(|| cfg.user().clone()).filter(|u| !u.is_empty()),
            hostname,
            network: self.network.clone(),
            network_aliases: self.network_alias.clone(),
            network_id: self.network_id.clone(),
            volumes,
            tmpfs,
            ulimits: self.ulimit.iter().map(ToString::to_string).collect(),
            read_only: self.read_only,
            init: self.init,
            interactive: self.interactive,
            tty: self.tty,
            labels: self.labels(&cfg)?,
            extra_hosts: self.add_host.clone(),
            dns: config::DnsConfig {
                servers: self.dns.clone(),
                search: self.dns_search.clone(),
                options: self.dns_option.clone(),
            },
            security: config::SecurityConfig {
                cap_add: self.cap_add.clone(),
                cap_drop: self.cap_drop.clone(),
                privileged: self.privileged,
                security_opt: absolute_profiles(&self.security_opt)?,
            },
            resources: self.limits()?,
            oom_score_adj: self.oom_score_adj,
            // With the host's network the container's ports are the host's (docker discards -p).
            ports: if self.network == "host" { Vec::new() } else { publish },
            exposed,
            publish_all: self.publish_all,
            restart: self.restart,
            health,
            stop_signal,
            stop_timeout: self.stop_timeout,
            auto_remove: self.rm,
            runtime: self.runtime.clone(),
            // 0 is docker's "the default".
            shm_size: self.shm_size.filter(|&n| n != 0),
            group_add: self.group_add.clone(),
            devices: self.device.clone(),
            sysctls: self.sysctl.clone(),
            ipc: self.ipc.clone(),
            pid: self.pid.clone(),
            uts: self.uts.clone(),
            cgroupns: if self.cgroupns.is_empty() { "private".into() } else { self.cgroupns.clone() },
            userns: self.userns.clone(),
        })
    }

    /// The resource limits, checked as docker checks them, with docker's default swap
    /// (twice the memory) written in; docker's warning for each the host cannot take.
    fn limits(&self) -> Result<runner::cgroup::Limits> {
        let mut limits = runner::cgroup::Limits {
            memory_swappiness: self.memory_swappiness,
            oom_kill_disable: self.oom_kill_disable,
            ..self.resources.limits()
        };
        let (cpus, mems) = runner::resources::host_sets();
        limits.check(&cpus, &mems).map_err(anyhow::Error::msg)?;
        if let Some(adj) = self.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
            bail!("Invalid value {adj}, range for oom score adj is [-1000, 1000]");
        }
        limits.memory_swap = limits.swap();
        for warning in runner::cgroup::unsupported(&limits) {
            eprintln!("WARNING: {warning}");
        }
        Ok(limits)
    }

    /// The ports to publish (`-p`, and with `-P` every exposed one), and docker's
    /// ExposedPorts: the image's EXPOSE, `--expose` and the published ports, each once.
    fn ports(&self, cfg: &oci::spec::Config) -> Result<(Vec<runner::container::ports::PortSpec>, Vec<String>)> {
        use runner::container::ports;
        let mut publish: Vec<ports::PortSpec> = self.publish.iter().flatten().cloned().collect();
        let mut exposed: Vec<String> = cfg.exposed_ports().clone().unwrap_or_default();
        exposed.extend(self.expose.iter().flatten().cloned());
        if self.publish_all && self.network != "host" {
            publish.extend(ports::publish_all(&exposed).map_err(anyhow::Error::msg)?);
        }
        exposed.extend(publish.iter().map(|p| format!("{}/{}", p.container_port, p.proto)));
        let exposed: std::collections::BTreeSet<String> =
            exposed.iter().map(|p| if p.contains('/') { p.clone() } else { format!("{p}/tcp") }).collect();
        Ok((publish, exposed.into_iter().collect()))
    }

    /// The container's binds and volumes (`-v`, `--mount`, `--volumes-from`, the image's
    /// `VOLUME`s), and its tmpfs paths (`--tmpfs`, `--mount type=tmpfs`), checked.
    fn mounts(
        &self,
        root: &Path,
        cfg: &oci::spec::Config,
    ) -> Result<(Vec<runner::container::config::VolumeConfig>, Vec<String>)> {
        let mut volumes = self.volume.clone();
        let mut tmpfs = self.tmpfs.clone();
        for m in &self.mount {
            match m {
                runner::volume::MountArg::Volume(v) => volumes.push(v.clone()),
                runner::volume::MountArg::Tmpfs(t) => tmpfs.push(t.clone()),
            }
        }
        for t in &tmpfs {
            runner::sandbox::check_tmpfs(t).map_err(anyhow::Error::msg)?;
        }
        let image_volumes: Vec<String> = cfg.volumes().clone().unwrap_or_default();
        let borrowed = self.borrowed_volumes(root)?;
        let volumes = runner::container::volumes::configs_with(root, (&volumes, &tmpfs), &borrowed, &image_volumes)?;
        Ok((volumes, tmpfs))
    }

    /// The mounts of the `--volumes-from` containers, in order.
    fn borrowed_volumes(&self, root: &Path) -> Result<Vec<runner::container::config::VolumeConfig>> {
        let mut out = Vec::new();
        for from in &self.volumes_from {
            let (name, mode) = match from.rsplit_once(':') {
                Some((name, mode)) => (name, Some(mode)),
                None => (from.as_str(), None),
            };
            let c = runner::container::find(root, name)?;
            out.extend(runner::container::volumes::borrow(&c, mode)?);
        }
        Ok(out)
    }

    /// The image's labels, then `--label-file`'s and `--label`'s over them; a label without
    /// a name is an error.
    fn labels(&self, cfg: &oci::spec::Config) -> Result<std::collections::BTreeMap<String, String>> {
        let mut labels: std::collections::BTreeMap<String, String> =
            cfg.labels().clone().unwrap_or_default().into_iter().collect();
        let mut given = Vec::new();
        for file in &self.label_file {
            let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
            // docker's label files: a line each, blanks before it dropped, `#` comments.
            given.extend(
                text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
            );
        }
        given.extend(self.label.iter().cloned());
        for l in &given {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            if k.is_empty() {
                bail!("invalid label '{l}': empty name");
            }
            labels.insert(k.to_owned(), v.to_owned());
        }
        Ok(labels)
    }

    /// The `--health-*` flags.
    fn health_flags(&self) -> Result<runner::container::health::HealthFlags> {
        let d = |v: &Option<String>| {
            v.as_deref().map(runner::container::health::parse_duration).transpose().map_err(anyhow::Error::msg)
        };
        Ok(runner::container::health::HealthFlags {
            cmd: self.health_cmd.clone(),
            interval: d(&self.health_interval)?,
            timeout: d(&self.health_timeout)?,
            start_period: d(&self.health_start_period)?,
            start_interval: d(&self.health_start_interval)?,
            retries: self.health_retries,
            disable: self.no_healthcheck,
        })
    }

    /// `-d`: records the container, prepares its snapshot, starts its supervisor and prints
    /// its ID; with `--wait`, returns only once it is healthy (or running, without a check).
    fn run_detached(
        &self,
        root: &Path,
        store: &oci::ImageStore,
        image: &oci::store::Image,
        config: runner::container::Config,
        cidfile: Option<CidFile>,
    ) -> Result<()> {
        let snapshotter = super::container::snapshotter(root)?;
        let c = runner::container::create(root, &config)?;
        if let Some(f) = cidfile {
            f.write(&config.id)?;
        }
        let key = runner::container::snapshot_key(&config.id);
        let prepared = runner::rootfs::prepare(store, image, snapshotter.as_ref(), &key)
            .with_context(|| format!("prepare the rootfs of {}", self.image()))
            .and_then(|rootfs| {
                // A --group-add name the image lacks fails here, with run's 125, as docker's.
                runner::sandbox::add_groups(&rootfs, &config.group_add, &mut Vec::new())?;
                Ok(runner::container::volumes::prepare(root, &config, &rootfs).map(drop)?)
            });
        if let Err(e) = prepared {
            let _ = c.remove(snapshotter.as_ref());
            warn_all(c.remove_anonymous_volumes());
            return Err(e);
        }
        if self.create_only {
            println!("{}", config.id);
            return Ok(());
        }
        let started = runner::container::control::start(&c, super::container::supervisor_command(root, &config.id)?);
        if let Err(e) = started {
            // docker's 127 (no such program) or 126 (cannot run it), as the supervisor recorded.
            let code = c.state().ok().and_then(|s| s.exit_code);
            if config.auto_remove && c.remove(snapshotter.as_ref()).is_ok() {
                warn_all(c.remove_anonymous_volumes());
            }
            let e = anyhow::Error::new(e).context(format!("start container {}", c.config.name));
            return match code {
                Some(code @ (126 | 127)) => {
                    eprintln!("berth: {e:#}");
                    exit_with(code)
                }
                _ => Err(e),
            };
        }
        println!("{}", config.id);
        if self.wait {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            super::container::wait_ready(&c, self.wait_timeout()?)?;
        }
        Ok(())
    }

    /// The foreground run: prepares the container (`runner::container::foreground`), runs
    /// the process with signals forwarded, records or removes it, exits with its code.
    fn run_foreground(
        &self,
        root: &Path,
        store: &oci::ImageStore,
        image: &oci::store::Image,
        config: runner::container::Config,
        cidfile: Option<CidFile>,
    ) -> Result<()> {
        use runner::container::foreground::{self, Runtime};
        let own_runtime = self.runtime == "berth";
        let runtime = if own_runtime { Runtime::Own } else { Runtime::External };
        let mut prepared = foreground::prepare(root, store, image, &config, (self.name.is_some(), runtime))?;
        if let Some(f) = cidfile {
            f.write(&config.id)?;
        }
        let result = (|| -> Result<i32> {
            block_forwarded(true);
            let mut console =
                if self.tty && own_runtime { Some(super::console::Console::start(self.interactive)?) } else { None };
            prepared.spec.console_socket = console.as_ref().and_then(super::console::Console::child_fd);
            prepared.spec.console_size = super::console::terminal_size();
            // A named container's output also goes to its log, as docker keeps it (without -t;
            // with berth's own runtime).
            // Its copiers start before the spawn: once berth has made the container's PID
            // namespace (unshare), the kernel refuses it new threads.
            let (tee, pipes) = match prepared.log_path().filter(|_| !self.tty && own_runtime) {
                Some(log) => {
                    let ((out_r, out_w), (err_r, err_w)) = (std::io::pipe()?, std::io::pipe()?);
                    (Some(runner::container::logs::Tee::start(&log, out_r, err_r)?), Some((out_w, err_w)))
                }
                None => (None, None),
            };
            prepared.publish(&config)?;
            let child = self.spawn(&prepared.spec, &config.limits(), &config.id, console.as_mut(), pipes)?;
            prepared.started(child.id())?;
            let code = supervise(child, self.stop_timeout, self.timeout, console.as_ref());
            // Its output ends with its last process: those left in a shared PID namespace go.
            prepared.end_processes();
            if let Some(c) = console {
                c.finish();
            }
            if let Some(Err(e)) = tee.map(runner::container::logs::Tee::finish) {
                eprintln!("berth: warning: the container's log is incomplete: {e}");
            }
            code
        })();
        // A start that failed before `supervise` listened leaves them blocked: not for the clean-up.
        block_forwarded(false);
        let outcome = result.as_ref().map(|c| *c).map_err(|e| (start_failure_code(e).unwrap_or(-1), format!("{e:#}")));
        warn_all(prepared.finish_with(outcome, self.rm)?);
        match result {
            Ok(code) => exit_with(code),
            Err(e) => match start_failure_code(&e) {
                Some(code) => {
                    eprintln!("berth: {e:#}");
                    exit_with(code)
                }
                None => Err(e),
            },
        }
    }

    /// Starts the container with berth's sandbox (its stdout and stderr into the pipes of
    /// `capture`), or through runc or crun (`--runtime`).
    fn spawn(
        &self,
        spec: &Spec,
        limits: &runner::cgroup::Limits,
        id: &str,
        console: Option<&mut super::console::Console>,
        capture: Option<(std::io::PipeWriter, std::io::PipeWriter)>,
    ) -> Result<std::process::Child> {
        if self.runtime == "berth" {
            let mut cmd = runner::sandbox::command(spec)?;
            if !self.interactive {
                cmd.stdin(std::process::Stdio::null());
            }
            if let Some((out, err)) = capture {
                cmd.stdout(out).stderr(err);
            }
            let child = cmd
                .spawn()
                .map_err(|source| runner::sandbox::SandboxError::exec_failed(&spec.args[0], source))
                .context("start the container")?;
            if let Some(c) = console {
                c.spawned();
            }
            return Ok(child);
        }
        if !limits.is_empty() {
            bail!("resource limits (--memory, --cpus, --cpu-shares, ...) work with berth's own runtime only");
        }
        if self.init || self.tty {
            bail!("--init and -t work with berth's own runtime only");
        }
        let child = runner::bundle::spawn(&self.runtime, spec, &spec.mountpoint.with_extension("bundle"), &id[..16]);
        child.with_context(|| format!("start {}", self.runtime))
    }

    /// The process to run: the entrypoint (or `--entrypoint`) followed by the command given
    /// after the image, else the image's cmd (not with `--entrypoint`, as docker does).
    fn command_line(&self, cfg: &oci::spec::Config) -> Result<Vec<String>> {
        let mut args = self.entrypoint(cfg);
        if self.command().is_empty() {
            if self.entrypoint.is_none() {
                args.extend(cfg.cmd().clone().unwrap_or_default());
            }
        } else {
            args.extend(self.command().iter().cloned());
        }
        if args.is_empty() {
            bail!("no command specified: the image has no entrypoint or cmd");
        }
        Ok(args)
    }

    /// The entrypoint in force: `--entrypoint` (empty: none), else the image's.
    fn entrypoint(&self, cfg: &oci::spec::Config) -> Vec<String> {
        match &self.entrypoint {
            Some(e) if e.is_empty() => Vec::new(),
            Some(e) => vec![e.clone()],
            None => cfg.entrypoint().clone().unwrap_or_default(),
        }
    }

    /// [`Run::hostname_for`], refused where the kernel would refuse it.
    fn checked_hostname(&self, root: &Path, id: &str) -> Result<String> {
        let hostname = self.hostname_for(root, id)?;
        let max = runner::sandbox::HOST_NAME_MAX;
        if hostname.len() > max {
            bail!("--hostname: {} bytes, where the kernel takes at most {max}", hostname.len());
        }
        Ok(hostname)
    }

    /// The host name: `--hostname`, else docker's default, the first 12 digits of the
    /// container ID (the host's own name with `--network host` or `--uts host`).
    fn hostname_for(&self, root: &Path, id: &str) -> Result<String> {
        if let Some(h) = self.hostname.as_ref().filter(|h| !h.is_empty()) {
            return Ok(h.clone());
        }
        if self.uts == "host" {
            return Ok(rustix::system::uname().nodename().to_string_lossy().into_owned());
        }
        if let Some(other) = self.network.strip_prefix(runner::container::config::SHARED_PREFIX) {
            // In another container's network, its name, as docker gives it.
            return Ok(runner::container::find(root, other)?.config.hostname);
        }
        Ok(match self.network.as_str() {
            "host" => rustix::system::uname().nodename().to_string_lossy().into_owned(),
            _ => id.chars().take(12).collect(),
        })
    }

    /// The `--env-file` lines, then `-e`, in order (see [`runner::container::config::environment`]).
    fn given_env(&self) -> Result<Vec<String>> {
        given_env(&self.env_file, &self.env)
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
}

/// The variables of `--env-file`s, then `-e`'s, in order (`run`'s and `exec`'s).
pub(super) fn given_env(files: &[std::path::PathBuf], env: &[String]) -> Result<Vec<String>> {
    let mut given = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        given.extend(env_file(&file.display().to_string(), &bytes)?);
    }
    given.extend(env.iter().cloned());
    Ok(given)
}

/// The variables of an `--env-file` named `name`, read as docker reads one: a line's leading
/// blanks are dropped, its trailing ones and any quotes kept; empty lines and `#` comments are
/// skipped; a bare `NAME` takes berth's own value, or is left out where berth has none. A name
/// that is empty or holds blanks, or bytes that are not UTF-8, are an error naming the line.
/// Prints each of `warnings` as a warning line.
pub(super) fn warn_all(warnings: Vec<String>) {
    for w in warnings {
        eprintln!("berth: warning: {w}");
    }
}

fn env_file(name: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        anyhow::anyhow!("{name}:{line}: the env file holds bytes that are not UTF-8")
    })?;
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = if n == 0 { raw.trim_start_matches('\u{feff}') } else { raw }.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (var, value) = match line.split_once('=') {
            Some((var, value)) => (var, Some(value)),
            None => (line, None),
        };
        if var.is_empty() {
            bail!("{name}:{}: no variable name before '=': {line}", n + 1);
        }
        if var.contains(char::is_whitespace) {
            bail!("{name}:{}: variable '{var}' contains whitespaces", n + 1);
        }
        match value {
            Some(value) => out.push(format!("{var}={value}")),
            None => out.extend(std::env::var(var).ok().map(|value| format!("{var}={value}"))),
        }
    }
    Ok(out)
}

/// docker's exit code for a process that could not start (see
/// `runner::sandbox::SandboxError::exec_exit_code`); `None` for berth's own failures (exit 1).
pub(super) fn start_failure_code(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| c.downcast_ref::<runner::sandbox::SandboxError>()?.exec_exit_code())
}

/// `--security-opt` with a seccomp profile's path made absolute: a detached container's
/// supervisor, exec and health checks read it again from elsewhere.
fn absolute_profiles(opts: &[String]) -> Result<Vec<String>> {
    opts.iter()
        .map(|o| match o.split_once(['=', ':']) {
            Some(("seccomp", path)) if path != "unconfined" && !path.starts_with('/') => {
                let abs = std::fs::canonicalize(path).with_context(|| format!("--security-opt {o}"))?;
                Ok(format!("seccomp={}", abs.display()))
            }
            _ => Ok(o.clone()),
        })
        .collect()
}

/// Ends berth with the container's exit code, without the exit-time destructors that
/// `std::process::exit` runs: tearing down rocksdb's C++ statics is a measurable part of a
/// smoke test's start-to-exit time, and berth has nothing left to finish but its stdio.
pub(super) fn exit_with(code: i32) -> ! {
    use std::io::Write;
    // As with std::process::exit, a failed flush at exit has no one left to report to.
    let _stdout = std::io::stdout().flush();
    let _stderr = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; no Rust state is touched afterwards.
    unsafe { libc::_exit(code) }
}

impl Run {
    /// Pulls the image, as docker run does when it is not in the store. The runtime is
    /// shut down (its threads joined) before any namespace is made: after
    /// unshare(CLONE_NEWPID) no thread may be created, and the fork must be single-threaded.
    fn pull(&self, store: &oci::ImageStore, missing: bool) -> Result<oci::ImageRecord> {
        let reference: oci::Reference = self.image().parse()?;
        if missing && !self.quiet {
            eprintln!("Unable to find image '{}' locally", reference.familiar());
        }
        let client = self.remote.client()?;
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the async runtime")?;
        let display = crate::progress::Display::new(crate::progress::Mode::Auto, self.quiet, "Downloading");
        let opts = oci::client::PullOptions { platform: self.platform.clone(), ..Default::default() };
        let pulled = rt.block_on(oci::client::pull(&client, store, &reference, &opts, &display));
        display.finish();
        drop(client);
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
        Ok(pulled.with_context(|| format!("pull {}", reference.familiar()))?.record)
    }
}

/// Blocks (or unblocks) the signals [`supervise`] forwards, in this thread and the threads
/// it starts. A foreground run blocks them before the container starts, and `supervise`
/// unblocks them once its handlers are in place: one that arrives in between is delivered
/// then, not lost (and SIGHUP does not end berth). The container's process starts with none
/// blocked (the sandbox, and std's spawn for runc and crun, clear the mask).
pub(super) fn block_forwarded(block: bool) {
    let set = forwarded_set();
    let how = if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
    // SAFETY: pthread_sigmask only reads the set, and fails only for an invalid `how` (it
    // cannot here).
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
}

/// The signals berth passes on to a container (docker's sig-proxy), as a signal set: SIGTERM,
/// SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2.
pub(super) fn forwarded_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// The signals a foreground run passes on as they come, as docker's `--sig-proxy` does
/// (SIGTERM and SIGINT stop the container, with SIGKILL after the stop timeout).
struct Passed {
    streams: Vec<(tokio::signal::unix::Signal, rustix::process::Signal)>,
}

impl Passed {
    /// Listens for SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 (reloads, dumps, log rotation).
    fn listen() -> Result<Passed> {
        use rustix::process::Signal;
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::hangup(), Signal::HUP),
            (SignalKind::quit(), Signal::QUIT),
            (SignalKind::user_defined1(), Signal::USR1),
            (SignalKind::user_defined2(), Signal::USR2),
        ];
        let streams = kinds
            .into_iter()
            .map(|(kind, sig)| Ok((signal(kind).with_context(|| format!("listen for {sig:?}"))?, sig)))
            .collect::<Result<_>>()?;
        Ok(Passed { streams })
    }

    /// The next of them to arrive.
    async fn recv(&mut self) -> rustix::process::Signal {
        std::future::poll_fn(|cx| {
            for (stream, sig) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*sig);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Waits for the container, forwarding SIGTERM and SIGINT to it, then SIGKILL after
/// `stop_timeout`, and passing SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 on; with `timeout`,
/// stops it when time runs out and returns 124.
pub(super) fn supervise(
    child: std::process::Child,
    stop_timeout: u64,
    timeout: Option<u64>,
    console: Option<&super::console::Console>,
) -> Result<i32> {
    use rustix::process::{kill_process, Pid, Signal};
    use std::os::fd::AsRawFd;
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
        let mut passed = Passed::listen()?;
        // The handlers are in place: what arrived since the container started comes now.
        block_forwarded(false);
        let far = Duration::from_secs(u64::MAX / 4);
        let deadline = tokio::time::sleep(timeout.map_or(far, Duration::from_secs));
        let kill_at = tokio::time::sleep(far);
        tokio::pin!(deadline, kill_at);
        let mut timed_out = false;
        loop {
            let forward = tokio::select! {
                _ready = exited.readable() => {
                    // Not reaped: a named container's exit is recorded first, and berth ends
                    // soon after (init reaps it), so its pid is never reused before that.
                    let code = runner::container::launch::wait_no_reap(exited.get_ref().as_raw_fd());
                    drop(child);
                    if timed_out {
                        eprintln!("berth: the container ran past --timeout {}s and was stopped", timeout.unwrap_or(0));
                        return Ok(124);
                    }
                    return Ok(code);
                }
                _ = term.recv() => Signal::TERM,
                _ = int.recv() => Signal::INT,
                sig = passed.recv() => {
                    let _ = kill_process(pid, sig);
                    continue;
                }
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

/// `--add-host`: checked now, kept in docker's `HOST:IP` form (`host-gateway` depends on
/// the network at start).
fn check_add_host(s: &str) -> Result<String, String> {
    s.parse::<runner::sandbox::ExtraHost>().map(|h| h.to_string())
}

/// `--cidfile`: made empty before anything else (a file already there is refused, as docker
/// refuses it: another container may own it), removed again unless the ID was written.
struct CidFile {
    path: std::path::PathBuf,
    written: bool,
}

impl CidFile {
    fn create(path: &Path) -> Result<CidFile> {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(_) => Ok(CidFile { path: path.to_owned(), written: false }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "container ID file found, make sure the other container isn't running or delete {}",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("create the container ID file {}", path.display())),
        }
    }

    /// Writes the ID (no newline, as docker's file has none).
    fn write(mut self, id: &str) -> Result<()> {
        std::fs::write(&self.path, id)
            .with_context(|| format!("write the container ID file {}", self.path.display()))?;
        self.written = true;
        Ok(())
    }
}

impl Drop for CidFile {
    fn drop(&mut self) {
        if !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether an image for `has` serves `asked`: the same OS and architecture, and the variant
/// when `asked` names one.
fn is_platform(has: &oci::Platform, asked: &oci::Platform) -> bool {
    has.os == asked.os
        && has.architecture == asked.architecture
        && (asked.variant.is_none() || has.variant == asked.variant)
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
    fn an_env_file_reads_as_dockers_does() {
        // PATH is set in any test run; the other bare name is not.
        let path = std::env::var("PATH").unwrap();
        let text =
            "\u{feff}  LEAD=1\nTRAIL=x  \n# c\n\n  # indented\nQ=\"quoted\"\nPATH\nBERTH_SURELY_UNSET\nE=\nEQ=a=b\r\n";
        assert_eq!(
            super::env_file("f", text.as_bytes()).unwrap(),
            ["LEAD=1", "TRAIL=x  ", "Q=\"quoted\"", &format!("PATH={path}"), "E=", "EQ=a=b"]
        );
        let err = |text: &[u8]| super::env_file("f", text).unwrap_err().to_string();
        assert_eq!(err(b"A=1\nBAD VAR=1\n"), "f:2: variable 'BAD VAR' contains whitespaces");
        assert_eq!(err(b"=x\n"), "f:1: no variable name before '=': =x");
        assert_eq!(err(b"A=1\nB=\xff\n"), "f:2: the env file holds bytes that are not UTF-8");
    }

    #[test]
    fn words_after_the_image_belong_to_the_container_even_with_dashes() {
        let r = parse(&["--rm", "-e", "A=1", "app", "--port", "9000", "-e", "x", "--rm"]);
        assert!(r.rm);
        assert_eq!(r.env, ["A=1"]);
        assert_eq!(r.image(), "app");
        assert_eq!(r.command(), ["--port", "9000", "-e", "x", "--rm"]);
        let r = parse(&["app", "-c", "echo hi"]);
        assert_eq!((r.image(), r.command()), ("app", ["-c", "echo hi"].map(String::from).as_slice()));
        // berth's own flags too (`-c` is `--cpu-shares`, `-m` `--memory`).
        let r = parse(&["--entrypoint", "sh", "app", "-c", "echo hi", "-m", "4"]);
        assert_eq!(r.command(), ["-c", "echo hi", "-m", "4"]);
        // `--` still works, and is not passed on.
        assert_eq!(parse(&["--network", "host", "app", "--", "ls", "-l"]).command(), ["ls", "-l"]);
        assert_eq!(parse(&["app"]).command(), Vec::<String>::new());
    }
}
