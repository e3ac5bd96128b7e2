//! Several networks between the same nodes: what a node with redundant
//! interconnect links (one private network per NIC) sees. Each network
//! between two nodes is a link of its own; a [`Sim::partition`] or
//! [`Sim::cut`] still cuts every network of a pair, and [`Sim::cut_net`]
//! cuts one.

use super::*;

impl<N: Node> Sim<N> {
    /// Configures one direction of one network.
    pub fn set_net_link(&mut self, from: NodeId, to: NodeId, net: u8, cfg: LinkConfig) {
        self.link_mut(from, to, net).cfg = Some(cfg);
    }

    pub fn net_link_config(&self, from: NodeId, to: NodeId, net: u8) -> &LinkConfig {
        self.links
            .get(&(from, to, net))
            .and_then(|l| l.cfg.as_ref())
            .unwrap_or(&self.default_link)
    }

    /// Cuts one direction of one network, including datagrams in flight on
    /// it (a cable pulled, a switch port down).
    pub fn cut_net(&mut self, from: NodeId, to: NodeId, net: u8) {
        self.net_cuts.insert((from, to, net));
    }

    /// Cuts both directions of network `net` between every node of `side_a`
    /// and every node of `side_b`.
    pub fn partition_net(&mut self, side_a: &[NodeId], side_b: &[NodeId], net: u8) {
        for &a in side_a {
            for &b in side_b {
                self.net_cuts.insert((a, b, net));
                self.net_cuts.insert((b, a, net));
            }
        }
    }

    /// Restores every cut of network `net` (cuts of whole pairs stay).
    pub fn heal_net(&mut self, net: u8) {
        self.net_cuts.retain(|&(_, _, n)| n != net);
    }

    /// Whether one direction of one network is cut (by itself or with
    /// every network of the pair).
    pub fn is_net_cut(&self, from: NodeId, to: NodeId, net: u8) -> bool {
        self.cuts.contains(&(from, to)) || self.net_cuts.contains(&(from, to, net))
    }

    pub fn net_link_stats(&self, from: NodeId, to: NodeId, net: u8) -> LinkStats {
        self.links
            .get(&(from, to, net))
            .map(|l| l.stats)
            .unwrap_or_default()
    }
}
