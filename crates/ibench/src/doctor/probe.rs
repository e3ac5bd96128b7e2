//! Active probes against a peer's `ibench server`, over its plain-UDP
//! baseline echo on PORT+1 (`server::run_baseline`), with the ibench
//! application header (`proto`): a ping is echoed at its own size, a block
//! request is answered by one datagram of the asked size. That is what a
//! plain UDP interconnect looks like to the host, so the host's counters
//! move as they would for one: a burst the socket buffer cannot hold
//! overflows it, a reply larger than the MTU arrives in IP fragments, a
//! full-size datagram with DF set is dropped by a smaller link.
//!
//! Every wait is bounded by a deadline and every loop by a count.

use crate::proto::{Header, Kind, HEADER_LEN};
use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long one request waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_millis(300);
/// Tries of a single-request probe before it counts as unanswered.
const TRIES: usize = 3;
/// Requests sent back to back in an overflow burst before a short pause
/// (so the peer's own receive buffer keeps up with the requests).
const BURST_CHUNK: usize = 32;

/// A UDP socket connected to one peer's baseline port.
#[derive(Debug)]
pub struct Prober {
    sock: UdpSocket,
    seq: u64,
    rx: Vec<u8>,
    /// SO_RCVBUF asked for and granted (the kernel's value, halved back:
    /// it doubles what it is given for bookkeeping).
    pub rcvbuf: (usize, usize),
}

/// What a burst got back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Burst {
    pub sent: u64,
    pub received: u64,
    pub reply_size: usize,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Datagrams the kernel dropped on this socket during the burst
    /// (`SK_MEMINFO_DROPS`).
    pub socket_drops: u64,
}

impl Burst {
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Why a single probe got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Yes,
    /// No reply within the tries.
    No,
    /// The kernel refused to send it (EMSGSIZE: larger than the local
    /// link's MTU with DF set), or another send error.
    Refused(String),
}

impl Prober {
    /// Opens the socket: DF set (`IP_PMTUDISC_DO`) so nothing it sends is
    /// fragmented, SO_RCVBUF asked as icx's socket backends ask (without
    /// the FORCE variant, so `net.core.rmem_max` caps it as it caps any
    /// unprivileged UDP socket).
    pub fn open(peer: SocketAddr, rcvbuf: usize) -> io::Result<Prober> {
        let bind: SocketAddr = if peer.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind)?;
        let fd = sock.as_raw_fd();
        let (level, opt, val) = icx_udp::sys::dont_fragment_opt(peer.is_ipv6());
        icx_udp::sys::set_int(fd, level, opt, val)?;
        let ask = rcvbuf.min(i32::MAX as usize / 2) as libc::c_int;
        icx_udp::sys::set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, ask)?;
        let granted = icx_udp::sys::get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)? as usize / 2;
        sock.connect(peer)?;
        Ok(Prober {
            sock,
            seq: 1,
            rx: vec![0u8; 65536],
            rcvbuf: (rcvbuf, granted),
        })
    }

    fn drops(&self) -> u64 {
        icx_udp::sys::meminfo(self.sock.as_raw_fd())
            .map(|m| u64::from(m[libc::SK_MEMINFO_DROPS as usize]))
            .unwrap_or(0)
    }

    fn request(&mut self, kind: Kind, len: usize, reply_size: usize) -> io::Result<u64> {
        let seq = self.seq;
        self.seq += 1;
        let mut h = Header::new(kind, seq, 0);
        h.reply_size = reply_size as u32;
        let mut buf = vec![0u8; len.max(HEADER_LEN)];
        h.write(&mut buf);
        self.sock.send(&buf)?;
        Ok(seq)
    }

    /// Receives one reply until `deadline`: (seq, bytes), or `None`.
    fn recv_until(&mut self, deadline: Instant) -> Option<(u64, usize)> {
        // Bounded: each pass either returns or consumes a datagram, and
        // the deadline ends it.
        for _ in 0..100_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.sock.set_read_timeout(Some(left));
            match self.sock.recv(&mut self.rx) {
                Ok(n) => {
                    if let Some(h) = Header::parse(&self.rx[..n]) {
                        if matches!(h.kind, Kind::Pong | Kind::Block) {
                            return Some((h.seq, n));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                // ICMP errors (port unreachable) surface here: keep waiting.
                Err(_) => {}
            }
        }
        None
    }

    /// One request, answered or not within [`TRIES`] x [`ANSWER_WAIT`].
    pub fn ask(&mut self, kind: Kind, len: usize, reply_size: usize) -> Answer {
        for _ in 0..TRIES {
            let seq = match self.request(kind, len, reply_size) {
                Ok(s) => s,
                Err(e) => return Answer::Refused(e.to_string()),
            };
            let deadline = Instant::now() + ANSWER_WAIT;
            while let Some((s, _)) = self.recv_until(deadline) {
                if s == seq {
                    return Answer::Yes;
                }
            }
        }
        Answer::No
    }

    /// A ping sent with this IP TTL (hop limit), the socket's default
    /// restored after.
    pub fn ask_with_ttl(&mut self, ttl: u32) -> Answer {
        let old = self.sock.ttl().unwrap_or(64);
        if let Err(e) = self.sock.set_ttl(ttl) {
            return Answer::Refused(e.to_string());
        }
        let a = self.ask(Kind::Ping, HEADER_LEN, 0);
        let _ = self.sock.set_ttl(old);
        a
    }

    /// `count` block requests for `reply_size`-byte replies sent without
    /// reading (in chunks of [`BURST_CHUNK`] a millisecond apart), then
    /// the replies read until `quiet` passes without one: the burst
    /// lands in the socket buffer at once, as a gc burst does.
    pub fn overflow_burst(&mut self, count: usize, reply_size: usize, quiet: Duration) -> Burst {
        let drops0 = self.drops();
        let t0 = Instant::now();
        let first = self.seq;
        let mut b = Burst {
            reply_size,
            ..Burst::default()
        };
        for i in 0..count {
            if self.request(Kind::BlockReq, HEADER_LEN, reply_size).is_ok() {
                b.sent += 1;
            }
            if i % BURST_CHUNK == BURST_CHUNK - 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Let the replies pile up in the socket buffer before reading.
        std::thread::sleep(Duration::from_millis(50));
        let mut seen = HashSet::new();
        let end = Instant::now() + quiet * 20;
        while (seen.len() as u64) < b.sent && Instant::now() < end {
            let Some((s, n)) = self.recv_until(Instant::now() + quiet) else {
                break;
            };
            if s >= first && s < self.seq && seen.insert(s) {
                b.bytes += n as u64;
            }
        }
        b.received = seen.len() as u64;
        b.elapsed = t0.elapsed();
        b.socket_drops = self.drops().saturating_sub(drops0);
        b
    }

    /// Block requests with at most `window` outstanding, until `count`
    /// were sent or `limit` passed; an answer not back within
    /// [`ANSWER_WAIT`] is given up (its slot refilled).
    pub fn windowed(
        &mut self,
        count: usize,
        reply_size: usize,
        window: usize,
        limit: Duration,
    ) -> Burst {
        let drops0 = self.drops();
        let t0 = Instant::now();
        let end = t0 + limit;
        let mut b = Burst {
            reply_size,
            ..Burst::default()
        };
        let mut outstanding: Vec<(u64, Instant)> = Vec::with_capacity(window);
        let mut last = t0;
        // Bounded by `end` (each pass waits at most ANSWER_WAIT) and by
        // the count of sends.
        while Instant::now() < end {
            let now = Instant::now();
            outstanding.retain(|(_, at)| now.duration_since(*at) < ANSWER_WAIT);
            while outstanding.len() < window && (b.sent as usize) < count {
                match self.request(Kind::BlockReq, HEADER_LEN, reply_size) {
                    Ok(s) => {
                        b.sent += 1;
                        outstanding.push((s, Instant::now()));
                    }
                    Err(_) => break,
                }
            }
            if outstanding.is_empty() {
                break;
            }
            let wait = (Instant::now() + ANSWER_WAIT / 4).min(end);
            if let Some((s, n)) = self.recv_until(wait) {
                if let Some(i) = outstanding.iter().position(|(q, _)| *q == s) {
                    outstanding.swap_remove(i);
                    b.received += 1;
                    b.bytes += n as u64;
                    last = Instant::now();
                }
            }
        }
        b.elapsed = last.duration_since(t0).max(Duration::from_micros(1));
        b.socket_drops = self.drops().saturating_sub(drops0);
        b
    }
}

/// Scheduler latency seen by a timer wakeup: how late each of `n` sleeps
/// of `period` woke (p50, p99, max), bounded by `limit` overall.
pub fn timer_lateness(
    n: usize,
    period: Duration,
    limit: Duration,
) -> (Duration, Duration, Duration, usize) {
    let t0 = Instant::now();
    let mut late: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        if t0.elapsed() > limit {
            break;
        }
        let s = Instant::now();
        std::thread::sleep(period);
        late.push(s.elapsed().saturating_sub(period));
    }
    late.sort();
    let at = |q: f64| {
        late.get(((late.len() as f64 * q) as usize).min(late.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (
        at(0.5),
        at(0.99),
        late.last().copied().unwrap_or_default(),
        late.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_probe_is_bounded() {
        let t = Instant::now();
        let (p50, p99, max, n) =
            timer_lateness(1000, Duration::from_millis(1), Duration::from_millis(60));
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(n > 0 && n < 1000, "{n}");
        assert!(p50 <= p99 && p99 <= max);
    }

    #[test]
    fn unanswered_probe_gives_up() {
        // A bound port that never answers: loopback only.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Prober::open(silent.local_addr().unwrap(), 1 << 20).unwrap();
        assert!(p.rcvbuf.1 > 0);
        let t = Instant::now();
        assert_eq!(p.ask(Kind::Ping, HEADER_LEN, 0), Answer::No);
        assert!(t.elapsed() < ANSWER_WAIT * (TRIES as u32 + 1));
        let b = p.windowed(10, 100, 4, Duration::from_millis(400));
        assert_eq!(b.received, 0);
        assert!(b.sent >= 4);
    }
}
