//! The default path MTU of a peer: the MTU of the kernel's route to it
//! (the outgoing interface's MTU unless the route sets its own, lowered by
//! any PMTU exception the kernel has cached for that destination).

use crate::sys;
use icx_core::MAX_IP_MTU;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

/// The MTU of the route to `peer`, in bytes at the IP layer.
///
/// Opens a UDP socket of the peer's family (IPv4 for a v4-mapped address),
/// sets DF (`IP(V6)_PMTUDISC_DO`), `connect`s it to the peer (on UDP that
/// only resolves the route: nothing is sent) and reads `IP_MTU` /
/// `IPV6_MTU`. Fails with the kernel's error when there is no route
/// (`ENETUNREACH`).
pub fn route_mtu(peer: SocketAddr) -> io::Result<usize> {
    let peer = match peer {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, a.port())),
            None => peer,
        },
        v4 => v4,
    };
    let v6 = peer.is_ipv6();
    let (level, discover, dont_fragment, mtu) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
            libc::IPV6_MTU,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
            libc::IP_MTU,
        )
    };
    let context =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {peer}: {e}"));
    let fd = sys::udp_socket(v6)?;
    sys::set_int(fd.as_raw_fd(), level, discover, dont_fragment)
        .map_err(|e| context("MTU_DISCOVER for", e))?;
    sys::connect(&fd, peer).map_err(|e| context("route to", e))?;
    let v = sys::get_int(fd.as_raw_fd(), level, mtu).map_err(|e| context("MTU of route to", e))?;
    usize::try_from(v)
        .ok()
        .filter(|&m| m > 0)
        .ok_or_else(|| io::Error::other(format!("route to {peer}: kernel reported MTU {v}")))
}

/// The path MTU to configure for a peer at `addr`: `configured` when given,
/// else the MTU of the route to `addr` ([`route_mtu`], capped at
/// [`MAX_IP_MTU`]). The session's DF probe checks either at start. (A
/// transport `PeerConfig` is then `PeerConfig::for_addr(node, mtu, addr)`;
/// this crate, a backend, does not depend on the transport.)
pub fn peer_mtu(addr: SocketAddr, configured: Option<usize>) -> io::Result<usize> {
    match configured {
        Some(m) => Ok(m),
        None => {
            let m = route_mtu(addr)?.min(MAX_IP_MTU);
            tracing::debug!(%addr, mtu = m, "icx: peer MTU from the route");
            Ok(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo_mtu() -> usize {
        std::fs::read_to_string("/sys/class/net/lo/mtu")
            .expect("read /sys/class/net/lo/mtu")
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn loopback_route_mtu_is_lo_mtu() {
        let lo = lo_mtu();
        // IPv4 routes report at most IP_MAX_MTU (65535; lo has 65536 here);
        // IPv6 caps at 65535 + 40, above any interface's MTU.
        let lo_v4 = lo.min(MAX_IP_MTU);
        assert_eq!(route_mtu("127.0.0.1:9".parse().unwrap()).unwrap(), lo_v4);
        assert_eq!(
            route_mtu("[::ffff:127.0.0.1]:9".parse().unwrap()).unwrap(),
            lo_v4
        );
        match route_mtu("[::1]:9".parse().unwrap()) {
            Ok(m) => assert_eq!(m, lo),
            // A host without IPv6 on lo has no socket family or no route.
            Err(e) if std::path::Path::new("/proc/net/if_inet6").exists() => {
                panic!("route MTU of ::1: {e}")
            }
            Err(e) => eprintln!("no IPv6 here: {e}"),
        }
    }

    #[test]
    fn peer_mtu_prefers_configured_mtu() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(peer_mtu(v4, Some(1500)).unwrap(), 1500);
        assert_eq!(peer_mtu(v4, None).unwrap(), lo_mtu().min(MAX_IP_MTU));
        if let Ok(m) = peer_mtu("[::1]:7000".parse().unwrap(), None) {
            assert_eq!(m, lo_mtu().min(MAX_IP_MTU));
        }
    }
}
