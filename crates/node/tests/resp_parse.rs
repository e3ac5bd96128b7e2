//! The RESP request parser (`parse_request`) and reply encoding, as cases
//! and properties: never a panic, limits exact, every request read back as
//! written. The TCP server is tested in `resp.rs`.

use icx_node::client::encode_request;
use icx_node::resp::{parse_request, Limits, Parsed, Reply};
use proptest::prelude::*;
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};

fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut out, args);
    out
}

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
