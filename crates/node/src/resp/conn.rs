//! One client connection of the event loop: its buffers, its requests in
//! order, AUTH, and reading, parsing and writing without ever blocking.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::codec::parse;
use super::server::{Back, ClientInfo, Request, Shared};
use super::{encode_reply, Limits, Parsed, Reply};

/// After a protocol error, QUIT or a refusal: how long to drain what the
/// client still sends after our last reply, so closing does not reset the
/// connection before the client has read that reply.
const LINGER: Duration = Duration::from_millis(200);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Requests one client may have with the node at once (pipelined); past
/// it, its socket is read no further until replies come back.
pub(super) const MAX_IN_FLIGHT: usize = 256;
/// Reply bytes one client may leave unread before its socket is read no
/// further.
const OUT_HIGH: usize = 1 << 20;
/// Reads of one client per loop turn (of [`READ_CHUNK`] each), so one
/// that sends without pause cannot hold the loop from the others: with
/// requests the server answers itself (`AUTH`, `-NOAUTH`) nothing else
/// would stop it. It is read on in the next turn.
const READS_PER_TURN: usize = 8;
const MAX_CLIENTS: &str = "ERR max number of clients reached";
// Redis 7's replies, to the letter (`server.c`, `acl.c`).
const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const AUTH_NOPASS: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const AUTH_ARITY: &str = "ERR wrong number of arguments for 'auth' command";
const SYNTAX: &str = "ERR syntax error";

/// How a connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Closed by the client between requests, lingered out, or cut by
    /// shutdown.
    Clean,
    /// Closed or reset mid-request or mid-reply, or a write failed.
    Dropped,
    /// Idle past the idle timeout.
    Idle,
}

/// One connection's state. Readiness is edge-triggered: `readable` and
/// `writable` remember what epoll said until a call would block.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) info: ClientInfo,
    /// Over `max_clients`: only the refusal is written; not a client.
    pub(super) refused: bool,
    inbuf: Vec<u8>,
    /// How long `inbuf` must be before parsing it again is worth it.
    need: usize,
    pub(super) out: Vec<u8>,
    pub(super) sent: usize,
    /// The sequence number of the next request read.
    next_seq: u64,
    /// Requests read and not written back, from the oldest: their replies
    /// once given.
    pub(super) waiting: VecDeque<Option<Reply>>,
    /// The sequence number of `waiting[0]`.
    first_seq: u64,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The client has closed its side.
    eof: bool,
    /// QUIT, a protocol error or a refusal: no more requests are read; the
    /// connection closes once the replies are written.
    pub(super) closing: bool,
    /// Our side is shut: reading (and dropping) what still comes until
    /// this instant.
    pub(super) linger: Option<Instant>,
    drained: usize,
    /// AUTH given, or no password required.
    authed: bool,
    /// The last whole request read or reply byte written (the connection
    /// when none yet): what the idle timeout counts from.
    last_active: Instant,
    /// The read budget of a turn ran out with the socket still readable.
    pub(super) more: bool,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, info: ClientInfo, refused: bool, limits: &Limits) -> Conn {
        let mut c = Conn {
            stream,
            info,
            refused,
            inbuf: Vec::new(),
            need: 1,
            out: Vec::new(),
            sent: 0,
            next_seq: 0,
            waiting: VecDeque::new(),
            first_seq: 0,
            readable: true,
            writable: true,
            eof: false,
            closing: false,
            linger: None,
            drained: 0,
            authed: limits.requirepass.is_none(),
            last_active: Instant::now(),
            more: false,
        };
        if refused {
            c.push_last(Reply::Error(MAX_CLIENTS.into()));
        }
        c
    }

    /// A reply the server gives itself, in its place among the node's.
    pub(super) fn push(&mut self, r: Reply) {
        self.next_seq += 1;
        self.waiting.push_back(Some(r));
    }

    /// A reply the server gives itself, after which nothing more is read.
    pub(super) fn push_last(&mut self, r: Reply) {
        self.push(r);
        self.closing = true;
        self.inbuf = Vec::new();
    }

    /// `AUTH [username] password`, as Redis 7 answers it with only the
    /// `default` user: its password is `requirepass`, or any when there
    /// is none. A refusal leaves the connection as it was (authenticated
    /// or not), as in Redis 7.
    pub(super) fn auth(&mut self, args: &[Vec<u8>], shared: &Shared) -> Reply {
        let pass = shared.limits.requirepass.as_ref();
        let (user, given) = match args {
            [] | [_] => return Reply::Error(AUTH_ARITY.into()),
            [_, _, _, _, ..] => return Reply::Error(SYNTAX.into()),
            [_, _] if pass.is_none() => return Reply::Error(AUTH_NOPASS.into()),
            [_, given] => (&b"default"[..], given),
            [_, user, given] => (&user[..], given),
        };
        let ok = user == b"default" && pass.is_none_or(|p| p.matches(given));
        if ok {
            self.authed = true;
            return Reply::Simple("OK".into());
        }
        shared.n.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id = self.info.id, peer = %self.info.peer, "RESP AUTH refused");
        Reply::Error(WRONGPASS.into())
    }

    /// Closed at the idle timeout now: a served client with no request
    /// with the node (nor a reply not yet encoded), whose last activity (a
    /// whole request read, a reply byte written) is `timeout` old. So a
    /// client that stopped reading its replies is idle too, as in Redis.
    pub(super) fn idle(&self, now: Instant, timeout: Duration) -> bool {
        !self.refused
            && self.linger.is_none()
            && !self.closing
            && self.waiting.is_empty()
            && now.saturating_duration_since(self.last_active) >= timeout
    }

    pub(super) fn answered(&mut self, seq: u64, reply: Reply) {
        let Some(i) = seq.checked_sub(self.first_seq) else {
            return;
        };
        if let Some(slot) = self.waiting.get_mut(i as usize) {
            *slot = Some(reply);
        }
    }

    /// Does whatever the socket and the replies allow now; `Some` when the
    /// connection is over.
    pub(super) fn progress(
        &mut self,
        now: Instant,
        shared: &Shared,
        back: &Arc<Back>,
        batch: &mut Vec<Request>,
    ) -> Option<End> {
        if self.linger.is_some() {
            return self.drain(shared);
        }
        self.more = false;
        let mut reads = 0;
        loop {
            let capped = self.parse(now, shared, back, batch);
            if let Err(e) = self.flush(now) {
                return Some(e);
            }
            // The replies just written made room: parse on from the buffer
            // before anything else. The socket may be read dry, with no new
            // readiness to come while the client waits for these replies.
            if capped && self.waiting.len() < MAX_IN_FLIGHT {
                continue;
            }
            if !self.readable
                || self.eof
                || self.closing
                || self.waiting.len() >= MAX_IN_FLIGHT
                || self.out.len() - self.sent >= OUT_HIGH
            {
                break;
            }
            if reads == READS_PER_TURN {
                self.more = true;
                break;
            }
            reads += 1;
            if let Err(e) = self.read() {
                return Some(e);
            }
        }
        if self.eof && !self.closing && !self.inbuf.is_empty() && self.waiting.len() < MAX_IN_FLIGHT
        {
            // Parsed as far as it goes: what is left is half a request.
            return Some(End::Dropped);
        }
        if self.waiting.is_empty() && self.sent == self.out.len() {
            if self.closing {
                let _ = self.stream.shutdown(Shutdown::Write);
                self.linger = Some(Instant::now() + LINGER);
                return self.drain(shared);
            }
            if self.eof {
                return Some(End::Clean);
            }
        }
        None
    }

    /// Every whole request in `inbuf`, in order, up to the in-flight bound.
    /// `QUIT` and `AUTH` are answered here, and so is every request before
    /// the connection authenticated. True when it stopped at the bound with
    /// input left.
    pub(super) fn parse(
        &mut self,
        now: Instant,
        shared: &Shared,
        back: &Arc<Back>,
        batch: &mut Vec<Request>,
    ) -> bool {
        let limits = &shared.limits;
        let mut pos = 0;
        let mut capped = false;
        while !self.closing && self.inbuf.len() - pos >= self.need {
            if self.waiting.len() >= MAX_IN_FLIGHT {
                capped = true;
                break;
            }
            let (parsed, more) = parse(&self.inbuf[pos..], limits, self.authed);
            self.need = 1;
            match parsed {
                Parsed::Incomplete => {
                    self.need = more;
                    break;
                }
                Parsed::Empty { used } => pos += used,
                Parsed::Request { args, used } => {
                    pos += used;
                    self.last_active = now;
                    shared.n.commands.fetch_add(1, Ordering::Relaxed);
                    if args[0].eq_ignore_ascii_case(b"quit") {
                        self.push_last(Reply::Simple("OK".into()));
                        return false;
                    }
                    if args[0].eq_ignore_ascii_case(b"auth") {
                        let r = self.auth(&args, shared);
                        self.push(r);
                        continue;
                    }
                    if !self.authed {
                        self.push(Reply::Error(NOAUTH.into()));
                        continue;
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.waiting.push_back(None);
                    batch.push(Request::new(args, self.info.clone(), back, seq));
                }
                Parsed::Error(e) => {
                    shared.n.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(id = self.info.id, peer = %self.info.peer, error = %e, "RESP protocol error");
                    self.push_last(Reply::Error(e));
                    return false;
                }
            }
        }
        // `need` counts from `pos`, which becomes 0.
        self.inbuf.drain(..pos);
        capped
    }

    /// Reads once onto `inbuf`.
    pub(super) fn read(&mut self) -> Result<(), End> {
        let start = self.inbuf.len();
        self.inbuf.resize(start + READ_CHUNK, 0);
        let r = self.stream.read(&mut self.inbuf[start..]);
        self.inbuf.truncate(start + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) => self.eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Reset: abnormal only with a request half sent or replies
            // owed.
            Err(_) if self.inbuf.is_empty() && self.waiting.is_empty() => return Err(End::Clean),
            Err(_) => return Err(End::Dropped),
        }
        Ok(())
    }

    /// Encodes the replies now due, in order, and writes what the socket
    /// takes.
    pub(super) fn flush(&mut self, now: Instant) -> Result<(), End> {
        while let Some(Some(_)) = self.waiting.front() {
            if let Some(Some(r)) = self.waiting.pop_front() {
                encode_reply(r, &mut self.out);
            }
            self.first_seq += 1;
        }
        while self.writable && self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(End::Dropped),
                Ok(n) => {
                    self.sent += n;
                    self.last_active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Dropped),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        Ok(())
    }

    /// After the last reply: whatever the client still sends (for a
    /// moment, up to max_request_bytes) is read and dropped, so the close
    /// is seen as the end of the stream, not as a reset that may discard
    /// that reply unread.
    pub(super) fn drain(&mut self, shared: &Shared) -> Option<End> {
        let mut sink = [0; 4096];
        loop {
            if self.drained >= shared.limits.max_request_bytes
                || self.linger.is_some_and(|t| Instant::now() >= t)
            {
                return Some(End::Clean);
            }
            match self.stream.read(&mut sink) {
                Ok(0) => return Some(End::Clean),
                Ok(n) => self.drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(End::Clean),
            }
        }
    }
}
