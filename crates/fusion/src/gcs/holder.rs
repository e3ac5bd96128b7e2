//! The holder: ships what the master forwards (a CR copy, a shared
//! current, or X, keeping a past image of a dirty block), drops S copies
//! on invalidation, writes blocks (directly in the local role, through the
//! master in the global role), discards past images, evicts.
//!
//! A forward that would change a pinned block, or one being written,
//! waits (`gc buffer busy release`); a dirty image waits for its redo
//! (`gcs log flush sync`). A duplicate forward (same request id) gets the
//! same image again, never a second transfer.

use super::{Completion, Fusion, GcError, IoFor, Retry, RETRY_DROP, RETRY_WRITE, RETRY_WRITE_DONE};
use crate::block::Scn;
use crate::cache::Pin;
use crate::io::{BlockNo, FileNo, IoData, IoError, IoOp};
use crate::msg::{Access, Mode, Msg, ShipKind};
use icx_core::{Instant, NodeId, SharedBuf};

/// The last ship of a block, resent as is for a duplicate forward.
#[derive(Clone, Debug)]
pub(crate) struct LastShip {
    rid: u64,
    pub(crate) to: NodeId,
    scn: Scn,
    kind: ShipKind,
    pi: bool,
    dirty: bool,
    img: SharedBuf,
    /// False while it waits for redo.
    sent: bool,
}

impl Fusion {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn h_fwd(
        &mut self,
        _now: Instant,
        master: NodeId,
        rid: u64,
        to: NodeId,
        key: (FileNo, BlockNo),
        access: Access,
        (dirty, holder_rid): (bool, u64),
    ) {
        if let Some(ls) = self.last_ship.get(&key) {
            if ls.rid == rid && ls.to == to {
                if ls.sent {
                    let (hdr, img) = ship_msg(key, ls);
                    self.send_ship(to, hdr, img);
                }
                return;
            }
        }
        if self.completed.get(&key).map(|c| c.0) != Some(holder_rid) {
            // A late forward of an older conversion: the copy it means is
            // gone (this one came by a later request).
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        let threshold = self.cfg.fairness_threshold;
        let Some(e) = self.cache.entries.get_mut(&key) else {
            return;
        };
        let Some(cur) = e.current.clone() else {
            return;
        };
        if !matches!(access, Access::Cr { .. }) && (e.pin != Pin::None || e.writing.is_some()) {
            self.stats.gc_buffer_busy_release += 1;
            self.deferred.entry(key).or_default().push((
                master,
                Msg::Fwd {
                    rid,
                    to,
                    file: key.0,
                    block: key.1,
                    access,
                    dirty,
                    holder_rid,
                },
            ));
            return;
        }
        let (scn, img, kind, pi) = match access {
            Access::Cr { scn: snap } => {
                let (s, img) = e.version_at(snap).unwrap_or((e.scn, cur));
                let mut down = false;
                if e.mode == Mode::X {
                    e.cr_ships += 1;
                    if e.cr_ships >= threshold && e.pin != Pin::Excl {
                        // Fairness: readers stop queueing on the X holder.
                        e.mode = Mode::S;
                        e.cr_ships = 0;
                        down = true;
                    }
                }
                self.stats.gc_cr_blocks_served += 1;
                if down {
                    self.stats.gc_fairness_down_converts += 1;
                    let m = Msg::DownConvert {
                        file: key.0,
                        block: key.1,
                        scn: s,
                    };
                    self.send(master, m);
                }
                // `pi` of a CR ship: the holder down-converted; the
                // requester's Done carries it to the master (reliably:
                // the DownConvert itself is only a hint).
                (s, img, ShipKind::Cr, down)
            }
            Access::Current => {
                if e.mode == Mode::X {
                    e.mode = Mode::S;
                }
                self.stats.gc_current_blocks_served += 1;
                (e.scn, cur, ShipKind::S, false)
            }
            Access::Exclusive => {
                // Shipped without a write; a dirty image stays as a PI.
                let (s, dirty) = (e.scn, e.dirty);
                if dirty {
                    e.keep_pi(s, cur.clone());
                }
                e.clear_current();
                self.stats.gc_current_blocks_served += 1;
                (s, cur, ShipKind::X, dirty)
            }
        };
        let wait = self.redo.needs_flush(scn);
        let ls = LastShip {
            rid,
            to,
            scn,
            kind,
            pi,
            dirty: kind == ShipKind::X && (pi || dirty),
            img,
            sent: !wait,
        };
        if wait {
            self.stats.gcs_log_flush_sync += 1;
            self.redo_kick();
        } else {
            let (hdr, img) = ship_msg(key, &ls);
            self.send_ship(to, hdr, img);
        }
        self.last_ship.insert(key, ls);
    }

    /// Redo became durable: ships and writes that waited for it go.
    pub(crate) fn flushed(&mut self, now: Instant) {
        let ready: Vec<(FileNo, BlockNo)> = self
            .last_ship
            .iter()
            .filter(|(_, ls)| !ls.sent && !self.redo.needs_flush(ls.scn))
            .map(|(k, _)| *k)
            .collect();
        for key in ready {
            if let Some(ls) = self.last_ship.get_mut(&key) {
                ls.sent = true;
                let to = ls.to;
                let (hdr, img) = ship_msg(key, ls);
                self.send_ship(to, hdr, img);
            }
        }
        let writes: Vec<(FileNo, BlockNo)> = self
            .write_wait
            .keys()
            .filter(|k| {
                self.cache
                    .get(**k)
                    .and_then(|e| e.writing)
                    .is_some_and(|s| !self.redo.needs_flush(s))
            })
            .copied()
            .collect();
        for key in writes {
            if let Some((rid, data)) = self.write_wait.remove(&key) {
                self.issue_write(key, rid, data);
            }
        }
        let _ = now;
    }

    pub(crate) fn h_inval(
        &mut self,
        _now: Instant,
        master: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
    ) {
        let (file, block) = key;
        if self.completed.get(&key).map(|c| c.0) != Some(rid) {
            // A late invalidation of a copy this node no longer has (it
            // holds one got by a later request, or none).
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        let pi_scn = match self.cache.entries.get_mut(&key) {
            Some(e) if e.current.is_some() => {
                if e.pin != Pin::None || e.writing.is_some() {
                    self.stats.gc_buffer_busy_release += 1;
                    self.deferred
                        .entry(key)
                        .or_default()
                        .push((master, Msg::Inval { rid, file, block }));
                    return;
                }
                let s = e.scn;
                let pi = if e.dirty {
                    if let Some(c) = e.current.clone() {
                        e.keep_pi(s, c);
                    }
                    s
                } else {
                    0
                };
                e.clear_current();
                pi
            }
            Some(e) => e.pis.keys().next_back().copied().unwrap_or(0),
            None => 0,
        };
        self.send(
            master,
            Msg::InvalAck {
                rid,
                file,
                block,
                pi_scn,
            },
        );
    }

    pub(crate) fn h_pi_discard(&mut self, master: NodeId, key: (FileNo, BlockNo), scn: Scn) {
        if let Some(e) = self.cache.entries.get_mut(&key) {
            self.stats.gc_pi_discards += e.discard_pis(scn) as u64;
        }
        // The block reached the disk at `scn`: this node's redo up to it
        // is covered.
        self.ckpt_covered(key, scn);
        let (file, block) = key;
        self.send(master, Msg::PiDiscardAck { file, block, scn });
    }

    /// Writes a dirty block (for `op`, or for eviction when `None`).
    pub(crate) fn h_write(&mut self, _now: Instant, op: Option<u64>, key: (FileNo, BlockNo)) {
        let Some(e) = self
            .cache
            .get(key)
            .filter(|e| e.current.is_some() && e.dirty)
        else {
            if let Some(op) = op {
                let scn = self.cache.get(key).map_or(0, |e| e.scn);
                self.complete(Completion::Written {
                    op,
                    file: key.0,
                    block: key.1,
                    scn,
                });
            }
            return;
        };
        let (mode, global, scn, writing) = (e.mode, e.global, e.scn, e.writing.is_some());
        if let Some(op) = op {
            self.write_ops.entry(key).or_default().push(op);
        }
        if writing || self.retries.contains_key(&(key, RETRY_WRITE)) {
            return;
        }
        if mode == Mode::X && !global {
            let rid = self.rid();
            self.start_write(key, rid);
        } else {
            let rid = self.rid();
            let to = self.slots.master(key.0, key.1);
            let msg = Msg::WriteReq {
                rid,
                file: key.0,
                block: key.1,
                scn,
            };
            self.retries.insert(
                (key, RETRY_WRITE),
                Retry {
                    to,
                    msg: msg.clone(),
                    deadline: _now + self.cfg.request_timeout,
                },
            );
            self.send(to, msg);
        }
    }

    pub(crate) fn h_write_grant(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
    ) {
        let ours = matches!(
            self.retries.get(&(key, RETRY_WRITE)),
            Some(Retry { msg: Msg::WriteReq { rid: r, .. }, .. }) if *r == rid
        );
        if !ours {
            // A duplicate grant: its write is running (its WriteDone will
            // come), or done: the WriteDone again (SCN 0, discarding
            // nothing, if a later write has replaced the record).
            if self.write_wait.contains_key(&key)
                || self.cache.get(key).is_some_and(|e| e.writing.is_some())
            {
                return;
            }
            let scn = match self.last_write.get(&key) {
                Some(&(r, scn)) if r == rid => scn,
                _ => 0,
            };
            let dirty_x = self
                .cache
                .get(key)
                .is_some_and(|e| e.current.is_some() && e.dirty && e.mode == Mode::X);
            if scn == 0 && dirty_x {
                // Another node's write, forwarded to this X holder (the
                // block came here while that request waited): written
                // under its id, the WriteDone to the master that asked.
                self.write_master.insert(key, (rid, from));
                self.start_write(key, rid);
                return;
            }
            let m = Msg::WriteDone {
                rid,
                file: key.0,
                block: key.1,
                scn,
            };
            // The WriteDone ends the granting master's conversion.
            self.send(from, m);
            return;
        }
        self.retries.remove(&(key, RETRY_WRITE));
        self.write_master.insert(key, (rid, from));
        let dirty = self
            .cache
            .get(key)
            .is_some_and(|e| e.current.is_some() && e.dirty && e.writing.is_none());
        if dirty {
            self.start_write(key, rid);
        } else {
            // Shipped away meanwhile: its new holder writes it.
            self.last_write.insert(key, (rid, 0));
            let m = Msg::WriteDone {
                rid,
                file: key.0,
                block: key.1,
                scn: 0,
            };
            // The WriteDone ends the granting master's conversion.
            self.send(from, m);
            self.finish_write_ops(key, Ok(self.cache.get(key).map_or(0, |e| e.scn)));
            self.run_deferred(now, key);
        }
    }

    /// Marks the block being written (transfers wait) and writes it once
    /// its redo is durable (write-ahead). The image is taken now: an X
    /// holder's pin may change the block meanwhile, and a later version's
    /// redo may not be durable when this one's is.
    fn start_write(&mut self, key: (FileNo, BlockNo), rid: u64) {
        let Some(e) = self.cache.entries.get_mut(&key) else {
            return;
        };
        let Some(data) = e.current.clone() else {
            return;
        };
        e.writing = Some(e.scn);
        let scn = e.scn;
        if self.redo.needs_flush(scn) {
            self.stats.gcs_log_flush_sync += 1;
            self.write_wait.insert(key, (rid, data));
            self.redo_kick();
        } else {
            self.issue_write(key, rid, data);
        }
    }

    fn issue_write(&mut self, key: (FileNo, BlockNo), rid: u64, data: SharedBuf) {
        let Some(scn) = self.cache.get(key).and_then(|e| e.writing) else {
            return;
        };
        self.io(
            IoOp::Write {
                file: key.0,
                block: key.1,
                data,
            },
            IoFor::Write { key, scn, rid },
        );
    }

    pub(crate) fn h_write_done(
        &mut self,
        now: Instant,
        key: (FileNo, BlockNo),
        scn: Scn,
        rid: u64,
        result: Result<IoData, IoError>,
    ) {
        let to = match self.write_master.remove(&key) {
            Some((r, m)) if r == rid && rid != 0 => m,
            // A local-role write's notice: to the master as known now.
            _ => self.slots.master(key.0, key.1),
        };
        let ok = result.is_ok();
        if let Some(e) = self.cache.entries.get_mut(&key) {
            e.writing = None;
            if ok {
                if e.scn == scn {
                    e.dirty = false;
                    e.global = false;
                }
                self.stats.gc_pi_discards += e.discard_pis(scn) as u64;
            }
        }
        let written = if ok { scn } else { 0 };
        if ok {
            self.stats.physical_writes += 1;
            self.ckpt_covered(key, scn);
        }
        self.last_write.insert(key, (rid, written));
        let m = Msg::WriteDone {
            rid,
            file: key.0,
            block: key.1,
            scn: written,
        };
        // Resent until the master acknowledges: it discards the PIs.
        self.retries.insert(
            (key, RETRY_WRITE_DONE),
            Retry {
                to,
                msg: m.clone(),
                deadline: now + self.cfg.request_timeout,
            },
        );
        self.send(to, m);
        self.finish_write_ops(key, result.map(|_| scn).map_err(|e| e.to_string()));
        self.run_deferred(now, key);
        // Local operations that waited for the write.
        self.kick(now, key);
        self.evict(now);
    }

    fn finish_write_ops(&mut self, key: (FileNo, BlockNo), r: Result<Scn, String>) {
        for op in self.write_ops.remove(&key).unwrap_or_default() {
            self.complete(match &r {
                Ok(scn) => Completion::Written {
                    op,
                    file: key.0,
                    block: key.1,
                    scn: *scn,
                },
                Err(e) => Completion::Failed {
                    op,
                    error: GcError::Io(e.clone()),
                },
            });
        }
    }

    /// Asks the master to let this node drop its clean copy.
    pub(crate) fn ask_drop(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        if self.retries.contains_key(&(key, RETRY_DROP)) {
            return;
        }
        if let Some(e) = self.cache.entries.get_mut(&key) {
            e.dropping = true;
        }
        let rid = self.rid();
        let to = self.slots.master(key.0, key.1);
        let msg = Msg::Drop {
            rid,
            file: key.0,
            block: key.1,
        };
        self.retries.insert(
            (key, RETRY_DROP),
            Retry {
                to,
                msg: msg.clone(),
                deadline: now + self.cfg.request_timeout,
            },
        );
        self.send(to, msg);
    }

    pub(crate) fn h_drop_ok(&mut self, now: Instant, rid: u64, key: (FileNo, BlockNo)) {
        let ours = matches!(
            self.retries.get(&(key, RETRY_DROP)),
            Some(Retry { msg: Msg::Drop { rid: r, .. }, .. }) if *r == rid
        );
        if !ours {
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        self.retries.remove(&(key, RETRY_DROP));
        if let Some(e) = self.cache.entries.get_mut(&key) {
            if e.dropping {
                e.clear_current();
            }
        }
        self.kick(now, key);
    }

    /// Forwards and invalidations that waited on a pin or a write.
    pub(crate) fn run_deferred(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        let Some(msgs) = self.deferred.remove(&key) else {
            return;
        };
        for (from, m) in msgs {
            self.local.push_back((from, m));
        }
        self.drain_local(now);
    }

    /// Gets the cache back under its size: clean victims are dropped
    /// (the master agreeing), dirty ones written first.
    pub(crate) fn evict(&mut self, now: Instant) {
        let victims = self.cache.victims();
        for key in victims {
            if self.wants.contains_key(&key) || self.waiting.contains_key(&key) {
                continue;
            }
            if self.is_dirty(key.0, key.1) {
                self.h_write(now, None, key);
            } else {
                self.ask_drop(now, key);
            }
        }
    }
}

fn ship_msg(key: (FileNo, BlockNo), ls: &LastShip) -> (Msg, SharedBuf) {
    (
        Msg::Ship {
            rid: ls.rid,
            file: key.0,
            block: key.1,
            scn: ls.scn,
            kind: ls.kind,
            pi: ls.pi,
            dirty: ls.dirty,
        },
        ls.img.clone(),
    )
}
