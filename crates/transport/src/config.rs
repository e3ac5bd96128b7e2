//! What an endpoint and its peers are configured with, and the errors of
//! configuring and sending.

use crate::CcConfig;
use icx_core::{Channel, ClusterId, Duration, Incarnation, NodeId, MAX_LINKS};
use std::fmt;
use std::net::SocketAddr;

/// Endpoint-wide settings. Every timer is here so tests can run in
/// milliseconds and production in seconds.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: ClusterId,
    pub node: NodeId,
    pub incarnation: Incarnation,
    /// Largest message accepted for sending or reassembly.
    pub max_message: usize,
    /// Block-channel bytes in flight per peer (sent, not yet acked or
    /// declared lost); the congestion window and the receiver's credit may
    /// hold it lower.
    pub window_bytes: usize,
    /// Bytes in flight per peer on each of the heartbeat and control
    /// channels: a reserve of their own, outside the block window, so blocks
    /// never hold them back.
    pub small_window_bytes: usize,
    /// Partially reassembled block bytes a receiver holds per peer before it
    /// stops granting credit.
    pub recv_buffer_bytes: usize,
    /// Partially reassembled heartbeat and control bytes a receiver holds per
    /// peer, apart from the blocks' budget. Keep it at least twice
    /// `small_window_bytes`.
    pub small_recv_bytes: usize,
    /// Delay-based congestion control of the block channel.
    pub cc: CcConfig,
    /// Messages queued per peer (sending or awaiting ack) before `send`
    /// refuses with [`SendError::QueueFull`].
    pub max_queued: usize,
    /// Longest a receiver sits on an ack hoping to cover a second frame.
    pub ack_delay: Duration,
    /// Longest the ack of a just-completed message waits for a reply to
    /// piggyback on (request/response traffic then sends no ack frames).
    pub reply_ack_delay: Duration,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// Timer resolution assumed for loss detection.
    pub granularity: Duration,
    /// Default delivery deadline per channel (from `send`).
    pub deadline: [Duration; Channel::COUNT],
    /// Interval between path-MTU probes until one is answered.
    pub probe_interval: Duration,
    /// Full-size probes that may go unanswered, while small ones get through,
    /// before the path is declared too small for its configured MTU.
    pub probe_attempts: u32,
    /// Accept frames from nodes not configured, adding a session for each
    /// (up to `max_peers`) with this path: for servers such as `ibench
    /// server` that serve any client. Off for cluster members, whose peers
    /// are known.
    pub accept_unknown: Option<PeerTemplate>,
    pub max_peers: usize,
    /// Authenticate (and optionally encrypt) every frame under these keys
    /// instead of sealing it with CRC32C; frames without a valid tag are
    /// then refused. Fixed for the endpoint's life; its keys can change
    /// ([`crate::Endpoint::set_keyring`]).
    pub auth: Option<icx_wire::Keyring>,
    /// How traffic uses a peer's links when it has several.
    pub link_mode: LinkMode,
    /// Interval of the keepalive probe each link of a multi-link peer
    /// sends, answered on the link it came by.
    pub link_probe_interval: Duration,
    /// A link whose keepalives go unanswered this long is taken out of
    /// service: its frames in flight are sent again by the others.
    pub link_timeout: Duration,
    /// Answered keepalives in a row a failed link needs before it carries
    /// traffic again; each failure soon after a readmission doubles it
    /// (damping, up to [`MAX_LINK_DAMPING`] times), so a flapping link
    /// cannot start a retransmission storm.
    pub link_up_probes: u32,
}

/// The most a flapping link's readmission run is multiplied by.
pub const MAX_LINK_DAMPING: u32 = 32;

/// How a peer's links share its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkMode {
    /// The healthy link of highest priority carries everything (ties go to
    /// the lowest link number); the others stand by, probed.
    #[default]
    ActivePassive,
    /// Every healthy link carries traffic, in proportion to its weight
    /// over its RTT.
    Spread,
}

impl LinkMode {
    /// The name config files and command lines use.
    pub fn name(self) -> &'static str {
        match self {
            LinkMode::ActivePassive => "active-passive",
            LinkMode::Spread => "spread",
        }
    }

    pub fn parse(s: &str) -> Option<LinkMode> {
        match s {
            "active-passive" | "ap" => Some(LinkMode::ActivePassive),
            "spread" => Some(LinkMode::Spread),
            _ => None,
        }
    }
}

/// The path assumed for peers learnt from their first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTemplate {
    pub mtu: usize,
    pub ipv6: bool,
}

impl Config {
    pub fn new(cluster: ClusterId, node: NodeId, incarnation: Incarnation) -> Self {
        Config {
            cluster,
            node,
            incarnation,
            max_message: 1 << 20,
            window_bytes: 1 << 20,
            small_window_bytes: 256 << 10,
            recv_buffer_bytes: 4 << 20,
            small_recv_bytes: 1 << 20,
            cc: CcConfig::default(),
            max_queued: 4096,
            ack_delay: Duration::from_micros(200),
            reply_ack_delay: Duration::from_micros(50),
            initial_rtt: Duration::from_millis(1),
            min_rto: Duration::from_millis(2),
            max_rto: Duration::from_millis(500),
            granularity: Duration::from_micros(100),
            deadline: [
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(5),
            ],
            probe_interval: Duration::from_millis(100),
            probe_attempts: 5,
            accept_unknown: None,
            max_peers: 1024,
            auth: None,
            link_mode: LinkMode::ActivePassive,
            link_probe_interval: Duration::from_millis(100),
            link_timeout: Duration::from_millis(300),
            link_up_probes: 3,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.node.is_valid() {
            return Err(ConfigError::Invalid("node id 0 is reserved"));
        }
        if self.incarnation == Incarnation::UNKNOWN {
            return Err(ConfigError::Invalid("incarnation 0 is reserved"));
        }
        if self.max_message == 0 || self.max_message > u32::MAX as usize {
            return Err(ConfigError::Invalid("max_message must be 1..=4 GiB"));
        }
        if self.window_bytes == 0 || self.small_window_bytes == 0 || self.max_queued == 0 {
            return Err(ConfigError::Invalid(
                "window_bytes, small_window_bytes and max_queued must be > 0",
            ));
        }
        if self.cc.min_window == 0 || self.cc.base_rtt_window.is_zero() {
            return Err(ConfigError::Invalid(
                "cc.min_window and cc.base_rtt_window must be > 0",
            ));
        }
        if self.link_probe_interval.is_zero() || self.link_timeout < self.link_probe_interval {
            return Err(ConfigError::Invalid(
                "link_probe_interval must be > 0 and at most link_timeout",
            ));
        }
        if self.link_up_probes == 0 {
            return Err(ConfigError::Invalid("link_up_probes must be > 0"));
        }
        if self.min_rto > self.max_rto {
            return Err(ConfigError::Invalid("min_rto above max_rto"));
        }
        Ok(())
    }
}

/// One interconnect link to a peer: a private network with a path of its
/// own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Path MTU at the IP layer (1500, 9000, ...).
    pub mtu: usize,
    pub ipv6: bool,
    /// Active/passive: the healthy link of highest priority carries the
    /// traffic.
    pub priority: u8,
    /// Spreading: the link's capacity relative to the others' (1 each by
    /// default).
    pub weight: u32,
}

impl LinkConfig {
    pub fn new(mtu: usize, ipv6: bool) -> Self {
        LinkConfig {
            mtu,
            ipv6,
            priority: 0,
            weight: 1,
        }
    }

    fn path(&self, node: NodeId) -> PeerConfig {
        PeerConfig {
            node,
            mtu: self.mtu,
            ipv6: self.ipv6,
            links: Links::default(),
        }
    }
}

/// A peer's links beyond the default single one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Links {
    n: u8,
    l: [Option<LinkConfig>; MAX_LINKS],
}

/// A peer and the path to it: one link of `mtu` unless
/// [`PeerConfig::with_links`] gave it several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    pub node: NodeId,
    /// Path MTU at the IP layer (1500, 9000, ...); link 0's with several.
    pub mtu: usize,
    pub ipv6: bool,
    pub links: Links,
}

impl PeerConfig {
    pub fn new(node: NodeId, mtu: usize) -> Self {
        PeerConfig {
            node,
            mtu,
            ipv6: false,
            links: Links::default(),
        }
    }

    /// Picks the IP version from the peer's address.
    pub fn for_addr(node: NodeId, mtu: usize, addr: SocketAddr) -> Self {
        PeerConfig {
            ipv6: addr.is_ipv6(),
            ..PeerConfig::new(node, mtu)
        }
    }

    /// The peer reached over several links (1 to [`MAX_LINKS`]), link 0
    /// first; `mtu` and `ipv6` become link 0's.
    pub fn with_links(mut self, links: &[LinkConfig]) -> Result<Self, ConfigError> {
        if links.is_empty() || links.len() > MAX_LINKS {
            return Err(ConfigError::Invalid("a peer has 1 to 4 links"));
        }
        let mut l = [None; MAX_LINKS];
        for (i, c) in links.iter().enumerate() {
            c.path(self.node).check_mtu()?;
            l[i] = Some(*c);
        }
        self.links = Links {
            n: links.len() as u8,
            l,
        };
        self.mtu = links[0].mtu;
        self.ipv6 = links[0].ipv6;
        Ok(self)
    }

    /// How many links reach the peer.
    pub fn link_count(&self) -> usize {
        usize::from(self.links.n).max(1)
    }

    /// Link `i`'s settings.
    pub fn link(&self, i: usize) -> Option<LinkConfig> {
        if self.links.n == 0 {
            return (i == 0).then(|| LinkConfig::new(self.mtu, self.ipv6));
        }
        self.links.l.get(i).copied().flatten()
    }

    /// Link `i`'s path as a single-link config (for its MTU arithmetic).
    pub fn link_path(&self, i: usize) -> Option<PeerConfig> {
        self.link(i).map(|l| l.path(self.node))
    }

    /// The same links with every link's MTU set to `mtu`.
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        for l in self.links.l.iter_mut().flatten() {
            l.mtu = mtu;
        }
        self
    }

    /// Largest UDP payload on this path.
    pub fn max_udp_payload(&self) -> usize {
        icx_wire::max_udp_payload(self.mtu, self.ipv6)
    }

    /// Largest frame on this path before sealing: the UDP payload less the
    /// tag an authenticated frame carries.
    pub fn max_frame(&self, cfg: &Config) -> usize {
        let tag = if cfg.auth.is_some() {
            icx_wire::TAG_LEN
        } else {
            0
        };
        self.max_udp_payload() - tag
    }

    /// The MTU leaves room for a data header and some block, and needs no
    /// datagram larger than IP carries: what every host checks before it
    /// hands a path to an endpoint.
    pub fn check_mtu(&self) -> Result<(), ConfigError> {
        let overhead = icx_wire::ip_udp_overhead(self.ipv6);
        let min = icx_wire::MIN_UDP_PAYLOAD + overhead;
        let max = icx_wire::MAX_UDP_PAYLOAD + overhead;
        if self.mtu < min {
            return Err(ConfigError::MtuTooSmall {
                node: self.node,
                mtu: self.mtu,
                min,
            });
        }
        if self.mtu > max {
            return Err(ConfigError::MtuTooLarge {
                node: self.node,
                mtu: self.mtu,
                max,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Invalid(&'static str),
    DuplicatePeer(NodeId),
    UnknownPeer(NodeId),
    /// The MTU leaves no room for block data after IP, UDP and icx headers.
    MtuTooSmall {
        node: NodeId,
        mtu: usize,
        min: usize,
    },
    /// The MTU would need UDP datagrams larger than IP can carry.
    MtuTooLarge {
        node: NodeId,
        mtu: usize,
        max: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid(why) => write!(f, "invalid transport config: {why}"),
            ConfigError::DuplicatePeer(n) => write!(f, "peer {n} configured twice"),
            ConfigError::UnknownPeer(n) => write!(f, "unknown peer {n}"),
            ConfigError::MtuTooLarge { node, mtu, max } => {
                write!(f, "MTU {mtu} for peer {node} is above the maximum {max}")
            }
            ConfigError::MtuTooSmall { node, mtu, min } => {
                write!(f, "MTU {mtu} for peer {node} is below the minimum {min}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer(NodeId),
    TooLarge {
        len: usize,
        max: usize,
    },
    /// The peer's queue is full: back off and retry after acks drain it.
    QueueFull,
    /// The pool has no buffer for the copy `send_bytes` makes.
    NoBuffer,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(n) => write!(f, "unknown peer {n}"),
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds max {max}")
            }
            SendError::QueueFull => write!(f, "send queue full"),
            SendError::NoBuffer => write!(f, "no free pool buffer"),
        }
    }
}

impl std::error::Error for SendError {}
