//! The key-value layout inside a block's payload: keys hash onto blocks
//! ([`block_of`]), and each block's payload is a slotted page.
//!
//! ```text
//!  0        2          4      6      8                     P - heap_used            P
//!  +--------+----------+------+------+--------------------+------ ... ------------+
//!  | nslots | heap_used| dead | rsvd | slot dir: n x u16  | free | records (heap) |
//!  +--------+----------+------+------+--------------------+------ ... ------------+
//!
//!  record at a slot's offset:
//!  0      2      4                 12
//!  +------+------+-----------------+-----+-------+
//!  | klen | vlen | expires_at (ms) | key | value |
//!  +------+------+-----------------+-----+-------+
//! ```
//!
//! Little-endian u16s (payloads are at most 32 KiB − 32 B). The slot
//! directory grows up from the header, the heap down from the end; slots
//! are kept sorted by key, so a lookup is a binary search and iteration is
//! in key order. A replaced or deleted record becomes dead space (`dead`
//! bytes of the heap), reclaimed by compaction when an insert would not
//! fit otherwise. `expires_at` is an absolute time in ms, 0 for none: the
//! page only stores it, the caller's clock decides (SET EX/PX).
//!
//! An all-zero payload is the empty page, so an unformatted block (a fresh
//! datafile) needs no formatting.
//!
//! **No overflow chaining:** a record must fit in one page, and a value too
//! large for that is [`KvError::TooLarge`] (saying the maximum). Chaining
//! would make one key's write change several blocks, each with its own
//! master, lock and redo: the cache-fusion protocol stays one block per
//! change. A page with no room left is [`KvError::Full`], leaving the page
//! unchanged.
//!
//! Pages come from disk and the wire, so nothing here panics on any bytes:
//! [`check`] validates a whole page, mutations run it first (a change made
//! to a corrupt page would spread the damage), and reads are bounds-checked
//! (an unchecked malformed page gives errors or wrong answers, never a
//! panic).

use crate::io::{BlockNo, FileNo};
use std::fmt;

/// Page header bytes.
pub const PAGE_HEADER: usize = 8;
/// Bytes per slot (a record offset).
pub const SLOT: usize = 2;
/// Bytes of a record before its key.
pub const RECORD_HEADER: usize = 12;

/// Why a page or an operation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// The page is not a valid slotted page: where, and what is wrong.
    Corrupt { at: usize, why: &'static str },
    /// The page length is not one this layout can address.
    PageLength { len: usize },
    /// The record can never fit one page (no overflow chaining): `need`
    /// bytes (record and slot), `max` the most an empty page holds.
    TooLarge { need: usize, max: usize },
    /// Not enough room left in this page, even compacted.
    Full { need: usize, free: usize },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Corrupt { at, why } => write!(f, "corrupt page at byte {at}: {why}"),
            KvError::PageLength { len } => write!(f, "page length {len} out of range"),
            KvError::TooLarge { need, max } => write!(
                f,
                "record of {need} bytes exceeds the {max} a block can hold (no overflow chaining)"
            ),
            KvError::Full { need, free } => {
                write!(f, "block full: {need} bytes needed, {free} free")
            }
        }
    }
}

impl std::error::Error for KvError {}

/// A stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub value: &'a [u8],
    /// Absolute expiry in ms on the caller's clock.
    pub expires_at: Option<u64>,
}

impl Entry<'_> {
    /// Whether the value still exists at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        self.expires_at.is_none_or(|t| now_ms < t)
    }
}

/// What [`check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageStats {
    pub entries: usize,
    /// Contiguous free bytes between the slot directory and the heap.
    pub free: usize,
    /// Dead heap bytes, reclaimable by compaction.
    pub dead: usize,
}

/// The block holding `key`: FNV-1a 64 of the key bytes, modulo the number
/// of blocks, laid out file by file (files are 1-based, blocks 0-based).
/// Stable: it decides where data lives on disk, so it never changes
/// (fixed vectors in the tests). `None` when there are no blocks.
pub fn block_of(key: &[u8], files: FileNo, blocks_per_file: BlockNo) -> Option<(FileNo, BlockNo)> {
    let total = u64::from(files) * u64::from(blocks_per_file);
    if total == 0 {
        return None;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let i = h % total;
    let bpf = u64::from(blocks_per_file);
    Some(((i / bpf) as FileNo + 1, (i % bpf) as BlockNo))
}

/// The largest value a page of `page_len` bytes can hold under a key of
/// `key_len` bytes (0 when none).
pub fn max_value_len(page_len: usize, key_len: usize) -> usize {
    let room = page_len
        .min(u16::MAX as usize)
        .saturating_sub(PAGE_HEADER + SLOT + RECORD_HEADER + key_len);
    room.min(u16::MAX as usize)
}

fn corrupt(at: usize, why: &'static str) -> KvError {
    KvError::Corrupt { at, why }
}

fn rd16(p: &[u8], at: usize) -> Result<usize, KvError> {
    match p.get(at..at + 2) {
        Some(b) => Ok(u16::from_le_bytes([b[0], b[1]]) as usize),
        None => Err(corrupt(at, "field past the end")),
    }
}

fn wr16(p: &mut [u8], at: usize, v: usize) {
    if let Some(b) = p.get_mut(at..at + 2) {
        b.copy_from_slice(&(v as u16).to_le_bytes());
    }
}

/// The header fields, with the directory and heap bounds checked.
#[derive(Clone, Copy)]
struct Head {
    n: usize,
    heap_used: usize,
    dead: usize,
}

impl Head {
    fn heap_start(&self, p: &[u8]) -> usize {
        p.len() - self.heap_used
    }

    fn free(&self, p: &[u8]) -> usize {
        self.heap_start(p) - PAGE_HEADER - self.n * SLOT
    }

    fn store(&self, p: &mut [u8]) {
        wr16(p, 0, self.n);
        wr16(p, 2, self.heap_used);
        wr16(p, 4, self.dead);
    }
}

fn head(p: &[u8]) -> Result<Head, KvError> {
    if p.len() < PAGE_HEADER + SLOT + RECORD_HEADER || p.len() > u16::MAX as usize {
        return Err(KvError::PageLength { len: p.len() });
    }
    let h = Head {
        n: rd16(p, 0)?,
        heap_used: rd16(p, 2)?,
        dead: rd16(p, 4)?,
    };
    if rd16(p, 6)? != 0 {
        return Err(corrupt(6, "reserved field not zero"));
    }
    if h.heap_used > p.len() - PAGE_HEADER || PAGE_HEADER + h.n * SLOT > p.len() - h.heap_used {
        return Err(corrupt(0, "slot directory overlaps the heap"));
    }
    if h.dead > h.heap_used {
        return Err(corrupt(4, "more dead bytes than heap"));
    }
    Ok(h)
}

/// The record at `off`: key, entry, record length.
fn record(p: &[u8], off: usize) -> Result<(&[u8], Entry<'_>, usize), KvError> {
    let hdr = p
        .get(off..off + RECORD_HEADER)
        .ok_or_else(|| corrupt(off, "record header past the end"))?;
    let klen = u16::from_le_bytes([hdr[0], hdr[1]]) as usize;
    let vlen = u16::from_le_bytes([hdr[2], hdr[3]]) as usize;
    let mut t = [0u8; 8];
    t.copy_from_slice(&hdr[4..12]);
    let exp = u64::from_le_bytes(t);
    let len = RECORD_HEADER + klen + vlen;
    let body = p
        .get(off + RECORD_HEADER..off + len)
        .ok_or_else(|| corrupt(off, "record past the end"))?;
    let (key, value) = body.split_at(klen);
    let entry = Entry {
        value,
        expires_at: (exp != 0).then_some(exp),
    };
    Ok((key, entry, len))
}

fn slot_off(p: &[u8], h: &Head, i: usize) -> Result<usize, KvError> {
    let at = PAGE_HEADER + i * SLOT;
    let off = rd16(p, at)?;
    if off < h.heap_start(p) {
        return Err(corrupt(at, "slot points outside the heap"));
    }
    Ok(off)
}

/// Binary search: `Ok(slot)` of `key`, or `Err(insertion slot)`.
fn find(p: &[u8], h: &Head, key: &[u8]) -> Result<Result<usize, usize>, KvError> {
    let (mut lo, mut hi) = (0, h.n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (k, _, _) = record(p, slot_off(p, h, mid)?)?;
        match k.cmp(key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(Ok(mid)),
        }
    }
    Ok(Err(lo))
}

/// Validates the whole page: header bounds, every slot's record inside the
/// heap, keys strictly ascending, records not overlapping, and the dead
/// count exact (live + dead = heap). Never panics.
pub fn check(p: &[u8]) -> Result<PageStats, KvError> {
    let h = head(p)?;
    let mut spans = Vec::with_capacity(h.n);
    let mut prev: Option<&[u8]> = None;
    for i in 0..h.n {
        let off = slot_off(p, &h, i)?;
        let (key, _, len) = record(p, off)?;
        if prev.is_some_and(|k| k >= key) {
            return Err(corrupt(PAGE_HEADER + i * SLOT, "keys out of order"));
        }
        prev = Some(key);
        spans.push((off, len));
    }
    spans.sort_unstable();
    let mut live = 0;
    for w in spans.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(corrupt(w[1].0, "records overlap"));
        }
    }
    for s in &spans {
        live += s.1;
    }
    if live + h.dead != h.heap_used {
        return Err(corrupt(2, "heap size is not live + dead"));
    }
    Ok(PageStats {
        entries: h.n,
        free: h.free(p),
        dead: h.dead,
    })
}

/// The value of `key`, expired or not (see [`Entry::live`]).
pub fn get<'a>(p: &'a [u8], key: &[u8]) -> Result<Option<Entry<'a>>, KvError> {
    let h = head(p)?;
    match find(p, &h, key)? {
        Ok(i) => Ok(Some(record(p, slot_off(p, &h, i)?)?.1)),
        Err(_) => Ok(None),
    }
}

/// Entries on the page (expired ones included).
pub fn len(p: &[u8]) -> Result<usize, KvError> {
    Ok(head(p)?.n)
}

/// Empties the page (the all-zero page).
pub fn clear(p: &mut [u8]) {
    p.fill(0);
}

/// Sets `key` to `value`. On an error the page is unchanged.
pub fn put(p: &mut [u8], key: &[u8], value: &[u8], expires_at: Option<u64>) -> Result<(), KvError> {
    check(p)?;
    let rec = RECORD_HEADER + key.len() + value.len();
    let max = p.len() - PAGE_HEADER;
    if key.len() > u16::MAX as usize || value.len() > u16::MAX as usize || rec + SLOT > max {
        return Err(KvError::TooLarge {
            need: rec + SLOT,
            max,
        });
    }
    let mut h = head(p)?;
    let at = find(p, &h, key)?;
    let need = rec + if at.is_ok() { 0 } else { SLOT };
    let mut slot = match at {
        Ok(i) | Err(i) => i,
    };
    if need > h.free(p) {
        let old = match at {
            Ok(i) => record(p, slot_off(p, &h, i)?)?.2,
            Err(_) => 0,
        };
        let room = h.free(p) + h.dead + old;
        // A replaced record's slot is reused: `need` has no slot then.
        if need > room {
            return Err(KvError::Full { need, free: room });
        }
        if at.is_ok() {
            remove_slot(p, &mut h, slot, old);
        }
        compact(p, &mut h)?;
        slot = match find(p, &h, key)? {
            Ok(i) | Err(i) => i,
        };
        insert_slot(p, &mut h, slot);
    } else if let Ok(i) = at {
        h.dead += record(p, slot_off(p, &h, i)?)?.2;
    } else {
        insert_slot(p, &mut h, slot);
    }
    h.heap_used += rec;
    let off = p.len() - h.heap_used;
    let r = &mut p[off..off + rec];
    r[0..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
    r[2..4].copy_from_slice(&(value.len() as u16).to_le_bytes());
    // 0 means none: an expiry at 0 is as past as one at 1.
    let exp = expires_at.map_or(0, |t| t.max(1));
    r[4..12].copy_from_slice(&exp.to_le_bytes());
    r[RECORD_HEADER..RECORD_HEADER + key.len()].copy_from_slice(key);
    r[RECORD_HEADER + key.len()..].copy_from_slice(value);
    wr16(p, PAGE_HEADER + slot * SLOT, off);
    h.store(p);
    Ok(())
}

/// Removes `key`; whether it was there. On an error the page is unchanged.
pub fn delete(p: &mut [u8], key: &[u8]) -> Result<bool, KvError> {
    check(p)?;
    let mut h = head(p)?;
    let Ok(i) = find(p, &h, key)? else {
        return Ok(false);
    };
    let len = record(p, slot_off(p, &h, i)?)?.2;
    remove_slot(p, &mut h, i, len);
    h.store(p);
    Ok(true)
}

/// Opens a gap at slot `i` (the caller has checked the room).
fn insert_slot(p: &mut [u8], h: &mut Head, i: usize) {
    let at = PAGE_HEADER + i * SLOT;
    let end = PAGE_HEADER + h.n * SLOT;
    p.copy_within(at..end, at + SLOT);
    h.n += 1;
}

/// Drops slot `i`, its record (`len` bytes) becoming dead.
fn remove_slot(p: &mut [u8], h: &mut Head, i: usize, len: usize) {
    let at = PAGE_HEADER + i * SLOT;
    let end = PAGE_HEADER + h.n * SLOT;
    p.copy_within(at + SLOT..end, at);
    p[end - SLOT..end].fill(0);
    h.n -= 1;
    h.dead += len;
}

/// Rewrites the live records packed at the end of the page, in slot order,
/// and zeroes the free gap: the same entries always give the same bytes.
fn compact(p: &mut [u8], h: &mut Head) -> Result<(), KvError> {
    let mut live = Vec::with_capacity(h.heap_used - h.dead);
    let mut lens = Vec::with_capacity(h.n);
    for i in 0..h.n {
        let off = slot_off(p, h, i)?;
        let len = record(p, off)?.2;
        live.extend_from_slice(&p[off..off + len]);
        lens.push(len);
    }
    let end = p.len();
    let start = end - live.len();
    p[PAGE_HEADER + h.n * SLOT..start].fill(0);
    p[start..].copy_from_slice(&live);
    let mut off = start;
    for (i, len) in lens.into_iter().enumerate() {
        wr16(p, PAGE_HEADER + i * SLOT, off);
        off += len;
    }
    h.heap_used = live.len();
    h.dead = 0;
    Ok(())
}

/// The entries in key order, after a full [`check`].
pub fn iter(p: &[u8]) -> Result<Iter<'_>, KvError> {
    check(p)?;
    Ok(Iter {
        p,
        h: head(p)?,
        i: 0,
    })
}

/// See [`iter`].
pub struct Iter<'a> {
    p: &'a [u8],
    h: Head,
    i: usize,
}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kv::Iter({} of {})", self.i, self.h.n)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], Entry<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.h.n {
            return None;
        }
        let off = slot_off(self.p, &self.h, self.i).ok()?;
        self.i += 1;
        let (k, e, _) = record(self.p, off).ok()?;
        Some((k, e))
    }
}
