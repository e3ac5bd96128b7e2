//! The TCP half: accept thread, client threads, the request hand-over.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use super::codec::parse;
use super::{encode_reply, Limits, Parsed, Reply};
use crate::Wake;

/// How often a blocked read or write, and the accept loop, look at the
/// stop flag.
const POLL: Duration = Duration::from_millis(100);
/// The accept loop's sleep when no connection is pending (the listener is
/// non-blocking: std has no accept with a timeout).
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// How long [`RespServer::shutdown`] waits for all its threads together.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(2);
/// How long a shutdown lets clients leave by themselves, writing the
/// replies they were given, before it cuts their connections: a poll and
/// a little more.
const FLUSH_GRACE: Duration = Duration::from_millis(150);
/// After a protocol error or QUIT: how long to drain what the client still
/// sends after our last reply, so closing does not reset the connection
/// before the client has read that reply.
const LINGER: Duration = Duration::from_millis(200);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Replies to pipelined requests are gathered and written together, up to
/// this much.
const OUT_FLUSH: usize = 64 * 1024;

const NO_REPLY: &str = "ERR internal error: no reply";
const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Unique per server, from 1 in accept order (Redis's client id).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
}

/// One request from one client, for the node to answer with
/// [`Request::reply`]. The client waits for that reply before its next
/// request is read; dropped unanswered, the client is sent
/// `-ERR internal error: no reply`.
#[derive(Debug)]
pub struct Request {
    /// The command and its arguments, binary-safe; never empty.
    pub args: Vec<Vec<u8>>,
    /// Who sent it.
    pub client: ClientInfo,
    replier: Replier,
}

impl Request {
    /// Sends the reply to the client. A client gone since is not an error.
    pub fn reply(mut self, r: Reply) {
        self.replier.send(r);
    }
}

/// The way back to the client thread; answers "no reply" if dropped
/// before use.
#[derive(Debug)]
struct Replier(Option<Sender<Reply>>);

impl Replier {
    fn send(&mut self, r: Reply) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(r);
        }
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        self.send(Reply::Error(NO_REPLY.to_owned()));
    }
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused: `max_clients` reached (or no thread for them).
    pub refused: u64,
    /// Clients connected now.
    pub clients: usize,
    /// Requests read, QUIT included (empty lines not).
    pub commands: u64,
    /// Connections closed on a protocol error.
    pub protocol_errors: u64,
    /// Clients gone mid-request (closed with part of a request sent) or
    /// mid-reply (a write failed), or reset.
    pub dropped: u64,
}

/// A client thread's socket (a clone, to shut it down) and handle.
#[derive(Debug)]
struct Slot {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    clients: AtomicUsize,
    commands: AtomicU64,
    protocol_errors: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    stop: AtomicBool,
    n: Counters,
    clients: Mutex<HashMap<u64, Slot>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // A panic elsewhere while holding it leaves a map that is still
        // consistent (insert and remove are single calls).
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running server. Dropping it shuts it down as [`RespServer::shutdown`]
/// does.
pub struct RespServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// Dropped at shutdown: every client thread waiting for a reply selects
    /// on its receiver and wakes.
    stop_tx: Option<Sender<()>>,
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
    /// Binds `addr` (port 0 for any) and starts accepting. Requests arrive
    /// on the returned channel, `wake` called after each. The channel
    /// disconnects once the server has shut down and its threads are gone.
    pub fn start(
        addr: SocketAddr,
        limits: Limits,
        wake: Wake,
    ) -> io::Result<(RespServer, Receiver<Request>)> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("RESP server: cannot listen on {addr}: {e}"),
            )
        })?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            limits,
            stop: AtomicBool::new(false),
            n: Counters::default(),
            clients: Mutex::new(HashMap::new()),
        });
        let (req_tx, req_rx) = unbounded();
        let (stop_tx, stop_rx) = bounded(0);
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("resp-accept".into())
                .spawn(move || accept_loop(&listener, &shared, &req_tx, &stop_rx, &wake))?
        };
        tracing::info!(%local_addr, "RESP server listening");
        Ok((
            RespServer {
                local_addr,
                shared,
                accept: Some(accept),
                stop_tx: Some(stop_tx),
            },
            req_rx,
        ))
    }

    /// The address bound (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        }
    }

    /// Stops accepting, lets clients write the replies they were given,
    /// closes every client connection (a request still unanswered gets no
    /// reply) and joins the threads, waiting at most about
    /// two seconds in all; a thread still running then is left detached,
    /// with a warning.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(stop_tx) = self.stop_tx.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        drop(stop_tx);
        let deadline = Instant::now() + SHUTDOWN_BOUND;
        if let Some(accept) = self.accept.take() {
            join_by(accept, deadline);
        }
        // Clients notice the stop within a poll and leave after writing the
        // replies they were given (SHUTDOWN's own +OK among them); only
        // then are the connections still open cut.
        let grace = Instant::now() + FLUSH_GRACE;
        while Instant::now() < grace && !self.shared.clients().is_empty() {
            thread::sleep(Duration::from_millis(2));
        }
        let slots: Vec<Slot> = self.shared.clients().drain().map(|(_, s)| s).collect();
        for s in &slots {
            let _ = s.stream.shutdown(Shutdown::Both);
        }
        for s in slots {
            join_by(s.thread, deadline);
        }
        tracing::info!(local_addr = %self.local_addr, stats = ?self.stats(), "RESP server stopped");
    }
}

impl Drop for RespServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn join_by(t: JoinHandle<()>, deadline: Instant) {
    while !t.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    if t.is_finished() {
        if t.join().is_err() {
            tracing::error!("a RESP server thread panicked");
        }
    } else {
        tracing::warn!(thread = ?t.thread().name(), "RESP server thread did not stop in time; left detached");
    }
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    req_tx: &Sender<Request>,
    stop_rx: &Receiver<()>,
    wake: &Wake,
) {
    let mut next_id = 1;
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, peer)) => {
                if shared.n.clients.load(Ordering::Relaxed) >= shared.limits.max_clients {
                    shared.n.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "RESP client refused: max clients");
                    refuse(stream);
                    continue;
                }
                let client = ClientInfo { id: next_id, peer };
                next_id += 1;
                serve(stream, client, shared, req_tx, stop_rx, wake);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of descriptors or memory: the pending connection
                // stays queued; try again a little later.
                tracing::warn!(error = %e, "RESP accept failed");
                thread::sleep(POLL);
            }
        }
    }
}

/// Tells a connection over the limit so, and closes it.
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(POLL));
    let _ = stream.write_all(MAX_CLIENTS);
    let _ = stream.shutdown(Shutdown::Write);
    // Whatever it has sent already (up to 64 KiB: this is the accept
    // thread), read, so the close is not a reset that could make its
    // kernel discard the error before it reads it.
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0; 4096];
        for _ in 0..16 {
            if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

/// Starts a client's thread, registered so shutdown can close it.
fn serve(
    stream: TcpStream,
    client: ClientInfo,
    shared: &Arc<Shared>,
    req_tx: &Sender<Request>,
    stop_rx: &Receiver<()>,
    wake: &Wake,
) {
    let setup = (|| {
        // Accepted sockets do not inherit O_NONBLOCK on Linux; be sure.
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(POLL))?;
        stream.try_clone()
    })();
    let clone = match setup {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(peer = %client.peer, error = %e, "RESP client socket setup failed");
            shared.n.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let id = client.id;
    let peer = client.peer;
    let mut conn = Conn {
        stream,
        client,
        shared: Arc::clone(shared),
        req_tx: req_tx.clone(),
        stop_rx: stop_rx.clone(),
        wake: Arc::clone(wake),
    };
    shared.n.clients.fetch_add(1, Ordering::Relaxed);
    // Held across the spawn, so the thread's own removal on exit comes
    // after this insert.
    let mut clients = shared.clients();
    match thread::Builder::new()
        .name(format!("resp-client-{id}"))
        .spawn(move || {
            let _gone = Gone(Arc::clone(&conn.shared), conn.client.id);
            conn.run();
        }) {
        Ok(thread) => {
            shared.n.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id, %peer, "RESP client connected");
            clients.insert(
                id,
                Slot {
                    stream: clone,
                    thread,
                },
            );
        }
        Err(e) => {
            // The closure, the connection with it, is dropped unrun.
            shared.n.clients.fetch_sub(1, Ordering::Relaxed);
            shared.n.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id, %peer, error = %e, "RESP client thread spawn failed");
        }
    }
}

/// On a client thread's exit however it exits: unregisters it.
struct Gone(Arc<Shared>, u64);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.clients().remove(&self.1);
        self.0.n.clients.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(id = self.1, "RESP client gone");
    }
}

/// How a connection ends.
enum End {
    /// Closed by the client between requests, or by shutdown.
    Clean,
    /// Closed or reset mid-request, or a write failed.
    Dropped,
    /// Our last reply written (QUIT, a protocol error): close gracefully.
    Linger,
}

struct Conn {
    stream: TcpStream,
    client: ClientInfo,
    shared: Arc<Shared>,
    req_tx: Sender<Request>,
    stop_rx: Receiver<()>,
    wake: Wake,
}

impl Conn {
    fn run(&mut self) {
        match self.serve() {
            End::Clean => {}
            End::Dropped => {
                if !self.shared.stopping() {
                    self.shared.n.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        id = self.client.id,
                        "RESP client dropped mid-request or mid-reply"
                    );
                }
            }
            End::Linger => self.linger(),
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn serve(&mut self) -> End {
        let limits = self.shared.limits;
        let mut inbuf: Vec<u8> = Vec::new();
        let mut out: Vec<u8> = Vec::new();
        // How long `inbuf` must be before parsing it again is worth it.
        let mut need = 1;
        loop {
            // Every whole request in the buffer, in order; their replies
            // gathered in `out`.
            let mut pos = 0;
            while inbuf.len() - pos >= need {
                let (parsed, more) = parse(&inbuf[pos..], &limits);
                need = 1;
                match parsed {
                    Parsed::Incomplete => {
                        need = more;
                        break;
                    }
                    Parsed::Empty { used } => pos += used,
                    Parsed::Request { args, used } => {
                        pos += used;
                        self.shared.n.commands.fetch_add(1, Ordering::Relaxed);
                        if args[0].eq_ignore_ascii_case(b"quit") {
                            encode_reply(Reply::Simple("OK".into()), &mut out);
                            return self.last(&out);
                        }
                        let Some(reply) = self.ask(args) else {
                            return End::Clean;
                        };
                        encode_reply(reply, &mut out);
                        if out.len() >= OUT_FLUSH {
                            if self.write(&out).is_err() {
                                return End::Dropped;
                            }
                            out.clear();
                        }
                    }
                    Parsed::Error(e) => {
                        self.shared
                            .n
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(id = self.client.id, peer = %self.client.peer, error = %e, "RESP protocol error");
                        encode_reply(Reply::Error(e), &mut out);
                        return self.last(&out);
                    }
                }
            }
            // `need` counts from `pos`, which becomes 0.
            inbuf.drain(..pos);
            if !out.is_empty() {
                if self.write(&out).is_err() {
                    return End::Dropped;
                }
                out.clear();
            }
            if let Some(end) = self.read_more(&mut inbuf) {
                return end;
            }
        }
    }

    /// Hands a request to the node and waits for its reply; `None` if the
    /// server is shutting down.
    fn ask(&self, args: Vec<Vec<u8>>) -> Option<Reply> {
        let (tx, rx) = bounded(1);
        let req = Request {
            args,
            client: self.client.clone(),
            replier: Replier(Some(tx)),
        };
        // If the node has gone, the request comes back in the error and is
        // dropped with it: answered NO_REPLY.
        let _ = self.req_tx.send(req);
        (self.wake)();
        select! {
            recv(rx) -> r => Some(r.unwrap_or_else(|_| Reply::Error(NO_REPLY.to_owned()))),
            // Both may be ready (the node answered, then shut the server
            // down, as SHUTDOWN does): an answer given is still sent.
            recv(self.stop_rx) -> _ => rx.try_recv().ok(),
        }
    }

    /// Writes the connection's last reply.
    fn last(&mut self, out: &[u8]) -> End {
        match self.write(out) {
            Ok(()) => End::Linger,
            Err(_) => End::Dropped,
        }
    }

    /// Reads what has arrived (waiting up to POLL at a time) onto `inbuf`;
    /// `Some` when the connection is over.
    fn read_more(&mut self, inbuf: &mut Vec<u8>) -> Option<End> {
        let start = inbuf.len();
        inbuf.resize(start + READ_CHUNK, 0);
        let end = loop {
            match self.stream.read(&mut inbuf[start..]) {
                Ok(0) if start == 0 => break End::Clean,
                Ok(0) => break End::Dropped,
                Ok(n) => {
                    inbuf.truncate(start + n);
                    return None;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shared.stopping() {
                        break End::Clean;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Reset: abnormal only with a request half sent.
                Err(_) if start == 0 => break End::Clean,
                Err(_) => break End::Dropped,
            }
        };
        inbuf.truncate(start);
        Some(end)
    }

    /// Writes all of `buf`, however long the client takes to read it,
    /// unless the server stops or the connection fails.
    fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.stream.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if retryable(&e) => {
                    if self.shared.stopping() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// After the last reply: no more from us, and whatever the client still
    /// sends (for a moment, up to max_request_bytes) is read and dropped,
    /// so the close is seen as the end of the stream, not as a reset that
    /// may discard that reply unread.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut sink = [0; 4096];
        let mut drained = 0;
        while drained < self.shared.limits.max_request_bytes
            && Instant::now() < deadline
            && !self.shared.stopping()
        {
            match self.stream.read(&mut sink) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if retryable(&e) => {}
                Err(_) => break,
            }
        }
    }
}

/// A socket timeout (how threads poll the stop flag) or an interrupted
/// call: try again.
fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
