//! fusion-node: the icx cluster node daemon. Membership (icx-membership)
//! on the real runtime, its voting files on real storage, the RESP admin
//! interface, the alert log. Cache fusion adds the data path later.

use std::sync::Arc;

mod admin;
pub mod alertlog;
pub mod config;
mod dio;
pub mod node;
pub mod resp;
pub mod storage;
pub mod vote;

/// Called by a worker thread (voting-file I/O, a RESP client) after it made
/// input visible to the node's event loop, to wake that loop.
pub type Wake = Arc<dyn Fn() + Send + Sync>;
