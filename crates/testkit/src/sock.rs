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

/// A multi-link backend pair passes frames on every link: a frame `a`
/// sends on link `k` to `b`'s link-`k` address leaves from `a`'s link-`k`
/// address and arrives tagged link `k`, on the urgent lane's socket as on
/// the normal one; a frame for a link `a` does not have is taken (counted
/// by the backend, never a panic) and nothing arrives for it. Both must
/// have the same number of links, bound to addresses that reach each other.
pub fn check_links<B: Backend>(a: &mut B, b: &mut B) {
    use icx_core::{Lane, Payload, TxFrame};
    let links = a.link_count();
    assert_eq!(links, b.link_count());
    let mut batch = TxBatch::new();
    for k in 0..links as u8 {
        for lane in [Lane::Normal, Lane::Urgent] {
            let dst = b.link_addr(k).expect("b has the link");
            // Not an icx frame: the urgent socket's steering leaves it on
            // the normal socket, whatever lane it is sent from.
            batch.push_back(TxFrame {
                dst,
                lane,
                link: k,
                header: header(&[b'L', k, lane as u8]),
                payload: Payload::EMPTY,
            });
        }
    }
    // One frame for a link `a` does not have, in the middle of the rest.
    batch.insert(
        1,
        TxFrame {
            dst: b.local_addr(),
            lane: Lane::Normal,
            link: links as u8,
            header: header(b"nope"),
            payload: Payload::EMPTY,
        },
    );
    let want = 2 * links + 1;
    assert_eq!(
        offer_all(a, &mut batch, Duration::from_micros(100), true),
        want
    );
    assert!(batch.is_empty());
    let start = Instant::now();
    let mut got: Vec<(u8, SocketAddr, Vec<u8>)> = Vec::new();
    while got.len() < 2 * links && start.elapsed() < Duration::from_secs(5) {
        b.wait(Some(Duration::from_millis(10))).unwrap();
        b.recv(usize::MAX, &mut |d| {
            got.push((d.link, d.src, d.data.to_vec()))
        })
        .unwrap();
    }
    got.sort();
    let mut expect: Vec<(u8, SocketAddr, Vec<u8>)> = (0..links as u8)
        .flat_map(|k| {
            let src = a.link_addr(k).unwrap();
            [Lane::Normal, Lane::Urgent].map(|lane| (k, src, vec![b'L', k, lane as u8]))
        })
        .collect();
    expect.sort();
    assert_eq!(got, expect);
    assert_eq!(a.link_addr(links as u8), None);
}
