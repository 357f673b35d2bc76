//! Manifests: stored as blobs, linked as revisions, named by tags, indexed by subject.

use bytes::Bytes;
use oci::manifest::MAX_MANIFEST_SIZE;
use oci::{Digest, Manifest};
use serde::Deserialize;
use serde_json::json;

use super::{parse_digest, Registry, RepoName};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::paths;

/// A manifest as served: its bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// The exact bytes pushed.
    pub bytes: Bytes,
    /// The media type to serve it with.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

/// The fields berth reads beyond what `oci::Manifest` types: subject and artifact type.
#[derive(Deserialize)]
struct Extras {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    subject: Option<DescriptorRef>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    config: Option<DescriptorRef>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct DescriptorRef {
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
}

/// What a manifest reference in a URL is: a tag or a digest.
enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

fn parse_reference(reference: &str) -> Result<ManifestRef> {
    if reference.contains(':') {
        return Ok(ManifestRef::Digest(parse_digest(reference)?));
    }
    let ok = !reference.is_empty()
        && reference.len() <= 128
        && reference.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && reference.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(ManifestRef::Tag(reference.to_owned()))
    } else {
        Err(RegistryError::new(ErrorCode::ManifestInvalid, format!("invalid tag {reference:?}")))
    }
}

/// The most `tag` parameters one manifest push may carry (the spec asks for at least 10):
/// each is a storage write, so one request cannot ask for thousands.
pub const MAX_TAGS_PER_PUSH: usize = 100;

/// Refuses a push with more than [`MAX_TAGS_PER_PUSH`] `tag` parameters (MANIFEST_INVALID).
pub fn check_tag_count(n: usize) -> Result<()> {
    if n > MAX_TAGS_PER_PUSH {
        return Err(RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!("{n} tag parameters; at most {MAX_TAGS_PER_PUSH} per push"),
        ));
    }
    Ok(())
}

fn unknown(name: &RepoName, reference: &str) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {reference} unknown to repository {name}"))
}

impl Registry {
    /// The digest a tag or digest reference names in this repository. A reference that
    /// is not a valid tag names nothing: MANIFEST_UNKNOWN (404), as distribution and zot
    /// answer a GET or HEAD of it (a PUT of it stays MANIFEST_INVALID).
    pub async fn resolve_manifest(&self, name: &RepoName, reference: &str) -> Result<Digest> {
        let parsed = parse_reference(reference).map_err(|e| {
            if e.code == ErrorCode::ManifestInvalid {
                unknown(name, reference)
            } else {
                e
            }
        })?;
        let digest = match parsed {
            ManifestRef::Digest(d) => d,
            ManifestRef::Tag(t) => match self.read_link(&paths::tag_link(name.as_str(), &t)).await? {
                Some(d) => d,
                None => return Err(unknown(name, reference)),
            },
        };
        if self.read_link(&paths::revision_link(name.as_str(), &digest)).await?.is_none() {
            return Err(unknown(name, reference));
        }
        Ok(digest)
    }

    /// Reads a manifest by tag or digest.
    pub async fn get_manifest(&self, name: &RepoName, reference: &str) -> Result<StoredManifest> {
        let digest = self.resolve_manifest(name, reference).await?;
        if let Some((bytes, media_type)) = self.lock_manifests().get(&digest) {
            return Ok(StoredManifest { bytes, media_type, digest });
        }
        let bytes = match self.driver.get(&paths::blob_data(&digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(unknown(name, reference)),
            Err(e) => return Err(e.into()),
        };
        let media_type = Manifest::parse(&bytes, None)
            .map(|m| m.media_type())
            .unwrap_or_else(|_| oci::media::OCI_MANIFEST.to_owned());
        self.lock_manifests().insert(digest.clone(), bytes.clone(), media_type.clone());
        Ok(StoredManifest { bytes, media_type, digest })
    }

    /// Stores a manifest under a tag or digest after checking it: size, syntax, digest,
    /// and that everything it references is in the repository. Returns its digest and,
    /// when it has one, its subject.
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &str,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<(Digest, Option<Digest>)> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::new(ErrorCode::TooLarge, "manifest larger than 4 MiB"));
        }
        let target = parse_reference(reference)?;
        let algorithm = match &target {
            ManifestRef::Digest(d) => d.algorithm(),
            ManifestRef::Tag(_) => oci::Algorithm::Sha256,
        };
        let digest = {
            let mut h = algorithm.hasher();
            h.update(&bytes);
            h.finish()
        };
        if let ManifestRef::Digest(d) = &target {
            if *d != digest {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest has digest {digest}, not {d}"),
                ));
            }
        }
        let content_type = content_type
            .map(|t| t.split(';').next().unwrap_or(t).trim())
            .filter(|t| oci::media::is_manifest(t) || oci::media::is_index(t));
        let manifest = Manifest::parse(&bytes, content_type)
            .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, oci::error::chain(&e)))?;
        let extras: Extras = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        // A document must not say it is one kind while its push says another: clients that
        // trust either would read different content (CVE-2021-41190).
        if let (Some(said), Some(sent)) = (extras.media_type.as_deref(), content_type) {
            if said != sent {
                return Err(RegistryError::new(
                    ErrorCode::ManifestInvalid,
                    format!("the manifest's mediaType {said} is not its Content-Type {sent}"),
                ));
            }
        }
        // Claimed before the checks, so that gc cannot delete what they found (see crate::gc).
        let claimed: Vec<Digest> =
            manifest.references().unwrap_or_default().into_iter().chain([digest.clone()]).collect();
        let claim = crate::gc::claim(&self.driver, &claimed).await?;
        self.check_references(name, &manifest).await?;
        let subject = extras.subject.as_ref().map(|s| parse_digest(&s.digest)).transpose()?;

        if !self.blob_stored(&digest).await? {
            self.driver.put(&paths::blob_data(&digest), bytes).await?;
        }
        self.write_link(&paths::revision_link(name.as_str(), &digest), &digest).await?;
        if let Some(s) = &subject {
            self.write_link(&paths::referrer_link(name.as_str(), s, &digest), &digest).await?;
        }
        if let ManifestRef::Tag(t) = &target {
            self.write_link(&paths::tag_link(name.as_str(), t), &digest).await?;
        }
        claim.finish().await;
        Ok((digest, subject))
    }

    /// Stores a manifest as [`Registry::put_manifest`] does and points `tags` at it too (the
    /// spec's `?tag=` parameters of a push by digest, so a sha512 manifest can be tagged).
    /// Every tag is checked first: a bad one stores nothing.
    pub async fn put_manifest_tagged(
        &self,
        name: &RepoName,
        reference: &str,
        content_type: Option<&str>,
        bytes: Bytes,
        tags: &[String],
    ) -> Result<(Digest, Option<Digest>)> {
        check_tag_count(tags.len())?;
        for t in tags {
            if !matches!(parse_reference(t), Ok(ManifestRef::Tag(_))) {
                return Err(RegistryError::new(ErrorCode::ManifestInvalid, format!("invalid tag {t:?}")));
            }
        }
        let (digest, subject) = self.put_manifest(name, reference, content_type, bytes).await?;
        if !tags.is_empty() {
            // gc may have found it untagged since: claimed, then checked again (see crate::gc).
            let claim = crate::gc::claim(&self.driver, std::slice::from_ref(&digest)).await?;
            self.resolve_manifest(name, &digest.to_string()).await?;
            for t in tags {
                self.write_link(&paths::tag_link(name.as_str(), t), &digest).await?;
            }
            claim.finish().await;
        }
        Ok((digest, subject))
    }

    /// Checks that the blobs an image manifest names are in the repository: its config
    /// always, its layers unless sparse manifests are allowed (layers with `urls` are never
    /// pushed). An index's children are not checked: a mirror of some platforms of a
    /// multi-platform image keeps the whole index and only those platforms' manifests.
    async fn check_references(&self, name: &RepoName, manifest: &Manifest) -> Result<()> {
        let missing =
            |d: &Digest| RegistryError::new(ErrorCode::ManifestBlobUnknown, format!("{d} is not in repository {name}"));
        let digest_of = |desc: &oci::spec::Descriptor| {
            oci::manifest::descriptor_digest(desc)
                .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))
        };
        match manifest {
            Manifest::Image(m) => {
                let config = digest_of(m.config())?;
                if self.blob_size(name, &config).await.is_err() {
                    return Err(missing(&config));
                }
                for desc in m.layers().iter().filter(|l| l.urls().as_ref().is_none_or(|u| u.is_empty())) {
                    let d = digest_of(desc)?;
                    if !self.allow_sparse && self.blob_size(name, &d).await.is_err() {
                        return Err(missing(&d));
                    }
                }
            }
            Manifest::Index(i) => {
                for desc in i.manifests() {
                    digest_of(desc)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a tag, or a manifest by digest together with the tags that point at it.
    pub async fn delete_manifest(&self, name: &RepoName, reference: &str) -> Result<()> {
        match parse_reference(reference)? {
            ManifestRef::Tag(t) => {
                if self.read_link(&paths::tag_link(name.as_str(), &t)).await?.is_none() {
                    return Err(unknown(name, reference));
                }
                Ok(self.driver.delete(&paths::tag_dir(name.as_str(), &t)).await?)
            }
            ManifestRef::Digest(d) => {
                let link = paths::revision_link(name.as_str(), &d);
                if self.read_link(&link).await?.is_none() {
                    return Err(unknown(name, reference));
                }
                if let Ok(bytes) = self.driver.get(&paths::blob_data(&d)).await {
                    if let Ok(Extras { subject: Some(s), .. }) = serde_json::from_slice::<Extras>(&bytes) {
                        if let Ok(s) = s.digest.parse::<Digest>() {
                            let l = paths::referrer_link(name.as_str(), &s, &d);
                            let _gone = self.driver.delete(l.trim_end_matches("/link")).await;
                        }
                    }
                }
                for tag in self.list_or_empty(&paths::tags_dir(name.as_str())).await? {
                    if self.read_link(&paths::tag_link(name.as_str(), &tag)).await?.as_ref() == Some(&d) {
                        self.driver.delete(&paths::tag_dir(name.as_str(), &tag)).await?;
                    }
                }
                Ok(self.driver.delete(link.trim_end_matches("/link")).await?)
            }
        }
    }

    /// The referrers of `subject` as an OCI index, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        name: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<serde_json::Value> {
        let dir = paths::referrers_dir(name.as_str(), subject);
        let mut manifests = Vec::new();
        for alg in self.list_or_empty(&dir).await? {
            for hex in self.list_or_empty(&format!("{dir}/{alg}")).await? {
                let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() else {
                    continue;
                };
                let Ok(bytes) = self.driver.get(&paths::blob_data(&d)).await else {
                    continue;
                };
                let Ok(extras) = serde_json::from_slice::<Extras>(&bytes) else {
                    continue;
                };
                let media_type = Manifest::parse(&bytes, None).map(|m| m.media_type()).unwrap_or_default();
                let at = extras.artifact_type.or_else(|| extras.config.and_then(|c| c.media_type));
                if artifact_type.is_some_and(|want| at.as_deref() != Some(want)) {
                    continue;
                }
                let mut desc = json!({ "mediaType": media_type, "digest": d.to_string(), "size": bytes.len() });
                if let Some(at) = at {
                    desc["artifactType"] = json!(at);
                }
                if let Some(a) = extras.annotations {
                    desc["annotations"] = serde_json::Value::Object(a);
                }
                manifests.push(desc);
            }
        }
        Ok(json!({ "schemaVersion": 2, "mediaType": oci::media::OCI_INDEX, "manifests": manifests }))
    }
}
