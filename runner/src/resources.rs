//! docker's resource flags (`--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
//! `--cpuset-cpus`, ...): their values, docker's checks of them, and the cgroup file each
//! one sets on v1 and on v2 (with runc's conversions), so that `run`, `create` and `update`
//! set them alike and the conversions can be tested on a host of either kind.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The smallest memory limit or reservation docker takes: less is killed at once.
pub const MIN_MEMORY: u64 = 6 << 20;

/// The CFS period berth uses for `--cpus`, docker's (100 ms).
const DEFAULT_PERIOD: u64 = 100_000;

/// A container's resource limits, as `docker run` and `docker update` take them. 0 (or an
/// empty string) means no limit, as docker reads it; [`Limits::effective`] drops those.
/// The field names are those of berth's container records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// `--memory`: bytes.
    #[serde(default)]
    pub memory: Option<u64>,
    /// `--memory-swap`: memory plus swap, in bytes; -1 for unlimited swap. Unset with a
    /// memory limit: twice the memory, docker's default.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// `--memory-reservation`: the soft limit the kernel reclaims towards under pressure.
    #[serde(default)]
    pub memory_reservation: Option<u64>,
    /// `--memory-swappiness`: 0 to 100 (cgroup v1 only).
    #[serde(default)]
    pub memory_swappiness: Option<i64>,
    /// `--oom-kill-disable` (cgroup v1 only).
    #[serde(default)]
    pub oom_kill_disable: bool,
    /// `--pids-limit`: processes.
    #[serde(default, rename = "pids_limit")]
    pub pids: Option<u64>,
    /// `--cpus`: CPU time as a number of CPUs.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// `--cpu-shares`: the relative weight (docker's 1024 is the default).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// `--cpu-period`: the CFS period in microseconds.
    #[serde(default)]
    pub cpu_period: Option<u64>,
    /// `--cpu-quota`: CPU time per period in microseconds; -1 for none.
    #[serde(default)]
    pub cpu_quota: Option<i64>,
    /// `--cpuset-cpus`: the CPUs the container may run on (`0-3`, `0,2`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
    /// `--cpuset-mems`: the memory nodes it may allocate from.
    #[serde(default)]
    pub cpuset_mems: Option<String>,
}

/// One cgroup file a limit sets: under which controller, and its name and value on each
/// hierarchy (`None` where that hierarchy has no such setting: docker warns and goes on).
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The controller whose group holds the file.
    pub controller: &'static str,
    /// The file and value on cgroup v1.
    pub v1: Option<(&'static str, String)>,
    /// The file and value on cgroup v2.
    pub v2: Option<(&'static str, String)>,
    /// What the flag is called, for the warning where a hierarchy cannot take it.
    pub flag: &'static str,
}

impl Setting {
    fn new(
        controller: &'static str,
        flag: &'static str,
        v1: Option<(&'static str, String)>,
        v2: Option<(&'static str, String)>,
    ) -> Setting {
        Setting { controller, v1, v2, flag }
    }
}

impl Limits {
    /// These limits without the values that mean "no limit" (0, an empty set, a negative
    /// swappiness), as the cgroup files need them.
    pub fn effective(&self) -> Limits {
        let set = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        Limits {
            memory: self.memory.filter(|m| *m > 0),
            memory_swap: self.memory_swap.filter(|s| *s != 0),
            memory_reservation: self.memory_reservation.filter(|m| *m > 0),
            memory_swappiness: self.memory_swappiness.filter(|s| *s >= 0),
            oom_kill_disable: self.oom_kill_disable,
            pids: self.pids.filter(|p| *p > 0),
            cpus: self.cpus.filter(|c| *c > 0.0),
            cpu_shares: self.cpu_shares.filter(|s| *s > 0),
            cpu_period: self.cpu_period.filter(|p| *p > 0),
            cpu_quota: self.cpu_quota.filter(|q| *q != 0),
            cpuset_cpus: set(&self.cpuset_cpus),
            cpuset_mems: set(&self.cpuset_mems),
        }
    }

    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.effective() == Limits::default()
    }

    /// The swap limit in force: `--memory-swap`, else twice `--memory` (docker's default).
    pub fn swap(&self) -> Option<i64> {
        let e = self.effective();
        e.memory_swap.or(e.memory.map(|m| (m as i64).saturating_mul(2)))
    }

    /// These limits changed by `given` as docker's `update` changes them: a value given as 0
    /// (or empty) leaves the old one, except `--pids-limit` 0 (or -1), which removes it. A
    /// new memory limit above the memory+swap limit in force needs a new one with it.
    pub fn updated(&self, given: &Limits) -> Result<Limits, String> {
        let g = given.effective();
        let old = self.effective();
        let conflict = |what: &str, set: &str| {
            Err(format!("Conflicting options: {what} cannot be updated as {set} has already been set"))
        };
        match () {
            _ if g.cpu_period.is_some() && old.cpus.is_some() => return conflict("CPU Period", "NanoCPUs"),
            _ if g.cpu_quota.is_some_and(|q| q > 0) && old.cpus.is_some() => return conflict("CPU Quota", "NanoCPUs"),
            _ if g.cpus.is_some() && old.cpu_period.is_some() => return conflict("Nano CPUs", "CPU Period"),
            _ if g.cpus.is_some() && old.cpu_quota.is_some_and(|q| q > 0) => return conflict("Nano CPUs", "CPU Quota"),
            _ => {}
        }
        let mut new = self.clone();
        if let Some(m) = g.memory {
            // docker's rule: without a new memory+swap limit, the memory limit may not pass
            // the one in force, which a container made without limits has as 0 (or -1).
            if g.memory_swap.is_none() && m as i64 > self.memory_swap.unwrap_or(0) {
                return Err("Memory limit should be smaller than already set memoryswap limit, update the \
                            memoryswap at the same time"
                    .into());
            }
            new.memory = Some(m);
        }
        new.memory_swap = g.memory_swap.or(new.memory_swap);
        new.memory_reservation = g.memory_reservation.or(new.memory_reservation);
        new.cpus = g.cpus.or(new.cpus);
        new.cpu_shares = g.cpu_shares.or(new.cpu_shares);
        new.cpu_period = g.cpu_period.or(new.cpu_period);
        new.cpu_quota = g.cpu_quota.or(new.cpu_quota);
        new.cpuset_cpus = g.cpuset_cpus.or(new.cpuset_cpus);
        new.cpuset_mems = g.cpuset_mems.or(new.cpuset_mems);
        if given.pids.is_some() {
            new.pids = g.pids;
        }
        Ok(new)
    }

    /// docker's checks, with its messages (`verifyPlatformContainerResources`); `cpus` and
    /// `mems` are the CPUs and memory nodes the host has.
    pub fn check(&self, cpus: &BTreeSet<u32>, mems: &BTreeSet<u32>) -> Result<(), String> {
        self.check_memory()?;
        self.check_cpu()?;
        let e = self.effective();
        let n = cpus.len().max(1);
        if e.cpus.is_some_and(|c| !(0.01..=n as f64).contains(&c)) {
            return Err(format!("Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"));
        }
        for (given, available, what, kind) in
            [(&e.cpuset_cpus, cpus, "cpuset cpus", "CPUs"), (&e.cpuset_mems, mems, "cpuset mems", "memory nodes")]
        {
            if let Some(given) = given {
                let wanted = parse_list(given).map_err(|_| format!("Invalid value {given} for {what}"))?;
                if !wanted.is_subset(available) {
                    return Err(format!(
                        "Requested {kind} are not available - requested {given}, available: {}",
                        format_list(available)
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_memory(&self) -> Result<(), String> {
        let e = self.effective();
        if e.memory.is_some_and(|m| m < MIN_MEMORY) {
            return Err("Minimum memory limit allowed is 6MB".into());
        }
        if e.memory_swap.is_some_and(|s| s > 0) && e.memory.is_none() {
            return Err("You should always set the Memory limit when using Memoryswap limit, see usage".into());
        }
        if let (Some(m), Some(s)) = (e.memory, e.memory_swap.filter(|s| *s > 0)) {
            if (s as u64) < m {
                return Err("Minimum memoryswap limit should be larger than memory limit, see usage".into());
            }
        }
        if let Some(s) = self.memory_swappiness.filter(|s| !(-1..=100).contains(s)) {
            return Err(format!("Invalid value: {s}, valid memory swappiness range is 0-100"));
        }
        if let Some(r) = e.memory_reservation {
            if e.memory.is_some_and(|m| m < r) {
                return Err("Minimum memory limit can not be less than memory reservation limit, see usage".into());
            }
            if r < MIN_MEMORY {
                return Err("Minimum memory reservation allowed is 6MB".into());
            }
        }
        Ok(())
    }

    fn check_cpu(&self) -> Result<(), String> {
        let e = self.effective();
        if e.cpus.is_some() && e.cpu_period.is_some() {
            return Err("Conflicting options: Nano CPUs and CPU Period cannot both be set".into());
        }
        if e.cpus.is_some() && e.cpu_quota.is_some_and(|q| q > 0) {
            return Err("Conflicting options: Nano CPUs and CPU Quota cannot both be set".into());
        }
        if e.cpu_period.is_some_and(|p| !(1000..=1_000_000).contains(&p)) {
            return Err("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)".into());
        }
        if e.cpu_quota.is_some_and(|q| (1..1000).contains(&q)) {
            return Err("CPU cfs quota can not be less than 1ms (i.e. 1000)".into());
        }
        if e.cpu_quota.is_some_and(|q| q < -1) {
            return Err("CPU cfs quota can not be less than -1 (no limit)".into());
        }
        Ok(())
    }

    /// The cgroup files these limits set, in the order they must be written.
    pub fn settings(&self) -> Vec<Setting> {
        let e = self.effective();
        let mut out = Vec::new();
        if let Some(m) = e.memory {
            out.push(Setting::new(
                "memory",
                "--memory",
                Some(("memory.limit_in_bytes", m.to_string())),
                Some(("memory.max", m.to_string())),
            ));
        }
        if let Some(swap) = self.swap() {
            // v1 counts memory and swap together; v2 swap alone (runc's conversion).
            let v2 = match (swap, e.memory) {
                (-1, _) => "max".to_owned(),
                (s, Some(m)) => (s as u64).saturating_sub(m).to_string(),
                (s, None) => s.to_string(),
            };
            out.push(Setting::new(
                "memory",
                "--memory-swap",
                Some(("memory.memsw.limit_in_bytes", swap.to_string())),
                Some(("memory.swap.max", v2)),
            ));
        }
        if let Some(r) = e.memory_reservation {
            let v1 = ("memory.soft_limit_in_bytes", r.to_string());
            out.push(Setting::new("memory", "--memory-reservation", Some(v1), Some(("memory.low", r.to_string()))));
        }
        if let Some(s) = e.memory_swappiness {
            out.push(Setting::new("memory", "--memory-swappiness", Some(("memory.swappiness", s.to_string())), None));
        }
        if e.oom_kill_disable {
            out.push(Setting::new("memory", "--oom-kill-disable", Some(("memory.oom_control", "1".into())), None));
        }
        if let Some(p) = e.pids {
            out.push(Setting::new(
                "pids",
                "--pids-limit",
                Some(("pids.max", p.to_string())),
                Some(("pids.max", p.to_string())),
            ));
        }
        out.extend(e.cpu_settings());
        for (value, file) in [(&e.cpuset_cpus, "cpuset.cpus"), (&e.cpuset_mems, "cpuset.mems")] {
            if let Some(v) = value {
                let flag = if file == "cpuset.cpus" { "--cpuset-cpus" } else { "--cpuset-mems" };
                out.push(Setting::new("cpuset", flag, Some((file, v.clone())), Some((file, v.clone()))));
            }
        }
        out
    }

    /// The CPU time settings: the period before the quota on v1 (the kernel checks the
    /// quota against the period), one `cpu.max` line on v2; and the weight.
    fn cpu_settings(&self) -> Vec<Setting> {
        let mut out = Vec::new();
        let period = self.cpu_period.unwrap_or(DEFAULT_PERIOD);
        let quota = match (self.cpus, self.cpu_quota) {
            (Some(c), _) => Some(((c * period as f64).round() as i64).max(1000)),
            (None, q) => q,
        };
        if quota.is_some() || self.cpu_period.is_some() {
            let v2 = format!("{} {period}", quota.filter(|q| *q > 0).map_or("max".to_owned(), |q| q.to_string()));
            let flag = if self.cpus.is_some() { "--cpus" } else { "--cpu-quota" };
            out.push(Setting::new("cpu", flag, Some(("cpu.cfs_period_us", period.to_string())), Some(("cpu.max", v2))));
            if let Some(q) = quota {
                // v2 has the quota in the same line as the period: written again, the same.
                let v2 = Some(("cpu.max", out[0].v2.clone().map(|(_, v)| v).unwrap_or_default()));
                out.push(Setting::new("cpu", flag, Some(("cpu.cfs_quota_us", q.to_string())), v2));
            }
        }
        if let Some(shares) = self.cpu_shares {
            let shares = shares.clamp(2, 262_144);
            let weight = weight(shares);
            let v1 = ("cpu.shares", shares.to_string());
            out.push(Setting::new("cpu", "--cpu-shares", Some(v1), Some(("cpu.weight", weight.to_string()))));
        }
        out
    }
}

/// v2's `cpu.weight` for v1's `cpu.shares`, as runc (1.3.2 and later) and crun convert
/// them: a curve through 2 -> 1, 1024 -> 100 (each side's default) and 262144 -> 10000.
fn weight(shares: u64) -> u64 {
    let l = (shares.clamp(2, 262_144) as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

/// Parses a CPU or memory node list as the kernel writes them (`0-3,5,7-8`).
pub fn parse_list(s: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',') {
        let bad = || format!("invalid list {s:?}");
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        let (from, to): (u32, u32) = (from.parse().map_err(|_| bad())?, to.parse().map_err(|_| bad())?);
        if from > to || to - from > 65_536 {
            return Err(bad());
        }
        out.extend(from..=to);
    }
    Ok(out)
}

/// Writes a set as the kernel does (`0-3,5`).
pub fn format_list(set: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &n in set {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => runs.push((n, n)),
        }
    }
    let run = |(a, b): &(u32, u32)| if a == b { a.to_string() } else { format!("{a}-{b}") };
    runs.iter().map(run).collect::<Vec<_>>().join(",")
}

/// The host's online CPUs and memory nodes, as [`Limits::check`] wants them.
/// Those of the root cpuset (v1's or v2's effective sets: berth may run in a narrower
/// one than the machine's), else the ones online.
pub fn host_sets() -> (BTreeSet<u32>, BTreeSet<u32>) {
    let read = |paths: &[&str]| {
        let text = paths.iter().find_map(|p| std::fs::read_to_string(p).ok().filter(|t| !t.trim().is_empty()));
        parse_list(&text.unwrap_or_else(|| "0".to_owned())).unwrap_or_default()
    };
    let cpus = ["/sys/fs/cgroup/cpuset/cpuset.effective_cpus", "/sys/fs/cgroup/cpuset.cpus.effective"];
    let mems = ["/sys/fs/cgroup/cpuset/cpuset.effective_mems", "/sys/fs/cgroup/cpuset.mems.effective"];
    (
        read(&[cpus[0], cpus[1], "/sys/devices/system/cpu/online"]),
        read(&[mems[0], mems[1], "/sys/devices/system/node/online"]),
    )
}

/// docker's `--memory-swap` value: a size, or -1 for unlimited swap.
pub fn parse_swap(s: &str) -> Result<i64, String> {
    if s.trim() == "-1" {
        return Ok(-1);
    }
    let n = crate::cgroup::parse_size(s)?;
    i64::try_from(n).map_err(|_| format!("invalid size {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (v1, v2) file=value pairs of `limits`' settings, in order.
    fn files(limits: &Limits) -> Vec<(String, String)> {
        let show = |f: &Option<(&str, String)>| f.as_ref().map_or("-".to_owned(), |(f, v)| format!("{f}={v}"));
        limits.settings().iter().map(|s| (show(&s.v1), show(&s.v2))).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn memory_flags_set_v1_and_v2_files_as_runc_converts_them() {
        let m = Limits { memory: Some(64 << 20), memory_reservation: Some(32 << 20), ..Default::default() };
        assert_eq!(
            files(&m),
            pairs(&[
                ("memory.limit_in_bytes=67108864", "memory.max=67108864"),
                // docker's default swap: as much again; v2 counts the swap alone.
                ("memory.memsw.limit_in_bytes=134217728", "memory.swap.max=67108864"),
                ("memory.soft_limit_in_bytes=33554432", "memory.low=33554432"),
            ])
        );
        let unlimited = Limits { memory: Some(64 << 20), memory_swap: Some(-1), ..Default::default() };
        assert_eq!(files(&unlimited)[1], ("memory.memsw.limit_in_bytes=-1".into(), "memory.swap.max=max".into()));
        let v1_only = Limits { memory_swappiness: Some(10), oom_kill_disable: true, ..Default::default() };
        assert_eq!(files(&v1_only), pairs(&[("memory.swappiness=10", "-"), ("memory.oom_control=1", "-")]));
        // docker's "unset" values set nothing.
        let unset = Limits { memory: Some(0), memory_swappiness: Some(-1), cpu_shares: Some(0), ..Default::default() };
        assert!(unset.is_empty() && files(&unset).is_empty());
    }

    #[test]
    fn cpu_flags_set_the_period_before_the_quota_and_a_weight_on_v2() {
        let cpus = Limits { cpus: Some(1.5), ..Default::default() };
        let want = [
            ("cpu.cfs_period_us=100000", "cpu.max=150000 100000"),
            ("cpu.cfs_quota_us=150000", "cpu.max=150000 100000"),
        ];
        assert_eq!(files(&cpus), pairs(&want));
        let quota = Limits { cpu_period: Some(50_000), cpu_quota: Some(-1), ..Default::default() };
        assert_eq!(files(&quota)[0].1, "cpu.max=max 50000");
        for (shares, weight) in [(2, "1"), (512, "59"), (1024, "100"), (262_144, "10000"), (1, "1"), (1 << 20, "10000")]
        {
            let l = Limits { cpu_shares: Some(shares), ..Default::default() };
            assert_eq!(files(&l)[0].1, format!("cpu.weight={weight}"), "{shares} shares");
        }
        let set = Limits { cpuset_cpus: Some("0-1".into()), cpuset_mems: Some("0".into()), ..Default::default() };
        assert_eq!(files(&set), pairs(&[("cpuset.cpus=0-1", "cpuset.cpus=0-1"), ("cpuset.mems=0", "cpuset.mems=0")]));
    }

    #[test]
    fn cpu_lists_parse_and_print_as_the_kernel_writes_them() {
        let set = parse_list("0-3,5,7-8\n").unwrap();
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(format_list(&set), "0-3,5,7-8");
        for bad in ["", "x", "3-1", "1,,2", "-1", "0-4294967295"] {
            assert!(parse_list(bad).is_err(), "{bad:?}");
        }
        let host = (parse_list("0-1").unwrap(), parse_list("0").unwrap());
        let check = |l: Limits| l.check(&host.0, &host.1);
        assert!(check(Limits { cpuset_cpus: Some("1".into()), ..Default::default() }).is_ok());
        let err = check(Limits { cpuset_cpus: Some("0-2".into()), ..Default::default() }).unwrap_err();
        assert_eq!(err, "Requested CPUs are not available - requested 0-2, available: 0-1");
        let err = check(Limits { cpus: Some(3.0), ..Default::default() }).unwrap_err();
        assert_eq!(err, "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available");
        let no_quota = Limits { cpus: Some(1.0), cpu_quota: Some(-1), ..Default::default() };
        assert!(check(no_quota).is_ok(), "only a quota above 0 conflicts with --cpus");
    }

    #[test]
    fn update_keeps_what_is_not_given_and_guards_the_swap_limit_as_docker() {
        let old =
            Limits { memory: Some(100 << 20), memory_swap: Some(200 << 20), pids: Some(10), ..Default::default() };
        let given = Limits { cpus: Some(0.5), memory: Some(0), ..Default::default() };
        let new = old.updated(&given).unwrap();
        assert_eq!(
            (new.memory, new.memory_swap, new.pids, new.cpus),
            (old.memory, old.memory_swap, Some(10), Some(0.5))
        );
        let err = old.updated(&Limits { memory: Some(300 << 20), ..Default::default() }).unwrap_err();
        assert!(err.starts_with("Memory limit should be smaller than already set memoryswap limit"), "{err}");
        let both = Limits { memory: Some(300 << 20), memory_swap: Some(600 << 20), ..Default::default() };
        assert_eq!(old.updated(&both).unwrap().memory_swap, Some(600 << 20));
        // `--pids-limit -1` (0 here) removes the limit.
        let new = old.updated(&Limits { pids: Some(0), ..Default::default() }).unwrap();
        assert_eq!(new.pids, None);
        // A container made without limits takes a memory limit only with a memory+swap one.
        let memory = Limits { memory: Some(64 << 20), ..Default::default() };
        assert!(Limits::default().updated(&memory).unwrap_err().starts_with("Memory limit should be smaller"));
        let with_swap = Limits { memory_swap: Some(128 << 20), ..memory };
        assert_eq!(Limits::default().updated(&with_swap).unwrap().memory_swap, Some(128 << 20));
        // Period and quota against docker's NanoCPUs, either way.
        let cpus = Limits { cpus: Some(1.0), ..Default::default() };
        let period = Limits { cpu_period: Some(50_000), ..Default::default() };
        assert!(cpus.updated(&period).unwrap_err().contains("CPU Period cannot be updated as NanoCPUs"));
        assert!(period.updated(&cpus).unwrap_err().contains("Nano CPUs cannot be updated as CPU Period"));
    }

    #[test]
    fn swap_sizes_take_minus_one_for_unlimited() {
        assert_eq!(parse_swap("-1"), Ok(-1));
        assert_eq!(parse_swap("1g"), Ok(1 << 30));
        assert!(parse_swap("-2").is_err());
    }
}
