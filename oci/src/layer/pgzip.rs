//! A gzip encoder that compresses on all cores, as pigz does.
//!
//! Input is cut into blocks; worker threads deflate each block with the previous 32 KiB
//! as its dictionary and end it on a byte boundary (a sync flush), so the blocks
//! concatenate into one ordinary deflate stream. The caller's thread writes the blocks out
//! in order and combines their CRC-32s. Memory is bounded: at most two blocks per worker
//! are in flight, whatever the input size. Level 1 deflates with ISA-L (`isal.rs`), the
//! other levels with zlib-rs.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

const BLOCK: usize = 256 * 1024;
const DICT: usize = 32 * 1024;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Option<Arc<[u8]>>,
    last: bool,
}

struct Done {
    seq: u64,
    out: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
}

/// A `Write` that gzips its input on `threads` worker threads into `inner`.
///
/// Call [`ParGzEncoder::finish`] to write the trailer; dropping it without finishing
/// leaves a truncated stream.
pub struct ParGzEncoder<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, Done>,
    prev_tail: Option<Arc<[u8]>>,
    crc: crc32fast::Hasher,
    in_flight: usize,
    max_in_flight: usize,
    total_in: u64,
}

impl<W: Write> ParGzEncoder<W> {
    /// Starts an encoder at `level` (0-9) with `threads` workers (at least one).
    pub fn new(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let handle = std::thread::Builder::new().name(format!("gzip-{i}")).spawn(move || worker(rx, tx, level))?;
            workers.push(handle);
        }
        let mut enc = ParGzEncoder {
            inner: Some(inner),
            buf: Vec::with_capacity(BLOCK),
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            prev_tail: None,
            crc: crc32fast::Hasher::new(),
            in_flight: 0,
            max_in_flight: threads * 2,
            total_in: 0,
        };
        // Fixed header: no name, no mtime (reproducible), OS = unix.
        enc.inner_mut()?.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        Ok(enc)
    }

    fn inner_mut(&mut self) -> io::Result<&mut W> {
        self.inner.as_mut().ok_or_else(|| io::Error::other("gzip encoder already finished"))
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(if last { 0 } else { BLOCK }));
        let tail: Option<Arc<[u8]>> = (data.len() >= DICT).then(|| Arc::from(&data[data.len() - DICT..]));
        let dict = std::mem::replace(&mut self.prev_tail, tail);
        let job = Job { seq: self.next_seq, data, dict, last };
        self.next_seq += 1;
        while self.in_flight >= self.max_in_flight {
            self.drain_one()?;
        }
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        jobs.send(job).map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for one finished block and writes out whatever is now in order.
    fn drain_one(&mut self) -> io::Result<()> {
        let done = self.done.recv().map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.pending.insert(done.seq, done);
        while let Some(done) = self.pending.remove(&self.next_out) {
            let out = done.out?;
            self.crc.combine(&done.crc);
            self.inner_mut()?.write_all(&out)?;
            self.next_out += 1;
            self.in_flight -= 1;
        }
        Ok(())
    }

    /// Compresses what is buffered, writes the trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while self.in_flight > 0 {
            self.drain_one()?;
        }
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let mut inner = self.inner.take().ok_or_else(|| io::Error::other("gzip encoder already finished"))?;
        inner.write_all(&crc.to_le_bytes())?;
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        inner.write_all(&(self.total_in as u32).to_le_bytes())?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK {
                self.submit(false)?;
            }
        }
        self.total_in += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Blocks are written as soon as they are compressed in order; a flush cannot
        // force a partial block out without hurting the ratio, so it only flushes `inner`.
        self.inner_mut()?.flush()
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers' loops.
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _joined = w.join();
        }
    }
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, done: mpsc::Sender<Done>, level: u32) {
    // Level 1 goes to ISA-L (see isal.rs); other levels keep zlib's meaning of the number.
    let mut igzip = (level == 1).then(super::isal::Deflater::new);
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        let out = match igzip.as_mut() {
            Some(d) => d.block(&job.data, job.dict.as_deref(), job.last),
            None => deflate_block(&job.data, job.dict.as_deref(), job.last, level),
        };
        if done.send(Done { seq: job.seq, out, crc }).is_err() {
            return;
        }
    }
}

/// Deflates one block as raw deflate, primed with `dict`, ending with a sync flush
/// (or the final block marker when `last`).
fn deflate_block(data: &[u8], dict: Option<&[u8]>, last: bool, level: u32) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before = c.total_in();
        let status = c.compress_vec(input, &mut out, flush).map_err(io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is consumed and zlib left spare room.
            Status::Ok | Status::BufError if !last && input.is_empty() && out.len() < out.capacity() => break,
            Status::Ok | Status::BufError => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], threads: usize) {
        roundtrip_at(data, threads, 6);
        roundtrip_at(data, threads, 1);
    }

    fn roundtrip_at(data: &[u8], threads: usize, level: u32) {
        let mut enc = ParGzEncoder::new(Vec::new(), level, threads).unwrap();
        // Odd write sizes cross block boundaries.
        for chunk in data.chunks(77_777) {
            enc.write_all(chunk).unwrap();
        }
        let gz = enc.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(out == data, "round trip changed the data");
    }

    fn sample(len: usize) -> Vec<u8> {
        let words = ["layer ", "digest ", "manifest ", "blob ", "\n", "sha256 ", "0123 "];
        let mut x: u32 = 7;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            v.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
        }
        v.truncate(len);
        v
    }

    #[test]
    fn empty_input_is_a_valid_gzip() {
        roundtrip(b"", 2);
    }

    #[test]
    fn many_blocks_on_many_threads_round_trip() {
        roundtrip(&sample(5 * BLOCK + 12_345), 4);
        roundtrip(&sample(BLOCK), 1);
        roundtrip(&sample(BLOCK * 2), 3);
    }

    /// Bytes no deflate can shrink: every igzip block is stored, the worst case of the
    /// output bound.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_round_trip() {
        roundtrip(&noise(3 * BLOCK + 999), 2);
        let mut mixed = noise(BLOCK + 5);
        mixed.extend(sample(2 * BLOCK));
        mixed.extend(noise(DICT));
        roundtrip(&mixed, 3);
    }

    #[test]
    fn level_one_streams_are_read_by_gzip_itself() {
        // ISA-L's output checked by a decoder that is not flate2's: the gzip program.
        let mut data = sample(3 * BLOCK + 4321);
        data.extend(noise(BLOCK / 3));
        let mut enc = ParGzEncoder::new(Vec::new(), 1, 2).unwrap();
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.gz");
        std::fs::write(&path, &gz).unwrap();
        let out = std::process::Command::new("gzip").arg("-dc").arg(&path).output().expect("run gzip");
        assert!(out.status.success(), "gzip -dc: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == data, "gzip -dc gave other bytes");
    }

    #[test]
    fn level_one_uses_the_dictionary() {
        // Two blocks of noise, the second opening with the first one's last 16 KiB: only the
        // dictionary can find those bytes again.
        let mut data = noise(BLOCK);
        let tail = data[BLOCK - 16 * 1024..].to_vec();
        data.extend(tail);
        data.extend(noise(BLOCK - 16 * 1024).iter().map(|b| b ^ 0x5a));
        let mut enc = ParGzEncoder::new(Vec::new(), 1, 2).unwrap();
        enc.write_all(&data).unwrap();
        let par = enc.finish().unwrap().len();
        assert!(par < data.len() - 12 * 1024, "{par} bytes for {} bytes", data.len());
    }

    #[test]
    fn output_does_not_depend_on_the_number_of_threads() {
        // Blocks and dictionaries are cut at fixed offsets: a layer's digest is the same on
        // a 2-core runner and a 64-core one.
        let mut data = sample(5 * BLOCK + 17);
        data.extend(noise(BLOCK));
        for level in [1, 6] {
            let gz = |threads| {
                let mut enc = ParGzEncoder::new(Vec::new(), level, threads).unwrap();
                enc.write_all(&data).unwrap();
                enc.finish().unwrap()
            };
            assert!(gz(1) == gz(4), "level {level}: 1 and 4 threads differ");
        }
    }

    #[test]
    fn dictionary_keeps_the_ratio_close_to_single_stream() {
        let data = sample(4 * BLOCK);
        let mut enc = ParGzEncoder::new(Vec::new(), 6, 2).unwrap();
        enc.write_all(&data).unwrap();
        let par = enc.finish().unwrap().len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!((par as f64) < single as f64 * 1.05, "parallel {par} vs single {single}");
    }
}
