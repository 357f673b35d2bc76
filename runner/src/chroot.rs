//! `--isolation chroot`: RUN steps with chroot alone, for builds inside an unprivileged
//! container (kaniko's setting: no CAP_SYS_ADMIN, no new namespaces, docker's default
//! seccomp profile), as buildah's chroot isolation.
//!
//! The step's process is forked, changes its root to the step's snapshot directory (the copy
//! snapshotter's, as nothing can be mounted), its working directory, groups, group and user,
//! and execs. What it does not do, and so does not protect against: the process shares the
//! build container's PID, network, IPC and UTS namespaces, sees no /proc, /sys or /dev of its
//! own (only what the image has there), keeps the container's capabilities, and is confined
//! only by the seccomp profile the container already has. A root process in the step can
//! leave a chroot; the build container is the boundary.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::exec::Executor;
use crate::sandbox::{SandboxError, Spec, User};
use crate::snapshot::Mount;

/// Runs each process in its rootfs directory with chroot(2) only.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChrootExecutor;

fn refused(what: &'static str, why: String) -> SandboxError {
    SandboxError::Start { what, source: std::io::Error::new(std::io::ErrorKind::Unsupported, why) }
}

impl Executor for ChrootExecutor {
    fn run(&self, spec: &Spec, output: &mut dyn FnMut(&[u8])) -> Result<i32, SandboxError> {
        let dir = rootfs_dir(spec, "--isolation chroot")?;
        let caps =
            rustix::thread::capabilities(None).map_err(|e| SandboxError::Start { what: "capget", source: e.into() })?;
        if !caps.effective.contains(rustix::thread::CapabilitySet::SYS_CHROOT) {
            return Err(refused(
                "chroot",
                "chroot(2) needs CAP_SYS_CHROOT, which this container does not give: build with --isolation none"
                    .into(),
            ));
        }
        run_process(spec, Some(dir), output)
    }

    fn mounts(&self) -> bool {
        false
    }
}

/// The one directory of a step's rootfs (a copy snapshot), for an executor that mounts
/// nothing (`isolation` names it in the refusals): RUN --mount is refused.
pub(crate) fn rootfs_dir(spec: &Spec, isolation: &str) -> Result<PathBuf, SandboxError> {
    if let Some(target) = spec.volumes.iter().map(|v| &v.container).chain(&spec.tmpfs).next() {
        return Err(refused(
            "mount",
            format!("RUN --mount ({target}) needs a mount namespace, which {isolation} does not make"),
        ));
    }
    match spec.rootfs.as_slice() {
        [Mount::Bind { source, .. }] => Ok(source.clone()),
        _ => Err(refused("chroot", "the rootfs is not one directory (a copy snapshot)".into())),
    }
}

/// Runs `spec`'s process to its end: forked, into `root` with chroot(2) where given (else
/// in this process's own root), to its working directory and user; its merged output to
/// `output`.
pub(crate) fn run_process(
    spec: &Spec,
    root: Option<PathBuf>,
    output: &mut dyn FnMut(&[u8]),
) -> Result<i32, SandboxError> {
    let ids = match &spec.user {
        Some(User(u)) => Some(crate::sandbox::resolve_user(&spec.rootfs, u)?),
        None => None,
    };
    if spec.args.is_empty() {
        return Err(refused("exec", "no command given".into()));
    }
    let pipe_err = |e| SandboxError::Start { what: "pipe", source: e };
    let (mut reader, writer) = std::io::pipe().map_err(pipe_err)?;
    let mut cmd = crate::sandbox::process_command(spec);
    cmd.stdin(std::process::Stdio::null()).stdout(writer.try_clone().map_err(pipe_err)?).stderr(writer);
    let cwd = spec.cwd.clone();
    // SAFETY: only syscalls between fork and exec (chroot, chdir, set*id, umask).
    unsafe { cmd.pre_exec(move || enter(root.as_deref(), &cwd, ids.as_ref())) };
    let mut child = cmd.spawn().map_err(|e| SandboxError::exec_failed(&spec.args[0], e))?;
    drop(cmd);
    // Registered, so that berth's SIGTERM and SIGINT handling stops it as it stops the
    // namespaced steps.
    let pid = rustix::process::Pid::from_child(&child);
    let _running = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .ok()
        .map(|fd| crate::exec::Running::register(child.id(), &fd));
    let group = || {
        let _gone = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    };
    let ended = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // The step ends with its first process: then its group is killed (while the first is
        // not yet reaped, so the group's ID cannot have been reused), and the output is read
        // until it ends or, held by a process that left the group, falls quiet.
        let waiter = s.spawn(|| {
            let exited = rustix::process::waitid(
                rustix::process::WaitId::Pid(pid),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
            );
            group();
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
            exited.map_err(std::io::Error::from).and_then(|_| child.wait())
        });
        let pumped = crate::exec::pump(&mut reader, output, Some(&ended));
        if pumped.is_err() {
            group();
        }
        let status = waiter.join().unwrap_or_else(|_| Err(std::io::Error::other("the waiting thread panicked")));
        pumped.map_err(|e| SandboxError::Start { what: "read output", source: e })?;
        let status = status.map_err(|e| SandboxError::Start { what: "wait", source: e })?;
        Ok(crate::sandbox::exit_code(status))
    })
}

/// The child's side: into the root (if any), to the working directory, then the user.
fn enter(root: Option<&Path>, cwd: &str, ids: Option<&(u32, u32, Vec<u32>)>) -> std::io::Result<()> {
    // Its own session, so its own process group (what it leaves running is stopped with it,
    // as a namespaced step's PID namespace ends with its first process) and no controlling
    // terminal: a step cannot push input into the terminal berth was started from.
    rustix::process::setsid().map_err(crate::sandbox::errno)?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    if let Some(root) = root {
        rustix::process::chroot(root)?;
    }
    rustix::process::chdir(cwd).map_err(|e| std::io::Error::other(format!("working directory {cwd}: {e}")))?;
    ids.map_or(Ok(()), crate::sandbox::become_user)
}
