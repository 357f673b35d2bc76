//! Plain HTTP(S) downloads, for `ADD <url>`: bounded waits, retries with backoff, and errors
//! that name the URL.
//!
//! A download gives up on a server that does not accept the connection within the connect
//! timeout, or that sends nothing for the idle timeout (while the headers or the body are
//! awaited). Dropped connections, timeouts, 5xx, 408 and 429 answers are retried with a
//! doubling backoff; any other status (a 404) fails at once, without a retry storm.
//! The defaults can be changed with environment variables, read by [`DownloadOptions::from_env`]:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BERTH_ADD_CONNECT_TIMEOUT` | seconds to wait for a connection | 30 |
//! | `BERTH_ADD_IDLE_TIMEOUT` | seconds without a byte before a download is given up | 60 |
//! | `BERTH_ADD_RETRIES` | retries after the first attempt | 3 |
//! | `BERTH_ADD_RETRY_BACKOFF` | seconds before the first retry (doubling after) | 1 |

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// How patient a download is.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadOptions {
    /// How long to wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long the server may stay silent, before the headers or between body bytes.
    pub idle_timeout: Duration,
    /// Retries after the first attempt, for failures that may pass.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each one after.
    pub backoff: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

impl DownloadOptions {
    /// The defaults, with what the `BERTH_ADD_*` variables say instead (see the module docs).
    pub fn from_env() -> Result<DownloadOptions> {
        let mut o = DownloadOptions::default();
        if let Some(d) = env_seconds("BERTH_ADD_CONNECT_TIMEOUT")? {
            o.connect_timeout = d;
        }
        if let Some(d) = env_seconds("BERTH_ADD_IDLE_TIMEOUT")? {
            o.idle_timeout = d;
        }
        if let Some(d) = env_seconds("BERTH_ADD_RETRY_BACKOFF")? {
            o.backoff = d;
        }
        if let Ok(v) = std::env::var("BERTH_ADD_RETRIES") {
            o.retries = v.trim().parse().map_err(|_| Error::InvalidSetting {
                name: "BERTH_ADD_RETRIES".into(),
                value: v.clone(),
                reason: "give a whole number of retries, like 3".into(),
            })?;
        }
        Ok(o)
    }
}

/// A positive number of seconds (`30`, `0.5`) from the environment, if set.
fn env_seconds(name: &str) -> Result<Option<Duration>> {
    let Ok(v) = std::env::var(name) else { return Ok(None) };
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(Error::InvalidSetting {
            name: name.into(),
            value: v.clone(),
            reason: "give a positive number of seconds, like 30 or 0.5".into(),
        }),
    }
}

/// Downloads URLs into files; cheap to share between threads (`&Downloader` is all a
/// download needs), so one build uses one connection pool.
pub struct Downloader {
    http: super::transport::LazyHttp,
    opts: DownloadOptions,
}

/// Why one attempt failed, and whether another may do better.
struct Failed {
    reason: String,
    retry: bool,
    status: Option<u16>,
}

impl Downloader {
    /// A downloader with `opts`.
    pub fn new(opts: DownloadOptions) -> Result<Downloader> {
        let (connect, idle) = (opts.connect_timeout, opts.idle_timeout);
        let http = super::transport::LazyHttp::new(move || {
            reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(connect)
                .read_timeout(idle)
        });
        Ok(Downloader { http, opts })
    }

    /// A downloader configured by the `BERTH_ADD_*` environment variables.
    pub fn from_env() -> Result<Downloader> {
        Downloader::new(DownloadOptions::from_env()?)
    }

    /// Downloads `url` into `dest` (created or truncated, synced when complete) and returns
    /// its size. Each retry starts the file again.
    pub async fn fetch(&self, url: &str, dest: &Path) -> Result<u64> {
        let mut attempt = 0;
        loop {
            let failed = match self.attempt(url, dest).await {
                Ok(size) => return Ok(size),
                Err(AttemptError::Io(e)) => return Err(e),
                Err(AttemptError::Failed(f)) => f,
            };
            if !failed.retry || attempt >= self.opts.retries {
                let tries = if attempt > 0 { format!(" (after {} attempts)", attempt + 1) } else { String::new() };
                return Err(Error::Download {
                    url: url.to_owned(),
                    reason: format!("{}{tries}", failed.reason),
                    status: failed.status,
                });
            }
            tokio::time::sleep(self.opts.backoff * 2u32.saturating_pow(attempt)).await;
            attempt += 1;
        }
    }

    /// Makes the HTTP client now, as [`super::Client::warm`] does.
    pub fn warm(&self) -> Result<()> {
        self.http.get().map(drop)
    }

    async fn attempt(&self, url: &str, dest: &Path) -> std::result::Result<u64, AttemptError> {
        let http = self.http.get().map_err(AttemptError::Io)?;
        let mut resp = http.get(url).send().await.map_err(|e| AttemptError::Failed(self.explain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let retry = status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS;
            return Err(AttemptError::Failed(Failed {
                reason: format!("the server answered {status}"),
                retry,
                status: Some(status.as_u16()),
            }));
        }
        let io = |what: &str, e: std::io::Error| AttemptError::Io(Error::io(format!("{what} {}", dest.display()), e));
        let mut f = tokio::fs::File::create(dest).await.map_err(|e| io("create", e))?;
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| AttemptError::Failed(self.explain(&e)))? {
            f.write_all(&chunk).await.map_err(|e| io("write", e))?;
            size += chunk.len() as u64;
        }
        f.sync_all().await.map_err(|e| io("sync", e))?;
        Ok(size)
    }

    /// A transport error in words a user can act on; all but a malformed URL may pass.
    fn explain(&self, e: &reqwest::Error) -> Failed {
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        if e.is_builder() {
            return Failed {
                reason: format!("not a URL berth can fetch: {}", root_cause(e)),
                retry: false,
                status: None,
            };
        }
        let reason = if e.is_connect() && e.is_timeout() {
            format!("no connection within {} (BERTH_ADD_CONNECT_TIMEOUT)", secs(self.opts.connect_timeout))
        } else if e.is_timeout() {
            format!("the server sent nothing for {} (BERTH_ADD_IDLE_TIMEOUT)", secs(self.opts.idle_timeout))
        } else if e.is_connect() {
            format!("cannot connect: {}", root_cause(e))
        } else {
            format!("the transfer failed: {}", root_cause(e))
        };
        Failed { reason, retry: true, status: None }
    }
}

enum AttemptError {
    /// Our own side failed (the disk, the TLS set-up): retrying the server will not help.
    Io(Error),
    /// The server or the network failed.
    Failed(Failed),
}

/// The innermost cause of an error: reqwest's own messages repeat the URL and say little.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server on 127.0.0.1 that answers the n-th request (from 0) with `answer(n)`:
    /// `None` holds the connection open and silent. Returns its base URL and request count.
    fn server(answer: impl Fn(usize) -> Option<String> + Send + 'static) -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.read(&mut [0u8; 4096]);
                match answer(seen.fetch_add(1, Ordering::SeqCst)) {
                    Some(resp) => {
                        let _ = conn.write_all(resp.as_bytes());
                    }
                    None => held.push(conn),
                }
            }
        });
        (url, count)
    }

    fn reply(status: &str, body: &str) -> Option<String> {
        Some(format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()))
    }

    fn quick(retries: u32) -> Downloader {
        Downloader::new(DownloadOptions {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(300),
            retries,
            backoff: Duration::from_millis(20),
        })
        .unwrap()
    }

    fn fetch(d: &Downloader, url: &str, dest: &Path) -> Result<u64> {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(d.fetch(url, dest))
    }

    #[test]
    fn a_silent_server_times_out_quickly_with_the_url_named() {
        let (url, count) = server(|_| None);
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let e = fetch(&quick(1), &format!("{url}/stall.bin"), &dir.path().join("f")).unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("download {url}/stall.bin: ")), "{shown}");
        assert!(shown.contains("sent nothing for 0.3s") && shown.contains("after 2 attempts"), "{shown}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(e.kind(), crate::ErrorKind::Network);
    }

    #[test]
    fn server_errors_are_retried_until_the_download_succeeds() {
        let (url, count) =
            server(|n| if n < 2 { reply("503 Service Unavailable", "busy") } else { reply("200 OK", "payload") });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        assert_eq!(fetch(&quick(3), &format!("{url}/f"), &dest).unwrap(), 7);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "payload", "the failed attempts left nothing behind");
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn not_found_fails_at_once() {
        let (url, count) = server(|_| reply("404 Not Found", "no"));
        let dir = tempfile::tempdir().unwrap();
        let e = fetch(&quick(5), &format!("{url}/missing"), &dir.path().join("f")).unwrap_err();
        assert_eq!(e.to_string(), format!("download {url}/missing: the server answered 404 Not Found"));
        assert_eq!(count.load(Ordering::SeqCst), 1, "a 404 is not retried");
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }

    #[test]
    fn a_body_cut_short_is_retried() {
        let (url, count) = server(|n| {
            if n == 0 {
                Some("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\npartial".into())
            } else {
                reply("200 OK", "whole")
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        assert_eq!(fetch(&quick(2), &format!("{url}/f"), &dest).unwrap(), 5);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "whole");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn settings_come_from_the_environment_and_bad_ones_are_refused() {
        // One test touches these variables, so no other test races with it.
        std::env::set_var("BERTH_ADD_IDLE_TIMEOUT", "0.5");
        std::env::set_var("BERTH_ADD_RETRIES", "1");
        let o = DownloadOptions::from_env().unwrap();
        assert_eq!((o.idle_timeout, o.retries), (Duration::from_millis(500), 1));
        assert_eq!(o.connect_timeout, Duration::from_secs(30));
        std::env::set_var("BERTH_ADD_IDLE_TIMEOUT", "soon");
        let e = DownloadOptions::from_env().unwrap_err();
        assert!(e.to_string().starts_with("invalid BERTH_ADD_IDLE_TIMEOUT=\"soon\""), "{e}");
        std::env::remove_var("BERTH_ADD_IDLE_TIMEOUT");
        std::env::remove_var("BERTH_ADD_RETRIES");
    }
}
