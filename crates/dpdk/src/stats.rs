//! [`DpdkStats`]: a backend's counters, each received frame in exactly one.
#![deny(unsafe_code)]

use crate::net::DropReason;

/// Counters of one backend. Every received frame lands in exactly one of
/// `delivered`, `arp_received` or a drop counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DpdkStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// UDP datagrams handed to the caller.
    pub delivered: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the tx queue refused (left in the batch for later).
    pub tx_refused: u64,
    /// No mbuf for a frame (left in the batch for later).
    pub tx_no_mbuf: u64,
    /// Frames dropped because the neighbour's MAC is unknown.
    pub unresolved: u64,
    /// Datagrams over the path's largest UDP payload (like EMSGSIZE).
    pub oversize: u64,
    /// Destinations icx cannot reach here (IPv6).
    pub unsupported_dst: u64,
    pub arp_received: u64,
    pub arp_replies_sent: u64,
    pub arp_requests_sent: u64,
    /// Received frames spread over several mbufs (gathered before parsing).
    pub rx_chained: u64,
    pub drop_malformed: u64,
    pub drop_other_mac: u64,
    pub drop_not_ipv4: u64,
    pub drop_other_ip: u64,
    pub drop_not_udp: u64,
    pub drop_other_port: u64,
    pub drop_fragment: u64,
    pub drop_bad_ip_checksum: u64,
    pub drop_bad_udp_checksum: u64,
    /// Received frames too big for the scratch buffer.
    pub drop_oversize_rx: u64,
}

impl DpdkStats {
    /// Frames received that were not for us or not icx-shaped.
    pub fn dropped(&self) -> u64 {
        self.drop_malformed
            + self.drop_other_mac
            + self.drop_not_ipv4
            + self.drop_other_ip
            + self.drop_not_udp
            + self.drop_other_port
            + self.drop_fragment
            + self.drop_bad_ip_checksum
            + self.drop_bad_udp_checksum
            + self.drop_oversize_rx
    }

    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &DpdkStats) {
        let DpdkStats {
            rx_frames,
            rx_bytes,
            delivered,
            tx_frames,
            tx_bytes,
            tx_refused,
            tx_no_mbuf,
            unresolved,
            oversize,
            unsupported_dst,
            arp_received,
            arp_replies_sent,
            arp_requests_sent,
            rx_chained,
            drop_malformed,
            drop_other_mac,
            drop_not_ipv4,
            drop_other_ip,
            drop_not_udp,
            drop_other_port,
            drop_fragment,
            drop_bad_ip_checksum,
            drop_bad_udp_checksum,
            drop_oversize_rx,
        } = *o;
        self.rx_frames += rx_frames;
        self.rx_bytes += rx_bytes;
        self.delivered += delivered;
        self.tx_frames += tx_frames;
        self.tx_bytes += tx_bytes;
        self.tx_refused += tx_refused;
        self.tx_no_mbuf += tx_no_mbuf;
        self.unresolved += unresolved;
        self.oversize += oversize;
        self.unsupported_dst += unsupported_dst;
        self.arp_received += arp_received;
        self.arp_replies_sent += arp_replies_sent;
        self.arp_requests_sent += arp_requests_sent;
        self.rx_chained += rx_chained;
        self.drop_malformed += drop_malformed;
        self.drop_other_mac += drop_other_mac;
        self.drop_not_ipv4 += drop_not_ipv4;
        self.drop_other_ip += drop_other_ip;
        self.drop_not_udp += drop_not_udp;
        self.drop_other_port += drop_other_port;
        self.drop_fragment += drop_fragment;
        self.drop_bad_ip_checksum += drop_bad_ip_checksum;
        self.drop_bad_udp_checksum += drop_bad_udp_checksum;
        self.drop_oversize_rx += drop_oversize_rx;
    }

    pub(crate) fn count_drop(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Malformed => &mut self.drop_malformed,
            DropReason::OtherMac => &mut self.drop_other_mac,
            DropReason::NotIpv4 => &mut self.drop_not_ipv4,
            DropReason::OtherIp => &mut self.drop_other_ip,
            DropReason::NotUdp => &mut self.drop_not_udp,
            DropReason::OtherPort => &mut self.drop_other_port,
            DropReason::Fragment => &mut self.drop_fragment,
            DropReason::BadIpChecksum => &mut self.drop_bad_ip_checksum,
            DropReason::BadUdpChecksum => &mut self.drop_bad_udp_checksum,
        };
        *c += 1;
    }
}
