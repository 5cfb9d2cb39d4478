//! The commanders' console, driven in a real headless Chromium (through chromedriver and
//! WebDriver) against a server with the demo district: logging in, the live board with
//! every post and a check-in showing within 5 s, the coverage map of a planted failure,
//! the compliance tables and their CSV, acknowledging an alert. Screenshots are saved
//! under `target/console-screenshots/`.
//!
//! The browser comes from `api_tests::browser`, which says where Chromium is found and
//! when these tests skip.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use api_tests::{
    Org, PASSWORD, TestServer,
    browser::{Browser, browser_or_skip},
};
use chrono::{DateTime, Utc};
use fantoccini::{Locator, key::Key};
use patrol_server::demo::{self, DEMO_PASSWORD, DemoOptions, Failure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// The console's own steps.
trait ConsoleSteps {
    async fn log_in(&self, base: &str, username: &str);
    async fn open(&self, base: &str);
    async fn submit_login(&self, username: &str, password: &str);
    async fn close(self);
}

impl ConsoleSteps for Browser {
    /// Opens the console and logs in through the form with the demo password.
    async fn log_in(&self, base: &str, username: &str) {
        self.open(base).await;
        self.submit_login(username, DEMO_PASSWORD).await;
    }

    /// Opens the console and waits until it has started.
    async fn open(&self, base: &str) {
        self.client.goto(&format!("{base}/")).await.expect("open");
        self.until_js(
            "the console to start",
            Duration::from_secs(20),
            "return document.body.dataset.ready === 'true'",
        )
        .await;
    }

    /// Fills in the login form, submits it with Enter, and waits for the session.
    async fn submit_login(&self, username: &str, password: &str) {
        let user = self
            .client
            .find(Locator::Id("login-username"))
            .await
            .expect("username field");
        user.send_keys(username).await.expect("type username");
        let pass = self
            .client
            .find(Locator::Id("login-password"))
            .await
            .expect("password field");
        // Enter in the password field submits the form, as a keyboard user would.
        pass.send_keys(&format!("{password}{}", char::from(Key::Enter)))
            .await
            .expect("type password");
        self.until_js(
            "the login to complete",
            Duration::from_secs(20),
            "return document.body.dataset.session === 'open'",
        )
        .await;
    }

    /// Checks that the page broke no rule of its Content-Security-Policy, and ends the session.
    async fn close(self) {
        let violations = self
            .js(
                "return document.body.dataset.policyViolations || '0'",
                vec![],
            )
            .await;
        let _ = self.client.close().await;
        assert_eq!(violations, "0", "Content-Security-Policy violations");
    }
}

/// A server with the demo district and an admin token.
async fn demo_server(options: DemoOptions) -> (TestServer, demo::DemoSummary, String) {
    let s = TestServer::start().await;
    let summary = demo::load_with(&s.state, options)
        .await
        .expect("demo loads");
    let admin = s.login("admin", DEMO_PASSWORD).await.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    (s, summary, admin)
}

/// The demo's organisation and rosters without simulated fixes (every post rostered now
/// starts unstaffed), an admin token, and the browser binaries; None when skipped.
async fn rostered_demo(test: &str) -> Option<(TestServer, String, (PathBuf, PathBuf))> {
    let binaries = browser_or_skip(test)?;
    let (s, _, admin) = demo_server(DemoOptions {
        past_days: 0,
        fixes: false,
    })
    .await;
    Some((s, admin, binaries))
}

/// A kiosk rostered now and unstaffed, one of its crew, and that member's token.
struct OnDuty {
    /// The kiosk (`GET /posts/{id}`).
    post: Value,
    /// Its code.
    code: String,
    /// Its running shift.
    shift: Value,
    /// The crew member (`GET /members/{id}`).
    member: Value,
    /// The member's access token.
    token: String,
}

impl OnDuty {
    async fn at_a_kiosk(s: &TestServer, admin: &str) -> OnDuty {
        let now = s.get("/api/v1/status/now", admin).await.body;
        let kiosk = now["posts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kind"] == "kiosk" && p["required"] == 1 && p["staffed"] == false)
            .expect("a rostered, unstaffed kiosk")
            .clone();
        let get = async |path: String| s.get(&path, admin).await.body;
        let shift = get(format!(
            "/api/v1/shifts/{}",
            kiosk["shift_ids"][0].as_str().unwrap()
        ))
        .await;
        let mut crew: Vec<Value> = shift["member_ids"].as_array().unwrap().clone();
        if let Some(team) = shift["team_id"].as_str() {
            let team = get(format!("/api/v1/teams/{team}")).await;
            crew.extend(team["member_ids"].as_array().unwrap().iter().cloned());
        }
        let member = get(format!("/api/v1/members/{}", crew[0].as_str().unwrap())).await;
        let token = s
            .login(member["username"].as_str().unwrap(), DEMO_PASSWORD)
            .await
            .body["access_token"]
            .as_str()
            .expect("the crew member logs in")
            .to_owned();
        let post = get(format!(
            "/api/v1/posts/{}",
            kiosk["post_id"].as_str().unwrap()
        ))
        .await;
        OnDuty {
            code: kiosk["post_code"].as_str().unwrap().to_owned(),
            post,
            shift,
            member,
            token,
        }
    }

    /// The member sends a fix of this kind at the kiosk, now.
    async fn check_in(&self, s: &TestServer, kind: &str) -> api_tests::Answer {
        let at = &self.post["geometry"]["coordinates"];
        s.post(
            "/api/v1/checkins",
            &self.token,
            json!({"client_id": Uuid::new_v4(), "recorded_at": ts(Utc::now()), "lat": at[1], "lon": at[0],
                   "accuracy_m": 5.0, "kind": kind, "post_id": self.post["id"]}),
        )
        .await
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_is_served_with_a_strict_policy_and_stays_out_of_the_api() {
    let s = TestServer::start_with(|settings| {
        settings.tile_url = Some(
            patrol_server::settings::TileUrl::parse("https://tiles.intranet/{z}/{x}/{y}.png")
                .expect("tile url"),
        );
    })
    .await;
    let page = s.raw(|c, base| c.get(format!("{base}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type().starts_with("text/html"));
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("style-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        csp.contains("img-src 'self' data: blob: https://tiles.intranet;"),
        "{csp}"
    );
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    // No inline script, no event-handler attributes, no inline styles in the markup.
    let html = page.text.to_lowercase();
    for script in html.split("<script").skip(1) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(tag.contains("src="), "inline script: <script{tag}>");
    }
    assert!(!html.contains(" style="), "inline style attribute");
    assert!(!html.contains("<style"), "inline style element");
    for attr in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " oninput=",
        " onerror=",
    ] {
        assert!(!html.contains(attr), "{attr} attribute");
    }
    // Every asset the page names is served, with the same policy; revalidation answers 304.
    let mut assets = vec!["/console/app.js".to_owned()];
    for part in page.text.split(['"', '\'']) {
        if part.starts_with("/console/") && !assets.contains(&part.to_owned()) {
            assets.push(part.to_owned());
        }
    }
    for module in ["api", "board", "events", "map", "reports", "util"] {
        assets.push(format!("/console/{module}.js"));
    }
    for path in &assets {
        let a = s.raw(|c, base| c.get(format!("{base}{path}"))).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(a.headers.contains_key("content-security-policy"), "{path}");
        let etag = a.headers["etag"].to_str().unwrap().to_owned();
        let again = s
            .raw(|c, base| {
                c.get(format!("{base}{path}"))
                    .header("if-none-match", &etag)
            })
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
    }
    let js = s
        .raw(|c, base| c.get(format!("{base}/console/app.js")))
        .await;
    assert!(js.content_type().starts_with("text/javascript"));
    let config = s
        .raw(|c, base| c.get(format!("{base}/console/config.json")))
        .await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(
        config.body,
        json!({"tile_url": "https://tiles.intranet/{z}/{x}/{y}.png", "timezone": "Asia/Shanghai"})
    );
    // Unknown paths, under /api or not, are still problem+json 404s.
    for path in [
        "/api/v1/nope",
        "/api/nope",
        "/console/nope.js",
        "/index.html",
    ] {
        s.raw(|c, base| c.get(format!("{base}{path}")))
            .await
            .assert_problem(404, "not_found");
    }
    // The console is not API: not in the OpenAPI document.
    let spec = s
        .raw(|c, base| c.get(format!("{base}/api/v1/openapi.json")))
        .await
        .text;
    assert!(!spec.contains("/console"), "console routes in the spec");
    assert!(!spec.contains("\"/\""), "the root in the spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_board_lists_every_post_and_shows_a_check_in_within_five_seconds() {
    let Some((s, admin, binaries)) = rostered_demo("live_board").await else {
        return;
    };
    let browser = Browser::start(binaries).await;
    browser.log_in(&s.base, "cmd.district").await;
    let now = s.get("/api/v1/status/now", &admin).await.body;
    let total = now["posts"].as_array().unwrap().len();
    browser
        .until_js(
            "the board to list every post",
            Duration::from_secs(20),
            &format!(
                "return document.querySelectorAll('#board-posts .post-card').length === {total}"
            ),
        )
        .await;
    let codes = browser
        .js(
            "return [...document.querySelectorAll('#board-posts .post-card')]
                .filter(c => ['route', 'checkpoint', 'kiosk'].includes(c.dataset.kind))
                .map(c => c.dataset.code)",
            vec![],
        )
        .await;
    let mut codes: Vec<String> = serde_json::from_value(codes).unwrap();
    codes.sort();
    let mut expected: Vec<String> = (1..=18)
        .map(|i| format!("R{i:02}"))
        .chain((1..=15).map(|i| format!("C{i:02}")))
        .chain((1..=20).map(|i| format!("K{i:02}")))
        .collect();
    expected.sort();
    assert_eq!(
        codes, expected,
        "the 18 routes, 15 checkpoints and 20 kiosks"
    );

    // A kiosk rostered now, unstaffed on screen.
    let duty = OnDuty::at_a_kiosk(&s, &admin).await;
    let code = duty.code.clone();
    let state = format!(
        "return (document.querySelector('.post-card[data-code=\"{code}\"]') || {{}}).dataset?.state"
    );
    assert_eq!(browser.js(&state, vec![]).await, "unstaffed");
    browser.screenshot("live-board-before-check-in").await;

    // One of its crew checks in at the kiosk, through the API.
    let fix = duty.check_in(&s, "arrive").await;
    assert_eq!(fix.status, StatusCode::CREATED, "{fix:#?}");
    let took = browser
        .until(
            &format!("{code} to show staffed"),
            Duration::from_secs(5),
            || async { browser.js(&state, vec![]).await == "staffed" },
        )
        .await;
    println!("{code} showed staffed {took:?} after the check-in was stored");
    let heads = browser
        .js(
            &format!(
                "return document.querySelector('.post-card[data-code=\"{code}\"] .heads').textContent"
            ),
            vec![],
        )
        .await;
    assert!(
        heads.as_str().unwrap().starts_with("1 of 1 present"),
        "{heads}"
    );
    // Tall enough for the whole board in one picture.
    browser.client.set_window_size(1280, 1560).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.screenshot("live-board").await;

    // At a tablet's width every view fits without scrolling sideways.
    browser.client.set_window_size(800, 1100).await.unwrap();
    for view in ["board", "map", "compliance"] {
        browser
            .client
            .find(Locator::Css(&format!("#nav a[data-view='{view}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser
            .until_js(
                &format!("the {view} view at tablet width"),
                Duration::from_secs(30),
                &format!(
                    "return !document.getElementById('view-{view}').hidden
                        && ('{view}' !== 'compliance' || !!document.getElementById('view-compliance').dataset.loaded)
                        && document.documentElement.scrollWidth <= window.innerWidth"
                ),
            )
            .await;
    }
    browser.screenshot("compliance-tablet").await;
    // The ranking says why no unit is marked when none is, and which units are not ranked.
    let month = browser
        .js(
            "return document.getElementById('compliance-month').value",
            vec![],
        )
        .await;
    let report = s
        .get(
            &format!(
                "/api/v1/reports/compliance?month={}&level=street",
                month.as_str().unwrap()
            ),
            &admin,
        )
        .await
        .body;
    let note = browser.text_of("ranking-note").await;
    assert!(
        note.starts_with(&format!("{} unit", report["ranked_units"])),
        "{note}"
    );
    assert_eq!(
        note.contains("too few to mark"),
        report["marks_withheld"] == "too_few_units",
        "{note} for {report}"
    );
    let unranked = browser
        .js(
            "return [...document.querySelectorAll('#ranking tbody tr')]
               .filter(r => r.textContent.includes('Not ranked')).map(r => r.dataset.unitCode)",
            vec![],
        )
        .await;
    let expected: Vec<Value> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rank"].is_null())
        .map(|r| r["unit_code"].clone())
        .collect();
    assert_eq!(unranked, Value::Array(expected), "units not ranked");

    // Logging out forgets the tokens: the login form is back.
    browser
        .client
        .find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until_js(
            "the login form after logout",
            Duration::from_secs(5),
            "return document.body.dataset.session === 'none' && !document.getElementById('view-login').hidden",
        )
        .await;
    browser.close().await;
}

/// Stands in, inside the page, for the event stream and the alerts endpoints of the alerts
/// backend (built on another branch against the same contract): `window.fake.send(text)`
/// writes to the open stream, `window.fake.end()` closes it, `window.fake.streams` holds
/// the headers of each stream request, `window.fake.acks` each acknowledgement's body.
const FAKE_BACKEND: &str = r#"
const realFetch = window.fetch.bind(window);
const fake = { streams: [], controllers: [], alerts: [], acks: [], statusFetches: 0 };
const json = (status, body) => new Response(JSON.stringify(body), {
  status, headers: { 'content-type': status < 300 ? 'application/json' : 'application/problem+json' } });
window.fake = fake;
fake.send = (text) => fake.controllers.at(-1).enqueue(new TextEncoder().encode(text));
fake.end = () => fake.controllers.at(-1).close();
window.fetch = (url, init = {}) => {
  const path = new URL(String(url), location.href).pathname;
  const method = (init.method || 'GET').toUpperCase();
  if (path === '/api/v1/events') {
    fake.streams.push(Object.assign({}, init.headers));
    let controller;
    const body = new ReadableStream({ start(c) { controller = c; } });
    fake.controllers.push(controller);
    if (init.signal) init.signal.addEventListener('abort', () => {
      try { controller.error(new DOMException('aborted', 'AbortError')); } catch (e) {}
    });
    return Promise.resolve(new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } }));
  }
  if (path === '/api/v1/status/now') fake.statusFetches += 1;
  if (path === '/api/v1/alerts' && method === 'GET') {
    return Promise.resolve(json(200, { items: fake.alerts.filter((a) => a.state === 'open'), next_cursor: null }));
  }
  const ack = /^\/api\/v1\/alerts\/([^/]+)\/ack$/.exec(path);
  if (ack && method === 'POST') {
    const body = JSON.parse(init.body);
    fake.acks.push(body);
    const alert = fake.alerts.find((a) => a.id === ack[1]);
    if (!body.note) return Promise.resolve(json(422, { status: 422, code: 'validation_failed', detail: 'note is required' }));
    Object.assign(alert, { state: 'acknowledged', ack_note: body.note, acked_at: new Date().toISOString() });
    return Promise.resolve(json(200, alert));
  }
  return realFetch(url, init);
};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_board_follows_the_event_stream_and_acknowledges_alerts_against_the_contract() {
    let Some((s, admin, binaries)) = rostered_demo("event_stream").await else {
        return;
    };
    let browser = Browser::start(binaries).await;
    browser.open(&s.base).await;
    browser.js(FAKE_BACKEND, vec![]).await;
    browser.submit_login("cmd.district", DEMO_PASSWORD).await;
    browser
        .until_js(
            "the stream to be up",
            Duration::from_secs(20),
            "return document.getElementById('live-mode').dataset.mode === 'live'
                && document.querySelectorAll('.post-card').length > 0",
        )
        .await;

    // A check-in event makes the board fetch /status/now at once (polling is slow while
    // the stream is up), and the card shows the real check-in.
    let duty = OnDuty::at_a_kiosk(&s, &admin).await;
    let (code, member, post) = (duty.code.clone(), &duty.member, &duty.post);
    let fix = duty.check_in(&s, "arrive").await;
    assert_eq!(fix.status, StatusCode::CREATED, "{fix:#?}");
    let event = json!({"fix_id": fix.body["id"], "member_id": member["id"], "member_name": member["display_name"],
        "post_id": post["id"], "post_code": code, "lat": post["geometry"]["coordinates"][1],
        "lon": post["geometry"]["coordinates"][0], "recorded_at": ts(Utc::now()), "kind": "arrive", "flags": []});
    // Split across writes, with CRLF line ends and a comment, as a stream may arrive.
    let text = format!(": ping\r\nid: 41\r\nevent: checkin\r\ndata: {event}\r\n\r\n");
    let (a, b) = text.split_at(text.len() / 2);
    browser
        .js(
            "window.fake.send(arguments[0]); window.fake.send(arguments[1]);",
            vec![json!(a), json!(b)],
        )
        .await;
    let state =
        format!("return document.querySelector('.post-card[data-code=\"{code}\"]').dataset.state");
    let took = browser
        .until(
            &format!("{code} to show staffed after the event"),
            Duration::from_secs(3),
            || async { browser.js(&state, vec![]).await == "staffed" },
        )
        .await;
    println!("{code} showed staffed {took:?} after the checkin event");

    // The stream ends: the console reconnects with the last event id it saw.
    browser.js("window.fake.end()", vec![]).await;
    browser
        .until_js(
            "a reconnection",
            Duration::from_secs(10),
            "return window.fake.streams.length === 2",
        )
        .await;
    let headers = browser.js("return window.fake.streams[1]", vec![]).await;
    assert_eq!(headers["last-event-id"], "41", "{headers}");
    assert!(
        headers["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer "),
        "{headers}"
    );

    // An alert raised on the stream appears; acknowledging it asks for a note.
    let alert = json!({"id": Uuid::new_v4(), "kind": "sos", "state": "open", "post_id": post["id"],
        "post_code": code, "member_id": member["id"], "member_name": member["display_name"], "shift_id": duty.shift["id"],
        "unit_id": post["unit_id"], "message": format!("SOS from {} at {code}", member["display_name"].as_str().unwrap()),
        "position": {"lat": post["geometry"]["coordinates"][1], "lon": post["geometry"]["coordinates"][0]},
        "raised_at": ts(Utc::now()), "acked_at": null, "acked_by": null, "ack_note": null, "resolved_at": null});
    browser
        .until_js(
            "the stream to be up again",
            Duration::from_secs(10),
            "return document.getElementById('live-mode').dataset.mode === 'live'",
        )
        .await;
    browser
        .js(
            "window.fake.alerts.push(arguments[0]);
             window.fake.send('id: 42\\nevent: alert\\ndata: ' + JSON.stringify({action: 'raised', alert: arguments[0]}) + '\\n\\n');",
            vec![alert.clone()],
        )
        .await;
    let row = format!(
        "#alerts li[data-alert-id=\"{}\"]",
        alert["id"].as_str().unwrap()
    );
    browser
        .until_js(
            "the alert on the board",
            Duration::from_secs(5),
            &format!("return !!document.querySelector('{row}')"),
        )
        .await;
    browser.screenshot("alert-from-the-stream").await;
    let button = browser
        .client
        .find(Locator::Css(&format!("{row} button.ack")))
        .await
        .unwrap();
    button.click().await.unwrap();
    let open = "return document.getElementById('ack-dialog').open";
    browser
        .until_js("the dialog", Duration::from_secs(5), open)
        .await;
    // Escape cancels; nothing is sent.
    let note = browser.client.find(Locator::Id("ack-note")).await.unwrap();
    note.send_keys(&char::from(Key::Escape).to_string())
        .await
        .unwrap();
    browser
        .until_js(
            "the dialog to close",
            Duration::from_secs(5),
            "return !document.getElementById('ack-dialog').open",
        )
        .await;
    assert_eq!(
        browser.js("return window.fake.acks.length", vec![]).await,
        0
    );
    // Enter with no note asks for one; Enter with a note acknowledges.
    button.click().await.unwrap();
    browser
        .until_js("the dialog again", Duration::from_secs(5), open)
        .await;
    let note = browser.client.find(Locator::Id("ack-note")).await.unwrap();
    note.send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    let error = browser
        .js(
            "return document.getElementById('ack-error').textContent",
            vec![],
        )
        .await;
    assert!(error.as_str().unwrap().contains("note"), "{error}");
    assert_eq!(
        browser.js("return window.fake.acks.length", vec![]).await,
        0
    );
    note.send_keys(&format!("Patrol car sent{}", char::from(Key::Enter)))
        .await
        .unwrap();
    browser
        .until_js(
            "the alert to leave the list",
            Duration::from_secs(5),
            &format!(
                "return !document.querySelector('{row}') && !document.getElementById('ack-dialog').open"
            ),
        )
        .await;
    assert_eq!(
        browser.js("return window.fake.acks", vec![]).await,
        json!([{"note": "Patrol car sent"}])
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_refreshed_before_it_expires_and_kept_in_memory_only() {
    let Some(binaries) = browser_or_skip("token_refresh") else {
        return;
    };
    // The shortest access token the settings allow: the console refreshes it after 24 s.
    let s = TestServer::start_with(|settings| {
        settings.access_token_ttl = Duration::from_secs(30);
    })
    .await;
    Org::create(&s).await;
    let browser = Browser::start(binaries).await;
    browser.open(&s.base).await;
    browser
        .js(
            "const realFetch = window.fetch.bind(window);
             window.refreshes = [];
             window.fetch = async (url, init) => {
               const res = await realFetch(url, init);
               if (String(url).endsWith('/auth/refresh')) window.refreshes.push(res.status);
               return res;
             };",
            vec![],
        )
        .await;
    browser.submit_login("cmd1", PASSWORD).await;
    let stored = browser
        .js(
            "return [localStorage.length, sessionStorage.length, document.cookie]",
            vec![],
        )
        .await;
    assert_eq!(stored, json!([0, 0, ""]), "tokens stay in memory");
    browser
        .until_js(
            "a refresh of the access token",
            Duration::from_secs(40),
            "return window.refreshes.length >= 1",
        )
        .await;
    assert_eq!(
        browser.js("return window.refreshes", vec![]).await,
        json!([200])
    );
    // The board goes on polling after the refresh (every 30 s while the event stream is
    // up, every 3 s without it).
    let updated = "return document.getElementById('board-updated').textContent";
    let before = browser.js(updated, vec![]).await;
    browser
        .until(
            "the board to poll again",
            Duration::from_secs(40),
            || async { browser.js(updated, vec![]).await != before },
        )
        .await;
    assert_eq!(
        browser
            .js("return document.body.dataset.session", vec![])
            .await,
        "open"
    );
    // The policy holds in the page: an inline style attribute is refused and counted (the
    // check every test makes when it closes the browser is not vacuous).
    browser
        .js(
            "document.getElementById('board-title').setAttribute('style', 'color: red')",
            vec![],
        )
        .await;
    browser
        .until_js(
            "the inline style to be refused",
            Duration::from_secs(5),
            "return document.body.dataset.policyViolations === '1'
                && getComputedStyle(document.getElementById('board-title')).color !== 'rgb(255, 0, 0)'",
        )
        .await;
    browser
        .js("delete document.body.dataset.policyViolations", vec![])
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_and_compliance_show_the_planted_failures() {
    let Some(binaries) = browser_or_skip("map_and_compliance") else {
        return;
    };
    // Three past days: the half-walked route is three days back.
    let (s, summary, admin) = demo_server(DemoOptions {
        past_days: 3,
        fixes: true,
    })
    .await;
    let half = summary
        .planted
        .iter()
        .find(|p| p.failure == Failure::HalfRoute)
        .expect("the half-walked route is planted")
        .clone();
    let expected = s
        .get(
            &format!(
                "/api/v1/coverage/map?from={}&to={}",
                ts(half.from),
                ts(half.to)
            ),
            &admin,
        )
        .await;
    assert_eq!(expected.status, StatusCode::OK);
    let features = expected.body["features"].as_array().unwrap().clone();
    let pieces: Vec<&Value> = features
        .iter()
        .filter(|f| f["properties"]["kind"] == "route")
        .collect();

    let browser = Browser::start(binaries).await;
    browser.log_in(&s.base, "cmd.district").await;
    browser
        .client
        .find(Locator::Css("#nav a[data-view='map']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The span of the planted shift, typed as the zone's wall-clock time.
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%dT%H:%M").to_string();
    browser
        .js(
            "document.getElementById('map-from').value = arguments[0];
             document.getElementById('map-to').value = arguments[1];",
            vec![json!(local(half.from)), json!(local(half.to))],
        )
        .await;
    browser
        .client
        .find(Locator::Id("map-show"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until_js(
            "the map of the planted shift's span",
            Duration::from_secs(30),
            &format!(
                "return document.getElementById('map').dataset.loaded === '{}/{}'",
                ts(half.from),
                ts(half.to)
            ),
        )
        .await;
    let drawn = browser
        .js(
            "return [...document.querySelectorAll('#map .feature')]
                .sort((a, b) => a.dataset.index - b.dataset.index).map(n => ({
                code: n.dataset.postCode, kind: n.dataset.kind, covered: n.dataset.covered ?? null,
                colour: n.getAttribute(n.dataset.kind === 'route' ? 'stroke' : 'fill'),
                drawn: n.dataset.kind === 'route' ? (n.getAttribute('d') || '').length > 0 : true }))",
            vec![],
        )
        .await;
    let drawn = drawn.as_array().unwrap();
    // The caption says the figures are of whole shifts, not of the span alone.
    let caption = browser
        .js(
            "return document.getElementById('map-message').textContent",
            vec![],
        )
        .await;
    assert!(
        caption.as_str().unwrap().starts_with(&format!(
            "Figures of the shifts overlapping {} to {}, each whole",
            local(half.from).replace('T', " "),
            local(half.to).replace('T', " ")
        )),
        "{caption}"
    );
    let routes: Vec<&Value> = drawn.iter().filter(|d| d["kind"] == "route").collect();
    assert_eq!(routes.len(), pieces.len(), "one path per route piece");
    assert_eq!(
        drawn.len(),
        features.len(),
        "one shape per feature of the map"
    );
    for (d, f) in routes.iter().zip(&pieces) {
        let p = &f["properties"];
        assert_eq!(d["code"], p["post_code"]);
        assert_eq!(
            d["covered"],
            json!(p["covered"].as_bool().unwrap().to_string())
        );
        assert_eq!(d["colour"], p["stroke"], "{}", p["post_code"]);
        assert_eq!(d["drawn"], true);
    }
    // R05: a green covered first half and an amber uncovered second half.
    let r05: Vec<(&str, &str)> = routes
        .iter()
        .filter(|d| d["code"] == half.post_code.as_str())
        .map(|d| {
            (
                d["covered"].as_str().unwrap(),
                d["colour"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(r05.contains(&("true", "#2e7d32")), "{r05:?}");
    assert!(r05.contains(&("false", "#f9a825")), "{r05:?}");
    for (d, f) in drawn
        .iter()
        .zip(&features)
        .filter(|(d, _)| d["kind"] != "route")
    {
        let p = &f["properties"];
        assert_eq!(d["code"], p["post_code"]);
        let hint = if p["kind"] == "area" {
            &p["fill"]
        } else {
            &p["marker-color"]
        };
        assert_eq!(&d["colour"], hint, "{}", p["post_code"]);
    }
    // Keyboard: Tab to R05's uncovered piece and press Enter for its shifts.
    let piece = browser
        .client
        .find(Locator::Css(&format!(
            "#map path.feature[data-post-code='{}'][data-covered='false']",
            half.post_code
        )))
        .await
        .expect("R05's uncovered piece");
    browser.js("arguments[0].focus()", vec![json!(piece)]).await;
    piece
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    browser
        .until_js(
            "the shifts of the piece",
            Duration::from_secs(10),
            "return !!document.querySelector('#feature-body tr[data-shift-id]')",
        )
        .await;
    let shift_status = browser
        .js(
            &format!(
                "return document.querySelector('#feature-body tr[data-shift-id=\"{}\"] .badge').textContent",
                half.shift_ids[0]
            ),
            vec![],
        )
        .await;
    assert_eq!(shift_status, "partial");
    // The wheel and the keyboard move the map.
    let before = browser
        .js(
            "return document.querySelector('#map .feature.kind-kiosk').getAttribute('cx')",
            vec![],
        )
        .await;
    browser
        .js("document.getElementById('map').focus()", vec![])
        .await;
    browser
        .client
        .find(Locator::Id("map"))
        .await
        .unwrap()
        .send_keys(&char::from(Key::Right).to_string())
        .await
        .unwrap();
    browser
        .until_js(
            "the map to pan",
            Duration::from_secs(5),
            &format!(
                "return document.querySelector('#map .feature.kind-kiosk').getAttribute('cx') !== '{}'",
                before.as_str().unwrap()
            ),
        )
        .await;
    browser
        .client
        .find(Locator::Id("zoom-fit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.screenshot("coverage-map").await;

    // Compliance: the month of the failure, by police station, and its CSV.
    let month = half.from.with_timezone(&tz).format("%Y-%m").to_string();
    browser.show_compliance(&month, "police_station").await;
    let ranking = s
        .get(
            &format!("/api/v1/reports/compliance?month={month}&level=police_station"),
            &admin,
        )
        .await
        .body;
    let shown = browser
        .js(
            "return [...document.querySelectorAll('#ranking tbody tr')].map(r => r.dataset.unitCode)",
            vec![],
        )
        .await;
    let listed: Vec<Value> = ranking["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["unit_code"].clone())
        .collect();
    assert_eq!(shown, Value::Array(listed), "the ranking in its order");
    let bottom = browser
        .js(
            "return document.querySelectorAll('#ranking tbody tr.bottom2').length",
            vec![],
        )
        .await;
    let items = ranking["items"].as_array().unwrap();
    let marked = items.iter().filter(|r| r["bottom2"] == true).count();
    assert_eq!(bottom, json!(marked), "the units the API marks bottom 2");
    // The rank as shared ("=2" for a tie) and the score to 0.01 %, as the server compares
    // them: units ranked apart never read alike.
    let cells = browser.ranking_cells().await;
    let expected: Vec<Value> = items
        .iter()
        .map(|r| {
            let rank = match r["rank"].as_u64() {
                None => "—".to_owned(),
                Some(k) if r["tied_units"].as_u64().unwrap() > 1 => format!("={k}"),
                Some(k) => k.to_string(),
            };
            let score = r["score"].as_f64().map_or("—".to_owned(), |x| {
                format!("{:.2} %", (x * 10000.0).round() / 100.0)
            });
            json!([rank, score])
        })
        .collect();
    assert_eq!(cells, Value::Array(expected), "ranks and scores as shown");
    let note = browser.text_of("ranking-note").await;
    assert!(
        note.starts_with(&format!("{} unit", ranking["ranked_units"])),
        "{note}"
    );
    let gaps = browser
        .js(
            "return [...document.querySelectorAll('#gaps tbody tr')].map(r => r.dataset.postCode)",
            vec![],
        )
        .await;
    assert!(
        gaps.as_array().unwrap().contains(&json!("C03")),
        "the planted roster gap: {gaps}"
    );
    // The table lists past gaps only, as the ranking counts them; what is not rostered yet
    // is said apart, and the CSV has both in the table's local time, the zone named.
    let asked = s
        .get(
            &format!(
                "/api/v1/rosters/gaps?from={}&to={}",
                ts(month_start(&month, tz)),
                ts(month_start(&next_month(&month), tz))
            ),
            &admin,
        )
        .await
        .body;
    let all = asked["items"].as_array().unwrap();
    let past = all.iter().filter(|g| g["upcoming"] == false).count();
    let upcoming = all.len() - past;
    assert_eq!(
        gaps.as_array().unwrap().len(),
        past,
        "past gaps only: {gaps}"
    );
    let note = browser
        .js(
            "return document.getElementById('gaps-upcoming').textContent",
            vec![],
        )
        .await;
    assert_eq!(
        note.as_str()
            .unwrap()
            .starts_with("Not rostered yet, after now:"),
        upcoming > 0,
        "{note}"
    );
    let gaps_csv = browser
        .download("gaps-csv", &format!("roster-gaps-{month}.csv"))
        .await;
    let mut lines = gaps_csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "post_id,post_code,from (Asia/Shanghai),to (Asia/Shanghai),rostered,required,upcoming"
        )
    );
    let first = all.iter().find(|g| g["upcoming"] == false).unwrap();
    let local_s = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let row = lines
        .find(|l| l.starts_with(first["post_id"].as_str().unwrap()))
        .unwrap();
    assert!(
        row.contains(&format!(
            ",{},{},",
            local_s(&first["from"]),
            local_s(&first["to"])
        )),
        "{row} for {first}"
    );
    assert_eq!(gaps_csv.lines().count(), all.len() + 1, "{gaps_csv}");
    let squads = browser
        .js(
            "return document.querySelectorAll('#volunteers tbody tr').length",
            vec![],
        )
        .await;
    assert!(squads.as_u64().unwrap() > 0);
    browser.screenshot("compliance").await;
    let csv = browser
        .download(
            "ranking-csv",
            &format!("compliance-{month}-police_station.csv"),
        )
        .await;
    assert!(csv.starts_with("rank,unit_id,unit_code,"), "{csv}");
    assert_eq!(csv.lines().count(), listed_len(&ranking) + 1);
    browser.close().await;
}

/// Local midnight starting a `YYYY-MM` month.
fn month_start(month: &str, tz: chrono_tz::Tz) -> DateTime<Utc> {
    use chrono::TimeZone;
    let day = chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").unwrap();
    tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// The month after a `YYYY-MM` month.
fn next_month(month: &str) -> String {
    let (y, m) = month.split_once('-').unwrap();
    let (y, m): (i32, u32) = (y.parse().unwrap(), m.parse().unwrap());
    if m == 12 {
        format!("{}-01", y + 1)
    } else {
        format!("{y}-{:02}", m + 1)
    }
}

fn listed_len(ranking: &Value) -> usize {
    ranking["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_an_alert_removes_it_from_the_open_list() {
    let Some((s, admin, binaries)) = rostered_demo("acknowledge_alert").await else {
        return;
    };
    // An officer on duty at a kiosk sends an SOS: an alert is raised at once.
    let duty = OnDuty::at_a_kiosk(&s, &admin).await;
    let member_id = duty.member["id"].as_str().unwrap().to_owned();
    let sos = duty.check_in(&s, "sos").await;
    assert_eq!(sos.status, StatusCode::CREATED, "{sos:#?}");
    let mut alert_id = None;
    let started = Instant::now();
    while alert_id.is_none() {
        let open = s.get("/api/v1/alerts?state=open&kind=sos", &admin).await;
        assert_eq!(open.status, StatusCode::OK, "{open:#?}");
        alert_id = open.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["member_id"] == member_id.as_str())
            .map(|a| a["id"].as_str().unwrap().to_owned());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no SOS alert raised"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alert_id = alert_id.unwrap();

    let browser = Browser::start(binaries).await;
    browser.log_in(&s.base, "cmd.district").await;
    let row = format!("#alerts li[data-alert-id=\"{alert_id}\"]");
    // First in the list, whatever else is open: the demo's volunteers on duty without
    // fixes raise a flood of newer `member_silent` alerts at some hours of the day.
    browser
        .until_js(
            "the SOS alert first on the board",
            Duration::from_secs(10),
            &format!(
                "return !!document.querySelector('{row}') && \
                 document.querySelector('#alerts li').dataset.alertId === '{alert_id}'"
            ),
        )
        .await;
    browser.screenshot("alert-open").await;
    browser
        .client
        .find(Locator::Css(&format!("{row} button.ack")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until_js(
            "the acknowledge dialog",
            Duration::from_secs(5),
            "return document.getElementById('ack-dialog').open",
        )
        .await;
    let note = "Called the officer; patrol car on its way";
    let field = browser.client.find(Locator::Id("ack-note")).await.unwrap();
    field
        .send_keys(&format!("{note}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    browser
        .until_js(
            "the alert to leave the open list",
            Duration::from_secs(10),
            &format!(
                "return !document.querySelector('{row}') && !document.getElementById('ack-dialog').open"
            ),
        )
        .await;
    let open = s.get("/api/v1/alerts?state=open", &admin).await.body;
    assert!(
        !open["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == alert_id.as_str()),
        "still open: {open}"
    );
    let acked = s
        .get("/api/v1/alerts?state=acknowledged", &admin)
        .await
        .body;
    let acked = acked["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == alert_id.as_str())
        .expect("the alert is acknowledged")
        .clone();
    assert_eq!(acked["ack_note"], note);
    browser.screenshot("alert-acknowledged").await;
    browser.close().await;
}
