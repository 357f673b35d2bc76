//! A blob's hash computed beside the writer: past the first few MiB, the bytes go to a thread
//! of their own in 1 MiB chunks, so that a large layer's SHA-256 runs at the same time as the
//! work that produces it (a COPY's tar, a compressor) instead of on the same core after it.
//! Small blobs (manifests, configs) are hashed inline and start no thread.

use std::mem;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use crate::digest::{Algorithm, Digest, Hasher};

/// Bytes hashed inline before the thread starts.
const INLINE: u64 = 4 << 20;
/// Bytes per message to the thread.
const CHUNK: usize = 1 << 20;
/// Chunks in flight: bounds the memory a fast writer can run ahead with.
const IN_FLIGHT: usize = 4;

/// What the thread is sent.
enum Msg {
    /// More bytes; the buffer comes back for reuse.
    Bytes(Vec<u8>),
    /// The digest so far, these bytes included (without feeding them for good).
    Peek(Vec<u8>, Sender<Digest>),
}

/// An incremental hash that moves to a thread of its own once the blob is large.
pub(super) struct BesideHasher {
    state: State,
    count: u64,
}

enum State {
    Inline(Hasher),
    Thread {
        pending: Vec<u8>,
        to: SyncSender<Msg>,
        spare: Receiver<Vec<u8>>,
        thread: JoinHandle<Hasher>,
    },
    /// Only between a move out of the state and the next one in.
    Taken,
}

impl BesideHasher {
    /// A hash with `algorithm`, inline for now.
    pub(super) fn new(algorithm: Algorithm) -> Self {
        BesideHasher { state: State::Inline(algorithm.hasher()), count: 0 }
    }

    /// Feeds bytes.
    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.count += bytes.len() as u64;
        match &mut self.state {
            State::Inline(h) => {
                h.update(bytes);
                if self.count >= INLINE {
                    self.start_thread();
                }
            }
            State::Thread { pending, to, spare, thread: _ } => {
                pending.extend_from_slice(bytes);
                if pending.len() >= CHUNK {
                    let next = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(2 * CHUNK));
                    let full = mem::replace(pending, next);
                    if to.send(Msg::Bytes(full)).is_err() {
                        self.rethrow();
                    }
                }
            }
            State::Taken => unreachable!("the state is always put back"),
        }
    }

    /// Bytes fed so far.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything fed so far.
    pub(super) fn digest(&self) -> Digest {
        match &self.state {
            State::Inline(h) => h.clone().finish(),
            State::Thread { pending, to, .. } => {
                let (reply, answer) = mpsc::channel();
                let asked = to.send(Msg::Peek(pending.clone(), reply)).is_ok();
                match answer.recv() {
                    Ok(d) if asked => d,
                    // The thread died: finish() rethrows its panic; no digest is made up here.
                    _ => panic!("the hashing thread of an ingest died"),
                }
            }
            State::Taken => unreachable!("the state is always put back"),
        }
    }

    /// The digest of everything fed.
    pub(super) fn finish(mut self) -> Digest {
        match mem::replace(&mut self.state, State::Taken) {
            State::Inline(h) => h.finish(),
            State::Thread { pending, to, spare: _, thread } => {
                let _ = to.send(Msg::Bytes(pending)); // a dead thread's panic comes out of join
                drop(to);
                match thread.join() {
                    Ok(h) => h.finish(),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            State::Taken => unreachable!("the state is always put back"),
        }
    }

    fn start_thread(&mut self) {
        let State::Inline(mut h) = mem::replace(&mut self.state, State::Taken) else {
            unreachable!("started from the inline state")
        };
        let (to, from) = mpsc::sync_channel::<Msg>(IN_FLIGHT);
        let (back, spare) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for msg in from {
                match msg {
                    Msg::Bytes(mut v) => {
                        h.update(&v);
                        v.clear();
                        let _ = back.send(v); // the writer may be gone; the buffer is dropped then
                    }
                    Msg::Peek(v, reply) => {
                        let mut c = h.clone();
                        c.update(&v);
                        let _ = reply.send(c.finish());
                    }
                }
            }
            h
        });
        self.state = State::Thread { pending: Vec::with_capacity(2 * CHUNK), to, spare, thread };
    }

    /// The thread is gone before its time: only a panic ends it early; raise it here.
    fn rethrow(&mut self) -> ! {
        match mem::replace(&mut self.state, State::Taken) {
            State::Thread { thread, .. } => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(_) => panic!("the hashing thread of an ingest ended early"),
            },
            _ => unreachable!("only the thread state sends"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn whole(data: &[u8]) -> Digest {
        let mut h = Algorithm::Sha256.hasher();
        h.update(data);
        h.finish()
    }

    #[test]
    fn same_digest_as_one_pass_across_the_move_to_the_thread() {
        let data = bytes(INLINE as usize + 3 * CHUNK + 12_345);
        for piece in [1, 4095, 65_536, 1_000_003] {
            let mut h = BesideHasher::new(Algorithm::Sha256);
            for c in data.chunks(piece) {
                h.update(c);
            }
            assert_eq!(h.finish(), whole(&data), "pieces of {piece}");
        }
    }

    #[test]
    fn digest_so_far_is_right_inline_and_on_the_thread_and_does_not_feed_twice() {
        let data = bytes(INLINE as usize + 2 * CHUNK + 777);
        let mut h = BesideHasher::new(Algorithm::Sha256);
        let small = 1000;
        h.update(&data[..small]);
        assert_eq!(h.digest(), whole(&data[..small]));
        let mid = INLINE as usize + CHUNK + 10;
        h.update(&data[small..mid]);
        assert!(matches!(h.state, State::Thread { .. }));
        assert_eq!(h.digest(), whole(&data[..mid]));
        assert_eq!(h.digest(), whole(&data[..mid]), "a second peek sees the same bytes");
        h.update(&data[mid..]);
        assert_eq!(h.finish(), whole(&data));
    }

    #[test]
    fn small_blobs_start_no_thread() {
        let mut h = BesideHasher::new(Algorithm::Sha512);
        h.update(b"{}");
        assert!(matches!(h.state, State::Inline(_)));
        let mut one = Algorithm::Sha512.hasher();
        one.update(b"{}");
        assert_eq!(h.finish(), one.finish());
    }
}
