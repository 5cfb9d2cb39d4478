//! Roster patterns and roster gaps.
//!
//! A pattern is a list of shift templates (local wall-clock times, "24:00" allowed as an
//! end, an end not after the start crossing midnight), an ordered list of teams and a
//! rotation. [`generate`] expands it over an inclusive date range into concrete UTC shifts.
//!
//! Assignments depend only on the calendar date through `d`, the number of days since
//! 1970-01-01 taken with `rem_euclid`, never on where the date sits in the requested range:
//! the API skips shifts that already exist, so generating overlapping ranges twice must yield
//! the very same shifts for the days they share.
//!
//! Rotations (`i` is the template index, `n` the number of teams):
//! - `same_team`: template `i` is always staffed by `teams[i % n]`.
//! - `daily_rotation`: template `i` is staffed by `teams[(i + d) rem n]`.
//! - `four_team_three_shift` (四班三运转): exactly 4 teams and 3 templates that together
//!   cover the 24 hours once. An 8-day cycle: team `k` (0..4, in the order given) is in phase
//!   `p = (d + 2k) rem 8` and works template 0 for `p ∈ {0, 1}`, template 1 for `p ∈ {2, 3}`,
//!   template 2 for `p ∈ {4, 5}` and rests for `p ∈ {6, 7}`. Every team thus works two days
//!   on each template in turn and then rests two days, and on every day each template has
//!   exactly one team while one team rests. With teams A, B, C, D, from a day with
//!   `d rem 8 == 0` (e.g. 2026-01-03), "T0 T1 T2 | rest":
//!
//!   ```text
//!   day 0  A B C | D      day 4  C D A | B
//!   day 1  A B C | D      day 5  C D A | B
//!   day 2  D A B | C      day 6  B C D | A
//!   day 3  D A B | C      day 7  B C D | A
//!   ```
//!
//! Daylight saving time: a shift starts at its date plus the start time in the configured zone
//! and ends at the same or the next date plus the end time. An ambiguous local time (fall back)
//! resolves to its earliest instant, a non-existent one (spring forward) to the first instant
//! after the gap, so 02:30 on the Berlin spring-forward night is 03:00 CEST = 01:00 UTC.
//! Because the end of one template and the start of the next resolve the same way, templates
//! that tile the wall clock also tile real time; a shift across a transition is just one hour
//! shorter or longer. A shift lying wholly inside a spring-forward gap lasts no real time and
//! is left out.
//!
//! [`roster_gaps`] finds where a post is understaffed: a sweep line over the rostered shifts.

use std::cmp::Ordering;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

/// Upper bound on templates per pattern, so one request stays a reasonable size.
pub const MAX_TEMPLATES: usize = 12;

/// Upper bound on the days of one generation request (about a quarter).
pub const MAX_RANGE_DAYS: i64 = 93;

const SECONDS_PER_DAY: u32 = 86_400;

/// Why a pattern or a generation request is refused; messages name the request field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatternError {
    /// A start time that is not "HH:MM" within 00:00–23:59.
    #[error("start must be \"HH:MM\" between 00:00 and 23:59, got {value:?}")]
    InvalidStart {
        /// The rejected text.
        value: String,
    },
    /// An end time that is not "HH:MM" within 00:00–24:00.
    #[error("end must be \"HH:MM\" between 00:00 and 24:00, got {value:?}")]
    InvalidEnd {
        /// The rejected text.
        value: String,
    },
    /// End equal to start: neither a same-day shift nor a 24-hour one ("00:00"–"24:00" is).
    #[error("end must differ from start, both are {time}: a shift cannot last zero time")]
    ZeroLength {
        /// The common time, "HH:MM".
        time: String,
    },
    /// Wraps a template error with its position so the 422 names the exact field.
    #[error("pattern.shifts[{index}].{error}")]
    AtShift {
        /// Index of the template in `pattern.shifts`.
        index: usize,
        /// What is wrong with it.
        error: Box<PatternError>,
    },
    /// A pattern without templates would generate nothing.
    #[error("pattern.shifts must contain at least 1 shift")]
    NoTemplates,
    /// More templates than [`MAX_TEMPLATES`].
    #[error("pattern.shifts must contain at most {MAX_TEMPLATES} shifts, got {count}")]
    TooManyTemplates {
        /// Number of templates given.
        count: usize,
    },
    /// A pattern without teams cannot staff anything.
    #[error("pattern.teams must contain at least 1 team")]
    NoTeams,
    /// The same team twice would make a rotation staff two shifts with one team.
    #[error("pattern.teams[{index}] repeats team {team}")]
    DuplicateTeam {
        /// Index of the second occurrence.
        index: usize,
        /// The repeated team.
        team: Uuid,
    },
    /// Four-team three-shift needs exactly four teams.
    #[error("pattern.teams must contain exactly 4 teams for four_team_three_shift, got {count}")]
    FourTeamsRequired {
        /// Number of teams given.
        count: usize,
    },
    /// Four-team three-shift needs exactly three templates.
    #[error("pattern.shifts must contain exactly 3 shifts for four_team_three_shift, got {count}")]
    ThreeShiftsRequired {
        /// Number of templates given.
        count: usize,
    },
    /// The three templates leave part of the day unstaffed.
    #[error(
        "pattern.shifts must cover the 24 hours exactly once for four_team_three_shift, \
         but {from}–{to} is not covered"
    )]
    ShiftsLeaveGap {
        /// Start of the uncovered time of day, "HH:MM".
        from: String,
        /// End of the uncovered time of day, "HH:MM".
        to: String,
    },
    /// The three templates staff part of the day twice.
    #[error(
        "pattern.shifts must cover the 24 hours exactly once for four_team_three_shift, \
         but {from}–{to} is covered more than once"
    )]
    ShiftsOverlap {
        /// Start of the doubly covered time of day, "HH:MM".
        from: String,
        /// End of the doubly covered time of day, "HH:MM".
        to: String,
    },
    /// An inverted range is a client mistake, not an empty roster.
    #[error("to ({to}) must not be before from ({from})")]
    ToBeforeFrom {
        /// First day requested.
        from: NaiveDate,
        /// Last day requested.
        to: NaiveDate,
    },
    /// More than [`MAX_RANGE_DAYS`] days in one request.
    #[error("from..to spans {days} days, at most {MAX_RANGE_DAYS} are allowed")]
    RangeTooLong {
        /// Number of days in the inclusive range.
        days: i64,
    },
    /// Dates so far off that local times cannot be represented.
    #[error("{date} is outside the supported range of dates")]
    DateOutOfRange {
        /// The offending day.
        date: NaiveDate,
    },
}

/// How teams are assigned to templates day by day.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// Template `i` always goes to `teams[i % n]`.
    SameTeam,
    /// Template `i` goes to `teams[(i + d) rem n]`, so the teams move one template a day.
    DailyRotation,
    /// 四班三运转: four teams, three 8-hour-ish templates, an 8-day cycle (see module doc).
    FourTeamThreeShift,
}

/// End of a template; "24:00" needs its own value because `NaiveTime` stops at 23:59:59.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TemplateEnd {
    /// Ends at this time; on the next day when it is not after the start.
    At(NaiveTime),
    /// Ends at midnight at the close of the day ("24:00", or "00:00" after a later start).
    Midnight,
}

/// One shift of a pattern in local wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShiftTemplate {
    /// Local start time.
    pub start: NaiveTime,
    /// Local end time; a template whose end is not after its start crosses midnight.
    pub end: TemplateEnd,
}

impl ShiftTemplate {
    /// Whether the shift ends on the next day; "24:00" counts, as midnight is the next date.
    pub fn crosses_midnight(&self) -> bool {
        match self.end {
            TemplateEnd::At(end) => end <= self.start,
            TemplateEnd::Midnight => true,
        }
    }

    /// Nominal length on the wall clock; real length differs by the DST shift on DST nights.
    pub fn nominal_length(&self) -> Duration {
        let start = Duration::seconds(i64::from(self.start.num_seconds_from_midnight()));
        let end = match self.end {
            TemplateEnd::At(end) => Duration::seconds(i64::from(end.num_seconds_from_midnight())),
            TemplateEnd::Midnight => Duration::days(1),
        };
        if self.crosses_midnight() && end <= start {
            end + Duration::days(1) - start
        } else {
            end - start
        }
    }

    /// Start and end as seconds after the start day's midnight, for coverage arithmetic.
    fn seconds_span(&self) -> (u32, u32) {
        let start = self.start.num_seconds_from_midnight();
        let length = u32::try_from(self.nominal_length().num_seconds()).unwrap_or(0);
        (start, start + length)
    }
}

/// Parses "HH:MM" strictly: two digits each, so "8:00" or "08:00:00" are rejected early.
fn parse_hh_mm(text: &str) -> Option<(u32, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return None;
    }
    let digit = |b: u8| b.is_ascii_digit().then(|| u32::from(b - b'0'));
    let hours = digit(bytes[0])? * 10 + digit(bytes[1])?;
    let minutes = digit(bytes[3])? * 10 + digit(bytes[4])?;
    (minutes < 60).then_some((hours, minutes))
}

/// Parses one template from "HH:MM" texts; errors name `start`/`end` but not the index.
pub fn parse_template(start: &str, end: &str) -> Result<ShiftTemplate, PatternError> {
    let start_time = parse_hh_mm(start)
        .and_then(|(h, m)| NaiveTime::from_hms_opt(h, m, 0))
        .ok_or_else(|| PatternError::InvalidStart {
            value: start.to_owned(),
        })?;
    let end_value = match parse_hh_mm(end) {
        Some((24, 0)) => TemplateEnd::Midnight,
        Some((h, m)) => match NaiveTime::from_hms_opt(h, m, 0) {
            Some(t) if t == start_time => {
                return Err(PatternError::ZeroLength {
                    time: hh_mm(start_time),
                });
            }
            // One spelling of midnight keeps equal templates equal.
            Some(t) if t == NaiveTime::MIN => TemplateEnd::Midnight,
            Some(t) => TemplateEnd::At(t),
            None => {
                return Err(PatternError::InvalidEnd {
                    value: end.to_owned(),
                });
            }
        },
        None => {
            return Err(PatternError::InvalidEnd {
                value: end.to_owned(),
            });
        }
    };
    Ok(ShiftTemplate {
        start: start_time,
        end: end_value,
    })
}

/// Parses `pattern.shifts` in order, prefixing errors with the index of the bad entry.
pub fn parse_templates<'a>(
    shifts: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<ShiftTemplate>, PatternError> {
    shifts
        .into_iter()
        .enumerate()
        .map(|(index, (start, end))| {
            parse_template(start, end).map_err(|error| PatternError::AtShift {
                index,
                error: Box::new(error),
            })
        })
        .collect()
}

/// Formats a time of day for messages; whole minutes are all the API accepts.
fn hh_mm(time: NaiveTime) -> String {
    time.format("%H:%M").to_string()
}

/// Formats seconds since midnight (possibly 86 400) as "HH:MM" for coverage messages.
fn seconds_hh_mm(seconds: u32) -> String {
    if seconds == SECONDS_PER_DAY {
        return "24:00".to_owned();
    }
    let seconds = seconds % SECONDS_PER_DAY;
    format!("{:02}:{:02}", seconds / 3600, seconds / 60 % 60)
}

/// Checks a whole pattern; [`generate`] calls it too, so the API may call it up front.
pub fn validate_pattern(
    templates: &[ShiftTemplate],
    teams: &[Uuid],
    rotation: Rotation,
) -> Result<(), PatternError> {
    if templates.is_empty() {
        return Err(PatternError::NoTemplates);
    }
    if templates.len() > MAX_TEMPLATES {
        return Err(PatternError::TooManyTemplates {
            count: templates.len(),
        });
    }
    // Public fields allow building a template the parser would refuse.
    for (index, template) in templates.iter().enumerate() {
        if template.end == TemplateEnd::At(template.start) {
            return Err(PatternError::AtShift {
                index,
                error: Box::new(PatternError::ZeroLength {
                    time: hh_mm(template.start),
                }),
            });
        }
    }
    if teams.is_empty() {
        return Err(PatternError::NoTeams);
    }
    for (index, team) in teams.iter().enumerate() {
        if teams[..index].contains(team) {
            return Err(PatternError::DuplicateTeam { index, team: *team });
        }
    }
    if rotation == Rotation::FourTeamThreeShift {
        if teams.len() != 4 {
            return Err(PatternError::FourTeamsRequired { count: teams.len() });
        }
        if templates.len() != 3 {
            return Err(PatternError::ThreeShiftsRequired {
                count: templates.len(),
            });
        }
        check_covers_day_once(templates)?;
    }
    Ok(())
}

/// Requires the templates to tile the 24-hour circle: sorted by start, each one must end
/// exactly where the next begins, the last wrapping around to the first.
fn check_covers_day_once(templates: &[ShiftTemplate]) -> Result<(), PatternError> {
    let mut spans: Vec<(u32, u32)> = templates.iter().map(ShiftTemplate::seconds_span).collect();
    spans.sort_unstable();
    for (i, &(_, end)) in spans.iter().enumerate() {
        let next_start = match spans.get(i + 1) {
            Some(&(next, _)) => next,
            None => spans[0].0 + SECONDS_PER_DAY,
        };
        match end.cmp(&next_start) {
            Ordering::Equal => {}
            Ordering::Less => {
                return Err(PatternError::ShiftsLeaveGap {
                    from: seconds_hh_mm(end),
                    to: seconds_hh_mm(next_start),
                });
            }
            Ordering::Greater => {
                // The next span may itself end earlier (e.g. fully contained).
                let next_end = match spans.get(i + 1) {
                    Some(&(_, next_end)) => next_end,
                    None => spans[0].1 + SECONDS_PER_DAY,
                };
                return Err(PatternError::ShiftsOverlap {
                    from: seconds_hh_mm(next_start),
                    to: seconds_hh_mm(end.min(next_end)),
                });
            }
        }
    }
    Ok(())
}

/// One concrete shift produced by [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedShift {
    /// Real start instant.
    pub starts_at: DateTime<Utc>,
    /// Real end instant, always after `starts_at`.
    pub ends_at: DateTime<Utc>,
    /// Team staffing it.
    pub team_id: Uuid,
    /// Local date the shift belongs to (the date of its start).
    pub date: NaiveDate,
    /// Index of its template in the pattern.
    pub template: usize,
}

/// Days since 1970-01-01; the fixed epoch keeps assignments independent of the range.
fn days_since_epoch(date: NaiveDate) -> i64 {
    date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch"))
        .num_days()
}

/// Index of the team staffing `template` on the day `d`, or `None` if the template has none.
fn assigned_team(rotation: Rotation, d: i64, template: usize, team_count: usize) -> Option<usize> {
    let n = i64::try_from(team_count).ok().filter(|&n| n > 0)?;
    let i = i64::try_from(template).ok()?;
    let index = match rotation {
        Rotation::SameTeam => i.rem_euclid(n),
        Rotation::DailyRotation => (i + d.rem_euclid(n)).rem_euclid(n),
        Rotation::FourTeamThreeShift => {
            (0..n).find(|&k| four_team_duty(d, k) == FourTeamDuty::Template(template))?
        }
    };
    usize::try_from(index).ok()
}

/// What a team of the four-team cycle does on a given day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FourTeamDuty {
    Template(usize),
    Rest,
}

/// The 四班三运转 cycle: phase `(d + 2k) rem 8`, two days per template, then two of rest.
fn four_team_duty(d: i64, team: i64) -> FourTeamDuty {
    match (d + 2 * team).rem_euclid(8) {
        0 | 1 => FourTeamDuty::Template(0),
        2 | 3 => FourTeamDuty::Template(1),
        4 | 5 => FourTeamDuty::Template(2),
        _ => FourTeamDuty::Rest,
    }
}

/// Local wall-clock time to an instant: earliest of an ambiguous time, first instant after a
/// gap. `None` only at the far edges of the representable dates.
fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    if let Some(instant) = tz.from_local_datetime(&local).earliest() {
        return Some(instant.with_timezone(&Utc));
    }
    first_instant_after_gap(tz, local)
}

/// Finds the transition instant ending the gap that swallowed `local`, by bisection between
/// reading `local` with the offset after the gap (still before it) and with the offset before
/// it (already after it).
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    use chrono::Offset;
    let offset_at = |instant: DateTime<Utc>| {
        i64::from(
            tz.offset_from_utc_datetime(&instant.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    };
    let local_at = |instant: DateTime<Utc>| instant.with_timezone(&tz).naive_local();
    let probe = local.and_utc();
    // A day away from the gap in UTC is beyond any offset, so on the far side of it.
    let before = offset_at(probe.checked_sub_signed(Duration::days(1))?);
    let after = offset_at(probe.checked_add_signed(Duration::days(1))?);
    let mut lo = probe.checked_sub_signed(Duration::seconds(after))?;
    let mut hi = probe.checked_sub_signed(Duration::seconds(before))?;
    if lo < hi && local_at(lo) < local && local_at(hi) > local {
        while hi - lo > Duration::seconds(1) {
            let mid = lo + (hi - lo) / 2;
            if local_at(mid) > local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        return Some(hi);
    }
    // Several transitions within a day (not in modern tzdata): walk the wall clock instead.
    let mut candidate = local;
    for _ in 0..(2 * 24 * 60) {
        candidate = candidate.checked_add_signed(Duration::minutes(1))?;
        if let Some(instant) = tz.from_local_datetime(&candidate).earliest() {
            return Some(instant.with_timezone(&Utc));
        }
    }
    None
}

/// Expands a pattern over `from..=to` in zone `tz`, sorted by (starts_at, template).
///
/// Deterministic, and a sub-range yields exactly the shifts of those days in a larger range.
pub fn generate(
    from: NaiveDate,
    to: NaiveDate,
    templates: &[ShiftTemplate],
    teams: &[Uuid],
    rotation: Rotation,
    tz: Tz,
) -> Result<Vec<PlannedShift>, PatternError> {
    validate_pattern(templates, teams, rotation)?;
    if to < from {
        return Err(PatternError::ToBeforeFrom { from, to });
    }
    let days = to.signed_duration_since(from).num_days() + 1;
    if days > MAX_RANGE_DAYS {
        return Err(PatternError::RangeTooLong { days });
    }
    let mut shifts = Vec::with_capacity(templates.len() * usize::try_from(days).unwrap_or(0));
    // Not `iter_days`: it never yields the last representable date.
    let mut date = from;
    for _ in 0..days {
        let d = days_since_epoch(date);
        let out_of_range = || PatternError::DateOutOfRange { date };
        let next_date = date.succ_opt().ok_or_else(out_of_range)?;
        for (index, template) in templates.iter().enumerate() {
            let team = assigned_team(rotation, d, index, teams.len())
                .and_then(|k| teams.get(k))
                .copied();
            // Only four_team_three_shift leaves no team, and validation excludes that.
            let Some(team_id) = team else { continue };
            let local_end = match template.end {
                TemplateEnd::Midnight => next_date.and_time(NaiveTime::MIN),
                TemplateEnd::At(end) if template.crosses_midnight() => next_date.and_time(end),
                TemplateEnd::At(end) => date.and_time(end),
            };
            let starts_at =
                resolve_local(tz, date.and_time(template.start)).ok_or_else(out_of_range)?;
            let ends_at = resolve_local(tz, local_end).ok_or_else(out_of_range)?;
            // Wholly inside a spring-forward gap: no real time to staff.
            if ends_at <= starts_at {
                continue;
            }
            shifts.push(PlannedShift {
                starts_at,
                ends_at,
                team_id,
                date,
                template: index,
            });
        }
        date = next_date;
    }
    // The date only breaks ties that cannot occur, keeping the order total regardless.
    shifts.sort_by_key(|shift| (shift.starts_at, shift.template, shift.date));
    Ok(shifts)
}

/// One rostered shift as seen by gap detection: its time and how many distinct people it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RosteredSpan {
    /// Start, inclusive.
    pub starts_at: DateTime<Utc>,
    /// End, exclusive.
    pub ends_at: DateTime<Utc>,
    /// Distinct people on the shift.
    pub headcount: u32,
}

/// A maximal stretch with one constant headcount below what the post requires.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
    /// Headcount rostered throughout the gap (sum over overlapping shifts).
    pub rostered: u32,
    /// Headcount the post requires.
    pub required: u32,
}

/// Understaffed stretches of `[window_from, window_to)`, in time order.
///
/// The headcount at an instant is the sum over the half-open spans covering it. Adjacent
/// pieces with the same headcount are one gap; a change of headcount starts a new gap.
/// A sweep line over the clipped span boundaries, O(n log n).
pub fn roster_gaps(
    window_from: DateTime<Utc>,
    window_to: DateTime<Utc>,
    required: u32,
    spans: &[RosteredSpan],
) -> Vec<Gap> {
    let mut gaps: Vec<Gap> = Vec::new();
    if required == 0 || window_to <= window_from {
        return gaps;
    }
    // Signed deltas at instants, in i64 so that many large headcounts cannot overflow.
    let mut events: Vec<(DateTime<Utc>, i64)> = Vec::with_capacity(spans.len() * 2);
    for span in spans {
        let start = span.starts_at.max(window_from);
        let end = span.ends_at.min(window_to);
        if start < end && span.headcount > 0 {
            events.push((start, i64::from(span.headcount)));
            events.push((end, -i64::from(span.headcount)));
        }
    }
    events.sort_unstable_by_key(|&(at, _)| at);

    let mut push_piece = |from: DateTime<Utc>, to: DateTime<Utc>, sum: i64| {
        let Ok(rostered) = u32::try_from(sum) else {
            return;
        };
        if from >= to || rostered >= required {
            return;
        }
        match gaps.last_mut() {
            Some(last) if last.to == from && last.rostered == rostered => last.to = to,
            _ => gaps.push(Gap {
                from,
                to,
                rostered,
                required,
            }),
        }
    };

    let mut cursor = window_from;
    let mut sum: i64 = 0;
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        push_piece(cursor, at, sum);
        // All changes at one instant apply together, so a handover leaves no blip.
        while i < events.len() && events[i].0 == at {
            sum += events[i].1;
            i += 1;
        }
        cursor = at;
    }
    push_piece(cursor, window_to, sum);
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn tpl(start: &str, end: &str) -> ShiftTemplate {
        parse_template(start, end).unwrap()
    }

    fn teams(n: usize) -> Vec<Uuid> {
        (0..n).map(|i| Uuid::from_u128(0xA0 + i as u128)).collect()
    }

    fn three_eights() -> Vec<ShiftTemplate> {
        vec![
            tpl("00:00", "08:00"),
            tpl("08:00", "16:00"),
            tpl("16:00", "24:00"),
        ]
    }

    // ----- parsing and validation -----

    #[test]
    fn parse_template_accepts_same_day_crossing_and_midnight_ends() {
        let day = tpl("08:00", "16:00");
        assert_eq!(
            day.end,
            TemplateEnd::At(NaiveTime::from_hms_opt(16, 0, 0).unwrap())
        );
        assert!(!day.crosses_midnight());
        assert_eq!(day.nominal_length(), Duration::hours(8));

        let night = tpl("22:00", "06:00");
        assert!(night.crosses_midnight());
        assert_eq!(night.nominal_length(), Duration::hours(8));

        let evening = tpl("16:00", "24:00");
        assert_eq!(evening.end, TemplateEnd::Midnight);
        assert_eq!(evening.nominal_length(), Duration::hours(8));
        assert_eq!(tpl("16:00", "00:00"), evening);

        let whole_day = tpl("00:00", "24:00");
        assert_eq!(whole_day.nominal_length(), Duration::hours(24));
        assert_eq!(
            tpl("07:30", "07:29").nominal_length(),
            Duration::minutes(24 * 60 - 1)
        );
    }

    #[test]
    fn parse_template_rejects_bad_times_and_zero_length() {
        for bad in [
            "24:00", "25:00", "8:00", "08:60", "08:00:00", "", "ab:cd", "-1:00", "08-00",
        ] {
            assert_eq!(
                parse_template(bad, "10:00"),
                Err(PatternError::InvalidStart {
                    value: bad.to_owned()
                }),
                "{bad}"
            );
        }
        for bad in ["24:01", "25:00", "8:00", "23:60", " 08:00"] {
            assert_eq!(
                parse_template("06:00", bad),
                Err(PatternError::InvalidEnd {
                    value: bad.to_owned()
                }),
                "{bad}"
            );
        }
        assert_eq!(
            parse_template("08:00", "08:00"),
            Err(PatternError::ZeroLength {
                time: "08:00".to_owned()
            })
        );
        assert_eq!(
            parse_template("00:00", "00:00"),
            Err(PatternError::ZeroLength {
                time: "00:00".to_owned()
            })
        );
    }

    #[test]
    fn parse_templates_names_the_index_in_the_message() {
        let error = parse_templates([("08:00", "16:00"), ("16:00", "25:00")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "pattern.shifts[1].end must be \"HH:MM\" between 00:00 and 24:00, got \"25:00\""
        );
        assert_eq!(
            parse_templates([("08:00", "16:00"), ("22:00", "06:00")]).unwrap(),
            vec![tpl("08:00", "16:00"), tpl("22:00", "06:00")]
        );
    }

    #[test]
    fn rotation_uses_snake_case_on_the_wire() {
        for (rotation, text) in [
            (Rotation::SameTeam, "\"same_team\""),
            (Rotation::DailyRotation, "\"daily_rotation\""),
            (Rotation::FourTeamThreeShift, "\"four_team_three_shift\""),
        ] {
            assert_eq!(serde_json::to_string(&rotation).unwrap(), text);
            assert_eq!(serde_json::from_str::<Rotation>(text).unwrap(), rotation);
        }
    }

    #[test]
    fn validate_counts_of_templates_and_teams() {
        let one = [tpl("08:00", "16:00")];
        assert_eq!(
            validate_pattern(&[], &teams(1), Rotation::SameTeam),
            Err(PatternError::NoTemplates)
        );
        let thirteen = vec![tpl("08:00", "16:00"); 13];
        assert_eq!(
            validate_pattern(&thirteen, &teams(1), Rotation::SameTeam),
            Err(PatternError::TooManyTemplates { count: 13 })
        );
        let twelve = vec![tpl("08:00", "16:00"); 12];
        assert_eq!(
            validate_pattern(&twelve, &teams(1), Rotation::SameTeam),
            Ok(())
        );
        assert_eq!(
            validate_pattern(&one, &[], Rotation::DailyRotation),
            Err(PatternError::NoTeams)
        );
        let mut repeated = teams(3);
        repeated.push(repeated[1]);
        assert_eq!(
            validate_pattern(&one, &repeated, Rotation::SameTeam),
            Err(PatternError::DuplicateTeam {
                index: 3,
                team: repeated[1]
            })
        );
        let hand_made = ShiftTemplate {
            start: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            end: TemplateEnd::At(NaiveTime::from_hms_opt(9, 0, 0).unwrap()),
        };
        assert!(matches!(
            validate_pattern(&[one[0], hand_made], &teams(1), Rotation::SameTeam),
            Err(PatternError::AtShift { index: 1, .. })
        ));
    }

    #[test]
    fn validate_four_team_three_shift_shape_and_coverage() {
        let rotation = Rotation::FourTeamThreeShift;
        for valid in [
            three_eights(),
            vec![
                tpl("08:00", "16:00"),
                tpl("16:00", "24:00"),
                tpl("00:00", "08:00"),
            ],
            vec![
                tpl("07:00", "15:00"),
                tpl("15:00", "23:00"),
                tpl("23:00", "07:00"),
            ],
            vec![
                tpl("22:00", "06:00"),
                tpl("06:00", "12:00"),
                tpl("12:00", "22:00"),
            ],
        ] {
            assert_eq!(
                validate_pattern(&valid, &teams(4), rotation),
                Ok(()),
                "{valid:?}"
            );
        }
        assert_eq!(
            validate_pattern(&three_eights(), &teams(3), rotation),
            Err(PatternError::FourTeamsRequired { count: 3 })
        );
        assert_eq!(
            validate_pattern(&three_eights()[..2], &teams(4), rotation),
            Err(PatternError::ThreeShiftsRequired { count: 2 })
        );
        let gap = [
            tpl("00:00", "08:00"),
            tpl("08:00", "16:00"),
            tpl("17:00", "24:00"),
        ];
        let error = validate_pattern(&gap, &teams(4), rotation).unwrap_err();
        assert_eq!(
            error,
            PatternError::ShiftsLeaveGap {
                from: "16:00".into(),
                to: "17:00".into()
            }
        );
        assert!(error.to_string().contains("16:00–17:00 is not covered"));
        let overlap = [
            tpl("07:00", "15:00"),
            tpl("14:00", "23:00"),
            tpl("23:00", "07:00"),
        ];
        assert_eq!(
            validate_pattern(&overlap, &teams(4), rotation),
            Err(PatternError::ShiftsOverlap {
                from: "14:00".into(),
                to: "15:00".into()
            })
        );
        let wrap_overlap = [
            tpl("06:00", "14:00"),
            tpl("14:00", "22:00"),
            tpl("21:00", "07:00"),
        ];
        assert_eq!(
            validate_pattern(&wrap_overlap, &teams(4), rotation),
            Err(PatternError::ShiftsOverlap {
                from: "21:00".into(),
                to: "22:00".into()
            })
        );
        let twice_around = [
            tpl("00:00", "24:00"),
            tpl("08:00", "16:00"),
            tpl("16:00", "08:00"),
        ];
        assert!(matches!(
            validate_pattern(&twice_around, &teams(4), rotation),
            Err(PatternError::ShiftsOverlap { .. })
        ));
        // Other rotations allow overlapping templates.
        assert_eq!(
            validate_pattern(&overlap, &teams(4), Rotation::SameTeam),
            Ok(())
        );
    }

    // ----- assignment rules -----

    #[test]
    fn same_team_staffs_template_i_with_team_i_mod_n() {
        let templates = [
            tpl("06:00", "14:00"),
            tpl("14:00", "22:00"),
            tpl("22:00", "06:00"),
        ];
        let team_ids = teams(2);
        let shifts = generate(
            date(2026, 5, 1),
            date(2026, 5, 3),
            &templates,
            &team_ids,
            Rotation::SameTeam,
            chrono_tz::Asia::Shanghai,
        )
        .unwrap();
        assert_eq!(shifts.len(), 9);
        for shift in &shifts {
            assert_eq!(shift.team_id, team_ids[shift.template % 2]);
        }
        let first = &shifts[0];
        assert_eq!(first.starts_at, utc("2026-04-30T22:00:00Z"));
        assert_eq!(first.ends_at, utc("2026-05-01T06:00:00Z"));
        let night = shifts.iter().find(|s| s.template == 2).unwrap();
        assert_eq!(night.starts_at, utc("2026-05-01T14:00:00Z"));
        assert_eq!(night.ends_at, utc("2026-05-01T22:00:00Z"));
    }

    #[test]
    fn daily_rotation_follows_days_since_epoch() {
        let templates = [tpl("08:00", "20:00"), tpl("20:00", "08:00")];
        let team_ids = teams(3);
        // 2026-01-03 is day 20456 since 1970-01-01, and 20456 rem 3 == 2.
        let shifts = generate(
            date(2026, 1, 3),
            date(2026, 1, 5),
            &templates,
            &team_ids,
            Rotation::DailyRotation,
            Tz::UTC,
        )
        .unwrap();
        let got: Vec<(NaiveDate, usize, Uuid)> = shifts
            .iter()
            .map(|s| (s.date, s.template, s.team_id))
            .collect();
        let [a, b, c] = [team_ids[0], team_ids[1], team_ids[2]];
        assert_eq!(
            got,
            vec![
                (date(2026, 1, 3), 0, c),
                (date(2026, 1, 3), 1, a),
                (date(2026, 1, 4), 0, a),
                (date(2026, 1, 4), 1, b),
                (date(2026, 1, 5), 0, b),
                (date(2026, 1, 5), 1, c),
            ]
        );
    }

    #[test]
    fn assignments_before_the_epoch_use_rem_euclid() {
        assert_eq!(days_since_epoch(date(1969, 12, 31)), -1);
        assert_eq!(assigned_team(Rotation::DailyRotation, -1, 0, 3), Some(2));
        assert_eq!(four_team_duty(-1, 0), FourTeamDuty::Rest);
        assert_eq!(four_team_duty(-2, 0), FourTeamDuty::Rest);
        assert_eq!(four_team_duty(-3, 0), FourTeamDuty::Template(2));
    }

    /// Hand-written 四班三运转 table: "T0 T1 T2 | resting" for teams A, B, C, D.
    const FOUR_TEAM_TABLE_FROM_2026_01_03: [&str; 16] = [
        "A B C | D", // 2026-01-03, day 20456, 20456 rem 8 == 0
        "A B C | D", // 01-04
        "D A B | C", // 01-05
        "D A B | C", // 01-06
        "C D A | B", // 01-07
        "C D A | B", // 01-08
        "B C D | A", // 01-09
        "B C D | A", // 01-10
        "A B C | D", // 01-11: the cycle starts again
        "A B C | D", // 01-12
        "D A B | C", // 01-13
        "D A B | C", // 01-14
        "C D A | B", // 01-15
        "C D A | B", // 01-16
        "B C D | A", // 01-17
        "B C D | A", // 01-18
    ];

    #[test]
    fn four_team_three_shift_matches_hand_written_table() {
        assert_eq!(days_since_epoch(date(2026, 1, 3)), 20456);
        let team_ids = teams(4);
        let name = |id: Uuid| ["A", "B", "C", "D"][team_ids.iter().position(|t| *t == id).unwrap()];
        let shifts = generate(
            date(2026, 1, 3),
            date(2026, 1, 18),
            &[
                tpl("07:00", "15:00"),
                tpl("15:00", "23:00"),
                tpl("23:00", "07:00"),
            ],
            &team_ids,
            Rotation::FourTeamThreeShift,
            chrono_tz::Asia::Shanghai,
        )
        .unwrap();
        let rendered: Vec<String> = date(2026, 1, 3)
            .iter_days()
            .take(16)
            .map(|day| {
                let mut on_duty = [""; 3];
                for shift in shifts.iter().filter(|s| s.date == day) {
                    on_duty[shift.template] = name(shift.team_id);
                }
                let resting: Vec<&str> = ["A", "B", "C", "D"]
                    .into_iter()
                    .filter(|team| !on_duty.contains(team))
                    .collect();
                format!("{} | {}", on_duty.join(" "), resting.join(" "))
            })
            .collect();
        for (day, line) in date(2026, 1, 3).iter_days().zip(&rendered) {
            println!("{day}  {line}");
        }
        assert_eq!(rendered, FOUR_TEAM_TABLE_FROM_2026_01_03);
    }

    // ----- generation and DST -----

    /// Asserts that the shifts, in order, form one unbroken chain in UTC.
    fn assert_tiles(shifts: &[PlannedShift]) {
        for pair in shifts.windows(2) {
            assert_eq!(
                pair[0].ends_at, pair[1].starts_at,
                "gap or overlap: {pair:?}"
            );
        }
    }

    #[test]
    fn spring_forward_in_berlin_shortens_the_night_and_still_tiles() {
        let berlin = chrono_tz::Europe::Berlin;
        let nights = [
            tpl("22:00", "06:00"),
            tpl("06:00", "14:00"),
            tpl("14:00", "22:00"),
        ];
        let shifts = generate(
            date(2026, 3, 28),
            date(2026, 3, 29),
            &nights,
            &teams(4),
            Rotation::FourTeamThreeShift,
            berlin,
        )
        .unwrap();
        assert_tiles(&shifts);
        let night = shifts
            .iter()
            .find(|s| s.date == date(2026, 3, 28) && s.template == 0)
            .unwrap();
        assert_eq!(night.starts_at, utc("2026-03-28T21:00:00Z"));
        assert_eq!(night.ends_at, utc("2026-03-29T04:00:00Z"));
        assert_eq!(night.ends_at - night.starts_at, Duration::hours(7));

        let midnight = generate(
            date(2026, 3, 28),
            date(2026, 3, 30),
            &three_eights(),
            &teams(4),
            Rotation::FourTeamThreeShift,
            berlin,
        )
        .unwrap();
        assert_tiles(&midnight);
        assert_eq!(midnight.len(), 9);
        let short = midnight
            .iter()
            .find(|s| s.date == date(2026, 3, 29) && s.template == 0);
        let short = short.unwrap();
        assert_eq!(short.starts_at, utc("2026-03-28T23:00:00Z"));
        assert_eq!(short.ends_at, utc("2026-03-29T06:00:00Z"));
    }

    #[test]
    fn fall_back_in_berlin_lengthens_the_night_and_still_tiles() {
        let berlin = chrono_tz::Europe::Berlin;
        let shifts = generate(
            date(2026, 10, 24),
            date(2026, 10, 26),
            &[
                tpl("07:00", "15:00"),
                tpl("15:00", "23:00"),
                tpl("23:00", "07:00"),
            ],
            &teams(4),
            Rotation::FourTeamThreeShift,
            berlin,
        )
        .unwrap();
        assert_eq!(shifts.len(), 9);
        assert_tiles(&shifts);
        let night = shifts
            .iter()
            .find(|s| s.date == date(2026, 10, 24) && s.template == 2)
            .unwrap();
        assert_eq!(night.starts_at, utc("2026-10-24T21:00:00Z"));
        assert_eq!(night.ends_at, utc("2026-10-25T06:00:00Z"));
        assert_eq!(night.ends_at - night.starts_at, Duration::hours(9));

        let midnight = generate(
            date(2026, 10, 24),
            date(2026, 10, 26),
            &three_eights(),
            &teams(4),
            Rotation::FourTeamThreeShift,
            berlin,
        )
        .unwrap();
        assert_tiles(&midnight);
        let long = midnight
            .iter()
            .find(|s| s.date == date(2026, 10, 25) && s.template == 0);
        assert_eq!(
            long.unwrap().ends_at - long.unwrap().starts_at,
            Duration::hours(9)
        );
    }

    #[test]
    fn ambiguous_times_take_the_earliest_instant_and_gaps_the_first_after() {
        let berlin = chrono_tz::Europe::Berlin;
        // 02:30 on 2026-10-25 happens at 00:30 UTC (CEST) and 01:30 UTC (CET).
        let fall = generate(
            date(2026, 10, 25),
            date(2026, 10, 25),
            &[tpl("02:30", "10:30"), tpl("20:00", "02:30")],
            &teams(1),
            Rotation::SameTeam,
            berlin,
        )
        .unwrap();
        assert_eq!(fall[0].starts_at, utc("2026-10-25T00:30:00Z"));
        assert_eq!(fall[0].ends_at, utc("2026-10-25T09:30:00Z"));
        // 02:30 on 2026-03-29 does not exist: it becomes 03:00 CEST = 01:00 UTC.
        let spring = generate(
            date(2026, 3, 29),
            date(2026, 3, 29),
            &[tpl("02:30", "10:30"), tpl("18:00", "02:30")],
            &teams(1),
            Rotation::SameTeam,
            berlin,
        )
        .unwrap();
        assert_eq!(spring[0].starts_at, utc("2026-03-29T01:00:00Z"));
        assert_eq!(spring[0].ends_at, utc("2026-03-29T08:30:00Z"));
        let evening_before = generate(
            date(2026, 3, 28),
            date(2026, 3, 28),
            &[tpl("18:00", "02:30")],
            &teams(1),
            Rotation::SameTeam,
            berlin,
        )
        .unwrap();
        assert_eq!(evening_before[0].ends_at, utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn new_york_transitions_tile_too() {
        let new_york = chrono_tz::America::New_York;
        let templates = [
            tpl("23:00", "07:00"),
            tpl("07:00", "15:00"),
            tpl("15:00", "23:00"),
        ];
        // 2026-03-08 spring forward and 2026-11-01 fall back, both at 02:00 local.
        for (from, to, night, length) in [
            (date(2026, 3, 7), date(2026, 3, 9), date(2026, 3, 7), 7),
            (date(2026, 10, 31), date(2026, 11, 2), date(2026, 10, 31), 9),
        ] {
            let shifts = generate(
                from,
                to,
                &templates,
                &teams(4),
                Rotation::FourTeamThreeShift,
                new_york,
            )
            .unwrap();
            assert_tiles(&shifts);
            let shift = shifts
                .iter()
                .find(|s| s.date == night && s.template == 0)
                .unwrap();
            assert_eq!(shift.ends_at - shift.starts_at, Duration::hours(length));
        }
        let gap_start = generate(
            date(2026, 3, 8),
            date(2026, 3, 8),
            &[tpl("02:15", "06:00")],
            &teams(1),
            Rotation::SameTeam,
            new_york,
        )
        .unwrap();
        // 03:00 EDT is 07:00 UTC.
        assert_eq!(gap_start[0].starts_at, utc("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn shift_wholly_inside_a_gap_is_left_out() {
        let shifts = generate(
            date(2026, 3, 28),
            date(2026, 3, 30),
            &[tpl("02:00", "03:00"), tpl("08:00", "16:00")],
            &teams(1),
            Rotation::SameTeam,
            chrono_tz::Europe::Berlin,
        )
        .unwrap();
        assert_eq!(shifts.len(), 5);
        assert!(
            !shifts
                .iter()
                .any(|s| s.date == date(2026, 3, 29) && s.template == 0)
        );
    }

    #[test]
    fn range_limits() {
        let templates = [tpl("08:00", "16:00")];
        let generate_range =
            |from, to| generate(from, to, &templates, &teams(1), Rotation::SameTeam, Tz::UTC);
        assert_eq!(
            generate_range(date(2026, 1, 2), date(2026, 1, 1)),
            Err(PatternError::ToBeforeFrom {
                from: date(2026, 1, 2),
                to: date(2026, 1, 1)
            })
        );
        assert_eq!(
            generate_range(date(2026, 1, 1), date(2026, 1, 1))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            generate_range(date(2026, 1, 1), date(2026, 4, 3))
                .unwrap()
                .len(),
            93
        );
        assert_eq!(
            generate_range(date(2026, 1, 1), date(2026, 4, 4)),
            Err(PatternError::RangeTooLong { days: 94 })
        );
        assert_eq!(
            generate_range(NaiveDate::MAX, NaiveDate::MAX),
            Err(PatternError::DateOutOfRange {
                date: NaiveDate::MAX
            })
        );
    }

    #[test]
    fn output_is_sorted_by_start_then_template() {
        let templates = [
            tpl("08:00", "16:00"),
            tpl("06:00", "18:00"),
            tpl("08:00", "12:00"),
        ];
        let shifts = generate(
            date(2026, 6, 1),
            date(2026, 6, 2),
            &templates,
            &teams(2),
            Rotation::DailyRotation,
            chrono_tz::Asia::Shanghai,
        )
        .unwrap();
        let order: Vec<usize> = shifts.iter().map(|s| s.template).collect();
        assert_eq!(order, vec![1, 0, 2, 1, 0, 2]);
    }

    // ----- roster gaps -----

    fn span(from: &str, to: &str, headcount: u32) -> RosteredSpan {
        RosteredSpan {
            starts_at: utc(from),
            ends_at: utc(to),
            headcount,
        }
    }

    fn gap(from: &str, to: &str, rostered: u32, required: u32) -> Gap {
        Gap {
            from: utc(from),
            to: utc(to),
            rostered,
            required,
        }
    }

    #[test]
    fn empty_roster_is_one_gap_over_the_window() {
        let from = utc("2026-05-01T00:00:00Z");
        let to = utc("2026-05-02T00:00:00Z");
        assert_eq!(
            roster_gaps(from, to, 2, &[]),
            vec![gap("2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", 0, 2)]
        );
        assert_eq!(roster_gaps(from, to, 0, &[]), vec![]);
        assert_eq!(roster_gaps(to, from, 1, &[]), vec![]);
    }

    #[test]
    fn post_staffed_around_the_clock_with_a_two_hour_hole() {
        let spans = [
            span("2026-05-01T00:00:00Z", "2026-05-01T08:00:00Z", 2),
            span("2026-05-01T08:00:00Z", "2026-05-01T14:00:00Z", 2),
            span("2026-05-01T16:00:00Z", "2026-05-02T00:00:00Z", 2),
        ];
        assert_eq!(
            roster_gaps(
                utc("2026-05-01T00:00:00Z"),
                utc("2026-05-02T00:00:00Z"),
                2,
                &spans
            ),
            vec![gap("2026-05-01T14:00:00Z", "2026-05-01T16:00:00Z", 0, 2)]
        );
    }

    #[test]
    fn overlapping_shifts_add_up() {
        let spans = [
            span("2026-05-01T08:00:00Z", "2026-05-01T16:00:00Z", 1),
            span("2026-05-01T12:00:00Z", "2026-05-01T20:00:00Z", 1),
        ];
        assert_eq!(
            roster_gaps(
                utc("2026-05-01T08:00:00Z"),
                utc("2026-05-01T20:00:00Z"),
                2,
                &spans
            ),
            vec![
                gap("2026-05-01T08:00:00Z", "2026-05-01T12:00:00Z", 1, 2),
                gap("2026-05-01T16:00:00Z", "2026-05-01T20:00:00Z", 1, 2),
            ]
        );
    }

    #[test]
    fn adjacent_shifts_leave_no_gap_and_equal_pieces_merge() {
        let spans = [
            span("2026-05-01T00:00:00Z", "2026-05-01T08:00:00Z", 1),
            span("2026-05-01T08:00:00Z", "2026-05-01T16:00:00Z", 1),
            span("2026-05-01T16:00:00Z", "2026-05-02T00:00:00Z", 1),
        ];
        let window = (utc("2026-05-01T00:00:00Z"), utc("2026-05-02T00:00:00Z"));
        assert_eq!(roster_gaps(window.0, window.1, 1, &spans), vec![]);
        // Below requirement with one person throughout: one merged gap, not three.
        assert_eq!(
            roster_gaps(window.0, window.1, 2, &spans),
            vec![gap("2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z", 1, 2)]
        );
    }

    #[test]
    fn different_headcounts_are_separate_gaps() {
        let spans = [
            span("2026-05-01T00:00:00Z", "2026-05-01T06:00:00Z", 1),
            span("2026-05-01T06:00:00Z", "2026-05-01T12:00:00Z", 2),
        ];
        assert_eq!(
            roster_gaps(
                utc("2026-05-01T00:00:00Z"),
                utc("2026-05-01T12:00:00Z"),
                3,
                &spans
            ),
            vec![
                gap("2026-05-01T00:00:00Z", "2026-05-01T06:00:00Z", 1, 3),
                gap("2026-05-01T06:00:00Z", "2026-05-01T12:00:00Z", 2, 3),
            ]
        );
    }

    #[test]
    fn spans_outside_the_window_are_clipped() {
        let spans = [
            span("2026-04-30T20:00:00Z", "2026-05-01T06:00:00Z", 1),
            span("2026-05-01T18:00:00Z", "2026-05-02T06:00:00Z", 1),
            span("2026-04-01T00:00:00Z", "2026-04-02T00:00:00Z", 5),
            span("2026-05-03T00:00:00Z", "2026-05-04T00:00:00Z", 5),
        ];
        assert_eq!(
            roster_gaps(
                utc("2026-05-01T00:00:00Z"),
                utc("2026-05-02T00:00:00Z"),
                1,
                &spans
            ),
            vec![gap("2026-05-01T06:00:00Z", "2026-05-01T18:00:00Z", 0, 1)]
        );
    }

    #[test]
    fn gap_serialises_with_rfc3339_instants() {
        let value = serde_json::to_value(gap("2026-05-01T06:00:00Z", "2026-05-01T18:00:00Z", 0, 1))
            .unwrap();
        assert_eq!(value["from"], "2026-05-01T06:00:00Z");
        assert_eq!(value["to"], "2026-05-01T18:00:00Z");
        assert_eq!(value["rostered"], 0);
        assert_eq!(value["required"], 1);
    }

    // ----- properties -----

    fn arb_template() -> impl Strategy<Value = ShiftTemplate> {
        // Quarter hours, so that the DST transitions at 02:00/03:00 get hit often.
        let as_text = |q: u32| format!("{:02}:{:02}", q / 4, q % 4 * 15);
        let partial = (0u32..24 * 4, 1u32..24 * 4, any::<bool>()).prop_map(
            move |(start, length, spell_midnight_24)| {
                let end = (start + length) % (24 * 4);
                let end_text = if end == 0 && spell_midnight_24 {
                    "24:00".to_owned()
                } else {
                    as_text(end)
                };
                tpl(&as_text(start), &end_text)
            },
        );
        prop_oneof![9 => partial, 1 => Just(tpl("00:00", "24:00"))]
    }

    fn arb_tz() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(chrono_tz::Europe::Berlin),
            Just(chrono_tz::America::New_York),
            Just(chrono_tz::Asia::Shanghai),
            Just(chrono_tz::Australia::Lord_Howe),
        ]
    }

    fn arb_pattern() -> impl Strategy<Value = (Vec<ShiftTemplate>, Vec<Uuid>, Rotation)> {
        let free = (
            prop::collection::vec(arb_template(), 1..=4),
            1usize..=5,
            prop_oneof![Just(Rotation::SameTeam), Just(Rotation::DailyRotation)],
        )
            .prop_map(|(templates, n, rotation)| (templates, teams(n), rotation));
        let four = (0u32..24).prop_map(|first| {
            let at = |h: u32| format!("{:02}:00", h % 24);
            let templates = vec![
                tpl(&at(first), &at(first + 8)),
                tpl(&at(first + 8), &at(first + 16)),
                tpl(&at(first + 16), &at(first + 24)),
            ];
            (templates, teams(4), Rotation::FourTeamThreeShift)
        });
        prop_oneof![free, four]
    }

    /// Dates around 2026 including DST transitions, and some before the epoch.
    fn arb_date() -> impl Strategy<Value = NaiveDate> {
        prop_oneof![
            (0i64..800).prop_map(|d| date(2025, 6, 1) + Duration::days(d)),
            (0i64..800).prop_map(|d| date(1965, 1, 1) + Duration::days(d)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn sub_range_yields_the_subset_of_a_larger_range(
            (templates, team_ids, rotation) in arb_pattern(),
            tz in arb_tz(),
            from in arb_date(),
            length in 0i64..40,
            sub_start in 0i64..40,
            sub_length in 0i64..40,
        ) {
            let to = from + Duration::days(length);
            let big = generate(from, to, &templates, &team_ids, rotation, tz).unwrap();
            prop_assert_eq!(&big, &generate(from, to, &templates, &team_ids, rotation, tz).unwrap());
            let sub_from = from + Duration::days(sub_start.min(length));
            let sub_to = (sub_from + Duration::days(sub_length)).min(to);
            let sub = generate(sub_from, sub_to, &templates, &team_ids, rotation, tz).unwrap();
            let expected: Vec<PlannedShift> = big
                .iter()
                .filter(|s| (sub_from..=sub_to).contains(&s.date))
                .cloned()
                .collect();
            prop_assert_eq!(sub, expected);
        }

        #[test]
        fn generated_shifts_are_sorted_positive_and_near_nominal_length(
            (templates, team_ids, rotation) in arb_pattern(),
            tz in arb_tz(),
            from in arb_date(),
            length in 0i64..20,
        ) {
            let shifts =
                generate(from, from + Duration::days(length), &templates, &team_ids, rotation, tz)
                    .unwrap();
            for pair in shifts.windows(2) {
                prop_assert!(
                    (pair[0].starts_at, pair[0].template) <= (pair[1].starts_at, pair[1].template)
                );
            }
            for shift in &shifts {
                prop_assert!(shift.ends_at > shift.starts_at);
                let drift = (shift.ends_at - shift.starts_at) - templates[shift.template].nominal_length();
                // Every zone here moves its clocks by at most one hour.
                prop_assert!(drift.abs() <= Duration::hours(1), "{shift:?} drift {drift}");
            }
            let expected_count = templates.len() * (length as usize + 1);
            // Only shifts swallowed by a spring-forward gap may be missing.
            prop_assert!(shifts.len() <= expected_count);
            prop_assert!(shifts.len() + templates.len() >= expected_count);
        }

        #[test]
        fn four_team_cycle_over_any_eight_days(
            first in (-3000i64..3000).prop_map(|d| date(1970, 1, 1) + Duration::days(d)),
            tz in arb_tz(),
        ) {
            let team_ids = teams(4);
            let shifts = generate(
                first,
                first + Duration::days(7),
                &three_eights(),
                &team_ids,
                Rotation::FourTeamThreeShift,
                tz,
            )
            .unwrap();
            for day in first.iter_days().take(8) {
                let on_day: Vec<&PlannedShift> = shifts.iter().filter(|s| s.date == day).collect();
                let mut templates: Vec<usize> = on_day.iter().map(|s| s.template).collect();
                templates.sort_unstable();
                let on_duty: Vec<Uuid> = on_day.iter().map(|s| s.team_id).collect();
                // The 00:00 start is never inside a gap in these zones, so all three are there.
                prop_assert_eq!(templates, vec![0, 1, 2]);
                for (i, team) in on_duty.iter().enumerate() {
                    prop_assert!(!on_duty[..i].contains(team));
                }
            }
            for team in &team_ids {
                let worked = shifts.iter().filter(|s| s.team_id == *team).count();
                let worked_days: std::collections::BTreeSet<NaiveDate> =
                    shifts.iter().filter(|s| s.team_id == *team).map(|s| s.date).collect();
                prop_assert_eq!(worked, 6);
                prop_assert_eq!(8 - worked_days.len(), 2);
                for template in 0..3 {
                    let on_template = shifts
                        .iter()
                        .filter(|s| s.team_id == *team && s.template == template)
                        .count();
                    prop_assert_eq!(on_template, 2);
                }
            }
        }

        #[test]
        fn gaps_match_a_brute_force_headcount(
            raw_spans in prop::collection::vec((0i64..200, 0i64..60, 0u32..4), 0..12),
            window_start in 0i64..100,
            window_length in 0i64..150,
            required in 0u32..5,
            samples in prop::collection::vec(0i64..1000, 20),
        ) {
            let base = utc("2026-05-01T00:00:00Z");
            let at = |minute: i64| base + Duration::minutes(minute);
            let spans: Vec<RosteredSpan> = raw_spans
                .iter()
                .map(|&(start, length, headcount)| RosteredSpan {
                    starts_at: at(start),
                    ends_at: at(start + length),
                    headcount,
                })
                .collect();
            let window_from = at(window_start);
            let window_to = at(window_start + window_length);
            let gaps = roster_gaps(window_from, window_to, required, &spans);
            let sum_at = |t: DateTime<Utc>| -> u32 {
                spans
                    .iter()
                    .filter(|s| s.starts_at <= t && t < s.ends_at)
                    .map(|s| s.headcount)
                    .sum()
            };
            for (i, g) in gaps.iter().enumerate() {
                prop_assert!(window_from <= g.from && g.from < g.to && g.to <= window_to);
                prop_assert!(g.rostered < g.required);
                prop_assert_eq!(g.required, required);
                prop_assert_eq!(sum_at(g.from), g.rostered);
                if let Some(next) = gaps.get(i + 1) {
                    prop_assert!(g.to <= next.from, "not sorted or not disjoint");
                    // Touching gaps exist only because the headcount changes.
                    if g.to == next.from {
                        prop_assert_ne!(g.rostered, next.rostered);
                    }
                }
            }
            // Spans sit on whole minutes, so half-minute samples see each piece's interior
            // and whole-minute ones see its boundaries.
            let window_seconds = (window_to - window_from).num_seconds();
            for &sample in &samples {
                if window_seconds == 0 {
                    break;
                }
                let offset = sample * 30 % window_seconds;
                let t = window_from + Duration::seconds(offset);
                let sum = sum_at(t);
                let inside = gaps.iter().find(|g| g.from <= t && t < g.to);
                prop_assert_eq!(sum < required, inside.is_some(), "at {}", t);
                if let Some(g) = inside {
                    prop_assert_eq!(g.rostered, sum);
                }
            }
        }
    }
}
