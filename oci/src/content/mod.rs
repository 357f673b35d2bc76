//! The content store: blobs addressed by their digest.
//!
//! Lifecycle of a blob: [`ContentStore::writer`] opens an ingest; bytes are streamed in
//! and hashed as they arrive; [`BlobWriter::commit`] verifies the digest (and size) it is
//! given, makes the data durable, and only then makes it visible under its digest.
//! [`BlobWriter::abort`] (or dropping the writer) discards it. A blob that is visible is
//! therefore always whole and always matches its name. Two writers of the same blob may
//! run at once: both verify, and the second commit atomically replaces the first's
//! identical bytes.

mod beside;
mod local;
mod memory;
#[cfg(test)]
mod testsuite;

use std::io::{Read, Write};
use std::time::SystemTime;

pub use local::LocalStore;
pub use memory::MemoryStore;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};

/// What the store knows about a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed (the grace period of garbage collection uses it).
    pub committed: SystemTime,
}

/// What a writer must hold to be committed: the digest and, when known, the size.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The digest the content must hash to; `None` accepts whatever it hashes to.
    pub digest: Option<&'a Digest>,
    /// The size the content must have, when the caller knows it.
    pub size: Option<u64>,
}

impl<'a> Expected<'a> {
    /// Nothing expected: commit under the computed digest.
    pub const ANY: Expected<'static> = Expected { digest: None, size: None };

    /// Expect exactly this digest and size, as a descriptor gives them.
    pub fn exactly(digest: &'a Digest, size: u64) -> Self {
        Expected { digest: Some(digest), size: Some(size) }
    }

    /// Checks computed values against the expectation.
    pub fn check(&self, actual: &Digest, actual_size: u64) -> Result<()> {
        if let Some(size) = self.size {
            if size != actual_size {
                let digest = self.digest.unwrap_or(actual).clone();
                return Err(Error::SizeMismatch { digest, expected: size, actual: actual_size });
            }
        }
        if let Some(d) = self.digest {
            if d != actual {
                return Err(Error::DigestMismatch { expected: d.clone(), actual: actual.clone() });
            }
        }
        Ok(())
    }
}

/// An open ingest: write bytes, then commit or abort.
pub trait BlobWriter: Write + Send {
    /// Verifies the content against `expected`, makes it durable and visible, and returns
    /// its digest. On a mismatch nothing becomes visible and the ingest is discarded.
    fn commit(self: Box<Self>, expected: Expected<'_>) -> Result<Digest>;

    /// Discards the ingest.
    fn abort(self: Box<Self>) -> Result<()>;

    /// Bytes written so far.
    fn written(&self) -> u64;

    /// The digest of what was written so far (the blob's digest once all is written).
    fn digest(&self) -> Digest;
}

/// A [`BlobWriter`] that keeps nothing: the digest and size of a blob that is not stored
/// (hashed beside the writer, as an ingest hashes), for a layer that can be made again.
pub fn discarding(algorithm: Algorithm) -> Box<dyn BlobWriter> {
    Box::new(Discarding { hash: beside::BesideHasher::new(algorithm) })
}

struct Discarding {
    hash: beside::BesideHasher,
}

impl Write for Discarding {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hash.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for Discarding {
    fn commit(self: Box<Self>, expected: Expected<'_>) -> Result<Digest> {
        let size = self.hash.count();
        let digest = self.hash.finish();
        expected.check(&digest, size)?;
        Ok(digest)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        drop(self.hash.finish());
        Ok(())
    }

    fn written(&self) -> u64 {
        self.hash.count()
    }

    fn digest(&self) -> Digest {
        self.hash.digest()
    }
}

/// Blobs by digest; see the module docs for the lifecycle.
pub trait ContentStore: Send + Sync {
    /// The blob's info, or `None` when it is absent.
    fn info(&self, digest: &Digest) -> Result<Option<Info>>;

    /// A reader over the whole blob.
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>>;

    /// Opens an ingest that hashes with `algorithm`.
    fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn BlobWriter>>;

    /// Removes a blob; `false` when it was not there.
    fn delete(&self, digest: &Digest) -> Result<bool>;

    /// Calls `f` for every blob.
    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()>;

    /// Stores a small in-memory blob (a manifest or config) and returns its digest.
    fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.writer(Algorithm::Sha256)?;
        w.write_all(bytes).map_err(|e| Error::io("write blob", e))?;
        w.commit(Expected { digest: None, size: Some(bytes.len() as u64) })
    }

    /// Reads a small blob whole, refusing one larger than `limit` bytes.
    fn read_small(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.reader(digest)?
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read blob {digest}"), e))?;
        if buf.len() as u64 > limit {
            return Err(Error::InvalidDocument {
                what: "blob",
                reason: format!("{digest} is larger than {limit} bytes"),
            });
        }
        let actual = {
            let mut h = digest.algorithm().hasher();
            h.update(&buf);
            h.finish()
        };
        if &actual != digest {
            return Err(Error::DigestMismatch { expected: digest.clone(), actual });
        }
        Ok(buf)
    }

    /// True when the blob is present.
    fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(self.info(digest)?.is_some())
    }
}
