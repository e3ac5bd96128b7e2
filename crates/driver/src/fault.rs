//! A backend wrapper that loses, duplicates and corrupts datagrams on purpose
//! (smoltcp's `FaultInjector` idea), so the transport's recovery paths run
//! over any real backend, not only in the simulator.
//!
//! Rates and the link cut live behind a [`FaultHandle`], so a test or ibench
//! can cut and heal a link from another thread while the driver owns the
//! backend. With a multi-link backend one interconnect link can be cut
//! alone ([`FaultHandle::cut_link`]): everything sent or received by it is
//! dropped (counted), the other links carry on.

use icx_core::{
    seeded_rng, Backend, BufferPool, Capabilities, RxDatagram, SeededRng, TxBatch, Wake,
};
use rand::Rng;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Fault probabilities, each rolled independently per datagram as
/// `uniform(0,1) < p`: zero (or less) never happens, one (or more) always does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Outgoing datagram silently not sent.
    pub tx_drop: f64,
    /// Incoming datagram discarded before the caller sees it.
    pub rx_drop: f64,
    /// Outgoing datagram sent twice.
    pub duplicate: f64,
    /// Incoming datagram handed over with one random bit flipped.
    pub corrupt: f64,
    pub seed: u64,
}

impl FaultConfig {
    /// Nothing goes wrong until rates are set.
    pub fn none(seed: u64) -> Self {
        FaultConfig {
            seed,
            ..Self::default()
        }
    }

    /// Loses `p` of outgoing datagrams and nothing else.
    pub fn tx_loss(p: f64, seed: u64) -> Self {
        FaultConfig {
            tx_drop: p,
            ..Self::none(seed)
        }
    }
}

/// What the injector has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Outgoing datagrams that faced the dice (a frame refused by the inner
    /// backend and offered again is counted once).
    pub tx_seen: u64,
    pub tx_dropped: u64,
    /// Extra copies the inner backend actually took.
    pub duplicated: u64,
    pub rx_seen: u64,
    pub rx_dropped: u64,
    pub corrupted: u64,
    /// Of `tx_dropped` and `rx_dropped`, datagrams of a cut link
    /// ([`FaultHandle::cut_link`]).
    pub link_tx_dropped: u64,
    pub link_rx_dropped: u64,
}

#[derive(Debug, Default)]
struct Shared {
    // f64 bit patterns, so rates change without a lock.
    tx_drop: AtomicU64,
    rx_drop: AtomicU64,
    duplicate: AtomicU64,
    corrupt: AtomicU64,
    cut: AtomicBool,
    /// Bit `l`: link `l` is cut.
    cut_links: AtomicU8,
    tx_seen: AtomicU64,
    tx_dropped: AtomicU64,
    duplicated: AtomicU64,
    rx_seen: AtomicU64,
    rx_dropped: AtomicU64,
    corrupted: AtomicU64,
    link_tx_dropped: AtomicU64,
    link_rx_dropped: AtomicU64,
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store_f64(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed)
}

fn bump(a: &AtomicU64, n: u64) {
    if n != 0 {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// Rates for one pass, read once so a concurrent change applies between
/// batches rather than half-way through one.
#[derive(Clone, Copy)]
struct Rates {
    tx_drop: f64,
    rx_drop: f64,
    duplicate: f64,
    corrupt: f64,
    /// Bit `l`: link `l` is cut.
    cut_links: u8,
}

impl Rates {
    fn link_cut(&self, link: u8) -> bool {
        link < 8 && self.cut_links & (1 << link) != 0
    }
}

/// Cross-thread control of a [`FaultInjector`]: change rates, cut or heal the
/// link, read the counters.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    shared: Arc<Shared>,
}

impl FaultHandle {
    pub fn set_tx_drop(&self, p: f64) {
        store_f64(&self.shared.tx_drop, p)
    }

    pub fn set_rx_drop(&self, p: f64) {
        store_f64(&self.shared.rx_drop, p)
    }

    pub fn set_duplicate(&self, p: f64) {
        store_f64(&self.shared.duplicate, p)
    }

    pub fn set_corrupt(&self, p: f64) {
        store_f64(&self.shared.corrupt, p)
    }

    /// Sets every rate; the seed is ignored (the random stream continues).
    pub fn set_rates(&self, cfg: &FaultConfig) {
        self.set_tx_drop(cfg.tx_drop);
        self.set_rx_drop(cfg.rx_drop);
        self.set_duplicate(cfg.duplicate);
        self.set_corrupt(cfg.corrupt);
    }

    pub fn rates(&self) -> FaultConfig {
        let s = &self.shared;
        FaultConfig {
            tx_drop: load_f64(&s.tx_drop),
            rx_drop: load_f64(&s.rx_drop),
            duplicate: load_f64(&s.duplicate),
            corrupt: load_f64(&s.corrupt),
            seed: 0,
        }
    }

    /// Drops everything in both directions until [`heal`](Self::heal),
    /// without forgetting the configured rates. Cut datagrams count as dropped.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::Relaxed)
    }

    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::Relaxed)
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::Relaxed)
    }

    /// Cuts interconnect link `link` alone: every datagram sent by it or
    /// received by it is dropped (counted in `link_tx_dropped` /
    /// `link_rx_dropped`) until [`heal_link`](Self::heal_link); the other
    /// links are untouched. A link the backend does not have (or beyond
    /// [`MAX_LINKS`](icx_core::MAX_LINKS)) is ignored.
    pub fn cut_link(&self, link: u8) {
        if usize::from(link) < icx_core::MAX_LINKS {
            self.shared.cut_links.fetch_or(1 << link, Ordering::Relaxed);
        }
    }

    pub fn heal_link(&self, link: u8) {
        if usize::from(link) < icx_core::MAX_LINKS {
            self.shared
                .cut_links
                .fetch_and(!(1 << link), Ordering::Relaxed);
        }
    }

    pub fn is_link_cut(&self, link: u8) -> bool {
        usize::from(link) < icx_core::MAX_LINKS
            && self.shared.cut_links.load(Ordering::Relaxed) & (1 << link) != 0
    }

    pub fn stats(&self) -> FaultStats {
        let s = &self.shared;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            tx_seen: l(&s.tx_seen),
            tx_dropped: l(&s.tx_dropped),
            duplicated: l(&s.duplicated),
            rx_seen: l(&s.rx_seen),
            rx_dropped: l(&s.rx_dropped),
            corrupted: l(&s.corrupted),
            link_tx_dropped: l(&s.link_tx_dropped),
            link_rx_dropped: l(&s.link_rx_dropped),
        }
    }

    fn snapshot(&self) -> Rates {
        let s = &self.shared;
        let cut_links = s.cut_links.load(Ordering::Relaxed);
        if s.cut.load(Ordering::Relaxed) {
            return Rates {
                tx_drop: 1.0,
                rx_drop: 1.0,
                duplicate: 0.0,
                corrupt: 0.0,
                cut_links,
            };
        }
        Rates {
            tx_drop: load_f64(&s.tx_drop),
            rx_drop: load_f64(&s.rx_drop),
            duplicate: load_f64(&s.duplicate),
            corrupt: load_f64(&s.corrupt),
            cut_links,
        }
    }
}

/// Wraps a backend and misbehaves at the configured rates.
#[derive(Debug)]
pub struct FaultInjector<B> {
    inner: B,
    handle: FaultHandle,
    rng: SeededRng,
    /// Frames that passed the dice, handed to the inner backend.
    staged: TxBatch,
    /// Which staged frames are extra copies (refused copies are discarded,
    /// refused originals go back to the caller).
    staged_dup: Vec<bool>,
    /// Frames at the front of the caller's batch that already passed the
    /// dice and were refused by the inner backend: not rolled again.
    passed: usize,
    /// Where a corrupted datagram is rewritten, so corruption never touches
    /// the inner backend's buffers.
    scratch: Vec<u8>,
}

fn roll(rng: &mut SeededRng, p: f64) -> bool {
    // Skip the draw for p <= 0 so a clean link consumes no randomness.
    p > 0.0 && rng.random::<f64>() < p
}

impl<B: Backend> FaultInjector<B> {
    pub fn new(inner: B, cfg: FaultConfig) -> Self {
        let handle = FaultHandle {
            shared: Arc::new(Shared::default()),
        };
        handle.set_rates(&cfg);
        let caps = inner.capabilities();
        FaultInjector {
            inner,
            handle,
            rng: seeded_rng(cfg.seed),
            staged: TxBatch::with_capacity(2 * caps.max_batch.max(1)),
            staged_dup: Vec::with_capacity(2 * caps.max_batch.max(1)),
            passed: 0,
            scratch: Vec::with_capacity(caps.max_udp_payload),
        }
    }

    /// A handle for changing rates and reading counters from anywhere.
    pub fn handle(&self) -> FaultHandle {
        self.handle.clone()
    }

    pub fn stats(&self) -> FaultStats {
        self.handle.stats()
    }

    pub fn set_tx_drop(&mut self, p: f64) {
        self.handle.set_tx_drop(p)
    }

    pub fn set_rx_drop(&mut self, p: f64) {
        self.handle.set_rx_drop(p)
    }

    pub fn set_duplicate(&mut self, p: f64) {
        self.handle.set_duplicate(p)
    }

    pub fn set_corrupt(&mut self, p: f64) {
        self.handle.set_corrupt(p)
    }

    pub fn cut(&mut self) {
        self.handle.cut()
    }

    pub fn heal(&mut self) {
        self.handle.heal()
    }

    pub fn cut_link(&mut self, link: u8) {
        self.handle.cut_link(link)
    }

    pub fn heal_link(&mut self, link: u8) {
        self.handle.heal_link(link)
    }

    pub fn inner(&self) -> &B {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Backend> FaultInjector<B> {
    /// The inner backend's `recv` (or `recv_urgent`), through the dice.
    fn recv_with(
        &mut self,
        max: usize,
        urgent_only: bool,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<usize> {
        let rates = self.handle.snapshot();
        let Self {
            inner,
            rng,
            scratch,
            ..
        } = self;
        let (mut seen, mut dropped, mut corrupted, mut handed) = (0u64, 0u64, 0u64, 0usize);
        let mut link_dropped = 0u64;
        let mut each = |d: RxDatagram<'_>| {
            seen += 1;
            if rates.link_cut(d.link) {
                dropped += 1;
                link_dropped += 1;
                return;
            }
            if roll(rng, rates.rx_drop) {
                dropped += 1;
                return;
            }
            handed += 1;
            if !d.data.is_empty() && roll(rng, rates.corrupt) {
                corrupted += 1;
                scratch.clear();
                scratch.extend_from_slice(d.data);
                let bit = rng.random_range(0..scratch.len() * 8);
                scratch[bit / 8] ^= 1 << (bit % 8);
                f(RxDatagram {
                    src: d.src,
                    lane: d.lane,
                    link: d.link,
                    data: &scratch[..],
                });
            } else {
                f(d);
            }
        };
        let res = if urgent_only {
            inner.recv_urgent(max, &mut each)
        } else {
            inner.recv(max, &mut each)
        };
        let s = &self.handle.shared;
        bump(&s.rx_seen, seen);
        bump(&s.rx_dropped, dropped);
        bump(&s.corrupted, corrupted);
        bump(&s.link_rx_dropped, link_dropped);
        res?;
        Ok(handed)
    }
}

impl<B: Backend> Backend for FaultInjector<B> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn link_count(&self) -> usize {
        self.inner.link_count()
    }

    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        self.inner.link_addr(link)
    }

    fn register_pool(&mut self, pool: &BufferPool) -> io::Result<()> {
        self.inner.register_pool(pool)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        let before = batch.len();
        let rates = self.handle.snapshot();
        let limit = self.inner.capabilities().max_batch.max(1);
        let (mut seen, mut dropped, mut link_dropped) = (0u64, 0u64, 0u64);
        self.passed = self.passed.min(batch.len());
        self.staged.clear();
        self.staged_dup.clear();
        while self.staged.len() < limit {
            let Some(frame) = batch.pop_front() else {
                break;
            };
            if self.passed > 0 {
                self.passed -= 1;
            } else {
                seen += 1;
                if rates.link_cut(frame.link) {
                    dropped += 1;
                    link_dropped += 1;
                    continue;
                }
                if roll(&mut self.rng, rates.tx_drop) {
                    dropped += 1;
                    continue;
                }
                if roll(&mut self.rng, rates.duplicate) {
                    self.staged.push_back(frame.clone());
                    self.staged_dup.push(false);
                    self.staged.push_back(frame);
                    self.staged_dup.push(true);
                    continue;
                }
            }
            self.staged.push_back(frame);
            self.staged_dup.push(false);
        }
        let staged_n = self.staged.len();
        let res = self.inner.send(&mut self.staged);
        let taken = staged_n - self.staged.len();
        let dups_taken = self.staged_dup[..taken].iter().filter(|&&d| d).count();
        // Refused originals go back to the caller, in order, already rolled.
        let mut returned = 0;
        for (frame, dup) in self
            .staged
            .drain(..)
            .zip(self.staged_dup[taken..].iter())
            .rev()
        {
            if !dup {
                batch.push_front(frame);
                returned += 1;
            }
        }
        self.passed += returned;
        let s = &self.handle.shared;
        bump(&s.tx_seen, seen);
        bump(&s.tx_dropped, dropped);
        bump(&s.link_tx_dropped, link_dropped);
        bump(&s.duplicated, dups_taken as u64);
        res?;
        Ok(before - batch.len())
    }

    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.recv_with(max, false, f)
    }

    fn recv_urgent(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.recv_with(max, true, f)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.wait(timeout)
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        self.inner.waker()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::{LoopbackBackend, LoopbackNet};
    use icx_core::{HeaderBuf, Payload, TxFrame};

    fn pair(cfg: FaultConfig) -> (LoopbackNet, FaultInjector<LoopbackBackend>, LoopbackBackend) {
        let net = LoopbackNet::new();
        let a = net.bind("127.0.0.1:1000".parse().unwrap()).unwrap();
        let b = net.bind("127.0.0.1:2000".parse().unwrap()).unwrap();
        (net, FaultInjector::new(a, cfg), b)
    }

    fn frame(dst: SocketAddr, i: u32) -> TxFrame {
        let mut header = HeaderBuf::with_len(4).unwrap();
        header.as_mut_slice().copy_from_slice(&i.to_be_bytes());
        TxFrame {
            dst,
            lane: icx_core::Lane::Normal,
            link: 0,
            header,
            payload: Payload::EMPTY,
        }
    }

    /// Sends `n` numbered frames from `a` to `b` and returns what arrived.
    fn send_n<B: Backend, R: Backend>(a: &mut B, b: &mut R, n: u32) -> Vec<u32> {
        let dst = b.local_addr();
        let mut got = Vec::new();
        let mut batch = TxBatch::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
            batch.extend(chunk.iter().map(|&i| frame(dst, i)));
            while !batch.is_empty() {
                a.send(&mut batch).unwrap();
            }
            b.recv(usize::MAX, &mut |d| {
                got.push(u32::from_be_bytes(d.data[..4].try_into().unwrap()))
            })
            .unwrap();
        }
        got
    }

    fn near(count: u64, n: u64, p: f64) {
        let expect = n as f64 * p;
        // Five standard deviations of a binomial: a seeded run never flakes,
        // and a broken rate (off by a factor) still fails.
        let tol = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (count as f64 - expect).abs() <= tol,
            "{count} of {n}, expected {expect:.0} +- {tol:.0}"
        );
    }

    #[test]
    fn clean_config_passes_everything() {
        let (_net, mut a, mut b) = pair(FaultConfig::none(1));
        let got = send_n(&mut a, &mut b, 500);
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        let s = a.stats();
        assert_eq!(s.tx_seen, 500);
        assert_eq!(s.tx_dropped + s.duplicated, 0);
    }

    #[test]
    fn tx_drop_rate_near_configured() {
        let n = 5000;
        let (_net, mut a, mut b) = pair(FaultConfig::tx_loss(0.05, 7));
        let got = send_n(&mut a, &mut b, n);
        let s = a.stats();
        assert_eq!(s.tx_seen, n as u64);
        assert_eq!(got.len() as u64, n as u64 - s.tx_dropped);
        near(s.tx_dropped, n as u64, 0.05);
        // Survivors arrive in order, each once.
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn duplicate_rate_near_configured() {
        let n = 5000;
        let cfg = FaultConfig {
            duplicate: 0.1,
            ..FaultConfig::none(3)
        };
        let (_net, mut a, mut b) = pair(cfg);
        let got = send_n(&mut a, &mut b, n);
        let s = a.stats();
        assert_eq!(got.len() as u64, n as u64 + s.duplicated);
        near(s.duplicated, n as u64, 0.1);
        let twice = got.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        assert_eq!(twice, s.duplicated);
    }

    #[test]
    fn rx_drop_and_corrupt_rates_near_configured() {
        let n = 4000u32;
        let cfg = FaultConfig {
            rx_drop: 0.1,
            corrupt: 0.2,
            ..FaultConfig::none(11)
        };
        let (_net, mut a, b) = pair(FaultConfig::none(0));
        let mut b = FaultInjector::new(b, cfg);
        let dst = b.local_addr();
        let mut handed = 0u64;
        let mut bad = 0u64;
        let mut batch = TxBatch::new();
        for i in 0..n {
            batch.push_back(frame(dst, i));
            a.send(&mut batch).unwrap();
            b.recv(usize::MAX, &mut |d| {
                handed += 1;
                let v = u32::from_be_bytes(d.data.try_into().unwrap());
                let flipped = (v ^ i).count_ones();
                assert!(flipped <= 1, "corruption flips exactly one bit");
                bad += u64::from(flipped);
            })
            .unwrap();
        }
        let s = b.stats();
        assert_eq!(s.rx_seen, n as u64);
        assert_eq!(handed, n as u64 - s.rx_dropped);
        assert_eq!(bad, s.corrupted);
        near(s.rx_dropped, n as u64, 0.1);
        near(s.corrupted, handed, 0.2);
    }

    #[test]
    fn corruption_flips_exactly_one_bit_of_large_datagrams() {
        let (net, mut a, b) = pair(FaultConfig::none(0));
        let mut b = FaultInjector::new(
            b,
            FaultConfig {
                corrupt: 1.0,
                ..FaultConfig::none(5)
            },
        );
        let pool = BufferPool::new(&icx_core::PoolConfig::small(16 << 10, 4)).unwrap();
        let body: Vec<u8> = (0..9000u32).map(|i| (i * 7) as u8).collect();
        let buf = pool.alloc_from(&body).unwrap().freeze();
        let mut header = HeaderBuf::with_len(3).unwrap();
        header.as_mut_slice().copy_from_slice(b"hdr");
        let sent: Vec<u8> = b"hdr".iter().chain(&body).copied().collect();
        for _ in 0..50 {
            let mut batch = TxBatch::new();
            batch.push_back(TxFrame {
                dst: b.local_addr(),
                lane: icx_core::Lane::Normal,
                link: 0,
                header: header.clone(),
                payload: Payload::new(buf.clone(), 0, body.len()).unwrap(),
            });
            a.send(&mut batch).unwrap();
            let mut n = 0;
            b.recv(8, &mut |d| {
                n += 1;
                assert_eq!(d.data.len(), sent.len());
                let diff: u32 = d
                    .data
                    .iter()
                    .zip(&sent)
                    .map(|(x, y)| (x ^ y).count_ones())
                    .sum();
                assert_eq!(diff, 1);
            })
            .unwrap();
            assert_eq!(n, 1);
        }
        assert_eq!(b.stats().corrupted, 50);
        drop(net);
    }

    #[test]
    fn cut_and_heal_at_run_time() {
        let (_net, mut a, mut b) = pair(FaultConfig::none(9));
        let h = a.handle();
        h.cut();
        assert!(send_n(&mut a, &mut b, 100).is_empty());
        assert_eq!(a.stats().tx_dropped, 100);
        h.heal();
        assert_eq!(send_n(&mut a, &mut b, 100).len(), 100);
        a.set_tx_drop(1.0);
        assert!(send_n(&mut a, &mut b, 10).is_empty());
        a.set_tx_drop(0.0);
        assert_eq!(send_n(&mut a, &mut b, 10).len(), 10);
        assert_eq!(h.stats().tx_dropped, 110);
    }

    /// Refuses everything past its per-call quota, to check that refused
    /// frames go back to the caller in order and are not rolled twice.
    struct Stingy {
        inner: LoopbackBackend,
        quota: usize,
    }

    impl Backend for Stingy {
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn local_addr(&self) -> SocketAddr {
            self.inner.local_addr()
        }
        fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
            let mut part: TxBatch = batch.drain(..self.quota.min(batch.len())).collect();
            let n = self.inner.send(&mut part)?;
            Ok(n)
        }
        fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
            self.inner.recv(max, f)
        }
        fn wait(&mut self, t: Option<Duration>) -> io::Result<()> {
            self.inner.wait(t)
        }
    }

    #[test]
    fn refused_frames_return_in_order_rolled_once() {
        let (_net, a, mut b) = pair(FaultConfig::none(0));
        let cfg = FaultConfig {
            tx_drop: 0.2,
            duplicate: 0.2,
            ..FaultConfig::none(21)
        };
        let mut a = FaultInjector::new(
            Stingy {
                inner: a.into_inner(),
                quota: 3,
            },
            cfg,
        );
        let got = send_n(&mut a, &mut b, 2000);
        let s = a.stats();
        assert_eq!(s.tx_seen, 2000, "every frame rolled exactly once");
        assert_eq!(got.len() as u64, 2000 - s.tx_dropped + s.duplicated);
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.duplicated > 0 && s.tx_dropped > 0);
    }
}
