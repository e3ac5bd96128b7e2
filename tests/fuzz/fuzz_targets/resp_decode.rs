//! Hostile RESP requests: bytes from any TCP client of fusion-node's admin
//! port, into `icx_node::resp::parse_request`.
//!
//! The first input byte picks the limits (bit 0: the defaults, or small
//! ones so the size and count checks are reached), whether the connection
//! has authenticated (bit 3: `parse_request`, or
//! `parse_request_before_auth` with Redis's unauthenticated bounds) and a
//! mode (bits 1-2):
//! the rest as raw bytes; or the rest split on 0xff into arguments and
//! encoded as a RESP array, or as an inline line with every byte quoted
//! `\xHH`, so whole valid requests are parsed, not only near misses.
//!
//! Holds: nothing panics; a request (or skipped empty line) parsed from
//! `used` bytes parses the same from exactly those bytes and is Incomplete
//! from fewer; its args re-encoded as an array parse back to them; a valid
//! encoding parses to its args unless over the limits; an error is a
//! one-line `ERR Protocol error: ...`.
#![no_main]

use icx_node::resp::{
    parse_request, parse_request_before_auth, Limits, Parsed, AUTH_MAX_ARGS, AUTH_MAX_BULK,
};
use libfuzzer_sys::fuzz_target;

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn inline(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.push(b'"');
        for b in a.iter() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Redis's bounds before AUTH, which inline requests are not held to.
fn unauth_fits<A: AsRef<[u8]>>(args: &[A]) -> bool {
    args.len() <= AUTH_MAX_ARGS && args.iter().all(|a| a.as_ref().len() <= AUTH_MAX_BULK)
}

fn check(authed: bool, buf: &[u8], limits: &Limits) -> Parsed {
    let parse_request = if authed {
        parse_request
    } else {
        parse_request_before_auth
    };
    let parsed = parse_request(buf, limits);
    match &parsed {
        Parsed::Incomplete => {}
        Parsed::Empty { used } | Parsed::Request { used, .. } => {
            let used = *used;
            assert!(
                used > 0 && used <= buf.len(),
                "used {used} of {}",
                buf.len()
            );
            assert_eq!(
                parse_request(&buf[..used], limits),
                parsed,
                "same from its own bytes"
            );
            for shorter in [0, used / 2, used - 1] {
                assert_eq!(
                    parse_request(&buf[..shorter], limits),
                    Parsed::Incomplete,
                    "prefix {shorter}"
                );
            }
            if let Parsed::Request { args, .. } = &parsed {
                assert!(!args.is_empty() && args.len() <= limits.max_args);
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let again = multibulk(&refs);
                if again.len() <= limits.max_request_bytes && (authed || unauth_fits(args)) {
                    assert_eq!(
                        parse_request(&again, limits),
                        Parsed::Request {
                            args: args.clone(),
                            used: again.len()
                        },
                        "re-encoded"
                    );
                }
            }
        }
        Parsed::Error(e) => {
            assert!(e.starts_with("ERR Protocol error: "), "{e}");
            assert!(!e.contains(['\r', '\n']), "{e:?}");
        }
    }
    parsed
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = if mode & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_clients: 1,
            max_request_bytes: 300,
            max_args: 6,
            ..Limits::default()
        }
    };
    let authed = mode & 8 == 0;
    match (mode >> 1) & 3 {
        0 | 3 => {
            check(authed, rest, &limits);
        }
        form => {
            let args: Vec<&[u8]> = rest.split(|&b| b == 0xff).collect();
            let wire = if form == 1 {
                multibulk(&args)
            } else {
                inline(&args)
            };
            let fits = args.len() <= limits.max_args
                && if form == 1 {
                    wire.len() <= limits.max_request_bytes && (authed || unauth_fits(&args))
                } else {
                    wire.len() - 2 <= limits.max_request_bytes.min(icx_node::resp::INLINE_MAX)
                };
            match check(authed, &wire, &limits) {
                Parsed::Request { args: got, used } if fits => {
                    assert_eq!(used, wire.len());
                    assert_eq!(got, args, "round trip");
                }
                Parsed::Error(_) if !fits => {}
                other => panic!("fits {fits}: {other:?}"),
            }
        }
    }
});
