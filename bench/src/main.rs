//! `bench`: the ingest benchmark of the real `patrol` binary on loopback.
//!
//! It starts the release binary on a fresh database, creates and logs in members, sends
//! check-ins from a lean HTTP/1.1 load generator, and prints the figures next to two
//! baselines measured in the same run: `GET /healthz` at the same concurrency (the HTTP
//! ceiling) and rows written straight into the same `fixes` table (the insert ceiling).

mod coverage;
mod cpu;
mod day;
mod http;
mod load;
mod raw;
mod report;
mod server;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use clap::Parser;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::{
    load::{Kind, Member, Spec},
    report::Report,
    server::{Database, Patrol},
};

const HOW_TO_RUN: &str = "\
How to run (two commands: `cargo run -p bench` builds only the bench, and the bench runs
the release `patrol` binary found next to its own executable):

    cargo build --release --bin patrol
    cargo run --release -p bench -- --seconds 10

On PostgreSQL, give an administrative URL; a database patrol_bench_<random> is created
next to it and dropped at the end:

    cargo run --release -p bench -- --database-url postgres://postgres@127.0.0.1:5432/postgres

The bench exits 0 whether or not the targets are met; it fails only when the server or
the database cannot be set up.";

/// Ingest benchmark of the real `patrol` binary on loopback: single-fix and batch
/// check-ins against an HTTP baseline (GET /healthz) and a raw-insert baseline.
#[derive(Parser, Debug)]
#[command(name = "bench", version, about, after_help = HOW_TO_RUN)]
struct Args {
    /// Measured seconds per workload
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Warm-up seconds before each workload's measured window
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    warmup: u64,
    /// Administrative PostgreSQL URL (postgres://...) to bench PostgreSQL instead of SQLite
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Print the figures as JSON on stdout instead of the table
    #[arg(long)]
    json: bool,
    /// Members to create (each connection drives its own; at least 256)
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(256..=4096))]
    users: u64,
    /// Rows for the raw insert baseline
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1000..=10_000_000))]
    raw_rows: u64,
    /// Rows per transaction of the raw baseline (on PostgreSQL in INSERT statements of at most 256 rows)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    raw_rows_per_txn: u64,
    /// Consecutive rows of one member in the raw baseline, the members in turn: 1,000 as a
    /// batch of 1,000 sends them, 100 as a batch of 100
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    raw_run_rows: u64,
    /// The patrol binary [default: `patrol` next to this executable, i.e. target/release/patrol]
    #[arg(long, value_name = "PATH")]
    patrol: Option<PathBuf>,
    /// Directory for the run's temporary directory (the SQLite file lives there) [default: the system's]
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Skip the check-in workloads (only the baselines)
    #[arg(long)]
    baselines_only: bool,
    /// Run only these parts of the benchmark (a comma-separated list), for a quicker
    /// comparison of builds; the targets of the parts left out read "not measured"
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PARTS")]
    only: Vec<Part>,
    /// Send time-ordered client ids (UUID v7) instead of random ones (v4, the default and
    /// what the targets are judged on)
    #[arg(long)]
    ordered_client_ids: bool,
    #[command(subcommand)]
    command: Option<Workload>,
}

/// The parts of the ingest benchmark, for `--only`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `GET /healthz` at 16, 64 and 256 connections
    Healthz,
    /// Single-fix POSTs at 16 connections
    Single16,
    /// Single-fix POSTs at 64 connections
    Single64,
    /// Single-fix POSTs at 256 connections
    Single256,
    /// Batches of 100 at 16 connections
    Batch100,
    /// Batches of 1,000 at 4 connections
    Batch1000,
    /// The raw insert baseline
    Raw,
}

impl Args {
    /// Whether this part of the benchmark runs.
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// Benchmarks other than check-in ingest.
#[derive(clap::Subcommand, Debug)]
enum Workload {
    /// Coverage of a generated day: ingest, the whole-day GET /api/v1/coverage, `patrol
    /// coverage rebuild` of the day, and the memory of the server and of the rebuild
    Coverage(CoverageArgs),
}

/// Options of `bench coverage`.
#[derive(clap::Args, Debug)]
struct CoverageArgs {
    /// Which day: the reference day (1,000 staff and 10,000 volunteers, fixes every 30 s
    /// on duty), the worst case (11,000 phones every 30 s all day), or both
    #[arg(long, value_enum, default_value_t = DayChoice::Both)]
    day: DayChoice,
    /// Scale of the day: 1.0 is the full size, 0.1 a tenth of the members and areas
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Seed of the generated day
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timed whole-day queries (after one untimed)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    queries: u64,
    /// Connections for the HTTP ingest
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    conns: u64,
    /// Send the worst-case day through POST /api/v1/checkins as well (slow at full scale)
    /// instead of writing it straight into the fixes table
    #[arg(long)]
    worst_over_http: bool,
    /// Keep the SQLite database of each day (its directory is printed) to query it again
    /// with `patrol serve`; with PostgreSQL the database is kept
    #[arg(long)]
    keep: bool,
}

/// The `--day` choices.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DayChoice {
    Reference,
    Worst,
    Both,
}

/// Password of every bench member.
const PASSWORD: &str = "bench-password-0123";
/// How far back the members' tracks start.
const TRACK_START: TimeDelta = TimeDelta::hours(12);

fn main() -> ExitCode {
    let mut args = Args::parse();
    let workload = args.command.take();
    // Two workers: the machine's two cores are shared with the server under test.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match workload {
        Some(Workload::Coverage(c)) => runtime.block_on(run_coverage(&args, c)),
        None => runtime.block_on(run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_coverage(args: &Args, c: CoverageArgs) -> anyhow::Result<()> {
    if !(c.scale > 0.0 && c.scale <= 1.0) {
        bail!("--scale must be in (0, 1]");
    }
    let days = match c.day {
        DayChoice::Reference => vec![day::Kind::Reference],
        DayChoice::Worst => vec![day::Kind::Worst],
        DayChoice::Both => vec![day::Kind::Reference, day::Kind::Worst],
    };
    coverage::run(coverage::Options {
        days,
        scale: c.scale,
        seed: c.seed,
        queries: usize::try_from(c.queries)?,
        conns: usize::try_from(c.conns)?,
        worst_over_http: c.worst_over_http,
        keep: c.keep,
        database_url: args.database_url.clone(),
        patrol: server::locate_binary(args.patrol.as_deref())?,
        tmp_dir: args.tmp_dir.clone(),
    })
    .await
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

async fn run(args: Args) -> anyhow::Result<()> {
    let binary = server::locate_binary(args.patrol.as_deref())?;
    let load_average = cpu::load_average();
    let (dir, db) = server::prepare(
        "patrol-bench-",
        args.tmp_dir.as_deref(),
        args.database_url.as_deref(),
    )
    .await?;
    let result = bench(&args, binary, &db, dir.path()).await.map(|mut r| {
        r.load_average_at_start = load_average;
        r
    });
    if let Err(e) = server::drop_database(&db).await {
        eprintln!("bench: {e:#}");
    }
    let report = result?;
    drop(dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn bench(
    args: &Args,
    binary: PathBuf,
    db: &Database,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let patrol = Patrol::new(binary, db, dir.join("server.log"))?;
    let version = patrol.version().await?;
    progress(&format!("{version} on {}", patrol.addr));
    patrol.migrate().await?;
    patrol.add_admin("bench0", PASSWORD).await?;
    let mut server = patrol.serve().await?;
    let result = drive(args, &patrol, &mut server).await;
    let logged = server.logged_lines();
    let stopped = server.stop().await;
    let (mut report, log_tail) = match result {
        Ok(report) => (report, server.log_tail()),
        Err(e) => {
            bail!("{e:#}\nthe server's last output:\n{}", server.log_tail());
        }
    };
    report.server_stop_s = stopped.ok().map(|d| d.as_secs_f64());
    report.server_log_lines = logged;
    if logged > 0 {
        report.server_log_tail = Some(log_tail);
    }
    report.patrol_version = version;

    if args.runs(Part::Raw) {
        progress(&format!(
            "raw insert baseline: {} rows in {}-row transactions, runs of {} fixes of one member",
            args.raw_rows, args.raw_rows_per_txn, args.raw_run_rows
        ));
        let plan = raw::Plan {
            total: usize::try_from(args.raw_rows)?,
            per_txn: usize::try_from(args.raw_rows_per_txn)?,
            run_rows: usize::try_from(args.raw_run_rows)?,
            base: chrono::Utc::now() - chrono::TimeDelta::days(30),
        };
        report.raw = Some(match db {
            Database::Sqlite { file } => raw::sqlite(file, plan).await?,
            Database::Postgres { .. } => raw::postgres(&db.url(), plan).await?,
        });
    }
    report.database = match db {
        Database::Sqlite { .. } => format!(
            "SQLite (synchronous=FULL, WAL) on {}",
            cpu::filesystem_type(dir).unwrap_or_else(|| "an unknown file system".into())
        ),
        Database::Postgres { .. } => {
            let (fsync, commit) = raw::postgres_durability(&db.url()).await?;
            format!("PostgreSQL (fsync={fsync}, synchronous_commit={commit})")
        }
    };
    report.postgres = db.is_postgres();
    report.evaluate_targets();
    Ok(report)
}

/// Creates the members, logs them in and runs the HTTP workloads.
async fn drive(
    args: &Args,
    patrol: &Patrol,
    server: &mut server::Server,
) -> anyhow::Result<Report> {
    let addr = patrol.addr;
    let users = usize::try_from(args.users)?;
    let admin = login(addr, "bench0").await?;
    let admin_auth = hyper::header::HeaderValue::from_str(&format!("Bearer {admin}"))?;

    progress(&format!("creating {} members through the API", users - 1));
    let created = run_limited(1..users, 4, |i| {
        let auth = admin_auth.clone();
        async move {
            let body =
                json!({"username": format!("bench{i}"), "role": "admin", "password": PASSWORD});
            let (status, answer) = http::json_call(
                addr,
                Method::POST,
                "/api/v1/members",
                Some(&auth),
                Some(&body),
            )
            .await?;
            if status != StatusCode::CREATED {
                bail!("creating bench{i}: {status} {answer}");
            }
            Ok(())
        }
    })
    .await;
    created.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    progress(&format!("logging in {users} members"));
    let tokens = run_limited(0..users, 4, |i| async move {
        login(addr, &format!("bench{i}")).await
    })
    .await;
    let first = Utc::now() - TRACK_START;
    let mut members = Vec::with_capacity(users);
    for (i, token) in tokens.into_iter().enumerate() {
        let mut member = Member::new(i, &token?, first);
        member.ordered_client_ids = args.ordered_client_ids;
        members.push(member);
    }

    let checkins_route = checkins_in_openapi(addr).await;
    let mut specs = Vec::new();
    if args.runs(Part::Healthz) {
        for conns in [16, 64, 256] {
            specs.push(Spec {
                name: "baseline GET /healthz".into(),
                kind: Kind::Healthz,
                conns,
            });
        }
    }
    if !args.baselines_only {
        for (part, conns) in [
            (Part::Single16, 16),
            (Part::Single64, 64),
            (Part::Single256, 256),
        ] {
            if args.runs(part) {
                specs.push(Spec {
                    name: "single-fix POST".into(),
                    kind: Kind::Single,
                    conns,
                });
            }
        }
        if args.runs(Part::Batch100) {
            specs.push(Spec {
                name: "batch 100".into(),
                kind: Kind::Batch(100),
                conns: 16,
            });
        }
        if args.runs(Part::Batch1000) {
            specs.push(Spec {
                name: "batch 1000".into(),
                kind: Kind::Batch(1000),
                conns: 4,
            });
        }
    }
    let warmup = Duration::from_secs(args.warmup);
    let seconds = Duration::from_secs(args.seconds);
    let mut measured = Vec::new();
    for spec in &specs {
        progress(&format!(
            "{} at {} connections ({} s + {} s warm-up)",
            spec.name, spec.conns, args.seconds, args.warmup
        ));
        let m = load::run(addr, spec, &mut members, warmup, seconds, server.pid()).await?;
        progress(&format!(
            "  {:.0} req/s, {:.0} fixes/s, {} errors",
            m.requests_per_s,
            m.fixes_per_s,
            m.error_count()
        ));
        measured.push(m);
    }
    let mut report = Report::new(args.seconds, args.warmup, users, checkins_route, measured);
    if args.ordered_client_ids {
        report.client_ids = "time-ordered (v7)";
    }
    Ok(report)
}

async fn login(addr: std::net::SocketAddr, username: &str) -> anyhow::Result<String> {
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

/// Whether the server's OpenAPI document has `/api/v1/checkins`.
async fn checkins_in_openapi(addr: std::net::SocketAddr) -> bool {
    match http::json_call(addr, Method::GET, "/api/v1/openapi.json", None, None).await {
        Ok((StatusCode::OK, doc)) => doc["paths"].as_object().is_some_and(|p| {
            p.keys()
                .any(|k| k == "/checkins" || k == "/api/v1/checkins")
        }),
        _ => false,
    }
}

/// Runs `f` over `items`, at most `limit` at a time, and returns the results in order.
async fn run_limited<I, F, Fut, T>(items: I, limit: usize, f: F) -> Vec<T>
where
    I: IntoIterator<Item = usize>,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(limit));
    let mut handles = Vec::new();
    for i in items {
        let permit = semaphore.clone();
        let fut = f(i);
        handles.push(tokio::spawn(async move {
            let _permit = permit.acquire_owned().await;
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a setup task panicked"));
    }
    out
}
