//! [`SocketConfig`]: how a [`SocketBackend`](crate::SocketBackend) (and
//! io_uring's sockets) are opened, and what the kernel granted of it.

use icx_core::{max_udp_payload, MAX_IP_MTU, MAX_LINKS};
use std::io;
use std::net::SocketAddr;

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

/// How to open a [`SocketBackend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Address to bind (link 0's); port 0 picks a free port.
    pub addr: SocketAddr,
    /// The addresses of links 1, 2, ... (at most [`MAX_LINKS`] - 1): each
    /// link gets sockets of its own (the urgent lane's too), bound to its
    /// address. Empty: one link. Port 0 picks a free port per link.
    pub more_links: Vec<SocketAddr>,
    /// Bind each link's sockets to the interface that owns its address
    /// (SO_BINDTODEVICE, the interface found with `getifaddrs`), so what
    /// they send leaves by that link's NIC whatever the routing table says
    /// (strict rp_filter on the peer drops a reply that leaves by another).
    /// Skipped for the wildcard and loopback addresses and addresses no
    /// interface owns; refused by the kernel, logged and skipped.
    pub bind_device: bool,
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
            more_links: Vec::new(),
            bind_device: true,
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

    /// [`new`](Self::new) for several links, link 0 first (1 to
    /// [`MAX_LINKS`] addresses).
    pub fn with_links(addrs: &[SocketAddr]) -> io::Result<Self> {
        let Some((&first, more)) = addrs.split_first() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a backend has 1 to 4 links, not 0",
            ));
        };
        let cfg = SocketConfig {
            more_links: more.to_vec(),
            ..Self::new(first)
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// How many links: 1 + `more_links`.
    pub fn link_count(&self) -> usize {
        1 + self.more_links.len()
    }

    /// Every link's address, link 0 first.
    pub fn link_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.addr)
            .chain(self.more_links.iter().copied())
            .collect()
    }

    /// This configuration for link `link` alone: its address as `addr`,
    /// no further links (what each link's sockets are bound with).
    pub fn for_link(&self, link: usize) -> Option<SocketConfig> {
        let addr = *self.link_addrs().get(link)?;
        Some(SocketConfig {
            addr,
            more_links: Vec::new(),
            ..self.clone()
        })
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

    /// Checks the limits and the links (at most [`MAX_LINKS`], no fixed
    /// address twice), as binding does.
    pub fn validate(&self) -> io::Result<()> {
        let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if self.link_count() > MAX_LINKS {
            return bad(format!(
                "{} links configured, at most {MAX_LINKS}",
                self.link_count()
            ));
        }
        let links = self.link_addrs();
        for (i, a) in links.iter().enumerate() {
            // Two links on one fixed address would join one SO_REUSEPORT
            // group and split each other's traffic.
            if a.port() != 0 && links[..i].contains(a) {
                return bad(format!("link {i}'s address {a} is another link's too"));
            }
        }
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
