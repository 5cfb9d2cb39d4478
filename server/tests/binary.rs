//! The `patrol` binary as an operator runs it: help, migrate, user add, serve with
//! settings from flags, environment and a TOML file, JSON logs, and a clean stop on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_patrol");
const PASSWORD: &str = "binary test password";

fn patrol(dir: &Path, url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PATROL_DATABASE_URL", url)
        .env("RUST_LOG", "info");
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `patrol serve` whose stderr and stdout lines are collected.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    base: String,
}

impl Served {
    fn start(mut cmd: Command, port: u16) -> Served {
        let mut child = cmd
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if reqwest::blocking_get(&format!("{base}/healthz")).unwrap_or(false) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out: Vec<String> = lines.try_iter().collect();
                panic!("patrol serve exited with {status}: {out:#?}");
            }
            assert!(Instant::now() < deadline, "patrol serve did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Served { child, lines, base }
    }

    /// SIGTERM, then the exit status and every line printed.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "patrol serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        (status, self.lines.try_iter().collect())
    }
}

/// Tiny blocking HTTP through reqwest's async client on a throwaway runtime.
mod reqwest {
    use serde_json::Value;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn blocking_get(url: &str) -> Result<bool, ::reqwest::Error> {
        rt().block_on(async { Ok(::reqwest::get(url).await?.status().is_success()) })
    }

    pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        rt().block_on(async {
            let client = ::reqwest::Client::new();
            let mut req = client.request(method.parse().unwrap(), url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json().await.unwrap_or(Value::Null))
        })
    }
}

#[test]
fn help_describes_every_command() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "migrate",
        "user",
        "openapi",
        "--database-url",
        "PATROL_DATABASE_URL",
        "PATROL_BIND",
        "PATROL_JWT_SECRET",
        "PATROL_TIMEZONE",
        "PATROL_TLS_CERT",
        "PATROL_TLS_KEY",
        "tls",
        "--config",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = Command::new(BIN)
        .args(["user", "add", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "USERNAME",
        "--role",
        "--unit",
        "--display-name",
        "PATROL_PASSWORD",
    ] {
        assert!(text.contains(word), "user add --help lacks {word}:\n{text}");
    }
    for sub in [
        &["serve", "--help"][..],
        &["migrate", "--help"],
        &["openapi", "--help"],
        &["tls", "self-signed", "--help"],
        &["tls", "csr", "--help"],
    ] {
        assert!(
            Command::new(BIN)
                .args(sub)
                .output()
                .unwrap()
                .status
                .success()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_add_a_user_serve_log_in_and_stop_cleanly() {
    let (url, _db) = api_tests::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let port = free_port();
    tokio::task::spawn_blocking(move || {
        let out = patrol(&dir, &url).arg("migrate").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        // A second run is a no-op.
        assert!(
            patrol(&dir, &url)
                .arg("migrate")
                .output()
                .unwrap()
                .status
                .success()
        );

        let out = patrol(&dir, &url)
            .env("PATROL_PASSWORD", PASSWORD)
            .args([
                "user",
                "add",
                "boss",
                "--role",
                "admin",
                "--display-name",
                "The Boss",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // Bad input is refused with a message, not a panic.
        let out = patrol(&dir, &url)
            .env("PATROL_PASSWORD", PASSWORD)
            .args(["user", "add", "someone", "--role", "volunteer"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--unit is required"),
            "{out:?}"
        );
        let out = patrol(&dir, &url)
            .env("PATROL_PASSWORD", PASSWORD)
            .args(["user", "add", "boss", "--role", "admin"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already taken"),
            "{out:?}"
        );
        // Without PATROL_PASSWORD and without a terminal it says what to do.
        let out = patrol(&dir, &url)
            .args(["user", "add", "other", "--role", "admin"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("PATROL_PASSWORD"),
            "{out:?}"
        );

        // Settings from a TOML file, JSON logs from the environment.
        std::fs::write(
            dir.join("patrol.toml"),
            format!("bind = \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
        let mut cmd = patrol(&dir, &url);
        cmd.env("PATROL_CONFIG", dir.join("patrol.toml"))
            .env("PATROL_LOG_FORMAT", "json")
            .env("PATROL_JWT_SECRET", "binary-test-signing-secret-42");
        let served = Served::start(cmd, port);
        let (status, login) = reqwest::call(
            "POST",
            &format!("{}/api/v1/auth/login", served.base),
            None,
            Some(json!({"username": "boss", "password": PASSWORD})),
        );
        assert_eq!(status, 200, "{login}");
        assert_eq!(login["member"]["display_name"], "The Boss");
        let token = login["access_token"].as_str().unwrap().to_owned();
        let (status, unit) = reqwest::call(
            "POST",
            &format!("{}/api/v1/units", served.base),
            Some(&token),
            Some(json!({"code": "D1", "name": "District", "kind": "district"})),
        );
        assert_eq!(status, 201, "{unit}");

        let (status, lines) = served.stop();
        assert!(status.success(), "exit {status}: {lines:#?}");
        assert!(!lines.is_empty());
        for line in &lines {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            assert!(parsed["level"].is_string(), "{line}");
            assert!(
                !line.contains(PASSWORD) && !line.contains(&token),
                "secret in log: {line}"
            );
            assert!(
                !line.contains("binary-test-signing-secret"),
                "secret in log: {line}"
            );
        }
        assert!(
            lines.iter().any(|l| l.contains("/api/v1/units")),
            "route template in the access log"
        );
        assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
    })
    .await
    .unwrap();
}

#[test]
fn default_settings_create_patrol_db_in_the_working_directory() {
    // The default listen address is 127.0.0.1:8080; skip the serve part if it is busy here.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if TcpListener::bind("127.0.0.1:8080").is_err() {
        eprintln!("127.0.0.1:8080 is in use; checking `patrol migrate` with defaults only");
        assert!(cmd.arg("migrate").status().unwrap().success());
        assert!(dir.path().join("patrol.db").exists());
        return;
    }
    let served = Served::start(cmd, 8080);
    assert!(dir.path().join("patrol.db").exists());
    let (status, lines) = served.stop();
    assert!(status.success(), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("PATROL_JWT_SECRET is not set")),
        "warns that production should set a secret: {lines:#?}"
    );
}

#[test]
fn bad_settings_stop_the_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/p.db?mode=rwc", dir.path().display());
    for (var, value, says) in [
        ("PATROL_TIMEZONE", "Mars/Olympus", "timezone"),
        ("PATROL_JWT_SECRET", "short", "jwt_secret"),
        ("PATROL_LOG_FORMAT", "xml", "log_format"),
        ("PATROL_SQLITE_SYNCHRONOUS", "off", "sqlite_synchronous"),
    ] {
        let out = patrol(dir.path(), &url)
            .env(var, value)
            .arg("migrate")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{var}={value}: {err}");
    }
    let out = patrol(dir.path(), "mysql://x/y")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::write(dir.path().join("bad.toml"), "bnd = 1\n").unwrap();
    let out = patrol(dir.path(), &url)
        .args(["--config", "bad.toml", "migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}

#[test]
fn tls_self_signed_writes_a_certificate_that_serve_speaks_https_with() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/p.db?mode=rwc", dir.path().display());
    let make = |extra: &[&str]| {
        patrol(dir.path(), &url)
            .args(["tls", "self-signed", "--host", "127.0.0.1", "--host"])
            .args(["localhost", "--out-dir", "certs", "--days", "30"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = make(&[]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    for word in [
        "certs/patrol-cert.pem",
        "certs/patrol-key.pem",
        "certs/patrol-ca.pem",
        "PATROL_TLS_CERT=certs/patrol-cert.pem",
        "PATROL_TLS_KEY=certs/patrol-key.pem",
    ] {
        assert!(said.contains(word), "lacks {word}: {said}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(dir.path().join("certs/patrol-key.pem")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }
    let again = make(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(make(&["--force"]).status.success());

    // Started with them, it says https and answers a client that trusts patrol-ca.pem.
    let port = free_port();
    let mut child = patrol(dir.path(), &url)
        .env("PATROL_BIND", format!("127.0.0.1:{port}"))
        .env("PATROL_TLS_CERT", "certs/patrol-cert.pem")
        .env("PATROL_TLS_KEY", "certs/patrol-key.pem")
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = format!("listening on https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(&listening) => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("patrol serve ended: {e}"),
        }
        assert!(Instant::now() < deadline, "no {listening:?}");
    }
    let ca = std::fs::read(dir.path().join("certs/patrol-ca.pem")).unwrap();
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            ::reqwest::Client::builder()
                .add_root_certificate(::reqwest::Certificate::from_pem(&ca).unwrap())
                .build()
                .unwrap()
                .get(format!("https://localhost:{port}/healthz"))
                .send()
                .await
                .unwrap()
                .status()
        });
    assert_eq!(status, 200);
    child.kill().unwrap();
    child.wait().unwrap();

    // A key of another certificate, or a missing file: serve stops, naming the problem.
    let out = patrol(dir.path(), &url)
        .args(["tls", "csr", "--host", "127.0.0.1", "--out-dir", "other"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("other/patrol.csr").exists());
    for (cert, key, says) in [
        (
            "certs/patrol-cert.pem",
            "other/patrol-key.pem",
            "does not belong",
        ),
        ("certs/missing.pem", "certs/patrol-key.pem", "missing.pem"),
    ] {
        let out = patrol(dir.path(), &url)
            .env("PATROL_BIND", format!("127.0.0.1:{}", free_port()))
            .env("PATROL_TLS_CERT", cert)
            .env("PATROL_TLS_KEY", key)
            .arg("serve")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cert} with {key} served");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{cert} with {key}: {err}");
    }
    let out = patrol(dir.path(), &url)
        .env("PATROL_TLS_CERT", "certs/patrol-cert.pem")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATROL_TLS_KEY"));
}

#[test]
fn sqlite_normal_synchronous_is_a_choice_that_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/p.db?mode=rwc", dir.path().display());
    let out = patrol(dir.path(), &url)
        .env("PATROL_SQLITE_SYNCHRONOUS", "normal")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn openapi_prints_the_committed_document() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../api-spec/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        printed, committed,
        "regenerate with: cargo run -q --bin patrol -- openapi > api-spec/openapi.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_synchronous_commit_is_refused_unless_allowed() {
    if !api_tests::on_postgres() {
        eprintln!("PATROL_TEST_DATABASE_URL is not set: this check runs on PostgreSQL only");
        return;
    }
    let (url, db) = api_tests::fresh_database().await;
    let api_tests::TestDb::Postgres { name, .. } = &db else {
        unreachable!()
    };
    let conn = sea_orm::Database::connect(&url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        &format!("ALTER DATABASE \"{name}\" SET synchronous_commit = off"),
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let out = patrol(&path, &url).arg("migrate").output().unwrap();
        assert!(!out.status.success(), "started with synchronous_commit off");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("synchronous_commit is off"),
            "{out:?}"
        );
        let out = patrol(&path, &url)
            .env("PATROL_ALLOW_UNSAFE_DURABILITY", "true")
            .arg("migrate")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    })
    .await
    .unwrap();
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_then_import_posts_from_a_file() {
    let (url, _db) = api_tests::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        // The simulated week of fixes is the API suite's to check (tests/tests/demo.rs).
        let out = patrol(&dir, &url).args(["demo", "--no-fixes"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("18 routes, 15 checkpoints, 20 kiosks"), "{text}");
        assert!(text.contains("patrol-demo") && text.contains("cmd.district"), "{text}");
        let again = patrol(&dir, &url).args(["demo", "--no-fixes"]).output().unwrap();
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("empty"), "{again:?}");
        let too_far = patrol(&dir, &url).args(["demo", "--past-days", "31"]).output().unwrap();
        assert!(!too_far.status.success());
        assert!(String::from_utf8_lossy(&too_far.stderr).contains("--past-days"), "{too_far:?}");

        let collection = json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"code": "K99", "name": "New kiosk", "kind": "kiosk", "unit": "PS01"},
             "geometry": {"type": "Point", "coordinates": [108.951, 34.221]}},
            {"type": "Feature", "properties": {"code": "R01", "name": "Route 1, redrawn", "kind": "route", "unit": "PS01"},
             "geometry": {"type": "LineString", "coordinates": [[108.95, 34.22], [108.97, 34.22]]}},
            {"type": "Feature", "properties": {"code": "K98", "name": "Nowhere", "kind": "kiosk", "unit": "NOPE"},
             "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}},
        ]});
        std::fs::write(dir.join("posts.geojson"), collection.to_string()).unwrap();
        let out = patrol(&dir, &url).args(["import", "posts", "posts.geojson", "--datum", "gcj02"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "a rejected feature fails the command: {out:?}");
        assert!(text.contains("1 created, 1 updated, 1 rejected"), "{text}");
        assert!(text.contains("feature 2 (K98): properties.unit"), "{text}");
        let out = patrol(&dir, &url).args(["import", "posts", "posts.geojson", "--datum", "nad27"]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--datum"), "{out:?}");
        let out = patrol(&dir, &url).args(["import", "posts", "missing.geojson"]).output().unwrap();
        assert!(!out.status.success());
    })
    .await
    .unwrap();
}

#[test]
fn coverage_rebuild_recomputes_the_demo_fortnight() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/p.db?mode=rwc", dir.path().display());
    assert!(
        patrol(dir.path(), &url)
            .args(["demo", "--past-days", "7", "--no-fixes"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let from = (chrono::Utc::now() - chrono::Duration::days(8)).to_rfc3339();
    let to = chrono::Utc::now().to_rfc3339();
    let out = patrol(dir.path(), &url)
        .args(["coverage", "rebuild", "--from", &from, "--to", &to])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rebuilt the coverage of") && !text.contains("of 0 shifts"),
        "{text}"
    );
    let out = patrol(dir.path(), &url)
        .args(["coverage", "rebuild", "--from", &to, "--to", &from])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
