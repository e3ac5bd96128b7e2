//! A bounded single-producer, single-consumer ring for cross-core handoff.
//!
//! The two indices live on their own cache lines (`CachePadded`), and each
//! side keeps a private copy of the other side's index, refreshed only when
//! the ring looks full (producer) or empty (consumer), so in steady state a
//! push or pop touches the shared index line of the other core rarely. The
//! capacity is a power of two and the indices run freely (wrapping), so a
//! slot is `index & mask` and the fill level is `tail - head`.
//!
//! [`channel`] returns the two halves. Each is `Send` (it can move to its
//! core's thread) but neither is `Clone`: there is exactly one producer and
//! one consumer, which is what makes the unsynchronised slot accesses sound.

use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Ring<T> {
    /// Next slot the consumer reads. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a slot is written only by the producer while it lies outside
// `head..tail` and read only by the consumer while it lies inside; the
// Release store of `tail` (after writing) and its Acquire load by the
// consumer (before reading) order the two, and symmetrically for `head`. So
// no slot is ever accessed from two threads at once, and values of `T` only
// move between threads, which needs `T: Send` and nothing more.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns its `T`s.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both halves are gone (this is the last Arc), so nobody else looks.
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        let mut i = head;
        while i != tail {
            let slot = &mut self.slots[i & self.mask];
            // SAFETY: slots in `head..tail` were written by a push and not
            // yet taken by a pop, so each holds an initialised value, which
            // is dropped here exactly once.
            unsafe { slot.get_mut().assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// A ring of at least `capacity` slots (rounded up to a power of two, at
/// least 1), split into its producer and consumer halves.
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(1).next_power_of_two();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        mask: cap - 1,
        slots: (0..cap)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
    });
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            head_cache: 0,
        },
        Consumer {
            ring,
            head: 0,
            tail_cache: 0,
        },
    )
}

/// The sending half.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Our own `tail` (only we write it).
    tail: usize,
    /// Last `head` seen; the ring has at least `cap - (tail - head_cache)` room.
    head_cache: usize,
}

/// The receiving half.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Our own `head` (only we write it).
    head: usize,
    /// Last `tail` seen; at least `tail_cache - head` items are ready.
    tail_cache: usize,
}

impl<T> Producer<T> {
    /// Appends `v`, or hands it back when the ring is full.
    pub fn push(&mut self, v: T) -> Result<(), T> {
        let cap = self.ring.mask + 1;
        if self.tail.wrapping_sub(self.head_cache) >= cap {
            self.head_cache = self.ring.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) >= cap {
                return Err(v);
            }
        }
        let slot = &self.ring.slots[self.tail & self.ring.mask];
        // SAFETY: the slot is outside `head..tail` (the ring is not full
        // as of the Acquire load of `head`, which also ordered the
        // consumer's read of the slot's old value before this write), so
        // only this producer may touch it, and it holds no live value.
        unsafe { (*slot.get()).write(v) };
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.ring.mask + 1
    }

    /// Items in the ring now (the consumer may be taking some meanwhile).
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.ring.head.load(Ordering::Acquire))
            .min(self.capacity())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the consumer half has been dropped: pushes still succeed
    /// until full, but nobody will read them.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.ring) == 1
    }
}

impl<T> Consumer<T> {
    /// Takes the oldest item, if any.
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail_cache {
            self.tail_cache = self.ring.tail.load(Ordering::Acquire);
            if self.head == self.tail_cache {
                return None;
            }
        }
        let slot = &self.ring.slots[self.head & self.ring.mask];
        // SAFETY: the slot is inside `head..tail` as of the Acquire load of
        // `tail`, which ordered the producer's write before this read, so it
        // holds an initialised value that only this consumer may take; after
        // the read the slot counts as empty again.
        let v = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.ring.head.store(self.head, Ordering::Release);
        Some(v)
    }

    pub fn capacity(&self) -> usize {
        self.ring.mask + 1
    }

    /// Items ready now (the producer may be adding more meanwhile).
    pub fn len(&self) -> usize {
        self.ring
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("spsc::Producer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("spsc::Consumer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    #[test]
    fn capacity_rounds_up_and_full_hands_back() {
        let (mut p, mut c) = channel::<u32>(5);
        assert_eq!(p.capacity(), 8);
        for i in 0..8 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(99), Err(99));
        assert_eq!(c.len(), 8);
        assert_eq!(c.pop(), Some(0));
        p.push(8).unwrap();
        let rest: Vec<u32> = std::iter::from_fn(|| c.pop()).collect();
        assert_eq!(rest, (1..=8).collect::<Vec<_>>());
        assert!(c.is_empty() && p.is_empty());
        assert_eq!(channel::<u8>(0).0.capacity(), 1);
    }

    #[test]
    fn wraps_many_times() {
        let (mut p, mut c) = channel::<usize>(4);
        for i in 0..10_000 {
            p.push(i).unwrap();
            if i % 3 == 0 {
                p.push(i + 1_000_000).unwrap();
                assert_eq!(c.pop(), Some(i));
                assert_eq!(c.pop(), Some(i + 1_000_000));
            } else {
                assert_eq!(c.pop(), Some(i));
            }
        }
        assert_eq!(c.pop(), None);
    }

    /// Two threads move a few million sequenced items through a small ring:
    /// every item arrives, once, in order.
    #[test]
    fn two_thread_stress_keeps_order_and_loses_nothing() {
        const N: u64 = 4_000_000;
        let (mut p, mut c) = channel::<u64>(256);
        let limit = Duration::from_secs(60);
        let producer = std::thread::spawn(move || {
            let start = Instant::now();
            let mut full = 0u64;
            for i in 0..N {
                let mut v = i;
                loop {
                    match p.push(v) {
                        Ok(()) => break,
                        Err(back) => {
                            v = back;
                            full += 1;
                            assert!(start.elapsed() < limit, "producer stuck at {i}");
                            std::hint::spin_loop();
                            if full.is_multiple_of(1024) {
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            }
            full
        });
        let start = Instant::now();
        let mut next = 0u64;
        let mut spins = 0u64;
        while next < N {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v, next, "out of order or lost");
                    next += 1;
                }
                None => {
                    spins += 1;
                    assert!(start.elapsed() < limit, "consumer stuck at {next}");
                    std::hint::spin_loop();
                    if spins.is_multiple_of(1024) {
                        std::thread::yield_now();
                    }
                }
            }
        }
        let full = producer.join().unwrap();
        assert_eq!(c.pop(), None);
        eprintln!(
            "spsc stress: {N} items in {:?} ({full} full pushes)",
            start.elapsed()
        );
    }

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Items left in the ring are dropped exactly once, whichever half goes
    /// last; popped items are dropped by whoever took them.
    #[test]
    fn leftover_items_dropped_exactly_once() {
        for consumer_first in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let (mut p, mut c) = channel::<Counted>(16);
            // Wrap the indices first so leftovers straddle the end.
            for _ in 0..13 {
                p.push(Counted(drops.clone())).map_err(drop).unwrap();
                drop(c.pop());
            }
            assert_eq!(drops.load(Ordering::Relaxed), 13);
            for _ in 0..10 {
                p.push(Counted(drops.clone())).map_err(drop).unwrap();
            }
            let taken = c.pop().unwrap();
            assert_eq!(drops.load(Ordering::Relaxed), 13);
            if consumer_first {
                drop(c);
                assert!(p.is_abandoned());
                assert_eq!(drops.load(Ordering::Relaxed), 13);
                drop(p);
            } else {
                drop(p);
                assert_eq!(drops.load(Ordering::Relaxed), 13);
                drop(c);
            }
            assert_eq!(drops.load(Ordering::Relaxed), 13 + 9);
            drop(taken);
            assert_eq!(drops.load(Ordering::Relaxed), 13 + 10);
        }
    }

    #[test]
    fn halves_are_send() {
        fn is_send<T: Send>() {}
        is_send::<Producer<Vec<u8>>>();
        is_send::<Consumer<Vec<u8>>>();
    }
}
