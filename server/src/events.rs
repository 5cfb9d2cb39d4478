//! Live events: check-ins, alerts and post status changes, numbered, kept in a bounded
//! history for resuming, and fanned out to every subscriber of every process.
//!
//! **Ids.** On PostgreSQL every event gets its id from the sequence `patrol_event_seq`,
//! taken under a transaction-level advisory lock held until the commit that sends the
//! events with `NOTIFY`. Publishers are thus serialised, and PostgreSQL delivers
//! notifications in commit order to every listener, so every process sees the same events
//! in the same, increasing id order: a client may resume on any process. Each process
//! delivers even its own events only from its listener, never directly. On SQLite (one
//! process) ids come from a counter that starts at the start time in microseconds, so they
//! keep increasing across restarts.
//!
//! **Limits.** A process knows only the events since it started listening: a
//! `Last-Event-ID` older than that, or older than its history, gets `reset`. If the
//! listener's connection drops, the events sent meanwhile are lost to that process; it
//! forgets its history, so that clients resuming across the hole get `reset` too.
//! Publishing never waits: check-ins and events go through bounded queues and are dropped
//! (with a warning) when those are full, so a slow database or a flood never slows ingest.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue};
use tokio::sync::{Notify, broadcast, mpsc};
use uuid::Uuid;

use crate::{
    auth::{AuthUser, Role},
    domain::plausibility::Flags,
    store::{fix, member, post, unit},
};

/// The channel events are sent on (PostgreSQL).
pub const CHANNEL: &str = "patrol_events";
/// Key of the advisory lock that serialises publishers.
const PUBLISH_LOCK: i64 = 0x7061_7472_6f6c_0001;
/// A notification payload is kept under this many bytes (PostgreSQL's limit is 8000).
const MAX_PAYLOAD: usize = 7000;
/// Check-in batches waiting to be published; more are dropped.
const CHECKIN_QUEUE: usize = 4096;
/// Event batches waiting for the database; more are dropped.
const PUBLISH_QUEUE: usize = 4096;
/// Stored fixes waiting to be described as events, over all queued batches; more are
/// dropped. A batch holds up to a thousand fixes, so counting batches alone let a
/// describer that fell behind a heavy upload hold gigabytes.
const MAX_QUEUED_CHECKINS: usize = 100_000;
/// Events waiting for the database (PostgreSQL), over all queued batches; more are dropped.
const MAX_QUEUED_EVENTS: usize = 100_000;

/// How many items the batches in a queue hold between them, against a limit.
struct QueuedItems {
    held: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl QueuedItems {
    fn new(max: usize) -> Arc<QueuedItems> {
        Arc::new(QueuedItems {
            held: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// Counts `n` more items in, unless that would pass the limit.
    fn admit(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.held
            .fetch_update(Relaxed, Relaxed, |held| {
                (held + n <= self.max).then_some(held + n)
            })
            .is_ok()
    }

    /// Counts `n` items out (taken from the queue, or never sent).
    fn release(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self
            .held
            .fetch_update(Relaxed, Relaxed, |held| Some(held.saturating_sub(n)));
    }
}

/// The sending side of a queue of batches bounded by the items they hold.
#[derive(Clone)]
struct BoundedSender<T> {
    tx: mpsc::Sender<Vec<T>>,
    queued: Arc<QueuedItems>,
}

impl<T> BoundedSender<T> {
    /// Queues a batch without waiting; false (and the batch dropped) when the queue is full.
    fn try_send(&self, batch: Vec<T>) -> bool {
        let n = batch.len();
        if !self.queued.admit(n) {
            return false;
        }
        if self.tx.try_send(batch).is_err() {
            self.queued.release(n);
            return false;
        }
        true
    }
}

/// A queue of batches that holds at most `max_items` items and `max_batches` batches.
fn bounded<T>(
    max_batches: usize,
    max_items: usize,
) -> (BoundedSender<T>, mpsc::Receiver<Vec<T>>, Arc<QueuedItems>) {
    let (tx, rx) = mpsc::channel(max_batches);
    let queued = QueuedItems::new(max_items);
    (
        BoundedSender {
            tx,
            queued: queued.clone(),
        },
        rx,
        queued,
    )
}
/// How long a member's name and unit are trusted for check-in events.
const NAME_TTL: Duration = Duration::from_secs(60);

/// The kind of an event.
pub mod kind {
    /// A stored check-in.
    pub const CHECKIN: &str = "checkin";
    /// An alert raised, acknowledged or resolved.
    pub const ALERT: &str = "alert";
    /// A post became staffed or unstaffed.
    pub const POST_STATUS: &str = "post_status";
    /// An officer signed on or off at a kiosk device.
    pub const KIOSK: &str = "kiosk";
    /// The history cannot cover the client's `Last-Event-ID`.
    pub const RESET: &str = "reset";
}

/// An event with its id, and what decides who may see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id, the same on every process.
    pub id: u64,
    /// `checkin`, `alert`, `post_status` or `kiosk`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The JSON sent to clients, serialized once.
    pub data: Arc<RawValue>,
    /// Path of the unit the event belongs to; commanders of that subtree see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_path: Option<String>,
    /// The member it is about; that member sees it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<Uuid>,
}

/// An event before it has an id.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Its kind.
    pub kind: &'static str,
    /// Its data, serialized once.
    pub data: Arc<RawValue>,
    /// The unit it belongs to.
    pub unit_path: Option<String>,
    /// The member it is about.
    pub member_id: Option<Uuid>,
}

/// Who watches a stream, and so what they see.
#[derive(Clone, Debug)]
pub enum Viewer {
    /// Admins: everything.
    All,
    /// Commanders: their unit subtree, and what is about themselves.
    Subtree(String, Uuid),
    /// Officers and volunteers (and commanders without a unit): only their own check-ins
    /// and the alerts about themselves.
    Own(Uuid),
}

impl Viewer {
    /// The viewer a caller is.
    pub fn of(user: &AuthUser) -> Viewer {
        match (user.role, &user.unit_path) {
            (Role::Admin, _) => Viewer::All,
            (Role::Commander, Some(path)) => Viewer::Subtree(path.clone(), user.id),
            _ => Viewer::Own(user.id),
        }
    }

    /// Whether the viewer may see an event.
    pub fn sees(&self, e: &Event) -> bool {
        match self {
            Viewer::All => true,
            Viewer::Subtree(prefix, me) => {
                e.member_id == Some(*me)
                    || e.unit_path
                        .as_deref()
                        .is_some_and(|p| p.starts_with(prefix.as_str()))
            }
            Viewer::Own(me) => e.member_id == Some(*me),
        }
    }
}

/// Where a new subscriber starts.
pub enum Start {
    /// These events follow the client's `Last-Event-ID`.
    Replay(Vec<Arc<Event>>),
    /// The history does not reach back to the client's `Last-Event-ID`; the stream
    /// continues after this id.
    Reset(u64),
}

struct History {
    events: VecDeque<Arc<Event>>,
    /// Events up to this id are unknown here (before the start, or dropped).
    floor: u64,
    /// The latest id delivered (or the floor).
    latest: u64,
    /// The listener lost its connection: what comes next follows a hole.
    hole: bool,
    /// The next id on SQLite.
    next_local: u64,
}

/// The events of this process: history and fan-out.
pub struct Hub {
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Event>>,
    capacity: usize,
    /// Woken by every check-in event delivered (the post status watcher listens).
    pub checkins_seen: Notify,
    /// Set when the server shuts down, so that open streams end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    /// A hub keeping `capacity` events, knowing nothing before `floor`.
    pub fn new(capacity: usize, floor: u64) -> Hub {
        let (tx, _) = broadcast::channel(1024);
        Hub {
            history: Mutex::new(History {
                events: VecDeque::with_capacity(capacity.min(16_384)),
                floor,
                latest: floor,
                hole: false,
                next_local: floor + 1,
            }),
            tx,
            capacity,
            checkins_seen: Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every open stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Tells when the server shuts down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers events that have ids (in increasing order) to history and subscribers.
    pub fn deliver(&self, events: Vec<Event>) {
        let checkins = {
            let mut h = self.lock();
            events
                .into_iter()
                .fold(false, |seen, e| self.push(&mut h, e) | seen)
        };
        if checkins {
            self.checkins_seen.notify_one();
        }
    }

    /// Adds one event to the history and sends it to subscribers, under the lock so that
    /// they see the order of the history; answers whether it was a new check-in.
    fn push(&self, h: &mut History, e: Event) -> bool {
        if h.hole {
            // What was sent while the listener was away is lost here.
            h.events.clear();
            h.floor = e.id.saturating_sub(1).max(h.latest);
            h.hole = false;
        }
        if e.id <= h.latest {
            return false;
        }
        let checkin = e.kind == kind::CHECKIN;
        h.latest = e.id;
        let e = Arc::new(e);
        if h.events.len() >= self.capacity
            && let Some(old) = h.events.pop_front()
        {
            h.floor = old.id;
        }
        h.events.push_back(e.clone());
        let _ = self.tx.send(e);
        checkin
    }

    /// Gives events ids from the local counter and delivers them (SQLite).
    fn deliver_local(&self, events: Vec<NewEvent>) {
        let checkins = {
            let mut h = self.lock();
            events.into_iter().fold(false, |seen, e| {
                let id = h.next_local;
                h.next_local += 1;
                self.push(&mut h, with_id(e, id)) | seen
            })
        };
        if checkins {
            self.checkins_seen.notify_one();
        }
    }

    /// Marks that the listener lost its connection.
    fn mark_hole(&self) {
        self.lock().hole = true;
    }

    /// Subscribes after `last` (the client's `Last-Event-ID`), atomically with reading
    /// the history so that nothing falls between.
    pub fn subscribe(&self, last: Option<&str>) -> (Start, broadcast::Receiver<Arc<Event>>) {
        let h = self.lock();
        let rx = self.tx.subscribe();
        let start = match last {
            None => Start::Replay(Vec::new()),
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(last) if last >= h.floor => {
                    Start::Replay(h.events.iter().filter(|e| e.id > last).cloned().collect())
                }
                _ => Start::Reset(h.latest),
            },
        };
        (start, rx)
    }

    /// The events after `last`, or `None` when the history no longer reaches back to it.
    pub fn since(&self, last: u64) -> Result<Vec<Arc<Event>>, u64> {
        let h = self.lock();
        if last < h.floor {
            return Err(h.latest);
        }
        Ok(h.events.iter().filter(|e| e.id > last).cloned().collect())
    }
}

fn with_id(e: NewEvent, id: u64) -> Event {
    Event {
        id,
        kind: e.kind.to_owned(),
        data: e.data,
        unit_path: e.unit_path,
        member_id: e.member_id,
    }
}

/// Publishing events, cheap to clone.
#[derive(Clone)]
pub struct Events {
    /// This process's history and subscribers.
    pub hub: Arc<Hub>,
    /// The streams open in this process, by member.
    pub streams: Arc<OpenStreams>,
    checkins: BoundedSender<fix::Model>,
    remote: Option<BoundedSender<NewEvent>>,
}

/// Most event streams one member may hold open at once in a process: a console, a phone
/// and a few tabs; a script opening more gets 429.
pub const MAX_STREAMS_PER_MEMBER: usize = 8;

/// Open event streams by member, so that one login cannot hold open streams without bound.
#[derive(Default)]
pub struct OpenStreams {
    open: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, usize>>,
}

/// One open stream; closing it (dropping this) frees its place.
pub struct StreamPlace {
    streams: Arc<OpenStreams>,
    member: uuid::Uuid,
}

impl OpenStreams {
    /// A place for one more stream of `member`, or None when they hold the most already.
    pub fn take(self: &Arc<Self>, member: uuid::Uuid) -> Option<StreamPlace> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(member).or_insert(0);
        if *n >= MAX_STREAMS_PER_MEMBER {
            return None;
        }
        *n += 1;
        Some(StreamPlace {
            streams: self.clone(),
            member,
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.member) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.member);
            }
        }
    }
}

impl Events {
    /// Starts publishing on this database: on PostgreSQL, listens first (so the floor of
    /// the history is known before anyone subscribes) and starts the publisher.
    pub async fn start(
        db: DatabaseConnection,
        database_url: &str,
        capacity: usize,
    ) -> anyhow::Result<Events> {
        let (checkin_tx, checkin_rx, checkins_queued) = bounded(CHECKIN_QUEUE, MAX_QUEUED_CHECKINS);
        let (hub, remote) = if db.get_database_backend() == DbBackend::Postgres {
            let mut listener = sea_orm::sqlx::postgres::PgListener::connect(database_url).await?;
            listener.listen(CHANNEL).await?;
            let row = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT last_value, is_called FROM patrol_event_seq",
                ))
                .await?
                .ok_or_else(|| anyhow::anyhow!("the event sequence is missing"))?;
            let last: i64 = row.try_get("", "last_value")?;
            let called: bool = row.try_get("", "is_called")?;
            let floor = if called { last.max(0) as u64 } else { 0 };
            let hub = Arc::new(Hub::new(capacity, floor));
            tokio::spawn(listen(listener, hub.clone()));
            let (tx, rx, queued) = bounded(PUBLISH_QUEUE, MAX_QUEUED_EVENTS);
            tokio::spawn(publish_to_postgres(db.clone(), rx, queued));
            (hub, Some(tx))
        } else {
            let start = Utc::now().timestamp_micros().max(0) as u64;
            (Arc::new(Hub::new(capacity, start)), None)
        };
        let events = Events {
            hub,
            streams: Arc::default(),
            checkins: checkin_tx,
            remote,
        };
        tokio::spawn(describe_checkins(
            db,
            events.clone(),
            checkin_rx,
            checkins_queued,
        ));
        Ok(events)
    }

    /// Publishes events; never waits (drops them when the queue is full).
    pub fn publish(&self, events: Vec<NewEvent>) {
        if events.is_empty() {
            return;
        }
        match &self.remote {
            None => self.hub.deliver_local(events),
            Some(tx) => {
                if !tx.try_send(events) {
                    tracing::warn!("the event queue is full; events dropped");
                }
            }
        }
    }

    /// Publishes freshly stored fixes as `checkin` events; never waits.
    pub fn checkins(&self, fixes: Vec<fix::Model>) {
        if fixes.is_empty() {
            return;
        }
        if !self.checkins.try_send(fixes) {
            tracing::warn!("the check-in event queue is full; events dropped");
        }
    }
}

/// Receives notifications and delivers them to this process's hub.
async fn listen(mut listener: sea_orm::sqlx::postgres::PgListener, hub: Arc<Hub>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match serde_json::from_str::<Vec<Event>>(n.payload()) {
                Ok(events) => hub.deliver(events),
                Err(e) => tracing::warn!(error = %e, "an event notification was not understood"),
            },
            Ok(None) => {
                tracing::warn!("the event listener lost its connection; reconnecting");
                hub.mark_hole();
            }
            Err(e) => {
                tracing::warn!(error = %e, "the event listener failed; retrying");
                hub.mark_hole();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sends queued events with `NOTIFY`, taking their ids under the publishers' lock.
async fn publish_to_postgres(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<Vec<NewEvent>>,
    queued: Arc<QueuedItems>,
) {
    while let Some(mut events) = rx.recv().await {
        while events.len() < 10_000 {
            match rx.try_recv() {
                Ok(more) => events.extend(more),
                Err(_) => break,
            }
        }
        queued.release(events.len());
        let mut attempt = 0;
        loop {
            match notify(&db, &events).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, "publishing events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, count = events.len(), "publishing events failed; dropped");
                    break;
                }
            }
        }
    }
}

/// The JSON payloads of events, each under [`MAX_PAYLOAD`] bytes.
fn payloads(events: &[Event]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 2;
    for e in events {
        let Ok(text) = serde_json::to_string(e) else {
            continue;
        };
        if text.len() + 2 > MAX_PAYLOAD {
            tracing::warn!(kind = %e.kind, "an event too large to send was dropped");
            continue;
        }
        if size + text.len() + 1 > MAX_PAYLOAD && !current.is_empty() {
            out.push(format!("[{}]", current.join(",")));
            current.clear();
            size = 2;
        }
        size += text.len() + 1;
        current.push(text);
    }
    if !current.is_empty() {
        out.push(format!("[{}]", current.join(",")));
    }
    out
}

async fn notify(db: &DatabaseConnection, events: &[NewEvent]) -> Result<(), sea_orm::DbErr> {
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("SELECT pg_advisory_xact_lock({PUBLISH_LOCK})"),
    ))
    .await?;
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT nextval('patrol_event_seq') AS id FROM generate_series(1, $1)",
            [(events.len() as i64).into()],
        ))
        .await?;
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64>("", "id"))
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    let with_ids: Vec<Event> = events
        .iter()
        .cloned()
        .zip(ids)
        .map(|(e, id)| with_id(e, id.max(0) as u64))
        .collect();
    for payload in payloads(&with_ids) {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), payload.into()],
        ))
        .await?;
    }
    txn.commit().await
}

/// A member as check-in events name them.
#[derive(Clone)]
struct Named {
    at: Instant,
    name: String,
    unit_path: Option<String>,
}

/// Turns stored fixes into `checkin` events with the member's name and the post's code,
/// off the ingest path.
async fn describe_checkins(
    db: DatabaseConnection,
    events: Events,
    mut rx: mpsc::Receiver<Vec<fix::Model>>,
    queued: Arc<QueuedItems>,
) {
    let mut members: HashMap<Uuid, Named> = HashMap::new();
    let mut posts: HashMap<Uuid, (Instant, String)> = HashMap::new();
    while let Some(mut fixes) = rx.recv().await {
        while fixes.len() < 4000 {
            match rx.try_recv() {
                Ok(more) => fixes.extend(more),
                Err(_) => break,
            }
        }
        queued.release(fixes.len());
        if let Err(e) = name_members(&db, &fixes, &mut members).await {
            tracing::warn!(error = %e, "reading members for check-in events failed");
        }
        if let Err(e) = name_posts(&db, &fixes, &mut posts).await {
            tracing::warn!(error = %e, "reading posts for check-in events failed");
        }
        let out = fixes
            .iter()
            .map(|f| {
                let m = members.get(&f.member_id);
                NewEvent {
                    kind: kind::CHECKIN,
                    data: checkin_data(
                        f,
                        m.map(|m| m.name.as_str()),
                        f.post_id.and_then(|p| posts.get(&p)).map(|p| p.1.as_str()),
                    ),
                    unit_path: m.and_then(|m| m.unit_path.clone()),
                    member_id: Some(f.member_id),
                }
            })
            .collect();
        events.publish(out);
    }
}

/// Event data, serialized once: the history, the streams and PostgreSQL's notifications
/// all share this text.
pub fn raw(data: &impl Serialize) -> Arc<RawValue> {
    serde_json::value::to_raw_value(data)
        .map(Arc::from)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "event data could not be serialized");
            Arc::from(RawValue::NULL.to_owned())
        })
}

/// The data of a `checkin` event. The fields are in alphabetical order, as they were when
/// this was a JSON value.
#[derive(Serialize)]
struct CheckinData<'a> {
    fix_id: Uuid,
    flags: Vec<&'static str>,
    kind: &'a str,
    lat: f64,
    lon: f64,
    member_id: Uuid,
    member_name: Option<&'a str>,
    post_code: Option<&'a str>,
    post_id: Option<Uuid>,
    recorded_at: DateTime<Utc>,
}

/// The data of a `checkin` event.
pub fn checkin_data(
    f: &fix::Model,
    member_name: Option<&str>,
    post_code: Option<&str>,
) -> Arc<RawValue> {
    raw(&CheckinData {
        fix_id: f.id,
        flags: Flags(f.flags).names(),
        kind: &f.kind,
        lat: f.lat,
        lon: f.lon,
        member_id: f.member_id,
        member_name,
        post_code,
        post_id: f.post_id,
        recorded_at: f.recorded_at,
    })
}

async fn name_members(
    db: &DatabaseConnection,
    fixes: &[fix::Model],
    cache: &mut HashMap<Uuid, Named>,
) -> Result<(), sea_orm::DbErr> {
    let mut wanted: Vec<Uuid> = fixes
        .iter()
        .map(|f| f.member_id)
        .filter(|m| cache.get(m).is_none_or(|n| n.at.elapsed() >= NAME_TTL))
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    if cache.len() > 100_000 {
        cache.clear();
    }
    for chunk in wanted.chunks(500) {
        let found = member::Entity::find()
            .filter(member::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        let paths = unit_paths(db, found.iter().filter_map(|m| m.unit_id)).await?;
        for m in found {
            cache.insert(
                m.id,
                Named {
                    at: Instant::now(),
                    name: m.display_name,
                    unit_path: m.unit_id.and_then(|u| paths.get(&u).cloned()),
                },
            );
        }
    }
    Ok(())
}

async fn name_posts(
    db: &DatabaseConnection,
    fixes: &[fix::Model],
    cache: &mut HashMap<Uuid, (Instant, String)>,
) -> Result<(), sea_orm::DbErr> {
    let mut wanted: Vec<Uuid> = fixes
        .iter()
        .filter_map(|f| f.post_id)
        .filter(|p| cache.get(p).is_none_or(|c| c.0.elapsed() >= NAME_TTL))
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    if cache.len() > 100_000 {
        cache.clear();
    }
    for p in post::Entity::find()
        .filter(post::Column::Id.is_in(wanted))
        .all(db)
        .await?
    {
        cache.insert(p.id, (Instant::now(), p.code));
    }
    Ok(())
}

/// The paths of these units (the scope of events about them).
pub async fn unit_paths<C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, String>, sea_orm::DbErr> {
    let mut ids: Vec<Uuid> = ids.into_iter().collect();
    ids.sort();
    ids.dedup();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        for u in unit::Entity::find()
            .filter(unit::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?
        {
            out.insert(u.id, u.path);
        }
    }
    Ok(out)
}

/// The data of a `post_status` event.
pub fn post_status_data(
    post_id: Uuid,
    post_code: &str,
    staffed: bool,
    required: u32,
    present: u32,
    at: DateTime<Utc>,
) -> Arc<RawValue> {
    raw(&json!({
        "post_id": post_id,
        "post_code": post_code,
        "staffed": staffed,
        "required": required,
        "present": present,
        "at": at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkin_data_is_the_json_it_was_as_a_value() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T08:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let fix = fix::Model {
            id: Uuid::now_v7(),
            member_id: Uuid::now_v7(),
            client_id: Uuid::new_v4(),
            recorded_at: at,
            received_at: at,
            lat: 34.251234567,
            lon: -108.95,
            accuracy_m: 5.0,
            speed_mps: None,
            heading_deg: None,
            altitude_m: None,
            battery: None,
            kind: "sos".into(),
            post_id: Some(Uuid::now_v7()),
            shift_id: None,
            datum: "wgs84".into(),
            mock: true,
            flags: (Flags::MOCK_LOCATION | Flags::OUTSIDE_SHIFT).0,
            source: "api".into(),
        };
        for (name, code) in [(Some("Li \"Wei\""), Some("K-01")), (None, None)] {
            let before = json!({
                "fix_id": fix.id,
                "member_id": fix.member_id,
                "member_name": name,
                "post_id": fix.post_id,
                "post_code": code,
                "lat": fix.lat,
                "lon": fix.lon,
                "recorded_at": fix.recorded_at,
                "kind": fix.kind,
                "flags": Flags(fix.flags).names(),
            });
            assert_eq!(checkin_data(&fix, name, code).get(), before.to_string());
        }
    }

    #[test]
    fn a_queue_holds_at_most_its_items_and_frees_them_when_taken() {
        let (tx, mut rx, queued) = bounded::<u32>(100, 5);
        assert!(tx.try_send(vec![1, 2, 3]));
        // Three held: two more fit, three do not, and a refused batch is not counted.
        assert!(!tx.try_send(vec![4, 5, 6]));
        assert!(tx.try_send(vec![4, 5]));
        assert!(!tx.try_send(vec![6]));
        let taken = rx.try_recv().expect("a batch is queued");
        assert_eq!(taken, vec![1, 2, 3]);
        queued.release(taken.len());
        assert!(tx.try_send(vec![6, 7, 8]));
        assert!(!tx.try_send(vec![9]));
        // Full in batches as well as in items.
        let (tx, _rx, _) = bounded::<u32>(1, 100);
        assert!(tx.try_send(vec![1]));
        assert!(!tx.try_send(vec![2]));
    }

    fn new_event(member: Option<Uuid>, path: Option<&str>) -> NewEvent {
        NewEvent {
            kind: kind::CHECKIN,
            data: raw(&json!({})),
            unit_path: path.map(str::to_owned),
            member_id: member,
        }
    }

    #[test]
    fn resume_replays_after_the_last_id_and_resets_below_the_floor() {
        let hub = Hub::new(3, 100);
        hub.deliver_local((0..5).map(|_| new_event(None, None)).collect());
        // Ids 101..=105; the history keeps 103..=105, so the floor is 102.
        let (start, _) = hub.subscribe(Some("103"));
        match start {
            Start::Replay(evs) => {
                assert_eq!(evs.iter().map(|e| e.id).collect::<Vec<_>>(), [104, 105])
            }
            Start::Reset(_) => panic!("103 is in the history"),
        }
        assert!(matches!(hub.subscribe(Some("102")).0, Start::Replay(ref e) if e.len() == 3));
        assert!(matches!(hub.subscribe(Some("101")).0, Start::Reset(105)));
        assert!(matches!(hub.subscribe(Some("junk")).0, Start::Reset(105)));
        assert!(matches!(hub.subscribe(None).0, Start::Replay(ref e) if e.is_empty()));
        assert_eq!(hub.since(101).unwrap_err(), 105);
    }

    #[test]
    fn a_hole_in_the_listener_forgets_the_history() {
        let hub = Hub::new(10, 0);
        let ev = |id| Event {
            id,
            kind: kind::ALERT.into(),
            data: raw(&json!({})),
            unit_path: None,
            member_id: None,
        };
        hub.deliver(vec![ev(1), ev(2)]);
        hub.mark_hole();
        hub.deliver(vec![ev(7)]);
        assert!(matches!(hub.subscribe(Some("2")).0, Start::Reset(7)));
        assert!(matches!(hub.subscribe(Some("6")).0, Start::Replay(ref e) if e.len() == 1));
        // Out-of-order or repeated ids are not delivered twice.
        hub.deliver(vec![ev(7), ev(5)]);
        assert_eq!(hub.since(6).unwrap().len(), 1);
    }

    #[test]
    fn viewers_see_their_scope() {
        let me = Uuid::from_u128(1);
        let e = |member, path: Option<&str>| with_id(new_event(member, path), 1);
        let commander = Viewer::Subtree("/d/s1/".into(), me);
        assert!(commander.sees(&e(None, Some("/d/s1/c1/"))));
        assert!(!commander.sees(&e(None, Some("/d/s2/"))));
        assert!(commander.sees(&e(Some(me), Some("/d/s2/"))));
        let officer = Viewer::Own(me);
        assert!(officer.sees(&e(Some(me), None)));
        assert!(!officer.sees(&e(Some(Uuid::from_u128(2)), Some("/d/s1/"))));
        assert!(!officer.sees(&e(None, Some("/d/s1/"))));
        assert!(Viewer::All.sees(&e(None, None)));
    }

    #[test]
    fn payloads_stay_under_the_limit_and_keep_every_event() {
        let events: Vec<Event> = (1..=200)
            .map(|id| Event {
                id,
                kind: kind::CHECKIN.into(),
                data: raw(&json!({"text": "x".repeat(100)})),
                unit_path: Some("/a/".into()),
                member_id: None,
            })
            .collect();
        let out = payloads(&events);
        assert!(out.len() > 1);
        let mut ids = Vec::new();
        for p in &out {
            assert!(p.len() <= MAX_PAYLOAD);
            let back: Vec<Event> = serde_json::from_str(p).unwrap();
            ids.extend(back.iter().map(|e| e.id));
        }
        assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    }
}
