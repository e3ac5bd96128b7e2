//! The RESP server over real TCP on 127.0.0.1, against a test-side node
//! loop that answers requests; and `parse_request` / `Reply` encoding as
//! properties. Every wait is bounded in time.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use icx_node::resp::{
    parse_request, parse_request_before_auth, Limits, Parsed, Password, Reply, Request, RespServer,
    RespStats, INLINE_MAX,
};
use proptest::prelude::*;
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};

/// The bound on any one wait in these tests.
const T: Duration = Duration::from_secs(10);
const BIG: usize = 8 << 20;

// ---------------------------------------------------------------- fixture

/// A server and the test's node loop answering it.
struct Node {
    server: Option<RespServer>,
    addr: SocketAddr,
    wakes: Arc<AtomicUsize>,
    loop_thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(limits: Limits) -> Node {
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

    fn server(&self) -> &RespServer {
        self.server.as_ref().unwrap()
    }

    fn stats(&self) -> RespStats {
        self.server().stats()
    }

    fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Waits until the stats satisfy `ok`.
    fn wait_stats(&self, what: &str, ok: impl Fn(&RespStats) -> bool) -> RespStats {
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
    fn shutdown(&mut self) -> Duration {
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
fn node_loop(rx: &Receiver<Request>) {
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

fn answer(req: Request, held: &mut Vec<Request>) {
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
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        s.set_write_timeout(Some(T)).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    fn cmd(&mut self, args: &[&[u8]]) -> OwnedFrame {
        self.send(&encode_cmd(args));
        self.reply()
    }

    /// Reads more into `buf`: false at the end of the stream (or a reset).
    fn fill(&mut self, deadline: Instant) -> bool {
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

    fn reply(&mut self) -> OwnedFrame {
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
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + T;
        while self.fill(deadline) {}
        assert!(
            self.buf.is_empty(),
            "more after the end: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn simple(s: &str) -> OwnedFrame {
    OwnedFrame::SimpleString(s.as_bytes().to_vec())
}

fn bulk(b: &[u8]) -> OwnedFrame {
    OwnedFrame::BulkString(b.to_vec())
}

fn error(s: &str) -> OwnedFrame {
    OwnedFrame::Error(s.to_owned())
}

// ---------------------------------------------------------------- TCP

#[test]
fn ping_in_resp_and_inline() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    c.send(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.reply(), simple("PONG"));
    c.send(b"PING\r\n");
    assert_eq!(c.reply(), simple("PONG"));
    // A bare LF ends an inline line too; commands are the node's to read,
    // in any case.
    c.send(b"ping\n");
    assert_eq!(c.reply(), simple("PONG"));
    let s = node.stats();
    assert_eq!((s.accepted, s.clients, s.commands), (1, 1, 3));
    assert!(
        node.wakes.load(Ordering::Relaxed) >= 3,
        "wake after each request"
    );
}

#[test]
fn inline_quotes_and_empty_lines() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    // Empty lines and `*0`, `*-1` are skipped (Redis's "Handle an empty
    // query", "Negative multibulk length").
    c.send(b"\r\n\n   \t \r\n*0\r\n*-10\r\nPING\r\n");
    assert_eq!(c.reply(), simple("PONG"));
    c.send(b"ARGS \"a b\" 'c d' \"\\x41\\n\\\"\" '' plain\r\n");
    assert_eq!(
        c.reply(),
        OwnedFrame::Array(vec![
            bulk(b"a b"),
            bulk(b"c d"),
            bulk(b"A\n\""),
            bulk(b""),
            bulk(b"plain")
        ])
    );
    assert_eq!(node.stats().commands, 2);
    c.send(b"ECHO \"a b\r\n");
    assert_eq!(
        c.reply(),
        error("ERR Protocol error: unbalanced quotes in request")
    );
    c.expect_closed();
    assert_eq!(node.stats().protocol_errors, 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    let mut batch = Vec::new();
    for i in 0..300 {
        if i % 3 == 0 {
            batch.extend_from_slice(format!("ECHO inline-{i}\r\n").as_bytes());
        } else {
            batch.extend_from_slice(&encode_cmd(&[b"ECHO", format!("resp-{i}").as_bytes()]));
        }
    }
    c.send(&batch);
    for i in 0..300 {
        let want = if i % 3 == 0 {
            format!("inline-{i}")
        } else {
            format!("resp-{i}")
        };
        assert_eq!(c.reply(), bulk(want.as_bytes()), "reply {i}");
    }
    assert_eq!(node.stats().commands, 300);
    // Handed over in batches (at most 256 with the node at once), one
    // wake each.
    let wakes = node.wakes.load(Ordering::Relaxed);
    assert!((2..300).contains(&wakes), "{wakes} wakes");
}

/// A client that writes its whole pipeline at once and then only reads
/// (redis-cli --pipe's last stretch): the server has read the socket dry
/// with far more than the in-flight bound parsed-to-be; each batch of
/// replies must let it parse on from its buffer, with no new readiness.
#[test]
fn a_pipeline_far_past_the_in_flight_bound_is_parsed_from_the_buffer() {
    const N: usize = 3000;
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend_from_slice(&encode_cmd(&[b"ECHO", format!("{i}").as_bytes()]));
    }
    c.send(&batch);
    for i in 0..N {
        assert_eq!(c.reply(), bulk(format!("{i}").as_bytes()), "reply {i}");
    }
    // The same with replies the server gives itself (-NOAUTH), which take
    // in-flight room too.
    let node = Node::start(with_password(b"pw"));
    let mut c = node.connect();
    c.send(&b"PING\r\n".repeat(N));
    for i in 0..N {
        assert_eq!(c.reply(), error(NOAUTH), "reply {i}");
    }
}

#[test]
fn a_wake_hold_sends_its_replies_when_dropped() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    let hold = node.server().hold_wakes();
    c.send(&encode_cmd(&[b"ECHO", b"held"]));
    // Answered at once by the node loop, but the server's loop is not
    // woken for it (it sleeps up to a second with nothing else to do).
    let t0 = Instant::now();
    let mut byte = [0; 1];
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let early = c.s.read(&mut byte);
    assert!(early.is_err(), "a reply while held: {early:?}");
    drop(hold);
    c.s.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert_eq!(c.reply(), bulk(b"held"));
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "woken by the drop, not the idle bound"
    );
}

#[test]
fn replies_given_out_of_order_are_written_in_order() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    let mut batch = Vec::new();
    for a in ["a", "b", "c"] {
        batch.extend_from_slice(&encode_cmd(&[b"REV", a.as_bytes()]));
    }
    batch.extend_from_slice(&encode_cmd(&[b"FLIP"]));
    c.send(&batch);
    for want in [bulk(b"a"), bulk(b"b"), bulk(b"c"), simple("OK")] {
        assert_eq!(c.reply(), want);
    }
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
}

#[test]
fn bulk_args_are_binary_safe() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    let all: Vec<u8> = (0..=255).collect();
    let crlf = b"\r\n*1\r\n$4\r\nPING\r\n";
    assert_eq!(
        c.cmd(&[b"ARGS", &all, b"", crlf, b"\0"]),
        OwnedFrame::Array(vec![bulk(&all), bulk(b""), bulk(crlf), bulk(b"\0")])
    );
    // Sent a byte at a time, still one request.
    for b in encode_cmd(&[b"ECHO", &all]) {
        c.send(&[b]);
    }
    assert_eq!(c.reply(), bulk(&all));
}

#[test]
fn reply_kinds() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"INT"]), OwnedFrame::Integer(-42));
    assert_eq!(c.cmd(&[b"NULL"]), OwnedFrame::Null);
    // A CR or LF in an error line would desync the client: spaces.
    assert_eq!(
        c.cmd(&[b"ERR"]),
        error("CLUSTERDOWN the node is  not active")
    );
    assert_eq!(
        c.cmd(&[b"NESTED"]),
        OwnedFrame::Array(vec![
            OwnedFrame::Integer(1),
            OwnedFrame::Array(vec![simple("a"), OwnedFrame::Null]),
            OwnedFrame::Array(vec![]),
        ])
    );
    assert_eq!(c.cmd(&[b"NOSUCH"]), error("ERR unknown command 'NOSUCH'"));
    assert_eq!(c.cmd(&[b"BIG"]), bulk(&vec![b'x'; BIG]));
}

#[test]
fn client_info_identifies_the_connection() {
    let node = Node::start(Limits::default());
    let mut a = node.connect();
    let mut b = node.connect();
    let OwnedFrame::Integer(ida) = a.cmd(&[b"ID"]) else {
        panic!()
    };
    let OwnedFrame::Integer(idb) = b.cmd(&[b"ID"]) else {
        panic!()
    };
    assert_ne!(ida, idb);
    assert!(ida >= 1 && idb >= 1);
    assert_eq!(
        a.cmd(&[b"PEER"]),
        bulk(a.s.local_addr().unwrap().to_string().as_bytes())
    );
}

/// Each case: a fresh connection, a PING that works, then the bad bytes:
/// the error in Redis's words, and the connection closed.
#[test]
fn protocol_errors_are_answered_and_close() {
    let cases: &[(&[u8], &str)] = &[
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*20000000\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
            "expected '$', got 'f'",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n",
            "invalid bulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
            "invalid bulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n",
            "invalid bulk length",
        ),
        (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
        (b"*2\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n\x01", "expected '$', got '\\x01'"),
        (b"SET \"a\"b\r\n", "unbalanced quotes in request"),
        (b"SET 'a\r\n", "unbalanced quotes in request"),
    ];
    let node = Node::start(Limits::default());
    for (i, (bad, what)) in cases.iter().enumerate() {
        let mut c = node.connect();
        assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
        // A good request in the same write as the bad one is answered.
        let mut bytes = b"ECHO before\r\n".to_vec();
        bytes.extend_from_slice(bad);
        c.send(&bytes);
        assert_eq!(c.reply(), bulk(b"before"), "case {i}");
        assert_eq!(
            c.reply(),
            error(&format!("ERR Protocol error: {what}")),
            "case {i}"
        );
        c.expect_closed();
    }
    let s = node.wait_stats("clients gone", |s| s.clients == 0);
    assert_eq!(s.protocol_errors, cases.len() as u64);
    assert_eq!(s.dropped, 0);
}

/// Redis's "Protocol desync regression test": a stream of junk with no line
/// end is an error once a line could no longer be valid, not a buffer that
/// grows forever.
#[test]
fn endless_junk_is_a_protocol_error() {
    let node = Node::start(Limits::default());
    for (start, what) in [
        (&b"\x00"[..], "too big inline request"),
        (b"*\x00", "too big mbulk count string"),
        (b"*1\r\n$\x00", "too big bulk count string"),
    ] {
        let mut c = node.connect();
        c.send(start);
        let junk = vec![b'A'; INLINE_MAX + 16];
        // The server may close while this is still being written.
        let _ = c.s.write_all(&junk);
        assert_eq!(c.reply(), error(&format!("ERR Protocol error: {what}")));
        c.expect_closed();
    }
}

#[test]
fn oversize_requests_are_refused_from_their_headers() {
    let node = Node::start(Limits::default());
    // A bulk longer than the whole limit: refused before its body is sent.
    let mut c = node.connect();
    c.send(b"*2\r\n$4\r\nECHO\r\n$2000000\r\n");
    assert_eq!(c.reply(), error("ERR Protocol error: invalid bulk length"));
    c.expect_closed();

    // Each bulk under the limit, the request over it: refused at the
    // header that takes it over.
    let mut c = node.connect();
    let part = vec![b'p'; 600_000];
    let mut req = b"*3\r\n$4\r\nARGS\r\n".to_vec();
    req.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
    req.extend_from_slice(&part);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
    c.send(&req);
    assert_eq!(
        c.reply(),
        error("ERR Protocol error: request larger than client_query_buffer_limit (1048576 bytes)")
    );
    c.expect_closed();

    // More arguments than max_args.
    let mut c = node.connect();
    c.send(b"*1025\r\n");
    assert_eq!(
        c.reply(),
        error("ERR Protocol error: invalid multibulk length")
    );
    c.expect_closed();

    // An inline line longer than 64 KiB.
    let mut c = node.connect();
    let mut line = vec![b'a'; INLINE_MAX + 1];
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    assert_eq!(
        c.reply(),
        error("ERR Protocol error: too big inline request")
    );
    c.expect_closed();

    // Exactly at the limits: served.
    let mut c = node.connect();
    let args: Vec<Vec<u8>> = std::iter::once(b"ARGS".to_vec())
        .chain((1..1024).map(|i| vec![i as u8]))
        .collect();
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let OwnedFrame::Array(back) = c.cmd(&refs) else {
        panic!("not an array")
    };
    assert_eq!(back.len(), 1023);
    // *2 $4 ECHO $1048550 <body>: 4 + 10 + 10 + 1048550 + 2 bytes.
    let body = vec![b'b'; (1 << 20) - 26];
    let req = encode_cmd(&[b"ECHO", &body]);
    assert_eq!(req.len(), 1 << 20);
    c.send(&req);
    assert_eq!(c.reply(), bulk(&body));
    assert_eq!(node.stats().protocol_errors, 4);
}

#[test]
fn max_clients_are_enforced() {
    let node = Node::start(Limits {
        max_clients: 2,
        ..Limits::default()
    });
    let mut a = node.connect();
    let mut b = node.connect();
    assert_eq!(a.cmd(&[b"PING"]), simple("PONG"));
    assert_eq!(b.cmd(&[b"PING"]), simple("PONG"));
    let mut refused = node.connect();
    assert_eq!(refused.reply(), error("ERR max number of clients reached"));
    refused.expect_closed();
    let s = node.stats();
    assert_eq!((s.accepted, s.refused, s.clients), (2, 1, 2));
    // A slot frees when a client leaves.
    drop(a);
    node.wait_stats("a client gone", |s| s.clients == 1);
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    assert_eq!(b.cmd(&[b"PING"]), simple("PONG"));
    assert_eq!(node.stats().dropped, 0);
}

#[test]
fn quit_is_answered_by_the_server_and_closes() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    c.send(b"PING\r\nQUIT\r\nPING\r\n");
    assert_eq!(c.reply(), simple("PONG"));
    assert_eq!(c.reply(), simple("OK"));
    c.expect_closed();
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"quit"]), simple("OK"));
    c.expect_closed();
    let s = node.wait_stats("clients gone", |s| s.clients == 0);
    // PING, QUIT, quit: the PING after QUIT never read; QUIT never reached
    // the node (the node loop would have answered "unknown command").
    assert_eq!((s.commands, s.dropped, s.protocol_errors), (3, 0, 0));
    assert_eq!(node.wakes.load(Ordering::Relaxed), 1);
}

#[test]
fn a_client_gone_mid_request_is_dropped_and_counted() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    c.send(b"*2\r\n$4\r\nECHO\r\n$10\r\nabc");
    drop(c);
    let s = node.wait_stats("the half request dropped", |s| {
        s.dropped == 1 && s.clients == 0
    });
    assert_eq!(s.commands, 0);
    // A clean close between requests is not a drop.
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    drop(c);
    let s = node.wait_stats("clean close", |s| s.clients == 0);
    assert_eq!(s.dropped, 1);
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
}

#[test]
fn a_client_gone_mid_reply_is_dropped_and_counted() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    c.send(&encode_cmd(&[b"BIG"]));
    drop(c);
    node.wait_stats("the reader gone mid-reply", |s| {
        s.dropped == 1 && s.clients == 0
    });
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
}

#[test]
fn a_dropped_request_is_answered_with_an_error() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"DROP"]), error("ERR internal error: no reply"));
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    c.send(b"DROP\r\nPING\r\n");
    assert_eq!(c.reply(), error("ERR internal error: no reply"));
    assert_eq!(c.reply(), simple("PONG"));
}

#[test]
fn shutdown_with_clients_connected_is_prompt() {
    let mut node = Node::start(Limits::default());
    let idle = node.connect();
    let mut waiting = node.connect();
    waiting.send(&encode_cmd(&[b"HOLD"]));
    let mut half = node.connect();
    half.send(b"*1\r\n$4\r\nPI");
    let mut not_reading = node.connect();
    not_reading.send(&encode_cmd(&[b"BIG"]));
    node.wait_stats("four clients, two requests", |s| {
        s.clients == 4 && s.commands == 2
    });
    thread::sleep(Duration::from_millis(50));
    let took = node.shutdown();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    for mut c in [idle, waiting, half] {
        c.expect_closed();
    }
    // The reply being written when the server stopped (or sitting in the
    // socket buffers) ends there.
    let deadline = Instant::now() + T;
    while not_reading.fill(deadline) {}
    assert!(not_reading.buf.len() < BIG + 16);
    // And the port is free again.
    let addr = node.addr;
    let (again, _rx) = RespServer::start(addr, Limits::default(), Arc::new(|| {})).expect("rebind");
    again.shutdown();
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let node = Node::start(Limits::default());
    let e = RespServer::start(node.addr, Limits::default(), Arc::new(|| {})).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    let text = e.to_string();
    assert!(text.contains(&node.addr.to_string()), "{text}");
}

/// `redis-cli --no-raw -p port args…`'s output, or `None` (skipped, said)
/// when redis-cli is not installed. Bounded in time.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
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

#[test]
fn redis_cli_ping() {
    let node = Node::start(Limits::default());
    let port = node.addr.port();
    let Some(out) = redis_cli(port, &["PING"]) else {
        return;
    };
    assert_eq!(out.trim(), "PONG");
    assert_eq!(
        redis_cli(port, &["ECHO", "a b\r\nc"]).unwrap(),
        "\"a b\\r\\nc\"\n"
    );
    assert_eq!(redis_cli(port, &["INT"]).unwrap().trim(), "(integer) -42");
}

// ---------------------------------------------------------------- AUTH, idle clients, hostile clients

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn with_password(pw: &[u8]) -> Limits {
    Limits {
        requirepass: Password::new(pw),
        ..Limits::default()
    }
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let node = Node::start(with_password(b"s3cret"));
    let mut c = node.connect();
    // Nothing but AUTH and QUIT before AUTH, whatever the command and form,
    // and none of it reaches the node.
    for args in [
        &[&b"PING"[..]][..],
        &[b"ECHO", b"hi"],
        &[b"NOSUCH"],
        &[b"HELLO", b"3"],
    ] {
        assert_eq!(c.cmd(args), error(NOAUTH), "{args:?}");
    }
    c.send(b"PING\r\n");
    assert_eq!(c.reply(), error(NOAUTH));
    // Redis 7's replies to a bad AUTH, to the letter.
    assert_eq!(
        c.cmd(&[b"AUTH"]),
        error("ERR wrong number of arguments for 'auth' command")
    );
    assert_eq!(
        c.cmd(&[b"AUTH", b"a", b"b", b"c"]),
        error("ERR syntax error")
    );
    assert_eq!(c.cmd(&[b"AUTH", b"wrong"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"auth", b"default", b"wrong"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"AUTH", b"bob", b"s3cret"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"AUTH", b"s3cre"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"AUTH", b"s3cret!"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"PING"]), error(NOAUTH));
    assert_eq!(
        node.wakes.load(Ordering::Relaxed),
        0,
        "the node saw nothing"
    );
    assert_eq!(c.cmd(&[b"AUTH", b"s3cret"]), simple("OK"));
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    assert_eq!(c.cmd(&[b"ECHO", b"hi"]), bulk(b"hi"));
    // A wrong AUTH later leaves the connection authenticated (Redis 7).
    assert_eq!(c.cmd(&[b"AUTH", b"wrong"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));

    // Per connection: another client starts unauthenticated.
    let mut d = node.connect();
    assert_eq!(d.cmd(&[b"PING"]), error(NOAUTH));
    assert_eq!(d.cmd(&[b"AUTH", b"default", b"s3cret"]), simple("OK"));
    assert_eq!(d.cmd(&[b"ECHO", b"d"]), bulk(b"d"));
    assert_eq!(c.cmd(&[b"ECHO", b"c"]), bulk(b"c"));

    // In one pipeline: each request is read with the state the one before
    // left, and the replies keep their order.
    let mut e = node.connect();
    e.send(b"PING\r\nAUTH s3cret\r\nECHO x\r\nAUTH nope\r\nPING\r\n");
    for want in [
        error(NOAUTH),
        simple("OK"),
        bulk(b"x"),
        error(WRONGPASS),
        simple("PONG"),
    ] {
        assert_eq!(e.reply(), want);
    }
    // QUIT needs no AUTH.
    let mut q = node.connect();
    assert_eq!(q.cmd(&[b"QUIT"]), simple("OK"));
    q.expect_closed();
    let s = node.stats();
    assert_eq!(s.auth_failures, 7, "{s:?}");
    assert_eq!((s.protocol_errors, s.dropped), (0, 0));
}

#[test]
fn a_binary_password_and_redis_cli_auth() {
    let node = Node::start(with_password(b"a b\0\"c"));
    let mut c = node.connect();
    assert_eq!(c.cmd(&[b"AUTH", b"a b"]), error(WRONGPASS));
    assert_eq!(c.cmd(&[b"AUTH", b"a b\0\"c"]), simple("OK"));
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    let mut inline = node.connect();
    inline.send(b"AUTH \"a b\\x00\\\"c\"\r\nPING\r\n");
    assert_eq!(inline.reply(), simple("OK"));
    assert_eq!(inline.reply(), simple("PONG"));
    drop(node);
    // redis-cli -a, as operators use it.
    let node = Node::start(with_password(b"s3cret"));
    let port = node.addr.port();
    let auth = |pw: &str| redis_cli(port, &["--no-auth-warning", "-a", pw, "PING"]);
    let Some(out) = auth("s3cret") else { return };
    assert_eq!(out.trim(), "PONG");
    assert_eq!(
        auth("nope").unwrap().trim(),
        "(error) NOAUTH Authentication required."
    );
    assert_eq!(node.stats().auth_failures, 1);
}

#[test]
fn auth_without_a_password_is_redis_s_error() {
    let node = Node::start(Limits::default());
    let mut c = node.connect();
    assert_eq!(
        c.cmd(&[b"AUTH", b"x"]),
        error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
    // The default user has no password: any is right; no other user.
    assert_eq!(c.cmd(&[b"AUTH", b"default", b"x"]), simple("OK"));
    assert_eq!(c.cmd(&[b"AUTH", b"bob", b"x"]), error(WRONGPASS));
    assert_eq!(
        c.cmd(&[b"AUTH"]),
        error("ERR wrong number of arguments for 'auth' command")
    );
    assert_eq!(c.cmd(&[b"PING"]), simple("PONG"));
    assert_eq!(node.stats().auth_failures, 1);
}

/// Before AUTH a request may have 10 arguments of 16 KiB (Redis's bounds
/// for unauthenticated clients); more is a protocol error that closes the
/// connection. After AUTH the usual limits hold.
#[test]
fn unauthenticated_requests_are_held_to_redis_s_bounds() {
    let node = Node::start(with_password(b"pw"));
    for (bad, what) in [
        (&b"*11\r\n"[..], "unauthenticated multibulk length"),
        (b"*1\r\n$16385\r\n", "unauthenticated bulk length"),
        (
            b"*2\r\n$4\r\nAUTH\r\n$100000\r\n",
            "unauthenticated bulk length",
        ),
        // The general checks come first, as in Redis.
        (b"*2000\r\n", "invalid multibulk length"),
        (b"*1\r\n$2000000\r\n", "invalid bulk length"),
    ] {
        let mut c = node.connect();
        assert_eq!(c.cmd(&[b"PING"]), error(NOAUTH));
        c.send(bad);
        assert_eq!(c.reply(), error(&format!("ERR Protocol error: {what}")));
        c.expect_closed();
    }
    // At the bounds: read (and refused as a password).
    let mut c = node.connect();
    let ten: Vec<&[u8]> = std::iter::once(&b"ECHO"[..])
        .chain([&b"a"[..]; 9])
        .collect();
    assert_eq!(c.cmd(&ten), error(NOAUTH));
    assert_eq!(c.cmd(&[b"AUTH", &[b'p'; 16384]]), error(WRONGPASS));
    // Lifted by AUTH for the very next request of the same write.
    let big = vec![b'b'; 100_000];
    let mut pipeline = encode_cmd(&[b"AUTH", b"pw"]);
    pipeline.extend_from_slice(&encode_cmd(&[b"ECHO", &big]));
    c.send(&pipeline);
    assert_eq!(c.reply(), simple("OK"));
    assert_eq!(c.reply(), bulk(&big));
    let many: Vec<Vec<u8>> = (0..50).map(|i| format!("{i}").into_bytes()).collect();
    let mut args: Vec<&[u8]> = vec![b"ARGS"];
    args.extend(many.iter().map(Vec::as_slice));
    let OwnedFrame::Array(back) = c.cmd(&args) else {
        panic!("not an array")
    };
    assert_eq!(back.len(), 50);
    let s = node.wait_stats("clients gone", |s| s.clients == 1);
    assert_eq!(s.protocol_errors, 5);
}

#[test]
fn the_parser_before_auth() {
    let l = Limits::default();
    assert_eq!(
        parse_request_before_auth(b"*11\r\n", &l),
        Parsed::Error("ERR Protocol error: unauthenticated multibulk length".into())
    );
    assert_eq!(
        parse_request_before_auth(b"*1\r\n$16385\r\n", &l),
        Parsed::Error("ERR Protocol error: unauthenticated bulk length".into())
    );
    // Empty and negative counts are skipped before AUTH as after.
    assert_eq!(
        parse_request_before_auth(b"*-1\r\n", &l),
        Parsed::Empty { used: 5 }
    );
    assert_eq!(
        parse_request_before_auth(b"*0\r\n", &l),
        Parsed::Empty { used: 4 }
    );
    let at = encode_cmd(&[b"AUTH", &[b'x'; 16384]]);
    assert_eq!(
        parse_request_before_auth(&at, &l),
        parse_request(&at, &l),
        "at the bound"
    );
    assert!(matches!(parse_request(b"*11\r\n", &l), Parsed::Incomplete));
}

/// Redis's protected mode, in the server itself: without a password an
/// address that is not loopback is refused before anything is bound. (The
/// address is not this host's either, so a broken check would fail the
/// bind instead, and the test with it; nothing is ever sent to it.)
#[test]
fn protected_mode_refuses_a_non_loopback_address_before_binding() {
    let other: SocketAddr = "10.255.0.1:6379".parse().unwrap();
    let e = RespServer::start(other, Limits::default(), Arc::new(|| {})).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("10.255.0.1:6379 is not a loopback address, and protected mode is on"),
        "{text}"
    );
    for any in ["0.0.0.0:6379", "[::]:6379"] {
        assert!(Limits::default()
            .protected_mode_refusal(any.parse().unwrap())
            .is_some());
    }
    // A password, or protected mode off: no refusal (and so a bind).
    assert_eq!(with_password(b"pw").protected_mode_refusal(other), None);
    let off = Limits {
        protected_mode: false,
        ..Limits::default()
    };
    assert_eq!(off.protected_mode_refusal(other), None);
    assert_eq!(
        Limits::default().protected_mode_refusal("[::1]:6379".parse().unwrap()),
        None
    );
}

/// Reads what `s` has now without waiting: `Some(bytes)` while open (none
/// may have come), `None` once the server closed it.
fn poll_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
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

/// The idle timeout closes, silently, a client that sent nothing and a
/// slowloris trickling a request header a byte at a time (bytes of a
/// request not yet whole are not activity), at the timeout; meanwhile
/// another client's PINGs are answered promptly, and a client with a
/// request in flight with the node is not idle however long it waits.
#[test]
fn a_slowloris_is_dropped_at_the_idle_timeout_while_others_are_served() {
    let timeout = Duration::from_secs(1);
    let node = Node::start(Limits {
        idle_timeout: Some(timeout),
        ..Limits::default()
    });
    let mut busy = node.connect();
    let mut waiting = node.connect();
    waiting.send(&encode_cmd(&[b"HOLD"]));
    let mut idle = node.connect();
    let mut slow = node.connect();
    assert_eq!(slow.cmd(&[b"PING"]), simple("PONG"));
    let t0 = Instant::now();
    node.wait_stats("four clients, HOLD and PING read", |s| {
        s.clients == 4 && s.commands == 2
    });
    let header = b"*1000000000000000000000000000000000000000000000000000";
    let (mut slow_closed, mut idle_closed) = (None, None);
    let mut worst = Duration::ZERO;
    let mut sent = 0;
    let mut pings = 0;
    while t0.elapsed() < timeout * 3 {
        // A byte every 50 ms: the header is never whole.
        if slow_closed.is_none() && t0.elapsed() >= Duration::from_millis(50) * sent as u32 {
            let _ = slow.s.write_all(&header[sent % header.len()..][..1]);
            sent += 1;
        }
        if slow_closed.is_none() && poll_closed(&mut slow.s).is_none() {
            slow_closed = Some(t0.elapsed());
        }
        if idle_closed.is_none() && poll_closed(&mut idle.s).is_none() {
            idle_closed = Some(t0.elapsed());
        }
        let t = Instant::now();
        assert_eq!(busy.cmd(&[b"PING"]), simple("PONG"));
        worst = worst.max(t.elapsed());
        pings += 1;
        thread::sleep(Duration::from_millis(10));
    }
    let slow_closed = slow_closed.expect("the slowloris was never closed");
    let idle_closed = idle_closed.expect("the idle client was never closed");
    // At the timeout: not before, and within the sweep's quarter (plus
    // this loop's own step and some scheduling slack) after it.
    for (who, at) in [("slowloris", slow_closed), ("idle", idle_closed)] {
        assert!(
            at >= timeout - Duration::from_millis(50) && at < timeout + Duration::from_millis(900),
            "{who} closed at {at:?}"
        );
    }
    assert!(sent > 10, "the slowloris sent {sent} bytes");
    assert!(worst < Duration::from_millis(500), "a PING took {worst:?}");
    assert!(pings > 50, "{pings} PINGs");
    // In flight for three timeouts, and still open.
    assert!(
        poll_closed(&mut waiting.s).is_some(),
        "the waiting client was closed"
    );
    let s = node.stats();
    assert_eq!((s.timed_out, s.clients, s.dropped), (2, 2, 0), "{s:?}");
}

/// One client sending requests the server answers itself (here `-NOAUTH`)
/// as fast as it can cannot hold the loop from another client.
#[test]
fn a_flooding_client_does_not_stall_the_others() {
    let node = Node::start(with_password(b"pw"));
    let mut ok = node.connect();
    assert_eq!(ok.cmd(&[b"AUTH", b"pw"]), simple("OK"));
    let flood = TcpStream::connect(node.addr).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    flood
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = flood.try_clone().unwrap();
    let (s1, s2) = (Arc::clone(&stop), Arc::clone(&stop));
    let writer = thread::spawn(move || {
        let mut w = &flood;
        let chunk = b"PING\r\n".repeat(10_000);
        let deadline = Instant::now() + T;
        let mut sent = 0usize;
        while !s1.load(Ordering::Relaxed) && Instant::now() < deadline {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        sent
    });
    let drain = thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        let mut got = 0usize;
        let deadline = Instant::now() + T;
        while !s2.load(Ordering::Relaxed) && Instant::now() < deadline {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        got
    });
    node.wait_stats("the flood read", |s| s.commands > 100_000);
    let mut worst = Duration::ZERO;
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(ok.cmd(&[b"PING"]), simple("PONG"));
        worst = worst.max(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let got = drain.join().unwrap();
    assert!(sent > 1 << 20 && got > 1 << 20, "sent {sent}, got {got}");
    assert!(worst < Duration::from_millis(500), "a PING took {worst:?}");
}

// ---------------------------------------------------------------- parser

fn parse(buf: &[u8]) -> Parsed {
    parse_request(buf, &Limits::default())
}

fn req(args: &[&[u8]], used: usize) -> Parsed {
    Parsed::Request {
        args: args.iter().map(|a| a.to_vec()).collect(),
        used,
    }
}

#[test]
fn parse_cases() {
    assert_eq!(parse(b""), Parsed::Incomplete);
    assert_eq!(parse(b"*1\r\n$4\r\nPING\r\n"), req(&[b"PING"], 14));
    assert_eq!(parse(b"*1\r\n$4\r\nPING\r\nextra"), req(&[b"PING"], 14));
    assert_eq!(parse(b"PING\r\nPING\r\n"), req(&[b"PING"], 6));
    assert_eq!(parse(b"  GET  k \n"), req(&[b"GET", b"k"], 10));
    assert_eq!(parse(b"\r\n"), Parsed::Empty { used: 2 });
    assert_eq!(parse(b"*0\r\n$"), Parsed::Empty { used: 4 });
    assert_eq!(parse(b"*-1\r\n"), Parsed::Empty { used: 5 });
    for partial in [
        &b"*"[..],
        b"*1",
        b"*1\r",
        b"*1\r\n",
        b"*1\r\n$",
        b"*1\r\n$4\r\nPI",
        b"*1\r\n$4\r\nPING\r",
        b"PING",
    ] {
        assert_eq!(parse(partial), Parsed::Incomplete, "{partial:?}");
    }
    // Redis's string2ll: no sign but '-', no leading zeros.
    for bad in [
        &b"*01\r\n"[..],
        b"*-0\r\n",
        b"* 1\r\n",
        b"*1 \r\n",
        b"*\r\n",
        b"*99999999999999999999\r\n",
    ] {
        assert_eq!(
            parse(bad),
            Parsed::Error("ERR Protocol error: invalid multibulk length".into()),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse(b"*1\r\n$01\r\na\r\n"),
        Parsed::Error("ERR Protocol error: invalid bulk length".into())
    );
    // The two bytes after a bulk are not checked (Redis does not either).
    assert_eq!(parse(b"*1\r\n$1\r\naXY"), req(&[b"a"], 11));
    // sdssplitargs.
    assert_eq!(parse(b"a\"b c\"\r\n"), req(&[b"ab c"], 8));
    assert_eq!(
        parse(b"a\"b\"c\r\n"),
        Parsed::Error("ERR Protocol error: unbalanced quotes in request".into())
    );
    assert_eq!(parse(b"\"\\x4g\\x41\\q\"\r\n"), req(&[b"x4gAq"], 14));
    assert_eq!(parse(b"'it\\'s' \"\\\\\"\n"), req(&[b"it's", b"\\"], 13));
    assert_eq!(parse(b"a\x0bb\r\n"), req(&[b"a\x0bb"], 5));
    assert_eq!(
        parse(b"\"a\"b\n"),
        Parsed::Error("ERR Protocol error: unbalanced quotes in request".into())
    );
}

#[test]
fn parse_limits_are_exact() {
    let limits = Limits {
        max_clients: 1,
        max_request_bytes: 40,
        max_args: 3,
        ..Limits::default()
    };
    let p = |b: &[u8]| parse_request(b, &limits);
    let at = encode_cmd(&[b"SET", b"k", &[b'v'; 13]]);
    assert_eq!(at.len(), 40);
    assert!(matches!(p(&at), Parsed::Request { used: 40, .. }));
    let over = encode_cmd(&[b"SET", b"k", &[b'v'; 14]]);
    assert_eq!(
        p(&over),
        Parsed::Error(
            "ERR Protocol error: request larger than client_query_buffer_limit (40 bytes)".into()
        )
    );
    // Known from the header, with no body.
    assert_eq!(p(&over[..over.len() - 16]), p(&over));
    assert_eq!(
        p(b"*4\r\n"),
        Parsed::Error("ERR Protocol error: invalid multibulk length".into())
    );
    assert_eq!(
        p(b"*1\r\n$41\r\n"),
        Parsed::Error("ERR Protocol error: invalid bulk length".into())
    );
    assert_eq!(p(b"a b c\r\n"), req(&[b"a", b"b", b"c"], 7));
    assert_eq!(
        p(b"a b c d\r\n"),
        Parsed::Error("ERR Protocol error: too many arguments in inline request".into())
    );
    // Inline lines are capped by max_request_bytes when it is under 64 KiB.
    let line = [b'x'; 40];
    assert_eq!(p(&[&line[..], b"\r\n"].concat()), req(&[&line], 42));
    assert_eq!(p(&line), Parsed::Incomplete);
    assert_eq!(p(&[&line[..], b"\r"].concat()), Parsed::Incomplete);
    assert_eq!(
        p(&[&line[..], b"xx"].concat()),
        Parsed::Error("ERR Protocol error: too big inline request".into())
    );
    assert_eq!(
        p(&[&line[..], b"x\n"].concat()),
        Parsed::Error("ERR Protocol error: too big inline request".into())
    );
}

/// Quotes `arg` so sdssplitargs gives it back: every byte as `\xHH`.
fn quote(arg: &[u8]) -> Vec<u8> {
    let mut q = b"\"".to_vec();
    for b in arg {
        q.extend_from_slice(format!("\\x{b:02x}").as_bytes());
    }
    q.push(b'"');
    q
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$')],
            0..6
        ),
        proptest::collection::vec(any::<u8>(), 200..2000),
    ]
}

fn args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(arg(), 1..12)
}

/// A request in either form, with the args it parses to (none for an empty
/// line).
fn wire_request() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    prop_oneof![
        args().prop_map(|a| {
            let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            (encode_cmd(&refs), a)
        }),
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..12),
            any::<bool>()
        )
            .prop_map(|(a, crlf)| {
                let mut line = a
                    .iter()
                    .map(|x| quote(x))
                    .collect::<Vec<_>>()
                    .join(&b" "[..]);
                line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                (line, a)
            }),
        proptest::collection::vec("[a-zA-Z0-9_:.-]{1,12}", 1..6).prop_map(|w| {
            let line = format!("{}\r\n", w.join("  "));
            (
                line.into_bytes(),
                w.into_iter().map(String::into_bytes).collect(),
            )
        }),
        Just((b"\r\n".to_vec(), vec![])),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "(?s).{0,40}".prop_map(Reply::Simple),
        "(?s).{0,40}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Reply::Bulk),
        Just(Reply::Null),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
    })
}

fn expected_frame(r: &Reply) -> OwnedFrame {
    match r {
        Reply::Simple(s) => OwnedFrame::SimpleString(s.replace(['\r', '\n'], " ").into_bytes()),
        Reply::Error(s) => OwnedFrame::Error(s.replace(['\r', '\n'], " ")),
        Reply::Integer(i) => OwnedFrame::Integer(*i),
        Reply::Bulk(b) => OwnedFrame::BulkString(b.clone()),
        Reply::Null => OwnedFrame::Null,
        Reply::Array(a) => OwnedFrame::Array(a.iter().map(expected_frame).collect()),
    }
}

/// What holds of any parse of any bytes.
fn check_invariants(buf: &[u8], limits: &Limits) {
    match parse_request(buf, limits) {
        Parsed::Incomplete => {}
        Parsed::Empty { used } => {
            assert!(used > 0 && used <= buf.len());
            assert_eq!(parse_request(&buf[..used], limits), Parsed::Empty { used });
            assert_eq!(parse_request(&buf[..used - 1], limits), Parsed::Incomplete);
        }
        Parsed::Request { args, used } => {
            assert!(used > 0 && used <= buf.len());
            assert!(!args.is_empty() && args.len() <= limits.max_args);
            assert!(args.iter().map(Vec::len).sum::<usize>() <= used);
            let again = Parsed::Request { args, used };
            assert_eq!(parse_request(&buf[..used], limits), again);
            assert_eq!(parse_request(&buf[..used - 1], limits), Parsed::Incomplete);
        }
        Parsed::Error(e) => {
            assert!(e.starts_with("ERR Protocol error: "), "{e}");
            assert!(!e.contains(['\r', '\n']), "{e:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_invariants(&buf, &Limits::default());
        check_invariants(&buf, &Limits { max_clients: 1, max_request_bytes: 64, max_args: 2, ..Limits::default() });
    }

    /// Near misses: a valid request with a few bytes changed, cut or
    /// repeated.
    #[test]
    fn mutated_requests_never_panic(
        (wire, _) in wire_request(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut buf = wire;
        for (at, byte, how) in edits {
            if buf.is_empty() { break; }
            let i = at.index(buf.len());
            match how {
                0 => buf[i] = byte,
                1 => { buf.truncate(i); }
                _ => { let tail = buf[i..].to_vec(); buf.extend_from_slice(&tail); }
            }
        }
        check_invariants(&buf, &Limits::default());
        check_invariants(&buf, &Limits { max_clients: 1, max_request_bytes: 100, max_args: 4, ..Limits::default() });
    }

    /// Arbitrary binary args as a RESP array parse back to themselves, and
    /// fed in arbitrary pieces are Incomplete until the last byte is in.
    #[test]
    fn resp_arrays_round_trip_in_any_split(
        a in args(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        let wire = encode_cmd(&refs);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len())).collect();
        cuts.sort_unstable();
        let mut fed = Vec::new();
        let mut from = 0;
        for cut in cuts {
            fed.extend_from_slice(&wire[from..cut]);
            from = cut;
            prop_assert_eq!(parse(&fed), Parsed::Incomplete);
        }
        fed.extend_from_slice(&wire[from..]);
        prop_assert_eq!(parse(&fed), Parsed::Request { args: a, used: wire.len() });
    }

    /// Requests of both forms one after another parse one by one, each
    /// with its own length.
    #[test]
    fn concatenated_requests_parse_in_turn(reqs in proptest::collection::vec(wire_request(), 1..8)) {
        let wire: Vec<u8> = reqs.iter().flat_map(|(w, _)| w.clone()).collect();
        let mut at = 0;
        for (w, a) in &reqs {
            let got = parse(&wire[at..]);
            if a.is_empty() {
                prop_assert_eq!(got, Parsed::Empty { used: w.len() });
            } else {
                prop_assert_eq!(got, Parsed::Request { args: a.clone(), used: w.len() });
            }
            at += w.len();
        }
        prop_assert_eq!(parse(&wire[at..]), Parsed::Incomplete);
    }

    /// Every reply encodes to RESP2 that decodes to it (CR and LF in one-line
    /// strings as spaces), exactly, with nothing left over.
    #[test]
    fn replies_encode_to_what_they_are(r in reply()) {
        let mut out = b"prefix".to_vec();
        icx_node::resp::encode_reply(r.clone(), &mut out);
        let (frame, used) = decode(&out[6..]).unwrap().unwrap();
        prop_assert_eq!(used, out.len() - 6);
        prop_assert_eq!(frame, expected_frame(&r));
    }
}
