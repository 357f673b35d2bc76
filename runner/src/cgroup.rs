//! Resource limits through cgroups: v2 where the controller is on the unified hierarchy,
//! v1 otherwise (this machine mounts both, in hybrid mode: memory, pids and cpu are v1).
//!
//! A container gets `berth/<id>` under each controller it needs; the child joins them
//! between fork and exec (writing `0` to `cgroup.procs`), and [`Cgroup::remove`] kills
//! what is left, waits until the group is empty, and removes the directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::resources::{Limits, Setting};

/// Parses a size as docker's `RAMInBytes` does (`-m`, `--shm-size`, `--keep-storage`): a
/// number with a fraction or not, an optional space, then an optional unit k, m, g, t or p
/// (any case, each 1024 times the one before) with an optional `i` and `b`: `512`, `1.5m`,
/// `64MB`, `64MiB`, `2g`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?} (try 64m, 1.5g, 512MiB)");
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let (letter, rest) = unit.split_at(unit.chars().next().filter(|c| "kmgtp".contains(*c)).map_or(0, |_| 1));
    let power = match letter {
        "" => 0,
        l => "kmgtp".find(l).map_or(0, |i| i as i32 + 1),
    };
    let rest = rest.strip_prefix('i').unwrap_or(rest);
    if !(rest.is_empty() || rest == "b") {
        return Err(bad());
    }
    let bytes = n * 1024f64.powi(power);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// The cgroup directories of one container.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

const ROOT: &str = "/sys/fs/cgroup";

fn io(op: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value).map_err(|e| io("write", path, e))
}

/// Where a controller lives: the v2 directory when the unified hierarchy (pure or hybrid)
/// offers it, else its v1 mount.
fn controller_dir(name: &str, v1_mount: &str) -> Option<(PathBuf, bool)> {
    for unified in [ROOT.to_owned(), format!("{ROOT}/unified")] {
        let controllers = std::fs::read_to_string(format!("{unified}/cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == name) {
            return Some((PathBuf::from(unified), true));
        }
    }
    let v1 = PathBuf::from(format!("{ROOT}/{v1_mount}"));
    v1.join("cgroup.procs").exists().then_some((v1, false))
}

impl Cgroup {
    /// Creates `berth/<id>` with `limits` under each controller they need.
    pub fn create(id: &str, limits: &Limits) -> std::io::Result<Cgroup> {
        let mut cg = Cgroup { dirs: Vec::new() };
        let result = cg.setup(id, limits);
        if let Err(e) = result {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn setup(&mut self, id: &str, limits: &Limits) -> std::io::Result<()> {
        self.apply(id, limits)?;
        // On v1, a group in every hierarchy a runtime reads, as docker makes them: the JVM
        // takes its limits from cgroups only when it finds all of memory, cpu, cpuacct and
        // cpuset (else it sizes its heap from the host's memory).
        if !limits.is_empty() {
            for name in V1_ALWAYS {
                if matches!(controller_dir(name, name), Some((_, false))) {
                    self.make(id, name)?;
                }
            }
        }
        self.make_core(id)
    }

    /// Makes the group every container gets, limits or not, as docker's: on the unified
    /// hierarchy where there is one (a hybrid host's included), with no controller, else
    /// under v1's freezer. It holds every process of the container, so that they can be
    /// listed, frozen (`pause`) and killed together, whatever PID namespace they are in.
    fn make_core(&mut self, id: &str) -> std::io::Result<()> {
        let base = core_parent().ok_or_else(|| std::io::Error::other("no cgroup hierarchy to put the container in"))?;
        let dir = Path::new(&base).join(id);
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir);
        }
        Ok(())
    }

    /// Makes `berth/<id>` under controller `name` (enabling it on the way on v2; giving a
    /// v1 cpuset group its parent's CPUs and memory nodes, without which it takes no
    /// process), once; its directory and whether it is v2.
    fn make(&mut self, id: &str, name: &str) -> std::io::Result<(PathBuf, bool)> {
        let (base, v2) = controller_dir(name, name)
            .ok_or_else(|| std::io::Error::other(format!("the {name} cgroup controller is not available")))?;
        let parent = base.join("berth");
        std::fs::create_dir_all(&parent).map_err(|e| io("create", &parent, e))?;
        if v2 {
            // Each time, not only when `berth/` is made: the group every container gets
            // makes it with no controller (found by a review: limits then failed on pure v2).
            for dir in [&base, &parent] {
                enable(dir, name)?;
            }
        }
        let dir = parent.join(id);
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        if name == "cpuset" && !v2 {
            for (from, to) in [(&base, &parent), (&parent, &dir)] {
                inherit_cpuset(from, to)?;
            }
        }
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir.clone());
        }
        Ok((dir, v2))
    }

    /// Writes the files `limits` set (see [`Limits::settings`]) into the container's groups,
    /// making a group under each controller that has none yet; returns the directories
    /// made, which hold none of its processes yet ([`Cgroup::adopt`]). A setting this host's
    /// hierarchy has no file for is skipped ([`unsupported`] warns of it beforehand). A
    /// write the kernel refuses is tried again after the others: v1 takes a memory limit
    /// above the memory+swap limit only once that has grown (`update`).
    pub fn apply(&mut self, id: &str, limits: &Limits) -> std::io::Result<Vec<PathBuf>> {
        let before = self.dirs.clone();
        // Memory first, and alone: the one limit the kernel refuses for what is running (a
        // limit below the usage), refused before anything else has changed.
        let (memory, rest): (Vec<Setting>, Vec<Setting>) =
            limits.settings().into_iter().partition(|s| s.controller == "memory");
        self.write_settings(id, memory)?;
        self.write_settings(id, rest)?;
        Ok(self.dirs.iter().filter(|d| !before.contains(d)).cloned().collect())
    }

    /// Writes `settings`, each refused one again after the others (see [`Cgroup::apply`]).
    fn write_settings(&mut self, id: &str, settings: Vec<Setting>) -> std::io::Result<()> {
        let mut refused = Vec::new();
        for setting in settings {
            let (dir, v2) = self.make(id, setting.controller)?;
            let Some((file, value)) = (if v2 { setting.v2 } else { setting.v1 }) else { continue };
            let path = dir.join(file);
            if !path.exists() {
                // Swap accounting is the one file a kernel may lack (`unsupported` warned of
                // v1's before the start; v2's shows only here).
                if file.starts_with("memory.memsw.") || file == "memory.swap.max" {
                    eprintln!("berth: warning: {}: {}", setting.flag, discarded(setting.flag));
                    continue;
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{}: the kernel has no {}", setting.flag, path.display()),
                ));
            }
            if write(&path, &value).is_err() {
                refused.push((path, value));
            }
        }
        for (path, value) in refused {
            write(&path, &value)?;
        }
        Ok(())
    }

    /// Moves processes into the groups `dirs` (made by [`Cgroup::apply`] for a running
    /// container): each must be in every group of its container for a limit to hold. Returns
    /// how many writes moved one.
    pub fn adopt(dirs: &[PathBuf], pids: &[i32]) -> std::io::Result<usize> {
        let mut moved = 0;
        for dir in dirs {
            // v1 leaves a moved process's memory charged to its old group unless told to
            // move it. Kernels since 6.8 refuse the switch (EINVAL: charge moving is gone),
            // and v2 needs none (the group is the same one): the new limit then counts the
            // memory allocated from now on.
            let charges = dir.join("memory.move_charge_at_immigrate");
            match std::fs::write(&charges, "3") {
                Err(e) if charges.exists() && e.raw_os_error() != Some(libc::EINVAL) => {
                    return Err(io("write", &charges, e));
                }
                _ => {}
            }
            for pid in pids {
                let procs = dir.join("cgroup.procs");
                match std::fs::write(&procs, pid.to_string()) {
                    // A process that ended meanwhile has nothing to limit.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(io("write", &procs, e)),
                    Ok(()) => moved += 1,
                }
            }
        }
        Ok(moved)
    }

    /// Writes `value` to `file` in each group that has that file.
    pub fn set(&self, file: &str, value: &str) -> std::io::Result<()> {
        self.dirs.iter().map(|d| d.join(file)).filter(|f| f.exists()).try_for_each(|f| write(&f, value))
    }

    /// The groups of container `id` that exist now, wherever a controller put them: for a
    /// process that joins a running container (`exec`, health checks).
    pub fn existing(id: &str) -> Cgroup {
        let mut dirs: Vec<PathBuf> = parents().map(|b| Path::new(&b).join(id)).filter(|d| d.is_dir()).collect();
        // v1's cpu is often cpu,cpuacct: the same directory under two names.
        dirs.dedup_by(|a, b| std::fs::canonicalize(&*a).ok() == std::fs::canonicalize(&*b).ok());
        Cgroup { dirs }
    }

    /// The groups' directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The processes in the groups (one that is in several is listed once per group).
    pub fn pids(&self) -> std::io::Result<Vec<i32>> {
        let mut pids = Vec::new();
        for procs in self.procs_files() {
            let text = std::fs::read_to_string(&procs).map_err(|e| io("read", &procs, e))?;
            pids.extend(text.lines().filter_map(|p| p.trim().parse::<i32>().ok()));
        }
        Ok(pids)
    }

    /// The `cgroup.procs` files the child writes `0` into to join, before exec.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the OOM killer killed a process in the memory group: the `oom_kill` count of
    /// `memory.events` (v2) or `memory.oom_control` (v1, kernel 4.13+). Read it before
    /// [`Cgroup::remove`], which takes the counts away.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|d| {
            ["memory.events", "memory.oom_control"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
                .any(|text| oom_kills(&text) > 0)
        })
    }

    /// Freezes every process in the groups (`pause`), or thaws them (`unpause`), and
    /// returns once the kernel reports them so (v2's `cgroup.events`, v1's `freezer.state`).
    pub fn freeze(&self, frozen: bool) -> std::io::Result<()> {
        let freezer = |d: &&PathBuf| d.join("cgroup.freeze").exists() || d.join("freezer.state").exists();
        let dir = self
            .dirs
            .iter()
            .find(freezer)
            .ok_or_else(|| std::io::Error::other("the container has no freezer cgroup"))?;
        // What to write where (frozen, thawed), and which file's line says it took effect.
        let (file, [on, off], report, want) = if dir.join("cgroup.freeze").exists() {
            (
                dir.join("cgroup.freeze"),
                ["1", "0"],
                dir.join("cgroup.events"),
                if frozen { "frozen 1" } else { "frozen 0" },
            )
        } else {
            let states = ["FROZEN", "THAWED"];
            (dir.join("freezer.state"), states, dir.join("freezer.state"), states[usize::from(!frozen)])
        };
        write(&file, if frozen { on } else { off })?;
        let start = Instant::now();
        let result = loop {
            let now = match std::fs::read_to_string(&report) {
                Ok(now) => now,
                Err(e) => break Err(io("read", &report, e)),
            };
            if now.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if start.elapsed() > FREEZE_TIMEOUT {
                let late = format!("{} did not take effect in {} s", file.display(), FREEZE_TIMEOUT.as_secs());
                break Err(std::io::Error::new(std::io::ErrorKind::TimedOut, late));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if frozen {
            // Not left half frozen, with nothing recorded to thaw it (found by a review).
            let _ = write(&file, off);
        }
        result
    }

    /// Whether the groups are frozen, or freezing: what the kernel says, whatever berth
    /// recorded (a freeze that a killed berth left behind included).
    pub fn frozen(&self) -> bool {
        self.dirs.iter().any(|d| {
            let v2 = std::fs::read_to_string(d.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1");
            let v1 = std::fs::read_to_string(d.join("freezer.state")).is_ok_and(|v| v.trim() != "THAWED");
            v2 || v1
        })
    }

    /// Kills every process in the groups and waits until they are empty (a second at
    /// most). Without `cgroup.kill` (v1, kernels before 5.14), each pass kills what the
    /// group holds then, so that a process forked during one dies in the next. Frozen
    /// processes are thawed, so that they can die.
    pub fn kill(&self) {
        for dir in &self.dirs {
            let procs = dir.join("cgroup.procs");
            let start = Instant::now();
            // The kernel kills them all, those forked meanwhile and those in groups under it
            // included: then only wait.
            let killed = dir.join("cgroup.kill").exists() && write(&dir.join("cgroup.kill"), "1").is_ok();
            while procs.exists() {
                // A `--privileged` container may have made groups of its own under its group.
                let pids: String =
                    subtree(dir).iter().filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok()).collect();
                if pids.trim().is_empty() || start.elapsed() > Duration::from_secs(1) {
                    break;
                }
                for pid in pids.lines().filter(|_| !killed).filter_map(|p| p.parse::<i32>().ok()) {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                if dir.join("freezer.state").exists() {
                    // v1 holds a killed process frozen until it is thawed (v2 lets it die).
                    let _ = write(&dir.join("freezer.state"), "THAWED");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Kills what is left in the groups (see [`Cgroup::kill`]) and removes them.
    pub fn remove(self) {
        self.kill();
        for dir in &self.dirs {
            // The groups a `--privileged` container made under its own go first (rmdir takes
            // empty groups only); one still busy stays, and `sweep_leftovers` finds its parent.
            for group in subtree(dir) {
                let _ = std::fs::remove_dir(group);
            }
        }
    }
}

/// `dir` and every group under it, the deepest first (the order rmdir needs). Iterative: a
/// privileged container may nest groups as deep as it likes.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let children = std::fs::read_dir(&d).into_iter().flatten().flatten();
        todo.extend(children.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        found.push(d);
    }
    found.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    found
}

/// How long a freeze or a thaw may take to take effect.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// The v1 hierarchies a container with any limit gets a group in.
const V1_ALWAYS: [&str; 5] = ["memory", "cpu", "cpuacct", "cpuset", "pids"];

/// Enables controller `name` for the children of the v2 group `dir`, unless it is already.
fn enable(dir: &Path, name: &str) -> std::io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).map_err(|e| io("read", &control, e))?;
    if enabled.split_whitespace().any(|c| c == name) {
        return Ok(());
    }
    write(&control, &format!("+{name}"))
}

/// Gives the v1 cpuset group `to` the CPUs and memory nodes of `from` where it has none yet.
fn inherit_cpuset(from: &Path, to: &Path) -> std::io::Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let have = std::fs::read_to_string(to.join(file)).map_err(|e| io("read", &to.join(file), e))?;
        if have.trim().is_empty() {
            let value = std::fs::read_to_string(from.join(file)).map_err(|e| io("read", &from.join(file), e))?;
            write(&to.join(file), value.trim())?;
        }
    }
    Ok(())
}

/// The `oom_kill N` count of a `memory.events` or `memory.oom_control` file (0 without one).
fn oom_kills(text: &str) -> u64 {
    text.lines().filter_map(|l| l.strip_prefix("oom_kill ")).find_map(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Every place berth's groups may be: `berth/` on the unified hierarchy (either mount
/// point), under each v1 controller berth uses, and under v1's freezer.
fn parents() -> impl Iterator<Item = String> {
    [format!("{ROOT}/berth"), format!("{ROOT}/unified/berth"), format!("{ROOT}/freezer/berth")]
        .into_iter()
        .chain(V1_ALWAYS.map(|c| format!("{ROOT}/{c}/berth")))
}

/// Where the group every container gets goes (see [`Cgroup::make_core`]): `berth/` on the
/// unified hierarchy (cgroup2 has `cgroup.controllers` at its root), else under v1's freezer.
fn core_parent() -> Option<String> {
    let unified = [ROOT.to_owned(), format!("{ROOT}/unified")]
        .into_iter()
        .find(|dir| Path::new(dir).join("cgroup.controllers").exists());
    let freezer = || controller_dir("freezer", "freezer").map(|(dir, _)| dir.display().to_string());
    unified.or_else(freezer).map(|dir| format!("{dir}/berth"))
}

/// docker's warnings for the limits this host's cgroups cannot take (they are discarded:
/// cgroup v2 has no swappiness or OOM-killer switch; v1 without swap accounting has no
/// memory+swap limit), and for an OOM killer disabled without a memory limit.
pub fn unsupported(limits: &Limits) -> Vec<String> {
    let mut out = Vec::new();
    let e = limits.effective();
    if e.oom_kill_disable && e.memory.is_none() {
        out.push(
            "OOM killer is disabled for the container, but no memory limit is set, this can result in the \
             system running out of resources."
                .to_owned(),
        );
    }
    for setting in limits.settings() {
        let Some((base, v2)) = controller_dir(setting.controller, setting.controller) else { continue };
        let file = if v2 { setting.v2.as_ref() } else { setting.v1.as_ref() }.map(|(f, _)| *f);
        // Swap accounting is the one a kernel may lack; v1's root group shows whether it
        // has it (v2's root has no limit files at all).
        let missing = file.is_none_or(|f| f == "memory.memsw.limit_in_bytes" && !base.join(f).exists());
        if missing {
            out.push(discarded(setting.flag));
        }
    }
    out.dedup();
    out
}

/// docker's words for a limit the kernel cannot take.
fn discarded(flag: &str) -> String {
    match flag {
        "--memory-swap" => {
            "Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited \
             without swap."
                .into()
        }
        "--memory-swappiness" => "Your kernel does not support memory swappiness capabilities or the cgroup is \
                                  not mounted. Memory swappiness discarded."
            .into(),
        "--oom-kill-disable" => "Your kernel does not support OomKillDisable. OomKillDisable discarded.".into(),
        "--memory-reservation" => "Your kernel does not support memory soft limit capabilities or the cgroup is \
                                   not mounted. Limitation discarded."
            .into(),
        flag => format!("Your kernel does not support {flag} or the cgroup is not mounted. {flag} discarded."),
    }
}

/// Removes the groups of container `id` left by a supervisor that died (killing what is left).
pub fn remove_stale(id: &str) {
    Cgroup::existing(id).remove();
}

/// How long an empty group stays before [`sweep_leftovers`] takes it: a container that is
/// starting (of any berth root) has made its group and not yet joined it.
const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// Removes the empty groups under `berth/` older than a minute: those of foreground
/// containers whose berth was killed (SIGKILL leaves no time to clean up). A group with a
/// process in it is never touched. Returns how many went.
pub fn sweep_leftovers() -> usize {
    let mut removed = 0;
    for base in parents() {
        let Ok(entries) = std::fs::read_dir(&base) else { continue };
        for dir in entries.flatten().map(|e| e.path()) {
            let is_container = dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_container {
                // The hierarchy's own files: nothing to read.
                continue;
            }
            let old = std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > LEFTOVER_AGE));
            // With the groups a `--privileged` container made under it.
            let tree = subtree(&dir);
            let empty =
                |d: &PathBuf| std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
            // rmdir fails on a group that gained a process meanwhile: the kernel decides.
            if old && tree.iter().all(empty) && tree.iter().all(|d| std::fs::remove_dir(d).is_ok()) {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_docker_does() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("100m").unwrap(), 100 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        for (given, bytes) in [("1.5m", 3 << 19), ("64MB", 64 << 20), ("64MiB", 64 << 20), ("64 m", 64 << 20)] {
            assert_eq!(parse_size(given), Ok(bytes), "{given}");
        }
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        assert_eq!(parse_size("10b").unwrap(), 10);
        for bad in ["lots", "", "m", "1.m", "64xb", "64mbb", "-1", "99999999999p"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_oom_kill_count_is_read_from_v1_and_v2_files() {
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"), 1);
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }
}
