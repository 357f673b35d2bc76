//! The pull-through mirror against a real upstream: a berth registry with token auth on
//! 127.0.0.1 that counts the requests it answers, behind a flaky TCP proxy that passes bytes
//! both ways and, on command, answers 429, cuts a response after 1 MiB, trickles it, or never
//! answers, as an upstream across the internet does.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use registry::api::AppState;
use registry::auth::{Action, Auth, Grant, Mode, Realm};
use registry::mirror::{Mirror, MirrorConfig};
use serde_json::json;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to requests for `/v2/<something>` (the ping `/v2/` and `/token`
/// always pass).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    /// Answers `429 Too Many Requests` with `Retry-After: 7` itself and closes.
    TooMany,
    /// Closes both connections once 1 MiB of the response has passed.
    Cut,
    /// Passes the response on in 64 KiB pieces, 20 ms apart.
    Slow,
    /// Takes the request and never answers.
    Hang,
}

/// The proxy's switch and what it has passed on while trickling.
#[derive(Clone)]
struct Switch {
    fault: Arc<Mutex<Fault>>,
    /// Response bytes passed on in [`Fault::Slow`] since the fault was set.
    trickled: Arc<AtomicUsize>,
}

/// What the upstream counted: GETs with credentials by path, token requests, 401 answers.
#[derive(Clone, Default)]
struct Counts {
    gets: Arc<Mutex<HashMap<String, usize>>>,
    tokens: Arc<AtomicUsize>,
    unauthorized: Arc<AtomicUsize>,
}

/// The upstream as the mirror sees it: the proxy's address, its switch, the counts.
struct Upstream {
    addr: SocketAddr,
    switch: Switch,
    counts: Counts,
    _root: tempfile::TempDir,
}

impl Upstream {
    fn set(&self, f: Fault) {
        self.switch.trickled.store(0, Ordering::SeqCst);
        *self.switch.fault.lock().unwrap() = f;
    }

    /// GETs (past the token handshake) of paths ending in `path_end`.
    fn gets(&self, path_end: &str) -> usize {
        self.counts.gets.lock().unwrap().iter().filter(|(p, _)| p.ends_with(path_end)).map(|(_, n)| n).sum()
    }

    /// Bytes the proxy has trickled since [`Fault::Slow`] was set.
    fn trickled(&self) -> usize {
        self.switch.trickled.load(Ordering::SeqCst)
    }

    fn tokens(&self) -> usize {
        self.counts.tokens.load(Ordering::SeqCst)
    }

    fn unauthorized(&self) -> usize {
        self.counts.unauthorized.load(Ordering::SeqCst)
    }
}

async fn upstream() -> Upstream {
    upstream_with(upstream_auth()).await
}

/// The upstream's token auth: account `up` may pull and push everything.
fn upstream_auth() -> Auth {
    Auth::new(
        Mode::Token,
        HashMap::from([("up".to_owned(), bcrypt::hash("up-pass", 4).unwrap())]),
        vec![Grant { account: "up".into(), repository: "*".into(), actions: vec![Action::Pull, Action::Push] }],
        vec![],
        Realm::FromHost,
        "upstream".into(),
        false,
    )
}

/// A berth registry with `auth` that counts what it answers, behind a [`proxy`].
async fn upstream_with(auth: Auth) -> Upstream {
    let root = tempfile::tempdir().unwrap();
    let driver = Arc::new(registry::driver::FsDriver::new(root.path()).unwrap());
    let state = AppState {
        registry: registry::domain::Registry::new(driver),
        auth: Arc::new(auth),
        metrics: Arc::default(),
        read_only: false,
        delete_enabled: false,
        mirror: None,
    };
    let counts = Counts::default();
    let layer = {
        let counts = counts.clone();
        move |req: Request, next: Next| {
            let counts = counts.clone();
            async move { count(req, next, counts).await }
        }
    };
    let app = registry::api::app(state).layer(axum::middleware::from_fn(layer));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(registry::server::serve(listener, app, None, std::future::pending()));
    let switch = Switch { fault: Arc::new(Mutex::new(Fault::None)), trickled: Arc::default() };
    let addr = proxy(backend, switch.clone()).await;
    Upstream { addr, switch, counts, _root: root }
}

async fn count(req: Request, next: Next, counts: Counts) -> Response {
    let path = req.uri().path().to_owned();
    let fetch = req.method() == "GET" && (path.contains("/blobs/sha256:") || path.contains("/manifests/"));
    // A GET answered 401 is the token handshake's first leg, not a fetch.
    if fetch && req.headers().contains_key("authorization") {
        *counts.gets.lock().unwrap().entry(path.clone()).or_default() += 1;
    }
    if path == "/token" {
        counts.tokens.fetch_add(1, Ordering::SeqCst);
    }
    let r = next.run(req).await;
    if r.status() == 401 {
        counts.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
    r
}

/// The flaky TCP proxy: listens on a port of its own and forwards each connection to
/// `backend`, doing to each request what the switch says at the moment it arrives.
async fn proxy(backend: SocketAddr, switch: Switch) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let switch = switch.clone();
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(backend).await {
                    relay(client, server, switch).await;
                }
            });
        }
    });
    addr
}

/// Relays one connection until either side closes or a fault ends it.
async fn relay(client: TcpStream, server: TcpStream, switch: Switch) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // The fault of the request in flight, for the response direction: set by each request.
    let (mode_tx, mode_rx) = tokio::sync::watch::channel((Fault::None, 0u64));
    let requests = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut n_req = 0u64;
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let fault = if gated(&buf[..n]) { *switch.fault.lock().unwrap() } else { Fault::None };
            match fault {
                Fault::TooMany => return true,
                Fault::Hang => std::future::pending::<()>().await,
                _ => {}
            }
            n_req += 1;
            let _ = mode_tx.send((fault, n_req));
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return false;
            }
        }
    };
    let responses = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut seen = (Fault::None, 0u64);
        let mut passed = 0usize;
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = *mode_rx.borrow();
            if now != seen {
                (seen, passed) = (now, 0);
            }
            let chunk = &buf[..n];
            let ok = match seen.0 {
                Fault::Cut if passed + n > 1 << 20 => {
                    let _ = client_tx.write_all(&chunk[..(1 << 20) - passed]).await;
                    return;
                }
                Fault::Slow => trickle(&mut client_tx, chunk, &switch.trickled).await,
                _ => client_tx.write_all(chunk).await.is_ok(),
            };
            passed += n;
            if !ok {
                return;
            }
        }
    };
    // `requests` ends true when the proxy answers 429 itself.
    let too_many = tokio::select! { t = requests => t, () = responses => false };
    if too_many {
        let answer = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 9\r\n\
                      connection: close\r\n\r\nslow down";
        let _ = client_tx.write_all(answer.as_bytes()).await;
        let _ = client_tx.shutdown().await;
    }
}

/// Whether a chunk from the client starts a request for `/v2/<something>`: the requests
/// a fault applies to.
fn gated(chunk: &[u8]) -> bool {
    let line = chunk.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    matches!(method, b"GET" | b"HEAD") && path.starts_with(b"/v2/") && path != b"/v2/"
}

/// Writes `chunk` in 64 KiB pieces, 20 ms apart, counting them in `trickled`.
async fn trickle(to: &mut tokio::net::tcp::OwnedWriteHalf, chunk: &[u8], trickled: &AtomicUsize) -> bool {
    for piece in chunk.chunks(64 << 10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if to.write_all(piece).await.is_err() {
            return false;
        }
        trickled.fetch_add(piece.len(), Ordering::SeqCst);
    }
    true
}

/// A mirror of `up` under `hub/`, without auth of its own.
async fn mirror(up: &Upstream, tag_ttl: Duration, timeout: Duration) -> (SocketAddr, tempfile::TempDir) {
    let (addr, root, _) = mirror_and_registry(up, tag_ttl, timeout).await;
    (addr, root)
}

/// [`mirror`], with the registry under it (for garbage collection).
async fn mirror_and_registry(
    up: &Upstream,
    tag_ttl: Duration,
    timeout: Duration,
) -> (SocketAddr, tempfile::TempDir, registry::domain::Registry) {
    mirror_with_auth(up, tag_ttl, timeout, Auth::none()).await
}

/// [`mirror_and_registry`], with the mirror's own auth.
async fn mirror_with_auth(
    up: &Upstream,
    tag_ttl: Duration,
    timeout: Duration,
    auth: Auth,
) -> (SocketAddr, tempfile::TempDir, registry::domain::Registry) {
    let mut config = MirrorConfig::parse_flag(&format!("hub=http://{}", up.addr)).unwrap();
    config.username = Some("up".into());
    config.password = Some("up-pass".into());
    config.tag_ttl = tag_ttl;
    config.timeout = timeout;
    mirror_with_config(config, auth).await
}

/// A mirror of `config`'s upstream with its own `auth`, and the registry under it.
async fn mirror_with_config(
    config: MirrorConfig,
    auth: Auth,
) -> (SocketAddr, tempfile::TempDir, registry::domain::Registry) {
    let root = tempfile::tempdir().unwrap();
    let driver = Arc::new(registry::driver::FsDriver::new(root.path()).unwrap());
    let reg = registry::domain::Registry::new(driver);
    let m = Mirror::new(vec![config], reg.clone()).await.unwrap();
    let state = AppState {
        registry: reg.clone(),
        auth: Arc::new(auth),
        metrics: Arc::default(),
        read_only: false,
        delete_enabled: false,
        mirror: Some(Arc::new(m)),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(registry::server::serve(listener, registry::api::app(state), None, std::future::pending()));
    (addr, root, reg)
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// Pushes `library/app:<tag>` to the upstream (as account `up`, through its tokens) with a
/// layer of `layer_size` pseudo-random bytes; returns the layer and its digest.
async fn push_image(up: &Upstream, tag: &str, layer_size: usize) -> (Vec<u8>, String) {
    let mut layer = Vec::with_capacity(layer_size);
    // Seeded by the size and the tag: different tags get different layers.
    let seed = tag.bytes().fold(layer_size as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    while layer.len() < layer_size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        layer.extend_from_slice(&x.to_le_bytes());
    }
    layer.truncate(layer_size);
    let config =
        serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Env": [format!("TAG={tag}")]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]}}))
        .unwrap();
    let base = format!("http://{}", up.addr);
    let token = upstream_token(&base).await;
    for blob in [&layer, &config] {
        put_blob(&base, &token, blob).await;
    }
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len()}]});
    put_manifest(
        &base,
        &token,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await;
    let digest = sha(&layer);
    (layer, digest)
}

/// PUTs a manifest to the upstream's `library/app` as account `up`.
async fn put_manifest(base: &str, token: &str, reference: &str, media_type: &str, body: Vec<u8>) {
    let r = reqwest::Client::new()
        .put(format!("{base}/v2/library/app/manifests/{reference}"))
        .bearer_auth(token)
        .header("content-type", media_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn upstream_token(base: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{base}/token?service=upstream&scope=repository:library/app:pull,push"))
        .basic_auth("up", Some("up-pass"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn put_blob(base: &str, token: &str, blob: &[u8]) {
    let c = reqwest::Client::new();
    let r = c.post(format!("{base}/v2/library/app/blobs/uploads/")).bearer_auth(token).send().await.unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = if loc.starts_with('/') { format!("{base}{loc}") } else { loc };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r =
        c.put(format!("{loc}{sep}digest={}", sha(blob))).bearer_auth(token).body(blob.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

/// GETs a manifest (by tag) then its layer through the mirror: (status, layer bytes).
async fn pull(mirror: SocketAddr, tag: &str, layer: &str) -> (u16, Vec<u8>) {
    let c = reqwest::Client::new();
    let r = c
        .get(format!("http://{mirror}/v2/hub/library/app/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return (r.status().as_u16(), vec![]);
    }
    let r = c.get(format!("http://{mirror}/v2/hub/library/app/blobs/{layer}")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_pulls_cause_one_upstream_fetch_each() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 8 << 20).await;
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(10)).await;
    let pulls = (0..20).map(|_| pull(m, "1.0", &digest));
    for (status, body) in futures_util::future::join_all(pulls).await {
        assert_eq!(status, 200);
        assert!(body == layer, "every client gets the whole layer");
    }
    assert_eq!(up.gets("/manifests/1.0"), 1, "one manifest fetch");
    assert_eq!(up.gets(&format!("/blobs/{digest}")), 1, "one layer fetch for twenty clients");
    // Once stored, the upstream is not asked at all.
    up.set(Fault::Hang);
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_bytes_arrive_while_a_large_blob_is_still_filling() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "big", 4 << 20).await;
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(10)).await;
    let r = reqwest::Client::new()
        .get(format!("http://{m}/v2/hub/library/app/manifests/big"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    up.set(Fault::Slow);
    let r = reqwest::get(format!("http://{m}/v2/hub/library/app/blobs/{digest}")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(layer.len() as u64), "the size is known up front");
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert!(up.trickled() < layer.len(), "bytes reached the client while the upstream was still sending");
    let mut got = first.to_vec();
    while let Some(c) = body.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert!(got == layer);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_serves_what_is_stored_and_fails_fast_for_the_rest() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 1 << 20).await;
    push_image(&up, "2.0", 1000).await;
    let (m, _root) = mirror(&up, Duration::ZERO, Duration::from_secs(1)).await;
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer.clone()));
    up.set(Fault::TooMany);
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer.clone()), "a stale tag is served while the upstream refuses");
    let r = reqwest::get(format!("http://{m}/v2/hub/library/app/manifests/2.0")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7", "the upstream's Retry-After is passed on");
    up.set(Fault::Hang);
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer), "and while it hangs");
    let r = reqwest::get(format!("http://{m}/v2/hub/library/app/manifests/2.0")).await.unwrap();
    assert_eq!(r.status(), 503, "uncached content: UNAVAILABLE after the timeout, not a hang");
    assert!(String::from_utf8_lossy(&r.bytes().await.unwrap()).contains("UNAVAILABLE"));
    let metrics = reqwest::get(format!("http://{m}/metrics")).await.unwrap().text().await.unwrap();
    let stale = metrics.lines().find(|l| l.starts_with("berth_mirror_stale_total")).unwrap();
    assert!(stale.ends_with(" 2"), "{stale}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_deleted_upstream_stops_resolving_once_its_ttl_has_passed() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 1000).await;
    let (m, _root) = mirror(&up, Duration::ZERO, Duration::from_secs(1)).await;
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer));
    // Deleted upstream (its tag directory removed from the upstream's storage).
    let tag = registry::paths::tag_dir("library/app", "1.0");
    std::fs::remove_dir_all(up._root.path().join(&tag[1..])).unwrap();
    for _ in 0..2 {
        let r = reqwest::get(format!("http://{m}/v2/hub/library/app/manifests/1.0")).await.unwrap();
        assert_eq!(r.status(), 404, "a tag the upstream deleted is not served stale");
        let body = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
        assert!(body.contains("MANIFEST_UNKNOWN"), "{body}");
    }
    let tags = reqwest::get(format!("http://{m}/v2/hub/library/app/tags/list")).await.unwrap().text().await.unwrap();
    assert!(!tags.contains("1.0"), "the tag is dropped from the mirror too: {tags}");
    // An outage is still not a deletion: a stored tag is served while the upstream hangs.
    let (layer, digest) = push_image(&up, "2.0", 1000).await;
    assert_eq!(pull(m, "2.0", &digest).await, (200, layer.clone()));
    up.set(Fault::Hang);
    assert_eq!(pull(m, "2.0", &digest).await, (200, layer));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_wants_credentials_the_mirror_lacks_is_named_with_the_mirrors_setting() {
    let up = upstream().await;
    push_image(&up, "1.0", 1000).await;
    let config = MirrorConfig::parse_flag(&format!("hub=http://{}", up.addr)).unwrap();
    let (m, _root, _) = mirror_with_config(config, Auth::none()).await;
    let r = reqwest::get(format!("http://{m}/v2/hub/library/app/manifests/1.0")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("UNAUTHORIZED") && body.contains("[[mirror]] entry"), "{body}");
    assert!(!body.contains("berth login"), "a CLI's advice from a server: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stream_is_never_stored_and_the_next_pull_fetches_again() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 4 << 20).await;
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(5)).await;
    up.set(Fault::Cut);
    let (status, body) = pull(m, "1.0", &digest).await;
    assert!(status != 200 || body != layer, "a cut stream never reaches a client whole");
    up.set(Fault::None);
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer.clone()));
    assert_eq!(up.gets(&format!("/blobs/{digest}")), 2, "the cut fill stored nothing; the next one fetched again");
    up.set(Fault::Hang);
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer), "the good copy is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_work_beside_mirrored_content_and_not_into_it() {
    let up = upstream().await;
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(5)).await;
    let c = reqwest::Client::new();
    let r = c.post(format!("http://{m}/v2/team/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202, "a private repository beside the mirror takes pushes");
    let r = c.post(format!("http://{m}/v2/hub/library/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(String::from_utf8_lossy(&r.bytes().await.unwrap()).contains("DENIED"));
    let missing = reqwest::get(format!("http://{m}/v2/hub/library/nothing/manifests/1")).await.unwrap();
    assert_eq!(missing.status(), 404, "what the upstream lacks is unknown here too");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_is_stored_first_and_its_children_come_when_asked() {
    let up = upstream().await;
    let base = format!("http://{}", up.addr);
    let token = upstream_token(&base).await;
    let mut children = vec![];
    for arch in ["amd64", "arm64"] {
        let config = serde_json::to_vec(
            &json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
        )
        .unwrap();
        put_blob(&base, &token, &config).await;
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": []})).unwrap();
        put_manifest(&base, &token, &sha(&m), "application/vnd.oci.image.manifest.v1+json", m.clone()).await;
        children.push((sha(&m), m.len(), arch));
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children.iter().map(|(d, s, a)| json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": s, "platform": {"os": "linux", "architecture": a}})).collect::<Vec<_>>()});
    put_manifest(
        &base,
        &token,
        "multi",
        "application/vnd.oci.image.index.v1+json",
        serde_json::to_vec(&index).unwrap(),
    )
    .await;
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(5)).await;
    let get = |reference: String| {
        reqwest::Client::new()
            .get(format!("http://{m}/v2/hub/library/app/manifests/{reference}"))
            .header("accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
            .send()
    };
    let r = get("multi".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    let (arm, _, _) = &children[1];
    assert_eq!(up.gets(&format!("/manifests/{arm}")), 0, "no child is fetched with the index");
    assert_eq!(get(arm.clone()).await.unwrap().status(), 200, "a child comes when a client asks for it");
    assert_eq!(up.gets(&format!("/manifests/{arm}")), 1);
    assert_eq!(up.gets(&format!("/manifests/{}", children[0].0)), 0, "and only that one");
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_keeps_mirrored_manifests_and_evicts_the_least_recently_pulled_over_the_limit() {
    use registry::gc::{collect_with, GcOptions, MirrorScope, DEFAULT_UPLOAD_AGE};
    let up = upstream().await;
    let (a_layer, a) = push_image(&up, "old", 2 << 20).await;
    let (b_layer, b) = push_image(&up, "newer", 2 << 20).await;
    let (m, _root, reg) = mirror_and_registry(&up, Duration::from_secs(300), Duration::from_secs(5)).await;
    assert_eq!(pull(m, "old", &a).await, (200, a_layer));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pull(m, "newer", &b).await, (200, b_layer.clone()));
    let gc = |max_size: Option<u64>| GcOptions {
        dry_run: false,
        grace: Duration::ZERO,
        upload_age: DEFAULT_UPLOAD_AGE,
        mirrored: vec![MirrorScope { prefix: Some("hub".into()), max_size }],
    };
    // A client has its bytes before the fill's commit ends: wait for both layers to be stored.
    let name: registry::domain::RepoName = "hub/library/app".parse().unwrap();
    for d in [&a, &b] {
        let d: oci::Digest = d.parse().unwrap();
        while reg.blob_size(&name, &d).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let kept = collect_with(&reg, gc(None)).await.unwrap();
    assert!(kept.manifests.is_empty() && kept.blobs.is_empty(), "mirrored content is not garbage: {kept:?}");
    let capped = collect_with(&reg, gc(Some(3 << 20))).await.unwrap();
    assert_eq!(capped.evicted.len(), 1, "one image over 3 MiB: {capped:?}");
    assert_eq!(capped.evicted[0].0, "hub/library/app");
    let blobs: Vec<String> = capped.blobs.iter().map(ToString::to_string).collect();
    assert!(blobs.contains(&a) && !blobs.contains(&b), "the least recently pulled went: {blobs:?}");
    assert_eq!(pull(m, "newer", &b).await, (200, b_layer), "the other stays");
    assert_eq!(up.gets(&format!("/blobs/{a}")), 1);
    pull(m, "old", &a).await;
    assert_eq!(up.gets(&format!("/blobs/{a}")), 2, "an evicted image is fetched again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_of_a_missing_blob_is_served_from_storage_once_filled() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 1 << 20).await;
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(5)).await;
    assert_eq!(pull(m, "1.0", "sha256:0000000000000000000000000000000000000000000000000000000000000000").await.0, 404);
    let r = reqwest::Client::new()
        .get(format!("http://{m}/v2/hub/library/app/blobs/{digest}"))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == layer[1000..2000]);
    assert_eq!(up.gets(&format!("/blobs/{digest}")), 1);
}

/// The mirror's own auth: anonymous may pull `hub/*`, account `me` (password `pw`) may pull
/// and push everything.
fn anonymous_pulls_of_hub() -> Auth {
    let users = HashMap::from([("me".to_owned(), bcrypt::hash("pw", 4).unwrap())]);
    let grants = vec![
        Grant { account: "anonymous".into(), repository: "hub/*".into(), actions: vec![Action::Pull] },
        Grant { account: "me".into(), repository: "*".into(), actions: vec![Action::Pull, Action::Push] },
    ];
    Auth::new(Mode::Htpasswd, users, grants, vec![], Realm::FromHost, "mirror".into(), false)
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_reads_can_be_opened_for_the_mirrored_prefix_alone() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 1000).await;
    let auth = anonymous_pulls_of_hub();
    let (m, _root, _) = mirror_with_auth(&up, Duration::from_secs(300), Duration::from_secs(5), auth).await;
    assert_eq!(pull(m, "1.0", &digest).await, (200, layer), "anonymous pulls of mirrored content");
    let private = reqwest::get(format!("http://{m}/v2/team/app/tags/list")).await.unwrap();
    assert_eq!(private.status(), 401, "private repositories still need an account");
    let push =
        reqwest::Client::new().post(format!("http://{m}/v2/hub/library/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(push.status(), 401, "and anonymous may not push");
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_while_a_blob_is_filling_leaves_the_fill_whole() {
    use registry::gc::{collect_with, GcOptions, DEFAULT_UPLOAD_AGE};
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 2 << 20).await;
    let (m, _root, reg) = mirror_and_registry(&up, Duration::from_secs(300), Duration::from_secs(10)).await;
    let r = reqwest::Client::new()
        .get(format!("http://{m}/v2/hub/library/app/manifests/1.0"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    up.set(Fault::Slow);
    let r = reqwest::get(format!("http://{m}/v2/hub/library/app/blobs/{digest}")).await.unwrap();
    let mut body = r.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    assert!(up.trickled() < layer.len(), "the fill is still running");
    // Not even a mirror scope or a grace period: the fill's bytes are an upload session.
    let opts = GcOptions { dry_run: false, grace: Duration::ZERO, upload_age: DEFAULT_UPLOAD_AGE, mirrored: vec![] };
    let report = collect_with(&reg, opts).await.unwrap();
    assert!(report.uploads.is_empty(), "the fill's session is not purged: {report:?}");
    while let Some(c) = body.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert!(got == layer);
    up.set(Fault::Hang);
    let name: registry::domain::RepoName = "hub/library/app".parse().unwrap();
    let d: oci::Digest = digest.parse().unwrap();
    while reg.blob_size(&name, &d).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = reqwest::get(format!("http://{m}/v2/hub/library/app/blobs/{digest}")).await.unwrap();
    assert!(again.bytes().await.unwrap() == layer, "the committed blob is whole, from storage");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tokens_are_kept_until_near_expiry_and_renewed_before_they_lapse() {
    let up = upstream_with(upstream_auth().with_token_ttl(Duration::from_secs(4))).await;
    let mut images = vec![];
    for tag in ["a", "b", "c"] {
        images.push(push_image(&up, tag, 1000).await);
    }
    let (m, _root) = mirror(&up, Duration::from_secs(300), Duration::from_secs(5)).await;
    let (tokens, refused) = (up.tokens(), up.unauthorized());
    assert_eq!(pull(m, "a", &images[0].1).await, (200, images[0].0.clone()));
    let first = up.tokens() - tokens;
    assert!(first >= 1, "the first pull asks for a token");
    let refused = up.unauthorized() - refused;
    assert_eq!(pull(m, "b", &images[1].1).await, (200, images[1].0.clone()));
    assert_eq!(up.tokens() - tokens, first, "a live token is reused, not asked for again");
    // Renewed a quarter of its 4 s life early: after 3.5 s the mirror asks for a new one
    // before its request, so the upstream never sees the old one lapse.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (tokens, before) = (up.tokens(), up.unauthorized());
    assert_eq!(pull(m, "c", &images[2].1).await, (200, images[2].0.clone()));
    assert!(up.tokens() > tokens, "an expiring token is renewed");
    assert_eq!(up.unauthorized(), before, "before use, not after a 401 (the first pull took {refused})");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_blob_is_never_served_through_a_mirrored_name_and_a_shared_one_is_linked_without_a_fetch() {
    let up = upstream().await;
    let (layer, digest) = push_image(&up, "1.0", 1000).await;
    let auth = anonymous_pulls_of_hub();
    let (m, _root, reg) = mirror_with_auth(&up, Duration::from_secs(300), Duration::from_secs(5), auth).await;
    // A team's private blob, and a copy of the upstream's layer pushed by the team.
    let secret = b"DB_PASSWORD=hunter2".to_vec();
    let team: registry::domain::RepoName = "team/secret".parse().unwrap();
    for blob in [&secret, &layer] {
        let stream: registry::domain::BodyStream =
            Box::pin(futures_util::stream::once(std::future::ready(Ok(bytes::Bytes::from(blob.clone())))));
        reg.put_blob(&team, &oci::Digest::of(blob), stream).await.unwrap();
    }
    let through_hub = |d: String| async move {
        let r = reqwest::get(format!("http://{m}/v2/hub/library/any/blobs/{d}")).await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    };
    let (status, body) = through_hub(oci::Digest::of(&secret).to_string()).await;
    assert_ne!(status, 200, "anonymous read a private blob through the mirror: {}", String::from_utf8_lossy(&body));
    up.set(Fault::Hang);
    let (status, _) = through_hub(oci::Digest::of(&secret).to_string()).await;
    assert_ne!(status, 200, "nor while the upstream cannot answer");
    up.set(Fault::None);
    // The upstream has the layer under library/app: linked from storage, its body not fetched.
    let r = reqwest::get(format!("http://{m}/v2/hub/library/app/blobs/{digest}")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == layer);
    assert_eq!(up.gets(&format!("/blobs/{digest}")), 0, "the upstream only confirmed it has the blob");
}
