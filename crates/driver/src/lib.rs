//! Drives the sans-IO protocol stack over a datagram [`Backend`](icx_core::Backend).
//!
//! Besides the driver loop this crate holds the backends that need nothing
//! from the host: [`loopback`], an in-process network for tests and the demo,
//! and [`fault`], a wrapper that makes any backend lossy on purpose.
#![deny(unsafe_code)]

mod driver;
pub mod fault;
pub mod loopback;

pub use driver::{Driver, DriverConfig, DriverStats, TurnStats};
pub use fault::{FaultConfig, FaultHandle, FaultInjector, FaultStats};
pub use loopback::{LoopbackBackend, LoopbackConfig, LoopbackNet, LoopbackStats};
