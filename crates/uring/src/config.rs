//! How to open a [`UringBackend`](crate::UringBackend).

use icx_core::{max_udp_payload, MAX_IP_MTU};
use icx_udp::{SocketConfig, DEFAULT_SOCKET_BUFFER};
use std::net::SocketAddr;
use std::time::Duration;

/// Environment variable that, when set to anything but `0` or empty, makes
/// [`open_backend`](crate::open_backend) use the plain-socket backend, as
/// [`UringConfig::force_sockets`] does.
pub(crate) const FORCE_SOCKETS_ENV: &str = "ICX_FORCE_SOCKETS";

/// Default SEND_ZC threshold: a send (one frame, or one GSO train) of at
/// least this many bytes goes zero-copy; smaller ones are copied.
///
/// Why 16 KiB: a zero-copy send pins the pages and costs a second completion
/// (the notification), which outweighs `memcpy` for small sends; the kernel's
/// MSG_ZEROCOPY notes put the break-even around 10 KB. On loopback the kernel
/// copies anyway, so there only the overhead can be measured:
/// `tests/zc_cost.rs` finds SEND_ZC 16-41 % slower per send from 1.5 KB to
/// 36 KB, which is why `ZeroCopy::Auto` also turns it off once the kernel
/// reports copies. 16 KiB keeps single MTU-1500/9000 frames and an 8 KiB
/// block's train (about 8.8 KB) on the copy path. A zero-copy send is also
/// limited to 17 pages of iovecs (MAX_SKB_FRAGS, else EMSGSIZE), so in
/// practice it serves jumbo-frame trains of up to 4 frames; MTU-1500 trains
/// of 16/32 KiB blocks (12-24 header/payload pairs) are copied.
pub const DEFAULT_ZC_THRESHOLD: usize = 16 << 10;

/// How long `wait` spins before it blocks, by default: longer than a
/// loopback round trip at its 99.9th percentile on the benchmark machine, so
/// request/response traffic almost never sleeps between messages (50 us, the
/// kernel's usual `net.core.busy_read`, left a sleep in the tail:
/// bench/RESULTS.md).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// When to send with IORING_OP_SENDMSG_ZC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Always copy (plain SENDMSG).
    Off,
    /// Zero-copy for sends of at least [`DEFAULT_ZC_THRESHOLD`] bytes, and
    /// turned off at run time (logged) once the kernel keeps reporting that
    /// it copied anyway (loopback, a device without scatter-gather), since
    /// then the attempt is pure overhead.
    #[default]
    Auto,
    /// Zero-copy for sends of at least this many bytes (0: every send),
    /// never turned off at run time.
    Threshold(usize),
}

/// Setup flags to try for the ring, strongest first; each step down is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RingSetup {
    /// SINGLE_ISSUER | DEFER_TASKRUN, then COOP_TASKRUN, then none.
    /// With SINGLE_ISSUER the ring belongs to the first thread that sends,
    /// receives or waits on it: build it anywhere, then use it on one thread.
    #[default]
    Best,
    /// COOP_TASKRUN, then none: for a backend used from several threads in turn.
    Coop,
    /// No setup flags.
    Plain,
}

/// How to open a [`UringBackend`](crate::UringBackend). Every feature flag
/// can be turned off to force its fallback path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Address to bind (link 0's); port 0 picks a free port.
    pub addr: SocketAddr,
    /// Links 1, 2, ...: each gets its socket pair, bound to its address,
    /// in the same ring ([`SocketConfig::more_links`]).
    pub more_links: Vec<SocketAddr>,
    /// Bind each link's sockets to the interface owning its address
    /// ([`SocketConfig::bind_device`]).
    pub bind_device: bool,
    /// Submission queue entries (the completion queue gets 4x).
    pub ring_entries: u32,
    pub ring_setup: RingSetup,
    /// SO_RCVBUF / SO_SNDBUF to request (0: kernel default); a clamp by
    /// `net.core.rmem_max`/`wmem_max` is logged.
    pub recv_buffer: usize,
    pub send_buffer: usize,
    /// Try SO_*BUFFORCE (CAP_NET_ADMIN) first.
    pub force_buffers: bool,
    /// SO_REUSEPORT, so one socket per core can share the port.
    pub reuse_port: bool,
    /// Kernel steering of each datagram to the socket of the core owning
    /// its sender, for this many cores (0: off); see
    /// [`SocketConfig::steer_cores`](icx_udp::SocketConfig).
    pub steer_cores: usize,
    /// Provided receive buffers (rounded up to a power of two, at most
    /// 32768). 0: 256 with GRO (64 KiB each), else 1024.
    pub rx_buffers: usize,
    /// Payload room of each receive buffer; longer datagrams are truncated,
    /// counted and dropped. 0: 64 KiB with GRO (a coalesced train), else 9 KiB.
    pub rx_buf_payload: usize,
    /// Multishot RECVMSG with a provided buffer ring; false forces
    /// single-shot receives, re-posted after each completion.
    pub multishot: bool,
    /// Send trains of equal-size frames as one UDP_SEGMENT (GSO) send;
    /// false forces one datagram per frame.
    pub gso: bool,
    /// UDP_GRO: receive coalesced trains, split here into datagrams.
    pub gro: bool,
    pub zero_copy: ZeroCopy,
    /// `wait` spins on the completion queue instead of blocking (lowest
    /// latency, one busy core).
    pub busy_poll: bool,
    /// Otherwise `wait` spins this long before it blocks: a reply due within
    /// microseconds is picked up without a sleep and a wake-up, while an
    /// idle ring still sleeps (the spin is paid once per wait, and an idle
    /// driver waits for its timers, milliseconds apart). Zero: block at once.
    pub spin: Duration,
    /// Register the pool's regions with the ring (pins them; needs
    /// RLIMIT_MEMLOCK or CAP_IPC_LOCK, else logged and skipped).
    pub register_buffers: bool,
    /// Largest UDP payload advertised (capped by `rx_buf_payload`).
    pub max_udp_payload: usize,
    /// Frames one `send` call takes at most (and datagrams per `recv` batch
    /// reported in the capabilities).
    pub max_batch: usize,
    /// Sends in flight (each one frame or one GSO train).
    pub tx_slots: usize,
    /// Frames in flight over all sends.
    pub tx_frames: usize,
    /// Most segments in one GSO send (the kernel allows 64).
    pub max_gso_segments: usize,
    /// Use the plain-socket backend in [`open_backend`](crate::open_backend)
    /// (also forced by the [`FORCE_SOCKETS_ENV`] variable).
    pub force_sockets: bool,
    /// A second socket on the same address for the urgent lane, in the same
    /// ring ([`SocketConfig::urgent_lane`]; the plain-socket fallback has it too).
    pub urgent_lane: bool,
}

impl UringConfig {
    /// Everything on: multishot + GRO receive, GSO, SEND_ZC (auto), registered
    /// pool, 4 MiB socket buffers, SO_REUSEPORT, the family's largest payload.
    pub fn new(addr: SocketAddr) -> Self {
        UringConfig {
            addr,
            more_links: Vec::new(),
            bind_device: true,
            ring_entries: 512,
            ring_setup: RingSetup::Best,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            force_buffers: true,
            reuse_port: true,
            steer_cores: 0,
            rx_buffers: 0,
            rx_buf_payload: 0,
            multishot: true,
            gso: true,
            gro: true,
            zero_copy: ZeroCopy::Auto,
            busy_poll: false,
            spin: DEFAULT_SPIN,
            register_buffers: true,
            max_udp_payload: max_udp_payload(MAX_IP_MTU, addr.is_ipv6()),
            max_batch: 128,
            tx_slots: 256,
            tx_frames: 1024,
            max_gso_segments: 64,
            force_sockets: false,
            urgent_lane: true,
        }
    }

    /// The plain-socket configuration equivalent to this one.
    /// [`new`](Self::new) for several links, link 0 first (1 to
    /// [`MAX_LINKS`](icx_core::MAX_LINKS) addresses, checked as
    /// [`SocketConfig::with_links`] does).
    pub fn with_links(addrs: &[SocketAddr]) -> std::io::Result<Self> {
        let s = SocketConfig::with_links(addrs)?;
        Ok(UringConfig {
            more_links: s.more_links,
            ..Self::new(s.addr)
        })
    }

    /// Every link's address, link 0 first.
    pub fn link_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.addr)
            .chain(self.more_links.iter().copied())
            .collect()
    }

    /// The socket configuration of every link (the plain-socket fallback's
    /// too).
    pub fn socket_config(&self) -> SocketConfig {
        let mut s = SocketConfig::new(self.addr);
        s.more_links = self.more_links.clone();
        s.bind_device = self.bind_device;
        s.recv_buffer = self.recv_buffer;
        s.send_buffer = self.send_buffer;
        s.force_buffers = self.force_buffers;
        s.reuse_port = self.reuse_port;
        s.steer_cores = self.steer_cores;
        s.urgent_lane = self.urgent_lane;
        s.max_udp_payload = self.max_udp_payload;
        s.max_batch = self.max_batch.clamp(1, 1024);
        if self.rx_buf_payload != 0 {
            s.rx_buf_size = self.rx_buf_payload;
        }
        s
    }

    pub(crate) fn rx_payload(&self, gro: bool) -> usize {
        match self.rx_buf_payload {
            0 if gro => 64 << 10,
            0 => 9 << 10,
            n => n,
        }
    }

    pub(crate) fn rx_count(&self, gro: bool) -> usize {
        let n = match self.rx_buffers {
            0 if gro => 256,
            0 => 1024,
            n => n,
        };
        n.clamp(1, 32768).next_power_of_two()
    }

    pub(crate) fn sockets_forced(&self) -> Option<&'static str> {
        if self.force_sockets {
            return Some("force_sockets set in the configuration");
        }
        match std::env::var_os(FORCE_SOCKETS_ENV) {
            Some(v) if !v.is_empty() && v != "0" => {
                Some("ICX_FORCE_SOCKETS set in the environment")
            }
            _ => None,
        }
    }
}
