//! What a container is doing: created, running (pid, ports, health) or exited (code).
//! Written by the supervisor as things happen, read by `ps`, `inspect`, `wait` and `--wait`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The container's life, as docker names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, never started.
    #[default]
    Created,
    /// Its process is running.
    Running,
    /// Its process has exited.
    Exited,
}

impl Status {
    /// docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

impl State {
    /// docker's status word (`State.Status`, `ps --filter status=`): `restarting` while a
    /// restart policy waits to start it again, `paused` while `berth pause` holds it.
    pub fn status_word(&self) -> &'static str {
        match self.status {
            _ if self.awaiting_restart => "restarting",
            Status::Running if self.paused => "paused",
            other => other.as_str(),
        }
    }
}

/// docker's health states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No probe has decided yet.
    #[default]
    Starting,
    /// The last probe passed.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One health probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// When it started (RFC 3339).
    pub start: String,
    /// When it ended.
    pub end: String,
    /// Its exit code (-1 when it timed out or could not start).
    pub exit_code: i32,
    /// Its output, at most 4 KiB.
    pub output: String,
}

/// The health of a container with a health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// starting, healthy or unhealthy.
    pub status: HealthStatus,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last five probes, oldest first.
    pub log: VecDeque<Probe>,
}

impl Health {
    /// How many probes docker keeps.
    pub const KEEP: usize = 5;

    /// Records a probe: a pass makes the container healthy; a failure counts towards
    /// `retries`, except during the start period (where it is only logged).
    pub fn record(&mut self, probe: Probe, retries: u32, in_start_period: bool) {
        if probe.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period || self.status != HealthStatus::Starting {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push_back(probe);
        while self.log.len() > Health::KEEP {
            self.log.pop_front();
        }
    }
}

/// A port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The host address it listens on.
    pub host_ip: String,
    /// The host port (chosen by the kernel when none was given).
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// tcp or udp.
    pub proto: String,
}

/// A container's state, `state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// created, running or exited.
    pub status: Status,
    /// The container's first process, as the host sees it, while it runs.
    pub pid: Option<i32>,
    /// The supervisor's pid, while it runs.
    pub supervisor: Option<i32>,
    /// When it last started.
    pub started_at: Option<String>,
    /// When it last exited.
    pub finished_at: Option<String>,
    /// How it last exited (128 + N for signal N).
    pub exit_code: Option<i32>,
    /// Why it could not start, or why it ended outside its own control.
    pub error: Option<String>,
    /// Its health, with a health check.
    pub health: Option<Health>,
    /// Its published ports, while it runs.
    pub ports: Vec<Published>,
    /// Its address on the bridge, while it runs.
    #[serde(default)]
    pub ip: Option<String>,
    /// The host end of its veth pair, while it runs.
    #[serde(default)]
    pub veth: Option<String>,
    /// Its network's gateway and prefix length, while it runs (none in older records).
    #[serde(default)]
    pub subnet: Option<(std::net::Ipv4Addr, u8)>,
    /// Whether `berth stop` or `kill` ended it: its restart policy does not start it again
    /// until a user's start clears the mark.
    pub stopped_by_user: bool,
    /// Whether the kernel's OOM killer killed a process of its memory cgroup in its last
    /// run: inspect's `State.OOMKilled`, as docker reports it.
    #[serde(default)]
    pub oom_killed: bool,
    /// The pid of a `berth restart` that stops it to start it again: while that process
    /// lives, the stop does not remove a `--rm` container. Cleared by the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarting: Option<i32>,
    /// How many times its restart policy started it again since a user last started it
    /// (docker's `RestartCount`).
    #[serde(default)]
    pub restart_count: u32,
    /// Exited, and its supervisor waits to start it again under its restart policy
    /// (docker's `restarting` status).
    #[serde(default)]
    pub awaiting_restart: bool,
    /// Running, with every process frozen by `berth pause` (docker's `paused` status).
    #[serde(default)]
    pub paused: bool,
}

impl State {
    /// Records the start of process `pid`. A user's stop stays marked (`stopped_by_user`): a
    /// restart that its policy began before the stop, and that started the process after it,
    /// must not start it yet again; a user's start clears the mark itself.
    pub fn started(&mut self, pid: i32, supervisor: i32, ports: Vec<Published>, health: bool) {
        self.status = Status::Running;
        self.pid = Some(pid);
        self.supervisor = Some(supervisor);
        self.started_at = Some(now());
        self.finished_at = None;
        self.exit_code = None;
        self.error = None;
        self.oom_killed = false;
        self.ports = ports;
        // As docker: a new start is `starting` again with no failures, its probe log kept.
        let last = self.health.take().map(|h| Health { log: h.log, ..Health::default() });
        self.health = health.then(|| last.unwrap_or_default());
        self.restarting = None;
        self.awaiting_restart = false;
        self.paused = false;
    }

    /// Whether a `berth restart` that is still alive stopped it, to start it again: then a
    /// `--rm` container is kept. One whose restart died is removed as usual.
    pub fn restart_pending(&self) -> bool {
        self.restarting.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Records the exit.
    pub fn exited(&mut self, code: i32, error: Option<String>) {
        self.status = Status::Exited;
        self.awaiting_restart = false;
        self.paused = false;
        self.pid = None;
        self.supervisor = None;
        self.finished_at = Some(now());
        self.exit_code = Some(code);
        if error.is_some() {
            self.error = error;
        }
        self.ports.clear();
        self.ip = None;
        self.veth = None;
        self.subnet = None;
    }

    /// The gateway and prefix length of the container's address, for inspect: the
    /// bridge's when it has a veth there, else the user-mode network's.
    pub fn gateway(&self) -> Option<(std::net::Ipv4Addr, u8)> {
        self.ip.as_ref()?;
        Some(if let Some(subnet) = self.subnet {
            subnet
        } else if self.veth.is_some() {
            (crate::network::GATEWAY, crate::network::PREFIX)
        } else {
            (crate::usernet::GATEWAY, crate::usernet::PREFIX)
        })
    }

    /// `ps`'s STATUS column: `Up 3 seconds (healthy)`, `Exited (0) 2 minutes ago`, `Created`.
    pub fn describe(&self, since: impl Fn(&str) -> String) -> String {
        match self.status {
            Status::Created => "Created".into(),
            Status::Running => {
                let up = self.started_at.as_deref().map(&since).unwrap_or_default();
                let up = up.trim_end_matches(" ago");
                match &self.health {
                    _ if self.paused => format!("Up {up} (Paused)"),
                    Some(h) => format!("Up {up} ({})", health_word(h.status)),
                    None => format!("Up {up}"),
                }
            }
            Status::Exited => {
                let when = self.finished_at.as_deref().map(since).unwrap_or_default();
                let word = if self.awaiting_restart { "Restarting" } else { "Exited" };
                format!("{word} ({}) {when}", self.exit_code.unwrap_or(-1))
            }
        }
    }
}

fn health_word(s: HealthStatus) -> &'static str {
    match s {
        HealthStatus::Starting => "health: starting",
        other => other.as_str(),
    }
}

/// Now, RFC 3339 with nanoseconds, as docker writes its times.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(code: i32) -> Probe {
        Probe { start: now(), end: now(), exit_code: code, output: String::new() }
    }

    #[test]
    fn a_restart_keeps_a_container_only_while_the_restarting_process_lives() {
        let mut s = State { restarting: Some(std::process::id() as i32), ..State::default() };
        assert!(s.restart_pending());
        // A restart killed mid-stop: its pid gone, the container is removed as usual.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id() as i32;
        dead.wait().unwrap();
        s.restarting = Some(pid);
        assert!(!s.restart_pending());
        s.started(1, 2, Vec::new(), false);
        assert_eq!(s.restarting, None, "a start clears it");
    }

    #[test]
    fn a_stop_that_came_while_a_restart_was_starting_the_process_is_kept() {
        // `stop` marked the container while its supervisor was between deciding to restart it
        // and recording the new process: the mark must survive the start, or the policy starts
        // the stopped process again and again after `stop` returned.
        let mut s = State { awaiting_restart: true, stopped_by_user: true, ..State::default() };
        s.started(1, 2, Vec::new(), false);
        assert!(s.stopped_by_user && !s.awaiting_restart);
        s.exited(143, None);
        assert!(!crate::container::restart::Policy::Always.restarts(143, 1, s.stopped_by_user));
    }

    #[test]
    fn health_follows_dockers_rules() {
        let mut h = Health::default();
        // Failures in the start period are logged but do not count.
        h.record(probe(1), 2, true);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        h.record(probe(0), 2, true);
        assert_eq!(h.status, HealthStatus::Healthy);
        h.record(probe(1), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 1));
        h.record(probe(1), 2, false);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        h.record(probe(0), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            h.record(probe(1), 2, false);
        }
        assert_eq!(h.log.len(), Health::KEEP);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        // A restart: starting again, no streak, the log kept.
        let mut s = State { health: Some(h.clone()), ..State::default() };
        s.started(1, 2, Vec::new(), true);
        let again = s.health.unwrap();
        assert_eq!((again.status, again.failing_streak), (HealthStatus::Starting, 0));
        assert_eq!(again.log, h.log);
    }

    #[test]
    fn ps_status_reads_as_dockers() {
        let mut s = State::default();
        assert_eq!(s.describe(|_| "x".into()), "Created");
        s.started(10, 9, vec![], true);
        assert_eq!(s.describe(|_| "3 seconds ago".into()), "Up 3 seconds (health: starting)");
        s.exited(137, None);
        assert_eq!(s.describe(|_| "1 minute ago".into()), "Exited (137) 1 minute ago");
    }
}
