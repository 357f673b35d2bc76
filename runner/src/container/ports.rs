//! Published ports: `-p [IP:][HOSTPORT:]CTRPORT[/tcp|udp]` and `-P`, served by the
//! supervisor as a proxy, as docker's userland proxy serves them: it listens on the host and
//! opens each connection inside the container's network namespace, to the container's
//! port on its loopback. Nothing outside the supervisor changes (no firewall rule, no
//! interface), so nothing is left behind when it dies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::Published;

/// One `-p` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// The host address (default: every IPv4 address).
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` lets the kernel choose.
    pub host_port: Option<u16>,
    /// The container's port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<PortSpec, String> {
        let bad = |why: &str| format!("invalid port {s:?}: {why} (expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp])");
        let (addr, proto) = match s.rsplit_once('/') {
            Some((a, p @ ("tcp" | "udp"))) => (a, p),
            Some((_, p)) => return Err(bad(&format!("unknown protocol {p:?}"))),
            None => (s, "tcp"),
        };
        // An IPv6 host address is bracketed: [::1]:8080:80.
        let (ip, rest) = match addr.strip_prefix('[') {
            Some(r) => {
                let (ip, rest) = r.split_once("]:").ok_or_else(|| bad("unclosed '['"))?;
                (Some(ip), rest)
            }
            None => match addr.matches(':').count() {
                2 => addr.split_once(':').map(|(ip, rest)| (Some(ip), rest)).unwrap_or((None, addr)),
                _ => (None, addr),
            },
        };
        let host_ip = ip.map(|ip| ip.parse::<IpAddr>().map_err(|_| bad(&format!("{ip:?} is not an IP address"))));
        let port = |p: &str| -> Result<u16, String> {
            if p.contains('-') {
                return Err(bad("a range publishes several ports: see `publish`"));
            }
            p.parse::<u16>().ok().filter(|&n| n > 0).ok_or_else(|| bad(&format!("{p:?} is not a port")))
        };
        let (host_port, container_port) = match rest.split_once(':') {
            Some(("", c)) => (None, port(c)?),
            Some((h, c)) => (Some(port(h)?), port(c)?),
            None => (None, port(rest)?),
        };
        Ok(PortSpec { host_ip: host_ip.transpose()?, host_port, container_port, proto: proto.to_owned() })
    }
}

/// `-p`'s value as docker takes it: one port, or ranges (`8000-8001:80-81`, `127.0.0.1::80-82`:
/// the container's range, each on its own host port of the host range, or the kernel's
/// choice when there is none). A host range for one container port (docker's "any free port
/// in the range") is refused.
pub fn publish(s: &str) -> Result<Vec<PortSpec>, String> {
    let bad = |why: &str| format!("invalid port {s:?}: {why}");
    let (addr, proto) = s.rsplit_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
    // The last two `:`-separated fields are the ports (an IPv6 host address has colons).
    let mut fields = addr.rsplitn(3, ':');
    let container = fields.next().unwrap_or_default();
    let (host, ip) = (fields.next(), fields.next());
    if !container.contains('-') && !host.is_some_and(|h| h.contains('-')) {
        return Ok(vec![s.parse()?]);
    }
    let range = |r: &str| -> Result<(u16, u16), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let (a, b) = (
            a.parse::<u16>().map_err(|_| bad("not a port range"))?,
            b.parse::<u16>().map_err(|_| bad("not a port range"))?,
        );
        (a > 0 && a <= b).then_some((a, b)).ok_or_else(|| bad("not a port range"))
    };
    let (from, to) = range(container)?;
    let hosts = match host.filter(|h| !h.is_empty()) {
        Some(h) => {
            let (hf, ht) = range(h)?;
            if ht - hf != to - from {
                return Err(bad("the host range and the container range differ in length (docker's any-free-port-in-a-range is not supported)"));
            }
            (hf..=ht).map(Some).collect()
        }
        None => vec![None; usize::from(to - from) + 1],
    };
    let one = |host: Option<u16>, port: u16| {
        let mut spec = String::new();
        if let Some(ip) = ip {
            spec.push_str(ip);
            spec.push(':');
        }
        if let Some(h) = host {
            spec.push_str(&h.to_string());
        }
        if ip.is_some() || host.is_some() {
            spec.push(':');
        }
        spec.push_str(&port.to_string());
        if let Some(p) = proto {
            spec.push('/');
            spec.push_str(p);
        }
        spec.parse::<PortSpec>()
    };
    hosts.into_iter().zip(from..=to).map(|(h, p)| one(h, p)).collect()
}

/// The image's `EXPOSE`d ports (`80/tcp` keys of ExposedPorts) as `-P` publishes them:
/// each on a port the kernel chooses.
pub fn publish_all(exposed: &[String]) -> Result<Vec<PortSpec>, String> {
    let exposed: Vec<String> = exposed.iter().map(|p| canonical(p)).collect::<Result<_, _>>()?;
    exposed.iter().map(|p| Ok(PortSpec { host_ip: None, host_port: None, ..p.parse()? })).collect()
}

/// `--expose`'s values as docker takes them: `PORT`, `PORT/PROTO` or a range `FROM-TO[/PROTO]`,
/// each port as `PORT/PROTO` (tcp when none is given).
pub fn expose(value: &str) -> Result<Vec<String>, String> {
    let bad = || format!("invalid range format for --expose: {value}");
    let (ports, proto) = value.split_once('/').unwrap_or((value, "tcp"));
    if !matches!(proto, "tcp" | "udp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let (from, to) = ports.split_once('-').unwrap_or((ports, ports));
    let (from, to): (u16, u16) = (from.parse().map_err(|_| bad())?, to.parse().map_err(|_| bad())?);
    if from == 0 || to < from {
        return Err(bad());
    }
    Ok((from..=to).map(|p| format!("{p}/{proto}")).collect())
}

/// `PORT[/PROTO]` as `PORT/PROTO`.
fn canonical(p: &str) -> Result<String, String> {
    let mut one = expose(p)?;
    match one.len() {
        1 => Ok(one.remove(0)),
        _ => Err(format!("{p}: one port, not a range")),
    }
}

/// Ports the supervisor listens on, bound before the container is reported started.
pub struct Listeners {
    tcp: Vec<(tokio::net::TcpListener, u16)>,
    udp: Vec<(Arc<tokio::net::UdpSocket>, u16)>,
    published: Vec<Published>,
}

impl Listeners {
    /// Binds every port of `specs` on the host (inside a tokio runtime).
    pub fn bind(specs: &[PortSpec]) -> std::io::Result<Listeners> {
        let mut l = Listeners { tcp: Vec::new(), udp: Vec::new(), published: Vec::new() };
        for spec in specs {
            let ip = spec.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let addr = SocketAddr::new(ip, spec.host_port.unwrap_or(0));
            let err = |e: std::io::Error| {
                // A plain user's berth may not bind a privileged port (EACCES): say what does.
                let hint = match (e.kind(), addr.port()) {
                    (std::io::ErrorKind::PermissionDenied, 1..=1023) if crate::userns::rootless() => {
                        " (a plain user cannot bind ports below 1024: publish a higher host port, or \
                         lower net.ipv4.ip_unprivileged_port_start)"
                    }
                    _ => "",
                };
                std::io::Error::new(e.kind(), format!("publish {addr}/{}: {e}{hint}", spec.proto))
            };
            let local = if spec.proto == "udp" {
                let s = std::net::UdpSocket::bind(addr).map_err(err)?;
                s.set_nonblocking(true)?;
                let local = s.local_addr()?;
                l.udp.push((Arc::new(tokio::net::UdpSocket::from_std(s)?), spec.container_port));
                local
            } else {
                let s = std::net::TcpListener::bind(addr).map_err(err)?;
                s.set_nonblocking(true)?;
                let local = s.local_addr()?;
                l.tcp.push((tokio::net::TcpListener::from_std(s)?, spec.container_port));
                local
            };
            l.published.push(Published {
                host_ip: ip.to_string(),
                host_port: local.port(),
                container_port: spec.container_port,
                proto: spec.proto.clone(),
            });
        }
        Ok(l)
    }

    /// What was bound, for the state.
    pub fn published(&self) -> Vec<Published> {
        self.published.clone()
    }

    /// Serves every port until the runtime stops, each connection (or UDP peer) to `to`.
    pub fn serve(self, to: Upstream) {
        for (listener, port) in self.tcp {
            tokio::spawn(serve_tcp(listener, port, to.clone()));
        }
        for (socket, port) in self.udp {
            tokio::spawn(serve_udp(socket, port, to.clone()));
        }
    }
}

/// Where published ports lead.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// The container's address on the bridge, from the host's namespace (as docker's proxy).
    Address(Ipv4Addr),
    /// The loopback of the container's own network namespace (network `none`, rootless
    /// networks): each socket is made inside it.
    Loopback(Arc<InNetns>),
}

impl Upstream {
    /// Where the ports of the container whose first process is `pid` lead: its address
    /// where the host routes to it (`routed`), else its namespace's loopback. None when
    /// the process is gone already (it ended at once): there is nothing to forward to.
    pub fn to_container(routed: Option<Ipv4Addr>, pid: i32) -> super::Result<Option<Upstream>> {
        if let Some(ip) = routed {
            return Ok(Some(Upstream::Address(ip)));
        }
        let netns = match super::exec::Target::net_ns(pid) {
            Ok(ns) => ns,
            Err(super::Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let inside = InNetns::enter(netns).map_err(|e| {
            super::Error::Config(format!("enter the container's network namespace for its published ports: {e}"))
        })?;
        Ok(Some(Upstream::Loopback(Arc::new(inside))))
    }

    /// A socket for the container's side, and the address it connects to.
    fn socket<T: Send + 'static>(
        &self,
        port: u16,
        make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<(T, SocketAddr)> {
        match self {
            Upstream::Address(ip) => Ok((make()?, SocketAddr::from((*ip, port)))),
            Upstream::Loopback(inside) => Ok((inside.make(make)?, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))),
        }
    }
}

/// Work for the thread inside a namespace.
type Job = Box<dyn FnOnce() + Send>;

/// A thread that entered a container's network namespace once and stays there, making the
/// sockets of published ports: a socket belongs to the namespace it was made in. A thread
/// cannot always leave again: a rootless supervisor, in a user namespace of its own, may
/// enter the container's namespace but not go back to the host's (EPERM), which once left
/// a runtime worker stuck inside and reset a connection. The thread ends with the last
/// [`Upstream`] that holds it.
#[derive(Debug)]
pub struct InNetns {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl InNetns {
    /// Starts the thread in `netns`; an error when it cannot enter.
    fn enter(netns: OwnedFd) -> std::io::Result<InNetns> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new().name("berth-netns".into()).spawn(move || {
            let ns = Some(rustix::thread::LinkNameSpaceType::Network);
            let joined = rustix::thread::move_into_link_name_space(netns.as_fd(), ns).map_err(std::io::Error::from);
            let ok = joined.is_ok();
            let _ = entered_tx.send(joined);
            if ok {
                queue.into_iter().for_each(|job| job());
            }
        })?;
        let joined = entered.recv().map_err(|_| std::io::Error::other("the namespace thread ended"))?;
        joined.map(|()| InNetns { jobs })
    }

    /// Runs `make` on the thread inside the namespace and returns what it made.
    fn make<T: Send + 'static>(
        &self,
        make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let gone = || std::io::Error::other("the namespace thread ended");
        self.jobs.send(Box::new(move || drop(tx.send(make())))).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, port: u16, to: Upstream) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            // Out of descriptors, say: wait before the next try instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let to = to.clone();
        tokio::spawn(async move {
            let Ok((socket, addr)) = to.socket(port, tokio::net::TcpSocket::new_v4) else { return };
            // Nothing listens inside yet (or any more): the client sees its connection closed.
            let Ok(mut upstream) = socket.connect(addr).await else {
                return;
            };
            let _done = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

/// How long a UDP peer may stay silent before its socket to the container is closed (as
/// docker's proxy forgets a UDP flow after a minute or so).
const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// One UDP client: its socket to the container and when it last sent.
struct Peer {
    socket: Arc<tokio::net::UdpSocket>,
    seen: tokio::time::Instant,
}

async fn serve_udp(host: Arc<tokio::net::UdpSocket>, port: u16, to: Upstream) {
    let mut peers: std::collections::HashMap<SocketAddr, Peer> = Default::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, peer)) = host.recv_from(&mut buf).await else { continue };
        let now = tokio::time::Instant::now();
        // Silent peers go: a stream of new source addresses cannot pile up sockets.
        peers.retain(|_, p| now.duration_since(p.seen) < UDP_IDLE);
        let upstream = match peers.get_mut(&peer) {
            Some(p) => {
                p.seen = now;
                p.socket.clone()
            }
            None => {
                let Some(s) = udp_upstream(&to, port).await else { continue };
                peers.insert(peer, Peer { socket: s.clone(), seen: now });
                tokio::spawn(udp_replies(s.clone(), host.clone(), peer));
                s
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// A socket connected to the container's port, made where `to` says.
async fn udp_upstream(to: &Upstream, port: u16) -> Option<Arc<tokio::net::UdpSocket>> {
    let bind_to = match to {
        Upstream::Address(_) => Ipv4Addr::UNSPECIFIED,
        Upstream::Loopback(_) => Ipv4Addr::LOCALHOST,
    };
    let (s, addr) = to
        .socket(port, move || {
            let s = std::net::UdpSocket::bind((bind_to, 0))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .ok()?;
    let s = tokio::net::UdpSocket::from_std(s).ok()?;
    s.connect(addr).await.ok()?;
    Some(Arc::new(s))
}

/// Sends the container's replies back to `peer` from the published port, until the peer
/// has been forgotten (its socket is then only this task's) and the container is silent.
async fn udp_replies(back: Arc<tokio::net::UdpSocket>, host: Arc<tokio::net::UdpSocket>, peer: SocketAddr) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(UDP_IDLE, back.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = host.send_to(&buf[..n], peer).await;
            }
            Ok(Err(_)) => return,
            Err(_) if Arc::strong_count(&back) == 1 => return,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn dockers_port_forms_parse() {
        let p = spec("8080:80");
        assert_eq!((p.host_ip, p.host_port, p.container_port, p.proto.as_str()), (None, Some(8080), 80, "tcp"));
        let p = spec("127.0.0.1:8080:80/udp");
        assert_eq!((p.host_ip, p.host_port, p.proto.as_str()), (Some("127.0.0.1".parse().unwrap()), Some(8080), "udp"));
        let p = spec("127.0.0.1::80");
        assert_eq!((p.host_port, p.container_port), (None, 80));
        assert_eq!(spec("80").host_port, None);
        assert_eq!(spec("[::1]:9000:90").host_ip, Some("::1".parse().unwrap()));
        for bad in ["", "0", "x:80", "80/sctp", "1.2.3:80:80", "8000-8010:80", "70000:80", "[::1:80:80"] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn publish_expands_dockers_port_ranges() {
        let pairs = |s: &str| {
            publish(s)
                .unwrap()
                .iter()
                .map(|p| (p.host_ip, p.host_port, p.container_port, p.proto.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs("8000-8001:80-81"),
            [(None, Some(8000), 80, "tcp".into()), (None, Some(8001), 81, "tcp".into())]
        );
        let lo = Some("127.0.0.1".parse().unwrap());
        assert_eq!(pairs("127.0.0.1::80-81/udp"), [(lo, None, 80, "udp".into()), (lo, None, 81, "udp".into())]);
        assert_eq!(pairs("90-91"), [(None, None, 90, "tcp".into()), (None, None, 91, "tcp".into())]);
        assert_eq!(pairs("127.0.0.1:8080:80"), [(lo, Some(8080), 80, "tcp".into())], "one port as before");
        for bad in ["8000-8010:80", "8000-8001:80-82", "81-80", "0-2", "x-y:80-81"] {
            assert!(publish(bad).is_err(), "{bad} taken");
        }
    }

    #[test]
    fn publish_all_takes_every_exposed_port_on_a_free_host_port() {
        let all = publish_all(&["80/tcp".into(), "53/udp".into()]).unwrap();
        assert_eq!(all.iter().map(|p| (p.host_port, p.container_port)).collect::<Vec<_>>(), [(None, 80), (None, 53)]);
        assert_eq!(all[1].proto, "udp");
    }

    #[test]
    fn expose_takes_dockers_ports_protocols_and_ranges() {
        assert_eq!(expose("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(expose("8000-8002/tcp").unwrap(), ["8000/tcp", "8001/tcp", "8002/tcp"]);
        for bad in ["", "0", "x", "90-80", "80/ftp", "1-70000"] {
            assert!(expose(bad).is_err(), "{bad} taken");
        }
        assert_eq!(publish_all(&["8080".into()]).unwrap()[0].proto, "tcp", "a bare EXPOSE port is tcp");
    }
}
