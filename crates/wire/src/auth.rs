//! Frame authentication (and optional encryption) under a cluster key.
//!
//! Without a key, a frame is sealed by CRC32C, which any host can forge. With
//! one, an AEAD tag replaces it: the sender sets [`FLAG_AUTH`] (and
//! [`FLAG_ENCRYPTED`] when the payload is encrypted), writes the auth field
//! (key id and cipher) where the CRC was, and appends a 16-byte tag after the
//! payload. Encrypted, the header is associated data and the tag covers the
//! payload's ciphertext; authenticated only, the whole frame is associated
//! data (GMAC for AES-256-GCM), so the tag is one pass over the bytes where
//! they lie. `docs/PROTOCOL.md` has the layout.
//!
//! Nonces are never reused: each direction of each session (source node,
//! destination node, source incarnation) gets its own key, derived from the
//! cluster key by HKDF, and the nonce is the frame's sequence number with a
//! domain byte (data frames number in one space; acks and probes in
//! another). Sequence numbers never repeat within a session direction, and
//! incarnations never repeat across restarts (the node persists its last
//! one), so no (key, nonce) pair is used twice.
//!
//! The tag goes on the end, rather than in the header, so the frame the
//! tag covers is the one on the wire, contiguous and unchanged: a receiver
//! checks it in the receive buffer, with no copy.

use crate::frame::{field, FrameKind};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use icx_core::{ClusterId, Incarnation, NodeId};
use std::fmt;

/// Bytes of AEAD tag after the payload of an authenticated frame.
pub const TAG_LEN: usize = 16;
/// Flag: the frame carries an AEAD tag after its payload, and the CRC field
/// holds the auth field (key id, cipher, two zero bytes).
pub const FLAG_AUTH: u8 = 0x02;
/// Flag (with [`FLAG_AUTH`]): the payload is encrypted.
pub const FLAG_ENCRYPTED: u8 = 0x04;
/// Bytes of a cluster key.
pub const KEY_LEN: usize = 32;

/// The AEAD a sender seals with. Each frame names its own, so a node
/// without AES instructions may send ChaCha20-Poly1305 to nodes that send
/// AES-256-GCM: every receiver opens both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cipher {
    Aes256Gcm = 1,
    ChaCha20Poly1305 = 2,
}

impl Cipher {
    pub fn from_u8(v: u8) -> Option<Cipher> {
        match v {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The name configuration files and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    pub fn from_name(s: &str) -> Option<Cipher> {
        match s {
            "aes-256-gcm" => Some(Cipher::Aes256Gcm),
            "chacha20-poly1305" => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// The key id frames carry, so a receiver holding two keys during a
/// rollover knows which one a frame was sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u8);

/// 32 secret bytes shared by every node of the cluster. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a key file's contents are not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Neither 32 raw bytes, nor 64 hex digits, nor base64 of 32 bytes.
    BadFormat,
    /// All zero bytes: a placeholder, not a secret.
    AllZero,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::BadFormat => write!(
                f,
                "a cluster key is 32 bytes: 32 raw bytes, 64 hex digits, or their base64"
            ),
            KeyError::AllZero => write!(f, "the cluster key is all zero bytes"),
        }
    }
}

impl std::error::Error for KeyError {}

impl ClusterKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Result<ClusterKey, KeyError> {
        if b.iter().all(|&x| x == 0) {
            return Err(KeyError::AllZero);
        }
        Ok(ClusterKey(b))
    }

    /// A key file's contents: exactly 32 raw bytes, or 64 hex digits, or
    /// base64 (standard alphabet, padding optional) of 32 bytes; text forms
    /// may have surrounding whitespace.
    pub fn parse(file: &[u8]) -> Result<ClusterKey, KeyError> {
        if file.len() == KEY_LEN {
            // 32 printable bytes would be a weak key typed by hand; a text
            // form of 32 bytes is never 32 characters long.
            if let Ok(b) = <[u8; KEY_LEN]>::try_from(file) {
                if !b.iter().all(|c| c.is_ascii_graphic()) {
                    return ClusterKey::from_bytes(b);
                }
            }
        }
        let text = file.trim_ascii();
        if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
            let mut b = [0u8; KEY_LEN];
            for (i, pair) in text.chunks_exact(2).enumerate() {
                let hi = (pair[0] as char).to_digit(16).unwrap_or(0);
                let lo = (pair[1] as char).to_digit(16).unwrap_or(0);
                b[i] = (hi * 16 + lo) as u8;
            }
            return ClusterKey::from_bytes(b);
        }
        use base64::Engine as _;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        match engine.decode(text) {
            Ok(v) => match <[u8; KEY_LEN]>::try_from(v.as_slice()) {
                Ok(b) => ClusterKey::from_bytes(b),
                Err(_) => Err(KeyError::BadFormat),
            },
            Err(_) => Err(KeyError::BadFormat),
        }
    }
}

/// The keys a node holds: every one is accepted; `send` seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<(KeyId, ClusterKey)>,
    send: KeyId,
    /// Encrypt payloads (and not only authenticate them).
    pub encrypt: bool,
    /// The AEAD this node seals with.
    pub cipher: Cipher,
}

/// At most this many keys at once: current, next, and one being retired.
pub const MAX_KEYS: usize = 3;

impl Keyring {
    /// One key, sent with and accepted.
    pub fn new(id: KeyId, key: ClusterKey, cipher: Cipher, encrypt: bool) -> Keyring {
        Keyring {
            keys: vec![(id, key)],
            send: id,
            encrypt,
            cipher,
        }
    }

    /// Accepts `key` under `id` too (a rollover's next key), replacing any
    /// key of that id. Refused beyond [`MAX_KEYS`] keys.
    pub fn accept(&mut self, id: KeyId, key: ClusterKey) -> Result<(), &'static str> {
        if let Some(k) = self.keys.iter_mut().find(|(i, _)| *i == id) {
            k.1 = key;
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err("a keyring holds at most three keys");
        }
        self.keys.push((id, key));
        Ok(())
    }

    /// Sends with key `id` from now on; it must be held.
    pub fn send_with(&mut self, id: KeyId) -> Result<(), &'static str> {
        if self.get(id).is_none() {
            return Err("no key of that id is held");
        }
        self.send = id;
        Ok(())
    }

    /// Stops accepting key `id`; the key sent with cannot be dropped.
    pub fn drop_key(&mut self, id: KeyId) -> Result<(), &'static str> {
        if id == self.send {
            return Err("the key frames are sent with cannot be dropped");
        }
        self.keys.retain(|(i, _)| *i != id);
        Ok(())
    }

    pub fn send_id(&self) -> KeyId {
        self.send
    }

    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(i, _)| *i)
    }

    pub fn get(&self, id: KeyId) -> Option<&ClusterKey> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }
}

/// Which direction of which session a key seals: its own key, so that
/// nonces (sequence numbers) need only be unique within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Direction {
    pub cluster: ClusterId,
    pub src: NodeId,
    pub dst: NodeId,
    pub src_incarnation: Incarnation,
}

/// One session direction's AEAD key.
pub struct FrameKey {
    key: LessSafeKey,
    id: KeyId,
    cipher: Cipher,
}

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameKey")
            .field("id", &self.id)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// HKDF salt: names the purpose and version, so no other use of the
/// cluster key (voting-file records) derives the same keys.
const FRAME_SALT: &[u8] = b"icx frame key v1";

/// Why an authenticated frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No tag, a bad auth field, or a key id this node does not hold.
    NotAuthenticated,
    /// The tag does not match: wrong key, forged or damaged.
    BadTag,
}

impl FrameKey {
    pub fn derive(master: &ClusterKey, id: KeyId, cipher: Cipher, dir: Direction) -> FrameKey {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, FRAME_SALT);
        let prk = salt.extract(&master.0);
        let info = [
            &dir.cluster.0.to_be_bytes()[..],
            &dir.src.0.to_be_bytes()[..],
            &dir.dst.0.to_be_bytes()[..],
            &dir.src_incarnation.0.to_be_bytes()[..],
            &[id.0, cipher as u8][..],
        ];
        let alg = cipher.algorithm();
        // Cannot fail: the output length is the algorithm's key length, far
        // below HKDF-SHA256's limit of 255 blocks.
        let okm = prk
            .expand(&info, alg)
            .unwrap_or_else(|_| unreachable!("HKDF output of one AEAD key"));
        FrameKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            id,
            cipher,
        }
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Seals `buf = header ‖ payload ‖ TAG_LEN bytes` in place: marks the
    /// header (flags, auth field), encrypts the payload if asked, and writes
    /// the tag at the end. The header's sequence number (and kind) make the
    /// nonce, so the caller must never seal two frames of one direction
    /// with the same number in the same space.
    ///
    /// Encrypted, the tag is the AEAD's over the header as associated data
    /// and the payload's ciphertext. Authenticated only, it is the AEAD's
    /// over the whole frame as associated data and nothing to encrypt: for
    /// AES-256-GCM that is GMAC (RFC 4543's construction), one GHASH pass
    /// over the bytes as they lie, with no ciphertext made and thrown away.
    pub fn seal(&self, buf: &mut [u8], header_len: usize, encrypt: bool) -> Result<(), AuthError> {
        let len = buf.len();
        if header_len < crate::HEADER_LEN || len < header_len + TAG_LEN {
            return Err(AuthError::NotAuthenticated);
        }
        let flags = &mut buf[field::FLAGS];
        *flags = (*flags & !(FLAG_AUTH | FLAG_ENCRYPTED))
            | FLAG_AUTH
            | if encrypt { FLAG_ENCRYPTED } else { 0 };
        buf[field::CRC].copy_from_slice(&[self.id.0, self.cipher as u8, 0, 0]);
        let nonce = nonce_of(buf);
        let (body, tag_out) = buf.split_at_mut(len - TAG_LEN);
        let tag = if encrypt {
            let (head, payload) = body.split_at_mut(header_len);
            self.key
                .seal_in_place_separate_tag(nonce, Aad::from(&*head), payload)
        } else {
            self.key
                .seal_in_place_separate_tag(nonce, Aad::from(&*body), &mut [])
        }
        .map_err(|_| AuthError::NotAuthenticated)?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Checks the tag of an authenticated, unencrypted datagram (the frame
    /// proper is `datagram[..len - TAG_LEN]`) where it lies: the tag is
    /// recomputed over the frame and compared in constant time.
    pub fn open(&self, datagram: &[u8], header_len: usize) -> Result<(), AuthError> {
        let len = datagram.len();
        if header_len < crate::HEADER_LEN
            || len < header_len + TAG_LEN
            || datagram[field::FLAGS] & FLAG_ENCRYPTED != 0
        {
            return Err(AuthError::NotAuthenticated);
        }
        let (body, tag) = datagram.split_at(len - TAG_LEN);
        let mut got = [0u8; TAG_LEN];
        got.copy_from_slice(tag);
        // Nothing to decrypt: the library checks the tag (in constant time)
        // over the associated data alone.
        self.key
            .open_in_place(nonce_of(datagram), Aad::from(body), &mut got)
            .map(|_| ())
            .map_err(|_| AuthError::BadTag)
    }

    /// Checks and decrypts an encrypted datagram in place; the frame proper
    /// (plaintext payload) is then `buf[..len - TAG_LEN]`.
    pub fn open_in_place(&self, buf: &mut [u8], header_len: usize) -> Result<(), AuthError> {
        let len = buf.len();
        if header_len < crate::HEADER_LEN || len < header_len + TAG_LEN {
            return Err(AuthError::NotAuthenticated);
        }
        let nonce = nonce_of(buf);
        let (head, rest) = buf.split_at_mut(header_len);
        self.key
            .open_in_place(nonce, Aad::from(&*head), rest)
            .map(|_| ())
            .map_err(|_| AuthError::BadTag)
    }
}

/// The key id and cipher a datagram claims, if it claims to be
/// authenticated with a well-formed auth field.
pub fn auth_field(datagram: &[u8]) -> Option<(KeyId, Cipher)> {
    let flags = *datagram.get(field::FLAGS)?;
    if flags & FLAG_AUTH == 0 {
        return None;
    }
    let f = datagram.get(field::CRC)?;
    if f[2] != 0 || f[3] != 0 {
        return None;
    }
    Some((KeyId(f[0]), Cipher::from_u8(f[1])?))
}

/// Bytes of the MAC after a voting-file record (HMAC-SHA256).
pub const RECORD_MAC_LEN: usize = 32;

/// The HKDF salt of voting-file record MACs: apart from frame keys.
const RECORD_SALT: &[u8] = b"icx voting record v1";

/// The key that MACs voting-file records (HMAC-SHA256, derived from the
/// cluster key): a host that can write the shared disk but has no key
/// cannot fake a node's disk heartbeat. Records carry no nonce; replaying
/// an old record is harmless (the reader keeps the newest by incarnation
/// and counter).
#[derive(Clone)]
pub struct RecordKey(hmac::Key);

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

impl RecordKey {
    pub fn derive(master: &ClusterKey, cluster: u32) -> RecordKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, RECORD_SALT).extract(&master.0);
        let info = [&cluster.to_be_bytes()[..]];
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .unwrap_or_else(|_| unreachable!("HKDF output of one HMAC key"));
        RecordKey(hmac::Key::from(okm))
    }

    pub fn mac(&self, record: &[u8]) -> [u8; RECORD_MAC_LEN] {
        let mut out = [0u8; RECORD_MAC_LEN];
        out.copy_from_slice(hmac::sign(&self.0, record).as_ref());
        out
    }

    /// Constant-time check of `mac` over `record`.
    pub fn verify(&self, record: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.0, record, mac).is_ok()
    }
}

/// Whether an authenticated datagram claims an encrypted payload.
pub fn is_encrypted(datagram: &[u8]) -> bool {
    datagram
        .get(field::FLAGS)
        .is_some_and(|f| f & FLAG_ENCRYPTED != 0)
}

/// Numbers a control frame (ack, probe) in its own nonce space: without a
/// key these carry zero; with one, the sealer numbers them just before it
/// seals. False if `header` is too short or a data frame (numbered by the
/// session).
pub fn number_control_frame(header: &mut [u8], seq: u64) -> bool {
    if header.len() < crate::HEADER_LEN || header[field::KIND] == FrameKind::Data as u8 {
        return false;
    }
    header[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    true
}

/// Whether a datagram claims to be authenticated.
pub fn is_authenticated(datagram: &[u8]) -> bool {
    datagram
        .get(field::FLAGS)
        .is_some_and(|f| f & FLAG_AUTH != 0)
}

/// Nonce domains: data frames are numbered by the session's data sequence;
/// acks and probes by a sequence of their own (they carry it in the same
/// header field, where frames without a key carry zero).
pub const DOMAIN_DATA: u8 = 0;
pub const DOMAIN_CONTROL: u8 = 1;

/// The nonce space of a frame kind.
pub fn domain_of(kind: u8) -> u8 {
    if kind == FrameKind::Data as u8 {
        DOMAIN_DATA
    } else {
        DOMAIN_CONTROL
    }
}

/// domain ‖ 0 0 0 ‖ sequence number, from the header (callers checked the
/// length covers it).
fn nonce_of(buf: &[u8]) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[0] = domain_of(buf[field::KIND]);
    n[4..].copy_from_slice(&buf[field::SEQ]);
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; KEY_LEN]).unwrap()
    }

    fn dir() -> Direction {
        Direction {
            cluster: ClusterId(7),
            src: NodeId(1),
            dst: NodeId(2),
            src_incarnation: Incarnation(5),
        }
    }

    /// A datagram of a header (zeros but kind and seq) and a payload.
    fn frame(kind: FrameKind, seq: u64, payload: &[u8]) -> Vec<u8> {
        let hl = kind.header_len();
        let mut v = vec![0u8; hl + payload.len() + TAG_LEN];
        v[field::KIND] = kind as u8;
        v[field::SEQ].copy_from_slice(&seq.to_be_bytes());
        v[hl..hl + payload.len()].copy_from_slice(payload);
        v
    }

    #[test]
    fn key_file_forms() {
        let raw: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x80).collect();
        let k = ClusterKey::parse(&raw).unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(ClusterKey::parse(format!("{hex}\n").as_bytes()).unwrap(), k);
        assert_eq!(ClusterKey::parse(hex.to_uppercase().as_bytes()).unwrap(), k);
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(
            ClusterKey::parse(format!(" {b64}\n").as_bytes()).unwrap(),
            k
        );
        assert_eq!(
            ClusterKey::parse(b64.trim_end_matches('=').as_bytes()).unwrap(),
            k
        );
        assert_eq!(ClusterKey::parse(b"short"), Err(KeyError::BadFormat));
        assert_eq!(ClusterKey::parse(&[b'a'; 32]), Err(KeyError::BadFormat));
        assert_eq!(ClusterKey::parse(&[0; 32]), Err(KeyError::AllZero));
        assert_eq!(
            ClusterKey::parse(&hex.as_bytes()[..62]),
            Err(KeyError::BadFormat)
        );
        assert!(!format!("{k:?}").contains(&hex[..4]));
    }

    #[test]
    fn seal_then_open_both_modes_and_ciphers() {
        for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let k = FrameKey::derive(&key(3), KeyId(1), cipher, dir());
            let payload = b"block bytes here";
            let mut a = frame(FrameKind::Data, 9, payload);
            let hl = FrameKind::Data.header_len();
            k.seal(&mut a, hl, false).unwrap();
            assert_eq!(auth_field(&a), Some((KeyId(1), cipher)));
            assert_eq!(&a[hl..hl + payload.len()], payload, "authenticated only");
            k.open(&a, hl).unwrap();
            let mut e = frame(FrameKind::Data, 9, payload);
            k.seal(&mut e, hl, true).unwrap();
            assert_ne!(&e[hl..hl + payload.len()], payload, "encrypted");
            assert_eq!(k.open(&e, hl), Err(AuthError::NotAuthenticated));
            k.open_in_place(&mut e, hl).unwrap();
            assert_eq!(&e[hl..hl + payload.len()], payload);
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let k = FrameKey::derive(&key(3), KeyId(1), Cipher::Aes256Gcm, dir());
        let hl = FrameKind::Data.header_len();
        for encrypt in [false, true] {
            let mut f = frame(FrameKind::Data, 77, b"0123456789");
            k.seal(&mut f, hl, encrypt).unwrap();
            for bit in 0..f.len() * 8 {
                let mut g = f.clone();
                g[bit / 8] ^= 1 << (bit % 8);
                let r = if encrypt {
                    k.open_in_place(&mut g, hl)
                } else {
                    k.open(&g, hl)
                };
                assert!(r.is_err(), "bit {bit} flipped, encrypt {encrypt}");
            }
        }
    }

    #[test]
    fn keys_differ_by_direction_incarnation_id_and_master() {
        let hl = FrameKind::Ack.header_len();
        let mut f = frame(FrameKind::Ack, 1, b"");
        FrameKey::derive(&key(3), KeyId(1), Cipher::Aes256Gcm, dir())
            .seal(&mut f, hl, false)
            .unwrap();
        let others = [
            (key(4), KeyId(1), dir()),
            (key(3), KeyId(2), dir()),
            (
                key(3),
                KeyId(1),
                Direction {
                    src: NodeId(2),
                    dst: NodeId(1),
                    ..dir()
                },
            ),
            (
                key(3),
                KeyId(1),
                Direction {
                    src_incarnation: Incarnation(6),
                    ..dir()
                },
            ),
            (
                key(3),
                KeyId(1),
                Direction {
                    cluster: ClusterId(8),
                    ..dir()
                },
            ),
        ];
        for (m, id, d) in others {
            let k = FrameKey::derive(&m, id, Cipher::Aes256Gcm, d);
            // The auth field names key 1 either way; only the tag decides.
            assert_eq!(k.open(&f, hl), Err(AuthError::BadTag), "{id:?} {d:?}");
        }
    }

    #[test]
    fn data_and_control_frames_use_separate_nonce_spaces() {
        // Same seq, same key: different nonces, so different tags on the
        // same bytes but for the kind.
        let k = FrameKey::derive(&key(3), KeyId(1), Cipher::Aes256Gcm, dir());
        let mut a = frame(FrameKind::Data, 1, b"");
        let mut b = a.clone();
        b[field::KIND] = FrameKind::Ack as u8;
        let hl = FrameKind::Data.header_len();
        k.seal(&mut a, hl, false).unwrap();
        k.seal(&mut b, hl, false).unwrap();
        assert_ne!(a[a.len() - TAG_LEN..], b[b.len() - TAG_LEN..]);
    }

    #[test]
    fn record_macs_depend_on_key_cluster_and_bytes() {
        let k = RecordKey::derive(&key(3), 7);
        let m = k.mac(b"record");
        assert!(k.verify(b"record", &m));
        assert!(!k.verify(b"recorc", &m));
        assert!(!k.verify(b"record", &m[..16]));
        assert!(!RecordKey::derive(&key(4), 7).verify(b"record", &m));
        assert!(!RecordKey::derive(&key(3), 8).verify(b"record", &m));
    }

    #[test]
    fn keyring_rollover_rules() {
        let mut r = Keyring::new(KeyId(1), key(1), Cipher::Aes256Gcm, false);
        r.accept(KeyId(2), key(2)).unwrap();
        r.accept(KeyId(3), key(3)).unwrap();
        assert!(r.accept(KeyId(4), key(4)).is_err());
        assert!(r.drop_key(KeyId(1)).is_err());
        r.send_with(KeyId(2)).unwrap();
        r.drop_key(KeyId(1)).unwrap();
        assert_eq!(r.ids().collect::<Vec<_>>(), [KeyId(2), KeyId(3)]);
        assert!(r.send_with(KeyId(1)).is_err());
        assert!(!format!("{r:?}").contains("[1, 1"));
    }
}
