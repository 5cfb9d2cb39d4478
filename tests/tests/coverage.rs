//! Coverage end to end through HTTP: hand-built cases with answers worked out on paper,
//! late data, the map, the live board, reports and scope.

use api_tests::{Org, TestServer, id};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const LAT: f64 = 34.22;
const LON: f64 = 108.95;
/// Metres per degree of longitude and latitude at 34.22°N (WGS-84).
const M_PER_DEG_LON: f64 = 92_163.0;
const M_PER_DEG_LAT: f64 = 110_926.0;

/// Now to the whole second: shifts are stored to the second, so exact expectations need
/// whole-second shift bounds.
fn now_s() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn q(t: DateTime<Utc>) -> String {
    iso(t).replace('+', "%2B")
}

/// A position `east` and `north` metres from the reference point.
fn at(east: f64, north: f64) -> (f64, f64) {
    (LON + east / M_PER_DEG_LON, LAT + north / M_PER_DEG_LAT)
}

fn fix(t: DateTime<Utc>, east: f64, north: f64) -> Value {
    let (lon, lat) = at(east, north);
    json!({"client_id": Uuid::new_v4(), "recorded_at": iso(t), "lat": lat, "lon": lon, "accuracy_m": 5.0})
}

struct World {
    s: TestServer,
    org: Org,
}

impl World {
    async fn new() -> World {
        let s = TestServer::start().await;
        let org = Org::create(&s).await;
        World { s, org }
    }

    /// A straight east-west route of `length` metres starting at the reference point.
    async fn route(&self, code: &str, length: f64) -> Uuid {
        let (lon0, lat0) = at(0.0, 0.0);
        let (lon1, lat1) = at(length, 0.0);
        id(&self
            .s
            .post(
                "/api/v1/posts",
                &self.org.admin,
                json!({"code": code, "name": code, "kind": "route", "unit_id": self.org.street1,
                "geometry": {"type": "LineString", "coordinates": [[lon0, lat0], [lon1, lat1]]}}),
            )
            .await)
    }

    async fn kiosk(&self, code: &str, extra: Value) -> Uuid {
        let (lon, lat) = at(0.0, 0.0);
        let mut body = json!({"code": code, "name": code, "kind": "kiosk", "unit_id": self.org.street1,
            "geometry": {"type": "Point", "coordinates": [lon, lat]}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        id(&self.s.post("/api/v1/posts", &self.org.admin, body).await)
    }

    async fn shift(
        &self,
        post: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        members: &[&str],
        extra: Value,
    ) -> Uuid {
        let ids: Vec<Uuid> = members.iter().map(|m| self.org.members[*m]).collect();
        let mut body =
            json!({"post_id": post, "starts_at": iso(from), "ends_at": iso(to), "member_ids": ids});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        id(&self.s.post("/api/v1/shifts", &self.org.admin, body).await)
    }

    /// Kiosk K1 with an hour's shift of kiosk1's that ended two hours ago, kiosk1 at the
    /// kiosk with a fix every minute of it: (post, shift, start, end).
    async fn kiosk_staffed_an_hour(&self) -> (Uuid, Uuid, DateTime<Utc>, DateTime<Utc>) {
        let end = now_s() - Duration::hours(2);
        let start = end - Duration::hours(1);
        let k = self.kiosk("K1", json!({})).await;
        let shift = self.shift(k, start, end, &["kiosk1"], json!({})).await;
        self.send(
            "kiosk1",
            (0..60)
                .map(|i| fix(start + Duration::minutes(i), 0.0, 0.0))
                .collect(),
        )
        .await;
        (k, shift, start, end)
    }

    async fn send(&self, who: &str, fixes: Vec<Value>) {
        let token = self.s.token(who).await;
        for chunk in fixes.chunks(1000) {
            let a = self
                .s
                .post("/api/v1/checkins", &token, json!({"checkins": chunk}))
                .await;
            assert_eq!(a.status, StatusCode::OK, "{a:#?}");
            assert_eq!(a.body["rejected"], 0, "{}", a.body);
        }
    }

    async fn coverage(&self, post: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) -> Value {
        let a = self
            .s
            .get(
                &format!(
                    "/api/v1/coverage?from={}&to={}&post_id={post}",
                    q(from),
                    q(to)
                ),
                &self.org.admin,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        assert_eq!(a.body["items"].as_array().unwrap().len(), 1, "{}", a.body);
        a.body["items"][0].clone()
    }
}

fn close(actual: &Value, expected: f64, tolerance: f64) {
    let v = actual
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {actual}"));
    assert!(
        (v - expected).abs() <= tolerance,
        "{v} is not within {tolerance} of {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_walked_crossed_and_missed() {
    let w = World::new().await;
    let end = now_s() - Duration::hours(1);
    let start = end - Duration::hours(2);
    // A walk along the first 60 % of a straight 2 km route at 1.2 m/s, a fix every 30 s.
    // Covered: 0-1200 m walked, plus the 30 m corridor beyond the last fix: 1230 m = 0.615.
    let r1 = w.route("R1", 2000.0).await;
    w.shift(r1, start, end, &["officer1"], json!({})).await;
    let walk: Vec<Value> = (0..=34)
        .map(|i| {
            fix(
                start + Duration::seconds(60 + 30 * i),
                (36.0 * i as f64).min(1200.0),
                0.0,
            )
        })
        .collect();
    w.send("officer1", walk).await;
    let c = w.coverage(r1, start, end).await;
    assert_eq!(c["status"], "partial", "{c}");
    close(&c["route"]["covered_fraction"], 0.615, 0.005);
    close(&c["route"]["length_m"], 2000.0, 2.0);
    close(&c["route"]["uncovered"][0][0], 1230.0, 5.0);
    close(&c["route"]["uncovered"][0][1], 2000.0, 2.0);
    assert_eq!(c["eligible_fixes"], 35);

    // A track on a parallel street 40 m away: outside the 30 m corridor, nothing covered.
    let r2 = w.route("R2", 2000.0).await;
    w.shift(r2, start, end, &["officer2"], json!({})).await;
    let parallel: Vec<Value> = (0..=55)
        .map(|i| {
            fix(
                start + Duration::seconds(60 + 30 * i),
                36.0 * i as f64,
                40.0,
            )
        })
        .collect();
    w.send("officer2", parallel).await;
    let c = w.coverage(r2, start, end).await;
    assert_eq!(c["status"], "missed", "{c}");
    close(&c["route"]["covered_fraction"], 0.0, 1e-9);

    // One perpendicular crossing at 1000 m: 2 × 30 m covered.
    let r3 = w.route("R3", 2000.0).await;
    w.shift(r3, start, end, &["vol1"], json!({})).await;
    let crossing: Vec<Value> = (0..=10)
        .map(|i| {
            fix(
                start + Duration::seconds(600 + 30 * i),
                1000.0,
                -180.0 + 36.0 * i as f64,
            )
        })
        .collect();
    w.send("vol1", crossing).await;
    let c = w.coverage(r3, start, end).await;
    assert_eq!(c["status"], "partial", "{c}");
    close(&c["route"]["covered_m"], 60.0, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosks_staffed_short_alone_and_late() {
    let w = World::new().await;
    let end = now_s() - Duration::minutes(30);
    // A kiosk staffed 6 of 8 hours: a fix a minute for the first 6 hours. With max_gap_s
    // 120 each fix makes its member present 60 s either side, so the presence runs from
    // the start to 6 h + 60 s: 0.752 of the shift.
    let k1 = w.kiosk("K1", json!({})).await;
    let start = end - Duration::hours(8);
    w.shift(k1, start, end, &["kiosk1"], json!({})).await;
    let fixes: Vec<Value> = (0..=360)
        .map(|i| fix(start + Duration::minutes(i), 3.0, 2.0))
        .collect();
    w.send("kiosk1", fixes).await;
    let c = w.coverage(k1, start, end).await;
    assert_eq!(c["status"], "partial", "{c}");
    close(
        &c["presence"]["staffed_fraction"],
        (6.0 * 3600.0 + 60.0) / (8.0 * 3600.0),
        0.001,
    );
    close(&c["presence"]["late_min"], 0.0, 0.01);
    assert_eq!(c["presence"]["unstaffed"].as_array().unwrap().len(), 1);

    // Two needed, only one there: never staffed, but present all along.
    let k2 = w.kiosk("K2", json!({"min_headcount": 2})).await;
    let start2 = end - Duration::hours(1);
    w.shift(k2, start2, end, &["officer1", "vol1"], json!({}))
        .await;
    let fixes: Vec<Value> = (0..=60)
        .map(|i| fix(start2 + Duration::minutes(i), 1.0, 1.0))
        .collect();
    w.send("officer1", fixes).await;
    let c = w.coverage(k2, start2, end).await;
    assert_eq!(c["status"], "partial", "{c}");
    close(&c["presence"]["staffed_fraction"], 0.0, 1e-9);
    close(&c["presence"]["present_fraction"], 1.0, 0.001);
    assert_eq!(c["presence"]["max_headcount"], 1);

    // A late arrival beyond the 15-minute grace: enough presence, but late.
    let k3 = w.kiosk("K3", json!({"required_presence": 0.5})).await;
    let start3 = end - Duration::hours(2);
    w.shift(k3, start3, end, &["officer2"], json!({})).await;
    let fixes: Vec<Value> = (30..=120)
        .map(|i| fix(start3 + Duration::minutes(i), 0.0, 0.0))
        .collect();
    w.send("officer2", fixes).await;
    let c = w.coverage(k3, start3, end).await;
    assert_eq!(c["status"], "partial", "{c}");
    close(&c["presence"]["late_min"], 29.0, 0.01);
    assert!(c["presence"]["staffed_fraction"].as_f64().unwrap() > 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_fixes_update_stored_figures_and_running_shifts_are_pending() {
    let w = World::new().await;
    let end = now_s() - Duration::hours(2);
    let start = end - Duration::hours(1);
    let k = w.kiosk("K1", json!({})).await;
    let shift = w.shift(k, start, end, &["kiosk1"], json!({})).await;
    // Read once: nobody came, missed (and stored).
    let c = w.coverage(k, start, end).await;
    assert_eq!(c["status"], "missed", "{c}");
    assert_eq!(c["eligible_fixes"], 0);
    assert!(!stored(&w.s, &[shift]).await[0].0, "stored and fresh");
    // The phone was offline; its queue arrives after the shift ended.
    let fixes: Vec<Value> = (0..60)
        .map(|i| fix(start + Duration::minutes(i), 0.0, 0.0))
        .collect();
    w.send("kiosk1", fixes).await;
    let c = w.coverage(k, start, end).await;
    assert_eq!(
        c["status"], "met",
        "the late batch updated the stored figures: {c}"
    );
    assert_eq!(c["eligible_fixes"], 60);
    assert!(!stored(&w.s, &[shift]).await[0].0, "stored again, fresh");
    // Someone not on the shift was at the kiosk too; their phone syncs late as well. Their
    // fixes can change no figure that counts, so the stored figures stay as they are
    // (otherwise anyone could have any week computed again): a recomputation from the
    // fixes counts them as evidence (not a member).
    assert_eq!(c["excluded"]["not_member"], 0, "{c}");
    w.send(
        "vol1",
        (0..3)
            .map(|i| fix(start + Duration::minutes(10 + i), 1.0, 1.0))
            .collect(),
    )
    .await;
    assert!(!stored(&w.s, &[shift]).await[0].0, "not marked stale");
    let c = w.coverage(k, start, end).await;
    assert_eq!(c["excluded"]["not_member"], 0, "{c}");
    patrol_server::coverage::rebuild(&w.s.state, start, end, |_, _| {})
        .await
        .unwrap();
    let c = w.coverage(k, start, end).await;
    assert_eq!(c["excluded"]["not_member"], 3, "{c}");
    assert_eq!(c["status"], "met", "{c}");

    // A running shift: pending, with figures so far.
    let k2 = w.kiosk("K2", json!({})).await;
    let now = now_s();
    w.shift(
        k2,
        now - Duration::minutes(30),
        now + Duration::minutes(30),
        &["vol1"],
        json!({}),
    )
    .await;
    w.send(
        "vol1",
        (0..=20)
            .map(|i| fix(now - Duration::minutes(30) + Duration::minutes(i), 0.0, 0.0))
            .collect(),
    )
    .await;
    let c = w
        .coverage(k2, now - Duration::hours(1), now + Duration::hours(1))
        .await;
    assert_eq!(c["status"], "pending", "{c}");
    assert!(c["presence"]["present_fraction"].as_f64().unwrap() > 0.6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_or_post_corrected_after_the_shift_changes_its_stored_figures() {
    let w = World::new().await;
    let (k, shift, start, end) = w.kiosk_staffed_an_hour().await;
    let c = w.coverage(k, start, end).await;
    assert_eq!(c["status"], "met", "{c}");
    assert!(!stored(&w.s, &[shift]).await[0].0, "stored and fresh");

    // The roster named the wrong officer: corrected the next day, the shift was missed.
    let a =
        w.s.patch(
            &format!("/api/v1/shifts/{shift}"),
            &w.org.admin,
            json!({"member_ids": [w.org.members["vol1"]]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let c = w.coverage(k, start, end).await;
    assert_eq!(c["status"], "missed", "the corrected roster counts: {c}");
    assert_eq!(c["excluded"]["not_member"], 60, "{c}");

    // Back to the right officer, and the kiosk moved 500 m: nobody was at the new place.
    w.s.patch(
        &format!("/api/v1/shifts/{shift}"),
        &w.org.admin,
        json!({"member_ids": [w.org.members["kiosk1"]]}),
    )
    .await;
    assert_eq!(w.coverage(k, start, end).await["status"], "met");
    let (lon, lat) = at(500.0, 0.0);
    let a =
        w.s.patch(
            &format!("/api/v1/posts/{k}"),
            &w.org.admin,
            json!({"geometry": {"type": "Point", "coordinates": [lon, lat]}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let c = w.coverage(k, start, end).await;
    assert_eq!(c["status"], "missed", "the moved post counts: {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_board_reports_and_scope() {
    let w = World::new().await;
    let end = now_s() - Duration::minutes(20);
    let start = end - Duration::hours(2);
    let r1 = w.route("R1", 2000.0).await;
    w.shift(r1, start, end, &["officer1"], json!({})).await;
    let walk: Vec<Value> = (0..=34)
        .map(|i| {
            fix(
                start + Duration::seconds(60 + 30 * i),
                (36.0 * i as f64).min(1200.0),
                0.0,
            )
        })
        .collect();
    w.send("officer1", walk).await;
    let k = w.kiosk("K1", json!({})).await;
    let now = now_s();
    w.shift(
        k,
        now - Duration::hours(1),
        now + Duration::hours(1),
        &["kiosk1", "vol1"],
        json!({}),
    )
    .await;

    // The map: the route in a covered and an uncovered piece, the kiosk as a point.
    let map =
        w.s.get(
            &format!(
                "/api/v1/coverage/map?from={}&to={}",
                q(start),
                q(now + Duration::hours(2))
            ),
            &w.org.admin,
        )
        .await;
    assert_eq!(map.status, StatusCode::OK, "{map:#?}");
    assert_eq!(map.content_type(), "application/geo+json");
    let features = map.body["features"].as_array().unwrap();
    let pieces: Vec<&Value> = features
        .iter()
        .filter(|f| f["properties"]["post_code"] == "R1")
        .collect();
    assert_eq!(pieces.len(), 2, "{pieces:#?}");
    assert!(
        pieces
            .iter()
            .any(|p| p["properties"]["covered"] == true && p["properties"]["stroke"] == "#2e7d32")
    );
    assert!(pieces.iter().any(|p| p["properties"]["covered"] == false));
    assert!(pieces.iter().all(|p| p["geometry"]["type"] == "LineString"));
    let kiosk = features
        .iter()
        .find(|f| f["properties"]["post_code"] == "K1")
        .unwrap();
    assert_eq!(kiosk["geometry"]["type"], "Point");
    assert_eq!(kiosk["properties"]["status"], "pending");

    // The live board: the kiosk is rostered with two, unstaffed; both are silent. One fix
    // at the kiosk makes it staffed and its sender no longer silent.
    let board = w.s.get("/api/v1/status/now", &w.org.admin).await;
    assert_eq!(board.status, StatusCode::OK, "{board:#?}");
    let k1 = board.body["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["post_code"] == "K1")
        .unwrap()
        .clone();
    assert_eq!(
        (
            k1["rostered"].as_u64(),
            k1["required"].as_u64(),
            k1["staffed"].as_bool()
        ),
        (Some(2), Some(1), Some(false))
    );
    assert_eq!(board.body["silent"].as_array().unwrap().len(), 2);
    w.send(
        "kiosk1",
        vec![fix(now_s() - Duration::seconds(5), 2.0, 2.0)],
    )
    .await;
    let board = w.s.get("/api/v1/status/now", &w.org.admin).await;
    let k1 = board.body["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["post_code"] == "K1")
        .unwrap()
        .clone();
    assert_eq!(k1["staffed"], true, "{k1}");
    assert_eq!(k1["present"], json!([w.org.members["kiosk1"].to_string()]));
    assert_eq!(board.body["silent"].as_array().unwrap().len(), 1);

    // Scope: the commander of street 2 sees none of street 1's posts anywhere.
    let cmd2 = w.s.token("cmd2").await;
    let span = format!("from={}&to={}", q(start), q(now + Duration::hours(2)));
    assert_eq!(
        w.s.get(&format!("/api/v1/coverage?{span}"), &cmd2)
            .await
            .body["items"],
        json!([])
    );
    assert_eq!(
        w.s.get(&format!("/api/v1/coverage/map?{span}"), &cmd2)
            .await
            .body["features"],
        json!([])
    );
    assert_eq!(
        w.s.get("/api/v1/status/now", &cmd2).await.body["posts"],
        json!([])
    );
    w.s.get(
        &format!("/api/v1/coverage?{span}"),
        &w.s.token("officer1").await,
    )
    .await
    .assert_problem(403, "forbidden");
    let cmd1 = w.s.token("cmd1").await;
    assert_eq!(
        w.s.get(&format!("/api/v1/coverage?{span}"), &cmd1)
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    w.s.get(
        &format!(
            "/api/v1/coverage?from={}&to={}",
            q(start),
            q(start + Duration::days(70))
        ),
        &cmd1,
    )
    .await
    .assert_problem(422, "validation_failed");

    // Reports: JSON and CSV agree.
    let month = now_s().format("%Y-%m").to_string();
    let json_report =
        w.s.get(
            &format!("/api/v1/reports/compliance?month={month}&level=street"),
            &w.org.admin,
        )
        .await;
    assert_eq!(json_report.status, StatusCode::OK, "{json_report:#?}");
    let csv_report =
        w.s.get(
            &format!("/api/v1/reports/compliance?month={month}&level=street&format=csv"),
            &w.org.admin,
        )
        .await;
    assert!(csv_report.content_type().starts_with("text/csv"));
    let lines: Vec<&str> = csv_report.text.lines().collect();
    assert!(lines[0].starts_with("rank,unit_id,unit_code"));
    let items = json_report.body["items"].as_array().unwrap();
    assert_eq!(lines.len(), items.len() + 1);
    for (line, item) in lines[1..].iter().zip(items) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[1], item["unit_id"].as_str().unwrap());
        assert_eq!(cells[2], item["unit_code"].as_str().unwrap());
        assert_eq!(cells[5], item["shifts"].to_string());
    }
    w.s.get("/api/v1/reports/compliance?month=2026-13", &w.org.admin)
        .await
        .assert_problem(422, "validation_failed");
    let vol =
        w.s.get("/api/v1/reports/volunteers?format=csv", &w.org.admin)
            .await;
    assert_eq!(vol.status, StatusCode::OK);
    assert!(vol.text.starts_with("team_id,team_code"));
    let vol = w.s.get("/api/v1/reports/volunteers", &w.org.admin).await;
    assert_eq!(vol.body["goal"], 10000);
}

/// The stored figures of these shifts, as stored (the JSON of each result), by shift.
async fn stored(s: &TestServer, shifts: &[Uuid]) -> Vec<(bool, Value)> {
    use patrol_server::store::shift_coverage;
    use sea_orm::EntityTrait;
    let mut out = Vec::new();
    for sid in shifts {
        let row = shift_coverage::Entity::find_by_id(*sid)
            .one(&s.state.db)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no stored coverage for {sid}"));
        out.push((row.stale, serde_json::from_str(&row.result).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_shift_is_answered_from_stored_figures_without_its_fixes() {
    use patrol_server::store::fix;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let w = World::new().await;
    let (k, shift, start, end) = w.kiosk_staffed_an_hour().await;
    let first = w.coverage(k, start, end).await;
    assert_eq!(first["status"], "met", "{first}");
    assert_eq!(first["eligible_fixes"], 60);
    let [(stale, _)] = stored(&w.s, &[shift]).await[..] else {
        unreachable!()
    };
    assert!(!stale, "the finished shift's figures are stored and fresh");

    // The raw fixes of the day go away behind the server's back.
    let gone = fix::Entity::delete_many()
        .filter(fix::Column::MemberId.eq(w.org.members["kiosk1"]))
        .exec(&w.s.state.db)
        .await
        .unwrap();
    assert_eq!(gone.rows_affected, 60);
    let again = w.coverage(k, start, end).await;
    assert_eq!(
        again, first,
        "a finished shift is read from its stored figures, not rescanned from its fixes"
    );

    // The check has teeth: once the stored figures are out of date (as late fixes make
    // them), the shift is computed again from what fixes there are, which is none.
    patrol_server::coverage::mark_stale(&w.s.state, &[shift])
        .await
        .unwrap();
    let recomputed = w.coverage(k, start, end).await;
    assert_eq!(recomputed["status"], "missed", "{recomputed}");
    assert_eq!(recomputed["eligible_fixes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_gives_the_stored_figures_again() {
    let w = World::new().await;
    let end = now_s() - Duration::hours(2);
    let start = end - Duration::hours(3);
    let mid = start + Duration::hours(1);
    let r = w.route("R1", 1000.0).await;
    let k = w.kiosk("K1", json!({"min_headcount": 2})).await;
    // The officer walks half the route in the first hour and stays on after the second
    // starts; the kiosk is held by one, then two, and both are seen from the route's start.
    // The fixes come before the shifts are made, so that the first stored figures count
    // them whatever the updater's timing.
    w.send(
        "officer1",
        (0..=90)
            .map(|i| fix(start + Duration::minutes(i), (i % 60) as f64 * 8.0, 3.0))
            .collect(),
    )
    .await;
    w.send(
        "kiosk1",
        (0..150)
            .map(|i| fix(start + Duration::minutes(i), 2.0, 2.0))
            .collect(),
    )
    .await;
    w.send(
        "vol1",
        (60..170)
            .map(|i| fix(start + Duration::minutes(i), -3.0, 1.0))
            .collect(),
    )
    .await;
    let shifts = [
        w.shift(r, start, mid, &["officer1"], json!({})).await,
        w.shift(r, mid, end, &["officer1"], json!({})).await,
        w.shift(k, start, end, &["kiosk1", "vol1"], json!({})).await,
        w.shift(k, mid, end, &["vol1"], json!({})).await,
    ];
    let items =
        w.s.get(
            &format!("/api/v1/coverage?from={}&to={}", q(start), q(end)),
            &w.org.admin,
        )
        .await;
    assert_eq!(items.status, StatusCode::OK, "{items:#?}");
    assert_eq!(items.body["items"].as_array().unwrap().len(), 4);
    let before = stored(&w.s, &shifts).await;
    assert!(before.iter().all(|(stale, _)| !stale));
    let rebuilt =
        patrol_server::coverage::rebuild(&w.s.state, start - Duration::minutes(1), end, |_, _| {})
            .await
            .unwrap();
    assert_eq!(rebuilt, 4);
    let after = stored(&w.s, &shifts).await;
    for ((_, b), (stale, a)) in before.iter().zip(&after) {
        assert!(!stale);
        let mut a = a.clone();
        let mut b = b.clone();
        // Only when they were computed differs, never what.
        a["evaluated_until"] = Value::Null;
        b["evaluated_until"] = Value::Null;
        assert_eq!(a, b, "rebuilt figures equal the stored ones");
    }
    assert_ne!(after[0].1["excluded"]["not_member"], 0, "{}", after[0].1);
}

/// Packs every past hour that is due, as the server's packer does; `false` where there are
/// no packs (PostgreSQL).
async fn pack_past_hours(s: &TestServer) -> bool {
    let Some(options) = patrol_server::db::writer_options(&s.state.settings, 1024) else {
        return false;
    };
    tokio::task::spawn_blocking(move || patrol_server::packs::catch_up(&options, Utc::now()))
        .await
        .unwrap()
        .unwrap();
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_hours_give_the_figures_the_fixes_give_and_late_fixes_still_count() {
    let w = World::new().await;
    let end = now_s() - Duration::hours(4);
    let start = end - Duration::hours(2);
    let r = w.route("R1", 1000.0).await;
    let k = w.kiosk("K1", json!({})).await;
    // The officer walks the route in the first hour; the kiosk is held for 90 of the 120
    // minutes; a volunteer not on duty stops by.
    w.send(
        "officer1",
        (0..=60)
            .map(|i| fix(start + Duration::minutes(i), i as f64 * 16.0, 2.0))
            .collect(),
    )
    .await;
    w.send(
        "kiosk1",
        (0..90)
            .map(|i| fix(start + Duration::minutes(i), 1.0, 1.0))
            .collect(),
    )
    .await;
    w.send(
        "vol1",
        (30..40)
            .map(|i| fix(start + Duration::minutes(i), -2.0, 1.0))
            .collect(),
    )
    .await;
    let shifts = [
        w.shift(r, start, end, &["officer1"], json!({})).await,
        w.shift(k, start, end, &["kiosk1"], json!({})).await,
    ];
    let route = w.coverage(r, start, end).await;
    let kiosk = w.coverage(k, start, end).await;
    assert_eq!(kiosk["status"], "partial", "{kiosk}");
    // The volunteer's ten fixes, and the officer's first few as he sets off from the kiosk.
    assert!(
        kiosk["excluded"]["not_member"].as_u64().unwrap() > 10,
        "{kiosk}"
    );
    let from_fixes = stored(&w.s, &shifts).await;

    if !pack_past_hours(&w.s).await {
        return;
    }
    // Rebuilt from the packs, the figures are those computed from the fixes.
    let same = |a: &Value, b: &Value| {
        let (mut a, mut b) = (a.clone(), b.clone());
        a["evaluated_until"] = Value::Null;
        b["evaluated_until"] = Value::Null;
        assert_eq!(a, b, "figures from packs equal those from the fixes");
    };
    let rebuilt =
        patrol_server::coverage::rebuild(&w.s.state, start - Duration::minutes(1), end, |_, _| {})
            .await
            .unwrap();
    assert_eq!(rebuilt, 2);
    for ((_, a), (stale, b)) in from_fixes.iter().zip(&stored(&w.s, &shifts).await) {
        assert!(!stale);
        same(a, b);
    }
    same(&w.coverage(r, start, end).await, &route);

    // The kiosk phone's last half hour arrives late, into packed hours: the stored figures
    // change as they would without packs, and again after those hours are packed anew.
    w.send(
        "kiosk1",
        (90..120)
            .map(|i| fix(start + Duration::minutes(i), 1.0, 1.0))
            .collect(),
    )
    .await;
    let late = w.coverage(k, start, end).await;
    assert_eq!(late["status"], "met", "{late}");
    assert_eq!(late["eligible_fixes"], 120, "{late}");
    assert_eq!(
        late["excluded"]["not_member"], kiosk["excluded"]["not_member"],
        "{late}"
    );
    // The kiosk is by the route's start: its officer is evidence there too, though not on
    // the route's shift, so the late fixes leave the route's stored figures alone until
    // they are computed again.
    let late_route = w.coverage(r, start, end).await;
    same(&late_route, &route);
    assert!(pack_past_hours(&w.s).await);
    patrol_server::coverage::rebuild(&w.s.state, start - Duration::minutes(1), end, |_, _| {})
        .await
        .unwrap();
    same(&w.coverage(k, start, end).await, &late);
    let rebuilt_route = w.coverage(r, start, end).await;
    assert_eq!(
        rebuilt_route["excluded"]["not_member"].as_u64().unwrap(),
        route["excluded"]["not_member"].as_u64().unwrap() + 30,
        "{rebuilt_route}"
    );
    assert_eq!(rebuilt_route["status"], route["status"]);
    assert_eq!(
        rebuilt_route["route"]["covered_m"],
        route["route"]["covered_m"]
    );
}
