//! A node joining (or coming back with a new incarnation) without a
//! freeze: the members that served the last epoch hand the joiner its
//! chunks one by one, and nothing else stops.
//!
//! A view that only adds members (nobody departed, no incarnation
//! changed) at a node that served the last epoch and is not
//! reconfiguring is a **join**, not a reconfiguration:
//!
//! 1. **Old masters.** Slots move by rendezvous hashing, so the only
//!    chunks that change master are those of the joiner's slots that were
//!    not remastered. Each node keeps mastering such a chunk while its
//!    directory has entries for it (it pins a route to itself), and moves
//!    it exactly as dynamic remastering does ([`super::remaster`]): the
//!    chunk alone freezes until its conversions end, its entries go to
//!    the joiner in a [`Msg::Handover`], and what queued is redirected
//!    ([`Msg::Moved`]). A chunk without entries has nothing to move. When
//!    every chunk is handed, the node sends each joiner a
//!    [`Msg::JoinDone`] with the routes it knows (remastered chunks keep
//!    their master through a join). Every other chunk is served
//!    throughout, requests and replies already in flight included:
//!    messages of the epoch before are still accepted, since nothing was
//!    frozen between.
//! 2. **Joiner.** Its first view has other members and it opens with
//!    recovery ([`super::Config::open_recovery`]), so it cannot know yet
//!    whether they are serving (a join) or starting with it (a cold
//!    start). It tells every other member it is new (a JoinDone, not
//!    `established`) and holds requests for the chunks it now masters
//!    (counted `gc_join_waits`) until every member's JoinDone is in;
//!    after that, a chunk whose handover is still on its way (a route to
//!    the joiner in a JoinDone) waits for it. Requests for everything else
//!    go out at once.
//! 3. **Cold start.** If no member was established, they are all starting:
//!    each reconfigures with recovery, as a single node's first view does.
//!
//! Anything else turns the join into a full reconfiguration
//! ([`super::recon`]) in the same epoch: a member that reconfigures sends
//! [`Msg::Report`]s, and a node that entered the epoch by a join and gets
//! one reconfigures too (a report is sent to every member, so all of them
//! do). A view change during a join, or a node still reconfiguring when a
//! joiner comes, takes that path; it is safe from any state a handover
//! can be in, as after a crash mid-remaster.

use super::parts::{self, PartsIn};
use super::Fusion;
use crate::grd::{chunk_of, ChunkId, CHUNK};
use crate::io::{BlockNo, FileNo};
use crate::msg::{Msg, RouteItem, JOIN_ROUTES_MAX};
use icx_core::{Duration, Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// JoinDone parts unanswered are sent again this often (a joiner whose
/// service opens a moment later drops them).
const JOIN_RESEND: Duration = Duration::from_millis(100);

/// One join as this node saw it, for the log and `INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinReport {
    pub old_epoch: u64,
    pub epoch: u64,
    pub joined: Vec<NodeId>,
    /// This node is the joiner (else it served the epoch before).
    pub joiner: bool,
    pub started: Instant,
    /// Old master: every chunk handed over. Joiner: every member's
    /// JoinDone in (its share of the directory is complete but for
    /// handovers still on their way).
    pub ready: Option<Instant>,
    /// Every JoinDone of this node acknowledged (and, at a joiner, every
    /// chunk handed to it installed).
    pub done: Option<Instant>,
    /// Chunks this node handed to a joiner.
    pub chunks_handed: u64,
    /// Requests a joiner held until their chunk's directory was complete.
    pub requests_held: u64,
}

/// A node's join state.
#[derive(Clone, Debug, Default)]
pub(crate) struct JoinState {
    /// The epoch this node entered by a join (no freeze): a message of the
    /// odd epoch after it turns the join into a reconfiguration.
    epoch: Option<u64>,
    /// The epoch before it, whose messages are still accepted.
    compat: Option<u64>,
    /// The epoch this node's service opened in with no recovery and no
    /// join: a fresh cluster, all members new together.
    pub(crate) fresh: Option<u64>,
    cur: Option<Join>,
    pub(crate) last: Option<JoinReport>,
}

#[derive(Clone, Debug)]
struct Join {
    report: JoinReport,
    /// Old master: chunks still to hand over.
    handing: BTreeSet<ChunkId>,
    /// JoinDone parts not yet acknowledged, by member.
    unacked: parts::Unacked,
    resend_at: Instant,
    /// Joiner: the JoinDone parts in, per member.
    got: PartsIn,
    /// Joiner: a member that served the last epoch answered.
    established: bool,
    /// Joiner: requests for chunks not complete here yet.
    held: Vec<(NodeId, Msg)>,
}

impl JoinReport {
    fn new(
        now: Instant,
        (old_epoch, epoch): (u64, u64),
        joined: Vec<NodeId>,
        joiner: bool,
    ) -> Self {
        JoinReport {
            old_epoch,
            epoch,
            joined,
            joiner,
            started: now,
            ready: None,
            done: None,
            chunks_handed: 0,
            requests_held: 0,
        }
    }
}

impl Join {
    fn new(
        now: Instant,
        report: JoinReport,
        handing: BTreeSet<ChunkId>,
        unacked: parts::Unacked,
    ) -> Join {
        Join {
            // An old master knows it served the last epoch.
            established: !report.joiner,
            report,
            handing,
            unacked,
            resend_at: now + JOIN_RESEND,
            got: PartsIn::default(),
            held: Vec::new(),
        }
    }
}

impl JoinState {
    /// Whether a message of `epoch` belongs to this node's epoch `now`.
    pub(crate) fn accepts(&self, epoch: u64, now: u64) -> bool {
        epoch == now || self.compat == Some(epoch)
    }

    /// This epoch was entered by a join: a request may come from a node
    /// still on the view before.
    pub(crate) fn accepts_old(&self) -> bool {
        self.compat.is_some()
    }

    pub(crate) fn busy(&self) -> bool {
        self.cur.is_some()
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.cur
            .as_ref()
            .filter(|j| !j.unacked.is_empty())
            .map(|j| j.resend_at)
    }

    pub(crate) fn report(&self) -> Option<&JoinReport> {
        self.cur.as_ref().map(|j| &j.report)
    }

    pub(crate) fn describe(&self) -> Option<String> {
        let j = self.cur.as_ref()?;
        Some(format!(
            "join {:?}: handing {:?} unacked {:?} got {:?} held {}",
            j.report,
            j.handing,
            j.unacked.keys().collect::<Vec<_>>(),
            j.got,
            j.held.len()
        ))
    }
}

/// The block a request to a master is about, for the messages a joiner
/// may have to hold.
fn master_bound(m: &Msg) -> Option<(FileNo, BlockNo)> {
    match *m {
        Msg::Req { file, block, .. }
        | Msg::WriteReq { file, block, .. }
        | Msg::WriteDone { file, block, .. }
        | Msg::Drop { file, block, .. } => Some((file, block)),
        Msg::MultiReq { file, first, .. } => Some((file, first)),
        _ => None,
    }
}

impl Fusion {
    /// The chunks this node masters that have directory entries (taken
    /// before a view change: the ones a join may move).
    pub(crate) fn mastered_chunks(&self) -> BTreeSet<ChunkId> {
        self.dir
            .keys()
            .filter(|k| self.slots.master(k.0, k.1) == self.me)
            .map(|k| chunk_of(k.0, k.1))
            .collect()
    }

    /// Whether a view change at this node can be a join: it served the
    /// last epoch and nothing is being reconfigured or joined here.
    pub(crate) fn can_join(&self) -> bool {
        self.opened && self.recon.is_none() && self.join.cur.is_none()
    }

    /// An old master's side of a join into `epoch` (the slots are of the
    /// new view already; `mastered`: the chunks it had before).
    pub(crate) fn join_start(
        &mut self,
        now: Instant,
        epoch: u64,
        joined: Vec<NodeId>,
        mastered: BTreeSet<ChunkId>,
    ) {
        let old = self.epoch;
        self.begin_epoch(epoch, &joined, "joined");
        let old_inc = old / 2;
        self.join.compat = Some(old);
        let me = self.me;
        let mut handing = BTreeSet::new();
        for c in mastered {
            let first = c.1.saturating_mul(CHUNK);
            let to = self.slots.master(c.0, first);
            if to == me {
                continue;
            }
            // Still this node's until its handover: a pinned route.
            let v = self.slots.version(c.0, first);
            self.slots.set_route(c.0, first, me, v + 1);
            self.drm.leaving.insert(c, (to, v + 2));
            handing.insert(c);
        }
        let n = handing.len();
        self.alert(format!(
            "Global Resource Directory partially frozen: {n} chunk(s) to hand to the joining instance(s)"
        ));
        let report = JoinReport::new(now, (old_inc, epoch), joined, false);
        self.join.cur = Some(Join::new(now, report, handing.clone(), BTreeMap::new()));
        for c in handing {
            self.drm_try_handover(now, c);
        }
        self.join_progress(now);
    }

    /// A joiner's first view (other members, recovery at open).
    pub(crate) fn join_as_new(&mut self, now: Instant, epoch: u64) {
        let others: Vec<NodeId> = self
            .slots
            .members()
            .iter()
            .copied()
            .filter(|&m| m != self.me)
            .collect();
        self.begin_epoch(epoch, &[self.me], "joining");
        let msg = Msg::JoinDone {
            part: 0,
            parts: 1,
            established: false,
            routes: Vec::new(),
        };
        let unacked: BTreeMap<NodeId, Vec<Msg>> =
            others.iter().map(|&m| (m, vec![msg.clone()])).collect();
        let report = JoinReport::new(now, (0, epoch), vec![self.me], true);
        self.join.cur = Some(Join::new(now, report, BTreeSet::new(), unacked));
        for m in others {
            self.send(m, msg.clone());
        }
    }

    /// The alert lines and epoch switch both sides of a join share.
    fn begin_epoch(&mut self, epoch: u64, joined: &[NodeId], how: &str) {
        let old = self.epoch / 2;
        self.epoch = super::wire_epoch(epoch, false);
        self.join.epoch = Some(self.epoch);
        self.alert_started(old, epoch);
        self.alert(format!("instance {how}: {}", super::recon::ids(joined)));
        self.take_early();
    }

    /// A chunk left this node (handed over, or kept because it could not
    /// move): one fewer for the join.
    pub(crate) fn join_chunk_left(&mut self, now: Instant, chunk: ChunkId, handed: bool) {
        let Some(j) = self.join.cur.as_mut() else {
            return;
        };
        if j.handing.remove(&chunk) {
            if handed {
                j.report.chunks_handed += 1;
                self.stats.gc_join_chunks += 1;
            }
            self.join_progress(now);
        }
    }

    /// An old master with every chunk handed: tells each joiner.
    fn join_progress(&mut self, now: Instant) {
        let Some(j) = self.join.cur.as_ref() else {
            return;
        };
        if j.report.joiner || !j.handing.is_empty() || j.report.ready.is_some() {
            return;
        }
        let routes: Vec<RouteItem> = self
            .slots
            .routes()
            .map(|(c, r)| RouteItem {
                file: c.0,
                first: c.1.saturating_mul(CHUNK),
                master: r.master,
                version: r.version,
            })
            .collect();
        let msgs = parts::in_parts(&routes, JOIN_ROUTES_MAX, |part, parts, routes| {
            Msg::JoinDone {
                part,
                parts,
                established: true,
                routes,
            }
        });
        let Some(j) = self.join.cur.as_mut() else {
            return;
        };
        j.report.ready = Some(now);
        let me = self.me;
        let to: Vec<NodeId> = j
            .report
            .joined
            .iter()
            .copied()
            .filter(|&n| n != me)
            .collect();
        for &n in &to {
            j.unacked.insert(n, msgs.clone());
        }
        let handed = j.report.chunks_handed;
        self.alert(format!(
            "Global Resource Directory: {handed} chunk(s) handed to the joining instance(s)"
        ));
        for n in to {
            for m in &msgs {
                self.send(n, m.clone());
            }
        }
        self.join_finish(now);
    }

    /// A member's JoinDone part.
    pub(crate) fn j_join_done(
        &mut self,
        now: Instant,
        from: NodeId,
        (part, parts): (u16, u16),
        established: bool,
        routes: &[RouteItem],
    ) {
        if established && self.join.fresh == Some(self.epoch) && self.recon.is_none() {
            // Opened as a fresh cluster, but a member served before: this
            // node cannot take its share by a join (it did not wait for
            // it), so the whole service reconfigures.
            self.alert("A member served before this node opened: reconfiguring".into());
            let inc = self.epoch / 2;
            self.reconfigure(now, inc, (Vec::new(), vec![self.me]));
        }
        if !established {
            // A joiner's service is open now: what was sent to it before
            // (dropped, unless it opened first) goes again at once.
            self.join_resend_to(from);
        }
        let Some(j) = self.join.cur.as_mut().filter(|j| j.report.joiner) else {
            // Not joining (or done): the ack was lost, or it is a fellow
            // joiner's note.
            return self.send(from, Msg::JoinAck { parts });
        };
        let Some(new) = j.got.add(from, part, parts) else {
            return;
        };
        let complete = j.got.complete(from);
        j.established |= established;
        if new && established {
            for r in routes {
                self.r_moved(now, 0, (r.file, r.first), r.master, r.version);
            }
        }
        if complete {
            self.send(from, Msg::JoinAck { parts });
            self.join_check_ready(now);
        }
    }

    pub(crate) fn j_join_ack(&mut self, now: Instant, from: NodeId, parts: u16) {
        if let Some(j) = self.join.cur.as_mut() {
            parts::acked(&mut j.unacked, from, parts);
        }
        self.join_finish(now);
    }

    /// A joiner with every member's JoinDone: its share of the directory
    /// is complete (a cold start if nobody was established).
    fn join_check_ready(&mut self, now: Instant) {
        let me = self.me;
        let members: Vec<NodeId> = self.slots.members().to_vec();
        let Some(j) = self.join.cur.as_mut() else {
            return;
        };
        let all = members
            .iter()
            .filter(|&&m| m != me)
            .all(|&m| j.got.complete(m));
        if !all || j.report.ready.is_some() {
            return;
        }
        if !j.established {
            self.alert("Cold start: no member served before; reconfiguring".into());
            return self.join_escalate(now);
        }
        j.report.ready = Some(now);
        self.alert("Global Resource Directory: share of the joining instance complete".into());
        self.join_release(now);
    }

    /// Holds a request for a chunk this joiner masters but whose directory
    /// is not complete here yet (true: held, replayed later).
    pub(crate) fn join_hold(&mut self, from: NodeId, msg: &Msg) -> bool {
        let Some(key) = master_bound(msg) else {
            return false;
        };
        if !self.join_pending(key) {
            return false;
        }
        self.stats.gc_join_waits += 1;
        if let Some(j) = self.join.cur.as_mut() {
            j.report.requests_held += 1;
            j.held.push((from, msg.clone()));
        }
        true
    }

    /// Whether this joiner masters `key` by its map but does not serve it
    /// yet: its share of the directory, or the chunk's handover, is not in.
    pub(crate) fn join_pending(&self, key: (FileNo, BlockNo)) -> bool {
        let Some(j) = self.join.cur.as_ref().filter(|j| j.report.joiner) else {
            return false;
        };
        self.slots.master(key.0, key.1) == self.me
            && (j.report.ready.is_none() || self.drm.incoming.contains_key(&chunk_of(key.0, key.1)))
    }

    /// Held requests whose chunk this joiner serves now (its share is
    /// complete, or the chunk's handover was installed) go on; the rest
    /// stay held (counted once).
    pub(crate) fn join_release(&mut self, now: Instant) {
        let Some(held) = self.join.cur.as_mut().map(|j| std::mem::take(&mut j.held)) else {
            return;
        };
        let (keep, go): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|(_, m)| master_bound(m).is_some_and(|k| self.join_pending(k)));
        if let Some(j) = self.join.cur.as_mut() {
            j.held = keep;
        }
        self.local.extend(go);
        self.join_finish(now);
    }

    /// Ends the join once this node's part is over.
    fn join_finish(&mut self, now: Instant) {
        let incoming = !self.drm.incoming.is_empty();
        let Some(j) = self.join.cur.as_ref() else {
            return;
        };
        let over = j.report.ready.is_some()
            && j.unacked.is_empty()
            && j.held.is_empty()
            && (!j.report.joiner || !incoming);
        if !over {
            return;
        }
        let Some(mut j) = self.join.cur.take() else {
            return;
        };
        j.report.done = Some(now);
        self.stats.gc_joins += 1;
        self.alert("Reconfiguration complete".into());
        self.join.last = Some(j.report);
    }

    /// A message of the reconfiguration epoch of the incarnation this node
    /// joined: a member reconfigures, so this node does too (true: it has,
    /// and the message is of its epoch now).
    pub(crate) fn join_escalates(&mut self, now: Instant, epoch: u64) -> bool {
        let joined = self.join.epoch == Some(self.epoch) && self.recon.is_none();
        if !joined || epoch != self.epoch + 1 {
            return false;
        }
        self.join_escalate(now);
        true
    }

    /// The join becomes a reconfiguration in the same epoch.
    fn join_escalate(&mut self, now: Instant) {
        let cur = self.join.cur.take();
        let joined = cur.map(|j| j.report.joined).unwrap_or_default();
        let inc = self.epoch / 2;
        self.reconfigure(now, inc, (Vec::new(), joined));
    }

    /// A reconfiguration (or fence) ends any join.
    pub(crate) fn join_reset(&mut self) {
        self.join.cur = None;
        self.join.epoch = None;
        self.join.compat = None;
        self.join.fresh = None;
    }

    /// Every handover and JoinDone part not yet acknowledged by `to`,
    /// sent again.
    fn join_resend_to(&mut self, to: NodeId) {
        let mut again: Vec<Msg> = self.drm.unacked_to(to);
        if let Some(j) = self.join.cur.as_ref() {
            again.extend(j.unacked.get(&to).into_iter().flatten().cloned());
        }
        for m in again {
            self.send(to, m);
        }
    }

    /// Resends JoinDone parts unanswered.
    pub(crate) fn join_timers(&mut self, now: Instant) {
        let Some(j) = self.join.cur.as_mut() else {
            return;
        };
        if j.resend_at > now {
            return;
        }
        j.resend_at = now + JOIN_RESEND;
        let again = parts::all_unacked(&j.unacked);
        for (m, msg) in again {
            self.send(m, msg);
        }
    }

    /// The join under way, if any.
    pub fn joining(&self) -> Option<&JoinReport> {
        self.join.report()
    }

    /// The last join this node finished.
    pub fn last_join(&self) -> Option<&JoinReport> {
        self.join.last.as_ref()
    }
}
