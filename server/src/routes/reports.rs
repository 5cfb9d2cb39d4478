//! Reports for commanders: monthly compliance ranking with the plan's consequences, and
//! volunteer squad strength against the standards. Both also as CSV (`format=csv`).

use std::collections::{HashMap, HashSet};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    coverage::coverage_of,
    domain::{compliance, coverage::Status, roster::roster_gaps},
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
    /// Competition rank by score, 1 = best: units with equal scores share a rank (1, 2, 2,
    /// 4). Null when the unit is not ranked: it had no rostered duty that month.
    pub rank: Option<u32>,
    /// Ranked units of the level sharing this rank, this one included: 1 when the unit ties
    /// with no other, 0 when it is not ranked. Counted over the whole district, so a tie
    /// with a unit the caller does not see is shown too.
    pub tied_units: u32,
    /// The unit.
    pub unit_id: Uuid,
    /// Its code.
    pub unit_code: String,
    /// Its name.
    pub unit_name: String,
    /// Hours of finished shifts met, over hours of finished shifts plus hours of roster
    /// gaps on round-the-clock posts; rounded to 4 decimal places, the precision at which
    /// units are compared. Null when the unit is not ranked.
    pub score: Option<f64>,
    /// Finished shifts (`met`, `partial` or `missed`), as `shifts` counts in `GET /coverage`;
    /// shifts not ended by the time of asking are not counted.
    pub shifts: u32,
    /// Of which met.
    pub met: u32,
    /// Hours of finished shifts.
    pub duty_hours: f64,
    /// Hours of roster gaps on 24x7 posts, from each post's first rostered shift onward.
    pub gap_hours: f64,
    /// In the bottom 2 this month: fewer than two ranked units scored strictly below it
    /// and at least one scored strictly above it. A tie across the boundary is named whole,
    /// so more than two units may be in the bottom 2; where all tie, none is.
    pub bottom2: bool,
    /// Consecutive ranked months in the bottom 2 ending with this one (0 to 3); a month not
    /// ranked or not marked ends the run.
    pub months_in_bottom2: u32,
    /// The plan's consequence: `named` (1 month), `yellow_card` (2), `veto` (3).
    pub consequence: Option<String>,
    /// In the top 3 (fewer than three ranked units scored strictly above it, and a score
    /// above 0) this month and last month, and not in the bottom 2 this month.
    pub commended: bool,
}

/// Why a month's marks are not given. `too_few_units`: fewer than 3 units of the level were
/// ranked, so none is in the bottom 2, has a consequence or is commended (ranks are still
/// given).
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum MarksWithheld {
    /// Fewer than 3 units of the level were ranked.
    TooFewUnits,
}

impl MarksWithheld {
    fn as_str(self) -> &'static str {
        match self {
            MarksWithheld::TooFewUnits => "too_few_units",
        }
    }
}

/// A monthly compliance ranking.
#[derive(Serialize, ToSchema)]
pub struct ComplianceReport {
    /// The month.
    pub month: String,
    /// The level ranked.
    pub level: String,
    /// Units of the level ranked this month in the whole district, seen by the caller or not.
    pub ranked_units: u32,
    /// Why no marks are given this month; null when they are.
    pub marks_withheld: Option<MarksWithheld>,
    /// The caller's units by rank, then code; units not ranked last.
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

/// One unit's duty in one month.
#[derive(Clone, Default)]
struct Figures {
    shifts: u32,
    met: u32,
    duty_hours: f64,
    met_hours: f64,
    gap_hours: f64,
}

impl Figures {
    /// `None` without rostered duty: no finished shift and no roster-gap hour.
    fn score(&self) -> Option<f64> {
        let owed = self.duty_hours + self.gap_hours;
        (owed > 0.0).then(|| self.met_hours / owed)
    }
}

/// Start of the first shift ever rostered on each of these posts.
async fn first_shift_starts(
    state: &AppState,
    posts: &[&post::Model],
) -> ApiResult<HashMap<Uuid, DateTime<Utc>>> {
    let mut first = HashMap::new();
    for chunk in posts.chunks(500) {
        let rows: Vec<(Uuid, Option<DateTime<Utc>>)> = shift::Entity::find()
            .select_only()
            .column(shift::Column::PostId)
            .column_as(shift::Column::StartsAt.min(), "first_starts_at")
            .filter(shift::Column::PostId.is_in(chunk.iter().map(|p| p.id)))
            .group_by(shift::Column::PostId)
            .into_tuple()
            .all(&state.db)
            .await?;
        first.extend(rows.into_iter().filter_map(|(id, at)| Some((id, at?))));
    }
    Ok(first)
}

/// Each unit's figures for one month, in the order of `units`.
async fn month_figures(
    state: &AppState,
    units: &[unit::Model],
    all_units: &[unit::Model],
    posts: &[post::Model],
    first_shift: &HashMap<Uuid, DateTime<Utc>>,
    month: NaiveDate,
) -> ApiResult<Vec<Figures>> {
    let (from, to) = month_bounds(state, month)?;
    let now = Utc::now();
    let until = to.min(now);
    if until <= from {
        return Ok(vec![Figures::default(); units.len()]);
    }
    let path_of: HashMap<Uuid, &str> = all_units.iter().map(|u| (u.id, u.path.as_str())).collect();
    let shifts: Vec<shift::Model> = shift::Entity::find()
        .filter(shift::Column::StartsAt.gte(from))
        .filter(shift::Column::StartsAt.lt(to))
        .filter(shift::Column::EndsAt.lte(now))
        .all(&state.db)
        .await?;
    let coverage = coverage_of(state, &shifts).await?;
    let gap_shifts: Vec<shift::Model> = shift::Entity::find()
        .filter(overlapping(from, until))
        .all(&state.db)
        .await?;
    let people = people_on(&state.db, &gap_shifts).await?;
    let mut out = Vec::with_capacity(units.len());
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
        let mut f = Figures::default();
        for (s, c) in shifts.iter().zip(coverage.iter()) {
            if in_unit.contains(&s.post_id) && c.status != Status::Pending {
                let h = (s.ends_at - s.starts_at).num_seconds() as f64 / 3600.0;
                f.shifts += 1;
                f.duty_hours += h;
                if c.status == Status::Met {
                    f.met += 1;
                    f.met_hours += h;
                }
            }
        }
        for p in posts
            .iter()
            .filter(|p| in_unit.contains(&p.id) && p.staffing == Staffing::RoundTheClock.as_str())
        {
            // Before a post's first rostered shift the programme had not begun for it: that
            // time is no gap.
            let Some(begun) = first_shift.get(&p.id).map(|&t| t.max(from)) else {
                continue;
            };
            let spans = crate::routes::rosters::rostered_spans(&gap_shifts, &people, p.id);
            f.gap_hours += roster_gaps(begun, until, p.min_headcount.max(1) as u32, &spans)
                .iter()
                .map(|g| (g.to - g.from).num_seconds() as f64 / 3600.0)
                .sum::<f64>();
        }
        out.push(f);
    }
    Ok(out)
}

/// The ranking of every unit of a level in the district for a month, marked by
/// [`compliance::marks`] on that month and the two before; rows by rank, then code.
async fn rank_level(
    state: &AppState,
    level: Level,
    month: NaiveDate,
) -> ApiResult<(Vec<(ComplianceRow, String)>, compliance::Ranking)> {
    let all_units = unit::Entity::find()
        .order_by_asc(unit::Column::Code)
        .all(&state.db)
        .await?;
    let units: Vec<unit::Model> = all_units
        .iter()
        .filter(|u| level.kinds().contains(&u.kind.as_str()))
        .cloned()
        .collect();
    let posts = post::Entity::find().all(&state.db).await?;
    let round_the_clock: Vec<&post::Model> = posts
        .iter()
        .filter(|p| p.staffing == Staffing::RoundTheClock.as_str())
        .collect();
    let first_shift = first_shift_starts(state, &round_the_clock).await?;
    let figures = |m| month_figures(state, &units, &all_units, &posts, &first_shift, m);
    let this = figures(month).await?;
    let last = figures(previous(month)).await?;
    let before_last = figures(previous(previous(month))).await?;
    let scores: Vec<compliance::Scores> = (0..units.len())
        .map(|i| compliance::Scores {
            month: this[i].score(),
            last: last[i].score(),
            before_last: before_last[i].score(),
        })
        .collect();
    let ranking = compliance::marks(&scores);
    let mut rows: Vec<(ComplianceRow, String)> = units
        .into_iter()
        .zip(this)
        .zip(&ranking.marks)
        .map(|((u, f), m)| {
            let row = ComplianceRow {
                rank: m.rank,
                tied_units: m.tied,
                unit_id: u.id,
                unit_code: u.code,
                unit_name: u.name,
                score: f.score().and_then(compliance::rounded),
                shifts: f.shifts,
                met: f.met,
                duty_hours: f.duty_hours,
                gap_hours: f.gap_hours,
                bottom2: m.bottom2,
                months_in_bottom2: m.months_in_bottom2,
                consequence: m.consequence.map(|c| c.as_str().to_owned()),
                commended: m.commended,
            };
            (row, u.path)
        })
        .collect();
    rows.sort_by(|(a, _), (b, _)| {
        (a.rank.is_none(), a.rank, &a.unit_code).cmp(&(b.rank.is_none(), b.rank, &b.unit_code))
    });
    Ok((rows, ranking))
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
/// gaps on round-the-clock posts counted against them from each post's first rostered
/// shift. One ranking covers every unit of the level in the district; a commander is shown
/// the rows of their subtree, with the same ranks and marks as anyone else.
///
/// The marks (domain.md): equal scores share a rank and their marks. The bottom 2 (fewer
/// than two ranked units strictly below, at least one strictly above; a tie across the
/// boundary is named whole) are `named`; 2 months running a `yellow_card`, 3 a `veto`. The
/// top 3 (fewer than three strictly above, score above 0) two months running are
/// commended, never while in the bottom 2. A month without rostered duty for a unit is not
/// ranked and ends its run; with fewer than 3 units ranked no marks are given
/// (`marks_withheld`).
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
    let (rows, ranking) = rank_level(&state, level, month).await?;
    // Scope picks the rows shown, after the ranking: the marks never depend on who asks.
    let rows: Vec<ComplianceRow> = rows
        .into_iter()
        .filter(|(_, path)| user.sees_path(path))
        .map(|(row, _)| row)
        .collect();
    let marks_withheld = ranking.withheld.map(|w| match w {
        compliance::Withheld::TooFewUnits => MarksWithheld::TooFewUnits,
    });
    let level_name = match level {
        Level::Street => "street",
        Level::PoliceStation => "police_station",
        Level::Community => "community",
    };
    if q.format == Some(Format::Csv) {
        let mut out = String::from(
            "rank,unit_id,unit_code,unit_name,score,shifts,met,duty_hours,gap_hours,bottom2,months_in_bottom2,consequence,commended,tied_units,ranked_units,marks_withheld\n",
        );
        for r in &rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
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
                r.commended,
                r.tied_units,
                ranking.ranked,
                opt(marks_withheld.map(MarksWithheld::as_str)),
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
        ranked_units: ranking.ranked as u32,
        marks_withheld,
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
