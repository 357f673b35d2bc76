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
//!
//! A user-defined network ([`user`]) is the same on a [`Bridge`] of its own, whose nft table
//! also keeps it apart from berth's other bridges, and whose containers each get a resolver
//! of the network's names ([`dns`]) at [`RESOLVER`], served by the process that attached them.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustix::fs::{flock, FlockOperation};

/// The bridge's name.
pub const BRIDGE: &str = "berth0";
/// The bridge's address, the containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// The subnet's prefix length (10.90.0.0/16).
pub const PREFIX: u8 = 16;

pub mod dns;
pub mod user;

/// Where a user-defined network's resolver listens in each container's namespace: docker's
/// embedded DNS server's address.
pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// The resolver's UDP and TCP sockets on [`RESOLVER`] port 53, bound in the calling thread's
/// network namespace (a container's, as it is made), where they stay.
fn bind_resolver() -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let at = std::net::SocketAddr::from((RESOLVER, 53));
    Ok((std::net::UdpSocket::bind(at)?, std::net::TcpListener::bind(at)?))
}

/// A Linux bridge that containers are put on: berth's default `berth0`, or the bridge of a
/// user-defined network ([`user`]), which is isolated from berth's other bridges and gives
/// its containers a resolver for each other's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The link's name: `berth0`, or `berth-` and the network ID's first 9 digits.
    pub name: String,
    /// The bridge's address, the containers' gateway.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The nft table that holds its rules.
    table: String,
    /// Its leases' directory under the host namespace's ipam directory (`""` for `berth0`).
    leases: String,
    /// `--internal`: no route out (no NAT, nothing forwarded beyond the bridge, no name
    /// forwarded by the resolver).
    internal: bool,
    /// A user-defined network's name (its containers are also `NAME.NETWORK`) and its
    /// definition, which must still exist for the bridge to be made (a removal may race);
    /// such a bridge is isolated from berth's others, and its names are served.
    network: Option<(String, PathBuf)>,
}

impl Bridge {
    /// berth's default bridge, `berth0` on 10.90.0.0/16, as docker0 is docker's.
    pub fn default_bridge() -> Bridge {
        Bridge {
            name: BRIDGE.to_owned(),
            gateway: GATEWAY,
            prefix: PREFIX,
            table: "berth".to_owned(),
            leases: String::new(),
            internal: false,
            network: None,
        }
    }

    /// The bridge of user-defined network `n`, defined by the file `definition`: named after
    /// its ID, on its subnet.
    pub fn user_defined(n: &user::Network, definition: PathBuf) -> Bridge {
        Bridge {
            name: format!("berth-{}", &n.id[..9]),
            gateway: n.gateway,
            prefix: n.prefix,
            table: format!("berth_{}", &n.id[..9]),
            leases: format!("net-{}", &n.id[..12]),
            internal: n.internal,
            network: Some((n.name.to_ascii_lowercase(), definition)),
        }
    }

    /// A user-defined network's bridge (not `berth0`).
    fn user(&self) -> bool {
        self.network.is_some()
    }

    /// The subnet's first address.
    pub fn subnet(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & mask(self.prefix))
    }

    /// Where its address leases live: a directory per host network namespace (its inode)
    /// on tmpfs, so a reboot or another namespace starts empty.
    fn lease_dir(&self) -> std::io::Result<PathBuf> {
        let dir = ipam_dir()?.join(&self.leases);
        crate::container::private_dir(&dir)?;
        Ok(dir)
    }

    /// The addresses containers may take: the subnet's hosts but the gateway.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let net = u32::from(self.subnet());
        let last = net | !mask(self.prefix);
        (net + 1..last).map(Ipv4Addr::from).filter(move |ip| *ip != self.gateway)
    }
}

/// The netmask of a prefix length.
pub(crate) fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Whether two subnets (`address/prefix`) share an address.
pub(crate) fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let common = mask(a.1.min(b.1));
    u32::from(a.0) & common == u32::from(b.0) & common
}

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
    /// A veth pair on a bridge, and the address's lease, locked while this lives; `dns`
    /// when a resolver serves the network's names at [`RESOLVER`] in the namespace.
    Bridge { veth: String, gateway: Ipv4Addr, prefix: u8, dns: bool, _lease: File },
    /// A rootless berth's user-mode network: slirp4netns on a tap device.
    UserMode { _slirp: crate::usernet::Slirp },
    /// Another container's namespace, joined (`--network container:NAME`): nothing of its
    /// own to set up or tear down, and that container's /etc files.
    Shared { etc: Box<crate::sandbox::EtcFiles> },
}

impl Attachment {
    /// The host end of the veth pair, on the bridge; none on a user-mode network.
    pub fn veth(&self) -> Option<&str> {
        match &self.link {
            Link::Bridge { veth, .. } => Some(veth),
            Link::UserMode { .. } | Link::Shared { .. } => None,
        }
    }

    /// The container's own address, as `inspect` shows it; none in another's namespace
    /// (docker leaves it empty there).
    pub fn address(&self) -> Option<Ipv4Addr> {
        (!matches!(self.link, Link::Shared { .. })).then_some(self.ip)
    }

    /// The other container's /etc/hosts, resolv.conf and hostname, when this one shares
    /// its namespace: they are this container's too, as docker gives them.
    pub fn shared_etc(&self) -> Option<&crate::sandbox::EtcFiles> {
        match &self.link {
            Link::Shared { etc } => Some(etc),
            _ => None,
        }
    }

    /// The host as the container reaches it (docker's `host-gateway`): the bridge's address,
    /// or slirp4netns's gateway, which leads to the host's loopback.
    pub fn gateway(&self) -> std::net::IpAddr {
        self.subnet().0.into()
    }

    /// The gateway and the subnet's prefix length, as `inspect` shows them.
    pub fn subnet(&self) -> (Ipv4Addr, u8) {
        match self.link {
            Link::Bridge { gateway, prefix, .. } => (gateway, prefix),
            Link::UserMode { .. } => (crate::usernet::GATEWAY, crate::usernet::PREFIX),
            Link::Shared { .. } => (Ipv4Addr::UNSPECIFIED, 0),
        }
    }

    /// A resolver of the network's names serves the container at [`RESOLVER`].
    pub fn has_resolver(&self) -> bool {
        matches!(self.link, Link::Bridge { dns: true, .. })
    }

    /// The host can reach [`Attachment::ip`] (the bridge); a user-mode network's address
    /// exists only inside the namespace.
    pub fn routed(&self) -> bool {
        matches!(self.link, Link::Bridge { .. })
    }

    /// The container's resolv.conf from the host's `host`: docker's rewrite on the default
    /// bridge; the network's resolver on a user-defined one; slirp4netns's forwarder as the
    /// one name server on a user-mode network.
    pub fn resolv_conf(&self, host: &str) -> String {
        let kept = || host.lines().filter(|l| l.starts_with("search") || l.starts_with("options"));
        match self.link {
            Link::Bridge { dns: false, .. } => resolv_conf(host),
            Link::Bridge { dns: true, .. } => {
                let search = kept().filter(|l| l.starts_with("search")).map(|l| format!("{l}\n")).collect::<String>();
                let mut options: Vec<&str> =
                    kept().filter(|l| l.starts_with("options")).flat_map(|l| l.split_whitespace().skip(1)).collect();
                // docker's: the host's options, and ndots:0 unless they set ndots, so that a
                // container's name is asked as it is.
                if !options.iter().any(|o| o.starts_with("ndots:")) {
                    options.push("ndots:0");
                }
                search + &format!("nameserver {RESOLVER}\noptions {}\n", options.join(" "))
            }
            Link::UserMode { .. } => {
                kept().map(|l| format!("{l}\n")).collect::<String>() + &format!("nameserver {}\n", crate::usernet::DNS)
            }
            Link::Shared { ref etc } => etc.resolv_conf.clone(),
        }
    }

    /// The network namespace of the running process `pid` (another container's PID 1), to
    /// join, with the /etc files that container sees.
    pub fn shared(pid: i32) -> std::io::Result<Attachment> {
        let netns: OwnedFd = File::open(format!("/proc/{pid}/ns/net"))?.into();
        let read = |name: &str| -> std::io::Result<String> {
            use std::io::Read;
            let mut text = String::new();
            // Read through the container's root; a file is a few lines, never more than this.
            File::open(format!("/proc/{pid}/root/etc/{name}"))?.take(SHARED_ETC_MAX).read_to_string(&mut text)?;
            Ok(text)
        };
        let etc = crate::sandbox::EtcFiles {
            hosts: read("hosts")?,
            resolv_conf: read("resolv.conf")?,
            hostname: read("hostname")?,
        };
        Ok(Attachment { ip: Ipv4Addr::UNSPECIFIED, netns, link: Link::Shared { etc: Box::new(etc) } })
    }

    /// A rootless container's network: a namespace of its own with `lo` up, given to
    /// slirp4netns (see [`crate::usernet`]).
    pub fn user_mode() -> std::io::Result<Attachment> {
        let netns = new_netns(|_| Ok(()))?;
        let slirp = crate::usernet::Slirp::start(&netns)?;
        Ok(Attachment { ip: crate::usernet::ADDRESS, netns, link: Link::UserMode { _slirp: slirp } })
    }
}

/// The most of another container's /etc/hosts, resolv.conf or hostname that is read.
const SHARED_ETC_MAX: u64 = 1 << 20;

impl Drop for Attachment {
    /// Removes the veth pair with the address's lease. The namespace may outlive the
    /// container (a `--network container:` sidecar holds it): the address goes back to the
    /// pool now, so its interface must go too, or a new container would get the same address
    /// while the old `eth0` still answers to it. The sidecar keeps `lo`, as under docker.
    fn drop(&mut self) {
        let Link::Bridge { veth, .. } = &self.link else { return };
        // Gone already when the namespace went first: nothing to do.
        if let Ok(index) = crate::netlink::index(veth) {
            if let Err(e) = crate::netlink::Socket::open().and_then(|mut nl| nl.del_link(index)) {
                eprintln!("berth: warning: remove the veth {veth} of a stopped container: {e}");
            }
        }
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

/// The host network namespace's directory of berth's network state (its inode names it),
/// on tmpfs: leases, the setup marks and the lock that orders bridge changes.
fn ipam_dir() -> std::io::Result<PathBuf> {
    let ns = std::fs::metadata("/proc/self/ns/net")?;
    let dir = PathBuf::from(format!("/run/berth/ipam-{}", std::os::unix::fs::MetadataExt::ino(&ns)));
    // Private: a lease file another user could open is an address they could hold.
    crate::container::private_dir(Path::new("/run/berth"))?;
    crate::container::private_dir(&dir)?;
    Ok(dir)
}

/// Holds the host namespace's network lock: bridges are made, checked and removed under it.
fn network_lock() -> std::io::Result<File> {
    let lock = crate::container::open_private(&ipam_dir()?.join(".lock"), false)?;
    flock(&lock, FlockOperation::LockExclusive)?;
    Ok(lock)
}

impl Bridge {
    /// Makes the bridge, its address, its nft table and forwarding, once per host network
    /// namespace, under the lock; a `.ready` mark written last says all of it is there, so a
    /// setup cut short (no nft, say) is done again by the next run.
    fn ensure(&self) -> std::io::Result<()> {
        let dir = self.lease_dir()?;
        if link_exists(&self.name)? && dir.join(".ready").exists() {
            return Ok(());
        }
        let _lock = network_lock()?;
        self.ensure_locked()
    }

    /// [`Bridge::ensure`]'s work, under the lock the caller holds.
    fn ensure_locked(&self) -> std::io::Result<()> {
        let dir = self.lease_dir()?;
        if link_exists(&self.name)? && dir.join(".ready").exists() {
            return Ok(());
        }
        // `network rm` removes the definition under this lock before the bridge: a run that
        // read it before must not make the bridge again.
        if let Some((name, definition)) = &self.network {
            if !definition.exists() {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("network {name} not found")));
            }
        }
        // A mark left by a namespace that is gone (its inode reused) must not outlive this setup.
        let _ = std::fs::remove_file(dir.join(".ready"));
        if !link_exists(&self.name)? {
            if let Some(other) = routes()?.into_iter().find(|r| r.overlaps(self.subnet(), self.prefix)) {
                let subnet = format!("{}/{}", self.subnet(), self.prefix);
                return Err(err("make the bridge", format!("{subnet} overlaps {} on {}", other.net(), other.iface)));
            }
            let mut nl = crate::netlink::Socket::open()?;
            nl.add_link(&self.name, "bridge").map_err(|e| err("make the bridge", e))?;
            let index = crate::netlink::index(&self.name)?;
            nl.add_address(index, self.gateway, self.prefix).map_err(|e| err("address the bridge", e))?;
            nl.link_up(index).map_err(|e| err("set the bridge up", e))?;
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| err("enable forwarding", e))?;
        run_with_input("nft", &["-f", "-"], &self.rules()).map_err(|e| err("nft (install nftables)", e))?;
        if allow_forwarding(&self.name)? {
            // For `remove`: rules to take back.
            crate::container::open_private(&dir.join(".forwarding"), false)?;
        }
        crate::container::open_private(&dir.join(".ready"), false)?;
        Ok(())
    }

    /// Removes a user-defined network, unless a container holds an address on it: `forget`
    /// (its definition), then its bridge, rules and leases' directory, all under the lock.
    pub fn remove(&self, forget: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let _lock = network_lock()?;
        let dir = self.lease_dir()?;
        if let Some(member) = members(&dir)?.into_iter().next() {
            let who = member.name().unwrap_or_else(|| member.ip.to_string());
            return Err(std::io::Error::new(
                std::io::ErrorKind::ResourceBusy,
                format!("container {who} is attached to it (stop it first)"),
            ));
        }
        forget()?;
        if link_exists(&self.name)? {
            let mut nl = crate::netlink::Socket::open()?;
            nl.del_link(crate::netlink::index(&self.name)?).map_err(|e| err("remove the bridge", e))?;
        }
        let script = format!("table ip {0}\ndelete table ip {0}\n", self.table);
        run_with_input("nft", &["-f", "-"], &script).map_err(|e| err("nft", e))?;
        if dir.join(".forwarding").exists() {
            disallow_forwarding(&self.name)?;
        }
        std::fs::remove_dir_all(&dir)
    }

    /// The bridge's nft table as a script that replaces it whole, in one transaction: running
    /// it again never duplicates a rule. The subnet's traffic out is masqueraded (unless
    /// internal); a user-defined network's bridge exchanges nothing with berth's others.
    fn rules(&self) -> String {
        let (table, br) = (&self.table, &self.name);
        let mut lines = vec![
            format!("table ip {table}"),
            format!("delete table ip {table}"),
            format!("table ip {table} {{"),
            "  chain postrouting {".to_owned(),
            "    type nat hook postrouting priority srcnat; policy accept;".to_owned(),
        ];
        if !self.internal {
            lines.push(format!("    ip saddr {}/{} oifname != \"{br}\" masquerade", self.subnet(), self.prefix));
        }
        lines.push("  }".to_owned());
        if self.user() {
            let (out, back) = match self.internal {
                // Nothing leaves the bridge, and nothing from elsewhere enters it.
                true => ("", ""),
                false => (" oifname \"berth*\"", " iifname \"berth*\""),
            };
            lines.extend([
                "  chain forward {".to_owned(),
                "    type filter hook forward priority filter; policy accept;".to_owned(),
                format!("    iifname \"{br}\" oifname != \"{br}\"{out} drop"),
                format!("    oifname \"{br}\" iifname != \"{br}\"{back} drop"),
                "  }".to_owned(),
            ]);
        }
        lines.push("}".to_owned());
        lines.join("\n") + "\n"
    }
}

/// Whether this network namespace has link `name`. Read from /proc/self/net/dev, which is
/// the caller's namespace's; /sys/class/net is that of whoever mounted /sys.
fn link_exists(name: &str) -> std::io::Result<bool> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")?;
    Ok(dev.lines().any(|l| l.trim_start().strip_prefix(name).is_some_and(|rest| rest.starts_with(':'))))
}

/// An IPv4 route of the caller's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The interface it leads through.
    pub iface: String,
    /// Its destination network.
    pub dest: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

impl Route {
    /// Whether `net/prefix` shares an address with this route's destination; the default
    /// route overlaps nothing.
    pub fn overlaps(&self, net: Ipv4Addr, prefix: u8) -> bool {
        self.prefix != 0 && overlaps((self.dest, self.prefix), (net, prefix))
    }

    /// `A.B.C.D/N`.
    pub fn net(&self) -> String {
        format!("{}/{}", self.dest, self.prefix)
    }
}

/// The IPv4 routes of the caller's network namespace (/proc/self/net/route): the subnets of
/// its interfaces, berth's bridges included, that a new network must not overlap.
pub(crate) fn routes() -> std::io::Result<Vec<Route>> {
    Ok(parse_routes(&std::fs::read_to_string("/proc/self/net/route")?))
}

fn parse_routes(text: &str) -> Vec<Route> {
    // The kernel prints each address as the u32 it holds in network order, in host order.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            Some(Route { iface: f[0].to_owned(), dest, prefix: u32::from(mask).count_ones() as u8 })
        })
        .collect()
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

/// docker's two iptables `FORWARD` rules for bridge `br`: its traffic out, and replies back.
fn forward_rules(br: &str) -> [Vec<&str>; 2] {
    [
        vec!["FORWARD", "-i", br, "-j", "ACCEPT"],
        vec!["FORWARD", "-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ]
}

/// Where the host's iptables FORWARD policy drops (dockerd sets it so), accepts bridge
/// `br`'s traffic out and its replies back, as docker does, each rule once, and says so;
/// else nothing.
fn allow_forwarding(br: &str) -> std::io::Result<bool> {
    let Ok(out) = Command::new("iptables").args(["-S", "FORWARD"]).stderr(Stdio::null()).output() else {
        return Ok(false);
    };
    if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l == "-P FORWARD DROP") {
        return Ok(false);
    }
    for rule in forward_rules(br) {
        let present = Command::new("iptables").arg("-C").args(&rule).stderr(Stdio::null()).status()?.success();
        if !present {
            run_with_input("iptables", &[&["-I"][..], &rule].concat(), "").map_err(|e| err("iptables", e))?;
        }
    }
    Ok(true)
}

/// Takes back what [`allow_forwarding`] added for a removed bridge (each rule if present).
fn disallow_forwarding(br: &str) -> std::io::Result<()> {
    for rule in forward_rules(br) {
        let present = Command::new("iptables").arg("-C").args(&rule).stderr(Stdio::null()).status();
        if present.is_ok_and(|s| s.success()) {
            run_with_input("iptables", &[&["-D"][..], &rule].concat(), "").map_err(|e| err("iptables", e))?;
        }
    }
    Ok(())
}

/// Takes the lowest free address of `bridge`: the first lease file whose lock can be had,
/// and writes `holder` in it (the container's ID and names, for the network's resolver).
/// Lease files are never removed while the bridge is (a removal could race a taker into two
/// holders of one address).
fn allocate(bridge: &Bridge, holder: &str) -> std::io::Result<(Ipv4Addr, File)> {
    let dir = bridge.lease_dir()?;
    for ip in bridge.hosts() {
        let mut f = crate::container::open_private(&dir.join(ip.to_string()), false)?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                f.set_len(0)?;
                f.write_all(holder.as_bytes())?;
                return Ok((ip, f));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let subnet = format!("{}/{}", bridge.subnet(), bridge.prefix);
    Err(err("allocate an address", format!("every address of {subnet} is in use")))
}

/// Gives container `id` the names `names` (its name, `""` for none, then its aliases and host
/// name, as [`attach_to`] takes them) in its lease on `bridge`, for the network's resolver:
/// `berth rename` of a running container. False when it holds no address there. The lease
/// is rewritten in place (its holder's lock is on the open file).
pub fn rename_member(bridge: &Bridge, id: &str, names: &[String]) -> std::io::Result<bool> {
    let dir = bridge.lease_dir()?;
    for member in members(&dir)? {
        if member.names.first().map(String::as_str) != Some(id) {
            continue;
        }
        let name = names.first().map(String::as_str).filter(|n| !n.is_empty()).unwrap_or("-");
        let holder = [id, &id[..12], name].into_iter().chain(names.iter().skip(1).map(String::as_str));
        let text = holder.collect::<Vec<_>>().join(" ");
        let mut f = std::fs::OpenOptions::new().write(true).open(dir.join(member.ip.to_string()))?;
        // Written over the old text, then cut to its length: a reader never sees it empty.
        f.write_all(text.as_bytes())?;
        f.set_len(text.len() as u64)?;
        return Ok(true);
    }
    Ok(false)
}

/// A container holding an address on a bridge, as its lease file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its ID, name and aliases, lowercase.
    pub names: Vec<String>,
}

impl Member {
    /// Its name, else its short ID (a lease names the ID, the short ID, then the name or
    /// `-`, then the other names).
    pub fn name(&self) -> Option<String> {
        self.names.get(2).filter(|n| *n != "-").or(self.names.get(1)).cloned()
    }

    /// Whether `name` is one it answers to: not its full ID, as docker's.
    fn answers_to(&self, name: &str) -> bool {
        name != "-" && self.names.iter().skip(1).any(|n| n == name)
    }
}

/// What a user-defined network's resolver serves: its leases, read at each query.
struct LeaseNames {
    dir: PathBuf,
    /// The network's name, lowercase: `db.NETWORK` is `db`.
    network: String,
}

impl dns::Names for LeaseNames {
    fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
        let name = name.strip_suffix(&format!(".{}", self.network)).unwrap_or(name);
        let mut ips: Vec<Ipv4Addr> =
            members(&self.dir).unwrap_or_default().into_iter().filter(|m| m.answers_to(name)).map(|m| m.ip).collect();
        ips.sort();
        ips
    }

    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        let member = members(&self.dir).ok()?.into_iter().find(|m| m.ip == ip)?;
        Some(format!("{}.{}", member.name()?, self.network))
    }
}

/// The containers holding an address in lease directory `dir` now: each lease file whose
/// `flock` someone holds (a shared lock that can be had means its holder is gone).
fn members(dir: &Path) -> std::io::Result<Vec<Member>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
        let Ok(mut f) = File::open(entry.path()) else { continue };
        match flock(&f, FlockOperation::NonBlockingLockShared) {
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            // Free (and unlocked again as `f` closes), or unreadable: no one's.
            _ => continue,
        }
        let mut text = String::new();
        let _unreadable = std::io::Read::read_to_string(&mut f, &mut text);
        let names = text.split_whitespace().map(str::to_ascii_lowercase).collect();
        found.push(Member { ip, names });
    }
    Ok(found)
}

/// Puts container `id` on berth's default bridge (see [`attach_to`]).
pub fn attach(id: &str) -> std::io::Result<Attachment> {
    attach_to(&Bridge::default_bridge(), id, &[], Vec::new())
}

/// Puts container `id` on `bridge`: a namespace with `lo` and `eth0` up, an address and a
/// default route. The veth's host end is named `bv`, the ID's first 6 digits and 4 random
/// ones: a restarted container's new pair does not meet its old one, which the kernel
/// removes a moment after the old namespace is gone. Set by rtnetlink ([`crate::netlink`]).
/// On a user-defined network, `names` (the container's name, `""` for none, then its
/// aliases and host name) are served with its short ID by a resolver at [`RESOLVER`] in the
/// namespace, as docker's are; it forwards other names to `upstreams` (`--dns`), or else to
/// the host's name servers; on an internal network, nowhere.
pub fn attach_to(
    bridge: &Bridge,
    id: &str,
    names: &[String],
    upstreams: Vec<SocketAddr>,
) -> std::io::Result<Attachment> {
    bridge.ensure()?;
    let name = names.first().map(String::as_str).filter(|n| !n.is_empty()).unwrap_or("-");
    let others = names.iter().skip(1).map(String::as_str);
    let holder = [id, &id[..12], name].into_iter().chain(others);
    let (ip, lease) = allocate(bridge, &holder.collect::<Vec<_>>().join(" "))?;
    let veth = format!("bv{}{}", &id[..6], &crate::container::new_id()[..4]);
    let host_ns: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
    let mut sockets = None;
    // The namespace is made, and set up from inside, on a short-lived thread of its own.
    let netns = new_netns(|nl| {
        // Made inside, its host end sent out to the caller's namespace.
        nl.add_veth("eth0", &veth, &host_ns)?;
        let eth0 = crate::netlink::index("eth0")?;
        nl.add_address(eth0, ip, bridge.prefix)?;
        nl.link_up(eth0)?;
        nl.add_default_route(eth0, bridge.gateway)?;
        if bridge.user() {
            sockets = Some(bind_resolver()?);
        }
        Ok(())
    })
    .map_err(|e| err("set up the container's network", e))?;
    let mut nl = crate::netlink::Socket::open()?;
    nl.set_master_up(crate::netlink::index(&veth)?, crate::netlink::index(&bridge.name)?)
        .map_err(|e| err("join the bridge", e))?;
    if let Some((udp, tcp)) = sockets {
        let network = bridge.network.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
        let lookup: dns::Lookup = Arc::new(LeaseNames { dir: bridge.lease_dir()?, network });
        let upstreams = match (bridge.internal, upstreams.is_empty()) {
            // Nothing leaves an internal network, names included.
            (true, _) => Vec::new(),
            (false, true) => dns::upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
            (false, false) => upstreams,
        };
        dns::serve(udp, tcp, lookup, upstreams).map_err(|e| err("start the network's resolver", e))?;
    }
    let link = Link::Bridge { veth, gateway: bridge.gateway, prefix: bridge.prefix, dns: bridge.user(), _lease: lease };
    Ok(Attachment { ip, netns, link })
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

    /// A user-defined network's bridge, ID `0123456789abcdef...`, defined by `definition`.
    fn user_bridge(gateway: Ipv4Addr, prefix: u8, internal: bool, definition: PathBuf) -> Bridge {
        let n = user::Network {
            id: format!("0123456789abcdef{}", "0".repeat(48)),
            name: "Ci".into(),
            created: String::new(),
            subnet: Ipv4Addr::from(u32::from(gateway) & mask(prefix)),
            prefix,
            gateway,
            internal,
            labels: Default::default(),
        };
        Bridge::user_defined(&n, definition)
    }

    #[test]
    fn the_nat_rule_masquerades_the_subnet_leaving_by_another_interface() {
        let rules = Bridge::default_bridge().rules();
        assert!(rules.starts_with("table ip berth\ndelete table ip berth\n"), "{rules}");
        assert!(rules.contains("ip saddr 10.90.0.0/16 oifname != \"berth0\" masquerade"), "{rules}");
    }

    #[test]
    fn a_user_networks_table_drops_traffic_to_and_from_berths_other_bridges() {
        let net = user_bridge(Ipv4Addr::new(10, 92, 3, 1), 24, false, PathBuf::new());
        assert_eq!((net.name.as_str(), net.subnet()), ("berth-012345678", Ipv4Addr::new(10, 92, 3, 0)));
        let rules = net.rules();
        assert!(rules.starts_with("table ip berth_012345678\ndelete table ip berth_012345678\n"), "{rules}");
        assert!(rules.contains("ip saddr 10.92.3.0/24 oifname != \"berth-012345678\" masquerade"), "{rules}");
        assert!(rules.contains("iifname \"berth-012345678\" oifname != \"berth-012345678\" oifname \"berth*\" drop"));
        assert!(rules.contains("oifname \"berth-012345678\" iifname != \"berth-012345678\" iifname \"berth*\" drop"));
        // Internal: no masquerade, and nothing crosses the bridge's edge at all.
        let sealed = user_bridge(Ipv4Addr::new(10, 92, 3, 1), 24, true, PathBuf::new()).rules();
        assert!(!sealed.contains("masquerade"), "{sealed}");
        assert!(sealed.contains("iifname \"berth-012345678\" oifname != \"berth-012345678\" drop"), "{sealed}");
        // berth0's table has no forward chain: docker0's containers reach the outside as before.
        assert!(!Bridge::default_bridge().rules().contains("forward"));
    }

    #[test]
    fn addresses_skip_the_gateway_the_network_and_broadcast() {
        let net = user_bridge(Ipv4Addr::new(10, 92, 0, 5), 29, false, PathBuf::new());
        let hosts: Vec<String> = net.hosts().map(|ip| ip.to_string()).collect();
        assert_eq!(hosts, ["10.92.0.1", "10.92.0.2", "10.92.0.3", "10.92.0.4", "10.92.0.6"]);
    }

    #[test]
    fn routes_are_read_from_proc_and_overlaps_found() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    berth0\t00005A0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 2);
        assert_eq!((routes[1].iface.as_str(), routes[1].net()), ("berth0", "10.90.0.0/16".to_owned()));
        assert!(!routes[0].overlaps(Ipv4Addr::new(10, 90, 1, 0), 24), "the default route overlaps nothing");
        assert!(routes[1].overlaps(Ipv4Addr::new(10, 90, 1, 0), 24));
        assert!(routes[1].overlaps(Ipv4Addr::new(10, 0, 0, 0), 8), "a wider subnet holding it");
        assert!(!routes[1].overlaps(Ipv4Addr::new(10, 92, 0, 0), 24));
    }

    #[test]
    fn members_are_the_leases_someone_holds_with_their_names() {
        let dir = std::env::temp_dir().join(format!("berth-members-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = File::create(dir.join("10.92.0.2")).unwrap();
        std::fs::write(dir.join("10.92.0.2"), "ID short Db alias").unwrap();
        flock(&held, FlockOperation::LockExclusive).unwrap();
        // A lease whose holder is gone (no lock), and a file that is not a lease.
        std::fs::write(dir.join("10.92.0.3"), "gone").unwrap();
        std::fs::write(dir.join(".ready"), "").unwrap();
        let found = members(&dir).unwrap();
        let names = ["id", "short", "db", "alias"].map(String::from).to_vec();
        assert_eq!(found, [Member { ip: Ipv4Addr::new(10, 92, 0, 2), names }]);
        drop(held);
        assert!(members(&dir).unwrap().is_empty(), "released with its holder");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_removed_networks_bridge_is_not_made_again_by_a_run_that_read_it_before() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: /run/berth needs root");
            return;
        }
        // The definition is gone (`network rm` took it under the lock): the run's ensure
        // fails, and no bridge appears.
        let gone = std::env::temp_dir().join(format!("berth-gone-{}.json", std::process::id()));
        let bridge = user_bridge(Ipv4Addr::new(10, 99, 254, 1), 24, false, gone);
        let e = bridge.ensure().unwrap_err();
        assert_eq!((e.kind(), e.to_string()), (std::io::ErrorKind::NotFound, "network ci not found".to_owned()));
        assert!(!link_exists(&bridge.name).unwrap());
        let _ = std::fs::remove_dir_all(bridge.lease_dir().unwrap());
    }

    #[test]
    fn loopback_name_servers_are_dropped_as_docker_does() {
        let host = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0\n";
        assert_eq!(resolv_conf(host), "# generated\nsearch example.com\nnameserver 10.0.0.2\noptions edns0\n");
        assert_eq!(resolv_conf("nameserver 127.0.0.1\n"), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
}
