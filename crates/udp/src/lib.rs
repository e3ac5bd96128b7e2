//! The plain kernel-socket UDP backend for icx.
//!
//! [`SocketBackend`] implements [`icx_core::Backend`] over one non-blocking
//! UDP socket with `sendmmsg`/`recvmmsg`. It is the last-resort fallback when
//! io_uring is unavailable and the in-run baseline that the io_uring and DPDK
//! backends are benchmarked against, so it stays simple: no GSO, GRO or
//! zero-copy, but no user-space copy of block data either (each datagram is
//! gathered from the frame's header and its pool-buffer slice) and no heap
//! allocation per call.
//!
//! Linux only: it relies on `sendmmsg`, `recvmmsg`, `ppoll`, SO_REUSEPORT,
//! SO_*BUFFORCE and IP(V6)_MTU_DISCOVER.

#[cfg(target_os = "linux")]
mod arrays;
#[cfg(target_os = "linux")]
mod bind;
mod config;
pub mod host;
#[cfg(target_os = "linux")]
pub mod ifaddr;
mod links;
#[cfg(target_os = "linux")]
mod mtu;
#[cfg(target_os = "linux")]
mod socket;
#[cfg(target_os = "linux")]
pub mod sys;
#[cfg(target_os = "linux")]
mod wake;
#[cfg(target_os = "linux")]
pub use mtu::{peer_mtu, route_mtu};
#[cfg(target_os = "linux")]
pub use wake::EventFd;

#[cfg(target_os = "linux")]
pub use bind::{bind_socket, bind_urgent, BoundSocket};
pub use config::{BufferGrant, SocketConfig, DEFAULT_SOCKET_BUFFER};
pub use links::{LinkCounts, RxRotation};
#[cfg(target_os = "linux")]
pub use socket::{SocketBackend, SocketStats};
