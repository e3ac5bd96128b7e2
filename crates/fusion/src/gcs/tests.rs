//! Hostile input: whatever a peer sends, in any order, a node never
//! panics (every message is checked against its own state first).

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
