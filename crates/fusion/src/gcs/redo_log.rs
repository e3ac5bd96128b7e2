//! Redo before ship: the redo of this node's changes is appended by the
//! host ([`IoOp::RedoAppend`]), one group commit in flight at a time; a
//! dirty image is shipped, and a block written, only once the redo of
//! every change it holds is durable.
//!
//! A change queues either a [`Record`] ([`Fusion::change_kv`]) or bytes
//! the caller encoded ([`Fusion::change`]). Records are encoded only when
//! their group is formed, because only then is their place known: the
//! group's LSN and the CRC of the record before it ([`Tail`]), kept here
//! from one group to the next.

use super::{Completion, Fusion, GcError, IoFor};
use crate::block::Scn;
use crate::io::{IoData, IoError, IoOp};
use crate::redo::{self, Record, Tail};
use icx_core::Instant;

/// What one change adds to the log.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// Bytes appended as they are.
    Raw(Vec<u8>),
    /// Encoded with its group, at the group's LSN.
    Record(Record),
}

#[derive(Clone, Debug, Default)]
pub(crate) struct RedoLog {
    /// Changes not yet handed to the host: (scn, entry, op).
    queued: Vec<(Scn, Entry, u64)>,
    /// The append in flight: the changes it covers.
    inflight: Option<Vec<(Scn, u64)>>,
    /// Every change at or below is durable.
    pub durable: Scn,
    /// The newest local change.
    pub last: Scn,
    /// Where the next append goes.
    offset: u64,
    /// The CRC of the last record encoded (the chain's next link).
    prev: u32,
}

impl RedoLog {
    /// A log that continues at `tail` (the end a scan of it found).
    pub fn new(tail: Tail) -> RedoLog {
        RedoLog {
            offset: tail.lsn,
            prev: tail.prev,
            ..RedoLog::default()
        }
    }

    pub fn push(&mut self, scn: Scn, entry: Entry, op: u64) {
        self.queued.push((scn, entry, op));
        self.last = self.last.max(scn);
    }

    /// Whether a version at `scn` holds local changes whose redo is not
    /// durable yet (foreign versions were made durable by their node
    /// before they were shipped here).
    pub fn needs_flush(&self, scn: Scn) -> bool {
        scn > self.durable && scn <= self.last
    }

    /// Where the next append goes: past every record handed to the host.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn idle(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_none()
    }
}

impl Fusion {
    /// Starts a group commit of everything queued, unless one is in flight:
    /// the raw bytes, then the records in one group (padded to a sector).
    pub(crate) fn redo_kick(&mut self) {
        if self.redo.inflight.is_some() || self.redo.queued.is_empty() || self.fenced {
            return;
        }
        let batch = std::mem::take(&mut self.redo.queued);
        let mut data = Vec::new();
        let mut records = Vec::new();
        let mut covers = Vec::with_capacity(batch.len());
        let mut record_ops = Vec::new();
        for (scn, entry, op) in batch {
            match entry {
                Entry::Raw(bytes) => {
                    data.extend_from_slice(&bytes);
                    covers.push((scn, op));
                }
                Entry::Record(r) => {
                    records.push(r);
                    record_ops.push((scn, op));
                }
            }
        }
        let offset = self.redo.offset;
        if !records.is_empty() {
            let mut tail = Tail {
                lsn: offset + data.len() as u64,
                prev: self.redo.prev,
            };
            match redo::encode_group(&mut tail, &records) {
                Ok(group) => {
                    for r in &records {
                        self.ckpt_logged((r.file, r.block), r.scn, offset);
                    }
                    data.extend_from_slice(&group);
                    self.redo.prev = tail.prev;
                    covers.extend(record_ops);
                }
                // Cannot happen: `change_kv` checked every record encodes.
                Err(e) => {
                    for (_, op) in record_ops {
                        self.complete(Completion::Failed {
                            op,
                            error: GcError::Io(format!("redo record: {e}")),
                        });
                    }
                }
            }
        }
        if covers.is_empty() {
            return;
        }
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
