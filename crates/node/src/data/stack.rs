//! The protocols of one node on one transport, as the one
//! [`Protocol`] the host drives: membership on
//! [`Channel::Heartbeat`], the open gate and cache fusion on
//! [`Channel::Control`] (told apart by their first bytes, `"FO"` and
//! `"GC"`), block images on [`Channel::Block`].
//!
//! Send tags carry their owner in the top two bits, so each protocol gets
//! back exactly the acks, losses and refusals of its own sends.
//! Membership's output goes first: a heartbeat never waits behind the
//! service's messages in this loop (nor, in the transport, behind blocks:
//! its channel has the urgent lane).

use super::gate::{self, Gate};
use icx_core::{Channel, Instant, NodeId};
use icx_fusion::gcs::Fusion;
use icx_membership::Membership;
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;

const OWNER_SHIFT: u32 = 62;
const MEMBERSHIP: u64 = 0;
const FUSION: u64 = 1;
const GATE: u64 = 2;
const TAG_MASK: u64 = (1 << OWNER_SHIFT) - 1;

/// Counted drops of the stack itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct StackStats {
    /// Control messages of neither the gate nor cache fusion.
    pub foreign: u64,
    /// Cache-fusion traffic while this node's service is not open.
    pub fusion_closed: u64,
}

#[derive(Debug)]
pub struct Stack<'a> {
    pub member: &'a mut Membership,
    pub gate: &'a mut Gate,
    /// `None` until the gate opens (and after a fence or a refusal).
    pub fusion: Option<&'a mut Fusion>,
    pub stats: &'a mut StackStats,
    pub pool: &'a icx_core::BufferPool,
}

fn with_owner(owner: u64, tag: u64) -> u64 {
    (owner << OWNER_SHIFT) | (tag & TAG_MASK)
}

/// The same event, its tag back in its owner's numbering.
fn untagged(ev: HostEvent) -> HostEvent {
    match ev {
        HostEvent::Transport { event, tag } => HostEvent::Transport {
            event,
            tag: tag & TAG_MASK,
        },
        HostEvent::Refused {
            peer,
            channel,
            tag,
            error,
        } => HostEvent::Refused {
            peer,
            channel,
            tag: tag & TAG_MASK,
            error,
        },
    }
}

impl Stack<'_> {
    fn route_delivery(&mut self, now: Instant, ev: HostEvent) {
        let HostEvent::Transport {
            event: Event::Delivered {
                channel, ref data, ..
            },
            ..
        } = ev
        else {
            return;
        };
        match channel {
            Channel::Heartbeat => self.member.handle_event(now, ev),
            Channel::Block => self.feed_fusion(now, ev),
            _ if data.starts_with(&gate::MAGIC) => {
                if let HostEvent::Transport {
                    event: Event::Delivered { peer, data, .. },
                    ..
                } = ev
                {
                    self.gate.on_message(peer, &data);
                }
            }
            _ if data.starts_with(b"GC") => self.feed_fusion(now, ev),
            _ => self.stats.foreign += 1,
        }
    }

    fn feed_fusion(&mut self, now: Instant, ev: HostEvent) {
        match self.fusion.as_deref_mut() {
            Some(f) => f.handle_event(now, ev),
            None => self.stats.fusion_closed += 1,
        }
    }
}

impl Protocol for Stack<'_> {
    fn handle_event(&mut self, now: Instant, ev: HostEvent) {
        if let Some(tag) = ev.send_tag() {
            let ev = untagged(ev);
            match tag >> OWNER_SHIFT {
                FUSION => self.feed_fusion(now, ev),
                GATE => {} // statuses are resent until heard
                _ => self.member.handle_event(now, ev),
            }
            return;
        }
        match ev.transport() {
            Some(Event::Delivered { .. }) => self.route_delivery(now, ev),
            // Peer changes, path checks: the membership's business.
            _ => self.member.handle_event(now, ev),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.member.poll_timeout()) {
            self.member.handle_timeout(now);
        }
        if due(self.gate.poll_timeout()) {
            self.gate.handle_timeout(now);
        }
        if let Some(f) = self.fusion.as_deref_mut() {
            if due(f.poll_timeout()) {
                f.handle_timeout(now);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.member.poll_timeout(),
            self.gate.poll_timeout(),
            self.fusion.as_deref().and_then(|f| f.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output> {
        if let Some(o) = self.member.poll_output(now) {
            return Some(retag(MEMBERSHIP, o));
        }
        if let Some((peer, bytes)) = self.gate.poll_output() {
            if let Some(b) = self.pool.alloc_from(&bytes) {
                return Some(Output::Send {
                    peer,
                    channel: Channel::Control,
                    data: b.freeze(),
                    tag: with_owner(GATE, 0),
                    deadline: None,
                });
            }
            // No buffer: the gate resends on its timer.
        }
        let f = self.fusion.as_deref_mut()?;
        f.poll_output(now).map(|o| retag(FUSION, o))
    }
}

fn retag(owner: u64, o: Output) -> Output {
    match o {
        Output::Send {
            peer,
            channel,
            data,
            tag,
            deadline,
        } => Output::Send {
            peer,
            channel,
            data,
            tag: with_owner(owner, tag),
            deadline,
        },
        other => other,
    }
}

/// Which peers a cache-fusion service spans: the open members still in
/// the view with the same incarnation (a member that restarted is gone).
pub fn fusion_members(opened: &[(NodeId, u32)], view: &[(NodeId, u32)]) -> Vec<NodeId> {
    opened
        .iter()
        .filter(|m| view.contains(m))
        .map(|(n, _)| *n)
        .collect()
}
