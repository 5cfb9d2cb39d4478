//! Kiosk mode: a commander registers a shared tablet for a kiosk post; officers sign on
//! and off at it with their password or a PIN; the fixes it reports count for the officers
//! signed on, and only while they are; a kiosk token opens nothing else, and no member's
//! token opens the kiosk's endpoints.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr},
    time::Duration as StdDuration,
};

use api_tests::{Answer, Org, PASSWORD, TestServer, id};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use patrol_server::{auth::throttle::FREE_FAILURES, routes::kiosks::MAX_KIOSK_FAILURES};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The district of [`Org`], a kiosk post K1 in street S1 with officer A on duty now and
/// officer B coming on within the hour, a checkpoint in street S2 with officer2 on duty
/// now, and a route in S1.
struct World {
    s: TestServer,
    org: Org,
    kiosk_post: Uuid,
    checkpoint: Uuid,
    route: Uuid,
    a: Uuid,
    b: Uuid,
}

impl World {
    async fn new() -> World {
        let s = TestServer::start().await;
        let org = Org::create(&s).await;
        let admin = org.admin.clone();
        let point = json!({"type": "Point", "coordinates": [108.95, 34.22]});
        let kiosk_post = id(&s
            .post(
                "/api/v1/posts",
                &admin,
                json!({"code": "K1", "name": "Kiosk one", "kind": "kiosk", "unit_id": org.street1, "geometry": point}),
            )
            .await);
        let checkpoint = id(&s
            .post(
                "/api/v1/posts",
                &admin,
                json!({"code": "C2", "name": "Checkpoint two", "kind": "checkpoint", "unit_id": org.street2, "geometry": point}),
            )
            .await);
        let route = id(&s
            .post(
                "/api/v1/posts",
                &admin,
                json!({"code": "R1", "name": "Route one", "kind": "route", "unit_id": org.street1,
                       "geometry": {"type": "LineString", "coordinates": [[108.95, 34.22], [108.96, 34.22]]}}),
            )
            .await);
        let mut officers = Vec::new();
        for (username, name) in [("officer.a", "Officer A"), ("officer.b", "Officer B")] {
            officers.push(id(&s
                .post(
                    "/api/v1/members",
                    &admin,
                    json!({"username": username, "display_name": name, "role": "kiosk_officer",
                           "unit_id": org.street1, "password": PASSWORD}),
                )
                .await));
        }
        let now = Utc::now();
        let shift = |post: Uuid, member: Uuid, from: DateTime<Utc>, to: DateTime<Utc>| json!({"post_id": post, "starts_at": iso(from), "ends_at": iso(to), "member_ids": [member]});
        for body in [
            shift(
                kiosk_post,
                officers[0],
                now - Duration::hours(1),
                now + Duration::minutes(30),
            ),
            shift(
                kiosk_post,
                officers[1],
                now + Duration::minutes(30),
                now + Duration::hours(8),
            ),
            shift(
                checkpoint,
                org.members["officer2"],
                now - Duration::hours(1),
                now + Duration::hours(7),
            ),
        ] {
            id(&s.post("/api/v1/shifts", &admin, body).await);
        }
        World {
            s,
            org,
            kiosk_post,
            checkpoint,
            route,
            a: officers[0],
            b: officers[1],
        }
    }

    /// Registers a kiosk for K1 as the commander of S1; answers (kiosk id, token).
    async fn kiosk(&self) -> (Uuid, String) {
        let cmd1 = self.s.token("cmd1").await;
        let a = self
            .s
            .post(
                "/api/v1/kiosks",
                &cmd1,
                json!({"post_id": self.kiosk_post, "name": "K1 tablet"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
        (
            id(&a),
            a.body["token"].as_str().expect("a token").to_owned(),
        )
    }

    /// A request from a kiosk device.
    async fn device(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.s
            .raw(|c, base| {
                let mut r = c
                    .request(method, format!("{base}/api/v1{path}"))
                    .header("authorization", format!("Kiosk {token}"));
                if let Some(b) = body {
                    r = r.json(&b);
                }
                r
            })
            .await
    }

    async fn sign_on(&self, token: &str, body: Value) -> Answer {
        self.device(token, Method::POST, "/kiosk/sign-on", Some(body))
            .await
    }

    /// A sign-on sent from another loopback address.
    async fn sign_on_from(&self, from: IpAddr, token: &str, body: Value) -> Answer {
        let req = self
            .s
            .client_from(from)
            .post(format!("{}/api/v1/kiosk/sign-on", self.s.base))
            .header("authorization", format!("Kiosk {token}"))
            .json(&body);
        Answer::from(req.send().await.expect("request sent")).await
    }

    async fn sign_off(&self, token: &str, body: Value) -> Answer {
        self.device(token, Method::POST, "/kiosk/sign-off", Some(body))
            .await
    }

    async fn checkins(&self, token: &str, fixes: Vec<Value>) -> Answer {
        self.device(
            token,
            Method::POST,
            "/kiosk/checkins",
            Some(json!({"checkins": fixes})),
        )
        .await
    }
}

fn position(at: DateTime<Utc>) -> Value {
    json!({"client_id": Uuid::now_v7(), "recorded_at": iso(at), "lat": 34.22, "lon": 108.95, "accuracy_m": 8.0})
}

fn ping(member: Uuid, at: DateTime<Utc>) -> Value {
    json!({"member_id": member, "client_id": Uuid::now_v7(), "recorded_at": iso(at),
           "lat": 34.2201, "lon": 108.9501, "accuracy_m": 6.0})
}

fn statuses(a: &Answer) -> Vec<String> {
    a.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("batch results: {a:#?}"))
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn error_of(a: &Answer, i: usize) -> (String, String) {
    let e = &a.body["results"][i]["error"];
    (
        e["code"].as_str().unwrap_or("").to_owned(),
        e["field"].as_str().unwrap_or("").to_owned(),
    )
}

fn field_errors(a: &Answer) -> Vec<String> {
    a.body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["field"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_at_a_kiosk_counts_each_officers_fixes_as_theirs() {
    let w = World::new().await;
    let s = &w.s;
    let admin = &w.org.admin;
    let (kiosk_id, token) = w.kiosk().await;
    assert!(token.starts_with("pk_") && token.len() >= 46, "{token}");

    // The commander's list: no token, nobody signed on yet.
    let cmd1 = s.token("cmd1").await;
    let list = s
        .get(&format!("/api/v1/kiosks?post_id={}", w.kiosk_post), &cmd1)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{list:#?}");
    assert_eq!(list.body["items"][0]["id"], kiosk_id.to_string());
    assert_eq!(list.body["items"][0]["signed_on"], 0);
    assert!(!list.text.contains(&token), "the token is shown only once");

    // B sets a PIN for the handover.
    let b_token = s.token("officer.b").await;
    let a = s
        .send(
            Method::PUT,
            "/api/v1/me/pin",
            Some(&b_token),
            Some(json!({"pin": "2580", "password": PASSWORD})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{a:#?}");
    assert_eq!(s.get("/api/v1/me", &b_token).await.body["has_pin"], true);

    // A, on duty now, signs on with their password and the tablet's position; the
    // commanders' boards hear of it.
    let mut events = s.events(Some(admin), None).await.expect("the event stream");
    let on = w
        .sign_on(
            &token,
            json!({"username": "Officer.A", "password": PASSWORD, "position": position(Utc::now())}),
        )
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
    assert_eq!(on.body["member_id"], w.a.to_string());
    assert_eq!(on.body["display_name"], "Officer A");
    assert_eq!(on.body["fix"]["status"], "created", "{on:#?}");
    let a_sign_on = on.body["sign_on_id"].as_str().unwrap().to_owned();
    let event = events
        .until(StdDuration::from_secs(10), |e| e.event == "kiosk")
        .await
        .expect("a kiosk event");
    assert_eq!(event.data["action"], "sign_on");
    assert_eq!(event.data["sign_on_id"], a_sign_on);
    assert_eq!(event.data["member_name"], "Officer A");
    assert_eq!(event.data["post_code"], "K1");

    // The device reports A's pings.
    let pings = w
        .checkins(&token, vec![ping(w.a, Utc::now()), ping(w.a, Utc::now())])
        .await;
    assert_eq!(pings.status, StatusCode::OK, "{pings:#?}");
    assert_eq!(statuses(&pings), ["created", "created"]);
    assert_eq!(pings.body["created"], 2);

    // The board: A signed on and rostered now, B next.
    let board = w.device(&token, Method::GET, "/kiosk", None).await;
    assert_eq!(board.status, StatusCode::OK, "{board:#?}");
    assert_eq!(board.body["kiosk"]["id"], kiosk_id.to_string());
    assert_eq!(board.body["post"]["code"], "K1");
    assert_eq!(board.body["post"]["kind"], "kiosk");
    assert_eq!(board.body["post"]["geometry"]["type"], "Point");
    assert_eq!(board.body["signed_on"][0]["sign_on_id"], a_sign_on);
    assert_eq!(board.body["signed_on"][0]["display_name"], "Officer A");
    let rostered = board.body["rostered_now"].as_array().unwrap();
    assert_eq!(rostered.len(), 1, "{board:#?}");
    assert_eq!(rostered[0]["member_id"], w.a.to_string());
    assert_eq!(rostered[0]["signed_on"], true);
    assert_eq!(board.body["next"][0]["display_name"], "Officer B");
    assert!(
        board.body["next"][0].get("member_id").is_none(),
        "nothing but names of the people to come"
    );
    assert!(
        !board.text.contains("officer.a"),
        "no usernames on the board"
    );

    // Handover: A signs off with a last position; B signs on with the PIN.
    let off = w
        .sign_off(
            &token,
            json!({"sign_on_id": a_sign_on, "position": position(Utc::now())}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{off:#?}");
    assert_eq!(off.body["member_id"], w.a.to_string());
    assert_eq!(off.body["fix"]["status"], "created");
    let until: DateTime<Utc> = off.body["until"].as_str().unwrap().parse().unwrap();
    let on = w
        .sign_on(&token, json!({"username": "officer.b", "pin": "2580"}))
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
    assert_eq!(on.body["member_id"], w.b.to_string());
    assert!(on.body["fix"].is_null());

    // B's pings count; one of A's recorded after A signed off does not; one of A's from
    // before the handover still does (a tablet that was offline).
    let late_for_a = ping(w.a, until + Duration::seconds(1));
    let before_handover = ping(w.a, until - Duration::seconds(5));
    let batch = w
        .checkins(
            &token,
            vec![
                ping(w.b, Utc::now()),
                late_for_a,
                before_handover,
                ping(w.b, Utc::now()),
            ],
        )
        .await;
    assert_eq!(
        statuses(&batch),
        ["created", "rejected", "created", "created"],
        "{batch:#?}"
    );
    assert_eq!(
        error_of(&batch, 1),
        ("not_signed_on".into(), "member_id".into())
    );

    // The fixes are A's and B's own, from the kiosk, at the kiosk's post.
    let kinds = |member: Uuid| async move {
        let a = s
            .get(&format!("/api/v1/checkins?member_id={member}"), admin)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        let items = a.body["items"].as_array().unwrap().clone();
        for f in &items {
            assert_eq!(f["member_id"], member.to_string());
            assert_eq!(f["source"], "kiosk");
            assert_eq!(f["post_id"], w.kiosk_post.to_string());
        }
        let mut kinds: Vec<String> = items
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_owned())
            .collect();
        kinds.sort();
        kinds
    };
    assert_eq!(
        kinds(w.a).await,
        ["off_duty", "on_duty", "ping", "ping", "ping"]
    );
    assert_eq!(kinds(w.b).await, ["ping", "ping"]);

    // Every sign-on and sign-off is in the audit trail.
    for (member, expected) in [
        (w.a, vec!["kiosk_sign_off", "kiosk_sign_on"]),
        (w.b, vec!["kiosk_sign_on"]),
    ] {
        let audit = s
            .get(&format!("/api/v1/audit?subject_id={member}"), admin)
            .await;
        let mut actions: Vec<&str> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .filter(|a| a.starts_with("kiosk_"))
            .collect();
        actions.sort();
        assert_eq!(actions, expected, "{audit:#?}");
    }

    // The list shows B signed on and the device seen.
    let list = s.get("/api/v1/kiosks", &cmd1).await;
    assert_eq!(list.body["items"][0]["signed_on"], 1, "{list:#?}");
    assert!(list.body["items"][0]["last_seen_at"].is_string());

    // The same fix twice is stored once.
    let again = ping(w.b, Utc::now());
    let first = w.checkins(&token, vec![again.clone()]).await;
    let second = w.checkins(&token, vec![again]).await;
    assert_eq!(statuses(&first), ["created"]);
    assert_eq!(statuses(&second), ["duplicate"]);
    assert_eq!(
        first.body["results"][0]["id"],
        second.body["results"][0]["id"]
    );

    // An SOS from the kiosk raises an alert about B, as from B's phone.
    let mut sos = ping(w.b, Utc::now());
    sos["kind"] = json!("sos");
    assert_eq!(statuses(&w.checkins(&token, vec![sos]).await), ["created"]);
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(30);
    loop {
        let alerts = s.get("/api/v1/alerts?kind=sos", admin).await;
        let items = alerts.body["items"].as_array().cloned().unwrap_or_default();
        if items.iter().any(|a| a["member_id"] == w.b.to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SOS alert: {alerts:#?}"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_kiosk_is_for_managers_and_kiosk_officers_on_the_post() {
    let w = World::new().await;
    let s = &w.s;
    let cmd1 = s.token("cmd1").await;
    let a = s.token("officer.a").await;
    let b = s.token("officer.b").await;
    let register = |post: Uuid, name: &str| json!({"post_id": post, "name": name});

    // A kiosk officer rostered on K1 registers a kiosk there, not at a post of another street.
    let mine = s
        .post(
            "/api/v1/kiosks",
            &a,
            register(w.kiosk_post, "  A's tablet "),
        )
        .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{mine:#?}");
    assert_eq!(mine.body["name"], "A's tablet");
    let mine = id(&mine);
    let not_theirs = s
        .post("/api/v1/kiosks", &a, register(w.checkpoint, "X"))
        .await;
    not_theirs.assert_problem(403, "forbidden");
    // A commander does not reach another street's post; nobody a route; patrol officers nothing.
    s.post("/api/v1/kiosks", &cmd1, register(w.checkpoint, "X"))
        .await
        .assert_problem(404, "not_found");
    let route = s
        .post("/api/v1/kiosks", &cmd1, register(w.route, "X"))
        .await;
    route.assert_problem(422, "validation_failed");
    assert_eq!(field_errors(&route), ["post_id"]);
    s.post("/api/v1/kiosks", &cmd1, register(Uuid::now_v7(), "X"))
        .await
        .assert_problem(404, "not_found");
    let officer1 = s.token("officer1").await;
    s.post("/api/v1/kiosks", &officer1, register(w.kiosk_post, "X"))
        .await
        .assert_problem(403, "forbidden");
    for bad in ["   ", &"x".repeat(101)] {
        let a = s
            .post("/api/v1/kiosks", &cmd1, register(w.kiosk_post, bad))
            .await;
        a.assert_problem(422, "validation_failed");
        assert_eq!(field_errors(&a), ["name"]);
    }
    let a_field = s
        .post(
            "/api/v1/kiosks",
            &cmd1,
            json!({"post_id": "nope", "name": "X"}),
        )
        .await;
    a_field.assert_problem(422, "validation_failed");
    // The admin registers anywhere a kiosk may be; at most 5 in use per post.
    let admin = &w.org.admin;
    assert_eq!(
        s.post("/api/v1/kiosks", admin, register(w.checkpoint, "C2 tablet"))
            .await
            .status,
        StatusCode::CREATED
    );
    for n in 2..=5 {
        let a = s
            .post(
                "/api/v1/kiosks",
                &cmd1,
                register(w.kiosk_post, &format!("T{n}")),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    }
    s.post("/api/v1/kiosks", &cmd1, register(w.kiosk_post, "T6"))
        .await
        .assert_problem(409, "conflict");

    // Lists: the kiosk officer sees theirs, the commander their street's, never tokens.
    let ids = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{a:#?}"))
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&s.get("/api/v1/kiosks", &a).await), [mine.to_string()]);
    assert_eq!(
        ids(&s.get("/api/v1/kiosks", &b).await),
        Vec::<String>::new()
    );
    assert_eq!(ids(&s.get("/api/v1/kiosks", &cmd1).await).len(), 5);
    assert_eq!(ids(&s.get("/api/v1/kiosks", admin).await).len(), 6);
    let page = s.get("/api/v1/kiosks?limit=2", &cmd1).await;
    assert_eq!(ids(&page).len(), 2);
    assert!(page.body["next_cursor"].is_string());
    s.get(&format!("/api/v1/kiosks?post_id={}", w.checkpoint), &cmd1)
        .await
        .assert_problem(404, "not_found");
    s.get("/api/v1/kiosks", &officer1)
        .await
        .assert_problem(403, "forbidden");
    assert!(!s.get("/api/v1/kiosks", admin).await.text.contains("pk_"));

    // Revoking: not by another kiosk officer, nor a commander of another street; by the
    // registrar, twice alike.
    let path = format!("/api/v1/kiosks/{mine}");
    s.delete(&path, &b).await.assert_problem(403, "forbidden");
    let cmd2 = s.token("cmd2").await;
    s.delete(&path, &cmd2)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(s.delete(&path, &a).await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.delete(&path, &a).await.status, StatusCode::NO_CONTENT);
    s.delete(&format!("/api/v1/kiosks/{}", Uuid::now_v7()), &cmd1)
        .await
        .assert_problem(404, "not_found");
    let listed = s.get("/api/v1/kiosks?active=false", &a).await;
    assert_eq!(ids(&listed), [mine.to_string()]);
    assert!(listed.body["items"][0]["revoked_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_token_opens_the_kiosk_only_and_no_member_token_opens_it() {
    let w = World::new().await;
    let s = &w.s;
    let (kiosk_id, token) = w.kiosk().await;
    // The kiosk token against members' endpoints, as either scheme.
    for path in ["/api/v1/me", "/api/v1/members", "/api/v1/checkins"] {
        w.device(
            &token,
            Method::GET,
            path.trim_start_matches("/api/v1"),
            None,
        )
        .await
        .assert_problem(401, "unauthorized");
        s.get(path, &token)
            .await
            .assert_problem(401, "unauthorized");
    }
    w.device(
        &token,
        Method::POST,
        "/checkins",
        Some(ping(w.a, Utc::now())),
    )
    .await
    .assert_problem(401, "unauthorized");
    // A member's token, none, or a made-up one against the kiosk's endpoints.
    let a = s.token("officer.a").await;
    s.get("/api/v1/kiosk", &a)
        .await
        .assert_problem(401, "unauthorized");
    w.device(&a, Method::GET, "/kiosk", None)
        .await
        .assert_problem(401, "unauthorized");
    s.raw(|c, base| c.get(format!("{base}/api/v1/kiosk")))
        .await
        .assert_problem(401, "unauthorized");
    let made_up = w.device("pk_made_up", Method::GET, "/kiosk", None).await;
    made_up.assert_problem(401, "unauthorized");
    assert_eq!(
        made_up.headers["www-authenticate"],
        "Kiosk realm=\"patrol\""
    );
    s.post(
        "/api/v1/kiosk/sign-on",
        &a,
        json!({"username": "officer.a", "password": PASSWORD}),
    )
    .await
    .assert_problem(401, "unauthorized");

    // Revoked: the token stops working and A's sign-on is closed and audited.
    let on = w
        .sign_on(
            &token,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
    let cmd1 = s.token("cmd1").await;
    assert_eq!(
        s.delete(&format!("/api/v1/kiosks/{kiosk_id}"), &cmd1)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    w.device(&token, Method::GET, "/kiosk", None)
        .await
        .assert_problem(401, "unauthorized");
    w.checkins(&token, vec![ping(w.a, Utc::now())])
        .await
        .assert_problem(401, "unauthorized");
    let listed = s.get("/api/v1/kiosks", &cmd1).await;
    assert_eq!(listed.body["items"][0]["signed_on"], 0, "{listed:#?}");
    assert!(listed.body["items"][0]["revoked_at"].is_string());
    let audit = s
        .get(&format!("/api/v1/audit?subject_id={}", w.a), &w.org.admin)
        .await;
    assert_eq!(
        audit.body["items"][0]["action"], "kiosk_sign_off",
        "{audit:#?}"
    );
    // A is free to sign on at another kiosk.
    let (_, other) = w.kiosk().await;
    let on = w
        .sign_on(
            &other,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_on_takes_the_right_credentials_of_someone_rostered_here() {
    let w = World::new().await;
    let s = &w.s;
    let (_, token) = w.kiosk().await;

    // PINs: the password is needed, weak PINs are refused.
    let b = s.token("officer.b").await;
    let put_pin = |pin: &str, password: &str| {
        s.send(
            Method::PUT,
            "/api/v1/me/pin",
            Some(&b),
            Some(json!({"pin": pin, "password": password})),
        )
    };
    for weak in ["1234", "4321", "0000", "123", "123456789", "12a4"] {
        let a = put_pin(weak, PASSWORD).await;
        a.assert_problem(422, "validation_failed");
        assert_eq!(field_errors(&a), ["pin"], "{weak}");
    }
    put_pin("2580", "not the password")
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        put_pin("2580", PASSWORD).await.status,
        StatusCode::NO_CONTENT
    );
    s.send(
        Method::PUT,
        "/api/v1/me/pin",
        Some(&b),
        Some(json!({"pin": 2580})),
    )
    .await
    .assert_problem(422, "validation_failed");

    // Not rostered on this post (officer2 is, on another): 403.
    let a = w
        .sign_on(
            &token,
            json!({"username": "officer2", "password": PASSWORD}),
        )
        .await;
    a.assert_problem(403, "not_rostered_here");
    let a = w
        .sign_on(
            &token,
            json!({"username": "officer1", "password": PASSWORD}),
        )
        .await;
    a.assert_problem(403, "not_rostered_here");
    // Both or neither secret: 422; a wrong password or an unknown username: 401.
    let a = w
        .sign_on(
            &token,
            json!({"username": "officer.b", "password": PASSWORD, "pin": "2580"}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    w.sign_on(&token, json!({"username": "officer.b"}))
        .await
        .assert_problem(422, "validation_failed");
    w.sign_on(
        &token,
        json!({"username": "officer.a", "password": "wrong"}),
    )
    .await
    .assert_problem(401, "unauthorized");
    w.sign_on(&token, json!({"username": "nobody", "pin": "2580"}))
        .await
        .assert_problem(401, "unauthorized");
    // A, who set no PIN, cannot sign on with one.
    w.sign_on(&token, json!({"username": "officer.a", "pin": "2580"}))
        .await
        .assert_problem(401, "unauthorized");
    w.sign_on(
        &token,
        json!({"username": "officer.a", "password": PASSWORD, "colour": 1}),
    )
    .await
    .assert_problem(422, "validation_failed");
    let malformed = w.device(&token, Method::POST, "/kiosk/sign-on", None).await;
    assert!(malformed.status.is_client_error(), "{malformed:#?}");
    assert_eq!(malformed.content_type(), "application/problem+json");

    // Signed on twice here: 409; at a second kiosk: signed off at the first (`replaced`).
    let on = w
        .sign_on(
            &token,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
    w.sign_on(
        &token,
        json!({"username": "officer.a", "password": PASSWORD}),
    )
    .await
    .assert_problem(409, "already_signed_on");
    let (_, second) = w.kiosk().await;
    let moved = w
        .sign_on(
            &second,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::CREATED, "{moved:#?}");
    let board = w.device(&token, Method::GET, "/kiosk", None).await;
    assert_eq!(board.body["signed_on"], json!([]), "{board:#?}");
    let board = w.device(&second, Method::GET, "/kiosk", None).await;
    assert_eq!(board.body["signed_on"][0]["member_id"], w.a.to_string());
    // Signing off the replaced sign-on, an unknown one, or one of another kiosk: 404.
    for sign_on in [
        on.body["sign_on_id"].clone(),
        json!(Uuid::now_v7()),
        moved.body["sign_on_id"].clone(),
    ] {
        w.sign_off(&token, json!({"sign_on_id": sign_on}))
            .await
            .assert_problem(404, "not_found");
    }
    let off = w
        .sign_off(&second, json!({"sign_on_id": moved.body["sign_on_id"]}))
        .await;
    assert_eq!(off.status, StatusCode::OK, "{off:#?}");
    assert!(off.body["fix"].is_null());
    w.sign_off(&second, json!({"sign_on_id": moved.body["sign_on_id"]}))
        .await
        .assert_problem(404, "not_found");

    // A wrong PIN as often as is free: the next try waits, even with the right PIN.
    for _ in 0..FREE_FAILURES {
        w.sign_on(&token, json!({"username": "officer.b", "pin": "1357"}))
            .await
            .assert_problem(401, "unauthorized");
    }
    let throttled = w
        .sign_on(&token, json!({"username": "officer.b", "pin": "2580"}))
        .await;
    throttled.assert_problem(429, "rate_limited");
    assert!(throttled.headers.contains_key("retry-after"));
    // The same count holds for B's password login from the kiosk's address.
    assert_eq!(
        s.login("officer.b", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_batch_answers_for_each_fix() {
    let w = World::new().await;
    let (_, token) = w.kiosk().await;
    let on = w
        .sign_on(
            &token,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
    let now = Utc::now();
    let mut elsewhere = ping(w.a, now);
    elsewhere["post_id"] = json!(w.checkpoint);
    let mut here = ping(w.a, now);
    here["post_id"] = json!(w.kiosk_post);
    let mut on_duty = ping(w.a, now);
    on_duty["kind"] = json!("on_duty");
    let mut owned = ping(w.a, now);
    owned["flags"] = json!(0);
    let mut no_member = ping(w.a, now);
    no_member.as_object_mut().unwrap().remove("member_id");
    let batch = w
        .checkins(
            &token,
            vec![
                ping(w.a, now),
                ping(w.org.members["officer2"], now),
                ping(Uuid::now_v7(), now),
                elsewhere,
                here,
                on_duty,
                owned,
                no_member,
                ping(w.a, now - Duration::minutes(10)),
                json!("not a fix"),
            ],
        )
        .await;
    assert_eq!(batch.status, StatusCode::OK, "{batch:#?}");
    assert_eq!(
        statuses(&batch),
        [
            "created", "rejected", "rejected", "rejected", "created", "rejected", "rejected",
            "rejected", "rejected", "rejected"
        ],
        "{batch:#?}"
    );
    let not_signed_on = ("not_signed_on".to_owned(), "member_id".to_owned());
    assert_eq!(error_of(&batch, 1), not_signed_on);
    assert_eq!(error_of(&batch, 2), not_signed_on);
    assert_eq!(error_of(&batch, 3).1, "post_id");
    assert_eq!(error_of(&batch, 5).1, "kind");
    assert_eq!(error_of(&batch, 6).1, "flags");
    assert_eq!(error_of(&batch, 7).1, "member_id");
    assert_eq!(error_of(&batch, 8), not_signed_on, "before the sign-on");
    assert_eq!(batch.body["created"], 2);
    assert_eq!(batch.body["rejected"], 8);
    // A fix that fails the ordinary checks fails them here too.
    let mut far_future = ping(w.a, now + Duration::hours(1));
    far_future["lat"] = json!(34.0);
    let a = w.checkins(&token, vec![far_future]).await;
    assert_eq!(
        error_of(&a, 0),
        ("validation_failed".into(), "recorded_at".into())
    );

    // Limits and bad bodies.
    let many: Vec<Value> = (0..1001).map(|_| ping(w.a, now)).collect();
    w.checkins(&token, many)
        .await
        .assert_problem(413, "payload_too_large");
    let malformed =
        w.s.raw(|c, base| {
            c.post(format!("{base}/api/v1/kiosk/checkins"))
                .header("authorization", format!("Kiosk {token}"))
                .header("content-type", "application/json")
                .body("{\"checkins\": [")
        })
        .await;
    malformed.assert_problem(400, "malformed_request");
    let a = w
        .device(
            &token,
            Method::POST,
            "/kiosk/checkins",
            Some(ping(w.a, now)),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    let a = w
        .device(
            &token,
            Method::POST,
            "/kiosk/checkins",
            Some(json!({"checkins": {}})),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(field_errors(&a), ["checkins"]);

    // A gzip body, as /checkins takes.
    let body = serde_json::to_vec(&json!({"checkins": [ping(w.a, Utc::now())]})).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let gz = gz.finish().unwrap();
    let a =
        w.s.raw(|c, base| {
            c.post(format!("{base}/api/v1/kiosk/checkins"))
                .header("authorization", format!("Kiosk {token}"))
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(gz)
        })
        .await;
    assert_eq!(statuses(&a), ["created"], "{a:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_stops_taking_guesses_across_usernames() {
    let w = World::new().await;
    let (_, token) = w.kiosk().await;
    // The free wrong PINs of one username after another, each from an address of its own
    // (the kiosk's token copied elsewhere): no username and no address is slowed down,
    // but the kiosk has had its twenty.
    for i in 0..MAX_KIOSK_FAILURES {
        let n = i / FREE_FAILURES;
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + n as u8));
        w.sign_on_from(
            from,
            &token,
            json!({"username": format!("guess.{n}"), "pin": "1357"}),
        )
        .await
        .assert_problem(401, "unauthorized");
    }
    let a = w
        .sign_on(
            &token,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    a.assert_problem(429, "rate_limited");
    assert!(
        a.body["detail"].as_str().unwrap().contains("kiosk"),
        "{a:#?}"
    );
    // Another kiosk, and A's own login, are not held up.
    let (_, other) = w.kiosk().await;
    let on = w
        .sign_on(
            &other,
            json!({"username": "officer.a", "password": PASSWORD}),
        )
        .await;
    assert_eq!(on.status, StatusCode::CREATED, "{on:#?}");
    assert_eq!(
        w.s.login("officer.a", PASSWORD).await.status,
        StatusCode::OK
    );
}
