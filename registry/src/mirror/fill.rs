//! Blob fills: one upstream download per missing blob, streamed to every client that asks
//! while it runs, and committed to storage once its digest and size check out.
//!
//! A fill is a task of its own (a client that disconnects does not stop it). It appends each
//! chunk to a spool file on local disk, which clients read behind it, and sends the same
//! chunk to the upload path of a push ([`Registry::finish_upload`]), which verifies the
//! digest and commits. Clients are held one byte short of the end until the whole blob has
//! hashed to its digest, so a corrupt or cut upstream never hands anyone a complete body,
//! and until the commit has settled, so a pull that completed left the blob in storage
//! (unless storage failed, which is logged: clients still get the bytes).

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use oci::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::{bump, timed_out, upstream_error, Mirror, Upstream};
use crate::api::AppState;
use crate::domain::{Registry, RepoName};
use crate::error::{ErrorCode, RegistryError, Result};

/// The fills running now, by digest, and where their spool files go.
pub(super) struct Fills {
    spool: super::spool::Spool,
    /// By upstream, upstream repository and digest: a fill answers only for where it reads.
    active: Arc<Mutex<HashMap<FillKey, Arc<Fill>>>>,
}

/// What a fill is for: (upstream URL, upstream repository, digest).
type FillKey = (String, String, Digest);

/// One download in progress.
struct Fill {
    path: PathBuf,
    /// Bytes in the spool file.
    written: AtomicU64,
    state: Mutex<State>,
    /// Set once the blob is committed to storage (or failed to be).
    commit: Mutex<Option<Result<()>>>,
    changed: Notify,
}

#[derive(Clone)]
enum State {
    /// Waiting for the upstream's answer.
    Asking,
    /// Bytes are arriving; the size when the upstream said it.
    Arriving(Option<u64>),
    /// Every byte is in the spool file and hashed to the digest.
    Complete(u64),
    /// The download failed: what the client should get.
    Failed(RegistryError),
}

impl Drop for Fill {
    fn drop(&mut self) {
        // The last reader is gone: the spool file goes too.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Fill {
    fn state(&self) -> State {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, s: State) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = s;
        self.changed.notify_waiters();
    }

    /// Waits until the upstream has answered: the size (if it said), or its error.
    async fn started(&self) -> Result<Option<u64>> {
        loop {
            let wake = self.changed.notified();
            match self.state() {
                State::Asking => wake.await,
                State::Arriving(size) => return Ok(size),
                State::Complete(size) => return Ok(Some(size)),
                State::Failed(e) => return Err(e),
            }
        }
    }

    /// Waits until the blob is in storage (or failed to get there).
    async fn committed(&self) -> Result<()> {
        loop {
            let wake = self.changed.notified();
            if let State::Failed(e) = self.state() {
                return Err(e);
            }
            if let Some(done) = self.commit.lock().unwrap_or_else(PoisonError::into_inner).clone() {
                return done;
            }
            wake.await;
        }
    }

    /// True once the commit has an outcome, either way.
    fn commit_settled(&self) -> bool {
        self.commit.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Ends a fill whose task died: whoever waits gets UNAVAILABLE.
    fn abandon(&self) {
        let failed = || RegistryError::new(ErrorCode::Unavailable, "the mirror's fetch of this blob failed");
        if matches!(self.state(), State::Asking | State::Arriving(_)) {
            self.set(State::Failed(failed()));
        }
        if !self.commit_settled() {
            self.set_committed(Err(failed()));
        }
    }

    fn set_committed(&self, done: Result<()>) {
        *self.commit.lock().unwrap_or_else(PoisonError::into_inner) = Some(done);
        self.changed.notify_waiters();
    }
}

impl Fills {
    pub(super) fn new(spool: super::spool::Spool) -> Fills {
        Fills { spool, active: Arc::default() }
    }
}

impl Mirror {
    /// `GET`/`HEAD /v2/<name>/blobs/<digest>` of mirrored content: from storage when it is
    /// there, else from the fill (started here, or joined).
    pub async fn get_blob(
        &self,
        state: &AppState,
        name: &RepoName,
        digest: &Digest,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Response> {
        let (up, repo) = self.route(name).ok_or_else(|| RegistryError::new(ErrorCode::NameUnknown, "not mirrored"))?;
        if self.stored(up, name, repo, digest).await? {
            bump(&up.stats.hits, 1);
            return crate::api::get_stored_blob(state, name, digest, headers, head).await;
        }
        let fill = self.join_or_start(up, name, repo, digest);
        if head || headers.contains_key("range") {
            // A HEAD needs the size only; a range is served from storage once committed.
            let size = if head { fill.started().await? } else { None };
            if let Some(size) = size {
                return Ok(blob_response(digest, Some(size), Body::empty()));
            }
            self.wait_stored(&fill, name, digest).await?;
            return crate::api::get_stored_blob(state, name, digest, headers, head).await;
        }
        let size = fill.started().await?;
        Ok(blob_response(digest, size, Body::from_stream(read_behind(fill))))
    }

    /// Makes sure storage holds the blob (a manifest's config must be stored before it).
    pub(super) async fn fill_to_storage(
        &self,
        up: &Arc<Upstream>,
        name: &RepoName,
        repo: &str,
        digest: &Digest,
    ) -> Result<()> {
        if self.stored(up, name, repo, digest).await? {
            return Ok(());
        }
        let fill = self.join_or_start(up, name, repo, digest);
        self.wait_stored(&fill, name, digest).await
    }

    /// Waits for a fill's commit, then links the blob here (the fill may be another
    /// repository's).
    async fn wait_stored(&self, fill: &Fill, name: &RepoName, digest: &Digest) -> Result<()> {
        fill.committed().await?;
        // The fill linked the blob into the repository it fetched it for.
        if self.registry.blob_size(name, digest).await.is_ok() {
            return Ok(());
        }
        Err(RegistryError::new(ErrorCode::Unavailable, format!("blob {digest} was fetched but is not stored")))
    }

    /// True when this repository has the blob. One stored for another repository is linked
    /// here without moving its bytes once the upstream confirms that `repo` has it there:
    /// storage may hold it for a private repository, and a mirrored name must never reveal
    /// a blob its upstream would not serve. When the upstream cannot say, a fill decides.
    async fn stored(&self, up: &Upstream, name: &RepoName, repo: &str, digest: &Digest) -> Result<bool> {
        match self.registry.blob_size(name, digest).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code == ErrorCode::BlobUnknown => {}
            Err(e) => return Err(e),
        }
        if !self.registry.blob_stored(digest).await? {
            return Ok(false);
        }
        let confirmed = tokio::time::timeout(up.config.timeout, up.remote.has_blob(repo, digest)).await;
        if !matches!(confirmed, Ok(Ok(true))) {
            return Ok(false);
        }
        self.registry.link_blob(name, digest).await?;
        Ok(true)
    }

    fn join_or_start(&self, up: &Arc<Upstream>, name: &RepoName, repo: &str, digest: &Digest) -> Arc<Fill> {
        let key = (up.config.url.clone(), repo.to_owned(), digest.clone());
        let mut active = self.fills.active.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = active.get(&key) {
            return f.clone();
        }
        let path = self.fills.spool.path().join(format!("{}-{}", digest.hex(), uuid::Uuid::new_v4()));
        let fill = Arc::new(Fill {
            path,
            written: AtomicU64::new(0),
            state: Mutex::new(State::Asking),
            commit: Mutex::new(None),
            changed: Notify::new(),
        });
        active.insert(key.clone(), fill.clone());
        bump(&up.stats.misses, 1);
        let job = Job {
            fill: fill.clone(),
            registry: self.registry.clone(),
            up: up.clone(),
            name: name.clone(),
            repo: repo.to_owned(),
            digest: digest.clone(),
        };
        let (active, watched) = (self.fills.active.clone(), fill.clone());
        tokio::spawn(async move {
            // A fill that panics still ends: its readers get an error, and the next request
            // starts a new fill instead of waiting on this one forever.
            if let Err(e) = tokio::spawn(job.run()).await {
                tracing::error!(error = %e, "mirror: a fill failed unexpectedly");
                watched.abandon();
            }
            active.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        });
        fill
    }
}

/// What a fill task needs.
struct Job {
    fill: Arc<Fill>,
    registry: Registry,
    up: Arc<Upstream>,
    name: RepoName,
    repo: String,
    digest: Digest,
}

impl Job {
    /// Downloads, verifies, then waits for the commit; every outcome lands in the fill.
    async fn run(self) {
        let id = match self.registry.start_upload(&self.name).await {
            Ok(id) => id,
            Err(e) => {
                self.fill.set(State::Failed(e.clone()));
                return self.fill.set_committed(Err(e));
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let body: crate::domain::BodyStream =
            Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }));
        let upload = {
            let (registry, name, id, digest) =
                (self.registry.clone(), self.name.clone(), id.clone(), self.digest.clone());
            tokio::spawn(async move { registry.finish_upload(&name, &id, &digest, Some(body)).await })
        };
        let downloaded = self.download(&tx).await;
        if downloaded.is_err() {
            // The upload must not commit what arrived: it ends with an error, and is cancelled.
            let _ = tx.send(Err(std::io::Error::other("upstream download failed"))).await;
        }
        drop(tx);
        let stored = upload.await.unwrap_or_else(|e| Err(RegistryError::new(ErrorCode::Internal, e.to_string())));
        match (&downloaded, &stored) {
            (Ok(_), Ok(())) => {}
            _ => {
                if let Err(e) = &stored {
                    tracing::warn!(digest = %self.digest, error = %e, "mirror: a fetched blob was not stored");
                }
                let _ = self.registry.cancel_upload(&self.name, &id).await;
            }
        }
        if let Err(e) = downloaded {
            self.fill.set(State::Failed(e.clone()));
            return self.fill.set_committed(Err(e));
        }
        self.fill.set_committed(stored);
    }

    /// Streams the upstream's bytes to the spool file and the upload; marks the fill
    /// complete once they hash to the digest and match the announced size.
    async fn download(&self, upload: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) -> Result<u64> {
        let (up, fill) = (&self.up, &self.fill);
        let what = format!("blob {}@{}", self.repo, self.digest);
        let blob = match tokio::time::timeout(up.config.timeout, up.remote.blob(&self.repo, &self.digest)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return Err(upstream_error(up, &what, ErrorCode::BlobUnknown, &e)),
            Err(_) => return Err(timed_out(up, &what)),
        };
        let internal = |e: std::io::Error| {
            tracing::error!(error = %e, "mirror: spool file");
            RegistryError::new(ErrorCode::Internal, "spool file error")
        };
        let mut spool = tokio::fs::File::create(&fill.path).await.map_err(internal)?;
        fill.set(State::Arriving(blob.size));
        let (mut stream, mut hasher, mut n, mut uploading) =
            (blob.stream, self.digest.algorithm().hasher(), 0u64, true);
        loop {
            let next = match tokio::time::timeout(up.config.timeout, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Err(timed_out(up, &what)),
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| upstream_error(up, &what, ErrorCode::BlobUnknown, &e))?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            // tokio's File hands writes to a blocking thread: flush before readers may look.
            spool.write_all(&chunk).await.map_err(internal)?;
            spool.flush().await.map_err(internal)?;
            fill.written.store(n, Ordering::Release);
            fill.changed.notify_waiters();
            bump(&up.stats.bytes, chunk.len() as u64);
            // A storage failure must not cut the clients off: they read the spool file.
            uploading = uploading && upload.send(Ok(chunk)).await.is_ok();
        }
        spool.flush().await.map_err(internal)?;
        let actual = hasher.finish();
        if actual != self.digest || blob.size.is_some_and(|s| s != n) {
            bump(&up.stats.errors, 1);
            tracing::warn!(upstream = %up.config.url, %actual, bytes = n, "mirror: upstream sent other bytes than {}", self.digest);
            return Err(RegistryError::new(ErrorCode::Unavailable, format!("upstream sent a corrupt {what}")));
        }
        fill.set(State::Complete(n));
        Ok(n)
    }
}

fn blob_response(digest: &Digest, size: Option<u64>, body: Body) -> Response {
    let mut headers = vec![
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Type", "application/octet-stream".into()),
        ("ETag", format!("\"{digest}\"")),
    ];
    headers.extend(size.map(|s| ("Content-Length", s.to_string())));
    crate::api::response(StatusCode::OK, &headers, body)
}

/// A client's body: the spool file read behind the fill, one byte short of the end until
/// the fill is complete and its commit has settled.
fn read_behind(fill: Arc<Fill>) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold((fill, None::<tokio::fs::File>, 0u64), |(fill, file, offset)| async move {
        let step = next_chunk(&fill, file, offset).await;
        match step {
            Ok(Some((chunk, file))) => {
                let next = offset + chunk.len() as u64;
                Some((Ok(chunk), (fill, Some(file), next)))
            }
            Ok(None) => None,
            Err(e) => Some((Err(e), (fill, None, u64::MAX))),
        }
    })
}

const READ_CHUNK: u64 = 256 << 10;

async fn next_chunk(
    fill: &Fill,
    file: Option<tokio::fs::File>,
    offset: u64,
) -> std::io::Result<Option<(Bytes, tokio::fs::File)>> {
    if offset == u64::MAX {
        return Ok(None);
    }
    loop {
        let wake = fill.changed.notified();
        let (limit, done) = match fill.state() {
            State::Complete(size) if fill.commit_settled() => (size, true),
            State::Complete(size) => (size.saturating_sub(1), false),
            State::Failed(e) => return Err(std::io::Error::other(e.message.clone())),
            _ => (fill.written.load(Ordering::Acquire).saturating_sub(1), false),
        };
        if offset < limit {
            let mut file = match file {
                Some(f) => f,
                None => tokio::fs::File::open(&fill.path).await?,
            };
            file.seek(SeekFrom::Start(offset)).await?;
            let want = (limit - offset).min(READ_CHUNK) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf).await?;
            return Ok(Some((Bytes::from(buf), file)));
        }
        if done {
            return Ok(None);
        }
        wake.await;
    }
}
