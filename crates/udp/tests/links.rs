//! SocketBackend with several links, on loopback addresses only (and a
//! look at the interface a host address binds to, which sends nothing).
#![cfg(target_os = "linux")]

use icx_core::{Backend, MAX_LINKS};
use icx_testkit::sock::check_links;
use icx_udp::ifaddr;
use icx_udp::{SocketBackend, SocketConfig};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| format!("127.0.0.{}:0", i + 1).parse().unwrap())
        .collect()
}

#[test]
fn each_link_sends_from_its_own_socket_and_tags_what_it_receives() {
    for n in [1, 2, MAX_LINKS] {
        let mut a = SocketBackend::bind(SocketConfig::with_links(&addrs(n)).unwrap()).unwrap();
        let mut b = SocketBackend::bind(SocketConfig::with_links(&addrs(n)).unwrap()).unwrap();
        assert_eq!(a.link_count(), n);
        assert_eq!(a.local_addrs().len(), n);
        assert_eq!(a.local_addrs()[0], a.local_addr());
        for (k, addr) in a.local_addrs().iter().enumerate() {
            assert_eq!(addr.ip().to_string(), format!("127.0.0.{}", k + 1));
            // Loopback addresses are never bound to a device.
            assert_eq!(a.link_device(k), None);
        }
        assert!(a.has_urgent_lane());
        assert!(a.dont_fragment().unwrap());
        check_links(&mut a, &mut b);
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.links.unknown_link, 1);
        for k in 0..n {
            assert_eq!(sa.links.sent[k], 2, "link {k}: {sa:?}");
            assert_eq!(sb.links.received[k], 2, "link {k}: {sb:?}");
        }
        assert_eq!(sa.sent, 2 * n as u64);
    }
}

#[test]
fn link_lists_are_checked() {
    assert!(SocketConfig::with_links(&[]).is_err());
    assert!(SocketConfig::with_links(&addrs(MAX_LINKS + 1)).is_err());
    let same: SocketAddr = "127.0.0.1:40111".parse().unwrap();
    let e = SocketConfig::with_links(&[same, same]).unwrap_err();
    assert!(e.to_string().contains("another link's"), "{e}");
    // Two port-0 links on one IP are two sockets on two ports.
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let b = SocketBackend::bind(SocketConfig::with_links(&[any, any]).unwrap()).unwrap();
    let l = b.local_addrs();
    assert_ne!(l[0], l[1]);
    let c = SocketConfig::with_links(&addrs(3)).unwrap();
    assert_eq!(c.link_count(), 3);
    assert_eq!(c.for_link(2).unwrap().addr, addrs(3)[2]);
    assert!(c.for_link(2).unwrap().more_links.is_empty());
    assert!(c.for_link(3).is_none());
}

#[test]
fn a_host_address_binds_its_interface() {
    // Binding sends nothing; a host with only loopback has nothing to check.
    let Some(ip) = ifaddr::local_ipv4_addrs().unwrap().into_iter().next() else {
        eprintln!("SKIPPED: no non-loopback IPv4 address on this host");
        return;
    };
    let dev = ifaddr::interface_of(ip.into()).unwrap().expect("owned");
    let b = SocketBackend::bind(SocketConfig::new(SocketAddr::new(ip.into(), 0))).unwrap();
    // The kernel may refuse SO_BINDTODEVICE to an unprivileged process on
    // old kernels; the backend then runs unbound (logged).
    if let Some(d) = b.link_device(0) {
        assert_eq!(d, dev);
        assert_eq!(
            ifaddr::bound_device(b.as_raw_fd()).unwrap().as_deref(),
            Some(dev.as_str())
        );
        let (_, urgent) = b.link_fds(0).unwrap();
        let u = urgent.expect("urgent lane");
        assert_eq!(
            ifaddr::bound_device(u.as_raw_fd()).unwrap().as_deref(),
            Some(dev.as_str())
        );
    }
    let mut off = SocketConfig::new(SocketAddr::new(ip.into(), 0));
    off.bind_device = false;
    let b = SocketBackend::bind(off).unwrap();
    assert_eq!(b.link_device(0), None);
    assert_eq!(ifaddr::bound_device(b.as_raw_fd()).unwrap(), None);
}
