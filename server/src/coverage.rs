//! Coverage kept up to date: finished shifts have their figures stored and refreshed when
//! late fixes arrive; running shifts are computed from their fixes so far. The rule itself
//! is [`crate::domain::coverage`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use rustc_hash::{FxHashMap, FxHashSet};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Statement,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use crate::sqlite_reads::{parse_time, time, uuid_of};
use crate::{
    domain::{
        coverage::{
            CoverageSettings, FixIn, PreparedPost, ShiftCoverage, ShiftSpec, Status, evaluate,
        },
        geodesy::LonLat,
        geometry::{PostGeometry, PostKind},
        plausibility::Flags,
    },
    error::{ApiError, ApiResult},
    jobs::Job,
    routes::shifts::people_on,
    state::AppState,
    store::{fix, post, shift, shift_coverage},
};

/// After late fixes, how long the updater waits for more before recomputing.
const LATE_QUIET: Duration = Duration::from_secs(2);
/// The longest the updater puts off recomputing while late fixes keep coming.
const LATE_DEBOUNCE_MAX: Duration = Duration::from_secs(300);
/// How often the background updater looks for finished shifts to store.
pub const UPDATE_EVERY: Duration = Duration::from_secs(5);
/// Fixes of the shift's members this long before and after it are read, so that the
/// evidence counts fixes just outside the shift.
const EDGE: chrono::Duration = chrono::Duration::hours(1);

/// How long after its end (plus [`EDGE`], the reach of its members' evidence) a shift's
/// coverage is stored. Until then it is computed from its fixes on request, so fixes still
/// on their way need no bookkeeping.
pub const SETTLE: chrono::Duration = chrono::Duration::seconds(60);
/// Fixes recorded longer ago than this when they arrive may touch stored coverage (see
/// [`mark_touched`]); younger ones cannot, given [`SETTLE`].
pub const LATE: chrono::Duration = chrono::Duration::seconds(30);

/// Whether a shift that ends at `ends_at` has its coverage stored by `now`.
pub fn settled(ends_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    ends_at + EDGE + SETTLE <= now
}

/// Marks stale the stored coverage that late fixes of a member change: the settled shifts
/// of that member whose evidence span (the shift and [`EDGE`] either side) holds one of
/// the fixes. Only the shift's members' fixes count (product rule), so a fix of anyone
/// else changes no figure that decides a status, and marks nothing: otherwise anyone
/// could have a week of stored figures computed again with one batch. (The count of
/// others' fixes near the post, `excluded.not_member`, is as it was when the figures
/// were computed.)
///
/// `my_shifts` are the member's shifts over the sync window (id, start, end), as the
/// check-in rules already hold them, so no read is needed; `now` is taken after the fixes
/// were stored.
pub async fn mark_touched(
    state: &AppState,
    my_shifts: &[(Uuid, DateTime<Utc>, DateTime<Utc>)],
    fixes: &[DateTime<Utc>],
    now: DateTime<Utc>,
) {
    let settled_by = now - EDGE - SETTLE + chrono::Duration::seconds(1);
    let mut touched: Vec<Uuid> = my_shifts
        .iter()
        .filter(|(_, starts_at, ends_at)| {
            *ends_at <= settled_by
                && fixes
                    .iter()
                    .any(|&t| *starts_at - EDGE <= t && t < *ends_at + EDGE)
        })
        .map(|(id, _, _)| *id)
        .collect();
    if touched.is_empty() {
        return;
    }
    touched.sort_unstable();
    touched.dedup();
    // The fixes are stored by now: a database too busy to take the mark (a long stream of
    // writes can hold SQLite's write lock past the busy timeout) must not fail their
    // request. The updater marks them instead, and reads treat them as stale meanwhile.
    if let Err(e) = mark_stale(state, &touched).await {
        tracing::warn!(error = %e, shifts = touched.len(), "marking stored coverage stale failed; the updater will mark it");
        state.deferred_stale.add(&touched);
        state.coverage_wakeup.notify_one();
    }
}

/// Shifts whose stored figures late fixes changed but could not be marked stale at once;
/// the updater marks them, and reads compute them from the fixes until then.
#[derive(Default)]
pub struct DeferredStale(Mutex<HashSet<Uuid>>);

impl DeferredStale {
    fn add(&self, ids: &[Uuid]) {
        if let Ok(mut set) = self.0.lock() {
            set.extend(ids.iter().copied());
        }
    }

    fn take(&self) -> Vec<Uuid> {
        self.0
            .lock()
            .map(|mut set| set.drain().collect())
            .unwrap_or_default()
    }

    /// The shifts waiting to be marked (usually none).
    fn snapshot(&self) -> HashSet<Uuid> {
        self.0.lock().map(|set| set.clone()).unwrap_or_default()
    }
}

/// Prepared posts by id, rebuilt when a post changes.
#[derive(Default)]
pub struct PreparedPosts(Mutex<HashMap<Uuid, PreparedEntry>>);

/// A prepared post and the `updated_at` of the post it was prepared from.
type PreparedEntry = (DateTime<Utc>, Arc<PreparedPost>);

impl PreparedPosts {
    /// The prepared post, from the cache when the post has not changed.
    pub fn get(&self, p: &post::Model) -> Option<Arc<PreparedPost>> {
        if let Ok(cache) = self.0.lock()
            && let Some((updated, prepared)) = cache.get(&p.id)
            && *updated == p.updated_at
        {
            return Some(prepared.clone());
        }
        let kind = PostKind::parse(&p.kind)?;
        let geometry = PostGeometry::from_stored(kind, &p.geometry)?;
        let prepared = Arc::new(PreparedPost::new(kind, &geometry, p.corridor_m, p.radius_m));
        if let Ok(mut cache) = self.0.lock() {
            cache.insert(p.id, (p.updated_at, prepared.clone()));
        }
        Some(prepared)
    }
}

/// The settings of the rule.
pub fn settings_of(state: &AppState) -> CoverageSettings {
    CoverageSettings {
        max_accuracy_m: state.settings.max_accuracy_m,
        max_gap_s: state.settings.max_gap_s,
        count_unknown_accuracy: state.settings.count_unknown_accuracy,
    }
}

/// Marks the stored coverage of these shifts out of date.
///
/// Its callers carry on when it fails (the updater marks the shifts later), so the error
/// is returned as the database gave it, for their warning, and not logged as a fault.
pub async fn mark_stale(state: &AppState, shift_ids: &[Uuid]) -> Result<(), sea_orm::DbErr> {
    mark_stale_on(&state.db, shift::Column::Id, shift_ids).await?;
    state.coverage_wakeup.notify_one();
    Ok(())
}

/// Marks out of date, on `db` (the pool or a transaction), the stored coverage whose
/// shift `by` (`Id` or `PostId`) is one of `ids`: after a late fix, a corrected roster
/// or a changed post. The caller wakes the updater once the change is committed.
///
/// Every ended shift so named gets a row, stale, with its generation bumped: a shift whose
/// figures are being computed right now, from fixes read before this mark, has no row yet
/// or an older generation, and [`store`] then leaves the mark in place.
pub async fn mark_stale_on<C: ConnectionTrait>(
    db: &C,
    by: shift::Column,
    ids: &[Uuid],
) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sea_query::{ExprTrait, Query};
    let now = Utc::now();
    for chunk in ids.chunks(500) {
        let ended = Query::select()
            .columns([
                shift::Column::Id,
                shift::Column::PostId,
                shift::Column::StartsAt,
                shift::Column::EndsAt,
            ])
            .expr(Expr::val(Status::Pending.as_str()))
            .expr(Expr::val(""))
            .expr(Expr::val(now))
            .expr(Expr::val(true))
            .expr(Expr::val(1i64))
            .from(shift::Entity)
            .and_where(Expr::col(by).is_in(chunk.iter().copied()))
            .and_where(Expr::col(shift::Column::EndsAt).lte(now))
            .to_owned();
        let upsert = Query::insert()
            .into_table(shift_coverage::Entity)
            .columns([
                shift_coverage::Column::ShiftId,
                shift_coverage::Column::PostId,
                shift_coverage::Column::StartsAt,
                shift_coverage::Column::EndsAt,
                shift_coverage::Column::Status,
                shift_coverage::Column::Result,
                shift_coverage::Column::ComputedAt,
                shift_coverage::Column::Stale,
                shift_coverage::Column::Generation,
            ])
            .select_from(ended)
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
            .on_conflict(
                OnConflict::column(shift_coverage::Column::ShiftId)
                    .value(shift_coverage::Column::Stale, Expr::val(true))
                    .value(
                        shift_coverage::Column::Generation,
                        Expr::col((shift_coverage::Entity, shift_coverage::Column::Generation))
                            .add(1i64),
                    )
                    .to_owned(),
            )
            .to_owned();
        db.execute(&upsert).await?;
    }
    Ok(())
}

/// The generation of the stored coverage of each of these shifts that has a row; a
/// result computed after this read is stored only over the same generation ([`store`]).
pub async fn generations(state: &AppState, shift_ids: &[Uuid]) -> ApiResult<Generations> {
    let mut out = Generations::default();
    for chunk in shift_ids.chunks(500) {
        let rows: Vec<(Uuid, i64)> = shift_coverage::Entity::find()
            .select_only()
            .column(shift_coverage::Column::ShiftId)
            .column(shift_coverage::Column::Generation)
            .filter(shift_coverage::Column::ShiftId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(&state.db)
            .await?;
        out.0.extend(rows);
    }
    Ok(out)
}

/// The generations of stored coverage read before its fixes ([`generations`]); a shift
/// without a row is at generation 0.
#[derive(Debug, Default)]
pub struct Generations(HashMap<Uuid, i64>);

impl Generations {
    fn of(&self, shift_id: Uuid) -> i64 {
        self.0.get(&shift_id).copied().unwrap_or(0)
    }
}

/// Width of the time windows in which [`evaluate_streaming`] reads fixes.
const WINDOW: chrono::Duration = chrono::Duration::hours(1);
/// Fixes in a window are read with the members of the shifts it touches named in the query
/// unless there are more than this many; then every fix of the window is read and the
/// others are passed over. Besides saving the database a long IN list, this keeps the
/// statements few: each distinct one is prepared and kept by the connection, and kept
/// statements naming thousands of members took hundreds of MiB.
const MAX_NAMED_MEMBERS: usize = 64;
/// Shifts evaluated together on one blocking thread.
const EVALUATE_BATCH: usize = 64;
/// Windows read at once on a SQLite file, each on a connection of its own (see
/// [`crate::sqlite_reads`]), ahead of the one whose rows are being handed to the shifts.
/// With the day in memory two keep both cores busy; with the file on disk each read spends
/// most of its time waiting for pages, and more reads at once keep the disk busy instead
/// (full worst-case day, rebuild with the file out of the page cache: 31–35 s with 2,
/// 22–24 s with 4, 16–19 s with 8, 15 s with 16; in memory 6.5–7.1 s with 2, 6.6–7.3 s
/// with 8, 7.3–7.5 s with 16). Each holds the rows it keeps of an hour, tens of MiB on
/// such a day.
pub(crate) const READ_AHEAD: usize = 8;
/// Windows read at once through the pool (PostgreSQL, an in-memory SQLite database): each
/// holds one of its connections for the whole read, and requests need the rest.
const READ_AHEAD_POOLED: usize = 2;

/// A fix as read for coverage: the six columns the rule needs.
type FixRow = (Uuid, DateTime<Utc>, f64, f64, f64, i32);

/// The box around a post in which anyone's fix during a shift is read as evidence.
#[derive(Clone, Copy, Debug)]
struct NearBox {
    min_lat: f64,
    max_lat: f64,
    min_lon: f64,
    max_lon: f64,
}

impl NearBox {
    fn of(p: &post::Model, max_accuracy_m: f64) -> NearBox {
        let margin = (p.corridor_m.or(p.radius_m).unwrap_or(50.0) + max_accuracy_m) / 111_000.0;
        let lon_margin = margin / p.min_lat.to_radians().cos().max(0.1);
        NearBox {
            min_lat: p.min_lat - margin,
            max_lat: p.max_lat + margin,
            min_lon: p.min_lon - lon_margin,
            max_lon: p.max_lon + lon_margin,
        }
    }

    fn contains(&self, lat: f64, lon: f64) -> bool {
        lat >= self.min_lat && lat <= self.max_lat && lon >= self.min_lon && lon <= self.max_lon
    }

    fn union(self, o: NearBox) -> NearBox {
        NearBox {
            min_lat: self.min_lat.min(o.min_lat),
            max_lat: self.max_lat.max(o.max_lat),
            min_lon: self.min_lon.min(o.min_lon),
            max_lon: self.max_lon.max(o.max_lon),
        }
    }
}

/// The boxes around posts, found by position through a grid of cells.
struct Grid {
    boxes: Vec<NearBox>,
    /// Looked up for every row a coverage pass reads that is not a member's of an open
    /// shift (most of a day's), hence the cheap hash.
    cells: FxHashMap<(i64, i64), Vec<usize>>,
    /// Boxes too large for the grid, tested for every position.
    wide: Vec<usize>,
}

impl Grid {
    /// Cell size in degrees (about a kilometre).
    const CELL: f64 = 0.01;
    /// Boxes over more cells than this go in [`Grid::wide`].
    const MAX_CELLS: i64 = 10_000;

    fn cell(v: f64) -> i64 {
        (v / Self::CELL).floor() as i64
    }

    fn new(boxes: Vec<NearBox>) -> Grid {
        let mut cells: FxHashMap<(i64, i64), Vec<usize>> = FxHashMap::default();
        let mut wide = Vec::new();
        for (slot, b) in boxes.iter().enumerate() {
            let (y0, y1) = (Self::cell(b.min_lat), Self::cell(b.max_lat));
            let (x0, x1) = (Self::cell(b.min_lon), Self::cell(b.max_lon));
            let finite = [b.min_lat, b.max_lat, b.min_lon, b.max_lon]
                .iter()
                .all(|v| v.is_finite());
            if !finite || (y1 - y0 + 1).saturating_mul(x1 - x0 + 1) > Self::MAX_CELLS {
                wide.push(slot);
                continue;
            }
            for y in y0..=y1 {
                for x in x0..=x1 {
                    cells.entry((y, x)).or_default().push(slot);
                }
            }
        }
        Grid { boxes, cells, wide }
    }

    /// The boxes (by slot) that contain a position.
    fn containing(&self, lat: f64, lon: f64) -> impl Iterator<Item = usize> + '_ {
        self.cells
            .get(&(Self::cell(lat), Self::cell(lon)))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .chain(&self.wide)
            .copied()
            .filter(move |&slot| self.boxes[slot].contains(lat, lon))
    }
}

/// What a window read keeps of the rows it steps through, decided on the reading thread
/// so that rows of nobody's shift far from every post (most of a day when every phone
/// reports all day) are never handed on: the fixes of the members of the shifts whose
/// span touches the window, and anyone's near a post.
struct Keep {
    members: FxHashSet<Uuid>,
    grid: Arc<Grid>,
}

impl Keep {
    fn keeps(&self, member_id: &Uuid, lat: f64, lon: f64) -> bool {
        self.members.contains(member_id) || self.grid.containing(lat, lon).next().is_some()
    }
}

/// A shift being gathered: what the rule needs, and the fixes that bear on it so far.
struct Gathering {
    spec: ShiftSpec,
    prepared: Arc<PreparedPost>,
    /// Its post in the list of posts near which fixes are evidence.
    post_slot: usize,
    /// Its members' fixes count from here (the start less [`EDGE`]) …
    reads_from: DateTime<Utc>,
    /// … to here (the end plus [`EDGE`]), exclusive.
    reads_until: DateTime<Utc>,
    fixes: Vec<FixIn>,
}

/// Evaluates shifts from their fixes in one pass over the time they span, and hands the
/// results to `sink` in batches as the shifts complete (as `(index in shifts, result)`),
/// after storing those of ended shifts when `store_ended` is set.
///
/// The fixes that bear on a shift are its members' from an hour before it to an hour after
/// it, and anyone's near the post during it (counted as evidence of who else was there).
/// They are read once for all the shifts, window by window in time order with only the
/// columns the rule needs, the next window's read overlapping the current one's work; a
/// shift is evaluated on a blocking thread as soon as the windows have passed its end, so
/// memory holds only the shifts still open.
pub async fn evaluate_streaming(
    state: &AppState,
    shifts: &[shift::Model],
    now: DateTime<Utc>,
    store_ended: bool,
    mut sink: impl FnMut(Vec<(usize, ShiftCoverage)>),
) -> ApiResult<()> {
    let generations = if store_ended {
        let ids: Vec<Uuid> = shifts.iter().map(|s| s.id).collect();
        generations(state, &ids).await?
    } else {
        Generations::default()
    };
    let generations = &generations;
    let hand_on =
        async |results: Vec<(usize, ShiftCoverage)>| -> ApiResult<Vec<(usize, ShiftCoverage)>> {
            if store_ended {
                let pairs: Vec<(&shift::Model, &ShiftCoverage)> = results
                    .iter()
                    .map(|(i, c)| (&shifts[*i], c))
                    .filter(|(s, _)| settled(s.ends_at, now))
                    .collect();
                store(state, &pairs, generations, now).await?;
            }
            Ok(results)
        };
    if shifts.is_empty() {
        return Ok(());
    }
    let post_ids: Vec<Uuid> = shifts
        .iter()
        .map(|s| s.post_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut posts: HashMap<Uuid, post::Model> = HashMap::new();
    for chunk in post_ids.chunks(500) {
        for p in post::Entity::find()
            .filter(post::Column::Id.is_in(chunk.iter().copied()))
            .all(&state.db)
            .await?
        {
            posts.insert(p.id, p);
        }
    }
    let mut people = people_on(&state.db, shifts).await?;
    let settings = settings_of(state);

    let mut open: Vec<Option<Gathering>> = Vec::with_capacity(shifts.len());
    let mut by_member: FxHashMap<Uuid, Vec<usize>> = FxHashMap::default();
    let mut post_slot: HashMap<Uuid, usize> = HashMap::new();
    let mut near_posts: Vec<(NearBox, Vec<usize>)> = Vec::new();
    for (i, s) in shifts.iter().enumerate() {
        let p = posts
            .get(&s.post_id)
            .ok_or_else(|| ApiError::internal("shift without its post"))?;
        let prepared = state.prepared_posts.get(p).ok_or_else(|| {
            ApiError::internal(format!("post {} has an unreadable geometry", p.code))
        })?;
        let members = people.remove(&s.id).unwrap_or_default();
        for m in &members {
            by_member.entry(*m).or_default().push(i);
        }
        let slot = *post_slot.entry(p.id).or_insert_with(|| {
            near_posts.push((NearBox::of(p, settings.max_accuracy_m), Vec::new()));
            near_posts.len() - 1
        });
        near_posts[slot].1.push(i);
        open.push(Some(Gathering {
            spec: ShiftSpec {
                id: s.id,
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                members,
                min_headcount: s.min_headcount.unwrap_or(p.min_headcount).max(1) as u32,
                required_coverage: p.required_coverage.unwrap_or(0.8),
                required_presence: p.required_presence.unwrap_or(0.9),
                arrival_grace_min: i64::from(p.arrival_grace_min),
            },
            prepared,
            post_slot: slot,
            reads_from: s.starts_at - EDGE,
            reads_until: s.ends_at + EDGE,
            fixes: Vec::new(),
        }));
    }
    // Shifts in the order they complete.
    let mut closing: Vec<usize> = (0..shifts.len()).collect();
    closing.sort_by_key(|&i| shifts[i].ends_at);
    let mut closing = closing.into_iter().peekable();

    // Windows are whole hours (but the last), so that a packed hour is read once.
    let first = crate::packs::hour_start(crate::packs::hour_of(
        shifts.iter().map(|s| s.starts_at).min().unwrap_or(now) - EDGE,
    ));
    let last = shifts.iter().map(|s| s.ends_at).max().unwrap_or(now) + EDGE;
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = {
        let mut out = Vec::new();
        let mut a = first;
        while a < last {
            let b = (a + WINDOW).min(last);
            out.push((a, b));
            a = b;
        }
        out
    };
    let grid = Arc::new(Grid::new(near_posts.iter().map(|(n, _)| *n).collect()));
    // Fixes near each post (by slot), in the time still needed by its open shifts.
    let mut evidence: Vec<Vec<FixIn>> = vec![Vec::new(); near_posts.len()];
    // A window's filter is taken from the shifts still open when its read starts: a
    // superset of those its rows can bear on, since only shifts the windows have passed
    // are closed.
    let read = |open: &[Option<Gathering>], (a, b): (DateTime<Utc>, DateTime<Utc>)| {
        let (filter, members) = window_filter(open, &near_posts, a, b);
        let keep = Keep {
            members,
            grid: grid.clone(),
        };
        let db = state.db.clone();
        let reads = state.sqlite_reads.clone();
        tokio::spawn(async move { read_window(&db, reads.as_ref(), a, b, filter, keep).await })
    };
    let read_ahead = if state.sqlite_reads.is_some() {
        READ_AHEAD
    } else {
        READ_AHEAD_POOLED
    };
    let mut pending: std::collections::VecDeque<_> = windows
        .iter()
        .take(read_ahead)
        .map(|w| read(&open, *w))
        .collect();
    let mut evaluations = Vec::new();
    for (k, &(_, b)) in windows.iter().enumerate() {
        let Some(reading) = pending.pop_front() else {
            break;
        };
        let rows = reading.await.map_err(ApiError::internal)??;
        let read_rows = rows.len();
        if let Some(w) = windows.get(k + read_ahead) {
            pending.push_back(read(&open, *w));
        }
        for (member_id, recorded_at, lat, lon, accuracy_m, flags) in rows {
            let fix = FixIn {
                member_id,
                recorded_at,
                position: LonLat { lon, lat },
                accuracy_m,
                flags: Flags(flags),
            };
            if let Some(mine) = by_member.get(&member_id) {
                for &i in mine {
                    if let Some(g) = open[i].as_mut()
                        && recorded_at >= g.reads_from
                        && recorded_at < g.reads_until
                    {
                        g.fixes.push(fix);
                    }
                }
            }
            // Anyone's fix near a post, kept once per post however many of its shifts
            // overlap; each shift takes those during it when it is evaluated.
            for slot in grid.containing(lat, lon) {
                evidence[slot].push(fix);
            }
        }
        // Every shift whose span the windows have passed is complete.
        let mut done = Vec::new();
        while let Some(&i) = closing.peek() {
            let complete = open[i].as_ref().is_some_and(|g| g.reads_until <= b);
            if !complete && k + 1 < windows.len() {
                break;
            }
            closing.next();
            if let Some(mut g) = open[i].take() {
                // Anyone's fix near the post during the shift (a member's own fix there is
                // already in, since the shift lies inside its members' span).
                g.fixes.extend(evidence[g.post_slot].iter().filter(|f| {
                    f.recorded_at >= g.spec.starts_at
                        && f.recorded_at < g.spec.ends_at
                        && !g.spec.members.contains(&f.member_id)
                }));
                done.push((i, g));
            }
            if done.len() == EVALUATE_BATCH {
                evaluations.push(spawn_evaluation(std::mem::take(&mut done), now, settings));
            }
        }
        if !done.is_empty() {
            evaluations.push(spawn_evaluation(done, now, settings));
        }
        // Evidence before the earliest start of a post's shifts still open is needed no more.
        for (slot, (_, ids)) in near_posts.iter().enumerate() {
            if evidence[slot].is_empty() {
                continue;
            }
            match ids
                .iter()
                .filter_map(|&i| open[i].as_ref())
                .map(|g| g.spec.starts_at)
                .min()
            {
                Some(earliest) => evidence[slot].retain(|f| f.recorded_at >= earliest),
                None => evidence[slot] = Vec::new(),
            }
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(
                window = k,
                windows = windows.len(),
                read_rows,
                shifts = shifts.len(),
                open_fixes = open.iter().flatten().map(|g| g.fixes.len()).sum::<usize>(),
                evidence = evidence.iter().map(Vec::len).sum::<usize>(),
                evaluations = evaluations.len(),
                "coverage window passed"
            );
        }
        // Hand on what has been evaluated, in order, without waiting for the rest.
        while evaluations.first().is_some_and(|h| h.is_finished()) {
            let results = evaluations.remove(0).await.map_err(ApiError::internal)?;
            sink(hand_on(results).await?);
        }
    }
    for h in evaluations {
        let results = h.await.map_err(ApiError::internal)?;
        sink(hand_on(results).await?);
    }
    Ok(())
}

/// Evaluates complete shifts on a blocking thread.
fn spawn_evaluation(
    done: Vec<(usize, Gathering)>,
    now: DateTime<Utc>,
    settings: CoverageSettings,
) -> tokio::task::JoinHandle<Vec<(usize, ShiftCoverage)>> {
    tokio::task::spawn_blocking(move || {
        done.into_iter()
            .map(|(i, g)| (i, evaluate(&g.prepared, &g.spec, &g.fixes, now, &settings)))
            .collect()
    })
}

/// Which fixes of `[a, b)` to read: the members of the shifts whose span touches it, and
/// anything in the box around the posts of the shifts running in it. Answers the condition
/// for the database (none when the members are too many to name) and those members.
fn window_filter(
    open: &[Option<Gathering>],
    near_posts: &[(NearBox, Vec<usize>)],
    a: DateTime<Utc>,
    b: DateTime<Utc>,
) -> (Option<Condition>, FxHashSet<Uuid>) {
    let mut members: FxHashSet<Uuid> = FxHashSet::default();
    let mut near: Option<NearBox> = None;
    for g in open.iter().flatten() {
        if g.reads_from < b && g.reads_until > a {
            members.extend(g.spec.members.iter().copied());
        }
        if g.spec.starts_at < b && g.spec.ends_at > a {
            let bx = near_posts[g.post_slot].0;
            near = Some(near.map_or(bx, |n| n.union(bx)));
        }
    }
    if members.len() > MAX_NAMED_MEMBERS {
        return (None, members);
    }
    let mut any = Condition::any();
    if !members.is_empty() {
        any = any.add(fix::Column::MemberId.is_in(members.iter().copied()));
    }
    if let Some(n) = near {
        any = any.add(
            Condition::all()
                .add(fix::Column::Lat.between(n.min_lat, n.max_lat))
                .add(fix::Column::Lon.between(n.min_lon, n.max_lon)),
        );
    }
    (Some(any), members)
}

/// The fixes recorded in `[a, b)` that pass `filter` (all of them without one) and that
/// `keep` keeps. On a SQLite file they are read on a connection of their own (see
/// [`crate::sqlite_reads`]): a window holds up to a few hundred thousand rows, and through
/// sqlx each is a hand-off between threads.
async fn read_window(
    db: &sea_orm::DatabaseConnection,
    reads: Option<&Arc<crate::sqlite_reads::SqliteReads>>,
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    filter: Option<Condition>,
    keep: Keep,
) -> ApiResult<Vec<FixRow>> {
    // The columns of the index that carries them (on time on PostgreSQL, by member and time
    // on SQLite), so the read never looks a row up in the table.
    let mut q = fix::Entity::find()
        .select_only()
        .column(fix::Column::MemberId)
        .column(fix::Column::RecordedAt)
        .column(fix::Column::Lat)
        .column(fix::Column::Lon)
        .column(fix::Column::AccuracyM)
        .column(fix::Column::Flags)
        .filter(fix::Column::RecordedAt.gte(a))
        .filter(fix::Column::RecordedAt.lt(b));
    if let Some(f) = filter {
        q = q.filter(f);
    }
    if let Some(by_member) = fix::by_member_on(db.get_database_backend()) {
        q = q.filter(by_member);
    }
    if let Some(reads) = reads {
        let statement = sea_orm::QueryTrait::build(&q, DbBackend::Sqlite);
        let params: Vec<rusqlite::types::Value> = match &statement.values {
            Some(values) => values
                .0
                .iter()
                .map(sqlite_value)
                .collect::<ApiResult<_>>()?,
            None => Vec::new(),
        };
        let sql = statement.sql;
        return reads
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let mut out = Vec::new();
                // A past hour is read from its packs when it has them.
                if crate::packs::read_packed(&tx, a, b, |member_id, (t, lat, lon, acc, flags)| {
                    if keep.keeps(member_id, lat, lon) {
                        out.push((*member_id, t, lat, lon, acc, flags));
                    }
                })? {
                    return Ok(out);
                }
                let mut select = tx.prepare_cached(&sql)?;
                let mut rows = select.query(rusqlite::params_from_iter(params))?;
                while let Some(r) = rows.next()? {
                    let member_id = uuid_of(r.get_ref(0)?.as_blob()?)?;
                    let (lat, lon): (f64, f64) = (r.get(2)?, r.get(3)?);
                    if !keep.keeps(&member_id, lat, lon) {
                        continue;
                    }
                    out.push((
                        member_id,
                        parse_time(r.get_ref(1)?.as_str()?)?,
                        lat,
                        lon,
                        r.get(4)?,
                        r.get(5)?,
                    ));
                }
                Ok(out)
            })
            .await;
    }
    // Row by row: a window can hold a hundred thousand fixes, and the driver's rows take
    // many times the room of the six values kept of each.
    let mut rows = q.into_tuple::<FixRow>().stream(db).await?;
    let mut out = Vec::new();
    while let Some(row) = rows.try_next().await? {
        if keep.keeps(&row.0, row.2, row.3) {
            out.push(row);
        }
    }
    Ok(out)
}

/// Computes shifts from their fixes (no stored results are used).
pub async fn compute(
    state: &AppState,
    shifts: &[shift::Model],
    now: DateTime<Utc>,
) -> ApiResult<Vec<ShiftCoverage>> {
    let mut out: Vec<Option<ShiftCoverage>> = vec![None; shifts.len()];
    evaluate_streaming(state, shifts, now, false, |results| {
        for (i, c) in results {
            out[i] = Some(c);
        }
    })
    .await?;
    out.into_iter()
        .map(|c| c.ok_or_else(|| ApiError::internal("a shift was not evaluated")))
        .collect()
}

/// Coverage of shifts: stored figures for finished shifts that are up to date, computed
/// ones for the rest (and those of finished shifts are stored).
pub async fn coverage_of(
    state: &AppState,
    shifts: &[shift::Model],
) -> ApiResult<Vec<ShiftCoverage>> {
    let now = Utc::now();
    let mut stored: HashMap<Uuid, ShiftCoverage> = HashMap::new();
    let deferred = state.deferred_stale.snapshot();
    let finished: Vec<Uuid> = shifts
        .iter()
        .filter(|s| settled(s.ends_at, now) && !deferred.contains(&s.id))
        .map(|s| s.id)
        .collect();
    let mut generations = Generations::default();
    for chunk in finished.chunks(500) {
        for row in shift_coverage::Entity::find()
            .filter(shift_coverage::Column::ShiftId.is_in(chunk.iter().copied()))
            .all(&state.db)
            .await?
        {
            generations.0.insert(row.shift_id, row.generation);
            if !row.stale
                && let Ok(c) = serde_json::from_str::<ShiftCoverage>(&row.result)
            {
                stored.insert(row.shift_id, c);
            }
        }
    }
    let missing: Vec<shift::Model> = shifts
        .iter()
        .filter(|s| !stored.contains_key(&s.id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let computed = compute(state, &missing, now).await?;
        let to_store: Vec<(&shift::Model, &ShiftCoverage)> = missing
            .iter()
            .zip(computed.iter())
            .filter(|(s, _)| settled(s.ends_at, now))
            .collect();
        store(state, &to_store, &generations, now).await?;
        for (s, c) in missing.iter().zip(computed) {
            stored.insert(s.id, c);
        }
    }
    shifts
        .iter()
        .map(|s| {
            stored
                .remove(&s.id)
                .ok_or_else(|| ApiError::internal("coverage missing"))
        })
        .collect()
}

/// A shift overlapping a span, with its figures as the JSON object of its
/// [`ShiftCoverage`].
pub struct ShiftFigures {
    /// The shift.
    pub shift_id: Uuid,
    /// Its post.
    pub post_id: Uuid,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Its status.
    pub status: Status,
    /// Its figures.
    pub json: String,
}

/// The shifts of these posts (all posts when `None`) that overlap `[from, to)`, by start
/// (then end, post and id), with their figures: stored figures of finished shifts are read
/// with the shifts and handed on as stored, without being parsed; the others are computed
/// (and stored when settled) as in [`coverage_of`].
pub async fn coverage_json_over(
    state: &AppState,
    post_ids: Option<&[Uuid]>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<Vec<ShiftFigures>> {
    let now = Utc::now();
    let backend = state.db.get_database_backend();
    // `starts_at > $4` is implied (no shift is longer than MAX_SHIFT) and bounds the
    // search of the index on starts_at to the span instead of every shift before its end.
    let mut values: Vec<sea_orm::Value> = vec![
        false.into(),
        from.into(),
        to.into(),
        (from - crate::routes::shifts::MAX_SHIFT).into(),
    ];
    // The posts as bound parameters: `$5,$6,…`.
    let mut posts = Vec::new();
    if let Some(ids) = post_ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        for id in ids {
            values.push((*id).into());
            posts.push(format!("${}", values.len()));
        }
    }
    // The span (and the posts) as a condition on the columns `post_id`, `starts_at` and
    // `ends_at` of the table whose prefix is `p` (`shifts` and `shift_coverage` both have
    // them).
    let span = |p: &str| {
        let mut sql = format!("{p}ends_at > $2 AND {p}starts_at < $3 AND {p}starts_at > $4");
        if !posts.is_empty() {
            sql.push_str(&format!(" AND {p}post_id IN ({})", posts.join(",")));
        }
        sql
    };
    let rows: Vec<StoredRow> = match &state.sqlite_reads {
        Some(reads) => {
            // Two range scans, each on its own table's index on `starts_at`, joined here by
            // shift id: a join in SQL costs SQLite a search of `shift_coverage` by id for
            // each shift, three to four times what the two scans cost together. Stored
            // figures whose own span falls outside (none should) are computed again below.
            // Both are read in one transaction, so they see the same state of the database.
            let span = span("");
            // In the order of the index `idx_shifts_span`, which covers the statement.
            // SQLite numbers its parameters `?NNN`.
            let shifts_sql = format!(
                "SELECT id, post_id, starts_at, ends_at FROM shifts WHERE {span} \
                 ORDER BY starts_at, ends_at, post_id, id"
            )
            .replace('$', "?");
            let stored_sql = format!(
                "SELECT shift_id, status, result FROM shift_coverage WHERE stale = $1 AND {span}"
            )
            .replace('$', "?");
            let params: Vec<rusqlite::types::Value> =
                values.iter().map(sqlite_value).collect::<ApiResult<_>>()?;
            reads
                .read(move |conn| {
                    let tx = conn.unchecked_transaction()?;
                    let mut stored: HashMap<Uuid, (String, String)> = HashMap::new();
                    {
                        let mut select = tx.prepare_cached(&stored_sql)?;
                        let mut rows = select.query(rusqlite::params_from_iter(&params))?;
                        while let Some(r) = rows.next()? {
                            stored
                                .insert(uuid_of(r.get_ref(0)?.as_blob()?)?, (r.get(1)?, r.get(2)?));
                        }
                    }
                    let mut out = Vec::with_capacity(stored.len());
                    {
                        // This statement does not use `?1` (the stale flag); SQLite counts
                        // parameters up to the highest number, so it is bound and unused.
                        let mut select = tx.prepare_cached(&shifts_sql)?;
                        let mut rows = select.query(rusqlite::params_from_iter(&params))?;
                        while let Some(r) = rows.next()? {
                            let shift_id = uuid_of(r.get_ref(0)?.as_blob()?)?;
                            let (status, result) = stored.remove(&shift_id).unzip();
                            out.push(StoredRow {
                                shift_id,
                                post_id: uuid_of(r.get_ref(1)?.as_blob()?)?,
                                starts_at: parse_time(r.get_ref(2)?.as_str()?)?,
                                ends_at: parse_time(r.get_ref(3)?.as_str()?)?,
                                status,
                                result,
                            });
                        }
                    }
                    tx.finish()?;
                    Ok(out)
                })
                .await?
        }
        None => {
            let mut sql = format!(
                "SELECT s.id, s.post_id, s.starts_at, s.ends_at, c.status, c.result \
                 FROM shifts s LEFT JOIN shift_coverage c ON c.shift_id = s.id AND c.stale = $1 \
                 WHERE {} ORDER BY s.starts_at, s.ends_at, s.post_id, s.id",
                span("s."),
            );
            if backend == DbBackend::Sqlite {
                sql = sql.replace('$', "?");
            }
            state
                .db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?
                .into_iter()
                .map(|row| {
                    Ok(StoredRow {
                        shift_id: row.try_get("", "id")?,
                        post_id: row.try_get("", "post_id")?,
                        starts_at: row.try_get("", "starts_at")?,
                        ends_at: row.try_get("", "ends_at")?,
                        status: row.try_get("", "status")?,
                        result: row.try_get("", "result")?,
                    })
                })
                .collect::<Result<_, sea_orm::DbErr>>()?
        }
    };
    let mut out: Vec<Option<ShiftFigures>> = Vec::with_capacity(rows.len());
    let mut missing: Vec<(usize, Uuid)> = Vec::new();
    let deferred = state.deferred_stale.snapshot();
    for row in rows {
        let StoredRow {
            shift_id,
            post_id,
            starts_at,
            ends_at,
            status,
            result,
        } = row;
        // Anything that does not look like what `store` writes is computed again.
        let stored = match (status, result) {
            (Some(status), Some(json))
                if settled(ends_at, now)
                    && is_stored_object(&json)
                    && !deferred.contains(&shift_id) =>
            {
                Status::parse(&status).map(|status| (status, json))
            }
            _ => None,
        };
        match stored {
            Some((status, json)) => out.push(Some(ShiftFigures {
                shift_id,
                post_id,
                starts_at,
                ends_at,
                status,
                json,
            })),
            None => {
                missing.push((out.len(), shift_id));
                out.push(None);
            }
        }
    }
    if !missing.is_empty() {
        let mut shifts: HashMap<Uuid, shift::Model> = HashMap::with_capacity(missing.len());
        for chunk in missing.chunks(500) {
            for s in shift::Entity::find()
                .filter(shift::Column::Id.is_in(chunk.iter().map(|(_, id)| *id)))
                .all(&state.db)
                .await?
            {
                shifts.insert(s.id, s);
            }
        }
        let models: Vec<shift::Model> = missing
            .iter()
            .filter_map(|(_, id)| shifts.remove(id))
            .collect();
        let computed = coverage_of(state, &models).await?;
        let mut by_id: HashMap<Uuid, (shift::Model, ShiftCoverage)> = models
            .into_iter()
            .zip(computed)
            .map(|(s, c)| (s.id, (s, c)))
            .collect();
        for (place, id) in missing {
            // A shift deleted between the two reads is left out.
            if let Some((s, c)) = by_id.remove(&id) {
                out[place] = Some(ShiftFigures {
                    shift_id: s.id,
                    post_id: s.post_id,
                    starts_at: s.starts_at,
                    ends_at: s.ends_at,
                    status: c.status,
                    json: serde_json::to_string(&c).map_err(ApiError::internal)?,
                });
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// A shift and its stored figures, as read for [`coverage_json_over`].
struct StoredRow {
    shift_id: Uuid,
    post_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    status: Option<String>,
    result: Option<String>,
}

/// A bound value as sqlx would write it to SQLite (the kinds the coverage reads bind).
fn sqlite_value(v: &sea_orm::Value) -> ApiResult<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    Ok(match v {
        sea_orm::Value::Bool(Some(b)) => V::Integer(i64::from(*b)),
        sea_orm::Value::ChronoDateTimeUtc(Some(t)) => V::Text(time(*t)),
        sea_orm::Value::Uuid(Some(u)) => V::Blob(u.as_bytes().to_vec()),
        sea_orm::Value::Double(Some(x)) => V::Real(*x),
        sea_orm::Value::Int(Some(x)) => V::Integer(i64::from(*x)),
        sea_orm::Value::BigInt(Some(x)) => V::Integer(*x),
        sea_orm::Value::String(Some(x)) => V::Text(x.to_string()),
        other => {
            return Err(ApiError::internal(format!(
                "no SQLite form for the bound value {other:?}"
            )));
        }
    })
}

/// Whether a stored result is a JSON object of the fields [`ShiftCoverage`] has now (its
/// first field is `shift_id`, its last `evaluated_until`), so it can be handed on as is.
fn is_stored_object(result: &str) -> bool {
    result.starts_with("{\"shift_id\":")
        && result.ends_with('}')
        && result.contains("\"eligible_fixes\":")
        && result.contains("\"evaluated_until\":")
}

/// Stores results (upsert), each only over the generation it was computed from: a result
/// whose shift was marked stale after `generations` were read (a late fix arrived while
/// its fixes were being read) is dropped, and the mark stays for the next pass.
pub async fn store(
    state: &AppState,
    results: &[(&shift::Model, &ShiftCoverage)],
    generations: &Generations,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    use sea_orm::sea_query::{Alias, ExprTrait};
    for chunk in results.chunks(200) {
        let rows = chunk.iter().map(|(s, c)| shift_coverage::ActiveModel {
            shift_id: Set(s.id),
            post_id: Set(s.post_id),
            starts_at: Set(s.starts_at),
            ends_at: Set(s.ends_at),
            status: Set(c.status.as_str().to_owned()),
            result: Set(serde_json::to_string(c).unwrap_or_default()),
            computed_at: Set(now),
            stale: Set(false),
            generation: Set(generations.of(s.id)),
        });
        shift_coverage::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(shift_coverage::Column::ShiftId)
                    .update_columns([
                        shift_coverage::Column::PostId,
                        shift_coverage::Column::StartsAt,
                        shift_coverage::Column::EndsAt,
                        shift_coverage::Column::Status,
                        shift_coverage::Column::Result,
                        shift_coverage::Column::ComputedAt,
                        shift_coverage::Column::Stale,
                    ])
                    .action_and_where(
                        Expr::col((shift_coverage::Entity, shift_coverage::Column::Generation)).eq(
                            Expr::col((Alias::new("excluded"), shift_coverage::Column::Generation)),
                        ),
                    )
                    .to_owned(),
            )
            .exec_without_returning(&state.db)
            .await?;
    }
    Ok(())
}

/// Stores the coverage of finished shifts that have none, or a stale one; answers how
/// many it computed.
pub async fn update_finished(state: &AppState, limit: u64) -> ApiResult<usize> {
    let now = Utc::now();
    use sea_orm::sea_query::{Expr, ExprTrait};
    // Correlated, so that each due shift costs one lookup of its own stored figures, not a
    // set of every stored figure ever kept built on each pass.
    let fresh = sea_orm::sea_query::Query::select()
        .expr(Expr::val(1))
        .from(shift_coverage::Entity)
        .and_where(
            Expr::col((shift_coverage::Entity, shift_coverage::Column::ShiftId))
                .equals((shift::Entity, shift::Column::Id)),
        )
        .and_where(Expr::col((shift_coverage::Entity, shift_coverage::Column::Stale)).eq(false))
        .to_owned();
    let due = shift::Entity::find()
        .filter(shift::Column::EndsAt.lte(now - EDGE - SETTLE))
        .filter(
            shift::Column::EndsAt.gt(now - state.settings.sync_window - chrono::Duration::days(2)),
        )
        // Implied by the two above (no shift is longer than MAX_SHIFT); bounds the search
        // of the index on starts_at to the days that can still change.
        .filter(shift::Column::StartsAt.lt(now - EDGE - SETTLE))
        .filter(shift::Column::StartsAt.gt(now
            - state.settings.sync_window
            - chrono::Duration::days(2)
            - crate::routes::shifts::MAX_SHIFT))
        .filter(Expr::exists(fresh).not())
        .order_by_asc(shift::Column::EndsAt)
        .limit(limit)
        .all(&state.db)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    compute_and_store(state, &due, now, std::future::ready(())).await?;
    Ok(due.len())
}

/// Computes the figures of these shifts from their fixes and stores those of the settled
/// ones; `between` is awaited after the fixes were read and before the store (where a
/// test makes a late fix arrive).
pub async fn compute_and_store(
    state: &AppState,
    shifts: &[shift::Model],
    now: DateTime<Utc>,
    between: impl std::future::Future<Output = ()>,
) -> ApiResult<()> {
    let ids: Vec<Uuid> = shifts.iter().map(|s| s.id).collect();
    let generations = generations(state, &ids).await?;
    let computed = compute(state, shifts, now).await?;
    between.await;
    let pairs: Vec<(&shift::Model, &ShiftCoverage)> = shifts
        .iter()
        .zip(computed.iter())
        .filter(|(s, _)| settled(s.ends_at, now))
        .collect();
    store(state, &pairs, &generations, now).await
}

/// Recomputes every shift that starts in `[from, to)` from raw fixes, in one pass over
/// them, and stores the finished ones as they complete; `progress` is told how many are
/// done.
pub async fn rebuild(
    state: &AppState,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut progress: impl FnMut(usize, usize),
) -> ApiResult<usize> {
    let shifts = shift::Entity::find()
        .filter(shift::Column::StartsAt.gte(from))
        .filter(shift::Column::StartsAt.lt(to))
        .order_by_asc(shift::Column::StartsAt)
        .all(&state.db)
        .await?;
    let now = Utc::now();
    let total = shifts.len();
    let mut done = 0;
    evaluate_streaming(state, &shifts, now, true, |results| {
        done += results.len();
        progress(done, total);
    })
    .await?;
    Ok(total)
}

/// Keeps stored coverage current in the background: after a shift ends, and after late
/// fixes (woken by [`mark_stale`] in this process, and every [`UPDATE_EVERY`] for the
/// marks other processes left).
pub fn spawn_updater(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let deferred = state.deferred_stale.take();
            if !deferred.is_empty()
                && let Err(e) = mark_stale(&state, &deferred).await
            {
                tracing::warn!(error = %e, "marking stored coverage stale failed; will try again");
                state.deferred_stale.add(&deferred);
            }
            // One process at a time; late fixes that reach another process leave their
            // marks in the database, where this pass (or that process's) finds them.
            let pass = update_finished(&state, 200);
            match state.job_locks.run(Job::CoverageUpdater, pass).await {
                Ok(Some(n)) if n >= 200 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "updating stored coverage failed; will try again")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(UPDATE_EVERY) => {}
                () = state.coverage_wakeup.notified() => {
                    // A phone's queue comes in many batches: wait until they stop (or
                    // for at most LATE_DEBOUNCE_MAX), then recompute once.
                    let woken = tokio::time::Instant::now();
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(LATE_QUIET) => break,
                            () = state.coverage_wakeup.notified() => {
                                if woken.elapsed() >= LATE_DEBOUNCE_MAX {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}
