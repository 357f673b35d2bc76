//! A cache in an S3 bucket (`type=s3,bucket=B,region=R[,endpoint_url=URL][,prefix=P][,name=N]
//! [,use_path_style=true]`), laid out as BuildKit's s3 cache lays out its objects:
//!
//! ```text
//! <prefix>blobs/<digest>     every layer blob and the config, named by digest (sha256:<hex>)
//! <prefix>manifests/<name>   the cache manifest (name= defaults to `berth`)
//! ```
//!
//! Credentials come from the usual AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
//! AWS_SESSION_TOKEN, AWS_PROFILE and the shared files, web identity, container and instance
//! metadata), and so does the region when `region=` is not given (AWS_REGION,
//! AWS_DEFAULT_REGION, the profile).
//!
//! An export HEADs every blob, uploads only the ones the bucket lacks (or holds with another
//! size), several at once, and writes the manifest last: a reader never sees a manifest whose
//! blobs are missing, and of two exports at once the last manifest wins, whole. Each object
//! is one PutObject (S3 takes up to 5 GB that way). An import reads the manifest and config;
//! a layer is fetched when it is needed, and every fetched blob is verified by digest and size
//! before the content store keeps it.

use std::io::Write;

use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider as TlsProvider};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci::content::{BlobWriter, ContentStore, Expected};
use oci::ImageStore;

use super::spec::S3Location;
use super::{CacheBackend, Published, Upload};
use crate::error::{Error, Result};

/// Requests (HEADs, then uploads) an export has in flight at once.
const UPLOADS: usize = 8;

/// What S3 (or the way to it) answered, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct S3Said(String);

/// A cache under a prefix of an S3 bucket.
pub struct S3Cache<'a> {
    client: Client,
    bucket: String,
    prefix: String,
    name: String,
    rt: &'a tokio::runtime::Handle,
}

impl<'a> S3Cache<'a> {
    /// The cache at `loc`; requests run on `rt` (no request is made until the first call).
    pub fn new(loc: &S3Location, rt: &'a tokio::runtime::Handle) -> Result<Self> {
        if loc.bucket.is_empty() {
            return Err(Error::Invalid("type=s3: bucket= is empty".into()));
        }
        let client = rt.block_on(client(loc))?;
        Ok(S3Cache { client, bucket: loc.bucket.clone(), prefix: loc.prefix.clone(), name: loc.name.clone(), rt })
    }

    fn blob_key(&self, digest: &oci::Digest) -> String {
        format!("{}blobs/{digest}", self.prefix)
    }

    fn manifest_key(&self) -> String {
        format!("{}manifests/{}", self.prefix, self.name)
    }

    /// An error of `what` (`read`, `write`, ...) on one object, named `s3://bucket/key`.
    fn fail(&self, what: &str, key: &str, why: impl Into<String>) -> Error {
        Error::remote(format!("{what} s3://{}/{key}", self.bucket))(S3Said(why.into()))
    }

    /// The manifest's bytes, None when there is no such object.
    async fn get_manifest(&self) -> Result<Option<Vec<u8>>> {
        let key = self.manifest_key();
        let max = oci::manifest::MAX_MANIFEST_SIZE;
        let out = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail("read", &key, render(&e))),
        };
        if out.content_length().is_some_and(|n| n > max as i64) {
            return Err(self.fail("read", &key, format!("a cache manifest over {max} bytes")));
        }
        let mut body = out.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.try_next().await.map_err(|e| self.fail("read", &key, oci::error::chain(&e)))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max {
                return Err(self.fail("read", &key, format!("a cache manifest over {max} bytes")));
            }
        }
        Ok(Some(bytes))
    }

    /// Streams one blob object into `w`; an object of another size than `size` is refused.
    async fn download(&self, digest: &oci::Digest, size: u64, w: &mut dyn Write) -> Result<()> {
        let key = self.blob_key(digest);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.fail("read", &key, render(&e)))?;
        let wrong_size = |n: u64| self.fail("read", &key, format!("the object has {n} bytes, the cache names {size}"));
        if let Some(n) = out.content_length().and_then(|n| u64::try_from(n).ok()).filter(|n| *n != size) {
            return Err(wrong_size(n));
        }
        let mut body = out.body;
        let mut got = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| self.fail("read", &key, oci::error::chain(&e)))? {
            got += chunk.len() as u64;
            if got > size {
                return Err(wrong_size(got));
            }
            w.write_all(&chunk).map_err(Error::io(format!("store {digest} from s3://{}/{key}", self.bucket)))?;
        }
        Ok(())
    }

    /// True when the bucket holds `digest` with `size` bytes.
    async fn has(&self, digest: &oci::Digest, size: u64) -> Result<bool> {
        let key = self.blob_key(digest);
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(out) => Ok(out.content_length().and_then(|n| u64::try_from(n).ok()) == Some(size)),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(self.fail("look up", &key, render(&e))),
        }
    }

    /// Uploads one object, from a content store file or from memory.
    async fn put(&self, store: &ImageStore, key: String, from: Source<'_>) -> Result<()> {
        let (body, media_type) = match from {
            Source::Store(d) => {
                let path = store.content().blob_path(d);
                let body = ByteStream::from_path(&path).await.map_err(|e| {
                    self.fail("write", &key, format!("read {}: {}", path.display(), oci::error::chain(&e)))
                })?;
                (body, "application/octet-stream")
            }
            Source::Bytes(b, media_type) => (ByteStream::from(b.to_vec()), media_type),
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(media_type)
            .body(body)
            .send()
            .await
            .map(drop)
            .map_err(|e| self.fail("write", &key, render(&e)))
    }

    /// Of `blobs`, the ones the bucket lacks, HEADed several at once.
    fn missing<'b>(&self, blobs: &[(&'b oci::Digest, u64)]) -> Result<Vec<(&'b oci::Digest, u64)>> {
        let found: Vec<bool> = self
            .rt
            .block_on(stream::iter(blobs).map(|(d, size)| self.has(d, *size)).buffered(UPLOADS).try_collect())?;
        Ok(blobs.iter().zip(found).filter(|(_, has)| !has).map(|(b, _)| *b).collect())
    }
}

/// Where an upload's bytes come from.
enum Source<'b> {
    /// A blob of the content store, streamed from its file.
    Store(&'b oci::Digest),
    /// Bytes in memory, with their media type.
    Bytes(&'b [u8], &'static str),
}

/// The S3 client for `loc`: one TLS stack (rustls with ring), checksums only where S3
/// requires them (S3-compatible servers do not all take the newer default trailers; blobs
/// are verified by digest anyway).
async fn client(loc: &S3Location) -> Result<Client> {
    let http = aws_smithy_http_client::Builder::new().tls_provider(TlsProvider::Rustls(CryptoMode::Ring)).build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &loc.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        return Err(Error::Invalid(format!(
            "type=s3,bucket={}: no region: give region= or set AWS_REGION",
            loc.bucket
        )));
    }
    let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(loc.use_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = &loc.endpoint_url {
        s3 = s3.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(s3.build()))
}

/// A missing object (a bucket that is missing is an error, with its own code).
fn not_found<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    let status = e.raw_response().map(|r| r.status().as_u16());
    match e.code() {
        Some(code) => matches!(code, "NoSuchKey" | "NotFound"),
        // A HEAD answer has no body to carry a code.
        None => e.as_service_error().is_some() && status == Some(404),
    }
}

/// What the server said (`HTTP 403 SignatureDoesNotMatch: ...`), or, when it did not
/// answer, the chain of causes (`dispatch failure: ... connection refused`).
fn render<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let Some(status) = e.raw_response().map(|r| r.status().as_u16()).filter(|_| e.as_service_error().is_some()) else {
        return oci::error::chain(e);
    };
    let mut s = format!("HTTP {status}");
    match (e.code(), status) {
        (Some(code), _) => s = format!("{s} {code}"),
        // A HEAD answer has no body to carry a code.
        (None, 403) => s = format!("{s} Forbidden (credentials or permissions)"),
        (None, _) => {}
    }
    if let Some(message) = e.message() {
        s = format!("{s}: {message}");
    }
    s
}

impl CacheBackend for S3Cache<'_> {
    fn describe(&self) -> String {
        format!("s3 {}/{}", self.bucket, self.manifest_key())
    }

    fn manifest(&self, _store: &ImageStore) -> Result<Option<Vec<u8>>> {
        self.rt.block_on(self.get_manifest())
    }

    fn fetch(&self, store: &ImageStore, digest: &oci::Digest, size: u64) -> Result<()> {
        let mut w: Box<dyn BlobWriter> =
            store.content().writer(digest.algorithm()).map_err(Error::image("store a cache blob"))?;
        if let Err(e) = self.rt.block_on(self.download(digest, size, &mut w)) {
            let _ = w.abort();
            return Err(e);
        }
        // Verified here: an object whose bytes are not its name is refused, never stored.
        w.commit(Expected::exactly(digest, size))
            .map(drop)
            .map_err(Error::remote(format!("read {digest} from {}", self.describe())))
    }

    fn publish(&self, store: &ImageStore, upload: &Upload<'_>) -> Result<Published> {
        let mut layers: Vec<(&oci::Digest, u64)> = Vec::new();
        for b in upload.blobs {
            if !layers.iter().any(|(d, _)| *d == &b.digest) {
                layers.push((&b.digest, b.size));
            }
        }
        let (config, config_bytes) = upload.config;
        let mut wanted = layers.clone();
        wanted.push((config, config_bytes.len() as u64));
        let mut missing = self.missing(&wanted)?;
        let config_missing = missing.last().is_some_and(|(d, _)| *d == config);
        if config_missing {
            missing.pop();
        }
        // A blob imported and never needed here comes local first (outside the runtime:
        // the fetch blocks on it).
        for (d, _) in &missing {
            upload.lazy.ensure(store, d)?;
        }
        self.rt.block_on(async {
            stream::iter(&missing)
                .map(|(d, _)| self.put(store, self.blob_key(d), Source::Store(d)))
                .buffer_unordered(UPLOADS)
                .try_collect::<Vec<()>>()
                .await?;
            if config_missing {
                let media_type = super::format::CONFIG_MEDIA_TYPE;
                self.put(store, self.blob_key(config), Source::Bytes(config_bytes, media_type)).await?;
            }
            // Last: a reader never sees a manifest whose blobs are not all there.
            let manifest = Source::Bytes(upload.manifest, oci::media::OCI_MANIFEST);
            self.put(store, self.manifest_key(), manifest).await
        })?;
        Ok(Published {
            uploaded: missing.len(),
            bytes: missing.iter().map(|(_, size)| size).sum(),
            present: layers.len() - missing.len(),
        })
    }
}
