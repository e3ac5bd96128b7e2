//! icx-membership: who is in the cluster, CSS-style (Oracle Clusterware's
//! cluster synchronization service), sans-IO.
//!
//! One [`Membership`] per node, driven as an
//! [`icx_transport::protocol::Protocol`] (network heartbeats on
//! [`Channel::Heartbeat`](icx_core::Channel)), plus three outputs of its
//! own the host drains after every call: [`Membership::poll_disk`] (voting
//! file I/O, answered with [`Membership::handle_disk`]),
//! [`Membership::poll_alert`] (alert-log lines in CSS's words) and
//! [`Membership::poll_action`] (fence, serve, restart). See the crate
//! README for the model and the rules.
#![deny(unsafe_code)]

pub mod alert;
pub mod config;
pub mod decide;
pub mod disk;
mod member;
pub mod nodeset;
pub mod testing;
pub mod wire;

pub use alert::Alert;
pub use config::{Config, ConfigError};
pub use decide::{Outcome, Rule};
pub use disk::{DiskCompletion, DiskError, DiskOp, DiskRequest};
pub use member::{Action, FenceReason, Happened, HistoryEntry, Membership, Stats, View};
pub use nodeset::{NodeSet, MAX_NODES};
pub use wire::State;
