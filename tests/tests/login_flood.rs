//! A flood of logins: refused by address before any password is hashed, parallel guesses
//! counted before they are checked, an attacker's address slowed without locking the
//! member out elsewhere, and no delete of old failures on the login path.

use std::net::{IpAddr, Ipv4Addr};

use api_tests::{Answer, PASSWORD, TestServer};
use chrono::{Duration, Utc};
use patrol_server::auth::throttle::{ADDRESS_BURST, ADDRESS_REFILL, FREE_FAILURES, USERNAME_CAP};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value as DbValue};
use serde_json::json;
use uuid::Uuid;

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Rows of `login_failures`, under one username or all.
async fn failures(s: &TestServer, username: Option<&str>) -> i64 {
    let backend = s.state.db.get_database_backend();
    let statement = match (username, backend) {
        (None, _) => Statement::from_string(backend, "SELECT COUNT(*) AS n FROM login_failures"),
        (Some(u), DbBackend::Postgres) => Statement::from_sql_and_values(
            backend,
            "SELECT COUNT(*) AS n FROM login_failures WHERE username = $1",
            [u.into()],
        ),
        (Some(u), _) => Statement::from_sql_and_values(
            backend,
            "SELECT COUNT(*) AS n FROM login_failures WHERE username = ?",
            [u.into()],
        ),
    };
    let row = s.state.db.query_one_raw(statement).await.unwrap().unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Passwords hashed or checked so far, from the metrics.
async fn hashes(s: &TestServer) -> Option<u64> {
    let metrics = s.raw(|c, b| c.get(format!("{b}/metrics"))).await;
    metrics
        .text
        .lines()
        .find_map(|l| l.strip_prefix("patrol_password_hashes_total "))
        .and_then(|n| n.trim().parse().ok())
}

fn assert_throttled(a: &Answer) {
    a.assert_problem(429, "rate_limited");
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{a:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_usernames_from_one_address_is_refused_before_hashing() {
    let s = TestServer::start().await;
    s.admin().await;
    let hashed = hashes(&s).await;
    let started = std::time::Instant::now();
    let (mut checked, mut refused) = (0, 0);
    for i in 0..100 {
        let a = s.login(&format!("nobody{i}"), "guess").await;
        if a.status == StatusCode::UNAUTHORIZED {
            checked += 1;
        } else {
            assert_throttled(&a);
            assert!(
                a.body["detail"].as_str().unwrap().contains("address"),
                "{a:#?}"
            );
            refused += 1;
        }
    }
    // The address's burst, and what refilled while the test ran.
    let refilled = started.elapsed().as_secs_f64() / ADDRESS_REFILL.as_secs_f64();
    let most = i64::from(ADDRESS_BURST) + refilled.ceil() as i64;
    assert!(checked <= most, "{checked} checked");
    assert_eq!(checked + refused, 100);
    let hashed = hashes(&s).await.zip(hashed).map(|(now, then)| now - then);
    assert!(hashed.is_some_and(|n| n <= most as u64), "{hashed:?}");
    assert!(failures(&s, None).await <= most);
    // Another address is not held up by this one.
    assert_eq!(
        s.login_from(loopback(2), "admin", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_for_one_username_are_counted_before_they_are_checked() {
    let s = TestServer::start().await;
    s.admin().await;
    let client = s.client_from(loopback(1));
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (client, base) = (client.clone(), s.base.clone());
        guesses.spawn(async move {
            let req = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({"username": "admin", "password": format!("guess {i}")}));
            Answer::from(req.send().await.unwrap()).await
        });
    }
    let mut checked = 0;
    while let Some(a) = guesses.join_next().await {
        let a = a.unwrap();
        if a.status == StatusCode::UNAUTHORIZED {
            checked += 1;
        } else {
            assert_throttled(&a);
        }
    }
    assert!(checked <= FREE_FAILURES, "{checked} guesses checked");
    assert!(failures(&s, Some("admin")).await <= FREE_FAILURES as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_do_not_lock_the_member_out_of_another() {
    let s = TestServer::start().await;
    s.admin().await;
    let attacker = loopback(2);
    for _ in 0..FREE_FAILURES {
        s.login_from(attacker, "admin", "wrong")
            .await
            .assert_problem(401, "unauthorized");
    }
    // From the attacker's address, every further try waits, even with the right password…
    for _ in 0..10 {
        assert_throttled(&s.login_from(attacker, "admin", "wrong").await);
    }
    let a = s.login_from(attacker, "admin", PASSWORD).await;
    assert_throttled(&a);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("from this address"),
        "{a:#?}"
    );
    // …while the member logs in from elsewhere at once, and other usernames are untouched.
    let member = s.login_from(loopback(3), "admin", PASSWORD).await;
    assert_eq!(member.status, StatusCode::OK, "{member:#?}");
    s.login_from(attacker, "nobody", "x")
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_many_addresses_slow_a_username_but_do_not_lock_it() {
    let s = TestServer::start().await;
    s.admin().await;
    let addresses = USERNAME_CAP.div_ceil(FREE_FAILURES) as u8;
    for n in 0..addresses {
        for _ in 0..FREE_FAILURES {
            s.login_from(loopback(10 + n), "admin", "wrong").await;
        }
    }
    assert!(failures(&s, Some("admin")).await >= USERNAME_CAP as i64);
    // Past the cap, a fresh address waits for the username's next turn, a couple of
    // seconds at most, and then logs in.
    let member = loopback(100);
    let mut tries = 0;
    let answer = loop {
        tries += 1;
        let a = s.login_from(member, "admin", PASSWORD).await;
        if a.status != StatusCode::TOO_MANY_REQUESTS || tries == 3 {
            break a;
        }
        assert!(
            !a.body["detail"].as_str().unwrap().contains("address"),
            "{a:#?}"
        );
        let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry <= 2, "{a:#?}");
        tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    };
    assert_eq!(answer.status, StatusCode::OK, "{answer:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_failures_are_purged_in_the_background_not_on_login() {
    let s = TestServer::start().await;
    s.admin().await;
    let backend = s.state.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "INSERT INTO login_failures (id, username, at) VALUES ($1, $2, $3)",
        _ => "INSERT INTO login_failures (id, username, at) VALUES (?, ?, ?)",
    };
    let old = Utc::now() - Duration::days(2);
    s.state
        .db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                DbValue::from(Uuid::now_v7()),
                DbValue::from("someone"),
                DbValue::from(old),
            ],
        ))
        .await
        .unwrap();
    // A failed login writes its failure and deletes nothing.
    s.login("nobody", "x")
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(failures(&s, Some("someone")).await, 1);
    assert_eq!(failures(&s, None).await, 2);
    // The purge (hourly in the background, and `patrol purge`) does.
    patrol_server::retention::purge(&s.state.db, &s.state.settings)
        .await
        .unwrap();
    assert_eq!(failures(&s, Some("someone")).await, 0);
    assert_eq!(failures(&s, None).await, 1);
}
