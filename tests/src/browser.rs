//! A headless Chromium driven through chromedriver (WebDriver), for the browser tests of
//! the console and of the phone app.
//!
//! Chromium and chromedriver come from the distribution's packages (`chromium`,
//! `chromium-driver`); `PATROL_CHROMIUM` and `PATROL_CHROMEDRIVER` name other binaries.
//! Without them the tests print why and pass, except under `PATROL_REQUIRE_BROWSER=1` (as
//! CI sets), where a missing browser is a failure. They run in the SQLite pass only: the
//! pages are clients of the API, which the rest of the suite checks on both databases.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, wd::WebDriverCompatibleCommand};
use serde_json::{Value, json};

use crate::on_postgres;

/// The browser binaries, or why there are none.
pub fn browser_binaries() -> Result<(PathBuf, PathBuf), String> {
    let find = |env: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    };
    let chromium = find(
        "PATROL_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .ok_or("no chromium on PATH (install the distribution's chromium package)")?;
    let driver = find("PATROL_CHROMEDRIVER", &["chromedriver"])
        .ok_or("no chromedriver on PATH (install the distribution's chromium-driver package)")?;
    Ok((chromium, driver))
}

/// Whether this test should run; prints the reason when it should not.
pub fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    if on_postgres() {
        // The console is a client of the API, whose suite runs on both databases; loading
        // the demo again on PostgreSQL would test nothing the SQLite run does not.
        eprintln!("console test {test} skipped on PostgreSQL: it runs in the SQLite pass");
        return None;
    }
    match browser_binaries() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("PATROL_REQUIRE_BROWSER").is_ok_and(|v| v == "1") => {
            panic!("PATROL_REQUIRE_BROWSER=1 but {why}")
        }
        Err(why) => {
            eprintln!("console test {test} skipped: {why}");
            None
        }
    }
}

/// Where screenshots go: `target/console-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/console-… → target
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// A chromedriver process and one headless Chromium session on it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: tokio::process::Child,
    downloads: tempfile::TempDir,
}

impl Browser {
    /// A desktop-sized window, in English.
    pub async fn start(binaries: (PathBuf, PathBuf)) -> Browser {
        Browser::launch(
            binaries,
            &[
                "--window-size=1280,900".to_owned(),
                "--lang=en-GB".to_owned(),
            ],
            serde_json::Map::new(),
        )
        .await
    }

    /// A phone: 390×844 CSS pixels at 3× with touch, in Chinese.
    pub async fn start_phone(binaries: (PathBuf, PathBuf)) -> Browser {
        Browser::start_phone_with(binaries, &[]).await
    }

    /// A phone with more command-line switches for Chromium.
    pub async fn start_phone_with(binaries: (PathBuf, PathBuf), switches: &[String]) -> Browser {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "mobileEmulation".into(),
            json!({
                "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0, "touch": true},
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36",
            }),
        );
        let mut args = vec![
            "--window-size=390,844".to_owned(),
            "--lang=zh-CN".to_owned(),
        ];
        args.extend_from_slice(switches);
        Browser::launch(binaries, &args, extra).await
    }

    async fn launch(
        (chromium, driver): (PathBuf, PathBuf),
        window: &[String],
        extra: serde_json::Map<String, Value>,
    ) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let downloads = tempfile::tempdir().expect("download dir");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ];
        args.extend(window.iter().map(String::as_str));
        let mut options = json!({
            "binary": chromium,
            "args": args,
            "prefs": {
                "download.default_directory": downloads.path(),
                "download.prompt_for_download": false,
            },
        });
        if let Value::Object(o) = &mut options {
            o.extend(extra);
        }
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
            downloads,
        }
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp {
                body: json!({"cmd": cmd, "params": params}),
            })
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd} failed: {e}"))
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `check` holds, or fails after `timeout` naming `what`.
    pub async fn until<F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if check().await {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                let shot = self.screenshot("failure").await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}; screenshot {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a script returns true.
    pub async fn until_js(&self, what: &str, timeout: Duration, script: &str) -> Duration {
        self.until(what, timeout, || async {
            self.js(script, vec![]).await == Value::Bool(true)
        })
        .await
    }

    /// In the console, opens the compliance view and shows the ranking of `month`
    /// (`YYYY-MM`) at `level`, waiting until it is drawn.
    pub async fn show_compliance(&self, month: &str, level: &str) {
        self.client
            .find(Locator::Css("#nav a[data-view='compliance']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.until_js(
            "the default ranking",
            Duration::from_secs(60),
            "return !!document.getElementById('view-compliance').dataset.loaded",
        )
        .await;
        self.js(
            "document.getElementById('compliance-month').value = arguments[0];
             document.getElementById('compliance-level').value = arguments[1];
             document.getElementById('compliance-form').requestSubmit();",
            vec![Value::from(month), Value::from(level)],
        )
        .await;
        self.until_js(
            &format!("the ranking of {month} by {level}"),
            Duration::from_secs(60),
            &format!(
                "return document.getElementById('view-compliance').dataset.loaded === '{month}/{level}'"
            ),
        )
        .await;
    }

    /// The compliance ranking as drawn: each row's rank and score cells.
    pub async fn ranking_cells(&self) -> Value {
        self.js(
            "return [...document.querySelectorAll('#ranking tbody tr')]
               .map(r => [r.querySelector('td.rank').textContent, r.querySelector('td.score').textContent])",
            vec![],
        )
        .await
    }

    /// The text of the element `id`.
    pub async fn text_of(&self, id: &str) -> String {
        self.js(
            "return document.getElementById(arguments[0]).textContent",
            vec![Value::from(id)],
        )
        .await
        .as_str()
        .unwrap_or_else(|| panic!("no element {id}"))
        .to_owned()
    }

    /// Clicks the button `id` and reads the file it downloads as `name`.
    pub async fn download(&self, id: &str, name: &str) -> String {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let file = self.downloads.path().join(name);
        self.until(name, Duration::from_secs(10), || async { file.is_file() })
            .await;
        std::fs::read_to_string(&file).unwrap()
    }

    /// Saves a PNG of the window and prints its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        println!("screenshot: {}", path.display());
        path
    }
}

/// chromedriver's `goog/cdp/execute`: a DevTools command in the session's page.
#[derive(Debug)]
struct Cdp {
    body: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}
