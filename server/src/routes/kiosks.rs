//! Kiosk mode: a shared tablet at a kiosk or checkpoint post. People register and revoke
//! the devices (`/kiosks`) and set the PIN they sign on with (`/me/pin`); the device itself,
//! with its own token, shows the post's board, hands the duty over from one officer to the
//! next, and reports fixes for the officers signed on at it, only while they are (`/kiosk`).

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::{
    extract::{Request, State},
    http::StatusCode,
};
use base64::Engine;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, sea_query::Expr, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, KioskDevice, Role},
    domain::geometry::PostKind,
    error::{ApiError, ApiResult, Violations},
    events::{NewEvent, kind},
    extract::{ApiJson, ApiPath, ApiQuery, ClientIp},
    pagination::{Page, PageRequest},
    routes::{
        checkins::{
            BatchResult, CheckinIn, FixKind, ItemError, ItemResult, MAX_BATCH, Outcome, Source,
            ingest, item_error, item_result, read_item,
        },
        device_keys::hash_key,
        posts::{post_in_scope, post_scope_condition},
        shifts::{MAX_SHIFT, overlapping, people_on, shifts_of_member},
    },
    state::AppState,
    store::{audit_record, kiosk, kiosk_sign_on, member, post, shift, unit},
};

/// Most kiosks in use at one post: a post has one or two tablets; the bound stops a script
/// with an officer's login from minting devices.
pub const MAX_ACTIVE_KIOSKS: u64 = 5;
/// How near a kiosk officer's shift on a post must be for them to register a kiosk there.
pub const OFFICER_REACH: Duration = Duration::days(7);
/// How long before their shift an officer may sign on.
pub const SIGN_ON_EARLY: Duration = Duration::minutes(60);
/// How far before a sign-on a fix may be recorded and still count for it: the tablet's
/// clock and the server's need not agree.
pub const CLOCK_SKEW: Duration = Duration::minutes(2);
/// How far ahead the board looks for the next people on duty…
pub const NEXT_WINDOW: Duration = Duration::hours(24);
/// …and how many it names.
pub const MAX_NEXT: usize = 10;

/// Failed sign-ons at one kiosk that stop it taking more within [`KIOSK_WINDOW`]: each
/// username's tries slow down on their own, and this bounds guessing PINs across many
/// usernames from one tablet.
pub const MAX_KIOSK_FAILURES: u64 = 20;
/// The window of [`MAX_KIOSK_FAILURES`].
pub const KIOSK_WINDOW: Duration = Duration::minutes(15);

/// The audit action of a sign-on.
pub const AUDIT_SIGN_ON: &str = "kiosk_sign_on";
/// The audit action of a sign-off (by the officer, by signing on elsewhere, or by revoking
/// the kiosk).
pub const AUDIT_SIGN_OFF: &str = "kiosk_sign_off";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_kiosks, register_kiosk))
        .routes(routes!(revoke_kiosk))
        .routes(routes!(set_pin, clear_pin))
        .routes(routes!(board))
        .routes(routes!(sign_on))
        .routes(routes!(sign_off))
        .routes(routes!(kiosk_checkins))
}

// ---- Domain rules, pure ----

/// Why a PIN is refused, or `None` for a good one: 4–8 ASCII digits, not one digit
/// repeated and not a straight run up or down (`1234`, `4321`, `8901`), the PINs tried
/// first by anyone who picks up the tablet.
pub fn pin_weakness(pin: &str) -> Option<&'static str> {
    let digits: Vec<u8> = pin.bytes().collect();
    if !(4..=8).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
        return Some("must be 4-8 digits");
    }
    let steps: HashSet<u8> = digits
        .windows(2)
        .map(|w| (10 + w[1] - b'0' - (w[0] - b'0')) % 10)
        .collect();
    if steps.len() == 1 {
        return match steps.into_iter().next() {
            Some(0) => Some("must not be one digit repeated"),
            Some(1 | 9) => Some("must not be a straight run of digits such as 1234 or 4321"),
            _ => None,
        };
    }
    None
}

/// A kiosk's name trimmed, or why it is refused: 1–100 characters, no control characters.
pub fn kiosk_name(name: &str) -> Result<String, &'static str> {
    let trimmed = name.trim();
    let chars = trimmed.chars().count();
    if (1..=100).contains(&chars) && !trimmed.chars().any(char::is_control) {
        Ok(trimmed.to_owned())
    } else {
        Err("must be 1-100 characters, not blank, without control characters")
    }
}

/// Whether a fix recorded at `at` falls in a sign-on: from [`CLOCK_SKEW`] before it began
/// to its end, or without end while it is open (the future bound of every fix then holds).
pub fn within_sign_on(
    at: DateTime<Utc>,
    signed_on_at: DateTime<Utc>,
    signed_off_at: Option<DateTime<Utc>>,
) -> bool {
    at >= signed_on_at - CLOCK_SKEW && signed_off_at.is_none_or(|off| at <= off)
}

/// What a kiosk fix may not be, or the fix with the kiosk's post: on and off duty come
/// only through sign-on and sign-off, and a kiosk reports for its own post.
fn admit_kiosk_fix(mut fix: CheckinIn, kiosk_post: Uuid) -> Result<CheckinIn, ItemError> {
    if matches!(fix.kind, Some(FixKind::OnDuty | FixKind::OffDuty)) {
        return Err(item_error(
            "kind",
            "on_duty and off_duty come from a kiosk only through sign-on and sign-off",
        ));
    }
    match fix.post_id {
        Some(p) if p != kiosk_post => Err(item_error("post_id", "is not this kiosk's post")),
        _ => {
            fix.post_id = Some(kiosk_post);
            Ok(fix)
        }
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!(
        "pk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

// ---- Shapes ----

/// A request to register a kiosk device for a post.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterKiosk {
    /// The post: a `kiosk` or `checkpoint`.
    pub post_id: Uuid,
    /// What the device is, e.g. `K07 tablet`; 1–100 characters, trimmed.
    pub name: String,
}

/// A newly registered kiosk: the only time its token is shown.
#[derive(Serialize, ToSchema)]
pub struct RegisteredKiosk {
    /// Id.
    pub id: Uuid,
    /// The post.
    pub post_id: Uuid,
    /// Name.
    pub name: String,
    /// The device's token: send it as `Authorization: Kiosk <token>`. Only its hash is
    /// stored.
    pub token: String,
    /// When registered.
    pub created_at: DateTime<Utc>,
}

/// A kiosk device, without its token.
#[derive(Serialize, ToSchema)]
pub struct Kiosk {
    /// Id.
    pub id: Uuid,
    /// The post.
    pub post_id: Uuid,
    /// Name.
    pub name: String,
    /// Who registered it.
    pub created_by: Uuid,
    /// When registered.
    pub created_at: DateTime<Utc>,
    /// When revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the device last called (to the minute).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Officers signed on at it now.
    pub signed_on: u64,
}

/// Filters and paging of `GET /kiosks`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KioskQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only the kiosks of this post.
    pub post_id: Option<Uuid>,
    /// Only kiosks in use (`true`) or only revoked ones (`false`).
    pub active: Option<bool>,
}

/// A new PIN, confirmed with the current password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPin {
    /// 4–8 digits, not one digit repeated, not a straight run such as 1234 or 4321.
    #[schema(write_only)]
    pub pin: String,
    /// The member's current password.
    #[schema(write_only)]
    pub password: String,
}

/// The kiosk on its board.
#[derive(Serialize, ToSchema)]
pub struct KioskRef {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
}

/// The kiosk's post on its board.
#[derive(Serialize, ToSchema)]
pub struct KioskPost {
    /// Id.
    pub id: Uuid,
    /// Code, e.g. `K07`.
    pub code: String,
    /// Name.
    pub name: String,
    /// `kiosk` or `checkpoint`.
    pub kind: PostKind,
    /// GeoJSON Point in WGS-84 (`[lon, lat]`).
    #[schema(value_type = Object)]
    pub geometry: Value,
    /// A fix this close counts as at the post (metres).
    pub radius_m: Option<f64>,
}

/// An officer signed on at the kiosk.
#[derive(Serialize, ToSchema)]
pub struct SignedOn {
    /// The sign-on, for `POST /kiosk/sign-off`.
    pub sign_on_id: Uuid,
    /// The member.
    pub member_id: Uuid,
    /// Their display name.
    pub display_name: String,
    /// Signed on since.
    pub since: DateTime<Utc>,
}

/// Someone rostered on the post now.
#[derive(Serialize, ToSchema)]
pub struct RosteredNow {
    /// The member.
    pub member_id: Uuid,
    /// Their display name.
    pub display_name: String,
    /// Start of their shift.
    pub starts_at: DateTime<Utc>,
    /// End of their shift.
    pub ends_at: DateTime<Utc>,
    /// Whether they are signed on at this kiosk.
    pub signed_on: bool,
}

/// Someone on the post's next shifts.
#[derive(Serialize, ToSchema)]
pub struct NextOnDuty {
    /// Their display name.
    pub display_name: String,
    /// Start of the shift.
    pub starts_at: DateTime<Utc>,
    /// End of the shift.
    pub ends_at: DateTime<Utc>,
}

/// What the kiosk shows: its post, who is signed on, who is rostered now and next.
#[derive(Serialize, ToSchema)]
pub struct KioskBoard {
    /// The kiosk.
    pub kiosk: KioskRef,
    /// Its post.
    pub post: KioskPost,
    /// Officers signed on now, earliest first.
    pub signed_on: Vec<SignedOn>,
    /// People on the post's shifts running now, by name.
    pub rostered_now: Vec<RosteredNow>,
    /// People on the post's shifts starting within 24 hours, by start (at most 10).
    pub next: Vec<NextOnDuty>,
}

/// A position taken at sign-on or sign-off.
#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct KioskPosition {
    /// A UUID made on the device; the same fix sent again is stored once.
    pub client_id: Uuid,
    /// Device time of the fix, RFC 3339.
    pub recorded_at: DateTime<Utc>,
    /// WGS-84 latitude.
    pub lat: f64,
    /// WGS-84 longitude.
    pub lon: f64,
    /// Horizontal accuracy in metres.
    pub accuracy_m: f64,
}

impl KioskPosition {
    fn fix(self, kind: FixKind, post_id: Uuid) -> CheckinIn {
        CheckinIn {
            client_id: self.client_id,
            recorded_at: self.recorded_at,
            lat: self.lat,
            lon: self.lon,
            accuracy_m: self.accuracy_m,
            speed_mps: None,
            heading_deg: None,
            altitude_m: None,
            battery: None,
            kind: Some(kind),
            post_id: Some(post_id),
            shift_id: None,
            datum: None,
            mock: None,
            invalid: false,
            accuracy_unknown: false,
        }
    }
}

/// An officer signing on: their username and either their password or their PIN.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOnRequest {
    /// Username (case-insensitive).
    pub username: String,
    /// Password; send this or `pin`.
    #[schema(write_only)]
    pub password: Option<String>,
    /// PIN set with `PUT /me/pin`; send this or `password`.
    #[schema(write_only)]
    pub pin: Option<String>,
    /// Where the device is: stored as the officer's `on_duty` fix at the post.
    pub position: Option<KioskPosition>,
}

/// A sign-on.
#[derive(Serialize, ToSchema)]
pub struct SignOnAnswer {
    /// The sign-on, for `POST /kiosk/sign-off`.
    pub sign_on_id: Uuid,
    /// The member.
    pub member_id: Uuid,
    /// Their display name.
    pub display_name: String,
    /// Signed on since.
    pub since: DateTime<Utc>,
    /// What became of the `on_duty` fix, when a position was sent.
    pub fix: Option<ItemResult>,
}

/// An officer signing off: the sign-on to end.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOffRequest {
    /// The sign-on (from the board or the sign-on's answer).
    pub sign_on_id: Uuid,
    /// Where the device is: stored as the officer's `off_duty` fix at the post.
    pub position: Option<KioskPosition>,
}

/// An ended sign-on.
#[derive(Serialize, ToSchema)]
pub struct SignOffAnswer {
    /// The sign-on.
    pub sign_on_id: Uuid,
    /// The member.
    pub member_id: Uuid,
    /// Signed on since.
    pub since: DateTime<Utc>,
    /// Signed off at.
    pub until: DateTime<Utc>,
    /// What became of the `off_duty` fix, when a position was sent.
    pub fix: Option<ItemResult>,
}

/// One fix a kiosk reports: the member it is for, and every field of a phone's fix.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KioskCheckinIn {
    /// The member signed on at this kiosk whose fix this is.
    pub member_id: Uuid,
    /// The fix (its `kind` not `on_duty` or `off_duty`; its `post_id`, if any, the kiosk's).
    #[serde(flatten)]
    pub fix: CheckinIn,
}

/// A batch of fixes from a kiosk.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KioskCheckinBatch {
    /// Up to 1,000 fixes.
    pub checkins: Vec<KioskCheckinIn>,
}

// ---- Helpers ----

fn to_kiosk(k: kiosk::Model, signed_on: u64) -> Kiosk {
    Kiosk {
        id: k.id,
        post_id: k.post_id,
        name: k.name,
        created_by: k.created_by,
        created_at: k.created_at,
        revoked_at: k.revoked_at,
        last_seen_at: k.last_seen_at,
        signed_on,
    }
}

fn audit_row(
    viewer: Uuid,
    subject: Uuid,
    action: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> audit_record::ActiveModel {
    audit_record::ActiveModel {
        id: Set(Uuid::now_v7()),
        viewer_id: Set(viewer),
        subject_id: Set(subject),
        action: Set(action.to_owned()),
        span_from: Set(Some(from)),
        span_to: Set(to),
        at: Set(at),
    }
}

/// Closes open sign-ons, auditing each as a sign-off by `by` (the member themself, or who
/// revoked the kiosk).
async fn close_sign_ons<C: ConnectionTrait>(
    db: &C,
    open: &[kiosk_sign_on::Model],
    how: &str,
    by: Option<Uuid>,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    if open.is_empty() {
        return Ok(());
    }
    kiosk_sign_on::Entity::update_many()
        .col_expr(kiosk_sign_on::Column::SignedOffAt, Expr::value(Some(now)))
        .col_expr(
            kiosk_sign_on::Column::SignedOffHow,
            Expr::value(Some(how.to_owned())),
        )
        .filter(kiosk_sign_on::Column::Id.is_in(open.iter().map(|o| o.id)))
        .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
        .exec(db)
        .await?;
    audit_record::Entity::insert_many(open.iter().map(|o| {
        audit_row(
            by.unwrap_or(o.member_id),
            o.member_id,
            AUDIT_SIGN_OFF,
            o.signed_on_at,
            Some(now),
            now,
        )
    }))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The data of a `kiosk` event.
#[derive(Serialize)]
struct KioskEventData<'a> {
    action: &'a str,
    at: DateTime<Utc>,
    how: Option<&'a str>,
    kiosk_id: Uuid,
    member_id: Uuid,
    member_name: &'a str,
    post_code: &'a str,
    post_id: Uuid,
    sign_on_id: Uuid,
}

/// Publishes sign-ons and sign-offs, so the commanders' boards update; never waits.
async fn publish(
    state: &AppState,
    post: &post::Model,
    items: Vec<(&str, Option<&str>, &kiosk_sign_on::Model, &str)>,
    at: DateTime<Utc>,
) -> ApiResult<()> {
    let unit_path = unit::Entity::find_by_id(post.unit_id)
        .one(&state.db)
        .await?
        .map(|u| u.path);
    let events = items
        .into_iter()
        .map(|(action, how, s, name)| NewEvent {
            kind: kind::KIOSK,
            data: crate::events::raw(&KioskEventData {
                action,
                at,
                how,
                kiosk_id: s.kiosk_id,
                member_id: s.member_id,
                member_name: name,
                post_code: &post.code,
                post_id: s.post_id,
                sign_on_id: s.id,
            }),
            unit_path: unit_path.clone(),
            member_id: Some(s.member_id),
        })
        .collect();
    state.events.publish(events);
    Ok(())
}

/// Stores a sign-on's or sign-off's position as the member's fix.
async fn store_position(
    state: &AppState,
    member_id: Uuid,
    position: Option<KioskPosition>,
    kind: FixKind,
    post_id: Uuid,
) -> ApiResult<Option<ItemResult>> {
    let Some(position) = position else {
        return Ok(None);
    };
    let client_id = position.client_id;
    let outcome = ingest(
        state,
        member_id,
        vec![Ok(position.fix(kind, post_id))],
        Source::Kiosk,
    )
    .await?
    .pop()
    .ok_or_else(|| ApiError::internal("no outcome for a single fix"))?;
    Ok(Some(item_result(outcome, Some(client_id))))
}

/// These members by id (those that exist), for their display names.
async fn names<C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = Uuid>,
) -> ApiResult<HashMap<Uuid, member::Model>> {
    Ok(crate::store::by_ids::<member::Entity, _>(db, member::Column::Id, |m| m.id, ids).await?)
}

// ---- People's endpoints ----

/// The post a caller registers a kiosk for: admins any; commanders one of their subtree
/// (404 outside it, as every scoped record); kiosk officers one they have a shift on
/// running now or starting or ending within 7 days (403 otherwise).
async fn registrable_post(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<post::Model> {
    match user.role {
        Role::Admin | Role::Commander => post_in_scope(state, user, id).await,
        Role::KioskOfficer => {
            let post = post::Entity::find_by_id(id)
                .one(&state.db)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no post {id}")))?;
            let now = Utc::now();
            let rostered = shift::Entity::find()
                .filter(shift::Column::PostId.eq(id))
                .filter(overlapping(now - OFFICER_REACH, now + OFFICER_REACH))
                .filter(shifts_of_member(user.id))
                .one(&state.db)
                .await?
                .is_some();
            if !rostered {
                return Err(ApiError::forbidden(
                    "a kiosk officer registers kiosks only for a post they are rostered on within 7 days",
                ));
            }
            Ok(post)
        }
        Role::PatrolOfficer | Role::Volunteer => Err(ApiError::forbidden(format!(
            "a {} may not register kiosk devices",
            user.role.as_str()
        ))),
    }
}

/// Registers a kiosk device for a `kiosk` or `checkpoint` post: admins for any post,
/// commanders for a post of their subtree, kiosk officers for a post they have a shift on
/// within 7 days. At most 5 kiosks in use per post (409 beyond). The token is in this
/// answer and nowhere else.
#[utoipa::path(post, path = "/kiosks", tag = "kiosk", security(("bearer" = [])), request_body = RegisterKiosk,
    responses(
        (status = 201, description = "The kiosk and its token, shown once", body = RegisteredKiosk),
        (status = 403, description = "The caller may not register a kiosk for this post", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such post (or none the caller manages)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The post has 5 kiosks in use already", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_kiosk(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<RegisterKiosk>,
) -> ApiResult<(StatusCode, axum::Json<RegisteredKiosk>)> {
    let name = kiosk_name(&req.name).map_err(|m| ApiError::field("name", m))?;
    let post = registrable_post(&state, &user, req.post_id).await?;
    if !matches!(
        PostKind::parse(&post.kind),
        Some(PostKind::Kiosk | PostKind::Checkpoint)
    ) {
        return Err(ApiError::field(
            "post_id",
            format!(
                "is a {} post; kiosks are for kiosk and checkpoint posts",
                post.kind
            ),
        ));
    }
    let active = kiosk::Entity::find()
        .filter(kiosk::Column::PostId.eq(post.id))
        .filter(kiosk::Column::RevokedAt.is_null())
        .count(&state.db)
        .await?;
    if active >= MAX_ACTIVE_KIOSKS {
        return Err(ApiError::conflict(format!(
            "the post has {active} kiosks in use, the most there may be; revoke one first"
        )));
    }
    let token = new_token();
    let model = kiosk::ActiveModel {
        id: Set(Uuid::now_v7()),
        post_id: Set(post.id),
        name: Set(name),
        token_hash: Set(hash_key(&token)),
        created_by: Set(user.id),
        created_at: Set(Utc::now().trunc_subsecs(6)),
        revoked_at: Set(None),
        last_seen_at: Set(None),
    }
    .insert(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(RegisteredKiosk {
            id: model.id,
            post_id: model.post_id,
            name: model.name,
            token,
            created_at: model.created_at,
        }),
    ))
}

/// The kiosks the caller may see, oldest first, never with their tokens: admins all,
/// commanders those of their subtree's posts, kiosk officers those they registered.
#[utoipa::path(get, path = "/kiosks", tag = "kiosk", security(("bearer" = [])), params(KioskQuery),
    responses((status = 200, description = "A page of kiosks", body = Page<Kiosk>)))]
pub async fn list_kiosks(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<KioskQuery>,
) -> ApiResult<axum::Json<Page<Kiosk>>> {
    let page = PageRequest::from_query(q.limit, q.cursor.as_deref())?;
    let mut query = kiosk::Entity::find().order_by_asc(kiosk::Column::Id);
    match user.role {
        Role::Admin | Role::Commander => {
            if let Some(post_id) = q.post_id {
                post_in_scope(&state, &user, post_id).await?;
            }
            query = query.filter(
                kiosk::Column::PostId.in_subquery(
                    Query::select()
                        .column(post::Column::Id)
                        .from(post::Entity)
                        .cond_where(post_scope_condition(&user.scope_prefix()))
                        .to_owned(),
                ),
            );
        }
        Role::KioskOfficer => query = query.filter(kiosk::Column::CreatedBy.eq(user.id)),
        Role::PatrolOfficer | Role::Volunteer => {
            return Err(ApiError::forbidden(format!(
                "a {} has no kiosk devices to see",
                user.role.as_str()
            )));
        }
    }
    if let Some(post_id) = q.post_id {
        query = query.filter(kiosk::Column::PostId.eq(post_id));
    }
    match q.active {
        Some(true) => query = query.filter(kiosk::Column::RevokedAt.is_null()),
        Some(false) => query = query.filter(kiosk::Column::RevokedAt.is_not_null()),
        None => {}
    }
    if let Some(after) = page.after {
        query = query.filter(kiosk::Column::Id.gt(after));
    }
    let rows = query.limit(page.fetch()).all(&state.db).await?;
    let mut counts: HashMap<Uuid, u64> = HashMap::new();
    if !rows.is_empty() {
        for s in kiosk_sign_on::Entity::find()
            .filter(kiosk_sign_on::Column::KioskId.is_in(rows.iter().map(|k| k.id)))
            .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
            .all(&state.db)
            .await?
        {
            *counts.entry(s.kiosk_id).or_default() += 1;
        }
    }
    Ok(axum::Json(page.finish(
        rows,
        |k| k.id,
        |k| {
            let n = counts.get(&k.id).copied().unwrap_or(0);
            to_kiosk(k, n)
        },
    )))
}

/// Revokes a kiosk (admins; commanders for their subtree's posts; its registrar): its token
/// gets 401 from now on and everyone signed on at it is signed off (`revoked`).
#[utoipa::path(delete, path = "/kiosks/{id}", tag = "kiosk", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Kiosk id")),
    responses((status = 204, description = "Revoked")))]
pub async fn revoke_kiosk(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let missing = || ApiError::not_found(format!("no kiosk {id}"));
    let found = kiosk::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(missing)?;
    if found.created_by != user.id {
        match user.role {
            Role::Admin => {}
            Role::Commander => {
                post_in_scope(&state, &user, found.post_id)
                    .await
                    .map_err(|_| missing())?;
            }
            _ => {
                return Err(ApiError::forbidden(
                    "only its registrar, an admin or a commander of its post revokes a kiosk",
                ));
            }
        }
    }
    if found.revoked_at.is_some() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let now = Utc::now().trunc_subsecs(6);
    let txn = crate::db::begin_write(&state.db).await?;
    kiosk::Entity::update_many()
        .col_expr(kiosk::Column::RevokedAt, Expr::value(Some(now)))
        .filter(kiosk::Column::Id.eq(id))
        .filter(kiosk::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    let open = kiosk_sign_on::Entity::find()
        .filter(kiosk_sign_on::Column::KioskId.eq(id))
        .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
        .all(&txn)
        .await?;
    close_sign_ons(&txn, &open, "revoked", Some(user.id), now).await?;
    txn.commit().await?;
    if let Some(p) = post::Entity::find_by_id(found.post_id)
        .one(&state.db)
        .await?
    {
        let people = names(&state.db, open.iter().map(|o| o.member_id)).await?;
        let items = open
            .iter()
            .map(|o| {
                let name = people.get(&o.member_id).map_or("", |m| &m.display_name);
                ("sign_off", Some("revoked"), o, name)
            })
            .collect();
        publish(&state, &p, items, now).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Sets the caller's PIN for signing on at kiosk devices. The current password is
/// required (a wrong one counts as a failed login, throttled as `POST /auth/login` is:
/// 429 with `Retry-After`). The PIN: 4–8 digits, not one digit repeated, not a straight
/// run (422 naming `pin`).
#[utoipa::path(put, path = "/me/pin", tag = "kiosk", security(("bearer" = [])), request_body = SetPin,
    responses(
        (status = 204, description = "The PIN is set"),
        (status = 403, description = "The password is wrong", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many attempts from this address, or failures for this username", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: too many passwords being checked at once", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_pin(
    State(state): State<AppState>,
    user: AuthUser,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SetPin>,
) -> ApiResult<StatusCode> {
    let mut errors = Violations::new();
    if let Some(problem) = pin_weakness(&req.pin) {
        errors.add("pin", problem);
    }
    errors.check(
        req.password.is_empty() || req.password.len() > 1024,
        "password",
        "must be your current password",
    );
    errors.finish()?;
    let me = member::Entity::find_by_id(user.id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the access token is no longer valid"))?;
    let attempt = state
        .logins
        .admit(&state.db, &me.username, ip, "logins")
        .await?;
    if !state
        .passwords
        .verify(Some(me.password_hash.clone()), req.password)
        .await?
    {
        attempt.failed(&state.db, &[]).await?;
        return Err(ApiError::forbidden("the current password is wrong"));
    }
    attempt.succeeded(&state.db).await?;
    let hash = state.passwords.hash(req.pin).await?;
    member::Entity::update_many()
        .col_expr(member::Column::PinHash, Expr::value(Some(hash)))
        .filter(member::Column::Id.eq(me.id))
        .exec(&state.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes the caller's PIN: they then sign on at kiosks with their password only.
#[utoipa::path(delete, path = "/me/pin", tag = "kiosk", security(("bearer" = [])),
    responses((status = 204, description = "No PIN any more")))]
pub async fn clear_pin(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    member::Entity::update_many()
        .col_expr(member::Column::PinHash, Expr::value(Option::<String>::None))
        .filter(member::Column::Id.eq(user.id))
        .exec(&state.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- The device's endpoints ----

/// The kiosk's board: its post, who is signed on, who is rostered now (named or through a
/// team) and who comes next within 24 hours. Only names and ids of people. For the device
/// (`Authorization: Kiosk <token>`).
#[utoipa::path(get, path = "/kiosk", tag = "kiosk", security(("kiosk" = [])),
    responses((status = 200, description = "The board", body = KioskBoard)))]
pub async fn board(
    State(state): State<AppState>,
    device: KioskDevice,
) -> ApiResult<axum::Json<KioskBoard>> {
    let KioskDevice { kiosk, post } = device;
    let now = Utc::now();
    let open = kiosk_sign_on::Entity::find()
        .filter(kiosk_sign_on::Column::KioskId.eq(kiosk.id))
        .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
        .order_by_asc(kiosk_sign_on::Column::SignedOnAt)
        .all(&state.db)
        .await?;
    let shifts = shift::Entity::find()
        .filter(shift::Column::PostId.eq(post.id))
        .filter(shift::Column::StartsAt.gt(now - MAX_SHIFT))
        .filter(shift::Column::StartsAt.lte(now + NEXT_WINDOW))
        .filter(shift::Column::EndsAt.gt(now))
        .order_by_asc(shift::Column::StartsAt)
        .order_by_asc(shift::Column::Id)
        .all(&state.db)
        .await?;
    let people = people_on(&state.db, &shifts).await?;
    let members = names(
        &state.db,
        open.iter()
            .map(|o| o.member_id)
            .chain(people.values().flatten().copied()),
    )
    .await?;
    let name = |id: &Uuid| members.get(id).filter(|m| m.active);
    let signed_here: HashSet<Uuid> = open.iter().map(|o| o.member_id).collect();
    let signed_on = open
        .iter()
        .filter_map(|o| {
            Some(SignedOn {
                sign_on_id: o.id,
                member_id: o.member_id,
                display_name: name(&o.member_id)?.display_name.clone(),
                since: o.signed_on_at,
            })
        })
        .collect();
    // Each person once, with their earliest running shift.
    let mut now_on: BTreeMap<Uuid, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    let mut next = Vec::new();
    for s in &shifts {
        let on = people.get(&s.id).into_iter().flatten();
        if s.starts_at <= now {
            for m in on {
                now_on.entry(*m).or_insert((s.starts_at, s.ends_at));
            }
        } else {
            let mut names: Vec<&str> = on
                .filter_map(|m| name(m).map(|m| m.display_name.as_str()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| NextOnDuty {
                display_name: n.to_owned(),
                starts_at: s.starts_at,
                ends_at: s.ends_at,
            }));
        }
    }
    next.truncate(MAX_NEXT);
    let mut rostered_now: Vec<RosteredNow> = now_on
        .into_iter()
        .filter_map(|(id, (starts_at, ends_at))| {
            Some(RosteredNow {
                member_id: id,
                display_name: name(&id)?.display_name.clone(),
                starts_at,
                ends_at,
                signed_on: signed_here.contains(&id),
            })
        })
        .collect();
    rostered_now.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    Ok(axum::Json(KioskBoard {
        kiosk: KioskRef {
            id: kiosk.id,
            name: kiosk.name,
        },
        post: KioskPost {
            id: post.id,
            kind: PostKind::parse(&post.kind).unwrap_or(PostKind::Kiosk),
            geometry: serde_json::from_str(&post.geometry).unwrap_or(Value::Null),
            code: post.code,
            name: post.name,
            radius_m: post.radius_m,
        },
        signed_on,
        rostered_now,
        next,
    }))
}

/// Signs an officer on at the kiosk with their username and their password or PIN
/// (exactly one). A wrong one is a failed login (401), throttled as `POST /auth/login` is
/// (429 with `Retry-After`); 20 failures at one kiosk within 15 minutes also give 429. The
/// officer must be active and on a shift of this post running now or starting within 60
/// minutes (403 `not_rostered_here`); one already signed on here gets 409
/// `already_signed_on`; one signed on at another kiosk is signed off there (`replaced`).
/// A `position` is stored as their `on_duty` fix at the post. Audited as `kiosk_sign_on`.
#[utoipa::path(post, path = "/kiosk/sign-on", tag = "kiosk", security(("kiosk" = [])), request_body = SignOnRequest,
    responses(
        (status = 201, description = "Signed on", body = SignOnAnswer),
        (status = 401, description = "Wrong username, password or PIN; or no valid kiosk token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`not_rostered_here`: no shift on this post now or within 60 minutes", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_signed_on` at this kiosk", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many attempts from this address, or failures for this username or at this kiosk", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: too many passwords being checked at once", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_on(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    device: KioskDevice,
    ApiJson(req): ApiJson<SignOnRequest>,
) -> ApiResult<(StatusCode, axum::Json<SignOnAnswer>)> {
    let KioskDevice { kiosk, post } = device;
    let (secret, with_pin) = match (req.password, req.pin) {
        (Some(p), None) => (p, false),
        (None, Some(p)) => (p, true),
        (Some(_), Some(_)) => {
            return Err(ApiError::field("pin", "send a password or a PIN, not both"));
        }
        (None, None) => {
            return Err(ApiError::field("password", "send a password or a PIN"));
        }
    };
    let wrong = || {
        ApiError::unauthorized(if with_pin {
            "wrong username or PIN"
        } else {
            "wrong username or password"
        })
    };
    let username = req.username.trim().to_lowercase();
    if username.is_empty() || username.len() > 256 || secret.len() > 1024 {
        return Err(wrong());
    }
    let attempt = state
        .logins
        .admit(&state.db, &username, ip, "sign-ons")
        .await?;
    // Failures at a kiosk are also counted under a key no username can be (`:`).
    let kiosk_key = format!("kiosk:{}", kiosk.id);
    state
        .logins
        .cap(
            &state.db,
            &kiosk_key,
            MAX_KIOSK_FAILURES,
            KIOSK_WINDOW,
            "sign-ons at this kiosk",
        )
        .await?;
    let found = member::Entity::find()
        .filter(member::Column::Username.eq(&username))
        .one(&state.db)
        .await?;
    let stored = found.as_ref().and_then(|m| {
        if with_pin {
            m.pin_hash.clone()
        } else {
            Some(m.password_hash.clone())
        }
    });
    let ok = state.passwords.verify(stored, secret).await?;
    let m = match found {
        Some(m) if ok && m.active => m,
        _ => {
            attempt.failed(&state.db, &[&kiosk_key]).await?;
            return Err(wrong());
        }
    };
    attempt.succeeded(&state.db).await?;

    let now = Utc::now().trunc_subsecs(6);
    let rostered = shift::Entity::find()
        .filter(shift::Column::PostId.eq(post.id))
        .filter(overlapping(now, now + SIGN_ON_EARLY))
        .filter(shifts_of_member(m.id))
        .one(&state.db)
        .await?
        .is_some();
    if !rostered {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_rostered_here",
            format!(
                "{} has no shift on post {} now or within {} minutes",
                m.display_name,
                post.code,
                SIGN_ON_EARLY.num_minutes()
            ),
        ));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    let open = kiosk_sign_on::Entity::find()
        .filter(kiosk_sign_on::Column::MemberId.eq(m.id))
        .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
        .all(&txn)
        .await?;
    if open.iter().any(|o| o.kiosk_id == kiosk.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_signed_on",
            format!("{} is already signed on at this kiosk", m.display_name),
        ));
    }
    close_sign_ons(&txn, &open, "replaced", None, now).await?;
    let signed = kiosk_sign_on::ActiveModel {
        id: Set(Uuid::now_v7()),
        kiosk_id: Set(kiosk.id),
        member_id: Set(m.id),
        post_id: Set(post.id),
        signed_on_at: Set(now),
        signed_off_at: Set(None),
        signed_off_how: Set(None),
    }
    .insert(&txn)
    .await?;
    audit_row(m.id, m.id, AUDIT_SIGN_ON, now, None, now)
        .insert(&txn)
        .await?;
    txn.commit().await?;

    // Published after the commit, so that no board hears of what did not happen; `open`
    // holds one sign-on at most (the partial unique index).
    let mut events = Vec::new();
    for o in &open {
        if o.post_id == post.id {
            events.push(("sign_off", Some("replaced"), o, m.display_name.as_str()));
        } else if let Some(p) = post::Entity::find_by_id(o.post_id).one(&state.db).await? {
            publish(
                &state,
                &p,
                vec![("sign_off", Some("replaced"), o, &m.display_name)],
                now,
            )
            .await?;
        }
    }
    events.push(("sign_on", None, &signed, m.display_name.as_str()));
    publish(&state, &post, events, now).await?;

    let fix = store_position(&state, m.id, req.position, FixKind::OnDuty, post.id).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SignOnAnswer {
            sign_on_id: signed.id,
            member_id: m.id,
            display_name: m.display_name,
            since: signed.signed_on_at,
            fix,
        }),
    ))
}

/// Signs an officer off: no password, as the device is at the post and the leaving
/// officer taps their own name. 404 for a sign-on that is unknown, already ended or of
/// another kiosk. A `position` is stored as their `off_duty` fix at the post. Audited as
/// `kiosk_sign_off`.
#[utoipa::path(post, path = "/kiosk/sign-off", tag = "kiosk", security(("kiosk" = [])), request_body = SignOffRequest,
    responses(
        (status = 200, description = "Signed off", body = SignOffAnswer),
        (status = 404, description = "No open sign-on with this id at this kiosk", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_off(
    State(state): State<AppState>,
    device: KioskDevice,
    ApiJson(req): ApiJson<SignOffRequest>,
) -> ApiResult<axum::Json<SignOffAnswer>> {
    let KioskDevice { kiosk, post } = device;
    let missing =
        || ApiError::not_found(format!("no open sign-on {} at this kiosk", req.sign_on_id));
    let open = kiosk_sign_on::Entity::find_by_id(req.sign_on_id)
        .filter(kiosk_sign_on::Column::KioskId.eq(kiosk.id))
        .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
        .one(&state.db)
        .await?
        .ok_or_else(missing)?;
    let now = Utc::now().trunc_subsecs(6);
    let txn = crate::db::begin_write(&state.db).await?;
    // Conditional, so that of two taps racing only one signs off and audits.
    let closed = kiosk_sign_on::Entity::update_many()
        .col_expr(kiosk_sign_on::Column::SignedOffAt, Expr::value(Some(now)))
        .col_expr(
            kiosk_sign_on::Column::SignedOffHow,
            Expr::value(Some("sign_off".to_owned())),
        )
        .filter(kiosk_sign_on::Column::Id.eq(open.id))
        .filter(kiosk_sign_on::Column::SignedOffAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected;
    if closed == 0 {
        return Err(missing());
    }
    audit_row(
        open.member_id,
        open.member_id,
        AUDIT_SIGN_OFF,
        open.signed_on_at,
        Some(now),
        now,
    )
    .insert(&txn)
    .await?;
    txn.commit().await?;
    let who = names(&state.db, [open.member_id]).await?;
    let name = who.get(&open.member_id).map_or("", |m| &m.display_name);
    publish(
        &state,
        &post,
        vec![("sign_off", Some("sign_off"), &open, name)],
        now,
    )
    .await?;
    let fix = store_position(
        &state,
        open.member_id,
        req.position,
        FixKind::OffDuty,
        post.id,
    )
    .await?;
    Ok(axum::Json(SignOffAnswer {
        sign_on_id: open.id,
        member_id: open.member_id,
        since: open.signed_on_at,
        until: now,
        fix,
    }))
}

/// One fix of a kiosk batch as read: its `client_id` where readable, and its member and
/// fix or why it cannot be read.
type KioskItem = (Option<Uuid>, Result<(Uuid, CheckinIn), ItemError>);

/// Reads `{"checkins": [...]}`: 413 beyond 1,000 fixes; each fix read alone, so one bad fix
/// is refused alone, naming its field.
fn read_kiosk_batch(bytes: &[u8]) -> ApiResult<Vec<KioskItem>> {
    let body = crate::extract::parse_json_value(bytes)?;
    let Value::Object(mut o) = body else {
        return Err(ApiError::field(
            "body",
            "must be an object: {\"checkins\": [...]}",
        ));
    };
    if let Some(other) = o.keys().find(|k| *k != "checkins") {
        return Err(ApiError::field(
            other.clone(),
            "a batch holds only `checkins`",
        ));
    }
    let items = match o.remove("checkins") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(ApiError::field(
                "checkins",
                "must be an array of fixes, each with its member_id",
            ));
        }
    };
    if items.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} fixes, not {}",
                items.len()
            ),
        ));
    }
    Ok(items.into_iter().map(read_kiosk_item).collect())
}

fn read_kiosk_item(item: Value) -> KioskItem {
    let client_id = item
        .get("client_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let Value::Object(mut fields) = item else {
        return (
            client_id,
            Err(item_error("body", "a fix must be a JSON object")),
        );
    };
    let member = match fields.remove("member_id") {
        None => Err(item_error("member_id", "is required")),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
            .ok_or_else(|| item_error("member_id", "must be a member id (UUID)")),
    };
    let read = member.and_then(|m| Ok((m, read_item(&Value::Object(fields))?)));
    (client_id, read)
}

/// Stores fixes the kiosk reports for the officers signed on at it, as each officer's own
/// fixes (`source` `kiosk`), answering as a batch of `POST /checkins` does: 200 with a
/// result per fix in input order; over 1,000 fixes is a 413; bodies may be gzip-compressed.
/// A fix is rejected with `not_signed_on` unless its member was signed on at this kiosk
/// when it was recorded (from 2 minutes before the sign-on); with a field error when its
/// `post_id` is not the kiosk's (left out, it is set to the kiosk's) or its `kind` is
/// `on_duty` or `off_duty`. Idempotency by `client_id`, plausibility flags and SOS alerts
/// are those of `POST /checkins`.
#[utoipa::path(post, path = "/kiosk/checkins", tag = "kiosk", security(("kiosk" = [])),
    request_body(content = KioskCheckinBatch, description = "{\"checkins\": [{\"member_id\": ..., fix fields...}]}"),
    responses(
        (status = 200, description = "A result per fix", body = BatchResult),
        (status = 503, description = "Storage failed; nothing was acknowledged", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn kiosk_checkins(
    State(state): State<AppState>,
    device: KioskDevice,
    request: Request,
) -> ApiResult<axum::Json<BatchResult>> {
    let KioskDevice { kiosk, post } = device;
    let bytes = crate::extract::json_body(request, &state).await?;
    let items = read_kiosk_batch(&bytes)?;
    let mut checked: Vec<KioskItem> = items
        .into_iter()
        .map(|(client_id, read)| {
            let admitted = read.and_then(|(m, fix)| Ok((m, admit_kiosk_fix(fix, post.id)?)));
            (client_id, admitted)
        })
        .collect();

    // The sign-ons here of the batch's active members that can cover its times.
    let good = || checked.iter().filter_map(|(_, r)| r.as_ref().ok());
    let wanted: Vec<Uuid> = good()
        .map(|(m, _)| *m)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut spans: HashMap<Uuid, Vec<kiosk_sign_on::Model>> = HashMap::new();
    if let (Some(first), Some(last)) = (
        good().map(|(_, f)| f.recorded_at).min(),
        good().map(|(_, f)| f.recorded_at).max(),
    ) {
        for chunk in wanted.chunks(500) {
            let active = member::Entity::find()
                .filter(member::Column::Id.is_in(chunk.iter().copied()))
                .filter(member::Column::Active.eq(true))
                .select_only()
                .column(member::Column::Id);
            for s in kiosk_sign_on::Entity::find()
                .filter(kiosk_sign_on::Column::KioskId.eq(kiosk.id))
                .filter(kiosk_sign_on::Column::MemberId.in_subquery(active.into_query()))
                .filter(kiosk_sign_on::Column::SignedOnAt.lte(last + CLOCK_SKEW))
                .filter(
                    Condition::any()
                        .add(kiosk_sign_on::Column::SignedOffAt.is_null())
                        .add(kiosk_sign_on::Column::SignedOffAt.gte(first)),
                )
                .all(&state.db)
                .await?
            {
                spans.entry(s.member_id).or_default().push(s);
            }
        }
    }
    let mut by_member: HashMap<Uuid, Vec<(usize, CheckinIn)>> = HashMap::new();
    for (i, (_, read)) in checked.iter_mut().enumerate() {
        let Ok((m, fix)) = read else { continue };
        let covered = spans.get(m).is_some_and(|spans| {
            spans
                .iter()
                .any(|s| within_sign_on(fix.recorded_at, s.signed_on_at, s.signed_off_at))
        });
        if covered {
            by_member.entry(*m).or_default().push((i, fix.clone()));
        } else {
            *read = Err(ItemError {
                code: "not_signed_on",
                field: Some("member_id".into()),
                message: "the member was not signed on at this kiosk when the fix was recorded"
                    .into(),
            });
        }
    }

    let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
    for (member_id, fixes) in by_member {
        let (indexes, fixes): (Vec<usize>, Vec<CheckinIn>) = fixes.into_iter().unzip();
        let stored = ingest(
            &state,
            member_id,
            fixes.into_iter().map(Ok).collect(),
            Source::Kiosk,
        )
        .await?;
        outcomes.extend(indexes.into_iter().zip(stored));
    }
    let mut result = BatchResult::with_capacity(checked.len());
    for (i, (client_id, read)) in checked.into_iter().enumerate() {
        let outcome = match read {
            Err(e) => Outcome::Rejected(e),
            Ok(_) => outcomes
                .remove(&i)
                .unwrap_or_else(|| Outcome::Rejected(item_error("body", "not stored"))),
        };
        result.push(item_result(outcome, client_id));
    }
    Ok(axum::Json(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_four_to_eight_digits_and_not_the_first_ones_tried() {
        for good in ["2580", "1357", "90210", "13572468", "1123", "0707"] {
            assert_eq!(pin_weakness(good), None, "{good}");
        }
        for short_or_long_or_not_digits in
            ["", "123", "258", "123456789", "12a4", "１２３５", " 2580"]
        {
            assert_eq!(
                pin_weakness(short_or_long_or_not_digits),
                Some("must be 4-8 digits"),
                "{short_or_long_or_not_digits}"
            );
        }
        for repeated in ["0000", "1111", "99999999"] {
            assert_eq!(
                pin_weakness(repeated),
                Some("must not be one digit repeated"),
                "{repeated}"
            );
        }
        for run in [
            "1234", "4321", "0123", "9876", "8901", "2109", "12345678", "87654321",
        ] {
            assert!(
                pin_weakness(run).is_some_and(|w| w.contains("straight run")),
                "{run}"
            );
        }
    }

    #[test]
    fn a_kiosk_name_is_trimmed_and_bounded() {
        assert_eq!(kiosk_name("  K07 tablet "), Ok("K07 tablet".to_owned()));
        assert_eq!(
            kiosk_name(&"亭".repeat(100)).map(|n| n.chars().count()),
            Ok(100)
        );
        assert!(kiosk_name(&"a".repeat(101)).is_err());
        assert!(kiosk_name("   ").is_err());
        assert!(kiosk_name("a\tb").is_err());
    }

    #[test]
    fn a_fix_counts_from_just_before_a_sign_on_to_its_end() {
        let on = DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .to_utc();
        let off = on + Duration::hours(4);
        assert!(within_sign_on(on, on, Some(off)));
        assert!(within_sign_on(on - CLOCK_SKEW, on, Some(off)));
        assert!(!within_sign_on(
            on - CLOCK_SKEW - Duration::seconds(1),
            on,
            Some(off)
        ));
        assert!(within_sign_on(off, on, Some(off)));
        assert!(!within_sign_on(off + Duration::seconds(1), on, Some(off)));
        assert!(within_sign_on(on + Duration::days(2), on, None));
    }

    #[test]
    fn a_kiosk_fix_is_for_its_post_and_never_on_or_off_duty() {
        let post = Uuid::now_v7();
        let fix = |kind, post_id| CheckinIn {
            client_id: Uuid::now_v7(),
            recorded_at: Utc::now(),
            lat: 34.2,
            lon: 108.9,
            accuracy_m: 5.0,
            speed_mps: None,
            heading_deg: None,
            altitude_m: None,
            battery: None,
            kind,
            post_id,
            shift_id: None,
            datum: None,
            mock: None,
            invalid: false,
            accuracy_unknown: false,
        };
        assert_eq!(
            admit_kiosk_fix(fix(None, None), post).unwrap().post_id,
            Some(post)
        );
        assert!(admit_kiosk_fix(fix(Some(FixKind::Sos), Some(post)), post).is_ok());
        let other = admit_kiosk_fix(fix(None, Some(Uuid::now_v7())), post).unwrap_err();
        assert_eq!(other.field.as_deref(), Some("post_id"));
        for kind in [FixKind::OnDuty, FixKind::OffDuty] {
            let e = admit_kiosk_fix(fix(Some(kind), None), post).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("kind"));
        }
    }

    #[test]
    fn a_kiosk_batch_names_each_bad_fix_and_refuses_more_than_a_thousand() {
        let m = Uuid::now_v7();
        let fix = r#""client_id":"0195f0c4-3c1e-7a4b-9c55-2f1e8a7b6c5d","recorded_at":"2026-11-28T08:00:00Z","lat":34.25,"lon":108.95,"accuracy_m":5"#;
        let body = format!(
            r#"{{"checkins":[{{"member_id":"{m}",{fix}}},{{{fix}}},{{"member_id":"x",{fix}}},{{"member_id":"{m}",{fix},"flags":1}},3]}}"#
        );
        let items = read_kiosk_batch(body.as_bytes()).unwrap();
        assert_eq!(items.len(), 5);
        assert!(matches!(&items[0].1, Ok((id, _)) if *id == m));
        let field = |i: usize| items[i].1.as_ref().unwrap_err().field.clone().unwrap();
        assert_eq!(field(1), "member_id");
        assert_eq!(field(2), "member_id");
        assert_eq!(field(3), "flags");
        assert_eq!(field(4), "body");
        assert!(items[1].0.is_some());
        let many = format!(
            r#"{{"checkins":[{}]}}"#,
            vec!["{}"; MAX_BATCH + 1].join(",")
        );
        assert_eq!(
            read_kiosk_batch(many.as_bytes()).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            read_kiosk_batch(br#"{"checkins":[],"x":1}"#)
                .unwrap_err()
                .status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            read_kiosk_batch(b"{").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
