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
//! - with a password ([`Limits::requirepass`]) `AUTH` is answered by the
//!   server itself, in Redis 7's words; until it succeeds every command but
//!   `AUTH` and `QUIT` is answered `-NOAUTH Authentication required.`
//!   without reaching the node, and a request may have at most
//!   [`AUTH_MAX_ARGS`] arguments of [`AUTH_MAX_BULK`] bytes (`-ERR Protocol
//!   error: unauthenticated multibulk length` / `bulk length`); each request
//!   is parsed with the state the one before left, so an `AUTH` lifts those
//!   bounds for the next request of the same pipeline;
//! - a client idle for [`Limits::idle_timeout`] is closed silently
//!   (Redis's `timeout`); a client with a request in flight is not idle;
//! - TCP_NODELAY on every client socket.
//!
//! Where this differs from Redis: only whole requests and reply bytes the
//! client read count as activity against the idle timeout (Redis counts
//! any bytes), so a slowloris trickling a request is closed at the timeout
//! like an idle client; before `AUTH`, an unknown command is `-NOAUTH`
//! (Redis checks that the command exists first: the command table is the
//! node's, not this loop's); `HELLO` is not served (`-NOAUTH` before
//! `AUTH`, unknown after), so clients use `AUTH`; and a non-loopback
//! address without a password is refused at start
//! ([`Limits::protected_mode_refusal`]) rather than answered `-DENIED` per
//! connection.
//!
//! One loop serves every client, so none may hold it: a turn reads at most
//! 128 KiB from one client (one that sends without pause is read on in
//! the next turn, once the others had theirs), and a client's requests
//! wait for the node at most 256 at a time.
//!
//! A client that vanishes mid-request or mid-reply is dropped and counted
//! ([`RespStats::dropped`]). [`RespServer::shutdown`] wakes the loop, which
//! stops accepting, writes the replies already given and closes every
//! connection.
#![forbid(unsafe_code)]

mod codec;
mod conn;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use codec::{encode_reply, parse_request, parse_request_before_auth, Parsed, INLINE_MAX};
pub use server::{ClientInfo, Request, RespServer, RespStats, WakeHold};

/// What clients may do: how many connect, how much one may send, how
/// long one may sit idle, and whether each must `AUTH` first. fusion-node
/// builds it from the cluster config's client keys (`maxclients`,
/// `client_query_buffer_limit`, `timeout`, `requirepass`,
/// `protected_mode`), whose defaults are these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is refused (Redis's
    /// `maxclients`). 128 by default.
    pub max_clients: usize,
    /// The largest request, all of its encoding counted; a larger one is a
    /// protocol error, seen from its headers before its body arrives (the
    /// role of Redis's `client-query-buffer-limit`, and of
    /// `proto-max-bulk-len` for one bulk). 1 MiB by default.
    pub max_request_bytes: usize,
    /// The most arguments in one request (command name included); more is
    /// a protocol error. 1024 by default.
    pub max_args: usize,
    /// A client with nothing in flight that sent no whole request and read
    /// no reply byte for this long is closed, silently (Redis's `timeout`).
    /// Bytes of a request not yet whole do not count, so a client trickling
    /// one (slowloris) is closed too. `None` (the default): never.
    pub idle_timeout: Option<Duration>,
    /// Redis's `requirepass`: every command but `AUTH` and `QUIT` is
    /// answered `-NOAUTH` until the connection authenticates, and requests
    /// are held to Redis's unauthenticated bounds ([`AUTH_MAX_ARGS`]
    /// arguments of [`AUTH_MAX_BULK`] bytes) until then. None by default.
    pub requirepass: Option<Password>,
    /// Redis's protected mode: without a password, [`RespServer::start`]
    /// refuses any address but loopback, before binding. On by default.
    pub protected_mode: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 128,
            max_request_bytes: 1 << 20,
            max_args: 1024,
            idle_timeout: None,
            requirepass: None,
            protected_mode: true,
        }
    }
}

impl Limits {
    /// Why serving clients on `addr` is refused: protected mode is on,
    /// there is no password, and `addr` is not loopback (`0.0.0.0` and
    /// `[::]` are not). Redis binds and then answers other hosts `-DENIED`;
    /// fusion-node refuses to start instead, so an open port is never
    /// there to find. The text says what to set.
    pub fn protected_mode_refusal(&self, addr: SocketAddr) -> Option<String> {
        if !self.protected_mode || self.requirepass.is_some() || is_loopback(addr.ip()) {
            return None;
        }
        Some(format!(
            "{addr} is not a loopback address, and protected mode is on with no password \
             for the default user. In this mode fusion-node serves clients only on the \
             loopback interface. To serve clients of other hosts, do one of: 1) set \
             requirepass (or requirepass_file) in the cluster config, so clients must AUTH; \
             2) if this network is trusted and not reachable from the internet, set \
             protected_mode = false; 3) give the node a client address on 127.0.0.1 (or \
             [::1]) instead."
        ))
    }
}

/// 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The most arguments, and the longest bulk, of a request before the
/// connection authenticated (Redis's limits since CVE-2021-32675): a
/// client without the password cannot make the server buffer more than
/// about 160 KiB of one request.
pub const AUTH_MAX_ARGS: usize = 10;
/// See [`AUTH_MAX_ARGS`].
pub const AUTH_MAX_BULK: usize = 16 * 1024;

/// The password clients give `AUTH`: binary-safe, never empty, never shown
/// by `Debug`, compared in time independent of where it differs.
#[derive(Clone)]
pub struct Password(Vec<u8>);

impl Password {
    /// `None` for an empty password (no password is configured by leaving
    /// the key out, not by an empty one).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Password> {
        let b = bytes.into();
        (!b.is_empty()).then_some(Password(b))
    }

    /// Whether `given` is the password. The time taken depends only on
    /// `given`'s length (the client's own), not on the password's length
    /// or on how much of it `given` gets right.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = &self.0;
        let mut diff = u8::from(want.len() != given.len());
        for (i, &g) in given.iter().enumerate() {
            diff |= g ^ want[i % want.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

impl PartialEq for Password {
    fn eq(&self, other: &Password) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Password {}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A reply to a request, encoded as RESP2 (what every Redis client
/// reads): the key-value executor's own type, so its replies go out as
/// they are. `Error` is without the leading `-` and starts with an
/// upper-case code by Redis convention (`ERR unknown command 'FOO'`); a CR
/// or LF in a simple string or error is sent as a space.
pub use icx_fusion::db::Reply;
