//! The coverage benchmark: a generated day is loaded into a fresh server, then the
//! whole-day `GET /api/v1/coverage` and `patrol coverage rebuild` of the day are timed while
//! the memory of the server and of the rebuild is sampled from `/proc`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use hyper::{Method, StatusCode, header::HeaderValue};
use serde_json::json;
use sqlx::{Connection, QueryBuilder};
use uuid::Uuid;

use crate::{
    day::{Day, Kind},
    http::{self, Conn, host_header, request},
    load::percentile_ms,
    report::thousands,
    server::{self, Database, Patrol, Server},
};

/// Target: the whole-day coverage query, p99.
const QUERY_TARGET_MS: f64 = 50.0;
/// Target: rebuild of the worst-case day.
const REBUILD_TARGET_S: f64 = 10.0;
/// Target: memory of the server.
const MEMORY_TARGET_BYTES: u64 = 1 << 30;
/// Password of every bench member.
const PASSWORD: &str = "bench-password-0123";
/// Members whose login is timed through the API, to show what logging in all would cost.
const TIMED_LOGINS: usize = 16;
/// Rows per multi-row INSERT of the direct load.
const ROWS_PER_STATEMENT: usize = 1_000;
/// Rows per transaction of the direct load.
const ROWS_PER_TXN: usize = 20_000;

/// Options of `bench coverage`.
pub struct Options {
    /// Which days.
    pub days: Vec<Kind>,
    /// 1.0: 1,000 staff and 10,000 volunteers.
    pub scale: f64,
    /// Seed of the generated day.
    pub seed: u64,
    /// Timed whole-day queries.
    pub queries: usize,
    /// Connections for the HTTP ingest.
    pub conns: usize,
    /// Send the worst-case day through HTTP too (slow) instead of writing it to the table.
    pub worst_over_http: bool,
    /// Keep the day's database.
    pub keep: bool,
    /// Administrative PostgreSQL URL, else SQLite.
    pub database_url: Option<String>,
    /// The binary.
    pub patrol: PathBuf,
    /// Where the temporary directory goes.
    pub tmp_dir: Option<PathBuf>,
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// Runs the benchmark for each day and prints the figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    for kind in opts.days.clone() {
        let (dir, db) = server::prepare(
            "patrol-cov-bench-",
            opts.tmp_dir.as_deref(),
            opts.database_url.as_deref(),
        )
        .await?;
        let result = one_day(&opts, kind, &db, dir.path()).await;
        if opts.keep {
            let kept = dir.keep();
            progress(&format!(
                "kept the day's database: {} (directory {})",
                db.url(),
                kept.display()
            ));
        } else if let Err(e) = server::drop_database(&db).await {
            eprintln!("bench: {e:#}");
        }
        print!("{}", result?);
    }
    Ok(())
}

/// Peak memory of a process, sampled from `/proc/<pid>/status`.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    max_rss: Arc<AtomicU64>,
    hwm: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

impl MemorySampler {
    fn start(pid: u32) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_rss = Arc::new(AtomicU64::new(0));
        let hwm = Arc::new(AtomicU64::new(0));
        let (s, m, h) = (stop.clone(), max_rss.clone(), hwm.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, peak)) = memory_of(pid) {
                    m.fetch_max(rss, Ordering::Relaxed);
                    h.fetch_max(peak, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        MemorySampler {
            stop,
            max_rss,
            hwm,
            task,
        }
    }

    /// Stops sampling; answers the largest `VmRSS` seen and the last `VmHWM`.
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok();
        (
            self.max_rss.load(Ordering::Relaxed),
            self.hwm.load(Ordering::Relaxed),
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn met(ok: bool) -> &'static str {
    if ok { "[MET]    " } else { "[NOT MET]" }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn one_day(opts: &Options, kind: Kind, db: &Database, dir: &Path) -> anyhow::Result<String> {
    let today = Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let start = today - TimeDelta::days(1);
    let name = match kind {
        Kind::Reference => "reference",
        Kind::Worst => "worst-case",
    };
    let generated = Instant::now();
    let day = Arc::new(Day::new(kind, start, opts.scale, opts.seed));
    let fixes = day.fix_count();
    progress(&format!(
        "{name} day {}: {} members, {} posts, {} shifts, {} fixes (generated in {:.1} s)",
        start.date_naive(),
        day.members.len(),
        day.posts.len(),
        day.shifts.len(),
        thousands(fixes as f64),
        generated.elapsed().as_secs_f64()
    ));

    let patrol = Patrol::new(opts.patrol.clone(), db, dir.join("server.log"))?;
    patrol.migrate().await?;
    patrol.add_admin("bench0", PASSWORD).await?;
    let mut server = patrol.serve().await?;
    let pid = server.pid().context("the server has no pid")?;
    let mut samplers = vec![MemorySampler::start(pid)];
    let result = drive(
        opts,
        &patrol,
        db,
        &day,
        name,
        fixes,
        &mut server,
        &mut samplers,
    )
    .await;
    let (mut server_rss, mut server_hwm) = (0, 0);
    for sampler in samplers {
        let (rss, hwm) = sampler.finish().await;
        server_rss = server_rss.max(rss);
        server_hwm = server_hwm.max(hwm);
    }
    let stopped = server.stop().await;
    let mut text = match result {
        Ok(text) => text,
        Err(e) => bail!("{e:#}\nthe server's last output:\n{}", server.log_tail()),
    };
    stopped?;
    let logged = server.logged_lines();
    text.push_str(&format!(
        "  {} server memory < 1 GiB throughout: peak {} (VmHWM), largest VmRSS sampled {}\n",
        met(server_hwm < MEMORY_TARGET_BYTES),
        mib(server_hwm),
        mib(server_rss)
    ));
    if logged > 0 {
        text.push_str(&format!(
            "  the server logged {logged} warnings or errors; the last ones:\n{}\n",
            server.log_tail()
        ));
    }
    text.push('\n');
    Ok(text)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    opts: &Options,
    patrol: &Patrol,
    db: &Database,
    day: &Arc<Day>,
    name: &str,
    fixes: u64,
    server: &mut Server,
    samplers: &mut Vec<MemorySampler>,
) -> anyhow::Result<String> {
    let addr = patrol.addr;
    let admin = login(addr, "bench0").await?;
    let admin_auth = HeaderValue::from_str(&format!("Bearer {admin}"))?;
    let mut text = format!(
        "patrol coverage benchmark — {name} day {} at scale {} (seed {}) on {}, {} cores, load average {} at the start\n",
        day.start.date_naive(),
        opts.scale,
        opts.seed,
        if db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite (WAL, synchronous=FULL)"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::cpu::load_average().map_or("?".into(), |l| format!("{l:.2}")),
    );
    text.push_str(&format!(
        "  {} members ({} staff, {} volunteers), {} posts, {} shifts, {} fixes\n",
        thousands(day.members.len() as f64),
        day.members.iter().filter(|m| !m.volunteer).count(),
        day.members.iter().filter(|m| m.volunteer).count(),
        day.posts.len(),
        thousands(day.shifts.len() as f64),
        thousands(fixes as f64),
    ));

    // The organisation and the posts, through the API.
    let (status, unit) = http::json_call(
        addr,
        Method::POST,
        "/api/v1/units",
        Some(&admin_auth),
        Some(&json!({"code": "D1", "name": "Bench district", "kind": "district"})),
    )
    .await?;
    if status != StatusCode::CREATED {
        bail!("creating the unit: {status} {unit}");
    }
    let unit_id: Uuid = serde_json::from_value(unit["id"].clone())?;
    let started = Instant::now();
    let bodies: Vec<Bytes> = day
        .posts
        .iter()
        .map(|p| Bytes::from(p.to_json(unit_id).to_string()))
        .collect();
    let post_ids = post_all(addr, &admin_auth, "/api/v1/posts", bodies, 4).await?;
    progress(&format!(
        "created {} posts in {:.1} s",
        post_ids.len(),
        started.elapsed().as_secs_f64()
    ));

    // Members and their login sessions straight into the database; see `members`.
    let started = Instant::now();
    let tokens = members(db, day, unit_id).await?;
    let member_setup_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for m in day.members.iter().take(TIMED_LOGINS) {
        login(addr, &m.username).await?;
    }
    let per_login = started.elapsed().as_secs_f64() / TIMED_LOGINS.min(day.members.len()) as f64;
    text.push_str(&format!(
        "  setup: {} members and sessions written to the database in {:.1} s, tokens signed with the server's key \
         (one API login takes {:.0} ms: {:.0} s for all, one at a time)\n",
        thousands(day.members.len() as f64),
        member_setup_s,
        per_login * 1000.0,
        per_login * day.members.len() as f64
    ));

    // Shifts through the API.
    let started = Instant::now();
    let member_ids: Vec<Uuid> = tokens.iter().map(|(id, _)| *id).collect();
    let bodies: Vec<Bytes> = day
        .shifts
        .iter()
        .map(|s| {
            let ids: Vec<Uuid> = s.members.iter().map(|&m| member_ids[m]).collect();
            Bytes::from(
                json!({"post_id": post_ids[s.post], "starts_at": rfc3339(s.starts_at),
                       "ends_at": rfc3339(s.ends_at), "member_ids": ids})
                .to_string(),
            )
        })
        .collect();
    post_all(addr, &admin_auth, "/api/v1/shifts", bodies, 4).await?;
    text.push_str(&format!(
        "  setup: {} shifts created through POST /api/v1/shifts in {:.1} s\n",
        thousands(day.shifts.len() as f64),
        started.elapsed().as_secs_f64()
    ));

    // The fixes.
    let over_http = day.kind == Kind::Reference || opts.worst_over_http;
    let started = Instant::now();
    let (stored, took) = if over_http {
        progress(&format!(
            "sending {} fixes through POST /api/v1/checkins on {} connections",
            thousands(fixes as f64),
            opts.conns
        ));
        (
            ingest_http(addr, day, &tokens, opts.conns).await?,
            started.elapsed(),
        )
    } else {
        // The server is stopped meanwhile: the rows come from outside it, and its packer
        // would otherwise pack each past hour while it is still being written.
        server.stop().await?;
        progress(&format!(
            "writing {} fixes straight into the fixes table (the server stopped meanwhile)",
            thousands(fixes as f64)
        ));
        let started = Instant::now();
        let stored = ingest_direct(db, day, &member_ids).await?;
        let took = started.elapsed();
        *server = patrol.serve().await?;
        samplers.push(MemorySampler::start(
            server.pid().context("the server has no pid")?,
        ));
        (stored, took)
    };
    let took = took.as_secs_f64();
    text.push_str(&format!(
        "  ingest: {} fixes {} in {:.1} s ({} fixes/s)\n",
        thousands(stored as f64),
        if over_http {
            format!(
                "through POST /api/v1/checkins (batches of ≤ 1,000, one member per batch, {} connections)",
                opts.conns
            )
        } else {
            format!(
                "written straight into the fixes table ({}-row INSERTs, {}-row transactions; not through HTTP, no plausibility flags)",
                thousands(ROWS_PER_STATEMENT as f64),
                thousands(ROWS_PER_TXN as f64)
            )
        },
        took,
        thousands(stored as f64 / took)
    ));

    let (from, to) = (day.start, day.start + TimeDelta::days(1));
    // The server's own updater: how long until every shift of the day is stored and fresh.
    if over_http {
        let started = Instant::now();
        let settled = wait_stored(db, day.shifts.len(), Duration::from_secs(1800)).await?;
        text.push_str(&format!(
            "  the server's updater stored every shift's coverage {:.1} s after the last fix{}\n",
            started.elapsed().as_secs_f64(),
            if settled {
                ""
            } else {
                " (NOT all stored: gave up)"
            }
        ));
    }

    // On SQLite, the server packs each past hour's fixes (see `patrol_server::packs`); the
    // rebuild is timed once it has caught up, as it would have on a server that took the
    // day as it came.
    if let Database::Sqlite { file } = db {
        progress("waiting for the server to pack the past hours");
        let started = Instant::now();
        let packed = wait_packed(file, Duration::from_secs(1800)).await?;
        text.push_str(&format!(
            "  packing: the server had packed every past hour {:.1} s after {} ({} member-hours, {} MiB; {}){}\n",
            started.elapsed().as_secs_f64(),
            if over_http { "the last fix" } else { "it started again" },
            thousands(packed.packs as f64),
            packed.bytes / (1024 * 1024),
            match packed.range {
                Some((a, b)) => format!(
                    "hours {} to {}",
                    rfc3339(patrol_server::packs::hour_start(a)),
                    rfc3339(patrol_server::packs::hour_start(b))
                ),
                None => "no hours".to_owned(),
            },
            if packed.done { "" } else { " (NOT all packed: gave up)" }
        ));
    }

    // A full rebuild of the day by the CLI, with its memory.
    progress("patrol coverage rebuild of the day");
    let started = Instant::now();
    let child = patrol.spawn(&[
        "coverage",
        "rebuild",
        "--from",
        &rfc3339(from),
        "--to",
        &rfc3339(to),
    ])?;
    let rebuild_memory = MemorySampler::start(child.id().context("the rebuild has no pid")?);
    let output = child.wait_with_output().await?;
    let rebuild_s = started.elapsed().as_secs_f64();
    let (_, rebuild_hwm) = rebuild_memory.finish().await;
    if !output.status.success() {
        bail!(
            "patrol coverage rebuild failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    wait_stored(db, day.shifts.len(), Duration::from_secs(600)).await?;

    // The whole-day query.
    let path = format!("/api/v1/coverage?from={}&to={}", rfc3339(from), rfc3339(to));
    let host = host_header(addr);
    let mut conn = Conn::new(addr);
    let mut latencies = Vec::with_capacity(opts.queries);
    let mut answer = Bytes::new();
    for i in 0..=opts.queries {
        let sent = Instant::now();
        let (status, body) = conn
            .send(request(Method::GET, &host, &path, Some(&admin_auth), None))
            .await
            .map_err(|f| anyhow::anyhow!("GET /coverage: {}", f.key()))?;
        let us = sent.elapsed().as_micros();
        if status != StatusCode::OK {
            bail!("GET /coverage: {status} {}", String::from_utf8_lossy(&body));
        }
        // The first answer warms the caches and is not counted.
        if i > 0 {
            latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
        answer = body;
    }
    latencies.sort_unstable();
    let report: serde_json::Value = serde_json::from_slice(&answer)?;
    let summary = &report["summary"];
    let items = report["items"].as_array().map_or(0, Vec::len);
    if items != day.shifts.len() {
        bail!(
            "GET /coverage answered {items} shifts, the day has {}",
            day.shifts.len()
        );
    }
    let (p50, p99) = (
        percentile_ms(&latencies, 0.5).unwrap_or(f64::NAN),
        percentile_ms(&latencies, 0.99).unwrap_or(f64::NAN),
    );
    text.push_str(&format!(
        "  GET /api/v1/coverage for the day: {} shifts (met {}, partial {}, missed {}), {} KiB; {} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
        thousands(items as f64),
        summary["met"],
        summary["partial"],
        summary["missed"],
        answer.len() / 1024,
        latencies.len(),
        p50,
        p99,
        latencies.last().map_or(f64::NAN, |&us| f64::from(us) / 1000.0)
    ));
    text.push_str(&format!(
        "  patrol coverage rebuild of the day: {:.1} s (the whole process, from start to exit), peak memory {} (VmHWM)\n",
        rebuild_s,
        mib(rebuild_hwm)
    ));
    text.push_str(&format!(
        "  {} whole-day coverage query < {QUERY_TARGET_MS} ms: p99 {p99:.1} ms\n",
        met(p99 < QUERY_TARGET_MS)
    ));
    let full_worst = day.kind == Kind::Worst && opts.scale >= 1.0;
    text.push_str(&format!(
        "  {} rebuild of the worst-case day < {REBUILD_TARGET_S} s: {rebuild_s:.1} s{}\n",
        if full_worst {
            met(rebuild_s < REBUILD_TARGET_S)
        } else {
            "[n/a]    "
        },
        if full_worst {
            String::new()
        } else {
            format!(
                " (the target is for the full worst-case day; this is the {name} day at scale {})",
                opts.scale
            )
        }
    ));
    Ok(text)
}

async fn login(addr: SocketAddr, username: &str) -> anyhow::Result<String> {
    let body = json!({"username": username, "password": PASSWORD});
    let (status, answer) =
        http::json_call(addr, Method::POST, "/api/v1/auth/login", None, Some(&body)).await?;
    if status != StatusCode::OK {
        bail!("logging in {username}: {status} {answer}");
    }
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("logging in {username}: no access_token in {answer}"))
}

/// POSTs each body (expecting 201) on `conns` connections; answers the created ids in order.
async fn post_all(
    addr: SocketAddr,
    auth: &HeaderValue,
    path: &'static str,
    bodies: Vec<Bytes>,
    conns: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let bodies = Arc::new(bodies);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (bodies, auth) = (bodies.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let host = host_header(addr);
            let mut conn = Conn::new(addr);
            let mut ids = Vec::new();
            for i in (c..bodies.len()).step_by(conns) {
                let req = request(
                    Method::POST,
                    &host,
                    path,
                    Some(&auth),
                    Some(bodies[i].clone()),
                );
                let (status, body) = conn
                    .send(req)
                    .await
                    .map_err(|f| anyhow::anyhow!("POST {path}: {}", f.key()))?;
                if status != StatusCode::CREATED {
                    bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
                }
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                ids.push((i, serde_json::from_value::<Uuid>(v["id"].clone())?));
            }
            anyhow::Ok(ids)
        }));
    }
    let mut all = Vec::with_capacity(bodies.len());
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// Writes the members (with the admin's password hash, so each could log in with the bench
/// password) and one login session each straight into the database, and signs an access
/// token for each session with the key the server was given. Logging 11,000 members in
/// through the API would cost an argon2 hash each (see the timed logins); a token made this
/// way is what a login would hand out, and the server checks it exactly as one.
async fn members(db: &Database, day: &Day, unit_id: Uuid) -> anyhow::Result<Vec<(Uuid, String)>> {
    let keys = patrol_server::auth::jwt::JwtKeys::new(
        server::JWT_SECRET,
        None,
        Duration::from_secs(86_400),
    )?;
    let now = Utc::now();
    let rows: Vec<(Uuid, Uuid, &crate::day::Member)> = day
        .members
        .iter()
        .map(|m| (Uuid::now_v7(), Uuid::now_v7(), m))
        .collect();
    macro_rules! write_members {
        ($conn:expr, $db:ty) => {{
            let hash: String =
                sqlx::query_scalar("SELECT password_hash FROM members WHERE username = 'bench0'")
                    .fetch_one(&mut $conn)
                    .await?;
            let mut tx = $conn.begin().await?;
            for chunk in rows.chunks(500) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO members (id, username, display_name, role, unit_id, active, \
                     password_hash, created_at, updated_at) ",
                );
                qb.push_values(chunk, |mut b, (id, _, m)| {
                    b.push_bind(*id)
                        .push_bind(m.username.clone())
                        .push_bind(m.username.clone())
                        .push_bind(if m.volunteer {
                            "volunteer"
                        } else {
                            "patrol_officer"
                        })
                        .push_bind(unit_id)
                        .push_bind(true)
                        .push_bind(hash.clone())
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO sessions (id, member_id, created_at, revoked_at, revoked_reason) ",
                );
                qb.push_values(chunk, |mut b, (id, session, _)| {
                    b.push_bind(*session)
                        .push_bind(*id)
                        .push_bind(now)
                        .push_bind(None::<DateTime<Utc>>)
                        .push_bind(None::<String>);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }};
    }
    match db {
        Database::Sqlite { file } => {
            let mut conn = sqlite(file).await?;
            write_members!(conn, sqlx::Sqlite);
        }
        Database::Postgres { .. } => {
            let mut conn = sqlx::PgConnection::connect(&db.url()).await?;
            write_members!(conn, sqlx::Postgres);
        }
    }
    rows.iter()
        .map(|(id, session, m)| {
            let role = if m.volunteer {
                "volunteer"
            } else {
                "patrol_officer"
            };
            Ok((*id, keys.issue(*id, role, Some(unit_id), *session)?))
        })
        .collect()
}

async fn sqlite(file: &Path) -> anyhow::Result<sqlx::SqliteConnection> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(60));
    Ok(sqlx::SqliteConnection::connect_with(&options).await?)
}

/// Sends every member's fixes in time order, in batches of at most 1,000, member `m` on
/// connection `m mod conns`; answers the fixes stored.
async fn ingest_http(
    addr: SocketAddr,
    day: &Arc<Day>,
    tokens: &[(Uuid, String)],
    conns: usize,
) -> anyhow::Result<u64> {
    let auths: Arc<Vec<HeaderValue>> = Arc::new(
        tokens
            .iter()
            .map(|(_, t)| HeaderValue::from_str(&format!("Bearer {t}")))
            .collect::<Result<_, _>>()?,
    );
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (day, auths) = (day.clone(), auths.clone());
        tasks.push(tokio::spawn(async move {
            let host = host_header(addr);
            let mut conn = Conn::new(addr);
            let mut stored = 0u64;
            let mut body = String::new();
            for m in (c..day.members.len()).step_by(conns) {
                for batch in day.fixes_of(m).chunks(1000) {
                    body.clear();
                    body.push_str(r#"{"checkins":["#);
                    for (i, f) in batch.iter().enumerate() {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str(&format!(
                            r#"{{"client_id":"{}","recorded_at":"{}","lat":{:.7},"lon":{:.7},"accuracy_m":{}}}"#,
                            f.client_id,
                            f.recorded_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                            f.lat,
                            f.lon,
                            f.accuracy_m
                        ));
                    }
                    body.push_str("]}");
                    let req = request(
                        Method::POST,
                        &host,
                        "/api/v1/checkins",
                        Some(&auths[m]),
                        Some(Bytes::from(body.clone())),
                    );
                    let (status, answer) = conn
                        .send(req)
                        .await
                        .map_err(|f| anyhow::anyhow!("POST /checkins: {}", f.key()))?;
                    if !status.is_success() {
                        bail!("POST /checkins: {status} {}", String::from_utf8_lossy(&answer));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&answer)?;
                    let created = v["created"].as_u64().unwrap_or(0);
                    let duplicate = v["duplicate"].as_u64().unwrap_or(0);
                    if created + duplicate != batch.len() as u64 {
                        bail!("POST /checkins stored {created} + {duplicate} of {}: {v}", batch.len());
                    }
                    stored += created + duplicate;
                }
            }
            anyhow::Ok(stored)
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await??;
    }
    Ok(stored)
}

/// Writes the day's fixes straight into the `fixes` table in time order (all phones' fixes
/// of one 30-second slot, then the next), as the server would store them but without
/// plausibility flags; answers the rows written.
async fn ingest_direct(db: &Database, day: &Day, member_ids: &[Uuid]) -> anyhow::Result<u64> {
    let received_at = Utc::now();
    let mut written = 0u64;
    macro_rules! write_fixes {
        ($conn:expr, $db:ty) => {{
            let mut rows = Vec::with_capacity(ROWS_PER_TXN);
            let mut slot = 0;
            while slot < crate::day::FIXES_PER_DAY {
                while rows.len() < ROWS_PER_TXN && slot < crate::day::FIXES_PER_DAY {
                    for m in 0..day.members.len() {
                        if let Some(f) = day.fix_at(m, slot) {
                            rows.push((member_ids[m], f));
                        }
                    }
                    slot += 1;
                }
                let mut tx = $conn.begin().await?;
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO fixes (id, member_id, client_id, recorded_at, received_at, \
                         lat, lon, accuracy_m, speed_mps, heading_deg, altitude_m, battery, kind, \
                         post_id, shift_id, datum, mock, flags, source) ",
                    );
                    qb.push_values(chunk, |mut b, (member, f)| {
                        b.push_bind(Uuid::now_v7())
                            .push_bind(*member)
                            .push_bind(f.client_id)
                            .push_bind(f.recorded_at)
                            .push_bind(received_at)
                            .push_bind(f.lat)
                            .push_bind(f.lon)
                            .push_bind(f.accuracy_m)
                            .push_bind(None::<f64>)
                            .push_bind(None::<f64>)
                            .push_bind(None::<f64>)
                            .push_bind(None::<f64>)
                            .push_bind("ping")
                            .push_bind(None::<Uuid>)
                            .push_bind(None::<Uuid>)
                            .push_bind("wgs84")
                            .push_bind(false)
                            .push_bind(0_i32)
                            .push_bind("api");
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                written += rows.len() as u64;
                rows.clear();
                if slot % 240 == 0 {
                    progress(&format!(
                        "  {} rows written ({:.0}% of the day)",
                        thousands(written as f64),
                        slot as f64 * 100.0 / crate::day::FIXES_PER_DAY as f64
                    ));
                }
            }
        }};
    }
    match db {
        Database::Sqlite { file } => {
            let mut conn = sqlite(file).await?;
            write_fixes!(conn, sqlx::Sqlite);
        }
        Database::Postgres { .. } => {
            let mut conn = sqlx::PgConnection::connect(&db.url()).await?;
            write_fixes!(conn, sqlx::Postgres);
        }
    }
    Ok(written)
}

/// Waits until `shifts` shifts have fresh stored coverage; answers whether they did in time.
/// What the server had packed when [`wait_packed`] stopped waiting.
struct Packed {
    done: bool,
    range: Option<(i64, i64)>,
    packs: i64,
    bytes: i64,
}

/// Waits until the server has packed every hour that is due and none is marked out of date.
async fn wait_packed(file: &Path, limit: Duration) -> anyhow::Result<Packed> {
    use patrol_server::packs::{PACK_AFTER, hour_of};
    let started = Instant::now();
    let mut conn = sqlite(file).await?;
    loop {
        let range: Option<(i64, i64)> =
            sqlx::query_as("SELECT from_hour, until_hour FROM fix_packs_range")
                .fetch_optional(&mut conn)
                .await?;
        let marked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fix_packs_dirty")
            .fetch_one(&mut conn)
            .await?;
        let due = hour_of(Utc::now() - PACK_AFTER);
        let done = range.is_some_and(|(_, until)| until >= due) && marked == 0;
        if done || started.elapsed() > limit {
            let (packs, bytes): (i64, i64) =
                sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(LENGTH(fixes)), 0) FROM fix_packs")
                    .fetch_one(&mut conn)
                    .await?;
            return Ok(Packed {
                done,
                range,
                packs,
                bytes,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_stored(db: &Database, shifts: usize, limit: Duration) -> anyhow::Result<bool> {
    let started = Instant::now();
    let sql = "SELECT COUNT(*) FROM shift_coverage WHERE stale = false";
    loop {
        let fresh: i64 = match db {
            Database::Sqlite { file } => {
                let mut conn = sqlite(file).await?;
                sqlx::query_scalar(sql).fetch_one(&mut conn).await?
            }
            Database::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&db.url()).await?;
                sqlx::query_scalar(sql).fetch_one(&mut conn).await?
            }
        };
        if fresh as usize >= shifts {
            return Ok(true);
        }
        if started.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
