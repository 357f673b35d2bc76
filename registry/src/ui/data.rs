//! What the pages show, read from the domain layer: lenient views of manifests and image
//! configs (any image the API accepted must render, whatever fields it lacks), a row per
//! tag, and two caches that keep pages fast with 10,000 repositories.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use oci::Digest;
use serde::Deserialize;

use crate::domain::{Registry, RepoName, StoredManifest};
use crate::error::Result;

/// The largest image config a page reads.
const MAX_CONFIG: u64 = 4 << 20;

/// A manifest or index, with only the fields the UI shows, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ManifestDoc {
    pub config: Option<Desc>,
    #[serde(default)]
    pub layers: Vec<Desc>,
    #[serde(default)]
    pub manifests: Vec<Desc>,
    pub subject: Option<Desc>,
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ManifestDoc {
    /// Reads a stored manifest; one that does not parse shows as empty.
    pub fn parse(m: &StoredManifest) -> ManifestDoc {
        serde_json::from_slice(&m.bytes).unwrap_or_default()
    }

    /// True for an OCI index or a docker manifest list.
    pub fn is_index(&self) -> bool {
        !self.manifests.is_empty() && self.config.is_none()
    }

    /// The bytes an image's config and layers hold.
    pub fn content_size(&self) -> Option<u64> {
        let config = self.config.as_ref()?;
        Some(config.size + self.layers.iter().map(|l| l.size).sum::<u64>())
    }
}

/// A content descriptor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Desc {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    pub platform: Option<Platform>,
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An index child's platform.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// An image config, with only the fields the UI shows.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ImageConfig {
    pub created: Option<String>,
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub variant: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub history: Vec<History>,
}

/// How an image runs (the config's `config` object).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RunConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// One step of an image's history.
#[derive(Debug, Default, Deserialize)]
pub(super) struct History {
    pub created: Option<String>,
    pub created_by: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
    pub comment: Option<String>,
}

/// One row of a repository's tag list.
pub(super) struct TagRow {
    pub tag: String,
    pub pushed: Option<SystemTime>,
    /// None when the tag's manifest cannot be read (a fault worth showing, not hiding).
    pub manifest: Option<Arc<TagManifest>>,
}

/// What a tag points at.
pub(super) struct TagManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: Option<u64>,
    pub created: Option<String>,
    pub platforms: Vec<String>,
}

/// Reads what one tag row shows: its manifest and, for an image, its config's date.
pub(super) async fn tag_manifest(
    registry: &Registry,
    configs: &ConfigCache,
    name: &RepoName,
    tag: &str,
) -> Option<Arc<TagManifest>> {
    let m = match registry.get_manifest(name, tag).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(repository = %name, tag, error = %e, "ui: tag's manifest unreadable");
            return None;
        }
    };
    let doc = ManifestDoc::parse(&m);
    let created = match image_config(registry, configs, name, &doc).await {
        Ok(Some(c)) => c.created.clone(),
        _ => None,
    };
    let platforms = doc.manifests.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect();
    Some(Arc::new(TagManifest {
        size: doc.content_size(),
        created,
        platforms,
        digest: m.digest,
        media_type: m.media_type,
    }))
}

/// Parsed image configs by digest: a digest names its bytes forever, so they never go stale.
pub(super) type ConfigCache = Fresh<Digest, Arc<ImageConfig>>;

/// An image manifest's config, parsed (None for an index or an artifact without one).
pub(super) async fn image_config(
    registry: &Registry,
    configs: &ConfigCache,
    name: &RepoName,
    doc: &ManifestDoc,
) -> Result<Option<Arc<ImageConfig>>> {
    let image_config = |c: &&Desc| [oci::media::OCI_CONFIG, oci::media::DOCKER_CONFIG].contains(&c.media_type.as_str());
    // An artifact's config (often the empty `{}`) says nothing about running it.
    let Some(desc) = doc.config.as_ref().filter(image_config) else { return Ok(None) };
    let Ok(digest) = desc.digest.parse::<Digest>() else { return Ok(None) };
    let (registry, name, d) = (registry.clone(), name.clone(), digest.clone());
    let load = move || async move {
        let bytes = registry.small_blob(&name, &d, MAX_CONFIG).await?;
        Ok(Arc::new(serde_json::from_slice::<ImageConfig>(&bytes).unwrap_or_default()))
    };
    configs.get(digest, load).await.map(Some)
}

/// Values read from storage, each served for `ttl` and then, while one background task
/// reads it anew, served stale: a page never waits on a slow walk of storage, and the cost
/// of reading 10,000 repositories or 1,000 tags is paid once per `ttl`, not per view. Keys
/// the UI itself changes (a delete) are forgotten at once.
pub(super) struct Fresh<K, V> {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<K, (V, Instant)>>>,
    refreshing: Arc<Mutex<std::collections::HashSet<K>>>,
}

/// The most entries a [`Fresh`] keeps; it is emptied when it reaches this.
const FRESH_ENTRIES: usize = 20_000;

impl<K, V> Fresh<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    pub fn new(ttl: Duration) -> Self {
        Fresh { ttl, entries: Arc::default(), refreshing: Arc::default() }
    }

    /// The value for `key`: cached, or stale while `load` runs in the background, or (the
    /// first time) loaded now.
    pub async fn get<F, Fut>(&self, key: K, load: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<V>> + Send + 'static,
    {
        let cached = self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let Some((value, at)) = cached else {
            let value = load().await?;
            self.put(key, value.clone());
            return Ok(value);
        };
        if at.elapsed() > self.ttl && self.refreshing.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone())
        {
            let (entries, refreshing) = (self.entries.clone(), self.refreshing.clone());
            tokio::spawn(async move {
                match load().await {
                    Ok(v) => {
                        entries.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), (v, Instant::now()));
                    }
                    Err(e) => tracing::warn!(error = %e, "ui: reading storage failed; the last answer is shown"),
                }
                refreshing.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            });
        }
        Ok(value)
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= FRESH_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Drops `key`, so the next view reads storage.
    pub fn forget(&self, key: &K) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// A repository's tags with their push times, sorted by name.
pub(super) type TagTimes = Arc<Vec<(String, Option<SystemTime>)>>;

/// Reads a repository's tags and their push times.
pub(super) async fn tag_times(registry: Registry, name: RepoName) -> Result<TagTimes> {
    let tags = registry.tags(&name).await?;
    Ok(Arc::new(registry.tags_with_times(&name, tags).await?))
}
