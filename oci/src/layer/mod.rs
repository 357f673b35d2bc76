//! Layers: tar streams, compressed or not, and the two digests that name them.
//!
//! A layer has a diffID (the sha256 of its uncompressed tar) and a digest (the sha256 of
//! the bytes stored and pushed). [`LayerWriter`] computes both in one streaming pass:
//!
//! ```text
//! tar bytes -> sha256 (diffID) -> gzip | zstd | none -> sha256 + count (digest, size) -> sink
//! ```
//!
//! gzip and zstd both compress on all cores. [`tar_directory`] writes a directory as a
//! tar with sorted entries and, when `SOURCE_DATE_EPOCH` is set, clamped timestamps, so the
//! same tree gives the same bytes. [`LayerReader`] reverses the pipe for reading, checking
//! sizes and digests as it goes.

mod isal;
mod pgzip;
mod tarball;
pub mod xattr;

use std::io::{self, BufRead, BufReader, Read, Write};

pub use pgzip::ParGzEncoder;
pub use tarball::{tar_directory, Exactly, OverlayXattrs, TarOptions, TarWriter, FUSE_OPAQUE_MARKERS};

use crate::content::BlobWriter;
use crate::digest::{Algorithm, Digest, Hasher, HashingReader};
use crate::error::{Error, Result};
use crate::media;

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, the format every registry and runtime understands.
    #[default]
    Gzip,
    /// zstd: smaller and much faster, understood by containerd 1.5+, podman, BuildKit.
    Zstd,
}

impl Compression {
    /// Reads the first bytes of a stream to tell its compression (magic numbers).
    pub fn detect(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => media::OCI_LAYER,
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        }
    }

    /// The Docker schema 2 media type of a layer with this compression; docker has none for zstd.
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some(media::DOCKER_LAYER),
            Compression::Gzip => Some(media::DOCKER_LAYER_GZIP),
            Compression::Zstd => None,
        }
    }

    /// The compression a layer media type declares, OCI or Docker; `None` for non-layers.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            media::OCI_LAYER | media::DOCKER_LAYER | media::OCI_LAYER_NONDIST => Some(Compression::None),
            media::OCI_LAYER_GZIP
            | media::DOCKER_LAYER_GZIP
            | media::DOCKER_LAYER_FOREIGN_GZIP
            | media::OCI_LAYER_NONDIST_GZIP => Some(Compression::Gzip),
            media::OCI_LAYER_ZSTD | media::OCI_LAYER_NONDIST_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "uncompressed" | "none" => Ok(Compression::None),
            _ => Err(format!("unknown compression {s:?} (gzip, zstd, uncompressed)")),
        }
    }
}

/// What a finished layer is: enough to write its descriptor and its config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The digest of the stored (compressed) bytes.
    pub digest: Digest,
    /// The stored size in bytes.
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The uncompressed size in bytes.
    pub uncompressed_size: u64,
    /// How it is compressed.
    pub compression: Compression,
}

/// The number of threads compression uses by default: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

enum Compressor<W: Write> {
    None(W),
    Gzip(ParGzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}

/// The stored side of a layer being written: counts the bytes, and hashes them unless the
/// sink hashes them itself (a content store's ingest does, to verify its commit).
struct Counted<W: Write> {
    inner: W,
    digest: DigestBy<W>,
    count: u64,
}

/// Who computes the stored bytes' digest.
enum DigestBy<W> {
    /// This hasher, fed as the bytes pass.
    Hashing(Hasher),
    /// The sink, asked at the end.
    Sink(fn(&W) -> Digest),
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let DigestBy::Hashing(h) = &mut self.digest {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Turns tar bytes written into it into a compressed layer on `sink`, computing the
/// diffID, the digest and both sizes in the same pass.
pub struct LayerWriter<W: Write> {
    inner: Compressor<Counted<W>>,
    /// The hash of the uncompressed bytes, the diffID; `None` for an uncompressed layer, whose
    /// diffID is its digest (one SHA-256 pass instead of two over the same bytes).
    diff: Option<Hasher>,
    uncompressed_size: u64,
    compression: Compression,
}

impl<W: Write> LayerWriter<W> {
    /// A writer with the default level and all cores.
    pub fn new(sink: W, compression: Compression) -> Result<Self> {
        Self::with_threads(sink, compression, default_threads())
    }

    /// A writer with an explicit number of compression threads.
    pub fn with_threads(sink: W, compression: Compression, threads: usize) -> Result<Self> {
        Self::with_level(sink, compression, None, threads)
    }

    /// A writer at compression `level` (gzip 0-9, default 6; zstd 1-19, default 3; None: the
    /// default) on `threads` threads.
    pub fn with_level(sink: W, compression: Compression, level: Option<u32>, threads: usize) -> Result<Self> {
        let counted = Counted { inner: sink, digest: DigestBy::Hashing(Algorithm::Sha256.hasher()), count: 0 };
        Self::around(counted, compression, level, threads)
    }

    fn around(counted: Counted<W>, compression: Compression, level: Option<u32>, threads: usize) -> Result<Self> {
        let compressor = match compression {
            Compression::None => Compressor::None(counted),
            Compression::Gzip => Compressor::Gzip(
                ParGzEncoder::new(counted, level.unwrap_or(6).min(9), threads)
                    .map_err(|e| Error::io("start gzip workers", e))?,
            ),
            Compression::Zstd => {
                let level = level.map_or(3, |l| l.clamp(1, 19) as i32);
                let mut enc = zstd::Encoder::new(counted, level).map_err(|e| Error::io("start zstd", e))?;
                // Always the multithreaded format: its output is the same for any number of
                // workers, but differs from single-threaded mode, and digests must not
                // depend on the machine's core count.
                enc.multithread(threads.max(1) as u32).map_err(|e| Error::io("start zstd workers", e))?;
                Compressor::Zstd(enc)
            }
        };
        let diff = (compression != Compression::None).then(|| Algorithm::Sha256.hasher());
        Ok(LayerWriter { inner: compressor, diff, uncompressed_size: 0, compression })
    }

    /// Finishes compression and returns the sink with what the layer is.
    pub fn finish(self) -> Result<(W, LayerInfo)> {
        let counted = match self.inner {
            Compressor::None(w) => w,
            Compressor::Gzip(w) => w.finish().map_err(|e| Error::io("finish gzip stream", e))?,
            Compressor::Zstd(w) => w.finish().map_err(|e| Error::io("finish zstd stream", e))?,
        };
        let Counted { inner: mut sink, digest, count: size } = counted;
        let digest = match digest {
            DigestBy::Hashing(h) => h.finish(),
            DigestBy::Sink(of) => of(&sink),
        };
        sink.flush().map_err(|e| Error::io("flush layer", e))?;
        let diff_id = self.diff.map_or_else(|| digest.clone(), Hasher::finish);
        let uncompressed_size = self.uncompressed_size;
        let info = LayerInfo { digest, size, diff_id, uncompressed_size, compression: self.compression };
        Ok((sink, info))
    }
}

impl LayerWriter<Box<dyn BlobWriter>> {
    /// A writer into a content store's ingest at compression `level` on all cores, as
    /// [`LayerWriter::with_level`]: the ingest hashes what it stores anyway, so the layer's
    /// digest is its, not a second SHA-256 pass.
    pub fn into_ingest(ingest: Box<dyn BlobWriter>, compression: Compression, level: Option<u32>) -> Result<Self> {
        let counted = Counted { inner: ingest, digest: DigestBy::Sink(|w| w.digest()), count: 0 };
        Self::around(counted, compression, level, default_threads())
    }
}

impl<W: Write> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.diff.as_mut() {
            h.update(&buf[..n]);
        }
        self.uncompressed_size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The decompressed side of a layer being read, hashing both sides.
enum Decompressor<R: BufRead> {
    None(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::Decoder<'static, R>),
}

impl<R: BufRead> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decompressor::None(r) => r.read(buf),
            Decompressor::Gzip(r) => r.read(buf),
            Decompressor::Zstd(r) => r.read(buf),
        }
    }
}

/// Reads a stored layer as its uncompressed tar stream, whatever its compression
/// (detected from the first bytes), computing the diffID as the tar is read and refusing
/// to grow past `limit` uncompressed bytes.
pub struct LayerReader<R: Read> {
    inner: HashingReader<Decompressor<BufReader<R>>>,
    limit: u64,
    compression: Compression,
}

/// The name of a compression berth does not read, from the stream's first bytes: told
/// apart so that the error says so, instead of a tar reader's complaint about garbage.
fn unreadable_compression(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Some("xz");
    }
    if head.len() >= 4 && head.starts_with(b"BZh") && head[3].is_ascii_digit() {
        return Some("bzip2");
    }
    None
}

impl<R: Read> LayerReader<R> {
    /// Opens `raw` (a compressed or plain layer), with a cap on the uncompressed size.
    pub fn new(raw: R, limit: u64) -> Result<Self> {
        let mut buffered = BufReader::with_capacity(256 * 1024, raw);
        let head = buffered.fill_buf().map_err(|e| Error::io("read layer header", e))?;
        if let Some(kind) = unreadable_compression(head) {
            let reason = format!("{kind}-compressed; berth reads plain, gzip and zstd tars (decompress it first)");
            return Err(Error::io("read layer header", io::Error::new(io::ErrorKind::InvalidData, reason)));
        }
        let compression = Compression::detect(head);
        let dec = match compression {
            Compression::None => Decompressor::None(buffered),
            Compression::Gzip => Decompressor::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered))),
            Compression::Zstd => Decompressor::Zstd(
                zstd::Decoder::with_buffer(buffered).map_err(|e| Error::io("start zstd decoder", e))?,
            ),
        };
        Ok(LayerReader { inner: HashingReader::new(dec, Algorithm::Sha256), limit, compression })
    }

    /// The compression found in the stream.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Reads to the end (trailing tar padding included) and returns the diffID and size.
    pub fn finish(mut self) -> Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| Error::io("read layer", e))?;
        let (_, diff_id, size) = self.inner.finish();
        Ok((diff_id, size))
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.inner.count() > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, Error::LayerTooLarge { limit: self.limit }));
        }
        Ok(n)
    }
}

/// Computes a stored layer's diffID by decompressing it.
pub fn diff_id_of(raw: impl Read) -> Result<Digest> {
    Ok(LayerReader::new(raw, u64::MAX)?.finish()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{ContentStore, Expected, LocalStore};

    #[test]
    fn an_ingest_layer_takes_the_ingests_digest_and_commits_under_it() {
        // Large enough that the store's hash moves to its own thread (content/beside.rs).
        let tar = tar_of(&[("big", &vec![7u8; 9 << 20]), ("small", b"x")]);
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let ingest = store.writer(Algorithm::Sha256).unwrap();
            let mut w = LayerWriter::into_ingest(ingest, c, Some(1)).unwrap();
            w.write_all(&tar).unwrap();
            let (ingest, info) = w.finish().unwrap();
            let digest = ingest.commit(Expected::exactly(&info.digest, info.size)).unwrap();
            let mut stored = Vec::new();
            store.reader(&digest).unwrap().read_to_end(&mut stored).unwrap();
            assert_eq!(stored.len() as u64, info.size, "{c:?}");
            assert_eq!(Digest::of(&stored), info.digest, "{c:?}: the digest of what was stored");
            assert_eq!(Digest::of(&tar), info.diff_id, "{c:?}: the diffID");
            assert_eq!(info.uncompressed_size, tar.len() as u64);
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn xz_and_bzip2_are_named_not_read_as_garbage() {
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4];
        let err = LayerReader::new(&xz[..], u64::MAX).err().map(|e| oci_error_text(&e)).unwrap_or_default();
        assert!(err.contains("xz-compressed"), "{err}");
        let err = LayerReader::new(&b"BZh91AY&SY"[..], u64::MAX).err().map(|e| oci_error_text(&e)).unwrap_or_default();
        assert!(err.contains("bzip2-compressed"), "{err}");
        assert!(LayerReader::new(&b"BZh is a plain file"[..], u64::MAX).is_ok(), "only the real magic");
    }

    fn oci_error_text(e: &Error) -> String {
        crate::error::chain(e)
    }

    #[test]
    fn levels_trade_size_for_speed_and_keep_the_content() {
        let text: Vec<u8> =
            (0..200_000u32).flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes()).collect();
        let tar = tar_of(&[("log", &text)]);
        for c in [Compression::Gzip, Compression::Zstd] {
            let sized = |level| {
                let mut w = LayerWriter::with_level(Vec::new(), c, Some(level), 2).unwrap();
                w.write_all(&tar).unwrap();
                let (blob, info) = w.finish().unwrap();
                assert_eq!(info.diff_id, Digest::of(&tar), "{c:?} level {level}");
                let mut back = Vec::new();
                LayerReader::new(&blob[..], u64::MAX).unwrap().read_to_end(&mut back).unwrap();
                assert_eq!(back, tar, "{c:?} level {level} round-trips");
                blob.len()
            };
            assert!(sized(1) > sized(9), "{c:?}: a higher level gives a smaller blob");
        }
    }

    #[test]
    fn one_pass_gives_both_digests_for_every_compression() {
        let tar = tar_of(&[("a", b"hello"), ("b/c", &[7u8; 300_000])]);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut w = LayerWriter::with_threads(Vec::new(), c, 2).unwrap();
            w.write_all(&tar).unwrap();
            let (blob, info) = w.finish().unwrap();
            assert_eq!(info.diff_id, Digest::of(&tar), "{c:?}");
            assert_eq!(info.uncompressed_size, tar.len() as u64);
            assert_eq!(info.digest, Digest::of(&blob));
            assert_eq!(info.size, blob.len() as u64);
            assert_eq!(Compression::detect(&blob), c);
            let mut r = LayerReader::new(&blob[..], u64::MAX).unwrap();
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == tar);
            assert_eq!(diff_id_of(&blob[..]).unwrap(), info.diff_id);
        }
    }

    #[test]
    fn reader_refuses_a_layer_past_its_cap() {
        let tar = tar_of(&[("big", &[0u8; 100_000])]);
        let mut w = LayerWriter::with_threads(Vec::new(), Compression::Gzip, 1).unwrap();
        w.write_all(&tar).unwrap();
        let (blob, _) = w.finish().unwrap();
        let err = LayerReader::new(&blob[..], 50_000).unwrap().finish().unwrap_err();
        let msg = crate::error::chain(&err);
        assert!(msg.contains("layer too large"), "{msg}");
    }

    #[test]
    fn zstd_output_does_not_depend_on_the_core_count() {
        let tar = tar_of(&[("a", &[3u8; 2_000_000]), ("b", b"tail")]);
        let digests: Vec<Digest> = [1, 2, 4]
            .iter()
            .map(|&threads| {
                let mut w = LayerWriter::with_threads(Vec::new(), Compression::Zstd, threads).unwrap();
                w.write_all(&tar).unwrap();
                w.finish().unwrap().1.digest
            })
            .collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    }

    #[test]
    fn media_types_map_both_ways() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::from_media_type(c.oci_media_type()), Some(c));
            if let Some(d) = c.docker_media_type() {
                assert_eq!(Compression::from_media_type(d), Some(c));
            }
        }
        assert_eq!(Compression::from_media_type(media::OCI_CONFIG), None);
    }
}
