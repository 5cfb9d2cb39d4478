//! What the phone app needs of the API beyond check-ins: the names of the people rostered
//! with the caller (and nothing else about them), and ending every login of a member
//! whose phone was lost.

use api_tests::{Org, TestServer, id};
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Kiosk K1 in street 1.
async fn kiosk(s: &TestServer, org: &Org) -> Uuid {
    id(&s
        .post(
            "/api/v1/posts",
            &org.admin,
            json!({"code": "K1", "name": "Kiosk 1", "kind": "kiosk", "unit_id": org.street1,
                   "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
        )
        .await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_shifts_name_my_colleagues_and_nobody_else() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    let post = kiosk(&s, &org).await;
    let renamed = s
        .patch(
            &format!("/api/v1/members/{}", org.members["officer1"]),
            admin,
            json!({"display_name": "Wang Fang"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:#?}");
    let now = Utc::now();
    let shift = |members: Vec<Uuid>, from: i64| {
        json!({"post_id": post, "starts_at": iso(now + Duration::hours(from)),
               "ends_at": iso(now + Duration::hours(from + 8)), "member_ids": members})
    };
    let together = id(&s
        .post(
            "/api/v1/shifts",
            admin,
            shift(vec![org.members["kiosk1"], org.members["officer1"]], -1),
        )
        .await);
    // A shift of others only: not the caller's, so not named to them.
    s.post(
        "/api/v1/shifts",
        admin,
        shift(vec![org.members["officer2"]], 10),
    )
    .await;
    let token = s.token("kiosk1").await;
    let duties = s
        .get(
            &format!(
                "/api/v1/me/shifts?from={}&to={}",
                iso(now - Duration::hours(2)),
                iso(now + Duration::days(2))
            ),
            &token,
        )
        .await;
    assert_eq!(duties.status, StatusCode::OK, "{duties:#?}");
    let items = duties.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["shift_id"], together.to_string());
    assert_eq!(
        items[0]["colleagues"],
        json!([{"member_id": org.members["officer1"], "display_name": "Wang Fang"}])
    );
    // Nothing else about them: no username, role or unit anywhere in the answer.
    assert!(!duties.text.contains("officer1"), "{}", duties.text);
    assert!(!duties.text.contains("patrol_officer"), "{}", duties.text);
    assert!(!duties.text.contains(&org.community1.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_ends_every_login_of_a_member_with_a_lost_phone() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    // The volunteer is logged in on two phones.
    let first = s.login("vol1", api_tests::PASSWORD).await.body;
    let second = s.login("vol1", api_tests::PASSWORD).await.body;
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(s.get("/api/v1/me", access).await.status, StatusCode::OK);
    let vol = org.members["vol1"];
    // Not for officers, nor for a commander of another street.
    let officer = s.token("officer1").await;
    s.delete(&format!("/api/v1/members/{vol}/sessions"), &officer)
        .await
        .assert_problem(403, "forbidden");
    let cmd2 = s.token("cmd2").await;
    s.delete(&format!("/api/v1/members/{vol}/sessions"), &cmd2)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(s.get("/api/v1/me", access).await.status, StatusCode::OK);
    // Their own commander (street 1 holds community 1) ends them.
    let cmd1 = s.token("cmd1").await;
    let ended = s
        .delete(&format!("/api/v1/members/{vol}/sessions"), &cmd1)
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT, "{ended:#?}");
    s.get("/api/v1/me", access)
        .await
        .assert_problem(401, "unauthorized");
    for login in [&first, &second] {
        let refreshed = s
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": login["refresh_token"]})),
            )
            .await;
        refreshed.assert_problem(401, "unauthorized");
    }
    // The member can log in again, and end their own logins themself.
    let token = s.token("vol1").await;
    let own = s
        .delete(&format!("/api/v1/members/{vol}/sessions"), &token)
        .await;
    assert_eq!(own.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/api/v1/me", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A commander never ends an admin's logins.
    let admin_id = s.get("/api/v1/me", &org.admin).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = s
        .delete(&format!("/api/v1/members/{admin_id}/sessions"), &cmd1)
        .await;
    assert!(
        a.status == StatusCode::FORBIDDEN || a.status == StatusCode::NOT_FOUND,
        "{a:#?}"
    );
    assert_eq!(s.get("/api/v1/me", &org.admin).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_coverage_shows_my_running_shift_and_nobody_elses() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    let post = kiosk(&s, &org).await;
    let now = Utc::now();
    let mine = id(&s
        .post(
            "/api/v1/shifts",
            admin,
            json!({"post_id": post, "starts_at": iso(now - Duration::minutes(30)),
                   "ends_at": iso(now + Duration::hours(2)), "member_ids": [org.members["kiosk1"]]}),
        )
        .await);
    let token = s.token("kiosk1").await;
    for ago in [20, 10, 1] {
        let fix = json!({"client_id": Uuid::now_v7(),
                         "recorded_at": iso(now - Duration::minutes(ago)),
                         "lat": 34.22, "lon": 108.95, "accuracy_m": 5.0});
        assert_eq!(
            s.post("/api/v1/checkins", &token, fix).await.status,
            StatusCode::CREATED
        );
    }
    let a = s.get("/api/v1/me/coverage", &token).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let items = a.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["shift_id"], mine.to_string());
    assert_eq!(items[0]["status"], "pending");
    assert_eq!(items[0]["eligible_fixes"], 3);
    assert!(items[0]["presence"]["present_fraction"].as_f64().unwrap() > 0.0);
    // Someone not on it sees nothing of it, whatever their role.
    for other in ["officer1", "cmd1"] {
        let t = s.token(other).await;
        let a = s.get("/api/v1/me/coverage", &t).await;
        assert_eq!(a.body["items"], json!([]), "{other}: {a:#?}");
    }
    // Bounded and strict.
    let far = s
        .get(
            &format!(
                "/api/v1/me/coverage?from={}&to={}",
                iso(now - Duration::days(8)),
                iso(now)
            ),
            &token,
        )
        .await;
    far.assert_problem(422, "validation_failed");
    let backwards = s
        .get(
            &format!(
                "/api/v1/me/coverage?from={}&to={}",
                iso(now),
                iso(now - Duration::hours(1))
            ),
            &token,
        )
        .await;
    backwards.assert_problem(422, "validation_failed");
    s.get("/api/v1/me/coverage?member_id=x", &token)
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_keeps_the_device_keys_of_their_own_phones_and_no_more_than_ten() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let me = org.members["vol1"];
    let token = s.token("vol1").await;
    let keys = format!("/api/v1/members/{me}/device-keys");
    let mut issued = Vec::new();
    for n in 0..10 {
        let a = s
            .post(&keys, &token, json!({"label": format!("phone {n}")}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
        issued.push((id(&a), a.body["key"].as_str().unwrap().to_owned()));
    }
    // An eleventh in use is refused; revoking one makes room.
    s.post(&keys, &token, json!({}))
        .await
        .assert_problem(409, "conflict");
    let listed = s.get(&keys, &token).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 10);
    let revoked = s.delete(&format!("{keys}/{}", issued[0].0), &token).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let a = s
        .raw(|c, b| {
            c.get(format!(
                "{b}/osmand?id={}&lat=34.22&lon=108.95",
                issued[0].1
            ))
        })
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.post(&keys, &token, json!({})).await.status,
        StatusCode::CREATED
    );
    // Another member's keys stay out of reach.
    let other = org.members["officer1"];
    s.post(
        &format!("/api/v1/members/{other}/device-keys"),
        &token,
        json!({}),
    )
    .await
    .assert_problem(403, "forbidden");
    s.get(&format!("/api/v1/members/{other}/device-keys"), &token)
        .await
        .assert_problem(403, "forbidden");
}
