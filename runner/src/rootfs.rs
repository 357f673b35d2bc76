//! From an image in the local store to a mountable rootfs: each layer unpacked once,
//! into a snapshot named by its chainID, then one fresh active snapshot on top.

use std::io::Read;

use oci::content::ContentStore;
use oci::{Digest, Image, ImageStore};

use crate::snapshot::{Mount, SnapshotError, Snapshotter};
use crate::unpack::{unpack, UnpackError, UnpackOptions};

/// Why a rootfs could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Reading the image failed.
    #[error("read image")]
    Image(#[from] oci::Error),
    /// A layer could not be unpacked (a hostile entry, a broken tar).
    #[error("unpack layer {0}")]
    Unpack(Digest, #[source] UnpackError),
    /// The layer's content does not hash to the diffID its config promises.
    #[error("layer {layer} has diffID {actual}, its config says {expected}")]
    DiffId {
        /// The layer blob.
        layer: Digest,
        /// What the config says.
        expected: String,
        /// What the content is.
        actual: Digest,
    },
    /// A snapshot operation failed.
    #[error("snapshot")]
    Snapshot(#[from] SnapshotError),
}

/// The chainIDs of an image's layers: `chain(0) = diffID(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diffID(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()).to_string(),
        };
        out.push(next);
    }
    out
}

/// Makes sure every layer of `image` has its snapshot, verifying diffIDs as it unpacks,
/// then prepares the active snapshot `key` on top and returns its mounts.
pub fn prepare(
    store: &ImageStore,
    image: &Image,
    snapshotter: &dyn Snapshotter,
    key: &str,
) -> Result<Vec<Mount>, RootfsError> {
    let diff_ids = image.config.rootfs().diff_ids();
    let chains = chain_ids(diff_ids);
    let mut parent: Option<&str> = None;
    for ((desc, chain), diff_id) in image.manifest.layers().iter().zip(&chains).zip(diff_ids) {
        if !snapshotter.exists(chain) {
            let layer = oci::manifest::descriptor_digest(desc)?;
            let tmp = format!("extract-{}-{}", std::process::id(), layer.hex());
            snapshotter.prepare(&tmp, parent)?;
            let result = unpack_one(store, &layer, diff_id, snapshotter, &tmp);
            match result.and_then(|()| Ok(snapshotter.commit(chain, &tmp)?)) {
                Ok(()) => {}
                // Another process committed the same chain first: use theirs.
                Err(RootfsError::Snapshot(SnapshotError::Exists(_))) => snapshotter.remove(&tmp)?,
                Err(e) => {
                    let _cleanup = snapshotter.remove(&tmp);
                    return Err(e);
                }
            }
        }
        parent = Some(chain);
    }
    Ok(snapshotter.prepare(key, parent)?)
}

fn unpack_one(
    store: &ImageStore,
    layer: &Digest,
    diff_id: &str,
    s: &dyn Snapshotter,
    key: &str,
) -> Result<(), RootfsError> {
    let blob = store.content().reader(layer)?;
    let mut reader = oci::layer::LayerReader::new(blob, u64::MAX)?;
    let opts = UnpackOptions { whiteouts: s.whiteouts(), ..Default::default() };
    unpack(&mut reader, &s.upper(key)?, &opts).map_err(|e| RootfsError::Unpack(layer.clone(), e))?;
    // Drain the end-of-archive padding so the diffID covers the whole stream.
    std::io::copy(&mut (&mut reader).take(u64::MAX), &mut std::io::sink())
        .map_err(|e| RootfsError::Unpack(layer.clone(), UnpackError::Tar(e)))?;
    let (actual, _) = reader.finish()?;
    if actual.to_string() != diff_id {
        return Err(RootfsError::DiffId { layer: layer.clone(), expected: diff_id.to_owned(), actual });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aaaa".to_owned();
        let b = "sha256:bbbb".to_owned();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(b"sha256:aaaa sha256:bbbb").to_string());
    }
}
