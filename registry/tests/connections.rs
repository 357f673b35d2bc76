//! The server's connection limits against clients that hold connections open: idle, half a
//! request line, headers without end or trickled forever, a stalled body, an idle keep-alive,
//! a stalled TLS handshake, a client that never reads its response, and more clients than the
//! cap. Each server runs with timeouts of about a second; "closed" is checked against a
//! generous bound, never against how fast it happened.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use registry::api::{app, AppState};
use registry::auth::Auth;
use registry::domain::Registry;
use registry::driver::MemoryDriver;
use registry::server::{serve_with_limits, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// How long a connection the server should close may stay open before the test fails.
const BOUND: Duration = Duration::from_secs(30);

/// A timeout that a test does not want to fire.
const LONG: Duration = Duration::from_secs(600);

fn limits(header_read: Duration, body_idle: Duration, keep_alive: Duration) -> Limits {
    Limits {
        header_read_timeout: header_read,
        body_idle_timeout: body_idle,
        keep_alive_timeout: keep_alive,
        tls_handshake_timeout: Duration::from_secs(1),
        max_connections: 1024,
    }
}

async fn start(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState {
        registry: Registry::new(Arc::new(MemoryDriver::new())),
        auth: Arc::new(Auth::none()),
        metrics: Arc::default(),
        read_only: false,
        delete_enabled: false,
        mirror: None,
    };
    tokio::spawn(async move {
        serve_with_limits(listener, app(state), tls, limits, std::future::pending()).await.unwrap();
    });
    addr
}

async fn connect(addr: SocketAddr, first: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(first).await.unwrap();
    s
}

/// Reads until the server closes the connection (end of stream or reset); fails the test if
/// it is still open after [`BOUND`]. Returns what was read.
async fn closed_by_server(s: &mut (impl AsyncRead + Unpin), what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    };
    assert!(tokio::time::timeout(BOUND, read_all).await.is_ok(), "{what}: still open after {BOUND:?}");
    got
}

/// Reads one response with a Content-Length body; returns its status code.
async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> u16 {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad head: {head}"));
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    let mut rest = buf.len() - head_end;
    while rest < length {
        let mut chunk = vec![0u8; length - rest];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the middle of a response body");
        rest += n;
    }
    status
}

const GET_V2: &[u8] = b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_request_heads_are_closed() {
    let addr = start(limits(Duration::from_secs(1), LONG, LONG), None).await;
    let cases: [(&str, &[u8]); 4] = [
        ("a connection that sends nothing", b""),
        ("half a request line", b"GET /v2/ HT"),
        ("headers without end", b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nX-Slow: 1\r\n"),
        ("headers trickled a byte at a time", b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n"),
    ];
    let mut conns = Vec::new();
    for (what, first) in cases {
        conns.push((what, connect(addr, first).await));
    }
    // The last client keeps sending header bytes, never the blank line: progress is not enough.
    let (read, mut write) = conns.pop().unwrap().1.into_split();
    let trickle = tokio::spawn(async move {
        while write.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut trickled = read;
    let checks = conns.iter_mut().map(|(what, s)| closed_by_server(s, what));
    join_all(checks).await;
    closed_by_server(&mut trickled, "headers trickled a byte at a time").await;
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_reused() {
    let addr = start(limits(LONG, LONG, Duration::from_secs(1)), None).await;
    let mut s = connect(addr, GET_V2).await;
    assert_eq!(read_response(&mut s).await, 200);
    // Kept alive: a second request at once is served on the same connection.
    s.write_all(GET_V2).await.unwrap();
    assert_eq!(read_response(&mut s).await, 200);
    closed_by_server(&mut s, "an idle keep-alive connection").await;
}

fn upload_head(data: &[u8]) -> String {
    let digest = oci::Digest::of(data);
    format!(
        "POST /v2/conn/test/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: registry.test\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_and_a_slow_moving_one_completes() {
    let idle = Duration::from_secs(2);
    let addr = start(limits(idle, idle, idle), None).await;

    let data = vec![7u8; 100];
    let mut stalled = connect(addr, upload_head(&data).as_bytes()).await;
    stalled.write_all(&data[..10]).await.unwrap();

    // Six pieces a third of the idle timeout apart: twice as long as any single timeout.
    let data: Vec<u8> = (0..6u8).flat_map(|i| [i; 1000]).collect();
    let mut slow = connect(addr, upload_head(&data).as_bytes()).await;
    for piece in data.chunks(1000) {
        tokio::time::sleep(idle / 3).await;
        slow.write_all(piece).await.unwrap();
    }
    assert_eq!(read_response(&mut slow).await, 201, "a slow but moving upload must be stored");

    let answer = closed_by_server(&mut stalled, "a stalled body").await;
    assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 201"), "a stalled upload was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_response_is_cut() {
    let addr = start(limits(LONG, Duration::from_secs(1), LONG), None).await;
    // Bigger than the loopback socket buffers of both ends (at most 32 MiB + 4 MiB here).
    let data = vec![1u8; 64 << 20];
    let digest = oci::Digest::of(&data);
    let mut push = connect(addr, upload_head(&data).as_bytes()).await;
    push.write_all(&data).await.unwrap();
    assert_eq!(read_response(&mut push).await, 201);

    let get = format!("GET /v2/conn/test/blobs/{digest} HTTP/1.1\r\nHost: registry.test\r\n\r\n");
    let mut s = connect(addr, get.as_bytes()).await;
    // Take nothing for a few idle timeouts, then read what is left.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = closed_by_server(&mut s, "a client that reads no response").await;
    assert!(got.len() < data.len(), "the whole blob was sent to a client that stopped reading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_request_succeeds_while_500_slow_clients_are_connected() {
    let addr = start(limits(Duration::from_secs(3), LONG, LONG), None).await;
    let mut slow = Vec::new();
    for _ in 0..500 {
        slow.push(connect(addr, b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n").await);
    }
    let mut s = connect(addr, GET_V2).await;
    assert_eq!(tokio::time::timeout(BOUND, read_response(&mut s)).await, Ok(200));
    join_all(slow.iter_mut().map(|s| closed_by_server(s, "one of 500 slow clients"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_frees_slots_as_connections_close() {
    let mut cfg = limits(LONG, LONG, LONG);
    cfg.max_connections = 4;
    let addr = start(cfg, None).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect(addr, GET_V2).await;
        assert_eq!(read_response(&mut s).await, 200);
        held.push(s);
    }
    let mut extra = Vec::new();
    for _ in 0..2 {
        extra.push(connect(addr, GET_V2).await);
    }
    for s in &mut extra {
        let answered = tokio::time::timeout(Duration::from_secs(1), read_response(s)).await;
        assert!(answered.is_err(), "a connection over the cap of 4 was served");
    }
    held.truncate(2);
    for s in &mut extra {
        assert_eq!(tokio::time::timeout(BOUND, read_response(s)).await, Ok(200), "freed slots are not reused");
    }
}

/// A self-signed certificate for 127.0.0.1 made by openssl, as (cert, key) paths.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(o) if o.status.success() => Some((cert, key)),
        Ok(o) => panic!("openssl req failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            assert!(std::env::var("BERTH_TEST_STRICT").is_err(), "openssl is needed (BERTH_TEST_STRICT=1): {e}");
            eprintln!("skipping: no openssl to make a test certificate: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_and_a_real_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else { return };
    let tls = registry::server::tls_config(&cert, &key).unwrap();
    let second = Duration::from_secs(1);
    let addr = start(limits(second, LONG, second), Some(tls)).await;

    let mut silent = connect(addr, b"").await;
    let mut half_hello = connect(addr, b"\x16\x03\x01\x02\x00\x01").await;

    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_file(&cert).unwrap();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = connector.connect(name, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    s.write_all(GET_V2).await.unwrap();
    assert_eq!(read_response(&mut s).await, 200);

    closed_by_server(&mut silent, "a TLS client that sends nothing").await;
    closed_by_server(&mut half_hello, "half a TLS ClientHello").await;
    closed_by_server(&mut s, "an idle TLS connection").await;
}
