//! io_uring really unavailable, not just forced off: a thread whose seccomp
//! filter makes `io_uring_setup` fail (EPERM, as a container runtime's
//! profile does; ENOSYS, as an old kernel does) must get the plain-socket
//! backend with the reason, and that backend must deliver; and
//! `icx_uring::unavailable()`, the probe the other tests skip on, must say
//! why.
#![cfg(target_os = "linux")]

use icx_core::Backend;
use icx_testkit::sock::recv_n;
use icx_udp::sys::{bpf_jump, bpf_stmt};
use icx_uring::{open, Opened, UringConfig};
use std::net::UdpSocket;
use std::time::Duration;

/// Installs, on the calling thread only, a seccomp filter failing
/// `io_uring_setup` with `errno` and allowing everything else.
fn deny_io_uring_setup(errno: u32) {
    let nr = libc::SYS_io_uring_setup as u32;
    let filter = [
        // A = seccomp_data.nr (offset 0)
        bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        bpf_jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr, 0, 1),
        bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | errno),
        bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; the filter program outlives the call (the
    // kernel copies it), and it only affects this thread.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn falls_back(errno: i32) {
    std::thread::spawn(move || {
        deny_io_uring_setup(errno as u32);
        // The probe tests use to skip sees the refusal too, with its reason.
        let why = icx_uring::unavailable().expect("probe reports io_uring refused");
        assert!(why.contains("io_uring_setup refused"), "{why}");
        let mut b = match open(UringConfig::new("127.0.0.1:0".parse().unwrap())).unwrap() {
            Opened::Sockets(b, why) => {
                eprintln!("errno {errno}: fell back: {why}");
                assert!(why.contains("io_uring_setup"), "{why}");
                b
            }
            Opened::Uring(_) => panic!("io_uring opened although io_uring_setup fails"),
        };
        let dst = b.local_addr();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Not icx frames: no byte reads as an urgent kind (1, 2) where the
        // urgent lane's steering looks, so they stay in order on one socket.
        for i in 0..10u8 {
            s.send_to(&[0x40 | i; 100], dst).unwrap();
        }
        let got = recv_n(&mut b, 10, Duration::from_secs(5));
        assert_eq!(got.len(), 10);
        for (i, (_, d)) in got.iter().enumerate() {
            assert_eq!(d, &vec![0x40 | i as u8; 100]);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn seccomp_eperm_falls_back_to_sockets() {
    falls_back(libc::EPERM);
}

#[test]
fn missing_syscall_enosys_falls_back_to_sockets() {
    falls_back(libc::ENOSYS);
}
