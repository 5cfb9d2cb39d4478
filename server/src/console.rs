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
    let router = serve_assets(Router::new(), ASSETS, &policy);
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

/// An embedded file ready to serve: its validator, and a gzip copy when that is smaller
/// (a phone on a slow network loads the whole app on its first visit).
pub(crate) struct Prepared {
    asset: &'static Asset,
    etag: String,
    gzip: Option<(axum::body::Bytes, String)>,
}

impl Prepared {
    fn new(asset: &'static Asset) -> Prepared {
        let tag = hex::encode(Sha256::digest(asset.body));
        let gzip = {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            std::io::Write::write_all(&mut encoder, asset.body)
                .and_then(|()| encoder.finish())
                .ok()
                .filter(|z| z.len() + 64 < asset.body.len())
                .map(|z| (z.into(), format!("\"{}-gz\"", &tag[..32])))
        };
        Prepared {
            asset,
            etag: format!("\"{}\"", &tag[..32]),
            gzip,
        }
    }

    /// Answers with the file, gzipped when the browser takes it, or 304 when the
    /// browser already has this version.
    fn serve(&self, headers: &HeaderMap, policy: &Policy) -> Response {
        let gzip = self.gzip.as_ref().filter(|_| accepts_gzip(headers));
        let etag = gzip.map_or(self.etag.as_str(), |(_, etag)| etag.as_str());
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else if let Some((body, _)) = gzip {
            (
                [
                    (header::CONTENT_TYPE, self.asset.content_type),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                body.clone(),
            )
                .into_response()
        } else {
            (
                [(header::CONTENT_TYPE, self.asset.content_type)],
                self.asset.body,
            )
                .into_response()
        };
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(etag) {
            h.insert(header::ETAG, v);
        }
        if self.gzip.is_some() {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        // Revalidate every time: a new binary must not run with yesterday's script.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        policy.apply(&mut response);
        response
    }
}

/// Whether the request's `Accept-Encoding` takes gzip (and does not refuse it with q=0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Adds a route for each file.
pub(crate) fn serve_assets(
    mut router: Router<AppState>,
    assets: impl IntoIterator<Item = &'static Asset>,
    policy: &Arc<Policy>,
) -> Router<AppState> {
    for asset in assets {
        let prepared = Arc::new(Prepared::new(asset));
        let policy = policy.clone();
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| {
                let (prepared, policy) = (prepared.clone(), policy.clone());
                async move { prepared.serve(&headers, &policy) }
            }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn gzip_is_sent_only_to_those_who_take_it() {
        assert!(accepts_gzip(&accept("gzip, deflate, br, zstd")));
        assert!(accepts_gzip(&accept("br;q=1.0, gzip;q=0.8")));
        assert!(accepts_gzip(&accept("*")));
        assert!(!accepts_gzip(&accept("gzip;q=0")));
        assert!(!accepts_gzip(&accept("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_file_of_the_console_is_served_whole_or_gzipped_smaller() {
        for asset in ASSETS {
            let p = Prepared::new(asset);
            if let Some((z, etag)) = &p.gzip {
                assert!(z.len() < asset.body.len(), "{}", asset.path);
                assert_ne!(etag, &p.etag);
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut out)
                    .unwrap();
                assert_eq!(out, asset.body);
            }
        }
    }
}
