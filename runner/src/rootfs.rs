//! From an image in the local store to a mountable rootfs: each layer unpacked once,
//! into a snapshot named by its chainID, then one fresh active snapshot on top.

use std::io::Read;
use std::path::Path;

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
    /// The sandbox's mount points could not be made in the image's scaffold snapshot.
    #[error("make the sandbox's mount points under {0}")]
    Scaffold(std::path::PathBuf, #[source] std::io::Error),
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
    let base = ensure_image(store, image, snapshotter)?;
    Ok(snapshotter.prepare(key, Some(&base))?)
}

/// Like [`prepare`], for a container whose writes are thrown away: a
/// [`Mount::Scratch`](crate::snapshot::Mount::Scratch) rootfs with its upper directory in
/// memory where the snapshotter offers one (no snapshot to create now or remove later),
/// else the active snapshot `key`.
pub fn prepare_throwaway(
    store: &ImageStore,
    image: &Image,
    snapshotter: &dyn Snapshotter,
    key: &str,
) -> Result<Throwaway, RootfsError> {
    let base = ensure_image(store, image, snapshotter)?;
    Ok(match snapshotter.scratch(&base)? {
        Some(mounts) => Throwaway::Scratch(mounts),
        None => Throwaway::Snapshot(snapshotter.prepare(key, Some(&base))?),
    })
}

/// What [`prepare_throwaway`] made.
#[derive(Debug)]
pub enum Throwaway {
    /// Mounts with nothing on disk behind their writes: nothing to remove afterwards.
    Scratch(Vec<Mount>),
    /// An active snapshot under the given key, removed by the caller afterwards.
    Snapshot(Vec<Mount>),
}

/// The committed snapshot a container of `image` starts from: every layer unpacked (diffIDs
/// verified), plus the sandbox's scaffold on top.
fn ensure_image(store: &ImageStore, image: &Image, snapshotter: &dyn Snapshotter) -> Result<String, RootfsError> {
    let layers = image
        .manifest
        .layers()
        .iter()
        .zip(image.config.rootfs().diff_ids())
        .map(|(desc, diff_id)| Ok((oci::manifest::descriptor_digest(desc)?, diff_id.clone())))
        .collect::<Result<Vec<_>, oci::Error>>()?;
    let top = ensure_chain(store, &layers, snapshotter)?;
    ensure_scaffold(snapshotter, top.as_deref(), &store.tmp_dir())
}

/// The committed snapshot on top of the image's `top` that adds the sandbox's
/// [`MOUNTPOINTS`](crate::sandbox::MOUNTPOINTS) the image lacks (/proc, /dev, /sys,
/// /etc/hosts, ...), made once per image. A container's upper directory then starts empty:
/// a run copies nothing up for its mounts and has nothing but its own writes to remove.
///
/// The entries are made through a real mount of the rootfs, so a directory the image has
/// (say /etc) is copied up by the kernel with its own owner, mode and xattrs.
pub fn ensure_scaffold(
    snapshotter: &dyn Snapshotter,
    top: Option<&str>,
    scratch: &Path,
) -> Result<String, RootfsError> {
    let name = format!("scaffold-v1-{}", top.unwrap_or("empty"));
    if snapshotter.exists(&name) {
        return Ok(name);
    }
    // Unique even when a killed run left its temporary snapshot and the pid comes round.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = format!("scaffold-{}-{}-{nanos}", std::process::id(), thread_id());
    let mounts = snapshotter.prepare(&tmp, top)?;
    let mountpoint = scratch.join(&tmp);
    let made = std::fs::create_dir_all(&mountpoint)
        .and_then(|()| {
            crate::sandbox::in_private_mounts(|| {
                mounts[0].mount(&mountpoint).map_err(std::io::Error::other)?;
                // This thread's own umask (its fs struct is unshared): docker's 022.
                rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
                let made = crate::sandbox::create_mountpoints(&mountpoint);
                // Unmounted here, not when the thread's namespace goes: the namespace may
                // outlive the join for a moment, and the commit must find the overlay gone.
                let unmounted = rustix::mount::unmount(&mountpoint, rustix::mount::UnmountFlags::empty());
                made.and(unmounted.map_err(std::io::Error::from))
            })?
        })
        .map_err(|e| RootfsError::Scaffold(mountpoint.clone(), e));
    let _ = std::fs::remove_dir(&mountpoint);
    match made.and_then(|()| Ok(snapshotter.commit(&name, &tmp)?)) {
        Ok(()) => Ok(name),
        // Another run made the same scaffold first: use theirs.
        Err(RootfsError::Snapshot(SnapshotError::Exists(_))) => {
            snapshotter.remove(&tmp)?;
            Ok(name)
        }
        Err(e) => {
            let _cleanup = snapshotter.remove(&tmp);
            Err(e)
        }
    }
}

/// Makes sure the committed snapshot of every prefix of `layers` (blob digest, diffID)
/// exists, unpacking the missing ones from the content store, and returns the name of
/// the top one (None for no layers).
pub fn ensure_chain(
    store: &ImageStore,
    layers: &[(Digest, String)],
    snapshotter: &dyn Snapshotter,
) -> Result<Option<String>, RootfsError> {
    ensure_chain_from(store, layers, snapshotter, &|_| None)
}

/// A reader of a layer's plain tar that is not in the content store (made as it is read).
pub type Stream = Box<dyn Read + Send>;

/// [`ensure_chain`], a layer that `stream` gives a reader for unpacked from that reader
/// (checked against its diffID all the same) instead of from the content store.
pub fn ensure_chain_from(
    store: &ImageStore,
    layers: &[(Digest, String)],
    snapshotter: &dyn Snapshotter,
    stream: &dyn Fn(&Digest) -> Option<Stream>,
) -> Result<Option<String>, RootfsError> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let chains = chain_ids(&diff_ids);
    let mut parent: Option<&str> = None;
    for ((layer, diff_id), chain) in layers.iter().zip(&chains) {
        if !snapshotter.exists(chain) {
            let tmp = format!("extract-{}-{}-{}", std::process::id(), thread_id(), layer.hex());
            snapshotter.prepare(&tmp, parent)?;
            let blob = match stream(layer) {
                Some(r) => Ok(r),
                None => store.content().reader(layer),
            };
            let result =
                blob.map_err(RootfsError::from).and_then(|b| unpack_one(store, b, layer, diff_id, snapshotter, &tmp));
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
    Ok(chains.last().cloned())
}

/// A number that tells this thread's temporary snapshots from another thread's.
fn thread_id() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish()
}

fn unpack_one(
    store: &ImageStore,
    blob: Stream,
    layer: &Digest,
    diff_id: &str,
    s: &dyn Snapshotter,
    key: &str,
) -> Result<(), RootfsError> {
    // A layer that cannot even be read is that layer's failure, as a broken tar is.
    let mut reader = oci::layer::LayerReader::new(blob, u64::MAX)
        .map_err(|e| RootfsError::Unpack(layer.clone(), UnpackError::Tar(std::io::Error::other(e))))?;
    let opts = UnpackOptions {
        whiteouts: s.whiteouts(),
        lowers: s.lowers(key),
        restore_dir_times: false,
        ..Default::default()
    };
    unpack(&mut reader, &s.upper(key)?, &opts).map_err(|e| RootfsError::Unpack(layer.clone(), e))?;
    // Drain the end-of-archive padding so the diffID covers the whole stream.
    std::io::copy(&mut (&mut reader).take(u64::MAX), &mut std::io::sink())
        .map_err(|e| RootfsError::Unpack(layer.clone(), UnpackError::Tar(e)))?;
    let (actual, size) = reader.finish()?;
    if actual.to_string() != diff_id {
        return Err(RootfsError::DiffId { layer: layer.clone(), expected: diff_id.to_owned(), actual });
    }
    // Counted for free here: `berth images` then need not decompress a pulled layer again.
    store.record_unpacked_size(&actual, size);
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
