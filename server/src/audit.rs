//! Audit records of reading other members' positions: who read whose, which time span,
//! when (product rule). A read through a request is recorded as it happens; positions
//! seen live (the event stream, the live board, the alerts) are recorded once per viewer,
//! subject, hour and way of seeing, the span being that hour, since a stream or a board refreshed every
//! few seconds would otherwise write a record per event.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Mutex,
};

use chrono::{DateTime, Utc};
use sea_orm::{EntityTrait, Set};
use uuid::Uuid;

use crate::{error::ApiResult, state::AppState, store::audit_record};

/// Appends one audit record per member whose positions someone else read.
pub async fn record(
    state: &AppState,
    viewer: Uuid,
    subjects: impl IntoIterator<Item = Uuid>,
    action: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> ApiResult<()> {
    let now = Utc::now();
    let rows: Vec<audit_record::ActiveModel> = subjects
        .into_iter()
        .filter(|s| *s != viewer)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|subject| audit_record::ActiveModel {
            id: Set(Uuid::now_v7()),
            viewer_id: Set(viewer),
            subject_id: Set(subject),
            action: Set(action.to_owned()),
            span_from: Set(from),
            span_to: Set(to),
            at: Set(now),
        })
        .collect();
    for chunk in rows.chunks(500) {
        audit_record::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&state.db)
            .await?;
    }
    Ok(())
}

/// The (viewer, subject, hour, action) of live reads this process has recorded lately.
#[derive(Default)]
pub struct LiveReads(Mutex<HashSet<(Uuid, Uuid, i64, &'static str)>>);

impl LiveReads {
    /// Of `subjects`, those not yet recorded for `viewer` in `hour`, now taken as recorded.
    fn take_new(
        &self,
        viewer: Uuid,
        subjects: &[Uuid],
        hour: i64,
        action: &'static str,
    ) -> Vec<Uuid> {
        let Ok(mut seen) = self.0.lock() else {
            return subjects.to_vec();
        };
        // Older hours can no longer be asked about.
        if seen.len() > 10_000 {
            seen.retain(|&(_, _, h, _)| h >= hour - 1);
        }
        subjects
            .iter()
            .copied()
            .filter(|s| *s != viewer && seen.insert((viewer, *s, hour, action)))
            .collect()
    }

    /// Forgets these, whose record could not be written, so that it is tried again.
    fn put_back(&self, viewer: Uuid, subjects: &[Uuid], hour: i64, action: &'static str) {
        if let Ok(mut seen) = self.0.lock() {
            for s in subjects {
                seen.remove(&(viewer, *s, hour, action));
            }
        }
    }
}

/// Records that `viewer` saw the live positions of `subjects` at `now` through `action`:
/// once per viewer, subject, hour and action (per process), with that hour as the span.
pub async fn record_live(
    state: &AppState,
    viewer: Uuid,
    subjects: impl IntoIterator<Item = Uuid>,
    action: &'static str,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let hour = now.timestamp().div_euclid(3600);
    let subjects: Vec<Uuid> = subjects.into_iter().collect();
    let fresh = state.live_reads.take_new(viewer, &subjects, hour, action);
    if fresh.is_empty() {
        return Ok(());
    }
    let from = DateTime::from_timestamp(hour * 3600, 0);
    let to = DateTime::from_timestamp((hour + 1) * 3600, 0);
    let written = record(state, viewer, fresh.iter().copied(), action, from, to).await;
    if written.is_err() {
        state.live_reads.put_back(viewer, &fresh, hour, action);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_read_is_taken_once_per_viewer_subject_hour_and_way() {
        let reads = LiveReads::default();
        let (v, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert_eq!(
            reads.take_new(v, &[a, b, v], 10, "x"),
            [a, b],
            "never oneself"
        );
        assert_eq!(reads.take_new(v, &[a, b], 10, "x"), Vec::<Uuid>::new());
        assert_eq!(
            reads.take_new(v, &[a], 10, "y"),
            [a],
            "another way of seeing"
        );
        assert_eq!(reads.take_new(v, &[a], 11, "x"), [a], "a new hour");
        assert_eq!(reads.take_new(a, &[b], 11, "x"), [b], "another viewer");
        reads.put_back(v, &[a], 11, "x");
        assert_eq!(
            reads.take_new(v, &[a], 11, "x"),
            [a],
            "tried again after a failure"
        );
    }
}
