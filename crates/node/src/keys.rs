//! The cluster key settings of the config file: which key seals the
//! interconnect's frames (and the voting-file records), which next key is
//! accepted during a rollover, and whether payloads are encrypted.

use icx_driver::keys::{load_keyring, KeySpec};
use icx_wire::{Cipher, Keyring};
use std::path::{Path, PathBuf};

/// The keys of a cluster whose frames are authenticated, with the files
/// they came from (read when the config is, so `--check` and a reload
/// refuse a bad key file as start does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyConfig {
    pub key_file: PathBuf,
    pub key_id: u8,
    pub next_key_file: Option<PathBuf>,
    pub next_key_id: Option<u8>,
    /// `cluster_cipher`; `None`: this host's best (AES-256-GCM with AES
    /// instructions, else ChaCha20-Poly1305).
    pub cipher: Option<Cipher>,
    pub encrypt: bool,
    pub ring: Keyring,
}

/// The raw keys, as the config file spells them.
#[derive(Debug, Default)]
pub(crate) struct RawKeys<'a> {
    pub key_file: Option<&'a str>,
    pub key_id: Option<u8>,
    pub next_key_file: Option<&'a str>,
    pub next_key_id: Option<u8>,
    pub cipher: Option<&'a str>,
    pub encrypt: Option<bool>,
}

/// Validates the key settings and reads the key files (relative paths are
/// taken from `dir`, the config file's directory). Errors are (key, why).
pub(crate) fn parse(raw: &RawKeys<'_>, dir: &Path) -> Result<Option<KeyConfig>, (String, String)> {
    let e = |k: &str, m: String| (k.to_string(), m);
    let Some(file) = raw.key_file else {
        for (set, k) in [
            (raw.key_id.is_some(), "cluster_key_id"),
            (raw.next_key_file.is_some(), "cluster_next_key_file"),
            (raw.next_key_id.is_some(), "cluster_next_key_id"),
            (raw.cipher.is_some(), "cluster_cipher"),
            (raw.encrypt == Some(true), "encrypt"),
        ] {
            if set {
                return Err(e(k, "needs cluster_key_file (the cluster key)".into()));
            }
        }
        return Ok(None);
    };
    if file.is_empty() {
        return Err(e("cluster_key_file", "empty path".into()));
    }
    if raw.next_key_id.is_some() && raw.next_key_file.is_none() {
        return Err(e(
            "cluster_next_key_id",
            "needs cluster_next_key_file".into(),
        ));
    }
    let cipher = match raw.cipher {
        None => None,
        Some(c) => Some(Cipher::from_name(c).ok_or_else(|| {
            e(
                "cluster_cipher",
                format!("{c:?}: use \"aes-256-gcm\" or \"chacha20-poly1305\""),
            )
        })?),
    };
    let key_file = dir.join(file);
    let next_key_file = match raw.next_key_file {
        Some("") => return Err(e("cluster_next_key_file", "empty path".into())),
        Some(f) => Some(dir.join(f)),
        None => None,
    };
    let key_id = raw.key_id.unwrap_or(1);
    let encrypt = raw.encrypt.unwrap_or(false);
    let ring = load_keyring(&KeySpec {
        key_file: &key_file,
        key_id,
        next_key_file: next_key_file.as_deref(),
        next_key_id: raw.next_key_id,
        cipher,
        encrypt,
    })
    .map_err(|k| {
        let key = if k.next {
            "cluster_next_key_file"
        } else {
            "cluster_key_file"
        };
        e(key, k.message)
    })?;
    Ok(Some(KeyConfig {
        key_file,
        key_id,
        next_key_file,
        next_key_id: raw.next_key_id,
        cipher,
        encrypt,
        ring,
    }))
}

/// The voting-file record keys of a keyring: the key sent with first (it
/// MACs the records this node writes), then the others (accepted).
pub fn record_keys(ring: &Keyring, cluster: u32) -> Vec<icx_wire::auth::RecordKey> {
    let send = ring.send_id();
    std::iter::once(send)
        .chain(ring.ids().filter(|&i| i != send))
        .filter_map(|i| ring.get(i))
        .map(|k| icx_wire::auth::RecordKey::derive(k, cluster))
        .collect()
}
