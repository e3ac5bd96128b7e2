//! The receive path: per lane (a link's normal or urgent socket), a
//! multishot RECVMSG over a provided-buffer ring or single-shot slots,
//! completions set aside per lane, and GRO buffers split into datagrams.

use super::*;

/// Name room per received message: a sockaddr_in6 (an IPv4 peer's
/// sockaddr_in is shorter).
pub(super) const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// Control room per received message: the UDP_GRO cmsg needs 20 bytes.
pub(super) const CTRL_LEN: usize = 64;

/// struct io_uring_recvmsg_out, which a multishot recvmsg writes first.
pub(super) const RECVMSG_OUT_LEN: usize = 16;

/// Single-shot receives kept posted.
pub(super) const MAX_RX_SLOTS: usize = 128;

/// Budget of consecutive failed multishot re-arms before recv stops re-arming
/// within one call (the next call tries again).
pub(super) const MAX_REARMS_PER_CALL: usize = 4;

/// A completion set aside for `recv` while `send` looked for its own.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cqe {
    pub(super) ud: u64,
    pub(super) res: i32,
    pub(super) flags: u32,
}

/// Where a received message lies while its datagrams are handed out.
#[derive(Clone, Copy, Debug)]
pub(super) enum Token {
    Buf(u16),
    Slot(u32),
}

/// A received buffer being split into datagrams across `recv` calls.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cursor {
    pub(super) token: Token,
    pub(super) src: SocketAddr,
    /// Payload start and length within the buffer.
    pub(super) off: usize,
    pub(super) len: usize,
    /// GRO segment size (0: one datagram).
    pub(super) seg: usize,
    pub(super) next: usize,
    pub(super) handed_any: bool,
}

/// One posted single-shot receive.
pub(super) struct RxSlot {
    pub(super) msg: libc::msghdr,
    pub(super) iov: libc::iovec,
    pub(super) addr: libc::sockaddr_storage,
    pub(super) ctrl: [u64; CTRL_LEN / 8],
    pub(super) posted: bool,
}

pub(super) enum Rx {
    Multi {
        ring: BufRing,
        /// The buffer group the ring is registered as.
        bgid: u16,
        /// Template for RecvMsgMulti: only name and control lengths matter.
        msg: Box<libc::msghdr>,
        armed: bool,
        /// Ever delivered anything: an EINVAL before that means no
        /// multishot support after all.
        worked: bool,
    },
    Single {
        bufs: Buffers,
        slots: Box<[RxSlot]>,
    },
}

impl Rx {
    pub(super) fn armed(&self) -> bool {
        match self {
            Rx::Multi { armed, .. } => *armed,
            Rx::Single { slots, .. } => slots.iter().any(|s| s.posted),
        }
    }

    pub(super) fn is_single(&self) -> bool {
        matches!(self, Rx::Single { .. })
    }
}

// SAFETY: the raw pointers inside Rx (msghdr templates, iovecs, buffer
// addresses) point only into memory owned by the Rx value itself, which
// moves with it; the kernel reaches it through the ring, which moves along.
unsafe impl Send for Rx {}

/// One socket's receive side: its receives, the completions reaped for
/// it, and the buffer being handed out.
pub(super) struct RxLane {
    pub(super) socket: OwnedFd,
    pub(super) rx: Rx,
    /// Receive completions set aside for `recv`.
    pub(super) stash: VecDeque<Cqe>,
    pub(super) cursor: Option<Cursor>,
    /// Receive buffers (their count when single-shot).
    pub(super) count: usize,
    /// The link and lane whose socket it is.
    pub(super) link: u8,
    pub(super) lane: Lane,
}

/// The UDP_GRO segment size in a control block, 0 when there is none.
pub(super) fn gro_segment(ctrl: &[u8]) -> usize {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let mut off = 0;
    while off + HDR <= ctrl.len() {
        let len_bytes = &ctrl[off..off + std::mem::size_of::<usize>()];
        let len = usize::from_ne_bytes(len_bytes.try_into().unwrap_or([0; ALIGN]));
        let lvl = i32::from_ne_bytes(
            ctrl[off + ALIGN..off + ALIGN + 4]
                .try_into()
                .unwrap_or([0; 4]),
        );
        let ty = i32::from_ne_bytes(
            ctrl[off + ALIGN + 4..off + ALIGN + 8]
                .try_into()
                .unwrap_or([0; 4]),
        );
        if len < HDR || off + len > ctrl.len() {
            break;
        }
        if lvl == setup::sol_udp() && ty == setup::UDP_GRO && len >= HDR + 2 {
            let d = &ctrl[off + HDR..off + len];
            // The kernel writes an int; older ones a u16. Both are the size.
            return if d.len() >= 4 {
                i32::from_ne_bytes(d[..4].try_into().unwrap_or([0; 4])).max(0) as usize
            } else {
                u16::from_ne_bytes(d[..2].try_into().unwrap_or([0; 2])) as usize
            };
        }
        off += len.div_ceil(ALIGN) * ALIGN;
    }
    0
}

impl UringBackend {
    /// A lane's receive side: multishot over a provided-buffer ring of
    /// group `bgid` when `multishot` (cleared, logged, if the kernel refuses
    /// the ring), else single-shot slots.
    pub(super) fn lane_rx(
        ring: &IoUring,
        multishot: &mut bool,
        count: usize,
        payload: usize,
        bgid: u16,
    ) -> Result<Rx, OpenError> {
        if *multishot {
            let buf_size = RECVMSG_OUT_LEN + NAME_LEN + CTRL_LEN + payload;
            let ring_bufs = Buffers::new(count, buf_size)
                .and_then(BufRing::new)
                .map_err(OpenError::Other)?;
            match ring_bufs.register(&ring.submitter(), bgid) {
                Ok(()) => {
                    // SAFETY: msghdr is plain old data; zeroes are valid.
                    let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
                    msg.msg_namelen = NAME_LEN as _;
                    msg.msg_controllen = CTRL_LEN as _;
                    return Ok(Rx::Multi {
                        ring: ring_bufs,
                        bgid,
                        msg,
                        armed: false,
                        worked: false,
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "io_uring: provided-buffer ring refused (kernel older than 5.19): single-shot receives");
                    *multishot = false;
                }
            }
        }
        Self::single_rx(count, payload).map_err(OpenError::Other)
    }

    pub(super) fn single_rx(count: usize, payload: usize) -> io::Result<Rx> {
        let n = count.min(MAX_RX_SLOTS);
        let bufs = Buffers::new(n, payload)?;
        let slots = (0..n)
            .map(|_| RxSlot {
                // SAFETY: msghdr is plain old data; zeroes are valid.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                addr: empty_storage(),
                ctrl: [0; CTRL_LEN / 8],
                posted: false,
            })
            .collect();
        Ok(Rx::Single { bufs, slots })
    }

    /// Posts the receive(s) not currently posted, on every lane.
    pub(super) fn arm_rx(&mut self) -> io::Result<()> {
        for li in 0..self.lanes.len() {
            self.arm_lane(li)?;
        }
        Ok(())
    }

    pub(super) fn arm_lane(&mut self, li: usize) -> io::Result<()> {
        let Self {
            ring, lanes, stats, ..
        } = self;
        let lane = &mut lanes[li];
        let fd = Fd(lane.socket.as_raw_fd());
        let tag = (li as u64) << LANE_SHIFT;
        match &mut lane.rx {
            Rx::Multi {
                msg, armed, bgid, ..
            } => {
                if !*armed {
                    let e = opcode::RecvMsgMulti::new(fd, &**msg as *const libc::msghdr, *bgid)
                        .build()
                        .user_data(UD_RX_MULTI | tag);
                    // SAFETY: the msghdr template is boxed inside the lane's
                    // `rx` and lives until the ring is drained in Drop; the
                    // buffers come from the lane's registered buffer ring.
                    unsafe { push_sqe(ring, &e, stats)? };
                    *armed = true;
                }
            }
            Rx::Single { bufs, slots } => {
                for (i, s) in slots.iter_mut().enumerate() {
                    if s.posted {
                        continue;
                    }
                    s.iov = libc::iovec {
                        iov_base: bufs.ptr(i).cast(),
                        iov_len: bufs.size(),
                    };
                    s.msg.msg_name = (&mut s.addr as *mut libc::sockaddr_storage).cast();
                    s.msg.msg_namelen =
                        std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    s.msg.msg_iov = &mut s.iov;
                    s.msg.msg_iovlen = 1;
                    s.msg.msg_control = s.ctrl.as_mut_ptr().cast();
                    s.msg.msg_controllen = CTRL_LEN as _;
                    s.msg.msg_flags = 0;
                    let e = opcode::RecvMsg::new(fd, &mut s.msg)
                        .build()
                        .user_data(UD_RX_SLOT | tag | i as u64);
                    // SAFETY: the slot's msghdr, iovec, address, control
                    // block and buffer all live in the lane's `rx` (boxed
                    // slices and a mapping that do not move) until Drop drains.
                    unsafe { push_sqe(ring, &e, stats)? };
                    s.posted = true;
                }
            }
        }
        Ok(())
    }

    /// Hands out datagrams of the current cursor; returns true when it is used up.
    pub(super) fn drain_cursor(
        &mut self,
        li: usize,
        max: usize,
        handed: &mut usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> bool {
        let (lane, link) = (self.lanes[li].lane, self.lanes[li].link);
        let Some(mut c) = self.lanes[li].cursor else {
            return true;
        };
        let data: &[u8] = match (&self.lanes[li].rx, c.token) {
            (Rx::Multi { ring, .. }, Token::Buf(bid)) => ring.bufs.get(bid as usize, c.off + c.len),
            (Rx::Single { bufs, .. }, Token::Slot(i)) => bufs.get(i as usize, c.off + c.len),
            _ => &[],
        };
        let data = data.get(c.off..).unwrap_or(&[]);
        if c.len == 0 && !c.handed_any && *handed < max {
            f(RxDatagram {
                src: c.src,
                lane,
                link,
                data: &[],
            });
            c.handed_any = true;
            *handed += 1;
        }
        while *handed < max && c.next < c.len.min(data.len()) {
            let rest = c.len - c.next;
            let l = if c.seg == 0 { rest } else { c.seg.min(rest) };
            f(RxDatagram {
                src: c.src,
                lane,
                link,
                data: &data[c.next..c.next + l],
            });
            c.next += l;
            c.handed_any = true;
            *handed += 1;
        }
        let done = c.next >= c.len.min(data.len()) && (c.len != 0 || c.handed_any);
        if done {
            if c.seg != 0 && c.len > c.seg {
                self.stats.gro_buffers += 1;
            }
            self.recycle(li, c.token);
            self.lanes[li].cursor = None;
        } else {
            self.lanes[li].cursor = Some(c);
        }
        done
    }

    /// Gives a receive buffer back to the kernel.
    pub(super) fn recycle(&mut self, li: usize, token: Token) {
        match (&mut self.lanes[li].rx, token) {
            (Rx::Multi { ring, .. }, Token::Buf(bid)) => {
                ring.push(bid);
                ring.commit();
            }
            (Rx::Single { slots, .. }, Token::Slot(i)) => {
                if let Some(s) = slots.get_mut(i as usize) {
                    s.posted = false;
                }
            }
            _ => {}
        }
    }

    /// Turns one receive completion into a cursor (or a counted drop).
    pub(super) fn take_rx(&mut self, li: usize, c: Cqe) -> io::Result<()> {
        match c.ud & !INDEX_MASK {
            UD_RX_MULTI => self.take_multi(li, c),
            UD_RX_SLOT => {
                self.take_slot(li, c);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn take_multi(&mut self, li: usize, c: Cqe) -> io::Result<()> {
        let Rx::Multi {
            ring,
            bgid,
            msg,
            armed,
            worked,
        } = &mut self.lanes[li].rx
        else {
            return Ok(());
        };
        if !cqueue::more(c.flags) {
            *armed = false;
            self.stats.rearms += 1;
        }
        if c.res < 0 {
            let err = -c.res;
            if let Some(bid) = cqueue::buffer_select(c.flags) {
                ring.push(bid);
                ring.commit();
            }
            match err {
                libc::ENOBUFS => self.stats.enobufs += 1,
                libc::EINVAL if !*worked && !*armed => {
                    tracing::info!("io_uring: multishot RECVMSG refused (EINVAL): falling back to single-shot receives");
                    let group = *bgid;
                    let count = self.lanes[li].count;
                    let _ = self.ring.submitter().unregister_buf_ring(group);
                    self.lanes[li].rx = Self::single_rx(count, self.rx_payload)?;
                    self.features.multishot = false;
                }
                libc::ECANCELED => {}
                _ => {
                    self.stats.recv_errors += 1;
                    if !std::mem::replace(&mut self.warned.recv_error, true) {
                        tracing::warn!(addr = %self.links[0].addr, error = %io::Error::from_raw_os_error(err), "io_uring: receive error; further ones are only counted");
                    }
                }
            }
            return Ok(());
        }
        let Some(bid) = cqueue::buffer_select(c.flags) else {
            self.stats.recv_errors += 1;
            return Ok(());
        };
        *worked = true;
        let buf = ring.bufs.get(bid as usize, c.res as usize);
        let parsed = RecvMsgOut::parse(buf, msg).ok().and_then(|out| {
            if out.is_payload_truncated() {
                return Some(Err(()));
            }
            let mut ss = empty_storage();
            let name = out.name_data();
            let n = name
                .len()
                .min(std::mem::size_of::<libc::sockaddr_storage>());
            // SAFETY: `ss` is a live sockaddr_storage and `n` is at most its
            // size; the source is a byte slice of at least `n` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                    n,
                )
            };
            let src = decode_addr(&ss, n as libc::socklen_t)?;
            let seg = gro_segment(out.control_data());
            let off = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
            Some(Ok((src, seg, off, out.payload_data().len())))
        });
        match parsed {
            Some(Ok((src, seg, off, len))) => {
                self.lanes[li].cursor = Some(Cursor {
                    token: Token::Buf(bid),
                    src,
                    off,
                    len,
                    seg,
                    next: 0,
                    handed_any: false,
                });
            }
            Some(Err(())) => {
                ring.push(bid);
                ring.commit();
                self.count_truncated();
            }
            None => {
                ring.push(bid);
                ring.commit();
                self.stats.recv_errors += 1;
            }
        }
        Ok(())
    }

    pub(super) fn take_slot(&mut self, li: usize, c: Cqe) {
        let i = (c.ud & SLOT_MASK) as u32;
        let Rx::Single { slots, .. } = &mut self.lanes[li].rx else {
            return;
        };
        let Some(s) = slots.get_mut(i as usize) else {
            return;
        };
        if c.res < 0 {
            s.posted = false;
            if c.res != -libc::ECANCELED {
                self.stats.recv_errors += 1;
                if !std::mem::replace(&mut self.warned.recv_error, true) {
                    tracing::warn!(addr = %self.links[0].addr, error = %io::Error::from_raw_os_error(-c.res), "io_uring: receive error; further ones are only counted");
                }
            }
            return;
        }
        if s.msg.msg_flags & libc::MSG_TRUNC != 0 {
            s.posted = false;
            self.count_truncated();
            return;
        }
        let Some(src) = decode_addr(&s.addr, s.msg.msg_namelen) else {
            s.posted = false;
            self.stats.recv_errors += 1;
            return;
        };
        let clen: usize = CTRL_LEN.min(s.msg.msg_controllen as _);
        // SAFETY: `ctrl` is a live [u64; CTRL_LEN / 8], viewed as its bytes.
        let ctrl = unsafe { std::slice::from_raw_parts(s.ctrl.as_ptr().cast::<u8>(), clen) };
        let seg = gro_segment(ctrl);
        self.lanes[li].cursor = Some(Cursor {
            token: Token::Slot(i),
            src,
            off: 0,
            len: c.res as usize,
            seg,
            next: 0,
            handed_any: false,
        });
    }

    pub(super) fn count_truncated(&mut self) {
        self.stats.truncated += 1;
        if !std::mem::replace(&mut self.warned.truncated, true) {
            tracing::warn!(
                addr = %self.links[0].addr, room = self.rx_payload,
                "io_uring: datagram longer than a receive buffer, dropped; further ones are only counted"
            );
        }
    }

    /// Hands out what lane `li` holds until `handed` reaches `max`: the
    /// buffer being split, then its set-aside completions, reaping (and,
    /// once, running deferred task work) for more when they run out.
    pub(super) fn recv_lane(
        &mut self,
        li: usize,
        max: usize,
        handed: &mut usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<()> {
        // With an urgent lane, `recv` ran the task work just before.
        let mut flushed = self.has_urgent_lane();
        let mut rearms = 0;
        while *handed < max {
            if !self.drain_cursor(li, max, handed, f) {
                break;
            }
            if let Some(c) = self.lanes[li].stash.pop_front() {
                self.take_rx(li, c)?;
                continue;
            }
            // Re-arm before looking for more, so data can keep landing.
            let rx = &self.lanes[li].rx;
            if (!rx.armed() || rx.is_single()) && rearms < MAX_REARMS_PER_CALL {
                self.arm_lane(li)?;
                rearms += 1;
            }
            self.reap();
            if !self.lanes[li].stash.is_empty() {
                continue;
            }
            if flushed {
                break;
            }
            self.flush_taskrun()?;
            flushed = true;
            self.reap();
            if self.lanes[li].stash.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// [`recv_lane`](Self::recv_lane) over every link's urgent lane, link 0's first.
    pub(super) fn recv_urgent_lanes(
        &mut self,
        max: usize,
        handed: &mut usize,
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<()> {
        for k in 0..self.links.len() {
            let Some(li) = self.links[k].urgent else {
                continue;
            };
            if *handed >= max {
                break;
            }
            let before = *handed;
            self.recv_lane(li, max, handed, f)?;
            self.stats.links.add_received(k, (*handed - before) as u64);
        }
        Ok(())
    }

    /// Whether every lane has a receive posted.
    pub(super) fn rx_armed(&self) -> bool {
        self.lanes.iter().all(|l| l.rx.armed())
    }

    /// Whether any lane has a receive posted.
    pub(super) fn any_rx_armed(&self) -> bool {
        self.lanes.iter().any(|l| l.rx.armed())
    }
}
