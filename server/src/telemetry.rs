//! Log output: human-readable lines, or JSON lines when `PATROL_LOG_FORMAT=json`.
//! Tokens, passwords and coordinates are never logged (spans carry the route template,
//! not the URI).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::LogFormat;

/// Installs the global subscriber; `RUST_LOG` refines the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (as in tests) keeps the first subscriber.
    let _ = result;
}
