//! The SQLite store's write-ahead journal. An append is durable once its
//! group is written to the journal and `fdatasync`ed: one sequential write
//! of about 700 bytes per record into blocks that already exist, instead of
//! a SQLite commit that rewrites a 4 KiB page of the table and of each of
//! its four indexes. The records reach SQLite's tables (where queries,
//! `verify` and checkpoints read them) behind the answer, many per
//! transaction, and a segment is deleted once everything in it is there.
//!
//! Layout: a folder `PATH.stint-journal` beside the database file (not
//! `-journal`: SQLite would take that for its own rollback journal), holding
//! `lock` (an advisory lock a writer holds for one group, so several brokers
//! on one host still write one chain) and segments named by their first
//! seq, `00000000000000000001.seg`. A segment is created at its full size
//! (sparse: it reads as zeros), ahead of need as `spare`, so a rotation
//! only renames it. One item per line:
//!
//! ```text
//! {"stint_journal":1,"after_seq":N,"after_hash":"…"}   the record before the first one
//! {"seq":N+1,"time":…}                                  a record, as stored
//! end                                                   sealed: the chain goes on in the next segment
//! ```
//!
//! The written part ends at the first zero byte. A crash can leave the tail
//! of an unacknowledged group partly written: an incomplete last line is
//! ignored, and zeroed by the next writer before it appends. A complete
//! line that is not a record is damage, and stops the store.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chain;
use super::columns::unavailable;
use super::{AuditError, AuditKey, AuditRecord};

/// Size a segment is created with (more when one group needs more).
const SEGMENT_BYTES: u64 = 4 << 20;
/// The last line of a full segment.
const SEAL: &[u8] = b"end";
/// The journal format this build writes.
const FORMAT: u32 = 1;
/// Reads of a segment's written part go in steps of this size.
const READ_CHUNK: usize = 64 << 10;

/// The last record of the chain (seq 0 and the genesis hash: none yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub seq: i64,
    pub hash: String,
}

impl Head {
    /// The chain before its first record.
    pub fn empty() -> Head {
        Head {
            seq: 0,
            hash: chain::GENESIS.to_string(),
        }
    }

    /// `previous` as [`chain::link`] takes it.
    fn previous(&self) -> Option<(i64, String)> {
        (self.seq > 0).then(|| (self.seq, self.hash.clone()))
    }

    fn of(record: &AuditRecord) -> Head {
        Head {
            seq: record.seq.unwrap_or(0),
            hash: record.record_hash.clone().unwrap_or_default(),
        }
    }

    /// Checks that `record` is the next link after this head and that it
    /// is what the key holder wrote.
    pub fn check_next(&self, record: &AuditRecord, key: &AuditKey) -> Result<Head, AuditError> {
        let seq = record.seq.unwrap_or(0);
        if seq != self.seq + 1 || record.prev_hash.as_deref() != Some(self.hash.as_str()) {
            return Err(tampered(format!(
                "the audit journal's record {seq} does not follow record {} of the store; \
                 nothing is appended until `stint audit verify` is clean",
                self.seq
            )));
        }
        chain::check_head(record, key).map_err(tampered)?;
        Ok(Head::of(record))
    }
}

fn tampered(e: String) -> AuditError {
    tracing::error!(error = %e, "audit store tampered with");
    AuditError::Unavailable(e)
}

/// The first line of a segment.
#[derive(Serialize, Deserialize)]
struct Header {
    stint_journal: u32,
    after_seq: i64,
    after_hash: String,
}

/// The journal folder of the SQLite file at `db`.
pub(super) fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".stint-journal");
    PathBuf::from(name)
}

fn damaged(path: &Path, offset: u64, e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(format!(
        "audit journal {} is damaged at byte {offset}: {e}",
        path.display()
    ))
}

fn io_error(path: &Path, e: std::io::Error) -> AuditError {
    unavailable(format!("audit journal {}: {e}", path.display()))
}

/// What a segment's written part holds from some offset on.
struct Parsed {
    header: Option<Header>,
    records: Vec<AuditRecord>,
    /// Offset just after the last complete line.
    end: u64,
    /// Offset of the first zero byte (or the file's end): `end` plus a torn line.
    written: u64,
    sealed: bool,
}

/// The bytes of `file` from `from` up to its first zero byte.
fn read_written(file: &File, from: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut at = from;
    loop {
        let n = file.read_at(&mut chunk, at)?;
        let got = chunk.get(..n).unwrap_or_default();
        if let Some(zero) = got.iter().position(|&b| b == 0) {
            out.extend_from_slice(got.get(..zero).unwrap_or_default());
            return Ok(out);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(got);
        at += n as u64;
    }
}

/// The seq a record line starts with (serde writes `seq` first), read
/// without parsing the line.
fn leading_seq(line: &[u8]) -> Option<i64> {
    let digits = line.strip_prefix(b"{\"seq\":")?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(digits.get(..end)?).ok()?.parse().ok()
}

/// Reads the segment at `path` from `from` (0: with its header). Records
/// up to seq `skip` are passed over unparsed: readers want what is newer.
fn parse(path: &Path, file: &File, from: u64, skip: i64) -> Result<Parsed, AuditError> {
    let bytes = read_written(file, from).map_err(|e| io_error(path, e))?;
    let mut parsed = Parsed {
        header: None,
        records: Vec::new(),
        end: from,
        written: from + bytes.len() as u64,
        sealed: false,
    };
    let mut rest = bytes.as_slice();
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(newline);
        let at = parsed.end;
        if at == 0 {
            let header: Header = serde_json::from_slice(line).map_err(|e| damaged(path, at, e))?;
            if header.stint_journal != FORMAT {
                return Err(damaged(
                    path,
                    at,
                    format!("journal format {} is not {FORMAT}", header.stint_journal),
                ));
            }
            parsed.header = Some(header);
        } else if line == SEAL {
            parsed.end += line.len() as u64 + 1;
            parsed.sealed = true;
            break;
        } else if leading_seq(line).is_none_or(|seq| seq > skip) {
            parsed
                .records
                .push(serde_json::from_slice(line).map_err(|e| damaged(path, at, e))?);
        }
        parsed.end += line.len() as u64 + 1;
        rest = after.get(1..).unwrap_or_default();
    }
    Ok(parsed)
}

/// The journal's segments, oldest first: (first seq, path).
fn segments(dir: &Path) -> Result<Vec<(i64, PathBuf)>, AuditError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<i64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))
}

/// The segment a writer appends to.
struct Segment {
    path: PathBuf,
    /// Seq of its first record (its name).
    first_seq: i64,
    file: File,
    /// Offset after the last complete line.
    end: u64,
    capacity: u64,
}

/// The writing end of the journal.
pub(super) struct Journal {
    dir: PathBuf,
    lock: File,
    current: Segment,
    head: Head,
    /// Set when a failed write may have left bytes behind: nothing more is
    /// appended by this writer.
    broken: Option<String>,
    /// Size new segments are created with.
    segment_bytes: u64,
}

impl Journal {
    /// Opens (and creates) the journal in `dir`; `base` is the head of the
    /// store's tables, which a new journal continues from.
    pub fn open(
        dir: &Path,
        key: &AuditKey,
        base: impl FnOnce() -> Result<Head, AuditError>,
    ) -> Result<Journal, AuditError> {
        Journal::open_sized(dir, key, SEGMENT_BYTES, base)
    }

    fn open_sized(
        dir: &Path,
        key: &AuditKey,
        segment_bytes: u64,
        base: impl FnOnce() -> Result<Head, AuditError>,
    ) -> Result<Journal, AuditError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        lock.lock().map_err(|e| io_error(&lock_path, e))?;
        let opened = Journal::newest(dir, key, segment_bytes, base);
        let _ = lock.unlock();
        let (current, head) = opened?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            lock,
            current,
            head,
            broken: None,
            segment_bytes,
        })
    }

    /// The newest segment and the head it ends in (under the lock); a new
    /// segment when there is none or the newest is sealed.
    fn newest(
        dir: &Path,
        key: &AuditKey,
        segment_bytes: u64,
        base: impl FnOnce() -> Result<Head, AuditError>,
    ) -> Result<(Segment, Head), AuditError> {
        let Some((_, path)) = segments(dir)?.pop() else {
            let head = base()?;
            return Ok((create_segment(dir, &head, segment_bytes, 0)?, head));
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let capacity = file.metadata().map_err(|e| io_error(&path, e))?.len();
        let parsed = parse(&path, &file, 0, 0)?;
        let Some(header) = parsed.header else {
            return Err(damaged(&path, 0, "no header"));
        };
        let head = match parsed.records.last() {
            Some(last) => {
                chain::check_head(last, key).map_err(tampered)?;
                Head::of(last)
            }
            None => Head {
                seq: header.after_seq,
                hash: header.after_hash,
            },
        };
        let first_seq = header.after_seq + 1;
        let mut segment = Segment {
            path,
            first_seq,
            file,
            end: parsed.end,
            capacity,
        };
        if parsed.sealed {
            return Ok((create_segment(dir, &head, segment_bytes, 0)?, head));
        }
        zero_torn_tail(&mut segment, parsed.written)?;
        Ok((segment, head))
    }

    /// Seq of the last record this writer knows of.
    pub fn head_seq(&self) -> i64 {
        self.head.seq
    }

    /// Where this writer's last group ended, as a reader's cursor.
    pub fn position(&self) -> Cursor {
        Cursor {
            first_seq: self.current.first_seq,
            offset: self.current.end,
            last_seq: self.head.seq,
            sealed: false,
        }
    }

    /// Links `records` to the chain and makes them durable, as one group.
    pub fn append(&mut self, records: &mut [AuditRecord], key: &AuditKey) -> Result<(), AuditError> {
        if let Some(why) = &self.broken {
            return Err(unavailable(why));
        }
        self.lock.lock().map_err(|e| io_error(&self.dir, e))?;
        let appended = self.append_locked(records, key);
        let _ = self.lock.unlock();
        appended
    }

    fn append_locked(&mut self, records: &mut [AuditRecord], key: &AuditKey) -> Result<(), AuditError> {
        self.catch_up(key)?;
        let mut lines = Vec::with_capacity(records.len() * 1024);
        let mut head = self.head.clone();
        for record in records.iter_mut() {
            chain::link(record, head.previous(), key);
            // Serializing owned strings and maps into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut lines, &*record);
            lines.push(b'\n');
            head = Head::of(record);
        }
        let need = lines.len() as u64 + SEAL.len() as u64 + 1;
        if self.current.end + need > self.current.capacity {
            self.rotate(need)?;
        }
        let at = self.current.end;
        let written = self
            .current
            .file
            .write_all_at(&lines, at)
            .and_then(|()| self.current.file.sync_data());
        if let Err(e) = written {
            // Take back what may have reached the file, so no caller who
            // was told "failed" finds a record of it later.
            let zeros = vec![0u8; lines.len()];
            let undone = self
                .current
                .file
                .write_all_at(&zeros, at)
                .and_then(|()| self.current.file.sync_data());
            if undone.is_err() {
                self.broken = Some(format!(
                    "audit journal {}: a failed write could not be undone; restart the broker",
                    self.current.path.display()
                ));
            }
            return Err(io_error(&self.current.path, e));
        }
        self.current.end += lines.len() as u64;
        self.head = head;
        Ok(())
    }

    /// Takes in what other writers appended since this one's last group.
    fn catch_up(&mut self, key: &AuditKey) -> Result<(), AuditError> {
        let mut probe = [0u8; 1];
        let n = self
            .current
            .file
            .read_at(&mut probe, self.current.end)
            .map_err(|e| io_error(&self.current.path, e))?;
        if n == 0 || probe == [0] {
            return Ok(()); // nothing new: the usual case
        }
        let parsed = parse(&self.current.path, &self.current.file, self.current.end, 0)?;
        if let Some(last) = parsed.records.last() {
            chain::check_head(last, key).map_err(tampered)?;
            self.head = Head::of(last);
        }
        self.current.end = parsed.end;
        if parsed.sealed {
            let (segment, head) = Journal::newest(&self.dir, key, self.segment_bytes, || Ok(self.head.clone()))?;
            // The newest segment is this one (sealed, so a new one was made)
            // or one another writer started after it.
            self.current = segment;
            self.head = head;
            return Ok(());
        }
        zero_torn_tail(&mut self.current, parsed.written)
    }

    /// Seals the current segment and starts the next one, with room for `need` bytes.
    fn rotate(&mut self, need: u64) -> Result<(), AuditError> {
        let mut seal = SEAL.to_vec();
        seal.push(b'\n');
        self.current
            .file
            .write_all_at(&seal, self.current.end)
            .and_then(|()| self.current.file.sync_data())
            .map_err(|e| io_error(&self.current.path, e))?;
        self.current = create_segment(&self.dir, &self.head, self.segment_bytes, need)?;
        Ok(())
    }
}

/// Whether a writer could take the journal's lock now (for readiness).
pub(super) fn check(dir: &Path) -> Result<(), AuditError> {
    let path = dir.join("lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    lock.lock().and_then(|()| lock.unlock()).map_err(|e| io_error(&path, e))
}

/// Zeroes an incomplete line left by a crash, so the next group's lines
/// are not followed by its remains.
fn zero_torn_tail(segment: &mut Segment, written: u64) -> Result<(), AuditError> {
    if written <= segment.end {
        return Ok(());
    }
    let torn = usize::try_from(written - segment.end).unwrap_or(0);
    segment
        .file
        .write_all_at(&vec![0u8; torn], segment.end)
        .and_then(|()| segment.file.sync_data())
        .map_err(|e| io_error(&segment.path, e))
}

/// Creates the segment after `head` at its full size, synced before it
/// gets its name; the spare segment, when one is ready and big enough, is
/// taken instead, so the answer's path only renames a file.
fn create_segment(dir: &Path, head: &Head, size: u64, need: u64) -> Result<Segment, AuditError> {
    let mut header = serde_json::to_vec(&Header {
        stint_journal: FORMAT,
        after_seq: head.seq,
        after_hash: head.hash.clone(),
    })
    .map_err(unavailable)?;
    header.push(b'\n');
    let capacity = size.max(header.len() as u64 + need);
    let first = head.seq + 1;
    let path = dir.join(format!("{first:020}.seg"));
    let spare = dir.join(SPARE);
    let (file, from) = match OpenOptions::new().read(true).write(true).open(&spare) {
        Ok(file) if file.metadata().is_ok_and(|m| m.len() >= capacity) => (file, spare),
        _ => {
            let temporary = dir.join(format!("{first:020}.tmp"));
            (zero_filled(&temporary, capacity)?, temporary)
        }
    };
    let capacity = file.metadata().map_err(|e| io_error(&from, e))?.len();
    file.write_all_at(&header, 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(&from, e))?;
    fs::rename(&from, &path).map_err(|e| io_error(&path, e))?;
    sync_dir(dir)?;
    Ok(Segment {
        path,
        first_seq: first,
        file,
        end: header.len() as u64,
        capacity,
    })
}

/// The name of the segment made ready ahead of need.
const SPARE: &str = "spare";

/// A new file at `path` of `size` bytes that read as zeros: sparse, its
/// blocks allocated by the appends. Zero-filling it first (so appends
/// would only overwrite) doubled what reached the disk, and each 4 MiB
/// burst delayed the appends' own syncs by tens of milliseconds.
fn zero_filled(path: &Path, size: u64) -> Result<File, AuditError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.set_len(size)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))?;
    Ok(file)
}

/// Makes a spare segment ready when there is none, off the answer's path
/// (the indexer calls it): the writer that next needs a segment renames it.
pub(super) fn prepare_spare(dir: &Path) -> Result<(), AuditError> {
    let spare = dir.join(SPARE);
    if spare.exists() {
        return Ok(());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let temporary = dir.join(format!("spare-{}-{nanos}.tmp", std::process::id()));
    let made = zero_filled(&temporary, SEGMENT_BYTES).map(drop);
    // Named under the journal's lock, so no writer is taking a spare now.
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_error(&lock_path, e))?;
    lock.lock().map_err(|e| io_error(&lock_path, e))?;
    let named = made.and_then(|()| {
        if spare.exists() {
            Ok(())
        } else {
            fs::rename(&temporary, &spare)
                .map_err(|e| io_error(&spare, e))
                .and_then(|()| sync_dir(dir))
        }
    });
    let _ = lock.unlock();
    let _ = fs::remove_file(&temporary);
    named
}

/// Where a reader stopped, so the next read starts there.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    first_seq: i64,
    offset: u64,
    last_seq: i64,
    /// The segment was sealed: reading goes on in the next one.
    sealed: bool,
}

/// The journal's records after seq `after`, oldest first, and where the
/// reading stopped. `cursor`, from the previous read, saves reading again
/// what that one read, when the store's tables end where it stopped.
pub(super) fn records_after(
    dir: &Path,
    after: i64,
    cursor: Option<&Cursor>,
) -> Result<(Vec<AuditRecord>, Option<Cursor>), AuditError> {
    let all = segments(dir)?;
    let resume = cursor.filter(|c| c.last_seq == after).and_then(|c| {
        let index = all.iter().position(|(first, _)| *first == c.first_seq)?;
        Some(if c.sealed { (index + 1, 0) } else { (index, c.offset) })
    });
    let (mut index, mut offset) = match resume {
        Some((index, _)) if index == all.len() => return Ok((Vec::new(), cursor.cloned())),
        Some(found) => found,
        None => match all.iter().rposition(|(first, _)| *first <= after + 1) {
            Some(index) => (index, 0),
            None => match all.first() {
                Some((first, _)) => {
                    return Err(unavailable(format!(
                        "the audit journal starts at seq {first} but the store's tables end at seq {after}: \
                         records are missing"
                    )));
                }
                None => return Ok((Vec::new(), None)),
            },
        },
    };
    let mut records = Vec::new();
    let mut last_seq = after;
    while let Some((first, path)) = all.get(index) {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let parsed = parse(path, &file, offset, after)?;
        for record in parsed.records {
            let seq = record.seq.unwrap_or(0);
            if seq > after {
                last_seq = last_seq.max(seq);
                records.push(record);
            }
        }
        if !parsed.sealed || index + 1 == all.len() {
            let cursor = Cursor {
                first_seq: *first,
                offset: parsed.end,
                last_seq,
                sealed: parsed.sealed,
            };
            return Ok((records, Some(cursor)));
        }
        index += 1;
        offset = 0;
    }
    Ok((records, None))
}

/// Deletes the segments before the one `cursor` is in: their records are
/// in the store's tables (the caller committed them).
pub(super) fn remove_before(dir: &Path, cursor: &Cursor) {
    let Ok(all) = segments(dir) else { return };
    for (first, path) in all {
        if first < cursor.first_seq
            && let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete an indexed audit journal segment");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // in tests a panic is the report
mod tests {
    use super::*;
    use crate::audit::Outcome;

    fn key() -> AuditKey {
        AuditKey::from_bytes(&[7u8; 32])
    }

    fn record(n: usize) -> AuditRecord {
        AuditRecord {
            seq: None,
            time: format!("2026-11-28T10:00:{:02}Z", n % 60),
            request_id: format!("request-{n}"),
            outcome: Outcome::Issued,
            reason: None,
            grant: Some("deploy".into()),
            kind: Some("token".into()),
            issuer: Some("ci".into()),
            subject: Some("repo:acme/api".into()),
            claims: serde_json::Map::new(),
            token_jti_hmac: None,
            issuance_id: Some(format!("issuance-{n}")),
            ttl_seconds: Some(600),
            expires_at: None,
            client_addr: None,
            detail: serde_json::Map::new(),
            prev_hash: None,
            record_hash: None,
            record_mac: None,
        }
    }

    fn open(dir: &Path) -> Journal {
        Journal::open(dir, &key(), || Ok(Head::empty())).unwrap()
    }

    /// A journal whose segments hold a few records each.
    fn open_small(dir: &Path) -> Journal {
        Journal::open_sized(dir, &key(), 4096, || Ok(Head::empty())).unwrap()
    }

    fn append(journal: &mut Journal, from: usize, n: usize) {
        let mut group: Vec<AuditRecord> = (from..from + n).map(record).collect();
        journal.append(&mut group, &key()).unwrap();
    }

    /// Every record after `after`, checked link by link from `head`.
    fn read_chain(dir: &Path, after: i64, head: Head) -> Vec<i64> {
        let (records, _) = records_after(dir, after, None).unwrap();
        let mut head = head;
        records
            .iter()
            .map(|r| {
                head = head.check_next(r, &key()).unwrap();
                head.seq
            })
            .collect()
    }

    #[test]
    fn groups_make_one_chain_across_sealed_segments_and_a_cursor_reads_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open_small(dir.path());
        for group in 0..10 {
            append(&mut journal, group * 3, 3);
        }
        assert!(
            segments(dir.path()).unwrap().len() > 3,
            "the groups filled several segments"
        );
        assert_eq!(read_chain(dir.path(), 0, Head::empty()), (1..=30).collect::<Vec<_>>());

        let (first, cursor) = records_after(dir.path(), 0, None).unwrap();
        let cursor = cursor.unwrap();
        append(&mut journal, 30, 2);
        let (next, _) = records_after(dir.path(), 30, Some(&cursor)).unwrap();
        assert_eq!(first.len(), 30);
        assert_eq!(next.iter().map(|r| r.seq.unwrap()).collect::<Vec<_>>(), [31, 32]);

        // Segments wholly before the cursor's can go; the rest still reads.
        let (_, cursor) = records_after(dir.path(), 20, None).unwrap();
        remove_before(dir.path(), cursor.as_ref().unwrap());
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        let err = records_after(dir.path(), 0, None).unwrap_err().to_string();
        assert!(err.contains("records are missing"), "{err}");
    }

    #[test]
    fn a_rotation_takes_the_spare_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open_small(dir.path());
        prepare_spare(dir.path()).unwrap();
        assert!(dir.path().join(SPARE).exists());
        append(&mut journal, 0, 5);
        append(&mut journal, 5, 15); // more than the 4 KiB segment has left
        assert!(
            !dir.path().join(SPARE).exists(),
            "the new segment is the spare, renamed"
        );
        let all = segments(dir.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(fs::metadata(&all[1].1).unwrap().len(), SEGMENT_BYTES);
        append(&mut journal, 20, 1);
        assert_eq!(read_chain(dir.path(), 0, Head::empty()), (1..=21).collect::<Vec<_>>());
    }

    #[test]
    fn a_reopened_journal_goes_on_from_its_head() {
        let dir = tempfile::tempdir().unwrap();
        append(&mut open(dir.path()), 0, 4);
        let mut again = open(dir.path());
        assert_eq!(again.head_seq(), 4);
        append(&mut again, 4, 2);
        assert_eq!(read_chain(dir.path(), 0, Head::empty()), (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_journal_continues_the_tables_head() {
        let dir = tempfile::tempdir().unwrap();
        let mut tables = record(0);
        chain::link(&mut tables, Some((41, "ab".repeat(32))), &key());
        let base = Head::of(&tables);
        let mut journal = Journal::open(dir.path(), &key(), || Ok(base.clone())).unwrap();
        append(&mut journal, 1, 2);
        assert_eq!(read_chain(dir.path(), 42, base), [43, 44]);
    }

    #[test]
    fn a_torn_group_is_ignored_and_zeroed_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path());
        append(&mut journal, 0, 2);
        // A crash mid-write: half a line after the last complete one.
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let end = journal.current.end;
        file.write_all_at(br#"{"seq":3,"time":"2026-11-28T10:00:0"#, end)
            .unwrap();
        drop(journal);
        assert_eq!(
            read_chain(dir.path(), 0, Head::empty()),
            [1, 2],
            "the torn line is not a record"
        );

        let mut again = open(dir.path());
        append(&mut again, 2, 1);
        assert_eq!(read_chain(dir.path(), 0, Head::empty()), [1, 2, 3]);
    }

    #[test]
    fn a_damaged_line_stops_readers_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open(dir.path());
        append(&mut journal, 0, 3);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        let second = second + bytes[second..].iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second] = b'[';
        fs::write(&path, &bytes).unwrap();
        let err = records_after(dir.path(), 0, None).unwrap_err().to_string();
        assert!(err.contains(&format!("is damaged at byte {second}")), "{err}");
        assert!(Journal::open(dir.path(), &key(), || Ok(Head::empty())).is_err());
    }

    #[test]
    fn a_record_edited_without_the_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        append(&mut open(dir.path()), 0, 2);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let text = fs::read(&path).unwrap();
        let edited = String::from_utf8_lossy(&text).replace("repo:acme/api", "repo:evil/api");
        fs::write(&path, edited.as_bytes()).unwrap();
        let err = Journal::open(dir.path(), &key(), || Ok(Head::empty()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
        let (records, _) = records_after(dir.path(), 0, None).unwrap();
        assert!(Head::empty().check_next(&records[0], &key()).is_err());
    }

    #[test]
    fn two_writers_on_one_folder_write_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (open_small(dir.path()), open_small(dir.path()));
        for n in 0..12 {
            let writer = if n % 3 == 0 { &mut b } else { &mut a };
            append(writer, n * 2, 2);
        }
        assert!(segments(dir.path()).unwrap().len() > 2, "both writers rotated segments");
        assert_eq!(read_chain(dir.path(), 0, Head::empty()), (1..=24).collect::<Vec<_>>());
    }
}
