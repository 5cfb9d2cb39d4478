//! `POST /checkins`: GPS fixes from phones, one or a batch of up to 1,000; and reading
//! them back: `GET /checkins`, `GET /members/{id}/track`.

use std::collections::{HashMap, HashSet};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    domain::{
        datum::Datum,
        geodesy::LonLat,
        plausibility::{self, FixSample, Flags, Mobility},
    },
    error::{ApiError, ApiResult},
    extract::field_of,
    ingest::{Batch, Written},
    routes::shifts::{overlapping, shifts_of_member},
    state::AppState,
    store::{fix, member, post, shift, team, team_member, unit},
};

/// Most fixes in one batch.
pub const MAX_BATCH: usize = 1000;
/// How far ahead of the server clock a fix may be recorded.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_checkins))
}

/// What a fix says about the duty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FixKind {
    /// A periodic position (the default).
    #[default]
    Ping,
    /// Going on duty.
    OnDuty,
    /// Going off duty.
    OffDuty,
    /// Arriving at a post.
    Arrive,
    /// Leaving a post.
    Depart,
    /// An emergency.
    Sos,
}

impl FixKind {
    const ALL: [FixKind; 6] = [
        FixKind::Ping,
        FixKind::OnDuty,
        FixKind::OffDuty,
        FixKind::Arrive,
        FixKind::Depart,
        FixKind::Sos,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FixKind::Ping => "ping",
            FixKind::OnDuty => "on_duty",
            FixKind::OffDuty => "off_duty",
            FixKind::Arrive => "arrive",
            FixKind::Depart => "depart",
            FixKind::Sos => "sos",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> FixKind {
        FixKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_default()
    }
}

/// One fix as a phone sends it.
#[derive(Deserialize, ToSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckinIn {
    /// A UUID made on the device; the same fix sent again is stored once. Any version is
    /// accepted; time-ordered ids (UUID v7, made when the fix is taken) cost the server
    /// less to store than random ones.
    pub client_id: Uuid,
    /// Device time of the fix, RFC 3339; not more than 5 minutes ahead of the server,
    /// not older than the sync window (7 days by default).
    pub recorded_at: DateTime<Utc>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Horizontal accuracy in metres (≥ 0).
    pub accuracy_m: f64,
    /// Speed in m/s (≥ 0).
    pub speed_mps: Option<f64>,
    /// Heading in degrees, 0–360.
    pub heading_deg: Option<f64>,
    /// Altitude in metres.
    pub altitude_m: Option<f64>,
    /// Battery level in percent, 0–100.
    pub battery: Option<f64>,
    /// `ping` (default), `on_duty`, `off_duty`, `arrive`, `depart`, `sos`.
    pub kind: Option<FixKind>,
    /// The post the fix is about, if the device says.
    pub post_id: Option<Uuid>,
    /// The shift the fix is about, if the device says.
    pub shift_id: Option<Uuid>,
    /// `wgs84` (default), `gcj02`, `bd09`; stored converted to WGS-84.
    #[schema(value_type = Option<String>)]
    pub datum: Option<Datum>,
    /// The device says the location came from a mock provider.
    pub mock: Option<bool>,
    /// The device says the position is not a valid fix (OsmAnd's `valid=false`); set by the
    /// protocol readers, never read from the API's JSON.
    #[serde(skip)]
    #[schema(ignore)]
    pub invalid: bool,
    /// The device sent no accuracy (the Traccar Client / OsmAnd protocol allows it); set by
    /// the protocol readers, never read from the API's JSON, which requires `accuracy_m`.
    #[serde(skip)]
    #[schema(ignore)]
    pub accuracy_unknown: bool,
}

/// A batch of fixes, as an offline phone uploads its queue.
#[derive(Deserialize, ToSchema)]
pub struct CheckinBatch {
    /// Up to 1,000 fixes.
    pub checkins: Vec<CheckinIn>,
}

/// A stored fix.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct Fix {
    /// Server id.
    pub id: Uuid,
    /// The device's id of the fix.
    pub client_id: Uuid,
    /// The member who sent it.
    pub member_id: Uuid,
    /// Device time.
    pub recorded_at: DateTime<Utc>,
    /// When the server stored it.
    pub received_at: DateTime<Utc>,
    /// WGS-84 latitude.
    pub lat: f64,
    /// WGS-84 longitude.
    pub lon: f64,
    /// Accuracy in metres; null when the device sent none (flag `unknown_accuracy`).
    pub accuracy_m: Option<f64>,
    /// Speed in m/s.
    pub speed_mps: Option<f64>,
    /// Heading in degrees.
    pub heading_deg: Option<f64>,
    /// Altitude in metres.
    pub altitude_m: Option<f64>,
    /// Battery in percent.
    pub battery: Option<f64>,
    /// Kind.
    pub kind: FixKind,
    /// Post named by the device.
    pub post_id: Option<Uuid>,
    /// Shift named by the device.
    pub shift_id: Option<Uuid>,
    /// Datum the fix came in.
    #[schema(value_type = String)]
    pub datum: String,
    /// The device reported a mock location.
    pub mock: bool,
    /// `low_accuracy`, `implausible_speed`, `clock_skew`, `mock_location`, `static_repeat`,
    /// `outside_shift`.
    pub flags: Vec<&'static str>,
    /// `api`, `osmand` or `kiosk`.
    pub source: String,
}

impl From<fix::Model> for Fix {
    fn from(f: fix::Model) -> Self {
        Fix {
            id: f.id,
            client_id: f.client_id,
            member_id: f.member_id,
            recorded_at: f.recorded_at,
            received_at: f.received_at,
            lat: f.lat,
            lon: f.lon,
            accuracy_m: (!Flags(f.flags).contains(Flags::UNKNOWN_ACCURACY)).then_some(f.accuracy_m),
            speed_mps: f.speed_mps,
            heading_deg: f.heading_deg,
            altitude_m: f.altitude_m,
            battery: f.battery,
            kind: FixKind::parse(&f.kind),
            post_id: f.post_id,
            shift_id: f.shift_id,
            datum: f.datum,
            mock: f.mock,
            flags: Flags(f.flags).names(),
            source: f.source,
        }
    }
}

/// Why one fix was refused.
#[derive(Serialize, ToSchema, Debug, Clone, PartialEq)]
pub struct ItemError {
    /// `validation_failed`, `idempotency_conflict`, or (from a kiosk) `not_signed_on`.
    pub code: &'static str,
    /// The field at fault, if one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// What became of one fix of a batch.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Stored now.
    Created,
    /// Already stored with the same content.
    Duplicate,
    /// Not stored: see `error`.
    Rejected,
}

/// The outcome of one fix of a batch.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct ItemResult {
    /// The fix's `client_id`, when it had a readable one.
    pub client_id: Option<Uuid>,
    /// What happened.
    pub status: ItemStatus,
    /// Server id of the stored fix (also for duplicates).
    pub id: Option<Uuid>,
    /// Flags of the stored fix.
    pub flags: Vec<&'static str>,
    /// Why it was rejected.
    pub error: Option<ItemError>,
}

/// The answer to a batch.
#[derive(Serialize, ToSchema, Debug)]
pub struct BatchResult {
    /// One result per fix, in input order.
    pub results: Vec<ItemResult>,
    /// Fixes stored now.
    pub created: usize,
    /// Fixes already stored.
    pub duplicate: usize,
    /// Fixes refused.
    pub rejected: usize,
}

/// Fields the server sets; a device that sends them is refused.
const SERVER_OWNED: [&str; 4] = ["member_id", "received_at", "flags", "id"];

/// Where a fix comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `POST /api/v1/checkins`.
    Api,
    /// The Traccar Client / OsmAnd protocol.
    Osmand,
    /// A kiosk device, for the members signed on at it.
    Kiosk,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Osmand => "osmand",
            Source::Kiosk => "kiosk",
        }
    }
}

/// A `validation_failed` error of one fix, naming its field.
pub fn item_error(field: impl Into<String>, message: impl Into<String>) -> ItemError {
    ItemError {
        code: "validation_failed",
        field: Some(field.into()),
        message: message.into(),
    }
}

/// Reads one fix from JSON, refusing server-owned and unknown fields.
pub fn read_item(value: &Value) -> Result<CheckinIn, ItemError> {
    let Some(object) = value.as_object() else {
        return Err(item_error("body", "a fix must be a JSON object"));
    };
    if let Some(owned) = SERVER_OWNED.iter().find(|k| object.contains_key(**k)) {
        return Err(item_error(
            *owned,
            "is set by the server and may not be sent",
        ));
    }
    serde_path_to_error::deserialize::<_, CheckinIn>(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        item_error(field_of(&path, &message), message)
    })
}

/// A fix that passed the checks of its own fields, converted to WGS-84.
struct Candidate {
    input: CheckinIn,
    position: LonLat,
    datum: Datum,
}

/// Checks one fix's own fields against the clock and the ranges.
fn check_item(
    mut input: CheckinIn,
    now: DateTime<Utc>,
    sync_window: Duration,
) -> Result<Candidate, ItemError> {
    // chrono reads a 60th second as a leap second, which it then writes back as `:60`, a
    // time that JavaScript, Python and PostgreSQL cannot read; and it is no real GPS time.
    if input.recorded_at.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err(item_error(
            "recorded_at",
            "is not a valid time: seconds run from 00 to 59",
        ));
    }
    // Kept to the microsecond, as PostgreSQL keeps it, on every database alike.
    input.recorded_at = input.recorded_at.trunc_subsecs(6);
    let finite = |v: f64| v.is_finite();
    if !finite(input.lat) || !(-90.0..=90.0).contains(&input.lat) {
        return Err(item_error("lat", "must be between -90 and 90"));
    }
    if !finite(input.lon) || !(-180.0..=180.0).contains(&input.lon) {
        return Err(item_error("lon", "must be between -180 and 180"));
    }
    if input.lat == 0.0 && input.lon == 0.0 {
        return Err(item_error(
            "lat",
            "(0, 0) is the position of a receiver without a fix",
        ));
    }
    if !finite(input.accuracy_m) || input.accuracy_m < 0.0 {
        return Err(item_error(
            "accuracy_m",
            "must be a number of metres, 0 or more",
        ));
    }
    if input.speed_mps.is_some_and(|v| !finite(v) || v < 0.0) {
        return Err(item_error("speed_mps", "must be 0 or more"));
    }
    if input
        .heading_deg
        .is_some_and(|v| !finite(v) || !(0.0..=360.0).contains(&v))
    {
        return Err(item_error("heading_deg", "must be between 0 and 360"));
    }
    if input
        .altitude_m
        .is_some_and(|v| !finite(v) || v.abs() > 20_000.0)
    {
        return Err(item_error("altitude_m", "must be between -20000 and 20000"));
    }
    if input
        .battery
        .is_some_and(|v| !finite(v) || !(0.0..=100.0).contains(&v))
    {
        return Err(item_error("battery", "must be a percentage, 0-100"));
    }
    if input.recorded_at > now + MAX_FUTURE {
        return Err(item_error(
            "recorded_at",
            "is more than 5 minutes ahead of the server clock",
        ));
    }
    if input.recorded_at < now - sync_window {
        return Err(item_error(
            "recorded_at",
            format!(
                "is older than the sync window of {} days",
                sync_window.num_days()
            ),
        ));
    }
    let datum = input.datum.unwrap_or(Datum::Wgs84);
    let position = datum.to_wgs84(LonLat {
        lon: input.lon,
        lat: input.lat,
    });
    Ok(Candidate {
        input,
        position,
        datum,
    })
}

/// What the rules need to know about a member beyond the fix: how they move and when
/// they are rostered. Cached for [`MEMBER_CONTEXT_TTL`], and dropped at once when this
/// process changes a roster, team or member.
#[derive(Clone, Debug)]
pub struct MemberContext {
    mobility: Mobility,
    /// Shifts of the member from the sync window's start to a day ahead: id, start, end.
    shifts: Vec<(Uuid, DateTime<Utc>, DateTime<Utc>)>,
    /// The posts of those shifts.
    posts: HashSet<Uuid>,
    covers: (DateTime<Utc>, DateTime<Utc>),
    loaded: std::time::Instant,
}

/// How long a member's context is reused.
pub const MEMBER_CONTEXT_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Member contexts by member id.
#[derive(Default)]
pub struct MemberContexts(std::sync::Mutex<std::collections::HashMap<Uuid, MemberContext>>);

impl MemberContexts {
    /// Forgets every context (a roster, team or member changed).
    pub fn clear(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

/// Each member's budget of late fixes: [`Settings::late_fixes_per_day`] at most, refilled
/// evenly over the day. A late fix makes stored figures computed again, so without a bound
/// one member could keep the coverage updater busy.
///
/// [`Settings::late_fixes_per_day`]: crate::settings::Settings::late_fixes_per_day
#[derive(Default)]
pub struct LateBudgets(std::sync::Mutex<HashMap<Uuid, (f64, std::time::Instant)>>);

impl LateBudgets {
    /// Takes `n` late fixes from the member's budget, or answers how many seconds until
    /// the budget holds them.
    pub fn take(&self, member_id: Uuid, n: usize, per_day: u32) -> Result<(), u64> {
        if n == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_day);
        let per_second = capacity / 86_400.0;
        let now = std::time::Instant::now();
        let Ok(mut budgets) = self.0.lock() else {
            return Ok(());
        };
        if budgets.len() > 100_000 {
            // Full budgets carry no state worth keeping.
            budgets.retain(|_, (left, at)| {
                *left + now.duration_since(*at).as_secs_f64() * per_second < capacity
            });
        }
        let (left, at) = budgets.entry(member_id).or_insert((capacity, now));
        *left = (*left + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        let wanted = n as f64;
        if *left >= wanted {
            *left -= wanted;
            Ok(())
        } else {
            Err(((wanted - *left) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Gives back `n` fixes taken for fixes that turned out to be stored already.
    pub fn refund(&self, member_id: Uuid, n: usize, per_day: u32) {
        if n > 0
            && let Ok(mut budgets) = self.0.lock()
            && let Some((left, _)) = budgets.get_mut(&member_id)
        {
            *left = (*left + n as f64).min(f64::from(per_day));
        }
    }
}

async fn member_context(
    state: &AppState,
    member_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<MemberContext> {
    if let Ok(cache) = state.member_contexts.0.lock()
        && let Some(c) = cache.get(&member_id)
        && c.loaded.elapsed() < MEMBER_CONTEXT_TTL
        && c.covers.0 <= from
        && to < c.covers.1
    {
        return Ok(c.clone());
    }
    let now = Utc::now();
    let covers = (
        (now - state.settings.sync_window - Duration::hours(1)).min(from),
        (now + Duration::days(1)).max(to + Duration::seconds(1)),
    );
    let models = shift::Entity::find()
        .filter(overlapping(covers.0, covers.1))
        .filter(shifts_of_member(member_id))
        .all(&state.db)
        .await?;
    let context = MemberContext {
        mobility: mobility(state, member_id).await?,
        shifts: models
            .iter()
            .map(|s| (s.id, s.starts_at, s.ends_at))
            .collect(),
        posts: models.iter().map(|s| s.post_id).collect(),
        covers,
        loaded: std::time::Instant::now(),
    };
    if let Ok(mut cache) = state.member_contexts.0.lock() {
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(member_id, context.clone());
    }
    Ok(context)
}

/// The first and last `recorded_at` of the fixes that passed their checks so far.
fn span_of(checked: &[Result<Candidate, ItemError>]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let mut times = checked
        .iter()
        .filter_map(|c| Some(c.as_ref().ok()?.input.recorded_at));
    let first = times.next()?;
    Some(times.fold((first, first), |(a, b), t| (a.min(t), b.max(t))))
}

/// Of these posts, those of the member's unit or a unit below it.
async fn posts_in_units_of(
    state: &AppState,
    member_id: Uuid,
    post_ids: HashSet<Uuid>,
) -> ApiResult<HashSet<Uuid>> {
    if post_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let Some(unit_id) = member::Entity::find_by_id(member_id)
        .one(&state.db)
        .await?
        .and_then(|m| m.unit_id)
    else {
        return Ok(HashSet::new());
    };
    let Some(mine) = unit::Entity::find_by_id(unit_id).one(&state.db).await? else {
        return Ok(HashSet::new());
    };
    let posts = post::Entity::find()
        .filter(post::Column::Id.is_in(post_ids))
        .all(&state.db)
        .await?;
    let units: HashMap<Uuid, String> = unit::Entity::find()
        .filter(unit::Column::Id.is_in(posts.iter().map(|p| p.unit_id)))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.path))
        .collect();
    Ok(posts
        .iter()
        .filter(|p| {
            units
                .get(&p.unit_id)
                .is_some_and(|path| path.starts_with(&mine.path))
        })
        .map(|p| p.id)
        .collect())
}

/// Foot or vehicle, from the kinds of the member's teams ([`Mobility::of_team_kinds`]).
async fn mobility(state: &AppState, member_id: Uuid) -> ApiResult<Mobility> {
    let teams = team::Entity::find()
        .filter(
            team::Column::Id.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(team_member::Column::TeamId)
                    .from(team_member::Entity)
                    .and_where(team_member::Column::MemberId.eq(member_id))
                    .to_owned(),
            ),
        )
        .all(&state.db)
        .await?;
    Ok(Mobility::of_team_kinds(
        teams.iter().map(|t| t.kind.as_str()),
    ))
}

/// The outcome of a set of fixes of one member, in input order.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// Stored, now or before.
    Stored(Written),
    /// Refused.
    Rejected(ItemError),
}

/// Checks, flags and stores a member's fixes (already read from JSON, or their read
/// errors), answering per fix in input order. Shared by the JSON API and the Traccar /
/// OsmAnd protocol.
pub async fn ingest(
    state: &AppState,
    member_id: Uuid,
    items: Vec<Result<CheckinIn, ItemError>>,
    source: Source,
) -> ApiResult<Vec<Outcome>> {
    // Microseconds: what PostgreSQL keeps, so a stored fix reads back as it was written.
    let now = Utc::now().trunc_subsecs(6);
    let mut checked: Vec<Result<Candidate, ItemError>> = items
        .into_iter()
        .map(|i| i.and_then(|input| check_item(input, now, state.settings.sync_window)))
        .collect();

    // A fix may name only the member's own shifts, and posts of those shifts or of the
    // member's unit and below: naming another's shift or post would file the fix, and its
    // arrival or SOS, under duty that is not the member's.
    // The member's context, read once for the checks here and the flags below (it covers
    // every fix that passed its own checks, so also those still left after these).
    let context = match span_of(&checked) {
        Some((from, to)) => Some(member_context(state, member_id, from, to).await?),
        None => None,
    };
    let named = checked
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .any(|c| c.input.post_id.is_some() || c.input.shift_id.is_some());
    if named && let Some(context) = &context {
        let post_ids: HashSet<Uuid> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok()?.input.post_id)
            .filter(|p| !context.posts.contains(p))
            .collect();
        let own_posts = posts_in_units_of(state, member_id, post_ids).await?;
        let shift_ids: HashSet<Uuid> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok()?.input.shift_id)
            .collect();
        // Each named shift of the member's, with its post.
        let own_shifts: HashMap<Uuid, Uuid> = if shift_ids.is_empty() {
            HashMap::new()
        } else {
            let mine: HashSet<Uuid> = context.shifts.iter().map(|(id, _, _)| *id).collect();
            shift::Entity::find()
                .filter(shift::Column::Id.is_in(shift_ids.intersection(&mine).copied()))
                .all(&state.db)
                .await?
                .into_iter()
                .map(|s| (s.id, s.post_id))
                .collect()
        };
        for c in &mut checked {
            if let Ok(candidate) = c {
                let input = &candidate.input;
                // A kiosk's fixes carry its own post, which registering the kiosk allowed.
                let post_allowed = |p: &Uuid| {
                    source == Source::Kiosk || context.posts.contains(p) || own_posts.contains(p)
                };
                if input.post_id.is_some_and(|p| !post_allowed(&p)) {
                    *c = Err(item_error(
                        "post_id",
                        "is not a post of your shifts or of your unit",
                    ));
                    continue;
                }
                match input.shift_id.map(|s| own_shifts.get(&s)) {
                    None => {}
                    Some(None) => {
                        *c = Err(item_error(
                            "shift_id",
                            "is not one of your shifts (from the sync window's start to a day ahead)",
                        ));
                    }
                    Some(Some(post)) if input.post_id.is_some_and(|p| p != *post) => {
                        *c = Err(item_error(
                            "post_id",
                            "is not the post of the shift named by shift_id",
                        ));
                    }
                    Some(Some(_)) => {}
                }
            }
        }
    }

    let good: Vec<&Candidate> = checked.iter().filter_map(|c| c.as_ref().ok()).collect();
    let mut rows: Vec<fix::Model> = Vec::with_capacity(good.len());
    let mut mobility = Mobility::Foot;
    let mut my_shifts = Vec::new();
    if let Some(context) = context.filter(|_| !good.is_empty()) {
        let t = state.settings.thresholds();
        for c in good {
            let i = &c.input;
            let sample = FixSample {
                recorded_at: i.recorded_at,
                position: c.position,
                accuracy_m: i.accuracy_m,
                speed_mps: i.speed_mps,
            };
            // The flags of the fix alone; the writer adds those that need its neighbours.
            let mut flags =
                plausibility::intrinsic_flags(&sample, i.mock.unwrap_or(false), now, &t);
            if i.invalid {
                flags.insert(Flags::INVALID_FIX);
            }
            if i.accuracy_unknown {
                flags.insert(Flags::UNKNOWN_ACCURACY);
            }
            // outside_shift: no shift of the member covers the moment.
            let at = i.recorded_at;
            if !context.shifts.iter().any(|(_, a, b)| *a <= at && at < *b) {
                flags.insert(Flags::OUTSIDE_SHIFT);
            }
            rows.push(fix::Model {
                id: Uuid::now_v7(),
                member_id,
                client_id: i.client_id,
                recorded_at: i.recorded_at,
                received_at: now,
                lat: c.position.lat,
                lon: c.position.lon,
                accuracy_m: i.accuracy_m,
                speed_mps: i.speed_mps,
                heading_deg: i.heading_deg,
                altitude_m: i.altitude_m,
                battery: i.battery,
                kind: i.kind.unwrap_or_default().as_str().to_owned(),
                post_id: i.post_id,
                shift_id: i.shift_id,
                datum: c.datum.as_str().to_owned(),
                mock: i.mock.unwrap_or(false),
                flags: flags.0,
                source: source.as_str().to_owned(),
            });
        }
        mobility = context.mobility;
        my_shifts = context.shifts;
    }
    // Late fixes spend the member's budget before anything is stored; those that prove to
    // be stored already (a retry) are given back.
    let late_by = now - crate::coverage::LATE;
    let per_day = state.settings.late_fixes_per_day;
    let late_sent = rows.iter().filter(|r| r.recorded_at < late_by).count();
    if let Err(wait) = state.late_budgets.take(member_id, late_sent, per_day) {
        return Err(ApiError::rate_limited(
            format!(
                "more late fixes than {per_day} a day from one member; nothing was stored, send them again in {wait} seconds"
            ),
            wait,
        ));
    }
    let stored = state
        .writer
        .write(Batch {
            member_id,
            mobility,
            rows,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "storing fixes failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the fixes could not be stored; nothing was acknowledged, send them again",
            )
        })?;
    let written = stored.rows;
    let late_again = written
        .iter()
        .filter(|w| matches!(w, Written::Duplicate(f) | Written::Conflict(f) if f.recorded_at < late_by))
        .count();
    state.late_budgets.refund(member_id, late_again, per_day);
    // Live events, and at once an evaluation for an SOS; neither waits.
    let created: Vec<fix::Model> = written
        .iter()
        .filter_map(|w| match w {
            Written::Created(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    if created.iter().any(|f| f.kind == FixKind::Sos.as_str()) {
        state.alerts.wakeup.notify_one();
    }
    state.events.checkins(created);
    // Late fixes stored now change the stored coverage of the settled shifts they touch, and
    // so do stored fixes they moved in or out of coverage. Judged by the clock after the
    // write: a shift that settled while the fixes were being written may have had its
    // figures computed without them.
    let stored_by = Utc::now();
    let late: Vec<DateTime<Utc>> = written
        .iter()
        .filter_map(|w| match w {
            Written::Created(f) => Some(f.recorded_at),
            _ => None,
        })
        .chain(stored.revised)
        .filter(|t| *t < stored_by - crate::coverage::LATE)
        .collect();
    // A revised fix can be older than the shifts read for the new ones.
    if let Some(&oldest) = late.iter().min()
        && oldest < now - state.settings.sync_window
    {
        my_shifts = member_context(state, member_id, oldest - Duration::hours(1), now)
            .await?
            .shifts;
    }
    if !late.is_empty() {
        crate::coverage::mark_touched(state, &my_shifts, &late, stored_by).await;
    }
    let mut written = written.into_iter();
    Ok(checked
        .into_iter()
        .map(|c| match c {
            Ok(_) => match written.next() {
                Some(w) => Outcome::Stored(w),
                None => Outcome::Rejected(item_error("body", "not stored")),
            },
            Err(e) => Outcome::Rejected(e),
        })
        .collect())
}

impl BatchResult {
    /// An empty answer for a batch of `n` fixes.
    pub fn with_capacity(n: usize) -> BatchResult {
        BatchResult {
            results: Vec::with_capacity(n),
            created: 0,
            duplicate: 0,
            rejected: 0,
        }
    }

    /// Adds the next fix's result, counting it.
    pub fn push(&mut self, item: ItemResult) {
        match item.status {
            ItemStatus::Created => self.created += 1,
            ItemStatus::Duplicate => self.duplicate += 1,
            ItemStatus::Rejected => self.rejected += 1,
        }
        self.results.push(item);
    }
}

/// What one fix's outcome is answered as in a batch.
pub fn item_result(outcome: Outcome, client_id: Option<Uuid>) -> ItemResult {
    let stored = |status, f: &fix::Model| ItemResult {
        client_id,
        status,
        id: Some(f.id),
        flags: Flags(f.flags).names(),
        error: None,
    };
    let rejected = |e| ItemResult {
        client_id,
        status: ItemStatus::Rejected,
        id: None,
        flags: Vec::new(),
        error: Some(e),
    };
    match outcome {
        Outcome::Stored(Written::Created(f)) => stored(ItemStatus::Created, &f),
        Outcome::Stored(Written::Duplicate(f)) => stored(ItemStatus::Duplicate, &f),
        Outcome::Stored(Written::Conflict(_)) => rejected(conflict_error()),
        Outcome::Rejected(e) => rejected(e),
    }
}

fn conflict_error() -> ItemError {
    ItemError {
        code: "idempotency_conflict",
        field: Some("client_id".into()),
        message:
            "a different fix with this client_id is already stored; the stored fix is unchanged"
                .into(),
    }
}

/// The body of `POST /checkins`: one fix, or `{"checkins": [...]}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum CheckinBody {
    One(CheckinIn),
    Batch(CheckinBatch),
}

/// The body of `POST /checkins` read into fixes.
#[derive(Debug, PartialEq)]
enum Body {
    /// One fix, or why it cannot be read.
    One(Result<CheckinIn, ItemError>),
    /// A batch: each fix's `client_id` where it could be read, and the fix or why it
    /// cannot be read, in input order.
    Batch(Vec<Option<Uuid>>, Vec<Result<CheckinIn, ItemError>>),
}

/// The common case read straight into fixes: one fix, or a batch of at most
/// [`MAX_BATCH`] whose every fix reads. `None` for anything else, which [`read_general`]
/// then reads to say exactly what is wrong, or which fixes of a batch are. A body that
/// reads here reads the same there (a property test holds them equal); here it skips
/// building a JSON value of the whole body first, which was most of the time spent
/// reading a batch.
fn read_typed(bytes: &[u8]) -> Option<Body> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fixes {
        checkins: Vec<CheckinIn>,
    }
    // A batch fails here at its first key.
    if let Ok(one) = serde_json::from_slice::<CheckinIn>(bytes) {
        return Some(Body::One(Ok(one)));
    }
    let Fixes { checkins } = serde_json::from_slice(bytes).ok()?;
    if checkins.len() > MAX_BATCH {
        return None;
    }
    Some(Body::Batch(
        checkins.iter().map(|c| Some(c.client_id)).collect(),
        checkins.into_iter().map(Ok).collect(),
    ))
}

/// Any body, read as JSON once; each fix is then read from its part of the value, so one
/// bad fix of a batch is refused alone, naming its field.
fn read_general(bytes: &[u8]) -> ApiResult<Body> {
    let body = crate::extract::parse_json_value(bytes)?;
    match body {
        Value::Object(mut o) if o.contains_key("checkins") => {
            if o.len() > 1 {
                let other = o
                    .keys()
                    .find(|k| *k != "checkins")
                    .cloned()
                    .unwrap_or_default();
                return Err(ApiError::field(other, "a batch holds only `checkins`"));
            }
            match o.remove("checkins") {
                Some(Value::Array(items)) if items.len() > MAX_BATCH => Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "a batch holds at most {MAX_BATCH} fixes, not {}",
                        items.len()
                    ),
                )),
                Some(Value::Array(items)) => Ok(Body::Batch(
                    items
                        .iter()
                        .map(|i| {
                            i.get("client_id")
                                .and_then(Value::as_str)
                                .and_then(|s| s.parse().ok())
                        })
                        .collect(),
                    items.iter().map(read_item).collect(),
                )),
                _ => Err(ApiError::field("checkins", "must be an array of fixes")),
            }
        }
        one => Ok(Body::One(read_item(&one))),
    }
}

/// Stores one fix, or a batch of up to 1,000 (`{"checkins": [...]}`), as the caller.
/// Bodies may be gzip-compressed. One fix: 201 when stored now, 200 with the stored fix
/// when its `client_id` was stored before, 409 `idempotency_conflict` when it was stored
/// with other content, 422 naming the bad field. A batch: 200 with a result per fix in
/// input order; one bad fix never stops the others; over 1,000 fixes is a 413. A fix is
/// acknowledged only after it is durably stored.
#[utoipa::path(post, path = "/checkins", tag = "checkins", security(("bearer" = [])),
    request_body(content = inline(CheckinBody), description = "One fix, or {\"checkins\": [...]}"),
    responses(
        (status = 201, description = "The fix, stored now", body = Fix),
        (status = 200, description = "The fix stored before with this client_id; or, for a batch, the results", body = BatchResult),
        (status = 409, description = "The client_id was stored with other content", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage failed; nothing was acknowledged", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn post_checkins(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> ApiResult<Response> {
    let bytes = crate::extract::json_body(request, &state).await?;
    let body = match read_typed(&bytes) {
        Some(body) => body,
        None => read_general(&bytes)?,
    };
    match body {
        Body::Batch(client_ids, items) => {
            let outcomes = ingest(&state, user.id, items, Source::Api).await?;
            let mut result = BatchResult::with_capacity(outcomes.len());
            for (outcome, client_id) in outcomes.into_iter().zip(client_ids) {
                result.push(item_result(outcome, client_id));
            }
            Ok((StatusCode::OK, axum::Json(result)).into_response())
        }
        Body::One(item) => {
            let outcome = ingest(&state, user.id, vec![item], Source::Api)
                .await?
                .pop()
                .ok_or_else(|| ApiError::internal("no outcome for a single fix"))?;
            match outcome {
                Outcome::Stored(Written::Created(f)) => {
                    Ok((StatusCode::CREATED, axum::Json(Fix::from(f))).into_response())
                }
                Outcome::Stored(Written::Duplicate(f)) => {
                    Ok((StatusCode::OK, axum::Json(Fix::from(f))).into_response())
                }
                Outcome::Stored(Written::Conflict(_)) => {
                    let e = conflict_error();
                    Err(ApiError::new(StatusCode::CONFLICT, e.code, e.message))
                }
                Outcome::Rejected(e) => Err(ApiError::field(
                    e.field.unwrap_or_else(|| "body".into()),
                    e.message,
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A number as a phone may write it: with a fraction, whole, or with an exponent.
    fn number(v: f64, style: u8) -> String {
        match style % 3 {
            0 => format!("{v}"),
            1 => format!("{}", v.trunc() as i64),
            _ => format!("{v:e}"),
        }
    }

    prop_compose! {
        /// A fix that reads, its fields in any order, optional ones present, null or absent.
        fn fix_json()(
            id in any::<u128>(),
            secs in 0i64..2_000_000_000,
            nanos in 0u32..1_000_000_000,
            offset_min in -720i32..=840,
            lat in -90.0f64..90.0,
            lon in -180.0f64..180.0,
            acc in 0.0f64..5000.0,
            styles in proptest::collection::vec(any::<u8>(), 8),
            optional in proptest::collection::vec((0u8..3, 0.0f64..100.0), 4),
            kind in 0usize..8,
            datum in 0usize..5,
            mock in 0u8..4,
            post in proptest::option::of(any::<u128>()),
            order in any::<u64>(),
        ) -> String {
            let offset = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            let at = DateTime::from_timestamp(secs, nanos).unwrap().with_timezone(&offset);
            let at = if styles[0] % 2 == 0 {
                at.to_rfc3339()
            } else {
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            let mut fields = vec![
                format!(r#""client_id":"{}""#, Uuid::from_u128(id)),
                format!(r#""recorded_at":"{at}""#),
                format!(r#""lat":{}"#, number(lat, styles[1])),
                format!(r#""lon":{}"#, number(lon, styles[2])),
                format!(r#""accuracy_m":{}"#, number(acc, styles[3])),
            ];
            for ((name, (how, v)), style) in ["speed_mps", "heading_deg", "altitude_m", "battery"]
                .into_iter()
                .zip(optional)
                .zip(&styles[4..])
            {
                match how {
                    0 => {}
                    1 => fields.push(format!(r#""{name}":null"#)),
                    _ => fields.push(format!(r#""{name}":{}"#, number(v, *style))),
                }
            }
            let kinds = ["ping", "on_duty", "off_duty", "arrive", "depart", "sos"];
            match kinds.get(kind) {
                Some(k) => fields.push(format!(r#""kind":"{k}""#)),
                None if kind == 6 => fields.push(r#""kind":null"#.to_owned()),
                None => {}
            }
            if let Some(d) = ["wgs84", "gcj02", "bd09"].get(datum) {
                fields.push(format!(r#""datum":"{d}""#));
            }
            match mock {
                0 => fields.push(r#""mock":true"#.to_owned()),
                1 => fields.push(r#""mock":false"#.to_owned()),
                2 => fields.push(r#""mock":null"#.to_owned()),
                _ => {}
            }
            if let Some(p) = post {
                fields.push(format!(r#""post_id":"{}""#, Uuid::from_u128(p)));
            }
            // A fixed shuffle from `order`.
            let mut state = order | 1;
            for i in (1..fields.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                fields.swap(i, (state % (i as u64 + 1)) as usize);
            }
            format!("{{{}}}", fields.join(","))
        }
    }

    fn general(bytes: &str) -> Body {
        read_general(bytes.as_bytes()).expect("the body reads")
    }

    proptest! {
        #[test]
        fn a_fix_read_straight_is_the_fix_read_through_a_value(fix in fix_json()) {
            prop_assert_eq!(read_typed(fix.as_bytes()), Some(general(&fix)));
        }

        #[test]
        fn a_batch_read_straight_is_the_batch_read_through_a_value(
            fixes in proptest::collection::vec(fix_json(), 0..20),
        ) {
            let batch = format!(r#"{{"checkins":[{}]}}"#, fixes.join(","));
            prop_assert_eq!(read_typed(batch.as_bytes()), Some(general(&batch)));
        }
    }

    const FIX: &str = r#"{"client_id":"0195f0c4-3c1e-7a4b-9c55-2f1e8a7b6c5d","recorded_at":"2026-11-28T08:00:00Z","lat":34.25,"lon":108.95,"accuracy_m":5"#;

    #[test]
    fn anything_but_fixes_that_read_goes_the_general_way() {
        let one = |rest: &str| format!("{FIX}{rest}}}");
        let batch =
            |items: &[String], rest: &str| format!(r#"{{"checkins":[{}]{rest}}}"#, items.join(","));
        let good = one("");
        assert!(matches!(
            read_typed(good.as_bytes()),
            Some(Body::One(Ok(_)))
        ));
        for body in [
            one(r#","member_id":"0195f0c4-3c1e-7a4b-9c55-2f1e8a7b6c5d""#),
            one(r#","colour":"red""#),
            one(r#","kind":"patrol""#),
            one(r#","kind":"sos\u0000""#),
            one(r#","lat":35"#),
            batch(&[good.clone(), one(r#","flags":1"#)], ""),
            batch(std::slice::from_ref(&good), r#","extra":1"#),
            batch(&vec![good.clone(); MAX_BATCH + 1], ""),
            String::new(),
            "[]".to_owned(),
        ] {
            assert_eq!(read_typed(body.as_bytes()), None, "{body}");
        }
        // A repeated field is refused straight and read through a value, the last one kept.
        let Ok(Body::One(Ok(fix))) = read_general(one(r#","lat":35"#).as_bytes()) else {
            panic!("a repeated field reads through a value");
        };
        assert_eq!(fix.lat, 35.0);
        let full = batch(&vec![good; MAX_BATCH], "");
        assert!(
            matches!(read_typed(full.as_bytes()), Some(Body::Batch(ids, items)) if ids.len() == MAX_BATCH && items.len() == MAX_BATCH)
        );
    }
}
