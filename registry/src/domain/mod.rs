//! The domain layer: repositories of blobs, uploads, manifests and tags, on top of a
//! [`StorageDriver`]. Handlers call this; it calls [`crate::paths`] for every location.
//!
//! Nothing here holds state that storage does not: the one cache, the running hash of
//! uploads this process is serving, only saves re-reading an upload to verify it.

mod blobs;
mod manifests;
mod tags;
mod uploads;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;

pub use manifests::StoredManifest;
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
    /// Running sha256 of uploads in progress on this process: upload id -> (bytes hashed, state).
    hashes: Arc<Mutex<HashMap<String, (u64, oci::digest::Hasher)>>>,
}

impl Registry {
    /// A registry over `driver`.
    pub fn new(driver: Arc<dyn StorageDriver>) -> Self {
        Registry { driver, hashes: Arc::default() }
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
