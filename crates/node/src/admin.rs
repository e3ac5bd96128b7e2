//! The RESP commands: Redis's conventions (INFO sections, CONFIG GET/SET
//! pairs, error prefixes), Oracle's names for what the cluster reports.
//! The command reference is the crate README.

use crate::config::format_duration;
use crate::node::Node;
use crate::resp::{Reply, Request};
use icx_core::Channel;
use icx_fusion::db::Cmd;
use std::fmt::Write as _;

/// Redis data commands fusion-node does not serve (it serves
/// [`Cmd::NAMES`]): refused with a list of what it does.
const UNSUPPORTED_DATA_COMMANDS: &[&str] = &[
    "get", "set", "del", "exists", "mget", "mset", "incr", "decr", "incrby", "decrby", "append",
    "strlen", "getset", "setnx", "setex", "getdel", "expire", "ttl", "keys", "scan", "hget",
    "hset", "hdel", "hgetall", "lpush", "rpush", "lpop", "rpop", "lrange", "sadd", "srem",
    "smembers", "zadd", "zrange", "type", "unlink", "rename", "flushdb", "flushall", "dbsize",
];

/// Settings `CONFIG GET` shows, in this order.
const SETTINGS: &[&str] = &[
    "cluster_name",
    "cluster_id",
    "node_id",
    "node_name",
    "css_critical",
    "heartbeat_interval",
    "misscount",
    "disktimeout",
    "voting_files",
    "interconnect_mtu",
    "interconnect_link_mode",
    "interconnect_link_timeout",
    "datafiles",
    "block_size",
    "datafile_size",
    "datafile_count",
    "cache_size",
    "multiblock_read_count",
    "fairness_threshold",
    "gc_request_timeout",
    "checkpoint_interval",
    "gc_recovery_wait",
    "gc_remaster_threshold",
    "gc_remaster_window",
    "maxclients",
    "client_query_buffer_limit",
    "timeout",
    "protected_mode",
    "cluster_key_file",
    "cluster_key_id",
    "cluster_next_key_file",
    "cluster_next_key_id",
    "cluster_cipher",
    "encrypt",
    "metrics",
];

/// How long INFO waits for the transport's per-peer snapshot.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

impl Node {
    pub(crate) fn command(&mut self, req: Request) {
        let name = req
            .args
            .first()
            .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase());
        if let Some(n) = name.as_deref().filter(|n| Cmd::NAMES.contains(n)) {
            let n = n.to_string();
            return self.data_command(req, &n);
        }
        let reply = self.dispatch(&req.args);
        req.reply(reply);
    }

    fn data_command(&mut self, req: Request, _name: &str) {
        let (serving, leaving) = (self.serving, self.is_leaving());
        let now = self.now();
        match self.data.as_mut() {
            Some(d) => d.command(now, req, serving, leaving),
            None if !serving || leaving => req.reply(Reply::Error(format!(
                "CLUSTERDOWN the node is not active (state {})",
                self.member.state().name()
            ))),
            None => req.reply(Reply::Error(
                "ERR this node serves no data: the cluster config names no datafiles directory (key datafiles)"
                    .into(),
            )),
        }
    }

    fn dispatch(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some(name) = args.first() else {
            return Reply::Error("ERR empty command".into());
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let rest: Vec<String> = args[1..]
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        match name.as_str() {
            // Binary-safe, as in Redis: `redis-cli --pipe` ends its stream
            // with an ECHO of 20 random bytes and waits for them exactly.
            "ping" => match &args[1..] {
                [] => Reply::Simple("PONG".into()),
                [m] => Reply::Bulk(m.clone()),
                _ => wrong_args("ping"),
            },
            "echo" => match &args[1..] {
                [m] => Reply::Bulk(m.clone()),
                _ => wrong_args("echo"),
            },
            "info" => match rest.as_slice() {
                [] => Reply::Bulk(self.info(None).into_bytes()),
                [s] => Reply::Bulk(self.info(Some(&s.to_ascii_lowercase())).into_bytes()),
                _ => wrong_args("info"),
            },
            "config" => self.config_command(&rest),
            "cluster" => self.cluster_command(&rest),
            "shutdown" => {
                self.begin_shutdown();
                Reply::Simple("OK".into())
            }
            "command" => Reply::Array(Vec::new()),
            n if UNSUPPORTED_DATA_COMMANDS.contains(&n) => Reply::Error(format!(
                "ERR unsupported command '{n}': fusion-node serves {}",
                Cmd::NAMES.join(" ").to_ascii_uppercase()
            )),
            n => Reply::Error(format!(
                "ERR unknown command '{n}', with args beginning with: {}",
                rest.iter()
                    .take(3)
                    .map(|a| format!("'{a}' "))
                    .collect::<String>()
            )),
        }
    }

    fn config_command(&mut self, rest: &[String]) -> Reply {
        let sub = rest.first().map(|s| s.to_ascii_lowercase());
        match (sub.as_deref(), &rest[1.min(rest.len())..]) {
            (Some("get"), pats) if !pats.is_empty() => {
                let mut out = Vec::new();
                for &k in SETTINGS {
                    if pats.iter().any(|p| glob(&p.to_ascii_lowercase(), k)) {
                        out.push(Reply::Bulk(k.as_bytes().to_vec()));
                        out.push(Reply::Bulk(self.setting(k).into_bytes()));
                    }
                }
                Reply::Array(out)
            }
            (Some("set"), [k, v]) => match k.to_ascii_lowercase().as_str() {
                "css_critical" => {
                    let on = match v.to_ascii_lowercase().as_str() {
                        "yes" | "true" | "1" => true,
                        "no" | "false" | "0" => false,
                        _ => {
                            return Reply::Error(format!(
                                "ERR Invalid argument '{v}' for CONFIG SET 'css_critical': use yes or no"
                            ))
                        }
                    };
                    let now = self.now();
                    self.member.set_critical(now, on);
                    Reply::Simple("OK".into())
                }
                k if SETTINGS.contains(&k) => Reply::Error(format!(
                    "ERR CONFIG SET '{k}' is not settable at run time: every node must agree on it (edit {} and restart the cluster)",
                    self.cfg.file.display()
                )),
                k => Reply::Error(format!("ERR Unknown option or number of arguments for CONFIG SET - '{k}'")),
            },
            // Redis's: zero the statistics (here INFO gc's), e.g. between
            // the phases of a measurement.
            (Some("resetstat"), []) => {
                if let Some(f) = self.data.as_mut().and_then(|d| d.fusion.as_mut()) {
                    f.reset_stats();
                }
                Reply::Simple("OK".into())
            }
            _ => Reply::Error(
                "ERR unknown subcommand or wrong number of arguments for 'config': use CONFIG GET pattern, CONFIG SET css_critical yes|no, CONFIG RESETSTAT".into(),
            ),
        }
    }

    fn setting(&self, name: &str) -> String {
        let c = &self.cfg;
        let k = c.keys.as_ref();
        match name {
            "cluster_name" => c.cluster_name.clone(),
            "cluster_id" => c.cluster_id.to_string(),
            "node_id" => self.me.id.0.to_string(),
            "node_name" => self.me.name.clone(),
            "css_critical" => yes_no(self.member.weight() > 0).into(),
            "heartbeat_interval" => format_duration(c.heartbeat_interval),
            "misscount" => format_duration(c.misscount),
            "disktimeout" => format_duration(c.disktimeout),
            "voting_files" => c
                .voting_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            "interconnect_mtu" => mtus(&c.interconnect_mtu),
            "interconnect_link_mode" => c.interconnect_link_mode.name().into(),
            "interconnect_link_timeout" => format_duration(c.interconnect_link_timeout),
            "datafiles" => c
                .datafiles
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            "block_size" => c.data.block_size.to_string(),
            "datafile_size" => crate::config::format_size(c.data.datafile_size),
            "datafile_count" => c.data.datafile_count.to_string(),
            "cache_size" => crate::config::format_size(c.data.cache_size),
            "multiblock_read_count" => c.data.multiblock_read_count.to_string(),
            "fairness_threshold" => c.data.fairness_threshold.to_string(),
            "gc_request_timeout" => format_duration(c.data.gc_request_timeout),
            "checkpoint_interval" => format_duration(c.data.checkpoint_interval),
            "gc_recovery_wait" => format_duration(c.data.gc_recovery_wait),
            "gc_remaster_threshold" => c.data.gc_remaster_threshold.to_string(),
            "gc_remaster_window" => format_duration(c.data.gc_remaster_window),
            // Redis's forms: a count, bytes, seconds (0: never), yes/no.
            "maxclients" => c.clients.max_clients.to_string(),
            "client_query_buffer_limit" => c.clients.max_request_bytes.to_string(),
            "timeout" => c
                .clients
                .idle_timeout
                .map_or(0, |d| d.as_secs())
                .to_string(),
            "protected_mode" => yes_no(c.clients.protected_mode).into(),
            // The files' paths, never the keys.
            "cluster_key_file" => k.map_or_else(String::new, |k| k.key_file.display().to_string()),
            "cluster_key_id" => k.map_or_else(String::new, |k| k.key_id.to_string()),
            "cluster_next_key_file" => k
                .and_then(|k| k.next_key_file.as_ref())
                .map_or_else(String::new, |p| p.display().to_string()),
            "cluster_next_key_id" => k
                .filter(|k| k.next_key_file.is_some())
                .and_then(|k| k.ring.ids().find(|&i| i.0 != k.key_id))
                .map_or_else(String::new, |i| i.0.to_string()),
            "cluster_cipher" => k.map_or_else(String::new, |k| k.ring.cipher.name().into()),
            "encrypt" => yes_no(k.is_some_and(|k| k.encrypt)).into(),
            "metrics" => c.metrics.map_or_else(String::new, |a| a.to_string()),
            _ => String::new(),
        }
    }

    fn cluster_command(&mut self, rest: &[String]) -> Reply {
        match rest.first().map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("history") => {
                let n = match rest.get(1).map(|s| s.parse::<usize>()) {
                    None => usize::MAX,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => {
                        return Reply::Error(
                            "ERR CLUSTER HISTORY [count]: count is a number".into(),
                        )
                    }
                };
                let h = self.member.history();
                let skip = h.len().saturating_sub(n);
                Reply::Array(
                    h[skip..]
                        .iter()
                        .map(|e| Reply::Bulk(self.history_line(e).into_bytes()))
                        .collect(),
                )
            }
            Some("info") => Reply::Bulk(self.cluster_info().into_bytes()),
            Some("keyreload") if rest.len() == 1 => match self.reload_keys() {
                Ok(done) => Reply::Simple(done),
                Err(why) => Reply::Error(format!("ERR {why}")),
            },
            _ => Reply::Error(
                "ERR unknown subcommand for 'cluster': use CLUSTER HISTORY [count], CLUSTER INFO or CLUSTER KEYRELOAD"
                    .into(),
            ),
        }
    }

    /// `2026-12-01 22:04:09.123 [view 7] decided epoch 8 ...`.
    fn history_line(&self, e: &icx_membership::HistoryEntry) -> String {
        let text = e.to_string();
        // The entry's own rendering starts with its monotonic instant;
        // operators want the wall clock instead.
        let what = text.split_once(' ').map_or(text.as_str(), |(_, w)| w);
        format!("{} {what}", crate::alertlog::timestamp(self.wall(e.at)))
    }

    /// Redis Cluster's field names where they mean the same.
    fn cluster_info(&self) -> String {
        let m = &self.member;
        let view = m.view();
        format!(
            "cluster_state:{}\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\n",
            if self.serving && view.is_some() { "ok" } else { "fail" },
            self.cfg.nodes.len(),
            view.map_or(0, |v| v.members.len()),
            view.map_or(0, |v| v.incarnation),
        )
    }

    /// `INFO [section]`: `server`, `membership`, `interconnect`; all when
    /// none is named (or `all`, `everything`, `default`).
    fn info(&mut self, section: Option<&str>) -> String {
        let all = matches!(section, None | Some("all" | "everything" | "default"));
        let mut out = String::new();
        if all || section == Some("server") {
            self.info_server(&mut out);
        }
        if all || section == Some("membership") {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            self.info_membership(&mut out);
        }
        if all || section == Some("interconnect") {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            self.info_interconnect(&mut out);
        }
        type Section = fn(&crate::data::Data, &mut Fields<'_>);
        let data: [(&str, Section); 4] = [
            ("gc", crate::data::Data::info_gc),
            ("cache", crate::data::Data::info_cache),
            ("redo", crate::data::Data::info_redo),
            ("recovery", crate::data::Data::info_recovery),
        ];
        if let Some(d) = self.data.as_ref() {
            for (name, section_fn) in data {
                if all || section == Some(name) {
                    if !out.is_empty() {
                        out.push_str("\r\n");
                    }
                    section_fn(d, &mut Fields(&mut out));
                }
            }
        }
        out
    }

    fn info_server(&self, out: &mut String) {
        let up = self.now().saturating_duration_since(self.started).as_secs();
        let mut f = Fields(out);
        f.header("Server");
        f.kv("fusion_node_version", env!("CARGO_PKG_VERSION"));
        f.kv("process_id", std::process::id());
        f.kv("config_file", self.cfg.file.display());
        f.kv("cluster_name", &self.cfg.cluster_name);
        f.kv("cluster_id", self.cfg.cluster_id);
        f.kv("tcp_port", self.client_addr().map_or(0, |a| a.port()));
        f.kv("uptime_in_seconds", up);
        f.kv("uptime_in_days", up / 86_400);
        f.kv("alert_log", self.alert_log().path().display());
        f.kv("alert_log_write_errors", self.alert_log().write_errors);
        // Redis's names where Redis has them.
        if let Some(r) = self.resp_stats() {
            f.kv("connected_clients", r.clients);
            f.kv("total_connections_received", r.accepted);
            f.kv("rejected_connections", r.refused);
            f.kv("total_commands_processed", r.commands);
            f.kv("acl_access_denied_auth", r.auth_failures);
            f.kv("client_idle_timeouts", r.timed_out);
            f.kv("client_protocol_errors", r.protocol_errors);
            f.kv("client_dropped", r.dropped);
        }
    }

    fn info_membership(&self, out: &mut String) {
        let m = &self.member;
        let now = self.now();
        let view = m.view();
        let st = m.stats();
        let mut f = Fields(out);
        f.header("Membership");
        f.kv("node_id", self.me.id.0);
        f.kv("node_name", &self.me.name);
        f.kv("state", m.state().name());
        f.kv("cluster_incarnation", view.map_or(0, |v| v.incarnation));
        f.kv(
            "members",
            view.map_or(String::new(), |v| join(v.members.iter().map(|(n, _)| n.0))),
        );
        f.kv("css_critical", yes_no(m.weight() > 0));
        let files = self.cfg.voting_files.len();
        f.kv(
            "voting_files_online",
            format!("{}/{}", m.files_online(), files),
        );
        f.kv("incarnation", m.incarnation());
        f.kv("weight", m.weight());
        f.kv("reconfiguring", u8::from(m.reconfiguring()));
        f.kv("hears", join(m.hears(now).iter().map(|n| n.0)));
        f.kv(
            "quorum",
            if files == 0 {
                "network"
            } else {
                "voting_files"
            },
        );
        if let Some(v) = self.votes.as_ref() {
            for (i, (p, mode)) in self.cfg.voting_files.iter().zip(v.modes()).enumerate() {
                f.kv(
                    &format!("voting_file_{i}"),
                    format!("{},{mode}", p.display()),
                );
            }
        }
        f.kv("heartbeats_sent", st.heartbeats_sent);
        f.kv("heartbeats_received", st.heartbeats_received);
        f.kv("heartbeats_malformed", st.heartbeats_malformed);
        f.kv("heartbeats_stale", st.heartbeats_stale);
        f.kv("disk_reads", st.disk_reads);
        f.kv("disk_writes", st.disk_writes);
        f.kv("disk_errors", st.disk_errors);
        f.kv("records_malformed", st.records_malformed);
        f.kv("records_rejected_auth", st.records_rejected_auth);
        f.kv("reconfigurations", st.reconfigurations);
        f.kv("fences", self.fences);
        f.kv("restarts", self.restarts);
    }

    fn info_interconnect(&mut self, out: &mut String) {
        let (backend, fallback, inc) = self.backend();
        let (backend, fallback) = (backend.to_string(), fallback.map(str::to_string));
        let mtu = mtus(&self.cfg.interconnect_mtu);
        let local = self.runtime().local_addr();
        let snap = self.runtime().snapshot(SNAPSHOT_TIMEOUT);
        let mut f = Fields(out);
        f.header("Interconnect");
        f.kv("interconnect_addr", local);
        f.kv("backend", &backend);
        if let Some(why) = fallback {
            f.kv("backend_fallback", why.replace(['\r', '\n'], " "));
        }
        f.kv("interconnect_mtu", mtu);
        let me = &self.me.interconnect;
        f.kv("interconnect_links", me.len());
        f.kv(
            "interconnect_addrs",
            me.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        f.kv(
            "interconnect_link_mode",
            self.cfg.interconnect_link_mode.name(),
        );
        f.kv(
            "interconnect_link_timeout_ms",
            self.cfg.interconnect_link_timeout.as_millis(),
        );
        f.kv("transport_incarnation", inc);
        let ring = self.cfg.keys.as_ref().map(|k| &k.ring);
        f.kv("frame_auth", icx_driver::keys::protection(ring));
        if let Some(r) = ring {
            f.kv("frame_auth_send_key", r.send_id().0);
            let ids: Vec<String> = r.ids().map(|i| i.0.to_string()).collect();
            f.kv("frame_auth_keys", ids.join(","));
        }
        let snap = match snap {
            Ok(s) => s,
            Err(e) => {
                f.kv("snapshot_error", e.to_string().replace(['\r', '\n'], " "));
                return;
            }
        };
        let t = snap.totals();
        f.kv("datagrams_in", t.datagrams_in);
        f.kv("datagrams_out", t.datagrams_out);
        let mut ep = icx_transport::EndpointStats::default();
        for c in &snap.cores {
            ep.add(&c.endpoint);
        }
        f.kv("frames_rejected", ep.rejected());
        f.kv("frames_rejected_auth", ep.rejected_auth);
        f.kv("frames_replayed", ep.replayed);
        f.kv("frames_stale_incarnation", ep.stale);
        f.kv("frames_wrong_cluster", ep.wrong_cluster);
        f.kv("frames_unknown_node", ep.unknown_node);
        f.kv("frames_malformed", ep.malformed);
        let hb = snap.rtt(Channel::Heartbeat);
        if !hb.is_empty() {
            f.kv("heartbeat_rtt_p50_us", hb.quantile(0.5).as_micros());
            f.kv("heartbeat_rtt_p99_us", hb.quantile(0.99).as_micros());
        }
        let mut peers: Vec<_> = snap.cores.iter().flat_map(|c| c.peers.iter()).collect();
        peers.sort_by_key(|(n, _)| *n);
        // icx's own losses, next to the host's (deltas since the start).
        let sum =
            |g: fn(&icx_transport::PeerStats) -> u64| peers.iter().map(|(_, p)| g(p)).sum::<u64>();
        f.kv("icx_lost", sum(|p| p.lost));
        f.kv("icx_retransmitted", sum(|p| p.retransmitted));
        f.kv("icx_corrupt", sum(|p| p.corrupt));
        f.kv("icx_rejected", sum(|p| p.rejected) + ep.rejected());
        for (name, d) in self.host.since_start() {
            f.kv(&format!("host_{name}"), d);
        }
        f.kv("peers", peers.len());
        for (n, p) in peers {
            let addr = snap
                .peer_addr(*n)
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            f.kv(
                &format!("peer_{}", n.0),
                format!(
                    "addr={addr},sent={},received={},acked={},lost={},retransmitted={},corrupt={},duplicate={},rejected={}",
                    p.sent, p.received, p.acked, p.lost, p.retransmitted, p.corrupt, p.duplicate, p.rejected
                ),
            );
            let addrs = self.cfg.node(*n).map(|c| c.interconnect.as_slice());
            for (k, l) in snap.peer_links(*n).unwrap_or_default().iter().enumerate() {
                let addr = addrs
                    .and_then(|a| a.get(k))
                    .map_or_else(|| "-".to_string(), ToString::to_string);
                let rtt = l.srtt.map_or_else(
                    || "-".to_string(),
                    |r| format!("{:.1}", r.as_nanos() as f64 / 1e3),
                );
                f.kv(
                    &format!("peer_{}_link_{k}", n.0),
                    format!(
                        "addr={addr},state={},mtu={},sent={},received={},retransmitted={},lost={},keepalives_sent={},keepalives_answered={},downs={},rtt_us={rtt}",
                        l.state.name(),
                        l.mtu,
                        l.frames_sent,
                        l.frames_received,
                        l.retransmitted,
                        l.lost,
                        l.keepalives_sent,
                        l.keepalives_answered,
                        l.downs
                    ),
                );
            }
        }
    }
}

/// `key:value\r\n` lines under `# Header`, as Redis's INFO.
pub(crate) struct Fields<'a>(pub(crate) &'a mut String);

impl Fields<'_> {
    pub(crate) fn header(&mut self, h: &str) {
        let _ = write!(self.0, "# {h}\r\n");
    }
    pub(crate) fn kv(&mut self, k: &str, v: impl std::fmt::Display) {
        let _ = write!(self.0, "{k}:{v}\r\n");
    }
}

/// Link MTUs as config and INFO show them: `1500`, or `1500,9000`.
fn mtus(m: &[usize]) -> String {
    m.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn join(it: impl Iterator<Item = u16>) -> String {
    it.map(|n| n.to_string()).collect::<Vec<_>>().join(",")
}

fn wrong_args(cmd: &str) -> Reply {
    Reply::Error(format!("ERR wrong number of arguments for '{cmd}' command"))
}

/// Redis's CONFIG GET patterns: `*` and `?`.
fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn config_get_patterns() {
        assert!(glob("*", "misscount"));
        assert!(glob("miss*", "misscount"));
        assert!(glob("*timeout", "disktimeout"));
        assert!(glob("m?sscount", "misscount"));
        assert!(!glob("miss", "misscount"));
        assert!(!glob("x*", "misscount"));
    }
}
