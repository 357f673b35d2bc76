//! `berth stats`: what a running container uses, as docker's `stats` shows it: CPU time,
//! memory against its limit, network and block I/O, and tasks. Read from the container's
//! groups where they account it (v2's core files, v1's memory, cpuacct and pids groups,
//! which a container with limits has), else summed over its processes from /proc (a
//! container without limits on a hybrid host has no memory group to read).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Container, Result, Status};
use crate::cgroup::Cgroup;

/// One reading of a running container.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// CPU time its processes used since it started.
    pub cpu: Duration,
    /// Memory in use, without the inactive file cache (docker's `MEM USAGE`).
    pub memory: u64,
    /// Its memory limit, or the host's memory without one.
    pub limit: u64,
    /// Tasks (threads) in it.
    pub pids: u64,
    /// Bytes its network interfaces received and sent (loopback left out).
    pub net: (u64, u64),
    /// Bytes its processes read from and wrote to block devices.
    pub block: (u64, u64),
    /// When it was read.
    pub taken: Instant,
}

impl Sample {
    /// CPU use between `earlier` and this sample, in percent of one CPU (a container busy
    /// on two CPUs shows 200%, as docker's).
    pub fn cpu_percent(&self, earlier: &Sample) -> f64 {
        let wall = self.taken.saturating_duration_since(earlier.taken).as_secs_f64();
        let used = self.cpu.saturating_sub(earlier.cpu).as_secs_f64();
        if wall > 0.0 {
            used / wall * 100.0
        } else {
            0.0
        }
    }

    /// Memory in use, in percent of the limit.
    pub fn memory_percent(&self) -> f64 {
        if self.limit > 0 {
            self.memory as f64 / self.limit as f64 * 100.0
        } else {
            0.0
        }
    }
}

/// A reading of `c`, or `None` when it is not running (or stopped while it was read).
pub fn sample(c: &Container) -> Result<Option<Sample>> {
    let state = c.state()?;
    let Some(pid) = state.pid.filter(|_| state.status == Status::Running) else { return Ok(None) };
    // Its processes, for what the groups do not account: a `--privileged` container may keep
    // them all in groups of its own under its group (whose files count those too).
    let pids = super::processes::of(&c.config, pid).unwrap_or_default();
    let dirs = Cgroup::existing(&c.config.id).dirs().to_vec();
    let from_group = |file: &str| dirs.iter().map(|d| d.join(file)).find(|f| f.exists());
    let cpu = cpu_time(&from_group, &pids);
    let (memory, limit) = memory(&from_group, &pids, c.config.limits().memory);
    let tasks = read_number(from_group("pids.current")).unwrap_or_else(|| pids.iter().map(|p| threads(*p)).sum());
    let net = if c.config.network == "host" { (0, 0) } else { network(pid) };
    let block = pids.iter().map(|p| block_io(*p)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let sample = Sample { cpu, memory, limit, pids: tasks, net, block, taken: Instant::now() };
    // A container that stopped while it was read gives no sample of a stranger's pid.
    Ok((c.state()?.pid == Some(pid)).then_some(sample))
}

/// CPU time: v2's `cpu.stat`, v1's `cpuacct.usage`, else the processes' own times (which
/// miss what exited children used).
fn cpu_time(from_group: &dyn Fn(&str) -> Option<PathBuf>, pids: &[i32]) -> Duration {
    if let Some(usec) = from_group("cpu.stat").and_then(|f| stat_field(&f, "usage_usec")) {
        return Duration::from_micros(usec);
    }
    if let Some(ns) = read_number(from_group("cpuacct.usage")) {
        return Duration::from_nanos(ns);
    }
    // SAFETY: sysconf reads a constant of the C library.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let total: u64 = pids.iter().filter_map(|p| process_ticks(*p)).sum();
    Duration::from_secs_f64(total as f64 / ticks as f64)
}

/// Memory in use and its limit: the group's usage less its inactive file cache (docker's
/// CLI subtracts it), else the processes' resident sets; the limit from the record (never
/// above the host's memory), else the host's memory.
fn memory(from_group: &dyn Fn(&str) -> Option<PathBuf>, pids: &[i32], limit: Option<u64>) -> (u64, u64) {
    let host = crate::host::memory();
    let grouped = [("memory.current", "inactive_file"), ("memory.usage_in_bytes", "total_inactive_file")]
        .into_iter()
        .find_map(|(usage, cache)| {
            let used = read_number(from_group(usage))?;
            let inactive = from_group("memory.stat").and_then(|f| stat_field(&f, cache)).unwrap_or(0);
            Some(used.saturating_sub(inactive))
        });
    let used = grouped.unwrap_or_else(|| pids.iter().filter_map(|p| resident(*p)).sum());
    let limit = limit.unwrap_or(host).min(host);
    (used, limit)
}

/// The number in a file (`None` without the file, or for `max`).
fn read_number(file: Option<PathBuf>) -> Option<u64> {
    std::fs::read_to_string(file?).ok()?.trim().parse().ok()
}

/// The value of `key` in a `key value` file (`cpu.stat`, `memory.stat`).
fn stat_field(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A process's user and system time in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn process_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A line `Name: N kB` (or a plain count) of `/proc/PID/status`.
fn status_field(pid: i32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
    value.split_whitespace().next()?.parse().ok()
}

/// A process's resident memory in bytes.
fn resident(pid: i32) -> Option<u64> {
    status_field(pid, "VmRSS").map(|kb| kb * 1024)
}

/// A process's threads.
fn threads(pid: i32) -> u64 {
    status_field(pid, "Threads").unwrap_or(1)
}

/// Bytes received and sent by the interfaces of `pid`'s network namespace, `lo` left out.
fn network(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .filter_map(|(_, counters)| {
            let fields: Vec<u64> = counters.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            Some((*fields.first()?, *fields.get(8)?))
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Bytes a process read from and wrote to storage (`/proc/PID/io`).
fn block_io(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or(0);
    (field("read_bytes:"), field("write_bytes:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_of_one_cpu_over_the_wall_time_between_samples() {
        let at = Instant::now();
        let sample = |cpu_ms, wall_ms| Sample {
            cpu: Duration::from_millis(cpu_ms),
            memory: 50,
            limit: 200,
            pids: 1,
            net: (0, 0),
            block: (0, 0),
            taken: at + Duration::from_millis(wall_ms),
        };
        assert_eq!(sample(1500, 1000).cpu_percent(&sample(500, 0)), 100.0);
        assert_eq!(sample(2500, 1000).cpu_percent(&sample(500, 0)), 200.0);
        assert_eq!(sample(500, 0).cpu_percent(&sample(500, 0)), 0.0);
        assert_eq!(sample(0, 0).memory_percent(), 25.0);
    }

    #[test]
    fn own_process_is_read_from_proc() {
        let me = std::process::id() as i32;
        assert!(resident(me).is_some_and(|r| r > 0));
        assert!(threads(me) >= 1);
        assert!(process_ticks(me).is_some());
    }
}
