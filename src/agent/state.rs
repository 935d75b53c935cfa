//! What the agent holds, kept on disk (`state_dir`, one 0600 file per
//! grant), so that the agent started after `stint agent --once` (the init
//! container) or after a restart takes the credentials over instead of
//! issuing them again: one issuance per pod start, not two, and the AWS
//! endpoint answers at once.
//!
//! The directory must be a volume the agent's containers share and the
//! app does not mount: it holds the whole broker answer.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// A credential taken over from the state directory.
pub struct Saved {
    /// Unix seconds when the agent received it (the renewal point is a
    /// share of the lifetime from here).
    pub received_at: i64,
    /// The broker's answer.
    pub body: Map<String, Value>,
}

fn path(dir: &Path, grant: &str) -> PathBuf {
    // Grant names are 1-64 of A-Z a-z 0-9 - _ . (checked at load), so
    // with the suffix the name never leaves `dir`.
    dir.join(format!("{grant}.json"))
}

/// Keeps `body`, received at `received_at`, as `grant`'s current
/// credential (replaced atomically, 0600).
pub fn save(dir: &Path, grant: &str, received_at: i64, body: &Map<String, Value>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let text = json!({ "received_at": received_at, "body": body }).to_string();
    crate::private_file::replace(&path(dir, grant), text.as_bytes())
}

/// `grant`'s kept credential, if there is one that has not expired by
/// `now` (Unix seconds). Anything unreadable is ignored: the agent then
/// issues afresh, which is always safe.
pub fn load(dir: &Path, grant: &str, now: i64) -> Option<Saved> {
    let text = std::fs::read_to_string(path(dir, grant)).ok()?;
    let mut value: Value = serde_json::from_str(&text).ok()?;
    let received_at = value.get("received_at")?.as_i64()?;
    let Value::Object(body) = value.get_mut("body")?.take() else {
        return None;
    };
    (expires_at(&body)? > now && received_at <= now).then_some(Saved { received_at, body })
}

/// A broker answer's `expires_at`, Unix seconds.
pub fn expires_at(body: &Map<String, Value>) -> Option<i64> {
    let text = body.get("expires_at").and_then(Value::as_str)?;
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(at.unix_timestamp())
}

/// Forgets `grant`'s credential (expired, or the agent stopping).
pub fn remove(dir: &Path, grant: &str) {
    let _ = std::fs::remove_file(path(dir, grant));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(expires_at: &str) -> Map<String, Value> {
        let Value::Object(map) = json!({ "kind": "token", "token": "t", "expires_at": expires_at }) else {
            unreachable!()
        };
        map
    }

    #[test]
    fn a_saved_credential_is_taken_over_until_it_expires() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        // 2026-12-05T00:00:00Z
        let expiry = 1_796_428_800;
        save(dir.path(), "feed", expiry - 300, &body("2026-12-05T00:00:00Z"))?;
        let saved = load(dir.path(), "feed", expiry - 1).map(|s| (s.received_at, s.body));
        assert_eq!(saved, Some((expiry - 300, body("2026-12-05T00:00:00Z"))));
        assert!(load(dir.path(), "feed", expiry).is_none(), "expired");
        assert!(load(dir.path(), "other", expiry - 1).is_none(), "another grant");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("feed.json"))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        remove(dir.path(), "feed");
        assert!(load(dir.path(), "feed", expiry - 1).is_none(), "removed");
        Ok(())
    }

    #[test]
    fn a_damaged_file_is_ignored() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("feed.json"), "{\"received_at\": 1, \"body\": ")?;
        assert!(load(dir.path(), "feed", 2).is_none());
        Ok(())
    }
}
