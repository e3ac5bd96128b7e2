//! An endpoint with a cluster key fed arbitrary datagrams: it never panics,
//! nothing unauthenticated is delivered, and a frame that was sealed under
//! the key and then changed in any way is refused.
//!
//! The first input byte picks a mode. Top bit clear: the rest is fed raw.
//! Top bit set: a real sealed frame (a data frame carrying the rest as
//! payload, authenticated or encrypted by bit 0x40) has bytes of the input
//! XORed into it at input-chosen offsets; unless nothing changed, the
//! endpoint must refuse it. Either way the untouched sealed frame must then
//! still be accepted once, and never twice (the replay window).
#![no_main]

use icx_core::{BufferPool, Channel, ClusterId, Incarnation, Instant, NodeId, PoolConfig};
use icx_transport::{Config, Endpoint, Event, PeerConfig};
use icx_wire::{Cipher, ClusterKey, KeyId, Keyring};
use libfuzzer_sys::fuzz_target;

fn endpoint(node: u16, peer: u16, encrypt: bool) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(16 << 10, 64)).expect("pool");
    let mut c = Config::new(ClusterId(9), NodeId(node), Incarnation(3));
    let key = ClusterKey::from_bytes([0x5c; 32]).expect("key");
    c.auth = Some(Keyring::new(KeyId(1), key, Cipher::Aes256Gcm, encrypt));
    let mut e = Endpoint::new(c, pool);
    e.add_peer(PeerConfig::new(NodeId(peer), 1500))
        .expect("peer");
    e
}

fn delivered(e: &mut Endpoint) -> usize {
    std::iter::from_fn(|| e.poll_event())
        .filter(|ev| matches!(ev, Event::Delivered { .. }))
        .count()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::from_nanos(1_000_000);
    let encrypt = mode & 0x40 != 0;
    let mut rx = endpoint(2, 1, encrypt);
    if mode & 0x80 == 0 {
        let _ = rx.handle_datagram(now, rest);
        assert_eq!(delivered(&mut rx), 0, "raw bytes delivered under a key");
        return;
    }
    let mut tx = endpoint(1, 2, encrypt);
    let payload: Vec<u8> = rest.iter().copied().take(1000).collect();
    if tx
        .send_bytes(now, NodeId(2), Channel::Control, &payload)
        .is_err()
    {
        return;
    }
    let sealed = std::iter::from_fn(|| tx.poll_transmit(now))
        .map(|t| {
            let mut d = t.header.as_slice().to_vec();
            d.extend_from_slice(t.payload.as_slice());
            d
        })
        .find(|d| d.get(3) == Some(&1));
    let Some(sealed) = sealed else { return };
    // Changes: pairs of (offset, xor) from the input's tail.
    let mut changed = sealed.clone();
    for pair in rest.chunks_exact(2).rev().take(8) {
        let at = usize::from(pair[0]) * changed.len() / 256;
        changed[at] ^= pair[1];
    }
    if changed != sealed {
        assert_eq!(
            rx.handle_datagram(now, &changed),
            None,
            "a changed frame accepted"
        );
        assert_eq!(delivered(&mut rx), 0);
    }
    assert_eq!(rx.handle_datagram(now, &sealed), Some(NodeId(1)));
    assert_eq!(rx.handle_datagram(now, &sealed), None, "a replay accepted");
    assert_eq!(delivered(&mut rx), 1);
});
