//! Check-ins: single fixes, batches, validation, flags, idempotency under concurrency,
//! gzip, the Traccar Client / OsmAnd protocol, reading back with scope and audit.

use std::io::Write;

use api_tests::{Org, TestServer, id};
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn at(offset_s: i64) -> String {
    (Utc::now() + Duration::seconds(offset_s)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn fix(offset_s: i64, lat: f64, lon: f64) -> Value {
    json!({"client_id": Uuid::new_v4(), "recorded_at": at(offset_s), "lat": lat, "lon": lon, "accuracy_m": 8.0})
}

/// A walk: one fix every 20 s, about 1.4 m/s north, ending `end_s` seconds from now.
fn walk(n: usize, end_s: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let t = end_s - 20 * (n - 1 - i) as i64;
            fix(
                t,
                34.22 + i as f64 * 0.00025,
                108.95 + (i % 3) as f64 * 1e-6,
            )
        })
        .collect()
}

async fn post(s: &TestServer, token: &str, body: Value) -> api_tests::Answer {
    s.post("/api/v1/checkins", token, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_is_stored_once_whatever_the_retries() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let token = s.token("officer1").await;
    let body = json!({"client_id": Uuid::new_v4(), "recorded_at": at(-30), "lat": 34.22, "lon": 108.95, "accuracy_m": 5.5,
                      "speed_mps": 1.2, "heading_deg": 90, "altitude_m": 400, "battery": 77, "kind": "on_duty"});
    let a = post(&s, &token, body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    assert_eq!(a.body["member_id"], org.members["officer1"].to_string());
    assert_eq!(a.body["kind"], "on_duty");
    assert_eq!(a.body["datum"], "wgs84");
    assert_eq!(a.body["source"], "api");
    assert!(a.body["received_at"].is_string());
    let again = post(&s, &token, body.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], a.body["id"]);
    // The same client_id with other content is refused; the stored fix is untouched.
    let mut changed = body.clone();
    changed["lat"] = json!(34.23);
    post(&s, &token, changed)
        .await
        .assert_problem(409, "idempotency_conflict");
    let list = s.get("/api/v1/checkins", &token).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["lat"], 34.22);
    // Another member may use the same client_id: ids are per member.
    let other = post(&s, &s.token("vol1").await, body).await;
    assert_eq!(other.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_names_its_reason() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let token = s.token("officer1").await;
    let base = fix(-10, 34.22, 108.95);
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases = vec![
        (without("client_id"), "client_id"),
        (with("client_id", json!("not-a-uuid")), "client_id"),
        (with("lat", json!(91)), "lat"),
        (with("lon", json!(-181)), "lon"),
        (
            with("lat", json!(0))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("lon".into(), json!(0));
                    Value::Object(o)
                })
                .unwrap(),
            "lat",
        ),
        (with("lat", json!("34")), "lat"),
        (with("recorded_at", json!(at(400))), "recorded_at"),
        (with("recorded_at", json!(at(-8 * 86400))), "recorded_at"),
        (with("recorded_at", json!("yesterday")), "recorded_at"),
        (with("accuracy_m", json!(-1)), "accuracy_m"),
        (without("accuracy_m"), "accuracy_m"),
        (with("speed_mps", json!(-3)), "speed_mps"),
        (with("heading_deg", json!(400)), "heading_deg"),
        (with("battery", json!(150)), "battery"),
        (with("kind", json!("coffee_break")), "kind"),
        (with("datum", json!("osgb36")), "datum"),
        (with("post_id", json!(Uuid::now_v7())), "post_id"),
        (with("shift_id", json!(Uuid::now_v7())), "shift_id"),
        (with("member_id", json!(org.members["vol1"])), "member_id"),
        (with("received_at", json!(at(0))), "received_at"),
        (with("flags", json!([])), "flags"),
        (with("id", json!(Uuid::now_v7())), "id"),
        (with("colour", json!("red")), "colour"),
    ];
    let mut batch = Vec::new();
    for (body, field) in &cases {
        let a = post(&s, &token, body.clone()).await;
        a.assert_problem(422, "validation_failed");
        assert_eq!(a.body["errors"][0]["field"], *field, "{body}: {a:#?}");
        batch.push(body.clone());
    }
    // In a batch, each is rejected with the same reason, and the good one between them is stored.
    batch.insert(3, fix(-5, 34.22, 108.95));
    let a = post(&s, &token, json!({"checkins": batch})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(
        (a.body["created"].as_u64(), a.body["rejected"].as_u64()),
        (Some(1), Some(cases.len() as u64))
    );
    let results = a.body["results"].as_array().unwrap();
    assert_eq!(results[3]["status"], "created");
    for (i, (_, field)) in cases.iter().enumerate() {
        let r = &results[if i < 3 { i } else { i + 1 }];
        assert_eq!(r["status"], "rejected");
        assert_eq!(r["error"]["field"], *field, "{r}");
        assert_eq!(r["error"]["code"], "validation_failed");
    }
    assert_eq!(
        s.get("/api/v1/checkins", &token).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_mark_suspicious_fixes_which_are_still_stored() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let token = s.token("vol1").await;
    let flags = |a: &api_tests::Answer| -> Vec<String> {
        a.body["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    // No shift covers these: outside_shift on every one.
    let a = post(&s, &token, fix(-600, 34.22, 108.95)).await;
    assert_eq!(flags(&a), ["outside_shift"]);
    let mut b = fix(-580, 34.2201, 108.95);
    b["accuracy_m"] = json!(80);
    assert_eq!(
        flags(&post(&s, &token, b).await),
        ["low_accuracy", "outside_shift"]
    );
    let mut b = fix(-560, 34.2202, 108.95);
    b["mock"] = json!(true);
    assert_eq!(
        flags(&post(&s, &token, b).await),
        ["mock_location", "outside_shift"]
    );
    assert_eq!(
        flags(&post(&s, &token, fix(120, 34.2203, 108.95)).await),
        ["clock_skew", "outside_shift"]
    );
    // A teleport of 30 km in 20 s.
    assert_eq!(
        flags(&post(&s, &token, fix(-540, 34.49, 108.95)).await),
        ["implausible_speed", "outside_shift"]
    );
    // The honest fix after the teleport is judged against the last plausible one.
    assert_eq!(
        flags(&post(&s, &token, fix(-520, 34.2204, 108.95)).await),
        ["outside_shift"]
    );

    // A shift covering now: outside_shift goes away.
    let admin = &org.admin;
    let kiosk = id(&s.post("/api/v1/posts", admin, json!({"code": "K1", "name": "K", "kind": "kiosk", "unit_id": org.street1, "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}})).await);
    let shift = json!({"post_id": kiosk, "starts_at": at(-3600), "ends_at": at(3600), "member_ids": [org.members["vol1"]]});
    assert_eq!(
        s.post("/api/v1/shifts", admin, shift).await.status,
        StatusCode::CREATED
    );
    let a = post(&s, &token, fix(-500, 34.2205, 108.95)).await;
    assert_eq!(flags(&a), Vec::<String>::new(), "{a:#?}");

    // A frozen device: the same position, accuracy and speed ten times running.
    let mut last = Vec::new();
    for i in 0..10 {
        let mut b = fix(-400 + i * 15, 34.221, 108.951);
        b["speed_mps"] = json!(0.0);
        last = flags(&post(&s, &token, b).await);
        if i < 9 {
            assert!(
                !last.contains(&"static_repeat".to_owned()),
                "fix {i}: {last:?}"
            );
        }
    }
    assert!(last.contains(&"static_repeat".to_owned()), "{last:?}");

    // A GCJ-02 fix is stored in WGS-84 with the datum it came in.
    let mut b = fix(-100, 34.2215, 108.9515);
    b["datum"] = json!("gcj02");
    let a = post(&s, &token, b).await;
    assert_eq!(a.body["datum"], "gcj02");
    let moved = ((a.body["lat"].as_f64().unwrap() - 34.2215).powi(2)
        + (a.body["lon"].as_f64().unwrap() - 108.9515).powi(2))
    .sqrt();
    assert!(moved > 0.001 && moved < 0.01, "{a:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_batch_is_judged_by_its_place_in_time() {
    let s = TestServer::start().await;
    Org::create(&s).await;
    let token = s.token("officer1").await;
    // A day offline: 300 fixes of a walk arrive in one batch, in shuffled order.
    let mut items = walk(300, -3600);
    items.reverse();
    items.swap(10, 250);
    let a = post(&s, &token, json!({"checkins": items.clone()})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["created"], 300);
    assert!(
        a.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "implausible_speed" || f == "static_repeat")),
        "{}",
        a.body
    );
    // Sent again: all duplicates, same ids, in input order.
    let b = post(&s, &token, json!({"checkins": items})).await;
    assert_eq!(
        (b.body["created"].as_u64(), b.body["duplicate"].as_u64()),
        (Some(0), Some(300))
    );
    for (x, y) in a.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b.body["results"].as_array().unwrap())
    {
        assert_eq!(x["id"], y["id"]);
        assert_eq!(x["client_id"], y["client_id"]);
    }
    // A fix filling a hole in the middle of the walk, far off the path, is implausible
    // against both its neighbours in time, although it arrived last.
    let mut late = fix(-3600 - 20 * 150 + 10, 34.40, 108.95);
    late["accuracy_m"] = json!(5);
    let a = post(&s, &token, late).await;
    assert!(
        a.body["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "implausible_speed"),
        "{a:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_copies_of_a_batch_are_stored_once_and_agree() {
    let s = TestServer::start().await;
    Org::create(&s).await;
    let token = s.token("officer1").await;
    let batch = json!({"checkins": walk(200, -600)});
    let answers = futures_join(&s, &token, &batch, 10).await;
    let mut created = 0;
    let first_ids: Vec<Value> = answers[0].body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        created += a.body["created"].as_u64().unwrap();
        assert_eq!(a.body["rejected"], 0);
        let ids: Vec<Value> = a.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(ids, first_ids, "every response names the same stored fixes");
    }
    assert_eq!(
        created, 200,
        "each fix created exactly once across the ten requests"
    );
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let page = s
            .get(&format!("/api/v1/checkins?limit=1000{cursor}"), &token)
            .await;
        count += page.body["items"].as_array().unwrap().len();
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(count, 200);
}

async fn futures_join(
    s: &TestServer,
    token: &str,
    body: &Value,
    n: usize,
) -> Vec<api_tests::Answer> {
    let mut handles = Vec::new();
    for _ in 0..n {
        let (base, token, body) = (s.base.clone(), token.to_owned(), body.clone());
        handles.push(tokio::spawn(async move {
            let res = reqwest::Client::new()
                .post(format!("{base}/api/v1/checkins"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            (status, body)
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        out.push(api_tests::Answer {
            status,
            headers: Default::default(),
            text: body.to_string(),
            body,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_and_batch_limits() {
    let s = TestServer::start().await;
    Org::create(&s).await;
    let token = s.token("officer1").await;
    let body = json!({"checkins": walk(50, -100)}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    let a = s
        .raw(|c, b| {
            c.post(format!("{b}/api/v1/checkins"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(compressed.clone())
        })
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["created"], 50);
    // Garbage that claims to be gzip, and an encoding we do not speak.
    s.raw(|c, b| {
        c.post(format!("{b}/api/v1/checkins"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body("not gzip")
    })
    .await
    .assert_problem(400, "malformed_request");
    s.raw(|c, b| {
        c.post(format!("{b}/api/v1/checkins"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("content-encoding", "br")
            .body("{}")
    })
    .await
    .assert_problem(415, "unsupported_media_type");
    // A gzip bomb: small on the wire, over the limit unpacked.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 5 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    s.raw(|c, b| {
        c.post(format!("{b}/api/v1/checkins"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
    })
    .await
    .assert_problem(413, "payload_too_large");
    // 1001 fixes: 413 before anything is stored.
    let big = json!({"checkins": walk(1001, -100)});
    post(&s, &token, big)
        .await
        .assert_problem(413, "payload_too_large");
    assert_eq!(
        s.get("/api/v1/checkins?limit=1000", &token).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    post(&s, &token, json!({"checkins": {}}))
        .await
        .assert_problem(422, "validation_failed");
    post(&s, &token, json!({"checkins": [], "extra": 1}))
        .await
        .assert_problem(422, "validation_failed");
    let empty = post(&s, &token, json!({"checkins": []})).await;
    assert_eq!(empty.status, StatusCode::OK);
    post(&s, &s.token("officer1").await, json!([1, 2]))
        .await
        .assert_problem(422, "validation_failed");
    s.send(
        Method::POST,
        "/api/v1/checkins",
        None,
        Some(fix(0, 34.2, 108.9)),
    )
    .await
    .assert_problem(401, "unauthorized");
}
