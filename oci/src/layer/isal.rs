//! ISA-L's igzip as the deflate of [`super::pgzip`]'s blocks at level 1 (berth's default for
//! layers): about 2.5x less CPU than zlib-rs's level 1 on layer data, and a slightly
//! smaller output. The C shim `csrc/isal_block.c` holds the stream state.

use std::io;

unsafe extern "C" {
    fn berth_isal_level_buf_size() -> usize;
    fn berth_isal_deflate_block(
        input: *const u8,
        in_len: u32,
        dict: *const u8,
        dict_len: u32,
        last: i32,
        level_buf: *mut u8,
        level_buf_len: u32,
        out: *mut u8,
        out_cap: u32,
    ) -> std::ffi::c_long;
}

/// One worker's igzip scratch space (its hash tables), reused block after block.
pub struct Deflater {
    level_buf: Vec<u8>,
}

impl Deflater {
    /// Scratch space of the size ISA-L suggests for level 1.
    pub fn new() -> Self {
        // SAFETY: a pure function of the installed header's constants.
        let size = unsafe { berth_isal_level_buf_size() };
        Deflater { level_buf: vec![0; size] }
    }

    /// Deflates `data` as raw deflate primed with `dict`, ending with a sync flush (or the
    /// final block when `last`): the same contract as zlib's path in [`super::pgzip`].
    pub fn block(&mut self, data: &[u8], dict: Option<&[u8]>, last: bool) -> io::Result<Vec<u8>> {
        let too_big = || io::Error::other("a gzip block over 4 GiB");
        let in_len = u32::try_from(data.len()).map_err(|_| too_big())?;
        let dict = dict.unwrap_or_default();
        let dict_len = u32::try_from(dict.len()).map_err(|_| too_big())?;
        let level_len = u32::try_from(self.level_buf.len()).map_err(|_| too_big())?;
        // Stored blocks bound the output of incompressible input: 5 bytes per 64 KiB, plus
        // the flush; doubled on the rare refusal.
        let mut cap = data.len() + data.len() / 1024 + 1024;
        loop {
            // Not zeroed: the shim writes the bytes that `set_len` below keeps.
            let mut out: Vec<u8> = Vec::with_capacity(cap);
            let cap32 = u32::try_from(cap).map_err(|_| too_big())?;
            // SAFETY: every pointer comes from a live allocation whose length is passed
            // beside it; the shim reads `data` and `dict`, and writes at most `cap` bytes of
            // `out` (its spare capacity) and of `level_buf`, all within this call.
            let n = unsafe {
                berth_isal_deflate_block(
                    data.as_ptr(),
                    in_len,
                    dict.as_ptr(),
                    dict_len,
                    i32::from(last),
                    self.level_buf.as_mut_ptr(),
                    level_len,
                    out.as_mut_ptr(),
                    cap32,
                )
            };
            match n {
                -1 => cap *= 2,
                n if n >= 0 && n as usize <= cap => {
                    // SAFETY: the shim initialised the first `n` bytes (n <= cap, checked).
                    unsafe { out.set_len(n as usize) };
                    return Ok(out);
                }
                _ => return Err(io::Error::other("ISA-L refused to deflate a block")),
            }
        }
    }
}
