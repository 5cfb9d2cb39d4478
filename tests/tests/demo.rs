//! The demo district loads in one call and shows what it promises: every post, the two
//! planted roster gaps, and in its simulated duty every ordinary finished shift met while
//! each planted failure shows where the README says it does, in `/coverage`,
//! `/coverage/map`, `/checkins`, `/status/now` and `/reports/compliance`.

use std::collections::{BTreeSet, HashMap, HashSet};

use api_tests::TestServer;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveTime, Utc};
use patrol_server::demo::{self, DemoOptions, Failure};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_district_has_every_post_and_exactly_two_roster_gaps() {
    let s = TestServer::start().await;
    // The organisation and the rosters only: the fixes have their own test below.
    let summary = demo::load_with(
        &s.state,
        DemoOptions {
            fixes: false,
            ..DemoOptions::default()
        },
    )
    .await
    .expect("demo loads");
    assert_eq!(summary.fixes, 0);
    assert!(summary.members >= 300, "{summary}");
    // Loading again into a database that is no longer empty is refused.
    assert!(patrol_server::demo::load(&s.state).await.is_err());

    let admin = s.login("admin", patrol_server::demo::DEMO_PASSWORD).await;
    assert_eq!(admin.status, StatusCode::OK);
    let admin = admin.body["access_token"].as_str().unwrap().to_owned();
    let posts = s.get("/api/v1/posts/geojson", &admin).await.body;
    let features = posts["features"].as_array().unwrap();
    let count = |kind: &str| {
        features
            .iter()
            .filter(|f| f["properties"]["kind"] == kind)
            .count()
    };
    assert_eq!(
        (count("route"), count("checkpoint"), count("kiosk")),
        (18, 15, 20)
    );
    assert!((25..=40).contains(&count("area")));
    for f in features
        .iter()
        .filter(|f| f["properties"]["kind"] == "route")
    {
        let length = f["properties"]["length_m"].as_f64().unwrap();
        assert!(
            (2990.0..=8000.0).contains(&length),
            "{}: {length}",
            f["properties"]["code"]
        );
    }
    // Around 34.22°N 108.95°E.
    for f in features {
        let c = &f["geometry"]["coordinates"];
        let first: &Value = match f["geometry"]["type"].as_str().unwrap() {
            "Point" => c,
            "LineString" => &c[0],
            _ => &c[0][0],
        };
        let (lon, lat) = (first[0].as_f64().unwrap(), first[1].as_f64().unwrap());
        assert!(
            (108.85..109.05).contains(&lon) && (34.15..34.30).contains(&lat),
            "{lon} {lat}"
        );
    }

    // Within the rostered fortnight, the gap report shows the two planted gaps and nothing else.
    let china = china();
    let today = Utc::now().with_timezone(&china).date_naive();
    let midnight = |d: chrono::NaiveDate| {
        d.and_time(NaiveTime::MIN)
            .and_local_timezone(china)
            .unwrap()
            .with_timezone(&Utc)
    };
    let (from, to) = (
        midnight(today - Duration::days(7)),
        midnight(today + Duration::days(8)),
    );
    let gaps = s
        .get(
            &format!(
                "/api/v1/rosters/gaps?from={}&to={}",
                from.format("%Y-%m-%dT%H:%M:%SZ"),
                to.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            &admin,
        )
        .await;
    assert_eq!(gaps.status, StatusCode::OK, "{gaps:#?}");
    let items = gaps.body["items"].as_array().unwrap();
    let codes: Vec<&str> = items
        .iter()
        .map(|g| g["post_code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["C03", "K07"], "{items:#?}");
    for g in items {
        assert_eq!(g["rostered"], 0);
        let span = chrono::DateTime::parse_from_rfc3339(g["to"].as_str().unwrap()).unwrap()
            - chrono::DateTime::parse_from_rfc3339(g["from"].as_str().unwrap()).unwrap();
        assert_eq!(span, Duration::hours(8));
    }

    // The accounts it prints work, and each sees what it should.
    let station = s
        .login("cmd.ps01", patrol_server::demo::DEMO_PASSWORD)
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = s.get("/api/v1/posts?limit=1000", &station).await.body;
    let codes: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"R01") && codes.contains(&"R05") && !codes.contains(&"R02"),
        "{codes:?}"
    );
    let kiosk_officer = s
        .login("ko.k01a", patrol_server::demo::DEMO_PASSWORD)
        .await
        .body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let duties = s
        .get(
            &format!(
                "/api/v1/me/shifts?from={}&to={}",
                from.format("%Y-%m-%dT%H:%M:%SZ"),
                to.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            &kiosk_officer,
        )
        .await
        .body;
    let items = duties["items"].as_array().unwrap();
    assert!(
        (9..=13).contains(&items.len()),
        "a four-team crew works 6 days in 8: {}",
        items.len()
    );
    assert!(items.iter().all(|d| d["post"]["code"] == "K01"));
    for user in ["po.r01a.1", "vol.a01.1", "cmd.st01", "cmd.district"] {
        assert_eq!(
            s.login(user, patrol_server::demo::DEMO_PASSWORD)
                .await
                .status,
            StatusCode::OK,
            "{user}"
        );
    }
}

/// Days of past duty simulated: enough for every planted failure (the earliest is three
/// days back) and for the mock member's crew, which rests at most two days in a row.
const PAST_DAYS: u32 = 3;

fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}

/// A local time on a day, in UTC.
fn local(day: NaiveDate, hh: u32) -> DateTime<Utc> {
    day.and_time(NaiveTime::from_hms_opt(hh, 0, 0).expect("time"))
        .and_local_timezone(china())
        .unwrap()
        .with_timezone(&Utc)
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

struct Demo {
    s: TestServer,
    admin: String,
    summary: demo::DemoSummary,
    /// Coverage of every shift from the first rostered day up to the load.
    items: Vec<Value>,
    /// Post id by code, and the code of its unit (police station or street) by post code.
    post_id: HashMap<String, String>,
    unit_of_post: HashMap<String, String>,
    /// Member ids by username.
    member: HashMap<String, String>,
    /// Member ids by team id.
    team_members: HashMap<String, Vec<String>>,
    first_day: NaiveDate,
}

impl Demo {
    async fn load() -> Demo {
        let s = TestServer::start().await;
        let summary = demo::load_with(
            &s.state,
            DemoOptions {
                past_days: PAST_DAYS,
                fixes: true,
            },
        )
        .await
        .expect("demo loads");
        let admin = s.login("admin", demo::DEMO_PASSWORD).await.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let today = summary.loaded_at.with_timezone(&china()).date_naive();
        let first_day = today - Duration::days(i64::from(PAST_DAYS));
        let coverage = s
            .get(
                &format!(
                    "/api/v1/coverage?from={}&to={}",
                    ts(local(first_day, 0)),
                    ts(summary.loaded_at + Duration::seconds(1))
                ),
                &admin,
            )
            .await;
        assert_eq!(coverage.status, StatusCode::OK, "{coverage:#?}");
        let items = coverage.body["items"].as_array().unwrap().clone();

        let list = async |path: &str| -> Vec<Value> {
            let a = s.get(path, &admin).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {a:#?}");
            a.body["items"].as_array().unwrap().clone()
        };
        let text = |v: &Value, key: &str| v[key].as_str().unwrap().to_owned();
        let units: HashMap<String, String> = list("/api/v1/units?limit=1000")
            .await
            .iter()
            .map(|u| (text(u, "id"), text(u, "code")))
            .collect();
        let posts = list("/api/v1/posts?limit=1000").await;
        let post_id = posts
            .iter()
            .map(|p| (text(p, "code"), text(p, "id")))
            .collect();
        let unit_of_post = posts
            .iter()
            .map(|p| (text(p, "code"), units[&text(p, "unit_id")].clone()))
            .collect();
        let member = list("/api/v1/members?limit=1000")
            .await
            .iter()
            .map(|m| (text(m, "username"), text(m, "id")))
            .collect();
        let team_members = list("/api/v1/teams?limit=1000")
            .await
            .iter()
            .map(|t| {
                let members = t["member_ids"].as_array().unwrap();
                (
                    text(t, "id"),
                    members
                        .iter()
                        .map(|m| m.as_str().unwrap().to_owned())
                        .collect(),
                )
            })
            .collect();
        Demo {
            s,
            admin,
            summary,
            items,
            post_id,
            unit_of_post,
            member,
            team_members,
            first_day,
        }
    }

    fn today(&self) -> NaiveDate {
        self.summary.loaded_at.with_timezone(&china()).date_naive()
    }

    /// The coverage of the shift at this post starting at this instant.
    fn shift_at(&self, code: &str, starts_at: DateTime<Utc>) -> &Value {
        self.items
            .iter()
            .find(|i| i["post_code"] == code && time(&i["starts_at"]) == starts_at)
            .unwrap_or_else(|| panic!("no shift at {code} starting {starts_at}"))
    }

    fn planted(&self, failure: Failure) -> &demo::Planted {
        self.summary
            .planted
            .iter()
            .find(|p| p.failure == failure)
            .unwrap_or_else(|| panic!("{failure:?} is not planted: {}", self.summary))
    }

    async fn get(&self, path: &str) -> Value {
        let a = self.s.get(path, &self.admin).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {a:#?}");
        a.body
    }

    /// Every fix of a member from the first rostered day on (newest received first).
    async fn fixes_of(&self, member_id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!(
                "/api/v1/checkins?member_id={member_id}&from={}&limit=1000",
                ts(local(self.first_day, 0) - Duration::hours(1))
            );
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).await;
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Map features of one post over a span.
    async fn map(&self, code: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Value> {
        let post_id = &self.post_id[code];
        let map = self
            .get(&format!(
                "/api/v1/coverage/map?from={}&to={}&post_id={post_id}",
                ts(from),
                ts(to)
            ))
            .await;
        map["features"].as_array().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fixes_meet_ordinary_duty_and_show_each_planted_failure() {
    let d = Demo::load().await;
    let now = d.summary.loaded_at;
    let today = d.today();
    assert!(d.summary.fixes > 100_000, "{}", d.summary);
    let planted_codes: BTreeSet<(&str, &str)> = d
        .summary
        .planted
        .iter()
        .map(|p| (p.post_code.as_str(), p.failure.describe()))
        .collect();
    assert_eq!(planted_codes.len(), 5, "{}", d.summary);

    // (a) Kiosk K04: nobody there from 02:00 to 04:00 on the night shift two days ago.
    let day = today - Duration::days(2);
    let k04 = d.shift_at(demo::EMPTY_KIOSK, local(day, 0));
    assert_eq!(k04["status"], "partial", "{k04:#}");
    let presence = &k04["presence"];
    let staffed = f64_of(&presence["staffed_fraction"]);
    assert!((0.70..0.80).contains(&staffed), "{k04:#}");
    let empty: Vec<(DateTime<Utc>, DateTime<Utc>)> = presence["unstaffed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| (time(&span[0]), time(&span[1])))
        .filter(|(a, b)| *b - *a > Duration::minutes(30))
        .collect();
    assert_eq!(empty.len(), 1, "{k04:#}");
    let (gone, back) = empty[0];
    assert!(
        (gone - local(day, 2)).num_seconds().abs() <= 120
            && (back - local(day, 4)).num_seconds().abs() <= 120,
        "empty from {gone} to {back}"
    );
    assert_eq!(
        d.planted(Failure::EmptyKiosk).shift_ids[0].to_string(),
        k04["shift_id"].as_str().unwrap()
    );
    // The officer's fixes of those hours are there, 600 m away, not missing.
    let officer = &d.member[&d.planted(Failure::EmptyKiosk).who];
    let away = d
        .get(&format!(
            "/api/v1/checkins?member_id={officer}&from={}&to={}&limit=1000",
            ts(local(day, 2) + Duration::minutes(15)),
            ts(local(day, 4) - Duration::minutes(15))
        ))
        .await;
    assert!(away["items"].as_array().unwrap().len() >= 80, "{away:#}");
    let features = d.map(demo::EMPTY_KIOSK, local(day, 0), local(day, 8)).await;
    assert_eq!(features[0]["properties"]["status"], "partial");

    // (b) Route R05: only the first half walked on the day shift three days ago.
    let day = today - Duration::days(3);
    let r05 = d.shift_at(demo::HALF_ROUTE, local(day, 8));
    assert_eq!(r05["status"], "partial", "{r05:#}");
    let route = &r05["route"];
    let length = f64_of(&route["length_m"]);
    let covered = f64_of(&route["covered_fraction"]);
    assert!((0.48..0.56).contains(&covered), "{r05:#}");
    let uncovered = route["uncovered"].as_array().unwrap();
    assert_eq!(uncovered.len(), 1, "{r05:#}");
    let (from_m, to_m) = (f64_of(&uncovered[0][0]), f64_of(&uncovered[0][1]));
    assert!(
        (length / 2.0..length / 2.0 + 60.0).contains(&from_m) && (to_m - length).abs() < 1.0,
        "{r05:#}"
    );
    let features = d.map(demo::HALF_ROUTE, local(day, 8), local(day, 16)).await;
    let open: Vec<&Value> = features
        .iter()
        .filter(|f| f["properties"]["covered"] == false)
        .collect();
    assert_eq!(open.len(), 1, "{features:#?}");
    assert!((f64_of(&open[0]["properties"]["from_m"]) - from_m).abs() < 1.0);
    assert_eq!(open[0]["properties"]["status"], "partial");
    // The same route on the day's other shift is walked end to end.
    let evening = d.shift_at(demo::HALF_ROUTE, local(day, 16));
    assert_eq!(evening["status"], "met", "{evening:#}");

    // (c) Checkpoint C07: one of its crew of two on yesterday's evening shift.
    let day = today - Duration::days(1);
    let c07 = d.shift_at(demo::SHORT_CHECKPOINT, local(day, 16));
    assert_eq!(c07["status"], "partial", "{c07:#}");
    let presence = &c07["presence"];
    assert_eq!(presence["max_headcount"], 1, "{c07:#}");
    assert_eq!(f64_of(&presence["staffed_fraction"]), 0.0);
    assert!(f64_of(&presence["present_fraction"]) > 0.97, "{c07:#}");
    assert!(presence["late_min"].is_null());
    let absent = &d.member[&d.planted(Failure::ShortCheckpoint).who];
    let theirs = d
        .get(&format!(
            "/api/v1/checkins?member_id={absent}&from={}&to={}",
            ts(local(day, 16)),
            ts(local(day + Duration::days(1), 0))
        ))
        .await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0, "{theirs:#}");
    let features = d
        .map(
            demo::SHORT_CHECKPOINT,
            local(day, 16),
            local(day + Duration::days(1), 0),
        )
        .await;
    assert_eq!(features[0]["properties"]["status"], "partial");
    assert_eq!(features[0]["properties"]["staffed_fraction"], 0.0);

    // (d) ko.k13c: every fix mocked, so every finished shift of theirs is missed.
    let mock_id = d.member[demo::MOCK_MEMBER].clone();
    let fixes = d.fixes_of(&mock_id).await;
    assert!(fixes.len() > 300, "{}", fixes.len());
    for f in &fixes {
        assert_eq!(f["mock"], true, "{f:#}");
        let flags: Vec<&str> = f["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert!(flags.contains(&"mock_location"), "{f:#}");
    }
    let mock_shifts: Vec<&Value> = d
        .items
        .iter()
        .filter(|i| {
            i["post_code"] == "K13"
                && d.planted(Failure::MockMember)
                    .shift_ids
                    .iter()
                    .any(|id| id.to_string() == i["shift_id"].as_str().unwrap())
        })
        .collect();
    let finished_mock: Vec<&&Value> = mock_shifts
        .iter()
        .filter(|i| i["status"] != "pending")
        .collect();
    assert!(!finished_mock.is_empty(), "{}", d.summary);
    for i in &finished_mock {
        assert_eq!(i["status"], "missed", "{i:#}");
        assert_eq!(i["eligible_fixes"], 0, "{i:#}");
        assert!(i["excluded"]["flagged"].as_u64().unwrap() > 300, "{i:#}");
    }
    let last = finished_mock.last().unwrap();
    let features = d
        .map("K13", time(&last["starts_at"]), time(&last["ends_at"]))
        .await;
    assert_eq!(features[0]["properties"]["status"], "missed");

    // (e) The crew on duty at C11 five hours before the load syncs six hours late.
    let late = d.planted(Failure::LateTeam);
    let c11: Vec<&Value> = d
        .items
        .iter()
        .filter(|i| i["post_code"] == demo::LATE_CHECKPOINT)
        .collect();
    let five_hours_ago = now - Duration::hours(5);
    let on_duty = c11
        .iter()
        .find(|i| time(&i["starts_at"]) <= five_hours_ago && five_hours_ago < time(&i["ends_at"]))
        .expect("a C11 shift five hours before the load");
    let shift = d
        .get(&format!(
            "/api/v1/shifts/{}",
            on_duty["shift_id"].as_str().unwrap()
        ))
        .await;
    let crew = &d.team_members[shift["team_id"].as_str().unwrap()];
    assert_eq!(crew.len(), 2);
    let mut latest = None;
    for m in crew {
        for f in d.fixes_of(m).await {
            let lag = time(&f["received_at"]) - time(&f["recorded_at"]);
            assert!(
                lag >= demo::LATE_BY && lag <= demo::LATE_BY + Duration::minutes(2),
                "{f:#}"
            );
            latest = latest.max(Some(time(&f["recorded_at"])));
        }
    }
    // Nothing of the last six hours has arrived.
    assert!(
        latest.is_some_and(|t| t <= now - demo::LATE_BY),
        "{latest:?}"
    );
    assert!(
        late.shift_ids
            .iter()
            .any(|id| id.to_string() == on_duty["shift_id"].as_str().unwrap())
    );
    let ends = time(&on_duty["ends_at"]);
    if ends <= now {
        // Ended within the last five hours: its last hours are missing.
        assert_eq!(on_duty["status"], "partial", "{on_duty:#}");
        assert!(f64_of(&on_duty["presence"]["staffed_fraction"]) < 0.9);
        let spans = on_duty["presence"]["unstaffed"].as_array().unwrap();
        let tail = spans.last().unwrap();
        assert_eq!(time(&tail[1]), ends, "{on_duty:#}");
        assert!(time(&tail[0]) <= now - demo::LATE_BY + Duration::minutes(2));
    } else {
        // Still running: nobody has been seen there for six hours, and the crew is silent.
        assert_eq!(on_duty["status"], "pending", "{on_duty:#}");
        let board = d.get("/api/v1/status/now").await;
        let post = board["posts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["post_code"] == demo::LATE_CHECKPOINT)
            .unwrap();
        if time(&board["at"]) < ends {
            assert_eq!(post["staffed"], false, "{post:#}");
            let silent: HashSet<&str> = board["silent"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["member_id"].as_str().unwrap())
                .collect();
            assert!(
                crew.iter().all(|m| silent.contains(m.as_str())),
                "{board:#}"
            );
        }
    }

    // Everything else that has finished is met: the planted failures are the only misses.
    let spoiled: HashSet<String> = d
        .summary
        .planted
        .iter()
        .flat_map(|p| p.shift_ids.iter().map(|id| id.to_string()))
        .collect();
    let mut ordinary = 0;
    for i in &d.items {
        let id = i["shift_id"].as_str().unwrap();
        if i["status"] == "pending" || spoiled.contains(id) {
            continue;
        }
        ordinary += 1;
        assert_eq!(i["status"], "met", "{i:#}");
    }
    assert!(ordinary > 500, "{ordinary}");
    // Every kind of post was on duty and met.
    for kind in ["route", "checkpoint", "kiosk", "area"] {
        assert!(
            d.items
                .iter()
                .any(|i| i["kind"] == kind && i["status"] == "met"),
            "{kind}"
        );
    }

    // The compliance ranking counts each failure against its police station, and nothing
    // against the one without any.
    let asked_at = Utc::now();
    let mut expected: HashMap<String, u32> = HashMap::new();
    for p in &d.summary.planted {
        for id in &p.shift_ids {
            let item = d
                .items
                .iter()
                .find(|i| i["shift_id"].as_str() == Some(&id.to_string()))
                .unwrap();
            if time(&item["ends_at"]) <= asked_at {
                *expected
                    .entry(d.unit_of_post[item["post_code"].as_str().unwrap()].clone())
                    .or_default() += 1;
            }
        }
    }
    let months: BTreeSet<String> = (0..=PAST_DAYS)
        .map(|k| {
            (today - Duration::days(i64::from(k)))
                .format("%Y-%m")
                .to_string()
        })
        .collect();
    let mut tally: HashMap<String, (u64, u64)> = HashMap::new();
    for month in &months {
        let report = d
            .get(&format!(
                "/api/v1/reports/compliance?month={month}&level=police_station"
            ))
            .await;
        for row in report["items"].as_array().unwrap() {
            let t = tally
                .entry(row["unit_code"].as_str().unwrap().to_owned())
                .or_default();
            t.0 += row["shifts"].as_u64().unwrap();
            t.1 += row["met"].as_u64().unwrap();
        }
    }
    assert_eq!(tally.len(), 4, "{tally:?}");
    for (station, (shifts, met)) in &tally {
        assert!(*shifts > 50, "{station}: {shifts}");
        assert_eq!(
            shifts - met,
            u64::from(expected.get(station).copied().unwrap_or(0)),
            "{station}: {expected:?}"
        );
    }
    assert_eq!(expected.get("PS04"), None, "{expected:?}");
    for station in ["PS01", "PS02", "PS03"] {
        assert!(
            expected.get(station).is_some_and(|n| *n > 0),
            "{expected:?}"
        );
    }
}
