//! Redundant interconnect links, simulated: a peer reached over two
//! networks keeps every message through a cut, a flapping link and a
//! narrower surviving link, and spreads by weight.

mod common;

use common::{tnode, tnode_links, TNode};
use icx_core::{Duration, Instant, NodeId};
use icx_sim::host::HostNode;
use icx_sim::{run_seeds, LinkConfig, Sim};
use icx_transport::{LinkConfig as Link, LinkMode, LinkState};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// A 200 Mbit/s network (so a stream lasts long enough to cut it) with
/// a switch buffer, a little jitter and loss.
fn net(mtu: usize) -> LinkConfig {
    LinkConfig::ideal(icx_wire::max_udp_payload(mtu, false))
        .with_latency(Duration::from_micros(50))
        .with_jitter(Duration::from_micros(10))
        .with_drop(0.005)
        .with_bandwidth(200_000_000)
        .with_queue_limit(512 << 10)
}

/// Two nodes streaming `n` blocks of `size` both ways over links of
/// these MTUs, in `mode`.
fn pair(seed: u64, mtus: &[usize], mode: LinkMode, n: usize, size: usize) -> Sim<HostNode<TNode>> {
    let links: Vec<Link> = mtus.iter().map(|&m| Link::new(m, false)).collect();
    pair_with(seed, &links, mode, n, size)
}

fn pair_with(
    seed: u64,
    links: &[Link],
    mode: LinkMode,
    n: usize,
    size: usize,
) -> Sim<HostNode<TNode>> {
    let cfg = |c: &mut icx_transport::Config| c.link_mode = mode;
    let mut sim = Sim::new(seed);
    let plan = vec![size; n];
    let mut a = tnode_links(seed, A, B, links, cfg);
    let mut b = tnode_links(seed, B, A, links, cfg);
    a.proto_mut().plan = plan.clone();
    a.proto_mut().peer_plan = plan.clone();
    b.proto_mut().plan = plan.clone();
    b.proto_mut().peer_plan = plan;
    sim.add_node(A, a);
    sim.add_node(B, b);
    for (i, l) in links.iter().enumerate() {
        sim.set_net_link(A, B, i as u8, net(l.mtu));
        sim.set_net_link(B, A, i as u8, net(l.mtu));
    }
    sim
}

fn acked(sim: &Sim<HostNode<TNode>>, n: NodeId) -> u64 {
    sim.node(n).proto().tally.acked
}

fn run_to_acked(sim: &mut Sim<HostNode<TNode>>, want: u64, limit: Duration) -> bool {
    sim.run_until_cond(limit, 50_000_000, |s| {
        acked(s, A) >= want && acked(s, B) >= want
    })
}

/// Runs until both nodes have sent everything and had it acked.
fn run_to_done(sim: &mut Sim<HostNode<TNode>>, limit: Duration) -> bool {
    sim.run_until_cond(limit, 200_000_000, |s| {
        s.node(A).proto().done_sending() && s.node(B).proto().done_sending()
    })
}

/// Both directions done, every message delivered once, intact, none lost.
fn assert_all_delivered(sim: &Sim<HostNode<TNode>>, n: usize, seed: u64) {
    for id in [A, B] {
        let t = &sim.node(id).proto().tally;
        assert!(t.bad.is_empty(), "seed {seed} node {id}: {:?}", t.bad);
        assert!(t.lost.is_empty(), "seed {seed} node {id} lost {:?}", t.lost);
        assert_eq!(t.delivered.len(), n, "seed {seed} node {id} delivered");
        assert!(sim.node(id).proto().done_sending(), "seed {seed} node {id}");
    }
    assert!(
        sim.mtu_violations().is_empty(),
        "seed {seed}: {:?}",
        &sim.mtu_violations()[..1]
    );
}

/// The longest time between consecutive acks at `n` after `from`.
fn longest_ack_gap(sim: &Sim<HostNode<TNode>>, n: NodeId, from: Instant) -> Duration {
    let t = &sim.node(n).proto().tally.ack_times;
    let mut prev = from;
    let mut gap = Duration::ZERO;
    for &at in t.iter().filter(|&&at| at >= from) {
        gap = gap.max(at - prev);
        prev = at;
    }
    gap
}

/// The active link is cut both ways mid-stream: the standby takes over
/// within the link timeout, nothing is lost, the failure is reported once
/// per side, and once the link heals and answers a run of keepalives the
/// traffic returns to it.
#[test]
fn active_link_cut_fails_over_without_loss_and_returns() {
    run_seeds(&[131, 132, 133, 134], |seed| {
        let n = 6000;
        let mut sim = pair(seed, &[1500, 1500], LinkMode::ActivePassive, n, 8192);
        assert!(run_to_acked(&mut sim, 800, Duration::from_secs(20)));
        for id in [A, B] {
            let l = sim
                .node(id)
                .endpoint()
                .link_stats(if id == A { B } else { A });
            assert!(l[0].frames_sent > 1000, "seed {seed}: {l:?}");
            // The standby carries keepalives (and their answers) only.
            assert!(l[1].frames_sent < 100, "seed {seed}: {l:?}");
        }
        let cut_at = sim.now();
        sim.partition_net(&[A], &[B], 0);
        // Two probe timeouts in, link 0 is suspect: until the link timeout
        // (300 ms) takes it out of service, new traffic goes by link 1 and
        // link 0 carries keepalives only.
        sim.run_for(Duration::from_millis(100));
        let sent = |s: &Sim<HostNode<TNode>>| s.node(A).endpoint().link_stats(B)[0].frames_sent;
        let at_100ms = sent(&sim);
        sim.run_for(Duration::from_millis(150));
        assert_eq!(
            sim.node(A).endpoint().link_stats(B)[0].state,
            LinkState::Up,
            "seed {seed}: down before the link timeout"
        );
        assert!(
            sent(&sim) - at_100ms <= 3,
            "seed {seed}: {} frames by the suspect link",
            sent(&sim) - at_100ms
        );
        assert!(run_to_acked(&mut sim, 2400, Duration::from_secs(20)));
        let gap = longest_ack_gap(&sim, A, cut_at);
        // What was in flight on the cut link goes again by the other at its
        // probe timeout, acks follow the data's link: a few round trips, not
        // the 300 ms link timeout.
        assert!(
            gap <= Duration::from_millis(60),
            "seed {seed}: failover gap {gap:?}"
        );
        for id in [A, B] {
            let peer = if id == A { B } else { A };
            let t = &sim.node(id).proto().tally;
            assert_eq!(
                t.link_events.iter().map(|e| (e.1, e.2)).collect::<Vec<_>>(),
                vec![(0, false)],
                "seed {seed} node {id}"
            );
            let l = sim.node(id).endpoint().link_stats(peer);
            assert_eq!(l[0].state, LinkState::Down, "seed {seed}");
            assert_eq!(l[0].downs, 1);
            assert!(l[1].frames_sent > 1000, "seed {seed}: {l:?}");
        }
        let healed_at = sim.now();
        sim.heal_net(0);
        assert!(sim.run_until_cond(Duration::from_secs(2), 50_000_000, |s| {
            s.node(A).endpoint().link_stats(B)[0].state == LinkState::Up
        }));
        let before = sim.node(A).endpoint().link_stats(B)[0].frames_sent;
        assert!(run_to_done(&mut sim, Duration::from_secs(60)));
        assert_all_delivered(&sim, n, seed);
        let t = &sim.node(A).proto().tally;
        let up = t.link_events.iter().find(|e| e.2).expect("link came back");
        // A run of 3 answered keepalives, 100 ms apart (a keepalive lost
        // to the net's 0.5 % drop restarts the run).
        assert!(
            up.0 - healed_at <= Duration::from_millis(800),
            "seed {seed}: readmitted after {:?}",
            up.0 - healed_at
        );
        let l = sim.node(A).endpoint().link_stats(B);
        assert_eq!(l[0].state, LinkState::Up);
        assert!(
            l[0].frames_sent > before + 500,
            "seed {seed}: traffic did not return to link 0: {l:?}"
        );
        println!("seed {seed}: failover gap {gap:?}");
    });
}

/// A link cut in one direction only (A to B on network 0): both sides
/// take it out of service (their keepalives or the answers die), nothing
/// is lost, and neither side's acks stall for the link timeout.
#[test]
fn one_way_cut_takes_the_link_down_on_both_sides() {
    run_seeds(&[141, 142], |seed| {
        let n = 2000;
        let mut sim = pair(seed, &[1500, 1500], LinkMode::ActivePassive, n, 8192);
        assert!(run_to_acked(&mut sim, 300, Duration::from_secs(20)));
        let cut_at = sim.now();
        sim.cut_net(A, B, 0);
        assert!(run_to_done(&mut sim, Duration::from_secs(60)));
        assert_all_delivered(&sim, n, seed);
        for id in [A, B] {
            let gap = longest_ack_gap(&sim, id, cut_at);
            println!("seed {seed} node {id}: longest ack gap {gap:?}");
            assert!(
                gap <= Duration::from_millis(60),
                "seed {seed} node {id}: {gap:?}"
            );
        }
        assert_eq!(
            sim.node(A).endpoint().link_stats(B)[0].state,
            LinkState::Down
        );
        assert_eq!(
            sim.node(B).endpoint().link_stats(A)[0].state,
            LinkState::Down
        );
    });
}

/// A link flapping (down and up every 500 ms for 10 s): nothing is lost;
/// damping keeps it from being readmitted on every short recovery, so the
/// link changes and retransmissions stay bounded.
#[test]
fn flapping_link_is_damped() {
    run_seeds(&[151, 152, 153], |seed| {
        let n = 6000;
        let mut sim = pair(seed, &[1500, 1500], LinkMode::ActivePassive, n, 8192);
        assert!(run_to_acked(&mut sim, 200, Duration::from_secs(20)));
        for i in 0..20 {
            if i % 2 == 0 {
                sim.partition_net(&[A], &[B], 0);
            } else {
                sim.heal_net(0);
            }
            sim.run_for(Duration::from_millis(500));
        }
        sim.heal_net(0);
        assert!(run_to_done(&mut sim, Duration::from_secs(120)));
        assert_all_delivered(&sim, n, seed);
        let t = &sim.node(A).proto().tally;
        let ups = t.link_events.iter().filter(|e| e.2).count();
        // 10 cuts; undamped, the link would come back after each of the
        // 500 ms heals (3 keepalives take 300 ms). Damped (runs of 3, 6,
        // 12, ... keepalives), it stays out after the first few.
        assert!(
            ups <= 4,
            "seed {seed}: readmitted {ups} times: {:?}",
            t.link_events
        );
        let s = sim.node(A).endpoint().peer_stats(B).unwrap().clone();
        assert!(
            s.retransmitted * 10 < s.frames_sent,
            "seed {seed}: {} of {} frames sent again",
            s.retransmitted,
            s.frames_sent
        );
    });
}

/// Both links cut longer than the deadline: the peer is unreachable as
/// with one link (messages lost at their deadline, none twice), and it
/// all resumes when a link heals.
#[test]
fn both_links_cut_is_a_partition() {
    run_seeds(&[161, 162], |seed| {
        let n = 2000;
        let short = |c: &mut icx_transport::Config| {
            c.deadline = [Duration::from_millis(500); icx_core::Channel::COUNT];
        };
        let links = [Link::new(1500, false), Link::new(1500, false)];
        let mut sim = Sim::new(seed);
        let plan = vec![8192; n];
        let mut a = tnode_links(seed, A, B, &links, short);
        let mut b = tnode_links(seed, B, A, &links, short);
        a.proto_mut().plan = plan.clone();
        b.proto_mut().peer_plan = plan;
        sim.add_node(A, a);
        sim.add_node(B, b);
        sim.set_default_link(net(1500));
        assert!(sim.run_until_cond(Duration::from_secs(20), 50_000_000, |s| acked(s, A) >= 300));
        sim.partition(&[A], &[B]);
        sim.run_for(Duration::from_secs(2));
        let t = &sim.node(A).proto().tally;
        assert!(
            !t.lost.is_empty(),
            "seed {seed}: nothing lost in a 2 s partition"
        );
        let l = sim.node(A).endpoint().link_stats(B);
        assert!(
            l.iter().all(|l| l.state == LinkState::Down),
            "seed {seed}: {l:?}"
        );
        sim.heal_net(1);
        sim.heal();
        assert!(
            sim.run_until_cond(Duration::from_secs(60), 100_000_000, |s| s
                .node(A)
                .proto()
                .done_sending())
        );
        let t = &sim.node(A).proto().tally;
        assert!(t.bad.is_empty(), "seed {seed}: {:?}", t.bad);
        let b = &sim.node(B).proto().tally;
        assert!(b.bad.is_empty(), "seed {seed}: {:?}", b.bad);
        // A message given up may still have arrived (only its acks lost).
        assert!(
            b.delivered.len() <= n && b.delivered.len() + t.lost.len() >= n,
            "seed {seed}: {} delivered, {} lost of {n}",
            b.delivered.len(),
            t.lost.len()
        );
    });
}

/// Links of MTU 1500 and 9000, spreading: each carries frames sized for
/// itself (the simulator refuses anything over a network's MTU), and
/// both carry traffic.
#[test]
fn links_of_different_mtu_carry_frames_sized_for_themselves() {
    run_seeds(&[171, 172], |seed| {
        let n = 3000;
        let mut sim = pair(seed, &[1500, 9000], LinkMode::Spread, n, 32 << 10);
        assert!(run_to_done(&mut sim, Duration::from_secs(60)));
        assert_all_delivered(&sim, n, seed);
        let l = sim.node(A).endpoint().link_stats(B);
        let per_frame = |l: &icx_transport::LinkStats| l.bytes_sent / l.frames_sent.max(1);
        assert!(
            l[0].frames_sent > 1000 && l[1].frames_sent > 300,
            "seed {seed}: {l:?}"
        );
        assert!(per_frame(&l[0]) <= 1472, "seed {seed}: {l:?}");
        // On average over its acks and keepalives too, link 1 sends frames
        // no 1500 link could carry (and none above 9000: no violations).
        assert!(per_frame(&l[1]) > 1472, "seed {seed}: {l:?}");
    });
}

/// The preferred link is the wide one (9000) and fails: messages cut for
/// it are cut again for the narrow one that is left, and all arrive once.
#[test]
fn wide_link_failing_recuts_onto_the_narrow_one() {
    run_seeds(&[181, 182, 183], |seed| {
        let n = 3000;
        let links = [
            Link {
                priority: 1,
                ..Link::new(9000, false)
            },
            Link::new(1500, false),
        ];
        let mut sim = pair_with(seed, &links, LinkMode::ActivePassive, n, 32 << 10);
        assert!(run_to_acked(&mut sim, 500, Duration::from_secs(20)));
        let l = sim.node(A).endpoint().link_stats(B);
        assert!(l[0].bytes_sent > 10 * l[1].bytes_sent, "seed {seed}: {l:?}");
        sim.partition_net(&[A], &[B], 0);
        assert!(run_to_done(&mut sim, Duration::from_secs(60)));
        assert_all_delivered(&sim, n, seed);
        let recut = sim.node(A).endpoint().peer_stats(B).unwrap().recut;
        assert!(recut > 0, "seed {seed}: nothing was cut again");
    });
}

/// Spreading follows the weights: on links of equal RTT that nothing
/// saturates (8 messages of 8 KiB outstanding: no congestion window
/// fills), a link weighted 3 carries three times the bytes of one
/// weighted 1; where the heavier link is also the faster one and the
/// traffic fills them, it still carries more.
#[test]
fn spreading_follows_weights() {
    run_seeds(&[191, 192], |seed| {
        let n = 3000;
        let links = [
            Link::new(1500, false),
            Link {
                weight: 3,
                ..Link::new(1500, false)
            },
        ];
        for saturated in [false, true] {
            let mut sim = pair_with(seed, &links, LinkMode::Spread, n, 8192);
            if !saturated {
                for id in [A, B] {
                    sim.node_mut(id).proto_mut().window = 8;
                }
            }
            for (from, to) in [(A, B), (B, A)] {
                let (slow, fast) = if saturated {
                    (net(1500), net(1500).with_bandwidth(600_000_000))
                } else {
                    let ideal = LinkConfig::ideal(icx_sim::MTU_IPV4_1500)
                        .with_latency(Duration::from_micros(50));
                    (ideal.clone(), ideal)
                };
                sim.set_net_link(from, to, 0, slow);
                sim.set_net_link(from, to, 1, fast);
            }
            assert!(run_to_done(&mut sim, Duration::from_secs(60)));
            assert_all_delivered(&sim, n, seed);
            let l = sim.node(A).endpoint().link_stats(B);
            let ratio = l[1].bytes_sent as f64 / l[0].bytes_sent.max(1) as f64;
            let want = if saturated { 1.2..10.0 } else { 2.4..3.6 };
            assert!(
                want.contains(&ratio),
                "seed {seed} saturated {saturated}: ratio {ratio}: {l:?}"
            );
        }
    });
}

/// One link: no keepalives, nothing new on the wire.
#[test]
fn single_link_peers_send_no_keepalives() {
    let seed = 201;
    let mut sim = Sim::new(seed);
    let plan = vec![8192; 200];
    let mut a = tnode(seed, A, 1, B, 1500, |_| {});
    let mut b = tnode(seed, B, 1, A, 1500, |_| {});
    a.proto_mut().plan = plan.clone();
    b.proto_mut().peer_plan = plan;
    sim.add_node(A, a);
    sim.add_node(B, b);
    sim.set_default_link(net(1500));
    assert!(
        sim.run_until_cond(Duration::from_secs(10), 10_000_000, |s| s
            .node(A)
            .proto()
            .done_sending())
    );
    sim.run_for(Duration::from_secs(2));
    let l = sim.node(A).endpoint().link_stats(B);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].keepalives_sent, 0);
    assert_eq!(l[0].state, LinkState::Up);
    assert!(l[0].frames_sent > 1000);
}

/// Spreading adds capacity: over two equal saturated links a stream
/// finishes in well under the time one link takes (virtual time), because
/// a link whose congestion window is full hands the next fragments to one
/// with room instead of holding the stream behind it.
#[test]
fn spreading_over_two_saturated_links_nearly_doubles_goodput() {
    run_seeds(&[211, 212, 213], |seed| {
        let n = 4000;
        let time = |mtus: &[usize]| {
            let mut sim = pair(seed, mtus, LinkMode::Spread, n, 32 << 10);
            let start = sim.now();
            assert!(
                run_to_done(&mut sim, Duration::from_secs(120)),
                "seed {seed}"
            );
            assert_all_delivered(&sim, n, seed);
            (sim.now() - start).as_secs_f64()
        };
        let one = time(&[1500]);
        let two = time(&[1500, 1500]);
        let speedup = one / two;
        println!("seed {seed}: one link {one:.3} s, two links {two:.3} s: {speedup:.2}x");
        assert!(
            speedup > 1.7,
            "seed {seed}: two links only {speedup:.2}x one"
        );
    });
}
