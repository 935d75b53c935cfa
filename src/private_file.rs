//! Files only stint's user may read: key files, the SQLite audit database,
//! the audit mirror. Each is created 0600 from its first byte (never
//! created readable and then narrowed), never through a symlink an
//! attacker planted, and a key file others can read stops start-up.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Options that create a file 0600 and refuse to follow a symlink at its
/// last path component (`O_NOFOLLOW`).
fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    }
    options
}

/// A name next to `path` that nobody can guess ahead of us: a fixed name
/// (`<path>.<pid>.tmp`) lets a local attacker place a symlink there first.
fn unpredictable_sibling(path: &Path) -> std::io::Result<PathBuf> {
    let mut random = [0u8; 16];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| std::io::Error::other("random number generator failed"))?;
    let mut name = path.as_os_str().to_owned();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    name.push(format!(".{hex}.tmp"));
    Ok(PathBuf::from(name))
}

/// Writes `bytes` to the new file `tmp` (0600, `O_EXCL|O_NOFOLLOW`) and
/// syncs it, before it is moved into place.
fn write_aside(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = private_options().write(true).create_new(true).open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes a secret file readable by its owner only, creating parent
/// folders. The file appears whole or not at all (written aside under an
/// unpredictable name with `O_CREAT|O_EXCL|O_NOFOLLOW`, then linked into
/// place), and an existing file is never replaced: two replicas starting at
/// once agree on one key (`AlreadyExists` for the loser).
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let tmp = unpredictable_sibling(path)?;
    // hard_link never follows or replaces whatever is at `path`.
    let linked = write_aside(&tmp, bytes).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    linked
}

/// Replaces `path` with `bytes` atomically (same guarantees as
/// [`write_new`], but an existing file is overwritten by the rename).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = unpredictable_sibling(path)?;
    let renamed = write_aside(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// Creates `path` empty and 0600 when it does not exist yet, so a database
/// or log that opens it afterwards never had a moment of wider access.
/// SQLite gives its `-wal`, `-shm` and `-journal` files the database
/// file's permissions, so they are 0600 too. An existing file is left as
/// it is.
pub fn create_if_missing(path: &Path) -> std::io::Result<()> {
    match private_options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `path` for appending, creating it 0600 when missing, never
/// through a symlink.
pub fn open_append(path: &Path) -> std::io::Result<fs::File> {
    private_options().append(true).create(true).open(path)
}

/// Refuses a key file that other users can read. A file stint's own user
/// owns must be 0600 or 0400: group read there is a mistake the owner can
/// fix. A file owned by someone else (a Kubernetes Secret volume: root
/// owns it, stint reads it through `fsGroup`) may be group-readable, as
/// that is how stint reads it; world-readable never.
pub fn check_key_mode(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(path) else {
            return Ok(()); // reading it reports the real error
        };
        let mode = meta.mode() & 0o777;
        let own = meta.uid() == nix::unistd::geteuid().as_raw();
        if mode & 0o004 != 0 || (own && mode & 0o040 != 0) {
            return Err(format!(
                "{}: key file is readable by {} (mode {mode:03o}); run `chmod 600 {}` (stint refuses to start with a key others can read)",
                path.display(),
                if mode & 0o004 != 0 { "every user" } else { "its group" },
                path.display(),
            ));
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn new_files_are_private_and_never_replace_or_follow() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let key = dir.path().join("k");
        assert!(write_new(&key, b"one").is_ok());
        assert_eq!(mode(&key), 0o600);
        let again = write_new(&key, b"two").map_err(|e| e.kind());
        assert_eq!(again, Err(std::io::ErrorKind::AlreadyExists));
        assert_eq!(fs::read(&key).unwrap_or_default(), b"one");
        // No temporary file is left behind, and none has a guessable name.
        let names: Vec<_> = fs::read_dir(dir.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(names.len(), 1, "{names:?}");

        // A symlink planted where the file goes is not followed.
        let target = dir.path().join("victim");
        fs::write(&target, "untouched").unwrap_or_else(|_| unreachable!());
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).unwrap_or_else(|_| unreachable!());
        assert!(open_append(&planted).is_err(), "O_NOFOLLOW");
        assert!(create_if_missing(&planted).is_ok(), "exists: left alone");
        assert!(write_new(&planted, b"x").is_err());
        assert_eq!(fs::read_to_string(&target).unwrap_or_default(), "untouched");

        let db = dir.path().join("audit.db");
        assert!(create_if_missing(&db).is_ok());
        assert_eq!(mode(&db), 0o600);
        let log = dir.path().join("mirror.jsonl");
        assert!(open_append(&log).is_ok());
        assert_eq!(mode(&log), 0o600);
    }

    #[test]
    fn key_files_others_can_read_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let key = dir.path().join("audit.key");
        assert!(write_new(&key, b"k").is_ok());
        assert!(check_key_mode(&key).is_ok());
        for loose in [0o640, 0o644, 0o604] {
            let _ = fs::set_permissions(&key, fs::Permissions::from_mode(loose));
            let err = check_key_mode(&key).err().unwrap_or_default();
            assert!(
                err.contains("chmod 600") && err.contains(&key.display().to_string()),
                "{loose:o}: {err}"
            );
        }
        let _ = fs::set_permissions(&key, fs::Permissions::from_mode(0o400));
        assert!(check_key_mode(&key).is_ok());
    }
}
