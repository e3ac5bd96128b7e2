//! Test support: a simulated shared disk for voting files, and a host
//! wrapper that runs a [`Membership`] with its disk I/O on the simulator's
//! protocol host (`icx_sim::host`), with injectable stalls.
//!
//! Everything is driven by the `now` the simulator passes in, so a seed
//! replays disk timing as exactly as network timing. No real file is
//! touched.

use crate::alert::Alert;
use crate::disk::{DiskCompletion, DiskError, DiskOp, DiskRequest};
use crate::member::{Action, Membership};
use icx_core::{Duration, Instant, NodeId};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;

/// One simulated voting file.
#[derive(Clone, Debug, Default)]
pub struct SimFile {
    /// `None`: the file does not exist.
    pub data: Option<Vec<u8>>,
    /// Every request takes this long.
    pub latency: Duration,
    /// Requests fail with an I/O error.
    pub failing: bool,
    /// Requests never complete (a hung path).
    pub lost: bool,
    /// Requests from these nodes never complete (that node's path is gone).
    pub lost_for: BTreeSet<NodeId>,
    pub reads: u64,
    pub writes: u64,
}

/// Voting files shared by every node of one simulation.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    pub files: Vec<SimFile>,
}

pub type SharedDisk = Rc<RefCell<SimDisk>>;

impl SimDisk {
    /// `n` missing files (the first node formats them), each with `latency`.
    pub fn shared(n: usize, latency: Duration) -> SharedDisk {
        Rc::new(RefCell::new(SimDisk {
            files: (0..n)
                .map(|_| SimFile {
                    latency,
                    ..SimFile::default()
                })
                .collect(),
        }))
    }

    fn complete(&mut self, req: &DiskRequest) -> Result<Vec<u8>, DiskError> {
        let Some(f) = self.files.get_mut(req.file) else {
            return Err(DiskError::Io("no such file".into()));
        };
        if f.failing {
            return Err(DiskError::Io("simulated I/O error".into()));
        }
        match &req.op {
            DiskOp::Read => {
                f.reads += 1;
                f.data.clone().ok_or(DiskError::NotFound)
            }
            DiskOp::Write { offset, data } => {
                f.writes += 1;
                let d = f.data.get_or_insert_with(Vec::new);
                let (off, end) = (*offset as usize, *offset as usize + data.len());
                if d.len() < end {
                    d.resize(end, 0);
                }
                d[off..end].copy_from_slice(data);
                Ok(Vec::new())
            }
        }
    }
}

/// A [`Membership`] with its voting files on a [`SharedDisk`], its alerts
/// and actions logged, and stalls on demand: what a node daemon does, in
/// simulation.
#[derive(Debug)]
pub struct SimMember {
    pub m: Membership,
    disk: Option<SharedDisk>,
    /// (completes at, issued at, request), in issue order.
    inflight: Vec<(Instant, Instant, DiskRequest)>,
    stall_until: Option<Instant>,
    queued: VecDeque<HostEvent>,
    pub alerts: Vec<(Instant, Alert)>,
    pub actions: Vec<(Instant, Action)>,
    /// Block I/O stopped by a fence and not yet served again.
    pub io_fenced: bool,
    /// Print alerts as they come (for debugging a seed).
    pub echo: bool,
    /// The node reported `Action::Left`: its host would exit now.
    pub left: bool,
}

impl SimMember {
    pub fn new(m: Membership, disk: Option<SharedDisk>) -> SimMember {
        SimMember {
            m,
            disk,
            inflight: Vec::new(),
            stall_until: None,
            queued: VecDeque::new(),
            alerts: Vec::new(),
            actions: Vec::new(),
            io_fenced: false,
            echo: false,
            left: false,
        }
    }

    /// The process is not scheduled until `until`: nothing reaches the
    /// membership object (network events wait in a queue).
    pub fn stall(&mut self, until: Instant) {
        self.stall_until = Some(until);
    }

    /// SIGTERM: the node leaves ([`Membership::leave`]).
    pub fn leave(&mut self, now: Instant) {
        self.m.leave(now);
        self.drain(now);
    }

    pub fn alert_codes(&self) -> Vec<&'static str> {
        self.alerts.iter().map(|(_, a)| a.code).collect()
    }

    pub fn has_alert(&self, code: &str) -> bool {
        self.alerts.iter().any(|(_, a)| a.code == code)
    }

    fn stalled(&self, now: Instant) -> bool {
        self.stall_until.is_some_and(|t| now < t)
    }

    fn drain(&mut self, now: Instant) {
        while let Some(req) = self.m.poll_disk(now) {
            let Some(disk) = &self.disk else { continue };
            let d = disk.borrow();
            let Some(f) = d.files.get(req.file) else {
                continue;
            };
            if f.lost || f.lost_for.contains(&self.m.me()) {
                continue;
            }
            let at = now + f.latency;
            drop(d);
            self.inflight.push((at, now, req));
        }
        while let Some(a) = self.m.poll_alert() {
            if self.echo {
                eprintln!("{now:?} node {}: {a}", self.m.me().0);
            }
            self.alerts.push((now, a));
        }
        while let Some(a) = self.m.poll_action() {
            match a {
                Action::Fence { .. } => self.io_fenced = true,
                Action::Serve { .. } => self.io_fenced = false,
                Action::Restart { .. } => {}
                Action::Left { .. } => self.left = true,
            }
            self.actions.push((now, a));
        }
    }

    fn next_disk(&self) -> Option<Instant> {
        self.inflight.iter().map(|(t, _, _)| *t).min()
    }
}

impl Protocol for SimMember {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        if self.stalled(now) {
            self.queued.push_back(event);
            return;
        }
        self.m.handle_event(now, event);
        self.drain(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.stalled(now) {
            return;
        }
        self.stall_until = None;
        while let Some(ev) = self.queued.pop_front() {
            self.m.handle_event(now, ev);
        }
        // Completions due, in the order they were issued.
        let mut i = 0;
        while i < self.inflight.len() {
            if self.inflight[i].0 <= now {
                let (_, issued, req) = self.inflight.remove(i);
                let result = match &self.disk {
                    Some(d) => d.borrow_mut().complete(&req),
                    None => Err(DiskError::Io("no disk".into())),
                };
                self.m.handle_disk(
                    now,
                    DiskCompletion {
                        id: req.id,
                        file: req.file,
                        result,
                        took: now - issued,
                    },
                );
                self.drain(now);
            } else {
                i += 1;
            }
        }
        if self.m.poll_timeout().is_some_and(|t| t <= now) {
            self.m.handle_timeout(now);
        }
        self.drain(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if let Some(t) = self.stall_until {
            return Some(t);
        }
        match (self.m.poll_timeout(), self.next_disk()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_output(&mut self, now: Instant) -> Option<Output> {
        if self.stalled(now) {
            return None;
        }
        let o = self.m.poll_output(now);
        self.drain(now);
        o
    }
}
