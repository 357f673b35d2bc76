//! The few rtnetlink requests the bridge network makes (the bridge once; per container a
//! veth pair, links up, an address, a default route, a bridge port), written directly: two
//! `ip` processes cost more than the rest of a container's start.
//!
//! A [`Socket`] acts in the network namespace of the thread that opened it.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR: usize = 16;
const IFINFO: usize = 16;

/// A NETLINK_ROUTE socket.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// A request being built: the header, a fixed part, then attributes (nested ones by
/// [`Msg::nest`]/[`Msg::end`]).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

impl Msg {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDR];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        let flags = flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16;
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align(buf.len()), 0);
        Msg { buf, nests: Vec::new() }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    fn nest(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.attr(kind, &[])
    }

    fn end(&mut self) -> &mut Msg {
        let at = self.nests.pop().expect("end matches a nest");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// `struct ifinfomsg` for link `index`, setting `flags` among `change`.
fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; IFINFO] {
    let mut m = [0u8; IFINFO];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

fn name_attr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

impl Socket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: 0 })
    }

    /// Sends `msg` and waits for the kernel's acknowledgement; its error, if any.
    fn request(&mut self, mut msg: Msg, what: &str) -> io::Result<()> {
        self.seq += 1;
        let len = msg.buf.len() as u32;
        msg.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // SAFETY: sending our own buffer of the length given.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.buf.as_ptr().cast(), msg.buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 4096];
        loop {
            // SAFETY: receiving into our own buffer of the length given.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            let mut at = 0;
            while at + NLMSG_HDR + 4 <= n {
                let len = u32::from_ne_bytes(reply[at..at + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(reply[at + 8..at + 12].try_into().expect("4 bytes"));
                if kind == libc::NLMSG_ERROR as u16 && seq == self.seq {
                    let code = i32::from_ne_bytes(reply[at + 16..at + 20].try_into().expect("4 bytes"));
                    return match code {
                        0 => Ok(()),
                        e => {
                            let e = io::Error::from_raw_os_error(-e);
                            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
                        }
                    };
                }
                if len < NLMSG_HDR {
                    break;
                }
                at += align(len);
            }
        }
    }

    /// Sets link `index` up.
    pub fn link_up(&mut self, index: i32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        self.request(Msg::new(libc::RTM_NEWLINK, 0, &ifinfo(index, up, up)), "set a link up")
    }

    /// Makes a link `name` of `kind` (`bridge`) with no peer.
    pub fn add_link(&mut self, name: &str, kind: &str) -> io::Result<()> {
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msg = Msg::new(libc::RTM_NEWLINK, flags, &ifinfo(0, 0, 0));
        msg.attr(libc::IFLA_IFNAME, &name_attr(name));
        msg.nest(libc::IFLA_LINKINFO).attr(libc::IFLA_INFO_KIND, &name_attr(kind)).end();
        self.request(msg, "make a link")
    }

    /// Removes link `index` (a network's bridge, at `berth network rm`).
    pub fn del_link(&mut self, index: i32) -> io::Result<()> {
        self.request(Msg::new(libc::RTM_DELLINK, 0, &ifinfo(index, 0, 0)), "remove a link")
    }

    /// Makes a veth pair: `name` here, `peer` in the namespace `peer_ns`.
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_ns: &OwnedFd) -> io::Result<()> {
        const VETH_INFO_PEER: u16 = 1;
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msg = Msg::new(libc::RTM_NEWLINK, flags, &ifinfo(0, 0, 0));
        msg.attr(libc::IFLA_IFNAME, &name_attr(name));
        msg.nest(libc::IFLA_LINKINFO).attr(libc::IFLA_INFO_KIND, b"veth\0");
        msg.nest(libc::IFLA_INFO_DATA).nest(VETH_INFO_PEER);
        // The peer's own ifinfomsg comes first inside VETH_INFO_PEER, then its attributes.
        msg.buf.extend_from_slice(&ifinfo(0, 0, 0));
        msg.attr(libc::IFLA_IFNAME, &name_attr(peer));
        msg.attr(libc::IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes());
        msg.end().end().end();
        self.request(msg, "make a veth pair")
    }

    /// Adds `ip/prefix` to link `index`.
    pub fn add_address(&mut self, index: i32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msg = Msg::new(libc::RTM_NEWADDR, flags, &fixed);
        msg.attr(libc::IFA_LOCAL, &ip.octets()).attr(libc::IFA_ADDRESS, &ip.octets());
        self.request(msg, "add an address")
    }

    /// Adds the default route through `gateway` on link `index`.
    pub fn add_default_route(&mut self, index: i32, gateway: Ipv4Addr) -> io::Result<()> {
        let fixed = [
            libc::AF_INET as u8,
            0, // dst_len: the default route
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let flags = (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let mut msg = Msg::new(libc::RTM_NEWROUTE, flags, &fixed);
        msg.attr(libc::RTA_GATEWAY, &gateway.octets()).attr(libc::RTA_OIF, &(index as u32).to_ne_bytes());
        self.request(msg, "add the default route")
    }

    /// Makes link `index` a port of the bridge `master` and sets it up.
    pub fn set_master_up(&mut self, index: i32, master: i32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let mut msg = Msg::new(libc::RTM_NEWLINK, 0, &ifinfo(index, up, up));
        msg.attr(libc::IFLA_MASTER, &(master as u32).to_ne_bytes());
        self.request(msg, "add a bridge port")
    }
}

/// The index of link `name` in the calling thread's network namespace.
pub fn index(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(io::ErrorKind::NotFound, format!("no network link {name}"))),
        i => Ok(i as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut m = Msg::new(libc::RTM_NEWLINK, 0, &ifinfo(0, 0, 0));
        m.nest(libc::IFLA_LINKINFO).attr(libc::IFLA_INFO_KIND, b"veth\0").end();
        // header 16 + ifinfomsg 16, then the nest: 4 + (4 + 5 -> 12) = 16 bytes.
        assert_eq!(m.buf.len(), 48);
        assert_eq!(u16::from_ne_bytes([m.buf[32], m.buf[33]]), 16, "the nest's length covers its attribute");
        assert_eq!(&m.buf[40..45], b"veth\0");
    }
}
