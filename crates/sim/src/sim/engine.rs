//! The engine behind [`Sim`]: scheduling, links, receive queues, hand-over
//! and recording. The public face is in the parent module.

use super::*;

impl<N: Node> Sim<N> {
    pub(super) fn link_mut(&mut self, from: NodeId, to: NodeId, net: u8) -> &mut Link {
        let seed = self.seed;
        self.links
            .entry((from, to, net))
            .or_insert_with(|| Link::new(seed, from, to, net))
    }

    pub(super) fn push(&mut self, at: Instant, kind: EventKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.kinds[s as usize] = Some(kind);
                s
            }
            None => {
                self.kinds.push(Some(kind));
                (self.kinds.len() - 1) as u32
            }
        };
        self.events.push(Event { at, seq, slot });
    }

    pub(super) fn flush_dirty(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let ids: Vec<NodeId> = self.nodes.keys().collect();
        for id in ids {
            self.service(id);
        }
    }

    /// Pops and runs the next event due at or before `limit`. `None`: there is
    /// none; `Some(false)`: it was a spurious timer check.
    pub(super) fn run_next(&mut self, limit: Instant) -> Option<bool> {
        if self.events.peek()?.at > limit {
            return None;
        }
        let ev = self.events.pop()?;
        let kind = self.kinds[ev.slot as usize].take()?;
        self.free.push(ev.slot);
        if ev.at == self.last_event_at {
            self.events_at_instant += 1;
            assert!(
                self.events_at_instant <= MAX_EVENTS_PER_INSTANT,
                "simulation livelock: {MAX_EVENTS_PER_INSTANT} events at {:?} without time advancing (seed {})",
                ev.at,
                self.seed
            );
        } else {
            self.last_event_at = ev.at;
            self.events_at_instant = 0;
        }
        self.now = self.now.max(ev.at);
        let now = self.now;
        match kind {
            EventKind::Deliver {
                from,
                to,
                net,
                data,
                sent_at,
            } => {
                let cut = self.is_net_cut(from, to, net);
                let present = self.nodes.contains_key(&to);
                let stats = &mut self.link_mut(from, to, net).stats;
                if cut {
                    stats.partitioned += 1;
                    self.recycle(data);
                    return Some(true);
                }
                if !present {
                    stats.unroutable += 1;
                    self.recycle(data);
                    return Some(true);
                }
                stats.delivered += 1;
                let queue = self
                    .rx
                    .get(&to)
                    .is_some_and(|rx| rx.cfg.is_some() || rx.stats.queued > 0);
                if queue {
                    self.enqueue_rx(from, to, net, data, sent_at);
                    return Some(true);
                }
                self.hand_over(from, to, net, &data, sent_at, now);
                self.recycle(data);
                Some(true)
            }
            EventKind::Process {
                from,
                to,
                net,
                data,
                sent_at,
                arrived_at,
            } => {
                let present = self.nodes.contains_key(&to);
                if let Some(rx) = self.rx.get_mut(&to) {
                    rx.stats.queued = rx.stats.queued.saturating_sub(1);
                    if present {
                        rx.stats.handed += 1;
                    } else {
                        rx.stats.orphaned += 1;
                    }
                }
                if present {
                    self.hand_over(from, to, net, &data, sent_at, arrived_at);
                }
                self.recycle(data);
                Some(true)
            }
            EventKind::Timer { node } => {
                let Some(slot) = self.nodes.get_mut(&node) else {
                    return Some(false);
                };
                if slot.armed == Some(ev.at) {
                    slot.armed = None;
                }
                let due = matches!(slot.node.poll_timeout(), Some(t) if t <= now);
                if !due {
                    self.sync_timer(node);
                    return Some(false);
                }
                slot.node.handle_timeout(now);
                self.steps += 1;
                self.record_timeout(node);
                self.service(node);
                Some(true)
            }
        }
    }

    /// Keeps a delivered datagram's buffer for a later copy (a bounded
    /// number of them: what is in flight at once).
    pub(super) fn recycle(&mut self, mut data: Vec<u8>) {
        if self.spare.len() < 4096 {
            data.clear();
            self.spare.push(data);
        }
    }

    /// Gives a datagram to its node now, and lets the node respond.
    pub(super) fn hand_over(
        &mut self,
        from: NodeId,
        to: NodeId,
        net: u8,
        data: &[u8],
        sent_at: Instant,
        arrived_at: Instant,
    ) {
        let now = self.now;
        self.steps += 1;
        self.record_delivery(from, to, net, data, sent_at, arrived_at);
        if let Some(slot) = self.nodes.get_mut(&to) {
            slot.node.handle_datagram_on(now, from, net, data);
        }
        self.service(to);
    }

    /// Puts an arriving datagram in its node's receive queue, or drops it
    /// when the queue is full.
    pub(super) fn enqueue_rx(
        &mut self,
        from: NodeId,
        to: NodeId,
        net: u8,
        data: Vec<u8>,
        sent_at: Instant,
    ) {
        let now = self.now;
        let Some(rx) = self.rx.get_mut(&to) else {
            return;
        };
        rx.stats.arrived += 1;
        let (limit, service) = match &rx.cfg {
            Some(c) => (c.queue_limit, c.service_time(data.len())),
            None => (None, Duration::ZERO),
        };
        if limit.is_some_and(|l| rx.stats.queued >= l as u64) {
            rx.stats.dropped += 1;
            return;
        }
        rx.busy_until = rx.busy_until.max(now) + service;
        rx.stats.queued += 1;
        rx.stats.max_queue = rx.stats.max_queue.max(rx.stats.queued);
        let at = rx.busy_until;
        self.push(
            at,
            EventKind::Process {
                from,
                to,
                net,
                data,
                sent_at,
                arrived_at: now,
            },
        );
    }

    /// After any interaction with a node: send what it has, re-arm its timer.
    pub(super) fn service(&mut self, id: NodeId) {
        self.drain_transmit(id);
        self.sync_timer(id);
    }

    pub(super) fn drain_transmit(&mut self, id: NodeId) {
        let mut buf = std::mem::take(&mut self.tx_buf);
        for _ in 0..MAX_TRANSMITS_PER_DRAIN {
            buf.clear();
            let Some(slot) = self.nodes.get_mut(&id) else {
                break;
            };
            let Some((dst, net)) = slot.node.poll_transmit_on(self.now, &mut buf) else {
                self.tx_buf = buf;
                return;
            };
            self.transmit(id, dst, net, &buf);
        }
        self.tx_buf = buf;
        if self.nodes.contains_key(&id) {
            panic!(
                "{id:?} emitted {MAX_TRANSMITS_PER_DRAIN} datagrams in one poll_transmit drain at {:?} (seed {})",
                self.now, self.seed
            );
        }
    }

    pub(super) fn sync_timer(&mut self, id: NodeId) {
        let Some(slot) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(want) = slot.node.poll_timeout() else {
            return;
        };
        let at = want.max(self.now);
        if slot.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        slot.armed = Some(at);
        self.push(at, EventKind::Timer { node: id });
    }

    /// Puts one datagram through the link model.
    pub(super) fn transmit(&mut self, from: NodeId, to: NodeId, net: u8, data: &[u8]) {
        let now = self.now;
        let present = self.nodes.contains_key(&to);
        let cut = self.is_net_cut(from, to, net);
        let seed = self.seed;
        let link = self
            .links
            .entry((from, to, net))
            .or_insert_with(|| Link::new(seed, from, to, net));
        let cfg = link.cfg.as_ref().unwrap_or(&self.default_link);
        link.stats.sent += 1;
        if data.len() > cfg.mtu {
            link.stats.oversize += 1;
            let v = MtuViolation {
                from,
                to,
                len: data.len(),
                mtu: cfg.mtu,
                at: now,
            };
            tracing::error!(?from, ?to, len = v.len, mtu = v.mtu, at = ?now, "datagram exceeds link MTU; not delivered");
            self.violations.push(v);
            return;
        }
        if !present {
            link.stats.unroutable += 1;
            tracing::debug!(?from, ?to, "datagram to unknown node");
            return;
        }
        if cut {
            link.stats.partitioned += 1;
            return;
        }
        let ser = cfg.serialisation_time(data.len());
        let depart = if ser.is_zero() {
            now
        } else {
            let waiting = cfg.backlog_bytes(link.busy_until.saturating_duration_since(now));
            if cfg.queue_limit.is_some_and(|l| waiting > l as u64) {
                link.stats.overflow += 1;
                return;
            }
            link.stats.peak_queue_bytes =
                link.stats.peak_queue_bytes.max(waiting + data.len() as u64);
            link.busy_until = link.busy_until.max(now) + ser;
            link.busy_until
        };
        if roll(&mut link.rng, cfg.drop) {
            link.stats.dropped += 1;
            return;
        }
        let copies = if roll(&mut link.rng, cfg.duplicate) {
            link.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = depart + cfg.latency;
            let jitter = nanos(cfg.jitter);
            if jitter > 0 {
                at += Duration::from_nanos(link.rng.random_range(0..=jitter));
            }
            let reorder = nanos(cfg.reorder_delay);
            if reorder > 0 && roll(&mut link.rng, cfg.reorder) {
                at += Duration::from_nanos(link.rng.random_range(1..=reorder));
                link.stats.reordered += 1;
            }
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.extend_from_slice(data);
            if !copy.is_empty() && roll(&mut link.rng, cfg.corrupt) {
                let i = link.rng.random_range(0..copy.len());
                copy[i] ^= 1 << link.rng.random_range(0..8u32);
                link.stats.corrupted += 1;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let kind = EventKind::Deliver {
                from,
                to,
                net,
                data: copy,
                sent_at: now,
            };
            // As `push`, with the link still borrowed.
            let slot = match self.free.pop() {
                Some(s) => {
                    self.kinds[s as usize] = Some(kind);
                    s
                }
                None => {
                    self.kinds.push(Some(kind));
                    (self.kinds.len() - 1) as u32
                }
            };
            self.events.push(Event { at, seq, slot });
        }
    }

    pub(super) fn record_delivery(
        &mut self,
        from: NodeId,
        to: NodeId,
        net: u8,
        data: &[u8],
        sent_at: Instant,
        arrived_at: Instant,
    ) {
        let at = self.now;
        // Network 0 hashes as before there were networks.
        let mut h = if net == 0 {
            fnv(self.digest, &[0])
        } else {
            fnv(self.digest, &[2, net])
        };
        h = fnv(h, &at.as_nanos().to_le_bytes());
        h = fnv(h, &from.0.to_le_bytes());
        h = fnv(h, &to.0.to_le_bytes());
        h = fnv(h, &(data.len() as u64).to_le_bytes());
        self.digest = fnv(h, data);
        if let Some(t) = &mut self.trace {
            t.push(TraceEvent::Delivered {
                at,
                sent_at,
                from,
                to,
                data: data.to_vec(),
            });
        }
        if let Some(log) = &mut self.deliveries {
            let d = Delivery {
                from,
                to,
                sent_at,
                arrived_at,
                delivered_at: at,
                data,
            };
            if let Some(class) = (log.classify)(&d) {
                log.records.push(DeliveryRecord {
                    from,
                    to,
                    sent_at,
                    arrived_at,
                    delivered_at: at,
                    len: data.len(),
                    class,
                });
            }
        }
    }

    pub(super) fn record_timeout(&mut self, node: NodeId) {
        let at = self.now;
        let h = fnv(self.digest, &[1]);
        let h = fnv(h, &at.as_nanos().to_le_bytes());
        self.digest = fnv(h, &node.0.to_le_bytes());
        if let Some(t) = &mut self.trace {
            t.push(TraceEvent::Timeout { at, node });
        }
    }
}

/// `uniform(0,1) < p`, without drawing when the outcome is certain, so an
/// ideal link consumes no randomness.
fn roll(rng: &mut SeededRng, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.random::<f64>() < p
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The trace digest's step: 8 bytes at a time (multiply-rotate, as
/// FxHash), the tail byte by byte. Equal traces give equal digests; any
/// difference changes it (up to collisions).
pub(super) fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h
}
