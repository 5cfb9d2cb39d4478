//! The committed contract is what the server serves.

use api_tests::TestServer;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_spec_equals_the_committed_file() {
    let s = TestServer::start().await;
    let served = s
        .raw(|c, base| c.get(format!("{base}/api/v1/openapi.json")))
        .await;
    assert_eq!(served.status, StatusCode::OK);
    assert!(served.content_type().starts_with("application/json"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../api-spec/openapi.json");
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("api-spec/openapi.json exists"))
            .expect("api-spec/openapi.json is JSON");
    assert!(
        served.body == committed,
        "api-spec/openapi.json is stale; regenerate it with\n    cargo run -q --bin patrol -- openapi > api-spec/openapi.json"
    );
    assert_eq!(committed["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_its_problem_answers_and_protected_ones_their_auth() {
    let s = TestServer::start().await;
    let spec = s
        .raw(|c, base| c.get(format!("{base}/api/v1/openapi.json")))
        .await
        .body;
    let public = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/osmand",
    ];
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"]["4XX"]["content"]["application/problem+json"].is_object(),
                "{method} {path} lacks the problem+json answer"
            );
            let secured = op
                .get("security")
                .is_some_and(|s| !s.as_array().unwrap().is_empty());
            assert_eq!(
                secured,
                !public.contains(&path.as_str()),
                "{method} {path} security"
            );
        }
    }
}

/// Issue 27 item 17: every `$ref` of the served document names something it defines, so
/// a client generator or a fuzzer reads every parameter and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_of_the_document_resolves() {
    let s = TestServer::start().await;
    let doc = s.get("/api/v1/openapi.json", "").await.body;
    let mut refs = Vec::new();
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    refs.push(r.clone());
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    assert!(refs.len() > 50, "{}", refs.len());
    for r in refs {
        let path = r
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("{r} is not local"));
        let mut at = &doc;
        for part in path.split('/') {
            at = at
                .get(part.replace("~1", "/").replace("~0", "~"))
                .unwrap_or_else(|| panic!("{r} does not resolve"));
        }
    }
}
