//! Posts: geometry checks for every kind, defaults, datum conversion, scope, GeoJSON
//! export and import with mixed good and bad features.

use api_tests::{Org, TestServer, id};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn kiosk(code: &str, unit: uuid::Uuid) -> Value {
    json!({"code": code, "name": format!("Kiosk {code}"), "kind": "kiosk", "unit_id": unit,
           "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}})
}

fn route(code: &str, unit: uuid::Uuid) -> Value {
    json!({"code": code, "name": format!("Route {code}"), "kind": "route", "unit_id": unit,
           "geometry": {"type": "LineString", "coordinates": [[108.95, 34.22], [108.96, 34.22], [108.96, 34.23]]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_gets_its_defaults() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let k = s
        .post("/api/v1/posts", &org.admin, kiosk("K01", org.street1))
        .await;
    assert_eq!(k.status, StatusCode::CREATED, "{k:#?}");
    assert_eq!(k.body["staffing"], "24x7");
    assert_eq!(k.body["radius_m"], 50.0);
    assert_eq!(k.body["required_presence"], 0.9);
    assert_eq!(k.body["min_headcount"], 1);
    assert_eq!(k.body["arrival_grace_min"], 15);
    assert!(
        k.body["corridor_m"].is_null()
            && k.body["length_m"].is_null()
            && k.body["required_coverage"].is_null()
    );

    let r = s
        .post("/api/v1/posts", &org.admin, route("R01", org.street1))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:#?}");
    assert_eq!(r.body["staffing"], "rostered");
    assert_eq!(r.body["corridor_m"], 30.0);
    assert_eq!(r.body["required_coverage"], 0.8);
    assert!(r.body["radius_m"].is_null());
    // 0.01° of longitude at 34.22°N ≈ 921 m, 0.01° of latitude ≈ 1109 m.
    let length = r.body["length_m"].as_f64().unwrap();
    assert!((length - 2030.0).abs() < 10.0, "{length}");

    let mut checkpoint = kiosk("C01", org.street1);
    checkpoint["kind"] = json!("checkpoint");
    checkpoint["min_headcount"] = json!(2);
    let c = s.post("/api/v1/posts", &org.admin, checkpoint).await;
    assert_eq!(c.body["staffing"], "24x7");
    assert_eq!(c.body["min_headcount"], 2);

    let area = json!({"code": "A01", "name": "Patch", "kind": "area", "unit_id": org.community1, "radius_m": 20,
        "geometry": {"type": "MultiPolygon", "coordinates": [[[[108.95, 34.22], [108.951, 34.22], [108.951, 34.221], [108.95, 34.22]]]]}});
    let a = s.post("/api/v1/posts", &org.admin, area).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    assert_eq!(a.body["staffing"], "rostered");
    assert_eq!(a.body["radius_m"], 20.0);
    assert_eq!(a.body["geometry"]["type"], "MultiPolygon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geometry_must_fit_the_kind_and_be_sound() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "route",
            json!({"type": "Point", "coordinates": [108.95, 34.22]}),
            "geometry.type",
        ),
        (
            "kiosk",
            json!({"type": "LineString", "coordinates": [[108.95, 34.22], [108.96, 34.22]]}),
            "geometry.type",
        ),
        (
            "checkpoint",
            json!({"type": "Polygon", "coordinates": []}),
            "geometry.type",
        ),
        (
            "area",
            json!({"type": "Point", "coordinates": [108.95, 34.22]}),
            "geometry.type",
        ),
        (
            "kiosk",
            json!({"type": "Point", "coordinates": [190.0, 34.22]}),
            "geometry.coordinates[0]",
        ),
        (
            "kiosk",
            json!({"type": "Point", "coordinates": [108.95, 91]}),
            "geometry.coordinates[1]",
        ),
        (
            "kiosk",
            json!({"type": "Point", "coordinates": [0, 0]}),
            "geometry.coordinates",
        ),
        (
            "kiosk",
            json!({"type": "Point", "coordinates": "108,34"}),
            "geometry.coordinates",
        ),
        ("kiosk", json!({"type": "Point"}), "geometry.coordinates"),
        ("kiosk", json!("POINT(108 34)"), "geometry"),
        (
            "route",
            json!({"type": "LineString", "coordinates": [[108.95, 34.22]]}),
            "geometry.coordinates",
        ),
        (
            "route",
            json!({"type": "LineString", "coordinates": [[108.95, 34.22], [108.95, 34.22]]}),
            "geometry.coordinates",
        ),
        (
            "route",
            json!({"type": "MultiLineString", "coordinates": [[[108.95, 34.22], [108.96, 34.22]], [[108.9, 34.2], [108.9, 95.0]]]}),
            "geometry.coordinates[1][1][1]",
        ),
        (
            "area",
            json!({"type": "Polygon", "coordinates": [[[108.95, 34.22], [108.96, 34.22], [108.96, 34.23], [108.95, 34.23]]]}),
            "geometry.coordinates[0]",
        ),
        (
            "area",
            json!({"type": "Polygon", "coordinates": [[[108.95, 34.22], [108.96, 34.22], [108.95, 34.22]]]}),
            "geometry.coordinates[0]",
        ),
    ];
    for (kind, geometry, field) in cases {
        let body = json!({"code": "X1", "name": "X", "kind": kind, "unit_id": org.street1, "geometry": geometry});
        let a = s.post("/api/v1/posts", &org.admin, body).await;
        a.assert_problem(422, "validation_failed");
        let fields: Vec<&str> = a.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{kind} {geometry}: wanted {field}, got {fields:?}"
        );
    }
    // More than 10,000 vertices.
    let coords: Vec<Value> = (0..10_001)
        .map(|i| json!([108.0 + f64::from(i) * 1e-5, 34.0]))
        .collect();
    let body = json!({"code": "X1", "name": "X", "kind": "route", "unit_id": org.street1,
                      "geometry": {"type": "LineString", "coordinates": coords}});
    s.post("/api/v1/posts", &org.admin, body)
        .await
        .assert_problem(422, "validation_failed");
    // Requirement fields that do not apply, or are out of range.
    let mut k = kiosk("K9", org.street1);
    k["corridor_m"] = json!(10);
    k["required_presence"] = json!(1.5);
    k["min_headcount"] = json!(0);
    let a = s.post("/api/v1/posts", &org.admin, k).await;
    let fields: Vec<&str> = a.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["corridor_m", "required_presence", "min_headcount"]);
    let mut r = route("R9", org.street1);
    r["staffing"] = json!("sometimes");
    s.post("/api/v1/posts", &org.admin, r)
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcj02_geometry_is_stored_in_wgs84() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let mut body = kiosk("K01", org.street1);
    body["datum"] = json!("gcj02");
    let a = s.post("/api/v1/posts", &org.admin, body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:#?}");
    let c = &a.body["geometry"]["coordinates"];
    let (lon, lat) = (c[0].as_f64().unwrap(), c[1].as_f64().unwrap());
    // GCJ-02 is offset from WGS-84 here by a few hundred metres.
    let (dx, dy) = ((lon - 108.95) * 92_000.0, (lat - 34.22) * 111_000.0);
    let moved = (dx * dx + dy * dy).sqrt();
    assert!((100.0..1000.0).contains(&moved), "{lon} {lat}: {moved} m");
    let mut bad = kiosk("K02", org.street1);
    bad["datum"] = json!("osgb36");
    let a = s.post("/api/v1/posts", &org.admin, bad).await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "datum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_list_scope_export_and_delete() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let cmd2 = s.token("cmd2").await;
    let k1 = id(&s
        .post("/api/v1/posts", &cmd1, kiosk("K01", org.community1))
        .await);
    let r1 = id(&s
        .post("/api/v1/posts", &cmd1, route("R01", org.street1))
        .await);
    let k2 = id(&s
        .post("/api/v1/posts", &cmd2, kiosk("K02", org.street2))
        .await);
    // Scope: commanders see their own subtree only.
    s.post("/api/v1/posts", &cmd2, kiosk("K03", org.street1))
        .await
        .assert_problem(422, "validation_failed");
    s.get(&format!("/api/v1/posts/{k1}"), &cmd2)
        .await
        .assert_problem(404, "not_found");
    assert_eq!(
        s.get("/api/v1/posts", &cmd1).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.get("/api/v1/posts?kind=kiosk", &org.admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.get(
            &format!("/api/v1/posts?unit_id={}", org.community1),
            &org.admin
        )
        .await
        .body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let officer = s.token("officer1").await;
    s.get("/api/v1/posts", &officer)
        .await
        .assert_problem(403, "forbidden");

    // Change: a route's corridor and geometry; a kind change needs a fitting geometry.
    let a = s.patch(&format!("/api/v1/posts/{r1}"), &cmd1, json!({"corridor_m": 50, "geometry": {"type": "LineString", "coordinates": [[108.95, 34.22], [108.95, 34.23]]}})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["corridor_m"], 50.0);
    assert!((a.body["length_m"].as_f64().unwrap() - 1109.0).abs() < 5.0);
    s.patch(
        &format!("/api/v1/posts/{r1}"),
        &cmd1,
        json!({"kind": "kiosk"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    let a = s
        .patch(
            &format!("/api/v1/posts/{k1}"),
            &cmd1,
            json!({"kind": "checkpoint", "min_headcount": 2}),
        )
        .await;
    assert_eq!(a.body["kind"], "checkpoint");
    assert_eq!(a.body["radius_m"], 50.0);
    s.patch(
        &format!("/api/v1/posts/{k1}"),
        &cmd1,
        json!({"code": "R01"}),
    )
    .await
    .assert_problem(409, "conflict");

    // GeoJSON export of what the caller sees.
    let g = s.get("/api/v1/posts/geojson", &cmd1).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.content_type(), "application/geo+json");
    assert_eq!(g.body["type"], "FeatureCollection");
    let features = g.body["features"].as_array().unwrap();
    assert_eq!(features.len(), 2);
    assert!(features.iter().all(|f| f["type"] == "Feature"
        && f["geometry"]["type"].is_string()
        && f["properties"]["code"].is_string()));
    assert!(
        features
            .iter()
            .all(|f| f["properties"].get("geometry").is_none())
    );

    // A post with shifts cannot go; one without can.
    let t = s.post("/api/v1/teams", &cmd2, json!({"code": "T2", "name": "T2", "kind": "kiosk_crew", "unit_id": org.street2, "member_ids": [org.members["officer2"]]})).await;
    let shift = json!({"post_id": k2, "starts_at": "2026-12-01T00:00:00Z", "ends_at": "2026-12-01T08:00:00Z", "team_id": id(&t)});
    assert_eq!(
        s.post("/api/v1/shifts", &cmd2, shift).await.status,
        StatusCode::CREATED
    );
    s.delete(&format!("/api/v1/posts/{k2}"), &cmd2)
        .await
        .assert_problem(409, "conflict");
    assert_eq!(
        s.delete(&format!("/api/v1/posts/{r1}"), &cmd1).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_upserts_by_code_and_reports_each_feature() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let feature = |props: Value, geometry: Value| json!({"type": "Feature", "properties": props, "geometry": geometry});
    let point = json!({"type": "Point", "coordinates": [108.95, 34.22]});
    let line = json!({"type": "LineString", "coordinates": [[108.95, 34.22], [108.96, 34.22]]});
    let collection = json!({"type": "FeatureCollection", "features": [
        feature(json!({"code": "K01", "name": "Plaza kiosk", "kind": "kiosk", "unit": "S1"}), point.clone()),
        feature(json!({"code": "R01", "name": "Route 1", "kind": "route", "unit": "C1", "corridor_m": 40}), line.clone()),
        feature(json!({"code": "K02", "name": "Bad", "kind": "kiosk", "unit": "S1"}), line.clone()),
        feature(json!({"code": "K03", "name": "Elsewhere", "kind": "kiosk", "unit": "S2"}), point.clone()),
        feature(json!({"code": "K04", "name": "No kind", "unit": "S1"}), point.clone()),
        json!({"type": "Nonsense"}),
        feature(json!({"code": "K05", "name": "Chinese map", "kind": "kiosk", "unit": "S1", "datum": "gcj02"}), point.clone()),
    ]});
    let a = s
        .post("/api/v1/posts/import", &cmd1, collection.clone())
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(
        (
            a.body["created"].as_u64(),
            a.body["updated"].as_u64(),
            a.body["rejected"].as_u64()
        ),
        (Some(3), Some(0), Some(4))
    );
    let results = a.body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created", "created", "rejected", "rejected", "rejected", "rejected", "created"
        ]
    );
    assert_eq!(results[2]["errors"][0]["field"], "geometry.type");
    assert_eq!(results[3]["errors"][0]["field"], "properties.unit");
    assert_eq!(results[4]["errors"][0]["field"], "properties.kind");
    assert_eq!(results[5]["errors"][0]["field"], "type");
    assert_eq!(results[1]["code"], "R01");
    let r01 = s
        .get(
            &format!("/api/v1/posts/{}", results[1]["id"].as_str().unwrap()),
            &cmd1,
        )
        .await;
    assert_eq!(r01.body["corridor_m"], 40.0);
    assert_eq!(r01.body["unit_id"], org.community1.to_string());

    // Again: the good ones are updated, not duplicated.
    let a = s.post("/api/v1/posts/import", &cmd1, collection).await;
    assert_eq!(
        (a.body["created"].as_u64(), a.body["updated"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(
        s.get("/api/v1/posts", &cmd1).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Another commander cannot take over those codes.
    let cmd2 = s.token("cmd2").await;
    let steal = json!({"type": "FeatureCollection", "features": [feature(json!({"code": "K01", "name": "Mine", "kind": "kiosk", "unit": "S2"}), point)]});
    let a = s.post("/api/v1/posts/import", &cmd2, steal).await;
    assert_eq!(a.body["results"][0]["status"], "rejected");
    assert_eq!(
        a.body["results"][0]["errors"][0]["field"],
        "properties.code"
    );
    // Not a FeatureCollection at all.
    s.post("/api/v1/posts/import", &cmd1, json!({"type": "Feature"}))
        .await
        .assert_problem(422, "validation_failed");
    let a = s
        .send(
            Method::POST,
            "/api/v1/posts/import?datum=wgs99",
            Some(&cmd1),
            Some(json!({"type": "FeatureCollection", "features": []})),
        )
        .await;
    a.assert_problem(422, "validation_failed");
}
