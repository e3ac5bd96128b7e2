//! Peers at run time: the application side's view of who is a peer, and
//! the commands that add, remove, re-address and re-size them.
//!
//! A peer's session lives on its owning core only, so every change is a
//! command to that core, behind the sends already queued there. The
//! application side keeps the set of peers so [`Runtime::send`] can refuse
//! an unknown one at once; it changes that set when a command is queued,
//! and follows the cores' `PeerAdded` / `PeerRemoved` events for changes
//! the cores make themselves (a peer learnt through `accept_unknown`, an
//! add the core refused).
//!
//! What is checked where:
//! - **At once, on the application thread** (an `Err` from the call):
//!   duplicate or unknown peer, a reserved or our own node id, an MTU
//!   outside what IP/UDP and the icx header allow (the transport's own
//!   bounds, [`ConfigError::MtuTooSmall`]/[`ConfigError::MtuTooLarge`]), an
//!   MTU the owning core's backend cannot carry ([`PeerError::BackendMtu`]),
//!   a full command ring, a runtime shut down.
//! - **On the owning core** (the endpoint stays the authority): anything
//!   left, in practice only an empty pool when a larger MTU needs new probe
//!   padding. The core logs the reason at error level, counts it in
//!   [`CoreStats::peer_errors`](super::CoreStats), and for a refused add
//!   reports `PeerRemoved`, so the application's view matches again.
//!
//! Answers, as events in the owning core's order:
//! - [`Runtime::add_peer`]: `PeerAdded` (or `PeerRemoved` if the core refused it);
//! - [`Runtime::remove_peer`]: a `Lost { reason: PeerRemoved }` with its tag
//!   for every message still queued to the peer, then `PeerRemoved`;
//! - [`Runtime::set_peer_mtu`]: the path is probed again, so `PathVerified`
//!   (or `PathMtuMismatch`) with the new MTU follows;
//! - [`Runtime::set_peer_addr`], [`Runtime::set_peer_link_addr`]: none; the
//!   next frame by that link goes to the new address.
//!
//! A peer reached over several links ([`Runtime::add_peer_links`]) is
//! checked per link at once: one address per link, each of its link's IP
//! version, no more links than the owning core's backend has, and each
//! link's MTU within what that backend carries.

use super::core::Command;
use super::{NodeEvent, Runtime};
use crate::links::check_peer_links;
use crate::pump::{check_backend_mtu, BackendMtuError};
use icx_core::{NodeId, MAX_LINKS};
use icx_transport::{ConfigError, Event, PeerConfig};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

/// Why a peer command was refused at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The transport's rules refuse it: [`ConfigError::DuplicatePeer`],
    /// [`ConfigError::UnknownPeer`], a reserved or our own node id
    /// ([`ConfigError::Invalid`]), an MTU out of range.
    Config(ConfigError),
    /// The owning core's backend cannot carry the datagrams the MTU needs.
    BackendMtu(BackendMtuError),
    /// The owning core's command ring is full: drain events and retry.
    Backpressure,
    /// The runtime was shut down.
    ShutDown,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Config(e) => e.fmt(f),
            PeerError::BackendMtu(e) => e.fmt(f),
            PeerError::Backpressure => write!(f, "command ring full"),
            PeerError::ShutDown => write!(f, "runtime shut down"),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<ConfigError> for PeerError {
    fn from(e: ConfigError) -> Self {
        PeerError::Config(e)
    }
}

impl From<BackendMtuError> for PeerError {
    fn from(e: BackendMtuError) -> Self {
        PeerError::BackendMtu(e)
    }
}

/// The IP version of each of a peer's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Families {
    v6: [bool; MAX_LINKS],
    links: u8,
}

impl Families {
    fn of(p: &PeerConfig) -> Self {
        let mut v6 = [false; MAX_LINKS];
        for (i, f) in v6.iter_mut().enumerate().take(p.link_count()) {
            *f = p.link(i).is_some_and(|l| l.ipv6);
        }
        Families {
            v6,
            links: p.link_count() as u8,
        }
    }

    fn one(ipv6: bool) -> Self {
        let mut v6 = [false; MAX_LINKS];
        v6[0] = ipv6;
        Families { v6, links: 1 }
    }

    /// Link `link`'s IP version, if the peer has the link.
    fn link(&self, link: u8) -> Option<bool> {
        (link < self.links).then(|| self.v6[usize::from(link)])
    }
}

/// The application side's view of the peers.
#[derive(Debug)]
pub(super) struct Members {
    cores: usize,
    /// Our own node id, which is never a peer.
    node: NodeId,
    /// Every peer, with whether each of its links' paths is IPv6.
    peers: HashMap<NodeId, Families>,
    /// Commands queued for a node whose answer (`PeerAdded`/`PeerRemoved`)
    /// has not come back yet: until it has, the set above is newer than
    /// what the events say.
    unanswered: HashMap<NodeId, u32>,
    /// The path of peers learnt through `accept_unknown`.
    learnt_ipv6: bool,
}

impl Members {
    pub(super) fn new(cores: usize, node: NodeId, learnt_ipv6: bool) -> Self {
        Members {
            cores,
            node,
            peers: HashMap::new(),
            unanswered: HashMap::new(),
            learnt_ipv6,
        }
    }

    /// The core serving `peer`, if it is one.
    pub(super) fn owner(&self, peer: NodeId) -> Option<usize> {
        self.peers
            .contains_key(&peer)
            .then(|| icx_core::owner_core(peer, self.cores))
    }

    /// Checks a new peer at `addrs` (one per link) as the endpoint will,
    /// and against the owning core's backend (`max_udp` and `links` per
    /// core); returns the owning core.
    pub(super) fn check_new(
        &self,
        p: &PeerConfig,
        addrs: &[SocketAddr],
        max_udp: &[usize],
        links: &[usize],
    ) -> Result<usize, PeerError> {
        if !p.node.is_valid() || p.node == self.node {
            return Err(
                ConfigError::Invalid("peer node id must be non-zero and not our own").into(),
            );
        }
        if self.peers.contains_key(&p.node) {
            return Err(ConfigError::DuplicatePeer(p.node).into());
        }
        let core = icx_core::owner_core(p.node, self.cores);
        p.check_mtu()?;
        check_peer_links(p, addrs, max_udp[core], links[core])?;
        Ok(core)
    }

    /// Checks a new MTU for `node`; returns the owning core.
    pub(super) fn check_mtu(
        &self,
        node: NodeId,
        mtu: usize,
        max_udp: &[usize],
    ) -> Result<usize, PeerError> {
        let ipv6 = self
            .peers
            .get(&node)
            .ok_or(ConfigError::UnknownPeer(node))?
            .v6[0];
        let p = PeerConfig {
            ipv6,
            ..PeerConfig::new(node, mtu)
        };
        let core = icx_core::owner_core(node, self.cores);
        p.check_mtu()?;
        check_backend_mtu(&p, max_udp[core])?;
        Ok(core)
    }

    /// The owning core of a known peer.
    pub(super) fn check_known(&self, node: NodeId) -> Result<usize, PeerError> {
        self.owner(node)
            .ok_or_else(|| ConfigError::UnknownPeer(node).into())
    }

    /// Link `link`'s IP version, if `node` is a peer with that link.
    pub(super) fn ipv6(&self, node: NodeId, link: u8) -> Option<bool> {
        self.peers.get(&node)?.link(link)
    }

    /// A peer configured at start: no answer comes for it.
    pub(super) fn insert_configured(&mut self, p: &PeerConfig) -> bool {
        self.peers.insert(p.node, Families::of(p)).is_none()
    }

    /// An add or a removal was queued to the owning core.
    fn queued(&mut self, node: NodeId, added: Option<&PeerConfig>) {
        match added {
            Some(p) => self.peers.insert(node, Families::of(p)),
            None => self.peers.remove(&node),
        };
        *self.unanswered.entry(node).or_insert(0) += 1;
    }

    /// Follows an event leaving a core. Each queued add or removal is
    /// answered by one `PeerAdded` or `PeerRemoved` for its node; while
    /// some are outstanding, the set already holds the outcome the
    /// application asked for, and only the last answer may correct it (an
    /// add the core refused). With none outstanding, the event is the
    /// core's own news: a peer learnt through `accept_unknown`.
    pub(super) fn note(&mut self, ev: &NodeEvent) {
        let (node, added) = match ev.transport() {
            Some(Event::PeerAdded { peer }) => (*peer, true),
            Some(Event::PeerRemoved { peer }) => (*peer, false),
            _ => return,
        };
        if let Some(n) = self.unanswered.get_mut(&node) {
            *n -= 1;
            if *n > 0 {
                return;
            }
            self.unanswered.remove(&node);
        }
        if added {
            self.peers
                .entry(node)
                .or_insert(Families::one(self.learnt_ipv6));
        } else {
            self.peers.remove(&node);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }
}

impl Runtime {
    /// Adds a peer at run time, served by core
    /// [`owner_core`](super::owner_core)`(peer.node, cores)`. Checked at once
    /// (see [`PeerError`]); answered by `PeerAdded` from the owning core.
    /// [`send`](Runtime::send) to the peer is accepted from this call on.
    /// A one-link peer: [`add_peer_links`](Self::add_peer_links) with one
    /// address.
    pub fn add_peer(&mut self, peer: PeerConfig, addr: SocketAddr) -> Result<(), PeerError> {
        self.add_peer_links(peer, &[addr])
    }

    /// Adds a peer reached over several links ([`PeerConfig::with_links`]),
    /// `addrs[i]` being its address on link `i`; otherwise as
    /// [`add_peer`](Self::add_peer). Refused at once unless there is one
    /// address per link, each of its link's IP version, the owning core's
    /// backend has at least as many links and carries every link's MTU.
    pub fn add_peer_links(
        &mut self,
        peer: PeerConfig,
        addrs: &[SocketAddr],
    ) -> Result<(), PeerError> {
        if self.stopped {
            return Err(PeerError::ShutDown);
        }
        let core = self
            .members
            .check_new(&peer, addrs, &self.max_udp, &self.backend_links)?;
        let links =
            crate::LinkAddrs::new(addrs).ok_or(ConfigError::Invalid("a peer has 1 to 4 links"))?;
        self.command(core, Command::AddPeer(Box::new((peer, links))))
            .map_err(|_| PeerError::Backpressure)?;
        self.members.queued(peer.node, Some(&peer));
        Ok(())
    }

    /// Removes a peer: its session goes, every message still queued to it
    /// is reported `Lost { reason: PeerRemoved }` with its tag, then
    /// `PeerRemoved`. Sends to it are refused from this call on. With
    /// `accept_unknown`, a later frame from it makes it a peer again.
    pub fn remove_peer(&mut self, node: NodeId) -> Result<(), PeerError> {
        if self.stopped {
            return Err(PeerError::ShutDown);
        }
        let core = self.members.check_known(node)?;
        self.command(core, Command::RemovePeer(node))
            .map_err(|_| PeerError::Backpressure)?;
        self.members.queued(node, None);
        Ok(())
    }

    /// Re-addresses a peer's link 0 (it came back on another host or
    /// port): frames the owning core sends after taking the command go to
    /// `addr`.
    pub fn set_peer_addr(&mut self, node: NodeId, addr: SocketAddr) -> Result<(), PeerError> {
        self.set_peer_link_addr(node, 0, addr)
    }

    /// Re-addresses one of a peer's links: frames the owning core sends by
    /// that link after taking the command go to `addr`.
    pub fn set_peer_link_addr(
        &mut self,
        node: NodeId,
        link: u8,
        addr: SocketAddr,
    ) -> Result<(), PeerError> {
        if self.stopped {
            return Err(PeerError::ShutDown);
        }
        let core = self.members.check_known(node)?;
        match self.members.ipv6(node, link) {
            None => return Err(ConfigError::Invalid("the peer has no such link").into()),
            Some(v6) if v6 != addr.is_ipv6() => {
                return Err(
                    ConfigError::Invalid("peer address family differs from its path's").into(),
                )
            }
            Some(_) => {}
        }
        self.command(core, Command::SetPeerAddr(node, link, addr))
            .map_err(|_| PeerError::Backpressure)
    }

    /// Changes a peer's path MTU. Messages already queued keep their
    /// fragment size; the path is probed again, so `PathVerified` (or
    /// `PathMtuMismatch`) for the new MTU follows.
    pub fn set_peer_mtu(&mut self, node: NodeId, mtu: usize) -> Result<(), PeerError> {
        if self.stopped {
            return Err(PeerError::ShutDown);
        }
        let core = self.members.check_mtu(node, mtu, &self.max_udp)?;
        self.command(core, Command::SetPeerMtu(node, mtu))
            .map_err(|_| PeerError::Backpressure)
    }

    /// Replaces the keys every core seals and checks frames with (a step of
    /// a key rollover). Only a runtime started with keys can change them.
    pub fn set_keyring(&mut self, ring: icx_wire::Keyring) -> Result<(), PeerError> {
        if self.stopped {
            return Err(PeerError::ShutDown);
        }
        if !self.authenticated {
            return Err(ConfigError::Invalid(
                "frames are not authenticated: the runtime was started without a key",
            )
            .into());
        }
        for core in 0..self.cores() {
            self.command(core, Command::SetKeyring(Box::new(ring.clone())))
                .map_err(|_| PeerError::Backpressure)?;
        }
        Ok(())
    }

    /// The core that serves `peer`, if it is one.
    pub fn owner(&self, peer: NodeId) -> Option<usize> {
        self.members.owner(peer)
    }

    /// Every peer as the application side knows it: configured, added,
    /// and learnt through `accept_unknown` up to the events taken so far.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter()
    }
}
