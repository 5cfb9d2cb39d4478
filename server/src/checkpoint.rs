//! WAL checkpoints of a SQLite database, off the ingest path and bounded in size.
//!
//! The group-commit writer of fixes does not checkpoint (its connection has
//! `wal_autocheckpoint=0`), so a commit never waits for pages to be copied into the database
//! file. Instead a task of its own copies the WAL into the database every
//! [`EVERY`] (a passive checkpoint, which waits for nobody).
//!
//! A passive checkpoint cannot reset the WAL while readers still read older snapshots
//! from it, and under a heavy ingest with overlapping readers (the coverage updater reading
//! windows of fixes, the alert evaluator) that can go on for ever: a full-scale day sent in
//! at speed grew the WAL to 10.9 GB. So when the WAL is over [`RESTART_OVER_BYTES`] the
//! task asks for a restart checkpoint, which waits up to [`RESTART_WAIT`] for those
//! readers to finish (holding off writers meanwhile), after which the next write starts
//! the WAL again from its beginning and `journal_size_limit` cuts the file back.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// How often the WAL is copied into the database.
pub const EVERY: Duration = Duration::from_secs(1);
/// WAL size over which readers are waited for so that the WAL can start again.
pub const RESTART_OVER_BYTES: i64 = 256 * 1024 * 1024;
/// How long a restart checkpoint waits for readers (and holds off writers).
pub const RESTART_WAIT: Duration = Duration::from_secs(2);

/// What `PRAGMA wal_checkpoint` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// The checkpoint could not finish (readers or a writer in the way).
    pub busy: bool,
    /// Frames in the WAL.
    pub log_frames: i64,
    /// Frames copied into the database.
    pub copied_frames: i64,
}

/// Runs one checkpoint of the given mode (`PASSIVE`, `RESTART`, …).
pub async fn checkpoint(
    db: &DatabaseConnection,
    mode: &str,
) -> Result<Checkpointed, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("PRAGMA wal_checkpoint({mode})"),
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("wal_checkpoint answered nothing".into()))?;
    Ok(Checkpointed {
        busy: row.try_get_by_index::<i64>(0)? != 0,
        log_frames: row.try_get_by_index(1)?,
        copied_frames: row.try_get_by_index(2)?,
    })
}

/// The database's page size in bytes.
async fn page_size(db: &DatabaseConnection) -> Result<i64, sea_orm::DbErr> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA page_size".to_owned(),
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("page_size answered nothing".into()))?;
    row.try_get_by_index(0)
}

/// When the checkpointer works and how long it waits.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How often the WAL is copied into the database.
    pub every: Duration,
    /// WAL size over which readers are waited for.
    pub restart_over_bytes: i64,
    /// How long a restart checkpoint waits for readers.
    pub restart_wait: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            every: EVERY,
            restart_over_bytes: RESTART_OVER_BYTES,
            restart_wait: RESTART_WAIT,
        }
    }
}

/// Starts the checkpoint task on its own connection `db` (a file-backed SQLite database).
pub fn spawn(db: DatabaseConnection, bounds: Bounds) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = db
            .execute_unprepared(&format!(
                "PRAGMA busy_timeout = {}",
                bounds.restart_wait.as_millis()
            ))
            .await
        {
            tracing::warn!(error = %e, "setting the checkpointer's busy timeout failed");
        }
        let page = page_size(&db).await.unwrap_or(4096).max(512);
        let mut tick = tokio::time::interval(bounds.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match checkpoint(&db, "PASSIVE").await {
                Ok(c) if c.log_frames.saturating_mul(page) > bounds.restart_over_bytes => {
                    let started = std::time::Instant::now();
                    match checkpoint(&db, "RESTART").await {
                        Ok(r) => tracing::info!(
                            wal_bytes = c.log_frames.saturating_mul(page),
                            restarted = !r.busy,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "the WAL outgrew its bound; waited for readers to restart it"
                        ),
                        Err(e) => tracing::warn!(error = %e, "restart checkpoint failed"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "checkpoint failed; will try again"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        db,
        settings::{Secret, Settings},
    };

    /// Frames in the WAL (asked again while the task's own checkpoint keeps it busy).
    async fn frames_in_wal(db: &DatabaseConnection) -> i64 {
        loop {
            let c = checkpoint(db, "PASSIVE").await.unwrap();
            if c.log_frames >= 0 {
                return c.log_frames;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn the_writer_leaves_checkpoints_to_the_task_which_restarts_an_overgrown_wal() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            database_url: Secret(format!("sqlite://{}/wal.db?mode=rwc", dir.path().display())),
            ..Settings::default()
        };
        let pool = db::connect(&settings).await.unwrap();
        let crate::ingest::Target::SqliteFile(options) = db::connect_writer(&settings, &pool)
        else {
            panic!("a SQLite file gets a writer connection of its own");
        };
        let writer = crate::ingest::sqlite::open(&options).unwrap();
        let probe = db::connect_checkpointer(&settings).await.unwrap().unwrap();
        let auto: i64 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "the writer must not checkpoint on its commits");
        writer
            .execute_batch("CREATE TABLE t (v BLOB NOT NULL)")
            .unwrap();
        // Readers overlap all the time (one always holds a snapshot the WAL has not
        // finished copying) while the writer goes on writing: a passive checkpoint alone
        // can never start the WAL again.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for k in 0..2u64 {
            let (pool, stop) = (pool.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * k)).await;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let txn = sea_orm::TransactionTrait::begin(&pool).await.unwrap();
                    txn.query_one_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        "SELECT count(*) FROM t".to_owned(),
                    ))
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    txn.commit().await.unwrap();
                }
            }));
        }
        {
            let stop = stop.clone();
            workers.push(tokio::task::spawn_blocking(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    writer
                        .execute_batch(
                            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 16) \
                             INSERT INTO t (v) SELECT randomblob(4096) FROM n",
                        )
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        let bounds = Bounds {
            every: Duration::from_millis(20),
            restart_over_bytes: 4 * 1024 * 1024,
            restart_wait: Duration::from_millis(500),
        };
        let task = spawn(
            db::connect_checkpointer(&settings).await.unwrap().unwrap(),
            bounds,
        );
        // The WAL grows past the bound and is then started again from its beginning.
        let (mut peak, mut restarted) = (0, false);
        for _ in 0..250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let frames = frames_in_wal(&probe).await;
            peak = peak.max(frames);
            if peak > 1024 && frames < peak / 2 {
                restarted = true;
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        task.abort();
        assert!(
            restarted,
            "the WAL was never started again (peak {peak} frames)"
        );
        let rows = pool
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT count(*) FROM t".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap();
        assert!(rows > 0, "no rows were written");
    }
}
