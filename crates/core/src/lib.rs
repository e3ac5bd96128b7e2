//! Core vocabulary shared by every icx layer.
//!
//! Protocol crates (`icx-wire`, `icx-transport`, ...) are sans-IO: they take an
//! [`Instant`] from the caller and never read a clock. This crate supplies the
//! time newtype, node/cluster identities, the seeded RNG used by simulations,
//! the [`Backend`] trait every datagram backend implements, and the buffer pool
//! that blocks live in from send to delivery.
#![deny(unsafe_code)]

pub mod backend;
pub mod hash;
pub mod id;
pub mod ip;
pub mod pool;
pub mod rng;
pub mod time;

pub use backend::{
    Backend, Capabilities, HeaderBuf, Lane, Payload, RxDatagram, TxBatch, TxFrame, Wake,
    HEADER_INLINE_CAP, MAX_LINKS,
};
pub use id::{owner_core, Channel, ClusterId, Incarnation, NodeId, OWNER_HASH_MUL};
pub use ip::{
    ip_udp_overhead, max_udp_payload, IPV4_UDP_OVERHEAD, IPV6_UDP_OVERHEAD, MAX_IP_MTU,
    MAX_UDP_PAYLOAD,
};
pub use pool::{BufferPool, HugePages, PoolBuf, PoolConfig, SharedBuf, SizeClass};
pub use rng::{derive_seed, seeded_rng, SeededRng};
pub use time::{Clock, Duration, Instant, ManualClock, MonotonicClock};
