//! The web UI, end to end: a registry on 127.0.0.1 with htpasswd accounts, content pushed
//! through the API, and pages read by plain HTTP (policy, CSRF, escaping) and by headless
//! Chromium over WebDriver (browsing, actions, keyboard, contrast, phone width, screenshots).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod browser;
mod http;
mod webdriver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use registry::api::AppState;
use registry::auth::{Action, Auth, Grant, Mode, Realm};
use registry::ui::UiConfig;
use serde_json::{json, Value};

/// A registry serving the API and the UI; stops on drop.
struct Server {
    addr: SocketAddr,
    _root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// How a test registry runs.
struct Setup {
    mode: Mode,
    read_only: bool,
    /// `--delete-enabled`: the UI's delete actions exist only with it.
    delete_enabled: bool,
    tls: bool,
    /// Extra grants beside admin (everything) and viewer (pull everything).
    grants: Vec<Grant>,
    ui: Option<UiConfig>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            mode: Mode::Htpasswd,
            read_only: false,
            delete_enabled: true,
            tls: false,
            grants: vec![],
            ui: Some(UiConfig { gc_grace: Duration::ZERO, ..UiConfig::default() }),
        }
    }
}

const ADMIN: (&str, &str) = ("admin", "admin-pass");
const VIEWER: (&str, &str) = ("viewer", "viewer-pass");

fn grant(account: &str, repository: &str, actions: &[Action]) -> Grant {
    Grant { account: account.into(), repository: repository.into(), actions: actions.to_vec() }
}

/// Starts a registry on a fresh directory.
async fn serve(setup: Setup) -> Server {
    let root = tempfile::tempdir().unwrap();
    let driver = Arc::new(registry::driver::FsDriver::new(root.path()).unwrap());
    let users: HashMap<String, String> =
        [ADMIN, VIEWER].iter().map(|(u, p)| (u.to_string(), bcrypt::hash(p, 4).unwrap())).collect();
    let mut grants =
        vec![grant(ADMIN.0, "*", &[Action::Pull, Action::Push, Action::Delete]), grant(VIEWER.0, "*", &[Action::Pull])];
    grants.extend(setup.grants);
    let auth = Auth::new(setup.mode, users, grants, vec![], Realm::FromHost, "berth-registry".into(), setup.tls);
    let state = AppState {
        registry: registry::domain::Registry::new(driver),
        auth: Arc::new(auth),
        metrics: Arc::default(),
        read_only: false,
        delete_enabled: false,
        mirror: None,
    };
    seed(&state).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = registry::api::app_full(
        AppState { read_only: setup.read_only, delete_enabled: setup.delete_enabled, ..state },
        true,
        setup.ui,
    );
    tokio::spawn(registry::server::serve(listener, app, None, async move {
        let _ = stopped.await;
    }));
    Server { addr, _root: root, stop: Some(stop) }
}

/// Pushes the fixtures through a writable API over the same storage (the server under test
/// may be read-only).
async fn seed(state: &AppState) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(registry::server::serve(
        l,
        registry::api::app(AppState { auth: Arc::new(Auth::none()), read_only: false, ..state.clone() }),
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    push_fixtures(&format!("http://{addr}")).await;
    let _ = stop.send(());
}

/// An HTTP client that does not follow redirects (tests look at them).
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn push_blob(base: &str, repo: &str, bytes: &[u8]) -> (String, usize) {
    let c = client();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)));
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).basic_auth(ADMIN.0, Some(ADMIN.1)).send().await.unwrap();
    assert_eq!(r.status(), 202, "start upload");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let loc = if loc.starts_with('/') { format!("{base}{loc}") } else { loc };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "finish upload");
    (digest, bytes.len())
}

async fn push_manifest(base: &str, repo: &str, reference: &str, manifest: &Value) -> (String, usize) {
    let body = serde_json::to_vec(manifest).unwrap();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)));
    let reference = if reference.is_empty() { digest.clone() } else { reference.to_owned() };
    let r = client()
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .basic_auth(ADMIN.0, Some(ADMIN.1))
        .header("content-type", manifest["mediaType"].as_str().unwrap())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "push manifest {repo}:{reference}: {}", r.text().await.unwrap());
    (digest, body.len())
}

/// Pushes an image whose config says `arch` and carries `labels`; returns its manifest.
async fn push_image(base: &str, repo: &str, arch: &str, labels: Value) -> Value {
    let (l1, s1) = push_blob(base, repo, format!("base layer of {repo}").as_bytes()).await;
    let (l2, s2) = push_blob(base, repo, format!("app layer of {repo} {arch}").as_bytes()).await;
    let config = json!({
        "created": "2026-11-01T10:00:00Z", "architecture": arch, "os": "linux",
        "config": {
            "Entrypoint": ["/bin/web"], "Cmd": ["--port", "8080"], "Env": ["PATH=/usr/bin", "MODE=prod"],
            "ExposedPorts": {"8080/tcp": {}}, "Labels": labels, "User": "app", "WorkingDir": "/srv"
        },
        "rootfs": {"type": "layers", "diff_ids": [l1, l2]},
        "history": [
            {"created": "2026-11-01T09:00:00Z", "created_by": "ADD rootfs.tar /"},
            {"created": "2026-11-01T09:30:00Z", "created_by": "ENV MODE=prod", "empty_layer": true},
            {"created": "2026-11-01T10:00:00Z", "created_by": "COPY web /bin/web"}
        ]
    });
    let (c, cs) = push_blob(base, repo, &serde_json::to_vec(&config).unwrap()).await;
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": cs},
        "layers": [{"mediaType": gz, "digest": l1, "size": s1}, {"mediaType": gz, "digest": l2, "size": s2}]
    })
}

/// What every test finds in the registry: `app/web` (tags 1.0, latest, old; an SBOM refers
/// to 1.0), `app/multi:1` (an index of amd64 and arm64), `lib/one`, `lib/two`.
async fn push_fixtures(base: &str) {
    let web = push_image(base, "app/web", "amd64", json!({"org.example.team": "web"})).await;
    let (web_digest, web_size) = push_manifest(base, "app/web", "1.0", &web).await;
    push_manifest(base, "app/web", "latest", &web).await;
    let old = push_image(base, "app/web", "amd64", json!({"org.example.team": "web", "release": "old"})).await;
    push_manifest(base, "app/web", "old", &old).await;
    let (sbom, sbom_size) = push_blob(base, "app/web", br#"{"spdxVersion":"SPDX-2.3"}"#).await;
    let (empty, _) = push_blob(base, "app/web", b"{}").await;
    let referrer = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sbom, "size": sbom_size}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": web_digest, "size": web_size},
        "annotations": {"org.opencontainers.image.created": "2026-11-02T08:00:00Z"}
    });
    push_manifest(base, "app/web", "", &referrer).await;
    let mut children = vec![];
    for arch in ["amd64", "arm64"] {
        let m = push_image(base, "app/multi", arch, json!({})).await;
        let (d, s) = push_manifest(base, "app/multi", "", &m).await;
        children.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": s,
                             "platform": {"os": "linux", "architecture": arch}}));
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children});
    push_manifest(base, "app/multi", "1", &index).await;
    for repo in ["lib/one", "lib/two"] {
        let m = push_image(base, repo, "amd64", json!({})).await;
        push_manifest(base, repo, "latest", &m).await;
    }
}

/// Whether the browser tests must run (CI) or may skip where Chromium is missing.
fn strict() -> bool {
    std::env::var("BERTH_TEST_STRICT").is_ok_and(|v| v == "1")
}
