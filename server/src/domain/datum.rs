//! Datum conversion between WGS-84, GCJ-02 and BD-09.
//!
//! Phone map SDKs in China report positions in GCJ-02 (Amap/Gaode, Tencent, Google in China)
//! or BD-09 (Baidu). Both are deliberate, smooth obfuscations of WGS-84 defined only by
//! publicly reverse-engineered formulas:
//!
//! * WGS-84 → GCJ-02 is the well-known "eviltransform" formula (Krasovsky-style constants
//!   `a = 6378245.0`, `ee = 0.00669342162296594323`), an offset of roughly 20–730 m inside
//!   China. Its inverse has no closed form; [`gcj02_to_wgs84`] solves it by fixed-point
//!   iteration (the offset varies slowly, so it converges in two or three steps to 1e-9°).
//! * GCJ-02 ↔ BD-09 are the standard closed formulas with `x_pi = π·3000/180`. The standard
//!   BD-09 → GCJ-02 formula is itself only an approximate inverse (off by up to ~0.24 m).
//!
//! Every conversion leaves points outside the conventional China rectangle
//! ([`out_of_china`]) unchanged, as the GCJ-02 definition does.

use std::f64::consts::PI;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::geodesy::LonLat;

/// Semi-major axis used by the GCJ-02 formula (Krasovsky 1940).
const GCJ_A: f64 = 6_378_245.0;
/// Eccentricity squared used by the GCJ-02 formula (published as 0.00669342162296594323).
const GCJ_EE: f64 = 0.006_693_421_622_965_943;
/// The BD-09 angular constant `π · 3000 / 180`.
const X_PI: f64 = PI * 3000.0 / 180.0;
/// Convergence threshold of the iterative GCJ-02 inverse, in degrees (≈ 0.1 mm).
const GCJ_INVERSE_TOLERANCE_DEG: f64 = 1e-9;
/// Iteration cap of the GCJ-02 inverse (it normally stops after 2–3 iterations).
const GCJ_INVERSE_MAX_ITER: usize = 30;

/// A coordinate reference system a client may report positions in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Datum {
    /// WGS-84, what GPS receivers and this service use internally.
    Wgs84,
    /// GCJ-02 ("Mars coordinates"), used by Amap/Gaode, Tencent and other Chinese map SDKs.
    Gcj02,
    /// BD-09, used by the Baidu map SDK.
    Bd09,
}

impl Datum {
    /// Converts a position given in this datum to WGS-84.
    pub fn to_wgs84(self, p: LonLat) -> LonLat {
        match self {
            Datum::Wgs84 => p,
            Datum::Gcj02 => gcj02_to_wgs84(p),
            Datum::Bd09 => bd09_to_wgs84(p),
        }
    }

    /// Converts a WGS-84 position to this datum.
    pub fn from_wgs84(self, p: LonLat) -> LonLat {
        match self {
            Datum::Wgs84 => p,
            Datum::Gcj02 => wgs84_to_gcj02(p),
            Datum::Bd09 => wgs84_to_bd09(p),
        }
    }

    /// The lowercase name used on the wire: "wgs84", "gcj02" or "bd09".
    pub fn as_str(self) -> &'static str {
        match self {
            Datum::Wgs84 => "wgs84",
            Datum::Gcj02 => "gcj02",
            Datum::Bd09 => "bd09",
        }
    }
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True outside the conventional GCJ-02 rectangle (lon 72.004–137.8347, lat 0.8293–55.8271);
/// such points are never shifted. NaN coordinates count as outside.
pub fn out_of_china(p: LonLat) -> bool {
    !((72.004..=137.8347).contains(&p.lon) && (0.8293..=55.8271).contains(&p.lat))
}

/// The published latitude polynomial of the GCJ-02 offset (in "metres on a unit scale").
fn transform_lat(x: f64, y: f64) -> f64 {
    let mut r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    r
}

/// The published longitude polynomial of the GCJ-02 offset.
fn transform_lon(x: f64, y: f64) -> f64 {
    let mut r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    r
}

/// The GCJ-02 offset `(dlon, dlat)` in degrees at a WGS-84 position (no rectangle check).
fn gcj_delta(p: LonLat) -> (f64, f64) {
    let dlat = transform_lat(p.lon - 105.0, p.lat - 35.0);
    let dlon = transform_lon(p.lon - 105.0, p.lat - 35.0);
    let rad_lat = p.lat / 180.0 * PI;
    let s = rad_lat.sin();
    let magic = 1.0 - GCJ_EE * s * s;
    let sqrt_magic = magic.sqrt();
    let dlat = (dlat * 180.0) / ((GCJ_A * (1.0 - GCJ_EE)) / (magic * sqrt_magic) * PI);
    let dlon = (dlon * 180.0) / (GCJ_A / sqrt_magic * rad_lat.cos() * PI);
    (dlon, dlat)
}

/// WGS-84 → GCJ-02 (the published "eviltransform" formula).
pub fn wgs84_to_gcj02(p: LonLat) -> LonLat {
    if out_of_china(p) {
        return p;
    }
    let (dlon, dlat) = gcj_delta(p);
    LonLat::new(p.lon + dlon, p.lat + dlat)
}

/// GCJ-02 → WGS-84 by fixed-point iteration of the forward formula, until the forward image
/// is within 1e-9° (≈ 0.1 mm) of the input; round-trip error is far below 0.5 m.
pub fn gcj02_to_wgs84(p: LonLat) -> LonLat {
    if out_of_china(p) {
        return p;
    }
    // Start from p − (forward(p) − p), then correct by the residual of the forward image.
    let (dlon, dlat) = gcj_delta(p);
    let mut w = LonLat::new(p.lon - dlon, p.lat - dlat);
    for _ in 0..GCJ_INVERSE_MAX_ITER {
        let (dlon, dlat) = gcj_delta(w);
        let err_lon = w.lon + dlon - p.lon;
        let err_lat = w.lat + dlat - p.lat;
        if err_lon.abs() < GCJ_INVERSE_TOLERANCE_DEG && err_lat.abs() < GCJ_INVERSE_TOLERANCE_DEG {
            break;
        }
        w.lon -= err_lon;
        w.lat -= err_lat;
    }
    w
}

/// GCJ-02 → BD-09 (the standard closed formula).
pub fn gcj02_to_bd09(p: LonLat) -> LonLat {
    if out_of_china(p) {
        return p;
    }
    let (x, y) = (p.lon, p.lat);
    let z = x.hypot(y) + 0.00002 * (y * X_PI).sin();
    let theta = y.atan2(x) + 0.000003 * (x * X_PI).cos();
    LonLat::new(z * theta.cos() + 0.0065, z * theta.sin() + 0.006)
}

/// BD-09 → GCJ-02 (the standard closed formula; an approximate inverse good to ~0.24 m).
pub fn bd09_to_gcj02(p: LonLat) -> LonLat {
    if out_of_china(p) {
        return p;
    }
    let (x, y) = (p.lon - 0.0065, p.lat - 0.006);
    let z = x.hypot(y) - 0.00002 * (y * X_PI).sin();
    let theta = y.atan2(x) - 0.000003 * (x * X_PI).cos();
    LonLat::new(z * theta.cos(), z * theta.sin())
}

/// BD-09 → WGS-84 (BD-09 → GCJ-02 → WGS-84).
pub fn bd09_to_wgs84(p: LonLat) -> LonLat {
    gcj02_to_wgs84(bd09_to_gcj02(p))
}

/// WGS-84 → BD-09 (WGS-84 → GCJ-02 → BD-09).
pub fn wgs84_to_bd09(p: LonLat) -> LonLat {
    gcj02_to_bd09(wgs84_to_gcj02(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::geodesy::distance_m;
    use proptest::prelude::*;

    fn ll(lon: f64, lat: f64) -> LonLat {
        LonLat::new(lon, lat)
    }

    fn assert_close_deg(got: LonLat, want: LonLat, tol: f64) {
        assert!(
            (got.lon - want.lon).abs() < tol && (got.lat - want.lat).abs() < tol,
            "got {got:?}, want {want:?} (tolerance {tol}°)"
        );
    }

    /// Major cities (WGS-84) used for sanity checks.
    const CITIES: [(&str, f64, f64); 10] = [
        ("Xi'an", 108.95, 34.22),
        ("Beijing", 116.39, 39.91),
        ("Shanghai", 121.47, 31.23),
        ("Guangzhou", 113.26, 23.13),
        ("Chengdu", 104.07, 30.67),
        ("Harbin", 126.63, 45.75),
        ("Urumqi", 87.62, 43.82),
        ("Lhasa", 91.11, 29.65),
        ("Kunming", 102.71, 25.04),
        ("Haikou", 110.35, 20.02),
    ];

    // ---- published reference values -------------------------------------------------------

    /// Published: the test vectors of the eviltransform project (googollee/eviltransform,
    /// go/transform_test.go and python/test.py): (wgsLat, wgsLng) → (gcjLat, gcjLng).
    const EVILTRANSFORM_VECTORS: [(f64, f64, f64, f64); 3] = [
        (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215), // Shanghai
        (22.543847, 113.912316, 22.540796131694766, 113.9171764808363), // Shenzhen
        (39.911954, 116.377817, 39.91334545536069, 116.38404722455657), // Beijing
    ];

    #[test]
    fn published_eviltransform_vectors_forward() {
        for (wlat, wlon, glat, glon) in EVILTRANSFORM_VECTORS {
            assert_close_deg(wgs84_to_gcj02(ll(wlon, wlat)), ll(glon, glat), 1e-9);
        }
    }

    #[test]
    fn published_eviltransform_vectors_inverse() {
        for (wlat, wlon, glat, glon) in EVILTRANSFORM_VECTORS {
            let back = gcj02_to_wgs84(ll(glon, glat));
            let err = distance_m(back, ll(wlon, wlat));
            assert!(err < 0.01, "{err} m");
        }
    }

    /// Published: the README / test fixtures of wandergis/coordtransform (also reused by
    /// hutool's CoordinateUtil tests) for the input (116.404, 39.915), and the composite
    /// wgs84_to_bd09 value from the geocraft README.
    #[test]
    fn published_coordtransform_vectors() {
        let p = ll(116.404, 39.915);
        assert_close_deg(
            wgs84_to_gcj02(p),
            ll(116.41024449916938, 39.91640428150164),
            1e-9,
        );
        assert_close_deg(
            gcj02_to_bd09(p),
            ll(116.41036949371029, 39.92133699351021),
            1e-9,
        );
        assert_close_deg(
            bd09_to_gcj02(p),
            ll(116.39762729119315, 39.90865673957631),
            1e-9,
        );
        assert_close_deg(
            wgs84_to_bd09(p),
            ll(116.41662724378733, 39.922699552216216),
            1e-9,
        );
    }

    /// Published vs exact: coordtransform's gcj02ToWgs84(116.404, 39.915) is the one-step
    /// approximation p − δ(p) = (116.39775550083061, 39.91359571849836), whose forward image
    /// misses the input by ~0.1 m; the iterative inverse hits it to 1e-9°.
    #[test]
    fn iterative_inverse_improves_on_published_one_step_value() {
        let p = ll(116.404, 39.915);
        let one_step = ll(116.39775550083061, 39.91359571849836);
        let exact = gcj02_to_wgs84(p);
        assert_close_deg(wgs84_to_gcj02(exact), p, 1e-9);
        let one_step_miss = distance_m(wgs84_to_gcj02(one_step), p);
        assert!(one_step_miss > 0.05, "{one_step_miss}");
        let diff = distance_m(exact, one_step);
        assert!(diff < 1.0, "{diff}");
    }

    // ---- internal consistency and hand cases ----------------------------------------------

    #[test]
    fn out_of_china_rectangle_edges() {
        assert!(!out_of_china(ll(108.95, 34.22)));
        assert!(!out_of_china(ll(72.004, 30.0)));
        assert!(!out_of_china(ll(137.8347, 30.0)));
        assert!(!out_of_china(ll(100.0, 0.8293)));
        assert!(!out_of_china(ll(100.0, 55.8271)));
        assert!(out_of_china(ll(72.003, 30.0)));
        assert!(out_of_china(ll(137.835, 30.0)));
        assert!(out_of_china(ll(100.0, 0.8292)));
        assert!(out_of_china(ll(100.0, 55.8272)));
        assert!(out_of_china(ll(-0.1278, 51.5074))); // London
        assert!(out_of_china(ll(139.69, 35.69))); // Tokyo
        assert!(out_of_china(ll(f64::NAN, 30.0)));
        // The rectangle is crude: Seoul is inside it and gets shifted too.
        assert!(!out_of_china(ll(126.98, 37.57)));
    }

    #[test]
    fn points_outside_china_are_unchanged_hand_cases() {
        for p in [
            ll(-0.1278, 51.5074),
            ll(139.69, 35.69),
            ll(151.21, -33.87),
            ll(0.0, 0.0),
        ] {
            assert_eq!(wgs84_to_gcj02(p), p);
            assert_eq!(gcj02_to_wgs84(p), p);
            assert_eq!(gcj02_to_bd09(p), p);
            assert_eq!(bd09_to_gcj02(p), p);
            assert_eq!(wgs84_to_bd09(p), p);
            assert_eq!(bd09_to_wgs84(p), p);
            for d in [Datum::Wgs84, Datum::Gcj02, Datum::Bd09] {
                assert_eq!(d.to_wgs84(p), p);
                assert_eq!(d.from_wgs84(p), p);
            }
        }
    }

    /// Sanity: GCJ-02 offsets in major cities are a few hundred metres (100–700 m) and BD-09
    /// adds roughly another 0.0065°/0.006° (so 0.7–1.5 km from WGS-84).
    #[test]
    fn offset_magnitudes_in_major_cities() {
        for (name, lon, lat) in CITIES {
            let p = ll(lon, lat);
            let gcj = distance_m(p, wgs84_to_gcj02(p));
            assert!(
                (100.0..=700.0).contains(&gcj),
                "{name}: GCJ-02 offset {gcj} m"
            );
            let bd = distance_m(p, wgs84_to_bd09(p));
            assert!(
                (700.0..=1500.0).contains(&bd),
                "{name}: BD-09 offset {bd} m"
            );
        }
    }

    #[test]
    fn city_round_trips() {
        for (name, lon, lat) in CITIES {
            let p = ll(lon, lat);
            let g = distance_m(p, gcj02_to_wgs84(wgs84_to_gcj02(p)));
            let b = distance_m(p, bd09_to_wgs84(wgs84_to_bd09(p)));
            assert!(g < 1e-3, "{name}: GCJ-02 round trip {g} m");
            assert!(b < 0.5, "{name}: BD-09 round trip {b} m");
        }
    }

    #[test]
    fn datum_names_and_serde() {
        for (d, s) in [
            (Datum::Wgs84, "wgs84"),
            (Datum::Gcj02, "gcj02"),
            (Datum::Bd09, "bd09"),
        ] {
            assert_eq!(d.as_str(), s);
            assert_eq!(d.to_string(), s);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<Datum>(&format!("\"{s}\"")).unwrap(),
                d
            );
        }
        assert!(serde_json::from_str::<Datum>("\"WGS84\"").is_err());
        assert!(serde_json::from_str::<Datum>("\"utm\"").is_err());
    }

    #[test]
    fn datum_conversions_dispatch() {
        let p = ll(108.95, 34.22);
        assert_eq!(Datum::Wgs84.to_wgs84(p), p);
        assert_eq!(Datum::Gcj02.to_wgs84(p), gcj02_to_wgs84(p));
        assert_eq!(Datum::Bd09.to_wgs84(p), bd09_to_wgs84(p));
        assert_eq!(Datum::Gcj02.from_wgs84(p), wgs84_to_gcj02(p));
        assert_eq!(Datum::Bd09.from_wgs84(p), wgs84_to_bd09(p));
        for d in [Datum::Wgs84, Datum::Gcj02, Datum::Bd09] {
            assert!(distance_m(d.to_wgs84(d.from_wgs84(p)), p) < 0.5);
        }
    }

    /// Deterministic sweep over a 0.25° grid covering the China rectangle (0.02° inside its
    /// edges) that measures the worst round-trip errors (run with `--nocapture`).
    #[test]
    fn round_trip_worst_case_sweep() {
        let (mut worst_gcj, mut worst_bd) = (0.0_f64, 0.0_f64);
        let (mut min_off, mut max_off) = (f64::INFINITY, 0.0_f64);
        let mut lat = 0.8493;
        while lat <= 55.8071 {
            let mut lon = 72.024;
            while lon <= 137.8147 {
                let p = ll(lon, lat);
                let g = wgs84_to_gcj02(p);
                worst_gcj = worst_gcj.max(distance_m(p, gcj02_to_wgs84(g)));
                worst_bd = worst_bd.max(distance_m(p, bd09_to_wgs84(gcj02_to_bd09(g))));
                let off = distance_m(p, g);
                min_off = min_off.min(off);
                max_off = max_off.max(off);
                lon += 0.25;
            }
            lat += 0.25;
        }
        println!(
            "datum sweep: worst GCJ-02 round trip {worst_gcj:.3e} m, worst BD-09 round trip \
             {worst_bd:.3e} m, GCJ-02 offsets {min_off:.1}..{max_off:.1} m"
        );
        assert!(worst_gcj < 1e-3);
        assert!(worst_bd < 0.5);
        assert!(max_off < 750.0);
    }

    // ---- properties -------------------------------------------------------------------------

    /// Anywhere in the China rectangle, 0.02° inside its edges (closer to the edge the shifted
    /// point can leave the rectangle, where the definition stops shifting).
    fn in_china() -> impl Strategy<Value = LonLat> {
        (72.024f64..137.8147, 0.8493f64..55.8071).prop_map(|(lon, lat)| ll(lon, lat))
    }

    /// Anywhere on Earth outside the China rectangle.
    fn outside_china() -> impl Strategy<Value = LonLat> {
        prop_oneof![
            (-180.0f64..72.0, -90.0f64..90.0),
            (137.84f64..180.0, -90.0f64..90.0),
            (72.0f64..137.84, -90.0f64..0.82),
            (72.0f64..137.84, 55.83f64..90.0),
        ]
        .prop_map(|(lon, lat)| ll(lon, lat))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// wgs → gcj → wgs returns within 0.5 m (in practice within a millimetre).
        #[test]
        fn prop_gcj02_round_trip(p in in_china()) {
            let back = gcj02_to_wgs84(wgs84_to_gcj02(p));
            let err = distance_m(p, back);
            prop_assert!(err < 0.5, "{err} m");
            prop_assert!(err < 1e-3, "{err} m");
        }

        /// gcj → wgs → gcj: the iterative inverse is a true inverse of the forward formula.
        #[test]
        fn prop_gcj02_inverse_hits_input(p in in_china()) {
            let w = gcj02_to_wgs84(p);
            let g = wgs84_to_gcj02(w);
            prop_assert!((g.lon - p.lon).abs() < 1e-8 && (g.lat - p.lat).abs() < 1e-8);
        }

        /// wgs → bd → wgs returns within 0.5 m.
        #[test]
        fn prop_bd09_round_trip(p in in_china()) {
            let back = bd09_to_wgs84(wgs84_to_bd09(p));
            let err = distance_m(p, back);
            prop_assert!(err < 0.5, "{err} m");
        }

        /// GCJ-02 shifts every point in China, by at most ~730 m.
        #[test]
        fn prop_gcj02_offset_magnitude(p in in_china()) {
            let off = distance_m(p, wgs84_to_gcj02(p));
            prop_assert!(off > 0.0 && off < 750.0, "{off} m");
        }

        /// Every conversion leaves points outside China untouched.
        #[test]
        fn prop_outside_china_unchanged(p in outside_china()) {
            prop_assert!(out_of_china(p));
            prop_assert_eq!(wgs84_to_gcj02(p), p);
            prop_assert_eq!(gcj02_to_wgs84(p), p);
            prop_assert_eq!(gcj02_to_bd09(p), p);
            prop_assert_eq!(bd09_to_gcj02(p), p);
            prop_assert_eq!(wgs84_to_bd09(p), p);
            prop_assert_eq!(bd09_to_wgs84(p), p);
        }
    }
}
