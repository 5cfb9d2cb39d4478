//! Issue 27's hardening, item by item: each test fails on the code before its fix.

use api_tests::{Org, TestServer, id};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Item 13: a squad named like a spreadsheet formula is written so that a spreadsheet
/// shows the name and runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_reports_neutralise_cells_a_spreadsheet_would_run() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let evil = "=HYPERLINK(\"http://evil.example/\",\"open\")";
    id(&s
        .post(
            "/api/v1/teams",
            &org.admin,
            json!({"code": "-SQ1", "name": evil, "kind": "volunteer_squad",
                "unit_id": org.community1, "member_ids": [org.members["vol1"]]}),
        )
        .await);
    let csv = s
        .get("/api/v1/reports/volunteers?format=csv", &org.admin)
        .await;
    assert_eq!(csv.status, StatusCode::OK, "{csv:#?}");
    let row = csv.text.lines().nth(1).expect("the squad's row");
    assert!(
        row.contains(",'-SQ1,\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"open\"\")\","),
        "{row}"
    );
    for cell in row.split(',') {
        assert!(
            !cell.trim_start_matches('"').starts_with(['=', '+', '@']),
            "{cell} in {row}"
        );
    }
}

/// Item 14: a client inventing methods adds one label to the metrics, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_count_as_one_metrics_label() {
    let s = TestServer::start().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let a = s.send(method, "/api/v1/units", None, None).await;
        assert!(a.status.is_client_error(), "{a:#?}");
    }
    let metrics = s.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        !metrics.text.contains("BREW"),
        "an invented method as a label"
    );
    assert!(
        metrics.text.contains("method=\"OTHER\""),
        "{}",
        metrics.text
    );
}

/// Item 9: commanders of one unit are peers; only the unit above (or an admin) changes,
/// resets, demotes, deletes or ends the logins of a commander, as with units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_cannot_act_on_a_peer_of_their_own_unit() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    // A second commander of street 1, made by the admin.
    let peer = id(&s
        .post(
            "/api/v1/members",
            &org.admin,
            json!({"username": "cmd1b", "role": "commander", "unit_id": org.street1,
                "password": api_tests::PASSWORD}),
        )
        .await);

    for (what, answer) in [
        (
            "reset the password",
            s.patch(
                &format!("/api/v1/members/{peer}"),
                &cmd1,
                json!({"password": "a new password of mine"}),
            )
            .await,
        ),
        (
            "demote",
            s.patch(
                &format!("/api/v1/members/{peer}"),
                &cmd1,
                json!({"role": "volunteer"}),
            )
            .await,
        ),
        (
            "end the logins",
            s.delete(&format!("/api/v1/members/{peer}/sessions"), &cmd1)
                .await,
        ),
        (
            "issue a device key, which reports as its member, for",
            s.post(
                &format!("/api/v1/members/{peer}/device-keys"),
                &cmd1,
                json!({"label": "not mine"}),
            )
            .await,
        ),
        (
            "delete",
            s.delete(&format!("/api/v1/members/{peer}"), &cmd1).await,
        ),
    ] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}: {answer:#?}");
        assert_eq!(answer.body["code"], "forbidden", "{what}");
    }
    // Nor may they make a new peer, or promote one of their unit's officers to one.
    let made = s
        .post(
            "/api/v1/members",
            &cmd1,
            json!({"username": "cmd1c", "role": "commander", "unit_id": org.street1,
                "password": api_tests::PASSWORD}),
        )
        .await;
    made.assert_problem(422, "validation_failed");
    let promoted = s
        .patch(
            &format!("/api/v1/members/{}", org.members["kiosk1"]),
            &cmd1,
            json!({"role": "commander"}),
        )
        .await;
    promoted.assert_problem(422, "validation_failed");

    // A commander of the unit below is theirs to manage, and the peer still logs in.
    let below = id(&s
        .post(
            "/api/v1/members",
            &cmd1,
            json!({"username": "cmdc1", "role": "commander", "unit_id": org.community1,
                "password": api_tests::PASSWORD}),
        )
        .await);
    let reset = s
        .patch(
            &format!("/api/v1/members/{below}"),
            &cmd1,
            json!({"display_name": "C1 commander"}),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{reset:#?}");
    assert_eq!(s.login("cmd1b", api_tests::PASSWORD).await.status, 200);
    // The admin may act on either.
    let demoted = s
        .patch(
            &format!("/api/v1/members/{peer}"),
            &org.admin,
            json!({"role": "patrol_officer"}),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{demoted:#?}");
}

/// Item 15: one member holds at most 8 open event streams; closing one frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_holds_a_bounded_number_of_event_streams() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let client = reqwest::Client::new();
    let open = || async {
        client
            .get(format!("{}/api/v1/events", s.base))
            .bearer_auth(&cmd1)
            .send()
            .await
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..8 {
        let r = open().await;
        assert_eq!(r.status(), StatusCode::OK);
        streams.push(r);
    }
    let refused = open().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // Another member is not held back by cmd1's streams.
    let other = client
        .get(format!("{}/api/v1/events", s.base))
        .bearer_auth(&org.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Closing a stream frees its place (the server sees the close at its next write).
    drop(streams.pop());
    let started = std::time::Instant::now();
    loop {
        let r = open().await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "a closed stream's place was not freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Item 16, in part: the webhook follows no redirect, so a 3xx cannot carry an alert's
/// body and signature to another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_follows_no_redirect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = elsewhere.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let (tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = hook.accept().await {
            let mut buf = [0u8; 65536];
            let _ = c.read(&mut buf).await;
            let _ = tx.send(());
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere_addr}/stolen\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = c.write_all(answer.as_bytes()).await;
        }
    });
    let s = TestServer::start_with(|st| {
        st.alert_interval = std::time::Duration::from_secs(3600);
        st.webhook_url = Some(hook_url);
        st.webhook_secret = Some(patrol_server::settings::Secret("hook-secret".into()));
    })
    .await;
    let org = Org::create(&s).await;
    id(&s
        .post(
            "/api/v1/posts",
            &org.admin,
            json!({"code": "K9", "name": "K9", "kind": "kiosk", "unit_id": org.street1,
                "staffing": "24x7",
                "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
        )
        .await);
    patrol_server::alerts::evaluate(&s.state)
        .await
        .expect("evaluation succeeds");
    tokio::time::timeout(std::time::Duration::from_secs(30), asked.recv())
        .await
        .expect("the webhook was called")
        .unwrap();
    // Give a follower the time it would need.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the alert was carried to the redirect's address"
    );
}

// ---- Data correctness: items 1, 3, 4 and 10 ----

const LAT: f64 = 34.22;
const LON: f64 = 108.95;

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now to the whole second (shifts are stored to the second).
fn now_s() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap()
}

/// A fix at the reference point, give or take a few metres.
fn fix_at(t: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    json!({"client_id": uuid::Uuid::new_v4(), "recorded_at": iso(t), "lat": LAT, "lon": LON,
        "accuracy_m": 5.0})
}

/// A kiosk at the reference point in `unit`.
async fn kiosk(s: &TestServer, org: &Org, code: &str, unit: uuid::Uuid) -> uuid::Uuid {
    id(&s
        .post(
            "/api/v1/posts",
            &org.admin,
            json!({"code": code, "name": code, "kind": "kiosk", "unit_id": unit,
                "geometry": {"type": "Point", "coordinates": [LON, LAT]}}),
        )
        .await)
}

/// A shift of `who` at `post` over `[from, to)`.
async fn shift_of(
    s: &TestServer,
    org: &Org,
    post: uuid::Uuid,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    who: &str,
) -> uuid::Uuid {
    id(&s
        .post(
            "/api/v1/shifts",
            &org.admin,
            json!({"post_id": post, "starts_at": iso(from), "ends_at": iso(to),
                "member_ids": [org.members[who]]}),
        )
        .await)
}

/// The stored row of a shift's coverage: (stale, status), or `None` without one.
async fn stored_row(s: &TestServer, shift: uuid::Uuid) -> Option<(bool, String)> {
    use patrol_server::store::shift_coverage;
    use sea_orm::EntityTrait;
    shift_coverage::Entity::find_by_id(shift)
        .one(&s.state.db)
        .await
        .unwrap()
        .map(|r| (r.stale, r.status))
}

/// A shift's coverage as the API answers it.
async fn coverage_of(s: &TestServer, org: &Org, post: uuid::Uuid) -> serde_json::Value {
    let (from, to) = (
        iso(now_s() - chrono::Duration::days(1)).replace('+', "%2B"),
        iso(now_s()).replace('+', "%2B"),
    );
    let a = s
        .get(
            &format!("/api/v1/coverage?from={from}&to={to}&post_id={post}"),
            &org.admin,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    a.body["items"][0].clone()
}

async fn started() -> (TestServer, Org) {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    (s, org)
}

/// Kiosk K1 with an hour's shift of kiosk1's that ended three hours ago (settled, so its
/// figures are stored): (post, shift, start).
async fn kiosk1_shift_ended(
    s: &TestServer,
    org: &Org,
) -> (uuid::Uuid, uuid::Uuid, chrono::DateTime<chrono::Utc>) {
    let end = now_s() - chrono::Duration::hours(3);
    let start = end - chrono::Duration::hours(1);
    let k = kiosk(s, org, "K1", org.street1).await;
    let sid = shift_of(s, org, k, start, end, "kiosk1").await;
    (k, sid, start)
}

/// Item 1: a late fix that arrives while the updater computes a shift from the fixes it
/// read before keeps its mark: the result computed without it is not stored over the
/// mark, and the next pass counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fix_arriving_mid_computation_keeps_its_stale_mark() {
    use patrol_server::store::shift;
    use sea_orm::EntityTrait;
    let (s, org) = started().await;
    let (k, sid, start) = kiosk1_shift_ended(&s, &org).await;
    let model = shift::Entity::find_by_id(sid)
        .one(&s.state.db)
        .await
        .unwrap()
        .unwrap();
    let token = s.token("kiosk1").await;
    let late: Vec<serde_json::Value> = (0..60)
        .map(|i| fix_at(start + chrono::Duration::minutes(i)))
        .collect();
    // The updater reads the shift's fixes (none yet); the phone's queue arrives; then the
    // updater stores what it computed.
    patrol_server::coverage::compute_and_store(&s.state, &[model], chrono::Utc::now(), async {
        let a = s
            .post("/api/v1/checkins", &token, json!({"checkins": late}))
            .await;
        assert_eq!(a.body["created"], 60, "{a:#?}");
    })
    .await
    .unwrap();
    let (stale, _) = stored_row(&s, sid)
        .await
        .expect("a row for the marked shift");
    assert!(
        stale,
        "the mark of the late fixes survives the older result"
    );
    let c = coverage_of(&s, &org, k).await;
    assert_eq!(c["status"], "met", "{c}");
    assert_eq!(c["eligible_fixes"], 60, "{c}");
    patrol_server::coverage::update_finished(&s.state, 200)
        .await
        .unwrap();
    assert_eq!(stored_row(&s, sid).await, Some((false, "met".to_owned())));
}

/// Item 4: late fixes of someone on none of the shifts at a post mark none of them stale
/// (they could never count); the sender's own settled shifts are marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_late_fixes_mark_no_stored_figures() {
    let (s, org) = started().await;
    let (k, sid, start) = kiosk1_shift_ended(&s, &org).await;
    assert_eq!(coverage_of(&s, &org, k).await["status"], "missed");
    patrol_server::coverage::update_finished(&s.state, 200)
        .await
        .unwrap();
    assert_eq!(
        stored_row(&s, sid).await,
        Some((false, "missed".to_owned()))
    );
    // A volunteer replays a batch at the kiosk during someone else's shift.
    let vol = s.token("vol1").await;
    let batch: Vec<serde_json::Value> = (0..60)
        .map(|i| fix_at(start + chrono::Duration::minutes(i)))
        .collect();
    let a = s
        .post("/api/v1/checkins", &vol, json!({"checkins": batch}))
        .await;
    assert_eq!(a.body["created"], 60, "{a:#?}");
    assert_eq!(
        stored_row(&s, sid).await,
        Some((false, "missed".to_owned())),
        "a stranger's fixes leave the stored figures alone"
    );
    // The officer's own late fixes do mark it.
    let officer = s.token("kiosk1").await;
    let own: Vec<serde_json::Value> = (0..60)
        .map(|i| fix_at(start + chrono::Duration::minutes(i)))
        .collect();
    let a = s
        .post("/api/v1/checkins", &officer, json!({"checkins": own}))
        .await;
    assert_eq!(a.body["created"], 60, "{a:#?}");
    assert_eq!(stored_row(&s, sid).await.map(|r| r.0), Some(true));
    assert_eq!(coverage_of(&s, &org, k).await["status"], "met");
}

/// Item 4: each member has a budget of late fixes a day; beyond it a batch with late
/// fixes is refused whole (nothing stored, so nothing lost), while fresh fixes still go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_fixes_beyond_a_members_daily_budget_are_refused_whole() {
    let s = TestServer::start_with(|st| st.late_fixes_per_day = 1000).await;
    let _org = Org::create(&s).await;
    let vol = s.token("vol1").await;
    let old = now_s() - chrono::Duration::days(2);
    let batch: Vec<serde_json::Value> = (0..1000)
        .map(|i| fix_at(old + chrono::Duration::seconds(30 * i)))
        .collect();
    let a = s
        .post("/api/v1/checkins", &vol, json!({"checkins": batch}))
        .await;
    assert_eq!(a.body["created"], 1000, "{a:#?}");
    let more = s
        .post(
            "/api/v1/checkins",
            &vol,
            json!({"checkins": [fix_at(old - chrono::Duration::hours(1)), fix_at(now_s())]}),
        )
        .await;
    more.assert_problem(429, "rate_limited");
    let wait: u64 = more.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&wait), "{wait}");
    // Nothing of the refused batch was stored: the fresh fix goes in on its own.
    let fresh = s
        .post(
            "/api/v1/checkins",
            &vol,
            json!({"checkins": [fix_at(now_s())]}),
        )
        .await;
    assert_eq!(fresh.body["created"], 1, "{fresh:#?}");
    // Another member's budget is their own.
    let officer = s.token("officer1").await;
    let a = s
        .post(
            "/api/v1/checkins",
            &officer,
            json!({"checkins": [fix_at(old)]}),
        )
        .await;
    assert_eq!(a.body["created"], 1, "{a:#?}");
}

/// Item 3: a Traccar Client or OsmAnd fix without an accuracy is stored as of unknown
/// accuracy (flag `unknown_accuracy`, `accuracy_m` null) and does not count unless the
/// setting says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_without_accuracy_is_unknown_and_counts_only_by_setting() {
    for counts in [false, true] {
        let s = TestServer::start_with(|st| st.count_unknown_accuracy = counts).await;
        let org = Org::create(&s).await;
        let end = now_s() - chrono::Duration::minutes(30);
        let start = end - chrono::Duration::hours(1);
        let k = kiosk(&s, &org, "K1", org.street1).await;
        shift_of(&s, &org, k, start, end, "kiosk1").await;
        let issued = s
            .post(
                &format!("/api/v1/members/{}/device-keys", org.members["kiosk1"]),
                &org.admin,
                json!({"label": "phone"}),
            )
            .await;
        let key = issued.body["key"].as_str().expect("a key").to_owned();
        for i in 0..60 {
            let ts = (start + chrono::Duration::minutes(i)).timestamp();
            let a = s
                .raw(|c, b| {
                    c.get(format!(
                        "{b}/osmand?id={key}&lat={LAT}&lon={LON}&timestamp={ts}"
                    ))
                })
                .await;
            assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        }
        let fixes = s
            .get(
                &format!("/api/v1/checkins?member_id={}", org.members["kiosk1"]),
                &org.admin,
            )
            .await;
        let items = fixes.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 60);
        for f in items {
            assert!(f["accuracy_m"].is_null(), "{f}");
            assert!(
                f["flags"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("unknown_accuracy")),
                "{f}"
            );
        }
        let c = coverage_of(&s, &org, k).await;
        if counts {
            assert_eq!(c["status"], "met", "{c}");
            assert_eq!(c["eligible_fixes"], 60, "{c}");
        } else {
            assert_eq!(c["status"], "missed", "{c}");
            assert_eq!(c["excluded"]["inaccurate"], 60, "{c}");
        }
    }
}

/// Item 10: a fix may name only the member's own shifts, and posts of those shifts or of
/// the member's unit and below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_naming_someone_elses_shift_or_post_is_refused() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let now = now_s();
    let mine = kiosk(&s, &org, "K1", org.street1).await;
    let elsewhere = kiosk(&s, &org, "K2", org.street2).await;
    let my_shift = shift_of(
        &s,
        &org,
        mine,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
        "kiosk1",
    )
    .await;
    let their_shift = shift_of(
        &s,
        &org,
        elsewhere,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
        "officer2",
    )
    .await;
    let token = s.token("kiosk1").await;
    let with = |extra: serde_json::Value| {
        let mut f = fix_at(now_s());
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    let a = s
        .post(
            "/api/v1/checkins",
            &token,
            json!({"checkins": [
                with(json!({"shift_id": my_shift, "post_id": mine, "kind": "arrive"})),
                with(json!({"post_id": mine})),
                with(json!({"shift_id": their_shift, "kind": "sos"})),
                with(json!({"post_id": elsewhere, "kind": "arrive"})),
                with(json!({"shift_id": uuid::Uuid::new_v4()})),
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let results = a.body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["created", "created", "rejected", "rejected", "rejected"],
        "{}",
        a.body
    );
    assert_eq!(results[2]["error"]["field"], "shift_id", "{}", a.body);
    assert_eq!(results[3]["error"]["field"], "post_id", "{}", a.body);
    // The commander of street 1 sees no SOS filed under street 2's shift.
    let alerts = s.get("/api/v1/alerts", &s.token("cmd2").await).await;
    assert_eq!(alerts.body["items"], json!([]), "{}", alerts.body);
}

// ---- Access and privacy: items 6, 7 and 8 ----

/// Item 6: an open event stream ends within seconds when its viewer logs out, is
/// deactivated, gets another role or unit, or its access token expires; the client then
/// reconnects with a fresh token and sees what it may see now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_when_the_right_to_them_ends() {
    use std::time::Duration;
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    // Well past the stream's recheck, short of its 15 s heartbeat twice over.
    let within = Duration::from_secs(12);

    // Logout.
    let cmd1 = s.token("cmd1").await;
    let mut stream = s.events(Some(&cmd1), None).await.expect("a stream");
    assert!(!stream.ends_within(Duration::from_millis(500)).await);
    let out = s
        .send(Method::POST, "/api/v1/auth/logout", Some(&cmd1), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(stream.ends_within(within).await, "logout ends the stream");

    // Moved to another unit.
    let cmd1 = s.token("cmd1").await;
    let mut stream = s.events(Some(&cmd1), None).await.expect("a stream");
    let moved = s
        .patch(
            &format!("/api/v1/members/{}", org.members["cmd1"]),
            &org.admin,
            json!({"unit_id": org.street2}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:#?}");
    assert!(
        stream.ends_within(within).await,
        "a new unit ends the stream"
    );
    // Reconnecting with the same (still valid) login sees the new scope.
    assert!(s.events(Some(&cmd1), None).await.is_ok());

    // Deactivated.
    let officer = s.token("officer1").await;
    let mut stream = s.events(Some(&officer), None).await.expect("a stream");
    let off = s
        .patch(
            &format!("/api/v1/members/{}", org.members["officer1"]),
            &org.admin,
            json!({"active": false}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{off:#?}");
    assert!(
        stream.ends_within(within).await,
        "deactivation ends the stream"
    );
    assert!(s.events(Some(&officer), None).await.is_err());
}

/// Item 6: a stream lasts no longer than the access token it was opened with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_when_its_token_expires() {
    use std::time::Duration;
    let s = TestServer::start_with(|st| st.access_token_ttl = Duration::from_secs(3)).await;
    let _org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let mut stream = s.events(Some(&cmd1), None).await.expect("a stream");
    assert!(
        stream.ends_within(Duration::from_secs(15)).await,
        "the stream ends with its token"
    );
}

/// Items 7 and 8: positions seen live are audited (once per viewer, subject and hour), and
/// the live board reads and shows only the people on the running shifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_seen_live_are_audited() {
    use std::time::Duration;
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let now = now_s();
    let k = kiosk(&s, &org, "K1", org.street1).await;
    shift_of(
        &s,
        &org,
        k,
        now - chrono::Duration::hours(1),
        now + chrono::Duration::hours(1),
        "kiosk1",
    )
    .await;
    let cmd1 = s.token("cmd1").await;
    let mut stream = s.events(Some(&cmd1), None).await.expect("a stream");
    let kiosk1 = s.token("kiosk1").await;
    let vol1 = s.token("vol1").await;
    for token in [&kiosk1, &vol1] {
        let a = s
            .post("/api/v1/checkins", token, json!(fix_at(now_s())))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    }
    assert!(
        stream
            .until(Duration::from_secs(10), |e| e.event == "checkin"
                && e.data["member_id"] == json!(org.members["vol1"]))
            .await
            .is_some()
    );
    // The stream writes its records as it goes; closing it writes the rest.
    drop(stream);
    // The board: the officer on the shift is there; the volunteer beside them is not
    // (not on the shift), and is neither shown nor audited for the board.
    let board = s.get("/api/v1/status/now", &cmd1).await;
    assert_eq!(board.status, StatusCode::OK, "{board:#?}");
    let post = board.body["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["post_id"] == json!(k))
        .unwrap()
        .clone();
    assert_eq!(post["present"], json!([org.members["kiosk1"]]), "{post}");
    // Twice in the hour: one record.
    s.get("/api/v1/status/now", &cmd1).await;
    let audit = |subject: &str| {
        let path = format!(
            "/api/v1/audit?viewer_id={}&subject_id={}",
            org.members["cmd1"], org.members[subject]
        );
        let s = &s;
        let admin = org.admin.clone();
        async move {
            let mut actions: Vec<String> = Vec::new();
            // The stream's records are written by its task once it sees the client gone.
            for _ in 0..50 {
                let a = s.get(&path, &admin).await;
                actions = a.body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["action"].as_str().unwrap().to_owned())
                    .collect();
                if actions.iter().any(|a| a == "event_stream") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            actions.sort();
            actions
        }
    };
    assert_eq!(audit("kiosk1").await, ["event_stream", "status_now"]);
    assert_eq!(audit("vol1").await, ["event_stream"]);
}

/// Item 16: a change the receiver keeps refusing holds up no later one: an SOS raised
/// while a roster-gap alert is being retried reaches the receiver at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_webhook_change_holds_up_no_sos() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let (tx, mut delivered) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = hook.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                // Read until the body's end: the JSON object closes the request.
                while !buf.ends_with(b"}") {
                    match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                // The receiver refuses every roster-gap change, and takes the rest.
                let status = if text.contains("\"roster_gap\"") {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                if status == "200 OK" {
                    let _ = tx.send(text);
                }
            });
        }
    });
    let s = TestServer::start_with(|st| {
        st.alert_interval = std::time::Duration::from_secs(1);
        st.webhook_url = Some(hook_url);
    })
    .await;
    let org = Org::create(&s).await;
    // A 24x7 kiosk with no roster: a roster-gap alert, refused again and again.
    id(&s
        .post(
            "/api/v1/posts",
            &org.admin,
            json!({"code": "K9", "name": "K9", "kind": "kiosk", "unit_id": org.street1,
                "staffing": "24x7", "geometry": {"type": "Point", "coordinates": [LON, LAT]}}),
        )
        .await);
    let mut alerts = Vec::new();
    for _ in 0..40 {
        alerts = s.get("/api/v1/alerts", &org.admin).await.body["items"]
            .as_array()
            .unwrap()
            .clone();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(alerts[0]["kind"], "roster_gap", "{alerts:#?}");
    // Let its retries start backing off.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let officer = s.token("officer1").await;
    let mut sos = fix_at(now_s());
    sos["kind"] = json!("sos");
    let a = s.post("/api/v1/checkins", &officer, sos).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let text = delivered.recv().await.expect("the receiver runs");
            if text.contains("\"sos\"") {
                return text;
            }
        }
    })
    .await
    .expect("the SOS reached the webhook while the other change was being retried");
    assert!(got.contains("x-patrol-timestamp"), "{got}");
}
