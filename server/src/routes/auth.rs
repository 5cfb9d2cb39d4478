//! Login, token refresh, logout and the caller's own record.

use axum::{extract::State, http::StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{AuthUser, tokens},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ClientIp},
    routes::members::Member,
    state::AppState,
    store::member,
};

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

/// Logs in with a password. An unknown username and a wrong password get the same 401.
/// Throttled before any password is checked (429 `rate_limited` with `Retry-After`): a
/// burst of attempts from one client address, then one every few seconds (a successful
/// login gives its attempt back); after 3 failures for a username from one address, each
/// further try from there waits twice as long as the last (1 s, 2 s, … up to 15 minutes);
/// after 30 failures for a username from all addresses within 15 minutes, its logins are
/// checked one at a time, 2 s apart. When as many passwords are being checked as the
/// server takes, 503 `busy` with `Retry-After`.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Unknown username or wrong password", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many attempts from this address, or failures for this username; `Retry-After` says when to try again", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: too many passwords being checked at once; `Retry-After` says when to try again", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let username = req.username.trim().to_lowercase();
    if username.is_empty() || username.len() > 256 || req.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let attempt = state
        .logins
        .admit(&state.db, &username, ip, "logins")
        .await?;
    let found = member::Entity::find()
        .filter(member::Column::Username.eq(&username))
        .one(&state.db)
        .await?;
    let ok = state
        .passwords
        .verify(
            found.as_ref().map(|m| m.password_hash.clone()),
            req.password,
        )
        .await?;
    match found {
        Some(m) if ok && m.active => {
            attempt.succeeded(&state.db).await?;
            Ok(axum::Json(tokens::start_session(&state, m).await?.into()))
        }
        _ => {
            attempt.failed(&state.db, &[]).await?;
            Err(ApiError::unauthorized("wrong username or password"))
        }
    }
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
