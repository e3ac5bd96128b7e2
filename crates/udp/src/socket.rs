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
//!
//! With several interconnect links ([`SocketConfig::more_links`]) each link
//! has sockets of its own (the pair above), bound to the link's address and
//! to the interface that owns it ([`SocketConfig::bind_device`]): a frame
//! leaves from its [`TxFrame::link`](icx_core::TxFrame::link)'s socket, and
//! `recv` tags each datagram with the link it came by.

use crate::arrays::{RxArrays, TxArrays};
use crate::bind::with_context;
use crate::sys::{self, decode_addr};
use crate::{
    bind_socket, bind_urgent, BoundSocket, BufferGrant, LinkCounts, RxRotation, SocketConfig,
};
use icx_core::{Backend, Capabilities, Lane, RxDatagram, TxBatch, Wake, MAX_LINKS};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Failed receive calls tolerated in one `recv` before it gives up for now;
/// each consumes a pending socket error, so this only bounds a storm.
const MAX_RECV_ERRORS_PER_CALL: usize = 8;

/// What the backend has seen. Datagram counts, except `eagain` (refused
/// calls) and `send_calls`/`recv_calls` (syscalls made). Totals over every
/// socket of every link, the urgent sockets' share apart, and per link.
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
    /// Link 0's normal socket's (every socket asks the same).
    pub recv_buffer: BufferGrant,
    pub send_buffer: BufferGrant,
    /// Datagrams sent from, and handed over from, the urgent sockets.
    pub urgent_sent: u64,
    pub urgent_received: u64,
    /// Of `sent` and `received`, each link's; frames for a link it lacks.
    pub links: LinkCounts,
}

/// Log-once flags: the first occurrence is a warning with details, the rest
/// only counters, so a misconfigured peer cannot flood the log.
#[derive(Debug, Default)]
struct Warned {
    emsgsize: bool,
    send_error: bool,
    truncated: bool,
    recv_error: bool,
    unknown_link: bool,
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

/// One link's sockets: the normal one and the urgent lane's, on the link's
/// address.
struct Link {
    // Declared (so closed) before `normal`: a group that loses both then
    // shifts its later members into the freed slots in order, keeping a
    // core's normal socket before its urgent one.
    urgent: Option<Sock>,
    normal: Sock,
    addr: SocketAddr,
    v6: bool,
    /// The interface its sockets are bound to.
    device: Option<String>,
}

/// Plain UDP sockets as an icx [`Backend`]: per link, the normal one and
/// the urgent lane's on the same address.
pub struct SocketBackend {
    /// Link 0 first.
    links: Vec<Link>,
    caps: Capabilities,
    /// The owner steering it was bound with (`SocketConfig::steer_cores`).
    steer_cores: usize,
    stats: SocketStats,
    warned: Warned,
    /// The order `recv` reads the links' normal sockets in.
    rotation: RxRotation,
    /// Created by the first [`Backend::waker`] call; `wait` then also polls it.
    wake: OnceLock<Option<Arc<crate::EventFd>>>,
}

impl fmt::Debug for SocketBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let links: Vec<_> = self
            .links
            .iter()
            .map(|l| {
                (
                    l.addr,
                    l.normal.fd.as_raw_fd(),
                    l.urgent.as_ref().map(|u| u.fd.as_raw_fd()),
                    l.device.clone(),
                )
            })
            .collect();
        f.debug_struct("SocketBackend")
            .field("links", &links)
            .field("caps", &self.caps)
            .field("stats", &self.stats)
            .finish()
    }
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

impl Link {
    /// Binds link `k`'s sockets as `cfg` (that link's, [`SocketConfig::for_link`]) says.
    fn bind(k: usize, cfg: &SocketConfig) -> io::Result<(Link, BufferGrant, BufferGrant)> {
        let BoundSocket {
            fd,
            addr,
            recv_buffer,
            send_buffer,
            device,
        } = bind_socket(cfg).map_err(|e| with_context(e, format_args!("link {k}")))?;
        let urgent = if cfg.lanes() > 1 {
            match bind_urgent(cfg, addr) {
                Ok(u) => Some(Sock::new(u.fd, cfg)),
                Err(e) => {
                    tracing::warn!(%addr, link = k, error = %e, "udp: no urgent lane (heartbeats share the block socket's queue)");
                    None
                }
            }
        } else {
            if cfg.urgent_lane {
                tracing::info!(%addr, "udp: no urgent lane without SO_REUSEPORT");
            }
            None
        };
        tracing::debug!(%addr, link = k, ?device, ?recv_buffer, ?send_buffer, urgent = urgent.is_some(), "udp socket link bound");
        let link = Link {
            urgent,
            normal: Sock::new(fd, cfg),
            addr,
            v6: addr.is_ipv6(),
            device,
        };
        Ok((link, recv_buffer, send_buffer))
    }
}

impl SocketBackend {
    /// Opens, configures and binds each link's socket (see [`bind_socket`]),
    /// and its urgent lane's (see [`bind_urgent`]) unless `urgent_lane` is off.
    pub fn bind(cfg: SocketConfig) -> io::Result<SocketBackend> {
        cfg.validate()?;
        let mut links = Vec::with_capacity(cfg.link_count());
        let mut grants = None;
        for k in 0..cfg.link_count() {
            let lc = cfg.for_link(k).expect("k < link_count");
            let (link, r, s) = Link::bind(k, &lc)?;
            grants.get_or_insert((r, s));
            links.push(link);
        }
        let (recv_buffer, send_buffer) = grants.unwrap_or_default();
        let urgent = links.iter().all(|l| l.urgent.is_some());
        Ok(SocketBackend {
            caps: Capabilities {
                max_udp_payload: cfg.max_udp_payload,
                max_batch: cfg.max_batch,
                gso: false,
                gro: false,
                zero_copy_send: false,
                registered_buffers: false,
                urgent_lane: urgent,
            },
            links,
            steer_cores: cfg.steer_cores,
            stats: SocketStats {
                recv_buffer,
                send_buffer,
                ..SocketStats::default()
            },
            warned: Warned::default(),
            rotation: RxRotation::default(),
            wake: OnceLock::new(),
        })
    }

    /// Whether every link's urgent-lane socket is open.
    pub fn has_urgent_lane(&self) -> bool {
        self.caps.urgent_lane
    }

    /// Every link's local address, link 0 first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.links.iter().map(|l| l.addr).collect()
    }

    /// The interface link `link`'s sockets are bound to (SO_BINDTODEVICE).
    pub fn link_device(&self, link: usize) -> Option<&str> {
        self.links.get(link)?.device.as_deref()
    }

    /// The owner steering it was bound with ([`SocketConfig::steer_cores`]):
    /// a backend that takes its place in the SO_REUSEPORT group must attach
    /// the same program.
    pub fn steer_cores(&self) -> usize {
        self.steer_cores
    }

    /// Link 0's urgent lane socket, if open.
    pub fn urgent_fd(&self) -> Option<BorrowedFd<'_>> {
        self.links[0].urgent.as_ref().map(|u| u.fd.as_fd())
    }

    /// A link's normal and urgent sockets (`None` for a link it lacks).
    pub fn link_fds(&self, link: usize) -> Option<(BorrowedFd<'_>, Option<BorrowedFd<'_>>)> {
        let l = self.links.get(link)?;
        Some((l.normal.fd.as_fd(), l.urgent.as_ref().map(|u| u.fd.as_fd())))
    }

    pub fn stats(&self) -> SocketStats {
        self.stats
    }

    /// Reads back the path-MTU mode: true when every socket sends with DF
    /// set and never fragments (IP(V6)_PMTUDISC_DO).
    pub fn dont_fragment(&self) -> io::Result<bool> {
        for l in &self.links {
            let (level, opt, want) = sys::dont_fragment_opt(l.v6);
            for s in std::iter::once(&l.normal).chain(&l.urgent) {
                if sys::get_int(s.fd.as_raw_fd(), level, opt)? != want {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Datagrams the kernel dropped on this backend's sockets, mostly for
    /// a full receive buffer: the overflow the sender only sees as loss.
    pub fn kernel_drops(&self) -> io::Result<u64> {
        let mut n = 0;
        for l in &self.links {
            for s in std::iter::once(&l.normal).chain(&l.urgent) {
                let m = sys::meminfo(s.fd.as_raw_fd())?;
                n += u64::from(m[libc::SK_MEMINFO_DROPS as usize]);
            }
        }
        Ok(n)
    }

    fn drop_front(&mut self, batch: &mut TxBatch, err: &io::Error) {
        let Some(frame) = batch.pop_front() else {
            return;
        };
        let src = self.links.get(usize::from(frame.link)).map(|l| l.addr);
        if err.raw_os_error() == Some(libc::EMSGSIZE) {
            self.stats.emsgsize += 1;
            if !std::mem::replace(&mut self.warned.emsgsize, true) {
                tracing::warn!(
                    ?src, dst = %frame.dst, len = frame.len(),
                    "udp: datagram larger than the path MTU refused (DF set, never \
                     fragmented) and dropped; check the MTU configured for this peer. \
                     Further ones are only counted"
                );
            }
        } else {
            self.stats.send_errors += 1;
            if !std::mem::replace(&mut self.warned.send_error, true) {
                tracing::warn!(
                    ?src, dst = %frame.dst, len = frame.len(), error = %err,
                    "udp: send failed, datagram dropped; further send errors are only counted"
                );
            }
        }
    }

    /// Drops the front frame, whose link this backend does not have.
    fn drop_unknown_link(&mut self, batch: &mut TxBatch) {
        let n = self.links.len();
        self.stats
            .links
            .drop_unknown_link(batch, n, &mut self.warned.unknown_link, "udp");
    }

    /// `recvmmsg` on link `k`'s socket of `lane` (none: nothing).
    fn recv_link(
        &mut self,
        k: usize,
        lane: Lane,
        max: usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<usize> {
        let l = &mut self.links[k];
        let sock = match lane {
            Lane::Urgent => match &mut l.urgent {
                Some(u) => u,
                None => return Ok(0),
            },
            Lane::Normal => &mut l.normal,
        };
        let n = recv_on(
            sock,
            lane,
            k as u8,
            l.addr,
            max,
            &mut self.stats,
            &mut self.warned,
            f,
        )?;
        self.stats.links.add_received(k, n as u64);
        Ok(n)
    }

    /// `recvmmsg` on the urgent sockets of every link, link 0's first.
    fn recv_urgent_links(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<usize> {
        let mut handed = 0;
        for k in 0..self.links.len() {
            if handed >= max {
                break;
            }
            handed += self.recv_link(k, Lane::Urgent, max - handed, f)?;
        }
        self.stats.urgent_received += handed as u64;
        Ok(handed)
    }
}

/// Link 0's normal socket.
impl AsRawFd for SocketBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.links[0].normal.fd.as_raw_fd()
    }
}

/// Link 0's normal socket.
impl AsFd for SocketBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.links[0].normal.fd.as_fd()
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
#[allow(clippy::too_many_arguments)]
fn recv_on(
    sock: &mut Sock,
    lane: Lane,
    link: u8,
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
                link,
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
        self.links[0].addr
    }

    fn link_count(&self) -> usize {
        self.links.len()
    }

    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        self.links.get(usize::from(link)).map(|l| l.addr)
    }

    /// Sends up to `max_batch` frames with as few `sendmmsg` calls as the
    /// kernel allows, each run of frames of one link and lane from that
    /// link's socket of that lane. EAGAIN leaves the rest in `batch`; a
    /// datagram the kernel refuses for itself (EMSGSIZE, ECONNREFUSED, ...)
    /// is counted and dropped, since retrying it would fail the same way,
    /// and so is a frame for a link this backend does not have.
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        let limit = self.caps.max_batch;
        let mut taken = 0;
        while taken < limit {
            let Some(front) = batch.front() else { break };
            let (k, front_lane) = (usize::from(front.link), front.lane);
            let Some(link) = self.links.get_mut(k) else {
                self.drop_unknown_link(batch);
                taken += 1;
                continue;
            };
            let lanes = link.urgent.is_some();
            let urgent = lanes && front_lane == Lane::Urgent;
            // With one socket every frame goes from it, whatever its lane.
            let lane = lanes.then_some(if urgent { Lane::Urgent } else { Lane::Normal });
            let (addr, v6) = (link.addr, link.v6);
            let sock = match (&mut link.urgent, urgent) {
                (Some(u), true) => u,
                _ => &mut link.normal,
            };
            let n = sock.tx.prepare(batch, limit - taken, v6, k as u8, lane);
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
                self.stats.links.add_sent(k, r as u64);
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
                    return Err(with_context(e, format_args!("sendmmsg on {addr}")))
                }
                _ => {
                    self.drop_front(batch, &e);
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    /// `recvmmsg` on the urgent sockets only.
    fn recv_urgent(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let n = self.recv_urgent_links(max, f)?;
        self.stats.received += n as u64;
        Ok(n)
    }

    /// Receives with `recvmmsg`: first what waits on the urgent sockets,
    /// then the normal ones (starting with a different link each call),
    /// until `max` datagrams were read or all are drained.
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let mut handed = self.recv_urgent_links(max, f)?;
        for k in self.rotation.order(self.links.len()) {
            if handed >= max {
                break;
            }
            handed += self.recv_link(k, Lane::Normal, max - handed, f)?;
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
        // The waker's first, then two per link.
        let mut pfds = [pfd(None); 1 + 2 * MAX_LINKS];
        pfds[0] = libc::pollfd {
            fd: wake.map_or(-1, |w| w.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        };
        for (k, l) in self.links.iter().enumerate() {
            pfds[1 + 2 * k] = pfd(Some(&l.normal));
            pfds[2 + 2 * k] = pfd(l.urgent.as_ref());
        }
        let used = 1 + 2 * self.links.len();
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `pfds[..used]` are live pollfds, `tsp` null or a live
        // timespec, and a null signal mask leaves the mask unchanged.
        let r = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                used as libc::nfds_t,
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
            if pfds[0].revents != 0 {
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
                tracing::warn!(addr = %self.local_addr(), error = %e, "udp: no eventfd for wake-ups; waits will be capped instead");
                None
            }
        });
        w.clone().map(|w| w as Arc<dyn Wake>)
    }
}
