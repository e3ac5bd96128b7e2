//! The send path: trains of frames to one destination by one link and
//! lane, as GSO (and zero-copy) SENDMSGs from the slab.

use super::*;

impl UringBackend {
    /// [`Backend::send`]: see there.
    pub(super) fn send_frames(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        self.start()?;
        let limit = self.cfg.max_batch;
        let max_segs = if self.features.gso {
            self.cfg.max_gso_segments.clamp(1, MAX_SEGS)
        } else {
            1
        };
        let mut taken = 0;
        let mut queued = 0;
        let mut reaped = false;
        while taken < limit {
            let Some(first) = batch.front() else { break };
            let Some(link) = self.links.get(usize::from(first.link)) else {
                self.drop_unknown_link(batch);
                taken += 1;
                continue;
            };
            let max_bytes = icx_core::max_udp_payload(icx_core::MAX_IP_MTU, link.v6);
            let normal_fd = Fd(self.lanes[link.normal].socket.as_raw_fd());
            let urgent_fd = link.urgent.map(|u| Fd(self.lanes[u].socket.as_raw_fd()));
            let Some(dst) = route_addr(first.dst, link.v6) else {
                self.drop_front(batch, libc::EAFNOSUPPORT);
                taken += 1;
                continue;
            };
            let seg = first.len();
            let (lane, link_no) = (first.lane, first.link);
            let (mut n, mut total) = (1usize, seg);
            if seg > 0 {
                while n < max_segs && taken + n < limit {
                    let Some(f) = batch.get(n) else { break };
                    let l = f.len();
                    // A train never mixes lanes: over loopback it reaches
                    // the receiver whole and is steered by its first frame.
                    if f.dst != first.dst
                        || f.lane != lane
                        || f.link != link_no
                        || l > seg
                        || l == 0
                        || total + l > max_bytes
                    {
                        break;
                    }
                    n += 1;
                    total += l;
                    if l < seg {
                        break;
                    }
                }
            }
            if !self.tx.has_room(n) {
                if !reaped {
                    self.flush_taskrun()?;
                    self.reap();
                    reaped = true;
                }
                if !self.tx.has_room(n) {
                    self.stats.tx_full += 1;
                    break;
                }
            }
            let gso = (n > 1).then_some(seg as u16);
            let fd = match (lane, urgent_fd) {
                (Lane::Urgent, Some(u)) => {
                    self.stats.urgent_sent += n as u64;
                    u
                }
                _ => normal_fd,
            };
            let si = self.tx.fill(dst, batch.range_mut(..n), gso);
            batch.drain(..n);
            let slot = self.tx.slot_mut(si).expect("slot just filled");
            slot.link = link_no;
            let zc = self.zc.on && total >= self.zc.threshold && slot.pages <= self.zc.max_pages;
            slot.zc = zc;
            slot.notif_pending = zc;
            let msg = &slot.msg as *const libc::msghdr;
            let e = if zc {
                opcode::SendMsgZc::new(fd, msg)
                    .ioprio(ZC_REPORT_USAGE)
                    .build()
            } else {
                opcode::SendMsg::new(fd, msg).build()
            }
            .user_data(UD_TX | u64::from(si));
            // SAFETY: the msghdr, its iovecs, address and cmsg live in the
            // slab slot, and the frames they point at (headers inline, payloads
            // in pool buffers held by SharedBuf) are owned by the slab, until
            // complete_tx sees the completion and, for SEND_ZC, the
            // notification; Drop drains or leaks them.
            unsafe { push_sqe(&mut self.ring, &e, &mut self.stats)? };
            self.stats.send_ops += 1;
            taken += n;
            queued += 1;
        }
        if queued > 0 {
            self.submit()?;
        }
        Ok(taken)
    }
}
