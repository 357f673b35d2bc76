//! The S3 driver: a path is an object key under a prefix in one bucket.
//!
//! Mapping: `/a/b/c` is the key `<prefix>/a/b/c` (just `a/b/c` without a prefix). A
//! directory is every key that starts with `<key>/`; it exists while one such key does.
//!
//! Writers use S3 multipart uploads so that a blob is never held whole in memory, and keep
//! their resumable state in the bucket itself (S3-compatible servers do not all offer
//! ListMultipartUploads), beside the file:
//!
//! ```text
//! <key>            the committed file (appears only at commit)
//! <key>.multipart  JSON: the upload id, the parts uploaded so far, and which tail is pending
//! <key>.pending    the tail not yet uploaded as a part (< part_size), written by close()
//! ```
//!
//! The `.multipart` object is the commit point of [`FileWriter::close`]: a writer reopened
//! with `append` (by any process) continues from exactly what it records. Parts uploaded
//! after the last close are simply uploaded again under the same part numbers. A reopened
//! writer fetches the tail only once it writes or commits, so asking an upload's size
//! reads just the state, and closing a writer that wrote nothing changes nothing. `list`
//! hides both helper objects. Until commit, `stat`/`get`/`read` of the path say NotFound
//! (unlike the fs driver, which shows the partial file): ask a reopened writer's `size()`.
//!
//! Existence (`stat`, and the checks inside `delete`, `rename`, `writer`) is asked with a
//! one-key ListObjectsV2 rather than HeadObject: a miss costs one request either way, a
//! listing also answers "is this a directory", and some servers (s3s-fs) fail HEAD on a
//! key that is also a directory.
//!
//! Limits: a file has at most 10,000 parts, so at most `10,000 × part_size` bytes (98 GiB
//! with the default 10 MiB parts). `rename` is CopyObject + DeleteObject, and above
//! CopyObject's 5 GiB limit a multipart copy (UploadPartCopy), so it is not atomic: a
//! crash between the two leaves both names. Two writers appending to one path at the
//! same time corrupt each other, as with the other drivers.

use std::io;
use std::time::SystemTime;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider as TlsProvider};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{check_path, ByteStream, DriverError, FileInfo, FileWriter, Result, StorageDriver};

const MIB: u64 = 1024 * 1024;
/// S3's smallest part (all parts but the last must be at least this big).
const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest part.
const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// S3's part-number limit.
const MAX_PARTS: usize = 10_000;
/// CopyObject copies at most 5 GiB; bigger objects are copied part by part.
const COPY_OBJECT_LIMIT: u64 = 5 * 1024 * MIB;
/// The part size of a multipart (UploadPartCopy) rename.
const COPY_PART_SIZE: u64 = 1024 * MIB;
/// DeleteObjects takes at most 1,000 keys.
const DELETE_BATCH: usize = 1000;
const STATE_SUFFIX: &str = ".multipart";
const PENDING_SUFFIX: &str = ".pending";

fn default_region() -> Option<String> {
    Some("us-east-1".to_owned())
}

/// Where and how to reach the bucket: the S3 settings of the registry config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket holding everything.
    pub bucket: String,
    /// A root directory inside the bucket (no leading or trailing `/` needed).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The signing region (`us-east-1` when unset).
    #[serde(default = "default_region")]
    pub region: Option<String>,
    /// A non-AWS endpoint URL (MinIO, Ceph, R2, a test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    #[serde(default)]
    pub path_style: bool,
    /// Explicit access key; without it the standard AWS credential chain is used.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Explicit secret key, given together with `access_key`.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Bytes per multipart-upload part (default 10 MiB, at least 5 MiB); also the most a writer buffers.
    #[serde(default)]
    pub part_size: Option<u64>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// Stores files as objects in an S3 bucket; see the module docs for the layout.
#[derive(Debug, Clone)]
pub struct S3Driver {
    client: Client,
    bucket: String,
    /// Empty, or the configured prefix with one trailing `/`.
    prefix: String,
    part_size: usize,
    /// Objects above this size are renamed with a multipart copy.
    copy_limit: u64,
    /// Part size of a multipart copy.
    copy_part_size: u64,
}

fn config_error(cfg: &S3Config, message: impl Into<String>) -> DriverError {
    DriverError::Backend { op: "configure", path: format!("s3://{}", cfg.bucket), message: message.into() }
}

impl S3Driver {
    /// Builds a client for `cfg` (no request is made until the first call).
    pub async fn new(cfg: S3Config) -> Result<S3Driver> {
        if cfg.bucket.is_empty() {
            return Err(config_error(&cfg, "the bucket name is empty"));
        }
        let part_size = cfg.part_size.unwrap_or(10 * MIB);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(config_error(&cfg, format!("part_size {part_size} is outside S3's limits of 5 MiB to 5 GiB")));
        }
        let part_size =
            usize::try_from(part_size).map_err(|_| config_error(&cfg, "part_size does not fit in memory"))?;

        // One TLS stack for the whole binary: rustls with ring, as the registry server uses.
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(TlsProvider::Rustls(CryptoMode::Ring)).build_https();
        let region = cfg.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region)).http_client(http);
        match (&cfg.access_key, &cfg.secret_key) {
            (Some(ak), Some(sk)) => {
                loader = loader.credentials_provider(Credentials::new(ak, sk, None, None, "berth-config"))
            }
            (None, None) => {}
            _ => return Err(config_error(&cfg, "access_key and secret_key must be given together")),
        }
        let shared = loader.load().await;
        // Checksums only where S3 requires them: several S3-compatible servers reject the
        // newer default (CRC32 trailers on every upload); the registry verifies digests itself.
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &cfg.endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        let prefix = cfg.prefix.as_deref().unwrap_or("").trim_matches('/');
        Ok(S3Driver {
            client: Client::from_conf(s3.build()),
            bucket: cfg.bucket,
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            part_size,
            copy_limit: COPY_OBJECT_LIMIT,
            copy_part_size: COPY_PART_SIZE,
        })
    }

    /// The object key of a checked path.
    fn key(&self, path: &str) -> Result<String> {
        check_path(path)?;
        Ok(format!("{}{}", self.prefix, &path[1..]))
    }

    /// A streaming writer with its concrete type (tests look at its buffer).
    async fn open_writer(&self, path: &str, append: bool) -> Result<S3Writer> {
        let key = self.key(path)?;
        let state = self.load_state(path, &key).await?;
        let mut w = S3Writer {
            driver: self.clone(),
            path: path.to_owned(),
            key,
            durable: UploadState::default(),
            state_exists: state.is_some(),
            parts: Vec::new(),
            uploaded: 0,
            buf: BytesMut::new(),
            tail_loaded: true,
            changed: !append,
            failed: false,
            #[cfg(test)]
            peak_buffered: 0,
        };
        match state {
            Some(state) if append => {
                // The tail is fetched only when bytes are written or committed: asking the
                // size, or cancelling, reads just the small state object.
                w.tail_loaded = state.pending_size == 0;
                w.parts.clone_from(&state.parts);
                w.uploaded = state.parts.iter().map(|p| p.size).sum();
                w.durable = state;
            }
            Some(stale) => {
                // Starting over: the earlier writer's upload would otherwise hold its parts forever.
                if let Some(id) = &stale.upload_id {
                    self.abort_upload(path, &w.key, id).await?;
                }
                w.delete_helpers().await?;
                w.state_exists = false;
            }
            None if append => {
                let committed = self.probe("append", path, &w.key).await?.is_some();
                if committed {
                    return Err(DriverError::Backend {
                        op: "append",
                        path: path.to_owned(),
                        message: "the file is committed; S3 objects cannot be appended to".to_owned(),
                    });
                }
            }
            None => {}
        }
        w.note_buffer();
        Ok(w)
    }

    /// The state a closed writer left at `key.multipart`, if any.
    async fn load_state(&self, path: &str, key: &str) -> Result<Option<UploadState>> {
        let raw = match self.get_key(path, &format!("{key}{STATE_SUFFIX}")).await {
            Ok((raw, _)) => raw,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let state: UploadState = serde_json::from_slice(&raw).map_err(|e| DriverError::Backend {
            op: "read upload state of",
            path: path.to_owned(),
            message: format!("corrupt {STATE_SUFFIX} object: {e}"),
        })?;
        Ok(Some(state))
    }

    /// The tail recorded by `state`, checked to be the very object that state describes.
    async fn load_pending(&self, path: &str, key: &str, state: &UploadState) -> Result<BytesMut> {
        let inconsistent = |what: &str| DriverError::Backend {
            op: "resume",
            path: path.to_owned(),
            message: format!("upload state is inconsistent: {what} (a close was interrupted); the upload must restart"),
        };
        let (data, etag) = match self.get_key(path, &format!("{key}{PENDING_SUFFIX}")).await {
            Ok(found) => found,
            Err(e) if e.is_not_found() => return Err(inconsistent("the pending tail is missing")),
            Err(e) => return Err(e),
        };
        let unquoted = |e: &Option<String>| e.as_deref().map(|e| e.trim_matches('"').to_owned());
        let etag_differs =
            state.pending_etag.is_some() && etag.is_some() && unquoted(&etag) != unquoted(&state.pending_etag);
        if data.len() as u64 != state.pending_size || etag_differs {
            return Err(inconsistent("the pending tail is not the one recorded"));
        }
        if data.len() >= self.part_size {
            return Err(inconsistent("the pending tail is larger than one part (was part_size lowered?)"));
        }
        let mut buf = BytesMut::with_capacity(self.part_size);
        buf.extend_from_slice(&data);
        Ok(buf)
    }

    /// A whole object with its ETag.
    async fn get_key(&self, path: &str, key: &str) -> Result<(Bytes, Option<String>)> {
        let out = self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(sdk_err("get", path))?;
        let etag = out.e_tag().map(str::to_owned);
        let body = out.body.collect().await.map_err(|e| backend("get", path, DisplayErrorContext(&e)))?;
        Ok((body.into_bytes(), etag))
    }

    async fn put_key(&self, path: &str, key: &str, content: Bytes) -> Result<Option<String>> {
        let len = content.len() as i64;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len)
            .body(SdkByteStream::from(content))
            .send()
            .await
            .map_err(sdk_err("put", path))?;
        Ok(out.e_tag().map(str::to_owned))
    }

    /// The first object whose key starts with `prefix` (keys sort bytewise, so an object
    /// named exactly `prefix` comes first), with its size and time.
    async fn first_under(
        &self,
        op: &'static str,
        path: &str,
        prefix: &str,
    ) -> Result<Option<(String, u64, SystemTime)>> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(sdk_err(op, path))?;
        Ok(out.contents().first().and_then(|o| {
            let size = u64::try_from(o.size().unwrap_or(0)).unwrap_or(0);
            o.key().map(|k| (k.to_owned(), size, to_system_time(o.last_modified())))
        }))
    }

    /// Size and time of the object at exactly `key`, if there is one.
    async fn probe(&self, op: &'static str, path: &str, key: &str) -> Result<Option<(u64, SystemTime)>> {
        Ok(self.first_under(op, path, key).await?.filter(|(k, _, _)| k == key).map(|(_, size, t)| (size, t)))
    }

    /// Deletes one object; a missing object is not an error (S3 does not say).
    async fn delete_key(&self, path: &str, key: &str) -> Result<()> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(sdk_err("delete", path)) {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes many objects (at most [`DELETE_BATCH`]) in one request.
    async fn delete_keys(&self, path: &str, keys: Vec<String>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let ids = keys
            .into_iter()
            .map(|k| {
                ObjectIdentifier::builder().key(k).build().map_err(|e| backend("delete", path, DisplayErrorContext(&e)))
            })
            .collect::<Result<Vec<_>>>()?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| backend("delete", path, DisplayErrorContext(&e)))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(sdk_err("delete", path))?;
        if let Some(e) = out.errors().first() {
            let message = format!(
                "{} of the objects were not deleted; first: {}: {} {}",
                out.errors().len(),
                e.key().unwrap_or("?"),
                e.code().unwrap_or("?"),
                e.message().unwrap_or("")
            );
            return Err(backend("delete", path, message));
        }
        Ok(())
    }

    async fn abort_upload(&self, path: &str, key: &str, upload_id: &str) -> Result<()> {
        let res = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await;
        match res.map_err(sdk_err("abort upload of", path)) {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// Aborts the unfinished upload at `key` (if a writer left one) and deletes its helpers.
    async fn discard_upload(&self, path: &str, key: &str) -> Result<bool> {
        let Some(state) = self.load_state(path, key).await? else {
            return Ok(false);
        };
        if let Some(id) = &state.upload_id {
            self.abort_upload(path, key, id).await?;
        }
        self.delete_keys(path, vec![format!("{key}{STATE_SUFFIX}"), format!("{key}{PENDING_SUFFIX}")]).await?;
        Ok(true)
    }

    /// Copies an object too big for CopyObject with UploadPartCopy, part by part.
    async fn multipart_copy(&self, from: &str, source: &str, to_key: &str, size: u64) -> Result<()> {
        let part = self.copy_part_size.max(size.div_ceil(MAX_PARTS as u64));
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to_key)
            .send()
            .await
            .map_err(sdk_err("rename", from))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| backend("rename", from, "CreateMultipartUpload returned no upload id"))?
            .to_owned();
        let mut parts = Vec::new();
        let copied: Result<()> = async {
            let mut start = 0;
            while start < size {
                let end = (start + part).min(size) - 1;
                let number = i32::try_from(parts.len() + 1).map_err(|_| backend("rename", from, "too many parts"))?;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(to_key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(sdk_err("rename", from))?;
                let etag = out.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default();
                parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
                start = end + 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(to_key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(sdk_err("rename", from))?;
            Ok(())
        }
        .await;
        if copied.is_err() {
            // Best effort: the copy's error is the one worth reporting.
            let _ = self.abort_upload(from, to_key, &upload_id).await;
        }
        copied
    }
}

#[async_trait::async_trait]
impl StorageDriver for S3Driver {
    async fn get(&self, path: &str) -> Result<Bytes> {
        let key = self.key(path)?;
        Ok(self.get_key(path, &key).await?.0)
    }

    async fn put(&self, path: &str, content: Bytes) -> Result<()> {
        let key = self.key(path)?;
        self.put_key(path, &key, content).await.map(drop)
    }

    async fn read(&self, path: &str, offset: u64) -> Result<ByteStream> {
        let key = self.key(path)?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(&key);
        if offset > 0 {
            req = req.range(format!("bytes={offset}-"));
        }
        let out = match req.send().await {
            Ok(out) => out,
            // 416: the object exists but ends at or before `offset`: nothing left to read.
            Err(e) if offset > 0 && http_status(&e) == Some(416) => return Ok(Box::pin(futures_util::stream::empty())),
            Err(e) => return Err(sdk_err("read", path)(e)),
        };
        let stream = futures_util::stream::unfold(out.body, |mut body| async move {
            body.next().await.map(|chunk| (chunk.map_err(io::Error::other), body))
        });
        Ok(Box::pin(stream))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let key = self.key(path)?;
        let dir = format!("{key}/");
        let first = match self.first_under("stat", path, &key).await? {
            None => return Err(DriverError::NotFound(path.to_owned())),
            Some((k, size, modified)) if k == key => return Ok(FileInfo { size, modified, is_dir: false }),
            Some((k, _, modified)) if k.starts_with(&dir) => Some(modified),
            // A sibling such as `<key>.multipart` or `<key>-x` sorts before `<key>/`: look there.
            Some(_) => self.first_under("stat", path, &dir).await?.map(|(_, _, modified)| modified),
        };
        match first {
            Some(modified) => Ok(FileInfo { size: 0, modified, is_dir: true }),
            None => Err(DriverError::NotFound(path.to_owned())),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", self.key(path)?);
        let mut names = Vec::new();
        let mut found = false;
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&dir)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(sdk_err("list", path))?;
            for obj in out.contents() {
                let Some(name) = obj.key().and_then(|k| k.strip_prefix(&dir)) else {
                    continue;
                };
                found = true;
                // Empty: a "folder marker" some tools create. Helpers: a writer's resumable state.
                if !name.is_empty() && !name.ends_with(STATE_SUFFIX) && !name.ends_with(PENDING_SUFFIX) {
                    names.push(name.to_owned());
                }
            }
            for p in out.common_prefixes() {
                let Some(name) = p.prefix().and_then(|k| k.strip_prefix(&dir)) else {
                    continue;
                };
                found = true;
                let name = name.trim_end_matches('/');
                if !name.is_empty() {
                    names.push(name.to_owned());
                }
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        if !found {
            return Err(DriverError::NotFound(path.to_owned()));
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let dir = format!("{key}/");
        let mut found = false;
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&dir)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(sdk_err("delete", path))?;
            let mut keys = Vec::with_capacity(out.contents().len());
            for k in out.contents().iter().filter_map(|o| o.key()) {
                // An unfinished upload in the tree: abort it, or S3 keeps (and bills) its parts.
                if let Some(file_key) = k.strip_suffix(STATE_SUFFIX) {
                    if let Some(state) = self.load_state(path, file_key).await? {
                        if let Some(id) = &state.upload_id {
                            self.abort_upload(path, file_key, id).await?;
                        }
                    }
                }
                keys.push(k.to_owned());
            }
            found |= !keys.is_empty();
            for batch in keys.chunks(DELETE_BATCH) {
                self.delete_keys(path, batch.to_vec()).await?;
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        if self.probe("delete", path, &key).await?.is_some() {
            self.delete_key(path, &key).await?;
            found = true;
        }
        // A file still being written (closed, not committed) is a file too.
        found |= self.discard_upload(path, &key).await?;
        if !found {
            return Err(DriverError::NotFound(path.to_owned()));
        }
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from_key, to_key) = (self.key(from)?, self.key(to)?);
        let (size, _) =
            self.probe("rename", from, &from_key).await?.ok_or_else(|| DriverError::NotFound(from.to_owned()))?;
        if from_key == to_key {
            // Copy-then-delete onto itself would delete the file.
            return Ok(());
        }
        let source = format!("{}/{}", self.bucket, encode_key(&from_key));
        if size > self.copy_limit {
            self.multipart_copy(from, &source, &to_key, size).await?;
        } else {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(&to_key)
                .copy_source(&source)
                .send()
                .await
                .map_err(sdk_err("rename", from))?;
        }
        self.delete_key(from, &from_key).await
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(self.open_writer(path, append).await?))
    }

    fn name(&self) -> &'static str {
        "s3"
    }
}

/// What a closed writer leaves at `<key>.multipart`: enough for any process to resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UploadState {
    /// The multipart upload, once the first full part was uploaded.
    upload_id: Option<String>,
    /// Parts uploaded, in order, numbered from 1.
    parts: Vec<PartRecord>,
    /// Length of the `<key>.pending` tail (0: there is none).
    pending_size: u64,
    /// ETag of that tail as written, to notice a tail from another close.
    pending_etag: Option<String>,
}

/// One uploaded part.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartRecord {
    number: i32,
    etag: String,
    size: u64,
}

/// Streams into a multipart upload, holding at most one part in memory.
struct S3Writer {
    driver: S3Driver,
    path: String,
    key: String,
    /// What the helper objects in the bucket say now.
    durable: UploadState,
    /// Whether helper objects may exist (to clean them up at the end).
    state_exists: bool,
    /// Parts uploaded, this writer's included.
    parts: Vec<PartRecord>,
    /// Sum of the sizes of `parts`.
    uploaded: u64,
    /// Bytes not yet in a part: always less than one part between calls.
    buf: BytesMut,
    /// False while the durable tail (`durable.pending_size` bytes) is still only in storage.
    tail_loaded: bool,
    /// Whether close has anything new to record.
    changed: bool,
    /// A failed write lost data: closing or committing now would store a wrong file.
    failed: bool,
    #[cfg(test)]
    peak_buffered: usize,
}

impl S3Writer {
    fn note_buffer(&mut self) {
        #[cfg(test)]
        {
            self.peak_buffered = self.peak_buffered.max(self.buf.len()).max(self.buf.capacity());
        }
    }

    /// The most bytes the buffer ever held (or had room for).
    #[cfg(test)]
    fn peak_buffered(&self) -> usize {
        self.peak_buffered
    }

    fn state_key(&self) -> String {
        format!("{}{STATE_SUFFIX}", self.key)
    }

    fn pending_key(&self) -> String {
        format!("{}{PENDING_SUFFIX}", self.key)
    }

    /// Brings the tail recorded at the last close into the buffer, before it grows.
    async fn load_tail(&mut self) -> Result<()> {
        if !self.tail_loaded {
            self.buf = self.driver.load_pending(&self.path, &self.key, &self.durable).await?;
            self.tail_loaded = true;
            self.note_buffer();
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(backend(
                "write",
                &self.path,
                "an earlier write failed; reopen the writer to resume from the last close",
            ));
        }
        Ok(())
    }

    /// Uploads one part, starting the multipart upload first if needed.
    async fn upload_part(&mut self, data: Bytes) -> Result<()> {
        if self.parts.len() >= MAX_PARTS {
            return Err(backend("write", &self.path, format!("file exceeds {MAX_PARTS} parts; raise part_size")));
        }
        let upload_id = match &self.durable.upload_id {
            Some(id) => id.clone(),
            None => self.create_upload().await?,
        };
        let number = i32::try_from(self.parts.len() + 1).map_err(|_| backend("write", &self.path, "too many parts"))?;
        let size = data.len() as u64;
        let out = self
            .driver
            .client
            .upload_part()
            .bucket(&self.driver.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(data.len() as i64)
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(sdk_err("write", &self.path))?;
        let etag = out.e_tag().ok_or_else(|| backend("write", &self.path, "UploadPart returned no ETag"))?.to_owned();
        self.parts.push(PartRecord { number, etag, size });
        self.uploaded += size;
        Ok(())
    }

    /// Starts the multipart upload and records it at once, so that no crash can lose its id.
    async fn create_upload(&mut self) -> Result<String> {
        let out = self
            .driver
            .client
            .create_multipart_upload()
            .bucket(&self.driver.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(sdk_err("start upload of", &self.path))?;
        let id =
            out.upload_id().ok_or_else(|| backend("start upload of", &self.path, "no upload id returned"))?.to_owned();
        // Same content as the last close (no parts yet, same tail), now naming the upload.
        let mut state = self.durable.clone();
        state.upload_id = Some(id.clone());
        if let Err(e) = self.save_state(&state).await {
            // Best effort: nothing records the upload, so nothing else could ever abort it.
            let _ = self.driver.abort_upload(&self.path, &self.key, &id).await;
            return Err(e);
        }
        self.durable = state;
        Ok(id)
    }

    async fn save_state(&mut self, state: &UploadState) -> Result<()> {
        let json = serde_json::to_vec(state).map_err(|e| backend("close", &self.path, e.to_string()))?;
        self.driver.put_key(&self.path, &self.state_key(), Bytes::from(json)).await?;
        self.state_exists = true;
        Ok(())
    }

    async fn delete_helpers(&self) -> Result<()> {
        if self.state_exists {
            self.driver.delete_keys(&self.path, vec![self.state_key(), self.pending_key()]).await?;
        }
        Ok(())
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<()> {
        let part = self.driver.part_size;
        while let Some(full) = next_part(&mut self.buf, &mut data, part) {
            self.note_buffer();
            self.upload_part(full).await?;
        }
        self.note_buffer();
        Ok(())
    }
}

/// Cuts the next whole part from the buffered tail `buf` followed by `data`, or moves what
/// is left of `data` into `buf` and answers None when less than a part remains. A part
/// that starts on an empty buffer is taken from `data` without a copy; `buf` never holds
/// more than one part.
fn next_part(buf: &mut BytesMut, data: &mut Bytes, part: usize) -> Option<Bytes> {
    if buf.is_empty() && data.len() >= part {
        return Some(data.split_to(part));
    }
    if buf.capacity() == 0 && !data.is_empty() {
        buf.reserve(part);
    }
    let take = (part - buf.len()).min(data.len());
    buf.extend_from_slice(&data.split_to(take));
    (buf.len() == part).then(|| std::mem::take(buf).freeze())
}

#[async_trait::async_trait]
impl FileWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.check_usable()?;
        if data.is_empty() {
            return Ok(());
        }
        self.load_tail().await?;
        self.changed = true;
        let res = self.write_inner(data).await;
        self.failed = res.is_err();
        res
    }

    fn size(&self) -> u64 {
        let tail = if self.tail_loaded { self.buf.len() as u64 } else { self.durable.pending_size };
        self.uploaded + tail
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.check_usable()?;
        if !self.changed {
            // Reopened and nothing written: what the last close recorded still holds.
            return Ok(());
        }
        let mut state =
            UploadState { upload_id: self.durable.upload_id.clone(), parts: self.parts.clone(), ..Default::default() };
        if !self.buf.is_empty() {
            let tail = std::mem::take(&mut self.buf).freeze();
            state.pending_size = tail.len() as u64;
            state.pending_etag = self.driver.put_key(&self.path, &self.pending_key(), tail).await?;
        }
        // The commit point: until this write lands, the previous close's state stands.
        self.save_state(&state).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.check_usable()?;
        self.load_tail().await?;
        let tail = std::mem::take(&mut self.buf).freeze();
        match self.durable.upload_id.clone() {
            // Smaller than one part: a plain PutObject (an empty one for an empty file).
            None => {
                self.driver.put_key(&self.path, &self.key, tail).await?;
            }
            Some(upload_id) => {
                if !tail.is_empty() {
                    // S3 allows the last part to be smaller than the others.
                    self.upload_part(tail).await?;
                }
                let parts = self
                    .parts
                    .iter()
                    .map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build())
                    .collect();
                self.driver
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.driver.bucket)
                    .key(&self.key)
                    .upload_id(upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send()
                    .await
                    .map_err(sdk_err("commit", &self.path))?;
            }
        }
        self.delete_helpers().await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        if let Some(id) = &self.durable.upload_id {
            self.driver.abort_upload(&self.path, &self.key, id).await?;
        }
        self.delete_helpers().await?;
        self.driver.delete_key(&self.path, &self.key).await
    }
}

fn backend(op: &'static str, path: &str, message: impl std::fmt::Display) -> DriverError {
    DriverError::Backend { op, path: path.to_owned(), message: message.to_string() }
}

fn http_status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Maps an SDK error: a missing key or upload is NotFound, anything else a Backend error.
fn sdk_err<'a, E>(op: &'static str, path: &'a str) -> impl FnOnce(SdkError<E>) -> DriverError + 'a
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |err| {
        let not_found = match err.code() {
            Some(code) => matches!(code, "NoSuchKey" | "NotFound" | "NoSuchUpload"),
            // A HEAD answer has no body to carry a code.
            None => err.as_service_error().is_some() && http_status(&err) == Some(404),
        };
        if not_found {
            DriverError::NotFound(path.to_owned())
        } else {
            backend(op, path, render(&err))
        }
    }
}

/// What the server said (`HTTP 403 SignatureDoesNotMatch: ...`) when it answered; otherwise
/// the whole source chain, so that "dispatch failure: ... connection refused" is not lost.
fn render<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (err.as_service_error(), http_status(err)) {
        (Some(_), Some(status)) => {
            let mut m = format!("HTTP {status}");
            if let Some(code) = err.code() {
                m.push(' ');
                m.push_str(code);
            }
            if let Some(msg) = err.message() {
                m.push_str(": ");
                m.push_str(msg);
            }
            if let Some(id) = err.request_id() {
                m.push_str(&format!(" (request id {id})"));
            }
            m
        }
        _ => DisplayErrorContext(err).to_string(),
    }
}

fn to_system_time(t: Option<&DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// URL-encodes a key for `x-amz-copy-source`, keeping `/` (RFC 3986 unreserved stay as is).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use futures_util::TryStreamExt;

    use super::*;

    const ACCESS_KEY: &str = "berth-test-access";
    const SECRET_KEY: &str = "berth-test-secret-0123456789";

    /// A real S3 server (s3s-fs, signatures checked) on 127.0.0.1, on its own thread and
    /// runtime; dropping it stops the server and removes its files.
    pub(crate) struct TestS3 {
        addr: SocketAddr,
        bucket: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl TestS3 {
        pub(crate) fn start() -> TestS3 {
            let dir = tempfile::tempdir().unwrap();
            let bucket = "berth-test";
            std::fs::create_dir(dir.path().join(bucket)).unwrap();
            let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            let service = builder.build();

            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    loop {
                        let socket = tokio::select! {
                            res = listener.accept() => match res { Ok((s, _)) => s, Err(_) => continue },
                            _ = &mut stopped => break,
                        };
                        let conn =
                            http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            });
            TestS3 { addr, bucket: bucket.to_owned(), stop: Some(stop), thread: Some(thread), _dir: dir }
        }

        pub(crate) fn config(&self) -> S3Config {
            S3Config {
                bucket: self.bucket.clone(),
                prefix: Some("/root/dir/".to_owned()),
                region: Some("us-east-1".to_owned()),
                endpoint: Some(format!("http://{}", self.addr)),
                path_style: true,
                access_key: Some(ACCESS_KEY.to_owned()),
                secret_key: Some(SECRET_KEY.to_owned()),
                part_size: None,
            }
        }
    }

    impl Drop for TestS3 {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A driver on a fresh server, and the server's guard.
    async fn s3_driver() -> (S3Driver, TestS3) {
        let server = TestS3::start();
        let driver = S3Driver::new(server.config()).await.unwrap();
        (driver, server)
    }

    crate::driver_suite!(suite, s3_driver().await);

    /// Two registry processes over one bucket: an upload begun on one is finished on the
    /// other, and what one stores the other serves.
    #[tokio::test]
    async fn two_registries_over_one_bucket_share_uploads_and_blobs() {
        use crate::domain::{Registry, RepoName};
        let server = TestS3::start();
        let a = Registry::new(std::sync::Arc::new(small_parts(&server).await));
        let b = Registry::new(std::sync::Arc::new(small_parts(&server).await));
        let name: RepoName = "team/app".parse().unwrap();
        let data = pattern(12 * MIB as usize + 333, 7);
        let (first, rest) = data.split_at(7 * MIB as usize);
        let body = |bytes: &[u8]| -> crate::domain::BodyStream {
            let chunk = Bytes::copy_from_slice(bytes);
            Box::pin(futures_util::stream::once(async move { Ok(chunk) }))
        };
        let id = a.start_upload(&name).await.unwrap();
        assert_eq!(a.append_upload(&name, &id, Some(0), body(first)).await.unwrap(), first.len() as u64);
        assert_eq!(b.upload_size(&name, &id).await.unwrap(), first.len() as u64);
        let digest = oci::Digest::of(&data);
        b.finish_upload(&name, &id, &digest, Some(body(rest))).await.unwrap();
        assert_eq!(a.blob_size(&name, &digest).await.unwrap(), data.len() as u64);
        let got: Vec<Bytes> = a.blob_stream(&digest, 0).await.unwrap().try_collect().await.unwrap();
        assert!(got.concat() == data, "the blob reads back whole from the other registry");
        let wrong = oci::Digest::of(b"something else");
        let id = b.start_upload(&name).await.unwrap();
        let err = a.finish_upload(&name, &id, &wrong, Some(body(b"abc"))).await.unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::DigestInvalid);
        assert!(!a.blob_stored(&wrong).await.unwrap());
    }

    /// Bytes that differ at every offset, so a misplaced chunk cannot go unnoticed.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    async fn read_all(d: &S3Driver, path: &str, offset: u64) -> Vec<u8> {
        let chunks: Vec<Bytes> = d.read(path, offset).await.unwrap().try_collect().await.unwrap();
        chunks.concat()
    }

    async fn small_parts(server: &TestS3) -> S3Driver {
        S3Driver::new(S3Config { part_size: Some(5 * MIB), ..server.config() }).await.unwrap()
    }

    #[tokio::test]
    async fn another_process_resumes_a_partial_part_and_commits() {
        let server = TestS3::start();
        let first = small_parts(&server).await;
        let data = pattern(13 * MIB as usize + 12_345, 1);
        let (a, rest) = data.split_at(7 * MIB as usize + 3);
        let mut w = first.writer("/up/data", false).await.unwrap();
        for chunk in a.chunks(1_000_003) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert_eq!(w.size(), a.len() as u64);
        w.close().await.unwrap();
        assert!(first.stat("/up/data").await.unwrap_err().is_not_found(), "uncommitted data is not readable");
        assert!(first.list("/up").await.unwrap().is_empty(), "helpers are hidden");
        drop(first);

        // A second driver, as another registry process on the same bucket would have.
        let second = small_parts(&server).await;
        let mut w = second.writer("/up/data", true).await.unwrap();
        assert_eq!(w.size(), a.len() as u64);
        w.write(Bytes::copy_from_slice(rest)).await.unwrap();
        w.commit().await.unwrap();

        assert_eq!(second.stat("/up/data").await.unwrap().size, data.len() as u64);
        assert!(read_all(&second, "/up/data", 0).await == data, "content differs");
        let tail = read_all(&second, "/up/data", 9 * MIB).await;
        assert!(tail == data[9 * MIB as usize..], "ranged read differs");
        assert_eq!(second.list("/up").await.unwrap(), ["data"], "helpers are gone");
        let err = second.writer("/up/data", true).await.err().unwrap();
        assert!(matches!(err, DriverError::Backend { op: "append", .. }), "{err}");
    }

    #[tokio::test]
    async fn reopening_without_writing_changes_nothing() {
        let server = TestS3::start();
        let d = small_parts(&server).await;
        let data = pattern(6 * MIB as usize + 10, 6);
        let mut w = d.writer("/n/data", false).await.unwrap();
        w.write(Bytes::copy_from_slice(&data)).await.unwrap();
        w.close().await.unwrap();
        for _ in 0..2 {
            // What the registry does to report an upload's progress.
            let w = d.writer("/n/data", true).await.unwrap();
            assert_eq!(w.size(), data.len() as u64);
            w.close().await.unwrap();
        }
        let w = d.writer("/n/data", true).await.unwrap();
        drop(w);
        d.writer("/n/data", true).await.unwrap().commit().await.unwrap();
        assert!(d.get("/n/data").await.unwrap() == data);
    }

    #[tokio::test]
    async fn a_failed_write_refuses_to_close() {
        let server = TestS3::start();
        let d = small_parts(&server).await;
        let mut w = d.writer("/f/data", false).await.unwrap();
        w.write(Bytes::from(vec![1u8; MIB as usize])).await.unwrap();
        drop(server);
        let err = w.write(Bytes::from(vec![2u8; 5 * MIB as usize])).await.unwrap_err();
        assert!(matches!(err, DriverError::Backend { .. }), "{err}");
        let err = w.close().await.unwrap_err();
        assert!(err.to_string().contains("earlier write failed"), "{err}");
    }

    #[tokio::test]
    async fn writer_memory_stays_within_one_part() {
        let server = TestS3::start();
        let d = small_parts(&server).await;
        let data = pattern(40 * MIB as usize + 77, 2);
        let mut w = d.open_writer("/big/data", false).await.unwrap();
        let mut sent = 0;
        for (i, size) in [1, 64 * 1024, 3 * MIB as usize, 12 * MIB as usize, 999_999].iter().cycle().enumerate() {
            let end = (sent + size).min(data.len());
            w.write(Bytes::copy_from_slice(&data[sent..end])).await.unwrap();
            sent = end;
            assert!(w.peak_buffered() <= 5 * MIB as usize, "buffered {} after write {i}", w.peak_buffered());
            if sent == data.len() {
                break;
            }
        }
        assert_eq!(w.parts.len(), 8);
        Box::new(w).commit().await.unwrap();
        assert!(read_all(&d, "/big/data", 0).await == data, "content differs");
    }

    fn proptest_cases(default: u32) -> proptest::prelude::ProptestConfig {
        let cases = std::env::var("BERTH_PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
        proptest::prelude::ProptestConfig { cases, ..Default::default() }
    }

    proptest::proptest! {
        #![proptest_config(proptest_cases(256))]

        /// Whatever the chunk sizes, the parts are whole parts in order, the rest stays
        /// buffered, and the buffer never holds more than one part.
        #[test]
        fn parts_are_cut_at_part_boundaries_for_any_chunk_sizes(
            part in 32usize..160,
            chunks in proptest::collection::vec(0usize..500, 0..40),
        ) {
            let total: usize = chunks.iter().sum();
            let data = pattern(total, 3);
            let (mut buf, mut parts, mut at) = (BytesMut::new(), Vec::new(), 0);
            for len in chunks {
                let mut chunk = Bytes::copy_from_slice(&data[at..at + len]);
                at += len;
                while let Some(p) = next_part(&mut buf, &mut chunk, part) {
                    parts.push(p);
                }
                proptest::prop_assert!(chunk.is_empty(), "the chunk was consumed");
                proptest::prop_assert!(buf.len() < part && buf.capacity() <= part, "buffered {}", buf.len());
            }
            proptest::prop_assert!(parts.iter().all(|p| p.len() == part));
            proptest::prop_assert_eq!(parts.len(), total / part);
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).chain(buf.iter().copied()).collect();
            proptest::prop_assert!(joined == data, "the bytes come out in order");
        }
    }

    /// The same over a real S3 server: random chunk sizes across 5 MiB part boundaries, a
    /// close and reopen at a random point, and the committed object reads back whole.
    #[test]
    fn random_chunk_sizes_commit_whole_objects() {
        use proptest::strategy::{Strategy, ValueTree};
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = TestS3::start();
        let d = rt.block_on(small_parts(&server));
        let config = proptest_cases(6);
        let mut runner = proptest::test_runner::TestRunner::new(config.clone());
        let sizes = proptest::collection::vec(1usize..(3 * MIB as usize), 1..8);
        for case in 0..config.cases {
            let chunks = sizes.new_tree(&mut runner).unwrap().current();
            let reopen_after = case as usize % chunks.len();
            let data = pattern(chunks.iter().sum(), case);
            let path = format!("/p{case}/data");
            rt.block_on(async {
                let mut w = d.writer(&path, false).await.unwrap();
                let mut at = 0;
                for (i, len) in chunks.iter().enumerate() {
                    w.write(Bytes::copy_from_slice(&data[at..at + len])).await.unwrap();
                    at += len;
                    if i == reopen_after {
                        w.close().await.unwrap();
                        w = d.writer(&path, true).await.unwrap();
                        assert_eq!(w.size(), at as u64);
                    }
                }
                w.commit().await.unwrap();
                assert!(read_all(&d, &path, 0).await == data, "chunks {chunks:?}: content differs");
            });
        }
    }

    #[tokio::test]
    async fn cancel_from_another_process_aborts_the_upload() {
        let server = TestS3::start();
        let d = small_parts(&server).await;
        let mut w = d.writer("/x/data", false).await.unwrap();
        w.write(Bytes::from(pattern(6 * MIB as usize, 3))).await.unwrap();
        w.close().await.unwrap();
        let other = small_parts(&server).await;
        other.writer("/x/data", true).await.unwrap().cancel().await.unwrap();
        assert!(other.stat("/x").await.unwrap_err().is_not_found(), "helpers are gone");
        assert!(other.get("/x/data").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn delete_aborts_unfinished_uploads_in_the_tree() {
        let server = TestS3::start();
        let d = small_parts(&server).await;
        let mut w = d.writer("/t/u/data", false).await.unwrap();
        w.write(Bytes::from(pattern(5 * MIB as usize + 1, 4))).await.unwrap();
        w.close().await.unwrap();
        d.delete("/t").await.unwrap();
        assert!(d.stat("/t").await.unwrap_err().is_not_found());
        // The upload is gone: resuming starts from nothing.
        assert_eq!(d.writer("/t/u/data", true).await.unwrap().size(), 0);
        // A closed, uncommitted file is deletable by its own path too.
        let mut w = d.writer("/t/v/data", false).await.unwrap();
        w.write(Bytes::from_static(b"partial")).await.unwrap();
        w.close().await.unwrap();
        d.delete("/t/v/data").await.unwrap();
        assert!(d.delete("/t/v/data").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn rename_copies_big_objects_in_parts() {
        let server = TestS3::start();
        let mut d = small_parts(&server).await;
        d.copy_limit = 5 * MIB;
        d.copy_part_size = 5 * MIB;
        let data = pattern(12 * MIB as usize + 5, 5);
        d.put("/r/from", Bytes::from(data.clone())).await.unwrap();
        d.rename("/r/from", "/r/to with space").await.unwrap();
        d.rename("/r/to with space", "/r/to with space").await.unwrap();
        assert!(d.get("/r/to with space").await.unwrap() == data);
        assert!(d.get("/r/from").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn reading_at_or_past_the_end_is_empty() {
        let (d, _s) = s3_driver().await;
        d.put("/e", Bytes::from_static(b"12345")).await.unwrap();
        assert!(read_all(&d, "/e", 5).await.is_empty());
        assert!(read_all(&d, "/e", 50).await.is_empty());
        assert!(d.read("/missing", 3).await.err().unwrap().is_not_found());
    }

    #[tokio::test]
    async fn wrong_credentials_are_a_clear_backend_error() {
        let server = TestS3::start();
        for (ak, sk, expect) in [(ACCESS_KEY, "wrong-secret", "SignatureDoesNotMatch"), ("unknown-key", SECRET_KEY, "")]
        {
            let cfg = S3Config { access_key: Some(ak.to_owned()), secret_key: Some(sk.to_owned()), ..server.config() };
            let d = S3Driver::new(cfg).await.unwrap();
            let err = d.put("/p", Bytes::from_static(b"x")).await.unwrap_err();
            let DriverError::Backend { op, path, message } = &err else { panic!("not a backend error: {err}") };
            assert_eq!((*op, path.as_str()), ("put", "/p"));
            assert!(message.contains(expect), "{message}");
            assert!(message.starts_with("HTTP 403"), "{message}");
            println!("{err}");
        }
    }

    #[tokio::test]
    async fn unreachable_endpoint_keeps_the_cause() {
        let server = TestS3::start();
        let mut cfg = server.config();
        drop(server);
        cfg.endpoint = Some("http://127.0.0.1:9".to_owned());
        let d = S3Driver::new(cfg).await.unwrap();
        let err = d.get("/p").await.unwrap_err();
        assert!(err.to_string().contains("onnect"), "{err}");
        println!("{err}");
    }

    #[tokio::test]
    async fn bad_configs_are_refused() {
        let server = TestS3::start();
        let too_small = S3Config { part_size: Some(MIB), ..server.config() };
        assert!(S3Driver::new(too_small).await.unwrap_err().to_string().contains("part_size"));
        let half = S3Config { secret_key: None, ..server.config() };
        assert!(S3Driver::new(half).await.unwrap_err().to_string().contains("together"));
        let toml_like: S3Config = serde_json::from_str(r#"{"bucket":"b","path_style":true}"#).unwrap();
        assert_eq!(toml_like.region.as_deref(), Some("us-east-1"));
        assert!(!format!("{:?}", server.config()).contains(SECRET_KEY));
    }

    #[test]
    fn copy_source_keys_are_url_encoded() {
        assert_eq!(encode_key("v2/a b/c+d:e"), "v2/a%20b/c%2Bd%3Ae");
    }
}
