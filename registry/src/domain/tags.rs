//! Tags and the catalog of repositories.

use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};

use super::{Registry, RepoName};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::paths;

impl Registry {
    /// A repository's tags, sorted; NAME_UNKNOWN when the repository does not exist.
    pub async fn tags(&self, name: &RepoName) -> Result<Vec<String>> {
        if !self.repository_exists(name).await? {
            return Err(RegistryError::new(ErrorCode::NameUnknown, format!("repository {name} not known to registry")));
        }
        self.list_or_empty(&paths::tags_dir(name.as_str())).await
    }

    /// Every repository that holds a manifest, sorted.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        self.repositories_with("_manifests").await
    }

    /// Repository names whose directory holds `marker` (`_manifests`: those with content;
    /// `_uploads`: those with upload sessions, which gc looks at), sorted.
    pub async fn repositories_with(&self, marker: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        let root = paths::repositories();
        while let Some(prefix) = stack.pop() {
            let dir = if prefix.is_empty() { root.clone() } else { format!("{root}/{prefix}") };
            let children = self.list_or_empty(&dir).await?;
            if children.iter().any(|c| c == marker) {
                out.push(prefix.clone());
            }
            for c in children.into_iter().filter(|c| !c.starts_with('_')) {
                stack.push(if prefix.is_empty() { c } else { format!("{prefix}/{c}") });
            }
        }
        out.sort();
        Ok(out)
    }

    /// A repository's tags, each with when it was last pushed (None where storage keeps no
    /// time), for listings sorted by date.
    pub async fn tags_with_times(
        &self,
        name: &RepoName,
        tags: Vec<String>,
    ) -> Result<Vec<(String, Option<SystemTime>)>> {
        futures_util::stream::iter(tags)
            .map(|tag| async move {
                let time = self.modified(&paths::tag_link(name.as_str(), &tag)).await?;
                Ok::<_, RegistryError>((tag, time))
            })
            .buffered(32)
            .try_collect()
            .await
    }

    /// How many tags a repository has and when a manifest or tag last arrived in it, for
    /// the UI's list of repositories.
    pub async fn repository_summary(&self, name: &RepoName) -> Result<RepositorySummary> {
        let tags = self.list_or_empty(&paths::tags_dir(name.as_str())).await?.len();
        let revisions = self.modified(&paths::revisions_dir(name.as_str(), oci::Algorithm::Sha256)).await?;
        let tagged = self.modified(&paths::tags_dir(name.as_str())).await?;
        Ok(RepositorySummary { tags, last_push: revisions.max(tagged) })
    }

    /// Rewrites a tag's link to the digest it already names, so its time says when it was
    /// last confirmed (a mirror's revalidated tag starts a new TTL).
    pub async fn touch_tag(&self, name: &RepoName, tag: &str, digest: &oci::Digest) -> Result<()> {
        self.write_link(&paths::tag_link(name.as_str(), tag), digest).await
    }

    /// Rewrites a manifest's revision link, so its time says when it was last pulled (a
    /// mirror's eviction order).
    pub async fn touch_revision(&self, name: &RepoName, digest: &oci::Digest) -> Result<()> {
        self.write_link(&paths::revision_link(name.as_str(), digest), digest).await
    }

    /// When a file or directory last changed; None when it is missing or its driver keeps no
    /// times (S3 has no directories).
    async fn modified(&self, path: &str) -> Result<Option<SystemTime>> {
        match self.driver.stat(path).await {
            Ok(info) if info.modified > SystemTime::UNIX_EPOCH => Ok(Some(info.modified)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// What the UI shows of a repository in a list.
#[derive(Debug, Clone, Copy)]
pub struct RepositorySummary {
    /// Its number of tags.
    pub tags: usize,
    /// When a manifest or a tag last arrived, as storage knows it.
    pub last_push: Option<SystemTime>,
}
