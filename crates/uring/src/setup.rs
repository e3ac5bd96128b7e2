//! Ring creation with setup-flag fallbacks, and run-time feature probes.

use crate::config::{RingSetup, UringConfig};
use io_uring::{opcode, IoUring, Probe};
use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// The setup flags the ring was actually created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupMode {
    /// SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG (created disabled and
    /// enabled by the first thread that uses it).
    DeferTaskrun,
    /// COOP_TASKRUN | TASKRUN_FLAG.
    CoopTaskrun,
    /// No setup flags.
    Plain,
}

impl fmt::Display for SetupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetupMode::DeferTaskrun => "SINGLE_ISSUER|DEFER_TASKRUN",
            SetupMode::CoopTaskrun => "COOP_TASKRUN",
            SetupMode::Plain => "no setup flags",
        })
    }
}

/// Why the backend could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// io_uring itself is missing or refused (ENOSYS, EPERM from
    /// kernel.io_uring_disabled or seccomp, a kernel without what we need):
    /// the plain-socket backend should take over.
    Unavailable(io::Error),
    /// Anything else (bad configuration, bind failure): no fallback helps.
    Other(io::Error),
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        match e {
            OpenError::Unavailable(e) | OpenError::Other(e) => e,
        }
    }
}

/// Errors of io_uring_setup that no other flag combination will fix.
fn setup_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOSYS | libc::EPERM | libc::EACCES | libc::ENOMEM | libc::EMFILE | libc::ENFILE
        )
    )
}

/// Creates the ring, trying the setup flags from strongest to none.
fn build_ring(cfg: &UringConfig) -> Result<(IoUring, SetupMode), OpenError> {
    let entries = cfg.ring_entries.clamp(8, 32768).next_power_of_two();
    let modes: &[SetupMode] = match cfg.ring_setup {
        RingSetup::Best => &[
            SetupMode::DeferTaskrun,
            SetupMode::CoopTaskrun,
            SetupMode::Plain,
        ],
        RingSetup::Coop => &[SetupMode::CoopTaskrun, SetupMode::Plain],
        RingSetup::Plain => &[SetupMode::Plain],
    };
    let mut last = None;
    for &mode in modes {
        let mut b = IoUring::builder();
        b.setup_cqsize(entries * 4).setup_clamp();
        match mode {
            SetupMode::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_r_disabled();
            }
            SetupMode::CoopTaskrun => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            SetupMode::Plain => {}
        }
        match b.build(entries) {
            Ok(ring) => {
                if !ring.params().is_feature_ext_arg() {
                    return Err(OpenError::Unavailable(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "io_uring without IORING_FEAT_EXT_ARG (kernel older than 5.11): no timed waits",
                    )));
                }
                return Ok((ring, mode));
            }
            Err(e) if setup_refused(&e) => {
                return Err(OpenError::Unavailable(io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring_setup refused: {e} (ENOSYS: kernel without io_uring; EPERM: \
                         sysctl kernel.io_uring_disabled or a seccomp filter)"
                    ),
                )));
            }
            Err(e) => {
                tracing::info!(flags = %mode, error = %e, "io_uring setup flags refused, trying weaker ones");
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no setup mode"));
    Err(OpenError::Unavailable(io::Error::new(
        e.kind(),
        format!("io_uring_setup failed with every flag combination: {e}"),
    )))
}

/// Creates the ring and checks it has what the backend cannot do without
/// (SENDMSG, RECVMSG, POLL_ADD); anything missing is `Unavailable`.
pub(crate) fn open_ring(cfg: &UringConfig) -> Result<(IoUring, SetupMode, Ops), OpenError> {
    let (ring, mode) = build_ring(cfg)?;
    let ops = probe_ops(&ring).map_err(|e| {
        OpenError::Unavailable(io::Error::new(
            e.kind(),
            format!("io_uring opcode probe (kernel older than 5.6): {e}"),
        ))
    })?;
    if !(ops.sendmsg && ops.recvmsg && ops.poll) {
        return Err(OpenError::Unavailable(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks SENDMSG/RECVMSG/POLL_ADD",
        )));
    }
    Ok((ring, mode, ops))
}

/// Why io_uring cannot back a socket on this thread, or `None`: the probe
/// [`crate::open`] runs before falling back, without a socket.
pub fn unavailable() -> Option<String> {
    let cfg = UringConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    match open_ring(&cfg) {
        Ok(_) => None,
        Err(OpenError::Unavailable(e) | OpenError::Other(e)) => {
            Some(format!("io_uring unavailable: {e}"))
        }
    }
}

/// Opcode support, as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ops {
    pub(crate) sendmsg: bool,
    pub(crate) recvmsg: bool,
    pub(crate) poll: bool,
    /// SENDMSG_ZC (6.1); SEND_ZC (6.0) also marks the kernel that has
    /// multishot RECVMSG.
    pub(crate) sendmsg_zc: bool,
    pub(crate) multishot_recvmsg: bool,
}

fn probe_ops(ring: &IoUring) -> io::Result<Ops> {
    let mut p = Probe::new();
    ring.submitter().register_probe(&mut p)?;
    Ok(Ops {
        sendmsg: p.is_supported(opcode::SendMsg::CODE),
        recvmsg: p.is_supported(opcode::RecvMsg::CODE),
        poll: p.is_supported(opcode::PollAdd::CODE),
        sendmsg_zc: p.is_supported(opcode::SendMsgZc::CODE),
        multishot_recvmsg: p.is_supported(opcode::SendZc::CODE),
    })
}

const SOL_UDP: libc::c_int = 17;
pub(crate) const UDP_GRO: libc::c_int = 104;

/// UDP GSO: setting UDP_SEGMENT to 0 (no default segmentation) succeeds
/// exactly where the kernel knows the option (4.18+).
pub(crate) fn probe_gso(fd: RawFd) -> io::Result<()> {
    icx_udp::sys::set_int(fd, SOL_UDP, crate::tx::UDP_SEGMENT, 0)
}

/// UDP GRO: enables it on the socket (5.0+).
pub(crate) fn enable_gro(fd: RawFd) -> io::Result<()> {
    icx_udp::sys::set_int(fd, SOL_UDP, UDP_GRO, 1)
}

/// The cmsg level of UDP_GRO.
pub(crate) const fn sol_udp() -> libc::c_int {
    SOL_UDP
}
