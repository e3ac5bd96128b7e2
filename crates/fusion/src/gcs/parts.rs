//! Messages in parts, kept until acknowledged: a reconfiguration's
//! reports and a join's JoinDones both cut what they send in parts, resend
//! them until the receiver acknowledges them all, and on the receiving
//! side count the parts in per sender.

use crate::msg::Msg;
use icx_core::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// Messages kept until their peer acknowledges them all, by peer.
pub(crate) type Unacked = BTreeMap<NodeId, Vec<Msg>>;

/// Every message of `u` with its peer, to send (again).
pub(crate) fn all_unacked(u: &Unacked) -> Vec<(NodeId, Msg)> {
    u.iter()
        .flat_map(|(&m, v)| v.iter().map(move |x| (m, x.clone())))
        .collect()
}

/// `from` acknowledged all `parts` of what it was sent: forgotten (an ack
/// of another count is of an older round, and ignored).
pub(crate) fn acked(u: &mut Unacked, from: NodeId, parts: u16) {
    if u.get(&from).is_some_and(|v| v.len() == usize::from(parts)) {
        u.remove(&from);
    }
}

/// `items` cut in parts of at most `max` (one, empty, when there are
/// none), each made a message by `msg(part, parts, items)`.
pub(crate) fn in_parts<T: Copy>(
    items: &[T],
    max: usize,
    msg: impl Fn(u16, u16, Vec<T>) -> Msg,
) -> Vec<Msg> {
    let parts = items.len().div_ceil(max).max(1);
    (0..parts)
        .map(|i| {
            let part = items.iter().skip(i * max).take(max).copied().collect();
            msg(i as u16, parts as u16, part)
        })
        .collect()
}

/// The parts received, per sender: its part count and the parts in.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartsIn(BTreeMap<NodeId, (u16, BTreeSet<u16>)>);

impl PartsIn {
    /// Part `part` of `parts` from `from`: `None` if it contradicts what
    /// came before (another count, a part past it), else whether it is new.
    pub(crate) fn add(&mut self, from: NodeId, part: u16, parts: u16) -> Option<bool> {
        let g = self.0.entry(from).or_insert((parts, BTreeSet::new()));
        if g.0 != parts || part >= parts {
            return None;
        }
        Some(g.1.insert(part))
    }

    /// Every part from `from` is in.
    pub(crate) fn complete(&self, from: NodeId) -> bool {
        self.0
            .get(&from)
            .is_some_and(|(n, got)| got.len() == usize::from(*n))
    }
}
