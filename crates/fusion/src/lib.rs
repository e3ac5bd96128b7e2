//! icx-fusion: cache fusion, sans-IO. Nodes share one set of datafiles and
//! each caches blocks; the global cache service keeps the caches coherent by
//! shipping blocks over the interconnect instead of through disk. Once any
//! node has changed a block in memory, no other node reads that block from
//! disk.
//!
//! Like the membership, a fusion object is driven as an
//! [`icx_transport::protocol::Protocol`] and has outputs of its own the host
//! drains: [`io`] requests (datafiles and redo, done by the host).
//!
//! The global cache service is [`gcs::Fusion`]: requester, master and
//! holder of one node, over [`msg`] (the wire format), [`grd`] (who
//! masters what, and what a master knows), [`cache`] (immutable versions,
//! past images) and [`stats`] (Oracle's gc statistics). Over it, [`db`]
//! is the key-value executor: Redis-style commands on [`kv`] pages in the
//! blocks, each change made with [`gcs::Fusion::change_kv`] and logged as
//! a [`redo`] record. [`testing`] runs both on the simulator with a
//! simulated shared disk.
#![deny(unsafe_code)]

pub mod block;
pub mod cache;
pub mod db;
pub mod gcs;
pub mod grd;
pub mod io;
pub mod kv;
pub mod msg;
pub mod redo;
pub mod stats;
pub mod testing;
