//! The key-value executor on 3 simulated nodes: each command's replies,
//! cluster-wide visibility, TTLs, the size limits, DBSIZE and FLUSHALL
//! across nodes, BLOCK.GET and BLOCK.SCAN, replies only once the redo is
//! durable, checkpoints, and failing everything on a fence.

mod common;

use common::*;
use icx_core::{Duration, NodeId};
use icx_fusion::block;
use icx_fusion::db::Reply;
use icx_fusion::gcs::GcError;
use icx_fusion::io::BlockNo;
use icx_fusion::kv;
use icx_fusion::redo::{self, Change};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn cluster(seed: u64) -> Cluster {
    build_db(seed, 3, |id| config(id, 64), db_config()).0
}

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

fn ok() -> Reply {
    Reply::ok()
}

fn err_text(r: Reply) -> String {
    match r {
        Reply::Error(e) => e,
        other => panic!("not an error: {other:?}"),
    }
}

fn block_of(key: &str) -> BlockNo {
    kv::block_of(key.as_bytes(), 1, BLOCKS).unwrap().1
}

/// `n` keys named `prefix{i}` that all hash to one block.
fn same_block(prefix: &str, n: usize) -> Vec<String> {
    let mut by_block: std::collections::BTreeMap<BlockNo, Vec<String>> = Default::default();
    for i in 0.. {
        let k = format!("{prefix}{i}");
        let v = by_block.entry(block_of(&k)).or_default();
        v.push(k);
        if v.len() == n {
            return v.clone();
        }
    }
    unreachable!()
}

#[test]
fn a_set_on_one_node_is_read_on_every_other() {
    let mut c = cluster(101);
    assert_eq!(run_cmd(&mut c, 1, &["SET", "k", "v1"]), ok());
    for n in [2, 3] {
        assert_eq!(run_cmd(&mut c, n, &["GET", "k"]), bulk("v1"), "node {n}");
    }
    assert_eq!(run_cmd(&mut c, 3, &["set", "k", "v2"]), ok());
    for n in [1, 2, 3] {
        assert_eq!(run_cmd(&mut c, n, &["get", "k"]), bulk("v2"), "node {n}");
    }
    assert_eq!(run_cmd(&mut c, 2, &["GET", "nope"]), Reply::Null);
    let s = db(&c, 1).db.stats();
    assert_eq!(s.commands.get("set"), Some(&1));
    assert_eq!(s.commands.get("get"), Some(&1));
    assert_eq!(s.keys_written, 1);
}

#[test]
fn incr_from_every_node_counts_every_increment_once() {
    let mut c = cluster(102);
    const N: usize = 15;
    let mut left = [N; 3];
    let mut got = Vec::new();
    let mut seen = [0usize; 3];
    for n in 1..=3u16 {
        submit(&mut c, n, 7, &words(&["INCR", "hits"]));
        left[n as usize - 1] -= 1;
    }
    while got.len() < 3 * N {
        let ok = c.run_until_cond(Duration::from_secs(30), 2_000_000, |c| {
            (1..=3u16).any(|n| db(c, n).replies.len() > seen[n as usize - 1])
        });
        assert!(ok, "stuck after {} increments", got.len());
        for n in 1..=3u16 {
            let i = n as usize - 1;
            let new: Vec<Reply> = db(&c, n).replies[seen[i]..]
                .iter()
                .map(|r| r.2.clone())
                .collect();
            seen[i] += new.len();
            for r in new {
                match r {
                    Reply::Integer(v) => got.push(v),
                    other => panic!("node {n}: {other:?}"),
                }
                if left[i] > 0 {
                    left[i] -= 1;
                    submit(&mut c, n, 7, &words(&["INCR", "hits"]));
                }
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, (1..=(3 * N) as i64).collect::<Vec<_>>(), "distinct");
    for n in 1..=3 {
        assert_eq!(
            run_cmd(&mut c, n, &["GET", "hits"]),
            bulk(&(3 * N).to_string())
        );
    }
}

#[test]
fn mset_and_mget_across_blocks() {
    let mut c = cluster(103);
    let keys: Vec<String> = (0..8).map(|i| format!("key:{i}")).collect();
    let blocks: BTreeSet<BlockNo> = keys.iter().map(|k| block_of(k)).collect();
    assert!(blocks.len() >= 4, "spread over blocks: {blocks:?}");
    let mut args = vec!["MSET".to_string()];
    for k in &keys {
        args.push(k.clone());
        args.push(format!("v-{k}"));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(run_cmd(&mut c, 1, &a), ok());
    let mut get = vec!["MGET"];
    get.extend(keys.iter().map(String::as_str));
    get.push("missing");
    let want: Vec<Reply> = keys
        .iter()
        .map(|k| bulk(&format!("v-{k}")))
        .chain([Reply::Null])
        .collect();
    for n in [2, 3, 1] {
        assert_eq!(
            run_cmd(&mut c, n, &get),
            Reply::Array(want.clone()),
            "node {n}"
        );
    }
    // The last of a repeated key wins.
    assert_eq!(run_cmd(&mut c, 2, &["MSET", "d", "1", "d", "2"]), ok());
    assert_eq!(
        run_cmd(&mut c, 3, &["MGET", "d", "d"]),
        Reply::Array(vec![bulk("2"), bulk("2")])
    );
}

#[test]
fn set_conditions_get_and_keepttl() {
    let mut c = cluster(104);
    assert_eq!(run_cmd(&mut c, 1, &["SET", "k", "a", "XX"]), Reply::Null);
    assert_eq!(run_cmd(&mut c, 2, &["GET", "k"]), Reply::Null);
    assert_eq!(run_cmd(&mut c, 1, &["SET", "k", "a", "NX"]), ok());
    let redo_before = node(&c, 2).f.stats().redo_writes;
    assert_eq!(run_cmd(&mut c, 2, &["SET", "k", "b", "NX"]), Reply::Null);
    assert_eq!(
        node(&c, 2).f.stats().redo_writes,
        redo_before,
        "no change, no redo"
    );
    assert_eq!(run_cmd(&mut c, 3, &["SET", "k", "b", "XX"]), ok());
    assert_eq!(run_cmd(&mut c, 1, &["SET", "k", "c", "GET"]), bulk("b"));
    assert_eq!(
        run_cmd(&mut c, 2, &["SET", "k", "d", "NX", "GET"]),
        bulk("c")
    );
    assert_eq!(
        run_cmd(&mut c, 3, &["GET", "k"]),
        bulk("c"),
        "NX did not set"
    );
    assert_eq!(run_cmd(&mut c, 3, &["SET", "new", "x", "GET"]), Reply::Null);
    // EX/PX: gone once the time passes (lazy expiry: no write).
    assert_eq!(run_cmd(&mut c, 1, &["SET", "t", "1", "PX", "300"]), ok());
    assert_eq!(run_cmd(&mut c, 2, &["GET", "t"]), bulk("1"));
    c.run_for(Duration::from_millis(400));
    assert_eq!(run_cmd(&mut c, 2, &["GET", "t"]), Reply::Null);
    assert_eq!(run_cmd(&mut c, 3, &["EXISTS", "t"]), int(0));
    assert_eq!(run_cmd(&mut c, 3, &["STRLEN", "t"]), int(0));
    assert_eq!(
        run_cmd(&mut c, 1, &["SET", "t", "2", "NX"]),
        ok(),
        "expired is absent"
    );
    // KEEPTTL keeps it, a plain SET drops it; INCR and APPEND keep it.
    for (second, survives) in [
        (&["SET", "t", "v", "KEEPTTL"][..], false),
        (&["SET", "t", "v"], true),
        (&["INCR", "t"], false),
        (&["APPEND", "t", "x"], false),
    ] {
        assert_eq!(run_cmd(&mut c, 1, &["SET", "t", "5", "EX", "1"]), ok());
        assert!(matches!(
            run_cmd(&mut c, 2, second),
            Reply::Simple(_) | Reply::Integer(_)
        ));
        c.run_for(Duration::from_millis(1100));
        let r = run_cmd(&mut c, 3, &["EXISTS", "t"]);
        assert_eq!(r, int(i64::from(survives)), "after {second:?}");
    }
    // EXAT/PXAT in the past: absent at once.
    let past = (WALL / 1000).to_string();
    assert_eq!(run_cmd(&mut c, 1, &["SET", "p", "1", "EXAT", &past]), ok());
    assert_eq!(run_cmd(&mut c, 2, &["GET", "p"]), Reply::Null);
}

#[test]
fn del_and_exists_count_keys() {
    let mut c = cluster(105);
    run_cmd(&mut c, 1, &["MSET", "a", "1", "b", "2", "c", "3"]);
    assert_eq!(run_cmd(&mut c, 2, &["EXISTS", "a", "a", "b", "zz"]), int(3));
    assert_eq!(run_cmd(&mut c, 3, &["DEL", "a", "b", "zz", "a"]), int(2));
    assert_eq!(run_cmd(&mut c, 1, &["EXISTS", "a", "b", "c"]), int(1));
    assert_eq!(run_cmd(&mut c, 2, &["DEL", "a"]), int(0));
    run_cmd(&mut c, 1, &["SET", "e", "1", "PX", "50"]);
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        run_cmd(&mut c, 2, &["DEL", "e"]),
        int(0),
        "expired: not counted"
    );
    assert_eq!(run_cmd(&mut c, 3, &["GET", "c"]), bulk("3"));
}

#[test]
fn append_strlen_and_incr_errors() {
    let mut c = cluster(106);
    assert_eq!(run_cmd(&mut c, 1, &["APPEND", "s", "ab"]), int(2));
    assert_eq!(run_cmd(&mut c, 2, &["APPEND", "s", "cde"]), int(5));
    assert_eq!(run_cmd(&mut c, 3, &["GET", "s"]), bulk("abcde"));
    assert_eq!(run_cmd(&mut c, 1, &["STRLEN", "s"]), int(5));
    assert_eq!(run_cmd(&mut c, 1, &["STRLEN", "none"]), int(0));
    const NOT_INT: &str = "ERR value is not an integer or out of range";
    assert_eq!(err_text(run_cmd(&mut c, 2, &["INCR", "s"])), NOT_INT);
    run_cmd(&mut c, 1, &["SET", "sp", " 1"]);
    assert_eq!(err_text(run_cmd(&mut c, 3, &["INCR", "sp"])), NOT_INT);
    run_cmd(&mut c, 1, &["SET", "max", "9223372036854775807"]);
    assert_eq!(
        err_text(run_cmd(&mut c, 2, &["INCR", "max"])),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        run_cmd(&mut c, 3, &["DECRBY", "max", "7"]),
        int(i64::MAX - 7)
    );
    assert_eq!(run_cmd(&mut c, 1, &["INCRBY", "n", "-3"]), int(-3));
    assert_eq!(run_cmd(&mut c, 2, &["DECR", "n"]), int(-4));
    assert_eq!(run_cmd(&mut c, 3, &["GET", "n"]), bulk("-4"));
    assert_eq!(db(&c, 2).db.stats().errors, 2);
}

#[test]
fn dbsize_and_flushall_are_cluster_wide() {
    let mut c = cluster(107);
    assert_eq!(run_cmd(&mut c, 2, &["DBSIZE"]), int(0));
    for i in 0..6 {
        let n = if i % 2 == 0 { 1 } else { 3 };
        run_cmd(&mut c, n, &["SET", &format!("k{i}"), "v"]);
    }
    run_cmd(&mut c, 1, &["SET", "soon", "v", "PX", "100"]);
    assert_eq!(run_cmd(&mut c, 2, &["DBSIZE"]), int(7));
    c.run_for(Duration::from_millis(200));
    assert_eq!(
        run_cmd(&mut c, 2, &["DBSIZE"]),
        int(6),
        "expired not counted"
    );
    assert_eq!(run_cmd(&mut c, 2, &["FLUSHALL"]), ok());
    for n in [1, 3] {
        assert_eq!(run_cmd(&mut c, n, &["DBSIZE"]), int(0), "node {n}");
        assert_eq!(run_cmd(&mut c, n, &["GET", "k0"]), Reply::Null);
    }
    // The expired record went too: the block is empty.
    let b = block_of("soon");
    match run_cmd(&mut c, 1, &["BLOCK.GET", "1", &b.to_string()]) {
        Reply::Array(a) => assert_eq!(a[7], int(0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run_cmd(&mut c, 3, &["FLUSHALL", "ASYNC"]),
        ok(),
        "nothing to clear"
    );
    run_cmd(&mut c, 3, &["SET", "after", "1"]);
    assert_eq!(run_cmd(&mut c, 1, &["DBSIZE"]), int(1));
}

/// The image BLOCK.GET and BLOCK.SCAN see of a never-written block.
fn empty_block(b: BlockNo) -> Vec<u8> {
    let mut img = vec![0u8; BS];
    let h = block::Header {
        kind: block::Kind::Data,
        file: 1,
        block: b,
        scn: 0,
    };
    block::seal(&mut img, &h);
    img
}

#[test]
fn block_get_and_block_scan_agree_on_every_node_and_with_disk() {
    let mut c = cluster(108);
    for i in 0..20 {
        run_cmd(
            &mut c,
            1 + i % 3,
            &["SET", &format!("b{i}"), &"x".repeat(i as usize)],
        );
    }
    let b = block_of("b7");
    let get = ["BLOCK.GET", "1", &b.to_string()];
    let r = run_cmd(&mut c, 1, &get);
    for n in [2, 3] {
        assert_eq!(run_cmd(&mut c, n, &get), r, "node {n}");
    }
    let scan = ["BLOCK.SCAN", "1", "5", "40"];
    let s = run_cmd(&mut c, 2, &scan);
    for n in [1, 3] {
        assert_eq!(run_cmd(&mut c, n, &scan), s, "node {n}");
    }
    // Written out, the disk has the same images.
    checkpoint_all(&mut c, 3);
    let images: Vec<Vec<u8>> = (0..BLOCKS).map(|b| disk_image(&c, b)).collect();
    let image = |b: BlockNo| images[b as usize].clone();
    let img = image(b);
    let scn = block::verify(&img, 1, b).unwrap().scn;
    let keys = kv::len(block::payload(&img)).unwrap();
    assert!(keys >= 1);
    let hex = |crc: u32| bulk(&format!("{crc:08x}"));
    assert_eq!(
        r,
        Reply::Array(vec![
            bulk("file"),
            int(1),
            bulk("block"),
            int(i64::from(b)),
            bulk("scn"),
            int(scn as i64),
            bulk("keys"),
            int(keys as i64),
            bulk("checksum"),
            hex(crc32c::crc32c(&img)),
            bulk("master"),
            int(i64::from(node(&c, 1).f.master_of(1, b).0)),
        ])
    );
    let crc = (5..45).fold(0, |crc, b| crc32c::crc32c_append(crc, &image(b)));
    assert_eq!(s, Reply::Array(vec![int(40), hex(crc)]));
    let all = run_cmd(&mut c, 3, &["BLOCK.SCAN", "1", "0", &BLOCKS.to_string()]);
    let crc = (0..BLOCKS).fold(0, |crc, b| crc32c::crc32c_append(crc, &image(b)));
    assert_eq!(all, Reply::Array(vec![int(i64::from(BLOCKS)), hex(crc)]));
    for bad in [
        &["BLOCK.GET", "0", "0"][..],
        &["BLOCK.GET", "2", "0"],
        &["BLOCK.GET", "1", &BLOCKS.to_string()],
        &["BLOCK.SCAN", "1", "250", "10"],
        &["BLOCK.SCAN", "1", "0", "0"],
        &["BLOCK.SCAN", "3", "0", "1"],
    ] {
        assert!(
            err_text(run_cmd(&mut c, 1, bad)).starts_with("ERR "),
            "{bad:?}"
        );
    }
}

/// A block as it is on disk, or as a never-written block is read.
fn disk_image(c: &Cluster, b: BlockNo) -> Vec<u8> {
    let d = node(c, 1).disk().borrow();
    d.blocks
        .get(&(1, b))
        .cloned()
        .unwrap_or_else(|| empty_block(b))
}

#[test]
fn a_value_too_large_or_a_full_block_is_refused_changing_nothing() {
    let mut c = cluster(109);
    let max = kv::max_value_len(BS - block::HEADER_LEN, 1);
    let big = "v".repeat(max + 1);
    assert_eq!(
        err_text(run_cmd(&mut c, 1, &["SET", "k", &big])),
        format!("ERR value too large: at most {max} bytes for this key in a {BS}-byte block")
    );
    assert!(err_text(run_cmd(&mut c, 1, &["MSET", "a", "1", "k", &big]))
        .starts_with("ERR value too large"));
    assert_eq!(
        run_cmd(&mut c, 2, &["GET", "a"]),
        Reply::Null,
        "no part of the MSET"
    );
    assert_eq!(
        run_cmd(&mut c, 1, &["SET", "k", &"v".repeat(max)]),
        ok(),
        "the most fits"
    );
    assert_eq!(
        err_text(run_cmd(&mut c, 1, &["APPEND", "k", "x"])),
        format!("ERR value too large: at most {max} bytes for this key in a {BS}-byte block")
    );
    let long_key = "k".repeat(BS);
    assert!(err_text(run_cmd(&mut c, 3, &["SET", &long_key, "v"])).starts_with("ERR key too large"));
    // Three ~3 KB values on one block: the third does not fit.
    let keys = same_block("full", 4);
    let blk = block_of(&keys[0]);
    let v = "z".repeat(3000);
    for k in &keys[..2] {
        assert_eq!(run_cmd(&mut c, 1, &["SET", k, &v]), ok());
    }
    let e = err_text(run_cmd(&mut c, 2, &["SET", &keys[2], &v]));
    assert!(
        e.starts_with(&format!("ERR block full: file 1 block {blk} has ")),
        "{e}"
    );
    assert_eq!(run_cmd(&mut c, 3, &["EXISTS", &keys[2]]), int(0));
    // An MSET whose second key does not fit makes no change at all.
    let e = err_text(run_cmd(
        &mut c,
        3,
        &["MSET", &keys[3], "small", &keys[2], &v],
    ));
    assert!(e.starts_with("ERR block full"), "{e}");
    assert_eq!(run_cmd(&mut c, 1, &["EXISTS", &keys[3]]), int(0));
    // Replacing a value in place still fits.
    assert_eq!(run_cmd(&mut c, 2, &["SET", &keys[0], &v]), ok());
}

#[test]
fn a_write_is_answered_only_once_its_redo_is_durable() {
    let (mut c, disk) = build_db(110, 3, |id| config(id, 64), db_config());
    disk.borrow_mut().latency = Duration::from_millis(20);
    let t0 = c.now();
    let keys = ["x1", "x2", "x3", "x4"];
    assert_eq!(
        run_cmd(
            &mut c,
            1,
            &["MSET", "x1", "1", "x2", "2", "x3", "3", "x4", "4"]
        ),
        ok()
    );
    // Stopped at the step the reply came: the records are on disk.
    assert!(c.now() - t0 >= Duration::from_millis(20));
    let log = disk.borrow().redo[&NodeId(1)].clone();
    let logged: BTreeSet<Vec<u8>> = redo::scan(&log, 0, Some(0))
        .records
        .into_iter()
        .filter_map(|(_, r)| match r.change {
            Change::Put { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    for k in keys {
        assert!(
            logged.contains(k.as_bytes()),
            "{k} answered before its redo"
        );
    }
    let t1 = c.now();
    assert_eq!(run_cmd(&mut c, 2, &["INCR", "x1"]), int(2));
    assert!(
        c.now() - t1 >= Duration::from_millis(20),
        "INCR waited for its redo"
    );
    assert!(disk.borrow().redo.contains_key(&NodeId(2)));
}

#[test]
fn a_pipelining_clients_writes_share_a_group_commit_and_answer_in_order() {
    let (mut c, disk) = build_db(113, 3, |id| config(id, 64), db_config());
    // Node 1 holds the block in X first: what follows needs no messages.
    let key = (0..)
        .map(|i| format!("p{i}"))
        .find(|k| node(&c, 1).f.master_of(1, block_of(k)) == NodeId(1))
        .unwrap();
    assert_eq!(run_cmd(&mut c, 1, &["SET", &key, "0"]), ok());
    let latency = Duration::from_millis(20);
    disk.borrow_mut().latency = latency;
    let before = db(&c, 1).replies.len();
    let t0 = c.now();
    for _ in 0..4 {
        submit(&mut c, 1, 7, &words(&["INCR", &key]));
    }
    submit(&mut c, 1, 7, &words(&["GET", &key]));
    let done = |c: &Cluster| db(c, 1).replies.len() - before == 5;
    assert!(c.run_until_cond(Duration::from_secs(10), 1_000_000, done));
    let got: Vec<Reply> = db(&c, 1).replies[before..]
        .iter()
        .map(|r| r.2.clone())
        .collect();
    assert_eq!(got, vec![int(1), int(2), int(3), int(4), bulk("4")]);
    // Four INCRs one after another's redo would take four syncs; started
    // once the one before has changed the block, they share at most two
    // (the first sync may have begun before the rest were asked).
    let took = c.now() - t0;
    assert!(took < latency * 3, "took {took:?}: one sync per INCR");
}

#[test]
fn checkpoints_write_dirty_blocks_when_too_many_and_on_the_interval() {
    let mut dbc = db_config();
    dbc.max_dirty = 4;
    dbc.checkpoint_interval = Duration::from_secs(2);
    let (mut c, disk) = build_db(111, 3, |id| config(id, 64), dbc);
    let keys: Vec<String> = (0..12).map(|i| format!("ck{i}")).collect();
    for k in &keys {
        run_cmd(&mut c, 1, &["SET", k, "v"]);
    }
    let dirty = node(&c, 1).f.dirty_blocks().len();
    assert!(
        dirty <= 4 + 1,
        "incremental checkpoints keep it near max_dirty: {dirty}"
    );
    assert!(db(&c, 1).db.stats().checkpoint_writes >= 6);
    run_cmd(&mut c, 1, &["SET", "late", "v"]);
    c.run_for(Duration::from_millis(2100));
    assert!(
        node(&c, 1).f.dirty_blocks().is_empty(),
        "the interval wrote the rest"
    );
    for k in keys.iter().chain([&"late".to_string()]) {
        let img = disk_image(&c, block_of(k));
        let got = kv::get(block::payload(&img), k.as_bytes()).unwrap();
        assert_eq!(got.map(|e| e.value), Some(&b"v"[..]), "{k} on disk");
    }
    assert_eq!(db(&c, 1).db.stats().checkpoint_errors, 0);
    drop(disk);
}

#[test]
fn fail_all_answers_every_pending_command_at_once() {
    let mut c = cluster(112);
    // Node 1 hears nothing: its requests to other masters hang.
    let key = (0..)
        .map(|i| format!("h{i}"))
        .find(|k| node(&c, 1).f.master_of(1, block_of(k)) != NodeId(1))
        .unwrap();
    node_mut(&mut c, 1).drop_filter = Some(Box::new(|_, _| true));
    submit(&mut c, 1, 5, &words(&["SET", &key, "v"]));
    submit(&mut c, 1, 5, &words(&["GET", &key]));
    submit(&mut c, 1, 6, &words(&["DBSIZE"]));
    c.run_for(Duration::from_millis(50));
    assert_eq!(db(&c, 1).db.pending(), 3);
    assert!(db(&c, 1).replies.is_empty());
    db_mut(&mut c, 1)
        .db
        .fail_all("CLUSTERDOWN node 1 is fenced");
    assert_eq!(db(&c, 1).db.pending(), 0);
    let mut got: Vec<(u64, Reply)> = Vec::new();
    let sf = node_mut(&mut c, 1);
    let d = sf.db.as_mut().unwrap();
    while let Some(r) = d.db.poll_reply() {
        got.push(r);
    }
    let e = || Reply::Error("CLUSTERDOWN node 1 is fenced".into());
    got.sort_by_key(|r| r.0);
    assert_eq!(got, vec![(5, e()), (5, e()), (6, e())]);
    // Heard again: late grants are released, nothing stays pinned.
    node_mut(&mut c, 1).drop_filter = None;
    c.run_for(Duration::from_secs(3));
    settle(&mut c);
    assert_eq!(run_cmd(&mut c, 2, &["SET", &key, "w"]), ok());
    assert_eq!(run_cmd(&mut c, 1, &["GET", &key]), bulk("w"));
}

#[test]
fn a_command_waits_out_a_reconfiguration_up_to_its_bound() {
    let mut dbc = db_config();
    dbc.recovery_wait = Duration::from_millis(300);
    let mut c = build_db(115, 3, |id| config(id, 64), dbc).0;
    let after = icx_fusion::grd::SlotMap::new(&[NodeId(1), NodeId(2)]);
    let key = (0..)
        .map(|i| format!("w{i}"))
        .find(|k| after.master(1, block_of(k)) == NodeId(1))
        .unwrap();
    assert_eq!(run_cmd(&mut c, 2, &["SET", &key, "v"]), ok());
    // Node 3 is gone; node 1 reconfigures alone: its directory waits for
    // node 2's report.
    let now = c.now();
    node_mut(&mut c, 1)
        .f
        .set_members(now, 2, &[NodeId(1), NodeId(2)]);
    c.node_mut(NodeId(1));
    let before = db(&c, 1).replies.len();
    submit(&mut c, 1, 7, &words(&["GET", &key]));
    c.run_for(Duration::from_millis(100));
    assert_eq!(db(&c, 1).replies.len(), before, "it waits, no TRYAGAIN");
    assert!(db(&c, 1).db.stats().recovery_waits > 0);
    let now = c.now();
    node_mut(&mut c, 2)
        .f
        .set_members(now, 2, &[NodeId(1), NodeId(2)]);
    c.node_mut(NodeId(2));
    let ok_ = c.run_until_cond(Duration::from_secs(2), 1_000_000, |c| {
        db(c, 1).replies.len() > before
    });
    assert!(ok_, "never answered");
    assert_eq!(db(&c, 1).replies[before].2, bulk("v"));
    // Past the bound: TRYAGAIN.
    let now = c.now();
    node_mut(&mut c, 1).f.set_members(now, 3, &[NodeId(1)]);
    node_mut(&mut c, 1)
        .f
        .set_members(now, 4, &[NodeId(1), NodeId(2)]);
    c.node_mut(NodeId(1));
    let t0 = c.now();
    let e = err_text(run_cmd(&mut c, 1, &["GET", &key]));
    assert!(e.starts_with("TRYAGAIN "), "{e}");
    assert!(
        c.now() - t0 >= Duration::from_millis(300),
        "waited its bound"
    );
}

#[test]
fn service_errors_become_redis_errors() {
    let mut c = cluster(113);
    // Two keys node 1 masters once node 3 is gone, `low` in a lower block,
    // which node 1 holds in X before the reconfiguration.
    let after = icx_fusion::grd::SlotMap::new(&[NodeId(1), NodeId(2)]);
    let mine = |k: &String| after.master(1, block_of(k)) == NodeId(1);
    let key = (0..).map(|i| format!("r{i}")).find(|k| mine(k)).unwrap();
    let low = (0..)
        .map(|i| format!("l{i}"))
        .find(|k| mine(k) && block_of(k) < block_of(&key))
        .unwrap();
    assert_eq!(run_cmd(&mut c, 1, &["SET", &low, "0"]), ok());
    // Node 1 reconfigures alone: its directory waits for node 2's report,
    // so what it masters is refused meanwhile.
    let now = c.now();
    node_mut(&mut c, 1)
        .f
        .set_members(now, 2, &[NodeId(1), NodeId(2)]);
    let e = err_text(run_cmd(&mut c, 1, &["GET", &key]));
    assert!(e.starts_with("TRYAGAIN "), "{e}");
    assert!(err_text(run_cmd(&mut c, 1, &["SET", &key, "v"])).starts_with("TRYAGAIN "));
    // An MSET that holds a lower block when the next fails lets it go.
    let e = err_text(run_cmd(&mut c, 1, &["MSET", &low, "1", &key, "2"]));
    assert!(e.starts_with("TRYAGAIN "), "{e}");
    let now = c.now();
    node_mut(&mut c, 2)
        .f
        .set_members(now, 2, &[NodeId(1), NodeId(2)]);
    let ok_ = c.run_until_cond(Duration::from_secs(5), 1_000_000, |c| {
        [1, 2]
            .iter()
            .all(|&n| node(c, n).f.reconfiguration().is_none())
    });
    assert!(ok_, "never reconfigured");
    assert_eq!(
        run_cmd(&mut c, 2, &["SET", &low, "3"]),
        ok(),
        "not left pinned"
    );
    assert_eq!(
        run_cmd(&mut c, 1, &["GET", &low]),
        bulk("3"),
        "no part of the MSET"
    );
    assert_eq!(run_cmd(&mut c, 1, &["GET", &key]), Reply::Null);
    assert_eq!(db(&c, 1).db.pending(), 0);
    let now = c.now();
    node_mut(&mut c, 2).f.fence(now);
    let e = err_text(run_cmd(&mut c, 2, &["GET", "other"]));
    assert_eq!(e, format!("CLUSTERDOWN {}", GcError::Fenced));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever parses is answered, and nothing panics or stays pending.
    #[test]
    fn any_parsed_command_is_answered(
        cmds in prop::collection::vec(
            (
                prop::sample::select(icx_fusion::db::Cmd::NAMES),
                prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(&[
                            "k", "k2", "0", "1", "255", "300", "-5", "nx", "xx", "get", "px",
                            "keepttl", "9223372036854775807",
                        ][..]).prop_map(|s: &str| s.as_bytes().to_vec()),
                        prop::collection::vec(any::<u8>(), 0..9000),
                    ],
                    0..6,
                ),
            ),
            1..12,
        ),
    ) {
        let mut c = build_db(114, 2, |id| config(id, 8), db_config()).0;
        let mut answered = 0;
        for (name, rest) in cmds {
            let args: Vec<Vec<u8>> = [vec![name.as_bytes().to_vec()], rest].concat();
            let now = c.now();
            let wall = db(&c, 1).wall_ms(now);
            if icx_fusion::db::Cmd::parse(&args, wall).is_ok() {
                run_bytes(&mut c, 1, &args);
                answered += 1;
            }
        }
        prop_assert_eq!(db(&c, 1).db.pending(), 0);
        prop_assert_eq!(db(&c, 1).replies.len(), answered);
    }
}
