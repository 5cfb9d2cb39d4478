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
        open(&self.path, self.busy_timeout)
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

/// A connection for reading the SQLite file at `path`.
pub fn open(
    path: &std::path::Path,
    busy_timeout: std::time::Duration,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    conn.set_prepared_statement_cache_capacity(12);
    Ok(conn)
}

/// A timestamp as sqlx stores it: `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]+00:00`, as
/// chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, false)` writes it. The writer formats two
/// a fix, so years 0 to 9999 are written here by hand; others (and leap seconds) by chrono.
pub fn time(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // The naive time once: each field of a `DateTime` adds its offset again.
    let t = t.naive_utc();
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, false);
    }
    let mut out = [0u8; 35];
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    let mut end = 19;
    let digits = if nanos == 0 {
        0
    } else if nanos % 1_000_000 == 0 {
        3
    } else if nanos % 1_000 == 0 {
        6
    } else {
        9
    };
    if digits > 0 {
        put(20, nanos / 10u32.pow(9 - digits as u32), digits);
        out[19] = b'.';
        end = 20 + digits;
    }
    for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[i] = c;
    }
    out[end..end + 6].copy_from_slice(b"+00:00");
    out[..end + 6].iter().map(|&b| char::from(b)).collect()
}

/// A stored timestamp.
pub fn parse_time(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    if let Some(t) = parse_utc(s.as_bytes()) {
        return Ok(t);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.F]+00:00` (or `…Z`), the form in which timestamps are stored, read
/// without chrono's general RFC 3339 parser: a coverage pass reads millions of them. Anything
/// else (another offset, a leap second) is `None`, for the general parser.
fn parse_utc(b: &[u8]) -> Option<DateTime<Utc>> {
    let digits = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let mut end = 19;
    let mut nanos = 0;
    if b[end] == b'.' {
        let start = end + 1;
        end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        let n = end - start;
        if !(1..=9).contains(&n) {
            return None;
        }
        nanos = digits(start, end)? * 10u32.pow((9 - n) as u32);
    }
    if !matches!(&b[end..], b"+00:00" | b"Z") {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(0, 4)?).ok()?,
        digits(5, 7)?,
        digits(8, 10)?,
    )?;
    let time = date.and_hms_nano_opt(digits(11, 13)?, digits(14, 16)?, digits(17, 19)?, nanos)?;
    Some(time.and_utc())
}

/// A stored UUID (a 16-byte BLOB).
pub fn uuid_of(bytes: &[u8]) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn general(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    proptest! {
        /// Every form a timestamp is written in reads back as chrono's parser reads it.
        #[test]
        fn stored_timestamps_read_as_the_general_parser_reads_them(
            secs in -2_000_000_000i64..7_000_000_000,
            nanos in 0u32..1_000_000_000,
            form in 0usize..5,
            zulu in any::<bool>(),
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let format = [
                SecondsFormat::AutoSi,
                SecondsFormat::Secs,
                SecondsFormat::Millis,
                SecondsFormat::Micros,
                SecondsFormat::Nanos,
            ][form];
            let s = t.to_rfc3339_opts(format, zulu);
            prop_assert_eq!(parse_utc(s.as_bytes()), general(&s));
            prop_assert_eq!(parse_time(&s).ok(), general(&s));
        }

        /// Timestamps are written as chrono writes them, in and outside years 0 to 9999.
        #[test]
        fn timestamps_are_written_as_chrono_writes_them(
            secs in -70_000_000_000i64..300_000_000_000,
            nanos in 0u32..1_000_000_000,
            round in 0usize..4,
        ) {
            let nanos = nanos / [1, 1_000, 1_000_000, 1_000_000_000][round]
                * [1, 1_000, 1_000_000, 1_000_000_000][round];
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(time(t), t.to_rfc3339_opts(SecondsFormat::AutoSi, false));
        }

        /// Whatever the text, the answer is the general parser's.
        #[test]
        fn any_text_reads_as_the_general_parser_reads_it(s in "[0-9T:.Z+-]{0,40}") {
            prop_assert_eq!(parse_time(&s).ok(), general(&s));
        }
    }

    #[test]
    fn other_offsets_leap_seconds_and_bad_dates_go_to_the_general_parser() {
        for s in [
            "2026-12-05T19:52:21.952+08:00",
            "2016-12-31T23:59:60Z",
            "2026-02-30T10:00:00+00:00",
            "2026-12-05T19:52:21.+00:00",
            "2026-12-05T19:52:21.1234567891+00:00",
            "2026-12-05 19:52:21+00:00",
            "2026-12-05T19:52:21+00:00 ",
        ] {
            assert_eq!(parse_utc(s.as_bytes()), None, "{s}");
            assert_eq!(parse_time(s).ok(), general(s), "{s}");
        }
        let t = parse_time("2026-12-05T19:52:21.952+00:00").unwrap();
        assert_eq!(t.timestamp_millis(), 1_796_500_341_952);
    }
}
