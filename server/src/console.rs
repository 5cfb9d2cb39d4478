//! The commanders' console: plain HTML, CSS and JavaScript kept in `server/console/` and
//! embedded at compile time, served at `/` and under `/console/`. These routes are not
//! API: they stay out of the OpenAPI document, and every other unknown path still gets a
//! problem+json 404.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{settings::Settings, state::AppState};

/// One embedded file.
pub(crate) struct Asset {
    pub(crate) path: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static [u8],
}

pub(crate) const HTML: &str = "text/html; charset=utf-8";
pub(crate) const JS: &str = "text/javascript; charset=utf-8";
pub(crate) const CSS: &str = "text/css; charset=utf-8";

/// An embedded file of `server/console/`.
macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../console/", $file)),
        }
    };
}

/// Every file of the console, by the path it is served at. The message tables are the
/// phone app's, served at `/i18n/` for both.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", HTML),
    asset!("/console/style.css", "style.css", CSS),
    asset!("/console/icon.svg", "icon.svg", "image/svg+xml"),
    asset!("/console/app.js", "app.js", JS),
    asset!("/console/api.js", "api.js", JS),
    asset!("/console/events.js", "events.js", JS),
    asset!("/console/board.js", "board.js", JS),
    asset!("/console/map.js", "map.js", JS),
    asset!("/console/reports.js", "reports.js", JS),
    asset!("/console/util.js", "util.js", JS),
    Asset {
        path: "/i18n/zh-CN.js",
        content_type: JS,
        body: include_bytes!("../i18n/zh-CN.js"),
    },
    Asset {
        path: "/i18n/en.js",
        content_type: JS,
        body: include_bytes!("../i18n/en.js"),
    },
];

/// The message tables' contents, for the phone app's version.
pub(crate) fn shared_bodies() -> Vec<u8> {
    ASSETS
        .iter()
        .filter(|a| a.path.starts_with("/i18n/"))
        .flat_map(|a| a.body.iter().copied())
        .collect()
}

/// What the console needs to know about this server before anyone logs in.
#[derive(Serialize)]
struct ConsoleConfig<'a> {
    /// XYZ tile URL template of the background map, or null for a plain map.
    tile_url: Option<&'a str>,
    /// `PATROL_TIMEZONE`: days and months are counted in it.
    timezone: &'a str,
}

/// The Content-Security-Policy of every console response: scripts and styles only from
/// this origin (no inline script, no inline style attributes), API calls only to this
/// origin, images also from the tile server when one is configured.
pub fn content_security_policy(settings: &Settings) -> String {
    let tiles = settings
        .tile_url
        .as_ref()
        .map(|t| format!(" {}", t.origin()))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{tiles}; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// Headers every console response carries.
#[derive(Clone)]
pub(crate) struct Policy {
    pub(crate) csp: HeaderValue,
}

impl Policy {
    pub(crate) fn apply(&self, response: &mut Response) {
        let h = response.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
}

/// The console's routes, to merge beside the API.
pub fn router(settings: &Settings) -> Router<AppState> {
    let csp = HeaderValue::from_str(&content_security_policy(settings))
        .expect("the tile URL was checked when the settings were read");
    let policy = Arc::new(Policy { csp });
    let mut router = Router::new();
    for asset in ASSETS {
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(asset.body))[..32]);
        let policy = policy.clone();
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| {
                let policy = policy.clone();
                let etag = etag.clone();
                async move { serve_asset(asset, &etag, &headers, &policy) }
            }),
        );
    }
    router.route(
        "/console/config.json",
        get(move |State(state): State<AppState>| {
            let policy = policy.clone();
            async move {
                let config = ConsoleConfig {
                    tile_url: state.settings.tile_url.as_ref().map(|t| t.template()),
                    timezone: &state.settings.timezone,
                };
                let mut response =
                    ([(header::CACHE_CONTROL, "no-store")], axum::Json(config)).into_response();
                policy.apply(&mut response);
                response
            }
        }),
    )
}

/// Answers with an embedded file, or 304 when the browser already has this version.
pub(crate) fn serve_asset(
    asset: &Asset,
    etag: &str,
    headers: &HeaderMap,
    policy: &Policy,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: a new binary must not run with yesterday's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    policy.apply(&mut response);
    response
}
