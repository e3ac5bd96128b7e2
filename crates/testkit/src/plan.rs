//! The message plan: sizes and contents derived from (seed, index), and the
//! index written into each message, so the receiver checks contents and
//! exactly-once delivery without sharing any state with the sender.

use icx_core::{
    derive_seed, seeded_rng, BufferPool, Channel, ClusterId, Duration, Incarnation, NodeId,
    PoolConfig,
};
use icx_transport::{Config, Endpoint};
use rand::{Rng, RngCore};

/// The cluster every test node belongs to.
pub const CLUSTER: ClusterId = ClusterId(7);
/// Messages 0..TINY are 1..=TINY bytes long: too short to carry their index,
/// so the receiver recognises them by length (each length occurs once).
pub(crate) const TINY: u32 = 3;
/// Bytes of the little-endian index at the start of every longer message.
pub const INDEX_LEN: usize = 4;

/// The length of message `i`: at least half are exactly 8, 16 or 32 KiB;
/// the rest spread log-uniformly from 4 B to 64 KiB, so small messages are
/// as common as large ones.
pub fn msg_len(seed: u64, i: u32) -> usize {
    if i < TINY {
        return i as usize + 1;
    }
    let mut r = seeded_rng(derive_seed(seed, u64::from(i)));
    if r.random_bool(0.5) {
        [8 << 10, 16 << 10, 32 << 10][r.random_range(0..3)]
    } else {
        let exp = r.random_range(2.0..16.0f64);
        (2f64.powf(exp) as usize).clamp(INDEX_LEN, 64 << 10)
    }
}

/// Fills `out` with message `i`'s contents: index first, then seeded bytes.
pub fn fill_msg(seed: u64, i: u32, out: &mut [u8]) {
    if out.len() < INDEX_LEN {
        out.fill(i as u8 ^ 0xA5);
        return;
    }
    out[..INDEX_LEN].copy_from_slice(&i.to_le_bytes());
    seeded_rng(derive_seed(seed ^ 0xC0FFEE, u64::from(i))).fill_bytes(&mut out[INDEX_LEN..]);
}

/// Which message `data` claims to be, before its contents are checked.
pub fn msg_index(data: &[u8]) -> u32 {
    if data.len() < INDEX_LEN {
        data.len() as u32 - 1
    } else {
        u32::from_le_bytes(data[..INDEX_LEN].try_into().unwrap())
    }
}

/// Checks a delivered message against (seed, index); returns its index.
pub fn check_msg(seed: u64, data: &[u8], scratch: &mut Vec<u8>) -> u32 {
    let i = msg_index(data);
    check_msg_as(seed, i, data, scratch);
    i
}

/// Checks that `data` is exactly message `i` of the plan; `scratch` holds
/// the expected bytes.
pub(crate) fn check_msg_as(seed: u64, i: u32, data: &[u8], scratch: &mut Vec<u8>) {
    let len = msg_len(seed, i);
    assert_eq!(data.len(), len, "message {i} length");
    scratch.resize(len, 0);
    fill_msg(seed, i, scratch);
    assert!(data == &scratch[..], "message {i} contents differ");
}

/// A transport configuration for `node` of [`CLUSTER`]; deadlines are not
/// under test, and other builds share the machine.
pub fn transport_config(node: NodeId, incarnation: u32) -> Config {
    let mut cfg = Config::new(CLUSTER, node, Incarnation(incarnation));
    cfg.deadline = [Duration::from_secs(60); Channel::COUNT];
    cfg.max_rto = Duration::from_millis(200);
    cfg
}

/// An endpoint for `node` (first incarnation) with the default block pool.
pub fn endpoint(node: NodeId) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    Endpoint::new(transport_config(node, 1), pool)
}
