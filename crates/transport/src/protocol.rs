//! How an upper-layer protocol (membership, cache fusion) plugs into a node.
//!
//! A protocol is sans-IO like the transport beneath it: it never reads a
//! clock, spawns a thread or touches a socket. A *host* owns the transport
//! and the protocol and moves everything between them:
//!
//! ```text
//!   host loop, each turn, with one `now` from the host's clock:
//!     datagrams ──► transport ──► events ──► protocol.handle_event(now, ev)
//!     protocol.poll_timeout() reached  ──► protocol.handle_timeout(now)
//!     protocol.poll_output(now) ──► Output::Send ──► transport (tag kept)
//!     transport ──► datagrams out
//! ```
//!
//! Two hosts run the same protocol object unchanged: `icx_sim::host`
//! (N simulated nodes over the lossy simulated network, virtual time) and
//! `icx_driver::host` (the per-core [`Runtime`](../../icx_driver) of a real
//! node, on the monotonic clock the cores use). The shape is quinn-proto's:
//! `handle_*` feeds input, `poll_*` drains output, `poll_timeout` says when
//! to come back.
//!
//! What a protocol may touch: the messages it is given (it owns delivered
//! buffers), its own state, and a [`BufferPool`](icx_core::BufferPool) handle
//! given at construction for the buffers it sends. What it may not: clocks,
//! threads, sockets, files (clippy's `disallowed-methods` enforces the first
//! three in protocol crates).

use crate::{Endpoint, Event, SendError};
use icx_core::{Channel, Duration, Instant, NodeId, SharedBuf};

/// What the host tells a protocol.
#[derive(Debug)]
pub enum HostEvent {
    /// An event of the transport. For [`Event::Acked`] and [`Event::Lost`],
    /// `tag` is the one the protocol gave the message's [`Output::Send`];
    /// for every other event it is 0.
    Transport { event: Event, tag: u64 },
    /// The host could not queue the send with this `tag` (the peer's queue
    /// was full, the peer is unknown, no pool buffer): nothing was sent.
    Refused {
        peer: NodeId,
        channel: Channel,
        tag: u64,
        error: SendError,
    },
}

impl HostEvent {
    /// The transport event, if this is one.
    pub fn transport(&self) -> Option<&Event> {
        match self {
            HostEvent::Transport { event, .. } => Some(event),
            HostEvent::Refused { .. } => None,
        }
    }

    /// The tag of a send this event resolves (acked, lost or refused).
    pub fn send_tag(&self) -> Option<u64> {
        match self {
            HostEvent::Transport {
                event: Event::Acked { .. } | Event::Lost { .. },
                tag,
            }
            | HostEvent::Refused { tag, .. } => Some(*tag),
            HostEvent::Transport { .. } => None,
        }
    }
}

/// What a protocol asks its host to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send `data` to `peer` on `channel`. Exactly one of `Acked`, `Lost`
    /// or `Refused` comes back with `tag`. `deadline`, relative to when the
    /// transport takes the message, overrides the channel's default.
    Send {
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
        tag: u64,
        deadline: Option<Duration>,
    },
}

/// A sans-IO upper-layer protocol, driven by a host. Every call carries the
/// host's `now`, the same clock the transport beneath runs on.
pub trait Protocol {
    /// A transport event (delivery, ack, loss, peer change) or a refused send.
    fn handle_event(&mut self, now: Instant, event: HostEvent);

    /// Called once `now` has reached what [`Protocol::poll_timeout`] gave.
    fn handle_timeout(&mut self, now: Instant);

    /// When the protocol next wants [`Protocol::handle_timeout`]; a time in
    /// the past means at once. Asked after every input.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next thing the protocol wants done; drained after every input.
    fn poll_output(&mut self, now: Instant) -> Option<Output>;
}

/// Sends' tags by message id, for a host over one [`Endpoint`](crate::Endpoint):
/// `Acked` and `Lost` name the message id, the protocol knows its tag.
#[derive(Debug, Default)]
pub struct TagMap {
    tags: icx_core::hash::IdMap<(NodeId, u64), u64>,
}

impl TagMap {
    pub fn insert(&mut self, peer: NodeId, msg_id: u64, tag: u64) {
        self.tags.insert((peer, msg_id), tag);
    }

    /// Queues an [`Output::Send`] on `ep` at `now` (its deadline counted
    /// from `now`) and keeps its tag for the `Acked` or `Lost` to come; a
    /// refusal comes back as the [`HostEvent::Refused`] the protocol gets.
    /// The one way every host turns an output into a send.
    pub fn send(&mut self, ep: &mut Endpoint, now: Instant, out: Output) -> Result<(), HostEvent> {
        let Output::Send {
            peer,
            channel,
            data,
            tag,
            deadline,
        } = out;
        let sent = match deadline {
            Some(d) => ep.send_with_deadline(now, peer, channel, data, now + d),
            None => ep.send(now, peer, channel, data),
        };
        match sent {
            Ok(msg_id) => {
                self.insert(peer, msg_id, tag);
                Ok(())
            }
            Err(error) => Err(HostEvent::Refused {
                peer,
                channel,
                tag,
                error,
            }),
        }
    }

    /// Wraps a transport event for the protocol, taking the tag of the send
    /// it resolves.
    pub fn wrap(&mut self, event: Event) -> HostEvent {
        let tag = match &event {
            Event::Acked { peer, msg_id, .. } | Event::Lost { peer, msg_id, .. } => {
                self.tags.remove(&(*peer, *msg_id)).unwrap_or_else(|| {
                    // Every message a host sends records its tag first.
                    debug_assert!(false, "no tag for {peer} message {msg_id}");
                    u64::MAX
                })
            }
            _ => 0,
        };
        HostEvent::Transport { event, tag }
    }

    /// Messages sent and not yet resolved.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}
