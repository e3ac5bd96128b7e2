//! [`UringBackend`]: one io_uring instance and its UDP sockets: the normal
//! one and, by default, the urgent lane's on the same address (see
//! [`icx_udp::bind_urgent`]), each with its own multishot receive and
//! buffer ring, so urgent completions are set apart as they are reaped and
//! handed out first.

use crate::bufring::{BufRing, Buffers, BGID, BGID_URGENT};
use crate::config::{UringConfig, ZeroCopy, DEFAULT_ZC_THRESHOLD};
use crate::setup::{self, OpenError, SetupMode};
use crate::tx::{TxSlab, MAX_SEGS};
use icx_core::{Backend, BufferPool, Capabilities, Lane, RxDatagram, TxBatch, Wake};
use icx_udp::sys::{decode_addr, empty_storage, route_addr};
use icx_udp::{bind_socket, bind_urgent, BufferGrant, EventFd};
use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// IORING_SEND_ZC_REPORT_USAGE (6.2): the notification says whether the
/// kernel had to copy after all.
const ZC_REPORT_USAGE: u16 = 8;
/// IORING_NOTIF_USAGE_ZC_COPIED, in the notification's result.
const ZC_COPIED: u32 = 1 << 31;
/// Fragments one skb holds (MAX_SKB_FRAGS, 17 by default): a zero-copy
/// send maps each page its iovecs touch into one, and fails with EMSGSIZE
/// beyond that. A GSO train of header/payload pairs spans two or more per
/// segment, so only short trains and single jumbo frames go zero-copy.
const ZC_MAX_PAGES: u32 = 17;
/// Consecutive copied zero-copy sends after which `ZeroCopy::Auto` gives up.
const ZC_AUTO_GIVE_UP: u32 = 64;

/// Name room per received message: a sockaddr_in6 (an IPv4 peer's
/// sockaddr_in is shorter).
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Control room per received message: the UDP_GRO cmsg needs 20 bytes.
const CTRL_LEN: usize = 64;
/// struct io_uring_recvmsg_out, which a multishot recvmsg writes first.
const RECVMSG_OUT_LEN: usize = 16;
/// Single-shot receives kept posted.
const MAX_RX_SLOTS: usize = 128;
/// Budget of consecutive failed multishot re-arms before recv stops re-arming
/// within one call (the next call tries again).
const MAX_REARMS_PER_CALL: usize = 4;

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
    /// Datagrams sent from, and handed over from, the urgent socket.
    pub urgent_sent: u64,
    pub urgent_received: u64,
}

/// Log-once flags.
#[derive(Debug, Default)]
struct Warned {
    emsgsize: bool,
    send_error: bool,
    recv_error: bool,
    truncated: bool,
}

/// A completion set aside for `recv` while `send` looked for its own.
#[derive(Clone, Copy, Debug)]
struct Cqe {
    ud: u64,
    res: i32,
    flags: u32,
}

/// Where a received message lies while its datagrams are handed out.
#[derive(Clone, Copy, Debug)]
enum Token {
    Buf(u16),
    Slot(u32),
}

/// A received buffer being split into datagrams across `recv` calls.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    token: Token,
    src: SocketAddr,
    /// Payload start and length within the buffer.
    off: usize,
    len: usize,
    /// GRO segment size (0: one datagram).
    seg: usize,
    next: usize,
    handed_any: bool,
}

/// One posted single-shot receive.
struct RxSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    ctrl: [u64; CTRL_LEN / 8],
    posted: bool,
}

enum Rx {
    Multi {
        ring: BufRing,
        /// The buffer group the ring is registered as.
        bgid: u16,
        /// Template for RecvMsgMulti: only name and control lengths matter.
        msg: Box<libc::msghdr>,
        armed: bool,
        /// Ever delivered anything: an EINVAL before that means no
        /// multishot support after all.
        worked: bool,
    },
    Single {
        bufs: Buffers,
        slots: Box<[RxSlot]>,
    },
}

impl Rx {
    fn armed(&self) -> bool {
        match self {
            Rx::Multi { armed, .. } => *armed,
            Rx::Single { slots, .. } => slots.iter().any(|s| s.posted),
        }
    }

    fn is_single(&self) -> bool {
        matches!(self, Rx::Single { .. })
    }
}

// SAFETY: the raw pointers inside Rx (msghdr templates, iovecs, buffer
// addresses) point only into memory owned by the Rx value itself, which
// moves with it; the kernel reaches it through the ring, which moves along.
unsafe impl Send for Rx {}

struct ZcState {
    /// Zero-copy in use now.
    on: bool,
    /// `ZeroCopy::Auto`: may be turned off at run time.
    auto: bool,
    threshold: usize,
    copied_run: u32,
    /// Pages a zero-copy send may span; lowered if the kernel refuses.
    max_pages: u32,
}

/// One socket's receive side: its receives, the completions reaped for
/// it, and the buffer being handed out.
struct RxLane {
    socket: OwnedFd,
    rx: Rx,
    /// Receive completions set aside for `recv`.
    stash: VecDeque<Cqe>,
    cursor: Option<Cursor>,
    /// Receive buffers (their count when single-shot).
    count: usize,
}

/// Index of the normal lane in `UringBackend::lanes`; the urgent one, if
/// open, is next.
const NORMAL: usize = 0;
const URGENT: usize = 1;

fn lane_of_index(li: usize) -> Lane {
    if li == URGENT {
        Lane::Urgent
    } else {
        Lane::Normal
    }
}

/// An io_uring UDP backend: one ring, one socket per lane. See the crate docs.
pub struct UringBackend {
    // Dropped first (after `Drop::drop` drained it), so the kernel is done
    // with the memory below before it goes.
    ring: IoUring,
    /// The normal lane, then the urgent one if open. Each socket closes
    /// after the ring; the urgent one first (see `icx_udp::SocketBackend`).
    lanes: Vec<RxLane>,
    addr: SocketAddr,
    v6: bool,
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
            .field("addr", &self.addr)
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

/// The UDP_GRO segment size in a control block, 0 when there is none.
fn gro_segment(ctrl: &[u8]) -> usize {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let mut off = 0;
    while off + HDR <= ctrl.len() {
        let len_bytes = &ctrl[off..off + std::mem::size_of::<usize>()];
        let len = usize::from_ne_bytes(len_bytes.try_into().unwrap_or([0; ALIGN]));
        let lvl = i32::from_ne_bytes(
            ctrl[off + ALIGN..off + ALIGN + 4]
                .try_into()
                .unwrap_or([0; 4]),
        );
        let ty = i32::from_ne_bytes(
            ctrl[off + ALIGN + 4..off + ALIGN + 8]
                .try_into()
                .unwrap_or([0; 4]),
        );
        if len < HDR || off + len > ctrl.len() {
            break;
        }
        if lvl == setup::sol_udp() && ty == setup::UDP_GRO && len >= HDR + 2 {
            let d = &ctrl[off + HDR..off + len];
            // The kernel writes an int; older ones a u16. Both are the size.
            return if d.len() >= 4 {
                i32::from_ne_bytes(d[..4].try_into().unwrap_or([0; 4])).max(0) as usize
            } else {
                u16::from_ne_bytes(d[..2].try_into().unwrap_or([0; 2])) as usize
            };
        }
        off += len.div_ceil(ALIGN) * ALIGN;
    }
    0
}

impl UringBackend {
    /// Opens the ring and the socket, probing every feature; a fallback is
    /// logged with its reason. Fails when io_uring is unavailable: see
    /// [`open_backend`](crate::open_backend) for the plain-socket fallback.
    pub fn new(cfg: UringConfig) -> io::Result<Self> {
        Self::open(cfg).map_err(io::Error::from)
    }

    pub(crate) fn open(cfg: UringConfig) -> Result<Self, OpenError> {
        let bad = |why: String| OpenError::Other(io::Error::new(io::ErrorKind::InvalidInput, why));
        if cfg.max_batch == 0 || cfg.tx_slots == 0 || cfg.max_udp_payload == 0 {
            return Err(bad(
                "max_batch, tx_slots and max_udp_payload must be > 0".into()
            ));
        }
        let (ring, setup_mode, ops) = setup::open_ring(&cfg)?;
        if setup_mode != SetupMode::DeferTaskrun && cfg.ring_setup == crate::RingSetup::Best {
            tracing::info!(setup = %setup_mode, "io_uring: SINGLE_ISSUER|DEFER_TASKRUN unavailable, using weaker setup flags");
        }

        let scfg = cfg.socket_config();
        let sock = bind_socket(&scfg).map_err(OpenError::Other)?;
        let raw = sock.fd.as_raw_fd();
        set_blocking(raw);
        // The urgent lane's socket on the same address, configured alike.
        let urgent = if scfg.lanes() > 1 {
            match bind_urgent(&scfg, sock.addr) {
                Ok(u) => {
                    set_blocking(u.fd.as_raw_fd());
                    Some(u)
                }
                Err(e) => {
                    tracing::warn!(addr = %sock.addr, error = %e, "io_uring: no urgent lane (heartbeats share the block socket's queue)");
                    None
                }
            }
        } else {
            None
        };

        // GSO
        let gso = if !cfg.gso {
            tracing::info!("io_uring: GSO off by configuration: one datagram per frame");
            false
        } else if let Err(e) = setup::probe_gso(raw) {
            tracing::info!(error = %e, "io_uring: UDP_SEGMENT (GSO) not supported: one datagram per frame");
            false
        } else {
            true
        };
        // GRO
        let gro = if !cfg.gro {
            tracing::info!("io_uring: GRO off by configuration");
            false
        } else if let Err(e) = setup::enable_gro(raw) {
            tracing::info!(error = %e, "io_uring: UDP_GRO not supported: datagrams arrive one by one");
            false
        } else {
            true
        };
        if let (true, Some(u)) = (gro, &urgent) {
            // GRO on the urgent socket too: a NIC's GRO looks the socket up
            // by the flow hash alone, and would not coalesce a block flow
            // that hashes to a socket without it.
            if let Err(e) = setup::enable_gro(u.fd.as_raw_fd()) {
                tracing::debug!(error = %e, "io_uring: UDP_GRO refused on the urgent socket");
            }
        }
        let rx_payload = cfg.rx_payload(gro);
        let rx_count = cfg.rx_count(gro);

        // Receive path
        let mut multishot = cfg.multishot;
        if !cfg.multishot {
            tracing::info!(
                "io_uring: multishot receive off by configuration: single-shot receives"
            );
        } else if !ops.multishot_recvmsg {
            tracing::info!(
                "io_uring: kernel older than 6.0 (no multishot RECVMSG): single-shot receives"
            );
            multishot = false;
        }
        let rx = Self::lane_rx(&ring, &mut multishot, rx_count, rx_payload, BGID)?;
        let mut lanes = vec![RxLane {
            socket: sock.fd,
            rx,
            stash: VecDeque::new(),
            cursor: None,
            count: rx_count,
        }];
        if let Some(u) = urgent {
            let rx = Self::lane_rx(
                &ring,
                &mut multishot,
                URGENT_RX_BUFFERS,
                rx_payload,
                BGID_URGENT,
            )?;
            lanes.push(RxLane {
                socket: u.fd,
                rx,
                stash: VecDeque::new(),
                cursor: None,
                count: URGENT_RX_BUFFERS,
            });
        }

        // Zero copy
        let (zc_on, auto, threshold) = match cfg.zero_copy {
            ZeroCopy::Off => {
                tracing::info!("io_uring: SEND_ZC off by configuration: copying sends");
                (false, false, usize::MAX)
            }
            ZeroCopy::Auto => (true, true, DEFAULT_ZC_THRESHOLD),
            ZeroCopy::Threshold(t) => (true, false, t),
        };
        let zc_on = if zc_on && !ops.sendmsg_zc {
            tracing::info!("io_uring: kernel without SENDMSG_ZC (older than 6.1): copying sends");
            false
        } else {
            zc_on
        };

        let cq = ring.params().cq_entries() as usize;
        // Room for every completion the CQ can hold, in any lane: reaping
        // never allocates.
        for l in &mut lanes {
            l.stash.reserve(cq);
        }
        let features = Features {
            setup: setup_mode,
            multishot,
            gso,
            gro,
            zero_copy: zc_on,
            zc_threshold: threshold,
            registered_buffers: false,
            busy_poll: cfg.busy_poll,
        };
        tracing::debug!(addr = %sock.addr, ?features, lanes = lanes.len(), "io_uring backend bound");
        Ok(UringBackend {
            disabled: setup_mode == SetupMode::DeferTaskrun,
            ring,
            lanes,
            addr: sock.addr,
            v6: sock.addr.is_ipv6(),
            features,
            rx_payload,
            tx: TxSlab::new(cfg.tx_slots, cfg.tx_frames),
            zc: ZcState {
                on: zc_on,
                auto,
                threshold,
                copied_run: 0,
                max_pages: ZC_MAX_PAGES,
            },
            stash_cap: cq,
            started: false,
            wake: OnceLock::new(),
            wake_armed: false,
            pool: None,
            stats: UringStats {
                recv_buffer: sock.recv_buffer,
                send_buffer: sock.send_buffer,
                ..UringStats::default()
            },
            warned: Warned::default(),
            cfg,
        })
    }

    /// A lane's receive side: multishot over a provided-buffer ring of
    /// group `bgid` when `multishot` (cleared, logged, if the kernel refuses
    /// the ring), else single-shot slots.
    fn lane_rx(
        ring: &IoUring,
        multishot: &mut bool,
        count: usize,
        payload: usize,
        bgid: u16,
    ) -> Result<Rx, OpenError> {
        if *multishot {
            let buf_size = RECVMSG_OUT_LEN + NAME_LEN + CTRL_LEN + payload;
            let ring_bufs = Buffers::new(count, buf_size)
                .and_then(BufRing::new)
                .map_err(OpenError::Other)?;
            match ring_bufs.register(&ring.submitter(), bgid) {
                Ok(()) => {
                    // SAFETY: msghdr is plain old data; zeroes are valid.
                    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
                    msg.msg_namelen = NAME_LEN as _;
                    msg.msg_controllen = CTRL_LEN as _;
                    return Ok(Rx::Multi {
                        ring: ring_bufs,
                        bgid,
                        msg,
                        armed: false,
                        worked: false,
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "io_uring: provided-buffer ring refused (kernel older than 5.19): single-shot receives");
                    *multishot = false;
                }
            }
        }
        Self::single_rx(count, payload).map_err(OpenError::Other)
    }

    fn single_rx(count: usize, payload: usize) -> io::Result<Rx> {
        let n = count.min(MAX_RX_SLOTS);
        let bufs = Buffers::new(n, payload)?;
        let slots = (0..n)
            .map(|_| RxSlot {
                // SAFETY: msghdr is plain old data; zeroes are valid.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                addr: empty_storage(),
                ctrl: [0; CTRL_LEN / 8],
                posted: false,
            })
            .collect();
        Ok(Rx::Single { bufs, slots })
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

    /// Whether the urgent lane's socket is open.
    pub fn has_urgent_lane(&self) -> bool {
        self.lanes.len() > URGENT
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

    /// Posts the receive(s) not currently posted, on every lane.
    fn arm_rx(&mut self) -> io::Result<()> {
        for li in 0..self.lanes.len() {
            self.arm_lane(li)?;
        }
        Ok(())
    }

    fn arm_lane(&mut self, li: usize) -> io::Result<()> {
        let Self {
            ring, lanes, stats, ..
        } = self;
        let lane = &mut lanes[li];
        let fd = Fd(lane.socket.as_raw_fd());
        let tag = (li as u64) << LANE_SHIFT;
        match &mut lane.rx {
            Rx::Multi {
                msg, armed, bgid, ..
            } => {
                if !*armed {
                    let e = opcode::RecvMsgMulti::new(fd, &**msg as *const libc::msghdr, *bgid)
                        .build()
                        .user_data(UD_RX_MULTI | tag);
                    // SAFETY: the msghdr template is boxed inside the lane's
                    // `rx` and lives until the ring is drained in Drop; the
                    // buffers come from the lane's registered buffer ring.
                    unsafe { push_sqe(ring, &e, stats)? };
                    *armed = true;
                }
            }
            Rx::Single { bufs, slots } => {
                for (i, s) in slots.iter_mut().enumerate() {
                    if s.posted {
                        continue;
                    }
                    s.iov = libc::iovec {
                        iov_base: bufs.ptr(i).cast(),
                        iov_len: bufs.size(),
                    };
                    s.msg.msg_name = (&mut s.addr as *mut libc::sockaddr_storage).cast();
                    s.msg.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    s.msg.msg_iov = &mut s.iov;
                    s.msg.msg_iovlen = 1;
                    s.msg.msg_control = s.ctrl.as_mut_ptr().cast();
                    s.msg.msg_controllen = CTRL_LEN as _;
                    s.msg.msg_flags = 0;
                    let e = opcode::RecvMsg::new(fd, &mut s.msg)
                        .build()
                        .user_data(UD_RX_SLOT | tag | i as u64);
                    // SAFETY: the slot's msghdr, iovec, address, control
                    // block and buffer all live in the lane's `rx` (boxed
                    // slices and a mapping that do not move) until Drop drains.
                    unsafe { push_sqe(ring, &e, stats)? };
                    s.posted = true;
                }
            }
        }
        Ok(())
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
            addr,
            wake,
            wake_armed,
            ..
        } = self;
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

    /// Hands out datagrams of the current cursor; returns true when it is used up.
    fn drain_cursor(
        &mut self,
        li: usize,
        max: usize,
        handed: &mut usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> bool {
        let lane = lane_of_index(li);
        let Some(mut c) = self.lanes[li].cursor else {
            return true;
        };
        let data: &[u8] = match (&self.lanes[li].rx, c.token) {
            (Rx::Multi { ring, .. }, Token::Buf(bid)) => ring.bufs.get(bid as usize, c.off + c.len),
            (Rx::Single { bufs, .. }, Token::Slot(i)) => bufs.get(i as usize, c.off + c.len),
            _ => &[],
        };
        let data = data.get(c.off..).unwrap_or(&[]);
        if c.len == 0 && !c.handed_any && *handed < max {
            f(RxDatagram {
                src: c.src,
                lane,
                link: 0,
                data: &[],
            });
            c.handed_any = true;
            *handed += 1;
        }
        while *handed < max && c.next < c.len.min(data.len()) {
            let rest = c.len - c.next;
            let l = if c.seg == 0 { rest } else { c.seg.min(rest) };
            f(RxDatagram {
                src: c.src,
                lane,
                link: 0,
                data: &data[c.next..c.next + l],
            });
            c.next += l;
            c.handed_any = true;
            *handed += 1;
        }
        let done = c.next >= c.len.min(data.len()) && (c.len != 0 || c.handed_any);
        if done {
            if c.seg != 0 && c.len > c.seg {
                self.stats.gro_buffers += 1;
            }
            self.recycle(li, c.token);
            self.lanes[li].cursor = None;
        } else {
            self.lanes[li].cursor = Some(c);
        }
        done
    }

    /// Gives a receive buffer back to the kernel.
    fn recycle(&mut self, li: usize, token: Token) {
        match (&mut self.lanes[li].rx, token) {
            (Rx::Multi { ring, .. }, Token::Buf(bid)) => {
                ring.push(bid);
                ring.commit();
            }
            (Rx::Single { slots, .. }, Token::Slot(i)) => {
                if let Some(s) = slots.get_mut(i as usize) {
                    s.posted = false;
                }
            }
            _ => {}
        }
    }

    /// Turns one receive completion into a cursor (or a counted drop).
    fn take_rx(&mut self, li: usize, c: Cqe) -> io::Result<()> {
        match c.ud & !INDEX_MASK {
            UD_RX_MULTI => self.take_multi(li, c),
            UD_RX_SLOT => {
                self.take_slot(li, c);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn take_multi(&mut self, li: usize, c: Cqe) -> io::Result<()> {
        let Rx::Multi {
            ring,
            bgid,
            msg,
            armed,
            worked,
        } = &mut self.lanes[li].rx
        else {
            return Ok(());
        };
        if !cqueue::more(c.flags) {
            *armed = false;
            self.stats.rearms += 1;
        }
        if c.res < 0 {
            let err = -c.res;
            if let Some(bid) = cqueue::buffer_select(c.flags) {
                ring.push(bid);
                ring.commit();
            }
            match err {
                libc::ENOBUFS => self.stats.enobufs += 1,
                libc::EINVAL if !*worked && !*armed => {
                    tracing::info!("io_uring: multishot RECVMSG refused (EINVAL): falling back to single-shot receives");
                    let group = *bgid;
                    let count = self.lanes[li].count;
                    let _ = self.ring.submitter().unregister_buf_ring(group);
                    self.lanes[li].rx = Self::single_rx(count, self.rx_payload)?;
                    self.features.multishot = false;
                }
                libc::ECANCELED => {}
                _ => {
                    self.stats.recv_errors += 1;
                    if !std::mem::replace(&mut self.warned.recv_error, true) {
                        tracing::warn!(addr = %self.addr, error = %io::Error::from_raw_os_error(err), "io_uring: receive error; further ones are only counted");
                    }
                }
            }
            return Ok(());
        }
        let Some(bid) = cqueue::buffer_select(c.flags) else {
            self.stats.recv_errors += 1;
            return Ok(());
        };
        *worked = true;
        let buf = ring.bufs.get(bid as usize, c.res as usize);
        let parsed = RecvMsgOut::parse(buf, msg).ok().and_then(|out| {
            if out.is_payload_truncated() {
                return Some(Err(()));
            }
            let mut ss = empty_storage();
            let name = out.name_data();
            let n = name
                .len()
                .min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: `ss` is a live sockaddr_storage and `n` is at most its
            // size; the source is a byte slice of at least `n` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                    n,
                )
            };
            let src = decode_addr(&ss, n as libc::socklen_t)?;
            let seg = gro_segment(out.control_data());
            let off = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
            Some(Ok((src, seg, off, out.payload_data().len())))
        });
        match parsed {
            Some(Ok((src, seg, off, len))) => {
                self.lanes[li].cursor = Some(Cursor {
                    token: Token::Buf(bid),
                    src,
                    off,
                    len,
                    seg,
                    next: 0,
                    handed_any: false,
                });
            }
            Some(Err(())) => {
                ring.push(bid);
                ring.commit();
                self.count_truncated();
            }
            None => {
                ring.push(bid);
                ring.commit();
                self.stats.recv_errors += 1;
            }
        }
        Ok(())
    }

    fn take_slot(&mut self, li: usize, c: Cqe) {
        let i = (c.ud & SLOT_MASK) as u32;
        let Rx::Single { slots, .. } = &mut self.lanes[li].rx else {
            return;
        };
        let Some(s) = slots.get_mut(i as usize) else {
            return;
        };
        if c.res < 0 {
            s.posted = false;
            if c.res != -libc::ECANCELED {
                self.stats.recv_errors += 1;
                if !std::mem::replace(&mut self.warned.recv_error, true) {
                    tracing::warn!(addr = %self.addr, error = %io::Error::from_raw_os_error(-c.res), "io_uring: receive error; further ones are only counted");
                }
            }
            return;
        }
        if s.msg.msg_flags & libc::MSG_TRUNC != 0 {
            s.posted = false;
            self.count_truncated();
            return;
        }
        let Some(src) = decode_addr(&s.addr, s.msg.msg_namelen) else {
            s.posted = false;
            self.stats.recv_errors += 1;
            return;
        };
        let clen: usize = CTRL_LEN.min(s.msg.msg_controllen as _);
        // SAFETY: `ctrl` is a live [u64; CTRL_LEN / 8], viewed as its bytes.
        let ctrl = unsafe { std::slice::from_raw_parts(s.ctrl.as_ptr().cast::<u8>(), clen) };
        let seg = gro_segment(ctrl);
        self.lanes[li].cursor = Some(Cursor {
            token: Token::Slot(i),
            src,
            off: 0,
            len: c.res as usize,
            seg,
            next: 0,
            handed_any: false,
        });
    }

    fn count_truncated(&mut self) {
        self.stats.truncated += 1;
        if !std::mem::replace(&mut self.warned.truncated, true) {
            tracing::warn!(
                addr = %self.addr, room = self.rx_payload,
                "io_uring: datagram longer than a receive buffer, dropped; further ones are only counted"
            );
        }
    }

    /// Hands out what lane `li` holds until `handed` reaches `max`: the
    /// buffer being split, then its set-aside completions, reaping (and,
    /// once, running deferred task work) for more when they run out.
    fn recv_lane(
        &mut self,
        li: usize,
        max: usize,
        handed: &mut usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<()> {
        // With an urgent lane, `recv` ran the task work just before.
        let mut flushed = self.has_urgent_lane();
        let mut rearms = 0;
        while *handed < max {
            if !self.drain_cursor(li, max, handed, f) {
                break;
            }
            if let Some(c) = self.lanes[li].stash.pop_front() {
                self.take_rx(li, c)?;
                continue;
            }
            // Re-arm before looking for more, so data can keep landing.
            let rx = &self.lanes[li].rx;
            if (!rx.armed() || rx.is_single()) && rearms < MAX_REARMS_PER_CALL {
                self.arm_lane(li)?;
                rearms += 1;
            }
            self.reap();
            if !self.lanes[li].stash.is_empty() {
                continue;
            }
            if flushed {
                break;
            }
            self.flush_taskrun()?;
            flushed = true;
            self.reap();
            if self.lanes[li].stash.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Whether every lane has a receive posted.
    fn rx_armed(&self) -> bool {
        self.lanes.iter().all(|l| l.rx.armed())
    }

    /// Whether any lane has a receive posted.
    fn any_rx_armed(&self) -> bool {
        self.lanes.iter().any(|l| l.rx.armed())
    }

    /// Drops the frame at the front of `batch`, counting why.
    fn drop_front(&mut self, batch: &mut TxBatch, errno: i32) {
        if let Some(f) = batch.pop_front() {
            note_send_error(
                &mut self.stats,
                &mut self.warned,
                self.addr,
                Some(f.dst),
                1,
                errno,
            );
        }
    }
}

fn note_send_error(
    stats: &mut UringStats,
    warned: &mut Warned,
    src: SocketAddr,
    dst: Option<SocketAddr>,
    n: u64,
    errno: i32,
) {
    if errno == libc::EMSGSIZE {
        stats.emsgsize += n;
        if !std::mem::replace(&mut warned.emsgsize, true) {
            tracing::warn!(
                %src, ?dst, datagrams = n,
                "io_uring: datagram larger than the path MTU refused (DF set, never \
                 fragmented) and dropped; check the MTU configured for this peer. \
                 Further ones are only counted"
            );
        }
    } else {
        stats.send_errors += n;
        if !std::mem::replace(&mut warned.send_error, true) {
            tracing::warn!(
                %src, ?dst, datagrams = n, error = %io::Error::from_raw_os_error(errno),
                "io_uring: send failed, datagrams dropped; further send errors are only counted"
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn complete_tx(
    tx: &mut TxSlab,
    zc: &mut ZcState,
    stats: &mut UringStats,
    warned: &mut Warned,
    features: &mut Features,
    src: SocketAddr,
    si: u32,
    res: i32,
    flags: u32,
) {
    let Some(slot) = tx.slot_mut(si) else { return };
    if cqueue::notif(flags) {
        slot.notif_pending = false;
        if res as u32 & ZC_COPIED != 0 {
            stats.zc_copied += 1;
            zc.copied_run += 1;
            if zc.auto && zc.on && zc.copied_run >= ZC_AUTO_GIVE_UP {
                zc.on = false;
                features.zero_copy = false;
                tracing::info!(
                    copied = zc.copied_run,
                    "io_uring: the kernel copied every zero-copy send (loopback, or a device \
                     without scatter-gather): SEND_ZC turned off, sends copy"
                );
            }
        } else {
            zc.copied_run = 0;
        }
    } else {
        slot.cqe_pending = false;
        if slot.zc && !cqueue::more(flags) {
            slot.notif_pending = false;
        }
        let n = u64::from(slot.n_frames);
        if res >= 0 {
            stats.sent += n;
            if slot.gso {
                stats.gso_sends += 1;
                stats.gso_segments += n;
            }
            if slot.zc {
                stats.zc_sends += 1;
            }
        } else {
            let errno = -res;
            let (was_gso, was_zc, pages) = (slot.gso, slot.zc, slot.pages);
            if was_zc && errno == libc::EMSGSIZE {
                // Not the path MTU: more pages than one skb's fragments.
                stats.send_errors += n;
                if zc.max_pages > 4 {
                    zc.max_pages = (pages / 2).clamp(4, zc.max_pages - 1);
                    tracing::info!(pages, limit = zc.max_pages, "io_uring: zero-copy send spanning too many pages refused (EMSGSIZE): lowering the zero-copy page limit");
                }
            } else {
                note_send_error(stats, warned, src, None, n, errno);
            }
            if was_zc && errno == libc::EINVAL && zc.on && stats.zc_sends == 0 {
                zc.on = false;
                features.zero_copy = false;
                tracing::info!("io_uring: SENDMSG_ZC refused (EINVAL; kernel older than 6.2 lacks usage reports): copying sends");
            } else if was_gso
                && matches!(errno, libc::EINVAL | libc::EIO | libc::EOPNOTSUPP)
                && features.gso
            {
                features.gso = false;
                tracing::info!(error = %io::Error::from_raw_os_error(errno), "io_uring: GSO send refused by the kernel or device: one datagram per frame from now on");
            }
        }
    }
    tx.release_if_done(si);
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
        self.addr
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
        self.start()?;
        let limit = self.cfg.max_batch;
        let max_segs = if self.features.gso {
            self.cfg.max_gso_segments.clamp(1, MAX_SEGS)
        } else {
            1
        };
        let max_bytes = icx_core::max_udp_payload(icx_core::MAX_IP_MTU, self.v6);
        let normal_fd = Fd(self.lanes[NORMAL].socket.as_raw_fd());
        let urgent_fd = self.lanes.get(URGENT).map(|l| Fd(l.socket.as_raw_fd()));
        let mut taken = 0;
        let mut queued = 0;
        let mut reaped = false;
        while taken < limit {
            let Some(first) = batch.front() else { break };
            let Some(dst) = route_addr(first.dst, self.v6) else {
                self.drop_front(batch, libc::EAFNOSUPPORT);
                taken += 1;
                continue;
            };
            let seg = first.len();
            let lane = first.lane;
            let (mut n, mut total) = (1usize, seg);
            if seg > 0 {
                while n < max_segs && taken + n < limit {
                    let Some(f) = batch.get(n) else { break };
                    let l = f.len();
                    // A train never mixes lanes: over loopback it reaches
                    // the receiver whole and is steered by its first frame.
                    if f.dst != first.dst
                        || f.lane != lane
                        || l > seg
                        || l == 0
                        || total + l > max_bytes
                    {
                        break;
                    }
                    n += 1;
                    total += l;
                    if l < seg {
                        break;
                    }
                }
            }
            if !self.tx.has_room(n) {
                if !reaped {
                    self.flush_taskrun()?;
                    self.reap();
                    reaped = true;
                }
                if !self.tx.has_room(n) {
                    self.stats.tx_full += 1;
                    break;
                }
            }
            let gso = (n > 1).then_some(seg as u16);
            let fd = match (lane, urgent_fd) {
                (Lane::Urgent, Some(u)) => {
                    self.stats.urgent_sent += n as u64;
                    u
                }
                _ => normal_fd,
            };
            let si = self.tx.fill(dst, batch.range_mut(..n), gso);
            batch.drain(..n);
            let slot = self.tx.slot_mut(si).expect("slot just filled");
            let zc = self.zc.on && total >= self.zc.threshold && slot.pages <= self.zc.max_pages;
            slot.zc = zc;
            slot.notif_pending = zc;
            let msg = &slot.msg as *const libc::msghdr;
            let e = if zc {
                opcode::SendMsgZc::new(fd, msg)
                    .ioprio(ZC_REPORT_USAGE)
                    .build()
            } else {
                opcode::SendMsg::new(fd, msg).build()
            }
            .user_data(UD_TX | u64::from(si));
            // SAFETY: the msghdr, its iovecs, address and cmsg live in the
            // slab slot, and the frames they point at (headers inline, payloads
            // in pool buffers held by SharedBuf) are owned by the slab, until
            // complete_tx sees the completion and, for SEND_ZC, the
            // notification; Drop drains or leaks them.
            unsafe { push_sqe(&mut self.ring, &e, &mut self.stats)? };
            self.stats.send_ops += 1;
            taken += n;
            queued += 1;
        }
        if queued > 0 {
            self.submit()?;
        }
        Ok(taken)
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
        let mut urgent = 0;
        if self.has_urgent_lane() {
            self.recv_lane(URGENT, max, &mut handed, f)?;
            urgent = handed;
        }
        self.recv_lane(NORMAL, max, &mut handed, f)?;
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
        self.recv_lane(URGENT, max, &mut handed, f)?;
        if self.lanes[URGENT].rx.is_single() || !self.lanes[URGENT].rx.armed() {
            self.arm_lane(URGENT)?;
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

/// The normal lane's socket.
impl AsRawFd for UringBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.lanes[NORMAL].socket.as_raw_fd()
    }
}

/// The normal lane's socket.
impl AsFd for UringBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.lanes[NORMAL].socket.as_fd()
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
