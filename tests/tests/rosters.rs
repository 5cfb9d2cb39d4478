//! Shifts, roster generation with each rotation rule, roster gaps and an officer's duties.

use api_tests::{Org, PASSWORD, TestServer, id};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

struct Setup {
    org: Org,
    kiosk: Uuid,
    route: Uuid,
    /// Four kiosk crews A-D with one member each, in street 1.
    crews: Vec<Uuid>,
    crew_members: Vec<Uuid>,
}

async fn setup(s: &TestServer) -> Setup {
    let org = Org::create(s).await;
    let admin = &org.admin;
    let kiosk = id(&s
        .post(
            "/api/v1/posts",
            admin,
            json!({"code": "K01", "name": "Kiosk", "kind": "kiosk", "unit_id": org.street1,
            "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
        )
        .await);
    let route = id(&s
        .post(
            "/api/v1/posts",
            admin,
            json!({"code": "R01", "name": "Route", "kind": "route", "unit_id": org.street1,
            "geometry": {"type": "LineString", "coordinates": [[108.95, 34.22], [108.96, 34.22]]}}),
        )
        .await);
    let mut crews = Vec::new();
    let mut crew_members = Vec::new();
    for letter in ["a", "b", "c", "d"] {
        let m = id(&s
            .post("/api/v1/members", admin, json!({"username": format!("crew.{letter}"), "role": "kiosk_officer", "unit_id": org.street1, "password": PASSWORD}))
            .await);
        crew_members.push(m);
        crews.push(id(&s
            .post("/api/v1/teams", admin, json!({"code": format!("KC-{letter}"), "name": format!("Crew {letter}"), "kind": "kiosk_crew", "unit_id": org.street1, "member_ids": [m]}))
            .await));
    }
    Setup {
        org,
        kiosk,
        route,
        crews,
        crew_members,
    }
}

async fn shifts(s: &TestServer, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let a = s
            .get(&format!("/api/v1/shifts?limit=1000&{query}{cursor}"), token)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        out.extend(a.body["items"].as_array().unwrap().iter().cloned());
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    out.sort_by_key(|s| s["starts_at"].as_str().unwrap().to_owned());
    out
}

fn four_team(setup: &Setup, from: &str, to: &str) -> Value {
    json!({"post_ids": [setup.kiosk], "from": from, "to": to, "pattern": {
        "shifts": [{"start": "00:00", "end": "08:00"}, {"start": "08:00", "end": "16:00"}, {"start": "16:00", "end": "24:00"}],
        "teams": setup.crews, "rotation": "four_team_three_shift"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_crud_validation_and_scope() {
    let s = TestServer::start().await;
    let st = setup(&s).await;
    let cmd1 = s.token("cmd1").await;
    let cmd2 = s.token("cmd2").await;
    let body = json!({"post_id": st.kiosk, "starts_at": "2026-12-01T08:00:00+08:00", "ends_at": "2026-12-01T16:00:00+08:00",
                      "team_id": st.crews[0], "member_ids": [st.org.members["kiosk1"]], "note": "market day"});
    let a = s.post("/api/v1/shifts", &cmd1, body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    assert_eq!(a.body["starts_at"], "2026-12-01T00:00:00Z");
    assert_eq!(a.body["min_headcount"], 1, "defaults to the post's");
    assert_eq!(
        a.body["member_ids"],
        json!([st.org.members["kiosk1"].to_string()])
    );
    let sid = id(&a);
    s.post("/api/v1/shifts", &cmd1, body)
        .await
        .assert_problem(409, "conflict");

    let bad = |patch: Value| {
        let mut b = json!({"post_id": st.kiosk, "starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-02T08:00:00Z", "team_id": st.crews[1]});
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (patch, field) in [
        (json!({"ends_at": "2026-12-01T23:00:00Z"}), "ends_at"),
        (json!({"ends_at": "2026-12-04T00:00:01Z"}), "ends_at"),
        (json!({"team_id": null}), "team_id"),
        (json!({"team_id": Uuid::now_v7()}), "team_id"),
        (json!({"post_id": Uuid::now_v7()}), "post_id"),
        (json!({"member_ids": [Uuid::now_v7()]}), "member_ids[0]"),
        (json!({"min_headcount": 0}), "min_headcount"),
        (json!({"note": "x".repeat(501)}), "note"),
        (json!({"starts_at": "yesterday"}), "starts_at"),
    ] {
        let a = s.post("/api/v1/shifts", &cmd1, bad(patch.clone())).await;
        a.assert_problem(422, "validation_failed");
        let fields: Vec<&str> = a.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{patch}: {fields:?}");
    }
    // Another street's commander sees none of it and cannot roster on it.
    s.get(&format!("/api/v1/shifts/{sid}"), &cmd2)
        .await
        .assert_problem(404, "not_found");
    s.post("/api/v1/shifts", &cmd2, bad(json!({})))
        .await
        .assert_problem(422, "validation_failed");
    let none = s
        .get(
            "/api/v1/shifts?from=2026-12-01T00:00:00Z&to=2026-12-03T00:00:00Z",
            &cmd2,
        )
        .await;
    assert_eq!(none.body["items"], json!([]));
    // Officers use /me/shifts instead.
    s.get(
        "/api/v1/shifts?from=2026-12-01T00:00:00Z&to=2026-12-03T00:00:00Z",
        &s.token("officer1").await,
    )
    .await
    .assert_problem(403, "forbidden");

    let a = s
        .patch(
            &format!("/api/v1/shifts/{sid}"),
            &cmd1,
            json!({"min_headcount": 2, "note": null, "member_ids": []}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["min_headcount"], 2);
    assert!(a.body["note"].is_null());
    s.patch(
        &format!("/api/v1/shifts/{sid}"),
        &cmd1,
        json!({"team_id": null}),
    )
    .await
    .assert_problem(422, "validation_failed");
    s.patch(
        &format!("/api/v1/shifts/{sid}"),
        &cmd1,
        json!({"ends_at": "2026-11-30T00:00:00Z"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    // Ranges: to after from, at most 62 days.
    s.get(
        "/api/v1/shifts?from=2026-12-01T00:00:00Z&to=2027-02-02T00:00:00Z",
        &cmd1,
    )
    .await
    .assert_problem(422, "validation_failed");
    s.get(
        "/api/v1/shifts?from=2026-12-01T00:00:00Z&to=2026-12-01T00:00:00Z",
        &cmd1,
    )
    .await
    .assert_problem(422, "validation_failed");
    let a = s.get("/api/v1/shifts?to=2026-12-01T00:00:00Z", &cmd1).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "from");
    assert_eq!(
        s.delete(&format!("/api/v1/shifts/{sid}"), &cmd1)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    s.get(&format!("/api/v1/shifts/{sid}"), &cmd1)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_team_three_shift_over_a_month() {
    let s = TestServer::start().await;
    let st = setup(&s).await;
    let admin = &st.org.admin;
    let a = s
        .post(
            "/api/v1/rosters/generate",
            admin,
            four_team(&st, "2026-12-01", "2026-12-30"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["created"], 90);
    assert_eq!(a.body["skipped"], 0);
    // Running it again creates nothing; an overlapping range creates only the new days.
    let a = s
        .post(
            "/api/v1/rosters/generate",
            admin,
            four_team(&st, "2026-12-01", "2026-12-30"),
        )
        .await;
    assert_eq!(
        (a.body["created"].as_u64(), a.body["skipped"].as_u64()),
        (Some(0), Some(90))
    );
    let a = s
        .post(
            "/api/v1/rosters/generate",
            admin,
            four_team(&st, "2026-12-29", "2026-12-31"),
        )
        .await;
    assert_eq!(
        (a.body["created"].as_u64(), a.body["skipped"].as_u64()),
        (Some(3), Some(6))
    );

    // Times are local to Asia/Shanghai (UTC+8): 00:00-08:00 local is 16:00-24:00 UTC the day before.
    let all = shifts(
        &s,
        admin,
        &format!(
            "post_id={}&from=2026-11-30T16:00:00Z&to=2026-12-31T16:00:00Z",
            st.kiosk
        ),
    )
    .await;
    assert_eq!(all.len(), 93);
    assert_eq!(all[0]["starts_at"], "2026-11-30T16:00:00Z");
    assert_eq!(all[0]["ends_at"], "2026-12-01T00:00:00Z");
    // Hand-written: the cycle of the four crews over the first ten days (template 0, 1, 2 | resting).
    let letter = |team: &Value| {
        ["A", "B", "C", "D"][st
            .crews
            .iter()
            .position(|c| team == &json!(c.to_string()))
            .unwrap()]
    };
    let expected = [
        "C D A | B",
        "C D A | B",
        "B C D | A",
        "B C D | A",
        "A B C | D",
        "A B C | D",
        "D A B | C",
        "D A B | C",
        "C D A | B",
        "C D A | B",
    ];
    for (day, want) in expected.iter().enumerate() {
        let got: Vec<&str> = all[day * 3..day * 3 + 3]
            .iter()
            .map(|s| letter(&s["team_id"]))
            .collect();
        let rest = ["A", "B", "C", "D"]
            .into_iter()
            .find(|l| !got.contains(l))
            .unwrap();
        assert_eq!(
            format!("{} {} {} | {rest}", got[0], got[1], got[2]),
            *want,
            "day {day}"
        );
    }
    // Every crew works 6 shifts and rests 2 days in every 8.
    for crew in &st.crews {
        let worked = all[..24]
            .iter()
            .filter(|s| s["team_id"] == json!(crew.to_string()))
            .count();
        assert_eq!(worked, 6);
    }
    // Round the clock: no gaps for the month.
    let gaps = s
        .get(
            &format!(
                "/api/v1/rosters/gaps?from=2026-11-30T16:00:00Z&to=2026-12-31T16:00:00Z&post_id={}",
                st.kiosk
            ),
            admin,
        )
        .await;
    assert_eq!(gaps.body["items"], json!([]), "{gaps:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_team_and_daily_rotation() {
    let s = TestServer::start().await;
    let st = setup(&s).await;
    let admin = &st.org.admin;
    let body = |rotation: &str, teams: &[Uuid]| {
        json!({"post_ids": [st.route], "from": "2026-12-01", "to": "2026-12-31", "pattern": {
        "shifts": [{"start": "08:00", "end": "16:00"}, {"start": "16:00", "end": "24:00"}], "teams": teams, "rotation": rotation}})
    };
    let a = s
        .post(
            "/api/v1/rosters/generate",
            admin,
            body("same_team", &st.crews[..2]),
        )
        .await;
    assert_eq!(a.body["created"], 62, "{a:#?}");
    let all = shifts(
        &s,
        admin,
        &format!(
            "post_id={}&from=2026-12-01T00:00:00Z&to=2027-01-01T00:00:00Z",
            st.route
        ),
    )
    .await;
    assert_eq!(all.len(), 62);
    for pair in all.chunks(2) {
        assert_eq!(
            pair[0]["team_id"],
            json!(st.crews[0].to_string()),
            "mornings: crew A, every day"
        );
        assert_eq!(
            pair[1]["team_id"],
            json!(st.crews[1].to_string()),
            "evenings: crew B, every day"
        );
    }
    for s_ in &all {
        s.delete(
            &format!("/api/v1/shifts/{}", s_["id"].as_str().unwrap()),
            admin,
        )
        .await;
    }
    let a = s
        .post(
            "/api/v1/rosters/generate",
            admin,
            body("daily_rotation", &st.crews[..3]),
        )
        .await;
    assert_eq!(a.body["created"], 62);
    let all = shifts(
        &s,
        admin,
        &format!(
            "post_id={}&from=2026-12-01T00:00:00Z&to=2027-01-01T00:00:00Z",
            st.route
        ),
    )
    .await;
    // Hand-written: 2026-12-01 is day 20788 since 1970-01-01, 20788 mod 3 = 1, so the
    // morning goes to teams[1] (B) and the evening to teams[2] (C); the next day C and A…
    let expected = ["B C", "C A", "A B", "B C", "C A", "A B"];
    let letter = |team: &Value| {
        ["A", "B", "C", "D"][st
            .crews
            .iter()
            .position(|c| team == &json!(c.to_string()))
            .unwrap()]
    };
    for (day, want) in expected.iter().enumerate() {
        let got = format!(
            "{} {}",
            letter(&all[day * 2]["team_id"]),
            letter(&all[day * 2 + 1]["team_id"])
        );
        assert_eq!(got, *want, "day {day}");
    }
    // Bad patterns name their field.
    let mut wrong = four_team(&st, "2026-12-01", "2026-12-02");
    wrong["pattern"]["teams"] = json!(&st.crews[..3]);
    s.post("/api/v1/rosters/generate", admin, wrong)
        .await
        .assert_problem(422, "validation_failed");
    let mut wrong = four_team(&st, "2026-12-01", "2027-03-05");
    wrong["pattern"]["rotation"] = json!("four_team_three_shift");
    s.post("/api/v1/rosters/generate", admin, wrong)
        .await
        .assert_problem(422, "validation_failed");
    let mut wrong = four_team(&st, "2026-12-01", "2026-12-02");
    wrong["pattern"]["shifts"][1]["start"] = json!("8 am");
    let a = s.post("/api/v1/rosters/generate", admin, wrong).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "pattern.shifts[1]");
    let mut wrong = four_team(&st, "2026-12-01", "2026-12-02");
    wrong["pattern"]["rotation"] = json!("whenever");
    s.post("/api/v1/rosters/generate", admin, wrong)
        .await
        .assert_problem(422, "validation_failed");
    let cmd2 = s.token("cmd2").await;
    let a = s
        .post(
            "/api/v1/rosters/generate",
            &cmd2,
            four_team(&st, "2026-12-01", "2026-12-02"),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "post_ids[0]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_gaps_show_holes_and_shortfalls() {
    let s = TestServer::start().await;
    let st = setup(&s).await;
    let admin = &st.org.admin;
    s.post(
        "/api/v1/rosters/generate",
        admin,
        four_team(&st, "2026-12-01", "2026-12-03"),
    )
    .await;
    let window = "from=2026-11-30T16:00:00Z&to=2026-12-03T16:00:00Z";
    let all = shifts(&s, admin, &format!("post_id={}&{window}", st.kiosk)).await;
    assert_eq!(all.len(), 9);
    // A hole: the day shift of 2 December is deleted.
    let hole = &all[4];
    assert_eq!(hole["starts_at"], "2026-12-02T00:00:00Z");
    s.delete(
        &format!("/api/v1/shifts/{}", hole["id"].as_str().unwrap()),
        admin,
    )
    .await;
    let gaps = s
        .get(&format!("/api/v1/rosters/gaps?{window}"), admin)
        .await;
    assert_eq!(gaps.status, StatusCode::OK, "{gaps:#?}");
    // Whether the gap is past or upcoming depends on the clock, not on the roster.
    let mut items = gaps.body["items"].clone();
    for g in items.as_array_mut().unwrap() {
        assert!(g["upcoming"].is_boolean(), "{g}");
        g.as_object_mut().unwrap().remove("upcoming");
    }
    assert_eq!(
        items,
        json!([{"post_id": st.kiosk, "post_code": "K01", "from": "2026-12-02T00:00:00Z", "to": "2026-12-02T08:00:00Z", "rostered": 0, "required": 1}])
    );
    // A shortfall: the post now needs two; one crew member a shift is not enough, except
    // where a second shift overlaps.
    s.patch(
        &format!("/api/v1/posts/{}", st.kiosk),
        admin,
        json!({"min_headcount": 2}),
    )
    .await;
    let extra = json!({"post_id": st.kiosk, "starts_at": "2026-12-01T04:00:00Z", "ends_at": "2026-12-01T10:00:00Z", "member_ids": [st.org.members["kiosk1"]]});
    assert_eq!(
        s.post("/api/v1/shifts", admin, extra).await.status,
        StatusCode::CREATED
    );
    let gaps = s
        .get(
            &format!("/api/v1/rosters/gaps?{window}&post_id={}", st.kiosk),
            admin,
        )
        .await
        .body["items"]
        .clone();
    let spans: Vec<(String, String, u64)> = gaps
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["from"].as_str().unwrap().into(),
                g["to"].as_str().unwrap().into(),
                g["rostered"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        spans[0],
        (
            "2026-11-30T16:00:00Z".into(),
            "2026-12-01T04:00:00Z".into(),
            1
        )
    );
    assert_eq!(
        spans[1],
        (
            "2026-12-01T10:00:00Z".into(),
            "2026-12-02T00:00:00Z".into(),
            1
        )
    );
    assert_eq!(
        spans[2],
        (
            "2026-12-02T00:00:00Z".into(),
            "2026-12-02T08:00:00Z".into(),
            0
        )
    );
    assert_eq!(
        spans[3],
        (
            "2026-12-02T08:00:00Z".into(),
            "2026-12-03T16:00:00Z".into(),
            1
        )
    );
    // Emptying a crew now does not empty the shifts it has already worked: a begun shift
    // keeps the team it began with.
    let before = s
        .get(
            &format!("/api/v1/rosters/gaps?{window}&post_id={}", st.kiosk),
            admin,
        )
        .await
        .body["items"]
        .clone();
    s.send(
        Method::PUT,
        &format!("/api/v1/teams/{}/members", st.crews[0]),
        Some(admin),
        Some(json!({"member_ids": []})),
    )
    .await;
    let gaps = s
        .get(
            &format!("/api/v1/rosters/gaps?{window}&post_id={}", st.kiosk),
            admin,
        )
        .await
        .body["items"]
        .clone();
    assert_eq!(gaps, before);
    // Rostered posts have no gaps; officers may not ask.
    let route_gaps = s
        .get(
            &format!("/api/v1/rosters/gaps?{window}&post_id={}", st.route),
            admin,
        )
        .await;
    assert_eq!(route_gaps.body["items"], json!([]));
    s.get(
        &format!("/api/v1/rosters/gaps?{window}"),
        &s.token("kiosk1").await,
    )
    .await
    .assert_problem(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_shifts_with_etag() {
    let s = TestServer::start().await;
    let st = setup(&s).await;
    let admin = &st.org.admin;
    s.post(
        "/api/v1/rosters/generate",
        admin,
        four_team(&st, "2026-12-01", "2026-12-08"),
    )
    .await;
    let token = s.token("crew.a").await;
    let path = "/api/v1/me/shifts?from=2026-11-30T16:00:00Z&to=2026-12-08T16:00:00Z";
    let a = s.get(path, &token).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let items = a.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "crew A works 6 of 8 days");
    assert_eq!(items[0]["post"]["code"], "K01");
    assert_eq!(items[0]["post"]["geometry"]["type"], "Point");
    assert_eq!(items[0]["post"]["radius_m"], 50.0);
    assert_eq!(
        items[0]["member_ids"],
        json!([st.crew_members[0].to_string()])
    );
    let etag = a.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'));
    // Unchanged: 304 with no body.
    let again = s
        .raw(|c, b| {
            c.get(format!("{b}{path}"))
                .bearer_auth(&token)
                .header("if-none-match", &etag)
        })
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());
    assert_eq!(again.headers["etag"].to_str().unwrap(), etag);
    // A new shift naming the member changes the answer.
    let extra = json!({"post_id": st.route, "starts_at": "2026-12-05T00:00:00Z", "ends_at": "2026-12-05T04:00:00Z", "member_ids": [st.crew_members[0]]});
    s.post("/api/v1/shifts", admin, extra).await;
    let changed = s
        .raw(|c, b| {
            c.get(format!("{b}{path}"))
                .bearer_auth(&token)
                .header("if-none-match", &etag)
        })
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.body["items"].as_array().unwrap().len(), 7);
    assert_ne!(changed.headers["etag"].to_str().unwrap(), etag);
    // Someone else's duties are not in it.
    let b = s.get(path, &s.token("crew.b").await).await;
    assert!(
        b.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["member_ids"] == json!([st.crew_members[1].to_string()]))
    );
    s.get(
        "/api/v1/me/shifts?from=2026-12-01T00:00:00Z&to=2027-03-01T00:00:00Z",
        &token,
    )
    .await
    .assert_problem(422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_follow_local_time_across_dst() {
    let s = TestServer::start_with(|settings| settings.timezone = "Europe/Berlin".into()).await;
    let st = setup(&s).await;
    let admin = &st.org.admin;
    let a = s
        .post(
            "/api/v1/rosters/generate",
            admin,
            four_team(&st, "2026-03-28", "2026-03-30"),
        )
        .await;
    assert_eq!(a.body["created"], 9, "{a:#?}");
    let all = shifts(
        &s,
        admin,
        &format!(
            "post_id={}&from=2026-03-27T00:00:00Z&to=2026-03-31T00:00:00Z",
            st.kiosk
        ),
    )
    .await;
    let spans: Vec<(&str, &str)> = all
        .iter()
        .map(|s| {
            (
                s["starts_at"].as_str().unwrap(),
                s["ends_at"].as_str().unwrap(),
            )
        })
        .collect();
    // 28 March: UTC+1. 29 March: clocks go forward at 02:00, so its night shift is 7 hours.
    assert_eq!(spans[0], ("2026-03-27T23:00:00Z", "2026-03-28T07:00:00Z"));
    assert_eq!(spans[3], ("2026-03-28T23:00:00Z", "2026-03-29T06:00:00Z"));
    assert_eq!(spans[4], ("2026-03-29T06:00:00Z", "2026-03-29T14:00:00Z"));
    assert_eq!(spans[6], ("2026-03-29T22:00:00Z", "2026-03-30T06:00:00Z"));
    // The shifts tile the days: no gap, no overlap.
    for pair in spans.windows(2) {
        assert_eq!(pair[0].1, pair[1].0);
    }
    let gaps = s
        .get(
            &format!(
                "/api/v1/rosters/gaps?from=2026-03-27T23:00:00Z&to=2026-03-30T22:00:00Z&post_id={}",
                st.kiosk
            ),
            admin,
        )
        .await;
    assert_eq!(gaps.body["items"], json!([]));
}
