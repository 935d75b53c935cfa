//! `stint credential-process`: the AWS `credential_process` protocol, with a
//! user-only cache file so repeated SDK calls do not reach the broker.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Cached credentials are reused while at least this many seconds are left.
/// botocore starts refreshing 15 minutes before `Expiration`; a smaller
/// margin would send every SDK call in that window to the broker.
pub const REUSE_MARGIN_SECS: i64 = 16 * 60;

/// The cache file for one broker + grant + audience + caller token
/// (`identity`: the SHA-256 of the whole OIDC token), under
/// `$XDG_CACHE_HOME/stint` or `~/.cache/stint`. The whole token, not its
/// unverified `iss`/`sub`, is part of the key: a job whose token differs in
/// any claim (another workflow, another event) never reuses credentials the
/// broker issued to another token, so every policy decision is the
/// broker's and is audited.
pub fn cache_path(broker: &str, grant: &str, audience: &str, identity: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{broker}\n{grant}\n{audience}\n{identity}").as_bytes(),
    );
    let name: String = digest.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect();
    Some(base.join("stint").join(format!("credential-process-{name}.json")))
}

/// Cached credentials that are still good for [`REUSE_MARGIN_SECS`].
pub fn read_cached(path: &Path, now: i64) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    let expiration = value.get("Expiration")?.as_str()?;
    let expires = time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339).ok()?;
    (expires.unix_timestamp() - now >= REUSE_MARGIN_SECS && value.get("Version") == Some(&Value::from(1)))
        .then_some(value)
}

/// Writes the cache atomically, readable by its owner only (0600, folder 0700).
pub fn write_cached(path: &Path, credentials: &Value) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("cache path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    crate::private_file::replace(path, credentials.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reuses_only_credentials_with_time_left() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let path = dir.path().join("stint").join("c.json");
        let now = 1_800_000_000;
        let creds = |exp: i64| {
            json!({"Version": 1, "AccessKeyId": "A", "SecretAccessKey": "S", "SessionToken": "T",
            "Expiration": crate::clock::rfc3339(exp)})
        };
        assert!(write_cached(&path, &creds(now + 3600)).is_ok());
        assert!(read_cached(&path, now).is_some());
        assert!(read_cached(&path, now + 3600 - REUSE_MARGIN_SECS + 1).is_none());
        let a = cache_path("b", "g", "aud", "token-a-sha256");
        assert!(
            a.is_some() && a != cache_path("b", "g", "aud", "token-b-sha256"),
            "callers never share a cache file"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600);
        }
    }
}
