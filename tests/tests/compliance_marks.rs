//! The compliance marks (issue 27, item 5): equal scores share their fate, the ranking is
//! the district's whoever asks, a month before any roster is not ranked, a unit that met
//! none of its duty is never commended, and too few units are not marked; the console
//! shows shared ranks and scores fine enough to tell units apart.
//!
//! Each street or police station has a kiosk of its own and one officer; a shift is an hour
//! in the middle of a past month, met when the officer sends a fix every minute at the kiosk.

use std::{collections::HashMap, time::Duration as Wait};

use api_tests::{
    Org, PASSWORD, TestServer,
    browser::{Browser, browser_or_skip},
    id,
};
use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const LAT: f64 = 34.22;
const LON: f64 = 108.95;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The first day of the month `back` months before the current one, in `tz`.
fn month_back(tz: Tz, back: u32) -> NaiveDate {
    let today = Utc::now().with_timezone(&tz).date_naive();
    let mut m = today.with_day(1).unwrap();
    for _ in 0..back {
        m = (m - Duration::days(1)).with_day(1).unwrap();
    }
    m
}

fn ym(month: NaiveDate) -> String {
    month.format("%Y-%m").to_string()
}

/// A unit of the level ranked, with its kiosk and the officer on duty there.
struct Unit {
    id: Uuid,
    kiosk: Uuid,
    officer: String,
    officer_id: Uuid,
    lat: f64,
}

struct District {
    s: TestServer,
    org: Org,
    tz: Tz,
    units: HashMap<String, Unit>,
}

impl District {
    /// The fixture district with streets S3 and S4 added when `four_streets`, each street
    /// with a kiosk of this `staffing`.
    async fn new(four_streets: bool, staffing: &str) -> District {
        // Fixes months old are accepted, so past months can be met.
        let s = TestServer::start_with(|st| st.sync_window = Duration::days(150)).await;
        let org = Org::create(&s).await;
        let tz: Tz = s.state.settings.timezone.parse().unwrap();
        let mut d = District {
            s,
            org,
            tz,
            units: HashMap::new(),
        };
        let (s1, s2) = (d.org.street1, d.org.street2);
        d.add("S1", Some(s1), "street", staffing).await;
        d.add("S2", Some(s2), "street", staffing).await;
        if four_streets {
            d.add("S3", None, "street", staffing).await;
            d.add("S4", None, "street", staffing).await;
        }
        d
    }

    /// Adds a unit (or takes `existing`) with a kiosk and an officer.
    async fn add(&mut self, code: &str, existing: Option<Uuid>, kind: &str, staffing: &str) {
        let admin = self.org.admin.clone();
        let unit = match existing {
            Some(u) => u,
            None => id(&self
                .s
                .post(
                    "/api/v1/units",
                    &admin,
                    json!({"code": code, "name": format!("Unit {code}"), "kind": kind,
                        "parent_id": self.org.district}),
                )
                .await),
        };
        // Kiosks a kilometre apart: one officer's fixes never staff another's kiosk.
        let lat = LAT + 0.01 * self.units.len() as f64;
        let kiosk = id(&self
            .s
            .post(
                "/api/v1/posts",
                &admin,
                json!({"code": format!("K-{code}"), "name": format!("Kiosk {code}"), "kind": "kiosk",
                    "unit_id": unit, "staffing": staffing,
                    "geometry": {"type": "Point", "coordinates": [LON, lat]}}),
            )
            .await);
        let officer = format!("duty-{}", code.to_lowercase());
        let officer_id = id(&self
            .s
            .post(
                "/api/v1/members",
                &admin,
                json!({"username": officer, "role": "kiosk_officer", "unit_id": unit, "password": PASSWORD}),
            )
            .await);
        self.units.insert(
            code.to_owned(),
            Unit {
                id: unit,
                kiosk,
                officer,
                officer_id,
                lat,
            },
        );
    }

    /// A commander of the unit `code`.
    async fn commander_of(&self, code: &str) -> String {
        let username = format!("cmd-{}", code.to_lowercase());
        let a = self
            .s
            .post(
                "/api/v1/members",
                &self.org.admin,
                json!({"username": username, "role": "commander", "unit_id": self.units[code].id, "password": PASSWORD}),
            )
            .await;
        id(&a);
        self.s.token(&username).await
    }

    /// Hour-long shifts at `code`'s kiosk on days 10, 11, ... of `month` at 10:00 local, the
    /// first `met` of them met and the others missed.
    async fn duty(&self, code: &str, month: NaiveDate, shifts: u32, met: u32) {
        let u = &self.units[code];
        for k in 0..shifts {
            let day = month.with_day(10 + k).unwrap();
            let start = self
                .tz
                .from_local_datetime(&day.and_hms_opt(10, 0, 0).unwrap())
                .unwrap()
                .with_timezone(&Utc);
            let end = start + Duration::hours(1);
            let a = self
                .s
                .post(
                    "/api/v1/shifts",
                    &self.org.admin,
                    json!({"post_id": u.kiosk, "starts_at": iso(start), "ends_at": iso(end),
                        "member_ids": [u.officer_id]}),
                )
                .await;
            id(&a);
            if k < met {
                let fixes: Vec<Value> = (0..=60)
                    .map(|i| {
                        json!({"client_id": Uuid::new_v4(), "recorded_at": iso(start + Duration::minutes(i)),
                            "lat": u.lat + f64::from(i as u8 % 3) * 1e-6, "lon": LON, "accuracy_m": 5.0})
                    })
                    .collect();
                let token = self.s.token(&u.officer).await;
                let a = self
                    .s
                    .post("/api/v1/checkins", &token, json!({"checkins": fixes}))
                    .await;
                assert_eq!(a.status, StatusCode::OK, "{a:#?}");
                assert_eq!(a.body["rejected"], 0, "{}", a.body);
            }
        }
    }

    async fn report(&self, month: NaiveDate, level: &str, token: &str) -> Value {
        let a = self
            .s
            .get(
                &format!(
                    "/api/v1/reports/compliance?month={}&level={level}",
                    ym(month)
                ),
                token,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:#?}");
        a.body
    }
}

fn row<'a>(report: &'a Value, code: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["unit_code"] == code)
        .unwrap_or_else(|| panic!("{code} in {report:#}"))
}

fn codes(report: &Value, pick: impl Fn(&Value) -> bool) -> Vec<String> {
    let mut out: Vec<String> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| pick(r))
        .map(|r| r["unit_code"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// (a) Four streets that all met all their duty tie for first: no one is named, whatever
/// their codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_scores_name_no_unit() {
    let d = District::new(true, "rostered").await;
    let month = month_back(d.tz, 1);
    for code in ["S1", "S2", "S3", "S4"] {
        d.duty(code, month, 1, 1).await;
    }
    let r = d.report(month, "street", &d.org.admin).await;
    assert_eq!(
        codes(&r, |x| x["bottom2"] == true),
        Vec::<String>::new(),
        "{r:#}"
    );
    for code in ["S1", "S2", "S3", "S4"] {
        let x = row(&r, code);
        assert_eq!(x["score"], 1.0, "{x}");
        assert_eq!(x["consequence"], Value::Null, "{x}");
        assert_eq!(x["rank"], 1, "{x}");
        assert_eq!(x["tied_units"], 4, "{x}");
    }
    assert_eq!(r["ranked_units"], 4, "{r:#}");
    assert_eq!(r["marks_withheld"], Value::Null, "{r:#}");
    // The CSV carries the tie and the count too.
    let csv =
        d.s.get(
            &format!(
                "/api/v1/reports/compliance?month={}&level=street&format=csv",
                ym(month)
            ),
            &d.org.admin,
        )
        .await
        .text;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[at("rank")], "1", "{line}");
        assert_eq!(cells[at("bottom2")], "false", "{line}");
        assert_eq!(cells[at("tied_units")], "4", "{line}");
        assert_eq!(cells[at("ranked_units")], "4", "{line}");
        assert_eq!(cells[at("marks_withheld")], "", "{line}");
    }
}

/// (b) A commander is shown the rows of their subtree with the very ranks and marks the
/// district admin sees, at the street and at the police station level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marks_do_not_depend_on_who_asks() {
    let mut d = District::new(true, "rostered").await;
    for code in ["PS1", "PS2", "PS3"] {
        d.add(code, None, "police_station", "rostered").await;
    }
    let month = month_back(d.tz, 1);
    let last = month_back(d.tz, 2);
    for m in [last, month] {
        // S1 met none, S2 half, S3 two of three, S4 all.
        d.duty("S1", m, 1, 0).await;
        d.duty("S2", m, 2, 1).await;
        d.duty("S3", m, 3, 2).await;
        d.duty("S4", m, 1, 1).await;
    }
    d.duty("PS1", month, 1, 0).await;
    d.duty("PS2", month, 2, 1).await;
    d.duty("PS3", month, 1, 1).await;

    let street_commander = d.s.token("cmd1").await;
    let other_street = d.s.token("cmd2").await;
    let station_commander = d.commander_of("PS1").await;
    for (level, token, shown) in [
        ("street", &street_commander, vec!["S1"]),
        ("street", &other_street, vec!["S2"]),
        ("police_station", &station_commander, vec!["PS1"]),
    ] {
        let all = d.report(month, level, &d.org.admin).await;
        let mine = d.report(month, level, token).await;
        assert_eq!(codes(&mine, |_| true), shown, "{mine:#}");
        for code in shown {
            assert_eq!(row(&mine, code), row(&all, code), "{level} {code}");
        }
        assert_eq!(mine["ranked_units"], all["ranked_units"], "{mine:#}");
        assert_eq!(mine["marks_withheld"], all["marks_withheld"], "{mine:#}");
    }
    let streets = d.report(month, "street", &street_commander).await;
    let s1 = row(&streets, "S1");
    assert_eq!(s1["rank"], 4, "{s1}");
    assert_eq!(s1["bottom2"], true, "{s1}");
    assert_eq!(s1["consequence"], "yellow_card", "{s1}");
    let stations = d.report(month, "police_station", &station_commander).await;
    let ps1 = row(&stations, "PS1");
    assert_eq!(ps1["rank"], 3, "{ps1}");
    assert_eq!(ps1["consequence"], "named", "{ps1}");
}

/// (c) A round-the-clock kiosk first rostered mid-month: the months before are not ranked
/// and start no run, and its roster gaps count from its first shift only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_before_any_roster_is_not_ranked() {
    let d = District::new(true, "24x7").await;
    let month = month_back(d.tz, 1);
    d.duty("S1", month, 1, 1).await;
    d.duty("S2", month, 1, 1).await;
    d.duty("S3", month, 1, 0).await;
    d.duty("S4", month, 1, 0).await;

    for before in [2, 3] {
        let r = d
            .report(month_back(d.tz, before), "street", &d.org.admin)
            .await;
        for x in r["items"].as_array().unwrap() {
            assert_eq!(x["rank"], Value::Null, "{x}");
            assert_eq!(x["score"], Value::Null, "{x}");
            assert_eq!(x["gap_hours"], 0.0, "{x}");
            assert_eq!(x["bottom2"], false, "{x}");
        }
        assert_eq!(r["ranked_units"], 0, "{r:#}");
        assert_eq!(r["marks_withheld"], "too_few_units", "{r:#}");
    }
    let r = d.report(month, "street", &d.org.admin).await;
    assert_eq!(codes(&r, |x| x["bottom2"] == true), ["S3", "S4"], "{r:#}");
    assert_eq!(r["ranked_units"], 4, "{r:#}");
    for code in ["S3", "S4"] {
        let x = row(&r, code);
        assert_eq!(x["months_in_bottom2"], 1, "{x}");
        assert_eq!(x["consequence"], "named", "{x}");
    }
    // Gaps from the first shift (day 10, 10:00) to the end of the month, less its hour.
    let first =
        d.tz.from_local_datetime(&month.with_day(10).unwrap().and_hms_opt(10, 0, 0).unwrap())
            .unwrap();
    let next =
        d.tz.from_local_datetime(&month_back(d.tz, 0).and_hms_opt(0, 0, 0).unwrap())
            .unwrap();
    let expected = (next - first).num_seconds() as f64 / 3600.0 - 1.0;
    let s1 = row(&r, "S1");
    assert!(
        (s1["gap_hours"].as_f64().unwrap() - expected).abs() < 1e-6,
        "{expected} gap hours: {s1}"
    );
}

/// (d) A unit that met none of its duty is never commended, though it was in the top 3 of
/// three two months running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_scored_nothing_is_never_commended() {
    let mut d = District::new(false, "rostered").await;
    d.add("S3", None, "street", "rostered").await;
    let month = month_back(d.tz, 1);
    let last = month_back(d.tz, 2);
    for m in [last, month] {
        d.duty("S1", m, 1, 1).await;
        d.duty("S2", m, 2, 1).await;
        d.duty("S3", m, 1, 0).await;
    }
    let r = d.report(month, "street", &d.org.admin).await;
    let s3 = row(&r, "S3");
    assert_eq!(s3["score"], 0.0, "{s3}");
    assert_eq!(s3["rank"], 3, "{s3}");
    assert_eq!(s3["commended"], false, "{s3}");
    assert_eq!(s3["consequence"], "yellow_card", "{s3}");
    assert_eq!(r["ranked_units"], 3, "{r:#}");
    assert_eq!(codes(&r, |x| x["commended"] == true), ["S1"], "{r:#}");
    for x in r["items"].as_array().unwrap() {
        assert!(
            !(x["commended"] == true && x["bottom2"] == true),
            "commended and in the bottom 2: {x}"
        );
    }
}

/// With fewer than three units ranked the report says so and marks no one, not even the
/// one that met none of its duty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_units_are_not_marked() {
    let d = District::new(false, "rostered").await;
    let month = month_back(d.tz, 1);
    let last = month_back(d.tz, 2);
    for m in [last, month] {
        d.duty("S1", m, 1, 1).await;
        d.duty("S2", m, 1, 0).await;
    }
    let r = d.report(month, "street", &d.org.admin).await;
    for x in r["items"].as_array().unwrap() {
        assert_eq!(x["bottom2"], false, "{x}");
        assert_eq!(x["consequence"], Value::Null, "{x}");
        assert_eq!(x["commended"], false, "{x}");
    }
    assert_eq!(row(&r, "S1")["rank"], 1);
    assert_eq!(row(&r, "S2")["rank"], 2);
    assert_eq!(r["ranked_units"], 2, "{r:#}");
    assert_eq!(r["marks_withheld"], "too_few_units", "{r:#}");
}

/// The console shows a shared rank as "=1" and scores to 0.01 %, names only the unit below
/// the tie, and shows a commander the same rank for their street, tie included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_shared_ranks_and_fine_scores() {
    let Some(binaries) = browser_or_skip("the_console_shows_shared_ranks") else {
        return;
    };
    let d = District::new(true, "rostered").await;
    let month = month_back(d.tz, 1);
    for code in ["S1", "S2", "S3"] {
        d.duty(code, month, 1, 1).await;
    }
    d.duty("S4", month, 3, 2).await;
    for (username, shown) in [
        (
            "admin",
            json!([
                ["=1", "100.00 %"],
                ["=1", "100.00 %"],
                ["=1", "100.00 %"],
                ["4", "66.67 %"]
            ]),
        ),
        ("cmd1", json!([["=1", "100.00 %"]])),
    ] {
        let browser = Browser::start(binaries.clone()).await;
        browser
            .client
            .goto(&format!("{}/", d.s.base))
            .await
            .unwrap();
        browser
            .until_js(
                "the console to start",
                Wait::from_secs(20),
                "return document.body.dataset.ready === 'true'",
            )
            .await;
        browser
            .js(
                "document.getElementById('login-username').value = arguments[0];
                 document.getElementById('login-password').value = arguments[1];
                 document.getElementById('login-form').requestSubmit();",
                vec![json!(username), json!(PASSWORD)],
            )
            .await;
        browser
            .until_js(
                "the login to complete",
                Wait::from_secs(20),
                "return document.body.dataset.session === 'open'",
            )
            .await;
        browser.show_compliance(&ym(month), "street").await;
        let cells = browser.ranking_cells().await;
        assert_eq!(cells, shown, "{username}");
        let named = browser
            .js(
                "return [...document.querySelectorAll('#ranking tbody tr.bottom2')].map(r => r.dataset.unitCode)",
                vec![],
            )
            .await;
        let expected = if username == "admin" {
            json!(["S4"])
        } else {
            json!([])
        };
        assert_eq!(named, expected, "{username}");
        let note = browser.text_of("ranking-note").await;
        assert!(
            note.starts_with("4 units ranked in the district. Equal scores share a rank"),
            "{note}"
        );
        if username == "admin" {
            browser.screenshot("compliance-ties").await;
        }
        let _ = browser.client.close().await;
    }
}
