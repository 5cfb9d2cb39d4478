//! Crash test of the real `patrol` binary: several clients post fixes (single ones and
//! small batches) while the server is killed with SIGKILL at a random moment; it is then
//! restarted on the same database, and every fix it acknowledged must be stored exactly
//! once, with the id it answered. Clients also retry, after the restart, some fixes whose
//! answer they lost and some that were acknowledged (those must answer "duplicate" with
//! the same id).
//!
//! Runs on SQLite, or on PostgreSQL when `PATROL_TEST_DATABASE_URL` is set (see
//! `api_tests::fresh_database`).
//!
//! Environment:
//! * `PATROL_CRASH_CYCLES=N` runs N kill/restart cycles instead of the default 20.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IteratorRandom};
use serde_json::{Value, json};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_patrol");
const PASSWORD: &str = "crash test password";
/// Fixed, so that access tokens stay valid across restarts.
const JWT_SECRET: &str = "crash-test-signing-secret-0123456789";
/// Concurrent clients, one member each.
const CLIENTS: usize = 4;
const DEFAULT_CYCLES: usize = 20;
/// How long the server may take to answer `/healthz` after a start.
const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed server may take to be gone, and clients to notice.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fixes retried per kind (lost answer / acknowledged) by a retrying client.
const RETRIES_PER_KIND: usize = 3;

fn cycles() -> usize {
    match std::env::var("PATROL_CRASH_CYCLES") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PATROL_CRASH_CYCLES={v:?} is not a number")),
        _ => DEFAULT_CYCLES,
    }
}

fn patrol(dir: &Path, url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PATROL_DATABASE_URL", url)
        .env("PATROL_JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a short `patrol` command (migrate, user add) to completion, with a time limit.
async fn run_to_end(cmd: Command, what: &str) {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`patrol {what}` did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("`patrol {what}` could not run: {e}"));
    assert!(
        out.status.success(),
        "`patrol {what}` failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `patrol serve`. Dropping it SIGKILLs the process (so a failing test never
/// leaves a server behind) and, when the test is panicking, prints the end of its log.
struct Server {
    child: Child,
    log: PathBuf,
    base: String,
}

impl Server {
    /// Starts `patrol serve` on `port` and waits until `/healthz` answers. If the port was
    /// taken meanwhile, picks another one (written back to `port`).
    async fn start(dir: &Path, url: &str, port: &mut u16, tag: &str) -> Server {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        for attempt in 0..5 {
            let log = dir.join(format!("serve-{tag}-{attempt}.log"));
            let file = File::create(&log).unwrap();
            let child = patrol(dir, url)
                .arg("serve")
                .env("PATROL_BIND", format!("127.0.0.1:{port}"))
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("spawn patrol serve");
            let mut server = Server {
                child,
                log,
                base: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + UP_TIMEOUT;
            loop {
                let health = probe.get(format!("{}/healthz", server.base)).send().await;
                if health.is_ok_and(|r| r.status().is_success()) {
                    return server;
                }
                if let Some(status) = server.child.try_wait().unwrap() {
                    let text = std::fs::read_to_string(&server.log).unwrap_or_default();
                    if text.contains("in use") {
                        eprintln!("port {port} is taken; trying another");
                        *port = free_port();
                        break;
                    }
                    panic!(
                        "patrol serve ({tag}) exited with {status} before answering /healthz:\n{text}"
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "patrol serve ({tag}) did not answer /healthz within {UP_TIMEOUT:?}; log:\n{}",
                    tail(&server.log, 40)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("could not find a free port for patrol serve");
    }

    /// SIGKILL (`Child::kill` is SIGKILL on Unix), then waits until the process is gone.
    async fn kill(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "patrol serve had already exited ({status}) before it was killed; log:\n{}",
                tail(&self.log, 40)
            );
        }
        self.child.kill().expect("SIGKILL patrol serve");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "patrol serve did not exit after SIGKILL"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- end of {} ---\n{}",
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Sends JSON and reads the whole answer. `Err` means no (complete) answer arrived.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

struct Member {
    name: String,
    id: Uuid,
    token: String,
}

async fn login(client: &reqwest::Client, base: &str, username: &str) -> Member {
    let (status, body) = call(
        client,
        reqwest::Method::POST,
        &format!("{base}/api/v1/auth/login"),
        None,
        Some(&json!({"username": username, "password": PASSWORD})),
    )
    .await
    .expect("login answered");
    assert_eq!(status, 200, "login of {username}: {body}");
    Member {
        name: username.to_owned(),
        id: body["member"]["id"].as_str().unwrap().parse().unwrap(),
        token: body["access_token"].as_str().unwrap().to_owned(),
    }
}

/// An acknowledged fix (or one seen stored after its answer was lost).
struct Ack {
    id: Uuid,
    fix: Value,
    cycle: usize,
    how: &'static str,
}

/// What one client knows about its fixes, across cycles.
#[derive(Default)]
struct Ledger {
    /// client_id → the stored fix's id, as the server answered it.
    acked: HashMap<Uuid, Ack>,
    /// Sent, but no answer came (or a 5xx): may or may not be stored. client_id → (fix, cycle).
    lost: HashMap<Uuid, (Value, usize)>,
    acked_total: usize,
    lost_total: usize,
    lost_seen_stored: usize,
    unavailable: usize,
    retried_acked: usize,
    retried_lost: usize,
}

/// Per-cycle counts of one client.
#[derive(Default, Clone, Copy)]
struct CycleStats {
    requests: usize,
    acked: usize,
    lost: usize,
    unavailable: usize,
    retried_acked: usize,
    retried_lost: usize,
    retried_lost_stored: usize,
}

impl std::ops::AddAssign for CycleStats {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.acked += o.acked;
        self.lost += o.lost;
        self.unavailable += o.unavailable;
        self.retried_acked += o.retried_acked;
        self.retried_lost += o.retried_lost;
        self.retried_lost_stored += o.retried_lost_stored;
    }
}

/// `n` new fixes; a batch's fixes are one second apart, all within the last hour.
fn new_fixes(rng: &mut StdRng, n: usize) -> Vec<Value> {
    let start = Utc::now()
        - chrono::Duration::milliseconds(rng.gen_range(30_000..3_500_000))
        - chrono::Duration::seconds(n as i64);
    (0..n)
        .map(|i| {
            let at = start + chrono::Duration::seconds(i as i64);
            json!({
                "client_id": Uuid::new_v4(),
                "recorded_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "lat": 34.22 + rng.gen_range(-0.01..0.01),
                "lon": 108.95 + rng.gen_range(-0.01..0.01),
                "accuracy_m": 5,
            })
        })
        .collect()
}

fn client_id(fix: &Value) -> Uuid {
    fix["client_id"].as_str().unwrap().parse().unwrap()
}

/// What the server said about one fix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Said {
    Created(Uuid),
    Duplicate(Uuid),
    /// A 5xx for the whole request: nothing acknowledged.
    Unavailable,
}

/// Reads the answer to `fixes` sent alone (`single`) or as one batch.
fn read_answer(
    fixes: &[Value],
    single: bool,
    status: u16,
    answer: &Value,
) -> Result<Vec<Said>, String> {
    let uuid = |v: &Value| v.as_str().and_then(|s| s.parse::<Uuid>().ok());
    if status >= 500 {
        return Ok(vec![Said::Unavailable; fixes.len()]);
    }
    if single {
        let id = uuid(&answer["id"]).ok_or_else(|| format!("{status} without an id: {answer}"))?;
        if uuid(&answer["client_id"]) != Some(client_id(&fixes[0])) {
            return Err(format!("{status} for another client_id: {answer}"));
        }
        return match status {
            201 => Ok(vec![Said::Created(id)]),
            200 => Ok(vec![Said::Duplicate(id)]),
            _ => Err(format!("unexpected {status}: {answer}")),
        };
    }
    if status != 200 {
        return Err(format!("unexpected {status} for a batch: {answer}"));
    }
    let results = answer["results"]
        .as_array()
        .ok_or_else(|| format!("batch answer without results: {answer}"))?;
    if results.len() != fixes.len() {
        return Err(format!(
            "{} results for {} fixes: {answer}",
            results.len(),
            fixes.len()
        ));
    }
    fixes
        .iter()
        .zip(results)
        .map(|(fix, r)| {
            if uuid(&r["client_id"]) != Some(client_id(fix)) {
                return Err(format!("result out of order: {r} for {fix}"));
            }
            let id = uuid(&r["id"]);
            match (r["status"].as_str(), id) {
                (Some("created"), Some(id)) => Ok(Said::Created(id)),
                (Some("duplicate"), Some(id)) => Ok(Said::Duplicate(id)),
                _ => Err(format!("item not stored: {r} (fix {fix})")),
            }
        })
        .collect()
}

/// One client's traffic of one cycle: posts new fixes until a request fails (the server
/// was killed) or `stop` is set.
async fn traffic(
    base: String,
    member: Arc<Member>,
    mut ledger: Ledger,
    stop: Arc<AtomicBool>,
    cycle: usize,
) -> (Ledger, CycleStats) {
    let client = http_client();
    let mut rng = StdRng::from_entropy();
    let mut stats = CycleStats::default();
    let url = format!("{base}/api/v1/checkins");
    while !stop.load(Ordering::SeqCst) {
        let n = if rng.gen_bool(0.5) {
            1
        } else {
            rng.gen_range(2..=20)
        };
        let fixes = new_fixes(&mut rng, n);
        let body = if n == 1 {
            fixes[0].clone()
        } else {
            json!({ "checkins": fixes })
        };
        stats.requests += 1;
        let answer = call(
            &client,
            reqwest::Method::POST,
            &url,
            Some(&member.token),
            Some(&body),
        )
        .await;
        let Ok((status, answer)) = answer else {
            // No answer: the server is gone. These may or may not be stored.
            stats.lost += n;
            ledger.lost_total += n;
            for fix in fixes {
                ledger.lost.insert(client_id(&fix), (fix, cycle));
            }
            break;
        };
        let said = read_answer(&fixes, n == 1, status, &answer).unwrap_or_else(|e| {
            panic!(
                "cycle {cycle}, member {}: POST of new fixes: {e}",
                member.name
            )
        });
        for (fix, said) in fixes.into_iter().zip(said) {
            let cid = client_id(&fix);
            match said {
                Said::Created(id) => {
                    stats.acked += 1;
                    ledger.acked_total += 1;
                    let how = if n == 1 {
                        "single 201"
                    } else {
                        "batch created"
                    };
                    ledger.acked.insert(
                        cid,
                        Ack {
                            id,
                            fix,
                            cycle,
                            how,
                        },
                    );
                }
                Said::Duplicate(id) => panic!(
                    "cycle {cycle}, member {}: new client_id {cid} answered as a duplicate of {id}",
                    member.name
                ),
                Said::Unavailable => {
                    stats.unavailable += 1;
                    ledger.unavailable += 1;
                    ledger.lost.insert(cid, (fix, cycle));
                }
            }
        }
    }
    (ledger, stats)
}

/// After a restart: sends again a few fixes whose answer was lost and a few acknowledged
/// ones, with the same client_id and content, alone or as one batch.
async fn retry(
    base: &str,
    member: &Member,
    ledger: &mut Ledger,
    cycle: usize,
    stats: &mut CycleStats,
) {
    let client = http_client();
    let mut rng = StdRng::from_entropy();
    let mut lost: Vec<Uuid> = ledger.lost.keys().copied().collect();
    lost.sort();
    let mut acked: Vec<Uuid> = ledger.acked.keys().copied().collect();
    acked.sort();
    let mut picked: Vec<(Value, bool)> = Vec::new();
    for cid in lost.into_iter().choose_multiple(&mut rng, RETRIES_PER_KIND) {
        picked.push((ledger.lost[&cid].0.clone(), false));
    }
    for cid in acked
        .into_iter()
        .choose_multiple(&mut rng, RETRIES_PER_KIND)
    {
        picked.push((ledger.acked[&cid].fix.clone(), true));
    }
    if picked.is_empty() {
        return;
    }
    let as_batch = picked.len() >= 2 && rng.gen_bool(0.5);
    let groups: Vec<Vec<(Value, bool)>> = if as_batch {
        vec![picked]
    } else {
        picked.into_iter().map(|p| vec![p]).collect()
    };
    let url = format!("{base}/api/v1/checkins");
    for group in groups {
        let fixes: Vec<Value> = group.iter().map(|(f, _)| f.clone()).collect();
        let single = fixes.len() == 1;
        let body = if single {
            fixes[0].clone()
        } else {
            json!({ "checkins": fixes })
        };
        let (status, answer) = call(
            &client,
            reqwest::Method::POST,
            &url,
            Some(&member.token),
            Some(&body),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cycle {cycle}, member {}: retry got no answer from the restarted server: {e}",
                member.name
            )
        });
        let said = read_answer(&fixes, single, status, &answer).unwrap_or_else(|e| {
            panic!(
                "cycle {cycle}, member {}: retry ({}) of {}: {e}",
                member.name,
                if single { "single" } else { "batch" },
                body
            )
        });
        for ((fix, was_acked), said) in group.into_iter().zip(said) {
            let cid = client_id(&fix);
            if was_acked {
                stats.retried_acked += 1;
                ledger.retried_acked += 1;
                let ack = &ledger.acked[&cid];
                assert_eq!(
                    said,
                    Said::Duplicate(ack.id),
                    "cycle {cycle}, member {}: retry of client_id {cid}, acknowledged in cycle {} \
                     ({}) with id {}, answered {said:?} (status {status}): {answer}",
                    member.name,
                    ack.cycle,
                    ack.how,
                    ack.id
                );
            } else {
                stats.retried_lost += 1;
                ledger.retried_lost += 1;
                let (id, how) = match said {
                    Said::Created(id) => (id, "retry created"),
                    Said::Duplicate(id) => {
                        stats.retried_lost_stored += 1;
                        ledger.lost_seen_stored += 1;
                        (id, "retry duplicate")
                    }
                    Said::Unavailable => panic!(
                        "cycle {cycle}, member {}: the restarted server answered {status} to a retry: {answer}",
                        member.name
                    ),
                };
                ledger.lost.remove(&cid);
                ledger.acked.insert(
                    cid,
                    Ack {
                        id,
                        fix,
                        cycle,
                        how,
                    },
                );
            }
        }
    }
}

/// A fix as `GET /checkins` lists it (the fields checked here).
#[derive(serde::Deserialize, Debug)]
struct Listed {
    id: Uuid,
    client_id: Uuid,
    member_id: Uuid,
    recorded_at: DateTime<Utc>,
    lat: f64,
    lon: f64,
    accuracy_m: f64,
}

#[derive(serde::Deserialize)]
struct ListPage {
    items: Vec<Listed>,
    next_cursor: Option<String>,
}

fn same_content(sent: &Value, stored: &Listed) -> bool {
    // Within 1e-9: serde_json's default float parsing may be one ulp off the shortest
    // printed form, on either side of the wire.
    let close = |k: &str, b: f64| sent[k].as_f64().is_some_and(|a| (a - b).abs() <= 1e-9);
    close("lat", stored.lat)
        && close("lon", stored.lon)
        && close("accuracy_m", stored.accuracy_m)
        && sent["recorded_at"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|t| t == stored.recorded_at)
}

/// Reads every stored fix of the member through the API and checks it against the ledger:
/// each acknowledged fix once, with its id; nothing twice; nothing the client never sent.
/// Fixes whose answer was lost and that are stored join the acknowledged ones (from now on
/// they must stay). Returns the stored (client_id, id) pairs.
async fn verify(
    base: String,
    member: Arc<Member>,
    mut ledger: Ledger,
    cycle: usize,
) -> (Ledger, HashMap<Uuid, Uuid>) {
    let client = http_client();
    let mut stored: HashMap<Uuid, Listed> = HashMap::new();
    let mut ids: HashSet<Uuid> = HashSet::new();
    let mut problems: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 10_000, "paging does not end");
        let mut url = format!("{base}/api/v1/checkins?member_id={}&limit=1000", member.id);
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let context = |e: &dyn std::fmt::Display| {
            format!("cycle {cycle}, member {}: GET {url}: {e}", member.name)
        };
        let res = client
            .get(&url)
            .bearer_auth(&member.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}", context(&e)));
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{}", context(&e)));
        assert_eq!(status, 200, "{}", context(&String::from_utf8_lossy(&bytes)));
        let page: ListPage =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}", context(&e)));
        for item in page.items {
            if item.member_id != member.id {
                problems.push(format!("fix of another member listed: {item:?}"));
            }
            if !ids.insert(item.id) {
                problems.push(format!(
                    "id {} listed twice (client_id {})",
                    item.id, item.client_id
                ));
            }
            let (cid, id) = (item.client_id, item.id);
            if let Some(first) = stored.insert(cid, item) {
                problems.push(format!(
                    "client_id {cid} stored twice: ids {} and {id}",
                    first.id
                ));
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }

    for (cid, item) in &stored {
        let id = item.id;
        if let Some(ack) = ledger.acked.get(cid) {
            if ack.id != id {
                problems.push(format!(
                    "client_id {cid}, acknowledged in cycle {} ({}) with id {}, is stored with id {id}",
                    ack.cycle, ack.how, ack.id
                ));
            }
            if !same_content(&ack.fix, item) {
                problems.push(format!(
                    "client_id {cid}: sent {} but stored {item:?}",
                    ack.fix
                ));
            }
        } else if let Some((fix, lost_in)) = ledger.lost.remove(cid) {
            if !same_content(&fix, item) {
                problems.push(format!("client_id {cid}: sent {fix} but stored {item:?}"));
            }
            ledger.lost_seen_stored += 1;
            ledger.acked.insert(
                *cid,
                Ack {
                    id,
                    fix,
                    cycle: lost_in,
                    how: "answer lost, found stored",
                },
            );
        } else {
            problems.push(format!(
                "client_id {cid} is stored (id {id}) but this client never sent it: {item:?}"
            ));
        }
    }
    let mut missing: Vec<(&Uuid, &Ack)> = ledger
        .acked
        .iter()
        .filter(|(cid, _)| !stored.contains_key(cid))
        .collect();
    missing.sort_by_key(|(_, a)| (a.cycle, a.id));
    for (cid, ack) in missing {
        problems.push(format!(
            "MISSING: client_id {cid}, acknowledged in cycle {} ({}) with id {}, is not stored; fix {}",
            ack.cycle, ack.how, ack.id, ack.fix
        ));
    }
    if !problems.is_empty() {
        panic!(
            "verification after cycle {cycle}, member {} ({}): {} problem(s), {} fixes listed, {} acknowledged:\n{}",
            member.name,
            member.id,
            problems.len(),
            stored.len(),
            ledger.acked.len(),
            problems
                .iter()
                .take(40)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let stored = stored
        .into_iter()
        .map(|(cid, item)| (cid, item.id))
        .collect();
    (ledger, stored)
}

/// Waits for a spawned task; a panic in it goes on here with its own message.
async fn join<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    match tokio::time::timeout(STOP_TIMEOUT, task).await {
        Err(_) => panic!("{what} did not finish within {STOP_TIMEOUT:?}"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("{what} failed: {e}"),
        Ok(Ok(v)) => v,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_fixes_survive_sigkill_exactly_once() {
    let started = Instant::now();
    let cycles = cycles();
    let (url, _db) = api_tests::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    run_to_end(
        {
            let mut c = patrol(dir, &url);
            c.arg("migrate");
            c
        },
        "migrate",
    )
    .await;
    run_to_end(
        {
            let mut c = patrol(dir, &url);
            c.env("PATROL_PASSWORD", PASSWORD)
                .args(["user", "add", "crash0", "--role", "admin"]);
            c
        },
        "user add",
    )
    .await;

    let mut port = free_port();
    let mut server = Server::start(dir, &url, &mut port, "setup").await;
    let client = http_client();
    let admin = login(&client, &server.base, "crash0").await;
    for i in 1..CLIENTS {
        let (status, body) = call(
            &client,
            reqwest::Method::POST,
            &format!("{}/api/v1/members", server.base),
            Some(&admin.token),
            Some(&json!({"username": format!("crash{i}"), "role": "admin", "password": PASSWORD})),
        )
        .await
        .expect("member created");
        assert_eq!(status, 201, "{body}");
    }
    let mut members: Vec<Arc<Member>> = vec![Arc::new(admin)];
    for i in 1..CLIENTS {
        members.push(Arc::new(
            login(&client, &server.base, &format!("crash{i}")).await,
        ));
    }
    drop(client);
    eprintln!(
        "crash test: {cycles} cycles, {CLIENTS} clients, {} (setup {:?})",
        if api_tests::on_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        started.elapsed()
    );

    let mut rng = StdRng::from_entropy();
    let mut ledgers: Vec<Ledger> = (0..CLIENTS).map(|_| Ledger::default()).collect();
    let mut last_stored: Vec<HashMap<Uuid, Uuid>> = vec![HashMap::new(); CLIENTS];
    for cycle in 1..=cycles {
        let cycle_started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = members
            .iter()
            .zip(ledgers.drain(..))
            .map(|(m, l)| {
                tokio::spawn(traffic(
                    server.base.clone(),
                    m.clone(),
                    l,
                    stop.clone(),
                    cycle,
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(rng.gen_range(200..=800));
        tokio::time::sleep(kill_after).await;
        server.kill().await;
        stop.store(true, Ordering::SeqCst);
        let mut stats = CycleStats::default();
        for (i, task) in tasks.into_iter().enumerate() {
            let (ledger, s) = join(task, &format!("cycle {cycle}: client {i}")).await;
            ledgers.push(ledger);
            stats += s;
        }

        let restart = Instant::now();
        drop(server);
        server = Server::start(dir, &url, &mut port, &format!("cycle{cycle}")).await;
        let restart = restart.elapsed();

        // Some clients (half of them, alternating) retry before the check.
        for (i, (member, ledger)) in members.iter().zip(ledgers.iter_mut()).enumerate() {
            if (cycle + i) % 2 == 0 {
                retry(&server.base, member, ledger, cycle, &mut stats).await;
            }
        }

        let verifying = Instant::now();
        let mut stored_total = 0;
        let tasks: Vec<_> = members
            .iter()
            .zip(ledgers.drain(..))
            .map(|(m, l)| tokio::spawn(verify(server.base.clone(), m.clone(), l, cycle)))
            .collect();
        for (i, (member, task)) in members.iter().zip(tasks).enumerate() {
            let (ledger, stored) = join(task, &format!("the check of {}", member.name)).await;
            ledgers.push(ledger);
            // Whatever was seen stored before must still be there, with the same id.
            for (cid, id) in &last_stored[i] {
                assert_eq!(
                    stored.get(cid),
                    Some(id),
                    "cycle {cycle}, member {}: client_id {cid} was stored with id {id} after the previous restart",
                    member.name
                );
            }
            stored_total += stored.len();
            last_stored[i] = stored;
        }
        let verifying = verifying.elapsed();

        let acked: usize = ledgers.iter().map(|l| l.acked.len()).sum();
        let pending: usize = ledgers.iter().map(|l| l.lost.len()).sum();
        let lost_total: usize = ledgers.iter().map(|l| l.lost_total).sum();
        let seen: usize = ledgers.iter().map(|l| l.lost_seen_stored).sum();
        eprintln!(
            "cycle {cycle:>2}/{cycles}: killed after {kill_after:?}, {} requests; +{} acknowledged; \
             {} answers lost ({} total, {} of them found stored, {} never seen stored){}; \
             retries {} acknowledged → same id, {} lost → {} were stored; \
             {stored_total} stored = {acked} known; restart {restart:.0?}, check {verifying:.0?}, cycle {:.0?}",
            stats.requests,
            stats.acked,
            stats.lost,
            lost_total,
            seen,
            pending,
            if stats.unavailable > 0 {
                format!(", {} answered 5xx", stats.unavailable)
            } else {
                String::new()
            },
            stats.retried_acked,
            stats.retried_lost,
            stats.retried_lost_stored,
            cycle_started.elapsed(),
        );
        assert_eq!(stored_total, acked, "cycle {cycle}: stored = known");
    }

    // Finally, the database itself, behind the API: the same rows, nothing else.
    server.kill().await;
    drop(server);
    let db = sea_orm::Database::connect(&url).await.unwrap();
    use sea_orm::EntityTrait;
    let rows = patrol_server::store::fix::Entity::find()
        .all(&db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let mut in_db: HashMap<Uuid, HashMap<Uuid, Uuid>> = HashMap::new();
    for r in &rows {
        let previous = in_db
            .entry(r.member_id)
            .or_default()
            .insert(r.client_id, r.id);
        assert!(
            previous.is_none(),
            "member {} client_id {} twice in the fixes table",
            r.member_id,
            r.client_id
        );
    }
    for (member, stored) in members.iter().zip(&last_stored) {
        assert_eq!(
            in_db.remove(&member.id).unwrap_or_default(),
            *stored,
            "the fixes table differs from what the API listed for {}",
            member.name
        );
    }
    assert!(in_db.is_empty(), "fixes of unknown members: {in_db:?}");

    let acked: usize = ledgers.iter().map(|l| l.acked_total).sum();
    let lost: usize = ledgers.iter().map(|l| l.lost_total).sum();
    let seen: usize = ledgers.iter().map(|l| l.lost_seen_stored).sum();
    let retried: usize = ledgers
        .iter()
        .map(|l| l.retried_acked + l.retried_lost)
        .sum();
    let unavailable: usize = ledgers.iter().map(|l| l.unavailable).sum();
    eprintln!(
        "crash test passed: {cycles} cycles in {:.1?}; {} fixes stored ({acked} acknowledged at once, \
         {lost} answers lost of which {seen} turned out stored, {unavailable} 5xx), {retried} retries",
        started.elapsed(),
        rows.len()
    );
}
