//! Deterministic network simulation for icx protocols.
//!
//! Sans-IO nodes (see [`Node`]) exchange UDP payloads over simulated links
//! that lose, duplicate, reorder, corrupt, rate-limit and partition traffic
//! and refuse anything over the MTU. A link can have a finite buffer
//! ([`LinkConfig::queue_limit`]) and a node a finite receive rate
//! ([`RxConfig`]), and the one-way delay of chosen datagrams can be recorded
//! ([`Sim::record_deliveries`]). Time is virtual and jumps from event to
//! event, and every random choice comes from the run seed, so a failing seed
//! printed by [`run_seeds`] replays the exact run.
//!
//! [`host`] runs an upper-layer [`Protocol`](icx_transport::protocol::Protocol)
//! over a transport endpoint on every simulated node: [`host::cluster`]
//! builds N fully meshed nodes in one call.
//!
//! ```
//! use icx_core::{Instant, NodeId};
//! use icx_sim::{run_seeds, LinkConfig, Node, Sim};
//!
//! /// Sends one datagram to node 2 unless `sent`; counts what it receives.
//! #[derive(Default)]
//! struct Hello { sent: bool, got: usize }
//!
//! impl Node for Hello {
//!     fn handle_datagram(&mut self, _now: Instant, _src: NodeId, _data: &[u8]) {
//!         self.got += 1;
//!     }
//!     fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
//!         if std::mem::replace(&mut self.sent, true) {
//!             return None;
//!         }
//!         buf.extend_from_slice(b"hello");
//!         Some(NodeId(2))
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn handle_timeout(&mut self, _now: Instant) {}
//! }
//!
//! run_seeds(&[1, 2], |seed| {
//!     let mut sim = Sim::new(seed);
//!     sim.add_node(NodeId(1), Hello::default());
//!     sim.add_node(NodeId(2), Hello { sent: true, got: 0 });
//!     sim.set_links(LinkConfig::lossy(0.0));
//!     while sim.step() {}
//!     assert_eq!(sim.node(NodeId(2)).got, 1);
//!     assert!(sim.mtu_violations().is_empty());
//! });
//! ```
#![deny(unsafe_code)]

pub mod host;
mod link;
mod rx;
mod seeds;
mod sim;

pub use link::{LinkConfig, LinkStats, MtuViolation, MTU_IPV4_1500, MTU_IPV4_9000, MTU_IPV6_1500};
pub use rx::{RxConfig, RxStats};
pub use seeds::{run_seeds, seeds_from_env, SEED_ENV};
pub use sim::{Delivery, DeliveryRecord, Node, Sim, TraceEvent, START};
