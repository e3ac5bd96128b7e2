//! CRC32C (Castagnoli) as icx frames use it.
//!
//! Single buffers go to the `crc32c` crate. What it cannot do is overlap
//! independent checksums: a fragment's CRC is one dependency chain (the
//! `crc32` instruction has a latency of three cycles and a throughput of one),
//! and at 1.4 KB the crate runs about half of it serially. A block's fragments
//! are independent, so [`crc32c_x3`] runs three of them in lockstep, which
//! keeps the unit busy every cycle: about 1.8x the crate's speed on 1408-byte
//! fragments on this project's benchmark machine (`bench/RESULTS.md`).
//!
//! The only `unsafe` here calls the SSE4.2 kernel after run-time detection;
//! elsewhere (or without SSE4.2) the crate computes the same values.
#![deny(unsafe_code)]

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Extends `crc` (of some bytes) to the CRC32C of those bytes followed by
/// `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The CRC32C of each of three buffers, computed side by side. Any lengths;
/// the common length runs in lockstep, the rest of each alone.
pub fn crc32c_x3(bufs: [&[u8]; 3]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            #[allow(unsafe_code)]
            // SAFETY: the kernel only needs SSE4.2, detected just above; it
            // reads the slices through safe indexing.
            return unsafe { x86::crc32c_x3(bufs) };
        }
    }
    bufs.map(crc32c)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::_mm_crc32_u64;

    /// Lockstep over whole 8-byte words of the common length, then each
    /// buffer's tail through the crate. Safe code under the target feature.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn crc32c_x3(bufs: [&[u8]; 3]) -> [u32; 3] {
        let common = bufs.iter().map(|b| b.len()).min().unwrap_or(0) / 8 * 8;
        let (a, _) = bufs[0][..common].as_chunks::<8>();
        let (b, _) = bufs[1][..common].as_chunks::<8>();
        let (c, _) = bufs[2][..common].as_chunks::<8>();
        // The crate's convention: the register starts inverted.
        let mut s = [u64::from(!0u32); 3];
        for ((wa, wb), wc) in a.iter().zip(b).zip(c) {
            s[0] = _mm_crc32_u64(s[0], u64::from_le_bytes(*wa));
            s[1] = _mm_crc32_u64(s[1], u64::from_le_bytes(*wb));
            s[2] = _mm_crc32_u64(s[2], u64::from_le_bytes(*wc));
        }
        let mut out = [0; 3];
        for i in 0..3 {
            out[i] = crc32c::crc32c_append(!(s[i] as u32), &bufs[i][common..]);
        }
        out
    }
}
