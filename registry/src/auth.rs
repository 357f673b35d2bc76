//! Who may do what: no auth, htpasswd (bcrypt) basic auth, or bearer tokens from the
//! built-in token endpoint, with per-repository grants.
//!
//! The token flow is docker's: a request without a token gets `401` with
//! `WWW-Authenticate: Bearer realm=".../token",service="...",scope="repository:<name>:pull"`;
//! the client asks the realm for a token (with basic credentials, or anonymously) and
//! retries with `Authorization: Bearer <token>`. Tokens are JWTs signed with HMAC-SHA256;
//! replicas that share the secret accept each other's tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::api::AppState;
use crate::domain::RepoName;
use crate::error::{ErrorCode, RegistryError, Result};

/// How long a token lives unless `auth.token_ttl` says otherwise (Docker Hub's five minutes).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
const ANONYMOUS: &str = "anonymous";

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs and manifests.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// The name used in scopes and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "*" => None,
            _ => None,
        }
    }
}

/// One line of the access policy: `account` may do `actions` on repositories matching
/// `repository` (`*` matches any run of characters, `/` included).
#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    /// A user name, `*` for any authenticated user, or `anonymous`.
    pub account: String,
    /// A repository pattern: `team/*`, `*`, `library/busybox`.
    pub repository: String,
    /// What is allowed.
    pub actions: Vec<Action>,
}

/// Where a token challenge sends clients: the `auth.realm` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Realm {
    /// A fixed token endpoint URL, as production behind a proxy or load balancer needs.
    Url(String),
    /// `http(s)://<Host header>/token`, taken from each request: only when configured as
    /// `auto`, since a client (or a proxy that rewrites Host) then decides where
    /// credentials are sent.
    FromHost,
}

impl Realm {
    /// Reads an `auth.realm` value: `auto`, or an `http://` or `https://` URL that fits in a
    /// quoted challenge parameter.
    pub fn parse(s: &str) -> std::result::Result<Realm, String> {
        if s == "auto" {
            return Ok(Realm::FromHost);
        }
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
        let host_len = rest.map_or(0, |r| r.split('/').next().unwrap_or("").len());
        if host_len == 0 || s.bytes().any(|b| b == b'"' || b == b'\\' || !b.is_ascii_graphic()) {
            return Err(format!("token realm {s:?} is not auto or an http(s) URL"));
        }
        Ok(Realm::Url(s.to_owned()))
    }
}

/// The authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everyone may do everything.
    #[default]
    None,
    /// HTTP basic auth against an htpasswd file.
    Htpasswd,
    /// Bearer tokens from `/token`, which checks the htpasswd file.
    Token,
}

/// The policy and the secrets; see the module docs.
pub struct Auth {
    mode: Mode,
    users: HashMap<String, String>,
    grants: Vec<Grant>,
    key: Vec<u8>,
    realm: Realm,
    service: String,
    tls: bool,
    /// How long the tokens `/token` issues live.
    token_ttl: Duration,
    /// (user, sha256 of password) -> when bcrypt last accepted it; bcrypt costs ~50 ms.
    verified: Mutex<HashMap<(String, [u8; 32]), Instant>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("mode", &self.mode).field("users", &self.users.len()).finish_non_exhaustive()
    }
}

/// Parses an htpasswd file: `user:$2y$...` lines (bcrypt only, as distribution).
pub fn parse_htpasswd(text: &str) -> std::result::Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
        if !hash.starts_with("$2") {
            return Err(format!("line {}: user {user:?} has a non-bcrypt hash (use htpasswd -B)", n + 1));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

impl Auth {
    /// No authentication.
    pub fn none() -> Self {
        Self::new(Mode::None, HashMap::new(), Vec::new(), Vec::new(), Realm::FromHost, "berth-registry".into(), false)
    }

    /// A policy. An empty `key` picks a random one (tokens then die with the process).
    pub fn new(
        mode: Mode,
        users: HashMap<String, String>,
        grants: Vec<Grant>,
        mut key: Vec<u8>,
        realm: Realm,
        service: String,
        tls: bool,
    ) -> Self {
        if key.is_empty() {
            key = (0..32).map(|_| rand_byte()).collect();
        }
        Auth { mode, users, grants, key, realm, service, tls, token_ttl: DEFAULT_TOKEN_TTL, verified: Mutex::default() }
    }

    /// This policy with tokens that live `ttl` (at least a second): `auth.token_ttl`.
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key = (user.to_owned(), Sha256::digest(password.as_bytes()).into());
        {
            let cache = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.get(&key).is_some_and(|t| t.elapsed() < Duration::from_secs(300)) {
                return true;
            }
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok {
            self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, Instant::now());
        }
        ok
    }

    /// The account behind basic credentials: `Ok(None)` when there are none, an error
    /// when they are wrong.
    fn basic_account(&self, headers: &HeaderMap) -> Result<Option<String>> {
        let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let Some(b64) = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")) else {
            return Ok(None);
        };
        let wrong = || RegistryError::new(ErrorCode::Unauthorized, "invalid username or password");
        let raw = STANDARD.decode(b64.trim()).map_err(|_| wrong())?;
        let text = String::from_utf8(raw).map_err(|_| wrong())?;
        let (user, pass) = text.split_once(':').ok_or_else(wrong)?;
        if self.check_password(user, pass) {
            Ok(Some(user.to_owned()))
        } else {
            Err(wrong())
        }
    }

    /// True when the registry runs without authentication (every request is allowed).
    pub fn is_off(&self) -> bool {
        matches!(self.mode, Mode::None)
    }

    /// Checks that a request comes from some account (basic credentials, or in token mode a
    /// valid bearer token too), for endpoints that are not about a repository, like
    /// `/metrics`. Without auth everyone passes.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<()> {
        let challenge = |e: RegistryError| e.with_header("WWW-Authenticate", "Basic realm=\"berth-registry\"".into());
        if self.mode == Mode::None {
            return Ok(());
        }
        if self.basic_account(headers).map_err(challenge)?.is_some() {
            return Ok(());
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        match bearer.map(|t| self.verify_token(t.trim())) {
            Some(Ok(c)) if self.mode == Mode::Token && c.sub != ANONYMOUS => Ok(()),
            _ => Err(challenge(RegistryError::new(ErrorCode::Unauthorized, "authentication required"))),
        }
    }

    /// The actions of `wanted` that `account` may do on `repo`. With no grants
    /// configured, any authenticated account may do everything.
    pub fn allowed(&self, account: &str, repo: &str, wanted: &[Action]) -> Vec<Action> {
        if self.grants.is_empty() {
            return if account == ANONYMOUS { Vec::new() } else { wanted.to_vec() };
        }
        wanted
            .iter()
            .copied()
            .filter(|a| {
                self.grants.iter().any(|g| {
                    let who = g.account == account || (g.account == "*" && account != ANONYMOUS);
                    who && g.actions.contains(a) && glob(&g.repository, repo)
                })
            })
            .collect()
    }

    /// Checks a request that needs `needs` (and the catalog, if `catalog`).
    pub fn authorize(&self, headers: &HeaderMap, needs: &[(RepoName, Action)], catalog: bool) -> Result<()> {
        match self.mode {
            Mode::None => Ok(()),
            Mode::Htpasswd => {
                let challenge =
                    |e: RegistryError| e.with_header("WWW-Authenticate", "Basic realm=\"berth-registry\"".into());
                let account = match self.basic_account(headers).map_err(challenge)? {
                    Some(a) => a,
                    None if needs.iter().all(|(r, a)| !self.allowed(ANONYMOUS, r.as_str(), &[*a]).is_empty())
                        && !needs.is_empty() =>
                    {
                        ANONYMOUS.to_owned()
                    }
                    None => {
                        return Err(challenge(RegistryError::new(ErrorCode::Unauthorized, "authentication required")))
                    }
                };
                for (repo, action) in needs {
                    if self.allowed(&account, repo.as_str(), &[*action]).is_empty() {
                        return Err(RegistryError::new(
                            ErrorCode::Denied,
                            format!("{account} may not {} {repo}", action.as_str()),
                        ));
                    }
                }
                if catalog && account == ANONYMOUS {
                    return Err(challenge(RegistryError::new(ErrorCode::Unauthorized, "authentication required")));
                }
                Ok(())
            }
            Mode::Token => {
                let scope = scopes(needs, catalog);
                let challenge = |headers: &HeaderMap, err: Option<&str>| {
                    let mut c = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(headers), self.service);
                    if !scope.is_empty() {
                        c.push_str(&format!(",scope=\"{scope}\""));
                    }
                    if let Some(e) = err {
                        c.push_str(&format!(",error=\"{e}\""));
                    }
                    c
                };
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
                let Some(token) = token else {
                    return Err(RegistryError::new(ErrorCode::Unauthorized, "authentication required")
                        .with_header("WWW-Authenticate", challenge(headers, None)));
                };
                let claims = self.verify_token(token.trim()).map_err(|msg| {
                    RegistryError::new(ErrorCode::Unauthorized, msg)
                        .with_header("WWW-Authenticate", challenge(headers, Some("invalid_token")))
                })?;
                // Type and name both match: a `registry:catalog` grant is not a grant on a
                // repository named `catalog`, and no repository grant opens the catalog.
                let granted = |kind: &str, name: &str, action: &str| {
                    claims
                        .access
                        .iter()
                        .any(|a| a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*"))
                };
                let ok = needs.iter().all(|(r, a)| granted("repository", r.as_str(), a.as_str()))
                    && (!catalog || granted("registry", "catalog", "*"));
                if !ok {
                    return Err(RegistryError::new(ErrorCode::Unauthorized, "token does not grant this access")
                        .with_header("WWW-Authenticate", challenge(headers, Some("insufficient_scope"))));
                }
                Ok(())
            }
        }
    }

    /// Keeps the repositories of `repos` that the caller of an authorized catalog request
    /// may pull, so the catalog never names another team's repositories. Token callers
    /// see what their account is granted plus what their token grants.
    pub fn pullable(&self, headers: &HeaderMap, repos: Vec<String>) -> Vec<String> {
        let (account, claims) = match self.mode {
            Mode::None => return repos,
            Mode::Htpasswd => match self.basic_account(headers) {
                Ok(Some(a)) => (a, None),
                _ => return Vec::new(),
            },
            Mode::Token => {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
                match token.map(|t| self.verify_token(t.trim())) {
                    Some(Ok(c)) => (c.sub.clone(), Some(c)),
                    _ => return Vec::new(),
                }
            }
        };
        let in_token = |repo: &str| {
            claims.as_ref().is_some_and(|c| {
                c.access.iter().any(|a| {
                    a.kind == "repository" && a.name == repo && a.actions.iter().any(|x| x == "pull" || x == "*")
                })
            })
        };
        repos.into_iter().filter(|r| !self.allowed(&account, r, &[Action::Pull]).is_empty() || in_token(r)).collect()
    }

    /// The authentication mode in force: the web UI picks its login flow by it.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether clients reach the registry over TLS: the UI's session cookie is then `Secure`.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Checks an account's password (bcrypt, cached), for the UI's login form.
    pub fn login(&self, user: &str, password: &str) -> bool {
        self.mode != Mode::None && self.check_password(user, password)
    }

    /// The account named by a request's basic credentials: `Ok(None)` without any, an error
    /// when they are wrong; the UI accepts them beside its session cookie.
    pub fn basic_user(&self, headers: &HeaderMap) -> Result<Option<String>> {
        if self.mode == Mode::None {
            return Ok(None);
        }
        self.basic_account(headers)
    }

    /// Whether `user` is an account of the htpasswd file, so a UI session ends when its
    /// account is removed (and the registry restarted with the new file).
    pub fn has_account(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `account` (None: anonymous) may do `action` on `repo`, by the same grants the
    /// API and `/token` apply; without auth everyone may.
    pub fn may(&self, account: Option<&str>, repo: &str, action: Action) -> bool {
        self.mode == Mode::None || !self.allowed(account.unwrap_or(ANONYMOUS), repo, &[action]).is_empty()
    }

    /// Whether `account` may collect garbage, which deletes across every repository: it
    /// needs delete on `*` (or, with no grants configured, to be signed in).
    pub fn may_collect(&self, account: Option<&str>) -> bool {
        match (self.mode, account) {
            (Mode::None, _) => true,
            (_, None) => false,
            (_, Some(a)) => {
                self.grants.is_empty()
                    || self.grants.iter().any(|g| {
                        (g.account == a || g.account == "*")
                            && g.repository == "*"
                            && g.actions.contains(&Action::Delete)
                    })
            }
        }
    }

    /// `text`, signed with the registry's secret for `purpose` (`text.signature`): the
    /// UI's session cookies and CSRF tokens, which replicas sharing the secret all accept.
    pub fn seal(&self, purpose: &str, text: &str) -> String {
        let sig = URL_SAFE_NO_PAD.encode(self.mac(format!("{purpose}\0{text}").as_bytes()));
        format!("{text}.{sig}")
    }

    /// The text of a value [`Auth::seal`] made for `purpose`; None when it was forged or
    /// altered.
    pub fn unseal<'a>(&self, purpose: &str, sealed: &'a str) -> Option<&'a str> {
        let (text, sig) = sealed.rsplit_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        m.update(format!("{purpose}\0{text}").as_bytes());
        m.verify_slice(&sig).ok()?;
        Some(text)
    }

    fn realm(&self, headers: &HeaderMap) -> String {
        if let Realm::Url(r) = &self.realm {
            return r.clone();
        }
        // Only host characters: a Host header must not be able to inject challenge parameters.
        format!("{}://{}/token", if self.tls { "https" } else { "http" }, request_host(headers))
    }

    fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(signing_input.as_bytes()));
        format!("{signing_input}.{sig}")
    }

    fn mac(&self, input: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_hmac());
        m.update(input);
        m.finalize().into_bytes().to_vec()
    }

    fn verify_token(&self, token: &str) -> std::result::Result<Claims, &'static str> {
        let (input, sig) = token.rsplit_once('.').ok_or("malformed token")?;
        let (_, payload) = input.split_once('.').ok_or("malformed token")?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "malformed token")?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).map_err(|_| "bad key")?;
        m.update(input.as_bytes());
        m.verify_slice(&sig).map_err(|_| "token signature is invalid")?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| "malformed token")?)
            .map_err(|_| "malformed token")?;
        let now = unix_now();
        if claims.exp < now || claims.nbf > now + 60 {
            return Err("token expired");
        }
        if claims.aud != self.service {
            return Err("token is for another service");
        }
        Ok(claims)
    }
}

fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap_or_else(|_| std::process::abort())
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

/// The host a client reached the registry by (its `Host` header), host characters only so
/// that it cannot inject anything where it is written (a challenge, a pull command);
/// `localhost` without one.
pub(crate) fn request_host(headers: &HeaderMap) -> String {
    headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .unwrap_or("localhost")
        .to_owned()
}

/// Seconds since the epoch: token, session and CSRF expiries.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `*` matches any run of characters, including `/`.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.starts_with(head)
                && (0..=s.len() - head.len())
                    .any(|i| s.is_char_boundary(head.len() + i) && glob(tail, &s[head.len() + i..]))
        }
    }
}

fn scopes(needs: &[(RepoName, Action)], catalog: bool) -> String {
    let mut by_repo: Vec<(String, Vec<&str>)> = Vec::new();
    for (r, a) in needs {
        match by_repo.iter_mut().find(|(n, _)| n == r.as_str()) {
            Some((_, acts)) => acts.push(a.as_str()),
            None => by_repo.push((r.as_str().to_owned(), vec![a.as_str()])),
        }
    }
    let mut parts: Vec<String> = by_repo.into_iter().map(|(r, a)| format!("repository:{r}:{}", a.join(","))).collect();
    if catalog {
        parts.push("registry:catalog:*".into());
    }
    parts.join(" ")
}

/// One scope of a token request, `TYPE[(CLASS)]:NAME:ACTION,...` as docker's token
/// protocol writes it; NAME may hold colons (a registry host with its port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<'a> {
    /// `repository` or `registry`; a `(class)` suffix is dropped.
    pub kind: &'a str,
    /// The repository name, or `catalog`.
    pub name: &'a str,
    /// The actions asked for, empty ones left out.
    pub actions: Vec<&'a str>,
}

impl<'a> Scope<'a> {
    /// Reads one scope; None when it lacks a type, a name or the actions field.
    pub fn parse(s: &'a str) -> Option<Scope<'a>> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope { kind, name, actions: actions.split(',').filter(|a| !a.is_empty()).collect() })
    }
}

impl std::fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

/// `GET /token?service=&scope=...`: issues a bearer token for the scopes the caller's
/// account (from basic credentials, or anonymous) is granted.
pub async fn token_endpoint(State(state): State<AppState>, req: Request) -> Response {
    let auth = &state.auth;
    if auth.mode != Mode::Token {
        return RegistryError::new(ErrorCode::Unsupported, "token auth is not enabled").into_response();
    }
    let account = match auth.basic_account(req.headers()) {
        Ok(Some(a)) => a,
        Ok(None) => ANONYMOUS.to_owned(),
        Err(e) => return e.into_response(),
    };
    let mut access = Vec::new();
    let query = req.uri().query().unwrap_or("");
    for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
        if k != "scope" {
            continue;
        }
        let v = crate::api::decode_query(v);
        for scope in v.split(' ').filter_map(Scope::parse) {
            let Scope { kind, name, actions } = scope;
            match kind {
                "repository" => {
                    let wanted: Vec<Action> = actions.iter().filter_map(|a| Action::parse(a)).collect();
                    let got = auth.allowed(&account, name, &wanted);
                    access.push(Access {
                        kind: "repository".into(),
                        name: name.to_owned(),
                        actions: got.iter().map(|a| a.as_str().to_owned()).collect(),
                    });
                }
                "registry" if name == "catalog" && account != ANONYMOUS => {
                    access.push(Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] });
                }
                _ => {}
            }
        }
    }
    let now = unix_now();
    let ttl = auth.token_ttl.as_secs();
    let claims = Claims {
        iss: "berth-registry".into(),
        sub: account,
        aud: auth.service.clone(),
        exp: now + ttl,
        nbf: now.saturating_sub(10),
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        access,
    };
    let token = auth.sign(&claims);
    let issued = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    axum::Json(serde_json::json!({ "token": token, "access_token": token, "expires_in": ttl, "issued_at": issued }))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_repository_patterns() {
        assert!(glob("*", "a/b/c"));
        assert!(glob("team/*", "team/app"));
        assert!(glob("team/*", "team/a/b"));
        assert!(!glob("team/*", "other/app"));
        assert!(glob("library/busybox", "library/busybox"));
        assert!(glob("*/app", "x/y/app"));
        assert!(!glob("*/app", "x/apps"));
    }

    #[test]
    fn grants_decide_actions_per_account() {
        let grants = vec![
            Grant { account: "alice".into(), repository: "team/*".into(), actions: vec![Action::Pull, Action::Push] },
            Grant { account: "*".into(), repository: "public/*".into(), actions: vec![Action::Pull] },
            Grant { account: ANONYMOUS.into(), repository: "open".into(), actions: vec![Action::Pull] },
        ];
        let a = Auth::new(Mode::Token, HashMap::new(), grants, vec![1; 32], Realm::FromHost, "s".into(), false);
        let all = [Action::Pull, Action::Push, Action::Delete];
        assert_eq!(a.allowed("alice", "team/app", &all), [Action::Pull, Action::Push]);
        assert_eq!(a.allowed("bob", "team/app", &all), []);
        assert_eq!(a.allowed("bob", "public/x", &all), [Action::Pull]);
        assert_eq!(a.allowed(ANONYMOUS, "public/x", &all), []);
        assert_eq!(a.allowed(ANONYMOUS, "open", &all), [Action::Pull]);
    }

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let a = Auth::new(Mode::Token, HashMap::new(), Vec::new(), vec![7; 32], Realm::FromHost, "svc".into(), false);
        let now = unix_now();
        let claims = Claims {
            iss: "i".into(),
            sub: "alice".into(),
            aud: "svc".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
            jti: "j".into(),
            access: vec![Access { kind: "repository".into(), name: "a".into(), actions: vec!["pull".into()] }],
        };
        let t = a.sign(&claims);
        assert_eq!(a.verify_token(&t).unwrap().sub, "alice");
        let other =
            Auth::new(Mode::Token, HashMap::new(), Vec::new(), vec![8; 32], Realm::FromHost, "svc".into(), false);
        assert!(other.verify_token(&t).is_err(), "another key must not verify");
        let mut forged = t.clone();
        forged.insert(forged.find('.').unwrap() + 2, 'x');
        assert!(a.verify_token(&forged).is_err());
        let expired = Claims { exp: now - 1, ..claims };
        assert_eq!(a.verify_token(&a.sign(&expired)).unwrap_err(), "token expired");
    }

    #[test]
    fn htpasswd_accepts_bcrypt_only() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let users = parse_htpasswd(&format!("# comment\nalice:{hash}\n")).unwrap();
        let a = Auth::new(Mode::Htpasswd, users, Vec::new(), Vec::new(), Realm::FromHost, "s".into(), false);
        assert!(a.check_password("alice", "secret"));
        assert!(a.check_password("alice", "secret"), "cached");
        assert!(!a.check_password("alice", "wrong"));
        assert!(!a.check_password("mallory", "secret"));
        assert!(parse_htpasswd("bob:{SHA}abc").unwrap_err().contains("non-bcrypt"));
    }
}
