//! Manifests through the mirror: by digest once and forever, by tag while younger than the
//! TTL, then revalidated with a HEAD; one upstream request per reference at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::response::Response;
use oci::Digest;

use super::{bump, timed_out, upstream_error, Mirror, Upstream};
use crate::api::AppState;
use crate::domain::RepoName;
use crate::error::{ErrorCode, RegistryError, Result};

/// Whether the upstream said the reference does not exist (rather than failing).
fn is_not_found(e: &oci::Error) -> bool {
    matches!(e, oci::Error::Registry { status: 404, .. })
}

/// One lock per reference being fetched, so concurrent requests make one upstream fetch:
/// the others wait, then find it stored.
#[derive(Default)]
pub(super) struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    fn get(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop the locks nobody holds or waits for, so the map stays as small as the fills.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key).or_default().clone()
    }
}

/// What storage has for a tag.
struct Local {
    digest: Digest,
    fresh: bool,
}

impl Mirror {
    /// `GET`/`HEAD /v2/<name>/manifests/<reference>` of mirrored content.
    pub async fn get_manifest(
        &self,
        state: &AppState,
        name: &RepoName,
        reference: &str,
        head: bool,
    ) -> Result<Response> {
        let (up, upstream_repo) =
            self.route(name).ok_or_else(|| crate::error::RegistryError::new(ErrorCode::NameUnknown, "not mirrored"))?;
        let digest = self.ensure_manifest(up, name, upstream_repo, reference).await?;
        self.touch(name, &digest).await;
        crate::api::get_stored_manifest(state, name, reference, head).await
    }

    /// Makes sure storage holds a good copy of `reference` (or the best there is while the
    /// upstream fails); returns its digest.
    async fn ensure_manifest(
        &self,
        up: &Arc<Upstream>,
        name: &RepoName,
        repo: &str,
        reference: &str,
    ) -> Result<Digest> {
        let lock = self.locks.get(format!("{name}@{reference}"));
        let _one_fetch = lock.lock().await;
        let local = self.local(up, name, reference).await?;
        if let Some(fresh) = local.as_ref().filter(|l| l.fresh) {
            bump(&up.stats.hits, 1);
            return Ok(fresh.digest.clone());
        }
        if let Some(stale) = &local {
            // A tag past its TTL: a HEAD says whether it moved.
            match tokio::time::timeout(up.config.timeout, up.remote.head_manifest(repo, reference)).await {
                Ok(Ok(d)) if d == stale.digest => {
                    bump(&up.stats.revalidations, 1);
                    self.registry.touch_tag(name, reference, &d).await?;
                    return Ok(d);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_not_found(&e) => return Err(self.gone(up, name, repo, reference).await),
                Ok(Err(e)) => return Ok(self.serve_stale(up, name, reference, stale, &e.to_string())),
                Err(_) => return Ok(self.serve_stale(up, name, reference, stale, "timed out")),
            }
        }
        bump(&up.stats.misses, 1);
        let what = format!("manifest {repo}:{reference}");
        let fetched = match (tokio::time::timeout(up.config.timeout, up.remote.manifest(repo, reference)).await, &local)
        {
            (Ok(Ok(m)), _) => m,
            (Ok(Err(e)), Some(_)) if is_not_found(&e) => return Err(self.gone(up, name, repo, reference).await),
            (Ok(Err(e)), Some(stale)) => return Ok(self.serve_stale(up, name, reference, stale, &e.to_string())),
            (Err(_), Some(stale)) => return Ok(self.serve_stale(up, name, reference, stale, "timed out")),
            (Ok(Err(e)), None) => return Err(upstream_error(up, &what, ErrorCode::ManifestUnknown, &e)),
            (Err(_), None) => return Err(timed_out(up, &what)),
        };
        if let Ok(oci::Manifest::Image(image)) = oci::Manifest::parse(&fetched.bytes, Some(&fetched.media_type)) {
            // A stored image manifest needs its config; layers come when asked for.
            let config = oci::manifest::descriptor_digest(image.config())
                .map_err(|e| crate::error::RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
            self.fill_to_storage(up, name, repo, &config).await?;
        }
        self.registry.put_manifest_tagged(name, reference, Some(&fetched.media_type), fetched.bytes, &[]).await?;
        Ok(fetched.digest)
    }

    /// What storage holds for `reference`: a digest is always fresh; a tag is fresh while
    /// younger than the TTL.
    async fn local(&self, up: &Upstream, name: &RepoName, reference: &str) -> Result<Option<Local>> {
        // Read, not just resolved: a link whose manifest gc took (a pull racing an
        // eviction) counts as missing, and the fetch below links it again.
        let digest = match self.registry.get_manifest(name, reference).await {
            Ok(m) => m.digest,
            Err(e) if matches!(e.code, ErrorCode::ManifestUnknown | ErrorCode::NameUnknown) => return Ok(None),
            Err(e) => return Err(e),
        };
        if reference.contains(':') {
            return Ok(Some(Local { digest, fresh: true }));
        }
        let times = self.registry.tags_with_times(name, vec![reference.to_owned()]).await?;
        let age = times.first().and_then(|(_, t)| *t).and_then(|t| SystemTime::now().duration_since(t).ok());
        Ok(Some(Local { digest, fresh: age.is_some_and(|a| a < up.config.tag_ttl) }))
    }

    /// A tag the upstream answers 404 for: it was deleted there, so it goes here too
    /// instead of being served stale for ever (a yanked tag must stop resolving).
    async fn gone(&self, up: &Upstream, name: &RepoName, repo: &str, reference: &str) -> RegistryError {
        tracing::info!(upstream = %up.config.url, repository = %name, reference, "mirror: the upstream no longer has this tag; dropped");
        if let Err(e) = self.registry.delete_manifest(name, reference).await {
            tracing::warn!(repository = %name, reference, error = %e, "mirror: could not drop a tag the upstream deleted");
        }
        RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {repo}:{reference} is not in {} any more", up.config.url),
        )
    }

    fn serve_stale(&self, up: &Upstream, name: &RepoName, reference: &str, stale: &Local, why: &str) -> Digest {
        bump(&up.stats.stale, 1);
        bump(&up.stats.errors, 1);
        tracing::warn!(upstream = %up.config.url, repository = %name, reference, why, "mirror: upstream failed; serving the stored copy");
        stale.digest.clone()
    }
}
