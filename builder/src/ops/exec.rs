//! RUN: an active snapshot on the parent's chain, the step's mounts prepared (see
//! [`super::mounts`]), the process run through the runner's [`Executor`], and the
//! snapshot's upper directory turned into the new layer.
//!
//! [`Executor`]: runner::exec::Executor

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use runner::sandbox::{Network, Spec, User, Volume};
use runner::snapshot::Mount;

use super::mounts::{Mounts, Step};
use super::{unique, LocalWorker, RemoveOnDrop};
use crate::error::{Error, Located, Result};
use crate::graph::{ExecOp, Vertex, VertexId};
use crate::progress::Event;
use crate::solver::State;

impl LocalWorker<'_> {
    /// Runs a RUN step on `inputs[0]` (the others are what its mounts name).
    pub(super) fn exec(&self, id: VertexId, v: &Vertex, e: &ExecOp, inputs: &[State]) -> Result<State> {
        let parent = self.chain(&inputs[0].layers)?;
        let key = unique("run", id);
        let mounts = self.snapshotter.prepare(&key, parent.as_deref()).map_err(Error::runner("prepare a snapshot"))?;
        let result = self.run_in(id, v, e, inputs, mounts, &key);
        match result {
            Ok(()) => self.finish_snapshot(&key, inputs[0].layers.clone()),
            Err(err) => {
                let _cleanup = self.snapshotter.remove(&key);
                Err(err)
            }
        }
    }

    /// Runs the step's process on the prepared snapshot `key` (its `rootfs` mounts).
    fn run_in(
        &self,
        id: VertexId,
        v: &Vertex,
        e: &ExecOp,
        inputs: &[State],
        rootfs: Vec<Mount>,
        key: &str,
    ) -> Result<()> {
        let work = self.root.join("tmp").join(key);
        std::fs::create_dir_all(work.join("rootfs")).map_err(Error::io(format!("create {}", work.display())))?;
        let _work_cleanup = RemoveOnDrop(work.clone());
        let mounts = Mounts::prepare(&Step { worker: self, vertex: v, inputs, work: &work }, &e.mounts)?;
        let volumes = mounts.volumes();
        let tmpfs = mounts.tmpfs();
        let mut env = e.process_env();
        env.extend(mounts.env());
        // Mount targets this step creates are scaffolding, not content: remember what existed.
        let upper = self.snapshotter.upper(key).map_err(Error::runner("find the snapshot"))?;
        let lowers: Vec<PathBuf> = match rootfs.first() {
            Some(Mount::Overlay { lower, .. }) => lower.clone(),
            _ => vec![],
        };
        // The sandbox's own mount targets too: /etc/hosts and friends, /proc, /sys, /dev.
        let sandbox_targets = runner::sandbox::MOUNTPOINTS.map(|(rel, _)| format!("/{rel}"));
        let scaffold: Vec<String> = volumes
            .iter()
            .map(|vol| vol.container.clone())
            .chain(tmpfs.iter().map(|t| t.split(':').next().unwrap_or(t).to_owned()))
            .chain(sandbox_targets)
            .filter(|t| !exists_in(&lowers, &upper, t))
            .collect();
        let spec = sandbox_spec(e, rootfs, work.join("rootfs"), env, volumes, tmpfs);
        let mut tail = Tail::default();
        let code = self.executor.run(&spec, &mut |chunk| {
            tail.push(chunk);
            self.progress.event(Event::Output { id, data: chunk.to_vec() });
        });
        drop(mounts);
        let code = code.map_err(Error::runner(format!("{}: start the process", v.name)))?;
        for t in &scaffold {
            remove_scaffold(&upper, t);
        }
        for t in &scaffold {
            remove_copied_up_parents(&upper, &lowers, t);
        }
        if code != 0 {
            return Err(Error::StepFailed {
                step: v.name.clone(),
                command: e.args.last().cloned().unwrap_or_default(),
                code,
                tail: tail.lines(),
                at: Box::new(Located::at(self.dockerfile.0, self.dockerfile.1, v.at)),
            });
        }
        Ok(())
    }
}

/// The sandbox a RUN step's process runs in: BuildKit's hostname, no network unless
/// `--network=host` (docker build's default), the step's user, cwd and mounts.
fn sandbox_spec(
    e: &ExecOp,
    rootfs: Vec<Mount>,
    mountpoint: PathBuf,
    env: Vec<String>,
    volumes: Vec<Volume>,
    tmpfs: Vec<String>,
) -> Spec {
    Spec {
        rootfs,
        mountpoint,
        args: e.args.clone(),
        env,
        cwd: e.cwd.clone(),
        user: e.user.clone().map(User),
        ids: None,
        hostname: "buildkitsandbox".into(),
        network: if e.host_network { Network::Host } else { Network::None },
        volumes,
        tmpfs,
        ulimits: vec![],
        read_only: false,
        etc: Some(runner::sandbox::EtcFiles::new("buildkitsandbox", e.host_network)),
        cgroups: vec![],
        init: false,
        console_socket: None,
        console_size: (24, 80),
    }
}

/// True when `target` exists in the snapshot (its upper, then its lowers).
fn exists_in(lowers: &[PathBuf], upper: &Path, target: &str) -> bool {
    let rel = target.trim_start_matches('/');
    std::iter::once(upper)
        .chain(lowers.iter().map(PathBuf::as_path))
        .any(|d| std::fs::symlink_metadata(d.join(rel)).is_ok())
}

/// Removes a mount target a RUN step's sandbox created (an empty file or directory).
/// After the scaffolding is gone, its parent directories may be left in the upper directory
/// as overlayfs copied them up: empty, not opaque, with the lower directory's mode and owner.
/// Those are no change, and are removed so that they make no layer entry.
fn remove_copied_up_parents(upper: &Path, lowers: &[PathBuf], target: &str) {
    let mut rel = Path::new(target.trim_start_matches('/')).parent();
    while let Some(dir) = rel.filter(|d| !d.as_os_str().is_empty()) {
        let up = upper.join(dir);
        let Ok(meta) = std::fs::symlink_metadata(&up) else { break };
        let empty = std::fs::read_dir(&up).is_ok_and(|mut d| d.next().is_none());
        let opaque = rustix::fs::getxattr(&up, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok();
        let same_as_lower = lowers
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(dir)).ok())
            .is_some_and(|l| l.is_dir() && l.mode() == meta.mode() && l.uid() == meta.uid() && l.gid() == meta.gid());
        if !(meta.is_dir() && empty && !opaque && same_as_lower) || std::fs::remove_dir(&up).is_err() {
            break;
        }
        rel = dir.parent();
    }
}

fn remove_scaffold(upper: &Path, target: &str) {
    let p = upper.join(target.trim_start_matches('/'));
    if let Ok(m) = std::fs::symlink_metadata(&p) {
        let _ = if m.is_dir() {
            std::fs::remove_dir(&p)
        } else if m.len() == 0 {
            std::fs::remove_file(&p)
        } else {
            Ok(())
        };
    }
}

/// The last lines a step printed, for the error report.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > 64 * 1024 {
            let cut = self.buf.len() - 16 * 1024;
            self.buf.drain(..cut);
        }
    }

    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[lines.len().saturating_sub(10)..].to_vec()
    }
}
