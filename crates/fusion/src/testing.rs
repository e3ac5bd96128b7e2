//! Test support: a simulated shared disk (datafiles and every node's redo
//! log, completing [`IoRequest`]s after a latency), and a host wrapper
//! [`SimFusion`] that runs a [`Fusion`] on the simulator's protocol host
//! (`icx_sim::host`) with its I/O on that disk, its completions logged
//! (or fed to a key-value executor, [`SimDb`], whose replies are logged),
//! and faults injected at the message level (drop, duplicate, delay) on
//! top of whatever the simulated links do, so the service's own timers
//! and duplicate detection are exercised, not only the transport's.
//!
//! Everything runs on the `now` the simulator passes in: a seed replays
//! disk timing and faults exactly. No real file is touched.

use crate::block::{self, Scn};
use crate::db::{Cmd, Db, Reply};
use crate::gcs::{Completion, Fusion};
use crate::io::{BlockNo, FileNo, IoCompletion, IoData, IoError, IoOp, IoRequest};
use crate::msg::Msg;
use icx_core::{Channel, Duration, Instant, NodeId};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// A datafile read as the disk saw it: who, what, and the SCN on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub node: NodeId,
    pub file: FileNo,
    pub block: BlockNo,
    pub disk_scn: Scn,
}

/// Datafiles and redo logs shared by every node of one simulation.
#[derive(Debug, Default)]
pub struct SimDisk {
    pub block_size: usize,
    pub blocks_per_file: BlockNo,
    /// Written blocks (the rest read as zeroes).
    pub blocks: BTreeMap<(FileNo, BlockNo), Vec<u8>>,
    pub redo: BTreeMap<NodeId, Vec<u8>>,
    /// Each node's redo checkpoints, oldest first (the last one is in
    /// force; the log is zeroed below the one before it, as the real host
    /// punches it).
    pub checkpoints: BTreeMap<NodeId, Vec<u64>>,
    /// Records a checkpoint left behind that the datafile did not hold
    /// (each is a lost write waiting for a recovery to need it).
    pub checkpoint_violations: Vec<String>,
    pub latency: Duration,
    /// The next read of these blocks returns a damaged image.
    pub corrupt_next_read: BTreeSet<(FileNo, BlockNo)>,
    /// The next read of these blocks returns this (older) image instead.
    pub stale_next_read: BTreeMap<(FileNo, BlockNo), Vec<u8>>,
    /// Every block read, at issue.
    pub reads: Vec<ReadRecord>,
    /// Read calls (one per `IoOp::Read`).
    pub read_calls: u64,
    /// (node, file, block, scn) of every block write, in order.
    pub writes: Vec<(NodeId, FileNo, BlockNo, Scn)>,
}

pub type SharedDisk = Rc<RefCell<SimDisk>>;

impl SimDisk {
    pub fn shared(block_size: usize, blocks_per_file: BlockNo, latency: Duration) -> SharedDisk {
        Rc::new(RefCell::new(SimDisk {
            block_size,
            blocks_per_file,
            latency,
            ..SimDisk::default()
        }))
    }

    /// The SCN of a block on disk (0: never written).
    pub fn scn(&self, file: FileNo, block: BlockNo) -> Scn {
        self.blocks
            .get(&(file, block))
            .and_then(|b| block::verify(b, file, block).ok())
            .map_or(0, |h| h.scn)
    }

    /// Where `node`'s log is scanned from: its checkpoint (0: none).
    pub fn checkpoint(&self, node: NodeId) -> u64 {
        self.checkpoints
            .get(&node)
            .and_then(|c| c.last().copied())
            .unwrap_or(0)
    }

    /// Where `node`'s log continues: the end of its valid records from its
    /// checkpoint (a host's scan at start).
    pub fn redo_tail(&self, node: NodeId) -> crate::redo::Tail {
        let log = self.redo.get(&node).map_or(&[][..], |l| &l[..]);
        let from = self.checkpoint(node);
        let at = (from as usize).min(log.len());
        crate::redo::scan(&log[at..], from, None).end
    }

    fn block(&self, file: FileNo, block: BlockNo) -> Vec<u8> {
        self.blocks
            .get(&(file, block))
            .cloned()
            .unwrap_or_else(|| vec![0; self.block_size])
    }
}

/// Message-level faults, each with its probability per delivered message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    /// Held back up to `max_delay` (so later messages overtake it).
    pub delay: f64,
    pub max_delay: Duration,
}

/// A test's filter on outgoing control messages: true drops it.
pub type DropFilter = Box<dyn FnMut(NodeId, &Msg) -> bool>;

/// A key-value executor on a [`SimFusion`]: every completion goes to it,
/// its replies are logged, its `tick` runs when it asks.
#[derive(Debug)]
pub struct SimDb {
    pub db: Db,
    /// (when, client, reply), in reply order.
    pub replies: Vec<(Instant, u64, Reply)>,
    /// The wall clock is this plus the simulator's time.
    pub wall_base_ms: u64,
    next_tick: Option<Instant>,
}

impl SimDb {
    pub fn new(db: Db, wall_base_ms: u64) -> SimDb {
        SimDb {
            db,
            replies: Vec::new(),
            wall_base_ms,
            next_tick: Some(Instant::ZERO),
        }
    }

    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.wall_base_ms + now.as_nanos() / 1_000_000
    }
}

/// A [`Fusion`] on a [`SharedDisk`], with completions and sends logged.
pub struct SimFusion {
    pub f: Fusion,
    disk: SharedDisk,
    inflight: Vec<(Instant, IoRequest)>,
    /// Completions, with when they came.
    pub ready: Vec<(Instant, Completion)>,
    /// Messages sent, by name ("Image" for a block on the block channel).
    pub sent: BTreeMap<&'static str, u64>,
    /// Every message sent: (when, to, message); images as `None`.
    pub trace: Vec<(Instant, NodeId, Option<Msg>)>,
    /// Drops outgoing control messages it returns true for.
    pub drop_filter: Option<DropFilter>,
    pub faults: Faults,
    delayed: Vec<(Instant, HostEvent)>,
    rng: u64,
    /// Corrupt the next image this node receives on the block channel.
    pub corrupt_next_image: bool,
    pub dropped: u64,
    /// A dropped ship header's image goes too (the whole block reply lost).
    skip_image_to: Option<NodeId>,
    /// The executor the completions go to, if any (then only those
    /// without an image are logged in `ready`).
    pub db: Option<SimDb>,
}

impl std::fmt::Debug for SimFusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFusion").field("f", &self.f).finish()
    }
}

impl SimFusion {
    pub fn new(f: Fusion, disk: SharedDisk, seed: u64) -> SimFusion {
        SimFusion {
            f,
            disk,
            inflight: Vec::new(),
            ready: Vec::new(),
            sent: BTreeMap::new(),
            trace: Vec::new(),
            drop_filter: None,
            faults: Faults::default(),
            delayed: Vec::new(),
            rng: seed | 1,
            corrupt_next_image: false,
            dropped: 0,
            skip_image_to: None,
            db: None,
        }
    }

    /// The I/O requests issued and not completed yet.
    pub fn io_in_flight(&self) -> impl Iterator<Item = &IoOp> {
        self.inflight.iter().map(|(_, r)| &r.op)
    }

    /// Submits a command to the executor (see [`SimFusion::db`]).
    pub fn submit(&mut self, now: Instant, client: u64, cmd: Cmd) {
        if let Some(d) = self.db.as_mut() {
            d.db.submit(&mut self.f, now, client, cmd);
        }
        self.pump(now);
    }

    pub fn disk(&self) -> &SharedDisk {
        &self.disk
    }

    /// The completion of `op`, if it came.
    pub fn completion(&self, op: u64) -> Option<&Completion> {
        self.ready.iter().map(|(_, c)| c).find(|c| op_of(c) == op)
    }

    pub fn count(&self, name: &str) -> u64 {
        self.sent.get(name).copied().unwrap_or(0)
    }

    pub fn clear_counts(&mut self) {
        self.sent.clear();
        self.trace.clear();
    }

    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // xorshift64*: the harness needs no dependency for its dice.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let v = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (v as f64 / (1u64 << 53) as f64) < p
    }

    fn pump(&mut self, now: Instant) {
        while let Some(c) = self.f.poll_ready() {
            let Some(d) = self.db.as_mut() else {
                self.ready.push((now, c));
                continue;
            };
            if !matches!(c, Completion::Acquired { .. } | Completion::Scanned { .. }) {
                self.ready.push((now, c.clone()));
            }
            let wall = d.wall_ms(now);
            d.db.handle(&mut self.f, now, wall, c);
        }
        if let Some(d) = self.db.as_mut() {
            while let Some((client, r)) = d.db.poll_reply() {
                d.replies.push((now, client, r));
            }
            d.next_tick = d.db.wake_at().or(d.next_tick);
        }
        while let Some(req) = self.f.poll_io(now) {
            let at = now + self.disk.borrow().latency;
            if let IoOp::Read { file, first, count } = req.op {
                let mut d = self.disk.borrow_mut();
                d.read_calls += 1;
                for b in first..first.saturating_add(count) {
                    let disk_scn = d.scn(file, b);
                    d.reads.push(ReadRecord {
                        node: self.f.me(),
                        file,
                        block: b,
                        disk_scn,
                    });
                }
            }
            self.inflight.push((at, req));
        }
    }

    fn complete_io(&mut self, now: Instant, req: IoRequest) {
        let me = self.f.me();
        let result = {
            let mut d = self.disk.borrow_mut();
            match req.op {
                IoOp::Read { file, first, count } => {
                    let mut bufs = Vec::new();
                    let mut err = None;
                    for b in first..first.saturating_add(count) {
                        if b >= d.blocks_per_file {
                            err = Some(IoError::OutOfRange {
                                file,
                                block: b,
                                blocks: d.blocks_per_file,
                            });
                            break;
                        }
                        let mut img = match d.stale_next_read.remove(&(file, b)) {
                            Some(old) => old,
                            None => d.block(file, b),
                        };
                        if d.corrupt_next_read.remove(&(file, b)) {
                            img[100] ^= 0xff;
                        }
                        match self.f.pool().alloc_from(&img) {
                            Some(p) => bufs.push(p.freeze()),
                            None => {
                                err = Some(IoError::NoBuffer);
                                break;
                            }
                        }
                    }
                    match err {
                        Some(e) => Err(e),
                        None => Ok(IoData::Blocks(bufs)),
                    }
                }
                IoOp::Write { file, block, data } => {
                    let scn = block::verify(&data, file, block).map_or(0, |h| h.scn);
                    d.writes.push((me, file, block, scn));
                    d.blocks.insert((file, block), data.to_vec());
                    Ok(IoData::Done)
                }
                IoOp::RedoAppend { offset, data } => {
                    let log = d.redo.entry(me).or_default();
                    let off = offset as usize;
                    if log.len() < off + data.len() {
                        log.resize(off + data.len(), 0);
                    }
                    log[off..off + data.len()].copy_from_slice(&data);
                    Ok(IoData::Done)
                }
                IoOp::RedoRead { node, offset, len } => {
                    let log = d.redo.get(&node).cloned().unwrap_or_default();
                    let off = (offset as usize).min(log.len());
                    let end = (off + len as usize).min(log.len());
                    Ok(IoData::Bytes(log[off..end].to_vec()))
                }
                IoOp::RedoCheckpoint { lsn } => {
                    // Every record the checkpoint leaves behind must be in
                    // the datafile already.
                    let from = d.checkpoint(me);
                    let log = d.redo.get(&me).cloned().unwrap_or_default();
                    let (a, b) = (
                        (from as usize).min(log.len()),
                        (lsn as usize).min(log.len()),
                    );
                    for (at, r) in crate::redo::scan(&log[a..b], from, None).records {
                        let on_disk = d.scn(r.file, r.block);
                        if on_disk < r.scn {
                            d.checkpoint_violations.push(format!(
                                "node {} checkpoint {lsn} leaves record LSN {at} SCN {} of block {}/{} behind, the disk has SCN {on_disk}",
                                me.0, r.scn, r.file, r.block
                            ));
                        }
                    }
                    let c = d.checkpoints.entry(me).or_default();
                    let below = c.last().copied().unwrap_or(0);
                    c.push(lsn);
                    let log = d.redo.entry(me).or_default();
                    let end = (below as usize).min(log.len());
                    log[..end].fill(0);
                    Ok(IoData::Done)
                }
                IoOp::RedoCheckpointRead { node } => Ok(IoData::Lsn(d.checkpoint(node))),
                IoOp::ReadScn { file, block } => Ok(IoData::Scn(d.scn(file, block))),
            }
        };
        self.f.handle_io(now, IoCompletion { id: req.id, result });
        self.pump(now);
    }

    fn deliver(&mut self, now: Instant, ev: HostEvent) {
        let ev = match ev {
            HostEvent::Transport {
                event:
                    Event::Delivered {
                        peer,
                        channel,
                        msg_id,
                        mut data,
                    },
                tag,
            } => {
                if channel == Channel::Block && self.corrupt_next_image {
                    self.corrupt_next_image = false;
                    if data.len() > 200 {
                        data[200] ^= 0x55;
                    }
                }
                if self.chance(self.faults.drop) {
                    self.dropped += 1;
                    return;
                }
                if self.chance(self.faults.duplicate) {
                    if let Some(copy) = self.f.pool().alloc_from(&data) {
                        let dup = HostEvent::Transport {
                            event: Event::Delivered {
                                peer,
                                channel,
                                msg_id,
                                data: copy,
                            },
                            tag,
                        };
                        self.f.handle_event(now, dup);
                    }
                }
                let ev = HostEvent::Transport {
                    event: Event::Delivered {
                        peer,
                        channel,
                        msg_id,
                        data,
                    },
                    tag,
                };
                if self.chance(self.faults.delay) {
                    let ns = self.faults.max_delay.as_nanos() as u64;
                    let d = if ns == 0 { 0 } else { self.rng % ns };
                    self.delayed.push((now + Duration::from_nanos(d), ev));
                    return;
                }
                ev
            }
            other => other,
        };
        self.f.handle_event(now, ev);
        self.pump(now);
    }
}

pub fn op_of(c: &Completion) -> u64 {
    c.op()
}

impl Protocol for SimFusion {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        self.deliver(now, event);
    }

    fn handle_timeout(&mut self, now: Instant) {
        // Disk completions due, in issue order.
        let mut i = 0;
        while i < self.inflight.len() {
            if self.inflight[i].0 <= now {
                let (_, req) = self.inflight.remove(i);
                self.complete_io(now, req);
            } else {
                i += 1;
            }
        }
        let mut j = 0;
        while j < self.delayed.len() {
            if self.delayed[j].0 <= now {
                let (_, ev) = self.delayed.remove(j);
                self.f.handle_event(now, ev);
                self.pump(now);
            } else {
                j += 1;
            }
        }
        if self.f.poll_timeout().is_some_and(|t| t <= now) {
            self.f.handle_timeout(now);
        }
        if let Some(d) = self
            .db
            .as_mut()
            .filter(|d| d.next_tick.is_some_and(|t| t <= now))
        {
            d.next_tick = d.db.tick(&mut self.f, now);
        }
        self.pump(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let io = self.inflight.iter().map(|(t, _)| *t).min();
        let d = self.delayed.iter().map(|(t, _)| *t).min();
        let tick = self.db.as_ref().and_then(|d| d.next_tick);
        [self.f.poll_timeout(), io, d, tick]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output> {
        self.pump(now);
        loop {
            let out = self.f.poll_output(now)?;
            let Output::Send {
                peer,
                channel,
                ref data,
                ..
            } = out
            else {
                return Some(out);
            };
            if channel == Channel::Block {
                if self.skip_image_to == Some(peer) {
                    self.skip_image_to = None;
                    self.dropped += 1;
                    continue;
                }
                *self.sent.entry("Image").or_default() += 1;
                self.trace.push((now, peer, None));
                return Some(out);
            }
            let Ok((_, m)) = Msg::decode(data) else {
                return Some(out);
            };
            if let Some(f) = self.drop_filter.as_mut() {
                if f(peer, &m) {
                    if matches!(m, Msg::Ship { .. }) {
                        self.skip_image_to = Some(peer);
                    }
                    self.dropped += 1;
                    continue;
                }
            }
            *self.sent.entry(m.name()).or_default() += 1;
            self.trace.push((now, peer, Some(m)));
            return Some(out);
        }
    }
}
