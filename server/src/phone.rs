//! The phone app for patrol officers, volunteers and kiosk crews: plain HTML, CSS and
//! JavaScript kept in `server/app/` and embedded at compile time, served under `/app/`.
//! Its service worker caches the app shell so that the app opens with no network; the
//! worker's script carries a version made from the files' contents, so that a binary
//! with new files makes every installed app fetch them. Not API: these routes stay out
//! of the OpenAPI document.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect},
    routing::get,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    console::{Asset, CSS, HTML, JS, Policy, serve_assets},
    settings::Settings,
    state::AppState,
};

/// An embedded file of `server/app/`.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../app/", $file)),
        }
    };
}

/// Every file of the app shell, by the path it is served at. The service worker caches
/// all of them, and the message tables of `/i18n/`.
const ASSETS: &[Asset] = &[
    asset!("/app/", "index.html", HTML),
    asset!("/app/style.css", "style.css", CSS),
    asset!("/app/app.js", "app.js", JS),
    asset!("/app/api.js", "api.js", JS),
    asset!("/app/queue.js", "queue.js", JS),
    asset!("/app/duty.js", "duty.js", JS),
    asset!("/app/map.js", "map.js", JS),
    asset!("/app/kiosk.js", "kiosk.js", JS),
    asset!("/app/i18n.js", "i18n.js", JS),
    asset!("/app/util.js", "util.js", JS),
    asset!("/app/vendor/qrcode.mjs", "vendor/qrcode.mjs", JS),
    asset!("/app/icon.svg", "icon.svg", "image/svg+xml"),
    asset!("/app/icon-192.png", "icon-192.png", "image/png"),
    asset!("/app/icon-512.png", "icon-512.png", "image/png"),
    asset!(
        "/app/manifest.webmanifest",
        "manifest.webmanifest",
        "application/manifest+json"
    ),
];

/// The message tables the app loads, served by the console's router.
const SHARED: &[&str] = &["/i18n/zh-CN.js", "/i18n/en.js"];

/// The service worker's source; `__VERSION__` and `__SHELL__` are filled in at start.
const WORKER: &str = include_str!("../app/sw.js");

/// What the app needs to know about this server before anyone logs in.
#[derive(Serialize)]
struct AppConfig<'a> {
    /// XYZ tile URL template of the background map, or null for a plain map.
    tile_url: Option<&'a str>,
    /// `PATROL_TIMEZONE`: the app shows times in it.
    timezone: &'a str,
    /// The version of the app's files, as the service worker names its cache.
    version: &'a str,
    /// `PATROL_MAX_ACCURACY_M`: a fix less accurate than this does not count.
    max_accuracy_m: f64,
}

/// The Content-Security-Policy of the app: the console's, plus its manifest and its
/// service worker from this origin.
pub fn content_security_policy(settings: &Settings) -> String {
    format!(
        "{}; manifest-src 'self'; worker-src 'self'",
        crate::console::content_security_policy(settings)
    )
}

/// A digest of every file the app is made of: the service worker's cache name.
fn version() -> String {
    let mut digest = Sha256::new();
    for asset in ASSETS {
        digest.update(asset.path.as_bytes());
        digest.update(asset.body);
    }
    digest.update(crate::console::shared_bodies());
    digest.update(WORKER.as_bytes());
    hex::encode(digest.finalize())[..16].to_owned()
}

/// The service worker's script with its version and the list of files it caches.
fn worker_script(version: &str) -> String {
    let shell: Vec<&str> = ASSETS
        .iter()
        .map(|a| a.path)
        .chain(SHARED.iter().copied())
        .collect();
    WORKER.replace("__VERSION__", version).replace(
        "__SHELL__",
        &serde_json::to_string(&shell).expect("paths serialise"),
    )
}

/// The app's routes, to merge beside the API.
pub fn router(settings: &Settings) -> Router<AppState> {
    let csp = HeaderValue::from_str(&content_security_policy(settings))
        .expect("the tile URL was checked when the settings were read");
    let policy = Arc::new(Policy { csp });
    let version: &'static str = Box::leak(version().into_boxed_str());
    let worker: &'static Asset = Box::leak(Box::new(Asset {
        path: "/app/sw.js",
        content_type: JS,
        body: Box::leak(worker_script(version).into_bytes().into_boxed_slice()),
    }));
    let router = serve_assets(
        Router::new().route("/app", get(|| async { Redirect::permanent("/app/") })),
        ASSETS.iter().chain(std::iter::once(worker)),
        &policy,
    );
    router.route(
        "/app/config.json",
        get(move |State(state): State<AppState>| {
            let policy = policy.clone();
            async move {
                let config = AppConfig {
                    tile_url: state.settings.tile_url.as_ref().map(|t| t.template()),
                    timezone: &state.settings.timezone,
                    version,
                    max_accuracy_m: state.settings.max_accuracy_m,
                };
                let mut response =
                    ([(header::CACHE_CONTROL, "no-store")], axum::Json(config)).into_response();
                policy.apply(&mut response);
                response
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_names_every_file_of_the_shell_and_its_version() {
        let script = worker_script("abc123");
        assert!(!script.contains("__VERSION__") && !script.contains("__SHELL__"));
        assert!(script.contains("'abc123'"));
        for asset in ASSETS {
            assert!(
                script.contains(&format!("\"{}\"", asset.path)),
                "{}",
                asset.path
            );
        }
        for path in SHARED {
            assert!(script.contains(&format!("\"{path}\"")), "{path}");
        }
    }

    /// The keys of a message table (`  'key': 'text',` lines).
    fn keys(table: &str) -> std::collections::BTreeSet<String> {
        table
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('\''))
            .filter_map(|l| l.split_once("':").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// The literal keys a file asks for: `data-i18n="key"` and `t('key'` (the function
    /// `t`, not the end of another name).
    fn used(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (open, close) in [("data-i18n=\"", '"'), ("t('", '\'')] {
            for (at, _) in text.match_indices(open) {
                let before = text[..at].chars().next_back();
                if open == "t('"
                    && before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                {
                    continue;
                }
                if let Some((key, _)) = text[at + open.len()..].split_once(close) {
                    out.push(key.to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn both_languages_have_every_message_the_app_asks_for() {
        let zh = keys(include_str!("../i18n/zh-CN.js"));
        let en = keys(include_str!("../i18n/en.js"));
        assert!(zh.len() > 100, "{}", zh.len());
        assert_eq!(zh, en, "the same keys in both tables");
        let mut asked = 0;
        for asset in ASSETS.iter().filter(|a| !a.path.contains("/vendor/")) {
            let Ok(text) = std::str::from_utf8(asset.body) else {
                continue;
            };
            for key in used(text) {
                asked += 1;
                assert!(zh.contains(&key), "{} asks for {key}", asset.path);
            }
        }
        assert!(asked > 100, "{asked}");
    }

    #[test]
    fn the_version_follows_the_files() {
        assert_eq!(version(), version());
        assert_eq!(version().len(), 16);
    }
}
