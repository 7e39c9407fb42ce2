//! Sealing with the broker key: every object the broker hands out (client ids, flow
//! cookies, consent forms, codes, access and refresh tokens) is AES-256-GCM sealed, so the
//! broker keeps no state and every instance with the same key accepts it.
//!
//! Wire form: `<prefix><kid>.<base64url(nonce ‖ ciphertext ‖ tag)>` where the prefix names the
//! kind (`tbc_` client id, `tba_` access token, …) and `kid` (8 hex digits) names the key. The
//! kind is also the AEAD's associated data: an access token cannot be replayed as a code.
//! Sub-keys come from the key file through HKDF-SHA256, one for sealing and one for MACs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use std::path::{Path, PathBuf};

/// The kinds of sealed object; each has its own prefix and associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClientId,
    Flow,
    Consent,
    Code,
    AccessToken,
    RefreshToken,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ClientId,
        Kind::Flow,
        Kind::Consent,
        Kind::Code,
        Kind::AccessToken,
        Kind::RefreshToken,
    ];

    /// The text every sealed object of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::ClientId => "tbc_",
            Kind::Flow => "tbf_",
            Kind::Consent => "tbk_",
            Kind::Code => "tbx_",
            Kind::AccessToken => "tba_",
            Kind::RefreshToken => "tbr_",
        }
    }
}

/// Length of a broker key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a broker key (expected 32 random bytes, base64url, on one line)")]
    Format { path: String },
    #[error("generating a key: no system randomness")]
    Random,
}

/// One key: its id and derived sub-keys.
struct Key {
    kid: [u8; 8],
    aead: LessSafeKey,
    mac: hmac::Key,
}

impl Key {
    fn new(material: &[u8; KEY_LEN]) -> Key {
        let digest = ring::digest::digest(&ring::digest::SHA256, material);
        let mut kid = [0u8; 8];
        for (i, b) in digest.as_ref()[..4].iter().enumerate() {
            kid[2 * i] = HEX[usize::from(b >> 4)];
            kid[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tailbridge broker v1").extract(material);
        let mut seal = [0u8; 32];
        let mut mac = [0u8; 32];
        expand(&prk, b"seal", &mut seal);
        expand(&prk, b"mac", &mut mac);
        Key {
            kid,
            // AES_256_GCM takes exactly 32 bytes, which `seal` is.
            aead: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &seal).unwrap_or_else(|_| unreachable!()),
            ),
            mac: hmac::Key::new(hmac::HMAC_SHA256, &mac),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8]) {
    let infos = [info];
    // Output lengths up to 255 × 32 bytes are valid; 32 always is.
    if let Ok(okm) = prk.expand(&infos, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

/// The broker's keys: the first seals, all open.
pub struct KeyRing {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// A ring from raw key material (tests, benches).
    pub fn from_keys(keys: &[[u8; KEY_LEN]]) -> KeyRing {
        KeyRing {
            keys: keys.iter().map(Key::new).collect(),
            rng: SystemRandom::new(),
        }
    }

    /// Load the key files; the first is created (mode 0600) when it does not exist yet.
    pub fn load(files: &[PathBuf]) -> Result<KeyRing, KeyError> {
        let mut keys = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            keys.push(read_or_create(f, i == 0)?);
        }
        Ok(KeyRing::from_keys(&keys))
    }

    /// The id of the sealing key (for logs and `doctor`).
    pub fn sealing_kid(&self) -> String {
        self.keys
            .first()
            .map(|k| String::from_utf8_lossy(&k.kid).into_owned())
            .unwrap_or_default()
    }

    /// Seal `plain` as an object of `kind`.
    pub fn seal(&self, kind: Kind, plain: &[u8]) -> Option<String> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plain);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kind.prefix().as_bytes()),
                &mut buf[NONCE_LEN..],
            )
            .ok()?;
        buf.extend_from_slice(tag.as_ref());
        let mut out = String::with_capacity(kind.prefix().len() + 9 + buf.len() * 4 / 3 + 4);
        out.push_str(kind.prefix());
        out.push_str(std::str::from_utf8(&key.kid).ok()?);
        out.push('.');
        B64.encode_string(&buf, &mut out);
        Some(out)
    }

    /// Open a sealed object of `kind`: `None` when it is of another kind, sealed with an
    /// unknown key, tampered with or not a sealed object at all.
    pub fn open(&self, kind: Kind, sealed: &str) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(kind.prefix())?;
        let (kid, data) = rest.split_once('.')?;
        let key = self.keys.iter().find(|k| k.kid == kid.as_bytes())?;
        let mut buf = B64.decode(data).ok()?;
        if buf.len() < NONCE_LEN + 16 {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN]).ok()?;
        let plain = key
            .aead
            .open_within(
                nonce,
                Aad::from(kind.prefix().as_bytes()),
                &mut buf,
                NONCE_LEN..,
            )
            .ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
    }

    /// A MAC of `data` under the sealing key, base64url (client secrets, CSRF tokens).
    pub fn mac(&self, purpose: &str, data: &[u8]) -> String {
        match self.keys.first() {
            Some(k) => B64.encode(mac_with(k, purpose, data).as_ref()),
            None => String::new(),
        }
    }

    /// Whether `given` is the MAC of `data` under any key (constant time per key).
    pub fn verify_mac(&self, purpose: &str, data: &[u8], given: &str) -> bool {
        let Ok(tag) = B64.decode(given) else {
            return false;
        };
        let m = msg(purpose, data);
        self.keys
            .iter()
            .any(|k| hmac::verify(&k.mac, &m, &tag).is_ok())
    }

    /// `n` random bytes, base64url (nonces, state values, PKCE verifiers).
    pub fn random(&self, n: usize) -> Option<String> {
        let mut b = vec![0u8; n];
        self.rng.fill(&mut b).ok()?;
        Some(B64.encode(b))
    }
}

fn msg(purpose: &str, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(purpose.len() + 1 + data.len());
    m.extend_from_slice(purpose.as_bytes());
    m.push(0);
    m.extend_from_slice(data);
    m
}

fn mac_with(k: &Key, purpose: &str, data: &[u8]) -> hmac::Tag {
    hmac::sign(&k.mac, &msg(purpose, data))
}

/// Read a key file, or create it (0600) when `create` and it does not exist.
fn read_or_create(path: &Path, create: bool) -> Result<[u8; KEY_LEN], KeyError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable(path);
            parse_key(&text).ok_or(KeyError::Format { path: shown })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut key = [0u8; KEY_LEN];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| KeyError::Random)?;
            write_new(path, &format!("{}\n", B64.encode(key))).map_err(|source| KeyError::Io {
                path: shown.clone(),
                source,
            })?;
            log::info!("auth.broker: created a new broker key in {shown} (mode 0600)");
            Ok(key)
        }
        Err(source) => Err(KeyError::Io {
            path: shown,
            source,
        }),
    }
}

/// Say loudly when others may read a key file (`doctor` fails on it too).
fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                log::warn!(
                    "auth.broker: {} has mode {mode:o}: whoever reads it can mint tokens for any user; chmod 600 it",
                    path.display()
                );
            }
        }
    }
}

/// A key file's content: 32 bytes as base64url (or standard base64) on one line. Pure.
pub fn parse_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let t = text.trim();
    let bytes = B64
        .decode(t.trim_end_matches('='))
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())?;
    bytes.try_into().ok()
}

#[cfg(unix)]
fn write_new(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_new(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(k: u8) -> KeyRing {
        KeyRing::from_keys(&[[k; KEY_LEN]])
    }

    #[test]
    fn seal_and_open() {
        let r = ring(1);
        let s = r.seal(Kind::AccessToken, b"hello").unwrap();
        assert!(s.starts_with("tba_"), "{s}");
        assert_eq!(r.open(Kind::AccessToken, &s).unwrap(), b"hello");
        // Two seals of the same text differ (random nonce).
        assert_ne!(s, r.seal(Kind::AccessToken, b"hello").unwrap());
    }

    #[test]
    fn refusals() {
        let r = ring(1);
        let s = r.seal(Kind::Code, b"payload").unwrap();
        // Another kind: wrong prefix, and with the prefix swapped, wrong associated data.
        assert!(r.open(Kind::AccessToken, &s).is_none());
        let swapped = s.replacen("tbx_", "tba_", 1);
        assert!(r.open(Kind::AccessToken, &swapped).is_none());
        // Another key.
        assert!(ring(2).open(Kind::Code, &s).is_none());
        // Every single-character change of the body is refused.
        let dot = s.find('.').unwrap();
        for i in dot + 1..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            if t != s {
                assert!(r.open(Kind::Code, &t).is_none(), "tampered at {i}");
            }
        }
        for junk in [
            "",
            "tbx_",
            "tbx_0000.",
            "tbx_zz.AAAA",
            "nonsense",
            "tbx_abcd.!!!",
        ] {
            assert!(r.open(Kind::Code, junk).is_none(), "{junk}");
        }
        // Truncated.
        assert!(r.open(Kind::Code, &s[..s.len() - 3]).is_none());
    }

    #[test]
    fn rotation() {
        let old = ring(1);
        let s_old = old.seal(Kind::RefreshToken, b"x").unwrap();
        let both = KeyRing::from_keys(&[[2; KEY_LEN], [1; KEY_LEN]]);
        assert_eq!(both.open(Kind::RefreshToken, &s_old).unwrap(), b"x");
        let s_new = both.seal(Kind::RefreshToken, b"y").unwrap();
        assert!(old.open(Kind::RefreshToken, &s_new).is_none());
        assert_eq!(ring(2).open(Kind::RefreshToken, &s_new).unwrap(), b"y");
        // MACs: made with the first key, checked with all.
        let m = old.mac("secret", b"id");
        assert!(both.verify_mac("secret", b"id", &m));
        assert!(!both.verify_mac("secret", b"other", &m));
        assert!(!both.verify_mac("csrf", b"id", &m));
        assert!(!ring(3).verify_mac("secret", b"id", &m));
        assert!(!both.verify_mac("secret", b"id", "not base64!"));
    }

    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("tb-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("broker.key");
        let a = KeyRing::load(std::slice::from_ref(&f)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Loaded again: the same key.
        let b = KeyRing::load(std::slice::from_ref(&f)).unwrap();
        let s = a.seal(Kind::ClientId, b"c").unwrap();
        assert_eq!(b.open(Kind::ClientId, &s).unwrap(), b"c");
        // Only the first file is created; a missing second one is an error.
        let missing = dir.join("old.key");
        assert!(matches!(
            KeyRing::load(&[f.clone(), missing]),
            Err(KeyError::Io { .. })
        ));
        std::fs::write(dir.join("bad.key"), "short").unwrap();
        assert!(matches!(
            KeyRing::load(&[dir.join("bad.key")]),
            Err(KeyError::Format { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
