//! The RESP server's client security over real TCP on 127.0.0.1: AUTH
//! and Redis's bounds before it, protected mode, the idle timeout, and
//! clients that flood or trickle. Every wait is bounded in time.

mod resp_fixture;

use resp_fixture::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use icx_node::resp::{parse_request, parse_request_before_auth, Limits, Parsed, RespServer};
use redis_protocol::resp2::types::OwnedFrame;

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
