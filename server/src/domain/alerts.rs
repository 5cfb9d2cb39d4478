//! Which alerts should be open, given the facts of the moment. The evaluator gathers the
//! facts from the database and diffs the answer against the stored open alerts: an alert
//! wanted and not open is raised, one open and no longer wanted is resolved. One alert per
//! subject (a post or a member) and kind, so a lasting condition is one alert, not one a
//! minute.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// During a shift, fewer people at a checkpoint, kiosk or area than required for
    /// longer than the post's arrival grace.
    PostUnstaffed,
    /// A route shift with no eligible fix for `route_idle_min`.
    RouteIdle,
    /// An on-duty member with no fix for `silent_after_min`.
    MemberSilent,
    /// A check-in of kind `sos`.
    Sos,
    /// A `24x7` post whose roster has a gap within the next 24 hours.
    RosterGap,
    /// A member's fixes during duty flagged `mock_location` or `static_repeat`.
    SpoofSuspected,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 6] = [
        AlertKind::PostUnstaffed,
        AlertKind::RouteIdle,
        AlertKind::MemberSilent,
        AlertKind::Sos,
        AlertKind::RosterGap,
        AlertKind::SpoofSuspected,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::PostUnstaffed => "post_unstaffed",
            AlertKind::RouteIdle => "route_idle",
            AlertKind::MemberSilent => "member_silent",
            AlertKind::Sos => "sos",
            AlertKind::RosterGap => "roster_gap",
            AlertKind::SpoofSuspected => "spoof_suspected",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A WGS-84 position.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Position {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// Thresholds of the rules.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// A route shift with no eligible fix for this long is idle.
    pub route_idle: Duration,
    /// An on-duty member with no fix for this long is silent.
    pub silent_after: Duration,
    /// An SOS stays open this long after the member's last SOS fix.
    pub sos_hold: Duration,
}

/// A shift running now, with what the coverage rule says of it so far.
#[derive(Clone, Debug)]
pub struct ShiftFacts {
    /// The post.
    pub post_id: Uuid,
    /// Its code.
    pub post_code: String,
    /// The post's unit.
    pub unit_id: Uuid,
    /// Whether the post is a route (else a checkpoint, kiosk or area).
    pub is_route: bool,
    /// The shift.
    pub shift_id: Uuid,
    /// Its start.
    pub starts_at: DateTime<Utc>,
    /// People required.
    pub required: u32,
    /// People at the post now.
    pub present: u32,
    /// The post's arrival grace.
    pub arrival_grace: Duration,
    /// Start of the unstaffed span that reaches now (none when staffed now).
    pub unstaffed_since: Option<DateTime<Utc>>,
    /// The shift's last eligible fix (routes).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A member's latest SOS that still wants an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct SosFacts {
    /// When the device recorded it.
    pub recorded_at: DateTime<Utc>,
    /// When the server received it: much later for a phone that was offline.
    pub received_at: DateTime<Utc>,
    /// Where.
    pub position: Position,
    /// The post the fix named, else the post of the shift the member is on: id and code.
    pub post: Option<(Uuid, String)>,
}

/// An SOS that reached the server this long after it was recorded is said to be late.
pub const SOS_LATE_AFTER: Duration = Duration::minutes(2);

/// A member who is on duty now, or sent an SOS lately.
#[derive(Clone, Debug)]
pub struct MemberFacts {
    /// The member.
    pub member_id: Uuid,
    /// Their name.
    pub name: String,
    /// Their unit.
    pub unit_id: Option<Uuid>,
    /// The shift they are on now, and its start (the earliest if several).
    pub on_duty: Option<(Uuid, DateTime<Utc>)>,
    /// Their latest fix that the board counts (none flagged out of it), and where.
    pub last_fix: Option<(DateTime<Utc>, Position)>,
    /// Their latest SOS recorded or received within the SOS hold.
    pub last_sos: Option<SosFacts>,
    /// Their fixes during the current duty flagged `mock_location` or `static_repeat`.
    pub spoofed_fixes: u32,
}

/// The first roster gap of a `24x7` post within the look-ahead.
#[derive(Clone, Debug)]
pub struct GapFacts {
    /// The post.
    pub post_id: Uuid,
    /// Its code.
    pub post_code: String,
    /// Its unit.
    pub unit_id: Uuid,
    /// Start of the gap.
    pub from: DateTime<Utc>,
    /// End of the gap.
    pub to: DateTime<Utc>,
    /// People rostered in it.
    pub rostered: u32,
    /// People required.
    pub required: u32,
    /// The gap runs to the end of the look-ahead: nothing is rostered up to `to`, and
    /// what comes after is not known to the rule.
    pub to_horizon: bool,
}

/// Everything the rules look at.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The moment.
    pub now: DateTime<Utc>,
    /// The zone of times in messages.
    pub tz: Tz,
    /// Shifts running now.
    pub shifts: Vec<ShiftFacts>,
    /// Members on duty or with a recent SOS.
    pub members: Vec<MemberFacts>,
    /// Roster gaps ahead.
    pub gaps: Vec<GapFacts>,
    /// Keys of the alerts open now: an unstaffed post's alert stays open until the post
    /// is staffed or nothing is rostered there, across a change of shift.
    pub open: HashSet<String>,
}

/// An alert that should be open.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// Its kind.
    pub kind: AlertKind,
    /// The post or member it is about.
    pub subject: Uuid,
    /// The post, if about one.
    pub post_id: Option<Uuid>,
    /// The post's code.
    pub post_code: Option<String>,
    /// The member, if about one.
    pub member_id: Option<Uuid>,
    /// The member's name.
    pub member_name: Option<String>,
    /// The shift, if any.
    pub shift_id: Option<Uuid>,
    /// The unit that sees it.
    pub unit_id: Option<Uuid>,
    /// One human sentence.
    pub message: String,
    /// Where, if known.
    pub position: Option<Position>,
}

impl Wanted {
    /// The key that is unique among open alerts: `kind:subject`.
    pub fn key(&self) -> String {
        open_key(self.kind, self.subject)
    }
}

/// The unique key of an open alert.
pub fn open_key(kind: AlertKind, subject: Uuid) -> String {
    format!("{}:{subject}", kind.as_str())
}

/// A time as a message gives it: date, 24-hour time and the zone's offset, so that it
/// reads the same the next day and in a log of another zone.
fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M %:z")
        .to_string()
}

/// "1 fix", "3 fixes".
fn fixes(n: u32) -> String {
    if n == 1 {
        "1 fix".to_owned()
    } else {
        format!("{n} fixes")
    }
}

/// Why an open alert that is no longer wanted closed, in a word the API answers as the
/// alert's `resolution`: `staffed`, `patrolled`, `shift_ended`, `heard_from`, `off_duty`,
/// `sos_hold_elapsed`, `rostered`.
pub fn why_resolved(kind: AlertKind, subject: Uuid, facts: &Facts) -> &'static str {
    let running = |route: bool| {
        facts
            .shifts
            .iter()
            .filter(move |s| s.post_id == subject && s.is_route == route)
    };
    let on_duty = || {
        facts
            .members
            .iter()
            .any(|m| m.member_id == subject && m.on_duty.is_some())
    };
    match kind {
        AlertKind::PostUnstaffed if running(false).next().is_none() => "shift_ended",
        AlertKind::PostUnstaffed => "staffed",
        AlertKind::RouteIdle if running(true).next().is_none() => "shift_ended",
        AlertKind::RouteIdle => "patrolled",
        AlertKind::MemberSilent if on_duty() => "heard_from",
        AlertKind::MemberSilent | AlertKind::SpoofSuspected => "off_duty",
        AlertKind::Sos => "sos_hold_elapsed",
        AlertKind::RosterGap => "rostered",
    }
}

/// The alerts that should be open now, one per subject and kind, in a stable order.
pub fn decide(facts: &Facts, rules: &Rules) -> Vec<Wanted> {
    let now = facts.now;
    let at = |t: DateTime<Utc>| local(t, facts.tz);
    let mut out: Vec<Wanted> = Vec::new();
    let post_alert = |kind, s: &ShiftFacts, message: String| Wanted {
        kind,
        subject: s.post_id,
        post_id: Some(s.post_id),
        post_code: Some(s.post_code.clone()),
        member_id: None,
        member_name: None,
        shift_id: Some(s.shift_id),
        unit_id: Some(s.unit_id),
        message,
        position: None,
    };
    for s in &facts.shifts {
        if s.is_route {
            let since = s.last_seen_at.unwrap_or(s.starts_at).max(s.starts_at);
            if now - since >= rules.route_idle {
                let what = if s.last_seen_at.is_some() {
                    format!("{} has had no patrol fix since {}", s.post_code, at(since))
                } else {
                    format!(
                        "{} has had no patrol fix since its shift began at {}",
                        s.post_code,
                        at(since)
                    )
                };
                out.push(post_alert(AlertKind::RouteIdle, s, what));
            }
        } else if let Some(since) = s.unstaffed_since
            && s.present < s.required
            && (now - since.max(s.starts_at) > s.arrival_grace
                || facts
                    .open
                    .contains(&open_key(AlertKind::PostUnstaffed, s.post_id)))
        {
            out.push(post_alert(
                AlertKind::PostUnstaffed,
                s,
                format!(
                    "{} has {} of {} required on duty since {}",
                    s.post_code,
                    s.present,
                    s.required,
                    at(since.max(s.starts_at))
                ),
            ));
        }
    }
    for m in &facts.members {
        let member_alert = |kind, shift_id, message: String, position| Wanted {
            kind,
            subject: m.member_id,
            post_id: None,
            post_code: None,
            member_id: Some(m.member_id),
            member_name: Some(m.name.clone()),
            shift_id,
            unit_id: m.unit_id,
            message,
            position,
        };
        if let Some(sos) = &m.last_sos
            && (now - sos.recorded_at < rules.sos_hold || now - sos.received_at < rules.sos_hold)
        {
            let late = sos.received_at - sos.recorded_at;
            let mut message = format!("{} sent an SOS at {}", m.name, at(sos.recorded_at));
            if let Some((_, code)) = &sos.post {
                message = format!("{message} on duty at {code}");
            }
            if late >= SOS_LATE_AFTER {
                message = format!(
                    "{message}; it arrived late, at {} ({} min after it was sent)",
                    at(sos.received_at),
                    late.num_minutes()
                );
            }
            out.push(Wanted {
                post_id: sos.post.as_ref().map(|p| p.0),
                post_code: sos.post.as_ref().map(|p| p.1.clone()),
                ..member_alert(
                    AlertKind::Sos,
                    m.on_duty.map(|d| d.0),
                    message,
                    Some(sos.position),
                )
            });
        }
        let Some((shift_id, started)) = m.on_duty else {
            continue;
        };
        let heard = m.last_fix.map(|f| f.0).unwrap_or(started).max(started);
        if now - heard >= rules.silent_after {
            let message = match m.last_fix {
                Some((t, _)) if t >= started => {
                    format!("{} has sent no fix since {}", m.name, at(t))
                }
                Some((t, _)) => format!(
                    "{} has sent no fix since going on duty at {}; the last was at {}",
                    m.name,
                    at(started),
                    at(t)
                ),
                None => format!(
                    "{} has sent no fix since going on duty at {}",
                    m.name,
                    at(started)
                ),
            };
            out.push(member_alert(
                AlertKind::MemberSilent,
                Some(shift_id),
                message,
                m.last_fix.map(|f| f.1),
            ));
        }
        if m.spoofed_fixes > 0 {
            out.push(member_alert(
                AlertKind::SpoofSuspected,
                Some(shift_id),
                format!(
                    "{} sent {} flagged as a mock or replayed location since {}",
                    m.name,
                    fixes(m.spoofed_fixes),
                    at(started)
                ),
                m.last_fix.map(|f| f.1),
            ));
        }
    }
    for g in &facts.gaps {
        out.push(Wanted {
            kind: AlertKind::RosterGap,
            subject: g.post_id,
            post_id: Some(g.post_id),
            post_code: Some(g.post_code.clone()),
            member_id: None,
            member_name: None,
            shift_id: None,
            unit_id: Some(g.unit_id),
            message: if g.to_horizon {
                format!(
                    "{} has {} of {} required rostered from {} through at least {}, as far as \
                     alerts look ahead",
                    g.post_code,
                    g.rostered,
                    g.required,
                    at(g.from),
                    at(g.to)
                )
            } else {
                format!(
                    "{} has {} of {} required rostered from {} to {}",
                    g.post_code,
                    g.rostered,
                    g.required,
                    at(g.from),
                    at(g.to)
                )
            },
            position: None,
        });
    }
    // One per subject and kind (a post may run two shifts at once).
    let mut seen = std::collections::HashSet::new();
    out.retain(|w| seen.insert(w.key()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rules() -> Rules {
        Rules {
            route_idle: Duration::minutes(20),
            silent_after: Duration::minutes(10),
            sos_hold: Duration::minutes(30),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap()
    }

    fn facts() -> Facts {
        Facts {
            now: now(),
            tz: chrono_tz::Asia::Shanghai,
            shifts: vec![],
            members: vec![],
            gaps: vec![],
            open: HashSet::new(),
        }
    }

    fn kiosk(unstaffed_for_min: Option<i64>, present: u32) -> ShiftFacts {
        ShiftFacts {
            post_id: Uuid::from_u128(1),
            post_code: "K04".into(),
            unit_id: Uuid::from_u128(9),
            is_route: false,
            shift_id: Uuid::from_u128(2),
            starts_at: now() - Duration::hours(2),
            required: 1,
            present,
            arrival_grace: Duration::minutes(15),
            unstaffed_since: unstaffed_for_min.map(|m| now() - Duration::minutes(m)),
            last_seen_at: None,
        }
    }

    fn member() -> MemberFacts {
        MemberFacts {
            member_id: Uuid::from_u128(7),
            name: "Li Wei".into(),
            unit_id: Some(Uuid::from_u128(9)),
            on_duty: Some((Uuid::from_u128(2), now() - Duration::hours(1))),
            last_fix: Some((
                now() - Duration::minutes(1),
                Position {
                    lat: 34.2,
                    lon: 108.9,
                },
            )),
            last_sos: None,
            spoofed_fixes: 0,
        }
    }

    #[test]
    fn an_unstaffed_post_is_raised_only_after_its_grace() {
        let mut f = facts();
        f.shifts = vec![kiosk(Some(15), 0)];
        assert!(decide(&f, &rules()).is_empty(), "at the grace: not yet");
        f.shifts = vec![kiosk(Some(16), 0)];
        let w = decide(&f, &rules());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].kind, AlertKind::PostUnstaffed);
        assert_eq!(w[0].key(), format!("post_unstaffed:{}", Uuid::from_u128(1)));
        assert_eq!(
            w[0].message,
            "K04 has 0 of 1 required on duty since 2026-11-29 17:44 +08:00"
        );
        f.shifts = vec![kiosk(None, 1)];
        assert!(decide(&f, &rules()).is_empty(), "staffed: nothing");
    }

    #[test]
    fn a_shift_that_just_began_has_its_grace_from_the_start() {
        let mut f = facts();
        let mut s = kiosk(Some(600), 0);
        s.starts_at = now() - Duration::minutes(10);
        f.shifts = vec![s];
        assert!(decide(&f, &rules()).is_empty());
    }

    #[test]
    fn an_idle_route_is_raised_after_the_idle_time() {
        let mut f = facts();
        let mut s = kiosk(None, 0);
        s.is_route = true;
        s.post_code = "R05".into();
        s.last_seen_at = Some(now() - Duration::minutes(19));
        f.shifts = vec![s.clone()];
        assert!(decide(&f, &rules()).is_empty());
        s.last_seen_at = Some(now() - Duration::minutes(20));
        f.shifts = vec![s.clone()];
        assert_eq!(decide(&f, &rules())[0].kind, AlertKind::RouteIdle);
        s.last_seen_at = None;
        s.starts_at = now() - Duration::minutes(5);
        f.shifts = vec![s];
        assert!(
            decide(&f, &rules()).is_empty(),
            "a route just begun is not idle"
        );
    }

    #[test]
    fn a_silent_member_is_raised_and_a_fix_clears_it() {
        let mut f = facts();
        let mut m = member();
        m.last_fix = Some((
            now() - Duration::minutes(10),
            Position {
                lat: 34.2,
                lon: 108.9,
            },
        ));
        f.members = vec![m.clone()];
        let w = decide(&f, &rules());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].kind, AlertKind::MemberSilent);
        assert_eq!(w[0].member_id, Some(m.member_id));
        m.last_fix = None;
        m.on_duty = Some((Uuid::from_u128(2), now() - Duration::minutes(3)));
        f.members = vec![m.clone()];
        assert!(decide(&f, &rules()).is_empty(), "just went on duty");
        m.on_duty = None;
        f.members = vec![m];
        assert!(decide(&f, &rules()).is_empty(), "off duty: never silent");
    }

    #[test]
    fn an_sos_holds_for_its_time_with_its_position_even_off_duty() {
        let mut f = facts();
        let mut m = member();
        m.on_duty = None;
        let p = Position {
            lat: 34.25,
            lon: 108.95,
        };
        let sos = |recorded: i64, received: i64| SosFacts {
            recorded_at: now() - Duration::minutes(recorded),
            received_at: now() - Duration::minutes(received),
            position: p,
            post: None,
        };
        m.last_sos = Some(sos(29, 29));
        f.members = vec![m.clone()];
        let w = decide(&f, &rules());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].kind, AlertKind::Sos);
        assert_eq!(w[0].position, Some(p));
        assert_eq!(
            w[0].message,
            "Li Wei sent an SOS at 2026-11-29 17:31 +08:00"
        );
        m.last_sos = Some(sos(30, 30));
        f.members = vec![m];
        assert!(decide(&f, &rules()).is_empty());
        assert_eq!(
            why_resolved(AlertKind::Sos, Uuid::from_u128(7), &f),
            "sos_hold_elapsed"
        );
    }

    #[test]
    fn a_late_sos_is_raised_for_its_hold_after_it_arrives_and_names_its_post() {
        let mut f = facts();
        let mut m = member();
        m.last_sos = Some(SosFacts {
            recorded_at: now() - Duration::minutes(95),
            received_at: now() - Duration::minutes(1),
            position: Position {
                lat: 34.25,
                lon: 108.95,
            },
            post: Some((Uuid::from_u128(1), "K04".into())),
        });
        f.members = vec![m.clone()];
        let w = decide(&f, &rules());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].kind, AlertKind::Sos);
        assert_eq!(w[0].post_id, Some(Uuid::from_u128(1)));
        assert_eq!(w[0].post_code.as_deref(), Some("K04"));
        assert_eq!(
            w[0].message,
            "Li Wei sent an SOS at 2026-11-29 16:25 +08:00 on duty at K04; it arrived late, \
             at 2026-11-29 17:59 +08:00 (94 min after it was sent)"
        );
        if let Some(s) = m.last_sos.as_mut() {
            s.received_at = now() - Duration::minutes(30);
        }
        f.members = vec![m];
        assert!(
            decide(&f, &rules()).is_empty(),
            "its hold after arrival ran out"
        );
    }

    #[test]
    fn an_unstaffed_alert_stays_open_across_a_shift_change_until_the_post_is_staffed() {
        let mut f = facts();
        f.shifts = vec![kiosk(Some(60), 0)];
        let w = decide(&f, &rules());
        assert_eq!(w.len(), 1);
        f.open.insert(w[0].key());
        // The next shift began five minutes ago, within its grace; nobody came.
        let mut next = kiosk(Some(5), 0);
        next.starts_at = now() - Duration::minutes(5);
        next.shift_id = Uuid::from_u128(3);
        f.shifts = vec![next.clone()];
        assert_eq!(decide(&f, &rules()).len(), 1, "still open, not resolved");
        // Someone came.
        f.shifts = vec![kiosk(None, 1)];
        assert!(decide(&f, &rules()).is_empty());
        assert_eq!(
            why_resolved(AlertKind::PostUnstaffed, Uuid::from_u128(1), &f),
            "staffed"
        );
        f.shifts = vec![];
        assert_eq!(
            why_resolved(AlertKind::PostUnstaffed, Uuid::from_u128(1), &f),
            "shift_ended"
        );
        // Without an open alert, the new shift has its grace.
        f.open.clear();
        f.shifts = vec![next];
        assert!(decide(&f, &rules()).is_empty());
    }

    #[test]
    fn a_silent_member_alert_names_the_last_fix() {
        let mut f = facts();
        let mut m = member();
        m.last_fix = Some((
            now() - Duration::minutes(70),
            Position {
                lat: 34.2,
                lon: 108.9,
            },
        ));
        f.members = vec![m.clone()];
        let w = decide(&f, &rules());
        assert_eq!(
            w[0].message,
            "Li Wei has sent no fix since going on duty at 2026-11-29 17:00 +08:00; the last \
             was at 2026-11-29 16:50 +08:00"
        );
        assert_eq!(w[0].position.map(|p| p.lat), Some(34.2));
        m.last_fix = Some((now() - Duration::minutes(12), w[0].position.unwrap()));
        f.members = vec![m];
        assert_eq!(
            decide(&f, &rules())[0].message,
            "Li Wei has sent no fix since 2026-11-29 17:48 +08:00"
        );
    }

    #[test]
    fn spoofed_fixes_on_duty_are_raised() {
        let mut f = facts();
        let mut m = member();
        m.spoofed_fixes = 3;
        f.members = vec![m.clone()];
        let w = decide(&f, &rules());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].kind, AlertKind::SpoofSuspected);
        assert!(w[0].message.contains(" sent 3 fixes flagged "));
        m.spoofed_fixes = 1;
        f.members = vec![m.clone()];
        assert!(
            decide(&f, &rules())[0]
                .message
                .contains(" sent 1 fix flagged ")
        );
        m.on_duty = None;
        f.members = vec![m];
        assert!(decide(&f, &rules()).is_empty());
    }

    #[test]
    fn a_roster_gap_is_one_alert_per_post_and_two_shifts_one_alert() {
        let mut f = facts();
        f.gaps = vec![GapFacts {
            post_id: Uuid::from_u128(1),
            post_code: "K04".into(),
            unit_id: Uuid::from_u128(9),
            from: now() + Duration::hours(2),
            to: now() + Duration::hours(4),
            rostered: 0,
            required: 1,
            to_horizon: false,
        }];
        f.shifts = vec![kiosk(Some(60), 0), kiosk(Some(60), 0)];
        let w = decide(&f, &rules());
        let kinds: Vec<AlertKind> = w.iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [AlertKind::PostUnstaffed, AlertKind::RosterGap]);
        assert_eq!(
            w[1].message,
            "K04 has 0 of 1 required rostered from 2026-11-29 20:00 +08:00 to 2026-11-29 \
             22:00 +08:00"
        );
        f.gaps[0].to_horizon = true;
        assert!(
            decide(&f, &rules())[1]
                .message
                .ends_with("through at least 2026-11-29 22:00 +08:00, as far as alerts look ahead")
        );
    }

    #[test]
    fn kinds_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AlertKind::parse("fire"), None);
    }
}
