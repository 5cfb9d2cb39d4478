//! Units, members and teams: create, read, list with cursors, change, delete.

use std::collections::HashSet;

use api_tests::{Org, PASSWORD, TestServer, id};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_crud_and_moving_a_subtree() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;

    let u = s
        .get(&format!("/api/v1/units/{}", org.community1), admin)
        .await;
    assert_eq!(u.status, StatusCode::OK);
    assert_eq!(u.body["code"], "C1");
    assert_eq!(u.body["kind"], "community");
    assert_eq!(u.body["parent_id"], org.street1.to_string());

    // A compound under the community, then the community moves to street 2 with it.
    let compound = id(&s
        .post("/api/v1/units", admin, json!({"code": "G1", "name": "Compound", "kind": "compound", "parent_id": org.community1}))
        .await);
    let moved = s
        .patch(
            &format!("/api/v1/units/{}", org.community1),
            admin,
            json!({"parent_id": org.street2, "name": "Moved"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:#?}");
    assert_eq!(moved.body["parent_id"], org.street2.to_string());
    assert_eq!(moved.body["name"], "Moved");
    // The commander of street 2 now sees the compound (the subtree moved), street 1's does not.
    let cmd2 = s.token("cmd2").await;
    let cmd1 = s.token("cmd1").await;
    assert_eq!(
        s.get(&format!("/api/v1/units/{compound}"), &cmd2)
            .await
            .status,
        StatusCode::OK
    );
    s.get(&format!("/api/v1/units/{compound}"), &cmd1)
        .await
        .assert_problem(404, "not_found");
    // And the members of the moved community moved with it.
    assert_eq!(
        s.get(&format!("/api/v1/members/{}", org.members["vol1"]), &cmd2)
            .await
            .status,
        StatusCode::OK
    );

    // Cycles and impossible kinds are refused.
    let a = s
        .patch(
            &format!("/api/v1/units/{}", org.community1),
            admin,
            json!({"parent_id": compound}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    let a = s
        .patch(
            &format!("/api/v1/units/{}", org.street2),
            admin,
            json!({"kind": "compound"}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    let a = s
        .post(
            "/api/v1/units",
            admin,
            json!({"code": "Z", "name": "Z", "kind": "district", "parent_id": org.street1}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "kind");

    // Leaves can be deleted; the id is then gone.
    let del = s.delete(&format!("/api/v1/units/{compound}"), admin).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    s.get(&format!("/api/v1/units/{compound}"), admin)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_cursors_and_filters() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    for i in 0..7 {
        s.post(
            "/api/v1/units",
            admin,
            json!({"code": format!("V{i}"), "name": format!("Village {i}"), "kind": "village", "parent_id": org.street1}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/units?limit=3&cursor={c}"),
            None => "/api/v1/units?limit=3".to_owned(),
        };
        let page = s.get(&path, admin).await;
        assert_eq!(page.status, StatusCode::OK, "{page:#?}");
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|u| u["code"].as_str().unwrap().to_owned()));
        pages += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // 4 units of the fixture + 7 villages, each exactly once, in creation order.
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 11);
    assert_eq!(pages, 4);
    assert_eq!(&seen[..4], &["D1", "S1", "S2", "C1"]);

    let villages = s.get("/api/v1/units?kind=village&limit=1000", admin).await;
    assert_eq!(villages.body["items"].as_array().unwrap().len(), 7);
    assert!(villages.body["next_cursor"].is_null());
    let children = s
        .get(&format!("/api/v1/units?parent_id={}", org.district), admin)
        .await;
    assert_eq!(children.body["items"].as_array().unwrap().len(), 2);

    let officers = s.get("/api/v1/members?role=patrol_officer", admin).await;
    assert_eq!(officers.body["items"].as_array().unwrap().len(), 2);
    let in_street2 = s
        .get(&format!("/api/v1/members?unit_id={}", org.street2), admin)
        .await;
    assert_eq!(in_street2.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_crud() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    // A commander creates a volunteer in their subtree; it can log in at once.
    let created = s
        .post(
            "/api/v1/members",
            &cmd1,
            json!({"username": "wang.fang", "display_name": "王芳", "role": "volunteer", "unit_id": org.community1, "password": PASSWORD}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:#?}");
    assert_eq!(created.body["display_name"], "王芳");
    assert_eq!(created.body["active"], true);
    assert!(created.body.get("password").is_none());
    let vid = id(&created);
    assert_eq!(s.login("wang.fang", PASSWORD).await.status, StatusCode::OK);

    let patched = s
        .patch(
            &format!("/api/v1/members/{vid}"),
            &cmd1,
            json!({"role": "patrol_officer", "unit_id": org.street1, "display_name": "Wang Fang"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{patched:#?}");
    assert_eq!(patched.body["role"], "patrol_officer");
    assert_eq!(patched.body["unit_id"], org.street1.to_string());
    // A member's own token sees the new role at once.
    let own = s.token("wang.fang").await;
    assert_eq!(
        s.get("/api/v1/me", &own).await.body["role"],
        "patrol_officer"
    );
    // Officers read themselves, nobody else.
    assert_eq!(
        s.get(&format!("/api/v1/members/{vid}"), &own).await.status,
        StatusCode::OK
    );
    s.get(&format!("/api/v1/members/{}", org.members["vol1"]), &own)
        .await
        .assert_problem(403, "forbidden");

    // Commanders cannot touch admins or make them.
    let admin_id = s.get("/api/v1/me", &org.admin).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.get(&format!("/api/v1/members/{admin_id}"), &cmd1)
        .await
        .assert_problem(404, "not_found");
    let a = s
        .patch(
            &format!("/api/v1/members/{vid}"),
            &cmd1,
            json!({"role": "admin"}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "role");
    // Only admins have no unit.
    let a = s
        .patch(
            &format!("/api/v1/members/{vid}"),
            &org.admin,
            json!({"unit_id": null}),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    let a = s
        .post(
            "/api/v1/members",
            &org.admin,
            json!({"username": "root2", "role": "admin", "password": PASSWORD}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);

    let del = s.delete(&format!("/api/v1/members/{vid}"), &cmd1).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    s.get("/api/v1/me", &own)
        .await
        .assert_problem(401, "unauthorized");
    s.login("wang.fang", PASSWORD)
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_crud_and_membership() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let (o1, v1, k1) = (
        org.members["officer1"],
        org.members["vol1"],
        org.members["kiosk1"],
    );
    let created = s
        .post(
            "/api/v1/teams",
            &cmd1,
            json!({"code": "VS-C1", "name": "Red armbands C1", "kind": "volunteer_squad", "unit_id": org.community1, "member_ids": [v1, v1, o1]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:#?}");
    let tid = id(&created);
    let mut members: Vec<String> = created.body["member_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    members.sort();
    let mut want = vec![o1.to_string(), v1.to_string()];
    want.sort();
    assert_eq!(members, want, "duplicates collapse");

    let put = s
        .send(
            Method::PUT,
            &format!("/api/v1/teams/{tid}/members"),
            Some(&cmd1),
            Some(json!({"member_ids": [k1]})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{put:#?}");
    assert_eq!(put.body["member_ids"], json!([k1.to_string()]));
    // A member outside the commander's subtree cannot be added.
    let a = s
        .send(
            Method::PUT,
            &format!("/api/v1/teams/{tid}/members"),
            Some(&cmd1),
            Some(json!({"member_ids": [k1, org.members["officer2"]]})),
        )
        .await;
    a.assert_problem(422, "validation_failed");
    assert_eq!(a.body["errors"][0]["field"], "member_ids[1]");

    let patched = s
        .patch(
            &format!("/api/v1/teams/{tid}"),
            &cmd1,
            json!({"name": "Squad one", "kind": "cadre_patrol", "member_ids": []}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["kind"], "cadre_patrol");
    assert_eq!(patched.body["member_ids"], json!([]));

    let list = s
        .get(&format!("/api/v1/teams?unit_id={}", org.community1), &cmd1)
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    s.get("/api/v1/teams", &s.token("cmd2").await).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(|t| assert_ne!(t["id"], tid.to_string()));

    // Deleting a member removes it from its teams; deleting the team works.
    s.send(
        Method::PUT,
        &format!("/api/v1/teams/{tid}/members"),
        Some(&cmd1),
        Some(json!({"member_ids": [v1]})),
    )
    .await;
    s.delete(&format!("/api/v1/members/{v1}"), &cmd1).await;
    assert_eq!(
        s.get(&format!("/api/v1/teams/{tid}"), &cmd1).await.body["member_ids"],
        json!([])
    );
    assert_eq!(
        s.delete(&format!("/api/v1/teams/{tid}"), &cmd1)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    s.get(&format!("/api/v1/teams/{tid}"), &cmd1)
        .await
        .assert_problem(404, "not_found");
}
