//! The syscall scratch of a socket: `sendmmsg` and `recvmmsg` headers,
//! iovecs and addresses, allocated once at bind.

use crate::sys::{empty_mmsghdr, empty_storage, encode_addr, route_addr};
use icx_core::{Lane, TxBatch};

/// Scratch for `sendmmsg`: one header, two iovecs (icx header, payload slice)
/// and one address per datagram, allocated once at bind.
pub(crate) struct TxArrays {
    pub(crate) msgs: Vec<libc::mmsghdr>,
    pub(crate) iovs: Vec<[libc::iovec; 2]>,
    pub(crate) addrs: Vec<libc::sockaddr_storage>,
}

/// Scratch for `recvmmsg`: `max_batch` slots of `slot` bytes in one
/// allocation, with their headers, iovecs and source addresses.
pub(crate) struct RxArrays {
    pub(crate) msgs: Vec<libc::mmsghdr>,
    pub(crate) iovs: Vec<libc::iovec>,
    pub(crate) addrs: Vec<libc::sockaddr_storage>,
    pub(crate) buf: Box<[u8]>,
    pub(crate) slot: usize,
}

// SAFETY: the raw pointers inside these arrays are scratch. Every one is
// rewritten just before the syscall that reads it and is never dereferenced
// by Rust code; they point only into the arrays' own heap memory or into
// frames borrowed for the length of one `send` call. Moving the arrays to
// another thread therefore moves nothing that is shared.
unsafe impl Send for TxArrays {}
// SAFETY: as for TxArrays.
unsafe impl Send for RxArrays {}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl TxArrays {
    pub(crate) fn new(n: usize) -> Self {
        TxArrays {
            msgs: (0..n).map(|_| empty_mmsghdr()).collect(),
            iovs: vec![[EMPTY_IOV; 2]; n],
            addrs: (0..n).map(|_| empty_storage()).collect(),
        }
    }

    /// Describes up to `want` frames from the front of `batch`, stopping
    /// before the first of another link than `link`, the first whose
    /// address this socket's family cannot reach, or (with `lane`) the
    /// first of another lane. The iovecs point into
    /// the frames: no byte is copied in user space.
    pub(crate) fn prepare(
        &mut self,
        batch: &TxBatch,
        want: usize,
        v6: bool,
        link: u8,
        lane: Option<Lane>,
    ) -> usize {
        let mut n = 0;
        for frame in batch.iter().take(want.min(self.msgs.len())) {
            if frame.link != link || lane.is_some_and(|l| l != frame.lane) {
                break;
            }
            let Some(dst) = route_addr(frame.dst, v6) else {
                break;
            };
            let namelen = encode_addr(dst, &mut self.addrs[n]);
            let (h, p) = (frame.header.as_slice(), frame.payload.as_slice());
            // The kernel only reads through these; `*mut` is iovec's type.
            self.iovs[n] = [
                libc::iovec {
                    iov_base: h.as_ptr() as *mut libc::c_void,
                    iov_len: h.len(),
                },
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                },
            ];
            let m = &mut self.msgs[n];
            m.msg_len = 0;
            m.msg_hdr.msg_namelen = namelen;
            m.msg_hdr.msg_iovlen = if p.is_empty() { 1 } else { 2 };
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            n += 1;
        }
        // Pointers last, from one base each, so no later borrow of an
        // element can invalidate them.
        let (addrs, iovs) = (self.addrs.as_mut_ptr(), self.iovs.as_mut_ptr());
        for (i, m) in self.msgs[..n].iter_mut().enumerate() {
            m.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            m.msg_hdr.msg_iov = iovs.wrapping_add(i).cast();
        }
        n
    }
}

impl RxArrays {
    pub(crate) fn new(n: usize, slot: usize) -> Self {
        RxArrays {
            msgs: (0..n).map(|_| empty_mmsghdr()).collect(),
            iovs: vec![EMPTY_IOV; n],
            addrs: (0..n).map(|_| empty_storage()).collect(),
            // Zeroed, so the allocator hands out untouched pages: a slot
            // costs memory only once a datagram that long has landed in it.
            buf: vec![0u8; n * slot].into_boxed_slice(),
            slot,
        }
    }

    /// Points the first `n` headers at their slots and resets what the
    /// kernel overwrites (address length, flags).
    pub(crate) fn prepare(&mut self, n: usize) {
        let (buf, addrs, iovs) = (
            self.buf.as_mut_ptr(),
            self.addrs.as_mut_ptr(),
            self.iovs.as_mut_ptr(),
        );
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: buf.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            };
        }
        for (i, m) in self.msgs[..n].iter_mut().enumerate() {
            m.msg_len = 0;
            m.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iovs.wrapping_add(i);
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
        }
    }
}
