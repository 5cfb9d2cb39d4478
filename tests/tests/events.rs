//! The live event stream: what each viewer sees, resuming with `Last-Event-ID`, `reset`
//! when the history is too short, and, on PostgreSQL, two server processes delivering one
//! stream with the same ids.

use std::time::Duration as StdDuration;

use api_tests::{EventStream, Org, SseEvent, TestServer, id, on_postgres};
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const LAT: f64 = 34.22;
const LON: f64 = 108.95;
const WAIT: StdDuration = StdDuration::from_secs(20);

fn quiet(s: &mut patrol_server::Settings) {
    s.alert_interval = StdDuration::from_secs(3600);
}

async fn checkin(s: &TestServer, token: &str, extra: Value) -> Uuid {
    let mut body = json!({"client_id": Uuid::new_v4(),
        "recorded_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "lat": LAT, "lon": LON, "accuracy_m": 5.0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let a = s.post("/api/v1/checkins", token, body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    id(&a)
}

async fn open(s: &TestServer, token: &str, last: Option<&str>) -> EventStream {
    match s.events(Some(token), last).await {
        Ok(stream) => stream,
        Err(a) => panic!("the stream was refused: {a:#?}"),
    }
}

fn is_checkin(fix: Uuid) -> impl Fn(&SseEvent) -> bool {
    move |e| e.event == "checkin" && e.data["fix_id"] == fix.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_sees_their_scope() {
    let s = TestServer::start_with(quiet).await;
    let org = Org::create(&s).await;
    let tokens: Vec<String> = {
        let mut t = vec![org.admin.clone()];
        for u in ["cmd1", "cmd2", "officer1", "vol1", "officer2"] {
            t.push(s.token(u).await);
        }
        t
    };
    let [admin, _, _, officer1, vol1, officer2] = &tokens[..] else {
        unreachable!()
    };
    let kiosk = id(&s
        .post(
            "/api/v1/posts",
            admin,
            json!({"code": "K1", "name": "K1", "kind": "kiosk", "unit_id": org.street1, "staffing": "rostered",
                   "geometry": {"type": "Point", "coordinates": [LON, LAT]}}),
        )
        .await);
    let now = Utc::now();
    id(&s
        .post(
            "/api/v1/shifts",
            admin,
            json!({"post_id": kiosk, "starts_at": (now - Duration::minutes(5)).to_rfc3339(),
                   "ends_at": (now + Duration::hours(2)).to_rfc3339(), "member_ids": [org.members["officer1"]]}),
        )
        .await);
    let mut streams = Vec::new();
    for t in &tokens {
        streams.push(open(&s, t, None).await);
    }
    s.events(None, None)
        .await
        .err()
        .expect("no stream without a token")
        .assert_problem(401, "unauthorized");

    // officer1 (street 1) checks in at the kiosk; officer2 (street 2) elsewhere.
    let first = checkin(&s, officer1, json!({"post_id": kiosk})).await;
    let second = checkin(&s, officer2, json!({"lat": 34.3})).await;
    let [admin_s, cmd1_s, cmd2_s, officer1_s, vol1_s, officer2_s] = &mut streams[..] else {
        unreachable!()
    };
    let e = admin_s
        .until(WAIT, is_checkin(first))
        .await
        .expect("admin sees it");
    assert_eq!(e.data["member_id"], org.members["officer1"].to_string());
    assert_eq!(e.data["member_name"], "officer1");
    assert_eq!(e.data["post_id"], kiosk.to_string());
    assert_eq!(e.data["post_code"], "K1");
    assert_eq!(e.data["lat"], LAT);
    assert_eq!(e.data["lon"], LON);
    assert_eq!(e.data["kind"], "ping");
    assert!(e.data["recorded_at"].is_string());
    assert!(e.data["flags"].is_array());
    let first_id: u64 = e.id.as_deref().unwrap().parse().unwrap();
    let e = admin_s
        .until(WAIT, is_checkin(second))
        .await
        .expect("admin sees both");
    assert!(
        e.id.as_deref().unwrap().parse::<u64>().unwrap() > first_id,
        "ids increase"
    );
    assert!(cmd1_s.until(WAIT, is_checkin(first)).await.is_some());
    assert!(officer1_s.until(WAIT, is_checkin(first)).await.is_some());
    // Events come in id order, so a viewer who sees the second check-in and did not get
    // the first before it was not shown the first.
    let e = cmd2_s
        .until(WAIT, |e| e.event == "checkin")
        .await
        .expect("cmd2 sees street 2");
    assert_eq!(
        e.data["fix_id"],
        second.to_string(),
        "cmd2 saw street 1's check-in"
    );
    let e = officer2_s
        .until(WAIT, |e| e.event == "checkin")
        .await
        .expect("officer2 sees their own");
    assert_eq!(e.data["fix_id"], second.to_string());

    // The kiosk is staffed now: a post_status event for street 1, not street 2.
    let e = cmd1_s
        .until(WAIT, |e| e.event == "post_status")
        .await
        .expect("post_status reaches cmd1");
    assert_eq!(e.data["post_id"], kiosk.to_string());
    assert_eq!(e.data["post_code"], "K1");
    assert_eq!(e.data["staffed"], true);
    assert_eq!(e.data["present"], 1);
    assert_eq!(e.data["required"], 1);
    assert!(e.data["at"].is_string());

    // An alert about a street-1 post (an SOS of officer1): cmd1 and officer1 see it.
    let sos = checkin(&s, officer1, json!({"kind": "sos"})).await;
    for stream in [&mut *cmd1_s, &mut *officer1_s, &mut *admin_s] {
        let e = stream
            .until(WAIT, |e| e.event == "alert")
            .await
            .expect("the SOS alert is streamed");
        assert_eq!(e.data["action"], "raised");
        assert_eq!(e.data["alert"]["kind"], "sos");
        assert_eq!(
            e.data["alert"]["member_id"],
            org.members["officer1"].to_string()
        );
    }
    // vol1 saw nothing of all this; a check-in of their own comes next in their stream.
    let own = checkin(&s, vol1, json!({})).await;
    let e = vol1_s
        .next(WAIT)
        .await
        .expect("vol1 sees their own check-in");
    assert_eq!(e.data["fix_id"], own.to_string(), "vol1 was shown {e:?}");
    // cmd2 saw no post_status or alert of street 1 either.
    let own2 = checkin(&s, officer2, json!({"lat": 34.3})).await;
    let e = cmd2_s.next(WAIT).await.expect("cmd2's next event");
    assert_eq!(e.data["fix_id"], own2.to_string(), "cmd2 was shown {e:?}");
    let _ = sos;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_without_loss_and_resets_when_too_old() {
    let s = TestServer::start_with(|st| {
        quiet(st);
        st.event_history = 100;
    })
    .await;
    let org = Org::create(&s).await;
    let officer = s.token("officer1").await;
    let mut stream = open(&s, &org.admin, None).await;
    let mut fixes = Vec::new();
    for _ in 0..3 {
        fixes.push(checkin(&s, &officer, json!({})).await);
    }
    let mut ids = Vec::new();
    for f in &fixes {
        let e = stream.until(WAIT, is_checkin(*f)).await.expect("streamed");
        ids.push(e.id.unwrap());
    }
    drop(stream);
    // Resume after the first: the other two, in order, then what comes next.
    let later = checkin(&s, &officer, json!({})).await;
    let mut resumed = open(&s, &org.admin, Some(&ids[0])).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = resumed.next(WAIT).await.expect("resumed events");
        if e.event == "checkin" {
            got.push(e.data["fix_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        got,
        [fixes[1], fixes[2], later].map(|f| f.to_string()),
        "resumed in order without loss"
    );
    drop(resumed);

    // An id the history has dropped (it keeps 100 events here) gets `reset` first, with
    // the id to resume from afterwards.
    let mut watcher = open(&s, &org.admin, None).await;
    let batch: Vec<Value> = (0..150)
        .map(|i| {
            json!({"client_id": Uuid::new_v4(),
                   "recorded_at": (Utc::now() - Duration::seconds(200 - i)).to_rfc3339_opts(SecondsFormat::Millis, true),
                   "lat": LAT, "lon": LON, "accuracy_m": 5.0})
        })
        .collect();
    let a = s
        .post("/api/v1/checkins", &officer, json!({"checkins": batch}))
        .await;
    assert_eq!(a.body["created"], 150, "{a:#?}");
    let marker = checkin(&s, &officer, json!({})).await;
    assert!(watcher.until(WAIT, is_checkin(marker)).await.is_some());
    drop(watcher);
    let mut old = open(&s, &org.admin, Some(&ids[0])).await;
    let e = old.next(WAIT).await.expect("reset");
    assert_eq!(e.event, "reset", "{e:?}");
    assert_eq!(e.data, json!({}));
    let reset_id: u64 = e.id.clone().unwrap().parse().unwrap();
    assert!(reset_id > ids[2].parse::<u64>().unwrap());
    let next = checkin(&s, &officer, json!({})).await;
    let e = old.until(WAIT, |e| e.event == "checkin").await.unwrap();
    assert_eq!(
        e.data["fix_id"],
        next.to_string(),
        "live events follow the reset"
    );
    // Garbage is treated as too old.
    let e = open(&s, &org.admin, Some("yesterday"))
        .await
        .next(WAIT)
        .await
        .unwrap();
    assert_eq!(e.event, "reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgresql_deliver_one_stream() {
    if !on_postgres() {
        eprintln!(
            "skipped: two processes share a database only on PostgreSQL (set PATROL_TEST_DATABASE_URL)"
        );
        return;
    }
    let a = TestServer::start_with(quiet).await;
    let org = Org::create(&a).await;
    let b = a.start_another(quiet).await;
    let officer = a.token("officer1").await;
    let mut on_b = open(&b, &org.admin, None).await;
    let mut on_a = open(&a, &org.admin, None).await;
    // A check-in posted to A arrives on a stream opened on B, and the other way round.
    let x = checkin(&a, &officer, json!({})).await;
    let seen_b = on_b
        .until(WAIT, is_checkin(x))
        .await
        .expect("A's check-in on B");
    let seen_a = on_a
        .until(WAIT, is_checkin(x))
        .await
        .expect("A's check-in on A");
    assert_eq!(seen_a.id, seen_b.id, "the same id on both processes");
    let y = checkin(&b, &officer, json!({})).await;
    let y_on_a = on_a
        .until(WAIT, is_checkin(y))
        .await
        .expect("B's check-in on A");
    // A client that saw x on B resumes on A and gets y next.
    let mut resumed = open(&a, &org.admin, seen_b.id.as_deref()).await;
    let e = resumed
        .until(WAIT, |e| e.event == "checkin")
        .await
        .expect("resumed on the other process");
    assert_eq!(e.data["fix_id"], y.to_string());
    assert_eq!(e.id, y_on_a.id);
    // An alert raised by whichever process evaluates reaches both streams once.
    a.post(
        "/api/v1/posts",
        &org.admin,
        json!({"code": "K1", "name": "K1", "kind": "kiosk", "unit_id": org.street1, "staffing": "24x7",
               "geometry": {"type": "Point", "coordinates": [LON, LAT]}}),
    )
    .await;
    let (r1, r2) = tokio::join!(
        patrol_server::alerts::evaluate(&a.state),
        patrol_server::alerts::evaluate(&b.state)
    );
    r1.unwrap();
    r2.unwrap();
    for stream in [&mut on_a, &mut on_b] {
        let e = stream
            .until(WAIT, |e| e.event == "alert")
            .await
            .expect("the alert is streamed");
        assert_eq!(e.data["alert"]["kind"], "roster_gap");
        let again = stream
            .until(StdDuration::from_secs(2), |e| e.event == "alert")
            .await;
        assert!(again.is_none(), "raised twice: {again:?}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_gets_a_heartbeat_and_ends_when_the_server_stops() {
    let s = TestServer::start_with(quiet).await;
    let admin = s.admin().await;
    let mut stream = open(&s, &admin, None).await;
    // Nothing happens; within 15 s (and a margin) a `: ping` comment comes.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(25);
    while !stream.comments.iter().any(|c| c == " ping") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat: {:?}",
            stream.comments
        );
        let e = stream.next(StdDuration::from_secs(1)).await;
        assert!(e.is_none(), "{e:?}");
    }
    s.stop().await;
    assert!(stream.next(WAIT).await.is_none(), "the stream ended");
}
