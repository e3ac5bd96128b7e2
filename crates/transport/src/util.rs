//! Small bounded structures the sessions are built from.

use std::collections::VecDeque;

/// Received sequence numbers as sorted, disjoint inclusive ranges. Keeps at
/// most `cap` ranges, forgetting the oldest: an old duplicate that slips past
/// is still caught by message-level suppression.
#[derive(Debug, Clone)]
pub(crate) struct RangeSet {
    ranges: VecDeque<(u64, u64)>,
    cap: usize,
}

impl RangeSet {
    pub(crate) fn new(cap: usize) -> Self {
        RangeSet {
            ranges: VecDeque::with_capacity(cap + 1),
            cap,
        }
    }

    pub(crate) fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, h)| h < x);
        self.ranges.get(i).is_some_and(|&(l, _)| l <= x)
    }

    /// Adds `x`; false if it was already present.
    pub(crate) fn insert(&mut self, x: u64) -> bool {
        // Fast path: in-order arrival extends the top range.
        if let Some(last) = self.ranges.back_mut() {
            if last.1.checked_add(1) == Some(x) {
                last.1 = x;
                return true;
            }
        }
        let i = self
            .ranges
            .partition_point(|&(_, h)| h.saturating_add(1) < x);
        // ranges[i] is the first that ends at or after x-1.
        if let Some(&(l, h)) = self.ranges.get(i) {
            if l <= x && x <= h {
                return false;
            }
            if h.checked_add(1) == Some(x) {
                self.ranges[i].1 = x;
                if let Some(&(nl, nh)) = self.ranges.get(i + 1) {
                    if nl == x + 1 {
                        self.ranges[i].1 = nh;
                        self.ranges.remove(i + 1);
                    }
                }
                return true;
            }
            if x.checked_add(1) == Some(l) {
                self.ranges[i].0 = x;
                return true;
            }
        }
        self.ranges.insert(i, (x, x));
        if self.ranges.len() > self.cap {
            self.ranges.pop_front();
        }
        true
    }

    pub(crate) fn max(&self) -> Option<u64> {
        self.ranges.back().map(|r| r.1)
    }

    /// Ranges from the highest down.
    pub(crate) fn iter_desc(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().rev().copied()
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }
}

/// Which message ids at or above a floor have been delivered.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdWindow {
    floor: u64,
    /// Bit i of word w covers id `base + 64*w + i`.
    base: u64,
    words: VecDeque<u64>,
}

impl IdWindow {
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Raises the floor; ids below it count as resolved.
    pub(crate) fn advance_floor(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        while self.base + 64 <= floor && !self.words.is_empty() {
            self.words.pop_front();
            self.base += 64;
        }
        if self.words.is_empty() {
            self.base = floor & !63;
        }
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        if id < self.floor {
            return true;
        }
        let off = id - self.base;
        self.words
            .get((off / 64) as usize)
            .is_some_and(|w| w & (1 << (off % 64)) != 0)
    }

    /// Caller bounds `id - floor` so the window cannot grow without limit.
    pub(crate) fn insert(&mut self, id: u64) {
        if id < self.floor {
            return;
        }
        let off = id - self.base;
        let w = (off / 64) as usize;
        while self.words.len() <= w {
            self.words.push_back(0);
        }
        self.words[w] |= 1 << (off % 64);
    }

    pub(crate) fn reset(&mut self) {
        *self = IdWindow::default();
    }
}

/// One bit per fragment, inline up to 256 fragments (a 32 KiB block is 24
/// frames at MTU 1500), so blocks never touch the heap.
#[derive(Debug, Clone)]
pub(crate) enum FragBits {
    Inline([u64; 4]),
    Heap(Box<[u64]>),
}

impl FragBits {
    pub(crate) fn new(n: usize) -> Self {
        if n <= 256 {
            FragBits::Inline([0; 4])
        } else {
            FragBits::Heap(vec![0; n.div_ceil(64)].into_boxed_slice())
        }
    }

    fn words(&self) -> &[u64] {
        match self {
            FragBits::Inline(w) => w,
            FragBits::Heap(w) => w,
        }
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.words()
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Sets bit `i`; false if it was already set (or out of range).
    pub(crate) fn set(&mut self, i: usize) -> bool {
        let words: &mut [u64] = match self {
            FragBits::Inline(w) => w,
            FragBits::Heap(w) => w,
        };
        match words.get_mut(i / 64) {
            Some(w) if *w & (1 << (i % 64)) == 0 => {
                *w |= 1 << (i % 64);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn rangeset_matches_a_set(xs in prop::collection::vec(0u64..300, 0..400)) {
            let mut rs = RangeSet::new(10_000);
            let mut model = BTreeSet::new();
            for &x in &xs {
                prop_assert_eq!(rs.insert(x), model.insert(x));
            }
            for x in 0..300 {
                prop_assert_eq!(rs.contains(x), model.contains(&x));
            }
            let v: Vec<_> = rs.iter_desc().collect();
            for w in v.windows(2) {
                prop_assert!(w[1].1 + 1 < w[0].0, "ranges must be disjoint and not touching");
            }
        }

        #[test]
        fn idwindow_matches_a_set(ops in prop::collection::vec((0u64..500, any::<bool>()), 0..300)) {
            let mut w = IdWindow::default();
            let mut model = BTreeSet::new();
            let mut floor = 0;
            for (x, is_floor) in ops {
                if is_floor {
                    floor = floor.max(x);
                    w.advance_floor(x);
                } else {
                    w.insert(x);
                    model.insert(x);
                }
                for y in 0..500 {
                    prop_assert_eq!(w.contains(y), y < floor || model.contains(&y));
                }
            }
        }
    }

    #[test]
    fn rangeset_forgets_oldest_past_cap() {
        let mut rs = RangeSet::new(3);
        for x in [1, 3, 5, 7] {
            rs.insert(x);
        }
        assert!(!rs.contains(1));
        assert!(rs.contains(7));
        assert_eq!(rs.max(), Some(7));
    }

    #[test]
    fn fragbits_inline_and_heap() {
        for n in [1, 256, 257, 1000] {
            let mut b = FragBits::new(n);
            assert!(b.set(n - 1));
            assert!(!b.set(n - 1));
            assert!(b.get(n - 1) && !b.get(0) || n == 1);
            assert!(!b.set(n + 300));
        }
    }
}
