//! Datafile and redo I/O: the fusion object asks, the host does it (files
//! on shared storage with pread/pwrite, O_DIRECT where allowed, into and
//! from pool buffers; a simulated disk in tests).
//!
//! ```text
//!   host loop:  while let Some(req) = f.poll_io(now) { start(req) }
//!               on completion: f.handle_io(now, IoCompletion { .. })
//! ```
//!
//! Requests may complete in any order. Blocks travel as pool buffers
//! ([`SharedBuf`]: immutable once read or built, so a cached image can be
//! shipped, kept as a past image or a consistent-read version, without a
//! copy).

use icx_core::{NodeId, SharedBuf};
use std::fmt;

/// A datafile number (`file#`), 1-based as Oracle's.
pub type FileNo = u16;
/// A block number within its datafile, 0-based.
pub type BlockNo = u32;

/// One I/O to do.
#[derive(Clone, Debug)]
pub struct IoRequest {
    /// Echoed in the completion.
    pub id: u64,
    pub op: IoOp,
}

#[derive(Clone, Debug)]
pub enum IoOp {
    /// `count` consecutive blocks from `first` of datafile `file`, in one
    /// call (a multi-block read is one preadv); complete with
    /// [`IoData::Blocks`], one buffer of the block size per block.
    Read {
        file: FileNo,
        first: BlockNo,
        count: u32,
    },
    /// One block image, exactly the block size, at its place in the file;
    /// durable (fdatasync) before it completes.
    Write {
        file: FileNo,
        block: BlockNo,
        data: SharedBuf,
    },
    /// Appends `data` (whole checksummed redo records, a group commit) to
    /// this node's redo log at `offset`, durable (fdatasync) before it
    /// completes with [`IoData::Done`].
    RedoAppend { offset: u64, data: Vec<u8> },
    /// Reads `len` bytes of `node`'s redo log from `offset` (recovery);
    /// complete with [`IoData::Bytes`], shorter at the end of the log.
    RedoRead { node: NodeId, offset: u64, len: u32 },
    /// Every record of this node's redo log below `lsn` is covered by the
    /// datafiles: recovery starts there. Durable (the node's checkpoint
    /// file) before it completes with [`IoData::Done`]; the host may then
    /// reclaim the log's space below the checkpoint before this one (one
    /// behind, so a scan that started from it a moment ago still reads).
    RedoCheckpoint { lsn: u64 },
    /// The checkpoint of `node`'s redo log (0 when it has none); complete
    /// with [`IoData::Lsn`].
    RedoCheckpointRead { node: NodeId },
    /// The SCN of one block as the datafile holds it (0: never written),
    /// its checksum verified; complete with [`IoData::Scn`]. No image
    /// comes back: the node learns how much of its redo the disk covers.
    ReadScn { file: FileNo, block: BlockNo },
}

/// How a request ended.
#[derive(Debug)]
pub struct IoCompletion {
    pub id: u64,
    pub result: Result<IoData, IoError>,
}

#[derive(Debug)]
pub enum IoData {
    Blocks(Vec<SharedBuf>),
    Bytes(Vec<u8>),
    /// A redo log position.
    Lsn(u64),
    /// A block's SCN on disk.
    Scn(u64),
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoError {
    /// The datafile or redo log does not exist.
    NotFound,
    /// Blocks past the end of the datafile (a full datafile).
    OutOfRange {
        file: FileNo,
        block: BlockNo,
        blocks: BlockNo,
    },
    /// The storage is full: nothing was (partly) written.
    NoSpace,
    /// The pool had no buffer for the read (retry later).
    NoBuffer,
    Io(String),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::NotFound => f.write_str("not found"),
            IoError::OutOfRange { file, block, blocks } => write!(
                f,
                "block {block} of file {file} is past its end ({blocks} blocks): the datafile is full"
            ),
            IoError::NoSpace => f.write_str("no space left on device"),
            IoError::NoBuffer => f.write_str("no buffer in the pool"),
            IoError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}
