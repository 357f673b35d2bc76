//! A tiny in-process client for the router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use registry::api::{app, AppState};
use registry::auth::Auth;
use registry::domain::Registry;
use registry::driver::{MemoryDriver, StorageDriver};
use tower::ServiceExt;

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first error code of a spec error body.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }
}

#[derive(Clone)]
pub struct Client {
    pub state: AppState,
    pub auth_header: Option<String>,
}

/// A registry's state as `berth registry serve` makes it by default: deletes off.
pub fn state_with(driver: Arc<dyn StorageDriver>, auth: Auth, read_only: bool) -> AppState {
    AppState {
        registry: Registry::new(driver),
        auth: Arc::new(auth),
        metrics: Arc::default(),
        read_only,
        delete_enabled: false,
        mirror: None,
    }
}

impl Client {
    pub fn new() -> Self {
        Self::over(Arc::new(MemoryDriver::new()))
    }

    pub fn over(driver: Arc<dyn StorageDriver>) -> Self {
        Client { state: state_with(driver, Auth::none(), false), auth_header: None }
    }

    /// The same client of a registry serving deletes (`--delete-enabled`).
    pub fn deleting(mut self) -> Self {
        self.state.delete_enabled = true;
        self
    }

    /// A client of a registry that accepts sparse manifests (`allow_sparse = true`).
    pub fn sparse() -> Self {
        let mut c = Self::new();
        c.state.registry = c.state.registry.clone().allow_sparse(true);
        c
    }

    pub async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Resp {
        let mut req = Request::builder().method(method).uri(uri).header("host", "registry.test");
        if let Some(a) = &self.auth_header {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app(self.state.clone()).oneshot(req.body(body.into()).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
        Resp { status, headers, body }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    /// Pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = oci::Digest::of(data).to_string();
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[("content-type", "application/octet-stream")],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        d
    }

    /// Pushes a config and one layer and an image manifest under `tag`; returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> String {
        let manifest = self.image_manifest(repo, layer, None).await;
        self.push_manifest(repo, tag, &manifest).await
    }

    /// Pushes the blobs of a one-layer image and returns its manifest bytes (not pushed).
    pub async fn image_manifest(&self, repo: &str, layer: &[u8], subject: Option<(&str, usize)>) -> Vec<u8> {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = self.push_blob(repo, config).await;
        let ld = self.push_blob(repo, layer).await;
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::media::OCI_MANIFEST,
            "config": {"mediaType": oci::media::OCI_CONFIG, "digest": cd, "size": config.len()},
            "layers": [{"mediaType": oci::media::OCI_LAYER_GZIP, "digest": ld, "size": layer.len()}],
        });
        if let Some((d, size)) = subject {
            m["subject"] = serde_json::json!({"mediaType": oci::media::OCI_MANIFEST, "digest": d, "size": size});
        }
        serde_json::to_vec(&m).unwrap()
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> String {
        let r = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", oci::media::OCI_MANIFEST)],
                body.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        r.header("docker-content-digest").to_owned()
    }
}
