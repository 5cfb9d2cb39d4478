//! What the schemathesis pass of `.ci/schemathesis` found, each pinned by a test: server
//! errors (5xx) the API answered and answers the document did not describe.

use api_tests::{Org, TestServer, id};
use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// A unit under the first street with a kiosk post in it, and the post's id.
async fn unit_with_post(s: &TestServer, org: &Org) -> (Uuid, Uuid) {
    let unit = id(&s
        .post(
            "/api/v1/units",
            &org.admin,
            json!({"code": "C9", "name": "Unit C9", "kind": "community", "parent_id": org.street1}),
        )
        .await);
    let post = id(&s
        .post(
            "/api/v1/posts",
            &org.admin,
            json!({"code": "K9", "name": "Kiosk 9", "kind": "kiosk", "unit_id": unit,
                   "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
        )
        .await);
    (unit, post)
}

async fn team(s: &TestServer, org: &Org, code: &str, members: &[Uuid]) -> Uuid {
    id(&s
        .post(
            "/api/v1/teams",
            &org.admin,
            json!({"code": code, "name": format!("Team {code}"), "kind": "kiosk_crew",
                   "unit_id": org.street1, "member_ids": members}),
        )
        .await)
}

/// SQLite refuses a delete that an `ON DELETE RESTRICT` key still points at with an
/// extended code that was not read as a foreign-key failure: a 500 instead of a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_what_is_still_referenced_is_a_conflict() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let (unit, post) = unit_with_post(&s, &org).await;
    s.delete(&format!("/api/v1/units/{unit}"), &org.admin)
        .await
        .assert_problem(409, "conflict");

    let crew = team(&s, &org, "T9", &[org.members["kiosk1"]]).await;
    let start = Utc::now() + Duration::hours(1);
    id(&s
        .post(
            "/api/v1/shifts",
            &org.admin,
            json!({"post_id": post, "starts_at": start, "ends_at": start + Duration::hours(8),
                   "team_id": crew}),
        )
        .await);
    s.delete(&format!("/api/v1/teams/{crew}"), &org.admin)
        .await
        .assert_problem(409, "conflict");
}

/// Write transactions that read first were begun deferred, so on SQLite one whose
/// snapshot another request's write had made stale failed at once with `SQLITE_BUSY`
/// (503 `database_busy`) instead of waiting for the lock. On PostgreSQL two replacements
/// of one team's members inserted the same rows and the second answered 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_wait_for_the_lock_instead_of_failing() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let (_, post) = unit_with_post(&s, &org).await;
    let people = [org.members["kiosk1"], org.members["cmd1"]];
    let mut teams = Vec::new();
    for k in 0..4 {
        let t = team(&s, &org, &format!("W{k}"), &people).await;
        // A begun shift, so that changing the team's members first reads what to freeze.
        let start = Utc::now() - Duration::hours(1);
        id(&s
            .post(
                "/api/v1/shifts",
                &org.admin,
                json!({"post_id": post, "starts_at": start + Duration::minutes(k),
                       "ends_at": start + Duration::hours(8), "team_id": t}),
            )
            .await);
        teams.push(t);
    }
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for round in 0..10 {
        for t in &teams {
            let members: Vec<Uuid> = people.iter().take(1 + round % 2).copied().collect();
            let request = client
                .put(format!("{}/api/v1/teams/{t}/members", s.base))
                .bearer_auth(&org.admin)
                .json(&json!({"member_ids": members}));
            tasks.push(tokio::spawn(async move {
                let res = request.send().await.expect("answered");
                let status = res.status();
                (status, res.text().await.unwrap_or_default())
            }));
        }
    }
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status.as_u16(), 200, "{body}");
    }
}

/// The document said `/events` sends strings and `/members/{id}/track` only GeoJSON; in
/// OpenAPI 3.1 the schema of an event stream describes each event, and `format=gpx`
/// answers GPX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_events_and_gpx_tracks() {
    let s = TestServer::start().await;
    let doc = s.get("/api/v1/openapi.json", "").await.body;
    let events = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(events["$ref"], "#/components/schemas/LiveEvent", "{events}");
    let event = &doc["components"]["schemas"]["LiveEvent"];
    assert_eq!(event["type"], "object");
    for field in ["id", "event", "data", "retry"] {
        assert!(event["properties"][field].is_object(), "{field}: {event}");
    }
    let track = &doc["paths"]["/api/v1/members/{id}/track"]["get"]["responses"]["200"]["content"];
    assert!(track["application/geo+json"].is_object(), "{track}");
    assert!(track["application/gpx+xml"].is_object(), "{track}");

    // And the server answers what it says.
    let org = Org::create(&s).await;
    let from = (Utc::now() - Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let a = s
        .send(
            Method::GET,
            &format!(
                "/api/v1/members/{}/track?from={}&to={}&format=gpx",
                org.members["officer1"],
                from.replace('+', "%2B"),
                to.replace('+', "%2B")
            ),
            Some(&org.admin),
            None,
        )
        .await;
    assert_eq!(a.status.as_u16(), 200, "{a:#?}");
    assert!(
        a.content_type().starts_with("application/gpx+xml"),
        "{a:#?}"
    );
    assert_eq!(a.body, Value::Null);
}
