//! The filesystem driver: a path is a file under a root directory.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{check_path, ByteStream, DriverError, FileInfo, FileWriter, Result, StorageDriver};

/// Stores files under a root directory; writes are temp file + fsync + rename.
#[derive(Debug, Clone)]
pub struct FsDriver {
    root: PathBuf,
}

impl FsDriver {
    /// A driver rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| DriverError::Io {
            op: "create",
            path: root.display().to_string(),
            source,
        })?;
        Ok(FsDriver { root })
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        check_path(path)?;
        Ok(self.root.join(&path[1..]))
    }
}

fn io_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(io::Error) -> DriverError + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            DriverError::NotFound(path.to_owned())
        } else {
            DriverError::Io { op, path: path.to_owned(), source }
        }
    }
}

async fn make_parent(full: &Path, path: &str) -> Result<()> {
    if let Some(parent) = full.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_err("create directory for", path))?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl StorageDriver for FsDriver {
    async fn get(&self, path: &str) -> Result<Bytes> {
        let full = self.full(path)?;
        Ok(Bytes::from(tokio::fs::read(&full).await.map_err(io_err("read", path))?))
    }

    async fn put(&self, path: &str, content: Bytes) -> Result<()> {
        let full = self.full(path)?;
        make_parent(&full, path).await?;
        let owned = path.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let dir = full.parent().unwrap_or(Path::new("/"));
            let mut tmp =
                tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io_err("create temp for", &owned))?;
            io::Write::write_all(&mut tmp, &content).map_err(io_err("write", &owned))?;
            tmp.as_file().sync_all().map_err(io_err("fsync", &owned))?;
            tmp.persist(&full).map_err(|e| io_err("rename", &owned)(e.error))?;
            Ok(())
        })
        .await
        .map_err(|e| DriverError::Io { op: "put", path: path.to_owned(), source: io::Error::other(e) })?
    }

    async fn read(&self, path: &str, offset: u64) -> Result<ByteStream> {
        let full = self.full(path)?;
        let mut f = tokio::fs::File::open(&full).await.map_err(io_err("open", path))?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).await.map_err(io_err("seek", path))?;
        }
        Ok(Box::pin(ReaderStream::with_capacity(f, 256 * 1024)))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let full = self.full(path)?;
        let m = tokio::fs::metadata(&full).await.map_err(io_err("stat", path))?;
        Ok(FileInfo {
            size: if m.is_dir() { 0 } else { m.len() },
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            is_dir: m.is_dir(),
        })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let full = self.full(path)?;
        let mut rd = tokio::fs::read_dir(&full).await.map_err(io_err("list", path))?;
        let mut names = Vec::new();
        while let Some(e) = rd.next_entry().await.map_err(io_err("list", path))? {
            if let Some(n) = e.file_name().to_str() {
                if !n.starts_with(".tmp-") {
                    names.push(n.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path)?;
        let m = tokio::fs::symlink_metadata(&full).await.map_err(io_err("delete", path))?;
        if m.is_dir() {
            tokio::fs::remove_dir_all(&full).await.map_err(io_err("delete", path))
        } else {
            tokio::fs::remove_file(&full).await.map_err(io_err("delete", path))
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.full(from)?, self.full(to)?);
        make_parent(&t, to).await?;
        tokio::fs::rename(&f, &t).await.map_err(io_err("rename", from))
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let full = self.full(path)?;
        make_parent(&full, path).await?;
        let mut opts = tokio::fs::OpenOptions::new();
        opts.create(true).write(true);
        if append {
            opts.append(true);
        } else {
            opts.truncate(true);
        }
        let file = opts.open(&full).await.map_err(io_err("open", path))?;
        let size = file.metadata().await.map_err(io_err("stat", path))?.len();
        Ok(Box::new(FsWriter {
            file: tokio::io::BufWriter::with_capacity(1 << 20, file),
            size,
            path: path.to_owned(),
            full,
        }))
    }

    fn name(&self) -> &'static str {
        "filesystem"
    }
}

struct FsWriter {
    /// Buffered so that a stream of small body chunks becomes few large writes.
    file: tokio::io::BufWriter<tokio::fs::File>,
    size: u64,
    path: String,
    full: PathBuf,
}

#[async_trait::async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.file.write_all(&data).await.map_err(io_err("write", &self.path))?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        // Written bytes are in the page cache: another process appending sees them, and a
        // killed server loses nothing. Durability against power loss comes at commit.
        self.file.flush().await.map_err(io_err("flush", &self.path))
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.file.flush().await.map_err(io_err("flush", &self.path))?;
        self.file.get_ref().sync_all().await.map_err(io_err("fsync", &self.path))
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        drop(self.file);
        tokio::fs::remove_file(&self.full).await.map_err(io_err("delete", &self.path))
    }
}
