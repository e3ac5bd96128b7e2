//! What a backend with several links keeps per link, shared by this
//! crate's and io_uring's backends.

use icx_core::{TxBatch, MAX_LINKS};

/// Per-link datagram counts of a multi-link backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Frames for a link the backend does not have, dropped.
    pub unknown_link: u64,
    /// Datagrams each link sent and handed over.
    pub sent: [u64; MAX_LINKS],
    pub received: [u64; MAX_LINKS],
}

impl LinkCounts {
    /// Adds `n` datagrams sent by `link` (ignored past [`MAX_LINKS`]).
    pub fn add_sent(&mut self, link: usize, n: u64) {
        if let Some(c) = self.sent.get_mut(link) {
            *c += n;
        }
    }

    /// Drops the front frame of `batch`, whose link the backend (`who`, of
    /// `links` links) does not have: counted, logged the first time
    /// (`warned`), never a panic.
    pub fn drop_unknown_link(
        &mut self,
        batch: &mut TxBatch,
        links: usize,
        warned: &mut bool,
        who: &str,
    ) {
        let Some(f) = batch.pop_front() else { return };
        self.unknown_link += 1;
        if !std::mem::replace(warned, true) {
            tracing::warn!(
                link = f.link, links, dst = %f.dst,
                "{who}: frame for a link this backend does not have, dropped; \
                 further ones are only counted"
            );
        }
    }

    /// Adds `n` datagrams received by `link`.
    pub fn add_received(&mut self, link: usize, n: u64) {
        if let Some(c) = self.received.get_mut(link) {
            *c += n;
        }
    }
}

/// Which link's normal socket a `recv` reads first: a different one each
/// call, so one busy link cannot starve the others.
#[derive(Clone, Copy, Debug, Default)]
pub struct RxRotation {
    next: usize,
}

impl RxRotation {
    /// The links `0..n` in this call's order, and the next call starts one on.
    pub fn order(&mut self, n: usize) -> impl Iterator<Item = usize> {
        let first = if n == 0 { 0 } else { self.next % n };
        self.next = first + 1;
        (0..n).map(move |i| (first + i) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_visits_every_link_once_and_moves_on() {
        let mut r = RxRotation::default();
        assert_eq!(r.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(r.order(3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(r.order(3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(r.order(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(r.order(0).count(), 0);
        let mut c = LinkCounts::default();
        c.add_sent(1, 2);
        c.add_received(9, 1);
        assert_eq!(c.sent, [0, 2, 0, 0]);
        assert_eq!(c.received, [0; MAX_LINKS]);
    }
}
