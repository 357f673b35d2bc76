//! The filesystem driver: a path is a file under a root directory.

mod block;
mod bulk;
mod pair;

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use super::{check_path, ByteStream, DriverError, FileInfo, FileWriter, Result, StorageDriver};

/// Stores files under a root directory; writes are temp file + fsync + rename + fsync of the
/// directory, so a committed file and its name survive a power cut.
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

    /// Writes `content` to a temporary file beside `path` and renames it over `path`; with
    /// `durable`, the file and then its directory are fsynced (two waits for the disk each).
    async fn put_file(&self, path: &str, content: Bytes, durable: bool) -> Result<()> {
        let full = self.full(path)?;
        make_parent(&full, path).await?;
        let owned = path.to_owned();
        blocking("put", path, move || -> Result<()> {
            let dir = full.parent().unwrap_or(Path::new("/"));
            let mut tmp =
                tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io_err("create temp for", &owned))?;
            io::Write::write_all(&mut tmp, &content).map_err(io_err("write", &owned))?;
            if durable {
                tmp.as_file().sync_all().map_err(io_err("fsync", &owned))?;
            }
            tmp.persist(&full).map_err(|e| io_err("rename", &owned)(e.error))?;
            if durable {
                sync_parent(&full).map_err(io_err("fsync the directory of", &owned))?;
            }
            Ok(())
        })
        .await
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

/// Creates the missing parent directories of `full`, each made durable in its own parent, so
/// that a file committed below them survives a power cut with its path.
async fn make_parent(full: &Path, path: &str) -> Result<()> {
    let Some(parent) = full.parent().map(Path::to_path_buf) else { return Ok(()) };
    if tokio::fs::metadata(&parent).await.is_ok() {
        return Ok(());
    }
    let owned = path.to_owned();
    blocking("create directory for", path, move || {
        let mut missing = Vec::new();
        let mut dir = parent.as_path();
        while std::fs::symlink_metadata(dir).is_err() {
            missing.push(dir.to_path_buf());
            let Some(up) = dir.parent() else { break };
            dir = up;
        }
        std::fs::create_dir_all(&parent).map_err(io_err("create directory for", &owned))?;
        // Top first: each new directory's entry is written into its parent.
        for d in missing.iter().rev() {
            sync_parent(d).map_err(io_err("fsync the directory of", &owned))?;
        }
        Ok(())
    })
    .await
}

/// fsyncs the directory holding `path`: after a rename or create there, the entry itself is
/// durable only once its directory is.
fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(test)]
    tests::SYNCED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(dir.to_path_buf());
    Ok(())
}

/// Runs `f` on tokio's blocking pool; a panicked task is an I/O error of `op` on `path`.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    path: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DriverError::Io {
        op,
        path: path.to_owned(),
        source: io::Error::other(e),
    })?
}

#[async_trait::async_trait]
impl StorageDriver for FsDriver {
    async fn get(&self, path: &str) -> Result<Bytes> {
        let full = self.full(path)?;
        Ok(Bytes::from(tokio::fs::read(&full).await.map_err(io_err("read", path))?))
    }

    async fn put(&self, path: &str, content: Bytes) -> Result<()> {
        self.put_file(path, content, true).await
    }

    async fn put_unsynced(&self, path: &str, content: Bytes) -> Result<()> {
        self.put_file(path, content, false).await
    }

    async fn read(&self, path: &str, offset: u64) -> Result<ByteStream> {
        bulk::read_stream(self.full(path)?, path, offset).await
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
        let owned = from.to_owned();
        blocking("rename", from, move || {
            std::fs::rename(&f, &t).map_err(io_err("rename", &owned))?;
            // The new name must survive a power cut: a client was told the blob is stored.
            sync_parent(&t).map_err(io_err("fsync the directory of", &owned))
        })
        .await
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let full = self.full(path)?;
        make_parent(&full, path).await?;
        Ok(Box::new(bulk::BulkWriter::open(full, path, append, true).await?))
    }

    async fn writer_cached(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let full = self.full(path)?;
        make_parent(&full, path).await?;
        // Through the page cache: the next pull reads memory, not the disk.
        Ok(Box::new(bulk::BulkWriter::open(full, path, append, false).await?))
    }

    fn name(&self) -> &'static str {
        "filesystem"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Every directory `sync_parent` synced, in order (all tests of the process).
    pub(super) static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    fn synced_under(root: &Path) -> Vec<PathBuf> {
        SYNCED.lock().unwrap().iter().filter(|p| p.starts_with(root)).cloned().collect()
    }

    #[tokio::test]
    async fn put_and_rename_make_the_new_name_and_new_directories_durable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let d = FsDriver::new(&root).unwrap();
        d.put("/blobs/sha256/ab/data", Bytes::from_static(b"x")).await.unwrap();
        // The file's directory, and each directory created for it in its parent, top first.
        assert_eq!(
            synced_under(&root),
            [root.clone(), root.join("blobs"), root.join("blobs/sha256"), root.join("blobs/sha256/ab")]
        );
        d.put("/uploads/u1/data", Bytes::from_static(b"y")).await.unwrap();
        d.rename("/uploads/u1/data", "/blobs/sha256/cd/data").await.unwrap();
        let seen = synced_under(&root);
        assert_eq!(seen.last(), Some(&root.join("blobs/sha256/cd")), "the rename's target directory: {seen:?}");
        assert!(seen.contains(&root.join("blobs/sha256")), "cd/ made durable in its parent: {seen:?}");
        assert_eq!(d.get("/blobs/sha256/cd/data").await.unwrap(), Bytes::from_static(b"y"));
    }

    /// A coordination file is written whole and renamed into place, with no wait for the disk
    /// once its directory exists (gc's claims: two per linking request).
    #[tokio::test]
    async fn put_unsynced_replaces_the_file_whole_without_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let d = FsDriver::new(&root).unwrap();
        d.put_unsynced("/_gc/claims/a", Bytes::from_static(b"one")).await.unwrap();
        let made = synced_under(&root).len();
        d.put_unsynced("/_gc/claims/a", Bytes::from_static(b"two")).await.unwrap();
        d.put_unsynced("/_gc/claims/b", Bytes::from_static(b"three")).await.unwrap();
        assert_eq!(synced_under(&root).len(), made, "only the new directories were made durable");
        assert_eq!(d.get("/_gc/claims/a").await.unwrap(), Bytes::from_static(b"two"));
        assert_eq!(d.list("/_gc/claims").await.unwrap(), ["a", "b"], "no temporary file is left");
    }
}
