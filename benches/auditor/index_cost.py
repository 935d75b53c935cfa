# Write cost of the audit table's indexes: records/s and WAL bytes per record
# with the schema before and after, group commits of 1 and 64, on a log that
# already holds PRE records (random-position indexes cost more on a big log).
# Usage: python3 benches/auditor/index_cost.py [PRE]   (docs/performance.md)
import sqlite3, os, time, uuid, hashlib, sys, tempfile
PRE = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
BASE = """CREATE TABLE audit_records (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL,
 outcome TEXT NOT NULL, reason TEXT, grant_name TEXT, kind TEXT, issuer TEXT, subject TEXT, claims TEXT NOT NULL,
 token_jti_hmac TEXT, issuance_id TEXT, ttl_seconds INTEGER, expires_at TEXT, client_addr TEXT, detail TEXT NOT NULL,
 chain_version INTEGER NOT NULL DEFAULT 1, prev_hash TEXT, record_hash TEXT, record_mac TEXT);
CREATE INDEX audit_records_grant ON audit_records (grant_name, seq);
CREATE INDEX audit_records_subject ON audit_records (subject, seq);
CREATE INDEX audit_records_request ON audit_records (request_id);
CREATE INDEX audit_records_time ON audit_records (time);"""
VARIANTS = {
 "before (4 indexes)": "",
 "+outcome": "CREATE INDEX o ON audit_records (outcome, seq);",
 "+jti": "CREATE INDEX j ON audit_records (token_jti_hmac, seq);",
 "+outcome +jti": "CREATE INDEX o ON audit_records (outcome, seq); CREATE INDEX j ON audit_records (token_jti_hmac, seq);",
 "before (4 indexes) again": "",
}
def row(n):
    h = hashlib.sha256(str(n).encode()).hexdigest()
    return (n, "2026-11-28T10:%02d:%02d.%06dZ" % (n//60%60, n%60, n), "%012x-7000-8000-%s" % (n, uuid.uuid4().hex[:12]),
            "issued" if n % 10 else "denied", None, "deploy-%d" % (n % 5), "token", "ci", "repo:acme/api-%d" % (n % 50),
            '{"repository":"acme/api","ref":"refs/heads/main"}', hashlib.sha256(b"j%d" % n).hexdigest(), str(uuid.uuid4()),
            300, "2026-11-28T10:05:00Z", "127.0.0.1:1", '{"rule":0}', 1, h, h, h)
DIR = tempfile.mkdtemp()
INS = "INSERT INTO audit_records VALUES (" + ",".join("?"*20) + ")"
for name, extra in VARIANTS.items():
    path = os.path.join(DIR, "w.db")
    for s in ("", "-wal", "-shm"):
        try: os.remove(path + s)
        except FileNotFoundError: pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=OFF")
    c.executescript(BASE + extra)
    c.execute("BEGIN"); c.executemany(INS, (row(n) for n in range(1, PRE + 1))); c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("PRAGMA synchronous=FULL"); c.execute("PRAGMA wal_autocheckpoint=0")
    out = []
    for group, total in ((1, 400), (64, 6400)):
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        n0 = c.execute("SELECT max(seq) FROM audit_records").fetchone()[0] + 1
        t = time.perf_counter()
        for b in range(0, total, group):
            c.execute("BEGIN IMMEDIATE"); c.executemany(INS, (row(n0 + b + i) for i in range(group))); c.execute("COMMIT")
        dt = time.perf_counter() - t
        wal = os.path.getsize(path + "-wal")
        out.append("group %2d: %7.0f rec/s, WAL %6.0f B/rec" % (group, total / dt, wal / total))
    print("%-24s %s" % (name, " | ".join(out)), flush=True)
    c.close()
