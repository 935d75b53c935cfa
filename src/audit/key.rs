//! The audit key: HMACs of token ids, so an auditor holding a token can find
//! its records while the log alone reveals no token id.

use std::fs;
use std::path::Path;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::keys::write_private;

/// HMAC-SHA256 key for audit hashes.
pub struct AuditKey {
    key: hmac::Key,
}

impl AuditKey {
    /// Loads a hex key from `path`, creating 32 random bytes (mode 0600)
    /// when the file does not exist. A key file other users can read is
    /// refused (the error says `chmod 600`).
    pub fn load_or_create(path: &Path) -> Result<AuditKey, String> {
        let shown = path.display();
        match fs::read_to_string(path) {
            Ok(text) => {
                crate::private_file::check_key_mode(path)?;
                let bytes = hex_decode(text.trim())
                    .filter(|b| b.len() >= 32)
                    .ok_or_else(|| format!("{shown}: expected at least 32 bytes as hex"))?;
                Ok(AuditKey::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| "random number generator failed".to_string())?;
                match write_private(path, format!("{}\n", hex_encode(&bytes)).as_bytes()) {
                    Ok(()) => {}
                    // Another replica created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return AuditKey::load(path),
                    Err(e) => return Err(format!("{shown}: {e}")),
                }
                tracing::info!(path = %shown, "created a new audit key");
                Ok(AuditKey::from_bytes(&bytes))
            }
            Err(e) => Err(format!("{shown}: {e}")),
        }
    }

    /// Loads an existing key; never creates one. Refused, as above, when
    /// other users can read it.
    pub fn load(path: &Path) -> Result<AuditKey, String> {
        crate::private_file::check_key_mode(path)?;
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = hex_decode(text.trim())
            .filter(|b| b.len() >= 32)
            .ok_or_else(|| format!("{}: expected at least 32 bytes as hex", path.display()))?;
        Ok(AuditKey::from_bytes(&bytes))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> AuditKey {
        AuditKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// 32 bytes derived from the key for `label` (HMAC of the label), for
    /// keys that must follow the audit key, such as the checkpoint key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        let tag = hmac::sign(&self.key, format!("stint-derive-v1\n{label}").as_bytes());
        for (o, b) in out.iter_mut().zip(tag.as_ref()) {
            *o = *b;
        }
        out
    }

    /// Hex HMAC of a token's `jti`. The input is prefixed so that no
    /// caller-chosen `jti` can make stint compute (and log) the HMAC of one
    /// of its own inputs, such as the checkpoint seed or a record MAC.
    pub fn hash_jti(&self, jti: &str) -> String {
        self.hash(&format!("stint-jti-v1\n{jti}"))
    }

    /// Hex HMAC-SHA256 of `value`. Callers prefix `value` with a label of
    /// their own, so different uses of the key never collide.
    pub fn hash(&self, value: &str) -> String {
        hex_encode(hmac::sign(&self.key, value.as_bytes()).as_ref())
    }
}

/// Lowercase hex, written into one string (no allocation per byte: this
/// runs several times for every audit record).
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    // Two digits computed per byte: `write!("{b:02x}")` went through the
    // formatting machinery for every byte, 6% of the audit writer's CPU
    // (three hashes per record).
    let digit = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 });
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = AuditKey::from_bytes(&[1; 32]);
        let b = AuditKey::from_bytes(&[2; 32]);
        assert_eq!(a.hash("jti-1"), a.hash("jti-1"));
        assert_ne!(a.hash("jti-1"), b.hash("jti-1"));
        assert_eq!(a.hash("x").len(), 64);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex_encode(&[0x00, 0x0f, 0xa9, 0xff]), "000fa9ff");
        assert_eq!(hex_decode(&hex_encode(&[0, 15, 255])), Some(vec![0, 15, 255]));
        assert_eq!(hex_decode("zz"), None);
    }
}
