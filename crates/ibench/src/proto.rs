//! The ibench application protocol: a small header at the front of every
//! icx message (and of every datagram of the plain-UDP baseline).
//!
//! All integers little-endian. Layout (`HEADER_LEN` = 32 bytes):
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..2   | magic `0x4942` ("IB") |
//! | 2      | version (1) |
//! | 3      | kind ([`Kind`]) |
//! | 4..8   | reply size in bytes (block requests; pings reply with their own size) |
//! | 8..16  | sequence number, chosen by the client |
//! | 16..24 | client timestamp (ns on the client's clock), echoed in the reply |
//! | 24..26 | client node id (3-way) |
//! | 26..28 | holder node id (3-way) |
//! | 28..32 | flags (bit 0: baseline one-way message wants an ack) |
//!
//! Routed kinds (3-way block requests) add `ROUTE_LEN` bytes: the client's
//! address then the holder's, each as family (4 or 6), port (u16), 16 bytes
//! of IP (IPv4 in the first 4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC: u16 = 0x4942;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 32;
const ADDR_LEN: usize = 19;
pub const ROUTE_LEN: usize = 2 * ADDR_LEN + 2;
/// Smallest message that can carry a routed (3-way) request.
pub const ROUTED_LEN: usize = HEADER_LEN + ROUTE_LEN;
pub const FLAG_ACK: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Ping = 1,
    Pong = 2,
    OneWay = 3,
    BlockReq = 4,
    /// Client -> forwarding server: please have the holder ship the block.
    FwdBlockReq = 5,
    /// Forwarding server -> holder: ship this block to the client.
    Forwarded = 6,
    Block = 7,
    StatsReq = 8,
    StatsReply = 9,
    /// Baseline only: a one-way message's acknowledgement.
    OneWayAck = 10,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Ping,
            2 => Kind::Pong,
            3 => Kind::OneWay,
            4 => Kind::BlockReq,
            5 => Kind::FwdBlockReq,
            6 => Kind::Forwarded,
            7 => Kind::Block,
            8 => Kind::StatsReq,
            9 => Kind::StatsReply,
            10 => Kind::OneWayAck,
            _ => return None,
        })
    }

    pub fn routed(self) -> bool {
        matches!(self, Kind::FwdBlockReq | Kind::Forwarded)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub reply_size: u32,
    pub seq: u64,
    pub ts: u64,
    pub client_node: u16,
    pub holder_node: u16,
    pub flags: u32,
    /// Present for routed kinds.
    pub client_addr: Option<SocketAddr>,
    pub holder_addr: Option<SocketAddr>,
}

impl Header {
    pub fn new(kind: Kind, seq: u64, ts: u64) -> Self {
        Header {
            kind,
            reply_size: 0,
            seq,
            ts,
            client_node: 0,
            holder_node: 0,
            flags: 0,
            client_addr: None,
            holder_addr: None,
        }
    }

    /// Bytes this header needs at the front of a message.
    pub fn len(&self) -> usize {
        if self.kind.routed() {
            ROUTED_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header at the front of `out`; the rest is left as is.
    /// Returns false if `out` is too short.
    pub fn write(&self, out: &mut [u8]) -> bool {
        if out.len() < self.len() {
            return false;
        }
        out[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        out[2] = VERSION;
        out[3] = self.kind as u8;
        out[4..8].copy_from_slice(&self.reply_size.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.ts.to_le_bytes());
        out[24..26].copy_from_slice(&self.client_node.to_le_bytes());
        out[26..28].copy_from_slice(&self.holder_node.to_le_bytes());
        out[28..32].copy_from_slice(&self.flags.to_le_bytes());
        if self.kind.routed() {
            write_addr(
                self.client_addr,
                &mut out[HEADER_LEN..HEADER_LEN + ADDR_LEN],
            );
            write_addr(
                self.holder_addr,
                &mut out[HEADER_LEN + ADDR_LEN..HEADER_LEN + 2 * ADDR_LEN],
            );
            out[HEADER_LEN + 2 * ADDR_LEN..ROUTED_LEN].fill(0);
        }
        true
    }

    /// Parses untrusted bytes; `None` for anything that is not a header.
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN || u16::from_le_bytes([b[0], b[1]]) != MAGIC || b[2] != VERSION {
            return None;
        }
        let kind = Kind::from_u8(b[3])?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let mut h = Header {
            kind,
            reply_size: u32_at(4),
            seq: u64_at(8),
            ts: u64_at(16),
            client_node: u16::from_le_bytes([b[24], b[25]]),
            holder_node: u16::from_le_bytes([b[26], b[27]]),
            flags: u32_at(28),
            client_addr: None,
            holder_addr: None,
        };
        if kind.routed() {
            if b.len() < ROUTED_LEN {
                return None;
            }
            h.client_addr = read_addr(&b[HEADER_LEN..HEADER_LEN + ADDR_LEN]);
            h.holder_addr = read_addr(&b[HEADER_LEN + ADDR_LEN..HEADER_LEN + 2 * ADDR_LEN]);
        }
        Some(h)
    }
}

fn write_addr(a: Option<SocketAddr>, out: &mut [u8]) {
    out.fill(0);
    let Some(a) = a else { return };
    out[1..3].copy_from_slice(&a.port().to_le_bytes());
    match a.ip() {
        IpAddr::V4(ip) => {
            out[0] = 4;
            out[3..7].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[0] = 6;
            out[3..19].copy_from_slice(&ip.octets());
        }
    }
}

fn read_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_le_bytes([b[1], b[2]]);
    let ip = match b[0] {
        4 => IpAddr::V4(Ipv4Addr::new(b[3], b[4], b[5], b[6])),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[3..19]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    (port != 0).then_some(SocketAddr::new(ip, port))
}

/// Transport counters of one session (as either side sees it); summed or
/// differenced over a measured phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub sent: u64,
    pub received: u64,
    pub retransmitted: u64,
    pub lost: u64,
    pub corrupt: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub rejected: u64,
    pub frames_sent: u64,
}

impl Counters {
    pub fn from_peer(p: &icx_transport::PeerStats) -> Self {
        Counters {
            sent: p.sent,
            received: p.received,
            retransmitted: p.retransmitted,
            lost: p.lost,
            corrupt: p.corrupt,
            duplicate: p.duplicate,
            out_of_order: p.out_of_order,
            rejected: p.rejected,
            frames_sent: p.frames_sent,
        }
    }

    pub fn add(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.received += o.received;
        self.retransmitted += o.retransmitted;
        self.lost += o.lost;
        self.corrupt += o.corrupt;
        self.duplicate += o.duplicate;
        self.out_of_order += o.out_of_order;
        self.rejected += o.rejected;
        self.frames_sent += o.frames_sent;
    }

    pub fn minus(&self, o: &Counters) -> Counters {
        Counters {
            sent: self.sent.saturating_sub(o.sent),
            received: self.received.saturating_sub(o.received),
            retransmitted: self.retransmitted.saturating_sub(o.retransmitted),
            lost: self.lost.saturating_sub(o.lost),
            corrupt: self.corrupt.saturating_sub(o.corrupt),
            duplicate: self.duplicate.saturating_sub(o.duplicate),
            out_of_order: self.out_of_order.saturating_sub(o.out_of_order),
            rejected: self.rejected.saturating_sub(o.rejected),
            frames_sent: self.frames_sent.saturating_sub(o.frames_sent),
        }
    }
}

/// A server's counters, sent in a stats reply after the header as
/// little-endian u64s in this order (new fields are only ever appended).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// CPU time (user + system) of the server's serving thread, ns.
    pub cpu_ns: u64,
    /// Server's monotonic clock, ns since it started.
    pub wall_ns: u64,
    pub mtu: u64,
    pub node: u64,
    /// One-way messages and bytes received from the asking client.
    pub oneway_msgs: u64,
    pub oneway_bytes: u64,
    /// The server's transport counters for its session with the client.
    pub session: Counters,
    /// Datagrams the server rejected in all (foreign, malformed, corrupt,
    /// other cluster, unknown node, misdirected, stale).
    pub endpoint_rejected: u64,
}

impl ServerStats {
    const FIELDS: usize = 16;
    pub const LEN: usize = Self::FIELDS * 8;

    fn as_array(&self) -> [u64; Self::FIELDS] {
        [
            self.cpu_ns,
            self.wall_ns,
            self.mtu,
            self.node,
            self.oneway_msgs,
            self.oneway_bytes,
            self.session.sent,
            self.session.received,
            self.session.retransmitted,
            self.session.lost,
            self.session.corrupt,
            self.session.duplicate,
            self.session.out_of_order,
            self.session.rejected,
            self.session.frames_sent,
            self.endpoint_rejected,
        ]
    }

    pub fn write(&self, out: &mut [u8]) {
        for (i, v) in self.as_array().iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    pub fn parse(b: &[u8]) -> Option<ServerStats> {
        if b.len() < Self::LEN {
            return None;
        }
        let v = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        Some(ServerStats {
            cpu_ns: v(0),
            wall_ns: v(1),
            mtu: v(2),
            node: v(3),
            oneway_msgs: v(4),
            oneway_bytes: v(5),
            session: Counters {
                sent: v(6),
                received: v(7),
                retransmitted: v(8),
                lost: v(9),
                corrupt: v(10),
                duplicate: v(11),
                out_of_order: v(12),
                rejected: v(13),
                frames_sent: v(14),
            },
            endpoint_rejected: v(15),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut h = Header::new(Kind::FwdBlockReq, 7, 99);
        h.reply_size = 8192;
        h.client_node = 1234;
        h.holder_node = 2;
        h.client_addr = Some("127.0.0.1:4000".parse().unwrap());
        h.holder_addr = Some("[::1]:5000".parse().unwrap());
        let mut b = [0u8; ROUTED_LEN];
        assert!(h.write(&mut b));
        assert_eq!(Header::parse(&b), Some(h));
        assert_eq!(Header::parse(&b[..HEADER_LEN]), None);
        let p = Header::new(Kind::Ping, 1, 2);
        let mut b = [0u8; HEADER_LEN];
        assert!(p.write(&mut b));
        assert_eq!(Header::parse(&b), Some(p));
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert_eq!(Header::parse(b""), None);
        assert_eq!(Header::parse(&[0xffu8; 64]), None);
        let mut b = [0u8; HEADER_LEN];
        Header::new(Kind::Ping, 1, 2).write(&mut b);
        b[3] = 200;
        assert_eq!(Header::parse(&b), None);
    }

    #[test]
    fn stats_round_trip() {
        let s = ServerStats {
            cpu_ns: 1,
            endpoint_rejected: 16,
            session: Counters {
                retransmitted: 9,
                ..Counters::default()
            },
            ..ServerStats::default()
        };
        let mut b = [0u8; ServerStats::LEN];
        s.write(&mut b);
        assert_eq!(ServerStats::parse(&b), Some(s));
    }
}
