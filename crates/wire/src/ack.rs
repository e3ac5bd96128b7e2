//! Ack frames: selective acknowledgement of sequence numbers, plus the
//! receiver's credit.

use crate::frame::{be16, be32, be64, WireError};

/// Most ranges an ack may carry; receivers reject more. A sender may emit
/// fewer: a 24-range ack frame has a 248-byte header, more than the 160-byte
/// inline header buffer (`icx_core::HEADER_INLINE_CAP`) the transport builds
/// frames in, so the transport sends at most 12 (8 piggybacked).
pub const MAX_ACK_RANGES: usize = 24;

// Ack header (20 bytes + 8 per range, after the common header):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +---------------------------------------------------------------+
// |               largest acknowledged sequence (64)              |
// |                                                               |
// +---------------------------------------------------------------+
// |     ack delay (microseconds since the largest arrived)        |
// +---------------------------------------------------------------+
// |          credit: bytes the receiver can take in flight        |
// +-------------------------------+-------------------------------+
// |          range count          |           reserved            |
// +-------------------------------+-------------------------------+
// |   gap (missing before range)  |    length (sequence numbers)  |  x count
// +-------------------------------+-------------------------------+
//
// Ranges run downwards from `largest`. Range 0 covers
// [largest - len0 + 1, largest] and has gap 0; range i > 0 starts `gap_i`
// missing numbers below range i-1: high_i = low_{i-1} - gap_i - 1.
// (Each gap/length pair is two 32-bit words; the diagram shows one row.)
mod field {
    use std::ops::Range;
    pub const LARGEST: Range<usize> = 0..8;
    pub const ACK_DELAY: Range<usize> = 8..12;
    pub const CREDIT: Range<usize> = 12..16;
    pub const RANGE_COUNT: Range<usize> = 16..18;
    pub const RESERVED: Range<usize> = 18..20;
    pub const RANGES: usize = 20;
    pub const RANGE_LEN: usize = 8;
}

/// Inclusive sequence ranges, highest first, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AckRanges {
    ranges: [(u64, u64); MAX_ACK_RANGES],
    len: u8,
}

impl AckRanges {
    pub const fn new() -> Self {
        AckRanges {
            ranges: [(0, 0); MAX_ACK_RANGES],
            len: 0,
        }
    }

    /// Appends `[low, high]`, which must lie wholly below the last range with
    /// at least one missing number between. False when full or out of order.
    pub fn push(&mut self, low: u64, high: u64) -> bool {
        if low > high || self.len as usize == MAX_ACK_RANGES {
            return false;
        }
        if let Some(&(prev_low, _)) = self.as_slice().last() {
            if high.checked_add(1).is_none_or(|h| h >= prev_low) {
                return false;
            }
        }
        self.ranges[self.len as usize] = (low, high);
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.as_slice().iter().any(|&(l, h)| l <= seq && seq <= h)
    }
}

impl Default for AckRanges {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for AckRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRepr {
    /// Time the receiver sat on the largest before acking, so the sender can
    /// take it out of its RTT sample.
    pub ack_delay_us: u32,
    /// Bytes the receiver can accept in flight now (its reassembly budget).
    pub credit: u32,
    /// Non-empty; the first range's high end is the largest acknowledged.
    pub ranges: AckRanges,
}

impl AckRepr {
    pub const EXT_FIXED_LEN: usize = field::RANGES;

    pub fn largest(&self) -> u64 {
        self.ranges.as_slice().first().map_or(0, |r| r.1)
    }

    pub(crate) fn ext_len(&self) -> usize {
        field::RANGES + field::RANGE_LEN * self.ranges.len()
    }

    pub(crate) fn parse(ext: &[u8]) -> Result<Self, WireError> {
        if ext.len() < field::RANGES {
            return Err(WireError::BadHeaderLen);
        }
        let largest = be64(ext, field::LARGEST);
        let count = be16(ext, field::RANGE_COUNT) as usize;
        if count == 0 || count > MAX_ACK_RANGES {
            return Err(WireError::Malformed("ack range count"));
        }
        if be16(ext, field::RESERVED) != 0 {
            return Err(WireError::Malformed("ack reserved bits set"));
        }
        if ext.len() < field::RANGES + count * field::RANGE_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let mut ranges = AckRanges::new();
        let mut high = largest;
        for i in 0..count {
            let at = field::RANGES + i * field::RANGE_LEN;
            let gap = be32(ext, at..at + 4) as u64;
            let len = be32(ext, at + 4..at + 8) as u64;
            if len == 0 {
                return Err(WireError::Malformed("empty ack range"));
            }
            if i == 0 {
                if gap != 0 {
                    return Err(WireError::Malformed("first ack range has a gap"));
                }
            } else {
                if gap == 0 {
                    return Err(WireError::Malformed("ack ranges touch"));
                }
                // high currently holds low_{i-1}; step below it and the gap.
                high = high
                    .checked_sub(gap + 1)
                    .ok_or(WireError::Malformed("ack range below zero"))?;
            }
            let low = high
                .checked_sub(len - 1)
                .ok_or(WireError::Malformed("ack range below zero"))?;
            if !ranges.push(low, high) {
                return Err(WireError::Malformed("ack ranges out of order"));
            }
            high = low;
        }
        Ok(AckRepr {
            ack_delay_us: be32(ext, field::ACK_DELAY),
            credit: be32(ext, field::CREDIT),
            ranges,
        })
    }

    /// Ranges wider than 2^32-1 or gaps that large cannot be expressed; the
    /// emitter clips such a range (acking less is always safe).
    pub(crate) fn emit(&self, ext: &mut [u8]) {
        ext[field::LARGEST].copy_from_slice(&self.largest().to_be_bytes());
        ext[field::ACK_DELAY].copy_from_slice(&self.ack_delay_us.to_be_bytes());
        ext[field::CREDIT].copy_from_slice(&self.credit.to_be_bytes());
        ext[field::RESERVED].fill(0);
        let mut written = 0usize;
        let mut prev_low: Option<u64> = None;
        for &(low, high) in self.ranges.as_slice() {
            let gap = match prev_low {
                None => 0,
                Some(pl) => pl - high - 1,
            };
            if gap > u32::MAX as u64 {
                break;
            }
            // Saturating: [0, u64::MAX] has 2^64 members.
            let full = (high - low).saturating_add(1);
            let len = full.min(u32::MAX as u64);
            let at = field::RANGES + written * field::RANGE_LEN;
            ext[at..at + 4].copy_from_slice(&(gap as u32).to_be_bytes());
            ext[at + 4..at + 8].copy_from_slice(&(len as u32).to_be_bytes());
            written += 1;
            prev_low = Some(high - (len - 1));
            if len != full {
                break;
            }
        }
        ext[field::RANGE_COUNT].copy_from_slice(&(written as u16).to_be_bytes());
    }
}
