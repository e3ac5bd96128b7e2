//! The RESP server over real TCP on 127.0.0.1, against a test-side node
//! loop that answers requests (`resp_fixture`): framing, pipelines, reply
//! kinds, errors, shutdown. Every wait is bounded in time. AUTH, limits
//! and hostile clients are `resp_auth.rs`; the parser alone `resp_parse.rs`.

mod resp_fixture;

use resp_fixture::*;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use icx_node::resp::{Limits, RespServer, INLINE_MAX};
use redis_protocol::resp2::types::OwnedFrame;

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
