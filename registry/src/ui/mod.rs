//! The registry's web UI: server-rendered pages over [`crate::domain`], in the same binary
//! and on the same address as the API, with every asset embedded (no CDN, no build step).
//!
//! Pages are plain HTML that works without JavaScript; `ui.js` only adds copy buttons and
//! a filter box. Who sees what is the API's policy ([`crate::auth::Auth`]): the UI reads the
//! account from its session cookie (htpasswd and token modes share the accounts) or from
//! basic credentials, and shows only the repositories and actions that account may use.
//!
//! | path | page |
//! |---|---|
//! | `/` | repositories (`?q=` substring search, `?page=`) |
//! | `/r/<name>` | a repository's tags (`?sort=name\|date`, `?page=`) |
//! | `/r/<name>/manifests/<tag or digest>` | an image (config, history, layers) or an index (platforms), with referrers |
//! | `/delete`, `/gc` | actions: a confirmation page (GET), then a POST with a CSRF token |
//! | `/login`, `/logout` | the session cookie |
//!
//! Every action is a POST that carries a CSRF token bound to the account and is refused
//! when a browser says it comes from another site; each is logged with its account.

mod actions;
mod assets;
mod data;
mod pages;
mod session;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::api::AppState;
use crate::auth::request_host;

/// The `[ui]` table of the registry's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the UI under `/` (the API stays under `/v2/`).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// How long a UI sign-in lasts.
    #[serde(default = "session_ttl", deserialize_with = "crate::server::duration")]
    pub session_ttl: Duration,
    /// Garbage collection from the UI spares anything written within this long, as
    /// `berth registry gc --grace` does.
    #[serde(default = "gc_grace", deserialize_with = "crate::server::duration")]
    pub gc_grace: Duration,
}

fn enabled() -> bool {
    true
}

fn session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn gc_grace() -> Duration {
    Duration::from_secs(3600)
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: enabled(), session_ttl: session_ttl(), gc_grace: gc_grace() }
    }
}

/// What every UI handler reaches: the API's state, the settings and the page caches.
struct Ui {
    app: AppState,
    config: UiConfig,
    /// Every repository's name (one key).
    catalog: data::Fresh<(), Arc<Vec<String>>>,
    /// Tag counts and last pushes, by repository.
    summaries: data::Fresh<String, crate::domain::RepositorySummary>,
    /// Tags and their push times, by repository.
    tags: data::Fresh<String, data::TagTimes>,
    /// What each tag row shows, by repository, tag and push time (a push makes a new key).
    rows: data::Fresh<(String, String, Option<std::time::SystemTime>), Option<Arc<data::TagManifest>>>,
    configs: data::ConfigCache,
    /// Held while a collection runs: one at a time from this process's UI.
    collecting: tokio::sync::Mutex<()>,
}

type UiState = Arc<Ui>;

/// How long the list of every repository is served before it is walked again: a new
/// repository shows within this.
const CATALOG_FRESH: Duration = Duration::from_secs(30);
/// How long tag lists and repository summaries are served before they are read again;
/// the UI's own deletes show at once.
const LISTS_FRESH: Duration = Duration::from_secs(10);

impl Ui {
    /// Every repository's name, sorted.
    async fn catalog_names(&self) -> crate::error::Result<Arc<Vec<String>>> {
        let registry = self.app.registry.clone();
        self.catalog.get((), move || async move { Ok(Arc::new(registry.catalog().await?)) }).await
    }

    /// Forgets what the UI keeps of a repository, after changing it.
    fn forget(&self, repo: &str) {
        self.summaries.forget(&repo.to_owned());
        self.tags.forget(&repo.to_owned());
    }
}

/// The UI's routes, ready to merge beside the API's (`/v2/`, `/token`, `/metrics`, `/health`).
pub fn routes<S: Clone + Send + Sync + 'static>(app: AppState, config: UiConfig) -> Router<S> {
    let ui = Arc::new(Ui {
        app,
        config,
        catalog: data::Fresh::new(CATALOG_FRESH),
        summaries: data::Fresh::new(LISTS_FRESH),
        tags: data::Fresh::new(LISTS_FRESH),
        rows: data::Fresh::new(Duration::from_secs(3600)),
        configs: data::Fresh::new(Duration::MAX),
        collecting: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/", get(pages::repositories))
        .route("/r/{*path}", get(pages::repository))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/delete", get(actions::confirm_delete).post(actions::delete))
        .route("/gc", get(actions::gc_form).post(actions::gc))
        .route("/static/{file}", get(assets::serve))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(ui)
}

/// Headers every UI response carries: only our own scripts, styles and forms, never framed.
async fn secure_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}
