//! Voting files: the disk heartbeat (record writes, whole-file reads),
//! formatting, refusal, I/O limits, and self-eviction without a majority.

use super::{FenceReason, Happened, Membership, THRESHOLDS};
use crate::alert;
use crate::disk::{DiskCompletion, DiskError, DiskOp, DiskRequest};
use crate::wire::{FileHeader, HeaderCheck, State, Status, RECORD_MAGIC};
use icx_core::{Instant, NodeId};

impl Membership {
    pub(super) fn disk_tick(&mut self, now: Instant) {
        if self.cfg.network_only() {
            self.next_disk = Instant::FAR_FUTURE;
            return;
        }
        self.counter += 1;
        for f in 0..self.files.len() {
            if self.files[f].pending.is_some() {
                continue;
            }
            match self.files[f].header {
                Some(h) if self.files[f].refused.is_none() => self.write_record(now, f, h),
                _ => self.issue(now, f, DiskOp::Read),
            }
        }
    }

    pub(super) fn write_record(&mut self, now: Instant, f: usize, h: FileHeader) {
        let mut st = self.status(now, false);
        st.beat = 0;
        let mut data = Vec::with_capacity(h.slot_size as usize);
        st.encode(RECORD_MAGIC, &mut data);
        if let Some(k) = self.cfg.record_keys.first() {
            let mac = k.mac(&data);
            data.extend_from_slice(&mac);
        }
        data.resize(h.slot_size as usize, 0);
        self.issue(
            now,
            f,
            DiskOp::Write {
                offset: h.slot_offset(self.cfg.me),
                data,
            },
        );
    }

    pub(super) fn issue(&mut self, now: Instant, file: usize, op: DiskOp) {
        let id = self.next_disk_id;
        self.next_disk_id += 1;
        let read = matches!(op, DiskOp::Read);
        if read {
            self.stats.disk_reads += 1;
        } else {
            self.stats.disk_writes += 1;
        }
        self.files[file].pending = Some((id, now, read));
        self.disk_q.push_back(DiskRequest { id, file, op });
    }

    pub(super) fn on_disk(&mut self, now: Instant, c: DiskCompletion) {
        let Some(f) = self.files.get(c.file) else {
            self.stats.disk_late += 1;
            return;
        };
        let Some((id, _, read)) = f.pending else {
            self.stats.disk_late += 1;
            return;
        };
        if id != c.id {
            self.stats.disk_late += 1;
            return;
        }
        self.files[c.file].pending = None;
        let file = c.file;
        match c.result {
            Ok(bytes) if read => self.on_read(now, file, &bytes),
            Ok(_) => {
                if self.files[file].formatting {
                    self.files[file].formatting = false;
                    self.log(now, Happened::FileFormatted { file });
                    self.issue(now, file, DiskOp::Read);
                } else {
                    self.io_ok(now, file);
                    self.issue(now, file, DiskOp::Read);
                }
            }
            Err(DiskError::NotFound) if read => self.on_read(now, file, &[]),
            Err(_) => self.stats.disk_errors += 1,
        }
    }

    pub(super) fn io_ok(&mut self, now: Instant, file: usize) {
        let f = &mut self.files[file];
        f.last_ok = Some(now);
        f.since = now;
        f.warned = 0;
        if f.header.is_some() && f.refused.is_none() && !f.online {
            f.online = true;
            let again = std::mem::replace(&mut f.ever_online, true);
            if again {
                let name = self.cfg.voting_files[file].clone();
                self.alerts.push_back(alert::file_online(&name));
            }
            self.log(now, Happened::FileOnline { file });
        }
    }

    pub(super) fn on_read(&mut self, now: Instant, file: usize, bytes: &[u8]) {
        let name = self.cfg.voting_files[file].clone();
        let want = FileHeader::for_cluster(self.cfg.cluster, self.cfg.nodes);
        match FileHeader::check(bytes) {
            HeaderCheck::Blank => {
                if self.files[file].header.is_some() {
                    // It was formatted and is blank now: wiped under us.
                    self.refuse(
                        now,
                        file,
                        format!("{name} was formatted and now reads blank"),
                    );
                    return;
                }
                // First node there formats it, sized for the configured nodes.
                self.files[file].formatting = true;
                self.issue(
                    now,
                    file,
                    DiskOp::Write {
                        offset: 0,
                        data: want.format(),
                    },
                );
            }
            HeaderCheck::Garbage(e) => {
                self.refuse(now, file, format!("{name} is not a voting file ({e})"));
            }
            HeaderCheck::Formatted(h) => {
                if h != want {
                    self.refuse(
                        now,
                        file,
                        format!(
                            "{name} is formatted for cluster {} with {} nodes (slot {} B); this node is in cluster {} with {} nodes",
                            h.cluster, h.nodes, h.slot_size, self.cfg.cluster, self.cfg.nodes
                        ),
                    );
                    return;
                }
                if (bytes.len() as u64) < h.file_len() {
                    self.refuse(
                        now,
                        file,
                        format!(
                            "{name} is truncated: {} of {} bytes",
                            bytes.len(),
                            h.file_len()
                        ),
                    );
                    return;
                }
                self.files[file].refused = None;
                self.files[file].header = Some(h);
                self.io_ok(now, file);
                self.read_slots(now, h, bytes);
            }
        }
    }

    pub(super) fn refuse(&mut self, now: Instant, file: usize, why: String) {
        let f = &mut self.files[file];
        if f.refused.as_deref() != Some(why.as_str()) {
            self.alerts
                .push_back(alert::file_refused(&self.cfg.voting_files[file], &why));
            self.log(
                now,
                Happened::FileRefused {
                    file,
                    why: why.clone(),
                },
            );
        }
        let f = &mut self.files[file];
        f.refused = Some(why);
        if f.online {
            f.online = false;
        }
    }

    /// A record we cannot authenticate: if it changed since the last one,
    /// someone without our key writes that slot, and may be running a
    /// cluster we cannot see: formation waits (see `formation`), and the
    /// alert says why, once per such writer.
    fn unverified_record(&mut self, now: Instant, n: NodeId, st: &Status) {
        let p = &mut self.peers[usize::from(n.0)];
        let seen = (st.incarnation, st.counter);
        let changed = p.unverified.is_some_and(|o| o != seen);
        p.unverified = Some(seen);
        if !changed {
            return;
        }
        let first = p
            .unverified_changed
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.misscount);
        p.unverified_changed = Some(now);
        if first {
            let name = self.name(n).to_string();
            self.alerts.push_back(alert::records_unverified(&name, n.0));
        }
    }

    /// With a cluster key, whether the MAC after the record verifies under
    /// one of the keys held; without one, always.
    fn record_mac_ok(&self, slot: &[u8]) -> bool {
        if self.cfg.record_keys.is_empty() {
            return true;
        }
        let Some(len) = Status::claimed_len(slot) else {
            return false;
        };
        let (Some(record), Some(mac)) = (
            slot.get(..len),
            slot.get(len..len + icx_wire::auth::RECORD_MAC_LEN),
        ) else {
            return false;
        };
        self.cfg.record_keys.iter().any(|k| k.verify(record, mac))
    }

    pub(super) fn read_slots(&mut self, now: Instant, h: FileHeader, bytes: &[u8]) {
        let me = self.cfg.me;
        for i in 1..=self.cfg.nodes {
            let n = NodeId(i);
            let off = h.slot_offset(n) as usize;
            let Some(slot) = bytes.get(off..off + h.slot_size as usize) else {
                continue;
            };
            if slot.iter().all(|&b| b == 0) {
                continue;
            }
            let st = match Status::parse(RECORD_MAGIC, slot) {
                Ok(s)
                    if s.node == n
                        && s.cluster == self.cfg.cluster
                        && s.nodes == self.cfg.nodes =>
                {
                    s
                }
                _ => {
                    self.stats.records_malformed += 1;
                    continue;
                }
            };
            if !self.record_mac_ok(slot) {
                self.stats.records_rejected_auth += 1;
                self.unverified_record(now, n, &st);
                continue;
            }
            if n == me {
                // An earlier life of this node wrote here: take a later one.
                if self.state == State::Joining
                    && st.incarnation >= self.incarnation
                    && self.counter_is_not_mine(&st)
                {
                    self.incarnation = st.incarnation + 1;
                    self.log(
                        now,
                        Happened::Started {
                            incarnation: self.incarnation,
                        },
                    );
                }
                continue;
            }
            let p = &mut self.peers[usize::from(i)];
            let newer = p
                .disk
                .as_ref()
                .is_none_or(|o| (st.incarnation, st.counter) > (o.incarnation, o.counter));
            if !newer {
                continue;
            }
            if st.incarnation < p.incarnation {
                continue;
            }
            p.disk = Some(st.clone());
            p.disk_changed = Some(now);
            self.on_status(now, &st);
        }
    }

    /// A record in this node's slot with this incarnation was written by an
    /// earlier life unless this life wrote that counter.
    pub(super) fn counter_is_not_mine(&self, st: &Status) -> bool {
        st.incarnation > self.incarnation || st.counter > self.counter
    }

    /// Voting-file warnings, offline files, and self-eviction without a
    /// majority.
    pub(super) fn watch_files(&mut self, now: Instant) {
        let limit = self.disk_limit();
        for file in 0..self.files.len() {
            let f = &self.files[file];
            if !(f.online || f.pending.is_some()) {
                continue;
            }
            let start = f.last_ok.unwrap_or(f.since).max(f.since);
            let silent = now.saturating_duration_since(start);
            let name = self.cfg.voting_files[file].clone();
            while self.files[file].warned < 3 {
                let pct = THRESHOLDS[usize::from(self.files[file].warned)];
                if silent < limit * u32::from(pct) / 100 {
                    break;
                }
                self.files[file].warned += 1;
                let remaining = (start + limit).saturating_duration_since(now);
                self.alerts
                    .push_back(alert::file_slow(pct, &name, remaining.as_millis() as u64));
            }
            if silent >= limit {
                let f = &mut self.files[file];
                // Offline for this node; the stuck request is given up and
                // the file retried from the next disk heartbeat.
                f.pending = None;
                f.since = now;
                f.warned = 0;
                if f.online {
                    f.online = false;
                    self.alerts.push_back(alert::file_offline(&name));
                    self.log(now, Happened::FileOffline { file });
                }
            }
        }
        if self.state == State::Active && !self.cfg.network_only() {
            let have = self.files_online();
            let need = self.cfg.file_majority();
            if have < need {
                self.alerts.push_back(alert::too_few_files(have, need));
                self.fence(
                    now,
                    FenceReason::VotingFiles {
                        available: have,
                        required: need,
                    },
                );
            }
        }
    }
}
