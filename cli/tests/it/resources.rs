//! docker's resource flags beyond `--memory`, `--cpus` and `--pids-limit` (`--memory-swap`,
//! `--memory-reservation`, `--cpu-shares`, `--cpu-period`/`--cpu-quota`, `--cpuset-cpus`,
//! `--oom-score-adj`, ...), and `update`: the cgroup files they set, read where the kernel
//! keeps them, and docker's refusals.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{container_store as setup, Berth};

/// Whether memory, cpu and pids are v1 controllers here (else cgroup v2).
fn v1() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

/// Whether the kernel accounts swap per group (v1's `swapaccount`, v2's memory.swap.*):
/// without it docker's swap limits are discarded with a warning.
fn swap_accounting() -> bool {
    let v2 = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("memory.swap.max").exists());
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() || v2
}

/// The last CPU the host has online: a `--cpuset-cpus` every host can take.
fn last_cpu() -> String {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    online.trim().rsplit([',', '-']).next().unwrap().to_owned()
}

/// The content of `file` (v1's name, or v2's) in the group of `controller` that process
/// `pid` is in, read from the host.
fn group_file(pid: &str, controller: &str, (v1_file, v2_file): (&str, &str)) -> String {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = |want: &dyn Fn(&str) -> bool| {
        groups.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
            want(names).then(|| path.to_owned())
        })
    };
    let path = match line(&|names| names.split(',').any(|n| n == controller)) {
        Some(path) => format!("/sys/fs/cgroup/{controller}{path}/{v1_file}"),
        None => {
            let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "" } else { "/unified" };
            format!("/sys/fs/cgroup{base}{}/{v2_file}", line(&|names| names.is_empty()).unwrap())
        }
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_owned()
}

/// The pids of a running container's first process and of its children.
fn processes(b: &Berth, name: &str) -> Vec<String> {
    let first = b.ok(&["inspect", "--format", "{{.State.Pid}}", name]).trim().to_owned();
    let kids = std::process::Command::new("pgrep").args(["-P", &first]).output().unwrap();
    let mut all = vec![first];
    all.extend(String::from_utf8_lossy(&kids.stdout).lines().map(str::to_owned));
    all
}

#[test]
fn resource_flags_set_dockers_cgroup_files_and_are_refused_as_docker_refuses_them() {
    let Some(b) = setup() else { return };
    let cpu = last_cpu();
    let flags = [
        "-m",
        "64m",
        "--memory-reservation",
        "32m",
        "--cpu-shares",
        "512",
        "--cpu-period",
        "50000",
        "--cpu-quota",
        "25000",
        "--cpuset-cpus",
        &cpu,
        "--pids-limit",
        "50",
        "--oom-score-adj",
        "300",
    ];
    let mut args = vec!["run", "-d", "--name", "limited"];
    args.extend(flags);
    args.extend(["busybox", "sh", "-c", "sleep 1000 & wait"]);
    b.ok(&args);
    let pid = &processes(&b, "limited")[0];
    let read = |controller, files| group_file(pid, controller, files);
    assert_eq!(read("memory", ("memory.limit_in_bytes", "memory.max")), "67108864");
    // docker's default swap: as much as the memory (v1 counts both, v2 swap alone).
    if swap_accounting() {
        let swap = if v1() { "134217728" } else { "67108864" };
        assert_eq!(read("memory", ("memory.memsw.limit_in_bytes", "memory.swap.max")), swap);
    }
    assert_eq!(read("memory", ("memory.soft_limit_in_bytes", "memory.low")), "33554432");
    // v2 takes a weight (runc's conversion of 512 shares).
    assert_eq!(read("cpu", ("cpu.shares", "cpu.weight")), if v1() { "512" } else { "59" });
    let quota = if v1() {
        format!("{} {}", read("cpu", ("cpu.cfs_quota_us", "")), read("cpu", ("cpu.cfs_period_us", "")))
    } else {
        read("cpu", ("", "cpu.max"))
    };
    assert_eq!(quota, "25000 50000");
    assert_eq!(read("cpuset", ("cpuset.cpus", "cpuset.cpus")), cpu);
    assert_eq!(read("pids", ("pids.max", "pids.max")), "50");
    let inside =
        b.ok(&["exec", "limited", "sh", "-c", "cat /proc/1/oom_score_adj; grep Cpus_allowed_list /proc/1/status"]);
    assert_eq!(inside, format!("300\nCpus_allowed_list:\t{cpu}\n"));
    let fields = "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.MemoryReservation}} \
                  {{.HostConfig.CpuShares}} {{.HostConfig.CpuPeriod}} {{.HostConfig.CpuQuota}} \
                  {{.HostConfig.CpusetCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.OomScoreAdj}}";
    let shown = b.ok(&["inspect", "--format", fields, "limited"]);
    assert_eq!(shown.trim(), format!("67108864 134217728 33554432 512 50000 25000 {cpu} 50 300"));
    b.ok(&["rm", "-f", "limited"]);
    // `--memory-swap -1`: unlimited swap.
    b.ok(&["run", "-d", "--name", "swap", "-m", "64m", "--memory-swap", "-1", "busybox", "sleep", "1000"]);
    let pid = &processes(&b, "swap")[0];
    if swap_accounting() {
        let swap = group_file(pid, "memory", ("memory.memsw.limit_in_bytes", "memory.swap.max"));
        assert!(swap == "max" || swap.parse::<u64>().unwrap() > 1 << 60, "{swap}");
    }
    b.ok(&["rm", "-f", "swap"]);
    for (args, message) in [
        (&["-m", "4m"][..], "Minimum memory limit allowed is 6MB"),
        (&["--memory-swap", "100m"], "You should always set the Memory limit when using Memoryswap limit"),
        (&["-m", "100m", "--memory-swap", "50m"], "Minimum memoryswap limit should be larger than memory limit"),
        (&["--memory-swappiness", "101"], "Invalid value: 101, valid memory swappiness range is 0-100"),
        (&["-m", "10m", "--memory-reservation", "20m"], "Minimum memory limit can not be less than memory reservation"),
        (&["--memory-reservation", "1m"], "Minimum memory reservation allowed is 6MB"),
        (&["--cpus", "1", "--cpu-period", "50000"], "Nano CPUs and CPU Period cannot both be set"),
        (&["--cpus", "1", "--cpu-quota", "50000"], "Nano CPUs and CPU Quota cannot both be set"),
        (&["--cpu-period", "10"], "CPU cfs period can not be less than 1ms"),
        (&["--cpu-quota", "10"], "CPU cfs quota can not be less than 1ms"),
        (&["--cpuset-cpus", "4095"], "Requested CPUs are not available - requested 4095, available: "),
        (&["--cpuset-cpus", "x"], "Invalid value x for cpuset cpus"),
        (&["--cpuset-mems", "4095"], "Requested memory nodes are not available"),
        (&["--oom-score-adj", "2000"], "Invalid value 2000, range for oom score adj is [-1000, 1000]"),
    ] {
        let mut full = vec!["run", "--rm"];
        full.extend(args);
        full.extend(["busybox", "true"]);
        let out = b.output(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn update_changes_a_running_containers_limits_and_a_stopped_ones_record_as_dockers() {
    let Some(b) = setup() else { return };
    // No limit to start with: the limits' groups are made by `update`, and both processes
    // are moved in.
    b.ok(&["run", "-d", "--name", "svc", "busybox", "sh", "-c", "sleep 1000 & wait"]);
    // docker's rule: a container made without a memory limit has a memory+swap limit of 0,
    // so its first memory limit needs one.
    let err = b.fails(&["update", "-m", "32m", "svc"]);
    assert!(err.contains("Memory limit should be smaller than already set memoryswap limit"), "{err}");
    let out = b.ok(&["update", "-m", "32m", "--memory-swap", "64m", "--cpus", "0.5", "--pids-limit", "8", "svc"]);
    assert_eq!(out, "svc\n");
    let procs = processes(&b, "svc");
    assert_eq!(procs.len(), 2, "{procs:?}");
    for pid in &procs {
        assert_eq!(group_file(pid, "memory", ("memory.limit_in_bytes", "memory.max")), "33554432");
        assert_eq!(group_file(pid, "pids", ("pids.max", "pids.max")), "8");
    }
    // They hold for what runs in it now: a memory hog is killed, a fork bomb stops.
    let hog = b.output(&["exec", "svc", "sh", "-c", "x=$(head -c 100m /dev/zero | tr '\\0' a); echo ${#x}"]);
    assert_eq!(hog.status.code(), Some(137), "the hog is killed: {hog:?}");
    let bomb = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done 2>&1; echo tried";
    let out = b.output(&["exec", "svc", "sh", "-c", bomb]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let ps = b.output(&["exec", "svc", "ps"]);
    assert!(text.contains("can't fork"), "the new pids limit held: {text} {:?} {ps:?}", out.status);
    // Raising memory above the memory+swap limit in force needs a new one with it.
    let err = b.fails(&["update", "-m", "256m", "svc"]);
    assert!(err.contains("Memory limit should be smaller than already set memoryswap limit"), "{err}");
    b.ok(&["update", "-m", "256m", "--memory-swap", "512m", "--pids-limit", "-1", "svc"]);
    let pid = &procs[0];
    assert_eq!(group_file(pid, "memory", ("memory.limit_in_bytes", "memory.max")), "268435456");
    assert_eq!(group_file(pid, "pids", ("pids.max", "pids.max")), "max");
    let shown = b.ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}}",
        "svc",
    ]);
    assert_eq!(shown.trim(), "268435456 536870912 500000000");
    for (args, message) in [
        (&["update", "svc"][..], "you must provide one or more flags"),
        (&["update", "--cpu-period", "50000", "svc"], "CPU Period cannot be updated as NanoCPUs has already been set"),
        (&["update", "-m", "64m", "nosuch"], "nosuch"),
    ] {
        let err = b.fails(args);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    b.ok(&["rm", "-f", "svc"]);
    // A stopped container's record: its next start takes the new limit.
    let show = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max";
    b.ok(&["create", "--name", "later", "-m", "64m", "busybox", "sh", "-c", show]);
    b.ok(&["update", "-m", "48m", "later"]);
    b.ok(&["start", "later"]);
    b.ok(&["wait", "later"]);
    assert_eq!(b.ok(&["logs", "later"]), "50331648\n");
    // `--restart`, on a container that `--rm` removes: refused, as docker refuses it.
    b.ok(&["create", "--rm", "--name", "gone", "busybox", "true"]);
    let err = b.fails(&["update", "--restart", "always", "gone"]);
    assert!(err.contains("Restart policy cannot be updated because AutoRemove is enabled"), "{err}");
}

#[test]
fn a_container_restarted_by_its_policy_runs_with_the_limits_update_set() {
    let Some(b) = setup() else { return };
    let show = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                sleep 1; exit 1";
    b.ok(&["run", "-d", "--name", "again", "--restart", "always", "-m", "64m", "busybox", "sh", "-c", show]);
    // Once the first run has shown its limit: a later run's is the one the record says.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.ok(&["logs", "again"]).contains("67108864") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    b.ok(&["update", "-m", "96m", "--memory-swap", "192m", "--restart", "on-failure:5", "again"]);
    while !b.ok(&["logs", "again"]).contains("100663296") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = b.ok(&["logs", "again"]);
    assert!(logs.contains("100663296"), "a restart ran with the new limit: {logs}");
    let policy = b.ok(&["inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", "again"]);
    assert_eq!(policy.trim(), "on-failure");
    b.ok(&["rm", "-f", "again"]);
}

#[test]
fn stats_shows_what_containers_use_as_dockers_does() {
    let Some(b) = setup() else { return };
    // A busy one with a memory limit (read from its groups) and an idle one without (read
    // from /proc on a hybrid host, whose unified group accounts no memory).
    let busy = "x=$(head -c 20m /dev/zero | tr '\\0' a); echo ready; while true; do :; done";
    b.ok(&["run", "-d", "--name", "busy", "-m", "64m", "--cpus", "0.5", "busybox", "sh", "-c", busy]);
    b.ok(&["run", "-d", "--name", "idle", "busybox", "sleep", "1000"]);
    b.ok(&["create", "--name", "made", "busybox", "true"]);
    // Once it holds its 20 MB.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.ok(&["logs", "busy"]).contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let fields = "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}|{{.PIDs}}|{{.NetIO}}|{{.Container}}";
    let out = b.ok(&["stats", "--no-stream", "--format", fields, "busy", "idle"]);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let percent = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap();
    let (busy, idle) = (&rows[0], &rows[1]);
    assert_eq!((busy[0], idle[0], busy[6]), ("busy", "idle", "busy"), "{out}");
    assert!(percent(busy[1]) > 5.0 && percent(busy[1]) > percent(idle[1]), "the busy one uses CPU: {out}");
    let (used, limit) = busy[2].split_once(" / ").unwrap();
    assert_eq!(limit, "64MiB", "{out}");
    assert!(used.ends_with("MiB") && used.trim_end_matches("MiB").parse::<f64>().unwrap() >= 20.0, "{out}");
    assert!(percent(busy[3]) > 30.0, "{out}");
    assert_eq!(idle[4], "1", "one task: {out}");
    assert!(idle[2].split_once(" / ").unwrap().1.ends_with("GiB"), "the host's memory as the limit: {out}");
    assert!(idle[5].contains(" / "), "{out}");
    // docker's default table, every running container, and -a the others with zeros.
    let table = b.ok(&["stats", "--no-stream"]);
    let head = table.lines().next().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(head, "CONTAINER ID NAME CPU % MEM USAGE / LIMIT MEM % NET I/O BLOCK I/O PIDS", "{table}");
    assert!(table.contains(" busy ") && table.contains(" idle ") && !table.contains(" made "), "{table}");
    let all = b.ok(&["stats", "--no-stream", "-a", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}"]);
    assert!(all.lines().any(|l| l == "made 0.00% 0B / 0B 0"), "{all}");
    let json = b.ok(&["stats", "--no-stream", "--format", "json", "idle"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    for key in ["BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs"] {
        assert!(v.get(key).is_some(), "{key} in {json}");
    }
    let err = b.fails(&["stats", "--no-stream", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    // Without --no-stream, and no terminal: a table every second until interrupted; a named
    // container removed meanwhile stays, as docker's `--`.
    let mut child = b.cmd(&["stats", "idle"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            text += &line;
            text.push('\n');
            if text.contains("idle") && text.contains("--") {
                break;
            }
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(2500));
    b.ok(&["rm", "-f", "idle"]);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let text = reader.join().unwrap();
    assert!(text.matches("CONTAINER ID").count() >= 2, "a new table each second: {text}");
    assert!(text.lines().any(|l| l.starts_with("idle ") && l.contains("--")), "the removed one as --: {text}");
    b.ok(&["rm", "-f", "busy", "made"]);
}

#[test]
fn a_privileged_containers_own_groups_and_their_processes_go_with_it() {
    let Some(b) = setup() else { return };
    // A group of its own under its memory group (v1) or its group (v2), with an orphan in it.
    let script = "d=/sys/fs/cgroup/memory; [ -d $d ] || d=/sys/fs/cgroup; mkdir -p $d/sub/deeper || exit 1; \
                  sleep 987654 & echo $! > $d/sub/deeper/cgroup.procs && echo moved";
    let out = b.ok(&["run", "--name", "nester", "--privileged", "-m", "64m", "busybox", "sh", "-c", script]);
    assert_eq!(out, "moved\n");
    let id = b.ok(&["inspect", "--format", "{{.Id}}", "nester"]).trim().to_owned();
    let left = std::process::Command::new("pgrep").args(["-f", "sleep 987654"]).output().unwrap();
    assert!(left.stdout.is_empty(), "the orphan in its own group was killed: {left:?}");
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory"] {
        let group = Path::new(base).join("berth").join(&id);
        assert!(!group.exists(), "{} is gone with the groups under it", group.display());
    }
    b.ok(&["rm", "nester"]);
}
