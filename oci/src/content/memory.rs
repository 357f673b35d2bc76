//! An in-memory content store, for tests of code that takes any [`ContentStore`].

use std::collections::HashMap;
use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::{BlobWriter, ContentStore, Expected, Info};
use crate::digest::{Algorithm, Digest, HashingWriter};
use crate::error::Result;

type Blobs = Arc<Mutex<HashMap<Digest, (Arc<[u8]>, SystemTime)>>>;

/// Blobs held in a map; cheap to clone (clones share the map).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    blobs: Blobs,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ContentStore for MemoryStore {
    fn info(&self, digest: &Digest) -> Result<Option<Info>> {
        let blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(blobs.get(digest).map(|(b, t)| Info { digest: digest.clone(), size: b.len() as u64, committed: *t }))
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let (b, _) = blobs.get(digest).ok_or_else(|| crate::Error::BlobNotFound(digest.clone()))?;
        Ok(Box::new(Cursor::new(Arc::clone(b))))
    }

    fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter { out: HashingWriter::new(Vec::new(), algorithm), blobs: Arc::clone(&self.blobs) }))
    }

    fn delete(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blobs.lock().unwrap_or_else(PoisonError::into_inner).remove(digest).is_some())
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()> {
        let snapshot: Vec<Info> = {
            let blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
            blobs.iter().map(|(d, (b, t))| Info { digest: d.clone(), size: b.len() as u64, committed: *t }).collect()
        };
        snapshot.into_iter().try_for_each(f)
    }
}

struct MemoryWriter {
    out: HashingWriter<Vec<u8>>,
    blobs: Blobs,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for MemoryWriter {
    fn commit(self: Box<Self>, expected: Expected<'_>) -> Result<Digest> {
        let (buf, digest, size) = self.out.finish();
        expected.check(&digest, size)?;
        let mut blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        blobs.insert(digest.clone(), (Arc::from(buf), SystemTime::now()));
        Ok(digest)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    fn written(&self) -> u64 {
        self.out.count()
    }

    fn digest(&self) -> Digest {
        self.out.digest()
    }
}
