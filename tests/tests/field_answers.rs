//! Answers that misled people in the field: an SOS from Traccar Client or OsmAnd, or sent
//! late, that raised nothing; a board that counted passers-by and fixes from the future;
//! silent members without their last fix; history that changed with today's teams; and
//! positions the apps' queues would jam on.

use std::time::Duration as StdDuration;

use api_tests::{Org, TestServer, id};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use patrol_server::alerts::evaluate;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const LAT: f64 = 34.22;
const LON: f64 = 108.95;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Rules quick to trip; the evaluator runs when a test says so (or at once after an SOS).
fn quick(s: &mut patrol_server::Settings) {
    s.alert_interval = StdDuration::from_secs(3600);
    s.silent_after_min = 1;
    s.route_idle_min = 1;
    s.sos_hold_min = 1;
}

struct World {
    s: TestServer,
    org: Org,
}

impl World {
    async fn new() -> World {
        let s = TestServer::start_with(quick).await;
        let org = Org::create(&s).await;
        World { s, org }
    }

    async fn kiosk(&self, code: &str) -> Uuid {
        id(&self
            .s
            .post(
                "/api/v1/posts",
                &self.org.admin,
                json!({"code": code, "name": code, "kind": "kiosk", "unit_id": self.org.street1,
                       "geometry": {"type": "Point", "coordinates": [LON, LAT]},
                       "arrival_grace_min": 0, "staffing": "rostered"}),
            )
            .await)
    }

    /// A shift of `body`'s people from `from_min` to `to_min` minutes from now.
    async fn shift(&self, post: Uuid, from_min: i64, to_min: i64, people: Value) -> Uuid {
        let now = Utc::now();
        let mut body = json!({"post_id": post, "starts_at": iso(now + Duration::minutes(from_min)),
                              "ends_at": iso(now + Duration::minutes(to_min))});
        for (k, v) in people.as_object().unwrap() {
            body[k] = v.clone();
        }
        id(&self.s.post("/api/v1/shifts", &self.org.admin, body).await)
    }

    /// Kiosk K1 with a shift of kiosk1 from `from_min` to `to_min` minutes from now.
    async fn kiosk_on_duty(&self, from_min: i64, to_min: i64) -> (Uuid, Uuid) {
        let kiosk = self.kiosk("K1").await;
        let members = json!({"member_ids": [self.org.members["kiosk1"]]});
        (kiosk, self.shift(kiosk, from_min, to_min, members).await)
    }

    /// A fix of `who` at the kiosk's position, recorded `ago_s` seconds ago.
    async fn fix_at(&self, who: &str, ago_s: i64, extra: Value) -> Value {
        let token = self.s.token(who).await;
        let mut body = json!({"client_id": Uuid::now_v7(),
                              "recorded_at": iso(Utc::now() - Duration::seconds(ago_s)),
                              "lat": LAT, "lon": LON + 0.0001, "accuracy_m": 5.0});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = self.s.post("/api/v1/checkins", &token, body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
        a.body
    }

    /// The admin's page of a list.
    async fn items(&self, path: &str) -> Vec<Value> {
        let a = self.s.get(path, &self.org.admin).await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        a.body["items"].as_array().unwrap().clone()
    }

    async fn alerts(&self, kind: &str) -> Vec<Value> {
        self.items(&format!("/api/v1/alerts?kind={kind}&state=all"))
            .await
    }

    async fn evaluate(&self) {
        evaluate(&self.s.state).await.expect("evaluation succeeds");
    }

    async fn board(&self, token: &str) -> Value {
        let a = self.s.get("/api/v1/status/now", token).await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        a.body
    }

    async fn device_key(&self, who: &str) -> String {
        let member = self.org.members[who];
        let issued = self
            .s
            .post(
                &format!("/api/v1/members/{member}/device-keys"),
                &self.org.admin,
                json!({"label": "phone"}),
            )
            .await;
        assert_eq!(issued.status, StatusCode::CREATED, "{issued:#?}");
        issued.body["key"].as_str().unwrap().to_owned()
    }

    async fn fixes_of(&self, who: &str) -> Vec<Value> {
        let member = self.org.members[who];
        self.items(&format!("/api/v1/checkins?member_id={member}&limit=1000"))
            .await
    }
}

fn post_of(board: &Value, post: Uuid) -> &Value {
    board["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["post_id"] == post.to_string())
        .expect("the post is on the board")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sos_from_traccar_client_or_osmand_is_stored_as_sos_and_alerted() {
    let w = World::new().await;
    let key = w.device_key("officer1").await;
    // Traccar Client's SOS button: its exact JSON body, the alarm in `extras`.
    let recorded = iso(Utc::now() - Duration::seconds(20));
    let body = json!({
        "location": {
            "timestamp": recorded,
            "coords": {"latitude": LAT, "longitude": LON, "accuracy": 8.5, "speed": 0.0,
                       "heading": -1, "altitude": 410.2},
            "is_moving": false,
            "odometer": 0,
            "event": "motionchange",
            "battery": {"level": 0.64, "is_charging": false},
            "activity": {"type": "still"},
            "extras": {"alarm": "sos"}
        },
        "device_id": key
    });
    let a =
        w.s.raw(|c, b| c.post(format!("{b}/osmand")).json(&body))
            .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    // OsmAnd-protocol devices: `alarm=sos` in the query.
    let ts = (Utc::now() - Duration::seconds(10)).timestamp();
    let a =
        w.s.raw(|c, b| {
            c.get(format!(
                "{b}/osmand?id={key}&lat={LAT}&lon={}&timestamp={ts}&alarm=sos",
                LON + 0.0002
            ))
        })
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    // An alarm that is about the device, not the person, is an ordinary fix.
    let a =
        w.s.raw(|c, b| {
            c.get(format!(
                "{b}/osmand?id={key}&lat={LAT}&lon={LON}&timestamp={}&alarm=lowBattery",
                ts - 5
            ))
        })
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let fixes = w.fixes_of("officer1").await;
    let kinds: Vec<&str> = fixes.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "sos").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "ping").count(),
        1,
        "{kinds:?}"
    );
    w.evaluate().await;
    let sos = w.alerts("sos").await;
    assert_eq!(sos.len(), 1, "one alert per member: {sos:#?}");
    assert_eq!(sos[0]["state"], "open");
    assert_eq!(sos[0]["member_id"], w.org.members["officer1"].to_string());
    assert!(sos[0]["position"]["lat"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sos_is_raised_says_it_is_late_names_its_post_and_can_be_acknowledged() {
    let w = World::new().await;
    let (kiosk, shift) = w.kiosk_on_duty(-180, 60).await;
    // Recorded 95 minutes ago on a phone that was offline; the hold is a minute.
    w.fix_at(
        "kiosk1",
        95 * 60,
        json!({"kind": "sos", "post_id": kiosk, "shift_id": shift}),
    )
    .await;
    w.evaluate().await;
    let sos = w.alerts("sos").await;
    assert_eq!(sos.len(), 1, "{sos:#?}");
    let alert = &sos[0];
    assert_eq!(alert["state"], "open");
    assert_eq!(alert["post_id"], kiosk.to_string());
    assert_eq!(alert["post_code"], "K1");
    let message = alert["message"].as_str().unwrap();
    assert!(message.contains("arrived late"), "{message}");
    assert!(message.contains("K1"), "{message}");
    // Dates and the zone are in the message.
    assert!(message.contains("+08:00"), "{message}");
    let ack =
        w.s.post(
            &format!("/api/v1/alerts/{}/ack", alert["id"].as_str().unwrap()),
            &w.org.admin,
            json!({"note": "called, she is safe"}),
        )
        .await;
    assert_eq!(ack.status, StatusCode::OK, "{ack:#?}");
    assert_eq!(ack.body["state"], "acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passer_by_neither_staffs_a_post_nor_resolves_its_alert_nor_shows_on_its_board() {
    let w = World::new().await;
    let (kiosk, _) = w.kiosk_on_duty(-30, 120).await;
    w.evaluate().await;
    let open = w.alerts("post_unstaffed").await;
    assert_eq!(open.len(), 1, "{open:#?}");
    // An officer of another street passes the kiosk.
    w.fix_at("officer2", 5, json!({})).await;
    let board = w.board(&w.org.admin).await;
    let k = post_of(&board, kiosk);
    assert_eq!(k["present"], json!([]), "{k:#?}");
    assert_eq!(k["staffed"], false);
    w.evaluate().await;
    assert_eq!(w.alerts("post_unstaffed").await[0]["state"], "open");
    // The street-1 commander does not see the street-2 officer at their kiosk.
    let cmd1 = w.s.token("cmd1").await;
    let board = w.board(&cmd1).await;
    assert!(
        !board
            .to_string()
            .contains(&w.org.members["officer2"].to_string())
    );
    // The kiosk officer arrives: staffed, and the alert says why it closed.
    w.fix_at("kiosk1", 3, json!({})).await;
    let board = w.board(&w.org.admin).await;
    let k = post_of(&board, kiosk);
    assert_eq!(k["present"], json!([w.org.members["kiosk1"]]));
    assert_eq!(k["staffed"], true);
    w.evaluate().await;
    let alert = &w.alerts("post_unstaffed").await[0];
    assert_eq!(alert["state"], "resolved");
    assert_eq!(alert["resolution"], "staffed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_from_the_future_makes_nobody_present_or_heard_from() {
    let w = World::new().await;
    let (kiosk, _) = w.kiosk_on_duty(-30, 120).await;
    // Four minutes ahead of the server: stored, flagged clock_skew.
    let fix = w.fix_at("kiosk1", -240, json!({})).await;
    assert!(
        fix["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("clock_skew")),
        "{fix:#?}"
    );
    let board = w.board(&w.org.admin).await;
    assert_eq!(post_of(&board, kiosk)["present"], json!([]));
    let silent = board["silent"].as_array().unwrap();
    assert_eq!(silent.len(), 1, "{board:#?}");
    assert_eq!(silent[0]["member_id"], w.org.members["kiosk1"].to_string());
    assert_eq!(silent[0]["last_fix_at"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_shown_with_the_time_and_place_of_the_last_fix() {
    let w = World::new().await;
    w.kiosk_on_duty(-60, 120).await;
    let last = w.fix_at("kiosk1", 7 * 60, json!({})).await;
    let board = w.board(&w.org.admin).await;
    let silent = &board["silent"][0];
    assert_eq!(silent["member_id"], w.org.members["kiosk1"].to_string());
    let at: DateTime<Utc> = silent["last_fix_at"].as_str().unwrap().parse().unwrap();
    let sent: DateTime<Utc> = last["recorded_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(at, sent);
    assert!((silent["last_position"]["lat"].as_f64().unwrap() - LAT).abs() < 1e-6);
    w.evaluate().await;
    let alert = &w.alerts("member_silent").await[0];
    let message = alert["message"].as_str().unwrap();
    assert!(message.contains("has sent no fix since 20"), "{message}");
    assert!(!message.contains("since going on duty"), "{message}");
    assert!(alert["position"]["lat"].is_number(), "{alert:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begun_shift_keeps_the_team_it_began_with() {
    let w = World::new().await;
    let kiosk = w.kiosk("K1").await;
    let team = id(&w
        .s
        .post(
            "/api/v1/teams",
            &w.org.admin,
            json!({"code": "T1", "name": "Kiosk crew", "kind": "kiosk_crew",
                   "unit_id": w.org.street1, "member_ids": [w.org.members["kiosk1"]]}),
        )
        .await);
    let running = w.shift(kiosk, -60, 60, json!({"team_id": team})).await;
    let ahead = w.shift(kiosk, 120, 240, json!({"team_id": team})).await;
    for ago in [50, 40, 30, 20] {
        w.fix_at("kiosk1", ago * 60, json!({})).await;
    }
    let coverage = || async {
        let now = Utc::now();
        let a =
            w.s.get(
                &format!(
                    "/api/v1/coverage?post_id={kiosk}&from={}&to={}",
                    iso(now - Duration::hours(2)).replace('+', "%2B"),
                    iso(now + Duration::hours(5)).replace('+', "%2B")
                ),
                &w.org.admin,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["shift_id"] == running.to_string())
            .cloned()
            .expect("the running shift")
    };
    let before = coverage().await;
    assert!(
        before["presence"]["present_fraction"].as_f64().unwrap() > 0.0,
        "{before:#?}"
    );
    // The team changes: kiosk1 leaves, officer1 joins.
    let a =
        w.s.send(
            Method::PUT,
            &format!("/api/v1/teams/{team}/members"),
            Some(&w.org.admin),
            Some(json!({"member_ids": [w.org.members["officer1"]]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let after = coverage().await;
    // A running shift: its figures grow with the clock, its evidence does not.
    for figure in ["first_arrival_at", "max_headcount", "late_min"] {
        assert_eq!(after["presence"][figure], before["presence"][figure]);
    }
    assert_eq!(after["eligible_fixes"], before["eligible_fixes"]);
    assert_eq!(after["status"], before["status"]);
    // kiosk1 is still on the running shift, and officer1 on the one ahead only.
    let listed = |who: &'static str| {
        let w = &w;
        async move {
            let member = w.org.members[who];
            let now = Utc::now();
            let a =
                w.s.get(
                    &format!(
                        "/api/v1/shifts?member_id={member}&post_id={kiosk}&from={}&to={}",
                        iso(now - Duration::hours(3)),
                        iso(now + Duration::hours(6))
                    ),
                    &w.org.admin,
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{a:#?}");
            a.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().parse::<Uuid>().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("kiosk1").await, [running]);
    assert_eq!(listed("officer1").await, [ahead]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_may_not_name_a_post_that_is_not_its_shifts() {
    let w = World::new().await;
    let (kiosk, shift) = w.kiosk_on_duty(-30, 60).await;
    let other = w.kiosk("K2").await;
    let token = w.s.token("kiosk1").await;
    let body = json!({"client_id": Uuid::now_v7(), "recorded_at": iso(Utc::now()),
                      "lat": LAT, "lon": LON, "accuracy_m": 5.0,
                      "post_id": other, "shift_id": shift});
    let a = w.s.post("/api/v1/checkins", &token, body).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "post_id", "{a:#?}");
    w.fix_at("kiosk1", 0, json!({"post_id": kiosk, "shift_id": shift}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixtieth_second_is_refused() {
    let w = World::new().await;
    let token = w.s.token("officer1").await;
    let minute = Utc::now() - Duration::minutes(2);
    let leap = format!("{}:60Z", minute.format("%Y-%m-%dT%H:%M"));
    let body = json!({"client_id": Uuid::now_v7(), "recorded_at": leap,
                      "lat": LAT, "lon": LON, "accuracy_m": 5.0});
    let a = w.s.post("/api/v1/checkins", &token, body.clone()).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "recorded_at", "{a:#?}");
    let batch =
        w.s.post("/api/v1/checkins", &token, json!({"checkins": [body]}))
            .await;
    assert_eq!(batch.status, StatusCode::OK);
    assert_eq!(batch.body["results"][0]["status"], "rejected");
    assert!(w.fixes_of("officer1").await.is_empty());
    // The same from a tracker app, named as the app names it.
    let key = w.device_key("officer1").await;
    let a =
        w.s.raw(|c, b| {
            c.get(format!(
                "{b}/osmand?id={key}&lat={LAT}&lon={LON}&timestamp={}",
                leap.replace(':', "%3A")
            ))
        })
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "timestamp", "{a:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_side_field_never_refuses_a_usable_position() {
    let w = World::new().await;
    let key = w.device_key("officer1").await;
    let ts = (Utc::now() - Duration::seconds(60)).timestamp();
    for (n, extra) in [
        "batt=150",
        "accuracy=-3",
        "bearing=400&speed=-1",
        "altitude=abc&batt=x",
    ]
    .into_iter()
    .enumerate()
    {
        let a =
            w.s.raw(|c, b| {
                c.get(format!(
                    "{b}/osmand?id={key}&lat={LAT}&lon={LON}&timestamp={}&{extra}",
                    ts + n as i64
                ))
            })
            .await;
        assert_eq!(a.status, StatusCode::OK, "{extra}: {a:#?}");
    }
    // valid=false: kept as evidence, flagged, never counted.
    let a =
        w.s.raw(|c, b| {
            c.get(format!(
                "{b}/osmand?id={key}&lat={LAT}&lon={LON}&timestamp={}&valid=false",
                ts + 10
            ))
        })
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let fixes = w.fixes_of("officer1").await;
    assert_eq!(fixes.len(), 5, "{fixes:#?}");
    assert!(fixes.iter().all(|f| f["battery"].is_null()));
    let invalid: Vec<&Value> = fixes
        .iter()
        .filter(|f| {
            f["flags"]
                .as_array()
                .unwrap()
                .contains(&json!("invalid_fix"))
        })
        .collect();
    assert_eq!(invalid.len(), 1, "{fixes:#?}");
    // A position that cannot be stored is refused, naming the field the app sent.
    let future = (Utc::now() + Duration::hours(1)).timestamp();
    let a =
        w.s.raw(|c, b| {
            c.get(format!(
                "{b}/osmand?id={key}&lat={LAT}&lon={LON}&timestamp={future}"
            ))
        })
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "timestamp", "{a:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_list_every_state_with_state_all() {
    let w = World::new().await;
    w.kiosk_on_duty(-30, 120).await;
    w.evaluate().await;
    let all = w.s.get("/api/v1/alerts?state=all", &w.org.admin).await;
    assert_eq!(all.status, StatusCode::OK, "{all:#?}");
    let none = w.s.get("/api/v1/alerts", &w.org.admin).await;
    assert_eq!(all.body["items"], none.body["items"]);
    w.s.get("/api/v1/alerts?state=closed", &w.org.admin)
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_repeat_flags_do_not_depend_on_the_order_of_upload() {
    let w = World::new().await;
    let start = Utc::now() - Duration::hours(1);
    let frozen: Vec<Value> = (0..11)
        .map(|k| {
            json!({"client_id": Uuid::now_v7(), "recorded_at": iso(start + Duration::seconds(10 * k)),
                   "lat": LAT, "lon": LON, "accuracy_m": 4.0, "speed_mps": 0.0})
        })
        .collect();
    let repeats = |fixes: Vec<Value>| {
        let mut by_time: Vec<(String, bool)> = fixes
            .iter()
            .map(|f| {
                (
                    f["recorded_at"].as_str().unwrap().to_owned(),
                    f["flags"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("static_repeat")),
                )
            })
            .collect();
        by_time.sort();
        by_time.into_iter().map(|(_, r)| r).collect::<Vec<bool>>()
    };
    let expected: Vec<bool> = (0..11).map(|k| k >= 9).collect();
    // One by one, oldest first, for officer1; newer half first for officer2; a middle
    // piece last for vol1.
    let one = w.s.token("officer1").await;
    for f in &frozen {
        let a = w.s.post("/api/v1/checkins", &one, f.clone()).await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    assert_eq!(repeats(w.fixes_of("officer1").await), expected);
    let fresh = |fixes: &[Value]| -> Vec<Value> {
        fixes
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f["client_id"] = json!(Uuid::now_v7());
                f
            })
            .collect()
    };
    let two = w.s.token("officer2").await;
    let mine = fresh(&frozen);
    for part in [&mine[5..], &mine[..5]] {
        let a =
            w.s.post("/api/v1/checkins", &two, json!({"checkins": part}))
                .await;
        assert_eq!(a.body["created"], part.len(), "{a:#?}");
    }
    assert_eq!(repeats(w.fixes_of("officer2").await), expected);
    let three = w.s.token("vol1").await;
    let mine = fresh(&frozen);
    let pieces: [Vec<Value>; 2] = [
        mine[..3].iter().chain(&mine[7..]).cloned().collect(),
        mine[3..7].to_vec(),
    ];
    for part in &pieces {
        let a =
            w.s.post("/api/v1/checkins", &three, json!({"checkins": part}))
                .await;
        assert_eq!(a.body["created"], part.len(), "{a:#?}");
    }
    assert_eq!(repeats(w.fixes_of("vol1").await), expected);
    // A different reading inserted late into the run cuts it: the fixes after it are no
    // longer ten alike.
    let mut cut = frozen[4].clone();
    cut["client_id"] = json!(Uuid::now_v7());
    cut["recorded_at"] = json!(iso(start + Duration::seconds(45)));
    cut["lat"] = json!(LAT + 0.0001);
    let a = w.s.post("/api/v1/checkins", &one, cut).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(repeats(w.fixes_of("officer1").await).iter().all(|r| !r));
}
