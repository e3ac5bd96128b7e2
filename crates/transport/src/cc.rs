//! Delay-based congestion control for the block channel, in the shape of
//! Swift (Kumar et al., SIGCOMM 2020), which eRPC's Timely also follows.
//!
//! Priority at the sender only orders the sender's own queue. Frames already
//! sent wait in socket buffers, NIC rings and switch queues, and a heartbeat
//! sent behind them waits for all of them. So block traffic is held to a
//! window that keeps the queue it builds near a small target: the controller
//! compares each RTT sample with the path's base RTT (a windowed minimum);
//! the difference is the queueing delay block traffic has built.
//!
//! - The delay signal is the *standing* queue, as Copa takes it: the
//!   smallest RTT sample of the last quarter to half RTT, less the base RTT. A
//!   queue that persists shows in every sample; a spike from batching at
//!   either end (a receiver handling 256 datagrams in one turn, a sender
//!   whose acks wait while it writes a train) does not, and must not cut
//!   the window: on a busy host those spikes are ten times the target.
//! - Below half the target the window grows by half the bytes acked (about
//!   1.5x per RTT, to find the link rate quickly); below the target by one
//!   frame per RTT (additive increase).
//! - Above the target it shrinks, at most once per RTT, by a factor
//!   proportional to the excess, `1 - beta * (delay - target) / delay`,
//!   never by more than `MAX_DECREASE`.
//! - Loss is a signal too, but only where it is congestive: a loss while
//!   the standing queue is over the target (a full buffer) takes the window
//!   to 0.7 of itself, once per RTT; random loss on a short queue (a bad
//!   cable, the simulator's 5 %, a busy host's jitter) is not a reason to
//!   slow down: cutting on every random loss collapses the window.
//!   Two probe timeouts in a row reset the window to its minimum.
//!
//! The receiver's credit and `window_bytes` stay the upper bound. Heartbeat
//! and control traffic are not under this controller: they have their own
//! reserve (see `Config::small_window_bytes`).

use icx_core::{Duration, Instant};

/// Window decrease on delay, per unit of relative excess (Swift's beta).
const BETA: f64 = 0.8;
/// Largest decrease on one delay signal.
const MAX_DECREASE: f64 = 0.5;
/// What a congestive loss leaves of the window (CUBIC's beta): milder than
/// halving, since the delay signal has usually cut already.
const LOSS_DECREASE: f64 = 0.7;

/// The controller's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CcConfig {
    /// Off: the block window is `window_bytes` and the receiver's credit.
    pub enabled: bool,
    /// Queueing delay (RTT above the base RTT) block traffic is held near.
    pub target_delay: Duration,
    /// Window before the first RTT sample.
    pub initial_window: usize,
    /// The window never shrinks below this (a few frames, so a block keeps
    /// moving and acks keep coming).
    pub min_window: usize,
    /// How long a base RTT is trusted before it is measured afresh (routes
    /// and queues change; a stale minimum would make every sample look late).
    pub base_rtt_window: Duration,
}

impl Default for CcConfig {
    fn default() -> Self {
        CcConfig {
            enabled: true,
            target_delay: Duration::from_micros(200),
            initial_window: 256 << 10,
            min_window: 32 << 10,
            base_rtt_window: Duration::from_secs(10),
        }
    }
}

/// One peer's block-channel controller.
#[derive(Debug, Clone)]
pub(crate) struct DelayController {
    cfg: CcConfig,
    window: usize,
    /// Windowed minimum of RTT samples in two buckets: the base RTT is the
    /// smaller of the two, and the older bucket is dropped every half window.
    base_cur: Duration,
    base_prev: Duration,
    bucket_at: Option<Instant>,
    last_decrease: Instant,
    last_delay: Duration,
    /// Minimum samples of the current and the previous half-RTT window.
    standing_cur: Duration,
    standing_prev: Duration,
    standing_at: Instant,
    ptos: u32,
    pub(crate) delay_cuts: u64,
    pub(crate) loss_cuts: u64,
}

impl DelayController {
    pub(crate) fn new(cfg: CcConfig) -> Self {
        DelayController {
            cfg,
            window: cfg.initial_window.max(cfg.min_window),
            base_cur: Duration::MAX,
            base_prev: Duration::MAX,
            bucket_at: None,
            last_decrease: Instant::ZERO,
            last_delay: Duration::ZERO,
            standing_cur: Duration::MAX,
            standing_prev: Duration::MAX,
            standing_at: Instant::ZERO,
            ptos: 0,
            delay_cuts: 0,
            loss_cuts: 0,
        }
    }

    /// Bytes of block frames the controller lets be in flight.
    pub(crate) fn window(&self) -> usize {
        if self.cfg.enabled {
            self.window
        } else {
            usize::MAX
        }
    }

    /// The standing queueing delay at the latest sample.
    pub(crate) fn queue_delay(&self) -> Duration {
        self.last_delay
    }

    fn base_rtt(&self) -> Duration {
        self.base_cur.min(self.base_prev)
    }

    fn note_sample(&mut self, now: Instant, sample: Duration) {
        let half = self.cfg.base_rtt_window / 2;
        match self.bucket_at {
            Some(at) if now.saturating_duration_since(at) < half => {}
            _ => {
                self.base_prev = self.base_cur;
                self.base_cur = Duration::MAX;
                self.bucket_at = Some(now);
            }
        }
        self.base_cur = self.base_cur.min(sample);
    }

    /// An RTT sample (ack delay removed) arrived with an ack that newly
    /// acknowledged `acked` block bytes; `frame` is a full frame's size,
    /// `srtt` paces decreases to one per RTT; `cap` is the window's upper
    /// bound (`window_bytes` and credit). `limited`: the window held a
    /// frame back since the last sample.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        sample: Duration,
        acked: usize,
        frame: usize,
        srtt: Duration,
        cap: usize,
        limited: bool,
    ) {
        self.ptos = 0;
        self.note_sample(now, sample);
        if now.saturating_duration_since(self.standing_at) >= srtt / 4 {
            self.standing_prev = self.standing_cur;
            self.standing_cur = Duration::MAX;
            self.standing_at = now;
        }
        self.standing_cur = self.standing_cur.min(sample);
        let standing = self.standing_cur.min(self.standing_prev);
        let delay = standing.saturating_sub(self.base_rtt());
        self.last_delay = delay;
        let target = self.cfg.target_delay;
        if delay <= target {
            if !limited {
                // A sender with little to send must not bank a window it
                // has not tested.
                return;
            }
            let inc = if delay * 2 <= target {
                acked / 2
            } else {
                (frame as u128 * acked as u128 / self.window.max(1) as u128) as usize
            };
            self.window = (self.window + inc.max(1)).min(cap.max(self.cfg.min_window));
        } else if now.saturating_duration_since(self.last_decrease) >= srtt {
            let excess = (delay - target).as_nanos() as f64 / delay.as_nanos().max(1) as f64;
            let f = (1.0 - BETA * excess).max(1.0 - MAX_DECREASE);
            self.shrink(now, f);
            self.delay_cuts += 1;
        }
    }

    /// A block frame was declared lost.
    pub(crate) fn on_loss(&mut self, now: Instant, srtt: Duration) {
        let congestive = self.last_delay > self.cfg.target_delay;
        if congestive && now.saturating_duration_since(self.last_decrease) >= srtt {
            self.shrink(now, LOSS_DECREASE);
            self.loss_cuts += 1;
        }
    }

    /// The probe timer fired: acks stopped coming altogether.
    pub(crate) fn on_pto(&mut self, now: Instant) {
        self.ptos += 1;
        if self.ptos >= 2 {
            self.window = self.cfg.min_window;
            self.last_decrease = now;
            self.loss_cuts += 1;
        }
    }

    fn shrink(&mut self, now: Instant, f: f64) {
        self.window = ((self.window as f64 * f) as usize).max(self.cfg.min_window);
        self.last_decrease = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn at(us: u64) -> Instant {
        Instant::from_nanos(1_000_000 + us * 1000)
    }

    fn cfg50() -> CcConfig {
        CcConfig {
            target_delay: US * 50,
            ..CcConfig::default()
        }
    }

    /// Acks every 10 us from `from` to `to` (us), each with `rtt`.
    fn acks(c: &mut DelayController, from: u64, to: u64, rtt: Duration) {
        let mut t = from;
        while t < to {
            c.on_ack(at(t), rtt, 4 << 10, 1408, US * 40, 1 << 20, true);
            t += 10;
        }
    }

    #[test]
    fn grows_while_the_queue_is_empty_and_shrinks_past_the_target() {
        let mut c = DelayController::new(cfg50());
        let w0 = c.window();
        acks(&mut c, 0, 400, US * 40);
        assert!(c.window() > w0, "{} vs {w0}", c.window());
        let w = c.window();
        c.on_ack(at(500), US * 40, 16 << 10, 1408, US * 40, 1 << 20, false);
        assert_eq!(c.window(), w, "grew without being window-limited");
        // 150 us of standing queue against a 50 us target: once the old
        // samples age out (half an RTT), cut, once per RTT.
        acks(&mut c, 1000, 1100, US * 190);
        let w1 = c.window();
        assert!(w1 < w, "{w1} vs {w}");
        assert!(c.delay_cuts >= 1 && c.delay_cuts <= 3, "{}", c.delay_cuts);
        acks(&mut c, 1100, 1400, US * 190);
        assert!(c.window() < w1);
        assert!(c.queue_delay() >= US * 140);
    }

    #[test]
    fn a_spike_is_not_a_standing_queue() {
        let mut c = DelayController::new(cfg50());
        acks(&mut c, 0, 400, US * 40);
        let w = c.window();
        // One late ack (a batch at the far end) among prompt ones.
        c.on_ack(at(405), US * 400, 4 << 10, 1408, US * 40, 1 << 20, true);
        acks(&mut c, 410, 500, US * 40);
        assert!(c.window() >= w, "{} vs {w}", c.window());
        assert_eq!(c.delay_cuts, 0);
    }

    #[test]
    fn random_loss_on_an_empty_queue_is_not_congestion() {
        let mut c = DelayController::new(cfg50());
        acks(&mut c, 0, 100, US * 40);
        let w = c.window();
        c.on_loss(at(100), US * 40);
        assert_eq!(c.window(), w);
        // Half the target is still a short queue.
        let mut t = 200;
        while t < 300 {
            c.on_ack(at(t), US * 65, 1408, 1408, US * 40, 1 << 20, false);
            t += 10;
        }
        let w = c.window();
        c.on_loss(at(350), US * 40);
        assert_eq!(c.window(), w);
        // A standing queue over the target: a full buffer, cut.
        while t < 500 {
            c.on_ack(at(t), US * 100, 1408, 1408, US * 40, 1 << 20, false);
            t += 10;
        }
        let w = c.window();
        c.on_loss(at(600), US * 40);
        assert_eq!(
            c.window(),
            ((w as f64 * LOSS_DECREASE) as usize).max(CcConfig::default().min_window)
        );
        assert_eq!(c.loss_cuts, 1);
    }

    #[test]
    fn bounded_by_cap_and_min_and_resets_on_repeated_timeouts() {
        let cfg = CcConfig::default();
        let mut c = DelayController::new(cfg);
        for i in 0..100 {
            c.on_ack(at(i * 40), US * 40, 1 << 20, 1408, US * 40, 300 << 10, true);
        }
        assert_eq!(c.window(), 300 << 10);
        c.on_pto(at(5000));
        assert_eq!(c.window(), 300 << 10);
        c.on_pto(at(9000));
        assert_eq!(c.window(), cfg.min_window);
        let off = DelayController::new(CcConfig {
            enabled: false,
            ..cfg
        });
        assert_eq!(off.window(), usize::MAX);
    }

    #[test]
    fn base_rtt_is_forgotten_after_its_window() {
        let cfg = CcConfig {
            base_rtt_window: Duration::from_millis(10),
            ..CcConfig::default()
        };
        let mut c = DelayController::new(cfg);
        c.on_ack(at(0), US * 10, 1408, 1408, US * 10, 1 << 20, true);
        // The path got longer (a new route): 100 us is the new base.
        for i in 1..40 {
            c.on_ack(at(i * 1000), US * 100, 1408, 1408, US * 100, 1 << 20, true);
        }
        assert!(c.queue_delay() < US, "{:?}", c.queue_delay());
    }
}
