//! IP and UDP sizes, defined once for the wire format, the transport and the
//! backends.

/// Bytes of IPv4 (no options) + UDP header in front of every datagram.
pub const IPV4_UDP_OVERHEAD: usize = 20 + 8;
/// Bytes of IPv6 (no extension headers) + UDP header.
pub const IPV6_UDP_OVERHEAD: usize = 40 + 8;
/// Largest IP packet (the 16-bit total length): the highest path MTU icx
/// reckons with. Linux reports up to this for IPv4 routes, but 65536 for an
/// IPv6 route over a loopback of MTU 65536.
pub const MAX_IP_MTU: usize = 65_535;
/// Largest UDP payload one IPv4 datagram can carry: 65,535 - 20 - 8. (IPv6
/// jumbograms aside, the same bound serves both versions here.)
pub const MAX_UDP_PAYLOAD: usize = MAX_IP_MTU - IPV4_UDP_OVERHEAD;

/// IP + UDP header bytes for the IP version.
pub const fn ip_udp_overhead(ipv6: bool) -> usize {
    if ipv6 {
        IPV6_UDP_OVERHEAD
    } else {
        IPV4_UDP_OVERHEAD
    }
}

/// Largest UDP payload that fits a path MTU without IP fragmentation.
pub const fn max_udp_payload(mtu: usize, ipv6: bool) -> usize {
    mtu.saturating_sub(ip_udp_overhead(ipv6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(MAX_UDP_PAYLOAD, 65_507);
        assert_eq!(max_udp_payload(MAX_IP_MTU, false), MAX_UDP_PAYLOAD);
        assert_eq!(max_udp_payload(MAX_IP_MTU, true), 65_487);
        assert_eq!(max_udp_payload(1500, false), 1472);
        assert_eq!(max_udp_payload(1500, true), 1452);
        assert_eq!(max_udp_payload(9000, false), 8972);
        assert_eq!(max_udp_payload(20, false), 0);
    }
}
