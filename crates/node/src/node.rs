//! The node's event loop: the membership on the real runtime
//! ([`RuntimeHost`]), its voting files on real storage ([`VoteIo`]), the
//! data path (`data/`), the RESP interface, signals, fencing and rebootless
//! restart.
//!
//! One thread runs everything that decides; workers only do I/O and wake
//! it ([`AppWaker`]): the runtime's cores (the transport), one thread per
//! voting file, the datafile and redo workers, the RESP server's loop,
//! the signal thread.

use crate::alertlog::AlertLog;
use crate::config::{ClusterConfig, NodeConfig};
use crate::data::Data;
use crate::hostwatch::HostWatch;
use crate::resp::{Request, RespServer, RespStats};
use crate::vote::VoteIo;
use crate::Wake;
use icx_core::{BufferPool, ClusterId, Duration, Incarnation, Instant, MonotonicClock, NodeId};
use icx_driver::{AppWaker, Runtime, RuntimeConfig, RuntimeHost};
use icx_membership::{Action, Membership, State};
use icx_transport::{LinkConfig, PeerConfig};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Longest one turn sleeps with nothing to do: every input wakes the loop
/// itself, so this only bounds how stale a missed wake-up could leave it.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Buffers of each size class of the node's pool (membership only needs
/// a few; the block size's class is sized for the cache, see
/// [`crate::data::pool_config`]).
const POOL_BUFFERS: usize = 1024;

/// How long a clean shutdown waits for its checkpoint (every dirty block
/// written) before leaving anyway.
const CHECKPOINT_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Called when the node fences: an upper layer (cache fusion) stops its
/// block traffic and datafile I/O before the call returns.
pub type FenceHook = Box<dyn FnMut(&str) + Send>;

/// What stopped the node.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT or SHUTDOWN: left the cluster cleanly.
    Shutdown,
    /// A second signal during the shutdown: stopped at once.
    Forced,
}

/// The transport of one incarnation: a rebootless restart replaces it.
struct Net {
    rt: Runtime,
    host: RuntimeHost,
    /// The backend running ("uring", "sockets") and why not uring.
    pub(crate) backend: String,
    pub(crate) fallback: Option<String>,
    pub(crate) incarnation: u32,
}

pub struct Node {
    pub(crate) cfg: ClusterConfig,
    pub(crate) me: NodeConfig,
    clock: MonotonicClock,
    pool: BufferPool,
    net: Net,
    pub(crate) member: Membership,
    pub(crate) votes: Option<VoteIo>,
    /// Cache fusion, when the config names datafiles.
    pub(crate) data: Option<Data>,
    resp: Option<RespServer>,
    requests: crossbeam_channel::Receiver<Request>,
    alerts: AlertLog,
    waker: Arc<Mutex<Option<AppWaker>>>,
    /// Signals received (the signal thread counts, the loop acts).
    signals: Arc<AtomicU32>,
    signals_seen: u32,
    pub(crate) started_wall: SystemTime,
    pub(crate) started: Instant,
    /// The membership said Serve and did not fence since.
    pub(crate) serving: bool,
    fence_hooks: Vec<FenceHook>,
    /// When the shutdown began.
    leaving: Option<Instant>,
    /// When the membership was told to leave (after the checkpoint).
    leave_sent: Option<Instant>,
    /// The membership reported the leave done.
    left: bool,
    state_path: PathBuf,
    pub(crate) fences: u64,
    pub(crate) restarts: u64,
    /// The host's UDP/IP loss counters since the start (INFO, alerts).
    pub(crate) host: HostWatch,
    /// Prometheus scrapes, with `metrics` in the config.
    pub(crate) metrics: Option<crate::metrics::MetricsServer>,
    /// Frames failing authentication: when last looked at, the count then,
    /// and when the alert was last raised.
    auth_watch: (Instant, u64, Option<Instant>),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me.id)
            .field("state", &self.member.state())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts node `me` of `cfg`: its state file, alert log, transport,
    /// voting-file workers, RESP server and signal thread. Errors say what
    /// and where.
    pub fn start(cfg: ClusterConfig, me: NodeId) -> Result<Node, String> {
        let node = cfg.node(me).cloned().ok_or_else(|| {
            format!(
                "--node {}: not configured in {} (nodes: {})",
                me.0,
                cfg.file.display(),
                cfg.nodes
                    .iter()
                    .map(|n| n.id.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })?;
        std::fs::create_dir_all(&cfg.log_dir)
            .map_err(|e| format!("log_dir {}: {e}", cfg.log_dir.display()))?;
        let alerts = AlertLog::open(&cfg.log_dir, &node.name).map_err(|e| e.to_string())?;
        let state_path = cfg.log_dir.join(format!("fusion_{}.state", node.name));
        let incarnation = next_incarnation(&state_path)?;
        let clock = MonotonicClock::new();
        let pool = BufferPool::new(&crate::data::pool_config(&cfg, POOL_BUFFERS))
            .map_err(|e| format!("buffer pool: {e}"))?;
        let waker: Arc<Mutex<Option<AppWaker>>> = Arc::new(Mutex::new(None));
        let wake: Wake = {
            let w = waker.clone();
            Arc::new(move || {
                if let Some(w) = w.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    w.wake();
                }
            })
        };
        let net = open_net(&cfg, &node, incarnation, clock, pool.clone())?;
        *waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(net.rt.app_waker());

        let mcfg = cfg.membership(me, incarnation);
        let member = Membership::new(mcfg, pool.clone())
            .map_err(|e| format!("{}: membership: {e}", cfg.file.display()))?;
        let votes = if cfg.voting_files.is_empty() {
            None
        } else {
            Some(
                VoteIo::start(cfg.voting_files.clone(), wake.clone())
                    .map_err(|e| format!("voting files: {e}"))?,
            )
        };
        let data = Data::open(&cfg, me, pool.clone(), wake.clone())?;
        let (resp, requests) = RespServer::start(node.client, cfg.clients.clone(), wake.clone())
            .map_err(|e| format!("client address {}: {e}", node.client))?;

        let metrics = match cfg.metrics {
            Some(a) => Some(
                crate::metrics::MetricsServer::start(a, wake.clone())
                    .map_err(|e| format!("metrics address {a}: {e}"))?,
            ),
            None => None,
        };
        let signals = Arc::new(AtomicU32::new(0));
        spawn_signal_thread(signals.clone(), wake)?;

        let started = net.rt.now();
        tracing::info!(
            "fusion-node {} ({}) of cluster {} (id {}): incarnation {incarnation}, interconnect {} over {}, clients on {}, voting files {}",
            node.name,
            me.0,
            cfg.cluster_name,
            cfg.cluster_id,
            net.rt.local_addr(),
            net.backend,
            resp.local_addr(),
            if cfg.voting_files.is_empty() {
                "none (network-only quorum)".to_string()
            } else {
                cfg.voting_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        Ok(Node {
            cfg,
            me: node,
            clock,
            pool,
            net,
            member,
            votes,
            data,
            resp: Some(resp),
            requests,
            alerts,
            waker,
            signals,
            signals_seen: 0,
            started_wall: SystemTime::now(),
            started,
            serving: false,
            fence_hooks: Vec::new(),
            leaving: None,
            leave_sent: None,
            left: false,
            state_path,
            fences: 0,
            restarts: 0,
            host: HostWatch::new(),
            metrics,
            auth_watch: (Instant::ZERO, 0, None),
        })
    }

    /// Registers what to stop when the node fences (cache fusion's block
    /// traffic and datafile I/O).
    pub fn on_fence(&mut self, hook: FenceHook) {
        self.fence_hooks.push(hook);
    }

    pub fn now(&self) -> Instant {
        self.net.rt.now()
    }

    pub fn state(&self) -> State {
        self.member.state()
    }

    /// The address RESP clients use (the configured one, or the port the
    /// kernel chose for port 0 in tests).
    pub fn client_addr(&self) -> Option<std::net::SocketAddr> {
        self.resp.as_ref().map(|r| r.local_addr())
    }

    /// The RESP server's counters (connections, refusals, AUTH failures,
    /// idle timeouts), for INFO; none once stopped.
    pub fn resp_stats(&self) -> Option<RespStats> {
        self.resp.as_ref().map(RespServer::stats)
    }

    /// Runs until shut down.
    pub fn run(&mut self) -> Result<Exit, String> {
        let mut busy = true;
        loop {
            // After outside input (a disk completion, a command) the
            // membership may have output waiting: a turn that does not
            // sleep sends it.
            let wait = if busy {
                std::time::Duration::ZERO
            } else {
                let now = self.net.rt.now();
                self.data
                    .as_ref()
                    .and_then(|d| d.next_wake())
                    .map_or(IDLE_WAIT, |t| {
                        IDLE_WAIT.min(t.saturating_duration_since(now))
                    })
            };
            self.turn(wait).map_err(|e| format!("transport: {e}"))?;
            // Replies given this turn reach the RESP loop with one wake.
            let hold = self.resp.as_ref().map(RespServer::hold_wakes);
            busy = false;
            busy |= self.pump_disk();
            busy |= self.drain_membership()?;
            busy |= self.serve_requests();
            busy |= self.pump_data();
            busy |= self.serve_metrics();
            drop(hold);
            for a in self.host.poll(std::time::Instant::now()) {
                self.alerts.write(&a);
            }
            self.watch_auth();
            if let Some(exit) = self.check_signals() {
                return Ok(exit);
            }
            if let Some(exit) = self.check_leaving() {
                return Ok(exit);
            }
        }
    }

    /// One host turn over every protocol of the node.
    fn turn(&mut self, wait: std::time::Duration) -> io::Result<usize> {
        match self.data.as_mut() {
            Some(d) => {
                let mut stack = d.stack(&mut self.member);
                self.net.host.turn(&mut self.net.rt, &mut stack, wait)
            }
            None => self.net.host.turn(&mut self.net.rt, &mut self.member, wait),
        }
    }

    fn pump_data(&mut self) -> bool {
        let now = self.net.rt.now();
        let serving = self.serving && !self.is_leaving();
        let Some(d) = self.data.as_mut() else {
            return false;
        };
        let any = d.pump(now, &self.member, serving);
        while let Some(line) = d.poll_alert() {
            self.alerts.write_line(&line);
        }
        any
    }

    /// Voting-file requests out, completions in.
    fn pump_disk(&mut self) -> bool {
        let Some(v) = self.votes.as_ref() else {
            return false;
        };
        let mut any = false;
        loop {
            let now = self.net.rt.now();
            let mut moved = false;
            while let Some(req) = self.member.poll_disk(now) {
                v.submit(req);
                moved = true;
            }
            while let Some(c) = v.poll() {
                self.member.handle_disk(self.net.rt.now(), c);
                moved = true;
            }
            if !moved {
                return any;
            }
            any = true;
        }
    }

    /// Alerts to the log; actions (fence, serve, restart) carried out.
    fn drain_membership(&mut self) -> Result<bool, String> {
        let mut any = false;
        while let Some(a) = self.member.poll_alert() {
            self.alerts.write(&a);
            any = true;
        }
        while let Some(act) = self.member.poll_action() {
            any = true;
            match act {
                Action::Fence { reason } => self.fence(&reason),
                Action::Serve { view_incarnation } => {
                    if !self.serving {
                        tracing::info!("serving in cluster incarnation {view_incarnation}");
                    }
                    self.serving = true;
                }
                Action::Restart { incarnation } => self.restart_transport(incarnation)?,
                Action::Left { confirmed } => {
                    tracing::info!(
                        "left the cluster ({})",
                        if confirmed {
                            "the members committed a view without this node"
                        } else {
                            "not confirmed by the members in time"
                        }
                    );
                    self.left = true;
                }
            }
        }
        Ok(any)
    }

    /// Rebootless fencing: every hook stops its I/O before anything else.
    fn fence(&mut self, reason: &str) {
        self.serving = false;
        self.fences += 1;
        tracing::warn!("fenced: {reason}");
        let now = self.net.rt.now();
        if let Some(d) = self.data.as_mut() {
            d.fence(now, reason);
        }
        for h in &mut self.fence_hooks {
            h(reason);
        }
    }

    /// A new incarnation gets a new transport, so frames of the old life
    /// still in flight are dropped as stale by the peers' transports and
    /// by this one. The clock stays, so the membership's timers hold.
    fn restart_transport(&mut self, incarnation: u32) -> Result<(), String> {
        let inc = incarnation.max(self.net.incarnation + 1);
        save_incarnation(&self.state_path, inc)?;
        let _ = self.net.rt.shutdown();
        // What the old transport still reports (losses of the old life's
        // sends) goes to the membership, which ignores what it no longer
        // waits for.
        let now = self.net.rt.now();
        while let Some(ev) = self.net.rt.poll_event() {
            icx_transport::protocol::Protocol::handle_event(&mut self.member, now, ev);
        }
        if let Some(d) = self.data.as_mut() {
            d.restart();
        }
        self.net = open_net(&self.cfg, &self.me, inc, self.clock, self.pool.clone())?;
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.net.rt.app_waker());
        self.restarts += 1;
        tracing::info!("restarted with incarnation {inc} (transport incarnation {inc})");
        Ok(())
    }

    /// Raises ICX-1812 when frames fail authentication (a node with another
    /// key or none, or a forger): at once, then at most once a minute while
    /// it goes on. Looks once a second.
    fn watch_auth(&mut self) {
        let now = self.net.rt.now();
        let (looked, seen, alerted) = self.auth_watch;
        if now.saturating_duration_since(looked) < Duration::from_secs(1) {
            return;
        }
        let count = self.net.rt.stats().rejected_auth;
        self.auth_watch.0 = now;
        // A new transport (a rebootless restart) counts from zero.
        if count <= seen {
            self.auth_watch.1 = count;
            return;
        }
        if alerted.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60)) {
            return;
        }
        let mut claimed: Vec<String> = self
            .net
            .rt
            .snapshot(std::time::Duration::from_millis(100))
            .map(|s| {
                s.cores
                    .iter()
                    .flat_map(|c| c.peers.iter())
                    .filter(|(_, p)| p.rejected_auth > 0)
                    .map(|(n, p)| format!("node {} x{}", n.0, p.rejected_auth))
                    .collect()
            })
            .unwrap_or_default();
        if claimed.is_empty() {
            claimed.push("no configured node".into());
        }
        let keyed = if self.cfg.keys.is_some() {
            "every node needs the same cluster_key_file"
        } else {
            "this node has no cluster_key_file and its peers do"
        };
        self.alerts.write_line(&format!(
            "ICX-1812: {} interconnect frames failed authentication (claimed senders: {}): {keyed}",
            count - seen,
            claimed.join(", ")
        ));
        self.auth_watch = (now, count, Some(now));
    }

    /// `CLUSTER KEYRELOAD`: reads the config file's key settings and key
    /// files again and applies them, so a rollover needs no restart:
    /// (1) add `cluster_next_key_file` on every node and reload; (2) make
    /// the new key `cluster_key_file` (the old one next) and reload; (3)
    /// drop the old one and reload. Only the keys change; turning
    /// authentication on or off needs a restart (the frame size changes).
    pub(crate) fn reload_keys(&mut self) -> Result<String, String> {
        let fresh = ClusterConfig::load(&self.cfg.file).map_err(|e| e.to_string())?;
        let keys = match (&self.cfg.keys, fresh.keys) {
            (Some(_), Some(k)) => k,
            (None, None) => {
                return Err(
                    "no cluster_key_file is configured: frames are not authenticated".into(),
                )
            }
            _ => {
                return Err(
                    "turning frame authentication on or off needs a restart of every node".into(),
                )
            }
        };
        self.net
            .rt
            .set_keyring(keys.ring.clone())
            .map_err(|e| format!("keyring: {e}"))?;
        self.member
            .set_record_keys(crate::keys::record_keys(&keys.ring, self.cfg.cluster_id));
        let ids: Vec<String> = keys.ring.ids().map(|i| i.0.to_string()).collect();
        let done = format!(
            "OK sending with key {}, accepting keys {} ({})",
            keys.key_id,
            ids.join(","),
            icx_driver::keys::protection(Some(&keys.ring))
        );
        self.alerts.write_line(&format!(
            "ICX-1811: Cluster key reloaded: sending with key {}, accepting keys {}",
            keys.key_id,
            ids.join(",")
        ));
        self.cfg.keys = Some(keys);
        Ok(done)
    }

    fn serve_requests(&mut self) -> bool {
        let mut any = false;
        // Bounded per pass, so a flood of clients cannot starve the
        // membership's own work.
        for _ in 0..256 {
            let Ok(req) = self.requests.try_recv() else {
                break;
            };
            any = true;
            self.command(req);
        }
        any
    }

    fn check_signals(&mut self) -> Option<Exit> {
        let n = self.signals.load(Ordering::SeqCst);
        if n == self.signals_seen {
            return None;
        }
        self.signals_seen = n;
        if self.leaving.is_some() {
            tracing::warn!("second signal: stopping at once");
            self.stop();
            return Some(Exit::Forced);
        }
        tracing::info!("signal: shutting down");
        self.begin_shutdown();
        None
    }

    /// Starts a clean shutdown (SIGTERM, SHUTDOWN): the membership fences
    /// the node's I/O and tells the peers; the loop exits when it reports
    /// the leave done.
    pub(crate) fn begin_shutdown(&mut self) {
        if self.leaving.is_none() {
            let now = self.net.rt.now();
            self.leaving = Some(now);
            match self.data.as_mut() {
                Some(d) if d.is_open() => {
                    tracing::info!("shutdown: writing every dirty block before leaving");
                    d.begin_checkpoint(now);
                }
                _ => {}
            }
        }
    }

    fn check_leaving(&mut self) -> Option<Exit> {
        let since = self.leaving?;
        if self.leave_sent.is_none() {
            let now = self.net.rt.now();
            let done = self.data.as_ref().is_none_or(|d| d.checkpoint_done());
            let overdue = now.saturating_duration_since(since) > CHECKPOINT_BOUND;
            if !done && !overdue {
                return None;
            }
            if !done {
                tracing::warn!(
                    "shutdown checkpoint not done within {CHECKPOINT_BOUND:?}: leaving with dirty blocks"
                );
            }
            self.leave_sent = Some(now);
            self.member.leave(now);
            return None;
        }
        let since = self.leave_sent?;
        // The membership bounds the leave itself (leave_wait); this only
        // guards against a leave that never reports.
        let bound = self.member.config().leave_wait + self.cfg.heartbeat_interval * 4;
        let overdue = self.net.rt.now().saturating_duration_since(since) > bound;
        if !self.left && !overdue {
            return None;
        }
        if overdue && !self.left {
            tracing::warn!("leave not reported within {bound:?}: exiting");
        }
        // What the leave queued last (the announcement's resends, the
        // record) goes out before the transport stops.
        let _ = self.turn(std::time::Duration::ZERO);
        self.pump_disk();
        self.stop();
        Some(Exit::Shutdown)
    }

    /// Stops every worker; bounded.
    fn stop(&mut self) {
        if let Some(d) = self.data.as_mut() {
            d.stop();
        }
        if let Some(r) = self.resp.take() {
            r.shutdown();
        }
        self.votes = None;
        let _ = self.net.rt.shutdown();
    }

    /// Wall-clock time of a membership instant (for history and INFO).
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        let d: Duration = at.saturating_duration_since(self.started);
        let back: Duration = self.started.saturating_duration_since(at);
        if back.is_zero() {
            self.started_wall + d
        } else {
            self.started_wall - back
        }
    }

    pub(crate) fn backend(&self) -> (&str, Option<&str>, u32) {
        (
            &self.net.backend,
            self.net.fallback.as_deref(),
            self.net.incarnation,
        )
    }

    pub(crate) fn runtime(&mut self) -> &mut Runtime {
        &mut self.net.rt
    }

    pub(crate) fn alert_log(&self) -> &AlertLog {
        &self.alerts
    }

    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The transport: one core thread (membership traffic is light; cache
/// fusion will size this), unpinned, sleeping when idle, io_uring where
/// the kernel allows it.
fn open_net(
    cfg: &ClusterConfig,
    me: &NodeConfig,
    incarnation: u32,
    clock: MonotonicClock,
    pool: BufferPool,
) -> Result<Net, String> {
    let binds = me.interconnect.clone();
    let shown = binds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut t =
        icx_transport::Config::new(ClusterId(cfg.cluster_id), me.id, Incarnation(incarnation));
    t.auth = cfg.keys.as_ref().map(|k| k.ring.clone());
    t.link_mode = cfg.interconnect_link_mode;
    t.link_timeout = cfg.interconnect_link_timeout;
    let mut rc = RuntimeConfig::new(t, pool, 1);
    rc.pin = false;
    rc.clock = clock;
    for n in cfg.nodes.iter().filter(|n| n.id != me.id) {
        // Link k: this node's kth address to the peer's kth (the config
        // checked every node lists as many).
        let links: Vec<LinkConfig> = n
            .interconnect
            .iter()
            .zip(&cfg.interconnect_mtu)
            .map(|(a, &mtu)| LinkConfig::new(mtu, a.is_ipv6()))
            .collect();
        let p = PeerConfig::new(n.id, links[0].mtu)
            .with_links(&links)
            .map_err(|e| format!("node {}: interconnect: {e}", n.name))?;
        rc = rc.peer_links(p, n.interconnect.clone());
    }
    let chosen: Arc<Mutex<(String, Option<String>)>> = Arc::default();
    let c2 = chosen.clone();
    let rt = Runtime::start(rc, move |_core| {
        let mut u = icx_uring::UringConfig::with_links(&binds)?;
        // A daemon that mostly waits: sleep at once instead of spinning.
        u.spin = std::time::Duration::ZERO;
        let (b, name, why) = match icx_uring::open(u)? {
            icx_uring::Opened::Uring(b) => (b as Box<dyn icx_core::Backend + Send>, "uring", None),
            icx_uring::Opened::Sockets(b, why) => {
                (b as Box<dyn icx_core::Backend + Send>, "sockets", Some(why))
            }
        };
        *c2.lock().unwrap_or_else(|e| e.into_inner()) = (name.to_string(), why);
        Ok(b)
    })
    .map_err(|e| format!("interconnect {shown}: {e}"))?;
    let (backend, fallback) = chosen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Net {
        rt,
        host: RuntimeHost::new(),
        backend,
        fallback,
        incarnation,
    })
}

/// The incarnation of this start: above every earlier one of this node
/// (the state file) and, should the state file be lost, above any the
/// peers may remember (the wall clock in seconds: a lost file must not
/// leave the node's frames dropped as stale forever).
fn next_incarnation(path: &std::path::Path) -> Result<u32, String> {
    let stored = match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .find_map(|l| l.strip_prefix("incarnation "))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("{}: not a fusion-node state file", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX - 1)) as u32);
    let inc = stored.saturating_add(1).max(wall).max(1);
    save_incarnation(path, inc)?;
    Ok(inc)
}

/// Written before the incarnation is used, durably (write, fsync, rename).
fn save_incarnation(path: &std::path::Path, inc: u32) -> Result<(), String> {
    let tmp = path.with_extension("state.tmp");
    let r = (|| -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "incarnation {inc}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    r.map_err(|e| format!("{}: {e}", path.display()))
}

/// SIGTERM and SIGINT are counted and wake the loop; the loop decides.
fn spawn_signal_thread(count: Arc<AtomicU32>, wake: Wake) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                count.fetch_add(1, Ordering::SeqCst);
                wake();
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    Ok(())
}
