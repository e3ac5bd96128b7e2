//! Send completions and zero-copy notifications: what the kernel did with
//! each slab slot, the counters, and the fallbacks its refusals trigger.

use super::*;

/// IORING_SEND_ZC_REPORT_USAGE (6.2): the notification says whether the
/// kernel had to copy after all.
pub(super) const ZC_REPORT_USAGE: u16 = 8;

/// IORING_NOTIF_USAGE_ZC_COPIED, in the notification's result.
pub(super) const ZC_COPIED: u32 = 1 << 31;

/// Fragments one skb holds (MAX_SKB_FRAGS, 17 by default): a zero-copy
/// send maps each page its iovecs touch into one, and fails with EMSGSIZE
/// beyond that. A GSO train of header/payload pairs spans two or more per
/// segment, so only short trains and single jumbo frames go zero-copy.
pub(super) const ZC_MAX_PAGES: u32 = 17;

/// Consecutive copied zero-copy sends after which `ZeroCopy::Auto` gives up.
pub(super) const ZC_AUTO_GIVE_UP: u32 = 64;

pub(super) struct ZcState {
    /// Zero-copy in use now.
    pub(super) on: bool,
    /// `ZeroCopy::Auto`: may be turned off at run time.
    pub(super) auto: bool,
    pub(super) threshold: usize,
    pub(super) copied_run: u32,
    /// Pages a zero-copy send may span; lowered if the kernel refuses.
    pub(super) max_pages: u32,
}

pub(super) fn note_send_error(
    stats: &mut UringStats,
    warned: &mut Warned,
    src: SocketAddr,
    dst: Option<SocketAddr>,
    n: u64,
    errno: i32,
) {
    if errno == libc::EMSGSIZE {
        stats.emsgsize += n;
        if !std::mem::replace(&mut warned.emsgsize, true) {
            tracing::warn!(
                %src, ?dst, datagrams = n,
                "io_uring: datagram larger than the path MTU refused (DF set, never \
                 fragmented) and dropped; check the MTU configured for this peer. \
                 Further ones are only counted"
            );
        }
    } else {
        stats.send_errors += n;
        if !std::mem::replace(&mut warned.send_error, true) {
            tracing::warn!(
                %src, ?dst, datagrams = n, error = %io::Error::from_raw_os_error(errno),
                "io_uring: send failed, datagrams dropped; further send errors are only counted"
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn complete_tx(
    tx: &mut TxSlab,
    zc: &mut ZcState,
    stats: &mut UringStats,
    warned: &mut Warned,
    features: &mut Features,
    src: SocketAddr,
    si: u32,
    res: i32,
    flags: u32,
) {
    let Some(slot) = tx.slot_mut(si) else { return };
    if cqueue::notif(flags) {
        slot.notif_pending = false;
        if res as u32 & ZC_COPIED != 0 {
            stats.zc_copied += 1;
            zc.copied_run += 1;
            if zc.auto && zc.on && zc.copied_run >= ZC_AUTO_GIVE_UP {
                zc.on = false;
                features.zero_copy = false;
                tracing::info!(
                    copied = zc.copied_run,
                    "io_uring: the kernel copied every zero-copy send (loopback, or a device \
                     without scatter-gather): SEND_ZC turned off, sends copy"
                );
            }
        } else {
            zc.copied_run = 0;
        }
    } else {
        slot.cqe_pending = false;
        if slot.zc && !cqueue::more(flags) {
            slot.notif_pending = false;
        }
        let n = u64::from(slot.n_frames);
        if res >= 0 {
            stats.sent += n;
            stats.links.add_sent(usize::from(slot.link), n);
            if slot.gso {
                stats.gso_sends += 1;
                stats.gso_segments += n;
            }
            if slot.zc {
                stats.zc_sends += 1;
            }
        } else {
            let errno = -res;
            let (was_gso, was_zc, pages) = (slot.gso, slot.zc, slot.pages);
            if was_zc && errno == libc::EMSGSIZE {
                // Not the path MTU: more pages than one skb's fragments.
                stats.send_errors += n;
                if zc.max_pages > 4 {
                    zc.max_pages = (pages / 2).clamp(4, zc.max_pages - 1);
                    tracing::info!(pages, limit = zc.max_pages, "io_uring: zero-copy send spanning too many pages refused (EMSGSIZE): lowering the zero-copy page limit");
                }
            } else {
                note_send_error(stats, warned, src, None, n, errno);
            }
            if was_zc && errno == libc::EINVAL && zc.on && stats.zc_sends == 0 {
                zc.on = false;
                features.zero_copy = false;
                tracing::info!("io_uring: SENDMSG_ZC refused (EINVAL; kernel older than 6.2 lacks usage reports): copying sends");
            } else if was_gso
                && matches!(errno, libc::EINVAL | libc::EIO | libc::EOPNOTSUPP)
                && features.gso
            {
                features.gso = false;
                tracing::info!(error = %io::Error::from_raw_os_error(errno), "io_uring: GSO send refused by the kernel or device: one datagram per frame from now on");
            }
        }
    }
    tx.release_if_done(si);
}
