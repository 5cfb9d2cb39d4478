//! `/alerts`: the alerts the evaluator raised, and acknowledging them.

use axum::extract::State;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Query},
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    alerts::{AlertOut, announce, state as alert_state},
    auth::{AuthUser, Scope},
    domain::alerts::AlertKind,
    error::{ApiError, ApiResult, Violations},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    state::AppState,
    store::{alert, unit},
};

/// Longest acknowledgement note, in characters.
pub const MAX_NOTE: usize = 1000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
}

/// The `state` filter that lists alerts in every state.
const ALL_STATES: &str = "all";

/// Filters of `GET /alerts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `open` (raised, not acknowledged), `acknowledged`, `resolved`, or `all` (the same
    /// as leaving it out).
    pub state: Option<String>,
    /// Only this kind.
    pub kind: Option<AlertKind>,
    /// Only alerts about this post.
    pub post_id: Option<Uuid>,
    /// Raised at or after this instant (RFC 3339; write `+` as `%2B`).
    pub from: Option<DateTime<Utc>>,
    /// Raised before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// From the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Who may see an alert: admins all; commanders those of their unit subtree and about
/// themselves; officers and volunteers those about themselves.
fn alert_scope(user: &AuthUser) -> Condition {
    let own = alert::Column::MemberId.eq(user.id);
    match user.scope_prefix() {
        Scope::All => Condition::all(),
        Scope::Subtree(prefix) => Condition::any().add(own).add(
            alert::Column::UnitId.in_subquery(
                Query::select()
                    .column(unit::Column::Id)
                    .from(unit::Entity)
                    .and_where(unit::Column::Path.starts_with(prefix))
                    .to_owned(),
            ),
        ),
        Scope::Nothing => Condition::all().add(own),
    }
}

/// Alerts the caller may see, newest first. Commanders see those of their unit subtree;
/// officers and volunteers only those about themselves.
#[utoipa::path(get, path = "/alerts", tag = "live", security(("bearer" = [])), params(AlertQuery),
    responses((status = 200, description = "A page of alerts", body = Page<AlertOut>)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<axum::Json<Page<AlertOut>>> {
    let mut errors = Violations::new();
    let page = PageRequest::parse(q.limit, q.cursor.as_deref(), &mut errors);
    if let Some(s) = &q.state {
        errors.check(
            ![
                alert_state::OPEN,
                alert_state::ACKNOWLEDGED,
                alert_state::RESOLVED,
                ALL_STATES,
            ]
            .contains(&s.as_str()),
            "state",
            "must be open, acknowledged, resolved or all",
        );
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        errors.check(to <= from, "to", "must be after from");
    }
    errors.finish()?;
    let mut query = alert::Entity::find()
        .filter(alert_scope(&user))
        .order_by_desc(alert::Column::Id);
    if let Some(after) = page.after {
        query = query.filter(alert::Column::Id.lt(after));
    }
    if let Some(s) = q.state.as_deref().filter(|s| *s != ALL_STATES) {
        query = query.filter(alert::Column::State.eq(s));
    }
    if let Some(k) = q.kind {
        query = query.filter(alert::Column::Kind.eq(k.as_str()));
    }
    if let Some(p) = q.post_id {
        query = query.filter(alert::Column::PostId.eq(p));
    }
    if let Some(from) = q.from {
        query = query.filter(alert::Column::RaisedAt.gte(from));
    }
    if let Some(to) = q.to {
        query = query.filter(alert::Column::RaisedAt.lt(to));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    // An alert about a member carries their position (an SOS, a silent member's last fix).
    crate::audit::record_live(
        &state,
        user.id,
        rows.iter()
            .filter(|a| a.lat.is_some())
            .filter_map(|a| a.member_id),
        "alerts",
        chrono::Utc::now(),
    )
    .await?;
    Ok(axum::Json(page.finish(rows, |a| a.id, AlertOut::from)))
}

/// An acknowledgement.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckIn {
    /// What was done about it: not empty, at most 1,000 characters.
    pub note: String,
}

/// Acknowledges an open alert with a note; who and when are recorded. The alert stays
/// until its condition clears, and is then resolved. Admins and commanders (for alerts of
/// their subtree) only.
#[utoipa::path(post, path = "/alerts/{id}/ack", tag = "live", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The alert")),
    request_body = AckIn,
    responses(
        (status = 200, description = "The acknowledged alert", body = AlertOut),
        (status = 409, description = "Already acknowledged or resolved", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn ack_alert(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<AckIn>,
) -> ApiResult<axum::Json<AlertOut>> {
    user.require_manager()?;
    let note = req.note.trim();
    let mut errors = Violations::new();
    errors.check(note.is_empty(), "note", "must not be empty");
    errors.check(
        note.chars().count() > MAX_NOTE,
        "note",
        format!("must be at most {MAX_NOTE} characters"),
    );
    errors.finish()?;
    let found = alert::Entity::find_by_id(id)
        .filter(alert_scope(&user))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert {id}")))?;
    let now = Utc::now();
    let done = alert::Entity::update_many()
        .col_expr(alert::Column::State, Expr::value(alert_state::ACKNOWLEDGED))
        .col_expr(alert::Column::AckedAt, Expr::value(now))
        .col_expr(alert::Column::AckedBy, Expr::value(user.id))
        .col_expr(alert::Column::AckNote, Expr::value(note.to_owned()))
        .filter(alert::Column::Id.eq(id))
        .filter(alert::Column::State.eq(alert_state::OPEN))
        .exec(&state.db)
        .await?;
    if done.rows_affected == 0 {
        let current = alert::Entity::find_by_id(id)
            .one(&state.db)
            .await?
            .map_or(found.state, |a| a.state);
        return Err(ApiError::conflict(format!(
            "the alert is {current}; only an open alert can be acknowledged"
        )));
    }
    let acked = alert::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no alert {id}")))?;
    announce(&state, "acked", std::slice::from_ref(&acked)).await?;
    Ok(axum::Json(AlertOut::from(acked)))
}
