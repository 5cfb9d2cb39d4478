//! Device keys: admins manage everyone's, commanders those of their subtree's members
//! (404 outside it), officers and volunteers none; the lists page like every list.

use api_tests::{Org, TestServer, id};
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn keys_path(member: Uuid) -> String {
    format!("/api/v1/members/{member}/device-keys")
}

/// A fix reported through the OsmAnd protocol with a device key; answers the status.
async fn report(s: &TestServer, key: &str) -> StatusCode {
    let ts = Utc::now().timestamp();
    s.raw(|c, b| {
        c.get(format!(
            "{b}/osmand?id={key}&lat=34.22&lon=108.95&accuracy=5&timestamp={ts}"
        ))
    })
    .await
    .status
}

/// The ids of a page's items.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of items: {page:#}"))
        .iter()
        .map(|k| k["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_manages_the_device_keys_of_their_subtree_only() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let cmd1 = s.token("cmd1").await;
    let officer1 = org.members["officer1"];
    let officer2 = org.members["officer2"];

    // officer1 is in C1 under S1, cmd1's street: cmd1 issues, lists and revokes.
    let issued = s
        .post(
            &keys_path(officer1),
            &cmd1,
            json!({"label": "Huawei phone"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{issued:#?}");
    let key = issued.body["key"].as_str().expect("the key").to_owned();
    let key1 = id(&issued);
    assert_eq!(report(&s, &key).await, StatusCode::OK);
    let listed = s.get(&keys_path(officer1), &cmd1).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:#?}");
    assert_eq!(ids(&listed.body), [key1.to_string()]);
    assert_eq!(listed.body["items"][0]["label"], "Huawei phone");
    assert!(listed.body["next_cursor"].is_null(), "{listed:#?}");
    assert!(!listed.text.contains(&key), "the key is never shown again");

    // A key of S2, issued by the admin: cmd1 neither sees nor touches it.
    let other = s
        .post(
            &keys_path(officer2),
            &org.admin,
            json!({"label": "S2 phone"}),
        )
        .await;
    let key2 = id(&other);
    let all = s.get("/api/v1/device-keys", &cmd1).await;
    assert_eq!(all.status, StatusCode::OK, "{all:#?}");
    assert_eq!(ids(&all.body), [key1.to_string()]);
    let all = s.get("/api/v1/device-keys", &org.admin).await;
    assert_eq!(ids(&all.body), [key1.to_string(), key2.to_string()]);
    let admin_id = s.get("/api/v1/me", &org.admin).await.body["id"]
        .as_str()
        .and_then(|id| id.parse::<Uuid>().ok())
        .expect("the admin's id");
    for outsider in [officer2, org.members["cmd2"], admin_id, Uuid::now_v7()] {
        s.get(&keys_path(outsider), &cmd1)
            .await
            .assert_problem(404, "not_found");
        s.post(&keys_path(outsider), &cmd1, json!({"label": "taken over"}))
            .await
            .assert_problem(404, "not_found");
        s.get(&format!("/api/v1/device-keys?member_id={outsider}"), &cmd1)
            .await
            .assert_problem(404, "not_found");
    }
    s.delete(&format!("{}/{key2}", keys_path(officer2)), &cmd1)
        .await
        .assert_problem(404, "not_found");
    // Nor through an in-scope member's path.
    s.delete(&format!("{}/{key2}", keys_path(officer1)), &cmd1)
        .await
        .assert_problem(404, "not_found");
    let s2_keys = s.get(&keys_path(officer2), &org.admin).await;
    assert_eq!(ids(&s2_keys.body), [key2.to_string()], "no key was issued");
    assert!(s2_keys.body["items"][0]["revoked_at"].is_null());

    // Officers and volunteers manage only their own keys (app_api.rs), never another's.
    for username in ["kiosk1", "vol1"] {
        let token = s.token(username).await;
        s.get(&keys_path(officer1), &token)
            .await
            .assert_problem(403, "forbidden");
        s.post(&keys_path(officer1), &token, json!({}))
            .await
            .assert_problem(403, "forbidden");
        s.delete(&format!("{}/{key1}", keys_path(officer1)), &token)
            .await
            .assert_problem(403, "forbidden");
        s.get("/api/v1/device-keys", &token)
            .await
            .assert_problem(403, "forbidden");
    }

    // The commander revokes: the app's reports are refused from then on.
    let del = s
        .delete(&format!("{}/{key1}", keys_path(officer1)), &cmd1)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{del:#?}");
    assert_eq!(report(&s, &key).await, StatusCode::UNAUTHORIZED);
    let listed = s.get(&keys_path(officer1), &cmd1).await;
    assert!(
        listed.body["items"][0]["revoked_at"].is_string(),
        "{listed:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_key_lists_page_filter_and_refuse_bad_paging() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    let vol1 = org.members["vol1"];
    let mut issued = Vec::new();
    for n in 0..3 {
        let a = s
            .post(
                &keys_path(vol1),
                admin,
                json!({"label": format!("phone {n}")}),
            )
            .await;
        issued.push(id(&a).to_string());
    }
    let other = id(&s
        .post(&keys_path(org.members["officer1"]), admin, json!({}))
        .await)
    .to_string();

    for list in [
        keys_path(vol1),
        format!("/api/v1/device-keys?member_id={vol1}"),
    ] {
        let sep = if list.contains('?') { '&' } else { '?' };
        let first = s.get(&format!("{list}{sep}limit=2"), admin).await;
        assert_eq!(first.status, StatusCode::OK, "{first:#?}");
        assert_eq!(ids(&first.body), issued[..2]);
        let cursor = first.body["next_cursor"]
            .as_str()
            .expect("a next cursor")
            .to_owned();
        let second = s
            .get(&format!("{list}{sep}limit=2&cursor={cursor}"), admin)
            .await;
        assert_eq!(ids(&second.body), issued[2..]);
        assert!(second.body["next_cursor"].is_null(), "{second:#?}");

        for (query, field) in [
            ("cursor=garbage!", "cursor"),
            ("cursor=AAAA", "cursor"),
            ("limit=1001", "limit"),
            ("limit=0", "limit"),
            ("limit=ten", "limit"),
            ("active=maybe", "active"),
        ] {
            let a = s.get(&format!("{list}{sep}{query}"), admin).await;
            a.assert_problem(422, "validation_failed");
            assert_eq!(a.body["errors"][0]["field"], field, "{query}: {a:#?}");
        }
    }
    s.get("/api/v1/device-keys?member_id=nope", admin)
        .await
        .assert_problem(422, "validation_failed");
    let all = s.get("/api/v1/device-keys?limit=1000", admin).await;
    let mut everything = issued.clone();
    everything.push(other);
    assert_eq!(ids(&all.body), everything);

    // `active` keeps the keys still in use, or the revoked ones.
    let del = s
        .delete(&format!("{}/{}", keys_path(vol1), issued[1]), admin)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let active = s
        .get(&format!("{}?active=true", keys_path(vol1)), admin)
        .await;
    assert_eq!(ids(&active.body), [issued[0].clone(), issued[2].clone()]);
    let revoked = s.get("/api/v1/device-keys?active=false", admin).await;
    assert_eq!(ids(&revoked.body), [issued[1].clone()]);
}
