//! The real `patrol` binary: its fresh database, its one-shot commands, and the server
//! process, stopped with SIGTERM (SIGKILL if it lingers).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};
use sqlx::{Connection, Executor};
use tokio::process::{Child, Command};

use crate::http;

/// The signing secret of the bench server (32 characters).
pub const JWT_SECRET: &str = "bench-signing-secret-0123456789ab";
/// How long `serve` may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the `patrol` binary: `explicit`, else next to this executable.
pub fn locate_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_owned());
        }
        bail!("--patrol {}: no such file", path.display());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let path = dir.join(format!("patrol{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} is missing: build it first with\n    cargo build --release --bin patrol\n\
             then run the bench again (cargo run --release -p bench)",
            path.display()
        );
    }
    Ok(path)
}

/// The database of one run.
pub enum Database {
    /// A SQLite file in the run's temporary directory.
    Sqlite {
        /// The database file.
        file: PathBuf,
    },
    /// A database created for this run on a PostgreSQL server.
    Postgres {
        /// URL of the administrative database given with `--database-url`.
        admin_url: String,
        /// Name of the created database.
        name: String,
    },
}

impl Database {
    /// The URL the server connects to.
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite { file } => format!("sqlite://{}?mode=rwc", file.display()),
            Database::Postgres { admin_url, name } => with_database(admin_url, name),
        }
    }

    /// Whether it is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres { .. })
    }
}

/// Whether a URL names a PostgreSQL server.
/// A fresh temporary directory (its name starting with `prefix`, under `parent` when given)
/// and the database to bench: a new PostgreSQL database next to `database_url` when that
/// is given, else a SQLite file in the directory.
pub async fn prepare(
    prefix: &str,
    parent: Option<&Path>,
    database_url: Option<&str>,
) -> anyhow::Result<(tempfile::TempDir, Database)> {
    let mut tmp = tempfile::Builder::new();
    tmp.prefix(prefix);
    let dir = match parent {
        Some(parent) => tmp.tempdir_in(parent),
        None => tmp.tempdir(),
    }
    .context("creating the temporary directory")?;
    let db = match database_url {
        Some(url) if is_postgres_url(url) => create_postgres(url).await?,
        Some(url) => bail!("--database-url must be a postgres:// URL, not {url:?}"),
        None => Database::Sqlite {
            file: dir.path().join("bench.db"),
        },
    };
    Ok((dir, db))
}

/// Whether the URL names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its database name replaced by `name` (the query string is kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let mut out = match base[after_scheme..].find('/') {
        Some(slash) => format!("{}/{name}", &base[..after_scheme + slash]),
        None => format!("{base}/{name}"),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Creates a fresh PostgreSQL database next to `admin_url`.
pub async fn create_postgres(admin_url: &str) -> anyhow::Result<Database> {
    let name = format!("patrol_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to the --database-url server")?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .with_context(|| format!("creating database {name}"))?;
    admin.close().await.ok();
    Ok(Database::Postgres {
        admin_url: admin_url.to_owned(),
        name,
    })
}

/// Drops the database of a PostgreSQL run (nothing to do for SQLite: the temporary
/// directory goes with the run).
pub async fn drop_database(db: &Database) -> anyhow::Result<()> {
    if let Database::Postgres { admin_url, name } = db {
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await
            .with_context(|| format!("dropping database {name}"))?;
        admin.close().await.ok();
    }
    Ok(())
}

/// How to run the binary for one bench run.
pub struct Patrol {
    binary: PathBuf,
    /// Where the server listens.
    pub addr: SocketAddr,
    database_url: String,
    log: PathBuf,
}

impl Patrol {
    /// The binary on this database, listening on a free loopback port; the server's output
    /// goes to `log`.
    pub fn new(binary: PathBuf, db: &Database, log: PathBuf) -> anyhow::Result<Patrol> {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let addr = probe.local_addr()?;
        drop(probe);
        Ok(Patrol {
            binary,
            addr,
            database_url: db.url(),
            log,
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PATROL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PATROL_DATABASE_URL", &self.database_url)
            .env("PATROL_BIND", self.addr.to_string())
            .env("PATROL_JWT_SECRET", JWT_SECRET)
            .env("PATROL_LOG_FORMAT", "json")
            .env("PATROL_ACCESS_TOKEN_TTL_S", "86400")
            // BENCH_SERVER_RUST_LOG gives the server a finer log, for a diagnostic run.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null());
        cmd
    }

    async fn run(&self, args: &[&str], password: Option<&str>) -> anyhow::Result<String> {
        let mut cmd = self.command();
        cmd.args(args);
        if let Some(password) = password {
            cmd.env("PATROL_PASSWORD", password);
        }
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "patrol {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `patrol --version`.
    pub async fn version(&self) -> anyhow::Result<String> {
        Ok(self.run(&["--version"], None).await?.trim().to_owned())
    }

    /// `patrol migrate`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.run(&["migrate"], None).await.map(|_| ())
    }

    /// `patrol user add NAME --role admin`.
    pub async fn add_admin(&self, username: &str, password: &str) -> anyhow::Result<()> {
        self.run(
            &["user", "add", username, "--role", "admin"],
            Some(password),
        )
        .await
        .map(|_| ())
    }

    /// Starts `patrol ARGS…` with its output captured.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<Child> {
        let mut cmd = self.command();
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn()
            .with_context(|| format!("starting {} {}", self.binary.display(), args.join(" ")))
    }

    /// `patrol serve`, once `/healthz` answers 200.
    pub async fn serve(&self) -> anyhow::Result<Server> {
        // Appended to: a run may start the server more than once.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = self.command();
        cmd.arg("serve")
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", self.binary.display()))?;
        let mut server = Server {
            child,
            log: self.log.clone(),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "patrol serve exited ({status}) before answering /healthz; its output:\n{}",
                    server.log_tail()
                );
            }
            if let Ok((StatusCode::OK, _)) =
                http::json_call(self.addr, Method::GET, "/healthz", None, None).await
            {
                return Ok(server);
            }
            if started.elapsed() > START_TIMEOUT {
                let tail = server.log_tail();
                server.stop().await.ok();
                bail!(
                    "patrol serve did not answer /healthz within {} s; its output:\n{tail}",
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running `patrol serve`, killed if dropped before [`Server::stop`].
pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Warnings and errors the server logged (its log level is `warn`).
    pub fn logged_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 30 s. Returns how long it took.
    pub async fn stop(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if self.child.try_wait()?.is_some() {
            return Ok(started.elapsed());
        }
        if let Some(pid) = self.child.id() {
            // `kill` rather than a libc call: the workspace forbids unsafe code.
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("bench: could not send SIGTERM to the server; killing it");
            }
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!(
                    "bench: the server did not stop within {} s of SIGTERM; killing it",
                    STOP_TIMEOUT.as_secs()
                );
                self.child.kill().await?;
            }
        }
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "b"), "postgres://h/b");
    }
}
