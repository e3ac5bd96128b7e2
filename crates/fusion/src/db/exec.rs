//! What a key command does with the blocks it holds: pure functions from
//! block images to a reply and the changes to make, and the error texts.
//!
//! A write is first made on copies of the pages ([`Pages::change`]), in
//! argument order, so a later key of the command sees an earlier one's
//! change (`DEL k k` deletes once) and a change the page refuses (full,
//! too large) is found before anything is changed: then no change is
//! made at all. The changes found are then made for real with
//! `change_kv`, which builds the same pages (the same function applies
//! them, on the same images, pinned in X since).

use super::cmd::{string2ll, NOT_INTEGER};
use super::{Cmd, Reply, SetCond};
use crate::block;
use crate::gcs::GcError;
use crate::io::{BlockNo, FileNo};
use crate::kv::{self, KvError};
use crate::redo::{self, Change};
use std::fmt::Display;
use std::ops::Deref;

/// The images of one command's blocks (sorted by (file, block)), looked
/// up by key.
pub(super) struct Pages<P> {
    pub blocks: Vec<(FileNo, BlockNo)>,
    pub imgs: Vec<P>,
    pub files: FileNo,
    pub blocks_per_file: BlockNo,
    /// Expired entries (at or before this) read as absent.
    pub wall_ms: u64,
}

impl<P: Deref<Target = [u8]>> Pages<P> {
    fn at(&self, key: &[u8]) -> Result<usize, String> {
        kv::block_of(key, self.files, self.blocks_per_file)
            .and_then(|b| self.blocks.binary_search(&b).ok())
            .filter(|&i| i < self.imgs.len())
            .ok_or_else(|| "ERR internal error: a key outside the blocks held".to_string())
    }

    /// The entry of `key`, expired or not.
    fn entry(&self, key: &[u8]) -> Result<Option<kv::Entry<'_>>, String> {
        let i = self.at(key)?;
        kv::get(block::payload(&self.imgs[i]), key).map_err(|e| corrupt(self.blocks[i], &e))
    }

    /// The live entry of `key` (lazy expiry: an expired key reads as
    /// absent, nothing is written).
    fn get(&self, key: &[u8]) -> Result<Option<kv::Entry<'_>>, String> {
        Ok(self.entry(key)?.filter(|e| e.live(self.wall_ms)))
    }

    fn owned(&self, key: &[u8]) -> Result<Option<Owned>, String> {
        Ok(self.get(key)?.map(|e| Owned {
            value: e.value.to_vec(),
            expires_at: e.expires_at,
        }))
    }
}

/// A live value, copied out of the page a write changes.
#[derive(Default)]
struct Owned {
    value: Vec<u8>,
    expires_at: Option<u64>,
}

impl Pages<Vec<u8>> {
    /// Makes `change` on the copy of `key`'s block and records it.
    fn change(
        &mut self,
        key: &[u8],
        change: Change,
        out: &mut Vec<(usize, Change)>,
    ) -> Result<(), String> {
        let i = self.at(key)?;
        let img = &mut self.imgs[i];
        let block_size = img.len();
        if let Err(e) = redo::apply_change(&change, block::payload_mut(img)) {
            let value_len = match &change {
                Change::Put { value, .. } => value.len(),
                _ => 0,
            };
            return Err(kv_error(&e, key, value_len, self.blocks[i], block_size));
        }
        out.push((i, change));
        Ok(())
    }

    fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        expires_at: Option<u64>,
        out: &mut Vec<(usize, Change)>,
    ) -> Result<(), String> {
        let change = Change::Put {
            key: key.to_vec(),
            value,
            expires_at,
        };
        self.change(key, change, out)
    }
}

fn bulk_or_null(v: Option<&[u8]>) -> Reply {
    v.map_or(Reply::Null, |v| Reply::Bulk(v.to_vec()))
}

fn count(n: usize) -> Reply {
    Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The reply of a read (GET, STRLEN, EXISTS, MGET, BLOCK.GET).
pub(super) fn read<P: Deref<Target = [u8]>>(cmd: &Cmd, p: &Pages<P>) -> Reply {
    let r = (|| -> Result<Reply, String> {
        Ok(match cmd {
            Cmd::Get { key } => bulk_or_null(p.get(key)?.map(|e| e.value)),
            Cmd::StrLen { key } => count(p.get(key)?.map_or(0, |e| e.value.len())),
            Cmd::Exists { keys } => {
                let mut n = 0;
                for k in keys {
                    n += usize::from(p.get(k)?.is_some());
                }
                count(n)
            }
            Cmd::MGet { keys } => Reply::Array(
                keys.iter()
                    .map(|k| Ok(bulk_or_null(p.get(k)?.map(|e| e.value))))
                    .collect::<Result<_, String>>()?,
            ),
            Cmd::BlockGet { file, block } => match p.imgs.first() {
                Some(img) => block_info(img, *file, *block)?,
                None => return Err("ERR internal error: no block read".to_string()),
            },
            _ => return Err(format!("ERR internal error: {} is not a read", cmd.name())),
        })
    })();
    r.unwrap_or_else(Reply::Error)
}

/// BLOCK.GET's reply: what the block is, as a checksum other nodes'
/// answers can be compared with.
fn block_info(img: &[u8], file: FileNo, block: BlockNo) -> Result<Reply, String> {
    let h = block::verify(img, file, block).map_err(|e| corrupt((file, block), &e))?;
    let keys = kv::check(block::payload(img)).map_err(|e| corrupt((file, block), &e))?;
    let name = |s: &str| Reply::Bulk(s.as_bytes().to_vec());
    Ok(Reply::Array(vec![
        name("file"),
        Reply::Integer(i64::from(file)),
        name("block"),
        Reply::Integer(i64::from(block)),
        name("scn"),
        Reply::Integer(i64::try_from(h.scn).unwrap_or(i64::MAX)),
        name("keys"),
        count(keys.entries),
        name("checksum"),
        Reply::Bulk(hex32(crc32c::crc32c(img)).into_bytes()),
    ]))
}

/// A CRC as BLOCK.GET and BLOCK.SCAN show it: 8 lower-case hex digits.
pub(super) fn hex32(crc: u32) -> String {
    format!("{crc:08x}")
}

/// A write's reply and the changes it makes, by block index; an error
/// reply when any change is refused (then none is made).
pub(super) fn write(
    cmd: &Cmd,
    p: &mut Pages<Vec<u8>>,
) -> Result<(Reply, Vec<(usize, Change)>), String> {
    let mut out = Vec::new();
    let reply = match cmd {
        Cmd::Set {
            key,
            value,
            expires_at,
            keep_ttl,
            cond,
            get,
        } => {
            let old = p.owned(key)?;
            let applies = match cond {
                SetCond::Always => true,
                SetCond::Nx => old.is_none(),
                SetCond::Xx => old.is_some(),
            };
            if applies {
                let ttl = if *keep_ttl {
                    old.as_ref().and_then(|o| o.expires_at)
                } else {
                    *expires_at
                };
                p.put(key, value.clone(), ttl, &mut out)?;
            }
            match (get, applies) {
                (true, _) => bulk_or_null(old.as_ref().map(|o| o.value.as_slice())),
                (false, true) => Reply::ok(),
                (false, false) => Reply::Null,
            }
        }
        Cmd::Del { keys } => {
            let mut n = 0;
            for k in keys {
                // An expired record goes too, but does not count.
                let Some(live) = p.entry(k)?.map(|e| e.live(p.wall_ms)) else {
                    continue;
                };
                n += usize::from(live);
                p.change(k, Change::Delete { key: k.clone() }, &mut out)?;
            }
            count(n)
        }
        Cmd::IncrBy { key, delta } => {
            let old = p.owned(key)?;
            let (n, ttl) = match &old {
                Some(o) => (string2ll(&o.value).ok_or(NOT_INTEGER)?, o.expires_at),
                None => (0, None),
            };
            let n = n
                .checked_add(*delta)
                .ok_or("ERR increment or decrement would overflow")?;
            p.put(key, n.to_string().into_bytes(), ttl, &mut out)?;
            Reply::Integer(n)
        }
        Cmd::Append { key, value } => {
            let Owned {
                value: mut v,
                expires_at,
            } = p.owned(key)?.unwrap_or_default();
            v.extend_from_slice(value);
            let len = v.len();
            p.put(key, v, expires_at, &mut out)?;
            count(len)
        }
        Cmd::MSet { pairs } => {
            for (k, v) in pairs {
                p.put(k, v.clone(), None, &mut out)?;
            }
            Reply::ok()
        }
        _ => return Err(format!("ERR internal error: {} is not a write", cmd.name())),
    };
    Ok((reply, out))
}

/// The error for a record no block can hold (there is no overflow
/// chaining), if it is one.
pub(super) fn too_large(key: &[u8], value_len: usize, block_size: usize) -> Option<String> {
    let page = block_size.saturating_sub(block::HEADER_LEN);
    let key_max = kv::max_value_len(page, 0);
    if key.len() > key_max {
        return Some(format!(
            "ERR key too large: at most {key_max} bytes in a {block_size}-byte block"
        ));
    }
    let max = kv::max_value_len(page, key.len());
    (value_len > max).then(|| {
        format!(
            "ERR value too large: at most {max} bytes for this key in a {block_size}-byte block"
        )
    })
}

fn kv_error(
    e: &KvError,
    key: &[u8],
    value_len: usize,
    (file, block): (FileNo, BlockNo),
    block_size: usize,
) -> String {
    match e {
        KvError::TooLarge { .. } => {
            too_large(key, value_len, block_size).unwrap_or_else(|| format!("ERR {e}"))
        }
        KvError::Full { need, free } => format!(
            "ERR block full: file {file} block {block} has {free} bytes free, the record needs {need} (a key's record must fit the block it hashes to)"
        ),
        KvError::Corrupt { .. } | KvError::PageLength { .. } => corrupt((file, block), e),
    }
}

pub(super) fn corrupt((file, block): (FileNo, BlockNo), e: &dyn Display) -> String {
    format!("ERR corrupt block: file {file} block {block}: {e}")
}

/// The reply text of a global cache service error.
pub(super) fn gc_error(e: &GcError) -> String {
    match e {
        GcError::Recovering { .. } | GcError::NoBuffer => format!("TRYAGAIN {e}"),
        GcError::Fenced => format!("CLUSTERDOWN {e}"),
        GcError::Corrupt { file, block } => corrupt((*file, *block), &"fails its checksum on disk"),
        GcError::Io(s) => format!("ERR I/O error: {s}"),
        GcError::Kv(k) => format!("ERR {k}"),
        _ => format!("ERR {e}"),
    }
}
