//! Sets of node numbers as fixed bitmaps (nodes 1..=[`MAX_NODES`]).

use icx_core::NodeId;
use std::fmt;

/// The most nodes a cluster may configure.
pub const MAX_NODES: u16 = 255;

/// A set of nodes: bit `n` is node `n` (bit 0 is never set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct NodeSet([u64; 4]);

impl NodeSet {
    pub const EMPTY: NodeSet = NodeSet([0; 4]);

    /// Nodes `1..=n`.
    pub fn first(n: u16) -> NodeSet {
        let mut s = NodeSet::EMPTY;
        for i in 1..=n.min(MAX_NODES) {
            s.insert(NodeId(i));
        }
        s
    }

    pub fn single(n: NodeId) -> NodeSet {
        let mut s = NodeSet::EMPTY;
        s.insert(n);
        s
    }

    fn valid(n: NodeId) -> bool {
        n.0 >= 1 && n.0 <= MAX_NODES
    }

    pub fn insert(&mut self, n: NodeId) {
        if Self::valid(n) {
            self.0[usize::from(n.0 / 64)] |= 1 << (n.0 % 64);
        }
    }

    pub fn remove(&mut self, n: NodeId) {
        if Self::valid(n) {
            self.0[usize::from(n.0 / 64)] &= !(1 << (n.0 % 64));
        }
    }

    pub fn contains(&self, n: NodeId) -> bool {
        Self::valid(n) && self.0[usize::from(n.0 / 64)] & (1 << (n.0 % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    pub fn union(&self, o: &NodeSet) -> NodeSet {
        NodeSet(std::array::from_fn(|i| self.0[i] | o.0[i]))
    }

    pub fn intersect(&self, o: &NodeSet) -> NodeSet {
        NodeSet(std::array::from_fn(|i| self.0[i] & o.0[i]))
    }

    pub fn minus(&self, o: &NodeSet) -> NodeSet {
        NodeSet(std::array::from_fn(|i| self.0[i] & !o.0[i]))
    }

    pub fn is_subset(&self, o: &NodeSet) -> bool {
        self.minus(o).is_empty()
    }

    pub fn is_disjoint(&self, o: &NodeSet) -> bool {
        self.intersect(o).is_empty()
    }

    /// The lowest node, if any.
    pub fn lowest(&self) -> Option<NodeId> {
        self.iter().next()
    }

    /// In increasing order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        (1..=MAX_NODES).map(NodeId).filter(|n| self.contains(*n))
    }

    /// The bitmap of nodes `1..=n` in `(n + 7) / 8` bytes, node `i` at bit
    /// `(i - 1) % 8` of byte `(i - 1) / 8`.
    pub fn write(&self, n: u16, out: &mut Vec<u8>) {
        let nb = bitmap_len(n);
        let start = out.len();
        out.resize(start + nb, 0);
        for id in self.iter().filter(|id| id.0 <= n) {
            let i = usize::from(id.0 - 1);
            out[start + i / 8] |= 1 << (i % 8);
        }
    }

    /// Parses [`NodeSet::write`]'s form; `None` if a bit beyond node `n` is set.
    pub fn read(n: u16, bytes: &[u8]) -> Option<NodeSet> {
        if bytes.len() != bitmap_len(n) {
            return None;
        }
        let mut s = NodeSet::EMPTY;
        for (b, byte) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    let id = b * 8 + bit + 1;
                    if id > usize::from(n) {
                        return None;
                    }
                    s.insert(NodeId(id as u16));
                }
            }
        }
        Some(s)
    }
}

/// Bytes of a bitmap of `n` nodes.
pub fn bitmap_len(n: u16) -> usize {
    usize::from(n).div_ceil(8)
}

impl FromIterator<NodeId> for NodeSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(it: I) -> Self {
        let mut s = NodeSet::EMPTY;
        for n in it {
            s.insert(n);
        }
        s
    }
}

impl fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// `{1,2,5}`.
impl fmt::Display for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, n) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", n.0)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ops_and_bitmaps() {
        let a: NodeSet = [1, 3, 9, 128, 255].map(NodeId).into_iter().collect();
        assert_eq!(a.len(), 5);
        assert!(a.contains(NodeId(128)) && !a.contains(NodeId(0)) && !a.contains(NodeId(2)));
        assert_eq!(a.lowest(), Some(NodeId(1)));
        let mut v = Vec::new();
        a.write(255, &mut v);
        assert_eq!(v.len(), 32);
        assert_eq!(NodeSet::read(255, &v), Some(a));
        let mut w = Vec::new();
        a.write(9, &mut w);
        assert_eq!(NodeSet::read(9, &w), Some(a.intersect(&NodeSet::first(9))));
        assert_eq!(
            NodeSet::read(9, &[0, 2]),
            None,
            "bit of node 10 in a 9-node map"
        );
        assert_eq!(format!("{}", NodeSet::first(3)), "{1,2,3}");
    }
}
