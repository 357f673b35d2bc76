//! berth's build-cache format, version 1 (docs/dev/cache-format.md): an OCI image manifest
//! whose config blob holds the cache records, and whose layers are the records' blobs.
//!
//! A plain image manifest (not an index) so that every conformant registry stores it,
//! distribution 2.8 included; `artifactType` and the config's media type say what it is.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::cache::{CacheKey, CacheRecord};
use crate::error::{Error, Result};
use crate::graph::Layer;

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.berth.build-cache.v1";
/// The config blob's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.berth.build-cache.config.v1+json";
/// The image config field that carries inline cache records (`--cache-to type=inline`).
pub const INLINE_FIELD: &str = "berth.build-cache.v1";
/// The newest format version this berth reads, and the one it writes when a config holds
/// skeleton layers (see [`super::skeleton`]).
pub const VERSION: u32 = 2;
/// The version a config without skeletons is written as, so that a berth that reads only
/// version 1 still uses it.
pub const VERSION_WHOLE: u32 = 1;
/// A config larger than this is refused on import (a hostile or broken source).
pub const MAX_CONFIG_SIZE: u64 = 64 * 1024 * 1024;

/// One blob the records use: a layer with what the records need to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    /// The blob's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: oci::Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The digest of its uncompressed tar (the layer's diffID).
    pub diff_id: oci::Digest,
    /// The size of its uncompressed tar.
    pub uncompressed_size: u64,
}

impl Blob {
    /// The layer this blob is: for a skeleton, the plain layer it is written back into.
    pub fn layer(&self) -> Layer {
        if self.media_type == super::skeleton::MEDIA_TYPE {
            return Layer {
                digest: self.diff_id.clone(),
                diff_id: self.diff_id.clone(),
                size: self.uncompressed_size,
                media_type: oci::media::OCI_LAYER.to_owned(),
            };
        }
        Layer {
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            size: self.size,
            media_type: self.media_type.clone(),
        }
    }
}

/// The media types a cache blob may have: those of image layers.
const LAYER_TYPES: [&str; 5] = [
    oci::media::OCI_LAYER,
    oci::media::OCI_LAYER_GZIP,
    oci::media::OCI_LAYER_ZSTD,
    oci::media::DOCKER_LAYER,
    oci::media::DOCKER_LAYER_GZIP,
];

/// The longest layer chain a record may hold: more than any root filesystem stacks.
const MAX_CHAIN: usize = 1000;

/// One cache record: a step's key and the layer chain of its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The step's cache key (machine-independent: see docs/dev/design.md).
    pub key: CacheKey,
    /// The step, for people reading the cache (`RUN make`); never part of the key.
    #[serde(default)]
    pub step: String,
    /// The keys of the step's inputs (its parent first), for people and tools.
    #[serde(default)]
    pub inputs: Vec<CacheKey>,
    /// The result's layers, base first, as indexes into [`CacheConfig::blobs`].
    pub layers: Vec<usize>,
    /// When the step first ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// For a record under a `COPY --from`'s definition key: the content key of its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<CacheKey>,
}

/// The contents of a `RUN --mount=type=cache` directory, carried as one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountRecord {
    /// The mount's id (its `id=`, or its target path when it has none).
    pub id: String,
    /// The layer holding its files, as an index into [`CacheConfig::blobs`].
    pub blob: usize,
}

/// The config blob of a cache manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// Every blob the records and mounts use, in the manifest's layer order.
    pub blobs: Vec<Blob>,
    /// The cache records.
    pub records: Vec<Record>,
    /// Cache mount contents (`--cache-to ...,mounts=true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountRecord>,
}

/// Why an import source gives no records: each is a miss with one warning, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Nothing there yet (the first build of a branch).
    Missing,
    /// Not berth's cache (a BuildKit cache, an index, another artifact).
    Foreign(String),
    /// A newer format than this berth reads.
    Newer(u32),
    /// A config that does not parse or refers to blobs it does not list.
    Corrupt(String),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Missing => write!(f, "no cache there yet"),
            Unusable::Foreign(what) => write!(f, "not a berth build cache ({what})"),
            Unusable::Newer(v) => write!(f, "cache format version {v} is newer than this berth reads ({VERSION})"),
            Unusable::Corrupt(why) => write!(f, "corrupt cache config: {why}"),
        }
    }
}

impl CacheConfig {
    /// Adds a blob (once) and returns its index.
    pub fn add_blob(&mut self, blob: Blob, index: &mut HashMap<oci::Digest, usize>) -> usize {
        *index.entry(blob.digest.clone()).or_insert_with(|| {
            self.blobs.push(blob);
            self.blobs.len() - 1
        })
    }

    /// The config as stored: canonical JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|source| Error::Json { what: "write the cache config".into(), source })
    }

    /// Reads a config, checking its version and that every index points at a blob.
    pub fn parse(bytes: &[u8]) -> std::result::Result<CacheConfig, Unusable> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Unusable::Corrupt(e.to_string()))?;
        let version = v.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if version > u64::from(VERSION) {
            return Err(Unusable::Newer(u32::try_from(version).unwrap_or(u32::MAX)));
        }
        let mut c: CacheConfig = serde_json::from_value(v).map_err(|e| Unusable::Corrupt(e.to_string()))?;
        if c.version < VERSION_WHOLE {
            return Err(Unusable::Corrupt(format!("version {}", c.version)));
        }
        let n = c.blobs.len();
        let bad =
            c.records.iter().flat_map(|r| r.layers.iter()).chain(c.mounts.iter().map(|m| &m.blob)).find(|i| **i >= n);
        if let Some(i) = bad {
            return Err(Unusable::Corrupt(format!("blob index {i} out of range ({n} blobs)")));
        }
        // What a record brings into a built image is checked here: a layer type an image may
        // hold, a chain no longer than a root filesystem can stack (a long one also cost
        // gigabytes of memory to read), and a date that parses (else it is left out).
        let skeletons = c.version >= 2;
        let known = |t: &str| LAYER_TYPES.contains(&t) || (skeletons && t == super::skeleton::MEDIA_TYPE);
        if let Some(b) = c.blobs.iter().find(|b| !known(&b.media_type)) {
            return Err(Unusable::Corrupt(format!(
                "blob {} has media type {:?}, not a layer's",
                b.digest, b.media_type
            )));
        }
        if let Some(r) = c.records.iter().find(|r| r.layers.len() > MAX_CHAIN) {
            return Err(Unusable::Corrupt(format!("a record of {} layers (at most {MAX_CHAIN})", r.layers.len())));
        }
        for r in &mut c.records {
            r.created = r.created.take().filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
        }
        Ok(c)
    }

    /// The record of `key` as the local cache holds records.
    pub fn record(&self, r: &Record) -> CacheRecord {
        CacheRecord {
            layers: r.layers.iter().map(|i| self.blobs[*i].layer()).collect(),
            created: r.created.clone(),
            result_key: r.result_key.clone(),
        }
    }

    /// The cache manifest for this config (stored as `config_digest`, `config_size`).
    pub fn manifest(&self, config_digest: &oci::Digest, config_size: u64) -> Result<Vec<u8>> {
        let layers: Vec<serde_json::Value> = self
            .blobs
            .iter()
            .map(|b| serde_json::json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size}))
            .collect();
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::media::OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest.to_string(), "size": config_size},
            "layers": layers,
        });
        serde_json::to_vec(&doc).map_err(|source| Error::Json { what: "write the cache manifest".into(), source })
    }
}

/// The config descriptor of a cache manifest: checks that the manifest is berth's cache
/// and lists exactly the config's blobs (so a registry that keeps the manifest keeps them).
pub fn config_of(manifest: &[u8]) -> std::result::Result<(oci::Digest, u64), Unusable> {
    let v: serde_json::Value = serde_json::from_slice(manifest).map_err(|e| Unusable::Corrupt(e.to_string()))?;
    let media_type = v["mediaType"].as_str().unwrap_or("");
    if media_type != oci::media::OCI_MANIFEST && media_type != oci::media::DOCKER_MANIFEST {
        return Err(Unusable::Foreign(format!(
            "a {}",
            if media_type.is_empty() { "document without mediaType" } else { media_type }
        )));
    }
    let config_type = v["config"]["mediaType"].as_str().unwrap_or("");
    if config_type != CONFIG_MEDIA_TYPE {
        return Err(Unusable::Foreign(format!("config media type {config_type}")));
    }
    let digest = v["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse::<oci::Digest>().ok())
        .ok_or_else(|| Unusable::Corrupt("config digest".into()))?;
    let size = v["config"]["size"].as_u64().ok_or_else(|| Unusable::Corrupt("config size".into()))?;
    if size > MAX_CONFIG_SIZE {
        return Err(Unusable::Corrupt(format!("config of {size} bytes")));
    }
    Ok((digest, size))
}

/// Checks that a manifest's layers are exactly the config's blobs.
pub fn check_layers(manifest: &[u8], config: &CacheConfig) -> std::result::Result<(), Unusable> {
    let v: serde_json::Value = serde_json::from_slice(manifest).map_err(|e| Unusable::Corrupt(e.to_string()))?;
    let listed: Vec<(String, u64)> = v["layers"]
        .as_array()
        .map(|a| {
            a.iter().map(|l| (l["digest"].as_str().unwrap_or("").to_owned(), l["size"].as_u64().unwrap_or(0))).collect()
        })
        .unwrap_or_default();
    let blobs: Vec<(String, u64)> = config.blobs.iter().map(|b| (b.digest.to_string(), b.size)).collect();
    if listed != blobs {
        return Err(Unusable::Corrupt("the manifest's layers are not the config's blobs".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8) -> Blob {
        Blob {
            media_type: oci::media::OCI_LAYER_GZIP.into(),
            digest: oci::Digest::of(&[n]),
            size: u64::from(n),
            diff_id: oci::Digest::of(&[n, n]),
            uncompressed_size: 10 * u64::from(n),
        }
    }

    #[test]
    fn a_config_round_trips_and_its_manifest_is_a_plain_image_manifest() {
        let mut c = CacheConfig { version: VERSION, ..Default::default() };
        let mut idx = HashMap::new();
        let a = c.add_blob(blob(1), &mut idx);
        let b = c.add_blob(blob(2), &mut idx);
        assert_eq!(c.add_blob(blob(1), &mut idx), a, "a blob is listed once");
        c.records.push(Record {
            key: CacheKey(oci::Digest::of(b"k")),
            step: "RUN make".into(),
            inputs: vec![],
            layers: vec![a, b],
            created: Some("2026-12-04T00:00:00Z".into()),
            result_key: None,
        });
        let bytes = c.to_bytes().unwrap();
        let back = CacheConfig::parse(&bytes).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.record(&back.records[0]).layers[1].digest, blob(2).digest);
        let m = c.manifest(&oci::Digest::of(&bytes), bytes.len() as u64).unwrap();
        assert_eq!(config_of(&m).unwrap(), (oci::Digest::of(&bytes), bytes.len() as u64));
        check_layers(&m, &c).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["mediaType"], oci::media::OCI_MANIFEST);
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
    }

    #[test]
    fn newer_foreign_and_corrupt_sources_are_told_apart() {
        assert_eq!(CacheConfig::parse(br#"{"version":3,"blobs":[],"records":[]}"#), Err(Unusable::Newer(3)));
        // A skeleton layer needs version 2: a version 1 config that names one is corrupt.
        let skeleton = |version: u32| {
            let b = Blob { media_type: super::super::skeleton::MEDIA_TYPE.into(), ..blob(1) };
            CacheConfig { version, blobs: vec![b], ..Default::default() }.to_bytes().unwrap()
        };
        assert!(matches!(CacheConfig::parse(&skeleton(1)), Err(Unusable::Corrupt(_))));
        let two = CacheConfig::parse(&skeleton(2)).unwrap();
        let plain = two.blobs[0].layer();
        assert_eq!((plain.digest, plain.size), (blob(1).diff_id, blob(1).uncompressed_size), "read as its plain tar");
        let bad = br#"{"version":1,"blobs":[],"records":[{"key":"sha256:0000000000000000000000000000000000000000000000000000000000000000","layers":[0]}]}"#;
        assert!(matches!(CacheConfig::parse(bad), Err(Unusable::Corrupt(_))));
        assert!(matches!(CacheConfig::parse(b"{"), Err(Unusable::Corrupt(_))));
        let buildkit = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
        assert!(matches!(config_of(buildkit), Err(Unusable::Foreign(_))));
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(config_of(index), Err(Unusable::Foreign(_))));
    }

    #[test]
    fn what_a_record_brings_into_an_image_is_checked_when_it_is_read() {
        let config = |blob: Blob, layers: Vec<usize>, created: &str| {
            let key = CacheKey(oci::Digest::of(b"k"));
            let r = Record {
                key,
                step: String::new(),
                inputs: vec![],
                layers,
                created: Some(created.into()),
                result_key: None,
            };
            CacheConfig { version: VERSION, blobs: vec![blob], records: vec![r], mounts: vec![] }.to_bytes().unwrap()
        };
        // Before, each went into the built image as it was: a text/html layer, a 31-million
        // layer chain that took 10 GB to read, a date no tool could parse.
        let html = Blob { media_type: "text/html".into(), ..blob(1) };
        assert!(matches!(
            CacheConfig::parse(&config(html, vec![0], "2026-12-04T00:00:00Z")),
            Err(Unusable::Corrupt(_))
        ));
        let long = config(blob(1), vec![0; MAX_CHAIN + 1], "2026-12-04T00:00:00Z");
        assert!(matches!(CacheConfig::parse(&long), Err(Unusable::Corrupt(_))));
        let c = CacheConfig::parse(&config(blob(1), vec![0], "yesterday; rm -rf /")).unwrap();
        assert_eq!(c.records[0].created, None, "an unparsable date is left out");
    }
}
