//! The API for the layer above (the key-value executor) and the
//! [`Protocol`] the host drives.

use super::redo_log::Entry;
use super::{Completion, Fusion, GcError, IoFor, Op, OpKind};
use crate::block::Scn;
use crate::cache::Pin;
use crate::io::{BlockNo, FileNo, IoCompletion, IoRequest};
use crate::kv::{self, KvError};
use crate::msg::{Access, Mode, Msg};
use crate::redo;
use icx_core::{Channel, Instant, NodeId, PoolBuf, SharedBuf};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;

impl Fusion {
    /// Asks for a block. Completes with [`Completion::Acquired`] (or
    /// `Failed`); `Current` and `Exclusive` pin it until [`Self::release`].
    pub fn acquire(&mut self, now: Instant, op: u64, file: FileNo, block: BlockNo, access: Access) {
        if self.fenced {
            return self.complete(Completion::Failed {
                op,
                error: GcError::Fenced,
            });
        }
        if !self.in_range(file, block) {
            return self.complete(Completion::Failed {
                op,
                error: GcError::NoSuchBlock { file, block },
            });
        }
        if self.ops.contains_key(&op) || self.scans.contains_key(&op) {
            return self.complete(Completion::Failed {
                op,
                error: GcError::BadOp(op),
            });
        }
        let seq = self.next_op_seq();
        self.ops.insert(
            op,
            Op {
                key: (file, block),
                kind: OpKind::Acquire(access),
                held: None,
                seq,
            },
        );
        self.enqueue_op(now, op);
        self.drain_local(now);
    }

    /// A multi-block consistent read of `count` blocks from `first` (at
    /// most `multiblock_read_count`): blocks cached here are used, the
    /// rest are asked of their masters with one request per mastering
    /// chunk. Completes with [`Completion::Scanned`].
    pub fn scan(&mut self, now: Instant, op: u64, file: FileNo, first: BlockNo, count: u32) {
        let bad = count == 0
            || count > self.cfg.multiblock_read_count.min(crate::grd::CHUNK)
            || !self.in_range(file, first)
            || !self.in_range(file, first.saturating_add(count - 1));
        if self.fenced || bad || self.ops.contains_key(&op) || self.scans.contains_key(&op) {
            let error = if self.fenced {
                GcError::Fenced
            } else if bad {
                GcError::NoSuchBlock { file, block: first }
            } else {
                GcError::BadOp(op)
            };
            return self.complete(Completion::Failed { op, error });
        }
        self.r_scan(now, op, file, first, count);
        self.drain_local(now);
    }

    /// Makes `image` (a whole block; its header is written here) the new
    /// current version of the block `op` holds in X, at a new SCN, keeping
    /// the old one for consistent reads. `redo` is appended to the redo log
    /// as is (whole records covering this change); [`Completion::Changed`]
    /// comes once it is durable. Returns the SCN.
    pub fn change(
        &mut self,
        now: Instant,
        op: u64,
        image: PoolBuf,
        redo: Vec<u8>,
    ) -> Result<Scn, GcError> {
        let (key, _) = self.x_held(op)?;
        if image.len() != self.cfg.block_size {
            return Err(GcError::BadOp(op));
        }
        Ok(self.install_change(now, op, key, image, |_| Entry::Raw(redo)))
    }

    /// Makes `change` to the key-value page of the block `op` holds in X:
    /// on a copy of the current image (the old one stays for consistent
    /// reads), with [`redo::apply_change`], so the page is the one redo
    /// replay builds. The redo record is encoded with its group commit, at
    /// its LSN; [`Completion::Changed`] comes once it is durable. A change
    /// the page refuses is [`GcError::Kv`], with nothing changed or logged.
    pub fn change_kv(
        &mut self,
        now: Instant,
        op: u64,
        change: redo::Change,
    ) -> Result<Scn, GcError> {
        let (key, cur) = self.x_held(op)?;
        let page_len = self.cfg.block_size - crate::block::HEADER_LEN;
        if let Err(redo::EncodeError::TooLarge { key, value }) = redo::check_change(&change) {
            return Err(GcError::Kv(KvError::TooLarge {
                need: kv::RECORD_HEADER + key + value + kv::SLOT,
                max: page_len - kv::PAGE_HEADER,
            }));
        }
        if cur.len() != self.cfg.block_size {
            return Err(GcError::BadOp(op));
        }
        let mut image = self.pool.alloc(cur.len()).ok_or(GcError::NoBuffer)?;
        image.copy_from_slice(&cur);
        redo::apply_change(&change, crate::block::payload_mut(&mut image)).map_err(GcError::Kv)?;
        let node = self.me;
        let base = self.cache.get(key).map_or(0, |e| e.scn);
        Ok(self.install_change(now, op, key, image, |scn| {
            Entry::Record(redo::Record {
                scn,
                base,
                node,
                file: key.0,
                block: key.1,
                change,
            })
        }))
    }

    /// The block `op` holds pinned in X, and its current image.
    fn x_held(&self, op: u64) -> Result<((FileNo, BlockNo), SharedBuf), GcError> {
        if self.fenced {
            return Err(GcError::Fenced);
        }
        let key = self
            .ops
            .get(&op)
            .filter(|o| o.held == Some(Mode::X))
            .map(|o| o.key);
        key.and_then(|key| {
            let e = self.cache.get(key)?;
            let cur = e.current.clone()?;
            (e.mode == Mode::X && e.pin == Pin::Excl).then_some((key, cur))
        })
        .ok_or(GcError::BadOp(op))
    }

    /// Seals `image` at the block's next SCN, installs it as the current
    /// dirty version and queues its redo: the one path of every change.
    fn install_change(
        &mut self,
        now: Instant,
        op: u64,
        key: (FileNo, BlockNo),
        mut image: PoolBuf,
        redo: impl FnOnce(Scn) -> Entry,
    ) -> Scn {
        let scn = self.next_scn(key.0, key.1);
        self.scn = scn;
        crate::block::seal(
            &mut image,
            &crate::block::Header {
                kind: crate::block::Kind::Data,
                file: key.0,
                block: key.1,
                scn,
            },
        );
        let chain = self.cfg.cr_versions;
        let e = self.cache.entry(key);
        e.install(scn, image.freeze(), true, chain);
        e.dirty = true;
        self.cache.touch(key);
        self.redo.push(scn, redo(scn), op);
        self.redo_kick();
        self.drain_local(now);
        scn
    }

    /// Writes the block to its datafile if it is dirty here (directly in
    /// the local role, through the master in the global role). Completes
    /// with [`Completion::Written`]. While this node has a request for the
    /// block out, the write waits for it: a master takes a node's newer
    /// request on a block as the end of its older ones, so a write asked
    /// meanwhile would make it ignore the request's resends.
    pub fn write(&mut self, now: Instant, op: u64, file: FileNo, block: BlockNo) {
        if self.fenced {
            return self.complete(Completion::Failed {
                op,
                error: GcError::Fenced,
            });
        }
        let key = (file, block);
        if self.wants.contains_key(&key) {
            self.write_after.entry(key).or_default().push(op);
            return;
        }
        self.h_write(now, Some(op), key);
        self.drain_local(now);
    }

    /// The request for `key` is over: the writes that waited for it go.
    pub(crate) fn resume_writes(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        if self.wants.contains_key(&key) {
            return;
        }
        for op in self.write_after.remove(&key).unwrap_or_default() {
            self.h_write(now, Some(op), key);
        }
    }

    /// Ends an operation: unpins its block, lets transfers that waited
    /// for it go.
    pub fn release(&mut self, now: Instant, op: u64) {
        let Some(o) = self.ops.remove(&op) else {
            return;
        };
        if let Some(m) = o.held {
            if let Some(e) = self.cache.entries.get_mut(&o.key) {
                e.pin = match (e.pin, m) {
                    (Pin::Shared(n), Mode::S) if n > 1 => Pin::Shared(n - 1),
                    _ => Pin::None,
                };
            }
        } else if let Some(q) = self.waiting.get_mut(&o.key) {
            q.retain(|&x| x != op);
        }
        self.run_deferred(now, o.key);
        self.kick(now, o.key);
        self.evict(now);
        self.drain_local(now);
    }

    pub fn poll_ready(&mut self) -> Option<Completion> {
        self.ready.pop_front()
    }

    pub fn poll_io(&mut self, _now: Instant) -> Option<IoRequest> {
        if self.fenced {
            self.io_out.clear();
            return None;
        }
        self.io_out.pop_front()
    }

    pub fn handle_io(&mut self, now: Instant, c: IoCompletion) {
        if self.fenced {
            return;
        }
        let Some(purpose) = self.io_for.remove(&c.id) else {
            return;
        };
        match purpose {
            IoFor::Read { file, first, count } => {
                self.r_read_done(now, file, first, count, c.result)
            }
            IoFor::Write { key, scn, rid } => self.h_write_done(now, key, scn, rid, c.result),
            IoFor::Redo => self.redo_done(now, c.result),
            IoFor::RecoveryRedo { node, offset } => {
                self.recovery_redo_done(now, node, offset, c.result)
            }
            IoFor::RecoveryRead { key } => self.recovery_read_done(now, key, c.result),
            IoFor::RecoveryScn { key } => self.recovery_scn_done(now, key, c.result),
            IoFor::RecoveryCheckpoint { node } => {
                self.recovery_checkpoint_done(now, node, c.result)
            }
            IoFor::Checkpoint { lsn } => self.checkpoint_done(now, lsn, c.result),
            IoFor::EarlierRedo { offset } => self.earlier_redo_done(now, offset, c.result),
            IoFor::CheckpointRead { key } => self.checkpoint_read_done(now, key, c.result),
        }
        self.drain_local(now);
    }

    /// A new membership view. The first call opens the service (with
    /// instance recovery when `Config::open_recovery`, or as a joiner when
    /// others are members already); a later one that only adds members is
    /// a join, without a freeze (`join`: the joiners take back their
    /// slots chunk by chunk); any other change reconfigures (`recon`):
    /// departed nodes' slots move, the directory is rebuilt from every
    /// member's report, and every block no member holds current is
    /// recovered from the redo logs.
    pub fn set_members(&mut self, now: Instant, incarnation: u64, members: &[NodeId]) {
        self.apply_members(now, incarnation, members, Vec::new());
    }

    /// [`Fusion::set_members`] with each member's incarnation: a member
    /// back with a new one lost its cache, and counts as departed and
    /// joined in one reconfiguration.
    pub fn set_view(&mut self, now: Instant, incarnation: u64, members: &[(NodeId, u32)]) {
        let replaced: Vec<NodeId> = members
            .iter()
            .filter(|(n, i)| self.incs.get(n).is_some_and(|old| old != i))
            .map(|(n, _)| *n)
            .collect();
        self.incs = members.iter().copied().collect();
        let ids: Vec<NodeId> = members.iter().map(|(n, _)| *n).collect();
        self.apply_members(now, incarnation, &ids, replaced);
    }

    fn apply_members(
        &mut self,
        now: Instant,
        incarnation: u64,
        members: &[NodeId],
        replaced: Vec<NodeId>,
    ) {
        if self.fenced {
            return;
        }
        self.incarnation = incarnation;
        let first = !self.opened;
        if first {
            self.ckpt_start(now);
        }
        let can_join = self.can_join();
        let mastered = if can_join {
            self.mastered_chunks()
        } else {
            Default::default()
        };
        self.opened = true;
        let (mut gone, mut joined) = self.slots.set_members(members);
        let pure_join = gone.is_empty() && replaced.is_empty() && !joined.is_empty();
        gone.extend(replaced.iter().copied());
        joined.extend(replaced);
        self.known.extend(members.iter().copied());
        // A node's next life numbers its requests from 1 again: what this
        // holder shipped to its last life must not answer them.
        self.last_ship
            .retain(|_, ls| !gone.contains(&ls.to) && !joined.contains(&ls.to));
        let open_recovery = first && self.cfg.open_recovery;
        if can_join && pure_join {
            self.join_start(now, incarnation, joined, mastered);
        } else if open_recovery && self.slots.members().iter().any(|&m| m != self.me) {
            self.join_as_new(now, incarnation);
        } else if !gone.is_empty() || !joined.is_empty() || open_recovery {
            self.reconfigure(now, incarnation, (gone, joined));
        } else if first {
            self.epoch = super::wire_epoch(incarnation, false);
            self.join.fresh = Some(self.epoch);
        }
        self.drain_local(now);
    }

    /// The next alert-log line (reconfiguration and recovery phases, in
    /// Oracle's words), for the host to log.
    pub fn poll_alert(&mut self) -> Option<String> {
        self.alerts.pop_front()
    }

    /// Stops all block traffic and I/O at once (this node is being
    /// evicted): nothing more is sent or asked of the disk, every
    /// operation fails with [`GcError::Fenced`].
    pub fn fence(&mut self, _now: Instant) {
        self.fenced = true;
        self.recon = None;
        self.early.clear();
        self.out.clear();
        self.io_out.clear();
        self.local.clear();
        self.wants.clear();
        self.retries.clear();
        self.pi_retries.clear();
        self.drm = super::remaster::Drm::default();
        self.join_reset();
        let ops: Vec<u64> = self.ops.keys().chain(self.scans.keys()).copied().collect();
        for op in ops {
            if self.ops.get(&op).is_some_and(|o| o.held.is_some()) {
                continue;
            }
            self.ready.push_back(Completion::Failed {
                op,
                error: GcError::Fenced,
            });
        }
        self.ops.retain(|_, o| o.held.is_some());
        self.scans.clear();
        self.waiting.clear();
        // Writes waiting, or in flight (their completions are ignored now).
        let writes = std::mem::take(&mut self.write_after)
            .into_values()
            .chain(std::mem::take(&mut self.write_ops).into_values());
        for op in writes.flatten() {
            self.ready.push_back(Completion::Failed {
                op,
                error: GcError::Fenced,
            });
        }
    }
}

impl Protocol for Fusion {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        if self.fenced {
            return;
        }
        let HostEvent::Transport {
            event:
                Event::Delivered {
                    peer,
                    channel,
                    data,
                    ..
                },
            ..
        } = event
        else {
            // Acks, losses and refusals: the request timers cover them.
            return;
        };
        if !self.slots.is_member(peer) {
            return;
        }
        match channel {
            Channel::Block => self.on_image(now, peer, data.freeze()),
            _ => match Msg::decode(&data) {
                Ok((epoch, m)) if self.join.accepts(epoch, self.epoch) => {
                    self.dispatch(now, peer, m)
                }
                // A member reconfigures in the incarnation this node joined.
                Ok((epoch, m)) if self.join_escalates(now, epoch) => self.dispatch(now, peer, m),
                // A peer reconfigured first: kept until this node does.
                Ok((epoch, m)) if epoch > self.epoch && self.early.len() < super::EARLY_KEPT => {
                    self.early.push_back((epoch, peer, m))
                }
                Ok(_) => self.stats.gc_stale_epoch_messages += 1,
                Err(_) => self.stats.gc_bad_messages += 1,
            },
        }
        self.drain_local(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.fenced {
            return;
        }
        self.timers(now);
        self.drain_local(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.fenced {
            return None;
        }
        let w = self.wants.values().filter_map(|w| w.deadline()).min();
        // Only the conversions running: the directory keeps every block
        // this node ever mastered.
        let m = self
            .busy
            .iter()
            .filter_map(|k| self.dir.get(k).and_then(|r| r.busy.as_ref()))
            .map(|c| c.deadline)
            .min();
        let r = self.retries.values().map(|r| r.deadline).min();
        let d = self.pi_retries.values().map(|r| r.deadline).min();
        let j = self.join.deadline();
        let c = self.ckpt.deadline();
        [w, m, r, d, self.recon_deadline(), self.drm.deadline(), j, c]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output> {
        if self.fenced {
            self.out.clear();
            return None;
        }
        let (peer, channel, data, tag) = self.out.pop_front()?;
        Some(Output::Send {
            peer,
            channel,
            data,
            tag,
            deadline: None,
        })
    }
}
