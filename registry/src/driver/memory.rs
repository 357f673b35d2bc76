//! An in-memory driver, for fast tests of the layers above storage.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::{check_path, ByteStream, DriverError, FileInfo, FileWriter, Result, StorageDriver};

type Files = Arc<Mutex<BTreeMap<String, (Bytes, SystemTime)>>>;

/// Files in a map; clones share it, like two processes sharing a bucket.
#[derive(Debug, Clone, Default)]
pub struct MemoryDriver {
    files: Files,
}

impl MemoryDriver {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, SystemTime)>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn dir_prefix(path: &str) -> String {
    format!("{}/", path.trim_end_matches('/'))
}

#[async_trait::async_trait]
impl StorageDriver for MemoryDriver {
    async fn get(&self, path: &str) -> Result<Bytes> {
        check_path(path)?;
        self.lock().get(path).map(|(b, _)| b.clone()).ok_or_else(|| DriverError::NotFound(path.to_owned()))
    }

    async fn put(&self, path: &str, content: Bytes) -> Result<()> {
        check_path(path)?;
        self.lock().insert(path.to_owned(), (content, SystemTime::now()));
        Ok(())
    }

    async fn read(&self, path: &str, offset: u64) -> Result<ByteStream> {
        let content = self.get(path).await?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
        let chunk = content.slice(start..);
        Ok(Box::pin(futures_util::stream::once(async move { Ok(chunk) })))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        check_path(path)?;
        let files = self.lock();
        if let Some((b, t)) = files.get(path) {
            return Ok(FileInfo { size: b.len() as u64, modified: *t, is_dir: false });
        }
        let prefix = dir_prefix(path);
        match files.range(prefix.clone()..).next() {
            Some((k, (_, t))) if k.starts_with(&prefix) => Ok(FileInfo { size: 0, modified: *t, is_dir: true }),
            _ => Err(DriverError::NotFound(path.to_owned())),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        check_path(path)?;
        let prefix = dir_prefix(path);
        let files = self.lock();
        let mut names: Vec<String> = files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_owned))
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(DriverError::NotFound(path.to_owned()));
        }
        Ok(names)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        check_path(path)?;
        let mut files = self.lock();
        let prefix = dir_prefix(path);
        let before = files.len();
        files.retain(|k, _| k != path && !k.starts_with(&prefix));
        if files.len() == before {
            return Err(DriverError::NotFound(path.to_owned()));
        }
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_path(to)?;
        let content = self.get(from).await?;
        let mut files = self.lock();
        files.remove(from);
        files.insert(to.to_owned(), (content, SystemTime::now()));
        Ok(())
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        check_path(path)?;
        let existing = if append { self.get(path).await.ok() } else { None };
        let buf = existing.map(|b| BytesMut::from(&b[..])).unwrap_or_default();
        Ok(Box::new(MemoryWriter { driver: self.clone(), path: path.to_owned(), buf }))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

struct MemoryWriter {
    driver: MemoryDriver,
    path: String,
    buf: BytesMut,
}

#[async_trait::async_trait]
impl FileWriter for MemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.driver.put(&self.path, self.buf.freeze()).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.driver.put(&self.path, self.buf.freeze()).await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        match self.driver.delete(&self.path).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}
