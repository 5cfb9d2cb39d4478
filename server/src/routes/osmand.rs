//! The OsmAnd / Traccar Client HTTP protocol on `/osmand`, so that a free tracking app
//! can report for a member with a device key as its device id.
//!
//! Accepted: the query-string form (`id`, `lat`, `lon`, `timestamp` as Unix seconds or
//! ISO 8601, `accuracy` in metres, `speed` in knots, `bearing`, `altitude`, `batt` in
//! percent) by GET or POST, the same as a form body, and the JSON body of the current
//! Traccar Client (`{"location": {...} | [...], "device_id": ...}`, speed in m/s, battery
//! level 0–1). Each fix goes through the same checks, flags and idempotency as
//! `POST /api/v1/checkins`; its `client_id` is derived from the key and the timestamp, so
//! a resend is a duplicate.
//!
//! An `alarm` of `sos`, `fallDown` or `accident` (the query parameter, or
//! `location.extras.alarm` of the JSON body, as Traccar Client's SOS button sends it)
//! stores the fix as kind `sos`, which raises an SOS alert. `valid=false` stores the fix
//! flagged `invalid_fix`. A side field that does not read or is out of range is dropped,
//! never a reason to refuse the position: the apps retry a refused position forever.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    ingest::Written,
    routes::{
        checkins::{CheckinIn, FixKind, ItemError, Outcome, Source, ingest},
        device_keys::hash_key,
    },
    state::AppState,
    store::{device_key, member},
};

/// Knots to metres a second.
const KNOT_MPS: f64 = 0.514_444;
/// Namespace of the client ids derived from device key and timestamp.
const CLIENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c2e_9d3a_4f70_8e21_5a0c_d3b9_7e44);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(osmand_get, osmand_post))
}

fn bad(field: &str, message: impl Into<String>) -> ItemError {
    ItemError {
        code: "validation_failed",
        field: Some(field.to_owned()),
        message: message.into(),
    }
}

fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(n) = raw.trim().parse::<f64>() {
        // Unix seconds; some apps send milliseconds.
        let secs = if n > 1e11 { n / 1000.0 } else { n };
        return DateTime::from_timestamp_millis((secs * 1000.0).round() as i64);
    }
    DateTime::parse_from_rfc3339(raw.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn number(params: &HashMap<String, String>, key: &str) -> Result<Option<f64>, ItemError> {
    match params.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .map(Some)
            .map_err(|_| bad(key, format!("{v:?} is not a number"))),
    }
}

/// A side field of a position (accuracy, speed, bearing, altitude, battery): kept when it
/// reads and is in range, dropped otherwise. The apps delete a queued position only when it
/// is answered 2xx, so refusing a position over a side field would jam the phone's queue
/// behind it for good.
fn side(value: Option<f64>, range: std::ops::RangeInclusive<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && range.contains(v))
}

fn side_param(params: &HashMap<String, String>, key: &str) -> Option<f64> {
    number(params, key).ok().flatten()
}

/// Whether an alarm of the protocol (Traccar's names, several joined by commas) is a call
/// for help. A person's device raises `sos`; `fallDown` and `accident` mean the person may
/// not be able to press it. The other alarms (`lowBattery`, `overspeed`, geofences and so
/// on) are about the device or the vehicle, not a person in danger.
fn is_distress(alarm: &str) -> bool {
    alarm
        .split(',')
        .map(str::trim)
        .any(|a| ["sos", "falldown", "accident"].contains(&a.to_ascii_lowercase().as_str()))
}

/// Whether a `valid` parameter says the position is not a valid fix.
fn says_invalid(raw: &str) -> bool {
    matches!(raw.trim().to_ascii_lowercase().as_str(), "false" | "0")
}

/// The fix's `client_id`: a UUID v7 whose time is the fix's own and whose other bits come
/// from a UUID v5 of the key and the timestamp. Deterministic, so a resend is a duplicate;
/// time-ordered, so a device's fixes go in at the end of its part of the unique index on
/// `(member_id, client_id)` instead of on a random page of it each (random ids cost about
/// one page of WAL per fix; see BENCHMARKS.md).
fn client_id(key_id: Uuid, at: DateTime<Utc>) -> Uuid {
    let hash = Uuid::new_v5(
        &CLIENT_ID_NAMESPACE,
        format!("{key_id}/{}", at.timestamp_millis()).as_bytes(),
    );
    let mut rest = [0u8; 10];
    rest.copy_from_slice(&hash.as_bytes()[6..]);
    // Before 1970 there is no v7 time; such a fix is refused as too old anyway.
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rest).into_uuid()
}

/// A fix from the query-string (or form) parameters. Only the position and its time can
/// refuse it; a side field out of range is dropped.
fn from_params(params: &HashMap<String, String>, key_id: Uuid) -> Result<CheckinIn, ItemError> {
    let lat = number(params, "lat")?.ok_or_else(|| bad("lat", "is required"))?;
    let lon = number(params, "lon")?.ok_or_else(|| bad("lon", "is required"))?;
    let recorded_at = match params.get("timestamp") {
        Some(raw) => {
            parse_time(raw).ok_or_else(|| bad("timestamp", "must be Unix seconds or ISO 8601"))?
        }
        None => Utc::now(),
    };
    let alarm = params.get("alarm").is_some_and(|a| is_distress(a));
    let accuracy = side(side_param(params, "accuracy"), 0.0..=f64::MAX);
    Ok(CheckinIn {
        client_id: client_id(key_id, recorded_at),
        recorded_at,
        lat,
        lon,
        accuracy_m: accuracy.unwrap_or(0.0),
        speed_mps: side(side_param(params, "speed"), 0.0..=f64::MAX).map(|k| k * KNOT_MPS),
        heading_deg: side(side_param(params, "bearing"), 0.0..=360.0),
        altitude_m: side(side_param(params, "altitude"), -20_000.0..=20_000.0),
        battery: side(side_param(params, "batt"), 0.0..=100.0),
        kind: Some(if alarm { FixKind::Sos } else { FixKind::Ping }),
        post_id: None,
        shift_id: None,
        datum: None,
        mock: params.get("mock").map(|m| m == "true" || m == "1"),
        invalid: params.get("valid").is_some_and(|v| says_invalid(v)),
        accuracy_unknown: accuracy.is_none(),
    })
}

/// A fix from a Traccar Client JSON `location`. Only the position and its time can refuse
/// it; a side field out of range is dropped.
fn from_location(loc: &Value, key_id: Uuid) -> Result<CheckinIn, ItemError> {
    let coords = loc
        .get("coords")
        .ok_or_else(|| bad("location.coords", "is required"))?;
    let num = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64);
    let lat =
        num(coords, "latitude").ok_or_else(|| bad("location.coords.latitude", "is required"))?;
    let lon =
        num(coords, "longitude").ok_or_else(|| bad("location.coords.longitude", "is required"))?;
    let recorded_at = match loc.get("timestamp") {
        Some(Value::String(s)) => parse_time(s),
        Some(Value::Number(n)) => n.as_f64().and_then(|n| parse_time(&n.to_string())),
        _ => None,
    }
    .ok_or_else(|| bad("location.timestamp", "must be ISO 8601 or Unix time"))?;
    let battery = side(
        loc.get("battery").and_then(|b| num(b, "level")),
        0.0..=100.0,
    )
    .map(|l| if l <= 1.0 { l * 100.0 } else { l });
    // Traccar Client's SOS button sends `extras: {"alarm": "sos"}` in the location.
    let alarm = loc
        .get("extras")
        .and_then(|e| e.get("alarm"))
        .and_then(Value::as_str)
        .is_some_and(is_distress);
    let sos = alarm || loc.get("event").and_then(Value::as_str) == Some("sos");
    let valid = loc
        .get("extras")
        .and_then(|e| e.get("valid"))
        .or_else(|| coords.get("valid"));
    let invalid = match valid {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => says_invalid(s),
        _ => false,
    };
    let accuracy = side(num(coords, "accuracy"), 0.0..=f64::MAX);
    Ok(CheckinIn {
        client_id: client_id(key_id, recorded_at),
        recorded_at,
        lat,
        lon,
        accuracy_m: accuracy.unwrap_or(0.0),
        speed_mps: side(num(coords, "speed"), 0.0..=f64::MAX),
        heading_deg: side(num(coords, "heading"), 0.0..=360.0),
        altitude_m: side(num(coords, "altitude"), -20_000.0..=20_000.0),
        battery,
        kind: Some(if sos { FixKind::Sos } else { FixKind::Ping }),
        post_id: None,
        shift_id: None,
        datum: None,
        mock: loc.get("mock").and_then(Value::as_bool),
        invalid,
        accuracy_unknown: accuracy.is_none(),
    })
}

/// The member a device key stands for, or 401.
async fn member_of_key(state: &AppState, key: Option<&str>) -> ApiResult<(Uuid, Uuid)> {
    let key = key
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| ApiError::unauthorized("the device id (a device key) is missing"))?;
    let record = device_key::Entity::find()
        .filter(device_key::Column::KeyHash.eq(hash_key(key)))
        .filter(device_key::Column::RevokedAt.is_null())
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked device key"))?;
    let active = member::Entity::find_by_id(record.member_id)
        .one(&state.db)
        .await?
        .is_some_and(|m| m.active);
    if !active {
        return Err(ApiError::unauthorized(
            "the device key's member is not active",
        ));
    }
    if record
        .last_used_at
        .is_none_or(|t| Utc::now() - t > Duration::hours(1))
    {
        let (id, member) = (record.id, record.member_id);
        let mut active: device_key::ActiveModel = record.into();
        active.last_used_at = Set(Some(Utc::now()));
        active.update(&state.db).await?;
        return Ok((id, member));
    }
    Ok((record.id, record.member_id))
}

/// The protocol's name of a field the check-in rules name, so that an error names what
/// the client sent.
fn protocol_field(field: &str, json: bool) -> String {
    let name = match (field, json) {
        ("recorded_at", false) => "timestamp",
        ("recorded_at", true) => "location.timestamp",
        ("lat", true) => "location.coords.latitude",
        ("lon", true) => "location.coords.longitude",
        (other, _) => other,
    };
    name.to_owned()
}

fn answer(outcomes: Vec<Outcome>, json: bool) -> ApiResult<Response> {
    let total = outcomes.len();
    let rejected: Vec<ItemError> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Rejected(e) => Some(e),
            Outcome::Stored(Written::Conflict(_)) => Some(bad(
                "timestamp",
                "another fix with this timestamp is already stored",
            )),
            Outcome::Stored(_) => None,
        })
        .collect();
    match rejected.first() {
        // A single refused fix is an error the app shows; in a batch the good ones count.
        Some(e) if total == 1 => Err(ApiError::field(
            e.field
                .as_deref()
                .map_or_else(|| "body".into(), |f| protocol_field(f, json)),
            e.message.clone(),
        )),
        _ => Ok(StatusCode::OK.into_response()),
    }
}

fn params_of(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

// The request bodies of `POST /osmand` as the OpenAPI document states them. The handler
// reads the JSON loosely (a side field that does not read is dropped, never refused), so
// these types only describe what it understands and are never deserialised.

/// The Traccar Client JSON body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TraccarBody {
    /// The device key (else the `id` query parameter).
    #[schema(min_length = 1, max_length = 200)]
    device_id: Option<String>,
    /// One location, or up to 1000.
    location: TraccarLocations,
}

/// One location or a batch of at most 1000.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TraccarLocations {
    /// One location.
    One(TraccarLocation),
    /// Several.
    Many(Vec<TraccarLocation>),
}

/// A location of the Traccar Client (the background-geolocation plugin's form).
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TraccarLocation {
    /// ISO 8601, or Unix seconds (or milliseconds); within the sync window before now and
    /// not ahead of the server's clock.
    #[schema(value_type = String, example = "2026-11-29T08:00:00Z")]
    timestamp: String,
    /// Position and side fields.
    coords: TraccarCoords,
    /// `level` in 0–1 (or percent).
    #[schema(value_type = Option<Object>)]
    battery: Option<Value>,
    /// `alarm` (`sos`, `fallDown`, `accident` raise an SOS alert) and `valid`.
    #[schema(value_type = Option<Object>)]
    extras: Option<Value>,
    /// `sos` stores the fix as kind `sos`.
    event: Option<String>,
    /// A mock location.
    mock: Option<bool>,
}

/// Position of a Traccar Client location; the side fields out of range are dropped.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TraccarCoords {
    /// WGS-84.
    #[schema(minimum = -90, maximum = 90)]
    latitude: f64,
    /// WGS-84.
    #[schema(minimum = -180, maximum = 180)]
    longitude: f64,
    /// Metres.
    #[schema(minimum = 0)]
    accuracy: Option<f64>,
    /// Metres a second.
    #[schema(minimum = 0)]
    speed: Option<f64>,
    /// Degrees.
    #[schema(minimum = 0, maximum = 360)]
    heading: Option<f64>,
    /// Metres.
    #[schema(minimum = -20000, maximum = 20000)]
    altitude: Option<f64>,
}

/// The form body: the fields of the query-string form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OsmandForm {
    /// The device key (`deviceid` is read too).
    #[schema(min_length = 1, max_length = 200)]
    id: String,
    /// WGS-84.
    #[schema(minimum = -90, maximum = 90)]
    lat: f64,
    /// WGS-84.
    #[schema(minimum = -180, maximum = 180)]
    lon: f64,
    /// Unix seconds or ISO 8601 (default: now).
    timestamp: Option<String>,
    /// Metres.
    #[schema(minimum = 0)]
    accuracy: Option<f64>,
    /// Knots.
    #[schema(minimum = 0)]
    speed: Option<f64>,
    /// Degrees.
    #[schema(minimum = 0, maximum = 360)]
    bearing: Option<f64>,
    /// Metres.
    #[schema(minimum = -20000, maximum = 20000)]
    altitude: Option<f64>,
    /// Battery percent.
    #[schema(minimum = 0, maximum = 100)]
    batt: Option<f64>,
    /// Traccar alarm names, comma-separated.
    alarm: Option<String>,
    /// `false`: no valid fix.
    valid: Option<bool>,
}

/// A position in the OsmAnd / Traccar query-string form. Only the device key, the
/// position and its time can refuse it: a side field (`accuracy`, `speed`, `bearing`,
/// `altitude`, `batt`) that does not read or is out of range is dropped and the position
/// stored, since the apps delete a queued position only when it is answered 2xx.
#[utoipa::path(get, path = "/osmand", tag = "checkins",
    params(
        ("id" = String, Query, description = "The device key (`deviceid` is read too)", min_length = 1, max_length = 200),
        ("lat" = f64, Query, description = "Latitude, WGS-84", minimum = -90, maximum = 90),
        ("lon" = f64, Query, description = "Longitude, WGS-84", minimum = -180, maximum = 180),
        ("timestamp" = Option<String>, Query, description = "Unix seconds (or milliseconds) or ISO 8601 (default: now); within the sync window before now and not ahead of the server's clock"),
        ("accuracy" = Option<f64>, Query, description = "Metres; without it the fix is flagged `unknown_accuracy` and counts only if `PATROL_COUNT_UNKNOWN_ACCURACY` says so. A side field: a value out of range or not a number is dropped, the fix stored", minimum = 0),
        ("speed" = Option<f64>, Query, description = "Knots; a side field", minimum = 0),
        ("bearing" = Option<f64>, Query, description = "Degrees; a side field", minimum = 0, maximum = 360),
        ("altitude" = Option<f64>, Query, description = "Metres; a side field", minimum = -20000, maximum = 20000),
        ("batt" = Option<f64>, Query, description = "Battery percent; a side field", minimum = 0, maximum = 100),
        ("alarm" = Option<String>, Query, description = "Traccar alarm names, comma-separated: `sos`, `fallDown` and `accident` store the fix as kind `sos` and raise an SOS alert; other alarms are ignored"),
        ("valid" = Option<bool>, Query, description = "`false`: the device has no valid fix; stored flagged `invalid_fix`, never counted"),
    ),
    responses(
        (status = 200, description = "Stored (or already stored)"),
        (status = 401, description = "Unknown or revoked device key", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn osmand_get(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let params = params_of(request.uri().query());
    let (key_id, member_id) = member_of_key(
        &state,
        params
            .get("id")
            .or(params.get("deviceid"))
            .map(String::as_str),
    )
    .await?;
    answer(
        ingest(
            &state,
            member_id,
            vec![from_params(&params, key_id)],
            Source::Osmand,
        )
        .await?,
        false,
    )
}

/// A position (or several) by POST: the query-string form, a form body, or the Traccar
/// Client JSON body (`location.extras.alarm` as the `alarm` parameter). Side fields are
/// handled as by GET.
#[utoipa::path(post, path = "/osmand", tag = "checkins",
    request_body(description = "Traccar Client JSON, or a form body with the fields of the query-string form (the query string may carry them too)",
        content((TraccarBody = "application/json"), (OsmandForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Stored (or already stored)"),
        (status = 401, description = "Unknown or revoked device key", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn osmand_post(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let mut params = params_of(request.uri().query());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    debug_assert_eq!(request.method(), Method::POST);
    let body: Bytes = crate::extract::read_body(request, &state).await?;
    if content_type.starts_with("application/json")
        || (!body.is_empty() && body.first() == Some(&b'{'))
    {
        let json = crate::extract::parse_json_value(&body)?;
        let key = json
            .get("device_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| params.get("id").cloned());
        let (key_id, member_id) = member_of_key(&state, key.as_deref()).await?;
        let locations: Vec<&Value> = match json.get("location") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => {
                return Err(ApiError::field(
                    "location",
                    "must be a location object or an array of them",
                ));
            }
        };
        if locations.len() > super::checkins::MAX_BATCH {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "at most 1000 locations at once",
            ));
        }
        let items = locations
            .into_iter()
            .map(|l| from_location(l, key_id))
            .collect();
        return answer(
            ingest(&state, member_id, items, Source::Osmand).await?,
            true,
        );
    }
    if !body.is_empty() {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    let (key_id, member_id) = member_of_key(
        &state,
        params
            .get("id")
            .or(params.get("deviceid"))
            .map(String::as_str),
    )
    .await?;
    answer(
        ingest(
            &state,
            member_id,
            vec![from_params(&params, key_id)],
            Source::Osmand,
        )
        .await?,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_seconds_milliseconds_and_iso() {
        let t = parse_time("1764400000").unwrap();
        assert_eq!(t.timestamp(), 1_764_400_000);
        assert_eq!(
            parse_time("1764400000123").unwrap().timestamp_millis(),
            1_764_400_000_123
        );
        assert_eq!(
            parse_time("2026-11-29T08:00:00+08:00").unwrap().timestamp(),
            parse_time("2026-11-29T00:00:00Z").unwrap().timestamp()
        );
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn query_form_converts_knots_and_derives_a_stable_client_id() {
        let key = Uuid::now_v7();
        let params: HashMap<String, String> = [
            ("lat", "34.22"),
            ("lon", "108.95"),
            ("timestamp", "1764400000"),
            ("speed", "10"),
            ("batt", "80"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let a = from_params(&params, key).unwrap();
        let b = from_params(&params, key).unwrap();
        assert_eq!(a.client_id, b.client_id);
        assert!((a.speed_mps.unwrap() - 5.14444).abs() < 1e-6);
        assert_ne!(
            a.client_id,
            from_params(&params, Uuid::now_v7()).unwrap().client_id
        );
    }

    #[test]
    fn derived_client_ids_follow_the_fixes_in_time() {
        let key = Uuid::now_v7();
        let start = parse_time("2026-11-29T08:00:00Z").unwrap();
        let ids: Vec<Uuid> = (0..1000)
            .map(|k| client_id(key, start + chrono::TimeDelta::milliseconds(k * 1500)))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let (secs, _) = ids[0].get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64, start.timestamp());
        // Another key at the same moment gets another id.
        assert_ne!(ids[0], client_id(Uuid::now_v7(), start));
        assert_eq!(
            ids[7],
            client_id(key, start + chrono::TimeDelta::milliseconds(7 * 1500))
        );
    }
}
