//! A lean HTTP/1.1 client: one keep-alive connection per [`Conn`], reopened only when the
//! server closes it. No pool, no redirects, no TLS: every request of a load task goes out
//! on its own connection, so "connections" in the report are real TCP connections.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::SendRequest,
    header::{self, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for one answer; a request still unanswered then counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no HTTP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection or the HTTP handshake failed.
    Connect,
    /// The connection broke while sending or waiting for the head of the answer.
    Send,
    /// The connection broke while reading the body.
    Body,
    /// No answer within [`REQUEST_TIMEOUT`].
    Timeout,
}

impl Failure {
    /// The key of this failure in the error counts.
    pub fn key(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Send => "send",
            Failure::Body => "body",
            Failure::Timeout => "timeout",
        }
    }
}

/// One keep-alive connection to the server.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `addr`, opened at the first request.
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(req)).await {
            Ok(result) => result,
            Err(_) => {
                self.sender = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn send_inner(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = None;
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|_| Failure::Connect)?;
            stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| Failure::Connect)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(Failure::Connect);
        };
        if sender.ready().await.is_err() {
            self.sender = None;
            return Err(Failure::Send);
        }
        let answer = match sender.send_request(req).await {
            Ok(answer) => answer,
            Err(_) => {
                self.sender = None;
                return Err(Failure::Send);
            }
        };
        let status = answer.status();
        match answer.into_body().collect().await {
            Ok(body) => Ok((status, body.to_bytes())),
            Err(_) => {
                self.sender = None;
                Err(Failure::Body)
            }
        }
    }
}

/// The `Host` header value for `addr`.
pub fn host_header(addr: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&addr.to_string()).expect("a socket address is a valid header value")
}

/// A request with an optional bearer token and an optional JSON body.
pub fn request(
    method: Method,
    host: &HeaderValue,
    path: &str,
    auth: Option<&HeaderValue>,
    json: Option<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host.clone());
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth.clone());
    }
    let body = match json {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            json
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(body))
        .expect("the request parts are valid")
}

/// Sends one JSON request on a new connection and parses the answer as JSON (setup only).
pub async fn json_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    auth: Option<&HeaderValue>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let mut conn = Conn::new(addr);
    let json = body.map(|b| Bytes::from(b.to_string()));
    let (status, bytes) = conn
        .send(request(method, &host_header(addr), path, auth, json))
        .await
        .map_err(|f| anyhow::anyhow!("{path}: no answer ({})", f.key()))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}
