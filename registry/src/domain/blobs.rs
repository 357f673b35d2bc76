//! Blobs: content shared by every repository, linked into the ones that have it.

use oci::Digest;

use super::{BodyStream, Registry, RepoName};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::paths;

impl Registry {
    /// The size of a blob this repository has; BLOB_UNKNOWN otherwise.
    pub async fn blob_size(&self, name: &RepoName, digest: &Digest) -> Result<u64> {
        let unknown =
            || RegistryError::new(ErrorCode::BlobUnknown, format!("blob {digest} unknown to repository {name}"));
        if self.read_link(&paths::layer_link(name.as_str(), digest)).await?.is_none() {
            return Err(unknown());
        }
        match self.driver.stat(&paths::blob_data(digest)).await {
            Ok(info) => Ok(info.size),
            Err(e) if e.is_not_found() => Err(unknown()),
            Err(e) => Err(e.into()),
        }
    }

    /// A small blob of this repository whole (an image config), refusing one over `max`
    /// bytes so a page never loads a layer into memory.
    pub async fn small_blob(&self, name: &RepoName, digest: &Digest, max: u64) -> Result<bytes::Bytes> {
        let size = self.blob_size(name, digest).await?;
        if size > max {
            return Err(RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("blob {digest} has {size} bytes; over {max}"),
            ));
        }
        Ok(self.driver.get(&paths::blob_data(digest)).await?)
    }

    /// Streams a blob from `offset`.
    pub async fn blob_stream(&self, digest: &Digest, offset: u64) -> Result<BodyStream> {
        Ok(self.driver.read(&paths::blob_data(digest), offset).await?)
    }

    /// Removes a blob from a repository (the bytes stay until garbage collection).
    pub async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.blob_size(name, digest).await?;
        let link = paths::layer_link(name.as_str(), digest);
        Ok(self.driver.delete(link.trim_end_matches("/link")).await?)
    }

    /// True when the registry holds the blob's bytes, in whatever repository.
    pub async fn blob_stored(&self, digest: &Digest) -> Result<bool> {
        self.exists(&paths::blob_data(digest)).await
    }

    /// Makes a stored blob part of a repository.
    pub async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.write_link(&paths::layer_link(name.as_str(), digest), digest).await
    }

    /// Cross-repository mount: links the blob into `name` if the caller may read it.
    /// With `may_pull` (access control on), the source must be `from` (if given) or,
    /// without `from`, some repository that holds the blob, and `may_pull` must accept
    /// it, so a mount never reveals a blob the caller could not pull. Without `may_pull`
    /// (no auth), `from` must hold the blob, or without `from` the registry must store it.
    /// Returns false when it cannot mount: the client then uploads the blob.
    pub async fn mount_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        may_pull: Option<&(dyn Fn(&RepoName) -> bool + Send + Sync)>,
    ) -> Result<bool> {
        // Claimed before the checks, so that gc cannot delete the blob between them and the link.
        let claim = crate::gc::claim(&self.driver, std::slice::from_ref(digest)).await?;
        let available = match (from, may_pull) {
            (Some(from), check) => check.is_none_or(|ok| ok(from)) && self.blob_size(from, digest).await.is_ok(),
            (None, None) => self.blob_stored(digest).await?,
            (None, Some(ok)) => self.readable_holder(digest, ok).await?,
        };
        if available {
            self.link_blob(name, digest).await?;
        }
        claim.finish().await;
        Ok(available)
    }

    /// True when some repository that `ok` accepts holds the blob.
    async fn readable_holder(&self, digest: &Digest, ok: &(dyn Fn(&RepoName) -> bool + Send + Sync)) -> Result<bool> {
        if !self.blob_stored(digest).await? {
            return Ok(false);
        }
        for repo in self.repositories_with("_layers").await? {
            let Ok(repo) = repo.parse::<RepoName>() else { continue };
            if ok(&repo) && self.blob_size(&repo, digest).await.is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
