//! One error type for the whole API, answered as RFC 9457 `application/problem+json`
//! with a stable machine `code`. Server faults are logged and never leaked.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sea_orm::{DbErr, SqlErr};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One bad field of a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FieldError {
    /// Where the field is: a JSON path such as `member_ids[2]`, or a query or path parameter name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the `code` names the problem.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `rate_limited`, `busy`.
    pub code: &'static str,
    /// For `validation_failed`: each bad field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_s: Option<u64>,
    /// The challenge of a 401: the scheme the endpoint takes.
    www_authenticate: Option<&'static str>,
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a status, a code and a detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_s: None,
            www_authenticate: None,
        }
    }

    /// 422: the listed fields are invalid.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!(
                "{} fields are invalid: {}",
                many.len(),
                many.iter()
                    .map(|e| e.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        ApiError {
            errors,
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    /// 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 400: the body is not well-formed.
    pub fn malformed(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", detail)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError {
            www_authenticate: Some("Bearer realm=\"patrol\""),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        }
    }

    /// 401 from a kiosk device's endpoint: no valid kiosk token.
    pub fn unauthorized_kiosk(detail: impl Into<String>) -> Self {
        ApiError {
            www_authenticate: Some("Kiosk realm=\"patrol\""),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        }
    }

    /// 403: authenticated, but the role may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: no such resource (or none the caller may see).
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 409: the request conflicts with the stored state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(detail: impl Into<String>, retry_after_s: u64) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
        }
    }

    /// 503 `busy` with `Retry-After`: the server has as much of some costly work running and
    /// waiting as it takes (checking passwords); this request is turned away, not queued.
    pub fn busy(detail: impl Into<String>, retry_after_s: u64) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s.max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", detail)
        }
    }

    /// 503 with `Retry-After`: the database could not take the request for a moment (a
    /// lock held past the wait allowed). Logged as a warning: it passes, and is no fault.
    pub fn database_busy(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "database busy");
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_busy",
                "the database is busy; try again shortly",
            )
        }
    }

    /// 500: a fault of the server. The cause is logged here and never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to answer this request; the fault has been logged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                ApiError::conflict("a record with the same unique value already exists")
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => ApiError::conflict(
                "the record is still referenced by other records, or refers to one that does not exist",
            ),
            _ if is_sqlite_restrict(&err) => ApiError::conflict(
                "the record is still referenced by other records; move or delete them first",
            ),
            _ if is_busy(&err) => ApiError::database_busy(err),
            _ => ApiError::internal(err),
        }
    }
}

/// Whether the database gave up waiting for a lock: SQLite's `SQLITE_BUSY` or
/// `SQLITE_LOCKED` (another connection held the write lock past the busy timeout), or
/// PostgreSQL's serialization failure, deadlock or lock not available (a lock held past
/// `lock_timeout`); or no pooled connection came free in time.
fn is_busy(err: &DbErr) -> bool {
    if matches!(
        err,
        DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)
    ) {
        return true;
    }
    let Some(db) = database_error(err) else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    if db
        .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // The extended result code; its low byte is the primary one.
        code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
    } else {
        matches!(code.as_ref(), "40001" | "40P01" | "55P03")
    }
}

/// The error the database itself answered, if that is what failed.
fn database_error(err: &DbErr) -> Option<&dyn sea_orm::sqlx::error::DatabaseError> {
    use sea_orm::RuntimeErr;
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    match e.as_ref() {
        sea_orm::sqlx::Error::Database(db) => Some(db.as_ref()),
        _ => None,
    }
}

/// Whether SQLite refused to delete a row that an `ON DELETE RESTRICT` foreign key still
/// points at. SQLite answers that with `SQLITE_CONSTRAINT_TRIGGER` (1811), not the
/// `SQLITE_CONSTRAINT_FOREIGNKEY` (787) that [`DbErr::sql_err`] recognises.
fn is_sqlite_restrict(err: &DbErr) -> bool {
    database_error(err).is_some_and(|db| {
        db.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
            .is_some()
            && db.code().as_deref() == Some("1811")
            && db.message().contains("FOREIGN KEY")
    })
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::internal(format!("{err:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            problem_type: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            errors: self.errors,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Collects field errors during validation, so that a client learns every bad field at once.
#[derive(Default, Debug)]
pub struct Violations(Vec<FieldError>);

impl Violations {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a bad field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a bad field when `bad` holds.
    pub fn check(&mut self, bad: bool, field: &str, message: impl Into<String>) {
        if bad {
            self.add(field, message);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded errors.
    pub fn into_field_errors(self) -> Vec<FieldError> {
        self.0
    }

    /// `Ok` when nothing was recorded, else a 422 naming every field.
    pub fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_with_no_connection_free_in_time_is_busy_and_a_closed_one_a_fault() {
        let busy = ApiError::from(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ));
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.code(), "database_busy");
        let closed = ApiError::from(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::ConnectionClosed,
        ));
        assert_eq!(closed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
