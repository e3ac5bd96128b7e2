//! Requests in, replies out: the pure half of the RESP server.
//!
//! A request is what Redis's `processInputBuffer` reads: a RESP array of
//! bulk strings when the first byte is `*` (`processMultibulkBuffer`),
//! anything else an inline command line (`processInlineBuffer`, split as
//! `sdssplitargs` does). The array itself is decoded by `redis-protocol`;
//! what is written here is what that crate does not do: Redis's limits
//! (argument count, bulk length, request size, header line length), checked
//! on the headers before a single body byte is waited for, so a hostile
//! length never makes the server buffer or allocate beyond the limit; the
//! rule that a request is an array of bulk strings and nothing else (no
//! nesting, so no recursion on hostile input); and the inline form.

use redis_protocol::resp2::{
    decode::decode,
    encode::encode,
    types::{OwnedFrame, Resp2Frame},
};

use super::{Limits, Reply, AUTH_MAX_ARGS, AUTH_MAX_BULK};

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline command line, and
/// the longest `*<count>` / `$<len>` header line waited for, before giving
/// up with a protocol error (capped by `max_request_bytes` when lower).
pub const INLINE_MAX: usize = 64 * 1024;

/// What [`parse_request`] found at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet: read more and parse again.
    Incomplete,
    /// An empty inline line, or `*0` / `*-1`: nothing to run (Redis skips
    /// them); consume `used` bytes.
    Empty { used: usize },
    /// A request of one or more arguments, taking the first `used` bytes.
    Request { args: Vec<Vec<u8>>, used: usize },
    /// A protocol error: the error reply's text (without the leading `-`,
    /// e.g. `ERR Protocol error: invalid bulk length`). The connection is
    /// answered with it and closed; nothing after it is read.
    Error(String),
}

/// Parses the request at the start of `buf`. Pure; never panics, whatever
/// the bytes; never allocates more than the request's own size, which is
/// bounded by `limits`.
/// The request is read as an authenticated connection's (see
/// [`parse_request_before_auth`]).
pub fn parse_request(buf: &[u8], limits: &Limits) -> Parsed {
    parse(buf, limits, true).0
}

/// [`parse_request`] for a connection that has not authenticated while a
/// password is required: Redis's bounds for it, more than
/// [`AUTH_MAX_ARGS`] arguments or a bulk over [`AUTH_MAX_BULK`] bytes,
/// are protocol errors too.
pub fn parse_request_before_auth(buf: &[u8], limits: &Limits) -> Parsed {
    parse(buf, limits, false).0
}

/// [`parse_request`] (or, `authed` false, [`parse_request_before_auth`]),
/// plus, when it is [`Parsed::Incomplete`], how long `buf` must be before
/// parsing again can give anything else (so a request arriving a byte at
/// a time is not rescanned per byte). 0 otherwise.
pub(crate) fn parse(buf: &[u8], limits: &Limits, authed: bool) -> (Parsed, usize) {
    match buf.first() {
        None => (Parsed::Incomplete, 1),
        Some(b'*') => multibulk(buf, limits, authed),
        Some(_) => inline(buf, limits),
    }
}

fn protocol_error(what: impl std::fmt::Display) -> (Parsed, usize) {
    (Parsed::Error(format!("ERR Protocol error: {what}")), 0)
}

fn too_big(limits: &Limits) -> (Parsed, usize) {
    protocol_error(format_args!(
        "request larger than client_query_buffer_limit ({} bytes)",
        limits.max_request_bytes
    ))
}

/// A `*<count>` or `$<len>` header line.
enum Line<'a> {
    /// The digits (after the type byte) and the index after the CRLF.
    Found(&'a [u8], usize),
    /// Its CRLF has not arrived.
    Partial,
    /// No CRLF within `line_max` bytes.
    TooLong,
}

/// The header line starting at `start` (its type byte, then digits, CRLF).
fn header_line(buf: &[u8], start: usize, line_max: usize) -> Line<'_> {
    let window = &buf[start..buf.len().min(start + line_max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(cr) => Line::Found(&window[1..cr], start + cr + 2),
        None if window.len() == line_max + 2 => Line::TooLong,
        None => Line::Partial,
    }
}

/// Redis's checks in Redis's order: the count is valid, then (before
/// AUTH) within the unauthenticated bound; likewise each bulk length.
fn multibulk(buf: &[u8], limits: &Limits, authed: bool) -> (Parsed, usize) {
    let max = limits.max_request_bytes;
    let line_max = INLINE_MAX.min(max);
    let (count, mut pos) = match header_line(buf, 0, line_max) {
        Line::TooLong => return protocol_error("too big mbulk count string"),
        Line::Partial => return (Parsed::Incomplete, buf.len() + 1),
        Line::Found(digits, next) => match string2ll(digits) {
            Some(n) if n > 0 && n as u64 > limits.max_args as u64 => {
                return protocol_error("invalid multibulk length")
            }
            Some(n) if !authed && n > AUTH_MAX_ARGS as i64 => {
                return protocol_error("unauthenticated multibulk length")
            }
            // Redis skips an empty or negative count.
            Some(n) if n <= 0 => return (Parsed::Empty { used: next }, 0),
            Some(n) => (n, next),
            None => return protocol_error("invalid multibulk length"),
        },
    };
    if pos > max {
        return too_big(limits);
    }
    for _ in 0..count {
        let Some(&kind) = buf.get(pos) else {
            return (Parsed::Incomplete, pos + 1);
        };
        if kind != b'$' {
            return protocol_error(format_args!("expected '$', got '{}'", shown(kind)));
        }
        let (len, body) = match header_line(buf, pos, line_max) {
            Line::TooLong => return protocol_error("too big bulk count string"),
            Line::Partial => return (Parsed::Incomplete, buf.len() + 1),
            Line::Found(digits, next) => match string2ll(digits) {
                Some(n) if n < 0 || n as u64 > max as u64 => {
                    return protocol_error("invalid bulk length")
                }
                Some(n) if !authed && n > AUTH_MAX_BULK as i64 => {
                    return protocol_error("unauthenticated bulk length")
                }
                Some(n) => (n as usize, next),
                None => return protocol_error("invalid bulk length"),
            },
        };
        // The body and its CRLF (not checked to be CRLF: neither Redis nor
        // redis-protocol does).
        let end = body + len + 2;
        if end > max {
            return too_big(limits);
        }
        if end > buf.len() {
            return (Parsed::Incomplete, end);
        }
        pos = end;
    }
    // Every header checked and every body present: redis-protocol decodes
    // exactly those bytes, which by construction are one array of `count`
    // bulk strings.
    match decode(&buf[..pos]) {
        Ok(Some((OwnedFrame::Array(frames), used))) if used == pos => {
            let mut args = Vec::with_capacity(frames.len());
            for f in frames {
                match f {
                    OwnedFrame::BulkString(b) => args.push(b),
                    other => {
                        return protocol_error(format_args!(
                            "expected a bulk string, got {:?}",
                            other.kind()
                        ))
                    }
                }
            }
            (Parsed::Request { args, used }, 0)
        }
        // Unreachable by the checks above; no panic on it either way.
        Ok(_) => protocol_error("undecodable multibulk request"),
        Err(e) => protocol_error(format_args!(
            "undecodable multibulk request ({})",
            e.details()
        )),
    }
}

fn inline(buf: &[u8], limits: &Limits) -> (Parsed, usize) {
    let line_max = INLINE_MAX.min(limits.max_request_bytes);
    // The line, its CR if any, its LF: at most line_max + 2 bytes to look at.
    let window = &buf[..buf.len().min(line_max + 2)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > line_max + 1 {
            return protocol_error("too big inline request");
        }
        return (Parsed::Incomplete, buf.len() + 1);
    };
    let line = match &buf[..nl] {
        [line @ .., b'\r'] => line,
        line => line,
    };
    if line.len() > line_max {
        return protocol_error("too big inline request");
    }
    let used = nl + 1;
    match split_args(line) {
        None => protocol_error("unbalanced quotes in request"),
        Some(args) if args.is_empty() => (Parsed::Empty { used }, 0),
        Some(args) if args.len() > limits.max_args => {
            protocol_error("too many arguments in inline request")
        }
        Some(args) => (Parsed::Request { args, used }, 0),
    }
}

/// A byte as Redis's `%c` would show it, but printable.
fn shown(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        char::from(b).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// Redis's `string2ll`: an optional `-`, then digits without a leading zero
/// (only `0` itself), no `+`, no spaces, within i64.
fn string2ll(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// C's `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(b: Option<u8>) -> Option<u8> {
    char::from(b?).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: words separated by blanks; `"..."` with the
/// escapes `\xHH \n \r \t \b \a` and `\<any>`; `'...'` with `\'`; a closing
/// quote must be followed by a blank or the end. `None` on unbalanced
/// quotes (or a closing quote followed by something else), as Redis's
/// NULL. The one difference: the line is a byte slice, not a C string, so a
/// NUL byte is an ordinary character instead of the end of the line.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |j: usize| line.get(j).copied();
    let closes = |j: usize| at(j + 1).is_none_or(is_space);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let c = at(i);
            if in_dq {
                match c {
                    None => return None,
                    Some(b'\\')
                        if at(i + 1) == Some(b'x')
                            && hex(at(i + 2)).is_some()
                            && hex(at(i + 3)).is_some() =>
                    {
                        cur.push(hex(at(i + 2))? << 4 | hex(at(i + 3))?);
                        i += 4;
                    }
                    Some(b'\\') if at(i + 1).is_some() => {
                        cur.push(match at(i + 1)? {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    }
                    Some(b'"') => {
                        if !closes(i) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        cur.push(c);
                        i += 1;
                    }
                }
            } else if in_sq {
                match c {
                    None => return None,
                    Some(b'\\') if at(i + 1) == Some(b'\'') => {
                        cur.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        if !closes(i) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        cur.push(c);
                        i += 1;
                    }
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => {
                        in_dq = true;
                        i += 1;
                    }
                    Some(b'\'') => {
                        in_sq = true;
                        i += 1;
                    }
                    Some(c) => {
                        cur.push(c);
                        i += 1;
                    }
                }
            }
        }
        args.push(cur);
    }
}

/// Simple and error strings are one line: a CR or LF in them would end the
/// reply early and desynchronise the client, so each becomes a space (as
/// Redis's `addReplyErrorLength` does for errors).
fn one_line(s: String) -> String {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ")
    } else {
        s
    }
}

fn into_frame(r: Reply) -> OwnedFrame {
    match r {
        Reply::Simple(s) => OwnedFrame::SimpleString(one_line(s).into_bytes()),
        Reply::Error(s) => OwnedFrame::Error(one_line(s)),
        Reply::Integer(i) => OwnedFrame::Integer(i),
        Reply::Bulk(b) => OwnedFrame::BulkString(b),
        Reply::Null => OwnedFrame::Null,
        Reply::Array(items) => OwnedFrame::Array(items.into_iter().map(into_frame).collect()),
    }
}

/// Appends the reply's RESP2 encoding (by redis-protocol) to `out`.
pub fn encode_reply(r: Reply, out: &mut Vec<u8>) {
    let frame = into_frame(r);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    match encode(&mut out[start..], &frame, false) {
        Ok(n) => out.truncate(start + n),
        Err(e) => {
            // Only a buffer too small, and it is sized by encode_len.
            out.truncate(start);
            tracing::error!(error = %e.details(), "RESP reply encoding failed");
            out.extend_from_slice(b"-ERR internal error: reply encoding\r\n");
        }
    }
}
