//! Who is looking: the session cookie, basic credentials, CSRF tokens, and the login and
//! logout handlers.
//!
//! A session cookie is `user|expiry` sealed with the registry's secret ([`Auth::seal`]), so
//! replicas that share the token secret share sessions and the server keeps no table. A
//! CSRF token is `account|expiry` sealed for another purpose: a page hands it to its forms,
//! and an action is refused unless the token names the account that sends it.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::{view, UiState};
use crate::auth::{unix_now, Action, Auth, Mode};

const COOKIE: &str = "berth_session";
/// How long a page's CSRF tokens stay good.
const CSRF_TTL: u64 = 12 * 3600;

/// The account behind a request and what it may do.
pub(super) struct Viewer {
    /// None: anonymous (or no auth at all).
    pub account: Option<String>,
    /// The token this viewer's forms carry.
    pub csrf: String,
    /// Whether the registry has accounts at all (shows the sign-in link).
    pub auth_on: bool,
    /// Whether writes are refused (every action hidden).
    pub read_only: bool,
    /// Whether deletes are served (`--delete-enabled`); off, the delete actions are hidden
    /// and refused as the API refuses them.
    pub delete_enabled: bool,
    /// Whether this viewer may run garbage collection (the navigation links to it).
    pub gc_link: bool,
}

/// Every UI handler takes the viewer: a valid session cookie, else valid basic credentials,
/// else anonymous. Wrong basic credentials are refused with a challenge.
impl FromRequestParts<UiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &UiState) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let auth = &ui.app.auth;
        let account = match session_user(auth, headers) {
            Some(user) => Some(user),
            None => auth.basic_user(headers).map_err(|_| challenge())?,
        };
        let exp = unix_now() + CSRF_TTL;
        let csrf = auth.seal("csrf", &format!("{}|{exp}", account.as_deref().unwrap_or("")));
        let read_only = ui.app.read_only;
        let gc_link = !read_only && auth.may_collect(account.as_deref());
        let delete_enabled = ui.app.delete_enabled;
        Ok(Viewer { account, csrf, auth_on: auth.mode() != Mode::None, read_only, delete_enabled, gc_link })
    }
}

impl Viewer {
    /// Whether this viewer may do `action` on `repo`.
    pub fn may(&self, auth: &Auth, repo: &str, action: Action) -> bool {
        if action != Action::Pull && self.read_only {
            return false;
        }
        if action == Action::Delete && !self.delete_enabled {
            return false;
        }
        auth.may(self.account.as_deref(), repo, action)
    }

    /// Whether this viewer may run garbage collection.
    pub fn may_collect(&self) -> bool {
        self.gc_link
    }

    /// For an anonymous viewer of a registry with accounts, the way to the login form;
    /// for anyone else, a 404 that does not say whether the repository exists.
    pub fn no_access(&self, path: &str) -> Response {
        if self.account.is_none() && self.auth_on {
            return Redirect::to(&format!("/login?next={}", view::enc(path))).into_response();
        }
        view::error_page(self, StatusCode::NOT_FOUND, "Not found", "No such page, or you may not see it.")
    }

    /// Checks an action's POST: sent from our own pages (the browser's `Sec-Fetch-Site` and
    /// `Origin` say so when present) and carrying a CSRF token made for this same account.
    /// Returns the refusal to send when it is not.
    pub fn refuse_forged(&self, auth: &Auth, headers: &HeaderMap, token: &str) -> Option<Response> {
        let forged = || {
            tracing::warn!(account = self.account.as_deref().unwrap_or("anonymous"), "ui: refused a forged request");
            view::error_page(
                self,
                StatusCode::FORBIDDEN,
                "Refused",
                "This request did not come from this registry's pages. Reload the page and try again.",
            )
        };
        if cross_site(headers) {
            return Some(forged());
        }
        let Some((account, exp)) = auth.unseal("csrf", token).and_then(|t| t.rsplit_once('|')) else {
            return Some(forged());
        };
        let fresh = exp.parse::<u64>().is_ok_and(|e| e >= unix_now());
        (!fresh || account != self.account.as_deref().unwrap_or("")).then(forged)
    }
}

/// The signed-in account of a valid, unexpired session cookie whose account still exists.
fn session_user(auth: &Auth, headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok());
    let value = cookies.flat_map(|c| c.split(';')).find_map(|c| c.trim().strip_prefix("berth_session="))?;
    let (user, exp) = auth.unseal("session", value)?.rsplit_once('|')?;
    let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
    (exp.parse::<u64>().ok()? >= unix_now() && auth.has_account(&user)).then_some(user)
}

/// A session cookie's value: the account (base64, so any name fits a cookie) and expiry, sealed.
fn session_value(auth: &Auth, user: &str, exp: u64) -> String {
    auth.seal("session", &format!("{}|{exp}", URL_SAFE_NO_PAD.encode(user)))
}

/// Whether the browser says this request comes from another site: its `Sec-Fetch-Site`,
/// or an `Origin` that is not this host (behind a proxy that rewrites `Host`, set the
/// proxy to keep it).
fn cross_site(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return true;
    }
    headers.get("origin").and_then(|v| v.to_str().ok()).is_some_and(|origin| {
        let host = super::request_host(headers);
        origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) != Some(host.as_str())
    })
}

fn challenge() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "invalid username or password").into_response();
    r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Basic realm=\"berth-registry\""));
    r
}

/// Where to go after signing in: a path on this site only.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

/// `?next=` on the login form.
#[derive(Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// The sign-in form.
pub(super) async fn login_form(viewer: Viewer, Query(q): Query<Next>) -> Response {
    view::login_page(&viewer, safe_next(q.next.as_deref()), None, StatusCode::OK)
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// Checks the password and sets the session cookie.
pub(super) async fn login(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if cross_site(&headers) {
        // Another site must not sign a visitor into an account of its choosing.
        return view::error_page(&viewer, StatusCode::FORBIDDEN, "Refused", "Sign in from this registry's own page.");
    }
    let next = safe_next(f.next.as_deref()).to_owned();
    let auth = ui.app.auth.clone();
    let (user, password) = (f.username.clone(), f.password);
    // bcrypt is slow on purpose: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth.login(&user, &password)).await.unwrap_or(false);
    if !ok {
        tracing::warn!(account = f.username, "ui: sign-in refused");
        return view::login_page(&viewer, &next, Some("Wrong username or password."), StatusCode::UNAUTHORIZED);
    }
    tracing::info!(account = f.username, "ui: signed in");
    let ttl = ui.config.session_ttl.as_secs();
    let value = session_value(&ui.app.auth, &f.username, unix_now() + ttl);
    redirect_setting_cookie(&next, &ui.app.auth, &value, ttl)
}

/// A redirect that sets the session cookie to `value` for `ttl` seconds (0: clears it).
fn redirect_setting_cookie(to: &str, auth: &Auth, value: &str, ttl: u64) -> Response {
    let secure = if auth.tls() { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={value}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Strict{secure}");
    let mut resp = Redirect::to(to).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert("set-cookie", v);
    }
    resp
}

/// The logout form's field.
#[derive(Deserialize)]
pub(super) struct LogoutForm {
    csrf: String,
}

/// Ends the session: the cookie is cleared.
pub(super) async fn logout(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    if let Some(refusal) = viewer.refuse_forged(&ui.app.auth, &headers, &f.csrf) {
        return refusal;
    }
    tracing::info!(account = viewer.account.as_deref().unwrap_or("anonymous"), "ui: signed out");
    redirect_setting_cookie("/login", &ui.app.auth, "", 0)
}
