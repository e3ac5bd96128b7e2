//! Hostile cluster configuration text into
//! `icx_node::config::ClusterConfig::parse`: the TOML, the sizes, durations
//! and addresses in it, and the checks between keys (timers, nodes, the
//! client keys and protected mode).
//!
//! The first input byte picks a mode: bit 0 clear, the rest is the whole
//! file; set, the rest is the value of one key (the other bits pick it,
//! from every top-level key and a node's `client`) in an otherwise valid
//! file, so each key's value reaches its parser and the checks between
//! keys instead of stopping at the first missing key.
//! Invalid UTF-8 is skipped. Inputs that could
//! name `requirepass_file` (the key, or any `\u` escape that could spell
//! it in a quoted key) are skipped: the target never opens a file an input
//! names.
//!
//! Holds: nothing panics; an error names the file; a config accepted has
//! nodes in ascending id order, timers in their bounds, client limits in
//! theirs, and no client address that protected mode refuses.
#![no_main]

use icx_node::config::{ClusterConfig, MIN_QUERY_BUFFER};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::time::Duration;

const HEAD: &str = "cluster_name = \"f\"\ncluster_id = 1\n";
const NODE: &str = "\n[[node]]\nid = 1\nname = \"a\"\ninterconnect = [\"127.0.0.1:1\"]\n";
const KEYS: &[&str] = &[
    "heartbeat_interval",
    "misscount",
    "disktimeout",
    "voting_files",
    "datafiles",
    "log_dir",
    "interconnect_mtu",
    "block_size",
    "datafile_size",
    "datafile_count",
    "cache_size",
    "multiblock_read_count",
    "fairness_threshold",
    "gc_request_timeout",
    "checkpoint_interval",
    "requirepass",
    "maxclients",
    "client_query_buffer_limit",
    "timeout",
    "protected_mode",
];

/// The file the input stands for (see the module doc).
fn file_text(mode: u8, rest: &str) -> String {
    if mode & 1 == 0 {
        return rest.to_string();
    }
    match KEYS.get(usize::from(mode >> 1) % (KEYS.len() + 1)) {
        Some(key) => format!("{HEAD}{key} = {rest}\n{NODE}"),
        None => format!("{HEAD}{NODE}client = {rest}\n"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let text = file_text(mode, rest);
    let text = text.as_str();
    if text.contains("requirepass_file") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    let file = Path::new("/nonexistent/fuzz.toml");
    match ClusterConfig::parse(file, text) {
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("/nonexistent/fuzz.toml: "), "{shown}");
        }
        Ok(c) => {
            let _ = format!("{c:?}");
            assert!(!c.nodes.is_empty());
            assert!(c.nodes.windows(2).all(|w| w[0].id < w[1].id));
            assert!(c.misscount >= c.heartbeat_interval * 4);
            assert!(c.disktimeout >= c.heartbeat_interval * 2);
            let l = &c.clients;
            assert!(l.max_clients >= 1);
            assert!(l.max_request_bytes as u64 >= MIN_QUERY_BUFFER);
            assert!(l.idle_timeout.is_none_or(|t| t >= Duration::from_secs(1)));
            for n in &c.nodes {
                assert_eq!(l.protected_mode_refusal(n.client), None, "{}", n.client);
                assert_ne!(n.client.port(), 0);
            }
        }
    }
});
