//! Storage drivers: paths and bytes, never digests or manifests.
//!
//! A path is absolute (`/v2/...`), `/`-separated, and built only by [`crate::paths`].
//! Directories exist implicitly: writing `/a/b/c` makes `/a` and `/a/b` listable, and
//! deleting a directory deletes everything under it.
//!
//! Files are written two ways. [`StorageDriver::put`] replaces a small file atomically.
//! [`StorageDriver::writer`] streams a large one (an upload) and may be reopened with
//! `append` by any process sharing the storage, to resume where the last writer stopped:
//! [`FileWriter::close`] makes what was written durable and resumable, and
//! [`FileWriter::commit`] finishes the file so that it can be read.

mod fs;
mod memory;
pub(crate) mod s3;
#[cfg(test)]
pub(crate) mod testsuite;

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

pub use fs::FsDriver;
pub use memory::MemoryDriver;
#[cfg(test)]
pub(crate) use s3::tests::TestS3;
pub use s3::{S3Config, S3Driver};

/// A stream of file content.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a driver says about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// True for a directory.
    pub is_dir: bool,
}

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// Nothing at that path.
    #[error("path not found: {0}")]
    NotFound(String),
    /// A path that is not absolute, or that climbs with `..`.
    #[error("invalid storage path: {0}")]
    InvalidPath(String),
    /// The filesystem failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// Where.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A remote backend (S3) failed.
    #[error("{op} {path}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// Where.
        path: String,
        /// The backend's error, rendered.
        message: String,
    },
}

impl DriverError {
    /// True when the path simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DriverError::NotFound(_))
    }
}

/// `Result` for driver calls.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// Paths and bytes; see the module docs for the vocabulary.
#[async_trait::async_trait]
pub trait StorageDriver: Send + Sync + 'static {
    /// The whole content of a small file.
    async fn get(&self, path: &str) -> Result<Bytes>;

    /// Replaces a file's content atomically: readers see the old or the new, never a mix.
    async fn put(&self, path: &str, content: Bytes) -> Result<()>;

    /// [`put`](Self::put) without waiting for the file to be durable: for files that only
    /// coordinate processes while they run (gc's claims), which a power cut may lose or leave
    /// empty. Where durability costs nothing extra, this is `put`.
    async fn put_unsynced(&self, path: &str, content: Bytes) -> Result<()> {
        self.put(path, content).await
    }

    /// Streams a file from `offset` to its end.
    async fn read(&self, path: &str, offset: u64) -> Result<ByteStream>;

    /// Size, time and kind of a path.
    async fn stat(&self, path: &str) -> Result<FileInfo>;

    /// The names of a directory's direct children, sorted.
    async fn list(&self, path: &str) -> Result<Vec<String>>;

    /// Removes a file or a directory with everything under it.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Moves a file, replacing what is at `to`.
    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Opens a streaming writer; with `append`, resumes the file an earlier writer closed.
    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>>;

    /// A writer whose bytes should stay in memory, for content about to be read again (a
    /// mirror's fills, pulled again by the next client); drivers with no cache to keep
    /// give their usual writer.
    async fn writer_cached(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        self.writer(path, append).await
    }

    /// A short name for logs and metrics (`filesystem`, `s3`, `memory`).
    fn name(&self) -> &'static str;
}

/// A file being streamed into storage.
#[async_trait::async_trait]
pub trait FileWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Appends bytes and feeds them to `hash`: an upload's running digest. A driver that
    /// copies the bytes into a buffer of its own hashes them in the same pass.
    async fn write_hashing(&mut self, data: Bytes, hash: &mut oci::digest::Hasher) -> Result<()> {
        hash.update(&data);
        self.write(data).await
    }

    /// Bytes in the file so far, earlier writers' included.
    fn size(&self) -> u64;

    /// Makes what was written durable so that a later writer can append to it.
    async fn close(self: Box<Self>) -> Result<()>;

    /// Finishes the file: afterwards it reads back whole at its path.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Throws away everything written, by this writer and earlier ones.
    async fn cancel(self: Box<Self>) -> Result<()>;
}

/// Refuses paths the layout would never produce: relative, `..`, empty components.
pub fn check_path(path: &str) -> Result<()> {
    let ok =
        path.starts_with('/') && path.len() > 1 && path[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(DriverError::InvalidPath(path.to_owned()))
    }
}
