//! Two `patrol serve` processes of the built binary on one new PostgreSQL database, as a
//! city runs them (README: Several processes on one PostgreSQL). Both start at once and
//! the database is migrated once; a check-in posted to one reaches an event stream opened
//! on the other; an SOS raises one alert; late fixes store a shift's figures again, once;
//! the retention purge runs without errors; and when the process in the middle of a
//! coverage pass is killed with SIGKILL, the other takes the job over, stores coverage,
//! still raises an SOS and still purges.
//!
//! PostgreSQL only: without `PATROL_TEST_DATABASE_URL` it is skipped with a note.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use api_tests::{Answer, EventStream};
use chrono::{DateTime, SecondsFormat, Utc};
use migration::MigratorTrait;
use patrol_server::jobs::Job;
use reqwest::{Method, StatusCode};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_patrol");
/// The same for both processes, so that a token from one is good on the other.
const JWT_SECRET: &str = "several-processes-signing-secret-0123";
const PASSWORD: &str = "several processes password";
/// The longest anything awaited may take.
const WAIT: Duration = Duration::from_secs(60);
const LAT: f64 = 34.22;
const LON: f64 = 108.95;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn patrol(dir: &Path, url: &str) -> Command {
    let mut c = api_tests::patrol_command(BIN, dir, url);
    c.env("PATROL_JWT_SECRET", JWT_SECRET)
        .env("PATROL_LOG_FORMAT", "json")
        // Each migration applied says so.
        .env(
            "RUST_LOG",
            "info,sqlx=warn,sea_orm=warn,sea_orm_migration=info",
        );
    c
}

/// Polls `check` until it answers, or fails the test after [`WAIT`].
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `patrol serve`, killed when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Process {
    /// Starts `patrol serve`; its database connections carry `name` as their
    /// `application_name`, so that the test can tell whose a lock is.
    fn spawn(dir: &Path, url: &str, name: &'static str) -> Process {
        let port = api_tests::free_port();
        let log = dir.join(format!("{name}.log"));
        let file = File::create(&log).unwrap();
        let joint = if url.contains('?') { '&' } else { '?' };
        let child = patrol(dir, &format!("{url}{joint}application_name={name}"))
            .arg("serve")
            .env("PATROL_BIND", format!("127.0.0.1:{port}"))
            .env("PATROL_DB_MAX_CONNECTIONS", "4")
            .env("PATROL_ALERT_EVERY_S", "1")
            .env("PATROL_RETENTION_DAYS", "1")
            .env("PATROL_PURGE_EVERY_S", "1")
            // A pass kept waiting by the test's table lock must keep waiting, not give up.
            .env("PATROL_DB_LOCK_TIMEOUT_MS", "600000")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn patrol serve");
        Process {
            name,
            child,
            log,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Waits until `/healthz` answers.
    async fn up(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let health = self.http.get(format!("{}/healthz", self.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status} before it served", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer /healthz",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then waits until the process is gone.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL patrol serve");
        self.child.wait().unwrap();
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::from(req.send().await.expect("request sent")).await
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, token, None).await
    }

    /// POSTs JSON and answers the `id` of what it made.
    async fn create(&self, path: &str, token: &str, body: Value) -> Uuid {
        api_tests::id(&self.send(Method::POST, path, token, Some(body)).await)
    }

    async fn token(&self, username: &str) -> String {
        let a = Answer::from(
            self.http
                .post(format!("{}/api/v1/auth/login", self.base))
                .json(&json!({"username": username, "password": PASSWORD}))
                .send()
                .await
                .expect("request sent"),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "login of {username}: {a:#?}");
        a.body["access_token"].as_str().unwrap().to_owned()
    }

    /// Posts fixes of the member whose token this is; all must be taken.
    async fn checkins(&self, token: &str, fixes: Vec<Value>) {
        let a = self
            .send(
                Method::POST,
                "/api/v1/checkins",
                token,
                Some(json!({ "checkins": fixes })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        assert_eq!(a.body["rejected"], 0, "{}", a.body);
    }

    /// The SOS alerts about a member.
    async fn sos_alerts(&self, token: &str, member: Uuid) -> Vec<Value> {
        let a = self.get("/api/v1/alerts?kind=sos", token).await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        let items = a.body["items"].as_array().unwrap();
        items
            .iter()
            .filter(|x| x["member_id"] == member.to_string())
            .cloned()
            .collect()
    }

    /// Its log, one JSON object a line.
    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Its log lines whose message holds `text`.
    fn logged(&self, text: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- end of {} ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// `n` fixes at the post, a minute apart from `from`.
fn minutely(from: DateTime<Utc>, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| fix(from + chrono::Duration::minutes(i), json!({})))
        .collect()
}

fn fix(t: DateTime<Utc>, extra: Value) -> Value {
    let mut body = json!({"client_id": Uuid::new_v4(), "recorded_at": iso(t),
                          "lat": LAT, "lon": LON, "accuracy_m": 5.0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Option<Value> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT to_jsonb(x) FROM ({sql}) AS t(x)"),
        ))
        .await
        .unwrap()?;
    row.try_get_by_index::<Value>(0).ok()
}

/// The status of a shift's stored figures, if stored and not stale.
async fn stored_status(db: &DatabaseConnection, shift: Uuid) -> Option<String> {
    scalar(
        db,
        &format!("SELECT status FROM shift_coverage WHERE shift_id = '{shift}' AND NOT stale"),
    )
    .await
    .and_then(|v| v.as_str().map(str::to_owned))
}

/// The `application_name` of the process holding the job's lock.
async fn holder(db: &DatabaseConnection, job: Job) -> Option<String> {
    let key = job.key();
    scalar(
        db,
        &format!(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.classid::bigint = {} AND l.objid::bigint = {}
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            key >> 32,
            key & 0xffff_ffff
        ),
    )
    .await
    .and_then(|v| v.as_str().map(str::to_owned))
}

/// Fixes two days old of the member whose token this is, posted to `p`, are purged.
async fn purged(p: &Process, token: &str, db: &DatabaseConnection, member: Uuid) {
    let old = Utc::now() - chrono::Duration::days(2);
    p.checkins(token, minutely(old, 5)).await;
    eventually("the fixes past their retention are purged", async || {
        let left = scalar(
            db,
            &format!(
                "SELECT count(*) FROM fixes WHERE member_id = '{member}'
                 AND recorded_at < now() - interval '1 day'"
            ),
        )
        .await?;
        (left == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_postgresql_and_take_over_each_others_jobs() {
    if !api_tests::on_postgres() {
        eprintln!(
            "skipped: several processes share a database only on PostgreSQL (set PATROL_TEST_DATABASE_URL)"
        );
        return;
    }
    let (url, _db) = api_tests::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // Both start at once on the new database; one of them applies each migration.
    let mut procs = vec![
        Process::spawn(dir, &url, "patrol-a"),
        Process::spawn(dir, &url, "patrol-b"),
    ];
    for p in &mut procs {
        p.up().await;
    }
    let db = Database::connect(&url).await.unwrap();
    let migrations = migration::Migrator::migrations().len();
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM seaql_migrations").await,
        Some(json!(migrations))
    );
    let applied: usize = procs
        .iter()
        .map(|p| p.logged("has been applied").len())
        .sum();
    assert_eq!(applied, migrations, "each migration is applied once");

    // The first admin, added as an operator does while both serve.
    let out = patrol(dir, &url)
        .env("PATROL_PASSWORD", PASSWORD)
        .args(["user", "add", "admin", "--role", "admin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (a, b) = (&procs[0], &procs[1]);
    let admin = a.token("admin").await;
    let unit = b
        .create(
            "/api/v1/units",
            &admin,
            json!({"code": "D1", "name": "District", "kind": "district", "parent_id": null}),
        )
        .await;
    let mut members = Vec::new();
    for name in ["officer1", "officer2", "officer3"] {
        let id = a
            .create(
                "/api/v1/members",
                &admin,
                json!({"username": name, "role": "patrol_officer", "unit_id": unit, "password": PASSWORD}),
            )
            .await;
        members.push((id, b.token(name).await));
    }
    let kiosk = async |code: &str| {
        b.create(
            "/api/v1/posts",
            &admin,
            json!({"code": code, "name": code, "kind": "kiosk", "unit_id": unit,
                   "geometry": {"type": "Point", "coordinates": [LON, LAT]}}),
        )
        .await
    };
    // An hour's shift that ended two hours ago: settled, so its figures are stored.
    let finished_shift = async |post: Uuid, member: Uuid| {
        let end = Utc::now() - chrono::Duration::hours(2);
        let start = end - chrono::Duration::hours(1);
        let id = a
            .create(
                "/api/v1/shifts",
                &admin,
                json!({"post_id": post, "starts_at": iso(start), "ends_at": iso(end),
                       "member_ids": [member]}),
            )
            .await;
        (id, start)
    };

    // A check-in posted to A reaches a stream opened on B.
    let mut on_b = EventStream::open(&b.base, Some(&admin), None)
        .await
        .expect("the stream opens");
    let (officer1, token1) = &members[0];
    let answer = a
        .send(
            Method::POST,
            "/api/v1/checkins",
            token1,
            Some(fix(Utc::now(), json!({}))),
        )
        .await;
    let fix_id = api_tests::id(&answer).to_string();
    on_b.until(WAIT, |e| e.event == "checkin" && e.data["fix_id"] == fix_id)
        .await
        .expect("A's check-in on B's stream");

    // An SOS posted to A is raised once, whichever process evaluates it, and stays one
    // while both go on evaluating every second.
    a.checkins(token1, vec![fix(Utc::now(), json!({"kind": "sos"}))])
        .await;
    eventually("the SOS alert", async || {
        let alerts = b.sos_alerts(&admin, *officer1).await;
        (!alerts.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(b.sos_alerts(&admin, *officer1).await.len(), 1);
    assert_eq!(a.sos_alerts(&admin, *officer1).await.len(), 1);

    // A finished shift nobody came to is stored as missed; then the phone's queue arrives
    // late at B, and the figures are stored again once.
    let (officer2, token2) = &members[1];
    let k1 = kiosk("K1").await;
    let (shift, start) = finished_shift(k1, *officer2).await;
    let status = eventually("the finished shift's figures", async || {
        stored_status(&db, shift).await
    })
    .await;
    assert_eq!(status, "missed");
    db.execute_unprepared(
        "CREATE TABLE test_coverage_writes (shift_id uuid, status text);
         CREATE FUNCTION test_coverage_written() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO test_coverage_writes VALUES (NEW.shift_id, NEW.status); RETURN NEW; END $$;
         CREATE TRIGGER test_coverage_written AFTER INSERT OR UPDATE ON shift_coverage
         FOR EACH ROW WHEN (NOT NEW.stale) EXECUTE FUNCTION test_coverage_written();",
    )
    .await
    .unwrap();
    b.checkins(token2, minutely(start, 60)).await;
    eventually("the late fixes' figures", async || {
        (stored_status(&db, shift).await.as_deref() == Some("met")).then_some(())
    })
    .await;
    // Both updaters pass again before the writes are counted.
    tokio::time::sleep(patrol_server::coverage::UPDATE_EVERY * 2).await;
    let writes = scalar(
        &db,
        &format!("SELECT count(*) FROM test_coverage_writes WHERE shift_id = '{shift}'"),
    )
    .await;
    assert_eq!(
        writes,
        Some(json!(1)),
        "the late fixes' figures stored once"
    );

    // Fixes past their retention are purged.
    purged(a, token2, &db, *officer2).await;

    // The process in the middle of a coverage pass is killed: the test's lock on the
    // table keeps the pass waiting (holding the job's lock) until then.
    let guard = db.begin().await.unwrap();
    guard
        .execute_unprepared("LOCK TABLE shift_coverage IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (officer3, token3) = &members[2];
    let k2 = kiosk("K2").await;
    let (shift2, _) = finished_shift(k2, *officer3).await;
    let busy = eventually("a process in a coverage pass", async || {
        holder(&db, Job::CoverageUpdater).await
    })
    .await;
    let dead = procs.iter().position(|p| p.name == busy).unwrap();
    procs[dead].kill();
    let survivor = procs.remove(1 - dead);
    eventually("the survivor takes the coverage job over", async || {
        (holder(&db, Job::CoverageUpdater).await.as_deref() == Some(survivor.name)).then_some(())
    })
    .await;
    guard.rollback().await.unwrap();
    let status = eventually("the survivor stores coverage", async || {
        stored_status(&db, shift2).await
    })
    .await;
    assert_eq!(status, "missed");
    // The survivor still raises an SOS, and still purges.
    survivor
        .checkins(token3, vec![fix(Utc::now(), json!({"kind": "sos"}))])
        .await;
    eventually("the SOS alert on the survivor", async || {
        let alerts = survivor.sos_alerts(&admin, *officer3).await;
        (alerts.len() == 1).then_some(())
    })
    .await;
    purged(&survivor, token2, &db, *officer2).await;

    // No background job failed, in either process.
    for p in procs.iter().chain([&survivor]) {
        let failures: Vec<Value> = p
            .log_lines()
            .into_iter()
            .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
            .collect();
        assert!(failures.is_empty(), "{}: {failures:#?}", p.name);
    }
    let purges: usize = procs
        .iter()
        .chain([&survivor])
        .flat_map(|p| p.logged("purged past retention"))
        .map(|l| l["fields"]["fixes"].as_u64().unwrap_or(0) as usize)
        .sum();
    assert_eq!(purges, 10, "each old fix purged once");
    db.close().await.unwrap();
}
