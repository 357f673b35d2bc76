//! The supervisor of a detached container: berth re-executed (see [`super::control::start`]),
//! one per container, in the role of podman's conmon. It holds `supervisor.lock` for its
//! whole life, starts the process, tells the starting command that it runs (or why not),
//! then writes the process's output to the json-file log, runs the health checks, serves
//! the published ports, and records the exit code before it lets go of anything.
//!
//! Threads: the process is started by [`super::launch`], from a thread of its own that stays
//! until the process exits and reaps it only after the exit is recorded. Health probes join the container from
//! short-lived threads of their own. Everything else runs on the main thread, in a
//! single-threaded tokio runtime.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::logs::{Stream, Writer};
use super::{Container, Error, Result};

/// The started process, as the container thread hands it over.
struct Started {
    pid: i32,
    pidfd: OwnedFd,
}

/// Runs the supervisor of container `id` in `root` to the end of its process. `ready` is
/// the pipe the starting command waits on: it gets `ok` once the process runs and its
/// ports are bound, or the error, and is closed.
pub fn run(root: &Path, id: &str, ready: OwnedFd) -> Result<i32> {
    let mut ready = Some(File::from(ready));
    let result = (|| {
        let c = super::find(root, id)?;
        let Some(_lock) = c.supervise_lock()? else {
            return Err(Error::State(format!("container {} is already running", c.config.name)));
        };
        supervise(&c, &mut ready)
    })();
    if let Err(e) = &result {
        eprintln!("berth: supervisor of {id}: {}", super::error_chain(e));
        // The starting command shows this; if it is gone, the supervisor's log has it.
        if let Some(r) = ready.as_mut() {
            let _ = write!(r, "{}", super::error_chain(e));
        }
    }
    result
}

fn supervise(c: &Container, ready: &mut Option<File>) -> Result<i32> {
    let snapshotter = crate::snapshot::for_root(c.root())?;
    // A user's start (`control::start` cleared a stop's mark): the restart policy counts from here.
    c.update(|s| s.restart_count = 0)?;
    let mut backoff = super::restart::Backoff::default();
    let mut current = c.clone();
    let code = loop {
        let began = Instant::now();
        let code = run_once(&current, ready, snapshotter.as_ref())?;
        let state = current.state()?;
        // `update` may have changed the policy or the limits: read the record again, here
        // for the policy and the back-off, and after the back-off for the next run (one
        // that `rm -f` is taking away keeps the copy in hand).
        if let Ok(Some(fresh)) = super::open(c.root(), &c.config.id) {
            current = fresh;
        }
        if !current.config.restart.restarts(code, state.restart_count, state.stopped_by_user)
            || !wait_to_restart(&current, backoff.next(began.elapsed()))?
        {
            break code;
        }
        if let Ok(Some(fresh)) = super::open(c.root(), &c.config.id) {
            current = fresh;
        }
    };
    let config = &current.config;
    // A restart's stop keeps the container, `--rm` or not: `berth restart` starts it again.
    if config.auto_remove && !c.state()?.restart_pending() {
        // A `start -a` reads the exit first (a hung one is not waited for long).
        c.wait_for_attached(Duration::from_secs(10))?;
        c.remove(snapshotter.as_ref())?;
        for w in c.remove_anonymous_volumes() {
            eprintln!("berth: warning: {w}");
        }
    }
    Ok(code)
}

/// One run of the process: its rootfs mounted, its cgroups made, then removed again after
/// it exits (or fails to start).
fn run_once(c: &Container, ready: &mut Option<File>, snapshotter: &dyn crate::snapshot::Snapshotter) -> Result<i32> {
    let config = &c.config;
    let rootfs = snapshotter.mounts(&super::snapshot_key(&config.id))?;
    // Every container gets a group, limits or not: `pause`, `top` and the end of a run
    // find all its processes there.
    let mut cgroup = super::make_cgroup(config).map_err(super::io_err("set up the cgroup of", &c.dir))?;
    let cgroups = cgroup.as_ref().map(crate::cgroup::Cgroup::procs_files).unwrap_or_default();
    // Whatever happens in between, the cgroups go (a failed start included); once the
    // process runs, before its exit is recorded.
    let code = run_process(c, ready, rootfs, (cgroups, &mut cgroup));
    crate::cgroup::remove_stale(&config.id);
    if let Some(cg) = cgroup {
        cg.remove();
    }
    code
}

/// Waits `delay` before the restart policy starts the process again, the state marked
/// `restarting` meanwhile; false when a user's `stop`, `kill` or `rm -f` came first.
fn wait_to_restart(c: &Container, delay: Duration) -> Result<bool> {
    c.update(|s| s.awaiting_restart = true)?;
    let deadline = Instant::now() + delay;
    loop {
        let now = Instant::now();
        if c.read_state()?.stopped_by_user || now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
    // Still `restarting` until the process runs again (`State::started`), so no one reads
    // a stop into the moment between.
    let s = c.update(|s| {
        if s.stopped_by_user {
            s.awaiting_restart = false;
        } else {
            s.restart_count += 1;
        }
    })?;
    Ok(!s.stopped_by_user)
}

/// Starts the process on `rootfs` in `cgroups`, watches it to its end (see [`watch`]) and
/// returns its exit code, recorded; a start failure is recorded as docker's 127 or 126.
fn run_process(
    c: &Container,
    ready: &mut Option<File>,
    rootfs: Vec<crate::snapshot::Mount>,
    (cgroups, cgroup): (Vec<std::path::PathBuf>, &mut Option<crate::cgroup::Cgroup>),
) -> Result<i32> {
    let config = &c.config;
    let mountpoint = super::containers_dir(c.root()).join(".rootfs");
    std::fs::create_dir_all(&mountpoint).map_err(super::io_err("create", &mountpoint))?;
    // Held to the end: the namespace's fd until the process runs, the address's lease for its life.
    let mut net = config.attach_network(c.root())?;
    let mut spec = config.spec(rootfs, mountpoint, cgroups, net.as_ref())?;
    spec.security = config.security(Some(&c.root().join("seccomp")))?;
    spec.devices = config.devices()?;
    spec.ipc = config.ipc(c.root())?;
    spec.pid = config.pid(c.root())?;
    let (stdio, io) = Io::new(c, &mut spec)?;
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<i32>();
    let launched = match super::launch::launch(&spec, stdio, move |code| {
        let _ = exit_tx.send(code);
    }) {
        Ok(l) => l,
        Err(e) => {
            // As docker: 127 when the program is not there, 126 when it cannot be run.
            let code = e.exec_exit_code().unwrap_or(126);
            let e = Error::from(e);
            c.update(|s| s.exited(code, Some(super::error_chain(&e))))?;
            return Err(e);
        }
    };
    // Another container's namespaces were for the start: held, they would keep its mount
    // namespace (its rootfs, its volumes) alive after it stops.
    spec.ipc = Default::default();
    spec.pid = Default::default();
    // Held to the end, with the -i pipe's write end in it.
    let (out_r, err_r, _stdin) = io.started(c)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(super::io_err("start the runtime of", &c.dir))?;
    let pidfd = launched.pidfd.try_clone().map_err(super::io_err("pidfd of", &c.dir))?;
    let started = Started { pid: launched.pid, pidfd };
    let code = rt.block_on(watch(c, (started, (&mut net, cgroup)), ready, (out_r, err_r), exit_rx));
    // The exit is recorded (or could not be): the process may be reaped now.
    drop(launched);
    code
}

/// What the supervisor holds of the process's stdio.
struct Io {
    /// The read ends of its stdout and stderr (with a pty: its output, and an empty pipe).
    out: std::io::PipeReader,
    err: std::io::PipeReader,
    /// With `-i` and no pty: the write end of stdin's pipe, held open and never written, so
    /// `sh` waits for input, as under docker.
    stdin: Option<std::io::PipeWriter>,
    /// With `-t`: the socket the pty's master arrives on, its other end (the child's, closed
    /// once the process runs), and the write end of the pipe its output is copied into.
    console: Option<(UnixStream, UnixStream, std::io::PipeWriter)>,
}

impl Io {
    /// The process's stdio, made of pipes; with `-t`, the console socket `spec` sends the
    /// pty over.
    fn new(c: &Container, spec: &mut crate::sandbox::Spec) -> Result<(super::launch::Stdio3, Io)> {
        let pipe = || std::io::pipe().map_err(super::io_err("pipe for", &c.dir));
        let (out, out_w) = pipe()?;
        let (err, err_w) = pipe()?;
        if c.config.tty {
            let (ours, theirs) = UnixStream::pair().map_err(super::io_err("console socket for", &c.dir))?;
            spec.console_socket = Some(theirs.as_raw_fd());
            spec.console_size = (24, 80);
            // The pty is the process's stdio; stderr's pipe ends at once (a tty has one stream).
            let null = || std::process::Stdio::null();
            let stdio = super::launch::Stdio3 { stdin: null(), stdout: null(), stderr: null() };
            drop(err_w);
            return Ok((stdio, Io { out, err, stdin: None, console: Some((ours, theirs, out_w)) }));
        }
        let (stdin, held) = if c.config.interactive {
            let (r, w) = pipe()?;
            (std::process::Stdio::from(r), Some(w))
        } else {
            (std::process::Stdio::null(), None)
        };
        let stdio = super::launch::Stdio3 { stdin, stdout: out_w.into(), stderr: err_w.into() };
        Ok((stdio, Io { out, err, stdin: held, console: None }))
    }

    /// Once the process runs: with a pty, takes its master and copies what it prints into
    /// the output pipe from a thread of its own, until every slave is closed (the
    /// container is gone). Returns the output's read ends and stdin's held write end.
    fn started(self, c: &Container) -> Result<(std::io::PipeReader, std::io::PipeReader, Option<std::io::PipeWriter>)> {
        if let Some((ours, theirs, mut to)) = self.console {
            drop(theirs);
            let master = crate::sandbox::receive_pty(&ours).map_err(super::io_err("receive the pty of", &c.dir))?;
            let copy = move || {
                let mut from = File::from(master);
                let mut buf = [0u8; 16 * 1024];
                // EIO once every slave is closed; the master stays open until then, so the
                // process's terminal never hangs up under it.
                while let Ok(n) = std::io::Read::read(&mut from, &mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            };
            std::thread::Builder::new()
                .name("berth-pty".into())
                .spawn(copy)
                .map_err(super::io_err("start the pty thread of", &c.dir))?;
        }
        Ok((self.out, self.err, self.stdin))
    }
}

/// What the process holds while it runs, released by [`watch`] before the exit is recorded:
/// its network attachment and its cgroup.
type Held<'a> = (&'a mut Option<crate::network::Attachment>, &'a mut Option<crate::cgroup::Cgroup>);

/// The main loop: binds the ports, records the start, then pumps the output, runs the
/// health checks and forwards stop signals until the process exits; records the exit.
async fn watch(
    c: &Container,
    (started, (held_net, cgroup)): (Started, Held<'_>),
    ready: &mut Option<File>,
    (out, err): (std::io::PipeReader, std::io::PipeReader),
    exit: tokio::sync::oneshot::Receiver<i32>,
) -> Result<i32> {
    let pidfd = Arc::new(started.pidfd);
    let net = held_net.as_ref();
    let listeners = match super::ports::Listeners::bind(&c.config.ports) {
        Ok(l) => l,
        Err(e) => {
            let _ = rustix::process::pidfd_send_signal(&*pidfd, rustix::process::Signal::KILL);
            let code = exit.await.unwrap_or(137);
            c.update(|s| s.exited(code, Some(e.to_string())))?;
            return Err(Error::Config(e.to_string()));
        }
    };
    let published = listeners.published();
    let supervisor = std::process::id() as i32;
    c.update(|s| {
        s.started(started.pid, supervisor, published, c.config.health.is_some());
        s.ip = net.and_then(|a| a.address()).map(|ip| ip.to_string());
        s.veth = net.and_then(|a| a.veth().map(str::to_owned));
        s.subnet = net.filter(|a| a.address().is_some()).map(crate::network::Attachment::subnet);
    })?;
    // An `update` that came while the process was starting found it not running and only
    // rewrote the record (before it looked): its limits are taken now. The container runs
    // either way: one that cannot take them says so in this supervisor's log.
    if let Ok(Some(fresh)) = super::open(c.root(), &c.config.id) {
        let (new, old) = (&fresh.config.resources, &c.config.resources);
        if new != old {
            // A process limit removed is written as none (`--pids-limit -1`).
            let removed = crate::cgroup::Limits {
                pids: (new.pids.is_none() && old.pids.is_some()).then_some(0),
                ..Default::default()
            };
            if let Err(e) = super::update::apply_running(&fresh, new, &removed) {
                eprintln!("berth: warning: the limits an update gave {} while it started: {e}", c.config.name);
            }
        }
    }
    if !c.config.ports.is_empty() && c.config.network != "host" {
        // None: the process is gone already, and its exit code is the container's.
        let routed = net.filter(|a| a.routed()).map(|a| a.ip);
        if let Some(upstream) = super::ports::Upstream::to_container(routed, started.pid)? {
            listeners.serve(upstream);
        }
    }
    if let Some(mut r) = ready.take() {
        // The starting command may be gone (killed): the container runs on regardless.
        let _ = r.write_all(b"ok");
    }
    if let Some(health) = c.config.health.clone() {
        tokio::spawn(check_health(c.clone(), health));
    }
    let mut log = Writer::open(&c.log_path()).map_err(super::io_err("open", &c.log_path()))?;
    let (code, log_error) = pump(&mut log, (out, err), exit, &pidfd, c.config.stop_signal.as_str()).await?;
    let flushed = log.flush().err();
    let log_error = log_error.or(flushed).map(|e| format!("write the log {}: {e}", c.log_path().display()));
    // Read while the group is there (supervise removes it), recorded with the exit itself
    // so that whoever sees the exit sees it too.
    let oom_killed = crate::cgroup::Cgroup::existing(&c.config.id).oom_killed();
    // The cgroup and the network go before the exit is recorded: whoever sees the exit
    // (`stop`, `wait`) finds them gone, as after docker's.
    if let Some(cg) = cgroup.take() {
        cg.remove();
    }
    // And any group `update` made while it ran.
    crate::cgroup::remove_stale(&c.config.id);
    drop(held_net.take());
    c.update(|s| {
        s.exited(code, log_error);
        s.oom_killed = oom_killed;
    })?;
    Ok(code)
}

/// Copies the output into the log until the process exits and its pipes close (all of
/// the container's processes are gone with its PID 1; a second at most is waited for).
/// A log that cannot be written (a full disk) does not stop the container: its output is
/// still drained, and the first error comes back with the exit code.
async fn pump(
    log: &mut Writer,
    (out, err): (std::io::PipeReader, std::io::PipeReader),
    mut exit: tokio::sync::oneshot::Receiver<i32>,
    pidfd: &OwnedFd,
    stop_signal: &str,
) -> Result<(i32, Option<std::io::Error>)> {
    use tokio::io::AsyncReadExt;
    use tokio::signal::unix::{signal, SignalKind};
    let to_async = |p: std::io::PipeReader| tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(p));
    let (mut out, mut err) = (
        to_async(out).map_err(super::io_err("watch", Path::new("stdout")))?,
        to_async(err).map_err(super::io_err("watch", Path::new("stderr")))?,
    );
    let mut term = signal(SignalKind::terminate()).map_err(super::io_err("listen for", Path::new("SIGTERM")))?;
    let (mut ob, mut eb) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut out_open, mut err_open, mut code) = (true, true, None);
    let mut drain_until: Option<Instant> = None;
    let mut log_error = None;
    while out_open || err_open {
        let deadline = drain_until.map_or(tokio::time::Instant::now() + Duration::from_secs(3600), Into::into);
        tokio::select! {
            n = out.read(&mut ob), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => if let Err(e) = log.write(Stream::Stdout, &ob[..n]) { log_error.get_or_insert(e); },
            },
            n = err.read(&mut eb), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => if let Err(e) = log.write(Stream::Stderr, &eb[..n]) { log_error.get_or_insert(e); },
            },
            c = &mut exit, if code.is_none() => {
                code = Some(c.unwrap_or(255));
                drain_until = Some(Instant::now() + Duration::from_secs(1));
            }
            _ = term.recv() => {
                // Someone stopped the supervisor: stop the container the way `berth stop` does.
                let sig = super::control::parse_signal(stop_signal).unwrap_or(libc::SIGTERM);
                let _ = super::control::signal_pidfd(pidfd, sig);
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let code = match code {
        Some(c) => c,
        None => exit.await.unwrap_or(255),
    };
    Ok((code, log_error))
}

/// Runs the health check on docker's schedule and records each probe, until the runtime
/// stops (the process exited).
async fn check_health(c: Container, health: super::health::HealthConfig) {
    let start = Instant::now();
    let process = super::exec::Process { args: health.command.clone(), ..Default::default() };
    loop {
        tokio::time::sleep(health.next_probe(start.elapsed())).await;
        if c.read_state().is_ok_and(|s| s.paused) {
            // As docker's: no probe of a paused container (it would wait, frozen).
            continue;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (probe_c, probe_p, timeout) = (c.clone(), process.clone(), health.timeout);
        let began = super::state::now();
        let spawned = std::thread::Builder::new().name("berth-health".into()).spawn(move || {
            let _ = tx.send(super::exec::run_captured(&probe_c, &probe_p, timeout, 4096));
        });
        let (exit_code, output) = match spawned {
            Ok(_) => rx.await.unwrap_or((-1, "the probe did not finish".into())),
            Err(e) => (-1, format!("start a probe: {e}")),
        };
        let probe = super::state::Probe { start: began, end: super::state::now(), exit_code, output };
        let in_start = start.elapsed() < health.start_period;
        let updated = c.update(|s| {
            if s.status == super::Status::Running {
                s.health.get_or_insert_with(Default::default).record(probe, health.retries, in_start);
            }
        });
        if updated.is_err() {
            return;
        }
    }
}
