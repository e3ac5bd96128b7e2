//! The voting-file interface: the membership object asks, the host does the
//! I/O (files on shared storage, a block device, or [`crate::testing::SimDisk`]).
//!
//! ```text
//!   host loop:  while let Some(req) = m.poll_disk(now) { start(req) }
//!               on completion: m.handle_disk(now, DiskCompletion { .. })
//! ```
//!
//! A request's `file` indexes [`Config::voting_files`](crate::Config).
//! Requests may complete in any order, late, or never: the membership
//! object times every one itself (from the `now` of `poll_disk` to the
//! `now` of `handle_disk`) and forgets one it gave up on.

use icx_core::Duration;
use std::fmt;

/// One I/O to do on a voting file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskRequest {
    /// Echoed in the completion.
    pub id: u64,
    pub file: usize,
    pub op: DiskOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// The whole file: header and every slot (complete with its contents).
    Read,
    /// `data` at `offset`, extending the file if needed. A node writes only
    /// its own slot, except when formatting (the whole image at offset 0,
    /// only to a file that read back missing or blank).
    Write { offset: u64, data: Vec<u8> },
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskCompletion {
    pub id: u64,
    pub file: usize,
    /// A read's file contents (empty for a write).
    pub result: Result<Vec<u8>, DiskError>,
    /// How long the host saw it take (informational; the membership object
    /// times requests on its own clock).
    pub took: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The file does not exist (it may be formatted).
    NotFound,
    Io(String),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::NotFound => f.write_str("not found"),
            DiskError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}
