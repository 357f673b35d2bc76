//! SHA-256 with a second way in: [`Sha256::update_copy`] hashes bytes and copies them to
//! another buffer in one pass. A registry receiving a blob must both hash it and move it into
//! the buffer it writes to disk from; done apart, the copy reads every byte again and pulls
//! the destination into the cache. With the CPU's SHA extensions the copy rides inside the
//! hash's loop, each 64-byte block stored as it is loaded, with stores that bypass the cache
//! where the destination allows (bench/registry-concurrency.sh measures the difference).
//!
//! Whole blocks go through `sha2::compress256` (which picks SHA-NI or its portable code at
//! run time) or through the fused loop below; this module keeps only the buffering and the
//! padding, as FIPS 180-4 defines them.

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

/// Bytes per SHA-256 block.
const BLOCK: usize = 64;

/// The initial hash value, FIPS 180-4 section 5.3.3.
const INITIAL: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// A streaming SHA-256 state of our own, so that hashing can also copy ([`Sha256::update_copy`]).
#[derive(Clone)]
pub struct Sha256 {
    /// The chaining value after every whole block so far.
    state: [u32; 8],
    /// Bytes of the block not yet complete.
    partial: [u8; BLOCK],
    /// How many bytes of `partial` hold data.
    buffered: usize,
    /// Bytes hashed in all, for the padding.
    length: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256 { state: INITIAL, partial: [0; BLOCK], buffered: 0, length: 0 }
    }
}

impl Sha256 {
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.length += bytes.len() as u64;
        let rest = self.top_up(bytes);
        let whole = rest.len() - rest.len() % BLOCK;
        compress(&mut self.state, &rest[..whole]);
        self.keep(&rest[whole..]);
    }

    /// Feeds `src` and copies it into `dst` (of the same length), reading each byte once.
    pub fn update_copy(&mut self, src: &[u8], dst: &mut [u8]) {
        self.update_copy_with(src, dst, fused::available());
    }

    /// [`Sha256::update_copy`], with the fused loop only when `fast` (tests run both ways).
    fn update_copy_with(&mut self, src: &[u8], dst: &mut [u8], fast: bool) {
        assert_eq!(src.len(), dst.len(), "update_copy needs a destination as long as its source");
        if !fast {
            dst.copy_from_slice(src);
            return self.update(src);
        }
        let whole = self.begin_copy(src, dst);
        // SAFETY: `fast` only where `fused::available()` said the CPU has the instructions.
        unsafe { fused::compress_copy(&mut self.state, &src[whole.clone()], &mut dst[whole.clone()]) };
        self.end_copy(src, dst, whole.end);
    }

    /// Two streams' [`Sha256::update_copy`] at once, `(state, src, dst)` each: with the CPU's
    /// SHA extensions their blocks go through one loop, in less time than one stream after
    /// the other. A registry receiving several uploads at once pairs their chunks.
    pub fn update_copy_pair(a: (&mut Sha256, &[u8], &mut [u8]), b: (&mut Sha256, &[u8], &mut [u8])) {
        Sha256::update_copy_pair_with(a, b, fused::available());
    }

    /// [`Sha256::update_copy_pair`], with the fused loop only when `fast`.
    fn update_copy_pair_with(a: (&mut Sha256, &[u8], &mut [u8]), b: (&mut Sha256, &[u8], &mut [u8]), fast: bool) {
        let ((ha, src_a, dst_a), (hb, src_b, dst_b)) = (a, b);
        assert!(src_a.len() == dst_a.len() && src_b.len() == dst_b.len(), "update_copy_pair needs equal lengths");
        if !fast {
            ha.update_copy_with(src_a, dst_a, false);
            return hb.update_copy_with(src_b, dst_b, false);
        }
        let (wa, wb) = (ha.begin_copy(src_a, dst_a), hb.begin_copy(src_b, dst_b));
        let one = (&mut ha.state, &src_a[wa.clone()], &mut dst_a[wa.clone()]);
        let other = (&mut hb.state, &src_b[wb.clone()], &mut dst_b[wb.clone()]);
        // SAFETY: `fast` only where `fused::available()` said the CPU has the instructions.
        unsafe { fused::compress_copy_pair(one, other) };
        ha.end_copy(src_a, dst_a, wa.end);
        hb.end_copy(src_b, dst_b, wb.end);
    }

    /// The first half of a fused `update_copy`: counts `src`, completes a buffered block from
    /// its front (copying those bytes plainly), and returns the range of whole blocks that
    /// follows, for the fused loop.
    fn begin_copy(&mut self, src: &[u8], dst: &mut [u8]) -> std::ops::Range<usize> {
        self.length += src.len() as u64;
        let rest = self.top_up(src);
        let head = src.len() - rest.len();
        dst[..head].copy_from_slice(&src[..head]);
        head..head + (rest.len() - rest.len() % BLOCK)
    }

    /// The second half: copies and buffers the bytes from `end`, fewer than a block.
    fn end_copy(&mut self, src: &[u8], dst: &mut [u8], end: usize) {
        dst[end..].copy_from_slice(&src[end..]);
        self.keep(&src[end..]);
    }

    /// Completes a buffered partial block from the front of `bytes` (hashing it when full);
    /// returns the bytes left.
    fn top_up<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.buffered == 0 {
            return bytes;
        }
        let n = (BLOCK - self.buffered).min(bytes.len());
        self.partial[self.buffered..self.buffered + n].copy_from_slice(&bytes[..n]);
        self.buffered += n;
        if self.buffered == BLOCK {
            compress(&mut self.state, &self.partial);
            self.buffered = 0;
        }
        &bytes[n..]
    }

    /// Buffers fewer than a block's bytes (only called with `partial` empty or `tail` empty).
    fn keep(&mut self, tail: &[u8]) {
        self.partial[self.buffered..self.buffered + tail.len()].copy_from_slice(tail);
        self.buffered += tail.len();
    }

    /// Pads (a 1 bit, zeros, the length in bits) and returns the hash.
    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        let mut pad = [0u8; 2 * BLOCK];
        pad[..self.buffered].copy_from_slice(&self.partial[..self.buffered]);
        pad[self.buffered] = 0x80;
        let end = if self.buffered + 9 <= BLOCK { BLOCK } else { 2 * BLOCK };
        pad[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &pad[..end]);
        let mut out = [0u8; 32];
        for (o, word) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Hashes whole blocks with the sha2 crate's compression function.
fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert!(blocks.len().is_multiple_of(BLOCK));
    // SAFETY: `GenericArray<u8, U64>` is a `[u8; 64]` (alignment 1, no padding), and `blocks`
    // holds exactly `len / 64` of them.
    let blocks: &[GenericArray<u8, U64>] =
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() / BLOCK) };
    sha2::compress256(state, blocks);
}

#[cfg(target_arch = "x86_64")]
mod fused {
    //! The SHA-NI compression loop that also stores each block it loads.
    use std::arch::x86_64::*;

    /// The round constants, FIPS 180-4 section 4.2.2.
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Hashes the 64-byte block `$from` into `$lane` and stores it to `$to` (streaming stores
    /// with `$stream`, which needs `$to` 16-byte aligned). Each `sha256rnds2` does two rounds;
    /// the message schedule is four registers of four words each, written out so that the
    /// compiler keeps them in registers. A macro, not a function, so that it is always inlined
    /// (`#[inline(always)]` cannot go with `#[target_feature]`) and two lanes interleave.
    /// Only used inside functions that enable SHA-NI, SSE2, SSSE3 and SSE4.1.
    macro_rules! hash_block {
        ($lane:ident, $from:expr, $to:expr, $stream:expr) => {{
            let (from, to): (&[u8], &mut [u8]) = ($from, $to);
            assert!(from.len() == 64 && to.len() == 64);
            // Each 32-bit word is big-endian in the message.
            let swap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
            let k = K.as_ptr().cast::<__m128i>();
            let (from, to) = (from.as_ptr().cast::<__m128i>(), to.as_mut_ptr().cast::<__m128i>());
            let (abef_in, cdgh_in) = ($lane.abef, $lane.cdgh);
            let (mut abef, mut cdgh) = ($lane.abef, $lane.cdgh);
            // SAFETY (all loads and stores below): `K` is 64 words, `from` and `to` 64 bytes,
            // and `to` is 16-byte aligned with `$stream`.
            // Four rounds with message words `w` (W[4g..4g+4]).
            macro_rules! rounds {
                ($w:expr, $g:expr) => {{
                    let wk = _mm_add_epi32($w, unsafe { _mm_loadu_si128(k.add($g)) });
                    cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
                    abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
                }};
            }
            // Words `i*4..i*4+4` of the block: loaded, stored to `to`, byte-swapped.
            macro_rules! load {
                ($i:expr) => {{
                    let raw = unsafe { _mm_loadu_si128(from.add($i)) };
                    if $stream {
                        unsafe { _mm_stream_si128(to.add($i), raw) };
                    } else {
                        unsafe { _mm_storeu_si128(to.add($i), raw) };
                    }
                    _mm_shuffle_epi8(raw, swap)
                }};
            }
            // W[t..t+4] from W[t-16..t-12], W[t-12..t-8], W[t-8..t-4], W[t-4..t].
            macro_rules! schedule {
                ($w16:expr, $w12:expr, $w8:expr, $w4:expr) => {
                    _mm_sha256msg2_epu32(
                        _mm_add_epi32(_mm_sha256msg1_epu32($w16, $w12), _mm_alignr_epi8($w4, $w8, 4)),
                        $w4,
                    )
                };
            }
            let mut w0 = load!(0);
            rounds!(w0, 0);
            let mut w1 = load!(1);
            rounds!(w1, 1);
            let mut w2 = load!(2);
            rounds!(w2, 2);
            let mut w3 = load!(3);
            rounds!(w3, 3);
            for g in [4, 8, 12] {
                w0 = schedule!(w0, w1, w2, w3);
                rounds!(w0, g);
                w1 = schedule!(w1, w2, w3, w0);
                rounds!(w1, g + 1);
                w2 = schedule!(w2, w3, w0, w1);
                rounds!(w2, g + 2);
                w3 = schedule!(w3, w0, w1, w2);
                rounds!(w3, g + 3);
            }
            $lane.abef = _mm_add_epi32(abef, abef_in);
            $lane.cdgh = _mm_add_epi32(cdgh, cdgh_in);
        }};
    }

    /// Whether this CPU has the SHA extensions and the SSE levels the loop uses (std
    /// detects them once and caches the answer).
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse2")
            && is_x86_feature_detected!("ssse3")
            && is_x86_feature_detected!("sse4.1")
    }

    /// Hashes the whole blocks of `src` into `state` and copies them to `dst`. Stores bypass
    /// the cache when `dst` is 16-byte aligned: the bytes go to the disk next, not back
    /// through this core.
    ///
    /// # Safety
    /// The CPU must have the features [`available`] checks.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_copy(state: &mut [u32; 8], src: &[u8], dst: &mut [u8]) {
        assert!(src.len() == dst.len() && src.len().is_multiple_of(64));
        if (dst.as_ptr() as usize).is_multiple_of(16) {
            // SAFETY: the caller's promise, and the alignment `STREAM` needs.
            unsafe { blocks::<true>(state, src, dst) };
            // Streaming stores are weakly ordered: make them visible before the buffer is
            // handed to another thread for its write.
            _mm_sfence();
        } else {
            // SAFETY: the caller's promise.
            unsafe { blocks::<false>(state, src, dst) };
        }
    }

    /// Hashes the whole blocks of two streams into their states and copies them, in one
    /// loop: each `sha256rnds2` waits for the one before it in its own stream, so two
    /// streams' rounds fill each other's gaps (bench/README.md: about a fifth less time than one
    /// stream after the other). `a` and `b` are `(state, src, dst)`, each `src` as long as
    /// its `dst` and a multiple of 64 bytes; the longer one's rest runs alone.
    ///
    /// # Safety
    /// The CPU must have the features [`available`] checks.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_copy_pair(a: Stream<'_>, b: Stream<'_>) {
        let ((sa, src_a, dst_a), (sb, src_b, dst_b)) = (a, b);
        assert!(src_a.len() == dst_a.len() && src_a.len().is_multiple_of(64));
        assert!(src_b.len() == dst_b.len() && src_b.len().is_multiple_of(64));
        let both = src_a.len().min(src_b.len());
        let stream = (dst_a.as_ptr() as usize).is_multiple_of(16) && (dst_b.as_ptr() as usize).is_multiple_of(16);
        let (one, other) =
            ((&mut *sa, &src_a[..both], &mut dst_a[..both]), (&mut *sb, &src_b[..both], &mut dst_b[..both]));
        if stream {
            // SAFETY: the caller's promise, and the alignment `STREAM` needs.
            unsafe { pair_blocks::<true>(one, other) };
            _mm_sfence();
        } else {
            // SAFETY: the caller's promise.
            unsafe { pair_blocks::<false>(one, other) };
        }
        // SAFETY: the caller's promise.
        unsafe {
            compress_copy(sa, &src_a[both..], &mut dst_a[both..]);
            compress_copy(sb, &src_b[both..], &mut dst_b[both..]);
        }
    }

    /// One stream of [`compress_copy_pair`]: its state, the bytes to hash and where to copy them.
    pub(super) type Stream<'a> = (&'a mut [u32; 8], &'a [u8], &'a mut [u8]);

    /// The loop of [`compress_copy`].
    ///
    /// # Safety
    /// As [`compress_copy`], and with `STREAM`, `dst` must be 16-byte aligned.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn blocks<const STREAM: bool>(state: &mut [u32; 8], src: &[u8], dst: &mut [u8]) {
        let mut lane = Lane::load(state);
        for (from, to) in src.chunks_exact(64).zip(dst.chunks_exact_mut(64)) {
            hash_block!(lane, from, to, STREAM);
        }
        lane.save(state);
    }

    /// The loop of [`compress_copy_pair`], over streams of the same length.
    ///
    /// # Safety
    /// As [`compress_copy_pair`], and with `STREAM`, both destinations must be 16-byte aligned.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn pair_blocks<const STREAM: bool>(a: Stream<'_>, b: Stream<'_>) {
        let ((sa, src_a, dst_a), (sb, src_b, dst_b)) = (a, b);
        let (mut la, mut lb) = (Lane::load(sa), Lane::load(sb));
        let one = src_a.chunks_exact(64).zip(dst_a.chunks_exact_mut(64));
        for ((fa, ta), (fb, tb)) in one.zip(src_b.chunks_exact(64).zip(dst_b.chunks_exact_mut(64))) {
            hash_block!(la, fa, ta, STREAM);
            hash_block!(lb, fb, tb, STREAM);
        }
        la.save(sa);
        lb.save(sb);
    }

    /// A chaining value in the two registers the instructions want it in, ABEF and CDGH
    /// (most significant word first).
    #[derive(Clone, Copy)]
    struct Lane {
        abef: __m128i,
        cdgh: __m128i,
    }

    impl Lane {
        #[inline]
        #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
        fn load(state: &[u32; 8]) -> Lane {
            // SAFETY: `state` is 8 words.
            unsafe {
                let abcd = _mm_shuffle_epi32(_mm_loadu_si128(state.as_ptr().cast()), 0xB1);
                let efgh = _mm_shuffle_epi32(_mm_loadu_si128(state.as_ptr().add(4).cast()), 0x1B);
                Lane { abef: _mm_alignr_epi8(abcd, efgh, 8), cdgh: _mm_blend_epi16(efgh, abcd, 0xF0) }
            }
        }

        #[inline]
        #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
        fn save(self, state: &mut [u32; 8]) {
            // SAFETY: as in `load`.
            unsafe {
                let feba = _mm_shuffle_epi32(self.abef, 0x1B);
                let dchg = _mm_shuffle_epi32(self.cdgh, 0xB1);
                _mm_storeu_si128(state.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
                _mm_storeu_si128(state.as_mut_ptr().add(4).cast(), _mm_alignr_epi8(dchg, feba, 8));
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod fused {
    //! No fused loop on this architecture: the copy and the hash go apart.

    /// Never: [`compress_copy`] is not reached.
    pub(super) fn available() -> bool {
        false
    }

    /// Copies, then hashes (never called: `available` is false).
    pub(super) unsafe fn compress_copy(state: &mut [u32; 8], src: &[u8], dst: &mut [u8]) {
        dst.copy_from_slice(src);
        super::compress(state, src);
    }

    /// One stream of [`compress_copy_pair`].
    pub(super) type Stream<'a> = (&'a mut [u32; 8], &'a [u8], &'a mut [u8]);

    /// One stream after the other (never called: `available` is false).
    pub(super) unsafe fn compress_copy_pair(a: Stream<'_>, b: Stream<'_>) {
        // SAFETY: nothing to promise here.
        unsafe {
            compress_copy(a.0, a.1, a.2);
            compress_copy(b.0, b.1, b.2);
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::*;

    /// Pseudo-random bytes from `seed` (xorshift), the same on every run.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Pseudo-random numbers below the argument (xorshift from `seed`).
    fn numbers(mut x: u64) -> impl FnMut(usize) -> usize {
        move |m| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        }
    }

    fn reference(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn known_answers() {
        let hex = |d: [u8; 32]| hex::encode(d);
        assert_eq!(hex(Sha256::default().finish()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let mut h = Sha256::default();
        h.update(b"abc");
        assert_eq!(hex(h.finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn every_length_around_the_padding_boundaries_matches_sha2() {
        for n in 0..200 {
            let data = bytes(n, n as u64);
            let mut h = Sha256::default();
            h.update(&data);
            assert_eq!(h.finish(), reference(&data), "length {n}");
        }
    }

    /// Any split of the input, through `update` and both ways of `update_copy`, into
    /// destinations at any alignment, gives sha2's hash and an exact copy.
    #[test]
    fn copies_and_hashes_match_sha2_over_any_split_and_alignment() {
        let data = bytes(300_000, 7);
        let expected = reference(&data);
        let ways: Vec<bool> = if fused::available() { vec![false, true] } else { vec![false] };
        for fast in ways {
            for (seed, offset) in [(1u64, 0usize), (2, 1), (3, 16), (4, 63), (5, 64)] {
                let cuts = bytes(64, seed);
                let mut out = vec![0u8; data.len() + offset];
                let dst = &mut out[offset..];
                let (mut h, mut at, mut i) = (Sha256::default(), 0, 0);
                while at < data.len() {
                    // Chunk sizes from 0 to about 20 KB, some of them tiny.
                    let n = ((cuts[i % 64] as usize) * (1 + 80 * (i % 3))).min(data.len() - at);
                    if i % 5 == 4 {
                        h.update(&data[at..at + n]);
                        dst[at..at + n].copy_from_slice(&data[at..at + n]);
                    } else {
                        h.update_copy_with(&data[at..at + n], &mut dst[at..at + n], fast);
                    }
                    at += n;
                    i += 1;
                }
                assert!(dst[..] == data[..], "copy differs (fast: {fast}, offset {offset})");
                assert_eq!(h.finish(), expected, "hash differs (fast: {fast}, offset {offset})");
            }
        }
    }

    /// Short inputs in random pieces (sizes around a block's 55, 56 and 64 bytes among them)
    /// through `update` and `update_copy`, into destinations at any offset: the hash is
    /// sha2's, the copy exact, and no byte around the destination is touched.
    #[test]
    fn short_random_pieces_hash_right_and_copy_within_their_bounds() {
        let data = bytes(600, 99);
        let mut next = numbers(0x1234_5678_9abc_def1u64);
        for fast in [false, fused::available()] {
            for _ in 0..3000 {
                let (len, off) = (next(600), next(80));
                let data = &data[..len];
                let mut out = vec![0xAAu8; len + 160];
                let (mut h, mut at) = (Sha256::default(), 0);
                while at < len {
                    let n = [next(3), next(70), 55 + next(10), 64, 128, next(300)][next(6)].min(len - at);
                    let (src, dst) = (&data[at..at + n], &mut out[off + at..off + at + n]);
                    if next(3) == 0 {
                        h.update(src);
                        dst.copy_from_slice(src);
                    } else {
                        h.update_copy_with(src, dst, fast);
                    }
                    at += n;
                }
                assert_eq!(&out[off..off + len], data);
                assert!(out[..off].iter().chain(&out[off + len..]).all(|&b| b == 0xAA), "wrote out of bounds");
                assert_eq!(h.finish(), reference(data), "length {len}, fused: {fast}");
            }
        }
    }

    /// Pairs of streams of every length mix (equal, one longer, one with a buffered partial
    /// block, one empty), split into random pieces, at any destination offset: each hash is
    /// sha2's and each copy exact.
    #[test]
    fn two_streams_through_one_loop_hash_and_copy_like_one_each() {
        let (da, db) = (bytes(200_000, 11), bytes(150_001, 12));
        let mut next = numbers(0x9e37_79b9_7f4a_7c15u64);
        for fast in [false, fused::available()] {
            for (oa, ob) in [(0, 0), (1, 16), (16, 63), (64, 5)] {
                let (mut out_a, mut out_b) = (vec![0u8; da.len() + oa], vec![0u8; db.len() + ob]);
                let (mut ha, mut hb) = (Sha256::default(), Sha256::default());
                let (mut at_a, mut at_b) = (0, 0);
                while at_a < da.len() || at_b < db.len() {
                    let sizes = [0, next(70), 64 * next(500), next(40_000)];
                    let na = sizes[next(4)].min(da.len() - at_a);
                    let nb = sizes[next(4)].min(db.len() - at_b);
                    Sha256::update_copy_pair_with(
                        (&mut ha, &da[at_a..at_a + na], &mut out_a[oa + at_a..oa + at_a + na]),
                        (&mut hb, &db[at_b..at_b + nb], &mut out_b[ob + at_b..ob + at_b + nb]),
                        fast,
                    );
                    (at_a, at_b) = (at_a + na, at_b + nb);
                }
                assert!(out_a[oa..] == da[..] && out_b[ob..] == db[..], "copy differs (fast: {fast})");
                assert_eq!(ha.finish(), reference(&da), "first hash differs (fast: {fast}, offsets {oa} {ob})");
                assert_eq!(hb.finish(), reference(&db), "second hash differs (fast: {fast}, offsets {oa} {ob})");
            }
        }
    }

    /// Not a check: how long one stream's fused loop takes against two streams' in one
    /// (`cargo test --release -p oci --lib pair_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn pair_speed() {
        let (src_a, src_b) = (bytes(400_000, 1), bytes(400_000, 2));
        let (mut dst_a, mut dst_b) = (vec![0u8; 2 << 20], vec![0u8; 2 << 20]);
        let (mut ha, mut hb) = (Sha256::default(), Sha256::default());
        let rounds = 2000;
        let t = std::time::Instant::now();
        for r in 0..rounds {
            let at = (r % 5) * 400_000;
            ha.update_copy(&src_a, &mut dst_a[at..at + 400_000]);
            hb.update_copy(&src_b, &mut dst_b[at..at + 400_000]);
        }
        let one = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for r in 0..rounds {
            let at = (r % 5) * 400_000;
            Sha256::update_copy_pair(
                (&mut ha, &src_a, &mut dst_a[at..at + 400_000]),
                (&mut hb, &src_b, &mut dst_b[at..at + 400_000]),
            );
        }
        let two = t.elapsed().as_secs_f64();
        let gb = (rounds * 800_000) as f64 / 1e9;
        println!("one after the other {:.3} s/GB, paired {:.3} s/GB", one / gb, two / gb);
    }

    #[test]
    fn a_clone_hashes_on_independently() {
        let mut a = Sha256::default();
        a.update(b"0123456789");
        let mut b = a.clone();
        a.update(b"a");
        b.update(b"b");
        assert_eq!(a.finish(), reference(b"0123456789a"));
        assert_eq!(b.finish(), reference(b"0123456789b"));
    }
}
