//! [`DpdkBackend`]: one rx/tx queue pair of an ethdev port ([`DpdkPort`],
//! shared by the per-core backends) under the icx [`Backend`] trait, speaking plain Ethernet/IPv4/UDP so it interoperates
//! with kernel-socket nodes (io_uring, plain sockets).
//!
//! - **Transmit**: each frame is copied into an mbuf from this backend's own
//!   pool (headers built in place, then the icx header and the block slice),
//!   checksummed (or marked for the port's checksum offload), and handed to
//!   `rte_eth_tx_burst`. Frames the queue refuses stay in the batch
//!   (backpressure). Frames to a neighbour not yet resolved are dropped and
//!   counted (the transport retransmits) while an ARP request goes out.
//! - **Receive**: `rte_eth_rx_burst`; each frame is parsed in place and the
//!   UDP payload lent to the callback straight from the mbuf (a chained
//!   mbuf is first gathered into a scratch buffer); ARP is answered; every
//!   other frame is counted by reason and freed.
//! - **Waiting**: poll mode has no interrupt here: `wait` polls the rx
//!   queue, spinning for `spin_us`, then sleeping between polls from 5 us
//!   doubling up to `idle_sleep_us` (timer slack lowered to 1 us for the
//!   thread), or spinning throughout with `busy_poll`. A received burst is
//!   kept for the next `recv`. The waker sets a flag the loop checks.
//!
//! - **Lanes**: one. The urgent lane ([`icx_core::Lane`]) is a second
//!   kernel socket elsewhere; here every frame shares the queue pair, so
//!   urgent frames are sent and received in line with blocks (a peer's
//!   kernel-socket receiver still sorts them into its urgent socket, since
//!   it steers by the icx header, not by the sender). A second rx queue fed
//!   by an `rte_flow` rule on the icx header would be the DPDK equivalent.
//!
//! Copies: one on send (pool buffer to mbuf) and one on receive (mbuf to the
//! reassembly buffer, done by the transport). Attaching the pool as external
//! buffers (`rte_pktmbuf_attach_extbuf` on `BufferPool::regions()`) would
//! remove the send copy on NICs that DMA from registered memory; af_packet
//! copies into its ring anyway, so this first version copies.

use crate::arp::{ArpAction, ArpTable};
use crate::config::DpdkConfig;
use crate::error::DpdkError;
use crate::net::{
    self, ArpPacket, MacAddr, Parsed, RxChecksums, TxChecksums, UdpFlow, HEADERS_LEN, MIN_FRAME_LEN,
};
use crate::port::{port_stats, DpdkPort, PortInfo, PortShared, PortStats};
use crate::stats::DpdkStats;
use icx_core::{Backend, Capabilities, RxDatagram, TxBatch, Wake};
use icx_dpdk_sys::{self as sys, flags};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The waker: a latched flag that `wait` polls.
#[derive(Debug, Default)]
pub(crate) struct Waker {
    flag: AtomicBool,
}

impl Wake for Waker {
    fn wake(&self) {
        self.flag.store(true, Ordering::Release);
    }
}

/// How a poll-mode `wait` passes the time: spinning for `spin`, then
/// napping from 5 us doubling up to `idle_sleep` (a reply that comes soon
/// is seen soon, an idle core wakes rarely), or spinning throughout with
/// `busy_poll`. One for a backend's own queue and for a set of links.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollWait {
    busy_poll: bool,
    spin: Duration,
    idle_sleep: Duration,
}

impl PollWait {
    pub(crate) fn new(cfg: &DpdkConfig) -> Self {
        PollWait {
            busy_poll: cfg.busy_poll,
            spin: Duration::from_micros(cfg.spin_us),
            idle_sleep: Duration::from_micros(cfg.idle_sleep_us.max(1)),
        }
    }

    /// Returns when `ready` says so, the waker fired or `timeout` passed.
    pub(crate) fn wait(
        &self,
        waker: &Waker,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> bool,
    ) {
        let start = Instant::now();
        let mut naps = 0u32;
        loop {
            if waker.flag.swap(false, Ordering::Acquire) || ready() {
                return;
            }
            let spent = start.elapsed();
            if timeout.is_some_and(|t| spent >= t) {
                return;
            }
            if self.busy_poll || spent < self.spin {
                std::hint::spin_loop();
                continue;
            }
            if naps == 0 {
                lower_timer_slack();
            }
            let mut nap = (Duration::from_micros(5) * (1u32 << naps.min(16))).min(self.idle_sleep);
            naps += 1;
            if let Some(t) = timeout {
                nap = nap.min(t.saturating_sub(spent));
            }
            std::thread::sleep(nap);
        }
    }
}

/// The default 50 us timer slack would stretch every short nap to ~100 us;
/// 1 us keeps the backoff meaningful. Once per thread.
fn lower_timer_slack() {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    DONE.with(|d| {
        if !d.replace(true) {
            // SAFETY: PR_SET_TIMERSLACK takes an integer; affects this thread only.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };
        }
    });
}

const SCRATCH_LEN: usize = 64 << 10;

/// The DPDK backend: one rx/tx queue pair of a [`DpdkPort`]. Opened alone
/// ([`DpdkBackend::open`]) it owns its single-queue port (stopped and closed
/// on drop); per core, see [`DpdkBackend::for_queue`].
pub struct DpdkBackend {
    shared: Arc<PortShared>,
    port: u16,
    queue: u16,
    mp: *mut sys::rte_mempool,
    learned_seen: u64,
    mac: MacAddr,
    addr: SocketAddrV4,
    max_udp_payload: usize,
    max_batch: usize,
    arp_enabled: bool,
    arp: ArpTable,
    poll: PollWait,
    tx_csum: TxChecksums,
    rx_csum_offload: bool,
    ip_id: u16,
    /// Received mbufs not yet handed to `recv` (filled by `wait`).
    rx_stash: Vec<*mut sys::rte_mbuf>,
    rx_head: usize,
    /// Scratch for the tx burst and for gathering chained rx mbufs.
    tx_mbufs: Vec<*mut sys::rte_mbuf>,
    tx_index: Vec<usize>,
    ctrl: Vec<*mut sys::rte_mbuf>,
    scratch: Box<[u8]>,
    waker: Arc<Waker>,
    stats: DpdkStats,
}

// SAFETY: the raw pointers are its queue's mempool and the mbufs it holds;
// DPDK allows a queue to be used from any one thread at a time (this backend
// claimed the queue, so no other backend bursts on it), mempools from any
// thread, and `&mut self` makes every use exclusive.
unsafe impl Send for DpdkBackend {}

impl std::fmt::Debug for DpdkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkBackend")
            .field("port", &self.shared.info)
            .field("queue", &self.queue)
            .field("addr", &self.addr)
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

impl DpdkBackend {
    /// Initialises the EAL (first call in the process) and opens a port with
    /// one queue pair (`cfg.queues = 1`, `cfg.queue = 0`), driven by this
    /// backend; for one queue per core see [`DpdkPort`] and
    /// [`for_queue`](Self::for_queue). Every failure is an error naming the
    /// step and what to check; nothing panics.
    pub fn open(cfg: DpdkConfig) -> Result<Self, DpdkError> {
        if cfg.queues != 1 || cfg.queue != 0 {
            return Err(DpdkError::Config(
                "DpdkBackend::open drives a single-queue port (queues = 1, queue = 0); for several queues open a DpdkPort and use DpdkBackend::for_queue".into(),
            ));
        }
        Self::for_queue(DpdkPort::open(cfg)?, 0)
    }

    /// The backend of queue pair `queue` of `port` (one per core). Each
    /// queue can have one backend at a time; it is released on drop.
    pub fn for_queue(port: DpdkPort, queue: u16) -> Result<Self, DpdkError> {
        let shared = port.shared;
        if queue >= shared.queues {
            return Err(DpdkError::Config(format!(
                "queue {queue} asked for, the port has {} queue pairs",
                shared.queues
            )));
        }
        if shared.claimed[usize::from(queue)].swap(true, Ordering::AcqRel) {
            return Err(DpdkError::Config(format!(
                "queue {queue} already has a backend"
            )));
        }
        let cfg = &shared.cfg;
        let mut arp = ArpTable::new();
        for (ip, m) in &cfg.neighbours {
            arp.insert_static(*ip, *m);
        }
        let max_batch = cfg.max_batch;
        let mut b = DpdkBackend {
            port: shared.port,
            queue,
            mp: shared.pools[usize::from(queue)],
            learned_seen: 0,
            mac: shared.mac,
            addr: cfg.addr,
            max_udp_payload: shared.max_udp_payload,
            max_batch,
            arp_enabled: cfg.arp,
            arp,
            poll: PollWait::new(cfg),
            tx_csum: shared.tx_csum,
            rx_csum_offload: shared.rx_csum_offload,
            ip_id: 0,
            rx_stash: Vec::with_capacity(max_batch),
            rx_head: 0,
            tx_mbufs: Vec::with_capacity(max_batch),
            tx_index: Vec::with_capacity(max_batch),
            ctrl: Vec::with_capacity(max_batch),
            scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
            waker: Arc::new(Waker::default()),
            stats: DpdkStats::default(),
            shared,
        };
        b.refresh_neighbours();
        Ok(b)
    }

    /// The queue pair this backend drives.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// The port this backend's queue belongs to.
    pub fn port(&self) -> DpdkPort {
        DpdkPort {
            shared: self.shared.clone(),
        }
    }

    /// Takes in the neighbour entries other queues learned since last time.
    fn refresh_neighbours(&mut self) {
        let v = self.shared.learned_version.load(Ordering::Acquire);
        if v == self.learned_seen {
            return;
        }
        let learned = self
            .shared
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for &(ip, mac) in learned.iter() {
            self.arp.learn(ip, mac);
        }
        self.learned_seen = v;
    }

    /// Shares what this queue's ARP table says about `ip` with the others.
    fn publish_neighbour(&mut self, ip: Ipv4Addr) {
        let Some(mac) = self.arp.lookup(ip) else {
            return;
        };
        let mut learned = self
            .shared
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match learned.iter_mut().find(|(i, _)| *i == ip) {
            Some((_, m)) if *m == mac => return,
            Some((_, m)) => *m = mac,
            None => learned.push((ip, mac)),
        }
        self.shared.learned_version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn stats(&self) -> DpdkStats {
        self.stats
    }

    pub fn port_info(&self) -> &PortInfo {
        &self.shared.info
    }

    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The neighbour table (static entries and what ARP resolved).
    pub fn neighbours(&self) -> &ArpTable {
        &self.arp
    }

    /// Adds a static neighbour entry.
    pub fn add_neighbour(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.arp.insert_static(ip, mac);
    }

    pub fn port_stats(&self) -> PortStats {
        port_stats(self.port)
    }

    /// Mbufs currently out of the pool (in queues, stashed, or in flight).
    pub fn mbufs_in_use(&self) -> u32 {
        // SAFETY: mp is our live mempool.
        unsafe { sys::rte_mempool_in_use_count(self.mp) }
    }

    /// Sends an ARP request for `ip` now unless one went out recently.
    pub fn resolve(&mut self, ip: Ipv4Addr) {
        if self.arp.should_request(ip, Instant::now()) {
            let p = ArpTable::request(self.mac, *self.addr.ip(), ip);
            if self.queue_ctrl(&p, MacAddr::BROADCAST) {
                self.stats.arp_requests_sent += 1;
            }
        }
    }

    /// Builds a control frame (ARP) into an mbuf for the next flush.
    fn queue_ctrl(&mut self, p: &ArpPacket, dst: MacAddr) -> bool {
        if self.ctrl.len() >= self.max_batch {
            return false;
        }
        // SAFETY: mp is our live mempool.
        let m = unsafe { sys::icx_rte_pktmbuf_alloc(self.mp) };
        if m.is_null() {
            return false;
        }
        // SAFETY: m is a fresh mbuf; append returns NULL or room for 60 bytes.
        let p_data = unsafe { sys::icx_rte_pktmbuf_append(m, MIN_FRAME_LEN as u16) };
        if p_data.is_null() {
            // SAFETY: m is ours and not queued.
            unsafe { sys::icx_rte_pktmbuf_free(m) };
            return false;
        }
        // SAFETY: append reserved MIN_FRAME_LEN bytes at p_data in m's buffer.
        let out = unsafe { std::slice::from_raw_parts_mut(p_data.cast::<u8>(), MIN_FRAME_LEN) };
        p.emit_frame(self.mac, dst, out);
        self.ctrl.push(m);
        true
    }

    /// Sends queued control frames; those the queue refuses are dropped
    /// (ARP is retried by its own timer or by the asker).
    fn flush_ctrl(&mut self) {
        if self.ctrl.is_empty() {
            return;
        }
        let n = self.ctrl.len() as u16;
        // SAFETY: ctrl holds n mbufs we own; tx_burst takes ownership of the
        // first `sent`.
        let sent =
            unsafe { sys::icx_rte_eth_tx_burst(self.port, self.queue, self.ctrl.as_mut_ptr(), n) };
        for &m in &self.ctrl[usize::from(sent)..] {
            // SAFETY: not taken by the queue, still ours.
            unsafe { sys::icx_rte_pktmbuf_free(m) };
        }
        self.ctrl.clear();
    }

    /// Polls the rx queue into the stash; returns how many arrived.
    pub(crate) fn poll_rx(&mut self) -> usize {
        if self.rx_head < self.rx_stash.len() {
            return self.rx_stash.len() - self.rx_head;
        }
        self.rx_stash.clear();
        self.rx_head = 0;
        let cap = self.rx_stash.capacity();
        // SAFETY: the stash has room for `cap` pointers; rx_burst writes at
        // most that many and returns the count, which we then expose.
        unsafe {
            let n = sys::icx_rte_eth_rx_burst(
                self.port,
                self.queue,
                self.rx_stash.as_mut_ptr(),
                cap as u16,
            );
            self.rx_stash.set_len(usize::from(n));
        }
        let n = self.rx_stash.len();
        if n > 0 {
            self.shared.counters[usize::from(self.queue)]
                .rx_frames
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }

    /// Handles one received mbuf and frees it. Returns whether a datagram
    /// was handed to `f`.
    fn handle_rx(&mut self, m: *mut sys::rte_mbuf, f: &mut dyn FnMut(RxDatagram<'_>)) -> bool {
        // SAFETY: m came from rx_burst and is ours until freed below.
        let (segs, pkt_len, ol) = unsafe {
            (
                sys::icx_rte_pktmbuf_nb_segs(m),
                sys::icx_rte_pktmbuf_pkt_len(m) as usize,
                sys::icx_rte_pktmbuf_ol_flags(m),
            )
        };
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += pkt_len as u64;
        let delivered;
        {
            let frame: &[u8] = if segs == 1 {
                // SAFETY: a single-segment mbuf's data is data_len bytes at mtod.
                unsafe {
                    std::slice::from_raw_parts(
                        sys::icx_rte_pktmbuf_mtod(m).cast::<u8>(),
                        usize::from(sys::icx_rte_pktmbuf_data_len(m)),
                    )
                }
            } else {
                self.stats.rx_chained += 1;
                if pkt_len > self.scratch.len() {
                    self.stats.drop_oversize_rx += 1;
                    // SAFETY: ours, not used after.
                    unsafe { sys::icx_rte_pktmbuf_free(m) };
                    return false;
                }
                let mut at = 0;
                let mut seg = m;
                while !seg.is_null() && at < pkt_len {
                    // SAFETY: seg is a segment of the chain we own.
                    let (p, l) = unsafe {
                        (
                            sys::icx_rte_pktmbuf_mtod(seg).cast::<u8>(),
                            usize::from(sys::icx_rte_pktmbuf_data_len(seg)),
                        )
                    };
                    let l = l.min(pkt_len - at);
                    // SAFETY: the segment holds l bytes at p; scratch has room
                    // (pkt_len <= scratch.len()).
                    self.scratch[at..at + l]
                        .copy_from_slice(unsafe { std::slice::from_raw_parts(p, l) });
                    at += l;
                    // SAFETY: as above.
                    seg = unsafe { sys::icx_rte_pktmbuf_next(seg) };
                }
                // Detach the borrow of self.scratch from self for the parse below.
                let s: &[u8] = &self.scratch[..at];
                // SAFETY: scratch is not written again until this frame is done.
                unsafe { std::slice::from_raw_parts(s.as_ptr(), s.len()) }
            };
            let verified = if self.rx_csum_offload {
                RxChecksums {
                    ip: rx_verdict(
                        ol,
                        flags::RTE_MBUF_F_RX_IP_CKSUM_MASK,
                        flags::RTE_MBUF_F_RX_IP_CKSUM_GOOD,
                        flags::RTE_MBUF_F_RX_IP_CKSUM_BAD,
                    ),
                    udp: rx_verdict(
                        ol,
                        flags::RTE_MBUF_F_RX_L4_CKSUM_MASK,
                        flags::RTE_MBUF_F_RX_L4_CKSUM_GOOD,
                        flags::RTE_MBUF_F_RX_L4_CKSUM_BAD,
                    ),
                }
            } else {
                RxChecksums::default()
            };
            match net::parse(frame, self.mac, *self.addr.ip(), self.addr.port(), verified) {
                Parsed::Udp {
                    src_ip,
                    src_port,
                    payload,
                    ..
                } => {
                    f(RxDatagram {
                        src: SocketAddr::V4(SocketAddrV4::new(src_ip, src_port)),
                        // One lane: the port's queue is a FIFO for every frame.
                        lane: icx_core::Lane::Normal,
                        link: 0,
                        data: payload,
                    });
                    delivered = true;
                }
                Parsed::Arp(p) => {
                    self.stats.arp_received += 1;
                    let action = self.arp.handle(&p, self.mac, *self.addr.ip());
                    if p.sender_ip != *self.addr.ip() {
                        // Whatever queue the neighbour's ARP came in on,
                        // every queue can send to it now.
                        self.publish_neighbour(p.sender_ip);
                    }
                    if let ArpAction::Reply(r) = action {
                        if self.queue_ctrl(&r, r.target_mac) {
                            self.stats.arp_replies_sent += 1;
                        }
                    }
                    delivered = false;
                }
                Parsed::Drop(r) => {
                    self.stats.count_drop(r);
                    delivered = false;
                }
            }
        }
        // SAFETY: ours; the frame borrow ended above.
        unsafe { sys::icx_rte_pktmbuf_free(m) };
        if delivered {
            self.stats.delivered += 1;
        }
        delivered
    }

    /// Builds the mbuf for `frame`'s datagram to `dst_mac`, or None when the
    /// pool is empty.
    fn build(
        &mut self,
        t: &icx_core::TxFrame,
        dst: SocketAddrV4,
        dst_mac: MacAddr,
    ) -> Option<*mut sys::rte_mbuf> {
        let len = HEADERS_LEN + t.len();
        // SAFETY: mp is our live mempool.
        let m = unsafe { sys::icx_rte_pktmbuf_alloc(self.mp) };
        if m.is_null() {
            return None;
        }
        // SAFETY: fresh mbuf; append returns NULL or `len` bytes of room
        // (len <= mtu + 14 <= data room, checked at open).
        let p = unsafe { sys::icx_rte_pktmbuf_append(m, len as u16) };
        if p.is_null() {
            // SAFETY: ours, not queued.
            unsafe { sys::icx_rte_pktmbuf_free(m) };
            return None;
        }
        // SAFETY: append reserved `len` bytes at p.
        let out = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
        t.write_to(&mut out[HEADERS_LEN..]);
        self.ip_id = self.ip_id.wrapping_add(1);
        let flow = UdpFlow {
            src_mac: self.mac,
            dst_mac,
            src_ip: *self.addr.ip(),
            dst_ip: *dst.ip(),
            src_port: self.addr.port(),
            dst_port: dst.port(),
        };
        net::emit_udp(out, &flow, self.ip_id, self.tx_csum);
        if self.tx_csum.ip_offload || self.tx_csum.udp_offload {
            let mut ol = flags::RTE_MBUF_F_TX_IPV4;
            if self.tx_csum.ip_offload {
                ol |= flags::RTE_MBUF_F_TX_IP_CKSUM;
            }
            if self.tx_csum.udp_offload {
                ol |= flags::RTE_MBUF_F_TX_UDP_CKSUM;
            }
            // SAFETY: m is ours; sets flags and the l2/l3 lengths.
            unsafe {
                sys::icx_rte_pktmbuf_set_tx_offload(
                    m,
                    ol,
                    net::ETH_HDR_LEN as u16,
                    net::IPV4_HDR_LEN as u16,
                )
            };
        }
        Some(m)
    }
}

fn rx_verdict(ol: u64, mask: u64, good: u64, bad: u64) -> Option<bool> {
    match ol & mask {
        x if x == good => Some(true),
        x if x == bad => Some(false),
        // Unknown, or "none" (not checked): check in software.
        _ => None,
    }
}

impl DpdkBackend {
    /// [`Backend::send`] of the frames at the front of `batch`, at most a
    /// burst, and with `link` only the run of frames for that link (a
    /// [`DpdkLinks`](crate::DpdkLinks) port sending its own frames in
    /// place, none moved). Returns (taken, considered): fewer taken than
    /// considered is backpressure.
    pub(crate) fn send_run(&mut self, batch: &mut TxBatch, link: Option<u8>) -> (usize, usize) {
        self.refresh_neighbours();
        self.tx_mbufs.clear();
        self.tx_index.clear();
        let considered = match link {
            None => batch.len().min(self.max_batch),
            Some(l) => batch
                .iter()
                .take(self.max_batch)
                .take_while(|t| t.link == l)
                .count(),
        };
        let mut examined = 0;
        for (i, t) in batch.iter().enumerate().take(considered) {
            let dst = match t.dst {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                    Some(ip) => SocketAddrV4::new(ip, a.port()),
                    None => {
                        self.stats.unsupported_dst += 1;
                        examined = i + 1;
                        continue;
                    }
                },
            };
            if t.len() > self.max_udp_payload {
                self.stats.oversize += 1;
                examined = i + 1;
                continue;
            }
            let Some(dst_mac) = self.arp.lookup(*dst.ip()) else {
                self.stats.unresolved += 1;
                if self.arp_enabled {
                    self.resolve(*dst.ip());
                }
                examined = i + 1;
                continue;
            };
            match self.build(t, dst, dst_mac) {
                Some(m) => {
                    self.tx_mbufs.push(m);
                    self.tx_index.push(i);
                    examined = i + 1;
                }
                None => {
                    // Pool empty: the rest waits for the next call.
                    self.stats.tx_no_mbuf += 1;
                    break;
                }
            }
        }
        self.flush_ctrl();
        let built = self.tx_mbufs.len();
        let sent = if built > 0 {
            // SAFETY: tx_mbufs holds `built` mbufs we own; the queue takes
            // the first `sent`.
            usize::from(unsafe {
                sys::icx_rte_eth_tx_burst(
                    self.port,
                    self.queue,
                    self.tx_mbufs.as_mut_ptr(),
                    built as u16,
                )
            })
        } else {
            0
        };
        for &m in &self.tx_mbufs[sent..] {
            // SAFETY: refused by the queue: still ours.
            unsafe { sys::icx_rte_pktmbuf_free(m) };
        }
        let taken = if sent < built {
            self.stats.tx_refused += (built - sent) as u64;
            // Frames before the first refused one are done (sent or dropped).
            self.tx_index[sent]
        } else {
            examined
        };
        if sent > 0 {
            self.shared.counters[usize::from(self.queue)]
                .tx_frames
                .fetch_add(sent as u64, Ordering::Relaxed);
        }
        for i in 0..sent {
            let t = &batch[self.tx_index[i]];
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += (HEADERS_LEN + t.len()) as u64;
        }
        batch.drain(..taken);
        (taken, considered)
    }
}

impl Backend for DpdkBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_udp_payload: self.max_udp_payload,
            max_batch: self.max_batch,
            gso: false,
            gro: false,
            zero_copy_send: false,
            registered_buffers: false,
            // One lane (see the module docs): urgent frames are sent, and
            // received, in line with the rest.
            urgent_lane: false,
        }
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        Ok(self.send_run(batch, None).0)
    }

    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let mut delivered = 0;
        // Bounded: at most `max` datagrams, and at most 4 bursts' worth of
        // frames that were not datagrams (ARP, strangers).
        let mut budget = max + 4 * self.max_batch;
        while delivered < max && budget > 0 {
            if self.poll_rx() == 0 {
                break;
            }
            while self.rx_head < self.rx_stash.len() && delivered < max && budget > 0 {
                let m = self.rx_stash[self.rx_head];
                self.rx_head += 1;
                budget -= 1;
                if self.handle_rx(m, f) {
                    delivered += 1;
                }
            }
        }
        // ARP replies produced while receiving.
        self.flush_ctrl();
        Ok(delivered)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let waker = self.waker.clone();
        let poll = self.poll;
        poll.wait(&waker, timeout, || self.poll_rx() > 0);
        Ok(())
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        Some(self.waker.clone())
    }
}

impl Drop for DpdkBackend {
    fn drop(&mut self) {
        for &m in &self.rx_stash[self.rx_head..] {
            // SAFETY: received, never handed out: ours.
            unsafe { sys::icx_rte_pktmbuf_free(m) };
        }
        self.rx_stash.clear();
        for &m in &self.ctrl {
            // SAFETY: queued control frames not sent: ours.
            unsafe { sys::icx_rte_pktmbuf_free(m) };
        }
        self.ctrl.clear();
        {
            let mut r = self
                .shared
                .retired
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            r[usize::from(self.queue)].add(&self.stats);
        }
        self.shared.claimed[usize::from(self.queue)].store(false, Ordering::Release);
        // The port itself stops when its last handle goes (PortShared::drop).
    }
}

/// For the logs: the address this backend answers for.
pub fn describe(b: &DpdkBackend) -> String {
    let tx = b.shared.info.tx_checksum_offload;
    format!(
        "{} on port {} ({}, {}) mac {}; checksum offload: tx ip {} udp {}, rx {}; mtu set through ethdev: {}",
        IpAddr::V4(*b.addr.ip()),
        b.shared.info.port,
        b.shared.info.name,
        b.shared.info.driver,
        b.mac,
        tx.ip_offload,
        tx.udp_offload,
        b.shared.info.rx_checksum_offload,
        b.shared.info.mtu_set
    )
}
