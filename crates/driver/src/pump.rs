//! The two halves of a turn shared by the single-thread [`Driver`](crate::Driver)
//! and the runtime's cores: receiving into the endpoint (each datagram by
//! the link it came by) and flushing its transmits to the backend (each to
//! its peer's address on the link the transport picked), per lane.

use crate::links::PeerTable;
use icx_core::{Backend, Instant, Lane, NodeId, RxDatagram, TxBatch};
use icx_transport::{Endpoint, PeerConfig};
use std::io;
use std::net::SocketAddr;

/// What one [`receive`] did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Received {
    pub(crate) n: usize,
    pub(crate) urgent: usize,
    pub(crate) urgent_on_normal: usize,
    /// A heartbeat or control data frame came on the urgent lane (the
    /// receive then stopped early).
    pub(crate) urgent_data: bool,
}

/// Receives up to `budget` datagrams into `f` (with `urgent_only`, of the
/// urgent lane only, in one call). Without `chunk` (a backend with one
/// lane): in one call. With it: in calls of `chunk`, each of which
/// looks at the urgent lane first, until the backend runs dry, the budget is
/// spent, or a heartbeat or control data frame came (so its message is
/// handed to the application without waiting for the rest). Shared by the
/// single-thread driver and the runtime's cores.
pub(crate) fn receive<B: Backend + ?Sized>(
    backend: &mut B,
    budget: usize,
    chunk: Option<usize>,
    urgent_only: bool,
    f: &mut dyn FnMut(RxDatagram<'_>),
) -> io::Result<Received> {
    use std::cell::Cell;
    let (urgent, on_normal, data) = (Cell::new(0), Cell::new(0), Cell::new(false));
    let mut count = |d: RxDatagram<'_>| {
        match d.lane {
            Lane::Urgent => {
                urgent.set(urgent.get() + 1);
                if icx_wire::is_urgent_data(d.data) {
                    data.set(true);
                }
            }
            Lane::Normal => {
                if icx_wire::lane_of(d.data) == Lane::Urgent {
                    on_normal.set(on_normal.get() + 1);
                }
            }
        }
        f(d)
    };
    let mut n = 0;
    match chunk {
        _ if urgent_only => n = backend.recv_urgent(budget, &mut count)?,
        None => n = backend.recv(budget, &mut count)?,
        Some(chunk) => {
            while n < budget {
                let want = chunk.min(budget - n);
                let got = backend.recv(want, &mut count)?;
                n += got;
                if got < want || data.get() {
                    break;
                }
            }
        }
    }
    Ok(Received {
        n,
        urgent: urgent.get(),
        urgent_on_normal: on_normal.get(),
        urgent_data: data.get(),
    })
}

/// A path MTU the backend cannot carry: the datagrams it needs are larger
/// than the backend's largest. Caught up front, because on the wire the
/// mismatch would only show up as loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendMtuError {
    pub node: NodeId,
    pub mtu: usize,
    /// The UDP payload the MTU needs.
    pub need: usize,
    /// The backend's largest UDP payload.
    pub have: usize,
}

impl std::fmt::Display for BackendMtuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer {}: MTU {} needs {}-byte datagrams, backend carries {}",
            self.node, self.mtu, self.need, self.have
        )
    }
}

impl std::error::Error for BackendMtuError {}

/// Checks `peer`'s path against a backend's largest UDP payload `have`.
/// Used by the driver, the runtime's cores and the runtime's application side.
pub(crate) fn check_backend_mtu(peer: &PeerConfig, have: usize) -> Result<(), BackendMtuError> {
    let need = peer.max_udp_payload();
    if need > have {
        return Err(BackendMtuError {
            node: peer.node,
            mtu: peer.mtu,
            need,
            have,
        });
    }
    Ok(())
}

/// Frames waiting for the backend, per lane: the urgent ones always go
/// first, and block frames the backend refused never hold them back.
#[derive(Debug, Default)]
pub(crate) struct TxQueues {
    pub(crate) urgent: TxBatch,
    pub(crate) normal: TxBatch,
}

impl TxQueues {
    pub(crate) fn with_capacity(n: usize) -> Self {
        TxQueues {
            urgent: TxBatch::with_capacity(n),
            // One over: the frame that ends a pull at the budget.
            normal: TxBatch::with_capacity(n + 1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.urgent.len() + self.normal.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.normal.is_empty()
    }
}

/// What a [`flush_transmits`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything, up to the budget: urgent frames, then block frames.
    All,
    /// Only the endpoint's urgent frames: it stops at the first frame of the
    /// normal lane (its priority order puts those after every urgent one),
    /// which waits in the normal queue for the next full flush.
    Urgent,
}

/// What one [`flush_transmits`] did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flushed {
    pub(crate) sent: usize,
    pub(crate) urgent_sent: usize,
    pub(crate) unroutable: usize,
}

/// Offers a queue to the backend until it is empty or refused.
fn offer<B: Backend + ?Sized>(backend: &mut B, q: &mut TxBatch) -> io::Result<usize> {
    let mut sent = 0;
    while !q.is_empty() {
        let n = backend.send(q)?;
        sent += n;
        if n == 0 {
            break;
        }
    }
    Ok(sent)
}

/// Moves up to `budget` transmits from the endpoint into `tx` (addressed by
/// `peers`, to the peer's address on the transmit's link, or where the
/// peer has none on that link by the first link it has an address on (a
/// peer learnt from frames that came by another link); a peer without any
/// address is counted and dropped), each into its
/// lane's queue, and offers the urgent queue, then (with [`Flush::All`]) the
/// normal one, to the backend until empty or refused. Shared by the
/// single-thread driver and the runtime's cores.
pub(crate) fn flush_transmits<B: Backend + ?Sized>(
    endpoint: &mut Endpoint,
    backend: &mut B,
    tx: &mut TxQueues,
    budget: usize,
    peers: &PeerTable,
    now: Instant,
    mode: Flush,
) -> io::Result<Flushed> {
    let mut f = Flushed::default();
    // Transmits come in bursts to one peer on one link: remember the last
    // (peer, link wanted, link taken, address).
    let mut last: Option<(NodeId, u8, u8, SocketAddr)> = None;
    // Each lane holds up to `budget`: a backlog of refused block frames
    // must not keep urgent ones in the endpoint. The endpoint hands out
    // every urgent frame before a normal one, so the first normal frame
    // past the budget (taken, one over) ends the pull.
    while tx.urgent.len() < budget {
        let Some(t) = endpoint.poll_transmit(now) else {
            break;
        };
        let (want, peer) = (t.link, t.peer);
        let route = match last {
            Some((node, link, via, addr)) if node == peer && link == want => Some((via, addr)),
            _ => peers.get(&peer).and_then(|a| a.route(want)),
        };
        let Some((via, dst)) = route else {
            f.unroutable += 1;
            tracing::debug!(%peer, link = want, "transmit for a peer with no address, dropped");
            continue;
        };
        last = Some((peer, want, via, dst));
        let mut frame = t.into_frame(dst);
        frame.link = via;
        if frame.lane == Lane::Urgent {
            tx.urgent.push_back(frame);
        } else {
            tx.normal.push_back(frame);
            if mode == Flush::Urgent || tx.normal.len() >= budget {
                break;
            }
        }
    }
    f.urgent_sent = offer(backend, &mut tx.urgent)?;
    f.sent = f.urgent_sent;
    if mode == Flush::All {
        f.sent += offer(backend, &mut tx.normal)?;
    }
    Ok(f)
}
