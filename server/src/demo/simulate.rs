//! The demo's simulated duty: the fixes that the phones of everyone rostered in the past
//! days would have sent, with the deliberate failures of [`Failure`], written straight into
//! the database with the flags the server's own rules give them.
//!
//! Everything is deterministic: each member's duty on each shift draws from its own
//! generator, seeded from the username and the shift's start, so a shift comes out the same
//! whichever other shifts are simulated with it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use sea_orm::{ConnectionTrait, EntityTrait, QueryTrait, Set, Statement};
use uuid::Uuid;

use super::{Failure, Planted};
use crate::{
    domain::{
        geodesy::{LocalProjection, LonLat, MeasuredLine},
        geometry::{PostGeometry, PostKind},
        plausibility::{self, FixSample, Flags, Mobility, StoredFix, Thresholds},
    },
    store::{fix, shift},
};

/// The kiosk left empty for two hours of a night shift.
pub const EMPTY_KIOSK: &str = "K04";
/// The route walked only halfway on one shift.
pub const HALF_ROUTE: &str = "R05";
/// The checkpoint staffed by one person where two are required, on one shift.
pub const SHORT_CHECKPOINT: &str = "C07";
/// The member whose every fix comes from a mock location provider.
pub const MOCK_MEMBER: &str = "ko.k13c";
/// The checkpoint whose crew on duty five hours before the demo was loaded syncs late.
pub const LATE_CHECKPOINT: &str = "C11";
/// How late the late crew's phones sync.
pub const LATE_BY: Duration = Duration::hours(6);

/// Rows per INSERT statement: a fix has 19 columns, and SQLite allows 32,766 parameters.
const ROWS_PER_STATEMENT: usize = 1000;
/// Routes at least this long are driven; shorter ones are walked.
const DRIVEN_FROM_M: f64 = 6000.0;
/// Phones send a fix every 45 to 60 seconds: the slower half of the 30-60 s the apps
/// allow, so that a week of the district loads in well under a minute.
const INTERVAL_S: (f64, f64) = (45.0, 60.0);
/// Walking pace of the officer leaving the empty kiosk.
const STROLL_MPS: f64 = 1.3;

/// SplitMix64: small, fast and fixed for good, so the demo's fixes never change with a
/// dependency's version.
struct Prng(u64);

impl Prng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// A version 4 UUID.
    fn uuid(&mut self) -> Uuid {
        let bits = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid()
    }

    /// A `Duration` of uniformly random whole milliseconds in `[lo_s, hi_s)` seconds.
    fn duration(&mut self, lo_s: f64, hi_s: f64) -> Duration {
        Duration::milliseconds((self.between(lo_s, hi_s) * 1000.0).round() as i64)
    }
}

/// A generator seeded from a name and a number (FNV-1a), the same on every machine.
fn prng(name: &str, n: i64) -> Prng {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    Prng(h)
}

/// Where a post is, in metres of the district's projection.
pub(super) enum Place {
    /// A route (the demo's are single lines).
    Route(MeasuredLine),
    /// A checkpoint or kiosk.
    Point((f64, f64)),
    /// An area, by its bounding box (the demo's areas are squares).
    Area {
        /// South-west corner.
        min: (f64, f64),
        /// North-east corner.
        max: (f64, f64),
    },
}

impl Place {
    /// Where a post's geometry lies in the projection.
    pub fn of(proj: &LocalProjection, geometry: &PostGeometry) -> Place {
        let positions = geometry.positions();
        match geometry {
            PostGeometry::Point(p) => Place::Point(proj.to_xy(*p)),
            PostGeometry::LineString(_) | PostGeometry::MultiLineString(_) => {
                Place::Route(MeasuredLine::new(proj, &positions))
            }
            PostGeometry::Polygon(_) | PostGeometry::MultiPolygon(_) => {
                let mut min = (f64::INFINITY, f64::INFINITY);
                let mut max = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for (x, y) in positions.iter().map(|p| proj.to_xy(*p)) {
                    min = (min.0.min(x), min.1.min(y));
                    max = (max.0.max(x), max.1.max(y));
                }
                Place::Area { min, max }
            }
        }
    }
}

/// A post as the simulation needs it.
pub(super) struct SimPost {
    /// Its code.
    pub code: String,
    /// Its kind.
    pub kind: PostKind,
    /// Where it is.
    pub place: Place,
}

/// A team as the simulation needs it.
pub(super) struct SimTeam {
    /// Its code.
    pub code: String,
    /// Its kind (`grid_patrol`, `kiosk_crew`, ...).
    pub kind: &'static str,
    /// Its members, in the order they were made.
    pub members: Vec<Uuid>,
}

/// The district the simulation runs in.
pub(super) struct World {
    /// The district's projection.
    pub proj: LocalProjection,
    /// `PATROL_TIMEZONE`: days and shift times are local.
    pub tz: Tz,
    /// Today, local.
    pub today: NaiveDate,
    /// When the demo is loaded: nothing is recorded or received after it.
    pub now: DateTime<Utc>,
    /// The server's plausibility thresholds.
    pub thresholds: Thresholds,
    /// Posts by id.
    pub posts: HashMap<Uuid, SimPost>,
    /// Teams by id.
    pub teams: HashMap<Uuid, SimTeam>,
    /// Usernames by member id.
    pub usernames: HashMap<Uuid, String>,
}

impl World {
    /// A local time on a day relative to today, in UTC.
    fn local(&self, days: i64, hh: u32) -> Option<DateTime<Utc>> {
        (self.today + Duration::days(days))
            .and_time(NaiveTime::from_hms_opt(hh, 0, 0)?)
            .and_local_timezone(self.tz)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }

    fn lonlat(&self, (x, y): (f64, f64)) -> LonLat {
        let p = self.proj.to_lonlat(x, y);
        // Phones report seven decimals, about a centimetre.
        LonLat {
            lon: (p.lon * 1e7).round() / 1e7,
            lat: (p.lat * 1e7).round() / 1e7,
        }
    }

    fn username(&self, member: Uuid) -> &str {
        self.usernames.get(&member).map_or("", String::as_str)
    }
}

/// How one member does one shift.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Conduct {
    /// As rostered.
    Duty,
    /// Does not turn up.
    Absent,
    /// Patrols only the first half of the route, back and forth.
    HalfRoute,
    /// Leaves the post for this span (it is empty from `from` to `to`).
    Away {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// The deliberate failures and whom they concern.
#[derive(Default)]
struct Plan {
    /// Conduct other than plain duty, by (shift, member).
    conduct: HashMap<(Uuid, Uuid), Conduct>,
    /// The member whose fixes are all mocked.
    mock: Option<Uuid>,
    /// Members whose phones sync [`LATE_BY`] late.
    late: HashSet<Uuid>,
    planted: Vec<Planted>,
}

/// What the simulation wrote.
pub(super) struct Simulated {
    /// Fixes written.
    pub fixes: u64,
    /// Fixes of the late crew recorded but not yet received when the demo was loaded.
    pub held_back: u64,
    /// The deliberate failures.
    pub planted: Vec<Planted>,
}

/// One fix as a phone would send it, with the time the server would receive it.
struct Draft {
    client_id: Uuid,
    recorded_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    position: LonLat,
    accuracy_m: f64,
    speed_mps: Option<f64>,
    heading_deg: Option<f64>,
    altitude_m: Option<f64>,
    battery: Option<f64>,
    kind: &'static str,
    post_id: Uuid,
    shift_id: Uuid,
    mock: bool,
}

impl Draft {
    fn sample(&self) -> FixSample {
        FixSample {
            recorded_at: self.recorded_at,
            position: self.position,
            accuracy_m: self.accuracy_m,
            speed_mps: self.speed_mps,
        }
    }
}

/// Writes the fixes of every shift in `shifts` that started before `world.now`, and
/// answers what it wrote.
///
/// Shifts are simulated a local day at a time on a blocking thread, while the previous
/// day's fixes are written; each day's fixes are written in time order, so the inserts
/// append to the time-ordered indexes instead of scattering over them.
pub(super) async fn simulate<C: ConnectionTrait>(
    db: &C,
    world: World,
    shifts: &[shift::Model],
) -> anyhow::Result<Simulated> {
    let mut shifts: Vec<shift::Model> = shifts
        .iter()
        .filter(|s| s.starts_at < world.now && world.posts.contains_key(&s.post_id))
        .cloned()
        .collect();
    shifts.sort_by_key(|s| (s.starts_at, s.post_id));
    let plan = plan(&world, &shifts);
    let planted = plan.planted.clone();
    let backend = db.get_database_backend();
    if backend == sea_orm::DbBackend::Sqlite {
        // These fixes do not go through the check-in writer: every hour is packed anew.
        for statement in crate::packs::forget_all_on() {
            db.execute_unprepared(&statement).await?;
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Statement>(8);
    let producer = tokio::task::spawn_blocking(move || {
        let mut simulation = Simulation::new(&world, &plan, &shifts);
        while let Some(rows) = simulation.next_day() {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let statement =
                    fix::Entity::insert_many(chunk.iter().map(|(m, d, f)| row(*m, d, *f)))
                        .build(backend);
                if tx.blocking_send(statement).is_err() {
                    return simulation.held_back;
                }
            }
        }
        simulation.held_back
    });
    let mut fixes = 0;
    while let Some(statement) = rx.recv().await {
        fixes += db.execute_raw(statement).await?.rows_affected();
    }
    let held_back = producer.await?;
    Ok(Simulated {
        fixes,
        held_back,
        planted,
    })
}

/// A fix ready to be written: its member, itself, its flags.
type Row = (Uuid, Draft, Flags);

/// A span of time, start inclusive, end exclusive.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// The simulation, a local day at a time.
struct Simulation<'a> {
    world: &'a World,
    plan: &'a Plan,
    /// Rostered spans of each member, for outside_shift.
    spans: HashMap<Uuid, Vec<Span>>,
    /// By local day of their start, the shifts each member turns out for.
    days: std::vec::IntoIter<HashMap<Uuid, Vec<&'a shift::Model>>>,
    /// Each member's latest fixes with their flags: the context the next are judged in,
    /// as the server judges an upload against what it has stored.
    context: HashMap<Uuid, Vec<StoredFix>>,
    /// Fixes recorded but not yet received.
    held_back: u64,
}

impl<'a> Simulation<'a> {
    fn new(world: &'a World, plan: &'a Plan, shifts: &'a [shift::Model]) -> Simulation<'a> {
        let mut spans: HashMap<Uuid, Vec<Span>> = HashMap::new();
        let mut days: Vec<(NaiveDate, HashMap<Uuid, Vec<&shift::Model>>)> = Vec::new();
        for s in shifts {
            let Some(team) = s.team_id.and_then(|t| world.teams.get(&t)) else {
                continue;
            };
            let day = s.starts_at.with_timezone(&world.tz).date_naive();
            if days.last().is_none_or(|(d, _)| *d != day) {
                days.push((day, HashMap::new()));
            }
            let turning_out = turnout(world, s, team);
            for m in &team.members {
                spans.entry(*m).or_default().push((s.starts_at, s.ends_at));
                if turning_out.contains(m)
                    && let Some((_, duties)) = days.last_mut()
                {
                    duties.entry(*m).or_default().push(s);
                }
            }
        }
        Simulation {
            world,
            plan,
            spans,
            days: days
                .into_iter()
                .map(|(_, d)| d)
                .collect::<Vec<_>>()
                .into_iter(),
            context: HashMap::new(),
            held_back: 0,
        }
    }

    /// The next day's fixes, in time order; `None` after the last day.
    fn next_day(&mut self) -> Option<Vec<Row>> {
        let world = self.world;
        let duties = self.days.next()?;
        let mut members: Vec<Uuid> = duties.keys().copied().collect();
        members.sort_by(|a, b| world.username(*a).cmp(world.username(*b)));
        let keep = world.thresholds.static_repeat_run + 4;
        let mut rows: Vec<Row> = Vec::new();
        for member in members {
            let mut drafts = Vec::new();
            for s in &duties[&member] {
                let conduct = self
                    .plan
                    .conduct
                    .get(&(s.id, member))
                    .copied()
                    .unwrap_or(Conduct::Duty);
                duty(
                    world,
                    s,
                    member,
                    conduct,
                    self.plan.mock == Some(member),
                    self.plan.late.contains(&member),
                    &mut drafts,
                );
            }
            let before = drafts.len();
            // Whatever the server would not have received yet is still on the phone.
            drafts.retain(|d| d.received_at <= world.now);
            self.held_back += (before - drafts.len()) as u64;
            drafts.sort_by_key(|d| d.recorded_at);
            let stored = self.context.entry(member).or_default();
            let flags = flags_of(world, member, stored, &drafts, &self.spans[&member]);
            // The demo writes each member's fixes in time order and keeps the new fixes'
            // flags as judged. A verdict the server would revise on a stored fix (a
            // teleport as a member's first fix, say) is not written back: the simulated
            // phones make no such case, and so no stored fix needs its id.
            stored.extend(drafts.iter().zip(&flags).map(|(d, f)| StoredFix {
                id: Uuid::nil(),
                sample: d.sample(),
                flags: *f,
            }));
            let surplus = stored.len().saturating_sub(keep);
            stored.drain(..surplus);
            rows.extend(drafts.into_iter().zip(flags).map(|(d, f)| (member, d, f)));
        }
        rows.sort_by_key(|(_, d, _)| d.recorded_at);
        Some(rows)
    }
}

/// The flags the server's rules give a member's new fixes (in time order), judged in the
/// context of their stored ones.
fn flags_of(
    world: &World,
    member: Uuid,
    stored: &[StoredFix],
    drafts: &[Draft],
    spans: &[Span],
) -> Vec<Flags> {
    let new: Vec<(FixSample, bool)> = drafts.iter().map(|d| (d.sample(), d.mock)).collect();
    // Judged as one upload: `now` as the time received gives the same clock_skew verdict
    // as each fix's own received_at, since none was recorded after either.
    let mut flags = plausibility::judge_batch(
        stored,
        &new,
        world.now,
        mobility(world, member),
        &world.thresholds,
    );
    for (d, f) in drafts.iter().zip(flags.iter_mut()) {
        let t = d.recorded_at;
        if !spans.iter().any(|(a, b)| *a <= t && t < *b) {
            f.insert(Flags::OUTSIDE_SHIFT);
        }
    }
    flags
}

/// Foot or vehicle, as the server decides it ([`Mobility::of_team_kinds`]).
fn mobility(world: &World, member: Uuid) -> Mobility {
    Mobility::of_team_kinds(
        world
            .teams
            .values()
            .filter(|t| t.members.contains(&member))
            .map(|t| t.kind),
    )
}

fn row(member: Uuid, d: &Draft, flags: Flags) -> fix::ActiveModel {
    // Like the server's ids: time-ordered by arrival.
    let millis = u64::try_from(d.received_at.timestamp_millis()).unwrap_or(0);
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&d.client_id.as_bytes()[6..16]);
    fix::ActiveModel {
        id: Set(uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()),
        member_id: Set(member),
        client_id: Set(d.client_id),
        recorded_at: Set(d.recorded_at),
        received_at: Set(d.received_at),
        lat: Set(d.position.lat),
        lon: Set(d.position.lon),
        accuracy_m: Set(d.accuracy_m),
        speed_mps: Set(d.speed_mps),
        heading_deg: Set(d.heading_deg),
        altitude_m: Set(d.altitude_m),
        battery: Set(d.battery),
        kind: Set(d.kind.to_owned()),
        post_id: Set(Some(d.post_id)),
        shift_id: Set(Some(d.shift_id)),
        datum: Set("wgs84".to_owned()),
        mock: Set(d.mock),
        flags: Set(flags.0),
        // What the server records for fixes posted to /api/v1/checkins.
        source: Set("api".to_owned()),
    }
}

/// Who of a team turns out for a shift: everyone, except that a volunteer squad sends
/// two to four of its members (squads are large; the areas need two at a time).
fn turnout(world: &World, s: &shift::Model, team: &SimTeam) -> Vec<Uuid> {
    let post = &world.posts[&s.post_id];
    if post.kind != PostKind::Area || team.members.len() <= 3 {
        return team.members.clone();
    }
    let mut rng = prng(&team.code, s.starts_at.timestamp());
    let mut order = team.members.clone();
    // Fisher-Yates.
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let n = 2 + (rng.next_u64() % 3) as usize;
    order.truncate(n.min(team.members.len()));
    order
}

/// Picks the shifts and members of the deliberate failures.
fn plan(world: &World, shifts: &[shift::Model]) -> Plan {
    let mut plan = Plan::default();
    let code_of = |s: &shift::Model| world.posts[&s.post_id].code.as_str();
    let at = |code: &str, start: Option<DateTime<Utc>>| {
        shifts
            .iter()
            .find(|s| code_of(s) == code && Some(s.starts_at) == start && s.ends_at <= world.now)
    };
    let team_of = |s: &shift::Model| s.team_id.and_then(|t| world.teams.get(&t));

    // A kiosk officer leaves the kiosk from 02:00 to 04:00 on the night shift two days ago.
    if let Some(s) = at(EMPTY_KIOSK, world.local(-2, 0))
        && let Some(officer) = team_of(s).and_then(|t| t.members.first())
        && let (Some(from), Some(to)) = (world.local(-2, 2), world.local(-2, 4))
    {
        plan.conduct
            .insert((s.id, *officer), Conduct::Away { from, to });
        plan.planted.push(Planted {
            failure: Failure::EmptyKiosk,
            post_code: EMPTY_KIOSK.to_owned(),
            who: world.username(*officer).to_owned(),
            shift_ids: vec![s.id],
            from,
            to,
        });
    }

    // A foot patrol walks only the first half of its route on the day shift three days ago.
    if let Some(s) = at(HALF_ROUTE, world.local(-3, 8))
        && let Some(team) = team_of(s)
    {
        for m in &team.members {
            plan.conduct.insert((s.id, *m), Conduct::HalfRoute);
        }
        plan.planted.push(Planted {
            failure: Failure::HalfRoute,
            post_code: HALF_ROUTE.to_owned(),
            who: team.code.clone(),
            shift_ids: vec![s.id],
            from: s.starts_at,
            to: s.ends_at,
        });
    }

    // One of a checkpoint crew of two stays away on yesterday's evening shift.
    if let Some(s) = at(SHORT_CHECKPOINT, world.local(-1, 16))
        && let Some(team) = team_of(s)
        && let Some(absent) = team.members.last()
    {
        plan.conduct.insert((s.id, *absent), Conduct::Absent);
        plan.planted.push(Planted {
            failure: Failure::ShortCheckpoint,
            post_code: SHORT_CHECKPOINT.to_owned(),
            who: world.username(*absent).to_owned(),
            shift_ids: vec![s.id],
            from: s.starts_at,
            to: s.ends_at,
        });
    }

    // A kiosk officer runs a fake-GPS app on every shift.
    if let Some((member, _)) = world
        .usernames
        .iter()
        .find(|(_, name)| name.as_str() == MOCK_MEMBER)
    {
        plan.mock = Some(*member);
        let theirs: Vec<&shift::Model> = shifts
            .iter()
            .filter(|s| team_of(s).is_some_and(|t| t.members.contains(member)))
            .collect();
        if let (Some(first), Some(last)) = (theirs.first(), theirs.last()) {
            plan.planted.push(Planted {
                failure: Failure::MockMember,
                post_code: code_of(first).to_owned(),
                who: MOCK_MEMBER.to_owned(),
                shift_ids: theirs.iter().map(|s| s.id).collect(),
                from: first.starts_at,
                to: last.ends_at.min(world.now),
            });
        }
    }

    // The crew on duty at a checkpoint five hours ago syncs its phones six hours late, so
    // the last six hours of its fixes have not arrived: whichever of its shifts overlaps
    // them is short of data (a finished one partial, a running one unstaffed since).
    let five_hours_ago = world.now - Duration::hours(5);
    if let Some(s) = shifts.iter().find(|s| {
        code_of(s) == LATE_CHECKPOINT && s.starts_at <= five_hours_ago && five_hours_ago < s.ends_at
    }) && let Some(team) = team_of(s)
    {
        plan.late.extend(team.members.iter().copied());
        let from = world.now - LATE_BY;
        plan.planted.push(Planted {
            failure: Failure::LateTeam,
            post_code: LATE_CHECKPOINT.to_owned(),
            who: team.code.clone(),
            shift_ids: shifts
                .iter()
                .filter(|x| x.team_id == s.team_id && x.ends_at > from)
                .map(|x| x.id)
                .collect(),
            from,
            to: world.now,
        });
    }
    plan
}

/// Appends the fixes of one member on one shift.
#[allow(clippy::too_many_arguments)]
fn duty(
    world: &World,
    s: &shift::Model,
    member: Uuid,
    conduct: Conduct,
    mock: bool,
    late: bool,
    out: &mut Vec<Draft>,
) {
    if conduct == Conduct::Absent {
        return;
    }
    let post = &world.posts[&s.post_id];
    let start = s.starts_at.timestamp();
    let mut rng = prng(world.username(member), start);
    // Shared by everyone on the shift: a patrol moves together.
    let mut crew = prng(&post.code, start);

    // Arrival and departure around the shift's bounds, in seconds.
    let (arrive, leave) = match post.kind {
        PostKind::Route => (rng.between(-300.0, 180.0), rng.between(0.0, 240.0)),
        PostKind::Checkpoint | PostKind::Kiosk => {
            (rng.between(-720.0, 120.0), rng.between(0.0, 360.0))
        }
        PostKind::Area => (rng.between(-300.0, 300.0), rng.between(-180.0, 300.0)),
    };
    let until = (s.ends_at + Duration::milliseconds((leave * 1000.0) as i64)).min(world.now);
    let mut t = s.starts_at + Duration::milliseconds((arrive * 1000.0) as i64);

    let mut motion = Motion::new(post, conduct, &mut crew, &mut rng, s.starts_at);
    let (first_kind, last_kind) = match post.kind {
        PostKind::Checkpoint | PostKind::Kiosk => ("arrive", "depart"),
        _ => ("on_duty", "off_duty"),
    };
    let mut battery = rng.between(70.0, 100.0);
    let drain_per_s = rng.between(4.0, 7.0) / 3600.0;
    let first = out.len();
    let mut previous = t;
    while t < until {
        let dt = (t - previous).as_seconds_f64();
        let (xy, speed, heading) = motion.at(t, dt, &mut rng);
        let (position, accuracy_m, speed_mps, heading_deg) = if mock {
            // A fake-GPS app replays one position, bit for bit.
            let spot = match &post.place {
                Place::Point(p) => *p,
                _ => xy,
            };
            (world.lonlat(spot), 3.0, Some(0.0), None)
        } else {
            // Mostly 5-20 m; now and then a poor fix indoors or between tall buildings.
            let accuracy = if rng.unit() < 0.005 {
                rng.between(60.0, 150.0)
            } else {
                5.0 + 15.0 * rng.unit().powf(1.5)
            };
            let sd = accuracy / 3.0;
            let noisy = (xy.0 + sd * rng.normal(), xy.1 + sd * rng.normal());
            let reported = (speed + 0.1 * rng.normal()).max(0.0);
            (
                world.lonlat(noisy),
                (accuracy * 10.0).round() / 10.0,
                Some((reported * 100.0).round() / 100.0),
                heading.map(|h| (h * 10.0).round() / 10.0),
            )
        };
        battery = (battery - drain_per_s * dt).max(5.0);
        let delay = if late {
            LATE_BY + rng.duration(5.0, 90.0)
        } else {
            rng.duration(1.0, 10.0)
        };
        out.push(Draft {
            client_id: rng.uuid(),
            recorded_at: t,
            received_at: t + delay,
            position,
            accuracy_m,
            speed_mps,
            heading_deg,
            altitude_m: Some(((405.0 + 3.0 * rng.normal()) * 10.0).round() / 10.0),
            battery: Some(battery.round()),
            kind: if out.len() == first {
                first_kind
            } else {
                "ping"
            },
            post_id: s.post_id,
            shift_id: s.id,
            mock,
        });
        previous = t;
        t += rng.duration(INTERVAL_S.0, INTERVAL_S.1);
    }
    // The last fix says off duty only if the member has really left by now.
    if out.len() > first
        && until < world.now
        && let Some(last) = out.last_mut()
    {
        last.kind = last_kind;
    }
}

/// A planned absence from a post: the span it is empty, and where the member goes.
struct Away {
    empty: Span,
    to: (f64, f64),
}

/// How a member moves during a shift: along a route, about a fixed post, or around an
/// area. Positions are in metres of the district's projection.
enum Motion<'a> {
    /// Back and forth along `line` over `[0, span]`, with a pause at each end.
    Route {
        line: &'a MeasuredLine,
        span: f64,
        speed: f64,
        pause_s: f64,
        depart: DateTime<Utc>,
        side: (f64, f64),
    },
    /// Standing at a spot near the post; away for a span if so planned.
    Post {
        spot: (f64, f64),
        away: Option<Away>,
    },
    /// Strolling from one random point of the area to the next, pausing now and then.
    Area {
        min: (f64, f64),
        max: (f64, f64),
        at: (f64, f64),
        target: (f64, f64),
        pause_s: f64,
        speed: f64,
    },
}

impl<'a> Motion<'a> {
    fn new(
        post: &'a SimPost,
        conduct: Conduct,
        crew: &mut Prng,
        rng: &mut Prng,
        shift_start: DateTime<Utc>,
    ) -> Motion<'a> {
        match &post.place {
            Place::Route(line) => {
                let length = line.length_m();
                let driven = length >= DRIVEN_FROM_M;
                Motion::Route {
                    line,
                    span: if conduct == Conduct::HalfRoute {
                        length / 2.0
                    } else {
                        length
                    },
                    speed: if driven {
                        crew.between(6.0, 9.0)
                    } else {
                        crew.between(1.2, 1.5)
                    },
                    pause_s: crew.between(120.0, 600.0),
                    depart: shift_start + crew.duration(0.0, 240.0),
                    // Walking or sitting side by side.
                    side: (rng.normal(), rng.normal()),
                }
            }
            Place::Point(p) => {
                let (r, a) = (
                    if post.kind == PostKind::Kiosk {
                        rng.between(0.0, 10.0)
                    } else {
                        rng.between(0.0, 20.0)
                    },
                    rng.between(0.0, std::f64::consts::TAU),
                );
                let spot = (p.0 + r * a.cos(), p.1 + r * a.sin());
                let away = match conduct {
                    // A noodle stall 600 m down the road.
                    Conduct::Away { from, to } => Some(Away {
                        empty: (from, to),
                        to: (p.0, p.1 - 600.0),
                    }),
                    _ => None,
                };
                Motion::Post { spot, away }
            }
            Place::Area { min, max } => {
                let mut pick = || {
                    (
                        rng.between(min.0 + 15.0, max.0 - 15.0),
                        rng.between(min.1 + 15.0, max.1 - 15.0),
                    )
                };
                let at = pick();
                let target = pick();
                Motion::Area {
                    min: *min,
                    max: *max,
                    at,
                    target,
                    pause_s: 0.0,
                    speed: rng.between(0.8, 1.2),
                }
            }
        }
    }

    /// Position, speed (m/s) and heading (degrees) at `t`, `dt` seconds after the previous
    /// fix.
    fn at(&mut self, t: DateTime<Utc>, dt: f64, rng: &mut Prng) -> ((f64, f64), f64, Option<f64>) {
        match self {
            Motion::Route {
                line,
                span,
                speed,
                pause_s,
                depart,
                side,
            } => {
                let elapsed = (t - *depart).as_seconds_f64().max(0.0);
                let leg = *span / *speed;
                let cycle = 2.0 * (leg + *pause_s);
                let phase = elapsed % cycle;
                let (measure, moving, outward) = if elapsed == 0.0 {
                    (0.0, false, true)
                } else if phase < leg {
                    (phase * *speed, true, true)
                } else if phase < leg + *pause_s {
                    (*span, false, true)
                } else if phase < 2.0 * leg + *pause_s {
                    (*span - (phase - leg - *pause_s) * *speed, true, false)
                } else {
                    (0.0, false, false)
                };
                let (x, y) = line.point_at(measure);
                let ahead = line.point_at(measure + 1.0);
                let behind = line.point_at(measure - 1.0);
                let mut heading = (ahead.0 - behind.0).atan2(ahead.1 - behind.1).to_degrees();
                if !outward {
                    heading += 180.0;
                }
                (
                    (x + side.0, y + side.1),
                    if moving { *speed } else { 0.0 },
                    moving.then_some(heading.rem_euclid(360.0)),
                )
            }
            Motion::Post { spot, away } => {
                let fidget = (2.0 * rng.normal(), 2.0 * rng.normal());
                let here = (spot.0 + fidget.0, spot.1 + fidget.1);
                let Some(Away {
                    empty: (from, to),
                    to: stall,
                }) = away
                else {
                    return (here, 0.0, None);
                };
                // Out of the post's 50 m about 40 s after setting off, back within it about
                // 40 s before arriving: so the post is empty from `from` to `to`.
                let walk_s = ((stall.0 - spot.0).hypot(stall.1 - spot.1)) / STROLL_MPS;
                let leave = *from - Duration::seconds(40);
                let back = *to + Duration::seconds(40);
                let since_leave = (t - leave).as_seconds_f64();
                let until_back = (back - t).as_seconds_f64();
                let lerp = |f: f64| {
                    let f = f.clamp(0.0, 1.0);
                    (
                        spot.0 + (stall.0 - spot.0) * f,
                        spot.1 + (stall.1 - spot.1) * f,
                    )
                };
                if since_leave < 0.0 || until_back <= 0.0 {
                    (here, 0.0, None)
                } else if since_leave < walk_s {
                    (lerp(since_leave / walk_s), STROLL_MPS, Some(180.0))
                } else if until_back < walk_s {
                    (lerp(until_back / walk_s), STROLL_MPS, Some(0.0))
                } else {
                    ((stall.0 + fidget.0, stall.1 + fidget.1), 0.0, None)
                }
            }
            Motion::Area {
                min,
                max,
                at,
                target,
                pause_s,
                speed,
            } => {
                let mut left = dt;
                let mut moved = false;
                while left > 0.0 {
                    if *pause_s > 0.0 {
                        let p = pause_s.min(left);
                        *pause_s -= p;
                        left -= p;
                        continue;
                    }
                    let d = (target.0 - at.0).hypot(target.1 - at.1);
                    if *speed * left >= d {
                        *at = *target;
                        left -= d / *speed;
                        *target = (
                            rng.between(min.0 + 15.0, max.0 - 15.0),
                            rng.between(min.1 + 15.0, max.1 - 15.0),
                        );
                        *pause_s = rng.between(0.0, 240.0);
                    } else {
                        let f = *speed * left / d;
                        *at = (at.0 + (target.0 - at.0) * f, at.1 + (target.1 - at.1) * f);
                        left = 0.0;
                        moved = true;
                    }
                }
                let heading = (target.0 - at.0).atan2(target.1 - at.1).to_degrees();
                (
                    *at,
                    if moved { *speed } else { 0.0 },
                    moved.then_some(heading.rem_euclid(360.0)),
                )
            }
        }
    }
}
