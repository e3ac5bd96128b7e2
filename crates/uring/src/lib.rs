//! The io_uring UDP backend for icx, the default: one ring and one UDP socket
//! per instance; a per-core runtime opens one per core on a shared port
//! (SO_REUSEPORT).
//!
//! - **Receive**: multishot RECVMSG drawing from a provided-buffer ring,
//!   re-armed whenever a completion comes without IORING_CQE_F_MORE (the
//!   ring ran dry: ENOBUFS, counted). UDP_GRO is on, so a train arrives as
//!   one buffer; it is split by the UDP_GRO segment size and each datagram
//!   lent to the `recv` callback, then the buffer goes back to the ring.
//!   Truncated datagrams are counted, never delivered.
//! - **Send**: consecutive frames to one destination with equal size (the
//!   last may be shorter) go as one SENDMSG with a UDP_SEGMENT cmsg (GSO, up
//!   to 64 segments / 64 KiB), gathered from (header, payload) iovec pairs
//!   that point at the frame headers and the pool buffers: the block is never
//!   copied in user space. Each frame is held in a preallocated in-flight
//!   slab until its completion and, for SENDMSG_ZC (used at or above a size
//!   threshold), its notification. One submit per `send` call.
//! - **Pool**: [`Backend::register_pool`] registers the pool's regions as
//!   fixed buffers (pinned), logged and skipped when RLIMIT_MEMLOCK refuses.
//! - **Waiting**: `io_uring_enter` with a timeout, or spinning on the
//!   completion queue with `busy_poll`; a waker (eventfd under a multishot
//!   poll) interrupts it from another thread.
//!
//! Every feature is probed at run time and falls back with a logged reason:
//! single-shot receives, copying sends, one datagram per frame, and when
//! io_uring itself is missing or refused, [`open_backend`] returns icx-udp's
//! plain-socket backend. Config flags force each fallback (for tests).
//!
//! Linux only (kernel 5.11+ for the ring; 6.0+ for multishot receive).

#[cfg(target_os = "linux")]
mod backend;
#[cfg(target_os = "linux")]
mod bufring;
mod config;
#[cfg(target_os = "linux")]
mod setup;
#[cfg(target_os = "linux")]
mod tx;

pub use config::{RingSetup, UringConfig, ZeroCopy, DEFAULT_SPIN, DEFAULT_ZC_THRESHOLD};

#[cfg(target_os = "linux")]
pub use backend::{Features, UringBackend, UringStats};
#[cfg(target_os = "linux")]
pub use setup::{unavailable, SetupMode};

#[cfg(target_os = "linux")]
use icx_core::Backend;
#[cfg(target_os = "linux")]
use icx_udp::SocketBackend;

/// What [`open`] produced.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub enum Opened {
    Uring(Box<UringBackend>),
    /// The plain-socket fallback, with the reason it was chosen.
    Sockets(Box<SocketBackend>, String),
}

#[cfg(target_os = "linux")]
impl Opened {
    pub fn into_boxed(self) -> Box<dyn Backend + Send> {
        match self {
            Opened::Uring(b) => b,
            Opened::Sockets(b, _) => Box::new(b),
        }
    }

    pub fn is_uring(&self) -> bool {
        matches!(self, Opened::Uring(_))
    }
}

/// Opens the io_uring backend, or the plain-socket backend when io_uring is
/// unavailable (ENOSYS, EPERM from `kernel.io_uring_disabled` or seccomp, a
/// kernel too old) or when forced by [`UringConfig::force_sockets`] or the
/// `ICX_FORCE_SOCKETS` environment variable. The choice is logged with its reason.
#[cfg(target_os = "linux")]
pub fn open(cfg: UringConfig) -> std::io::Result<Opened> {
    if let Some(why) = cfg.sockets_forced() {
        tracing::info!(reason = why, "icx: plain-socket backend (forced)");
        let b = SocketBackend::bind(cfg.socket_config())?;
        return Ok(Opened::Sockets(Box::new(b), why.to_string()));
    }
    match UringBackend::open(cfg.clone()) {
        Ok(b) => Ok(Opened::Uring(Box::new(b))),
        Err(setup::OpenError::Unavailable(e)) => {
            tracing::warn!(error = %e, "icx: io_uring unavailable, falling back to the plain-socket backend (recvmmsg/sendmmsg)");
            let b = SocketBackend::bind(cfg.socket_config())?;
            Ok(Opened::Sockets(Box::new(b), e.to_string()))
        }
        Err(setup::OpenError::Other(e)) => Err(e),
    }
}

/// [`open`], boxed: the backend the driver should run on.
#[cfg(target_os = "linux")]
pub fn open_backend(cfg: UringConfig) -> std::io::Result<Box<dyn Backend + Send>> {
    open(cfg).map(Opened::into_boxed)
}
