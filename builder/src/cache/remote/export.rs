//! Export: the records of a build's steps into one cache config, its blobs compressed once
//! (the twin is remembered by diffID, as for images), then handed to a backend.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use oci::content::ContentStore;
use oci::layer::Compression;
use oci::ImageStore;

use super::format::{Blob, CacheConfig, MountRecord, Record, VERSION, VERSION_WHOLE};
use super::skeleton;
use super::{CacheBackend, Imported, LazyBlobs, Published, Upload};
use crate::cache::{CacheKey, CacheRecord, CacheStore};
use crate::error::{Error, Result};
use crate::graph::Layer;
use crate::progress::{Event, Progress};

/// One step an export carries: its key, its inputs' keys, its record, its name.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's cache key.
    pub key: CacheKey,
    /// Its inputs' keys.
    pub inputs: Vec<CacheKey>,
    /// Its result.
    pub record: CacheRecord,
    /// How the progress names it.
    pub name: String,
}

/// How plain layers are compressed for an export: the codec, and its level when
/// `compression-level=` asks for one (else berth's default for the codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    /// gzip, zstd or none.
    pub compression: Compression,
    /// The level; None for the default (gzip 1, zstd 3).
    pub level: Option<u32>,
    /// A layer of files from the build context travels as its skeleton (see
    /// [`super::skeleton`]); the codec is for the layers that cannot.
    pub skeleton: bool,
}

/// The gzip level of the layers a build writes. Measured on a 122 MB apt-install layer here:
/// level 1 took 1.8 s and gave 54.5 MB, the default level 6 took 4.9 s for 52.2 MB, so a
/// cold build pays a third of the time for 4% more bytes.
pub const GZIP_LEVEL: u32 = 1;

impl Codec {
    /// This codec for a layer that may travel as a skeleton.
    pub fn skeleton(self) -> Codec {
        Codec { skeleton: true, ..self }
    }

    /// This codec for a layer that travels whole.
    pub fn whole(self) -> Codec {
        Codec { skeleton: false, ..self }
    }

    /// The name a layer's compressed twin has in the cache under this codec, and the level
    /// to write it at; None for no compression (a plain layer is its own twin). berth's
    /// defaults keep the names they always had.
    pub fn twin(self) -> Option<(String, Option<u32>)> {
        match (self.compression, self.level) {
            (Compression::Gzip, None) => Some(("gzip-1".to_owned(), Some(GZIP_LEVEL))),
            (Compression::Zstd, None) => Some(("zstd".to_owned(), None)),
            (Compression::Gzip, Some(n)) => Some((format!("gzip-{n}"), Some(n))),
            (Compression::Zstd, Some(n)) => Some((format!("zstd-{n}"), Some(n))),
            (Compression::None, _) => None,
        }
    }
}

impl From<Compression> for Codec {
    fn from(compression: Compression) -> Self {
        Codec { compression, level: None, skeleton: false }
    }
}

/// A cache mount's files as a layer, ready to export.
#[derive(Debug, Clone)]
pub struct MountLayer {
    /// The mount's id.
    pub id: String,
    /// The layer (uncompressed tar in the content store).
    pub layer: Layer,
}

/// What an export works with.
pub struct Exporter<'a> {
    /// The content store the blobs are in.
    pub store: &'a ImageStore,
    /// The local cache: compressed twins and uncompressed sizes are remembered there.
    pub cache: &'a dyn CacheStore,
    /// The imported caches (blobs that were never fetched, their sizes).
    pub imported: &'a Imported<'a>,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Compresses one plain layer (or returns the remembered twin).
    pub compress: &'a (dyn Fn(&Layer, Codec) -> Result<Layer> + Sync),
}

impl Exporter<'_> {
    /// The cache config for `steps` and `mounts`, every plain layer compressed as asked, but
    /// the layers in `skeletons`, which travel as skeletons where they can (format 2).
    pub fn config(
        &self,
        steps: &[Step],
        mounts: &[MountLayer],
        codec: Codec,
        skeletons: &HashSet<oci::Digest>,
    ) -> Result<CacheConfig> {
        let mut config = CacheConfig { version: VERSION_WHOLE, ..Default::default() };
        let mut index = HashMap::new();
        let mut blobs: HashMap<oci::Digest, Blob> = HashMap::new();
        for s in steps {
            let mut layers = Vec::with_capacity(s.record.layers.len());
            for l in &s.record.layers {
                let b = match blobs.get(&l.digest) {
                    Some(b) => b.clone(),
                    None => {
                        let codec = if skeletons.contains(&l.digest) { codec.skeleton() } else { codec };
                        let b = self.blob(l, codec)?;
                        blobs.insert(l.digest.clone(), b.clone());
                        b
                    }
                };
                layers.push(config.add_blob(b, &mut index));
            }
            config.records.push(Record {
                key: s.key.clone(),
                step: s.name.clone(),
                inputs: s.inputs.clone(),
                layers,
                created: s.record.created.clone(),
                result_key: s.record.result_key.clone(),
            });
        }
        for m in mounts {
            let b = self.blob(&m.layer, codec)?;
            let blob = config.add_blob(b, &mut index);
            config.mounts.push(MountRecord { id: m.id.clone(), blob });
        }
        if config.blobs.iter().any(|b| b.media_type == skeleton::MEDIA_TYPE) {
            config.version = VERSION;
        }
        Ok(config)
    }

    /// A layer as the cache carries it: compressed, with its uncompressed size.
    fn blob(&self, l: &Layer, codec: Codec) -> Result<Blob> {
        // A layer an imported cache carried as a skeleton goes on as that skeleton.
        if let Some(b) = self.imported.skeleton(&l.digest).filter(|_| codec.skeleton) {
            return Ok(b.clone());
        }
        let plain = l.media_type == Compression::None.oci_media_type();
        let uncompressed_size = if plain { l.size } else { self.tar_size(l)? };
        let out = if plain { (self.compress)(l, codec)? } else { l.clone() };
        Ok(Blob {
            media_type: out.media_type,
            digest: out.digest,
            size: out.size,
            diff_id: out.diff_id,
            uncompressed_size,
        })
    }

    /// The size of a compressed layer's tar: from the imported caches, the local cache, or
    /// (once per layer on this machine) by reading it.
    fn tar_size(&self, l: &Layer) -> Result<u64> {
        if let Some(b) = self.imported.blob(&l.digest) {
            return Ok(b.uncompressed_size);
        }
        let key = format!("tarsize/{}", l.diff_id);
        if let Some(n) = self.cache.get(key.as_bytes())?.and_then(|v| String::from_utf8(v).ok()?.parse().ok()) {
            return Ok(n);
        }
        self.imported.ensure(self.store, &l.digest)?;
        let blob = self.store.content().reader(&l.digest).map_err(Error::image(format!("read layer {}", l.digest)))?;
        let mut r =
            oci::layer::LayerReader::new(blob, u64::MAX).map_err(Error::image(format!("read layer {}", l.digest)))?;
        let n = std::io::copy(&mut r, &mut std::io::sink()).map_err(Error::io(format!("read layer {}", l.digest)))?;
        self.cache.put(key.as_bytes(), n.to_string().as_bytes())?;
        Ok(n)
    }

    /// Writes `config` to `backend`: config blob, blobs, manifest.
    pub fn publish(&self, backend: &dyn CacheBackend, config: &CacheConfig) -> Result<Published> {
        let started = Instant::now();
        let bytes = config.to_bytes()?;
        let digest = self.store.content().put(&bytes).map_err(Error::image("store the cache config"))?;
        let manifest = config.manifest(&digest, bytes.len() as u64)?;
        let upload =
            Upload { manifest: &manifest, config: (&digest, &bytes), blobs: &config.blobs, lazy: self.imported };
        let done = backend.publish(self.store, &upload)?;
        let skeletons = config.blobs.iter().filter(|b| b.media_type == skeleton::MEDIA_TYPE).count();
        self.progress.event(Event::Note {
            text: format!(
                "exporting cache to {}: {} records, {} blobs ({} uploaded, {:.1} MB; {} present{}) in {:.1}s",
                backend.describe(),
                config.records.len(),
                config.blobs.len() + 1, // the config is a blob too, uploaded or present
                done.uploaded,
                done.bytes as f64 / 1e6,
                done.present,
                match skeletons {
                    0 => String::new(),
                    1 => "; 1 skeleton".into(),
                    n => format!("; {n} skeletons"),
                },
                started.elapsed().as_secs_f64()
            ),
        });
        Ok(done)
    }
}

/// The inline cache of an image (`--cache-to type=inline`): `config`'s records whose blobs
/// are all layers of the image (matched by diffID), pointing at the image's own blobs.
pub fn inline(config: &CacheConfig, image_layers: &[Layer]) -> CacheConfig {
    let by_diff: HashMap<&oci::Digest, &Layer> = image_layers.iter().map(|l| (&l.diff_id, l)).collect();
    let mut out = CacheConfig { version: VERSION_WHOLE, ..Default::default() };
    let mut index = HashMap::new();
    for r in &config.records {
        let layers: Option<Vec<&Layer>> =
            r.layers.iter().map(|i| by_diff.get(&config.blobs[*i].diff_id).copied()).collect();
        let Some(layers) = layers else { continue };
        let idx = layers
            .iter()
            .zip(&r.layers)
            .map(|(l, i)| {
                let b = Blob {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    ..config.blobs[*i].clone()
                };
                out.add_blob(b, &mut index)
            })
            .collect();
        out.records.push(Record { layers: idx, ..r.clone() });
    }
    out
}
