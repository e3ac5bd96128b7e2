//! Routing of each decoded message to its role's handler (requester,
//! master, holder, reconfiguration, remastering, join).

use super::{Fusion, Retry, RETRY_WRITE_DONE};
use crate::msg::Msg;
use icx_core::{Instant, NodeId};

impl Fusion {
    pub(super) fn dispatch(&mut self, now: Instant, from: NodeId, msg: Msg) {
        if self.join_hold(from, &msg) {
            return;
        }
        match msg {
            Msg::Req {
                rid,
                file,
                block,
                access,
            } => self.m_request(
                now,
                from,
                rid,
                (file, block),
                crate::grd::What::Access(access),
            ),
            Msg::MultiReq {
                rid,
                file,
                first,
                mask,
            } => self.m_multi(now, from, rid, file, first, mask),
            Msg::Done {
                rid,
                file,
                first,
                mask,
                pi,
                scn,
            } => self.m_done(now, from, rid, file, first, mask, pi, scn),
            Msg::InvalAck {
                rid,
                file,
                block,
                pi_scn,
            } => self.m_inval_ack(now, from, rid, (file, block), pi_scn),
            Msg::WriteReq {
                rid, file, block, ..
            } => self.m_request(now, from, rid, (file, block), crate::grd::What::Write),
            Msg::WriteDone {
                rid,
                file,
                block,
                scn,
            } => self.m_write_done(now, from, rid, (file, block), scn),
            // Fairness: the X holder went to S. Not acted on: it names no
            // request, so one delayed past the holder's next X grant (its
            // own S-to-X request) would mark that X holder S; the CR
            // ship's Done tells the conversion reliably (`pi`).
            Msg::DownConvert { .. } => {}
            Msg::Drop { rid, file, block } => {
                self.m_request(now, from, rid, (file, block), crate::grd::What::Drop)
            }
            Msg::Grant {
                rid,
                file,
                block,
                mode,
                keep,
                disk_scn,
                dirty,
            } => self.r_grant(now, rid, (file, block), mode, (keep, dirty), disk_scn),
            Msg::GrantMulti {
                rid,
                file,
                first,
                mask,
            } => self.r_grant_multi(now, rid, file, first, mask),
            Msg::Ship {
                rid,
                file,
                block,
                scn,
                kind,
                pi,
                dirty,
            } => self.r_ship(now, from, rid, (file, block), scn, kind, pi || dirty),
            Msg::Error {
                rid,
                file,
                block,
                code,
            } => self.r_error(now, rid, (file, block), code),
            Msg::Fwd {
                rid,
                to,
                file,
                block,
                access,
                dirty,
                holder_rid,
            } => self.h_fwd(
                now,
                from,
                rid,
                to,
                (file, block),
                access,
                (dirty, holder_rid),
            ),
            Msg::Inval { rid, file, block } => self.h_inval(now, from, rid, (file, block)),
            Msg::PiDiscard { file, block, scn } => self.h_pi_discard(from, (file, block), scn),
            Msg::WriteAck { rid, file, block } => {
                let k = ((file, block), RETRY_WRITE_DONE);
                let acked = matches!(self.retries.get(&k),
                    Some(Retry { msg: Msg::WriteDone { rid: r, .. }, .. }) if *r == rid);
                if acked {
                    self.retries.remove(&k);
                }
            }
            Msg::PiDiscardAck { file, block, scn } => {
                let k = ((file, block), from);
                let acked = matches!(self.pi_retries.get(&k),
                    Some(Retry { msg: Msg::PiDiscard { scn: s, .. }, .. }) if *s <= scn);
                if acked {
                    self.pi_retries.remove(&k);
                    // A chunk leaving waits for its PI discards.
                    self.drm_try_handover(now, crate::grd::chunk_of(file, block));
                }
            }
            Msg::WriteGrant { rid, file, block } => {
                self.h_write_grant(now, from, rid, (file, block))
            }
            Msg::DropOk { rid, file, block } => self.h_drop_ok(now, rid, (file, block)),
            Msg::Report {
                chunk,
                chunks,
                entries,
            } => self.m_report(now, from, chunk, chunks, &entries),
            Msg::ReportAck { chunks } => self.r_report_ack(now, from, chunks),
            Msg::PiShipReq {
                rid,
                file,
                block,
                scn,
            } => self.h_pi_ship(from, rid, (file, block), scn),
            Msg::PiShip {
                rid,
                file,
                block,
                scn,
            } => self.m_pi_ship(now, from, rid, (file, block), scn),
            Msg::Moved {
                rid,
                file,
                block,
                master,
                version,
            } => self.r_moved(now, rid, (file, block), master, version),
            Msg::Handover {
                file,
                first,
                version,
                items,
            } => self.m_handover(now, from, (file, first), version, &items),
            Msg::HandoverAck {
                file,
                first,
                version,
            } => self.m_handover_ack((file, first), version),
            Msg::JoinDone {
                part,
                parts,
                established,
                routes,
            } => self.j_join_done(now, from, (part, parts), established, &routes),
            Msg::JoinAck { parts } => self.j_join_ack(now, from, parts),
        }
    }
}
