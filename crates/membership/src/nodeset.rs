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
        // Bits 0..=n, then bit 0 off.
        let top = u32::from(n.min(MAX_NODES)) + 1;
        let mut w = [0u64; 4];
        for (i, x) in w.iter_mut().enumerate() {
            let lo = i as u32 * 64;
            *x = match top.saturating_sub(lo) {
                0 => 0,
                k if k >= 64 => u64::MAX,
                k => (1u64 << k) - 1,
            };
        }
        w[0] &= !1;
        NodeSet(w)
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
        Iter {
            words: self.0,
            at: 0,
        }
    }

    /// The bitmap of nodes `1..=n` in `(n + 7) / 8` bytes, node `i` at bit
    /// `(i - 1) % 8` of byte `(i - 1) / 8`.
    pub fn write(&self, n: u16, out: &mut Vec<u8>) {
        let nb = bitmap_len(n);
        let wire = self.intersect(&NodeSet::first(n)).to_wire();
        out.extend_from_slice(&wire[..nb]);
    }

    /// Node `i` at bit `i - 1` of 32 little-endian bytes.
    fn to_wire(self) -> [u8; 32] {
        let w = self.0;
        let shifted = [
            w[0] >> 1 | w[1] << 63,
            w[1] >> 1 | w[2] << 63,
            w[2] >> 1 | w[3] << 63,
            w[3] >> 1,
        ];
        let mut b = [0u8; 32];
        for (i, x) in shifted.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// Parses [`NodeSet::write`]'s form; `None` if a bit beyond node `n` is set.
    pub fn read(n: u16, bytes: &[u8]) -> Option<NodeSet> {
        if bytes.len() != bitmap_len(n) || bytes.len() > 32 {
            return None;
        }
        let mut b = [0u8; 32];
        b[..bytes.len()].copy_from_slice(bytes);
        let mut w = [0u64; 4];
        for (i, x) in w.iter_mut().enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *x = u64::from_le_bytes(a);
        }
        // Wire bit i is node i + 1.
        let s = NodeSet([
            w[0] << 1,
            w[1] << 1 | w[0] >> 63,
            w[2] << 1 | w[1] >> 63,
            w[3] << 1 | w[2] >> 63,
        ]);
        // Node 256 (the last wire bit of 32 bytes) or any above n: refused.
        if w[3] >> 63 != 0 || !s.is_subset(&NodeSet::first(n)) {
            return None;
        }
        Some(s)
    }
}

/// [`NodeSet::iter`]: the set bits, lowest first.
struct Iter {
    words: [u64; 4],
    at: usize,
}

impl Iterator for Iter {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        while self.at < 4 {
            let w = self.words[self.at];
            if w != 0 {
                let b = w.trailing_zeros();
                self.words[self.at] = w & (w - 1);
                return Some(NodeId((self.at as u32 * 64 + b) as u16));
            }
            self.at += 1;
        }
        None
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
        assert_eq!(NodeSet::first(0), NodeSet::EMPTY);
        assert_eq!(NodeSet::first(255).len(), 255);
        assert_eq!(NodeSet::first(64).iter().last(), Some(NodeId(64)));
    }

    /// The bit loops these replaced, as the model.
    fn read_model(n: u16, bytes: &[u8]) -> Option<NodeSet> {
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

    proptest::proptest! {
        #[test]
        fn word_ops_match_the_bit_loops(
            n in 0u16..=255,
            ids in proptest::collection::vec(0u16..=300, 0..60),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..33),
        ) {
            let s: NodeSet = ids.iter().map(|&i| NodeId(i)).collect();
            let model: Vec<NodeId> = (1..=MAX_NODES).map(NodeId).filter(|&i| s.contains(i)).collect();
            proptest::prop_assert_eq!(s.iter().collect::<Vec<_>>(), model.clone());
            proptest::prop_assert_eq!(s.lowest(), model.first().copied());
            let first: Vec<NodeId> = (1..=n).map(NodeId).collect();
            proptest::prop_assert_eq!(NodeSet::first(n), first.iter().copied().collect::<NodeSet>());
            let mut w = Vec::new();
            s.write(n, &mut w);
            let mut wm = vec![0u8; bitmap_len(n)];
            for id in model.iter().filter(|id| id.0 <= n) {
                let i = usize::from(id.0 - 1);
                wm[i / 8] |= 1 << (i % 8);
            }
            proptest::prop_assert_eq!(&w, &wm);
            proptest::prop_assert_eq!(NodeSet::read(n, &bytes), read_model(n, &bytes));
            let nb = bitmap_len(n);
            if bytes.len() >= nb {
                proptest::prop_assert_eq!(NodeSet::read(n, &bytes[..nb]), read_model(n, &bytes[..nb]));
            }
        }
    }
}
