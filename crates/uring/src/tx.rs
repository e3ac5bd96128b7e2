//! The in-flight send slab: every send (one frame, or one GSO train) owns a
//! slot holding its msghdr, iovecs, destination and UDP_SEGMENT cmsg, and
//! its frames (a copy of each header, and the payload with its reference on
//! the block), until its completion (and, for SEND_ZC, its notification)
//! arrives. All of it is allocated once; slots and frame cells never move,
//! so the pointers handed to the kernel stay valid. Frames are not moved in
//! whole: only the header's bytes are copied and the payload is taken, which
//! costs less than moving the inline header buffer twice.

use icx_core::{HeaderBuf, Payload, TxFrame};
use icx_udp::sys::{empty_storage, encode_addr};
use std::net::SocketAddr;

/// The kernel's limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS).
pub(crate) const MAX_SEGS: usize = 64;

const SOL_UDP: libc::c_int = 17;
const PAGE: usize = 4096;
pub(crate) const UDP_SEGMENT: libc::c_int = 103;

/// A control buffer holding one UDP_SEGMENT cmsg, aligned for cmsghdr.
#[repr(C)]
#[derive(Clone, Copy)]
struct SegCmsg {
    hdr: libc::cmsghdr,
    /// CMSG_DATA: on Linux it starts right after the (8-byte aligned) header.
    seg: u16,
    _pad: [u8; 6],
}

// SAFETY: CMSG_LEN/CMSG_SPACE only compute sizes from a constant.
const SEG_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(2) } as usize;
// SAFETY: as above.
const SEG_CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
const _: () = assert!(std::mem::size_of::<SegCmsg>() >= SEG_CMSG_SPACE);
const _: () = assert!(std::mem::offset_of!(SegCmsg, seg) == SEG_CMSG_LEN - 2);

pub(crate) struct Slot {
    pub(crate) msg: libc::msghdr,
    iov: [libc::iovec; 2 * MAX_SEGS],
    addr: libc::sockaddr_storage,
    cmsg: SegCmsg,
    frames: [u32; MAX_SEGS],
    pub(crate) n_frames: u16,
    pub(crate) bytes: u32,
    /// Pages the iovecs span: a zero-copy send needs one skb fragment each.
    pub(crate) pages: u32,
    pub(crate) cqe_pending: bool,
    pub(crate) notif_pending: bool,
    pub(crate) zc: bool,
    pub(crate) gso: bool,
    /// The link it was sent by.
    pub(crate) link: u8,
}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl Slot {
    fn new() -> Self {
        Slot {
            // SAFETY: msghdr is plain old data; all-zeroes (null pointers,
            // zero lengths) is a valid value.
            msg: unsafe { std::mem::zeroed() },
            iov: [EMPTY_IOV; 2 * MAX_SEGS],
            addr: empty_storage(),
            cmsg: SegCmsg {
                // SAFETY: cmsghdr is plain old data; zeroes are valid.
                hdr: unsafe { std::mem::zeroed() },
                seg: 0,
                _pad: [0; 6],
            },
            frames: [0; MAX_SEGS],
            n_frames: 0,
            bytes: 0,
            pages: 0,
            cqe_pending: false,
            notif_pending: false,
            zc: false,
            gso: false,
            link: 0,
        }
    }
}

pub(crate) struct TxSlab {
    slots: Box<[Slot]>,
    free_slots: Vec<u32>,
    headers: Box<[HeaderBuf]>,
    payloads: Box<[Payload]>,
    free_frames: Vec<u32>,
}

// SAFETY: the raw pointers in the slots point only into the slab's own heap
// memory (which moves with it) and into frames it owns; nothing is shared
// with another thread. The kernel may read them while a send is in flight,
// which the backend accounts for (it drains or leaks on drop).
unsafe impl Send for TxSlab {}

impl TxSlab {
    pub(crate) fn new(slots: usize, frames: usize) -> Self {
        let slots = slots.clamp(1, u32::MAX as usize);
        let frames = frames.max(MAX_SEGS);
        TxSlab {
            slots: (0..slots).map(|_| Slot::new()).collect(),
            free_slots: (0..slots as u32).rev().collect(),
            headers: (0..frames).map(|_| HeaderBuf::new()).collect(),
            payloads: (0..frames).map(|_| Payload::EMPTY).collect(),
            free_frames: (0..frames as u32).rev().collect(),
        }
    }

    /// A send of `n` frames fits now.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        !self.free_slots.is_empty() && self.free_frames.len() >= n
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Takes `frames` into a free slot (header bytes copied, payload taken,
    /// leaving the frames empty for the caller to drop) and lays out its
    /// msghdr: one (header, payload) iovec pair per frame, the destination,
    /// and a UDP_SEGMENT cmsg of `seg` bytes when `gso`. Returns the slot
    /// index. The caller has checked `has_room(frames.len())`.
    pub(crate) fn fill<'a>(
        &mut self,
        dst: SocketAddr,
        frames: impl Iterator<Item = &'a mut TxFrame>,
        gso: Option<u16>,
    ) -> u32 {
        let si = self.free_slots.pop().expect("caller checked has_room");
        let slot = &mut self.slots[si as usize];
        let (mut n, mut niov, mut bytes, mut pages) = (0usize, 0usize, 0usize, 0usize);
        for f in frames {
            let fi = self.free_frames.pop().expect("caller checked has_room");
            let header = &mut self.headers[fi as usize];
            header.copy_from(&f.header);
            let payload = &mut self.payloads[fi as usize];
            *payload = std::mem::take(&mut f.payload);
            let (h, p) = (header.as_slice(), payload.as_slice());
            bytes += h.len() + p.len();
            // The kernel only reads through these; `*mut` is iovec's type.
            // The frame now sits in the slab and does not move until freed.
            for part in [h, p] {
                if !part.is_empty() {
                    let start = part.as_ptr() as usize;
                    pages += (start + part.len() - 1) / PAGE - start / PAGE + 1;
                    slot.iov[niov] = libc::iovec {
                        iov_base: part.as_ptr() as *mut libc::c_void,
                        iov_len: part.len(),
                    };
                    niov += 1;
                }
            }
            slot.frames[n] = fi;
            n += 1;
        }
        let namelen = encode_addr(dst, &mut slot.addr);
        slot.msg.msg_name = (&mut slot.addr as *mut libc::sockaddr_storage).cast();
        slot.msg.msg_namelen = namelen;
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = niov as _;
        slot.msg.msg_flags = 0;
        match gso {
            Some(seg) => {
                slot.cmsg.hdr.cmsg_len = SEG_CMSG_LEN as _;
                slot.cmsg.hdr.cmsg_level = SOL_UDP;
                slot.cmsg.hdr.cmsg_type = UDP_SEGMENT;
                slot.cmsg.seg = seg;
                slot.msg.msg_control = (&mut slot.cmsg as *mut SegCmsg).cast();
                slot.msg.msg_controllen = SEG_CMSG_SPACE as _;
            }
            None => {
                slot.msg.msg_control = std::ptr::null_mut();
                slot.msg.msg_controllen = 0;
            }
        }
        slot.n_frames = n as u16;
        slot.bytes = bytes as u32;
        slot.pages = pages as u32;
        slot.gso = gso.is_some();
        slot.zc = false;
        slot.cqe_pending = true;
        slot.notif_pending = false;
        si
    }

    pub(crate) fn slot_mut(&mut self, si: u32) -> Option<&mut Slot> {
        self.slots.get_mut(si as usize)
    }

    /// Releases the slot's frames (dropping their buffer references) once
    /// nothing more is expected from the kernel for it.
    pub(crate) fn release_if_done(&mut self, si: u32) -> bool {
        let slot = &mut self.slots[si as usize];
        if slot.cqe_pending || slot.notif_pending || slot.n_frames == 0 {
            return false;
        }
        for &fi in &slot.frames[..slot.n_frames as usize] {
            self.payloads[fi as usize] = Payload::EMPTY;
            self.free_frames.push(fi);
        }
        slot.n_frames = 0;
        slot.msg.msg_iovlen = 0;
        self.free_slots.push(si);
        true
    }
}
