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

use crate::content::{ContentStore, Expected};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, IoContext, Result};
use crate::layer::{Compression, LayerWriter};
use crate::manifest::{descriptor_digest, Manifest, MAX_MANIFEST_SIZE};
use crate::media;
use crate::store::{ImageStore, Target};

/// Where the twins are remembered, under the store's root.
const TWINS: &str = "layer-twins";

/// The gzip level of twins: ISA-L's level 1, as the builder's layers (a third of level 6's
/// time for a few percent more bytes).
const GZIP_LEVEL: u32 = 1;

/// `target` with every plain layer (of the image, or of each platform an index holds
/// locally) replaced by its `compression` twin; `target` itself when there is none, or when
/// `compression` is [`Compression::None`]. `on_layer` hears of each layer about to be
/// compressed (its digest and size), for progress. Rewritten manifests are stored.
pub fn compressed(
    store: &ImageStore,
    target: &Target,
    compression: Compression,
    on_layer: &mut dyn FnMut(&Digest, u64),
) -> Result<Target> {
    if compression == Compression::None {
        return Ok(target.clone());
    }
    let bytes = store.content().read_small(&target.digest, MAX_MANIFEST_SIZE as u64)?;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
    let changed = match Manifest::parse(&bytes, Some(&target.media_type))? {
        Manifest::Image(_) => replace_layers(store, &mut doc, compression, on_layer)?,
        Manifest::Index(_) => replace_children(store, &mut doc, compression, on_layer)?,
    };
    if !changed {
        return Ok(target.clone());
    }
    let bytes = serde_json::to_vec(&doc).map_err(|source| Error::InvalidJson { what: "manifest", source })?;
    store.put_manifest(&bytes, &target.media_type)
}

/// Points an image manifest's plain layers at their twins; true when one was.
fn replace_layers(
    store: &ImageStore,
    doc: &mut serde_json::Value,
    compression: Compression,
    on_layer: &mut dyn FnMut(&Digest, u64),
) -> Result<bool> {
    let docker = doc["mediaType"].as_str() == Some(media::DOCKER_MANIFEST);
    let Some(layers) = doc.get_mut("layers").and_then(|l| l.as_array_mut()) else { return Ok(false) };
    let mut changed = false;
    for layer in layers {
        let plain = matches!(layer["mediaType"].as_str(), Some(media::OCI_LAYER | media::DOCKER_LAYER));
        let digest: Digest = match layer["digest"].as_str().map(str::parse) {
            Some(Ok(d)) if plain => d,
            _ => continue,
        };
        // A plain layer's digest is its diffID, which is always sha256.
        if digest.algorithm() != Algorithm::Sha256 {
            continue;
        }
        let media_type = match (docker, compression) {
            (true, Compression::Gzip) => media::DOCKER_LAYER_GZIP,
            (true, _) => {
                return Err(Error::InvalidDocument {
                    what: "manifest",
                    reason: format!("a Docker schema 2 manifest cannot hold {compression:?} layers: use gzip"),
                })
            }
            (false, c) => c.oci_media_type(),
        };
        let (twin, size) = twin(store, &digest, layer["size"].as_u64().unwrap_or(0), compression, on_layer)?;
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
    on_layer: &mut dyn FnMut(&Digest, u64),
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
        let new = compressed(store, &t, compression, on_layer)?;
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
    on_layer: &mut dyn FnMut(&Digest, u64),
) -> Result<(Digest, u64)> {
    let memo = store.root().join(TWINS).join(format!("{}.{}", plain.hex(), name(compression)));
    if let Some((d, s)) = remembered(store, &memo) {
        return Ok((d, s));
    }
    on_layer(plain, size);
    let ingest = store.content().writer(Algorithm::Sha256)?;
    let level = (compression == Compression::Gzip).then_some(GZIP_LEVEL);
    let mut w = LayerWriter::into_ingest(ingest, compression, level)?;
    let mut blob = store.content().reader(plain)?;
    std::io::copy(&mut blob, &mut w).ctx(|| format!("compress layer {plain}"))?;
    let (ingest, info) = w.finish()?;
    if info.diff_id != *plain {
        return Err(Error::DigestMismatch { expected: plain.clone(), actual: info.diff_id });
    }
    ingest.commit(Expected::exactly(&info.digest, info.size))?;
    store.record_unpacked_size(plain, info.uncompressed_size);
    remember(&memo, &info.digest, info.size);
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

    /// A store holding a one-layer image whose layer is a plain tar, as `load` leaves a
    /// docker archive's layers.
    fn plain_image(dir: &std::path::Path) -> (ImageStore, Target, Digest) {
        let store = ImageStore::open(dir).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let body = "twin ".repeat(20_000);
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, "etc/motd", body.as_bytes()).unwrap();
        let tar = tar.into_inner().unwrap();
        let plain = store.content().put(&tar).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [plain.to_string()]}, "config": {}
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = store.content().put(&config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": media::OCI_LAYER, "digest": plain.to_string(), "size": tar.len()}]
        });
        let target = store.put_manifest(&serde_json::to_vec(&manifest).unwrap(), media::OCI_MANIFEST).unwrap();
        (store, target, plain)
    }

    #[test]
    fn a_plain_layer_is_pushed_as_its_gzip_twin_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, target, plain) = plain_image(dir.path());
        let mut made = Vec::new();
        let new = compressed(&store, &target, Compression::Gzip, &mut |d, _| made.push(d.clone())).unwrap();
        assert_eq!(made, vec![plain.clone()]);
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
        let again = compressed(&store, &target, Compression::Gzip, &mut |d, _| made.push(d.clone())).unwrap();
        assert_eq!(made.len(), 1);
        assert_eq!(again, new);
        // Nothing to do for uncompressed, or for an image that is compressed already.
        assert_eq!(compressed(&store, &target, Compression::None, &mut |_, _| panic!()).unwrap(), target);
        assert_eq!(compressed(&store, &new, Compression::Gzip, &mut |_, _| panic!()).unwrap(), new);
    }

    #[test]
    fn a_corrupt_plain_layer_is_refused_and_a_lost_twin_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, target, plain) = plain_image(dir.path());
        let new = compressed(&store, &target, Compression::Zstd, &mut |_, _| {}).unwrap();
        let twin = descriptor_digest(&store.image(&new).unwrap().manifest.layers()[0]).unwrap();
        fs::remove_file(store.content().blob_path(&twin)).unwrap();
        let mut made = 0;
        assert_eq!(compressed(&store, &target, Compression::Zstd, &mut |_, _| made += 1).unwrap(), new);
        assert_eq!(made, 1, "the memo of a twin that is gone is not trusted");
        // A plain blob whose bytes no longer match its digest.
        let path = store.content().blob_path(&plain);
        let mut bytes = fs::read(&path).unwrap();
        bytes[600] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = compressed(&store, &target, Compression::Gzip, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }
}
