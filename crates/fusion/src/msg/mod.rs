//! The global cache service's wire format: every message between
//! requester (R), master (M) and holder (H), on [`Channel::Control`]; block
//! images travel alone on [`Channel::Block`] (see [`crate::gcs`]).
//!
//! ```text
//!  0      2     3      4        6          14               14+len     18+len
//!  +------+-----+------+--------+----------+---- ... ------+----------+
//!  | "GC" | ver | type | len u16| epoch u64| body          |  crc32c  |
//!  +------+-----+------+--------+----------+---- ... ------+----------+
//! ```
//!
//! Little-endian; the CRC32C covers everything before it. Each type's body
//! has a fixed length (a [`Msg::Report`]'s is its entry count times the
//! entry size), so a decoder checks the length against the type before
//! reading a field. The epoch is the cluster incarnation of the sender's
//! last reconfiguration: a message of another epoch is dropped, so nothing
//! sent before a reconfiguration changes the state rebuilt by it. Every message names a request id (`rid`,
//! per-requester and increasing) so a late or duplicate reply is known for
//! what it is; decoding never panics.
//!
//! [`Channel::Control`]: icx_core::Channel::Control
//! [`Channel::Block`]: icx_core::Channel::Block

use crate::block::Scn;
use crate::io::{BlockNo, FileNo};
use icx_core::NodeId;
use std::fmt;

pub const MAGIC: [u8; 2] = *b"GC";
pub const VERSION: u8 = 2;
const HDR: usize = 14;
/// Entries in one [`Msg::Report`] at most (a report of a whole cache is
/// cut in chunks of this many).
pub const REPORT_CHUNK: usize = 256;
/// Bytes of one [`Held`] entry.
const HELD_LEN: usize = 31;
const TRAILER: usize = 4;

/// A block's mode in a cache: none, shared current, exclusive current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    #[default]
    N = 0,
    S = 1,
    X = 2,
}

/// What a requester wants of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A consistent-read copy as of `scn` (the newest version at or below
    /// it; `Scn::MAX` is "the latest"). The requester holds nothing after.
    Cr { scn: Scn },
    /// The current version, shared (S).
    Current,
    /// The current version, exclusive (X), to change it.
    Exclusive,
}

/// What a shipped image is to its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShipKind {
    Cr = 0,
    S = 1,
    X = 2,
}

/// Why a master refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The directory is being rebuilt after a reconfiguration, or the
    /// block awaits instance recovery: ask again shortly.
    Recovering = 1,
    /// The block is outside the configured datafiles.
    NoSuchBlock = 2,
    /// The receiver is not the block's master in its view.
    NotMaster = 3,
}

/// What a node holds of one block, as it reports it to the block's master
/// when the directory is rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub file: FileNo,
    pub block: BlockNo,
    /// N when only past images are held.
    pub mode: Mode,
    /// The current version's SCN (0 without one).
    pub scn: Scn,
    /// The newest past image's SCN (0: none).
    pub pi_scn: Scn,
    /// The request by which the holder got its copy (the master names it
    /// in forwards and invalidations).
    pub since: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// R→M: one block.
    Req {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        access: Access,
    },
    /// R→M: a multi-block consistent read of the blocks of `mask` (bit i
    /// = `first + i`), all in one mastering chunk.
    MultiReq {
        rid: u64,
        file: FileNo,
        first: BlockNo,
        mask: u16,
    },
    /// M→R: read from disk in `mode` (`keep`: R already holds the current
    /// version in S; nothing is read or resent). `disk_scn`: the newest
    /// version the master knows reached disk; an older read is stale.
    Grant {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        mode: Mode,
        keep: bool,
        disk_scn: Scn,
        /// Past images exist: the block is newer than disk, R owes its
        /// write (global role).
        dirty: bool,
    },
    /// M→R: read the blocks of `mask` (bit i = `first + i`) from disk, in S.
    GrantMulti {
        rid: u64,
        file: FileNo,
        first: BlockNo,
        mask: u16,
    },
    /// M→H: ship the block to `to` for `access` (`dirty`: past images
    /// exist, the receiver of X owes the write). `holder_rid`: the request
    /// by which H got the copy the master means; a late forward naming an
    /// older one is ignored.
    Fwd {
        rid: u64,
        to: NodeId,
        file: FileNo,
        block: BlockNo,
        access: Access,
        dirty: bool,
        holder_rid: u64,
    },
    /// H→R: the header of a block ship; the image (whose own header names
    /// file, block and `scn`) follows on the block channel. `pi`: H kept a
    /// past image (the block's role becomes global); of a CR ship, H
    /// down-converted X to S (fairness), which R's Done tells M.
    Ship {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
        kind: ShipKind,
        pi: bool,
        /// The image is newer than disk (H kept a PI, or others did).
        dirty: bool,
    },
    /// M→S holder: drop the S copy you got by your request `rid` (keep a
    /// PI if it is dirty); a copy got by another request stays.
    Inval {
        rid: u64,
        file: FileNo,
        block: BlockNo,
    },
    /// S holder→M: dropped; `pi_scn` the PI kept (0: none).
    InvalAck {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        pi_scn: Scn,
    },
    /// R→M: R has the blocks of `mask` from request `rid` (the "assume").
    Done {
        rid: u64,
        file: FileNo,
        first: BlockNo,
        mask: u16,
        pi: bool,
        scn: Scn,
    },
    /// M→PI holder: the block reached disk at `scn`; drop PIs at or below.
    /// Resent until acknowledged.
    PiDiscard {
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// M→H: its WriteDone `rid` arrived (a WriteDone is resent until then).
    WriteAck {
        rid: u64,
        file: FileNo,
        block: BlockNo,
    },
    /// PI holder→M: PIs at or below `scn` are gone.
    PiDiscardAck {
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// H→M (global role): may I write my current version?
    WriteReq {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// M→H: write it.
    WriteGrant {
        rid: u64,
        file: FileNo,
        block: BlockNo,
    },
    /// H→M: the block is on disk at `scn` (`rid` 0: a local-role write).
    WriteDone {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// H→M: H went from X to S (fairness), holding version `scn`. A hint:
    /// the CR ship's Done tells the master reliably.
    DownConvert {
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// H→M: may I drop my (clean) copy? Answered by [`Msg::DropOk`].
    Drop {
        rid: u64,
        file: FileNo,
        block: BlockNo,
    },
    DropOk {
        rid: u64,
        file: FileNo,
        block: BlockNo,
    },
    /// M→R: the request failed.
    Error {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        code: ErrorCode,
    },
    /// Any→M, after a reconfiguration: chunk `chunk` of `chunks` of what
    /// the sender holds of the blocks the receiver masters (resent until
    /// [`Msg::ReportAck`]; `chunks` is at least 1, an empty report says
    /// "nothing").
    Report {
        chunk: u16,
        chunks: u16,
        entries: Vec<Held>,
    },
    /// M→reporter: every chunk of its report arrived.
    ReportAck { chunks: u16 },
    /// M→PI holder, during recovery: ship your past image at `scn` (the
    /// newest any survivor has), the base redo is applied on.
    PiShipReq {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// PI holder→M: the header of that ship (the image follows on the
    /// block channel); `scn` 0: the PI is gone (written and discarded
    /// since), read the disk.
    PiShip {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short,
    Magic,
    Version(u8),
    Type(u8),
    Length { ty: u8, len: usize },
    Checksum,
    Field(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short => f.write_str("shorter than a header"),
            DecodeError::Magic => f.write_str("bad magic"),
            DecodeError::Version(v) => write!(f, "unknown version {v}"),
            DecodeError::Type(t) => write!(f, "unknown message type {t}"),
            DecodeError::Length { ty, len } => write!(f, "type {ty}: body of {len} bytes"),
            DecodeError::Checksum => f.write_str("checksum mismatch"),
            DecodeError::Field(n) => write!(f, "bad field {n}"),
        }
    }
}

impl Msg {
    fn ty(&self) -> u8 {
        match self {
            Msg::Req { .. } => 1,
            Msg::MultiReq { .. } => 2,
            Msg::Grant { .. } => 3,
            Msg::GrantMulti { .. } => 4,
            Msg::Fwd { .. } => 5,
            Msg::Ship { .. } => 6,
            Msg::Inval { .. } => 7,
            Msg::InvalAck { .. } => 8,
            Msg::Done { .. } => 9,
            Msg::PiDiscard { .. } => 10,
            Msg::WriteReq { .. } => 11,
            Msg::WriteGrant { .. } => 12,
            Msg::WriteDone { .. } => 13,
            Msg::DownConvert { .. } => 14,
            Msg::Drop { .. } => 15,
            Msg::DropOk { .. } => 16,
            Msg::Error { .. } => 17,
            Msg::PiDiscardAck { .. } => 18,
            Msg::WriteAck { .. } => 19,
            Msg::Report { .. } => 20,
            Msg::ReportAck { .. } => 21,
            Msg::PiShipReq { .. } => 22,
            Msg::PiShip { .. } => 23,
        }
    }

    /// The message's name, for counting in tests and traces.
    pub fn name(&self) -> &'static str {
        NAMES[self.ty() as usize - 1]
    }

    /// The block (or first block) it is about ((0, 0) for a report).
    pub fn block(&self) -> (FileNo, BlockNo) {
        match *self {
            Msg::Report { .. } | Msg::ReportAck { .. } => (0, 0),
            Msg::PiShipReq { file, block, .. } | Msg::PiShip { file, block, .. } => (file, block),
            Msg::MultiReq { file, first, .. }
            | Msg::GrantMulti { file, first, .. }
            | Msg::Done { file, first, .. } => (file, first),
            Msg::Req { file, block, .. }
            | Msg::Grant { file, block, .. }
            | Msg::Fwd { file, block, .. }
            | Msg::Ship { file, block, .. }
            | Msg::Inval { file, block, .. }
            | Msg::InvalAck { file, block, .. }
            | Msg::PiDiscard { file, block, .. }
            | Msg::PiDiscardAck { file, block, .. }
            | Msg::WriteReq { file, block, .. }
            | Msg::WriteGrant { file, block, .. }
            | Msg::WriteDone { file, block, .. }
            | Msg::WriteAck { file, block, .. }
            | Msg::DownConvert { file, block, .. }
            | Msg::Drop { file, block, .. }
            | Msg::DropOk { file, block, .. }
            | Msg::Error { file, block, .. } => (file, block),
        }
    }

    /// The message encoded in `epoch`.
    pub fn encode(&self, epoch: u64) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(56));
        w.0.extend_from_slice(&MAGIC);
        w.u8(VERSION);
        w.u8(self.ty());
        w.0.extend_from_slice(&[0, 0]);
        w.u64(epoch);
        match *self {
            Msg::Report {
                chunk,
                chunks,
                ref entries,
            } => {
                w.u16(chunk);
                w.u16(chunks);
                w.u16(entries.len() as u16);
                for h in entries {
                    w.u16(h.file);
                    w.u32(h.block);
                    w.u8(h.mode as u8);
                    w.u64(h.scn);
                    w.u64(h.pi_scn);
                    w.u64(h.since);
                }
            }
            Msg::ReportAck { chunks } => w.u16(chunks),
            Msg::Req {
                rid,
                file,
                block,
                access,
            } => {
                w.rfb(rid, file, block);
                w.access(access);
            }
            Msg::MultiReq {
                rid,
                file,
                first,
                mask,
            } => {
                w.rfb(rid, file, first);
                w.u16(mask);
            }
            Msg::Grant {
                rid,
                file,
                block,
                mode,
                keep,
                disk_scn,
                dirty,
            } => {
                w.rfb(rid, file, block);
                w.u8(mode as u8);
                w.u8(keep as u8);
                w.u64(disk_scn);
                w.u8(dirty as u8);
            }
            Msg::GrantMulti {
                rid,
                file,
                first,
                mask,
            } => {
                w.rfb(rid, file, first);
                w.u16(mask);
            }
            Msg::Fwd {
                rid,
                to,
                file,
                block,
                access,
                dirty,
                holder_rid,
            } => {
                w.rfb(rid, file, block);
                w.u16(to.0);
                w.access(access);
                w.u8(dirty as u8);
                w.u64(holder_rid);
            }
            Msg::Ship {
                rid,
                file,
                block,
                scn,
                kind,
                pi,
                dirty,
            } => {
                w.rfb(rid, file, block);
                w.u64(scn);
                w.u8(kind as u8);
                w.u8(pi as u8);
                w.u8(dirty as u8);
            }
            Msg::Inval { rid, file, block }
            | Msg::WriteGrant { rid, file, block }
            | Msg::Drop { rid, file, block }
            | Msg::DropOk { rid, file, block }
            | Msg::WriteAck { rid, file, block } => w.rfb(rid, file, block),
            Msg::InvalAck {
                rid,
                file,
                block,
                pi_scn: scn,
            }
            | Msg::WriteReq {
                rid,
                file,
                block,
                scn,
            }
            | Msg::WriteDone {
                rid,
                file,
                block,
                scn,
            }
            | Msg::PiShipReq {
                rid,
                file,
                block,
                scn,
            }
            | Msg::PiShip {
                rid,
                file,
                block,
                scn,
            } => {
                w.rfb(rid, file, block);
                w.u64(scn);
            }
            Msg::Done {
                rid,
                file,
                first,
                mask,
                pi,
                scn,
            } => {
                w.rfb(rid, file, first);
                w.u16(mask);
                w.u8(pi as u8);
                w.u64(scn);
            }
            Msg::PiDiscard { file, block, scn }
            | Msg::PiDiscardAck { file, block, scn }
            | Msg::DownConvert { file, block, scn } => {
                w.u16(file);
                w.u32(block);
                w.u64(scn);
            }
            Msg::Error {
                rid,
                file,
                block,
                code,
            } => {
                w.rfb(rid, file, block);
                w.u8(code as u8);
            }
        }
        let len = (w.0.len() - HDR) as u16;
        w.0[4..6].copy_from_slice(&len.to_le_bytes());
        let c = crc32c::crc32c(&w.0);
        w.u32(c);
        w.0
    }

    /// Decodes one message and the epoch it was sent in; never panics.
    pub fn decode(b: &[u8]) -> Result<(u64, Msg), DecodeError> {
        if b.len() < HDR + TRAILER {
            return Err(DecodeError::Short);
        }
        if b[..2] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if b[2] != VERSION {
            return Err(DecodeError::Version(b[2]));
        }
        let ty = b[3];
        let len = u16::from_le_bytes([b[4], b[5]]) as usize;
        let want = match ty {
            // A report: a 6-byte head, then its entries.
            20 if len >= 6 && b.len() >= HDR + 6 => {
                6 + HELD_LEN * u16::from_le_bytes([b[HDR + 4], b[HDR + 5]]) as usize
            }
            20 => 6,
            _ => *BODY_LEN
                .get((ty as usize).wrapping_sub(1))
                .ok_or(DecodeError::Type(ty))?,
        };
        if len != want || b.len() != HDR + len + TRAILER {
            return Err(DecodeError::Length { ty, len });
        }
        let (msg, crc) = b.split_at(HDR + len);
        if crc32c::crc32c(msg) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(DecodeError::Checksum);
        }
        let epoch = u64::from_le_bytes(msg[6..14].try_into().unwrap_or([0; 8]));
        let mut r = R(&msg[HDR..]);
        let m = match ty {
            20 => {
                let chunk = r.u16();
                let chunks = r.u16();
                let n = r.u16() as usize;
                if chunks == 0 || chunk >= chunks || n > REPORT_CHUNK {
                    return Err(DecodeError::Field("report"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(Held {
                        file: r.u16(),
                        block: r.u32(),
                        mode: r.mode()?,
                        scn: r.u64(),
                        pi_scn: r.u64(),
                        since: r.u64(),
                    });
                }
                Msg::Report {
                    chunk,
                    chunks,
                    entries,
                }
            }
            21 => Msg::ReportAck { chunks: r.u16() },
            1 => {
                let (rid, file, block) = r.rfb();
                Msg::Req {
                    rid,
                    file,
                    block,
                    access: r.access()?,
                }
            }
            2 => {
                let (rid, file, first) = r.rfb();
                let mask = r.u16();
                if mask == 0 {
                    return Err(DecodeError::Field("mask"));
                }
                Msg::MultiReq {
                    rid,
                    file,
                    first,
                    mask,
                }
            }
            3 => {
                let (rid, file, block) = r.rfb();
                Msg::Grant {
                    rid,
                    file,
                    block,
                    mode: r.mode()?,
                    keep: r.bool()?,
                    disk_scn: r.u64(),
                    dirty: r.bool()?,
                }
            }
            4 => {
                let (rid, file, first) = r.rfb();
                Msg::GrantMulti {
                    rid,
                    file,
                    first,
                    mask: r.u16(),
                }
            }
            5 => {
                let (rid, file, block) = r.rfb();
                Msg::Fwd {
                    rid,
                    file,
                    block,
                    to: NodeId(r.u16()),
                    access: r.access()?,
                    dirty: r.bool()?,
                    holder_rid: r.u64(),
                }
            }
            6 => {
                let (rid, file, block) = r.rfb();
                let scn = r.u64();
                let kind = match r.u8() {
                    0 => ShipKind::Cr,
                    1 => ShipKind::S,
                    2 => ShipKind::X,
                    _ => return Err(DecodeError::Field("kind")),
                };
                Msg::Ship {
                    rid,
                    file,
                    block,
                    scn,
                    kind,
                    pi: r.bool()?,
                    dirty: r.bool()?,
                }
            }
            7 | 12 | 15 | 16 | 19 => {
                let (rid, file, block) = r.rfb();
                match ty {
                    7 => Msg::Inval { rid, file, block },
                    12 => Msg::WriteGrant { rid, file, block },
                    15 => Msg::Drop { rid, file, block },
                    16 => Msg::DropOk { rid, file, block },
                    _ => Msg::WriteAck { rid, file, block },
                }
            }
            8 | 11 | 13 | 22 | 23 => {
                let (rid, file, block) = r.rfb();
                let scn = r.u64();
                match ty {
                    22 => Msg::PiShipReq {
                        rid,
                        file,
                        block,
                        scn,
                    },
                    23 => Msg::PiShip {
                        rid,
                        file,
                        block,
                        scn,
                    },
                    8 => Msg::InvalAck {
                        rid,
                        file,
                        block,
                        pi_scn: scn,
                    },
                    11 => Msg::WriteReq {
                        rid,
                        file,
                        block,
                        scn,
                    },
                    _ => Msg::WriteDone {
                        rid,
                        file,
                        block,
                        scn,
                    },
                }
            }
            9 => {
                let (rid, file, first) = r.rfb();
                Msg::Done {
                    rid,
                    file,
                    first,
                    mask: r.u16(),
                    pi: r.bool()?,
                    scn: r.u64(),
                }
            }
            10 | 14 | 18 => {
                let file = r.u16();
                let block = r.u32();
                let scn = r.u64();
                match ty {
                    10 => Msg::PiDiscard { file, block, scn },
                    14 => Msg::DownConvert { file, block, scn },
                    _ => Msg::PiDiscardAck { file, block, scn },
                }
            }
            _ => {
                let (rid, file, block) = r.rfb();
                let code = match r.u8() {
                    1 => ErrorCode::Recovering,
                    2 => ErrorCode::NoSuchBlock,
                    3 => ErrorCode::NotMaster,
                    _ => return Err(DecodeError::Field("code")),
                };
                Msg::Error {
                    rid,
                    file,
                    block,
                    code,
                }
            }
        };
        Ok((epoch, m))
    }
}

const NAMES: [&str; 23] = [
    "Req",
    "MultiReq",
    "Grant",
    "GrantMulti",
    "Fwd",
    "Ship",
    "Inval",
    "InvalAck",
    "Done",
    "PiDiscard",
    "WriteReq",
    "WriteGrant",
    "WriteDone",
    "DownConvert",
    "Drop",
    "DropOk",
    "Error",
    "PiDiscardAck",
    "WriteAck",
    "Report",
    "ReportAck",
    "PiShipReq",
    "PiShip",
];

/// Body length by type (rid+file+block = 14 bytes; access = 9); a
/// report's depends on its entry count.
const BODY_LEN: [usize; 23] = [
    14 + 9,
    14 + 2,
    14 + 11,
    14 + 2,
    14 + 2 + 10 + 8,
    14 + 11,
    14,
    14 + 8,
    14 + 11,
    14,
    14 + 8,
    14,
    14 + 8,
    14,
    14,
    14,
    14 + 1,
    14,
    14,
    6,
    2,
    14 + 8,
    14 + 8,
];

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn rfb(&mut self, rid: u64, file: FileNo, block: BlockNo) {
        self.u64(rid);
        self.u16(file);
        self.u32(block);
    }
    fn access(&mut self, a: Access) {
        let (k, scn) = match a {
            Access::Cr { scn } => (0, scn),
            Access::Current => (1, 0),
            Access::Exclusive => (2, 0),
        };
        self.u8(k);
        self.u64(scn);
    }
}

/// Reads fixed fields; the caller checked the body length first, so the
/// reads stay in bounds (and yield zeroes rather than panic if not).
struct R<'a>(&'a [u8]);

impl R<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        if self.0.len() >= N {
            a.copy_from_slice(&self.0[..N]);
            self.0 = &self.0[N..];
        }
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8() {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Field("flag")),
        }
    }
    fn rfb(&mut self) -> (u64, FileNo, BlockNo) {
        (self.u64(), self.u16(), self.u32())
    }
    fn mode(&mut self) -> Result<Mode, DecodeError> {
        match self.u8() {
            0 => Ok(Mode::N),
            1 => Ok(Mode::S),
            2 => Ok(Mode::X),
            _ => Err(DecodeError::Field("mode")),
        }
    }
    fn access(&mut self) -> Result<Access, DecodeError> {
        let k = self.u8();
        let scn = self.u64();
        match k {
            0 => Ok(Access::Cr { scn }),
            1 if scn == 0 => Ok(Access::Current),
            2 if scn == 0 => Ok(Access::Exclusive),
            _ => Err(DecodeError::Field("access")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
