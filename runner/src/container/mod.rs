//! Containers that outlive the command that started them: `berth run -d`, `ps`, `logs`,
//! `stop`, `exec`, health checks and published ports.
//!
//! Each container is a directory `$BERTH_ROOT/containers/<id>/` and an active snapshot
//! `container-<id>` (its writable rootfs, kept until `berth rm`):
//!
//! ```text
//! config.json        Config: written once at create
//! state.json         State: status, pid, exit code, health, ports (rewritten atomically)
//! lock               flock around every read-modify-write of state.json
//! supervisor.lock    flock held by the live supervisor, released only when it is gone
//! <id>-json.log      the container's output, docker's json-file format
//! supervisor.log     the supervisor's own errors
//! ```
//!
//! A detached container is run by a small supervisor (berth re-executed, in the role of
//! podman's conmon; see [`supervisor`]) that holds `supervisor.lock`, owns the process,
//! writes its output to the log, runs its health checks, serves its published ports and
//! records its exit; under a `--restart` policy it starts the process again ([`restart`]).
//! The container dies with its supervisor (a parent-death signal), so
//! "state says running but nobody holds `supervisor.lock`" means the supervisor was killed:
//! [`Container::state`] then records the exit (137) and removes what was left, whichever
//! berth command looks first.

pub mod commit;
pub mod config;
pub mod control;
pub mod copy;
pub mod diff;
pub mod exec;
pub mod foreground;
pub mod health;
pub mod launch;
pub mod logs;
pub mod ports;
pub mod processes;
pub mod restart;
pub mod state;
pub mod stats;
pub mod supervisor;
pub mod update;
pub mod volumes;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

pub use config::Config;
pub use state::{State, Status};

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container by that name or ID.
    #[error("no such container: {0}")]
    NotFound(String),
    /// An ID prefix that matches several containers.
    #[error("{0:?} matches more than one container: give more of its ID or its name")]
    Ambiguous(String),
    /// A name already taken.
    #[error("the container name {0:?} is already in use: berth rm {0} first")]
    NameInUse(String),
    /// A name docker would refuse.
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    /// A setting that cannot be used.
    #[error("{0}")]
    Config(String),
    /// The container is in the wrong state for the operation.
    #[error("{0}")]
    State(String),
    /// The security settings.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// The sandbox.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The snapshot.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// A volume.
    #[error(transparent)]
    Volume(#[from] crate::volume::Error),
    /// The image's layers could not become the container's rootfs.
    #[error("prepare the rootfs of {image}")]
    Rootfs {
        /// The image as named.
        image: String,
        /// Why.
        #[source]
        source: Box<crate::rootfs::RootfsError>,
    },
    /// A file of the container's (the OS error is in the message, not a separate cause).
    #[error("{what} {path}: {err}")]
    Io {
        /// What was done.
        what: &'static str,
        /// To which file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
}

/// Result of container operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |err| Error::Io { what, path: path.to_path_buf(), err }
}

/// The directory holding every container's directory.
pub fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

/// The snapshot key of the container `id`.
pub fn snapshot_key(id: &str) -> String {
    format!("container-{id}")
}

/// Whether `key` is the snapshot of a container that still exists (it is kept for it).
pub fn owns_snapshot(root: &Path, key: &str) -> bool {
    key.strip_prefix("container-")
        .is_some_and(|id| is_id(id) && containers_dir(root).join(id).join("config.json").exists())
}

/// The snapshot keys of every container, for `system df` and prune.
pub fn snapshot_keys(root: &Path) -> Vec<String> {
    list(root).unwrap_or_default().iter().map(|c| snapshot_key(&c.config.id)).collect()
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Checks a container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// A new container ID: 64 hex digits from the kernel's random source.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // No /dev/urandom (a bare chroot): time and pid, still unique on this machine.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A name for a container run without `--name`, docker-style (`adjective_noun`), one that
/// `taken` says is free.
fn new_name(id: &str, taken: impl Fn(&str) -> bool) -> String {
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble", "proud", "quiet",
        "sharp", "swift", "tidy", "witty",
    ];
    const NOUNS: [&str; 16] = [
        "anchor", "buoy", "cabin", "deck", "ferry", "galley", "harbor", "jetty", "keel", "lantern", "mast", "pier",
        "rudder", "sail", "tug", "wharf",
    ];
    let n = u16::from_str_radix(&id[..4], 16).unwrap_or(0) as usize;
    let name = format!("{}_{}", ADJECTIVES[n % 16], NOUNS[(n / 16) % 16]);
    if taken(&name) {
        format!("{name}_{}", &id[..6])
    } else {
        name
    }
}

/// One container on disk: its directory and config.
#[derive(Debug, Clone)]
pub struct Container {
    /// `$BERTH_ROOT/containers/<id>`.
    pub dir: PathBuf,
    /// Its settings.
    pub config: Config,
    root: PathBuf,
}

/// Opens (creating, 0600) a file of berth's own: containers' environments and logs are
/// private, and a lock file others could open is a lock they could hold.
pub(crate) fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options().create(true).truncate(false).write(true).append(append).mode(0o600).open(path)
}

/// An error with its causes, `a: b: c` (a cause its error already ends with is not repeated).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out = format!("{out}: {text}");
        }
        cur = s.source();
    }
    out
}

/// Makes `dir` (and its parents) with mode 0700 for the last one, as docker keeps its
/// containers' directory.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Holds `containers/.lock` while a name is checked and taken.
fn names_lock(root: &Path) -> Result<File> {
    let dir = containers_dir(root);
    private_dir(&dir).map_err(io_err("create", &dir))?;
    let path = dir.join(".lock");
    let f = open_private(&path, false).map_err(io_err("open", &path))?;
    flock(&f, FlockOperation::LockExclusive).map_err(|e| io_err("lock", &path)(e.into()))?;
    Ok(f)
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = open_private(&tmp, false).map_err(io_err("create", &tmp))?;
    f.set_len(0).map_err(io_err("truncate", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", path))
}

/// The cgroup a run of `config` gets under berth's own runtime: its limits, and the group
/// every container gets (see [`crate::cgroup::Cgroup::create`]); none for rootless berth,
/// which may make none (and takes no limits, see [`check_limits`]).
pub(crate) fn make_cgroup(config: &Config) -> std::io::Result<Option<crate::cgroup::Cgroup>> {
    if crate::userns::entered() {
        return Ok(None);
    }
    let limits = config.limits();
    let needed = !limits.is_empty() || config.shares_pid_namespace();
    match crate::cgroup::Cgroup::create(&config.id, &limits) {
        Ok(group) => Ok(Some(group)),
        // Without limits or `--pid`, a host that gives berth no writable cgroup hierarchy
        // (root in some sandboxes) still runs containers: they cannot be paused.
        Err(e) if !needed => {
            eprintln!("berth: warning: no cgroup for container {}: {e}; it cannot be paused", config.name);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Refuses limits this berth cannot set: a plain user's has no cgroup of its own.
pub fn check_limits(config: &Config) -> Result<()> {
    if crate::userns::entered() && !config.limits().is_empty() {
        return Err(Error::Config(
            "resource limits (--memory, --cpus, --pids-limit, --cpu-shares, ...) need cgroups, which belong to \
             root: rootless berth cannot set them (see docs/rootless.md)"
                .into(),
        ));
    }
    if crate::userns::entered() && config.oom_score_adj.is_some_and(|a| a < 0) {
        // Lowering it needs CAP_SYS_RESOURCE in the host's user namespace.
        return Err(Error::Config(
            "--oom-score-adj below 0 needs CAP_SYS_RESOURCE on the host: rootless berth can only raise it".into(),
        ));
    }
    if crate::userns::entered() && config.shares_pid_namespace() {
        // Only a cgroup tells such a container's processes from others (found by a review).
        return Err(Error::Config(
            "--pid host|container:NAME needs a cgroup to find the container's processes, and cgroups belong \
             to root: rootless berth cannot share a PID namespace (see docs/rootless.md)"
                .into(),
        ));
    }
    Ok(())
}

/// Records a new container (state `created`): its name must be free (an empty name gets
/// one made up, under the same lock), and a seccomp profile it names is copied in, so that
/// exec, health checks and `start` load the filter the container started with.
pub fn create(root: &Path, config: &Config) -> Result<Container> {
    let _names = names_lock(root)?;
    let taken = |name: &str| -> Result<bool> { Ok(list(root)?.iter().any(|c| c.config.name == name)) };
    let mut config = config.clone();
    if config.name.is_empty() {
        config.name = new_name(&config.id, |n| taken(n).unwrap_or(true));
    }
    check_name(&config.name)?;
    check_limits(&config)?;
    if taken(&config.name)? {
        return Err(Error::NameInUse(config.name.clone()));
    }
    let dir = containers_dir(root).join(&config.id);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io_err("create", &dir))?;
    }
    for opt in &mut config.security.security_opt {
        if let Some(path) = opt.strip_prefix("seccomp=").filter(|p| *p != "unconfined") {
            let kept = dir.join("seccomp.json");
            let bytes = std::fs::read(path).map_err(io_err("read", Path::new(path)))?;
            write_atomic(&kept, &bytes)?;
            *opt = format!("seccomp={}", kept.display());
        }
    }
    let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Config(e.to_string()))?;
    write_atomic(&dir.join("config.json"), &json)?;
    let c = Container { dir, config, root: root.to_owned() };
    c.update(|_| {})?;
    Ok(c)
}

/// Renames container `c` to `new` (docker's `rename`): the name must be free, under the
/// same lock as [`create`]'s. A running container on a user-defined network answers to
/// its new name there at once (its lease is rewritten); its host name stays.
pub fn rename(root: &Path, c: &Container, new: &str) -> Result<()> {
    let _names = names_lock(root)?;
    check_name(new)?;
    if list(root)?.iter().any(|o| o.config.name == new && o.config.id != c.config.id) {
        return Err(Error::NameInUse(new.to_owned()));
    }
    let mut config = c.config.clone();
    config.name = new.to_owned();
    let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Config(e.to_string()))?;
    write_atomic(&c.dir.join("config.json"), &json)?;
    let user_network = !matches!(config.network.as_str(), "none" | "host" | "bridge")
        && !config.network.starts_with(config::SHARED_PREFIX);
    if user_network && c.state()?.status == Status::Running {
        let bridge = config.user_network(root)?.bridge(root);
        crate::network::rename_member(&bridge, &config.id, &config.dns_names()).map_err(io_err("rename in", &c.dir))?;
    }
    Ok(())
}

/// Every container, newest first.
pub fn list(root: &Path) -> Result<Vec<Container>> {
    let dir = containers_dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if is_id(&id) {
            // A directory without config.json is one being created or removed right now.
            if let Some(c) = open(root, &id)? {
                out.push(c);
            }
        }
    }
    out.sort_by(|a, b| b.config.created.cmp(&a.config.created).then_with(|| a.config.id.cmp(&b.config.id)));
    Ok(out)
}

/// The container with full ID `id`, `None` when there is none (or it is being removed).
pub fn open(root: &Path, id: &str) -> Result<Option<Container>> {
    let dir = containers_dir(root).join(id);
    let path = dir.join("config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let config = serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(Some(Container { dir, config, root: root.to_owned() }))
}

/// The container named `what`: its name, its ID, or a unique prefix of its ID.
pub fn find(root: &Path, what: &str) -> Result<Container> {
    let all = list(root)?;
    if let Some(c) = all.iter().find(|c| c.config.name == what || c.config.id == what) {
        return Ok(c.clone());
    }
    let mut matches = all.into_iter().filter(|c| !what.is_empty() && c.config.id.starts_with(what));
    match (matches.next(), matches.next()) {
        (Some(c), None) => Ok(c),
        (Some(_), Some(_)) => Err(Error::Ambiguous(what.to_owned())),
        _ => Err(Error::NotFound(what.to_owned())),
    }
}

impl Container {
    /// The berth root it lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The json-file log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.config.id))
    }

    /// The ID's first 12 digits, as `ps` shows it.
    pub fn short_id(&self) -> &str {
        &self.config.id[..12]
    }

    fn lock(&self, name: &str, op: FlockOperation) -> Result<Option<File>> {
        let path = self.dir.join(name);
        let f = match open_private(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(self.config.name.clone()))
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        match flock(&f, op) {
            Ok(()) => Ok(Some(f)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io_err("lock", &path)(e.into())),
        }
    }

    /// Whether its supervisor is alive (it holds `supervisor.lock`).
    pub fn supervised(&self) -> Result<bool> {
        Ok(self.lock("supervisor.lock", FlockOperation::NonBlockingLockShared)?.is_none())
    }

    /// Takes `supervisor.lock` for the life of a supervisor; `None` if one already holds it.
    pub fn supervise_lock(&self) -> Result<Option<File>> {
        self.lock("supervisor.lock", FlockOperation::NonBlockingLockExclusive)
    }

    /// Held by `berth restart` from its stop to its start: restarts of one container take
    /// turns, as docker's do.
    pub fn restart_lock(&self) -> Result<Option<File>> {
        self.lock("restart.lock", FlockOperation::LockExclusive)
    }

    /// Held (shared) by `start -a`, `wait` and `logs -f` until they have read the exit: a
    /// `--rm` container is not removed under it ([`Container::wait_for_attached`]).
    pub fn attach_lock(&self) -> Result<Option<File>> {
        self.lock("attach.lock", FlockOperation::LockShared)
    }

    /// Waits (at most `limit`) until no `start -a`, `wait` or `logs -f` holds [`Container::attach_lock`], so that
    /// it reads the exit before a `--rm` removal; true if none holds it.
    pub fn wait_for_attached(&self, limit: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.lock("attach.lock", FlockOperation::NonBlockingLockExclusive)?.is_some() {
                return Ok(true);
            }
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The state as last recorded, without reconciling.
    pub fn read_state(&self) -> Result<State> {
        let path = self.dir.join("state.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
            // Removed meanwhile (`--rm`, `rm -f`): no longer a container.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dir.join("config.json").exists() => {
                Err(Error::NotFound(self.config.name.clone()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Changes the state under `lock` and writes it back; returns the new state.
    pub fn update(&self, f: impl FnOnce(&mut State)) -> Result<State> {
        let _lock = self.lock("lock", FlockOperation::LockExclusive)?;
        let mut state = self.read_state()?;
        f(&mut state);
        let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::Config(e.to_string()))?;
        write_atomic(&self.dir.join("state.json"), &json)?;
        Ok(state)
    }

    /// The state, reconciled: a container recorded as running whose supervisor is gone was
    /// killed with it; its exit (137) is recorded and its cgroup removed. Decided again under
    /// `lock`, so a supervisor that a concurrent `start` has just begun is never taken for it.
    pub fn state(&self) -> Result<State> {
        let state = self.read_state()?;
        if state.awaiting_restart && !self.supervised()? {
            // Its supervisor died waiting to restart it: exited, and nothing will restart it.
            return self.update(|s| {
                if !self.supervised().unwrap_or(true) {
                    s.awaiting_restart = false;
                }
            });
        }
        if state.status != Status::Running || self.supervised()? {
            return Ok(state);
        }
        let mut reconciled = false;
        let state = self.update(|s| {
            if s.status == Status::Running && s.supervisor == state.supervisor && !self.supervised().unwrap_or(true) {
                s.exited(137, Some("the container's supervisor died".into()));
                reconciled = true;
            }
        })?;
        if reconciled {
            crate::cgroup::remove_stale(&self.config.id);
        }
        Ok(state)
    }

    /// Removes the anonymous volumes of this (removed) container that no other container
    /// uses, as `rm -v` and `--rm` do; returns what could not be removed, for a warning.
    pub fn remove_anonymous_volumes(&self) -> Vec<String> {
        volumes::remove_anonymous(self.root(), &self.config.volumes)
    }

    /// Removes the container: its snapshot, then its directory. It must not be running.
    pub fn remove(&self, snapshotter: &dyn crate::snapshot::Snapshotter) -> Result<()> {
        let state = match self.state() {
            // Removed meanwhile (its supervisor, for `--rm`): done.
            Err(Error::NotFound(_)) => return Ok(()),
            other => other?,
        };
        if state.status == Status::Running {
            return Err(Error::State(format!(
                "container {} is running: stop it first, or berth rm -f",
                self.config.name
            )));
        }
        match snapshotter.remove(&snapshot_key(&self.config.id)) {
            Ok(()) | Err(crate::snapshot::SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        crate::cgroup::remove_stale(&self.config.id);
        // config.json first: from then on no command counts this directory as a container.
        // Gone already is done: its supervisor (`--rm`) may have been quicker.
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let config = self.dir.join("config.json");
        gone(std::fs::remove_file(&config)).map_err(io_err("remove", &config))?;
        gone(std::fs::remove_dir_all(&self.dir)).map_err(io_err("remove", &self.dir))
    }
}
