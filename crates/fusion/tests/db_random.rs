//! Randomised command mixes on the key-value executor: 3 to 5 nodes,
//! two clients on each, under 5 % loss, duplication and reordering (on
//! the links and at the message level, as `random.rs`), every service
//! invariant checked after every simulator step, and every reply checked
//! against a reference model of one Redis:
//! - counters (INCR only): the results of all INCRs are distinct, each
//!   within what was issued and acknowledged around it, and the final
//!   value is the number of INCRs; a GET sees at least every INCR
//!   acknowledged before it was sent;
//! - registers (SET, DEL, MSET with unique values; GET, EXISTS, MGET): a
//!   read returns a value that was not yet overwritten by a write
//!   acknowledged before the read was sent (so an acknowledged write is
//!   seen by every later read, on any node);
//! - a pair written only together by MSET: MGET sees both halves equal
//!   (multi-block writes and reads are atomic);
//! - append logs (APPEND of unique tokens): each APPEND's length ends
//!   with its token in the final value, and every read is a prefix of it;
//! - DBSIZE between the keys surely there and all keys.
//!
//! At the end: every node reads the same final values, the directory
//! agrees with the holders, a full checkpoint puts the model on disk,
//! and every node's redo log replayed onto empty blocks builds exactly
//! the blocks on disk.
//!
//! Replay a failing seed with `ICX_SIM_SEED=<seed>`; `ICX_DB_OPS` sets the
//! commands per client (default 16), `ICX_DB_CACHE` the blocks cached per
//! node (16), `ICX_DB_MAX_DIRTY` the dirty blocks that start a checkpoint
//! (4), `ICX_DB_FAULTS` the message-level fault rate (0.05);
//! `ICX_DB_TRACE=1` prints every command and reply with the model's clock.

mod common;

use common::*;
use icx_core::SeededRng as StdRng;
use icx_core::{Duration, NodeId};
use icx_fusion::block;
use icx_fusion::db::Reply;
use icx_fusion::io::BlockNo;
use icx_fusion::kv;
use icx_fusion::redo::{self, Record, Stop};
use icx_sim::run_seeds;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

const COUNTERS: [&str; 3] = ["c0", "c1", "c2"];
const REGS: [&str; 4] = ["r0", "r1", "r2", "r3"];
const PAIR: [&str; 2] = ["pa", "pb"];
const LOGS: [&str; 2] = ["a0", "a1"];
const CLIENTS_PER_NODE: u64 = 2;

fn all_keys() -> Vec<&'static str> {
    [&COUNTERS[..], &REGS, &PAIR, &LOGS].concat()
}

#[derive(Clone, Debug)]
enum Op {
    Incr(usize),
    GetCounter(usize),
    Set(&'static str, String, &'static str),
    Del(usize),
    MSet(usize, String, usize, String),
    Get(usize),
    Exists(usize, usize),
    MGet(usize, usize),
    SetPair(String),
    GetPair,
    Append(usize, String),
    GetLog(usize),
    DbSize,
}

impl Op {
    fn args(&self) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Op::Incr(i) => v(&["INCR", COUNTERS[*i]]),
            Op::GetCounter(i) => v(&["GET", COUNTERS[*i]]),
            Op::Set(k, val, "") => v(&["SET", k, val]),
            Op::Set(k, val, opt) => [
                v(&["SET", k, val]),
                opt.split(' ').map(String::from).collect(),
            ]
            .concat(),
            Op::Del(i) => v(&["DEL", REGS[*i]]),
            Op::MSet(a, x, b, y) => v(&["MSET", REGS[*a], x, REGS[*b], y]),
            Op::Get(i) => v(&["GET", REGS[*i]]),
            Op::Exists(a, b) => v(&["EXISTS", REGS[*a], REGS[*b]]),
            Op::MGet(a, b) => v(&["MGET", REGS[*a], REGS[*b]]),
            Op::SetPair(t) => v(&["MSET", PAIR[0], t, PAIR[1], t]),
            Op::GetPair => v(&["MGET", PAIR[0], PAIR[1]]),
            Op::Append(i, t) => v(&["APPEND", LOGS[*i], t]),
            Op::GetLog(i) => v(&["GET", LOGS[*i]]),
            Op::DbSize => v(&["DBSIZE"]),
        }
    }
}

/// One write of a register: its value (None: deleted), when it was sent
/// and acknowledged, on the model's clock of events.
#[derive(Clone, Debug)]
struct Write {
    value: Option<Vec<u8>>,
    issued: u64,
    acked: Option<u64>,
}

#[derive(Default)]
struct Model {
    /// Events (sends and replies) so far: the order the test saw them in.
    t: u64,
    incr_issued: [Vec<u64>; 3],
    incr_acked: [Vec<u64>; 3],
    incr_results: [BTreeSet<i64>; 3],
    regs: BTreeMap<&'static str, Vec<Write>>,
    /// Per log: (length replied, token, acknowledged); and reads (sent,
    /// value).
    appends: [Vec<(usize, String, u64)>; 2],
    log_reads: [Vec<(u64, Vec<u8>)>; 2],
}

impl Model {
    fn tick(&mut self) -> u64 {
        self.t += 1;
        self.t
    }

    fn writes(&mut self, key: &'static str) -> &mut Vec<Write> {
        self.regs.entry(key).or_insert_with(|| {
            vec![Write {
                value: None,
                issued: 0,
                acked: Some(0),
            }]
        })
    }

    /// The writes a read of `key` sent at `issued` and answered at
    /// `replied` may see: those sent before the reply and not overwritten
    /// by a write sent after they were acknowledged and acknowledged
    /// before the read was sent.
    fn candidates(&mut self, key: &'static str, issued: u64, replied: u64) -> Vec<usize> {
        let ws = self.writes(key).clone();
        (0..ws.len())
            .filter(|&i| ws[i].issued < replied)
            .filter(|&i| {
                !ws.iter().any(|w2| {
                    ws[i].acked.is_some_and(|a| a < w2.issued)
                        && w2.acked.is_some_and(|a| a < issued)
                })
            })
            .collect()
    }

    fn values(&mut self, key: &'static str, issued: u64, replied: u64) -> Vec<Option<Vec<u8>>> {
        let ok = self.candidates(key, issued, replied);
        ok.into_iter()
            .map(|i| self.regs[key][i].value.clone())
            .collect()
    }
}

struct InFlight {
    op: Op,
    issued: u64,
    /// The writes it made in the model: (key, index).
    writes: Vec<(&'static str, usize)>,
}

struct Client {
    node: u16,
    id: u64,
    left: u32,
    seq: u32,
    inflight: Option<InFlight>,
    seen: usize,
}

fn pick(rng: &mut StdRng, cl: &mut Client) -> Op {
    cl.seq += 1;
    let token = format!("<{}.{}.{}>", cl.node, cl.id, cl.seq);
    let r = |rng: &mut StdRng, n: usize| rng.random_range(0..n);
    match rng.random_range(0..100) {
        0..=19 => Op::Incr(r(rng, 3)),
        20..=26 => Op::GetCounter(r(rng, 3)),
        27..=38 => {
            let opt = ["", "", "PX 100000000", "KEEPTTL"][r(rng, 4)];
            Op::Set(REGS[r(rng, 4)], token, opt)
        }
        39..=43 => Op::Del(r(rng, 4)),
        44..=47 => Op::MSet(0, format!("{token}a"), 1 + r(rng, 3), format!("{token}b")),
        48..=59 => Op::Get(r(rng, 4)),
        60..=63 => Op::Exists(r(rng, 4), r(rng, 4)),
        64..=67 => Op::MGet(r(rng, 4), r(rng, 4)),
        68..=73 => Op::SetPair(token),
        74..=79 => Op::GetPair,
        80..=89 => Op::Append(r(rng, 2), token),
        90..=96 => Op::GetLog(r(rng, 2)),
        _ => Op::DbSize,
    }
}

/// Sends `op` for `cl`, recording its writes in the model.
fn issue(c: &mut Cluster, m: &mut Model, cl: &mut Client, op: Op) {
    let issued = m.tick();
    let mut writes = Vec::new();
    let mut write = |m: &mut Model, key: &'static str, value: Option<&str>| {
        let ws = m.writes(key);
        ws.push(Write {
            value: value.map(|v| v.as_bytes().to_vec()),
            issued,
            acked: None,
        });
        writes.push((key, ws.len() - 1));
    };
    match &op {
        Op::Incr(i) => m.incr_issued[*i].push(issued),
        Op::Set(k, v, _) => write(m, k, Some(v)),
        Op::Del(i) => write(m, REGS[*i], None),
        Op::MSet(a, x, b, y) => {
            write(m, REGS[*a], Some(x));
            write(m, REGS[*b], Some(y));
        }
        Op::SetPair(t) => {
            write(m, PAIR[0], Some(t));
            write(m, PAIR[1], Some(t));
        }
        _ => {}
    }
    let args: Vec<Vec<u8>> = op.args().into_iter().map(String::into_bytes).collect();
    if std::env::var("ICX_DB_TRACE").is_ok() {
        eprintln!(
            "t={issued} {:?} node {} client {}: {:?}",
            c.now(),
            cl.node,
            cl.id,
            op.args()
        );
    }
    submit(c, cl.node, cl.id, &args);
    cl.inflight = Some(InFlight { op, issued, writes });
}

fn value(r: &Reply) -> Option<Vec<u8>> {
    match r {
        Reply::Bulk(v) => Some(v.clone()),
        Reply::Null => None,
        other => panic!("not a value: {other:?}"),
    }
}

fn int(r: &Reply) -> i64 {
    match r {
        Reply::Integer(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// Checks `reply` to `fl` against the model, and records it.
fn check(m: &mut Model, fl: &InFlight, reply: &Reply) {
    let replied = m.tick();
    let issued = fl.issued;
    if let Reply::Error(e) = reply {
        panic!("{:?}: error {e}", fl.op);
    }
    for &(k, i) in &fl.writes {
        m.writes(k)[i].acked = Some(replied);
    }
    let read = |m: &mut Model, key: &'static str, got: Option<Vec<u8>>| {
        let ok = m.values(key, issued, replied);
        if !ok.contains(&got) {
            eprintln!("read sent {issued} answered {replied}; writes of {key}:");
            for w in &m.regs[key] {
                eprintln!(
                    "  {:?} sent {} acked {:?}",
                    w.value
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                    w.issued,
                    w.acked
                );
            }
        }
        assert!(
            ok.contains(&got),
            "{:?}: {key} read {:?}, not one of {:?}",
            fl.op,
            got.map(|v| String::from_utf8_lossy(&v).into_owned()),
            ok
        );
    };
    match &fl.op {
        Op::Incr(i) => {
            let v = int(reply);
            let before = m.incr_acked[*i].iter().filter(|&&a| a < issued).count() as i64;
            let sent = m.incr_issued[*i].iter().filter(|&&s| s < replied).count() as i64;
            assert!(
                v > before && v <= sent,
                "INCR {}: {v} not in ({before}, {sent}]",
                COUNTERS[*i]
            );
            assert!(
                m.incr_results[*i].insert(v),
                "INCR {} gave {v} twice",
                COUNTERS[*i]
            );
            m.incr_acked[*i].push(replied);
        }
        Op::GetCounter(i) => {
            let v = value(reply).map_or(0, |v| String::from_utf8_lossy(&v).parse::<i64>().unwrap());
            let before = m.incr_acked[*i].iter().filter(|&&a| a < issued).count() as i64;
            let sent = m.incr_issued[*i].iter().filter(|&&s| s < replied).count() as i64;
            assert!(
                v >= before && v <= sent,
                "GET {}: {v} not in [{before}, {sent}]",
                COUNTERS[*i]
            );
        }
        Op::Set(..) | Op::MSet(..) | Op::SetPair(_) => assert_eq!(reply, &Reply::ok()),
        Op::Del(i) => {
            // DEL reads the value before it: 1 if there was one.
            let own = fl.writes[0].1;
            let n = int(reply);
            let was: Vec<bool> = m
                .candidates(REGS[*i], issued, replied)
                .into_iter()
                .filter(|&j| j != own)
                .map(|j| m.regs[REGS[*i]][j].value.is_some())
                .collect();
            assert!(
                was.contains(&(n == 1)),
                "DEL {}: {n}, the value was there: {was:?}",
                REGS[*i]
            );
        }
        Op::Get(i) => read(m, REGS[*i], value(reply)),
        Op::Exists(a, b) => {
            let n = int(reply);
            let mut lo = 0;
            let mut hi = 0;
            for k in [REGS[*a], REGS[*b]] {
                let ok = m.values(k, issued, replied);
                lo += i64::from(ok.iter().all(Option::is_some));
                hi += i64::from(ok.iter().any(Option::is_some));
            }
            assert!(n >= lo && n <= hi, "EXISTS: {n} not in [{lo}, {hi}]");
        }
        Op::MGet(a, b) => {
            let Reply::Array(vs) = reply else {
                panic!("MGET: {reply:?}")
            };
            read(m, REGS[*a], value(&vs[0]));
            read(m, REGS[*b], value(&vs[1]));
        }
        Op::GetPair => {
            let Reply::Array(vs) = reply else {
                panic!("MGET: {reply:?}")
            };
            assert_eq!(vs[0], vs[1], "MGET of a pair MSET writes together");
            read(m, PAIR[0], value(&vs[0]));
        }
        Op::Append(i, t) => m.appends[*i].push((int(reply) as usize, t.clone(), replied)),
        Op::GetLog(i) => m.log_reads[*i].push((issued, value(reply).unwrap_or_default())),
        Op::DbSize => {
            let n = int(reply);
            let counters = (0..3)
                .filter(|&i| m.incr_acked[i].iter().any(|&a| a < issued))
                .count();
            let logs = (0..2)
                .filter(|&i| m.appends[i].iter().any(|a| a.2 < issued))
                .count();
            let lo = (counters + logs) as i64;
            assert!(
                n >= lo && n <= all_keys().len() as i64,
                "DBSIZE {n} below {lo}"
            );
        }
    }
}

fn workload(seed: u64) {
    let mut rng = icx_core::seeded_rng(icx_core::derive_seed(seed, 0xdb));
    let nodes = rng.random_range(3..=5u16);
    let ops: u32 = env_or("ICX_DB_OPS", 16);
    let cache: usize = env_or("ICX_DB_CACHE", 16);
    let mut dbc = db_config();
    dbc.max_dirty = env_or("ICX_DB_MAX_DIRTY", 4);
    let (mut c, disk) = build_db(seed, nodes, |id| config(id, cache), dbc);
    lossy(&mut c, nodes, env_or("ICX_DB_FAULTS", 0.05));
    let blocks: Vec<BlockNo> = {
        let b: BTreeSet<BlockNo> = all_keys()
            .iter()
            .map(|k| kv::block_of(k.as_bytes(), 1, BLOCKS).unwrap().1)
            .collect();
        b.into_iter().collect()
    };
    let pair = |k: &str| kv::block_of(k.as_bytes(), 1, BLOCKS);
    assert_ne!(pair(PAIR[0]), pair(PAIR[1]), "the pair spans two blocks");
    let mut m = Model::default();
    let mut clients: Vec<Client> = (1..=nodes)
        .flat_map(|node| {
            (1..=CLIENTS_PER_NODE).map(move |id| Client {
                node,
                id,
                left: ops,
                seq: 0,
                inflight: None,
                seen: 0,
            })
        })
        .collect();
    let mut watch = Watch::default();
    let mut done = 0;
    loop {
        for cl in clients.iter_mut() {
            if cl.inflight.is_none() && cl.left > 0 {
                cl.left -= 1;
                let op = pick(&mut rng, cl);
                issue(&mut c, &mut m, cl, op);
            }
            take_replies(&c, &mut m, cl, &mut done);
        }
        if clients.iter().all(|cl| cl.inflight.is_none()) {
            // Answered at once (a block cached here): send on, or stop.
            if clients.iter().all(|cl| cl.left == 0) {
                break;
            }
            continue;
        }
        let moved = c.run_until_cond(Duration::from_secs(60), 5_000_000, |c| {
            watch.step(c, &disk, &blocks);
            clients.iter().any(|cl| {
                db(c, cl.node)
                    .replies
                    .iter()
                    .skip(cl.seen)
                    .any(|r| r.1 == cl.id)
            })
        });
        if !moved {
            for cl in &clients {
                let fl = cl.inflight.as_ref().map(|f| (&f.op, f.issued));
                let n = db(&c, cl.node).replies.len();
                eprintln!(
                    "client {}.{}: seen {} of {n}, in flight {fl:?}",
                    cl.node, cl.id, cl.seen
                );
            }
            for (id, p) in c.protocols() {
                eprintln!(
                    "node {id}: pending {}\n{}",
                    p.db.as_ref().unwrap().db.pending(),
                    p.f.dump()
                );
            }
        }
        assert!(moved, "seed {seed}: no reply for 60 s");
        for cl in clients.iter_mut() {
            take_replies(&c, &mut m, cl, &mut done);
        }
    }
    settle(&mut c);
    check_at_rest(&c, &disk, &blocks, seed);
    finish(&mut c, &mut m, nodes, seed);
    replay_matches_disk(&disk, nodes, seed);
    eprintln!("seed {seed}: {nodes} nodes, {done} commands checked");
}

/// Checks the client's replies that came.
fn take_replies(c: &Cluster, m: &mut Model, cl: &mut Client, done: &mut usize) {
    let replies = &db(c, cl.node).replies;
    while cl.seen < replies.len() {
        let (_, client, r) = &replies[cl.seen];
        cl.seen += 1;
        if *client != cl.id {
            continue;
        }
        let fl = cl.inflight.take().expect("a reply to a command sent");
        if std::env::var("ICX_DB_TRACE").is_ok() {
            eprintln!(
                "t={} {:?} node {} client {}: {r:?}",
                m.t + 1,
                replies[cl.seen - 1].0,
                cl.node,
                cl.id
            );
        }
        check(m, &fl, r);
        *done += 1;
    }
}

/// Every node reads the same final values, the model's; then a full
/// checkpoint puts them on disk.
fn finish(c: &mut Cluster, m: &mut Model, nodes: u16, seed: u64) {
    let end = m.tick();
    let mut finals: BTreeMap<&str, Option<Vec<u8>>> = BTreeMap::new();
    for n in 1..=nodes {
        for k in all_keys() {
            let got = value(&run_cmd(c, n, &["GET", k]));
            let first = finals.entry(k).or_insert_with(|| got.clone());
            assert_eq!(&got, first, "seed {seed}: node {n} {k}");
        }
    }
    for (i, k) in COUNTERS.iter().enumerate() {
        let total = m.incr_issued[i].len();
        let want = (total > 0).then(|| total.to_string().into_bytes());
        assert_eq!(finals[k], want, "seed {seed}: counter {k}");
        assert_eq!(
            m.incr_results[i],
            (1..=total as i64).collect(),
            "seed {seed}: {k}"
        );
    }
    for k in REGS.iter().chain(&PAIR) {
        let ok = m.values(k, end, end);
        assert!(
            ok.contains(&finals[k]),
            "seed {seed}: {k} = {:?}, not one of {ok:?}",
            finals[k]
        );
    }
    for (i, k) in LOGS.iter().enumerate() {
        let log = finals[k].clone().unwrap_or_default();
        let total: usize = m.appends[i].iter().map(|a| a.1.len()).sum();
        assert_eq!(log.len(), total, "seed {seed}: {k}: every token once");
        for (len, token, _) in &m.appends[i] {
            assert!(
                log.get(len - token.len()..*len) == Some(token.as_bytes()),
                "seed {seed}: {k}: APPEND {token} replied {len}"
            );
        }
        for (issued, read) in &m.log_reads[i] {
            assert!(
                log.starts_with(read),
                "seed {seed}: {k}: a read not a prefix"
            );
            let acked: usize = m.appends[i]
                .iter()
                .filter(|a| a.2 < *issued)
                .map(|a| a.1.len())
                .sum();
            assert!(
                read.len() >= acked,
                "seed {seed}: {k}: a read missed an acknowledged APPEND"
            );
        }
    }
    checkpoint_all(c, nodes);
    let d = node(c, 1).disk().borrow();
    for (k, want) in &finals {
        let b = kv::block_of(k.as_bytes(), 1, BLOCKS).unwrap();
        let on_disk = d.blocks.get(&b).and_then(|img| {
            kv::get(block::payload(img), k.as_bytes())
                .unwrap()
                .map(|e| e.value.to_vec())
        });
        assert_eq!(&on_disk, want, "seed {seed}: disk {k}");
    }
}

/// Every node's redo log, replayed in SCN order onto never-written
/// blocks, builds the blocks on disk byte for byte.
fn replay_matches_disk(disk: &icx_fusion::testing::SharedDisk, nodes: u16, seed: u64) {
    let d = disk.borrow();
    let mut by_block: BTreeMap<(u16, BlockNo), Vec<Record>> = BTreeMap::new();
    for n in 1..=nodes {
        let Some(log) = d.redo.get(&NodeId(n)) else {
            continue;
        };
        let s = redo::scan(log, 0, Some(0));
        assert_eq!(s.stop, Stop::End, "seed {seed}: node {n}'s log");
        for (_, r) in s.records {
            assert_eq!(r.node, NodeId(n));
            by_block.entry((r.file, r.block)).or_default().push(r);
        }
    }
    assert!(!by_block.is_empty());
    for (key, mut recs) in by_block {
        recs.sort_by_key(|r| r.scn);
        let mut img = vec![0u8; BS];
        for r in &recs {
            assert_eq!(
                redo::apply(r, &mut img),
                Ok(redo::Applied::Redone),
                "seed {seed}: {key:?}"
            );
        }
        assert_eq!(
            Some(&img),
            d.blocks.get(&key),
            "seed {seed}: block {key:?} replayed"
        );
    }
}

#[test]
fn random_commands_under_loss_duplication_and_reordering() {
    run_seeds(&[1, 2, 3, 4, 5, 6, 7, 8], workload);
}
