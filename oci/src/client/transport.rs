//! HTTP to registries: scheme choice, the auth handshake, retries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::credentials::{self, Credential};
use super::is_loopback;
use crate::error::{Error, Result};

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host:port`) to reach over plain HTTP or unverified TLS, besides loopback ones.
    pub insecure: Vec<String>,
    /// Treat every registry as insecure (`--insecure`).
    pub insecure_all: bool,
    /// Directories of `<host>/*.crt` CA certificates to trust, as docker's certs.d.
    pub certs_dirs: Vec<PathBuf>,
    /// PEM files of CA certificates to trust besides those (a mirror's `ca_file`).
    pub ca_files: Vec<PathBuf>,
    /// Attempts for a request that fails with a 5xx or a dropped connection.
    pub retries: u32,
    /// First backoff; doubles per attempt.
    pub backoff: Duration,
    /// What a 401 without credentials tells the user to do, for a domain (`berth login
    /// DOMAIN` for the CLI; a server names its own configuration).
    pub login_hint: fn(&str) -> String,
}

/// The CLI's advice for a registry that wants credentials it was not given.
fn berth_login(domain: &str) -> String {
    format!("run berth login {domain}")
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: Vec::new(),
            insecure_all: false,
            certs_dirs: vec!["/etc/docker/certs.d".into(), "/etc/containers/certs.d".into()],
            ca_files: Vec::new(),
            retries: 5,
            backoff: Duration::from_millis(200),
            login_hint: berth_login,
        }
    }
}

/// How a host wants to be authenticated, learned from its `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// A bearer token and the moment it is renewed instead of sent.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// The token lifetime the distribution spec gives a response without `expires_in`.
const DEFAULT_TOKEN_SECS: u64 = 60;
/// The longest a token is kept, whatever `expires_in` says (a day): a huge value from a
/// hostile token server must not overflow the clock.
const MAX_TOKEN_SECS: u64 = 24 * 3600;
/// The most of a token response that is read (registries answer a few KiB).
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// The most of an error response that is read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

impl Token {
    /// A token that lives `expires_in` seconds from `asked` (when its request left): renewed
    /// a quarter of its life early (at most 30 s), so that a request never carries a token
    /// that expires on the way.
    fn new(value: String, asked: Instant, expires_in: Option<u64>) -> Token {
        let life = Duration::from_secs(expires_in.unwrap_or(DEFAULT_TOKEN_SECS).min(MAX_TOKEN_SECS));
        let early = (life / 4).min(Duration::from_secs(30));
        Token { value, renew_at: asked + life - early }
    }

    fn fresh(&self) -> bool {
        Instant::now() < self.renew_at
    }
}

/// A registry client; cheap to share between tasks (`&Client` is all they need).
pub struct Client {
    http: LazyHttp,
    unverified: LazyHttp,
    opts: ClientOptions,
    schemes: Mutex<HashMap<String, &'static str>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Bearer tokens by (host, scope), with when to stop using them.
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Credentials given on the command line (`berth login`), before config.json.
    explicit: Mutex<HashMap<String, Credential>>,
}

/// A reqwest client made on its first use: making one loads the system's CA certificates
/// (tens of milliseconds), which a command that never goes to the network (a cached build)
/// should not pay, let alone for each of its clients.
pub(crate) struct LazyHttp {
    make: Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>,
    client: std::sync::OnceLock<reqwest::Client>,
    /// Held while the client is made, so that threads asking at once make it once.
    making: Mutex<()>,
}

impl LazyHttp {
    /// A client that `make` configures, when first asked for.
    pub(crate) fn new(make: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static) -> LazyHttp {
        LazyHttp { make: Box::new(make), client: std::sync::OnceLock::new(), making: Mutex::new(()) }
    }

    /// The client, made now if it is not yet.
    pub(crate) fn get(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let _making = lock(&self.making);
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let built = (self.make)().build().map_err(|source| Error::Http {
            method: "INIT".into(),
            url: String::new(),
            source,
        })?;
        Ok(self.client.get_or_init(|| built))
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(16)
}

impl Client {
    /// A client with `opts`.
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let mut roots = Vec::new();
        let in_dirs = opts.certs_dirs.iter().flat_map(|dir| {
            let hosts = std::fs::read_dir(dir).into_iter().flatten().flatten();
            hosts.flat_map(|host| std::fs::read_dir(host.path()).into_iter().flatten().flatten().map(|f| f.path()))
        });
        let crts = in_dirs.filter(|p| p.extension().is_some_and(|e| e == "crt"));
        for p in crts.chain(opts.ca_files.iter().cloned()) {
            let pem = std::fs::read(&p).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Http {
                method: "LOAD".into(),
                url: p.display().to_string(),
                source: e,
            })?;
            roots.extend(certs);
        }
        Ok(Client {
            http: LazyHttp::new(move || roots.iter().cloned().fold(builder(), |b, c| b.add_root_certificate(c))),
            unverified: LazyHttp::new(|| builder().danger_accept_invalid_certs(true)),
            opts,
            schemes: Mutex::default(),
            challenges: Mutex::default(),
            tokens: Mutex::default(),
            explicit: Mutex::default(),
        })
    }

    /// Makes the HTTP clients now, loading the system's CA certificates: for a build whose
    /// steps will replace the root filesystem they are read from (`--isolation none`).
    pub fn warm(&self) -> Result<()> {
        self.http.get()?;
        self.unverified.get().map(drop)
    }

    /// Uses `cred` for `host` instead of what config.json holds.
    pub fn set_credential(&self, host: &str, cred: Credential) {
        lock(&self.explicit).insert(host.to_owned(), cred);
    }

    /// Checks `cred` against a registry (`GET /v2/` through the auth handshake).
    pub async fn check_login(&self, domain: &str, cred: Credential) -> Result<()> {
        self.set_credential(domain, cred);
        let host = super::registry_host(domain).to_owned();
        let resp = self.send(&host, domain, "", Method::GET, "/v2/", &|r| r, &super::NoProgress).await?;
        check("GET", resp).await.map(|_| ())
    }

    fn insecure(&self, host: &str) -> bool {
        self.opts.insecure_all || is_loopback(host) || self.opts.insecure.iter().any(|h| h == host)
    }

    fn http_for(&self, host: &str) -> Result<&reqwest::Client> {
        if self.insecure(host) {
            self.unverified.get()
        } else {
            self.http.get()
        }
    }

    fn credential(&self, domain: &str) -> Result<Option<Credential>> {
        if let Some(c) = lock(&self.explicit).get(domain) {
            return Ok(Some(c.clone()));
        }
        credentials::lookup(domain)
    }

    /// `https://host` or, for insecure hosts that do not speak TLS, `http://host`; asks
    /// `/v2/` once per host and remembers the answer.
    async fn base(&self, host: &str) -> Result<String> {
        if let Some(s) = lock(&self.schemes).get(host) {
            return Ok(format!("{s}://{host}"));
        }
        let scheme = if !self.insecure(host) {
            "https"
        } else {
            match self.unverified.get()?.get(format!("https://{host}/v2/")).send().await {
                Ok(_) => "https",
                Err(_) => "http",
            }
        };
        lock(&self.schemes).insert(host.to_owned(), scheme);
        Ok(format!("{scheme}://{host}"))
    }

    /// Sends a request to `host` for `scope` (`repository:<name>:pull,push`), handling the
    /// auth challenge and retrying 5xx, 429 and dropped connections with backoff.
    /// `make` builds the request afresh for every attempt.
    #[allow(clippy::too_many_arguments)] // one call site per verb; a struct would only rename them
    pub(crate) async fn send(
        &self,
        host: &str,
        domain: &str,
        scope: &str,
        method: Method,
        path_and_query: &str,
        make: &(dyn Fn(RequestBuilder) -> RequestBuilder + Sync),
        progress: &dyn super::Progress,
    ) -> Result<Response> {
        let url = if path_and_query.starts_with("http://") || path_and_query.starts_with("https://") {
            path_and_query.to_owned()
        } else {
            format!("{}{path_and_query}", self.base(host).await?)
        };
        let mut attempt = 0;
        let mut authenticated_once = false;
        loop {
            let mut req = make(self.http_for(host)?.request(method.clone(), &url));
            if let Some(Challenge::Bearer { realm, service }) = self.stale_bearer(host, scope) {
                // The host's challenge is known: renew before sending, not after a 401.
                self.fetch_token(host, domain, scope, &realm, service.as_deref()).await?;
            }
            if let Some(h) = self.auth_header(host, domain, scope)? {
                req = req.header("authorization", h);
            }
            let result = req.send().await;
            let retryable = match &result {
                Ok(r) => r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS,
                Err(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            };
            if retryable && attempt + 1 < self.opts.retries {
                attempt += 1;
                progress.event(super::Event::Retry { what: format!("{method} {url}"), attempt });
                tokio::time::sleep(self.opts.backoff * 2u32.pow(attempt - 1)).await;
                continue;
            }
            let resp = result.map_err(|source| Error::Http { method: method.to_string(), url: url.clone(), source })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !authenticated_once {
                authenticated_once = true;
                self.authenticate(host, domain, scope, &resp).await?;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                let reason = match self.credential(domain)? {
                    Some(_) => error_message(resp).await,
                    None => {
                        let hint = (self.opts.login_hint)(domain);
                        format!("{} (no credentials: {hint})", error_message(resp).await)
                    }
                };
                return Err(Error::Unauthorized { registry: domain.to_owned(), reason });
            }
            return Ok(resp);
        }
    }

    fn auth_header(&self, host: &str, domain: &str, scope: &str) -> Result<Option<String>> {
        let challenge = lock(&self.challenges).get(host).cloned();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credential(domain)?.map(|c| basic(&c))),
            Some(Challenge::Bearer { .. }) => {
                Ok(lock(&self.tokens).get(&(host.to_owned(), scope.to_owned())).map(|t| format!("Bearer {}", t.value)))
            }
        }
    }

    /// The host's bearer challenge when the token for `scope` is near its expiry: a token
    /// is used until then and renewed before it lapses. Scopes never asked for are left to
    /// the 401 handshake, which names the scope the host wants.
    fn stale_bearer(&self, host: &str, scope: &str) -> Option<Challenge> {
        let stale = lock(&self.tokens).get(&(host.to_owned(), scope.to_owned())).is_some_and(|t| !t.fresh());
        let challenge = lock(&self.challenges).get(host).cloned();
        challenge.filter(|c| stale && matches!(c, Challenge::Bearer { .. }))
    }

    async fn authenticate(&self, host: &str, domain: &str, scope: &str, resp: &Response) -> Result<()> {
        let header = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
        let challenge = parse_challenge(header).ok_or_else(|| Error::Unauthorized {
            registry: domain.to_owned(),
            reason: format!("unsupported challenge {header:?}"),
        })?;
        lock(&self.challenges).insert(host.to_owned(), challenge.clone());
        let Challenge::Bearer { realm, service } = challenge else {
            return Ok(());
        };
        self.fetch_token(host, domain, scope, &realm, service.as_deref()).await
    }

    /// Asks the token endpoint `realm` for a token for `scope` (with the domain's
    /// credentials, or anonymously) and keeps it until [`Token::fresh`] says otherwise.
    async fn fetch_token(
        &self,
        host: &str,
        domain: &str,
        scope: &str,
        realm: &str,
        service: Option<&str>,
    ) -> Result<()> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", s));
        }
        let mut req = self.http_for(host)?.get(realm).query(&query);
        if let Some(c) = self.credential(domain)? {
            req = req.header("authorization", basic(&c));
        }
        let asked = Instant::now();
        let http = |source| Error::Http { method: "GET".into(), url: realm.to_owned(), source };
        let r = req.send().await.map_err(http)?;
        if !r.status().is_success() {
            let status = r.status();
            let msg = error_message(r).await;
            return Err(Error::Unauthorized {
                registry: domain.to_owned(),
                reason: format!("token request: {status}: {msg}"),
            });
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = read_capped(r, MAX_TOKEN_RESPONSE).await.map_err(http)?;
        if body.len() >= MAX_TOKEN_RESPONSE {
            return Err(Error::Unauthorized {
                registry: domain.to_owned(),
                reason: format!("token response over {} KiB", MAX_TOKEN_RESPONSE >> 10),
            });
        }
        let t: Answer =
            serde_json::from_slice(&body).map_err(|source| Error::InvalidJson { what: "token response", source })?;
        let value = t.token.or(t.access_token).ok_or_else(|| Error::Unauthorized {
            registry: domain.to_owned(),
            reason: "token endpoint returned no token".into(),
        })?;
        lock(&self.tokens).insert((host.to_owned(), scope.to_owned()), Token::new(value, asked, t.expires_in));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn basic(c: &Credential) -> String {
    format!("Basic {}", STANDARD.encode(format!("{}:{}", c.username, c.secret)))
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        rest = tail.trim_start_matches([',', ' ']);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            Some(Challenge::Bearer { realm: params.get("realm")?.clone(), service: params.get("service").cloned() })
        }
        _ => None,
    }
}

/// The errors of a spec error body (`{"errors":[{"code":..,"message":..}]}`), if it is one.
fn spec_errors(body: &str) -> Vec<(Option<String>, String)> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorBody>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        code: Option<String>,
        message: Option<String>,
    }
    serde_json::from_str::<Errors>(body)
        .map(|e| e.errors.into_iter().map(|x| (x.code, x.message.unwrap_or_default())).collect())
        .unwrap_or_default()
}

/// Reads `resp`'s body up to `cap` bytes and stops there: a server cannot make the client
/// hold more.
pub(crate) async fn read_capped(mut resp: Response, cap: usize) -> std::result::Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < cap {
        let Some(chunk) = resp.chunk().await? else { break };
        body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]);
    }
    Ok(body)
}

/// A manifest's body, read up to one byte past [`MAX_MANIFEST_SIZE`] and refused past it: a
/// body sent without a length (or with a false one) cannot grow without end.
pub(crate) async fn read_manifest(resp: Response, url: &str) -> Result<Vec<u8>> {
    let too_big = || Error::InvalidDocument { what: "manifest", reason: "larger than 4 MiB".into() };
    if resp.content_length().is_some_and(|n| n > crate::manifest::MAX_MANIFEST_SIZE as u64) {
        return Err(too_big());
    }
    let body = read_capped(resp, crate::manifest::MAX_MANIFEST_SIZE + 1).await.map_err(|source| Error::Http {
        method: "GET".into(),
        url: url.to_owned(),
        source,
    })?;
    if body.len() > crate::manifest::MAX_MANIFEST_SIZE {
        return Err(too_big());
    }
    Ok(body)
}

/// The first [`MAX_ERROR_BODY`] bytes of an error response, as text (empty if unreadable).
async fn error_body(resp: Response) -> String {
    String::from_utf8_lossy(&read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default()).into_owned()
}

/// The registry's error message from a failed response (the spec's JSON, or the status).
pub(crate) async fn error_message(resp: Response) -> String {
    let status = resp.status();
    let errors = spec_errors(&error_body(resp).await);
    if errors.is_empty() {
        return status.canonical_reason().unwrap_or("error").to_lowercase();
    }
    errors.iter().map(|(c, m)| format!("{}: {m}", c.as_deref().unwrap_or("?"))).collect::<Vec<_>>().join("; ")
}

/// Turns a non-success response into [`Error::Registry`].
pub(crate) async fn check(method: &str, resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let retry_after =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let (code, message) = spec_errors(&error_body(resp).await).into_iter().next().unwrap_or((None, String::new()));
    Err(Error::Registry { method: method.to_owned(), url, status, code, message, retry_after })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "a bearer challenge needs a realm");
    }

    #[test]
    fn tokens_are_renewed_a_quarter_of_their_life_early_and_at_most_30_s() {
        let now = Instant::now();
        assert_eq!(Token::new("t".into(), now, Some(4)).renew_at, now + Duration::from_secs(3));
        assert_eq!(Token::new("t".into(), now, Some(300)).renew_at, now + Duration::from_secs(270));
        assert_eq!(Token::new("t".into(), now, None).renew_at, now + Duration::from_secs(45), "60 s by default");
        assert!(!Token::new("t".into(), now, Some(0)).fresh());
        let hostile = Token::new("t".into(), now, Some(u64::MAX));
        assert_eq!(hostile.renew_at, now + Duration::from_secs(MAX_TOKEN_SECS - 30), "kept a day at most, no overflow");
    }

    /// A server on 127.0.0.1 that answers every request with `head`, then an endless body of
    /// `x` (chunked).
    pub(crate) async fn endless(head: &'static str) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = [0u8; 4096];
                    let _ = conn.read(&mut req).await;
                    conn.write_all(head.as_bytes()).await.unwrap();
                    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                    while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_endless_body_is_read_up_to_the_cap_and_no_further() {
        let head = "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n";
        let addr = endless(head).await;
        let resp = reqwest::get(format!("http://{addr}/")).await.unwrap();
        let body = read_capped(resp, 3 << 20).await.unwrap();
        assert_eq!(body.len(), 3 << 20);
        let resp = reqwest::get(format!("http://{}/", endless(head).await)).await.unwrap();
        let err = check("GET", resp).await.unwrap_err();
        assert!(matches!(err, Error::Registry { status: 500, .. }), "{err}");
    }
}
