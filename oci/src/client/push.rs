//! Push: blobs (skipped when present, mounted when another repository has them,
//! monolithic when small, chunked and resumable when large), then manifests.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};

use super::pull::Repo;
use super::transport::{check, Client};
use super::{Event, Progress};
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{descriptor_digest, Manifest};
use crate::media;
use crate::reference::Reference;
use crate::store::{ImageStore, Target};

/// The media types pushed manifests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// As stored (berth stores OCI).
    #[default]
    Oci,
    /// Docker schema 2, for registries or tools that want it.
    Docker,
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// OCI or Docker media types.
    pub format: ManifestFormat,
    /// Blobs uploaded at once.
    pub concurrency: usize,
    /// Blobs up to this size go in one request; larger ones in chunks of this size.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { format: ManifestFormat::Oci, concurrency: 3, chunk_size: 8 * 1024 * 1024 }
    }
}

/// Pushes the image `target` from `store` to every reference in `to` (tags, or a
/// digest reference to push by digest); returns the pushed manifest's digest.
pub async fn push(
    client: &Client,
    store: &ImageStore,
    target: &Target,
    to: &[Reference],
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let mut pushed = None;
    for dest in to {
        let repo = Repo::new(client, dest, "pull,push");
        let noted = Noted::default();
        let tree = push_manifest_tree(&repo, store, target, opts, &noted, progress).await;
        noted.save(store, &repo)?;
        let (bytes, media_type) = tree?;
        let reference = dest.tag().map(str::to_owned).unwrap_or_else(|| Digest::of(&bytes).to_string());
        let d = put_manifest(&repo, &reference, &bytes, &media_type, progress).await?;
        if let Some(pinned) = dest.digest() {
            if pinned != &d {
                return Err(Error::DigestMismatch { expected: pinned.clone(), actual: d });
            }
        }
        store.add_source(&d, &dest.repository())?;
        pushed = Some(d);
    }
    pushed.ok_or_else(|| Error::InvalidReference { input: String::new(), reason: "nothing to push to" })
}

/// Pushes everything `target` needs (blobs, child manifests) and returns its manifest
/// bytes in the wanted format, not yet pushed.
/// Pushes blobs of `store` to the repository of `to` without a manifest (each skipped when
/// present, mounted when another repository of the registry has it): a cache export sends
/// its layers while the build is still running, and its manifest last.
pub async fn push_blobs(
    client: &Client,
    store: &ImageStore,
    to: &Reference,
    blobs: &[(Digest, u64)],
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let repo = Repo::new(client, to, "pull,push");
    let noted = Noted::default();
    let pushed = futures_util::stream::iter(blobs.iter().map(|(d, size)| {
        let (repo, noted) = (&repo, &noted);
        async move { push_blob(repo, store, d, *size, opts, noted, progress).await }
    }))
    .buffer_unordered(opts.concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await;
    noted.save(store, &repo)?;
    pushed.map(drop)
}

/// The blobs a push found in or put into a repository, noted in the store as it ends (also
/// when it fails), in one write rather than one per blob.
#[derive(Default)]
struct Noted(std::sync::Mutex<Vec<Digest>>);

impl Noted {
    fn add(&self, digest: &Digest) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(digest.clone());
    }

    fn save(&self, store: &ImageStore, repo: &Repo<'_>) -> Result<()> {
        let digests = std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        store.add_sources(&digests, &format!("{}/{}", repo.domain, repo.path))
    }
}

fn push_manifest_tree<'a>(
    repo: &'a Repo<'a>,
    store: &'a ImageStore,
    target: &'a Target,
    opts: &'a PushOptions,
    noted: &'a Noted,
    progress: &'a dyn Progress,
) -> futures_util::future::BoxFuture<'a, Result<(Vec<u8>, String)>> {
    Box::pin(async move {
        let bytes = store.content().read_small(&target.digest, crate::manifest::MAX_MANIFEST_SIZE as u64)?;
        match Manifest::parse(&bytes, Some(&target.media_type))? {
            Manifest::Image(m) => {
                let blobs: Vec<(Digest, u64)> = std::iter::once(m.config())
                    .chain(m.layers())
                    .map(|d| Ok((descriptor_digest(d)?, d.size())))
                    .collect::<Result<_>>()?;
                futures_util::stream::iter(
                    blobs
                        .into_iter()
                        .map(|(d, size)| async move { push_blob(repo, store, &d, size, opts, noted, progress).await }),
                )
                .buffer_unordered(opts.concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
                convert(&bytes, opts.format, false)
            }
            Manifest::Index(index) => {
                let mut doc: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson { what: "index", source })?;
                for (i, child) in index.manifests().iter().enumerate() {
                    let t = Target {
                        digest: descriptor_digest(child)?,
                        media_type: child.media_type().to_string(),
                        size: child.size(),
                    };
                    if !store.content().contains(&t.digest)? {
                        // Platforms that were never pulled cannot be pushed: say which.
                        return Err(Error::BlobNotFound(t.digest));
                    }
                    let (child_bytes, child_type) = push_manifest_tree(repo, store, &t, opts, noted, progress).await?;
                    let d =
                        put_manifest(repo, &Digest::of(&child_bytes).to_string(), &child_bytes, &child_type, progress)
                            .await?;
                    doc["manifests"][i]["digest"] = d.to_string().into();
                    doc["manifests"][i]["size"] = child_bytes.len().into();
                    doc["manifests"][i]["mediaType"] = child_type.into();
                }
                let bytes = serde_json::to_vec(&doc).map_err(|source| Error::InvalidJson { what: "index", source })?;
                convert(&bytes, opts.format, true)
            }
        }
    })
}

/// Rewrites media types for `format`; OCI documents stay byte-identical.
fn convert(bytes: &[u8], format: ManifestFormat, index: bool) -> Result<(Vec<u8>, String)> {
    let parsed: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
    let own = parsed.get("mediaType").and_then(|v| v.as_str()).map(str::to_owned);
    let oci_type = if index { media::OCI_INDEX } else { media::OCI_MANIFEST };
    if format == ManifestFormat::Oci {
        return Ok((bytes.to_vec(), own.unwrap_or_else(|| oci_type.to_owned())));
    }
    let mut doc = parsed;
    let to_docker = |t: &str| -> Result<&'static str> {
        Ok(match t {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => media::DOCKER_MANIFEST,
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => media::DOCKER_MANIFEST_LIST,
            media::OCI_CONFIG | media::DOCKER_CONFIG => media::DOCKER_CONFIG,
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => media::DOCKER_LAYER_GZIP,
            media::OCI_LAYER | media::DOCKER_LAYER => media::DOCKER_LAYER,
            other => {
                return Err(Error::InvalidDocument {
                    what: "manifest",
                    reason: format!("{other} has no Docker schema 2 equivalent (zstd layers need --format oci)"),
                })
            }
        })
    };
    let top = if index { media::DOCKER_MANIFEST_LIST } else { media::DOCKER_MANIFEST };
    doc["mediaType"] = top.into();
    if let Some(c) = doc.get_mut("config") {
        let t = c["mediaType"].as_str().unwrap_or(media::OCI_CONFIG).to_owned();
        c["mediaType"] = to_docker(&t)?.into();
    }
    for key in ["layers", "manifests"] {
        if let Some(list) = doc.get_mut(key).and_then(|l| l.as_array_mut()) {
            for d in list {
                let t = d["mediaType"].as_str().unwrap_or("").to_owned();
                d["mediaType"] = to_docker(&t)?.into();
            }
        }
    }
    let bytes = serde_json::to_vec(&doc).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
    Ok((bytes, top.to_owned()))
}

async fn put_manifest(
    repo: &Repo<'_>,
    reference: &str,
    bytes: &[u8],
    media_type: &str,
    progress: &dyn Progress,
) -> Result<Digest> {
    let path = format!("/v2/{}/manifests/{reference}", repo.path);
    let body = Bytes::copy_from_slice(bytes);
    let resp =
        repo.send(Method::PUT, &path, &|r| r.header("content-type", media_type).body(body.clone()), progress).await?;
    check("PUT", resp).await?;
    let d = Digest::of(bytes);
    progress.event(Event::Manifest { reference: reference.to_owned(), digest: d.clone() });
    Ok(d)
}

/// An upload URL from a `Location` header, with extra query parameters.
fn location(base_path: &str, loc: &str, extra: &str) -> String {
    let mut url = if loc.starts_with("http://") || loc.starts_with("https://") || loc.starts_with('/') {
        loc.to_owned()
    } else {
        format!("{base_path}/{loc}")
    };
    if !extra.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(extra);
    }
    url
}

fn location_of(resp: &reqwest::Response) -> Result<String> {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or_else(|| Error::Registry {
        method: "POST".into(),
        url: resp.url().to_string(),
        status: resp.status().as_u16(),
        code: None,
        message: "no Location header for the upload".into(),
        retry_after: None,
    })
}

/// Pushes one blob unless the registry has it.
async fn push_blob(
    repo: &Repo<'_>,
    store: &ImageStore,
    digest: &Digest,
    size: u64,
    opts: &PushOptions,
    noted: &Noted,
    progress: &dyn Progress,
) -> Result<()> {
    let blob_path = format!("/v2/{}/blobs/{digest}", repo.path);
    let head = repo.send(Method::HEAD, &blob_path, &|r| r, progress).await?;
    let me = format!("{}/{}", repo.domain, repo.path);
    if head.status().is_success() {
        progress.event(Event::Skipped { digest: digest.clone(), reason: "already exists".into() });
        noted.add(digest);
        return Ok(());
    }
    let uploads = format!("/v2/{}/blobs/uploads/", repo.path);
    // Another repository of this registry may have it: ask for a mount.
    let mut session = None;
    for source in store.sources(digest)? {
        let Some(from) = source.strip_prefix(&format!("{}/", repo.domain)) else {
            continue;
        };
        if source == me {
            continue;
        }
        let path = format!("{uploads}?mount={digest}&from={from}");
        // The token must also cover reading the source; a registry that still says no
        // just means no mount: upload instead.
        let scope = format!("repository:{from}:pull");
        let resp = match repo
            .send_with_scope(&scope, Method::POST, &path, &|r| r.header("content-length", "0"), progress)
            .await
        {
            Ok(r) => r,
            Err(Error::Unauthorized { .. }) => continue,
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::CREATED => {
                progress.event(Event::Skipped { digest: digest.clone(), reason: format!("mounted from {from}") });
                noted.add(digest);
                return Ok(());
            }
            StatusCode::ACCEPTED => {
                session = Some(location_of(&resp)?);
                break;
            }
            _ => {}
        }
    }
    let loc = match session {
        Some(l) => l,
        None => location_of(
            &check("POST", repo.send(Method::POST, &uploads, &|r| r.header("content-length", "0"), progress).await?)
                .await?,
        )?,
    };
    progress.event(Event::Start { digest: digest.clone(), size, offset: 0 });
    let base = format!("/v2/{}/blobs/uploads", repo.path);
    if size <= opts.chunk_size {
        let mut buf = Vec::with_capacity(size as usize);
        store
            .content()
            .reader(digest)?
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read blob {digest}"), e))?;
        let body = Bytes::from(buf);
        let url = location(&base, &loc, &format!("digest={digest}"));
        let resp = repo
            .send(
                Method::PUT,
                &url,
                &|r| r.header("content-type", "application/octet-stream").body(body.clone()),
                progress,
            )
            .await?;
        check("PUT", resp).await?;
        progress.event(Event::Bytes { digest: digest.clone(), n: size });
    } else {
        let loc = upload_chunks(repo, store, digest, size, &base, loc, opts, progress).await?;
        let url = location(&base, &loc, &format!("digest={digest}"));
        check("PUT", repo.send(Method::PUT, &url, &|r| r.header("content-length", "0"), progress).await?).await?;
    }
    noted.add(digest);
    progress.event(Event::Done { digest: digest.clone() });
    Ok(())
}

/// PATCHes the blob in order, chunk by chunk; after a failure asks the server where the
/// upload stands (its `Range`) and continues from there. Returns the last `Location`.
#[allow(clippy::too_many_arguments)]
async fn upload_chunks(
    repo: &Repo<'_>,
    store: &ImageStore,
    digest: &Digest,
    size: u64,
    base: &str,
    mut loc: String,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<String> {
    let mut file = store.content().reader(digest)?;
    let path = store.content().blob_path(digest);
    let mut offset = 0u64;
    let mut failures = 0;
    while offset < size {
        let len = opts.chunk_size.min(size - offset);
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf).map_err(|e| Error::io(format!("read blob {digest}"), e))?;
        let body = Bytes::from(buf);
        let range = format!("{offset}-{}", offset + len - 1);
        let url = location(base, &loc, "");
        let sent = repo
            .send(
                Method::PATCH,
                &url,
                &|r| {
                    r.header("content-type", "application/octet-stream")
                        .header("content-range", range.as_str())
                        .body(body.clone())
                },
                progress,
            )
            .await;
        match sent {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                loc = location_of(&resp).unwrap_or(loc);
                offset += len;
                progress.event(Event::Bytes { digest: digest.clone(), n: len });
            }
            failed if failures < 5 => {
                failures += 1;
                let what = match failed {
                    Ok(r) => format!("PATCH {}", r.status()),
                    Err(e) => e.to_string(),
                };
                progress.event(Event::Retry { what: format!("upload {digest}: {what}"), attempt: failures });
                tokio::time::sleep(std::time::Duration::from_millis(200 * 2u64.pow(failures))).await;
                // Where does the server say we are?
                let status = repo.send(Method::GET, &location(base, &loc, ""), &|r| r, progress).await?;
                let status = check("GET", status).await?;
                loc = location_of(&status).unwrap_or(loc);
                let server_at = status
                    .headers()
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|r| r.rsplit('-').next()?.parse::<u64>().ok())
                    .map_or(0, |end| if end == 0 && offset == 0 { 0 } else { end + 1 });
                progress.event(Event::Start { digest: digest.clone(), size, offset: server_at });
                offset = server_at;
                let mut f = std::fs::File::open(&path).map_err(|e| Error::io(format!("open blob {digest}"), e))?;
                f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(format!("seek blob {digest}"), e))?;
                file = Box::new(f);
            }
            Ok(resp) => {
                check("PATCH", resp).await?;
                unreachable_status()?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(loc)
}

fn unreachable_status() -> Result<()> {
    Err(Error::InvalidDocument { what: "upload", reason: "the registry refused a chunk".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_docker_media_types() {
        let oci = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": "sha256:00", "size": 1},
            "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": "sha256:11", "size": 2}]});
        let (bytes, t) = convert(&serde_json::to_vec(&oci).unwrap(), ManifestFormat::Docker, false).unwrap();
        assert_eq!(t, media::DOCKER_MANIFEST);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["config"]["mediaType"], media::DOCKER_CONFIG);
        assert_eq!(v["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
        let zstd = serde_json::json!({"schemaVersion": 2, "config": {"mediaType": media::OCI_CONFIG},
            "layers": [{"mediaType": media::OCI_LAYER_ZSTD}]});
        assert!(convert(&serde_json::to_vec(&zstd).unwrap(), ManifestFormat::Docker, false).is_err());
        let (same, _) = convert(&serde_json::to_vec(&oci).unwrap(), ManifestFormat::Oci, false).unwrap();
        assert_eq!(same, serde_json::to_vec(&oci).unwrap());
    }

    #[test]
    fn upload_locations() {
        assert_eq!(
            location("/v2/a/blobs/uploads", "/v2/a/blobs/uploads/x", "digest=d"),
            "/v2/a/blobs/uploads/x?digest=d"
        );
        assert_eq!(location("/v2/a/blobs/uploads", "http://h/u?_state=1", "digest=d"), "http://h/u?_state=1&digest=d");
    }
}
