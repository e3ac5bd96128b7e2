//! Thin, checked wrappers over the socket calls the backend makes, so the
//! backend itself reads as policy and every `unsafe` sits next to its reason.
//! Public so that other socket backends (icx-uring) share them.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The errno of the last failed call, as an `io::Error`.
pub(crate) fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Turns a `-1` return into the errno.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(last_error())
    } else {
        Ok(ret)
    }
}

/// A non-blocking, close-on-exec UDP socket of the address's family.
pub(crate) fn udp_socket(v6: bool) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain syscall with constant arguments; no pointers involved.
    let fd = check(unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The socket option that sets DF on every datagram and never fragments
/// (`IP(V6)_PMTUDISC_DO`): (level, option, value) for an IPv6 or IPv4
/// socket.
pub fn dont_fragment_opt(v6: bool) -> (libc::c_int, libc::c_int, libc::c_int) {
    if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    }
}

pub fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value points at a live c_int and its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals; the kernel writes at most `len` bytes.
    check(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// The kernel's SO_MEMINFO counters (`SK_MEMINFO_*` indices).
pub fn meminfo(fd: RawFd) -> io::Result<[u32; 9]> {
    let mut v = [0u32; 9];
    let mut len = size_of::<[u32; 9]>() as libc::socklen_t;
    // SAFETY: `v` is a live array of `len` bytes; the kernel copies at most that.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            v.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

pub(crate) fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    addr_call(fd, addr, libc::bind)
}

/// Sets the socket's default destination. On UDP this only picks the route
/// (and binds an ephemeral port if unbound): no packet is sent.
pub(crate) fn connect(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    addr_call(fd, addr, libc::connect)
}

/// `call(fd, sockaddr, len)` for a call taking one address (bind, connect).
fn addr_call(
    fd: &OwnedFd,
    addr: SocketAddr,
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> io::Result<()> {
    let mut ss = empty_storage();
    let len = encode_addr(addr, &mut ss);
    // SAFETY: `ss` holds a sockaddr of `len` valid bytes for the socket's
    // family, and `call` only reads it.
    check(unsafe {
        call(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
    .map(drop)
}

/// The address a socket is bound to (tests: both lanes share one).
pub fn local_addr_of(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<SocketAddr> {
    let fd = fd.try_clone_to_owned()?;
    local_addr(&fd)
}

pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let mut ss = empty_storage();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is a live sockaddr_storage and `len` its size; the kernel
    // writes at most that many bytes and updates `len`.
    check(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    decode_addr(&ss, len).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "getsockname: unexpected address family",
        )
    })
}

/// An all-zero `mmsghdr`: null pointers, zero lengths.
pub(crate) fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and nullable raw
    // pointers); all-zeroes is a valid value on every libc.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

pub fn empty_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zeroes is a valid value.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// Writes `addr` as a C sockaddr into `out` and returns its length.
pub fn encode_addr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every
            // sockaddr type, so the write stays in bounds and aligned.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as for the IPv4 case.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C sockaddr the kernel filled in; `None` for other families or a
/// short length. IPv4-mapped IPv6 sources come back as IPv4, matching how
/// the backend maps IPv4 destinations on an IPv6 socket.
pub fn decode_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is aligned for it.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// `dst` as the socket's family can address it: IPv4 goes v4-mapped on an
/// IPv6 socket; an IPv6 destination on an IPv4 socket only if v4-mapped.
pub fn route_addr(dst: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
    match (dst, v6_socket) {
        (SocketAddr::V4(_), false) | (SocketAddr::V6(_), true) => Some(dst),
        (SocketAddr::V4(a), true) => Some(SocketAddr::V6(SocketAddrV6::new(
            a.ip().to_ipv6_mapped(),
            a.port(),
            0,
            0,
        ))),
        (SocketAddr::V6(a), false) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, a.port()))),
    }
}

/// One classic-BPF instruction (no jump targets).
pub fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    bpf_jump(code, k, 0, 0)
}

/// One classic-BPF conditional jump: `jt`/`jf` instructions ahead.
pub fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The classic-BPF program that picks, for each datagram, a socket of a
/// SO_REUSEPORT group of `cores` cores with `lanes` sockets each (1, or 2
/// with an urgent lane), joined core by core, each core's normal socket
/// before its urgent one: socket `owner * lanes + urgent`, where `owner` is
/// `owner_core(src node, cores)` (the source node read from the icx header,
/// bytes 12-13 of the UDP payload) and `urgent` is 1 for a frame of the
/// urgent lane ([`icx_wire::lane`]: an ack-only frame, or a data frame of
/// the heartbeat or control channel, read from the kind and channel bytes).
/// `None` when one socket serves everything (one core, one lane).
///
/// A datagram too short for a load goes to socket 0 (the program stops and
/// returns 0); a result past the group's size falls back to the kernel's
/// hash. Either way nothing is lost: a core hands a datagram it does not own
/// to its owner, and a frame on the wrong lane only waits like before.
pub fn steering_program(cores: usize, lanes: usize) -> Option<Vec<libc::sock_filter>> {
    use icx_wire::lane::rule;
    let cores = cores.clamp(1, 1 << 16) as u32;
    let urgent = lanes > 1;
    if cores == 1 && !urgent {
        return None;
    }
    let (stmt, jump) = (bpf_stmt, bpf_jump);
    let mut prog = Vec::with_capacity(17);
    if cores > 1 {
        prog.extend([
            // A = source node (big-endian u16)
            stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, rule::SRC_OFFSET),
            // A = ((A * OWNER_HASH_MUL mod 2^32) >> 16) * cores >> 16
            stmt(
                libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K,
                icx_core::OWNER_HASH_MUL,
            ),
            stmt(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
            stmt(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, cores),
            stmt(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
        ]);
    } else {
        prog.push(stmt(libc::BPF_LD | libc::BPF_IMM, 0));
    }
    if !urgent {
        prog.push(stmt(libc::BPF_RET | libc::BPF_A, 0));
        return Some(prog);
    }
    // Jump offsets count the instructions skipped; the labels are
    //   NORMAL = the TXA after the channel test, URGENT = the TXA after it.
    prog.extend([
        // X = owner * 2
        stmt(libc::BPF_ALU | libc::BPF_LSH | libc::BPF_K, 1),
        stmt(libc::BPF_MISC | libc::BPF_TAX, 0),
        // an ack-only frame is urgent; a data frame depends on its channel;
        // anything else (probes) is normal
        stmt(
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            rule::KIND_OFFSET,
        ),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            rule::KIND_ACK,
            5,
            0,
        ),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            rule::KIND_DATA,
            0,
            2,
        ),
        stmt(
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            rule::CHANNEL_OFFSET,
        ),
        // the small channels are the ones numbered below block
        jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            rule::CHANNEL_BLOCK,
            0,
            2,
        ),
        // NORMAL: return X
        stmt(libc::BPF_MISC | libc::BPF_TXA, 0),
        stmt(libc::BPF_RET | libc::BPF_A, 0),
        // URGENT: return X + 1
        stmt(libc::BPF_MISC | libc::BPF_TXA, 0),
        stmt(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K, 1),
        stmt(libc::BPF_RET | libc::BPF_A, 0),
    ]);
    Some(prog)
}

/// Attaches [`steering_program`]`(cores, lanes)` to `fd`'s SO_REUSEPORT
/// group (the program serves the whole group, whichever member attaches
/// it). Sockets are numbered in the order they joined the group, so core
/// k's normal socket must be the (k * lanes)-th to bind and its urgent
/// socket the next. Does nothing when no program is needed.
pub(crate) fn attach_steering(fd: RawFd, cores: usize, lanes: usize) -> io::Result<()> {
    let Some(prog) = steering_program(cores, lanes) else {
        return Ok(());
    };
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the option value is a sock_fprog whose filter array lives
    // across the call (the kernel copies it); its exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Runs a classic-BPF program as the kernel runs a reuseport program over
/// a UDP payload: loads past the end stop it with 0. Only the instructions
/// [`steering_program`] uses are known; for tests of the program itself.
pub fn run_cbpf(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    for _ in 0..=prog.len() {
        let Some(i) = prog.get(pc) else { return 0 };
        let (code, k) = (u32::from(i.code), i.k);
        pc += 1;
        match code {
            c if c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS => {
                let o = k as usize;
                let Some(b) = pkt.get(o..o + 2) else { return 0 };
                a = u32::from(u16::from_be_bytes([b[0], b[1]]));
            }
            c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => {
                let Some(&b) = pkt.get(k as usize) else {
                    return 0;
                };
                a = u32::from(b);
            }
            c if c == libc::BPF_LD | libc::BPF_IMM => a = k,
            c if c == libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K => a = a.wrapping_mul(k),
            c if c == libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K => a >>= k,
            c if c == libc::BPF_ALU | libc::BPF_LSH | libc::BPF_K => a <<= k,
            c if c == libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K => a = a.wrapping_add(k),
            c if c == libc::BPF_MISC | libc::BPF_TAX => x = a,
            c if c == libc::BPF_MISC | libc::BPF_TXA => a = x,
            c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                pc += usize::from(if a == k { i.jt } else { i.jf });
            }
            c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => {
                pc += usize::from(if a >= k { i.jt } else { i.jf });
            }
            c if c == libc::BPF_RET | libc::BPF_A => return a,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        for s in [
            "127.0.0.1:7000",
            "[::1]:9",
            "[fe80::1%3]:65535",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = s.parse().unwrap();
            let mut ss = empty_storage();
            let len = encode_addr(a, &mut ss);
            assert_eq!(decode_addr(&ss, len), Some(a), "{s}");
            assert_eq!(decode_addr(&ss, len - 1), None, "short length {s}");
        }
    }

    #[test]
    fn mapped_addresses() {
        let v4: SocketAddr = "10.1.2.3:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5".parse().unwrap();
        assert_eq!(route_addr(v4, true), Some(mapped));
        assert_eq!(route_addr(mapped, false), Some(v4));
        assert_eq!(route_addr("[::1]:5".parse().unwrap(), false), None);
        let mut ss = empty_storage();
        let len = encode_addr(mapped, &mut ss);
        assert_eq!(decode_addr(&ss, len), Some(v4));
    }
}

#[cfg(test)]
mod steering_tests {
    use super::*;
    use icx_core::{owner_core, Channel, Lane, NodeId};
    use icx_wire::FrameKind;

    fn frame(src: u16, kind: u8, channel: u8) -> [u8; 40] {
        let mut d = [0u8; 40];
        d[3] = kind;
        d[5] = channel;
        d[12..14].copy_from_slice(&src.to_be_bytes());
        d
    }

    /// The program agrees with `owner_core` and `icx_wire::lane_of` on
    /// every kind, channel and node, for 1-4 cores with and without lanes.
    #[test]
    fn program_matches_owner_and_lane_rules() {
        assert!(steering_program(1, 1).is_none());
        let kinds = [
            FrameKind::Data as u8,
            FrameKind::Ack as u8,
            FrameKind::Probe as u8,
            FrameKind::ProbeAck as u8,
            0,
            9,
        ];
        for cores in 1..=4usize {
            for lanes in 1..=2usize {
                let Some(prog) = steering_program(cores, lanes) else {
                    continue;
                };
                for src in (1..=300u16).step_by(7) {
                    for &k in &kinds {
                        for ch in 0..4u8 {
                            let d = frame(src, k, ch);
                            let urgent = lanes == 2 && icx_wire::lane_of(&d) == Lane::Urgent;
                            let want = owner_core(NodeId(src), cores) * lanes + usize::from(urgent);
                            assert_eq!(
                                run_cbpf(&prog, &d) as usize,
                                want,
                                "cores {cores} lanes {lanes} src {src} kind {k} ch {ch}"
                            );
                        }
                    }
                }
                // Too short to read: socket 0.
                assert_eq!(run_cbpf(&prog, b"x"), 0);
                assert_eq!(run_cbpf(&prog, &[]), 0);
            }
        }
        let hb = frame(5, FrameKind::Data as u8, Channel::Heartbeat as u8);
        assert_eq!(run_cbpf(&steering_program(1, 2).unwrap(), &hb), 1);
    }
}
