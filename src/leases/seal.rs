//! Sealing a secret a lease must keep to end its credential (a GitHub
//! token is revoked by presenting it): AES-256-GCM under a key derived
//! from the audit key, so every broker sharing the store can open it and
//! nobody who can only read the store (an auditor's SELECT) can use it.
//! The lease id is the associated data: a sealed token copied to another
//! lease does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::audit::AuditKey;

/// Seals and opens lease secrets.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// The sealer that follows `audit_key`.
    pub fn from_audit_key(audit_key: &AuditKey) -> Result<Sealer, String> {
        let bytes = audit_key.derive("stint lease secret sealing key v1");
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "cannot derive the lease sealing key".to_string())?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// `secret` sealed for lease `lease_id`: base64 of nonce and ciphertext.
    pub fn seal(&self, lease_id: &str, secret: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "the system random generator failed".to_string())?;
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(lease_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(STANDARD.encode(out))
    }

    /// The secret sealed for `lease_id`; an error if it was sealed under
    /// another audit key, for another lease, or altered.
    pub fn open(&self, lease_id: &str, sealed: &str) -> Result<String, String> {
        let fail = || "the sealed secret does not open (another audit key, or altered)".to_string();
        let bytes = STANDARD.decode(sealed).map_err(|_| fail())?;
        let (nonce, data) = bytes.split_at_checked(NONCE_LEN).ok_or_else(fail)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(lease_id.as_bytes()), &mut data)
            .map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(dir: &std::path::Path, name: &str) -> Result<Sealer, String> {
        Sealer::from_audit_key(&AuditKey::load_or_create(&dir.join(name))?)
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_lease_and_key() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (sealer(dir.path(), "a.key")?, sealer(dir.path(), "b.key")?);
        let sealed = a.seal("lease-1", "ghs_secret")?;
        assert!(!sealed.contains("ghs_secret"));
        assert_eq!(a.open("lease-1", &sealed), Ok("ghs_secret".to_string()));
        assert!(a.open("lease-2", &sealed).is_err(), "another lease");
        assert!(b.open("lease-1", &sealed).is_err(), "another audit key");
        assert_ne!(
            a.seal("lease-1", "ghs_secret").unwrap_or_default(),
            sealed,
            "a fresh nonce each time"
        );
        Ok(())
    }
}
