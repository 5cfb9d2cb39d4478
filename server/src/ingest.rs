//! Group commit of fixes: one writer task takes whatever requests are pending, writes
//! them in one transaction, and acknowledges each only after the commit. So throughput is
//! not capped by one disk flush per request, and nothing is acknowledged before it is
//! durable. Idempotency rests on the unique (member_id, client_id) index, so it holds
//! across retries, concurrent duplicates and processes.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::fix;

/// Most rows one writer transaction takes.
pub const MAX_GROUP_ROWS: usize = 2000;
/// Rows per INSERT statement (SQLite allows 32,766 bound parameters; a fix has 19).
const ROWS_PER_STATEMENT: usize = 500;

/// What became of one fix handed to the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// Stored now.
    Created(fix::Model),
    /// Stored before with the same content; here is the stored fix.
    Duplicate(fix::Model),
    /// Stored before with different content; the stored fix is untouched.
    Conflict(fix::Model),
}

struct Job {
    rows: Vec<fix::Model>,
    reply: oneshot::Sender<Result<Vec<Written>, String>>,
}

/// The handle to the writer task, cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on this database.
    pub fn start(db: DatabaseConnection) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(run(db, rx));
        Writer { tx }
    }

    /// Stores fixes (with their ids chosen by the caller) and waits for the commit.
    pub async fn write(&self, rows: Vec<fix::Model>) -> Result<Vec<Written>, String> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { rows, reply })
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the writer dropped the request".to_owned())?
    }
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut total = first.rows.len();
        let mut jobs = vec![first];
        while total < MAX_GROUP_ROWS {
            match rx.try_recv() {
                Ok(job) => {
                    total += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let rows: Vec<&fix::Model> = jobs.iter().flat_map(|j| j.rows.iter()).collect();
        match write_group(&db, &rows).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for job in jobs {
                    let mine: Vec<Written> = outcomes.by_ref().take(job.rows.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(group_error) => {
                // One job's fault (or a passing lock) must not fail the others: retry each alone.
                tracing::warn!(error = %group_error, jobs = jobs.len(), "group write failed; retrying jobs one by one");
                for job in jobs {
                    let rows: Vec<&fix::Model> = job.rows.iter().collect();
                    let result = write_group(&db, &rows).await.map_err(|e| e.to_string());
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

fn same_content(a: &fix::Model, b: &fix::Model) -> bool {
    a.recorded_at == b.recorded_at
        && a.lat == b.lat
        && a.lon == b.lon
        && a.accuracy_m == b.accuracy_m
        && a.speed_mps == b.speed_mps
        && a.heading_deg == b.heading_deg
        && a.altitude_m == b.altitude_m
        && a.battery == b.battery
        && a.kind == b.kind
        && a.post_id == b.post_id
        && a.shift_id == b.shift_id
        && a.datum == b.datum
        && a.mock == b.mock
}

async fn write_group(
    db: &DatabaseConnection,
    rows: &[&fix::Model],
) -> Result<Vec<Written>, sea_orm::DbErr> {
    let txn = db.begin().await?;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let models = chunk.iter().map(|m| {
            let active: fix::ActiveModel = (*m).clone().into();
            active
        });
        fix::Entity::insert_many(models)
            .on_conflict_do_nothing_on([fix::Column::MemberId, fix::Column::ClientId])
            .exec_without_returning(&txn)
            .await?;
    }
    let stored = read_back(&txn, rows).await?;
    txn.commit().await?;
    rows.iter()
        .map(|row| match stored.get(&(row.member_id, row.client_id)) {
            Some(s) if s.id == row.id => Ok(Written::Created(s.clone())),
            Some(s) if same_content(s, row) => Ok(Written::Duplicate(s.clone())),
            Some(s) => Ok(Written::Conflict(s.clone())),
            None => Err(sea_orm::DbErr::Custom(format!(
                "fix {} was neither inserted nor found",
                row.client_id
            ))),
        })
        .collect()
}

async fn read_back<C: ConnectionTrait>(
    db: &C,
    rows: &[&fix::Model],
) -> Result<HashMap<(Uuid, Uuid), fix::Model>, sea_orm::DbErr> {
    let mut out = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let members: Vec<Uuid> = {
            let mut m: Vec<Uuid> = chunk.iter().map(|r| r.member_id).collect();
            m.sort();
            m.dedup();
            m
        };
        let found = fix::Entity::find()
            .filter(fix::Column::MemberId.is_in(members))
            .filter(fix::Column::ClientId.is_in(chunk.iter().map(|r| r.client_id)))
            .all(db)
            .await?;
        for f in found {
            out.insert((f.member_id, f.client_id), f);
        }
    }
    Ok(out)
}
