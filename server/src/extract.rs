//! Extractors whose rejections are our own problem+json errors: JSON bodies, path and
//! query parameters, each naming the bad field where it can; and the client's address.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, Path, Request, connect_info::Connected,
        rejection::PathRejection,
    },
    http::{header, request::Parts},
    serve::IncomingStream,
};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, state::AppState};

/// The peer address of a connection, as `serve` records it for each request.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The client's IP address: the peer of the connection. Phones reach the service directly
/// (it terminates TLS itself) and no setting names a trusted proxy, so a forwarded-for
/// header, which any client can write, is never read.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|ConnectInfo(PeerAddr(peer))| ClientIp(peer.ip()))
            .ok_or_else(|| ApiError::internal("served without the peer address of connections"))
    }
}

/// A JSON request body, deserialised with the path of the first bad field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The body of a request that must be JSON: 415 without a JSON content type, else the
/// bytes as [`read_body`] reads them.
pub async fn json_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON, sent with Content-Type: application/json",
        ));
    }
    read_body(req, state).await
}

/// Reads the whole body, gunzipping it when sent with `Content-Encoding: gzip`, and
/// answers 413 when it (compressed or not) is over the configured limit.
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.settings.max_body_bytes;
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::malformed(format!("could not read the request body: {rejection}"))
        }
    })?;
    match encoding.as_deref() {
        None | Some("identity") => Ok(bytes),
        Some("gzip") | Some("x-gzip") => gunzip(&bytes, limit),
        Some(other) => Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding {other:?} is not supported; send gzip or nothing"),
        )),
    }
}

/// Decompresses a gzip body, refusing more than `limit` bytes of output (a small bomb
/// must not fill the memory).
fn gunzip(bytes: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::malformed(format!("the gzip body could not be decompressed: {e}"))
        })?;
    if out.len() > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    Ok(Bytes::from(out))
}

/// Parses JSON, answering 400 for bytes that are not JSON and 422 naming the field for
/// JSON of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = parse_json_value(bytes)?;
    let value = serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.into_inner().to_string());
        ApiError::field(field_of(&path, &message), message)
    })?;
    Ok(value)
}

/// Parses JSON of any shape, answering 400 for bytes that are not JSON and 422 naming the
/// first string that holds a NUL character (which no database stores as text). What
/// [`parse_json`] does before it reads the value as a type.
pub fn parse_json_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed(
            "the request body is empty; a JSON object was expected",
        ));
    }
    // Well-formedness first, so that bad JSON is always a 400 whatever its shape.
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::malformed(format!("the request body is not valid JSON: {e}")))?;
    if let Some(field) = nul_field(&value) {
        return Err(ApiError::field(
            field,
            "text must not contain NUL characters",
        ));
    }
    Ok(value)
}

/// A step of a path into a JSON value.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path of the first string (value or key) holding a NUL character, or `None`. The
/// path is built only when there is one: the search runs over every request body.
fn nul_field(value: &serde_json::Value) -> Option<String> {
    let mut steps = nul_steps(value)?;
    steps.reverse();
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Key(k) if path.is_empty() => path.push_str(k),
            Step::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    Some(if path.is_empty() {
        "body".to_owned()
    } else {
        path
    })
}

/// The steps, innermost first, to the first string value holding a NUL character, or to
/// the object one of whose keys holds one.
fn nul_steps(value: &serde_json::Value) -> Option<Vec<Step<'_>>> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(Vec::new()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let mut steps = nul_steps(v)?;
            steps.push(Step::Index(i));
            Some(steps)
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(Vec::new());
            }
            let mut steps = nul_steps(v)?;
            steps.push(Step::Key(k));
            Some(steps)
        }),
        _ => None,
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The field an error is about: the deserialiser's path, or for unknown and missing
/// fields the name in backticks, joined to the path of the object that holds it.
pub(crate) fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) if !path.ends_with(name) => format!("{path}.{name}"),
        (path, _) => path.to_owned(),
    }
}

/// Path parameters; a value of the wrong form (an id that is not a UUID) is a 422.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                use axum::extract::path::ErrorKind;
                let (field, message) = match e.kind() {
                    ErrorKind::ParseErrorAtKey { key, value, .. } => {
                        (key.clone(), format!("{value:?} is not a valid value"))
                    }
                    ErrorKind::ParseError { value, .. } => {
                        ("id".to_owned(), format!("{value:?} is not a valid id"))
                    }
                    ErrorKind::DeserializeError { key, value, .. } => {
                        (key.clone(), format!("{value:?} is not a valid value"))
                    }
                    other => ("path".to_owned(), other.to_string()),
                };
                Err(ApiError::field(field, message))
            }
            Err(other) => Err(ApiError::malformed(other.body_text())),
        }
    }
}

/// Query parameters, deserialised with the name of the first bad one.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut query = std::borrow::Cow::Borrowed(parts.uri.query().unwrap_or(""));
        loop {
            let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
            let err = match serde_path_to_error::deserialize::<_, T>(de) {
                Ok(value) => return Ok(ApiQuery(value)),
                Err(err) => err,
            };
            let path = err.path().to_string();
            let message = err.into_inner().to_string();
            let field = field_of(&path, &message);
            // `?from=...T08:00:00+08:00` sent unencoded: the offset's `+` arrives as a
            // space. A value that fails as it is but reads as a time with that `+` back can
            // have meant nothing else. Each retry encodes one more `+`, so this ends.
            if let Some(restored) = time_plus_restored(&query, &field) {
                query = std::borrow::Cow::Owned(restored);
                continue;
            }
            let message = if raw_values(&query, &field).any(|v| v.contains('+')) {
                format!(
                    "{message}; a `+` in a query string stands for a space: write the `+` of a \
                     time zone offset as `%2B` (`T08:00:00%2B08:00`)"
                )
            } else {
                message
            };
            return Err(ApiError::field(field, message));
        }
    }
}

/// The still-encoded values of a query parameter.
fn raw_values<'a>(query: &'a str, field: &'a str) -> impl Iterator<Item = &'a str> {
    query.split('&').filter_map(move |segment| {
        let (_, value) = segment.split_once('=')?;
        let (decoded, _) = form_urlencoded::parse(segment.as_bytes()).next()?;
        (decoded == field).then_some(value)
    })
}

/// The query with the last `+` of `field`'s values encoded as `%2B` where that turns a
/// value into an RFC 3339 time; `None` when no value changes.
fn time_plus_restored(query: &str, field: &str) -> Option<String> {
    let mut changed = false;
    let segments: Vec<String> = query
        .split('&')
        .map(|segment| {
            let restored = segment.split_once('=').and_then(|(key, value)| {
                let (decoded, _) = form_urlencoded::parse(segment.as_bytes()).next()?;
                let plus = value.rfind('+')?;
                if decoded != field {
                    return None;
                }
                let value = format!("{}%2B{}", &value[..plus], &value[plus + 1..]);
                let pair = format!("t={value}");
                let (_, time) = form_urlencoded::parse(pair.as_bytes()).next()?;
                time.parse::<chrono::DateTime<chrono::FixedOffset>>()
                    .ok()
                    .map(|_| format!("{key}={value}"))
            });
            changed |= restored.is_some();
            restored.unwrap_or_else(|| segment.to_owned())
        })
        .collect();
    changed.then(|| segments.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        size: u32,
        inner: Option<Inner>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        x: u8,
    }

    fn field(body: &str) -> String {
        let err = parse_json::<Body>(body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), "validation_failed", "{err:?}");
        format!("{err:?}")
    }

    #[test]
    fn names_the_bad_field() {
        assert!(field(r#"{"name":"a","size":1,"colour":2}"#).contains("field: \"colour\""));
        assert!(field(r#"{"name":"a"}"#).contains("field: \"size\""));
        assert!(field(r#"{"name":"a","size":-1}"#).contains("field: \"size\""));
        assert!(field(r#"{"name":"a","size":1,"inner":{"x":300}}"#).contains("field: \"inner.x\""));
        assert!(field(r#"{"name":"a","size":1,"inner":{"y":1}}"#).contains("field: \"inner.y\""));
    }

    #[test]
    fn nul_characters_are_refused_with_their_path() {
        let err = parse_json::<serde_json::Value>(br#"{"a":[1,{"b":"x\u0000"}]}"#).unwrap_err();
        assert!(format!("{err:?}").contains("field: \"a[1].b\""), "{err:?}");
        let cases = [
            (r#""\u0000""#, Some("body")),
            (r#"{"a\u0000":1}"#, Some("body")),
            (r#"{"a":{"b\u0000":1}}"#, Some("a")),
            (r#"[0,["x","y\u0000"]]"#, Some("[1][1]")),
            (
                r#"{"a":{"b":[{"c":"\u0000"}]},"d":"\u0000"}"#,
                Some("a.b[0].c"),
            ),
            (r#"{"a":"no","b":[1,2,{"c":null}]}"#, None),
        ];
        for (json, want) in cases {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(nul_field(&value).as_deref(), want, "{json}");
        }
    }

    #[test]
    fn an_unencoded_offset_plus_is_restored_only_where_it_makes_a_time() {
        let q = "from=2026-12-07T08:00:00+08:00&to=2026-12-08T08:00:00+08:00&note=a+b";
        assert_eq!(
            time_plus_restored(q, "from").as_deref(),
            Some("from=2026-12-07T08:00:00%2B08:00&to=2026-12-08T08:00:00+08:00&note=a+b")
        );
        assert_eq!(time_plus_restored(q, "note"), None);
        assert_eq!(time_plus_restored("from=tomorrow+8", "from"), None);
        assert_eq!(
            time_plus_restored("from=2026-12-07+08:00:00+0800", "from").as_deref(),
            Some("from=2026-12-07+08:00:00%2B0800")
        );
        assert_eq!(
            time_plus_restored("from=2026-12-07T08:00:00%2B08:00", "from"),
            None
        );
    }

    #[test]
    fn bad_json_is_malformed() {
        for body in ["", "{", "{\"name\":\"a\",\"size\":1} trailing", "nul"] {
            let err = parse_json::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "malformed_request", "{body}");
        }
    }
}
