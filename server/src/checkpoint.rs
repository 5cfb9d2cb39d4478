//! WAL checkpoints of a SQLite database, off the ingest path, and bounded in size.
//!
//! The group-commit writer of fixes does not checkpoint (its connection has
//! `wal_autocheckpoint=0`): SQLite's automatic checkpoint runs right after a commit, copies
//! everything not yet copied and fsyncs the database file while the next group waits.
//! Instead a task on a connection of its own copies the WAL into the database every
//! [`EVERY`] with a passive checkpoint, which waits for nobody.
//!
//! A WAL starts again from its beginning only once everything in it has been copied, and
//! under a steady stream of commits a passive checkpoint never sees that moment. So when
//! the WAL is over [`RESTART_OVER_BYTES`], the task follows its passive pass with a
//! restart checkpoint: writers wait while it copies the little written since, and it
//! waits up to [`RESTART_WAIT`] for readers of older snapshots; the next write then starts
//! the WAL again and `journal_size_limit` cuts the file back. Without this, a full-scale
//! day sent in at speed, with overlapping readers (the coverage updater reading windows of
//! fixes, the alert evaluator), grew the WAL to 15 GB. When readers hold a restart off,
//! the next try waits for twice the size, so that they cannot make writers wait every tick.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// How often the WAL is copied into the database.
pub const EVERY: Duration = Duration::from_millis(250);
/// WAL size over which the WAL is started again from its beginning (the size its file is
/// cut back to, `journal_size_limit`).
pub const RESTART_OVER_BYTES: i64 = 64 * 1024 * 1024;
/// Passive passes are repeated before a restart until one finds at most this much written
/// during the pass before it …
const CAUGHT_UP_BYTES: i64 = 4 * 1024 * 1024;
/// … or this many have run.
const MAX_CATCH_UP_PASSES: usize = 8;
/// How long a restart checkpoint waits for readers (and holds off writers).
pub const RESTART_WAIT: Duration = Duration::from_secs(2);

/// What `PRAGMA wal_checkpoint` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// The checkpoint could not finish (readers or a writer in the way).
    pub busy: bool,
    /// Frames in the WAL.
    pub log_frames: i64,
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
        // Doubled after each restart that readers held off, so that they cannot make
        // writers wait every tick; back to the bound after one that worked.
        let mut restart_over = bounds.restart_over_bytes;
        loop {
            tick.tick().await;
            match checkpoint(&db, "PASSIVE").await {
                Ok(c) if c.log_frames.saturating_mul(page) > restart_over => {
                    // Passive passes copy nearly everything without stopping anyone, each
                    // what was written during the one before, until that is little; the
                    // restart copies the rest while writers wait, then starts the WAL again.
                    let mut last = c.log_frames;
                    for _ in 0..MAX_CATCH_UP_PASSES {
                        match checkpoint(&db, "PASSIVE").await {
                            Ok(n) if n.log_frames >= 0 => {
                                let written_since = n.log_frames - last;
                                last = n.log_frames;
                                if written_since.saturating_mul(page) <= CAUGHT_UP_BYTES {
                                    break;
                                }
                            }
                            _ => break,
                        }
                    }
                    let started = std::time::Instant::now();
                    match checkpoint(&db, "RESTART").await {
                        Ok(r) if !r.busy => {
                            restart_over = bounds.restart_over_bytes;
                            tracing::debug!(
                                wal_bytes = c.log_frames.saturating_mul(page),
                                waited_ms = started.elapsed().as_millis() as u64,
                                "WAL restarted"
                            );
                        }
                        Ok(_) => {
                            restart_over = restart_over.saturating_mul(2);
                            tracing::info!(
                                wal_bytes = c.log_frames.saturating_mul(page),
                                waited_ms = started.elapsed().as_millis() as u64,
                                next_try_over_bytes = restart_over,
                                "readers of old snapshots held off restarting the WAL"
                            );
                        }
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
        let crate::ingest::Target::SqliteFile(options) = db::writer_target(&settings, &pool) else {
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
        let page = page_size(&probe).await.unwrap();
        let (mut peak, mut restarted) = (0, false);
        for _ in 0..250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let frames = frames_in_wal(&probe).await;
            peak = peak.max(frames);
            if peak * page > bounds.restart_over_bytes && frames < peak / 2 {
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
