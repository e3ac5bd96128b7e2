//! Hostile input: whatever a peer sends, in any order, a node never
//! panics (every message is checked against its own state first); and
//! message-level cases of a reconfiguration the random runs found.

use super::{Config, Fusion};
use crate::msg::{Access, Msg};
use icx_core::{BufferPool, Channel, Duration, Instant, NodeId, PoolConfig};
use icx_transport::protocol::{HostEvent, Protocol};
use icx_transport::Event;
use proptest::prelude::*;

fn deliver(f: &mut Fusion, pool: &BufferPool, now: Instant, peer: u16, ch: Channel, b: &[u8]) {
    let Some(data) = pool.alloc_from(b) else {
        return;
    };
    let event = Event::Delivered {
        peer: NodeId(peer),
        channel: ch,
        msg_id: 0,
        data,
    };
    f.handle_event(now, HostEvent::Transport { event, tag: 0 });
    while f.poll_output(now).is_some() {}
    while f.poll_io(now).is_some() {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn hostile_messages_never_panic(
        msgs in proptest::collection::vec((1u16..5, crate::msg::tests::msg()), 1..60),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let pool = BufferPool::new(&PoolConfig::small(16 << 10, 256)).unwrap();
        let mut cfg = Config::new(NodeId(1));
        cfg.datafile_blocks = 64;
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let mut f = Fusion::new(cfg, pool.clone(), &members);
        let mut now = Instant::ZERO;
        f.acquire(now, 1, 1, 0, Access::Exclusive);
        f.acquire(now, 2, 1, 17, Access::Current);
        f.scan(now, 3, 1, 32, 8);
        for (i, (peer, m)) in msgs.iter().enumerate() {
            // Aim some at the blocks in play.
            let mut m = m.clone();
            if i % 2 == 0 {
                if let Msg::Grant { file, block, .. } | Msg::Fwd { file, block, .. }
                | Msg::Inval { file, block, .. } | Msg::Req { file, block, .. } = &mut m {
                    *file = 1;
                    *block %= 64;
                }
            }
            deliver(&mut f, &pool, now, *peer, Channel::Control, &m.encode(0));
            now += Duration::from_millis(100);
            if f.poll_timeout().is_some_and(|t| t <= now) {
                f.handle_timeout(now);
            }
        }
        deliver(&mut f, &pool, now, 2, Channel::Control, &junk);
        deliver(&mut f, &pool, now, 2, Channel::Block, &junk);
        let mut img = vec![0u8; 8192];
        img[..junk.len()].copy_from_slice(&junk);
        deliver(&mut f, &pool, now, 3, Channel::Block, &img);
        while f.poll_ready().is_some() {}
    }
}

/// Delivers `m` (in `epoch`) from `peer`; the control messages sent back.
fn exchange(
    f: &mut Fusion,
    pool: &BufferPool,
    now: Instant,
    peer: u16,
    epoch: u64,
    m: &Msg,
) -> Vec<Msg> {
    let Some(data) = pool.alloc_from(&m.encode(epoch)) else {
        return Vec::new();
    };
    let event = Event::Delivered {
        peer: NodeId(peer),
        channel: Channel::Control,
        msg_id: 0,
        data,
    };
    f.handle_event(now, HostEvent::Transport { event, tag: 0 });
    let mut out = Vec::new();
    while let Some(o) = f.poll_output(now) {
        if let icx_transport::protocol::Output::Send {
            channel: Channel::Control,
            data,
            ..
        } = o
        {
            if let Ok((_, m)) = Msg::decode(&data) {
                out.push(m);
            }
        }
    }
    out
}

/// A request refused during a reconfiguration stays refused: a resend of
/// it after the rebuild (in flight, or because the refusal was lost) must
/// not start a conversion its requester gave up (found by the crash runs).
#[test]
fn a_refused_request_is_refused_again_after_the_rebuild() {
    const RECON_5: u64 = 11; // super::wire_epoch(5, true)
    assert_eq!(RECON_5, super::wire_epoch(5, true));
    use crate::io::{IoCompletion, IoData};
    let pool = BufferPool::new(&PoolConfig::small(16 << 10, 256)).unwrap();
    let mut cfg = Config::new(NodeId(1));
    cfg.datafile_blocks = 64;
    let mut f = Fusion::new(cfg, pool.clone(), &[NodeId(1), NodeId(2), NodeId(3)]);
    let now = Instant::ZERO;
    f.set_members(now, 5, &[NodeId(1), NodeId(2)]);
    while f.poll_output(now).is_some() {}
    let b = (0..64)
        .find(|&b| f.master_of(1, b) == NodeId(1))
        .expect("a block node 1 masters");
    let req = |rid| Msg::Req {
        rid,
        file: 1,
        block: b,
        access: Access::Exclusive,
    };
    let refused = |out: &[Msg], r: u64| {
        out.iter().any(|m| {
            matches!(m, Msg::Error { rid, code: crate::msg::ErrorCode::Recovering, .. } if *rid == r)
        })
    };
    // Rebuilding (node 2's report not in): refused.
    assert!(refused(
        &exchange(&mut f, &pool, now, 2, RECON_5, &req(7)),
        7
    ));
    // Node 2's report and ack; the redo logs (empty) read: rebuilt.
    let report = Msg::Report {
        chunk: 0,
        chunks: 1,
        entries: vec![],
    };
    exchange(&mut f, &pool, now, 2, RECON_5, &report);
    exchange(
        &mut f,
        &pool,
        now,
        2,
        RECON_5,
        &Msg::ReportAck { chunks: 1 },
    );
    for _ in 0..10 {
        while let Some(r) = f.poll_io(now) {
            let data = match r.op {
                crate::io::IoOp::RedoCheckpointRead { .. } => IoData::Lsn(0),
                _ => IoData::Bytes(Vec::new()),
            };
            let c = IoCompletion {
                id: r.id,
                result: Ok(data),
            };
            f.handle_io(now, c);
        }
    }
    assert!(f.reconfiguration().is_none(), "reconfigured");
    // The same request again: refused again, nothing started.
    let out = exchange(&mut f, &pool, now, 2, RECON_5, &req(7));
    assert!(refused(&out, 7), "{out:?}");
    assert!(f.directory(1, b).is_none_or(|d| !d.busy));
    // A new request is served (a grant: nobody holds the block).
    let out = exchange(&mut f, &pool, now, 2, RECON_5, &req(8));
    assert!(
        out.iter().any(|m| matches!(m, Msg::Grant { rid: 8, .. })),
        "{out:?}"
    );
}
