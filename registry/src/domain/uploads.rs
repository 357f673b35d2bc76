//! Upload sessions: started, appended to in order, finished with a digest, or cancelled.
//!
//! A session lives entirely in storage (`_uploads/<id>/`), so any registry process sharing
//! the storage can continue it. The bytes are hashed as they arrive when the same process
//! sees the whole session; otherwise finishing re-reads the upload to verify it. Within a
//! process, requests on one session take turns (see [`Session`]): two PATCHes at once would
//! otherwise write the same offset while the running hash followed only one of them, and a
//! blob would be stored under a digest its bytes do not have.

use std::str::FromStr;
use std::sync::Arc;

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

/// One upload session as this process knows it: the running sha256 of its bytes, `(bytes
/// hashed, state)`, or `None` when this process has not seen them all. The lock is held by
/// the request writing, finishing or cancelling the session, so those requests take turns.
pub(super) type Session = Arc<tokio::sync::Mutex<Option<(u64, oci::digest::Hasher)>>>;

/// The session's state, locked by the request that holds it until it is dropped.
type Turn = tokio::sync::OwnedMutexGuard<Option<(u64, oci::digest::Hasher)>>;

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
        let hash = Some((0, oci::Algorithm::Sha256.hasher()));
        self.lock_sessions().insert(id.0.clone(), Arc::new(tokio::sync::Mutex::new(hash)));
        Ok(id)
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for this request's turn on session `id` (a session started elsewhere gets an
    /// entry without a running hash).
    async fn turn(&self, id: &UploadId) -> Turn {
        let session = Arc::clone(self.lock_sessions().entry(id.0.clone()).or_default());
        session.lock_owned().await
    }

    /// Forgets session `id` once it is finished or cancelled.
    fn forget(&self, id: &UploadId) {
        self.lock_sessions().remove(id.as_str());
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
        let mut turn = self.turn(id).await;
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
        let result = write_body(&mut w, &mut turn, body).await;
        let closed = w.close().await;
        if closed.is_err() {
            // The file may not hold every byte the running hash saw: finishing re-reads it.
            *turn = None;
        }
        result?;
        closed?;
        self.upload_size(name, id).await
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
        let mut turn = self.turn(id).await;
        let mut w = self.open_upload(name, id).await?;
        if let Some(body) = body {
            if let Err(e) = write_body(&mut w, &mut turn, body).await {
                // As in `append_upload`, what arrived is kept, the writes under way waited for.
                if let Err(closing) = w.close().await {
                    *turn = None;
                    tracing::warn!(upload = %id, error = %closing, "closing an upload after a failed body");
                }
                return Err(e);
            }
        }
        let size = w.size();
        if let Err(e) = w.commit().await {
            *turn = None;
            return Err(e.into());
        }
        let data = paths::upload_data(name.as_str(), id.as_str());
        let cached = turn
            .take()
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
            self.forget(id);
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
        self.forget(id);
        self.driver.delete(&dir).await?;
        Ok(())
    }

    /// Discards a session and its bytes.
    pub async fn cancel_upload(&self, name: &RepoName, id: &UploadId) -> Result<()> {
        let _turn = self.turn(id).await;
        let w = self.open_upload(name, id).await?;
        w.cancel().await?;
        self.forget(id);
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

/// Writes `body` to `w`, extending the session's running hash when it covers every byte so
/// far (else the hash is dropped, and finishing re-reads the upload). A body cut short keeps
/// what arrived, hash included; a failed write drops the hash, since the file may not hold
/// what it saw.
async fn write_body(w: &mut Box<dyn FileWriter>, turn: &mut Turn, mut body: BodyStream) -> Result<()> {
    let size = w.size();
    if turn.as_ref().is_some_and(|(n, _)| *n != size) {
        **turn = None;
    }
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, format!("upload body interrupted: {e}")))?;
        match turn.as_mut() {
            Some((n, h)) => {
                *n += chunk.len() as u64;
                if let Err(e) = w.write_hashing(chunk, h).await {
                    **turn = None;
                    return Err(e.into());
                }
            }
            None => w.write(chunk).await?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::driver::FsDriver;

    /// A body that sends `bytes` once `go` fires.
    fn gated(bytes: &'static [u8], go: oneshot::Receiver<()>) -> BodyStream {
        Box::pin(futures_util::stream::once(async move {
            let _ = go.await;
            Ok(Bytes::from_static(bytes))
        }))
    }

    #[tokio::test]
    async fn two_patches_at_once_take_turns_and_the_blob_keeps_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(Arc::new(FsDriver::new(dir.path()).unwrap()));
        let name: RepoName = "attacker/app".parse().unwrap();
        let id = registry.start_upload(&name).await.unwrap();
        let (claimed, evil) = (&[b'A'; 100], b"EVIL".repeat(25).leak());
        // A PATCH of the claimed bytes holds the session while its body is on the way, and a
        // second PATCH for the same offset arrives meanwhile: the attack that stored EVIL
        // under the digest of the A's, because the running hash followed the first body
        // and the file got the second.
        let (go_a, gate_a) = oneshot::channel();
        let (go_b, gate_b) = oneshot::channel();
        let a = tokio::spawn({
            let (r, n, i) = (registry.clone(), name.clone(), id.clone());
            async move { r.append_upload(&n, &i, Some(0), gated(claimed, gate_a)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let b = tokio::spawn({
            let (r, n, i) = (registry.clone(), name.clone(), id.clone());
            async move { r.append_upload(&n, &i, Some(0), gated(evil, gate_b)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        go_a.send(()).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), 100);
        let _ = go_b.send(());
        let second = b.await.unwrap();
        assert_eq!(
            second.err().map(|e| e.code),
            Some(ErrorCode::RangeInvalid),
            "the second PATCH starts where the first ended"
        );
        let digest = Digest::of(claimed);
        registry.finish_upload(&name, &id, &digest, None).await.unwrap();
        let stored = registry.small_blob(&name, &digest, 1000).await.unwrap();
        assert_eq!(&stored[..], &claimed[..], "the blob holds the bytes its digest names");
    }
}
