//! Compressed twins of plain layers, so that a push sends what docker and podman send.
//!
//! An image loaded from a `docker save` archive keeps its layers as plain tars (`load` stays
//! fast), and a registry would otherwise receive and store them at two or three times their
//! compressed size. Before a push by tag, [`compressed`] gives the image (or each platform of
//! an index) a manifest whose plain layers are replaced by their gzip (or zstd) twins; the
//! config, and so the image ID, stays the same.
//!
//! A twin is made once per layer and compression and remembered in
//! `$BERTH_ROOT/layer-twins/<diffID hex>.<compression>` (its digest and size), so a second
//! push, to the same registry or another, sends the same blobs under the same manifest digest.
//! The twin is checked against the plain layer as it is made: the plain tar's SHA-256 must be
//! its digest, which is also its diffID.

use std::fs;

use crate::client::{Event, Progress};
use crate::content::{ContentStore, Expected};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, IoContext, Result};
use crate::layer::{Compression, LayerWriter};
use crate::manifest::{descriptor_digest, parse_config, Manifest, MAX_MANIFEST_SIZE};
use crate::media;
use crate::store::{ImageStore, Target, MAX_CONFIG_SIZE};

/// Where the twins are remembered, under the store's root.
const TWINS: &str = "layer-twins";

/// The gzip level of twins: ISA-L's level 1, as the builder's layers (a third of level 6's
/// time for a few percent more bytes).
const GZIP_LEVEL: u32 = 1;

/// `target` with every plain layer (of the image, or of each platform an index holds
/// locally) replaced by its `compression` twin; `target` itself when there is none, or when
/// `compression` is [`Compression::None`]. `progress` hears of each layer compressed
/// ([`Event::Compressing`], [`Event::Compressed`]). Rewritten manifests are stored.
pub fn compressed(
    store: &ImageStore,
    target: &Target,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<Target> {
    if compression == Compression::None {
        return Ok(target.clone());
    }
    let bytes = store.content().read_small(&target.digest, MAX_MANIFEST_SIZE as u64)?;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
    let changed = match Manifest::parse(&bytes, Some(&target.media_type))? {
        Manifest::Image(m) => {
            let config = store.content().read_small(&descriptor_digest(m.config())?, MAX_CONFIG_SIZE)?;
            let config = parse_config(&config)?;
            replace_layers(store, &mut doc, config.rootfs().diff_ids(), compression, progress)?
        }
        Manifest::Index(_) => replace_children(store, &mut doc, compression, progress)?,
    };
    if !changed {
        return Ok(target.clone());
    }
    let bytes = serde_json::to_vec(&doc).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
    store.put_manifest(&bytes, &target.media_type)
}

/// Points an image manifest's plain layers at their twins; true when one was. A layer is
/// plain when its media type says so and its digest is its diffID in the config
/// (`diff_ids`): a compressed blob mislabelled plain is left as it is.
fn replace_layers(
    store: &ImageStore,
    doc: &mut serde_json::Value,
    diff_ids: &[String],
    compression: Compression,
    progress: &dyn Progress,
) -> Result<bool> {
    let docker = doc["mediaType"].as_str() == Some(media::DOCKER_MANIFEST);
    let Some(layers) = doc.get_mut("layers").and_then(|l| l.as_array_mut()) else { return Ok(false) };
    let mut changed = false;
    for (i, layer) in layers.iter_mut().enumerate() {
        let labelled = matches!(layer["mediaType"].as_str(), Some(media::OCI_LAYER | media::DOCKER_LAYER));
        let named = layer["digest"].as_str().unwrap_or("");
        let plain = labelled && diff_ids.get(i).is_some_and(|d| d == named);
        let Some(digest) = plain.then(|| named.parse::<Digest>().ok()).flatten() else { continue };
        let media_type = match (docker, compression) {
            (true, Compression::Gzip) => media::DOCKER_LAYER_GZIP,
            (true, _) => {
                return Err(Error::InvalidDocument {
                    what: "manifest",
                    reason: "the image has a Docker schema 2 manifest, which has no zstd layers: push it with \
                             --compression-format gzip"
                        .into(),
                })
            }
            (false, c) => c.oci_media_type(),
        };
        let (twin, size) = twin(store, &digest, layer["size"].as_u64().unwrap_or(0), compression, progress)?;
        layer["mediaType"] = media_type.into();
        layer["digest"] = twin.to_string().into();
        layer["size"] = size.into();
        changed = true;
    }
    Ok(changed)
}

/// Points an index at the rewritten manifests of the platforms it holds locally; true when
/// one changed. Platforms that are not in the store are left for the push to report.
fn replace_children(
    store: &ImageStore,
    doc: &mut serde_json::Value,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<bool> {
    let Some(children) = doc.get_mut("manifests").and_then(|l| l.as_array_mut()) else { return Ok(false) };
    let mut changed = false;
    for child in children {
        let desc: crate::spec::Descriptor = serde_json::from_value(child.clone())
            .map_err(|source| Error::InvalidJson { what: "index entry", source })?;
        let t =
            Target { digest: descriptor_digest(&desc)?, media_type: desc.media_type().to_string(), size: desc.size() };
        if !store.content().contains(&t.digest)? {
            continue;
        }
        let new = compressed(store, &t, compression, progress)?;
        if new.digest != t.digest {
            child["digest"] = new.digest.to_string().into();
            child["size"] = new.size.into();
            changed = true;
        }
    }
    Ok(changed)
}

/// The `compression` twin of the plain layer `plain` (`size` bytes): remembered, or made
/// now and remembered. Returns its digest and size.
fn twin(
    store: &ImageStore,
    plain: &Digest,
    size: u64,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<(Digest, u64)> {
    let memo = store.root().join(TWINS).join(format!("{}.{}", plain.hex(), name(compression)));
    if let Some((d, s)) = remembered(store, &memo) {
        return Ok((d, s));
    }
    progress.event(Event::Compressing { digest: plain.clone(), size });
    let ingest = store.content().writer(Algorithm::Sha256)?;
    let level = (compression == Compression::Gzip).then_some(GZIP_LEVEL);
    let mut w = LayerWriter::into_ingest(ingest, compression, level)?;
    let mut blob = store.content().reader(plain)?;
    std::io::copy(&mut blob, &mut w).ctx(|| format!("compress layer {plain}"))?;
    let (ingest, info) = w.finish()?;
    if info.diff_id != *plain {
        return Err(Error::InvalidDocument {
            what: "local layer",
            reason: format!(
                "{plain} is corrupt in the store (its bytes hash to {}): pull or load the image again",
                info.diff_id
            ),
        });
    }
    ingest.commit(Expected::exactly(&info.digest, info.size))?;
    store.record_unpacked_size(plain, info.uncompressed_size);
    remember(&memo, &info.digest, info.size);
    progress.event(Event::Compressed { digest: plain.clone(), twin: info.digest.clone() });
    Ok((info.digest, info.size))
}

/// The name of a compression in a memo's file name.
fn name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// A remembered twin whose blob is still in the store (a prune may have removed it).
fn remembered(store: &ImageStore, memo: &std::path::Path) -> Option<(Digest, u64)> {
    let text = fs::read_to_string(memo).ok()?;
    let (d, s) = text.trim().split_once(' ')?;
    let (digest, size): (Digest, u64) = (d.parse().ok()?, s.parse().ok()?);
    let info = store.content().info(&digest).ok()??;
    (info.size == size).then_some((digest, size))
}

/// Remembers a twin. Best effort: one that cannot be written (a read-only root) is only made
/// again next time.
fn remember(memo: &std::path::Path, digest: &Digest, size: u64) {
    let Some(dir) = memo.parent() else { return };
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), digest.hex()));
    let written = fs::create_dir_all(dir)
        .and_then(|()| fs::write(&tmp, format!("{digest} {size}\n")))
        .and_then(|()| fs::rename(&tmp, memo));
    if written.is_err() {
        let _gone = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NoProgress;

    /// A store holding a one-layer image whose layer is a plain tar, as `load` leaves a
    /// docker archive's layers.
    fn plain_image(dir: &std::path::Path) -> (ImageStore, Target, Digest) {
        image_labelled_plain(dir, |tar| tar.to_vec())
    }

    /// A one-layer image whose layer is labelled plain and holds `blob(tar)`.
    fn image_labelled_plain(dir: &std::path::Path, blob: impl Fn(&[u8]) -> Vec<u8>) -> (ImageStore, Target, Digest) {
        let store = ImageStore::open(dir).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let body = "twin ".repeat(20_000);
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, "etc/motd", body.as_bytes()).unwrap();
        let tar = tar.into_inner().unwrap();
        let layer = blob(&tar);
        let plain = store.content().put(&layer).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar).to_string()]}, "config": {}
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = store.content().put(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": media::OCI_LAYER, "digest": plain.to_string(), "size": layer.len()}]
        });
        let target = store.put_manifest(&serde_json::to_vec(&manifest).unwrap(), media::OCI_MANIFEST).unwrap();
        (store, target, plain)
    }

    /// The layers compressed, from the progress events.
    #[derive(Default)]
    struct Made(std::sync::Mutex<Vec<Digest>>);

    impl Progress for Made {
        fn event(&self, e: Event) {
            if let Event::Compressing { digest, .. } = e {
                self.0.lock().unwrap().push(digest);
            }
        }
    }

    impl Made {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    #[test]
    fn a_plain_layer_is_pushed_as_its_gzip_twin_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, target, plain) = plain_image(dir.path());
        let made = Made::default();
        let new = compressed(&store, &target, Compression::Gzip, &made).unwrap();
        assert_eq!(*made.0.lock().unwrap(), vec![plain.clone()]);
        assert_ne!(new.digest, target.digest);
        let image = store.image(&new).unwrap();
        let layer = &image.manifest.layers()[0];
        assert_eq!(layer.media_type().to_string(), media::OCI_LAYER_GZIP);
        let twin = descriptor_digest(layer).unwrap();
        let bytes = store.content().read_small(&twin, 1 << 20).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
        assert!(layer.size() * 10 < store.content().info(&plain).unwrap().unwrap().size, "smaller");
        assert_eq!(store.image(&target).unwrap().config, image.config, "same config, same image ID");
        // Again: remembered, not made, and the same manifest.
        let again = compressed(&store, &target, Compression::Gzip, &made).unwrap();
        assert_eq!(made.count(), 1);
        assert_eq!(again, new);
        // Nothing to do for uncompressed, or for an image that is compressed already.
        assert_eq!(compressed(&store, &target, Compression::None, &made).unwrap(), target);
        assert_eq!(compressed(&store, &new, Compression::Gzip, &made).unwrap(), new);
        assert_eq!(made.count(), 1);
    }

    #[test]
    fn a_corrupt_plain_layer_is_refused_and_a_lost_twin_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, target, plain) = plain_image(dir.path());
        let new = compressed(&store, &target, Compression::Zstd, &NoProgress).unwrap();
        let twin = descriptor_digest(&store.image(&new).unwrap().manifest.layers()[0]).unwrap();
        fs::remove_file(store.content().blob_path(&twin)).unwrap();
        let made = Made::default();
        assert_eq!(compressed(&store, &target, Compression::Zstd, &made).unwrap(), new);
        assert_eq!(made.count(), 1, "the memo of a twin that is gone is not trusted");
        // A plain blob whose bytes no longer match its digest.
        let path = store.content().blob_path(&plain);
        let mut bytes = fs::read(&path).unwrap();
        bytes[600] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = compressed(&store, &target, Compression::Gzip, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("is corrupt in the store"), "{err}");
    }

    #[test]
    fn a_compressed_layer_labelled_plain_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let gzip = |tar: &[u8]| {
            let mut w = LayerWriter::new(Vec::new(), Compression::Gzip).unwrap();
            std::io::Write::write_all(&mut w, tar).unwrap();
            w.finish().unwrap().0
        };
        let (store, target, _) = image_labelled_plain(dir.path(), gzip);
        let made = Made::default();
        assert_eq!(compressed(&store, &target, Compression::Gzip, &made).unwrap(), target);
        assert_eq!(made.count(), 0, "not compressed twice");
    }
}
