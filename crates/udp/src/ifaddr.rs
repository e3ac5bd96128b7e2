//! Local interfaces and their addresses (`getifaddrs`), and binding a
//! socket to one (`SO_BINDTODEVICE`).
//!
//! A node with several interconnect links binds each link's sockets to the
//! link's own address *and* to the interface that owns it. The address
//! alone fixes the source address of replies but not the interface they
//! leave by: the kernel routes by destination, and with two private
//! networks a reply can leave by the other NIC, where strict reverse-path
//! filtering (`rp_filter = 1`) at the receiver drops it (the rp_filter
//! pitfall of multiple interconnects). Bound to its device, a socket sends
//! only by that interface and receives only what came in by it.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

/// One address of a local interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's name (`eth1`, `veth-a1`).
    pub name: String,
    pub addr: IpAddr,
    /// IFF_LOOPBACK.
    pub loopback: bool,
    /// IFF_UP.
    pub up: bool,
}

/// Every IPv4 and IPv6 address of every local interface, in the kernel's
/// order.
pub fn interface_addrs() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into a live pointer; the list
    // is freed below with freeifaddrs, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    // The kernel's list is finite; the bound only guards a corrupt one.
    for _ in 0..65_536 {
        if cur.is_null() {
            break;
        }
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
        // alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the
        // family it names; we read sa_family first, then the matching type.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a non-null NUL-terminated string of the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let flags = ifa.ifa_flags;
        out.push(IfAddr {
            name,
            addr,
            loopback: flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
            up: flags & libc::IFF_UP as libc::c_uint != 0,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The interface that owns `ip`, if it is a specific address of a
/// non-loopback interface (the wildcard and loopback addresses have none
/// to bind to).
pub fn interface_of(ip: IpAddr) -> io::Result<Option<String>> {
    if ip.is_unspecified() || ip.is_loopback() {
        return Ok(None);
    }
    Ok(interface_addrs()?
        .into_iter()
        .find(|a| a.addr == ip && !a.loopback)
        .map(|a| a.name))
}

/// The IPv4 addresses of the local interfaces that are up, loopback ones
/// excluded, in the kernel's order: what a server bound to `0.0.0.0`
/// binds a link to each of.
pub fn local_ipv4_addrs() -> io::Result<Vec<Ipv4Addr>> {
    let mut v: Vec<Ipv4Addr> = interface_addrs()?
        .into_iter()
        .filter(|a| a.up && !a.loopback)
        .filter_map(|a| match a.addr {
            IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
            _ => None,
        })
        .collect();
    v.dedup();
    Ok(v)
}

/// SO_BINDTODEVICE: the socket sends only by `name` and receives only what
/// arrived by it. Set before `bind`: every socket of an SO_REUSEPORT group
/// must be bound to the same device.
pub fn bind_to_device(fd: RawFd, name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: setsockopt reads `bytes.len()` bytes from a live slice.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The device a socket is bound to (SO_BINDTODEVICE), if any.
pub fn bound_device(fd: RawFd) -> io::Result<Option<String>> {
    let mut buf = [0u8; libc::IFNAMSIZ];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live buffer and
    // updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (len as usize).min(buf.len());
    let s = &buf[..n];
    let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
    Ok((!s.is_empty()).then(|| String::from_utf8_lossy(s).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_never_bound() {
        let all = interface_addrs().unwrap();
        assert!(
            all.iter()
                .any(|a| a.loopback && a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{all:?}"
        );
        assert_eq!(interface_of(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap(), None);
        assert_eq!(
            interface_of(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).unwrap(),
            None
        );
        assert!(local_ipv4_addrs()
            .unwrap()
            .iter()
            .all(|ip| !ip.is_loopback()));
    }

    #[test]
    fn bad_device_names_are_refused() {
        assert!(bind_to_device(-1, "").is_err());
        assert!(bind_to_device(-1, "a\0b").is_err());
        assert!(bind_to_device(-1, &"x".repeat(libc::IFNAMSIZ)).is_err());
    }
}
