//! The pull-through mirror: repositories under a mirror entry's prefix (or all of them, for
//! an entry without one) are read from an upstream registry on first use and served from
//! storage after; every other repository is an ordinary private one on the same instance.
//!
//! - Manifests by digest are fetched once and kept. A tag is served from storage while
//!   younger than the entry's `tag_ttl`, then revalidated with a HEAD (which Docker Hub does
//!   not count as a pull) and fetched again only when its digest moved.
//! - Blobs stream to the first client as they arrive ([`fill`]), through a spool file that
//!   any number of concurrent clients read, while the same bytes go to storage through the
//!   upload path of a push; the blob is committed only after its digest and size check.
//!   One fetch per missing blob or manifest, however many clients ask at once.
//! - When the upstream is down, slow or refusing (429, 5xx), stored content is still
//!   served (stale tags with a warning and a metric); what is not stored gets UNAVAILABLE
//!   or TOOMANYREQUESTS (with the upstream's Retry-After) within the entry's `timeout`.

mod config;
mod fill;
mod manifests;
mod spool;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use config::{parse_size, MirrorConfig};

use crate::domain::{Registry, RepoName};
use crate::error::{ErrorCode, RegistryError};

/// The mirror entries of a registry, their upstream clients, fills and counters.
pub struct Mirror {
    upstreams: Vec<Arc<Upstream>>,
    /// The registry, accepting manifests whose layers are not fetched yet.
    registry: Registry,
    fills: fill::Fills,
    locks: manifests::Locks,
    /// When each (repository, manifest) was last recorded as pulled.
    touched: std::sync::Mutex<std::collections::HashMap<(String, oci::Digest), std::time::Instant>>,
}

/// How often a manifest's pull is written down (gc's eviction needs no finer time).
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// One mirror entry.
struct Upstream {
    config: MirrorConfig,
    remote: oci::client::Remote,
    stats: Stats,
}

/// What `/metrics` reports per upstream.
#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    revalidations: AtomicU64,
    stale: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Mirror {
    /// The mirror over `registry` for `entries`; credentials from files and helpers are read
    /// now, so a wrong one fails at start-up, not at the first pull.
    pub async fn new(entries: Vec<MirrorConfig>, registry: Registry) -> Result<Mirror, String> {
        let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
        for config in entries {
            config.check()?;
            if let Some(twin) = upstreams.iter().find(|u| u.config.prefix == config.prefix) {
                let at = config.prefix.as_deref().map_or("the root".to_owned(), |p| format!("prefix {p:?}"));
                return Err(format!("two mirrors at {at}: {} and {}", twin.config.url, config.url));
            }
            let host = config.url.split("://").nth(1).unwrap_or_default().trim_end_matches('/').to_owned();
            let opts = oci::client::ClientOptions {
                insecure: if config.insecure || config.url.starts_with("http://") { vec![host] } else { vec![] },
                ca_files: config.ca_file.iter().cloned().collect(),
                // Fail fast: a stale copy served now beats a fresh one in a minute.
                retries: 1,
                login_hint: |_| "give username and password_file, or credential_helper, in its [[mirror]] entry".into(),
                ..Default::default()
            };
            let client = Arc::new(oci::client::Client::new(opts).map_err(|e| format!("mirror {}: {e}", config.url))?);
            let remote = oci::client::Remote::new(client.clone(), &config.url).map_err(|e| e.to_string())?;
            if let Some(cred) = credential(&config, remote.domain()).await? {
                client.set_credential(remote.domain(), cred);
            }
            upstreams.push(Arc::new(Upstream { config, remote, stats: Stats::default() }));
        }
        let spool = spool::Spool::new().map_err(|e| format!("spool: {e}"))?;
        Ok(Mirror {
            upstreams,
            registry: registry.allow_sparse(true).cached_writes(true),
            fills: fill::Fills::new(spool),
            locks: manifests::Locks::default(),
            touched: std::sync::Mutex::default(),
        })
    }

    /// The entry serving `name` and the repository's name upstream: the longest prefix
    /// that matches, else a root entry.
    fn route<'a>(&self, name: &'a RepoName) -> Option<(&Arc<Upstream>, &'a str)> {
        let by_prefix = self
            .upstreams
            .iter()
            .filter_map(|u| Some((u, u.config.upstream_repository(name.as_str())?, u.config.prefix.as_ref()?.len())))
            .max_by_key(|(_, _, len)| *len)
            .map(|(u, r, _)| (u, r));
        by_prefix.or_else(|| self.upstreams.iter().find(|u| u.config.prefix.is_none()).map(|u| (u, name.as_str())))
    }

    /// The mirror's repositories as garbage collection sees them.
    pub fn gc_scopes(&self) -> Vec<crate::gc::MirrorScope> {
        self.upstreams.iter().map(|u| u.config.scope()).collect()
    }

    /// Records that a manifest was served, at most every few minutes per manifest: its
    /// revision link's time is what garbage collection evicts the least recent by.
    async fn touch(&self, name: &RepoName, digest: &oci::Digest) {
        let key = (name.to_string(), digest.clone());
        {
            let mut touched = self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if touched.get(&key).is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
                return;
            }
            if touched.len() > 100_000 {
                touched.clear();
            }
            touched.insert(key, std::time::Instant::now());
        }
        if let Err(e) = self.registry.touch_revision(name, digest).await {
            tracing::warn!(repository = %name, %digest, error = %e, "mirror: could not record a pull");
        }
    }

    /// True when `name` is mirrored content (pushes to it are refused).
    pub fn covers(&self, name: &RepoName) -> bool {
        self.route(name).is_some()
    }

    /// The refusal of a push into a mirrored repository.
    pub fn refuse_push(&self, name: &RepoName) -> Option<RegistryError> {
        let (up, _) = self.route(name)?;
        Some(RegistryError::new(
            ErrorCode::Denied,
            format!("{name} is mirrored from {}; push to a repository outside the mirror's prefix", up.config.url),
        ))
    }

    /// Appends the mirror's counters, per upstream, in Prometheus' text format.
    pub fn render_metrics(&self, out: &mut String) {
        let series = [
            ("berth_mirror_hits_total", "Requests served from storage.", 0),
            ("berth_mirror_misses_total", "Requests that fetched from the upstream.", 1),
            ("berth_mirror_revalidations_total", "Tags checked with the upstream after their TTL.", 2),
            ("berth_mirror_stale_total", "Stale tags served while the upstream failed.", 3),
            ("berth_mirror_upstream_bytes_total", "Blob bytes fetched from the upstream.", 4),
            ("berth_mirror_upstream_errors_total", "Upstream requests that failed.", 5),
        ];
        for (name, help, i) in series {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for u in &self.upstreams {
                let s = &u.stats;
                let c = [&s.hits, &s.misses, &s.revalidations, &s.stale, &s.bytes, &s.errors][i];
                out.push_str(&format!("{name}{{upstream=\"{}\"}} {}\n", u.config.url, c.load(Ordering::Relaxed)));
            }
        }
    }
}

/// The upstream credential an entry names: inline, in a file, or from a helper.
async fn credential(c: &MirrorConfig, domain: &str) -> Result<Option<oci::client::credentials::Credential>, String> {
    use oci::client::credentials::Credential;
    if let Some(helper) = &c.credential_helper {
        let (helper, domain) = (helper.clone(), domain.to_owned());
        return tokio::task::spawn_blocking(move || oci::client::credentials::from_helper(&helper, &domain))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("mirror {}: credential helper: {e}", c.url));
    }
    let password = match (&c.password, &c.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("mirror {}: read {}: {e}", c.url, f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(match (&c.username, password) {
        (Some(u), Some(p)) => Some(Credential { username: u.clone(), secret: p }),
        (None, None) => None,
        _ => return Err(format!("mirror {}: give both a username and a password (or a file)", c.url)),
    })
}

/// What an upstream failure becomes for the client: the content is not stored, so the
/// upstream's answer decides (404 is unknown content, 429 keeps its Retry-After, the rest is
/// UNAVAILABLE).
fn upstream_error(up: &Upstream, what: &str, missing: ErrorCode, e: &oci::Error) -> RegistryError {
    bump(&up.stats.errors, 1);
    tracing::warn!(upstream = %up.config.url, what, error = %e, "mirror: upstream request failed");
    match e {
        oci::Error::Registry { status: 404, .. } => {
            RegistryError::new(missing, format!("{what} is not in {}", up.config.url))
        }
        oci::Error::Registry { status: 429, retry_after, .. } => {
            let err =
                RegistryError::new(ErrorCode::TooManyRequests, format!("{} limits pulls; try later", up.config.url));
            match retry_after {
                Some(s) => err.with_header("Retry-After", s.to_string()),
                None => err,
            }
        }
        _ => RegistryError::new(ErrorCode::Unavailable, format!("upstream {} unavailable: {e}", up.config.url)),
    }
}

/// The error of an upstream request that took longer than the entry's timeout.
fn timed_out(up: &Upstream, what: &str) -> RegistryError {
    bump(&up.stats.errors, 1);
    tracing::warn!(upstream = %up.config.url, what, "mirror: upstream timed out");
    RegistryError::new(ErrorCode::Unavailable, format!("upstream {} did not answer in time", up.config.url))
}
