//! `/rosters`: generating shifts from a pattern, and the gaps a round-the-clock roster
//! leaves.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, TryInsertResult,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    domain::roster::{self, RosteredSpan, Rotation},
    error::{ApiResult, Violations},
    extract::{ApiJson, ApiQuery},
    routes::{
        posts::{Staffing, post_scope_condition},
        shifts::{MAX_LIST_SPAN, check_window, overlapping, people_on},
    },
    state::AppState,
    store::{post, shift, team, unit},
};

/// Most posts one generation call takes.
pub const MAX_GENERATE_POSTS: usize = 500;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate))
        .routes(routes!(gaps))
}

/// A daily shift template in local time.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateIn {
    /// Start, `HH:MM` local time.
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "08:00")]
    pub start: String,
    /// End, `HH:MM` (`24:00` allowed), not equal to the start; an end not after the start
    /// crosses midnight.
    #[schema(
        pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
        example = "16:00"
    )]
    pub end: String,
}

/// A roster pattern.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternIn {
    /// Daily shift templates, in order; exactly 3 for `four_team_three_shift`.
    #[schema(min_items = 1, max_items = 12)]
    pub shifts: Vec<TemplateIn>,
    /// Teams (inside the caller's scope), in order, none twice; exactly 4 for
    /// `four_team_three_shift`.
    #[schema(min_items = 1)]
    pub teams: Vec<Uuid>,
    /// `same_team`: template i is always worked by teams[i mod n]. `daily_rotation`: on
    /// day d (days since 1970-01-01) template i is worked by teams[(i + d) mod n].
    /// `four_team_three_shift` (四班三运转): 4 teams, 3 templates covering 24 hours; an
    /// 8-day cycle where team k on day d has phase (d + 2k) mod 8: phases 0–1 work
    /// template 0, 2–3 template 1, 4–5 template 2, 6–7 rest.
    #[schema(example = "four_team_three_shift")]
    pub rotation: Rotation,
}

/// What to generate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Posts (inside the caller's scope); every post gets the same pattern.
    #[schema(min_items = 1, max_items = 500)]
    pub post_ids: Vec<Uuid>,
    /// First day, local date, inclusive.
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    /// Last day, inclusive, not before `from`; at most 93 days from `from` to `to`.
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// The pattern.
    pub pattern: PatternIn,
}

/// How many shifts a generation created and skipped (already there).
#[derive(Serialize, ToSchema, Debug)]
pub struct GenerateReport {
    /// New shifts.
    pub created: u64,
    /// Shifts that already existed with the same post, start, end and team.
    pub skipped: u64,
}

/// Generates shifts for posts from daily templates and a team rotation, in the local
/// time of `PATROL_TIMEZONE`. Deterministic: a day's shifts depend only on its date, so
/// running it again, or over an overlapping range, creates nothing twice.
#[utoipa::path(post, path = "/rosters/generate", tag = "rosters", security(("bearer" = [])), request_body = GenerateRequest,
    responses((status = 200, description = "Created and skipped counts", body = GenerateReport)))]
pub async fn generate(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> ApiResult<axum::Json<GenerateReport>> {
    user.require_manager()?;
    let mut errors = Violations::new();
    errors.check(
        req.post_ids.is_empty(),
        "post_ids",
        "name at least one post",
    );
    errors.check(
        req.post_ids.len() > MAX_GENERATE_POSTS,
        "post_ids",
        format!("at most {MAX_GENERATE_POSTS} posts"),
    );
    let wanted: HashSet<Uuid> = req.post_ids.iter().copied().collect();
    let posts: HashSet<Uuid> = post::Entity::find()
        .filter(post::Column::Id.is_in(wanted.iter().copied()))
        .filter(post_scope_condition(&user.scope_prefix()))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    for (i, id) in req.post_ids.iter().enumerate() {
        errors.check(
            !posts.contains(id),
            &format!("post_ids[{i}]"),
            format!("no post {id} in your scope"),
        );
    }
    let teams = team::Entity::find()
        .filter(team::Column::Id.is_in(req.pattern.teams.iter().copied()))
        .all(&state.db)
        .await?;
    let unit_paths: HashMap<Uuid, String> = unit::Entity::find()
        .filter(unit::Column::Id.is_in(teams.iter().map(|t| t.unit_id)))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.path))
        .collect();
    let visible: HashSet<Uuid> = teams
        .iter()
        .filter(|t| {
            unit_paths
                .get(&t.unit_id)
                .is_some_and(|p| user.sees_path(p))
        })
        .map(|t| t.id)
        .collect();
    for (i, id) in req.pattern.teams.iter().enumerate() {
        errors.check(
            !visible.contains(id),
            &format!("pattern.teams[{i}]"),
            format!("no team {id} in your scope"),
        );
    }
    let mut templates = Vec::new();
    for (i, t) in req.pattern.shifts.iter().enumerate() {
        match roster::parse_template(&t.start, &t.end) {
            Ok(template) => templates.push(template),
            Err(e) => errors.add(format!("pattern.shifts[{i}]"), e.to_string()),
        }
    }
    errors.finish()?;
    let tz: chrono_tz::Tz = state
        .settings
        .timezone
        .parse()
        .map_err(crate::error::ApiError::internal)?;
    let planned = roster::generate(
        req.from,
        req.to,
        &templates,
        &req.pattern.teams,
        req.pattern.rotation,
        tz,
    )
    .map_err(|e| crate::error::ApiError::field("pattern", e.to_string()))?;

    let txn = crate::db::begin_write(&state.db).await?;
    let (created, total) = insert_planned(&txn, &req.post_ids, &planned).await?;
    txn.commit().await?;
    state.rosters_changed();
    Ok(axum::Json(GenerateReport {
        created,
        skipped: total - created,
    }))
}

/// Stores planned shifts for each post, skipping those already there (same post, start,
/// end and team); answers (created, planned).
pub async fn insert_planned<C: ConnectionTrait>(
    db: &C,
    post_ids: &[Uuid],
    planned: &[roster::PlannedShift],
) -> ApiResult<(u64, u64)> {
    let now = Utc::now();
    let mut created = 0u64;
    let mut total = 0u64;
    for post_id in post_ids {
        for chunk in planned.chunks(500) {
            total += chunk.len() as u64;
            let rows = chunk.iter().map(|p| shift::ActiveModel {
                id: Set(Uuid::now_v7()),
                post_id: Set(*post_id),
                starts_at: Set(p.starts_at),
                ends_at: Set(p.ends_at),
                team_id: Set(Some(p.team_id)),
                min_headcount: Set(None),
                note: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                team_frozen_at: Set(None),
            });
            let inserted = shift::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([
                    shift::Column::PostId,
                    shift::Column::StartsAt,
                    shift::Column::EndsAt,
                    shift::Column::TeamId,
                ])
                .exec_without_returning(db)
                .await?;
            if let TryInsertResult::Inserted(n) = inserted {
                created += n;
            }
        }
    }
    // Shifts created already begun get the team of their creation.
    let teams: Vec<Uuid> = planned
        .iter()
        .filter(|p| p.starts_at <= now)
        .map(|p| p.team_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    crate::routes::shifts::freeze_team_members(db, &teams, now).await?;
    Ok((created, total))
}

/// The rostered spans of one post's shifts, each with its distinct people, for
/// [`roster::roster_gaps`].
pub fn rostered_spans(
    shifts: &[shift::Model],
    people: &HashMap<Uuid, HashSet<Uuid>>,
    post_id: Uuid,
) -> Vec<RosteredSpan> {
    shifts
        .iter()
        .filter(|s| s.post_id == post_id)
        .map(|s| RosteredSpan {
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            headcount: people.get(&s.id).map_or(0, |x| x.len() as u32),
        })
        .collect()
}

/// Span and post of `GET /rosters/gaps`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GapQuery {
    /// Start (RFC 3339; write `+` as `%2B`).
    pub from: DateTime<Utc>,
    /// End; at most 62 days after `from`.
    pub to: DateTime<Utc>,
    /// Only this post.
    pub post_id: Option<Uuid>,
}

/// A span in which a round-the-clock post is rostered below its requirement.
#[derive(Serialize, ToSchema, Debug)]
pub struct RosterGap {
    /// The post.
    pub post_id: Uuid,
    /// Its code.
    pub post_code: String,
    /// Start of the span.
    pub from: DateTime<Utc>,
    /// End of the span.
    pub to: DateTime<Utc>,
    /// People rostered in the span (the sum over overlapping shifts).
    pub rostered: u32,
    /// People required (the post's `min_headcount`).
    pub required: u32,
    /// The gap lies after the moment of asking: time not rostered yet, a planning task
    /// rather than a failure. False for a past gap. A gap running through that moment is
    /// answered as two, split at it.
    pub upcoming: bool,
}

/// Roster gaps.
#[derive(Serialize, ToSchema)]
pub struct RosterGaps {
    /// Gaps by post code, then time.
    pub items: Vec<RosterGap>,
}

/// For `24x7` posts the caller may see, every span in which fewer people are rostered
/// than the post's `min_headcount` (a planning failure, apart from whether anyone came).
/// The rostered headcount of a moment is the sum over the shifts covering it of the
/// people on each (team members and named members, once each). Gaps are split at the
/// moment of asking: those before it (`upcoming: false`) went unrostered, those after it
/// (`upcoming: true`) are not rostered yet; the compliance ranking counts past gaps only.
#[utoipa::path(get, path = "/rosters/gaps", tag = "rosters", security(("bearer" = [])), params(GapQuery),
    responses((status = 200, description = "Gaps", body = RosterGaps)))]
pub async fn gaps(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<GapQuery>,
) -> ApiResult<axum::Json<RosterGaps>> {
    user.require_manager()?;
    let mut errors = Violations::new();
    check_window(&mut errors, q.from, q.to, MAX_LIST_SPAN);
    errors.finish()?;
    let mut posts_q = post::Entity::find()
        .filter(post::Column::Staffing.eq(Staffing::RoundTheClock.as_str()))
        .filter(post_scope_condition(&user.scope_prefix()))
        .order_by_asc(post::Column::Code);
    if let Some(p) = q.post_id {
        posts_q = posts_q.filter(post::Column::Id.eq(p));
    }
    let posts = posts_q.all(&state.db).await?;
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 0);
    let mut items = Vec::new();
    for chunk in posts.chunks(200) {
        let shifts = shift::Entity::find()
            .filter(overlapping(q.from, q.to))
            .filter(shift::Column::PostId.is_in(chunk.iter().map(|p| p.id)))
            .all(&state.db)
            .await?;
        let people = people_on(&state.db, &shifts).await?;
        let mut by_post: HashMap<Uuid, Vec<RosteredSpan>> = HashMap::new();
        for s in &shifts {
            by_post.entry(s.post_id).or_default().push(RosteredSpan {
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                headcount: people.get(&s.id).map_or(0, |p| p.len() as u32),
            });
        }
        for p in chunk {
            let spans = by_post.remove(&p.id).unwrap_or_default();
            let required = p.min_headcount.max(0) as u32;
            for g in roster::roster_gaps(q.from, q.to, required, &spans) {
                let pieces = if g.from < now && now < g.to {
                    vec![(g.from, now, false), (now, g.to, true)]
                } else {
                    vec![(g.from, g.to, g.from >= now)]
                };
                for (from, to, upcoming) in pieces {
                    items.push(RosterGap {
                        post_id: p.id,
                        post_code: p.code.clone(),
                        from,
                        to,
                        rostered: g.rostered,
                        required: g.required,
                        upcoming,
                    });
                }
            }
        }
    }
    Ok(axum::Json(RosterGaps { items }))
}
