//! Background jobs that run in one process at a time when several processes share one
//! PostgreSQL: each pass first takes the job's transaction-level advisory lock
//! (`pg_try_advisory_xact_lock`) in a transaction of its own and holds it until the pass
//! ends; a process that cannot take it skips the pass. The lock goes with the transaction:
//! at the end of the pass, on an error, and when the process dies (PostgreSQL ends the
//! session of a closed connection). Why per pass and not a leader that keeps the lock:
//! docs/decisions/0008-one-job-runner.md.
//!
//! SQLite has one process by design, so there every pass runs.

use std::future::Future;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};

use crate::settings::Settings;

/// A background job whose passes run in one process at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// The alert evaluator ([`crate::alerts::evaluate`]).
    AlertEvaluator,
    /// The post status watcher ([`crate::alerts::watch_posts_once`]).
    PostWatcher,
    /// The updater of stored coverage ([`crate::coverage::spawn_updater`]).
    CoverageUpdater,
    /// The retention purge ([`crate::retention::spawn_purger`]).
    RetentionPurge,
}

/// The first 48 bits of every advisory lock key of ours: "patrol" in ASCII.
const KEY_PREFIX: i64 = 0x7061_7472_6f6c_0000;

/// The key of the advisory lock the migrations are applied under.
pub const MIGRATION_KEY: i64 = KEY_PREFIX | 6;

impl Job {
    /// Every job.
    pub const ALL: [Job; 4] = [
        Job::AlertEvaluator,
        Job::PostWatcher,
        Job::CoverageUpdater,
        Job::RetentionPurge,
    ];

    /// The key of its advisory lock. Key 1 is the event publishers' (see
    /// [`crate::events`]) and [`MIGRATION_KEY`] the migrations'.
    pub const fn key(self) -> i64 {
        KEY_PREFIX
            | match self {
                Job::AlertEvaluator => 2,
                Job::PostWatcher => 3,
                Job::CoverageUpdater => 4,
                Job::RetentionPurge => 5,
            }
    }
}

/// Where a process takes the locks of its jobs.
pub struct JobLocks {
    /// On PostgreSQL, a pool of one connection a job. Each held lock keeps a connection
    /// for the whole pass while the pass itself works through the main pool; taken from
    /// the main pool, the locks of four passes at once could hold every connection of a
    /// small pool and leave the passes waiting for one.
    pool: Option<DatabaseConnection>,
}

impl JobLocks {
    /// Locks for the database of `settings`: a pool of their own on PostgreSQL, nothing on
    /// SQLite.
    pub async fn open(settings: &Settings) -> anyhow::Result<JobLocks> {
        let pool = if settings.is_postgres() {
            Some(crate::db::connect_job_locks(settings, Job::ALL.len() as u32).await?)
        } else {
            None
        };
        Ok(JobLocks { pool })
    }

    /// Closes the connections of the locks (at shutdown, once the jobs are stopped).
    pub async fn close(&self) {
        if let Some(pool) = &self.pool {
            pool.close_by_ref().await.ok();
        }
    }

    /// The job's lock, or `None` while another process holds it. On SQLite it is always
    /// given and holds nothing.
    pub async fn try_hold(&self, job: Job) -> Result<Option<Held>, DbErr> {
        let Some(pool) = &self.pool else {
            return Ok(Some(Held { txn: None }));
        };
        let txn = pool.begin().await?;
        let row = txn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT pg_try_advisory_xact_lock({}) AS got", job.key()),
            ))
            .await?;
        let got = row.map(|r| r.try_get::<bool>("", "got")).transpose()?;
        if got == Some(true) {
            Ok(Some(Held { txn: Some(txn) }))
        } else {
            txn.rollback().await?;
            Ok(None)
        }
    }

    /// Runs `pass` if this process can take the job's lock, holding it until the pass
    /// ends; `None` (and `pass` never started) while another process holds it.
    pub async fn run<T, E: From<DbErr>>(
        &self,
        job: Job,
        pass: impl Future<Output = Result<T, E>>,
    ) -> Result<Option<T>, E> {
        let Some(held) = self.try_hold(job).await? else {
            return Ok(None);
        };
        // On an error the lock goes with the dropped transaction.
        let done = pass.await?;
        held.release().await?;
        Ok(Some(done))
    }
}

/// A job's lock, held until [`Held::release`] or until dropped.
#[must_use = "the lock is released when this is dropped"]
pub struct Held {
    txn: Option<DatabaseTransaction>,
}

impl Held {
    /// The transaction that holds the lock (PostgreSQL): what is written in it commits
    /// only while the lock is still held, so no process that has lost the lock can commit.
    pub fn txn(&self) -> Option<&DatabaseTransaction> {
        self.txn.as_ref()
    }

    /// Commits what was written in [`Held::txn`] and lets the lock go.
    pub async fn release(self) -> Result<(), DbErr> {
        match self.txn {
            Some(txn) => txn.commit().await,
            None => Ok(()),
        }
    }
}
