//! Login sessions and refresh-token rotation with reuse detection.
//!
//! Each password login is a session. A refresh token is used once: refreshing rotates
//! it to a new one. Presenting a token that was already rotated means it was copied, so
//! the whole session is revoked, with one exception: a phone that lost the response may
//! retry the immediately previous token once within [`RETRY_GRACE`].

use base64::Engine;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    store::{member, refresh_token, session},
};

/// How long the immediately previous refresh token may be retried once.
pub const RETRY_GRACE: chrono::Duration = chrono::Duration::seconds(30);

/// What a login or refresh hands out.
pub struct IssuedTokens {
    /// Signed access token.
    pub access_token: String,
    /// Opaque refresh token (only its hash is stored).
    pub refresh_token: String,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// The member.
    pub member: member::Model,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn insert_refresh_token<C: ConnectionTrait>(
    db: &C,
    state: &AppState,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> ApiResult<(Uuid, String)> {
    let token = new_refresh_token();
    let id = Uuid::now_v7();
    refresh_token::ActiveModel {
        id: Set(id),
        session_id: Set(session_id),
        token_hash: Set(hash_token(&token)),
        created_at: Set(now),
        expires_at: Set(now
            + chrono::Duration::from_std(state.settings.refresh_token_ttl)
                .map_err(ApiError::internal)?),
        rotated_at: Set(None),
        replaced_by: Set(None),
        grace_used: Set(false),
    }
    .insert(db)
    .await?;
    Ok((id, token))
}

fn issue(
    state: &AppState,
    member: member::Model,
    session_id: Uuid,
    refresh: String,
) -> ApiResult<IssuedTokens> {
    let access_token = state
        .keys
        .issue(member.id, &member.role, member.unit_id, session_id)?;
    Ok(IssuedTokens {
        access_token,
        refresh_token: refresh,
        expires_in: state.keys.ttl().as_secs(),
        member,
    })
}

/// Starts a session for a member who just proved their password.
pub async fn start_session(state: &AppState, member: member::Model) -> ApiResult<IssuedTokens> {
    let now = Utc::now();
    let txn = crate::db::begin_write(&state.db).await?;
    let session_id = Uuid::now_v7();
    session::ActiveModel {
        id: Set(session_id),
        member_id: Set(member.id),
        created_at: Set(now),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    }
    .insert(&txn)
    .await?;
    let (_, refresh) = insert_refresh_token(&txn, state, session_id, now).await?;
    txn.commit().await?;
    issue(state, member, session_id, refresh)
}

/// Revokes a session and so every token issued from it.
pub async fn revoke_session<C: ConnectionTrait>(
    db: &C,
    session_id: Uuid,
    reason: &str,
) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes every session of a member (password change, deactivation).
pub async fn revoke_member_sessions<C: ConnectionTrait>(
    db: &C,
    member_id: Uuid,
    reason: &str,
) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::MemberId.eq(member_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Exchanges a refresh token for a new pair, detecting reuse.
pub async fn refresh(state: &AppState, presented: &str) -> ApiResult<IssuedTokens> {
    let invalid = || ApiError::unauthorized("the refresh token is invalid, expired or revoked");
    let now = Utc::now();
    let txn = crate::db::begin_write(&state.db).await?;
    let token = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(hash_token(presented)))
        .one(&txn)
        .await?
        .ok_or_else(invalid)?;
    let session = session::Entity::find_by_id(token.session_id)
        .one(&txn)
        .await?
        .filter(|s| s.revoked_at.is_none())
        .ok_or_else(invalid)?;
    let member = member::Entity::find_by_id(session.member_id)
        .one(&txn)
        .await?
        .filter(|m| m.active)
        .ok_or_else(invalid)?;
    if token.expires_at <= now {
        return Err(invalid());
    }

    // The normal case: the token was never used. The conditional update makes two
    // concurrent refreshes of one token rotate it only once.
    if token.rotated_at.is_none() {
        let (new_id, new_token) = insert_refresh_token(&txn, state, session.id, now).await?;
        let rotated = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
            .col_expr(refresh_token::Column::ReplacedBy, Expr::value(new_id))
            .filter(refresh_token::Column::Id.eq(token.id))
            .filter(refresh_token::Column::RotatedAt.is_null())
            .exec(&txn)
            .await?;
        if rotated.rows_affected == 1 {
            txn.commit().await?;
            return issue(state, member, session.id, new_token);
        }
        txn.rollback().await?;
        return Err(ApiError::conflict(
            "this refresh token is being used by another request at the same moment; retry",
        ));
    }

    // A retry of the immediately previous token: its successor is still unused, the
    // retry comes within the grace period, and no retry was made before.
    let successor = match token.replaced_by {
        Some(id) => refresh_token::Entity::find_by_id(id).one(&txn).await?,
        None => None,
    };
    let within_grace = token.rotated_at.is_some_and(|at| now - at <= RETRY_GRACE);
    if let Some(successor) = successor.filter(|s| s.rotated_at.is_none())
        && within_grace
        && !token.grace_used
    {
        let (new_id, new_token) = insert_refresh_token(&txn, state, session.id, now).await?;
        let used = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::GraceUsed, Expr::value(true))
            .filter(refresh_token::Column::Id.eq(token.id))
            .filter(refresh_token::Column::GraceUsed.eq(false))
            .exec(&txn)
            .await?;
        // The successor the phone never received is retired without a grace of its own.
        let retired = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
            .col_expr(refresh_token::Column::ReplacedBy, Expr::value(new_id))
            .col_expr(refresh_token::Column::GraceUsed, Expr::value(true))
            .filter(refresh_token::Column::Id.eq(successor.id))
            .filter(refresh_token::Column::RotatedAt.is_null())
            .exec(&txn)
            .await?;
        if used.rows_affected == 1 && retired.rows_affected == 1 {
            txn.commit().await?;
            return issue(state, member, session.id, new_token);
        }
        txn.rollback().await?;
        return Err(invalid());
    }

    // Anything else is reuse of a rotated token: someone holds a copy. Revoke the login.
    revoke_session(&txn, session.id, "refresh token reuse").await?;
    txn.commit().await?;
    state.auth_cache.forget_session(session.id);
    tracing::warn!(member = %member.id, session = %session.id, "refresh token reuse; session revoked");
    Err(ApiError::unauthorized(
        "this refresh token was already used; every token of this login has been revoked",
    ))
}
