//! The public types of a node's membership: views, actions for the host,
//! the event history and counters.

use crate::decide::Outcome;
use crate::nodeset::NodeSet;
use icx_core::{Duration, Instant, NodeId};
use std::fmt;

/// A committed view: the cluster incarnation and its members with theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub incarnation: u64,
    pub members: Vec<(NodeId, u32)>,
}

impl View {
    pub fn set(&self) -> NodeSet {
        self.members.iter().map(|(n, _)| *n).collect()
    }

    pub fn incarnation_of(&self, n: NodeId) -> Option<u32> {
        self.members.iter().find(|(m, _)| *m == n).map(|(_, i)| *i)
    }
}

/// What the host must do for the node (besides sending and disk I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop all block traffic and block I/O now (rebootless fencing).
    Fence { reason: String },
    /// The node is a member of a view: it may serve.
    Serve { view_incarnation: u64 },
    /// The node restarted its membership with this incarnation (the host
    /// may restart its transport endpoint likewise); it is joining.
    Restart { incarnation: u32 },
    /// The leave ([`Membership::leave`](crate::Membership::leave)) is done:
    /// every live member committed a view without this node (`confirmed`),
    /// or `leave_wait` passed first. The host may exit; the node sends
    /// nothing more.
    Left { confirmed: bool },
}

/// Why a node fenced itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceReason {
    /// Its cohort lost the reconfiguration.
    Lost {
        epoch: u64,
    },
    /// A kill record or a newer view without it, from this node.
    Evicted {
        by: NodeId,
    },
    Stall {
        late: Duration,
    },
    VotingFiles {
        available: usize,
        required: usize,
    },
}

/// One entry of the event history: every decision with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub at: Instant,
    /// The node's cluster incarnation (committed view) at the time.
    pub view_incarnation: u64,
    pub event: Happened,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Happened {
    Started {
        incarnation: u32,
    },
    Missing {
        node: NodeId,
        percent: u8,
    },
    HeardAgain {
        node: NodeId,
        after: Duration,
    },
    /// Network-only: a majority reports the node unreachable (Redis FAIL).
    Failed {
        node: NodeId,
        reporters: NodeSet,
    },
    ReconfigStarted {
        epoch: u64,
        why: String,
    },
    Voted {
        epoch: u64,
        conn: NodeSet,
    },
    Decided {
        epoch: u64,
        outcome: Outcome,
        voters: NodeSet,
        adopted_from: Option<NodeId>,
    },
    Committed {
        view: View,
    },
    Evicting {
        node: NodeId,
        incarnation: u32,
    },
    Complete {
        members: NodeSet,
    },
    Fenced {
        reason: FenceReason,
        new_incarnation: u32,
    },
    Restarted {
        incarnation: u32,
    },
    CriticalChanged {
        critical: bool,
        weight: u16,
    },
    FileOnline {
        file: usize,
    },
    FileOffline {
        file: usize,
    },
    FileRefused {
        file: usize,
        why: String,
    },
    FileFormatted {
        file: usize,
    },
    Stall {
        late: Duration,
    },
    /// This node is leaving (graceful shutdown) the view it was in (0:
    /// none): it stopped its I/O and announces the leave.
    Leaving {
        view_incarnation: u64,
    },
    /// The leave is done: `confirmed` when every live member committed a
    /// view without this node, else `leave_wait` passed; `waiting_for`, the
    /// members that had not.
    Left {
        confirmed: bool,
        waiting_for: NodeSet,
    },
    /// Of the last `window` heartbeats from `node`, `counted` count (not in
    /// an outage) and fewer than half of those, `received`, arrived: the
    /// link from it counts as cut (it is not heard).
    LinkCut {
        node: NodeId,
        received: u32,
        counted: u32,
        window: u32,
    },
    /// A cut link delivers three quarters of what counts again.
    LinkRestored {
        node: NodeId,
        received: u32,
        counted: u32,
        window: u32,
    },
    /// A node announced it is leaving, in this life.
    LeaveAnnounced {
        node: NodeId,
        incarnation: u32,
    },
    /// A view was committed without a node that left (no kill, no CRS-1607).
    Departed {
        node: NodeId,
        incarnation: u32,
    },
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    /// Heartbeats that did not parse (or named another cluster or node).
    pub heartbeats_malformed: u64,
    /// Heartbeats from an earlier incarnation of their sender.
    pub heartbeats_stale: u64,
    pub sends_refused: u64,
    pub sends_lost: u64,
    pub no_buffer: u64,
    pub disk_reads: u64,
    pub disk_writes: u64,
    pub disk_errors: u64,
    /// Slots that were not blank and did not parse as a record of this
    /// cluster and slot: counted, ignored.
    pub records_malformed: u64,
    /// Records whose MAC did not verify under the cluster key: ignored, so
    /// a host without the key cannot fake a disk heartbeat.
    pub records_rejected_auth: u64,
    /// Completions of requests given up on, or unknown.
    pub disk_late: u64,
    pub reconfigurations: u64,
    /// A peer's redundant link taken out of service, and readmitted.
    pub links_down: u64,
    pub links_up: u64,
}

impl fmt::Display for HistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} [view {}] ", self.at, self.view_incarnation)?;
        match &self.event {
            Happened::Decided {
                epoch,
                outcome,
                voters,
                adopted_from,
            } => {
                write!(f, "decided epoch {epoch} over voters {voters}: {outcome}")?;
                if let Some(n) = adopted_from {
                    write!(f, " (adopted from node {})", n.0)?;
                }
                Ok(())
            }
            e => write!(f, "{e:?}"),
        }
    }
}
