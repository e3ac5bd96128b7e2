//! `Cmd::parse`: every command, option and error text as Redis 7 gives
//! them, and no panic on any arguments.

use icx_fusion::db::{Cmd, SetCond};
use proptest::prelude::*;

const WALL: u64 = 1_700_000_000_000;

fn args(a: &[&str]) -> Vec<Vec<u8>> {
    a.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn parse(a: &[&str]) -> Result<Cmd, String> {
    Cmd::parse(&args(a), WALL)
}

fn err(a: &[&str]) -> String {
    parse(a).expect_err(&format!("{a:?} parsed"))
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn set(expires_at: Option<u64>, keep_ttl: bool, cond: SetCond, get: bool) -> Cmd {
    Cmd::Set {
        key: b("k"),
        value: b("v"),
        expires_at,
        keep_ttl,
        cond,
        get,
    }
}

#[test]
fn every_command_in_any_case() {
    let k = || b("k");
    let ks = || vec![b("a"), b("b")];
    let cases: Vec<(&[&str], Cmd)> = vec![
        (&["GET", "k"], Cmd::Get { key: k() }),
        (&["get", "k"], Cmd::Get { key: k() }),
        (&["Set", "k", "v"], set(None, false, SetCond::Always, false)),
        (&["del", "a", "b"], Cmd::Del { keys: ks() }),
        (&["EXISTS", "a", "b"], Cmd::Exists { keys: ks() }),
        (&["incr", "k"], Cmd::IncrBy { key: k(), delta: 1 }),
        (
            &["DECR", "k"],
            Cmd::IncrBy {
                key: k(),
                delta: -1,
            },
        ),
        (
            &["incrby", "k", "-5"],
            Cmd::IncrBy {
                key: k(),
                delta: -5,
            },
        ),
        (
            &["decrby", "k", "5"],
            Cmd::IncrBy {
                key: k(),
                delta: -5,
            },
        ),
        (
            &["decrby", "k", "-9223372036854775807"],
            Cmd::IncrBy {
                key: k(),
                delta: i64::MAX,
            },
        ),
        (&["mget", "a", "b"], Cmd::MGet { keys: ks() }),
        (
            &["MSET", "a", "1", "b", "2"],
            Cmd::MSet {
                pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
            },
        ),
        (
            &["append", "k", "v"],
            Cmd::Append {
                key: k(),
                value: b("v"),
            },
        ),
        (&["strlen", "k"], Cmd::StrLen { key: k() }),
        (&["DBSIZE"], Cmd::DbSize),
        (&["flushall"], Cmd::FlushAll),
        (&["flushall", "ASYNC"], Cmd::FlushAll),
        (&["FLUSHALL", "sync"], Cmd::FlushAll),
        (
            &["block.get", "1", "7"],
            Cmd::BlockGet { file: 1, block: 7 },
        ),
        (
            &["BLOCK.SCAN", "2", "16", "100"],
            Cmd::BlockScan {
                file: 2,
                first: 16,
                count: 100,
            },
        ),
    ];
    for (a, want) in cases {
        assert_eq!(parse(a), Ok(want), "{a:?}");
    }
    // Every name is one parse knows.
    for name in Cmd::NAMES {
        if let Err(e) = parse(&[name]) {
            assert!(!e.starts_with("ERR unknown"), "{name}: {e}");
        }
    }
}

#[test]
fn binary_keys_and_values_are_kept_as_bytes() {
    let a = vec![b"SET".to_vec(), vec![0, 255, b'\n'], vec![]];
    assert_eq!(
        Cmd::parse(&a, WALL),
        Ok(Cmd::Set {
            key: vec![0, 255, b'\n'],
            value: vec![],
            expires_at: None,
            keep_ttl: false,
            cond: SetCond::Always,
            get: false,
        })
    );
}

#[test]
fn wrong_arity_names_the_command_in_lower_case() {
    for (a, name) in [
        (&["GET"][..], "get"),
        (&["get", "a", "b"], "get"),
        (&["SET", "k"], "set"),
        (&["del"], "del"),
        (&["exists"], "exists"),
        (&["incr"], "incr"),
        (&["incr", "a", "b"], "incr"),
        (&["incrby", "k"], "incrby"),
        (&["decr"], "decr"),
        (&["decrby", "k", "1", "2"], "decrby"),
        (&["mget"], "mget"),
        (&["mset", "k"], "mset"),
        (&["mset", "a", "1", "b"], "mset"),
        (&["append", "k"], "append"),
        (&["strlen"], "strlen"),
        (&["dbsize", "x"], "dbsize"),
        (&["block.get", "1"], "block.get"),
        (&["block.scan", "1", "2"], "block.scan"),
    ] {
        assert_eq!(
            err(a),
            format!("ERR wrong number of arguments for '{name}' command"),
            "{a:?}"
        );
    }
}

#[test]
fn unknown_commands_as_redis_says_them() {
    assert_eq!(
        err(&["foo", "a", "b"]),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        err(&["nope"]),
        "ERR unknown command 'nope', with args beginning with: "
    );
    assert_eq!(
        err(&["x\r\ny", "a\nb"]),
        "ERR unknown command 'x  y', with args beginning with: 'a b' "
    );
    assert_eq!(Cmd::parse(&[], WALL), Err("ERR empty command".into()));
}

#[test]
fn set_options() {
    let ms = |t: u64| Some(t);
    use SetCond::*;
    for (a, want) in [
        (&["set", "k", "v", "NX"][..], set(None, false, Nx, false)),
        (&["set", "k", "v", "xx"], set(None, false, Xx, false)),
        (&["set", "k", "v", "GET"], set(None, false, Always, true)),
        (&["set", "k", "v", "nx", "get"], set(None, false, Nx, true)),
        (&["set", "k", "v", "xx", "get"], set(None, false, Xx, true)),
        (&["set", "k", "v", "nx", "nx"], set(None, false, Nx, false)),
        (
            &["set", "k", "v", "keepttl"],
            set(None, true, Always, false),
        ),
        (
            &["set", "k", "v", "EX", "10"],
            set(ms(WALL + 10_000), false, Always, false),
        ),
        (
            &["set", "k", "v", "px", "10"],
            set(ms(WALL + 10), false, Always, false),
        ),
        (
            &["set", "k", "v", "exat", "10"],
            set(ms(10_000), false, Always, false),
        ),
        (
            &["set", "k", "v", "pxat", "10"],
            set(ms(10), false, Always, false),
        ),
        // A repeated expiry: the last wins, as in Redis.
        (
            &["set", "k", "v", "ex", "1", "ex", "2"],
            set(ms(WALL + 2000), false, Always, false),
        ),
        (
            &["set", "k", "v", "px", "5", "NX", "GET"],
            set(ms(WALL + 5), false, Nx, true),
        ),
        (
            &["set", "k", "v", "keepttl", "xx", "get"],
            set(None, true, Xx, true),
        ),
    ] {
        assert_eq!(parse(a), Ok(want), "{a:?}");
    }
}

#[test]
fn set_option_errors() {
    const SYNTAX: &str = "ERR syntax error";
    const NOT_INT: &str = "ERR value is not an integer or out of range";
    const EXPIRE: &str = "ERR invalid expire time in 'set' command";
    for (a, want) in [
        (&["set", "k", "v", "nx", "xx"][..], SYNTAX),
        (&["set", "k", "v", "xx", "nx"], SYNTAX),
        (&["set", "k", "v", "ex"], SYNTAX),
        (&["set", "k", "v", "ex", "1", "px", "1"], SYNTAX),
        (&["set", "k", "v", "pxat", "1", "exat", "1"], SYNTAX),
        (&["set", "k", "v", "ex", "1", "keepttl"], SYNTAX),
        (&["set", "k", "v", "keepttl", "ex", "1"], SYNTAX),
        (&["set", "k", "v", "bogus"], SYNTAX),
        (&["set", "k", "v", "persist"], SYNTAX),
        // Options are all checked before the expiry's value.
        (&["set", "k", "v", "ex", "x", "nx", "xx"], SYNTAX),
        (&["set", "k", "v", "ex", "x"], NOT_INT),
        (&["set", "k", "v", "px", "1.5"], NOT_INT),
        (&["set", "k", "v", "ex", "+1"], NOT_INT),
        (&["set", "k", "v", "ex", "99999999999999999999"], NOT_INT),
        (&["set", "k", "v", "ex", "0"], EXPIRE),
        (&["set", "k", "v", "px", "-1"], EXPIRE),
        (&["set", "k", "v", "exat", "0"], EXPIRE),
        (&["set", "k", "v", "ex", "9223372036854776"], EXPIRE),
        (&["set", "k", "v", "px", "9223372036854775807"], EXPIRE),
    ] {
        assert_eq!(err(a), want, "{a:?}");
    }
    // The largest absolute times are fine.
    assert!(parse(&["set", "k", "v", "pxat", "9223372036854775807"]).is_ok());
    assert!(parse(&["set", "k", "v", "exat", "9223372036854775"]).is_ok());
}

#[test]
fn integer_arguments() {
    const NOT_INT: &str = "ERR value is not an integer or out of range";
    for a in [
        &["incrby", "k", "x"][..],
        &["incrby", "k", ""],
        &["incrby", "k", " 1"],
        &["incrby", "k", "01"],
        &["incrby", "k", "9223372036854775808"],
        &["decrby", "k", "1e3"],
        &["block.get", "x", "1"],
        &["block.get", "1", "-1"],
        &["block.get", "65536", "1"],
        &["block.get", "1", "4294967296"],
        &["block.scan", "1", "0", "-3"],
    ] {
        assert_eq!(err(a), NOT_INT, "{a:?}");
    }
    assert_eq!(
        err(&["decrby", "k", "-9223372036854775808"]),
        "ERR decrement would overflow"
    );
    assert_eq!(
        parse(&["incrby", "k", "-9223372036854775808"]),
        Ok(Cmd::IncrBy {
            key: b("k"),
            delta: i64::MIN
        })
    );
}

#[test]
fn flushall_takes_sync_or_async_only() {
    assert_eq!(err(&["flushall", "now"]), "ERR syntax error");
    assert_eq!(err(&["flushall", "sync", "async"]), "ERR syntax error");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(
        name in prop_oneof![
            proptest::sample::select(Cmd::NAMES).prop_map(|n| n.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ],
        rest in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(&[
                    "nx", "XX", "get", "ex", "PX", "exat", "pxat", "keepttl", "0", "-1",
                    "9223372036854775807", "-9223372036854775808", "sync",
                ][..]).prop_map(|s| s.as_bytes().to_vec()),
                proptest::collection::vec(any::<u8>(), 0..24),
            ],
            0..8,
        ),
        wall in any::<u64>(),
    ) {
        let mut a = vec![name];
        a.extend(rest);
        let _ = Cmd::parse(&a, wall);
    }
}
