//! Peers with several interconnect links: one address per link, and the
//! checks a peer's links must pass before its session is created.

use crate::pump::check_backend_mtu;
use crate::runtime::PeerError;
use icx_core::{NodeId, MAX_LINKS};
use icx_transport::{ConfigError, PeerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;

/// A peer's address on each of its links (link 0 first); a link may have
/// none yet (a peer learnt by one link only): frames the transport sends
/// by such a link go by the first link with an address ([`route`](Self::route)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkAddrs([Option<SocketAddr>; MAX_LINKS]);

impl LinkAddrs {
    /// One link at `addr`.
    pub fn one(addr: SocketAddr) -> Self {
        let mut a = LinkAddrs::default();
        a.0[0] = Some(addr);
        a
    }

    /// Link `i` at `addrs[i]`; `None` for no address or more than
    /// [`MAX_LINKS`].
    pub fn new(addrs: &[SocketAddr]) -> Option<Self> {
        if addrs.is_empty() || addrs.len() > MAX_LINKS {
            return None;
        }
        let mut a = LinkAddrs::default();
        for (i, x) in addrs.iter().enumerate() {
            a.0[i] = Some(*x);
        }
        Some(a)
    }

    /// Link `link`'s address.
    pub fn get(&self, link: u8) -> Option<SocketAddr> {
        self.0.get(usize::from(link)).copied().flatten()
    }

    /// Sets link `link`'s address, returning the one it replaces; a link
    /// past [`MAX_LINKS`] is ignored.
    pub fn set(&mut self, link: u8, addr: SocketAddr) -> Option<SocketAddr> {
        self.0.get_mut(usize::from(link))?.replace(addr)
    }

    /// Where a frame for `link` goes: by `link` to its address, or, when
    /// it has none, by the first link that has one (a peer learnt by its
    /// frames on another link: `accept_unknown` sessions have one link).
    pub fn route(&self, link: u8) -> Option<(u8, SocketAddr)> {
        match self.get(link) {
            Some(a) => Some((link, a)),
            None => self.iter().next(),
        }
    }

    /// The links that have an address, with it.
    pub fn iter(&self) -> impl Iterator<Item = (u8, SocketAddr)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (i as u8, a)))
    }

    /// Every link's address up to the last that has one (`None` for a link
    /// without), link 0 first.
    pub fn to_vec(&self) -> Vec<Option<SocketAddr>> {
        let n = self
            .0
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        self.0[..n].to_vec()
    }
}

/// Where each peer is sent to, per link.
pub(crate) type PeerTable = HashMap<NodeId, LinkAddrs>;

/// Checks a peer with one address per link against the backend it will be
/// sent by (`max_udp`: its largest UDP payload; `backend_links`: its link
/// count): as many addresses as the peer has links, each of its link's IP
/// version, no more links than the backend has, and each link's MTU within
/// what the backend carries.
pub(crate) fn check_peer_links(
    peer: &PeerConfig,
    addrs: &[SocketAddr],
    max_udp: usize,
    backend_links: usize,
) -> Result<LinkAddrs, PeerError> {
    let n = peer.link_count();
    if addrs.len() != n {
        return Err(ConfigError::Invalid("a peer needs one address per link").into());
    }
    if n > backend_links {
        return Err(ConfigError::Invalid(
            "the peer has more links than this node's backend (bind one local address per link)",
        )
        .into());
    }
    for (i, addr) in addrs.iter().enumerate() {
        let path = peer
            .link_path(i)
            .ok_or(ConfigError::Invalid("a peer needs one address per link"))?;
        if path.ipv6 != addr.is_ipv6() {
            return Err(ConfigError::Invalid("peer address family differs from its path's").into());
        }
        check_backend_mtu(&path, max_udp)?;
    }
    LinkAddrs::new(addrs).ok_or_else(|| ConfigError::Invalid("a peer has 1 to 4 links").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use icx_transport::LinkConfig;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn link_addrs() {
        let mut l = LinkAddrs::one(a(1));
        assert_eq!(l.get(0), Some(a(1)));
        assert_eq!(l.get(1), None);
        assert_eq!(l.get(200), None);
        assert_eq!(l.set(2, a(3)), None);
        assert_eq!(l.set(200, a(3)), None);
        assert_eq!(l.to_vec(), vec![Some(a(1)), None, Some(a(3))]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![(0, a(1)), (2, a(3))]);
        assert_eq!(l.route(2), Some((2, a(3))));
        assert_eq!(l.route(1), Some((0, a(1))));
        let mut only1 = LinkAddrs::default();
        only1.set(1, a(7));
        assert_eq!(only1.route(0), Some((1, a(7))));
        assert_eq!(LinkAddrs::default().route(0), None);
        assert!(LinkAddrs::new(&[]).is_none());
        assert!(LinkAddrs::new(&[a(1); MAX_LINKS + 1]).is_none());
    }

    #[test]
    fn peer_links_are_checked() {
        let two = PeerConfig::new(NodeId(2), 1500)
            .with_links(&[LinkConfig::new(1500, false), LinkConfig::new(9000, false)])
            .unwrap();
        assert!(check_peer_links(&two, &[a(1), a(2)], 65_507, 2).is_ok());
        let e = |r: Result<LinkAddrs, PeerError>| r.unwrap_err().to_string();
        assert!(e(check_peer_links(&two, &[a(1)], 65_507, 2)).contains("one address per link"));
        assert!(e(check_peer_links(&two, &[a(1), a(2)], 65_507, 1)).contains("more links"));
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert!(e(check_peer_links(&two, &[a(1), v6], 65_507, 2)).contains("family"));
        // Link 1's 9000 needs more than a 1500 backend carries.
        assert!(matches!(
            check_peer_links(&two, &[a(1), a(2)], 1472, 2),
            Err(PeerError::BackendMtu(m)) if m.mtu == 9000
        ));
    }
}
