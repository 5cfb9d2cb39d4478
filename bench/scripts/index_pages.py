#!/usr/bin/env python3
"""WAL written per fix by each layout of the fixes table's indexes, under the batch workload.

A side measurement for docs/benchmark-history.md ("fixes indexed by member only"): the
`fixes` table as the migrations make it on SQLite (8 KiB pages, WAL, synchronous=FULL,
64 MiB cache, no checkpoints while measuring), 256 members whose tracks advance together one
second a fix, first `PREFILL` fixes each sent 25 at a time in turn (as single fixes
arrive), then 24 transactions of 4,000 fixes: 1,000 consecutive fixes of each of four
members (four 1,000-fix batches, one group of the server's writer). Prints the WAL frames
per transaction (from the growth of the WAL file), the bytes per fix and the time of a
transaction.

    python3 bench/scripts/index_pages.py full 3000     # the indexes before 2026-12-06
    python3 bench/scripts/index_pages.py merged 3000   # by member only (the migration since)
    python3 bench/scripts/index_pages.py nocov 3000    # without the index on time
    python3 bench/scripts/index_pages.py nouq 3000     # without the unique index

Uses Python's own sqlite3 module; the database goes to a temporary directory.
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import time

import fix_rows

if len(sys.argv) != 3 or sys.argv[1] not in ("full", "merged", "nocov", "nouq"):
    sys.exit(__doc__)
variant, prefill = sys.argv[1], int(sys.argv[2])

tmp = tempfile.mkdtemp(prefix="index-pages-")
path = os.path.join(tmp, "fixes.db")
c = sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA page_size=8192")
for pragma in ("journal_mode=WAL", "synchronous=FULL", "wal_autocheckpoint=0",
               "cache_size=-65536"):
    c.execute("PRAGMA " + pragma)
c.execute(
    'CREATE TABLE fixes ("id" blob NOT NULL PRIMARY KEY, "member_id" blob NOT NULL, '
    '"client_id" blob NOT NULL, "recorded_at" text NOT NULL, "received_at" text NOT NULL, '
    '"lat" double NOT NULL, "lon" double NOT NULL, "accuracy_m" double NOT NULL, '
    '"speed_mps" double NULL, "heading_deg" double NULL, "altitude_m" double NULL, '
    '"battery" double NULL, "kind" varchar NOT NULL, "post_id" blob NULL, '
    '"shift_id" blob NULL, "datum" varchar NOT NULL, "mock" boolean NOT NULL, '
    '"flags" integer NOT NULL, "source" varchar NOT NULL)')
if variant != "nouq":
    c.execute("CREATE UNIQUE INDEX uq ON fixes (member_id, client_id)")
if variant in ("full", "nouq", "nocov"):
    c.execute("CREATE INDEX by_member ON fixes (member_id, recorded_at)")
if variant in ("full", "nouq"):
    c.execute("CREATE INDEX by_time ON fixes "
              "(recorded_at, member_id, lat, lon, accuracy_m, flags)")
if variant == "merged":
    c.execute("CREATE INDEX by_member ON fixes "
              "(member_id, recorded_at, lat, lon, accuracy_m, flags)")

MEMBERS = 256
tracks = fix_rows.Tracks(MEMBERS)
members, rows = tracks.members, tracks.rows

INSERT = "INSERT INTO fixes VALUES (" + ",".join("?" * 19) + ") ON CONFLICT DO NOTHING"
for _ in range(prefill // 25):
    c.execute("BEGIN")
    for m in range(MEMBERS):
        c.executemany(INSERT, rows(m, 25))
    c.execute("COMMIT")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

frame = 8192 + 24
frames = seconds = 0.0
groups = 24
for g in range(groups):
    group = []
    for k in range(4):
        group += rows((4 * g + k) % MEMBERS, 1000)
    before = os.path.getsize(path + "-wal")
    started = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    c.executemany(INSERT, group)
    c.execute("COMMIT")
    seconds += time.perf_counter() - started
    frames += (os.path.getsize(path + "-wal") - before) / frame
c.close()
shutil.rmtree(tmp)
print(f"{variant}: per 4,000 fixes {frames / groups:.0f} WAL frames "
      f"({frames / groups * frame / 4000:.0f} bytes a fix), "
      f"{seconds / groups * 1e3:.1f} ms a transaction")
