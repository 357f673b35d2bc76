//! `berth update`: a container's resource limits and restart policy changed after it was
//! made, as docker's: recorded for its next start, and taken at once by the groups of a
//! running container.

use std::path::Path;

use super::restart::Policy;
use super::{Container, Error, Result, Status};
use crate::cgroup::{Cgroup, Limits};

/// What `update` changes: the limits given (one not given stays as it is, see
/// [`Limits::updated`]) and, if given, the restart policy.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// The resource flags as given.
    pub limits: Limits,
    /// `--restart`.
    pub restart: Option<Policy>,
}

/// Applies `change` to container `c`, checked as docker checks it: its record is rewritten
/// (under the names lock, as `rename` rewrites it), and a running container's groups take
/// the new limits at once, groups under controllers it had none under made and its
/// processes moved in. The supervisor reads the record again before a restart.
pub fn update(root: &Path, c: &Container, change: &Change) -> Result<()> {
    let _names = super::names_lock(root)?;
    // Read again under the lock: a rename or another update may have rewritten it.
    let c = super::open(root, &c.config.id)?.ok_or_else(|| Error::NotFound(c.config.name.clone()))?;
    let mut config = c.config.clone();
    config.resources = config.resources.updated(&change.limits).map_err(Error::Config)?;
    let (cpus, mems) = crate::resources::host_sets();
    config.resources.check(&cpus, &mems).map_err(Error::Config)?;
    if let Some(policy) = change.restart {
        if config.auto_remove && policy != Policy::No {
            return Err(Error::Config(
                "Restart policy cannot be updated because AutoRemove is enabled for the container".into(),
            ));
        }
        config.restart = policy;
    }
    super::check_limits(&config)?;
    let limits_given = change.limits != Limits::default();
    if limits_given && config.runtime != "berth" {
        return Err(Error::Config(format!(
            "cannot update the limits of a {} container: its groups are {}'s",
            config.runtime, config.runtime
        )));
    }
    let write = |config: &super::config::Config| -> Result<()> {
        let json = serde_json::to_vec_pretty(config).map_err(|e| Error::Config(e.to_string()))?;
        super::write_atomic(&c.dir.join("config.json"), &json)
    };
    // Written before the state is read: a start that the state does not show yet reads the
    // record again once its process runs (the supervisor), so no update falls between.
    write(&config)?;
    if !limits_given || c.state()?.status != Status::Running {
        return Ok(());
    }
    let Err(e) = apply_running(&c, &config.resources, &change.limits) else { return Ok(()) };
    if c.state()?.status != Status::Running {
        // It stopped meanwhile: its groups went with it, and the record holds for its next start.
        return Ok(());
    }
    // As docker's: a refused update leaves the container as it was, record and groups.
    write(&c.config)?;
    match apply_running(&c, &c.config.resources, &Limits::default()) {
        Ok(()) => Err(e),
        Err(undo) => Err(Error::Config(format!("{e}; putting the old limits back failed too: {undo}"))),
    }
}

/// Writes `limits` into the groups of running container `c`; `given` says whether its
/// process limit was removed (`--pids-limit -1`), which `limits` cannot say. Its processes
/// are moved into any group this makes, pass after pass until none is missing from one
/// (a process forked during a pass is moved in the next).
pub(super) fn apply_running(c: &Container, limits: &Limits, given: &Limits) -> Result<()> {
    let id = &c.config.id;
    let failed = |e| super::io_err("update the cgroups of", &c.dir)(e);
    let mut group = Cgroup::existing(id);
    let made = group.apply(id, limits).map_err(failed)?;
    // Until a pass finds nothing it can move: a process that ended, or a group leader whose
    // threads have moved while its own pid stays listed (it called pthread_exit), is never
    // listed in the new group, and is no reason to fail.
    let mut before: Vec<Vec<i32>> = Vec::new();
    for pass in 0.. {
        let mut pids = Cgroup::existing(id).pids().map_err(failed)?;
        pids.sort_unstable();
        pids.dedup();
        let mut missing_now = Vec::new();
        let mut moved = 0;
        for dir in &made {
            let procs = dir.join("cgroup.procs");
            let inside = std::fs::read_to_string(&procs).map_err(super::io_err("read", &procs))?;
            let inside: Vec<i32> = inside.lines().filter_map(|p| p.trim().parse().ok()).collect();
            let missing: Vec<i32> = pids.iter().copied().filter(|p| !inside.contains(p)).collect();
            moved += Cgroup::adopt(std::slice::from_ref(dir), &missing).map_err(failed)?;
            missing_now.push(missing);
        }
        if moved == 0 || missing_now == before {
            break;
        }
        if pass == 20 {
            return Err(Error::State(format!("the processes of {} kept forking while they were moved", c.config.name)));
        }
        before = missing_now;
    }
    if given.pids == Some(0) {
        group.set("pids.max", "max").map_err(failed)?;
    }
    Ok(())
}
