//! The cluster configuration file (TOML), shared by every node of a
//! cluster: see the crate README for every key. Errors name the file and
//! the key, and the binary exits with code 2 on them.

use crate::resp::{Limits, Password, AUTH_MAX_BULK};
use icx_core::{Duration, NodeId};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Node ids a cluster may use (the membership's node sets hold 255).
pub const MAX_NODE_ID: u16 = icx_membership::MAX_NODES;

/// A node's RESP address when its `client` is left out: Redis's default
/// `bind` and port, so clients of other hosts are served only when asked.
pub const DEFAULT_CLIENT: &str = "127.0.0.1:6379";

/// The smallest `client_query_buffer_limit` (Redis's minimum too).
pub const MIN_QUERY_BUFFER: u64 = 1 << 20;

/// One cluster's configuration, validated.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The file it was read from (messages name it).
    pub file: PathBuf,
    pub cluster_name: String,
    pub cluster_id: u32,
    pub heartbeat_interval: Duration,
    pub misscount: Duration,
    pub disktimeout: Duration,
    /// Empty: network-only quorum.
    pub voting_files: Vec<PathBuf>,
    pub datafiles: Option<PathBuf>,
    /// Where each node keeps its alert log and state file; default: the
    /// config file's directory.
    pub log_dir: PathBuf,
    /// IP MTU of the private network.
    pub interconnect_mtu: usize,
    /// Cache fusion's settings (used when `datafiles` is set).
    pub data: DataConfig,
    /// What RESP clients may do: `maxclients`, `client_query_buffer_limit`,
    /// `timeout`, `requirepass`, `protected_mode`.
    pub clients: Limits,
    /// Frame authentication: `cluster_key_file` and the keys with it;
    /// `None`: frames are sealed by CRC32C only.
    pub keys: Option<crate::keys::KeyConfig>,
    /// Sorted by id.
    pub nodes: Vec<NodeConfig>,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub name: String,
    /// Private-network addresses; the first carries the interconnect
    /// (redundant interconnects are their own issue).
    pub interconnect: Vec<SocketAddr>,
    /// RESP client/admin address.
    pub client: SocketAddr,
    pub css_critical: bool,
}

/// Cache fusion's settings: the config file's data keys, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataConfig {
    /// 8, 16 or 32 KiB.
    pub block_size: usize,
    /// Bytes of each datafile the first node creates.
    pub datafile_size: u64,
    /// Datafiles `data01.dbf` .. (Oracle's file# 1..).
    pub datafile_count: u16,
    /// Bytes of block images each node caches.
    pub cache_size: u64,
    pub multiblock_read_count: u32,
    pub fairness_threshold: u32,
    /// Every global cache request's timer (then counted lost and resent).
    pub gc_request_timeout: Duration,
    /// Every dirty block is written within about this long.
    pub checkpoint_interval: Duration,
    /// How long a data command waits out a reconfiguration (the directory
    /// rebuilt, its block recovered) before `-TRYAGAIN`; 0: at once.
    pub gc_recovery_wait: Duration,
    /// Dynamic remastering: a 16-block chunk moves its mastership to a
    /// node that made this many of its master's requests for it within
    /// `gc_remaster_window` (and three quarters of them); 0: never.
    pub gc_remaster_threshold: u32,
    pub gc_remaster_window: Duration,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            block_size: icx_fusion::block::DEFAULT_BLOCK_SIZE,
            datafile_size: 64 << 20,
            datafile_count: 1,
            cache_size: 64 << 20,
            multiblock_read_count: 16,
            fairness_threshold: 4,
            gc_request_timeout: Duration::from_millis(500),
            checkpoint_interval: Duration::from_secs(10),
            gc_recovery_wait: Duration::from_secs(10),
            // Two chunks' worth of requests and write notices in half a
            // minute (Oracle counts 50 opens over minutes): a chunk moves
            // once one node clearly drives it, one shared evenly never.
            gc_remaster_threshold: 32,
            gc_remaster_window: Duration::from_secs(30),
        }
    }
}

impl DataConfig {
    pub fn blocks_per_file(&self) -> u32 {
        (self.datafile_size / self.block_size as u64) as u32
    }

    pub fn cache_blocks(&self) -> usize {
        (self.cache_size / self.block_size as u64) as usize
    }
}

/// A size in bytes: an integer, or a string with a K/M/G suffix
/// (`"64M"`, `"8K"`, binary units as Oracle's `db_cache_size`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(b) => Ok(*b),
            RawSize::Text(t) => parse_size(t),
        }
    }
}

/// `"64M"`, `"64MiB"`, `"8k"`, `"1G"`, `"8192"`: bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a size (bytes, or like \"8K\", \"64M\", \"1G\")");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// The form `CONFIG GET` shows a size in: the largest exact unit.
pub fn format_size(b: u64) -> String {
    for (u, m) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{u}", b / m);
        }
    }
    b.to_string()
}

/// A configuration that cannot be used: `file: key: what`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The key at fault (`node[2].id`), empty when the file as a whole is.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The file as written; `deny_unknown_fields` so a misspelt key is an
/// error, not a silent default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_name: String,
    cluster_id: u32,
    #[serde(default)]
    heartbeat_interval: Option<String>,
    #[serde(default)]
    misscount: Option<String>,
    #[serde(default)]
    disktimeout: Option<String>,
    #[serde(default)]
    voting_files: Vec<String>,
    #[serde(default)]
    datafiles: Option<String>,
    #[serde(default)]
    log_dir: Option<String>,
    #[serde(default)]
    interconnect_mtu: Option<usize>,
    #[serde(default)]
    block_size: Option<RawSize>,
    #[serde(default)]
    datafile_size: Option<RawSize>,
    #[serde(default)]
    datafile_count: Option<u16>,
    #[serde(default)]
    cache_size: Option<RawSize>,
    #[serde(default)]
    multiblock_read_count: Option<u32>,
    #[serde(default)]
    fairness_threshold: Option<u32>,
    #[serde(default)]
    gc_request_timeout: Option<String>,
    #[serde(default)]
    checkpoint_interval: Option<String>,
    #[serde(default)]
    gc_recovery_wait: Option<String>,
    #[serde(default)]
    gc_remaster_threshold: Option<u32>,
    #[serde(default)]
    gc_remaster_window: Option<String>,
    #[serde(default)]
    requirepass: Option<String>,
    #[serde(default)]
    requirepass_file: Option<String>,
    #[serde(default)]
    maxclients: Option<usize>,
    #[serde(default)]
    client_query_buffer_limit: Option<RawSize>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    protected_mode: Option<bool>,
    #[serde(default)]
    metrics: Option<String>,
    #[serde(default)]
    cluster_key_file: Option<String>,
    #[serde(default)]
    cluster_key_id: Option<u8>,
    #[serde(default)]
    cluster_next_key_file: Option<String>,
    #[serde(default)]
    cluster_next_key_id: Option<u8>,
    #[serde(default)]
    cluster_cipher: Option<String>,
    #[serde(default)]
    encrypt: Option<bool>,
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: i64,
    name: String,
    interconnect: Vec<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    css_critical: bool,
}

impl ClusterConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, as read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ClusterConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message already names the key and the line.
            err("", e.to_string().trim_end().replace('\n', " | "))
        })?;
        if raw.cluster_name.is_empty() {
            return Err(err("cluster_name", "must not be empty".into()));
        }
        if raw.cluster_id == 0 {
            return Err(err("cluster_id", "must be 1 or more".into()));
        }
        let dur = |key: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|m| err(key, m)),
        };
        let heartbeat_interval = dur(
            "heartbeat_interval",
            &raw.heartbeat_interval,
            Duration::from_secs(1),
        )?;
        let misscount = dur("misscount", &raw.misscount, Duration::from_secs(30))?;
        let disktimeout = dur("disktimeout", &raw.disktimeout, Duration::from_secs(200))?;
        if heartbeat_interval.is_zero() {
            return Err(err("heartbeat_interval", "must be positive".into()));
        }
        if misscount < heartbeat_interval * 4 {
            return Err(err(
                "misscount",
                format!(
                    "{} is less than 4 heartbeat intervals ({})",
                    format_duration(misscount),
                    format_duration(heartbeat_interval * 4)
                ),
            ));
        }
        if disktimeout < heartbeat_interval * 2 {
            return Err(err(
                "disktimeout",
                format!(
                    "{} is less than 2 heartbeat intervals",
                    format_duration(disktimeout)
                ),
            ));
        }
        if ![0, 1, 3, 5].contains(&raw.voting_files.len()) {
            return Err(err(
                "voting_files",
                format!(
                    "{} files: use none (network-only quorum), 1, 3 or 5",
                    raw.voting_files.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, v) in raw.voting_files.iter().enumerate() {
            if v.is_empty() {
                return Err(err(&format!("voting_files[{i}]"), "empty path".into()));
            }
            if !seen.insert(v) {
                return Err(err(
                    &format!("voting_files[{i}]"),
                    format!("{v} is listed twice"),
                ));
            }
        }
        let interconnect_mtu = raw.interconnect_mtu.unwrap_or(1500);
        // The transport's own rule (room for a header and some block, no
        // datagram larger than IP carries), checked for IPv4 and IPv6 alike.
        for ipv6 in [false, true] {
            let mut p = icx_transport::PeerConfig::new(NodeId(1), interconnect_mtu);
            p.ipv6 = ipv6;
            p.check_mtu()
                .map_err(|e| err("interconnect_mtu", e.to_string()))?;
        }
        let data = data_config(&raw, &err)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let clients = client_limits(&raw, &dir, &err)?;
        if raw.node.is_empty() {
            return Err(err(
                "node",
                "no [[node]] tables: configure 1 or more nodes".into(),
            ));
        }
        let mut nodes = Vec::with_capacity(raw.node.len());
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, n) in raw.node.iter().enumerate() {
            let key = |k: &str| format!("node[{i}].{k}");
            if n.id < 1 || n.id > i64::from(MAX_NODE_ID) {
                return Err(err(
                    &key("id"),
                    format!("{} is outside 1..={MAX_NODE_ID}", n.id),
                ));
            }
            let id = NodeId(n.id as u16);
            if nodes.iter().any(|o: &NodeConfig| o.id == id) {
                return Err(err(&key("id"), format!("duplicate node id {}", n.id)));
            }
            if n.name.is_empty() || n.name.chars().any(|c| c.is_whitespace() || c == ',') {
                return Err(err(
                    &key("name"),
                    format!(
                        "{:?}: a name is non-empty, without spaces or commas",
                        n.name
                    ),
                ));
            }
            if !names.insert(n.name.clone()) {
                return Err(err(&key("name"), format!("duplicate node name {}", n.name)));
            }
            if n.interconnect.is_empty() {
                return Err(err(&key("interconnect"), "needs one address".into()));
            }
            let mut inter = Vec::new();
            for (j, a) in n.interconnect.iter().enumerate() {
                let k = format!("node[{i}].interconnect[{j}]");
                let a = parse_addr(a).map_err(|m| err(&k, m))?;
                if a.port() == 0 {
                    return Err(err(&k, format!("{a}: give a port")));
                }
                if !addrs.insert(a) {
                    return Err(err(&k, format!("{a} is used twice")));
                }
                inter.push(a);
            }
            let client = parse_addr(n.client.as_deref().unwrap_or(DEFAULT_CLIENT))
                .map_err(|m| err(&key("client"), m))?;
            if client.port() == 0 {
                return Err(err(&key("client"), format!("{client}: give a port")));
            }
            // Every node's, not only this one's: the file is the same on
            // every node, and --check on any of them should say so.
            if let Some(why) = clients.protected_mode_refusal(client) {
                return Err(err(&key("client"), why));
            }
            // Client addresses may repeat across nodes (each on its own
            // host: 127.0.0.1:6379 everywhere), not clash with the node's
            // own interconnect.
            if inter.contains(&client) {
                return Err(err(
                    &key("client"),
                    format!("{client} is also this node's interconnect address"),
                ));
            }
            nodes.push(NodeConfig {
                id,
                name: n.name.clone(),
                interconnect: inter,
                client,
                css_critical: n.css_critical,
            });
        }
        nodes.sort_by_key(|n| n.id);
        let metrics = match raw.metrics.as_deref() {
            None | Some("") => None,
            Some(a) => Some(parse_addr(a).map_err(|e| err("metrics", e))?),
        };
        let keys = crate::keys::parse(
            &crate::keys::RawKeys {
                key_file: raw.cluster_key_file.as_deref(),
                key_id: raw.cluster_key_id,
                next_key_file: raw.cluster_next_key_file.as_deref(),
                next_key_id: raw.cluster_next_key_id,
                cipher: raw.cluster_cipher.as_deref(),
                encrypt: raw.encrypt,
            },
            &dir,
        )
        .map_err(|(k, m)| err(&k, m))?;
        let log_dir = match &raw.log_dir {
            Some(d) if d.is_empty() => return Err(err("log_dir", "empty path".into())),
            Some(d) => dir.join(d),
            None => dir,
        };
        Ok(ClusterConfig {
            file: path.to_path_buf(),
            cluster_name: raw.cluster_name,
            cluster_id: raw.cluster_id,
            heartbeat_interval,
            misscount,
            disktimeout,
            voting_files: raw.voting_files.iter().map(PathBuf::from).collect(),
            datafiles: raw.datafiles.map(PathBuf::from),
            log_dir,
            interconnect_mtu,
            data,
            clients,
            keys,
            nodes,
            metrics,
        })
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Highest configured id: the membership numbers nodes `1..=max`, and
    /// ids never configured are simply never heard.
    pub fn max_id(&self) -> u16 {
        self.nodes.last().map_or(0, |n| n.id.0)
    }

    /// The membership configuration of node `me`.
    pub fn membership(&self, me: NodeId, incarnation: u32) -> icx_membership::Config {
        let n = self.max_id();
        let mut c = icx_membership::Config::new(self.cluster_id, n, me).with_timers(
            self.heartbeat_interval,
            self.misscount,
            self.disktimeout,
        );
        c.incarnation = incarnation;
        c.record_keys = self
            .keys
            .as_ref()
            .map(|k| crate::keys::record_keys(&k.ring, self.cluster_id))
            .unwrap_or_default();
        c.names = (1..=n)
            .map(|i| {
                self.node(NodeId(i))
                    .map_or_else(|| format!("node{i}"), |x| x.name.clone())
            })
            .collect();
        c.critical = self.node(me).is_some_and(|x| x.css_critical);
        c.voting_files = self
            .voting_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        c
    }
}

/// The data keys of `raw`, with their defaults, checked against one
/// another (a datafile holds whole blocks, a cache at least a scan).
fn data_config(
    raw: &RawConfig,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<DataConfig, ConfigError> {
    use icx_fusion::block::BLOCK_SIZES;
    let d = DataConfig::default();
    let size = |key: &str, v: &Option<RawSize>, default: u64| match v {
        None => Ok(default),
        Some(s) => s.bytes().map_err(|m| err(key, m)),
    };
    let dur = |key: &str, v: &Option<String>, default: Duration| match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|m| err(key, m)),
    };
    let block_size = size("block_size", &raw.block_size, d.block_size as u64)?;
    if !BLOCK_SIZES.iter().any(|&b| b as u64 == block_size) {
        return Err(err(
            "block_size",
            format!("{block_size} B: use 8K, 16K or 32K"),
        ));
    }
    let bs = block_size;
    let datafile_size = size("datafile_size", &raw.datafile_size, d.datafile_size)?;
    let max_file = bs * u64::from(u32::MAX);
    if !datafile_size.is_multiple_of(bs) || datafile_size < bs * 16 || datafile_size > max_file {
        return Err(err(
            "datafile_size",
            format!(
                "{} is not a whole number of {}-byte blocks from 16 blocks to {}",
                format_size(datafile_size),
                bs,
                format_size(max_file)
            ),
        ));
    }
    let datafile_count = raw.datafile_count.unwrap_or(d.datafile_count);
    if datafile_count == 0 || datafile_count > 999 {
        return Err(err(
            "datafile_count",
            format!("{datafile_count}: use 1 to 999"),
        ));
    }
    let cache_size = size("cache_size", &raw.cache_size, d.cache_size)?;
    let multiblock_read_count = raw.multiblock_read_count.unwrap_or(d.multiblock_read_count);
    let chunk = icx_fusion::grd::CHUNK;
    if multiblock_read_count == 0 || multiblock_read_count > chunk {
        return Err(err(
            "multiblock_read_count",
            format!("{multiblock_read_count}: use 1 to {chunk}"),
        ));
    }
    if cache_size < bs * 64 {
        return Err(err(
            "cache_size",
            format!("{} holds fewer than 64 blocks", format_size(cache_size)),
        ));
    }
    let fairness_threshold = raw.fairness_threshold.unwrap_or(d.fairness_threshold);
    if fairness_threshold == 0 {
        return Err(err("fairness_threshold", "must be 1 or more".into()));
    }
    let gc_request_timeout = dur(
        "gc_request_timeout",
        &raw.gc_request_timeout,
        d.gc_request_timeout,
    )?;
    if gc_request_timeout < Duration::from_millis(10) {
        return Err(err(
            "gc_request_timeout",
            format!("{} is below 10ms", format_duration(gc_request_timeout)),
        ));
    }
    let checkpoint_interval = dur(
        "checkpoint_interval",
        &raw.checkpoint_interval,
        d.checkpoint_interval,
    )?;
    if checkpoint_interval.is_zero() {
        return Err(err("checkpoint_interval", "must be positive".into()));
    }
    let gc_recovery_wait = dur(
        "gc_recovery_wait",
        &raw.gc_recovery_wait,
        d.gc_recovery_wait,
    )?;
    if gc_recovery_wait > Duration::from_secs(3600) {
        return Err(err(
            "gc_recovery_wait",
            format!("{} is over an hour", format_duration(gc_recovery_wait)),
        ));
    }
    let gc_remaster_threshold = raw.gc_remaster_threshold.unwrap_or(d.gc_remaster_threshold);
    let gc_remaster_window = dur(
        "gc_remaster_window",
        &raw.gc_remaster_window,
        d.gc_remaster_window,
    )?;
    if gc_remaster_window.is_zero() && gc_remaster_threshold > 0 {
        return Err(err(
            "gc_remaster_window",
            "must be positive (gc_remaster_threshold = 0 turns remastering off)".into(),
        ));
    }
    Ok(DataConfig {
        block_size: bs as usize,
        datafile_size,
        datafile_count,
        cache_size,
        multiblock_read_count,
        fairness_threshold,
        gc_request_timeout,
        checkpoint_interval,
        gc_recovery_wait,
        gc_remaster_threshold,
        gc_remaster_window,
    })
}

/// The client keys of `raw`, with their defaults (Redis's names and
/// meanings; `dir` is where a relative `requirepass_file` is).
fn client_limits(
    raw: &RawConfig,
    dir: &Path,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let max_clients = raw.maxclients.unwrap_or(d.max_clients);
    if max_clients == 0 {
        return Err(err("maxclients", "must be 1 or more".into()));
    }
    let max_request_bytes = match &raw.client_query_buffer_limit {
        None => d.max_request_bytes,
        Some(s) => {
            let key = "client_query_buffer_limit";
            let b = s.bytes().map_err(|m| err(key, m))?;
            if b < MIN_QUERY_BUFFER {
                return Err(err(
                    key,
                    format!(
                        "{} is below {}",
                        format_size(b),
                        format_size(MIN_QUERY_BUFFER)
                    ),
                ));
            }
            usize::try_from(b).map_err(|_| err(key, format!("{} is too large", format_size(b))))?
        }
    };
    let idle_timeout = match &raw.timeout {
        None => d.idle_timeout,
        Some(s) => {
            let t = parse_duration(s).map_err(|m| err("timeout", m))?;
            if !t.is_zero() && t < Duration::from_secs(1) {
                return Err(err(
                    "timeout",
                    format!("{}: use 0 (never) or 1s or more", format_duration(t)),
                ));
            }
            Some(t).filter(|t| !t.is_zero())
        }
    };
    let requirepass = match (&raw.requirepass, &raw.requirepass_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "requirepass_file",
                "set requirepass or requirepass_file, not both".into(),
            ))
        }
        (Some(p), None) => Some(password(p.as_bytes().to_vec()).map_err(|m| {
            err(
                "requirepass",
                format!("{m}: leave the key out for no password"),
            )
        })?),
        (None, Some(f)) if f.is_empty() => {
            return Err(err("requirepass_file", "empty path".into()))
        }
        (None, Some(f)) => {
            Some(read_password_file(&dir.join(f)).map_err(|m| err("requirepass_file", m))?)
        }
        (None, None) => None,
    };
    Ok(Limits {
        max_clients,
        max_request_bytes,
        max_args: d.max_args,
        idle_timeout,
        requirepass,
        protected_mode: raw.protected_mode.unwrap_or(d.protected_mode),
    })
}

/// The password in `path`: the whole file but one final line ending. The
/// file must be the owner's alone (mode 0600 or stricter), as ssh wants
/// of a private key: a password others can read protects nothing.
fn read_password_file(path: &Path) -> Result<Password, String> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    // The mode of the file opened, not of whatever the path names later;
    // non-blocking, so a FIFO named by mistake is refused, not waited on.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}, open to group or others: a password file must be 0600 or stricter (chmod 600 {shown})"
        ));
    }
    let mut bytes = Vec::new();
    // Past the longest password and its line ending there is no need to
    // read on (nor to hold a huge file in memory).
    f.take(AUTH_MAX_BULK as u64 + 3)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    password(bytes).map_err(|m| format!("{shown}: {m}"))
}

/// A password must be something, and short enough for `AUTH` to carry it
/// before the connection is authenticated ([`AUTH_MAX_BULK`]).
fn password(bytes: Vec<u8>) -> Result<Password, String> {
    if bytes.len() > AUTH_MAX_BULK {
        return Err(format!(
            "longer than {AUTH_MAX_BULK} bytes, more than AUTH takes before authentication"
        ));
    }
    Password::new(bytes).ok_or_else(|| "empty".to_string())
}

/// A duration in humantime form (`1s`, `500ms`, `2m 30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration (like \"1s\" or \"500ms\"): {e}"))
}

/// The humantime form of `d`, as `CONFIG GET` shows it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address (IP:PORT, like \"10.0.0.1:7470\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster_name = "lab"
cluster_id = 7
heartbeat_interval = "1s"
misscount = "30s"
disktimeout = "200s"
voting_files = ["/shared/vote1", "/shared/vote2", "/shared/vote3"]
datafiles = "/shared/data"

[[node]]
id = 2
name = "rac2"
interconnect = ["10.0.0.2:7470"]
client = "127.0.0.1:6380"

[[node]]
id = 1
name = "rac1"
interconnect = ["10.0.0.1:7470"]
client = "127.0.0.1:6379"
css_critical = true
"#;

    fn parse(s: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(Path::new("/etc/icx/lab.toml"), s)
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cluster_id, 7);
        assert_eq!(c.misscount, Duration::from_secs(30));
        assert_eq!(c.nodes[0].id, NodeId(1));
        assert!(c.nodes[0].css_critical);
        assert_eq!(c.log_dir, Path::new("/etc/icx"));
        let m = c.membership(NodeId(2), 5);
        assert_eq!(m.names, ["rac1", "rac2"]);
        assert!(!m.critical);
        assert_eq!(m.voting_files.len(), 3);
        m.validate().unwrap();
    }

    fn err_of(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e = err_of(&GOOD.replace("id = 2", "id = 1"));
        assert!(
            e.starts_with("/etc/icx/lab.toml: node[1].id: duplicate node id 1"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("id = 2", "id = 0"));
        assert!(e.contains("node[0].id: 0 is outside 1..=255"), "{e}");
        let e = err_of(&GOOD.replace("id = 2", "id = 300"));
        assert!(e.contains("node[0].id"), "{e}");
        let e = err_of(&GOOD.replace("misscount = \"30s\"", "misscount = \"thirty\""));
        assert!(e.contains("misscount: \"thirty\" is not a duration"), "{e}");
        let e = err_of(&GOOD.replace("misscount = \"30s\"", "misscount = \"2s\""));
        assert!(
            e.contains("misscount: 2s is less than 4 heartbeat intervals"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("cluster_id = 7", "cluster_id = 7\nmisscout = \"3s\""));
        assert!(e.contains("misscout"), "{e}");
        let e = err_of(&GOOD.replace("\"10.0.0.2:7470\"", "\"10.0.0.2\""));
        assert!(
            e.contains("node[0].interconnect[0]: \"10.0.0.2\" is not an address"),
            "{e}"
        );
        let e = err_of(&GOOD.replace("10.0.0.2:7470", "10.0.0.1:7470"));
        assert!(e.contains("is used twice"), "{e}");
        let e = err_of(&GOOD.replace("name = \"rac2\"", "name = \"rac1\""));
        assert!(e.contains("duplicate node name rac1"), "{e}");
        let e = err_of(&GOOD.replace(", \"/shared/vote3\"", ""));
        assert!(e.contains("voting_files: 2 files"), "{e}");
        let e = err_of(&GOOD.replace("/shared/vote3", "/shared/vote1"));
        assert!(
            e.contains("voting_files[2]: /shared/vote1 is listed twice"),
            "{e}"
        );
        let e = err_of("cluster_name = \"x\"\ncluster_id = 1\n");
        assert!(e.contains("node: no [[node]] tables"), "{e}");
        let e = err_of("cluster_name = [");
        assert!(e.starts_with("/etc/icx/lab.toml: "), "{e}");
        let e = err_of(&GOOD.replace("cluster_id = 7", "cluster_id = -1"));
        assert!(e.contains("cluster_id"), "{e}");
    }

    #[test]
    fn network_only_and_defaults() {
        let s = GOOD
            .replace(
                "voting_files = [\"/shared/vote1\", \"/shared/vote2\", \"/shared/vote3\"]",
                "voting_files = []",
            )
            .replace("heartbeat_interval = \"1s\"\n", "")
            .replace("misscount = \"30s\"\n", "")
            .replace("disktimeout = \"200s\"\n", "");
        let c = parse(&s).unwrap();
        assert!(c.voting_files.is_empty());
        assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.disktimeout, Duration::from_secs(200));
        assert!(c.membership(NodeId(1), 1).network_only());
    }

    #[test]
    fn data_keys_default_parse_and_refuse_nonsense() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.data, DataConfig::default());
        assert_eq!(c.data.blocks_per_file(), 8192);
        assert_eq!(c.data.cache_blocks(), 8192);
        let with = |k: &str| GOOD.replace("datafiles = ", &format!("{k}\ndatafiles = "));
        let c = parse(&with(
            "block_size = \"16K\"\ndatafile_size = \"1G\"\ndatafile_count = 3\ncache_size = 33554432\nmultiblock_read_count = 8\nfairness_threshold = 2\ngc_request_timeout = \"250ms\"\ncheckpoint_interval = \"3s\"\ngc_remaster_threshold = 0\ngc_remaster_window = \"1m\"",
        ))
        .unwrap();
        assert_eq!(c.data.block_size, 16384);
        assert_eq!(c.data.datafile_size, 1 << 30);
        assert_eq!(c.data.datafile_count, 3);
        assert_eq!(c.data.cache_blocks(), 2048);
        assert_eq!(c.data.multiblock_read_count, 8);
        assert_eq!(c.data.gc_request_timeout, Duration::from_millis(250));
        assert_eq!(c.data.gc_remaster_threshold, 0);
        assert_eq!(c.data.gc_remaster_window, Duration::from_secs(60));
        for (k, want) in [
            (
                "gc_remaster_window = \"0s\"",
                "gc_remaster_window: must be positive (gc_remaster_threshold = 0 turns remastering off)",
            ),
            (
                "block_size = \"4K\"",
                "block_size: 4096 B: use 8K, 16K or 32K",
            ),
            ("block_size = \"8Q\"", "block_size: \"8Q\" is not a size"),
            (
                "datafile_size = \"100K\"",
                "datafile_size: 100K is not a whole number of 8192-byte blocks",
            ),
            ("datafile_size = 1000000", "datafile_size"),
            ("datafile_count = 0", "datafile_count: 0: use 1 to 999"),
            (
                "cache_size = \"64K\"",
                "cache_size: 64K holds fewer than 64 blocks",
            ),
            (
                "multiblock_read_count = 17",
                "multiblock_read_count: 17: use 1 to 16",
            ),
            (
                "fairness_threshold = 0",
                "fairness_threshold: must be 1 or more",
            ),
            (
                "gc_request_timeout = \"1ms\"",
                "gc_request_timeout: 1ms is below 10ms",
            ),
            (
                "checkpoint_interval = \"0s\"",
                "checkpoint_interval: must be positive",
            ),
            ("cache_size = \"99999999999999G\"", "cache_size"),
        ] {
            let e = err_of(&with(k));
            assert!(e.contains(want), "{k}: {e}");
        }
    }

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("8K"), Ok(8192));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 1g "), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("-1K").is_err());
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(8192), "8K");
    }

    #[test]
    fn client_keys_default_as_redis() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.clients, Limits::default());
        assert_eq!(c.clients.max_clients, 128);
        assert_eq!(c.clients.max_request_bytes, 1 << 20);
        assert_eq!(c.clients.idle_timeout, None);
        assert!(c.clients.requirepass.is_none());
        assert!(c.clients.protected_mode);
        // A node without `client` serves on Redis's default address.
        let c = parse(&GOOD.replace("client = \"127.0.0.1:6380\"\n", "")).unwrap();
        assert_eq!(
            c.node(NodeId(2)).unwrap().client.to_string(),
            DEFAULT_CLIENT
        );
    }

    #[test]
    fn client_keys_parse_and_refuse_nonsense() {
        let with = |k: &str| GOOD.replace("datafiles = ", &format!("{k}\ndatafiles = "));
        let c = parse(&with(
            "requirepass = \"s3cret\"\nmaxclients = 1000\nclient_query_buffer_limit = \"4mb\"\ntimeout = \"5m\"\nprotected_mode = false",
        ))
        .unwrap();
        let l = &c.clients;
        assert!(l.requirepass.as_ref().unwrap().matches(b"s3cret"));
        assert!(!l.requirepass.as_ref().unwrap().matches(b"s3cre"));
        assert_eq!(l.max_clients, 1000);
        assert_eq!(l.max_request_bytes, 4 << 20);
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(300)));
        assert!(!l.protected_mode);
        // Redis's `timeout 0`: never.
        assert_eq!(
            parse(&with("timeout = \"0\""))
                .unwrap()
                .clients
                .idle_timeout,
            None
        );
        // The password is never shown, not even by Debug.
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        for (k, want) in [
            ("maxclients = 0", "maxclients: must be 1 or more"),
            ("maxclients = -1", "maxclients"),
            (
                "client_query_buffer_limit = \"512K\"",
                "client_query_buffer_limit: 512K is below 1M",
            ),
            (
                "client_query_buffer_limit = \"1Q\"",
                "client_query_buffer_limit: \"1Q\" is not a size",
            ),
            ("timeout = \"soon\"", "timeout: \"soon\" is not a duration"),
            (
                "timeout = \"500ms\"",
                "timeout: 500ms: use 0 (never) or 1s or more",
            ),
            ("timeout = 300", "timeout"),
            ("protected_mode = \"no\"", "protected_mode"),
            (
                "requirepass = \"\"",
                "requirepass: empty: leave the key out for no password",
            ),
            (
                "requirepass = \"a\"\nrequirepass_file = \"pw\"",
                "requirepass_file: set requirepass or requirepass_file, not both",
            ),
            ("requirepass_file = \"\"", "requirepass_file: empty path"),
            (
                "requirepass_file = \"no-such-pw\"",
                "requirepass_file: /etc/icx/no-such-pw: No such file",
            ),
        ] {
            let e = err_of(&with(k));
            assert!(e.contains(want), "{k}: {e}");
        }
        let long = format!("requirepass = \"{}\"", "p".repeat(AUTH_MAX_BULK + 1));
        let e = err_of(&with(&long));
        assert!(e.contains("requirepass: longer than 16384 bytes"), "{e}");
    }

    /// Redis's protected mode, at start: no password and a client address
    /// that is not loopback, on any node, is refused, saying what to set.
    #[test]
    fn protected_mode_refuses_other_hosts_without_a_password() {
        for addr in ["0.0.0.0:6379", "[::]:6379", "10.0.0.5:6379"] {
            let text = GOOD.replace("127.0.0.1:6380", addr);
            let e = err_of(&text);
            assert!(
                e.starts_with(&format!(
                    "/etc/icx/lab.toml: node[0].client: {addr} is not a loopback address, and protected mode is on"
                )),
                "{e}"
            );
            for advice in ["requirepass", "protected_mode = false", "127.0.0.1"] {
                assert!(e.contains(advice), "{e}");
            }
            // A password, or protected mode turned off, and it serves.
            let pw = text.replace("datafiles = ", "requirepass = \"pw\"\ndatafiles = ");
            assert_eq!(
                parse(&pw)
                    .unwrap()
                    .node(NodeId(2))
                    .unwrap()
                    .client
                    .to_string(),
                addr
            );
            let off = text.replace("datafiles = ", "protected_mode = false\ndatafiles = ");
            parse(&off).unwrap();
        }
        for addr in ["[::1]:6379", "127.1.2.3:6379", "[::ffff:127.0.0.1]:6379"] {
            parse(&GOOD.replace("127.0.0.1:6380", addr)).unwrap();
        }
    }

    #[test]
    fn requirepass_file_is_read_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("icx-config-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("lab.toml");
        let pw = dir.join("pw");
        let text = GOOD
            .replace("datafiles = ", "requirepass_file = \"pw\"\ndatafiles = ")
            .replace("127.0.0.1:6380", "0.0.0.0:6380");
        let load = |content: &[u8], mode: u32| {
            // Anew each time: the last may be read-only.
            let _ = std::fs::remove_file(&pw);
            std::fs::write(&pw, content).unwrap();
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
            ClusterConfig::parse(&cfg, &text)
        };
        // Relative to the config file; one final line ending is not part of it.
        let c = load(b"hunter2\r\n", 0o600).unwrap();
        let p = c.clients.requirepass.unwrap();
        assert!(p.matches(b"hunter2") && !p.matches(b"hunter2\r\n"));
        assert!(load(b"bin\0ary\n\n", 0o400)
            .unwrap()
            .clients
            .requirepass
            .unwrap()
            .matches(b"bin\0ary\n"));
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let e = load(b"hunter2\n", mode).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "requirepass_file: {} has mode {mode:04o}, open to group or others: a password file must be 0600 or stricter (chmod 600 {})",
                    pw.display(),
                    pw.display()
                )),
                "{e}"
            );
        }
        let e = load(b"\n", 0o600).unwrap_err().to_string();
        assert!(e.ends_with(": empty"), "{e}");
        let e = load(&vec![b'p'; AUTH_MAX_BULK + 10], 0o600)
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 16384 bytes"), "{e}");
        // A FIFO (or device) named by mistake is refused, not waited on.
        let _ = std::fs::remove_file(&pw);
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&pw)
            .status();
        if made.is_ok_and(|s| s.success()) {
            let e = ClusterConfig::parse(&cfg, &text).unwrap_err().to_string();
            assert!(e.ends_with(": not a regular file"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_round_trip() {
        for s in ["1s", "500ms", "2m 30s", "200s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }
}
