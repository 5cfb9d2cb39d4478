//! The reference district: units, 18 grid routes, 15 checkpoints, 20 kiosks, 30 volunteer
//! areas, teams of every kind with members, rosters for the past and next 7 days with two
//! deliberate roster gaps, and the simulated fixes of every shift up to now with five
//! deliberate duty failures ([`Failure`]). Laid out around 34.22°N 108.95°E; not a real
//! street grid, but plausible distances and names.

mod simulate;

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
    TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

pub use simulate::{
    EMPTY_KIOSK, HALF_ROUTE, LATE_BY, LATE_CHECKPOINT, MOCK_MEMBER, SHORT_CHECKPOINT,
};

use crate::{
    auth::Role,
    domain::{
        datum::Datum,
        geodesy::{LocalProjection, LonLat},
        geometry::{PostGeometry, PostKind},
        roster::{self, Rotation},
    },
    routes::{posts::Staffing, rosters::insert_planned},
    state::AppState,
    store::{member, post, shift, team, team_member, unit},
};

/// The password of every demo account.
pub const DEMO_PASSWORD: &str = "patrol-demo";
/// Most days before today the demo rosters and simulates.
pub const MAX_PAST_DAYS: u32 = 30;

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Days before today that are rostered (today and the next 7 days always are).
    pub past_days: u32,
    /// Whether to simulate the fixes of every shift up to now and store their coverage.
    pub fixes: bool,
}

impl Default for DemoOptions {
    /// The real demo: a week of past duty, simulated.
    fn default() -> Self {
        DemoOptions {
            past_days: 7,
            fixes: true,
        }
    }
}

/// The deliberate duty failures the simulated fixes carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A kiosk officer leaves the kiosk empty for two hours of a night shift.
    EmptyKiosk,
    /// A patrol walks only the first half of its route on one shift.
    HalfRoute,
    /// One of a checkpoint's crew of two stays away for a shift.
    ShortCheckpoint,
    /// A member's fixes all come from a mock location provider.
    MockMember,
    /// A crew's phones sync six hours late, so its latest fixes have not arrived.
    LateTeam,
}

impl Failure {
    /// What it is, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::EmptyKiosk => "kiosk empty for two hours",
            Failure::HalfRoute => "route patrolled only halfway",
            Failure::ShortCheckpoint => "checkpoint staffed by one of two",
            Failure::MockMember => "every fix from a mock location provider",
            Failure::LateTeam => "phones sync six hours late",
        }
    }
}

/// One deliberate failure, where to find it.
#[derive(Debug, Clone)]
pub struct Planted {
    /// Which failure.
    pub failure: Failure,
    /// The post it happens at.
    pub post_code: String,
    /// The member (username) or team (code) at fault.
    pub who: String,
    /// The shifts whose coverage it spoils.
    pub shift_ids: Vec<Uuid>,
    /// Start of the failure.
    pub from: DateTime<Utc>,
    /// End of the failure.
    pub to: DateTime<Utc>,
}

/// What the demo loaded.
#[derive(Debug, Default)]
pub struct DemoSummary {
    /// When it was loaded: fixes are simulated up to here.
    pub loaded_at: DateTime<Utc>,
    /// `PATROL_TIMEZONE`, for printing local times.
    pub timezone: String,
    /// Units created.
    pub units: usize,
    /// Posts by kind.
    pub posts: HashMap<&'static str, usize>,
    /// Teams created.
    pub teams: usize,
    /// Members created.
    pub members: usize,
    /// Shifts created.
    pub shifts: u64,
    /// Simulated fixes written.
    pub fixes: u64,
    /// Fixes of the late crew recorded but not yet received at `loaded_at`.
    pub held_back: u64,
    /// Past shifts whose coverage was computed (and stored, for the finished ones).
    pub shifts_covered: usize,
    /// The deliberate duty failures in the fixes.
    pub planted: Vec<Planted>,
    /// Accounts worth logging in with: (username, role, what they see).
    pub accounts: Vec<(String, &'static str, String)>,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "demo district loaded: {} units, {} routes, {} checkpoints, {} kiosks, {} areas, {} teams, {} members, {} shifts",
            self.units,
            self.posts.get("route").unwrap_or(&0),
            self.posts.get("checkpoint").unwrap_or(&0),
            self.posts.get("kiosk").unwrap_or(&0),
            self.posts.get("area").unwrap_or(&0),
            self.teams,
            self.members,
            self.shifts
        )?;
        if self.fixes > 0 {
            writeln!(
                f,
                "{} simulated fixes ({} more still on late phones); coverage computed for {} past shifts",
                self.fixes, self.held_back, self.shifts_covered
            )?;
        }
        if !self.planted.is_empty() {
            let tz: chrono_tz::Tz = self.timezone.parse().unwrap_or(chrono_tz::UTC);
            let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M");
            writeln!(f, "planted duty failures ({}):", self.timezone)?;
            for p in &self.planted {
                writeln!(
                    f,
                    "  {:<4} {:<40} {:<12} {} to {} ({} shift{})",
                    p.post_code,
                    p.failure.describe(),
                    p.who,
                    local(p.from),
                    local(p.to),
                    p.shift_ids.len(),
                    if p.shift_ids.len() == 1 { "" } else { "s" }
                )?;
            }
        }
        writeln!(
            f,
            "every demo account has the password {DEMO_PASSWORD:?}; for example:"
        )?;
        for (username, role, what) in &self.accounts {
            writeln!(f, "  {username:<22} {role:<15} {what}")?;
        }
        Ok(())
    }
}

/// Whether the database holds no organisation yet.
pub async fn is_empty(state: &AppState) -> anyhow::Result<bool> {
    Ok(unit::Entity::find().count(&state.db).await? == 0
        && member::Entity::find().count(&state.db).await? == 0
        && post::Entity::find().count(&state.db).await? == 0)
}

struct Builder<'a, C: ConnectionTrait> {
    db: &'a C,
    proj: LocalProjection,
    now: chrono::DateTime<Utc>,
    password_hash: String,
    summary: DemoSummary,
    /// What the simulation needs to know of the posts, teams and members made.
    posts: HashMap<Uuid, simulate::SimPost>,
    teams: HashMap<Uuid, simulate::SimTeam>,
    usernames: HashMap<Uuid, String>,
}

impl<C: ConnectionTrait> Builder<'_, C> {
    fn at(&self, x: f64, y: f64) -> LonLat {
        let p = self.proj.to_lonlat(x, y);
        LonLat {
            lon: (p.lon * 1e7).round() / 1e7,
            lat: (p.lat * 1e7).round() / 1e7,
        }
    }

    async fn unit(
        &mut self,
        code: &str,
        name: &str,
        kind: &str,
        parent: Option<&unit::Model>,
    ) -> anyhow::Result<unit::Model> {
        let id = Uuid::now_v7();
        let path = match parent {
            Some(p) => format!("{}{id}/", p.path),
            None => format!("/{id}/"),
        };
        self.summary.units += 1;
        Ok(unit::ActiveModel {
            id: Set(id),
            code: Set(code.to_owned()),
            name: Set(name.to_owned()),
            kind: Set(kind.to_owned()),
            parent_id: Set(parent.map(|p| p.id)),
            path: Set(path),
            created_at: Set(self.now),
            updated_at: Set(self.now),
        }
        .insert(self.db)
        .await?)
    }

    async fn members(
        &mut self,
        prefix: &str,
        role: Role,
        unit: Option<&unit::Model>,
        count: usize,
    ) -> anyhow::Result<Vec<Uuid>> {
        let mut ids = Vec::with_capacity(count);
        let rows: Vec<member::ActiveModel> = (1..=count)
            .map(|i| {
                let id = Uuid::now_v7();
                ids.push(id);
                let username = if count == 1 {
                    prefix.to_owned()
                } else {
                    format!("{prefix}.{i}")
                };
                self.usernames.insert(id, username.clone());
                member::ActiveModel {
                    id: Set(id),
                    display_name: Set(username.replace('.', " ")),
                    username: Set(username),
                    role: Set(role.as_str().to_owned()),
                    unit_id: Set(unit.map(|u| u.id)),
                    active: Set(true),
                    password_hash: Set(self.password_hash.clone()),
                    pin_hash: Set(None),
                    created_at: Set(self.now),
                    updated_at: Set(self.now),
                }
            })
            .collect();
        self.summary.members += count;
        member::Entity::insert_many(rows)
            .exec_without_returning(self.db)
            .await?;
        Ok(ids)
    }

    async fn team(
        &mut self,
        code: &str,
        name: &str,
        kind: &'static str,
        unit: &unit::Model,
        members: &[Uuid],
    ) -> anyhow::Result<Uuid> {
        let id = Uuid::now_v7();
        team::ActiveModel {
            id: Set(id),
            code: Set(code.to_owned()),
            name: Set(name.to_owned()),
            kind: Set(kind.to_owned()),
            unit_id: Set(unit.id),
            created_at: Set(self.now),
            updated_at: Set(self.now),
        }
        .insert(self.db)
        .await?;
        if !members.is_empty() {
            team_member::Entity::insert_many(members.iter().map(|m| team_member::ActiveModel {
                team_id: Set(id),
                member_id: Set(*m),
            }))
            .exec_without_returning(self.db)
            .await?;
        }
        self.summary.teams += 1;
        self.teams.insert(
            id,
            simulate::SimTeam {
                code: code.to_owned(),
                kind,
                members: members.to_vec(),
            },
        );
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn post(
        &mut self,
        code: &str,
        name: &str,
        kind: PostKind,
        unit: &unit::Model,
        geometry: serde_json::Value,
        min_headcount: i32,
        staffing: Staffing,
    ) -> anyhow::Result<Uuid> {
        let g = PostGeometry::parse(kind, &geometry, Datum::Wgs84)
            .map_err(|e| anyhow::anyhow!("demo post {code} has a bad geometry: {e:?}"))?;
        let [min_lon, min_lat, max_lon, max_lat] = g.bbox();
        let route = kind == PostKind::Route;
        let id = Uuid::now_v7();
        post::ActiveModel {
            id: Set(id),
            code: Set(code.to_owned()),
            name: Set(name.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            unit_id: Set(unit.id),
            geometry: Set(g.to_geojson().to_string()),
            length_m: Set(g.length_m()),
            corridor_m: Set(route.then_some(30.0)),
            radius_m: Set((!route).then_some(if kind == PostKind::Area { 30.0 } else { 50.0 })),
            min_headcount: Set(min_headcount),
            required_coverage: Set(route.then_some(0.8)),
            required_presence: Set((!route).then_some(0.9)),
            arrival_grace_min: Set(15),
            staffing: Set(staffing.as_str().to_owned()),
            min_lon: Set(min_lon),
            min_lat: Set(min_lat),
            max_lon: Set(max_lon),
            max_lat: Set(max_lat),
            created_at: Set(self.now),
            updated_at: Set(self.now),
        }
        .insert(self.db)
        .await?;
        *self.summary.posts.entry(kind.as_str()).or_default() += 1;
        self.posts.insert(
            id,
            simulate::SimPost {
                code: code.to_owned(),
                kind,
                place: simulate::Place::of(&self.proj, &g),
            },
        );
        Ok(id)
    }

    fn point(&self, x: f64, y: f64) -> serde_json::Value {
        let p = self.at(x, y);
        json!({"type": "Point", "coordinates": [p.lon, p.lat]})
    }

    /// A staircase walk along a 400 m street grid, from (x, y), of about `length` metres.
    fn route(
        &self,
        x: f64,
        y: f64,
        length: f64,
        east_first: bool,
        north: bool,
    ) -> serde_json::Value {
        let mut pts = vec![self.at(x, y)];
        let (mut cx, mut cy, mut walked) = (x, y, 0.0);
        let mut i = 0;
        while walked < length {
            let leg = f64::min(if i % 2 == 0 { 1200.0 } else { 800.0 }, length - walked);
            let along_x = (i % 2 == 0) == east_first;
            if along_x {
                cx += leg;
            } else if north {
                cy += leg;
            } else {
                cy -= leg;
            }
            walked += leg;
            pts.push(self.at(cx, cy));
            i += 1;
        }
        json!({"type": "LineString", "coordinates": pts.iter().map(|p| [p.lon, p.lat]).collect::<Vec<_>>()})
    }

    fn square(&self, x: f64, y: f64, side: f64) -> serde_json::Value {
        let c = [
            (x, y),
            (x + side, y),
            (x + side, y + side),
            (x, y + side),
            (x, y),
        ];
        json!({"type": "Polygon", "coordinates": [c.iter().map(|(a, b)| { let p = self.at(*a, *b); [p.lon, p.lat] }).collect::<Vec<_>>()]})
    }
}

/// Loads the demo district into an empty database: a week of past duty with its
/// simulated fixes, and the coverage of its finished shifts stored.
pub async fn load(state: &AppState) -> anyhow::Result<DemoSummary> {
    load_with(state, DemoOptions::default()).await
}

/// Loads the demo district into an empty database, as `options` say.
pub async fn load_with(state: &AppState, options: DemoOptions) -> anyhow::Result<DemoSummary> {
    anyhow::ensure!(
        options.past_days <= MAX_PAST_DAYS,
        "the demo rosters at most {MAX_PAST_DAYS} past days, not {}",
        options.past_days
    );
    if !is_empty(state).await? {
        anyhow::bail!(
            "the database already holds units, members or posts; the demo loads only into an empty one"
        );
    }
    let tz: chrono_tz::Tz = state
        .settings
        .timezone
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // One hash for every demo account: hashing hundreds of passwords would take minutes.
    let password_hash = state.passwords.hash(DEMO_PASSWORD.to_owned()).await?;
    let txn = state.db.begin().await?;
    let mut b = Builder {
        db: &txn,
        proj: LocalProjection::new(LonLat {
            lon: 108.95,
            lat: 34.22,
        }),
        now: Utc::now(),
        password_hash,
        summary: DemoSummary {
            timezone: state.settings.timezone.clone(),
            ..DemoSummary::default()
        },
        posts: HashMap::new(),
        teams: HashMap::new(),
        usernames: HashMap::new(),
    };
    b.summary.loaded_at = b.now;

    // The organisation: a district, four streets each with a police station, and under each
    // street two communities and a village, each with a compound or villager group.
    let district = b.unit("XD", "Xinan District", "district", None).await?;
    b.members("admin", Role::Admin, None, 1).await?;
    b.members("cmd.district", Role::Commander, Some(&district), 1)
        .await?;
    b.summary
        .accounts
        .push(("admin".into(), "admin", "everything".into()));
    b.summary.accounts.push((
        "cmd.district".into(),
        "commander",
        "the whole district".into(),
    ));

    let street_names = ["Yanta", "Qujiang", "Dayan", "Xiaozhai"];
    // Quadrant origins (metres from the district centre).
    let quadrants = [
        (-5000.0, 0.0),
        (0.0, 0.0),
        (-5000.0, -4000.0),
        (0.0, -4000.0),
    ];
    let mut stations = Vec::new();
    let mut neighbourhoods = Vec::new(); // (unit, is_village, sub-unit, quadrant)
    for (s, name) in street_names.iter().enumerate() {
        let street = b
            .unit(
                &format!("ST{:02}", s + 1),
                &format!("{name} Street"),
                "street",
                Some(&district),
            )
            .await?;
        b.members(
            &format!("cmd.st{:02}", s + 1),
            Role::Commander,
            Some(&street),
            1,
        )
        .await?;
        let station = b
            .unit(
                &format!("PS{:02}", s + 1),
                &format!("{name} Police Station"),
                "police_station",
                Some(&district),
            )
            .await?;
        b.members(
            &format!("cmd.ps{:02}", s + 1),
            Role::Commander,
            Some(&station),
            1,
        )
        .await?;
        stations.push((station, quadrants[s]));
        for c in 0..3 {
            let n = s * 3 + c + 1;
            let village = c == 2;
            let (kind, label, sub_kind, sub_label) = if village {
                ("village", "Village", "villager_group", "Villager Group 1")
            } else {
                ("community", "Community", "compound", "Family Compound")
            };
            let unit = b
                .unit(
                    &format!("CM{n:02}"),
                    &format!("{name} {label} {}", c + 1),
                    kind,
                    Some(&street),
                )
                .await?;
            let sub = b
                .unit(
                    &format!("SG{n:02}"),
                    &format!("{name} {label} {} {sub_label}", c + 1),
                    sub_kind,
                    Some(&unit),
                )
                .await?;
            neighbourhoods.push((unit, sub, quadrants[s], c));
        }
    }
    b.summary.accounts.push((
        "cmd.st01".into(),
        "commander",
        "Yanta Street and its communities".into(),
    ));
    b.summary.accounts.push((
        "cmd.ps01".into(),
        "commander",
        "Yanta Police Station: routes R01, R05, R09, R13, R17, checkpoints, kiosks".into(),
    ));

    let today = b.now.with_timezone(&tz).date_naive();
    let (from, to) = (
        today - Duration::days(i64::from(options.past_days)),
        today + Duration::days(7),
    );
    let t = |s: &str, e: &str| roster::parse_template(s, e).map_err(|e| anyhow::anyhow!("{e}"));
    let three_shifts = [
        t("00:00", "08:00")?,
        t("08:00", "16:00")?,
        t("16:00", "24:00")?,
    ];
    let patrol_shifts = [t("08:00", "16:00")?, t("16:00", "24:00")?];
    let volunteer_shifts = [t("09:00", "12:00")?, t("19:00", "21:00")?];
    let mut plans: Vec<(Uuid, Vec<roster::PlannedShift>)> = Vec::new();

    // 18 grid routes of 3-8 km, split over the four police stations.
    for r in 0..18 {
        let (station, (qx, qy)) = &stations[r % 4];
        let length = 3000.0 + ((r * 1733) % 5000) as f64;
        let (x, y) = (
            qx + 300.0 + (r / 4) as f64 * 800.0,
            qy + 300.0 + (r % 3) as f64 * 400.0,
        );
        let geometry = b.route(x, y, length, r % 2 == 0, r % 3 != 2);
        let code = format!("R{:02}", r + 1);
        let post = b
            .post(
                &code,
                &format!("Grid route {}", r + 1),
                PostKind::Route,
                station,
                geometry,
                1,
                Staffing::Rostered,
            )
            .await?;
        let mut teams = Vec::new();
        for side in ["a", "b"] {
            let prefix = format!("po.r{:02}{side}", r + 1);
            let members = b
                .members(&prefix, Role::PatrolOfficer, Some(station), 3)
                .await?;
            teams.push(
                b.team(
                    &format!("GP-R{:02}{}", r + 1, side.to_uppercase()),
                    &format!("Grid patrol {}{}", r + 1, side.to_uppercase()),
                    "grid_patrol",
                    station,
                    &members,
                )
                .await?,
            );
        }
        plans.push((
            post,
            roster::generate(
                from,
                to,
                &patrol_shifts,
                &teams,
                Rotation::DailyRotation,
                tz,
            )?,
        ));
    }
    b.summary.accounts.push((
        "po.r01a.1".into(),
        "patrol_officer",
        "on grid route R01 (team GP-R01A)".into(),
    ));

    let mut checkpoint_ids = Vec::new();
    // 15 armed checkpoints at the district's entrances, round the clock on the four-team cycle.
    for c in 0..15 {
        let (station, _) = &stations[c % 4];
        let angle = c as f64 / 15.0 * std::f64::consts::TAU;
        let geometry = b.point(6000.0 * angle.cos(), 4800.0 * angle.sin());
        let code = format!("C{:02}", c + 1);
        let post = b
            .post(
                &code,
                &format!("Checkpoint {}", c + 1),
                PostKind::Checkpoint,
                station,
                geometry,
                2,
                Staffing::RoundTheClock,
            )
            .await?;
        checkpoint_ids.push(post);
        let mut teams = Vec::new();
        for k in ["a", "b", "c", "d"] {
            let members = b
                .members(
                    &format!("cp.c{:02}{k}", c + 1),
                    Role::KioskOfficer,
                    Some(station),
                    2,
                )
                .await?;
            teams.push(
                b.team(
                    &format!("CC-C{:02}{}", c + 1, k.to_uppercase()),
                    &format!("Checkpoint crew {}{}", c + 1, k.to_uppercase()),
                    "checkpoint_crew",
                    station,
                    &members,
                )
                .await?,
            );
        }
        plans.push((
            post,
            roster::generate(
                from,
                to,
                &three_shifts,
                &teams,
                Rotation::FourTeamThreeShift,
                tz,
            )?,
        ));
    }

    // 20 kiosks on main roads and at hot spots, round the clock on the four-team cycle.
    let kiosks = [
        ("Central Plaza north", -400.0, 300.0),
        ("Central Plaza south", -400.0, -300.0),
        ("Long-distance bus station", 2500.0, -900.0),
        ("Dongcun urban village", -3200.0, 1800.0),
        ("Xicun urban village", 1800.0, 2200.0),
        ("Yanta market", -2500.0, -1500.0),
        ("Qujiang market", 3200.0, 1200.0),
        ("Dayan crossing", 0.0, 0.0),
        ("Xiaozhai crossing", 1500.0, -2500.0),
        ("Chang'an Road 1", -4500.0, 600.0),
        ("Chang'an Road 2", -3000.0, 600.0),
        ("Chang'an Road 3", -1500.0, 600.0),
        ("Chang'an Road 4", 1500.0, 600.0),
        ("Chang'an Road 5", 3000.0, 600.0),
        ("Yanta Road 1", -1000.0, -3500.0),
        ("Yanta Road 2", -1000.0, -2000.0),
        ("Yanta Road 3", -1000.0, 2000.0),
        ("Yanta Road 4", -1000.0, 3500.0),
        ("Railway station square", 4200.0, 3300.0),
        ("Night market", -2200.0, 3000.0),
    ];
    let mut kiosk_ids = Vec::new();
    for (k, (name, x, y)) in kiosks.iter().enumerate() {
        let quadrant = usize::from(*x >= 0.0) + 2 * usize::from(*y < 0.0);
        let (station, _) = &stations[quadrant];
        let geometry = b.point(*x, *y);
        let code = format!("K{:02}", k + 1);
        let post = b
            .post(
                &code,
                &format!("{name} kiosk"),
                PostKind::Kiosk,
                station,
                geometry,
                1,
                Staffing::RoundTheClock,
            )
            .await?;
        kiosk_ids.push(post);
        let mut teams = Vec::new();
        for t in ["a", "b", "c", "d"] {
            let members = b
                .members(
                    &format!("ko.k{:02}{t}", k + 1),
                    Role::KioskOfficer,
                    Some(station),
                    1,
                )
                .await?;
            teams.push(
                b.team(
                    &format!("KC-K{:02}{}", k + 1, t.to_uppercase()),
                    &format!("Kiosk crew {}{}", k + 1, t.to_uppercase()),
                    "kiosk_crew",
                    station,
                    &members,
                )
                .await?,
            );
        }
        plans.push((
            post,
            roster::generate(
                from,
                to,
                &three_shifts,
                &teams,
                Rotation::FourTeamThreeShift,
                tz,
            )?,
        ));
    }
    b.summary.accounts.push((
        "ko.k01a".into(),
        "kiosk_officer",
        "at kiosk K01 (crew KC-K01A)".into(),
    ));

    // 30 volunteer areas: one per neighbourhood, one per sub-unit, and six more; squads of
    // different strengths, some below the 15 / 5 standard.
    for a in 0..30 {
        let (unit, sub, (qx, qy), c) = &neighbourhoods[a % 12];
        let (owner, size) = match a / 12 {
            0 => (unit, 14 + (a % 5)),
            1 => (sub, 3 + (a % 5)),
            _ => (unit, 15),
        };
        let x = qx + 500.0 + *c as f64 * 1500.0 + (a / 12) as f64 * 400.0;
        let y = qy + 2600.0 + (a / 12) as f64 * 350.0;
        let geometry = b.square(x, y, 300.0);
        let code = format!("A{:02}", a + 1);
        let post = b
            .post(
                &code,
                &format!("{} patch {}", owner.name, a / 12 + 1),
                PostKind::Area,
                owner,
                geometry,
                2,
                Staffing::Rostered,
            )
            .await?;
        let members = b
            .members(
                &format!("vol.a{:02}", a + 1),
                Role::Volunteer,
                Some(owner),
                size,
            )
            .await?;
        let squad = b
            .team(
                &format!("VS-A{:02}", a + 1),
                &format!("Red armband squad {}", a + 1),
                "volunteer_squad",
                owner,
                &members,
            )
            .await?;
        plans.push((
            post,
            roster::generate(
                from,
                to,
                &volunteer_shifts,
                &[squad],
                Rotation::SameTeam,
                tz,
            )?,
        ));
    }
    b.summary
        .accounts
        .push(("vol.a01.1".into(), "volunteer", "in squad VS-A01".into()));

    // A cadre patrol and a joint-defence team, for completeness of the kinds.
    let (first_street_unit, _, _, _) = &neighbourhoods[0];
    let cadres = b
        .members(
            "cadre.st01",
            Role::PatrolOfficer,
            Some(first_street_unit),
            4,
        )
        .await?;
    b.team(
        "CP-ST01",
        "Yanta Street cadre patrol",
        "cadre_patrol",
        first_street_unit,
        &cadres,
    )
    .await?;
    let shops = b
        .members("shop.yanta", Role::Volunteer, Some(first_street_unit), 6)
        .await?;
    b.team(
        "JD-YANTA",
        "Yanta Road shops joint defence",
        "joint_defence",
        first_street_unit,
        &shops,
    )
    .await?;

    for (post_id, planned) in &plans {
        let (created, _) = insert_planned(&txn, &[*post_id], planned)
            .await
            .map_err(|e| anyhow::anyhow!("storing demo shifts: {e}"))?;
        b.summary.shifts += created;
    }

    // Two deliberate roster gaps: kiosk K07 has no one for tomorrow's night shift, and
    // checkpoint C03 lost its day shift three days ago.
    let Builder {
        mut summary,
        posts,
        teams,
        usernames,
        proj,
        now,
        ..
    } = b;
    for (post_id, day, start) in [
        (kiosk_ids[6], today + Duration::days(1), "00:00"),
        (checkpoint_ids[2], today - Duration::days(3), "08:00"),
    ] {
        let local = day.and_time(NaiveTime::parse_from_str(start, "%H:%M")?);
        let starts_at = local
            .and_local_timezone(tz)
            .earliest()
            .ok_or_else(|| anyhow::anyhow!("no such local time"))?
            .with_timezone(&Utc);
        let removed = shift::Entity::delete_many()
            .filter(shift::Column::PostId.eq(post_id))
            .filter(shift::Column::StartsAt.eq(starts_at))
            .exec(&txn)
            .await?;
        summary.shifts -= removed.rows_affected;
    }

    let sqlite = !state.settings.is_postgres();
    if options.fixes {
        let past = shift::Entity::find()
            .filter(shift::Column::StartsAt.lt(now))
            .all(&txn)
            .await?;
        let world = simulate::World {
            proj,
            tz,
            today,
            now,
            thresholds: state.settings.thresholds(),
            posts,
            teams,
            usernames,
        };
        let simulated = write_fixes(&txn, world, &past, sqlite).await?;
        summary.fixes = simulated.fixes;
        summary.held_back = simulated.held_back;
        summary.planted = simulated.planted;
    }
    txn.commit().await?;

    if options.fixes {
        let first = from
            .and_time(NaiveTime::MIN)
            .and_local_timezone(tz)
            .earliest()
            .ok_or_else(|| anyhow::anyhow!("no local midnight on {from}"))?
            .with_timezone(&Utc);
        let covered = store_coverage(state, first).await?;
        summary.shifts_covered = covered;
        if sqlite {
            // The load went through the write-ahead log, which SQLite keeps at its largest
            // size until told otherwise: hundreds of megabytes of disk for nothing.
            state
                .db
                .execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await?;
        }
    }
    Ok(summary)
}

/// Simulates and writes the fixes of the past shifts, inside the loading transaction.
async fn write_fixes(
    txn: &sea_orm::DatabaseTransaction,
    world: simulate::World,
    past: &[shift::Model],
    sqlite: bool,
) -> anyhow::Result<simulate::Simulated> {
    let started = std::time::Instant::now();
    let previous_cache = if sqlite {
        Some(enlarge_page_cache(txn).await?)
    } else {
        None
    };
    let simulated = simulate::simulate(txn, world, past).await;
    if let Some(previous) = previous_cache {
        txn.execute_unprepared(&format!("PRAGMA cache_size = {previous}"))
            .await?;
    }
    let simulated = simulated?;
    tracing::info!(
        fixes = simulated.fixes,
        seconds = started.elapsed().as_secs_f64(),
        "demo fixes simulated and written"
    );
    Ok(simulated)
}

/// Computes and stores the coverage of every shift from `first` on, so that every
/// endpoint answers from stored figures at once; answers how many shifts it computed.
async fn store_coverage(state: &AppState, first: DateTime<Utc>) -> anyhow::Result<usize> {
    let started = std::time::Instant::now();
    let shifts = crate::coverage::rebuild(state, first, Utc::now(), |_, _| {})
        .await
        .map_err(|e| anyhow::anyhow!("storing the demo's coverage: {e}"))?;
    tracing::info!(
        shifts,
        seconds = started.elapsed().as_secs_f64(),
        "demo coverage stored"
    );
    Ok(shifts)
}

/// Gives SQLite a page cache for a bulk load: the default 2 MB holds far fewer pages than
/// the load touches, and SQLite would spend most of its time re-reading its own pages.
/// Answers the size to restore.
async fn enlarge_page_cache<C: ConnectionTrait>(db: &C) -> anyhow::Result<i64> {
    let previous = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "PRAGMA cache_size",
        ))
        .await?
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        // SQLite's default: 2,000 KiB.
        .unwrap_or(-2000);
    db.execute_unprepared("PRAGMA cache_size = -262144").await?;
    Ok(previous)
}
