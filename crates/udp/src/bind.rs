//! Opening an icx socket: DF, buffers, SO_REUSEPORT, the urgent lane's
//! steering, and the interface a link's socket is bound to.

use crate::config::{BufferGrant, SocketConfig};
use crate::sys;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub(crate) fn with_context(e: io::Error, what: impl fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Requests a socket buffer size and reports what the kernel granted,
/// warning when it clamped the request.
fn set_buffer(fd: RawFd, recv: bool, requested: usize, force: bool) -> io::Result<BufferGrant> {
    let (opt, force_opt, sysctl, what) = if recv {
        (
            libc::SO_RCVBUF,
            libc::SO_RCVBUFFORCE,
            "net.core.rmem_max",
            "receive",
        )
    } else {
        (
            libc::SO_SNDBUF,
            libc::SO_SNDBUFFORCE,
            "net.core.wmem_max",
            "send",
        )
    };
    let mut forced = false;
    if requested > 0 {
        // The kernel doubles the value and keeps it below INT_MAX.
        let val = requested.min(i32::MAX as usize / 2) as libc::c_int;
        if force {
            match sys::set_int(fd, libc::SOL_SOCKET, force_opt, val) {
                Ok(()) => forced = true,
                Err(e) => {
                    tracing::debug!(error = %e, "SO_{}BUFFORCE refused (needs CAP_NET_ADMIN); using the capped option", if recv { "RCV" } else { "SND" })
                }
            }
        }
        if !forced {
            sys::set_int(fd, libc::SOL_SOCKET, opt, val)
                .map_err(|e| with_context(e, format_args!("set {what} buffer to {requested}")))?;
        }
    }
    let granted = sys::get_int(fd, libc::SOL_SOCKET, opt)? as usize / 2;
    let g = BufferGrant {
        requested,
        granted,
        forced,
    };
    if g.clamped() {
        tracing::warn!(
            requested,
            granted,
            sysctl,
            "socket {what} buffer clamped by the kernel: bursts beyond it are dropped \
             (the 'UDP buffer overflow' cause of 'gc block lost'); raise it with \
             `sysctl -w {sysctl}={requested}` or run with CAP_NET_ADMIN"
        );
    }
    Ok(g)
}

/// A configured, bound UDP socket: what [`bind_socket`] hands back.
#[derive(Debug)]
pub struct BoundSocket {
    pub fd: OwnedFd,
    /// The address actually bound (the chosen port when 0 was asked for).
    pub addr: SocketAddr,
    pub recv_buffer: BufferGrant,
    pub send_buffer: BufferGrant,
    /// The interface it is bound to (SO_BINDTODEVICE), if any.
    pub device: Option<String>,
}

/// Opens, configures and binds a non-blocking UDP socket the way every icx
/// socket backend must: DF set (`IP(V6)_PMTUDISC_DO`), socket buffers sized
/// from `cfg` with a warning when the kernel clamps them, and SO_REUSEPORT
/// set after a port-0 bind (before a fixed-port bind).
///
/// With port 0 and `reuse_port`, SO_REUSEPORT is set only after the bind:
/// set before, Linux's ephemeral-port search treats ports held by other
/// SO_REUSEPORT sockets of the same user as free, and two port-0 binds can
/// land on one port and split each other's traffic.
pub fn bind_socket(cfg: &SocketConfig) -> io::Result<BoundSocket> {
    cfg.validate()?;
    let v6 = cfg.addr.is_ipv6();
    let fd = sys::udp_socket(v6)?;
    let raw = fd.as_raw_fd();

    // DF on every datagram: the kernel refuses (EMSGSIZE) instead of
    // fragmenting, since icx fragments by itself and IP reassembly
    // failures are a cause of lost blocks it must not have.
    if v6 {
        sys::set_int(
            raw,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
        .map_err(|e| with_context(e, "IPV6_MTU_DISCOVER"))?;
        // IPv4-mapped traffic on a dual-stack socket follows the IPv4
        // option; harmless where that traffic cannot occur.
        if let Err(e) = sys::set_int(
            raw,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        ) {
            tracing::debug!(error = %e, "IP_MTU_DISCOVER on an IPv6 socket refused");
        }
    } else {
        sys::set_int(
            raw,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
        .map_err(|e| with_context(e, "IP_MTU_DISCOVER"))?;
    }

    let recv_buffer = set_buffer(raw, true, cfg.recv_buffer, cfg.force_buffers)?;
    let send_buffer = set_buffer(raw, false, cfg.send_buffer, cfg.force_buffers)?;

    let device = if cfg.bind_device {
        bind_device(raw, cfg.addr)
    } else {
        None
    };

    let reuse_before_bind = cfg.reuse_port && cfg.addr.port() != 0;
    if reuse_before_bind {
        sys::set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
            .map_err(|e| with_context(e, "SO_REUSEPORT"))?;
    }
    sys::bind(&fd, cfg.addr).map_err(|e| with_context(e, format_args!("bind {}", cfg.addr)))?;
    if cfg.reuse_port && !reuse_before_bind {
        sys::set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
            .map_err(|e| with_context(e, "SO_REUSEPORT"))?;
    }
    // The group exists once a second socket joins a port (a socket bound to
    // port 0 gets SO_REUSEPORT only after binding, so it has none of its
    // own): the joiners attach the program, which serves the whole group.
    // A normal socket needs it for owner steering; the urgent lane's own
    // program is attached by its socket (`bind_urgent`).
    if reuse_before_bind && cfg.steer_cores > 1 {
        sys::attach_steering(raw, cfg.steer_cores, cfg.lanes())
            .map_err(|e| with_context(e, "SO_ATTACH_REUSEPORT_CBPF (owner steering)"))?;
    }
    let addr = sys::local_addr(&fd)?;
    Ok(BoundSocket {
        fd,
        addr,
        recv_buffer,
        send_buffer,
        device,
    })
}

/// Binds `fd` to the interface owning `addr`'s IP (see
/// [`SocketConfig::bind_device`]); returns its name, or `None` when there is
/// none to bind to or the kernel refused (logged: replies may then leave by
/// another interface, which strict rp_filter on the peer drops).
fn bind_device(fd: RawFd, addr: SocketAddr) -> Option<String> {
    let dev = match crate::ifaddr::interface_of(addr.ip()) {
        Ok(d) => d?,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "udp: getifaddrs failed; socket not bound to its interface");
            return None;
        }
    };
    match crate::ifaddr::bind_to_device(fd, &dev) {
        Ok(()) => Some(dev),
        Err(e) => {
            tracing::warn!(
                %addr, device = %dev, error = %e,
                "udp: SO_BINDTODEVICE refused; replies may leave by another interface \
                 (with strict rp_filter on the peer they are dropped)"
            );
            None
        }
    }
}

/// Binds the urgent lane's socket to `normal` (the address the normal
/// socket got, so its port is known) and attaches the steering program that
/// feeds it urgent frames. Configured like the normal socket (`cfg`'s
/// buffers and options). Fails, closing the socket, if the kernel refuses
/// either: the caller then runs with one socket.
pub fn bind_urgent(cfg: &SocketConfig, normal: SocketAddr) -> io::Result<BoundSocket> {
    let mut u = cfg.clone();
    u.addr = normal;
    // Joins the normal socket's group (a fixed port: SO_REUSEPORT is set
    // before the bind); its own steering is attached here, not there.
    u.steer_cores = 0;
    u.reuse_port = true;
    let b = bind_socket(&u)?;
    sys::attach_steering(b.fd.as_raw_fd(), cfg.steer_cores, 2)
        .map_err(|e| with_context(e, "SO_ATTACH_REUSEPORT_CBPF (urgent lane)"))?;
    Ok(b)
}
