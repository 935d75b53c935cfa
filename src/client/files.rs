//! `stint exec --watch --out-dir DIR`: the credentials as files, for a
//! COMMAND that reads them (again on SIGHUP) rather than its environment.
//! Each file is replaced whole (written aside 0600, synced, renamed), so a
//! reader sees the old file or the new one, never a part or a mix.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::env::ChildEnv;

/// The AWS shared-credentials file (`AWS_SHARED_CREDENTIALS_FILE`).
pub const AWS_CREDENTIALS: &str = "aws-credentials";

/// The libpq service file (`PGSERVICEFILE`, `PGSERVICE=<grant>`).
pub const PG_SERVICE: &str = "pg_service.conf";

/// File name → contents: one file per variable of `env`, named as the
/// variable and holding exactly its value, plus an AWS shared-credentials
/// file for an `aws` grant and a libpq service file for a `postgres` one.
pub fn render(issued: &[(&str, &Map<String, Value>)], env: &ChildEnv) -> BTreeMap<String, Vec<u8>> {
    let mut files: BTreeMap<String, Vec<u8>> = env
        .vars
        .iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect();
    let text = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .unwrap_or_default()
    };
    for (grant, body) in issued {
        match body.get("kind").and_then(Value::as_str) {
            Some("aws") => {
                let c = body.get("credentials");
                let ini = format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
                    text(c, "AccessKeyId"),
                    text(c, "SecretAccessKey"),
                    text(c, "SessionToken")
                );
                files.insert(AWS_CREDENTIALS.into(), ini.into_bytes());
            }
            Some("postgres") => {
                let db = body.get("database");
                let service = format!(
                    "[{grant}]\nhost={}\nport={}\ndbname={}\nuser={}\npassword={}\n",
                    text(db, "host"),
                    text(db, "port"),
                    text(db, "dbname"),
                    text(db, "username"),
                    text(db, "password")
                );
                files.insert(PG_SERVICE.into(), service.into_bytes());
            }
            _ => {}
        }
    }
    files
}

/// Writes `files` into `dir` (made 0700 if missing), each atomically and
/// 0600, skipping those unchanged since `before`, and removes the ones
/// `before` had that are gone.
pub fn write(dir: &Path, files: &BTreeMap<String, Vec<u8>>, before: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.recursive(true).create(dir)?;
    }
    for (name, bytes) in files {
        if before.get(name) != Some(bytes) {
            crate::private_file::replace(&dir.join(name), bytes)?;
        }
    }
    for name in before.keys().filter(|name| !files.contains_key(*name)) {
        let _ = std::fs::remove_file(dir.join(name));
    }
    Ok(())
}

/// Removes the files stint wrote (at exit: no credential is left on disk
/// after COMMAND is gone).
pub fn remove(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for name in files.keys() {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn rendered(grant: &str, body: &Map<String, Value>) -> BTreeMap<String, String> {
        let mut env = ChildEnv::default();
        assert!(env.add(grant, body, &BTreeMap::new()).is_ok());
        render(&[(grant, body)], &env)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).to_string()))
            .collect()
    }

    #[test]
    fn one_file_per_value_named_as_its_variable() {
        let body = map(json!({"kind": "secrets", "secrets": {"prod/api/stripe": "sk\nline2"}}));
        let files = rendered("s", &body);
        assert_eq!(files, BTreeMap::from([("PROD_API_STRIPE".into(), "sk\nline2".into())]));
    }

    #[test]
    fn aws_gets_a_shared_credentials_file() {
        let body = map(json!({"kind": "aws", "credentials": {
            "AccessKeyId": "AKIA1", "SecretAccessKey": "sec", "SessionToken": "tok", "Expiration": "2026-12-04T10:00:00Z"}}));
        let files = rendered("deploy", &body);
        assert_eq!(
            files.get(AWS_CREDENTIALS).map(String::as_str),
            Some("[default]\naws_access_key_id = AKIA1\naws_secret_access_key = sec\naws_session_token = tok\n")
        );
        assert_eq!(files.get("AWS_SECRET_ACCESS_KEY").map(String::as_str), Some("sec"));
    }

    #[test]
    fn postgres_gets_a_service_file_named_after_the_grant() {
        let body = map(json!({"kind": "postgres", "database": {
            "host": "db", "port": 5432, "username": "u", "password": "p", "dbname": "app"}}));
        let files = rendered("app-db", &body);
        assert_eq!(
            files.get(PG_SERVICE).map(String::as_str),
            Some("[app-db]\nhost=db\nport=5432\ndbname=app\nuser=u\npassword=p\n")
        );
        assert_eq!(
            files.get("DATABASE_URL").map(String::as_str),
            Some("postgres://u:p@db:5432/app")
        );
    }

    #[cfg(unix)]
    #[test]
    fn writes_are_private_skip_unchanged_files_and_drop_gone_ones() {
        use std::os::unix::fs::PermissionsExt;
        let Ok(tmp) = tempfile::tempdir() else { return };
        let dir = tmp.path().join("creds");
        let first = BTreeMap::from([("A".to_string(), b"1".to_vec()), ("B".to_string(), b"2".to_vec())]);
        assert!(write(&dir, &first, &BTreeMap::new()).is_ok());
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode(&dir), Some(0o700));
        assert_eq!(mode(&dir.join("A")), Some(0o600));
        let second = BTreeMap::from([("A".to_string(), b"9".to_vec())]);
        assert!(write(&dir, &second, &first).is_ok());
        assert_eq!(std::fs::read(dir.join("A")).ok(), Some(b"9".to_vec()));
        assert!(!dir.join("B").exists());
        remove(&dir, &second);
        assert!(!dir.join("A").exists());
    }
}
