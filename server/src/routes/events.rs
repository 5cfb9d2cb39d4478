//! `GET /events`: the live event stream (Server-Sent Events).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::{
        IntoResponse,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::AuthUser,
    events::{Event, Start, Viewer, kind},
    state::AppState,
};

/// The heartbeat comment's interval.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events buffered per connection before it is treated as lagging.
const CONNECTION_BUFFER: usize = 256;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// How often an open stream checks that its viewer may still see what it shows.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Members whose positions a stream showed and not yet audited.
#[derive(Default)]
struct Seen(std::collections::HashSet<uuid::Uuid>);

impl Seen {
    /// Notes an event that carries a member's position: a check-in, or an alert (an SOS
    /// or a silent member's last position).
    fn note(&mut self, e: &Event) {
        if (e.kind == kind::CHECKIN || e.kind == kind::ALERT)
            && let Some(m) = e.member_id
        {
            self.0.insert(m);
        }
    }

    async fn flush(&mut self, state: &AppState, viewer: uuid::Uuid) {
        if self.0.is_empty() {
            return;
        }
        let subjects: Vec<uuid::Uuid> = self.0.drain().collect();
        if let Err(e) =
            crate::audit::record_live(state, viewer, subjects, "event_stream", chrono::Utc::now())
                .await
        {
            tracing::warn!(error = %e, "auditing the positions an event stream showed failed");
        }
    }
}

/// One open stream.
struct Stream<'a> {
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
    viewer: Viewer,
    seen: &'a mut Seen,
    last_sent: u64,
}

impl Stream<'_> {
    /// Sends the events the viewer sees and has not had; false when the client is gone.
    async fn send_all(&mut self, events: Vec<Arc<Event>>) -> bool {
        for e in events {
            if e.id <= self.last_sent {
                continue;
            }
            self.last_sent = e.id;
            if self.viewer.sees(&e) {
                self.seen.note(&e);
                if self.tx.send(Ok(sse(&e))).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    async fn reset(&mut self, latest: u64) -> bool {
        self.last_sent = latest;
        self.tx.send(Ok(reset(latest))).await.is_ok()
    }

    /// Streams until the client goes, the server shuts down, or the viewer may no longer
    /// see as they did when the stream opened (logged out, deactivated, a new role or
    /// unit, the access token expired): the client then reconnects with a fresh token
    /// and `Last-Event-ID`, and gets what it may see now.
    async fn run(
        mut self,
        state: &AppState,
        user: &AuthUser,
        start: Start,
        mut rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
        last: Option<&str>,
    ) {
        let hub = state.events.hub.clone();
        match start {
            Start::Replay(events) => {
                if let Some(raw) = last {
                    self.last_sent = raw.trim().parse().unwrap_or(0);
                }
                if !self.send_all(events).await {
                    return;
                }
            }
            Start::Reset(latest) => {
                if !self.reset(latest).await {
                    return;
                }
            }
        }
        let mut closing = hub.closing();
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            let received = tokio::select! {
                r = rx.recv() => Some(r),
                // The server is shutting down: end the stream so it does not hold it up.
                _ = closing.wait_for(|c| *c) => return,
                // The client went away: end now, not at the next event it would see.
                _ = self.tx.closed() => return,
                _ = recheck.tick() => None,
            };
            let Some(received) = received else {
                if !user.still_sees_as(state).await {
                    return;
                }
                self.seen.flush(state, user.id).await;
                continue;
            };
            let sent = match received {
                Ok(e) => self.send_all(vec![e]).await,
                // Fell behind the fan-out: catch up from the history, or reset.
                Err(RecvError::Lagged(_)) => match hub.since(self.last_sent) {
                    Ok(events) => self.send_all(events).await,
                    Err(latest) => self.reset(latest).await,
                },
                Err(RecvError::Closed) => return,
            };
            if !sent {
                return;
            }
        }
    }
}

fn sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.kind.as_str())
        .data(e.data.get())
}

fn reset(id: u64) -> SseEvent {
    SseEvent::default()
        .id(id.to_string())
        .event(kind::RESET)
        .data("{}")
}

/// One server-sent event of `GET /events`, field by field (in OpenAPI 3.1 the schema of
/// an event stream describes each event). `data` is a JSON document whose shape `event`
/// names. Only for the document: the stream is written by hand.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LiveEvent {
    /// Position in the stream; send it back as `Last-Event-ID` to resume after it.
    id: Option<String>,
    /// `alert`, `checkin`, `board` and so on.
    event: Option<String>,
    /// The event's JSON document.
    data: Option<String>,
    /// Milliseconds to wait before reconnecting.
    retry: Option<u64>,
}

/// Live events as Server-Sent Events: `checkin`, `alert` (raised, acked, resolved),
/// `post_status` (a post became staffed or unstaffed) and `kiosk` (an officer signed on or
/// off at a kiosk device), each with an increasing `id`.
/// Admins see everything; commanders their unit subtree; officers and volunteers their
/// own check-ins and the alerts about themselves. A `: ping` comment comes every 15 s.
/// `Last-Event-ID` resumes after that event from the recent history; when the history no
/// longer reaches back to it, a `reset` event comes first and the client should re-read
/// `/status/now` and `/alerts`. At most 8 streams per member may be open at once in one
/// server process; a further one is answered 429 with `Retry-After`.
/// A stream ends within seconds once its viewer may no longer see as they did when it
/// opened (logged out, deactivated, given another role or unit) and when its access token
/// expires: reconnect with a fresh token and `Last-Event-ID`. The positions a stream
/// shows (check-ins, alerts) are audited, once per viewer, member and hour.
#[utoipa::path(get, path = "/events", tag = "live", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received, to resume after it")),
    responses((status = 200, description = "An endless stream of events", body = LiveEvent, content_type = "text/event-stream")))]
pub async fn events(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
) -> axum::response::Response {
    let Some(place) = state.events.streams.take(user.id) else {
        return crate::error::ApiError::rate_limited(
            format!(
                "at most {} event streams may be open at once for one member; close one",
                crate::events::MAX_STREAMS_PER_MEMBER
            ),
            HEARTBEAT.as_secs(),
        )
        .into_response();
    };
    let viewer = Viewer::of(&user);
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let hub = state.events.hub.clone();
    let (start, rx) = hub.subscribe(last.as_deref());
    let (tx, out) = mpsc::channel(CONNECTION_BUFFER);
    tokio::spawn(async move {
        // Held while the stream runs; its end frees the place.
        let _place = place;
        let mut seen = Seen::default();
        let stream = Stream {
            tx,
            viewer,
            seen: &mut seen,
            last_sent: 0,
        };
        stream.run(&state, &user, start, rx, last.as_deref()).await;
        seen.flush(&state, user.id).await;
    });
    Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("ping"))
        .into_response()
}
