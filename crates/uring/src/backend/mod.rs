//! [`UringBackend`]: one io_uring instance and its UDP sockets: the normal
//! one and, by default, the urgent lane's on the same address (see
//! [`icx_udp::bind_urgent`]), each with its own multishot receive and
//! buffer ring, so urgent completions are set apart as they are reaped and
//! handed out first.
//!
//! With several interconnect links each link has its own pair of sockets,
//! bound to the link's address (and interface), all in the one ring: one
//! wait covers every link. Frames leave by their link's socket; received
//! datagrams are tagged with the link they came by.

use crate::bufring::{BufRing, Buffers, BGID};
use crate::config::{UringConfig, ZeroCopy, DEFAULT_ZC_THRESHOLD};
use crate::setup::{self, OpenError, SetupMode};
use crate::tx::{TxSlab, MAX_SEGS};
use icx_core::{Backend, BufferPool, Capabilities, Lane, RxDatagram, TxBatch, Wake};
use icx_udp::sys::{decode_addr, empty_storage, route_addr};
use icx_udp::{bind_socket, bind_urgent, BufferGrant, EventFd, LinkCounts, RxRotation};
use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod complete;
mod open;
mod rx;
mod send;

use complete::*;
use rx::*;

// user_data tags: the kind in the top byte, an index below.
const KIND_SHIFT: u32 = 56;
const UD_RX_MULTI: u64 = 1 << KIND_SHIFT;
const UD_RX_SLOT: u64 = 2 << KIND_SHIFT;
const UD_TX: u64 = 3 << KIND_SHIFT;
const UD_WAKE: u64 = 4 << KIND_SHIFT;
const UD_CANCEL: u64 = 5 << KIND_SHIFT;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;
/// Receive user_data carry their lane above the slot index.
const LANE_SHIFT: u32 = 48;
const SLOT_MASK: u64 = (1 << LANE_SHIFT) - 1;
/// Provided buffers of the urgent lane's receive (a power of two): its
/// frames are small and few; when they run out the multishot receive ends
/// (ENOBUFS) and is re-armed, the datagrams waiting in the socket meanwhile.
const URGENT_RX_BUFFERS: usize = 64;

/// What the backend uses, after probing and fallbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub setup: SetupMode,
    /// Multishot RECVMSG with a provided buffer ring (else single-shot).
    pub multishot: bool,
    /// Equal-size trains sent as one UDP_SEGMENT send (else one per frame).
    pub gso: bool,
    /// UDP_GRO coalesced receives, split here.
    pub gro: bool,
    /// SENDMSG_ZC for sends at or above `zc_threshold` (else plain SENDMSG).
    pub zero_copy: bool,
    pub zc_threshold: usize,
    /// The pool's regions are registered with the ring.
    pub registered_buffers: bool,
    /// `wait` spins on the completion queue.
    pub busy_poll: bool,
}

impl Features {
    /// The fallbacks in force, by name.
    pub fn fallbacks(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.setup != SetupMode::DeferTaskrun {
            v.push("weaker ring setup flags");
        }
        if !self.multishot {
            v.push("single-shot receive");
        }
        if !self.gso {
            v.push("one datagram per frame (no GSO)");
        }
        if !self.gro {
            v.push("no GRO");
        }
        if !self.zero_copy {
            v.push("copying send (no SEND_ZC)");
        }
        if !self.registered_buffers {
            v.push("unregistered pool");
        }
        v
    }
}

/// What the backend has seen. Datagram counts unless said otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringStats {
    /// Datagrams the kernel accepted (a GSO send counts its segments).
    pub sent: u64,
    /// Datagrams handed to a `recv` callback.
    pub received: u64,
    /// Send requests submitted (each one frame or one GSO train).
    pub send_ops: u64,
    /// GSO sends that completed, and the datagrams they carried.
    pub gso_sends: u64,
    pub gso_segments: u64,
    /// Zero-copy sends that completed.
    pub zc_sends: u64,
    /// Zero-copy notifications reporting that the kernel copied anyway.
    pub zc_copied: u64,
    /// Receive buffers that held a GRO-coalesced train (more than one datagram).
    pub gro_buffers: u64,
    /// Datagrams longer than a receive buffer, dropped.
    pub truncated: u64,
    /// Datagrams refused with EMSGSIZE (over the path MTU, DF set), dropped.
    pub emsgsize: u64,
    /// Datagrams dropped for any other send error.
    pub send_errors: u64,
    /// Failed receive completions (other than ENOBUFS).
    pub recv_errors: u64,
    /// Multishot receives ended by an empty buffer ring (ENOBUFS) and re-armed.
    pub enobufs: u64,
    /// Multishot receives re-armed for any reason.
    pub rearms: u64,
    /// `send` calls that found the in-flight slab full.
    pub tx_full: u64,
    /// io_uring_enter calls made by send/recv/wait.
    pub enters: u64,
    /// Waits that found a completion while spinning, and waits that slept.
    pub spin_hits: u64,
    pub sleeps: u64,
    pub recv_buffer: BufferGrant,
    pub send_buffer: BufferGrant,
    /// Datagrams sent from, and handed over from, the urgent sockets.
    pub urgent_sent: u64,
    pub urgent_received: u64,
    /// Of `sent` and `received`, each link's; frames for a link it lacks.
    pub links: LinkCounts,
}

/// Log-once flags.
#[derive(Debug, Default)]
struct Warned {
    emsgsize: bool,
    send_error: bool,
    recv_error: bool,
    truncated: bool,
    unknown_link: bool,
}

/// One link's sockets, as indices into `UringBackend::lanes`.
struct LinkSocks {
    addr: SocketAddr,
    v6: bool,
    device: Option<String>,
    normal: usize,
    urgent: Option<usize>,
}

/// An io_uring UDP backend: one ring, one socket per lane. See the crate docs.
pub struct UringBackend {
    // Dropped first (after `Drop::drop` drained it), so the kernel is done
    // with the memory below before it goes.
    ring: IoUring,
    /// Per link, link 0 first: its normal lane, then its urgent one if
    /// open. Each socket closes after the ring.
    lanes: Vec<RxLane>,
    /// Link 0 first.
    links: Vec<LinkSocks>,
    /// Every link has an urgent lane.
    urgent_lane: bool,
    /// The order `recv` reads the links' normal lanes in.
    rotation: RxRotation,
    cfg: UringConfig,
    features: Features,
    rx_payload: usize,
    tx: TxSlab,
    zc: ZcState,
    /// Receive completions all lanes may hold set aside (the CQ's size).
    stash_cap: usize,
    started: bool,
    /// The ring was created disabled (SINGLE_ISSUER) and awaits enabling.
    disabled: bool,
    wake: OnceLock<Option<Arc<EventFd>>>,
    wake_armed: bool,
    /// Keeps registered regions mapped while registered.
    pool: Option<BufferPool>,
    stats: UringStats,
    warned: Warned,
}

impl fmt::Debug for UringBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringBackend")
            .field(
                "links",
                &self
                    .links
                    .iter()
                    .map(|l| (l.addr, l.device.clone()))
                    .collect::<Vec<_>>(),
            )
            .field("features", &self.features)
            .field("stats", &self.stats)
            .finish()
    }
}

fn with_context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Transient results of io_uring_enter: try again later, not an error.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ETIME)
    )
}

fn enter_error(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EEXIST) {
        return io::Error::new(
            e.kind(),
            "io_uring ring created SINGLE_ISSUER is used from a second thread; \
             use each UringBackend on one thread (or set ring_setup = RingSetup::Coop)",
        );
    }
    with_context(e, "io_uring_enter")
}

/// Makes a socket blocking: io_uring completes requests when the socket is
/// ready, and a blocking socket lets a send wait for buffer room instead of
/// failing with EAGAIN.
fn set_blocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor the caller owns, with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
}

/// Pushes one SQE, submitting first when the queue is full.
///
/// # Safety
/// Every pointer in `e` must stay valid until its completion arrives (and
/// for zero-copy sends, its notification).
unsafe fn push_sqe(
    ring: &mut IoUring,
    e: &squeue::Entry,
    stats: &mut UringStats,
) -> io::Result<()> {
    for _ in 0..64 {
        // SAFETY: forwarded from the caller.
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        stats.enters += 1;
        match ring.submit() {
            Ok(_) => {}
            Err(e) if transient(&e) => std::thread::yield_now(),
            Err(e) => return Err(enter_error(e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "io_uring submission queue stays full",
    ))
}

impl UringBackend {
    /// Opens the ring and the socket, probing every feature; a fallback is
    /// logged with its reason. Fails when io_uring is unavailable: see
    /// [`open_backend`](crate::open_backend) for the plain-socket fallback.
    pub fn new(cfg: UringConfig) -> io::Result<Self> {
        Self::open(cfg).map_err(io::Error::from)
    }

    pub fn stats(&self) -> UringStats {
        self.stats
    }

    /// What is in use after probing and fallbacks.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Datagrams the kernel dropped on this backend's sockets (full
    /// receive buffers).
    pub fn kernel_drops(&self) -> io::Result<u64> {
        let mut n = 0;
        for l in &self.lanes {
            let m = icx_udp::sys::meminfo(l.socket.as_raw_fd())?;
            n += u64::from(m[libc::SK_MEMINFO_DROPS as usize]);
        }
        Ok(n)
    }

    /// Whether every link's urgent lane socket is open.
    pub fn has_urgent_lane(&self) -> bool {
        self.urgent_lane
    }

    /// Every link's local address, link 0 first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.links.iter().map(|l| l.addr).collect()
    }

    /// The interface link `link`'s sockets are bound to (SO_BINDTODEVICE).
    pub fn link_device(&self, link: usize) -> Option<&str> {
        self.links.get(link)?.device.as_deref()
    }

    /// A link's normal and urgent sockets (`None` for a link it lacks).
    pub fn link_fds(&self, link: usize) -> Option<(BorrowedFd<'_>, Option<BorrowedFd<'_>>)> {
        let l = self.links.get(link)?;
        Some((
            self.lanes[l.normal].socket.as_fd(),
            l.urgent.map(|u| self.lanes[u].socket.as_fd()),
        ))
    }

    /// Sends and receives still owned by the kernel.
    pub fn in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Enables the ring on this thread (SINGLE_ISSUER) and posts receives.
    fn start(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        if self.disabled {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(|e| with_context(e, "io_uring enable rings"))?;
            self.disabled = false;
        }
        self.started = true;
        self.arm_rx()?;
        self.arm_wake()?;
        self.submit()
    }

    fn submit(&mut self) -> io::Result<()> {
        self.stats.enters += 1;
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(enter_error(e)),
        }
    }

    /// Keeps a multishot poll on the waker's eventfd, once a waker exists.
    fn arm_wake(&mut self) -> io::Result<()> {
        if self.wake_armed {
            return Ok(());
        }
        let Some(Some(ev)) = self.wake.get() else {
            return Ok(());
        };
        let e = opcode::PollAdd::new(Fd(ev.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(UD_WAKE);
        // SAFETY: a poll carries no user memory; the eventfd lives in
        // `self.wake` as long as the ring.
        unsafe { push_sqe(&mut self.ring, &e, &mut self.stats)? };
        self.wake_armed = true;
        Ok(())
    }

    /// Runs deferred task work when the kernel flags some, so completions
    /// are posted (COOP/DEFER_TASKRUN), and flushes queued SQEs.
    fn flush_taskrun(&mut self) -> io::Result<()> {
        let need = {
            let sq = self.ring.submission();
            sq.taskrun() || sq.cq_overflow() || !sq.is_empty()
        };
        if need {
            self.submit()?;
        }
        Ok(())
    }

    /// Moves completions out of the CQ: sends are finished here, receive
    /// completions set aside for `recv`, each in its lane's stash.
    fn reap(&mut self) {
        let Self {
            ring,
            tx,
            zc,
            lanes,
            stash_cap,
            stats,
            warned,
            features,
            links,
            wake,
            wake_armed,
            ..
        } = self;
        let addr = &links[0].addr;
        let mut cq = ring.completion();
        let mut held: usize = lanes.iter().map(|l| l.stash.len()).sum();
        while held < *stash_cap {
            let Some(e) = cq.next() else { break };
            let (ud, res, flags) = (e.user_data(), e.result(), e.flags());
            match ud & !INDEX_MASK {
                UD_TX => complete_tx(
                    tx,
                    zc,
                    stats,
                    warned,
                    features,
                    *addr,
                    (ud & INDEX_MASK) as u32,
                    res,
                    flags,
                ),
                UD_WAKE => {
                    if let Some(Some(ev)) = wake.get() {
                        ev.drain();
                    }
                    if !cqueue::more(flags) {
                        *wake_armed = false;
                    }
                }
                UD_CANCEL => {}
                _ => {
                    // A receive: set aside for its lane.
                    let li = ((ud & INDEX_MASK) >> LANE_SHIFT) as usize;
                    if let Some(l) = lanes.get_mut(li) {
                        l.stash.push_back(Cqe { ud, res, flags });
                        held += 1;
                    }
                }
            }
        }
    }

    /// Drops the frame at the front of `batch`, counting why.
    fn drop_front(&mut self, batch: &mut TxBatch, errno: i32) {
        if let Some(f) = batch.pop_front() {
            let src = self
                .links
                .get(usize::from(f.link))
                .map_or(self.links[0].addr, |l| l.addr);
            note_send_error(
                &mut self.stats,
                &mut self.warned,
                src,
                Some(f.dst),
                1,
                errno,
            );
        }
    }

    /// Drops the front frame, whose link this backend does not have.
    fn drop_unknown_link(&mut self, batch: &mut TxBatch) {
        let n = self.links.len();
        self.stats
            .links
            .drop_unknown_link(batch, n, &mut self.warned.unknown_link, "io_uring");
    }
}

impl Backend for UringBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_udp_payload: self.cfg.max_udp_payload.min(self.rx_payload),
            max_batch: self.cfg.max_batch,
            gso: self.features.gso,
            gro: self.features.gro,
            zero_copy_send: self.zc.on,
            registered_buffers: self.features.registered_buffers,
            urgent_lane: self.has_urgent_lane(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.links[0].addr
    }

    fn link_count(&self) -> usize {
        self.links.len()
    }

    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        self.links.get(usize::from(link)).map(|l| l.addr)
    }

    /// Registers the pool's regions as fixed buffers. They pin the pool's
    /// memory; SENDMSG(_ZC) cannot address fixed buffers, so sends do not use
    /// the indices. A refusal (RLIMIT_MEMLOCK without CAP_IPC_LOCK) is logged
    /// and the backend carries on unregistered.
    fn register_pool(&mut self, pool: &BufferPool) -> io::Result<()> {
        if !self.cfg.register_buffers {
            tracing::info!("io_uring: pool registration off by configuration");
            return Ok(());
        }
        if self.features.registered_buffers {
            let _ = self.ring.submitter().unregister_buffers();
            self.features.registered_buffers = false;
            self.pool = None;
        }
        let regions = pool.regions();
        let iovs: Vec<libc::iovec> = regions
            .iter()
            .map(|r| libc::iovec {
                iov_base: r.addr.cast(),
                iov_len: r.len,
            })
            .collect();
        let total: usize = regions.iter().map(|r| r.len).sum();
        // SAFETY: every region is a live mapping of the pool; we keep a
        // clone of the pool (so the mappings stay) for as long as the
        // registration exists.
        match unsafe { self.ring.submitter().register_buffers(&iovs) } {
            Ok(()) => {
                self.features.registered_buffers = true;
                self.pool = Some(pool.clone());
                tracing::debug!(
                    regions = iovs.len(),
                    bytes = total,
                    "io_uring: pool registered"
                );
            }
            Err(e) => {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes one rlimit into a live local.
                unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
                tracing::warn!(
                    bytes = total, memlock_limit = lim.rlim_cur, error = %e,
                    "io_uring: registering the buffer pool failed (RLIMIT_MEMLOCK too low \
                     without CAP_IPC_LOCK? raise `ulimit -l`); continuing unregistered"
                );
            }
        }
        Ok(())
    }

    /// Groups the front of `batch` into trains (same destination, equal
    /// size, the last may be shorter, up to 64 segments / 64 KiB), each sent
    /// as one SENDMSG (or SENDMSG_ZC) with a UDP_SEGMENT cmsg, from header
    /// and payload iovecs pointing at the frames. One submit per call.
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        self.send_frames(batch)
    }

    /// Hands out up to `max` datagrams from completed receives, splitting
    /// GRO trains, and gives each buffer back after its datagrams were seen.
    /// The urgent lane's first: with one, completions the kernel holds as
    /// deferred task work are posted before looking, so an urgent datagram
    /// that landed during the caller's last batch is not missed.
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.start()?;
        if self.has_urgent_lane() && max > 0 {
            self.flush_taskrun()?;
        }
        // Finishes sends even when no datagram is wanted.
        self.reap();
        let mut handed = 0;
        self.recv_urgent_lanes(max, &mut handed, f)?;
        let urgent = handed;
        for k in self.rotation.order(self.links.len()) {
            if handed >= max {
                break;
            }
            let before = handed;
            self.recv_lane(self.links[k].normal, max, &mut handed, f)?;
            self.stats.links.add_received(k, (handed - before) as u64);
        }
        for li in 0..self.lanes.len() {
            if self.lanes[li].rx.is_single() || !self.lanes[li].rx.armed() {
                self.arm_lane(li)?;
            }
        }
        self.arm_wake()?;
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        self.stats.received += handed as u64;
        self.stats.urgent_received += urgent as u64;
        Ok(handed)
    }

    /// The urgent lane's completions only (deferred task work run first).
    fn recv_urgent(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.start()?;
        if !self.has_urgent_lane() || max == 0 {
            return Ok(0);
        }
        self.flush_taskrun()?;
        self.reap();
        let mut handed = 0;
        self.recv_urgent_lanes(max, &mut handed, f)?;
        for k in 0..self.links.len() {
            let Some(li) = self.links[k].urgent else {
                continue;
            };
            if self.lanes[li].rx.is_single() || !self.lanes[li].rx.armed() {
                self.arm_lane(li)?;
            }
        }
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        self.stats.received += handed as u64;
        self.stats.urgent_received += handed as u64;
        Ok(handed)
    }

    /// Blocks in io_uring_enter until a completion arrives (a datagram, a
    /// finished send, a wake-up) or `timeout` passes; with `busy_poll`,
    /// spins on the completion queue instead.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.start()?;
        self.arm_wake()?;
        if !self.rx_armed() {
            self.arm_rx()?;
        }
        let held = self
            .lanes
            .iter()
            .any(|l| l.cursor.is_some() || !l.stash.is_empty());
        if held || !self.ring.completion().is_empty() {
            if !self.ring.submission().is_empty() {
                self.submit()?;
            }
            return Ok(());
        }
        // Spin first: forever (busy poll, bounded by `timeout`), or for the
        // configured spell, after which a quiet ring goes to sleep.
        let spin = if self.cfg.busy_poll {
            timeout
        } else {
            Some(timeout.map_or(self.cfg.spin, |t| t.min(self.cfg.spin)))
        };
        let start = Instant::now();
        if spin != Some(Duration::ZERO) {
            let mut spins = 0u32;
            loop {
                self.flush_taskrun()?;
                if !self.ring.completion().is_empty() {
                    self.stats.spin_hits += 1;
                    return Ok(());
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && spin.is_some_and(|t| start.elapsed() >= t) {
                    break;
                }
                std::hint::spin_loop();
            }
            if self.cfg.busy_poll {
                return Ok(());
            }
        }
        let timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
        if timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        self.stats.enters += 1;
        self.stats.sleeps += 1;
        let r = match timeout {
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(enter_error(e)),
        }
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        let ev = self.wake.get_or_init(|| match EventFd::new() {
            Ok(e) => Some(Arc::new(e)),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring: no eventfd for wake-ups; waits cannot be interrupted");
                None
            }
        });
        ev.clone().map(|e| e as Arc<dyn Wake>)
    }
}

/// Link 0's normal lane's socket.
impl AsRawFd for UringBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.lanes[self.links[0].normal].socket.as_raw_fd()
    }
}

/// Link 0's normal lane's socket.
impl AsFd for UringBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.lanes[self.links[0].normal].socket.as_fd()
    }
}

impl Drop for UringBackend {
    /// Cancels the receives and waits (bounded) for every request to finish,
    /// so the kernel is done with our memory before it is freed. If that
    /// cannot be confirmed (the ring is SINGLE_ISSUER and this is another
    /// thread, or the kernel is slow), the in-flight memory is leaked rather
    /// than risk the kernel writing into freed buffers.
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        tracing::debug!(stats = ?self.stats, "io_uring backend closing");
        let mut ok = true;
        let cancel = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(UD_CANCEL);
        // SAFETY: a cancel request carries no user memory.
        if unsafe { push_sqe(&mut self.ring, &cancel, &mut self.stats) }.is_err() {
            ok = false;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while ok {
            self.reap();
            // Receive completions are only bookkeeping now.
            for lane in &mut self.lanes {
                while let Some(c) = lane.stash.pop_front() {
                    match c.ud & !INDEX_MASK {
                        UD_RX_MULTI if !cqueue::more(c.flags) => {
                            if let Rx::Multi { armed, .. } = &mut lane.rx {
                                *armed = false;
                            }
                        }
                        UD_RX_SLOT => {
                            if let Rx::Single { slots, .. } = &mut lane.rx {
                                if let Some(s) = slots.get_mut((c.ud & SLOT_MASK) as usize) {
                                    s.posted = false;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if self.tx.in_flight() == 0 && !self.any_rx_armed() {
                break;
            }
            if Instant::now() >= deadline {
                ok = false;
                break;
            }
            let ts = Timespec::from(Duration::from_millis(10));
            let args = SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(_) => ok = false,
            }
        }
        if !ok {
            tracing::debug!(
                in_flight = self.tx.in_flight(),
                "io_uring backend dropped with requests it could not reap (another thread?): \
                 leaking their memory"
            );
            // The slab holds the frames (inline headers, payload buffer
            // references) and the msghdrs the kernel may still read.
            std::mem::forget(std::mem::replace(&mut self.tx, TxSlab::new(1, 0)));
            for lane in &mut self.lanes {
                if let Ok(bufs) = Buffers::new(1, 1) {
                    let rx = std::mem::replace(
                        &mut lane.rx,
                        Rx::Single {
                            bufs,
                            slots: Box::new([]),
                        },
                    );
                    std::mem::forget(rx);
                }
            }
        }
    }
}
