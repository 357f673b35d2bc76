//! What a container is made of, written once when it is created: the process, its
//! sandbox settings, published ports, its health check and how it is stopped. Both the
//! foreground `berth run` and the supervisor of a detached container turn it into a
//! [`Spec`](crate::sandbox::Spec) with [`Config::spec`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ports::PortSpec;
use crate::sandbox::{EtcFiles, Network, Spec, User, Volume};
use crate::snapshot::Mount;

/// How `Config::network` names another container's namespace: `container:` and its ID.
pub const SHARED_PREFIX: &str = "container:";

/// docker's PATH for an image that sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container's settings, as `berth inspect` shows them under `Config` and `HostConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// 64 hex digits.
    pub id: String,
    /// The unique name (`--name`, or one berth made up).
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's ID (its config digest).
    pub image_id: String,
    /// The image's manifest digest (for `berth commit`).
    pub manifest: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The process: program and arguments.
    pub args: Vec<String>,
    /// The leading words of `args` that are the entrypoint (the image's or `--entrypoint`),
    /// so that `berth commit` writes Entrypoint and Cmd apart; empty in older records.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The user, as given (resolved in the image).
    pub user: Option<String>,
    /// The UTS hostname.
    pub hostname: String,
    /// `bridge`, `none`, `host`, or a user-defined network's name.
    pub network: String,
    /// `--network-alias`: more names the container has on a user-defined network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// A user-defined network's ID: a network made again under the same name is another.
    #[serde(default)]
    pub network_id: String,
    /// `-v` mounts.
    pub volumes: Vec<VolumeConfig>,
    /// `--tmpfs` paths.
    pub tmpfs: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`, as given.
    pub ulimits: Vec<String>,
    /// `--read-only`.
    pub read_only: bool,
    /// `--init`.
    pub init: bool,
    /// `-i`: stdin stays open (detached: a pipe the supervisor holds, never written).
    pub interactive: bool,
    /// Labels: the image's, then `--label`'s (a key given again takes the new value), as
    /// docker merges them; `ps --filter label=` and templates read them. Empty in older records.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--add-host HOST:IP` entries, as given (`host-gateway` resolved at each start).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--dns`, `--dns-search` and `--dns-option`.
    #[serde(default)]
    pub dns: DnsConfig,
    /// `-t`: the process has a pty (detached: the supervisor holds its master and logs
    /// what it prints); false in older records.
    #[serde(default)]
    pub tty: bool,
    /// Capabilities and seccomp, as docker's flags give them.
    pub security: SecurityConfig,
    /// The resource limits (`--memory`, `--cpus`, `--cpu-shares`, ...), as given or as
    /// `update` last set them; their fields sit at the top level of the record.
    #[serde(flatten)]
    pub resources: crate::cgroup::Limits,
    /// `--oom-score-adj`: the process's OOM score adjustment (-1000 to 1000).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// `-p` and `-P`.
    pub ports: Vec<PortSpec>,
    /// docker's `ExposedPorts`: the image's EXPOSE, `--expose` and the published ports, as
    /// `PORT/PROTO`; empty in older records.
    #[serde(default)]
    pub exposed: Vec<String>,
    /// `-P`: every exposed port was published.
    #[serde(default)]
    pub publish_all: bool,
    /// `--restart`: whether the supervisor starts the process again when it exits.
    #[serde(default)]
    pub restart: super::restart::Policy,
    /// The health check in force (the image's, or the `--health-*` flags').
    pub health: Option<super::health::HealthConfig>,
    /// The signal `berth stop` sends first (`--stop-signal`, the image's StopSignal, SIGTERM).
    pub stop_signal: String,
    /// Seconds `berth stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// `--rm`: removed when it exits.
    pub auto_remove: bool,
    /// `berth`, or the OCI runtime it runs under (`runc`, `crun`; foreground only).
    #[serde(default = "own_runtime")]
    pub runtime: String,
    /// `--shm-size`: bytes of /dev/shm; `None` (and older records) for docker's 64 MiB.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--group-add`: supplementary groups the process gets beside its user's.
    #[serde(default)]
    pub group_add: Vec<String>,
    /// `--device`, as given: resolved to the host's nodes at each start.
    #[serde(default)]
    pub devices: Vec<String>,
    /// `--sysctl`, as given (`KEY=VALUE`), checked when the container is made and at each
    /// start (against the network it then has).
    #[serde(default)]
    pub sysctls: Vec<String>,
    /// `--ipc`: `private` (`""` in older records), `shareable`, `none`, `host` or
    /// `container:ID`.
    #[serde(default)]
    pub ipc: String,
    /// `--pid`: `""` (its own namespace), `host` or `container:ID`.
    #[serde(default)]
    pub pid: String,
    /// `--uts`: `""` (its own namespace) or `host`.
    #[serde(default)]
    pub uts: String,
    /// `--cgroupns`: `private` (`""` in older records) or `host`.
    #[serde(default)]
    pub cgroupns: String,
    /// `--userns`: `""` or `host`, which is the same here (berth maps no user namespace).
    #[serde(default)]
    pub userns: String,
}

/// A namespace mode as recorded: `host` shares the host's, anything else is the container's own.
fn namespace(mode: &str) -> crate::sandbox::Namespace {
    match mode {
        "host" => crate::sandbox::Namespace::Host,
        _ => crate::sandbox::Namespace::Own,
    }
}

fn own_runtime() -> String {
    "berth".into()
}

/// A `-v`/`--mount` bind or volume, or an image's `VOLUME`, stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeConfig {
    /// The host path: a bind's source, or the volume's directory.
    pub host: PathBuf,
    /// The container path.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// What becomes of the mounts below a bind's source (`--mount`'s `bind-recursive`).
    #[serde(default, skip_serializing_if = "crate::sandbox::BindRecursive::is_default")]
    pub recursive: crate::sandbox::BindRecursive,
    /// The volume's name; None for a bind of a host path (and in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The volume was made for this container alone (`-v /path`, the image's `VOLUME`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    /// `nocopy`: the volume is not filled from the image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocopy: bool,
    /// Given with `--mount` (see [`crate::volume::VolumeArg::from_mount`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_mount: bool,
}

impl VolumeConfig {
    /// Whether docker lists it in the container's `Config.Volumes` (and `commit` in the new
    /// image's): an anonymous volume of `-v /path` or of the image's `VOLUME`.
    pub fn in_config(&self) -> bool {
        self.anonymous && !self.from_mount
    }
}

/// docker's security flags, kept as given so that `exec` and health checks get the same.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecurityConfig {
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--security-opt` (a seccomp profile's path made absolute).
    pub security_opt: Vec<String>,
}

/// docker's `--dns`, `--dns-search` and `--dns-option`: what goes into the container's
/// /etc/resolv.conf in place of the host's, or where a user-defined network's resolver
/// forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<std::net::IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
    /// Resolver options (`ndots:2`).
    pub options: Vec<String>,
}

impl DnsConfig {
    /// `resolv_conf` (the file the network gives) with these settings in place of its own,
    /// as docker writes it: a line of search domains, the name servers, a line of options.
    /// The given servers replace the file's unless `resolver` is the network's own, which
    /// stays the one name server (it forwards to the given ones).
    pub fn apply(&self, resolv_conf: &str, resolver: bool) -> String {
        if self.servers.is_empty() && self.search.is_empty() && self.options.is_empty() {
            return resolv_conf.to_owned();
        }
        let words = |key: &str| -> Vec<String> {
            let lines = resolv_conf.lines().filter(|l| l.split_whitespace().next() == Some(key));
            lines.flat_map(|l| l.split_whitespace().skip(1).map(str::to_owned)).collect()
        };
        let search = if self.search.is_empty() { words("search") } else { self.search.clone() };
        let servers: Vec<String> = match self.servers.is_empty() || resolver {
            true => words("nameserver"),
            false => self.servers.iter().map(ToString::to_string).collect(),
        };
        // docker's: the given options in place of the file's; on a user-defined network,
        // ndots:0 unless they set ndots.
        let mut options = if self.options.is_empty() { words("options") } else { self.options.clone() };
        if resolver && !options.iter().any(|o| o.starts_with("ndots:")) {
            options.push("ndots:0".into());
        }
        let mut out = String::new();
        // docker: a search domain "." means none.
        if !search.is_empty() && search != ["."] {
            out += &format!("search {}\n", search.join(" "));
        }
        servers.iter().for_each(|s| out += &format!("nameserver {s}\n"));
        if !options.is_empty() {
            out += &format!("options {}\n", options.join(" "));
        }
        out
    }
}

impl Config {
    /// The limits for [`crate::cgroup::Cgroup::create`]: 0 is no limit, as docker reads it.
    pub fn limits(&self) -> crate::cgroup::Limits {
        self.resources.effective()
    }

    /// The capabilities and seccomp filter, with compiled filters kept under `filter_cache`.
    pub fn security(&self, filter_cache: Option<&Path>) -> Result<crate::security::Security, super::Error> {
        let s = &self.security;
        let mut security = crate::security::Security::docker(&s.cap_add, &s.cap_drop, s.privileged, &s.security_opt)?;
        security.filter_cache = filter_cache.map(Path::to_path_buf);
        Ok(security)
    }

    /// The `--ulimit` values, parsed.
    pub fn ulimits(&self) -> Result<Vec<crate::rlimit::Ulimit>, super::Error> {
        self.ulimits.iter().map(|u| u.parse().map_err(super::Error::Config)).collect()
    }

    /// Puts the container on its network (before it starts): berth's bridge for `bridge`,
    /// or the bridge of the user-defined network of that name in the store at `root`.
    pub fn attach_network(&self, root: &Path) -> Result<Option<crate::network::Attachment>, super::Error> {
        let attached = match self.network.as_str() {
            "none" | "host" => return Ok(None),
            mode if mode.starts_with(SHARED_PREFIX) => self.shared_network(root),
            "bridge" if crate::userns::rootless() => crate::network::Attachment::user_mode(),
            "bridge" => crate::network::attach(&self.id),
            name => {
                let network = self.user_network(root)?;
                let upstreams = self.dns.servers.iter().map(|ip| std::net::SocketAddr::new(*ip, 53)).collect();
                crate::network::attach_to(&network.bridge(root), &self.id, &self.dns_names(), upstreams).map_err(|e| {
                    match e.kind() {
                        // Removed since it was read: its own message says so.
                        std::io::ErrorKind::NotFound => e,
                        kind => std::io::Error::new(kind, format!("network {name}: {e}")),
                    }
                })
            }
        };
        attached.map(Some).map_err(|e| super::Error::Config(e.to_string()))
    }

    /// `--network container:ID`: the namespace of that container, which must be running.
    fn shared_network(&self, root: &Path) -> std::io::Result<crate::network::Attachment> {
        let id = &self.network[SHARED_PREFIX.len()..];
        let other =
            super::find(root, id).map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        // runc's and crun's recorded process is the runtime's, in the host's namespaces.
        if other.config.runtime != "berth" {
            return Err(std::io::Error::other(format!(
                "cannot join network of container {id}: it runs under {}, and only berth's own runtime's can be joined",
                other.config.runtime
            )));
        }
        let state = other.state().map_err(std::io::Error::other)?;
        match state.pid.filter(|_| state.status == super::Status::Running) {
            Some(pid) => crate::network::Attachment::shared(pid),
            None => Err(std::io::Error::other(format!("cannot join network of a non running container: {id}"))),
        }
    }

    /// The names the container has on a user-defined network, for [`crate::network::attach_to`]:
    /// its name (`""` without one), its aliases, and its host name when one was given.
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        names.extend(self.network_aliases.iter().cloned());
        // A host name of its own (`--uts host` gives the host's, which is not the container's).
        if self.hostname != self.id[..12] && self.uts != "host" {
            names.push(self.hostname.clone());
        }
        names
    }

    /// The user-defined network the container is on: found in the store at `root`, which a
    /// rootless berth can't give a bridge; the one it was made on, not another of its name.
    pub fn user_network(&self, root: &Path) -> Result<crate::network::user::Network, super::Error> {
        if crate::userns::rootless() {
            return Err(super::Error::Config(format!(
                "network {}: user-defined networks need root (a rootless container has a user-mode network of its own)",
                self.network
            )));
        }
        let found = crate::network::user::find(root, &self.network);
        let network = found.map_err(|e| super::Error::Config(e.to_string()))?;
        if !self.network_id.is_empty() && network.id != self.network_id {
            return Err(super::Error::Config(format!("network {} not found", self.network_id)));
        }
        Ok(network)
    }

    /// The environment as docker's `Config.Env` holds it: the process's, without the
    /// container's own `HOSTNAME` (given at each start; `inspect` and `commit` show this).
    pub fn config_env(&self) -> Vec<&String> {
        let hostname = format!("HOSTNAME={}", self.hostname);
        self.env.iter().filter(|e| **e != hostname).collect()
    }

    /// What the sandbox runs for this container on `rootfs`, mounted at `mountpoint`, in
    /// the bridge's namespace `net` if it has one.
    pub fn spec(
        &self,
        rootfs: Vec<Mount>,
        mountpoint: PathBuf,
        cgroups: Vec<PathBuf>,
        net: Option<&crate::network::Attachment>,
    ) -> Result<Spec, super::Error> {
        use std::os::fd::AsRawFd;
        let loopback = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
        let (network, etc, gateway) = match (net, self.network.as_str()) {
            (Some(a), _) => match a.shared_etc() {
                // Another container's namespace: its files, as docker shares them.
                Some(etc) => (Network::Join(a.netns.as_raw_fd()), etc.clone(), loopback),
                None => (Network::Join(a.netns.as_raw_fd()), EtcFiles::bridged(&self.hostname, a), a.gateway()),
            },
            (None, "host") => (Network::Host, EtcFiles::new(&self.hostname, true).with_hosts_of_host(), loopback),
            (None, _) => (Network::None, EtcFiles::new(&self.hostname, false), loopback),
        };
        let extra = self.extra_hosts.iter().map(|h| h.parse()).collect::<Result<Vec<_>, String>>();
        let mut etc = etc.with_extra_hosts(&extra.map_err(super::Error::Config)?, gateway);
        etc.resolv_conf = self.dns.apply(&etc.resolv_conf, net.is_some_and(crate::network::Attachment::has_resolver));
        for v in &self.volumes {
            if v.container.trim_matches('/').is_empty() {
                return Err(super::Error::Config(format!(
                    "invalid volume {}: the destination can't be '/'",
                    v.container
                )));
            }
            // As docker's -v: a host directory that does not exist yet is made (a volume's
            // is made with the volume, by `volumes::prepare`); --mount's must exist.
            let missing = v.volume.is_none() && std::fs::symlink_metadata(&v.host).is_err();
            if missing && v.from_mount {
                return Err(super::Error::Config(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    v.host.display()
                )));
            }
            if missing {
                std::fs::create_dir_all(&v.host).map_err(|e| {
                    super::Error::Config(format!("create the volume's source {}: {e}", v.host.display()))
                })?;
            }
        }
        Ok(Spec {
            rootfs,
            mountpoint,
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone().map(User),
            ids: None,
            hostname: self.hostname.clone(),
            network,
            volumes: self
                .volumes
                .iter()
                .map(|v| Volume {
                    host: v.host.clone(),
                    container: v.container.clone(),
                    read_only: v.read_only,
                    recursive: v.recursive,
                })
                .collect(),
            tmpfs: self.tmpfs.iter().map(|t| crate::sandbox::with_docker_tmpfs_defaults(t)).collect(),
            ulimits: self.ulimits()?,
            read_only: self.read_only,
            etc: Some(etc),
            cgroups,
            init: self.init,
            console_socket: None,
            console_size: (24, 80),
            security: Default::default(),
            shm_size: self.shm_size,
            group_add: self.group_add.clone(),
            make_cwd: true,
            // Filled at a start ([`Config::devices`]): an exec needs no device.
            devices: Vec::new(),
            sysctls: self.sysctls(&network)?,
            // Resolved at a start ([`Config::ipc`]): an exec joins the container's.
            ipc: Default::default(),
            // Resolved at a start ([`Config::pid`]): an exec joins the container's.
            pid: Default::default(),
            uts: namespace(&self.uts),
            cgroupns: namespace(&self.cgroupns),
            oom_score_adj: self.oom_score_adj,
        })
    }

    /// The `--sysctl` settings, split and checked against the container's `network`: no
    /// `net.*` in berth's own network namespace (the host's), joined through another
    /// container's or not.
    fn sysctls(&self, network: &Network) -> Result<Vec<(String, String)>, super::Error> {
        let own = |fd: std::os::fd::RawFd| -> std::io::Result<bool> {
            use std::os::unix::fs::MetadataExt;
            let (joined, ours) =
                (std::fs::metadata(format!("/proc/self/fd/{fd}"))?, std::fs::metadata("/proc/self/ns/net")?);
            Ok((joined.dev(), joined.ino()) == (ours.dev(), ours.ino()))
        };
        let host = match network {
            Network::Host => true,
            Network::Join(fd) => {
                !self.sysctls.is_empty()
                    && own(*fd).map_err(|e| super::Error::Config(format!("read a network namespace: {e}")))?
            }
            Network::None => false,
        };
        self.sysctls.iter().map(|s| crate::sysctl::parse(s, host).map_err(super::Error::Config)).collect()
    }

    /// The IPC namespace and /dev/shm of `--ipc`; another container's (which must be
    /// running, and made `--ipc shareable`, as docker insists) looked up in the store at
    /// `root`, as it is now (at each start).
    pub fn ipc(&self, root: &Path) -> Result<crate::sandbox::Ipc, super::Error> {
        use crate::sandbox::Ipc;
        Ok(match self.ipc.as_str() {
            "" | "private" | "shareable" => Ipc::Own { shm: true },
            "none" => Ipc::Own { shm: false },
            "host" => Ipc::Host,
            mode => match mode.strip_prefix(SHARED_PREFIX) {
                Some(id) => shared_ipc(root, id)?,
                None => return Err(super::Error::Config(format!("invalid --ipc {mode:?}"))),
            },
        })
    }

    /// The PID namespace of `--pid`; another container's (which must be running) looked up
    /// in the store at `root`, as it is now (at each start).
    pub fn pid(&self, root: &Path) -> Result<crate::sandbox::Pid, super::Error> {
        use crate::sandbox::Pid;
        Ok(match self.pid.as_str() {
            "" => Pid::Own,
            "host" => Pid::Host,
            mode => match mode.strip_prefix(SHARED_PREFIX) {
                Some(id) => {
                    let [ns] = donor_namespaces(root, id, "PID", ["pid"], |_| Ok(()))?;
                    Pid::Join(std::sync::Arc::new(ns))
                }
                None => return Err(super::Error::Config(format!("invalid --pid {mode:?}"))),
            },
        })
    }

    /// Whether the container shares a PID namespace (`--pid`): then only its cgroup tells
    /// its processes from others, to list them or to end them all.
    pub fn shares_pid_namespace(&self) -> bool {
        !self.pid.is_empty()
    }

    /// The host's device nodes `--device` gives, and with `--privileged` every one of its
    /// /dev, as they are now (at each start).
    pub fn devices(&self) -> Result<Vec<crate::device::Device>, super::Error> {
        let mut out = Vec::new();
        for arg in &self.devices {
            out.extend(crate::device::resolve(arg).map_err(|e| super::Error::Config(e.to_string()))?);
        }
        if self.security.privileged {
            // docker's `--privileged`: the host's nodes too, where no `--device` put one.
            let host = crate::device::host_all();
            let given: Vec<String> = out.iter().map(|d| d.container.clone()).collect();
            out.extend(host.into_iter().filter(|d| !given.contains(&d.container)));
        }
        Ok(out)
    }

    /// How long `berth stop` waits before SIGKILL.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout)
    }
}

/// `--ipc container:ID`: that container's IPC and mount namespaces (where its /dev/shm
/// is); it must have been made `--ipc shareable`, as docker insists.
fn shared_ipc(root: &Path, id: &str) -> Result<crate::sandbox::Ipc, super::Error> {
    let shareable = |c: &Config| match c.ipc.as_str() {
        "shareable" => Ok(()),
        _ => Err("non-shareable IPC (hint: use --ipc shareable for the donor container)".to_owned()),
    };
    let [ns, mnt] = donor_namespaces(root, id, "IPC", ["ipc", "mnt"], shareable)?;
    Ok(crate::sandbox::Ipc::Join { ns: std::sync::Arc::new(ns), mnt: std::sync::Arc::new(mnt) })
}

/// The namespaces `names` of running container `id`, which another container joins (`what`
/// they are, in errors), opened through its process and checked to be that process's still
/// once opened (so a pid reused in between cannot lend another's); `check` may refuse the
/// donor first. Only berth's own runtime's containers can lend theirs: runc's and crun's
/// recorded process is the runtime's, in the host's namespaces.
fn donor_namespaces<const N: usize>(
    root: &Path,
    id: &str,
    what: &str,
    names: [&str; N],
    check: impl FnOnce(&Config) -> Result<(), String>,
) -> Result<[std::os::fd::OwnedFd; N], super::Error> {
    let refused = |why: String| super::Error::Config(format!("cannot join {what} of container {id}: {why}"));
    let other = super::find(root, id)?;
    if other.config.runtime != "berth" {
        let runtime = &other.config.runtime;
        return Err(refused(format!("it runs under {runtime}, and only berth's own runtime's can be joined")));
    }
    check(&other.config).map_err(refused)?;
    let not_running = || super::Error::Config(format!("cannot join {what} of a non running container: {id}"));
    let (state, pidfd) = super::control::open_running(&other)?.ok_or_else(not_running)?;
    let pid = state.pid.ok_or_else(not_running)?;
    let mut fds = Vec::with_capacity(N);
    for name in names {
        fds.push(super::exec::open_ns(pid, name)?);
    }
    // Signal 0 through the pidfd: delivered only while that very process lives.
    super::control::signal_pidfd(&pidfd, 0).map_err(|e| refused(e.to_string()))?;
    Ok(fds.try_into().unwrap_or_else(|_| unreachable!("one fd per name")))
}

/// The process's working directory: `-w`, else the image's, else `/`.
pub fn working_dir(given: Option<&str>, image: Option<&str>) -> String {
    given.or(image).filter(|w| !w.is_empty()).unwrap_or("/").to_owned()
}

/// The environment docker gives a container, in docker's order: PATH (docker's default),
/// HOSTNAME and, with a terminal, TERM=xterm; then the given `KEY=VALUE` settings in order (a
/// bare `KEY` takes berth's own value, and where berth has none it takes the variable away,
/// the image's or docker's own); then the image's other variables. A variable already in
/// the list is replaced where it stands (the image's PATH takes the first place).
pub fn environment(image: &[String], given: &[String], hostname: &str, tty: bool) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or(e).to_owned();
    let mut defaults = vec![DEFAULT_PATH.to_owned(), format!("HOSTNAME={hostname}")];
    if tty {
        defaults.push("TERM=xterm".into());
    }
    let env = with_overrides(&defaults, given);
    // The image's others; an entry without `=` is malformed, never a name to take from berth.
    let named: std::collections::HashSet<String> = given.iter().map(|kv| key(kv)).collect();
    let others: Vec<String> = image.iter().filter(|e| e.contains('=') && !named.contains(&key(e))).cloned().collect();
    with_overrides(&env, &others)
}

/// `base` with each of `given` in order, as docker's `exec -e` applies them: a variable
/// `base` has is replaced where it stands, a new one goes at the end. A bare `KEY` takes
/// berth's own value, and where berth has none it removes `KEY`, as docker's `-e KEY` does.
pub fn with_overrides(base: &[String], given: &[String]) -> Vec<String> {
    let mut env = base.to_vec();
    for kv in given {
        let key = kv.split('=').next().unwrap_or(kv);
        let value = match kv.contains('=') {
            true => Some(kv.clone()),
            false => std::env::var(kv).ok().map(|v| format!("{kv}={v}")),
        };
        match (env.iter().position(|e| e.split('=').next() == Some(key)), value) {
            (Some(i), Some(v)) => env[i] = v,
            (Some(i), None) => drop(env.remove(i)),
            (None, Some(v)) => env.push(v),
            (None, None) => {}
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_in_dockers_order_and_flags_override() {
        let image = ["A=1".to_owned(), "B=2".to_owned(), "PATH=/x".to_owned()];
        let env = environment(&image, &["Z=9".into(), "A=3".into()], "h", false);
        assert_eq!(env, ["PATH=/x", "HOSTNAME=h", "Z=9", "A=3", "B=2"]);
        let env = environment(&["B=2".into()], &["A=1".into(), "A=2".into()], "h", true);
        assert_eq!(env, [DEFAULT_PATH, "HOSTNAME=h", "TERM=xterm", "A=2", "B=2"]);
        // A bare name berth lacks takes the image's variable away.
        let env = environment(&["BERTH_TEST_SURELY_UNSET=1".into()], &["BERTH_TEST_SURELY_UNSET".into()], "h", false);
        assert_eq!(env, [DEFAULT_PATH, "HOSTNAME=h"]);
        let env = environment(&["PATH=/x".into()], &["BERTH_TEST_SURELY_UNSET_PATH=1".into()], "h", false);
        assert_eq!(env, ["PATH=/x", "HOSTNAME=h", "BERTH_TEST_SURELY_UNSET_PATH=1"]);
    }

    #[test]
    fn overrides_replace_their_keys_and_keep_the_rest_once() {
        let base = ["PATH=/x".to_owned(), "HOSTNAME=h".to_owned()];
        assert_eq!(with_overrides(&base, &["A=1".into()]), ["PATH=/x", "HOSTNAME=h", "A=1"]);
        assert_eq!(with_overrides(&base, &["PATH=/y".into()]), ["PATH=/y", "HOSTNAME=h"], "in place, as docker");
        // A bare name takes berth's own value, where it stands; one berth lacks takes the
        // variable away.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(with_overrides(&base, &["PATH".into()]), [format!("PATH={path}"), "HOSTNAME=h".into()]);
        let with = ["PATH=/x".to_owned(), "BERTH_TEST_SURELY_UNSET=1".to_owned(), "HOSTNAME=h".to_owned()];
        assert_eq!(with_overrides(&with, &["BERTH_TEST_SURELY_UNSET".into()]), ["PATH=/x", "HOSTNAME=h"]);
        assert_eq!(with_overrides(&base, &["BERTH_TEST_SURELY_UNSET".into()]), base);
    }

    #[test]
    fn dns_flags_replace_the_networks_resolv_conf_lines_as_docker() {
        let host = "search corp.example\nnameserver 10.0.0.2\noptions edns0\n";
        assert_eq!(DnsConfig::default().apply(host, false), host, "no flag, no change");
        let dns = DnsConfig {
            servers: vec!["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()],
            search: vec![],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(
            dns.apply(host, false),
            "search corp.example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:2\n",
            "the given options in place of the host's, as docker"
        );
        // On a user-defined network the resolver stays the one server: it forwards to them;
        // ndots:0 stays unless the options set ndots.
        let own = "nameserver 127.0.0.11\noptions edns0 ndots:0\n";
        assert_eq!(dns.apply(own, true), "nameserver 127.0.0.11\noptions ndots:2\n");
        let vc = DnsConfig { options: vec!["use-vc".into()], ..Default::default() };
        assert_eq!(vc.apply(own, true), "nameserver 127.0.0.11\noptions use-vc ndots:0\n");
        let search = DnsConfig { search: vec!["a.test".into(), "b.test".into()], ..Default::default() };
        assert_eq!(search.apply(host, false), "search a.test b.test\nnameserver 10.0.0.2\noptions edns0\n");
        let none = DnsConfig { search: vec![".".into()], ..Default::default() };
        assert_eq!(none.apply(host, false), "nameserver 10.0.0.2\noptions edns0\n", "docker's '.': no search");
    }

    #[test]
    fn the_working_directory_falls_back_to_the_root() {
        assert_eq!(working_dir(None, Some("")), "/");
        assert_eq!(working_dir(None, Some("/app")), "/app");
        assert_eq!(working_dir(Some("/w"), Some("/app")), "/w");
    }
}
