//! One node's buffer cache: per block the current image and its mode, the
//! older versions consistent reads are built from, and past images.
//!
//! Every version is an immutable [`SharedBuf`]: a change makes a new image
//! (copy-on-write), so the image a holder shipped, keeps as a past image or
//! hands to a consistent read is never written again, and shipping it
//! copies nothing. Versions in the chain and PIs are never written to disk.
//!
//! Replacement ([`Replacement`]) picks a victim among current images that
//! are neither pinned nor in a transfer: a clean one is dropped (after the
//! master agrees), a dirty one is written first by whoever may write it.

use crate::block::Scn;
use crate::io::{BlockNo, FileNo};
use crate::msg::Mode;
use icx_core::SharedBuf;
use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Replacement {
    #[default]
    Lru,
    /// Second chance: a used block gets one more sweep.
    Clock,
}

/// Who pins a current image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pin {
    #[default]
    None,
    /// Readers (count).
    Shared(u32),
    /// The one operation allowed to change it.
    Excl,
}

#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// Mode of `current` (N: no current image here).
    pub mode: Mode,
    pub current: Option<SharedBuf>,
    pub scn: Scn,
    /// Newer than disk: this node must write it (or ship it as X keeping
    /// a PI) before dropping it.
    pub dirty: bool,
    /// Past images exist somewhere: writes go through the master.
    pub global: bool,
    /// Older versions, oldest first (bounded), for consistent reads.
    pub chain: VecDeque<(Scn, SharedBuf)>,
    /// Past images by SCN, until a write at or above discards them.
    pub pis: BTreeMap<Scn, SharedBuf>,
    pub pin: Pin,
    /// A block write of this version is in flight.
    pub writing: Option<Scn>,
    /// A drop was asked of the master.
    pub dropping: bool,
    /// The newest version this node ever had of the block: versions never
    /// go backwards, so an older ship or read is stale.
    pub max_seen: Scn,
    /// CR copies shipped while in X since the last down-convert.
    pub cr_ships: u32,
    pub used: u64,
    pub referenced: bool,
}

impl Entry {
    /// The newest version at or below `scn` among current and chain.
    pub fn version_at(&self, scn: Scn) -> Option<(Scn, SharedBuf)> {
        if let Some(c) = &self.current {
            if self.scn <= scn {
                return Some((self.scn, c.clone()));
            }
        }
        self.chain
            .iter()
            .rev()
            .find(|(s, _)| *s <= scn)
            .map(|(s, b)| (*s, b.clone()))
    }

    /// Installs a new current version (from a change, ship or read),
    /// keeping the old one in the chain when `keep_old`.
    pub fn install(&mut self, scn: Scn, img: SharedBuf, keep_old: bool, chain_len: usize) {
        if let Some(old) = self.current.take() {
            if keep_old && chain_len > 0 && self.scn < scn {
                self.chain.push_back((self.scn, old));
                while self.chain.len() > chain_len {
                    self.chain.pop_front();
                }
            }
        }
        self.chain.retain(|(s, _)| *s < scn);
        self.current = Some(img);
        self.scn = scn;
        self.max_seen = self.max_seen.max(scn);
    }

    /// Drops the current image (mode N); the chain stays for CR.
    pub fn clear_current(&mut self) {
        self.current = None;
        self.mode = Mode::N;
        self.dirty = false;
        self.global = false;
        self.cr_ships = 0;
        self.dropping = false;
    }

    pub fn newest(&self) -> Option<Scn> {
        let pi = self.pis.keys().next_back().copied();
        match (self.current.as_ref().map(|_| self.scn), pi) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Keeps `img` as this node's past image at `scn`, replacing older
    /// ones: the master knows one PI per node (its newest SCN), and a
    /// newer PI serves recovery as well as any older one, so a block that
    /// ping-pongs between nodes costs each of them one buffer, not one per
    /// transfer.
    pub fn keep_pi(&mut self, scn: Scn, img: SharedBuf) {
        self.pis.retain(|s, _| *s > scn);
        self.pis.insert(scn, img);
    }

    pub fn discard_pis(&mut self, upto: Scn) -> usize {
        let before = self.pis.len();
        self.pis.retain(|s, _| *s > upto);
        before - self.pis.len()
    }

    fn evictable(&self) -> bool {
        self.current.is_some() && self.pin == Pin::None && self.writing.is_none() && !self.dropping
    }
}

/// The cache of one node.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    pub entries: BTreeMap<(FileNo, BlockNo), Entry>,
    pub capacity: usize,
    pub policy: Replacement,
    tick: u64,
    hand: Option<(FileNo, BlockNo)>,
}

impl Cache {
    pub fn new(capacity: usize, policy: Replacement) -> Cache {
        Cache {
            capacity,
            policy,
            ..Cache::default()
        }
    }

    pub fn get(&self, k: (FileNo, BlockNo)) -> Option<&Entry> {
        self.entries.get(&k)
    }

    pub fn entry(&mut self, k: (FileNo, BlockNo)) -> &mut Entry {
        self.entries.entry(k).or_default()
    }

    /// Marks a use (for the replacement policy).
    pub fn touch(&mut self, k: (FileNo, BlockNo)) {
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.entries.get_mut(&k) {
            e.used = t;
            e.referenced = true;
        }
    }

    /// Current images cached.
    pub fn resident(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.current.is_some())
            .count()
    }

    /// Blocks to evict to get back under capacity, by policy, skipping
    /// those that cannot go now (pinned, writing, already dropping).
    pub fn victims(&mut self) -> Vec<(FileNo, BlockNo)> {
        // At most one current image per entry: no more entries than the
        // capacity is the common case (a cache as large as the data), and
        // needs no pass over them (this runs after every release).
        if self.entries.len() <= self.capacity {
            return Vec::new();
        }
        let over = self
            .entries
            .values()
            .filter(|e| e.current.is_some() && !e.dropping)
            .count()
            .saturating_sub(self.capacity);
        if over == 0 {
            return Vec::new();
        }
        match self.policy {
            Replacement::Lru => {
                let mut c: Vec<(u64, (FileNo, BlockNo))> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.evictable())
                    .map(|(k, e)| (e.used, *k))
                    .collect();
                c.sort_unstable();
                c.into_iter().take(over).map(|(_, k)| k).collect()
            }
            Replacement::Clock => self.sweep(over),
        }
    }

    /// The clock hand: a referenced block loses its bit and is passed over
    /// once; two full turns at most.
    fn sweep(&mut self, want: usize) -> Vec<(FileNo, BlockNo)> {
        let keys: Vec<(FileNo, BlockNo)> = self.entries.keys().copied().collect();
        let start = self
            .hand
            .and_then(|h| keys.iter().position(|k| *k > h))
            .unwrap_or(0);
        let mut out = Vec::new();
        for i in 0..keys.len() * 2 {
            if out.len() == want {
                break;
            }
            let k = keys[(start + i) % keys.len()];
            let Some(e) = self.entries.get_mut(&k) else {
                continue;
            };
            if !e.evictable() || out.contains(&k) {
                continue;
            }
            if e.referenced {
                e.referenced = false;
            } else {
                out.push(k);
                self.hand = Some(k);
            }
        }
        out
    }
}
