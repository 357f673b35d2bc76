//! RUN: an active snapshot on the parent's chain, the step's mounts prepared (see
//! [`super::mounts`]), the process run through the runner's [`Executor`], and the
//! snapshot's upper directory turned into the new layer.
//!
//! [`Executor`]: runner::exec::Executor

use std::path::PathBuf;

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
            Ok(()) => self.finish_snapshot(id, &key, inputs[0].layers.clone(), &[]),
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
        if e.script.is_some() && !self.executor.mounts() {
            return Err(self.err_at(
                v,
                "a heredoc that starts with #! runs as a file mounted on /dev/pipes, and --isolation chroot \
                 mounts nothing: name its interpreter instead (RUN python3 <<EOF)",
            ));
        }
        let work = self.root.join("tmp").join(key);
        std::fs::create_dir_all(work.join("rootfs")).map_err(Error::io(format!("create {}", work.display())))?;
        let _work_cleanup = RemoveOnDrop(work.clone());
        let mounts = Mounts::prepare(&Step { worker: self, vertex: v, inputs, work: &work }, &e.mounts)?;
        let volumes = mounts.volumes();
        let tmpfs = mounts.tmpfs();
        let mut env = e.process_env();
        env.extend(mounts.env());
        // Mount targets the sandbox creates are scaffolding, not content: the snapshotter
        // notes which are missing now and takes them out again after the run.
        let scaffold = self
            .snapshotter
            .scaffold(key, &mount_targets(&volumes, &tmpfs))
            .map_err(Error::runner("look at the snapshot"))?;
        // Inside the sandbox's own /dev, so not a mount target of the snapshot.
        let volumes: Vec<Volume> = volumes.into_iter().chain(script_volume(&work, e)?).collect();
        let spec = sandbox_spec(e, rootfs, work.join("rootfs"), env, volumes, tmpfs);
        let mut tail = Tail::default();
        let code = self.executor.run(&spec, &mut |chunk| {
            tail.push(chunk);
            self.progress.event(Event::Output { id, data: chunk.to_vec() });
        });
        drop(mounts);
        let code = code.map_err(Error::runner(format!("{}: start the process", v.name)))?;
        self.snapshotter.remove_scaffold(key, &scaffold).map_err(Error::runner("remove the mount targets"))?;
        if code != 0 {
            return Err(Error::StepFailed {
                step: v.name.clone(),
                // The whole argv, shell included, as BuildKit names the failed process.
                command: e.args.join(" "),
                code,
                tail: tail.lines(),
                at: Box::new(Located::at(self.dockerfile.0, self.dockerfile.1, v.at)),
            });
        }
        Ok(())
    }
}

/// The read-only directory holding a `#!` heredoc as an executable file, bound on
/// `/dev/pipes` as BuildKit mounts it; None when the step has no such heredoc. The directory
/// lives in the step's work directory and goes with it.
fn script_volume(work: &std::path::Path, e: &ExecOp) -> Result<Option<Volume>> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(script) = &e.script else { return Ok(None) };
    let dir = work.join("pipes");
    std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let path = dir.join(&script.name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, script.content.as_bytes()))
        .map_err(Error::io(format!("write {}", path.display())))?;
    let container = crate::dockerfile::RunScript::DIR.to_owned();
    Ok(Some(Volume { host: dir, container, read_only: true, recursive: Default::default() }))
}

/// A RUN step's /etc files, with the `--add-host` lines (checked when the build began,
/// see [`crate::build`]; `host-gateway` is the host's loopback, which a step on the host's
/// network reaches).
fn etc_files(e: &ExecOp) -> runner::sandbox::EtcFiles {
    let extra: Vec<runner::sandbox::ExtraHost> = e.extra_hosts.iter().flat_map(|h| h.parse()).collect();
    let loopback = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
    runner::sandbox::EtcFiles::new("buildkitsandbox", e.host_network).with_extra_hosts(&extra, loopback)
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
        etc: Some(etc_files(e)),
        cgroups: vec![],
        init: false,
        console_socket: None,
        console_size: (24, 80),
        // docker's default capabilities and seccomp filter (`RUN mknod` makes a node, which
        // opens nothing: see `Security::all_devices`), and no no_new_privs (BuildKit sets
        // none: `USER app` + `RUN sudo ...` works); `--security=insecure` (allowed by
        // `--allow security.insecure`), as BuildKit's insecure mode: all, none, every device
        // opens (`devices` gives the ones it binds), no masked or read-only paths, /sys and
        // the cgroups writable.
        security: if e.insecure {
            runner::security::Security {
                capabilities: runner::security::Capabilities::all(),
                seccomp: runner::security::SeccompMode::Unconfined,
                no_new_privs: false,
                filter_cache: None,
                all_devices: true,
                unmasked_paths: true,
                writable_sys: true,
            }
        } else {
            Default::default()
        },
        shm_size: None,
        group_add: vec![],
        // BuildKit makes a WORKDIR the image lacks.
        make_cwd: true,
        devices: if e.insecure { runner::device::buildkit_insecure() } else { vec![] },
        sysctls: vec![],
        ipc: Default::default(),
        pid: Default::default(),
        uts: Default::default(),
        cgroupns: Default::default(),
        oom_score_adj: None,
    }
}

/// Every path the sandbox mounts on: the step's volumes and tmpfs mounts, and its own
/// (`/proc`, `/dev`, `/sys`, `/etc/hosts` and friends).
fn mount_targets(volumes: &[Volume], tmpfs: &[String]) -> Vec<String> {
    let sandbox = runner::sandbox::MOUNTPOINTS.map(|(rel, _)| format!("/{rel}"));
    volumes
        .iter()
        .map(|vol| vol.container.clone())
        .chain(tmpfs.iter().map(|t| t.split(':').next().unwrap_or(t).to_owned()))
        .chain(sandbox)
        .collect()
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
