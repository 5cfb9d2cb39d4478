//! Test harness: a real `patrol` server on `127.0.0.1:0` with its own fresh database
//! (a temporary SQLite file, or a new PostgreSQL database when
//! `PATROL_TEST_DATABASE_URL` is set), and a small HTTP client.

pub mod browser;

use std::time::Duration;

use patrol_server::{AppState, Settings, settings::Secret};
use reqwest::{Method, StatusCode, header::HeaderMap};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use uuid::Uuid;

/// The signing secret of every test server, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-signing-secret-0123456789abcdef";
/// Password of every member the fixtures create.
pub const PASSWORD: &str = "correct horse battery";

/// A database made for one test, dropped (PostgreSQL) or deleted (SQLite) with it.
pub enum TestDb {
    /// A temporary directory holding the SQLite file.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    /// Another server's database, which that server owns.
    Shared,
    /// A database on the server of `PATROL_TEST_DATABASE_URL`.
    Postgres {
        /// URL of the administrative database.
        admin_url: String,
        /// Name of the test database.
        name: String,
    },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Dropped from a plain thread: the test's runtime may be shutting down.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let admin = Database::connect(&admin_url).await.ok()?;
                    admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await
                        .ok()?;
                    admin.close().await.ok()
                })
            })
            .join();
        }
    }
}

/// Whether the suite runs against PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("PATROL_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

/// A command running the `patrol` binary at `bin` in `dir` on the database at `url`, with
/// no environment but `PATH`, so that no setting of the test's own leaks in.
pub fn patrol_command(bin: &str, dir: &std::path::Path, url: &str) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PATROL_DATABASE_URL", url)
        .stdin(std::process::Stdio::null());
    c
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base.rfind('/').expect("a database URL has a path");
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Makes a fresh database and returns its URL.
pub async fn fresh_database() -> (String, TestDb) {
    match std::env::var("PATROL_TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let name = format!("patrol_t_{}", Uuid::new_v4().simple());
            let admin = Database::connect(&admin_url)
                .await
                .expect("connect to PATROL_TEST_DATABASE_URL");
            // Concurrent CREATE DATABASE from one template can collide; retry briefly.
            let mut attempt = 0;
            loop {
                match admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                {
                    Ok(_) => break,
                    Err(e) if attempt < 50 => {
                        attempt += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("creating test database: {e}"),
                }
            }
            admin.close().await.ok();
            (
                with_database(&admin_url, &name),
                TestDb::Postgres { admin_url, name },
            )
        }
        _ => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/patrol.db?mode=rwc", dir.path().display());
            (url, TestDb::Sqlite(dir))
        }
    }
}

/// A running server on its own database.
pub struct TestServer {
    /// `http://127.0.0.1:PORT` (`https://` when the settings name a certificate).
    pub base: String,
    /// The server's state (database pool and settings).
    pub state: AppState,
    client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _db: TestDb,
}

/// An answer: status, headers and the body as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body as JSON.
    pub body: Value,
    /// Body as text.
    pub text: String,
}

impl Answer {
    /// The `content-type` header.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem+json answer with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {self:#?}");
        assert_eq!(self.content_type(), "application/problem+json", "{self:#?}");
        assert_eq!(self.body["status"], status, "{self:#?}");
        assert_eq!(self.body["code"], code, "{self:#?}");
        assert!(self.body["title"].is_string(), "{self:#?}");
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:#?}"
        );
    }
}

impl TestServer {
    /// Starts a server with default settings on a fresh database.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server after letting the caller adjust the settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let (url, db) = fresh_database().await;
        TestServer::start_on(url, db, adjust).await
    }

    /// Starts a second server process on this server's database (as several processes
    /// share one PostgreSQL); the first server owns the database.
    pub async fn start_another(&self, adjust: impl FnOnce(&mut Settings)) -> TestServer {
        TestServer::start_on(
            self.state.settings.database_url.0.clone(),
            TestDb::Shared,
            adjust,
        )
        .await
    }

    async fn start_on(url: String, db: TestDb, adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let mut settings = Settings {
            database_url: Secret(url),
            jwt_secret: Some(Secret(JWT_SECRET.to_owned())),
            db_max_connections: 4,
            shutdown_timeout: Duration::from_secs(5),
            ..Settings::default()
        };
        adjust(&mut settings);
        let state = patrol_server::start(settings).await.expect("server starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        // With a certificate in the settings the server speaks HTTPS only, and the client
        // trusts each certificate of its chain file.
        let scheme = if state.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let client = client_for(&state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            patrol_server::serve(listener, serve_state, async {
                rx.await.ok();
            })
            .await
            .expect("server runs");
        });
        TestServer {
            base,
            state,
            client: client.build().expect("client"),
            shutdown: Some(tx),
            task: Some(task),
            _db: db,
        }
    }

    /// A client whose requests come from another loopback address (`127.0.0.2`, …): the
    /// login throttle tells clients apart by address.
    pub fn client_from(&self, from: std::net::IpAddr) -> reqwest::Client {
        client_for(&self.state)
            .local_address(from)
            .build()
            .expect("client")
    }

    /// Logs in from another loopback address; see [`TestServer::client_from`].
    pub async fn login_from(
        &self,
        from: std::net::IpAddr,
        username: &str,
        password: &str,
    ) -> Answer {
        let req = self
            .client_from(from)
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"username": username, "password": password}));
        Answer::from(req.send().await.expect("request sent")).await
    }

    /// Stops the server and waits until it has closed its pool.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::from(req.send().await.expect("request sent")).await
    }

    /// Sends a raw request built by the caller.
    pub async fn raw(
        &self,
        build: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        let req = build(&self.client, &self.base);
        Answer::from(req.send().await.expect("request sent")).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    /// PATCH JSON with a token.
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// DELETE with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// Logs in and returns the whole token answer.
    pub async fn login(&self, username: &str, password: &str) -> Answer {
        self.send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    /// Logs in with [`PASSWORD`] and returns the access token.
    pub async fn token(&self, username: &str) -> String {
        let a = self.login(username, PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "login of {username}: {a:#?}");
        a.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Creates the first admin the way `patrol user add` does, and returns a token.
    pub async fn admin(&self) -> String {
        patrol_server::cli::add_user(
            &self.state,
            "admin",
            "admin",
            None,
            Some("Administrator"),
            PASSWORD.to_owned(),
        )
        .await
        .expect("admin created");
        self.token("admin").await
    }
}

/// A client for a server with these settings: it trusts each certificate of the chain
/// file when the server speaks HTTPS.
fn client_for(state: &AppState) -> reqwest::ClientBuilder {
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(files) = &state.settings.tls {
        let pem = std::fs::read(&files.cert).expect("certificate file");
        for cert in reqwest::Certificate::from_pem_bundle(&pem).expect("PEM certificates") {
            client = client.add_root_certificate(cert);
        }
    }
    client
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id`.
    pub id: Option<String>,
    /// Its `event` type.
    pub event: String,
    /// Its `data` as JSON.
    pub data: Value,
}

/// An open `GET /api/v1/events` stream.
pub struct EventStream {
    res: reqwest::Response,
    buf: String,
    /// Comment lines seen so far (heartbeats).
    pub comments: Vec<String>,
}

impl EventStream {
    /// The next event, or `None` when none comes within `wait` (or the stream ended).
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut event = String::from("message");
                let mut data = String::new();
                let mut any = false;
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if let Some(c) = line.strip_prefix(':') {
                        self.comments.push(c.to_owned());
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => id = Some(value.to_owned()),
                        "event" => event = value.to_owned(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if any {
                    return Some(SseEvent {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Whether the server ends the stream within `wait` (events and comments until then
    /// are passed over).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The first event (skipping others) that satisfies `want`, within `wait`.
    pub async fn until(
        &mut self,
        wait: Duration,
        want: impl Fn(&SseEvent) -> bool,
    ) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await?;
            if want(&e) {
                return Some(e);
            }
        }
    }
}

impl TestServer {
    /// Opens the event stream; a refusal comes back as the answer.
    pub async fn events(
        &self,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, Answer> {
        EventStream::open(&self.base, token, last_event_id).await
    }
}

impl EventStream {
    /// Opens the event stream of the server at `base` (which may be another process); a
    /// refusal comes back as the answer.
    pub async fn open(
        base: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, Answer> {
        let client = reqwest::Client::new();
        let mut req = client.get(format!("{base}/api/v1/events"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(l) = last_event_id {
            req = req.header("last-event-id", l);
        }
        let res = req.send().await.expect("request sent");
        if res.status() != StatusCode::OK {
            return Err(Answer::from(res).await);
        }
        Ok(EventStream {
            res,
            buf: String::new(),
            comments: Vec::new(),
        })
    }
}

impl Answer {
    /// Reads a response whole.
    pub async fn from(res: reqwest::Response) -> Answer {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A small district: a district with two streets, a community under the first street,
/// and a commander, a patrol officer, a kiosk officer and a volunteer in street one, plus
/// a commander and an officer in street two.
pub struct Org {
    /// Admin token.
    pub admin: String,
    /// District id.
    pub district: Uuid,
    /// First street id.
    pub street1: Uuid,
    /// Second street id.
    pub street2: Uuid,
    /// Community under the first street.
    pub community1: Uuid,
    /// Member ids by username.
    pub members: std::collections::HashMap<String, Uuid>,
}

impl Org {
    /// Builds the district through the API.
    pub async fn create(s: &TestServer) -> Org {
        let admin = s.admin().await;
        let unit = |code: &str, kind: &str, parent: Option<Uuid>| json!({"code": code, "name": format!("Unit {code}"), "kind": kind, "parent_id": parent});
        let district = id(&s
            .post("/api/v1/units", &admin, unit("D1", "district", None))
            .await);
        let street1 = id(&s
            .post(
                "/api/v1/units",
                &admin,
                unit("S1", "street", Some(district)),
            )
            .await);
        let street2 = id(&s
            .post(
                "/api/v1/units",
                &admin,
                unit("S2", "street", Some(district)),
            )
            .await);
        let community1 = id(&s
            .post(
                "/api/v1/units",
                &admin,
                unit("C1", "community", Some(street1)),
            )
            .await);
        let mut members = std::collections::HashMap::new();
        for (username, role, unit) in [
            ("cmd1", "commander", street1),
            ("officer1", "patrol_officer", community1),
            ("kiosk1", "kiosk_officer", street1),
            ("vol1", "volunteer", community1),
            ("cmd2", "commander", street2),
            ("officer2", "patrol_officer", street2),
        ] {
            let a = s
                .post(
                    "/api/v1/members",
                    &admin,
                    json!({"username": username, "role": role, "unit_id": unit, "password": PASSWORD}),
                )
                .await;
            members.insert(username.to_owned(), id(&a));
        }
        Org {
            admin,
            district,
            street1,
            street2,
            community1,
            members,
        }
    }
}

/// The `id` of a 201/200 answer, asserting success.
pub fn id(a: &Answer) -> Uuid {
    assert!(a.status.is_success(), "expected success: {a:#?}");
    a.body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id in answer")
}
