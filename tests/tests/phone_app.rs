//! The phone app at `/app/`, used as a patrol officer uses it: a phone-sized Chromium
//! (390×844, touch, Chinese) whose position is set through the DevTools protocol and
//! whose network is cut by a switchable proxy between it and the server (and by the
//! browser's own offline emulation, so that the page also knows it is offline). Logging
//! in, going on duty, fixes arriving; five fixes queued offline, the app closed and
//! opened again from its cache with no network, and all five stored once when the
//! network returns; a login ended on the server keeping the queue; an SOS raising an
//! alert a commander sees; the English switch. Screenshots go to
//! `target/console-screenshots/app-*.png`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use api_tests::{
    TestServer,
    browser::{Browser, browser_or_skip},
};
use base64::Engine;
use fantoccini::Locator;
use patrol_server::demo::{self, DEMO_PASSWORD, DemoOptions};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::{net::TcpListener, sync::watch};

/// A TCP forwarder from a port of its own to the server that can be switched off: while
/// off it refuses nothing but closes every connection at once, and cuts those that are
/// open, as a phone in a tunnel sees it.
struct Network {
    port: u16,
    up: Arc<AtomicBool>,
    switch: watch::Sender<bool>,
}

impl Network {
    async fn to(server: std::net::SocketAddr) -> Network {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (switch, _) = watch::channel(true);
        let (flag, switch_rx) = (up.clone(), switch.subscribe());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut off = switch_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = off.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Network { port, up, switch }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        self.switch.send_replace(up);
    }
}

/// A member of a post's running shift, found on the demo's rosters.
struct Crew {
    username: String,
    member_id: String,
    post_code: String,
    lon: f64,
    lat: f64,
}

/// The demo's organisation and rosters with no simulated fixes, and an admin token.
async fn demo_server() -> (TestServer, String) {
    let s = TestServer::start().await;
    demo::load_with(
        &s.state,
        DemoOptions {
            past_days: 0,
            fixes: false,
        },
    )
    .await
    .expect("demo loads");
    let admin = demo_token(&s, "admin").await;
    (s, admin)
}

/// A demo account's access token.
async fn demo_token(s: &TestServer, username: &str) -> String {
    s.login(username, DEMO_PASSWORD).await.body["access_token"]
        .as_str()
        .expect("a demo login")
        .to_owned()
}

/// A crew member of a kiosk or checkpoint rostered now (`skip` of them passed over).
async fn crew_now(s: &TestServer, admin: &str, skip: usize) -> Crew {
    let now = s.get("/api/v1/status/now", admin).await.body;
    let post = now["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            (p["kind"] == "kiosk" || p["kind"] == "checkpoint")
                && p["required"].as_u64().unwrap_or(0) >= 1
        })
        .expect("a kiosk or checkpoint rostered now")
        .clone();
    let shift = s
        .get(
            &format!("/api/v1/shifts/{}", post["shift_ids"][0].as_str().unwrap()),
            admin,
        )
        .await
        .body;
    let mut crew: Vec<Value> = shift["member_ids"].as_array().unwrap().clone();
    if let Some(team) = shift["team_id"].as_str() {
        let team = s.get(&format!("/api/v1/teams/{team}"), admin).await.body;
        crew.extend(team["member_ids"].as_array().unwrap().iter().cloned());
    }
    let member_id = crew[skip].as_str().unwrap().to_owned();
    let member = s
        .get(&format!("/api/v1/members/{member_id}"), admin)
        .await
        .body;
    let post_body = s
        .get(
            &format!("/api/v1/posts/{}", post["post_id"].as_str().unwrap()),
            admin,
        )
        .await
        .body;
    let at = &post_body["geometry"]["coordinates"];
    Crew {
        username: member["username"].as_str().unwrap().to_owned(),
        member_id,
        post_code: post["post_code"].as_str().unwrap().to_owned(),
        lon: at[0].as_f64().unwrap(),
        lat: at[1].as_f64().unwrap(),
    }
}

/// The member's fixes as the server holds them.
async fn fixes_of(s: &TestServer, admin: &str, member_id: &str) -> Vec<Value> {
    s.get(
        &format!("/api/v1/checkins?member_id={member_id}&limit=1000"),
        admin,
    )
    .await
    .body["items"]
        .as_array()
        .expect("a list of fixes")
        .clone()
}

/// A crew member of a post rostered now, at their post with a phone on the app's login,
/// whose network runs through a switch.
struct Street {
    s: TestServer,
    admin: String,
    crew: Crew,
    net: Network,
    base: String,
    phone: Browser,
}

impl Street {
    async fn start(binaries: (std::path::PathBuf, std::path::PathBuf)) -> Street {
        let (s, admin) = demo_server().await;
        let crew = crew_now(&s, &admin, 0).await;
        let net = Network::to(s.base.trim_start_matches("http://").parse().unwrap()).await;
        let base = net.base();
        let phone = Browser::start_phone(binaries).await;
        phone.allow_location(&base).await;
        phone.place(crew.lat, crew.lon, 6.0).await;
        phone.open_app(&base).await;
        Street {
            s,
            admin,
            crew,
            net,
            base,
            phone,
        }
    }
}

/// Waits until the member has a fix of `kind` on the server.
async fn until_fix(
    browser: &Browser,
    s: &TestServer,
    admin: &str,
    member_id: &str,
    kind: &str,
    what: &str,
) {
    browser
        .until(what, Duration::from_secs(20), || async {
            fixes_of(s, admin, member_id)
                .await
                .iter()
                .any(|f| f["kind"] == kind)
        })
        .await;
}

/// The phone's steps.
trait Phone {
    async fn open_app(&self, base: &str);
    async fn allow_location(&self, base: &str);
    async fn place(&self, lat: f64, lon: f64, accuracy: f64);
    async fn offline(&self, off: bool);
    async fn tap(&self, css: &str);
    async fn type_into(&self, css: &str, text: &str);
    async fn log_in(&self, username: &str, password: &str);
    async fn text(&self, css: &str) -> String;
    async fn queued(&self) -> u64;
    async fn until_queued(&self, n: u64, what: &str);
    async fn policy_kept(&self);
    async fn finish(self);
}

impl Phone for Browser {
    async fn open_app(&self, base: &str) {
        self.client
            .goto(&format!("{base}/app/"))
            .await
            .expect("open the app");
        self.until_js(
            "the app to start",
            Duration::from_secs(20),
            "return document.body.dataset.ready === 'true'",
        )
        .await;
    }

    async fn allow_location(&self, base: &str) {
        self.cdp(
            "Browser.grantPermissions",
            json!({"origin": base, "permissions": ["geolocation"]}),
        )
        .await;
    }

    async fn place(&self, lat: f64, lon: f64, accuracy: f64) {
        self.cdp(
            "Emulation.setGeolocationOverride",
            json!({"latitude": lat, "longitude": lon, "accuracy": accuracy}),
        )
        .await;
    }

    async fn offline(&self, off: bool) {
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({"offline": off, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
        )
        .await;
    }

    async fn tap(&self, css: &str) {
        // As a thumb does: scroll the button to the middle, clear of the tab bar.
        self.js(
            "const n = document.querySelector(arguments[0]); if (n) n.scrollIntoView({block: 'center'}); return true",
            vec![json!(css)],
        )
        .await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("tap {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn log_in(&self, username: &str, password: &str) {
        self.type_into("#login-form input[name=username]", username)
            .await;
        self.type_into("#login-form input[name=password]", password)
            .await;
        self.tap("#login-form button[type=submit]").await;
        self.until_js(
            "the login to open Today",
            Duration::from_secs(20),
            "return document.body.dataset.view === 'today'",
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        self.js(
            "const n = document.querySelector(arguments[0]); return n ? n.textContent : null",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn queued(&self) -> u64 {
        self.text("[data-queue]")
            .await
            .trim()
            .parse()
            .unwrap_or(u64::MAX)
    }

    async fn until_queued(&self, n: u64, what: &str) {
        self.until(what, Duration::from_secs(30), || async {
            self.queued().await == n
        })
        .await;
    }

    async fn policy_kept(&self) {
        let violations = self
            .js(
                "return document.body.dataset.policyViolations || '0'",
                vec![],
            )
            .await;
        assert_eq!(violations, "0", "Content-Security-Policy violations");
    }

    /// Checks the policy and ends the session, so that no Chromium outlives its test.
    async fn finish(self) {
        self.policy_kept().await;
        let _ = self.client.clone().close().await;
    }
}

/// Metres north as degrees of latitude.
fn north(m: f64) -> f64 {
    m / 111_195.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_installable_and_served_with_a_strict_policy() {
    let s = TestServer::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = s.base.clone();

    let moved = http.get(format!("{base}/app")).send().await.unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/app/");

    let page = http.get(format!("{base}/app/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(rule), "{rule} in {csp}");
    }
    let html = page.text().await.unwrap();
    assert!(html.contains("<html lang=\"zh-CN\">"), "Chinese first");
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline code"
    );

    let manifest: Value = http
        .get(format!("{base}/app/manifest.webmanifest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["name"], "巡防");
    assert_eq!(manifest["start_url"], "/app/");
    assert_eq!(manifest["scope"], "/app/");
    assert_eq!(manifest["display"], "standalone");
    assert_eq!(manifest["lang"], "zh-CN");
    assert!(manifest["theme_color"].as_str().is_some());
    for icon in manifest["icons"].as_array().unwrap() {
        let res = http
            .get(format!("{base}{}", icon["src"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{icon}");
        let body = res.bytes().await.unwrap();
        if icon["type"] == "image/png" {
            // The PNG header's width and height are the size the manifest says.
            let w = u32::from_be_bytes(body[16..20].try_into().unwrap());
            let h = u32::from_be_bytes(body[20..24].try_into().unwrap());
            assert_eq!(icon["sizes"], format!("{w}x{h}"));
        }
    }

    // The worker caches every file of the shell, each of which is served, and names its
    // cache by a version that the config repeats.
    let worker = http.get(format!("{base}/app/sw.js")).send().await.unwrap();
    assert_eq!(worker.headers()["cache-control"], "no-cache");
    let worker = worker.text().await.unwrap();
    let shell = worker
        .lines()
        .find_map(|l| l.strip_prefix("const SHELL = "))
        .expect("the shell list");
    let shell: Vec<String> = serde_json::from_str(shell.trim_end_matches(';')).unwrap();
    assert!(shell.len() >= 10);
    for path in &shell {
        let res = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let config: Value = http
        .get(format!("{base}/app/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = config["version"].as_str().unwrap();
    assert!(worker.contains(&format!("const VERSION = '{version}'")));
    assert_eq!(config["timezone"], "Asia/Shanghai");
    assert_eq!(config["max_accuracy_m"], 50.0);

    // Text files go gzipped to a browser that takes it, whole to one that does not.
    let zipped = http
        .get(format!("{base}/app/app.js"))
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["vary"], "accept-encoding");
    let plain = http.get(format!("{base}/app/app.js")).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(zipped.bytes().await.unwrap().len() * 2 < plain.bytes().await.unwrap().len());

    // The console sends officers, volunteers and kiosk crews here.
    let console = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(console.contains("href=\"/app/\""));

    // Not API: the document does not list the app.
    let doc = s.get("/api/v1/openapi.json", "").await.body;
    assert!(
        doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|p| !p.starts_with("/app"))
    );
    // Hostile paths and methods get problems, not files.
    for path in ["/app/..%2Fsw.js", "/app/sw.js/x", "/app/%00"] {
        let res = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let posted = http
        .post(format!("{base}/app/"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
    assert_eq!(posted.headers()["content-type"], "application/problem+json");
    // A stale validator gets the file; a current one gets 304.
    let etag = http
        .get(format!("{base}/app/"))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .clone();
    let again = http
        .get(format!("{base}/app/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // An unknown file under /app/ is a problem+json 404, as everywhere.
    let missing = http
        .get(format!("{base}/app/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_goes_on_duty_queues_offline_and_every_fix_is_stored_once() {
    let Some(binaries) = browser_or_skip("an_officer_goes_on_duty") else {
        return;
    };
    let Street {
        s,
        admin,
        crew,
        net,
        base,
        phone,
    } = Street::start(binaries).await;
    assert_eq!(
        phone
            .js("return document.documentElement.lang", vec![])
            .await,
        "zh-CN"
    );
    assert_eq!(phone.text("#login-form button[type=submit]").await, "登录");
    phone.screenshot("app-login").await;
    let first_load = transferred(&phone).await;
    println!("app first load: {first_load} bytes transferred");
    assert!(
        first_load < 150_000,
        "the app's first load is {first_load} bytes"
    );
    phone.log_in(&crew.username, DEMO_PASSWORD).await;
    phone
        .until(
            "the running shift's post",
            Duration::from_secs(15),
            || async { phone.text("#shift-card").await.contains(&crew.post_code) },
        )
        .await;

    // On duty: the on_duty fix reaches the server, and the app says it was delivered.
    phone.tap("[data-action=on_duty]").await;
    until_fix(
        &phone,
        &s,
        &admin,
        &crew.member_id,
        "on_duty",
        "the on-duty fix on the server",
    )
    .await;
    phone
        .until(
            "the app to say delivered",
            Duration::from_secs(10),
            || async { phone.text("#action-result").await.contains("已送达") },
        )
        .await;
    phone.until_queued(0, "an empty queue").await;
    let on_duty = fixes_of(&s, &admin, &crew.member_id).await;
    let fix = on_duty.iter().find(|f| f["kind"] == "on_duty").unwrap();
    assert!((fix["lat"].as_f64().unwrap() - crew.lat).abs() < 1e-6);
    assert_eq!(fix["accuracy_m"], 6.0);
    assert!(fix["shift_id"].is_string() && fix["post_id"].is_string());

    // Moving 25 m (over the 20 m setting) sends a ping at once.
    phone.place(crew.lat + north(25.0), crew.lon, 6.0).await;
    until_fix(
        &phone,
        &s,
        &admin,
        &crew.member_id,
        "ping",
        "a ping after 25 m",
    )
    .await;
    phone.screenshot("app-on-duty").await;
    let before = fixes_of(&s, &admin, &crew.member_id).await.len();

    // The network goes: five moves make five fixes that wait on the phone.
    net.set(false);
    phone.offline(true).await;
    for step in 1..=5u32 {
        phone
            .place(
                crew.lat + north(25.0 + 25.0 * f64::from(step)),
                crew.lon,
                6.0,
            )
            .await;
        phone
            .until_queued(u64::from(step), &format!("{step} fixes queued"))
            .await;
    }
    phone
        .until(
            "the app to say it is offline",
            Duration::from_secs(5),
            || async { phone.text("#net").await == "离线" },
        )
        .await;
    phone.screenshot("app-offline-queue").await;
    let queued = read_outbox(&phone).await;
    assert_eq!(queued.len(), 5, "five fixes in IndexedDB");
    assert_eq!(fixes_of(&s, &admin, &crew.member_id).await.len(), before);

    // The app is closed and opened again with no network: the service worker serves it,
    // and the queue is still there.
    phone.client.goto("about:blank").await.unwrap();
    phone.open_app(&base).await;
    println!(
        "app opened from its cache with no network: interactive after {} ms",
        phone
            .js("return document.body.dataset.readyMs", vec![])
            .await
    );
    assert_eq!(
        phone.js("return document.body.dataset.view", vec![]).await,
        "today",
        "the login outlives closing the app"
    );
    // Still on duty, the reopened app takes a position at once: that one waits too.
    phone
        .until(
            "the queue after reopening",
            Duration::from_secs(30),
            || async { phone.queued().await >= 5 },
        )
        .await;
    let waiting = read_outbox(&phone).await;
    assert!(queued.iter().all(|id| waiting.contains(id)), "nothing lost");

    // The network returns: every waiting fix is stored, once.
    phone.offline(false).await;
    net.set(true);
    phone.until_queued(0, "the queue to drain").await;
    let stored = fixes_of(&s, &admin, &crew.member_id).await;
    assert!(stored.len() >= before + waiting.len());
    for id in &waiting {
        assert_eq!(
            stored
                .iter()
                .filter(|f| f["client_id"] == id.as_str())
                .count(),
            1,
            "{id} stored once"
        );
    }
    let mut ids: Vec<&str> = stored
        .iter()
        .map(|f| f["client_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), stored.len(), "no fix stored twice");

    // Off duty ends tracking: moving on sends nothing more.
    phone.tap("[data-action=off_duty]").await;
    until_fix(
        &phone,
        &s,
        &admin,
        &crew.member_id,
        "off_duty",
        "the off-duty fix",
    )
    .await;
    let after = fixes_of(&s, &admin, &crew.member_id).await.len();
    phone.place(crew.lat + north(400.0), crew.lon, 6.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fixes_of(&s, &admin, &crew.member_id).await.len(), after);
    phone.finish().await;
}

/// Bytes the page and everything it loaded took over the network (headers included).
async fn transferred(phone: &Browser) -> u64 {
    // Resources load on; wait until the service worker has fetched the shell too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    phone
        .js(
            "return performance.getEntriesByType('navigation')
               .concat(performance.getEntriesByType('resource'))
               .reduce((sum, e) => sum + (e.transferSize || 0), 0)",
            vec![],
        )
        .await
        .as_u64()
        .expect("a byte count")
}

/// The client_ids waiting in the app's IndexedDB queue.
async fn read_outbox(phone: &Browser) -> Vec<String> {
    phone
        .js(
            "window.__outbox = null;
             const req = indexedDB.open('patrol');
             req.onsuccess = () => {
               const all = req.result.transaction('outbox').objectStore('outbox').getAllKeys();
               all.onsuccess = () => { window.__outbox = all.result; };
             };
             return true;",
            vec![],
        )
        .await;
    phone
        .until("the outbox to be read", Duration::from_secs(5), || async {
            phone.js("return window.__outbox !== null", vec![]).await == json!(true)
        })
        .await;
    serde_json::from_value(phone.js("return window.__outbox", vec![]).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_ended_on_the_server_keeps_the_queue_until_the_next_login() {
    let Some(binaries) = browser_or_skip("a_login_ended_on_the_server") else {
        return;
    };
    let Street {
        s,
        admin,
        crew,
        net,
        phone,
        ..
    } = Street::start(binaries).await;
    phone.log_in(&crew.username, DEMO_PASSWORD).await;

    // An access token the server no longer takes (as one expired mid-send): the batch is
    // answered 401, the app refreshes and sends it again.
    phone
        .js(
            "const s = JSON.parse(localStorage.getItem('patrol.session'));
             s.access = 'expired.' + s.access; s.expires_at = Date.now() + 3600000;
             localStorage.setItem('patrol.session', JSON.stringify(s)); return true;",
            vec![],
        )
        .await;
    phone.tap("[data-action=depart]").await;
    until_fix(
        &phone,
        &s,
        &admin,
        &crew.member_id,
        "depart",
        "the departure after a refresh",
    )
    .await;
    phone.until_queued(0, "the departure sent").await;
    let access = phone
        .js(
            "return JSON.parse(localStorage.getItem('patrol.session')).access",
            vec![],
        )
        .await;
    assert!(!access.as_str().unwrap().starts_with("expired."));

    // Offline, the member arrives: one fix waits.
    net.set(false);
    phone.offline(true).await;
    phone.tap("[data-action=arrive]").await;
    phone.until_queued(1, "the arrival queued").await;

    // Meanwhile the phone is reported lost and every login of the member is ended.
    let ended = s
        .delete(
            &format!("/api/v1/members/{}/sessions", crew.member_id),
            &admin,
        )
        .await;
    assert!(ended.status.is_success(), "{:?}", ended.body);

    // Back online: the refresh is refused, the app asks for the login and keeps the fix.
    phone.offline(false).await;
    net.set(true);
    phone
        .until_js(
            "the login form",
            Duration::from_secs(30),
            "return document.body.dataset.view === 'login'",
        )
        .await;
    assert!(
        phone.text("#login-note").await.contains('1'),
        "says one waits"
    );
    assert_eq!(read_outbox(&phone).await.len(), 1);
    assert!(
        fixes_of(&s, &admin, &crew.member_id)
            .await
            .iter()
            .all(|f| f["kind"] != "arrive")
    );

    // Logging in again sends it.
    phone.log_in(&crew.username, DEMO_PASSWORD).await;
    phone.until_queued(0, "the queue to drain").await;
    let stored = fixes_of(&s, &admin, &crew.member_id).await;
    assert_eq!(stored.iter().filter(|f| f["kind"] == "arrive").count(), 1);
    phone.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sos_raises_an_open_alert_a_commander_sees() {
    let Some(binaries) = browser_or_skip("an_sos_raises_an_open_alert") else {
        return;
    };
    let (s, admin) = demo_server().await;
    let crew = crew_now(&s, &admin, 0).await;
    let base = s.base.clone();
    let phone = Browser::start_phone(binaries).await;
    phone.allow_location(&base).await;
    phone.place(crew.lat, crew.lon, 7.0).await;
    phone.open_app(&base).await;
    phone.log_in(&crew.username, DEMO_PASSWORD).await;

    // One deliberate action: the button asks, the confirmation sends.
    phone.tap("[data-action=sos]").await;
    assert_eq!(
        phone.js("return document.body.dataset.view", vec![]).await,
        "sos"
    );
    phone.screenshot("app-sos-confirm").await;
    phone.tap("[data-action=sos_confirm]").await;
    let commander = demo_token(&s, "cmd.district").await;
    phone
        .until("an open SOS alert", Duration::from_secs(30), || async {
            s.get("/api/v1/alerts?state=open&limit=100", &commander)
                .await
                .body["items"]
                .as_array()
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|a| a["kind"] == "sos" && a["member_id"] == crew.member_id.as_str())
                })
        })
        .await;
    phone
        .until(
            "the app to say the SOS was delivered",
            Duration::from_secs(10),
            || async { phone.text("#sos-status").await.contains("已送达") },
        )
        .await;
    phone.screenshot("app-sos-sent").await;

    // It keeps sending every 10 s until cancelled.
    phone.place(crew.lat + north(5.0), crew.lon, 7.0).await;
    phone
        .until("a second SOS fix", Duration::from_secs(25), || async {
            fixes_of(&s, &admin, &crew.member_id)
                .await
                .iter()
                .filter(|f| f["kind"] == "sos")
                .count()
                >= 2
        })
        .await;
    phone.tap("[data-action=sos_cancel]").await;
    assert!(phone.text("#action-result").await.contains("求救已取消"));
    let sent = fixes_of(&s, &admin, &crew.member_id)
        .await
        .iter()
        .filter(|f| f["kind"] == "sos")
        .count();
    phone.place(crew.lat + north(10.0), crew.lon, 7.0).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        fixes_of(&s, &admin, &crew.member_id)
            .await
            .iter()
            .filter(|f| f["kind"] == "sos")
            .count(),
        sent,
        "nothing after the cancel"
    );

    // For the background, the member makes a key of their own and gets the code that
    // configures Traccar Client.
    phone.tap("#tabs a[data-view=settings]").await;
    phone
        .tap("#view-settings [data-action=show_background]")
        .await;
    phone.tap("[data-action=key_create]").await;
    phone
        .until("the QR code", Duration::from_secs(15), || async {
            phone
                .js(
                    "return document.getElementById('key-qr').src.startsWith('data:image/')",
                    vec![],
                )
                .await
                == json!(true)
        })
        .await;
    let link = phone.text("#key-traccar").await;
    assert!(
        link.starts_with(&format!("{base}/osmand?id="))
            && link.contains("&interval=30&distance=20"),
        "{link}"
    );
    let keys = s
        .get(
            &format!("/api/v1/members/{}/device-keys", crew.member_id),
            &admin,
        )
        .await
        .body;
    assert_eq!(keys["items"].as_array().unwrap().len(), 1, "{keys}");
    // The key the code carries reports for this member over the OsmAnd protocol.
    let key = link
        .split("id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .unwrap()
        .to_owned();
    let osmand = reqwest::Client::new()
        .get(format!(
            "{base}/osmand?id={key}&lat={}&lon={}&timestamp={}",
            crew.lat,
            crew.lon,
            chrono::Utc::now().timestamp()
        ))
        .send()
        .await
        .unwrap();
    assert!(osmand.status().is_success(), "{}", osmand.status());
    phone.js("window.scrollTo(0, 0); return true", vec![]).await;
    phone.screenshot("app-background").await;
    phone.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_is_a_choice_the_device_remembers() {
    let Some(binaries) = browser_or_skip("english_is_a_choice") else {
        return;
    };
    let s = TestServer::start().await;
    let base = s.base.clone();
    let phone = Browser::start_phone(binaries).await;
    phone.open_app(&base).await;
    assert_eq!(phone.text("#view-login h1").await, "登录");
    phone.tap("#view-login [data-action=lang]").await;
    assert_eq!(phone.text("#view-login h1").await, "Log in");
    assert_eq!(
        phone
            .js("return document.documentElement.lang", vec![])
            .await,
        "en"
    );
    phone.client.refresh().await.unwrap();
    phone.open_app(&base).await;
    assert_eq!(phone.text("#view-login h1").await, "Log in");
    assert_eq!(phone.text("[data-action=lang]").await, "中文");
    phone.screenshot("app-login-en").await;
    phone.tap("#view-login [data-action=lang]").await;
    assert_eq!(phone.text("#view-login h1").await, "登录");
    phone.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_app_locates_installs_its_worker_and_checks_in() {
    let Some(binaries) = browser_or_skip("over_https_the_app") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    patrol_server::tls::write_self_signed(dir.path(), &hosts, 30, false).expect("certificate");
    let files = patrol_server::settings::TlsFiles {
        cert: dir.path().join(patrol_server::tls::CERT_FILE),
        key: dir.path().join(patrol_server::tls::KEY_FILE),
    };
    let s = TestServer::start_with(|settings| settings.tls = Some(files)).await;
    assert!(s.base.starts_with("https://"));
    demo::load_with(
        &s.state,
        DemoOptions {
            past_days: 0,
            fixes: false,
        },
    )
    .await
    .expect("demo loads");
    let admin = demo_token(&s, "admin").await;
    let crew = crew_now(&s, &admin, 0).await;

    // The phone trusts the server's key, as one that installed the certificate does.
    let key = std::fs::read_to_string(dir.path().join(patrol_server::tls::KEY_FILE)).unwrap();
    let spki =
        rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::from_pem(&key).unwrap());
    let pin = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki));
    let phone = Browser::start_phone_with(
        binaries,
        &[format!("--ignore-certificate-errors-spki-list={pin}")],
    )
    .await;
    let base = s.base.replace("127.0.0.1", "localhost");
    phone.allow_location(&base).await;
    phone.place(crew.lat, crew.lon, 4.0).await;
    phone.open_app(&base).await;
    assert_eq!(
        phone.js("return window.isSecureContext", vec![]).await,
        json!(true)
    );
    phone.log_in(&crew.username, DEMO_PASSWORD).await;
    phone.tap("[data-action=arrive]").await;
    until_fix(
        &phone,
        &s,
        &admin,
        &crew.member_id,
        "arrive",
        "the arrival over https",
    )
    .await;
    phone
        .until_js(
            "the service worker to take the page",
            Duration::from_secs(20),
            "return Boolean(navigator.serviceWorker && navigator.serviceWorker.controller)",
        )
        .await;
    phone.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_tablet_hands_duty_over_from_one_officer_to_the_next() {
    let Some(binaries) = browser_or_skip("a_kiosk_tablet_hands_duty_over") else {
        return;
    };
    let (s, admin) = demo_server().await;
    let first = crew_now(&s, &admin, 0).await;
    let second = crew_now(&s, &admin, 1).await;
    assert_eq!(first.post_code, second.post_code);
    // The next officer signs on with a PIN set in the app beforehand.
    let token = demo_token(&s, &second.username).await;
    let pin = s
        .send(
            reqwest::Method::PUT,
            "/api/v1/me/pin",
            Some(&token),
            Some(json!({"pin": "2580", "password": DEMO_PASSWORD})),
        )
        .await;
    assert_eq!(pin.status, 204, "{:?}", pin.body);

    let base = s.base.clone();
    let tablet = Browser::start_phone(binaries).await;
    tablet.allow_location(&base).await;
    tablet.place(first.lat, first.lon, 5.0).await;
    tablet.open_app(&base).await;

    // A commander registers the tablet for the post, in the app's settings.
    tablet.log_in("cmd.district", DEMO_PASSWORD).await;
    tablet.tap("#tabs a[data-view=settings]").await;
    tablet.tap("[data-action=kiosk_setup]").await;
    tablet
        .until("the kiosk posts to choose from", Duration::from_secs(15), || async {
            tablet
                .js(
                    "return [...document.querySelectorAll('#kiosk-setup-form option')].some(o => o.textContent.startsWith(arguments[0] + ' '))",
                    vec![json!(first.post_code)],
                )
                .await
                == json!(true)
        })
        .await;
    tablet
        .js(
            "const s = document.querySelector('#kiosk-setup-form select');
             s.value = [...s.options].find(o => o.textContent.startsWith(arguments[0] + ' ')).value;
             return true;",
            vec![json!(first.post_code)],
        )
        .await;
    tablet.tap("#kiosk-setup-form button[type=submit]").await;
    tablet
        .until_js(
            "kiosk mode",
            Duration::from_secs(15),
            "return document.body.dataset.view === 'kiosk'",
        )
        .await;
    tablet
        .until("the post on the kiosk", Duration::from_secs(15), || async {
            tablet.text("#kiosk-post").await.contains(&first.post_code)
        })
        .await;
    // The commander's login did not stay on the shared device.
    assert_eq!(
        tablet
            .js("return localStorage.getItem('patrol.session')", vec![])
            .await,
        Value::Null
    );

    // The first officer signs on with the password: on duty, and counted while signed on.
    tablet
        .type_into("#kiosk-sign-on input[name=username]", &first.username)
        .await;
    tablet.tap("#kiosk-sign-on input[value=password]").await;
    tablet
        .type_into("#kiosk-sign-on input[name=secret]", DEMO_PASSWORD)
        .await;
    tablet.tap("#kiosk-sign-on button[type=submit]").await;
    tablet
        .until(
            "the first officer signed on",
            Duration::from_secs(15),
            || async {
                tablet
                    .text("#kiosk-on")
                    .await
                    .contains(&display(&s, &admin, &first).await)
            },
        )
        .await;
    tablet.place(first.lat + north(25.0), first.lon, 5.0).await;
    tablet
        .until(
            "a ping for the first officer",
            Duration::from_secs(20),
            || async {
                let fixes = fixes_of(&s, &admin, &first.member_id).await;
                fixes.iter().any(|f| f["kind"] == "on_duty")
                    && fixes.iter().any(|f| f["kind"] == "ping")
            },
        )
        .await;
    tablet
        .js("window.scrollTo(0, 0); return true", vec![])
        .await;
    tablet.screenshot("app-kiosk").await;

    // Handover: the first signs off, the next signs on with the PIN.
    tablet
        .tap("#kiosk-on button[data-action=kiosk_sign_off]")
        .await;
    until_fix(
        &tablet,
        &s,
        &admin,
        &first.member_id,
        "off_duty",
        "the first officer's off-duty fix",
    )
    .await;
    let first_count = fixes_of(&s, &admin, &first.member_id).await.len();
    tablet
        .type_into("#kiosk-sign-on input[name=username]", &second.username)
        .await;
    tablet.tap("#kiosk-sign-on input[value=pin]").await;
    tablet
        .type_into("#kiosk-sign-on input[name=secret]", "2580")
        .await;
    tablet.tap("#kiosk-sign-on button[type=submit]").await;
    let second_name = display(&s, &admin, &second).await;
    tablet
        .until(
            "the next officer signed on",
            Duration::from_secs(15),
            || async { tablet.text("#kiosk-on").await.contains(&second_name) },
        )
        .await;
    tablet.place(first.lat + north(50.0), first.lon, 5.0).await;
    until_fix(
        &tablet,
        &s,
        &admin,
        &second.member_id,
        "ping",
        "a ping for the next officer",
    )
    .await;
    tablet.until_queued(0, "the tablet's queue to drain").await;
    assert_eq!(
        fixes_of(&s, &admin, &first.member_id).await.len(),
        first_count,
        "nothing counts for the officer who signed off"
    );
    tablet
        .js("window.scrollTo(0, 0); return true", vec![])
        .await;
    tablet.screenshot("app-kiosk-handover").await;
    tablet.finish().await;
}

/// A crew member's display name.
async fn display(s: &TestServer, admin: &str, crew: &Crew) -> String {
    s.get(&format!("/api/v1/members/{}", crew.member_id), admin)
        .await
        .body["display_name"]
        .as_str()
        .unwrap()
        .to_owned()
}
