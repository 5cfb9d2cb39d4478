//! The alert evaluator and the post status watcher.
//!
//! The evaluator gathers the facts of the moment (the live board, the coverage of running
//! shifts, recent SOS and spoofed fixes, the roster ahead), asks
//! [`crate::domain::alerts::decide`] which alerts should be open, and diffs that against
//! the stored open alerts: it raises the new ones and resolves those whose condition has
//! cleared. It runs every `alert_every_s`, and at once after an SOS check-in. With several
//! processes on one PostgreSQL, one evaluates at a time, under its job lock (see
//! [`crate::jobs`]), and writes its changes in the lock's transaction; the unique
//! `open_key` makes a second raise of the same alert impossible anyway.
//!
//! The watcher recomputes the staffed state of every post about a second after check-ins
//! and after each evaluation, and publishes a `post_status` event for each post whose state
//! flipped since the state stored in `post_states` (shared by all processes). It computes
//! and writes under its own job lock, so each flip is published once and a view older than
//! the stored one never overwrites it.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, OnConflict},
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, Notify};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    coverage::compute,
    domain::{
        alerts::{
            AlertKind, Facts, GapFacts, MemberFacts, Position, Rules, ShiftFacts, SosFacts, Wanted,
            decide, why_resolved,
        },
        geometry::PostKind,
        plausibility::Flags,
        roster::roster_gaps,
    },
    error::ApiResult,
    events::{NewEvent, kind, post_status_data, unit_paths},
    jobs::Job,
    routes::checkins::FixKind,
    routes::{
        coverage::{SilentLastFix, live_board},
        posts::Staffing,
        rosters::rostered_spans,
        shifts::{overlapping, people_on},
    },
    state::AppState,
    store::{alert, fix, member, post, post_state, shift},
    webhook::Webhook,
};

/// How long the watcher waits after a check-in for more before recomputing.
const WATCH_DEBOUNCE: Duration = Duration::from_secs(1);
/// How far ahead roster gaps raise alerts.
const GAP_LOOK_AHEAD: chrono::Duration = chrono::Duration::hours(24);
/// After an SOS, how often and how long the evaluator retries while another process holds
/// the lock (its evaluation may have begun before the SOS was stored).
const SOS_RETRY: Duration = Duration::from_millis(250);
const SOS_RETRIES: u32 = 40;

/// The alert machinery of a process.
pub struct Alerts {
    /// Wakes the evaluator at once (an SOS arrived).
    pub wakeup: Notify,
    /// Wakes the post status watcher (an evaluation finished).
    pub evaluated: Notify,
    /// One evaluation at a time in this process.
    evaluating: Mutex<()>,
    /// One watcher pass at a time in this process.
    watching: Mutex<()>,
    /// The outgoing webhook, if configured.
    pub webhook: Option<Webhook>,
}

impl Alerts {
    /// The machinery, with a webhook when one is configured.
    pub fn new(webhook: Option<Webhook>) -> Alerts {
        Alerts {
            wakeup: Notify::new(),
            evaluated: Notify::new(),
            evaluating: Mutex::new(()),
            watching: Mutex::new(()),
            webhook,
        }
    }
}

/// An alert as the API answers it.
#[derive(Serialize, ToSchema, Clone, Debug)]
#[schema(as = Alert)]
pub struct AlertOut {
    /// Id.
    pub id: Uuid,
    /// `post_unstaffed`, `route_idle`, `member_silent`, `sos`, `roster_gap`, `spoof_suspected`.
    pub kind: AlertKind,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    /// The post it is about.
    pub post_id: Option<Uuid>,
    /// That post's code.
    pub post_code: Option<String>,
    /// The member it is about.
    pub member_id: Option<Uuid>,
    /// That member's name.
    pub member_name: Option<String>,
    /// The shift concerned.
    pub shift_id: Option<Uuid>,
    /// The unit that sees it (the post's or the member's).
    pub unit_id: Option<Uuid>,
    /// One human sentence.
    pub message: String,
    /// Where (an SOS's position, a member's last fix).
    pub position: Option<Position>,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// When it was acknowledged.
    pub acked_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acked_by: Option<Uuid>,
    /// The note given with the acknowledgement.
    pub ack_note: Option<String>,
    /// When its condition cleared.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Why it closed: `staffed` (the post has its headcount), `patrolled` (the route had a
    /// fix), `shift_ended` (nothing is rostered at the post any more), `heard_from` (the
    /// member sent a fix), `off_duty` (the member's shifts ended), `sos_hold_elapsed` (the
    /// SOS hold passed since it was sent and since it arrived), `rostered` (the roster gap
    /// was filled).
    pub resolution: Option<String>,
}

impl From<alert::Model> for AlertOut {
    fn from(a: alert::Model) -> Self {
        AlertOut {
            id: a.id,
            kind: AlertKind::parse(&a.kind).unwrap_or(AlertKind::Sos),
            state: a.state,
            post_id: a.post_id,
            post_code: a.post_code,
            member_id: a.member_id,
            member_name: a.member_name,
            shift_id: a.shift_id,
            unit_id: a.unit_id,
            message: a.message,
            position: match (a.lat, a.lon) {
                (Some(lat), Some(lon)) => Some(Position { lat, lon }),
                _ => None,
            },
            raised_at: a.raised_at,
            acked_at: a.acked_at,
            acked_by: a.acked_by,
            ack_note: a.ack_note,
            resolved_at: a.resolved_at,
            resolution: a.resolution,
        }
    }
}

/// Alert states.
pub mod state {
    /// Raised, not acknowledged.
    pub const OPEN: &str = "open";
    /// Acknowledged, condition still there.
    pub const ACKNOWLEDGED: &str = "acknowledged";
    /// Condition cleared.
    pub const RESOLVED: &str = "resolved";
}

/// Publishes alert changes on the event stream and the webhook.
pub async fn announce(state: &AppState, action: &str, alerts: &[alert::Model]) -> ApiResult<()> {
    if alerts.is_empty() {
        return Ok(());
    }
    let paths = unit_paths(&state.db, alerts.iter().filter_map(|a| a.unit_id)).await?;
    let mut events = Vec::with_capacity(alerts.len());
    for a in alerts {
        let data = json!({"action": action, "alert": AlertOut::from(a.clone())});
        if let Some(w) = &state.alerts.webhook {
            w.send(&data);
        }
        events.push(NewEvent {
            kind: kind::ALERT,
            data: crate::events::raw(&data),
            unit_path: a.unit_id.and_then(|u| paths.get(&u).cloned()),
            member_id: a.member_id,
        });
    }
    state.events.publish(events);
    Ok(())
}

/// What an evaluation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// Alerts raised and resolved.
    Done {
        /// Raised now.
        raised: usize,
        /// Resolved now.
        resolved: usize,
    },
    /// Another process is evaluating.
    Skipped,
}

/// Evaluates the alert rules once: raises and resolves alerts, and publishes the changes.
pub async fn evaluate(state: &AppState) -> ApiResult<Evaluation> {
    let _one = state.alerts.evaluating.lock().await;
    // The facts are gathered under the lock, so that they are never older than those of
    // the evaluation another process committed before.
    let Some(held) = state.job_locks.try_hold(Job::AlertEvaluator).await? else {
        return Ok(Evaluation::Skipped);
    };
    let now = Utc::now();
    let facts = gather(state, now).await?;
    let rules = Rules {
        route_idle: chrono::Duration::minutes(state.settings.route_idle_min),
        silent_after: chrono::Duration::minutes(state.settings.silent_after_min),
        sos_hold: chrono::Duration::minutes(state.settings.sos_hold_min),
    };
    let (raised, resolved) = match held.txn() {
        Some(txn) => apply(txn, facts, &rules, now).await?,
        // SQLite: one process, one evaluation at a time (the mutex); each statement
        // commits on its own, so no read transaction has to be upgraded to a write.
        None => apply(&state.db, facts, &rules, now).await?,
    };
    held.release().await?;
    if !raised.is_empty() || !resolved.is_empty() {
        tracing::info!(
            raised = raised.len(),
            resolved = resolved.len(),
            "alerts evaluated"
        );
    }
    announce(state, "raised", &raised).await?;
    announce(state, "resolved", &resolved).await?;
    Ok(Evaluation::Done {
        raised: raised.len(),
        resolved: resolved.len(),
    })
}

/// Decides which alerts should be open given the facts and the alerts open now, raises
/// the wanted ones that are not open and resolves the open ones not wanted, saying why.
async fn apply<C: ConnectionTrait>(
    db: &C,
    mut facts: Facts,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<(Vec<alert::Model>, Vec<alert::Model>), DbErr> {
    let stored = alert::Entity::find()
        .filter(alert::Column::OpenKey.is_not_null())
        .all(db)
        .await?;
    facts.open = stored.iter().filter_map(|a| a.open_key.clone()).collect();
    let wanted = decide(&facts, rules);
    let open = &facts.open;
    let wanted_keys: HashSet<String> = wanted.iter().map(Wanted::key).collect();
    let mut raised = Vec::new();
    for w in wanted.iter().filter(|w| !open.contains(&w.key())) {
        let model = new_alert(w, now);
        let active: alert::ActiveModel = model.clone().into();
        let inserted = alert::Entity::insert(active)
            .on_conflict(
                OnConflict::column(alert::Column::OpenKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await;
        match inserted {
            Ok(1) => raised.push(model),
            Ok(_) | Err(DbErr::RecordNotInserted) => {}
            Err(e) => return Err(e),
        }
    }
    let mut resolved = Vec::new();
    for a in stored.iter().filter(|a| {
        a.open_key
            .as_ref()
            .is_some_and(|k| !wanted_keys.contains(k))
    }) {
        // The subject is the key's second half: the post or the member.
        let subject = a
            .open_key
            .as_deref()
            .and_then(|k| k.split_once(':'))
            .and_then(|(_, id)| id.parse::<Uuid>().ok());
        let resolution = AlertKind::parse(&a.kind)
            .zip(subject)
            .map(|(k, subject)| why_resolved(k, subject, &facts));
        let done = alert::Entity::update_many()
            .col_expr(alert::Column::State, Expr::value(state::RESOLVED))
            .col_expr(alert::Column::ResolvedAt, Expr::value(now))
            .col_expr(alert::Column::Resolution, Expr::value(resolution))
            .col_expr(alert::Column::OpenKey, Expr::value(Option::<String>::None))
            .filter(alert::Column::Id.eq(a.id))
            .filter(alert::Column::OpenKey.is_not_null())
            .exec(db)
            .await?;
        if done.rows_affected == 1 {
            resolved.push(alert::Model {
                state: state::RESOLVED.to_owned(),
                resolved_at: Some(now),
                open_key: None,
                resolution: resolution.map(str::to_owned),
                ..a.clone()
            });
        }
    }
    Ok((raised, resolved))
}

fn new_alert(w: &Wanted, now: DateTime<Utc>) -> alert::Model {
    alert::Model {
        id: Uuid::now_v7(),
        kind: w.kind.as_str().to_owned(),
        state: state::OPEN.to_owned(),
        open_key: Some(w.key()),
        post_id: w.post_id,
        post_code: w.post_code.clone(),
        member_id: w.member_id,
        member_name: w.member_name.clone(),
        shift_id: w.shift_id,
        unit_id: w.unit_id,
        message: w.message.clone(),
        lat: w.position.map(|p| p.lat),
        lon: w.position.map(|p| p.lon),
        raised_at: now,
        acked_at: None,
        acked_by: None,
        ack_note: None,
        resolved_at: None,
        resolution: None,
    }
}

/// Flag values (of the named flag bits) that include `mock_location` or `static_repeat`.
fn spoof_flag_values() -> Vec<i32> {
    let spoof = Flags::MOCK_LOCATION.0 | Flags::STATIC_REPEAT.0;
    (0..Flags::LIMIT).filter(|v| v & spoof != 0).collect()
}

/// The facts of the moment, for every post and member.
async fn gather(state: &AppState, now: DateTime<Utc>) -> ApiResult<Facts> {
    let posts = post::Entity::find().all(&state.db).await?;
    let by_id: HashMap<Uuid, &post::Model> = posts.iter().map(|p| (p.id, p)).collect();
    let live = live_board(state, &posts, now, SilentLastFix::Read).await?;
    let present: HashMap<Uuid, u32> = live
        .board
        .posts
        .iter()
        .map(|p| (p.post_id, p.present.len() as u32))
        .collect();
    let coverage = compute(state, &live.running, now).await?;
    let mut shifts = Vec::with_capacity(live.running.len());
    for (s, c) in live.running.iter().zip(&coverage) {
        let Some(p) = by_id.get(&s.post_id) else {
            continue;
        };
        let unstaffed_since = c.presence.as_ref().and_then(|f| {
            f.unstaffed
                .last()
                .filter(|span| span[1] >= c.evaluated_until - chrono::Duration::seconds(1))
                .map(|span| span[0])
        });
        shifts.push(ShiftFacts {
            post_id: p.id,
            post_code: p.code.clone(),
            unit_id: p.unit_id,
            is_route: PostKind::parse(&p.kind) == Some(PostKind::Route),
            shift_id: s.id,
            starts_at: s.starts_at,
            required: s.min_headcount.unwrap_or(p.min_headcount).max(1) as u32,
            present: present.get(&p.id).copied().unwrap_or(0),
            arrival_grace: chrono::Duration::minutes(i64::from(p.arrival_grace_min)),
            unstaffed_since,
            last_seen_at: c.route.as_ref().and_then(|r| r.last_seen_at),
        });
    }

    // Members on duty: the shift they are on (the earliest begun).
    let mut on_duty: HashMap<Uuid, (Uuid, DateTime<Utc>)> = HashMap::new();
    for s in &live.running {
        for m in live.people.get(&s.id).into_iter().flatten() {
            let e = on_duty.entry(*m).or_insert((s.id, s.starts_at));
            if s.starts_at < e.1 {
                *e = (s.id, s.starts_at);
            }
        }
    }
    let hold = chrono::Duration::minutes(state.settings.sos_hold_min);
    // SOS fixes recorded within the hold, and those received within it however long ago
    // they were recorded: a phone that was offline sends its SOS late, which is when it
    // matters most. The second read goes by the partial index of SOS fixes by arrival,
    // whose condition SQLite matches only when the query names the same literal.
    let mut sos_fixes = fix::Entity::find()
        .filter(fix::Column::Kind.eq(FixKind::Sos.as_str()))
        .filter(fix::Column::RecordedAt.gte(now - hold))
        .filter(fix::Column::RecordedAt.lte(now + chrono::Duration::minutes(5)))
        .filter(
            fix::by_member_on(state.db.get_database_backend())
                .unwrap_or_else(sea_orm::Condition::all),
        )
        .all(&state.db)
        .await?;
    sos_fixes.extend(
        fix::Entity::find()
            .filter(Expr::cust("kind = 'sos'"))
            .filter(fix::Column::ReceivedAt.gte(now - hold))
            .filter(fix::Column::RecordedAt.lte(now + chrono::Duration::minutes(5)))
            .all(&state.db)
            .await?,
    );
    let mut sos: HashMap<Uuid, SosFacts> = HashMap::new();
    for f in sos_fixes {
        if sos
            .get(&f.member_id)
            .is_some_and(|s| s.recorded_at >= f.recorded_at)
        {
            continue;
        }
        // The post the fix named, else the post of the shift the member is on.
        let post = f
            .post_id
            .or_else(|| {
                let (shift, _) = on_duty.get(&f.member_id)?;
                live.running
                    .iter()
                    .find(|s| s.id == *shift)
                    .map(|s| s.post_id)
            })
            .and_then(|p| by_id.get(&p))
            .map(|p| (p.id, p.code.clone()));
        sos.insert(
            f.member_id,
            SosFacts {
                recorded_at: f.recorded_at,
                received_at: f.received_at,
                position: Position {
                    lat: f.lat,
                    lon: f.lon,
                },
                post,
            },
        );
    }
    let mut spoofed: HashMap<Uuid, u32> = HashMap::new();
    let on_duty_ids: Vec<Uuid> = on_duty.keys().copied().collect();
    if let Some(earliest) = on_duty.values().map(|d| d.1).min() {
        for chunk in on_duty_ids.chunks(500) {
            let flagged = fix::Entity::find()
                .filter(fix::Column::MemberId.is_in(chunk.iter().copied()))
                .filter(fix::Column::RecordedAt.gte(earliest))
                .filter(fix::Column::RecordedAt.lte(now + chrono::Duration::minutes(5)))
                .filter(fix::Column::Flags.is_in(spoof_flag_values()))
                .all(&state.db)
                .await?;
            for f in flagged {
                if on_duty
                    .get(&f.member_id)
                    .is_some_and(|d| f.recorded_at >= d.1)
                {
                    *spoofed.entry(f.member_id).or_default() += 1;
                }
            }
        }
    }
    let member_ids: HashSet<Uuid> = on_duty.keys().chain(sos.keys()).copied().collect();
    let member_ids: Vec<Uuid> = member_ids.into_iter().collect();
    let mut members = Vec::with_capacity(member_ids.len());
    for chunk in member_ids.chunks(500) {
        for m in member::Entity::find()
            .filter(member::Column::Id.is_in(chunk.iter().copied()))
            .all(&state.db)
            .await?
        {
            members.push(MemberFacts {
                member_id: m.id,
                name: m.display_name,
                unit_id: m.unit_id,
                on_duty: on_duty.get(&m.id).copied(),
                last_fix: live
                    .last_fix
                    .get(&m.id)
                    .map(|&(t, lat, lon)| (t, Position { lat, lon })),
                last_sos: sos.get(&m.id).cloned(),
                spoofed_fixes: spoofed.get(&m.id).copied().unwrap_or(0),
            });
        }
    }
    members.sort_by_key(|m| m.member_id);

    // Roster gaps of round-the-clock posts in the next 24 hours.
    let round_the_clock: Vec<&post::Model> = posts
        .iter()
        .filter(|p| p.staffing == Staffing::RoundTheClock.as_str())
        .collect();
    let ahead = now + GAP_LOOK_AHEAD;
    let mut gaps = Vec::new();
    for chunk in round_the_clock.chunks(200) {
        let rostered = shift::Entity::find()
            .filter(overlapping(now, ahead))
            .filter(shift::Column::PostId.is_in(chunk.iter().map(|p| p.id)))
            .all(&state.db)
            .await?;
        let people = people_on(&state.db, &rostered).await?;
        for p in chunk {
            let spans = rostered_spans(&rostered, &people, p.id);
            if let Some(g) = roster_gaps(now, ahead, p.min_headcount.max(0) as u32, &spans)
                .into_iter()
                .next()
            {
                let to_horizon = g.to >= ahead;
                gaps.push(GapFacts {
                    post_id: p.id,
                    post_code: p.code.clone(),
                    unit_id: p.unit_id,
                    from: g.from,
                    to: g.to,
                    rostered: g.rostered,
                    required: g.required,
                    to_horizon,
                });
            }
        }
    }
    Ok(Facts {
        now,
        tz: state
            .settings
            .timezone
            .parse()
            .unwrap_or(chrono_tz::Asia::Shanghai),
        shifts,
        members,
        gaps,
        open: HashSet::new(),
    })
}

/// Runs the evaluator: every `alert_every_s`, and at once when woken (an SOS).
pub fn spawn_evaluator(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut woken = false;
        loop {
            let mut tries = 0;
            loop {
                match evaluate(&state).await {
                    Ok(Evaluation::Skipped) if woken && tries < SOS_RETRIES => {
                        tries += 1;
                        tokio::time::sleep(SOS_RETRY).await;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "evaluating alerts failed; will try again");
                        break;
                    }
                }
            }
            state.alerts.evaluated.notify_one();
            woken = tokio::select! {
                () = tokio::time::sleep(state.settings.alert_interval) => false,
                () = state.alerts.wakeup.notified() => true,
            };
        }
    })
}

/// Recomputes the staffed state of every post and publishes a `post_status` event for each
/// that flipped; answers how many did (none when another process is doing it).
pub async fn watch_posts_once(state: &AppState) -> ApiResult<usize> {
    let _one = state.alerts.watching.lock().await;
    // The board is computed under the lock: one computed before it could be older than the
    // one another process stored meanwhile, and would flip its posts back.
    let Some(held) = state.job_locks.try_hold(Job::PostWatcher).await? else {
        return Ok(0);
    };
    let now = Utc::now();
    let posts = post::Entity::find().all(&state.db).await?;
    let live = live_board(state, &posts, now, SilentLastFix::Skip).await?;
    let changed = match held.txn() {
        Some(txn) => store_flips(txn, &live.board.posts, now).await?,
        None => store_flips(&state.db, &live.board.posts, now).await?,
    };
    held.release().await?;
    let units: HashMap<Uuid, Uuid> = posts.iter().map(|p| (p.id, p.unit_id)).collect();
    if changed.is_empty() {
        return Ok(0);
    }
    let paths = unit_paths(
        &state.db,
        changed
            .iter()
            .filter_map(|p| units.get(&p.post_id).copied()),
    )
    .await?;
    let events = changed
        .iter()
        .map(|p| NewEvent {
            kind: kind::POST_STATUS,
            data: post_status_data(
                p.post_id,
                &p.post_code,
                p.staffed,
                p.required,
                p.present.len() as u32,
                now,
            ),
            unit_path: units.get(&p.post_id).and_then(|u| paths.get(u).cloned()),
            member_id: None,
        })
        .collect::<Vec<_>>();
    let n = events.len();
    state.events.publish(events);
    Ok(n)
}

/// Stores the state of the posts whose staffed state differs from the stored one (a post
/// without a row counts as unstaffed); answers them.
async fn store_flips<'a, C: ConnectionTrait>(
    db: &C,
    board: &'a [crate::routes::coverage::PostNow],
    now: DateTime<Utc>,
) -> Result<Vec<&'a crate::routes::coverage::PostNow>, DbErr> {
    let stored: HashMap<Uuid, bool> = post_state::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|s| (s.post_id, s.staffed))
        .collect();
    let mut changed = Vec::new();
    for p in board {
        if stored.get(&p.post_id).copied().unwrap_or(false) == p.staffed {
            continue;
        }
        let row = post_state::ActiveModel {
            post_id: Set(p.post_id),
            staffed: Set(p.staffed),
            present: Set(p.present.len() as i32),
            required: Set(p.required as i32),
            changed_at: Set(now),
        };
        post_state::Entity::insert(row)
            .on_conflict(
                OnConflict::column(post_state::Column::PostId)
                    .update_columns([
                        post_state::Column::Staffed,
                        post_state::Column::Present,
                        post_state::Column::Required,
                        post_state::Column::ChangedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        changed.push(p);
    }
    Ok(changed)
}

/// Runs the watcher: about a second after check-ins (from any process), and after each
/// evaluation.
pub fn spawn_post_watcher(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = state.events.hub.checkins_seen.notified() => {
                    tokio::time::sleep(WATCH_DEBOUNCE).await;
                }
                () = state.alerts.evaluated.notified() => {}
            }
            if let Err(e) = watch_posts_once(&state).await {
                tracing::warn!(error = %e, "updating post status failed; will try again");
            }
        }
    })
}
