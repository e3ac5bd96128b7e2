//! CRC32C (Castagnoli) as icx frames use it.
//!
//! The `crc32c` crate computes the checksum; what it leaves on the table at
//! frame sizes is overlap. A CRC is one dependency chain (the `crc32`
//! instruction has a latency of three cycles and a throughput of one), and
//! at 1.4 KB the crate runs about half of the buffer as a single chain.
//! Here a buffer of 192 B..12 KiB is cut into three lanes run in lockstep,
//! then joined by shifting the first lanes' CRCs over the later ones' length
//! with a carry-less multiply (one `pclmulqdq` and one `crc32` per join) by
//! a constant kept per lane length: 1.7x the crate on 1408-byte fragments,
//! 1.3x on jumbo ones (bench/RESULTS.md). A receiver verifies each fragment
//! at that speed, and a sender checksums each fragment's payload in place
//! before sealing the frame with its header.
//!
//! The only `unsafe` here calls the kernel after run-time detection of
//! SSE4.2 and PCLMULQDQ; without them the crate computes the same values.
#![deny(unsafe_code)]

/// Lane lengths (bytes, multiples of 8) with a cached shift constant:
/// buffers up to 3 * 8 * LANE_WORDS bytes take the three-lane path.
const LANE_WORDS: usize = 512;
/// Shorter buffers are cheaper as one chain than with two joins.
const MIN_LANES_LEN: usize = 192;

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Extends `crc` (of some bytes) to the CRC32C of those bytes followed by
/// `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if (MIN_LANES_LEN..=3 * 8 * LANE_WORDS).contains(&data.len()) && x86::available() {
            #[allow(unsafe_code)]
            // SAFETY: SSE4.2 and PCLMULQDQ were detected by `available`; the
            // kernel reads the slice through safe indexing.
            return unsafe { x86::crc32c_lanes(crc, data) };
        }
    }
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANE_WORDS;
    use std::arch::x86_64::{_mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_cvtsi64_si128};
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sse4.2") && std::is_x86_feature_detected!("pclmulqdq")
    }

    /// One buffer as three lanes of `w` words: lane 0 continues from `crc`,
    /// lanes 1 and 2 start from zero; lane 0 is shifted over lane 1's length
    /// and joined, the result over lane 2's; the tail runs alone.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn crc32c_lanes(crc: u32, data: &[u8]) -> u32 {
        let w = data.len() / 24;
        let lane = 8 * w;
        let (a, _) = data[..lane].as_chunks::<8>();
        let (b, _) = data[lane..2 * lane].as_chunks::<8>();
        let (c, _) = data[2 * lane..3 * lane].as_chunks::<8>();
        let (mut s0, mut s1, mut s2) = (u64::from(!crc), 0u64, 0u64);
        for ((wa, wb), wc) in a.iter().zip(b).zip(c) {
            s0 = _mm_crc32_u64(s0, u64::from_le_bytes(*wa));
            s1 = _mm_crc32_u64(s1, u64::from_le_bytes(*wb));
            s2 = _mm_crc32_u64(s2, u64::from_le_bytes(*wc));
        }
        let k = shift_constant(w);
        let mut s = shift(s0, k) ^ s1;
        s = shift(s, k) ^ s2;
        let (words, bytes) = data[3 * lane..].as_chunks::<8>();
        for x in words {
            s = _mm_crc32_u64(s, u64::from_le_bytes(*x));
        }
        let mut s = s as u32;
        for &x in bytes {
            s = _mm_crc32_u8(s, x);
        }
        !s
    }

    /// The raw CRC register `s` advanced over as many zero bytes as the
    /// constant `k` was made for (see `shift_constant`).
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn shift(s: u64, k: u32) -> u64 {
        let p =
            _mm_clmulepi64_si128::<0>(_mm_cvtsi64_si128(s as i64), _mm_cvtsi64_si128(i64::from(k)));
        _mm_crc32_u64(0, _mm_cvtsi128_si64(p) as u64)
    }

    /// Shift constants by lane length in words (0: not computed yet).
    static SHIFT: [AtomicU32; LANE_WORDS + 1] = [const { AtomicU32::new(0) }; LANE_WORDS + 1];

    /// The `k` for which `crc32(0, clmul(s, k))` equals the register `s`
    /// run over `w` words of zeros. Both sides are multiplication of `s` by
    /// a constant modulo the CRC polynomial, so they agree for every `s` once
    /// they agree for `s = 1`: `k` solves `crc32(0, k) = zeros(1, w)`, a
    /// 32x32 linear system over GF(2), solved once per lane length.
    #[target_feature(enable = "sse4.2")]
    fn shift_constant(w: usize) -> u32 {
        let cached = SHIFT[w].load(Ordering::Relaxed);
        if cached != 0 {
            return cached;
        }
        let mut target = 1u64;
        for _ in 0..w {
            target = _mm_crc32_u64(target, 0);
        }
        // Columns of the map k -> crc32(0, k), then Gauss-Jordan.
        let mut rows: [(u32, u32); 32] = [(0, 0); 32]; // (image, preimage)
        for (i, r) in rows.iter_mut().enumerate() {
            *r = (_mm_crc32_u64(0, 1u64 << i) as u32, 1u32 << i);
        }
        let k = solve(&mut rows, target as u32);
        SHIFT[w].store(k, Ordering::Relaxed);
        k
    }

    /// Finds the preimage of `target` given the images of a basis, by
    /// elimination on (image, preimage) pairs. The map is invertible (it is
    /// multiplication by a unit modulo the polynomial).
    fn solve(rows: &mut [(u32, u32); 32], target: u32) -> u32 {
        for bit in 0..32 {
            let mask = 1u32 << bit;
            let Some(p) = (bit..32).find(|&r| rows[r].0 & mask != 0) else {
                continue;
            };
            rows.swap(bit, p);
            let pivot = rows[bit];
            for (r, row) in rows.iter_mut().enumerate() {
                if r != bit && row.0 & mask != 0 {
                    row.0 ^= pivot.0;
                    row.1 ^= pivot.1;
                }
            }
        }
        // Now rows[bit].0 == 1 << bit: combine the preimages of target's bits.
        (0..32)
            .filter(|&bit| target & (1 << bit) != 0)
            .fold(0, |k, bit| k ^ rows[bit].1)
    }
}
