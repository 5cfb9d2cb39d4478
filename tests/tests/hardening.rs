//! Issue 27's hardening, item by item: each test fails on the code before its fix.

use api_tests::{Org, TestServer, id};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Item 13: a squad named like a spreadsheet formula is written so that a spreadsheet
/// shows the name and runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_reports_neutralise_cells_a_spreadsheet_would_run() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let evil = "=HYPERLINK(\"http://evil.example/\",\"open\")";
    id(&s
        .post(
            "/api/v1/teams",
            &org.admin,
            json!({"code": "-SQ1", "name": evil, "kind": "volunteer_squad",
                "unit_id": org.community1, "member_ids": [org.members["vol1"]]}),
        )
        .await);
    let csv = s
        .get("/api/v1/reports/volunteers?format=csv", &org.admin)
        .await;
    assert_eq!(csv.status, StatusCode::OK, "{csv:#?}");
    let row = csv.text.lines().nth(1).expect("the squad's row");
    assert!(
        row.contains(",'-SQ1,\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"open\"\")\","),
        "{row}"
    );
    for cell in row.split(',') {
        assert!(
            !cell.trim_start_matches('"').starts_with(['=', '+', '@']),
            "{cell} in {row}"
        );
    }
}

/// Item 14: a client inventing methods adds one label to the metrics, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_count_as_one_metrics_label() {
    let s = TestServer::start().await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let a = s.send(method, "/api/v1/units", None, None).await;
        assert!(a.status.is_client_error(), "{a:#?}");
    }
    let metrics = s.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        !metrics.text.contains("BREW"),
        "an invented method as a label"
    );
    assert!(
        metrics.text.contains("method=\"OTHER\""),
        "{}",
        metrics.text
    );
}

/// Item 9: commanders of one unit are peers; only the unit above (or an admin) changes,
/// resets, demotes, deletes or ends the logins of a commander, as with units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_cannot_act_on_a_peer_of_their_own_unit() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    // A second commander of street 1, made by the admin.
    let peer = id(&s
        .post(
            "/api/v1/members",
            &org.admin,
            json!({"username": "cmd1b", "role": "commander", "unit_id": org.street1,
                "password": api_tests::PASSWORD}),
        )
        .await);

    for (what, answer) in [
        (
            "reset the password",
            s.patch(
                &format!("/api/v1/members/{peer}"),
                &cmd1,
                json!({"password": "a new password of mine"}),
            )
            .await,
        ),
        (
            "demote",
            s.patch(
                &format!("/api/v1/members/{peer}"),
                &cmd1,
                json!({"role": "volunteer"}),
            )
            .await,
        ),
        (
            "end the logins",
            s.delete(&format!("/api/v1/members/{peer}/sessions"), &cmd1)
                .await,
        ),
        (
            "issue a device key, which reports as its member, for",
            s.post(
                &format!("/api/v1/members/{peer}/device-keys"),
                &cmd1,
                json!({"label": "not mine"}),
            )
            .await,
        ),
        (
            "delete",
            s.delete(&format!("/api/v1/members/{peer}"), &cmd1).await,
        ),
    ] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}: {answer:#?}");
        assert_eq!(answer.body["code"], "forbidden", "{what}");
    }
    // Nor may they make a new peer, or promote one of their unit's officers to one.
    let made = s
        .post(
            "/api/v1/members",
            &cmd1,
            json!({"username": "cmd1c", "role": "commander", "unit_id": org.street1,
                "password": api_tests::PASSWORD}),
        )
        .await;
    made.assert_problem(422, "validation_failed");
    let promoted = s
        .patch(
            &format!("/api/v1/members/{}", org.members["kiosk1"]),
            &cmd1,
            json!({"role": "commander"}),
        )
        .await;
    promoted.assert_problem(422, "validation_failed");

    // A commander of the unit below is theirs to manage, and the peer still logs in.
    let below = id(&s
        .post(
            "/api/v1/members",
            &cmd1,
            json!({"username": "cmdc1", "role": "commander", "unit_id": org.community1,
                "password": api_tests::PASSWORD}),
        )
        .await);
    let reset = s
        .patch(
            &format!("/api/v1/members/{below}"),
            &cmd1,
            json!({"display_name": "C1 commander"}),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{reset:#?}");
    assert_eq!(s.login("cmd1b", api_tests::PASSWORD).await.status, 200);
    // The admin may act on either.
    let demoted = s
        .patch(
            &format!("/api/v1/members/{peer}"),
            &org.admin,
            json!({"role": "patrol_officer"}),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{demoted:#?}");
}

/// Item 15: one member holds at most 8 open event streams; closing one frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_holds_a_bounded_number_of_event_streams() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let client = reqwest::Client::new();
    let open = || async {
        client
            .get(format!("{}/api/v1/events", s.base))
            .bearer_auth(&cmd1)
            .send()
            .await
            .unwrap()
    };
    let mut streams = Vec::new();
    for _ in 0..8 {
        let r = open().await;
        assert_eq!(r.status(), StatusCode::OK);
        streams.push(r);
    }
    let refused = open().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // Another member is not held back by cmd1's streams.
    let other = client
        .get(format!("{}/api/v1/events", s.base))
        .bearer_auth(&org.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Closing a stream frees its place (the server sees the close at its next write).
    drop(streams.pop());
    let started = std::time::Instant::now();
    loop {
        let r = open().await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "a closed stream's place was not freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Item 16, in part: the webhook follows no redirect, so a 3xx cannot carry an alert's
/// body and signature to another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_follows_no_redirect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = elsewhere.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let (tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = hook.accept().await {
            let mut buf = [0u8; 65536];
            let _ = c.read(&mut buf).await;
            let _ = tx.send(());
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere_addr}/stolen\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = c.write_all(answer.as_bytes()).await;
        }
    });
    let s = TestServer::start_with(|st| {
        st.alert_interval = std::time::Duration::from_secs(3600);
        st.webhook_url = Some(hook_url);
        st.webhook_secret = Some(patrol_server::settings::Secret("hook-secret".into()));
    })
    .await;
    let org = Org::create(&s).await;
    id(&s
        .post(
            "/api/v1/posts",
            &org.admin,
            json!({"code": "K9", "name": "K9", "kind": "kiosk", "unit_id": org.street1,
                "staffing": "24x7",
                "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
        )
        .await);
    patrol_server::alerts::evaluate(&s.state)
        .await
        .expect("evaluation succeeds");
    tokio::time::timeout(std::time::Duration::from_secs(30), asked.recv())
        .await
        .expect("the webhook was called")
        .unwrap();
    // Give a follower the time it would need.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the alert was carried to the redirect's address"
    );
}
