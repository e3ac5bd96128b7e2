//! The redo log record format: append-only, checksummed, chained records,
//! written in groups (group commit) padded to whole sectors, and the
//! scanner recovery reads a log tail with.
//!
//! ```text
//!  0      4      8          16         24         32      36     38      40        44   45     48
//!  +------+------+----------+----------+----------+-------+------+-------+---------+----+------+------+--------+
//!  | ICXR | len  | LSN      | SCN      | base SCN | prev  | node | file# | block#  | op | rsvd | body | crc32c |
//!  +------+------+----------+----------+----------+-------+------+-------+---------+----+------+------+--------+
//!
//!  body of op 1, put:    klen u16 | vlen u16 | rsvd u32 | expires_at u64 (0: none) | key | value
//!  body of op 2, delete: klen u16 | key
//!  body of op 3, clear:  (empty)
//!  body of op 0, pad:    zeroes (fills a group to a sector boundary)
//! ```
//!
//! Little-endian. `len` is the whole record, CRC32C included; the CRC
//! covers every byte before it. `LSN` is the record's byte offset in its
//! node's log, and `prev` the CRC of the record just before it (0 for the
//! first). The LSN catches a record read from the wrong place; the chain
//! catches what a torn write leaves behind: after a crash the log is
//! appended again from the end of its valid part, and a later, intact
//! record of the torn group can sit beyond a shorter new group at exactly
//! its own LSN, but it no longer follows its own predecessor.
//!
//! **What a record carries:** the key-value change to one block, logically
//! (the key, and the value with its expiry), with the block's address and
//! the change's SCN and the SCN of the version it was made on (`base`:
//! each block's records chain, so a replay that meets a record whose base
//! is not the image's SCN knows a record is missing: the image it started
//! from is older than the checkpoint that freed them). Recovery redoes it with [`apply`] onto the block image
//! on disk, which is older: the change is redone when the image's SCN is
//! below the record's, skipped otherwise (the image has it already), so a
//! record applies at most once. The live path makes the change with
//! [`apply_change`] too: the page a replay builds is byte for byte the one
//! the change built. This needs each change to a block to have an SCN
//! above the block's previous one, and recovery to replay a block's
//! records (from all nodes' logs) in SCN order. A logical record is a few
//! dozen bytes where an after-image of the block would be 8 KiB or more.

use crate::block::{self, BlockError, Header, Kind, Scn};
use crate::io::{BlockNo, FileNo};
use crate::kv::{self, KvError};
use icx_core::NodeId;
use std::fmt;

pub const MAGIC: [u8; 4] = *b"ICXR";
/// Bytes before the body.
pub const HEADER_LEN: usize = 48;
/// The smallest record (an empty body): a pad at least this long.
pub const MIN_RECORD: usize = HEADER_LEN + 4;
/// Groups end on this boundary, so an `O_DIRECT` append of whole groups
/// starts and ends on sectors.
pub const SECTOR: usize = 512;
/// No record is larger (a put's key and value are at most 64 KiB each).
pub const MAX_RECORD: usize = 1 << 18;

const OP_PAD: u8 = 0;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CLEAR: u8 = 3;

/// A change to one block's key-value page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        expires_at: Option<u64>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Empties the block (FLUSHALL).
    Clear,
}

/// One redo record: which block, at which SCN, by which node, what change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub scn: Scn,
    /// The SCN of the version the change was made on (0: a blank block).
    pub base: Scn,
    pub node: NodeId,
    pub file: FileNo,
    pub block: BlockNo,
    pub change: Change,
}

/// Where the next record of a log goes: its LSN, and the CRC of the
/// record before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tail {
    pub lsn: u64,
    pub prev: u32,
}

/// Why a record could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A key or value longer than 64 KiB − 1.
    TooLarge { key: usize, value: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { key, value } => write!(
                f,
                "redo record too large: key {key} B, value {value} B (at most 65535 each)"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends one record at `tail` and advances it.
fn encode_one(out: &mut Vec<u8>, tail: &mut Tail, r: &Record, op: u8, body: &[u8]) {
    let start = out.len();
    let len = HEADER_LEN + body.len() + 4;
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&tail.lsn.to_le_bytes());
    out.extend_from_slice(&r.scn.to_le_bytes());
    out.extend_from_slice(&r.base.to_le_bytes());
    out.extend_from_slice(&tail.prev.to_le_bytes());
    put_u16(out, r.node.0);
    put_u16(out, r.file);
    out.extend_from_slice(&r.block.to_le_bytes());
    out.extend_from_slice(&[op, 0, 0, 0]);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    tail.lsn += len as u64;
    tail.prev = crc;
}

/// Whether `c` can be encoded (its key and value fit their u16 lengths):
/// checked before a change is made, so its record never fails to encode.
pub fn check_change(c: &Change) -> Result<(), EncodeError> {
    let (key, value) = match c {
        Change::Put { key, value, .. } => (key.len(), value.len()),
        Change::Delete { key } => (key.len(), 0),
        Change::Clear => (0, 0),
    };
    if key > u16::MAX as usize || value > u16::MAX as usize {
        return Err(EncodeError::TooLarge { key, value });
    }
    Ok(())
}

fn body(c: &Change) -> Result<(u8, Vec<u8>), EncodeError> {
    check_change(c)?;
    Ok(match c {
        Change::Put {
            key,
            value,
            expires_at,
        } => {
            let mut b = Vec::with_capacity(16 + key.len() + value.len());
            put_u16(&mut b, key.len() as u16);
            put_u16(&mut b, value.len() as u16);
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&expires_at.map_or(0, |t| t.max(1)).to_le_bytes());
            b.extend_from_slice(key);
            b.extend_from_slice(value);
            (OP_PUT, b)
        }
        Change::Delete { key } => {
            let mut b = Vec::with_capacity(2 + key.len());
            put_u16(&mut b, key.len() as u16);
            b.extend_from_slice(key);
            (OP_DELETE, b)
        }
        Change::Clear => (OP_CLEAR, Vec::new()),
    })
}

/// The bytes of one group commit at `tail`, which it advances: the
/// records, then a pad record up to the next [`SECTOR`] boundary (so
/// groups written one after another from LSN 0 stay sector-aligned). On
/// an error nothing is encoded and `tail` is unchanged.
pub fn encode_group(tail: &mut Tail, records: &[Record]) -> Result<Vec<u8>, EncodeError> {
    let bodies = records
        .iter()
        .map(|r| body(&r.change))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (r, (op, b)) in records.iter().zip(&bodies) {
        encode_one(&mut out, tail, r, *op, b);
    }
    let mut pad = (SECTOR - (tail.lsn % SECTOR as u64) as usize) % SECTOR;
    if pad != 0 && pad < MIN_RECORD {
        pad += SECTOR;
    }
    if pad != 0 {
        let r = Record {
            scn: 0,
            base: 0,
            node: NodeId(0),
            file: 0,
            block: 0,
            change: Change::Clear,
        };
        encode_one(&mut out, tail, &r, OP_PAD, &vec![0; pad - MIN_RECORD]);
    }
    Ok(out)
}

/// Why a scan stopped before the end of the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Torn {
    /// The record runs past the bytes read: a torn tail (or the end of a
    /// chunk: read on from [`Scan::end`]).
    Truncated {
        len: usize,
        have: usize,
    },
    Magic,
    /// A length below [`MIN_RECORD`] or above [`MAX_RECORD`].
    Length(u32),
    Checksum {
        stored: u32,
        computed: u32,
    },
    /// A valid record, from another place of the log.
    Lsn {
        found: u64,
    },
    /// A valid record at its place, but not the successor of the record
    /// before it: left over from before a crash.
    Chain {
        prev: u32,
        expected: u32,
    },
    /// Checksummed, but its op or body is malformed.
    Body(&'static str),
}

impl fmt::Display for Torn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Torn::Truncated { len, have } => {
                write!(f, "record of {len} B cut after {have} B")
            }
            Torn::Magic => f.write_str("bad magic"),
            Torn::Length(l) => write!(f, "impossible record length {l}"),
            Torn::Checksum { stored, computed } => {
                write!(f, "checksum {stored:#010x}, computed {computed:#010x}")
            }
            Torn::Lsn { found } => write!(f, "record of LSN {found} out of place"),
            Torn::Chain { prev, expected } => write!(
                f,
                "stale record: follows {prev:#010x}, the record before is {expected:#010x}"
            ),
            Torn::Body(why) => write!(f, "malformed body: {why}"),
        }
    }
}

/// How a scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The bytes ended at a record boundary, or only zeroes (never written
    /// space) follow.
    End,
    /// At LSN `at`, something that is not a valid next record.
    Torn { at: u64, why: Torn },
}

/// What [`scan`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The valid records, with their LSNs (pads left out).
    pub records: Vec<(u64, Record)>,
    /// Where the valid log ends: the next append goes here.
    pub end: Tail,
    pub stop: Stop,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// One record from the start of `b` (at `lsn`, after the record whose CRC
/// is `prev`, if known): the record (`None` for a pad), its length, its CRC.
fn parse(b: &[u8], lsn: u64, prev: Option<u32>) -> Result<(Option<Record>, usize, u32), Torn> {
    if b.len() < 8 {
        return Err(Torn::Truncated {
            len: MIN_RECORD,
            have: b.len(),
        });
    }
    if b[..4] != MAGIC {
        return Err(Torn::Magic);
    }
    let len32 = le32(b, 4);
    let len = len32 as usize;
    if !(MIN_RECORD..=MAX_RECORD).contains(&len) {
        return Err(Torn::Length(len32));
    }
    if b.len() < len {
        return Err(Torn::Truncated { len, have: b.len() });
    }
    let r = &b[..len];
    let stored = le32(r, len - 4);
    let computed = crc32c::crc32c(&r[..len - 4]);
    if stored != computed {
        return Err(Torn::Checksum { stored, computed });
    }
    let found = le64(r, 8);
    if found != lsn {
        return Err(Torn::Lsn { found });
    }
    let back = le32(r, 32);
    if let Some(expected) = prev.filter(|&p| p != back) {
        return Err(Torn::Chain {
            prev: back,
            expected,
        });
    }
    let op = r[44];
    if r[45..48] != [0; 3] {
        return Err(Torn::Body("reserved bytes not zero"));
    }
    let body = &r[HEADER_LEN..len - 4];
    let change = match op {
        OP_PAD => {
            if body.iter().any(|&x| x != 0) || r[16..32] != [0; 16] || r[36..44] != [0; 8] {
                return Err(Torn::Body("pad not zero"));
            }
            return Ok((None, len, stored));
        }
        OP_PUT => {
            if body.len() < 16 {
                return Err(Torn::Body("put shorter than its fields"));
            }
            let (k, v) = (le16(body, 0) as usize, le16(body, 2) as usize);
            if body.len() != 16 + k + v || body[4..8] != [0; 4] {
                return Err(Torn::Body("put lengths disagree"));
            }
            let exp = le64(body, 8);
            Change::Put {
                key: body[16..16 + k].to_vec(),
                value: body[16 + k..].to_vec(),
                expires_at: (exp != 0).then_some(exp),
            }
        }
        OP_DELETE => {
            if body.len() < 2 || body.len() != 2 + le16(body, 0) as usize {
                return Err(Torn::Body("delete length disagrees"));
            }
            Change::Delete {
                key: body[2..].to_vec(),
            }
        }
        OP_CLEAR => {
            if !body.is_empty() {
                return Err(Torn::Body("clear with a body"));
            }
            Change::Clear
        }
        _ => return Err(Torn::Body("unknown op")),
    };
    let rec = Record {
        scn: le64(r, 16),
        base: le64(r, 24),
        node: NodeId(le16(r, 36)),
        file: le16(r, 38),
        block: le32(r, 40),
        change,
    };
    Ok((Some(rec), len, stored))
}

/// Reads records from `bytes`, the log from LSN `start` on, and stops
/// cleanly at the first thing that is not a valid next record (saying
/// where and why). `prev` is the CRC of the record before `start` when
/// known (`Some(0)` at the start of a log), checked against the first
/// record's chain field; `None` trusts it. Never panics.
pub fn scan(bytes: &[u8], start: u64, prev: Option<u32>) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut prev = prev;
    let mut end = Tail {
        lsn: start,
        prev: prev.unwrap_or(0),
    };
    let stop = loop {
        let rest = &bytes[at..];
        // Zeroes are checked for only where no record starts: once.
        if !rest.starts_with(&MAGIC) && rest.iter().all(|&b| b == 0) {
            break Stop::End;
        }
        match parse(rest, end.lsn, prev) {
            Ok((rec, len, crc)) => {
                let Some(next) = end.lsn.checked_add(len as u64) else {
                    break Stop::Torn {
                        at: end.lsn,
                        why: Torn::Length(len as u32),
                    };
                };
                if let Some(r) = rec {
                    records.push((end.lsn, r));
                }
                at += len;
                end = Tail {
                    lsn: next,
                    prev: crc,
                };
                prev = Some(crc);
            }
            Err(why) => break Stop::Torn { at: end.lsn, why },
        }
    };
    Scan { records, end, stop }
}

/// Why a record could not be redone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// The block image failed its checks (or is another block).
    Block(BlockError),
    /// The page refused the change (corrupt, or not the image the change
    /// was made on).
    Kv(KvError),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Block(e) => write!(f, "block: {e}"),
            ApplyError::Kv(e) => write!(f, "page: {e}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Redone: the image is at the record's SCN now.
    Redone,
    /// The image was already at or past the record's SCN.
    Skipped { block_scn: Scn },
}

/// Makes `change` on a key-value page (a block's payload): the live path
/// and [`apply`] both, so a replay builds the same bytes.
pub fn apply_change(change: &Change, page: &mut [u8]) -> Result<(), KvError> {
    match change {
        Change::Put {
            key,
            value,
            expires_at,
        } => kv::put(page, key, value, *expires_at),
        Change::Delete { key } => kv::delete(page, key).map(|_| ()),
        Change::Clear => {
            kv::clear(page);
            Ok(())
        }
    }
}

/// Redoes `rec` onto `img`, a whole block image (verified as the record's
/// block): the change when the image is older than the record, then the
/// image resealed at the record's SCN. On an error the image is unchanged.
pub fn apply(rec: &Record, img: &mut [u8]) -> Result<Applied, ApplyError> {
    let h = block::verify(img, rec.file, rec.block).map_err(ApplyError::Block)?;
    if h.scn >= rec.scn {
        return Ok(Applied::Skipped { block_scn: h.scn });
    }
    apply_change(&rec.change, block::payload_mut(img)).map_err(ApplyError::Kv)?;
    block::seal(
        img,
        &Header {
            kind: Kind::Data,
            file: rec.file,
            block: rec.block,
            scn: rec.scn,
        },
    );
    Ok(Applied::Redone)
}

/// What [`replay`] did to one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Records redone.
    pub applied: u64,
    /// Records newer than the final image that could not be redone: made
    /// on a version the replay never reached. From a past image this means
    /// the image is older than what a checkpoint freed the redo of: start
    /// again from the disk.
    pub unreached: u64,
    /// The first record the page refused (the replay stopped there).
    pub failed: Option<(Scn, NodeId, ApplyError)>,
}

/// Redoes one block's records (from every node's log, in any order) onto
/// `img`, each only onto the version it was made on: in SCN order,
/// following the chain of `base` SCNs, so a missing record is seen (the
/// records after it stay unreached) rather than replayed past.
pub fn replay(recs: &mut [Record], img: &mut [u8]) -> Replay {
    recs.sort_by_key(|r| r.scn);
    let mut out = Replay {
        applied: 0,
        unreached: 0,
        failed: None,
    };
    let mut cur = None;
    for r in recs.iter() {
        let scn = match block::verify(img, r.file, r.block) {
            Ok(h) => h.scn,
            Err(e) => {
                out.failed = Some((r.scn, r.node, ApplyError::Block(e)));
                return out;
            }
        };
        cur = Some(scn);
        if r.scn <= scn || r.base != scn {
            continue;
        }
        match apply(r, img) {
            Ok(_) => {
                out.applied += 1;
                cur = Some(r.scn);
            }
            Err(e) => {
                out.failed = Some((r.scn, r.node, e));
                return out;
            }
        }
    }
    // An orphan the image passed later is not missing.
    let last = cur.unwrap_or(0);
    out.unreached = recs.iter().filter(|r| r.scn > last).count() as u64;
    out
}
