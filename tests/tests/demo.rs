//! The demo district loads in one call and shows what it promises.

use api_tests::TestServer;
use chrono::{Duration, FixedOffset, NaiveTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_district_has_every_post_and_exactly_two_roster_gaps() {
    let s = TestServer::start().await;
    let summary = patrol_server::demo::load(&s.state)
        .await
        .expect("demo loads");
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
    let china = FixedOffset::east_opt(8 * 3600).unwrap();
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
