//! Shared state of the running service, cheap to clone.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    auth::{AuthCache, jwt::JwtKeys, password::Passwords, throttle::LoginThrottle},
    db,
    ingest::Writer,
    metrics::Metrics,
    settings::Settings,
};

/// Everything a handler needs, behind one reference count: axum clones the state for each
/// request, once for every layer and extractor that takes it, and one count is cheaper to
/// move than one for each of its parts (the fifteen of them were 2–3 % of the request path
/// during single-fix POSTs).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The database pool.
    pub db: DatabaseConnection,
    /// Resolved settings.
    pub settings: Arc<Settings>,
    /// Token signing keys.
    pub keys: Arc<JwtKeys>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The bounded hashing of passwords and PINs.
    pub passwords: Arc<Passwords>,
    /// The throttle of logins, PIN sign-ons and PIN changes.
    pub logins: Arc<LoginThrottle>,
    /// Recently verified callers.
    pub auth_cache: Arc<AuthCache>,
    /// The group-commit writer of fixes.
    pub writer: Writer,
    /// Members' mobility and rostered spans, for the check-in rules.
    pub member_contexts: Arc<crate::routes::checkins::MemberContexts>,
    /// Live reads of positions already audited this hour.
    pub live_reads: Arc<crate::audit::LiveReads>,
    /// Each member's budget of late fixes.
    pub late_budgets: Arc<crate::routes::checkins::LateBudgets>,
    /// Posts prepared for the coverage rule.
    pub prepared_posts: Arc<crate::coverage::PreparedPosts>,
    /// Stored coverage that late fixes changed, still to be marked stale.
    pub deferred_stale: Arc<crate::coverage::DeferredStale>,
    /// Wakes the coverage updater when late fixes arrive.
    pub coverage_wakeup: Arc<tokio::sync::Notify>,
    /// Live events: publishing, history and subscribers.
    pub events: crate::events::Events,
    /// The alert evaluator's wake-ups and the webhook.
    pub alerts: Arc<crate::alerts::Alerts>,
    /// Reads of many rows on connections of their own, for a SQLite file.
    pub sqlite_reads: Option<Arc<crate::sqlite_reads::SqliteReads>>,
    /// The locks that keep each background job to one process at a time.
    pub job_locks: crate::jobs::JobLocks,
}

impl AppState {
    /// The post prepared for the coverage rule (cached until the post changes).
    pub fn prepared_posts_get(
        &self,
        p: &crate::store::post::Model,
    ) -> Option<std::sync::Arc<crate::domain::coverage::PreparedPost>> {
        self.prepared_posts.get(p)
    }

    /// Call after changing shifts, teams or members: cached views of them are dropped.
    pub fn rosters_changed(&self) {
        self.member_contexts.clear();
    }
}

impl AppState {
    /// Builds the state on a migrated database. Without an operator-given secret the
    /// stored generated one is used (and created on first start).
    pub async fn new(db: DatabaseConnection, settings: Settings) -> anyhow::Result<AppState> {
        let current = match &settings.jwt_secret {
            Some(secret) => secret.0.clone(),
            None => {
                tracing::warn!(
                    "PATROL_JWT_SECRET is not set: using a secret generated and stored in the database; \
                     production should set one"
                );
                db::stored_jwt_secret(&db).await?
            }
        };
        let keys = JwtKeys::new(
            &current,
            settings.jwt_previous_secret.as_ref().map(|s| s.0.as_str()),
            settings.access_token_ttl,
        )?;
        let events = crate::events::Events::start(
            db.clone(),
            &settings.database_url.0,
            settings.event_history,
        )
        .await?;
        let webhook = match &settings.webhook_url {
            Some(url) => Some(crate::webhook::Webhook::start(
                url.clone(),
                settings.webhook_secret.as_ref().map(|s| s.0.clone()),
            )?),
            None => None,
        };
        let writer = Writer::start(db::writer_target(&settings, &db), settings.thresholds())?;
        // The writer leaves checkpoints of a SQLite file to this task.
        if let Some(conn) = db::connect_checkpointer(&settings).await? {
            crate::checkpoint::spawn(conn, crate::checkpoint::Bounds::default());
        }
        let sqlite_reads = db::sqlite_file(&settings)
            .map(|path| crate::sqlite_reads::SqliteReads::new(path, settings.db_lock_timeout));
        let metrics = Arc::new(Metrics::new());
        let job_locks = crate::jobs::JobLocks::open(&settings).await?;
        Ok(AppState(Arc::new(Shared {
            passwords: Arc::new(Passwords::for_this_machine(metrics.password_hashes.clone())),
            logins: Arc::new(LoginThrottle::new(metrics.logins_throttled.clone())),
            sqlite_reads,
            job_locks,
            events,
            alerts: Arc::new(crate::alerts::Alerts::new(webhook)),
            writer,
            auth_cache: Arc::new(AuthCache::default()),
            member_contexts: Arc::default(),
            prepared_posts: Arc::default(),
            late_budgets: Arc::default(),
            live_reads: Arc::default(),
            deferred_stale: Arc::default(),
            coverage_wakeup: Arc::default(),
            db,
            settings: Arc::new(settings),
            keys: Arc::new(keys),
            metrics,
        })))
    }
}
