//! The patrol service: GPS check-ins from patrol officers, volunteers and kiosk duty
//! officers, checked against duty rosters.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod checkpoint;
pub mod cli;
pub mod console;
pub mod coverage;
pub mod db;
pub mod demo;

pub mod domain;
pub mod error;
pub mod events;
pub mod extract;
pub mod ingest;
pub mod jobs;
pub mod metrics;
// Borrows socket descriptors that sqlx owns, to set one option on them.
#[allow(unsafe_code)]
pub mod nodelay;
pub mod packs;
pub mod pagination;
pub mod phone;
pub mod retention;
pub mod routes;
pub mod settings;
pub mod sqlite_reads;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;
pub mod webhook;

use std::{
    any::Any,
    future::{Future, IntoFuture},
    sync::Arc,
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{Method, StatusCode},
    middleware,
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ApiResult};
use extract::PeerAddr;
pub use settings::Settings;
pub use state::AppState;

/// Opens and migrates the database and builds the shared state.
pub async fn start(settings: Settings) -> anyhow::Result<AppState> {
    let db = db::connect(&settings).await?;
    db::migrate(&db).await?;
    AppState::new(db, settings).await
}

/// The whole HTTP application. Serve it with the [`extract::PeerAddr`] of connections
/// (`into_make_service_with_connect_info`): the login throttle keys on the client's address.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes::router();
    router
        .merge(console::router(&state.settings))
        .merge(phone::router(&state.settings))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::openapi()
}

/// Serves until `shutdown` resolves, then stops accepting, gives in-flight requests up to
/// the configured grace period, and closes the database pool. HTTPS when the settings name
/// a certificate and key (read here; an unusable one is an error before anything runs).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match &state.settings.tls {
        Some(files) => Some(tls::server_config(files)?),
        None => None,
    };
    serve_with(listener, state, tls, shutdown).await
}

/// [`serve`] with the TLS configuration already loaded (`None`: plain HTTP).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Before the background tasks start, so that a failure leaves none running.
    let listener = match tls {
        Some(config) => Bound::Tls(tls::TlsListener::new(listener, config)?),
        None => Bound::Plain(listener),
    };
    let grace = state.settings.shutdown_timeout;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let hub = state.events.hub.clone();
    let signal = async move {
        shutdown.await;
        hub.close();
        let _ = stopping_tx.send(());
    };
    let purger = retention::spawn_purger(state.clone());
    let updater = coverage::spawn_updater(state.clone());
    let packer = db::writer_options(&state.settings, packs::CACHE_KIB).map(packs::spawn_packer);
    let evaluator = alerts::spawn_evaluator(state.clone());
    let watcher = alerts::spawn_post_watcher(state.clone());
    // Both kinds of listener make the same future type.
    let server = match listener {
        Bound::Plain(plain) => axum::serve(
            plain,
            app(state.clone()).into_make_service_with_connect_info::<PeerAddr>(),
        )
        .with_graceful_shutdown(signal)
        .into_future(),
        Bound::Tls(tls) => axum::serve(
            tls,
            app(state.clone()).into_make_service_with_connect_info::<PeerAddr>(),
        )
        .with_graceful_shutdown(signal)
        .into_future(),
    };
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tracing::info!("shutting down: finishing in-flight requests");
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway"),
    }
    purger.abort();
    updater.abort();
    if let Some(p) = packer {
        p.abort();
    }
    evaluator.abort();
    watcher.abort();
    state.job_locks.close().await;
    state.db.close_by_ref().await.ok();
    Ok(())
}

/// The listener [`serve_with`] accepts on.
enum Bound {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(format!("handler panicked: {message}")).into_response()
}
