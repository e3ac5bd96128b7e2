//! A protocol host on the real per-core [`Runtime`]: what a node binary's
//! event loop is.
//!
//! A sans-IO [`Protocol`] (membership, cache fusion, the testkit's toy
//! counter) runs on the application thread, and the runtime's cores run the
//! transport. Each [`RuntimeHost::turn`]:
//!
//! 1. waits for the runtime's next event with [`Runtime::wait_event`] (the
//!    thread parks, no spinning), at most `max_wait` and no longer than
//!    the protocol's [`poll_timeout`](Protocol::poll_timeout); not at all
//!    when the protocol has input waiting;
//! 2. reads `now` once from [`Runtime::now`], the monotonic clock the cores
//!    run the transport on, and feeds every event then available to
//!    [`handle_event`](Protocol::handle_event) (a bounded batch);
//! 3. calls [`handle_timeout`](Protocol::handle_timeout) if the protocol's
//!    timer is due;
//! 4. drains [`poll_output`](Protocol::poll_output) into [`Runtime::send`] /
//!    [`Runtime::send_with_deadline`], the protocol's tag as the runtime's.
//!
//! Every send the protocol asks for comes back exactly once with its tag:
//! as the transport's `Acked` or `Lost`, or as [`HostEvent::Refused`] when
//! the runtime refused it at once ([`SubmitError::UnknownPeer`] and
//! [`SubmitError::TooLarge`] map to the [`SendError`] of the same name; the
//! core's own refusals, such as a full peer queue, come as `Refused` from
//! the core). Refusals reach the protocol at the start of the next turn,
//! which then does not wait, so a protocol that retries a refusal at once
//! cannot loop inside one turn. A full command ring
//! ([`SubmitError::Backpressure`]) is not a refusal: the host keeps that one
//! send (with its buffer handed back), stops taking outputs, and retries it
//! first next turn, waiting at most [`BACKPRESSURE_RETRY`] meanwhile; the
//! host never holds more than that one. A runtime that was shut down makes
//! `turn` return an error ([`io::ErrorKind::NotConnected`]); the send that
//! met it is not resolved.
//!
//! What the protocol may touch: its own state, the events it is given
//! (delivered buffers are its to keep), the `now` it is handed, and the
//! [`BufferPool`](icx_core::BufferPool) it was built with. It must not read
//! a clock, block, or reach the runtime itself; between turns the
//! application may (add or remove peers, take snapshots), but it must not
//! take events with `poll_event`/`wait_event` itself, or the protocol never
//! sees them. The runtime's `PeerAdded`/`PeerRemoved` and path events reach
//! the protocol like any other transport event.

use crate::runtime::{Runtime, SubmitError};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::SendError;
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant as StdInstant};

/// Longest a turn waits while a send the full command ring refused is
/// waiting: cores do not wake the application when their ring drains.
pub const BACKPRESSURE_RETRY: Duration = Duration::from_micros(200);

/// Longest one turn of [`RuntimeHost::run_until`] waits before it checks
/// its condition again.
pub const RUN_UNTIL_MAX_WAIT: Duration = Duration::from_millis(10);

/// Events fed to the protocol per turn, so a flood of them cannot keep its
/// timer or its outputs waiting.
const EVENT_BUDGET: usize = 4096;
/// Outputs taken from the protocol per turn.
const OUTPUT_BUDGET: usize = 4096;

/// What a host did, summed over its turns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    pub turns: u64,
    /// Events given to the protocol (transport events and refusals).
    pub events: u64,
    /// Calls of `handle_timeout`.
    pub timeouts: u64,
    /// Sends the runtime took.
    pub sent: u64,
    /// Sends the runtime refused at once, given back as `Refused`.
    pub refused: u64,
    /// Times a send met a full command ring and was kept for a retry.
    pub backpressure: u64,
}

/// Hosts one [`Protocol`] on one [`Runtime`]; see the module docs. Holds
/// only what must survive between turns: the send a full command ring
/// refused and the refusals not yet handed to the protocol.
#[derive(Debug, Default)]
pub struct RuntimeHost {
    deferred: Option<Output>,
    refused: VecDeque<HostEvent>,
    stats: HostStats,
}

impl RuntimeHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// Sends waiting for room in a command ring, or refusals waiting for
    /// the protocol: the host still holds work of the protocol's.
    pub fn is_idle(&self) -> bool {
        self.deferred.is_none() && self.refused.is_empty()
    }

    /// One turn (see the module docs). Returns how many events the
    /// protocol was given.
    pub fn turn<P: Protocol>(
        &mut self,
        rt: &mut Runtime,
        proto: &mut P,
        max_wait: Duration,
    ) -> io::Result<usize> {
        self.stats.turns += 1;
        let mut wait = max_wait;
        if let Some(t) = proto.poll_timeout() {
            wait = wait.min(t.saturating_duration_since(rt.now()));
        }
        if !self.refused.is_empty() {
            wait = Duration::ZERO;
        }
        if self.deferred.is_some() {
            wait = wait.min(BACKPRESSURE_RETRY);
        }
        let mut next = if wait.is_zero() {
            rt.poll_event()
        } else {
            rt.wait_event(wait)
        };
        if next.is_none() && rt.is_shut_down() && self.is_idle() {
            // Its last events are taken: nothing will ever come again.
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "runtime shut down",
            ));
        }

        let now = rt.now();
        let mut fed = 0;
        while let Some(ev) = self.refused.pop_front() {
            proto.handle_event(now, ev);
            fed += 1;
        }
        while let Some(ev) = next {
            proto.handle_event(now, ev);
            fed += 1;
            if fed >= EVENT_BUDGET {
                break;
            }
            next = rt.poll_event();
        }
        self.stats.events += fed as u64;

        if proto.poll_timeout().is_some_and(|t| t <= now) {
            proto.handle_timeout(now);
            self.stats.timeouts += 1;
        }

        if let Some(o) = self.deferred.take() {
            if let Some(o) = self.submit(rt, o)? {
                self.deferred = Some(o);
                return Ok(fed);
            }
        }
        for _ in 0..OUTPUT_BUDGET {
            let Some(o) = proto.poll_output(now) else {
                break;
            };
            if let Some(o) = self.submit(rt, o)? {
                self.deferred = Some(o);
                break;
            }
        }
        Ok(fed)
    }

    /// Turns until `done(proto)` holds (checked before each turn) or
    /// `timeout` passes; returns whether it held. Each turn waits at most
    /// [`RUN_UNTIL_MAX_WAIT`], so a condition on state outside the protocol
    /// is noticed too.
    pub fn run_until<P: Protocol>(
        &mut self,
        rt: &mut Runtime,
        proto: &mut P,
        mut done: impl FnMut(&P) -> bool,
        timeout: Duration,
    ) -> io::Result<bool> {
        let deadline = StdInstant::now() + timeout;
        loop {
            if done(proto) {
                return Ok(true);
            }
            let now = StdInstant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.turn(rt, proto, (deadline - now).min(RUN_UNTIL_MAX_WAIT))?;
        }
    }

    /// Hands one output to the runtime. `Ok(Some(..))`: the command ring is
    /// full, try again later.
    fn submit(&mut self, rt: &mut Runtime, o: Output) -> io::Result<Option<Output>> {
        let Output::Send {
            peer,
            channel,
            data,
            tag,
            deadline,
        } = o
        else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the runtime host does not know this output: {o:?}"),
            ));
        };
        let res = match deadline {
            Some(d) => rt.send_with_deadline(peer, channel, data, tag, d),
            None => rt.send(peer, channel, data, tag),
        };
        let error = match res {
            Ok(()) => {
                self.stats.sent += 1;
                return Ok(None);
            }
            Err(SubmitError::Backpressure(data)) => {
                self.stats.backpressure += 1;
                return Ok(Some(Output::Send {
                    peer,
                    channel,
                    data,
                    tag,
                    deadline,
                }));
            }
            Err(SubmitError::UnknownPeer(p)) => SendError::UnknownPeer(p),
            Err(SubmitError::TooLarge { len, max }) => SendError::TooLarge { len, max },
            Err(SubmitError::ShutDown) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("runtime shut down: send {tag} to {peer} not queued"),
                ))
            }
        };
        self.stats.refused += 1;
        self.refused.push_back(HostEvent::Refused {
            peer,
            channel,
            tag,
            error,
        });
        Ok(None)
    }
}
