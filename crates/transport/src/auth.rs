//! The endpoint's side of frame authentication: session keys, sealing
//! outgoing frames, opening incoming ones, and the replay windows.
//!
//! A frame that fails here changes nothing: it is counted and dropped
//! before any session sees it (no session reset, no incarnation change, no
//! ack or credit, no reply).

use crate::{Config, Transmit};
use icx_core::{BufferPool, HeaderBuf, Incarnation, NodeId, Payload, HEADER_INLINE_CAP};
use icx_wire::auth::{self, AuthError, Cipher, Direction, FrameKey, KeyId, Keyring, TAG_LEN};
use std::collections::HashMap;

/// Session keys of frames received, derived on first use: by source node,
/// its incarnation, key id and cipher.
type RxKey = (NodeId, Incarnation, KeyId, Cipher);

/// Derived receive keys kept before the cache is cleared (each derivation
/// costs an HKDF and a key schedule, a few microseconds; a forger spraying
/// incarnations only makes us derive again).
const RX_CACHE: usize = 4096;

pub(crate) struct AuthState {
    ring: Keyring,
    tx: KeyCache<NodeId>,
    rx: KeyCache<RxKey>,
    /// Decryption happens here: a received datagram is borrowed, not owned.
    pub(crate) scratch: Vec<u8>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("send", &self.ring.send_id())
            .field("cipher", &self.ring.cipher)
            .field("encrypt", &self.ring.encrypt)
            .finish_non_exhaustive()
    }
}

/// Why a received datagram was refused here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No tag or auth field, or a key id we do not hold.
    Unauthenticated,
    /// The tag does not match.
    BadTag,
}

impl AuthState {
    pub(crate) fn new(ring: Keyring) -> AuthState {
        AuthState {
            ring,
            tx: KeyCache::default(),
            rx: KeyCache::default(),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn ring(&self) -> &Keyring {
        &self.ring
    }

    /// A new keyring (a rollover step): keys derived from the old one go.
    pub(crate) fn set_ring(&mut self, ring: Keyring) {
        self.ring = ring;
        self.tx.clear();
        self.rx.clear();
    }

    /// Checks an authenticated datagram (whose header the caller checked).
    /// Returns the length of the frame proper; an encrypted one has been
    /// decrypted into `self.scratch` (the caller reads it from there).
    pub(crate) fn open(
        &mut self,
        cfg: &Config,
        datagram: &[u8],
        header_len: usize,
    ) -> Result<(usize, bool), Refusal> {
        let encrypted = auth::is_encrypted(datagram);
        if datagram.len() < header_len + TAG_LEN {
            return Err(Refusal::Unauthenticated);
        }
        let key = rx_key(&mut self.rx, &self.ring, cfg, datagram)?;
        let r = if encrypted {
            self.scratch.clear();
            self.scratch.extend_from_slice(datagram);
            key.open_in_place(&mut self.scratch, header_len)
        } else {
            key.open(datagram, header_len)
        };
        r.map_err(|e| match e {
            AuthError::BadTag => Refusal::BadTag,
            AuthError::NotAuthenticated => Refusal::Unauthenticated,
        })?;
        Ok((datagram.len() - TAG_LEN, encrypted))
    }

    /// Seals a frame: numbers a control frame from `ctl_seq` (data frames
    /// are numbered already), then puts header, payload and tag together,
    /// inline when small, else in a pool buffer. `None` when the pool has
    /// no buffer (the frame is dropped as if lost on the wire).
    pub(crate) fn seal(
        &mut self,
        cfg: &Config,
        pool: &BufferPool,
        ctl_seq: &mut u64,
        mut t: Transmit,
    ) -> Option<Transmit> {
        let encrypt = self.ring.encrypt;
        let (hl, plen) = (t.header.len(), t.payload.len());
        let total = hl + plen + TAG_LEN;
        if auth::number_control_frame(t.header.as_mut_slice(), *ctl_seq) {
            *ctl_seq += 1;
        }
        let key = tx_key(&mut self.tx, &self.ring, cfg, t.peer);
        if total <= HEADER_INLINE_CAP {
            let mut h = HeaderBuf::with_len(total)?;
            let b = h.as_mut_slice();
            b[..hl].copy_from_slice(t.header.as_slice());
            b[hl..hl + plen].copy_from_slice(t.payload.as_slice());
            key.seal(b, hl, encrypt).ok()?;
            t.header = h;
            t.payload = Payload::EMPTY;
            return Some(t);
        }
        let mut buf = pool.alloc(total)?;
        buf[..hl].copy_from_slice(t.header.as_slice());
        buf[hl..hl + plen].copy_from_slice(t.payload.as_slice());
        key.seal(&mut buf, hl, encrypt).ok()?;
        t.header.as_mut_slice().copy_from_slice(&buf[..hl]);
        t.payload = Payload::new(buf.freeze(), hl, plen + TAG_LEN)?;
        Some(t)
    }
}

/// Derived keys by what they were derived for. A stream of frames mostly
/// comes from, or goes to, one peer at a time, so the last key used is
/// checked before the map is hashed into (a SipHash per frame otherwise).
struct KeyCache<K> {
    index: HashMap<K, usize>,
    keys: Vec<FrameKey>,
    last: Option<(K, usize)>,
}

impl<K> Default for KeyCache<K> {
    fn default() -> Self {
        KeyCache {
            index: HashMap::new(),
            keys: Vec::new(),
            last: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> KeyCache<K> {
    fn get_or_derive(&mut self, k: K, derive: impl FnOnce() -> FrameKey) -> &FrameKey {
        let i = match self.last {
            Some((l, i)) if l == k => i,
            _ => {
                let i = *self.index.entry(k).or_insert_with(|| {
                    self.keys.push(derive());
                    self.keys.len() - 1
                });
                self.last = Some((k, i));
                i
            }
        };
        &self.keys[i]
    }

    fn contains(&self, k: &K) -> bool {
        self.index.contains_key(k)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.keys.clear();
        self.last = None;
    }
}

/// The key this node seals frames to `peer` with, derived on first use.
fn tx_key<'a>(
    tx: &'a mut KeyCache<NodeId>,
    ring: &Keyring,
    cfg: &Config,
    peer: NodeId,
) -> &'a FrameKey {
    tx.get_or_derive(peer, || {
        let id = ring.send_id();
        // The send id is always held (Keyring keeps it so).
        let master = ring
            .get(id)
            .unwrap_or_else(|| unreachable!("send key held"));
        let dir = direction(cfg, cfg.node, peer, cfg.incarnation);
        FrameKey::derive(master, id, ring.cipher, dir)
    })
}

/// The key a received datagram claims to be sealed with, derived on first
/// use (the cache is cleared when full).
fn rx_key<'a>(
    rx: &'a mut KeyCache<RxKey>,
    ring: &Keyring,
    cfg: &Config,
    datagram: &[u8],
) -> Result<&'a FrameKey, Refusal> {
    let (id, cipher) = auth::auth_field(datagram).ok_or(Refusal::Unauthenticated)?;
    let master = ring.get(id).ok_or(Refusal::Unauthenticated)?;
    let frame = icx_wire::Frame::new_unchecked(datagram);
    let k = (frame.src(), frame.src_incarnation(), id, cipher);
    if rx.len() >= RX_CACHE && !rx.contains(&k) {
        rx.clear();
    }
    Ok(rx.get_or_derive(k, || {
        FrameKey::derive(master, id, cipher, direction(cfg, k.0, cfg.node, k.1))
    }))
}

fn direction(cfg: &Config, src: NodeId, dst: NodeId, src_incarnation: Incarnation) -> Direction {
    Direction {
        cluster: cfg.cluster,
        src,
        dst,
        src_incarnation,
    }
}

/// Anti-replay over one sequence space of one peer incarnation: the
/// highest number seen and a bitmap of the [`REPLAY_WINDOW`] below it, as
/// IPsec and WireGuard keep. A frame further behind than that, or seen
/// already, is a replay (or a duplicate the network made, which the
/// original already covered).
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    top: u64,
    bits: [u64; WORDS],
}

const WORDS: usize = 64;
/// Frames a sequence number may trail the highest seen and still be
/// accepted: well beyond a block window of frames in flight (1 MiB at MTU
/// 1500 is about 720 frames), so reordering never looks like replay.
pub(crate) const REPLAY_WINDOW: u64 = (WORDS * 64) as u64;

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// A window that refuses everything at or below `floor` (numbers used
    /// by an earlier session with the same peer incarnation).
    pub(crate) fn from_floor(floor: u64) -> Self {
        ReplayWindow {
            top: floor,
            bits: [u64::MAX; WORDS],
        }
    }

    pub(crate) fn top(&self) -> u64 {
        self.top
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = (seq % REPLAY_WINDOW) as usize;
        (i / 64, 1 << (i % 64))
    }

    /// Accepts `seq` once: false for 0, for a number seen already, or for
    /// one more than the window behind the highest.
    pub(crate) fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            let ahead = seq - self.top;
            if ahead >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in self.top + 1..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            return true;
        }
        if self.top - seq >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Self::bit(seq);
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

/// What an endpoint remembers of a removed peer's session when frames are
/// authenticated, so that a session added again for the same node never
/// reuses a sequence number (a nonce) and never accepts a replay of the
/// earlier session's frames.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Numbering {
    pub(crate) next_seq: u64,
    pub(crate) next_ctl_seq: u64,
    pub(crate) peer_incarnation: Incarnation,
    pub(crate) rx_top: [u64; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_number_once_within_reach() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3), "reordered, not seen");
        assert!(!w.accept(3));
        assert!(w.accept(5 + REPLAY_WINDOW - 1));
        assert!(!w.accept(5), "seen, still in reach");
        assert!(w.accept(5 + REPLAY_WINDOW));
        assert!(!w.accept(4), "now out of reach");
        // A jump beyond the window forgets everything below.
        let top = 10 * REPLAY_WINDOW;
        assert!(w.accept(top));
        assert!(w.accept(top - 1));
        assert!(!w.accept(top - REPLAY_WINDOW));
        assert!(w.accept(top - REPLAY_WINDOW + 1));
    }

    #[test]
    fn replay_window_matches_a_set_model() {
        use std::collections::BTreeSet;
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut w = ReplayWindow::default();
        let mut seen = BTreeSet::new();
        let mut top = 0u64;
        for _ in 0..200_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let seq = (top + 8).saturating_sub(rng % (REPLAY_WINDOW + 64)).max(1);
            let want = seq + REPLAY_WINDOW > top && !seen.contains(&seq);
            assert_eq!(w.accept(seq), want, "seq {seq} top {top}");
            if want {
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }

    #[test]
    fn a_floor_refuses_what_came_before() {
        let mut w = ReplayWindow::from_floor(100);
        assert!(!w.accept(100));
        assert!(!w.accept(60));
        assert!(w.accept(101));
        assert!(w.accept(150));
        assert!(!w.accept(99));
    }
}
