//! The global cache statistics, by Oracle's names (`v$sysstat`), so a DBA
//! reads them without a glossary. Field names are the `INFO gc` names.
//!
//! Receive times are HdrHistograms (the `hdrhistogram` crate, as the
//! transport's RTTs): 1 us to an hour at two significant digits (1 %),
//! allocated at the first sample, so a service that never receives a block
//! (and every clone the exhaustive exploration makes of one) stays small.

use icx_core::Duration;

/// Receive times in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Option<Box<hdrhistogram::Histogram<u32>>>);

impl PartialEq for Histogram {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => a == b,
            (a, b) => {
                a.as_ref().map_or(0, |h| h.len()) == 0 && b.as_ref().map_or(0, |h| h.len()) == 0
            }
        }
    }
}

impl Eq for Histogram {}

impl Histogram {
    /// The largest value kept exactly; longer is counted as this.
    const MAX_US: u64 = 3_600_000_000;

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_nanos() / 1000).clamp(1, u128::from(Self::MAX_US)) as u64;
        let h = self.0.get_or_insert_with(|| {
            // Cannot fail: the bounds are constants within the crate's limits.
            Box::new(
                hdrhistogram::Histogram::new_with_bounds(1, Self::MAX_US, 2)
                    .expect("valid histogram bounds"),
            )
        });
        h.saturating_record(us);
    }

    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    pub fn mean_us(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.mean().round() as u64)
    }

    pub fn max_us(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.max())
    }

    /// Samples per bucket of `bounds_us` (upper bounds, ascending): the
    /// first counts those up to `bounds_us[0]`, each next those above the
    /// bound before and up to its own (within the histogram's 1 %), and
    /// one more element those above the last bound.
    pub fn bucket_counts_us(&self, bounds_us: &[u64]) -> Vec<u64> {
        let Some(h) = self.0.as_ref() else {
            return vec![0; bounds_us.len() + 1];
        };
        let mut out = Vec::with_capacity(bounds_us.len() + 1);
        let mut below = 0u64;
        for &b in bounds_us {
            let upto = h.count_between(0, b.max(1)).max(below);
            out.push(upto - below);
            below = upto;
        }
        out.push(h.len().saturating_sub(below));
        out
    }

    /// The value (us) at quantile `q` (0..=1), within 1 %; 0 when empty.
    pub fn percentile_us(&self, q: f64) -> u64 {
        self.0
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0, |h| h.value_at_quantile(q.clamp(0.0, 1.0)))
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
    /// Requests failed (reconfiguration or recovery under way, fence,
    /// bad block).
    pub gc_requests_failed: u64,
    /// Reconfigurations of the service (a member left or joined, or the
    /// open's recovery).
    pub gc_reconfigurations: u64,
    /// Requests a master refused while its directory was being rebuilt or
    /// the block awaited recovery (Oracle's wait while the recovery domain
    /// is invalid); the requester's command is answered `TRYAGAIN`.
    pub gc_domain_validation: u64,
    /// Messages of another reconfiguration's epoch, dropped.
    pub gc_stale_epoch_messages: u64,
    /// Chunks this node became the master of by dynamic remastering
    /// (Oracle's DRM; summed over the cluster: the moves).
    pub gc_remasters: u64,
    /// Requests queued while their chunk was frozen to move (Oracle's
    /// `gc remaster` wait).
    pub gc_remaster_waits: u64,
    /// Requests that reached a master after their chunk moved away,
    /// answered with the new master.
    pub gc_remaster_redirects: u64,
    /// Views that only added members, taken without a freeze to the end
    /// (at the old members and at the joiner; a cold start, or a join that
    /// became a reconfiguration, is not one).
    pub gc_joins: u64,
    /// Chunks this node handed to a joining node.
    pub gc_join_chunks: u64,
    /// Requests a joining node held until its share of the directory was
    /// complete (the only requests a join makes wait).
    pub gc_join_waits: u64,
    /// Instance recovery: redo read, records applied, blocks read from
    /// disk, blocks rebuilt with redo, blocks that could not be.
    pub recovery_redo_bytes_read: u64,
    pub recovery_redo_records_applied: u64,
    pub recovery_blocks_read: u64,
    /// Recovery set blocks whose base was a survivor's past image (no
    /// disk read).
    pub recovery_blocks_from_pi: u64,
    pub recovery_blocks_recovered: u64,
    pub recovery_blocks_failed: u64,
    /// Recovery bases that were past images older than the disk (their
    /// discard lost with a master, the redo after them checkpointed):
    /// read from disk instead.
    pub recovery_stale_pis: u64,
    /// Blocks recovered with records that chain to no version any log
    /// holds (alerted: never expected).
    pub recovery_redo_gaps: u64,
    /// Redo checkpoints written (the log's scan start moved up).
    pub redo_checkpoints: u64,
    /// Datafile blocks read to see that an earlier life's redo is covered.
    pub redo_checkpoint_reads: u64,
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
            ("gc_reconfigurations", self.gc_reconfigurations),
            ("gc_domain_validation", self.gc_domain_validation),
            ("gc_stale_epoch_messages", self.gc_stale_epoch_messages),
            ("gc_remasters", self.gc_remasters),
            ("gc_remaster_waits", self.gc_remaster_waits),
            ("gc_remaster_redirects", self.gc_remaster_redirects),
            ("gc_joins", self.gc_joins),
            ("gc_join_chunks", self.gc_join_chunks),
            ("gc_join_waits", self.gc_join_waits),
            ("recovery_redo_bytes_read", self.recovery_redo_bytes_read),
            (
                "recovery_redo_records_applied",
                self.recovery_redo_records_applied,
            ),
            ("recovery_blocks_read", self.recovery_blocks_read),
            ("recovery_blocks_from_pi", self.recovery_blocks_from_pi),
            ("recovery_blocks_recovered", self.recovery_blocks_recovered),
            ("recovery_blocks_failed", self.recovery_blocks_failed),
            ("recovery_stale_pis", self.recovery_stale_pis),
            ("recovery_redo_gaps", self.recovery_redo_gaps),
            ("redo_checkpoints", self.redo_checkpoints),
            ("redo_checkpoint_reads", self.redo_checkpoint_reads),
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
        assert_eq!(h.percentile_us(0.2), 10);
        assert_eq!(h.percentile_us(0.5), 30);
        assert_eq!(h.percentile_us(0.8), 40);
        // Two significant digits: 1000 is kept as a value within 1 %.
        let top = h.percentile_us(1.0);
        assert!((990..=1010).contains(&top), "{top}");
        assert_eq!(h.max_us(), top);
        assert!((218..=222).contains(&h.mean_us()), "{}", h.mean_us());
        assert_eq!(h, h.clone());
        assert_eq!(Histogram::default(), Histogram::default());
        assert_ne!(h, Histogram::default());
    }
}
