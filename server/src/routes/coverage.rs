//! Coverage of shifts (`/coverage`), the coverage map (`/coverage/map`) and the live board
//! (`/status/now`), scoped to the caller's unit subtree.

use std::collections::{HashMap, HashSet};

use axum::{extract::State, http::header, response::IntoResponse};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    coverage::{coverage_json_over, coverage_of, settings_of},
    domain::{
        alerts::Position,
        coverage::{Excluded, PresenceFigures, RouteFigures, ShiftCoverage, Status, route_pieces},
        geodesy::{LocalProjection, LonLat, point_segment_distance},
        geometry::{PostGeometry, PostKind},
        plausibility::Flags,
    },
    error::{ApiError, ApiResult, Violations},
    extract::ApiQuery,
    routes::{
        posts::{post_in_scope, post_scope_condition, posts_by_id},
        shifts::{MAX_LIST_SPAN, check_window, overlapping, people_on},
        units::unit_in_scope,
    },
    state::AppState,
    store::{fix, member, post, shift, unit},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_coverage))
        .routes(routes!(coverage_map))
        .routes(routes!(status_now))
        .routes(routes!(my_coverage))
}

/// Span and filters of `GET /coverage` and `GET /coverage/map`. Both answer the whole span
/// in one response and in JSON only: any other parameter (`limit`, `cursor`, `format`, …)
/// is refused with 422 naming it rather than silently ignored.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CoverageQuery {
    /// Shifts that end after this instant (RFC 3339; write `+` as `%2B`).
    pub from: DateTime<Utc>,
    /// Shifts that start before this instant; at most 62 days after `from`.
    pub to: DateTime<Utc>,
    /// Only this post (404 when the caller may not see it, as for `unit_id`).
    pub post_id: Option<Uuid>,
    /// Only posts of this unit and the units under it (404 when the caller may not see it).
    pub unit_id: Option<Uuid>,
    /// Only posts of this kind.
    pub kind: Option<PostKind>,
}

/// The coverage of one shift.
#[derive(Serialize, ToSchema)]
pub struct ShiftCoverageOut {
    /// The shift.
    pub shift_id: Uuid,
    /// Its post.
    pub post_id: Uuid,
    /// The post's code.
    pub post_code: String,
    /// The post's kind.
    pub kind: PostKind,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// `pending`, `met`, `partial` or `missed`.
    #[schema(value_type = String)]
    pub status: Status,
    /// Fixes that counted.
    pub eligible_fixes: u32,
    /// Fixes that did not count, by reason.
    #[schema(value_type = Object)]
    pub excluded: Excluded,
    /// Routes: covered_fraction, covered_m, length_m, uncovered [[from_m, to_m]], first_seen_at, last_seen_at.
    #[schema(value_type = Option<Object>)]
    pub route: Option<RouteFigures>,
    /// Other posts: staffed_fraction, present_fraction, max_headcount, first_arrival_at, late_min, unstaffed [[from, to]].
    #[schema(value_type = Option<Object>)]
    pub presence: Option<PresenceFigures>,
    /// Figures are computed up to here (the end, or now for a running shift).
    pub evaluated_until: DateTime<Utc>,
}

/// Shift counts by status, and the duty-time-weighted share of shifts met.
#[derive(Serialize, ToSchema, Default, Clone)]
pub struct Tally {
    /// Finished shifts (`met + partial + missed`), as `shifts` counts in
    /// `GET /reports/compliance`; shifts not ended yet are in `pending` only.
    pub shifts: u32,
    /// Met.
    pub met: u32,
    /// Partial.
    pub partial: u32,
    /// Missed.
    pub missed: u32,
    /// Not ended yet.
    pub pending: u32,
    /// Hours of ended shifts.
    pub duty_hours: f64,
    /// Hours of ended shifts that were met, over all hours of ended shifts (null when none ended).
    pub met_share: Option<f64>,
}

impl Tally {
    fn add(&mut self, status: Status, hours: f64) {
        if status != Status::Pending {
            self.shifts += 1;
        }
        match status {
            Status::Met => self.met += 1,
            Status::Partial => self.partial += 1,
            Status::Missed => self.missed += 1,
            Status::Pending => self.pending += 1,
        }
        if status != Status::Pending {
            let met_hours = self.met_share.unwrap_or(0.0) * self.duty_hours
                + if status == Status::Met { hours } else { 0.0 };
            self.duty_hours += hours;
            self.met_share = (self.duty_hours > 0.0).then(|| met_hours / self.duty_hours);
        }
    }
}

/// Summary of one post.
#[derive(Serialize, ToSchema)]
pub struct PostSummary {
    /// The post.
    pub post_id: Uuid,
    /// Its code.
    pub post_code: String,
    /// Its kind.
    pub kind: PostKind,
    /// The tally of its shifts.
    #[serde(flatten)]
    pub tally: Tally,
}

/// Coverage over a span.
#[derive(Serialize, ToSchema)]
pub struct CoverageReport {
    /// Per shift, by start (then end, post id and shift id).
    pub items: Vec<ShiftCoverageOut>,
    /// Per post, by code.
    pub posts: Vec<PostSummary>,
    /// Over everything.
    pub summary: Tally,
}

/// Posts in scope matching the filters.
async fn posts_for(
    state: &AppState,
    user: &AuthUser,
    post_id: Option<Uuid>,
    unit_id: Option<Uuid>,
    kind: Option<PostKind>,
) -> ApiResult<Vec<post::Model>> {
    Ok(posts_query(state, user, post_id, unit_id, kind)
        .await?
        .all(&state.db)
        .await?)
}

/// The query of the posts in scope matching the filters, by code.
async fn posts_query(
    state: &AppState,
    user: &AuthUser,
    post_id: Option<Uuid>,
    unit_id: Option<Uuid>,
    kind: Option<PostKind>,
) -> ApiResult<sea_orm::Select<post::Entity>> {
    let mut q = post::Entity::find()
        .filter(post_scope_condition(&user.scope_prefix()))
        .order_by_asc(post::Column::Code);
    if let Some(p) = post_id {
        // A post out of scope is a 404, as a unit out of scope is, not an empty answer.
        post_in_scope(state, user, p).await?;
        q = q.filter(post::Column::Id.eq(p));
    }
    if let Some(u) = unit_id {
        let unit = unit_in_scope(state, user, u).await?;
        let ids: Vec<Uuid> = unit::Entity::find()
            .filter(unit::Column::Path.starts_with(unit.path))
            .all(&state.db)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect();
        q = q.filter(post::Column::UnitId.is_in(ids));
    }
    if let Some(k) = kind {
        q = q.filter(post::Column::Kind.eq(k.as_str()));
    }
    Ok(q)
}

/// What `GET /coverage` needs of a post: not its geometry, the bulk of a post's row.
struct PostHead {
    id: Uuid,
    code: String,
    kind: PostKind,
}

/// The [`PostHead`]s of the posts in scope matching the filters, by code.
async fn post_heads_for(
    state: &AppState,
    user: &AuthUser,
    post_id: Option<Uuid>,
    unit_id: Option<Uuid>,
    kind: Option<PostKind>,
) -> ApiResult<Vec<PostHead>> {
    let rows: Vec<(Uuid, String, String)> = posts_query(state, user, post_id, unit_id, kind)
        .await?
        .select_only()
        .columns([post::Column::Id, post::Column::Code, post::Column::Kind])
        .into_tuple()
        .all(&state.db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, code, kind)| PostHead {
            id,
            code,
            kind: PostKind::parse(&kind).unwrap_or(PostKind::Kiosk),
        })
        .collect())
}

/// Shifts of these posts overlapping the span, by start.
async fn shifts_of(
    state: &AppState,
    posts: &[post::Model],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<Vec<shift::Model>> {
    let mut shifts = Vec::new();
    for chunk in posts.chunks(200) {
        shifts.extend(
            shift::Entity::find()
                .filter(overlapping(from, to))
                .filter(shift::Column::PostId.is_in(chunk.iter().map(|p| p.id)))
                .order_by_asc(shift::Column::StartsAt)
                .order_by_asc(shift::Column::Id)
                .all(&state.db)
                .await?,
        );
    }
    if posts.len() > 200 {
        shifts.sort_by_key(|s| (s.starts_at, s.id));
    }
    Ok(shifts)
}

/// Shifts of these posts overlapping the span, with their coverage.
async fn shifts_with_coverage(
    state: &AppState,
    posts: &[post::Model],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<Vec<(shift::Model, ShiftCoverage)>> {
    let shifts = shifts_of(state, posts, from, to).await?;
    let coverage = coverage_of(state, &shifts).await?;
    Ok(shifts.into_iter().zip(coverage).collect())
}

fn check(q: &CoverageQuery) -> ApiResult<()> {
    let mut errors = Violations::new();
    check_window(&mut errors, q.from, q.to, MAX_LIST_SPAN);
    errors.finish()
}

fn hours(s: &shift::Model) -> f64 {
    (s.ends_at - s.starts_at).num_seconds() as f64 / 3600.0
}

/// The coverage figures of every shift overlapping a span (product rule §3), with a
/// summary per post and overall. Finished shifts are read from stored figures, kept up to
/// date as late fixes arrive; running shifts are computed from their fixes so far.
///
/// Each shift's figures are of the whole shift, however little of it overlaps the span.
/// The tallies' `shifts` counts finished shifts only (`met + partial + missed`), as the
/// compliance report does; running ones are counted in `pending`. The whole span is
/// answered at once and as JSON only: `limit`, `cursor`, `format` or any other parameter
/// not listed is refused with 422 naming it.
#[utoipa::path(get, path = "/coverage", tag = "coverage", security(("bearer" = [])), params(CoverageQuery),
    responses((status = 200, description = "Coverage", body = CoverageReport)))]
pub async fn get_coverage(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<CoverageQuery>,
) -> ApiResult<axum::response::Response> {
    user.require_manager()?;
    check(&q)?;
    let posts = post_heads_for(&state, &user, q.post_id, q.unit_id, q.kind).await?;
    let by_id: HashMap<Uuid, &PostHead> = posts.iter().map(|p| (p.id, p)).collect();
    // Everything in scope is named only when that is a narrower question than all posts.
    let all_posts = q.post_id.is_none()
        && q.unit_id.is_none()
        && q.kind.is_none()
        && matches!(user.scope_prefix(), crate::auth::Scope::All);
    let ids: Vec<Uuid> = posts.iter().map(|p| p.id).collect();
    let figures = coverage_json_over(&state, (!all_posts).then_some(&ids[..]), q.from, q.to)
        .await?
        .into_iter()
        .filter(|f| by_id.contains_key(&f.post_id))
        .collect::<Vec<_>>();
    let mut per_post: HashMap<Uuid, Tally> = HashMap::new();
    let mut summary = Tally::default();
    // The stored figures are written out as they were stored (each is the JSON object of a
    // shift's `ShiftCoverage`), after the fields that say which shift and post they are of;
    // parsing and writing them again cost more than all the rest of a whole day's answer.
    let mut body: Vec<u8> =
        Vec::with_capacity(64 + figures.iter().map(|f| f.json.len() + 256).sum::<usize>());
    body.extend_from_slice(b"{\"items\":[");
    // What repeats is written once: each post's fields, and each distinct time (shifts
    // mostly start and end at a few times of day).
    let mut heads: HashMap<Uuid, Vec<u8>> = HashMap::with_capacity(by_id.len());
    let mut times: HashMap<DateTime<Utc>, Vec<u8>> = HashMap::new();
    for (k, f) in figures.iter().enumerate() {
        let p = by_id[&f.post_id];
        let hours = (f.ends_at - f.starts_at).num_seconds() as f64 / 3600.0;
        per_post.entry(p.id).or_default().add(f.status, hours);
        summary.add(f.status, hours);
        if k > 0 {
            body.push(b',');
        }
        // `{"post_id":…,"post_code":…,"kind":…,` `"starts_at":…,"ends_at":…,` + `"shift_id":…}`
        let head = match heads.entry(p.id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut head = serde_json::to_vec(&ItemHead {
                    post_id: p.id,
                    post_code: &p.code,
                    kind: p.kind,
                })
                .map_err(ApiError::internal)?;
                head.pop();
                head.push(b',');
                e.insert(head)
            }
        };
        body.extend_from_slice(head);
        for (name, t) in [
            (&b"\"starts_at\":"[..], f.starts_at),
            (b"\"ends_at\":", f.ends_at),
        ] {
            body.extend_from_slice(name);
            let text = match times.entry(t) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(serde_json::to_vec(&t).map_err(ApiError::internal)?)
                }
            };
            body.extend_from_slice(text);
            body.push(b',');
        }
        body.extend_from_slice(&f.json.as_bytes()[1..]);
    }
    let posts_out: Vec<PostSummary> = posts
        .iter()
        .filter_map(|p| {
            per_post.remove(&p.id).map(|tally| PostSummary {
                post_id: p.id,
                post_code: p.code.clone(),
                kind: p.kind,
                tally,
            })
        })
        .collect();
    body.extend_from_slice(b"],\"posts\":");
    serde_json::to_writer(&mut body, &posts_out).map_err(ApiError::internal)?;
    body.extend_from_slice(b",\"summary\":");
    serde_json::to_writer(&mut body, &summary).map_err(ApiError::internal)?;
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The fields of a `GET /coverage` item that say which post it is (then come the shift's
/// start and end); the rest of the item is the shift's figures ([`ShiftCoverageOut`] describes the whole item).
#[derive(Serialize)]
struct ItemHead<'a> {
    post_id: Uuid,
    post_code: &'a str,
    kind: PostKind,
}

/// The worse of two statuses, for a span with several shifts.
fn worse(a: Option<Status>, b: Status) -> Option<Status> {
    let rank = |s: Status| match s {
        Status::Met => 0,
        Status::Pending => 1,
        Status::Partial => 2,
        Status::Missed => 3,
    };
    Some(match a {
        Some(a) if rank(a) >= rank(b) => a,
        _ => b,
    })
}

/// Map colours by status, so a plain GeoJSON viewer shows the map sensibly.
fn colour(status: Option<Status>) -> &'static str {
    match status {
        Some(Status::Met) => "#2e7d32",
        Some(Status::Partial) => "#f9a825",
        Some(Status::Missed) => "#c62828",
        Some(Status::Pending) => "#1565c0",
        None => "#9e9e9e",
    }
}

fn status_name(status: Option<Status>) -> &'static str {
    status.map_or("unrostered", Status::as_str)
}

/// Intersection of two sorted lists of disjoint intervals.
fn intersect(a: &[[f64; 2]], b: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let lo = a[i][0].max(b[j][0]);
        let hi = a[i][1].min(b[j][1]);
        if hi > lo {
            out.push([lo, hi]);
        }
        if a[i][1] < b[j][1] { i += 1 } else { j += 1 }
    }
    out
}

/// The coverage of the shifts overlapping a span as a GeoJSON FeatureCollection for a map:
/// each route split into covered and uncovered LineStrings (a stretch is covered when any
/// of those shifts covered it), each checkpoint, kiosk and area with its figures and a
/// status (the worst of its shifts; `unrostered` without shifts). Properties carry
/// `stroke`, `fill` and `marker-color` so a plain GeoJSON viewer colours them.
///
/// The figures are those of each overlapping shift whole, not clipped to the span: a span
/// of 02:00–04:00 inside a 00:00–08:00 shift shows the whole eight hours. The collection
/// says so in `figures` (`"whole_shifts"`), with the span asked for (`from`, `to`), and
/// each feature names the time its figures cover (`shifts_from`, `shifts_to`: the earliest
/// start and latest end of its shifts, null without shifts).
#[utoipa::path(get, path = "/coverage/map", tag = "coverage", security(("bearer" = [])), params(CoverageQuery),
    responses((status = 200, description = "A FeatureCollection with `figures: \"whole_shifts\"`, `from` and `to`; each feature's `shifts_from` and `shifts_to` are the time its figures cover", body = Object, content_type = "application/geo+json")))]
pub async fn coverage_map(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<CoverageQuery>,
) -> ApiResult<axum::response::Response> {
    user.require_manager()?;
    check(&q)?;
    let posts = posts_for(&state, &user, q.post_id, q.unit_id, q.kind).await?;
    let rows = shifts_with_coverage(&state, &posts, q.from, q.to).await?;
    let mut by_post: HashMap<Uuid, Vec<(shift::Model, ShiftCoverage)>> = HashMap::new();
    for (s, c) in rows {
        by_post.entry(s.post_id).or_default().push((s, c));
    }
    let mut features = Vec::new();
    for p in &posts {
        let Some(kind) = PostKind::parse(&p.kind) else {
            continue;
        };
        let shifts = by_post.remove(&p.id).unwrap_or_default();
        let status = shifts.iter().fold(None, |acc, (_, c)| worse(acc, c.status));
        let shift_ids: Vec<Uuid> = shifts.iter().map(|(s, _)| s.id).collect();
        let shifts_from = shifts.iter().map(|(s, _)| s.starts_at).min();
        let shifts_to = shifts.iter().map(|(s, _)| s.ends_at).max();
        if kind == PostKind::Route {
            let Some(prepared) = state.prepared_posts_get(p) else {
                continue;
            };
            let length = prepared.length_m().unwrap_or(0.0);
            let uncovered = shifts
                .iter()
                .filter_map(|(_, c)| c.route.as_ref().map(|r| r.uncovered.clone()))
                .reduce(|a, b| intersect(&a, &b))
                .unwrap_or_else(|| vec![[0.0, length]]);
            for (covered, span, positions) in route_pieces(&prepared, &uncovered) {
                let piece_status = if covered {
                    Some(Status::Met)
                } else if shifts.is_empty() {
                    None
                } else {
                    status
                        .filter(|s| *s != Status::Met)
                        .or(Some(Status::Missed))
                };
                features.push(json!({
                    "type": "Feature",
                    "geometry": {"type": "LineString", "coordinates": positions.iter().map(|l| [l.lon, l.lat]).collect::<Vec<_>>()},
                    "properties": {
                        "post_id": p.id, "post_code": p.code, "kind": "route", "covered": covered,
                        "from_m": span[0], "to_m": span[1], "status": status_name(status), "shift_ids": shift_ids,
                        "shifts_from": shifts_from, "shifts_to": shifts_to,
                        "stroke": if covered { "#2e7d32" } else { colour(piece_status) }, "stroke-width": 4,
                    }
                }));
            }
        } else {
            let mut staffed = 0.0;
            let mut present = 0.0;
            let mut total = 0.0;
            for (s, c) in &shifts {
                if let Some(f) = &c.presence {
                    let h = hours(s);
                    staffed += f.staffed_fraction * h;
                    present += f.present_fraction * h;
                    total += h;
                }
            }
            let geometry: Value = serde_json::from_str(&p.geometry).unwrap_or(Value::Null);
            features.push(json!({
                "type": "Feature",
                "geometry": geometry,
                "properties": {
                    "post_id": p.id, "post_code": p.code, "kind": kind.as_str(), "status": status_name(status), "shift_ids": shift_ids,
                    "shifts_from": shifts_from, "shifts_to": shifts_to,
                    "staffed_fraction": (total > 0.0).then(|| staffed / total), "present_fraction": (total > 0.0).then(|| present / total),
                    "marker-color": colour(status), "fill": colour(status), "fill-opacity": 0.35, "stroke": colour(status),
                }
            }));
        }
    }
    let body = json!({
        "type": "FeatureCollection", "figures": "whole_shifts", "from": q.from, "to": q.to,
        "features": features,
    });
    Ok((
        [(header::CONTENT_TYPE, "application/geo+json")],
        axum::Json(body),
    )
        .into_response())
}

/// A post on the live board.
#[derive(Serialize, ToSchema)]
pub struct PostNow {
    /// The post.
    pub post_id: Uuid,
    /// Its code.
    pub post_code: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: PostKind,
    /// Shifts running now.
    pub shift_ids: Vec<Uuid>,
    /// People rostered now (summed over the running shifts).
    pub rostered: u32,
    /// People required now (0 when nobody is rostered).
    pub required: u32,
    /// Members of the running shifts with an eligible fix at the post within the last
    /// `max_gap_s` (§3: only a shift's own members count; a passer-by does not).
    pub present: Vec<Uuid>,
    /// Rostered now and enough people present.
    pub staffed: bool,
    /// The latest eligible fix at the post of a member of its running shifts, if any
    /// recent.
    pub last_fix_at: Option<DateTime<Utc>>,
}

/// A member on duty who has gone silent.
#[derive(Serialize, ToSchema)]
pub struct SilentMember {
    /// The member.
    pub member_id: Uuid,
    /// Their name.
    pub display_name: String,
    /// Their latest fix within the last `MAX_SHIFT` (48 hours), fixes flagged out of the
    /// board left aside; null when there is none.
    pub last_fix_at: Option<DateTime<Utc>>,
    /// Where that fix was.
    pub last_position: Option<Position>,
    /// The shifts they are on now.
    pub shift_ids: Vec<Uuid>,
}

/// The live board.
#[derive(Serialize, ToSchema)]
pub struct StatusNow {
    /// When.
    pub at: DateTime<Utc>,
    /// Every post in scope, by code.
    pub posts: Vec<PostNow>,
    /// Members on duty whose last fix is older than the silence threshold.
    pub silent: Vec<SilentMember>,
}

/// Whether a position is at a post: within the corridor of a route, the radius of a
/// point, or inside an area or within its radius.
pub fn at_post(
    kind: PostKind,
    geometry: &PostGeometry,
    corridor_m: f64,
    radius_m: f64,
    p: LonLat,
) -> bool {
    let positions = geometry.positions();
    let Some(origin) = positions.first().copied() else {
        return false;
    };
    let proj = LocalProjection::new(origin);
    let xy = proj.to_xy(p);
    let near_line = |line: &[LonLat], r: f64| {
        line.windows(2)
            .any(|w| point_segment_distance(xy, proj.to_xy(w[0]), proj.to_xy(w[1])).0 <= r)
    };
    let inside = |ring: &[LonLat]| {
        let pts: Vec<(f64, f64)> = ring.iter().map(|q| proj.to_xy(*q)).collect();
        let mut inside = false;
        for i in 0..pts.len().saturating_sub(1) {
            let (a, b) = (pts[i], pts[i + 1]);
            if (a.1 > xy.1) != (b.1 > xy.1) && xy.0 < (b.0 - a.0) * (xy.1 - a.1) / (b.1 - a.1) + a.0
            {
                inside = !inside;
            }
        }
        inside
    };
    let polygon = |rings: &[Vec<LonLat>]| {
        rings.iter().any(|r| near_line(r, radius_m))
            || (rings.first().is_some_and(|outer| inside(outer))
                && !rings[1..].iter().any(|h| inside(h)))
    };
    match (kind, geometry) {
        (PostKind::Route, g) => g.lines().iter().any(|l| near_line(l, corridor_m)),
        (_, PostGeometry::Point(c)) => {
            let c = proj.to_xy(*c);
            ((xy.0 - c.0).powi(2) + (xy.1 - c.1).powi(2)).sqrt() <= radius_m
        }
        (_, PostGeometry::Polygon(rings)) => polygon(rings),
        (_, PostGeometry::MultiPolygon(polys)) => polys.iter().any(|rings| polygon(rings)),
        _ => false,
    }
}

/// Silent members whose last fix is read for the board, the first by id.
const MAX_SILENT_LOOKUPS: usize = 1000;

/// Whether [`live_board`] reads the last fix of each silent member (one query each): the
/// board and the alerts need it; the post status watcher, which runs after every burst of
/// check-ins and looks only at staffing, does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilentLastFix {
    /// Read it.
    Read,
    /// Leave it out.
    Skip,
}

/// The stored flag values that leave a fix on the board.
fn board_flag_values() -> Vec<i32> {
    (0..Flags::LIMIT)
        .filter(|v| !Flags(*v).excludes_from_board())
        .collect()
}

/// The live state of a set of posts at a moment, as `GET /status/now` answers it, with
/// what the alert rules need besides.
pub struct Live {
    /// The board.
    pub board: StatusNow,
    /// Shifts running now.
    pub running: Vec<shift::Model>,
    /// The people on each running shift.
    pub people: HashMap<Uuid, HashSet<Uuid>>,
    /// Each member's latest fix that the board counts: within the look-back, or for a
    /// silent member within `MAX_SHIFT`; when and where (lat, lon).
    pub last_fix: HashMap<Uuid, (DateTime<Utc>, f64, f64)>,
}

/// Each of these posts now: rostered and required headcount, who is there (a member of a
/// running shift of the post with an eligible fix at the post within the last
/// `max_gap_s`), whether it is staffed; and members on duty whose last fix is older than
/// `silent_after_min`, with that fix. Fixes flagged out of coverage, or with a clock ahead
/// of the server, make nobody present or heard from ([`Flags::excludes_from_board`]).
pub async fn live_board(
    state: &AppState,
    posts: &[post::Model],
    now: DateTime<Utc>,
    silent_last_fix: SilentLastFix,
) -> ApiResult<Live> {
    let settings = settings_of(state);
    let mut running = Vec::new();
    for chunk in posts.chunks(200) {
        running.extend(
            shift::Entity::find()
                .filter(shift::Column::StartsAt.lte(now))
                .filter(shift::Column::EndsAt.gt(now))
                .filter(shift::Column::StartsAt.gt(now - crate::routes::shifts::MAX_SHIFT))
                .filter(shift::Column::PostId.is_in(chunk.iter().map(|p| p.id)))
                .all(&state.db)
                .await?,
        );
    }
    let people = people_on(&state.db, &running).await?;
    let look_back = Duration::seconds(settings.max_gap_s)
        .max(Duration::minutes(state.settings.silent_after_min));
    // Only the fixes of the people on the running shifts: nobody else can be present or
    // silent on the board, and reading everyone's positions would reveal them to it.
    let mut crew: Vec<Uuid> = people.values().flatten().copied().collect();
    crew.sort_unstable();
    crew.dedup();
    let mut recent = Vec::new();
    for chunk in crew.chunks(500) {
        recent.extend(
            fix::Entity::find()
                .filter(fix::Column::MemberId.is_in(chunk.iter().copied()))
                .filter(fix::Column::RecordedAt.gte(now - look_back))
                .filter(fix::Column::RecordedAt.lte(now + Duration::minutes(5)))
                .all(&state.db)
                .await?,
        );
    }
    let recent: Vec<fix::Model> = recent
        .into_iter()
        .filter(|f| f.recorded_at <= now && !Flags(f.flags).excludes_from_board())
        .collect();
    let mut last_fix: HashMap<Uuid, (DateTime<Utc>, f64, f64)> = HashMap::new();
    for f in &recent {
        let e = last_fix
            .entry(f.member_id)
            .or_insert((f.recorded_at, f.lat, f.lon));
        if f.recorded_at > e.0 {
            *e = (f.recorded_at, f.lat, f.lon);
        }
    }
    let present_since = now - Duration::seconds(settings.max_gap_s);
    let eligible: Vec<&fix::Model> = recent
        .iter()
        .filter(|f| {
            f.recorded_at >= present_since && settings.accurate_enough(f.accuracy_m, Flags(f.flags))
        })
        .collect();
    let mut board = Vec::with_capacity(posts.len());
    for p in posts {
        let kind = PostKind::parse(&p.kind).unwrap_or(PostKind::Kiosk);
        let geometry = PostGeometry::from_stored(kind, &p.geometry);
        let mine: Vec<&shift::Model> = running.iter().filter(|s| s.post_id == p.id).collect();
        let rostered: u32 = mine
            .iter()
            .map(|s| people.get(&s.id).map_or(0, |x| x.len() as u32))
            .sum();
        let required = mine
            .iter()
            .map(|s| s.min_headcount.unwrap_or(p.min_headcount).max(1) as u32)
            .max()
            .unwrap_or(0);
        let crew: HashSet<Uuid> = mine
            .iter()
            .flat_map(|s| people.get(&s.id).into_iter().flatten().copied())
            .collect();
        let mut present = HashSet::new();
        let mut last_at: Option<DateTime<Utc>> = None;
        if let Some(g) = &geometry {
            for f in eligible.iter().filter(|f| crew.contains(&f.member_id)) {
                if at_post(
                    kind,
                    g,
                    p.corridor_m.unwrap_or(30.0),
                    p.radius_m.unwrap_or(50.0),
                    LonLat {
                        lon: f.lon,
                        lat: f.lat,
                    },
                ) {
                    present.insert(f.member_id);
                    last_at = Some(last_at.map_or(f.recorded_at, |t| t.max(f.recorded_at)));
                }
            }
        }
        let mut present: Vec<Uuid> = present.into_iter().collect();
        present.sort();
        board.push(PostNow {
            post_id: p.id,
            post_code: p.code.clone(),
            name: p.name.clone(),
            kind,
            shift_ids: mine.iter().map(|s| s.id).collect(),
            rostered,
            required,
            staffed: required > 0 && present.len() as u32 >= required,
            present,
            last_fix_at: last_at,
        });
    }
    let silent_before = now - Duration::minutes(state.settings.silent_after_min);
    let mut on_duty: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for s in &running {
        for m in people.get(&s.id).into_iter().flatten() {
            on_duty.entry(*m).or_default().push(s.id);
        }
    }
    let mut silent_ids: Vec<Uuid> = on_duty
        .keys()
        .filter(|m| last_fix.get(m).is_none_or(|t| t.0 < silent_before))
        .copied()
        .collect();
    silent_ids.sort();
    // A silent member's last fix is older than the look-back by definition; it is what a
    // commander needs to send someone, so it is read for each (bounded in number).
    let lookups = match silent_last_fix {
        SilentLastFix::Read => MAX_SILENT_LOOKUPS,
        SilentLastFix::Skip => 0,
    };
    for m in silent_ids.iter().take(lookups) {
        if last_fix.contains_key(m) {
            continue;
        }
        let found = fix::Entity::find()
            .filter(fix::Column::MemberId.eq(*m))
            .filter(fix::Column::RecordedAt.gte(now - crate::routes::shifts::MAX_SHIFT))
            .filter(fix::Column::RecordedAt.lte(now))
            .filter(fix::Column::Flags.is_in(board_flag_values()))
            .order_by_desc(fix::Column::RecordedAt)
            .one(&state.db)
            .await?;
        if let Some(f) = found {
            last_fix.insert(*m, (f.recorded_at, f.lat, f.lon));
        }
    }
    let names: HashMap<Uuid, String> = member::Entity::find()
        .filter(member::Column::Id.is_in(silent_ids.iter().copied()))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|m| (m.id, m.display_name))
        .collect();
    let mut silent: Vec<SilentMember> = silent_ids
        .into_iter()
        .map(|m| SilentMember {
            member_id: m,
            display_name: names.get(&m).cloned().unwrap_or_default(),
            last_fix_at: last_fix.get(&m).map(|t| t.0),
            last_position: last_fix.get(&m).map(|&(_, lat, lon)| Position { lat, lon }),
            shift_ids: on_duty.remove(&m).unwrap_or_default(),
        })
        .collect();
    silent.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    Ok(Live {
        board: StatusNow {
            at: now,
            posts: board,
            silent,
        },
        running,
        people,
        last_fix,
    })
}

/// Each post in scope now: rostered and required headcount, who is there (an eligible fix
/// at the post within the last `max_gap_s`), whether it is staffed; and members on duty
/// whose last fix is older than `silent_after_min` (default 10 minutes).
#[utoipa::path(get, path = "/status/now", tag = "coverage", security(("bearer" = [])),
    responses((status = 200, description = "The live board", body = StatusNow)))]
pub async fn status_now(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<StatusNow>> {
    user.require_manager()?;
    let posts = posts_for(&state, &user, None, None, None).await?;
    let board = live_board(&state, &posts, Utc::now(), SilentLastFix::Read)
        .await?
        .board;
    // Who is at which post now, and where a silent member was last: positions.
    let shown = board
        .posts
        .iter()
        .flat_map(|p| p.present.iter().copied())
        .chain(
            board
                .silent
                .iter()
                .filter(|m| m.last_position.is_some())
                .map(|m| m.member_id),
        );
    crate::audit::record_live(&state, user.id, shown, "status_now", board.at).await?;
    Ok(axum::Json(board))
}

/// Span of `GET /me/coverage`; both default to now.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MyCoverageQuery {
    /// Shifts that end after this instant (default now; write `+` as `%2B`).
    pub from: Option<DateTime<Utc>>,
    /// Shifts that start at or before this instant (default now); at most 7 days after
    /// `from`.
    pub to: Option<DateTime<Utc>>,
}

/// Longest span of `GET /me/coverage`.
const MY_COVERAGE_SPAN: Duration = Duration::days(7);

/// My coverage.
#[derive(Serialize, ToSchema)]
pub struct MyCoverage {
    /// The caller's shifts overlapping the span, by start, with the figures of each
    /// whole shift so far (a running shift up to now).
    pub items: Vec<ShiftCoverageOut>,
}

/// The coverage of the caller's own shifts (named on them or through their team at the
/// shift's time): by default those running now, as the phone shows "my progress". The
/// figures are the shift's, as `/coverage` gives them (everyone on the shift counts
/// towards them), and only the caller's shifts are answered, whatever the role.
#[utoipa::path(get, path = "/me/coverage", tag = "coverage", security(("bearer" = [])), params(MyCoverageQuery),
    responses((status = 200, description = "The caller's shifts with their coverage", body = MyCoverage)))]
pub async fn my_coverage(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<MyCoverageQuery>,
) -> ApiResult<axum::Json<MyCoverage>> {
    let now = Utc::now();
    let from = q.from.unwrap_or(now);
    let to = q.to.unwrap_or(now);
    let mut errors = Violations::new();
    errors.check(to < from, "to", "must not be before from");
    errors.check(
        to - from > MY_COVERAGE_SPAN,
        "to",
        "must be at most 7 days after from",
    );
    errors.finish()?;
    // `overlapping` wants a span that is not empty: "now" is the instant's second.
    let shifts = shift::Entity::find()
        .filter(overlapping(from, to + Duration::seconds(1)))
        .filter(crate::routes::shifts::shifts_of_member(user.id))
        .order_by_asc(shift::Column::StartsAt)
        .order_by_asc(shift::Column::Id)
        .limit(500)
        .all(&state.db)
        .await?;
    let coverage = coverage_of(&state, &shifts).await?;
    let posts = posts_by_id(&state.db, shifts.iter().map(|s| s.post_id)).await?;
    let items = shifts
        .into_iter()
        .zip(coverage)
        .filter_map(|(s, c)| {
            let p = posts.get(&s.post_id)?;
            Some(ShiftCoverageOut {
                shift_id: s.id,
                post_id: p.id,
                post_code: p.code.clone(),
                kind: PostKind::parse(&p.kind).unwrap_or(PostKind::Kiosk),
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                status: c.status,
                eligible_fixes: c.eligible_fixes,
                excluded: c.excluded,
                route: c.route,
                presence: c.presence,
                evaluated_until: c.evaluated_until,
            })
        })
        .collect();
    Ok(axum::Json(MyCoverage { items }))
}
