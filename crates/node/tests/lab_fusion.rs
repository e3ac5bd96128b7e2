//! Cache fusion across real `fusion-node` processes in the namespace lab,
//! each node in its own network namespace: clients on every node INCR
//! shared counters while nftables drops 5 % of the interconnect's frames
//! (every acknowledged increment counted, the final values exact), and
//! redis-benchmark against all three nodes at once. Root only (skips
//! saying why otherwise; fails under `ICX_REQUIRE_LAB=1`).

mod common;

use common::{lab_missing, Cluster, Spec};
use icx_testkit::lab::require_or_skip;
use std::time::{Duration, Instant};

const FORM: Duration = Duration::from_secs(40);

fn lab() -> bool {
    require_or_skip(lab_missing())
}

/// Every node's `INFO gc` says the service is open.
fn wait_open(c: &Cluster, ids: &[u16]) {
    let ok = c.wait_for(FORM, |c| {
        ids.iter()
            .all(|&i| {
                c.info_section(i, "gc")
                    .is_some_and(|m| m.get("gc_state").is_some_and(|s| s.starts_with("open")))
            })
            .then_some(())
    });
    assert!(ok.is_some(), "cache fusion never opened\n{}", c.dump());
}

fn gc_sum(c: &Cluster, ids: &[u16], k: &str) -> u64 {
    ids.iter()
        .filter_map(|&i| c.info_section(i, "gc"))
        .filter_map(|m| m.get(k).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

#[test]
fn shared_counters_exact_under_five_percent_loss() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxg1", 21, Spec::new(3, 3));
    c.start_all();
    c.wait_settled(&[1, 2, 3], FORM);
    wait_open(&c, &[1, 2, 3]);
    c.loss(5);
    const COUNTERS: usize = 6;
    const CLIENTS: usize = 3;
    const PER_CLIENT: usize = 500;
    const PER_NODE: usize = CLIENTS * PER_CLIENT;
    let t0 = Instant::now();
    // CLIENTS redis-clis per node, each fed its INCRs at once: each reply
    // line is one acknowledged increment.
    let acked: Vec<[u64; COUNTERS]> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3 * CLIENTS)
            .map(|n| {
                let i = (n / CLIENTS) as u16 + 1;
                let c = &c;
                s.spawn(move || {
                    let mut input = String::new();
                    let mut which = Vec::new();
                    for k in 0..PER_CLIENT {
                        let ctr = (k * 7 + n) % COUNTERS;
                        input.push_str(&format!("INCR ctr:{ctr}\n"));
                        which.push(ctr);
                    }
                    let out = c
                        .cli_pipe(i, &input, Duration::from_secs(180))
                        .unwrap_or_default();
                    let mut acked = [0u64; COUNTERS];
                    let lines: Vec<&str> = out.lines().collect();
                    for (n, l) in lines.iter().enumerate() {
                        let Some(ctr) = which.get(n) else { break };
                        if l.trim().parse::<i64>().is_ok() {
                            acked[*ctr] += 1;
                        } else {
                            eprintln!("node {i} INCR ctr:{ctr}: {l}");
                        }
                    }
                    acked
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    let lost = gc_sum(&c, &[1, 2, 3], "gc_cr_block_lost")
        + gc_sum(&c, &[1, 2, 3], "gc_current_block_lost");
    // The loss was real: the transport retransmitted what nftables dropped.
    let retransmitted: u64 = (1..=3)
        .filter_map(|i| c.info_section(i, "interconnect"))
        .flat_map(|m| {
            m.into_iter()
                .filter(|(k, _)| k.starts_with("peer_"))
                .filter_map(|(_, v)| {
                    v.split(',')
                        .find_map(|f| f.strip_prefix("retransmitted="))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum();
    c.heal_all();
    assert!(
        retransmitted > 0,
        "no retransmission under 5 % loss\n{}",
        c.dump()
    );
    let total_acked: u64 = acked.iter().flatten().sum();
    eprintln!(
        "{total_acked} of {} INCRs acknowledged in {took:?} under 5 % loss; frames retransmitted: {retransmitted}, gc blocks lost (resent): {lost}",
        3 * PER_NODE
    );
    assert!(
        total_acked >= (3 * PER_NODE as u64) * 9 / 10,
        "only {total_acked} INCRs acknowledged\n{}",
        c.dump()
    );
    for ctr in 0..COUNTERS {
        let want: u64 = acked.iter().map(|a| a[ctr]).sum();
        for i in 1..=3 {
            let got = c
                .cli(i, &["GET", &format!("ctr:{ctr}")])
                .and_then(|t| t.trim().parse::<u64>().ok());
            assert_eq!(
                got,
                Some(want),
                "ctr:{ctr} on node {i}: acknowledged {want}\n{}",
                c.dump()
            );
        }
    }
    // Nobody was evicted by the loss.
    c.wait_settled(&[1, 2, 3], Duration::from_secs(5));
}

#[test]
fn redis_benchmark_on_all_three_at_once() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxg2", 22, Spec::new(3, 3));
    c.start_all();
    c.wait_settled(&[1, 2, 3], FORM);
    wait_open(&c, &[1, 2, 3]);
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (1..=3u16)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let port = c.client_port(i).to_string();
                    c.in_ns(
                        i,
                        "redis-benchmark",
                        &[
                            "-p",
                            &port,
                            "-t",
                            "set,get,incr",
                            "-n",
                            "4000",
                            "-c",
                            "50",
                            "-r",
                            "2000",
                            "-q",
                        ],
                        Duration::from_secs(240),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("node {}: {}", i + 1, text.trim());
        assert!(o.status.success(), "node {}: {text}\n{}", i + 1, c.dump());
        assert!(
            !text.contains("ERR") && !text.contains("Error") && !text.contains("TRYAGAIN"),
            "node {}: {text}",
            i + 1
        );
        for t in ["SET", "GET", "INCR"] {
            assert!(text.contains(&format!("{t}: ")), "node {}: {text}", i + 1);
        }
    }
    let served = gc_sum(&c, &[1, 2, 3], "gc_current_blocks_served");
    assert!(served > 0, "no block moved between nodes\n{}", c.dump());
}
