//! `/shifts`: the duty roster, and `/me/shifts`, an officer's own duties for the phone.

use std::collections::{HashMap, HashSet};

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    domain::geometry::PostKind,
    error::{ApiError, ApiResult, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    routes::{
        members::referenced_members,
        posts::{Staffing, post_in_scope, post_scope_condition, posts_by_id},
        units::present,
    },
    state::AppState,
    store::{member, post, shift, shift_member, shift_team_member, team, team_member, unit},
};

/// Longest shift.
pub const MAX_SHIFT: Duration = Duration::hours(48);
/// Longest span a shift list or gap report covers.
pub const MAX_LIST_SPAN: Duration = Duration::days(62);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_shifts, create_shift))
        .routes(routes!(get_shift, patch_shift, delete_shift))
        .routes(routes!(my_shifts))
}

/// A shift.
#[derive(Serialize, ToSchema, Debug)]
pub struct Shift {
    /// Id.
    pub id: Uuid,
    /// The post.
    pub post_id: Uuid,
    /// Start (UTC).
    pub starts_at: DateTime<Utc>,
    /// End (UTC), after the start, at most 48 hours later.
    pub ends_at: DateTime<Utc>,
    /// The team on duty, if any.
    pub team_id: Option<Uuid>,
    /// Members named on the shift besides the team.
    pub member_ids: Vec<Uuid>,
    /// People required at once: the shift's own value, else the post's.
    pub min_headcount: i32,
    /// Free text.
    pub note: Option<String>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new shift: a team, explicit members, or both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShift {
    /// The post (inside the caller's scope).
    pub post_id: Uuid,
    /// Start, RFC 3339.
    pub starts_at: DateTime<Utc>,
    /// End, RFC 3339; after the start, at most 48 hours later.
    pub ends_at: DateTime<Utc>,
    /// The team on duty.
    pub team_id: Option<Uuid>,
    /// Members on duty besides the team.
    #[serde(default)]
    pub member_ids: Vec<Uuid>,
    /// People required at once (default: the post's `min_headcount`).
    pub min_headcount: Option<i32>,
    /// Free text, at most 500 characters.
    pub note: Option<String>,
}

/// Changes to a shift; absent fields stay as they are, `null` clears.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchShift {
    /// The post.
    pub post_id: Option<Uuid>,
    /// Start.
    pub starts_at: Option<DateTime<Utc>>,
    /// End.
    pub ends_at: Option<DateTime<Utc>>,
    /// The team; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub team_id: Option<Option<Uuid>>,
    /// The whole new list of explicit members.
    pub member_ids: Option<Vec<Uuid>>,
    /// People required; `null` returns to the post's value.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
    pub min_headcount: Option<Option<i32>>,
    /// Free text; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub note: Option<Option<String>>,
}

/// Filters and paging of `GET /shifts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShiftQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Shifts that end after this instant (RFC 3339; write `+` as `%2B`).
    pub from: DateTime<Utc>,
    /// Shifts that start before this instant; at most 62 days after `from`.
    pub to: DateTime<Utc>,
    /// Only shifts of this post.
    pub post_id: Option<Uuid>,
    /// Only shifts of this team.
    pub team_id: Option<Uuid>,
    /// Only shifts this member is on (named, or through the team).
    pub member_id: Option<Uuid>,
}

/// Checks a time window: `from` before `to`, at most `max` long.
pub fn check_window(
    errors: &mut Violations,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: Duration,
) {
    errors.check(to <= from, "to", "must be after from");
    errors.check(
        to - from > max,
        "to",
        format!(
            "the span from `from` to `to` may be at most {} days",
            max.num_days()
        ),
    );
}

/// Shifts overlapping `[from, to)`.
pub fn overlapping(from: DateTime<Utc>, to: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(shift::Column::EndsAt.gt(from))
        .add(shift::Column::StartsAt.lt(to))
        // Implied by the two above, as no shift is longer than MAX_SHIFT; it bounds the
        // search of the index on starts_at to the span, not all shifts before its end.
        .add(shift::Column::StartsAt.gt(from - MAX_SHIFT))
}

/// Shifts a member is on: named on them, or in their team as it was at the shift's time
/// (recorded, or the team now while nothing is recorded).
pub fn shifts_of_member(member_id: Uuid) -> Condition {
    Condition::any()
        .add(
            shift::Column::Id.in_subquery(
                Query::select()
                    .column(shift_member::Column::ShiftId)
                    .from(shift_member::Entity)
                    .and_where(shift_member::Column::MemberId.eq(member_id))
                    .to_owned(),
            ),
        )
        .add(
            shift::Column::Id.in_subquery(
                Query::select()
                    .column(shift_team_member::Column::ShiftId)
                    .from(shift_team_member::Entity)
                    .and_where(shift_team_member::Column::MemberId.eq(member_id))
                    .to_owned(),
            ),
        )
        .add(
            Condition::all()
                .add(shift::Column::TeamFrozenAt.is_null())
                .add(
                    shift::Column::TeamId.in_subquery(
                        Query::select()
                            .column(team_member::Column::TeamId)
                            .from(team_member::Entity)
                            .and_where(team_member::Column::MemberId.eq(member_id))
                            .to_owned(),
                    ),
                ),
        )
}

/// Records the members of these teams now as the team members of each of their shifts
/// that has begun by `now` and has none recorded yet. Called before a team's members
/// change (so a begun shift keeps the people it began with) and after shifts are created
/// or moved (so a shift created in the past has the team of its creation, never of a
/// later edit).
pub async fn freeze_team_members<C: ConnectionTrait>(
    db: &C,
    team_ids: &[Uuid],
    now: DateTime<Utc>,
) -> ApiResult<()> {
    for chunk in team_ids.chunks(500) {
        let begun = shift::Entity::find()
            .filter(shift::Column::TeamId.is_in(chunk.iter().copied()))
            .filter(shift::Column::TeamFrozenAt.is_null())
            .filter(shift::Column::StartsAt.lte(now))
            .all(db)
            .await?;
        if begun.is_empty() {
            continue;
        }
        let mut teams: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for r in team_member::Entity::find()
            .filter(team_member::Column::TeamId.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            teams.entry(r.team_id).or_default().push(r.member_id);
        }
        let rows: Vec<shift_team_member::ActiveModel> = begun
            .iter()
            .flat_map(|s| {
                let members = s.team_id.and_then(|t| teams.get(&t));
                members
                    .into_iter()
                    .flatten()
                    .map(|m| shift_team_member::ActiveModel {
                        shift_id: Set(s.id),
                        member_id: Set(*m),
                    })
            })
            .collect();
        for rows in rows.chunks(1000) {
            shift_team_member::Entity::insert_many(rows.iter().cloned())
                .on_conflict_do_nothing()
                .exec_without_returning(db)
                .await?;
        }
        for ids in begun.chunks(500) {
            shift::Entity::update_many()
                .col_expr(
                    shift::Column::TeamFrozenAt,
                    sea_orm::sea_query::Expr::value(Some(now)),
                )
                .filter(shift::Column::Id.is_in(ids.iter().map(|s| s.id)))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

/// Explicit members of each shift.
pub async fn named_members<C: ConnectionTrait>(
    db: &C,
    shift_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<Uuid>>> {
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for chunk in shift_ids.chunks(500) {
        let rows = shift_member::Entity::find()
            .filter(shift_member::Column::ShiftId.is_in(chunk.iter().copied()))
            .order_by_asc(shift_member::Column::MemberId)
            .all(db)
            .await?;
        for r in rows {
            out.entry(r.shift_id).or_default().push(r.member_id);
        }
    }
    Ok(out)
}

/// Everyone on each shift: the named members and the members of its team, once each.
pub async fn people_on<C: ConnectionTrait>(
    db: &C,
    shifts: &[shift::Model],
) -> ApiResult<HashMap<Uuid, HashSet<Uuid>>> {
    let ids: Vec<Uuid> = shifts.iter().map(|s| s.id).collect();
    let named = named_members(db, &ids).await?;
    // Recorded team members for the shifts that have them, the team now for the others.
    let frozen: Vec<Uuid> = shifts
        .iter()
        .filter(|s| s.team_frozen_at.is_some())
        .map(|s| s.id)
        .collect();
    let mut recorded: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for chunk in frozen.chunks(500) {
        for r in shift_team_member::Entity::find()
            .filter(shift_team_member::Column::ShiftId.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            recorded.entry(r.shift_id).or_default().push(r.member_id);
        }
    }
    let team_ids: Vec<Uuid> = shifts
        .iter()
        .filter(|s| s.team_frozen_at.is_none())
        .filter_map(|s| s.team_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut teams: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for chunk in team_ids.chunks(500) {
        for r in team_member::Entity::find()
            .filter(team_member::Column::TeamId.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            teams.entry(r.team_id).or_default().push(r.member_id);
        }
    }
    Ok(shifts
        .iter()
        .map(|s| {
            let mut people: HashSet<Uuid> =
                named.get(&s.id).into_iter().flatten().copied().collect();
            if s.team_frozen_at.is_some() {
                people.extend(recorded.get(&s.id).into_iter().flatten().copied());
            } else if let Some(t) = s.team_id {
                people.extend(teams.get(&t).into_iter().flatten().copied());
            }
            (s.id, people)
        })
        .collect())
}

fn to_shift(s: shift::Model, members: Vec<Uuid>, post_min: i32) -> Shift {
    Shift {
        id: s.id,
        post_id: s.post_id,
        starts_at: s.starts_at,
        ends_at: s.ends_at,
        team_id: s.team_id,
        member_ids: members,
        min_headcount: s.min_headcount.unwrap_or(post_min),
        note: s.note,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

async fn post_minimums<C: ConnectionTrait>(
    db: &C,
    post_ids: impl IntoIterator<Item = Uuid>,
) -> ApiResult<HashMap<Uuid, i32>> {
    let ids: Vec<Uuid> = post_ids
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        for p in post::Entity::find()
            .filter(post::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            out.insert(p.id, p.min_headcount);
        }
    }
    Ok(out)
}

async fn answer_many<C: ConnectionTrait>(db: &C, rows: Vec<shift::Model>) -> ApiResult<Vec<Shift>> {
    let ids: Vec<Uuid> = rows.iter().map(|s| s.id).collect();
    let mut named = named_members(db, &ids).await?;
    let minimums = post_minimums(db, rows.iter().map(|s| s.post_id)).await?;
    Ok(rows
        .into_iter()
        .map(|s| {
            let members = named.remove(&s.id).unwrap_or_default();
            let min = minimums.get(&s.post_id).copied().unwrap_or(1);
            to_shift(s, members, min)
        })
        .collect())
}

async fn shift_in_scope(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<shift::Model> {
    let found = shift::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no shift {id}")))?;
    post_in_scope(state, user, found.post_id)
        .await
        .map_err(|_| ApiError::not_found(format!("no shift {id}")))?;
    Ok(found)
}

async fn referenced_team(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
    errors: &mut Violations,
) -> ApiResult<()> {
    let found = team::Entity::find_by_id(id).one(&state.db).await?;
    let visible = match found {
        Some(t) => unit::Entity::find_by_id(t.unit_id)
            .one(&state.db)
            .await?
            .is_some_and(|u| user.sees_path(&u.path)),
        None => false,
    };
    errors.check(!visible, "team_id", format!("no team {id} in your scope"));
    Ok(())
}

fn check_note(errors: &mut Violations, note: Option<&str>) {
    if let Some(n) = note {
        errors.check(
            n.chars().count() > 500,
            "note",
            "must be at most 500 characters",
        );
    }
}

fn check_span(errors: &mut Violations, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) {
    errors.check(ends_at <= starts_at, "ends_at", "must be after starts_at");
    errors.check(
        ends_at - starts_at > MAX_SHIFT,
        "ends_at",
        "a shift may last at most 48 hours",
    );
}

async fn set_named<C: ConnectionTrait>(db: &C, shift_id: Uuid, members: &[Uuid]) -> ApiResult<()> {
    shift_member::Entity::delete_many()
        .filter(shift_member::Column::ShiftId.eq(shift_id))
        .exec(db)
        .await?;
    for chunk in members.chunks(500) {
        shift_member::Entity::insert_many(chunk.iter().map(|m| shift_member::ActiveModel {
            shift_id: Set(shift_id),
            member_id: Set(*m),
        }))
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Lists the shifts overlapping a time span, on posts the caller may see.
#[utoipa::path(get, path = "/shifts", tag = "rosters", security(("bearer" = [])), params(ShiftQuery),
    responses((status = 200, description = "A page of shifts", body = Page<Shift>)))]
pub async fn list_shifts(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ShiftQuery>,
) -> ApiResult<axum::Json<Page<Shift>>> {
    user.require_manager()?;
    let mut errors = Violations::new();
    let page = PageRequest::parse(q.limit, q.cursor.as_deref(), &mut errors);
    check_window(&mut errors, q.from, q.to, MAX_LIST_SPAN);
    errors.finish()?;
    let mut query = shift::Entity::find()
        .filter(overlapping(q.from, q.to))
        .filter(
            shift::Column::PostId.in_subquery(
                Query::select()
                    .column(post::Column::Id)
                    .from(post::Entity)
                    .cond_where(post_scope_condition(&user.scope_prefix()))
                    .to_owned(),
            ),
        )
        .order_by_asc(shift::Column::Id);
    if let Some(after) = page.after {
        query = query.filter(shift::Column::Id.gt(after));
    }
    if let Some(p) = q.post_id {
        query = query.filter(shift::Column::PostId.eq(p));
    }
    if let Some(t) = q.team_id {
        query = query.filter(shift::Column::TeamId.eq(t));
    }
    if let Some(m) = q.member_id {
        query = query.filter(shifts_of_member(m));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    let models = page.finish(rows, |s| s.id, |s| s);
    let items = answer_many(&state.db, models.items).await?;
    Ok(axum::Json(Page {
        items,
        next_cursor: models.next_cursor,
    }))
}

/// Creates a shift.
#[utoipa::path(post, path = "/shifts", tag = "rosters", security(("bearer" = [])), request_body = CreateShift,
    responses(
        (status = 201, description = "Created", body = Shift),
        (status = 409, description = "The same post, times and team are already a shift", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_shift(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateShift>,
) -> ApiResult<(StatusCode, axum::Json<Shift>)> {
    user.require_manager()?;
    let mut errors = Violations::new();
    let post = post::Entity::find_by_id(req.post_id)
        .filter(post_scope_condition(&user.scope_prefix()))
        .one(&state.db)
        .await?;
    errors.check(
        post.is_none(),
        "post_id",
        format!("no post {} in your scope", req.post_id),
    );
    let (starts_at, ends_at) = (whole_seconds(req.starts_at), whole_seconds(req.ends_at));
    check_span(&mut errors, starts_at, ends_at);
    if let Some(t) = req.team_id {
        referenced_team(&state, &user, t, &mut errors).await?;
    }
    let members =
        referenced_members(&state, &user, &req.member_ids, "member_ids", &mut errors).await?;
    errors.check(
        req.team_id.is_none() && members.is_empty(),
        "team_id",
        "a shift needs a team, members, or both",
    );
    if let Some(m) = req.min_headcount {
        errors.check(
            !(1..=1000).contains(&m),
            "min_headcount",
            "must be between 1 and 1000",
        );
    }
    check_note(&mut errors, req.note.as_deref());
    errors.finish()?;
    let post = post.ok_or_else(|| ApiError::internal("post checked but missing"))?;
    let now = Utc::now();
    let txn = crate::db::begin_write(&state.db).await?;
    let model = shift::ActiveModel {
        id: Set(Uuid::now_v7()),
        post_id: Set(req.post_id),
        starts_at: Set(starts_at),
        ends_at: Set(ends_at),
        team_id: Set(req.team_id),
        min_headcount: Set(req.min_headcount),
        note: Set(req.note),
        created_at: Set(now),
        updated_at: Set(now),
        team_frozen_at: Set(None),
    }
    .insert(&txn)
    .await?;
    set_named(&txn, model.id, &members).await?;
    if let Some(team) = model.team_id {
        freeze_team_members(&txn, &[team], now).await?;
    }
    txn.commit().await?;
    state.rosters_changed();
    Ok((
        StatusCode::CREATED,
        axum::Json(to_shift(model, members, post.min_headcount)),
    ))
}

/// One shift.
#[utoipa::path(get, path = "/shifts/{id}", tag = "rosters", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Shift id")),
    responses((status = 200, description = "The shift", body = Shift)))]
pub async fn get_shift(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<Shift>> {
    user.require_manager()?;
    let s = shift_in_scope(&state, &user, id).await?;
    let mut answers = answer_many(&state.db, vec![s]).await?;
    answers
        .pop()
        .map(axum::Json)
        .ok_or_else(|| ApiError::internal("shift vanished"))
}

/// Changes a shift.
#[utoipa::path(patch, path = "/shifts/{id}", tag = "rosters", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Shift id")), request_body = PatchShift,
    responses((status = 200, description = "The changed shift", body = Shift)))]
pub async fn patch_shift(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchShift>,
) -> ApiResult<axum::Json<Shift>> {
    user.require_manager()?;
    let current = shift_in_scope(&state, &user, id).await?;
    let mut errors = Violations::new();
    if let Some(p) = req.post_id {
        let visible = post::Entity::find_by_id(p)
            .filter(post_scope_condition(&user.scope_prefix()))
            .one(&state.db)
            .await?
            .is_some();
        errors.check(!visible, "post_id", format!("no post {p} in your scope"));
    }
    let starts_at = req
        .starts_at
        .map(whole_seconds)
        .unwrap_or(current.starts_at);
    let ends_at = req.ends_at.map(whole_seconds).unwrap_or(current.ends_at);
    check_span(&mut errors, starts_at, ends_at);
    let team_id = req.team_id.unwrap_or(current.team_id);
    if let Some(Some(t)) = req.team_id {
        referenced_team(&state, &user, t, &mut errors).await?;
    }
    let members = match &req.member_ids {
        Some(ids) => Some(referenced_members(&state, &user, ids, "member_ids", &mut errors).await?),
        None => None,
    };
    let named_count = match &members {
        Some(m) => m.len(),
        None => named_members(&state.db, &[id])
            .await?
            .get(&id)
            .map_or(0, Vec::len),
    };
    errors.check(
        team_id.is_none() && named_count == 0,
        "team_id",
        "a shift needs a team, members, or both",
    );
    if let Some(Some(m)) = req.min_headcount {
        errors.check(
            !(1..=1000).contains(&m),
            "min_headcount",
            "must be between 1 and 1000",
        );
    }
    if let Some(note) = &req.note {
        check_note(&mut errors, note.as_deref());
    }
    errors.finish()?;
    let txn = crate::db::begin_write(&state.db).await?;
    let team_changed = current.team_id != team_id;
    let mut active = current.into_active_model();
    if let Some(p) = req.post_id {
        active.post_id = Set(p);
    }
    active.starts_at = Set(starts_at);
    active.ends_at = Set(ends_at);
    active.team_id = Set(team_id);
    if team_changed {
        // Another team: its people are recorded afresh below, if the shift has begun.
        active.team_frozen_at = Set(None);
        shift_team_member::Entity::delete_many()
            .filter(shift_team_member::Column::ShiftId.eq(id))
            .exec(&txn)
            .await?;
    }
    if let Some(m) = req.min_headcount {
        active.min_headcount = Set(m);
    }
    if let Some(n) = req.note {
        active.note = Set(n);
    }
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    if let Some(m) = &members {
        set_named(&txn, id, m).await?;
    }
    if let Some(team) = updated.team_id {
        freeze_team_members(&txn, &[team], Utc::now()).await?;
    }
    // Figures stored for the shift as it was are out of date (a roster corrected after
    // the shift ended is the usual case).
    crate::coverage::mark_stale_on(&txn, shift::Column::Id, &[id]).await?;
    txn.commit().await?;
    state.rosters_changed();
    state.coverage_wakeup.notify_one();
    let mut answers = answer_many(&state.db, vec![updated]).await?;
    answers
        .pop()
        .map(axum::Json)
        .ok_or_else(|| ApiError::internal("shift vanished"))
}

/// Deletes a shift.
#[utoipa::path(delete, path = "/shifts/{id}", tag = "rosters", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Shift id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_shift(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_manager()?;
    shift_in_scope(&state, &user, id).await?;
    shift::Entity::delete_by_id(id).exec(&state.db).await?;
    state.rosters_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The post of a duty, as much as a phone needs.
#[derive(Serialize, ToSchema)]
pub struct DutyPost {
    /// Id.
    pub id: Uuid,
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PostKind,
    /// GeoJSON geometry (WGS-84).
    #[schema(value_type = Object)]
    pub geometry: Value,
    /// Routes: corridor in metres.
    pub corridor_m: Option<f64>,
    /// Other posts: radius in metres.
    pub radius_m: Option<f64>,
    /// Routes: required share of the length.
    pub required_coverage: Option<f64>,
    /// Other posts: required share of the time.
    pub required_presence: Option<f64>,
    /// Minutes to arrive after the start.
    pub arrival_grace_min: i32,
    /// `24x7` or `rostered`.
    pub staffing: Staffing,
}

/// One of the caller's duties.
#[derive(Serialize, ToSchema)]
pub struct Duty {
    /// Shift id.
    pub shift_id: Uuid,
    /// Start (UTC).
    pub starts_at: DateTime<Utc>,
    /// End (UTC).
    pub ends_at: DateTime<Utc>,
    /// The team the caller is on duty with, if through a team.
    pub team_id: Option<Uuid>,
    /// People required at once.
    pub min_headcount: i32,
    /// Everyone on the shift (for kiosk officers: who else is rostered with them).
    pub member_ids: Vec<Uuid>,
    /// The others on the shift, by name: all the caller learns of them.
    pub colleagues: Vec<Colleague>,
    /// Free text.
    pub note: Option<String>,
    /// The post.
    pub post: DutyPost,
}

/// Someone rostered with the caller.
#[derive(Serialize, ToSchema)]
pub struct Colleague {
    /// Their id.
    pub member_id: Uuid,
    /// Their display name.
    pub display_name: String,
}

/// The caller's duties.
#[derive(Serialize, ToSchema)]
pub struct Duties {
    /// Duties by start time.
    pub items: Vec<Duty>,
}

/// Time span of `GET /me/shifts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// Start (RFC 3339; write `+` as `%2B`).
    pub from: DateTime<Utc>,
    /// End; at most 62 days after `from`.
    pub to: DateTime<Utc>,
}

/// The caller's own shifts (named on them or through a team) overlapping a span, with
/// each post's geometry and requirements. Answers carry an `ETag`; a request whose
/// `If-None-Match` matches gets 304 with no body.
#[utoipa::path(get, path = "/me/shifts", tag = "rosters", security(("bearer" = [])), params(WindowQuery),
    responses(
        (status = 200, description = "The caller's duties", body = Duties, headers(("ETag" = String, description = "Validator of this answer"))),
        (status = 304, description = "Unchanged since the ETag given in If-None-Match"),
    ))]
pub async fn my_shifts(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> ApiResult<Response> {
    let mut errors = Violations::new();
    check_window(&mut errors, q.from, q.to, MAX_LIST_SPAN);
    errors.finish()?;
    let rows = shift::Entity::find()
        .filter(overlapping(q.from, q.to))
        .filter(shifts_of_member(user.id))
        .order_by_asc(shift::Column::StartsAt)
        .order_by_asc(shift::Column::Id)
        .limit(2000)
        .all(&state.db)
        .await?;
    let people = people_on(&state.db, &rows).await?;
    let posts = posts_by_id(&state.db, rows.iter().map(|s| s.post_id)).await?;
    let others: Vec<Uuid> = people
        .values()
        .flatten()
        .copied()
        .filter(|m| *m != user.id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut names: HashMap<Uuid, String> = HashMap::with_capacity(others.len());
    for chunk in others.chunks(500) {
        for m in member::Entity::find()
            .filter(member::Column::Id.is_in(chunk.iter().copied()))
            .all(&state.db)
            .await?
        {
            names.insert(m.id, m.display_name);
        }
    }
    let items: Vec<Duty> = rows
        .into_iter()
        .filter_map(|s| {
            let p = posts.get(&s.post_id)?;
            let mut members: Vec<Uuid> = people.get(&s.id).into_iter().flatten().copied().collect();
            members.sort();
            let mut colleagues: Vec<Colleague> = members
                .iter()
                .filter_map(|m| {
                    names.get(m).map(|n| Colleague {
                        member_id: *m,
                        display_name: n.clone(),
                    })
                })
                .collect();
            colleagues.sort_by(|a, b| a.display_name.cmp(&b.display_name));
            Some(Duty {
                shift_id: s.id,
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                team_id: s.team_id,
                min_headcount: s.min_headcount.unwrap_or(p.min_headcount),
                member_ids: members,
                colleagues,
                note: s.note,
                post: DutyPost {
                    id: p.id,
                    code: p.code.clone(),
                    name: p.name.clone(),
                    kind: PostKind::parse(&p.kind).unwrap_or(PostKind::Kiosk),
                    geometry: serde_json::from_str(&p.geometry).unwrap_or(Value::Null),
                    corridor_m: p.corridor_m,
                    radius_m: p.radius_m,
                    required_coverage: p.required_coverage,
                    required_presence: p.required_presence,
                    arrival_grace_min: p.arrival_grace_min,
                    staffing: Staffing::parse(&p.staffing),
                },
            })
        })
        .collect();
    let body = serde_json::to_vec(&Duties { items }).map_err(ApiError::internal)?;
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        body,
    )
        .into_response())
}
