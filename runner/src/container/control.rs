//! What the commands do to a container: start it under a supervisor, signal it, stop it,
//! wait for it. Every wait polls `state.json`, which the supervisor rewrites as things happen.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Container, Error, Result, State, Status};

/// How often waits look at the state again.
const POLL: Duration = Duration::from_millis(10);

/// Starts `c` under a new supervisor and returns once its process runs (its ports bound):
/// `supervisor` is berth's own binary with the arguments that make it run
/// [`super::supervisor::run`] for `c`, reading the ready pipe from fd 3. The supervisor
/// gets a session of its own and no terminal, so it outlives the calling command.
pub fn start(c: &Container, mut supervisor: Command) -> Result<State> {
    if c.state()?.status == Status::Running {
        return Err(Error::State(format!("container {} is already running", c.config.name)));
    }
    // The last supervisor records the exit, then cleans up before it lets go of its lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.supervised()? {
        if Instant::now() >= deadline {
            return Err(Error::State(format!("the last supervisor of {} has not finished", c.config.name)));
        }
        std::thread::sleep(POLL);
    }
    // A user's start ends an earlier stop. Cleared here, before the supervisor runs, so that
    // a stop coming while it starts the process is kept and ends it for good.
    c.update(|s| s.stopped_by_user = false)?;
    let log = c.dir.join("supervisor.log");
    let log_file =
        std::fs::File::options().create(true).append(true).open(&log).map_err(super::io_err("open", &log))?;
    let (mut ready_r, ready_w) = std::io::pipe().map_err(super::io_err("pipe for", &c.dir))?;
    let ready_fd = ready_w.as_raw_fd();
    supervisor.stdin(std::process::Stdio::null()).stdout(log_file.try_clone().map_err(super::io_err("open", &log))?);
    supervisor.stderr(log_file);
    // SAFETY: setsid and dup2 are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut supervisor, move || {
            if libc::setsid() < 0 || libc::dup2(ready_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = supervisor.spawn().map_err(super::io_err("start the supervisor of", &c.dir))?;
    drop(supervisor);
    drop(ready_w);
    let mut answer = String::new();
    let _ = ready_r.read_to_string(&mut answer);
    if answer == "ok" {
        // The supervisor lives on (dropping the handle neither waits nor kills); init
        // collects its exit once berth is gone.
        drop(child);
        return c.state();
    }
    let _ = child.wait();
    let why = if answer.is_empty() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        format!("the supervisor ended before the container started: {}", text.lines().last().unwrap_or("no message"))
    } else {
        answer
    };
    Err(Error::State(why))
}

/// Sends signal `sig` to the container's first process. The pid is taken from the state
/// and checked again after it is opened: the supervisor records an exit before it reaps
/// the process, so a pid the state still names running is never another process's.
///
/// A paused container is thawed after SIGKILL or its stop signal, as docker's, so that it
/// can act on them; another signal waits, pending, until `unpause`.
pub fn kill(c: &Container, sig: i32) -> Result<()> {
    let not_running = || Error::State(format!("container {} is not running", c.config.name));
    let (state, pidfd) = open_running(c)?.ok_or_else(not_running)?;
    signal_pidfd(&pidfd, sig).map_err(super::io_err("signal", &c.dir))?;
    let ends = sig == libc::SIGKILL || parse_signal(&c.config.stop_signal).ok() == Some(sig);
    let group = crate::cgroup::Cgroup::existing(&c.config.id);
    if ends && (state.paused || group.frozen()) {
        // The group may be gone already (a killed process dies frozen on v2, and its
        // supervisor removes it): then there is nothing to thaw.
        let _ = group.freeze(false);
        c.update(|s| s.paused = false)?;
    }
    Ok(())
}

/// The state of running container `c` and a pidfd of its first process, `None` when it is
/// not running. The pid is taken from the state and checked again after it is opened: the
/// supervisor records an exit before it reaps the process, so a pid the state still names
/// running is never another process's.
pub(super) fn open_running(c: &Container) -> Result<Option<(State, OwnedFd)>> {
    let state = c.state()?;
    let Some(pid) = state.pid.filter(|_| state.status == Status::Running).and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(None);
    };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else { return Ok(None) };
    let again = c.state()?;
    Ok((again.status == Status::Running && again.pid == state.pid).then_some((state, pidfd)))
}

/// `berth pause`: freezes every process of the running container `c` (its cgroup), as
/// docker's; they stay in memory, and take no CPU and no signal, until [`unpause`].
pub fn pause(c: &Container) -> Result<()> {
    let name = &c.config.name;
    let state = frozen_state(c)?;
    if state.paused {
        return Err(Error::State(format!("container {name} is already paused")));
    }
    crate::cgroup::Cgroup::existing(&c.config.id).freeze(true).map_err(super::io_err("freeze", &c.dir))?;
    // This run's: one that a restart policy started meanwhile was not frozen.
    c.update(|s| s.paused = s.status == Status::Running && s.pid == state.pid)?;
    Ok(())
}

/// `berth unpause`: thaws what [`pause`] froze.
pub fn unpause(c: &Container) -> Result<()> {
    let state = frozen_state(c)?;
    let group = crate::cgroup::Cgroup::existing(&c.config.id);
    // The kernel's word too: a freeze that a killed berth left unrecorded is thawed.
    if !state.paused && !group.frozen() {
        return Err(Error::State(format!("container {} is not paused", c.config.name)));
    }
    group.freeze(false).map_err(super::io_err("thaw", &c.dir))?;
    c.update(|s| s.paused = false)?;
    Ok(())
}

/// The state of `c` that [`pause`] or [`unpause`] works on: running, under berth's own
/// runtime (runc and crun keep their processes in groups of their own).
fn frozen_state(c: &Container) -> Result<State> {
    let name = &c.config.name;
    if c.config.runtime != "berth" {
        let runtime = &c.config.runtime;
        return Err(Error::State(format!(
            "container {name} runs under {runtime}: pause works with berth's own runtime only"
        )));
    }
    let state = c.state()?;
    if state.status != Status::Running {
        return Err(Error::State(format!("container {name} is not running")));
    }
    Ok(state)
}

/// `berth kill`: sends `sig` to `c`'s process. As docker's, SIGKILL or the container's stop
/// signal ends it for good (its restart policy does not start it again), also while it waits
/// to be started again, when nothing is signalled; another signal leaves the policy to decide.
pub fn kill_by_user(c: &Container, sig: i32) -> Result<()> {
    let ends = sig == libc::SIGKILL || parse_signal(&c.config.stop_signal).ok() == Some(sig);
    // Marked before the signal, and only when there is something to end: the supervisor sees
    // the mark after the exit, or in its back-off.
    let before = c.update(|s| {
        if ends && (s.status == Status::Running || s.awaiting_restart) {
            s.stopped_by_user = true;
        }
    })?;
    match kill(c, sig) {
        Err(Error::State(_)) if ends && before.awaiting_restart => Ok(()),
        other => other,
    }
}

/// Sends `sig` through a pidfd.
pub fn signal_pidfd(pidfd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal on an open pidfd with no siginfo.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_fd().as_raw_fd(), sig, std::ptr::null::<u8>(), 0u32)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Stops `c` as `docker stop` does: `signal` (`stop -s`; by default its stop signal), then
/// SIGKILL after `timeout`; returns once it has exited. A container that is not running is
/// left as it is.
pub fn stop(c: &Container, timeout: Duration, signal: Option<&str>) -> Result<State> {
    let sig = parse_signal(signal.unwrap_or(&c.config.stop_signal)).map_err(Error::Config)?;
    // Marked before the signal: its restart policy must not start it again.
    c.update(|s| s.stopped_by_user = true)?;
    let between_runs = Instant::now() + Duration::from_secs(5);
    loop {
        match kill(c, sig) {
            Ok(()) => break,
            // Not running, and no supervisor about to start it again: nothing to stop. One
            // between two runs of a restart policy sees the mark and ends, or has just
            // started the process, which is then stopped.
            Err(Error::State(_)) if !c.supervised()? || Instant::now() >= between_runs => return c.state(),
            Err(Error::State(_)) => std::thread::sleep(POLL),
            Err(e) => return Err(e),
        }
    }
    if let Some(s) = wait_until(c, Some(Instant::now() + timeout), |s| s.status != Status::Running)? {
        return Ok(s);
    }
    match kill(c, libc::SIGKILL) {
        Ok(()) | Err(Error::State(_)) => {}
        Err(e) => return Err(e),
    }
    wait_until(c, None, |s| s.status != Status::Running)
        .map(|s| s.expect("a wait without a deadline ends with a state"))
}

/// Polls the state until `done` holds (the state then) or `deadline` passes (`None`).
pub fn wait_until(c: &Container, deadline: Option<Instant>, done: impl Fn(&State) -> bool) -> Result<Option<State>> {
    loop {
        let s = c.state()?;
        if done(&s) {
            return Ok(Some(s));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

const SIGNALS: [(&str, i32); 32] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
    ("IOT", libc::SIGIOT),
    ("STKFLT", libc::SIGSTKFLT),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The first real-time signal as docker numbers it (glibc keeps 32 and 33 for itself).
const RTMIN: i32 = 34;
/// The last real-time signal.
const RTMAX: i32 = 64;

/// Parses a signal as docker does: `SIGTERM`, `TERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("invalid signal {s:?}")) };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    // `RTMIN`, `RTMIN+3`, `RTMAX-2`, `RTMAX`, as docker names them (systemd's images stop with
    // SIGRTMIN+3).
    let realtime = |base: &str, n: i32| -> Option<i32> {
        let rest = name.strip_prefix(base)?;
        let offset = if rest.is_empty() { 0 } else { rest.parse::<i32>().ok()? };
        Some(n + offset).filter(|sig| (RTMIN..=RTMAX).contains(sig))
    };
    if let Some(sig) = realtime("RTMIN", RTMIN).or_else(|| realtime("RTMAX", RTMAX)) {
        return Ok(sig);
    }
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).ok_or_else(|| format!("invalid signal {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_dockers_spellings() {
        assert_eq!(parse_signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("kill"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(parse_signal("SIGFOO").is_err());
        // Before, an image with `StopSignal: SIGRTMIN+3` (systemd's) could not run at all.
        assert_eq!(parse_signal("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse_signal("RTMAX-1"), Ok(63));
        assert_eq!(parse_signal("SIGRTMIN"), Ok(34));
        assert_eq!(parse_signal("SIGPWR"), Ok(libc::SIGPWR));
        assert_eq!(parse_signal("SYS"), Ok(libc::SIGSYS));
        assert!(parse_signal("RTMIN+40").is_err());
        assert!(parse_signal("0").is_err());
    }
}
