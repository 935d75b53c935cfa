# Write cost of the audit table's indexes: records/s and WAL bytes per record
# with the schema before and after, group commits of 1 and 64, on a log that
# already holds PRE records (random-position indexes cost more on a big log).
# The last is the schema since the block lookup (src/audit/sqlite_lookup.rs).
# Records have 50 subjects, 5 grants and a jti each.
# Usage: python3 benches/auditor/index_cost.py [PRE]   (docs/performance.md)
import sqlite3, os, time, uuid, hashlib, sys, tempfile
PRE = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
TABLE = """CREATE TABLE audit_records (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, request_id TEXT NOT NULL,
 outcome TEXT NOT NULL, reason TEXT, grant_name TEXT, kind TEXT, issuer TEXT, subject TEXT, claims TEXT NOT NULL,
 token_jti_hmac TEXT, issuance_id TEXT, ttl_seconds INTEGER, expires_at TEXT, client_addr TEXT, detail TEXT NOT NULL,
 chain_version INTEGER NOT NULL DEFAULT 1, prev_hash TEXT, record_hash TEXT, record_mac TEXT);"""
BASE = TABLE + """
CREATE INDEX audit_records_grant ON audit_records (grant_name, seq);
CREATE INDEX audit_records_subject ON audit_records (subject, seq);
CREATE INDEX audit_records_request ON audit_records (request_id);
CREATE INDEX audit_records_time ON audit_records (time);"""
VARIANTS = {
 "before (4 indexes)": "",
 "+outcome": "CREATE INDEX o ON audit_records (outcome, seq);",
 "+jti": "CREATE INDEX j ON audit_records (token_jti_hmac, seq);",
 "+outcome +jti (issue 16)": "CREATE INDEX o ON audit_records (outcome, seq); CREATE INDEX j ON audit_records (token_jti_hmac, seq);",
 "before (4 indexes) again": "",
}
LOOKUP = """CREATE INDEX audit_records_request ON audit_records (request_id);
CREATE INDEX audit_records_time ON audit_records (time);
CREATE INDEX audit_records_outcome ON audit_records (outcome, seq);
CREATE TABLE audit_lookup (block INTEGER NOT NULL, key INTEGER NOT NULL, seq INTEGER NOT NULL,
 PRIMARY KEY (block, key, seq)) WITHOUT ROWID;
CREATE TABLE audit_lookup_blocks (block INTEGER PRIMARY KEY);"""
# (name, schema, whether appends build the lookup)
SCHEMAS = [(name, BASE + extra, False) for name, extra in VARIANTS.items()] + [
 ("3 indexes + lookup (now)", TABLE + LOOKUP, True),
]
BLOCK = 4096
def build_block(c, block):
    # As sqlite_lookup::build: a row per (column, value, record), in key order.
    rows = []
    for seq, *values in c.execute("SELECT seq, subject, grant_name, token_jti_hmac FROM audit_records"
                                  " WHERE seq >= ? AND seq < ?", (block * BLOCK, (block + 1) * BLOCK)):
        for tag, value in enumerate(values, 1):
            if value is not None:
                key = int.from_bytes(hashlib.sha256(bytes([tag]) + value.encode()).digest()[:8], "big", signed=True)
                rows.append((block, key, seq))
    c.execute("INSERT INTO audit_lookup_blocks VALUES (?)", (block,))
    c.executemany("INSERT INTO audit_lookup VALUES (?, ?, ?)", sorted(set(rows)))
def row(n):
    h = hashlib.sha256(str(n).encode()).hexdigest()
    return (n, "2026-11-28T10:%02d:%02d.%06dZ" % (n//60%60, n%60, n), "%012x-7000-8000-%s" % (n, uuid.uuid4().hex[:12]),
            "issued" if n % 10 else "denied", None, "deploy-%d" % (n % 5), "token", "ci", "repo:acme/api-%d" % (n % 50),
            '{"repository":"acme/api","ref":"refs/heads/main"}', hashlib.sha256(b"j%d" % n).hexdigest(), str(uuid.uuid4()),
            300, "2026-11-28T10:05:00Z", "127.0.0.1:1", '{"rule":0}', 1, h, h, h)
DIR = tempfile.mkdtemp()
INS = "INSERT INTO audit_records VALUES (" + ",".join("?"*20) + ")"
for name, schema, lookup in SCHEMAS:
    path = os.path.join(DIR, "w.db")
    for s in ("", "-wal", "-shm"):
        try: os.remove(path + s)
        except FileNotFoundError: pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=OFF")
    c.executescript(schema)
    c.execute("BEGIN"); c.executemany(INS, (row(n) for n in range(1, PRE + 1)))
    if lookup:
        for block in range((PRE + 1) // BLOCK): build_block(c, block)
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.execute("PRAGMA synchronous=FULL"); c.execute("PRAGMA wal_autocheckpoint=0")
    out = []
    for group, total in ((1, 400), (64, 6400)):
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        n0 = c.execute("SELECT max(seq) FROM audit_records").fetchone()[0] + 1
        t = time.perf_counter()
        for b in range(0, total, group):
            c.execute("BEGIN IMMEDIATE"); c.executemany(INS, (row(n0 + b + i) for i in range(group)))
            for seq in range(n0 + b, n0 + b + group):
                if lookup and (seq + 1) % BLOCK == 0: build_block(c, seq // BLOCK)
            c.execute("COMMIT")
        dt = time.perf_counter() - t
        wal = os.path.getsize(path + "-wal")
        out.append("group %2d: %7.0f rec/s, WAL %6.0f B/rec" % (group, total / dt, wal / total))
    print("%-24s %s" % (name, " | ".join(out)), flush=True)
    c.close()
