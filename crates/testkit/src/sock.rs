//! Small helpers for tests that drive a backend by hand.

use icx_core::{Backend, HeaderBuf, TxBatch};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A frame header holding exactly `tag`.
pub fn header(tag: &[u8]) -> HeaderBuf {
    let mut h = HeaderBuf::with_len(tag.len()).unwrap();
    h.as_mut_slice().copy_from_slice(tag);
    h
}

/// Receives until `n` datagrams arrived or `limit` passed.
pub fn recv_n<B: Backend>(b: &mut B, n: usize, limit: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && start.elapsed() < limit {
        b.wait(Some(Duration::from_millis(10))).unwrap();
        b.recv(usize::MAX, &mut |d| out.push((d.src, d.data.to_vec())))
            .unwrap();
    }
    out
}

/// Offers the whole batch, bounded in rounds; between rounds waits up to
/// `pause` and, with `reap`, takes completions (`recv` of nothing).
pub fn offer_all<B: Backend>(a: &mut B, batch: &mut TxBatch, pause: Duration, reap: bool) -> usize {
    let mut taken = 0;
    for _ in 0..10_000 {
        if batch.is_empty() {
            break;
        }
        taken += a.send(batch).unwrap();
        if !batch.is_empty() {
            a.wait(Some(pause)).unwrap();
            if reap {
                a.recv(0, &mut |_| {}).unwrap();
            }
        }
    }
    taken
}
