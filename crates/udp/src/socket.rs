//! [`SocketBackend`]: a non-blocking kernel UDP socket, batched with
//! `sendmmsg`/`recvmmsg`, and by default a second one on the same address
//! for the urgent lane ([`Lane`]).
//!
//! The urgent socket joins the first one's SO_REUSEPORT group, and the
//! group's classic-BPF steering program ([`sys::steering_program`]) puts
//! every frame of the urgent lane (ack-only frames, the heartbeat and
//! control channels) into it, by the kind and channel bytes of the icx
//! header. So a peer sends everything to one address, whether or not it has
//! an urgent lane itself, and heartbeats never queue behind block frames in
//! a receive buffer; `recv` drains the urgent socket first. Frames of the
//! urgent lane leave from the urgent socket, so a send buffer full of
//! blocks does not hold them back either.
//!
//! It is the floor every host has: the fallback when io_uring is missing or
//! refused, and the baseline the faster backends are measured against in the
//! same run. It never lets a failure mode of seed 002 hide: DF is always set
//! (a datagram over the path MTU is refused with EMSGSIZE and counted, never
//! fragmented by IP), a socket buffer the kernel clamped is logged with the
//! sysctl to raise, and truncated receives are counted, not delivered.

use crate::sys::{self, decode_addr, empty_mmsghdr, empty_storage, encode_addr, route_addr};
use icx_core::{
    max_udp_payload, Backend, Capabilities, Lane, RxDatagram, TxBatch, Wake, MAX_IP_MTU,
};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Socket buffer requested by default, each way: a few window's worth, so a
/// burst does not overflow the receive queue (seed 002, cause 2).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams per `sendmmsg`/`recvmmsg` call by default.
pub(crate) const DEFAULT_MAX_BATCH: usize = 64;
/// Receive slot size by default: holds any UDP datagram, so nothing sent
/// within `max_udp_payload` is ever truncated.
pub(crate) const DEFAULT_RX_BUF_SIZE: usize = 64 << 10;
/// The kernel's cap on messages per `sendmmsg`/`recvmmsg` call (UIO_MAXIOV).
const MAX_MMSG: usize = 1024;
/// Failed receive calls tolerated in one `recv` before it gives up for now;
/// each consumes a pending socket error, so this only bounds a storm.
const MAX_RECV_ERRORS_PER_CALL: usize = 8;

/// How to open a [`SocketBackend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// SO_RCVBUF to request, in bytes (0: keep the kernel default).
    pub recv_buffer: usize,
    /// SO_SNDBUF to request, in bytes (0: keep the kernel default).
    pub send_buffer: usize,
    /// Try SO_RCVBUFFORCE/SO_SNDBUFFORCE first, which pass the sysctl caps
    /// but need CAP_NET_ADMIN; without it the plain options are used.
    pub force_buffers: bool,
    /// Set SO_REUSEPORT so one socket per core can share the port.
    pub reuse_port: bool,
    /// Largest UDP payload advertised to the driver, which refuses peers
    /// whose MTU needs more. Not enforced here: with DF set, the kernel is
    /// the judge of what fits the path, and says so with EMSGSIZE.
    pub max_udp_payload: usize,
    /// Datagrams per `sendmmsg`/`recvmmsg` call, 1..=1024.
    pub max_batch: usize,
    /// Bytes per receive slot; longer datagrams are counted as truncated and
    /// dropped. `max_batch` slots are allocated once, at bind.
    pub rx_buf_size: usize,
    /// With SO_REUSEPORT, have the kernel deliver each datagram to the
    /// socket of the core owning its sender, as `owner_core(node, n)` for
    /// this many cores (0: off, the kernel's flow hash picks). Core k's
    /// socket must be the k-th to bind ([`sys::steering_program`]; with
    /// an urgent lane, core k's two sockets are the (2k)-th and next).
    pub steer_cores: usize,
    /// Open a second socket on the same address for the urgent lane
    /// (needs `reuse_port`). If it cannot be bound, or the kernel refuses
    /// the steering program that feeds it, the backend runs with one
    /// socket (logged).
    pub urgent_lane: bool,
}

impl SocketConfig {
    /// Defaults for `addr`: 4 MiB buffers each way (forced when allowed),
    /// SO_REUSEPORT, the family's largest payload (the UDP payload of a
    /// 65,535-byte IP packet: 65,507 B over IPv4, 65,487 B over IPv6),
    /// batches of 64.
    pub fn new(addr: SocketAddr) -> Self {
        SocketConfig {
            addr,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            force_buffers: true,
            reuse_port: true,
            max_udp_payload: max_udp_payload(MAX_IP_MTU, addr.is_ipv6()),
            max_batch: DEFAULT_MAX_BATCH,
            rx_buf_size: DEFAULT_RX_BUF_SIZE,
            steer_cores: 0,
            urgent_lane: true,
        }
    }

    /// Sockets per core in the port's SO_REUSEPORT group: 2 with an urgent
    /// lane (which needs SO_REUSEPORT), else 1.
    pub fn lanes(&self) -> usize {
        if self.urgent_lane && self.reuse_port {
            2
        } else {
            1
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if self.max_batch == 0 || self.max_batch > MAX_MMSG {
            return bad(format!(
                "max_batch {} not in 1..={MAX_MMSG}",
                self.max_batch
            ));
        }
        if self.rx_buf_size == 0 || self.rx_buf_size > u32::MAX as usize {
            return bad(format!("rx_buf_size {} out of range", self.rx_buf_size));
        }
        if self.max_udp_payload == 0 {
            return bad("max_udp_payload must be > 0".into());
        }
        Ok(())
    }
}

/// A socket buffer size: what was asked for and what the kernel granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferGrant {
    pub requested: usize,
    /// As read back with getsockopt, halved: Linux doubles the value to
    /// cover its bookkeeping, and the halved one compares with `requested`.
    pub granted: usize,
    /// Granted through SO_*BUFFORCE, past the sysctl cap.
    pub forced: bool,
}

impl BufferGrant {
    /// The kernel gave less than was asked (net.core.{r,w}mem_max).
    pub fn clamped(&self) -> bool {
        self.granted < self.requested
    }
}

/// What the backend has seen. Datagram counts, except `eagain` (refused
/// calls) and `send_calls`/`recv_calls` (syscalls made). Totals over both
/// sockets, and the urgent socket's share apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Datagrams handed to a `recv` callback.
    pub received: u64,
    /// Sends refused with EAGAIN/ENOBUFS (send buffer full); the frames stay
    /// in the batch.
    pub eagain: u64,
    /// Datagrams refused with EMSGSIZE (over the path MTU, DF set), dropped.
    pub emsgsize: u64,
    /// Datagrams dropped for any other send error (ECONNREFUSED left by an
    /// ICMP port unreachable, EPERM from a firewall, an unreachable family).
    pub send_errors: u64,
    /// Failed receive calls other than "nothing to read".
    pub recv_errors: u64,
    /// Datagrams longer than a receive slot, dropped.
    pub truncated: u64,
    pub send_calls: u64,
    pub recv_calls: u64,
    pub recv_buffer: BufferGrant,
    pub send_buffer: BufferGrant,
    /// Datagrams sent from, and handed over from, the urgent socket.
    pub urgent_sent: u64,
    pub urgent_received: u64,
}

/// Log-once flags: the first occurrence is a warning with details, the rest
/// only counters, so a misconfigured peer cannot flood the log.
#[derive(Debug, Default)]
struct Warned {
    emsgsize: bool,
    send_error: bool,
    truncated: bool,
    recv_error: bool,
}

/// Scratch for `sendmmsg`: one header, two iovecs (icx header, payload slice)
/// and one address per datagram, allocated once at bind.
struct TxArrays {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    addrs: Vec<libc::sockaddr_storage>,
}

/// Scratch for `recvmmsg`: `max_batch` slots of `slot` bytes in one
/// allocation, with their headers, iovecs and source addresses.
struct RxArrays {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    buf: Box<[u8]>,
    slot: usize,
}

// SAFETY: the raw pointers inside these arrays are scratch. Every one is
// rewritten just before the syscall that reads it and is never dereferenced
// by Rust code; they point only into the arrays' own heap memory or into
// frames borrowed for the length of one `send` call. Moving the arrays to
// another thread therefore moves nothing that is shared.
unsafe impl Send for TxArrays {}
// SAFETY: as for TxArrays.
unsafe impl Send for RxArrays {}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl TxArrays {
    fn new(n: usize) -> Self {
        TxArrays {
            msgs: (0..n).map(|_| empty_mmsghdr()).collect(),
            iovs: vec![[EMPTY_IOV; 2]; n],
            addrs: (0..n).map(|_| empty_storage()).collect(),
        }
    }

    /// Describes up to `want` frames from the front of `batch`, stopping
    /// before the first whose address this socket's family cannot reach,
    /// or (with `lane`) the first of another lane. The iovecs point into
    /// the frames: no byte is copied in user space.
    fn prepare(&mut self, batch: &TxBatch, want: usize, v6: bool, lane: Option<Lane>) -> usize {
        let mut n = 0;
        for frame in batch.iter().take(want.min(self.msgs.len())) {
            if lane.is_some_and(|l| l != frame.lane) {
                break;
            }
            let Some(dst) = route_addr(frame.dst, v6) else {
                break;
            };
            let namelen = encode_addr(dst, &mut self.addrs[n]);
            let (h, p) = (frame.header.as_slice(), frame.payload.as_slice());
            // The kernel only reads through these; `*mut` is iovec's type.
            self.iovs[n] = [
                libc::iovec {
                    iov_base: h.as_ptr() as *mut libc::c_void,
                    iov_len: h.len(),
                },
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                },
            ];
            let m = &mut self.msgs[n];
            m.msg_len = 0;
            m.msg_hdr.msg_namelen = namelen;
            m.msg_hdr.msg_iovlen = if p.is_empty() { 1 } else { 2 };
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            n += 1;
        }
        // Pointers last, from one base each, so no later borrow of an
        // element can invalidate them.
        let (addrs, iovs) = (self.addrs.as_mut_ptr(), self.iovs.as_mut_ptr());
        for (i, m) in self.msgs[..n].iter_mut().enumerate() {
            m.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            m.msg_hdr.msg_iov = iovs.wrapping_add(i).cast();
        }
        n
    }
}

impl RxArrays {
    fn new(n: usize, slot: usize) -> Self {
        RxArrays {
            msgs: (0..n).map(|_| empty_mmsghdr()).collect(),
            iovs: vec![EMPTY_IOV; n],
            addrs: (0..n).map(|_| empty_storage()).collect(),
            // Zeroed, so the allocator hands out untouched pages: a slot
            // costs memory only once a datagram that long has landed in it.
            buf: vec![0u8; n * slot].into_boxed_slice(),
            slot,
        }
    }

    /// Points the first `n` headers at their slots and resets what the
    /// kernel overwrites (address length, flags).
    fn prepare(&mut self, n: usize) {
        let (buf, addrs, iovs) = (
            self.buf.as_mut_ptr(),
            self.addrs.as_mut_ptr(),
            self.iovs.as_mut_ptr(),
        );
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: buf.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            };
        }
        for (i, m) in self.msgs[..n].iter_mut().enumerate() {
            m.msg_len = 0;
            m.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iovs.wrapping_add(i);
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
        }
    }
}

/// One of the backend's sockets with its syscall scratch.
struct Sock {
    fd: OwnedFd,
    tx: TxArrays,
    rx: RxArrays,
    /// The last send hit EAGAIN: `wait` then also wakes for send room, so
    /// refused frames go out as soon as the kernel drains the buffer.
    tx_blocked: bool,
}

/// Plain UDP sockets as an icx [`Backend`]: the normal one, and the urgent
/// lane's on the same address.
pub struct SocketBackend {
    // Declared (so closed) before `normal`: a group that loses both then
    // shifts its later members into the freed slots in order, keeping a
    // core's normal socket before its urgent one.
    urgent: Option<Sock>,
    normal: Sock,
    addr: SocketAddr,
    v6: bool,
    caps: Capabilities,
    /// The owner steering it was bound with (`SocketConfig::steer_cores`).
    steer_cores: usize,
    stats: SocketStats,
    warned: Warned,
    /// Created by the first [`Backend::waker`] call; `wait` then also polls it.
    wake: OnceLock<Option<Arc<crate::EventFd>>>,
}

impl fmt::Debug for SocketBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketBackend")
            .field("fd", &self.normal.fd.as_raw_fd())
            .field("urgent_fd", &self.urgent.as_ref().map(|u| u.fd.as_raw_fd()))
            .field("addr", &self.addr)
            .field("caps", &self.caps)
            .field("stats", &self.stats)
            .finish()
    }
}

fn with_context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Requests a socket buffer size and reports what the kernel granted,
/// warning when it clamped the request.
fn set_buffer(fd: RawFd, recv: bool, requested: usize, force: bool) -> io::Result<BufferGrant> {
    let (opt, force_opt, sysctl, what) = if recv {
        (
            libc::SO_RCVBUF,
            libc::SO_RCVBUFFORCE,
            "net.core.rmem_max",
            "receive",
        )
    } else {
        (
            libc::SO_SNDBUF,
            libc::SO_SNDBUFFORCE,
            "net.core.wmem_max",
            "send",
        )
    };
    let mut forced = false;
    if requested > 0 {
        // The kernel doubles the value and keeps it below INT_MAX.
        let val = requested.min(i32::MAX as usize / 2) as libc::c_int;
        if force {
            match sys::set_int(fd, libc::SOL_SOCKET, force_opt, val) {
                Ok(()) => forced = true,
                Err(e) => {
                    tracing::debug!(error = %e, "SO_{}BUFFORCE refused (needs CAP_NET_ADMIN); using the capped option", if recv { "RCV" } else { "SND" })
                }
            }
        }
        if !forced {
            sys::set_int(fd, libc::SOL_SOCKET, opt, val)
                .map_err(|e| with_context(e, format_args!("set {what} buffer to {requested}")))?;
        }
    }
    let granted = sys::get_int(fd, libc::SOL_SOCKET, opt)? as usize / 2;
    let g = BufferGrant {
        requested,
        granted,
        forced,
    };
    if g.clamped() {
        tracing::warn!(
            requested,
            granted,
            sysctl,
            "socket {what} buffer clamped by the kernel: bursts beyond it are dropped \
             (the 'UDP buffer overflow' cause of 'gc block lost'); raise it with \
             `sysctl -w {sysctl}={requested}` or run with CAP_NET_ADMIN"
        );
    }
    Ok(g)
}

/// A configured, bound UDP socket: what [`bind_socket`] hands back.
#[derive(Debug)]
pub struct BoundSocket {
    pub fd: OwnedFd,
    /// The address actually bound (the chosen port when 0 was asked for).
    pub addr: SocketAddr,
    pub recv_buffer: BufferGrant,
    pub send_buffer: BufferGrant,
}

/// Opens, configures and binds a non-blocking UDP socket the way every icx
/// socket backend must: DF set (`IP(V6)_PMTUDISC_DO`), socket buffers sized
/// from `cfg` with a warning when the kernel clamps them, and SO_REUSEPORT
/// set after a port-0 bind (before a fixed-port bind).
///
/// With port 0 and `reuse_port`, SO_REUSEPORT is set only after the bind:
/// set before, Linux's ephemeral-port search treats ports held by other
/// SO_REUSEPORT sockets of the same user as free, and two port-0 binds can
/// land on one port and split each other's traffic.
pub fn bind_socket(cfg: &SocketConfig) -> io::Result<BoundSocket> {
    cfg.validate()?;
    let v6 = cfg.addr.is_ipv6();
    let fd = sys::udp_socket(v6)?;
    let raw = fd.as_raw_fd();

    // DF on every datagram: the kernel refuses (EMSGSIZE) instead of
    // fragmenting, since icx fragments by itself and IP reassembly
    // failures are a cause of lost blocks it must not have.
    if v6 {
        sys::set_int(
            raw,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
        .map_err(|e| with_context(e, "IPV6_MTU_DISCOVER"))?;
        // IPv4-mapped traffic on a dual-stack socket follows the IPv4
        // option; harmless where that traffic cannot occur.
        if let Err(e) = sys::set_int(
            raw,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        ) {
            tracing::debug!(error = %e, "IP_MTU_DISCOVER on an IPv6 socket refused");
        }
    } else {
        sys::set_int(
            raw,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
        .map_err(|e| with_context(e, "IP_MTU_DISCOVER"))?;
    }

    let recv_buffer = set_buffer(raw, true, cfg.recv_buffer, cfg.force_buffers)?;
    let send_buffer = set_buffer(raw, false, cfg.send_buffer, cfg.force_buffers)?;

    let reuse_before_bind = cfg.reuse_port && cfg.addr.port() != 0;
    if reuse_before_bind {
        sys::set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
            .map_err(|e| with_context(e, "SO_REUSEPORT"))?;
    }
    sys::bind(&fd, cfg.addr).map_err(|e| with_context(e, format_args!("bind {}", cfg.addr)))?;
    if cfg.reuse_port && !reuse_before_bind {
        sys::set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
            .map_err(|e| with_context(e, "SO_REUSEPORT"))?;
    }
    // The group exists once a second socket joins a port (a socket bound to
    // port 0 gets SO_REUSEPORT only after binding, so it has none of its
    // own): the joiners attach the program, which serves the whole group.
    // A normal socket needs it for owner steering; the urgent lane's own
    // program is attached by its socket (`bind_urgent`).
    if reuse_before_bind && cfg.steer_cores > 1 {
        sys::attach_steering(raw, cfg.steer_cores, cfg.lanes())
            .map_err(|e| with_context(e, "SO_ATTACH_REUSEPORT_CBPF (owner steering)"))?;
    }
    let addr = sys::local_addr(&fd)?;
    Ok(BoundSocket {
        fd,
        addr,
        recv_buffer,
        send_buffer,
    })
}

/// Binds the urgent lane's socket to `normal` (the address the normal
/// socket got, so its port is known) and attaches the steering program that
/// feeds it urgent frames. Configured like the normal socket (`cfg`'s
/// buffers and options). Fails, closing the socket, if the kernel refuses
/// either: the caller then runs with one socket.
pub fn bind_urgent(cfg: &SocketConfig, normal: SocketAddr) -> io::Result<BoundSocket> {
    let mut u = cfg.clone();
    u.addr = normal;
    // Joins the normal socket's group (a fixed port: SO_REUSEPORT is set
    // before the bind); its own steering is attached here, not there.
    u.steer_cores = 0;
    u.reuse_port = true;
    let b = bind_socket(&u)?;
    sys::attach_steering(b.fd.as_raw_fd(), cfg.steer_cores, 2)
        .map_err(|e| with_context(e, "SO_ATTACH_REUSEPORT_CBPF (urgent lane)"))?;
    Ok(b)
}

impl Sock {
    fn new(fd: OwnedFd, cfg: &SocketConfig) -> Self {
        Sock {
            fd,
            tx: TxArrays::new(cfg.max_batch),
            rx: RxArrays::new(cfg.max_batch, cfg.rx_buf_size),
            tx_blocked: false,
        }
    }
}

impl SocketBackend {
    /// Opens, configures and binds the socket (see [`bind_socket`]), and
    /// the urgent lane's (see [`bind_urgent`]) unless `urgent_lane` is off.
    pub fn bind(cfg: SocketConfig) -> io::Result<SocketBackend> {
        let BoundSocket {
            fd,
            addr,
            recv_buffer,
            send_buffer,
        } = bind_socket(&cfg)?;
        let v6 = cfg.addr.is_ipv6();
        let urgent = if cfg.lanes() > 1 {
            match bind_urgent(&cfg, addr) {
                Ok(u) => Some(Sock::new(u.fd, &cfg)),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "udp: no urgent lane (heartbeats share the block socket's queue)");
                    None
                }
            }
        } else {
            if cfg.urgent_lane {
                tracing::info!(%addr, "udp: no urgent lane without SO_REUSEPORT");
            }
            None
        };
        tracing::debug!(%addr, ?recv_buffer, ?send_buffer, urgent = urgent.is_some(), "udp socket backend bound");

        Ok(SocketBackend {
            caps: Capabilities {
                max_udp_payload: cfg.max_udp_payload,
                max_batch: cfg.max_batch,
                gso: false,
                gro: false,
                zero_copy_send: false,
                registered_buffers: false,
                urgent_lane: urgent.is_some(),
            },
            urgent,
            normal: Sock::new(fd, &cfg),
            addr,
            v6,
            steer_cores: cfg.steer_cores,
            stats: SocketStats {
                recv_buffer,
                send_buffer,
                ..SocketStats::default()
            },
            warned: Warned::default(),
            wake: OnceLock::new(),
        })
    }

    /// Whether the urgent lane's socket is open.
    pub fn has_urgent_lane(&self) -> bool {
        self.urgent.is_some()
    }

    /// The owner steering it was bound with ([`SocketConfig::steer_cores`]):
    /// a backend that takes its place in the SO_REUSEPORT group must attach
    /// the same program.
    pub fn steer_cores(&self) -> usize {
        self.steer_cores
    }

    /// The urgent lane's socket, if open.
    pub fn urgent_fd(&self) -> Option<BorrowedFd<'_>> {
        self.urgent.as_ref().map(|u| u.fd.as_fd())
    }

    pub fn stats(&self) -> SocketStats {
        self.stats
    }

    /// Reads back the path-MTU mode: true when the socket sends with DF set
    /// and never fragments (IP(V6)_PMTUDISC_DO).
    pub fn dont_fragment(&self) -> io::Result<bool> {
        let (level, opt, want) = sys::dont_fragment_opt(self.v6);
        Ok(sys::get_int(self.normal.fd.as_raw_fd(), level, opt)? == want)
    }

    /// Datagrams the kernel dropped on this backend's sockets, mostly for
    /// a full receive buffer: the overflow the sender only sees as loss.
    pub fn kernel_drops(&self) -> io::Result<u64> {
        let mut n = 0;
        for s in std::iter::once(&self.normal).chain(&self.urgent) {
            let m = sys::meminfo(s.fd.as_raw_fd())?;
            n += u64::from(m[libc::SK_MEMINFO_DROPS as usize]);
        }
        Ok(n)
    }

    fn drop_front(&mut self, batch: &mut TxBatch, err: &io::Error) {
        let Some(frame) = batch.pop_front() else {
            return;
        };
        if err.raw_os_error() == Some(libc::EMSGSIZE) {
            self.stats.emsgsize += 1;
            if !std::mem::replace(&mut self.warned.emsgsize, true) {
                tracing::warn!(
                    src = %self.addr, dst = %frame.dst, len = frame.len(),
                    "udp: datagram larger than the path MTU refused (DF set, never \
                     fragmented) and dropped; check the MTU configured for this peer. \
                     Further ones are only counted"
                );
            }
        } else {
            self.stats.send_errors += 1;
            if !std::mem::replace(&mut self.warned.send_error, true) {
                tracing::warn!(
                    src = %self.addr, dst = %frame.dst, len = frame.len(), error = %err,
                    "udp: send failed, datagram dropped; further send errors are only counted"
                );
            }
        }
    }
}

/// The normal socket.
impl AsRawFd for SocketBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.normal.fd.as_raw_fd()
    }
}

/// The normal socket.
impl AsFd for SocketBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.normal.fd.as_fd()
    }
}

/// Errors that mean the socket itself is unusable, not one datagram.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EFAULT | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

/// Receives on one socket with `recvmmsg` until `max` datagrams were read
/// or it is drained. Truncated datagrams are counted, not handed over, but
/// count against `max` so one call stays bounded.
fn recv_on(
    sock: &mut Sock,
    lane: Lane,
    addr: SocketAddr,
    max: usize,
    stats: &mut SocketStats,
    warned: &mut Warned,
    f: &mut dyn FnMut(RxDatagram<'_>),
) -> io::Result<usize> {
    let (mut budget, mut handed, mut errors) = (max, 0usize, 0usize);
    while budget > 0 {
        let want = budget.min(sock.rx.msgs.len());
        sock.rx.prepare(want);
        stats.recv_calls += 1;
        // SAFETY: `msgs[..want]` were set by `prepare` to point at their
        // own slot (of `slot` bytes inside `buf`), iovec and address in
        // `sock.rx`, all live and not otherwise borrowed during the call.
        let r = unsafe {
            libc::recvmmsg(
                sock.fd.as_raw_fd(),
                sock.rx.msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = sys::last_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                _ if is_fatal(&e) => {
                    return Err(with_context(e, format_args!("recvmmsg on {addr}")))
                }
                _ => {
                    // A pending socket error (e.g. an ICMP report) is
                    // consumed by the failed call; the data is still there.
                    stats.recv_errors += 1;
                    if !std::mem::replace(&mut warned.recv_error, true) {
                        tracing::warn!(%addr, error = %e, "udp: receive error; further ones are only counted");
                    }
                    errors += 1;
                    if errors >= MAX_RECV_ERRORS_PER_CALL {
                        break;
                    }
                    continue;
                }
            }
        }
        let got = r as usize;
        budget -= got;
        let rx = &sock.rx;
        for (i, m) in rx.msgs[..got].iter().enumerate() {
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                stats.truncated += 1;
                if !std::mem::replace(&mut warned.truncated, true) {
                    tracing::warn!(
                        %addr, slot = rx.slot,
                        "udp: datagram longer than the receive slot, dropped; \
                         further ones are only counted"
                    );
                }
                continue;
            }
            let Some(src) = decode_addr(&rx.addrs[i], m.msg_hdr.msg_namelen) else {
                stats.recv_errors += 1;
                continue;
            };
            let start = i * rx.slot;
            let len = (m.msg_len as usize).min(rx.slot);
            f(RxDatagram {
                src,
                lane,
                link: 0,
                data: &rx.buf[start..start + len],
            });
            handed += 1;
        }
        if got < want {
            // Drained: another call would only say EAGAIN.
            break;
        }
    }
    Ok(handed)
}

impl Backend for SocketBackend {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends up to `max_batch` frames with as few `sendmmsg` calls as the
    /// kernel allows, each run of frames of one lane from that lane's
    /// socket. EAGAIN leaves the rest in `batch`; a datagram the kernel
    /// refuses for itself (EMSGSIZE, ECONNREFUSED, ...) is counted and
    /// dropped, since retrying it would fail the same way.
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        let limit = self.caps.max_batch;
        let mut taken = 0;
        while taken < limit && !batch.is_empty() {
            let lanes = self.urgent.is_some();
            let urgent = lanes && batch.front().is_some_and(|f| f.lane == Lane::Urgent);
            // With one socket every frame goes from it, whatever its lane.
            let lane = lanes.then_some(if urgent { Lane::Urgent } else { Lane::Normal });
            let sock = match (&mut self.urgent, urgent) {
                (Some(u), true) => u,
                _ => &mut self.normal,
            };
            let n = sock.tx.prepare(batch, limit - taken, self.v6, lane);
            if n == 0 {
                // The front frame's family does not match the socket's.
                let e = io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
                self.drop_front(batch, &e);
                taken += 1;
                continue;
            }
            self.stats.send_calls += 1;
            // SAFETY: `msgs[..n]` were filled by `prepare` just now: each
            // points at its own address and iovecs in `sock.tx`, and the
            // iovecs at header/payload bytes of frames in `batch`, which is
            // borrowed and unchanged until the call returns. The kernel only
            // reads the data and writes `msg_len`.
            let r = unsafe {
                libc::sendmmsg(
                    sock.fd.as_raw_fd(),
                    sock.tx.msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                let r = r as usize;
                batch.drain(..r);
                taken += r;
                self.stats.sent += r as u64;
                if urgent {
                    self.stats.urgent_sent += r as u64;
                }
                sock.tx_blocked = false;
                // A short count means the next datagram failed; the next
                // call reports why.
                continue;
            }
            if r == 0 {
                // Not expected for vlen > 0; treat as "no room now".
                break;
            }
            let e = sys::last_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    self.stats.eagain += 1;
                    sock.tx_blocked = true;
                    break;
                }
                _ if is_fatal(&e) => {
                    return Err(with_context(e, format_args!("sendmmsg on {}", self.addr)))
                }
                _ => {
                    self.drop_front(batch, &e);
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    /// `recvmmsg` on the urgent socket only.
    fn recv_urgent(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let Some(u) = &mut self.urgent else {
            return Ok(0);
        };
        let n = recv_on(
            u,
            Lane::Urgent,
            self.addr,
            max,
            &mut self.stats,
            &mut self.warned,
            f,
        )?;
        self.stats.urgent_received += n as u64;
        self.stats.received += n as u64;
        Ok(n)
    }

    /// Receives with `recvmmsg`: first what waits on the urgent socket, then
    /// the normal one, until `max` datagrams were read or both are drained.
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let mut handed = 0;
        if let Some(u) = &mut self.urgent {
            let n = recv_on(
                u,
                Lane::Urgent,
                self.addr,
                max,
                &mut self.stats,
                &mut self.warned,
                f,
            )?;
            self.stats.urgent_received += n as u64;
            handed += n;
        }
        if handed < max {
            handed += recv_on(
                &mut self.normal,
                Lane::Normal,
                self.addr,
                max - handed,
                &mut self.stats,
                &mut self.warned,
                f,
            )?;
        }
        self.stats.received += handed as u64;
        Ok(handed)
    }

    /// Blocks in `ppoll` until a socket is readable (or, after EAGAIN,
    /// writable), the [`waker`](Backend::waker) fires, or `timeout` passes.
    /// `ppoll` rather than `poll` keeps sub-millisecond timeouts (the
    /// driver's 50 µs backpressure wait) exact instead of rounding them to
    /// 0 or 1 ms.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let wake = self.wake.get().and_then(Option::as_ref);
        let pfd = |s: Option<&Sock>| libc::pollfd {
            // A negative fd is skipped by ppoll.
            fd: s.map_or(-1, |s| s.fd.as_raw_fd()),
            events: libc::POLLIN
                | if s.is_some_and(|s| s.tx_blocked) {
                    libc::POLLOUT
                } else {
                    0
                },
            revents: 0,
        };
        let mut pfds = [
            pfd(Some(&self.normal)),
            pfd(self.urgent.as_ref()),
            libc::pollfd {
                fd: wake.map_or(-1, |w| w.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `pfds` are live pollfds, `tsp` null or a live timespec,
        // and a null signal mask leaves the mask unchanged.
        let r = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                tsp,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = sys::last_error();
            // A signal is an early return, which the contract allows.
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(with_context(e, "ppoll"));
            }
        }
        if let Some(w) = wake {
            if pfds[2].revents != 0 {
                w.drain();
            }
        }
        Ok(())
    }

    /// An eventfd polled alongside the sockets, created on first use (one
    /// extra fd per backend that a runtime drives). `None` if the kernel
    /// refuses an eventfd (logged once): the caller then caps its waits.
    fn waker(&self) -> Option<Arc<dyn Wake>> {
        let w = self.wake.get_or_init(|| match crate::EventFd::new() {
            Ok(e) => Some(Arc::new(e)),
            Err(e) => {
                tracing::warn!(addr = %self.addr, error = %e, "udp: no eventfd for wake-ups; waits will be capped instead");
                None
            }
        });
        w.clone().map(|w| w as Arc<dyn Wake>)
    }
}
