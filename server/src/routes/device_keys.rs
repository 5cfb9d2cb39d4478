//! Device keys: what an admin, or a commander for the members of their subtree, issues so
//! that a stock Traccar Client or OsmAnd app can report a member's positions to `/osmand`.

use axum::{extract::State, http::StatusCode};
use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Set, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Scope},
    error::{ApiError, ApiResult, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    routes::members::{check_not_a_peer, member_in_scope, member_scope_condition},
    state::AppState,
    store::{device_key, member},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_all_device_keys))
        .routes(routes!(list_device_keys, issue_device_key))
        .routes(routes!(revoke_device_key))
}

/// A device key, without the key itself.
#[derive(Serialize, ToSchema)]
pub struct DeviceKey {
    /// Id.
    pub id: Uuid,
    /// The member it reports for.
    pub member_id: Uuid,
    /// What it is for, e.g. the phone.
    pub label: Option<String>,
    /// When issued.
    pub created_at: DateTime<Utc>,
    /// When revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When last used.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A newly issued key: the only time the key is shown.
#[derive(Serialize, ToSchema)]
pub struct IssuedDeviceKey {
    /// The key record.
    #[serde(flatten)]
    pub record: DeviceKey,
    /// The key: enter it as the device identifier in Traccar Client or OsmAnd.
    pub key: String,
}

/// A request for a key.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct IssueDeviceKey {
    /// What the key is for.
    pub label: Option<String>,
}

fn to_key(k: device_key::Model) -> DeviceKey {
    DeviceKey {
        id: k.id,
        member_id: k.member_id,
        label: k.label,
        created_at: k.created_at,
        revoked_at: k.revoked_at,
        last_used_at: k.last_used_at,
    }
}

/// The stored form of a device key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A member whose keys the caller manages: themself (a member keeps the keys of their own
/// phones, for a tracker app that reports while the phone sleeps); for others 403 for
/// officers and volunteers, 404 for a member outside a commander's subtree (as for every
/// scoped record).
async fn managed_member(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<member::Model> {
    if id == user.id {
        return member::Entity::find_by_id(id)
            .one(&state.db)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the access token is no longer valid"));
    }
    user.require_manager()?;
    let member = member_in_scope(state, user, id).await?;
    // A key reports as its member: a commander must not hold one for a peer.
    check_not_a_peer(user, &member, "manage the device keys of")?;
    Ok(member)
}

/// Most keys in use a member may have at once: one per phone or tracker, with room to
/// spare; a bound on what a script with a member's login can create.
const MAX_ACTIVE_KEYS: u64 = 10;

/// Filters and paging of `GET /device-keys`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceKeyQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only this member's keys.
    pub member_id: Option<Uuid>,
    /// Only keys still in use (`true`) or only revoked ones (`false`).
    pub active: Option<bool>,
}

/// Paging and the `active` filter of `GET /members/{id}/device-keys`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberDeviceKeyQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only keys still in use (`true`) or only revoked ones (`false`).
    pub active: Option<bool>,
}

/// One page of keys, oldest first.
async fn key_page(
    state: &AppState,
    mut query: Select<device_key::Entity>,
    page: PageRequest,
    active: Option<bool>,
) -> ApiResult<Page<DeviceKey>> {
    query = query.order_by_asc(device_key::Column::Id);
    if let Some(after) = page.after {
        query = query.filter(device_key::Column::Id.gt(after));
    }
    match active {
        Some(true) => query = query.filter(device_key::Column::RevokedAt.is_null()),
        Some(false) => query = query.filter(device_key::Column::RevokedAt.is_not_null()),
        None => {}
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    Ok(page.finish(rows, |k| k.id, to_key))
}

/// The device keys of the members the caller manages (admins: everyone's; commanders:
/// their subtree's).
#[utoipa::path(get, path = "/device-keys", tag = "checkins", security(("bearer" = [])), params(DeviceKeyQuery),
    responses((status = 200, description = "A page of keys, without the keys themselves", body = Page<DeviceKey>)))]
pub async fn list_all_device_keys(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<DeviceKeyQuery>,
) -> ApiResult<axum::Json<Page<DeviceKey>>> {
    user.require_manager()?;
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = device_key::Entity::find();
    if let Some(id) = q.member_id {
        managed_member(&state, &user, id).await?;
        query = query.filter(device_key::Column::MemberId.eq(id));
    } else {
        let scope = user.scope_prefix();
        if scope != Scope::All {
            query = query.filter(
                device_key::Column::MemberId.in_subquery(
                    Query::select()
                        .column(member::Column::Id)
                        .from(member::Entity)
                        .cond_where(member_scope_condition(&scope))
                        .to_owned(),
                ),
            );
        }
    }
    Ok(axum::Json(key_page(&state, query, page, q.active).await?))
}

/// A member's device keys (the member themself; admins; commanders within their subtree).
#[utoipa::path(get, path = "/members/{id}/device-keys", tag = "checkins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id"), MemberDeviceKeyQuery),
    responses((status = 200, description = "A page of keys, without the keys themselves", body = Page<DeviceKey>)))]
pub async fn list_device_keys(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<MemberDeviceKeyQuery>,
) -> ApiResult<axum::Json<Page<DeviceKey>>> {
    managed_member(&state, &user, id).await?;
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let query = device_key::Entity::find().filter(device_key::Column::MemberId.eq(id));
    Ok(axum::Json(key_page(&state, query, page, q.active).await?))
}

/// Issues a device key for a member (the member themself; admins; commanders within their
/// subtree), at most 10 in use at once (409 beyond). The key
/// is in this answer and nowhere else: only its hash is stored.
#[utoipa::path(post, path = "/members/{id}/device-keys", tag = "checkins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id")), request_body = IssueDeviceKey,
    responses((status = 201, description = "The key, shown once", body = IssuedDeviceKey)))]
pub async fn issue_device_key(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<IssueDeviceKey>,
) -> ApiResult<(StatusCode, axum::Json<IssuedDeviceKey>)> {
    let m = managed_member(&state, &user, id).await?;
    let mut errors = Violations::new();
    if let Some(label) = &req.label {
        validate::name(&mut errors, "label", label);
    }
    errors.finish()?;
    let active = device_key::Entity::find()
        .filter(device_key::Column::MemberId.eq(m.id))
        .filter(device_key::Column::RevokedAt.is_null())
        .count(&state.db)
        .await?;
    if active >= MAX_ACTIVE_KEYS {
        return Err(ApiError::conflict(format!(
            "the member has {active} keys in use, the most there may be; revoke one first"
        )));
    }
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    // Letters and digits only: some tracker apps mangle other characters in the id.
    let key = format!(
        "pk{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bytes)
            .replace(['-', '_'], "x")
    );
    let model = device_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        member_id: Set(m.id),
        key_hash: Set(hash_key(&key)),
        label: Set(req.label),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
        last_used_at: Set(None),
    }
    .insert(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(IssuedDeviceKey {
            record: to_key(model),
            key,
        }),
    ))
}

/// Revokes a device key (the member themself; admins; commanders within their subtree);
/// the app's reports then get 401.
#[utoipa::path(delete, path = "/members/{id}/device-keys/{key_id}", tag = "checkins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id"), ("key_id" = Uuid, Path, description = "Key id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_device_key(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    managed_member(&state, &user, id).await?;
    let key = device_key::Entity::find_by_id(key_id)
        .filter(device_key::Column::MemberId.eq(id))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no device key {key_id} for member {id}")))?;
    if key.revoked_at.is_none() {
        let mut active: device_key::ActiveModel = key.into();
        active.revoked_at = Set(Some(Utc::now()));
        active.update(&state.db).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
