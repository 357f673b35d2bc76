//! The domain layer: repositories of blobs, uploads, manifests and tags, on top of a
//! [`StorageDriver`]. Handlers call this; it calls [`crate::paths`] for every location.
//!
//! Nothing here holds state that storage does not. Two caches save storage round trips and
//! can never be stale: the running hash of uploads this process is serving (it saves
//! re-reading an upload to verify it), and manifest bodies by digest (content-addressed,
//! so they never change; tags and links are still read from storage on every request,
//! since another replica may move or delete them).

mod blobs;
mod manifests;
mod tags;
mod uploads;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;

pub use manifests::{check_tag_count, StoredManifest, MAX_TAGS_PER_PUSH};
pub use tags::RepositorySummary;
pub use uploads::{range_header, UploadId};

use crate::driver::StorageDriver;
use crate::error::{ErrorCode, RegistryError, Result};

/// A request or response body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A validated repository name (`library/busybox`), as the spec's grammar allows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl FromStr for RepoName {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self> {
        oci::reference::check_repository_path(s)
            .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, format!("invalid repository name: {e}")))?;
        Ok(RepoName(s.to_owned()))
    }
}

impl RepoName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a digest from a URL or query, as the spec's DIGEST_INVALID.
pub fn parse_digest(s: &str) -> Result<oci::Digest> {
    s.parse().map_err(|e: oci::Error| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))
}

/// The registry's content: cheap to clone, shared by all handlers.
#[derive(Clone)]
pub struct Registry {
    driver: Arc<dyn StorageDriver>,
    /// Upload sessions this process has seen, by id: a lock that lets one request at a time
    /// write, finish or cancel the session, and the running sha256 it guards.
    sessions: Arc<Mutex<HashMap<String, uploads::Session>>>,
    /// Manifest bodies served lately, by digest.
    manifests: Arc<Mutex<ManifestCache>>,
    /// Accept image manifests whose layers are not in the repository (sparse manifests).
    allow_sparse: bool,
    /// Write uploads through the page cache (a mirror's fills, read again soon).
    cached_writes: bool,
}

impl Registry {
    /// A registry over `driver`.
    pub fn new(driver: Arc<dyn StorageDriver>) -> Self {
        Registry {
            driver,
            sessions: Arc::default(),
            manifests: Arc::default(),
            allow_sparse: false,
            cached_writes: false,
        }
    }

    /// Whether an image manifest may name layers the repository does not have (a sparse
    /// manifest, as a partial mirror keeps); off by default: MANIFEST_BLOB_UNKNOWN.
    pub fn allow_sparse(mut self, allow: bool) -> Self {
        self.allow_sparse = allow;
        self
    }

    /// Whether uploads are written to stay in memory ([`StorageDriver::writer_cached`]): for
    /// a mirror, whose fills the next client pulls again.
    pub fn cached_writes(mut self, cached: bool) -> Self {
        self.cached_writes = cached;
        self
    }

    fn lock_manifests(&self) -> std::sync::MutexGuard<'_, ManifestCache> {
        // The cache holds whole entries only; a panic elsewhere cannot leave one half-made.
        self.manifests.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The storage driver (for garbage collection and health checks).
    pub fn driver(&self) -> &Arc<dyn StorageDriver> {
        &self.driver
    }

    async fn read_link(&self, path: &str) -> Result<Option<oci::Digest>> {
        match self.driver.get(path).await {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                Ok(Some(s.trim().parse().map_err(|e| {
                    tracing::error!(path, error = %e, "corrupt link file");
                    RegistryError::new(ErrorCode::Internal, "corrupt link")
                })?))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_link(&self, path: &str, d: &oci::Digest) -> Result<()> {
        Ok(self.driver.put(path, Bytes::from(d.to_string())).await?)
    }

    async fn exists(&self, path: &str) -> Result<bool> {
        match self.driver.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_or_empty(&self, path: &str) -> Result<Vec<String>> {
        match self.driver.list(path).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// True when the repository has anything in it.
    pub async fn repository_exists(&self, name: &RepoName) -> Result<bool> {
        self.exists(&crate::paths::repository(name.as_str())).await
    }
}

/// Keeps the entries after `last` and at most `n` of them; says whether more remain.
pub fn paginate(mut items: Vec<String>, n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    items.sort();
    if let Some(last) = last {
        items.retain(|i| i.as_str() > last);
    }
    match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            (items, true)
        }
        _ => (items, false),
    }
}

/// How many bytes of manifest bodies a registry process keeps in memory.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;

/// Manifest bodies and media types by digest, oldest out first once over
/// [`MANIFEST_CACHE_BYTES`]. A digest names its bytes forever, so an entry is never wrong;
/// whether a repository still has the manifest is checked in storage before it is used.
#[derive(Default)]
struct ManifestCache {
    bytes: usize,
    order: VecDeque<oci::Digest>,
    entries: HashMap<oci::Digest, (Bytes, String)>,
}

impl ManifestCache {
    fn get(&self, digest: &oci::Digest) -> Option<(Bytes, String)> {
        self.entries.get(digest).cloned()
    }

    fn insert(&mut self, digest: oci::Digest, body: Bytes, media_type: String) {
        if body.len() > MANIFEST_CACHE_BYTES / 8 || self.entries.contains_key(&digest) {
            return;
        }
        self.bytes += body.len();
        self.order.push_back(digest.clone());
        self.entries.insert(digest, (body, media_type));
        while self.bytes > MANIFEST_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some((b, _)) = self.entries.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_cache_stays_under_its_byte_budget_dropping_the_oldest() {
        let mut cache = ManifestCache::default();
        let body = Bytes::from(vec![b'x'; MANIFEST_CACHE_BYTES / 10]);
        let digests: Vec<oci::Digest> = (0..12u8).map(|i| oci::Digest::of(&[i])).collect();
        for d in &digests {
            cache.insert(d.clone(), body.clone(), "m".into());
        }
        assert!(cache.bytes <= MANIFEST_CACHE_BYTES);
        assert_eq!(cache.entries.len(), 10);
        assert!(cache.get(&digests[0]).is_none() && cache.get(&digests[1]).is_none(), "the oldest went first");
        assert_eq!(cache.get(&digests[11]).map(|(b, _)| b.len()), Some(body.len()));
        let huge = Bytes::from(vec![b'x'; MANIFEST_CACHE_BYTES / 4]);
        cache.insert(oci::Digest::of(b"huge"), huge, "m".into());
        assert!(cache.get(&oci::Digest::of(b"huge")).is_none(), "a body over an eighth of the budget is not kept");
    }
}
