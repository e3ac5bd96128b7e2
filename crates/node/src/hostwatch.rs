//! The host's own UDP/IP counters while the node runs (issue 15 §3): the
//! ones that mean this host lost or refused datagrams, whatever protocol
//! they were for (`icx_udp::host::LOSS_COUNTERS`: receive-buffer
//! overflows, checksum errors, reassembly failures, backlog drops). INFO
//! interconnect shows them as deltas since the node started, next to icx's
//! own lost/retransmitted/corrupt/rejected; and when one that `ibench
//! doctor` would call FAIL climbs while the node runs, the node writes an
//! alert (`ICX-1801`), at most once per counter per [`REPEAT`].
//!
//! The counters are those of the node's network namespace.

use icx_membership::Alert;
use icx_udp::host::{self, Counters, LOSS_COUNTERS};
use std::time::{Duration, Instant};

/// How often the counters are read.
pub const LOOK: Duration = Duration::from_secs(1);
/// Least time between two alerts about one counter.
pub const REPEAT: Duration = Duration::from_secs(60);

/// The counters whose climbing is FAIL-class (`ibench doctor`), with what
/// to say and do.
const FAIL_CLASS: [(&str, &str, &str); 7] = [
    (
        "Udp.RcvbufErrors",
        "UDP receive buffer overflows",
        "raise net.core.rmem_max (hw/sysctl.sh) and look for CPU starvation",
    ),
    (
        "Udp6.Udp6RcvbufErrors",
        "UDP/IPv6 receive buffer overflows",
        "raise net.core.rmem_max (hw/sysctl.sh) and look for CPU starvation",
    ),
    (
        "Udp.SndbufErrors",
        "UDP send buffer overflows",
        "raise net.core.wmem_max (hw/sysctl.sh)",
    ),
    (
        "Udp.InCsumErrors",
        "UDP checksum errors",
        "check cables, NICs and switch ports; try checksum offload off",
    ),
    (
        "Ip.ReasmFails",
        "IP reassembly failures",
        "raise net.ipv4.ipfrag_high_thresh (hw/sysctl.sh)",
    ),
    (
        "Ip.ReasmTimeout",
        "IP reassembly timeouts",
        "raise net.ipv4.ipfrag_high_thresh; look for loss and CPU starvation",
    ),
    (
        "Softnet.Dropped",
        "packets dropped at the input backlog",
        "raise net.core.netdev_max_backlog (hw/sysctl.sh)",
    ),
];

#[derive(Debug)]
pub struct HostWatch {
    start: Counters,
    last: Counters,
    /// Counters read by the reader thread, one look a [`LOOK`] (reading
    /// the `/proc` files takes ~0.2 ms, kept off the node's loop).
    looks: Option<crossbeam_channel::Receiver<Counters>>,
    /// When each FAIL-class counter was last alerted about.
    alerted: [Option<Instant>; FAIL_CLASS.len()],
}

impl HostWatch {
    /// Reads the counters once (the start) and starts the reader thread,
    /// which ends at its next look after the watch is dropped.
    pub fn new() -> HostWatch {
        let c = host::read_counters();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let looks = std::thread::Builder::new()
            .name("icx-hostwatch".into())
            .spawn(move || loop {
                std::thread::sleep(LOOK);
                match tx.try_send(host::read_counters()) {
                    Ok(()) | Err(crossbeam_channel::TrySendError::Full(_)) => {}
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
                }
            })
            .map(|_| rx)
            .map_err(|e| tracing::warn!("host counters not watched: cannot start a thread: {e}"))
            .ok();
        HostWatch {
            start: c.clone(),
            last: c,
            looks,
            alerted: [None; FAIL_CLASS.len()],
        }
    }

    /// Takes the reader's latest look, if any, and returns an alert for
    /// each FAIL-class counter that climbed since the one before (and was
    /// not alerted about within [`REPEAT`]).
    pub fn poll(&mut self, now: Instant) -> Vec<Alert> {
        let Some(cur) = self.looks.as_ref().and_then(|r| r.try_recv().ok()) else {
            return Vec::new();
        };
        let out = self.judge(&cur, now);
        self.last = cur;
        out
    }

    fn judge(&mut self, cur: &Counters, now: Instant) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, (key, what, remedy)) in FAIL_CLASS.iter().enumerate() {
            let d = host::delta(&self.last, cur, key);
            if d == 0 || self.alerted[i].is_some_and(|t| now.duration_since(t) < REPEAT) {
                continue;
            }
            self.alerted[i] = Some(now);
            let text = format!(
                "ICX-1801: host {what}: {key} +{d} in the last second, {} since the node started: {remedy} (`ibench doctor` names the cause)",
                host::delta(&self.start, cur, key)
            );
            out.push(Alert {
                code: "ICX-1801",
                text,
            });
        }
        out
    }

    /// `(name, delta since start)` of each of [`LOSS_COUNTERS`], as of the
    /// latest look (at most a [`LOOK`] old).
    pub fn since_start(&self) -> Vec<(&'static str, u64)> {
        LOSS_COUNTERS
            .iter()
            .map(|(key, name)| (*name, host::delta(&self.start, &self.last, key)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(v: &[(&str, u64)]) -> Counters {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn climbing_fail_class_counters_alert_once_per_repeat() {
        let t0 = Instant::now();
        let base = counters(&[
            ("Udp.RcvbufErrors", 10),
            ("Udp.InCsumErrors", 0),
            ("Udp.InErrors", 5),
        ]);
        let mut w = HostWatch {
            start: base.clone(),
            last: base,
            looks: None,
            alerted: [None; FAIL_CLASS.len()],
        };
        // InErrors alone is not FAIL-class; nothing moved otherwise.
        let same = counters(&[
            ("Udp.RcvbufErrors", 10),
            ("Udp.InCsumErrors", 0),
            ("Udp.InErrors", 9),
        ]);
        assert!(w.judge(&same, t0).is_empty());
        let up = counters(&[
            ("Udp.RcvbufErrors", 310),
            ("Udp.InCsumErrors", 2),
            ("Udp.InErrors", 9),
        ]);
        let a = w.judge(&up, t0);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(
            a[0].text
                .starts_with("ICX-1801: host UDP receive buffer overflows: Udp.RcvbufErrors +300"),
            "{}",
            a[0].text
        );
        assert!(a[0].text.contains("300 since the node started"));
        assert!(a[1].text.contains("UDP checksum errors"));
        w.last = up;
        // Climbing again soon after: no new alert until REPEAT passed.
        let more = counters(&[("Udp.RcvbufErrors", 400), ("Udp.InCsumErrors", 2)]);
        assert!(w.judge(&more, t0 + Duration::from_secs(5)).is_empty());
        let a = w.judge(&more, t0 + REPEAT + Duration::from_secs(1));
        assert_eq!(a.len(), 1);
        assert!(
            a[0].text.contains("+90") && a[0].text.contains("390 since"),
            "{}",
            a[0].text
        );
    }

    #[test]
    fn a_counter_going_back_is_not_a_climb() {
        let t0 = Instant::now();
        let mut w = HostWatch {
            start: counters(&[("Udp.RcvbufErrors", 10)]),
            last: counters(&[("Udp.RcvbufErrors", 10)]),
            looks: None,
            alerted: [None; FAIL_CLASS.len()],
        };
        assert!(w
            .judge(&counters(&[("Udp.RcvbufErrors", 0)]), t0)
            .is_empty());
        assert!(w.judge(&counters(&[]), t0).is_empty());
    }

    #[test]
    fn the_reader_thread_delivers_looks_and_deltas_cover_every_loss_counter() {
        let mut w = HostWatch::new();
        let s = w.since_start();
        assert_eq!(s.len(), LOSS_COUNTERS.len());
        assert!(s.iter().any(|(n, _)| *n == "udp_rcvbuf_errors"));
        // The first look arrives after about LOOK (bounded wait).
        let t = Instant::now();
        let rx = w.looks.clone().expect("reader thread");
        let look = rx.recv_timeout(LOOK * 5).expect("a look within 5 s");
        assert!(t.elapsed() >= LOOK / 2);
        assert!(look.contains_key("Udp.RcvbufErrors"));
        // Nothing new right after: poll returns at once.
        let t = Instant::now();
        assert!(w.poll(t).is_empty());
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
