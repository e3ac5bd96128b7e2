//! Drives the sans-IO protocol stack over a datagram [`Backend`](icx_core::Backend).
//!
//! Besides the driver loop this crate holds the backends that need nothing
//! from the host: [`loopback`], an in-process network for tests and ibench's loopback mode,
//! and [`fault`], a wrapper that makes any backend lossy on purpose.
//!
//! [`Driver`] runs one endpoint on the caller's thread; [`Runtime`] runs a
//! node on one pinned thread per core, with peers hashed to cores and
//! cross-core handoff through the SPSC rings of [`spsc`]; [`host`] runs a
//! sans-IO upper-layer protocol on a `Runtime`. `unsafe` is confined to the
//! ring and CPU pinning.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod affinity;
mod driver;
pub mod fault;
pub mod host;
pub mod keys;
mod links;
pub mod loopback;
mod pump;
pub mod runtime;
#[allow(unsafe_code)]
pub mod spsc;

pub use driver::{
    Driver, DriverConfig, DriverStats, TurnStats, DEFAULT_SEND_CHUNK, DEFAULT_URGENT_CHUNK,
};
pub use fault::{FaultConfig, FaultHandle, FaultInjector, FaultStats};
pub use host::{HostStats, RuntimeHost};
pub use links::LinkAddrs;
pub use loopback::{LoopbackBackend, LoopbackConfig, LoopbackNet, LoopbackStats};
pub use pump::BackendMtuError;
pub use runtime::{
    owner_core, AppWaker, CoreSnapshot, CoreStats, NodeEvent, PeerError, Runtime, RuntimeConfig,
    RuntimeSnapshot, SubmitError,
};
