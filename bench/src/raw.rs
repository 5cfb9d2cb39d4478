//! The raw insert ceiling: rows like the server's written straight into the same
//! database's `fixes` table, 1,000 rows per transaction, on one connection with the
//! server's durability settings. The rows come as the batch workloads send them: runs of
//! consecutive fixes of one member (a thousand, as in a batch of 1,000, unless
//! `--raw-run-rows` says otherwise), the members in turn. On SQLite they go in
//! as the server's writer puts them (prepared single-row INSERTs through rusqlite, WAL,
//! synchronous FULL, the writer's 64 MiB page cache); on PostgreSQL as INSERTs of up to 256
//! rows on a socket with `TCP_NODELAY`, as the server's writer puts them there.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{
    Connection, Postgres, QueryBuilder, Row,
    postgres::PgConnection,
    sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous},
};
use uuid::Uuid;

/// Most rows in one INSERT statement on PostgreSQL: the server writer's largest.
const ROWS_PER_STATEMENT: usize = 256;
/// What one raw baseline writes.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rows in all.
    pub total: usize,
    /// Rows per transaction.
    pub per_txn: usize,
    /// Consecutive rows of one member, as in one batch of a batch workload.
    pub run_rows: usize,
    /// `recorded_at` of each member's first row.
    pub base: DateTime<Utc>,
}

const COLUMNS: &str = "INSERT INTO fixes (id, member_id, client_id, recorded_at, received_at, \
     lat, lon, accuracy_m, speed_mps, heading_deg, altitude_m, battery, kind, post_id, shift_id, \
     datum, mock, flags, source) ";

/// The figures of the raw insert baseline.
#[derive(Debug, Serialize)]
pub struct RawMeasured {
    /// Rows inserted.
    pub rows: u64,
    /// Rows per transaction (on PostgreSQL in INSERT statements of at most 256 rows).
    pub rows_per_transaction: usize,
    /// Consecutive rows of one member, the members in turn.
    pub rows_per_member_run: usize,
    /// Transactions committed.
    pub transactions: u64,
    /// Time taken, in seconds.
    pub seconds: f64,
    /// Transactions a second.
    pub transactions_per_s: f64,
    /// Rows a second.
    pub rows_per_s: f64,
    /// Median time of one transaction (INSERT plus COMMIT), in ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile time of one transaction, in ms.
    pub p99_ms: Option<f64>,
    /// CPU used by this process (the database engine, for SQLite) while inserting, in %
    /// of one core.
    pub cpu_pct: Option<f64>,
    /// CPU used by every other process while inserting, in % of one core.
    pub other_cpu_pct: Option<f64>,
    /// How the rows were written to match the server's (what was read back, and from where).
    pub storage: String,
}

/// Values of the text columns, as the server writes them.
struct Texts {
    kind: String,
    datum: String,
    source: String,
}

/// One row, before encoding.
struct Row19 {
    id: Uuid,
    member_id: Uuid,
    client_id: Uuid,
    recorded_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    lat: f64,
    lon: f64,
}

fn make_rows(
    members: &[Uuid],
    first: u64,
    n: usize,
    plan: &Plan,
    received_at: DateTime<Utc>,
) -> Vec<Row19> {
    let run_rows = plan.run_rows.max(1) as u64;
    (0..n as u64)
        .map(|k| {
            // Like the batch workloads: runs of `run_rows` consecutive fixes of one member,
            // a second apart, the members in turn.
            let i = first + k;
            let run = i / run_rows;
            let m = (run % members.len() as u64) as usize;
            let step = (run / members.len() as u64) * run_rows + i % run_rows;
            Row19 {
                id: Uuid::now_v7(),
                member_id: members[m],
                client_id: Uuid::new_v4(),
                recorded_at: plan.base + TimeDelta::seconds(step as i64),
                received_at,
                lat: 34.22 + (m % 16) as f64 * 0.001 + (step % 500) as f64 / 111_320.0,
                lon: 108.95 + (m / 16) as f64 * 0.001,
            }
        })
        .collect()
}

/// How SQLite text timestamps look, taken from a stored one.
#[derive(Debug, Clone, PartialEq)]
pub struct TsFormat {
    separator: char,
    fraction_digits: usize,
    suffix: String,
}

impl TsFormat {
    /// Reads the layout of `sample` (`YYYY-MM-DD?HH:MM:SS[.fff…][offset]`).
    pub fn detect(sample: &str) -> anyhow::Result<TsFormat> {
        let bytes = sample.as_bytes();
        let shape_ok = bytes.len() >= 19
            && sample.is_char_boundary(19)
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[13] == b':'
            && bytes[16] == b':';
        if !shape_ok {
            bail!("stored timestamp {sample:?} is not YYYY-MM-DD?HH:MM:SS…");
        }
        let separator = char::from(bytes[10]);
        let rest = &sample[19..];
        let (fraction_digits, suffix) = match rest.strip_prefix('.') {
            Some(frac) => {
                let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
                (digits, &frac[digits..])
            }
            None => (0, rest),
        };
        if !["Z", "+00:00", "+0000", "+00", " UTC", ""].contains(&suffix) || fraction_digits > 9 {
            bail!("stored timestamp {sample:?} has an unexpected offset or fraction");
        }
        Ok(TsFormat {
            separator,
            fraction_digits,
            suffix: suffix.to_owned(),
        })
    }

    /// `t` in this layout.
    pub fn format(&self, t: DateTime<Utc>) -> String {
        let mut s = format!(
            "{}{}{}",
            t.format("%Y-%m-%d"),
            self.separator,
            t.format("%H:%M:%S")
        );
        if self.fraction_digits > 0 {
            let nanos = format!("{:09}", t.timestamp_subsec_nanos() % 1_000_000_000);
            s.push('.');
            s.push_str(&nanos[..self.fraction_digits]);
        }
        s.push_str(&self.suffix);
        s
    }
}

/// How to write a timestamp so that it reads like the server's.
#[derive(Debug, Clone, PartialEq)]
pub enum TsEncoding {
    /// What sqlx writes for a `DateTime<Utc>` (RFC 3339, as many fraction digits as
    /// needed, `+00:00`), which is what sea-orm stores.
    Sqlx,
    /// A fixed layout read from a stored value.
    Layout(TsFormat),
}

impl TsEncoding {
    /// sqlx's own encoding if `sample` reads back the same through it, else its layout.
    pub fn detect(sample: &str) -> anyhow::Result<TsEncoding> {
        let sqlx_like = DateTime::parse_from_rfc3339(sample).is_ok_and(|t| {
            t.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
                == sample
        });
        if sqlx_like {
            Ok(TsEncoding::Sqlx)
        } else {
            Ok(TsEncoding::Layout(TsFormat::detect(sample)?))
        }
    }

    /// `t` encoded.
    pub fn format(&self, t: DateTime<Utc>) -> String {
        match self {
            TsEncoding::Sqlx => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
            TsEncoding::Layout(layout) => layout.format(t),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            TsEncoding::Sqlx => "sqlx's RFC 3339 encoding",
            TsEncoding::Layout(_) => "a fixed layout read from it",
        }
    }
}

fn summarize(
    cpu_before: (Option<u64>, Option<u64>),
    rows: u64,
    plan: &Plan,
    took: Duration,
    mut txn_us: Vec<u32>,
    storage: String,
) -> RawMeasured {
    txn_us.sort_unstable();
    let secs = took.as_secs_f64();
    RawMeasured {
        rows,
        rows_per_transaction: plan.per_txn,
        rows_per_member_run: plan.run_rows,
        transactions: txn_us.len() as u64,
        seconds: secs,
        transactions_per_s: txn_us.len() as f64 / secs,
        rows_per_s: rows as f64 / secs,
        p50_ms: crate::load::percentile_ms(&txn_us, 0.50),
        p99_ms: crate::load::percentile_ms(&txn_us, 0.99),
        cpu_pct: cpu_before
            .1
            .zip(crate::cpu::own_ticks())
            .map(|(b, a)| crate::cpu::ticks_to_secs(a.saturating_sub(b)) / secs * 100.0),
        other_cpu_pct: crate::cpu::others_pct(
            (cpu_before.0, cpu_before.1, Some(0)),
            (
                crate::cpu::machine_busy_ticks(),
                crate::cpu::own_ticks(),
                Some(0),
            ),
            secs,
        ),
        storage,
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum IdStorage {
    Text,
    Blob,
}

fn uuid_from_sqlite(
    row: &sqlx::sqlite::SqliteRow,
    col: &str,
    storage: IdStorage,
) -> anyhow::Result<Uuid> {
    Ok(match storage {
        IdStorage::Text => Uuid::parse_str(&row.try_get::<String, _>(col)?)?,
        IdStorage::Blob => Uuid::from_slice(&row.try_get::<Vec<u8>, _>(col)?)?,
    })
}

/// Inserts `total` rows into the SQLite file the server used (the server must be stopped).
pub async fn sqlite(file: &std::path::Path, plan: Plan) -> anyhow::Result<RawMeasured> {
    let Plan { total, per_txn, .. } = plan;
    let options = SqliteConnectOptions::new()
        .filename(file)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // The page cache of the server's writer connection (see `db::writer_target`).
        .pragma("cache_size", "-65536");
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut conn)
        .await?;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    if sync != 2 || !journal.eq_ignore_ascii_case("wal") {
        bail!(
            "SQLite came up with synchronous={sync}, journal_mode={journal}; wanted 2 (FULL) and wal"
        );
    }

    // Match what the server stored: a fix it wrote if there is one, else a member row.
    let fix = sqlx::query(
        "SELECT typeof(id) AS id_type, typeof(recorded_at) AS ts_type, recorded_at, \
         received_at, typeof(mock) AS mock_type, kind, datum, source FROM fixes LIMIT 1",
    )
    .fetch_optional(&mut conn)
    .await?;
    let (id_type, ts_type, ts_sample, ts_sample_received, texts, from) = match &fix {
        Some(row) => {
            let mock_type: String = row.try_get("mock_type")?;
            if mock_type != "integer" {
                bail!("the server stored fixes.mock as {mock_type}, not integer");
            }
            (
                row.try_get::<String, _>("id_type")?,
                row.try_get::<String, _>("ts_type")?,
                row.try_get::<String, _>("recorded_at").ok(),
                row.try_get::<String, _>("received_at").ok(),
                Texts {
                    kind: row.try_get("kind")?,
                    datum: row.try_get("datum")?,
                    source: row.try_get("source")?,
                },
                "a fix the server wrote",
            )
        }
        None => {
            let row = sqlx::query(
                "SELECT typeof(id) AS id_type, typeof(created_at) AS ts_type, created_at \
                 FROM members LIMIT 1",
            )
            .fetch_one(&mut conn)
            .await
            .context("reading a member to match the server's storage")?;
            (
                row.try_get::<String, _>("id_type")?,
                row.try_get::<String, _>("ts_type")?,
                row.try_get::<String, _>("created_at").ok(),
                row.try_get::<String, _>("created_at").ok(),
                Texts {
                    kind: "ping".into(),
                    datum: "wgs84".into(),
                    source: "api".into(),
                },
                "a member row (no fix was stored)",
            )
        }
    };
    let id_storage = match id_type.as_str() {
        "text" => IdStorage::Text,
        "blob" => IdStorage::Blob,
        other => bail!("the server stored ids as {other}"),
    };
    if ts_type != "text" {
        bail!("the server stored timestamps as {ts_type}, not text");
    }
    let ts_sample = ts_sample.context("reading a stored timestamp")?;
    let ts = TsEncoding::detect(&ts_sample)?;
    let ts_received =
        TsEncoding::detect(&ts_sample_received.context("reading a stored timestamp")?)?;

    let member_rows = sqlx::query("SELECT id FROM members")
        .fetch_all(&mut conn)
        .await?;
    let members = member_rows
        .iter()
        .map(|r| uuid_from_sqlite(r, "id", id_storage))
        .collect::<anyhow::Result<Vec<Uuid>>>()?;
    if members.is_empty() {
        bail!("no members to own the rows");
    }
    if id_storage == IdStorage::Text {
        let sample: String = sqlx::query_scalar("SELECT id FROM members LIMIT 1")
            .fetch_one(&mut conn)
            .await?;
        if Uuid::parse_str(&sample)?.hyphenated().to_string() != sample {
            bail!("stored id {sample:?} is not in lower-case hyphenated form");
        }
    }
    let storage = format!(
        "ids as {id_type}, timestamps as text like {ts_sample:?} ({}; read from {from}), \
         kind {:?}, datum {:?}, source {:?}",
        ts.describe(),
        texts.kind,
        texts.datum,
        texts.source
    );

    conn.close().await.ok();

    // The rows go in as the server's writer puts them: one prepared single-row INSERT
    // after another on a connection of rusqlite's, with the writer's pragmas.
    let db =
        rusqlite::Connection::open(file).with_context(|| format!("opening {}", file.display()))?;
    db.busy_timeout(Duration::from_secs(10))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -65536;",
    )?;
    let sync: i64 = db.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        bail!("SQLite came up with synchronous={sync}; wanted 2 (FULL)");
    }
    let sql = format!(
        "{COLUMNS} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
         ?16, ?17, ?18, ?19)"
    );
    let id = |u: &Uuid| -> rusqlite::types::Value {
        match id_storage {
            IdStorage::Text => rusqlite::types::Value::Text(u.hyphenated().to_string()),
            IdStorage::Blob => rusqlite::types::Value::Blob(u.as_bytes().to_vec()),
        }
    };
    let mut txn_us = Vec::with_capacity(total / per_txn + 1);
    let cpu_before = (crate::cpu::machine_busy_ticks(), crate::cpu::own_ticks());
    let started = Instant::now();
    let mut written = 0u64;
    while (written as usize) < total {
        let n = per_txn.min(total - written as usize);
        let t0 = Instant::now();
        let rows = make_rows(&members, written, n, &plan, Utc::now());
        let tx = db.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(&sql)?;
            for r in &rows {
                insert
                    .execute(rusqlite::params![
                        id(&r.id),
                        id(&r.member_id),
                        id(&r.client_id),
                        ts.format(r.recorded_at),
                        ts_received.format(r.received_at),
                        r.lat,
                        r.lon,
                        8.0_f64,
                        Some(1.0_f64),
                        None::<f64>,
                        None::<f64>,
                        None::<f64>,
                        texts.kind,
                        None::<Vec<u8>>,
                        None::<Vec<u8>>,
                        texts.datum,
                        false,
                        0_i32,
                        texts.source,
                    ])
                    .context("raw INSERT into fixes")?;
            }
        }
        tx.commit()?;
        txn_us.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
        written += n as u64;
    }
    let took = started.elapsed();
    drop(db);
    Ok(summarize(cpu_before, written, &plan, took, txn_us, storage))
}

/// Inserts `total` rows into the PostgreSQL database at `url`.
pub async fn postgres(url: &str, plan: Plan) -> anyhow::Result<RawMeasured> {
    let Plan { total, per_txn, .. } = plan;
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to the bench database")?;
    // As the server's pool does: without it every statement over about 16 KiB waits 40 ms.
    patrol_server::nodelay::set_towards(&patrol_server::nodelay::database_peers(url).await);
    let members: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM members")
        .fetch_all(&mut conn)
        .await?;
    if members.is_empty() {
        bail!("no members to own the rows");
    }
    let texts = match sqlx::query("SELECT kind, datum, source FROM fixes LIMIT 1")
        .fetch_optional(&mut conn)
        .await?
    {
        Some(row) => Texts {
            kind: row.try_get("kind")?,
            datum: row.try_get("datum")?,
            source: row.try_get("source")?,
        },
        None => Texts {
            kind: "ping".into(),
            datum: "wgs84".into(),
            source: "api".into(),
        },
    };
    let storage = format!(
        "native uuid and timestamptz, kind {:?}, datum {:?}, source {:?}",
        texts.kind, texts.datum, texts.source
    );
    let mut txn_us = Vec::with_capacity(total / per_txn + 1);
    let cpu_before = (crate::cpu::machine_busy_ticks(), crate::cpu::own_ticks());
    let started = Instant::now();
    let mut written = 0u64;
    while (written as usize) < total {
        let n = per_txn.min(total - written as usize);
        let t0 = Instant::now();
        let rows = make_rows(&members, written, n, &plan, Utc::now());
        let mut tx = conn.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<Postgres>::new(COLUMNS);
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(r.member_id)
                    .push_bind(r.client_id)
                    .push_bind(r.recorded_at)
                    .push_bind(r.received_at)
                    .push_bind(r.lat)
                    .push_bind(r.lon)
                    .push_bind(8.0_f64)
                    .push_bind(Some(1.0_f64))
                    .push_bind(None::<f64>)
                    .push_bind(None::<f64>)
                    .push_bind(None::<f64>)
                    .push_bind(texts.kind.clone())
                    .push_bind(None::<Uuid>)
                    .push_bind(None::<Uuid>)
                    .push_bind(texts.datum.clone())
                    .push_bind(false)
                    .push_bind(0_i32)
                    .push_bind(texts.source.clone());
            });
            qb.build()
                .execute(&mut *tx)
                .await
                .context("raw INSERT into fixes")?;
        }
        tx.commit().await?;
        txn_us.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
        written += n as u64;
    }
    let took = started.elapsed();
    conn.close().await.ok();
    Ok(summarize(cpu_before, written, &plan, took, txn_us, storage))
}

/// `fsync` and `synchronous_commit` of the PostgreSQL server at `url`.
pub async fn postgres_durability(url: &str) -> anyhow::Result<(String, String)> {
    let mut conn = PgConnection::connect(url).await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;
    let commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok((fsync, commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_layouts_round_trip() {
        let t = DateTime::parse_from_rfc3339("2026-11-29T07:15:46.123456789Z")
            .unwrap()
            .to_utc();
        for sample in [
            "2026-11-29T07:15:46.123456789+00:00",
            "2026-11-29 07:15:46.123456+00:00",
            "2026-11-29T07:15:46.123Z",
            "2026-11-29 07:15:46",
            "2026-11-29 07:15:46.123456789 UTC",
        ] {
            assert_eq!(TsFormat::detect(sample).unwrap().format(t), sample);
        }
        assert!(TsFormat::detect("29/11/2026").is_err());
        assert_eq!(
            TsEncoding::detect("2026-11-28T19:37:22.449+00:00").unwrap(),
            TsEncoding::Sqlx
        );
        assert_eq!(
            TsEncoding::detect("2026-11-28T19:37:22+00:00").unwrap(),
            TsEncoding::Sqlx
        );
        assert!(matches!(
            TsEncoding::detect("2026-11-28 19:37:22.449").unwrap(),
            TsEncoding::Layout(_)
        ));
        assert!(TsFormat::detect("2026-11-29T07:15:46+08:00").is_err());
    }

    #[test]
    fn rows_come_in_runs_of_one_member_a_second_apart_the_members_in_turn() {
        let members: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let base = Utc::now() - TimeDelta::days(30);
        let plan = Plan {
            total: 1000,
            per_txn: 250,
            run_rows: 100,
            base,
        };
        // Two transactions' worth, made the way the baseline makes them.
        let mut rows = make_rows(&members, 0, 250, &plan, Utc::now());
        rows.extend(make_rows(&members, 250, 250, &plan, Utc::now()));
        for (i, r) in rows.iter().enumerate() {
            let run = i / 100;
            assert_eq!(r.member_id, members[run % 3], "row {i}");
            // A member's next run carries on a second after its last one.
            let step = (run / 3) * 100 + i % 100;
            assert_eq!(
                r.recorded_at,
                base + TimeDelta::seconds(step as i64),
                "row {i}"
            );
        }
        let clients: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.client_id).collect();
        assert_eq!(clients.len(), rows.len());
    }
}
