//! Group commit of fixes: one writer task takes whatever requests are pending, judges the
//! fixes against their members' neighbouring fixes, writes them in one transaction, and
//! acknowledges each only after the commit. So throughput is not capped by one disk flush
//! per request, nothing is acknowledged before it is durable, and the database is read
//! once per group, not once per request. Idempotency rests on the unique
//! (member_id, client_id) index, so it holds across retries, concurrent duplicates and
//! processes.
//!
//! Judging in the writer also means that fixes of one member arriving in concurrent
//! requests are judged against each other, in `recorded_at` order, as if they had come in
//! one batch. New fixes can change the verdict on stored fixes around them (the flags are
//! those of the member's whole set of fixes, see [`plausibility`]); the writer revises those
//! in the same transaction and tells the caller which revisions move a fix in or out of
//! coverage ([`Stored::revised`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryTrait, Statement, TransactionTrait, Value,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub mod sqlite;
#[allow(unsafe_code)]
mod wal_gather;

use crate::{
    domain::{
        geodesy::LonLat,
        plausibility::{self, FixSample, Flags, Mobility, StoredFix, Thresholds},
    },
    store::fix,
};

/// Most rows one writer transaction takes.
pub const MAX_GROUP_ROWS: usize = 4000;
/// Rows per read-back statement.
const ROWS_PER_STATEMENT: usize = 1000;
/// The sizes of INSERT statements, largest first. A few fixed sizes keep the statement
/// texts few, so the driver's prepared-statement cache answers instead of the SQL parser
/// (SQLite allows 32,766 bound parameters; a fix has 19). Statements this large are as
/// quick as small ones on PostgreSQL only because the pool's sockets have `TCP_NODELAY`
/// (see [`crate::nodelay`]).
const INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];
/// Members per neighbour query: three compound terms each, under SQLite's 500.
const MEMBERS_PER_QUERY: usize = 150;
/// Most stored fixes read between a member's earliest and latest new fix.
const WITHIN: usize = 20_000;

/// How long a member's tail, once read from the database, is trusted without reading it
/// again. Within one process the writer sees every fix it stores, so the tail stays exact;
/// the limit bounds what it can miss of fixes stored by other processes on the same
/// database.
const TAIL_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most members whose tails are kept.
const MAX_TAILS: usize = 200_000;

/// A member's latest stored fixes (up to the number the rules look back), in
/// `recorded_at` order, as the writer last knew them.
struct Tail {
    fixes: Vec<StoredFix>,
    loaded: std::time::Instant,
}

/// Tails by member: live phones send fixes newer than all they sent before, and for those
/// the tail is all the rules need, so the database is not read at all.
#[derive(Default)]
struct Tails(HashMap<Uuid, Tail>);

impl Tails {
    /// The stored neighbours of new fixes from `from` on, when the tail is known to hold
    /// them all: every new fix is later than every stored one.
    fn neighbours_of(&self, member: Uuid, from: DateTime<Utc>) -> Option<&[StoredFix]> {
        let tail = self.0.get(&member)?;
        if tail.loaded.elapsed() >= TAIL_TTL {
            return None;
        }
        match tail.fixes.last() {
            Some(last) if last.sample.recorded_at >= from => None,
            _ => Some(&tail.fixes),
        }
    }

    /// Records the member's stored fixes after a commit: `known` must end with the member's
    /// latest stored fix (`None` when that is not known, which forgets the tail).
    fn set(
        &mut self,
        member: Uuid,
        known: Option<Vec<StoredFix>>,
        keep: usize,
        loaded: Option<std::time::Instant>,
    ) {
        let Some(mut fixes) = known else {
            self.0.remove(&member);
            return;
        };
        fixes.sort_by_key(|f| f.sample.recorded_at);
        if fixes.len() > keep {
            fixes.drain(..fixes.len() - keep);
        }
        // `known` can hold a whole batch (a thousand fixes); kept with that capacity, every
        // member's tail held the room of its largest batch, about 700 MiB for a day of
        // 11,000 phones uploading in batches.
        fixes.shrink_to_fit();
        let loaded = loaded
            .or_else(|| self.0.get(&member).map(|t| t.loaded))
            .unwrap_or_else(std::time::Instant::now);
        if self.0.len() >= MAX_TAILS && !self.0.contains_key(&member) {
            self.0.retain(|_, t| t.loaded.elapsed() < TAIL_TTL);
            if self.0.len() >= MAX_TAILS {
                self.0.clear();
            }
        }
        self.0.insert(member, Tail { fixes, loaded });
    }
}

/// What became of a batch handed to the writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// What became of each row, in the order of the batch.
    pub rows: Vec<Written>,
    /// `recorded_at` of the member's stored fixes that this write moved in or out of
    /// coverage by revising their implausible_speed flag: the stored coverage they touch is
    /// out of date, as for a late fix.
    pub revised: Vec<DateTime<Utc>>,
}

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

/// Fixes of one member for the writer. Each row carries the flags that need nothing but
/// the fix and the member's shifts (accuracy, clock, mock, outside_shift); the writer adds
/// those that need the neighbouring fixes (speed, static repeat).
pub struct Batch {
    /// The member every row belongs to.
    pub member_id: Uuid,
    /// How the member moves, for the speed limit.
    pub mobility: Mobility,
    /// The rows, with ids chosen by the caller.
    pub rows: Vec<fix::Model>,
}

struct Job {
    batch: Batch,
    reply: oneshot::Sender<Result<Stored, String>>,
}

/// Where the writer writes.
pub enum Target {
    /// Through sea-orm on this connection, from a task (PostgreSQL, in-memory SQLite).
    Orm(DatabaseConnection),
    /// A SQLite file, on a connection and a thread of the writer's own.
    SqliteFile(sqlite::Options),
}

/// The handle to the writer task, cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer on this database, judging fixes with these thresholds.
    pub fn start(target: Target, thresholds: Thresholds) -> anyhow::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>(4096);
        match target {
            Target::Orm(db) => {
                tokio::spawn(run(db, thresholds, rx));
            }
            Target::SqliteFile(options) => {
                let conn = sqlite::open(&options)?;
                std::thread::Builder::new()
                    .name("patrol-writer".to_owned())
                    .spawn(move || run_sqlite(conn, thresholds, rx))?;
            }
        }
        Ok(Writer { tx })
    }

    /// Judges and stores a member's fixes and waits for the commit. The answer's rows are
    /// in the order of `batch.rows`.
    pub async fn write(&self, batch: Batch) -> Result<Stored, String> {
        if batch.rows.is_empty() {
            return Ok(Stored::default());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { batch, reply })
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the writer dropped the request".to_owned())?
    }
}

/// The jobs pending with `first`, up to [`MAX_GROUP_ROWS`] rows.
fn gather(first: Job, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut total = first.batch.rows.len();
    let mut jobs = vec![first];
    while total < MAX_GROUP_ROWS {
        match rx.try_recv() {
            Ok(job) => {
                total += job.batch.rows.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    jobs
}

async fn run(db: DatabaseConnection, t: Thresholds, mut rx: mpsc::Receiver<Job>) {
    let mut tails = Tails::default();
    while let Some(first) = rx.recv().await {
        let jobs = gather(first, &mut rx);
        let batches: Vec<&Batch> = jobs.iter().map(|j| &j.batch).collect();
        match write_group(&db, &t, &mut tails, &batches).await {
            Ok(outcomes) => answer(jobs, outcomes),
            Err(group_error) => {
                // One job's fault (or a passing lock) must not fail the others: retry each alone.
                tracing::warn!(error = %group_error, jobs = jobs.len(), "group write failed; retrying jobs one by one");
                for job in jobs {
                    let result = write_group(&db, &t, &mut tails, &[&job.batch])
                        .await
                        .map(|mut o| o.pop().unwrap_or_default())
                        .map_err(|e| e.to_string());
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// The writer's loop on its own thread and SQLite connection.
fn run_sqlite(mut conn: rusqlite::Connection, t: Thresholds, mut rx: mpsc::Receiver<Job>) {
    let mut tails = Tails::default();
    while let Some(first) = rx.blocking_recv() {
        let jobs = gather(first, &mut rx);
        let batches: Vec<&Batch> = jobs.iter().map(|j| &j.batch).collect();
        match sqlite::write_group(&mut conn, &t, &mut tails, &batches) {
            Ok(outcomes) => answer(jobs, outcomes),
            Err(group_error) => {
                tracing::warn!(error = %group_error, jobs = jobs.len(), "group write failed; retrying jobs one by one");
                for job in jobs {
                    let result = sqlite::write_group(&mut conn, &t, &mut tails, &[&job.batch])
                        .map(|mut o| o.pop().unwrap_or_default());
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

fn answer(jobs: Vec<Job>, outcomes: Vec<Stored>) {
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        let _ = job.reply.send(Ok(outcome));
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

fn sample_of(row: &fix::Model) -> FixSample {
    FixSample {
        recorded_at: row.recorded_at,
        position: LonLat {
            lon: row.lon,
            lat: row.lat,
        },
        accuracy_m: row.accuracy_m,
        speed_mps: row.speed_mps,
    }
}

/// The flags that depend on the neighbouring fixes.
const NEIGHBOUR_FLAGS: i32 = Flags::IMPLAUSIBLE_SPEED.0 | Flags::STATIC_REPEAT.0;

/// A stored fix whose flags new fixes changed (its implausible_speed or static_repeat), to
/// be written in the same transaction as the new fixes.
struct Revision {
    member_id: Uuid,
    id: Uuid,
    recorded_at: DateTime<Utc>,
    /// Whether the revision moves the fix in or out of coverage.
    counts_changed: bool,
    flags: i32,
}

/// A member's stored fixes around their new ones, as [`plausibility::judge`] needs them.
struct Around {
    fixes: Vec<StoredFix>,
    /// From the tail (else read from the database for this group).
    from_tail: bool,
}

/// A group of batches as the writer takes it: each member's new rows and the span they
/// cover.
struct Plan<'a> {
    batches: &'a [&'a Batch],
    /// Each member's new rows, in group order: (batch, row).
    by_member: HashMap<Uuid, (Mobility, Vec<(usize, usize)>)>,
    /// Each member's earliest and latest new fix.
    spans: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)>,
    /// Stored fixes read (and kept in the tails) before a member's earliest new one.
    keep: usize,
    /// Stored fixes read after a member's latest new one.
    after: usize,
}

impl<'a> Plan<'a> {
    fn new(batches: &'a [&'a Batch], t: &Thresholds) -> Plan<'a> {
        let mut by_member: HashMap<Uuid, (Mobility, Vec<(usize, usize)>)> = HashMap::new();
        for (b, batch) in batches.iter().enumerate() {
            let entry = by_member
                .entry(batch.member_id)
                .or_insert_with(|| (batch.mobility, Vec::new()));
            entry.1.extend((0..batch.rows.len()).map(|r| (b, r)));
        }
        let spans = by_member
            .iter()
            .map(|(member, (_, rows))| {
                let times = rows.iter().map(|&(b, r)| batches[b].rows[r].recorded_at);
                let from = times.clone().min().unwrap_or_default();
                let to = times.max().unwrap_or_default();
                (*member, from, to)
            })
            .collect();
        Plan {
            batches,
            by_member,
            spans,
            keep: plausibility::stored_before(t),
            after: plausibility::stored_after(t),
        }
    }

    /// Members whose tails do not answer for their new fixes: they are read from the
    /// database. This process writes fixes only here, so what is read before the
    /// transaction is what the transaction starts from.
    fn misses(&self, tails: &Tails) -> Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)> {
        self.spans
            .iter()
            .filter(|(member, from, _)| tails.neighbours_of(*member, *from).is_none())
            .copied()
            .collect()
    }

    /// Each member's stored fixes around the new ones: from the tail, unless the member is
    /// one of `misses`, whose fixes were `read`. Taken once, so that judging again after the
    /// insert and updating the tails see the same (a tail may expire meanwhile).
    fn around(
        &self,
        tails: &Tails,
        misses: &[(Uuid, DateTime<Utc>, DateTime<Utc>)],
        mut read: HashMap<Uuid, Vec<StoredFix>>,
    ) -> HashMap<Uuid, Around> {
        let missed: HashSet<Uuid> = misses.iter().map(|m| m.0).collect();
        self.spans
            .iter()
            .map(|(member, _, _)| {
                let around = match tails.0.get(member) {
                    Some(tail) if !missed.contains(member) => Around {
                        fixes: tail.fixes.clone(),
                        from_tail: true,
                    },
                    _ => Around {
                        fixes: read.remove(member).unwrap_or_default(),
                        from_tail: false,
                    },
                };
                (*member, around)
            })
            .collect()
    }

    /// The rows with the flags that depend on the neighbouring fixes (stored ones and each
    /// other), and the stored fixes whose flags the new ones change.
    fn judge(
        &self,
        around: &HashMap<Uuid, Around>,
        t: &Thresholds,
    ) -> (Vec<Vec<fix::Model>>, Vec<Revision>) {
        let mut rows: Vec<Vec<fix::Model>> = self.batches.iter().map(|b| b.rows.clone()).collect();
        let mut revisions = Vec::new();
        let none = HashSet::new();
        for member in self.by_member.keys() {
            self.judge_member(*member, around, t, &none, &mut rows, &mut revisions);
        }
        (rows, revisions)
    }

    /// [`Plan::judge`] for one member's rows, but those in `left_out`, written into `rows`
    /// (which must hold the member's rows as the batches have them) and `revisions`.
    fn judge_member(
        &self,
        member: Uuid,
        around: &HashMap<Uuid, Around>,
        t: &Thresholds,
        left_out: &HashSet<Uuid>,
        rows: &mut [Vec<fix::Model>],
        revisions: &mut Vec<Revision>,
    ) {
        let batches = self.batches;
        let Some((mobility, places)) = self.by_member.get(&member) else {
            return;
        };
        let places: Vec<(usize, usize)> = places
            .iter()
            .copied()
            .filter(|&(b, r)| !left_out.contains(&batches[b].rows[r].id))
            .collect();
        let Some(&(b0, r0)) = places.first() else {
            return;
        };
        let new: Vec<(FixSample, bool)> = places
            .iter()
            .map(|&(b, r)| {
                let row = &batches[b].rows[r];
                // A position its own device disowns is no speed neighbour, like a mock.
                let unusable = row.mock || Flags(row.flags).contains(Flags::INVALID_FIX);
                (sample_of(row), unusable)
            })
            .collect();
        let theirs = around.get(&member).map_or(&[][..], |a| &a.fixes);
        let received_at = batches[b0].rows[r0].received_at;
        let judged = plausibility::judge(theirs, &new, received_at, *mobility, t);
        for (&(b, r), flags) in places.iter().zip(judged.new) {
            rows[b][r].flags |= flags.0 & NEIGHBOUR_FLAGS;
        }
        if judged.needs_more_after && around.get(&member).is_some_and(|a| !a.from_tail) {
            let to = new.iter().map(|(f, _)| f.recorded_at).max();
            let read_after = theirs
                .iter()
                .filter(|f| Some(f.sample.recorded_at) > to)
                .count();
            if read_after >= self.after {
                tracing::warn!(
                    member = %member,
                    "revising flags after new fixes reached past the stored fixes read; later ones may keep flags their whole set would not give them"
                );
            }
        }
        revisions.extend(judged.revised.into_iter().map(|(fix, flags)| Revision {
            member_id: member,
            id: fix.id,
            recorded_at: fix.sample.recorded_at,
            counts_changed: fix.flags.excludes_from_coverage() != flags.excludes_from_coverage(),
            flags: flags.0,
        }));
    }

    /// After the insert, when some rows were not inserted (stored before: retries,
    /// duplicates in one group): their members' rows are judged again without them, since
    /// a fix judged twice would be its own neighbour. Answers the inserted rows whose flags
    /// that changes, (id, flags now), to be written with the revisions.
    fn judge_again_without(
        &self,
        around: &HashMap<Uuid, Around>,
        t: &Thresholds,
        inserted: &HashSet<Uuid>,
        rows: &mut [Vec<fix::Model>],
        revisions: &mut Vec<Revision>,
    ) -> Vec<(Uuid, i32)> {
        let left_out: HashSet<Uuid> = rows
            .iter()
            .flatten()
            .filter(|r| !inserted.contains(&r.id))
            .map(|r| r.id)
            .collect();
        if left_out.is_empty() {
            return Vec::new();
        }
        let members: HashSet<Uuid> = rows
            .iter()
            .flatten()
            .filter(|r| left_out.contains(&r.id))
            .map(|r| r.member_id)
            .collect();
        let judged: Vec<Vec<i32>> = rows
            .iter()
            .map(|rows| rows.iter().map(|r| r.flags).collect())
            .collect();
        revisions.retain(|r| !members.contains(&r.member_id));
        for member in members {
            for &(b, r) in &self.by_member[&member].1 {
                rows[b][r].flags = self.batches[b].rows[r].flags;
            }
            self.judge_member(member, around, t, &left_out, rows, revisions);
        }
        rows.iter()
            .flatten()
            .zip(judged.iter().flatten())
            .filter(|(now, was)| inserted.contains(&now.id) && now.flags != **was)
            .map(|(now, _)| (now.id, now.flags))
            .collect()
    }

    /// After the commit: updates the tails (with the stored fixes' revised flags) and says
    /// what became of each batch.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        tails: &mut Tails,
        mut around: HashMap<Uuid, Around>,
        read_at: std::time::Instant,
        rows: Vec<Vec<fix::Model>>,
        revisions: &[Revision],
        inserted: &HashSet<Uuid>,
        earlier: &HashMap<(Uuid, Uuid), fix::Model>,
    ) -> Result<Vec<Stored>, String> {
        let revised: HashMap<Uuid, i32> = revisions.iter().map(|r| (r.id, r.flags)).collect();
        // The tails after the commit: what answered for the new fixes, plus those stored now.
        let mut updates: Vec<(Uuid, Option<Vec<StoredFix>>, Option<std::time::Instant>)> =
            Vec::with_capacity(self.spans.len());
        for (member, _, to) in &self.spans {
            let Around { fixes, from_tail } = around.remove(member).unwrap_or(Around {
                fixes: Vec::new(),
                from_tail: false,
            });
            let (mut known, loaded) = if from_tail {
                (Some(fixes), None)
            } else if fixes.iter().any(|f| f.sample.recorded_at > *to) {
                // Stored fixes after the new ones mean the read did not reach the latest.
                (None, None)
            } else {
                (Some(fixes), Some(read_at))
            };
            if let Some(known) = known.as_mut() {
                for fix in known.iter_mut() {
                    if let Some(flags) = revised.get(&fix.id) {
                        fix.flags = Flags(*flags);
                    }
                }
                for &(b, r) in &self.by_member[member].1 {
                    let row = &rows[b][r];
                    if inserted.contains(&row.id) {
                        known.push(StoredFix {
                            id: row.id,
                            sample: sample_of(row),
                            flags: Flags(row.flags),
                        });
                    }
                }
            }
            updates.push((*member, known, loaded));
        }
        for (member, known, loaded) in updates {
            tails.set(member, known, self.keep, loaded);
        }
        // Revisions that move fixes in or out of coverage go to the member's first batch,
        // whose caller marks the coverage they touch.
        let mut moved: Vec<Vec<DateTime<Utc>>> = vec![Vec::new(); rows.len()];
        for r in revisions.iter().filter(|r| r.counts_changed) {
            if let Some(&(b, _)) = self.by_member.get(&r.member_id).and_then(|m| m.1.first()) {
                moved[b].push(r.recorded_at);
            }
        }
        rows.into_iter()
            .zip(moved)
            .map(|(rows, revised)| {
                let rows = rows
                    .into_iter()
                    .map(|row| {
                        if inserted.contains(&row.id) {
                            return Ok(Written::Created(row));
                        }
                        match earlier.get(&(row.member_id, row.client_id)) {
                            Some(s) if same_content(s, &row) => Ok(Written::Duplicate(s.clone())),
                            Some(s) => Ok(Written::Conflict(s.clone())),
                            None => Err(format!(
                                "fix {} was neither inserted nor found",
                                row.client_id
                            )),
                        }
                    })
                    .collect::<Result<Vec<Written>, String>>()?;
                Ok(Stored { rows, revised })
            })
            .collect()
    }
}

/// Judges, inserts and commits a group of batches through sea-orm (PostgreSQL, and
/// in-memory SQLite); the answer per batch.
async fn write_group(
    db: &DatabaseConnection,
    t: &Thresholds,
    tails: &mut Tails,
    batches: &[&Batch],
) -> Result<Vec<Stored>, sea_orm::DbErr> {
    let plan = Plan::new(batches, t);
    let t0 = std::time::Instant::now();
    let misses = plan.misses(tails);
    let read_at = std::time::Instant::now();
    let read = neighbours(db, &misses, plan.keep, plan.after).await?;
    let t1 = t0.elapsed();
    let around = plan.around(tails, &misses, read);
    let (mut rows, mut revisions) = plan.judge(&around, t);

    let txn = db.begin().await?;
    let mut inserted: HashSet<Uuid> = HashSet::with_capacity(rows.iter().map(Vec::len).sum());
    let all: Vec<&fix::Model> = rows.iter().flatten().collect();
    for chunk in insert_chunks(&all) {
        let models = chunk.iter().map(|m| {
            let active: fix::ActiveModel = (*m).clone().into();
            active
        });
        let mut insert = fix::Entity::insert_many(models)
            .on_conflict_do_nothing_on([fix::Column::MemberId, fix::Column::ClientId])
            .into_query();
        insert.returning_col(fix::Column::Id);
        for row in txn.query_all(&insert).await? {
            inserted.insert(row.try_get::<Uuid>("", "id")?);
        }
    }
    let corrections = plan.judge_again_without(&around, t, &inserted, &mut rows, &mut revisions);
    let updates = revisions.iter().map(|r| (r.id, r.flags)).chain(corrections);
    for (id, flags) in updates {
        fix::Entity::update_many()
            .col_expr(fix::Column::Flags, sea_orm::sea_query::Expr::value(flags))
            .filter(fix::Column::Id.eq(id))
            .exec(&txn)
            .await?;
    }
    let others: Vec<&fix::Model> = rows
        .iter()
        .flatten()
        .filter(|r| !inserted.contains(&r.id))
        .collect();
    let t2 = t0.elapsed();
    let earlier = read_back(&txn, &others).await?;
    txn.commit().await?;
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
    .map_err(sea_orm::DbErr::Custom)
}

/// Splits rows into chunks of the sizes in [`INSERT_SIZES`], largest first.
fn insert_chunks<T>(mut rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    for size in INSERT_SIZES {
        while rows.len() >= size {
            let (chunk, rest) = rows.split_at(size);
            out.push(chunk);
            rows = rest;
        }
    }
    out
}

/// The stored fixes around each member's span, in `recorded_at` order: `before` fixes
/// before it, everything inside it, and `after` fixes after it, as
/// [`plausibility::judge`] needs them. One statement for many members.
async fn neighbours(
    db: &DatabaseConnection,
    spans: &[(Uuid, DateTime<Utc>, DateTime<Utc>)],
    before: usize,
    after: usize,
) -> Result<HashMap<Uuid, Vec<StoredFix>>, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let mut out: HashMap<Uuid, Vec<StoredFix>> = HashMap::with_capacity(spans.len());
    for chunk in spans.chunks(MEMBERS_PER_QUERY) {
        let mut sql = String::with_capacity(chunk.len() * 600);
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 5);
        let param = |values: &mut Vec<Value>, v: Value| -> String {
            values.push(v);
            match backend {
                DbBackend::Postgres => format!("${}", values.len()),
                _ => "?".to_owned(),
            }
        };
        const COLUMNS: &str = "id, member_id, recorded_at, lat, lon, accuracy_m, speed_mps, flags";
        for (i, (member, from, to)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            let m = param(&mut values, (*member).into());
            let f = param(&mut values, (*from).into());
            sql.push_str(&format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM fixes WHERE member_id = {m} AND recorded_at < {f} \
                 ORDER BY recorded_at DESC LIMIT {before}) AS b{i}"
            ));
            let m = param(&mut values, (*member).into());
            let f = param(&mut values, (*from).into());
            let t = param(&mut values, (*to).into());
            sql.push_str(&format!(
                " UNION ALL SELECT * FROM (SELECT {COLUMNS} FROM fixes WHERE member_id = {m} \
                 AND recorded_at >= {f} AND recorded_at <= {t} ORDER BY recorded_at LIMIT {WITHIN}) AS w{i}"
            ));
            let m = param(&mut values, (*member).into());
            let t = param(&mut values, (*to).into());
            sql.push_str(&format!(
                " UNION ALL SELECT * FROM (SELECT {COLUMNS} FROM fixes WHERE member_id = {m} \
                 AND recorded_at > {t} ORDER BY recorded_at LIMIT {after}) AS a{i}"
            ));
        }
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        for row in rows {
            let member: Uuid = row.try_get("", "member_id")?;
            out.entry(member).or_default().push(StoredFix {
                id: row.try_get("", "id")?,
                sample: FixSample {
                    recorded_at: row.try_get("", "recorded_at")?,
                    position: LonLat {
                        lon: row.try_get("", "lon")?,
                        lat: row.try_get("", "lat")?,
                    },
                    accuracy_m: row.try_get("", "accuracy_m")?,
                    speed_mps: row.try_get("", "speed_mps")?,
                },
                flags: Flags(row.try_get("", "flags")?),
            });
        }
    }
    for fixes in out.values_mut() {
        fixes.sort_by_key(|f| f.sample.recorded_at);
    }
    Ok(out)
}

/// The stored fixes with these rows' (member, client id).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_chunks_cover_every_row_once_in_order_with_few_sizes() {
        for n in [0usize, 1, 3, 4, 17, 99, 256, 257, 1000, 4000] {
            let rows: Vec<usize> = (0..n).collect();
            let chunks = insert_chunks(&rows);
            let flat: Vec<usize> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(flat, rows);
            assert!(chunks.iter().all(|c| INSERT_SIZES.contains(&c.len())));
        }
    }

    #[test]
    fn a_tail_keeps_the_latest_fixes_and_not_the_room_of_a_whole_batch() {
        let start = DateTime::parse_from_rfc3339("2026-11-28T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let batch: Vec<StoredFix> = (0..1000)
            .rev()
            .map(|i| StoredFix {
                id: Uuid::from_u128(i as u128),
                sample: FixSample {
                    recorded_at: start + chrono::Duration::seconds(i),
                    position: LonLat {
                        lon: 108.95,
                        lat: 34.25,
                    },
                    accuracy_m: 5.0,
                    speed_mps: None,
                },
                flags: Flags::empty(),
            })
            .collect();
        let member = Uuid::now_v7();
        let mut tails = Tails::default();
        tails.set(member, Some(batch), 14, None);
        let tail = &tails.0[&member].fixes;
        assert_eq!(tail.len(), 14);
        assert!(tail.capacity() < 100, "capacity {}", tail.capacity());
        assert_eq!(
            tail.last().map(|f| f.sample.recorded_at),
            Some(start + chrono::Duration::seconds(999))
        );
        assert!(tail.is_sorted_by_key(|f| f.sample.recorded_at));
    }
}
