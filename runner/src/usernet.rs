//! User-mode networking for a rootless berth's containers, as rootless podman gives them.
//!
//! A plain user cannot make the bridge's veth pairs in the host's network namespace. Each
//! container gets a namespace of its own instead, and Debian's `slirp4netns` gives it a
//! tap device (`tap0`, 10.0.2.100/24, gateway 10.0.2.2, name server 10.0.2.3) whose
//! traffic it carries through ordinary sockets of the user's. The host's loopback stays
//! out of reach (`--disable-host-loopback`, podman's default): a container must not reach
//! services that listen on 127.0.0.1 because they trust local users. Published ports are
//! served by berth's proxy through the namespace's loopback.

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The container's address (slirp4netns's default).
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// Its prefix length (10.0.2.0/24).
pub const PREFIX: u8 = 24;
/// Its gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The name server slirp4netns answers on, forwarding to the host's.
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

/// A running slirp4netns for one namespace; stopped when dropped, and on its own when
/// berth dies (its exit pipe closes).
#[derive(Debug)]
pub struct Slirp {
    child: Child,
    /// The write end of slirp4netns's `--exit-fd`: closed with berth.
    _exit: OwnedFd,
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("user-mode network (slirp4netns): {what}: {e}"))
}

impl Slirp {
    /// Starts slirp4netns on `netns` and waits until the tap device is configured.
    pub fn start(netns: &OwnedFd) -> std::io::Result<Slirp> {
        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (exit_r, exit_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let (ready_fd, exit_fd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        let mut cmd = Command::new("slirp4netns");
        cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback", "--netns-type=path"])
            .arg(format!("--ready-fd={ready_fd}"))
            .arg(format!("--exit-fd={exit_fd}"))
            .args([path.as_str(), "tap0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: close_range and fcntl on the forked child's descriptors, before exec.
        unsafe {
            cmd.pre_exec(move || {
                // Only its two pipes reach slirp4netns: one of berth's inherited descriptors
                // (a launcher's ready pipe) held open by it would keep the launcher waiting.
                if libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in [ready_fd, exit_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| err("start (is Debian's slirp4netns installed?)", e))?;
        drop((ready_w, exit_r));
        let mut byte = [0u8; 1];
        if std::fs::File::from(ready_r).read_exact(&mut byte).is_err() {
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut msg);
            }
            let _ = child.wait();
            return Err(err("configure the namespace", msg.trim().lines().last().unwrap_or("it exited")));
        }
        Ok(Slirp { child, _exit: exit_w })
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
