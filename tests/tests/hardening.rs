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
