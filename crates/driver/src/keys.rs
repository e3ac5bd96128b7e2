//! Cluster key files, as `fusion-node` (`cluster_key_file`) and `ibench`
//! (`--key-file`) read them: the same checks and the same messages.

use icx_wire::{Cipher, ClusterKey, KeyId, Keyring};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Reads a cluster key: the file must be a regular file owned by the user
/// this process runs as, readable by nobody else (mode 0600 or 0400), and
/// hold 32 bytes (raw, 64 hex digits, or base64). Errors name the file and
/// say how to fix it.
pub fn load_key_file(path: &Path) -> Result<ClusterKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cluster key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cluster key file {shown}: not a regular file"));
    }
    // The owner of /proc/self is this process's effective user.
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| {
            format!("cluster key file {shown}: cannot tell who runs this process (/proc/self: {e})")
        })?;
    if meta.uid() != me {
        return Err(format!(
            "cluster key file {shown}: owned by uid {}, not by uid {me} that runs this process; chown it to the service user",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "cluster key file {shown}: mode {mode:04o} lets other users read or change it; chmod 600 it"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cluster key file {shown}: {e}"))?;
    ClusterKey::parse(&bytes).map_err(|e| format!("cluster key file {shown}: {e}"))
}

/// The AEAD this host seals with by default: AES-256-GCM where the CPU has
/// AES instructions (and carry-less multiply), else ChaCha20-Poly1305,
/// which is faster in software. Receivers open either, so hosts that
/// differ still talk.
pub fn default_cipher() -> Cipher {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return Cipher::Aes256Gcm;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
        {
            return Cipher::Aes256Gcm;
        }
    }
    Cipher::ChaCha20Poly1305
}

/// What a keyring is built from: the key sent with, and optionally the next
/// one of a rollover (accepted, not yet sent with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec<'a> {
    pub key_file: &'a Path,
    pub key_id: u8,
    pub next_key_file: Option<&'a Path>,
    pub next_key_id: Option<u8>,
    pub cipher: Option<Cipher>,
    pub encrypt: bool,
}

/// Why a keyring could not be loaded: which key's file, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringError {
    /// The next key's (rather than the current key's).
    pub next: bool,
    pub message: String,
}

impl std::fmt::Display for KeyringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Loads a keyring: the current key (sent with and accepted) and the next
/// (accepted), each file checked by [`load_key_file`].
pub fn load_keyring(spec: &KeySpec<'_>) -> Result<Keyring, KeyringError> {
    let current = |message| KeyringError {
        next: false,
        message,
    };
    let next_err = |message| KeyringError {
        next: true,
        message,
    };
    let key = load_key_file(spec.key_file).map_err(current)?;
    let cipher = spec.cipher.unwrap_or_else(default_cipher);
    let mut ring = Keyring::new(KeyId(spec.key_id), key, cipher, spec.encrypt);
    if let Some(next) = spec.next_key_file {
        let id = spec.next_key_id.unwrap_or(spec.key_id.wrapping_add(1));
        if id == spec.key_id {
            return Err(next_err(format!(
                "the next cluster key needs an id other than the current one's ({id})"
            )));
        }
        let k = load_key_file(next).map_err(next_err)?;
        if ring.get(KeyId(spec.key_id)) == Some(&k) {
            return Err(next_err(format!(
                "cluster key file {}: the same key as the current one",
                next.display()
            )));
        }
        ring.accept(KeyId(id), k).map_err(|m| next_err(m.into()))?;
    }
    Ok(ring)
}

/// How reports name a node's frame protection: "off" (CRC32C), the AEAD,
/// and "+encrypt" when payloads are encrypted.
pub fn protection(ring: Option<&Keyring>) -> String {
    match ring {
        None => "off".into(),
        Some(r) if r.encrypt => format!("{}+encrypt", r.cipher.name()),
        Some(r) => r.cipher.name().into(),
    }
}

/// An incarnation never used before by this host's processes that share
/// `counter` (a small file holding the last one): above the last one and
/// at least the wall clock in seconds, taken under an exclusive lock and
/// written before it is returned. With a key, an incarnation used twice
/// would seal two lives' frames under one session key with the same
/// sequence numbers: this is what rules that out.
pub fn next_incarnation(counter: &Path) -> Result<u32, String> {
    use std::io::{Read, Seek, Write};
    let shown = counter.display();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(counter)
        .map_err(|e| format!("incarnation counter {shown}: {e}"))?;
    f.lock()
        .map_err(|e| format!("incarnation counter {shown}: lock: {e}"))?;
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| format!("incarnation counter {shown}: {e}"))?;
    let last = match text.trim() {
        "" => 0,
        t => t
            .parse::<u32>()
            .map_err(|_| format!("incarnation counter {shown}: not a number: {t:?}"))?,
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX - 1)) as u32);
    if last == u32::MAX {
        return Err(format!("incarnation counter {shown}: exhausted"));
    }
    let inc = (last + 1).max(wall).max(1);
    f.set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| writeln!(f, "{inc}"))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("incarnation counter {shown}: {e}"))?;
    Ok(inc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, body: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn permissions_and_forms() {
        let dir = std::env::temp_dir().join(format!("icx-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        let good = write(&dir, "good", hex.as_bytes(), 0o600);
        assert!(load_key_file(&good).is_ok());
        let ro = write(&dir, "ro", hex.as_bytes(), 0o400);
        assert!(load_key_file(&ro).is_ok());
        for mode in [0o644, 0o640, 0o604, 0o660, 0o666] {
            let p = write(&dir, "open", hex.as_bytes(), mode);
            let e = load_key_file(&p).unwrap_err();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
        }
        let bad = write(&dir, "bad", b"not a key", 0o600);
        assert!(load_key_file(&bad).unwrap_err().contains("32 bytes"));
        let e = load_key_file(&dir.join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        assert!(load_key_file(&dir)
            .unwrap_err()
            .contains("not a regular file"));
        // The next key: another id, another key.
        let next = write(
            &dir,
            "next",
            b"ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
            0o600,
        );
        let spec = KeySpec {
            key_file: &good,
            key_id: 1,
            next_key_file: Some(&next),
            next_key_id: None,
            cipher: None,
            encrypt: false,
        };
        let r = load_keyring(&spec).unwrap();
        assert_eq!(r.ids().collect::<Vec<_>>(), [KeyId(1), KeyId(2)]);
        assert_eq!(r.send_id(), KeyId(1));
        let same = KeySpec {
            next_key_file: Some(&ro),
            ..spec.clone()
        };
        assert!(load_keyring(&same)
            .unwrap_err()
            .message
            .contains("same key"));
        let clash = KeySpec {
            next_key_id: Some(1),
            ..spec
        };
        assert!(load_keyring(&clash).unwrap_err().next);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn incarnations_from_a_counter_never_repeat_across_threads() {
        let p = std::env::temp_dir().join(format!("icx-inc-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let all: Vec<u32> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .map(|_| next_incarnation(&p).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let set: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len(), "an incarnation handed out twice");
        std::fs::write(&p, "junk").unwrap();
        assert!(next_incarnation(&p).unwrap_err().contains("not a number"));
        std::fs::remove_file(&p).unwrap();
    }
}
