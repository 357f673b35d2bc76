//! Manifests, indexes and configs: OCI through `oci-spec`, and Docker schema 2, which has
//! the same shape under other media types.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media;

/// The largest manifest berth accepts, as registries cap it (4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A parsed manifest document: either one image or an index of them.
// Manifests are parsed a handful at a time; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// A single-platform image manifest (OCI or Docker schema 2).
    Image(ImageManifest),
    /// An index or Docker manifest list.
    Index(ImageIndex),
}

impl Manifest {
    /// Parses manifest bytes, using `media_type` (from a descriptor or a Content-Type) when
    /// the document does not carry its own, and checks what berth relies on.
    pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Manifest> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(Error::InvalidDocument { what: "manifest", reason: "larger than 4 MiB".into() });
        }
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "schemaVersion")]
            schema_version: Option<u32>,
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            config: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
        if probe.schema_version != Some(2) {
            return Err(Error::InvalidDocument {
                what: "manifest",
                reason: format!("schemaVersion must be 2, got {:?} (schema 1 is not supported)", probe.schema_version),
            });
        }
        let mt = probe.media_type.as_deref().or(media_type);
        let index = match mt {
            Some(t) if media::is_index(t) => true,
            Some(t) if media::is_manifest(t) => false,
            Some(t) => {
                return Err(Error::InvalidDocument { what: "manifest", reason: format!("unsupported media type {t}") })
            }
            None if probe.manifests.is_some() => true,
            None if probe.config.is_some() => false,
            None => {
                return Err(Error::InvalidDocument { what: "manifest", reason: "neither config nor manifests".into() })
            }
        };
        let m = if index {
            let idx: ImageIndex =
                serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what: "index", source })?;
            for d in idx.manifests() {
                descriptor_digest(d)?;
            }
            Manifest::Index(idx)
        } else {
            let m: ImageManifest =
                serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
            descriptor_digest(m.config())?;
            for d in m.layers() {
                descriptor_digest(d)?;
            }
            Manifest::Image(m)
        };
        Ok(m)
    }

    /// The media type to serve this document with: its own, or OCI's by shape.
    pub fn media_type(&self) -> String {
        let own = match self {
            Manifest::Image(m) => m.media_type().as_ref().map(|t| t.to_string()),
            Manifest::Index(i) => i.media_type().as_ref().map(|t| t.to_string()),
        };
        own.unwrap_or_else(|| match self {
            Manifest::Image(_) => media::OCI_MANIFEST.to_owned(),
            Manifest::Index(_) => media::OCI_INDEX.to_owned(),
        })
    }

    /// Every blob or manifest this document points at (config and layers, or children).
    pub fn references(&self) -> Result<Vec<Digest>> {
        let descs: Vec<&Descriptor> = match self {
            Manifest::Image(m) => std::iter::once(m.config()).chain(m.layers()).collect(),
            Manifest::Index(i) => i.manifests().iter().collect(),
        };
        descs.into_iter().map(descriptor_digest).collect()
    }
}

/// The bytes of an OCI image manifest for a config and layers given as
/// (media type, digest, size): what `import`, `load` and the builder all write.
pub fn oci_manifest(config: (&Digest, u64), layers: &[(&str, &Digest, u64)]) -> Result<Vec<u8>> {
    use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder};
    let bad = |e: oci_spec::OciSpecError| Error::InvalidDocument { what: "manifest", reason: e.to_string() };
    let desc = |media_type: &str, digest: &Digest, size: u64| {
        DescriptorBuilder::default().media_type(media_type).digest(digest).size(size).build().map_err(bad)
    };
    let layers = layers.iter().map(|(t, d, s)| desc(t, d, *s)).collect::<Result<Vec<_>>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(media::OCI_MANIFEST)
        .config(desc(media::OCI_CONFIG, config.0, config.1)?)
        .layers(layers)
        .build()
        .map_err(bad)?;
    serde_json::to_vec(&manifest).map_err(|source| Error::InvalidJson { what: "manifest", source })
}

/// A descriptor's digest as berth's validated type (sha256 or sha512 only).
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Digest::try_from(d.digest())
}

/// Parses an image config (OCI or Docker; docker's extra fields are ignored).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|source| Error::InvalidJson { what: "image config", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn reads_docker_schema2_manifest() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7,"digest":"{D1}"}},
               "layers":[{{"mediaType":"{}","size":9,"digest":"{D2}"}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let m = Manifest::parse(doc.as_bytes(), None).unwrap();
        assert_eq!(m.media_type(), media::DOCKER_MANIFEST);
        assert_eq!(m.references().unwrap(), vec![D1.parse().unwrap(), D2.parse().unwrap()]);
    }

    #[test]
    fn reads_docker_manifest_list_and_oci_index() {
        for mt in [media::DOCKER_MANIFEST_LIST, media::OCI_INDEX] {
            let doc = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{{"mediaType":"{}","size":1,"digest":"{D1}",
                   "platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
                media::DOCKER_MANIFEST
            );
            match Manifest::parse(doc.as_bytes(), None).unwrap() {
                Manifest::Index(i) => assert_eq!(i.manifests().len(), 1),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn media_type_comes_from_the_hint_when_the_document_has_none() {
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","size":1,"digest":"{D1}"}},"layers":[]}}"#,
            media::OCI_CONFIG
        );
        let m = Manifest::parse(doc.as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type(), media::OCI_MANIFEST);
    }

    #[test]
    fn refuses_bad_manifests() {
        let cases = [
            (r#"{"schemaVersion":1,"name":"x"}"#.to_owned(), "schemaVersion"),
            ("not json".to_owned(), "invalid manifest"),
            (r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.to_owned(), "unsupported media type"),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"a","size":1,"digest":"sha256:abc"},"layers":[]}"#
                    .to_owned(),
                "invalid",
            ),
            (format!(r#"{{"schemaVersion":2,"x":"{}"}}"#, "a".repeat(MAX_MANIFEST_SIZE)), "4 MiB"),
        ];
        for (doc, want) in cases {
            let err = Manifest::parse(doc.as_bytes(), None).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
