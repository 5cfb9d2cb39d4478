//! `/teams`: named groups of members (grid patrols, crews, volunteer squads…).

use std::collections::HashMap;

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Scope},
    error::{ApiError, ApiResult, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    routes::{members::referenced_members, units::referenced_unit},
    state::AppState,
    store::{team, team_member, unit},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team, patch_team, delete_team))
        .routes(routes!(put_team_members))
}

/// Kind of a team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TeamKind {
    /// 网格化巡逻: a grid patrol on a route.
    GridPatrol,
    /// 武装盘查卡点: an armed checkpoint crew.
    CheckpointCrew,
    /// 治安岗亭: a kiosk crew.
    KioskCrew,
    /// 义务巡逻队: a volunteer squad.
    VolunteerSquad,
    /// 干部巡逻: officials walking patrols.
    CadrePatrol,
    /// 联防: shops taking patrol duty for their stretch.
    JointDefence,
}

impl TeamKind {
    const ALL: [TeamKind; 6] = [
        TeamKind::GridPatrol,
        TeamKind::CheckpointCrew,
        TeamKind::KioskCrew,
        TeamKind::VolunteerSquad,
        TeamKind::CadrePatrol,
        TeamKind::JointDefence,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TeamKind::GridPatrol => "grid_patrol",
            TeamKind::CheckpointCrew => "checkpoint_crew",
            TeamKind::KioskCrew => "kiosk_crew",
            TeamKind::VolunteerSquad => "volunteer_squad",
            TeamKind::CadrePatrol => "cadre_patrol",
            TeamKind::JointDefence => "joint_defence",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<TeamKind> {
        TeamKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A team with its members.
#[derive(Serialize, ToSchema)]
pub struct Team {
    /// Id.
    pub id: Uuid,
    /// Unique code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: TeamKind,
    /// Unit the team belongs to.
    pub unit_id: Uuid,
    /// Members of the team.
    pub member_ids: Vec<Uuid>,
    /// When created.
    pub created_at: chrono::DateTime<Utc>,
    /// When last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

fn to_team(t: team::Model, member_ids: Vec<Uuid>) -> Team {
    Team {
        id: t.id,
        kind: TeamKind::parse(&t.kind).unwrap_or(TeamKind::GridPatrol),
        code: t.code,
        name: t.name,
        unit_id: t.unit_id,
        member_ids,
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

/// A new team.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Unique code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: TeamKind,
    /// Unit (inside the caller's scope).
    pub unit_id: Uuid,
    /// Members (inside the caller's scope).
    #[serde(default)]
    pub member_ids: Vec<Uuid>,
}

/// Changes to a team; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTeam {
    /// Unique code.
    pub code: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Kind.
    pub kind: Option<TeamKind>,
    /// Unit.
    pub unit_id: Option<Uuid>,
    /// The whole new member list.
    pub member_ids: Option<Vec<Uuid>>,
}

/// The whole new member list of a team.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamMembers {
    /// Members (inside the caller's scope); duplicates are ignored.
    pub member_ids: Vec<Uuid>,
}

/// Filters and paging of `GET /teams`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TeamQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only teams of this unit.
    pub unit_id: Option<Uuid>,
    /// Only teams of this kind.
    pub kind: Option<TeamKind>,
}

async fn members_of<C: ConnectionTrait>(
    db: &C,
    team_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<Uuid>>> {
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    if team_ids.is_empty() {
        return Ok(out);
    }
    let rows = team_member::Entity::find()
        .filter(team_member::Column::TeamId.is_in(team_ids.iter().copied()))
        .order_by_asc(team_member::Column::MemberId)
        .all(db)
        .await?;
    for r in rows {
        out.entry(r.team_id).or_default().push(r.member_id);
    }
    Ok(out)
}

async fn set_members<C: ConnectionTrait>(
    db: &C,
    team_id: Uuid,
    member_ids: &[Uuid],
) -> ApiResult<()> {
    // Two replacements of one team's list at once would each delete the old rows and then
    // insert the same new ones, the second failing on the primary key; the row lock makes
    // the second wait for the first (on PostgreSQL: SQLite writes one at a time anyway).
    team::Entity::find_by_id(team_id)
        .lock_exclusive()
        .one(db)
        .await?;
    // The team's begun shifts keep the people they began with.
    crate::routes::shifts::freeze_team_members(db, &[team_id], Utc::now()).await?;
    team_member::Entity::delete_many()
        .filter(team_member::Column::TeamId.eq(team_id))
        .exec(db)
        .await?;
    for chunk in member_ids.chunks(500) {
        team_member::Entity::insert_many(chunk.iter().map(|m| team_member::ActiveModel {
            team_id: Set(team_id),
            member_id: Set(*m),
        }))
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

async fn team_in_scope(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<team::Model> {
    let found = team::Entity::find_by_id(id).one(&state.db).await?;
    if let Some(t) = found {
        let path = unit::Entity::find_by_id(t.unit_id)
            .one(&state.db)
            .await?
            .map(|u| u.path);
        if path.is_some_and(|p| user.sees_path(&p)) {
            return Ok(t);
        }
    }
    Err(ApiError::not_found(format!("no team {id}")))
}

async fn team_answer(state: &AppState, t: team::Model) -> ApiResult<Team> {
    let members = members_of(&state.db, &[t.id])
        .await?
        .remove(&t.id)
        .unwrap_or_default();
    Ok(to_team(t, members))
}

async fn code_taken(state: &AppState, code: &str, except: Option<Uuid>) -> ApiResult<bool> {
    let mut q = team::Entity::find().filter(team::Column::Code.eq(code));
    if let Some(id) = except {
        q = q.filter(team::Column::Id.ne(id));
    }
    Ok(q.count(&state.db).await? > 0)
}

/// Lists the teams the caller may see.
#[utoipa::path(get, path = "/teams", tag = "organisation", security(("bearer" = [])), params(TeamQuery),
    responses((status = 200, description = "A page of teams", body = Page<Team>)))]
pub async fn list_teams(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<TeamQuery>,
) -> ApiResult<axum::Json<Page<Team>>> {
    user.require_manager()?;
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = team::Entity::find().order_by_asc(team::Column::Id);
    if let Scope::Subtree(prefix) = user.scope_prefix() {
        query = query.filter(
            team::Column::UnitId.in_subquery(
                Query::select()
                    .column(unit::Column::Id)
                    .from(unit::Entity)
                    .and_where(unit::Column::Path.starts_with(prefix))
                    .to_owned(),
            ),
        );
    }
    if let Some(after) = page.after {
        query = query.filter(team::Column::Id.gt(after));
    }
    if let Some(unit_id) = q.unit_id {
        query = query.filter(team::Column::UnitId.eq(unit_id));
    }
    if let Some(kind) = q.kind {
        query = query.filter(team::Column::Kind.eq(kind.as_str()));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    let ids: Vec<Uuid> = rows.iter().map(|t| t.id).collect();
    let mut members = members_of(&state.db, &ids).await?;
    Ok(axum::Json(page.finish(
        rows,
        |t| t.id,
        |t| {
            let m = members.remove(&t.id).unwrap_or_default();
            to_team(t, m)
        },
    )))
}

/// Creates a team.
#[utoipa::path(post, path = "/teams", tag = "organisation", security(("bearer" = [])), request_body = CreateTeam,
    responses(
        (status = 201, description = "Created", body = Team),
        (status = 409, description = "The code is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_team(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, axum::Json<Team>)> {
    user.require_manager()?;
    let mut errors = Violations::new();
    validate::code(&mut errors, "code", &req.code);
    validate::name(&mut errors, "name", &req.name);
    referenced_unit(&state, &user, req.unit_id, "unit_id", &mut errors).await?;
    let members =
        referenced_members(&state, &user, &req.member_ids, "member_ids", &mut errors).await?;
    errors.finish()?;
    if code_taken(&state, &req.code, None).await? {
        return Err(ApiError::conflict(format!(
            "team code {:?} is already taken",
            req.code
        )));
    }
    let now = Utc::now();
    let txn = crate::db::begin_write(&state.db).await?;
    let model = team::ActiveModel {
        id: Set(Uuid::now_v7()),
        code: Set(req.code),
        name: Set(req.name),
        kind: Set(req.kind.as_str().to_owned()),
        unit_id: Set(req.unit_id),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&txn)
    .await?;
    set_members(&txn, model.id, &members).await?;
    txn.commit().await?;
    state.rosters_changed();
    Ok((
        StatusCode::CREATED,
        axum::Json(team_answer(&state, model).await?),
    ))
}

/// One team.
#[utoipa::path(get, path = "/teams/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Team id")),
    responses((status = 200, description = "The team", body = Team)))]
pub async fn get_team(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<Team>> {
    user.require_manager()?;
    let t = team_in_scope(&state, &user, id).await?;
    Ok(axum::Json(team_answer(&state, t).await?))
}

/// Changes a team.
#[utoipa::path(patch, path = "/teams/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Team id")), request_body = PatchTeam,
    responses((status = 200, description = "The changed team", body = Team)))]
pub async fn patch_team(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchTeam>,
) -> ApiResult<axum::Json<Team>> {
    user.require_manager()?;
    let current = team_in_scope(&state, &user, id).await?;
    let mut errors = Violations::new();
    if let Some(code) = &req.code {
        validate::code(&mut errors, "code", code);
    }
    if let Some(name) = &req.name {
        validate::name(&mut errors, "name", name);
    }
    if let Some(unit_id) = req.unit_id {
        referenced_unit(&state, &user, unit_id, "unit_id", &mut errors).await?;
    }
    let members = match &req.member_ids {
        Some(ids) => Some(referenced_members(&state, &user, ids, "member_ids", &mut errors).await?),
        None => None,
    };
    errors.finish()?;
    if let Some(code) = &req.code
        && code_taken(&state, code, Some(id)).await?
    {
        return Err(ApiError::conflict(format!(
            "team code {code:?} is already taken"
        )));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    let mut active = current.into_active_model();
    if let Some(code) = req.code {
        active.code = Set(code);
    }
    if let Some(name) = req.name {
        active.name = Set(name);
    }
    if let Some(kind) = req.kind {
        active.kind = Set(kind.as_str().to_owned());
    }
    if let Some(unit_id) = req.unit_id {
        active.unit_id = Set(unit_id);
    }
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    if let Some(members) = members {
        set_members(&txn, id, &members).await?;
    }
    txn.commit().await?;
    state.rosters_changed();
    Ok(axum::Json(team_answer(&state, updated).await?))
}

/// Deletes a team.
#[utoipa::path(delete, path = "/teams/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Team id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_team(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_manager()?;
    team_in_scope(&state, &user, id).await?;
    team::Entity::delete_by_id(id).exec(&state.db).await?;
    state.rosters_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a team's member list.
#[utoipa::path(put, path = "/teams/{id}/members", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Team id")), request_body = TeamMembers,
    responses((status = 200, description = "The team with its new members", body = Team)))]
pub async fn put_team_members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<TeamMembers>,
) -> ApiResult<axum::Json<Team>> {
    user.require_manager()?;
    let current = team_in_scope(&state, &user, id).await?;
    let mut errors = Violations::new();
    let members =
        referenced_members(&state, &user, &req.member_ids, "member_ids", &mut errors).await?;
    errors.finish()?;
    let txn = crate::db::begin_write(&state.db).await?;
    set_members(&txn, id, &members).await?;
    let mut active = current.into_active_model();
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    txn.commit().await?;
    state.rosters_changed();
    Ok(axum::Json(team_answer(&state, updated).await?))
}
