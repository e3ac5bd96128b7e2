//! How the plain-UDP baseline waits for a datagram: in the wait mode icx
//! runs in, so a baseline compares like with like (a spinning icx against
//! a sleeping UDP socket measures the wait, not the transport).

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// icx's wait modes, for a kernel UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpWait {
    /// Sleep in `recvfrom` at once (icx `--spin-us 0`; sockperf's default).
    Block,
    /// Poll a non-blocking socket until the datagram or the timeout comes
    /// (icx `--busy-poll`; sockperf `--nonblocked`).
    Spin,
    /// Poll this long, then sleep (icx's default, a spin of `--spin-us`).
    SpinThenSleep(Duration),
}

impl UdpWait {
    /// The mode matching icx's `--busy-poll` and `--spin-us`.
    pub fn new(busy_poll: bool, spin: Duration) -> UdpWait {
        match (busy_poll, spin.is_zero()) {
            (true, _) => UdpWait::Spin,
            (false, true) => UdpWait::Block,
            (false, false) => UdpWait::SpinThenSleep(spin),
        }
    }

    /// What `--spin-us` this is, for the report (0 for blocking or spinning).
    pub fn spin_us(self) -> u64 {
        match self {
            UdpWait::SpinThenSleep(d) => d.as_micros() as u64,
            _ => 0,
        }
    }
}

/// A UDP socket that receives in a [`UdpWait`] mode. Sends go out on the
/// same socket, non-blocking while it polls (a full send buffer is then an
/// error the caller counts, as a blocking send would have waited).
#[derive(Debug)]
pub struct WaitSocket {
    sock: UdpSocket,
    wait: UdpWait,
    /// Whether the socket is in non-blocking mode now.
    nonblocking: bool,
    /// The read timeout set last, so an unchanged one costs no syscall.
    timeout: Option<Duration>,
    /// Sleep at once after this long without a datagram (see
    /// [`WaitSocket::idle_sleep`]).
    idle_sleep: Option<Duration>,
    last_rx: Instant,
}

impl WaitSocket {
    pub fn new(sock: UdpSocket, wait: UdpWait) -> io::Result<WaitSocket> {
        let mut w = WaitSocket {
            sock,
            wait,
            nonblocking: false,
            timeout: None,
            idle_sleep: None,
            last_rx: Instant::now(),
        };
        w.set_nonblocking(wait != UdpWait::Block)?;
        Ok(w)
    }

    /// Stop spinning once nothing came for `after` (and until the first
    /// datagram): a server's baseline thread shares its CPU with the icx
    /// server, and must not spin while icx is being measured.
    pub fn idle_sleep(mut self, after: Duration) -> WaitSocket {
        self.idle_sleep = Some(after);
        let now = Instant::now();
        self.last_rx = now.checked_sub(after).unwrap_or(now);
        self
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// One datagram within `timeout` (`Ok(None)` when none came); a sleep
    /// after a spin may overrun it by the spin, so the read timeout stays
    /// the same from call to call and costs no `setsockopt` each.
    pub fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let start = Instant::now();
        let idle = self
            .idle_sleep
            .is_some_and(|a| start.duration_since(self.last_rx) >= a);
        let spin = match self.wait {
            _ if idle => Duration::ZERO,
            UdpWait::Block => Duration::ZERO,
            UdpWait::Spin => timeout,
            UdpWait::SpinThenSleep(s) => s.min(timeout),
        };
        if !spin.is_zero() {
            let mut tries = 0u32;
            loop {
                match self.sock.recv_from(buf) {
                    Ok(x) => {
                        self.last_rx = Instant::now();
                        return Ok(Some(x));
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e),
                }
                tries = tries.wrapping_add(1);
                if tries.is_multiple_of(64) && start.elapsed() >= spin {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        if self.wait == UdpWait::Spin && !idle {
            return Ok(None);
        }
        // Sleep: a blocking receive.
        self.set_nonblocking(false)?;
        // A zero read timeout is an error in std: at least 1 µs.
        let t = Some(timeout.max(Duration::from_micros(1)));
        if self.timeout != t {
            self.sock.set_read_timeout(t)?;
            self.timeout = t;
        }
        let r = self.sock.recv_from(buf);
        if self.wait != UdpWait::Block {
            self.set_nonblocking(true)?;
        }
        match r {
            Ok(x) => {
                self.last_rx = Instant::now();
                Ok(Some(x))
            }
            Err(e) if would_block(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        if self.nonblocking != on {
            self.sock.set_nonblocking(on)?;
            self.nonblocking = on;
        }
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(wait: UdpWait) -> (WaitSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        (WaitSocket::new(a, wait).unwrap(), b)
    }

    #[test]
    fn modes_follow_icx_flags() {
        assert_eq!(UdpWait::new(true, Duration::ZERO), UdpWait::Spin);
        assert_eq!(UdpWait::new(true, Duration::from_micros(5)), UdpWait::Spin);
        assert_eq!(UdpWait::new(false, Duration::ZERO), UdpWait::Block);
        let s = Duration::from_micros(100);
        assert_eq!(UdpWait::new(false, s), UdpWait::SpinThenSleep(s));
        assert_eq!(UdpWait::SpinThenSleep(s).spin_us(), 100);
    }

    /// Every mode receives what was sent and times out, bounded, on
    /// nothing; the spinning ones leave the socket non-blocking for sends.
    #[test]
    fn every_mode_receives_and_times_out() {
        for wait in [
            UdpWait::Block,
            UdpWait::Spin,
            UdpWait::SpinThenSleep(Duration::from_micros(200)),
        ] {
            let (mut w, b) = pair(wait);
            let mut buf = [0u8; 64];
            let t0 = Instant::now();
            assert_eq!(
                w.recv_from(&mut buf, Duration::from_millis(20)).unwrap(),
                None,
                "{wait:?}"
            );
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(19), "{wait:?}: {took:?}");
            assert!(took < Duration::from_secs(2), "{wait:?}: {took:?}");
            b.send(b"hello").unwrap();
            let got = w.recv_from(&mut buf, Duration::from_secs(2)).unwrap();
            assert_eq!(got.map(|(n, _)| &buf[..n]), Some(&b"hello"[..]), "{wait:?}");
            assert_eq!(w.nonblocking, wait != UdpWait::Block, "{wait:?}");
        }
    }

    /// Idle past `idle_sleep`, a spinning socket sleeps: its wait costs
    /// next to no CPU; traffic makes it spin again.
    #[test]
    fn an_idle_spinner_sleeps() {
        let (w, b) = pair(UdpWait::Spin);
        let mut w = w.idle_sleep(Duration::from_millis(100));
        let mut buf = [0u8; 64];
        let cpu0 = crate::sys::thread_cpu_time();
        assert_eq!(
            w.recv_from(&mut buf, Duration::from_millis(50)).unwrap(),
            None
        );
        let spent = crate::sys::thread_cpu_time().saturating_sub(cpu0);
        assert!(
            spent < Duration::from_millis(25),
            "spun idle: {spent:?} of CPU"
        );
        b.send(b"x").unwrap();
        assert!(w
            .recv_from(&mut buf, Duration::from_secs(2))
            .unwrap()
            .is_some());
        // Just received: the next wait spins its whole timeout.
        let cpu0 = crate::sys::thread_cpu_time();
        assert_eq!(
            w.recv_from(&mut buf, Duration::from_millis(20)).unwrap(),
            None
        );
        let spent = crate::sys::thread_cpu_time().saturating_sub(cpu0);
        assert!(spent >= Duration::from_millis(5), "did not spin: {spent:?}");
    }
}
