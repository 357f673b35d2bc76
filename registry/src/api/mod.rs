//! The HTTP API: one router, handlers named after the distribution spec's endpoints.
//!
//! Repository names contain slashes, so the router cannot split `/v2/<name>/blobs/<digest>`
//! itself: [`Endpoint::parse`] reads the path from its end, and [`dispatch`] maps
//! (method, endpoint) to a handler after authorising the access it needs.

mod counted;
mod handlers;

pub use handlers::decode as decode_query;
/// Stored content as `GET`/`HEAD` serves it: the mirror's answer once it has the content.
pub(crate) use handlers::{get_blob as get_stored_blob, get_manifest as get_stored_manifest, response};

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::auth::{Action, Auth};
use crate::domain::{parse_digest, Registry, RepoName, UploadId};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The content.
    pub registry: Registry,
    /// Who may do what.
    pub auth: Arc<Auth>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Refuse every write when set.
    pub read_only: bool,
    /// Accept `DELETE` of manifests, tags and blobs (`--delete-enabled`); off by default so
    /// that an anonymous client cannot wipe content, as distribution's default has it.
    pub delete_enabled: bool,
    /// The pull-through mirror, when upstreams are configured.
    pub mirror: Option<Arc<crate::mirror::Mirror>>,
}

/// The registry's whole HTTP surface: `/v2/...`, `/token`, `/metrics`, `/health`.
pub fn app(state: AppState) -> Router {
    app_with(state, true)
}

/// The registry's HTTP surface, with `/metrics` (behind the registry's auth) or without it,
/// for a registry that serves its metrics on their own address ([`metrics_app`]).
pub fn app_with(state: AppState, metrics_here: bool) -> Router {
    app_full(state, metrics_here, None)
}

/// The whole HTTP surface: the API, `/metrics` here or not, and the web UI under `/` when
/// `ui` is given.
pub fn app_full(state: AppState, metrics_here: bool, ui: Option<crate::ui::UiConfig>) -> Router {
    let mut router = Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route("/token", get(crate::auth::token_endpoint))
        .route("/health", get(health));
    if metrics_here {
        router = router.route("/metrics", get(authenticated_metrics));
    }
    if let Some(ui) = ui.filter(|u| u.enabled) {
        router = router.merge(crate::ui::routes(state.clone(), ui));
    }
    router.layer(axum::middleware::from_fn_with_state(state.clone(), observe)).with_state(state)
}

/// `/metrics` and `/health` alone, without auth: for a listen address that only the
/// monitoring network reaches (`metrics.addr`).
pub fn metrics_app(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(state)
}

/// A parsed `/v2/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/blobs/<digest>`.
    Blob(RepoName, oci::Digest),
    /// `/v2/<name>/blobs/uploads/` (no id: start a session).
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload(RepoName, UploadId),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(RepoName, String),
    /// `/v2/<name>/tags/list`.
    Tags(RepoName),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(RepoName, oci::Digest),
}

impl Endpoint {
    /// Parses the part of the path after `/v2/`.
    pub fn parse(rest: &str) -> Result<Endpoint> {
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let not_found = || RegistryError::new(ErrorCode::NameUnknown, "no such endpoint");
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name.parse()?));
        }
        if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
            return Ok(Endpoint::Uploads(name.parse()?));
        }
        if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
            return Ok(Endpoint::Upload(name.parse()?, id.parse()?));
        }
        for (sep, kind) in [("/blobs/", 0), ("/manifests/", 1), ("/referrers/", 2)] {
            if let Some((name, last)) = rest.rsplit_once(sep) {
                if last.contains('/') || last.is_empty() {
                    continue;
                }
                let name: RepoName = name.parse()?;
                return Ok(match kind {
                    0 => Endpoint::Blob(name, parse_digest(last)?),
                    1 => Endpoint::Manifest(name, last.to_owned()),
                    _ => Endpoint::Referrers(name, parse_digest(last)?),
                });
            }
        }
        Err(not_found())
    }

    /// The label `/metrics` counts requests under.
    pub fn route(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Blob(..) => "blob",
            Endpoint::Uploads(..) | Endpoint::Upload(..) => "upload",
            Endpoint::Manifest(..) => "manifest",
            Endpoint::Tags(..) => "tags",
            Endpoint::Referrers(..) => "referrers",
        }
    }

    fn repository(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Blob(n, _)
            | Endpoint::Uploads(n)
            | Endpoint::Upload(n, _)
            | Endpoint::Manifest(n, _)
            | Endpoint::Tags(n)
            | Endpoint::Referrers(n, _) => Some(n),
        }
    }
}

/// The action a request needs on its repository.
fn action_for(method: &Method, endpoint: &Endpoint) -> Action {
    match (method.as_str(), endpoint) {
        ("DELETE", Endpoint::Blob(..) | Endpoint::Manifest(..)) => Action::Delete,
        ("GET" | "HEAD", _) => Action::Pull,
        _ => Action::Push,
    }
}

/// The refusal of a manifest, tag or blob `DELETE` while deletes are off: distribution's
/// answer to the same request, `405 UNSUPPORTED` with the spec's message.
fn deletes_disabled() -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported, "The operation is unsupported.")
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let rest = req.uri().path().strip_prefix("/v2").unwrap_or("").to_owned();
    let endpoint = match Endpoint::parse(&rest) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    if let Some(label) = req.extensions().get::<RouteLabel>() {
        label.set(endpoint.route());
    }
    let method = req.method().clone();
    let writes = !matches!(method, Method::GET | Method::HEAD);
    if writes && state.read_only {
        return RegistryError::new(ErrorCode::Unsupported, "registry is in read-only mode").into_response();
    }
    let action = action_for(&method, &endpoint);
    let mut needs = vec![];
    if let Some(repo) = endpoint.repository() {
        // A mount's source (`from`, or any holder of the blob) is checked by the handler:
        // a source the caller may not pull makes the mount an ordinary upload (202).
        needs.push((repo.clone(), action));
    }
    let catalog = matches!(endpoint, Endpoint::Catalog);
    if let Err(e) = state.auth.authorize(req.headers(), &needs, catalog) {
        return e.into_response();
    }
    // After auth, as distribution orders it: a caller without the grant still learns nothing.
    if action == Action::Delete && !state.delete_enabled {
        return deletes_disabled().into_response();
    }
    if let Some(mirror) = state.mirror.clone() {
        if let Some(resp) = mirrored(&state, &mirror, &method, &endpoint, req.headers()).await {
            return resp;
        }
    }
    let result = match (method, endpoint) {
        (Method::GET, Endpoint::Base) => Ok(handlers::api_version_check()),
        (Method::GET, Endpoint::Catalog) => handlers::catalog(&state, req.uri(), req.headers()).await,
        (Method::GET, Endpoint::Blob(n, d)) => handlers::get_blob(&state, &n, &d, req.headers(), false).await,
        (Method::HEAD, Endpoint::Blob(n, d)) => handlers::get_blob(&state, &n, &d, req.headers(), true).await,
        (Method::DELETE, Endpoint::Blob(n, d)) => handlers::delete_blob(&state, &n, &d).await,
        (Method::POST, Endpoint::Uploads(n)) => handlers::start_upload(&state, &n, req).await,
        (Method::PATCH, Endpoint::Upload(n, id)) => handlers::patch_upload(&state, &n, &id, req).await,
        (Method::PUT, Endpoint::Upload(n, id)) => handlers::put_upload(&state, &n, &id, req).await,
        (Method::GET, Endpoint::Upload(n, id)) => handlers::get_upload_status(&state, &n, &id).await,
        (Method::DELETE, Endpoint::Upload(n, id)) => handlers::delete_upload(&state, &n, &id).await,
        (Method::GET, Endpoint::Manifest(n, r)) => handlers::get_manifest(&state, &n, &r, false).await,
        (Method::HEAD, Endpoint::Manifest(n, r)) => handlers::get_manifest(&state, &n, &r, true).await,
        (Method::PUT, Endpoint::Manifest(n, r)) => handlers::put_manifest(&state, &n, &r, req).await,
        (Method::DELETE, Endpoint::Manifest(n, r)) => handlers::delete_manifest(&state, &n, &r).await,
        (Method::GET, Endpoint::Tags(n)) => handlers::list_tags(&state, &n, req.uri()).await,
        (Method::GET, Endpoint::Referrers(n, d)) => handlers::list_referrers(&state, &n, &d, req.uri()).await,
        _ => Err(RegistryError::new(ErrorCode::Unsupported, "method not allowed on this endpoint")),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Serves a read of mirrored content, and refuses a push into it; None: not the mirror's.
async fn mirrored(
    state: &AppState,
    mirror: &crate::mirror::Mirror,
    method: &Method,
    endpoint: &Endpoint,
    headers: &axum::http::HeaderMap,
) -> Option<Response> {
    let repo = endpoint.repository().filter(|r| mirror.covers(r))?;
    let head = method == Method::HEAD;
    let result = match (method.clone(), endpoint) {
        (Method::GET | Method::HEAD, Endpoint::Manifest(n, r)) => mirror.get_manifest(state, n, r, head).await,
        (Method::GET | Method::HEAD, Endpoint::Blob(n, d)) => mirror.get_blob(state, n, d, headers, head).await,
        (Method::POST | Method::PUT | Method::PATCH, _) => Err(mirror.refuse_push(repo)?),
        _ => return None,
    };
    Some(result.unwrap_or_else(IntoResponse::into_response))
}

/// The route a request was dispatched to, filled in by [`dispatch`] for [`observe`].
#[derive(Clone, Default)]
struct RouteLabel(Arc<std::sync::Mutex<&'static str>>);

impl RouteLabel {
    fn set(&self, route: &'static str) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = route;
    }

    fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Gives each request an id (echoed as `X-Request-Id`), logs it, and counts it.
async fn observe(State(state): State<AppState>, mut req: Request, next: axum::middleware::Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let label = RouteLabel::default();
    let path = req.uri().path();
    label.set(match path {
        "/token" => "token",
        "/metrics" => "metrics",
        "/health" => "health",
        p if !p.starts_with("/v2") => "ui",
        _ => "other",
    });
    req.extensions_mut().insert(label.clone());
    let method = req.method().clone();
    let uri = req.uri().clone();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let req = req.map(|body| counted::request(body, received.clone()));
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status();
    let route = label.get();
    let mut resp = resp.map(|body| counted::response(body, state.metrics.clone(), route));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let bytes_in = received.load(std::sync::atomic::Ordering::Relaxed);
    state.metrics.record(route, method.as_str(), status.as_u16(), bytes_in, elapsed);
    let upload_done = label.get() == "upload" && method == Method::PUT && status == StatusCode::CREATED;
    if upload_done {
        state.metrics.record_upload(elapsed);
    }
    tracing::info!(request_id = %id, %method, uri = %uri, status = status.as_u16(), ms = elapsed.as_millis() as u64, "request");
    resp
}

async fn authenticated_metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    match state.auth.authenticate(&headers) {
        Ok(()) => metrics(State(state)).await,
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render();
    if let Some(m) = &state.mirror {
        m.render_metrics(&mut text);
    }
    let mut resp = text.into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}

async fn health(State(state): State<AppState>) -> Response {
    match state.registry.driver().stat("/v2").await {
        Ok(_) => (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response(),
        Err(e) if e.is_not_found() => (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: storage unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "storage unavailable"})))
                .into_response()
        }
    }
}

/// Turns a request body into the domain's chunk stream.
pub fn body_stream(body: Body) -> crate::domain::BodyStream {
    use futures_util::TryStreamExt;
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints_from_the_end_of_the_path() {
        let d = "sha256:abcdef0000000000000000000000000000000000000000000000000000000000";
        let name = |s: &str| s.parse::<RepoName>().unwrap();
        assert_eq!(Endpoint::parse("/").unwrap(), Endpoint::Base);
        assert_eq!(Endpoint::parse("/_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(
            Endpoint::parse(&format!("/a/blobs/b/blobs/{d}")).unwrap(),
            Endpoint::Blob(name("a/blobs/b"), d.parse().unwrap())
        );
        assert_eq!(Endpoint::parse("/x/y/manifests/v1").unwrap(), Endpoint::Manifest(name("x/y"), "v1".into()));
        assert_eq!(Endpoint::parse("/x/tags/list").unwrap(), Endpoint::Tags(name("x")));
        assert_eq!(Endpoint::parse("/x/blobs/uploads/").unwrap(), Endpoint::Uploads(name("x")));
        assert!(matches!(
            Endpoint::parse("/x/blobs/uploads/6a1b8c1e-1111-4222-8333-444455556666").unwrap(),
            Endpoint::Upload(..)
        ));
    }

    #[test]
    fn refuses_bad_names_digests_and_upload_ids() {
        let code = |p: &str| Endpoint::parse(p).unwrap_err().code;
        assert_eq!(code("/../etc/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("/UPPER/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("/a/blobs/sha256:nothex"), ErrorCode::DigestInvalid);
        assert_eq!(code("/a/blobs/uploads/../../x"), ErrorCode::BlobUploadUnknown);
        assert_eq!(code("/a/blobs/uploads/not-a-uuid"), ErrorCode::BlobUploadUnknown);
    }
}
