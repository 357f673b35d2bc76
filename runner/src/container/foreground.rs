//! A container run in the foreground (`berth run` without `-d`): the calling process is its
//! supervisor. [`prepare`] makes what it runs on (the record of a named container, its
//! rootfs snapshot, cgroups, its place on the bridge) and the [`Spec`]; the caller adds
//! its terminal, starts the process and forwards signals; [`Prepared::finish`] records the
//! exit and removes what is not kept.

use std::path::{Path, PathBuf};

use super::{Config, Container, Result};
use crate::sandbox::Spec;
use crate::snapshot::Snapshotter;

/// How the process will be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// berth's own sandbox: the rootfs is mounted in the container's mount namespace.
    Own,
    /// runc or crun through an OCI bundle of its own, beside its rootfs mountpoint.
    External,
}

/// A container ready to start: everything made for it, undone by [`Prepared::finish`].
pub struct Prepared {
    /// What to run; the caller may add a console before starting it.
    pub spec: Spec,
    record: Option<Container>,
    _supervising: Option<std::fs::File>,
    snapshotter: Box<dyn Snapshotter>,
    key: String,
    snapshot_made: bool,
    cgroup: Option<crate::cgroup::Cgroup>,
    /// Held to the end: the namespace's fd until the process runs, the address for its life.
    _net: Option<crate::network::Attachment>,
    bundle: Option<PathBuf>,
    root: PathBuf,
    volumes: Vec<super::config::VolumeConfig>,
    /// The volumes of a container without a record, held as in use while it runs.
    held: Vec<std::fs::File>,
    /// `-p`: the thread that serves the published ports, and what it was told.
    ports: Option<PortThread>,
}

/// The thread that forwards a foreground container's published ports (a detached one's
/// supervisor does it for its own): started before the process, since berth may make no
/// thread once it has made the container's PID namespace; told the process's pid once it
/// runs (a container without its own address is reached through its loopback), and ended
/// with the run.
struct PortThread {
    published: Vec<super::state::Published>,
    pid: Option<tokio::sync::oneshot::Sender<i32>>,
}

/// Prepares `config`'s container on `image`. `keep` records it (a named container: `ps`,
/// `start`, `commit`, `rm` see it, and its rootfs stays); otherwise its writes may live in
/// memory and nothing of it is left.
pub fn prepare(
    root: &Path,
    store: &oci::ImageStore,
    image: &oci::store::Image,
    config: &Config,
    (keep, runtime): (bool, Runtime),
) -> Result<Prepared> {
    let snapshotter = crate::snapshot::for_root(root)?;
    // create checks the limits of a recorded container; one without a record, here.
    let record = match keep {
        true => Some(super::create(root, config)?),
        false => super::check_limits(config).map(|()| None)?,
    };
    // This process is the container's supervisor while it runs.
    let supervising = record.as_ref().map(Container::supervise_lock).transpose()?.flatten();
    let id = &config.id;
    let key = if keep { super::snapshot_key(id) } else { format!("container-run-{}", &id[..16]) };
    // berth's own sandbox mounts the rootfs in the container's private mount namespace, so
    // every container can use one directory; runc and crun get a bundle of their own.
    let mountpoint = match runtime {
        Runtime::Own => super::containers_dir(root).join(".rootfs"),
        Runtime::External => super::containers_dir(root).join(format!(".runtime-{}", &id[..16])),
    };
    std::fs::create_dir_all(&mountpoint).map_err(super::io_err("create", &mountpoint))?;
    let mut p = Prepared {
        spec: config.spec(Vec::new(), mountpoint.clone(), Vec::new(), None)?,
        record,
        _supervising: supervising,
        snapshotter,
        key,
        snapshot_made: false,
        cgroup: None,
        _net: None,
        bundle: (runtime == Runtime::External).then_some(mountpoint),
        root: root.to_owned(),
        volumes: config.volumes.clone(),
        held: Vec::new(),
        ports: None,
    };
    // From here on, a failure undoes everything made, the record too: nothing ran.
    if let Err(e) = p.make(root, store, image, config, runtime) {
        let _ = p.finish_with(Err((-1, e.to_string())), true);
        return Err(e);
    }
    Ok(p)
}

impl Prepared {
    fn make(
        &mut self,
        root: &Path,
        store: &oci::ImageStore,
        image: &oci::store::Image,
        config: &Config,
        runtime: Runtime,
    ) -> Result<()> {
        let rootfs = if self.record.is_none() && runtime == Runtime::Own {
            // Nothing of an unnamed container is kept: its writes can live in memory.
            match crate::rootfs::prepare_throwaway(store, image, self.snapshotter.as_ref(), &self.key)
                .map_err(|source| super::Error::Rootfs { image: config.image.clone(), source: Box::new(source) })?
            {
                crate::rootfs::Throwaway::Scratch(mounts) => mounts,
                crate::rootfs::Throwaway::Snapshot(mounts) => {
                    self.snapshot_made = true;
                    mounts
                }
            }
        } else {
            let mounts = crate::rootfs::prepare(store, image, self.snapshotter.as_ref(), &self.key)
                .map_err(|source| super::Error::Rootfs { image: config.image.clone(), source: Box::new(source) })?;
            self.snapshot_made = true;
            mounts
        };
        if self.record.is_none() {
            // Claimed before they are made: a run killed from now on leaves them to the sweep.
            let lease = crate::lease::for_root(root).map_err(super::io_err("take the lease of", root))?;
            for name in config.volumes.iter().filter(|v| v.anonymous).filter_map(|v| v.volume.as_deref()) {
                lease.claim(crate::lease::Claim::Volume(name)).map_err(super::io_err("claim a volume in", root))?;
            }
        }
        let held = super::volumes::prepare(root, config, &rootfs)?;
        if self.record.is_none() {
            self.held = held;
        }
        // A container of berth's own runtime that can be found (a named one, which `pause`
        // and `top` may be given) gets a group, as the supervisor's do, and so does one whose
        // processes only a group finds (`--pid`), or with limits. An unnamed run goes
        // without: moving a process into a cgroup waits for an RCU grace period, about half
        // of such a run's start on this VM (bench/README.md).
        let findable = self.record.is_some() || config.shares_pid_namespace() || !config.limits().is_empty();
        if runtime == Runtime::Own && findable {
            crate::cgroup::sweep_leftovers();
            self.cgroup = super::make_cgroup(config).map_err(super::io_err("set up the cgroup", root))?;
        }
        let cgroups = self.cgroup.as_ref().map(crate::cgroup::Cgroup::procs_files).unwrap_or_default();
        self._net = config.attach_network(root)?;
        let mut spec = config.spec(rootfs, self.spec.mountpoint.clone(), cgroups, self._net.as_ref())?;
        spec.security = config.security(Some(&root.join("seccomp")))?;
        spec.devices = config.devices()?;
        spec.ipc = config.ipc(root)?;
        spec.pid = config.pid(root)?;
        self.spec = spec;
        Ok(())
    }

    /// Ends what is left of the container once its first process has exited: in a PID
    /// namespace not its own (`--pid`), its other processes live on, and may hold its
    /// output open.
    pub fn end_processes(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
    }

    /// A named container's log, where its output goes as it runs (`berth logs`).
    pub fn log_path(&self) -> Option<PathBuf> {
        self.record.as_ref().map(Container::log_path)
    }

    /// Binds `config`'s published ports on the host and starts the thread that will forward
    /// them to the container (see [`PortThread`]). Before the process starts: a port that
    /// is taken fails the run before anything ran.
    pub fn publish(&mut self, config: &Config) -> Result<()> {
        if config.ports.is_empty() || config.network == "host" {
            return Ok(());
        }
        let routed = self._net.as_ref().filter(|a| a.routed()).map(|a| a.ip);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel::<i32>();
        let ports = config.ports.clone();
        // Detached: it serves until berth exits at the end of the run. Its runtime has one
        // thread, this one (no thread may be made once the process is started).
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(bound_tx.send(Err(e))),
            };
            rt.block_on(async move {
                let listeners = match super::ports::Listeners::bind(&ports) {
                    Ok(l) => l,
                    Err(e) => return drop(bound_tx.send(Err(e))),
                };
                let _ = bound_tx.send(Ok(listeners.published()));
                // The process's pid, or the end of the run before it started.
                let Ok(pid) = pid_rx.await else { return };
                // Nothing to forward to when it ended at once; an error has no one to tell
                // once the process runs (its connections are refused).
                let Ok(Some(upstream)) = super::ports::Upstream::to_container(routed, pid) else { return };
                listeners.serve(upstream);
                std::future::pending::<()>().await;
            });
        });
        let published = match bound_rx.recv() {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(super::Error::Config(e.to_string())),
            Err(_) => return Err(super::Error::Config("the port forwarder ended before it bound the ports".into())),
        };
        self.ports = Some(PortThread { published, pid: Some(pid_tx) });
        Ok(())
    }

    /// Records that the process `pid` runs, with its address and published ports (for a
    /// named container), and has the ports forwarded to it.
    pub fn started(&mut self, pid: u32) -> Result<()> {
        // Another container's namespaces were for the start (see the supervisor's); an OCI
        // runtime, started now, opens them later, through berth's fd.
        if self.bundle.is_none() {
            self.spec.ipc = Default::default();
            self.spec.pid = Default::default();
        }
        let published = match &mut self.ports {
            Some(t) => {
                if let Some(tx) = t.pid.take() {
                    let _ = tx.send(pid as i32);
                }
                t.published.clone()
            }
            None => Vec::new(),
        };
        if let Some(c) = &self.record {
            let net = self._net.as_ref();
            c.update(|s| {
                s.stopped_by_user = false;
                s.started(pid as i32, std::process::id() as i32, published, false);
                s.ip = net.and_then(|a| a.address()).map(|ip| ip.to_string());
                s.veth = net.and_then(|a| a.veth().map(str::to_owned));
                s.subnet = net.filter(|a| a.address().is_some()).map(crate::network::Attachment::subnet);
            })?;
        }
        Ok(())
    }

    /// Removes the cgroups and, unless kept, the snapshot, the record and the anonymous
    /// volumes; records the exit (`Ok(code)`) or the failure (`Err((code, why))`) of a kept
    /// container. `remove` drops a named container too (`--rm`). Returns warnings: the
    /// anonymous volumes that could not be removed.
    pub fn finish_with(mut self, result: std::result::Result<i32, (i32, String)>, remove: bool) -> Result<Vec<String>> {
        // A `berth restart` stopped it to start it again: kept, `--rm` or not, as docker keeps it.
        let remove = remove && !self.record.as_ref().is_some_and(|c| c.state().is_ok_and(|s| s.restart_pending()));
        let mut oom_killed = false;
        if let Some(cg) = self.cgroup.take() {
            oom_killed = cg.oom_killed();
            cg.remove();
        }
        if let Some(c) = &self.record {
            // The groups `update` made while it ran are the record's too.
            let made_later = crate::cgroup::Cgroup::existing(&c.config.id);
            oom_killed |= made_later.oom_killed();
            made_later.remove();
        }
        match &self.record {
            Some(c) if !remove => {
                let (code, why) = match result {
                    Ok(code) => (code, None),
                    Err((code, why)) => (code, Some(why)),
                };
                c.update(|s| {
                    s.exited(code, why);
                    s.oom_killed = oom_killed;
                })?;
            }
            Some(c) => {
                c.update(|s| s.exited(-1, None))?;
                c.remove(self.snapshotter.as_ref())?;
            }
            None if self.snapshot_made => {
                let _ = self.snapshotter.remove(&self.key);
            }
            None => {}
        }
        if let Some(dir) = &self.bundle {
            crate::bundle::remove(dir);
        }
        self.held.clear();
        let gone = remove || self.record.is_none();
        Ok(if gone { super::volumes::remove_anonymous(&self.root, &self.volumes) } else { Vec::new() })
    }

    /// [`Prepared::finish_with`] for a container that is kept when named.
    pub fn finish(self, result: std::result::Result<i32, (i32, String)>) -> Result<Vec<String>> {
        self.finish_with(result, false)
    }
}
