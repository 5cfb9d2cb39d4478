//! Who is calling and what they may see: roles, the bearer-token extractor and scope.

pub mod jwt;
pub mod kiosk;
pub mod password;
pub mod throttle;
pub mod tokens;

use axum::{extract::FromRequestParts, http::request::Parts};
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use kiosk::KioskDevice;

use crate::{
    error::ApiError,
    state::AppState,
    store::{member, session, unit},
};

/// A member's one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, everywhere.
    Admin,
    /// Reads and manages their unit and everything under it.
    Commander,
    /// Full-time patrol staff or police on a grid route; themselves only.
    PatrolOfficer,
    /// Kiosk or checkpoint duty officer; themselves only.
    KioskOfficer,
    /// "Red armband" volunteer; themselves only.
    Volunteer,
}

impl Role {
    /// Every role, in order of reach.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Commander,
        Role::PatrolOfficer,
        Role::KioskOfficer,
        Role::Volunteer,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Commander => "commander",
            Role::PatrolOfficer => "patrol_officer",
            Role::KioskOfficer => "kiosk_officer",
            Role::Volunteer => "volunteer",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The authenticated caller, checked against the database on every request (through
/// [`AuthCache`]) so that a revoked login, a deactivated member or a changed role takes
/// effect at once.
#[derive(Clone, Debug)]
pub struct AuthUser {
    /// Member id.
    pub id: Uuid,
    /// Current role.
    pub role: Role,
    /// Current unit.
    pub unit_id: Option<Uuid>,
    /// Materialised path of the unit (`/root/.../unit/`), for subtree checks.
    pub unit_path: Option<String>,
    /// Login session of the token.
    pub session_id: Uuid,
    /// When the access token of this request expires (Unix seconds).
    pub token_expires_at: i64,
}

/// How long a verified caller is remembered. Revocations made in this process take effect
/// at once (they forget the entry); those made by another process within this time.
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Recently verified callers by login session, so that a busy phone's every fix does not
/// cost three database reads.
#[derive(Default)]
pub struct AuthCache {
    entries: std::sync::Mutex<std::collections::HashMap<Uuid, (std::time::Instant, AuthUser)>>,
    /// Bumped by every forget; a check that began before a forget must not store its
    /// result, or it could bring back a login that was just ended.
    generation: std::sync::atomic::AtomicU64,
}

impl AuthCache {
    fn get(&self, session: Uuid, member: Uuid) -> Option<AuthUser> {
        let entries = self.entries.lock().ok()?;
        let (at, user) = entries.get(&session)?;
        (at.elapsed() < AUTH_CACHE_TTL && user.id == member).then(|| user.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn put(&self, user: &AuthUser, checked_at_generation: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if self.generation() != checked_at_generation {
                return;
            }
            if entries.len() > 100_000 {
                entries.retain(|_, (at, _)| at.elapsed() < AUTH_CACHE_TTL);
            }
            entries.insert(user.session_id, (std::time::Instant::now(), user.clone()));
        }
    }

    /// Forgets one login (logout, refresh-token reuse).
    pub fn forget_session(&self, session: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            entries.remove(&session);
        }
    }

    /// Forgets everything (a member, role or unit changed).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            entries.clear();
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("this endpoint needs a bearer access token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let claims = state.keys.verify(token).map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            ApiError::unauthorized("the access token is invalid or expired")
        })?;
        let mut user = AuthUser::resolve(state, claims.sub, claims.sid).await?;
        user.token_expires_at = claims.exp;
        Ok(user)
    }
}

impl AuthUser {
    /// The member of a login session as they are now (through [`AuthCache`]), or 401 when
    /// the member is gone or inactive or the session ended.
    pub async fn resolve(
        state: &AppState,
        member_id: Uuid,
        session_id: Uuid,
    ) -> Result<AuthUser, ApiError> {
        if let Some(user) = state.auth_cache.get(session_id, member_id) {
            return Ok(user);
        }
        let generation = state.auth_cache.generation();
        let invalid = || ApiError::unauthorized("the access token is no longer valid");
        let member = member::Entity::find_by_id(member_id)
            .one(&state.db)
            .await?
            .filter(|m| m.active)
            .ok_or_else(invalid)?;
        let session = session::Entity::find_by_id(session_id)
            .one(&state.db)
            .await?
            .filter(|s| s.member_id == member.id && s.revoked_at.is_none())
            .ok_or_else(invalid)?;
        let role = Role::parse(&member.role)
            .ok_or_else(|| ApiError::internal("stored role is unknown"))?;
        let unit_path = match member.unit_id {
            Some(unit_id) => unit::Entity::find_by_id(unit_id)
                .one(&state.db)
                .await?
                .map(|u| u.path),
            None => None,
        };
        let user = AuthUser {
            id: member.id,
            role,
            unit_id: member.unit_id,
            unit_path,
            session_id: session.id,
            token_expires_at: 0,
        };
        state.auth_cache.put(&user, generation);
        Ok(user)
    }

    /// Whether `now` this caller may still see what they saw: same role and unit, active,
    /// logged in, token unexpired. An open event stream asks this every few seconds.
    pub async fn still_sees_as(&self, state: &AppState) -> bool {
        if chrono::Utc::now().timestamp() >= self.token_expires_at {
            return false;
        }
        match AuthUser::resolve(state, self.id, self.session_id).await {
            Ok(now) => now.role == self.role && now.unit_path == self.unit_path,
            Err(_) => false,
        }
    }

    /// Admins and commanders manage the organisation; everyone else gets 403.
    pub fn require_manager(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Commander => Ok(()),
            _ => Err(ApiError::forbidden(format!(
                "a {} may only see and change their own records",
                self.role.as_str()
            ))),
        }
    }

    /// The subtree this caller manages: `None` for everything (admin), else the unit path
    /// prefix. Officers and volunteers manage nothing (they must be stopped before).
    pub fn scope_prefix(&self) -> Scope {
        match self.role {
            Role::Admin => Scope::All,
            Role::Commander => match &self.unit_path {
                Some(path) => Scope::Subtree(path.clone()),
                None => Scope::Nothing,
            },
            _ => Scope::Nothing,
        }
    }

    /// Whether a unit (by its path) lies in the caller's scope.
    pub fn sees_path(&self, path: &str) -> bool {
        self.scope_prefix().contains(path)
    }
}

/// The part of the organisation tree a caller manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole tree.
    All,
    /// The unit with this path and everything under it.
    Subtree(String),
    /// Nothing.
    Nothing,
}

impl Scope {
    /// Whether the unit with this path is inside.
    pub fn contains(&self, path: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Subtree(prefix) => path.starts_with(prefix.as_str()),
            Scope::Nothing => false,
        }
    }
}
