//! Login, token refresh, logout and the caller's own record.

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, password, tokens},
    error::{ApiError, ApiResult},
    extract::ApiJson,
    routes::members::Member,
    state::AppState,
    store::{login_failure, member},
};

/// Failed logins of one username that trigger throttling…
pub const MAX_FAILURES: u64 = 5;
/// …within this window.
pub const FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// Username and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username (case-insensitive).
    pub username: String,
    /// Password.
    pub password: String,
}

/// A refresh token to exchange.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// Tokens for a login or refresh.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque token for `POST /auth/refresh`; single use, rotated on each refresh.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The logged-in member.
    pub member: Member,
}

impl From<tokens::IssuedTokens> for TokenResponse {
    fn from(t: tokens::IssuedTokens) -> Self {
        TokenResponse {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
            member: Member::from(t.member),
        }
    }
}

/// Logs in with a password. An unknown username and a wrong password get the same 401;
/// after 5 failures for one username within 15 minutes, 429 with `Retry-After`.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Unknown username or wrong password", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failures for this username", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let username = req.username.trim().to_lowercase();
    if username.is_empty() || username.len() > 256 || req.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    throttle(&state, &username).await?;

    let found = member::Entity::find()
        .filter(member::Column::Username.eq(&username))
        .one(&state.db)
        .await?;
    let ok = password::verify(
        found.as_ref().map(|m| m.password_hash.clone()),
        req.password,
    )
    .await?;
    match found {
        Some(m) if ok && m.active => {
            forget_failures(&state, &username).await?;
            Ok(axum::Json(tokens::start_session(&state, m).await?.into()))
        }
        _ => {
            record_failure(&state, &[&username]).await?;
            Err(ApiError::unauthorized("wrong username or password"))
        }
    }
}

/// 429 with `Retry-After` while a username has [`MAX_FAILURES`] failed logins within
/// [`FAILURE_WINDOW`]: a password, a PIN at a kiosk, or the password of a PIN change.
pub async fn throttle(state: &AppState, username: &str) -> ApiResult<()> {
    throttle_key(state, username, MAX_FAILURES, "logins for this username").await
}

/// 429 with `Retry-After` while `max` failures were recorded under `key` (a username, or
/// another key that no username can be) within [`FAILURE_WINDOW`].
pub async fn throttle_key(state: &AppState, key: &str, max: u64, what: &str) -> ApiResult<()> {
    let now = Utc::now();
    let since = now - FAILURE_WINDOW;
    let recent = login_failure::Entity::find()
        .filter(login_failure::Column::Username.eq(key))
        .filter(login_failure::Column::At.gt(since));
    if recent.clone().count(&state.db).await? >= max {
        let oldest = recent
            .order_by_asc(login_failure::Column::At)
            .one(&state.db)
            .await?
            .map(|f| f.at)
            .unwrap_or(now);
        let wait = (oldest + FAILURE_WINDOW - now).num_seconds().max(1) as u64;
        return Err(ApiError::rate_limited(
            format!("too many failed {what}; try again in {wait} seconds"),
            wait,
        ));
    }
    Ok(())
}

/// Counts a failed login under each key, a username and any other (and drops failures
/// too old to count).
pub async fn record_failure(state: &AppState, keys: &[&str]) -> ApiResult<()> {
    let now = Utc::now();
    login_failure::Entity::insert_many(keys.iter().map(|key| login_failure::ActiveModel {
        id: Set(Uuid::now_v7()),
        username: Set((*key).to_owned()),
        at: Set(now),
    }))
    .exec_without_returning(&state.db)
    .await?;
    login_failure::Entity::delete_many()
        .filter(login_failure::Column::At.lt(now - chrono::Duration::days(1)))
        .exec(&state.db)
        .await?;
    Ok(())
}

/// Forgets a username's failed logins after a successful one.
pub async fn forget_failures(state: &AppState, username: &str) -> ApiResult<()> {
    login_failure::Entity::delete_many()
        .filter(login_failure::Column::Username.eq(username))
        .exec(&state.db)
        .await?;
    Ok(())
}

/// Exchanges a refresh token for new tokens. Each refresh token works once; reusing one
/// revokes every token of the login, except one retry of the immediately previous token
/// within 30 seconds (for a phone that lost the answer).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    if req.refresh_token.is_empty() || req.refresh_token.len() > 256 {
        return Err(ApiError::unauthorized(
            "the refresh token is invalid, expired or revoked",
        ));
    }
    Ok(axum::Json(
        tokens::refresh(&state, &req.refresh_token).await?.into(),
    ))
}

/// Ends the caller's login: its access and refresh tokens stop working.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Logged out")))]
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    tokens::revoke_session(&state.db, user.session_id, "logout").await?;
    state.auth_cache.forget_session(user.session_id);
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own member record.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = Member)))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<axum::Json<Member>> {
    let m = member::Entity::find_by_id(user.id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the access token is no longer valid"))?;
    Ok(axum::Json(Member::from(m)))
}
