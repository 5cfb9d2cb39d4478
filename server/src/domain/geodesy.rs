//! WGS-84 distances and a local metric projection for a district.
//!
//! Everything here works in one of two spaces:
//!
//! * geographic: [`LonLat`], WGS-84 longitude/latitude in degrees (GeoJSON order), with
//!   ellipsoidal (geodesic) distances from [`distance_m`];
//! * projected: plain `(x, y)` pairs in metres east/north of a district origin, produced by
//!   [`LocalProjection`]. Within 50 km of the origin, Euclidean distances in this plane agree
//!   with geodesic distances to better than 0.01 % (the contract is 0.1 %), so all the segment
//!   geometry ([`point_segment_distance`], [`segment_segment_distance`], [`MeasuredLine`]) can
//!   be done with cheap planar arithmetic.
//!
//! The projection is a transverse Mercator (Gauss–Krüger, scale 1 on the central meridian)
//! centred on the origin's meridian, with a false northing that puts the origin at (0, 0).
//! Its point scale is `1 + x²/(2R²) + …`, i.e. at most about 1.000031 at 50 km east or west
//! of the origin, and it is conformal, so the distance error is bounded by that scale error.

use geo::{Distance, Geodesic, Point};

/// WGS-84 semi-major axis in metres.
const WGS84_A: f64 = 6_378_137.0;
/// WGS-84 flattening.
const WGS84_F: f64 = 1.0 / 298.257_223_563;
/// First eccentricity squared, `f (2 − f)`.
const E2: f64 = WGS84_F * (2.0 - WGS84_F);
/// Second eccentricity squared, `e² / (1 − e²)`.
const EP2: f64 = E2 / (1.0 - E2);
/// Third flattening `n = f / (2 − f)`, the small parameter of the meridian-arc series.
const N3: f64 = WGS84_F / (2.0 - WGS84_F);
/// Rectifying radius: meridian arc length per radian of rectifying latitude.
const RECT_A: f64 = WGS84_A / (1.0 + N3) * (1.0 + N3 * N3 / 4.0 + N3 * N3 * N3 * N3 / 64.0);
/// Helmert series coefficients of the meridian arc, `M = A (φ + Σ B_k sin 2kφ)`.
const ARC_B: [f64; 4] = [
    -(1.5 * N3 - 9.0 / 16.0 * N3 * N3 * N3),
    15.0 / 16.0 * N3 * N3 - 15.0 / 32.0 * N3 * N3 * N3 * N3,
    -35.0 / 48.0 * N3 * N3 * N3,
    315.0 / 512.0 * N3 * N3 * N3 * N3,
];
/// Inverse series (rectifying latitude μ → latitude φ), `φ = μ + Σ D_k sin 2kμ`.
const FOOT_D: [f64; 4] = [
    1.5 * N3 - 27.0 / 32.0 * N3 * N3 * N3,
    21.0 / 16.0 * N3 * N3 - 55.0 / 32.0 * N3 * N3 * N3 * N3,
    151.0 / 96.0 * N3 * N3 * N3,
    1097.0 / 512.0 * N3 * N3 * N3 * N3,
];

/// A WGS-84 position in degrees, longitude first (GeoJSON order).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LonLat {
    /// Longitude in degrees, positive east.
    pub lon: f64,
    /// Latitude in degrees, positive north.
    pub lat: f64,
}

impl LonLat {
    /// A position from longitude and latitude in degrees.
    pub const fn new(lon: f64, lat: f64) -> Self {
        Self { lon, lat }
    }
}

impl From<LonLat> for Point<f64> {
    fn from(p: LonLat) -> Self {
        Point::new(p.lon, p.lat)
    }
}

impl From<Point<f64>> for LonLat {
    fn from(p: Point<f64>) -> Self {
        Self::new(p.x(), p.y())
    }
}

/// Ellipsoidal (geodesic, Karney 2013) distance in metres between two WGS-84 positions.
pub fn distance_m(a: LonLat, b: LonLat) -> f64 {
    Geodesic.distance(Point::from(a), Point::from(b))
}

/// An upper bound of [`distance_m`] that costs two `sin_cos` instead of an iterative
/// geodesic: the length of a path on the ellipsoid from `a` to `b`, along a meridian from one
/// latitude to the other and along the parallel of whichever latitude makes it shorter (the
/// shorter way round). No path is shorter than the geodesic, so the bound is never below
/// the distance; it equals it for two points on one meridian and exceeds it by at most
/// about √2 for nearby points. For deciding that two fixes are close enough without the
/// exact distance, as the speed rule mostly does.
pub fn distance_upper_bound_m(a: LonLat, b: LonLat) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let ((s1, c1), (s2, c2)) = (p1.sin_cos(), p2.sin_cos());
    let along_meridian = (meridian_arc(p2, s2, c2) - meridian_arc(p1, s1, c1)).abs();
    // A parallel is a circle of radius N cos φ, N the prime vertical radius of curvature.
    let parallel_radius = |s: f64, c: f64| WGS84_A * c.abs() / (1.0 - E2 * s * s).sqrt();
    let radius = parallel_radius(s1, c1).min(parallel_radius(s2, c2));
    let along_parallel = radius * wrap_dlon(b.lon - a.lon).abs();
    // Rounding and the arc series' micrometres must not take the bound under the distance.
    (along_meridian + along_parallel) * (1.0 + 1e-9) + 1e-3
}

/// Sum of the geodesic lengths of the segments of a polyline, in metres.
pub fn polyline_length_m(points: &[LonLat]) -> f64 {
    points.windows(2).map(|w| distance_m(w[0], w[1])).sum()
}

/// Meridian arc length in metres from the equator to latitude `phi` (radians), given its sine
/// and cosine (Helmert's series in the third flattening; error well below 1 µm).
#[inline]
fn meridian_arc(phi: f64, s: f64, c: f64) -> f64 {
    let s2 = 2.0 * s * c;
    let c2 = (c - s) * (c + s);
    let s4 = 2.0 * s2 * c2;
    let c4 = (c2 - s2) * (c2 + s2);
    let s6 = s4 * c2 + c4 * s2;
    let s8 = 2.0 * s4 * c4;
    RECT_A * (phi + ARC_B[0] * s2 + ARC_B[1] * s4 + ARC_B[2] * s6 + ARC_B[3] * s8)
}

/// Latitude (radians) whose meridian arc from the equator is `m` metres.
#[inline]
fn footpoint_latitude(m: f64) -> f64 {
    let mu = m / RECT_A;
    let (s, c) = mu.sin_cos();
    let s2 = 2.0 * s * c;
    let c2 = (c - s) * (c + s);
    let s4 = 2.0 * s2 * c2;
    let c4 = (c2 - s2) * (c2 + s2);
    let s6 = s4 * c2 + c4 * s2;
    let s8 = 2.0 * s4 * c4;
    mu + FOOT_D[0] * s2 + FOOT_D[1] * s4 + FOOT_D[2] * s6 + FOOT_D[3] * s8
}

/// Longitude difference in radians, wrapped into [−π, π].
#[inline]
fn wrap_dlon(dlon_deg: f64) -> f64 {
    let mut d = dlon_deg;
    if d > 180.0 {
        d -= 360.0;
    } else if d < -180.0 {
        d += 360.0;
    }
    d.to_radians()
}

/// A transverse Mercator (Gauss–Krüger) projection centred on a district origin: metres east
/// and north of the origin, scale 1 on the origin's meridian.
///
/// Within 50 km of the origin, Euclidean distances between projected points agree with
/// [`distance_m`] to within about 0.003 % and `to_lonlat(to_xy(p))` returns `p` to well under
/// a millimetre. Far outside that range the series lose accuracy; do not use one projection
/// for a whole province.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalProjection {
    origin: LonLat,
    /// Meridian arc from the equator to the origin's latitude (the false northing).
    m0: f64,
}

impl LocalProjection {
    /// A projection whose origin maps to (0, 0).
    pub fn new(origin: LonLat) -> Self {
        let phi0 = origin.lat.to_radians();
        let (s, c) = phi0.sin_cos();
        Self {
            origin,
            m0: meridian_arc(phi0, s, c),
        }
    }

    /// The origin this projection is centred on.
    pub fn origin(&self) -> LonLat {
        self.origin
    }

    /// Projects a WGS-84 position to metres east (`x`) and north (`y`) of the origin.
    ///
    /// One `sin_cos`, one `sqrt` and about sixty flops; no allocation.
    #[inline]
    pub fn to_xy(&self, p: LonLat) -> (f64, f64) {
        let phi = p.lat.to_radians();
        let l = wrap_dlon(p.lon - self.origin.lon);
        let (s, c) = phi.sin_cos();
        let t2 = (s * s) / (c * c);
        let eta2 = EP2 * c * c;
        let nu = WGS84_A / (1.0 - E2 * s * s).sqrt();
        let m = meridian_arc(phi, s, c);

        // Redfearn's series in A = Δλ·cos φ (exact to O(A⁷); the A⁷ term is < 1e-9 m here).
        let a = l * c;
        let a2 = a * a;
        let x = nu
            * a
            * (1.0
                + a2 / 6.0 * (1.0 - t2 + eta2)
                + a2 * a2 / 120.0 * (5.0 - 18.0 * t2 + t2 * t2 + 14.0 * eta2 - 58.0 * t2 * eta2));
        let y = m - self.m0
            + nu * s
                * c
                * l
                * l
                * (0.5
                    + a2 / 24.0 * (5.0 - t2 + 9.0 * eta2 + 4.0 * eta2 * eta2)
                    + a2 * a2 / 720.0
                        * (61.0 - 58.0 * t2 + t2 * t2 + 270.0 * eta2 - 330.0 * t2 * eta2));
        (x, y)
    }

    /// Inverse of [`LocalProjection::to_xy`]: the WGS-84 position `x` metres east and `y`
    /// metres north of the origin.
    pub fn to_lonlat(&self, x: f64, y: f64) -> LonLat {
        let phi1 = footpoint_latitude(self.m0 + y);
        let (s, c) = phi1.sin_cos();
        let t = s / c;
        let t2 = t * t;
        let eta2 = EP2 * c * c;
        let w = 1.0 - E2 * s * s;
        let nu = WGS84_A / w.sqrt();
        let rho = nu * (1.0 - E2) / w;
        let d = x / nu;
        let d2 = d * d;

        let phi = phi1
            - (nu * t / rho)
                * d2
                * (0.5 - d2 / 24.0 * (5.0 + 3.0 * t2 + eta2 - 4.0 * eta2 * eta2 - 9.0 * t2 * eta2)
                    + d2 * d2 / 720.0
                        * (61.0 + 90.0 * t2 + 45.0 * t2 * t2 + 46.0 * eta2
                            - 252.0 * t2 * eta2
                            - 90.0 * t2 * t2 * eta2));
        let dlon = d
            * (1.0 - d2 / 6.0 * (1.0 + eta2 + 2.0 * t2)
                + d2 * d2 / 120.0
                    * (5.0 + 28.0 * t2 + 24.0 * t2 * t2 + 6.0 * eta2 + 8.0 * t2 * eta2)
                - d2 * d2 * d2 / 5040.0
                    * (61.0 + 662.0 * t2 + 1320.0 * t2 * t2 + 720.0 * t2 * t2 * t2))
            / c;
        let mut lon = self.origin.lon + dlon.to_degrees();
        if lon > 180.0 {
            lon -= 360.0;
        } else if lon < -180.0 {
            lon += 360.0;
        }
        LonLat::new(lon, phi.to_degrees())
    }
}

/// Distance from `p` to the segment `a → b` and the parameter `t ∈ [0, 1]` of the closest point
/// `a + t (b − a)` (projected metres; a degenerate segment `a == b` gives `t = 0`).
#[inline]
pub fn point_segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (px, py) = (p.0 - a.0, p.1 - a.1);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return (px.hypot(py), 0.0);
    }
    let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
    ((px - t * dx).hypot(py - t * dy), t)
}

/// Twice the signed area of the triangle `a, b, c` (positive when counter-clockwise).
#[inline]
fn orient(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> f64 {
    (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0)
}

/// Shortest distance between the segments `p0 → p1` and `q0 → q1` in projected metres (0 when
/// they cross or touch).
pub fn segment_segment_distance(
    p0: (f64, f64),
    p1: (f64, f64),
    q0: (f64, f64),
    q1: (f64, f64),
) -> f64 {
    let d1 = orient(q0, q1, p0);
    let d2 = orient(q0, q1, p1);
    let d3 = orient(p0, p1, q0);
    let d4 = orient(p0, p1, q1);
    let straddles = |u: f64, v: f64| (u > 0.0 && v < 0.0) || (u < 0.0 && v > 0.0);
    if straddles(d1, d2) && straddles(d3, d4) {
        return 0.0;
    }
    // Not a proper crossing: the closest pair involves an end point of one of the segments
    // (touching and collinear-overlapping cases come out as 0 here as well).
    point_segment_distance(p0, q0, q1)
        .0
        .min(point_segment_distance(p1, q0, q1).0)
        .min(point_segment_distance(q0, p0, p1).0)
        .min(point_segment_distance(q1, p0, p1).0)
}

/// A projected polyline with the cumulative distance (measure, metres) at each vertex.
///
/// Measures are planar lengths on the projected line, which agree with geodesic lengths to the
/// projection's accuracy (far better than 0.1 % within 50 km of the origin).
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredLine {
    points: Vec<(f64, f64)>,
    measures: Vec<f64>,
}

impl MeasuredLine {
    /// Projects `points` with `proj` and accumulates the measure along them.
    pub fn new(proj: &LocalProjection, points: &[LonLat]) -> Self {
        Self::from_projected(points.iter().map(|&p| proj.to_xy(p)).collect())
    }

    /// A line from already projected vertices (metres).
    pub fn from_projected(points: Vec<(f64, f64)>) -> Self {
        let mut measures = Vec::with_capacity(points.len());
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                let q = points[i - 1];
                total += (p.0 - q.0).hypot(p.1 - q.1);
            }
            measures.push(total);
        }
        Self { points, measures }
    }

    /// The projected vertices.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The measure (metres from the start) at each vertex.
    pub fn measures(&self) -> &[f64] {
        &self.measures
    }

    /// True when the line has no vertices.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Total length in metres (0 for an empty or single-vertex line).
    pub fn length_m(&self) -> f64 {
        self.measures.last().copied().unwrap_or(0.0)
    }

    /// Distance from `(x, y)` to the line and the measure of the closest point on it.
    ///
    /// When several points are equally close the one with the smallest measure wins. A
    /// single-vertex line is a point (measure 0); an empty line returns `(∞, 0)`.
    pub fn locate(&self, x: f64, y: f64) -> (f64, f64) {
        match self.points.as_slice() {
            [] => (f64::INFINITY, 0.0),
            [only] => ((x - only.0).hypot(y - only.1), 0.0),
            pts => {
                let mut best = (f64::INFINITY, 0.0);
                for (i, w) in pts.windows(2).enumerate() {
                    let (d, t) = point_segment_distance((x, y), w[0], w[1]);
                    if d < best.0 {
                        let seg = self.measures[i + 1] - self.measures[i];
                        best = (d, self.measures[i] + t * seg);
                    }
                }
                best
            }
        }
    }

    /// The point at `measure_m` metres along the line (clamped to `[0, length]`).
    ///
    /// An empty line has no points and returns `(NaN, NaN)`.
    pub fn point_at(&self, measure_m: f64) -> (f64, f64) {
        match self.points.as_slice() {
            [] => (f64::NAN, f64::NAN),
            [only] => *only,
            pts => {
                let m = measure_m.clamp(0.0, self.length_m());
                // First segment whose end measure reaches m.
                let i = self.measures[1..]
                    .partition_point(|&c| c < m)
                    .min(pts.len() - 2);
                let (a, b) = (pts[i], pts[i + 1]);
                let seg = self.measures[i + 1] - self.measures[i];
                let t = if seg > 0.0 {
                    ((m - self.measures[i]) / seg).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
            }
        }
    }

    /// The piece of the line between two measures (clamped to `[0, length]`), starting with the
    /// interpolated point at `from_m`, then every vertex strictly between, then the point at
    /// `to_m`. If `from_m > to_m` the piece is returned reversed (it still runs from `from_m`
    /// to `to_m`). Always two or more points for a non-empty line; empty for an empty line.
    pub fn sub_line(&self, from_m: f64, to_m: f64) -> Vec<(f64, f64)> {
        if self.points.is_empty() {
            return Vec::new();
        }
        if from_m > to_m {
            let mut piece = self.sub_line(to_m, from_m);
            piece.reverse();
            return piece;
        }
        let len = self.length_m();
        let lo = from_m.clamp(0.0, len);
        let hi = to_m.clamp(0.0, len);
        let first = self.point_at(lo);
        let mut out = vec![first];
        let start = self.measures.partition_point(|&c| c <= lo);
        let end = self.measures.partition_point(|&c| c < hi);
        if start < end {
            for &p in &self.points[start..end] {
                if out.last() != Some(&p) {
                    out.push(p);
                }
            }
        }
        out.push(self.point_at(hi));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Destination;
    use proptest::prelude::*;

    /// The reference district (Xi'an, around 34.22°N 108.95°E).
    const DISTRICT: LonLat = LonLat::new(108.95, 34.22);

    /// The point `dist` metres from `from` along the geodesic with initial `bearing` (degrees).
    fn destination(from: LonLat, bearing: f64, dist: f64) -> LonLat {
        Geodesic.destination(from.into(), bearing, dist).into()
    }

    fn planar(a: (f64, f64), b: (f64, f64)) -> f64 {
        (a.0 - b.0).hypot(a.1 - b.1)
    }

    /// Relative error of the projected distance between `p` and `q` against the geodesic one.
    fn relative_error(proj: &LocalProjection, p: LonLat, q: LonLat) -> f64 {
        let g = distance_m(p, q);
        let e = planar(proj.to_xy(p), proj.to_xy(q));
        (e - g).abs() / g
    }

    // ---- distance_upper_bound_m --------------------------------------------------------

    #[test]
    fn upper_bound_is_exact_along_a_meridian_and_at_most_root_two_nearby() {
        let north = destination(DISTRICT, 0.0, 1000.0);
        let bound = distance_upper_bound_m(DISTRICT, north);
        assert!((1000.0..1000.01).contains(&bound), "{bound}");
        let north_east = destination(DISTRICT, 45.0, 1000.0);
        let bound = distance_upper_bound_m(DISTRICT, north_east);
        assert!(
            bound > 1000.0 && bound < 1000.0 * 2f64.sqrt() * 1.001,
            "{bound}"
        );
        assert!(distance_upper_bound_m(DISTRICT, DISTRICT) < 0.01);
        // Across the antimeridian, the short way round.
        let bound = distance_upper_bound_m(LonLat::new(179.999, 0.0), LonLat::new(-179.999, 0.0));
        assert!(bound < 223.0, "{bound}");
    }

    proptest! {
        #[test]
        fn upper_bound_is_never_below_the_distance_nearby(
            lon in -180.0f64..180.0, lat in -89.0f64..89.0,
            bearing in 0.0f64..360.0, dist in 0.0f64..200_000.0,
        ) {
            let a = LonLat::new(lon, lat);
            let b = destination(a, bearing, dist);
            let d = distance_m(a, b);
            prop_assert!(distance_upper_bound_m(a, b) >= d);
            prop_assert!(distance_upper_bound_m(b, a) >= d);
        }

        #[test]
        fn upper_bound_is_never_below_the_distance_anywhere(
            lon1 in -180.0f64..=180.0, lat1 in -90.0f64..=90.0,
            lon2 in -180.0f64..=180.0, lat2 in -90.0f64..=90.0,
        ) {
            let (a, b) = (LonLat::new(lon1, lat1), LonLat::new(lon2, lat2));
            prop_assert!(distance_upper_bound_m(a, b) >= distance_m(a, b));
        }
    }

    // ---- distance_m: published values -------------------------------------------------

    /// GeographicLib documentation example: JFK (40.6°N, 73.8°W) → LHR (51.6°N, 0.5°W),
    /// s12 = 5551759.400319 m.
    #[test]
    fn geodesic_jfk_to_lhr_matches_geographiclib_example() {
        let d = distance_m(LonLat::new(-73.8, 40.6), LonLat::new(-0.5, 51.6));
        assert!((d - 5_551_759.400_319).abs() < 1e-3, "{d}");
    }

    /// GeographicLib documentation example: Wellington (41.32°S, 174.81°E) → Salamanca
    /// (40.96°N, 5.50°W), "The distance is 19959679.267 m." (nearly antipodal).
    #[test]
    fn geodesic_wellington_to_salamanca_matches_geographiclib_example() {
        let d = distance_m(LonLat::new(174.81, -41.32), LonLat::new(-5.5, 40.96));
        assert!((d - 19_959_679.267).abs() < 1e-3, "{d}");
    }

    /// The WGS-84 quarter meridian is 10 001 965.729 m (published constant).
    #[test]
    fn geodesic_quarter_meridian() {
        let d = distance_m(LonLat::new(0.0, 0.0), LonLat::new(0.0, 90.0));
        assert!((d - 10_001_965.729).abs() < 1e-3, "{d}");
    }

    /// Length of one degree of latitude, published table (rounded to the metre):
    /// 110 574 m at the equator, 110 852 m at 30°, 111 412 m at 60°.
    #[test]
    fn geodesic_degree_of_latitude_matches_published_table() {
        for (lat, km) in [(0.0, 110_574.0), (30.0, 110_852.0), (60.0, 111_412.0)] {
            let d = distance_m(LonLat::new(10.0, lat - 0.5), LonLat::new(10.0, lat + 0.5));
            assert!((d - km).abs() < 1.0, "{lat}: {d}");
        }
        // Equator to 1°N (the classic "110.574 km").
        let d = distance_m(LonLat::new(0.0, 0.0), LonLat::new(0.0, 1.0));
        assert!((d / 1000.0 - 110.574).abs() < 0.001, "{d}");
    }

    /// Around the district one degree of latitude (33.72°N → 34.72°N) is ≈110.93 km; the exact
    /// value 110 926.377 m comes from an independent evaluation of the meridian-arc integral.
    #[test]
    fn geodesic_degree_of_latitude_in_the_district() {
        let d = distance_m(LonLat::new(108.95, 33.72), LonLat::new(108.95, 34.72));
        assert!((d - 110_926.377).abs() < 1e-2, "{d}");
    }

    /// A tiny displacement: 1e-6° of longitude at 10°N is 0.109639364 m (GeographicLib).
    #[test]
    fn geodesic_tiny_distance() {
        let d = distance_m(LonLat::new(105.0, 10.0), LonLat::new(105.000_001, 10.0));
        assert!((d - 0.109_639_364).abs() < 1e-9, "{d}");
    }

    #[test]
    fn polyline_length_sums_segments() {
        let pts = [
            LonLat::new(108.95, 34.22),
            LonLat::new(108.96, 34.22),
            LonLat::new(108.96, 34.23),
        ];
        let expected = distance_m(pts[0], pts[1]) + distance_m(pts[1], pts[2]);
        assert!((polyline_length_m(&pts) - expected).abs() < 1e-9);
        assert_eq!(polyline_length_m(&pts[..1]), 0.0);
        assert_eq!(polyline_length_m(&[]), 0.0);
    }

    // ---- projection: hand cases ---------------------------------------------------------

    #[test]
    fn projection_origin_is_zero() {
        let proj = LocalProjection::new(DISTRICT);
        let (x, y) = proj.to_xy(DISTRICT);
        assert!(x.abs() < 1e-9 && y.abs() < 1e-9, "{x} {y}");
        assert_eq!(proj.origin(), DISTRICT);
    }

    /// On the central meridian the projection is exact: a point 10 km due north or south of
    /// the origin lands on (0, ±10000) to within a millimetre.
    #[test]
    fn projection_is_exact_on_the_central_meridian() {
        let proj = LocalProjection::new(DISTRICT);
        for (bearing, sign) in [(0.0, 1.0), (180.0, -1.0)] {
            let p = destination(DISTRICT, bearing, 10_000.0);
            let (x, y) = proj.to_xy(p);
            assert!(x.abs() < 1e-3, "{x}");
            assert!((y - sign * 10_000.0).abs() < 1e-3, "{y}");
        }
    }

    /// Transverse Mercator scale grows as 1 + x²/(2R²): a short east–west segment 50 km east
    /// of the origin is stretched by ≈ 3.1e-5, and by ≈ 0 on the central meridian.
    #[test]
    fn projection_scale_factor_matches_theory() {
        let proj = LocalProjection::new(DISTRICT);
        let centre = destination(DISTRICT, 90.0, 50_000.0);
        let p = destination(centre, 90.0, -50.0);
        let q = destination(centre, 90.0, 50.0);
        let k = planar(proj.to_xy(p), proj.to_xy(q)) / distance_m(p, q);
        // R² ≈ ρν at 34.22°N.
        let (s, _) = DISTRICT.lat.to_radians().sin_cos();
        let w = 1.0 - E2 * s * s;
        let r2 = WGS84_A * WGS84_A * (1.0 - E2) / (w * w);
        let expected = 1.0 + 50_000.0_f64.powi(2) / (2.0 * r2);
        assert!((k - expected).abs() < 1e-6, "k = {k}, expected {expected}");
        let k0 = relative_error(
            &proj,
            destination(DISTRICT, 90.0, -50.0),
            destination(DISTRICT, 90.0, 50.0),
        );
        assert!(k0 < 1e-7, "{k0}");
    }

    /// Why not equirectangular: with cos(lat0) the east–west scale 50 km north of the origin is
    /// already ~0.5 % off, while the transverse Mercator stays within 0.01 %.
    #[test]
    fn projection_beats_equirectangular_50km_north() {
        let proj = LocalProjection::new(DISTRICT);
        let centre = destination(DISTRICT, 0.0, 50_000.0);
        let p = destination(centre, 270.0, 500.0);
        let q = destination(centre, 90.0, 500.0);
        let g = distance_m(p, q);
        // The best equirectangular fit at the origin: ν·cos φ0 east, ρ north (per radian).
        let (s0, c0) = DISTRICT.lat.to_radians().sin_cos();
        let w = 1.0 - E2 * s0 * s0;
        let nu0 = WGS84_A / w.sqrt();
        let rho0 = nu0 * (1.0 - E2) / w;
        let eq = |a: LonLat| {
            (
                (a.lon - DISTRICT.lon).to_radians() * nu0 * c0,
                (a.lat - DISTRICT.lat).to_radians() * rho0,
            )
        };
        let eq_err = (planar(eq(p), eq(q)) - g).abs() / g;
        assert!(eq_err > 4e-3, "equirectangular error {eq_err}");
        assert!(relative_error(&proj, p, q) < 1e-4);
    }

    /// Known geometry: the four corners of a 50 km box around the district.
    #[test]
    fn projection_hand_cases_within_50km() {
        let proj = LocalProjection::new(DISTRICT);
        let corners: Vec<LonLat> = [45.0, 135.0, 225.0, 315.0]
            .iter()
            .map(|&b| destination(DISTRICT, b, 50_000.0))
            .collect();
        for i in 0..4 {
            for j in 0..4 {
                if i != j {
                    let e = relative_error(&proj, corners[i], corners[j]);
                    assert!(e < 5e-5, "{i}-{j}: {e}");
                }
            }
            // Distance from the origin is the geodesic 50 km to within the scale error.
            let r = planar((0.0, 0.0), proj.to_xy(corners[i]));
            assert!((r - 50_000.0).abs() < 1.0, "{r}");
        }
    }

    #[test]
    fn projection_round_trip_hand_cases() {
        for origin in [DISTRICT, LonLat::new(73.5, 39.5), LonLat::new(134.5, 53.5)] {
            let proj = LocalProjection::new(origin);
            for bearing in (0..360).step_by(15) {
                let p = destination(origin, bearing as f64, 50_000.0);
                let (x, y) = proj.to_xy(p);
                let back = proj.to_lonlat(x, y);
                assert!(distance_m(p, back) < 1e-4, "{origin:?} {bearing}");
            }
        }
    }

    /// A deterministic sweep that measures the worst relative error within 50 km over China
    /// (run with `--nocapture` to see the figure).
    #[test]
    fn projection_worst_case_sweep() {
        let mut worst: f64 = 0.0;
        let mut worst_rt: f64 = 0.0;
        for lat in [18.0, 30.0, 34.22, 42.0, 54.0] {
            for lon in [73.0, 108.95, 135.0] {
                let origin = LonLat::new(lon, lat);
                let proj = LocalProjection::new(origin);
                for b in (0..360).step_by(30) {
                    let centre = destination(origin, b as f64, 49_990.0);
                    // Short chords at the edge of the disc, where the scale error peaks.
                    for c in (0..180).step_by(45) {
                        let p = destination(centre, c as f64, -10.0);
                        let q = destination(centre, c as f64, 10.0);
                        worst = worst.max(relative_error(&proj, p, q));
                    }
                    let (x, y) = proj.to_xy(centre);
                    worst_rt = worst_rt.max(distance_m(proj.to_lonlat(x, y), centre));
                }
            }
        }
        println!(
            "projection sweep: worst relative error {worst:.3e}, worst round trip {worst_rt:.3e} m"
        );
        assert!(worst < 1e-3);
        assert!(worst < 5e-5, "expected ~3.1e-5, got {worst}");
        assert!(worst_rt < 1e-3);
    }

    // ---- segments and lines: hand cases ---------------------------------------------------

    #[test]
    fn point_segment_distance_hand_cases() {
        let a = (0.0, 0.0);
        let b = (10.0, 0.0);
        assert_eq!(point_segment_distance((5.0, 3.0), a, b), (3.0, 0.5));
        assert_eq!(point_segment_distance((-4.0, 3.0), a, b), (5.0, 0.0));
        assert_eq!(point_segment_distance((13.0, -4.0), a, b), (5.0, 1.0));
        assert_eq!(point_segment_distance((2.0, 0.0), a, b), (0.0, 0.2));
        // Degenerate segment.
        assert_eq!(point_segment_distance((3.0, 4.0), a, a), (5.0, 0.0));
    }

    #[test]
    fn segment_segment_distance_hand_cases() {
        // Crossing.
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (2.0, 2.0), (0.0, 2.0), (2.0, 0.0)),
            0.0
        );
        // Touching at an end point (T junction).
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (2.0, 0.0), (1.0, 0.0), (1.0, 5.0)),
            0.0
        );
        // Parallel, 3 m apart.
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (10.0, 0.0), (2.0, 3.0), (8.0, 3.0)),
            3.0
        );
        // Collinear, gap of 2 m.
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (1.0, 0.0), (3.0, 0.0), (5.0, 0.0)),
            2.0
        );
        // Collinear, overlapping.
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (4.0, 0.0), (3.0, 0.0), (5.0, 0.0)),
            0.0
        );
        // Would cross if extended: closest is end point (1, 1) to the segment from (3, 0)
        // up to (3, 4) → 2 m.
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (1.0, 1.0), (3.0, 0.0), (3.0, 4.0)),
            2.0
        );
        // Both degenerate.
        assert_eq!(
            segment_segment_distance((0.0, 0.0), (0.0, 0.0), (3.0, 4.0), (3.0, 4.0)),
            5.0
        );
    }

    /// An L-shaped route: 100 m east, then 50 m north.
    fn l_route() -> MeasuredLine {
        MeasuredLine::from_projected(vec![(0.0, 0.0), (100.0, 0.0), (100.0, 50.0)])
    }

    #[test]
    fn measured_line_hand_cases() {
        let line = l_route();
        assert_eq!(line.length_m(), 150.0);
        assert_eq!(line.measures(), &[0.0, 100.0, 150.0]);
        assert_eq!(line.locate(30.0, 4.0), (4.0, 30.0));
        assert_eq!(line.locate(103.0, 20.0), (3.0, 120.0));
        assert_eq!(line.locate(-3.0, -4.0), (5.0, 0.0));
        assert_eq!(line.locate(100.0, 60.0), (10.0, 150.0));
        assert_eq!(line.point_at(0.0), (0.0, 0.0));
        assert_eq!(line.point_at(30.0), (30.0, 0.0));
        assert_eq!(line.point_at(100.0), (100.0, 0.0));
        assert_eq!(line.point_at(125.0), (100.0, 25.0));
        assert_eq!(line.point_at(150.0), (100.0, 50.0));
        assert_eq!(line.point_at(-5.0), (0.0, 0.0));
        assert_eq!(line.point_at(1e9), (100.0, 50.0));
        assert_eq!(
            line.sub_line(50.0, 120.0),
            vec![(50.0, 0.0), (100.0, 0.0), (100.0, 20.0)]
        );
        assert_eq!(line.sub_line(10.0, 20.0), vec![(10.0, 0.0), (20.0, 0.0)]);
        // End points that fall on a vertex are not duplicated.
        assert_eq!(
            line.sub_line(100.0, 150.0),
            vec![(100.0, 0.0), (100.0, 50.0)]
        );
        assert_eq!(
            line.sub_line(0.0, 150.0),
            vec![(0.0, 0.0), (100.0, 0.0), (100.0, 50.0)]
        );
        // Reversed.
        assert_eq!(
            line.sub_line(120.0, 50.0),
            vec![(100.0, 20.0), (100.0, 0.0), (50.0, 0.0)]
        );
        // Clamped and degenerate.
        assert_eq!(line.sub_line(-10.0, 0.0), vec![(0.0, 0.0), (0.0, 0.0)]);
        assert_eq!(line.sub_line(70.0, 70.0), vec![(70.0, 0.0), (70.0, 0.0)]);
    }

    #[test]
    fn measured_line_degenerate_shapes() {
        let empty = MeasuredLine::from_projected(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.length_m(), 0.0);
        assert_eq!(empty.locate(1.0, 1.0), (f64::INFINITY, 0.0));
        assert!(empty.point_at(0.0).0.is_nan());
        assert!(empty.sub_line(0.0, 1.0).is_empty());

        let single = MeasuredLine::from_projected(vec![(3.0, 4.0)]);
        assert_eq!(single.length_m(), 0.0);
        assert_eq!(single.locate(0.0, 0.0), (5.0, 0.0));
        assert_eq!(single.point_at(7.0), (3.0, 4.0));
        assert_eq!(single.sub_line(0.0, 7.0), vec![(3.0, 4.0), (3.0, 4.0)]);

        // Repeated vertices (zero-length segments) are harmless.
        let dup =
            MeasuredLine::from_projected(vec![(0.0, 0.0), (0.0, 0.0), (10.0, 0.0), (10.0, 0.0)]);
        assert_eq!(dup.length_m(), 10.0);
        assert_eq!(dup.point_at(0.0), (0.0, 0.0));
        assert_eq!(dup.point_at(4.0), (4.0, 0.0));
        assert_eq!(dup.point_at(10.0), (10.0, 0.0));
        assert_eq!(dup.locate(4.0, 1.0), (1.0, 4.0));
        assert_eq!(dup.sub_line(0.0, 10.0), vec![(0.0, 0.0), (10.0, 0.0)]);
    }

    /// A real street-scale route in the district: the projected length agrees with the sum of
    /// geodesic segment lengths.
    #[test]
    fn measured_line_length_matches_geodesic() {
        let proj = LocalProjection::new(DISTRICT);
        let route = [
            LonLat::new(108.940, 34.215),
            LonLat::new(108.955, 34.216),
            LonLat::new(108.957, 34.230),
            LonLat::new(108.990, 34.260),
        ];
        let line = MeasuredLine::new(&proj, &route);
        let g = polyline_length_m(&route);
        assert!(
            (line.length_m() - g).abs() / g < 1e-5,
            "{} vs {g}",
            line.length_m()
        );
        let (d, m) = line.locate(proj.to_xy(route[2]).0, proj.to_xy(route[2]).1);
        assert!(d < 1e-9);
        assert!((m - line.measures()[2]).abs() < 1e-9);
    }

    // ---- properties ---------------------------------------------------------------------

    /// A position within 50 km of `origin`.
    fn near(origin: LonLat, bearing: f64, dist: f64) -> LonLat {
        destination(origin, bearing, dist)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Euclidean distances between projected points within 50 km of any origin in China
        /// match the geodesic distance within 0.1 % (in fact within 5e-5).
        #[test]
        fn prop_projection_distance_within_bound(
            lat0 in 18.0f64..54.0,
            lon0 in 73.0f64..135.0,
            b1 in 0.0f64..360.0,
            r1 in 0.0f64..50_000.0,
            b2 in 0.0f64..360.0,
            r2 in 0.0f64..50_000.0,
        ) {
            let origin = LonLat::new(lon0, lat0);
            let proj = LocalProjection::new(origin);
            let p = near(origin, b1, r1);
            let q = near(origin, b2, r2);
            let g = distance_m(p, q);
            prop_assume!(g > 0.01);
            let e = relative_error(&proj, p, q);
            prop_assert!(e < 1e-3, "relative error {e}");
            prop_assert!(e < 5e-5, "relative error {e} above the transverse Mercator bound");
        }

        /// Short chords anywhere in the disc (where relative errors are largest).
        #[test]
        fn prop_projection_short_chords_within_bound(
            lat0 in 18.0f64..54.0,
            lon0 in 73.0f64..135.0,
            b1 in 0.0f64..360.0,
            r1 in 0.0f64..49_900.0,
            b2 in 0.0f64..360.0,
            len in 0.5f64..100.0,
        ) {
            let origin = LonLat::new(lon0, lat0);
            let proj = LocalProjection::new(origin);
            let p = near(origin, b1, r1);
            let q = destination(p, b2, len);
            let e = relative_error(&proj, p, q);
            prop_assert!(e < 5e-5, "relative error {e}");
        }

        /// `to_lonlat(to_xy(p))` is `p` to within a millimetre, and `to_xy(to_lonlat(x, y))`
        /// is `(x, y)` to within a millimetre.
        #[test]
        fn prop_projection_round_trip(
            lat0 in 18.0f64..54.0,
            lon0 in 73.0f64..135.0,
            b in 0.0f64..360.0,
            r in 0.0f64..50_000.0,
            x in -50_000.0f64..50_000.0,
            y in -50_000.0f64..50_000.0,
        ) {
            let origin = LonLat::new(lon0, lat0);
            let proj = LocalProjection::new(origin);
            let p = near(origin, b, r);
            let (px, py) = proj.to_xy(p);
            let back = proj.to_lonlat(px, py);
            prop_assert!(distance_m(p, back) < 1e-3, "{p:?} -> {back:?}");
            let ll = proj.to_lonlat(x, y);
            let (bx, by) = proj.to_xy(ll);
            prop_assert!((bx - x).hypot(by - y) < 1e-3);
        }

        /// The closed form agrees with brute-force sampling of the segment.
        #[test]
        fn prop_point_segment_distance_brute_force(
            p in (-100.0f64..100.0, -100.0f64..100.0),
            a in (-100.0f64..100.0, -100.0f64..100.0),
            b in (-100.0f64..100.0, -100.0f64..100.0),
        ) {
            let (d, t) = point_segment_distance(p, a, b);
            prop_assert!((0.0..=1.0).contains(&t));
            let at = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
            prop_assert!((planar(p, at) - d).abs() < 1e-9);
            const N: usize = 2000;
            let brute = (0..=N)
                .map(|i| {
                    let s = i as f64 / N as f64;
                    planar(p, (a.0 + s * (b.0 - a.0), a.1 + s * (b.1 - a.1)))
                })
                .fold(f64::INFINITY, f64::min);
            let h = planar(a, b) / N as f64;
            prop_assert!(d <= brute + 1e-9, "{d} > {brute}");
            prop_assert!(brute <= d + h / 2.0 + 1e-9, "{brute} vs {d}");
        }

        /// Segment–segment distance agrees with sampling one segment against the other, is
        /// symmetric, and is 0 exactly when the brute force says they meet.
        #[test]
        fn prop_segment_segment_distance_brute_force(
            p0 in (-50.0f64..50.0, -50.0f64..50.0),
            p1 in (-50.0f64..50.0, -50.0f64..50.0),
            q0 in (-50.0f64..50.0, -50.0f64..50.0),
            q1 in (-50.0f64..50.0, -50.0f64..50.0),
        ) {
            let d = segment_segment_distance(p0, p1, q0, q1);
            prop_assert!((d - segment_segment_distance(q0, q1, p0, p1)).abs() < 1e-9);
            prop_assert!((d - segment_segment_distance(p1, p0, q1, q0)).abs() < 1e-9);
            const N: usize = 2000;
            let brute = (0..=N)
                .map(|i| {
                    let s = i as f64 / N as f64;
                    let p = (p0.0 + s * (p1.0 - p0.0), p0.1 + s * (p1.1 - p0.1));
                    point_segment_distance(p, q0, q1).0
                })
                .fold(f64::INFINITY, f64::min);
            let h = planar(p0, p1) / N as f64;
            prop_assert!(d <= brute + 1e-9, "{d} > {brute}");
            prop_assert!(brute <= d + h / 2.0 + 1e-9, "{brute} vs {d}");
        }

        /// `point_at` and `locate` are inverse on the line; `sub_line` has the right length.
        #[test]
        fn prop_measured_line_consistency(
            pts in prop::collection::vec((-1000.0f64..1000.0, -1000.0f64..1000.0), 2..12),
            f1 in 0.0f64..1.0,
            f2 in 0.0f64..1.0,
        ) {
            let line = MeasuredLine::from_projected(pts);
            let len = line.length_m();
            let m = f1 * len;
            let (x, y) = line.point_at(m);
            let (d, _) = line.locate(x, y);
            prop_assert!(d < 1e-6);
            let piece = line.sub_line(f1 * len, f2 * len);
            prop_assert!(piece.len() >= 2);
            let piece_len: f64 = piece.windows(2).map(|w| planar(w[0], w[1])).sum();
            prop_assert!((piece_len - (f2 - f1).abs() * len).abs() < 1e-6);
            prop_assert_eq!(piece[0], line.point_at(f1 * len));
            prop_assert_eq!(*piece.last().unwrap(), line.point_at(f2 * len));
        }
    }
}
