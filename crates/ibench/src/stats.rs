//! Latency histograms and what a run measured.

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

const MAX_NS: u64 = 100_000_000_000;

/// A latency histogram in nanoseconds (1 ns to 100 s, 3 significant digits).
pub fn new_hist() -> Histogram<u64> {
    // Cannot fail: constant bounds within hdrhistogram's limits.
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, ns: u64) {
    let _ = h.record(ns.clamp(1, MAX_NS));
}

/// Percentiles and moments in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Rtt {
    pub count: u64,
    pub min: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub p99999: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl Rtt {
    pub fn from_hist(h: &Histogram<u64>) -> Rtt {
        if h.is_empty() {
            return Rtt::default();
        }
        let q = |p: f64| us(h.value_at_quantile(p));
        Rtt {
            count: h.len(),
            min: us(h.min()),
            p25: q(0.25),
            p50: q(0.5),
            p75: q(0.75),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            p99999: q(0.99999),
            max: us(h.max()),
            mean: h.mean() / 1e3,
            stddev: h.stdev() / 1e3,
        }
    }

    /// (label, percentile, value) rows from max down to min, sockperf order.
    pub fn rows(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("99.999", self.p99999),
            ("99.990", self.p9999),
            ("99.900", self.p999),
            ("99.000", self.p99),
            ("90.000", self.p90),
            ("75.000", self.p75),
            ("50.000", self.p50),
            ("25.000", self.p25),
        ]
    }
}

/// Per-second latency histograms, kept compressed for the `--hlog` file.
#[derive(Debug, Default)]
pub struct Intervals {
    /// (start since the measured phase began, length, V2+deflate bytes)
    pub items: Vec<(Duration, Duration, Vec<u8>)>,
}

impl Intervals {
    pub fn push(&mut self, start: Duration, len: Duration, h: &Histogram<u64>) {
        let mut buf = Vec::new();
        if V2DeflateSerializer::new().serialize(h, &mut buf).is_ok() {
            self.items.push((start, len, buf));
        }
    }

    /// Writes an HdrHistogram interval log (values in ns; the max column
    /// is divided by 1000, i.e. in microseconds).
    pub fn write_log(
        path: &std::path::Path,
        comment: &str,
        parts: &[(Option<String>, &Intervals)],
    ) -> std::io::Result<()> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use hdrhistogram::serialization::V2Serializer;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut ser = V2Serializer::new();
        let now = std::time::SystemTime::now();
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .add_comment("latency values recorded in nanoseconds; Interval_Max in microseconds")
            .with_start_time(now)
            .with_base_time(now)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut ser)?;
        let mut de = Deserializer::new();
        for (tag, iv) in parts {
            let tag = tag.as_deref().and_then(Tag::new);
            for (start, len, bytes) in &iv.items {
                let h: Histogram<u64> = de
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                w.write_histogram(&h, *start, *len, tag)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
        }
        drop(w);
        std::io::Write::flush(&mut out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_ordered_and_in_microseconds() {
        let mut h = new_hist();
        for i in 1..=1000u64 {
            record(&mut h, i * 1000);
        }
        let r = Rtt::from_hist(&h);
        assert_eq!(r.count, 1000);
        assert!((r.min - 1.0).abs() < 0.01);
        assert!(r.p25 <= r.p50 && r.p50 <= r.p99 && r.p99 <= r.max);
        assert!((r.p50 - 500.0).abs() < 1.0, "{}", r.p50);
        assert!(r.stddev > 0.0);
        assert_eq!(Rtt::from_hist(&new_hist()).count, 0);
    }
}
