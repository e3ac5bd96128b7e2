//! [`DpdkLinks`]: a node's redundant interconnect over DPDK, one ethdev port
//! per link (a [`DpdkBackend`] each, with its own address, MAC, neighbour
//! table and mbuf pool), as one [`Backend`] with `link_count() > 1`, the
//! DPDK counterpart of the io_uring backend's socket per link.
//!
//! - **Transmit**: each run of frames for one link at the front of the
//!   caller's batch is sent by that link's backend in place (no frame is
//!   moved); what its queue refuses stays at the front (backpressure), so a
//!   full port holds the frames behind it, as a full socket does.
//! - **Receive**: each call starts at the link after the one it started at
//!   last, so a busy port cannot starve the others; each datagram is handed
//!   over tagged with its link.
//! - **Waiting**: one poll loop over every link's rx queue (the links'
//!   [`PollWait`] of link 0), woken by this set's own waker.

use crate::backend::{DpdkBackend, PollWait, Waker};
use crate::config::DpdkConfig;
use crate::error::DpdkError;
use icx_core::{Backend, Capabilities, RxDatagram, TxBatch, Wake, MAX_LINKS};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Several DPDK ports, link k on the k-th, under one [`Backend`].
pub struct DpdkLinks {
    links: Vec<DpdkBackend>,
    next_rx: usize,
    poll: PollWait,
    waker: Arc<Waker>,
    /// Frames for a link this set does not have (counted and dropped).
    no_link: u64,
}

impl std::fmt::Debug for DpdkLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkLinks")
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl DpdkLinks {
    /// Opens one single-queue port per config, link 0 first. Every config
    /// carries the same EAL arguments (they initialise the EAL once, for
    /// every port: one `--vdev` or `-a` per port) and names its own port
    /// ([`PortSelect::Name`](crate::PortSelect::Name), `Id` or `Nth`) with
    /// its own address. A failure closes the ports already opened.
    pub fn open(cfgs: Vec<DpdkConfig>) -> Result<Self, DpdkError> {
        if cfgs.is_empty() || cfgs.len() > MAX_LINKS {
            return Err(DpdkError::Config(format!(
                "{} links asked for: a node has 1 to {MAX_LINKS}",
                cfgs.len()
            )));
        }
        if cfgs.len() > 1 {
            if let Some(i) = cfgs.iter().position(|c| c.port == crate::PortSelect::Only) {
                return Err(DpdkError::Config(format!(
                    "link {i}: with several links each names its port (by name, id or position), not \"the only one\""
                )));
            }
        }
        for (i, a) in cfgs.iter().enumerate() {
            if let Some(j) = cfgs[..i].iter().position(|b| b.addr.ip() == a.addr.ip()) {
                return Err(DpdkError::Config(format!(
                    "links {j} and {i} have the same address {}: each link is its own network",
                    a.addr.ip()
                )));
            }
        }
        let poll = PollWait::new(&cfgs[0]);
        let mut links: Vec<DpdkBackend> = Vec::with_capacity(cfgs.len());
        for (i, cfg) in cfgs.into_iter().enumerate() {
            let b = DpdkBackend::open(cfg).map_err(|e| e.for_link(i))?;
            links.push(b);
        }
        Ok(DpdkLinks {
            links,
            next_rx: 0,
            poll,
            waker: Arc::new(Waker::default()),
            no_link: 0,
        })
    }

    /// Each link's backend, link 0 first: its port, counters and
    /// neighbour table.
    pub fn links(&self) -> &[DpdkBackend] {
        &self.links
    }

    /// Frames offered for a link this set does not have, dropped.
    pub fn frames_without_link(&self) -> u64 {
        self.no_link
    }
}

impl Backend for DpdkLinks {
    /// The largest payload of any link (the transport sizes each link's
    /// frames by that link's own MTU) and the smallest batch.
    fn capabilities(&self) -> Capabilities {
        let mut c = self.links[0].capabilities();
        for l in &self.links[1..] {
            let o = l.capabilities();
            c.max_udp_payload = c.max_udp_payload.max(o.max_udp_payload);
            c.max_batch = c.max_batch.min(o.max_batch);
        }
        c
    }

    fn local_addr(&self) -> SocketAddr {
        self.links[0].local_addr()
    }

    fn link_count(&self) -> usize {
        self.links.len()
    }

    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        self.links.get(usize::from(link)).map(Backend::local_addr)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        let mut taken = 0;
        while let Some(link) = batch.front().map(|f| f.link) {
            let l = usize::from(link);
            if l >= self.links.len() {
                batch.pop_front();
                self.no_link += 1;
                taken += 1;
                continue;
            }
            let (sent, considered) = self.links[l].send_run(batch, Some(link));
            taken += sent;
            if sent < considered {
                break;
            }
        }
        Ok(taken)
    }

    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let n = self.links.len();
        let first = self.next_rx;
        self.next_rx = (first + 1) % n;
        let mut got = 0;
        for i in 0..n {
            if got >= max {
                break;
            }
            let k = (first + i) % n;
            got += self.links[k].recv(max - got, &mut |d| f(RxDatagram { link: k as u8, ..d }))?;
        }
        Ok(got)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let links = &mut self.links;
        self.poll.wait(&self.waker, timeout, || {
            // Every queue polled each round: a burst waiting on one link
            // must not hide one waiting on the next.
            let mut ready = false;
            for l in links.iter_mut() {
                ready |= l.poll_rx() > 0;
            }
            ready
        });
        Ok(())
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        Some(self.waker.clone())
    }
}
