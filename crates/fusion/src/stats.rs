//! The global cache statistics, by Oracle's names (`v$sysstat`), so a DBA
//! reads them without a glossary. Field names are the `INFO gc` names.
//!
//! Receive times use a small fixed-bucket histogram (powers of two of
//! microseconds, 1 us to ~35 min) rather than the `hdrhistogram` crate: the
//! protocol crate stays lean, and a percentile within a factor of two is
//! what AWR's wait-event histograms give too.

use icx_core::Duration;

/// A histogram of durations in 32 power-of-two buckets of microseconds:
/// bucket i holds [2^i, 2^(i+1)) us (bucket 0 also holds 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; 32],
    count: u64,
    sum_us: u64,
    max_us: u64,
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_nanos() as u64 / 1000;
        let i = (63 - us.max(1).leading_zeros() as usize).min(31);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count).unwrap_or(0)
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The upper bound (us) of the bucket holding quantile `q` (0..=1); 0
    /// when empty.
    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let want = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (1u64 << (i + 1)).min(self.max_us.max(1));
            }
        }
        self.max_us
    }
}

/// One node's global cache statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub gc_cr_blocks_received: u64,
    pub gc_cr_blocks_served: u64,
    pub gc_current_blocks_received: u64,
    pub gc_current_blocks_served: u64,
    pub gc_cr_block_receive_time: Histogram,
    pub gc_current_block_receive_time: Histogram,
    pub gc_cr_grant_2way: u64,
    pub gc_current_grant_2way: u64,
    pub gc_cr_block_2way: u64,
    pub gc_cr_block_3way: u64,
    pub gc_current_block_2way: u64,
    pub gc_current_block_3way: u64,
    pub gc_cr_multi_block_request: u64,
    pub gc_cr_block_lost: u64,
    pub gc_current_block_lost: u64,
    pub gc_blocks_corrupt: u64,
    /// A local acquire waited behind another local operation's global
    /// request or pin on the same block.
    pub gc_buffer_busy_acquire: u64,
    /// A forwarded request waited for a local pin or write of the block.
    pub gc_buffer_busy_release: u64,
    /// A ship (or a block write) waited for redo to become durable.
    pub gcs_log_flush_sync: u64,
    pub gc_fairness_down_converts: u64,
    /// Blocks read from the datafiles.
    pub physical_reads: u64,
    /// Blocks received over the interconnect instead of read from disk.
    pub physical_reads_avoided: u64,
    /// Blocks written to the datafiles.
    pub physical_writes: u64,
    /// Ships or disk reads refused as older than a version already seen.
    pub gc_stale_blocks_rejected: u64,
    /// Replies recognised as late or duplicate and dropped.
    pub gc_duplicate_replies: u64,
    /// Past images discarded after a write.
    pub gc_pi_discards: u64,
    /// Control messages refused by the decoder (damaged or foreign).
    pub gc_bad_messages: u64,
    /// Requests failed (eviction awaiting recovery, fence, bad block).
    pub gc_requests_failed: u64,
    /// Redo appends (group commits) and the bytes they carried.
    pub redo_writes: u64,
    pub redo_bytes: u64,
}

impl Stats {
    /// `(name, value)` of every counter, in `INFO gc` order.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("gc_cr_blocks_received", self.gc_cr_blocks_received),
            ("gc_cr_blocks_served", self.gc_cr_blocks_served),
            (
                "gc_current_blocks_received",
                self.gc_current_blocks_received,
            ),
            ("gc_current_blocks_served", self.gc_current_blocks_served),
            ("gc_cr_grant_2way", self.gc_cr_grant_2way),
            ("gc_current_grant_2way", self.gc_current_grant_2way),
            ("gc_cr_block_2way", self.gc_cr_block_2way),
            ("gc_cr_block_3way", self.gc_cr_block_3way),
            ("gc_current_block_2way", self.gc_current_block_2way),
            ("gc_current_block_3way", self.gc_current_block_3way),
            ("gc_cr_multi_block_request", self.gc_cr_multi_block_request),
            ("gc_cr_block_lost", self.gc_cr_block_lost),
            ("gc_current_block_lost", self.gc_current_block_lost),
            ("gc_blocks_corrupt", self.gc_blocks_corrupt),
            ("gc_buffer_busy_acquire", self.gc_buffer_busy_acquire),
            ("gc_buffer_busy_release", self.gc_buffer_busy_release),
            ("gcs_log_flush_sync", self.gcs_log_flush_sync),
            ("gc_fairness_down_converts", self.gc_fairness_down_converts),
            ("physical_reads", self.physical_reads),
            ("physical_reads_avoided", self.physical_reads_avoided),
            ("physical_writes", self.physical_writes),
            ("gc_stale_blocks_rejected", self.gc_stale_blocks_rejected),
            ("gc_duplicate_replies", self.gc_duplicate_replies),
            ("gc_pi_discards", self.gc_pi_discards),
            ("gc_bad_messages", self.gc_bad_messages),
            ("gc_requests_failed", self.gc_requests_failed),
            ("redo_writes", self.redo_writes),
            ("redo_bytes", self.redo_bytes),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile_us(0.5), 0);
        for us in [10u64, 20, 30, 40, 1000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 5);
        // 10 is in [8, 16), 20 and 30 in [16, 32).
        assert_eq!(h.percentile_us(0.2), 16);
        assert_eq!(h.percentile_us(0.5), 32);
        assert_eq!(h.percentile_us(1.0), 1000);
        assert_eq!(h.mean_us(), 220);
    }
}
