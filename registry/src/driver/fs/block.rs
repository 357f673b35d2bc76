//! The buffers an upload's direct writes go out from. Each is 2 MiB on a 2 MiB boundary,
//! asked of the kernel as a transparent huge page: a direct write then pins one page instead
//! of 512, and the copy into it misses the TLB less (bench/README.md, 2026-12-07). They are
//! kept in a pool for the next upload (a fresh one costs the kernel a 2 MiB clear), and
//! counted against a budget: an upload that finds none to spare writes through the page
//! cache instead, so a flood of slow uploads cannot make the registry hold gigabytes of
//! buffers.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use oci::digest::Hasher;

/// Bytes per block: one direct write each.
pub(super) const BLOCK: usize = 2 << 20;

/// The memory of a block: an anonymous mapping of `BLOCK` bytes aligned to its size, so that
/// one huge page can back it whole; unmapped when dropped.
struct Page(NonNull<u8>);

// SAFETY: the mapping belongs to this value alone; `&Page` only reads it.
unsafe impl Send for Page {}
// SAFETY: as above.
unsafe impl Sync for Page {}

impl Page {
    /// A fresh page (zeroed, as anonymous memory is), on a huge page where the kernel has
    /// one to give.
    fn new() -> std::io::Result<Page> {
        use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};
        // Twice the size, then the ends cut off, leaves a mapping on a `BLOCK` boundary.
        // SAFETY: a new mapping at an address the kernel picks, aliasing nothing.
        let at = unsafe {
            mmap_anonymous(std::ptr::null_mut(), 2 * BLOCK, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)?
        };
        let start = at as usize;
        let aligned = start.next_multiple_of(BLOCK);
        let (head, tail) = (aligned - start, start + 2 * BLOCK - (aligned + BLOCK));
        // SAFETY: both ranges are parts of the mapping just made that the page does not use.
        unsafe {
            if head > 0 {
                munmap(at, head)?;
            }
            if tail > 0 {
                munmap((aligned + BLOCK) as *mut std::ffi::c_void, tail)?;
            }
        }
        let page = Page(NonNull::new(aligned as *mut u8).expect("mmap never maps address 0 here"));
        // Only a hint, given before the first touch so that the first fault maps a huge
        // page: without transparent huge pages the block works the same on small pages.
        // SAFETY: the range is the page's own mapping.
        if let Err(e) = unsafe { madvise(page.0.as_ptr().cast(), BLOCK, Advice::LinuxHugepage) } {
            tracing::debug!(error = %e, "no transparent huge page for an upload buffer");
        }
        Ok(page)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `BLOCK` bytes mapped read-write (zeroed, so initialised) until dropped.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), BLOCK) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), BLOCK) }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the page's own mapping, not referred to any more.
        if let Err(e) = unsafe { rustix::mm::munmap(self.0.as_ptr().cast(), BLOCK) } {
            tracing::error!(error = %e, "unmapping an upload buffer");
        }
    }
}

/// Blocks handed out at once, process-wide: 256 MiB, double buffering for 64 uploads at once.
const BUDGET: usize = 128;
/// Free blocks kept for reuse: 64 MiB; more are unmapped.
const KEEP: usize = 32;
/// Writes under way beyond which no fresh block is made for a spare: uploads at once share
/// these and the idle ones, and each spare costs the kernel a fresh 2 MiB to clear (in this
/// VM up to a tenth of a fresh server's first gigabyte, bench/README.md, 2026-12-07).
const SPARES: usize = 4;

/// Where blocks come from and go back to.
pub(super) struct Pool {
    idle: Mutex<Vec<Page>>,
    in_use: AtomicUsize,
    /// Writes under way from blocks of this pool.
    writing: AtomicUsize,
    budget: usize,
    keep: usize,
    spares: usize,
}

/// The registry's pool.
pub(super) static POOL: Pool = Pool::new(BUDGET, KEEP, SPARES);

impl Pool {
    /// A pool that hands out at most `budget` blocks at once, keeps at most `keep` idle, and
    /// makes a fresh spare only while fewer than `spares` writes are under way.
    pub(super) const fn new(budget: usize, keep: usize, spares: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            in_use: AtomicUsize::new(0),
            writing: AtomicUsize::new(0),
            budget,
            keep,
            spares,
        }
    }

    /// A block to fill while another is written: an idle one, or a fresh one while fewer
    /// than `spares` writes are under way; `None` otherwise (the writer then waits for its
    /// write, and the spares go round the uploads as their writes end).
    pub(super) fn take_second(&'static self) -> Option<Block> {
        let idle = !self.idle.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if !idle && self.writing.load(Ordering::Acquire) >= self.spares {
            return None;
        }
        self.take()
    }

    /// Counts a write under way until the guard is dropped.
    pub(super) fn writing(&'static self) -> Writing {
        self.writing.fetch_add(1, Ordering::AcqRel);
        Writing(self)
    }

    /// An empty block, or `None` when the budget is spent.
    pub(super) fn take(&'static self) -> Option<Block> {
        let granted =
            self.in_use.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.budget).then_some(n + 1));
        granted.ok()?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let page = match idle.map_or_else(Page::new, Ok) {
            Ok(page) => page,
            Err(e) => {
                self.in_use.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(error = %e, "no memory for an upload buffer; writing through the page cache");
                return None;
            }
        };
        Some(Block { page: Some(page), len: 0, pool: self })
    }

    /// Blocks handed out now.
    #[cfg(test)]
    pub(super) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

/// A write under way, as [`Pool::take_second`] counts them.
pub(super) struct Writing(&'static Pool);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Up to `BLOCK` bytes to write, at an address aligned for direct I/O; back to its pool when
/// dropped.
pub(super) struct Block {
    /// Always `Some` until dropped.
    page: Option<Page>,
    /// Bytes held, from the start.
    len: usize,
    pool: &'static Pool,
}

impl Block {
    fn page(&self) -> &[u8] {
        self.page.as_ref().expect("a block has its page until dropped").bytes()
    }

    fn page_mut(&mut self) -> &mut [u8] {
        self.page.as_mut().expect("a block has its page until dropped").bytes_mut()
    }

    /// The bytes held.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.page()[..self.len]
    }

    /// The bytes held, to fill in place.
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.page_mut()[..len]
    }

    /// Bytes that still fit.
    pub(super) fn room(&self) -> usize {
        BLOCK - self.len
    }

    /// Appends `src` (at most `room()` bytes).
    pub(super) fn append(&mut self, src: &[u8]) {
        self.extend(src.len()).copy_from_slice(src);
    }

    /// Appends `src` and feeds it to `hash`, in one pass where the CPU allows.
    pub(super) fn append_hashing(&mut self, src: &[u8], hash: &mut Hasher) {
        hash.update_copy(src, self.extend(src.len()));
    }

    /// The next `n` bytes, to fill in place (as `append` would); they count as held.
    pub(super) fn extend(&mut self, n: usize) -> &mut [u8] {
        let at = self.len;
        self.len += n;
        &mut self.page_mut()[at..at + n]
    }

    /// Drops the first `n` bytes held, moving the rest to the front.
    pub(super) fn consume(&mut self, n: usize) {
        let len = self.len;
        self.page_mut().copy_within(n..len, 0);
        self.len = len - n;
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(page) = self.page.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool.keep {
                idle.push(page);
            }
        }
        self.pool.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_counted_against_the_budget() {
        static SMALL: Pool = Pool::new(2, 1, 1);
        let a = SMALL.take().expect("first block");
        let b = SMALL.take().expect("second block");
        assert!(SMALL.take().is_none(), "the budget is two blocks");
        assert!((a.bytes().as_ptr() as usize).is_multiple_of(BLOCK));
        drop(a);
        let mut c = SMALL.take().expect("a block back in the pool");
        c.append(b"xyz");
        c.consume(1);
        assert_eq!(c.bytes(), b"yz");
        drop((b, c));
        assert_eq!(SMALL.in_use(), 0);
        assert_eq!(SMALL.idle.lock().unwrap().len(), 1, "at most `keep` idle pages are kept");
    }

    #[test]
    fn a_fresh_spare_is_made_only_while_few_writes_are_under_way() {
        static SPARE: Pool = Pool::new(8, 8, 1);
        let (first, second) = (SPARE.take().expect("a first block"), SPARE.take().expect("a first block"));
        let spare = SPARE.take_second().expect("no write under way: a fresh spare");
        let writing = SPARE.writing();
        assert!(SPARE.take_second().is_none(), "one write under way and none idle: the writer waits");
        drop((spare, writing));
        let again = SPARE.take_second().expect("the written block is idle: any upload may take it");
        let writing = SPARE.writing();
        assert!(SPARE.take_second().is_none());
        drop((first, second, again, writing));
        assert_eq!(SPARE.in_use(), 0);
    }
}
