//! Reports for commanders: monthly compliance ranking with the plan's consequences, and
//! volunteer squad strength against the standards. Both also as CSV (`format=csv`).

use std::collections::{HashMap, HashSet};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    coverage::coverage_of,
    domain::{coverage::Status, roster::roster_gaps},
    error::{ApiError, ApiResult},
    extract::ApiQuery,
    routes::{
        posts::Staffing,
        shifts::{overlapping, people_on},
    },
    state::AppState,
    store::{member, post, shift, team, team_member, unit},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(compliance))
        .routes(routes!(volunteers))
}

/// Output format of a report.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON (default).
    #[default]
    Json,
    /// CSV with a header row.
    Csv,
}

/// Which units a compliance report ranks.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Streets (the default).
    #[default]
    Street,
    /// Police stations.
    PoliceStation,
    /// Communities and villages.
    Community,
}

impl Level {
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Level::Street => &["street"],
            Level::PoliceStation => &["police_station"],
            Level::Community => &["community", "village"],
        }
    }
}

/// Query of `GET /reports/compliance`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ComplianceQuery {
    /// The month, `YYYY-MM`, in `PATROL_TIMEZONE`.
    pub month: String,
    /// `street` (default), `police_station` or `community`.
    #[param(value_type = Option<String>)]
    pub level: Option<Level>,
    /// `json` (default) or `csv`.
    #[param(value_type = Option<String>)]
    pub format: Option<Format>,
}

/// One unit's line in the ranking.
#[derive(Serialize, ToSchema, Clone)]
pub struct ComplianceRow {
    /// Rank by score, 1 = best; null when the unit had no duty that month.
    pub rank: Option<usize>,
    /// The unit.
    pub unit_id: Uuid,
    /// Its code.
    pub unit_code: String,
    /// Its name.
    pub unit_name: String,
    /// Hours of finished shifts met, over hours of finished shifts plus hours of roster
    /// gaps on round-the-clock posts (null without duty).
    pub score: Option<f64>,
    /// Finished shifts (`met`, `partial` or `missed`), as `shifts` counts in `GET /coverage`;
    /// shifts not ended by the time of asking are not counted.
    pub shifts: u32,
    /// Of which met.
    pub met: u32,
    /// Hours of finished shifts.
    pub duty_hours: f64,
    /// Hours of roster gaps on 24x7 posts.
    pub gap_hours: f64,
    /// In the bottom 2 this month.
    pub bottom2: bool,
    /// Months running in the bottom 2, this one included.
    pub months_in_bottom2: u32,
    /// The plan's consequence: `named` (1 month), `yellow_card` (2), `veto` (3 or more).
    pub consequence: Option<String>,
    /// In the top 3 this month and last month.
    pub commended: bool,
}

/// A monthly compliance ranking.
#[derive(Serialize, ToSchema)]
pub struct ComplianceReport {
    /// The month.
    pub month: String,
    /// The level ranked.
    pub level: String,
    /// Units by rank; units without duty last.
    pub items: Vec<ComplianceRow>,
}

fn month_bounds(state: &AppState, month: NaiveDate) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let tz: chrono_tz::Tz = state
        .settings
        .timezone
        .parse()
        .map_err(ApiError::internal)?;
    let next = if month.month() == 12 {
        NaiveDate::from_ymd_opt(month.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(month.year(), month.month() + 1, 1)
    }
    .ok_or_else(|| ApiError::field("month", "is out of range"))?;
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| ApiError::field("month", "has no local midnight"))
    };
    Ok((at(month)?, at(next)?))
}

fn previous(month: NaiveDate) -> NaiveDate {
    if month.month() == 1 {
        NaiveDate::from_ymd_opt(month.year() - 1, 12, 1).unwrap_or(month)
    } else {
        NaiveDate::from_ymd_opt(month.year(), month.month() - 1, 1).unwrap_or(month)
    }
}

/// Scores of the units for one month: (rank order, rows).
async fn rank_month(
    state: &AppState,
    units: &[unit::Model],
    all_units: &[unit::Model],
    month: NaiveDate,
) -> ApiResult<Vec<ComplianceRow>> {
    let (from, to) = month_bounds(state, month)?;
    let now = Utc::now();
    let until = to.min(now);
    let posts = post::Entity::find().all(&state.db).await?;
    let path_of: HashMap<Uuid, &str> = all_units.iter().map(|u| (u.id, u.path.as_str())).collect();
    let mut rows = Vec::new();
    let shifts: Vec<shift::Model> = if until > from {
        shift::Entity::find()
            .filter(shift::Column::StartsAt.gte(from))
            .filter(shift::Column::StartsAt.lt(to))
            .filter(shift::Column::EndsAt.lte(now))
            .all(&state.db)
            .await?
    } else {
        Vec::new()
    };
    let coverage = coverage_of(state, &shifts).await?;
    let gap_shifts: Vec<shift::Model> = if until > from {
        shift::Entity::find()
            .filter(overlapping(from, until))
            .all(&state.db)
            .await?
    } else {
        Vec::new()
    };
    let people = people_on(&state.db, &gap_shifts).await?;
    for u in units {
        let in_unit: HashSet<Uuid> = posts
            .iter()
            .filter(|p| {
                path_of
                    .get(&p.unit_id)
                    .is_some_and(|path| path.starts_with(&u.path))
            })
            .map(|p| p.id)
            .collect();
        let (mut n, mut met, mut duty, mut met_hours) = (0u32, 0u32, 0.0, 0.0);
        for (s, c) in shifts.iter().zip(coverage.iter()) {
            if in_unit.contains(&s.post_id) && c.status != Status::Pending {
                let h = (s.ends_at - s.starts_at).num_seconds() as f64 / 3600.0;
                n += 1;
                duty += h;
                if c.status == Status::Met {
                    met += 1;
                    met_hours += h;
                }
            }
        }
        let mut gap_hours = 0.0;
        if until > from {
            for p in posts.iter().filter(|p| {
                in_unit.contains(&p.id) && p.staffing == Staffing::RoundTheClock.as_str()
            }) {
                let spans = crate::routes::rosters::rostered_spans(&gap_shifts, &people, p.id);
                gap_hours += roster_gaps(from, until, p.min_headcount.max(1) as u32, &spans)
                    .iter()
                    .map(|g| (g.to - g.from).num_seconds() as f64 / 3600.0)
                    .sum::<f64>();
            }
        }
        let score = (duty + gap_hours > 0.0).then(|| met_hours / (duty + gap_hours));
        rows.push(ComplianceRow {
            rank: None,
            unit_id: u.id,
            unit_code: u.code.clone(),
            unit_name: u.name.clone(),
            score,
            shifts: n,
            met,
            duty_hours: duty,
            gap_hours,
            bottom2: false,
            months_in_bottom2: 0,
            consequence: None,
            commended: false,
        });
    }
    rows.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) => y.total_cmp(&x).then_with(|| a.unit_code.cmp(&b.unit_code)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.unit_code.cmp(&b.unit_code),
    });
    let ranked = rows.iter().filter(|r| r.score.is_some()).count();
    for (i, r) in rows.iter_mut().enumerate() {
        if r.score.is_some() {
            r.rank = Some(i + 1);
            r.bottom2 = ranked > 2 && i + 2 >= ranked;
        }
    }
    Ok(rows)
}

/// A text cell of a CSV report. A cell that a spreadsheet would read as a formula (it
/// begins with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading apostrophe,
/// so that a unit or team named `=HYPERLINK(...)` is shown, never run.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn csv(filename: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Units of a level ranked by the month's coverage: the share of duty hours met, with roster
/// gaps on round-the-clock posts counted against them. The bottom 2 are named; 2 months
/// running in the bottom 2 is a yellow card, 3 a veto; the top 3 two months running are
/// commended (domain.md). Commanders see the units in their subtree.
#[utoipa::path(get, path = "/reports/compliance", tag = "reports", security(("bearer" = [])), params(ComplianceQuery),
    responses((status = 200, description = "The ranking (JSON, or CSV with format=csv)", body = ComplianceReport)))]
pub async fn compliance(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ComplianceQuery>,
) -> ApiResult<Response> {
    user.require_manager()?;
    // Exactly `YYYY-MM`: chrono alone would read `2026-1` as January.
    let well_formed = q.month.len() == 7
        && q.month.bytes().enumerate().all(|(i, b)| match i {
            4 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let month = NaiveDate::parse_from_str(&format!("{}-01", q.month), "%Y-%m-%d")
        .ok()
        .filter(|_| well_formed)
        .ok_or_else(|| ApiError::field("month", "must be YYYY-MM, e.g. 2026-01"))?;
    let level = q.level.unwrap_or_default();
    let all_units = unit::Entity::find()
        .order_by_asc(unit::Column::Code)
        .all(&state.db)
        .await?;
    let units: Vec<unit::Model> = all_units
        .iter()
        .filter(|u| level.kinds().contains(&u.kind.as_str()) && user.sees_path(&u.path))
        .cloned()
        .collect();
    let mut rows = rank_month(&state, &units, &all_units, month).await?;
    // Months running in the bottom 2, and the top 3 last month.
    let last = rank_month(&state, &units, &all_units, previous(month)).await?;
    let before = rank_month(&state, &units, &all_units, previous(previous(month))).await?;
    let bottom =
        |rows: &[ComplianceRow], id: Uuid| rows.iter().any(|r| r.unit_id == id && r.bottom2);
    let top3 = |rows: &[ComplianceRow], id: Uuid| {
        rows.iter()
            .any(|r| r.unit_id == id && r.rank.is_some_and(|k| k <= 3))
    };
    for r in &mut rows {
        if r.bottom2 {
            r.months_in_bottom2 = 1
                + u32::from(bottom(&last, r.unit_id))
                + u32::from(bottom(&last, r.unit_id) && bottom(&before, r.unit_id));
            r.consequence = Some(
                match r.months_in_bottom2 {
                    1 => "named",
                    2 => "yellow_card",
                    _ => "veto",
                }
                .to_owned(),
            );
        }
        r.commended = r.rank.is_some_and(|k| k <= 3) && top3(&last, r.unit_id);
    }
    let level_name = match level {
        Level::Street => "street",
        Level::PoliceStation => "police_station",
        Level::Community => "community",
    };
    if q.format == Some(Format::Csv) {
        let mut out = String::from(
            "rank,unit_id,unit_code,unit_name,score,shifts,met,duty_hours,gap_hours,bottom2,months_in_bottom2,consequence,commended\n",
        );
        for r in &rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                opt(r.rank),
                r.unit_id,
                csv_field(&r.unit_code),
                csv_field(&r.unit_name),
                opt(r.score),
                r.shifts,
                r.met,
                r.duty_hours,
                r.gap_hours,
                r.bottom2,
                r.months_in_bottom2,
                opt(r.consequence.clone()),
                r.commended
            ));
        }
        return Ok(csv(
            &format!("compliance-{}-{level_name}.csv", q.month),
            out,
        ));
    }
    Ok(axum::Json(ComplianceReport {
        month: q.month,
        level: level_name.to_owned(),
        items: rows,
    })
    .into_response())
}

/// Query of `GET /reports/volunteers`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolunteerQuery {
    /// `json` (default) or `csv`.
    #[param(value_type = Option<String>)]
    pub format: Option<Format>,
}

/// One volunteer squad against its standard.
#[derive(Serialize, ToSchema)]
pub struct SquadRow {
    /// The squad (a team of kind `volunteer_squad`).
    pub team_id: Uuid,
    /// Its code.
    pub team_code: String,
    /// Its name.
    pub team_name: String,
    /// Its unit.
    pub unit_id: Uuid,
    /// The unit's code.
    pub unit_code: String,
    /// The unit's name.
    pub unit_name: String,
    /// The unit's kind.
    pub unit_kind: String,
    /// Active members.
    pub active_members: u32,
    /// The standard: 15 for a village or community, 5 for a villager group or compound.
    pub standard: u32,
    /// Below the standard.
    pub below_standard: bool,
}

/// Volunteer strength.
#[derive(Serialize, ToSchema)]
pub struct VolunteerReport {
    /// Squads by code.
    pub items: Vec<SquadRow>,
    /// Squads below their standard.
    pub below_standard: u32,
    /// Distinct active members of the squads in scope.
    pub total_volunteers: u32,
    /// The programme's goal of 10,000, which is the district's: given at district scope (an
    /// admin, or a commander of a district), null below it, where no goal is set.
    pub goal: Option<u32>,
    /// total_volunteers / goal; null without a goal.
    pub share_of_goal: Option<f64>,
}

/// The district's goal of volunteers.
pub const VOLUNTEER_GOAL: u32 = 10_000;

/// Every volunteer squad in scope with its active members against the standard (at least
/// 15 per village or community squad, at least 5 per villager group or compound squad),
/// and the total; at district scope against the district's goal of 10,000, below it with
/// `goal` and `share_of_goal` null (a street has no share of the district's goal).
///
/// The CSV has one row per squad, then an empty line and a summary table with its own
/// header: `squads,below_standard,total_volunteers,goal,share_of_goal` (the goal fields
/// empty without a goal).
#[utoipa::path(get, path = "/reports/volunteers", tag = "reports", security(("bearer" = [])), params(VolunteerQuery),
    responses((status = 200, description = "Squads (JSON, or CSV with format=csv: the squads, an empty line, then the totals)", body = VolunteerReport)))]
pub async fn volunteers(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<VolunteerQuery>,
) -> ApiResult<Response> {
    user.require_manager()?;
    let units: HashMap<Uuid, unit::Model> = unit::Entity::find()
        .all(&state.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    let squads: Vec<team::Model> = team::Entity::find()
        .filter(team::Column::Kind.eq("volunteer_squad"))
        .order_by_asc(team::Column::Code)
        .all(&state.db)
        .await?
        .into_iter()
        .filter(|t| {
            units
                .get(&t.unit_id)
                .is_some_and(|u| user.sees_path(&u.path))
        })
        .collect();
    let memberships = team_member::Entity::find()
        .filter(team_member::Column::TeamId.is_in(squads.iter().map(|t| t.id)))
        .all(&state.db)
        .await?;
    let active: HashSet<Uuid> = member::Entity::find()
        .filter(member::Column::Active.eq(true))
        .filter(member::Column::Id.is_in(memberships.iter().map(|m| m.member_id)))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut everyone = HashSet::new();
    let mut items = Vec::with_capacity(squads.len());
    for t in &squads {
        let members: Vec<Uuid> = memberships
            .iter()
            .filter(|m| m.team_id == t.id && active.contains(&m.member_id))
            .map(|m| m.member_id)
            .collect();
        everyone.extend(members.iter().copied());
        let unit = units.get(&t.unit_id);
        let unit_kind = unit.map(|u| u.kind.clone()).unwrap_or_default();
        let standard = if unit_kind == "village" || unit_kind == "community" {
            15
        } else {
            5
        };
        items.push(SquadRow {
            team_id: t.id,
            team_code: t.code.clone(),
            team_name: t.name.clone(),
            unit_id: t.unit_id,
            unit_code: unit.map(|u| u.code.clone()).unwrap_or_default(),
            unit_name: unit.map(|u| u.name.clone()).unwrap_or_default(),
            unit_kind,
            active_members: members.len() as u32,
            standard,
            below_standard: (members.len() as u32) < standard,
        });
    }
    let total = everyone.len() as u32;
    // The goal is the district's: a street's or a community's share of it means nothing.
    let district_scope = matches!(user.scope_prefix(), crate::auth::Scope::All)
        || user
            .unit_id
            .and_then(|u| units.get(&u))
            .is_some_and(|u| u.kind == "district");
    let goal = district_scope.then_some(VOLUNTEER_GOAL);
    let report = VolunteerReport {
        below_standard: items.iter().filter(|i| i.below_standard).count() as u32,
        items,
        total_volunteers: total,
        goal,
        share_of_goal: goal.map(|g| f64::from(total) / f64::from(g)),
    };
    if q.format == Some(Format::Csv) {
        let mut out = String::from(
            "team_id,team_code,team_name,unit_id,unit_code,unit_name,unit_kind,active_members,standard,below_standard\n",
        );
        for r in &report.items {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                r.team_id,
                csv_field(&r.team_code),
                csv_field(&r.team_name),
                r.unit_id,
                csv_field(&r.unit_code),
                csv_field(&r.unit_name),
                r.unit_kind,
                r.active_members,
                r.standard,
                r.below_standard
            ));
        }
        out.push_str("\nsquads,below_standard,total_volunteers,goal,share_of_goal\n");
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            report.items.len(),
            report.below_standard,
            report.total_volunteers,
            opt(report.goal),
            opt(report.share_of_goal)
        ));
        return Ok(csv("volunteers.csv", out));
    }
    Ok(axum::Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        assert_eq!(csv_field("PS01"), "PS01");
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("雁塔"), "雁塔");
    }
}
