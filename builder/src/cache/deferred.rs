//! Step layers kept only as snapshots until something needs their blob.
//!
//! A RUN or COPY step's layer is its snapshot's diff. Most never leave the machine
//! (intermediate stages, steps an edit will redo), so where the snapshotter can write a
//! committed snapshot's layer again ([`Snapshotter::rediffs`]) the build hashes the diff for
//! the layer's digest and stores no blob, and notes here which snapshot holds the layer
//! (`deferred/<digest>`). An export, a cache export or an unpack that needs the blob gets it
//! made from that snapshot, checked against the digest. The snapshot is durable once
//! committed, so nothing a crash could lose rests on the missing blob.

use std::io::Write;

use oci::content::{ContentStore, Expected};
use oci::layer::{Compression, LayerWriter};
use oci::ImageStore;
use runner::snapshot::Snapshotter;
use serde::{Deserialize, Serialize};

use super::CacheStore;
use crate::error::{Error, Result};

/// Where a deferred layer can be made from.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// The committed snapshot whose own files are the layer.
    chain: String,
    /// `SOURCE_DATE_EPOCH` when the diff was made (it clamps the layer's times).
    source_date_epoch: Option<u64>,
}

/// The layers this machine built without storing their blobs.
#[derive(Clone, Copy)]
pub struct Deferred<'a> {
    /// Where the notes are kept.
    pub cache: &'a dyn CacheStore,
    /// Where the layers' snapshots are.
    pub snapshotter: &'a dyn Snapshotter,
}

/// The cache entry noting where the layer `digest` can be made from.
pub(crate) fn key(digest: &oci::Digest) -> String {
    format!("deferred/{digest}")
}

impl Deferred<'_> {
    /// True when this machine can leave a step's layer unstored.
    pub fn enabled(&self) -> bool {
        self.snapshotter.rediffs()
    }

    /// Notes that the committed snapshot `chain` holds the layer `digest`, diffed with
    /// `source_date_epoch`.
    pub fn note(&self, digest: &oci::Digest, chain: &str, source_date_epoch: Option<u64>) -> Result<()> {
        let entry = Entry { chain: chain.to_owned(), source_date_epoch };
        let raw =
            serde_json::to_vec(&entry).map_err(|source| Error::Json { what: "a deferred layer".into(), source })?;
        self.cache.put(key(digest).as_bytes(), &raw)
    }

    fn entry(&self, digest: &oci::Digest) -> Option<Entry> {
        let raw = self.cache.get(key(digest).as_bytes()).ok()??;
        serde_json::from_slice(&raw).ok()
    }

    /// True when the layer `digest` can be made here (its snapshot is still there).
    pub fn has(&self, digest: &oci::Digest) -> bool {
        self.entry(digest).is_some_and(|e| self.snapshotter.exists(&e.chain))
    }

    /// Writes the plain tar of the layer `digest` to `out`; false when it cannot be made
    /// here. The caller checks what it wrote against the digest.
    pub fn write(&self, digest: &oci::Digest, out: &mut dyn Write) -> Result<bool> {
        let Some(e) = self.entry(digest) else { return Ok(false) };
        if !self.snapshotter.exists(&e.chain) {
            return Ok(false);
        }
        self.snapshotter.rediff(&e.chain, e.source_date_epoch, out).map_err(Error::runner("write a layer again"))?;
        Ok(true)
    }

    /// Stores the blob of the layer `digest`, made from its snapshot; false when it cannot
    /// be made here.
    pub fn store(&self, store: &ImageStore, digest: &oci::Digest) -> Result<bool> {
        let ingest = store.content().writer(digest.algorithm()).map_err(Error::image("start a layer"))?;
        let mut w = LayerWriter::into_ingest(ingest, Compression::None, None).map_err(Error::image("start a layer"))?;
        if !self.write(digest, &mut w)? {
            let (ingest, _) = w.finish().map_err(Error::image("finish a layer"))?;
            ingest.abort().map_err(Error::image("drop a layer"))?;
            return Ok(false);
        }
        let (ingest, info) = w.finish().map_err(Error::image("finish a layer"))?;
        // A snapshot changed since its diff makes another layer: refused here, never
        // stored under the old digest, and the note goes (the step runs again next time).
        if &info.digest != digest {
            ingest.abort().map_err(Error::image("drop a layer"))?;
            self.forget(digest)?;
            return Err(changed(digest));
        }
        ingest.commit(Expected::exactly(digest, info.size)).map_err(Error::image(format!("store layer {digest}")))?;
        Ok(true)
    }

    /// Drops the note of the layer `digest`: its snapshot does not make it any more.
    pub fn forget(&self, digest: &oci::Digest) -> Result<()> {
        self.cache.remove(key(digest).as_bytes())
    }
}

/// The error for a layer made again from its snapshot that is not the layer any more.
pub fn changed(digest: &oci::Digest) -> Error {
    Error::Runner {
        what: format!("make layer {digest} again from its snapshot"),
        source: "the snapshot changed since the layer was made".into(),
    }
}
