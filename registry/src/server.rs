//! Serving the router over TCP, plain or TLS, with graceful shutdown and the connection
//! [`Limits`] that keep idle, slow or half-sent connections from exhausting the process.

mod conn;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use serde::{Deserialize, Deserializer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate or key could not be read or used.
    #[error("tls: {0}")]
    Tls(String),
    /// Listening failed.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// How long a client may keep a connection without making progress, and how many connections
/// may be open at once: the `[limits]` table of the config. Durations are strings with a unit
/// (`"500ms"`, `"30s"`, `"5m"`, `"1h"`); every value must be more than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The time to send a complete request head: from the end of the TLS handshake for the
    /// first request, from its first byte for later ones.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// The longest wait for the next piece of a request body, or for the client to take the
    /// next piece of a response; per read and write, so a slow but moving transfer survives.
    #[serde(deserialize_with = "duration")]
    pub body_idle_timeout: Duration,
    /// How long a connection with no request in progress stays open for the next one.
    #[serde(deserialize_with = "duration")]
    pub keep_alive_timeout: Duration,
    /// The time a TLS client has to complete its handshake.
    #[serde(deserialize_with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// Connections served at once; when all are taken, new ones wait in the listen queue.
    #[serde(deserialize_with = "connection_count")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// The most connections a config may ask for (a semaphore's permits are counted in `u32`).
const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// File descriptors kept free for everything that is not a client socket (storage, logs).
const FD_RESERVE: u64 = 64;

/// Parses `"500ms"`, `"30s"`, `"5m"` or `"1h"`; zero is refused (it would close everything).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || format!("{text:?}: expected a whole number and a unit (ms, s, m, h), as \"30s\"");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = |factor: u64| n.checked_mul(factor).map(Duration::from_secs).ok_or_else(bad);
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => secs(1)?,
        "m" => secs(60)?,
        "h" => secs(3600)?,
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(d)
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration with a unit, as \"30s\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Text)
}

/// [`duration`] for an optional setting.
pub(crate) fn duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn connection_count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 || n > MAX_CONNECTIONS_LIMIT {
        return Err(serde::de::Error::custom(format!(
            "max_connections {n}: must be from 1 to {MAX_CONNECTIONS_LIMIT}"
        )));
    }
    Ok(n)
}

/// A rustls server config (ring, TLS 1.2 and 1.3, h2 and http/1.1) from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!("{}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `router` on `listener` within the default [`Limits`] until `shutdown` resolves; see
/// [`serve_with_limits`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with_limits(listener, router, tls, Limits::default(), shutdown).await
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then stops
/// accepting and lets requests in flight finish (for up to 30 seconds).
///
/// At most `limits.max_connections` connections are served at once (fewer if the open-file
/// limit, raised to its hard maximum here, cannot hold them): while all are taken the loop
/// stops accepting, so new clients wait in the kernel's listen queue until one closes.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let cap = connection_cap(limits.max_connections);
    let permits = Arc::new(Semaphore::new(cap));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shared = Arc::new(conn::Shared {
        builder: http_builder(),
        router,
        limits,
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
    });
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "connection limit closed");
                    break;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(conn::handle(shared.clone(), stream, peer, stopped.clone(), permit));
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    stop.send_replace(true);
    // Every connection holds a permit until it ends: having them all back means all ended.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(30), permits.acquire_many(all)).await.is_err() {
        tracing::warn!("requests still running after 30s; closing");
    }
    Ok(())
}

/// Has glibc keep freed memory in its heap rather than give it back to the kernel at once.
/// Each connection's read buffer (up to about 400 KB) is freed and allocated again as
/// requests come and go; with glibc's sliding thresholds the freed pages went back to the
/// kernel, and the next buffer faulted fresh ones in and had them cleared: about 6,000 page
/// faults per gigabyte pushed, 50 with these settings (bench/README.md, 2026-12-07). Up to 64
/// MiB of free heap is kept per glibc arena (one per thread that allocates, up to eight per
/// core), and allocations up to 4 MiB come from the heap. Process-wide: `berth registry
/// serve` calls it, a program embedding the server chooses for itself.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value, name) in
        [(libc::M_MMAP_THRESHOLD, 4 << 20, "M_MMAP_THRESHOLD"), (libc::M_TRIM_THRESHOLD, 64 << 20, "M_TRIM_THRESHOLD")]
    {
        // SAFETY: `mallopt` only sets a parameter of glibc's allocator, under its own lock.
        if unsafe { libc::mallopt(param, value) } != 1 {
            tracing::debug!(name, value, "mallopt refused an allocator setting");
        }
    }
}

/// hyper's HTTP/1 and HTTP/2 builder; the timeouts are ours (see `conn`), so hyper's own
/// header timer, which would also cut idle keep-alive connections, stays off.
fn http_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    builder
}

/// The connections to serve at once: `wanted`, or fewer if the open-file limit (raised to
/// its hard maximum first) cannot hold two descriptors per connection (its socket and an
/// open blob) plus a reserve.
fn connection_cap(wanted: usize) -> usize {
    let Some(soft) = raise_fd_limit() else { return wanted };
    let fit = usize::try_from(soft.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX).max(1);
    if wanted > fit {
        tracing::warn!(
            max_connections = wanted,
            open_files = soft,
            serving = fit,
            "the open-file limit cannot hold max_connections; serving fewer (raise `ulimit -n`)"
        );
        return fit;
    }
    wanted
}

/// Raises the soft open-file limit (often 1024) to the hard one, so the connection cap and
/// not the descriptor table decides how many clients fit; returns the soft limit in force
/// (`None`: unlimited).
fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    // Linux refuses more than fs.nr_open (1048576 by default), whatever the hard limit says.
    const NR_OPEN: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let target = limit.maximum.unwrap_or(NR_OPEN).min(NR_OPEN);
    if limit.current.is_some_and(|soft| soft < target) {
        let raised = rustix::process::Rlimit { current: Some(target), maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, target, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_more_than_zero() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["30", "0s", "s", "1.5s", "-1s", "10d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn limits_parse_from_toml_with_defaults_for_missing_keys() {
        let l: Limits = toml::from_str("header_read_timeout = \"5s\"\nmax_connections = 100").unwrap();
        assert_eq!(l.header_read_timeout, Duration::from_secs(5));
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.keep_alive_timeout, Limits::default().keep_alive_timeout);
        assert!(toml::from_str::<Limits>("max_connections = 0").is_err());
        assert!(toml::from_str::<Limits>("keep_alive = \"5s\"").unwrap_err().to_string().contains("unknown field"));
        let bare = toml::from_str::<Limits>("body_idle_timeout = 60").unwrap_err().to_string();
        assert!(bare.contains("a duration with a unit"), "{bare}");
    }

    #[test]
    fn the_fd_limit_is_raised_and_bounds_the_cap() {
        let soft = raise_fd_limit();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        if let (Some(soft), Some(hard)) = (soft, hard) {
            assert!(soft >= hard.min(1 << 20), "soft limit {soft} not raised to {hard}");
            assert!(connection_cap(usize::MAX) as u64 <= soft);
        }
        assert_eq!(connection_cap(10), 10);
    }
}
