//! RTT estimation and retransmission timeout (RFC 6298 / RFC 9002 shape).

use icx_core::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    min_rtt: Duration,
    latest: Duration,
    has_sample: bool,
}

impl RttEstimator {
    pub fn new(initial: Duration) -> Self {
        RttEstimator {
            srtt: initial,
            rttvar: initial / 2,
            min_rtt: Duration::MAX,
            latest: initial,
            has_sample: false,
        }
    }

    /// `ack_delay` is subtracted only while the sample stays above min RTT,
    /// so a lying or coarse peer cannot push the estimate below the floor.
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        self.min_rtt = self.min_rtt.min(sample);
        let adjusted = if sample >= self.min_rtt + ack_delay {
            sample - ack_delay
        } else {
            sample
        };
        if !self.has_sample {
            self.has_sample = true;
            self.srtt = adjusted;
            self.rttvar = adjusted / 2;
            return;
        }
        let diff = self.srtt.abs_diff(adjusted);
        self.rttvar = (self.rttvar * 3 + diff) / 4;
        self.srtt = (self.srtt * 7 + adjusted) / 8;
    }

    pub fn srtt(&self) -> Duration {
        self.srtt
    }

    /// Base probe timeout before backoff.
    pub fn pto_base(&self, granularity: Duration, max_ack_delay: Duration) -> Duration {
        self.srtt + (self.rttvar * 4).max(granularity) + max_ack_delay
    }

    /// How long after a later packet was acked an earlier one counts as lost.
    pub fn loss_delay(&self, granularity: Duration) -> Duration {
        (self.srtt.max(self.latest) * 9 / 8).max(granularity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_and_ignores_ack_delay_below_min() {
        let mut r = RttEstimator::new(Duration::from_millis(100));
        for _ in 0..50 {
            r.update(Duration::from_micros(200), Duration::from_micros(50));
        }
        assert!(r.srtt() < Duration::from_micros(260), "{:?}", r.srtt());
        assert_eq!(r.min_rtt, Duration::from_micros(200));
        // A single slow sample moves srtt a little, not all the way.
        r.update(Duration::from_millis(10), Duration::ZERO);
        assert!(r.srtt() < Duration::from_millis(2));
        assert!(r.loss_delay(Duration::from_micros(1)) >= Duration::from_millis(10));
    }
}
