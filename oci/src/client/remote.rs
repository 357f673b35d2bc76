//! One upstream registry read for a pull-through mirror: manifests and blobs handed back
//! as bytes and streams (not stored), through the client's auth handshake and token cache.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use reqwest::Method;

use super::pull::ACCEPT;
use super::transport::{check, Client};
use super::NoProgress;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// An upstream registry, by URL.
pub struct Remote {
    client: Arc<Client>,
    host: String,
    domain: String,
}

/// A manifest as an upstream serves it, checked against its digest.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    /// The exact bytes.
    pub bytes: Bytes,
    /// The media type the upstream gave (or the document's own).
    pub media_type: String,
    /// The sha256 of the bytes.
    pub digest: Digest,
}

/// A blob body as it arrives from an upstream.
pub struct RemoteBlob {
    /// Its length, when the upstream said.
    pub size: Option<u64>,
    /// The bytes.
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
}

impl Remote {
    /// An upstream at `url` (`https://registry-1.docker.io`, `http://10.0.0.5:5000`); a
    /// plain-HTTP one must be among the client's insecure hosts.
    pub fn new(client: Arc<Client>, url: &str) -> Result<Remote> {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|r| r.trim_end_matches('/')).filter(|h| !h.is_empty() && !h.contains('/'));
        let Some(host) = host else {
            return Err(Error::InvalidDocument {
                what: "upstream URL",
                reason: format!("{url:?} is not http(s)://HOST[:PORT]"),
            });
        };
        // Docker Hub's credentials are filed under docker.io, its API under registry-1.
        let domain = if host == "registry-1.docker.io" { "docker.io" } else { host };
        Ok(Remote { client, host: host.to_owned(), domain: domain.to_owned() })
    }

    /// The name credentials for this upstream are filed under.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    async fn get(&self, method: Method, repo: &str, path: &str, accept: &'static str) -> Result<reqwest::Response> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("/v2/{repo}/{path}");
        let make = move |r: reqwest::RequestBuilder| r.header("accept", accept);
        let resp = self.client.send(&self.host, &self.domain, &scope, method.clone(), &url, &make, &NoProgress).await?;
        check(method.as_str(), resp).await
    }

    /// The digest a tag names upstream, from a HEAD (which Docker Hub does not count as a pull).
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Digest> {
        let resp = self.get(Method::HEAD, repo, &format!("manifests/{reference}"), ACCEPT).await?;
        match resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(d) => d.parse(),
            None => Ok(self.manifest(repo, reference).await?.digest),
        }
    }

    /// A manifest by tag or digest; one fetched by digest must hash to it.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<RemoteManifest> {
        let resp = self.get(Method::GET, repo, &format!("manifests/{reference}"), ACCEPT).await?;
        let media_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let url = resp.url().to_string();
        // Read up to the cap, never more: an upstream cannot make the mirror hold a huge body.
        let buf = super::transport::read_manifest(resp, &url).await?;
        let bytes = Bytes::from(buf);
        let digest = Digest::of(&bytes);
        if let Ok(pinned) = reference.parse::<Digest>() {
            if pinned != digest {
                return Err(Error::InvalidDocument {
                    what: "manifest",
                    reason: format!("{reference} has digest {digest}"),
                });
            }
        }
        let parsed = Manifest::parse(&bytes, media_type.as_deref())?;
        Ok(RemoteManifest { media_type: media_type.unwrap_or_else(|| parsed.media_type()), bytes, digest })
    }

    /// Whether the repository has the blob upstream (a HEAD: no body moves). A 404 is
    /// `false`; any other failure is an error.
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        match self.get(Method::HEAD, repo, &format!("blobs/{digest}"), "*/*").await {
            Ok(_) => Ok(true),
            Err(Error::Registry { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A blob's body, streamed as it arrives.
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<RemoteBlob> {
        let resp = self.get(Method::GET, repo, &format!("blobs/{digest}"), "*/*").await?;
        let size = resp.content_length();
        let url = resp.url().to_string();
        let stream =
            resp.bytes_stream().map_err(move |source| Error::Http { method: "GET".into(), url: url.clone(), source });
        Ok(RemoteBlob { size, stream: Box::pin(stream) })
    }
}
