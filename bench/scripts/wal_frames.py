#!/usr/bin/env python3
"""WAL written per fix by the fixes table's schema, with random or time-ordered client ids.

A side measurement for docs/benchmark-history.md ("Why batches stop near ..."): the
`fixes` table and its indexes as the migrations make them on SQLite, four members with
150,000 fixes each, then 60 transactions of 2,000 fixes (1,000 of each of two members),
WAL mode with synchronous=FULL and no checkpoints while measuring. Prints the WAL frames
each transaction wrote (from the growth of the WAL file) and the time of its COMMIT.

    python3 bench/scripts/wal_frames.py random      # client ids as phones make them (UUID v4)
    python3 bench/scripts/wal_frames.py ordered     # time-ordered client ids (UUID v7)

Uses Python's own sqlite3 module; the database goes to a temporary directory.
"""
import os
import sqlite3
import sys
import tempfile
import time

import fix_rows

ordered = sys.argv[1:] == ["ordered"]
if sys.argv[1:] not in (["random"], ["ordered"]):
    sys.exit(__doc__)

tmp = tempfile.mkdtemp(prefix="wal-frames-")
path = os.path.join(tmp, "fixes.db")
c = sqlite3.connect(path, isolation_level=None)
for pragma in ("journal_mode=WAL", "synchronous=FULL", "wal_autocheckpoint=0",
               "cache_size=-65536", "foreign_keys=ON"):
    c.execute("PRAGMA " + pragma)
c.execute("CREATE TABLE members (id blob PRIMARY KEY)")
c.execute(
    'CREATE TABLE fixes ("id" uuid_text NOT NULL PRIMARY KEY, "member_id" uuid_text NOT NULL, '
    '"client_id" uuid_text NOT NULL, "recorded_at" text NOT NULL, "received_at" text NOT NULL, '
    '"lat" double NOT NULL, "lon" double NOT NULL, "accuracy_m" double NOT NULL, '
    '"speed_mps" double NULL, "heading_deg" double NULL, "altitude_m" double NULL, '
    '"battery" double NULL, "kind" varchar NOT NULL, "post_id" uuid_text NULL, '
    '"shift_id" uuid_text NULL, "datum" varchar NOT NULL, "mock" boolean NOT NULL, '
    '"flags" integer NOT NULL, "source" varchar NOT NULL, '
    'FOREIGN KEY ("member_id") REFERENCES "members" ("id") ON DELETE RESTRICT)')
c.execute('CREATE UNIQUE INDEX uq_fixes_member_client ON fixes (member_id, client_id)')
c.execute('CREATE INDEX idx_fixes_member_recorded ON fixes (member_id, recorded_at)')
c.execute('CREATE INDEX idx_fixes_recorded_coverage ON fixes '
          '(recorded_at, member_id, lat, lon, accuracy_m, flags)')

tracks = fix_rows.Tracks(4, ordered_client_ids=ordered)
members, rows = tracks.members, tracks.rows
c.executemany("INSERT INTO members VALUES (?)", [(m,) for m in members])


INSERT = ("INSERT INTO fixes VALUES (" + ",".join("?" * 19) +
          ") ON CONFLICT (member_id, client_id) DO NOTHING")
for member in range(len(members)):
    for _ in range(15):
        c.execute("BEGIN")
        c.executemany(INSERT, rows(member, 10_000))
        c.execute("COMMIT")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

frame = c.execute("PRAGMA page_size").fetchone()[0] + 24
frames = commit_s = 0.0
groups = 60
for g in range(groups):
    group = rows(g % 4, 1000) + rows((g + 1) % 4, 1000)
    before = os.path.getsize(path + "-wal")
    c.execute("BEGIN IMMEDIATE")
    c.executemany(INSERT, group)
    t = time.perf_counter()
    c.execute("COMMIT")
    commit_s += time.perf_counter() - t
    frames += (os.path.getsize(path + "-wal") - before) / frame
c.close()
for name in os.listdir(tmp):
    os.remove(os.path.join(tmp, name))
os.rmdir(tmp)
kind = "time-ordered (v7)" if ordered else "random (v4)"
print(f"client ids {kind}: per 2,000 fixes {frames / groups:.0f} WAL frames "
      f"({frames / groups * frame / 1e6:.1f} MB), COMMIT {commit_s / groups * 1e3:.1f} ms")
