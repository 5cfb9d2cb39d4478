//! Alerts end to end: each kind raised, kept as one alert however often the rules run,
//! and resolved when its condition clears; acknowledging; scope; and, on PostgreSQL, two
//! server processes evaluating once.

use std::time::Duration as StdDuration;

use api_tests::{Org, TestServer, id, on_postgres};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use patrol_server::alerts::{Evaluation, evaluate};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const LAT: f64 = 34.22;
const LON: f64 = 108.95;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Settings that make every rule quick to trip; the evaluator runs when a test says so
/// (or at once after an SOS).
fn quick(s: &mut patrol_server::Settings) {
    s.alert_interval = StdDuration::from_secs(3600);
    s.silent_after_min = 1;
    s.route_idle_min = 1;
    s.sos_hold_min = 1;
}

struct World {
    s: TestServer,
    org: Org,
}

impl World {
    async fn new() -> World {
        let s = TestServer::start_with(quick).await;
        let org = Org::create(&s).await;
        World { s, org }
    }

    async fn post(&self, code: &str, kind: &str, unit: Uuid, extra: Value) -> Uuid {
        let geometry = if kind == "route" {
            json!({"type": "LineString", "coordinates": [[LON, LAT], [LON + 0.01, LAT]]})
        } else {
            json!({"type": "Point", "coordinates": [LON, LAT]})
        };
        let mut body = json!({"code": code, "name": code, "kind": kind, "unit_id": unit, "geometry": geometry});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        id(&self.s.post("/api/v1/posts", &self.org.admin, body).await)
    }

    /// A shift of these members that began `began_min` minutes ago and runs 2 more hours.
    async fn shift(&self, post: Uuid, began_min: i64, members: &[&str]) -> Uuid {
        let now = Utc::now();
        let ids: Vec<Uuid> = members.iter().map(|m| self.org.members[*m]).collect();
        id(&self
            .s
            .post(
                "/api/v1/shifts",
                &self.org.admin,
                json!({"post_id": post, "starts_at": iso(now - Duration::minutes(began_min)),
                       "ends_at": iso(now + Duration::hours(2)), "member_ids": ids}),
            )
            .await)
    }

    async fn fix(&self, who: &str, extra: Value) {
        let token = self.s.token(who).await;
        let mut body = json!({"client_id": Uuid::new_v4(), "recorded_at": iso(Utc::now()),
                              "lat": LAT, "lon": LON + 0.001, "accuracy_m": 5.0});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = self.s.post("/api/v1/checkins", &token, body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    }

    async fn evaluate(&self) -> Evaluation {
        evaluate(&self.s.state).await.expect("evaluation succeeds")
    }

    async fn alerts(&self, token: &str, query: &str) -> Vec<Value> {
        let a = self.s.get(&format!("/api/v1/alerts?{query}"), token).await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        a.body["items"].as_array().unwrap().clone()
    }

    /// The admin's alerts of one kind.
    async fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.alerts(&self.org.admin, &format!("kind={kind}")).await
    }
}

fn states(alerts: &[Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstaffed_kiosk_and_a_silent_member_are_raised_once_and_resolved() {
    let w = World::new().await;
    let kiosk = w
        .post(
            "K1",
            "kiosk",
            w.org.street1,
            json!({"arrival_grace_min": 0, "staffing": "rostered"}),
        )
        .await;
    w.shift(kiosk, 30, &["kiosk1"]).await;
    w.evaluate().await;
    for _ in 0..2 {
        // Evaluating again raises nothing more.
        assert_eq!(
            w.evaluate().await,
            Evaluation::Done {
                raised: 0,
                resolved: 0
            }
        );
    }
    let unstaffed = w.of_kind("post_unstaffed").await;
    assert_eq!(states(&unstaffed), ["open"], "{unstaffed:#?}");
    let a = &unstaffed[0];
    assert_eq!(a["post_id"], kiosk.to_string());
    assert_eq!(a["post_code"], "K1");
    assert_eq!(a["unit_id"], w.org.street1.to_string());
    assert!(a["shift_id"].is_string());
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .starts_with("K1 has 0 of 1 required on duty since "),
        "{a}"
    );
    for field in [
        "acked_at",
        "acked_by",
        "ack_note",
        "resolved_at",
        "position",
        "member_id",
    ] {
        assert!(a[field].is_null(), "{field}: {a}");
    }
    let silent = w.of_kind("member_silent").await;
    assert_eq!(states(&silent), ["open"]);
    assert_eq!(silent[0]["member_id"], w.org.members["kiosk1"].to_string());

    // The officer arrives: both clear.
    w.fix("kiosk1", json!({"lon": LON})).await;
    assert_eq!(
        w.evaluate().await,
        Evaluation::Done {
            raised: 0,
            resolved: 2
        }
    );
    for kind in ["post_unstaffed", "member_silent"] {
        let resolved = w.of_kind(kind).await;
        assert_eq!(states(&resolved), ["resolved"], "{kind}");
        assert!(resolved[0]["resolved_at"].is_string());
    }
    // A new lapse is a new alert (the resolved one stays as it was).
    assert!(w.alerts(&w.org.admin, "state=open").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_route_is_raised_and_cleared_by_a_fix_on_it() {
    let w = World::new().await;
    let route = w.post("R1", "route", w.org.street1, json!({})).await;
    w.shift(route, 30, &["officer1"]).await;
    w.evaluate().await;
    w.evaluate().await;
    let idle = w.of_kind("route_idle").await;
    assert_eq!(states(&idle), ["open"]);
    assert_eq!(idle[0]["post_code"], "R1");
    w.fix("officer1", json!({})).await;
    w.evaluate().await;
    assert_eq!(states(&w.of_kind("route_idle").await), ["resolved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sos_is_raised_at_once_with_its_position_and_resolves_after_its_hold() {
    let w = World::new().await;
    // Recorded 45 s ago, so that it falls out of the one-minute hold within seconds.
    let sent = Utc::now() - Duration::seconds(45);
    w.fix(
        "vol1",
        json!({"kind": "sos", "recorded_at": iso(sent), "lat": 34.23, "lon": 108.96}),
    )
    .await;
    // No evaluation is asked for: the SOS wakes the evaluator.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(30);
    let sos = loop {
        let found = w.of_kind("sos").await;
        if !found.is_empty() {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SOS alert was raised"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    };
    assert_eq!(states(&sos), ["open"]);
    assert_eq!(sos[0]["member_id"], w.org.members["vol1"].to_string());
    assert_eq!(sos[0]["position"], json!({"lat": 34.23, "lon": 108.96}));
    assert_eq!(sos[0]["unit_id"], w.org.community1.to_string());
    // The volunteer sees it too: it is about them.
    let vol = w.s.token("vol1").await;
    assert_eq!(w.alerts(&vol, "kind=sos").await.len(), 1);
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        w.evaluate().await;
        if states(&w.of_kind("sos").await) == ["resolved"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SOS was not resolved"
        );
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_gap_ahead_is_raised_and_cleared_by_rostering() {
    let w = World::new().await;
    let kiosk = w
        .post("K9", "kiosk", w.org.street1, json!({"staffing": "24x7"}))
        .await;
    w.evaluate().await;
    w.evaluate().await;
    let gap = w.of_kind("roster_gap").await;
    assert_eq!(states(&gap), ["open"]);
    assert_eq!(gap[0]["post_id"], kiosk.to_string());
    assert!(
        gap[0]["message"]
            .as_str()
            .unwrap()
            .contains("0 of 1 required rostered")
    );
    let now = Utc::now();
    id(&w
        .s
        .post(
            "/api/v1/shifts",
            &w.org.admin,
            json!({"post_id": kiosk, "starts_at": iso(now - Duration::hours(1)),
                   "ends_at": iso(now + Duration::hours(25)), "member_ids": [w.org.members["kiosk1"]]}),
        )
        .await);
    w.evaluate().await;
    assert_eq!(states(&w.of_kind("roster_gap").await), ["resolved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_locations_on_duty_are_suspected_until_the_duty_ends() {
    let w = World::new().await;
    let area = w
        .post(
            "K2",
            "kiosk",
            w.org.street1,
            json!({"staffing": "rostered"}),
        )
        .await;
    let shift = w.shift(area, 30, &["vol1"]).await;
    w.fix("vol1", json!({"mock": true})).await;
    w.evaluate().await;
    w.evaluate().await;
    let spoof = w.of_kind("spoof_suspected").await;
    assert_eq!(states(&spoof), ["open"]);
    assert_eq!(spoof[0]["member_id"], w.org.members["vol1"].to_string());
    assert_eq!(spoof[0]["shift_id"], shift.to_string());
    // The shift ends: the member is off duty and the alert clears.
    let a =
        w.s.patch(
            &format!("/api/v1/shifts/{shift}"),
            &w.org.admin,
            json!({"ends_at": iso(Utc::now() - Duration::seconds(1))}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    w.evaluate().await;
    assert_eq!(states(&w.of_kind("spoof_suspected").await), ["resolved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_needs_a_note_an_open_alert_and_scope() {
    let w = World::new().await;
    w.post("K9", "kiosk", w.org.street1, json!({"staffing": "24x7"}))
        .await;
    w.evaluate().await;
    let alert = w.of_kind("roster_gap").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/alerts/{alert}/ack");
    let cmd1 = w.s.token("cmd1").await;
    let cmd1_id = w.org.members["cmd1"].to_string();
    w.s.post(&path, &cmd1, json!({}))
        .await
        .assert_problem(422, "validation_failed");
    w.s.post(&path, &cmd1, json!({"note": "   "}))
        .await
        .assert_problem(422, "validation_failed");
    w.s.post(&path, &cmd1, json!({"note": "x".repeat(1001)}))
        .await
        .assert_problem(422, "validation_failed");
    w.s.post(&path, &cmd1, json!({"note": "ok", "by": "me"}))
        .await
        .assert_problem(422, "validation_failed");
    let officer = w.s.token("officer1").await;
    w.s.post(&path, &officer, json!({"note": "seen"}))
        .await
        .assert_problem(403, "forbidden");
    let cmd2 = w.s.token("cmd2").await;
    w.s.post(&path, &cmd2, json!({"note": "seen"}))
        .await
        .assert_problem(404, "not_found");
    w.s.post(
        &format!("/api/v1/alerts/{}/ack", Uuid::now_v7()),
        &cmd1,
        json!({"note": "seen"}),
    )
    .await
    .assert_problem(404, "not_found");
    w.s.post("/api/v1/alerts/nope/ack", &cmd1, json!({"note": "seen"}))
        .await
        .assert_problem(422, "validation_failed");

    let before = Utc::now();
    let a =
        w.s.post(&path, &cmd1, json!({"note": "  night shift called in  "}))
            .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["state"], "acknowledged");
    assert_eq!(a.body["acked_by"], cmd1_id);
    assert_eq!(a.body["ack_note"], "night shift called in");
    let acked_at: DateTime<Utc> = a.body["acked_at"].as_str().unwrap().parse().unwrap();
    assert!(acked_at >= before - Duration::seconds(1));
    w.s.post(&path, &cmd1, json!({"note": "again"}))
        .await
        .assert_problem(409, "conflict");
    // `open` lists only alerts not acknowledged.
    assert!(w.alerts(&cmd1, "state=open").await.is_empty());
    assert_eq!(w.alerts(&cmd1, "state=acknowledged").await.len(), 1);
    // An acknowledged alert is still one alert: the rules raise nothing new for it.
    assert_eq!(
        w.evaluate().await,
        Evaluation::Done {
            raised: 0,
            resolved: 0
        }
    );
    assert_eq!(w.of_kind("roster_gap").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_scoped_filtered_and_paged() {
    let w = World::new().await;
    let k1 = w
        .post("K1", "kiosk", w.org.street1, json!({"staffing": "24x7"}))
        .await;
    let k2 = w
        .post("K2", "kiosk", w.org.street2, json!({"staffing": "24x7"}))
        .await;
    let route = w.post("R1", "route", w.org.street1, json!({})).await;
    w.shift(route, 30, &["officer1"]).await;
    w.evaluate().await;
    let all = w.alerts(&w.org.admin, "").await;
    let codes = |items: &[Value]| -> Vec<String> {
        let mut c: Vec<String> = items
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    a["kind"].as_str().unwrap(),
                    a["post_code"].as_str().unwrap_or("-")
                )
            })
            .collect();
        c.sort();
        c
    };
    assert_eq!(
        codes(&all),
        [
            "member_silent:-",
            "roster_gap:K1",
            "roster_gap:K2",
            "route_idle:R1"
        ]
    );
    let cmd1 = w.s.token("cmd1").await;
    assert_eq!(
        codes(&w.alerts(&cmd1, "").await),
        ["member_silent:-", "roster_gap:K1", "route_idle:R1"]
    );
    let cmd2 = w.s.token("cmd2").await;
    assert_eq!(codes(&w.alerts(&cmd2, "").await), ["roster_gap:K2"]);
    // Officers see only what is about themselves.
    let officer1 = w.s.token("officer1").await;
    assert_eq!(codes(&w.alerts(&officer1, "").await), ["member_silent:-"]);
    let officer2 = w.s.token("officer2").await;
    assert!(w.alerts(&officer2, "").await.is_empty());

    assert_eq!(
        codes(&w.alerts(&w.org.admin, &format!("post_id={k2}")).await),
        ["roster_gap:K2"]
    );
    assert_eq!(
        w.alerts(&w.org.admin, &format!("post_id={k1}&kind=route_idle"))
            .await
            .len(),
        0
    );
    let later = iso(Utc::now() + Duration::minutes(1)).replace('+', "%2B");
    assert!(
        w.alerts(&w.org.admin, &format!("from={later}"))
            .await
            .is_empty()
    );
    assert_eq!(
        w.alerts(&w.org.admin, &format!("to={later}")).await.len(),
        4
    );

    // Newest first, in pages.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let a =
            w.s.get(
                &format!("/api/v1/alerts?limit=3&cursor={cursor}"),
                &w.org.admin,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        for item in a.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 4);

    for bad in [
        "state=closed",
        "kind=fire",
        "limit=0",
        "cursor=!!",
        "post_id=x",
        "from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
    ] {
        w.s.get(&format!("/api/v1/alerts?{bad}"), &w.org.admin)
            .await
            .assert_problem(422, "validation_failed");
    }
    w.s.send(reqwest::Method::GET, "/api/v1/alerts", None, None)
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgresql_evaluate_once() {
    if !on_postgres() {
        eprintln!(
            "skipped: two processes share a database only on PostgreSQL (set PATROL_TEST_DATABASE_URL)"
        );
        return;
    }
    let w = World::new().await;
    let b = w.s.start_another(quick).await;
    for (i, street) in [w.org.street1, w.org.street2, w.org.street1]
        .into_iter()
        .enumerate()
    {
        w.post(
            &format!("K{i}"),
            "kiosk",
            street,
            json!({"staffing": "24x7"}),
        )
        .await;
    }
    let mut raised = 0;
    let mut skipped = 0;
    for _ in 0..5 {
        let (x, y) = tokio::join!(evaluate(&w.s.state), evaluate(&b.state));
        for e in [x.unwrap(), y.unwrap()] {
            match e {
                Evaluation::Done { raised: r, .. } => raised += r,
                Evaluation::Skipped => skipped += 1,
            }
        }
    }
    // Each server also evaluated once when it started, so count what is stored: every
    // gap raised exactly once, whichever process raised it.
    assert!(
        raised <= 3,
        "raised {raised} ({skipped} evaluations skipped)"
    );
    let all = w.alerts(&w.org.admin, "kind=roster_gap").await;
    let mut posts: Vec<&str> = all.iter().map(|a| a["post_id"].as_str().unwrap()).collect();
    posts.sort();
    posts.dedup();
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(posts.len(), 3, "one alert per post: {all:#?}");
    assert_eq!(states(&all), ["open"; 3]);
    b.stop().await;
}

/// A webhook receiver: answers the first request 503 and the rest 200, and hands on each
/// request's headers (lower-cased) and body.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut served = 0;
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + length {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                break (head, buf[end + 4..].to_vec());
            };
            served += 1;
            let status = if served == 1 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = conn
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            let _ = tx.send((head, body)).await;
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_each_change_signed_and_retried() {
    let (url, mut received) = webhook_receiver().await;
    let s = TestServer::start_with(|st| {
        quick(st);
        st.webhook_url = Some(url);
        st.webhook_secret = Some(patrol_server::settings::Secret("hook-secret".into()));
    })
    .await;
    let org = Org::create(&s).await;
    let w = World { s, org };
    w.post("K9", "kiosk", w.org.street1, json!({"staffing": "24x7"}))
        .await;
    w.evaluate().await;
    let wait = StdDuration::from_secs(30);
    let mut bodies = Vec::new();
    // The first attempt is refused; the change comes again.
    for _ in 0..2 {
        let (head, body) = tokio::time::timeout(wait, received.recv())
            .await
            .expect("the webhook was called")
            .unwrap();
        assert!(head.starts_with("post /hook "), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let timestamp = head
            .lines()
            .find_map(|l| l.strip_prefix("x-patrol-timestamp: "))
            .expect("a timestamp");
        let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
        assert!((0..60).contains(&age), "{head}");
        let signature = patrol_server::webhook::signature(
            b"hook-secret",
            &patrol_server::webhook::signed_payload(timestamp, &body),
        );
        assert!(
            head.contains(&format!("x-patrol-signature: {signature}")),
            "{head}"
        );
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1], "the retry sends the same change");
    let change: Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(change["action"], "raised");
    assert_eq!(change["alert"]["kind"], "roster_gap");
    assert_eq!(change["alert"]["post_code"], "K9");
}
