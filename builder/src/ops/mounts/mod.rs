//! `RUN --mount`: one module per mount kind. Each prepares the host side of its mount
//! (a context path, a cache directory, a secret file, an agent socket) and returns a
//! guard that holds what the sandbox needs (a volume, a tmpfs, environment) and undoes
//! the host-side state (views, locks, temporary copies) when it is dropped, after the step.

mod bind;
mod cache;
mod secret;
mod ssh;
mod tmpfs;

use std::path::Path;

use runner::sandbox::Volume;

use super::LocalWorker;
use crate::dockerfile::mount::MountType;
use crate::error::Result;
use crate::graph::{ExecMount, Vertex};
use crate::solver::State;

/// What preparing one step's mounts needs to know about the step.
pub(super) struct Step<'s, 'w> {
    /// The worker running the step.
    pub worker: &'s LocalWorker<'w>,
    /// The step, for errors at its Dockerfile line.
    pub vertex: &'s Vertex,
    /// The step's inputs: its parent first, then the stages and images its mounts name.
    pub inputs: &'s [State],
    /// The step's private work directory, removed after the step.
    pub work: &'s Path,
}

/// The prepared mounts of one RUN step, in the order the Dockerfile gives them.
pub(super) struct Mounts<'s> {
    items: Vec<Prepared<'s>>,
}

/// One prepared mount: its guard.
enum Prepared<'s> {
    Bind(bind::BindMount<'s>),
    Cache(cache::CacheMount),
    Tmpfs(tmpfs::TmpfsMount),
    Secret(secret::SecretMount),
    Ssh(ssh::SshMount),
}

impl<'s> Mounts<'s> {
    /// Prepares every mount of the step; a mount that fails drops the ones before it.
    pub(super) fn prepare(step: &Step<'s, '_>, mounts: &[ExecMount]) -> Result<Mounts<'s>> {
        let mut items = Vec::with_capacity(mounts.len());
        for (i, m) in mounts.iter().enumerate() {
            let prepared = match m.spec.kind {
                MountType::Bind => Some(Prepared::Bind(bind::BindMount::prepare(step, m, i)?)),
                MountType::Cache => Some(Prepared::Cache(cache::CacheMount::prepare(step, m, i)?)),
                MountType::Tmpfs => Some(Prepared::Tmpfs(tmpfs::TmpfsMount::prepare(&m.spec))),
                MountType::Secret => secret::SecretMount::prepare(step, &m.spec, i)?.map(Prepared::Secret),
                MountType::Ssh => ssh::SshMount::prepare(step, &m.spec)?.map(Prepared::Ssh),
            };
            items.extend(prepared);
        }
        Ok(Mounts { items })
    }

    /// The host paths bound into the sandbox.
    pub(super) fn volumes(&self) -> Vec<Volume> {
        let volume = |p: &Prepared<'_>| match p {
            Prepared::Bind(b) => Some(b.volume.clone()),
            Prepared::Cache(c) => Some(c.volume.clone()),
            Prepared::Secret(s) => s.volume.clone(),
            Prepared::Ssh(s) => Some(s.volume.clone()),
            Prepared::Tmpfs(_) => None,
        };
        self.items.iter().filter_map(volume).collect()
    }

    /// The tmpfs mounts, as the sandbox takes them (`TARGET[:OPTIONS]`).
    pub(super) fn tmpfs(&self) -> Vec<String> {
        let tmpfs = |p: &Prepared<'_>| if let Prepared::Tmpfs(t) = p { Some(t.spec.clone()) } else { None };
        self.items.iter().filter_map(tmpfs).collect()
    }

    /// The `KEY=value` environment the mounts add (secrets given as env, SSH_AUTH_SOCK).
    pub(super) fn env(&self) -> Vec<String> {
        let env = |p: &Prepared<'_>| match p {
            Prepared::Secret(s) => s.env.clone(),
            Prepared::Ssh(s) => Some(s.env.clone()),
            _ => None,
        };
        self.items.iter().filter_map(env).collect()
    }
}
