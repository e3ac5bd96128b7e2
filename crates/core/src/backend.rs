//! The datagram backend seam.
//!
//! A backend moves whole UDP payloads; it knows nothing of icx frames. The
//! transport describes each outgoing datagram as a small inline header plus a
//! slice of a pool buffer ([`TxFrame`]), so a backend can gather the two with
//! an iovec (or GSO a train of them) and never copy a block in user space.
//! Frames keep a reference on their buffer until the backend drops them, which
//! is what lets a zero-copy send hold the buffer until the kernel is done.

use crate::pool::{BufferPool, SharedBuf};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Room for the largest header the transport emits: an ack frame with 12
/// ranges (152 bytes) or a data header with an 8-range piggybacked ack (148).
/// The wire allows acks of up to 24 ranges (248 bytes); the transport sends
/// fewer so that every queued frame stays this small (it asserts both fits).
pub const HEADER_INLINE_CAP: usize = 160;

/// Which of a backend's queues a datagram travels: the urgent lane carries
/// the small, latency-critical frames (ack-only frames, and the heartbeat
/// and control channels), so they never wait in a FIFO behind block frames.
///
/// A backend with an urgent lane has a second socket (or queue) for them:
/// it sends [`Lane::Urgent`] frames from it, and its receive side is
/// arranged so that urgent frames addressed to it land there (for kernel
/// sockets, a `SO_REUSEPORT` group on the one address whose steering
/// program classifies by the icx header), so a peer needs no second
/// address. A backend without one sends and receives everything on its
/// only queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Block frames, probes, and everything a backend cannot tell apart.
    #[default]
    Normal,
    /// Ack-only frames and frames of the heartbeat and control channels.
    Urgent,
}

/// What a backend can do, as probed at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest UDP payload this backend will send in one datagram.
    pub max_udp_payload: usize,
    /// Most datagrams one `send`/`recv` call moves.
    pub max_batch: usize,
    /// Can send a train of equal-size frames as one GSO super-datagram.
    pub gso: bool,
    /// Coalesces received trains (GRO) before splitting them for the caller.
    pub gro: bool,
    /// Sends from pool memory without a kernel copy (SEND_ZC / DPDK extbuf).
    pub zero_copy_send: bool,
    /// The pool's regions are registered with the device/ring.
    pub registered_buffers: bool,
    /// Has an urgent lane ([`Lane`]): urgent frames are sent from their own
    /// socket, and [`Backend::recv`] hands over the urgent queue first.
    pub urgent_lane: bool,
}

/// An icx header built in place, so emitting a frame allocates nothing.
#[derive(Clone)]
pub struct HeaderBuf {
    bytes: [u8; HEADER_INLINE_CAP],
    len: u16,
}

impl HeaderBuf {
    pub const fn new() -> Self {
        HeaderBuf {
            bytes: [0; HEADER_INLINE_CAP],
            len: 0,
        }
    }

    /// A zeroed header of `len` bytes to emit into; `None` if it cannot fit.
    pub fn with_len(len: usize) -> Option<Self> {
        let mut h = Self::new();
        h.set_len(len).then_some(h)
    }

    /// Returns false (and changes nothing) when `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > HEADER_INLINE_CAP {
            return false;
        }
        self.len = len as u16;
        true
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Becomes a copy of `src`, touching only its `len` bytes (cheaper than
    /// assigning the whole inline buffer).
    pub fn copy_from(&mut self, src: &HeaderBuf) {
        let n = src.len as usize;
        self.bytes[..n].copy_from_slice(&src.bytes[..n]);
        self.len = src.len;
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for HeaderBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeaderBuf({} bytes)", self.len)
    }
}

/// A byte range of a shared pool buffer: the data part of a frame.
#[derive(Clone, Debug, Default)]
pub struct Payload {
    buf: Option<SharedBuf>,
    off: u32,
    len: u32,
}

impl Payload {
    pub const EMPTY: Payload = Payload {
        buf: None,
        off: 0,
        len: 0,
    };

    /// `None` when the range does not lie within the buffer.
    pub fn new(buf: SharedBuf, off: usize, len: usize) -> Option<Self> {
        let end = off.checked_add(len)?;
        if end > buf.len() {
            return None;
        }
        Some(Payload {
            buf: Some(buf),
            off: off as u32,
            len: len as u32,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.off as usize..(self.off + self.len) as usize],
            None => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying buffer, for backends that address registered memory.
    pub fn buffer(&self) -> Option<&SharedBuf> {
        self.buf.as_ref()
    }

    pub fn offset(&self) -> usize {
        self.off as usize
    }
}

/// Interconnect links (private networks, NICs) a node may have to one
/// peer: as many as Oracle HAIP spreads over.
pub const MAX_LINKS: usize = 4;

/// One outgoing datagram: `header ++ payload`, to `dst`, on `lane`.
#[derive(Clone, Debug)]
pub struct TxFrame {
    pub dst: SocketAddr,
    /// The queue it leaves from; a backend without an urgent lane sends
    /// every frame from its one socket.
    pub lane: Lane,
    /// The interconnect link (private network) it leaves by, 0 to
    /// [`MAX_LINKS`] - 1: a backend with a socket or port per link sends
    /// it from that link's; a backend with one sends every frame from it.
    pub link: u8,
    pub header: HeaderBuf,
    pub payload: Payload,
}

impl TxFrame {
    pub fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the datagram out; for backends and simulators that must copy anyway.
    pub fn write_to(&self, out: &mut [u8]) -> usize {
        let h = self.header.as_slice();
        let p = self.payload.as_slice();
        let n = h.len() + p.len();
        out[..h.len()].copy_from_slice(h);
        out[h.len()..n].copy_from_slice(p);
        n
    }
}

/// Frames queued for a backend. Reused across loop turns, so steady-state
/// sending allocates nothing.
pub type TxBatch = VecDeque<TxFrame>;

/// A received datagram, lent to the caller for the duration of a callback.
#[derive(Debug, Clone, Copy)]
pub struct RxDatagram<'a> {
    pub src: SocketAddr,
    /// The queue it arrived on ([`Lane::Normal`] on a backend without an
    /// urgent lane).
    pub lane: Lane,
    /// The link it arrived by (0 on a backend with one link).
    pub link: u8,
    pub data: &'a [u8],
}

/// Interrupts a backend's [`Backend::wait`] from another thread.
///
/// Wake-ups are latched: a `wake` that lands while nobody waits makes the
/// next `wait` return at once. Several wakes before one `wait` may coalesce
/// into one early return. Cheap enough to call per cross-core handoff, but
/// callers should skip it when the waiter is known to be running.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// A datagram device under the driver: io_uring, plain sockets, DPDK,
/// in-process loopback, or a wrapper around one of them.
pub trait Backend {
    fn capabilities(&self) -> Capabilities;

    /// Link 0's address (the only one on a backend with one link).
    fn local_addr(&self) -> SocketAddr;

    /// Interconnect links this backend has, 1 to [`MAX_LINKS`]: a socket
    /// (pair) or port per link, bound to that link's own address. The
    /// default is one.
    fn link_count(&self) -> usize {
        1
    }

    /// The local address of `link` (link 0's is [`local_addr`](Backend::local_addr)),
    /// `None` for a link the backend does not have.
    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        (link == 0).then(|| self.local_addr())
    }

    /// Lets a backend register the pool's regions (io_uring fixed buffers,
    /// DPDK external buffers). The default needs nothing.
    fn register_pool(&mut self, _pool: &BufferPool) -> io::Result<()> {
        Ok(())
    }

    /// Takes frames from the front of `batch` and sends them, each from its
    /// [`TxFrame::link`]'s and [`TxFrame::lane`]'s socket (a frame for a link
    /// the backend does not have is counted and dropped, and counts as taken). Returns how many were taken; frames left
    /// in `batch` were refused for now (backpressure) and should be offered
    /// again.
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize>;

    /// Hands at most `max` received datagrams to `f` without blocking.
    /// Returns how many were handed over.
    ///
    /// A backend with an urgent lane looks at it first on every call and
    /// hands over what waits there before any normal datagram, so a caller
    /// that receives in calls of a few datagrams each bounds how long an
    /// urgent frame waits behind block frames to one call's worth.
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize>;

    /// Like [`recv`](Backend::recv), but only what waits on the urgent lane:
    /// for a caller sending a long run of block frames that wants to look
    /// for heartbeats between sends without receiving blocks. The default
    /// (a backend without the lane, or a wrapper that does not forward it)
    /// hands over nothing, which costs only that look; `recv` still hands
    /// urgent datagrams over first.
    fn recv_urgent(
        &mut self,
        _max: usize,
        _f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<usize> {
        Ok(0)
    }

    /// Blocks until a datagram may be ready (on any lane) or `timeout`
    /// passes (`None`: no limit). May return early; callers re-check.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// A handle that makes a `wait` (current or next) return early, for a
    /// per-core runtime whose other threads hand this core work. `None`
    /// (the default) means the backend cannot be woken: such a caller must
    /// cap its waits instead.
    fn waker(&self) -> Option<Arc<dyn Wake>> {
        None
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn local_addr(&self) -> SocketAddr {
        (**self).local_addr()
    }
    fn link_count(&self) -> usize {
        (**self).link_count()
    }
    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        (**self).link_addr(link)
    }
    fn register_pool(&mut self, pool: &BufferPool) -> io::Result<()> {
        (**self).register_pool(pool)
    }
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        (**self).send(batch)
    }
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        (**self).recv(max, f)
    }
    fn recv_urgent(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        (**self).recv_urgent(max, f)
    }
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).wait(timeout)
    }
    fn waker(&self) -> Option<Arc<dyn Wake>> {
        (**self).waker()
    }
}
