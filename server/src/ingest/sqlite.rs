//! The writer on a SQLite file: a thread of its own with its own connection, making plain
//! synchronous calls.
//!
//! Through sqlx every statement, and every row it returns, is handed to the driver's worker
//! thread and back; on two cores shared with the HTTP workers those hand-offs, not SQLite,
//! were most of a group's time (a group of 25 single fixes took 2.6 ms to insert). Here a
//! group is one transaction of prepared single-row INSERTs on the thread that owns the
//! connection, and each row's `changes()` says whether it was new, so nothing is returned
//! row by row.
//!
//! Values are written exactly as sqlx writes them, so that everything else reads them
//! through sea-orm unchanged: UUIDs as 16-byte BLOBs, timestamps as RFC 3339 text with
//! automatic fractional digits and `+00:00`, booleans as 0/1.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{Plan, Stored, Tails, WITHIN};
use crate::{
    domain::{
        geodesy::LonLat,
        plausibility::{FixSample, Flags, StoredFix, Thresholds},
    },
    sqlite_reads::{parse_time, time, uuid_of},
    store::fix,
};

/// How the writer's connection is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The database file.
    pub path: std::path::PathBuf,
    /// `PRAGMA synchronous` (`FULL` or `NORMAL`).
    pub synchronous: &'static str,
    /// Page cache in KiB.
    pub cache_kib: i64,
    /// Bytes the WAL file is cut back to after each reset.
    pub journal_size_limit: u64,
    /// Busy timeout in milliseconds.
    pub busy_timeout_ms: u64,
}

/// The busy timeout of the connections opened by [`open`], for [`busy`] (SQLite takes a
/// busy handler without data of its own, so the timeout is one per process). A server
/// takes it from its one setting; a process that starts several servers with different
/// settings (the tests) gives all their writers the largest.
static BUSY_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

/// How long [`busy`] sleeps between tries.
const BUSY_NAP: std::time::Duration = std::time::Duration::from_micros(200);

/// The busy handler of the writing connections: tries again every [`BUSY_NAP`] until the
/// busy timeout has passed. SQLite's own handler sleeps 1, 2, 5, 10, 15 ms and longer
/// between tries; the lock these connections wait for is mostly the checkpointer's, which
/// holds it for a few milliseconds when it starts the WAL again (a few times a second under
/// a full load of single fixes), and the writer overslept it by several milliseconds while
/// every pending fix waited.
fn busy(tries: i32) -> bool {
    let waited = BUSY_NAP.saturating_mul(u32::try_from(tries).unwrap_or(0));
    if waited.as_millis() >= u128::from(BUSY_TIMEOUT_MS.load(Ordering::Relaxed)) {
        return false;
    }
    std::thread::sleep(BUSY_NAP);
    true
}

/// The file named by a `sqlite:` URL as sqlx reads it (`sqlite://path`, `sqlite:path`,
/// with an optional `?query`); `None` for an in-memory database.
pub fn path_of_url(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    let decoded: String =
        form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| path.to_owned());
    Some(decoded.into())
}

/// Opens the writer's connection on an existing database and checks that commits are as
/// durable as configured.
pub fn open(o: &Options) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // Gathering WAL writes is sound only when every commit syncs the WAL before it is
    // published (see `wal_gather`).
    let conn = if o.synchronous.eq_ignore_ascii_case("full") {
        super::wal_gather::register().map_err(anyhow::Error::msg)?;
        Connection::open_with_flags_and_vfs(&o.path, flags, super::wal_gather::NAME)?
    } else {
        Connection::open_with_flags(&o.path, flags)?
    };
    BUSY_TIMEOUT_MS.fetch_max(o.busy_timeout_ms, Ordering::Relaxed);
    conn.busy_handler(Some(busy))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -{}; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {};",
        o.synchronous, o.cache_kib, o.journal_size_limit
    ))?;
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    anyhow::ensure!(
        journal.eq_ignore_ascii_case("wal"),
        "SQLite journal_mode is {journal}, not wal"
    );
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    let want = if o.synchronous.eq_ignore_ascii_case("full") {
        2
    } else {
        1
    };
    anyhow::ensure!(sync == want, "SQLite synchronous is {sync}, not {want}");
    let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    anyhow::ensure!(fk == 1, "SQLite foreign_keys is {fk}, not on");
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

const INSERT: &str = "INSERT INTO fixes (id, member_id, client_id, recorded_at, received_at, lat, lon, \
     accuracy_m, speed_mps, heading_deg, altitude_m, battery, kind, post_id, shift_id, datum, mock, \
     flags, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
     ?17, ?18, ?19) ON CONFLICT (member_id, client_id) DO NOTHING";

const SELECT_ONE: &str = "SELECT id, member_id, client_id, recorded_at, received_at, lat, lon, \
     accuracy_m, speed_mps, heading_deg, altitude_m, battery, kind, post_id, shift_id, datum, mock, \
     flags, source FROM fixes WHERE member_id = ?1 AND client_id = ?2";

const COLUMNS: &str = "recorded_at, lat, lon, accuracy_m, speed_mps, flags, id";

/// Revises a stored fix's flags (its implausible_speed and static_repeat, which fixes
/// arriving later decide too), or corrects a new one's.
const REVISE: &str = "UPDATE fixes SET flags = ?1 WHERE id = ?2";

/// Judges, inserts and commits a group of batches; the answer per batch.
pub(super) fn write_group(
    conn: &mut Connection,
    t: &Thresholds,
    tails: &mut Tails,
    batches: &[&super::Batch],
) -> Result<Vec<Stored>, String> {
    let err = |e: rusqlite::Error| e.to_string();
    let plan = Plan::new(batches, t);
    let t0 = std::time::Instant::now();
    let misses = plan.misses(tails);
    let read_at = std::time::Instant::now();
    let read = neighbours(conn, &misses, plan.keep, plan.after).map_err(err)?;
    let t1 = t0.elapsed();
    let around = plan.around(tails, &misses, read);
    let (mut rows, mut revisions) = plan.judge(&around, t);

    // IMMEDIATE: the write lock is taken (or waited for) now, not at the first INSERT.
    let txn = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let mut inserted: HashSet<Uuid> = HashSet::with_capacity(rows.iter().map(Vec::len).sum());
    {
        let mut insert = txn.prepare_cached(INSERT).map_err(err)?;
        for row in rows.iter().flatten() {
            let changed = insert
                .execute(params![
                    row.id.as_bytes().as_slice(),
                    row.member_id.as_bytes().as_slice(),
                    row.client_id.as_bytes().as_slice(),
                    time(row.recorded_at),
                    time(row.received_at),
                    row.lat,
                    row.lon,
                    row.accuracy_m,
                    row.speed_mps,
                    row.heading_deg,
                    row.altitude_m,
                    row.battery,
                    row.kind,
                    row.post_id.map(|u| u.as_bytes().to_vec()),
                    row.shift_id.map(|u| u.as_bytes().to_vec()),
                    row.datum,
                    row.mock,
                    row.flags,
                    row.source,
                ])
                .map_err(err)?;
            if changed == 1 {
                inserted.insert(row.id);
            }
        }
    }
    let corrections = plan.judge_again_without(&around, t, &inserted, &mut rows, &mut revisions);
    {
        let mut revise = txn.prepare_cached(REVISE).map_err(err)?;
        let updates = revisions.iter().map(|r| (r.id, r.flags)).chain(corrections);
        for (id, flags) in updates {
            revise
                .execute(params![flags, id.as_bytes().as_slice()])
                .map_err(err)?;
        }
    }
    let others: Vec<&fix::Model> = rows
        .iter()
        .flatten()
        .filter(|r| !inserted.contains(&r.id))
        .collect();
    let t2 = t0.elapsed();
    let mut earlier: HashMap<(Uuid, Uuid), fix::Model> = HashMap::with_capacity(others.len());
    {
        let mut select = txn.prepare_cached(SELECT_ONE).map_err(err)?;
        for row in others {
            let found = select
                .query_row(
                    params![
                        row.member_id.as_bytes().as_slice(),
                        row.client_id.as_bytes().as_slice()
                    ],
                    model_of,
                )
                .optional()
                .map_err(err)?;
            if let Some(f) = found {
                earlier.insert((f.member_id, f.client_id), f);
            }
        }
    }
    // Fixes of hours already packed (late ones, and those whose flags were revised) are
    // read from the table until packed again.
    crate::packs::mark_written(
        &txn,
        rows.iter()
            .flatten()
            .filter(|r| inserted.contains(&r.id))
            .map(|r| (&r.member_id, r.recorded_at))
            .chain(revisions.iter().map(|r| (&r.member_id, r.recorded_at))),
    )
    .map_err(err)?;
    txn.commit().map_err(err)?;
    let t3 = t0.elapsed();
    tracing::debug!(
        rows = rows.iter().map(Vec::len).sum::<usize>(),
        members = plan.spans.len(),
        read_members = misses.len(),
        read_ms = t1.as_secs_f64() * 1e3,
        insert_ms = (t2 - t1).as_secs_f64() * 1e3,
        commit_ms = (t3 - t2).as_secs_f64() * 1e3,
        "group committed"
    );
    plan.finish(
        tails, around, read_at, rows, &revisions, &inserted, &earlier,
    )
}

fn model_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<fix::Model> {
    let opt_uuid = |i: usize| -> rusqlite::Result<Option<Uuid>> {
        r.get::<_, Option<Vec<u8>>>(i)?
            .map(|b| uuid_of(&b))
            .transpose()
    };
    Ok(fix::Model {
        id: uuid_of(&r.get::<_, Vec<u8>>(0)?)?,
        member_id: uuid_of(&r.get::<_, Vec<u8>>(1)?)?,
        client_id: uuid_of(&r.get::<_, Vec<u8>>(2)?)?,
        recorded_at: parse_time(&r.get::<_, String>(3)?)?,
        received_at: parse_time(&r.get::<_, String>(4)?)?,
        lat: r.get(5)?,
        lon: r.get(6)?,
        accuracy_m: r.get(7)?,
        speed_mps: r.get(8)?,
        heading_deg: r.get(9)?,
        altitude_m: r.get(10)?,
        battery: r.get(11)?,
        kind: r.get(12)?,
        post_id: opt_uuid(13)?,
        shift_id: opt_uuid(14)?,
        datum: r.get(15)?,
        mock: r.get(16)?,
        flags: r.get(17)?,
        source: r.get(18)?,
    })
}

/// The stored fixes around each member's span, in `recorded_at` order: `before` fixes
/// before it, everything inside it, and `after` fixes after it.
fn neighbours(
    conn: &Connection,
    spans: &[(Uuid, DateTime<Utc>, DateTime<Utc>)],
    before: usize,
    after: usize,
) -> rusqlite::Result<HashMap<Uuid, Vec<StoredFix>>> {
    let mut out: HashMap<Uuid, Vec<StoredFix>> = HashMap::with_capacity(spans.len());
    if spans.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS} FROM fixes WHERE member_id = ?1 AND recorded_at < ?2 \
         ORDER BY recorded_at DESC LIMIT {before}) \
         UNION ALL SELECT * FROM (SELECT {COLUMNS} FROM fixes WHERE member_id = ?1 \
         AND recorded_at >= ?2 AND recorded_at <= ?3 ORDER BY recorded_at LIMIT {WITHIN}) \
         UNION ALL SELECT * FROM (SELECT {COLUMNS} FROM fixes WHERE member_id = ?1 \
         AND recorded_at > ?3 ORDER BY recorded_at LIMIT {after})"
    );
    let mut select = conn.prepare_cached(&sql)?;
    for (member, from, to) in spans {
        let fixes = out.entry(*member).or_default();
        let mut rows = select.query(params![
            member.as_bytes().as_slice(),
            time(*from),
            time(*to)
        ])?;
        while let Some(r) = rows.next()? {
            fixes.push(StoredFix {
                id: uuid_of(&r.get::<_, Vec<u8>>(6)?)?,
                sample: FixSample {
                    recorded_at: parse_time(&r.get::<_, String>(0)?)?,
                    position: LonLat {
                        lat: r.get(1)?,
                        lon: r.get(2)?,
                    },
                    accuracy_m: r.get(3)?,
                    speed_mps: r.get(4)?,
                },
                flags: Flags(r.get(5)?),
            });
        }
        fixes.sort_by_key(|f| f.sample.recorded_at);
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_of_a_sqlite_url_is_read_as_sqlx_reads_it() {
        let path = |u: &str| path_of_url(u).map(|p| p.display().to_string());
        assert_eq!(
            path("sqlite:///srv/patrol/db.sqlite?mode=rwc").as_deref(),
            Some("/srv/patrol/db.sqlite")
        );
        assert_eq!(
            path("sqlite://patrol.db?mode=rwc").as_deref(),
            Some("patrol.db")
        );
        assert_eq!(path("sqlite:patrol.db").as_deref(), Some("patrol.db"));
        assert_eq!(
            path("sqlite:///tmp/a%20b+c.db").as_deref(),
            Some("/tmp/a b+c.db")
        );
        assert_eq!(path("sqlite::memory:"), None);
        assert_eq!(path("sqlite://shared?mode=memory&cache=shared"), None);
        assert_eq!(path("postgres://postgres@127.0.0.1/test"), None);
    }

    #[test]
    fn timestamps_are_written_as_sqlx_writes_them() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T20:01:06.186Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(t), "2026-11-28T20:01:06.186+00:00");
        assert_eq!(parse_time(&time(t)).unwrap(), t);
        let whole = DateTime::parse_from_rfc3339("2026-11-28T20:01:06Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(whole), "2026-11-28T20:01:06+00:00");
    }
}
