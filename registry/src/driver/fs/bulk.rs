//! The filesystem driver's bulk paths, the bytes of blobs and uploads: reads served from
//! mappings of the file, and appends written with `O_DIRECT` where the filesystem has it, so
//! that moving a gigabyte costs the server little CPU (bench/registry-concurrency.sh measures
//! it).

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use oci::digest::{Hasher, Sha256};

use super::super::{ByteStream, DriverError, FileWriter, Result};
use super::block::{self, Block, Pool};
use super::pair;
use super::{blocking, io_err};

/// Bytes per body chunk of a read, one mapping each: a blob costs one `mmap`, one hand-off to
/// the blocking pool and one `munmap` per MiB, and a pull keeps about one chunk mapped.
const READ_CHUNK: u64 = 1 << 20;
/// Mappings start at a multiple of this: 64 KiB, the largest page size Linux uses, so a
/// multiple of the page size wherever berth runs.
const MAP_ALIGN: u64 = 1 << 16;

/// Streams `full` from `offset` to the size it has when opened. Each chunk is a read-only
/// mapping of the file whose pages the blocking pool makes present (`MAP_POPULATE`, reading
/// from the disk if need be): the HTTP layer sends the page cache's bytes with no copy
/// before the socket's, and no worker thread waits for the disk. Committed files are never
/// cut short (the registry replaces files by rename and removes them by unlink); one
/// truncated behind its back would make the process fault (SIGBUS) on the missing pages.
pub(super) async fn read_stream(full: PathBuf, path: &str, offset: u64) -> Result<ByteStream> {
    let owned = path.to_owned();
    let (file, size) = blocking("open", path, move || {
        let file = File::open(&full).map_err(io_err("open", &owned))?;
        let size = file.metadata().map_err(io_err("stat", &owned))?.len();
        Ok((Arc::new(file), size))
    })
    .await?;
    let chunks = futures_util::stream::try_unfold(offset, move |pos| {
        let file = Arc::clone(&file);
        async move {
            if pos >= size {
                return Ok(None);
            }
            let len = (size - pos).min(READ_CHUNK) as usize;
            let chunk = tokio::task::spawn_blocking(move || map(&file, pos, len)).await.map_err(io::Error::other)??;
            Ok(Some((chunk, pos + len as u64)))
        }
    });
    Ok(Box::pin(chunks))
}

/// `len` bytes of `file` at `pos`, mapped with their pages present, as `Bytes` that unmap
/// when the last reference goes.
fn map(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let start = pos - pos % MAP_ALIGN;
    let skip = (pos - start) as usize;
    let mapped = skip + len;
    let flags = rustix::mm::MapFlags::SHARED | rustix::mm::MapFlags::POPULATE;
    // SAFETY: a new mapping at an address the kernel picks, aliasing nothing of ours; it is
    // read-only, and `Mapping` unmaps it once, when dropped.
    let ptr =
        unsafe { rustix::mm::mmap(std::ptr::null_mut(), mapped, rustix::mm::ProtFlags::READ, flags, file, start)? };
    Ok(Bytes::from_owner(Mapping { ptr, len: mapped, skip }))
}

/// A read-only shared mapping of part of a file; its bytes are those from `skip` on.
struct Mapping {
    ptr: *mut c_void,
    len: usize,
    skip: usize,
}

// SAFETY: the mapping is read-only and belongs to this value alone: any thread may read it
// or unmap it.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` stays mapped and readable until `drop`, and `skip < len`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>().add(self.skip), self.len - self.skip) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are those `mmap` returned, and nothing refers to the bytes now.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr, self.len) } {
            tracing::error!(error = %e, "unmapping a blob chunk");
        }
    }
}

/// File offsets and lengths of direct writes are multiples of this: the page size, and no
/// smaller than the logical block size of the disks in use.
const ALIGN: usize = 4096;

/// A block's write on the blocking pool (which gives the block back to the pool once
/// written): whether the filesystem refused direct I/O.
type Write = tokio::task::JoinHandle<Result<bool>>;

/// Appends to an upload. Whole blocks go to the disk with `O_DIRECT`: no copy into the page
/// cache and no writeback by the kernel later, which is most of what buffered writes of a
/// large upload cost. The end of the file that does not fill a block is written through the
/// page cache when the writer closes; a later writer reads that partial block back and writes
/// it whole again with what follows, so its direct writes stay aligned. One write runs on the
/// blocking pool while the next block fills, and the written block goes straight back to the
/// pool: uploads at once hold one block each and share a few spares for the writes under way
/// ([`Pool::take_second`]). Without a spare, the writer waits for its write and fills the
/// same block again; with no block at all, every write goes through the page cache.
pub(super) struct BulkWriter {
    /// The file, read-write: the buffered writes, the partial block's bytes, fsync.
    file: Arc<File>,
    /// The same file with `O_DIRECT`; `None` where the filesystem refuses it (every write then
    /// goes through the page cache).
    direct: Option<Arc<File>>,
    /// The bytes not written yet; `None` until the first write, so that a writer opened for
    /// its size alone costs no buffer (and while the pool has none to spare).
    pending: Option<Block>,
    /// The file offset of `pending`'s first byte, a multiple of `ALIGN` once it is set up.
    start: u64,
    /// Bytes in the file, the pending ones included.
    size: u64,
    /// The write under way and the file offset it writes at: gives back its block, and
    /// whether direct I/O was refused.
    inflight: Option<(u64, Write)>,
    /// A write failed: the file was cut where it started, and this writer writes no more.
    broken: bool,
    /// Where blocks come from.
    pool: &'static Pool,
    /// Where its chunks meet other uploads' to hash in pairs.
    pairing: &'static pair::Pairing,
    /// This upload as `pairing` knows it.
    upload: pair::Upload,
    path: String,
    full: PathBuf,
}

impl BulkWriter {
    /// Opens `full` (created if missing; emptied unless `append`); with `direct`, whole blocks
    /// bypass the page cache.
    pub(super) async fn open(full: PathBuf, path: &str, append: bool, direct: bool) -> Result<BulkWriter> {
        let owned = path.to_owned();
        let opened = full.clone();
        let (file, direct, size) = blocking("open", path, move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(!append)
                .open(&opened)
                .map_err(io_err("open", &owned))?;
            let size = file.metadata().map_err(io_err("stat", &owned))?.len();
            let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
            let direct = match OpenOptions::new().write(true).custom_flags(flags).open(&opened) {
                Ok(_) if !direct => None,
                Ok(f) => Some(Arc::new(f)),
                // This filesystem has no direct I/O (EINVAL): the page cache it is.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => None,
                Err(e) => return Err(io_err("open", &owned)(e)),
            };
            Ok((Arc::new(file), direct, size))
        })
        .await?;
        Ok(BulkWriter {
            file,
            direct,
            pending: None,
            start: size,
            size,
            inflight: None,
            broken: false,
            pool: &block::POOL,
            pairing: &pair::PAIRING,
            upload: pair::Upload::new(),
            path: path.to_owned(),
            full,
        })
    }

    /// The block to append to; on the first write, one holding the bytes of the file's last
    /// partial block (read back), so that the pending bytes start at an aligned offset.
    /// `None` when the pool has no block to spare.
    async fn pending(&mut self) -> Result<Option<&mut Block>> {
        if self.pending.is_none() {
            let Some(mut block) = self.pool.take() else { return Ok(None) };
            let start = self.size - self.size % ALIGN as u64;
            if start < self.size {
                let (file, path, n) = (Arc::clone(&self.file), self.path.clone(), (self.size - start) as usize);
                block = blocking("read", &self.path, move || {
                    let tail = block.extend(n);
                    file.read_exact_at(tail, start).map_err(io_err("read", &path))?;
                    Ok(block)
                })
                .await?;
            }
            self.start = start;
            self.pending = Some(block);
        }
        Ok(self.pending.as_mut())
    }

    /// Waits for the write under way, if any.
    async fn wait(&mut self) -> Result<()> {
        let Some((at, write)) = self.inflight.take() else { return Ok(()) };
        let done = write.await.map_err(|e| DriverError::Io {
            op: "write",
            path: self.path.clone(),
            source: io::Error::other(e),
        });
        match done.and_then(|written| written) {
            Ok(refused) => {
                if refused {
                    self.direct = None;
                }
                Ok(())
            }
            Err(e) => Err(self.fail(at, e).await),
        }
    }

    /// After a write at `at` failed with `error`: cuts the file there, so that its size says
    /// how much of the upload is stored (the client resumes from it) and no later block
    /// lands beyond a hole; the writer writes no more. Returns `error`.
    async fn fail(&mut self, at: u64, error: DriverError) -> DriverError {
        self.broken = true;
        self.pending = None;
        self.size = at;
        let (file, path) = (Arc::clone(&self.file), self.path.clone());
        if let Err(e) =
            blocking("truncate", &self.path, move || file.set_len(at).map_err(io_err("truncate", &path))).await
        {
            tracing::error!(path = %self.path, error = %e, "cutting an upload back after a failed write");
        }
        error
    }

    /// The error of a writer used after one of its writes failed.
    fn broken_error(&self) -> DriverError {
        DriverError::Io {
            op: "write",
            path: self.path.clone(),
            source: io::Error::other("an earlier write to this file failed"),
        }
    }

    /// Starts writing the pending whole blocks (all pending bytes with `all`), after the write
    /// under way; the rest moves to a spare from the pool. Without one, the write is waited
    /// for and its block keeps the rest.
    async fn flush(&mut self, all: bool) -> Result<()> {
        let Some(len) = self.pending.as_ref().map(|b| b.bytes().len()) else { return Ok(()) };
        let n = if all { len } else { len - len % ALIGN };
        if n == 0 {
            return Ok(());
        }
        self.wait().await?;
        let Some(full) = self.pending.take() else { return Ok(()) };
        let (file, direct, path, at) = (Arc::clone(&self.file), self.direct.clone(), self.path.clone(), self.start);
        self.start += n as u64;
        if let Some(mut next) = self.pool.take_second() {
            next.append(&full.bytes()[n..]);
            self.pending = Some(next);
            let writing = self.pool.writing();
            let write = move || {
                let refused = write_at(&file, direct.as_deref(), &full.bytes()[..n], at, &path);
                // Back to the pool as soon as written, for whichever upload needs a spare next.
                drop((full, writing));
                refused
            };
            self.inflight = Some((at, tokio::task::spawn_blocking(write)));
            return Ok(());
        }
        let write = move || {
            let refused = write_at(&file, direct.as_deref(), &full.bytes()[..n], at, &path)?;
            Ok((full, refused))
        };
        let (mut full, refused) = match blocking("write", &self.path, write).await {
            Ok(done) => done,
            Err(e) => return Err(self.fail(at, e).await),
        };
        if refused {
            self.direct = None;
        }
        full.consume(n);
        self.pending = Some(full);
        Ok(())
    }

    /// Writes every pending byte (the last partial block through the page cache) and waits.
    async fn finish(&mut self) -> Result<()> {
        if self.broken {
            return Err(self.broken_error());
        }
        self.flush(false).await?;
        self.flush(true).await?;
        self.wait().await
    }

    /// Appends `data`, feeding it to `hash` too when given: in one pass as it is copied into
    /// a block (sharing the loop with another upload's chunk where one is at hand), or on its
    /// way through the page cache when the pool has no block to spare.
    async fn append(&mut self, data: Bytes, mut hash: Option<&mut Hasher>) -> Result<()> {
        if self.broken {
            return Err(self.broken_error());
        }
        let mut at = 0;
        while at < data.len() {
            let Some(block) = self.pending().await? else {
                if let Some(h) = hash {
                    h.update(&data[at..]);
                }
                return self.write_through(data.slice(at..)).await;
            };
            let n = (data.len() - at).min(block.room());
            match hash.as_deref_mut() {
                Some(Hasher::Sha256(h)) if n >= pair::PAIR_MIN => self.append_paired(data.slice(at..at + n), h).await?,
                Some(h) => block.append_hashing(&data[at..at + n], h),
                None => block.append(&data[at..at + n]),
            }
            self.size += n as u64;
            at += n;
            if self.pending.as_ref().is_some_and(|b| b.room() == 0) {
                self.flush(false).await?;
            }
        }
        Ok(())
    }

    /// Hashes `chunk` into `hash` and copies it into the pending block through the
    /// [`pair::PAIRING`], where another upload's chunk may share the loop.
    async fn append_paired(&mut self, chunk: Bytes, hash: &mut Sha256) -> Result<()> {
        let block = self.pending.take().expect("append_paired runs with a block pending");
        // The caller's hash is reset until the job comes back. Should the call be dropped
        // meanwhile, the upload's session has counted the chunk while the file lacks it, so
        // the next request drops that hash and finishing re-reads the file.
        let job = pair::Job::new(std::mem::take(hash), chunk, block);
        // Until the job comes back, the file lacks the block's bytes: a writer whose call was
        // dropped meanwhile must not write again.
        self.broken = true;
        match self.pairing.run(job, &mut self.upload).await {
            Ok(job) => {
                let block;
                (*hash, block) = job.into_parts();
                self.pending = Some(block);
                self.broken = false;
                Ok(())
            }
            Err(pair::Lost) => {
                // The write before the lost block's first: its outcome decides where to cut.
                self.wait().await?;
                let lost = DriverError::Io {
                    op: "write",
                    path: self.path.clone(),
                    source: io::Error::other("hashing the upload's bytes failed"),
                };
                Err(self.fail(self.start, lost).await)
            }
        }
    }

    /// Writes `data` at the end through the page cache (no block pending, none under way).
    async fn write_through(&mut self, data: Bytes) -> Result<()> {
        let (file, path, at, n) = (Arc::clone(&self.file), self.path.clone(), self.size, data.len() as u64);
        match blocking("write", &self.path, move || file.write_all_at(&data, at).map_err(io_err("write", &path))).await
        {
            Ok(()) => {
                self.size += n;
                Ok(())
            }
            Err(e) => Err(self.fail(at, e).await),
        }
    }
}

/// Writes `data` at `at`: with `direct` when it is given and everything is aligned, through
/// the page cache otherwise. Returns true when the filesystem refused the direct write (and
/// the page cache took it), so that the writer stops trying.
fn write_at(file: &File, direct: Option<&File>, data: &[u8], at: u64, path: &str) -> Result<bool> {
    let aligned = data.len().is_multiple_of(ALIGN)
        && at.is_multiple_of(ALIGN as u64)
        && (data.as_ptr() as usize).is_multiple_of(ALIGN);
    let mut refused = false;
    if let Some(d) = direct.filter(|_| aligned) {
        match d.write_all_at(data, at) {
            Ok(()) => return Ok(false),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                tracing::debug!(path, "direct write refused; writing through the page cache");
                refused = true;
            }
            Err(e) => return Err(io_err("write", path)(e)),
        }
    }
    file.write_all_at(data, at).map_err(io_err("write", path))?;
    Ok(refused)
}

#[async_trait::async_trait]
impl FileWriter for BulkWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.append(data, None).await
    }

    async fn write_hashing(&mut self, data: Bytes, hash: &mut Hasher) -> Result<()> {
        self.append(data, Some(hash)).await
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        // Direct writes are on the disk and the rest is in the page cache: another process
        // appending sees every byte, and a killed server loses none. Durability against power
        // loss comes at commit.
        self.finish().await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.finish().await?;
        let (file, path) = (Arc::clone(&self.file), self.path.clone());
        blocking("fsync", &self.path, move || file.sync_all().map_err(io_err("fsync", &path))).await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        // A write still under way (there is none unless this writer wrote) lands in the
        // removed file.
        tokio::fs::remove_file(&self.full).await.map_err(io_err("delete", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;

    /// Bytes that differ at every offset, so that a misplaced block shows.
    fn pattern(from: usize, n: usize) -> Vec<u8> {
        (from..from + n).map(|i| (i % 251) as u8).collect()
    }

    async fn read_back(full: &std::path::Path) -> Vec<u8> {
        let chunks: Vec<Bytes> = read_stream(full.to_path_buf(), "/f", 0).await.unwrap().try_collect().await.unwrap();
        chunks.concat()
    }

    /// Writes `parts` (byte counts) one writer after another, each closing (or, the last,
    /// committing), with odd chunk sizes: aligned blocks, partial blocks read back and
    /// rewritten, and a buffer filled many times over. Every other chunk goes through
    /// `write_hashing`; returns the byte count and the running digest.
    async fn write_in_sessions(
        full: &std::path::Path,
        parts: &[usize],
        no_direct: bool,
        pool: &'static Pool,
    ) -> (usize, oci::Digest) {
        let (mut at, mut hash) = (0, oci::digest::Algorithm::Sha256.hasher());
        for (i, &n) in parts.iter().enumerate() {
            let mut w = BulkWriter::open(full.to_path_buf(), "/f", i > 0, true).await.unwrap();
            w.pool = pool;
            if no_direct {
                w.direct = None;
            }
            assert_eq!(w.size(), at as u64);
            let data = pattern(at, n);
            for (j, chunk) in data.chunks(123_457).enumerate() {
                if j % 2 == 0 {
                    w.write_hashing(Bytes::copy_from_slice(chunk), &mut hash).await.unwrap();
                } else {
                    hash.update(chunk);
                    w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
                }
            }
            at += n;
            assert_eq!(w.size(), at as u64);
            let w: Box<dyn FileWriter> = Box::new(w);
            if i + 1 == parts.len() {
                w.commit().await.unwrap();
            } else {
                w.close().await.unwrap();
            }
        }
        (at, hash.finish())
    }

    /// With and without direct I/O, with two blocks, one, or none to spare (the page cache
    /// then takes every write): the file holds exactly what was appended, and the running
    /// digest is that of its bytes.
    #[tokio::test]
    async fn sessions_of_any_size_append_exactly_whatever_the_pool_spares() {
        static ONE: Pool = Pool::new(1, 1, 1);
        static NONE: Pool = Pool::new(0, 0, 0);
        let dir = tempfile::tempdir().unwrap();
        let parts = [10, ALIGN - 10, 3 * block::BLOCK + 5, 1, ALIGN + 1, 0, block::BLOCK - 7];
        let pools: [(&'static Pool, &str); 3] = [(&block::POOL, "two"), (&ONE, "one"), (&NONE, "none")];
        for no_direct in [false, true] {
            for (pool, blocks) in pools {
                let full = dir.path().join(format!("data-{no_direct}-{blocks}"));
                let (total, digest) = write_in_sessions(&full, &parts, no_direct, pool).await;
                let back = read_back(&full).await;
                let case = format!("no_direct: {no_direct}, blocks: {blocks}");
                assert_eq!(back.len(), total, "{case}");
                assert!(back == pattern(0, total), "content differs ({case})");
                assert_eq!(digest, oci::Digest::of(&back), "{case}");
            }
        }
        assert_eq!(ONE.in_use(), 0, "every block went back to its pool");
    }

    /// A direct write that fails while the next block fills (as ENOSPC or EIO would), then
    /// succeeds again: the writer reports it, writes nothing more, and the file is cut where
    /// the failed write started, so that no later block lands beyond a hole at the size the
    /// client counted (found by a review: the file came out whole in length, zeros inside).
    #[tokio::test]
    async fn a_failed_write_cuts_the_file_where_it_started_and_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("data");
        let mut w = BulkWriter::open(full.clone(), "/f", false, true).await.unwrap();
        let Some(good) = w.direct.clone() else {
            eprintln!("skipped: no O_DIRECT on this filesystem");
            return;
        };
        let data = pattern(0, 3 * block::BLOCK);
        let mut hash = oci::digest::Algorithm::Sha256.hasher();
        let mut failed = None;
        for (i, chunk) in data.chunks(block::BLOCK / 2).enumerate() {
            // The second block's write fails: a handle open for reading only (EBADF).
            w.direct = Some(if i == 3 { Arc::new(File::open(&full).unwrap()) } else { good.clone() });
            if let Err(e) = w.write_hashing(Bytes::copy_from_slice(chunk), &mut hash).await {
                failed = Some((i, e));
                break;
            }
        }
        let (i, _) = failed.expect("the failed write is reported");
        assert!(i >= 4, "reported once the next block is full, at chunk {i}");
        assert!(w.write(Bytes::from_static(b"more")).await.is_err(), "a broken writer writes no more");
        let w: Box<dyn FileWriter> = Box::new(w);
        assert!(w.close().await.is_err(), "closing a broken writer says so");
        let back = std::fs::read(&full).unwrap();
        assert_eq!(back.len(), block::BLOCK, "the file ends where the failed write started");
        assert!(back == data[..block::BLOCK], "what is stored is the upload's first bytes");
        let w = BulkWriter::open(full.clone(), "/f", true, true).await.unwrap();
        assert_eq!(w.size(), block::BLOCK as u64, "the client resumes from there");
    }

    /// Uploads written at once hash their chunks in pairs, and each file and running digest
    /// is still exactly its own upload's.
    #[tokio::test(start_paused = true)]
    async fn uploads_written_at_once_hash_in_pairs_and_each_keeps_its_own_bytes() {
        static MEET: pair::Pairing = pair::Pairing::new();
        let dir = tempfile::tempdir().unwrap();
        let uploads = (0..4).map(|k| {
            let full = dir.path().join(format!("upload-{k}"));
            tokio::spawn(async move {
                let data = pattern(k * 17 + 1, 3 * block::BLOCK + 12_345);
                let mut w = BulkWriter::open(full.clone(), "/f", false, true).await.unwrap();
                w.pairing = &MEET;
                let mut hash = oci::digest::Algorithm::Sha256.hasher();
                for chunk in data.chunks(300_001) {
                    w.write_hashing(Bytes::copy_from_slice(chunk), &mut hash).await.unwrap();
                    tokio::task::yield_now().await;
                }
                Box::new(w).commit().await.unwrap();
                let back = read_back(&full).await;
                assert!(back == data, "upload {k}: the file holds its own bytes");
                assert_eq!(hash.finish(), oci::Digest::of(&data), "upload {k}: the digest is its own");
            })
        });
        for upload in uploads.collect::<Vec<_>>() {
            upload.await.unwrap();
        }
        assert!(MEET.pairs() > 0, "no two chunks shared a loop");
    }

    #[tokio::test]
    async fn reads_start_anywhere_and_stop_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("blob");
        let n = 2 * READ_CHUNK as usize + 3;
        std::fs::write(&full, pattern(0, n)).unwrap();
        for offset in [0, 1, READ_CHUNK as usize, n - 1, n, n + 5] {
            let chunks: Vec<Bytes> =
                read_stream(full.clone(), "/blob", offset as u64).await.unwrap().try_collect().await.unwrap();
            assert!(chunks.iter().all(|c| c.len() as u64 <= READ_CHUNK));
            assert!(chunks.concat() == pattern(offset.min(n), n - offset.min(n)), "offset {offset}");
        }
    }
}
