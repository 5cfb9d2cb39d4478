//! Reads of many rows from a SQLite file on connections of their own, on blocking threads.
//!
//! Through sqlx every row a query returns is handed from the driver's worker thread to the
//! async side one at a time; for a whole day's coverage (ten thousand shifts) those
//! hand-offs cost more than SQLite's own work. A read here runs on a blocking thread that
//! owns its connection and steps through the rows itself. The values are read as sqlx
//! writes them (see [`crate::ingest::sqlite`]).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use crate::error::ApiError;

/// Idle connections kept: enough for the windows a coverage pass reads at once and a
/// request or two beside it, so that a pass does not open connections again.
const MAX_IDLE: usize = crate::coverage::READ_AHEAD + 2;

/// Read-only connections to one SQLite file, opened as needed and kept for reuse.
pub struct SqliteReads {
    path: std::path::PathBuf,
    busy_timeout: std::time::Duration,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReads {
    /// Reads of the database file at `path`.
    pub fn new(path: std::path::PathBuf, busy_timeout: std::time::Duration) -> Arc<SqliteReads> {
        Arc::new(SqliteReads {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.execute_batch("PRAGMA query_only = ON;")?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }

    /// Runs `read` on a connection of this file on a blocking thread.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = this.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
            let conn = match taken {
                Some(c) => c,
                None => this.open()?,
            };
            let out = read(&conn);
            if let Ok(mut idle) = this.idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
}

/// A timestamp as sqlx stores it.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A stored timestamp.
pub fn parse_time(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

/// A stored UUID (a 16-byte BLOB).
pub fn uuid_of(bytes: &[u8]) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}
