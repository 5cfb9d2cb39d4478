//! The order fixes arrive in changes neither their flags nor coverage (issue 27): a phone
//! sending fix by fix and a phone uploading the same fixes in one batch end alike.

use api_tests::{Org, TestServer, id};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Where the kiosk stands (longitude, latitude).
const KIOSK: (f64, f64) = (108.95, 34.22);
/// Degrees of latitude to about 30 km away: too far to walk in an hour and more.
const FAR: f64 = 0.27;

/// A time as the API takes it, to the second and with no `+` to escape in a query.
fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fix `north` degrees north of the kiosk (and a few metres east), with a new client id.
fn fix(t: DateTime<Utc>, north: f64) -> Value {
    json!({"client_id": Uuid::new_v4(), "recorded_at": stamp(t), "accuracy_m": 5.0,
           "lon": KIOSK.0 + 2e-5, "lat": KIOSK.1 + north})
}

async fn send(s: &TestServer, token: &str, fixes: &[Value]) {
    let a = s
        .post("/api/v1/checkins", token, json!({"checkins": fixes}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["rejected"], 0, "{}", a.body);
}

/// The member's fixes as (recorded_at, flags), in time order.
async fn flags_of(s: &TestServer, admin: &str, member: Uuid) -> Vec<(String, Value)> {
    let a = s
        .get(
            &format!("/api/v1/checkins?member_id={member}&limit=1000"),
            admin,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let mut out: Vec<(String, Value)> = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["recorded_at"].as_str().unwrap().to_owned(),
                f["flags"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A shift's coverage, without what names the post and the shift.
async fn coverage(s: &TestServer, admin: &str, post: Uuid, from: DateTime<Utc>) -> Value {
    let to = from + Duration::hours(1);
    let a = s
        .get(
            &format!(
                "/api/v1/coverage?from={}&to={}&post_id={post}",
                stamp(from),
                stamp(to)
            ),
            admin,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    let items = a.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", a.body);
    json!({
        "status": items[0]["status"],
        "eligible_fixes": items[0]["eligible_fixes"],
        "presence": items[0]["presence"],
        "excluded": items[0]["excluded"],
    })
}

/// Whether the stored coverage of the shift is out of date (`None`: none stored).
async fn stale(s: &TestServer, shift: Uuid) -> Option<bool> {
    use patrol_server::store::shift_coverage;
    use sea_orm::EntityTrait;
    shift_coverage::Entity::find_by_id(shift)
        .one(&s.state.db)
        .await
        .unwrap()
        .map(|row| row.stale)
}

/// Waits until the updater has stored the shift's coverage afresh.
async fn until_fresh(s: &TestServer, shift: Uuid) {
    for _ in 0..300 {
        if stale(s, shift).await == Some(false) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the coverage of shift {shift} was not stored afresh");
}

/// A server with a kiosk and two one-hour shifts of officer1 there, long over, whose
/// figures are stored (as missed) before any fix arrives: (server, org, kiosk, shifts).
async fn kiosk_with_two_shifts(starts: [DateTime<Utc>; 2]) -> (TestServer, Org, Uuid, Vec<Uuid>) {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let body = json!({"code": "K1", "name": "K1", "kind": "kiosk", "unit_id": org.street1,
                      "geometry": {"type": "Point", "coordinates": [KIOSK.0, KIOSK.1]}});
    let kiosk = id(&s.post("/api/v1/posts", &org.admin, body).await);
    let mut shifts = Vec::new();
    for start in starts {
        let body = json!({"post_id": kiosk, "starts_at": stamp(start),
                          "ends_at": stamp(start + Duration::hours(1)),
                          "member_ids": [org.members["officer1"]]});
        shifts.push(id(&s.post("/api/v1/shifts", &org.admin, body).await));
        assert_eq!(
            coverage(&s, &org.admin, kiosk, start).await["status"],
            "missed"
        );
    }
    for shift in &shifts {
        assert_eq!(stale(&s, *shift).await, Some(false));
    }
    (s, org, kiosk, shifts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_sent_one_by_one_or_in_a_batch_end_with_the_same_flags_and_coverage() {
    // Two servers alike, so that neither member's fixes are evidence at the other's kiosk.
    let now = Utc::now().trunc_subsecs(0);
    let first = now - Duration::hours(5);
    let second = now - Duration::minutes(210);
    let (online, online_org, online_kiosk, online_shifts) =
        kiosk_with_two_shifts([first, second]).await;
    let (offline, offline_org, offline_kiosk, _) = kiosk_with_two_shifts([first, second]).await;

    // First shift: a teleport 30 km off comes first, then a fix every two minutes at the
    // kiosk. Second shift: one fix at the kiosk just before its end, then, more than an
    // hour after the end, two fixes 30 km off, too far to have walked in the time between.
    let mut day = vec![fix(first + Duration::minutes(1), FAR)];
    day.extend((0..29).map(|i| fix(first + Duration::minutes(3 + 2 * i), 1e-5)));
    let lone = day.len();
    day.push(fix(second + Duration::minutes(59), 2e-5));
    let after = second + Duration::minutes(125);
    day.push(fix(after, FAR));
    day.push(fix(after + Duration::minutes(1), FAR + 3e-4));

    // A phone online: fix by fix, in time order. Once the lone fix is in, the second
    // shift's figures are stored afresh with it, so that only the revision of its flag
    // by the fixes after it (which lie outside that shift's reach) can put them out of date.
    let token = online.token("officer1").await;
    for (i, f) in day.iter().enumerate() {
        send(&online, &token, std::slice::from_ref(f)).await;
        if i == lone {
            until_fresh(&online, online_shifts[1]).await;
            let c = coverage(&online, &online_org.admin, online_kiosk, second).await;
            assert_eq!(c["status"], "partial", "{c}");
        }
    }
    // A phone offline: the same fixes in one batch.
    let token = offline.token("officer1").await;
    send(&offline, &token, &day).await;

    let one_by_one = flags_of(&online, &online_org.admin, online_org.members["officer1"]).await;
    let in_a_batch = flags_of(
        &offline,
        &offline_org.admin,
        offline_org.members["officer1"],
    )
    .await;
    assert_eq!(one_by_one, in_a_batch);
    // The flags of the whole set: the teleport and the lone fix the far pair contradicts.
    let implausible: Vec<usize> = in_a_batch
        .iter()
        .enumerate()
        .filter(|(_, (_, flags))| {
            flags
                .as_array()
                .unwrap()
                .contains(&json!("implausible_speed"))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(implausible, [0, lone], "{in_a_batch:?}");

    for (start, status) in [(first, "met"), (second, "missed")] {
        let a = coverage(&online, &online_org.admin, online_kiosk, start).await;
        let b = coverage(&offline, &offline_org.admin, offline_kiosk, start).await;
        assert_eq!(a, b, "the shift starting at {start}");
        assert_eq!(b["status"], status, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_sent_again_with_the_next_one_is_not_judged_twice() {
    // A teleport comes first, then a fix far from it, sent together with the teleport again
    // (its answer was lost). Judged twice, the teleport would be its own neighbour and
    // stay credible, and the honest fix would be condemned instead.
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let token = s.token("officer1").await;
    let start = Utc::now().trunc_subsecs(0) - Duration::minutes(30);
    let teleport = fix(start, FAR);
    let honest = fix(start + Duration::minutes(1), 0.0);
    send(&s, &token, std::slice::from_ref(&teleport)).await;
    send(&s, &token, &[teleport, honest]).await;
    let flags = flags_of(&s, &org.admin, org.members["officer1"]).await;
    let implausible: Vec<bool> = flags
        .iter()
        .map(|(_, f)| f.as_array().unwrap().contains(&json!("implausible_speed")))
        .collect();
    assert_eq!(implausible, [true, false], "{flags:?}");
}
