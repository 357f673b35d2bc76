//! Pull: manifest (resolving an index to one platform), config and layers into the store.

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};

use super::transport::{check, Client};
use super::{registry_host, Event, Progress};
use crate::content::{ContentStore, Expected};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{descriptor_digest, Manifest};
use crate::media;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore, Target};

/// The media types a pull accepts, most preferred first.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from an index; the host's when `None`.
    pub platform: Option<Platform>,
    /// Layers downloaded at once.
    pub concurrency: usize,
    /// Manifest and config only (a build's base image, whose layers are fetched when a step
    /// needs them): the layers' repository is remembered as their source, and the image is
    /// not named, since the store does not hold it whole.
    pub lazy: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions { platform: None, concurrency: 3, lazy: false }
    }
}

/// Where a repository is: what every request of a pull or push needs.
pub(crate) struct Repo<'a> {
    pub client: &'a Client,
    pub host: String,
    pub domain: String,
    pub path: String,
    pub scope: String,
}

impl Repo<'_> {
    pub(crate) fn new<'a>(client: &'a Client, r: &Reference, actions: &str) -> Repo<'a> {
        Repo {
            client,
            host: registry_host(r.domain()).to_owned(),
            domain: r.domain().to_owned(),
            path: r.path().to_owned(),
            scope: format!("repository:{}:{actions}", r.path()),
        }
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        make: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
        progress: &dyn Progress,
    ) -> Result<reqwest::Response> {
        self.client.send(&self.host, &self.domain, &self.scope, method, path, make, progress).await
    }

    /// Like [`Repo::send`], with extra scopes (a mount also reads its source repository).
    pub(crate) async fn send_with_scope(
        &self,
        extra: &str,
        method: Method,
        path: &str,
        make: &(dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
        progress: &dyn Progress,
    ) -> Result<reqwest::Response> {
        let scope = format!("{} {extra}", self.scope);
        self.client.send(&self.host, &self.domain, &scope, method, path, make, progress).await
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image, named by the reference (unnamed for a lazy pull).
    pub record: ImageRecord,
    /// The digest the registry answered the reference with: an index's for a
    /// multi-platform image, as docker's `Digest:` line and `RepoDigests` show it.
    pub digest: Digest,
}

/// Pulls `reference` into `store` and names it; a multi-platform image pulled by tag is
/// also named by its index's digest (`repo@sha256:...`, docker's repo digest).
pub async fn pull(
    client: &Client,
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let repo = Repo::new(client, reference, "pull");
    let wanted =
        reference.digest().map(ToString::to_string).or_else(|| reference.tag().map(str::to_owned)).unwrap_or_default();
    let (mut target, mut manifest) = fetch_manifest(&repo, store, &wanted, reference.digest(), progress).await?;
    let top = target.digest.clone();
    for _ in 0..4 {
        let Manifest::Index(index) = &manifest else {
            break;
        };
        let child = pick_platform(index, opts.platform.as_ref())?;
        let d = descriptor_digest(child)?;
        (target, manifest) = fetch_manifest(&repo, store, &d.to_string(), Some(&d), progress).await?;
    }
    let Manifest::Image(image) = &manifest else {
        return Err(Error::InvalidDocument { what: "index", reason: "indexes nested too deep".into() });
    };
    let layers = image.layers().iter().filter(|_| !opts.lazy);
    let blobs: Vec<(Digest, u64)> = std::iter::once(image.config())
        .chain(layers)
        .map(|d| Ok((descriptor_digest(d)?, d.size())))
        .collect::<Result<_>>()?;
    futures_util::stream::iter(blobs.into_iter().map(|(d, size)| {
        let repo = &repo;
        async move { fetch_blob(repo, store, &d, size, progress).await }
    }))
    .buffer_unordered(opts.concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    // Remember where these blobs live, so a push to another repository there can mount them,
    // and that the registry has these manifests (the image's repo digests).
    let me = reference.repository();
    let mut moved =
        std::iter::once(image.config()).chain(image.layers()).map(descriptor_digest).collect::<Result<Vec<_>>>()?;
    moved.push(target.digest.clone());
    store.add_sources(&moved, &me)?;
    if opts.lazy {
        return Ok(Pulled { record: ImageRecord { name: None, target }, digest: top });
    }
    store.set_name(reference, &target)?;
    if top != target.digest {
        store.add_source(&top, &me)?;
        if reference.digest().is_none() {
            store.set_name(&reference.with_digest(top.clone()), &target)?;
        }
    }
    Ok(Pulled { record: ImageRecord { name: Some(reference.clone()), target }, digest: top })
}

/// GETs a manifest, checks its digest (when pinned) and size, and stores it.
async fn fetch_manifest(
    repo: &Repo<'_>,
    store: &ImageStore,
    reference: &str,
    pinned: Option<&Digest>,
    progress: &dyn Progress,
) -> Result<(Target, Manifest)> {
    let path = format!("/v2/{}/manifests/{reference}", repo.path);
    let resp = check("GET", repo.send(Method::GET, &path, &|r| r.header("accept", ACCEPT), progress).await?).await?;
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
    let bytes = super::transport::read_manifest(resp, &path).await?;
    let algorithm = pinned.map_or(crate::Algorithm::Sha256, Digest::algorithm);
    let mut h = algorithm.hasher();
    h.update(&bytes);
    let actual = h.finish();
    if let Some(p) = pinned {
        if &actual != p {
            return Err(Error::DigestMismatch { expected: p.clone(), actual });
        }
    }
    let manifest =
        Manifest::parse(&bytes, content_type.as_deref().filter(|t| media::is_manifest(t) || media::is_index(t)))?;
    let mut w = store.content().writer(algorithm)?;
    w.write_all(&bytes).map_err(|e| Error::io("store manifest", e))?;
    w.commit(Expected::exactly(&actual, bytes.len() as u64))?;
    progress.event(Event::Manifest { reference: reference.to_owned(), digest: actual.clone() });
    Ok((Target { digest: actual, media_type: manifest.media_type(), size: bytes.len() as u64 }, manifest))
}

fn pick_platform<'a>(
    index: &'a oci_spec::image::ImageIndex,
    wanted: Option<&Platform>,
) -> Result<&'a oci_spec::image::Descriptor> {
    let host = Platform::host();
    let wanted = wanted.unwrap_or(&host);
    wanted.pick(index).ok_or_else(|| Error::ImageNotFound(format!("no image for platform {wanted} in the index")))
}

/// Downloads one blob into the store, verifying as it streams, resuming with `Range`
/// after a dropped connection. Does nothing when the store has it.
pub(crate) async fn fetch_blob(
    repo: &Repo<'_>,
    store: &ImageStore,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<()> {
    if store.content().contains(digest)? {
        progress.event(Event::Skipped { digest: digest.clone(), reason: "already exists".into() });
        return Ok(());
    }
    let path = format!("/v2/{}/blobs/{digest}", repo.path);
    let mut w = store.content().writer(digest.algorithm())?;
    progress.event(Event::Start { digest: digest.clone(), size, offset: 0 });
    let mut attempts = 0;
    loop {
        let offset = w.written();
        let range = format!("bytes={offset}-");
        let resp = repo
            .send(
                Method::GET,
                &path,
                &|r| {
                    if offset > 0 {
                        r.header("range", range.as_str())
                    } else {
                        r
                    }
                },
                progress,
            )
            .await?;
        let resp = check("GET", resp).await?;
        if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            // The server ignored the range: start over.
            w.abort()?;
            w = store.content().writer(digest.algorithm())?;
        }
        let mut stream = resp.bytes_stream();
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    w.write_all(&c).map_err(|e| Error::io(format!("write blob {digest}"), e))?;
                    progress.event(Event::Bytes { digest: digest.clone(), n: c.len() as u64 });
                    if w.written() > size {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) if attempts < 5 && w.written() < size => {
                attempts += 1;
                progress.event(Event::Retry { what: format!("download {digest}: {e}"), attempt: attempts });
                tokio::time::sleep(std::time::Duration::from_millis(200 * 2u64.pow(attempts))).await;
            }
            Some(source) => return Err(Error::Http { method: "GET".into(), url: path, source }),
            None => break,
        }
    }
    w.commit(Expected::exactly(digest, size))?;
    progress.event(Event::Done { digest: digest.clone() });
    Ok(())
}

/// A manifest (or index) by tag or digest, stored in `store` and verified; what it is and
/// its bytes. For documents that are not images to pull (a build cache's manifest).
pub async fn fetch_document(
    client: &Client,
    store: &ImageStore,
    reference: &Reference,
    progress: &dyn Progress,
) -> Result<(Target, Manifest)> {
    let repo = Repo::new(client, reference, "pull");
    let wanted =
        reference.digest().map(ToString::to_string).or_else(|| reference.tag().map(str::to_owned)).unwrap_or_default();
    fetch_manifest(&repo, store, &wanted, reference.digest(), progress).await
}

/// Whether `reference`'s repository still holds the blob `digest` of `size` bytes: a HEAD,
/// so that a build about to mount a blob it never fetched finds out first when the
/// registry lost it. A 404 or another size is `false`; any other failure is an error.
pub async fn has_blob(client: &Client, reference: &Reference, digest: &Digest, size: u64) -> Result<bool> {
    let repo = Repo::new(client, reference, "pull");
    let path = format!("/v2/{}/blobs/{digest}", repo.path);
    let resp = repo.send(Method::HEAD, &path, &|r| r, &super::NoProgress).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(false);
    }
    let resp = check("HEAD", resp).await?;
    // The header, not reqwest's body length: a HEAD's body is always empty.
    let length = resp.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    Ok(length.is_none_or(|n| n == size))
}

/// Downloads blobs of `reference`'s repository into `store` (verified by digest and size,
/// resumed after a dropped connection; each one already present is skipped) and remembers
/// that repository as their source, so a later push there mounts instead of uploading.
pub async fn fetch_blobs(
    client: &Client,
    store: &ImageStore,
    reference: &Reference,
    blobs: &[(Digest, u64)],
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let repo = Repo::new(client, reference, "pull");
    futures_util::stream::iter(blobs.iter().map(|(d, size)| {
        let repo = &repo;
        async move { fetch_blob(repo, store, d, *size, progress).await }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    store.add_sources(blobs.iter().map(|(d, _)| d), &reference.repository())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientOptions, NoProgress};

    #[tokio::test]
    async fn a_manifest_without_a_length_is_read_up_to_the_limit_and_refused() {
        // Before, the whole body was read: the pull grew by gigabytes a second.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        let addr = crate::client::transport::tests::endless(head).await;
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let client = Client::new(ClientOptions { retries: 0, ..Default::default() }).unwrap();
        let reference: Reference = format!("{addr}/evil/app:1").parse().unwrap();
        let opts = PullOptions { platform: None, concurrency: 1, lazy: false };
        let err = pull(&client, &store, &reference, &opts, &NoProgress).await.unwrap_err();
        assert!(err.to_string().contains("larger than 4 MiB"), "{}", crate::error::chain(&err));
    }
}
