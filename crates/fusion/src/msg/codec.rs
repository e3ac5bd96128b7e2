//! Encoding and decoding of [`Msg`] (the layout is in the module doc of
//! [`crate::msg`]).

use super::*;

impl Msg {
    fn ty(&self) -> u8 {
        match self {
            Msg::Req { .. } => 1,
            Msg::MultiReq { .. } => 2,
            Msg::Grant { .. } => 3,
            Msg::GrantMulti { .. } => 4,
            Msg::Fwd { .. } => 5,
            Msg::Ship { .. } => 6,
            Msg::Inval { .. } => 7,
            Msg::InvalAck { .. } => 8,
            Msg::Done { .. } => 9,
            Msg::PiDiscard { .. } => 10,
            Msg::WriteReq { .. } => 11,
            Msg::WriteGrant { .. } => 12,
            Msg::WriteDone { .. } => 13,
            Msg::DownConvert { .. } => 14,
            Msg::Drop { .. } => 15,
            Msg::DropOk { .. } => 16,
            Msg::Error { .. } => 17,
            Msg::PiDiscardAck { .. } => 18,
            Msg::WriteAck { .. } => 19,
            Msg::Report { .. } => 20,
            Msg::ReportAck { .. } => 21,
            Msg::PiShipReq { .. } => 22,
            Msg::PiShip { .. } => 23,
            Msg::Moved { .. } => 24,
            Msg::Handover { .. } => 25,
            Msg::HandoverAck { .. } => 26,
            Msg::JoinDone { .. } => 27,
            Msg::JoinAck { .. } => 28,
        }
    }

    /// The message's name, for counting in tests and traces.
    pub fn name(&self) -> &'static str {
        NAMES[self.ty() as usize - 1]
    }

    /// The block (or first block) it is about ((0, 0) for a report).
    pub fn block(&self) -> (FileNo, BlockNo) {
        match *self {
            Msg::Report { .. }
            | Msg::ReportAck { .. }
            | Msg::JoinDone { .. }
            | Msg::JoinAck { .. } => (0, 0),
            Msg::Handover { file, first, .. } | Msg::HandoverAck { file, first, .. } => {
                (file, first)
            }
            Msg::Moved { file, block, .. } => (file, block),
            Msg::PiShipReq { file, block, .. } | Msg::PiShip { file, block, .. } => (file, block),
            Msg::MultiReq { file, first, .. }
            | Msg::GrantMulti { file, first, .. }
            | Msg::Done { file, first, .. } => (file, first),
            Msg::Req { file, block, .. }
            | Msg::Grant { file, block, .. }
            | Msg::Fwd { file, block, .. }
            | Msg::Ship { file, block, .. }
            | Msg::Inval { file, block, .. }
            | Msg::InvalAck { file, block, .. }
            | Msg::PiDiscard { file, block, .. }
            | Msg::PiDiscardAck { file, block, .. }
            | Msg::WriteReq { file, block, .. }
            | Msg::WriteGrant { file, block, .. }
            | Msg::WriteDone { file, block, .. }
            | Msg::WriteAck { file, block, .. }
            | Msg::DownConvert { file, block, .. }
            | Msg::Drop { file, block, .. }
            | Msg::DropOk { file, block, .. }
            | Msg::Error { file, block, .. } => (file, block),
        }
    }

    /// The message encoded in `epoch`.
    pub fn encode(&self, epoch: u64) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(56));
        w.0.extend_from_slice(&MAGIC);
        w.u8(VERSION);
        w.u8(self.ty());
        w.0.extend_from_slice(&[0, 0]);
        w.u64(epoch);
        match *self {
            Msg::Report {
                chunk,
                chunks,
                ref entries,
            } => {
                w.u16(chunk);
                w.u16(chunks);
                w.u16(entries.len() as u16);
                for h in entries {
                    w.u16(h.file);
                    w.u32(h.block);
                    w.u8(h.mode as u8);
                    w.u64(h.scn);
                    w.u64(h.pi_scn);
                    w.u64(h.since);
                }
            }
            Msg::ReportAck { chunks } => w.u16(chunks),
            Msg::JoinDone {
                part,
                parts,
                established,
                ref routes,
            } => {
                w.u16(part);
                w.u16(parts);
                w.u8(u8::from(established));
                w.u16(routes.len() as u16);
                for r in routes {
                    w.u16(r.file);
                    w.u32(r.first);
                    w.u16(r.master.0);
                    w.u32(r.version);
                }
            }
            Msg::JoinAck { parts } => w.u16(parts),
            Msg::Moved {
                rid,
                file,
                block,
                master,
                version,
            } => {
                w.rfb(rid, file, block);
                w.u16(master.0);
                w.u32(version);
            }
            Msg::Handover {
                file,
                first,
                version,
                ref items,
            } => {
                w.u16(file);
                w.u32(first);
                w.u32(version);
                w.u16(items.len() as u16);
                for it in items {
                    let (kind, node, mode, value) = match it.field {
                        DirField::Holder { node, mode, since } => (0, node, mode, since),
                        DirField::Pi { node, scn } => (1, node, Mode::N, scn),
                        DirField::Done { node, rid } => (2, node, Mode::N, rid),
                        DirField::Refused { node, rid } => (3, node, Mode::N, rid),
                        DirField::Disk { scn } => (4, NodeId(0), Mode::N, scn),
                    };
                    w.u8(it.offset);
                    w.u8(kind);
                    w.u16(node.0);
                    w.u8(mode as u8);
                    w.u64(value);
                }
            }
            Msg::HandoverAck {
                file,
                first,
                version,
            } => {
                w.u16(file);
                w.u32(first);
                w.u32(version);
            }
            Msg::Req {
                rid,
                file,
                block,
                access,
            } => {
                w.rfb(rid, file, block);
                w.access(access);
            }
            Msg::MultiReq {
                rid,
                file,
                first,
                mask,
            } => {
                w.rfb(rid, file, first);
                w.u16(mask);
            }
            Msg::Grant {
                rid,
                file,
                block,
                mode,
                keep,
                disk_scn,
                dirty,
            } => {
                w.rfb(rid, file, block);
                w.u8(mode as u8);
                w.u8(keep as u8);
                w.u64(disk_scn);
                w.u8(dirty as u8);
            }
            Msg::GrantMulti {
                rid,
                file,
                first,
                mask,
            } => {
                w.rfb(rid, file, first);
                w.u16(mask);
            }
            Msg::Fwd {
                rid,
                to,
                file,
                block,
                access,
                dirty,
                holder_rid,
            } => {
                w.rfb(rid, file, block);
                w.u16(to.0);
                w.access(access);
                w.u8(dirty as u8);
                w.u64(holder_rid);
            }
            Msg::Ship {
                rid,
                file,
                block,
                scn,
                kind,
                pi,
                dirty,
            } => {
                w.rfb(rid, file, block);
                w.u64(scn);
                w.u8(kind as u8);
                w.u8(pi as u8);
                w.u8(dirty as u8);
            }
            Msg::Inval { rid, file, block }
            | Msg::WriteGrant { rid, file, block }
            | Msg::Drop { rid, file, block }
            | Msg::DropOk { rid, file, block }
            | Msg::WriteAck { rid, file, block } => w.rfb(rid, file, block),
            Msg::InvalAck {
                rid,
                file,
                block,
                pi_scn: scn,
            }
            | Msg::WriteReq {
                rid,
                file,
                block,
                scn,
            }
            | Msg::WriteDone {
                rid,
                file,
                block,
                scn,
            }
            | Msg::PiShipReq {
                rid,
                file,
                block,
                scn,
            }
            | Msg::PiShip {
                rid,
                file,
                block,
                scn,
            } => {
                w.rfb(rid, file, block);
                w.u64(scn);
            }
            Msg::Done {
                rid,
                file,
                first,
                mask,
                pi,
                scn,
            } => {
                w.rfb(rid, file, first);
                w.u16(mask);
                w.u8(pi as u8);
                w.u64(scn);
            }
            Msg::PiDiscard { file, block, scn }
            | Msg::PiDiscardAck { file, block, scn }
            | Msg::DownConvert { file, block, scn } => {
                w.u16(file);
                w.u32(block);
                w.u64(scn);
            }
            Msg::Error {
                rid,
                file,
                block,
                code,
            } => {
                w.rfb(rid, file, block);
                w.u8(code as u8);
            }
        }
        let len = (w.0.len() - HDR) as u16;
        w.0[4..6].copy_from_slice(&len.to_le_bytes());
        let c = crc32c::crc32c(&w.0);
        w.u32(c);
        w.0
    }

    /// Decodes one message and the epoch it was sent in; never panics.
    pub fn decode(b: &[u8]) -> Result<(u64, Msg), DecodeError> {
        if b.len() < HDR + TRAILER {
            return Err(DecodeError::Short);
        }
        if b[..2] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if b[2] != VERSION {
            return Err(DecodeError::Version(b[2]));
        }
        let ty = b[3];
        let len = u16::from_le_bytes([b[4], b[5]]) as usize;
        let want = match ty {
            // A report: a 6-byte head, then its entries.
            20 if len >= 6 && b.len() >= HDR + 6 => {
                6 + HELD_LEN * u16::from_le_bytes([b[HDR + 4], b[HDR + 5]]) as usize
            }
            20 => 6,
            // A handover: a 12-byte head, then its records.
            25 if len >= 12 && b.len() >= HDR + 12 => {
                12 + DIR_ITEM_LEN * u16::from_le_bytes([b[HDR + 10], b[HDR + 11]]) as usize
            }
            25 => 12,
            // A join's state: a 7-byte head, then its routes.
            27 if len >= 7 && b.len() >= HDR + 7 => {
                7 + ROUTE_ITEM_LEN * u16::from_le_bytes([b[HDR + 5], b[HDR + 6]]) as usize
            }
            27 => 7,
            _ => *BODY_LEN
                .get((ty as usize).wrapping_sub(1))
                .ok_or(DecodeError::Type(ty))?,
        };
        if len != want || b.len() != HDR + len + TRAILER {
            return Err(DecodeError::Length { ty, len });
        }
        let (msg, crc) = b.split_at(HDR + len);
        if crc32c::crc32c(msg) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(DecodeError::Checksum);
        }
        let epoch = u64::from_le_bytes(msg[6..14].try_into().unwrap_or([0; 8]));
        let mut r = R(&msg[HDR..]);
        let m = match ty {
            20 => {
                let chunk = r.u16();
                let chunks = r.u16();
                let n = r.u16() as usize;
                if chunks == 0 || chunk >= chunks || n > REPORT_CHUNK {
                    return Err(DecodeError::Field("report"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(Held {
                        file: r.u16(),
                        block: r.u32(),
                        mode: r.mode()?,
                        scn: r.u64(),
                        pi_scn: r.u64(),
                        since: r.u64(),
                    });
                }
                Msg::Report {
                    chunk,
                    chunks,
                    entries,
                }
            }
            21 => Msg::ReportAck { chunks: r.u16() },
            27 => {
                let part = r.u16();
                let parts = r.u16();
                let established = r.bool()?;
                let n = r.u16() as usize;
                if parts == 0 || part >= parts || n > JOIN_ROUTES_MAX {
                    return Err(DecodeError::Field("join"));
                }
                let mut routes = Vec::with_capacity(n);
                for _ in 0..n {
                    let item = RouteItem {
                        file: r.u16(),
                        first: r.u32(),
                        master: NodeId(r.u16()),
                        version: r.u32(),
                    };
                    if !item.first.is_multiple_of(crate::grd::CHUNK) {
                        return Err(DecodeError::Field("route"));
                    }
                    routes.push(item);
                }
                Msg::JoinDone {
                    part,
                    parts,
                    established,
                    routes,
                }
            }
            28 => Msg::JoinAck { parts: r.u16() },
            24 => {
                let (rid, file, block) = r.rfb();
                Msg::Moved {
                    rid,
                    file,
                    block,
                    master: NodeId(r.u16()),
                    version: r.u32(),
                }
            }
            25 => {
                let (file, first, version) = (r.u16(), r.u32(), r.u32());
                let n = r.u16() as usize;
                if n > HANDOVER_MAX || first % crate::grd::CHUNK != 0 {
                    return Err(DecodeError::Field("handover"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let offset = r.u8();
                    let kind = r.u8();
                    let node = NodeId(r.u16());
                    let mode = r.mode()?;
                    let value = r.u64();
                    // One encoding per record: fields a kind does not use
                    // are zero.
                    let field = match (kind, mode, node.0) {
                        (0, Mode::S | Mode::X, _) => DirField::Holder {
                            node,
                            mode,
                            since: value,
                        },
                        (1, Mode::N, _) => DirField::Pi { node, scn: value },
                        (2, Mode::N, _) => DirField::Done { node, rid: value },
                        (3, Mode::N, _) => DirField::Refused { node, rid: value },
                        (4, Mode::N, 0) => DirField::Disk { scn: value },
                        _ => return Err(DecodeError::Field("directory record")),
                    };
                    if u32::from(offset) >= crate::grd::CHUNK {
                        return Err(DecodeError::Field("directory record"));
                    }
                    items.push(DirItem { offset, field });
                }
                Msg::Handover {
                    file,
                    first,
                    version,
                    items,
                }
            }
            26 => Msg::HandoverAck {
                file: r.u16(),
                first: r.u32(),
                version: r.u32(),
            },
            1 => {
                let (rid, file, block) = r.rfb();
                Msg::Req {
                    rid,
                    file,
                    block,
                    access: r.access()?,
                }
            }
            2 => {
                let (rid, file, first) = r.rfb();
                let mask = r.u16();
                if mask == 0 {
                    return Err(DecodeError::Field("mask"));
                }
                Msg::MultiReq {
                    rid,
                    file,
                    first,
                    mask,
                }
            }
            3 => {
                let (rid, file, block) = r.rfb();
                Msg::Grant {
                    rid,
                    file,
                    block,
                    mode: r.mode()?,
                    keep: r.bool()?,
                    disk_scn: r.u64(),
                    dirty: r.bool()?,
                }
            }
            4 => {
                let (rid, file, first) = r.rfb();
                Msg::GrantMulti {
                    rid,
                    file,
                    first,
                    mask: r.u16(),
                }
            }
            5 => {
                let (rid, file, block) = r.rfb();
                Msg::Fwd {
                    rid,
                    file,
                    block,
                    to: NodeId(r.u16()),
                    access: r.access()?,
                    dirty: r.bool()?,
                    holder_rid: r.u64(),
                }
            }
            6 => {
                let (rid, file, block) = r.rfb();
                let scn = r.u64();
                let kind = match r.u8() {
                    0 => ShipKind::Cr,
                    1 => ShipKind::S,
                    2 => ShipKind::X,
                    _ => return Err(DecodeError::Field("kind")),
                };
                Msg::Ship {
                    rid,
                    file,
                    block,
                    scn,
                    kind,
                    pi: r.bool()?,
                    dirty: r.bool()?,
                }
            }
            7 | 12 | 15 | 16 | 19 => {
                let (rid, file, block) = r.rfb();
                match ty {
                    7 => Msg::Inval { rid, file, block },
                    12 => Msg::WriteGrant { rid, file, block },
                    15 => Msg::Drop { rid, file, block },
                    16 => Msg::DropOk { rid, file, block },
                    _ => Msg::WriteAck { rid, file, block },
                }
            }
            8 | 11 | 13 | 22 | 23 => {
                let (rid, file, block) = r.rfb();
                let scn = r.u64();
                match ty {
                    22 => Msg::PiShipReq {
                        rid,
                        file,
                        block,
                        scn,
                    },
                    23 => Msg::PiShip {
                        rid,
                        file,
                        block,
                        scn,
                    },
                    8 => Msg::InvalAck {
                        rid,
                        file,
                        block,
                        pi_scn: scn,
                    },
                    11 => Msg::WriteReq {
                        rid,
                        file,
                        block,
                        scn,
                    },
                    _ => Msg::WriteDone {
                        rid,
                        file,
                        block,
                        scn,
                    },
                }
            }
            9 => {
                let (rid, file, first) = r.rfb();
                Msg::Done {
                    rid,
                    file,
                    first,
                    mask: r.u16(),
                    pi: r.bool()?,
                    scn: r.u64(),
                }
            }
            10 | 14 | 18 => {
                let file = r.u16();
                let block = r.u32();
                let scn = r.u64();
                match ty {
                    10 => Msg::PiDiscard { file, block, scn },
                    14 => Msg::DownConvert { file, block, scn },
                    _ => Msg::PiDiscardAck { file, block, scn },
                }
            }
            _ => {
                let (rid, file, block) = r.rfb();
                let code = match r.u8() {
                    1 => ErrorCode::Recovering,
                    2 => ErrorCode::NoSuchBlock,
                    3 => ErrorCode::NotMaster,
                    _ => return Err(DecodeError::Field("code")),
                };
                Msg::Error {
                    rid,
                    file,
                    block,
                    code,
                }
            }
        };
        Ok((epoch, m))
    }
}

const NAMES: [&str; 28] = [
    "Req",
    "MultiReq",
    "Grant",
    "GrantMulti",
    "Fwd",
    "Ship",
    "Inval",
    "InvalAck",
    "Done",
    "PiDiscard",
    "WriteReq",
    "WriteGrant",
    "WriteDone",
    "DownConvert",
    "Drop",
    "DropOk",
    "Error",
    "PiDiscardAck",
    "WriteAck",
    "Report",
    "ReportAck",
    "PiShipReq",
    "PiShip",
    "Moved",
    "Handover",
    "HandoverAck",
    "JoinDone",
    "JoinAck",
];

/// Body length by type (rid+file+block = 14 bytes; access = 9); a
/// report's depends on its entry count.
const BODY_LEN: [usize; 28] = [
    14 + 9,
    14 + 2,
    14 + 11,
    14 + 2,
    14 + 2 + 10 + 8,
    14 + 11,
    14,
    14 + 8,
    14 + 11,
    14,
    14 + 8,
    14,
    14 + 8,
    14,
    14,
    14,
    14 + 1,
    14,
    14,
    6,
    2,
    14 + 8,
    14 + 8,
    14 + 6,
    12,
    10,
    7,
    2,
];

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn rfb(&mut self, rid: u64, file: FileNo, block: BlockNo) {
        self.u64(rid);
        self.u16(file);
        self.u32(block);
    }
    fn access(&mut self, a: Access) {
        let (k, scn) = match a {
            Access::Cr { scn } => (0, scn),
            Access::Current => (1, 0),
            Access::Exclusive => (2, 0),
        };
        self.u8(k);
        self.u64(scn);
    }
}

/// Reads fixed fields; the caller checked the body length first, so the
/// reads stay in bounds (and yield zeroes rather than panic if not).
struct R<'a>(&'a [u8]);

impl R<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        if self.0.len() >= N {
            a.copy_from_slice(&self.0[..N]);
            self.0 = &self.0[N..];
        }
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8() {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Field("flag")),
        }
    }
    fn rfb(&mut self) -> (u64, FileNo, BlockNo) {
        (self.u64(), self.u16(), self.u32())
    }
    fn mode(&mut self) -> Result<Mode, DecodeError> {
        match self.u8() {
            0 => Ok(Mode::N),
            1 => Ok(Mode::S),
            2 => Ok(Mode::X),
            _ => Err(DecodeError::Field("mode")),
        }
    }
    fn access(&mut self) -> Result<Access, DecodeError> {
        let k = self.u8();
        let scn = self.u64();
        match k {
            0 => Ok(Access::Cr { scn }),
            1 if scn == 0 => Ok(Access::Current),
            2 if scn == 0 => Ok(Access::Exclusive),
            _ => Err(DecodeError::Field("access")),
        }
    }
}
