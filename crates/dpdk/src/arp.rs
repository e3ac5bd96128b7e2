//! The neighbour table: static entries from configuration, plus entries
//! learned from ARP (RFC 826). Static entries are never overwritten. A
//! learned entry is refreshed by any ARP packet from that address; entries
//! do not age out (an interconnect's peers are fixed; a peer whose MAC
//! changed announces it, and its next ARP packet updates the entry).
#![deny(unsafe_code)]

use crate::net::{ArpPacket, MacAddr, ARP_REPLY, ARP_REQUEST};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Shortest gap between two ARP requests for one address.
pub const ARP_RETRY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Option<MacAddr>,
    fixed: bool,
    last_request: Option<Instant>,
}

/// What to do about a received ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpAction {
    /// Send this reply (the frame goes to `reply.target_mac`).
    Reply(ArpPacket),
    /// Nothing to send (an entry may have been learned).
    None,
}

#[derive(Clone, Debug, Default)]
pub struct ArpTable {
    entries: HashMap<Ipv4Addr, Entry>,
}

impl ArpTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a static entry (configuration wins over ARP).
    pub fn insert_static(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.entries.insert(
            ip,
            Entry {
                mac: Some(mac),
                fixed: true,
                last_request: None,
            },
        );
    }

    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(&ip).and_then(|e| e.mac)
    }

    /// Learns `ip -> mac` unless `ip` has a static entry. Returns whether
    /// the table changed.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        if mac.is_multicast() || mac == MacAddr::ZERO || ip.is_unspecified() {
            return false;
        }
        let e = self.entries.entry(ip).or_insert(Entry {
            mac: None,
            fixed: false,
            last_request: None,
        });
        if e.fixed || e.mac == Some(mac) {
            return false;
        }
        e.mac = Some(mac);
        true
    }

    /// Whether to send an ARP request for `ip` now (at most one per
    /// [`ARP_RETRY`]); records the request when it says yes.
    pub fn should_request(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        let e = self.entries.entry(ip).or_insert(Entry {
            mac: None,
            fixed: false,
            last_request: None,
        });
        if e.mac.is_some() {
            return false;
        }
        if e.last_request
            .is_some_and(|t| now.duration_since(t) < ARP_RETRY)
        {
            return false;
        }
        e.last_request = Some(now);
        true
    }

    /// RFC 826's packet reception, for the host `(my_mac, my_ip)`: merge the
    /// sender into the table when it is already known or the packet is for
    /// us, and answer requests for our address.
    pub fn handle(&mut self, p: &ArpPacket, my_mac: MacAddr, my_ip: Ipv4Addr) -> ArpAction {
        let for_us = p.target_ip == my_ip;
        if p.sender_ip == my_ip {
            // Someone else claims our address (or our own request echoed);
            // never learn it.
            return ArpAction::None;
        }
        if for_us || self.lookup(p.sender_ip).is_some() {
            self.learn(p.sender_ip, p.sender_mac);
        }
        if for_us && p.oper == ARP_REQUEST {
            return ArpAction::Reply(ArpPacket {
                oper: ARP_REPLY,
                sender_mac: my_mac,
                sender_ip: my_ip,
                target_mac: p.sender_mac,
                target_ip: p.sender_ip,
            });
        }
        ArpAction::None
    }

    /// The request to broadcast for `target`.
    pub fn request(my_mac: MacAddr, my_ip: Ipv4Addr, target: Ipv4Addr) -> ArpPacket {
        ArpPacket {
            oper: ARP_REQUEST,
            sender_mac: my_mac,
            sender_ip: my_ip,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| e.mac.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0x99, 0, 0, 0, n])
    }

    #[test]
    fn answers_requests_for_us_and_learns_the_asker() {
        let mut t = ArpTable::new();
        let req = ArpTable::request(mac(2), PEER, ME);
        match t.handle(&req, mac(1), ME) {
            ArpAction::Reply(r) => {
                assert_eq!(r.oper, ARP_REPLY);
                assert_eq!((r.sender_mac, r.sender_ip), (mac(1), ME));
                assert_eq!((r.target_mac, r.target_ip), (mac(2), PEER));
            }
            ArpAction::None => panic!("no reply"),
        }
        assert_eq!(t.lookup(PEER), Some(mac(2)));
    }

    #[test]
    fn ignores_requests_for_others_from_strangers() {
        let mut t = ArpTable::new();
        let req = ArpTable::request(mac(3), OTHER, PEER);
        assert_eq!(t.handle(&req, mac(1), ME), ArpAction::None);
        assert_eq!(t.lookup(OTHER), None);
        // ...but refreshes a sender it already knows.
        t.learn(OTHER, mac(3));
        let req = ArpTable::request(mac(4), OTHER, PEER);
        t.handle(&req, mac(1), ME);
        assert_eq!(t.lookup(OTHER), Some(mac(4)));
    }

    #[test]
    fn replies_resolve_and_static_entries_win() {
        let mut t = ArpTable::new();
        let now = Instant::now();
        assert!(t.should_request(PEER, now));
        assert!(!t.should_request(PEER, now + Duration::from_millis(10)));
        assert!(t.should_request(PEER, now + ARP_RETRY));
        let reply = ArpPacket {
            oper: ARP_REPLY,
            sender_mac: mac(2),
            sender_ip: PEER,
            target_mac: mac(1),
            target_ip: ME,
        };
        assert_eq!(t.handle(&reply, mac(1), ME), ArpAction::None);
        assert_eq!(t.lookup(PEER), Some(mac(2)));
        assert!(!t.should_request(PEER, now + ARP_RETRY * 2));
        t.insert_static(OTHER, mac(9));
        assert!(!t.learn(OTHER, mac(5)));
        assert_eq!(t.lookup(OTHER), Some(mac(9)));
        // Nobody may teach us our own address.
        let liar = ArpTable::request(mac(6), ME, PEER);
        t.handle(&liar, mac(1), ME);
        assert_eq!(t.lookup(ME), None);
        assert_eq!(t.len(), 2);
    }
}
