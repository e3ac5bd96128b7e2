//! The TCP half: one event-loop thread for every client (readiness from
//! epoll through `mio`), requests handed to the node in batches, replies
//! back on a channel with one wake per batch.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::{Conn, End};
use super::{Limits, Reply};
use crate::Wake;

/// The longest the loop sleeps with nothing to do (it is woken for
/// everything it waits on; this only bounds a missed wake).
const IDLE: Duration = Duration::from_secs(1);
/// How long [`RespServer::shutdown`] waits for the loop thread.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(2);
/// How long a shutdown lets clients read the replies they were given
/// before it cuts their connections.
const FLUSH_GRACE: Duration = Duration::from_millis(150);
/// Connections accepted per loop turn, so a connect storm cannot starve
/// the clients already served.
const ACCEPT_BATCH: usize = 64;
/// How often idle clients are looked for, at most (and at least every
/// quarter of the idle timeout).
const SWEEP_MAX: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Tokens of refused connections (while they linger) start here; a
/// served client's token is its id + 1.
const REFUSED_BASE: usize = 1 << 48;

const NO_REPLY: &str = "ERR internal error: no reply";

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Unique per server, from 1 in accept order (Redis's client id).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
}

/// One request from one client, for the node to answer with
/// [`Request::reply`]. A client's requests may be with the node several
/// at a time (pipelining); their replies are written in the order the
/// client sent them, whatever order they are given in. Dropped
/// unanswered, a request is answered `-ERR internal error: no reply`.
#[derive(Debug)]
pub struct Request {
    /// The command and its arguments, binary-safe; never empty.
    pub args: Vec<Vec<u8>>,
    /// Who sent it.
    pub client: ClientInfo,
    replier: Replier,
}

impl Request {
    /// Request `seq` of `client`: its reply goes back through `back`.
    pub(super) fn new(
        args: Vec<Vec<u8>>,
        client: ClientInfo,
        back: &Arc<Back>,
        seq: u64,
    ) -> Request {
        let replier = Replier {
            back: Some(Arc::clone(back)),
            client: client.id,
            seq,
        };
        Request {
            args,
            client,
            replier,
        }
    }

    /// Sends the reply to the client. A client gone since is not an error.
    pub fn reply(mut self, r: Reply) {
        self.replier.send(r);
    }
}

/// A reply on its way back to the loop.
#[derive(Debug)]
struct Answer {
    client: u64,
    seq: u64,
    reply: Reply,
}

/// The loop's inbox for replies, and its wake.
#[derive(Debug)]
pub(super) struct Back {
    tx: Sender<Answer>,
    waker: Waker,
    /// Set by the first reply after the loop last emptied its inbox, so a
    /// burst of replies costs one wake.
    armed: AtomicBool,
    /// [`WakeHold`]s alive: replies wake the loop only when the last goes.
    holds: AtomicUsize,
    /// A reply came while held.
    owed: AtomicBool,
}

impl Back {
    fn reply_sent(&self) {
        if self.holds.load(Ordering::SeqCst) > 0 {
            self.owed.store(true, Ordering::SeqCst);
            // A hold dropped since the load: make sure someone wakes.
            if self.holds.load(Ordering::SeqCst) > 0 {
                return;
            }
        }
        self.wake();
    }

    fn wake(&self) {
        if !self.armed.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                tracing::warn!(error = %e, "RESP server: wake failed");
            }
        }
    }
}

/// The way back to the client; answers "no reply" if dropped before use.
#[derive(Debug)]
struct Replier {
    back: Option<Arc<Back>>,
    client: u64,
    seq: u64,
}

impl Replier {
    fn send(&mut self, reply: Reply) {
        if let Some(b) = self.back.take() {
            let a = Answer {
                client: self.client,
                seq: self.seq,
                reply,
            };
            // The loop gone: the client is too.
            if b.tx.send(a).is_ok() {
                b.reply_sent();
            }
        }
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        self.send(Reply::Error(NO_REPLY.to_owned()));
    }
}

/// While alive, replies given do not wake the server's loop; dropping
/// the last hold wakes it once if any came. A node answering many
/// requests in one turn holds one across the turn: the loop then writes
/// them all after one wake instead of racing the node reply by reply.
#[derive(Debug)]
pub struct WakeHold(Arc<Back>);

impl Drop for WakeHold {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.owed.swap(false, Ordering::SeqCst)
        {
            self.0.wake();
        }
    }
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused: `max_clients` reached (or the socket could not
    /// be set up).
    pub refused: u64,
    /// Clients connected now.
    pub clients: usize,
    /// Requests read, QUIT included (empty lines not).
    pub commands: u64,
    /// Connections closed on a protocol error.
    pub protocol_errors: u64,
    /// Clients gone mid-request (closed with part of a request sent) or
    /// mid-reply (a write failed, or closed with replies unwritten), or
    /// reset.
    pub dropped: u64,
    /// `AUTH`s refused (`-WRONGPASS`): Redis's `acl_access_denied_auth`.
    pub auth_failures: u64,
    /// Clients closed at the idle timeout.
    pub timed_out: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    clients: AtomicUsize,
    pub(super) commands: AtomicU64,
    pub(super) protocol_errors: AtomicU64,
    dropped: AtomicU64,
    pub(super) auth_failures: AtomicU64,
    timed_out: AtomicU64,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) limits: Limits,
    stop: AtomicBool,
    pub(super) n: Counters,
}

/// The running server. Dropping it shuts it down as [`RespServer::shutdown`]
/// does.
pub struct RespServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    back: Arc<Back>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RespServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespServer")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RespServer {
    /// Binds `addr` (port 0 for any) and starts serving. Requests arrive
    /// on the returned channel, `wake` called once per batch of them. The
    /// channel disconnects once the server has shut down and its thread
    /// is gone. An address protected mode refuses
    /// ([`Limits::protected_mode_refusal`]) is a `PermissionDenied` error,
    /// before anything is bound.
    pub fn start(
        addr: SocketAddr,
        limits: Limits,
        wake: Wake,
    ) -> io::Result<(RespServer, Receiver<Request>)> {
        if let Some(why) = limits.protected_mode_refusal(addr) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("RESP server: protected mode: {why}"),
            ));
        }
        let mut listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("RESP server: cannot listen on {addr}: {e}"),
            )
        })?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (answer_tx, answer_rx) = unbounded();
        let back = Arc::new(Back {
            tx: answer_tx,
            waker,
            armed: AtomicBool::new(false),
            holds: AtomicUsize::new(0),
            owed: AtomicBool::new(false),
        });
        let shared = Arc::new(Shared {
            limits,
            stop: AtomicBool::new(false),
            n: Counters::default(),
        });
        let (req_tx, req_rx) = unbounded();
        let mut ev = EventLoop {
            poll,
            listener: Some(listener),
            shared: Arc::clone(&shared),
            back: Arc::clone(&back),
            answers: answer_rx,
            req_tx,
            wake,
            conns: HashMap::new(),
            next_id: 1,
            next_refused: REFUSED_BASE,
            accept_more: false,
            accept_retry: None,
            batch: Vec::new(),
            again: Vec::new(),
            next_sweep: None,
        };
        let thread = thread::Builder::new()
            .name("resp".into())
            .spawn(move || ev.run())?;
        tracing::info!(
            %local_addr,
            requirepass = shared.limits.requirepass.is_some(),
            maxclients = shared.limits.max_clients,
            timeout = ?shared.limits.idle_timeout,
            "RESP server listening"
        );
        Ok((
            RespServer {
                local_addr,
                shared,
                back,
                thread: Some(thread),
            },
            req_rx,
        ))
    }

    /// The address bound (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Holds back the loop's wakes until the hold is dropped (see
    /// [`WakeHold`]).
    pub fn hold_wakes(&self) -> WakeHold {
        self.back.holds.fetch_add(1, Ordering::SeqCst);
        WakeHold(Arc::clone(&self.back))
    }

    /// The counters now.
    pub fn stats(&self) -> RespStats {
        let n = &self.shared.n;
        RespStats {
            accepted: n.accepted.load(Ordering::Relaxed),
            refused: n.refused.load(Ordering::Relaxed),
            clients: n.clients.load(Ordering::Relaxed),
            commands: n.commands.load(Ordering::Relaxed),
            protocol_errors: n.protocol_errors.load(Ordering::Relaxed),
            dropped: n.dropped.load(Ordering::Relaxed),
            auth_failures: n.auth_failures.load(Ordering::Relaxed),
            timed_out: n.timed_out.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, writes the replies already given (clients have
    /// about 150 ms to read them), closes every connection (a request
    /// still unanswered gets no reply) and joins the loop thread, waiting
    /// at most about two seconds; a thread still running then is left
    /// detached, with a warning.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.back.waker.wake() {
            tracing::warn!(error = %e, "RESP server: wake failed");
        }
        let deadline = Instant::now() + SHUTDOWN_BOUND;
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        if t.is_finished() {
            if t.join().is_err() {
                tracing::error!("the RESP server thread panicked");
            }
        } else {
            tracing::warn!("RESP server thread did not stop in time; left detached");
        }
        tracing::info!(local_addr = %self.local_addr, stats = ?self.stats(), "RESP server stopped");
    }
}

impl Drop for RespServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct EventLoop {
    poll: Poll,
    /// Dropped when stopping, so the port is free at once.
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    back: Arc<Back>,
    answers: Receiver<Answer>,
    req_tx: Sender<Request>,
    wake: Wake,
    conns: HashMap<usize, Conn>,
    next_id: u64,
    next_refused: usize,
    /// Connections may be queued on the listener (edge-triggered: it says
    /// so once), and when to look again after a failed accept.
    accept_more: bool,
    accept_retry: Option<Instant>,
    /// Requests read this turn, handed over together.
    batch: Vec<Request>,
    /// Clients whose read budget ran out: looked at again next turn.
    again: Vec<usize>,
    /// When to look for idle clients next (with an idle timeout).
    next_sweep: Option<Instant>,
}

impl EventLoop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut touched: Vec<usize> = Vec::new();
        let mut grace: Option<Instant> = None;
        loop {
            let timeout = self.timeout(grace);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "RESP server: poll failed; stopping");
                    break;
                }
            }
            touched.clear();
            touched.append(&mut self.again);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_more = true,
                    WAKER => {}
                    Token(t) => {
                        if let Some(c) = self.conns.get_mut(&t) {
                            c.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                            c.writable |= ev.is_writable() || ev.is_write_closed() || ev.is_error();
                            touched.push(t);
                        }
                    }
                }
            }
            if grace.is_none() && self.shared.stop.load(Ordering::SeqCst) {
                // Stop accepting (the port is free again) and read no more.
                if let Some(mut l) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut l);
                }
                for c in self.conns.values_mut() {
                    c.closing = true;
                }
                grace = Some(Instant::now() + FLUSH_GRACE);
            }
            if self.accept_retry.is_some_and(|t| Instant::now() >= t) {
                self.accept_retry = None;
                self.accept_more = true;
            }
            if self.accept_more && grace.is_none() {
                self.accept(&mut touched);
            }
            // Armed off before the inbox is emptied: a reply sent after
            // this wakes the loop again.
            self.back.armed.store(false, Ordering::SeqCst);
            while let Ok(a) = self.answers.try_recv() {
                if let Some(c) = self.conns.get_mut(&(a.client as usize + 1)) {
                    c.answered(a.seq, a.reply);
                    touched.push(a.client as usize + 1);
                }
            }
            // Lingering connections are looked at every turn (their
            // deadline).
            touched.extend(
                self.conns
                    .iter()
                    .filter(|(_, c)| c.linger.is_some())
                    .map(|(&t, _)| t),
            );
            touched.sort_unstable();
            touched.dedup();
            let now = Instant::now();
            for &t in &touched {
                self.progress(t, now);
            }
            if grace.is_none() {
                self.sweep(now);
            }
            if !self.batch.is_empty() {
                for r in self.batch.drain(..) {
                    // The node gone: the request is dropped with the error,
                    // answered NO_REPLY.
                    let _ = self.req_tx.send(r);
                }
                (self.wake)();
            }
            if let Some(g) = grace {
                // Written out (or the grace over): closed.
                let now = Instant::now();
                let done: Vec<usize> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        now >= g
                            || c.sent == c.out.len()
                                && c.waiting.front().is_none_or(Option::is_none)
                    })
                    .map(|(&t, _)| t)
                    .collect();
                for t in done {
                    self.close(t, End::Clean);
                }
                if self.conns.is_empty() {
                    break;
                }
            }
        }
        for t in self.conns.keys().copied().collect::<Vec<_>>() {
            self.close(t, End::Clean);
        }
    }

    fn timeout(&self, grace: Option<Instant>) -> Duration {
        if (self.accept_more && grace.is_none()) || !self.again.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let soonest = self
            .conns
            .values()
            .filter_map(|c| c.linger)
            .chain(grace.map(|g| g.min(now + Duration::from_millis(10))))
            .chain(self.accept_retry)
            .chain(self.next_sweep.filter(|_| !self.conns.is_empty()))
            .min();
        match soonest {
            Some(t) => t.saturating_duration_since(now).min(IDLE),
            None => IDLE,
        }
    }

    fn accept(&mut self, touched: &mut Vec<usize>) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of descriptors or memory: the connection stays
                    // queued; look again a little later.
                    tracing::warn!(error = %e, "RESP accept failed");
                    self.accept_more = false;
                    self.accept_retry = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            let served = self.shared.n.clients.load(Ordering::Relaxed);
            let refused = served >= self.shared.limits.max_clients;
            let token = if refused {
                self.shared.n.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "RESP client refused: max clients");
                if self.conns.len() >= self.shared.limits.max_clients.max(1).saturating_mul(2) {
                    // Too many lingering refusals: just close.
                    continue;
                }
                self.next_refused += 1;
                self.next_refused
            } else {
                self.next_id as usize + 1
            };
            let id = if refused { 0 } else { self.next_id };
            let mut conn = Conn::new(
                stream,
                ClientInfo { id, peer },
                refused,
                &self.shared.limits,
            );
            let setup = conn.stream.set_nodelay(true).and_then(|()| {
                self.poll.registry().register(
                    &mut conn.stream,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
            if let Err(e) = setup {
                tracing::warn!(%peer, error = %e, "RESP client socket setup failed");
                if !refused {
                    self.shared.n.refused.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if !refused {
                self.next_id += 1;
                self.shared.n.clients.fetch_add(1, Ordering::Relaxed);
                self.shared.n.accepted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id, %peer, "RESP client connected");
            }
            self.conns.insert(token, conn);
            touched.push(token);
        }
        // The batch is used up; `accept_more` stays set for the next turn.
    }

    fn progress(&mut self, t: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        match c.progress(now, &self.shared, &self.back, &mut self.batch) {
            Some(end) => self.close(t, end),
            None if c.more => self.again.push(t),
            None => {}
        }
    }

    /// Closes the clients idle past the idle timeout. A pass over every
    /// connection, at most every quarter of the timeout (and every
    /// second), so clients are closed within about a quarter past it.
    fn sweep(&mut self, now: Instant) {
        let Some(timeout) = self.shared.limits.idle_timeout else {
            return;
        };
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        let every = (timeout / 4).clamp(Duration::from_millis(10), SWEEP_MAX);
        self.next_sweep = Some(now + every);
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.idle(now, timeout))
            .map(|(&t, _)| t)
            .collect();
        for t in idle {
            self.close(t, End::Idle);
        }
    }

    fn close(&mut self, t: usize, end: End) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(Shutdown::Both);
        if c.refused {
            return;
        }
        self.shared.n.clients.fetch_sub(1, Ordering::Relaxed);
        if end == End::Idle {
            self.shared.n.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id = c.info.id, peer = %c.info.peer, "RESP client idle: closed");
        } else if end == End::Dropped && !self.shared.stop.load(Ordering::Relaxed) {
            self.shared.n.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                id = c.info.id,
                "RESP client dropped mid-request or mid-reply"
            );
        } else {
            tracing::debug!(id = c.info.id, "RESP client gone");
        }
    }
}
