//! When cache fusion may open on this node: the nodes agree that they all
//! start the global cache service together, in one view holding every
//! configured node, and that a node coming back later does not.
//!
//! Why: the first opening replays every node's redo log (changes
//! acknowledged before a cluster-wide crash that are not yet in the
//! datafiles), which needs every node's log settled: no node appending to
//! its log before the others have opened. A node that comes back while
//! the others serve (kill -9 and start, a rebootless restart after a
//! fence) joins instead: the others reconfigure with it (the directory is
//! rebuilt from what every member holds, `icx_fusion::gcs` recon), so it
//! opens at once.
//!
//! The exchange, sans-IO, on [`Channel::Control`](icx_core::Channel):
//! every node tells every member of its current view, for that view, the
//! cluster incarnation its service opened in (0: not open). A node opens
//! in view V once the view holds every configured node and it has heard,
//! for V, every other member: all at 0 or V (a peer that opened in V
//! already saw the same). A peer open since an earlier view means the
//! service runs: this node joins it in V. Statuses are resent every
//! [`RESEND`] until every member of the view was heard for it, and a
//! status is answered with ours when the sender had not heard us yet.
//!
//! ```text
//!  0     2     3     4           12          20          24
//!  +-----+-----+-----+-----------+-----------+-----------+
//!  | "FO"| ver | hrd | view inc  | opened in | crc32c    |
//!  +-----+-----+-----+-----------+-----------+-----------+
//! ```
//! `hrd` is 1 when the sender has heard the receiver for this view (so no
//! answer is needed). Little-endian; the CRC covers the bytes before it.

use icx_core::{Duration, Instant, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// The first bytes of a gate message (cache fusion's are `"GC"`).
pub const MAGIC: [u8; 2] = *b"FO";
const VERSION: u8 = 1;
pub const LEN: usize = 24;
/// How often statuses go out until every member of the view was heard.
pub const RESEND: Duration = Duration::from_millis(200);

/// One node's status for one view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub view: u64,
    /// The cluster incarnation the sender's service opened in; 0: closed.
    pub opened: u64,
    pub heard_you: bool,
}

impl Status {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = u8::from(self.heard_you);
        b[4..12].copy_from_slice(&self.view.to_le_bytes());
        b[12..20].copy_from_slice(&self.opened.to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` for anything but an intact status of this version.
    pub fn decode(b: &[u8]) -> Option<Status> {
        if b.len() != LEN || b[..2] != MAGIC || b[2] != VERSION || b[3] > 1 {
            return None;
        }
        let crc = u32::from_le_bytes(b[20..24].try_into().ok()?);
        if crc != crc32c::crc32c(&b[..20]) {
            return None;
        }
        Some(Status {
            view: u64::from_le_bytes(b[4..12].try_into().ok()?),
            opened: u64::from_le_bytes(b[12..20].try_into().ok()?),
            heard_you: b[3] == 1,
        })
    }
}

/// Where this node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateState {
    /// Not yet agreed: why, for the `TRYAGAIN` reply.
    Closed { why: String },
    /// Open since cluster incarnation `view`, with these members (and
    /// their incarnations: a member that restarts is a new node).
    /// `joined`: the service ran already (since that incarnation); this
    /// node joined it.
    Open {
        view: u64,
        members: Vec<(NodeId, u32)>,
        joined: Option<u64>,
    },
}

#[derive(Debug)]
pub struct Gate {
    me: NodeId,
    configured: Vec<NodeId>,
    state: GateState,
    /// The view being agreed on: incarnation and members.
    view: Option<(u64, Vec<(NodeId, u32)>)>,
    /// What each peer said for the current view.
    heard: BTreeMap<NodeId, Status>,
    next_send: Option<Instant>,
    out: VecDeque<(NodeId, [u8; LEN])>,
    pub malformed: u64,
    pub sent: u64,
    pub received: u64,
}

impl Gate {
    pub fn new(me: NodeId, configured: Vec<NodeId>) -> Gate {
        Gate {
            me,
            configured,
            state: GateState::Closed {
                why: "not a member of a cluster view yet".into(),
            },
            view: None,
            heard: BTreeMap::new(),
            next_send: None,
            out: VecDeque::new(),
            malformed: 0,
            sent: 0,
            received: 0,
        }
    }

    pub fn state(&self) -> &GateState {
        &self.state
    }

    fn opened(&self) -> u64 {
        match &self.state {
            GateState::Open { view, .. } => *view,
            _ => 0,
        }
    }

    /// The view this node serves in changed (or was first committed).
    pub fn on_view(&mut self, now: Instant, incarnation: u64, members: &[(NodeId, u32)]) {
        if self.view.as_ref().is_some_and(|(i, _)| *i == incarnation) {
            return;
        }
        self.view = Some((incarnation, members.to_vec()));
        self.heard.clear();
        self.next_send = Some(now);
        self.decide();
    }

    /// A status from `from` (a member of the transport's peers).
    pub fn on_message(&mut self, from: NodeId, b: &[u8]) {
        let Some(s) = Status::decode(b) else {
            self.malformed += 1;
            return;
        };
        self.received += 1;
        let Some((inc, members)) = &self.view else {
            return;
        };
        if s.view != *inc || !members.iter().any(|(n, _)| *n == from) {
            return;
        }
        let first = self.heard.insert(from, s).is_none();
        let all_heard = members
            .iter()
            .all(|(n, _)| *n == self.me || self.heard.contains_key(n));
        if first && !s.heard_you {
            self.send(from);
        }
        if all_heard {
            self.next_send = None;
        }
        self.decide();
    }

    fn send(&mut self, to: NodeId) {
        let Some((inc, _)) = &self.view else {
            return;
        };
        let s = Status {
            view: *inc,
            opened: self.opened(),
            heard_you: self.heard.contains_key(&to),
        };
        self.out.push_back((to, s.encode()));
        self.sent += 1;
    }

    fn decide(&mut self) {
        let Some((inc, members)) = self.view.clone() else {
            return;
        };
        if matches!(self.state, GateState::Open { .. }) {
            return;
        }
        if let Some(since) = self
            .heard
            .values()
            .map(|s| s.opened)
            .find(|&o| o != 0 && o != inc)
        {
            self.state = GateState::Open {
                view: inc,
                members,
                joined: Some(since),
            };
            return;
        }
        let missing: Vec<u16> = self
            .configured
            .iter()
            .filter(|n| !members.iter().any(|(m, _)| m == *n))
            .map(|n| n.0)
            .collect();
        if !missing.is_empty() {
            self.state = GateState::Closed {
                why: format!(
                    "cache fusion opens when every configured node is a member; waiting for node(s) {}",
                    join(&missing)
                ),
            };
            return;
        }
        let unheard: Vec<u16> = members
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != self.me && !self.heard.contains_key(n))
            .map(|n| n.0)
            .collect();
        if !unheard.is_empty() {
            self.state = GateState::Closed {
                why: format!(
                    "cache fusion is opening in cluster incarnation {inc}: waiting to hear node(s) {}",
                    join(&unheard)
                ),
            };
            return;
        }
        self.state = GateState::Open {
            view: inc,
            members,
            joined: None,
        };
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_send
    }

    /// Resends to the members not heard for this view.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_send.is_none_or(|t| t > now) {
            return;
        }
        let Some((_, members)) = self.view.clone() else {
            self.next_send = None;
            return;
        };
        let unheard: Vec<NodeId> = members
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != self.me && !self.heard.contains_key(n))
            .collect();
        for n in &unheard {
            self.send(*n);
        }
        self.next_send = (!unheard.is_empty()).then(|| now + RESEND);
    }

    pub fn poll_output(&mut self) -> Option<(NodeId, [u8; LEN])> {
        self.out.pop_front()
    }

    /// A rebootless restart: this node is a new member; it must agree
    /// anew (and, the others being open, joins).
    pub fn reset(&mut self) {
        *self = Gate::new(self.me, std::mem::take(&mut self.configured));
    }
}

fn join(v: &[u16]) -> String {
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn ids(n: u16) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn view(n: &[u16]) -> Vec<(NodeId, u32)> {
        n.iter().map(|&i| (NodeId(i), 7)).collect()
    }

    /// Delivers every queued status among `gates` until none is left.
    fn exchange(gates: &mut [Gate], now: Instant) {
        for _ in 0..100 {
            let mut any = false;
            for i in 0..gates.len() {
                gates[i].handle_timeout(now);
                while let Some((to, b)) = gates[i].poll_output() {
                    any = true;
                    let from = gates[i].me;
                    if let Some(g) = gates.iter_mut().find(|g| g.me == to) {
                        g.on_message(from, &b);
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("statuses never settled");
    }

    #[test]
    fn status_round_trips_and_rejects_damage() {
        let s = Status {
            view: 9,
            opened: 4,
            heard_you: true,
        };
        let b = s.encode();
        assert_eq!(Status::decode(&b), Some(s));
        for i in 0..LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert_eq!(Status::decode(&c), None, "byte {i}");
        }
        assert_eq!(Status::decode(&b[..LEN - 1]), None);
        assert_eq!(Status::decode(b"GC"), None);
    }

    #[test]
    fn all_open_together_in_the_full_view() {
        let mut g: Vec<Gate> = (1..=3).map(|i| Gate::new(NodeId(i), ids(3))).collect();
        // Nodes 1 and 2 form first: no one opens without node 3.
        for x in &mut g[..2] {
            x.on_view(t(0), 2, &view(&[1, 2]));
        }
        exchange(&mut g, t(0));
        for x in &g[..2] {
            assert!(
                matches!(x.state(), GateState::Closed { why } if why.contains("node(s) 3")),
                "{:?}",
                x.state()
            );
        }
        for x in &mut g {
            x.on_view(t(10), 3, &view(&[1, 2, 3]));
        }
        exchange(&mut g, t(10));
        for x in &g {
            assert_eq!(
                x.state(),
                &GateState::Open {
                    view: 3,
                    members: view(&[1, 2, 3]),
                    joined: None,
                }
            );
        }
    }

    #[test]
    fn a_node_back_after_the_others_opened_joins() {
        let mut g: Vec<Gate> = (1..=3).map(|i| Gate::new(NodeId(i), ids(3))).collect();
        for x in &mut g {
            x.on_view(t(0), 3, &view(&[1, 2, 3]));
        }
        exchange(&mut g, t(0));
        // Node 3 restarts: a fresh gate, a new view with all three.
        g[2] = Gate::new(NodeId(3), ids(3));
        for x in &mut g {
            x.on_view(t(50), 5, &view(&[1, 2, 3]));
        }
        exchange(&mut g, t(50));
        assert!(
            matches!(
                g[2].state(),
                GateState::Open {
                    view: 5,
                    joined: Some(3),
                    ..
                }
            ),
            "{:?}",
            g[2].state()
        );
        assert!(matches!(g[0].state(), GateState::Open { view: 3, .. }));
    }

    #[test]
    fn a_lost_status_is_resent_until_heard() {
        let mut g: Vec<Gate> = (1..=2).map(|i| Gate::new(NodeId(i), ids(2))).collect();
        for x in &mut g {
            x.on_view(t(0), 1, &view(&[1, 2]));
        }
        // Everything of the first round is lost.
        for x in &mut g {
            x.handle_timeout(t(0));
            while x.poll_output().is_some() {}
        }
        assert!(g
            .iter()
            .all(|x| matches!(x.state(), GateState::Closed { .. })));
        assert_eq!(g[0].poll_timeout(), Some(t(0) + RESEND));
        exchange(&mut g, t(0) + RESEND);
        assert!(g
            .iter()
            .all(|x| matches!(x.state(), GateState::Open { .. })));
        assert_eq!(g[0].poll_timeout(), None, "all heard: no more resends");
    }

    #[test]
    fn a_single_node_cluster_opens_alone() {
        let mut g = Gate::new(NodeId(1), ids(1));
        g.on_view(t(0), 1, &view(&[1]));
        assert!(matches!(g.state(), GateState::Open { view: 1, .. }));
    }
}
