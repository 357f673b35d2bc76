//! Pairs chunks of different uploads so that their hashes share one loop. SHA-256 is a chain:
//! each step of one stream waits for the step before it, and the CPU's SHA unit idles between
//! them. Two streams' steps interleaved fill those gaps, hashing two chunks in about 0.8 of
//! the time of one after the other (bench/README.md, 2026-12-07). A registry taking many
//! uploads at once always has a second stream to hand: a chunk that finds another upload's
//! chunk waiting hashes both, and one that finds none waits a moment for a partner, but only
//! while other uploads are sending, so a lone upload never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oci::digest::Sha256;
use tokio::sync::oneshot;

use super::block::Block;

/// Chunks shorter than this hash alone: a wake-up costs more than pairing saves.
pub(super) const PAIR_MIN: usize = 64 << 10;
/// A chunk waits for a partner only when another upload's chunk started within this long,
/// and its own upload's previous chunk started longer ago: an upload sending faster than a
/// chunk a millisecond never waits, and one that waits in vain loses at most about as long
/// as its chunks take to come anyway.
const RECENT: Duration = Duration::from_millis(1);
/// The longest a chunk waits for a partner (tokio's timer wheel rounds up to its next tick,
/// a millisecond).
const WAIT: Duration = Duration::from_micros(500);

/// One upload's chunk to hash and copy into its block, with the running hash; it may go
/// through the loop in parts, paired with different chunks.
pub(super) struct Job {
    hash: Sha256,
    src: Bytes,
    block: Block,
    /// Where `src` goes in the block.
    at: usize,
    /// Bytes of `src` hashed and copied so far.
    done: usize,
}

impl Job {
    /// A job for `src`, which the block takes at its end (it must have room).
    pub(super) fn new(hash: Sha256, src: Bytes, mut block: Block) -> Job {
        let at = block.bytes().len();
        block.extend(src.len());
        Job { hash, src, block, at, done: 0 }
    }

    /// The running hash and the block, once done.
    pub(super) fn into_parts(self) -> (Sha256, Block) {
        debug_assert_eq!(self.done, self.src.len(), "a job is given back done");
        (self.hash, self.block)
    }

    /// Bytes still to hash.
    fn left(&self) -> usize {
        self.src.len() - self.done
    }

    /// The next `n` bytes to hash and where they go, and the hash.
    fn next(&mut self, n: usize) -> (&mut Sha256, &[u8], &mut [u8]) {
        let (from, to) = (self.done, self.done + n);
        self.done = to;
        (&mut self.hash, &self.src[from..to], &mut self.block.bytes_mut()[self.at + from..self.at + to])
    }

    fn run_alone(&mut self) {
        let (hash, src, dst) = self.next(self.left());
        hash.update_copy(src, dst);
    }

    /// Runs both jobs as far as the shorter one goes, in one loop.
    fn run_pair(a: &mut Job, b: &mut Job) {
        let n = a.left().min(b.left());
        Sha256::update_copy_pair(a.next(n), b.next(n));
    }
}

/// One upload as the meeting point knows it.
pub(super) struct Upload {
    /// Tells its chunks from other uploads'.
    tag: u16,
    /// When its previous chunk started, in microseconds since the pairing's epoch.
    last: Option<u64>,
}

impl Upload {
    /// A new upload's entry.
    pub(super) fn new() -> Upload {
        static NEXT_TAG: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        Upload { tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed), last: None }
    }
}

/// A job waiting for a partner; `ticket` tells its owner whether it is still there.
struct Parked {
    job: Job,
    ticket: u64,
    done: oneshot::Sender<Job>,
}

/// Where chunks meet.
pub(super) struct Pairing {
    slot: Mutex<Option<Parked>>,
    /// The last chunk's start: microseconds since `epoch` in the high 48 bits, its upload's
    /// tag in the low 16; 0 before the first.
    last: AtomicU64,
    /// When the first chunk came, on tokio's clock (which tests pause).
    epoch: OnceLock<Instant>,
    tickets: AtomicU64,
    /// Pairs hashed so far: how tests see that chunks met.
    pairs: AtomicU64,
}

/// The registry's meeting point.
pub(super) static PAIRING: Pairing = Pairing::new();

/// What [`Pairing::meet`] did with a job.
enum Meeting {
    /// Hashed, alone or with the chunk that was waiting.
    Done(Job),
    /// Waiting for a partner under this ticket; it comes back on the receiver.
    Parked(u64, oneshot::Receiver<Job>),
}

/// A partner's hashing panicked and took the job with it.
#[derive(Debug)]
pub(super) struct Lost;

impl Pairing {
    /// An empty meeting point.
    pub(super) const fn new() -> Pairing {
        Pairing {
            slot: Mutex::new(None),
            last: AtomicU64::new(0),
            epoch: OnceLock::new(),
            tickets: AtomicU64::new(0),
            pairs: AtomicU64::new(0),
        }
    }

    /// Hashes and copies `job` (a chunk of `upload`), paired with another upload's chunk
    /// where one is waiting or comes soon; gives the job back done.
    pub(super) async fn run(&self, job: Job, upload: &mut Upload) -> Result<Job, Lost> {
        let (ticket, mut back) = match self.meet(job, upload) {
            Meeting::Done(job) => return Ok(job),
            Meeting::Parked(ticket, back) => (ticket, back),
        };
        loop {
            if let Ok(paired) = tokio::time::timeout(WAIT, &mut back).await {
                return paired.map_err(|_| Lost);
            }
            let mine = self.slot.lock().unwrap_or_else(PoisonError::into_inner).take_if(|p| p.ticket == ticket);
            if let Some(Parked { mut job, .. }) = mine {
                job.run_alone();
                return Ok(job);
            }
            // A partner holds it: it comes back done, or parked again with its rest (found by
            // a review: waiting without a limit here hung a request whose rest was parked
            // again after its last partner).
        }
    }

    /// Runs `job` with the chunks waiting, one after another, as far as they go; then alone,
    /// or it parks what is left for a partner.
    fn meet(&self, mut job: Job, upload: &mut Upload) -> Meeting {
        let others_busy = self.note_start(upload);
        loop {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(mut parked) = slot.take() {
                drop(slot);
                Job::run_pair(&mut job, &mut parked.job);
                self.pairs.fetch_add(1, Ordering::Relaxed);
                self.hand_back(parked);
                if job.left() == 0 {
                    return Meeting::Done(job);
                }
                continue;
            }
            if job.left() < PAIR_MIN || !others_busy {
                drop(slot);
                job.run_alone();
                return Meeting::Done(job);
            }
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            let (done, back) = oneshot::channel();
            *slot = Some(Parked { job, ticket, done });
            return Meeting::Parked(ticket, back);
        }
    }

    /// Gives a parked job back to its owner once done; one with bytes left waits on in the
    /// slot for the next partner, or runs them alone if another job has taken the slot.
    fn hand_back(&self, mut parked: Parked) {
        if parked.done.is_closed() {
            // Its request went away: the block goes back to the pool, the rest is not hashed.
            return;
        }
        if parked.job.left() > 0 {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(parked);
                return;
            }
            drop(slot);
            parked.job.run_alone();
        }
        // Should its request have gone away meanwhile, the block goes back to the pool.
        let _ = parked.done.send(parked.job);
    }

    /// Pairs hashed so far.
    #[cfg(test)]
    pub(super) fn pairs(&self) -> u64 {
        self.pairs.load(Ordering::Relaxed)
    }

    /// Notes that a chunk of `upload` starts; says whether it may wait for a partner: another
    /// upload's chunk started within `RECENT`, and this upload's previous one before that.
    fn note_start(&self, upload: &mut Upload) -> bool {
        let clock = tokio::time::Instant::now().into_std();
        // Counted from 1, so that 0 in `last` means no chunk yet.
        let now = clock.saturating_duration_since(*self.epoch.get_or_init(|| clock)).as_micros() as u64 + 1;
        let before = self.last.swap(now << 16 | u64::from(upload.tag), Ordering::Relaxed);
        let (at, tag) = (before >> 16, before as u16);
        let recent = RECENT.as_micros() as u64;
        let mine = upload.last.replace(now);
        before != 0
            && tag != upload.tag
            && now.saturating_sub(at) < recent
            && mine.is_none_or(|m| now.saturating_sub(m) >= recent)
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::super::block::Pool;
    use super::*;

    /// Pseudo-random bytes (xorshift), different for each seed.
    fn bytes(n: usize, seed: u64) -> Bytes {
        let mut x = seed | 1;
        let v: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Bytes::from(v)
    }

    /// An upload with this tag that has sent nothing yet.
    fn up(tag: u16) -> Upload {
        Upload { tag, last: None }
    }

    /// Waits until a chunk is parked at `meet`.
    async fn parked(meet: &Pairing) {
        for _ in 0..100_000 {
            if meet.slot.lock().unwrap().is_some() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("no chunk waited for a partner");
    }

    /// Upload 2 is sending; upload 1's chunk `src` is parked at `meet`, waiting for a partner.
    async fn park_first(
        meet: &'static Pairing,
        pool: &'static Pool,
        src: &Bytes,
    ) -> tokio::task::JoinHandle<Result<Job, Lost>> {
        meet.note_start(&mut up(2));
        let src = src.clone();
        let first = tokio::spawn(async move { meet.run(job(pool, &src), &mut up(1)).await });
        parked(meet).await;
        first
    }

    fn job(pool: &'static Pool, src: &Bytes) -> Job {
        Job::new(Sha256::default(), src.clone(), pool.take().expect("a block"))
    }

    /// The job's hash and block hold exactly its chunk.
    fn check(job: Job, src: &Bytes) {
        let (hash, block) = job.into_parts();
        assert_eq!(block.bytes(), &src[..], "the block holds the chunk");
        assert_eq!(hash.finish(), <[u8; 32]>::from(sha2::Sha256::digest(src)), "the hash is the chunk's");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_waiting_while_another_upload_sends_is_hashed_with_the_next_one() {
        static POOL: Pool = Pool::new(4, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, b) = (bytes(300_000, 1), bytes(200_003, 2));
        let first = park_first(&MEET, &POOL, &a).await;
        let second = MEET.run(job(&POOL, &b), &mut up(2)).await.unwrap();
        check(first.await.unwrap().unwrap(), &a);
        check(second, &b);
        assert_eq!(MEET.pairs(), 1, "the two chunks went through one loop");
    }

    /// A chunk longer than its partner keeps waiting with what is left, and the next
    /// upload's chunk takes that on.
    #[tokio::test(start_paused = true)]
    async fn what_a_longer_chunk_has_left_pairs_with_the_next_partner() {
        static POOL: Pool = Pool::new(4, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, b, c) = (bytes(300_000, 7), bytes(100_000, 8), bytes(200_000, 9));
        let first = park_first(&MEET, &POOL, &a).await;
        check(MEET.run(job(&POOL, &b), &mut up(2)).await.unwrap(), &b);
        assert_eq!(MEET.slot.lock().unwrap().as_ref().map(|p| p.job.left()), Some(200_000), "the rest waits on");
        check(MEET.run(job(&POOL, &c), &mut up(3)).await.unwrap(), &c);
        check(first.await.unwrap().unwrap(), &a);
        assert_eq!(MEET.pairs(), 2, "the first chunk went through the loop with both others");
    }

    /// An upload sending chunks less than a millisecond apart does not wait for a partner,
    /// even just after another upload's chunk; one sending them further apart does.
    #[tokio::test(start_paused = true)]
    async fn only_an_upload_with_chunks_a_millisecond_apart_waits() {
        static POOL: Pool = Pool::new(2, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, mut fast, mut slow) = (bytes(100_000, 10), up(1), up(2));
        let step = |us| tokio::time::advance(Duration::from_micros(us));
        step(10_000).await;
        check(MEET.run(job(&POOL, &a), &mut fast).await.unwrap(), &a);
        step(100).await;
        MEET.note_start(&mut slow);
        step(100).await;
        let started = tokio::time::Instant::now();
        check(MEET.run(job(&POOL, &a), &mut fast).await.unwrap(), &a);
        assert_eq!(started.elapsed(), Duration::ZERO, "its previous chunk came 200 us before: no wait");
        step(2_000).await;
        MEET.note_start(&mut slow);
        let started = tokio::time::Instant::now();
        check(MEET.run(job(&POOL, &a), &mut fast).await.unwrap(), &a);
        assert!(started.elapsed() >= WAIT, "its previous chunk came 2 ms before: it waits for a partner");
    }

    /// A chunk whose wait ends while a partner holds it, and whose rest the partner then
    /// parks again, still comes back (found by a review: its request hung until some other
    /// upload sent a chunk).
    #[tokio::test(start_paused = true)]
    async fn a_chunk_parked_again_after_its_wait_ended_still_comes_back() {
        static POOL: Pool = Pool::new(4, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, b) = (bytes(300_000, 11), bytes(100_000, 12));
        let first = park_first(&MEET, &POOL, &a).await;
        // A partner takes it, and is still hashing when the owner's wait ends.
        let mut taken = MEET.slot.lock().unwrap().take().unwrap();
        tokio::time::advance(2 * WAIT).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut other = job(&POOL, &b);
        Job::run_pair(&mut other, &mut taken.job);
        MEET.hand_back(taken);
        check(other, &b);
        let back = tokio::time::timeout(Duration::from_secs(5), first).await;
        check(back.expect("the first chunk came back").unwrap().unwrap(), &a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_upload_never_waits() {
        static POOL: Pool = Pool::new(2, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, started) = (bytes(300_000, 3), tokio::time::Instant::now());
        for _ in 0..2 {
            let done = MEET.run(job(&POOL, &a), &mut up(7)).await.unwrap();
            check(done, &a);
        }
        assert_eq!(started.elapsed(), Duration::ZERO, "a chunk waited with no other upload sending");
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_that_finds_no_partner_in_time_is_hashed_alone() {
        static POOL: Pool = Pool::new(2, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, started) = (bytes(100_000, 4), tokio::time::Instant::now());
        MEET.note_start(&mut up(9));
        check(MEET.run(job(&POOL, &a), &mut up(8)).await.unwrap(), &a);
        assert!(started.elapsed() >= WAIT, "it waited for a partner first");
        assert!(MEET.slot.lock().unwrap().is_none(), "and took its chunk back");
        assert_eq!(MEET.pairs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_whose_upload_went_away_while_it_waited_still_frees_its_block() {
        static POOL: Pool = Pool::new(4, 0, 1);
        static MEET: Pairing = Pairing::new();
        let (a, b) = (bytes(100_000, 5), bytes(100_000, 6));
        let gone = park_first(&MEET, &POOL, &a).await;
        gone.abort();
        assert!(matches!(gone.await, Err(e) if e.is_cancelled()));
        check(MEET.run(job(&POOL, &b), &mut up(2)).await.unwrap(), &b);
        assert_eq!(POOL.in_use(), 0, "both blocks are back in the pool");
    }
}
