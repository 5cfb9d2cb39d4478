//! The authorisation matrix: every route of the served OpenAPI document × every kind of
//! caller → the expected status, plus the commander's scope (another street is invisible,
//! their own unit is not theirs to change).

use std::collections::{BTreeSet, HashMap};

use api_tests::{Answer, Org, PASSWORD, TestServer, id};
use chrono::{Duration, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Who sends a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    Anonymous,
    Admin,
    Commander,
    PatrolOfficer,
    KioskOfficer,
    Volunteer,
}

const CALLERS: [Caller; 6] = [
    Caller::Anonymous,
    Caller::Admin,
    Caller::Commander,
    Caller::PatrolOfficer,
    Caller::KioskOfficer,
    Caller::Volunteer,
];

impl Caller {
    /// The member the caller logs in as (the anonymous caller uses the volunteer's
    /// credentials where a public route needs some, and never sends a token).
    fn username(self) -> &'static str {
        match self {
            Caller::Anonymous | Caller::Volunteer => "vol1",
            Caller::Admin => "admin",
            Caller::Commander => "cmd1",
            Caller::PatrolOfficer => "officer1",
            Caller::KioskOfficer => "kiosk1",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Caller::Anonymous => "none",
            Caller::Admin => "admin",
            Caller::Commander => "cmd",
            Caller::PatrolOfficer => "patrol",
            Caller::KioskOfficer => "kiosk",
            Caller::Volunteer => "vol",
        }
    }
}

/// Expected statuses in the order of [`CALLERS`].
type Expect = [u16; 6];

/// Public: everyone, with or without a token.
const OPEN: Expect = [200; 6];
/// Any logged-in member.
const SIGNED_IN: Expect = [401, 200, 200, 200, 200, 200];

/// Admins only.
const ADMIN_ONLY_200: Expect = [401, 200, 403, 403, 403, 403];

/// Admins and commanders get `ok`; officers and volunteers 403.
const fn managers(ok: u16) -> Expect {
    [401, ok, ok, 403, 403, 403]
}

/// Every route of the API (method, path template, expected statuses).
const MATRIX: &[(&str, &str, Expect)] = &[
    ("GET", "/healthz", OPEN),
    ("GET", "/readyz", OPEN),
    ("GET", "/metrics", OPEN),
    ("GET", "/api/v1/openapi.json", OPEN),
    ("POST", "/api/v1/auth/login", OPEN),
    ("POST", "/api/v1/auth/refresh", OPEN),
    (
        "POST",
        "/api/v1/auth/logout",
        [401, 204, 204, 204, 204, 204],
    ),
    ("GET", "/api/v1/me", SIGNED_IN),
    ("GET", "/api/v1/units", managers(200)),
    ("POST", "/api/v1/units", managers(201)),
    ("GET", "/api/v1/units/{id}", managers(200)),
    ("PATCH", "/api/v1/units/{id}", managers(200)),
    ("DELETE", "/api/v1/units/{id}", managers(204)),
    ("GET", "/api/v1/members", managers(200)),
    ("POST", "/api/v1/members", managers(201)),
    ("GET", "/api/v1/members/{id}", managers(200)),
    ("PATCH", "/api/v1/members/{id}", managers(200)),
    ("DELETE", "/api/v1/members/{id}", managers(204)),
    // A lost phone: managers end another member's logins (a member may end their own).
    ("DELETE", "/api/v1/members/{id}/sessions", managers(204)),
    ("GET", "/api/v1/teams", managers(200)),
    ("POST", "/api/v1/teams", managers(201)),
    ("GET", "/api/v1/teams/{id}", managers(200)),
    ("PATCH", "/api/v1/teams/{id}", managers(200)),
    ("DELETE", "/api/v1/teams/{id}", managers(204)),
    ("PUT", "/api/v1/teams/{id}/members", managers(200)),
    ("GET", "/api/v1/posts", managers(200)),
    ("POST", "/api/v1/posts", managers(201)),
    ("GET", "/api/v1/posts/geojson", managers(200)),
    ("POST", "/api/v1/posts/import", managers(200)),
    ("GET", "/api/v1/posts/{id}", managers(200)),
    ("PATCH", "/api/v1/posts/{id}", managers(200)),
    ("DELETE", "/api/v1/posts/{id}", managers(204)),
    ("GET", "/api/v1/shifts", managers(200)),
    ("POST", "/api/v1/shifts", managers(201)),
    ("GET", "/api/v1/shifts/{id}", managers(200)),
    ("PATCH", "/api/v1/shifts/{id}", managers(200)),
    ("DELETE", "/api/v1/shifts/{id}", managers(204)),
    // An officer's own duties: every logged-in member.
    ("GET", "/api/v1/me/shifts", SIGNED_IN),
    ("GET", "/api/v1/me/coverage", SIGNED_IN),
    ("POST", "/api/v1/rosters/generate", managers(200)),
    ("GET", "/api/v1/rosters/gaps", managers(200)),
    // Coverage and reports: for managers.
    ("GET", "/api/v1/coverage", managers(200)),
    ("GET", "/api/v1/coverage/map", managers(200)),
    ("GET", "/api/v1/status/now", managers(200)),
    // Live: everyone reads the alerts and events about themselves; managers acknowledge.
    ("GET", "/api/v1/alerts", SIGNED_IN),
    ("POST", "/api/v1/alerts/{id}/ack", managers(200)),
    ("GET", "/api/v1/events", SIGNED_IN),
    ("GET", "/api/v1/reports/compliance", managers(200)),
    ("GET", "/api/v1/reports/volunteers", managers(200)),
    // Positions: every member reports their own; reading someone else's is for managers.
    ("POST", "/api/v1/checkins", [401, 201, 201, 201, 201, 201]),
    ("GET", "/api/v1/checkins", SIGNED_IN),
    ("GET", "/api/v1/members/{id}/track", managers(200)),
    ("GET", "/api/v1/audit", ADMIN_ONLY_200),
    // Device keys: admins for everyone, commanders for their subtree's members.
    ("GET", "/api/v1/device-keys", managers(200)),
    ("GET", "/api/v1/members/{id}/device-keys", managers(200)),
    ("POST", "/api/v1/members/{id}/device-keys", managers(201)),
    (
        "DELETE",
        "/api/v1/members/{id}/device-keys/{key_id}",
        managers(204),
    ),
    // Kiosk devices: managers register them, and kiosk officers for a post they are on;
    // managers and kiosk officers list them (officers their own); managers and the
    // registrar revoke them (the cell's kiosk is the admin's).
    ("POST", "/api/v1/kiosks", [401, 201, 201, 403, 201, 403]),
    ("GET", "/api/v1/kiosks", [401, 200, 200, 403, 200, 403]),
    ("DELETE", "/api/v1/kiosks/{id}", managers(204)),
    // Every member sets and removes their own kiosk PIN.
    ("PUT", "/api/v1/me/pin", [401, 204, 204, 204, 204, 204]),
    ("DELETE", "/api/v1/me/pin", [401, 204, 204, 204, 204, 204]),
    // The kiosk device's own endpoints take its token only: no member's token opens them
    // (`kiosk.rs` tests them with a device token).
    ("GET", "/api/v1/kiosk", [401; 6]),
    ("POST", "/api/v1/kiosk/sign-on", [401; 6]),
    ("POST", "/api/v1/kiosk/sign-off", [401; 6]),
    ("POST", "/api/v1/kiosk/checkins", [401; 6]),
    // Tracker apps authenticate with a device key, whatever bearer token comes along.
    ("GET", "/osmand", OPEN),
    ("POST", "/osmand", OPEN),
];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One request of a cell, ready to send.
struct Call {
    path: String,
    token: Option<String>,
    body: Option<Value>,
}

/// What every cell can build on: the district, long-lived tokens of each caller and a
/// post, team, shift and bystander member in street S1 (the commander's scope).
struct Fixture {
    org: Org,
    tokens: HashMap<Caller, String>,
    post: Uuid,
    team: Uuid,
    shift: Uuid,
    bystander: Uuid,
    admin_id: Uuid,
    counter: u32,
}

impl Fixture {
    async fn create(s: &TestServer) -> Fixture {
        let org = Org::create(s).await;
        let mut tokens = HashMap::new();
        for caller in CALLERS.into_iter().skip(1) {
            let token = if caller == Caller::Admin {
                org.admin.clone()
            } else {
                s.token(caller.username()).await
            };
            tokens.insert(caller, token);
        }
        let admin = org.admin.clone();
        let post = id(&s
            .post(
                "/api/v1/posts",
                &admin,
                json!({"code": "FX-K", "name": "Fixture kiosk", "kind": "kiosk", "unit_id": org.street1,
                       "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
            )
            .await);
        let team = id(&s
            .post(
                "/api/v1/teams",
                &admin,
                json!({"code": "FX-T", "name": "Fixture team", "kind": "kiosk_crew", "unit_id": org.street1,
                       "member_ids": [org.members["kiosk1"]]}),
            )
            .await);
        let shift = id(&s
            .post(
                "/api/v1/shifts",
                &admin,
                json!({"post_id": post, "starts_at": "2026-12-01T00:00:00Z", "ends_at": "2026-12-01T08:00:00Z", "team_id": team}),
            )
            .await);
        let bystander = id(&s
            .post(
                "/api/v1/members",
                &admin,
                json!({"username": "bystander", "role": "volunteer", "unit_id": org.community1, "password": PASSWORD}),
            )
            .await);
        let admin_id = s.get("/api/v1/me", &admin).await.body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("the admin's id");
        Fixture {
            org,
            tokens,
            post,
            team,
            shift,
            bystander,
            admin_id,
            counter: 0,
        }
    }

    fn token(&self, caller: Caller) -> Option<String> {
        self.tokens.get(&caller).cloned()
    }

    /// A fresh number for unique codes, usernames and shift times.
    fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    fn admin(&self) -> &str {
        &self.org.admin
    }

    async fn fresh_unit(&mut self, s: &TestServer) -> Uuid {
        let n = self.next();
        id(&s
            .post(
                "/api/v1/units",
                self.admin(),
                json!({"code": format!("MX-U{n}"), "name": format!("Matrix unit {n}"), "kind": "community", "parent_id": self.org.street1}),
            )
            .await)
    }

    async fn fresh_member(&mut self, s: &TestServer) -> Uuid {
        let n = self.next();
        id(&s
            .post(
                "/api/v1/members",
                self.admin(),
                json!({"username": format!("mx.member{n}"), "role": "volunteer", "unit_id": self.org.community1, "password": PASSWORD}),
            )
            .await)
    }

    async fn fresh_team(&mut self, s: &TestServer) -> Uuid {
        let n = self.next();
        id(&s
            .post(
                "/api/v1/teams",
                self.admin(),
                json!({"code": format!("MX-T{n}"), "name": format!("Matrix team {n}"), "kind": "grid_patrol", "unit_id": self.org.street1}),
            )
            .await)
    }

    async fn fresh_post(&mut self, s: &TestServer) -> Uuid {
        let n = self.next();
        id(&s
            .post(
                "/api/v1/posts",
                self.admin(),
                json!({"code": format!("MX-P{n}"), "name": format!("Matrix post {n}"), "kind": "kiosk", "unit_id": self.org.street1,
                       "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
            )
            .await)
    }

    /// A shift body on the fixture post, on a day of its own.
    fn shift_body(&mut self) -> Value {
        let n = self.next();
        let start = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() + Duration::days(n.into());
        json!({"post_id": self.post, "starts_at": start.to_rfc3339(), "ends_at": (start + Duration::hours(8)).to_rfc3339(), "team_id": self.team})
    }

    async fn fresh_shift(&mut self, s: &TestServer) -> Uuid {
        let body = self.shift_body();
        id(&s.post("/api/v1/shifts", self.admin(), body).await)
    }

    /// The member id of the caller's username.
    fn member_id(&self, caller: Caller) -> Uuid {
        match caller {
            Caller::Admin => self.admin_id,
            other => self.org.members[other.username()],
        }
    }

    /// Issues a device key for a member; answers (key id, key).
    async fn device_key(&self, s: &TestServer, member: Uuid) -> (Uuid, String) {
        let a = s
            .post(
                &format!("/api/v1/members/{member}/device-keys"),
                self.admin(),
                json!({"label": "matrix phone"}),
            )
            .await;
        let key = a.body["key"].as_str().expect("a device key").to_owned();
        (id(&a), key)
    }

    /// A new login of the caller (for requests that use a login up).
    async fn fresh_login(&self, s: &TestServer, caller: Caller) -> Value {
        let a = s.login(caller.username(), PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "login of {caller:?}: {a:#?}");
        a.body
    }

    /// Runs the setup of one cell as admin and builds the caller's request.
    async fn prepare(&mut self, s: &TestServer, method: &str, route: &str, caller: Caller) -> Call {
        let token = self.token(caller);
        let window = "from=2026-12-01T00:00:00Z&to=2026-12-08T00:00:00Z";
        let simple = |path: String, body: Option<Value>| Call {
            path,
            token: token.clone(),
            body,
        };
        match (method, route) {
            ("GET", "/healthz" | "/readyz" | "/metrics" | "/api/v1/openapi.json")
            | ("GET", "/api/v1/me" | "/api/v1/units" | "/api/v1/members" | "/api/v1/teams")
            | ("GET", "/api/v1/posts" | "/api/v1/posts/geojson" | "/api/v1/device-keys")
            | ("GET", "/api/v1/me/coverage") => simple(route.to_owned(), None),
            ("POST", "/api/v1/auth/login") => simple(
                route.to_owned(),
                Some(json!({"username": caller.username(), "password": PASSWORD})),
            ),
            ("POST", "/api/v1/auth/refresh") => {
                let login = self.fresh_login(s, caller).await;
                simple(
                    route.to_owned(),
                    Some(json!({"refresh_token": login["refresh_token"]})),
                )
            }
            ("POST", "/api/v1/auth/logout") => {
                let token = match caller {
                    Caller::Anonymous => None,
                    _ => {
                        let login = self.fresh_login(s, caller).await;
                        login["access_token"].as_str().map(str::to_owned)
                    }
                };
                Call {
                    path: route.to_owned(),
                    token,
                    body: None,
                }
            }
            ("POST", "/api/v1/units") => {
                let n = self.next();
                simple(
                    route.to_owned(),
                    Some(
                        json!({"code": format!("MX-NEW-U{n}"), "name": "New unit", "kind": "community", "parent_id": self.org.street1}),
                    ),
                )
            }
            ("GET", "/api/v1/units/{id}") => {
                simple(format!("/api/v1/units/{}", self.org.community1), None)
            }
            ("PATCH", "/api/v1/units/{id}") => {
                let unit = self.fresh_unit(s).await;
                simple(
                    format!("/api/v1/units/{unit}"),
                    Some(json!({"name": "Renamed unit"})),
                )
            }
            ("DELETE", "/api/v1/units/{id}") => {
                let unit = self.fresh_unit(s).await;
                simple(format!("/api/v1/units/{unit}"), None)
            }
            ("POST", "/api/v1/members") => {
                let n = self.next();
                simple(
                    route.to_owned(),
                    Some(
                        json!({"username": format!("mx.new{n}"), "role": "volunteer", "unit_id": self.org.community1, "password": PASSWORD}),
                    ),
                )
            }
            ("GET", "/api/v1/members/{id}") => {
                simple(format!("/api/v1/members/{}", self.bystander), None)
            }
            ("PATCH", "/api/v1/members/{id}") => {
                let member = self.fresh_member(s).await;
                simple(
                    format!("/api/v1/members/{member}"),
                    Some(json!({"display_name": "Renamed member"})),
                )
            }
            ("DELETE", "/api/v1/members/{id}") => {
                let member = self.fresh_member(s).await;
                simple(format!("/api/v1/members/{member}"), None)
            }
            ("DELETE", "/api/v1/members/{id}/sessions") => {
                let member = self.fresh_member(s).await;
                simple(format!("/api/v1/members/{member}/sessions"), None)
            }
            ("POST", "/api/v1/teams") => {
                let n = self.next();
                simple(
                    route.to_owned(),
                    Some(
                        json!({"code": format!("MX-NEW-T{n}"), "name": "New team", "kind": "grid_patrol", "unit_id": self.org.street1,
                               "member_ids": [self.org.members["officer1"]]}),
                    ),
                )
            }
            ("GET", "/api/v1/teams/{id}") => simple(format!("/api/v1/teams/{}", self.team), None),
            ("PATCH", "/api/v1/teams/{id}") => {
                let team = self.fresh_team(s).await;
                simple(
                    format!("/api/v1/teams/{team}"),
                    Some(json!({"name": "Renamed team"})),
                )
            }
            ("DELETE", "/api/v1/teams/{id}") => {
                let team = self.fresh_team(s).await;
                simple(format!("/api/v1/teams/{team}"), None)
            }
            ("PUT", "/api/v1/teams/{id}/members") => {
                let team = self.fresh_team(s).await;
                simple(
                    format!("/api/v1/teams/{team}/members"),
                    Some(
                        json!({"member_ids": [self.org.members["officer1"], self.org.members["vol1"]]}),
                    ),
                )
            }
            ("POST", "/api/v1/posts") => {
                let n = self.next();
                simple(
                    route.to_owned(),
                    Some(
                        json!({"code": format!("MX-NEW-P{n}"), "name": "New post", "kind": "checkpoint", "unit_id": self.org.street1,
                               "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}),
                    ),
                )
            }
            ("POST", "/api/v1/posts/import") => {
                let n = self.next();
                simple(
                    route.to_owned(),
                    Some(json!({"type": "FeatureCollection", "features": [{
                        "type": "Feature",
                        "properties": {"code": format!("MX-IMP{n}"), "name": "Imported", "kind": "kiosk", "unit": "S1"},
                        "geometry": {"type": "Point", "coordinates": [108.95, 34.22]}}]})),
                )
            }
            ("GET", "/api/v1/posts/{id}") => simple(format!("/api/v1/posts/{}", self.post), None),
            ("PATCH", "/api/v1/posts/{id}") => {
                let post = self.fresh_post(s).await;
                simple(
                    format!("/api/v1/posts/{post}"),
                    Some(json!({"name": "Renamed post"})),
                )
            }
            ("DELETE", "/api/v1/posts/{id}") => {
                let post = self.fresh_post(s).await;
                simple(format!("/api/v1/posts/{post}"), None)
            }
            ("GET", "/api/v1/shifts") => simple(format!("{route}?{window}"), None),
            ("POST", "/api/v1/shifts") => {
                let body = self.shift_body();
                simple(route.to_owned(), Some(body))
            }
            ("GET", "/api/v1/shifts/{id}") => {
                simple(format!("/api/v1/shifts/{}", self.shift), None)
            }
            ("PATCH", "/api/v1/shifts/{id}") => {
                let shift = self.fresh_shift(s).await;
                simple(
                    format!("/api/v1/shifts/{shift}"),
                    Some(json!({"note": "changed"})),
                )
            }
            ("DELETE", "/api/v1/shifts/{id}") => {
                let shift = self.fresh_shift(s).await;
                simple(format!("/api/v1/shifts/{shift}"), None)
            }
            ("GET", "/api/v1/me/shifts") => simple(format!("{route}?{window}"), None),
            ("POST", "/api/v1/rosters/generate") => simple(
                route.to_owned(),
                Some(
                    json!({"post_ids": [self.post], "from": "2027-06-01", "to": "2027-06-02", "pattern": {
                    "shifts": [{"start": "08:00", "end": "16:00"}], "teams": [self.team], "rotation": "same_team"}}),
                ),
            ),
            ("GET", "/api/v1/rosters/gaps" | "/api/v1/coverage" | "/api/v1/coverage/map") => {
                simple(format!("{route}?{window}"), None)
            }
            ("GET", "/api/v1/status/now" | "/api/v1/reports/volunteers") => {
                simple(route.to_owned(), None)
            }
            ("GET", "/api/v1/reports/compliance") => simple(
                format!("{route}?month={}", Utc::now().format("%Y-%m")),
                None,
            ),
            ("POST", "/api/v1/checkins") => simple(
                route.to_owned(),
                Some(
                    json!({"client_id": Uuid::new_v4(), "recorded_at": Utc::now().to_rfc3339(),
                            "lat": 34.22, "lon": 108.95, "accuracy_m": 10.0}),
                ),
            ),
            ("GET", "/api/v1/checkins" | "/api/v1/audit" | "/api/v1/alerts" | "/api/v1/events") => {
                simple(route.to_owned(), None)
            }
            ("POST", "/api/v1/alerts/{id}/ack") => {
                // A fresh round-the-clock kiosk with no roster: an open roster_gap alert.
                let post = self.fresh_post(s).await;
                patrol_server::alerts::evaluate(&s.state)
                    .await
                    .expect("evaluation succeeds");
                let a = s
                    .get(
                        &format!("/api/v1/alerts?post_id={post}&state=open"),
                        self.admin(),
                    )
                    .await;
                let alert = a.body["items"][0]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no open alert for the fresh post: {a:#?}"))
                    .to_owned();
                simple(
                    format!("/api/v1/alerts/{alert}/ack"),
                    Some(json!({"note": "seen to"})),
                )
            }
            ("GET", "/api/v1/members/{id}/track") => simple(
                format!(
                    "/api/v1/members/{}/track?from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z",
                    self.bystander
                ),
                None,
            ),
            ("GET", "/api/v1/members/{id}/device-keys") => simple(
                format!("/api/v1/members/{}/device-keys", self.bystander),
                None,
            ),
            ("POST", "/api/v1/members/{id}/device-keys") => simple(
                format!("/api/v1/members/{}/device-keys", self.bystander),
                Some(json!({"label": "phone"})),
            ),
            ("DELETE", "/api/v1/members/{id}/device-keys/{key_id}") => {
                let (key_id, _) = self.device_key(s, self.bystander).await;
                simple(
                    format!("/api/v1/members/{}/device-keys/{key_id}", self.bystander),
                    None,
                )
            }
            ("GET", "/osmand") => {
                let (_, key) = self.device_key(s, self.member_id(caller)).await;
                simple(
                    format!(
                        "/osmand?id={key}&lat=34.22&lon=108.95&accuracy=5&timestamp={}",
                        Utc::now().timestamp()
                    ),
                    None,
                )
            }
            ("POST", "/osmand") => {
                let (_, key) = self.device_key(s, self.member_id(caller)).await;
                simple(
                    route.to_owned(),
                    Some(
                        json!({"device_id": key, "location": {"timestamp": Utc::now().to_rfc3339(),
                                "coords": {"latitude": 34.22, "longitude": 108.95, "accuracy": 5.0}}}),
                    ),
                )
            }
            ("POST", "/api/v1/kiosks") => {
                // A fresh post each time (at most 5 kiosks per post), on which the kiosk
                // officer has a shift running now.
                let post = self.fresh_post(s).await;
                let now = Utc::now();
                id(&s
                    .post(
                        "/api/v1/shifts",
                        self.admin(),
                        json!({"post_id": post, "starts_at": now - Duration::hours(1), "ends_at": now + Duration::hours(1),
                               "member_ids": [self.org.members["kiosk1"]]}),
                    )
                    .await);
                simple(
                    route.to_owned(),
                    Some(json!({"post_id": post, "name": "Matrix tablet"})),
                )
            }
            ("GET", "/api/v1/kiosks") => simple(route.to_owned(), None),
            ("DELETE", "/api/v1/kiosks/{id}") => {
                let post = self.fresh_post(s).await;
                let kiosk = id(&s
                    .post(
                        "/api/v1/kiosks",
                        self.admin(),
                        json!({"post_id": post, "name": "Matrix tablet"}),
                    )
                    .await);
                simple(format!("/api/v1/kiosks/{kiosk}"), None)
            }
            ("PUT", "/api/v1/me/pin") => simple(
                route.to_owned(),
                Some(json!({"pin": "2580", "password": PASSWORD})),
            ),
            ("DELETE", "/api/v1/me/pin") | ("GET", "/api/v1/kiosk") => {
                simple(route.to_owned(), None)
            }
            ("POST", "/api/v1/kiosk/sign-on") => simple(
                route.to_owned(),
                Some(json!({"username": caller.username(), "password": PASSWORD})),
            ),
            ("POST", "/api/v1/kiosk/sign-off") => simple(
                route.to_owned(),
                Some(json!({"sign_on_id": Uuid::now_v7()})),
            ),
            ("POST", "/api/v1/kiosk/checkins") => simple(
                route.to_owned(),
                Some(
                    json!({"checkins": [{"member_id": self.member_id(caller), "client_id": Uuid::new_v4(),
                    "recorded_at": Utc::now().to_rfc3339(), "lat": 34.22, "lon": 108.95, "accuracy_m": 10.0}]}),
                ),
            ),
            _ => panic!("the matrix lists {method} {route} but has no request for it"),
        }
    }
}

/// The routes of the served OpenAPI document, as `METHOD path`.
async fn served_routes(s: &TestServer) -> BTreeSet<String> {
    let spec = s
        .raw(|c, base| c.get(format!("{base}/api/v1/openapi.json")))
        .await;
    assert_eq!(spec.status, StatusCode::OK, "{spec:#?}");
    let paths = spec.body["paths"]
        .as_object()
        .expect("the spec has a paths object");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item is an object").keys() {
            if HTTP_METHODS.contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

/// Whether the answer is what the cell expects; 401 and 403 must also be the right
/// problem documents.
fn check(answer: &Answer, expected: u16) -> Result<(), String> {
    if answer.status.as_u16() != expected {
        return Err(format!(
            "expected {expected}, got {}: {}",
            answer.status, answer.text
        ));
    }
    let code = match expected {
        401 => "unauthorized",
        403 => "forbidden",
        _ => return Ok(()),
    };
    if answer.content_type() != "application/problem+json" || answer.body["code"] != code {
        return Err(format!(
            "expected a {code} problem, got {:?}: {}",
            answer.content_type(),
            answer.text
        ));
    }
    Ok(())
}

/// After a refused PATCH or DELETE, the admin still finds the record as it was.
async fn unchanged(s: &TestServer, fx: &Fixture, method: &str, call: &Call) -> Result<(), String> {
    if method != "PATCH" && method != "DELETE" {
        return Ok(());
    }
    if let Some((list, key_id)) = call.path.rsplit_once('/')
        && list.ends_with("/device-keys")
    {
        // A device key has no GET of its own: it must still be unrevoked in the list.
        let keys = s.get(list, fx.admin()).await;
        let revoked = keys.body["items"].as_array().and_then(|keys| {
            keys.iter()
                .find(|k| k["id"] == key_id)
                .map(|k| !k["revoked_at"].is_null())
        });
        return match revoked {
            Some(false) => Ok(()),
            _ => Err(format!(
                "the refused DELETE still revoked the key: {}",
                keys.text
            )),
        };
    }
    if let Some(kiosk_id) = call.path.strip_prefix("/api/v1/kiosks/") {
        // A kiosk has no GET of its own: it must still be in use in the list.
        let kiosks = s.get("/api/v1/kiosks?limit=1000", fx.admin()).await;
        let revoked = kiosks.body["items"].as_array().and_then(|kiosks| {
            kiosks
                .iter()
                .find(|k| k["id"] == kiosk_id)
                .map(|k| !k["revoked_at"].is_null())
        });
        return match revoked {
            Some(false) => Ok(()),
            _ => Err(format!(
                "the refused DELETE still revoked the kiosk: {}",
                kiosks.text
            )),
        };
    }
    if call.path.ends_with("/sessions") || call.path == "/api/v1/me/pin" {
        // Logins and PINs have no GET of their own; `app_api.rs` checks that a refused
        // request leaves the member's logins working, and only anonymous PIN calls are
        // refused.
        return Ok(());
    }
    let after = s.get(&call.path, fx.admin()).await;
    if after.status != StatusCode::OK {
        return Err(format!(
            "the refused {method} still took effect: {}",
            after.text
        ));
    }
    for (field, value) in call.body.iter().flat_map(|b| b.as_object()).flatten() {
        if &after.body[field] == value {
            return Err(format!(
                "the refused {method} still changed {field}: {}",
                after.text
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_caller() {
    let s = TestServer::start().await;
    let mut fx = Fixture::create(&s).await;

    // The matrix and the served contract must list the same routes.
    let served = served_routes(&s).await;
    let listed: BTreeSet<String> = MATRIX
        .iter()
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    assert_eq!(listed.len(), MATRIX.len(), "the matrix lists a route twice");
    let unlisted: Vec<&String> = served.difference(&listed).collect();
    let unserved: Vec<&String> = listed.difference(&served).collect();
    if !unlisted.is_empty() || !unserved.is_empty() {
        println!("routes in the spec but not in the matrix: {unlisted:#?}");
        println!("routes in the matrix but not in the spec: {unserved:#?}");
    }
    assert!(
        unlisted.is_empty() && unserved.is_empty(),
        "the authorisation matrix is out of step with the served OpenAPI document:\n  \
         in the spec, not in the matrix: {unlisted:?}\n  in the matrix, not in the spec: {unserved:?}"
    );

    let mut table = Vec::new();
    let mut failures = Vec::new();
    let mut cells = 0;
    for (method, route, expect) in MATRIX {
        let mut row = Vec::new();
        for (caller, expected) in CALLERS.into_iter().zip(expect) {
            let call = fx.prepare(&s, method, route, caller).await;
            let m = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
            // The event stream never ends: its headers are the answer.
            let answer = if *route == "/api/v1/events" {
                match s.events(call.token.as_deref(), None).await {
                    Ok(_) => Answer {
                        status: StatusCode::OK,
                        headers: reqwest::header::HeaderMap::new(),
                        body: Value::Null,
                        text: String::new(),
                    },
                    Err(refused) => refused,
                }
            } else {
                s.send(m, &call.path, call.token.as_deref(), call.body.clone())
                    .await
            };
            cells += 1;
            let got = answer.status.as_u16();
            let verdict = match check(&answer, *expected) {
                Ok(()) if *expected >= 400 => unchanged(&s, &fx, method, &call).await,
                Ok(()) if *route == "/api/v1/posts/import" && answer.body["created"] != 1 => {
                    Err(format!("the feature was not imported: {}", answer.text))
                }
                other => other,
            };
            match verdict {
                Ok(()) => row.push(format!("{got}")),
                Err(why) => {
                    row.push(format!("{got}!"));
                    failures.push(format!(
                        "{method} {route} as {caller:?} ({}): {why}",
                        call.path
                    ));
                }
            }
        }
        table.push((format!("{method} {route}"), row));
    }

    let width = table.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    let header: Vec<String> = CALLERS
        .iter()
        .map(|c| format!("{:>7}", c.label()))
        .collect();
    println!("{:width$} {}", "route", header.join(""));
    for (route, row) in &table {
        let row: Vec<String> = row.iter().map(|c| format!("{c:>7}")).collect();
        println!("{route:width$} {}", row.join(""));
    }
    println!(
        "authorisation matrix: {} routes x {} callers = {cells} cells",
        MATRIX.len(),
        CALLERS.len()
    );
    assert_eq!(cells, MATRIX.len() * CALLERS.len());
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ (marked ! above):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_reads_their_own_record_but_officers_no_one_else() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    for username in [
        "admin", "cmd1", "officer1", "kiosk1", "vol1", "cmd2", "officer2",
    ] {
        let token = if username == "admin" {
            org.admin.clone()
        } else {
            s.token(username).await
        };
        let me = s.get("/api/v1/me", &token).await;
        let own = me.body["id"].as_str().expect("id of /me").to_owned();
        if username != "admin" {
            assert_eq!(own, org.members[username].to_string());
        }
        let a = s.get(&format!("/api/v1/members/{own}"), &token).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{username} reads themselves: {a:#?}"
        );
        assert_eq!(a.body["id"], own.as_str());
        assert_eq!(a.body["username"], username);
    }
    for officer in ["officer1", "kiosk1", "vol1", "officer2"] {
        let token = s.token(officer).await;
        // Someone in their own unit, their commander, and someone elsewhere.
        for other in ["vol1", "officer1", "cmd1", "cmd2"] {
            if other == officer {
                continue;
            }
            s.get(&format!("/api/v1/members/{}", org.members[other]), &token)
                .await
                .assert_problem(403, "forbidden");
        }
        // Not even whether an id exists leaks: an unknown id is refused the same way.
        s.get(&format!("/api/v1/members/{}", Uuid::now_v7()), &token)
            .await
            .assert_problem(403, "forbidden");
    }
}

/// Field names of a 422 answer.
fn fields(a: &Answer) -> Vec<String> {
    a.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_invalid(a: &Answer, field: &str) {
    a.assert_problem(422, "validation_failed");
    assert!(
        fields(a).iter().any(|f| f == field),
        "expected a field error on {field}: {a:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_is_confined_to_their_own_subtree() {
    let s = TestServer::start().await;
    let org = Org::create(&s).await;
    let admin = &org.admin;
    let cmd1 = s.token("cmd1").await;
    // Street S2 has a community and a team besides its two members.
    let community2 = id(&s
        .post(
            "/api/v1/units",
            admin,
            json!({"code": "C2", "name": "Community 2", "kind": "community", "parent_id": org.street2}),
        )
        .await);
    let team2 = id(&s
        .post(
            "/api/v1/teams",
            admin,
            json!({"code": "T2", "name": "Team 2", "kind": "grid_patrol", "unit_id": org.street2,
                   "member_ids": [org.members["officer2"]]}),
        )
        .await);

    // Nothing of S2 can be read or changed: it does not exist for cmd1.
    let mut targets = vec![
        format!("/api/v1/units/{}", org.street2),
        format!("/api/v1/units/{community2}"),
        format!("/api/v1/units/{}", org.district),
        format!("/api/v1/teams/{team2}"),
    ];
    for m in ["cmd2", "officer2", "admin"] {
        let member = match org.members.get(m) {
            Some(id) => *id,
            None => s.get("/api/v1/me", admin).await.body["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        };
        targets.push(format!("/api/v1/members/{member}"));
    }
    for path in &targets {
        s.get(path, &cmd1).await.assert_problem(404, "not_found");
        let patch = if path.contains("/members/") {
            json!({"display_name": "Taken over"})
        } else {
            json!({"name": "Taken over"})
        };
        s.patch(path, &cmd1, patch)
            .await
            .assert_problem(404, "not_found");
        s.delete(path, &cmd1).await.assert_problem(404, "not_found");
    }
    s.send(
        Method::PUT,
        &format!("/api/v1/teams/{team2}/members"),
        Some(&cmd1),
        Some(json!({"member_ids": []})),
    )
    .await
    .assert_problem(404, "not_found");
    // …and is still there, unchanged, for the admin.
    for path in &targets {
        let a = s.get(path, admin).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {a:#?}");
        assert_ne!(a.body["name"], "Taken over", "{path}");
        assert_ne!(a.body["display_name"], "Taken over", "{path}");
    }
    let t = s.get(&format!("/api/v1/teams/{team2}"), admin).await;
    assert_eq!(t.body["member_ids"], json!([org.members["officer2"]]));
    // Lists hold only S1's records.
    let units = s.get("/api/v1/units?limit=1000", &cmd1).await;
    let mut seen: Vec<String> = units.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["code"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["C1", "S1"]);
    let members = s.get("/api/v1/members?limit=1000", &cmd1).await;
    let mut seen: Vec<String> = members.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["cmd1", "kiosk1", "officer1", "vol1"]);
    let teams = s.get("/api/v1/teams", &cmd1).await;
    assert_eq!(teams.body["items"], json!([]), "{teams:#?}");

    // No member can be created in S2, nor an admin anywhere.
    let new_member = |username: &str, role: &str, unit: Option<Uuid>| json!({"username": username, "role": role, "unit_id": unit, "password": PASSWORD});
    let a = s
        .post(
            "/api/v1/members",
            &cmd1,
            new_member("intruder", "patrol_officer", Some(org.street2)),
        )
        .await;
    assert_invalid(&a, "unit_id");
    let a = s
        .post(
            "/api/v1/members",
            &cmd1,
            new_member("intruder", "volunteer", Some(community2)),
        )
        .await;
    assert_invalid(&a, "unit_id");
    let a = s
        .post(
            "/api/v1/members",
            &cmd1,
            new_member("boss", "admin", Some(org.community1)),
        )
        .await;
    assert_invalid(&a, "role");
    let a = s
        .post("/api/v1/members", &cmd1, new_member("boss", "admin", None))
        .await;
    assert_invalid(&a, "role");
    // Nor can a member of S1 be moved to S2 or promoted to admin.
    let vol1 = format!("/api/v1/members/{}", org.members["vol1"]);
    assert_invalid(
        &s.patch(&vol1, &cmd1, json!({"unit_id": org.street2})).await,
        "unit_id",
    );
    assert_invalid(
        &s.patch(&vol1, &cmd1, json!({"role": "admin"})).await,
        "role",
    );
    // Nor a unit, team or sub-unit be made in or moved to S2.
    assert_invalid(
        &s.post(
            "/api/v1/units",
            &cmd1,
            json!({"code": "X1", "name": "X", "kind": "community", "parent_id": org.street2}),
        )
        .await,
        "parent_id",
    );
    assert_invalid(
        &s.post(
            "/api/v1/teams",
            &cmd1,
            json!({"code": "X1", "name": "X", "kind": "grid_patrol", "unit_id": org.street2}),
        )
        .await,
        "unit_id",
    );
    assert_invalid(
        &s.patch(
            &format!("/api/v1/units/{}", org.community1),
            &cmd1,
            json!({"parent_id": org.street2}),
        )
        .await,
        "parent_id",
    );
    for username in ["intruder", "boss"] {
        assert_eq!(
            s.login(username, PASSWORD).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    // Their own unit S1 is not theirs to change or delete…
    let s1 = format!("/api/v1/units/{}", org.street1);
    s.patch(&s1, &cmd1, json!({"name": "Mine now"}))
        .await
        .assert_problem(403, "forbidden");
    s.delete(&s1, &cmd1).await.assert_problem(403, "forbidden");
    let a = s.get(&s1, &cmd1).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["name"], "Unit S1");
    // …but the units below it are.
    let c1 = format!("/api/v1/units/{}", org.community1);
    let a = s.patch(&c1, &cmd1, json!({"name": "Renamed C1"})).await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["name"], "Renamed C1");
    let compound = s
        .post(
            "/api/v1/units",
            &cmd1,
            json!({"code": "CP1", "name": "Compound 1", "kind": "compound", "parent_id": org.community1}),
        )
        .await;
    assert_eq!(compound.status, StatusCode::CREATED, "{compound:#?}");
    let compound = id(&compound);
    let a = s
        .patch(
            &format!("/api/v1/units/{compound}"),
            &cmd1,
            json!({"parent_id": org.street1}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:#?}");
    assert_eq!(a.body["parent_id"], org.street1.to_string());
    assert_eq!(
        s.delete(&format!("/api/v1/units/{compound}"), &cmd1)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    s.get(&format!("/api/v1/units/{compound}"), admin)
        .await
        .assert_problem(404, "not_found");
}
