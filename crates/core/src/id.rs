//! Identities carried in every frame.

use std::fmt;

/// A node's number in the cluster, 1..=N as in Oracle Clusterware.
/// Zero is never a valid node; frames naming it are rejected.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u16);

impl NodeId {
    pub const NONE: NodeId = NodeId(0);

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Keeps two clusters sharing a network from ever accepting each other's frames.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct ClusterId(pub u32);

/// A node's life number: raised on every restart, so frames from (or aimed at)
/// an earlier life are recognised as stale. Zero means "not yet known".
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Incarnation(pub u32);

impl Incarnation {
    pub const UNKNOWN: Incarnation = Incarnation(0);
}

/// Message classes. Each has its own latency histogram and default deadline.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[repr(u8)]
pub enum Channel {
    /// Network heartbeats (membership); small and latency-critical.
    Heartbeat = 0,
    /// Control messages: requests, grants, directory traffic.
    Control = 1,
    /// Database blocks (8-32 KiB typically).
    Block = 2,
}

impl Channel {
    pub const COUNT: usize = 3;
    pub const ALL: [Channel; Channel::COUNT] =
        [Channel::Heartbeat, Channel::Control, Channel::Block];

    pub fn from_u8(v: u8) -> Option<Channel> {
        match v {
            0 => Some(Channel::Heartbeat),
            1 => Some(Channel::Control),
            2 => Some(Channel::Block),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Channel::Heartbeat => "heartbeat",
            Channel::Control => "control",
            Channel::Block => "block",
        }
    }
}

/// The core, of `cores`, that owns `node`'s session on a multi-core node.
///
/// Fibonacci hashing of the node number, scaled to the core count by
/// multiply-and-shift: any numbering of nodes spreads evenly over any
/// number of cores (1..=65536), and the whole computation is four 32-bit
/// operations, which a classic-BPF `SO_REUSEPORT` program repeats in the
/// kernel so each peer's datagrams reach the socket of the core that owns
/// it (`icx_udp::attach_owner_steering`). Changing it changes which core a
/// node's datagrams go to; it is internal to a node, not part of the wire.
pub fn owner_core(node: NodeId, cores: usize) -> usize {
    let cores = cores.clamp(1, 1 << 16) as u32;
    let h = u32::from(node.0).wrapping_mul(OWNER_HASH_MUL) >> 16;
    ((h * cores) >> 16) as usize
}

/// The multiplier of [`owner_core`]: 2^32 / golden ratio, odd.
pub const OWNER_HASH_MUL: u32 = 0x9E37_79B1;
