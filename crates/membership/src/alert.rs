//! Alerts in CSS's words: what the host writes to the cluster alert log.

use std::fmt;

/// One alert line, without timestamp and process prefix
/// (`[OCSSD(3896)]` in Oracle's log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// `CRS-1612`, ...; icx's own alerts (no Oracle equivalent) are `ICX-`.
    pub code: &'static str,
    /// The whole line, code first.
    pub text: String,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn alert(code: &'static str, rest: String) -> Alert {
    Alert {
        text: format!("{code}: {rest}"),
        code,
    }
}

/// CRS-1612 / 1611 / 1610 at 50 / 75 / 90 % of misscount. Oracle's text has
/// two spaces before "Removal".
pub fn missing(percent: u8, name: &str, node: u16, remaining_s: f64) -> Alert {
    let code = match percent {
        50 => "CRS-1612",
        75 => "CRS-1611",
        _ => "CRS-1610",
    };
    alert(
        code,
        format!(
            "Network communication with node {name} ({node}) missing for {percent}% of timeout interval.  Removal of this node from cluster in {remaining_s:.3} seconds"
        ),
    )
}

pub fn evicting(name: &str, incarnation: u64) -> Alert {
    alert(
        "CRS-1607",
        format!("Node {name} is being evicted in cluster incarnation {incarnation}"),
    )
}

pub fn evicted_by(node: u16, name: &str) -> Alert {
    alert(
        "CRS-1608",
        format!("This node was evicted by node {node}, {name}"),
    )
}

pub fn cannot_communicate() -> Alert {
    alert(
        "CRS-1609",
        "This node is unable to communicate with other nodes in the cluster and is going down to preserve cluster integrity".into(),
    )
}

/// `CRS-1601: CSSD Reconfiguration complete. Active nodes are rac1 rac2 .`
pub fn reconfigured<'a>(names: impl Iterator<Item = &'a str>) -> Alert {
    let mut s = String::from("CSSD Reconfiguration complete. Active nodes are ");
    for n in names {
        s.push_str(n);
        s.push(' ');
    }
    s.push('.');
    alert("CRS-1601", s)
}

/// CRS-1615 / 1614 / 1613 at 50 / 75 / 90 % of the voting-file I/O limit.
pub fn file_slow(percent: u8, file: &str, remaining_ms: u64) -> Alert {
    let code = match percent {
        50 => "CRS-1615",
        75 => "CRS-1614",
        _ => "CRS-1613",
    };
    alert(
        code,
        format!(
            "No I/O has completed after {percent}% of the maximum interval. Voting file {file} will be considered not functional in {remaining_ms} milliseconds"
        ),
    )
}

pub fn file_offline(file: &str) -> Alert {
    alert("CRS-1604", format!("CSSD voting file is offline: {file}"))
}

pub fn file_online(file: &str) -> Alert {
    alert("CRS-1605", format!("CSSD voting file is online: {file}"))
}

pub fn too_few_files(available: usize, required: usize) -> Alert {
    alert(
        "CRS-1606",
        format!(
            "The number of voting files available, {available}, is less than the minimum number of voting files required, {required}, resulting in CSSD termination to ensure data integrity"
        ),
    )
}

pub fn file_refused(file: &str, why: &str) -> Alert {
    alert("ICX-1701", format!("Voting file {file} refused: {why}"))
}

/// A voting-file slot changes under a MAC this node cannot verify: a node
/// with another cluster key (or none) is running.
pub fn records_unverified(name: &str, node: u16) -> Alert {
    alert(
        "ICX-1708",
        format!(
            "Voting file records of node {name} ({node}) are being written but fail authentication under this node's cluster key: a node with another key is running; this node does not form a cluster while it is (every node needs the same cluster_key_file)"
        ),
    )
}

pub fn stalled(late_s: f64, margin_s: f64) -> Alert {
    alert(
        "ICX-1702",
        format!(
            "This node was not scheduled for {late_s:.3} seconds past its timer (allowed {margin_s:.3}); fencing itself before any other work"
        ),
    )
}

/// The node leaves the cluster (graceful shutdown).
pub fn leaving() -> Alert {
    alert(
        "ICX-1704",
        "This node is leaving the cluster (shutdown requested): its I/O is stopped and the other nodes are told".into(),
    )
}

/// A member announced its leave: it is removed at once.
pub fn peer_leaving(name: &str, node: u16) -> Alert {
    alert(
        "ICX-1705",
        format!("Node {name} ({node}) is leaving the cluster (shutdown): removing it now"),
    )
}

/// Too few heartbeats from a node arrive: the link counts as cut.
pub fn link_cut(name: &str, node: u16, received: u32, counted: u32, window: u32) -> Alert {
    alert(
        "ICX-1706",
        format!(
            "Network heartbeats from node {name} ({node}): {received} of {counted} arrived over the last {window} (runs of loss; outages apart), fewer than half; the link counts as cut until three quarters do"
        ),
    )
}

pub fn link_restored(name: &str, node: u16, received: u32, counted: u32, window: u32) -> Alert {
    alert(
        "ICX-1707",
        format!(
            "Network heartbeats from node {name} ({node}): {received} of {counted} arrived over the last {window}; the link is restored"
        ),
    )
}

/// `link` 0-based as in `ibench` and `INFO interconnect`; `addr` the
/// peer's address on it, when known.
fn link_name(link: u8, addr: Option<&str>) -> String {
    match addr {
        Some(a) => format!("Interconnect link {link} ({a})"),
        None => format!("Interconnect link {link}"),
    }
}

/// The transport took one of a peer's links out of service (its
/// keepalives went unanswered); the others carry its traffic.
pub fn link_down(name: &str, node: u16, link: u8, addr: Option<&str>) -> Alert {
    alert(
        "ICX-1709",
        format!(
            "{} to node {name} ({node}) is out of service: its keepalives went unanswered; the node's traffic moved to its other links",
            link_name(link, addr)
        ),
    )
}

/// The link answered a run of keepalives and carries traffic again.
pub fn link_up(name: &str, node: u16, link: u8, addr: Option<&str>) -> Alert {
    alert(
        "ICX-1710",
        format!(
            "{} to node {name} ({node}) is back in service",
            link_name(link, addr)
        ),
    )
}

pub fn no_quorum(have: usize, configured: u16) -> Alert {
    alert(
        "ICX-1703",
        format!(
            "This node reaches {have} of {configured} configured nodes, no majority: it does not serve (network-only mode)"
        ),
    )
}
