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

/// Live events as Server-Sent Events: `checkin`, `alert` (raised, acked, resolved),
/// `post_status` (a post became staffed or unstaffed) and `kiosk` (an officer signed on or
/// off at a kiosk device), each with an increasing `id`.
/// Admins see everything; commanders their unit subtree; officers and volunteers their
/// own check-ins and the alerts about themselves. A `: ping` comment comes every 15 s.
/// `Last-Event-ID` resumes after that event from the recent history; when the history no
/// longer reaches back to it, a `reset` event comes first and the client should re-read
/// `/status/now` and `/alerts`. At most 8 streams per member may be open at once in one
/// server process; a further one is answered 429 with `Retry-After`.
#[utoipa::path(get, path = "/events", tag = "live", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received, to resume after it")),
    responses((status = 200, description = "An endless stream of events", body = String, content_type = "text/event-stream")))]
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
    let (start, mut rx) = hub.subscribe(last.as_deref());
    let (tx, out) = mpsc::channel(CONNECTION_BUFFER);
    tokio::spawn(async move {
        // Held while the stream runs; its end frees the place.
        let _place = place;
        let send_all = async |tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
                              events: Vec<Arc<Event>>,
                              last: &mut u64|
               -> bool {
            for e in events {
                if e.id <= *last {
                    continue;
                }
                *last = e.id;
                if viewer.sees(&e) && tx.send(Ok(sse(&e))).await.is_err() {
                    return false;
                }
            }
            true
        };
        let mut last_sent = 0u64;
        match start {
            Start::Replay(events) => {
                if let Some(raw) = &last {
                    last_sent = raw.trim().parse().unwrap_or(0);
                }
                if !send_all(&tx, events, &mut last_sent).await {
                    return;
                }
            }
            Start::Reset(latest) => {
                last_sent = latest;
                if tx.send(Ok(reset(latest))).await.is_err() {
                    return;
                }
            }
        }
        let mut closing = hub.closing();
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                // The server is shutting down: end the stream so it does not hold it up.
                _ = closing.wait_for(|c| *c) => return,
                // The client went away: end now, not at the next event it would see.
                _ = tx.closed() => return,
            };
            match received {
                Ok(e) => {
                    if !send_all(&tx, vec![e], &mut last_sent).await {
                        return;
                    }
                }
                // Fell behind the fan-out: catch up from the history, or reset.
                Err(RecvError::Lagged(_)) => match hub.since(last_sent) {
                    Ok(events) => {
                        if !send_all(&tx, events, &mut last_sent).await {
                            return;
                        }
                    }
                    Err(latest) => {
                        last_sent = latest;
                        if tx.send(Ok(reset(latest))).await.is_err() {
                            return;
                        }
                    }
                },
                Err(RecvError::Closed) => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(out))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("ping"))
        .into_response()
}
