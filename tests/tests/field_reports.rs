//! Wrong answers in the field (issue 25): the coverage map's span, past and upcoming roster
//! gaps, the evidence in GPX tracks, the volunteer report below the district, and the
//! small lies of `/coverage` and the reports (negative zero, lax months, ignored
//! parameters, an unseen post, what `shifts` counts).

use api_tests::{Org, PASSWORD, TestServer, id};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const LAT: f64 = 34.22;
const LON: f64 = 108.95;

fn now_s() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn q(t: DateTime<Utc>) -> String {
    iso(t).replace('+', "%2B")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn fix(t: DateTime<Utc>, extra: Value) -> Value {
    let mut f = json!({"client_id": Uuid::new_v4(), "recorded_at": iso(t), "lat": LAT, "lon": LON, "accuracy_m": 5.0});
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    f
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

    async fn post(&self, code: &str, kind: &str, extra: Value) -> Uuid {
        let geometry = if kind == "route" {
            json!({"type": "LineString", "coordinates": [[LON, LAT], [LON + 0.01, LAT]]})
        } else {
            json!({"type": "Point", "coordinates": [LON, LAT]})
        };
        let mut body = json!({"code": code, "name": code, "kind": kind, "unit_id": self.org.street1, "geometry": geometry});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        id(&self.s.post("/api/v1/posts", &self.org.admin, body).await)
    }

    async fn shift(&self, post: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) -> Uuid {
        let body = json!({"post_id": post, "starts_at": iso(from), "ends_at": iso(to),
            "member_ids": [self.org.members["kiosk1"]]});
        id(&self.s.post("/api/v1/shifts", &self.org.admin, body).await)
    }

    async fn send(&self, who: &str, fixes: Vec<Value>) {
        let token = self.s.token(who).await;
        let a = self
            .s
            .post("/api/v1/checkins", &token, json!({"checkins": fixes}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        assert_eq!(a.body["rejected"], 0, "{}", a.body);
    }
}

/// Item 13: a two-hour span inside an eight-hour shift shows the whole shift's figures,
/// and the map says so: the collection names its figures `whole_shifts`, and each
/// feature the time its figures cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_says_its_figures_are_of_whole_shifts() {
    let w = World::new().await;
    let end = now_s() - Duration::hours(1);
    let start = end - Duration::hours(8);
    let k = w.post("K1", "kiosk", json!({"staffing": "rostered"})).await;
    w.shift(k, start, end).await;
    // At the kiosk for the first hour only.
    w.send(
        "kiosk1",
        (0..60)
            .map(|i| fix(start + Duration::minutes(i), json!({})))
            .collect(),
    )
    .await;
    let (from, to) = (start + Duration::hours(2), start + Duration::hours(4));
    let a =
        w.s.get(
            &format!("/api/v1/coverage/map?from={}&to={}", q(from), q(to)),
            &w.org.admin,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["figures"], "whole_shifts", "{}", a.body);
    assert_eq!(time(&a.body["from"]), from);
    assert_eq!(time(&a.body["to"]), to);
    let p = &a.body["features"][0]["properties"];
    assert_eq!(time(&p["shifts_from"]), start, "{p}");
    assert_eq!(time(&p["shifts_to"]), end, "{p}");
    // The whole shift's figure: one hour staffed of eight, not none of the two asked for.
    let staffed = p["staffed_fraction"].as_f64().unwrap();
    assert!((staffed - 1.0 / 8.0).abs() < 0.01, "{p}");

    // Without shifts the span of the figures is null.
    let a =
        w.s.get(
            &format!(
                "/api/v1/coverage/map?from={}&to={}",
                q(end + Duration::minutes(10)),
                q(end + Duration::minutes(20))
            ),
            &w.org.admin,
        )
        .await;
    let p = &a.body["features"][0]["properties"];
    assert_eq!(p["status"], "unrostered");
    assert!(
        p["shifts_from"].is_null() && p["shifts_to"].is_null(),
        "{p}"
    );
}

/// Item 14: roster gaps are split at the moment of asking; the past ones are gaps, the
/// later ones time not rostered yet, marked `upcoming`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_gaps_are_split_at_now_into_past_and_upcoming() {
    let w = World::new().await;
    let now = now_s();
    let k = w
        .post(
            "K24",
            "kiosk",
            json!({"staffing": "24x7", "min_headcount": 1}),
        )
        .await;
    w.shift(k, now - Duration::hours(10), now - Duration::hours(6))
        .await;
    let before = Utc::now();
    let a =
        w.s.get(
            &format!(
                "/api/v1/rosters/gaps?from={}&to={}",
                q(now - Duration::hours(12)),
                q(now + Duration::hours(12))
            ),
            &w.org.admin,
        )
        .await;
    let after = Utc::now();
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let items = a.body["items"].as_array().unwrap();
    let (mut past, mut upcoming) = (Duration::zero(), Duration::zero());
    for g in items {
        let (from, to) = (time(&g["from"]), time(&g["to"]));
        // Split at the moment of asking (to the second): none runs through it.
        match g["upcoming"].as_bool() {
            Some(true) => {
                assert!(from >= before - Duration::seconds(1), "{g}");
                upcoming += to - from;
            }
            Some(false) => {
                assert!(to <= after, "{g}");
                past += to - from;
            }
            None => panic!("no `upcoming`: {g}"),
        }
    }
    // Two past gaps (before the shift, and after it up to now) of 2 + 6 hours; 12 ahead.
    assert_eq!(
        items.iter().filter(|g| g["upcoming"] == false).count(),
        2,
        "{items:?}"
    );
    assert!(
        (past - Duration::hours(8)).num_seconds().abs() <= 2,
        "{past}"
    );
    assert!(
        (upcoming - Duration::hours(12)).num_seconds().abs() <= 2,
        "{upcoming}"
    );
}

/// Item 15: a GPX track keeps every fix's flags, kind and accuracy (in our extensions)
/// and is named by the member's display name, XML-escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpx_tracks_carry_the_flags_and_the_members_name() {
    let w = World::new().await;
    let m = id(&w
        .s
        .post(
            "/api/v1/members",
            &w.org.admin,
            json!({"username": "li.wei", "display_name": "Li & <Wei>", "role": "patrol_officer",
                "unit_id": w.org.street1, "password": PASSWORD}),
        )
        .await);
    let t0 = now_s() - Duration::hours(1);
    w.send(
        "li.wei",
        vec![
            fix(t0, json!({"kind": "on_duty"})),
            fix(
                t0 + Duration::minutes(1),
                json!({"mock": true, "accuracy_m": 12.5}),
            ),
        ],
    )
    .await;
    let a =
        w.s.get(
            &format!(
                "/api/v1/members/{m}/track?from={}&to={}&format=gpx",
                q(t0 - Duration::minutes(1)),
                q(t0 + Duration::minutes(5))
            ),
            &w.org.admin,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let gpx = &a.text;
    assert!(
        gpx.contains("xmlns:patrol=\"urn:patrol:gpx:1\""),
        "the namespace: {gpx}"
    );
    assert!(
        gpx.contains("<name>Li &amp; &lt;Wei&gt;</name>"),
        "the name: {gpx}"
    );
    let points: Vec<&str> = gpx.split("<trkpt").skip(1).collect();
    assert_eq!(points.len(), 2, "{gpx}");
    assert!(
        points[0].contains("<patrol:kind>on_duty</patrol:kind>")
            && points[0].contains("<patrol:accuracy_m>5</patrol:accuracy_m>")
            && !points[0].contains("mock_location"),
        "{}",
        points[0]
    );
    assert!(
        points[1].contains("<patrol:kind>ping</patrol:kind>")
            && points[1].contains("<patrol:accuracy_m>12.5</patrol:accuracy_m>")
            && points[1].contains("<patrol:flag>mock_location</patrol:flag>"),
        "{}",
        points[1]
    );
    // Extensions come last in a GPX point, after the time.
    assert!(points[1].find("</time>") < points[1].find("<extensions>"));
}

/// Item 16: below the district there is no goal; units are named; the CSV carries the
/// totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volunteer_report_below_the_district_has_no_goal_and_names_units() {
    let w = World::new().await;
    id(&w
        .s
        .post(
            "/api/v1/teams",
            &w.org.admin,
            json!({"code": "VS-C1", "name": "Red armbands C1", "kind": "volunteer_squad",
                "unit_id": w.org.community1, "member_ids": [w.org.members["vol1"]]}),
        )
        .await);
    id(&w
        .s
        .post(
            "/api/v1/members",
            &w.org.admin,
            json!({"username": "dcmd", "role": "commander", "unit_id": w.org.district, "password": PASSWORD}),
        )
        .await);

    let street = w.s.token("cmd1").await;
    let a = w.s.get("/api/v1/reports/volunteers", &street).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert!(a.body["goal"].is_null(), "{}", a.body);
    assert!(a.body["share_of_goal"].is_null(), "{}", a.body);
    assert_eq!(a.body["total_volunteers"], 1);
    let row = &a.body["items"][0];
    assert_eq!(row["unit_id"], json!(w.org.community1));
    assert_eq!(row["unit_code"], "C1");
    assert_eq!(row["unit_name"], "Unit C1");

    for who in [w.org.admin.clone(), w.s.token("dcmd").await] {
        let a = w.s.get("/api/v1/reports/volunteers", &who).await;
        assert_eq!(a.body["goal"], 10000, "{}", a.body);
        assert_eq!(a.body["share_of_goal"], 0.0001, "{}", a.body);
    }

    let csv =
        w.s.get("/api/v1/reports/volunteers?format=csv", &street)
            .await;
    assert_eq!(csv.status, StatusCode::OK, "{csv:#?}");
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(
        lines[0],
        "team_id,team_code,team_name,unit_id,unit_code,unit_name,unit_kind,active_members,standard,below_standard"
    );
    assert!(
        lines[1].ends_with(",C1,Unit C1,community,1,15,true"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "");
    assert_eq!(
        lines[3],
        "squads,below_standard,total_volunteers,goal,share_of_goal"
    );
    assert_eq!(lines[4], "1,1,1,,");
    let csv =
        w.s.get("/api/v1/reports/volunteers?format=csv", &w.org.admin)
            .await;
    assert!(csv.text.ends_with("\n1,1,1,10000,0.0001\n"), "{}", csv.text);
}

/// Item 17: no figure of coverage comes out as negative zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_figures_are_never_negative_zero() {
    let w = World::new().await;
    let r = w.post("R1", "route", json!({})).await;
    let end = now_s() - Duration::hours(1);
    let start = end - Duration::hours(2);
    w.shift(r, start, end).await;
    // Nowhere near the route: nothing covered.
    let far = fix(start + Duration::minutes(5), json!({"lat": LAT + 0.05}));
    w.send("kiosk1", vec![far]).await;
    let span = format!("from={}&to={}", q(start), q(end));
    for path in ["/api/v1/coverage", "/api/v1/coverage/map"] {
        let a = w.s.get(&format!("{path}?{span}"), &w.org.admin).await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        for sep in [',', '}', ']'] {
            assert!(
                !a.text.contains(&format!("-0.0{sep}")),
                "{path}: {}",
                a.text
            );
        }
    }
    let a =
        w.s.get(&format!("/api/v1/coverage?{span}"), &w.org.admin)
            .await;
    let route = &a.body["items"][0]["route"];
    assert_eq!(route["covered_m"].to_string(), "0.0", "{route}");
    assert_eq!(route["covered_fraction"].to_string(), "0.0", "{route}");
}

/// Item 17: a month is exactly `YYYY-MM`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_is_exactly_yyyy_mm() {
    let w = World::new().await;
    for month in [
        "2026-1",
        "2026-001",
        "26-01",
        "2026-01-01",
        "2026/01",
        "+2026-01",
    ] {
        let a =
            w.s.get(
                &format!(
                    "/api/v1/reports/compliance?month={}",
                    month.replace('+', "%2B")
                ),
                &w.org.admin,
            )
            .await;
        a.assert_problem(422, "validation_failed");
        assert_eq!(a.body["errors"][0]["field"], "month", "{month}: {a:#?}");
    }
    let a =
        w.s.get("/api/v1/reports/compliance?month=2026-01", &w.org.admin)
            .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
}

/// Item 17: `/coverage` and `/coverage/map` answer the whole span as JSON; a parameter
/// they do not honour is refused, naming it, rather than ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_refuses_parameters_it_does_not_honour() {
    let w = World::new().await;
    let span = format!("from={}&to={}", q(now_s() - Duration::hours(2)), q(now_s()));
    for (path, extra, field) in [
        ("/api/v1/coverage", "limit=10", "limit"),
        ("/api/v1/coverage", "format=csv", "format"),
        ("/api/v1/coverage", "cursor=abc", "cursor"),
        ("/api/v1/coverage/map", "limit=10", "limit"),
    ] {
        let a =
            w.s.get(&format!("{path}?{span}&{extra}"), &w.org.admin)
                .await;
        a.assert_problem(422, "validation_failed");
        assert_eq!(
            a.body["errors"][0]["field"], field,
            "{path}?{extra}: {a:#?}"
        );
    }
    let a =
        w.s.get(&format!("/api/v1/coverage?{span}"), &w.org.admin)
            .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
}

/// Item 17: a post the caller may not see is a 404 on `/coverage` and `/coverage/map`, as
/// a unit out of scope is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unseen_post_on_coverage_is_a_404() {
    let w = World::new().await;
    let k = w.post("K1", "kiosk", json!({})).await;
    let span = format!("from={}&to={}", q(now_s() - Duration::hours(2)), q(now_s()));
    let other_street = w.s.token("cmd2").await;
    for path in ["/api/v1/coverage", "/api/v1/coverage/map"] {
        w.s.get(
            &format!("{path}?{span}&unit_id={}", w.org.street1),
            &other_street,
        )
        .await
        .assert_problem(404, "not_found");
        w.s.get(&format!("{path}?{span}&post_id={k}"), &other_street)
            .await
            .assert_problem(404, "not_found");
        w.s.get(
            &format!("{path}?{span}&post_id={}", Uuid::new_v4()),
            &w.org.admin,
        )
        .await
        .assert_problem(404, "not_found");
        let own = w.s.token("cmd1").await;
        let a = w.s.get(&format!("{path}?{span}&post_id={k}"), &own).await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    }
}

/// Item 17: `shifts` counts finished shifts in `/coverage` as in the compliance report;
/// running ones are `pending` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifts_counts_finished_shifts_in_every_report() {
    let w = World::new().await;
    let k = w.post("K1", "kiosk", json!({"staffing": "rostered"})).await;
    let now = now_s();
    let finished_end = now - Duration::minutes(30);
    let finished_start = finished_end - Duration::hours(1);
    w.shift(k, finished_start, finished_end).await;
    w.shift(k, now - Duration::minutes(10), now + Duration::hours(1))
        .await;
    let a =
        w.s.get(
            &format!(
                "/api/v1/coverage?from={}&to={}",
                q(finished_start),
                q(now + Duration::hours(1))
            ),
            &w.org.admin,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["items"].as_array().unwrap().len(), 2);
    for tally in [&a.body["summary"], &a.body["posts"][0]] {
        assert_eq!(tally["shifts"], 1, "{tally}");
        assert_eq!(tally["pending"], 1, "{tally}");
        assert_eq!(tally["missed"], 1, "{tally}");
    }
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let month = finished_start
        .with_timezone(&tz)
        .format("%Y-%m")
        .to_string();
    let report =
        w.s.get(
            &format!("/api/v1/reports/compliance?month={month}&level=street"),
            &w.org.admin,
        )
        .await;
    let s1 = report.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["unit_code"] == "S1")
        .unwrap()
        .clone();
    assert_eq!(s1["shifts"], 1, "{s1}");
}
