//! Every error class answers problem+json with a stable code, including the framework's
//! own rejections, and nothing a client sends causes a 500.

use api_tests::{Org, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_rejections_are_problems() {
    let s = TestServer::start().await;
    let admin = s.admin().await;

    // Unknown route, with and without the API prefix.
    s.get("/api/v1/nothing-here", &admin)
        .await
        .assert_problem(404, "not_found");
    s.raw(|c, b| c.get(format!("{b}/nothing")))
        .await
        .assert_problem(404, "not_found");
    // Wrong method.
    s.send(Method::DELETE, "/api/v1/me", Some(&admin), None)
        .await
        .assert_problem(405, "method_not_allowed");
    s.send(Method::PUT, "/api/v1/units", Some(&admin), None)
        .await
        .assert_problem(405, "method_not_allowed");
    // Missing and malformed auth.
    s.send(Method::GET, "/api/v1/units", None, None)
        .await
        .assert_problem(401, "unauthorized");
    let a = s
        .raw(|c, b| {
            c.get(format!("{b}/api/v1/units"))
                .header("authorization", "Token abc")
        })
        .await;
    a.assert_problem(401, "unauthorized");
    assert!(a.headers.contains_key("www-authenticate"));
    // Wrong content type.
    s.raw(|c, b| {
        c.post(format!("{b}/api/v1/units"))
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body("{}")
    })
    .await
    .assert_problem(415, "unsupported_media_type");
    // No content type at all.
    s.raw(|c, b| {
        c.post(format!("{b}/api/v1/units"))
            .bearer_auth(&admin)
            .body("{}")
    })
    .await
    .assert_problem(415, "unsupported_media_type");
    // Not JSON, empty, truncated, trailing bytes.
    for body in ["not json", "", "{\"code\": ", "{} {}"] {
        s.raw(|c, b| {
            c.post(format!("{b}/api/v1/units"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(body)
        })
        .await
        .assert_problem(400, "malformed_request");
    }
    // Login has its own throttle class.
    for _ in 0..5 {
        s.login("admin", "wrong").await;
    }
    s.login("admin", "wrong")
        .await
        .assert_problem(429, "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    // A small limit, so that the client finishes sending before the server answers.
    let s = TestServer::start_with(|settings| settings.max_body_bytes = 16 * 1024).await;
    let admin = s.admin().await;
    let big = format!("{{\"code\":\"{}\"}}", "x".repeat(40 * 1024));
    for path in ["/api/v1/units", "/api/v1/auth/login"] {
        let a = s
            .raw(|c, b| {
                c.post(format!("{b}{path}"))
                    .bearer_auth(&admin)
                    .header("content-type", "application/json")
                    .body(big.clone())
            })
            .await;
        a.assert_problem(413, "payload_too_large");
        assert!(
            a.body["detail"].as_str().unwrap().contains("16384"),
            "{a:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_problems_name_each_field() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;

    // Unknown field.
    let a = s
        .post("/api/v1/units", admin, json!({"code": "X", "name": "X", "kind": "street", "parent_id": org.district, "colour": "red"}))
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "colour");
    // Missing field.
    let a = s
        .post(
            "/api/v1/units",
            admin,
            json!({"code": "X", "kind": "street"}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "name");
    // Wrong type and unknown enum value.
    let a = s
        .post(
            "/api/v1/units",
            admin,
            json!({"code": 5, "name": "X", "kind": "street"}),
        )
        .await;
    assert_eq!(a.body["errors"][0]["field"], "code");
    let a = s
        .post(
            "/api/v1/units",
            admin,
            json!({"code": "X", "name": "X", "kind": "planet"}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "kind");
    // Several bad values at once are all named.
    let a = s
        .post("/api/v1/members", admin, json!({"username": "A B", "role": "volunteer", "password": "short", "display_name": " "}))
        .await;
    a.assert_problem(422, "validation_failed");
    let fields: Vec<&str> = a.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["username", "display_name", "password", "unit_id"] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    // A path id that is not a UUID.
    let a = s.get("/api/v1/units/not-a-uuid", admin).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "id");
    // Bad query parameters.
    let a = s.get("/api/v1/units?limit=0", admin).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "limit");
    let a = s.get("/api/v1/units?limit=abc", admin).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "limit");
    s.get("/api/v1/units?limit=1001", admin)
        .await
        .assert_problem(422, "validation_failed");
    let a = s.get("/api/v1/members?cursor=%%%", admin).await;
    a.assert_problem(422, "validation_failed");
    let a = s.get("/api/v1/members?cursor=AAAA", admin).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "cursor");
    let a = s.get("/api/v1/teams?kind=nonsense", admin).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "kind");
    // A team naming a member that does not exist: the index is named.
    let a = s
        .post(
            "/api/v1/teams",
            admin,
            json!({"code": "T", "name": "T", "kind": "grid_patrol", "unit_id": org.street1,
                   "member_ids": [org.members["officer1"], uuid::Uuid::now_v7()]}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "member_ids[1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencoded_plus_in_a_query_time_is_read_as_the_offset_or_explained() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    let post = s
        .post(
            "/api/v1/posts",
            admin,
            json!({"code": "K-PLUS", "name": "Kiosk", "kind": "kiosk", "unit_id": org.street1,
                   "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
        )
        .await;
    let post = api_tests::id(&post);
    // 08:30-10:00 in UTC+8: inside 08:00-09:00+08:00, not inside 08:00-09:00 in UTC-8 or UTC.
    let shift = s
        .post(
            "/api/v1/shifts",
            admin,
            json!({"post_id": post, "starts_at": "2026-12-07T00:30:00Z", "ends_at": "2026-12-07T02:00:00Z",
                   "member_ids": [org.members["officer1"]]}),
        )
        .await;
    let shift = api_tests::id(&shift).to_string();

    // Typed into curl or a browser as is, the offset's `+` arrives as a space.
    for window in [
        "from=2026-12-07T08:00:00+08:00&to=2026-12-07T09:00:00+08:00",
        "from=2026-12-07T08:00:00%2B08:00&to=2026-12-07T09:00:00+0800",
        "from=2026-12-07+08:00:00+08:00&to=2026-12-07T01:00:00Z",
    ] {
        let a = s.get(&format!("/api/v1/shifts?{window}"), admin).await;
        assert_eq!(a.status, StatusCode::OK, "{window}: {a:#?}");
        assert_eq!(a.body["items"][0]["id"], shift.as_str(), "{window}: {a:#?}");
    }
    let a = s
        .get(
            "/api/v1/shifts?from=2026-12-07T08:00:00-08:00&to=2026-12-07T09:00:00-08:00",
            admin,
        )
        .await;
    assert_eq!(a.body["items"], json!([]), "{a:#?}");

    // What still is no time says how to write the `+`, naming the field.
    for (window, field) in [
        ("from=2026-12-07T08:00:00+8&to=2026-12-07T09:00:00Z", "from"),
        ("from=2026-12-07T08:00:00Z&to=2026-12-07T09:00:00+8h", "to"),
    ] {
        let a = s.get(&format!("/api/v1/shifts?{window}"), admin).await;
        a.assert_problem(422, "validation_failed");
        assert_eq!(a.body["errors"][0]["field"], field, "{a:#?}");
        let detail = a.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{field}: ")) && detail.contains("%2B"),
            "{a:#?}"
        );
    }
    // No hint where no `+` was sent.
    let a = s
        .get(
            "/api/v1/shifts?from=yesterday&to=2026-12-07T09:00:00Z",
            admin,
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "from");
    assert!(!a.text.contains("%2B"), "{a:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_missing_records_are_problems() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    s.post(
        "/api/v1/units",
        admin,
        json!({"code": "S1", "name": "again", "kind": "street", "parent_id": org.district}),
    )
    .await
    .assert_problem(409, "conflict");
    s.post("/api/v1/members", admin, json!({"username": "cmd1", "role": "volunteer", "unit_id": org.street1, "password": "long enough"}))
        .await
        .assert_problem(409, "conflict");
    // A unit with members or children cannot go.
    s.delete(&format!("/api/v1/units/{}", org.street1), admin)
        .await
        .assert_problem(409, "conflict");
    let missing = uuid::Uuid::now_v7();
    for path in ["units", "members", "teams"] {
        s.get(&format!("/api/v1/{path}/{missing}"), admin)
            .await
            .assert_problem(404, "not_found");
        s.delete(&format!("/api/v1/{path}/{missing}"), admin)
            .await
            .assert_problem(404, "not_found");
    }
    // You cannot delete yourself.
    let me = s.get("/api/v1/me", admin).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.delete(&format!("/api/v1/members/{me}"), admin)
        .await
        .assert_problem(409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_never_cause_a_server_error() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let nasty = [
        "'; DROP TABLE units; --",
        "\u{0}",
        "%_%",
        "😀".repeat(300).as_str(),
        "\\\"",
        "a\u{202e}b",
    ]
    .map(str::to_owned);
    for (i, text) in nasty.iter().enumerate() {
        for body in [
            json!({"code": text, "name": text, "kind": "community", "parent_id": org.street1}),
            json!({"code": format!("ok{i}"), "name": text, "kind": "community", "parent_id": org.street1}),
        ] {
            let a = s.post("/api/v1/units", &org.admin, body).await;
            assert!(
                a.status.is_success() || a.status.is_client_error(),
                "{a:#?}"
            );
        }
        let a = s.login(text, text).await;
        assert!(a.status.is_client_error(), "{a:#?}");
        let a = s
            .get(
                &format!("/api/v1/units?cursor={}", urlencode(text)),
                &org.admin,
            )
            .await;
        assert!(a.status.is_client_error(), "{a:#?}");
    }
    assert_eq!(
        s.get("/api/v1/units", &org.admin).await.status,
        StatusCode::OK
    );
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// A database that gives up waiting for a lock (SQLite's write lock held past the busy
/// timeout; PostgreSQL's lock not available) is answered with 503 and `Retry-After`, not
/// as a fault of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_busy_with_a_lock_is_a_503_to_retry() {
    use axum::response::IntoResponse;
    use patrol_server::error::ApiError;
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, TransactionTrait};

    let (url, _db) = api_tests::fresh_database().await;
    let mut options = ConnectOptions::new(url.clone());
    options.map_sqlx_sqlite_opts(|o| o.busy_timeout(std::time::Duration::from_millis(50)));
    let holder = Database::connect(options.clone()).await.unwrap();
    let waiter = Database::connect(options).await.unwrap();
    holder
        .execute_unprepared("CREATE TABLE busy_probe (n INTEGER)")
        .await
        .unwrap();

    let held = holder.begin().await.unwrap();
    let postgres = api_tests::on_postgres();
    if postgres {
        held.execute_unprepared("LOCK TABLE busy_probe IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
    } else {
        held.execute_unprepared("INSERT INTO busy_probe VALUES (1)")
            .await
            .unwrap();
    }
    let err = if postgres {
        let t = waiter.begin().await.unwrap();
        t.execute_unprepared("LOCK TABLE busy_probe IN ACCESS EXCLUSIVE MODE NOWAIT")
            .await
            .unwrap_err()
    } else {
        waiter
            .execute_unprepared("INSERT INTO busy_probe VALUES (2)")
            .await
            .unwrap_err()
    };
    let response = ApiError::from(err).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "database_busy");

    // Once the lock is gone a write goes through.
    held.rollback().await.unwrap();
    waiter
        .execute_unprepared("INSERT INTO busy_probe VALUES (3)")
        .await
        .unwrap();
    // Other database errors stay faults of the server.
    let other = waiter
        .execute_unprepared("INSERT INTO no_such_table VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(
        ApiError::from(other).into_response().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

/// Through the running server: a write that meets a lock another process holds waits
/// `db_lock_timeout` (SQLite's busy timeout, PostgreSQL's `lock_timeout`), then is answered
/// 503 `database_busy` with `Retry-After`; once the lock is gone the same request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_lock_timeout_is_answered_503_by_the_server() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};

    let wait = std::time::Duration::from_millis(300);
    let s = TestServer::start_with(|settings| settings.db_lock_timeout = wait).await;
    let org = Org::create(&s).await;
    let unit = json!({"code": "L1", "name": "Locked out", "kind": "compound", "parent_id": org.community1});
    // The server's connections were given the setting.
    let (sql, want) = if api_tests::on_postgres() {
        ("SHOW lock_timeout", "300ms")
    } else {
        ("PRAGMA busy_timeout", "300")
    };
    let row = s
        .state
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            s.state.db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap()
        .unwrap();
    let got: String = match row.try_get_by_index::<String>(0) {
        Ok(v) => v,
        Err(_) => row.try_get_by_index::<i64>(0).unwrap().to_string(),
    };
    assert_eq!(got, want);

    let other = Database::connect(s.state.settings.database_url.0.clone())
        .await
        .unwrap();
    let held = other.begin().await.unwrap();
    if api_tests::on_postgres() {
        held.execute_unprepared("LOCK TABLE units IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
    } else {
        // Any write takes the database's one write lock until the transaction ends.
        held.execute_unprepared("UPDATE units SET name = name WHERE code = 'D1'")
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let refused = s.post("/api/v1/units", &org.admin, unit.clone()).await;
    let waited = started.elapsed();
    refused.assert_problem(503, "database_busy");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        waited >= wait,
        "answered after {waited:?}, before the lock timeout"
    );

    held.rollback().await.unwrap();
    let created = s.post("/api/v1/units", &org.admin, unit).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:#?}");
    other.close().await.unwrap();
}
