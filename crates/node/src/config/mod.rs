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

mod sections;
use sections::{client_limits, data_config};

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
    /// IP MTU of each private network, link 0 first (one per address of
    /// a node's `interconnect`).
    pub interconnect_mtu: Vec<usize>,
    /// How a peer's links share its traffic (with several links).
    pub interconnect_link_mode: icx_transport::LinkMode,
    /// How long a link's keepalives may go unanswered before it is taken
    /// out of service (with several links).
    pub interconnect_link_timeout: Duration,
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
    /// Private-network addresses, one per link (network), in the same
    /// order on every node: link `k` joins every node's `k`th address.
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
    interconnect_mtu: Option<RawMtu>,
    #[serde(default)]
    interconnect_link_mode: Option<String>,
    #[serde(default)]
    interconnect_link_timeout: Option<String>,
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

/// `interconnect_mtu`: one MTU for every link, or one per link.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawMtu {
    One(usize),
    PerLink(Vec<usize>),
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
        let link_mode = match raw.interconnect_link_mode.as_deref() {
            None => icx_transport::LinkMode::ActivePassive,
            Some(s) => icx_transport::LinkMode::parse(s.trim()).ok_or_else(|| {
                err(
                    "interconnect_link_mode",
                    format!("{s:?}: use \"active-passive\" or \"spread\""),
                )
            })?,
        };
        let defaults =
            icx_transport::Config::new(icx_core::ClusterId(1), NodeId(1), icx_core::Incarnation(1));
        let link_timeout = dur(
            "interconnect_link_timeout",
            &raw.interconnect_link_timeout,
            defaults.link_timeout,
        )?;
        if link_timeout < defaults.link_probe_interval * 2 {
            return Err(err(
                "interconnect_link_timeout",
                format!(
                    "{} is less than 2 keepalive intervals ({})",
                    format_duration(link_timeout),
                    format_duration(defaults.link_probe_interval * 2)
                ),
            ));
        }
        if link_timeout * 2 > misscount {
            return Err(err(
                "interconnect_link_timeout",
                format!(
                    "{} is more than half of misscount ({}): a failed link must be left well before a node is missed",
                    format_duration(link_timeout),
                    format_duration(misscount)
                ),
            ));
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
            if n.interconnect.len() > icx_core::MAX_LINKS {
                return Err(err(
                    &key("interconnect"),
                    format!(
                        "{} addresses: at most {} private networks",
                        n.interconnect.len(),
                        icx_core::MAX_LINKS
                    ),
                ));
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
        let links = nodes[0].interconnect.len();
        if let Some((i, n)) = raw
            .node
            .iter()
            .enumerate()
            .find(|(_, n)| n.interconnect.len() != links)
        {
            return Err(err(
                &format!("node[{i}].interconnect"),
                format!(
                    "{} addresses where node {} has {links}: every node lists one address per private network, in the same order",
                    n.interconnect.len(),
                    nodes[0].name
                ),
            ));
        }
        let interconnect_mtu = match raw.interconnect_mtu {
            None => vec![1500; links],
            Some(RawMtu::One(m)) => vec![m; links],
            Some(RawMtu::PerLink(v)) if v.len() == links => v,
            Some(RawMtu::PerLink(v)) => {
                return Err(err(
                    "interconnect_mtu",
                    format!(
                        "{} MTUs for {links} interconnect links: give one, or one per link",
                        v.len()
                    ),
                ))
            }
        };
        // The transport's own rule (room for a header and some block, no
        // datagram larger than IP carries), checked for IPv4 and IPv6 alike.
        for &mtu in &interconnect_mtu {
            for ipv6 in [false, true] {
                let mut p = icx_transport::PeerConfig::new(NodeId(1), mtu);
                p.ipv6 = ipv6;
                p.check_mtu()
                    .map_err(|e| err("interconnect_mtu", e.to_string()))?;
            }
        }
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
            interconnect_link_mode: link_mode,
            interconnect_link_timeout: link_timeout,
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
        c.links = (1..=n)
            .map(|i| {
                self.node(NodeId(i)).map_or_else(Vec::new, |x| {
                    x.interconnect.iter().map(ToString::to_string).collect()
                })
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
mod tests;
