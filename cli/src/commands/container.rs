//! Containers: `ps`, `logs`, `stop`, `kill`, `wait`, `start`, `rm`, `commit`, and the
//! hidden `__supervise` a detached container runs under. The lifecycle itself lives in
//! `runner::container`; this module parses flags and prints.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use runner::container::{self, control, logs, Container, Status};
use runner::snapshot::Snapshotter;

use super::open_store;
use super::prune_filter::PruneFilter;
use crate::format;

/// The snapshotter `run` uses on this machine: overlay where the kernel has it, else copy.
pub fn snapshotter(root: &Path) -> Result<Box<dyn Snapshotter>> {
    Ok(runner::snapshot::for_root(root)?)
}

/// The command that runs the supervisor of container `id`: berth itself, re-executed.
pub fn supervisor_command(root: &Path, id: &str) -> Result<std::process::Command> {
    let exe = std::env::current_exe().context("find berth's own binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(root).arg("__supervise").arg(id);
    Ok(cmd)
}

/// Runs `f` for each of `names` as docker's commands on several containers do: each done
/// one is printed; an error is printed and the others still run; the command fails at the
/// end if any did (with one name, with that name's error).
pub(super) fn each(names: &[String], f: impl FnMut(&str) -> Result<bool>) -> Result<()> {
    report(names, names.iter().map(|n| n.as_str()).map(f).collect())
}

/// As [`each`], with every container at once, as docker's `stop` does: stopping several
/// takes the longest stop, not their sum. Printed in the arguments' order.
fn each_at_once(names: &[String], f: impl Fn(&str) -> Result<bool> + Sync) -> Result<()> {
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = names.iter().map(|n| s.spawn(|| f(n))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a stop panicked")))).collect()
    });
    report(names, results)
}

/// Prints what each container's result says, in order; fails as [`each`] describes.
fn report(names: &[String], results: Vec<Result<bool>>) -> Result<()> {
    let mut errors = Vec::new();
    for (name, result) in names.iter().zip(results) {
        match result {
            Ok(true) => println!("{name}"),
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 if names.len() == 1 => Err(errors.remove(0)),
        n => {
            for e in &errors {
                eprintln!("berth: {e:#}");
            }
            bail!("{n} of {} containers failed", names.len())
        }
    }
}

fn since(rfc3339: &str) -> String {
    format::since(chrono::DateTime::parse_from_rfc3339(rfc3339).ok().map(|t| t.to_utc()))
}

/// `--wait`: returns once `c` is healthy (or running, without a health check); else an
/// error after printing its last health output and log lines to stderr.
pub fn wait_ready(c: &Container, timeout: Duration) -> Result<()> {
    let has_check = c.config.health.is_some();
    let deadline = std::time::Instant::now() + timeout;
    let settled = control::wait_until(c, Some(deadline), |s| {
        let health = s.health.as_ref().map(|h| h.status);
        s.status != Status::Running
            || !has_check
            || matches!(
                health,
                Some(container::state::HealthStatus::Healthy | container::state::HealthStatus::Unhealthy)
            )
    })?;
    let why = match &settled {
        None => format!("did not become healthy within {}s", timeout.as_secs_f64()),
        Some(s) if s.status != Status::Running => format!("exited with code {}", s.exit_code.unwrap_or(-1)),
        Some(s) if s.health.as_ref().is_some_and(|h| h.status == container::state::HealthStatus::Unhealthy) => {
            "is unhealthy".into()
        }
        Some(_) => return Ok(()),
    };
    let state = c.state()?;
    let mut err = std::io::stderr().lock();
    if let Some(probe) = state.health.as_ref().and_then(|h| h.log.back()) {
        let _ = writeln!(err, "berth: last health check (exit {}): {}", probe.exit_code, probe.output.trim_end());
    }
    let (entries, _) = logs::read_from(&c.log_path(), 0).unwrap_or_default();
    let tail = logs::tail(entries, Some(20));
    if !tail.is_empty() {
        let _ = writeln!(err, "berth: last log lines of {}:", c.config.name);
        for e in tail {
            let _ = write!(err, "  {}", e.log);
            if !e.log.ends_with('\n') {
                let _ = writeln!(err);
            }
        }
    }
    bail!("container {} {why}", c.config.name)
}

/// List containers
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth ps\n  berth ps -a\n  berth rm -f $(berth ps -aq --filter label=ci.job=42)\n  berth ps -a --filter status=exited --filter name=smoke\n  berth ps --format '{{.Names}} {{.Status}}'"
)]
pub struct Ps {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Filter: name=REGEXP, id=PREFIX, label=KEY[=VALUE], status=created|running|restarting|exited,
    /// health=starting|healthy|unhealthy|none, ancestor=IMAGE, exited=CODE, network=NAME,
    /// volume=NAME|/PATH (the same key again: either, but every label must match; other keys:
    /// both)
    #[arg(short, long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Show the n last created containers (all states)
    #[arg(short = 'n', long, value_name = "N", allow_negative_numbers = true)]
    last: Option<i64>,
    /// Show the last created container (all states)
    #[arg(short = 'l', long)]
    latest: bool,
    /// Display total file sizes: the container's own writes, and with its image (virtual)
    #[arg(short, long)]
    size: bool,
    /// Print each container with a Go template ({{.ID}}, {{.Names}}, {{.Image}}, {{.Command}},
    /// {{.CreatedAt}}, {{.RunningFor}}, {{.Status}}, {{.State}}, {{.Ports}}, {{.Labels}},
    /// {{.Label "KEY"}}, {{.Mounts}}, {{.Networks}}), `table
    /// TEMPLATE` for aligned columns under docker's titles, or `json`
    #[arg(long)]
    format: Option<String>,
}

/// docker's filter keys that berth does not filter on (yet): refused with a clear message.
const PS_UNSUPPORTED: &[&str] = &["before", "expose", "isolation", "is-task", "publish", "since"];

/// What `ps --filter` keeps: (key, value) pairs; values of one key are alternatives. As
/// docker's daemon, an unknown key or status or health value is an invalid filter.
fn ps_filters(given: &[String]) -> Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|f| {
            let (k, v) = f.split_once('=').with_context(|| format!("invalid filter {f:?}: expected KEY=VALUE"))?;
            let valid = match k {
                "name" | "id" | "ancestor" | "exited" | "label" | "network" | "volume" => true,
                "status" => ["created", "restarting", "running", "removing", "paused", "exited", "dead"].contains(&v),
                "health" => ["starting", "healthy", "unhealthy", "none"].contains(&v),
                _ if PS_UNSUPPORTED.contains(&k) => {
                    bail!("Invalid filter '{k}': berth filters on name, id, label, status, health, ancestor, exited, network, volume")
                }
                _ => bail!("Invalid filter '{k}'"),
            };
            if !valid {
                bail!("Invalid filter '{k}={v}'");
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// docker's `name` filter: the value is a regular expression, unanchored, matched against
/// the name with and without docker's leading `/`; one that does not compile matches nothing.
fn name_matches(pattern: &str, name: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|re| re.is_match(name) || re.is_match(&format!("/{name}")))
}

fn ps_matches(filters: &[(String, String)], c: &Container, s: &container::State) -> bool {
    let one = |k: &str, v: &str| match k {
        "name" => name_matches(v, &c.config.name),
        "id" => c.config.id.starts_with(v),
        "status" => s.status_word() == v,
        "health" => s.health.as_ref().map_or("none", |h| h.status.as_str()) == v,
        "ancestor" => c.config.image == v || c.config.image_id.trim_start_matches("sha256:").starts_with(v),
        "exited" => s.status == Status::Exited && s.exit_code.map(|e| e.to_string()).as_deref() == Some(v),
        // docker's: the network's name, or a user-defined one's ID (or its start).
        "network" => {
            c.config.network == v || runner::network::user::find(c.root(), v).is_ok_and(|n| n.name == c.config.network)
        }
        // docker's: a volume's name, a bind's source, or a mount's destination.
        "volume" => c.config.volumes.iter().any(|m| {
            m.volume.as_deref() == Some(v) || m.container == v || (m.volume.is_none() && m.host == Path::new(v))
        }),
        "label" => super::has_label(&c.config.labels, v),
        _ => false,
    };
    let keys: std::collections::BTreeSet<&str> = filters.iter().map(|(k, _)| k.as_str()).collect();
    keys.iter().all(|k| {
        let mut values = filters.iter().filter(|(fk, _)| fk == k);
        // As docker's: every label filter must hold; other keys' values are alternatives.
        if *k == "label" {
            values.all(|(_, v)| one(k, v))
        } else {
            values.any(|(_, v)| one(k, v))
        }
    })
}

impl Ps {
    /// Lists containers, newest first, in docker's columns (or `--format`'s).
    pub fn run(self, root: &Path) -> Result<()> {
        let filters = ps_filters(&self.filter)?;
        // A status or exited filter looks at every container, as docker's does.
        // -n and -l count containers of every state, newest first; docker's -1 is no limit.
        // -n wins over -l; docker reads 0 as no limit too.
        let last = match self.last.and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0) {
            Some(n) => Some(n),
            None => self.latest.then_some(1),
        };
        let all = self.all || last.is_some() || filters.iter().any(|(k, _)| k == "status" || k == "exited");
        let list_format = format::ListFormat::parse(self.format.as_deref().unwrap_or("table"))?;
        let mut rows = vec![["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
            .map(String::from)
            .to_vec()];
        // As docker: with -s, or when a template asks for it (it costs a walk of each snapshot).
        let sized = self.size || self.format.as_deref().is_some_and(|f| f.contains(".Size"));
        let store = if sized { Some(open_store(root)?) } else { None };
        if sized {
            rows[0].push("SIZE".into());
        }
        let mut objs = vec![];
        for c in container::list(root)? {
            let state = c.state()?;
            if (!all && state.status != Status::Running) || !ps_matches(&filters, &c, &state) {
                continue;
            }
            if last.is_some_and(|n| objs.len() >= n) {
                break;
            }
            let mut row = self.row(&c, &state);
            let mut obj = ps_object(&row, &state, &c);
            if let Some(store) = &store {
                let size = container_size(root, store, &c);
                obj["Size"] = size.clone().into();
                row.push(size);
            }
            objs.push(obj);
            rows.push(row);
        }
        let mut stdout = std::io::stdout().lock();
        if self.quiet {
            rows.iter().skip(1).try_for_each(|row| writeln!(stdout, "{}", row[0]))?;
        } else if matches!(list_format, format::ListFormat::Default) {
            write!(stdout, "{}", format::table(&rows))?;
        } else {
            write!(stdout, "{}", list_format.render(&PS_TITLES, &objs)?)?;
        }
        Ok(())
    }

    /// The row of the table: ID, image, command, created, status, ports, names.
    fn row(&self, c: &Container, state: &container::State) -> Vec<String> {
        let id = if self.no_trunc { c.config.id.clone() } else { c.short_id().to_owned() };
        let mut command = c.config.args.join(" ");
        if !self.no_trunc && command.chars().count() > 20 {
            command = format!("{}…", command.chars().take(19).collect::<String>());
        }
        let ports: Vec<String> = state
            .ports
            .iter()
            .map(|p| format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.proto))
            .collect();
        vec![
            id,
            c.config.image.clone(),
            format!("\"{command}\""),
            since(&c.config.created),
            state.describe(since),
            ports.join(", "),
            c.config.name.clone(),
        ]
    }
}

/// A row as `ps --format` sees it, in docker's field names.
/// The column titles of `ps --format 'table ...'`, docker's.
const PS_TITLES: [(&str, &str); 13] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
    ("State", "STATE"),
    ("CreatedAt", "CREATED AT"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Size", "SIZE"),
];

/// docker's SIZE column: the container's own writes (its snapshot), and in parentheses with
/// its image's unpacked layers (`12.3kB (virtual 2.15MB)`); an image that cannot be read
/// counts 0.
fn container_size(root: &Path, store: &oci::ImageStore, c: &Container) -> String {
    let own = runner::snapshot::usage::snapshot_bytes(root, &container::snapshot_key(&c.config.id));
    let image = store
        .resolve(&c.config.manifest)
        .and_then(|rec| store.image(&rec.target))
        .and_then(|img| store.unpacked_size(&img))
        .unwrap_or(0);
    format!("{} (virtual {})", format::size(own), format::size(own + image))
}

/// `--device`s as docker's `HostConfig.Devices` (as given, not expanded), null when none.
fn devices_json(given: &[String]) -> serde_json::Value {
    let devices: Vec<serde_json::Value> = given
        .iter()
        .filter_map(|d| runner::device::parse(d).ok())
        .map(|(host, container, perms)| {
            serde_json::json!({"PathOnHost": host, "PathInContainer": container, "CgroupPermissions": perms})
        })
        .collect();
    if devices.is_empty() {
        serde_json::Value::Null
    } else {
        devices.into()
    }
}

/// `--ulimit`s as docker's `HostConfig.Ulimits` (`-1` for unlimited), null when none.
fn ulimits_json(given: &[String]) -> serde_json::Value {
    let limits: Vec<serde_json::Value> = given
        .iter()
        .filter_map(|u| u.parse::<runner::rlimit::Ulimit>().ok())
        .map(|u| {
            let n = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
            serde_json::json!({"Name": u.name, "Hard": n(u.hard), "Soft": n(u.soft)})
        })
        .collect();
    if limits.is_empty() {
        serde_json::Value::Null
    } else {
        limits.into()
    }
}

/// A `ps` row as docker's `--format` fields: `Labels` is docker's `k=v,k=v` string (its
/// pairs sorted as text), `CreatedAt` a Go time, `Mounts` the volumes' names and the binds'
/// sources, `Networks` the network's name.
fn ps_object(row: &[String], state: &container::State, c: &Container) -> serde_json::Value {
    let mut labels: Vec<String> = c.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let created = chrono::DateTime::parse_from_rfc3339(&c.config.created).ok().map(|t| format::go_time(t.to_utc()));
    serde_json::json!({
        "ID": row[0], "Image": row[1], "Command": row[2], "RunningFor": row[3], "Status": row[4],
        "Ports": row[5], "Names": row[6], "State": state.status_word(),
        "CreatedAt": created.unwrap_or_else(|| c.config.created.clone()), "Labels": labels.join(","),
        // docker's: the volumes' names and the binds' sources, and the network's name.
        "Mounts": c.config.volumes.iter()
            .map(|v| v.volume.clone().unwrap_or_else(|| v.host.display().to_string()))
            .collect::<Vec<_>>().join(","),
        // A sidecar (`--network container:`) has none of its own, as docker shows it.
        "Networks": if c.config.network.starts_with(runner::container::config::SHARED_PREFIX) { "" } else { c.config.network.as_str() },
    })
}

/// Fetch the logs of a container
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth logs web\n  berth logs -f --tail 20 web\n  berth logs -t web")]
pub struct Logs {
    /// The container
    container: String,
    /// Follow log output until the container exits
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs (default: all)
    #[arg(short = 'n', long, value_name = "N", allow_negative_numbers = true)]
    tail: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines logged at or after this: a duration before now (42m), an RFC 3339 time
    /// or Unix seconds
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only lines logged up to this (same forms as --since); with -f, stop there
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
}

impl Logs {
    /// Prints the container's stdout lines to stdout and its stderr lines to stderr.
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        // As docker: a number below 0, or one that is not a number, means all.
        let tail = self.tail.as_deref().and_then(|n| n.parse::<usize>().ok());
        let window = LogWindow::parse(self.since.as_deref(), self.until.as_deref())?;
        // Following, held attached: a `--rm` container is removed only after its last lines.
        let _attached = if self.follow { c.attach_lock()? } else { None };
        let (entries, mut offset) = logs::read_from(&c.log_path(), 0)?;
        // As docker: the last lines first, then the time window over them.
        self.print(&window, &logs::tail(entries, tail))?;
        if !self.follow {
            return Ok(());
        }
        loop {
            // Read once more after the exit is seen: the last lines are written before it.
            let running = c.state()?.status == Status::Running && !window.ended();
            let (more, next) = logs::read_from(&c.log_path(), offset)?;
            offset = next;
            self.print(&window, &more)?;
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn print(&self, window: &LogWindow, entries: &[logs::Entry]) -> Result<()> {
        print_entries(entries.iter().filter(|e| window.holds(e)), self.timestamps)
    }
}

/// `logs --since` and `--until`: the times a shown line was logged between.
struct LogWindow {
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
}

impl LogWindow {
    fn parse(since: Option<&str>, until: Option<&str>) -> Result<LogWindow> {
        // An empty value is no bound, as docker reads it.
        let when = |flag: &str, v: Option<&str>| {
            let v = v.filter(|v| !v.is_empty());
            v.map(|v| super::when::point_in_time(v).with_context(|| format!("--{flag} {v}"))).transpose()
        };
        Ok(LogWindow { since: when("since", since)?, until: when("until", until)? })
    }

    /// Whether the line falls in the window, both ends included as docker's (a line whose
    /// time cannot be read is shown).
    fn holds(&self, e: &logs::Entry) -> bool {
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(&e.time) else { return true };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// The window closed: following goes no further.
    fn ended(&self) -> bool {
        self.until.is_some_and(|u| chrono::Utc::now() >= u)
    }
}

/// Stop one or more running containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth stop web\n  berth stop -t 2 web db")]
pub struct Stop {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
    /// Seconds to wait before killing the container (default: its --stop-timeout, 10)
    #[arg(short, long, visible_alias = "timeout", value_name = "SECONDS")]
    time: Option<u64>,
    /// Signal to send first (default: the container's stop signal, SIGTERM unless set)
    #[arg(short, long)]
    signal: Option<String>,
}

impl Stop {
    /// Sends each container's stop signal, then SIGKILL after the timeout; all at once.
    pub fn run(self, root: &Path) -> Result<()> {
        each_at_once(&self.containers, |what| {
            let c = container::find(root, what)?;
            let timeout = self.time.map_or(c.config.stop_timeout(), Duration::from_secs);
            match control::stop(&c, timeout, self.signal.as_deref()) {
                // A `--rm` container's supervisor removed it as it exited: stopped all the same.
                Ok(_) | Err(container::Error::NotFound(_)) => Ok(true),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Inspect changes to files or directories on a container's filesystem
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth diff web\n  berth diff tests | grep '^A /out'")]
pub struct Diff {
    /// The container
    container: String,
}

impl Diff {
    /// Prints each path the container added (`A`), changed (`C`) or deleted (`D`) against
    /// its image, by path, as docker's diff.
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        let mut out = std::io::stdout().lock();
        for (kind, path) in container::diff::changes(&c)? {
            writeln!(out, "{} {path}", kind.letter())?;
        }
        Ok(())
    }
}

/// Restart one or more containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth restart web\n  berth restart -t 2 web db")]
pub struct Restart {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
    /// Seconds to wait before killing a running container (default: its --stop-timeout, 10)
    #[arg(short, long, visible_alias = "timeout", value_name = "SECONDS")]
    time: Option<u64>,
    /// Signal to stop it with (default: the container's stop signal, SIGTERM unless set)
    #[arg(short, long)]
    signal: Option<String>,
}

impl Restart {
    /// Stops each running container as `stop` does (its stop signal, SIGKILL after the
    /// timeout), then starts it again on its kept rootfs, as docker's restart; a stopped or
    /// created one is just started. All at once, each name printed.
    pub fn run(self, root: &Path) -> Result<()> {
        each_at_once(&self.containers, |what| {
            let c = container::find(root, what)?;
            // One restart of a container at a time: the next stops what this one started.
            let _turn = c.restart_lock()?;
            if c.state()?.status == Status::Running {
                let timeout = self.time.map_or(c.config.stop_timeout(), Duration::from_secs);
                c.update(|s| s.restarting = Some(std::process::id() as i32))?;
                if let Err(e) = control::stop(&c, timeout, self.signal.as_deref()) {
                    let _ = c.update(|s| s.restarting = None);
                    return Err(e.into());
                }
            }
            control::start(&c, supervisor_command(root, &c.config.id)?)
                .with_context(|| format!("start container {}", c.config.name))?;
            Ok(true)
        })
    }
}

/// Kill one or more running containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth kill web\n  berth kill -s HUP web")]
pub struct Kill {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    signal: String,
}

impl Kill {
    /// Sends the signal to each container's first process.
    pub fn run(self, root: &Path) -> Result<()> {
        let sig = control::parse_signal(&self.signal).map_err(anyhow::Error::msg)?;
        each(&self.containers, |what| {
            let c = container::find(root, what)?;
            control::kill_by_user(&c, sig)?;
            Ok(true)
        })
    }
}

/// Pause all processes within one or more containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth pause db\n  berth unpause db")]
pub struct Pause {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

impl Pause {
    /// Freezes each container's processes (its cgroup), printing its name.
    pub fn run(self, root: &Path) -> Result<()> {
        each(&self.containers, |what| {
            control::pause(&container::find(root, what)?)?;
            Ok(true)
        })
    }
}

/// Unpause all processes within one or more containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth unpause db")]
pub struct Unpause {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

impl Unpause {
    /// Thaws each container's processes, printing its name.
    pub fn run(self, root: &Path) -> Result<()> {
        each(&self.containers, |what| {
            control::unpause(&container::find(root, what)?)?;
            Ok(true)
        })
    }
}

/// Block until one or more containers stop, then print their exit codes
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth wait job")]
pub struct Wait {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

impl Wait {
    /// Prints each container's exit code once it has exited; one that cannot be waited for
    /// is reported and the others still are, as docker's `wait` goes on (exit 1 then).
    pub fn run(self, root: &Path) -> Result<()> {
        let mut failed = false;
        for what in &self.containers {
            match wait_one(root, what) {
                Ok(code) => println!("{code}"),
                Err(e) => {
                    eprintln!("berth: {e:#}");
                    failed = true;
                }
            }
        }
        if failed {
            super::run::exit_with(1);
        }
        Ok(())
    }
}

/// Waits for one container to stop and returns its exit code (0 for one that never ran, as
/// docker's). Held attached meanwhile: a `--rm` container is removed only after its exit
/// is read.
fn wait_one(root: &Path, what: &str) -> Result<i32> {
    let c = container::find(root, what)?;
    let _attached = c.attach_lock()?;
    // docker's default condition, not-running: a container that never started returns too.
    let s = control::wait_until(&c, None, |s| s.status != Status::Running)?
        .context("a wait without a deadline ends with a state")?;
    Ok(s.exit_code.unwrap_or(0))
}

/// Start one or more stopped containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth start web\n  berth create --name t app:test ./selftest && berth start -a t")]
pub struct Start {
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
    /// Print the container's output until it exits, and exit with its code
    #[arg(short, long)]
    attach: bool,
}

impl Start {
    /// Starts each container again under a new supervisor, on its kept rootfs; with `-a`,
    /// one container, followed to its end as `run` in the foreground would be.
    pub fn run(self, root: &Path) -> Result<()> {
        if self.attach {
            let [what] = self.containers.as_slice() else {
                bail!("you cannot start and attach multiple containers at once");
            };
            return start_attached(root, what);
        }
        each(&self.containers, |what| {
            let c = container::find(root, what)?;
            let state = c.state()?;
            if state.paused {
                bail!("cannot start a paused container {}, try unpause instead", c.config.name);
            }
            if state.status != Status::Running {
                control::start(&c, supervisor_command(root, &c.config.id)?)
                    .with_context(|| format!("start container {}", c.config.name))?;
            }
            Ok(true)
        })
    }
}

/// Writes log entries to stdout or stderr, as their stream was, with their times if asked.
fn print_entries<'e>(entries: impl IntoIterator<Item = &'e logs::Entry>, timestamps: bool) -> Result<()> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in entries {
        let w: &mut dyn Write = if e.stream == logs::Stream::Stderr { &mut err } else { &mut out };
        if timestamps {
            write!(w, "{} ", e.time)?;
        }
        w.write_all(e.log.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// `start -a`: starts the container (or, running, joins it), prints what it writes from
/// now on (stdout and stderr apart, from its log) until it exits, passes berth's signals on
/// to it (docker's sig-proxy), then exits with its code.
fn start_attached(root: &Path, what: &str) -> Result<()> {
    let c = container::find(root, what)?;
    // Held until the exit is read: a `--rm` container waits for it before its removal.
    let _attached = c.attach_lock()?;
    let mut offset = std::fs::metadata(c.log_path()).map_or(0, |m| m.len());
    if c.state()?.status != Status::Running {
        control::start(&c, supervisor_command(root, &c.config.id)?)
            .with_context(|| format!("start container {}", c.config.name))?;
    }
    forward_signals(&c)?;
    loop {
        // Read once more after the exit is seen: the last lines are written before it.
        let state = c.state()?;
        let (more, next) = logs::read_from(&c.log_path(), offset)?;
        offset = next;
        print_entries(&more, false)?;
        if state.status != Status::Running {
            super::run::exit_with(state.exit_code.unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Blocks the signals a foreground run passes on ([`super::run::forwarded_set`]) in this
/// (only) thread and passes each one that arrives on to `c`, from a thread that waits for
/// them; made after the supervisor is spawned, which must not inherit the blocked set.
fn forward_signals(c: &Container) -> Result<()> {
    super::run::block_forwarded(true);
    let set = super::run::forwarded_set();
    let c = c.clone();
    std::thread::Builder::new().name("berth-sig-proxy".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: sigwait on the set blocked above, into a local.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        // Gone meanwhile: the exit is what the main loop reports.
        let _ = control::kill(&c, sig);
    })?;
    Ok(())
}

/// Remove one or more containers
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth rm smoke\n  berth rm -f $(berth ps -aq)")]
pub struct Rm {
    /// Containers (names or IDs)
    #[arg(required = true)]
    names: Vec<String>,
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove the anonymous volumes of the container too
    #[arg(short, long)]
    volumes: bool,
}

impl Rm {
    /// Removes each container's snapshot and directory (killing it first with -f), and with
    /// -v its anonymous volumes.
    pub fn run(self, root: &Path) -> Result<()> {
        let snaps = snapshotter(root)?;
        each(&self.names, |what| {
            let c = match container::find(root, what) {
                Ok(c) => c,
                // docker's rm -f: a container that is not there is not an error.
                Err(container::Error::NotFound(_)) if self.force => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let removed = (|| {
                if self.force && c.state()?.status == Status::Running {
                    control::stop(&c, Duration::ZERO, None)?;
                }
                c.remove(snaps.as_ref())
            })();
            match removed {
                // Its supervisor removed it first (`--rm`): removed all the same.
                Ok(()) | Err(container::Error::NotFound(_)) => {
                    if self.volumes {
                        super::run::warn_all(c.remove_anonymous_volumes());
                    }
                    Ok(true)
                }
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Remove all stopped containers
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth container prune -f\n  berth container prune -f --filter until=24h --filter label=ci"
)]
pub struct Prune {
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// until=DURATION|TIMESTAMP (created before it), label=KEY[=VALUE], label!=KEY[=VALUE]
    /// (repeatable; all must hold)
    #[arg(long, value_name = "FILTER")]
    filter: Vec<String>,
}

impl Prune {
    /// Removes every container that is not running (created or exited) and passes the
    /// filters, with its snapshot, as docker's `container prune`; asks first unless `-f`,
    /// reading the answer from stdin. Anonymous volumes stay, as docker keeps them.
    pub fn run(self, root: &Path) -> Result<()> {
        let filters = PruneFilter::parse(&self.filter, "container prune")?;
        if !self.force && !super::confirm("WARNING! This will remove all stopped containers.")? {
            return Ok(());
        }
        let (deleted, bytes) = prune_stopped(root, &filters)?;
        let mut out = std::io::stdout().lock();
        if !deleted.is_empty() {
            writeln!(out, "Deleted Containers:\n{}\n", deleted.join("\n"))?;
        }
        writeln!(out, "Total reclaimed space: {}", format::size(bytes))?;
        Ok(())
    }
}

/// Removes the containers that are not running and pass `filters`, with their snapshots:
/// their IDs and the bytes freed. One that cannot be removed is reported and kept.
pub fn prune_stopped(root: &Path, filters: &[PruneFilter]) -> Result<(Vec<String>, u64)> {
    let snaps = snapshotter(root)?;
    let (mut deleted, mut bytes) = (Vec::new(), 0);
    for c in container::list(root)? {
        if c.state()?.status == Status::Running || !PruneFilter::prunes(filters, &c.config.created, &c.config.labels) {
            continue;
        }
        let size = runner::snapshot::usage::snapshot_bytes(root, &container::snapshot_key(&c.config.id));
        match c.remove(snaps.as_ref()) {
            Ok(()) => {
                deleted.push(c.config.id.clone());
                bytes += size;
            }
            // Started meanwhile (refused while running), or removed by its supervisor.
            Err(container::Error::State(_) | container::Error::NotFound(_)) => {}
            Err(e) => eprintln!("berth: {e}"),
        }
    }
    Ok((deleted, bytes))
}

/// Create a new image from a container's changes
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth run --name setup busybox sh -c 'echo ready > /etc/motd'\n  berth commit -m 'add motd' setup app:base\n  berth commit -a 'Ann <ann@example.com>' setup app:base"
)]
pub struct Commit {
    /// The container
    container: String,
    /// The new image's name
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the new image's config (CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR); repeatable
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Pause the container during the commit (default true)
    #[arg(short, long, value_name = "true|false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pause: Option<bool>,
}

impl Commit {
    /// Diffs the container's snapshot into a layer and stacks it on the container's image,
    /// with the container's settings as the new image's config (docker's commit).
    /// A running container (of berth's own runtime) is paused meanwhile, as docker's, so that
    /// its files do not change while they are read; one already paused stays so.
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        let state = c.state()?;
        let wanted = self.pause.unwrap_or(true)
            && state.status == Status::Running
            && !state.paused
            && c.config.runtime == "berth";
        let pause = wanted && !runner::cgroup::Cgroup::existing(&c.config.id).procs_files().is_empty();
        if wanted && !pause {
            // Rootless berth's containers, and those of a host without a cgroup for them.
            eprintln!("berth: warning: {} has no cgroup to pause: it is committed while it runs", c.config.name);
        }
        if pause {
            control::pause(&c)?;
        }
        let id = self.commit(root, &c);
        if pause {
            if let Err(e) = control::unpause(&c) {
                eprintln!("berth: warning: unpause {} after the commit: {e}", c.config.name);
            }
        }
        println!("{}", id?);
        Ok(())
    }

    /// Makes the image; returns its ID.
    fn commit(&self, root: &Path, c: &Container) -> Result<String> {
        let name = self.reference.as_deref().map(str::parse::<oci::Reference>).transpose()?;
        let store = open_store(root)?;
        let snaps = snapshotter(root)?;
        let base_target = store.resolve(&c.config.manifest).or_else(|_| store.resolve(&c.config.image))?;
        let base = store.image(&base_target.target)?;
        // The config first: a bad --change fails before the diff is made.
        let base_config: serde_json::Value =
            serde_json::from_slice(&base.config_bytes).context("parse the image config")?;
        let mut config = container::commit::image_config(&c.config, &base_config["config"]);
        builder::changes::apply(&mut config, &self.change)?;
        let ingest = oci::content::ContentStore::writer(store.content(), oci::Algorithm::Sha256)?;
        let mut layer = oci::layer::LayerWriter::into_ingest(ingest, oci::layer::Compression::Gzip, None)?;
        let key = container::snapshot_key(&c.config.id);
        snaps.diff(&key, &mut layer).with_context(|| format!("diff container {}", c.config.name))?;
        let (ingest, info) = layer.finish()?;
        ingest.commit(oci::content::Expected::exactly(&info.digest, info.size))?;
        let created_by = format!("berth commit {} ({})", c.config.name, c.config.args.join(" "));
        let commit = oci::store::Commit {
            created_by: &created_by,
            comment: self.message.as_deref().unwrap_or(""),
            author: self.author.as_deref(),
            config: Some(serde_json::Value::Object(config)),
        };
        let rec = store.commit_layer(&base, &info, &commit, name.as_ref())?;
        Ok(store.image(&rec.target)?.id.to_string())
    }
}

/// Rename a container
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth rename web web-old")]
pub struct Rename {
    /// The container: its name or ID
    container: String,
    /// Its new name
    new_name: String,
}

impl Rename {
    /// Gives the container its new name, running or not.
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        if c.config.name == self.new_name {
            bail!("Error when allocating new name: Renaming a container with the same name as its current name");
        }
        container::rename(root, &c, &self.new_name).with_context(|| format!("rename {}", self.container))
    }
}

/// The supervisor of a detached container (started by `run -d` and `start`; not for users)
#[derive(Debug, Args)]
pub struct Supervise {
    /// The container's ID
    id: String,
}

impl Supervise {
    /// Runs the supervisor to the end of the container's process; the ready pipe is fd 3.
    pub fn run(self, root: &Path) -> Result<()> {
        use std::os::fd::FromRawFd;
        // SAFETY: `control::start` hands the ready pipe's write end over as fd 3, and
        // nothing else in this process owns it.
        let ready = unsafe { std::os::fd::OwnedFd::from_raw_fd(3) };
        container::supervisor::run(root, &self.id, ready)?;
        Ok(())
    }
}

/// `inspect`'s addresses of container `c`: the top-level ones (the default bridge's; empty
/// on a user-defined network, as docker leaves them) and the per-network map, where a
/// user-defined network's entry also has its ID and the container's aliases.
fn network_settings(c: &Container, address: serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let cfg = &c.config;
    if runner::network::user::PREDEFINED.contains(&cfg.network.as_str()) {
        return (address.clone(), json!({ cfg.network.as_str(): address }));
    }
    if cfg.network.starts_with(runner::container::config::SHARED_PREFIX) {
        // Another container's network: its addresses are that container's, as docker shows it.
        return (json!({"IPAddress": "", "Gateway": "", "IPPrefixLen": 0}), json!({}));
    }
    let mut entry = address;
    let id = runner::network::user::find(c.root(), &cfg.network).map(|n| n.id).unwrap_or_default();
    // docker's order: the aliases, the short ID, then a host name that was given.
    let mut aliases: Vec<&str> = cfg.network_aliases.iter().map(String::as_str).collect();
    aliases.push(&cfg.id[..12]);
    if cfg.hostname != cfg.id[..12] {
        aliases.push(&cfg.hostname);
    }
    entry["NetworkID"] = json!(id);
    entry["Aliases"] = json!(aliases);
    entry["EndpointID"] = json!("");
    entry["MacAddress"] = json!("");
    (json!({"IPAddress": "", "Gateway": "", "IPPrefixLen": 0}), json!({ cfg.network.as_str(): entry }))
}

/// docker's `HostConfig.PortBindings`: the `-p` and `-P` ports as asked (`""` where the
/// kernel chooses), by `PORT/PROTO`; null without any.
fn port_bindings(ports: &[runner::container::ports::PortSpec]) -> serde_json::Value {
    if ports.is_empty() {
        return serde_json::Value::Null;
    }
    let mut map = serde_json::Map::new();
    for p in ports {
        let list = map.entry(format!("{}/{}", p.container_port, p.proto)).or_insert(serde_json::json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(serde_json::json!({
                "HostIp": p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "HostPort": p.host_port.map(|port| port.to_string()).unwrap_or_default(),
            }));
        }
    }
    serde_json::Value::Object(map)
}

/// `berth inspect` of a container: docker's object shape, with the fields berth has.
pub fn inspect_json(c: &Container) -> Result<serde_json::Value> {
    use serde_json::json;
    let s = c.state()?;
    let cfg = &c.config;
    let health = s.health.as_ref().map(|h| {
        json!({
            "Status": h.status.as_str(),
            "FailingStreak": h.failing_streak,
            "Log": h.log.iter().map(|p| json!({"Start": p.start, "End": p.end, "ExitCode": p.exit_code, "Output": p.output})).collect::<Vec<_>>(),
        })
    });
    let ports = ports_json(cfg, &s);
    let address = json!({
        "IPAddress": s.ip.clone().unwrap_or_default(),
        "Gateway": s.gateway().map(|g| g.0.to_string()).unwrap_or_default(),
        "IPPrefixLen": s.gateway().map_or(0, |g| g.1),
    });
    let (top, networks) = network_settings(c, address);
    Ok(json!({
        "Id": cfg.id,
        "Created": cfg.created,
        "Path": cfg.args.first(),
        "Args": cfg.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": s.status_word(),
            "Running": s.status == Status::Running,
            "Paused": s.paused,
            "Restarting": s.awaiting_restart,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": s.pid.unwrap_or(0),
            "ExitCode": s.exit_code.unwrap_or(0),
            "Error": s.error.clone().unwrap_or_default(),
            "StartedAt": s.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": s.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "Health": health,
        },
        "Image": cfg.image_id,
        "Name": format!("/{}", cfg.name),
        "LogPath": c.log_path(),
        "RestartCount": s.restart_count,
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.user.clone().unwrap_or_default(),
            "Env": cfg.config_env(),
            // docker's split of the command line: the entrypoint's words, then Cmd's.
            "Entrypoint": (!cfg.entrypoint.is_empty()).then_some(&cfg.entrypoint),
            "Cmd": cfg.args.get(cfg.entrypoint.len()..).filter(|c| !c.is_empty()),
            "ExposedPorts": (!cfg.exposed.is_empty())
                .then(|| cfg.exposed.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>()),
            "Image": cfg.image,
            // docker's: the anonymous volumes' paths (the image's VOLUME and `-v /path`).
            "Volumes": cfg.volumes.iter().filter(|v| v.in_config()).map(|v| (v.container.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
            "WorkingDir": cfg.cwd,
            "StopSignal": cfg.stop_signal,
            "StopTimeout": cfg.stop_timeout,
            "OpenStdin": cfg.interactive,
            "Tty": cfg.tty,
            "Labels": cfg.labels,
            "Healthcheck": cfg.health.as_ref().map(runner::container::health::HealthConfig::docker_json),
        },
        "HostConfig": host_config_json(cfg),
        "Mounts": mounts_json(&cfg.volumes),
        "NetworkSettings": {
            "Ports": ports,
            "IPAddress": top["IPAddress"],
            "Gateway": top["Gateway"],
            "IPPrefixLen": top["IPPrefixLen"],
            // docker's per-network view, which `{{range .NetworkSettings.Networks}}` reads.
            "Networks": networks,
        },
    }))
}

/// docker's `NetworkSettings.Ports`: each published port with the host addresses it is bound
/// to while it runs (`[]` when it is not), and an exposed port that is not published as null.
fn ports_json(cfg: &container::Config, s: &container::State) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut ports: serde_json::Map<String, serde_json::Value> =
        cfg.exposed.iter().map(|p| (p.clone(), serde_json::Value::Null)).collect();
    for p in &cfg.ports {
        ports.insert(format!("{}/{}", p.container_port, p.proto), json!([]));
    }
    for p in &s.ports {
        let list = ports.entry(format!("{}/{}", p.container_port, p.proto)).or_insert(json!([]));
        if let Some(a) = list.as_array_mut() {
            a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    ports
}

/// docker's `HostConfig` of a container: how it runs, as `run`'s flags set it.
fn host_config_json(cfg: &runner::container::config::Config) -> serde_json::Value {
    let r = &cfg.resources;
    serde_json::json!({
        "NetworkMode": cfg.network,
        "IpcMode": if cfg.ipc.is_empty() { "private" } else { cfg.ipc.as_str() },
        "PidMode": cfg.pid,
        "UTSMode": cfg.uts,
        "CgroupnsMode": if cfg.cgroupns.is_empty() { "private" } else { cfg.cgroupns.as_str() },
        "UsernsMode": cfg.userns,
        "RestartPolicy": { "Name": cfg.restart.name(), "MaximumRetryCount": cfg.restart.max_retries() },
        "AutoRemove": cfg.auto_remove,
        "Privileged": cfg.security.privileged,
        "CapAdd": cfg.security.cap_add,
        "CapDrop": cfg.security.cap_drop,
        "SecurityOpt": cfg.security.security_opt,
        "ReadonlyRootfs": cfg.read_only,
        "Init": cfg.init,
        "Memory": r.memory.unwrap_or(0),
        "MemorySwap": r.memory_swap.unwrap_or(0),
        "MemoryReservation": r.memory_reservation.unwrap_or(0),
        "MemorySwappiness": r.memory_swappiness,
        "OomKillDisable": r.oom_kill_disable,
        "OomScoreAdj": cfg.oom_score_adj.unwrap_or(0),
        "PidsLimit": r.pids.filter(|p| *p > 0),
        "CpuShares": r.cpu_shares.unwrap_or(0),
        "CpuPeriod": r.cpu_period.unwrap_or(0),
        "CpuQuota": r.cpu_quota.unwrap_or(0),
        "CpusetCpus": r.cpuset_cpus.as_deref().unwrap_or(""),
        "CpusetMems": r.cpuset_mems.as_deref().unwrap_or(""),
        "ShmSize": cfg.shm_size.unwrap_or(runner::sandbox::DEFAULT_SHM_SIZE),
        "GroupAdd": (!cfg.group_add.is_empty()).then_some(&cfg.group_add),
        "Devices": devices_json(&cfg.devices),
        "Sysctls": (!cfg.sysctls.is_empty()).then(|| {
            cfg.sysctls.iter().filter_map(|s| s.split_once('=')).collect::<std::collections::BTreeMap<_, _>>()
        }),
        "NanoCpus": r.cpus.map_or(0, |c| (c * 1e9) as u64),
        "ExtraHosts": cfg.extra_hosts,
        "Ulimits": ulimits_json(&cfg.ulimits),
        "PortBindings": port_bindings(&cfg.ports),
        "PublishAllPorts": cfg.publish_all,
        "Binds": binds(&cfg.volumes),
    })
}

/// docker's `HostConfig.Binds`: the `-v` binds and named volumes, as `SOURCE:DEST[:ro]`.
fn binds(volumes: &[runner::container::config::VolumeConfig]) -> Vec<String> {
    let ro = |v: &runner::container::config::VolumeConfig| if v.read_only { ":ro" } else { "" };
    volumes
        .iter()
        .filter(|v| !v.anonymous)
        .map(|v| {
            format!("{}:{}{}", v.volume.clone().unwrap_or_else(|| v.host.display().to_string()), v.container, ro(v))
        })
        .collect()
}

/// docker's `Mounts`: each bind and volume with its type, source and mode.
fn mounts_json(volumes: &[runner::container::config::VolumeConfig]) -> Vec<serde_json::Value> {
    let mode = |v: &runner::container::config::VolumeConfig| if v.read_only { "ro" } else { "" };
    volumes
        .iter()
        .map(|v| match &v.volume {
            Some(name) => serde_json::json!({
                "Type": "volume", "Name": name, "Source": v.host, "Destination": v.container,
                "Driver": "local", "Mode": mode(v), "RW": !v.read_only, "Propagation": "",
            }),
            None => serde_json::json!({
                "Type": "bind", "Source": v.host, "Destination": v.container,
                "Mode": mode(v), "RW": !v.read_only, "Propagation": "rprivate",
            }),
        })
        .collect()
}

/// Copy files between a container and the host
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  berth cp tests:/out/report.xml .\n  berth cp ./fixtures web:/srv/data\n  berth cp tests:/out/. results/\n  berth cp tests:/out - | tar -t"
)]
pub struct Cp {
    /// CONTAINER:SRC_PATH, a host path, or - (a tar stream on stdin)
    src: String,
    /// CONTAINER:DEST_PATH, a host path, or - (a tar stream to stdout)
    dest: String,
    /// Keep the source's owners (uid and gid)
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink given as SRC_PATH
    #[arg(short = 'L', long)]
    follow_link: bool,
}

impl Cp {
    /// Copies in the direction the `CONTAINER:` side gives, by docker's rules.
    pub fn run(self, root: &Path) -> Result<()> {
        use runner::container::copy;
        let opts = copy::CopyOptions { archive: self.archive, follow_link: self.follow_link };
        let path_of = |side: &str| container_path(side).map(|(c, p)| (c.to_owned(), p.to_owned()));
        match (path_of(&self.src), path_of(&self.dest)) {
            (Some(_), Some(_)) => bail!("copying between containers is not supported"),
            (None, None) => bail!("must specify at least one container source (CONTAINER:PATH)"),
            (Some((name, src)), None) => {
                let c = container::find(root, &name)?;
                match self.dest.as_str() {
                    "-" => copy::archive_out(&c, &src, std::io::stdout(), opts)?,
                    dest => copy::copy_out(&c, &src, Path::new(dest), opts)?,
                }
            }
            (None, Some((name, dest))) => {
                let c = container::find(root, &name)?;
                match self.src.as_str() {
                    "-" => copy::archive_in(std::io::stdin(), &c, &dest, opts)?,
                    src => copy::copy_in(Path::new(src), &c, &dest, opts)?,
                }
            }
        }
        Ok(())
    }
}

/// `CONTAINER:PATH` split, as docker reads it: a colon before any `/`, and not a path that
/// starts with `.` or `/` (so `./a:b` is a host file). An empty path is the root.
fn container_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (name, path) = arg.split_once(':')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some((name, if path.is_empty() { "/" } else { path }))
}

/// List a container's published ports, or where one of them is published
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth port web\n  berth port web 8080/tcp\n  curl http://$(berth port web 8080)/")]
pub struct Port {
    /// The container
    container: String,
    /// One port of the container, PORT or PORT/PROTO (tcp when not given)
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

impl Port {
    /// Prints docker's lines: `8080/tcp -> 127.0.0.1:49153` for each published port, or
    /// `127.0.0.1:49153` for the one asked about (an error when it is not published).
    pub fn run(self, root: &Path) -> Result<()> {
        let c = container::find(root, &self.container)?;
        let state = c.state()?;
        let mut out = std::io::stdout().lock();
        let Some(asked) = &self.port else {
            for p in &state.ports {
                writeln!(out, "{}/{} -> {}:{}", p.container_port, p.proto, p.host_ip, p.host_port)?;
            }
            return Ok(());
        };
        let (port, proto) = asked.split_once('/').unwrap_or((asked.as_str(), "tcp"));
        let port: u16 = port.parse().with_context(|| format!("invalid port {asked:?}: PORT or PORT/PROTO"))?;
        let found: Vec<_> = state.ports.iter().filter(|p| p.container_port == port && p.proto == proto).collect();
        if found.is_empty() {
            bail!("no public port '{port}/{proto}' published for {}", c.config.name);
        }
        for p in found {
            writeln!(out, "{}:{}", p.host_ip, p.host_port)?;
        }
        Ok(())
    }
}

/// Export a container's filesystem as a tar archive
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  berth export -o rootfs.tar web\n  berth export web | berth import - flat:latest")]
pub struct Export {
    /// The container
    container: String,
    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

impl Export {
    /// Writes the container's whole tree (its rootfs with its changes; not its volumes) as
    /// one tar stream, as docker's export; refuses to write the archive to a terminal.
    pub fn run(self, root: &Path) -> Result<()> {
        use std::io::IsTerminal;
        let c = container::find(root, &self.container)?;
        match &self.output {
            Some(path) => {
                let tmp = path.with_extension("berth-partial");
                let file = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
                let written = runner::container::copy::export(&c, std::io::BufWriter::new(file));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
                std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
            }
            None if std::io::stdout().is_terminal() => {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect")
            }
            None => runner::container::copy::export(&c, std::io::stdout())?,
        }
        Ok(())
    }
}
