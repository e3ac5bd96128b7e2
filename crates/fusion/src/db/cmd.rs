//! Requests as Redis 7 parses them: the command table (names, arities),
//! SET's options, integers as `string2ll` reads them, and Redis's error
//! texts, so a client sees what a Redis server would say.

use crate::io::{BlockNo, FileNo};

/// SET's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCond {
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if it exists.
    Xx,
}

/// A data command, parsed. Keys and values are bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    Get {
        key: Vec<u8>,
    },
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        /// Absolute expiry in wall-clock ms (EX/PX were added to the
        /// `wall_ms` of the parse).
        expires_at: Option<u64>,
        keep_ttl: bool,
        cond: SetCond,
        /// Reply with the old value.
        get: bool,
    },
    Del {
        keys: Vec<Vec<u8>>,
    },
    Exists {
        keys: Vec<Vec<u8>>,
    },
    /// INCR, INCRBY, DECR, DECRBY.
    IncrBy {
        key: Vec<u8>,
        delta: i64,
    },
    MGet {
        keys: Vec<Vec<u8>>,
    },
    MSet {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Append {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    StrLen {
        key: Vec<u8>,
    },
    DbSize,
    FlushAll,
    /// One block's SCN, key count and checksum, as any node reads it.
    BlockGet {
        file: FileNo,
        block: BlockNo,
    },
    /// A chained checksum over `count` blocks from `first`.
    BlockScan {
        file: FileNo,
        first: BlockNo,
        count: u32,
    },
}

pub(super) const SYNTAX: &str = "ERR syntax error";
pub(super) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis's arity of each command: n exactly n arguments (the name
/// included), -n at least n.
fn arity(name: &str) -> Option<i32> {
    Some(match name {
        "get" | "incr" | "decr" | "strlen" => 2,
        "set" | "mset" => -3,
        "del" | "exists" | "mget" => -2,
        "incrby" | "decrby" | "append" | "block.get" => 3,
        "dbsize" => 1,
        "flushall" => -1,
        "block.scan" => 4,
        _ => return None,
    })
}

/// Redis's `string2ll`: an optional '-', then digits with no leading zero
/// (or "0" alone), nothing else, within i64 (so "+1", " 1", "01", "-0"
/// and "1.0" are not integers).
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    // Redis refuses 21 bytes or more (LONG_STR_SIZE) outright.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

fn int(arg: &[u8]) -> Result<i64, String> {
    string2ll(arg).ok_or_else(|| NOT_INTEGER.to_string())
}

/// A non-negative integer that fits `T` (file and block numbers, counts).
fn number<T: TryFrom<i64>>(arg: &[u8]) -> Result<T, String> {
    T::try_from(int(arg)?).map_err(|_| NOT_INTEGER.to_string())
}

/// An argument as it goes into an error text: lossy UTF-8, line breaks as
/// spaces (Redis replaces them, so an error stays one line).
fn shown(arg: &[u8], max: usize) -> String {
    let s: String = String::from_utf8_lossy(arg).chars().take(max).collect();
    s.replace(['\r', '\n'], " ")
}

fn unknown(args: &[Vec<u8>]) -> String {
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        rest.push_str(&format!("'{}' ", shown(a, 128 - rest.len())));
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {rest}",
        shown(&args[0], 128)
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// SET's expiry as Redis checks it: an integer, positive, and in range
/// once made absolute milliseconds.
fn expire_ms(unit: Unit, arg: &[u8], wall_ms: u64) -> Result<u64, String> {
    let invalid = || "ERR invalid expire time in 'set' command".to_string();
    let v = int(arg)?;
    let seconds = matches!(unit, Unit::Ex | Unit::ExAt);
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        return Err(invalid());
    }
    let ms = if seconds { v * 1000 } else { v };
    let ms = match unit {
        Unit::Ex | Unit::Px => ms
            .checked_add(i64::try_from(wall_ms).map_err(|_| invalid())?)
            .ok_or_else(invalid)?,
        Unit::ExAt | Unit::PxAt => ms,
    };
    u64::try_from(ms).map_err(|_| invalid())
}

fn parse_set(args: &[Vec<u8>], wall_ms: u64) -> Result<Cmd, String> {
    let mut cond = SetCond::Always;
    let (mut get, mut keep_ttl) = (false, false);
    let mut expire: Option<(Unit, &[u8])> = None;
    let mut j = 3;
    while j < args.len() {
        let opt = args[j].to_ascii_lowercase();
        let next = args.get(j + 1).map(Vec::as_slice);
        let unit = match opt.as_slice() {
            b"ex" => Some(Unit::Ex),
            b"px" => Some(Unit::Px),
            b"exat" => Some(Unit::ExAt),
            b"pxat" => Some(Unit::PxAt),
            _ => None,
        };
        // As Redis: a repeated option is allowed (the last expiry wins),
        // conflicting ones are a syntax error.
        match (opt.as_slice(), unit, next) {
            (b"nx", ..) if cond != SetCond::Xx => cond = SetCond::Nx,
            (b"xx", ..) if cond != SetCond::Nx => cond = SetCond::Xx,
            (b"get", ..) => get = true,
            (b"keepttl", ..) if expire.is_none() => keep_ttl = true,
            (_, Some(u), Some(v)) if !keep_ttl && expire.is_none_or(|(e, _)| e == u) => {
                expire = Some((u, v));
                j += 1;
            }
            _ => return Err(SYNTAX.to_string()),
        }
        j += 1;
    }
    let expires_at = match expire {
        Some((unit, v)) => Some(expire_ms(unit, v, wall_ms)?),
        None => None,
    };
    Ok(Cmd::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        expires_at,
        keep_ttl,
        cond,
        get,
    })
}

impl Cmd {
    /// The data commands this parses, lower-case (the node routes these
    /// names here).
    pub const NAMES: &'static [&'static str] = &[
        "get",
        "set",
        "del",
        "exists",
        "incr",
        "incrby",
        "decr",
        "decrby",
        "mget",
        "mset",
        "append",
        "strlen",
        "dbsize",
        "flushall",
        "block.get",
        "block.scan",
    ];

    /// Parses a Redis request (`args[0]` is the command name, any case) as
    /// Redis 7 does, with its error texts (the reply, without the '-'):
    /// arity, syntax, integers, SET's expiry (made absolute with
    /// `wall_ms`). Never panics.
    pub fn parse(args: &[Vec<u8>], wall_ms: u64) -> Result<Cmd, String> {
        let Some(first) = args.first() else {
            return Err("ERR empty command".to_string());
        };
        let lower = first.to_ascii_lowercase();
        let name = Cmd::NAMES
            .iter()
            .find(|n| n.as_bytes() == lower)
            .copied()
            .unwrap_or("");
        let Some(arity) = arity(name) else {
            return Err(unknown(args));
        };
        let n = args.len() as i64;
        let bad_arity = if arity >= 0 {
            n != i64::from(arity)
        } else {
            n < -i64::from(arity)
        };
        if bad_arity || (name == "mset" && n % 2 == 0) {
            return Err(format!(
                "ERR wrong number of arguments for '{name}' command"
            ));
        }
        let key = || args[1].clone();
        let keys = || args[1..].to_vec();
        Ok(match name {
            "get" => Cmd::Get { key: key() },
            "set" => return parse_set(args, wall_ms),
            "del" => Cmd::Del { keys: keys() },
            "exists" => Cmd::Exists { keys: keys() },
            "incr" => Cmd::IncrBy {
                key: key(),
                delta: 1,
            },
            "decr" => Cmd::IncrBy {
                key: key(),
                delta: -1,
            },
            "incrby" => Cmd::IncrBy {
                key: key(),
                delta: int(&args[2])?,
            },
            "decrby" => {
                let by = int(&args[2])?;
                let delta = by
                    .checked_neg()
                    .ok_or_else(|| "ERR decrement would overflow".to_string())?;
                Cmd::IncrBy { key: key(), delta }
            }
            "mget" => Cmd::MGet { keys: keys() },
            "mset" => Cmd::MSet {
                pairs: args[1..]
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            },
            "append" => Cmd::Append {
                key: key(),
                value: args[2].clone(),
            },
            "strlen" => Cmd::StrLen { key: key() },
            "dbsize" => Cmd::DbSize,
            "flushall" => match &args[1..] {
                [] => Cmd::FlushAll,
                [a] if a.eq_ignore_ascii_case(b"sync") || a.eq_ignore_ascii_case(b"async") => {
                    Cmd::FlushAll
                }
                _ => return Err(SYNTAX.to_string()),
            },
            "block.get" => Cmd::BlockGet {
                file: number(&args[1])?,
                block: number(&args[2])?,
            },
            "block.scan" => Cmd::BlockScan {
                file: number(&args[1])?,
                first: number(&args[2])?,
                count: number(&args[3])?,
            },
            _ => return Err(unknown(args)),
        })
    }

    /// The command's kind, for statistics (INCR, DECR and DECRBY count as
    /// "incrby").
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Get { .. } => "get",
            Cmd::Set { .. } => "set",
            Cmd::Del { .. } => "del",
            Cmd::Exists { .. } => "exists",
            Cmd::IncrBy { .. } => "incrby",
            Cmd::MGet { .. } => "mget",
            Cmd::MSet { .. } => "mset",
            Cmd::Append { .. } => "append",
            Cmd::StrLen { .. } => "strlen",
            Cmd::DbSize => "dbsize",
            Cmd::FlushAll => "flushall",
            Cmd::BlockGet { .. } => "block.get",
            Cmd::BlockScan { .. } => "block.scan",
        }
    }

    /// The keys a command reads or writes, in argument order.
    pub(super) fn keys(&self) -> Vec<&[u8]> {
        match self {
            Cmd::Get { key }
            | Cmd::Set { key, .. }
            | Cmd::IncrBy { key, .. }
            | Cmd::Append { key, .. }
            | Cmd::StrLen { key } => vec![key],
            Cmd::Del { keys } | Cmd::Exists { keys } | Cmd::MGet { keys } => {
                keys.iter().map(Vec::as_slice).collect()
            }
            Cmd::MSet { pairs } => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            Cmd::DbSize | Cmd::FlushAll | Cmd::BlockGet { .. } | Cmd::BlockScan { .. } => {
                Vec::new()
            }
        }
    }

    /// Whether a key command changes data (takes X).
    pub(super) fn writes(&self) -> bool {
        matches!(
            self,
            Cmd::Set { .. }
                | Cmd::Del { .. }
                | Cmd::IncrBy { .. }
                | Cmd::MSet { .. }
                | Cmd::Append { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_an_arity() {
        for n in Cmd::NAMES {
            assert!(arity(n).is_some(), "{n}");
        }
    }

    #[test]
    fn string2ll_as_redis() {
        for (s, v) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("-0", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.5", None),
            ("000000000000000000001", None),
        ] {
            assert_eq!(string2ll(s.as_bytes()), v, "{s:?}");
        }
    }
}
