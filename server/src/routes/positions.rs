//! Reading positions back: `GET /checkins`, `GET /members/{id}/track`, and the audit trail
//! that every read of someone else's positions leaves (`GET /audit`).

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Role, Scope},
    domain::plausibility::Flags,
    error::{ApiError, ApiResult, Violations},
    extract::{ApiPath, ApiQuery},
    pagination::{Page, PageRequest},
    routes::{checkins::Fix, members::member_scope_condition},
    state::AppState,
    store::{audit_record, fix, member},
};

/// Longest track one request returns.
pub const MAX_TRACK_SPAN: Duration = Duration::days(7);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(member_track))
        .routes(routes!(list_audit))
}

/// The list route lives with `POST /checkins` (same path).
pub(super) fn list_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_checkins))
}

/// Filters and paging of `GET /checkins`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckinQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only this member's fixes (officers and volunteers: only their own).
    pub member_id: Option<Uuid>,
    /// Only fixes whose device named this post in its own `post_id`: what the phone
    /// claimed, not where it was (Traccar Client and OsmAnd never name a post). What was
    /// done at a post, every fix there counted or not, is `GET /coverage?post_id=`.
    pub post_id: Option<Uuid>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// Whose fixes the caller may read: `None` for anyone in their scope, else only these.
async fn readable_subject(
    state: &AppState,
    user: &AuthUser,
    subject: Option<Uuid>,
) -> ApiResult<Option<Uuid>> {
    match (user.role, subject) {
        (Role::Admin | Role::Commander, None) => Ok(None),
        (Role::Admin | Role::Commander, Some(id)) if id == user.id => Ok(Some(id)),
        (Role::Admin | Role::Commander, Some(id)) => {
            let visible = member::Entity::find_by_id(id)
                .filter(member_scope_condition(&user.scope_prefix()))
                .one(&state.db)
                .await?
                .is_some();
            if visible {
                Ok(Some(id))
            } else {
                Err(ApiError::not_found(format!("no member {id}")))
            }
        }
        (_, None) => Ok(Some(user.id)),
        (_, Some(id)) if id == user.id => Ok(Some(id)),
        (_, Some(_)) => Err(ApiError::forbidden(
            "officers and volunteers may read only their own positions",
        )),
    }
}

use crate::audit::record as audit;

/// Fixes, newest received first (a page stays stable while new fixes arrive). Officers
/// and volunteers see their own; commanders those of their subtree's members. Reading
/// someone else's positions is audited.
#[utoipa::path(get, path = "/checkins", tag = "checkins", security(("bearer" = [])), params(CheckinQuery),
    responses((status = 200, description = "A page of fixes", body = Page<Fix>)))]
pub async fn list_checkins(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<CheckinQuery>,
) -> ApiResult<axum::Json<Page<Fix>>> {
    let mut errors = Violations::new();
    let page = PageRequest::parse(q.limit, q.cursor.as_deref(), &mut errors);
    if let (Some(from), Some(to)) = (q.from, q.to) {
        errors.check(to <= from, "to", "must be after from");
    }
    errors.finish()?;
    let subject = readable_subject(&state, &user, q.member_id).await?;
    let mut query = fix::Entity::find().order_by_desc(fix::Column::Id);
    query = match subject {
        Some(id) => query.filter(fix::Column::MemberId.eq(id)),
        None => match user.scope_prefix() {
            Scope::All => query,
            scope => query.filter(
                Condition::any().add(fix::Column::MemberId.eq(user.id)).add(
                    fix::Column::MemberId.in_subquery(
                        Query::select()
                            .column(member::Column::Id)
                            .from(member::Entity)
                            .cond_where(member_scope_condition(&scope))
                            .to_owned(),
                    ),
                ),
            ),
        },
    };
    if let Some(after) = page.after {
        query = query.filter(fix::Column::Id.lt(after));
    }
    if let Some(p) = q.post_id {
        query = query.filter(fix::Column::PostId.eq(p));
    }
    if let Some(from) = q.from {
        query = query.filter(fix::Column::RecordedAt.gte(from));
    }
    if let Some(to) = q.to {
        query = query.filter(fix::Column::RecordedAt.lt(to));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    let result = page.finish(rows, |f| f.id, Fix::from);
    let span_from = q
        .from
        .or_else(|| result.items.iter().map(|f| f.recorded_at).min());
    let span_to =
        q.to.or_else(|| result.items.iter().map(|f| f.recorded_at).max());
    audit(
        &state,
        user.id,
        result.items.iter().map(|f| f.member_id),
        "list_checkins",
        span_from,
        span_to,
    )
    .await?;
    Ok(axum::Json(result))
}

/// Span and format of a track.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrackQuery {
    /// Start (RFC 3339; write `+` as `%2B`).
    pub from: DateTime<Utc>,
    /// End; at most 7 days after `from`.
    pub to: DateTime<Utc>,
    /// `geojson` (default) or `gpx`.
    pub format: Option<TrackFormat>,
}

/// The XML namespace of the GPX extensions of a track: the member's id on the track, and
/// each point's `kind`, `accuracy_m` and one `flag` element per flag.
pub const GPX_NS: &str = "urn:patrol:gpx:1";

/// Output format of a track.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrackFormat {
    /// A GeoJSON Feature.
    Geojson,
    /// GPX 1.1.
    Gpx,
}

/// Properties of a track Feature.
#[derive(Serialize, ToSchema)]
pub struct TrackProperties {
    /// The member.
    pub member_id: Uuid,
    /// Start of the span asked for.
    pub from: DateTime<Utc>,
    /// End of the span asked for.
    pub to: DateTime<Utc>,
    /// Number of fixes.
    pub count: usize,
    /// Time of each position, in order.
    pub times: Vec<DateTime<Utc>>,
    /// Flags of each position, in order.
    pub flags: Vec<Vec<&'static str>>,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A member's positions over a span (at most 7 days) in recorded order, as a GeoJSON
/// Feature (a LineString, with the time and flags of each position in its properties) or
/// as GPX 1.1: the track named by the member's display name, each point carrying in its
/// `<extensions>` (namespace `urn:patrol:gpx:1`, prefix `patrol`) its `kind`,
/// `accuracy_m` and a `flag` element per flag (`mock_location`, `implausible_speed`, …),
/// so flagged fixes stay evidence. Officers and volunteers may read only their own;
/// reading someone else's is audited.
#[utoipa::path(get, path = "/members/{id}/track", tag = "checkins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Member id"), TrackQuery),
    responses(
        (status = 200, description = "The track: a GeoJSON Feature, or GPX with format=gpx",
            content((Object = "application/geo+json"), (String = "application/gpx+xml"))),
    ))]
pub async fn member_track(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<TrackQuery>,
) -> ApiResult<Response> {
    let mut errors = Violations::new();
    errors.check(q.to <= q.from, "to", "must be after from");
    errors.check(
        q.to - q.from > MAX_TRACK_SPAN,
        "to",
        "a track covers at most 7 days",
    );
    errors.finish()?;
    let subject = readable_subject(&state, &user, Some(id))
        .await?
        .unwrap_or(id);
    let fixes = fix::Entity::find()
        .filter(fix::Column::MemberId.eq(subject))
        .filter(fix::Column::RecordedAt.gte(q.from))
        .filter(fix::Column::RecordedAt.lt(q.to))
        .order_by_asc(fix::Column::RecordedAt)
        .order_by_asc(fix::Column::Id)
        .limit(200_000)
        .all(&state.db)
        .await?;
    audit(
        &state,
        user.id,
        [subject],
        "track",
        Some(q.from),
        Some(q.to),
    )
    .await?;
    if q.format == Some(TrackFormat::Gpx) {
        let name = member::Entity::find_by_id(subject)
            .one(&state.db)
            .await?
            .map_or_else(|| format!("member {subject}"), |m| m.display_name);
        let mut gpx = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"patrol\" xmlns=\"http://www.topografix.com/GPX/1/1\" xmlns:patrol=\"{GPX_NS}\">\n"
        );
        gpx.push_str(&format!(
            "  <trk>\n    <name>{}</name>\n    <extensions><patrol:member_id>{subject}</patrol:member_id></extensions>\n    <trkseg>\n",
            xml_escape(&name)
        ));
        for f in &fixes {
            gpx.push_str(&format!(
                "      <trkpt lat=\"{}\" lon=\"{}\">",
                f.lat, f.lon
            ));
            if let Some(alt) = f.altitude_m {
                gpx.push_str(&format!("<ele>{alt}</ele>"));
            }
            gpx.push_str(&format!(
                "<time>{}</time>",
                f.recorded_at.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            ));
            // The evidence a plain GPX point cannot carry: a flagged fix never counts.
            gpx.push_str(&format!(
                "<extensions><patrol:kind>{}</patrol:kind>",
                xml_escape(&f.kind)
            ));
            // A device that sent no accuracy has none to show (flag unknown_accuracy).
            if !Flags(f.flags).contains(Flags::UNKNOWN_ACCURACY) {
                gpx.push_str(&format!(
                    "<patrol:accuracy_m>{}</patrol:accuracy_m>",
                    f.accuracy_m
                ));
            }
            for flag in Flags(f.flags).names() {
                gpx.push_str(&format!("<patrol:flag>{flag}</patrol:flag>"));
            }
            gpx.push_str("</extensions></trkpt>\n");
        }
        gpx.push_str("    </trkseg>\n  </trk>\n</gpx>\n");
        return Ok(([(header::CONTENT_TYPE, "application/gpx+xml")], gpx).into_response());
    }
    let coords: Vec<[f64; 2]> = fixes.iter().map(|f| [f.lon, f.lat]).collect();
    let geometry = match coords.len() {
        0 => serde_json::Value::Null,
        1 => json!({"type": "Point", "coordinates": coords[0]}),
        _ => json!({"type": "LineString", "coordinates": coords}),
    };
    let properties = TrackProperties {
        member_id: subject,
        from: q.from,
        to: q.to,
        count: fixes.len(),
        times: fixes.iter().map(|f| f.recorded_at).collect(),
        flags: fixes.iter().map(|f| Flags(f.flags).names()).collect(),
    };
    let feature = json!({"type": "Feature", "geometry": geometry, "properties": properties});
    Ok((
        [(header::CONTENT_TYPE, "application/geo+json")],
        axum::Json(feature),
    )
        .into_response())
}

/// An audit record: who read whose positions, over which span, when.
#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    /// Id.
    pub id: Uuid,
    /// Who read.
    pub viewer_id: Uuid,
    /// Whose positions.
    pub subject_id: Uuid,
    /// `list_checkins` or `track` (the span asked for); or, for positions seen live,
    /// `event_stream` (check-ins and alerts on `GET /events`), `status_now` (who is at a
    /// post, a silent member's last position) or `alerts` (an alert's position): one record
    /// per viewer, subject and hour, the span being that hour. Kiosk sign-ons are recorded
    /// as `kiosk_sign_on` and `kiosk_sign_off`.
    pub action: String,
    /// Start of the span read.
    pub span_from: Option<DateTime<Utc>>,
    /// End of the span read.
    pub span_to: Option<DateTime<Utc>>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Filters and paging of `GET /audit`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only reads by this member.
    pub viewer_id: Option<Uuid>,
    /// Only reads of this member's positions.
    pub subject_id: Option<Uuid>,
}

/// The audit trail, newest first (admins only). Nothing in the API changes or deletes it.
#[utoipa::path(get, path = "/audit", tag = "checkins", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, description = "A page of audit records", body = Page<AuditRecord>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<axum::Json<Page<AuditRecord>>> {
    if user.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin reads the audit trail"));
    }
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = audit_record::Entity::find().order_by_desc(audit_record::Column::Id);
    if let Some(after) = page.after {
        query = query.filter(audit_record::Column::Id.lt(after));
    }
    if let Some(v) = q.viewer_id {
        query = query.filter(audit_record::Column::ViewerId.eq(v));
    }
    if let Some(s) = q.subject_id {
        query = query.filter(audit_record::Column::SubjectId.eq(s));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    Ok(axum::Json(page.finish(
        rows,
        |r| r.id,
        |r| AuditRecord {
            id: r.id,
            viewer_id: r.viewer_id,
            subject_id: r.subject_id,
            action: r.action,
            span_from: r.span_from,
            span_to: r.span_to,
            at: r.at,
        },
    )))
}
