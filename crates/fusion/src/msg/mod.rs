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
//! reading a field. The epoch is twice the cluster incarnation of the
//! sender's last reconfiguration or join, plus one for a reconfiguration
//! (`gcs::wire_epoch`): a message of another epoch is dropped (but for
//! the epoch just before a join, which froze nothing), so nothing sent
//! before a reconfiguration changes the state rebuilt by it. Every message names a request id (`rid`,
//! per-requester and increasing) so a late or duplicate reply is known for
//! what it is; decoding never panics.
//!
//! Version 3 adds dynamic remastering ([`Msg::Moved`], [`Msg::Handover`],
//! [`Msg::HandoverAck`]): a version 2 node would not follow a redirect, so
//! the versions refuse each other rather than mix. Version 4 adds the join
//! without a freeze ([`Msg::JoinDone`], [`Msg::JoinAck`]): a version 3
//! node would neither hand a joiner its chunks nor know to wait for them.
//!
//! [`Channel::Control`]: icx_core::Channel::Control
//! [`Channel::Block`]: icx_core::Channel::Block

use crate::block::Scn;
use crate::io::{BlockNo, FileNo};
use icx_core::NodeId;
use std::fmt;

pub const MAGIC: [u8; 2] = *b"GC";
pub const VERSION: u8 = 4;
const HDR: usize = 14;
/// Entries in one [`Msg::Report`] at most (a report of a whole cache is
/// cut in chunks of this many).
pub const REPORT_CHUNK: usize = 256;
/// Bytes of one [`Held`] entry.
const HELD_LEN: usize = 31;
const TRAILER: usize = 4;
/// Records in one [`Msg::Handover`] at most: a chunk whose directory
/// entry needs more (a cluster of dozens of nodes all holding its blocks)
/// stays where it is rather than move in parts.
pub const HANDOVER_MAX: usize = 512;
/// Bytes of one [`DirItem`].
const DIR_ITEM_LEN: usize = 13;
/// Routes in one [`Msg::JoinDone`] part at most (a node knowing more
/// sends them in parts).
pub const JOIN_ROUTES_MAX: usize = 1024;
/// Bytes of one [`RouteItem`].
const ROUTE_ITEM_LEN: usize = 12;

/// A remastered chunk's route, as a member tells a joiner
/// ([`Msg::JoinDone`]): the chunk starting at `first` is mastered by
/// `master` since its move `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteItem {
    pub file: FileNo,
    pub first: BlockNo,
    pub master: NodeId,
    pub version: u32,
}

/// One field of a master's directory entry for a block, as a remaster
/// hands it to the new master ([`Msg::Handover`]): the whole of
/// [`crate::grd::Res`] but its queue (redirected) and its conversion (none
/// runs: the move waits for it), flattened to fixed-size records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirItem {
    /// The block's offset in its chunk (below [`crate::grd::CHUNK`]).
    pub offset: u8,
    pub field: DirField,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirField {
    /// `node` holds the current version in `mode` (S or X) since its
    /// request `since`.
    Holder {
        node: NodeId,
        mode: Mode,
        since: u64,
    },
    /// `node` keeps a past image, the newest at `scn`.
    Pi { node: NodeId, scn: Scn },
    /// `node`'s last request completed on the block.
    Done { node: NodeId, rid: u64 },
    /// `node`'s last request refused during a reconfiguration.
    Refused { node: NodeId, rid: u64 },
    /// The newest version known on disk.
    Disk { scn: Scn },
}

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
    /// H→M: H went from X to S (fairness), holding version `scn`. For
    /// traces only: the master does not act on it (a late one could undo
    /// a later X grant); the CR ship's Done tells the master reliably.
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
    /// Old M→R (or any→member, `rid` 0: a notice): the block's chunk is
    /// mastered by `master` since its move `version`; ask there (the
    /// request `rid` was not started here).
    Moved {
        rid: u64,
        file: FileNo,
        block: BlockNo,
        master: NodeId,
        version: u32,
    },
    /// Old M→new M: the directory entries of the chunk starting at `first`
    /// (its blocks' [`DirItem`]s), which the receiver masters from move
    /// `version` on. Resent until [`Msg::HandoverAck`].
    Handover {
        file: FileNo,
        first: BlockNo,
        version: u32,
        items: Vec<DirItem>,
    },
    /// New M→old M: the handover `version` of the chunk is installed.
    HandoverAck {
        file: FileNo,
        first: BlockNo,
        version: u32,
    },
    /// After a view that only adds members, part `part` of `parts` of what
    /// the sender tells each joiner (resent until [`Msg::JoinAck`]). From a
    /// member that served the last epoch (`established`): every chunk it
    /// mastered that the joiner now masters was handed over already, and
    /// `routes` are the remastered chunks it knows. From a joiner (not
    /// `established`), to every other member: it has nothing; a cluster
    /// whose members are all joiners is a cold start and reconfigures.
    JoinDone {
        part: u16,
        parts: u16,
        established: bool,
        routes: Vec<RouteItem>,
    },
    /// Every part of the receiver's JoinDone arrived.
    JoinAck { parts: u16 },
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

mod codec;

#[cfg(test)]
pub(crate) mod tests;
