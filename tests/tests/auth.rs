//! Login, refresh rotation with reuse detection and its one-retry grace, logout,
//! throttling and deactivation.

use api_tests::{Org, PASSWORD, TestServer};
use patrol_server::auth::throttle::FREE_FAILURES;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn refresh(s: &TestServer, token: &str) -> api_tests::Answer {
    s.send(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_answers_tokens_and_the_member_without_secrets() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let a = s.login("cmd1", PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 900);
    assert_eq!(a.body["member"]["username"], "cmd1");
    assert_eq!(a.body["member"]["role"], "commander");
    assert!(
        a.body["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 40)
    );
    assert!(
        !a.text.contains("argon2") && !a.text.contains("password"),
        "{}",
        a.text
    );

    let me = s
        .get("/api/v1/me", a.body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["id"], org.members["cmd1"].to_string());
    assert!(me.body.get("password").is_none() && me.body.get("password_hash").is_none());

    // Usernames are case-insensitive at login.
    assert_eq!(s.login("CMD1", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_get_the_same_401() {
    let s = TestServer::start().await;
    s.admin().await;
    let unknown = s.login("nobody", PASSWORD).await;
    let wrong = s.login("admin", "wrong password").await;
    unknown.assert_problem(401, "unauthorized");
    wrong.assert_problem(401, "unauthorized");
    assert_eq!(unknown.body, wrong.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_free_ones_make_each_try_wait_longer() {
    let s = TestServer::start().await;
    s.admin().await;
    for _ in 0..FREE_FAILURES {
        s.login("admin", "wrong password")
            .await
            .assert_problem(401, "unauthorized");
    }
    // Even the right password waits now, as a Retry-After says…
    let retry_after = |a: &api_tests::Answer| -> u64 {
        a.assert_problem(429, "rate_limited");
        a.headers["retry-after"].to_str().unwrap().parse().unwrap()
    };
    assert_eq!(retry_after(&s.login("admin", PASSWORD).await), 1);
    // …after which one more try is checked, and the next waits twice as long.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.login("admin", "wrong password")
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(retry_after(&s.login("admin", PASSWORD).await), 2);
    // Other usernames are not affected.
    s.login("nobody", "x")
        .await
        .assert_problem(401, "unauthorized");
    // Past the wait the right password logs in, and the failures are forgotten.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(s.login("admin", PASSWORD).await.status, StatusCode::OK);
    for _ in 0..FREE_FAILURES {
        s.login("admin", "wrong password")
            .await
            .assert_problem(401, "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_revokes_the_whole_login() {
    let s = TestServer::start().await;
    s.admin().await;
    let login = s.login("admin", PASSWORD).await;
    let r0 = login.body["refresh_token"].as_str().unwrap().to_owned();
    let a1 = refresh(&s, &r0).await;
    assert_eq!(a1.status, StatusCode::OK, "{a1:#?}");
    let r1 = a1.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r0, r1);
    let a2 = refresh(&s, &r1).await;
    assert_eq!(a2.status, StatusCode::OK);
    let r2 = a2.body["refresh_token"].as_str().unwrap().to_owned();
    let access2 = a2.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/api/v1/me", &access2).await.status, StatusCode::OK);

    // r0 is two rotations old: not the immediately previous token, so this is reuse.
    refresh(&s, &r0).await.assert_problem(401, "unauthorized");
    // Every token of that login is now dead: the newest refresh token and the access token.
    refresh(&s, &r2).await.assert_problem(401, "unauthorized");
    s.get("/api/v1/me", &access2)
        .await
        .assert_problem(401, "unauthorized");
    // A new login works.
    assert_eq!(s.login("admin", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_token_may_be_retried_exactly_once() {
    let s = TestServer::start().await;
    s.admin().await;
    let r0 = s.login("admin", PASSWORD).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The phone refreshes but loses the answer…
    let lost = refresh(&s, &r0).await;
    assert_eq!(lost.status, StatusCode::OK);
    let lost_token = lost.body["refresh_token"].as_str().unwrap().to_owned();
    // …and retries with the same token within 30 s: allowed once.
    let retry = refresh(&s, &r0).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:#?}");
    let r1 = retry.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, lost_token);
    // The new chain works.
    let next = refresh(&s, &r1).await;
    assert_eq!(next.status, StatusCode::OK);
    let r2 = next.body["refresh_token"].as_str().unwrap().to_owned();
    // A second retry of r0 is reuse: the login is revoked.
    refresh(&s, &r0).await.assert_problem(401, "unauthorized");
    refresh(&s, &r2).await.assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lost_token_is_dead_after_a_grace_retry() {
    let s = TestServer::start().await;
    s.admin().await;
    let r0 = s.login("admin", PASSWORD).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let lost = refresh(&s, &r0).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r1 = refresh(&s, &r0).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The token from the lost answer surfacing later is reuse: everything is revoked.
    refresh(&s, &lost).await.assert_problem(401, "unauthorized");
    refresh(&s, &r1).await.assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_login_only() {
    let s = TestServer::start().await;
    s.admin().await;
    let first = s.login("admin", PASSWORD).await;
    let second = s.login("admin", PASSWORD).await;
    let access = first.body["access_token"].as_str().unwrap();
    let out = s
        .send(Method::POST, "/api/v1/auth/logout", Some(access), None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{out:#?}");
    s.get("/api/v1/me", access)
        .await
        .assert_problem(401, "unauthorized");
    refresh(&s, first.body["refresh_token"].as_str().unwrap())
        .await
        .assert_problem(401, "unauthorized");
    // The other login goes on.
    assert_eq!(
        s.get("/api/v1/me", second.body["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_member_cannot_log_in_refresh_or_use_a_token() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let login = s.login("officer1", PASSWORD).await;
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let refresh_token = login.body["refresh_token"].as_str().unwrap().to_owned();
    let id = org.members["officer1"];
    let a = s
        .patch(
            &format!("/api/v1/members/{id}"),
            &org.admin,
            json!({"active": false}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["active"], false);
    s.login("officer1", PASSWORD)
        .await
        .assert_problem(401, "unauthorized");
    refresh(&s, &refresh_token)
        .await
        .assert_problem(401, "unauthorized");
    s.get("/api/v1/me", &access)
        .await
        .assert_problem(401, "unauthorized");
    // Reactivated, the member can log in again.
    s.patch(
        &format!("/api/v1/members/{id}"),
        &org.admin,
        json!({"active": true}),
    )
    .await;
    assert_eq!(s.login("officer1", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_existing_logins() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let access = s.token("vol1").await;
    let id = org.members["vol1"];
    let a = s
        .patch(
            &format!("/api/v1/members/{id}"),
            &org.admin,
            json!({"password": "a brand new password"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    s.get("/api/v1/me", &access)
        .await
        .assert_problem(401, "unauthorized");
    s.login("vol1", PASSWORD)
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(
        s.login("vol1", "a brand new password").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart_with_the_generated_secret() {
    // No PATROL_JWT_SECRET: the server generates one and keeps it with the data.
    let s = TestServer::start_with(|settings| settings.jwt_secret = None).await;
    let token = s.admin().await;
    let again = patrol_server::AppState::new(s.state.db.clone(), (*s.state.settings).clone())
        .await
        .unwrap();
    let claims = again
        .keys
        .verify(&token)
        .expect("a second process accepts the token");
    let me: Value = s.get("/api/v1/me", &token).await.body;
    assert_eq!(me["id"], claims.sub.to_string());
}
