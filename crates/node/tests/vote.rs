//! Voting-file I/O on real files: round trips, missing files, slot writes,
//! unaligned lengths, replaced files, the I/O mode per filesystem (ext4,
//! tmpfs, ramfs), ENOSPC, a stuck file (a FIFO) that delays no other, a
//! full queue, and a real `Membership` forming a one-node cluster on three
//! files. Every file lives in a temp dir removed on drop (panics included);
//! every loop is bounded.

use icx_core::{BufferPool, NodeId, PoolConfig};
use icx_membership::wire::FILE_MAGIC;
use icx_membership::{Config, DiskCompletion, DiskError, DiskOp, DiskRequest, Membership, State};
use icx_node::vote::{IoMode, VoteIo, QUEUE_DEPTH};
use icx_node::Wake;
use icx_testkit::lab::require_or_skip;
use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ----- helpers ---------------------------------------------------------

use icx_testkit::tmp::{Mount, TempDir};

/// A `VoteIo` whose wake counts and signals, and a bounded wait on it.
struct Rig {
    io: VoteIo,
    wakes: Arc<AtomicUsize>,
    woken: crossbeam_channel::Receiver<()>,
    /// The test's own clone; `strong_count == 1` once every worker is gone.
    wake: Wake,
    next_id: u64,
}

impl Rig {
    fn new(paths: Vec<PathBuf>) -> Rig {
        let wakes = Arc::new(AtomicUsize::new(0));
        let (tx, woken) = crossbeam_channel::bounded(1);
        let w = Arc::clone(&wakes);
        let wake: Wake = Arc::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
            let _ = tx.try_send(());
        });
        let io = VoteIo::start(paths, Arc::clone(&wake)).expect("start");
        Rig {
            io,
            wakes,
            woken,
            wake,
            next_id: 1,
        }
    }

    fn submit(&mut self, file: usize, op: DiskOp) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.io.submit(DiskRequest { id, file, op });
        id
    }

    /// The next completion, waiting at most `within`.
    fn next(&mut self, within: Duration) -> Option<DiskCompletion> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.io.poll() {
                return Some(c);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = self.woken.recv_timeout(left.min(Duration::from_millis(50)));
        }
    }

    /// One request, waited for (5 s at most).
    fn run(&mut self, file: usize, op: DiskOp) -> Result<Vec<u8>, DiskError> {
        let id = self.submit(file, op);
        let c = self
            .next(Duration::from_secs(5))
            .expect("completion within 5 s");
        assert_eq!((c.id, c.file), (id, file));
        c.result
    }

    fn write(&mut self, file: usize, offset: u64, data: &[u8]) -> Result<Vec<u8>, DiskError> {
        self.run(
            file,
            DiskOp::Write {
                offset,
                data: data.to_vec(),
            },
        )
    }

    fn read(&mut self, file: usize) -> Result<Vec<u8>, DiskError> {
        self.run(file, DiskOp::Read)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Whether the filesystem holding `dir` accepts an `O_DIRECT` open.
fn accepts_direct(dir: &Path) -> bool {
    let p = dir.join(".direct-probe");
    let ok = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

fn fs_type(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("? ({e})"))
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success(), "mkfifo {}", p.display());
}

/// Lets a worker blocked opening `fifo` for reading through (a writer
/// arrives; non-blocking, so it never waits for a reader that is not
/// there), then waits until every worker has let go of the wake.
fn unblock_fifo_and_wait_workers(fifo: &Path, wake: Wake) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&wake) > 1 && Instant::now() < deadline {
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        Arc::strong_count(&wake),
        1,
        "a voting-file worker is still alive 5 s after its FIFO was opened"
    );
}

// ----- basics ----------------------------------------------------------

#[test]
fn write_then_read_round_trip() {
    let dir = TempDir::new("rt");
    let mut r = Rig::new(vec![dir.path("vf0")]);
    let data = pattern(512 * 5, 7);
    assert_eq!(r.write(0, 0, &data), Ok(Vec::new()));
    assert_eq!(r.read(0), Ok(data.clone()));
    assert_eq!(std::fs::read(dir.path("vf0")).expect("file"), data);
    let s = r.io.stats();
    assert_eq!((s.reads, s.writes, s.errors, s.refusals), (1, 1, 0, 0));
    assert!(s.last_latency[0].is_some());
    assert!(
        r.wakes.load(Ordering::SeqCst) >= 2,
        "wake after each completion"
    );
}

#[test]
fn missing_file_reads_not_found_and_a_write_creates_it() {
    let dir = TempDir::new("missing");
    let p = dir.path("vf0");
    let mut r = Rig::new(vec![p.clone()]);
    assert_eq!(r.read(0), Err(DiskError::NotFound));
    assert!(!p.exists(), "a read must not create the file");
    assert_eq!(r.write(0, 0, &[9u8; 1024]), Ok(Vec::new()));
    let m = std::fs::metadata(&p).expect("created");
    assert_eq!(m.len(), 1024);
    let mode = m.permissions().mode() & 0o777;
    assert_eq!(mode & !0o644, 0, "mode {mode:o} beyond 0644");
    assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
    assert_eq!(r.read(0), Ok(vec![9u8; 1024]));
}

#[test]
fn slot_writes_leave_other_bytes_intact() {
    let dir = TempDir::new("slots");
    let mut r = Rig::new(vec![dir.path("vf0")]);
    // Header and three 512 B slots, then slot 2 and a write past the end.
    let mut want = pattern(512 * 4, 1);
    r.write(0, 0, &want).expect("format");
    let slot = pattern(512, 99);
    r.write(0, 1024, &slot).expect("slot 2");
    want[1024..1536].copy_from_slice(&slot);
    r.write(0, 4096, &slot).expect("extends");
    want.resize(4096, 0);
    want.extend_from_slice(&slot);
    assert_eq!(r.read(0).expect("read"), want);
}

#[test]
fn unaligned_file_lengths_read_whole() {
    let dir = TempDir::new("unaligned");
    let lens = [0usize, 1, 511, 1000, 4095, 4097, 9000];
    let paths: Vec<_> = lens.iter().map(|n| dir.path(&format!("vf{n}"))).collect();
    for (p, &n) in paths.iter().zip(&lens) {
        std::fs::write(p, pattern(n, n as u8)).expect("write");
    }
    let mut r = Rig::new(paths);
    for (i, &n) in lens.iter().enumerate() {
        assert_eq!(r.read(i).expect("read"), pattern(n, n as u8), "{n} B");
    }
    eprintln!("modes: {:?}", r.io.modes());
}

#[test]
fn unaligned_write_works_and_falls_back_where_direct_refuses_it() {
    let dir = TempDir::new("unaligned-write");
    let mut r = Rig::new(vec![dir.path("vf0")]);
    r.write(0, 0, &[1u8; 1024]).expect("aligned");
    let direct = r.io.modes()[0] == IoMode::Direct;
    r.write(0, 3, &[2u8; 100]).expect("unaligned");
    let mut want = vec![1u8; 1024];
    want[3..103].fill(2);
    assert_eq!(r.read(0).expect("read"), want);
    let mode = &r.io.modes()[0];
    eprintln!("{}: {mode}", fs_type(&dir.0));
    if direct {
        // The kernel refused the unaligned O_DIRECT write: buffered now.
        match mode {
            IoMode::Buffered { reason } => {
                assert!(
                    reason.contains("EINVAL") && reason.contains("write"),
                    "{reason}"
                )
            }
            m => panic!("still {m:?} after an unaligned write"),
        }
    }
}

#[test]
fn replaced_and_deleted_files_are_seen() {
    let dir = TempDir::new("replaced");
    let p = dir.path("vf0");
    let mut r = Rig::new(vec![p.clone()]);
    r.write(0, 0, &[1u8; 512]).expect("write");
    assert_eq!(r.read(0).expect("read"), vec![1u8; 512]);
    // Deleted and recreated under the open descriptor: the new file.
    std::fs::remove_file(&p).expect("rm");
    std::fs::write(&p, [2u8; 700]).expect("recreate");
    assert_eq!(r.read(0).expect("read"), vec![2u8; 700]);
    std::fs::remove_file(&p).expect("rm");
    assert_eq!(r.read(0), Err(DiskError::NotFound));
}

#[test]
fn errors_name_the_path_and_the_os_error() {
    let dir = TempDir::new("errors");
    let p = dir.path("no-such-dir").join("vf0");
    let mut r = Rig::new(vec![p.clone()]);
    match r.write(0, 0, &[0u8; 512]) {
        Err(DiskError::Io(m)) => {
            assert!(m.starts_with(&p.display().to_string()), "{m}");
            assert!(m.contains("No such file or directory (os error 2)"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A directory where a file is expected.
    let d = dir.path("adir");
    std::fs::create_dir(&d).expect("mkdir");
    let mut r2 = Rig::new(vec![d]);
    match r2.read(0) {
        Err(DiskError::Io(m)) => assert!(m.contains("adir"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A file index out of range is answered, not dropped.
    assert!(
        matches!(r.run(5, DiskOp::Read), Err(DiskError::Io(m)) if m.contains("no voting file 5"))
    );
    assert_eq!(r.io.stats().errors, 1);
}

// ----- modes -----------------------------------------------------------

#[test]
fn direct_where_the_filesystem_allows_it() {
    let dir = TempDir::new("mode");
    let mut r = Rig::new(vec![dir.path("vf0")]);
    assert_eq!(r.io.modes(), vec![IoMode::NotOpened]);
    r.write(0, 0, &[0u8; 512]).expect("write");
    let fs = fs_type(&dir.0);
    let mode = r.io.modes().remove(0);
    eprintln!("{} ({fs}): {mode}", dir.0.display());
    if accepts_direct(&dir.0) {
        assert_eq!(mode, IoMode::Direct, "{fs}");
    } else {
        assert!(matches!(mode, IoMode::Buffered { .. }), "{fs}: {mode:?}");
    }
    if fs.starts_with("ext") || fs == "xfs" {
        assert_eq!(mode, IoMode::Direct, "{fs} supports O_DIRECT");
    }
}

#[test]
fn ramfs_is_buffered_with_a_reason() {
    let m = match Mount::new("ramfs", "") {
        Ok(m) => m,
        Err(why) => {
            require_or_skip(Some(why));
            return;
        }
    };
    let mut r = Rig::new(vec![m.path("vf0")]);
    r.write(0, 0, &pattern(1536, 3)).expect("write");
    assert_eq!(r.read(0).expect("read"), pattern(1536, 3));
    let mode = r.io.modes().remove(0);
    eprintln!("ramfs: {mode}");
    assert_eq!(
        mode,
        IoMode::Buffered {
            reason: "O_DIRECT refused by the filesystem: EINVAL".into()
        }
    );
}

#[test]
fn tmpfs_mode_matches_what_the_kernel_allows() {
    let m = match Mount::new("tmpfs", "size=1m") {
        Ok(m) => m,
        Err(why) => {
            require_or_skip(Some(why));
            return;
        }
    };
    let mut r = Rig::new(vec![m.path("vf0")]);
    r.write(0, 0, &pattern(1536, 4)).expect("write");
    assert_eq!(r.read(0).expect("read"), pattern(1536, 4));
    let mode = r.io.modes().remove(0);
    // Linux 6.6 and later open tmpfs files with O_DIRECT (served from the
    // page cache, which is all tmpfs has); earlier kernels refuse it.
    eprintln!("tmpfs: {mode}");
    if accepts_direct(&m.at) {
        assert_eq!(mode, IoMode::Direct);
    } else {
        match mode {
            IoMode::Buffered { reason } => assert!(reason.contains("EINVAL"), "{reason}"),
            m => panic!("{m:?}"),
        }
    }
}

#[test]
fn enospc_is_an_error_then_a_smaller_write_works() {
    let m = match Mount::new("tmpfs", "size=16k") {
        Ok(m) => m,
        Err(why) => {
            require_or_skip(Some(why));
            return;
        }
    };
    let p = m.path("vf0");
    let mut r = Rig::new(vec![p.clone()]);
    match r.write(0, 0, &pattern(64 << 10, 5)) {
        Err(DiskError::Io(msg)) => {
            eprintln!("{msg}");
            assert!(msg.contains("No space left on device"), "{msg}");
            assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        }
        other => panic!("64 KiB on a 16 KiB tmpfs: {other:?}"),
    }
    assert_eq!(r.io.stats().errors, 1);
    let small = pattern(1024, 6);
    assert_eq!(r.write(0, 0, &small), Ok(Vec::new()));
    assert_eq!(&r.read(0).expect("read")[..1024], &small[..]);
}

// ----- stuck files -----------------------------------------------------

#[test]
fn a_stuck_file_delays_no_other() {
    let dir = TempDir::new("stuck");
    let fifo = dir.path("vf0");
    mkfifo(&fifo);
    let mut r = Rig::new(vec![fifo.clone(), dir.path("vf1"), dir.path("vf2")]);
    let stuck = r.submit(0, DiskOp::Read);
    let t = Instant::now();
    for round in 0..3u8 {
        for f in 1..=2 {
            r.submit(
                f,
                DiskOp::Write {
                    offset: 0,
                    data: vec![round; 512],
                },
            );
            r.submit(f, DiskOp::Read);
        }
        for _ in 0..4 {
            let c = r
                .next(Duration::from_secs(5))
                .expect("the other files complete");
            assert_ne!(c.id, stuck, "the FIFO completed: {c:?}");
            // A write's empty answer, or this round's slot read back.
            let bytes = c.result.expect("the other files work");
            assert!(bytes.is_empty() || bytes == vec![round; 512], "{bytes:?}");
        }
    }
    // Forever stuck against a few ms each: any bound shows it.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(r.io.poll(), None, "nothing from the stuck file");
    assert_eq!(r.io.modes()[0], IoMode::NotOpened);

    let Rig { io, wake, .. } = r;
    let t = Instant::now();
    drop(io);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "drop took {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "drop did not wait for the stuck worker: {took:?}"
    );
    unblock_fifo_and_wait_workers(&fifo, wake);
}

#[test]
fn full_queue_is_a_counted_refusal_answered_at_once() {
    let dir = TempDir::new("queue");
    let fifo = dir.path("vf0");
    mkfifo(&fifo);
    let mut r = Rig::new(vec![fifo.clone()]);
    let first = r.submit(0, DiskOp::Read);
    // Let the worker take the first one into its (stuck) open.
    std::thread::sleep(Duration::from_millis(100));
    let extra = 3;
    let ids: Vec<u64> = (0..QUEUE_DEPTH + extra)
        .map(|_| r.submit(0, DiskOp::Read))
        .collect();
    let t = Instant::now();
    let mut refused = Vec::new();
    while let Some(c) = r.next(Duration::from_millis(200)) {
        match &c.result {
            Err(DiskError::Io(m)) if m.contains("queue full") => refused.push(c.id),
            _ => panic!("only refusals can complete: {c:?}"),
        }
        assert!(refused.len() <= ids.len());
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    // The worker holds `first` (unless it had not taken it yet, on a busy
    // machine), QUEUE_DEPTH wait, the last ones were refused.
    assert!(
        refused.len() == extra || refused.len() == extra + 1,
        "first was {first}, refused {refused:?} of {ids:?}"
    );
    assert_eq!(refused, ids[ids.len() - refused.len()..].to_vec());
    let s = r.io.stats();
    assert_eq!(
        (s.refusals, s.reads, s.errors),
        (refused.len() as u64, 0, 0)
    );

    let Rig { io, wake, .. } = r;
    drop(io);
    unblock_fifo_and_wait_workers(&fifo, wake);
}

// ----- a real membership -------------------------------------------------

/// Drives `m` on real time, its voting files on `r`, until `done(m,
/// alerts)` holds or `limit` passes; returns whether it held. Alerts are
/// collected into `alerts`.
fn drive(
    m: &mut Membership,
    r: &mut Rig,
    alerts: &mut Vec<String>,
    limit: Duration,
    done: impl Fn(&Membership, &[String]) -> bool,
) -> bool {
    use icx_transport::protocol::Protocol;
    // The membership's clock: nanoseconds from a std epoch (plus one, so
    // ZERO stays "before the clock started"), as the driver's.
    let epoch = Instant::now();
    let now = || icx_core::Instant::from_nanos(epoch.elapsed().as_nanos() as u64 + 1);
    m.handle_timeout(now());
    for _ in 0..100_000 {
        let t = now();
        if m.poll_timeout().is_some_and(|at| at <= t) {
            m.handle_timeout(t);
        }
        while let Some(c) = r.io.poll() {
            m.handle_disk(now(), c);
        }
        // One node: nobody to send to; what it sends is dropped.
        let t = now();
        while m.poll_output(t).is_some() {}
        while let Some(req) = m.poll_disk(t) {
            r.io.submit(req);
        }
        while let Some(a) = m.poll_alert() {
            eprintln!("alert: {a}");
            alerts.push(a.text);
        }
        while m.poll_action().is_some() {}
        if done(m, alerts) {
            return true;
        }
        if epoch.elapsed() > limit {
            return false;
        }
        let wait = m
            .poll_timeout()
            .map(|at| Duration::from_nanos(at.as_nanos().saturating_sub(now().as_nanos())))
            .unwrap_or(Duration::from_millis(10))
            .min(Duration::from_millis(10));
        let _ = r.woken.recv_timeout(wait);
    }
    false
}

fn membership(cluster: u32, files: &[PathBuf]) -> Membership {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = Config::new(cluster, 1, NodeId(1))
        .with_timers(
            Duration::from_millis(50),
            Duration::from_secs(2),
            Duration::from_secs(4),
        )
        .with_voting_files(&names);
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 16)).expect("pool");
    Membership::new(cfg, pool).expect("config")
}

#[test]
fn membership_forms_on_three_real_files_and_refuses_another_clusters() {
    let dir = TempDir::new("member");
    let files: Vec<PathBuf> = (0..3).map(|i| dir.path(&format!("vf{i}"))).collect();
    let mut r = Rig::new(files.clone());
    let mut m = membership(453, &files);
    let mut alerts = Vec::new();
    let up = drive(
        &mut m,
        &mut r,
        &mut alerts,
        Duration::from_secs(10),
        |m, _| m.state() == State::Active && m.files_online() == 3,
    );
    assert!(
        up,
        "not active on 3 files: {:?}, {} online, stats {:?}, io {:?}, alerts {alerts:?}",
        m.state(),
        m.files_online(),
        m.stats(),
        r.io.stats()
    );
    for f in &files {
        let bytes = std::fs::read(f).expect("formatted file");
        assert_eq!(&bytes[..8], &FILE_MAGIC, "{}", f.display());
        assert_eq!(bytes.len() % 512, 0);
    }
    let s = r.io.stats();
    assert!(s.reads >= 3 && s.writes >= 3 && s.errors == 0, "{s:?}");
    drop(r);

    // Another cluster over vf0 (formatted for 453) and two new files: vf0
    // is refused by name and left alone; the other two are a majority.
    let vf0 = std::fs::read(&files[0]).expect("vf0");
    let other = vec![files[0].clone(), dir.path("vf3"), dir.path("vf4")];
    let mut r = Rig::new(other.clone());
    let mut m = membership(99, &other);
    let mut alerts = Vec::new();
    let name = files[0].display().to_string();
    let refused = |a: &[String]| {
        a.iter()
            .any(|t| t.starts_with(&format!("ICX-1701: Voting file {name} refused")))
    };
    let done = drive(
        &mut m,
        &mut r,
        &mut alerts,
        Duration::from_secs(10),
        |m, a| refused(a) && m.state() == State::Active && m.files_online() == 2,
    );
    assert!(
        done,
        "{:?}, {} online, alerts {alerts:?}",
        m.state(),
        m.files_online()
    );
    assert!(
        alerts.iter().any(|t| t.contains("cluster 453")),
        "{alerts:?}"
    );
    drop(r);
    assert_eq!(
        std::fs::read(&files[0]).expect("vf0"),
        vf0,
        "refused file was rewritten"
    );
}
