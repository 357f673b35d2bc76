//! Upload sessions: started, appended to in order, finished with a digest, or cancelled.
//!
//! A session lives entirely in storage (`_uploads/<id>/`), so any registry process sharing
//! the storage can continue it. The bytes are hashed as they arrive when the same process
//! sees the whole session; otherwise finishing re-reads the upload to verify it.

use std::str::FromStr;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci::Digest;

use super::{BodyStream, Registry, RepoName};
use crate::driver::FileWriter;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::paths;

/// An upload session's ID: a UUID, so that it can never name a path outside `_uploads/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random ID.
    pub fn new() -> Self {
        UploadId(uuid::Uuid::new_v4().to_string())
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for UploadId {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self> {
        uuid::Uuid::try_parse(s)
            .map(|u| UploadId(u.hyphenated().to_string()))
            .map_err(|_| RegistryError::new(ErrorCode::BlobUploadUnknown, format!("upload {s:?} unknown")))
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `Range` header value for an upload of `size` bytes (`0-0` when empty, as distribution).
pub fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

impl Registry {
    /// Starts a session.
    pub async fn start_upload(&self, name: &RepoName) -> Result<UploadId> {
        let id = UploadId::new();
        let started = chrono::Utc::now().to_rfc3339();
        self.driver.put(&paths::upload_started(name.as_str(), id.as_str()), Bytes::from(started)).await?;
        let w = self.driver.writer(&paths::upload_data(name.as_str(), id.as_str()), false).await?;
        w.close().await?;
        self.lock_hashes().insert(id.0.clone(), (0, oci::Algorithm::Sha256.hasher()));
        Ok(id)
    }

    fn lock_hashes(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (u64, oci::digest::Hasher)>> {
        self.hashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn open_upload(&self, name: &RepoName, id: &UploadId) -> Result<Box<dyn FileWriter>> {
        if !self.exists(&paths::upload_started(name.as_str(), id.as_str())).await? {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadUnknown,
                format!("upload {id} unknown to repository {name}"),
            ));
        }
        let data = paths::upload_data(name.as_str(), id.as_str());
        if self.cached_writes {
            return Ok(self.driver.writer_cached(&data, true).await?);
        }
        Ok(self.driver.writer(&data, true).await?)
    }

    /// Bytes received so far.
    pub async fn upload_size(&self, name: &RepoName, id: &UploadId) -> Result<u64> {
        // Opening and dropping a writer that wrote nothing leaves the upload as it was.
        Ok(self.open_upload(name, id).await?.size())
    }

    /// Appends a chunk. `start`, from Content-Range, must be where the upload ends now.
    /// Returns the new size. A body cut short keeps what arrived: the client resumes
    /// from the offset that `upload_size` reports.
    pub async fn append_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: BodyStream,
    ) -> Result<u64> {
        let mut w = self.open_upload(name, id).await?;
        let size = w.size();
        if let Some(start) = start {
            if start != size {
                return Err(RegistryError::new(
                    ErrorCode::RangeInvalid,
                    format!("chunk starts at {start}, upload is at {size}"),
                )
                .with_header("Range", range_header(size))
                .with_header("Location", format!("/v2/{name}/blobs/uploads/{id}")));
            }
        }
        let result = self.write_body(&mut w, id, body).await;
        w.close().await?;
        result?;
        self.upload_size(name, id).await
    }

    async fn write_body(&self, w: &mut Box<dyn FileWriter>, id: &UploadId, mut body: BodyStream) -> Result<()> {
        let size = w.size();
        let mut hash = self.lock_hashes().remove(id.as_str()).filter(|(n, _)| *n == size);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    if let Some(h) = hash {
                        self.lock_hashes().insert(id.0.clone(), h);
                    }
                    return Err(RegistryError::new(
                        ErrorCode::BlobUploadInvalid,
                        format!("upload body interrupted: {e}"),
                    ));
                }
            };
            if let Some((n, h)) = hash.as_mut() {
                h.update(&chunk);
                *n += chunk.len() as u64;
            }
            w.write(chunk).await?;
        }
        if let Some(h) = hash {
            self.lock_hashes().insert(id.0.clone(), h);
        }
        Ok(())
    }

    /// Appends a last chunk (if any), verifies the whole upload against `digest`, and
    /// makes it the blob `digest` of `name`. A mismatch cancels the session.
    pub async fn finish_upload(
        &self,
        name: &RepoName,
        id: &UploadId,
        digest: &Digest,
        body: Option<BodyStream>,
    ) -> Result<()> {
        let mut w = self.open_upload(name, id).await?;
        if let Some(body) = body {
            self.write_body(&mut w, id, body).await?;
        }
        let size = w.size();
        w.commit().await?;
        let data = paths::upload_data(name.as_str(), id.as_str());
        let cached = self
            .lock_hashes()
            .remove(id.as_str())
            .filter(|(n, _)| *n == size && digest.algorithm() == oci::Algorithm::Sha256)
            .map(|(_, h)| h.finish());
        let actual = match cached {
            Some(d) => d,
            None => {
                let mut h = digest.algorithm().hasher();
                let mut s = self.driver.read(&data, 0).await?;
                while let Some(chunk) = s.try_next().await.map_err(|e| {
                    tracing::error!(error = %e, "re-reading upload");
                    RegistryError::new(ErrorCode::Internal, "storage error")
                })? {
                    h.update(&chunk);
                }
                h.finish()
            }
        };
        let dir = paths::upload_dir(name.as_str(), id.as_str());
        if &actual != digest {
            self.driver.delete(&dir).await?;
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("upload has digest {actual}, not {digest}"),
            ));
        }
        // Claimed first, so that gc cannot delete a stored copy between the check and the link.
        let claim = crate::gc::claim(&self.driver, std::slice::from_ref(digest)).await?;
        if !self.blob_stored(digest).await? {
            self.driver.rename(&data, &paths::blob_data(digest)).await?;
        }
        self.link_blob(name, digest).await?;
        claim.finish().await;
        self.driver.delete(&dir).await?;
        Ok(())
    }

    /// Discards a session and its bytes.
    pub async fn cancel_upload(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        let w = self.open_upload(name, id).await?;
        w.cancel().await?;
        self.lock_hashes().remove(id.as_str());
        match self.driver.delete(&paths::upload_dir(name.as_str(), id.as_str())).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// A whole blob in one request (POST with `digest`, or PUT of a fresh session).
    pub async fn put_blob(&self, name: &RepoName, digest: &Digest, body: BodyStream) -> Result<()> {
        let id = self.start_upload(name).await?;
        self.finish_upload(name, &id, digest, Some(body)).await
    }
}
