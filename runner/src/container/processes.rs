//! The processes of a running container, as `berth top` lists them: every process in its
//! cgroup (those `exec` started too), whatever PID namespace they are in; for a container
//! without one of berth's groups (runc's), every process in the PID namespace of its first
//! process, found by the namespace each host process is in.

use std::path::Path;

/// The host PIDs of the processes of the running container `config`, whose first process
/// is `pid`, in ascending order: its cgroup's, as docker lists them (not those of another
/// container that joined its PID namespace), or where it has none (runc's), its namespace's.
pub fn of(config: &super::config::Config, pid: i32) -> std::io::Result<Vec<i32>> {
    let group = crate::cgroup::Cgroup::existing(&config.id);
    if group.procs_files().is_empty() {
        return in_pid_namespace_of(pid);
    }
    let mut pids = group.pids()?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The host PIDs of the processes in the PID namespace of process `pid` (a container's
/// first process), in ascending order.
pub fn in_pid_namespace_of(pid: i32) -> std::io::Result<Vec<i32>> {
    in_pid_namespace_under(Path::new("/proc"), pid)
}

/// [`in_pid_namespace_of`] over the proc filesystem at `proc`.
fn in_pid_namespace_under(proc: &Path, pid: i32) -> std::io::Result<Vec<i32>> {
    let ns = |p: i32| std::fs::read_link(proc.join(p.to_string()).join("ns/pid"));
    let wanted = ns(pid)?;
    let mut pids: Vec<i32> = std::fs::read_dir(proc)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        // A process that ended meanwhile has no link any more: it is not listed.
        .filter(|p: &i32| ns(*p).is_ok_and(|n| n == wanted))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_processes_of_a_namespace_are_those_whose_link_names_it() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, ns) in [(1, "pid:[1]"), (40, "pid:[7]"), (41, "pid:[7]"), (42, "pid:[1]"), (5, "pid:[7]")] {
            let d = dir.path().join(pid.to_string()).join("ns");
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(ns, d.join("pid")).unwrap();
        }
        std::fs::create_dir(dir.path().join("self")).unwrap();
        std::fs::create_dir(dir.path().join("77")).unwrap(); // gone: no ns link
        assert_eq!(in_pid_namespace_under(dir.path(), 40).unwrap(), [5, 40, 41]);
        assert_eq!(in_pid_namespace_under(dir.path(), 1).unwrap(), [1, 42]);
        assert!(in_pid_namespace_under(dir.path(), 77).is_err(), "a process without its link is an error");
    }
}
