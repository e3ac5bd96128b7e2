//! `INFO gc`, `INFO cache` and `INFO redo`: Oracle's statistic names
//! (`v$sysstat`, in Redis's `name:value` lines), as the issue fixes them.

use super::gate::GateState;
use super::Data;
use crate::admin::Fields;
use crate::config::format_size;
use icx_fusion::gcs::ReconPhase;

impl Data {
    /// `gc_state`: `open ...` once the service serves; `recovering ...`
    /// while a reconfiguration (or the open's recovery) runs, when
    /// commands on what it covers are answered `TRYAGAIN`.
    fn gate_line(&self) -> String {
        if let Some(r) = self.fusion.as_ref().and_then(|f| f.reconfiguration()) {
            let phase = match r.phase {
                ReconPhase::Rebuilding => "rebuilding the directory",
                ReconPhase::Scanning => "scanning redo",
                ReconPhase::Recovering => "recovering blocks",
                ReconPhase::Done => "finishing",
            };
            return format!("recovering in cluster incarnation {}: {phase}", r.epoch);
        }
        if let Some(j) = self.fusion.as_ref().and_then(|f| f.joining()) {
            let what = if j.joiner {
                "joining"
            } else {
                "handing chunks to a joining node"
            };
            return format!("open, {what} in cluster incarnation {}", j.epoch);
        }
        match self.gate.state() {
            GateState::Open {
                view, joined: None, ..
            } => format!("open since cluster incarnation {view}"),
            GateState::Open {
                view,
                joined: Some(since),
                ..
            } => format!(
                "open since cluster incarnation {view} (joined a service running since {since})"
            ),
            GateState::Closed { why } => format!("closed: {why}"),
        }
    }

    /// `INFO recovery`: the reconfiguration under way, and the last one
    /// with its phases (`*_ms` from its start: directory rebuilt, redo
    /// scanned, recovery set recovered) and what recovery did.
    pub(crate) fn info_recovery(&self, f: &mut Fields<'_>) {
        f.header("Recovery");
        let Some(fu) = self.fusion.as_ref() else {
            f.kv("recovery_state", "closed");
            return;
        };
        let state = match fu.reconfiguration().map(|r| r.phase) {
            None | Some(ReconPhase::Done) => "idle",
            Some(ReconPhase::Rebuilding) => "rebuilding",
            Some(ReconPhase::Scanning) => "scanning",
            Some(ReconPhase::Recovering) => "recovering",
        };
        f.kv("recovery_state", state);
        f.kv("recovery_epoch", fu.epoch());
        let st = fu.stats();
        f.kv("reconfigurations", st.gc_reconfigurations);
        self.info_join(fu, f);
        let Some(r) = fu.reconfiguration().or(fu.last_reconfiguration()) else {
            return;
        };
        let ids = |v: &[icx_core::NodeId]| {
            v.iter()
                .map(|n| n.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        f.kv("last_old_incarnation", r.old_epoch);
        f.kv("last_incarnation", r.epoch);
        f.kv("last_members", ids(&r.members));
        f.kv("last_departed", ids(&r.departed));
        f.kv("last_joined", ids(&r.joined));
        f.kv("last_recovered_redo", u8::from(r.recover));
        let ms = |d: Option<icx_core::Duration>| {
            d.map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
        };
        let [rebuilt, scanned, recovered] = r.phase_times();
        f.kv("last_rebuilt_ms", ms(rebuilt));
        f.kv("last_scanned_ms", ms(scanned));
        f.kv("last_recovered_ms", ms(recovered));
        f.kv("last_report_entries", r.entries_reported);
        f.kv("last_redo_bytes_read", r.redo_bytes_read);
        f.kv("last_recovery_set_blocks", r.recovery_set);
        f.kv("last_blocks_recovered", r.blocks_recovered);
        f.kv("last_redo_records_applied", r.records_applied);
    }

    /// The join (a view that only added members, taken without a freeze)
    /// under way, or else the last one.
    fn info_join(&self, fu: &icx_fusion::gcs::Fusion, f: &mut Fields<'_>) {
        let cur = fu.joining();
        f.kv("join_state", if cur.is_some() { "joining" } else { "idle" });
        f.kv("joins", fu.stats().gc_joins);
        let Some(j) = cur.or(fu.last_join()) else {
            return;
        };
        let ids: Vec<String> = j.joined.iter().map(|n| n.0.to_string()).collect();
        f.kv("last_join_incarnation", j.epoch);
        f.kv("last_join_joined", ids.join(","));
        f.kv("last_join_role", if j.joiner { "joiner" } else { "member" });
        let ms = |t: Option<icx_core::Instant>| {
            t.map_or("-".to_string(), |t| {
                format!("{:.3}", (t - j.started).as_secs_f64() * 1e3)
            })
        };
        f.kv("last_join_ready_ms", ms(j.ready));
        f.kv("last_join_done_ms", ms(j.done));
        f.kv("last_join_chunks_handed", j.chunks_handed);
        f.kv("last_join_requests_held", j.requests_held);
    }

    pub(crate) fn info_gc(&self, f: &mut Fields<'_>) {
        f.header("Gc");
        f.kv("gc_state", self.gate_line().replace(['\r', '\n'], " "));
        let Some(fu) = self.fusion.as_ref() else {
            return;
        };
        let st = fu.stats();
        for (k, v) in st.counters() {
            f.kv(k, v);
        }
        for (name, h) in [
            ("gc_cr_block_receive_time", &st.gc_cr_block_receive_time),
            (
                "gc_current_block_receive_time",
                &st.gc_current_block_receive_time,
            ),
        ] {
            f.kv(&format!("{name}_count"), h.count());
            f.kv(&format!("{name}_mean_us"), h.mean_us());
            for (q, tag) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")] {
                f.kv(&format!("{name}_{tag}_us"), h.percentile_us(q));
            }
            f.kv(&format!("{name}_max_us"), h.max_us());
        }
        f.kv("gc_messages_dropped_closed", self.stack_stats.fusion_closed);
        f.kv("gc_messages_foreign", self.stack_stats.foreign);
        f.kv("gc_gate_malformed", self.gate.malformed);
    }

    pub(crate) fn info_cache(&self, f: &mut Fields<'_>) {
        f.header("Cache");
        f.kv("block_size", self.cfg.block_size);
        f.kv("cache_size", format_size(self.cfg.cache_size));
        f.kv("cache_blocks", self.cfg.cache_blocks());
        f.kv("datafiles", self.storage_dir());
        f.kv("datafile_count", self.cfg.datafile_count);
        f.kv("datafile_blocks", self.blocks_per_file);
        for (i, (p, mode)) in self.storage.modes().iter().enumerate() {
            f.kv(&format!("file_{i}"), format!("{},{mode}", p.display()));
        }
        let ds = self.db.stats();
        f.kv("commands_pending", self.pending.len());
        f.kv("db_commands_max_pending", ds.max_pending);
        f.kv("db_keys_read", ds.keys_read);
        f.kv("db_keys_written", ds.keys_written);
        f.kv("db_errors", ds.errors);
        f.kv("db_retries", ds.retries);
        f.kv("db_recovery_waits", ds.recovery_waits);
        f.kv("checkpoint_writes", ds.checkpoint_writes);
        f.kv("checkpoint_errors", ds.checkpoint_errors);
        for (name, n) in &ds.commands {
            f.kv(
                &format!("cmdstat_{}", name.to_ascii_lowercase().replace('.', "_")),
                n,
            );
        }
        let Some(fu) = self.fusion.as_ref() else {
            return;
        };
        let c = fu.cache_summary();
        f.kv("cache_resident_blocks", c.resident);
        f.kv("cache_dirty_blocks", c.dirty);
        f.kv("cache_past_images", c.past_images);
        f.kv("cache_cr_versions", c.versions);
        f.kv("cache_pinned_blocks", c.pinned);
        f.kv("pool_buffers_in_use", self.pool.in_use());
        let s = self.storage.stats();
        f.kv("physical_read_requests", s.reads);
        f.kv("physical_read_blocks", s.blocks_read);
        f.kv("physical_read_calls", s.read_calls);
        f.kv("physical_write_requests", s.writes);
        f.kv("storage_corrupt_blocks", s.corrupt);
        f.kv("storage_errors", s.errors);
        f.kv("storage_refusals", s.refusals);
    }

    pub(crate) fn info_redo(&self, f: &mut Fields<'_>) {
        f.header("Redo");
        let s = self.storage.stats();
        f.kv("redo_log", self.storage.redo_path().display());
        f.kv("redo_log_start_lsn", self.redo_tail.lsn);
        f.kv("redo_appends", s.redo_appends);
        f.kv("redo_groups", s.redo_groups);
        f.kv("redo_bytes_written", s.redo_bytes);
        f.kv("redo_max_group", s.redo_max_group);
        f.kv(
            "redo_group_sizes",
            format!(
                "1={},2={},3-4={},5-8={},9-16={},17-32={},33-64={},65+={}",
                s.redo_group_sizes[0],
                s.redo_group_sizes[1],
                s.redo_group_sizes[2],
                s.redo_group_sizes[3],
                s.redo_group_sizes[4],
                s.redo_group_sizes[5],
                s.redo_group_sizes[6],
                s.redo_group_sizes[7]
            ),
        );
        f.kv("redo_write_time_us", s.redo_write_time.as_micros());
        f.kv(
            "redo_write_mean_us",
            s.redo_write_time
                .as_micros()
                .checked_div(u128::from(s.redo_groups))
                .unwrap_or(0),
        );
        f.kv("redo_write_max_us", s.redo_write_max.as_micros());
        f.kv("redo_checkpoints_written", s.redo_checkpoints);
        f.kv("redo_punched_bytes", s.redo_punched_bytes);
        f.kv("redo_punch_unsupported", s.redo_punch_unsupported);
        if let Some(fu) = self.fusion.as_ref() {
            let st = fu.stats();
            let (lsn, pending) = fu.redo_checkpoint();
            f.kv("redo_checkpoint_lsn", lsn);
            f.kv("redo_checkpoint_pending_blocks", pending);
            f.kv("redo_writes", st.redo_writes);
            f.kv("redo_bytes", st.redo_bytes);
            f.kv("gcs_log_flush_sync", st.gcs_log_flush_sync);
            f.kv("scn", fu.scn());
        }
    }

    fn storage_dir(&self) -> String {
        self.storage.dir().display().to_string()
    }
}
