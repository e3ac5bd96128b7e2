//! Test support shared by the icx crates' integration tests and test
//! binaries, so each backend runs the same checks:
//!
//! - [`plan`]: message sizes and contents derived from (seed, index), with
//!   the index in the first bytes, so a receiver checks exactly-once and
//!   byte-identical delivery without sharing state with the sender;
//! - [`exchange`]: two drivers on their own threads exchanging a plan's
//!   messages over any backend behind a fault injector, bounded in time;
//! - [`alloc`]: a counting global allocator (each binary still declares its
//!   own `#[global_allocator]` static of [`alloc::CountingAlloc`]);
//! - [`garbage`]: a stranger throwing junk datagrams at two drivers while
//!   they exchange messages, over any backend;
//! - [`lab`]: whether a test needing root and the namespace lab can run,
//!   skipping with the reason, or failing under `ICX_REQUIRE_LAB=1`;
//! - [`sock`]: small helpers for tests driving a backend by hand;
//! - [`toy`]: a toy upper-layer protocol that proves the protocol hosts.
#![deny(unsafe_code)]

pub mod alloc;
pub mod exchange;
pub mod garbage;
pub mod lab;
pub mod plan;
pub mod ports;
pub mod sock;
pub mod tmp;
pub mod toy;
