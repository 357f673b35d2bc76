//! Skeleton layers (cache format 2): the layer of a `COPY` from the build context, carried
//! by a `mode=max` cache as its tar with the files' contents left out.
//!
//! Such a layer is made of files the next runner has in its own checkout: a hit on the
//! step means the files the COPY selects have the same contents there (their digests are in
//! the key). So the cache carries the tar's headers and, in place of each file's bytes, the
//! file's size and sha256; the runner that needs the layer writes the tar again with the
//! bytes of its own context files of those digests, and checks the result against the
//! layer's diffID. The headers keep the first runner's times and owners, so the layer is
//! the same bytes whatever the second checkout's mtimes are. A layer the size of a source
//! tree travels as a few hundred bytes per file, and is neither compressed nor uploaded.
//!
//! The stream, gzip-compressed: the line `berth-skeleton 1\n`, then segments, each a tag
//! byte: `R` + u32 (little-endian) n + n bytes copied as they are; `F` + u64 size + the 32
//! bytes of a sha256: a file's contents; `E`: the end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci::digest::{Algorithm, Digest, Hasher};

use oci::content::{BlobWriter, Expected};

use crate::error::{Error, Result};
use crate::graph::{CopyFrom, CopySrc, Graph, Layer, Op, Vertex, VertexId};

/// The media type of a skeleton blob in a cache manifest.
pub const MEDIA_TYPE: &str = "application/vnd.berth.build-cache.skeleton.v1+gzip";
/// The name a layer's skeleton is remembered under, beside its compressed twins.
pub const TWIN_NAME: &str = "skeleton-1";

const MAGIC: &[u8] = b"berth-skeleton 1\n";
/// Raw bytes gathered before they are written as one segment.
const RAW_CHUNK: usize = 64 * 1024;
/// The largest PAX extended header read for a `size` record; a larger one is copied and
/// the skeleton given up (berth's own tars never write one).
const MAX_PAX: u64 = 1 << 20;

/// True for a step whose layer a `mode=max` cache may carry as a skeleton when the final
/// image does not hold it: a COPY of paths from the build context (never an ADD, which may
/// unpack an archive whose files are not the context's).
pub fn eligible(v: &Vertex) -> bool {
    matches!(&v.op, Op::Copy(c) if c.from == CopyFrom::Context
        && !c.unpack_archives
        && !c.sources.is_empty()
        && c.sources.iter().all(|s| matches!(s, CopySrc::Path(_))))
}

/// By vertex of `graph`: whether a `mode=max` export may carry its layer as a skeleton,
/// an [`eligible`] step outside the chains of the final images `targets`.
pub fn candidates(graph: &Graph, targets: &[VertexId]) -> Vec<bool> {
    let chain: std::collections::HashSet<VertexId> = graph.chains(targets).into_iter().collect();
    graph.vertices.iter().enumerate().map(|(v, vertex)| !chain.contains(&v) && eligible(vertex)).collect()
}

/// Files of the build context by content: what a skeleton's references name. Filled as the
/// context's files are hashed for the steps' keys.
#[derive(Debug, Default)]
pub struct ContextFiles {
    by_digest: Mutex<HashMap<Digest, PathBuf>>,
}

impl ContextFiles {
    /// Notes that the context file `path` has the contents `digest`.
    pub fn note(&self, digest: &Digest, path: &Path) {
        let mut map = self.by_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(digest.clone()).or_insert_with(|| path.to_owned());
    }

    /// A context file with the contents `digest`, when this build hashed one.
    pub fn find(&self, digest: &Digest) -> Option<PathBuf> {
        self.by_digest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(digest).cloned()
    }
}

/// Where the tar stream is: in a header, or in the data of an entry.
enum At {
    /// Gathering a 512-byte header.
    Header,
    /// In a regular file's contents: what is left, and their hash so far.
    File { size: u64, left: u64, hash: Hasher, pad: u64 },
    /// In a regular file's contents whose digest the copy that wrote it gave: skipped.
    Skip { left: u64, pad: u64 },
    /// In a PAX extended header's or a GNU long name's data (kept to read the next entry's
    /// size and name from).
    Meta { kind: u8, left: u64, data: Vec<u8>, pad: u64 },
    /// Bytes copied as they are.
    Raw { left: u64 },
}

/// Writes the skeleton of the tar written into it. [`Writer::finish`] says whether every
/// file's contents were found among the context's files; when not, the skeleton is no use.
pub struct Writer<'f, W: Write> {
    out: flate2::write::GzEncoder<W>,
    files: &'f ContextFiles,
    at: At,
    header: Vec<u8>,
    raw: Vec<u8>,
    /// The size a PAX header set for the next entry.
    pax_size: Option<u64>,
    /// The name a PAX header or a GNU long name entry set for the next entry.
    long_name: Option<String>,
    /// Digests and sizes of files by their path in the tar, as the copy that wrote them
    /// knew them: those files are not hashed again.
    hints: HashMap<String, (Digest, u64)>,
    /// A file whose contents are not a context file's (or a tar that cannot be followed).
    missing: Option<String>,
}

impl<'f, W: Write> Writer<'f, W> {
    /// A writer into `out`, naming files by the digests `files` knows.
    pub fn new(out: W, files: &'f ContextFiles) -> std::io::Result<Self> {
        let mut out = flate2::write::GzEncoder::new(out, flate2::Compression::new(1));
        out.write_all(MAGIC)?;
        Ok(Writer {
            out,
            files,
            at: At::Header,
            header: Vec::with_capacity(512),
            raw: Vec::with_capacity(RAW_CHUNK),
            pax_size: None,
            long_name: None,
            hints: HashMap::new(),
            missing: None,
        })
    }

    /// Takes the digest and size of the files at these paths (below the layer's root) as
    /// known: a COPY hashed them for its key. A wrong one makes a skeleton that writes
    /// another tar, which the runner that rebuilds it refuses by the layer's diffID.
    pub fn with_hints(mut self, hints: impl IntoIterator<Item = (String, Digest, u64)>) -> Self {
        self.hints = hints.into_iter().map(|(p, d, n)| (clean_name(&p), (d, n))).collect();
        self
    }

    /// Ends the stream: the sink, and why the skeleton cannot stand for the tar when it
    /// cannot (a file whose contents no context file has, or a tar cut short).
    pub fn finish(mut self) -> std::io::Result<(W, Option<String>)> {
        if !matches!(self.at, At::Header) || !self.header.is_empty() {
            self.missing.get_or_insert_with(|| "the tar ends inside an entry".into());
        }
        self.flush_raw()?;
        self.out.write_all(b"E")?;
        Ok((self.out.finish()?, self.missing))
    }

    fn flush_raw(&mut self) -> std::io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        self.out.write_all(b"R")?;
        self.out.write_all(&(self.raw.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.raw)?;
        self.raw.clear();
        Ok(())
    }

    fn copy(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.raw.extend_from_slice(bytes);
        if self.raw.len() >= RAW_CHUNK {
            self.flush_raw()?;
        }
        Ok(())
    }

    /// A whole header: copied, and what follows it decided.
    fn header_done(&mut self) -> std::io::Result<()> {
        let h = std::mem::take(&mut self.header);
        self.copy(&h)?;
        if h.iter().all(|b| *b == 0) {
            return Ok(()); // an end-of-archive block
        }
        let header = tar::Header::from_byte_slice(&h);
        let kind = header.entry_type().as_byte();
        // What a PAX header or a long name says is of the next entry that is not one itself.
        let meta = matches!(kind, b'x' | b'g' | b'L' | b'K');
        let own_size = header.entry_size().ok();
        let size = match meta {
            true => own_size,
            false => self.pax_size.take().or(own_size),
        };
        let Some(size) = size else {
            self.missing.get_or_insert_with(|| "a tar header whose size does not parse".into());
            self.at = At::Raw { left: u64::MAX };
            return Ok(());
        };
        let name = match meta {
            true => String::new(),
            false => {
                self.long_name.take().unwrap_or_else(|| String::from_utf8_lossy(&header.path_bytes()).into_owned())
            }
        };
        let pad = (512 - size % 512) % 512;
        self.at = match kind {
            b'0' | 0 | b'7' if size > 0 => match self.known(&name, size) {
                Some(digest) => {
                    self.reference(size, &digest)?;
                    At::Skip { left: size, pad }
                }
                None => At::File { size, left: size, hash: Algorithm::Sha256.hasher(), pad },
            },
            kind @ (b'x' | b'L') if size <= MAX_PAX => At::Meta { kind, left: size, data: Vec::new(), pad },
            _ => At::Raw { left: size + pad },
        };
        if let (b'x' | b'L', At::Raw { .. }) = (kind, &self.at) {
            self.missing.get_or_insert_with(|| "a PAX header or long name too large to read".into());
        }
        Ok(())
    }

    /// The digest of the file `name` of `size` bytes, when the copy gave it and the context
    /// has a file of that digest.
    fn known(&self, name: &str, size: u64) -> Option<Digest> {
        let (digest, n) = self.hints.get(&clean_name(name))?;
        (*n == size && self.files.find(digest).is_some()).then(|| digest.clone())
    }

    /// A file's contents, by reference.
    fn reference(&mut self, size: u64, digest: &Digest) -> std::io::Result<()> {
        self.flush_raw()?;
        self.out.write_all(b"F")?;
        self.out.write_all(&size.to_le_bytes())?;
        let mut sum = [0u8; 32];
        hex::decode_to_slice(digest.hex(), &mut sum).map_err(|e| invalid(&format!("{digest}: {e}")))?;
        self.out.write_all(&sum)
    }

    /// A PAX header's or a long name's data, read whole: what it says of the next entry.
    fn meta_done(&mut self, kind: u8, data: &[u8]) {
        match kind {
            b'x' => {
                let size = pax_record(data, b"size").and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                self.pax_size = size.or(self.pax_size);
                if let Some(path) = pax_record(data, b"path") {
                    self.long_name = Some(String::from_utf8_lossy(path).into_owned());
                }
            }
            _ => {
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                self.long_name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
        }
    }

    /// A file's contents are all seen: a reference in their place.
    fn file_done(&mut self, size: u64, hash: Hasher, pad: u64) -> std::io::Result<()> {
        let digest = hash.finish();
        if self.files.find(&digest).is_none() {
            self.missing
                .get_or_insert_with(|| format!("a file of {size} bytes ({digest}) is not in the build context"));
        }
        self.reference(size, &digest)?;
        self.at = At::Raw { left: pad };
        Ok(())
    }
}

impl<W: Write> Write for Writer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match &mut self.at {
                At::Header => {
                    let n = (512 - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.header.len() == 512 {
                        self.header_done()?;
                    }
                }
                At::File { size, left, hash, pad } => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    hash.update(&rest[..n]);
                    *left -= n as u64;
                    rest = &rest[n..];
                    if *left == 0 {
                        let (size, pad) = (*size, *pad);
                        let At::File { hash, .. } = std::mem::replace(&mut self.at, At::Header) else { unreachable!() };
                        self.file_done(size, hash, pad)?;
                    }
                }
                At::Skip { left, pad } => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    *left -= n as u64;
                    rest = &rest[n..];
                    if *left == 0 {
                        self.at = At::Raw { left: *pad };
                    }
                }
                At::Meta { kind, left, data, pad } => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    data.extend_from_slice(&rest[..n]);
                    *left -= n as u64;
                    let (chunk, done, kind, pad) = (&rest[..n], *left == 0, *kind, *pad);
                    rest = &rest[n..];
                    if done {
                        let At::Meta { data, .. } = std::mem::replace(&mut self.at, At::Raw { left: pad }) else {
                            unreachable!()
                        };
                        self.meta_done(kind, &data);
                    }
                    self.copy(chunk)?;
                }
                At::Raw { left } => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.at = At::Header;
                    }
                    let chunk = &rest[..n];
                    rest = &rest[n..];
                    self.copy(chunk)?;
                }
            }
            if let At::Raw { left: 0 } = self.at {
                self.at = At::Header;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of a record of a PAX extended header, when it has one. Records are `LEN
/// key=value\n`, LEN counting the whole record, so a value may hold newlines or any byte.
fn pax_record<'d>(mut data: &'d [u8], key: &[u8]) -> Option<&'d [u8]> {
    while !data.is_empty() {
        let space = data.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        let record = data.get(space + 1..len)?.strip_suffix(b"\n")?;
        let eq = record.iter().position(|b| *b == b'=')?;
        if &record[..eq] == key {
            return Some(&record[eq + 1..]);
        }
        data = &data[len..];
    }
    None
}

/// A path in a tar as a hint names it: no leading `./` or `/`, no trailing `/`.
fn clean_name(p: &str) -> String {
    p.trim_start_matches("./").trim_matches('/').to_owned()
}

/// Ends a skeleton written into a content store's ingest for the plain layer `diff_id` of
/// `tar_size` bytes: stored and described, or dropped (None) when it cannot stand for the
/// layer.
pub fn commit(w: Writer<'_, Box<dyn BlobWriter>>, diff_id: &Digest, tar_size: u64) -> Result<Option<Layer>> {
    let (ingest, missing) = w.finish().map_err(Error::io("finish a skeleton"))?;
    if missing.is_some() || tar_size <= 1024 {
        ingest.abort().map_err(Error::image("drop a skeleton"))?;
        return Ok(None);
    }
    let (digest, size) = (ingest.digest(), ingest.written());
    ingest.commit(Expected::exactly(&digest, size)).map_err(Error::image("store a skeleton"))?;
    Ok(Some(Layer { digest, size, diff_id: diff_id.clone(), media_type: MEDIA_TYPE.to_owned() }))
}

/// Writes the tar a skeleton stands for into `out`, each file's contents read from the
/// context file `files` knows by its digest. The caller checks the result against the
/// layer's diffID: a context file that changed since it was hashed makes another tar.
pub fn rebuild(skeleton: impl Read, files: &ContextFiles, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut r = std::io::BufReader::new(flate2::read::GzDecoder::new(skeleton));
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(invalid("not a berth layer skeleton"));
    }
    let mut written = 0u64;
    let short = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => invalid("the skeleton ends early"),
        _ => e,
    };
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(short)?;
        match tag[0] {
            b'R' => {
                let mut n = [0u8; 4];
                r.read_exact(&mut n).map_err(short)?;
                let n = u64::from(u32::from_le_bytes(n));
                written += copy_exactly(&mut (&mut r).take(n), out, n, "a skeleton's segment")?;
            }
            b'F' => {
                let mut size = [0u8; 8];
                let mut sum = [0u8; 32];
                r.read_exact(&mut size).map_err(short)?;
                r.read_exact(&mut sum).map_err(short)?;
                let size = u64::from_le_bytes(size);
                let digest = Digest::new(Algorithm::Sha256, &hex::encode(sum)).map_err(|e| invalid(&e.to_string()))?;
                let path = files
                    .find(&digest)
                    .ok_or_else(|| invalid(&format!("no file of the build context has the contents {digest}")))?;
                // The file the key hashed, not one a symlink put in its place since.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)?;
                let what = path.display().to_string();
                written += copy_exactly(&mut file.take(size + 1), out, size, &what)?;
            }
            b'E' => return Ok(written),
            other => return Err(invalid(&format!("unknown skeleton segment {other:#04x}"))),
        }
    }
}

/// The tar of a skeleton as it is written again on a thread of its own, read through a
/// pipe: a layer unpacked from it is never stored whole. When the writing fails, the tar
/// ends early and the read that finds the end returns the writer's error.
pub struct Rebuilt {
    pipe: std::io::PipeReader,
    failed: std::sync::Arc<Mutex<Option<String>>>,
}

impl Rebuilt {
    /// Starts writing the tar of `skeleton` from `files`.
    pub fn start(skeleton: impl Read + Send + 'static, files: std::sync::Arc<ContextFiles>) -> Result<Rebuilt> {
        let (pipe, mut writer) = std::io::pipe().map_err(Error::io("make a pipe"))?;
        let failed = std::sync::Arc::new(Mutex::new(None));
        let slot = std::sync::Arc::clone(&failed);
        std::thread::spawn(move || {
            if let Err(e) = rebuild(skeleton, &files, &mut writer) {
                // Before the pipe closes (`writer` drops after this): the reader sees it.
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            }
        });
        Ok(Rebuilt { pipe, failed })
    }
}

impl Read for Rebuilt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(why) = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                return Err(invalid(&format!("writing the layer from its skeleton: {why}")));
            }
        }
        Ok(n)
    }
}

/// Copies `from` to `out`, which must give exactly `n` bytes.
fn copy_exactly(from: &mut dyn Read, out: &mut dyn Write, n: u64, what: &str) -> std::io::Result<u64> {
    let copied = std::io::copy(from, out)?;
    if copied != n {
        return Err(invalid(&format!("{what}: {copied} bytes where the skeleton says {n}")));
    }
    Ok(copied)
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar as berth's layers hold them: a directory, files (one large enough for several
    /// writes, one empty), a symlink, and a path long enough for a PAX header.
    fn tar_of(dir: &Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        b.append_dir_all("src", dir).unwrap();
        b.into_inner().unwrap()
    }

    fn context(dir: &Path) -> ContextFiles {
        let files = ContextFiles::default();
        for e in walk(dir) {
            if e.symlink_metadata().unwrap().is_file() {
                files.note(&Digest::of(&std::fs::read(&e).unwrap()), &e);
            }
        }
        files
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }

    fn skeleton(tar: &[u8], files: &ContextFiles, chunk: usize) -> std::result::Result<Vec<u8>, String> {
        let mut w = Writer::new(Vec::new(), files).unwrap();
        for piece in tar.chunks(chunk) {
            w.write_all(piece).unwrap();
        }
        match w.finish().unwrap() {
            (out, None) => Ok(out),
            (_, Some(why)) => Err(why),
        }
    }

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("c".repeat(90)), b"long path\n").unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("big.bin"), &big).unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::fs::write(dir.path().join("main.c"), b"int main() { return 0; }\n").unwrap();
        std::os::unix::fs::symlink("main.c", dir.path().join("link.c")).unwrap();
        dir
    }

    #[test]
    fn a_skeleton_writes_the_same_tar_again_from_the_context_at_a_fraction_of_its_size() {
        let dir = project();
        let tar = tar_of(dir.path());
        let files = context(dir.path());
        for chunk in [1, 511, 512, 4096, 1 << 20] {
            let skel = skeleton(&tar, &files, chunk).expect("every file is in the context");
            assert!(skel.len() < tar.len() / 20, "{} bytes for a tar of {}", skel.len(), tar.len());
            let mut again = Vec::new();
            let n = rebuild(skel.as_slice(), &files, &mut again).unwrap();
            assert_eq!(n, tar.len() as u64);
            assert!(again == tar, "written in writes of {chunk} bytes, the tar comes back byte for byte");
        }
    }

    #[test]
    fn a_file_the_context_lacks_makes_no_skeleton_and_a_changed_one_fails_or_changes_the_tar() {
        let dir = project();
        let tar = tar_of(dir.path());
        let files = context(dir.path());
        let partial = ContextFiles::default();
        let why = skeleton(&tar, &partial, 4096).unwrap_err();
        assert!(why.contains("not in the build context"), "{why}");
        // The runner's file changed after it was hashed: a size that differs is an error,
        // the same size makes another tar (the caller's diffID check refuses it).
        let skel = skeleton(&tar, &files, 4096).unwrap();
        std::fs::write(dir.path().join("main.c"), b"int main() { return 1; }\n").unwrap();
        let mut again = Vec::new();
        rebuild(skel.as_slice(), &files, &mut again).unwrap();
        assert!(again != tar && again.len() == tar.len());
        std::fs::write(dir.path().join("main.c"), b"int main() { return 10; }\n").unwrap();
        let err = rebuild(skel.as_slice(), &files, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("bytes where the skeleton says"), "{err}");
    }

    #[test]
    fn a_copys_hints_are_taken_for_the_files_they_name_and_a_wrong_one_makes_another_tar() {
        let dir = project();
        let tar = tar_of(dir.path());
        let files = context(dir.path());
        let main = Digest::of(b"int main() { return 0; }\n");
        let other = Digest::of(b"int main() { return 7; }\n");
        files.note(&other, &dir.path().join("other.c"));
        std::fs::write(dir.path().join("other.c"), b"int main() { return 7; }\n").unwrap();
        let with = |hint: (&str, &Digest, u64)| {
            let mut w = Writer::new(Vec::new(), &files).unwrap().with_hints([(hint.0.into(), hint.1.clone(), hint.2)]);
            w.write_all(&tar).unwrap();
            let (skel, missing) = w.finish().unwrap();
            assert_eq!(missing, None);
            let mut again = Vec::new();
            rebuild(skel.as_slice(), &files, &mut again).unwrap();
            again
        };
        assert!(with(("./src/main.c", &main, 25)) == tar, "a right hint: the same tar");
        // The copy's digest is taken as it is (the file is not hashed again): a wrong one
        // of the same size writes the other file's bytes, which the diffID check refuses.
        assert!(with(("src/main.c", &other, 25)) != tar);
        assert!(with(("src/main.c", &other, 26)) == tar, "a hint of another size is not used");
    }

    #[test]
    fn a_tar_written_on_its_thread_reads_whole_or_ends_in_the_writers_error() {
        let dir = project();
        let tar = tar_of(dir.path());
        let files = std::sync::Arc::new(context(dir.path()));
        let skel = skeleton(&tar, &files, 4096).unwrap();
        let mut again = Vec::new();
        Rebuilt::start(std::io::Cursor::new(skel.clone()), files).unwrap().read_to_end(&mut again).unwrap();
        assert!(again == tar);
        // Another runner's context without those files: the reader gets the reason.
        let empty = std::sync::Arc::new(ContextFiles::default());
        let err = Rebuilt::start(std::io::Cursor::new(skel), empty).unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no file of the build context has the contents"), "{err}");
    }

    #[test]
    fn pax_records_are_read_by_their_length_and_belong_to_the_next_real_entry() {
        let record = |k: &str, v: &[u8]| {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut n = body.len() + 2;
            while format!("{n} ").len() + body.len() != n {
                n += 1;
            }
            [format!("{n} ").into_bytes(), body].concat()
        };
        // A value holding what looks like another record is one value.
        let data = [record("SCHILY.xattr.user.x", b"a\n10 size=3\n"), record("path", b"src/\xffname")].concat();
        assert_eq!(pax_record(&data, b"size"), None);
        assert_eq!(pax_record(&data, b"path"), Some(&b"src/\xffname"[..]));
        assert_eq!(pax_record(b"99 path=x\n", b"path"), None, "a length past the end");
        // A PAX size then a GNU long name: the size is the file's, not the name's.
        let files = ContextFiles::default();
        let mut w = Writer::new(Vec::new(), &files).unwrap();
        let header = |kind: u8, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::new(kind));
            h.set_size(size);
            h.set_cksum();
            h.as_bytes().to_vec()
        };
        let pax = record("size", b"5");
        let long = b"very/long/name\0".to_vec();
        let pad = |n: usize| vec![0u8; (512 - n % 512) % 512];
        let tar = [
            header(b'x', pax.len() as u64),
            pax.clone(),
            pad(pax.len()),
            header(b'L', long.len() as u64),
            long.clone(),
            pad(long.len()),
            header(b'0', 0),
            b"hello".to_vec(),
            pad(5),
            vec![0; 1024],
        ]
        .concat();
        w.write_all(&tar).unwrap();
        let (skel, missing) = w.finish().unwrap();
        assert!(missing.is_some_and(|m| m.contains("of 5 bytes")), "the file's 5 bytes were followed");
        let _ = skel;
    }

    #[test]
    fn a_hostile_skeleton_is_an_error_never_a_panic() {
        let files = ContextFiles::default();
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        let mut unknown = MAGIC.to_vec();
        unknown.extend_from_slice(b"F\x05\0\0\0\0\0\0\0");
        unknown.extend_from_slice(&[7u8; 32]);
        let mut long = MAGIC.to_vec();
        long.extend_from_slice(b"R\xff\xff\xff\xffshort");
        for bad in [b"not gzip".to_vec(), gz(b"berth-skeleton 9\n"), gz(&unknown), gz(&long), gz(MAGIC)] {
            assert!(rebuild(bad.as_slice(), &files, &mut Vec::new()).is_err());
        }
    }
}
