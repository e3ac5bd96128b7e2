//! A node's redo checkpoint file, `redo_<node>.ckpt` next to its log: the
//! LSN recovery starts scanning the log at ([`IoOp::RedoCheckpoint`]).
//!
//! ```text
//!  slot (512 B, at 0 and at 512):
//!  0      4         8       16      24       28
//!  +------+---------+-------+-------+--------+------------+
//!  | ICXK | version | seq   | lsn   | crc32c | zeroes ... |
//!  +------+---------+-------+-------+--------+------------+
//! ```
//!
//! Little-endian; the CRC32C covers the 24 bytes before it; version 1. A
//! write goes to slot `seq % 2`, with `seq` one above the highest valid
//! one, then `fdatasync`: a torn write only ever damages the slot being
//! written, and the other still holds the checkpoint before. A read takes
//! the valid slot with the highest `seq`. The file is created whole (under
//! a temp name, renamed into place), so one that exists always had a
//! valid slot: none valid now is an error, never "no checkpoint" (the log
//! below a checkpoint is punched out, and a scan from 0 would find only
//! zeroes).
//!
//! Only the node itself writes its file (the redo writer thread); any node
//! reads it (recovery reads the dead node's), with `O_DIRECT` where the
//! filesystem allows, for the reason given in [`crate::vote`].
//!
//! [`IoOp::RedoCheckpoint`]: icx_fusion::io::IoOp::RedoCheckpoint

use crate::dio::{self, AlignedBuf, Failed, ALIGN};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 4] = *b"ICXK";
pub const VERSION: u32 = 1;
/// Bytes of one slot (a sector, so a slot write is one sector's).
pub const SLOT_LEN: usize = 512;
/// Bytes of the file: two slots.
pub const FILE_LEN: usize = 2 * SLOT_LEN;
/// Bytes the CRC covers.
const BODY: usize = 24;

/// One slot's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub seq: u64,
    pub lsn: u64,
}

/// Where the slot of `seq` lives in the file.
pub fn slot_offset(seq: u64) -> u64 {
    (seq % 2) * SLOT_LEN as u64
}

pub fn encode_slot(s: Slot) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&s.seq.to_le_bytes());
    b[16..24].copy_from_slice(&s.lsn.to_le_bytes());
    let crc = crc32c::crc32c(&b[..BODY]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// One slot from `b` (exactly [`SLOT_LEN`] bytes), or why it is not valid.
pub fn decode_slot(b: &[u8]) -> Result<Slot, &'static str> {
    if b.len() != SLOT_LEN {
        return Err("short");
    }
    if b[..4] != MAGIC {
        return Err(if b.iter().all(|&x| x == 0) {
            "never written"
        } else {
            "bad magic"
        });
    }
    if le32(b, 24) != crc32c::crc32c(&b[..BODY]) {
        return Err("bad checksum");
    }
    if le32(b, 4) != VERSION {
        return Err("unknown version");
    }
    if b[BODY + 4..].iter().any(|&x| x != 0) {
        return Err("padding not zero");
    }
    Ok(Slot {
        seq: le64(b, 8),
        lsn: le64(b, 16),
    })
}

/// The slot in force in a file's bytes: the valid one with the highest
/// seq. A slot whose seq is not its place's is not valid (a misdirected
/// write). The error says what each slot is.
pub fn decode(bytes: &[u8]) -> Result<Slot, String> {
    let mut best: Option<Slot> = None;
    let mut why = Vec::new();
    for i in 0..2 {
        let at = i * SLOT_LEN;
        let r = match bytes.get(at..at + SLOT_LEN) {
            Some(b) => decode_slot(b),
            None => Err("short"),
        }
        .and_then(|s| {
            if slot_offset(s.seq) == at as u64 {
                Ok(s)
            } else {
                Err("seq not of this slot")
            }
        });
        match r {
            Ok(s) if best.is_none_or(|b| s.seq > b.seq) => best = Some(s),
            Ok(_) => {}
            Err(e) => why.push(format!("slot {i}: {e}")),
        }
    }
    best.ok_or_else(|| format!("no valid checkpoint slot ({})", why.join(", ")))
}

fn ctx(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

/// The slot in force in the file at `path`; `None` when there is no file
/// (no checkpoint yet). A file with no valid slot is `InvalidData`.
pub(super) fn read_slot(path: &Path) -> io::Result<Option<Slot>> {
    let mut o = OpenOptions::new();
    o.read(true);
    let mut direct_ok = true;
    let mut buf = AlignedBuf::new();
    buf.reserve(ALIGN)?;
    loop {
        let (file, direct) = match dio::open(path, &o, direct_ok, |_| {}) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ctx(path, "open", e)),
        };
        dio::regular(&file).map_err(|f| io::Error::new(f.err.kind(), f.describe(path)))?;
        // Direct reads take whole pages: one page holds the whole file.
        let dst = &mut buf.as_mut_slice()[..ALIGN];
        let r = dio::read_up_to(&file, dst, 0, direct).map_err(|(at, err)| Failed {
            what: format!("read at {at}"),
            err,
            transfer: true,
        });
        match r {
            Ok(got) => {
                return decode(&buf.as_slice()[..got.min(FILE_LEN)])
                    .map(Some)
                    .map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e}: the redo log's start is unknown", path.display()),
                        )
                    });
            }
            Err(e) if direct && e.direct_refused() => direct_ok = false,
            Err(e) => return Err(io::Error::new(e.err.kind(), e.describe(path))),
        }
    }
}

/// The checkpoint LSN in the file at `path`: `None` when there is no file,
/// an `InvalidData` error naming the path when no slot is valid.
pub fn read_checkpoint(path: &Path) -> io::Result<Option<u64>> {
    Ok(read_slot(path)?.map(|s| s.lsn))
}

/// This node's checkpoint file, as its redo writer keeps it.
#[derive(Debug)]
pub(super) struct CheckpointFile {
    path: PathBuf,
    /// `None` until the first checkpoint creates the file.
    file: Option<File>,
    /// The slot in force (seq 0, LSN 0 before any).
    last: Slot,
}

impl CheckpointFile {
    /// The file at `path` as it is now: an error when it exists with no
    /// valid slot (its seq, and the log start, are unknown).
    pub(super) fn load(path: &Path) -> io::Result<CheckpointFile> {
        let last = read_slot(path)?.unwrap_or(Slot { seq: 0, lsn: 0 });
        let file = if last.seq == 0 {
            None
        } else {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| ctx(path, "open", e))?;
            Some(f)
        };
        Ok(CheckpointFile {
            path: path.to_path_buf(),
            file,
            last,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint in force (0 before any).
    pub(super) fn lsn(&self) -> u64 {
        self.last.lsn
    }

    /// Makes `lsn` the checkpoint, durably, in the slot the next seq takes.
    /// Buffered writes: only this host writes the file, and the sync puts
    /// them on disk for the others' direct reads.
    pub(super) fn write(&mut self, lsn: u64) -> Result<(), Failed> {
        let next = Slot {
            seq: self.last.seq + 1,
            lsn,
        };
        let slot = encode_slot(next);
        match &self.file {
            Some(f) => {
                let at = slot_offset(next.seq);
                dio::write_all_at(f, &slot, at, |done| {
                    format!("checkpoint slot write at {at} (after {done} B)")
                })?;
                dio::sync_data(f)?;
            }
            None => self.file = Some(self.create(&slot, next.seq)?),
        }
        self.last = next;
        Ok(())
    }

    /// The file, created whole with its first slot: written and synced
    /// under a temp name, then renamed into place and the directory synced,
    /// so the name never shows a file without a valid slot. `rename` may
    /// replace: only this node ever writes this name.
    fn create(&self, slot: &[u8; SLOT_LEN], seq: u64) -> Result<File, Failed> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let r = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(|e| Failed::new(format!("create {}", tmp.display()), e))?;
            let mut whole = [0u8; FILE_LEN];
            let at = slot_offset(seq) as usize;
            whole[at..at + SLOT_LEN].copy_from_slice(slot);
            dio::write_all_at(&f, &whole, 0, |done| {
                format!("write of {} (after {done} B)", tmp.display())
            })?;
            f.sync_all()
                .map_err(|e| Failed::new(format!("fsync {}", tmp.display()), e))?;
            std::fs::rename(&tmp, &self.path)
                .map_err(|e| Failed::new(format!("rename from {}", tmp.display()), e))?;
            Ok(f)
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let f = r?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Failed::new(format!("fsync directory {}", dir.display()), e))?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(slots: &[Slot]) -> Vec<u8> {
        let mut b = vec![0u8; FILE_LEN];
        for s in slots {
            let at = slot_offset(s.seq) as usize;
            b[at..at + SLOT_LEN].copy_from_slice(&encode_slot(*s));
        }
        b
    }

    #[test]
    fn slot_round_trip() {
        let s = Slot {
            seq: 7,
            lsn: 123_456_789_012,
        };
        let b = encode_slot(s);
        assert_eq!(&b[..4], b"ICXK");
        assert!(b[28..].iter().all(|&x| x == 0));
        assert_eq!(decode_slot(&b), Ok(s));
        let two = file(&[Slot { seq: 6, lsn: 100 }, s]);
        assert_eq!(decode(&two), Ok(s));
        // Only the first slot written (seq 1 is slot 1, slot 0 a hole).
        assert_eq!(
            decode(&file(&[Slot { seq: 1, lsn: 5 }])),
            Ok(Slot { seq: 1, lsn: 5 })
        );
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let old = Slot { seq: 4, lsn: 4096 };
        let new = Slot { seq: 5, lsn: 8192 };
        let mut b = file(&[old, new]);
        // Torn: the newest slot's LSN half written.
        b[512 + 18] ^= 0xff;
        assert_eq!(decode(&b), Ok(old));
        // Torn to zeroes past its first bytes.
        let mut b = file(&[old, new]);
        b[512 + 10..1024].fill(0);
        assert_eq!(decode(&b), Ok(old));
        // A file cut short keeps its first slot.
        let b = file(&[old, new]);
        assert_eq!(decode(&b[..700]), Ok(old));
    }

    #[test]
    fn both_slots_corrupt_is_an_error() {
        let mut b = file(&[Slot { seq: 2, lsn: 1 }, Slot { seq: 3, lsn: 2 }]);
        b[5] ^= 1;
        b[512 + 20] ^= 1;
        let e = decode(&b).unwrap_err();
        assert!(e.contains("slot 0: bad checksum"), "{e}");
        assert!(e.contains("slot 1: bad checksum"), "{e}");
        assert!(decode(&[]).unwrap_err().contains("slot 0: short"));
        assert!(decode(&[0; FILE_LEN])
            .unwrap_err()
            .contains("slot 1: never written"));
        // A valid slot at the other's place (a misdirected write).
        let mut b = vec![0u8; FILE_LEN];
        b[..SLOT_LEN].copy_from_slice(&encode_slot(Slot { seq: 3, lsn: 9 }));
        assert!(decode(&b).unwrap_err().contains("seq not of this slot"));
        // Another version, checksummed right.
        let mut s = encode_slot(Slot { seq: 2, lsn: 9 });
        s[4] = 2;
        let crc = crc32c::crc32c(&s[..BODY]);
        s[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_slot(&s), Err("unknown version"));
        let mut s = encode_slot(Slot { seq: 2, lsn: 9 });
        s[511] = 1;
        assert_eq!(decode_slot(&s), Err("padding not zero"));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode(&bytes);
            if bytes.len() >= SLOT_LEN {
                let _ = decode_slot(&bytes[..SLOT_LEN]);
            }
        }

        #[test]
        fn one_damaged_slot_keeps_the_other(
            seq in 1u64..u64::MAX - 1,
            lsns in (any::<u64>(), any::<u64>()),
            at in 0usize..SLOT_LEN,
            flip in 1u8..=255,
        ) {
            let (old, new) = (
                Slot { seq, lsn: lsns.0 },
                Slot { seq: seq + 1, lsn: lsns.1 },
            );
            let mut b = file(&[old, new]);
            prop_assert_eq!(decode(&b), Ok(new));
            let newest = slot_offset(new.seq) as usize;
            b[newest + at] ^= flip;
            prop_assert_eq!(decode(&b), Ok(old));
        }
    }
}
