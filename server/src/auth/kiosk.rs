//! The kiosk device extractor: `Authorization: Kiosk <token>`, a token issued by
//! `POST /kiosks` and kept apart from members' access tokens, so that neither kind opens
//! the other's endpoints.

use axum::{extract::FromRequestParts, http::request::Parts};
use chrono::{Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use crate::{
    error::ApiError,
    routes::device_keys::hash_key,
    state::AppState,
    store::{kiosk, post},
};

/// How often `last_seen_at` is written: a board polls every few seconds, and a write per
/// poll would cost more than the field is worth.
pub const SEEN_EVERY: Duration = Duration::minutes(1);

/// Longest token read; anything longer is no token this server issued.
const MAX_TOKEN: usize = 256;

/// The calling kiosk device, registered and not revoked, with its post.
#[derive(Clone, Debug)]
pub struct KioskDevice {
    /// The kiosk.
    pub kiosk: kiosk::Model,
    /// Its post.
    pub post: post::Model,
}

impl FromRequestParts<AppState> for KioskDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized_kiosk(
                    "this endpoint needs a kiosk device token: `Authorization: Kiosk <token>`",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("kiosk").then(|| token.trim())
            })
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN)
            .ok_or_else(|| {
                ApiError::unauthorized_kiosk(
                    "the Authorization header must be `Kiosk <token>`; kiosk endpoints take no member access token",
                )
            })?;
        let refused = || ApiError::unauthorized_kiosk("the kiosk token is unknown or revoked");
        let kiosk = kiosk::Entity::find()
            .filter(kiosk::Column::TokenHash.eq(hash_key(token)))
            .filter(kiosk::Column::RevokedAt.is_null())
            .one(&state.db)
            .await?
            .ok_or_else(refused)?;
        let post = post::Entity::find_by_id(kiosk.post_id)
            .one(&state.db)
            .await?
            .ok_or_else(refused)?;
        let now = Utc::now();
        if kiosk.last_seen_at.is_none_or(|at| at <= now - SEEN_EVERY) {
            kiosk::Entity::update_many()
                .col_expr(kiosk::Column::LastSeenAt, Expr::value(Some(now)))
                .filter(kiosk::Column::Id.eq(kiosk.id))
                .exec(&state.db)
                .await?;
        }
        Ok(KioskDevice { kiosk, post })
    }
}
