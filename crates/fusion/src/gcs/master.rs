//! The master: one conversion at a time per block, the rest queued.
//! The directory changes when the master decides (a grant or a forward),
//! and the conversion ends with the requester's Done; until then a
//! duplicate request makes the master redo its step (resend the grant,
//! the forward or the invalidations), and so does its own timer, which
//! covers a lost Done.
//!
//! Decisions, for a requester R (H: a holder):
//! - nobody holds it: grant (S for reads, X for a write); R reads disk;
//! - CR: forward to the X holder, else to an S holder (CR copy shipped);
//! - current (S): forward to the X holder (it keeps S) or an S holder;
//! - exclusive: forward to the X holder (it ships X, keeps a PI if
//!   dirty); with S holders, invalidate all but one (R, if R holds S:
//!   then a grant with nothing resent), and when all acked, forward to
//!   that one;
//! - scan block: as current if nobody holds X, else as CR.

use super::Fusion;
use crate::block::Scn;
use crate::grd::{Conv, Pending, Res, Step, What};
use crate::io::{BlockNo, FileNo};
use crate::msg::{Access, ErrorCode, Mode, Msg};
use icx_core::{Instant, NodeId};
use std::collections::BTreeSet;

impl Fusion {
    fn m_refuse(&mut self, from: NodeId, rid: u64, key: (FileNo, BlockNo), code: ErrorCode) {
        self.send(
            from,
            Msg::Error {
                rid,
                file: key.0,
                block: key.1,
                code,
            },
        );
    }

    /// Checks a request can be served here; false: refused (or, for a
    /// holder's write or drop before the directory is rebuilt, ignored:
    /// its retry comes again).
    fn m_admit(&mut self, from: NodeId, rid: u64, key: (FileNo, BlockNo), what: What) -> bool {
        let code = if self.slots.master(key.0, key.1) != self.me {
            if self.drm_redirect(from, rid, key) {
                return false;
            }
            Some(ErrorCode::NotMaster)
        } else if !self.in_range(key.0, key.1) {
            Some(ErrorCode::NoSuchBlock)
        } else if matches!(what, What::Write | What::Drop) && !self.recon_rebuilt() {
            return false;
        } else if !self.recon_admits(key)
            || self
                .dir
                .get(&key)
                .and_then(|r| r.refused.get(&from))
                .is_some_and(|&x| rid <= x)
        {
            self.stats.gc_domain_validation += 1;
            // The requester gives a refused request up and asks again with
            // a new id. A resend of the refused one (in flight, or because
            // the refusal was lost) is refused again, never started: its
            // ship would find nobody waiting, the block in no cache, and
            // the master waiting for a Done.
            let d = self
                .dir
                .entry(key)
                .or_default()
                .refused
                .entry(from)
                .or_insert(0);
            *d = (*d).max(rid);
            Some(ErrorCode::Recovering)
        } else {
            None
        };
        match code {
            Some(c) => {
                self.m_refuse(from, rid, key, c);
                false
            }
            None => true,
        }
    }

    pub(crate) fn m_request(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
        what: What,
    ) {
        if !self.m_admit(from, rid, key, what) {
            return;
        }
        let r = self.dir.entry(key).or_default();
        if r.running(from, rid) {
            // R asked again: its timer ran out. Redo the step.
            self.m_act(now, key, false);
            return;
        }
        if r.knows(from, rid) {
            self.stats.gc_duplicate_replies += 1;
            // A drop or write asked before a later request of the same node
            // finished: answered (changing nothing here) so its retry stops;
            // the node checks its own state when the answer comes.
            let (file, block) = key;
            match what {
                What::Drop if !r.queued(from, rid) => {
                    self.send(from, Msg::DropOk { rid, file, block })
                }
                What::Write if !r.queued(from, rid) => {
                    self.send(from, Msg::WriteGrant { rid, file, block })
                }
                _ => {}
            }
            return;
        }
        r.queue.push_back(Pending { from, rid, what });
        self.drm_waited(key);
        self.m_next(now, key);
        self.drm_note(now, from, key);
    }

    pub(crate) fn m_multi(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        file: FileNo,
        first: BlockNo,
        mask: u16,
    ) {
        let last = first.saturating_add(15 - mask.leading_zeros());
        if first / crate::grd::CHUNK != last / crate::grd::CHUNK {
            return self.m_refuse(from, rid, (file, first), ErrorCode::NotMaster);
        }
        // Blocks granted now go in one GrantMulti.
        self.batch = Some((from, rid, file, first, 0));
        for b in (first..=last).filter(|b| mask & (1 << (b - first)) != 0) {
            let key = (file, b);
            if !self.m_admit(from, rid, key, What::Scan) {
                continue;
            }
            let r = self.dir.entry(key).or_default();
            if r.mode_of(from) != Mode::N {
                continue; // R has it; nothing to do.
            }
            if r.running(from, rid) {
                self.m_act(now, key, false);
                continue;
            }
            if r.knows(from, rid) {
                continue;
            }
            r.queue.push_back(Pending {
                from,
                rid,
                what: What::Scan,
            });
            self.drm_waited(key);
            self.m_next(now, key);
        }
        if let Some((to, rid, file, first, mask)) = self.batch.take() {
            if mask != 0 {
                self.send(
                    to,
                    Msg::GrantMulti {
                        rid,
                        file,
                        first,
                        mask,
                    },
                );
            }
        }
        // One request for the chunk, however many blocks it names.
        self.drm_note(now, from, (file, first));
    }

    /// Starts queued conversions while the block is free (and its chunk
    /// is not frozen for a remaster: they wait for its handover).
    pub(super) fn m_next(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        if self.drm_frozen(key) {
            return;
        }
        for _ in 0..10_000 {
            let Some(r) = self.dir.get_mut(&key) else {
                return;
            };
            if r.busy.is_some() {
                return;
            }
            let Some(p) = r.queue.pop_front() else {
                return;
            };
            if r.done.get(&p.from).is_some_and(|&d| d >= p.rid) {
                // Overtaken by a later request of the same node that has
                // finished (messages reorder): a drop or write asked before
                // it no longer applies, but is answered so its retry stops.
                let (file, block) = key;
                let rid = p.rid;
                match p.what {
                    What::Drop => self.send(p.from, Msg::DropOk { rid, file, block }),
                    What::Write => self.send(p.from, Msg::WriteGrant { rid, file, block }),
                    _ => {}
                }
                continue;
            }
            self.m_start(now, key, p);
        }
    }

    fn m_start(&mut self, now: Instant, key: (FileNo, BlockNo), p: Pending) {
        let deadline = now + self.cfg.request_timeout * 2;
        let Some(r) = self.dir.get_mut(&key) else {
            return;
        };
        let from = p.from;
        let step = match p.what {
            What::Drop => {
                r.unhold(from);
                r.done.insert(from, p.rid);
                let m = Msg::DropOk {
                    rid: p.rid,
                    file: key.0,
                    block: key.1,
                };
                self.send(from, m);
                return;
            }
            What::Write => Step::WriteGranted {
                to: r.x_holder().unwrap_or(from),
            },
            What::Scan => {
                let access = if r.x_holder().is_some_and(|h| h != from) {
                    Access::Cr { scn: Scn::MAX }
                } else {
                    Access::Current
                };
                decide(r, self.me, from, p.rid, access, true)
            }
            What::Access(a) => decide(r, self.me, from, p.rid, a, false),
        };
        self.busy.insert(key);
        r.busy = Some(Conv {
            req: p,
            step,
            deadline,
        });
        self.m_act(now, key, true);
    }

    /// Sends what the running conversion's step needs (again).
    fn m_act(&mut self, now: Instant, key: (FileNo, BlockNo), first: bool) {
        // Twice the requester's: the requester's timer recovers lost
        // requests, forwards and ships (and makes the master redo its
        // step); this one only a lost Done or ack.
        let timeout = self.cfg.request_timeout * 2;
        let Some(r) = self.dir.get_mut(&key) else {
            return;
        };
        let disk_scn = r.disk_scn;
        // Past images exist: the current version is newer than disk, and
        // whoever gets X owes its write.
        let dirty = !r.pis.is_empty();
        let Some(c) = r.busy.as_mut() else {
            return;
        };
        c.deadline = now + timeout;
        let (from, rid) = (c.req.from, c.req.rid);
        let (file, block) = key;
        match c.step.clone() {
            Step::Granted { mode, keep, multi } => {
                if multi {
                    match self.batch.as_mut() {
                        Some((to, brid, bfile, bfirst, mask))
                            if first
                                && *to == from
                                && *brid == rid
                                && *bfile == file
                                && block >= *bfirst
                                && block - *bfirst < 16 =>
                        {
                            *mask |= 1 << (block - *bfirst);
                        }
                        _ => self.send(
                            from,
                            Msg::GrantMulti {
                                rid,
                                file,
                                first: block,
                                mask: 1,
                            },
                        ),
                    }
                } else {
                    self.send(
                        from,
                        Msg::Grant {
                            rid,
                            file,
                            block,
                            mode,
                            keep,
                            disk_scn,
                            dirty,
                        },
                    );
                }
            }
            Step::Forwarded {
                to,
                access,
                holder_rid,
            } => self.send(
                to,
                Msg::Fwd {
                    rid,
                    to: from,
                    file,
                    block,
                    access,
                    dirty,
                    holder_rid,
                },
            ),
            Step::Invalidating { waiting, .. } => {
                let r = self.dir.get(&key);
                let since: Vec<(NodeId, u64)> = waiting
                    .iter()
                    .map(|&n| (n, r.map_or(0, |r| r.since(n))))
                    .collect();
                for (n, rid) in since {
                    self.send(n, Msg::Inval { rid, file, block });
                }
            }
            Step::WriteGranted { to } => self.send(to, Msg::WriteGrant { rid, file, block }),
        }
    }

    fn m_end(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        if let Some(r) = self.dir.get_mut(&key) {
            self.busy.remove(&key);
            if let Some(c) = r.busy.take() {
                r.done.insert(c.req.from, c.req.rid);
            }
        }
        self.m_next(now, key);
        self.drm_try_handover(now, crate::grd::chunk_of(key.0, key.1));
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn m_done(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        file: FileNo,
        first: BlockNo,
        mask: u16,
        pi: bool,
        scn: Scn,
    ) {
        for i in 0..16u32 {
            if mask & (1 << i) == 0 {
                continue;
            }
            let key = (file, first.saturating_add(i));
            let Some(r) = self.dir.get_mut(&key) else {
                continue;
            };
            let Some(c) = r.busy.as_ref() else {
                self.stats.gc_duplicate_replies += 1;
                continue;
            };
            if c.req.from != from || c.req.rid != rid {
                self.stats.gc_duplicate_replies += 1;
                continue;
            }
            match c.step {
                Step::Forwarded {
                    to,
                    access: Access::Exclusive,
                    ..
                } if pi => {
                    r.pis.insert(to, scn);
                }
                Step::Forwarded {
                    to,
                    access: Access::Cr { .. },
                    ..
                } if pi => {
                    // The holder down-converted (fairness) as it shipped.
                    if r.mode_of(to) == Mode::X {
                        r.holders.insert(to, Mode::S);
                    }
                }
                Step::Forwarded { .. } | Step::Granted { .. } => {}
                _ => continue,
            }
            self.m_end(now, key);
        }
    }

    pub(crate) fn m_inval_ack(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
        pi_scn: Scn,
    ) {
        let Some(r) = self.dir.get_mut(&key) else {
            return;
        };
        let Some(c) = r.busy.as_mut() else {
            return;
        };
        let Step::Invalidating { waiting, then_fwd } = &mut c.step else {
            return;
        };
        // The ack names the holder's own request id (see Res::since).
        if r.since.get(&from) != Some(&rid) || !waiting.remove(&from) {
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        r.holders.remove(&from);
        r.since.remove(&from);
        if pi_scn > 0 {
            r.pis.insert(from, pi_scn);
        }
        if !waiting.is_empty() {
            return;
        }
        let (requester, req_rid) = (c.req.from, c.req.rid);
        c.step = match *then_fwd {
            Some((h, holder_rid)) => Step::Forwarded {
                to: h,
                access: Access::Exclusive,
                holder_rid,
            },
            None => Step::Granted {
                mode: Mode::X,
                keep: true,
                multi: false,
            },
        };
        r.only(requester, req_rid);
        self.m_act(now, key, true);
    }

    pub(crate) fn m_write_done(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
        scn: Scn,
    ) {
        if self.slots.master(key.0, key.1) != self.me && self.drm_redirect(from, rid, key) {
            // The chunk moved: the holder resends its WriteDone there.
            return;
        }
        let (file, block) = key;
        self.send(from, Msg::WriteAck { rid, file, block });
        let Some(r) = self.dir.get_mut(&key) else {
            return;
        };
        if scn > 0 {
            self.ckpt.pending.covered(key, scn);
            r.disk_scn = r.disk_scn.max(scn);
            // Every PI at or below what reached disk goes, cluster-wide.
            let discard: Vec<NodeId> = r
                .pis
                .iter()
                .filter(|(_, &s)| s <= scn)
                .map(|(&n, _)| n)
                .collect();
            for n in &discard {
                r.pis.remove(n);
            }
            for n in discard {
                let msg = Msg::PiDiscard {
                    file: key.0,
                    block: key.1,
                    scn,
                };
                let deadline = now + self.cfg.request_timeout;
                self.pi_retries.insert(
                    (key, n),
                    super::Retry {
                        to: n,
                        msg: msg.clone(),
                        deadline,
                    },
                );
                self.send(n, msg);
            }
        }
        let Some(r) = self.dir.get_mut(&key) else {
            return;
        };
        let requester = r.busy.as_ref().and_then(|c| match c.step {
            Step::WriteGranted { to } if to == from && c.req.rid == rid => Some(c.req.from),
            _ => None,
        });
        if let Some(requester) = requester {
            self.m_end(now, key);
            if requester != from {
                // Its grant now: the block is not its to write any more,
                // so it answers at once and its write completes.
                self.send(requester, Msg::WriteGrant { rid, file, block });
            }
        }
        // A checkpointing holder's writes are its use of the block too.
        self.drm_note(now, from, key);
    }

    /// Redoes the steps of conversions whose timer ran out (a lost Done,
    /// ack or forward).
    pub(crate) fn m_timeout(&mut self, now: Instant) {
        let due: Vec<(FileNo, BlockNo)> = self
            .busy
            .iter()
            .filter(|k| {
                self.dir
                    .get(k)
                    .and_then(|r| r.busy.as_ref())
                    .is_some_and(|c| c.deadline <= now)
            })
            .copied()
            .collect();
        for key in due {
            self.m_act(now, key, false);
        }
    }
}

/// The master `me`'s decision for an access of `from`'s request `rid`,
/// updating the directory. Among S holders the master itself ships when
/// it is one (2-way).
fn decide(r: &mut Res, me: NodeId, from: NodeId, rid: u64, access: Access, multi: bool) -> Step {
    let mut others: Vec<(NodeId, Mode)> = r
        .holders
        .iter()
        .filter(|(&n, _)| n != from)
        .map(|(&n, &m)| (n, m))
        .collect();
    others.sort_by_key(|&(n, _)| n != me);
    let x = others.iter().find(|(_, m)| *m == Mode::X).map(|(n, _)| *n);
    let mine = r.mode_of(from);
    match access {
        Access::Cr { .. } | Access::Current => {
            let to = x.or(others.first().map(|(n, _)| *n));
            match to {
                Some(h) => {
                    let holder_rid = r.since(h);
                    if access == Access::Current {
                        if x.is_some() {
                            r.holders.insert(h, Mode::S);
                        }
                        r.hold(from, Mode::S, rid);
                    }
                    Step::Forwarded {
                        to: h,
                        access,
                        holder_rid,
                    }
                }
                None => {
                    // Cached nowhere else: a shared grant (a CR read of an
                    // uncached block caches it shared, as Oracle's does).
                    let keep = mine != Mode::N;
                    r.hold(from, mine.max(Mode::S), rid);
                    Step::Granted {
                        mode: mine.max(Mode::S),
                        keep,
                        multi,
                    }
                }
            }
        }
        Access::Exclusive => {
            if let Some(h) = x {
                let holder_rid = r.since(h);
                r.only(from, rid);
                return Step::Forwarded {
                    to: h,
                    access,
                    holder_rid,
                };
            }
            if others.is_empty() {
                let keep = mine != Mode::N;
                r.only(from, rid);
                return Step::Granted {
                    mode: Mode::X,
                    keep,
                    multi: false,
                };
            }
            // S holders: one ships (unless R holds the current version),
            // the others are invalidated first.
            let then_fwd = if mine == Mode::S {
                None
            } else {
                Some((others[0].0, r.since(others[0].0)))
            };
            let waiting: BTreeSet<NodeId> = others
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| Some(*n) != then_fwd.map(|(h, _)| h))
                .collect();
            if waiting.is_empty() {
                r.only(from, rid);
                return match then_fwd {
                    Some((h, holder_rid)) => Step::Forwarded {
                        to: h,
                        access,
                        holder_rid,
                    },
                    None => Step::Granted {
                        mode: Mode::X,
                        keep: true,
                        multi: false,
                    },
                };
            }
            Step::Invalidating { waiting, then_fwd }
        }
    }
}
