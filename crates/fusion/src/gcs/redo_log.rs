//! Redo before ship: the redo of this node's changes is appended by the
//! host ([`IoOp::RedoAppend`]), one group commit in flight at a time; a
//! dirty image is shipped, and a block written, only once the redo of
//! every change it holds is durable. The bytes are the caller's (whole
//! records of the redo codec); here they are only "bytes to append and
//! the SCN they cover".

use super::{Completion, Fusion, GcError, IoFor};
use crate::block::Scn;
use crate::io::{IoData, IoError, IoOp};
use icx_core::Instant;

#[derive(Clone, Debug, Default)]
pub(crate) struct RedoLog {
    /// Changes not yet handed to the host: (scn, bytes, op).
    queued: Vec<(Scn, Vec<u8>, u64)>,
    /// The append in flight: the changes it covers.
    inflight: Option<Vec<(Scn, u64)>>,
    /// Every change at or below is durable.
    pub durable: Scn,
    /// The newest local change.
    pub last: Scn,
    offset: u64,
}

impl RedoLog {
    pub fn push(&mut self, scn: Scn, bytes: Vec<u8>, op: u64) {
        self.queued.push((scn, bytes, op));
        self.last = self.last.max(scn);
    }

    /// Whether a version at `scn` holds local changes whose redo is not
    /// durable yet (foreign versions were made durable by their node
    /// before they were shipped here).
    pub fn needs_flush(&self, scn: Scn) -> bool {
        scn > self.durable && scn <= self.last
    }

    pub fn idle(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_none()
    }
}

impl Fusion {
    /// Starts a group commit of everything queued, unless one is in flight.
    pub(crate) fn redo_kick(&mut self) {
        if self.redo.inflight.is_some() || self.redo.queued.is_empty() || self.fenced {
            return;
        }
        let batch = std::mem::take(&mut self.redo.queued);
        let mut data = Vec::new();
        let mut covers = Vec::with_capacity(batch.len());
        for (scn, bytes, op) in batch {
            data.extend_from_slice(&bytes);
            covers.push((scn, op));
        }
        let offset = self.redo.offset;
        self.redo.offset += data.len() as u64;
        self.stats.redo_writes += 1;
        self.stats.redo_bytes += data.len() as u64;
        self.redo.inflight = Some(covers);
        self.io(IoOp::RedoAppend { offset, data }, IoFor::Redo);
    }

    pub(crate) fn redo_done(&mut self, now: Instant, result: Result<IoData, IoError>) {
        let Some(covers) = self.redo.inflight.take() else {
            return;
        };
        match result {
            Ok(_) => {
                for &(scn, op) in &covers {
                    self.redo.durable = self.redo.durable.max(scn);
                    self.complete(Completion::Changed { op, scn });
                }
                self.flushed(now);
            }
            Err(e) => {
                // Not durable, and never will be: as when Oracle's LGWR
                // fails, the instance must stop (the host fences it).
                // The changes fail; ships waiting on them never go.
                for &(_, op) in &covers {
                    self.complete(Completion::Failed {
                        op,
                        error: GcError::Io(e.to_string()),
                    });
                }
            }
        }
        self.redo_kick();
    }
}
