//! The RESP server: fusion-node's client and admin interface, spoken over
//! TCP in the Redis protocol, so `redis-cli` is the admin tool.
//!
//! [`RespServer::start`] binds and runs one event-loop thread (epoll, by
//! `mio`) for every client (at most [`Limits::max_clients`]), as Redis
//! does. Each turn it reads what every ready client sent, hands the
//! requests to the node as [`Request`]s on a channel with one call of the
//! node's [`Wake`](crate::Wake) for the batch, and writes the replies
//! that came back (one wake of the loop per burst of replies). A
//! pipelining client may have up to 256 requests with the node at once;
//! its replies are written in the order it sent the requests, whatever
//! order the node answers in. The node answers with [`Request::reply`]; a
//! request it drops unanswered is answered `-ERR internal error: no
//! reply`, so a client never hangs on a lost request. Thread-per-client
//! with one request outstanding each, the design before, cost two thread
//! switches per request and served a pipeline one request at a time.
//!
//! What Redis does and this does too (`networking.c`):
//! - a request is an array of bulk strings (`*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n`)
//!   when it starts with `*`, otherwise an inline command line (`PING\r\n`
//!   typed into nc or telnet), split as `sdssplitargs` does (`"a b"`,
//!   `'a b'`, `\xHH`); empty lines, `*0` and `*-1` are skipped;
//! - a protocol error (`*abc`, a non-bulk element, a bulk length over the
//!   limit, unbalanced quotes, a request over [`Limits::max_request_bytes`],
//!   a header or inline line over 64 KiB without its newline) is answered
//!   `-ERR Protocol error: <what>` in Redis's words, after the replies to
//!   the requests before it, and the connection is closed;
//! - a connection over [`Limits::max_clients`] is answered
//!   `-ERR max number of clients reached` and closed;
//! - `QUIT` is answered `+OK` by the server itself, and the connection is
//!   closed; it never reaches the node;
//! - TCP_NODELAY on every client socket.
//!
//! A client that vanishes mid-request or mid-reply is dropped and counted
//! ([`RespStats::dropped`]). [`RespServer::shutdown`] wakes the loop, which
//! stops accepting, writes the replies already given and closes every
//! connection.
#![forbid(unsafe_code)]

mod codec;
mod server;

pub use codec::{encode_reply, parse_request, Parsed, INLINE_MAX};
pub use server::{ClientInfo, Request, RespServer, RespStats, WakeHold};

/// Bounds on what a client may send and how many may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is refused (Redis's
    /// `maxclients`). 128 by default.
    pub max_clients: usize,
    /// The largest request, all of its encoding counted; a larger one is a
    /// protocol error, seen from its headers before its body arrives (the
    /// role of Redis's `proto-max-bulk-len` and `client-query-buffer-limit`).
    /// 1 MiB by default.
    pub max_request_bytes: usize,
    /// The most arguments in one request (command name included); more is
    /// a protocol error. 1024 by default.
    pub max_args: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 128,
            max_request_bytes: 1 << 20,
            max_args: 1024,
        }
    }
}

/// A reply to a request, encoded as RESP2 (what every Redis client
/// reads): the key-value executor's own type, so its replies go out as
/// they are. `Error` is without the leading `-` and starts with an
/// upper-case code by Redis convention (`ERR unknown command 'FOO'`); a CR
/// or LF in a simple string or error is sent as a space.
pub use icx_fusion::db::Reply;
