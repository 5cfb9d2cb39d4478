//! Retention: fixes older than `retention_days`, audit records older than
//! `audit_retention_days` and failed logins too old for the throttle to count are deleted,
//! every `purge_every_s` (an hour) in the background and by `patrol purge`.

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
};

use crate::{
    auth::throttle::FAILURE_MEMORY,
    jobs::Job,
    settings::Settings,
    state::AppState,
    store::{audit_record, fix, login_failure},
};

/// What a purge deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Fixes deleted.
    pub fixes: u64,
    /// Audit records deleted.
    pub audit_records: u64,
    /// Failed logins deleted.
    pub login_failures: u64,
}

/// Deletes what is past its retention.
pub async fn purge(db: &DatabaseConnection, settings: &Settings) -> Result<Purged, sea_orm::DbErr> {
    let now = Utc::now();
    let cutoff = now - chrono::Duration::days(i64::from(settings.retention_days));
    if db.get_database_backend() == DbBackend::Sqlite {
        // The packed hours move past the cutoff first, so that no reader takes a deleted
        // fix from a pack (see `crate::packs`).
        for statement in crate::packs::forget_before_on(cutoff) {
            db.execute_unprepared(&statement).await?;
        }
    }
    let fixes = fix::Entity::delete_many()
        .filter(fix::Column::RecordedAt.lt(cutoff))
        .filter(
            fix::by_member_on(db.get_database_backend()).unwrap_or_else(sea_orm::Condition::all),
        )
        .exec(db)
        .await?
        .rows_affected;
    let audit_records = audit_record::Entity::delete_many()
        .filter(
            audit_record::Column::At
                .lt(now - chrono::Duration::days(i64::from(settings.audit_retention_days))),
        )
        .exec(db)
        .await?
        .rows_affected;
    // Here rather than on the login path, where the delete would take SQLite's write lock
    // for every failed login.
    let login_failures = login_failure::purge_before(db, now - FAILURE_MEMORY).await?;
    Ok(Purged {
        fixes,
        audit_records,
        login_failures,
    })
}

/// Purges now and then every `purge_every_s`, until the process ends; with several
/// processes on one PostgreSQL, one of them at a time.
pub fn spawn_purger(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.settings.purge_interval);
        loop {
            tick.tick().await;
            let pass = purge(&state.db, &state.settings);
            match state.job_locks.run(Job::RetentionPurge, pass).await {
                Ok(Some(p)) if p.fixes + p.audit_records + p.login_failures > 0 => {
                    tracing::info!(
                        fixes = p.fixes,
                        audit_records = p.audit_records,
                        login_failures = p.login_failures,
                        "purged past retention"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed; will try again"),
            }
        }
    })
}
