//! The on-disk content store: `<root>/blobs/<alg>/<hex>`, ingests in `<root>/ingest/`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::beside::BesideHasher;
use super::{BlobWriter, ContentStore, Expected, Info};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, IoContext, Result};

/// Blobs as files under a root directory; see [`ContentStore`] for the guarantees.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = root.join("blobs").join(alg.as_str());
            fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        }
        let ingest = root.join("ingest");
        fs::create_dir_all(&ingest).ctx(|| format!("create {}", ingest.display()))?;
        Ok(LocalStore { root })
    }

    /// The path a blob lives at (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm().as_str()).join(digest.hex())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Deletes ingest files last written before `cutoff` (left by killed writers);
    /// returns the bytes freed.
    pub fn remove_stale_ingests(&self, cutoff: std::time::SystemTime) -> Result<u64> {
        let dir = self.root.join("ingest");
        let mut freed = 0;
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            let meta = entry.metadata().ctx(|| format!("stat {}", entry.path().display()))?;
            if meta.modified().is_ok_and(|m| m < cutoff) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => freed += meta.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("remove {}", entry.path().display()), e)),
                }
            }
        }
        Ok(freed)
    }
}

impl ContentStore for LocalStore {
    fn info(&self, digest: &Digest) -> Result<Option<Info>> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(Info {
                digest: digest.clone(),
                size: m.len(),
                committed: m.modified().ctx(|| format!("stat {}", path.display()))?,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("stat {}", path.display()), e)),
        }
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(digest.clone())),
            Err(e) => Err(Error::io(format!("open blob {digest}"), e)),
        }
    }

    fn writer(&self, algorithm: Algorithm) -> Result<Box<dyn BlobWriter>> {
        let dir = self.root.join("ingest");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .ctx(|| format!("create ingest file in {}", dir.display()))?;
        Ok(Box::new(LocalWriter {
            out: BufWriter::with_capacity(256 * 1024, file),
            hash: BesideHasher::new(algorithm),
            store: self.clone(),
        }))
    }

    fn delete(&self, digest: &Digest) -> Result<bool> {
        match fs::remove_file(self.blob_path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("delete blob {digest}"), e)),
        }
    }

    fn walk(&self, f: &mut dyn FnMut(Info) -> Result<()>) -> Result<()> {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(alg.as_str());
            for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
                let entry = entry.ctx(|| format!("read {}", dir.display()))?;
                // Anything that is not a well-formed digest name is not a blob.
                let Some(digest) = entry.file_name().to_str().and_then(|h| Digest::new(alg, h).ok()) else {
                    continue;
                };
                if let Some(info) = self.info(&digest)? {
                    f(info)?;
                }
            }
        }
        Ok(())
    }
}

struct LocalWriter {
    out: BufWriter<tempfile::NamedTempFile>,
    /// The hash and count of what was written, on a thread of its own for a large blob.
    hash: BesideHasher,
    store: LocalStore,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter for LocalWriter {
    fn commit(self: Box<Self>, expected: Expected<'_>) -> Result<Digest> {
        let size = self.hash.count();
        let (buf, digest) = (self.out, self.hash.finish());
        expected.check(&digest, size)?;
        let file = buf.into_inner().map_err(|e| Error::io("flush ingest file", e.into_error()))?;
        let target = self.store.blob_path(&digest);
        file.as_file().sync_all().ctx(|| format!("fsync ingest for {digest}"))?;
        // A concurrent writer of the same blob may have won; the content is identical,
        // so replacing it atomically is harmless.
        file.persist(&target).map_err(|e| Error::io(format!("commit blob {digest}"), e.error))?;
        if let Some(dir) = target.parent() {
            File::open(dir).and_then(|d| d.sync_all()).ctx(|| format!("fsync {}", dir.display()))?;
        }
        Ok(digest)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        let file = self.out.into_inner().map_err(|e| Error::io("flush ingest file", e.into_error()))?;
        file.close().ctx(|| "remove ingest file")
    }

    fn written(&self) -> u64 {
        self.hash.count()
    }

    fn digest(&self) -> Digest {
        self.hash.digest()
    }
}
