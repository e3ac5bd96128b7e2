//! Wire and disk formats: the network heartbeat (NHB), the voting-file
//! record (DHB) and the voting-file header.
//!
//! A heartbeat and a record carry the same body, a node's [`Status`]; only
//! the magic differs, and a record never carries relayed votes. All
//! integers are little-endian; every message ends in a CRC32C of all bytes
//! before it and carries its own length, so a truncated, padded or garbled
//! one is refused ([`ParseError`]), never half-read.
//!
//! ```text
//!  0      4    6  7  8  9  10     14   16   18     22   24   26     34      42      50
//!  +------+----+--+--+--+--+------+----+----+------+----+----+------+-------+-------+
//!  |magic |len |v |fl|st|rs|clustr|nods|node|incarn|wght|beat|countr|view in|epoch  |
//!  +------+----+--+--+--+--+------+----+----+------+----+----+------+-------+-------+
//!  flags: 1 critical, 2 has vote, 4 has decided, 8 ready, 16 leaving;
//!  beat: the heartbeat sequence number (u16, wrapping; one per heartbeat
//!  round, the same to every peer), 0 in records.
//!  then, with B = ceil(nodes / 8):
//!    view members [B], their incarnations u32 x |view|
//!    hears [B]
//!    vote [B]              if flags & HAS_VOTE
//!    decided [B]           if flags & HAS_DECIDED
//!    kills u16, then (node u16, incarnation u32) x kills
//!    relayed votes u16, then (node u16, incarnation u32, weight u16,
//!                             flags u8, epoch u64, conn [B]) x votes
//!    crc32c u32 of everything above
//! ```
//!
//! Compatibility: `leaving` (flag 16) and `beat` took a flag bit and the
//! u16 that version 1 reserved (written as zero, never read), so the
//! version stays 1: a parser that predates them reads such a status, with
//! `leaving` and `beat` ignored, and a status without them parses here as
//! `leaving = false`, `beat = 0`. Flag bits above 16 are ignored.

use crate::nodeset::{bitmap_len, NodeSet, MAX_NODES};
use icx_core::NodeId;
use std::fmt;

/// Network heartbeat magic, "ICXH".
pub const NHB_MAGIC: u32 = u32::from_le_bytes(*b"ICXH");
/// Voting-file record magic, "ICXR".
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"ICXR");
pub const VERSION: u8 = 1;

const FIXED: usize = 50;
const CRC: usize = 4;

const F_CRITICAL: u8 = 1;
const F_HAS_VOTE: u8 = 2;
const F_HAS_DECIDED: u8 = 4;
const F_READY: u8 = 8;
const F_LEAVING: u8 = 16;

/// A node's life as the cluster sees it (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Started, not (yet) in a view: does not serve.
    Joining = 1,
    /// A member of the current view: serves.
    Active = 2,
    /// Lost a reconfiguration (or was killed): I/O stopped, not restarting.
    Evicted = 3,
    /// Stopped its I/O by itself (lost, killed, stalled, lost the voting
    /// files); restarts as `Joining` with a new incarnation.
    Fenced = 4,
}

impl State {
    fn from_u8(v: u8) -> Option<State> {
        Some(match v {
            1 => State::Joining,
            2 => State::Active,
            3 => State::Evicted,
            4 => State::Fenced,
            _ => return None,
        })
    }

    /// The name `INFO membership` shows.
    pub fn name(self) -> &'static str {
        match self {
            State::Joining => "joining",
            State::Active => "active",
            State::Evicted => "evicted",
            State::Fenced => "fenced",
        }
    }
}

/// A node's frozen vote in a reconfiguration: whom it hears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vote {
    pub node: NodeId,
    pub incarnation: u32,
    pub epoch: u64,
    pub weight: u16,
    /// Joining nodes say whether they may be admitted (no kill against them,
    /// voting files in reach); members always may.
    pub ready: bool,
    pub conn: NodeSet,
}

/// What a node says about itself, every heartbeat and every record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub cluster: u32,
    /// Configured nodes.
    pub nodes: u16,
    pub node: NodeId,
    pub incarnation: u32,
    pub state: State,
    pub critical: bool,
    pub ready: bool,
    /// The sender is leaving the cluster (graceful shutdown): it has
    /// stopped its I/O and is no voter and no cohort member from now on.
    pub leaving: bool,
    pub weight: u16,
    /// Heartbeat sequence number: one per heartbeat round (wrapping), so a
    /// receiver counts the heartbeats it missed. 0 in records.
    pub beat: u16,
    /// Heartbeat counter: rises on every heartbeat or record written.
    pub counter: u64,
    /// The sender's committed view: cluster incarnation and members with
    /// their incarnations (empty while joining).
    pub view_incarnation: u64,
    pub view: Vec<(NodeId, u32)>,
    /// Nodes the sender hears on the network (within misscount).
    pub hears: NodeSet,
    /// The reconfiguration the sender is in or last took part in.
    pub epoch: u64,
    pub vote: Option<NodeSet>,
    pub decided: Option<NodeSet>,
    /// Nodes (and the incarnation) the sender is killing.
    pub kills: Vec<(NodeId, u32)>,
    /// Votes of others the sender relays (heartbeats only).
    pub relayed: Vec<Vote>,
}

impl Status {
    pub fn view_set(&self) -> NodeSet {
        self.view.iter().map(|(n, _)| *n).collect()
    }

    /// The sender's own vote, if it has one.
    pub fn own_vote(&self) -> Option<Vote> {
        self.vote.map(|conn| Vote {
            node: self.node,
            incarnation: self.incarnation,
            epoch: self.epoch,
            weight: self.weight,
            ready: self.ready,
            conn,
        })
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        let b = bitmap_len(self.nodes);
        FIXED
            + b
            + 4 * self.view.len()
            + b
            + if self.vote.is_some() { b } else { 0 }
            + if self.decided.is_some() { b } else { 0 }
            + 2
            + 6 * self.kills.len()
            + 2
            + self.relayed.len() * (17 + b)
            + CRC
    }

    /// The length a record or heartbeat claims (its `len` field), if the
    /// bytes hold one.
    pub fn claimed_len(bytes: &[u8]) -> Option<usize> {
        let l = bytes.get(4..6)?;
        Some(usize::from(u16::from_le_bytes([l[0], l[1]])))
    }

    /// Appends the encoding with `magic` ([`NHB_MAGIC`] or [`RECORD_MAGIC`]).
    ///
    /// Sets that name nodes above `nodes` lose them; lists longer than
    /// `nodes` are cut (neither happens to a status this crate builds).
    pub fn encode(&self, magic: u32, out: &mut Vec<u8>) {
        let n = self.nodes;
        let start = out.len();
        let mut flags = 0;
        if self.critical {
            flags |= F_CRITICAL;
        }
        if self.vote.is_some() {
            flags |= F_HAS_VOTE;
        }
        if self.decided.is_some() {
            flags |= F_HAS_DECIDED;
        }
        if self.ready {
            flags |= F_READY;
        }
        if self.leaving {
            flags |= F_LEAVING;
        }
        out.extend_from_slice(&magic.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // length, below
        out.push(VERSION);
        out.push(flags);
        out.push(self.state as u8);
        out.push(0);
        out.extend_from_slice(&self.cluster.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        out.extend_from_slice(&self.weight.to_le_bytes());
        out.extend_from_slice(&self.beat.to_le_bytes());
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&self.view_incarnation.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        let view: Vec<(NodeId, u32)> = {
            let mut v: Vec<_> = self
                .view
                .iter()
                .copied()
                .filter(|(id, _)| id.0 >= 1 && id.0 <= n)
                .collect();
            v.sort_unstable();
            v.dedup_by_key(|(id, _)| *id);
            v
        };
        view.iter()
            .map(|(id, _)| *id)
            .collect::<NodeSet>()
            .write(n, out);
        for (_, inc) in &view {
            out.extend_from_slice(&inc.to_le_bytes());
        }
        self.hears.write(n, out);
        if let Some(v) = &self.vote {
            v.write(n, out);
        }
        if let Some(d) = &self.decided {
            d.write(n, out);
        }
        let kills = &self.kills[..self.kills.len().min(usize::from(n))];
        out.extend_from_slice(&(kills.len() as u16).to_le_bytes());
        for (id, inc) in kills {
            out.extend_from_slice(&id.0.to_le_bytes());
            out.extend_from_slice(&inc.to_le_bytes());
        }
        let relayed = &self.relayed[..self.relayed.len().min(usize::from(n))];
        out.extend_from_slice(&(relayed.len() as u16).to_le_bytes());
        for v in relayed {
            out.extend_from_slice(&v.node.0.to_le_bytes());
            out.extend_from_slice(&v.incarnation.to_le_bytes());
            out.extend_from_slice(&v.weight.to_le_bytes());
            out.push(u8::from(v.ready));
            out.extend_from_slice(&v.epoch.to_le_bytes());
            v.conn.write(n, out);
        }
        let len = (out.len() - start + CRC) as u16;
        out[start + 4..start + 6].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Parses one status with `magic` from the start of `bytes` (a record's
    /// slot may be longer: the zero padding after the status is ignored).
    pub fn parse(magic: u32, bytes: &[u8]) -> Result<Status, ParseError> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.u32()? != magic {
            return Err(ParseError::BadMagic);
        }
        let len = usize::from(r.u16()?);
        if len < FIXED + CRC || len > bytes.len() {
            return Err(ParseError::BadLength);
        }
        let body = &bytes[..len - CRC];
        let crc = u32::from_le_bytes([
            bytes[len - 4],
            bytes[len - 3],
            bytes[len - 2],
            bytes[len - 1],
        ]);
        if crc32c::crc32c(body) != crc {
            return Err(ParseError::BadChecksum);
        }
        let mut r = Reader { b: body, at: 6 };
        if r.u8()? != VERSION {
            return Err(ParseError::BadVersion);
        }
        let flags = r.u8()?;
        let state = State::from_u8(r.u8()?).ok_or(ParseError::Invalid("state"))?;
        r.u8()?;
        let cluster = r.u32()?;
        let n = r.u16()?;
        if n == 0 || n > MAX_NODES {
            return Err(ParseError::Invalid("node count"));
        }
        let node = NodeId(r.u16()?);
        if node.0 == 0 || node.0 > n {
            return Err(ParseError::Invalid("node"));
        }
        let incarnation = r.u32()?;
        let weight = r.u16()?;
        let beat = r.u16()?;
        let counter = r.u64()?;
        let view_incarnation = r.u64()?;
        let epoch = r.u64()?;
        let b = bitmap_len(n);
        let members = r.set(n, b)?;
        let mut view = Vec::with_capacity(members.len());
        for id in members.iter() {
            view.push((id, r.u32()?));
        }
        let hears = r.set(n, b)?;
        let vote = if flags & F_HAS_VOTE != 0 {
            Some(r.set(n, b)?)
        } else {
            None
        };
        let decided = if flags & F_HAS_DECIDED != 0 {
            Some(r.set(n, b)?)
        } else {
            None
        };
        let nk = r.u16()?;
        if nk > n {
            return Err(ParseError::Invalid("kill count"));
        }
        let mut kills = Vec::with_capacity(usize::from(nk));
        for _ in 0..nk {
            let id = NodeId(r.u16()?);
            if id.0 == 0 || id.0 > n {
                return Err(ParseError::Invalid("kill node"));
            }
            kills.push((id, r.u32()?));
        }
        let nv = r.u16()?;
        if nv > n {
            return Err(ParseError::Invalid("vote count"));
        }
        let mut relayed = Vec::with_capacity(usize::from(nv));
        for _ in 0..nv {
            let id = NodeId(r.u16()?);
            if id.0 == 0 || id.0 > n {
                return Err(ParseError::Invalid("vote node"));
            }
            let incarnation = r.u32()?;
            let weight = r.u16()?;
            let ready = r.u8()? & 1 != 0;
            let epoch = r.u64()?;
            let conn = r.set(n, b)?;
            relayed.push(Vote {
                node: id,
                incarnation,
                epoch,
                weight,
                ready,
                conn,
            });
        }
        if r.at != body.len() {
            return Err(ParseError::BadLength);
        }
        Ok(Status {
            cluster,
            nodes: n,
            node,
            incarnation,
            state,
            critical: flags & F_CRITICAL != 0,
            ready: flags & F_READY != 0,
            leaving: flags & F_LEAVING != 0,
            weight,
            beat,
            counter,
            view_incarnation,
            view,
            hears,
            epoch,
            vote,
            decided,
            kills,
            relayed,
        })
    }
}

/// Why bytes were not a heartbeat, record or header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Truncated,
    BadMagic,
    BadVersion,
    BadLength,
    BadChecksum,
    Invalid(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated => f.write_str("truncated"),
            ParseError::BadMagic => f.write_str("bad magic"),
            ParseError::BadVersion => f.write_str("unknown version"),
            ParseError::BadLength => f.write_str("bad length"),
            ParseError::BadChecksum => f.write_str("bad checksum"),
            ParseError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ParseError> {
        let end = self.at.checked_add(n).ok_or(ParseError::Truncated)?;
        let s = self.b.get(self.at..end).ok_or(ParseError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, ParseError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn set(&mut self, n: u16, b: usize) -> Result<NodeSet, ParseError> {
        NodeSet::read(n, self.take(b)?).ok_or(ParseError::Invalid("node set"))
    }
}

/// Voting-file header magic.
pub const FILE_MAGIC: [u8; 8] = *b"ICXVOTE1";
/// The header block at offset 0; slot `n` starts at
/// `HEADER_SIZE + (n - 1) * slot_size`.
pub const HEADER_SIZE: usize = 512;

/// A voting file's header: which cluster, how many slots, how big.
///
/// ```text
///  0        8    10   12     16     20     24
///  +--------+----+----+------+------+------+
///  | magic  |ver |nods|clustr|slot  |crc32c|   rest of the 512 B block zero
///  +--------+----+----+------+------+------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub cluster: u32,
    pub nodes: u16,
    pub slot_size: u32,
}

/// What the first bytes of a voting file say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Never formatted: empty or all zero.
    Blank,
    Formatted(FileHeader),
    Garbage(ParseError),
}

impl FileHeader {
    /// The slot size for `nodes`: room for the largest record and its MAC
    /// (written with a cluster key; room kept without one, so turning a key
    /// on needs no new format), in 512 B units.
    pub fn for_cluster(cluster: u32, nodes: u16) -> FileHeader {
        let b = bitmap_len(nodes);
        let n = usize::from(nodes);
        let max = FIXED + 4 * b + 4 * n + 2 + 6 * n + 2 + CRC + icx_wire::auth::RECORD_MAC_LEN;
        FileHeader {
            cluster,
            nodes,
            slot_size: max.div_ceil(512) as u32 * 512,
        }
    }

    pub fn slot_offset(&self, node: NodeId) -> u64 {
        HEADER_SIZE as u64 + u64::from(node.0.saturating_sub(1)) * u64::from(self.slot_size)
    }

    pub fn file_len(&self) -> u64 {
        HEADER_SIZE as u64 + u64::from(self.nodes) * u64::from(self.slot_size)
    }

    /// The whole formatted file: this header and zeroed slots.
    pub fn format(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.file_len() as usize];
        v[0..8].copy_from_slice(&FILE_MAGIC);
        v[8..10].copy_from_slice(&u16::from(VERSION).to_le_bytes());
        v[10..12].copy_from_slice(&self.nodes.to_le_bytes());
        v[12..16].copy_from_slice(&self.cluster.to_le_bytes());
        v[16..20].copy_from_slice(&self.slot_size.to_le_bytes());
        let crc = crc32c::crc32c(&v[..20]);
        v[20..24].copy_from_slice(&crc.to_le_bytes());
        v
    }

    pub fn check(bytes: &[u8]) -> HeaderCheck {
        let head = &bytes[..bytes.len().min(HEADER_SIZE)];
        if head.iter().all(|&b| b == 0) {
            return HeaderCheck::Blank;
        }
        if head.len() < 24 {
            return HeaderCheck::Garbage(ParseError::Truncated);
        }
        if head[0..8] != FILE_MAGIC {
            return HeaderCheck::Garbage(ParseError::BadMagic);
        }
        let crc = u32::from_le_bytes([head[20], head[21], head[22], head[23]]);
        if crc32c::crc32c(&head[..20]) != crc {
            return HeaderCheck::Garbage(ParseError::BadChecksum);
        }
        if u16::from_le_bytes([head[8], head[9]]) != u16::from(VERSION) {
            return HeaderCheck::Garbage(ParseError::BadVersion);
        }
        HeaderCheck::Formatted(FileHeader {
            nodes: u16::from_le_bytes([head[10], head[11]]),
            cluster: u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
            slot_size: u32::from_le_bytes([head[16], head[17], head[18], head[19]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(n: u16) -> Status {
        let all = NodeSet::first(n);
        Status {
            cluster: 7,
            nodes: n,
            node: NodeId(n),
            incarnation: 3,
            state: State::Active,
            critical: true,
            ready: true,
            leaving: false,
            weight: 1,
            beat: 0x0102,
            counter: 99,
            view_incarnation: 12,
            view: all.iter().map(|id| (id, u32::from(id.0))).collect(),
            hears: all,
            epoch: 13,
            vote: Some(all),
            decided: Some(NodeSet::single(NodeId(1))),
            kills: vec![(NodeId(1), 2)],
            relayed: vec![Vote {
                node: NodeId(1),
                incarnation: 4,
                epoch: 13,
                weight: 0,
                ready: true,
                conn: all,
            }],
        }
    }

    #[test]
    fn round_trip_and_record_fits_slot() {
        for n in [1u16, 2, 3, 8, 9, 128, 255] {
            let s = sample(n);
            let mut v = Vec::new();
            s.encode(NHB_MAGIC, &mut v);
            assert_eq!(v.len(), s.encoded_len());
            assert_eq!(Status::parse(NHB_MAGIC, &v), Ok(s.clone()));
            assert_eq!(Status::parse(RECORD_MAGIC, &v), Err(ParseError::BadMagic));
            // A record (no relayed votes, every node killed) fits its slot.
            let mut r = s.clone();
            r.relayed.clear();
            r.kills = (1..=n).map(|i| (NodeId(i), 1)).collect();
            let h = FileHeader::for_cluster(7, n);
            assert!(r.encoded_len() <= h.slot_size as usize, "{n}");
            // Zero padding after a record is ignored.
            let mut slot = Vec::new();
            r.encode(RECORD_MAGIC, &mut slot);
            slot.resize(h.slot_size as usize, 0);
            assert_eq!(Status::parse(RECORD_MAGIC, &slot), Ok(r));
        }
    }

    /// A small heartbeat, assembled byte by byte from the diagram above: the
    /// encoder writes exactly these bytes and the parser reads them back.
    fn fixed_vector() -> (Status, Vec<u8>) {
        let s = Status {
            cluster: 7,
            nodes: 3,
            node: NodeId(2),
            incarnation: 5,
            state: State::Active,
            critical: false,
            ready: true,
            leaving: true,
            weight: 0,
            beat: 0xbeef,
            counter: 7,
            view_incarnation: 9,
            view: vec![(NodeId(1), 1), (NodeId(2), 5)],
            hears: [NodeId(1), NodeId(2)].into_iter().collect(),
            epoch: 10,
            vote: None,
            decided: None,
            kills: vec![(NodeId(3), 4)],
            relayed: Vec::new(),
        };
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(b"ICXH");
        b.extend_from_slice(&[74, 0]); // length: 50 + 1 + 8 + 1 + 2 + 6 + 2 + 4
        b.extend_from_slice(&[1, 8 | 16, 2, 0]); // version, ready | leaving, active
        b.extend_from_slice(&[7, 0, 0, 0, 3, 0, 2, 0]); // cluster, nodes, node
        b.extend_from_slice(&[5, 0, 0, 0, 0, 0]); // incarnation, weight
        b.extend_from_slice(&[0xef, 0xbe]); // beat
        b.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]); // counter
        b.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]); // view incarnation
        b.extend_from_slice(&[10, 0, 0, 0, 0, 0, 0, 0]); // epoch
        b.extend_from_slice(&[0b011, 1, 0, 0, 0, 5, 0, 0, 0]); // view {1,2}: 1, 5
        b.push(0b011); // hears {1,2}
        b.extend_from_slice(&[1, 0, 3, 0, 4, 0, 0, 0]); // one kill: node 3 life 4
        b.extend_from_slice(&[0, 0]); // no relayed votes
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        (s, b)
    }

    #[test]
    fn fixed_byte_vector() {
        let (s, bytes) = fixed_vector();
        let mut v = Vec::new();
        s.encode(NHB_MAGIC, &mut v);
        assert_eq!(v, bytes);
        assert_eq!(s.encoded_len(), bytes.len());
        assert_eq!(Status::parse(NHB_MAGIC, &bytes), Ok(s));
    }

    /// Version 1 as it was before `leaving` and `beat`: flag 16 clear and
    /// the reserved u16 zero. It parses (not leaving, beat 0); and a parser
    /// that predates them, which never read flag 16 nor the reserved u16,
    /// sees the same status in the new bytes but for those two fields.
    #[test]
    fn compatible_with_version_1_before_leaving_and_beat() {
        let (s, mut old) = fixed_vector();
        old[7] &= !16;
        old[24] = 0;
        old[25] = 0;
        let n = old.len();
        let crc = crc32c::crc32c(&old[..n - 4]);
        old[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let got = Status::parse(NHB_MAGIC, &old).expect("old format parses");
        assert!(!got.leaving);
        assert_eq!(got.beat, 0);
        assert_eq!(
            got,
            Status {
                leaving: false,
                beat: 0,
                ..s
            }
        );
        // Unknown flag bits above 16 are ignored, as version 1 always did.
        let mut more = old.clone();
        more[7] |= 0x80;
        let crc = crc32c::crc32c(&more[..n - 4]);
        more[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Status::parse(NHB_MAGIC, &more), Ok(got));
    }

    #[test]
    fn header_checks() {
        let h = FileHeader::for_cluster(5, 3);
        let img = h.format();
        assert_eq!(img.len() as u64, h.file_len());
        assert_eq!(FileHeader::check(&img), HeaderCheck::Formatted(h));
        assert_eq!(FileHeader::check(&[]), HeaderCheck::Blank);
        assert_eq!(FileHeader::check(&[0; 600]), HeaderCheck::Blank);
        let mut bad = img.clone();
        bad[13] ^= 1;
        assert_eq!(
            FileHeader::check(&bad),
            HeaderCheck::Garbage(ParseError::BadChecksum)
        );
        assert!(matches!(
            FileHeader::check(b"hello"),
            HeaderCheck::Garbage(_)
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// No input panics the parsers.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Status::parse(NHB_MAGIC, &bytes);
            let _ = Status::parse(RECORD_MAGIC, &bytes);
            let _ = FileHeader::check(&bytes);
        }

        /// Every truncation and every single-byte change of a valid heartbeat
        /// is refused (the CRC or the length catches it), never misread.
        #[test]
        fn damaged_heartbeats_refused(n in 1u16..=130, cut in 0usize..2000, at in 0usize..2000, x in 1u8..=255) {
            let s = sample(n);
            let mut v = Vec::new();
            s.encode(NHB_MAGIC, &mut v);
            let cut = cut % v.len();
            prop_assert!(Status::parse(NHB_MAGIC, &v[..cut]).is_err());
            let mut w = v.clone();
            let at = at % w.len();
            w[at] ^= x;
            prop_assert!(Status::parse(NHB_MAGIC, &w).is_err());
        }

        /// Any leaving flag and beat survive the round trip, at any size.
        #[test]
        fn leaving_and_beat_round_trip(n in 1u16..=255, leaving in any::<bool>(), beat in any::<u16>()) {
            let mut s = sample(n);
            s.leaving = leaving;
            s.beat = beat;
            let mut v = Vec::new();
            s.encode(NHB_MAGIC, &mut v);
            prop_assert_eq!(v[7] & 16 != 0, leaving);
            prop_assert_eq!(u16::from_le_bytes([v[24], v[25]]), beat);
            prop_assert_eq!(Status::parse(NHB_MAGIC, &v), Ok(s));
        }

        /// Valid CRC over random bodies: still no panic, and what parses
        /// re-encodes to the same bytes.
        #[test]
        fn checksummed_garbage(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut v = NHB_MAGIC.to_le_bytes().to_vec();
            let len = (6 + body.len() + 4) as u16;
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&body);
            let crc = crc32c::crc32c(&v);
            v.extend_from_slice(&crc.to_le_bytes());
            if let Ok(s) = Status::parse(NHB_MAGIC, &v) {
                let mut again = Vec::new();
                s.encode(NHB_MAGIC, &mut again);
                prop_assert_eq!(Status::parse(NHB_MAGIC, &again), Ok(s));
            }
        }
    }
}
