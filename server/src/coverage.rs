//! Coverage kept up to date: finished shifts have their figures stored and refreshed when
//! late fixes arrive; running shifts are computed from their fixes so far. The rule itself
//! is [`crate::domain::coverage`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use crate::{
    domain::{
        coverage::{CoverageSettings, FixIn, PreparedPost, ShiftCoverage, ShiftSpec, evaluate},
        geodesy::LonLat,
        geometry::{PostGeometry, PostKind},
        plausibility::Flags,
    },
    error::{ApiError, ApiResult},
    routes::shifts::people_on,
    state::AppState,
    store::{fix, post, shift, shift_coverage},
};

/// How often the background updater looks for finished shifts to store.
pub const UPDATE_EVERY: Duration = Duration::from_secs(5);
/// Fixes of the shift's members this long before and after it are read, so that the
/// evidence counts fixes just outside the shift.
const EDGE: chrono::Duration = chrono::Duration::hours(1);

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
    }
}

/// Marks the stored coverage of these shifts out of date.
pub async fn mark_stale(state: &AppState, shift_ids: &[Uuid]) -> ApiResult<()> {
    for chunk in shift_ids.chunks(500) {
        shift_coverage::Entity::update_many()
            .col_expr(shift_coverage::Column::Stale, Expr::value(true))
            .filter(shift_coverage::Column::ShiftId.is_in(chunk.iter().copied()))
            .exec(&state.db)
            .await?;
    }
    state.coverage_wakeup.notify_one();
    Ok(())
}

/// Computes shifts from their fixes (no stored results are used).
pub async fn compute(
    state: &AppState,
    shifts: &[shift::Model],
    now: DateTime<Utc>,
) -> ApiResult<Vec<ShiftCoverage>> {
    let post_ids: Vec<Uuid> = shifts
        .iter()
        .map(|s| s.post_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let posts: HashMap<Uuid, post::Model> = post::Entity::find()
        .filter(post::Column::Id.is_in(post_ids))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let people = people_on(&state.db, shifts).await?;
    let settings = settings_of(state);
    let mut out = Vec::with_capacity(shifts.len());
    for s in shifts {
        let p = posts
            .get(&s.post_id)
            .ok_or_else(|| ApiError::internal("shift without its post"))?;
        let prepared = state.prepared_posts.get(p).ok_or_else(|| {
            ApiError::internal(format!("post {} has an unreadable geometry", p.code))
        })?;
        let members: HashSet<Uuid> = people.get(&s.id).cloned().unwrap_or_default();
        let fixes = fixes_for(state, s, p, &members).await?;
        let spec = ShiftSpec {
            id: s.id,
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            members,
            min_headcount: s.min_headcount.unwrap_or(p.min_headcount).max(1) as u32,
            required_coverage: p.required_coverage.unwrap_or(0.8),
            required_presence: p.required_presence.unwrap_or(0.9),
            arrival_grace_min: i64::from(p.arrival_grace_min),
        };
        out.push(evaluate(&prepared, &spec, &fixes, now, &settings));
    }
    Ok(out)
}

/// The fixes that bear on a shift: its members' around the shift, and anyone's near the
/// post during it (counted as evidence of who else was there).
async fn fixes_for(
    state: &AppState,
    s: &shift::Model,
    p: &post::Model,
    members: &HashSet<Uuid>,
) -> ApiResult<Vec<FixIn>> {
    let margin =
        (p.corridor_m.or(p.radius_m).unwrap_or(50.0) + state.settings.max_accuracy_m) / 111_000.0;
    let lon_margin = margin / p.min_lat.to_radians().cos().max(0.1);
    let near_post = Condition::all()
        .add(fix::Column::RecordedAt.gte(s.starts_at))
        .add(fix::Column::RecordedAt.lt(s.ends_at))
        .add(fix::Column::Lat.between(p.min_lat - margin, p.max_lat + margin))
        .add(fix::Column::Lon.between(p.min_lon - lon_margin, p.max_lon + lon_margin));
    let mut condition = Condition::any().add(near_post);
    if !members.is_empty() {
        condition = condition.add(
            Condition::all()
                .add(fix::Column::MemberId.is_in(members.iter().copied()))
                .add(fix::Column::RecordedAt.gte(s.starts_at - EDGE))
                .add(fix::Column::RecordedAt.lt(s.ends_at + EDGE)),
        );
    }
    let rows = fix::Entity::find()
        .select_only()
        .column(fix::Column::MemberId)
        .column(fix::Column::RecordedAt)
        .column(fix::Column::Lat)
        .column(fix::Column::Lon)
        .column(fix::Column::AccuracyM)
        .column(fix::Column::Flags)
        .filter(condition)
        .into_tuple::<(Uuid, DateTime<Utc>, f64, f64, f64, i32)>()
        .all(&state.db)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(member_id, recorded_at, lat, lon, accuracy_m, flags)| FixIn {
                member_id,
                recorded_at,
                position: LonLat { lon, lat },
                accuracy_m,
                flags: Flags(flags),
            },
        )
        .collect())
}

/// Coverage of shifts: stored figures for finished shifts that are up to date, computed
/// ones for the rest (and those of finished shifts are stored).
pub async fn coverage_of(
    state: &AppState,
    shifts: &[shift::Model],
) -> ApiResult<Vec<ShiftCoverage>> {
    let now = Utc::now();
    let mut stored: HashMap<Uuid, ShiftCoverage> = HashMap::new();
    let finished: Vec<Uuid> = shifts
        .iter()
        .filter(|s| s.ends_at <= now)
        .map(|s| s.id)
        .collect();
    for chunk in finished.chunks(500) {
        for row in shift_coverage::Entity::find()
            .filter(shift_coverage::Column::ShiftId.is_in(chunk.iter().copied()))
            .filter(shift_coverage::Column::Stale.eq(false))
            .all(&state.db)
            .await?
        {
            if let Ok(c) = serde_json::from_str::<ShiftCoverage>(&row.result) {
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
            .filter(|(s, _)| s.ends_at <= now)
            .collect();
        store(state, &to_store, now).await?;
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

/// Stores results (upsert).
pub async fn store(
    state: &AppState,
    results: &[(&shift::Model, &ShiftCoverage)],
    now: DateTime<Utc>,
) -> ApiResult<()> {
    for chunk in results.chunks(200) {
        let rows = chunk.iter().map(|(s, c)| shift_coverage::ActiveModel {
            shift_id: Set(s.id),
            post_id: Set(s.post_id),
            starts_at: Set(s.starts_at),
            ends_at: Set(s.ends_at),
            status: Set(serde_json::to_value(c.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()),
            result: Set(serde_json::to_string(c).unwrap_or_default()),
            computed_at: Set(now),
            stale: Set(false),
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
    let fresh = sea_orm::sea_query::Query::select()
        .column(shift_coverage::Column::ShiftId)
        .from(shift_coverage::Entity)
        .and_where(shift_coverage::Column::Stale.eq(false))
        .to_owned();
    let due = shift::Entity::find()
        .filter(shift::Column::EndsAt.lte(now))
        .filter(
            shift::Column::EndsAt.gt(now - state.settings.sync_window - chrono::Duration::days(2)),
        )
        .filter(shift::Column::Id.not_in_subquery(fresh))
        .order_by_asc(shift::Column::EndsAt)
        .limit(limit)
        .all(&state.db)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let computed = compute(state, &due, now).await?;
    let pairs: Vec<(&shift::Model, &ShiftCoverage)> = due.iter().zip(computed.iter()).collect();
    store(state, &pairs, now).await?;
    Ok(due.len())
}

/// Recomputes every shift that starts in `[from, to)` from raw fixes and stores the
/// finished ones; `progress` is told how many are done.
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
    for chunk in shifts.chunks(100) {
        let computed = compute(state, chunk, now).await?;
        let pairs: Vec<(&shift::Model, &ShiftCoverage)> = chunk
            .iter()
            .zip(computed.iter())
            .filter(|(s, _)| s.ends_at <= now)
            .collect();
        store(state, &pairs, now).await?;
        done += chunk.len();
        progress(done, total);
    }
    Ok(total)
}

/// Keeps stored coverage current in the background: after a shift ends, and after late
/// fixes (woken by [`mark_stale`]).
pub fn spawn_updater(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match update_finished(&state, 200).await {
                Ok(n) if n >= 200 => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "updating stored coverage failed; will try again")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(UPDATE_EVERY) => {}
                () = state.coverage_wakeup.notified() => {}
            }
        }
    })
}
