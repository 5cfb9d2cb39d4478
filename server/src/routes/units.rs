//! `/units`: the organisation tree. Commanders see and manage their own unit's subtree;
//! they may change and delete only the units below their own.

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Role, Scope},
    error::{ApiError, ApiResult, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    state::AppState,
    store::{member, team, unit},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_units, create_unit))
        .routes(routes!(get_unit, patch_unit, delete_unit))
}

/// Kind of a unit, from the district down to a residential compound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// 区
    District,
    /// 街道
    Street,
    /// 派出所
    PoliceStation,
    /// 社区
    Community,
    /// 村
    Village,
    /// 村民小组
    VillagerGroup,
    /// 社区家属院
    Compound,
}

impl UnitKind {
    const ALL: [UnitKind; 7] = [
        UnitKind::District,
        UnitKind::Street,
        UnitKind::PoliceStation,
        UnitKind::Community,
        UnitKind::Village,
        UnitKind::VillagerGroup,
        UnitKind::Compound,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::District => "district",
            UnitKind::Street => "street",
            UnitKind::PoliceStation => "police_station",
            UnitKind::Community => "community",
            UnitKind::Village => "village",
            UnitKind::VillagerGroup => "villager_group",
            UnitKind::Compound => "compound",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<UnitKind> {
        UnitKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Depth in the tree: a unit's parent must have a smaller rank.
    pub fn rank(self) -> u8 {
        match self {
            UnitKind::District => 0,
            UnitKind::Street | UnitKind::PoliceStation => 1,
            UnitKind::Community | UnitKind::Village => 2,
            UnitKind::VillagerGroup | UnitKind::Compound => 3,
        }
    }
}

/// A unit of the organisation.
#[derive(Serialize, ToSchema)]
pub struct Unit {
    /// Id.
    pub id: Uuid,
    /// Unique code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: UnitKind,
    /// The unit above, `null` for a root.
    pub parent_id: Option<Uuid>,
    /// When created.
    pub created_at: chrono::DateTime<Utc>,
    /// When last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<unit::Model> for Unit {
    fn from(u: unit::Model) -> Self {
        Unit {
            id: u.id,
            kind: UnitKind::parse(&u.kind).unwrap_or(UnitKind::District),
            code: u.code,
            name: u.name,
            parent_id: u.parent_id,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A new unit.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUnit {
    /// Unique code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Kind; must be below the parent's kind.
    pub kind: UnitKind,
    /// The unit above; required for commanders (a unit inside their subtree).
    pub parent_id: Option<Uuid>,
}

/// Changes to a unit; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUnit {
    /// Unique code.
    pub code: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Kind.
    pub kind: Option<UnitKind>,
    /// New parent; `null` makes the unit a root (admins only).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub parent_id: Option<Option<Uuid>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
pub fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Filters and paging of `GET /units`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnitQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only the direct children of this unit.
    pub parent_id: Option<Uuid>,
    /// Only units of this kind.
    pub kind: Option<UnitKind>,
}

/// Finds a unit the caller may see, or answers 404.
pub async fn unit_in_scope(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<unit::Model> {
    unit::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|u| user.sees_path(&u.path))
        .ok_or_else(|| ApiError::not_found(format!("no unit {id}")))
}

/// Checks that a referenced unit exists in the caller's scope, recording a field error if not.
pub async fn referenced_unit(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
    field: &str,
    errors: &mut Violations,
) -> ApiResult<Option<unit::Model>> {
    let found = unit::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|u| user.sees_path(&u.path));
    if found.is_none() {
        errors.add(field, format!("no unit {id} in your scope"));
    }
    Ok(found)
}

/// Whether the caller may change or delete this unit: admins any, commanders only those
/// strictly below their own unit.
fn may_manage(user: &AuthUser, target: &unit::Model) -> bool {
    match user.scope_prefix() {
        Scope::All => true,
        Scope::Subtree(prefix) => target.path.starts_with(&prefix) && target.path != prefix,
        Scope::Nothing => false,
    }
}

/// Lists the units the caller may see.
#[utoipa::path(get, path = "/units", tag = "organisation", security(("bearer" = [])), params(UnitQuery),
    responses((status = 200, description = "A page of units", body = Page<Unit>)))]
pub async fn list_units(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<UnitQuery>,
) -> ApiResult<axum::Json<Page<Unit>>> {
    user.require_manager()?;
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = unit::Entity::find().order_by_asc(unit::Column::Id);
    if let Scope::Subtree(prefix) = user.scope_prefix() {
        query = query.filter(unit::Column::Path.starts_with(prefix));
    }
    if let Some(after) = page.after {
        query = query.filter(unit::Column::Id.gt(after));
    }
    if let Some(parent) = q.parent_id {
        query = query.filter(unit::Column::ParentId.eq(parent));
    }
    if let Some(kind) = q.kind {
        query = query.filter(unit::Column::Kind.eq(kind.as_str()));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    Ok(axum::Json(page.finish(rows, |u| u.id, Unit::from)))
}

/// Creates a unit.
#[utoipa::path(post, path = "/units", tag = "organisation", security(("bearer" = [])), request_body = CreateUnit,
    responses(
        (status = 201, description = "Created", body = Unit),
        (status = 409, description = "The code is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_unit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateUnit>,
) -> ApiResult<(StatusCode, axum::Json<Unit>)> {
    user.require_manager()?;
    let mut errors = Violations::new();
    validate::code(&mut errors, "code", &req.code);
    validate::name(&mut errors, "name", &req.name);
    let id = Uuid::now_v7();
    let path = match req.parent_id {
        Some(parent_id) => {
            match referenced_unit(&state, &user, parent_id, "parent_id", &mut errors).await? {
                Some(parent) => {
                    check_rank(&mut errors, Some(&parent), req.kind);
                    format!("{}{id}/", parent.path)
                }
                None => String::new(),
            }
        }
        None => {
            errors.check(
                user.role != Role::Admin,
                "parent_id",
                "is required: a commander creates units inside their own unit",
            );
            format!("/{id}/")
        }
    };
    errors.finish()?;
    if code_taken(&state, &req.code, None).await? {
        return Err(ApiError::conflict(format!(
            "unit code {:?} is already taken",
            req.code
        )));
    }
    let now = Utc::now();
    let model = unit::ActiveModel {
        id: Set(id),
        code: Set(req.code),
        name: Set(req.name),
        kind: Set(req.kind.as_str().to_owned()),
        parent_id: Set(req.parent_id),
        path: Set(path),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    Ok((StatusCode::CREATED, axum::Json(Unit::from(model))))
}

fn check_rank(errors: &mut Violations, parent: Option<&unit::Model>, kind: UnitKind) {
    if let Some(parent) = parent {
        let parent_kind = UnitKind::parse(&parent.kind).unwrap_or(UnitKind::District);
        errors.check(
            parent_kind.rank() >= kind.rank(),
            "kind",
            format!(
                "a {} cannot sit under a {}",
                kind.as_str(),
                parent_kind.as_str()
            ),
        );
    }
}

async fn code_taken(state: &AppState, code: &str, except: Option<Uuid>) -> ApiResult<bool> {
    let mut q = unit::Entity::find().filter(unit::Column::Code.eq(code));
    if let Some(id) = except {
        q = q.filter(unit::Column::Id.ne(id));
    }
    Ok(q.count(&state.db).await? > 0)
}

/// One unit.
#[utoipa::path(get, path = "/units/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Unit id")),
    responses((status = 200, description = "The unit", body = Unit)))]
pub async fn get_unit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<Unit>> {
    user.require_manager()?;
    Ok(axum::Json(unit_in_scope(&state, &user, id).await?.into()))
}

/// Changes a unit. Moving it moves its whole subtree.
#[utoipa::path(patch, path = "/units/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Unit id")), request_body = PatchUnit,
    responses((status = 200, description = "The changed unit", body = Unit)))]
pub async fn patch_unit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchUnit>,
) -> ApiResult<axum::Json<Unit>> {
    user.require_manager()?;
    let current = unit_in_scope(&state, &user, id).await?;
    if !may_manage(&user, &current) {
        return Err(ApiError::forbidden(
            "a commander may change only the units below their own",
        ));
    }
    let mut errors = Violations::new();
    if let Some(code) = &req.code {
        validate::code(&mut errors, "code", code);
    }
    if let Some(name) = &req.name {
        validate::name(&mut errors, "name", name);
    }
    let kind = req
        .kind
        .unwrap_or(UnitKind::parse(&current.kind).unwrap_or(UnitKind::District));
    let parent = match req.parent_id {
        Some(Some(parent_id)) => {
            let parent =
                referenced_unit(&state, &user, parent_id, "parent_id", &mut errors).await?;
            if let Some(p) = &parent
                && p.path.starts_with(&current.path)
            {
                errors.add(
                    "parent_id",
                    "a unit cannot move under itself or its own descendants",
                );
            }
            parent
        }
        Some(None) => {
            errors.check(
                user.role != Role::Admin,
                "parent_id",
                "only an admin may make a root unit",
            );
            None
        }
        None => match current.parent_id {
            Some(pid) => unit::Entity::find_by_id(pid).one(&state.db).await?,
            None => None,
        },
    };
    check_rank(&mut errors, parent.as_ref(), kind);
    let children_min_rank = unit::Entity::find()
        .filter(unit::Column::ParentId.eq(id))
        .all(&state.db)
        .await?
        .iter()
        .filter_map(|c| UnitKind::parse(&c.kind))
        .map(UnitKind::rank)
        .min();
    if let Some(min) = children_min_rank {
        errors.check(
            min <= kind.rank(),
            "kind",
            "the unit's children must stay of a lower kind",
        );
    }
    errors.finish()?;
    if let Some(code) = &req.code
        && code_taken(&state, code, Some(id)).await?
    {
        return Err(ApiError::conflict(format!(
            "unit code {code:?} is already taken"
        )));
    }

    let new_path = match &parent {
        Some(p) => format!("{}{id}/", p.path),
        None => format!("/{id}/"),
    };
    let txn = crate::db::begin_write(&state.db).await?;
    if new_path != current.path {
        let descendants = unit::Entity::find()
            .filter(unit::Column::Path.starts_with(current.path.clone()))
            .filter(unit::Column::Id.ne(id))
            .all(&txn)
            .await?;
        for d in descendants {
            let moved = format!("{new_path}{}", &d.path[current.path.len()..]);
            let mut active = d.into_active_model();
            active.path = Set(moved);
            active.update(&txn).await?;
        }
    }
    let mut active = current.into_active_model();
    if let Some(code) = req.code {
        active.code = Set(code);
    }
    if let Some(name) = req.name {
        active.name = Set(name);
    }
    active.kind = Set(kind.as_str().to_owned());
    active.parent_id = Set(parent.as_ref().map(|p| p.id));
    active.path = Set(new_path);
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    txn.commit().await?;
    state.auth_cache.clear();
    Ok(axum::Json(updated.into()))
}

/// Deletes a unit that has no sub-units, members or teams.
#[utoipa::path(delete, path = "/units/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Unit id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The unit still has sub-units, members or teams", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_unit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_manager()?;
    let current = unit_in_scope(&state, &user, id).await?;
    if !may_manage(&user, &current) {
        return Err(ApiError::forbidden(
            "a commander may delete only the units below their own",
        ));
    }
    let children = unit::Entity::find()
        .filter(unit::Column::ParentId.eq(id))
        .count(&state.db)
        .await?;
    let members = member::Entity::find()
        .filter(member::Column::UnitId.eq(id))
        .count(&state.db)
        .await?;
    let teams = team::Entity::find()
        .filter(team::Column::UnitId.eq(id))
        .count(&state.db)
        .await?;
    if children + members + teams > 0 {
        return Err(ApiError::conflict(format!(
            "the unit still has {children} sub-units, {members} members and {teams} teams; move or delete them first"
        )));
    }
    unit::Entity::delete_by_id(id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}
