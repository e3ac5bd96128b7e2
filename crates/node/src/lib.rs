//! fusion-node: the icx cluster node daemon. Membership (icx-membership)
//! on the real runtime, its voting files on real storage, the RESP
//! interface, the alert log, and cache fusion (icx-fusion) serving a
//! key-value database over shared datafiles ([`data`]).

use std::sync::Arc;

mod admin;
pub mod alertlog;
pub mod client;
pub mod config;
pub mod data;
mod dio;
mod hostwatch;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod node;
pub mod resp;
pub mod storage;
pub mod vote;

/// Called by a worker thread (voting-file I/O, a RESP client) after it made
/// input visible to the node's event loop, to wake that loop.
pub type Wake = Arc<dyn Fn() + Send + Sync>;
