//! Ethernet II, ARP, IPv4 and UDP headers: build and parse, with the IPv4
//! header checksum and the UDP checksum (RFC 768/1071), in plain Rust so
//! they are tested without DPDK. icx never fragments at the IP layer, so a
//! datagram is always `eth(14) | ipv4(20) | udp(8) | payload` on transmit;
//! on receive, IPv4 options are skipped and IP fragments refused.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  destination MAC (6)  |  source MAC (6)  | ethertype (2)      |  eth
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |    DSCP/ECN   |          Total Length         |  ipv4
//! |         Identification        |Flags|     Fragment Offset     |
//! |  Time to Live |    Protocol   |        Header Checksum        |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |  udp
//! |            Length             |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
#![deny(unsafe_code)]

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub const ETH_HDR_LEN: usize = 14;
pub const IPV4_HDR_LEN: usize = 20;
pub const UDP_HDR_LEN: usize = 8;
/// Ethernet + IPv4 (no options) + UDP.
pub const HEADERS_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + UDP_HDR_LEN;
// The transport sizes frames by icx-core's IP/UDP overhead; the headers built
// here must be that size.
const _: () = assert!(IPV4_HDR_LEN + UDP_HDR_LEN == icx_core::IPV4_UDP_OVERHEAD);
/// An ARP packet for IPv4 over Ethernet, without the Ethernet header.
pub const ARP_LEN: usize = 28;
/// Ethernet frames are padded to 60 bytes (64 with the FCS the NIC adds).
pub const MIN_FRAME_LEN: usize = 60;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const IPPROTO_UDP: u8 = 17;
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;
const IPV4_FRAG_OFFSET: u16 = 0x1fff;
const DEFAULT_TTL: u8 = 64;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `MacAddr` from text: six hex octets separated by `:` or `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadMac(pub String);

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a MAC address (aa:bb:cc:dd:ee:ff): {:?}", self.0)
    }
}

impl std::error::Error for BadMac {}

impl FromStr for MacAddr {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(BadMac(s.to_string()));
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| BadMac(s.to_string()))?;
            n += 1;
        }
        if n != 6 {
            return Err(BadMac(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

/// Ones'-complement sum of `data` (big-endian 16-bit words, a trailing odd
/// byte padded with zero) added to `acc`, not yet folded.
pub fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Adding the four 16-bit words of `v` at once: split into two 32-bit
        // halves so nothing overflows a u64 for any realistic length.
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (end-around carry), not complemented.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(0, data))
}

/// The IPv4 pseudo-header sum for a UDP datagram of `udp_len` bytes.
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u64 {
    let mut acc = sum16(0, &src.octets());
    acc = sum16(acc, &dst.octets());
    acc + u64::from(IPPROTO_UDP) + u64::from(udp_len)
}

/// The UDP checksum of `udp` (header with a zero checksum field, then the
/// payload); 0 is sent as 0xffff (RFC 768: 0 means "no checksum").
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let c = !fold(sum16(pseudo_header_sum(src, dst, udp.len() as u16), udp));
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Addresses of one UDP/IPv4 datagram on Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlow {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Who computes the checksums of a transmitted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TxChecksums {
    /// The port fills in the IPv4 header checksum (left zero here).
    pub ip_offload: bool,
    /// The port computes the UDP checksum (the field gets the pseudo-header
    /// sum, as DPDK's offload expects).
    pub udp_offload: bool,
}

/// Writes Ethernet, IPv4 (DF set) and UDP headers for a payload of
/// `payload_len` bytes already in `frame[HEADERS_LEN..]`, and the
/// checksums not offloaded. `frame` must be exactly `HEADERS_LEN +
/// payload_len` long. Returns false (writing nothing) when the datagram
/// cannot be an IPv4 packet (over 65535 bytes).
pub fn emit_udp(frame: &mut [u8], flow: &UdpFlow, ip_id: u16, csum: TxChecksums) -> bool {
    let payload_len = frame.len().saturating_sub(HEADERS_LEN);
    let ip_len = IPV4_HDR_LEN + UDP_HDR_LEN + payload_len;
    if frame.len() < HEADERS_LEN || ip_len > usize::from(u16::MAX) {
        return false;
    }
    let (eth, rest) = frame.split_at_mut(ETH_HDR_LEN);
    eth[0..6].copy_from_slice(&flow.dst_mac.0);
    eth[6..12].copy_from_slice(&flow.src_mac.0);
    eth[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let (ip, udp) = rest.split_at_mut(IPV4_HDR_LEN);
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&IPV4_DF.to_be_bytes());
    ip[8] = DEFAULT_TTL;
    ip[9] = IPPROTO_UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&flow.src_ip.octets());
    ip[16..20].copy_from_slice(&flow.dst_ip.octets());
    if !csum.ip_offload {
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let udp_len = (UDP_HDR_LEN + payload_len) as u16;
    udp[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    let c = if csum.udp_offload {
        // Offload wants the (uncomplemented) pseudo-header sum in the field.
        fold(pseudo_header_sum(flow.src_ip, flow.dst_ip, udp_len))
    } else {
        udp_checksum(flow.src_ip, flow.dst_ip, udp)
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    true
}

/// What the receive path found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A UDP datagram for us (destination MAC, IP and port checked).
    Udp {
        src_mac: MacAddr,
        src_ip: Ipv4Addr,
        src_port: u16,
        payload: &'a [u8],
    },
    /// An ARP packet (any target: the caller decides).
    Arp(ArpPacket),
    /// Not for us, or not something icx speaks; counted by reason.
    Drop(DropReason),
}

/// Why a received frame was dropped. Each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than the headers it claims, or inconsistent lengths.
    Malformed,
    /// Destination MAC neither ours nor broadcast.
    OtherMac,
    /// An ethertype other than IPv4 and ARP (IPv6, LLDP, VLAN-tagged, ...).
    NotIpv4,
    /// IPv4 to another address (or broadcast/multicast).
    OtherIp,
    /// IPv4 but not UDP (ICMP, TCP, ...).
    NotUdp,
    /// UDP to another port.
    OtherPort,
    /// An IP fragment: icx never fragments, so nobody of ours sent it.
    Fragment,
    BadIpChecksum,
    BadUdpChecksum,
}

/// What the port already verified (checksum offload on receive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RxChecksums {
    /// `Some(good)` when the port checked the IPv4 header checksum.
    pub ip: Option<bool>,
    /// `Some(good)` when the port checked the UDP checksum.
    pub udp: Option<bool>,
}

/// Parses a received Ethernet frame addressed to `(mac, ip, port)`.
/// Broadcast frames are accepted only as ARP. A UDP checksum of zero means
/// "none" (RFC 768) and is accepted.
pub fn parse<'a>(
    frame: &'a [u8],
    mac: MacAddr,
    ip: Ipv4Addr,
    port: u16,
    verified: RxChecksums,
) -> Parsed<'a> {
    use DropReason::*;
    if frame.len() < ETH_HDR_LEN {
        return Parsed::Drop(Malformed);
    }
    let dst_mac = MacAddr(frame[0..6].try_into().unwrap_or_default());
    let src_mac = MacAddr(frame[6..12].try_into().unwrap_or_default());
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let body = &frame[ETH_HDR_LEN..];
    if dst_mac != mac && !dst_mac.is_broadcast() {
        return Parsed::Drop(OtherMac);
    }
    match ethertype {
        ETHERTYPE_ARP => {
            return match ArpPacket::parse(body) {
                Some(a) => Parsed::Arp(a),
                None => Parsed::Drop(Malformed),
            }
        }
        ETHERTYPE_IPV4 => {}
        _ => return Parsed::Drop(NotIpv4),
    }
    if dst_mac != mac {
        // Broadcast IPv4 is nothing icx sends.
        return Parsed::Drop(OtherIp);
    }
    if body.len() < IPV4_HDR_LEN || body[0] >> 4 != 4 {
        return Parsed::Drop(Malformed);
    }
    let ihl = usize::from(body[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([body[2], body[3]]));
    // Ethernet pads short frames: the IP total length rules, never the frame.
    if ihl < IPV4_HDR_LEN || total < ihl || total > body.len() {
        return Parsed::Drop(Malformed);
    }
    let hdr = &body[..ihl];
    let dst_ip = Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19]);
    if dst_ip != ip {
        return Parsed::Drop(OtherIp);
    }
    let ip_ok = verified.ip.unwrap_or_else(|| checksum(hdr) == 0);
    if !ip_ok {
        return Parsed::Drop(BadIpChecksum);
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    if frag & (IPV4_MF | IPV4_FRAG_OFFSET) != 0 {
        return Parsed::Drop(Fragment);
    }
    if hdr[9] != IPPROTO_UDP {
        return Parsed::Drop(NotUdp);
    }
    let src_ip = Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]);
    let udp = &body[ihl..total];
    if udp.len() < UDP_HDR_LEN {
        return Parsed::Drop(Malformed);
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < UDP_HDR_LEN || udp_len > udp.len() {
        return Parsed::Drop(Malformed);
    }
    let udp = &udp[..udp_len];
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    if dst_port != port {
        return Parsed::Drop(OtherPort);
    }
    let sent_csum = u16::from_be_bytes([udp[6], udp[7]]);
    if sent_csum != 0 {
        let ok = verified.udp.unwrap_or_else(|| {
            fold(sum16(
                pseudo_header_sum(src_ip, dst_ip, udp_len as u16),
                udp,
            )) == 0xffff
        });
        if !ok {
            return Parsed::Drop(BadUdpChecksum);
        }
    }
    Parsed::Udp {
        src_mac,
        src_ip,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        payload: &udp[UDP_HDR_LEN..],
    }
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet (RFC 826).
///
/// ```text
/// | htype=1 (2) | ptype=0x0800 (2) | hlen=6 | plen=4 | oper (2) |
/// | sender MAC (6) | sender IP (4) | target MAC (6) | target IP (4) |
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket {
    pub oper: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < ARP_LEN
            || b[0..2] != [0, 1]
            || b[2..4] != ETHERTYPE_IPV4.to_be_bytes()
            || b[4] != 6
            || b[5] != 4
        {
            return None;
        }
        Some(ArpPacket {
            oper: u16::from_be_bytes([b[6], b[7]]),
            sender_mac: MacAddr(b[8..14].try_into().ok()?),
            sender_ip: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
            target_mac: MacAddr(b[18..24].try_into().ok()?),
            target_ip: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
        })
    }

    /// Writes the whole Ethernet frame (padded to the 60-byte minimum) into
    /// `out`, which must hold [`MIN_FRAME_LEN`] bytes; returns its length.
    pub fn emit_frame(&self, eth_src: MacAddr, eth_dst: MacAddr, out: &mut [u8]) -> usize {
        let f = &mut out[..MIN_FRAME_LEN];
        f.fill(0);
        f[0..6].copy_from_slice(&eth_dst.0);
        f[6..12].copy_from_slice(&eth_src.0);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let a = &mut f[ETH_HDR_LEN..ETH_HDR_LEN + ARP_LEN];
        a[0..2].copy_from_slice(&[0, 1]);
        a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        a[4] = 6;
        a[5] = 4;
        a[6..8].copy_from_slice(&self.oper.to_be_bytes());
        a[8..14].copy_from_slice(&self.sender_mac.0);
        a[14..18].copy_from_slice(&self.sender_ip.octets());
        a[18..24].copy_from_slice(&self.target_mac.0);
        a[24..28].copy_from_slice(&self.target_ip.octets());
        MIN_FRAME_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> UdpFlow {
        UdpFlow {
            src_mac: "02:99:00:00:00:01".parse().unwrap(),
            dst_mac: "02:99:00:00:00:02".parse().unwrap(),
            src_ip: Ipv4Addr::new(10, 99, 0, 1),
            dst_ip: Ipv4Addr::new(10, 99, 0, 2),
            src_port: 5000,
            dst_port: 6000,
        }
    }

    fn frame(payload: &[u8], csum: TxChecksums) -> Vec<u8> {
        let mut f = vec![0u8; HEADERS_LEN + payload.len()];
        f[HEADERS_LEN..].copy_from_slice(payload);
        assert!(emit_udp(&mut f, &flow(), 7, csum));
        f
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(0, &d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
        // Odd length pads with zero.
        assert_eq!(fold(sum16(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (checksum 0xb861).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn round_trip_every_small_length() {
        let me = flow();
        for len in 0..300usize {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let f = frame(&payload, TxChecksums::default());
            match parse(
                &f,
                me.dst_mac,
                me.dst_ip,
                me.dst_port,
                RxChecksums::default(),
            ) {
                Parsed::Udp {
                    src_mac,
                    src_ip,
                    src_port,
                    payload: p,
                } => {
                    assert_eq!((src_mac, src_ip, src_port), (me.src_mac, me.src_ip, 5000));
                    assert_eq!(p, &payload[..]);
                }
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn jumbo_round_trip_and_padding() {
        let me = flow();
        let payload = vec![0xabu8; 8972];
        let f = frame(&payload, TxChecksums::default());
        assert_eq!(f.len(), 9014);
        assert!(matches!(
            parse(&f, me.dst_mac, me.dst_ip, 6000, RxChecksums::default()),
            Parsed::Udp { payload: p, .. } if p.len() == 8972
        ));
        // A 1-byte datagram padded to the Ethernet minimum: padding ignored.
        let mut f = frame(&[9], TxChecksums::default());
        f.resize(MIN_FRAME_LEN, 0);
        assert!(matches!(
            parse(&f, me.dst_mac, me.dst_ip, 6000, RxChecksums::default()),
            Parsed::Udp { payload: [9], .. }
        ));
    }

    #[test]
    fn offload_leaves_pseudo_header_sum() {
        let f = frame(
            b"hello",
            TxChecksums {
                ip_offload: true,
                udp_offload: true,
            },
        );
        assert_eq!(&f[24..26], &[0, 0], "IP checksum left to the port");
        let ph = fold(pseudo_header_sum(flow().src_ip, flow().dst_ip, 13));
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), ph);
    }

    #[test]
    fn drops_are_classified() {
        let me = flow();
        let good = frame(b"icx frame", TxChecksums::default());
        fn p(f: &[u8]) -> Parsed<'_> {
            let me = flow();
            parse(
                f,
                me.dst_mac,
                me.dst_ip,
                me.dst_port,
                RxChecksums::default(),
            )
        }
        let d = |r| Parsed::Drop(r);
        assert!(matches!(p(&good), Parsed::Udp { .. }));
        assert_eq!(p(&good[..10]), d(DropReason::Malformed));
        assert_eq!(p(&good[..30]), d(DropReason::Malformed));
        let mut f = good.clone();
        f[0] = 0x04;
        assert_eq!(p(&f), d(DropReason::OtherMac));
        let mut f = good.clone();
        f[0..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(p(&f), d(DropReason::OtherIp), "broadcast IPv4");
        let mut f = good.clone();
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(p(&f), d(DropReason::NotIpv4));
        assert_eq!(
            parse(
                &good,
                me.dst_mac,
                Ipv4Addr::new(10, 99, 0, 9),
                6000,
                RxChecksums::default()
            ),
            d(DropReason::OtherIp)
        );
        assert_eq!(
            parse(&good, me.dst_mac, me.dst_ip, 6001, RxChecksums::default()),
            d(DropReason::OtherPort)
        );
        let mut f = good.clone();
        f[ETH_HDR_LEN + 9] = 1; // ICMP; fix the header checksum
        let c = {
            let h = &mut f[ETH_HDR_LEN..ETH_HDR_LEN + 20];
            h[10..12].copy_from_slice(&[0, 0]);
            checksum(h)
        };
        f[ETH_HDR_LEN + 10..ETH_HDR_LEN + 12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(p(&f), d(DropReason::NotUdp));
        let mut f = good.clone();
        f[ETH_HDR_LEN + 8] ^= 1; // TTL: header checksum now wrong
        assert_eq!(p(&f), d(DropReason::BadIpChecksum));
        let mut f = good.clone();
        *f.last_mut().unwrap() ^= 0x20;
        assert_eq!(p(&f), d(DropReason::BadUdpChecksum));
        // The port's verdict overrides the software check.
        assert!(matches!(
            parse(
                &f,
                me.dst_mac,
                me.dst_ip,
                6000,
                RxChecksums {
                    ip: Some(true),
                    udp: Some(true)
                }
            ),
            Parsed::Udp { .. }
        ));
        // A zero UDP checksum means none.
        let mut f = good.clone();
        f[40..42].copy_from_slice(&[0, 0]);
        *f.last_mut().unwrap() ^= 0x20;
        assert!(matches!(p(&f), Parsed::Udp { .. }));
        // A fragment (MF set), header checksum fixed.
        let mut f = good.clone();
        f[ETH_HDR_LEN + 6] |= 0x20;
        f[ETH_HDR_LEN + 10..ETH_HDR_LEN + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&f[ETH_HDR_LEN..ETH_HDR_LEN + 20]);
        f[ETH_HDR_LEN + 10..ETH_HDR_LEN + 12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(p(&f), d(DropReason::Fragment));
    }

    #[test]
    fn no_input_panics() {
        let me = flow();
        let good = frame(&[1, 2, 3, 4, 5, 6, 7, 8, 9], TxChecksums::default());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            let mut f = good.clone();
            let n = (i % f.len()) + 1;
            f.truncate(n);
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if !f.is_empty() {
                    let at = (x as usize) % f.len();
                    f[at] = (x >> 32) as u8;
                }
            }
            let _ = parse(&f, me.dst_mac, me.dst_ip, 6000, RxChecksums::default());
            let _ = ArpPacket::parse(&f);
        }
    }

    #[test]
    fn arp_round_trip() {
        let a = ArpPacket {
            oper: ARP_REQUEST,
            sender_mac: flow().src_mac,
            sender_ip: flow().src_ip,
            target_mac: MacAddr::ZERO,
            target_ip: flow().dst_ip,
        };
        let mut out = [0u8; MIN_FRAME_LEN];
        let n = a.emit_frame(flow().src_mac, MacAddr::BROADCAST, &mut out);
        assert_eq!(n, 60);
        match parse(
            &out,
            flow().dst_mac,
            flow().dst_ip,
            1,
            RxChecksums::default(),
        ) {
            Parsed::Arp(p) => assert_eq!(p, a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mac_text() {
        let m: MacAddr = "02:99:0a:00:00:ff".parse().unwrap();
        assert_eq!(m.to_string(), "02:99:0a:00:00:ff");
        assert_eq!("02-99-0a-00-00-ff".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "02:99",
            "02:99:0a:00:00:ff:00",
            "zz:99:0a:00:00:ff",
            "002:9:0a:00:00:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
