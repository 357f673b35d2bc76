//! The embedded DNS resolver of user-defined networks, berth's equivalent of docker's
//! 127.0.0.11: containers on such a network find each other by name.
//!
//! A query for a name the network knows (a running container's name) is answered here with
//! its IPv4 address; any other query is passed unchanged to the host's name servers and
//! their reply relayed back. The sockets are bound by the caller, typically to
//! 127.0.0.11:53 inside the container's network namespace, while the forwarding sockets are
//! made by [`serve`]'s own threads, so forwarding happens from the namespace of the calling
//! process (the host's, where even a loopback resolver such as 127.0.0.53 is reachable).
//!
//! Everything parsed here comes from a container and is untrusted: the parser bounds-checks
//! every read and answers what it can't make sense of with FORMERR, or drops it.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What a network's resolver knows: the addresses a name has, and the name an address has.
pub trait Names: Send + Sync {
    /// The addresses of the running containers that have `name` (lowercase, without the
    /// trailing dot); empty if none has it, which sends the query upstream.
    fn addresses(&self, name: &str) -> Vec<Ipv4Addr>;
    /// The name of the running container at `ip`, for a reverse (PTR) query.
    fn name_of(&self, ip: Ipv4Addr) -> Option<String>;
}

/// A lookup function is a [`Names`] of one address per name and no reverse names.
impl<F: Fn(&str) -> Option<Ipv4Addr> + Send + Sync> Names for F {
    fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
        self(name).into_iter().collect()
    }
    fn name_of(&self, _ip: Ipv4Addr) -> Option<String> {
        None
    }
}

/// The names a resolver serves, shared by its threads.
pub type Lookup = Arc<dyn Names>;

/// What to do with one query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back (a complete DNS response message).
    Answer(Vec<u8>),
    /// Not a name of ours: pass the query as it is to the upstream name servers.
    Forward,
    /// Too malformed to answer (shorter than a header, or a response rather than a query): drop it.
    Drop,
}

/// The size of a DNS message header.
const HEADER_LEN: usize = 12;
/// The longest a name may be on the wire, length bytes and final zero included (RFC 1035).
const MAX_NAME_LEN: usize = 255;
/// The longest a label may be; length bytes above it are compression pointers or reserved.
const MAX_LABEL_LEN: usize = 63;
/// Header flag: this message is a response.
const FLAG_QR: u16 = 0x8000;
/// Header flags: the opcode's four bits.
const OPCODE_MASK: u16 = 0x7800;
/// Header flag: recursion desired (copied from the query).
const FLAG_RD: u16 = 0x0100;
/// Header flag: recursion available (we forward, so we offer it).
const FLAG_RA: u16 = 0x0080;
/// Response code: the query was answered.
const RCODE_NOERROR: u16 = 0;
/// Response code: the query is malformed.
const RCODE_FORMERR: u16 = 1;
/// Response code: the server failed (here: the upstreams did not answer).
const RCODE_SERVFAIL: u16 = 2;
/// Response code: the opcode is not implemented.
const RCODE_NOTIMP: u16 = 4;
/// Record type A (an IPv4 address).
const TYPE_A: u16 = 1;
/// Query type ANY.
const TYPE_ANY: u16 = 255;
/// A reverse lookup's record type.
const TYPE_PTR: u16 = 12;
/// Class IN (the Internet), the only class answered locally.
const CLASS_IN: u16 = 1;
/// TTL of local answers, in seconds (docker's).
const TTL: u32 = 600;
/// The port of the upstream name servers.
const DNS_PORT: u16 = 53;
/// The receive buffer of the UDP server.
const UDP_BUFFER: usize = 4096;
/// How long one upstream has to answer a forwarded UDP query.
const UDP_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to one upstream over TCP may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read from (or write to) an upstream over TCP may take.
const TCP_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client's TCP connection may sit idle before it is closed.
const TCP_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most UDP forwards in flight at once; beyond it queries get SERVFAIL at once.
const MAX_UDP_FORWARDS: usize = 64;
/// The most TCP connections served at once; beyond it new ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;
/// How long to pause after a transient socket error, so a repeating one can't spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The fields of a message header that replies need.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// The query's id, echoed in the reply.
    id: u16,
    /// The query's flags (opcode and RD are copied into the reply).
    flags: u16,
    /// The number of questions.
    qdcount: u16,
}

/// The one question of a query.
#[derive(Debug)]
struct Question<'a> {
    /// The question section exactly as received (name, type, class), echoed in replies.
    section: &'a [u8],
    /// The name lowercased without the trailing dot, or None if it has characters no
    /// container name can have (it is then not ours to answer).
    name: Option<String>,
    /// The query type.
    qtype: u16,
    /// The query class.
    qclass: u16,
}

/// Reads a big-endian u16 at `at`, if the message is long enough.
fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    let bytes = msg.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Parses the header, or None if the message is shorter than one.
fn parse_header(msg: &[u8]) -> Option<Header> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    Some(Header { id: u16_at(msg, 0)?, flags: u16_at(msg, 2)?, qdcount: u16_at(msg, 4)? })
}

/// Whether a label byte can be part of a container name (docker's names and aliases).
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// Parses an uncompressed name starting at `start`: the name as [`Question::name`] has it,
/// and the offset just past it; None if it is malformed (a pointer, a reserved label type,
/// truncated, or too long).
fn parse_name(msg: &[u8], start: usize) -> Option<(Option<String>, usize)> {
    let mut pos = start;
    let mut name = String::new();
    let mut plain = true;
    loop {
        let len = usize::from(*msg.get(pos)?);
        if len == 0 {
            return Some((plain.then_some(name), pos + 1));
        }
        if len > MAX_LABEL_LEN {
            return None;
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        pos += 1 + len;
        if pos - start + 1 > MAX_NAME_LEN {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        plain &= label.iter().all(|&b| is_name_byte(b));
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
}

/// Parses the question that follows the header; None if it is malformed.
fn parse_question(msg: &[u8]) -> Option<Question<'_>> {
    let (name, end) = parse_name(msg, HEADER_LEN)?;
    let qtype = u16_at(msg, end)?;
    let qclass = u16_at(msg, end + 2)?;
    Some(Question { section: msg.get(HEADER_LEN..end + 4)?, name, qtype, qclass })
}

/// What an answer holds: A records, or one PTR record.
enum Records {
    /// The addresses of the question's name (none: an empty answer).
    A(Vec<Ipv4Addr>),
    /// The name of the question's address.
    Ptr(String),
}

/// Builds a response to a query with `header`: the question echoed if given, and its
/// answer records if given.
fn response(header: Header, rcode: u16, question: Option<&[u8]>, records: Option<&Records>) -> Vec<u8> {
    let flags = FLAG_QR | (header.flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | (rcode & 0xF);
    let qdcount = u16::from(question.is_some());
    let records = question.and(records);
    let ancount = match records {
        Some(Records::A(ips)) => ips.len() as u16,
        Some(Records::Ptr(_)) => 1,
        None => 0,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + question.map_or(0, <[u8]>::len) + 16);
    for field in [header.id, flags, qdcount, ancount, 0, 0] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    let Some(section) = question else { return out };
    out.extend_from_slice(section);
    // Each record's owner name points back at the question's name, at offset 12.
    let mut record = |kind: u16, data: &[u8]| {
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    };
    match records {
        Some(Records::A(ips)) => ips.iter().for_each(|ip| record(TYPE_A, &ip.octets())),
        Some(Records::Ptr(name)) => record(TYPE_PTR, &encode_name(name)),
        None => {}
    }
    out
}

/// `name` in DNS wire form (labels, then the root), labels cut at 63 bytes.
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(MAX_LABEL_LEN)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// The address a reverse-lookup name stands for (`4.3.2.1.in-addr.arpa` is 1.2.3.4).
fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let digits = name.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = digits.split('.').map(|d| d.parse().ok()).collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// Decides the reply to one DNS query message.
pub fn respond(query: &[u8], names: &dyn Names) -> Reply {
    let Some(header) = parse_header(query) else { return Reply::Drop };
    if header.flags & FLAG_QR != 0 {
        return Reply::Drop;
    }
    let question = if header.qdcount == 1 { parse_question(query) } else { None };
    let section = question.as_ref().map(|q| q.section);
    if header.flags & OPCODE_MASK != 0 {
        return Reply::Answer(response(header, RCODE_NOTIMP, section, None));
    }
    let Some(question) = question else {
        return Reply::Answer(response(header, RCODE_FORMERR, None, None));
    };
    if question.qclass != CLASS_IN {
        return Reply::Forward;
    }
    let Some(name) = question.name.as_deref().filter(|name| !name.is_empty()) else { return Reply::Forward };
    if question.qtype == TYPE_PTR {
        return match reverse_address(name).and_then(|ip| names.name_of(ip)) {
            Some(owner) => {
                Reply::Answer(response(header, RCODE_NOERROR, Some(question.section), Some(&Records::Ptr(owner))))
            }
            None => Reply::Forward,
        };
    }
    let mut ips = names.addresses(name);
    if ips.is_empty() {
        return Reply::Forward;
    }
    // Several containers with one name or alias: all of them, in a rotating order (docker's
    // round robin).
    let turn = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let len = ips.len();
    ips.rotate_left(turn as usize % len);
    let records = Records::A(if matches!(question.qtype, TYPE_A | TYPE_ANY) { ips } else { Vec::new() });
    Reply::Answer(response(header, RCODE_NOERROR, Some(question.section), Some(&records)))
}

/// A SERVFAIL response to `query` (same id and question), for a forward that failed; None if the query can't be parsed.
///
/// "Parsed" here means having a header: a query whose question is malformed gets a
/// SERVFAIL without one (QDCOUNT 0).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let header = parse_header(query)?;
    let question = if header.qdcount == 1 { parse_question(query) } else { None };
    Some(response(header, RCODE_SERVFAIL, question.map(|q| q.section), None))
}

/// The name servers of a resolv.conf text (`nameserver` lines, IPv4 or IPv6, port 53), in order, loopback ones included (the resolver forwards from the host's network namespace, where 127.0.0.53 is reachable).
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf.lines().filter_map(nameserver).collect()
}

/// The address of one resolv.conf line if it is a `nameserver` line with a valid address.
fn nameserver(line: &str) -> Option<SocketAddr> {
    let line = line.split(['#', ';']).next().unwrap_or_default();
    let mut words = line.split_whitespace();
    if words.next() != Some("nameserver") {
        return None;
    }
    let address = words.next()?;
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (ip, zone) = address.split_once('%')?;
    let ip = ip.parse::<Ipv6Addr>().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope_id(zone))))
}

/// The scope id of an IPv6 zone: a number as it is, an interface's name as its index, 0
/// (no zone) if it is neither.
fn scope_id(zone: &str) -> u32 {
    if let Ok(id) = zone.parse::<u32>() {
        return id;
    }
    let Ok(name) = CString::new(zone) else { return 0 };
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// What the server threads share.
struct Server {
    /// Looks names up.
    lookup: Lookup,
    /// Where other names are forwarded, in order.
    upstreams: Vec<SocketAddr>,
    /// UDP forwards in flight.
    udp_forwards: Arc<AtomicUsize>,
    /// TCP connections being served.
    tcp_connections: Arc<AtomicUsize>,
}

/// One of a capped number of slots (a forward in flight, a connection), freed when dropped.
struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// Takes a slot of `counter` if fewer than `cap` are taken.
    fn acquire(counter: &Arc<AtomicUsize>, cap: usize) -> Option<Permit> {
        counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).ok()?;
        Some(Permit(Arc::clone(counter)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves DNS on `udp` and `tcp` (both already bound, typically to 127.0.0.11:53 inside a container's network namespace) on threads of its own that run for the rest of the process: names `lookup` knows are answered, others are forwarded to `upstreams` (from sockets the calling process makes, i.e. in its own network namespace).
pub fn serve(udp: UdpSocket, tcp: TcpListener, lookup: Lookup, upstreams: Vec<SocketAddr>) -> io::Result<()> {
    udp.set_nonblocking(false)?;
    udp.set_read_timeout(None)?;
    tcp.set_nonblocking(false)?;
    let server = Arc::new(Server {
        lookup,
        upstreams,
        udp_forwards: Arc::new(AtomicUsize::new(0)),
        tcp_connections: Arc::new(AtomicUsize::new(0)),
    });
    let udp_server = Arc::clone(&server);
    thread::Builder::new().name("dns-udp".into()).spawn(move || serve_udp(Arc::new(udp), udp_server))?;
    thread::Builder::new().name("dns-tcp".into()).spawn(move || serve_tcp(tcp, server))?;
    Ok(())
}

/// Whether a socket error means the socket itself is unusable, so its thread should end.
fn is_fatal(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT))
}

/// Pauses after a transient error other than an interruption.
fn pause_after(error: &io::Error) {
    if error.kind() != io::ErrorKind::Interrupted {
        thread::sleep(ERROR_PAUSE);
    }
}

/// The UDP server's loop: receives queries and answers or forwards each.
fn serve_udp(socket: Arc<UdpSocket>, server: Arc<Server>) {
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((len, client)) => handle_udp(&socket, &server, &buffer[..len], client),
            Err(error) if is_fatal(&error) => return,
            Err(error) => pause_after(&error),
        }
    }
}

/// Answers one UDP query, or starts its forward.
fn handle_udp(socket: &Arc<UdpSocket>, server: &Arc<Server>, query: &[u8], client: SocketAddr) {
    match respond(query, &*server.lookup) {
        Reply::Answer(reply) => {
            let _ = socket.send_to(&reply, client);
        }
        Reply::Drop => {}
        Reply::Forward => {
            if !start_udp_forward(socket, server, query, client) {
                if let Some(reply) = servfail(query) {
                    let _ = socket.send_to(&reply, client);
                }
            }
        }
    }
}

/// Forwards a UDP query on a thread of its own, which relays the reply; false if too many
/// forwards are in flight or no thread could be made.
fn start_udp_forward(socket: &Arc<UdpSocket>, server: &Arc<Server>, query: &[u8], client: SocketAddr) -> bool {
    let Some(permit) = Permit::acquire(&server.udp_forwards, MAX_UDP_FORWARDS) else { return false };
    let (socket, server, query) = (Arc::clone(socket), Arc::clone(server), query.to_vec());
    let forward = move || {
        let _permit = permit;
        let reply = forward_udp(&query, &server.upstreams).or_else(|| servfail(&query));
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, client);
        }
    };
    thread::Builder::new().name("dns-forward".into()).spawn(forward).is_ok()
}

/// The first reply of the upstreams to `query` over UDP, asking each in turn.
fn forward_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    upstreams.iter().find_map(|&upstream| ask_udp(query, upstream).ok())
}

/// An unspecified address of `upstream`'s family, to bind a socket that reaches it.
fn any_address_for(upstream: SocketAddr) -> SocketAddr {
    match upstream {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    }
}

/// Whether `reply` is a full message with the id of `query`.
fn answers(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= HEADER_LEN && query.len() >= 2 && reply[..2] == query[..2]
}

/// Asks one upstream over UDP: its reply with the query's id, within the timeout.
fn ask_udp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(any_address_for(upstream))?;
    socket.connect(upstream)?;
    socket.send(query)?;
    let deadline = Instant::now() + UDP_UPSTREAM_TIMEOUT;
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buffer) {
            Ok(len) if answers(&buffer[..len], query) => {
                buffer.truncate(len);
                return Ok(buffer);
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// The TCP server's loop: accepts connections and serves each on a thread of its own.
fn serve_tcp(listener: TcpListener, server: Arc<Server>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => start_connection(stream, &server),
            Err(error) if is_fatal(&error) => return,
            Err(error) => pause_after(&error),
        }
    }
}

/// Serves one TCP connection on a thread of its own, or closes it if too many are served.
fn start_connection(stream: TcpStream, server: &Arc<Server>) {
    let Some(permit) = Permit::acquire(&server.tcp_connections, MAX_TCP_CONNECTIONS) else { return };
    let server = Arc::clone(server);
    let connection = move || {
        let _permit = permit;
        serve_connection(stream, &server);
    };
    // If no thread can be made the closure, and so the stream, is dropped: the connection closes.
    let _ = thread::Builder::new().name("dns-tcp-client".into()).spawn(connection);
}

/// Answers the queries of one TCP connection until it closes, fails, or idles too long.
fn serve_connection(mut stream: TcpStream, server: &Server) {
    if stream.set_read_timeout(Some(TCP_CLIENT_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(TCP_CLIENT_TIMEOUT)).is_err()
    {
        return;
    }
    while let Ok(query) = read_frame(&mut stream) {
        let reply = match respond(&query, &*server.lookup) {
            Reply::Answer(reply) => Some(reply),
            Reply::Drop => None,
            Reply::Forward => forward_tcp(&query, &server.upstreams).or_else(|| servfail(&query)),
        };
        if let Some(reply) = reply {
            if write_frame(&mut stream, &reply).is_err() {
                return;
            }
        }
    }
}

/// Reads one message framed by its 2-byte big-endian length.
fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message)?;
    Ok(message)
}

/// Writes one message framed by its 2-byte big-endian length, in one write.
fn write_frame(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let length = u16::try_from(message.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut frame = Vec::with_capacity(message.len() + 2);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(message);
    stream.write_all(&frame)
}

/// The first reply of the upstreams to `query` over TCP, asking each in turn.
fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    upstreams.iter().find_map(|&upstream| ask_tcp(query, upstream).ok())
}

/// Asks one upstream over TCP: its reply, if it has the query's id.
fn ask_tcp(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&upstream, TCP_CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(TCP_UPSTREAM_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_UPSTREAM_TIMEOUT))?;
    write_frame(&mut stream, query)?;
    let reply = read_frame(&mut stream)?;
    if !answers(&reply, query) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "upstream reply has another id"));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 5);
    const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const TYPE_AAAA: u16 = 28;
    const CLASS_CH: u16 = 3;
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

    fn db_only(name: &str) -> Option<Ipv4Addr> {
        (name == "db" || name == "web.example.com").then_some(DB)
    }

    /// A query for `name` (dotted, trailing dot optional) with one question of class IN.
    fn query(name: &str, id: u16, qtype: u16, rd: bool) -> Vec<u8> {
        query_class(name, id, qtype, CLASS_IN, rd)
    }

    fn query_class(name: &str, id: u16, qtype: u16, qclass: u16, rd: bool) -> Vec<u8> {
        let flags: u16 = if rd { FLAG_RD } else { 0 };
        let mut out = Vec::new();
        for field in [id, flags, 1, 0, 0, 0] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&qclass.to_be_bytes());
        out
    }

    fn answer(reply: Reply) -> Vec<u8> {
        match reply {
            Reply::Answer(bytes) => bytes,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn field(msg: &[u8], at: usize) -> u16 {
        u16_at(msg, at).unwrap()
    }

    fn rcode(msg: &[u8]) -> u16 {
        field(msg, 2) & 0xF
    }

    /// The address of a reply's single A record (the last 4 bytes), checking the counts.
    fn only_address(reply: &[u8]) -> Ipv4Addr {
        assert_eq!(rcode(reply), RCODE_NOERROR, "{reply:?}");
        assert_eq!(field(reply, 6), 1, "ANCOUNT: {reply:?}");
        let tail: [u8; 4] = reply[reply.len() - 4..].try_into().unwrap();
        Ipv4Addr::from(tail)
    }

    #[test]
    fn a_known_name_gets_an_a_record_in_any_case_with_or_without_the_trailing_dot() {
        for name in ["DB", "Db.", "web.Example.COM."] {
            let q = query(name, 0xBEEF, TYPE_A, true);
            let reply = answer(respond(&q, &db_only));
            assert_eq!(&reply[..2], &[0xBE, 0xEF], "id");
            let flags = field(&reply, 2);
            assert_eq!(flags & FLAG_QR, FLAG_QR, "QR");
            assert_eq!(flags & FLAG_RD, FLAG_RD, "RD copied");
            assert_eq!(flags & FLAG_RA, FLAG_RA, "RA");
            assert_eq!(flags & 0x0400, 0, "AA clear");
            assert_eq!(rcode(&reply), RCODE_NOERROR);
            assert_eq!([field(&reply, 4), field(&reply, 6), field(&reply, 8), field(&reply, 10)], [1, 1, 0, 0]);
            let question_end = q.len();
            assert_eq!(&reply[HEADER_LEN..question_end], &q[HEADER_LEN..], "question echoed");
            let record = &reply[question_end..];
            assert_eq!(&record[..6], &[0xC0, 12, 0, 1, 0, 1], "pointer, type A, class IN");
            assert_eq!(u32::from_be_bytes(record[6..10].try_into().unwrap()), 600, "TTL");
            assert_eq!(&record[10..], &[0, 4, 10, 90, 0, 5], "rdlength and address");
        }
    }

    #[test]
    fn any_for_a_known_name_is_answered_with_its_a_record() {
        let reply = answer(respond(&query("db", 1, TYPE_ANY, false), &db_only));
        assert_eq!(only_address(&reply), DB);
        assert_eq!(field(&reply, 2) & FLAG_RD, 0, "RD not set when the query had none");
    }

    #[test]
    fn aaaa_for_a_known_name_is_answered_with_no_records() {
        let q = query("db", 7, TYPE_AAAA, true);
        let reply = answer(respond(&q, &db_only));
        assert_eq!(rcode(&reply), RCODE_NOERROR);
        assert_eq!(field(&reply, 6), 0, "ANCOUNT");
        assert_eq!(&reply[HEADER_LEN..], &q[HEADER_LEN..], "just the question");
    }

    #[test]
    fn unknown_names_other_classes_and_odd_names_are_forwarded() {
        assert_eq!(respond(&query("example.com", 1, TYPE_A, true), &db_only), Reply::Forward);
        assert_eq!(respond(&query_class("db", 1, TYPE_A, CLASS_CH, true), &db_only), Reply::Forward);
        assert_eq!(respond(&query("", 1, TYPE_A, true), &|_: &str| Some(DB)), Reply::Forward, "the root");
        assert_eq!(respond(&query("d*b", 1, TYPE_A, true), &|_: &str| Some(DB)), Reply::Forward);
    }

    #[test]
    fn the_lookup_gets_the_name_lowercased_without_the_trailing_dot() {
        let seen = std::sync::Mutex::new(Vec::new());
        let lookup = |name: &str| {
            seen.lock().unwrap().push(name.to_owned());
            None
        };
        respond(&query("Web.Example.COM.", 1, TYPE_A, true), &lookup);
        assert_eq!(*seen.lock().unwrap(), ["web.example.com"]);
    }

    /// Two replicas behind one alias, and reverse names for their addresses.
    struct Replicas;

    impl Names for Replicas {
        fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
            match name {
                "svc" => vec![Ipv4Addr::new(10, 92, 0, 2), Ipv4Addr::new(10, 92, 0, 3)],
                _ => Vec::new(),
            }
        }
        fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
            (ip == Ipv4Addr::new(10, 92, 0, 2)).then(|| "r1.ci".to_owned())
        }
    }

    #[test]
    fn a_name_several_containers_have_gets_all_their_addresses() {
        let reply = answer(respond(&query("svc", 7, TYPE_A, true), &Replicas));
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 2, "ANCOUNT");
        let mut got: Vec<[u8; 4]> = Vec::new();
        let end = reply.len();
        for at in [end - 16 - 4, end - 4] {
            got.push(reply[at..at + 4].try_into().unwrap());
        }
        got.sort();
        assert_eq!(got, [[10, 92, 0, 2], [10, 92, 0, 3]]);
    }

    #[test]
    fn reverse_lookups_of_the_networks_addresses_are_answered_here() {
        let reply = answer(respond(&query("2.0.92.10.in-addr.arpa", 9, TYPE_PTR, true), &Replicas));
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1, "ANCOUNT");
        assert!(reply.ends_with(b"\x02r1\x02ci\x00"), "{reply:?}");
        // An address of no container here goes upstream; a malformed one too.
        assert_eq!(respond(&query("3.0.92.10.in-addr.arpa", 9, TYPE_PTR, true), &Replicas), Reply::Forward);
        assert_eq!(respond(&query("300.0.92.10.in-addr.arpa", 9, TYPE_PTR, true), &Replicas), Reply::Forward);
        assert_eq!(reverse_address("4.3.2.1.in-addr.arpa"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(reverse_address("3.2.1.in-addr.arpa"), None);
    }

    #[test]
    fn messages_shorter_than_a_header_and_responses_are_dropped() {
        assert_eq!(respond(&[0x12, 0x34, 0, 0, 1], &db_only), Reply::Drop);
        let mut response = query("db", 1, TYPE_A, true);
        response[2] |= 0x80;
        assert_eq!(respond(&response, &db_only), Reply::Drop);
    }

    fn assert_error(q: &[u8], expected: u16, with_question: bool) {
        let reply = answer(respond(q, &db_only));
        assert_eq!(&reply[..2], &q[..2], "id kept");
        assert_eq!(rcode(&reply), expected);
        assert_eq!(field(&reply, 2) & (FLAG_QR | FLAG_RA), FLAG_QR | FLAG_RA);
        assert_eq!(field(&reply, 4), u16::from(with_question), "QDCOUNT");
        assert_eq!([field(&reply, 6), field(&reply, 8), field(&reply, 10)], [0, 0, 0]);
    }

    #[test]
    fn malformed_questions_get_formerr() {
        let valid = query("db", 0x4242, TYPE_A, true);
        assert_error(&valid[..15], RCODE_FORMERR, false);
        assert_error(&valid[..valid.len() - 1], RCODE_FORMERR, false);
        let mut pointer = valid[..HEADER_LEN].to_vec();
        pointer.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_error(&pointer, RCODE_FORMERR, false);
        let mut reserved = valid.clone();
        reserved[HEADER_LEN] = 0x42;
        assert_error(&reserved, RCODE_FORMERR, false);
        let mut two = valid.clone();
        two[5] = 2;
        assert_error(&two, RCODE_FORMERR, false);
        let mut none = valid[..HEADER_LEN].to_vec();
        none[5] = 0;
        assert_error(&none, RCODE_FORMERR, false);
    }

    #[test]
    fn names_longer_than_255_bytes_get_formerr() {
        let label = "a".repeat(63);
        let fits = [label.as_str(); 3].join(".") + "." + &"b".repeat(61);
        assert_eq!(respond(&query(&fits, 1, TYPE_A, true), &db_only), Reply::Forward, "255 bytes fit");
        let too_long = [label.as_str(); 3].join(".") + "." + &"b".repeat(62);
        assert_error(&query(&too_long, 1, TYPE_A, true), RCODE_FORMERR, false);
    }

    #[test]
    fn other_opcodes_get_notimp() {
        let mut status = query("db", 9, TYPE_A, true);
        status[2] |= 2 << 3;
        assert_error(&status, RCODE_NOTIMP, true);
        let reply = answer(respond(&status, &db_only));
        assert_eq!(field(&reply, 2) & OPCODE_MASK, 2 << 11, "opcode copied");
    }

    #[test]
    fn an_edns_opt_record_is_ignored_and_not_echoed() {
        let mut q = query("db", 3, TYPE_A, true);
        q[11] = 1;
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let reply = answer(respond(&q, &db_only));
        assert_eq!(only_address(&reply), DB);
        assert_eq!(field(&reply, 10), 0, "ARCOUNT");
    }

    #[test]
    fn servfail_keeps_the_id_and_question() {
        let q = query("example.com", 0x0102, TYPE_A, true);
        let reply = servfail(&q).unwrap();
        assert_eq!(&reply[..2], &[1, 2]);
        assert_eq!(rcode(&reply), RCODE_SERVFAIL);
        assert_eq!(field(&reply, 4), 1);
        assert_eq!(&reply[HEADER_LEN..], &q[HEADER_LEN..]);
        assert_eq!(servfail(&q[..5]), None);
        assert_eq!(field(&servfail(&q[..14]).unwrap(), 4), 0, "no question when it is malformed");
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser() {
        let anything = |_: &str| Some(DB);
        let valid = query("web.example.com", 0xABCD, TYPE_A, true);
        for end in 0..=valid.len() {
            let _ = respond(&valid[..end], &anything);
            let _ = servfail(&valid[..end]);
        }
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for round in 0..600 {
            let mut bytes = if round % 2 == 0 {
                let len = (xorshift(&mut state) % 64) as usize;
                (0..len).map(|_| xorshift(&mut state) as u8).collect::<Vec<u8>>()
            } else {
                valid.clone()
            };
            for _ in 0..4 {
                if !bytes.is_empty() {
                    let at = (xorshift(&mut state) as usize) % bytes.len();
                    bytes[at] = xorshift(&mut state) as u8;
                }
            }
            bytes.iter_mut().skip(2).take(1).for_each(|b| *b &= 0x7F);
            let _ = respond(&bytes, &anything);
            let _ = servfail(&bytes);
        }
    }

    #[test]
    fn upstreams_are_the_name_servers_in_order_with_port_53() {
        let conf = "# generated\nsearch example.com\nnameserver 127.0.0.53\n  nameserver\t10.0.0.2 # main\n\
                    ; nameserver 10.9.9.9\nnameserver ::1\nnameserver not-an-address\nnameserver\n\
                    nameserver fe80::1%eth-no-such-zone\nnameserver fe80::2%3\noptions edns0\n";
        let found = upstreams(conf);
        let expected: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap(),
            "[fe80::2%3]:53".parse().unwrap(),
        ];
        assert_eq!(found, expected);
        let zoned = upstreams("nameserver fe80::1%eth0\n");
        assert_eq!(zoned.len(), 1);
        assert_eq!(zoned[0].ip(), "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(zoned[0].port(), 53);
    }

    #[test]
    fn permits_are_capped_and_freed_when_dropped() {
        let counter = Arc::new(AtomicUsize::new(0));
        let held: Vec<Permit> = (0..3).map_while(|_| Permit::acquire(&counter, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(Permit::acquire(&counter, 3).is_none());
        drop(held);
        assert!(Permit::acquire(&counter, 3).is_some());
    }

    /// Answers any query with an A record of 192.0.2.7.
    fn upstream_reply(q: &[u8]) -> Option<Vec<u8>> {
        match respond(q, &|_: &str| Some(UPSTREAM_ANSWER)) {
            Reply::Answer(reply) => Some(reply),
            _ => None,
        }
    }

    fn fake_udp_upstream() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok((len, client)) = socket.recv_from(&mut buffer) {
                if let Some(reply) = upstream_reply(&buffer[..len]) {
                    let _ = socket.send_to(&reply, client);
                }
            }
        });
        address
    }

    fn fake_tcp_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                while let Ok(q) = read_frame(&mut stream) {
                    let Some(reply) = upstream_reply(&q) else { break };
                    if write_frame(&mut stream, &reply).is_err() {
                        break;
                    }
                }
            }
        });
        address
    }

    /// An address on 127.0.0.1 where nothing listens (on UDP and TCP).
    fn closed_port() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        let listener = TcpListener::bind(address);
        drop(listener);
        address
    }

    /// Starts a server on ephemeral ports of 127.0.0.1: its UDP and TCP addresses.
    fn start_server(upstreams: Vec<SocketAddr>) -> (SocketAddr, SocketAddr) {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addresses = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        serve(udp, tcp, Arc::new(db_only), upstreams).unwrap();
        addresses
    }

    fn ask_over_udp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        socket.send_to(q, server).unwrap();
        let mut buffer = [0u8; 4096];
        let len = socket.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..2], &q[..2], "id");
        buffer[..len].to_vec()
    }

    fn connect(server: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&server, CLIENT_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream
    }

    fn ask_over_tcp(stream: &mut TcpStream, q: &[u8]) -> Vec<u8> {
        write_frame(stream, q).unwrap();
        let reply = read_frame(stream).unwrap();
        assert_eq!(&reply[..2], &q[..2], "id");
        reply
    }

    #[test]
    fn serve_answers_local_names_and_forwards_others_over_udp() {
        let (udp, _) = start_server(vec![closed_port(), fake_udp_upstream()]);
        let local = ask_over_udp(udp, &query("db", 11, TYPE_A, true));
        assert_eq!(only_address(&local), DB);
        let forwarded = ask_over_udp(udp, &query("example.test", 12, TYPE_A, true));
        assert_eq!(only_address(&forwarded), UPSTREAM_ANSWER);
    }

    #[test]
    fn serve_answers_local_names_and_forwards_others_over_tcp() {
        let (_, tcp) = start_server(vec![closed_port(), fake_tcp_upstream()]);
        let mut stream = connect(tcp);
        let local = ask_over_tcp(&mut stream, &query("db", 21, TYPE_A, true));
        assert_eq!(only_address(&local), DB);
        let forwarded = ask_over_tcp(&mut stream, &query("example.test", 22, TYPE_A, true));
        assert_eq!(only_address(&forwarded), UPSTREAM_ANSWER);
    }

    #[test]
    fn serve_answers_servfail_when_there_is_no_upstream() {
        let (udp, tcp) = start_server(Vec::new());
        let q = query("example.test", 31, TYPE_A, true);
        assert_eq!(rcode(&ask_over_udp(udp, &q)), RCODE_SERVFAIL);
        assert_eq!(rcode(&ask_over_tcp(&mut connect(tcp), &q)), RCODE_SERVFAIL);
    }
}
