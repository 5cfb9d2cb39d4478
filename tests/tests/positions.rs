//! The Traccar Client / OsmAnd protocol with device keys; reading positions back with
//! scope (BOLA) and the audit trail; retention.

use api_tests::{Org, TestServer, id};
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn at(offset_s: i64) -> String {
    (Utc::now() + Duration::seconds(offset_s)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn fix(offset_s: i64, lat: f64) -> Value {
    json!({"client_id": Uuid::new_v4(), "recorded_at": at(offset_s), "lat": lat, "lon": 108.95, "accuracy_m": 6.0})
}

async fn audit_count(s: &TestServer, admin: &str) -> usize {
    s.get("/api/v1/audit?limit=1000", admin).await.body["items"]
        .as_array()
        .unwrap()
        .len()
}

async fn count(s: &TestServer, token: &str, query: &str) -> usize {
    s.get(&format!("/api/v1/checkins?limit=1000{query}"), token)
        .await
        .body["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traccar_client_and_osmand_report_with_a_device_key() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let officer = org.members["officer1"];
    // Admins issue keys (commanders too: tests/tests/device_keys.rs); the key is shown
    // once and works at once.
    let issued = s
        .post(
            &format!("/api/v1/members/{officer}/device-keys"),
            &org.admin,
            json!({"label": "Xiaomi phone"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{issued:#?}");
    let key = issued.body["key"].as_str().unwrap().to_owned();
    let key_id = id(&issued);
    let listed = s
        .get(
            &format!("/api/v1/members/{officer}/device-keys"),
            &org.admin,
        )
        .await;
    assert_eq!(listed.body["items"][0]["label"], "Xiaomi phone");
    assert!(!listed.text.contains(&key), "the key is never shown again");

    // The OsmAnd query-string form, by GET: speed in knots, timestamp in Unix seconds.
    let ts = (Utc::now() - Duration::seconds(60)).timestamp();
    let query = format!(
        "/osmand?id={key}&lat=34.22&lon=108.95&timestamp={ts}&accuracy=7&speed=2&bearing=90&altitude=410&batt=65"
    );
    let a = s.raw(|c, b| c.get(format!("{b}{query}"))).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    // Sent again (a resend): a duplicate, still 200.
    assert_eq!(
        s.raw(|c, b| c.get(format!("{b}{query}"))).await.status,
        StatusCode::OK
    );
    // The same form by POST, as a form body, with an ISO 8601 timestamp.
    let form = format!(
        "id={key}&lat=34.2201&lon=108.95&timestamp={}&accuracy=5",
        at(-50).replace('+', "%2B")
    );
    let a = s
        .raw(|c, b| {
            c.post(format!("{b}/osmand"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
        })
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    // The current Traccar Client JSON body, one location and then an array.
    let location = |offset: i64, lat: f64| {
        json!({"timestamp": at(offset), "coords": {"latitude": lat, "longitude": 108.95, "accuracy": 4.0, "speed": 1.3, "heading": 180.0, "altitude": 400.0},
        "is_moving": true, "odometer": 1200, "event": "motionchange", "battery": {"level": 0.81, "is_charging": false}, "activity": {"type": "walking"}, "extras": {}})
    };
    let a = s
        .raw(|c, b| {
            c.post(format!("{b}/osmand"))
                .json(&json!({"location": location(-40, 34.2202), "device_id": key}))
        })
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let many =
        json!({"location": [location(-30, 34.2203), location(-20, 34.2204)], "device_id": key});
    assert_eq!(
        s.raw(|c, b| c.post(format!("{b}/osmand")).json(&many))
            .await
            .status,
        StatusCode::OK
    );

    let token = s.token("officer1").await;
    let items = s.get("/api/v1/checkins?limit=1000", &token).await.body["items"].clone();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 5, "{items:#?}");
    assert!(
        items
            .iter()
            .all(|f| f["source"] == "osmand" && f["member_id"] == officer.to_string())
    );
    let first = items.iter().find(|f| f["altitude_m"] == 410.0).unwrap();
    assert!(
        (first["speed_mps"].as_f64().unwrap() - 1.0289).abs() < 1e-3,
        "2 knots: {first}"
    );
    assert_eq!(first["battery"], 65.0);
    let json_fix = items.iter().find(|f| f["lat"] == 34.2202).unwrap();
    assert!((json_fix["battery"].as_f64().unwrap() - 81.0).abs() < 1e-9);
    assert_eq!(json_fix["speed_mps"], 1.3);

    // Bad input: a clear error; unknown and revoked keys: 401.
    s.raw(|c, b| c.get(format!("{b}/osmand?id={key}&lat=95&lon=108.95")))
        .await
        .assert_problem(422, "validation_failed");
    s.raw(|c, b| c.get(format!("{b}/osmand?id={key}&lon=108.95")))
        .await
        .assert_problem(422, "validation_failed");
    s.raw(|c, b| c.get(format!("{b}/osmand?id=nope&lat=34.22&lon=108.95")))
        .await
        .assert_problem(401, "unauthorized");
    s.raw(|c, b| c.get(format!("{b}/osmand?lat=34.22&lon=108.95")))
        .await
        .assert_problem(401, "unauthorized");
    let del = s
        .delete(
            &format!("/api/v1/members/{officer}/device-keys/{key_id}"),
            &org.admin,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    s.raw(|c, b| c.get(format!("{b}/osmand?id={key}&lat=34.22&lon=108.95")))
        .await
        .assert_problem(401, "unauthorized");
    s.raw(|c, b| {
        c.post(format!("{b}/osmand"))
            .json(&json!({"location": location(-10, 34.22), "device_id": key}))
    })
    .await
    .assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_read_only_by_whom_may_and_every_read_is_audited() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let o1 = s.token("officer1").await;
    let o2 = s.token("officer2").await;
    let cmd1 = s.token("cmd1").await;
    let cmd2 = s.token("cmd2").await;
    for i in 0..3 {
        s.post(
            "/api/v1/checkins",
            &o1,
            fix(-300 + i * 30, 34.22 + i as f64 * 1e-4),
        )
        .await;
        s.post(
            "/api/v1/checkins",
            &o2,
            fix(-300 + i * 30, 34.23 + i as f64 * 1e-4),
        )
        .await;
    }
    let (m1, m2) = (org.members["officer1"], org.members["officer2"]);
    // Own positions: no audit.
    assert_eq!(count(&s, &o1, "").await, 3);
    assert_eq!(count(&s, &o1, &format!("&member_id={m1}")).await, 3);
    assert_eq!(audit_count(&s, &org.admin).await, 0);
    // BOLA: an officer asking for another member's fixes or track gets 403 and no data.
    let a = s
        .get(&format!("/api/v1/checkins?member_id={m2}"), &o1)
        .await;
    a.assert_problem(403, "forbidden");
    assert!(!a.text.contains("34.23"));
    let span = format!(
        "from={}&to={}",
        at(-3600).replace('+', "%2B"),
        at(60).replace('+', "%2B")
    );
    s.get(&format!("/api/v1/members/{m2}/track?{span}"), &o1)
        .await
        .assert_problem(403, "forbidden");
    // A commander outside the subtree likewise (404: the member does not exist for them).
    s.get(&format!("/api/v1/checkins?member_id={m1}"), &cmd2)
        .await
        .assert_problem(404, "not_found");
    s.get(&format!("/api/v1/members/{m1}/track?{span}"), &cmd2)
        .await
        .assert_problem(404, "not_found");
    // Without a filter a commander sees their subtree's fixes only.
    assert_eq!(count(&s, &cmd2, "").await, 3);
    assert_eq!(
        audit_count(&s, &org.admin).await,
        1,
        "one read of one member's positions"
    );
    // The commander of street 1 reads officer 1: audited once per read, with the span.
    assert_eq!(count(&s, &cmd1, &format!("&member_id={m1}")).await, 3);
    let track = s
        .get(&format!("/api/v1/members/{m1}/track?{span}"), &cmd1)
        .await;
    assert_eq!(track.status, StatusCode::OK, "{track:#?}");
    assert_eq!(track.content_type(), "application/geo+json");
    assert_eq!(track.body["type"], "Feature");
    assert_eq!(track.body["geometry"]["type"], "LineString");
    assert_eq!(
        track.body["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        track.body["properties"]["times"].as_array().unwrap().len(),
        3
    );
    let gpx = s
        .get(
            &format!("/api/v1/members/{m1}/track?{span}&format=gpx"),
            &cmd1,
        )
        .await;
    assert_eq!(gpx.content_type(), "application/gpx+xml");
    assert_eq!(gpx.text.matches("<trkpt").count(), 3);
    assert!(gpx.text.starts_with("<?xml"));
    let records = s.get("/api/v1/audit?limit=1000", &org.admin).await.body["items"].clone();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 4, "{records:#?}");
    let by_cmd1: Vec<&Value> = records
        .iter()
        .filter(|r| r["viewer_id"] == org.members["cmd1"].to_string())
        .collect();
    assert_eq!(by_cmd1.len(), 3);
    assert!(by_cmd1.iter().all(|r| r["subject_id"] == m1.to_string()));
    assert_eq!(by_cmd1.iter().filter(|r| r["action"] == "track").count(), 2);
    assert!(
        by_cmd1
            .iter()
            .all(|r| r["span_from"].is_string() && r["at"].is_string())
    );
    // Only admins read the trail; nothing can change or delete it.
    s.get("/api/v1/audit", &cmd1)
        .await
        .assert_problem(403, "forbidden");
    let rid = records[0]["id"].as_str().unwrap();
    for method in [Method::DELETE, Method::PATCH, Method::PUT] {
        let a = s
            .send(
                method,
                &format!("/api/v1/audit/{rid}"),
                Some(&org.admin),
                Some(json!({})),
            )
            .await;
        assert!(
            a.status == StatusCode::NOT_FOUND || a.status == StatusCode::METHOD_NOT_ALLOWED,
            "{a:#?}"
        );
    }
    s.send(Method::DELETE, "/api/v1/audit", Some(&org.admin), None)
        .await
        .assert_problem(405, "method_not_allowed");
    // Limits: a track covers at most 7 days.
    let wide = format!(
        "from={}&to={}",
        at(-8 * 86400).replace('+', "%2B"),
        at(0).replace('+', "%2B")
    );
    s.get(&format!("/api/v1/members/{m1}/track?{wide}"), &cmd1)
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(
        audit_count(&s, &org.admin).await,
        4,
        "refused reads leave no record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_stable_while_new_fixes_arrive() {
    let s = TestServer::start().await;
    Org::create(&s).await;
    let token = s.token("vol1").await;
    for i in 0..10 {
        s.post(
            "/api/v1/checkins",
            &token,
            fix(-1000 + i * 30, 34.22 + i as f64 * 1e-4),
        )
        .await;
    }
    let first = s.get("/api/v1/checkins?limit=4", &token).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    // New fixes arrive (one recorded earlier than all the others: a late upload).
    s.post("/api/v1/checkins", &token, fix(-5000, 34.2)).await;
    s.post("/api/v1/checkins", &token, fix(-10, 34.23)).await;
    let mut seen: Vec<Value> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].clone())
        .collect();
    let mut next = Some(cursor);
    while let Some(c) = next {
        let page = s
            .get(&format!("/api/v1/checkins?limit=4&cursor={c}"), &token)
            .await;
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].clone()),
        );
        next = page.body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        seen.len(),
        10,
        "the pages hold exactly the fixes there were when paging began"
    );
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_past_retention_are_purged() {
    let s = TestServer::start_with(|settings| settings.retention_days = 1).await;
    Org::create(&s).await;
    let token = s.token("vol1").await;
    s.post("/api/v1/checkins", &token, fix(-2 * 86400, 34.22))
        .await;
    s.post("/api/v1/checkins", &token, fix(-60, 34.2201)).await;
    let purged = patrol_server::retention::purge(&s.state.db, &s.state.settings)
        .await
        .unwrap();
    assert_eq!(purged.fixes, 1);
    assert_eq!(count(&s, &token, "").await, 1);
}
