//! Datafile and redo I/O on real files: creation by the first node (and by
//! two at once), multi-block reads in one preadv into pool buffers, write
//! and read round trips (through a bounce buffer too), a corrupt block on
//! disk, reads and writes past the end, ENOSPC on a tiny tmpfs (root),
//! group commit grouping concurrent appends, the redo scan after a torn
//! tail, and redo checkpoints (their file's two slots, a torn one, both
//! lost, the log punched out one checkpoint behind). Every file lives in a temp dir removed on drop (panics
//! included); every wait and loop is bounded.

use icx_core::{BufferPool, HugePages, NodeId, PoolConfig, SharedBuf, SizeClass};
use icx_fusion::block::{self, Header, Kind, HEADER_LEN};
use icx_fusion::io::{IoCompletion, IoData, IoError, IoOp, IoRequest};
use icx_fusion::kv;
use icx_fusion::redo::{self, Change, Record, Stop, Tail, Torn};
use icx_node::storage::{checkpoint, datafile, Storage, StorageConfig, StorageStats};
use icx_node::vote::IoMode;
use icx_node::Wake;
use icx_testkit::lab::require_or_skip;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const BS: usize = 8 << 10;
const WAIT: Duration = Duration::from_secs(20);

// ----- helpers ---------------------------------------------------------

use icx_testkit::tmp::{Mount, TempDir};

fn pool_with(classes: Vec<SizeClass>) -> BufferPool {
    BufferPool::new(&PoolConfig {
        classes,
        hugepages: HugePages::Off,
    })
    .expect("pool")
}

fn pool() -> BufferPool {
    pool_with(vec![SizeClass {
        buf_size: BS,
        count: 64,
    }])
}

fn cfg(dir: &Path, node: u16) -> StorageConfig {
    let mut c = StorageConfig::new(dir, NodeId(node));
    c.datafile_size = 1 << 20;
    c
}

/// A `Storage`, and waits for its completions by id (bounded).
struct Rig {
    s: Storage,
    pool: BufferPool,
    next: u64,
    done: HashMap<u64, Result<IoData, IoError>>,
}

impl Rig {
    fn open(c: StorageConfig) -> Rig {
        Rig::open_with(c, pool())
    }

    fn open_with(c: StorageConfig, pool: BufferPool) -> Rig {
        let wake: Wake = Arc::new(|| {});
        let s = Storage::open(c, pool.clone(), wake).expect("open storage");
        Rig {
            s,
            pool,
            next: 1,
            done: HashMap::new(),
        }
    }

    fn submit(&mut self, op: IoOp) -> u64 {
        let id = self.next;
        self.next += 1;
        self.s.submit(IoRequest { id, op });
        id
    }

    fn wait(&mut self, id: u64) -> Result<IoData, IoError> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(r) = self.done.remove(&id) {
                return r;
            }
            match self.s.poll() {
                Some(IoCompletion { id, result }) => {
                    assert!(self.done.insert(id, result).is_none(), "two completions");
                }
                None => {
                    assert!(Instant::now() < deadline, "no completion for {id}");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    fn read(&mut self, file: u16, first: u32, count: u32) -> Result<Vec<SharedBuf>, IoError> {
        let id = self.submit(IoOp::Read { file, first, count });
        match self.wait(id)? {
            IoData::Blocks(b) => Ok(b),
            other => panic!("{other:?}"),
        }
    }

    fn write(&mut self, file: u16, block: u32, img: &[u8]) -> Result<(), IoError> {
        let data = self.pool.alloc_from(img).expect("buffer").freeze();
        let id = self.submit(IoOp::Write { file, block, data });
        self.wait(id).map(|_| ())
    }

    fn append(&mut self, offset: u64, data: Vec<u8>) -> Result<(), IoError> {
        let id = self.submit(IoOp::RedoAppend { offset, data });
        self.wait(id).map(|_| ())
    }

    fn redo_read(&mut self, node: u16, offset: u64, len: u32) -> Result<Vec<u8>, IoError> {
        let id = self.submit(IoOp::RedoRead {
            node: NodeId(node),
            offset,
            len,
        });
        match self.wait(id)? {
            IoData::Bytes(b) => Ok(b),
            other => panic!("{other:?}"),
        }
    }

    fn checkpoint(&mut self, lsn: u64) -> Result<(), IoError> {
        let id = self.submit(IoOp::RedoCheckpoint { lsn });
        match self.wait(id)? {
            IoData::Done => Ok(()),
            other => panic!("{other:?}"),
        }
    }

    fn checkpoint_read(&mut self, node: u16) -> Result<u64, IoError> {
        let id = self.submit(IoOp::RedoCheckpointRead { node: NodeId(node) });
        match self.wait(id)? {
            IoData::Lsn(l) => Ok(l),
            other => panic!("{other:?}"),
        }
    }

    fn stats(&self) -> StorageStats {
        self.s.stats()
    }
}

/// Block `block` of `file` holding `key` = `value`, sealed at `scn`.
fn image(file: u16, block: u32, scn: u64, key: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    kv::put(
        block::payload_mut(&mut b),
        key.as_bytes(),
        value.as_bytes(),
        None,
    )
    .unwrap();
    block::seal(
        &mut b,
        &Header {
            kind: Kind::Data,
            file,
            block,
            scn,
        },
    );
    b
}

fn value_of(img: &[u8], key: &str) -> Vec<u8> {
    kv::get(block::payload(img), key.as_bytes())
        .unwrap()
        .expect("key")
        .value
        .to_vec()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn put(scn: u64, key: &str, value: &str) -> Record {
    Record {
        scn,
        base: 0,
        node: NodeId(1),
        file: 1,
        block: (scn % 7) as u32,
        change: Change::Put {
            key: key.into(),
            value: value.into(),
            expires_at: None,
        },
    }
}

// ----- datafiles -------------------------------------------------------

#[test]
fn first_node_creates_the_datafiles_at_their_size() {
    let d = TempDir::new("create");
    let mut c = cfg(&d.0, 1);
    c.files = 2;
    let mut r = Rig::open(c.clone());
    assert_eq!(
        names(&d.0),
        vec!["data01.dbf", "data02.dbf", "redo_1.log"],
        "no temp file left"
    );
    for n in ["data01.dbf", "data02.dbf"] {
        assert_eq!(std::fs::metadata(d.0.join(n)).unwrap().len(), 1 << 20);
    }
    assert_eq!(r.s.blocks(), vec![128, 128]);
    // A fresh datafile reads as unformatted blocks.
    for b in r.read(2, 120, 8).unwrap() {
        assert!(b.iter().all(|&x| x == 0));
    }
    r.write(2, 9, &image(2, 9, 5, "k", "v")).unwrap();
    drop(r);
    // The next node to start uses the files as they are.
    c.datafile_size = 2 << 20;
    let mut r = Rig::open(c);
    assert_eq!(r.s.blocks(), vec![128, 128]);
    assert_eq!(value_of(&r.read(2, 9, 1).unwrap()[0], "k"), b"v");
}

/// Two nodes starting at once on an empty directory: one creates the
/// datafile, and both use that one file (a write by one is read by the
/// other). Over several rounds, so the race is really run.
#[test]
fn two_nodes_starting_at_once_share_one_datafile() {
    for round in 0..8u32 {
        let d = TempDir::new("race");
        let barrier = Arc::new(Barrier::new(2));
        let rigs: Vec<Rig> = std::thread::scope(|s| {
            let hs: Vec<_> = [1u16, 2]
                .into_iter()
                .map(|node| {
                    let (b, c) = (Arc::clone(&barrier), cfg(&d.0, node));
                    s.spawn(move || {
                        b.wait();
                        Rig::open(c)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let [mut a, mut b]: [Rig; 2] = rigs.try_into().ok().unwrap();
        assert_eq!(
            names(&d.0),
            vec!["data01.dbf", "redo_1.log", "redo_2.log"],
            "round {round}"
        );
        a.write(1, 5, &image(1, 5, 1, "round", &round.to_string()))
            .unwrap();
        let got = b.read(1, 5, 1).unwrap();
        assert_eq!(value_of(&got[0], "round"), round.to_string().as_bytes());
        b.write(1, 6, &image(1, 6, 2, "from", "b")).unwrap();
        assert_eq!(value_of(&a.read(1, 6, 1).unwrap()[0], "from"), b"b");
    }
}

/// The race's worst case, taken deterministically: node 2 found no file,
/// and builds its own while node 1 creates the file and writes a block.
/// Node 2's file must not replace node 1's (as a `rename` would).
#[test]
fn a_late_creator_never_clobbers_a_datafile_in_use() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("late");
    let mut a = Rig::open(cfg(&d.0, 1));
    a.write(1, 5, &image(1, 5, 1, "mine", "node1")).unwrap();
    let ino = std::fs::metadata(d.0.join("data01.dbf")).unwrap().ino();
    assert!(!datafile::create(&cfg(&d.0, 2), 1).unwrap(), "not created");
    assert_eq!(
        std::fs::metadata(d.0.join("data01.dbf")).unwrap().ino(),
        ino
    );
    assert_eq!(names(&d.0), vec!["data01.dbf", "redo_1.log"]);
    let mut b = Rig::open(cfg(&d.0, 2));
    assert_eq!(value_of(&b.read(1, 5, 1).unwrap()[0], "mine"), b"node1");
    b.write(1, 6, &image(1, 6, 2, "from", "node2")).unwrap();
    assert_eq!(value_of(&a.read(1, 6, 1).unwrap()[0], "from"), b"node2");
}

#[test]
fn multi_block_read_is_one_preadv_into_pool_buffers() {
    let d = TempDir::new("multi");
    let mut r = Rig::open(cfg(&d.0, 1));
    for b in 0..16 {
        r.write(
            1,
            100 + b,
            &image(1, 100 + b, u64::from(b) + 1, "n", &b.to_string()),
        )
        .unwrap();
    }
    let before = r.stats();
    let in_use = r.pool.in_use();
    let blocks = r.read(1, 100, 16).unwrap();
    let after = r.stats();
    assert_eq!(after.read_calls - before.read_calls, 1, "one preadv");
    assert_eq!(after.blocks_read - before.blocks_read, 16);
    assert_eq!(r.pool.in_use(), in_use + 16, "the blocks are pool buffers");
    for (i, b) in blocks.iter().enumerate() {
        let h = block::verify(b, 1, 100 + i as u32).unwrap();
        assert_eq!(h.scn, i as u64 + 1);
        assert_eq!(value_of(b, "n"), i.to_string().as_bytes());
    }
    assert_eq!(after.writes, 16);
    assert_eq!(after.errors, 0);
}

#[test]
fn direct_io_where_the_filesystem_allows_it() {
    let d = TempDir::new("modes");
    let r = Rig::open(cfg(&d.0, 1));
    let probe = d.0.join(".probe");
    let direct = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    for (path, mode) in r.s.modes() {
        eprintln!("{}: {mode}", path.display());
        if direct {
            assert_eq!(mode, IoMode::Direct, "{}", path.display());
        }
    }
}

/// A pool whose 8 KiB-fitting buffers are not page-aligned: `O_DIRECT`
/// goes through the aligned bounce buffer, with the same results.
#[test]
fn unaligned_pool_buffers_go_through_a_bounce_buffer() {
    let d = TempDir::new("bounce");
    let p = pool_with(vec![SizeClass {
        buf_size: BS + 512,
        count: 16,
    }]);
    let mut r = Rig::open_with(cfg(&d.0, 1), p);
    for b in 0..4 {
        r.write(1, b, &image(1, b, 1, "b", &b.to_string())).unwrap();
    }
    let blocks = r.read(1, 0, 4).unwrap();
    assert!(blocks
        .iter()
        .any(|b| !(b.as_ptr() as usize).is_multiple_of(4096)));
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(value_of(b, "b"), i.to_string().as_bytes());
    }
}

#[test]
fn invalid_images_are_never_written() {
    let d = TempDir::new("invalid");
    let mut r = Rig::open(cfg(&d.0, 1));
    // Sealed for block 3, written at 4: a misdirected write.
    match r.write(1, 4, &image(1, 3, 1, "k", "v")) {
        Err(IoError::Io(m)) => assert!(m.contains("refusing"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut bad = image(1, 4, 1, "k", "v");
    bad[HEADER_LEN + 5] ^= 1;
    assert!(r.write(1, 4, &bad).is_err());
    assert!(r.write(1, 4, &bad[..4096]).is_err());
    assert!(r.read(1, 4, 1).unwrap()[0].iter().all(|&x| x == 0));
}

#[test]
fn a_corrupt_block_on_disk_is_a_counted_error_never_data() {
    let d = TempDir::new("corrupt");
    let mut r = Rig::open(cfg(&d.0, 1));
    for b in 0..4 {
        r.write(1, b, &image(1, b, 7 + u64::from(b), "k", "v"))
            .unwrap();
    }
    // The SCN alone (what a redo checkpoint settles with): a written
    // block's, and 0 for one never written.
    let scn = |r: &mut Rig, block| {
        let id = r.submit(IoOp::ReadScn { file: 1, block });
        r.wait(id)
    };
    assert!(matches!(scn(&mut r, 3), Ok(IoData::Scn(10))));
    assert!(matches!(scn(&mut r, 5), Ok(IoData::Scn(0))));
    // One bit of block 2's payload rots on disk.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.0.join("data01.dbf"))
        .unwrap();
    let at = 2 * BS as u64 + 1000;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    f.sync_all().unwrap();
    match r.read(1, 2, 1) {
        Err(IoError::Io(m)) => {
            eprintln!("{m}");
            assert!(m.contains("data01.dbf: block 2: corrupt: checksum"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.stats().corrupt, 1);
    // Its SCN is refused as well: a corrupt header says nothing.
    assert!(scn(&mut r, 2).is_err());
    let corrupt = r.stats().corrupt;
    // A run over it fails as a whole; the blocks around it are fine.
    assert!(r.read(1, 0, 4).is_err());
    assert_eq!(r.stats().corrupt, corrupt + 1);
    assert_eq!(value_of(&r.read(1, 3, 1).unwrap()[0], "k"), b"v");
    assert_eq!(r.pool.in_use(), 0, "no buffer kept by a failed read");
}

#[test]
fn past_the_end_is_out_of_range_never_an_extension() {
    let d = TempDir::new("range");
    let mut r = Rig::open(cfg(&d.0, 1));
    let oor = |block| {
        Err(IoError::OutOfRange {
            file: 1,
            block,
            blocks: 128,
        })
    };
    assert_eq!(r.read(1, 127, 2).map(|_| ()), oor(128));
    assert_eq!(r.read(1, 500, 1).map(|_| ()), oor(500));
    assert_eq!(r.write(1, 128, &image(1, 128, 1, "k", "v")), oor(128));
    assert_eq!(
        std::fs::metadata(d.0.join("data01.dbf")).unwrap().len(),
        1 << 20
    );
    assert!(r.read(1, 127, 1).is_ok());
    assert_eq!(r.read(2, 0, 1).map(|_| ()), Err(IoError::NotFound));
    assert_eq!(r.read(0, 0, 1).map(|_| ()), Err(IoError::NotFound));
}

#[test]
fn enospc_on_a_tiny_tmpfs() {
    let m = match Mount::new("tmpfs", "size=1m") {
        Ok(m) => m,
        Err(why) => {
            require_or_skip(Some(why));
            return;
        }
    };
    // A datafile larger than the filesystem: a clear error, no file.
    let mut c = cfg(&m.at, 1);
    c.datafile_size = 4 << 20;
    let e = Storage::open(c, pool(), Arc::new(|| {})).unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
    assert!(e.to_string().contains("fallocate"), "{e}");
    assert!(!m.at.join("data01.dbf").exists());
    assert!(names(&m.at).is_empty(), "{:?}", names(&m.at));
    // One that fits, then redo until the filesystem is full.
    let mut c = cfg(&m.at, 1);
    c.datafile_size = 256 << 10;
    let mut r = Rig::open(c);
    let log = m.at.join("redo_1.log");
    let (mut tail, mut full) = (Tail::default(), false);
    for i in 0..64 {
        let mut next = tail;
        let g = redo::encode_group(&mut next, &[put(i + 1, "k", &"v".repeat(60_000))]).unwrap();
        match r.append(tail.lsn, g) {
            Ok(()) => tail = next,
            Err(e) => {
                assert_eq!(e, IoError::NoSpace);
                full = true;
                break;
            }
        }
    }
    assert!(full, "1 MiB tmpfs never filled");
    // Nothing of the refused group was written.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), tail.lsn);
    let s = redo::scan(&std::fs::read(&log).unwrap(), 0, Some(0));
    assert_eq!(s.stop, Stop::End);
    assert!(!s.records.is_empty());
    // Datafile writes still work: its space was allocated at creation.
    r.write(1, 31, &image(1, 31, 1, "k", "v")).unwrap();
}

// ----- redo ------------------------------------------------------------

/// Clients on 8 threads, each appending a commit and waiting for it to be
/// durable: commits made while a sync runs share the next one. Then one
/// burst of 64 appends. The log scans back to every record, in order.
#[test]
fn group_commit_groups_concurrent_appends() {
    let d = TempDir::new("group");
    let r = Mutex::new(Rig::open(cfg(&d.0, 1)));
    let tail = Mutex::new(Tail::default());
    let scn = AtomicU64::new(1);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (r, tail, scn) = (&r, &tail, &scn);
            s.spawn(move || {
                for i in 0..20 {
                    let id = {
                        // Encoded and queued in log order.
                        let mut tl = tail.lock().unwrap();
                        let n = scn.fetch_add(1, Ordering::SeqCst);
                        let at = tl.lsn;
                        let g = redo::encode_group(
                            &mut tl,
                            &[put(n, &format!("t{t}"), &i.to_string())],
                        )
                        .unwrap();
                        r.lock().unwrap().submit(IoOp::RedoAppend {
                            offset: at,
                            data: g,
                        })
                    };
                    let deadline = Instant::now() + WAIT;
                    loop {
                        let mut g = r.lock().unwrap();
                        if let Some(res) = g.done.remove(&id) {
                            res.expect("append");
                            break;
                        }
                        if let Some(c) = g.s.poll() {
                            g.done.insert(c.id, c.result);
                            continue;
                        }
                        drop(g);
                        assert!(Instant::now() < deadline, "append {id} not done");
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            });
        }
    });
    let mut r = r.into_inner().unwrap();
    let st = r.stats();
    eprintln!(
        "8 waiting clients: {} appends in {} groups (max {}, sizes {:?})",
        st.redo_appends, st.redo_groups, st.redo_max_group, st.redo_group_sizes
    );
    assert_eq!(st.redo_appends, 160);
    assert!(st.redo_groups < 160 && st.redo_max_group >= 2, "{st:?}");
    assert_eq!(st.redo_group_sizes.iter().sum::<u64>(), st.redo_groups);
    assert!(st.redo_write_max > Duration::ZERO && st.redo_write_max <= st.redo_write_time);
    // A burst: queued while the first one syncs.
    let mut tl = tail.into_inner().unwrap();
    let ids: Vec<u64> = (0..64)
        .map(|i| {
            let at = tl.lsn;
            let g = redo::encode_group(&mut tl, &[put(1000 + i, "burst", "x")]).unwrap();
            r.submit(IoOp::RedoAppend {
                offset: at,
                data: g,
            })
        })
        .collect();
    for id in ids {
        r.wait(id).unwrap();
    }
    let burst = r.stats().redo_groups - st.redo_groups;
    eprintln!("a burst of 64: {burst} groups");
    assert!(burst < 32, "{burst} groups for 64 queued appends");
    let log = r.redo_read(1, 0, 16 << 20).unwrap();
    let s = redo::scan(&log, 0, Some(0));
    assert_eq!(s.stop, Stop::End);
    assert_eq!(s.end, tl);
    assert_eq!(s.records.len(), 224);
    let scns: Vec<u64> = s.records.iter().map(|(_, r)| r.scn).collect();
    assert!(scns[..160].windows(2).all(|w| w[0] < w[1]), "log order");
}

/// A crash tore the last group: the scan stops at its first bad record,
/// the restarted node appends from there, and the log scans clean again.
#[test]
fn redo_scan_after_a_torn_tail() {
    let d = TempDir::new("torn");
    let mut r = Rig::open(cfg(&d.0, 1));
    let mut tail = Tail::default();
    let mut lsns = Vec::new();
    for g in 0..3u64 {
        let recs: Vec<_> = (0..2)
            .map(|i| put(g * 2 + i + 1, "k", &"v".repeat(100)))
            .collect();
        let at = tail.lsn;
        let bytes = redo::encode_group(&mut tail, &recs).unwrap();
        lsns.push(at);
        r.append(at, bytes).unwrap();
    }
    drop(r);
    // The third group's second record never fully reached the disk.
    let path = d.0.join("redo_1.log");
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    // The first record's length: header, put fields, key, value, CRC.
    let second = lsns[2] + (redo::HEADER_LEN + 16 + 1 + 100 + 4) as u64;
    f.write_all_at(&[0xde; 64], second + 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut r = Rig::open(cfg(&d.0, 1));
    let s = redo::scan(&r.redo_read(1, 0, 1 << 20).unwrap(), 0, Some(0));
    assert_eq!(s.records.len(), 5);
    match &s.stop {
        Stop::Torn { at, why } => {
            assert_eq!(*at, second);
            assert!(matches!(why, Torn::Checksum { .. }), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Appending again from the end of the valid part.
    let mut t = s.end;
    let at = t.lsn;
    let g = redo::encode_group(&mut t, &[put(50, "after", "crash")]).unwrap();
    r.append(at, g).unwrap();
    let s = redo::scan(&r.redo_read(1, 0, 1 << 20).unwrap(), 0, Some(0));
    assert_eq!(s.stop, Stop::End, "{:?}", s.stop);
    assert_eq!(s.records.len(), 6);
    assert_eq!(s.records[5].1.scn, 50);
    assert_eq!(s.end, t);
    // A log cut in the middle of a record: torn, truncated.
    let len = std::fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 300)
        .unwrap();
    let s = redo::scan(&r.redo_read(1, 0, 1 << 20).unwrap(), 0, Some(0));
    assert_eq!(s.records.len(), 5);
    assert!(
        matches!(
            s.stop,
            Stop::Torn {
                why: Torn::Truncated { .. },
                ..
            }
        ),
        "{:?}",
        s.stop
    );
}

// ----- redo checkpoints ------------------------------------------------

/// `groups` groups of two records each (1.5 KiB a group, padded to
/// sectors) appended from `tail`: the LSN each group starts at.
fn append_groups(r: &mut Rig, tail: &mut Tail, groups: u64) -> Vec<u64> {
    let first = r.stats().redo_appends + 1;
    (0..groups)
        .map(|g| {
            let n = (first + g) * 2;
            let recs = [put(n, "k", &"v".repeat(1000)), put(n + 1, "j", "w")];
            let at = tail.lsn;
            let bytes = redo::encode_group(tail, &recs).unwrap();
            r.append(at, bytes).unwrap();
            at
        })
        .collect()
}

fn flip_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    f.sync_all().unwrap();
}

/// Checkpoints at group boundaries: read back by this node and another,
/// the second one punches the log out below the first (whole pages, the
/// size kept), a restart scans from the checkpoint to the same tail, and
/// a checkpoint never moves back nor past the log's end.
#[test]
fn redo_checkpoint_round_trip_punches_one_behind() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("ckpt");
    let mut r = Rig::open(cfg(&d.0, 1));
    let log = d.0.join("redo_1.log");
    let ckpt = d.0.join("redo_1.ckpt");
    let mut tail = Tail::default();
    let lsns = append_groups(&mut r, &mut tail, 12);
    assert_eq!(r.checkpoint_read(1), Ok(0), "no checkpoint file yet");
    assert_eq!(r.s.redo_checkpoint().unwrap(), 0);
    assert!(!ckpt.exists());
    let before = std::fs::read(&log).unwrap();

    let c1 = lsns[7];
    assert!(
        c1 >= 8192 && !c1.is_multiple_of(4096),
        "{c1}: rounding is exercised"
    );
    r.checkpoint(c1).unwrap();
    assert_eq!(r.checkpoint_read(1), Ok(c1));
    assert_eq!(checkpoint::read_checkpoint(&ckpt).unwrap(), Some(c1));
    assert_eq!(std::fs::metadata(&ckpt).unwrap().len(), 1024);
    assert_eq!(
        names(&d.0),
        vec!["data01.dbf", "redo_1.ckpt", "redo_1.log"],
        "no temp file left"
    );
    let st = r.stats();
    assert_eq!((st.redo_checkpoints, st.redo_punched_bytes), (1, 0));
    assert_eq!(
        std::fs::read(&log).unwrap(),
        before,
        "nothing punched below the first"
    );

    let blocks = std::fs::metadata(&log).unwrap().blocks();
    let c2 = lsns[10];
    r.checkpoint(c2).unwrap();
    assert_eq!(r.checkpoint_read(1), Ok(c2));
    let st = r.stats();
    assert_eq!(st.redo_checkpoints, 2);
    let now = std::fs::read(&log).unwrap();
    assert_eq!(now.len() as u64, tail.lsn, "the log keeps its size");
    let punched = c1 - c1 % 4096;
    if st.redo_punch_unsupported == 1 {
        eprintln!("this filesystem cannot punch holes: the log keeps its space");
        assert_eq!(st.redo_punched_bytes, 0);
        assert_eq!(now, before);
    } else {
        assert_eq!(st.redo_punched_bytes, punched);
        let p = punched as usize;
        assert!(now[..p].iter().all(|&b| b == 0), "zeroes below the first");
        assert_eq!(now[p..], before[p..], "intact from the page of the first");
        let after = std::fs::metadata(&log).unwrap().blocks();
        eprintln!("{blocks} blocks of 512 B before the punch, {after} after ({punched} B punched)");
        assert!(blocks - after >= punched / 512, "{blocks} -> {after}");
    }
    // The log from the first checkpoint still scans whole (one behind).
    let s = redo::scan(&r.redo_read(1, c1, 1 << 20).unwrap(), c1, None);
    assert_eq!(s.stop, Stop::End);
    assert_eq!(s.end, tail);
    assert_eq!(s.records.len(), 2 * (12 - 7));
    assert_eq!(s.records[0].0, c1);

    // Never back, never past the end; the one in force stays.
    match r.checkpoint(c1) {
        Err(IoError::Io(m)) => assert!(m.contains("below the one in force"), "{m}"),
        other => panic!("{other:?}"),
    }
    match r.checkpoint(tail.lsn + 512) {
        Err(IoError::Io(m)) => assert!(m.contains("beyond the log's end"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.checkpoint_read(1), Ok(c2));

    // Another node reads it (recovery reads a dead node's); its own is 0.
    let mut two = Rig::open(cfg(&d.0, 2));
    assert_eq!(two.checkpoint_read(1), Ok(c2));
    assert_eq!(two.checkpoint_read(2), Ok(0));
    drop(two);

    // A restart scans from the checkpoint and continues at the same tail.
    drop(r);
    let mut r = Rig::open(cfg(&d.0, 1));
    assert_eq!(r.s.redo_checkpoint().unwrap(), c2);
    assert_eq!(r.s.redo_tail().unwrap(), tail);
    append_groups(&mut r, &mut tail, 2);
    assert_eq!(r.s.redo_tail().unwrap(), tail);
    // Its first checkpoint punches below the one the last life left.
    r.checkpoint(tail.lsn).unwrap();
    if r.stats().redo_punch_unsupported == 0 {
        assert_eq!(r.stats().redo_punched_bytes, c2 - c2 % 4096);
    }
    drop(r);
    let r = Rig::open(cfg(&d.0, 1));
    assert_eq!(r.s.redo_checkpoint().unwrap(), tail.lsn);
    assert_eq!(r.s.redo_tail().unwrap().lsn, tail.lsn, "nothing after it");
}

/// A crash tore the newest slot: the older checkpoint is used (its log
/// bytes are still there, punching is one behind), and the next
/// checkpoint rewrites the torn slot.
#[test]
fn a_torn_checkpoint_slot_falls_back_to_the_older_one() {
    let d = TempDir::new("ckpt-torn");
    let mut r = Rig::open(cfg(&d.0, 1));
    let ckpt = d.0.join("redo_1.ckpt");
    let mut tail = Tail::default();
    let lsns = append_groups(&mut r, &mut tail, 8);
    r.checkpoint(lsns[3]).unwrap(); // seq 1: slot 1
    r.checkpoint(lsns[6]).unwrap(); // seq 2: slot 0
    drop(r);
    // The LSN of slot 0, the newest, half written.
    flip_byte(&ckpt, 20);
    let mut r = Rig::open(cfg(&d.0, 1));
    assert_eq!(r.s.redo_checkpoint().unwrap(), lsns[3]);
    assert_eq!(r.checkpoint_read(1), Ok(lsns[3]));
    assert_eq!(r.s.redo_tail().unwrap(), tail, "scanned from the older one");
    let s = redo::scan(&r.redo_read(1, lsns[3], 1 << 20).unwrap(), lsns[3], None);
    assert_eq!((s.stop, s.records.len()), (Stop::End, 2 * 5));
    // The next checkpoint takes seq 2 again: the torn slot, rewritten.
    r.checkpoint(lsns[7]).unwrap();
    assert_eq!(r.checkpoint_read(1), Ok(lsns[7]));
    let f = std::fs::read(&ckpt).unwrap();
    assert_eq!(
        checkpoint::decode(&f),
        Ok(checkpoint::Slot {
            seq: 2,
            lsn: lsns[7]
        })
    );
    assert_eq!(
        checkpoint::decode_slot(&f[512..]),
        Ok(checkpoint::Slot {
            seq: 1,
            lsn: lsns[3]
        })
    );
}

/// Both slots lost: the log's start is unknown, and every reader says so
/// (never 0: the log below may be punched out); so does a checkpoint
/// past the end of a log cut short.
#[test]
fn both_checkpoint_slots_corrupt_is_a_clear_error() {
    let d = TempDir::new("ckpt-lost");
    let mut r = Rig::open(cfg(&d.0, 1));
    let ckpt = d.0.join("redo_1.ckpt");
    let mut tail = Tail::default();
    let lsns = append_groups(&mut r, &mut tail, 6);
    r.checkpoint(lsns[2]).unwrap();
    r.checkpoint(lsns[4]).unwrap();
    drop(r);
    flip_byte(&ckpt, 2);
    flip_byte(&ckpt, 512 + 9);
    // The storage opens (its datafiles serve); the log's start does not.
    let mut r = Rig::open(cfg(&d.0, 1));
    let e = r.s.redo_tail().unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let m = e.to_string();
    assert!(m.contains("redo_1.ckpt: no valid checkpoint slot"), "{m}");
    assert!(
        m.contains("slot 0: bad magic") && m.contains("slot 1: bad checksum"),
        "{m}"
    );
    assert!(r.s.redo_checkpoint().is_err());
    match r.checkpoint_read(1) {
        Err(IoError::Io(m)) => assert!(m.contains("no valid checkpoint slot"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut two = Rig::open(cfg(&d.0, 2));
    assert!(matches!(two.checkpoint_read(1), Err(IoError::Io(_))));
    drop(two);
    // Nor is a new checkpoint written over them (its seq is unknown).
    match r.checkpoint(tail.lsn) {
        Err(IoError::Io(m)) => assert!(m.contains("no valid checkpoint slot"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(r.stats().errors >= 2);
    drop(r);

    // A valid checkpoint beyond the end of a log cut short.
    let d = TempDir::new("ckpt-past");
    let mut r = Rig::open(cfg(&d.0, 1));
    let mut tail = Tail::default();
    let lsns = append_groups(&mut r, &mut tail, 4);
    r.checkpoint(lsns[3]).unwrap();
    drop(r);
    OpenOptions::new()
        .write(true)
        .open(d.0.join("redo_1.log"))
        .unwrap()
        .set_len(lsns[2])
        .unwrap();
    let r = Rig::open(cfg(&d.0, 1));
    let m = r.s.redo_tail().unwrap_err().to_string();
    assert!(m.contains("beyond the log's end"), "{m}");
}

#[test]
fn redo_of_another_node_is_read_and_a_missing_log_is_not_found() {
    let d = TempDir::new("others");
    let mut one = Rig::open(cfg(&d.0, 1));
    let mut t = Tail::default();
    let g = redo::encode_group(&mut t, &[put(1, "a", "1"), put(2, "b", "2")]).unwrap();
    one.append(0, g.clone()).unwrap();
    let mut two = Rig::open(cfg(&d.0, 2));
    assert_eq!(two.redo_read(1, 0, 1 << 20).unwrap(), g);
    // Unaligned ranges, a range past the end, the end itself.
    assert_eq!(two.redo_read(1, 100, 50).unwrap(), &g[100..150]);
    assert_eq!(two.redo_read(1, 300, 1 << 20).unwrap(), &g[300..]);
    assert!(two.redo_read(1, g.len() as u64, 10).unwrap().is_empty());
    assert_eq!(two.redo_read(9, 0, 10), Err(IoError::NotFound));
    assert_eq!(two.stats().redo_reads, 5);
}

#[test]
fn a_full_queue_is_a_counted_refusal_answered_at_once() {
    let d = TempDir::new("queue");
    let mut c = cfg(&d.0, 1);
    c.workers = 1;
    c.queue_depth = 1;
    let mut r = Rig::open(c);
    let ids: Vec<u64> = (0..200)
        .map(|_| {
            r.submit(IoOp::Read {
                file: 1,
                first: 0,
                count: 16,
            })
        })
        .collect();
    let mut refused = 0;
    for id in ids {
        match r.wait(id) {
            Ok(_) => {}
            Err(IoError::Io(m)) if m.contains("queue full") => refused += 1,
            Err(IoError::NoBuffer) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0);
    assert_eq!(r.stats().refusals, refused);
}

/// Every completion comes with a wake; dropping the handle stops and
/// joins every worker within its bound, even with requests queued.
#[test]
fn wakes_per_completion_and_drop_joins_the_workers() {
    let d = TempDir::new("drop");
    let wakes = Arc::new(AtomicU64::new(0));
    let w = Arc::clone(&wakes);
    let wake: Wake = Arc::new(move || {
        w.fetch_add(1, Ordering::SeqCst);
    });
    let s = Storage::open(cfg(&d.0, 1), pool(), Arc::clone(&wake)).unwrap();
    let read = |id| IoRequest {
        id,
        op: IoOp::Read {
            file: 1,
            first: 0,
            count: 1,
        },
    };
    s.submit(read(1));
    let deadline = Instant::now() + WAIT;
    let c = loop {
        if let Some(c) = s.poll() {
            break c;
        }
        assert!(Instant::now() < deadline, "no completion");
        std::thread::sleep(Duration::from_micros(200));
    };
    assert_eq!(c.id, 1);
    assert!(c.result.is_ok());
    assert!(wakes.load(Ordering::SeqCst) >= 1);
    drop(c);
    for id in 2..200 {
        s.submit(read(id));
    }
    let t = Instant::now();
    drop(s);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(Arc::strong_count(&wake), 1, "a worker still holds the wake");
}
