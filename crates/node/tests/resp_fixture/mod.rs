//! The RESP server's test fixture: a server and a test-side node loop
//! answering it, a raw client decoding replies with redis-protocol, and
//! the replies the server gives itself.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use icx_node::resp::{Limits, Password, Reply, Request, RespServer, RespStats};
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};

/// The bound on any one wait in these tests.
pub const T: Duration = Duration::from_secs(10);
pub const BIG: usize = 8 << 20;

/// A server and the test's node loop answering it.
pub struct Node {
    pub server: Option<RespServer>,
    pub addr: SocketAddr,
    pub wakes: Arc<AtomicUsize>,
    pub loop_thread: Option<JoinHandle<()>>,
}

impl Node {
    pub fn start(limits: Limits) -> Node {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let (server, rx) = RespServer::start(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            Arc::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("start");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        Node {
            server: Some(server),
            addr,
            wakes,
            loop_thread: Some(thread::spawn(move || node_loop(&rx))),
        }
    }

    pub fn server(&self) -> &RespServer {
        self.server.as_ref().unwrap()
    }

    pub fn stats(&self) -> RespStats {
        self.server().stats()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits until the stats satisfy `ok`.
    pub fn wait_stats(&self, what: &str, ok: impl Fn(&RespStats) -> bool) -> RespStats {
        let deadline = Instant::now() + T;
        loop {
            let s = self.stats();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts the server down, returning how long that took; the node loop
    /// then sees its channel disconnect and ends.
    pub fn shutdown(&mut self) -> Duration {
        let t0 = Instant::now();
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        let took = t0.elapsed();
        if let Some(t) = self.loop_thread.take() {
            let deadline = Instant::now() + T;
            while !t.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "node loop did not see the channel disconnect"
                );
                thread::sleep(Duration::from_millis(5));
            }
            t.join().unwrap();
        }
        took
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.shutdown();
        }
    }
}

/// The test's node: answers until the server's channel disconnects (or a
/// minute passes, so a broken server cannot hang the test binary).
pub fn node_loop(rx: &Receiver<Request>) {
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(req) => answer(req, &mut held),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

pub fn answer(req: Request, held: &mut Vec<Request>) {
    let name = String::from_utf8_lossy(&req.args[0]).to_ascii_uppercase();
    let reply = match name.as_str() {
        "PING" => Reply::Simple("PONG".into()),
        "ECHO" if req.args.len() == 2 => Reply::Bulk(req.args[1].clone()),
        "ARGS" => Reply::Array(req.args[1..].iter().cloned().map(Reply::Bulk).collect()),
        "INT" => Reply::Integer(-42),
        "NULL" => Reply::Null,
        "ERR" => Reply::Error("CLUSTERDOWN the node is\r\nnot active".into()),
        "ID" => Reply::Integer(req.client.id as i64),
        "PEER" => Reply::Bulk(req.client.peer.to_string().into_bytes()),
        "BIG" => Reply::Bulk(vec![b'x'; BIG]),
        "NESTED" => Reply::Array(vec![
            Reply::Integer(1),
            Reply::Array(vec![Reply::Simple("a".into()), Reply::Null]),
            Reply::Array(vec![]),
        ]),
        "DROP" => return drop(req),
        "HOLD" | "REV" => return held.push(req),
        // The REVs held, answered last first.
        "FLIP" => {
            let (rev, rest) = std::mem::take(held)
                .into_iter()
                .partition(|r: &Request| r.args[0].eq_ignore_ascii_case(b"REV"));
            *held = rest;
            for r in rev.into_iter().rev() {
                let arg = r.args[1].clone();
                r.reply(Reply::Bulk(arg));
            }
            Reply::Simple("OK".into())
        }
        _ => Reply::Error(format!("ERR unknown command '{name}'")),
    };
    req.reply(reply);
}

/// A raw TCP client reading RESP replies (decoded by redis-protocol).
pub struct Client {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.set_write_timeout(Some(T)).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    pub fn cmd(&mut self, args: &[&[u8]]) -> OwnedFrame {
        self.send(&encode_cmd(args));
        self.reply()
    }

    /// Reads more into `buf`: false at the end of the stream (or a reset).
    pub fn fill(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0; 65536];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    assert!(Instant::now() < deadline, "timed out reading");
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    pub fn reply(&mut self) -> OwnedFrame {
        let deadline = Instant::now() + T;
        loop {
            if let Some((f, n)) = decode(&self.buf).expect("the server's reply decodes") {
                self.buf.drain(..n);
                return f;
            }
            assert!(
                self.fill(deadline),
                "closed before a whole reply; have {:?}",
                self.buf
            );
        }
    }

    /// The connection closes, with nothing more sent.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + T;
        while self.fill(deadline) {}
        assert!(
            self.buf.is_empty(),
            "more after the end: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

pub fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn simple(s: &str) -> OwnedFrame {
    OwnedFrame::SimpleString(s.as_bytes().to_vec())
}

pub fn bulk(b: &[u8]) -> OwnedFrame {
    OwnedFrame::BulkString(b.to_vec())
}

pub fn error(s: &str) -> OwnedFrame {
    OwnedFrame::Error(s.to_owned())
}

/// `redis-cli --no-raw -p port args…`'s output, or `None` (skipped, said)
/// when redis-cli is not installed. Bounded in time.
pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let mut child = match std::process::Command::new("redis-cli")
        .args(["--no-raw", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("redis-cli tests skipped, redis-cli not runnable ({e}); apt-get install redis-tools");
            return None;
        }
    };
    let deadline = Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("redis-cli {args:?} hung");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    Some(out)
}

pub const NOAUTH: &str = "NOAUTH Authentication required.";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

pub fn with_password(pw: &[u8]) -> Limits {
    Limits {
        requirepass: Password::new(pw),
        ..Limits::default()
    }
}

/// Reads what `s` has now without waiting: `Some(bytes)` while open (none
/// may have come), `None` once the server closed it.
pub fn poll_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    let open = loop {
        match s.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    s.set_nonblocking(false).unwrap();
    assert!(got.is_empty(), "closed silently: {got:?}");
    open.then_some(got)
}
