//! `/members`: people with a login. Commanders manage the members of their subtree (never
//! admins); officers and volunteers may read only their own record.

use std::collections::HashSet;

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Role, Scope, tokens},
    error::{ApiError, ApiResult, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    routes::units::{present, referenced_unit},
    state::AppState,
    store::{member, unit},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, create_member))
        .routes(routes!(get_member, patch_member, delete_member))
        .routes(routes!(end_member_sessions))
}

/// A member. The password and its hash never appear in answers.
#[derive(Serialize, ToSchema, Debug)]
pub struct Member {
    /// Id.
    pub id: Uuid,
    /// Login name, lower case.
    pub username: String,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Unit the member belongs to (`null` only for admins).
    pub unit_id: Option<Uuid>,
    /// Whether the member may log in.
    pub active: bool,
    /// Whether the member has set a PIN for signing on at kiosk devices (`PUT /me/pin`).
    pub has_pin: bool,
    /// When created.
    pub created_at: chrono::DateTime<Utc>,
    /// When last changed.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<member::Model> for Member {
    fn from(m: member::Model) -> Self {
        Member {
            id: m.id,
            role: Role::parse(&m.role).unwrap_or(Role::Volunteer),
            username: m.username,
            display_name: m.display_name,
            unit_id: m.unit_id,
            active: m.active,
            has_pin: m.pin_hash.is_some(),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A new member.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    /// Login name: 2–64 lower-case letters, digits, `.`, `_`, `-`.
    pub username: String,
    /// Name shown to others (default: the username).
    pub display_name: Option<String>,
    /// Role; commanders cannot create admins.
    pub role: Role,
    /// Unit; required for every role but admin.
    pub unit_id: Option<Uuid>,
    /// Whether the member may log in (default true).
    pub active: Option<bool>,
    /// Password, 8–256 characters (write-only).
    #[schema(write_only)]
    pub password: String,
}

/// Changes to a member; absent fields stay as they are. A new password or deactivation
/// ends the member's logins; a new password also removes the member's kiosk PIN.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMember {
    /// Login name.
    pub username: Option<String>,
    /// Name shown to others.
    pub display_name: Option<String>,
    /// Role.
    pub role: Option<Role>,
    /// Unit; `null` only for admins.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub unit_id: Option<Option<Uuid>>,
    /// Whether the member may log in.
    pub active: Option<bool>,
    /// New password (write-only).
    #[schema(write_only)]
    pub password: Option<String>,
}

/// Filters and paging of `GET /members`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only members of this unit (not its sub-units).
    pub unit_id: Option<Uuid>,
    /// Only members with this role.
    pub role: Option<Role>,
    /// Only active (or inactive) members.
    pub active: Option<bool>,
}

/// A condition selecting the members inside a scope.
pub fn member_scope_condition(scope: &Scope) -> Condition {
    match scope {
        Scope::All => Condition::all(),
        Scope::Subtree(prefix) => Condition::all().add(
            member::Column::UnitId.in_subquery(
                Query::select()
                    .column(unit::Column::Id)
                    .from(unit::Entity)
                    .and_where(unit::Column::Path.starts_with(prefix.clone()))
                    .to_owned(),
            ),
        ),
        Scope::Nothing => Condition::all().add(member::Column::Id.is_null()),
    }
}

/// Finds a member the caller manages, or answers 404.
pub async fn member_in_scope(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
) -> ApiResult<member::Model> {
    member::Entity::find_by_id(id)
        .filter(member_scope_condition(&user.scope_prefix()))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no member {id}")))
}

/// Checks that every listed member exists in the caller's scope; returns them deduplicated.
pub async fn referenced_members(
    state: &AppState,
    user: &AuthUser,
    ids: &[Uuid],
    field: &str,
    errors: &mut Violations,
) -> ApiResult<Vec<Uuid>> {
    if ids.len() > 5000 {
        errors.add(field, "at most 5000 members");
        return Ok(Vec::new());
    }
    let mut unique = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        if seen.insert(*id) {
            unique.push(*id);
        }
    }
    let mut found = HashSet::new();
    for chunk in unique.chunks(500) {
        let rows = member::Entity::find()
            .filter(member::Column::Id.is_in(chunk.iter().copied()))
            .filter(member_scope_condition(&user.scope_prefix()))
            .all(&state.db)
            .await?;
        found.extend(rows.into_iter().map(|m| m.id));
    }
    for (i, id) in ids.iter().enumerate() {
        if !found.contains(id) {
            errors.add(
                format!("{field}[{i}]"),
                format!("no member {id} in your scope"),
            );
        }
    }
    Ok(unique)
}

/// Role and unit rules shared by create and patch.
/// A commander may act on another commander only when that commander's unit lies strictly
/// below their own, as with units: peers of one unit cannot change, reset, demote, delete
/// or end the logins of each other; the unit above (or an admin) does.
pub fn check_not_a_peer(user: &AuthUser, target: &member::Model, what: &str) -> ApiResult<()> {
    if user.role == Role::Commander
        && target.id != user.id
        && target.role == Role::Commander.as_str()
        && target.unit_id == user.unit_id
    {
        return Err(ApiError::forbidden(format!(
            "a commander may not {what} a commander of their own unit; the unit above or an admin may"
        )));
    }
    Ok(())
}

async fn check_role_and_unit(
    state: &AppState,
    user: &AuthUser,
    role: Role,
    unit_id: Option<Uuid>,
    errors: &mut Violations,
) -> ApiResult<()> {
    errors.check(
        role == Role::Admin && user.role != Role::Admin,
        "role",
        "only an admin may make an admin",
    );
    errors.check(
        role == Role::Commander && user.role == Role::Commander && unit_id == user.unit_id,
        "role",
        "a commander may make commanders only of units below their own",
    );
    match unit_id {
        Some(unit_id) => {
            referenced_unit(state, user, unit_id, "unit_id", errors).await?;
        }
        None => errors.check(
            role != Role::Admin,
            "unit_id",
            "is required for every role but admin",
        ),
    }
    Ok(())
}

async fn username_taken(state: &AppState, username: &str, except: Option<Uuid>) -> ApiResult<bool> {
    let mut q = member::Entity::find().filter(member::Column::Username.eq(username));
    if let Some(id) = except {
        q = q.filter(member::Column::Id.ne(id));
    }
    Ok(q.count(&state.db).await? > 0)
}

/// Lists the members the caller manages.
#[utoipa::path(get, path = "/members", tag = "organisation", security(("bearer" = [])), params(MemberQuery),
    responses((status = 200, description = "A page of members", body = Page<Member>)))]
pub async fn list_members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<MemberQuery>,
) -> ApiResult<axum::Json<Page<Member>>> {
    user.require_manager()?;
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = member::Entity::find()
        .filter(member_scope_condition(&user.scope_prefix()))
        .order_by_asc(member::Column::Id);
    if let Some(after) = page.after {
        query = query.filter(member::Column::Id.gt(after));
    }
    if let Some(unit_id) = q.unit_id {
        query = query.filter(member::Column::UnitId.eq(unit_id));
    }
    if let Some(role) = q.role {
        query = query.filter(member::Column::Role.eq(role.as_str()));
    }
    if let Some(active) = q.active {
        query = query.filter(member::Column::Active.eq(active));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    Ok(axum::Json(page.finish(rows, |m| m.id, Member::from)))
}

/// Creates a member with a password.
#[utoipa::path(post, path = "/members", tag = "organisation", security(("bearer" = [])), request_body = CreateMember,
    responses(
        (status = 201, description = "Created", body = Member),
        (status = 409, description = "The username is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateMember>,
) -> ApiResult<(StatusCode, axum::Json<Member>)> {
    user.require_manager()?;
    let mut errors = Violations::new();
    validate::username(&mut errors, "username", &req.username);
    if let Some(name) = &req.display_name {
        validate::name(&mut errors, "display_name", name);
    }
    validate::password(&mut errors, "password", &req.password);
    check_role_and_unit(&state, &user, req.role, req.unit_id, &mut errors).await?;
    errors.finish()?;
    let created = create_member_record(&state, req).await?;
    Ok((StatusCode::CREATED, axum::Json(created.into())))
}

/// Stores a validated new member (shared with `patrol user add`).
pub async fn create_member_record(state: &AppState, req: CreateMember) -> ApiResult<member::Model> {
    if username_taken(state, &req.username, None).await? {
        return Err(ApiError::conflict(format!(
            "username {:?} is already taken",
            req.username
        )));
    }
    let hash = state.passwords.hash(req.password).await?;
    let now = Utc::now();
    let model = member::ActiveModel {
        id: Set(Uuid::now_v7()),
        display_name: Set(req.display_name.unwrap_or_else(|| req.username.clone())),
        username: Set(req.username),
        role: Set(req.role.as_str().to_owned()),
        unit_id: Set(req.unit_id),
        active: Set(req.active.unwrap_or(true)),
        password_hash: Set(hash),
        pin_hash: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&state.db)
    .await?;
    Ok(model)
}

/// One member. Officers and volunteers may read only themselves.
#[utoipa::path(get, path = "/members/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id")),
    responses((status = 200, description = "The member", body = Member)))]
pub async fn get_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<Member>> {
    if id == user.id {
        let me = member::Entity::find_by_id(id)
            .one(&state.db)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no member {id}")))?;
        return Ok(axum::Json(me.into()));
    }
    user.require_manager()?;
    Ok(axum::Json(member_in_scope(&state, &user, id).await?.into()))
}

/// Changes a member. Commanders cannot change admins or make anyone an admin.
#[utoipa::path(patch, path = "/members/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id")), request_body = PatchMember,
    responses((status = 200, description = "The changed member", body = Member)))]
pub async fn patch_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchMember>,
) -> ApiResult<axum::Json<Member>> {
    user.require_manager()?;
    let current = member_in_scope(&state, &user, id).await?;
    if current.role == Role::Admin.as_str() && user.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin may change an admin"));
    }
    check_not_a_peer(&user, &current, "change")?;
    let mut errors = Violations::new();
    if let Some(username) = &req.username {
        validate::username(&mut errors, "username", username);
    }
    if let Some(name) = &req.display_name {
        validate::name(&mut errors, "display_name", name);
    }
    if let Some(pw) = &req.password {
        validate::password(&mut errors, "password", pw);
    }
    let role = req
        .role
        .unwrap_or(Role::parse(&current.role).unwrap_or(Role::Volunteer));
    let unit_id = req.unit_id.unwrap_or(current.unit_id);
    if req.role.is_some() || req.unit_id.is_some() {
        check_role_and_unit(&state, &user, role, unit_id, &mut errors).await?;
    }
    errors.check(
        id == user.id && (req.active == Some(false) || req.role.is_some_and(|r| r != user.role)),
        "role",
        "you cannot deactivate yourself or change your own role",
    );
    errors.finish()?;
    if let Some(username) = &req.username
        && username_taken(&state, username, Some(id)).await?
    {
        return Err(ApiError::conflict(format!(
            "username {username:?} is already taken"
        )));
    }
    let ends_logins = req.password.is_some() || req.active == Some(false);
    let new_hash = match req.password {
        Some(pw) => Some(state.passwords.hash(pw).await?),
        None => None,
    };
    let txn = crate::db::begin_write(&state.db).await?;
    let mut active = current.into_active_model();
    if let Some(username) = req.username {
        active.username = Set(username);
    }
    if let Some(name) = req.display_name {
        active.display_name = Set(name);
    }
    active.role = Set(role.as_str().to_owned());
    active.unit_id = Set(unit_id);
    if let Some(a) = req.active {
        active.active = Set(a);
    }
    if let Some(hash) = new_hash {
        active.password_hash = Set(hash);
        // A reset password is a reset login: the old kiosk PIN must not outlive it.
        active.pin_hash = Set(None);
    }
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    if ends_logins {
        tokens::revoke_member_sessions(&txn, id, "password changed or member deactivated").await?;
    }
    txn.commit().await?;
    state.auth_cache.clear();
    state.rosters_changed();
    Ok(axum::Json(updated.into()))
}

/// Deletes a member (their logins and team memberships go with them).
#[utoipa::path(delete, path = "/members/{id}", tag = "organisation", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The member cannot be deleted (yourself, or still referenced)", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    user.require_manager()?;
    let current = member_in_scope(&state, &user, id).await?;
    if current.role == Role::Admin.as_str() && user.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin may delete an admin"));
    }
    check_not_a_peer(&user, &current, "delete")?;
    if id == user.id {
        return Err(ApiError::conflict("you cannot delete your own account"));
    }
    member::Entity::delete_by_id(id).exec(&state.db).await?;
    state.auth_cache.clear();
    state.rosters_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every login of a member at once: a lost or stolen phone. Their refresh tokens stop
/// working and their access tokens are refused (by this process at once; by other
/// processes on the same database once they read the login again, within seconds). Device
/// keys are revoked apart (`DELETE /members/{id}/device-keys/{key_id}`). Admins for anyone;
/// commanders for the members of their subtree (404 outside it; never an admin); anyone
/// for themself, which ends the caller's own login too.
#[utoipa::path(delete, path = "/members/{id}/sessions", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id")),
    responses((status = 204, description = "Every login of the member ended")))]
pub async fn end_member_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    if id != user.id {
        user.require_manager()?;
        let target = member_in_scope(&state, &user, id).await?;
        if target.role == Role::Admin.as_str() && user.role != Role::Admin {
            return Err(ApiError::forbidden(
                "only an admin may end an admin's logins",
            ));
        }
        check_not_a_peer(&user, &target, "end the logins of")?;
    }
    tokens::revoke_member_sessions(&state.db, id, "ended for the member").await?;
    state.auth_cache.clear();
    Ok(StatusCode::NO_CONTENT)
}
