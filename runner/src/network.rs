//! The bridge network, `berth run`'s default as `bridge` is docker's: each container gets a
//! network namespace made before it starts, with `eth0` (one end of a veth pair whose other
//! end is on the bridge `berth0`), an address from 10.90.0.0/16, a default route through the
//! bridge, and outgoing NAT (one nftables masquerade rule for the subnet).
//!
//! Nothing per container needs undoing by anyone: the veth pair lives in the container's
//! namespace and goes with it, and the address is held by an `flock` on a lease file that
//! the kernel releases when its holder dies. What stays, as docker0 and its rules stay, is
//! shared: the bridge with its address, the `ip berth` nftables table,
//! `net.ipv4.ip_forward=1`, and, where the iptables FORWARD policy drops, two rules that let
//! the bridge's traffic through (as docker's). Interfaces, addresses and routes are set by
//! rtnetlink ([`crate::netlink`]), the NAT rule with `nft`.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{flock, FlockOperation};

/// The bridge's name.
pub const BRIDGE: &str = "berth0";
/// The bridge's address, the containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// The subnet's prefix length (10.90.0.0/16).
pub const PREFIX: u8 = 16;

/// A container's place on the network, held while it runs.
#[derive(Debug)]
pub struct Attachment {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its network namespace (the container joins it: [`crate::sandbox::Network::Join`]).
    pub netns: OwnedFd,
    /// What connects the namespace to the host.
    link: Link,
}

/// What connects a container's namespace to the host.
#[derive(Debug)]
enum Link {
    /// A veth pair on the bridge, and the address's lease, locked while this lives.
    Bridge { veth: String, _lease: File },
    /// A rootless berth's user-mode network: slirp4netns on a tap device.
    UserMode { _slirp: crate::usernet::Slirp },
}

impl Attachment {
    /// The host end of the veth pair, on the bridge; none on a user-mode network.
    pub fn veth(&self) -> Option<&str> {
        match &self.link {
            Link::Bridge { veth, .. } => Some(veth),
            Link::UserMode { .. } => None,
        }
    }

    /// The host as the container reaches it (docker's `host-gateway`): the bridge's address,
    /// or slirp4netns's gateway, which leads to the host's loopback.
    pub fn gateway(&self) -> std::net::IpAddr {
        match self.link {
            Link::Bridge { .. } => GATEWAY.into(),
            Link::UserMode { .. } => crate::usernet::GATEWAY.into(),
        }
    }

    /// The host can reach [`Attachment::ip`] (the bridge); a user-mode network's address
    /// exists only inside the namespace.
    pub fn routed(&self) -> bool {
        matches!(self.link, Link::Bridge { .. })
    }

    /// The container's resolv.conf from the host's `host`: docker's rewrite on the bridge;
    /// slirp4netns's forwarder as the one name server on a user-mode network.
    pub fn resolv_conf(&self, host: &str) -> String {
        match self.link {
            Link::Bridge { .. } => resolv_conf(host),
            Link::UserMode { .. } => {
                let kept = host.lines().filter(|l| l.starts_with("search") || l.starts_with("options"));
                kept.map(|l| format!("{l}\n")).collect::<String>() + &format!("nameserver {}\n", crate::usernet::DNS)
            }
        }
    }

    /// A rootless container's network: a namespace of its own with `lo` up, given to
    /// slirp4netns (see [`crate::usernet`]).
    pub fn user_mode() -> std::io::Result<Attachment> {
        let netns = new_netns(|_| Ok(()))?;
        let slirp = crate::usernet::Slirp::start(&netns)?;
        Ok(Attachment { ip: crate::usernet::ADDRESS, netns, link: Link::UserMode { _slirp: slirp } })
    }
}

/// A new network namespace with `lo` up, made and set up from inside (`setup`, with an
/// rtnetlink socket there) on a short-lived thread of its own; its fd.
fn new_netns(
    setup: impl FnOnce(&mut crate::netlink::Socket) -> std::io::Result<()> + Send,
) -> std::io::Result<OwnedFd> {
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<OwnedFd> {
            // SAFETY: unsharing the network namespace changes only this short-lived thread.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
            let ns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
            let mut nl = crate::netlink::Socket::open()?;
            nl.link_up(crate::netlink::index("lo")?)?;
            set_namespace_sysctls()?;
            setup(&mut nl)?;
            Ok(ns)
        })
        .join()
        .unwrap_or_else(|_| Err(err("make a namespace", "the thread panicked")))
    })
}

/// The sysctls docker sets in every network namespace it makes for a container: any user may
/// bind ports below 1024 and open ICMP echo sockets there, as the namespace is the
/// container's alone.
pub const NAMESPACE_SYSCTLS: [(&str, &str); 2] =
    [("net.ipv4.ip_unprivileged_port_start", "0"), ("net.ipv4.ping_group_range", "0 2147483647")];

/// Writes [`NAMESPACE_SYSCTLS`] in the calling thread's network namespace, which must be one
/// made for a container (never the host's): `/proc/sys/net` is the namespace of the thread
/// that opens it. Also called in the sandbox's child, between fork and exec.
pub(crate) fn set_namespace_sysctls() -> std::io::Result<()> {
    for (key, value) in NAMESPACE_SYSCTLS {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // A kernel without the setting (before 4.11) has nothing to open up.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A rootless berth's user namespace maps only some gids: the kernel refuses a
            // ping range beyond them, and the container keeps the kernel's default.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && crate::userns::rootless() => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("set {key}={value}: {e}"))),
        }
    }
    Ok(())
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("bridge network: {what}: {e}"))
}

/// Where this network namespace's address leases live: one directory per host network
/// namespace (its inode), on tmpfs, so a reboot or another namespace starts empty.
fn lease_dir() -> std::io::Result<PathBuf> {
    let ns = std::fs::metadata("/proc/self/ns/net")?;
    let dir = PathBuf::from(format!("/run/berth/ipam-{}", std::os::unix::fs::MetadataExt::ino(&ns)));
    // Private: a lease file another user could open is an address they could hold.
    crate::container::private_dir(Path::new("/run/berth"))?;
    crate::container::private_dir(&dir)?;
    Ok(dir)
}

/// Makes the bridge, its address, the NAT rule and forwarding, once per host network
/// namespace, under a lock; a `.ready` mark written last says all of it is there, so a
/// setup cut short (no nft, say) is done again by the next run.
fn ensure_bridge() -> std::io::Result<()> {
    let dir = lease_dir()?;
    if bridge_exists()? && dir.join(".ready").exists() {
        return Ok(());
    }
    let lock = crate::container::open_private(&dir.join(".lock"), false)?;
    flock(&lock, FlockOperation::LockExclusive)?;
    if bridge_exists()? && dir.join(".ready").exists() {
        return Ok(());
    }
    // A mark left by a namespace that is gone (its inode reused) must not outlive this setup.
    let _ = std::fs::remove_file(dir.join(".ready"));
    if !bridge_exists()? {
        let mut nl = crate::netlink::Socket::open()?;
        nl.add_link(BRIDGE, "bridge").map_err(|e| err("make the bridge", e))?;
        let index = crate::netlink::index(BRIDGE)?;
        nl.add_address(index, GATEWAY, PREFIX).map_err(|e| err("address the bridge", e))?;
        nl.link_up(index).map_err(|e| err("set the bridge up", e))?;
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| err("enable forwarding", e))?;
    run_with_input("nft", &["-f", "-"], &nat_rules()).map_err(|e| err("nft (install nftables)", e))?;
    allow_forwarding()?;
    crate::container::open_private(&dir.join(".ready"), false)?;
    Ok(())
}

/// Whether this network namespace has the bridge. Read from /proc/self/net/dev, which is
/// the caller's namespace's; /sys/class/net is that of whoever mounted /sys.
fn bridge_exists() -> std::io::Result<bool> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")?;
    Ok(dev.lines().any(|l| l.trim_start().strip_prefix(BRIDGE).is_some_and(|rest| rest.starts_with(':'))))
}

/// Runs `program args` with `input` on its stdin; fails with its stderr.
fn run_with_input(program: &str, args: &[&str], input: &str) -> std::io::Result<()> {
    let mut child =
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

/// Where the host's iptables FORWARD policy drops (dockerd sets it so), accepts the bridge's
/// traffic out and its replies back, as docker does, each rule once; else nothing.
fn allow_forwarding() -> std::io::Result<()> {
    let Ok(out) = Command::new("iptables").args(["-S", "FORWARD"]).stderr(Stdio::null()).output() else {
        return Ok(());
    };
    if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "-P FORWARD DROP") {
        return Ok(());
    }
    let out_rule = ["FORWARD", "-i", BRIDGE, "-j", "ACCEPT"];
    let back_rule = ["FORWARD", "-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"];
    for rule in [&out_rule[..], &back_rule[..]] {
        let present = Command::new("iptables").arg("-C").args(rule).stderr(Stdio::null()).status()?.success();
        if !present {
            run_with_input("iptables", &[&["-I"][..], rule].concat(), "").map_err(|e| err("iptables", e))?;
        }
    }
    Ok(())
}

/// The NAT rule as an nft script that replaces the `ip berth` table whole, in one
/// transaction: running it again never duplicates the rule.
fn nat_rules() -> String {
    let subnet = Ipv4Addr::from(u32::from(GATEWAY) & !((1u32 << (32 - PREFIX)) - 1));
    [
        "table ip berth".to_owned(),
        "delete table ip berth".to_owned(),
        "table ip berth {".to_owned(),
        "  chain postrouting {".to_owned(),
        "    type nat hook postrouting priority srcnat; policy accept;".to_owned(),
        format!("    ip saddr {subnet}/{PREFIX} oifname != \"{BRIDGE}\" masquerade"),
        "  }".to_owned(),
        "}".to_owned(),
    ]
    .join("\n")
        + "\n"
}

/// Takes the lowest free address: the first lease file whose lock can be had. Lease files
/// are never removed (a removal could race a taker into two holders of one address).
fn allocate(id: &str) -> std::io::Result<(Ipv4Addr, File)> {
    let dir = lease_dir()?;
    let first = u32::from(GATEWAY) + 1;
    let last = (u32::from(GATEWAY) | ((1u32 << (32 - PREFIX)) - 1)) - 1;
    for n in first..=last {
        let ip = Ipv4Addr::from(n);
        let mut f = crate::container::open_private(&dir.join(ip.to_string()), false)?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                f.set_len(0)?;
                f.write_all(id.as_bytes())?;
                return Ok((ip, f));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(err("allocate an address", "every address of 10.90.0.0/16 is in use"))
}

/// Puts container `id` on the bridge: a namespace with `lo` and `eth0` up, an address and a
/// default route. The veth's host end is named `bv`, the ID's first 6 digits and 4 random
/// ones: a restarted container's new pair does not meet its old one, which the kernel
/// removes a moment after the old namespace is gone. Set by rtnetlink ([`crate::netlink`]).
pub fn attach(id: &str) -> std::io::Result<Attachment> {
    ensure_bridge()?;
    let (ip, lease) = allocate(id)?;
    let veth = format!("bv{}{}", &id[..6], &crate::container::new_id()[..4]);
    let host_ns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
    // The namespace is made, and set up from inside, on a short-lived thread of its own.
    let netns = new_netns(|nl| {
        // Made inside, its host end sent out to the caller's namespace.
        nl.add_veth("eth0", &veth, &host_ns)?;
        let eth0 = crate::netlink::index("eth0")?;
        nl.add_address(eth0, ip, PREFIX)?;
        nl.link_up(eth0)?;
        nl.add_default_route(eth0, GATEWAY)
    })
    .map_err(|e| err("set up the container's network", e))?;
    let mut nl = crate::netlink::Socket::open()?;
    nl.set_master_up(crate::netlink::index(&veth)?, crate::netlink::index(BRIDGE)?)
        .map_err(|e| err("join the bridge", e))?;
    Ok(Attachment { ip, netns, link: Link::Bridge { veth, _lease: lease } })
}

/// The host's resolv.conf as docker rewrites it for a bridged container: no loopback name
/// server (it would be the container's own); Google's when none is left.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let server = words.next().unwrap_or("");
            if server.starts_with("127.") || server == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nat_rule_masquerades_the_subnet_leaving_by_another_interface() {
        let rules = nat_rules();
        assert!(rules.starts_with("table ip berth\ndelete table ip berth\n"), "{rules}");
        assert!(rules.contains("ip saddr 10.90.0.0/16 oifname != \"berth0\" masquerade"), "{rules}");
    }

    #[test]
    fn loopback_name_servers_are_dropped_as_docker_does() {
        let host = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n";
        assert_eq!(resolv_conf(host), "# generated\nsearch example.com\nnameserver 10.0.0.2\noptions edns0\n");
        assert_eq!(resolv_conf("nameserver 127.0.0.1\n"), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
}
