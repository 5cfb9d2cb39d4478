//! The coverage rule of the product: how much of a route was walked, how long a post was staffed.
//!
//! The rule itself is product.md §3; this module is its only implementation, shared by the
//! live status, the stored figures and the reports. It is pure: the same post, shift, fixes,
//! settings and `now` always give the same [`ShiftCoverage`], whatever order the fixes come
//! in, so a fix that arrives late changes a finished shift exactly as if it had arrived on
//! time.
//!
//! Decisions taken where the rule leaves room:
//!
//! * **Which fixes are counted at all.** Only fixes of the shift's members (any time) and
//!   fixes of anyone recorded inside the evaluated part of the shift; a whole day of the
//!   district's fixes would otherwise swamp the counts. A fix that is counted but not
//!   eligible goes to exactly one of [`Excluded`]'s counters, by the first reason in this
//!   order: `not_member`, `outside_shift`, `flagged` ([`Flags::excludes_from_coverage`]),
//!   `inaccurate` (`accuracy_m > max_accuracy_m`, or a non-finite accuracy or position).
//! * **Duplicates and ties.** The very same fix twice (every field equal) is one fix: uploads
//!   are retried, and a retry must not change any figure or count. Two fixes of one member at
//!   the same instant (two phones) are taken in order of longitude, then latitude, so that
//!   the track never depends on the order the fixes came in.
//! * **The evaluated part** of a shift is `[starts_at, min(now, ends_at))`, half-open like the
//!   shift. Fractions of a running shift are over that part; a fix recorded at or after `now`
//!   (a skewed device clock) is treated as outside the shift until `now` passes it. A shift
//!   that has not started is `pending` with zero figures.
//! * **Routes.** Everything is measured in a transverse Mercator projection around the post's
//!   first vertex (see [`crate::domain::geodesy`]; far below 0.1 % error at district scale).
//!   For each route segment the covered set is the exact parameter interval inside the
//!   corridor "capsule" of each track segment or point (the capsule is convex, so a straight
//!   segment meets it in one interval); intervals are found through an R-tree of route
//!   segments and united. Measures run on across the lines of a MultiLineString in order,
//!   and an uncovered stretch never spans two lines. Uncovered stretches shorter than 1 µm
//!   are floating-point seams, not gaps, and are dropped. `first_seen_at`/`last_seen_at` are
//!   the first and last eligible fix of the shift, wherever it was.
//! * **Presence.** A fix is at a checkpoint or kiosk within `radius_m` of the point; at an
//!   area when inside any polygon (outer ring minus holes) or within `radius_m` of any ring.
//!   Each such fix makes its member present over `[t − max_gap_s/2, t + max_gap_s/2)`,
//!   clipped to the evaluated part; half-open so that one member leaving as another arrives
//!   is never a moment of two. Headcount is a sweep over distinct members.
//!   `first_arrival_at` is the first moment anyone is present, `late_min` the minutes from
//!   the shift start to the first moment the headcount reaches `min_headcount` (`None` if
//!   never), and `unstaffed` the maximal spans of the evaluated part below `min_headcount`.
//!   A `min_headcount` of 0 is read as 1: a post staffed by nobody is not staffed.
//! * **Status.** `pending` until `ends_at`; then `missed` with no eligible fix or nothing
//!   covered (route coverage 0, or no present moment); `met` when the level is reached
//!   (`covered_fraction ≥ required_coverage`, or `staffed_fraction ≥ required_presence` and
//!   `late_min ≤ arrival_grace_min`), with 1e-9 of slack so that a fully covered route is not
//!   refused by rounding; `partial` otherwise.

use std::{collections::HashSet, ops::ControlFlow};

use chrono::{DateTime, Utc};
use rstar::{AABB, RTree, RTreeObject};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    geodesy::{LocalProjection, LonLat, MeasuredLine, point_segment_distance},
    geometry::{PostGeometry, PostKind},
    plausibility::Flags,
};

/// Corridor of a route when the post gives none, in metres.
pub const DEFAULT_CORRIDOR_M: f64 = 30.0;
/// Radius of a checkpoint, kiosk or area when the post gives none, in metres.
pub const DEFAULT_RADIUS_M: f64 = 50.0;
/// Uncovered stretches shorter than this (metres) are rounding seams between intervals.
const MIN_STRETCH_M: f64 = 1e-6;
/// Slack when comparing a fraction with its required level, so rounding cannot refuse a
/// fully covered route.
const FRACTION_EPS: f64 = 1e-9;
/// Polygon index of a segment that bounds no polygon (a point or a line at a presence post).
const NO_POLYGON: u32 = u32::MAX;

/// The settings the rule depends on (product settings, not per post).
#[derive(Clone, Copy, Debug)]
pub struct CoverageSettings {
    /// Fixes with a larger accuracy radius do not count (metres).
    pub max_accuracy_m: f64,
    /// Consecutive fixes at most this far apart join into a track; also the width of the
    /// presence window around a fix at a post (seconds).
    pub max_gap_s: i64,
    /// Whether a fix without an accuracy ([`Flags::UNKNOWN_ACCURACY`]) counts.
    pub count_unknown_accuracy: bool,
}

impl Default for CoverageSettings {
    fn default() -> Self {
        Self {
            max_accuracy_m: 50.0,
            max_gap_s: 120,
            count_unknown_accuracy: false,
        }
    }
}

impl CoverageSettings {
    /// Whether a fix is accurate enough to count: its accuracy radius at most
    /// `max_accuracy_m` (a NaN is not), or, when the device gave none, as the setting says.
    pub fn accurate_enough(&self, accuracy_m: f64, flags: Flags) -> bool {
        if flags.contains(Flags::UNKNOWN_ACCURACY) {
            self.count_unknown_accuracy
        } else {
            accuracy_m <= self.max_accuracy_m
        }
    }
}

/// One segment of a route, with its measures and its envelope grown by the corridor so an
/// R-tree query with a bare track envelope finds every segment the track can cover.
#[derive(Clone, Debug)]
struct RouteSeg {
    env: AABB<[f64; 2]>,
    a: (f64, f64),
    d: (f64, f64),
    dd: f64,
    m0: f64,
    m1: f64,
}

impl RTreeObject for RouteSeg {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

/// One boundary segment of a presence post (a point is a segment of zero length).
#[derive(Clone, Debug)]
struct Edge {
    a: (f64, f64),
    b: (f64, f64),
    polygon: u32,
}

impl RTreeObject for Edge {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners([self.a.0, self.a.1], [self.b.0, self.b.1])
    }
}

/// A route ready for corridor tests.
struct RouteShape {
    corridor_m: f64,
    lines: Vec<MeasuredLine>,
    /// Measure at which each line starts (the sum of the lengths before it).
    offsets: Vec<f64>,
    length_m: f64,
    tree: RTree<RouteSeg>,
}

/// A checkpoint, kiosk or area ready for "at the post" tests.
struct PresenceShape {
    radius_m: f64,
    tree: RTree<Edge>,
    /// Bounding box of the shape grown by the radius: `[min_x, min_y, max_x, max_y]`.
    bbox: [f64; 4],
    has_polygons: bool,
}

enum Shape {
    Route(RouteShape),
    Presence(PresenceShape),
}

/// A post prepared once for evaluating many shifts: projected to metres around its own first vertex, route segments in an R-tree.
pub struct PreparedPost {
    kind: PostKind,
    proj: LocalProjection,
    shape: Shape,
}

impl std::fmt::Debug for PreparedPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("PreparedPost");
        s.field("kind", &self.kind)
            .field("origin", &self.proj.origin());
        match &self.shape {
            Shape::Route(r) => s
                .field("corridor_m", &r.corridor_m)
                .field("lines", &r.lines.len())
                .field("length_m", &r.length_m),
            Shape::Presence(p) => s
                .field("radius_m", &p.radius_m)
                .field("edges", &p.tree.size()),
        };
        s.finish()
    }
}

/// A usable distance from a post's optional setting: negative or non-finite values fall back
/// to the default rather than poisoning every figure with NaN.
fn distance_or(value: Option<f64>, default: f64) -> f64 {
    value
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(default)
}

/// The first vertex of a geometry, the centre of its projection.
fn first_vertex(geometry: &PostGeometry) -> LonLat {
    let first = match geometry {
        PostGeometry::Point(p) => Some(*p),
        PostGeometry::LineString(l) => l.first().copied(),
        PostGeometry::MultiLineString(ls) | PostGeometry::Polygon(ls) => {
            ls.iter().flatten().next().copied()
        }
        PostGeometry::MultiPolygon(ps) => ps.iter().flatten().flatten().next().copied(),
    };
    first.unwrap_or(LonLat::new(0.0, 0.0))
}

impl PreparedPost {
    /// Prepares a post; routes use `corridor_m` (default 30), the others `radius_m` (default 50).
    pub fn new(
        kind: PostKind,
        geometry: &PostGeometry,
        corridor_m: Option<f64>,
        radius_m: Option<f64>,
    ) -> PreparedPost {
        let proj = LocalProjection::new(first_vertex(geometry));
        let shape = if kind == PostKind::Route {
            Shape::Route(Self::route_shape(
                &proj,
                geometry,
                distance_or(corridor_m, DEFAULT_CORRIDOR_M),
            ))
        } else {
            Shape::Presence(Self::presence_shape(
                &proj,
                geometry,
                distance_or(radius_m, DEFAULT_RADIUS_M),
            ))
        };
        PreparedPost { kind, proj, shape }
    }

    fn route_shape(proj: &LocalProjection, geometry: &PostGeometry, corridor_m: f64) -> RouteShape {
        // A route should be lines; anything else is read as the lines it is drawn with, so a
        // mislabelled post still evaluates instead of failing a whole report.
        let raw: Vec<&[LonLat]> = match geometry {
            PostGeometry::Point(_) => Vec::new(),
            PostGeometry::LineString(l) => vec![l.as_slice()],
            PostGeometry::MultiLineString(ls) | PostGeometry::Polygon(ls) => {
                ls.iter().map(Vec::as_slice).collect()
            }
            PostGeometry::MultiPolygon(ps) => ps.iter().flatten().map(Vec::as_slice).collect(),
        };
        let lines: Vec<MeasuredLine> = raw.iter().map(|l| MeasuredLine::new(proj, l)).collect();
        let mut offsets = Vec::with_capacity(lines.len());
        let mut segs = Vec::new();
        let mut total = 0.0;
        for line in &lines {
            offsets.push(total);
            let (pts, ms) = (line.points(), line.measures());
            for i in 1..pts.len() {
                let (a, b) = (pts[i - 1], pts[i]);
                let d = (b.0 - a.0, b.1 - a.1);
                let dd = d.0 * d.0 + d.1 * d.1;
                if dd == 0.0 {
                    continue;
                }
                let r = corridor_m;
                segs.push(RouteSeg {
                    env: AABB::from_corners(
                        [a.0.min(b.0) - r, a.1.min(b.1) - r],
                        [a.0.max(b.0) + r, a.1.max(b.1) + r],
                    ),
                    a,
                    d,
                    dd,
                    m0: total + ms[i - 1],
                    m1: total + ms[i],
                });
            }
            total += line.length_m();
        }
        RouteShape {
            corridor_m,
            lines,
            offsets,
            length_m: total,
            tree: RTree::bulk_load(segs),
        }
    }

    fn presence_shape(
        proj: &LocalProjection,
        geometry: &PostGeometry,
        radius_m: f64,
    ) -> PresenceShape {
        let mut edges = Vec::new();
        let mut ring_edges = |ring: &[LonLat], polygon: u32| {
            let pts: Vec<(f64, f64)> = ring.iter().map(|&p| proj.to_xy(p)).collect();
            if pts.len() == 1 {
                edges.push(Edge {
                    a: pts[0],
                    b: pts[0],
                    polygon,
                });
            }
            for w in pts.windows(2) {
                edges.push(Edge {
                    a: w[0],
                    b: w[1],
                    polygon,
                });
            }
        };
        let mut has_polygons = false;
        match geometry {
            PostGeometry::Point(p) => ring_edges(std::slice::from_ref(p), NO_POLYGON),
            PostGeometry::LineString(l) => ring_edges(l, NO_POLYGON),
            PostGeometry::MultiLineString(ls) => {
                for l in ls {
                    ring_edges(l, NO_POLYGON);
                }
            }
            PostGeometry::Polygon(rings) => {
                has_polygons = true;
                for ring in rings {
                    ring_edges(ring, 0);
                }
            }
            PostGeometry::MultiPolygon(polys) => {
                has_polygons = true;
                for (i, rings) in polys.iter().enumerate() {
                    for ring in rings {
                        ring_edges(ring, i as u32);
                    }
                }
            }
        }
        let mut bbox = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for e in &edges {
            for p in [e.a, e.b] {
                bbox = [
                    bbox[0].min(p.0),
                    bbox[1].min(p.1),
                    bbox[2].max(p.0),
                    bbox[3].max(p.1),
                ];
            }
        }
        let bbox = [
            bbox[0] - radius_m,
            bbox[1] - radius_m,
            bbox[2] + radius_m,
            bbox[3] + radius_m,
        ];
        PresenceShape {
            radius_m,
            tree: RTree::bulk_load(edges),
            bbox,
            has_polygons,
        }
    }

    /// Routes: total length along all lines in the projection (metres); `None` for other kinds.
    pub fn length_m(&self) -> Option<f64> {
        match &self.shape {
            Shape::Route(r) => Some(r.length_m),
            Shape::Presence(_) => None,
        }
    }

    /// The kind the post was prepared as.
    pub fn kind(&self) -> PostKind {
        self.kind
    }
}

impl PresenceShape {
    /// Whether the projected point is at the post. `scratch` is reused across calls so that
    /// the polygon parity count does not allocate per fix.
    fn contains(&self, x: f64, y: f64, scratch: &mut Vec<u32>) -> bool {
        let r = self.radius_m;
        if x < self.bbox[0] || y < self.bbox[1] || x > self.bbox[2] || y > self.bbox[3] {
            return false;
        }
        let near = AABB::from_corners([x - r, y - r], [x + r, y + r]);
        let close = self.tree.locate_in_envelope_intersecting_int(&near, |e| {
            if point_segment_distance((x, y), e.a, e.b).0 <= r {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if close.is_break() {
            return true;
        }
        if !self.has_polygons {
            return false;
        }
        // Even–odd rule per polygon along a ray to the east: holes flip the parity back, so
        // "odd for some polygon" is "inside its outer ring and outside its holes".
        scratch.clear();
        let ray = AABB::from_corners([x, y], [self.bbox[2], y]);
        let _ = self
            .tree
            .locate_in_envelope_intersecting_int(&ray, |e| -> ControlFlow<()> {
                if e.polygon != NO_POLYGON
                    && (e.a.1 > y) != (e.b.1 > y)
                    && x < e.a.0 + (y - e.a.1) * (e.b.0 - e.a.0) / (e.b.1 - e.a.1)
                {
                    scratch.push(e.polygon);
                }
                ControlFlow::Continue(())
            });
        scratch.sort_unstable();
        scratch
            .chunk_by(|a, b| a == b)
            .any(|run| run.len() % 2 == 1)
    }
}

/// The parameters `s` of `lo ≤ c0 + c1·s ≤ hi` (all of them when `c1` is 0 and `c0` fits).
#[inline]
fn linear_range(c0: f64, c1: f64, lo: f64, hi: f64) -> Option<(f64, f64)> {
    if c1 == 0.0 {
        return (lo <= c0 && c0 <= hi).then_some((f64::NEG_INFINITY, f64::INFINITY));
    }
    let (u, v) = ((lo - c0) / c1, (hi - c0) / c1);
    Some((u.min(v), u.max(v)))
}

/// The interval of `s ∈ [0, 1]` where `a + s·d` lies within `r` of the segment `p → q` (a
/// point when `p == q`), or `None`.
///
/// The set within `r` of a segment is a capsule: two discs and a rectangle. It is convex, so
/// the line meets it in one interval, the hull of what it meets in each piece; each piece is
/// a quadratic or linear inequality in `s`, solved in closed form.
#[inline]
fn capsule_interval(
    a: (f64, f64),
    d: (f64, f64),
    dd: f64,
    p: (f64, f64),
    q: (f64, f64),
    r: f64,
) -> Option<(f64, f64)> {
    let r2 = r * r;
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut disc = |c: (f64, f64)| {
        let w = (a.0 - c.0, a.1 - c.1);
        let b = d.0 * w.0 + d.1 * w.1;
        let cc = w.0 * w.0 + w.1 * w.1 - r2;
        let det = b * b - dd * cc;
        if det >= 0.0 {
            let sq = det.sqrt();
            lo = lo.min((-b - sq) / dd);
            hi = hi.max((-b + sq) / dd);
        }
    };
    disc(p);
    let e = (q.0 - p.0, q.1 - p.1);
    let ee = e.0 * e.0 + e.1 * e.1;
    if ee > 0.0 {
        disc(q);
        let w = (a.0 - p.0, a.1 - p.1);
        let half_width = r * ee.sqrt();
        // Along the track: 0 ≤ (x − p)·e ≤ |e|²; across it: |(x − p) × e| ≤ r·|e|.
        let along = linear_range(w.0 * e.0 + w.1 * e.1, d.0 * e.0 + d.1 * e.1, 0.0, ee);
        let across = linear_range(
            e.0 * w.1 - e.1 * w.0,
            e.0 * d.1 - e.1 * d.0,
            -half_width,
            half_width,
        );
        if let (Some(g), Some(h)) = (along, across) {
            let (s0, s1) = (g.0.max(h.0), g.1.min(h.1));
            if s0 <= s1 {
                lo = lo.min(s0);
                hi = hi.max(s1);
            }
        }
    }
    let (lo, hi) = (lo.max(0.0), hi.min(1.0));
    (lo <= hi).then_some((lo, hi))
}

impl RouteShape {
    /// The uncovered stretches given the covered intervals (sorted and disjoint), per line.
    fn uncovered(&self, covered: &[(f64, f64)]) -> Vec<[f64; 2]> {
        let mut out = Vec::new();
        let mut j = 0;
        for (line, &off) in self.lines.iter().zip(&self.offsets) {
            let end = off + line.length_m();
            if end <= off {
                continue;
            }
            while j < covered.len() && covered[j].1 < off {
                j += 1;
            }
            let mut cur = off;
            let mut k = j;
            while k < covered.len() && covered[k].0 < end {
                if covered[k].0 - cur > MIN_STRETCH_M {
                    out.push([cur, covered[k].0]);
                }
                cur = cur.max(covered[k].1);
                k += 1;
            }
            if end - cur > MIN_STRETCH_M {
                out.push([cur, end]);
            }
            // The last interval may reach into the next line.
            j = k.saturating_sub(1).max(j);
        }
        out
    }
}

/// How far around a track segment the route segments are fetched from the R-tree at once.
const NEIGHBOURHOOD_M: f64 = 100.0;

/// Collects the covered intervals of a route, track segment by track segment.
///
/// A walk moves a few metres per fix, so the route segments near one track segment are those
/// near the next: one R-tree query over a neighbourhood serves every track segment that stays
/// inside it. The neighbourhood's candidates are a superset of the exact query's and the
/// capsule test is exact, so the result is the same as querying each time.
struct Coverer<'a> {
    shape: &'a RouteShape,
    /// The neighbourhood the candidates were fetched for: `[min_x, min_y, max_x, max_y]`.
    near: [f64; 4],
    candidates: Vec<&'a RouteSeg>,
    intervals: Vec<(f64, f64)>,
}

impl<'a> Coverer<'a> {
    fn new(shape: &'a RouteShape) -> Self {
        Self {
            shape,
            near: [
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ],
            candidates: Vec::new(),
            intervals: Vec::new(),
        }
    }

    /// Adds the measure intervals within the corridor of the track segment `p → q` (a point
    /// when equal). Overlapping results are merged with the last one on the way, so a walk
    /// along the route leaves a handful of intervals instead of one per fix.
    fn cover(&mut self, p: (f64, f64), q: (f64, f64)) {
        let (x0, y0) = (p.0.min(q.0), p.1.min(q.1));
        let (x1, y1) = (p.0.max(q.0), p.1.max(q.1));
        let n = self.near;
        if !(x0 >= n[0] && y0 >= n[1] && x1 <= n[2] && y1 <= n[3]) {
            let m = NEIGHBOURHOOD_M;
            self.near = [x0 - m, y0 - m, x1 + m, y1 + m];
            self.candidates.clear();
            let candidates = &mut self.candidates;
            let _ = self.shape.tree.locate_in_envelope_intersecting_int(
                &AABB::from_corners([x0 - m, y0 - m], [x1 + m, y1 + m]),
                |seg| -> ControlFlow<()> {
                    candidates.push(seg);
                    ControlFlow::Continue(())
                },
            );
        }
        let r = self.shape.corridor_m;
        for seg in &self.candidates {
            let [ex0, ey0] = seg.env.lower();
            let [ex1, ey1] = seg.env.upper();
            if ex0 > x1 || ey0 > y1 || ex1 < x0 || ey1 < y0 {
                continue;
            }
            if let Some((s0, s1)) = capsule_interval(seg.a, seg.d, seg.dd, p, q, r) {
                let span = seg.m1 - seg.m0;
                // The ends of a segment take the vertex measures exactly, so intervals of
                // neighbouring segments touch instead of leaving a rounding gap.
                let lo = if s0 <= 0.0 {
                    seg.m0
                } else {
                    seg.m0 + s0 * span
                };
                let hi = if s1 >= 1.0 {
                    seg.m1
                } else {
                    seg.m0 + s1 * span
                };
                push_interval(&mut self.intervals, lo, hi);
            }
        }
    }
}

/// Appends `[lo, hi]`, or widens the last interval when the two overlap or touch (their union
/// is then exactly one interval, so nothing is approximated).
#[inline]
fn push_interval(out: &mut Vec<(f64, f64)>, lo: f64, hi: f64) {
    if let Some(last) = out.last_mut()
        && lo <= last.1
        && hi >= last.0
    {
        last.0 = last.0.min(lo);
        last.1 = last.1.max(hi);
        return;
    }
    out.push((lo, hi));
}

/// Sorts intervals and merges the overlapping or touching ones, in place.
fn merge_intervals(v: &mut Vec<(f64, f64)>) {
    v.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut w = 0;
    for i in 0..v.len() {
        if w > 0 && v[i].0 <= v[w - 1].1 {
            v[w - 1].1 = v[w - 1].1.max(v[i].1);
        } else {
            v[w] = v[i];
            w += 1;
        }
    }
    v.truncate(w);
}

/// A shift as the rule sees it.
#[derive(Clone, Debug)]
pub struct ShiftSpec {
    /// The shift.
    pub id: Uuid,
    /// Start, inclusive.
    pub starts_at: DateTime<Utc>,
    /// End, exclusive.
    pub ends_at: DateTime<Utc>,
    /// Explicit members plus the members of its team, resolved by the caller.
    pub members: HashSet<Uuid>,
    /// Members needed at once for the post to count as staffed (presence posts).
    pub min_headcount: u32,
    /// Covered fraction a route needs to be met.
    pub required_coverage: f64,
    /// Staffed fraction a checkpoint, kiosk or area needs to be met.
    pub required_presence: f64,
    /// Minutes a presence post may be late and still be met.
    pub arrival_grace_min: i64,
}

/// A fix as the rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct FixIn {
    /// Whose fix.
    pub member_id: Uuid,
    /// When the device recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Where, in WGS-84.
    pub position: LonLat,
    /// Accuracy radius reported by the device, in metres.
    pub accuracy_m: f64,
    /// Plausibility flags set on ingestion.
    pub flags: Flags,
}

/// Status of a shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not ended yet; the figures so far are still given.
    Pending,
    /// The level was reached (and, for presence posts, in time).
    Met,
    /// Something was covered, but not enough or too late.
    Partial,
    /// No eligible fix, or nothing covered.
    Missed,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::Met,
        Status::Partial,
        Status::Missed,
    ];

    /// The name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Met => "met",
            Status::Partial => "partial",
            Status::Missed => "missed",
        }
    }

    /// The status of a name, if it is one.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Counted fixes that were not eligible, each under the first reason that applies.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Excluded {
    /// Flagged implausible_speed or mock_location.
    pub flagged: u32,
    /// Accuracy radius above `max_accuracy_m`.
    pub inaccurate: u32,
    /// A member's fix outside the evaluated part of the shift.
    pub outside_shift: u32,
    /// Someone else's fix inside the evaluated part of the shift, as stored when the figures
    /// were computed: such a fix can change no figure that counts, so one arriving after
    /// the shift's figures were stored does not have them computed again.
    pub not_member: u32,
}

/// Figures of a route shift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteFigures {
    /// `covered_m / length_m` (0 for a route of no length).
    pub covered_fraction: f64,
    /// Metres of the route within the corridor of some track segment or point.
    pub covered_m: f64,
    /// Length of the route in metres.
    pub length_m: f64,
    /// Uncovered stretches as `[from_m, to_m]` along the route, in order, never across lines.
    pub uncovered: Vec<[f64; 2]>,
    /// First eligible fix.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Last eligible fix.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// Figures of a checkpoint, kiosk or area shift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceFigures {
    /// Share of the evaluated part with headcount ≥ `min_headcount`.
    pub staffed_fraction: f64,
    /// Share of the evaluated part with headcount ≥ 1.
    pub present_fraction: f64,
    /// Most distinct members present at once.
    pub max_headcount: u32,
    /// First moment anyone was present.
    pub first_arrival_at: Option<DateTime<Utc>>,
    /// Minutes from the shift start to the first staffed moment (`None` if never staffed).
    pub late_min: Option<f64>,
    /// Maximal spans of the evaluated part with headcount below `min_headcount`.
    pub unstaffed: Vec<[DateTime<Utc>; 2]>,
}

/// The result of the rule for one shift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftCoverage {
    /// The shift.
    pub shift_id: Uuid,
    /// Its status.
    pub status: Status,
    /// Fixes that counted.
    pub eligible_fixes: u32,
    /// Fixes that were considered and did not count.
    pub excluded: Excluded,
    /// Route figures (routes only).
    pub route: Option<RouteFigures>,
    /// Presence figures (checkpoints, kiosks, areas).
    pub presence: Option<PresenceFigures>,
    /// End of the evaluated part: `min(max(now, starts_at), ends_at)`.
    pub evaluated_until: DateTime<Utc>,
}

/// Why a counted fix is not eligible, in the order the reasons are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    NotMember,
    OutsideShift,
    Flagged,
    Inaccurate,
}

/// A counted but ineligible fix, with every field as bits so that equal records are exactly
/// the duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rejected {
    member: u128,
    t_us: i64,
    lon: u64,
    lat: u64,
    acc: u64,
    flags: i32,
    reason: Reason,
}

/// An eligible fix as a small sort key: the member's rank among the shift's members (so no
/// 128-bit compares), the time, where the fix is in the input (for the rare tie), and its
/// position, so that the sorted pass never reaches back into the unsorted input.
#[derive(Clone, Copy, Debug)]
struct Key {
    t_us: i64,
    member: u32,
    idx: u32,
    position: LonLat,
}

/// Every field of a fix but the member and time, as bits: the tie-break between fixes of one
/// member at the same instant, and the test for duplicates.
fn fix_bits(f: &FixIn) -> (u64, u64, u64, i32) {
    (
        f.position.lon.to_bits(),
        f.position.lat.to_bits(),
        f.accuracy_m.to_bits(),
        f.flags.0,
    )
}

/// A time from microseconds since the epoch (always in range here: every value comes from a
/// valid `DateTime` or lies between two).
fn at_us(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// The eligible fixes as keys sorted by member, time and position without duplicates, and the
/// exclusion counts.
fn sort_out(
    shift: &ShiftSpec,
    fixes: &[FixIn],
    span_end: DateTime<Utc>,
    settings: &CoverageSettings,
) -> (Vec<Key>, Excluded) {
    let mut members: Vec<Uuid> = shift.members.iter().copied().collect();
    members.sort_unstable();
    let mut keys: Vec<Key> = Vec::with_capacity(fixes.len());
    let mut rejected: Vec<Rejected> = Vec::new();
    // Fixes come grouped by member more often than not: reuse the last rank found.
    let mut last: Option<(Uuid, Option<u32>)> = None;
    for (idx, f) in fixes.iter().enumerate() {
        let rank = match last {
            Some((id, rank)) if id == f.member_id => rank,
            _ => {
                let rank = members.binary_search(&f.member_id).ok().map(|i| i as u32);
                last = Some((f.member_id, rank));
                rank
            }
        };
        let in_span = f.recorded_at >= shift.starts_at && f.recorded_at < span_end;
        // Written so that a NaN accuracy or position is unusable, not accepted.
        let usable = settings.accurate_enough(f.accuracy_m, f.flags)
            && f.position.lon.is_finite()
            && f.position.lat.is_finite();
        let reason = match rank {
            None if !in_span => continue,
            None => Reason::NotMember,
            Some(_) if !in_span => Reason::OutsideShift,
            Some(_) if f.flags.excludes_from_coverage() => Reason::Flagged,
            Some(_) if !usable => Reason::Inaccurate,
            Some(member) => {
                keys.push(Key {
                    t_us: f.recorded_at.timestamp_micros(),
                    member,
                    idx: idx as u32,
                    position: f.position,
                });
                continue;
            }
        };
        let (lon, lat, acc, flags) = fix_bits(f);
        rejected.push(Rejected {
            member: f.member_id.as_u128(),
            t_us: f.recorded_at.timestamp_micros(),
            lon,
            lat,
            acc,
            flags,
            reason,
        });
    }
    let mut keys = sort_keys(keys, members.len(), fixes);
    keys.dedup_by(|b, a| {
        (a.member, a.t_us) == (b.member, b.t_us)
            && fix_bits(&fixes[a.idx as usize]) == fix_bits(&fixes[b.idx as usize])
    });
    rejected.sort_unstable();
    rejected.dedup();
    let mut excluded = Excluded::default();
    for r in &rejected {
        match r.reason {
            Reason::NotMember => excluded.not_member += 1,
            Reason::OutsideShift => excluded.outside_shift += 1,
            Reason::Flagged => excluded.flagged += 1,
            Reason::Inaccurate => excluded.inaccurate += 1,
        }
    }
    (keys, excluded)
}

/// Sorts keys by member, time and then position: first a counting pass into one bucket per
/// member (a shift has few members), then each bucket by time. Buckets are small enough to
/// sort in cache, which makes unordered input about twice as fast as one global sort.
fn sort_keys(keys: Vec<Key>, members: usize, fixes: &[FixIn]) -> Vec<Key> {
    let by_time = |a: &Key, b: &Key| {
        a.t_us
            .cmp(&b.t_us)
            .then_with(|| fix_bits(&fixes[a.idx as usize]).cmp(&fix_bits(&fixes[b.idx as usize])))
    };
    if members <= 1 || keys.is_sorted_by(|a, b| (a.member, a.t_us) < (b.member, b.t_us)) {
        let mut keys = keys;
        keys.sort_unstable_by(|a, b| a.member.cmp(&b.member).then_with(|| by_time(a, b)));
        return keys;
    }
    let mut starts = vec![0usize; members + 1];
    for k in &keys {
        starts[k.member as usize + 1] += 1;
    }
    for i in 1..=members {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut out = keys.clone();
    for k in keys {
        let slot = &mut next[k.member as usize];
        out[*slot] = k;
        *slot += 1;
    }
    for w in starts.windows(2) {
        out[w[0]..w[1]].sort_unstable_by(by_time);
    }
    out
}

/// Evaluates one shift. `fixes` may contain anything (other members, other times, flagged) in any order; `now` decides pending and how far a running shift is evaluated (figures so far: over [starts_at, min(now, ends_at)]).
pub fn evaluate(
    post: &PreparedPost,
    shift: &ShiftSpec,
    fixes: &[FixIn],
    now: DateTime<Utc>,
    settings: &CoverageSettings,
) -> ShiftCoverage {
    let evaluated_until = now.max(shift.starts_at).min(shift.ends_at);
    let span_start = shift.starts_at;
    let span_end = evaluated_until;
    let (keys, excluded) = sort_out(shift, fixes, span_end, settings);
    let eligible = keys.as_slice();
    let ended = now >= shift.ends_at;

    let (route, presence, anything) = match &post.shape {
        Shape::Route(shape) => {
            let fig = route_figures(post, shape, eligible, settings);
            let anything = fig.covered_m > 0.0;
            (Some(fig), None, anything)
        }
        Shape::Presence(shape) => {
            let fig = presence_figures(
                post,
                shape,
                shift,
                eligible,
                span_start.timestamp_micros(),
                span_end.timestamp_micros(),
                settings,
            );
            let anything = fig.present_fraction > 0.0;
            (None, Some(fig), anything)
        }
    };

    let status = if !ended {
        Status::Pending
    } else if eligible.is_empty() || !anything {
        Status::Missed
    } else {
        let met = match (&route, &presence) {
            (Some(r), _) => r.covered_fraction + FRACTION_EPS >= shift.required_coverage,
            (_, Some(p)) => {
                p.staffed_fraction + FRACTION_EPS >= shift.required_presence
                    && p.late_min
                        .is_some_and(|l| l <= shift.arrival_grace_min as f64)
            }
            _ => false,
        };
        if met { Status::Met } else { Status::Partial }
    };

    ShiftCoverage {
        shift_id: shift.id,
        status,
        eligible_fixes: eligible.len() as u32,
        excluded,
        route,
        presence,
        evaluated_until,
    }
}

/// Route figures from the eligible fixes (sorted by member and time).
fn route_figures(
    post: &PreparedPost,
    shape: &RouteShape,
    eligible: &[Key],
    settings: &CoverageSettings,
) -> RouteFigures {
    let gap_us = settings.max_gap_s.saturating_mul(1_000_000);
    let mut coverer = Coverer::new(shape);
    let xy = |k: &Key| post.proj.to_xy(k.position);
    // Walk the fixes once, projecting each once: a link to the next fix of the same member
    // within the gap is a track segment; a fix linked on neither side is a point.
    let mut prev: Option<(f64, f64)> = None;
    let mut linked_before = false;
    for (i, r) in eligible.iter().enumerate() {
        let p = prev.unwrap_or_else(|| xy(r));
        let next = eligible.get(i + 1);
        let link = next.filter(|n| n.member == r.member && n.t_us - r.t_us <= gap_us);
        match link {
            Some(n) => {
                let q = xy(n);
                coverer.cover(p, q);
                prev = Some(q);
                linked_before = true;
            }
            None => {
                if !linked_before {
                    coverer.cover(p, p);
                }
                prev = None;
                linked_before = false;
            }
        }
    }
    let mut intervals = coverer.intervals;
    merge_intervals(&mut intervals);
    let uncovered = shape.uncovered(&intervals);
    let length_m = shape.length_m;
    // The measure of the union itself, not the length minus the stretches: a route that is
    // only touched at a point must come out as exactly 0, not as a rounding residue.
    // Folded from +0.0: the empty `Sum` of f64 is -0.0, which would come out as `-0.0`.
    let covered_m = intervals
        .iter()
        .fold(0.0, |sum, (lo, hi)| sum + (hi - lo))
        .clamp(0.0, length_m);
    let covered_fraction = if length_m > 0.0 {
        covered_m / length_m
    } else {
        0.0
    };
    let first = eligible.iter().map(|r| r.t_us).min();
    let last = eligible.iter().map(|r| r.t_us).max();
    RouteFigures {
        covered_fraction,
        covered_m,
        length_m,
        uncovered,
        first_seen_at: first.map(at_us),
        last_seen_at: last.map(at_us),
    }
}

/// Presence figures over `[start_us, end_us)` from the eligible fixes (sorted by member and
/// time).
fn presence_figures(
    post: &PreparedPost,
    shape: &PresenceShape,
    shift: &ShiftSpec,
    eligible: &[Key],
    start_us: i64,
    end_us: i64,
    settings: &CoverageSettings,
) -> PresenceFigures {
    let half_us = settings.max_gap_s.saturating_mul(500_000);
    let min_headcount = shift.min_headcount.max(1);
    // Per member, merge the presence windows (fixes come in time order, and all windows have
    // the same width, so they come in start order too), then record enter/leave events.
    let mut events: Vec<(i64, i32)> = Vec::new();
    let mut scratch = Vec::new();
    let mut open: Option<(u32, i64, i64)> = None;
    for r in eligible {
        let (x, y) = post.proj.to_xy(r.position);
        if !shape.contains(x, y, &mut scratch) {
            continue;
        }
        let lo = r.t_us.saturating_sub(half_us).max(start_us);
        let hi = r.t_us.saturating_add(half_us).min(end_us);
        if lo >= hi {
            continue;
        }
        match &mut open {
            Some((m, _, e)) if *m == r.member && lo <= *e => *e = (*e).max(hi),
            _ => {
                if let Some((_, s, e)) = open {
                    events.push((s, 1));
                    events.push((e, -1));
                }
                open = Some((r.member, lo, hi));
            }
        }
    }
    if let Some((_, s, e)) = open {
        events.push((s, 1));
        events.push((e, -1));
    }
    // Leaving sorts before arriving at the same instant (half-open windows).
    events.sort_unstable();

    let mut staffed_us: i64 = 0;
    let mut present_us: i64 = 0;
    let mut max_headcount: u32 = 0;
    let mut first_arrival: Option<i64> = None;
    let mut first_staffed: Option<i64> = None;
    let mut unstaffed: Vec<[i64; 2]> = Vec::new();
    let mut count: i64 = 0;
    let mut from = start_us;
    let mut account = |a: i64, b: i64, count: i64| {
        if b <= a {
            return;
        }
        let c = count.max(0) as u32;
        max_headcount = max_headcount.max(c);
        if c >= 1 {
            present_us += b - a;
            first_arrival.get_or_insert(a);
        }
        if c >= min_headcount {
            staffed_us += b - a;
            first_staffed.get_or_insert(a);
        } else if let Some(last) = unstaffed.last_mut().filter(|l| l[1] == a) {
            last[1] = b;
        } else {
            unstaffed.push([a, b]);
        }
    };
    for &(t, delta) in &events {
        account(from, t, count);
        count += i64::from(delta);
        from = t;
    }
    account(from, end_us, count);

    let total = (end_us - start_us) as f64;
    let share = |us: i64| if total > 0.0 { us as f64 / total } else { 0.0 };
    PresenceFigures {
        staffed_fraction: share(staffed_us),
        present_fraction: share(present_us),
        max_headcount,
        first_arrival_at: first_arrival.map(at_us),
        late_min: first_staffed.map(|t| (t - start_us) as f64 / 60e6),
        unstaffed: unstaffed
            .into_iter()
            .map(|[a, b]| [at_us(a), at_us(b)])
            .collect(),
    }
}

/// The covered and uncovered pieces of a route for a map: each piece as WGS-84 positions with its [from_m, to_m] and whether covered (uncovered pieces exactly as in RouteFigures.uncovered, covered ones the complement).
pub fn route_pieces(
    post: &PreparedPost,
    uncovered: &[[f64; 2]],
) -> Vec<(bool, [f64; 2], Vec<LonLat>)> {
    let Shape::Route(shape) = &post.shape else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (line, &off) in shape.lines.iter().zip(&shape.offsets) {
        let end = off + line.length_m();
        if end <= off {
            continue;
        }
        let mut piece = |covered: bool, from: f64, to: f64| {
            let pts = line
                .sub_line(from - off, to - off)
                .into_iter()
                .map(|(x, y)| post.proj.to_lonlat(x, y))
                .collect();
            out.push((covered, [from, to], pts));
        };
        // Stretches are taken as given (sorted here in case they are not), clipped to the
        // line, so one that spans lines shows on both.
        let mut mine: Vec<[f64; 2]> = uncovered
            .iter()
            .filter(|s| s[0] < end && s[1] > off && s[1] > s[0])
            .map(|s| [s[0].max(off), s[1].min(end)])
            .collect();
        mine.sort_unstable_by(|a, b| a[0].total_cmp(&b[0]));
        let mut cur = off;
        for s in mine {
            if s[0] > cur {
                piece(true, cur, s[0]);
            }
            if s[1] > cur {
                piece(false, s[0].max(cur), s[1]);
                cur = s[1];
            }
        }
        if end > cur {
            piece(true, cur, end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn status_names_are_the_json_names_and_parse_back() {
        for s in Status::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("unrostered"), None);
    }
    use crate::domain::geodesy::distance_m;

    /// The reference district (Xi'an, around 34.22°N 108.95°E).
    const DISTRICT: LonLat = LonLat::new(108.95, 34.22);
    const A: u128 = 1;
    const B: u128 = 2;
    /// Never a member of the shifts below.
    const C: u128 = 99;

    fn proj() -> LocalProjection {
        LocalProjection::new(DISTRICT)
    }

    /// The position `x` metres east and `y` metres north of the district origin.
    fn ll(x: f64, y: f64) -> LonLat {
        proj().to_lonlat(x, y)
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        t0() + Duration::seconds(s)
    }

    fn fix(m: u128, s: i64, x: f64, y: f64) -> FixIn {
        FixIn {
            member_id: Uuid::from_u128(m),
            recorded_at: at(s),
            position: ll(x, y),
            accuracy_m: 8.0,
            flags: Flags::empty(),
        }
    }

    fn shift(hours: i64, members: &[u128]) -> ShiftSpec {
        ShiftSpec {
            id: Uuid::from_u128(0x5417),
            starts_at: t0(),
            ends_at: at(hours * 3600),
            members: members.iter().map(|&m| Uuid::from_u128(m)).collect(),
            min_headcount: 1,
            required_coverage: 0.8,
            required_presence: 0.9,
            arrival_grace_min: 10,
        }
    }

    fn route_post(lines: &[&[(f64, f64)]], corridor: f64) -> PreparedPost {
        let lines: Vec<Vec<LonLat>> = lines
            .iter()
            .map(|l| l.iter().map(|&(x, y)| ll(x, y)).collect())
            .collect();
        let geometry = if lines.len() == 1 {
            PostGeometry::LineString(lines[0].clone())
        } else {
            PostGeometry::MultiLineString(lines)
        };
        PreparedPost::new(PostKind::Route, &geometry, Some(corridor), None)
    }

    /// The straight 2 km route due east from the district origin, 30 m corridor.
    fn straight() -> PreparedPost {
        route_post(&[&[(0.0, 0.0), (2000.0, 0.0)]], 30.0)
    }

    fn kiosk() -> PreparedPost {
        PreparedPost::new(
            PostKind::Kiosk,
            &PostGeometry::Point(DISTRICT),
            None,
            Some(50.0),
        )
    }

    /// Fixes of member `m` along the polyline `pts`, one every `step_m` metres and `dt_s`
    /// seconds from `start_s`, the last one exactly on the last vertex.
    fn walk(m: u128, start_s: i64, pts: &[(f64, f64)], step_m: f64, dt_s: i64) -> Vec<FixIn> {
        let line = MeasuredLine::from_projected(pts.to_vec());
        let n = (line.length_m() / step_m).floor() as i64;
        let mut out: Vec<FixIn> = (0..=n)
            .map(|k| {
                let (x, y) = line.point_at(k as f64 * step_m);
                fix(m, start_s + k * dt_s, x, y)
            })
            .collect();
        if (n as f64) * step_m < line.length_m() - 1e-9 {
            let (x, y) = *pts.last().unwrap();
            let t = start_s
                + n * dt_s
                + ((line.length_m() - n as f64 * step_m) / step_m * dt_s as f64).round() as i64;
            out.push(fix(m, t, x, y));
        }
        out
    }

    /// Fixes of member `m` at the kiosk every `every_s` seconds over `[from_s, to_s]`.
    fn at_kiosk(m: u128, from_s: i64, to_s: i64, every_s: usize) -> Vec<FixIn> {
        (from_s..=to_s)
            .step_by(every_s)
            .map(|s| fix(m, s, 5.0, -5.0))
            .collect()
    }

    fn ended(s: &ShiftSpec) -> DateTime<Utc> {
        s.ends_at + Duration::minutes(1)
    }

    fn run(post: &PreparedPost, s: &ShiftSpec, fixes: &[FixIn]) -> ShiftCoverage {
        evaluate(post, s, fixes, ended(s), &CoverageSettings::default())
    }

    fn route_of(c: &ShiftCoverage) -> &RouteFigures {
        c.route.as_ref().expect("route figures")
    }

    fn presence_of(c: &ShiftCoverage) -> &PresenceFigures {
        c.presence.as_ref().expect("presence figures")
    }

    fn assert_close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol,
            "{actual} is not {expected} ± {tol}"
        );
    }

    fn assert_stretches(actual: &[[f64; 2]], expected: &[[f64; 2]], tol: f64) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert_close(a[0], e[0], tol);
            assert_close(a[1], e[1], tol);
        }
    }

    // ---- routes: hand cases ------------------------------------------------------------------

    /// Walking the first 60 % (1200 m) of the straight 2 km route at 1.2 m/s with a fix every
    /// 30 s (36 m): the track is exactly [0, 1200] on the route. The corridor adds 30 m beyond
    /// the far end and nothing before the start (the route begins there): covered 1230 m,
    /// 0.615, uncovered [1230, 2000]. Below the required 0.8: partial.
    #[test]
    fn walk_along_the_first_60_percent() {
        let post = straight();
        assert_close(post.length_m().unwrap(), 2000.0, 1e-6);
        let s = shift(2, &[A]);
        let fixes = walk(A, 600, &[(0.0, 0.0), (1200.0, 0.0)], 36.0, 30);
        assert_eq!(fixes.len(), 35);
        assert_eq!(fixes.last().unwrap().recorded_at, at(1600));
        let c = run(&post, &s, &fixes);
        let r = route_of(&c);
        assert_close(r.covered_m, 1230.0, 1e-3);
        assert_close(r.covered_fraction, 0.615, 1e-6);
        assert_close(r.length_m, 2000.0, 1e-6);
        assert_stretches(&r.uncovered, &[[1230.0, 2000.0]], 1e-3);
        assert_eq!(r.first_seen_at, Some(at(600)));
        assert_eq!(r.last_seen_at, Some(at(1600)));
        assert_eq!(c.status, Status::Partial);
        assert_eq!(c.eligible_fixes, 35);
        assert_eq!(c.excluded, Excluded::default());
        assert!(c.presence.is_none());
        assert_eq!(c.evaluated_until, s.ends_at);
    }

    /// The same walk 10 m to the side of the route: beyond the far end the corridor reaches
    /// √(30² − 10²) = 28.284 m along the route, so 1228.284 m (0.614142).
    #[test]
    fn walk_beside_the_route() {
        let c = run(
            &straight(),
            &shift(2, &[A]),
            &walk(A, 600, &[(0.0, 10.0), (1200.0, 10.0)], 36.0, 30),
        );
        let r = route_of(&c);
        let expected = 1200.0 + 800f64.sqrt();
        assert_close(r.covered_m, expected, 1e-3);
        assert_close(r.covered_fraction, expected / 2000.0, 1e-6);
    }

    /// A parallel street 40 m away is outside the 30 m corridor: nothing covered, missed.
    #[test]
    fn parallel_street_outside_the_corridor() {
        let s = shift(2, &[A]);
        let fixes = walk(A, 600, &[(0.0, 40.0), (2000.0, 40.0)], 36.0, 30);
        let c = run(&straight(), &s, &fixes);
        let r = route_of(&c);
        assert_eq!(r.covered_m, 0.0);
        assert_eq!(r.covered_fraction, 0.0);
        assert_stretches(&r.uncovered, &[[0.0, 2000.0]], 1e-6);
        assert_eq!(c.eligible_fixes, fixes.len() as u32);
        assert_eq!(c.status, Status::Missed);
    }

    /// One perpendicular crossing at 1000 m covers 2 × corridor = 60 m: [970, 1030].
    #[test]
    fn perpendicular_crossing() {
        let fixes = walk(A, 600, &[(1000.0, -180.0), (1000.0, 180.0)], 36.0, 30);
        let c = run(&straight(), &shift(2, &[A]), &fixes);
        let r = route_of(&c);
        assert_close(r.covered_m, 60.0, 1e-3);
        assert_close(r.covered_fraction, 0.03, 1e-6);
        assert_stretches(&r.uncovered, &[[0.0, 970.0], [1030.0, 2000.0]], 1e-3);
        assert_eq!(c.status, Status::Partial);
    }

    /// Two fixes 100 m either side of the route, 60 s apart, join into a segment: it covers
    /// 60 m though neither fix is in the corridor. 200 s apart they stay points: nothing.
    #[test]
    fn the_segment_covers_not_the_fixes() {
        let post = straight();
        let s = shift(2, &[A]);
        let joined = [fix(A, 600, 1000.0, -100.0), fix(A, 660, 1000.0, 100.0)];
        assert_close(route_of(&run(&post, &s, &joined)).covered_m, 60.0, 1e-3);
        // Exactly max_gap_s apart still joins ("no more than").
        let edge = [fix(A, 600, 1000.0, -100.0), fix(A, 720, 1000.0, 100.0)];
        assert_close(route_of(&run(&post, &s, &edge)).covered_m, 60.0, 1e-3);
        let apart = [fix(A, 600, 1000.0, -100.0), fix(A, 800, 1000.0, 100.0)];
        let c = run(&post, &s, &apart);
        assert_eq!(route_of(&c).covered_m, 0.0);
        assert_eq!(c.status, Status::Missed);
        // Two members' fixes never join each other.
        let two = [fix(A, 600, 1000.0, -100.0), fix(B, 660, 1000.0, 100.0)];
        assert_eq!(
            route_of(&run(&post, &shift(2, &[A, B]), &two)).covered_m,
            0.0
        );
    }

    /// A crossing at 45° covers 2r / sin 45° = 84.853 m around the crossing point.
    #[test]
    fn oblique_crossing() {
        let fixes = [fix(A, 600, 850.0, -100.0), fix(A, 660, 1050.0, 100.0)];
        let r = route_of(&run(&straight(), &shift(2, &[A]), &fixes)).clone();
        let half = 30.0 * 2f64.sqrt();
        assert_close(r.covered_m, 2.0 * half, 1e-3);
        assert_stretches(
            &r.uncovered,
            &[[0.0, 950.0 - half], [950.0 + half, 2000.0]],
            1e-3,
        );
    }

    /// A lone fix is a point: 10 m off the route it covers 2√(30² − 10²) = 56.569 m; 10 m
    /// from the start on the route it covers [0, 40] (the corridor is clipped by the start).
    #[test]
    fn lone_points() {
        let post = straight();
        let s = shift(2, &[A]);
        let c = run(&post, &s, &[fix(A, 600, 500.0, 10.0)]);
        assert_close(route_of(&c).covered_m, 2.0 * 800f64.sqrt(), 1e-3);
        let c = run(&post, &s, &[fix(A, 600, 10.0, 0.0)]);
        assert_close(route_of(&c).covered_m, 40.0, 1e-3);
        assert_stretches(&route_of(&c).uncovered, &[[40.0, 2000.0]], 1e-3);
    }

    /// Fully walked: met, nothing uncovered, fraction 1 (not 0.9999…).
    #[test]
    fn full_walk_is_met() {
        let mut s = shift(2, &[A]);
        s.required_coverage = 1.0;
        let fixes = walk(A, 0, &[(0.0, 0.0), (2000.0, 0.0)], 36.0, 30);
        let c = run(&straight(), &s, &fixes);
        let r = route_of(&c);
        assert!(r.uncovered.is_empty(), "{:?}", r.uncovered);
        assert_close(r.covered_fraction, 1.0, 1e-12);
        assert_eq!(c.status, Status::Met);
    }

    /// Two lines of 1000 m, the second 500 m north: measures continue across them (line 2 is
    /// [1000, 2000]). The walk covers line 1 from 600 to its end, goes north, and comes back
    /// west along line 2 to x = 700: covered [570, 1000] and [1670, 2000] (760 m, 0.38);
    /// the uncovered stretch of line 2 starts exactly at the line boundary.
    #[test]
    fn multi_line_measures_continue() {
        let post = route_post(
            &[
                &[(0.0, 0.0), (1000.0, 0.0)],
                &[(0.0, 500.0), (1000.0, 500.0)],
            ],
            30.0,
        );
        assert_close(post.length_m().unwrap(), 2000.0, 1e-6);
        let path = [(600.0, 0.0), (1000.0, 0.0), (1000.0, 500.0), (700.0, 500.0)];
        let c = run(&post, &shift(2, &[A]), &walk(A, 0, &path, 40.0, 30));
        let r = route_of(&c);
        assert_close(r.covered_m, 760.0, 1e-3);
        assert_close(r.covered_fraction, 0.38, 1e-6);
        assert_stretches(&r.uncovered, &[[0.0, 570.0], [1000.0, 1670.0]], 1e-3);
    }

    /// An uncovered stretch never spans two lines: nothing near the end of line 1 or on
    /// line 2 gives [530, 1000] and [1000, 2000], not [530, 2000]. The map pieces follow.
    #[test]
    fn uncovered_stretches_split_at_line_boundaries() {
        let post = route_post(
            &[
                &[(0.0, 0.0), (1000.0, 0.0)],
                &[(0.0, 500.0), (1000.0, 500.0)],
            ],
            30.0,
        );
        let fixes = walk(A, 0, &[(0.0, 0.0), (500.0, 0.0)], 36.0, 30);
        let c = run(&post, &shift(2, &[A]), &fixes);
        let r = route_of(&c);
        assert_stretches(&r.uncovered, &[[530.0, 1000.0], [1000.0, 2000.0]], 1e-3);

        let pieces = route_pieces(&post, &r.uncovered);
        let flags: Vec<bool> = pieces.iter().map(|p| p.0).collect();
        assert_eq!(flags, [true, false, false]);
        assert_close(pieces[0].1[0], 0.0, 1e-9);
        assert_close(pieces[0].1[1], 530.0, 1e-3);
        assert_eq!(pieces[1].1, r.uncovered[0]);
        assert_eq!(pieces[2].1, r.uncovered[1]);
        let near = |p: LonLat, x: f64, y: f64| distance_m(p, ll(x, y)) < 1e-3;
        assert!(near(pieces[0].2[0], 0.0, 0.0));
        assert!(near(*pieces[0].2.last().unwrap(), 530.0, 0.0));
        assert!(near(pieces[1].2[0], 530.0, 0.0));
        assert!(near(*pieces[1].2.last().unwrap(), 1000.0, 0.0));
        assert!(near(pieces[2].2[0], 0.0, 500.0));
        assert!(near(*pieces[2].2.last().unwrap(), 1000.0, 500.0));
    }

    #[test]
    fn route_pieces_hand_cases() {
        let post = route_post(&[&[(0.0, 0.0), (100.0, 0.0), (100.0, 50.0)]], 30.0);
        // Nothing uncovered: the whole line, covered, with its vertices.
        let all = route_pieces(&post, &[]);
        assert_eq!(all.len(), 1);
        assert!(all[0].0);
        assert_eq!(all[0].2.len(), 3);
        // One stretch across the corner.
        let p = route_pieces(&post, &[[80.0, 120.0]]);
        let spans: Vec<(bool, [f64; 2])> = p.iter().map(|x| (x.0, x.1)).collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[1], (false, [80.0, 120.0]));
        assert!(spans[0].0 && spans[2].0);
        assert_close(spans[2].1[1], 150.0, 1e-9);
        assert_eq!(p[1].2.len(), 3, "the corner vertex is kept");
        // Not a route: nothing to draw.
        assert!(route_pieces(&kiosk(), &[[0.0, 1.0]]).is_empty());
        assert_eq!(kiosk().length_m(), None);
    }

    // ---- presence: hand cases ----------------------------------------------------------------

    /// A kiosk staffed from the start for 6 of 8 hours (a fix every minute; each makes the
    /// member present ±60 s): staffed 0.75, not the required 0.9: partial.
    #[test]
    fn kiosk_staffed_six_of_eight_hours() {
        let s = shift(8, &[A]);
        let c = run(&kiosk(), &s, &at_kiosk(A, 0, 21_540, 60));
        let p = presence_of(&c);
        assert_eq!(p.staffed_fraction, 0.75);
        assert_eq!(p.present_fraction, 0.75);
        assert_eq!(p.max_headcount, 1);
        assert_eq!(p.first_arrival_at, Some(at(0)));
        assert_eq!(p.late_min, Some(0.0));
        assert_eq!(p.unstaffed, vec![[at(21_600), at(28_800)]]);
        assert_eq!(c.status, Status::Partial);
        assert!(c.route.is_none());
    }

    /// Two needed, one there all shift: never staffed, present throughout. There is a
    /// present moment, so partial, not missed.
    #[test]
    fn two_needed_one_present() {
        let mut s = shift(8, &[A, B]);
        s.min_headcount = 2;
        let c = run(&kiosk(), &s, &at_kiosk(A, 0, 28_740, 60));
        let p = presence_of(&c);
        assert_eq!(p.staffed_fraction, 0.0);
        assert_eq!(p.present_fraction, 1.0);
        assert_eq!(p.max_headcount, 1);
        assert_eq!(p.late_min, None);
        assert_eq!(p.first_arrival_at, Some(at(0)));
        assert_eq!(p.unstaffed, vec![[at(0), at(28_800)]]);
        assert_eq!(c.status, Status::Partial);
    }

    /// A there for the first 4 hours, B for the last 6; two needed: staffed 2 of 8 hours,
    /// from 2 h (late 120 min).
    #[test]
    fn headcount_counts_distinct_members() {
        let mut s = shift(8, &[A, B]);
        s.min_headcount = 2;
        let mut fixes = at_kiosk(A, 0, 14_340, 60);
        fixes.extend(at_kiosk(B, 7_260, 28_740, 60));
        // A second phone of A's (same member) while B is away adds nobody.
        fixes.extend(at_kiosk(A, 3_030, 3_090, 30));
        let c = run(&kiosk(), &s, &fixes);
        let p = presence_of(&c);
        assert_eq!(p.staffed_fraction, 0.25);
        assert_eq!(p.present_fraction, 1.0);
        assert_eq!(p.max_headcount, 2);
        assert_eq!(p.late_min, Some(120.0));
        assert_eq!(
            p.unstaffed,
            vec![[at(0), at(7_200)], [at(14_400), at(28_800)]]
        );
    }

    /// Arriving 20 minutes late and staying: staffed 27600/28800 = 0.9583 ≥ 0.9, but late by
    /// 20 min > grace 10: partial. With a grace of 20 or 30 min: met.
    #[test]
    fn late_arrival_beyond_the_grace() {
        let mut s = shift(8, &[A]);
        let fixes = at_kiosk(A, 1_260, 28_740, 60);
        let c = run(&kiosk(), &s, &fixes);
        let p = presence_of(&c);
        assert_close(p.staffed_fraction, 27_600.0 / 28_800.0, 1e-12);
        assert_eq!(p.late_min, Some(20.0));
        assert_eq!(p.first_arrival_at, Some(at(1_200)));
        assert_eq!(p.unstaffed, vec![[at(0), at(1_200)]]);
        assert_eq!(c.status, Status::Partial);
        s.arrival_grace_min = 20;
        assert_eq!(run(&kiosk(), &s, &fixes).status, Status::Met);
        s.arrival_grace_min = 30;
        assert_eq!(run(&kiosk(), &s, &fixes).status, Status::Met);
    }

    /// No eligible fix at all, or eligible fixes that are never at the post: missed.
    #[test]
    fn missed_presence() {
        let s = shift(8, &[A]);
        let c = run(&kiosk(), &s, &[]);
        assert_eq!(c.status, Status::Missed);
        assert_eq!(presence_of(&c).present_fraction, 0.0);
        assert_eq!(presence_of(&c).unstaffed, vec![[at(0), at(28_800)]]);
        let c = run(&kiosk(), &s, &[fix(A, 100, 51.0, 0.0)]);
        assert_eq!(c.eligible_fixes, 1);
        assert_eq!(c.status, Status::Missed);
        let r = route_of(&run(&straight(), &s, &[])).clone();
        assert_eq!(r.first_seen_at, None);
        assert_eq!(run(&straight(), &s, &[]).status, Status::Missed);
    }

    /// Fixes that reach the server after the shift ended count as if they had come in time:
    /// the function is pure, and evaluating later with the full set gives the expectation.
    #[test]
    fn late_fixes_count_as_if_in_time() {
        let s = shift(8, &[A]);
        let set = CoverageSettings::default();
        let first_half = at_kiosk(A, 0, 14_340, 60);
        let second_half = at_kiosk(A, 14_400, 28_740, 60);
        // At the end only the first half had arrived.
        let early = evaluate(&kiosk(), &s, &first_half, s.ends_at, &set);
        assert_eq!(presence_of(&early).staffed_fraction, 0.5);
        assert_eq!(early.status, Status::Partial);
        // Hours later the rest arrives, appended at the end.
        let mut all = first_half.clone();
        all.extend(&second_half);
        let late = evaluate(&kiosk(), &s, &all, s.ends_at + Duration::hours(6), &set);
        let in_time = evaluate(&kiosk(), &s, &all, s.ends_at, &set);
        assert_eq!(late, in_time);
        assert_eq!(presence_of(&late).staffed_fraction, 1.0);
        assert_eq!(late.status, Status::Met);
        assert_eq!(late.evaluated_until, s.ends_at);
        // The same for a route.
        let fixes = walk(A, 0, &[(0.0, 0.0), (2000.0, 0.0)], 36.0, 30);
        let (a, b) = fixes.split_at(20);
        let reordered: Vec<FixIn> = b.iter().chain(a).copied().collect();
        assert_eq!(
            evaluate(
                &straight(),
                &s,
                &reordered,
                s.ends_at + Duration::days(2),
                &set
            ),
            evaluate(&straight(), &s, &fixes, s.ends_at, &set)
        );
    }

    /// While running: pending, figures over [start, now); a fix dated in the future is outside
    /// the evaluated part until now passes it.
    #[test]
    fn pending_while_running() {
        let s = shift(8, &[A]);
        let set = CoverageSettings::default();
        let now = at(7_200);
        let mut fixes = at_kiosk(A, 0, 7_140, 60);
        fixes.push(fix(A, 10_800, 0.0, 0.0));
        let c = evaluate(&kiosk(), &s, &fixes, now, &set);
        assert_eq!(c.status, Status::Pending);
        assert_eq!(c.evaluated_until, now);
        let p = presence_of(&c);
        assert_eq!(p.staffed_fraction, 1.0);
        assert_eq!(p.present_fraction, 1.0);
        assert!(p.unstaffed.is_empty());
        assert_eq!(c.eligible_fixes, 120);
        assert_eq!(c.excluded.outside_shift, 1);
        // A route half walked so far.
        let fixes = walk(A, 0, &[(0.0, 0.0), (1000.0, 0.0)], 36.0, 30);
        let c = evaluate(&straight(), &s, &fixes, now, &set);
        assert_eq!(c.status, Status::Pending);
        assert_close(route_of(&c).covered_m, 1030.0, 1e-3);
        // Not started yet: pending, zero figures, the whole route uncovered.
        let before = t0() - Duration::hours(1);
        let c = evaluate(&straight(), &s, &fixes, before, &set);
        assert_eq!(c.status, Status::Pending);
        assert_eq!(c.evaluated_until, s.starts_at);
        assert_eq!(c.eligible_fixes, 0);
        assert_eq!(route_of(&c).covered_m, 0.0);
        assert_stretches(&route_of(&c).uncovered, &[[0.0, 2000.0]], 1e-6);
        let c = evaluate(&kiosk(), &s, &at_kiosk(A, 0, 600, 60), before, &set);
        let p = presence_of(&c);
        assert_eq!(c.status, Status::Pending);
        assert_eq!((p.staffed_fraction, p.present_fraction), (0.0, 0.0));
        assert!(p.unstaffed.is_empty());
        assert_eq!(p.first_arrival_at, None);
    }

    /// Flagged, inaccurate, outside-shift and other people's fixes are excluded and counted
    /// under the first reason; other people's fixes outside the shift are not counted at all.
    #[test]
    fn exclusions_are_counted_by_first_reason() {
        let s = shift(8, &[A, B]);
        let flagged = |mut f: FixIn, flags: Flags| {
            f.flags = flags;
            f
        };
        let accuracy = |mut f: FixIn, a: f64| {
            f.accuracy_m = a;
            f
        };
        let on = |m, t| fix(m, t, 0.0, 0.0);
        let fixes = vec![
            // Eligible: 5.
            on(A, 60),
            on(A, 120),
            on(B, 180),
            accuracy(on(A, 240), 50.0),
            flagged(on(A, 300), Flags::LOW_ACCURACY | Flags::STATIC_REPEAT),
            // Flagged: 3.
            flagged(on(A, 360), Flags::MOCK_LOCATION),
            flagged(on(B, 420), Flags::IMPLAUSIBLE_SPEED),
            accuracy(flagged(on(A, 480), Flags::MOCK_LOCATION), 200.0),
            // Inaccurate: 1.
            accuracy(on(A, 540), 50.5),
            // Outside the shift: 3 (the end is exclusive).
            on(A, -60),
            on(A, 28_800),
            flagged(on(B, -30), Flags::MOCK_LOCATION),
            // Not a member: 2.
            on(C, 600),
            flagged(on(C, 660), Flags::MOCK_LOCATION),
            // Not counted: someone else, outside the shift.
            on(C, -600),
            on(C, 30_000),
            // A duplicate is the same fix.
            on(A, 60),
            on(C, 600),
        ];
        let c = run(&kiosk(), &s, &fixes);
        assert_eq!(c.eligible_fixes, 5);
        assert_eq!(
            c.excluded,
            Excluded {
                flagged: 3,
                inaccurate: 1,
                outside_shift: 3,
                not_member: 2,
            }
        );
        // Only the eligible fixes made anyone present: 60..180 and 240..300 (±60 s).
        assert_eq!(
            presence_of(&c).present_fraction,
            (360.0 - 0.0) / 28_800.0,
            "present from 0 to 360 s"
        );
    }

    /// "At the post" for points and areas (outer ring minus holes, or within the radius of
    /// any ring).
    #[test]
    fn at_the_post_hand_cases() {
        let Shape::Presence(k) = &kiosk().shape else {
            unreachable!()
        };
        let xy = |x: f64, y: f64| proj().to_xy(ll(x, y));
        let mut scratch = Vec::new();
        let mut inside = |s: &PresenceShape, x: f64, y: f64| {
            let (x, y) = xy(x, y);
            s.contains(x, y, &mut scratch)
        };
        assert!(inside(k, 0.0, 0.0));
        assert!(inside(k, 49.0, 0.0));
        assert!(inside(k, 0.0, -49.9));
        assert!(!inside(k, 51.0, 0.0));
        assert!(!inside(k, 40.0, 40.0));

        let ring = |pts: &[(f64, f64)]| -> Vec<LonLat> {
            let mut r: Vec<LonLat> = pts.iter().map(|&(x, y)| ll(x, y)).collect();
            r.push(r[0]);
            r
        };
        let square = ring(&[(0.0, 0.0), (200.0, 0.0), (200.0, 200.0), (0.0, 200.0)]);
        let hole = ring(&[(75.0, 75.0), (125.0, 75.0), (125.0, 125.0), (75.0, 125.0)]);
        let far = ring(&[(1000.0, 0.0), (1100.0, 0.0), (1050.0, 80.0)]);
        let area = PreparedPost::new(
            PostKind::Area,
            &PostGeometry::MultiPolygon(vec![vec![square, hole], vec![far]]),
            None,
            Some(10.0),
        );
        let Shape::Presence(a) = &area.shape else {
            unreachable!()
        };
        assert!(inside(a, 50.0, 50.0), "inside the outer ring");
        assert!(!inside(a, 100.0, 100.0), "in the hole, 25 m from its edge");
        assert!(inside(a, 100.0, 80.0), "in the hole, 5 m from its edge");
        assert!(inside(a, 205.0, 100.0), "5 m outside");
        assert!(!inside(a, 215.0, 100.0), "15 m outside");
        assert!(inside(a, -6.0, -6.0), "8.5 m from the corner");
        assert!(!inside(a, -8.0, -8.0), "11.3 m from the corner");
        assert!(inside(a, 1050.0, 30.0), "inside the second polygon");
        assert!(!inside(a, 600.0, 100.0), "between the polygons");
        assert!(inside(a, 0.0, 100.0), "on the boundary");
    }

    #[test]
    fn defaults_and_wire_format() {
        let d = CoverageSettings::default();
        assert_eq!((d.max_accuracy_m, d.max_gap_s), (50.0, 120));
        let r = PreparedPost::new(
            PostKind::Route,
            &PostGeometry::LineString(vec![ll(0.0, 0.0), ll(100.0, 0.0)]),
            None,
            Some(5.0),
        );
        let Shape::Route(rs) = &r.shape else {
            unreachable!()
        };
        assert_eq!(rs.corridor_m, DEFAULT_CORRIDOR_M);
        let Shape::Presence(k) = &PreparedPost::new(
            PostKind::Checkpoint,
            &PostGeometry::Point(DISTRICT),
            Some(5.0),
            None,
        )
        .shape
        else {
            unreachable!()
        };
        assert_eq!(k.radius_m, DEFAULT_RADIUS_M);
        assert_eq!(serde_json::to_string(&Status::Met).unwrap(), "\"met\"");
        let c = run(
            &straight(),
            &shift(2, &[A]),
            &walk(A, 0, &[(0.0, 0.0), (500.0, 0.0)], 36.0, 30),
        );
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"status\":\"partial\""), "{json}");
        // serde_json may round a float's last bit on the way back in; compare the figures.
        let back: ShiftCoverage = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (back.status, back.eligible_fixes),
            (c.status, c.eligible_fixes)
        );
        assert_close(route_of(&back).covered_m, route_of(&c).covered_m, 1e-9);
        assert_eq!(route_of(&back).uncovered.len(), 1);
    }

    #[test]
    fn capsule_interval_hand_cases() {
        // Route segment from (0, 0) to (100, 0); parameter s is metres / 100.
        let (a, d) = ((0.0, 0.0), (100.0, 0.0));
        let dd = 10_000.0;
        let iv = |p: (f64, f64), q: (f64, f64), r: f64| capsule_interval(a, d, dd, p, q, r);
        let close = |got: Option<(f64, f64)>, lo: f64, hi: f64| {
            let (g0, g1) = got.expect("an interval");
            assert!(
                (g0 - lo).abs() < 1e-12 && (g1 - hi).abs() < 1e-12,
                "{got:?}"
            );
        };
        // A point on the segment.
        close(iv((50.0, 0.0), (50.0, 0.0), 10.0), 0.4, 0.6);
        // A point 6 m off: ±8 m.
        close(iv((50.0, 6.0), (50.0, 6.0), 10.0), 0.42, 0.58);
        // A parallel track 5 m off from 20 to 30: [20 − √75, 30 + √75].
        let h = 75f64.sqrt() / 100.0;
        close(iv((20.0, 5.0), (30.0, 5.0), 10.0), 0.2 - h, 0.3 + h);
        // Crossing.
        close(iv((50.0, -50.0), (50.0, 50.0), 10.0), 0.4, 0.6);
        // Too far, and beyond the ends.
        assert_eq!(iv((50.0, 11.0), (60.0, 11.0), 10.0), None);
        assert_eq!(iv((120.0, 0.0), (130.0, 0.0), 10.0), None);
        close(iv((105.0, 0.0), (130.0, 0.0), 10.0), 0.95, 1.0);
    }

    // ---- brute-force oracles -----------------------------------------------------------------

    /// A random route shift: a route, a corridor and fixes of 1–3 members (and an outsider).
    #[derive(Clone, Debug)]
    struct RouteCase {
        route: Vec<LonLat>,
        corridor_m: f64,
        max_gap_s: i64,
        members: usize,
        fixes: Vec<FixIn>,
    }

    /// One random fix: who, seconds after the previous one, metres along the route since the
    /// previous one, offset across it (in corridors), and a selector for odd cases.
    type FixStep = (u8, i64, f64, f64, f64, u8);

    fn fix_step() -> impl Strategy<Value = FixStep> {
        (
            0u8..4,
            5i64..300,
            -150.0f64..400.0,
            -3.0f64..3.0,
            -3.0f64..3.0,
            0u8..20,
        )
    }

    fn route_case() -> impl Strategy<Value = RouteCase> {
        (
            (-2000.0f64..2000.0, -2000.0f64..2000.0),
            prop::collection::vec(0.0f64..std::f64::consts::TAU, 1..10),
            200.0f64..5000.0,
            10.0f64..60.0,
            prop_oneof![Just(120i64), 30i64..300],
            1usize..=3,
            prop::collection::vec(fix_step(), 0..=40),
        )
            .prop_map(
                |(start, headings, total, corridor_m, max_gap_s, members, steps)| {
                    let step = total / headings.len() as f64;
                    let mut pts = vec![start];
                    for h in &headings {
                        let p = *pts.last().unwrap();
                        pts.push((p.0 + step * h.cos(), p.1 + step * h.sin()));
                    }
                    let line = MeasuredLine::from_projected(pts.clone());
                    let mut state = [(300i64, 0.0f64); 4];
                    let fixes = steps
                        .iter()
                        .map(|&(who, dt, along, ox, oy, odd)| {
                            let st = &mut state[who as usize];
                            st.0 += dt;
                            st.1 = (st.1 + along).clamp(0.0, total);
                            let (x, y) = line.point_at(st.1);
                            let spread = if odd == 3 { 20.0 } else { 1.0 };
                            let mut f = fix(
                                0,
                                st.0,
                                x + ox * corridor_m * spread,
                                y + oy * corridor_m * spread,
                            );
                            f.member_id = Uuid::from_u128(if who == 3 {
                                C
                            } else {
                                1 + u128::from(who) % members as u128
                            });
                            match odd {
                                0 => f.flags = Flags::MOCK_LOCATION,
                                1 => f.flags = Flags::IMPLAUSIBLE_SPEED,
                                2 => f.accuracy_m = 80.0,
                                _ => {}
                            }
                            f
                        })
                        .collect();
                    RouteCase {
                        route: pts.iter().map(|&(x, y)| ll(x, y)).collect(),
                        corridor_m,
                        max_gap_s,
                        members,
                        fixes,
                    }
                },
            )
    }

    impl RouteCase {
        fn post(&self) -> PreparedPost {
            PreparedPost::new(
                PostKind::Route,
                &PostGeometry::LineString(self.route.clone()),
                Some(self.corridor_m),
                None,
            )
        }

        fn shift(&self) -> ShiftSpec {
            let members: Vec<u128> = (1..=self.members as u128).collect();
            shift(8, &members)
        }

        fn settings(&self) -> CoverageSettings {
            CoverageSettings {
                max_gap_s: self.max_gap_s,
                ..CoverageSettings::default()
            }
        }

        fn evaluate(&self, fixes: &[FixIn]) -> ShiftCoverage {
            let s = self.shift();
            evaluate(&self.post(), &s, fixes, ended(&s), &self.settings())
        }
    }

    /// The rule read literally: eligible fixes, per member in time order, joined when no more
    /// than `max_gap_s` apart; every fix is also a point. Returns the track pieces in the
    /// projection `proj`.
    fn oracle_tracks(
        fixes: &[FixIn],
        s: &ShiftSpec,
        set: &CoverageSettings,
        now: DateTime<Utc>,
        proj: &LocalProjection,
    ) -> Vec<((f64, f64), (f64, f64))> {
        type Track = Vec<(DateTime<Utc>, (u64, u64), (f64, f64))>;
        let mut by_member: BTreeMap<Uuid, Track> = BTreeMap::new();
        for f in fixes {
            let eligible = s.members.contains(&f.member_id)
                && f.recorded_at >= s.starts_at
                && f.recorded_at < s.ends_at.min(now)
                && !f.flags.contains(Flags::MOCK_LOCATION)
                && !f.flags.contains(Flags::IMPLAUSIBLE_SPEED)
                && f.accuracy_m <= set.max_accuracy_m;
            if eligible {
                by_member.entry(f.member_id).or_default().push((
                    f.recorded_at,
                    (f.position.lon.to_bits(), f.position.lat.to_bits()),
                    proj.to_xy(f.position),
                ));
            }
        }
        let mut pieces = Vec::new();
        for track in by_member.values_mut() {
            // Fixes of one member at the same instant (two phones) in the engine's documented
            // order: by position.
            track.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
            for (i, &(t, _, p)) in track.iter().enumerate() {
                pieces.push((p, p));
                if let Some(&(u, _, q)) = track.get(i + 1)
                    && u - t <= Duration::seconds(set.max_gap_s)
                {
                    pieces.push((p, q));
                }
            }
        }
        pieces
    }

    /// How the engine compares with sampling the route: the covered length difference, the
    /// route length, and the samples whose covered state disagrees (beyond a 1 µm tie).
    #[derive(Debug, Default)]
    struct Agreement {
        diff_m: f64,
        length_m: f64,
        hard_mismatches: usize,
        samples: usize,
    }

    fn route_oracle(case: &RouteCase) -> Agreement {
        let s = case.shift();
        let set = case.settings();
        let c = case.evaluate(&case.fixes);
        let r = route_of(&c);
        let proj = LocalProjection::new(case.route[0]);
        let pts: Vec<(f64, f64)> = case.route.iter().map(|&p| proj.to_xy(p)).collect();
        let tracks = oracle_tracks(&case.fixes, &s, &set, ended(&s), &proj);
        let length: f64 = pts
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1))
            .sum();
        // Every metre, finer on short routes so the 0.5 % bound is meaningful.
        let step = (length / 2000.0).min(1.0);
        let mut out = Agreement {
            length_m: length,
            ..Agreement::default()
        };
        let mut covered = 0.0;
        let mut m0 = 0.0;
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let len = (b.0 - a.0).hypot(b.1 - a.1);
            let n = (len / step).ceil().max(1.0) as usize;
            for k in 0..n {
                let f = (k as f64 + 0.5) / n as f64;
                let p = (a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1));
                let m = m0 + f * len;
                let dist = tracks
                    .iter()
                    .map(|&(u, v)| point_segment_distance(p, u, v).0)
                    .fold(f64::INFINITY, f64::min);
                let oracle = dist <= case.corridor_m;
                if oracle {
                    covered += len / n as f64;
                }
                let engine = !r.uncovered.iter().any(|u| u[0] < m && m < u[1]);
                let tie = (dist - case.corridor_m).abs() < 1e-6
                    || r.uncovered
                        .iter()
                        .any(|u| (u[0] - m).abs() < 1e-6 || (u[1] - m).abs() < 1e-6);
                if engine != oracle && !tie {
                    out.hard_mismatches += 1;
                }
                out.samples += 1;
            }
            m0 += len;
        }
        out.diff_m = (covered - r.covered_m).abs();
        out
    }

    /// Structural facts about any route result.
    fn check_route_shape(r: &RouteFigures) -> Result<(), TestCaseError> {
        let mut prev = 0.0;
        let mut missing = 0.0;
        for u in &r.uncovered {
            prop_assert!(u[0] >= prev - 1e-9 && u[1] > u[0], "{:?}", r.uncovered);
            prev = u[1];
            missing += u[1] - u[0];
        }
        prop_assert!(prev <= r.length_m + 1e-9);
        prop_assert!((r.covered_m + missing - r.length_m).abs() < 1e-6);
        prop_assert!((0.0..=1.0).contains(&r.covered_fraction));
        prop_assert!((r.covered_fraction * r.length_m - r.covered_m).abs() < 1e-6);
        Ok(())
    }

    /// A random presence shift at a kiosk.
    #[derive(Clone, Debug)]
    struct PresenceCase {
        radius_m: f64,
        duration_s: i64,
        max_gap_s: i64,
        min_headcount: u32,
        required_presence: f64,
        arrival_grace_min: i64,
        /// Seconds after the start when evaluated, if before the end.
        running_at: Option<i64>,
        members: usize,
        fixes: Vec<FixIn>,
    }

    fn presence_case() -> impl Strategy<Value = PresenceCase> {
        (
            20.0f64..80.0,
            600i64..2400,
            2i64..600,
            1u32..=3,
            prop_oneof![Just(0.5), Just(0.9)],
            0i64..20,
            prop::option::weighted(0.25, 0.0f64..1.0),
            1usize..=3,
            prop::collection::vec(
                (
                    0u8..4,
                    -0.05f64..1.05,
                    0.0f64..2.0,
                    0.0f64..std::f64::consts::TAU,
                    0u8..20,
                ),
                0..=40,
            ),
        )
            .prop_map(
                |(
                    radius_m,
                    duration_s,
                    max_gap_s,
                    min_headcount,
                    req,
                    grace,
                    run,
                    members,
                    raw,
                )| {
                    let fixes = raw
                        .iter()
                        .map(|&(who, when, dist, bearing, odd)| {
                            let d = dist * radius_m;
                            let mut f = fix(
                                0,
                                (when * duration_s as f64).round() as i64,
                                d * bearing.cos(),
                                d * bearing.sin(),
                            );
                            f.member_id = Uuid::from_u128(if who == 3 {
                                C
                            } else {
                                1 + u128::from(who) % members as u128
                            });
                            match odd {
                                0 => f.flags = Flags::MOCK_LOCATION,
                                1 => f.flags = Flags::IMPLAUSIBLE_SPEED,
                                2 => f.accuracy_m = 80.0,
                                _ => {}
                            }
                            f
                        })
                        .collect();
                    PresenceCase {
                        radius_m,
                        duration_s,
                        max_gap_s,
                        min_headcount,
                        required_presence: req,
                        arrival_grace_min: grace,
                        running_at: run.map(|f| (f * duration_s as f64) as i64),
                        members,
                        fixes,
                    }
                },
            )
    }

    impl PresenceCase {
        fn post(&self) -> PreparedPost {
            PreparedPost::new(
                PostKind::Kiosk,
                &PostGeometry::Point(DISTRICT),
                None,
                Some(self.radius_m),
            )
        }

        fn shift(&self) -> ShiftSpec {
            let members: Vec<u128> = (1..=self.members as u128).collect();
            let mut s = shift(1, &members);
            s.ends_at = at(self.duration_s);
            s.min_headcount = self.min_headcount;
            s.required_presence = self.required_presence;
            s.arrival_grace_min = self.arrival_grace_min;
            s
        }

        fn now(&self) -> DateTime<Utc> {
            self.running_at
                .map(at)
                .unwrap_or_else(|| ended(&self.shift()))
        }

        fn settings(&self) -> CoverageSettings {
            CoverageSettings {
                max_gap_s: self.max_gap_s,
                ..CoverageSettings::default()
            }
        }

        fn evaluate(&self, fixes: &[FixIn]) -> ShiftCoverage {
            evaluate(
                &self.post(),
                &self.shift(),
                fixes,
                self.now(),
                &self.settings(),
            )
        }
    }

    /// Samples the evaluated part every half second (fix times are whole seconds and the
    /// window half-width a multiple of half a second, so every boundary falls between
    /// samples and the figures must agree exactly).
    fn presence_oracle(case: &PresenceCase) -> Result<(), TestCaseError> {
        let s = case.shift();
        let set = case.settings();
        let end_s = case.running_at.unwrap_or(case.duration_s);
        let h = case.max_gap_s as f64 / 2.0;
        let mut eligible = 0usize;
        let mut present_fixes: Vec<(Uuid, f64)> = Vec::new();
        for f in &case.fixes {
            let t = (f.recorded_at - s.starts_at).num_seconds();
            if s.members.contains(&f.member_id)
                && (0..end_s).contains(&t)
                && !f.flags.contains(Flags::MOCK_LOCATION)
                && !f.flags.contains(Flags::IMPLAUSIBLE_SPEED)
                && f.accuracy_m <= set.max_accuracy_m
            {
                eligible += 1;
                let d = distance_m(DISTRICT, f.position);
                prop_assume!((d - case.radius_m).abs() > 0.01);
                if d <= case.radius_m {
                    present_fixes.push((f.member_id, t as f64));
                }
            }
        }
        let n = (end_s * 2) as usize;
        let (mut present, mut staffed, mut max_hc) = (0usize, 0usize, 0u32);
        let (mut first_present, mut first_staffed) = (None, None);
        let mut unstaffed: Vec<[usize; 2]> = Vec::new();
        let need = case.min_headcount.max(1);
        for k in 0..n {
            let tau = k as f64 * 0.5 + 0.25;
            let mut who: Vec<Uuid> = present_fixes
                .iter()
                .filter(|(_, t)| t - h <= tau && tau < t + h)
                .map(|(m, _)| *m)
                .collect();
            who.sort();
            who.dedup();
            let hc = who.len() as u32;
            max_hc = max_hc.max(hc);
            if hc >= 1 {
                present += 1;
                first_present.get_or_insert(k);
            }
            if hc >= need {
                staffed += 1;
                first_staffed.get_or_insert(k);
            } else if let Some(last) = unstaffed.last_mut().filter(|u| u[1] == k) {
                last[1] = k + 1;
            } else {
                unstaffed.push([k, k + 1]);
            }
        }
        let half = |k: usize| s.starts_at + Duration::milliseconds(500 * k as i64);
        let c = case.evaluate(&case.fixes);
        let p = presence_of(&c);
        let share = |x: usize| if n > 0 { x as f64 / n as f64 } else { 0.0 };
        prop_assert_eq!(c.eligible_fixes as usize, eligible);
        prop_assert_eq!(p.present_fraction, share(present));
        prop_assert_eq!(p.staffed_fraction, share(staffed));
        prop_assert_eq!(p.max_headcount, max_hc);
        prop_assert_eq!(p.first_arrival_at, first_present.map(half));
        match (p.late_min, first_staffed) {
            (None, None) => {}
            (Some(l), Some(k)) => prop_assert!((l - k as f64 * 0.5 / 60.0).abs() < 1e-9),
            other => prop_assert!(false, "late_min {:?}", other),
        }
        let expected: Vec<[DateTime<Utc>; 2]> =
            unstaffed.iter().map(|u| [half(u[0]), half(u[1])]).collect();
        prop_assert_eq!(&p.unstaffed, &expected);
        let status = if case.running_at.is_some() {
            Status::Pending
        } else if eligible == 0 || present == 0 {
            Status::Missed
        } else if share(staffed) >= case.required_presence
            && first_staffed.is_some_and(|k| k as f64 * 0.5 / 60.0 <= case.arrival_grace_min as f64)
        {
            Status::Met
        } else {
            Status::Partial
        };
        prop_assert_eq!(c.status, status);
        Ok(())
    }

    proptest! {
        // No regression files: this module's tests must not write next to the sources.
        #![proptest_config(ProptestConfig {
            cases: 1000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The engine agrees with sampling the route every metre against every track segment
        /// and point: point by point (except exact ties) and within 0.5 % of the length.
        #[test]
        fn prop_route_matches_brute_force(case in route_case()) {
            let c = case.evaluate(&case.fixes);
            check_route_shape(route_of(&c))?;
            let a = route_oracle(&case);
            prop_assert_eq!(a.hard_mismatches, 0, "{:?}", a);
            prop_assert!(a.diff_m <= 0.005 * a.length_m, "{:?}", a);
        }

        /// Presence agrees exactly with sampling the shift every half second.
        #[test]
        fn prop_presence_matches_brute_force(case in presence_case()) {
            presence_oracle(&case)?;
        }
    }

    /// Shuffles with a small deterministic generator (splitmix64).
    fn shuffled<T: Copy>(v: &[T], seed: u64) -> Vec<T> {
        let mut out = v.to_vec();
        let mut x = seed;
        for i in (1..out.len()).rev() {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            out.swap(i, (z % (i as u64 + 1)) as usize);
        }
        out
    }

    /// Copies of some fixes with a flag that excludes them (moved, so they would count).
    fn flagged_copies(fixes: &[FixIn], pick: &[bool]) -> Vec<FixIn> {
        fixes
            .iter()
            .zip(pick.iter().cycle())
            .filter(|(_, p)| **p)
            .enumerate()
            .map(|(i, (f, _))| {
                let mut g = *f;
                g.flags = if i % 2 == 0 {
                    Flags::MOCK_LOCATION
                } else {
                    Flags::IMPLAUSIBLE_SPEED | Flags::LOW_ACCURACY
                };
                g.position.lon += 0.0005;
                g.recorded_at += Duration::seconds(7);
                g
            })
            .collect()
    }

    fn without_excluded(mut c: ShiftCoverage) -> ShiftCoverage {
        c.excluded = Excluded::default();
        c
    }

    /// Extra eligible fixes that never fall between two joined fixes of the same member (that
    /// would replace a track segment by a detour, which can lose coverage).
    fn non_splitting(base: &[FixIn], extra: &[FixIn], s: &ShiftSpec, gap_s: i64) -> Vec<FixIn> {
        let gap = Duration::seconds(gap_s);
        let mut tracks: BTreeMap<Uuid, Vec<DateTime<Utc>>> = BTreeMap::new();
        for f in base.iter().filter(|f| s.members.contains(&f.member_id)) {
            tracks.entry(f.member_id).or_default().push(f.recorded_at);
        }
        for t in tracks.values_mut() {
            t.sort();
        }
        extra
            .iter()
            .filter(|f| {
                tracks.get(&f.member_id).is_none_or(|t| {
                    !t.windows(2).any(|w| {
                        w[1] - w[0] <= gap && w[0] <= f.recorded_at && f.recorded_at <= w[1]
                    })
                })
            })
            .copied()
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 200,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The order fixes arrive in, duplicates and flagged fixes change nothing (flagged ones
        /// only the exclusion counts), for routes.
        #[test]
        fn prop_route_invariants(
            case in route_case(),
            seed in any::<u64>(),
            pick in prop::collection::vec(any::<bool>(), 1..8),
        ) {
            let base = case.evaluate(&case.fixes);
            prop_assert_eq!(&case.evaluate(&shuffled(&case.fixes, seed)), &base);
            let mut dup = case.fixes.clone();
            dup.extend(case.fixes.iter().zip(pick.iter().cycle()).filter(|x| *x.1).map(|x| *x.0));
            prop_assert_eq!(&case.evaluate(&shuffled(&dup, seed ^ 1)), &base);
            let mut more = case.fixes.clone();
            more.extend(flagged_copies(&case.fixes, &pick));
            prop_assert_eq!(
                without_excluded(case.evaluate(&more)),
                without_excluded(base.clone())
            );
        }

        /// Adding eligible fixes never lowers route coverage.
        #[test]
        fn prop_route_monotone(case in route_case(), extra in route_case()) {
            let s = case.shift();
            let base = case.evaluate(&case.fixes);
            let mut more = case.fixes.clone();
            more.extend(non_splitting(&case.fixes, &extra.fixes, &s, case.max_gap_s));
            let c = case.evaluate(&more);
            let (b, m) = (route_of(&base), route_of(&c));
            prop_assert!(m.covered_m >= b.covered_m - 1e-6, "{} < {}", m.covered_m, b.covered_m);
            // Every uncovered point after is uncovered before.
            for u in &m.uncovered {
                let mid = 0.5 * (u[0] + u[1]);
                prop_assert!(b.uncovered.iter().any(|v| v[0] <= mid + 1e-6 && mid <= v[1] + 1e-6));
            }
        }

        /// The same invariants for presence, and monotone figures under any added fixes.
        #[test]
        fn prop_presence_invariants(
            case in presence_case(),
            extra in presence_case(),
            seed in any::<u64>(),
            pick in prop::collection::vec(any::<bool>(), 1..8),
        ) {
            let base = case.evaluate(&case.fixes);
            prop_assert_eq!(&case.evaluate(&shuffled(&case.fixes, seed)), &base);
            let mut dup = case.fixes.clone();
            dup.extend(case.fixes.iter().zip(pick.iter().cycle()).filter(|x| *x.1).map(|x| *x.0));
            prop_assert_eq!(&case.evaluate(&shuffled(&dup, seed ^ 1)), &base);
            let mut flagged = case.fixes.clone();
            flagged.extend(flagged_copies(&case.fixes, &pick));
            prop_assert_eq!(
                without_excluded(case.evaluate(&flagged)),
                without_excluded(base.clone())
            );
            let mut more = case.fixes.clone();
            more.extend(&extra.fixes);
            let (b, m) = (base.presence.unwrap(), case.evaluate(&more).presence.unwrap());
            prop_assert!(m.staffed_fraction >= b.staffed_fraction);
            prop_assert!(m.present_fraction >= b.present_fraction);
            prop_assert!(m.max_headcount >= b.max_headcount);
        }

        /// "At an area" agrees with geo's Euclidean distance to the polygons (0 inside).
        #[test]
        fn prop_area_matches_geo(
            outer in prop::collection::vec((0.0f64..1.0, 100.0f64..300.0), 8..16),
            hole in prop::collection::vec((0.0f64..1.0, 20.0f64..80.0), 3..8),
            with_hole in any::<bool>(),
            radius_m in 0.0f64..60.0,
            points in prop::collection::vec((-400.0f64..1100.0, -400.0f64..400.0), 50),
        ) {
            use geo::{Distance, Euclidean, LineString, Point, Polygon};
            let star = |v: &[(f64, f64)], cx: f64| -> Vec<(f64, f64)> {
                let mut v = v.to_vec();
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut pts: Vec<(f64, f64)> = v
                    .iter()
                    .enumerate()
                    .map(|(i, &(jitter, r))| {
                        // Gaps of at most 1.3/8 of a turn keep every outer edge more than
                        // 100 m · cos 29.25° = 87 m from the centre, so the hole (≤ 80 m) is
                        // inside: a valid polygon.
                        let a = (i as f64 + 0.3 * jitter) / v.len() as f64 * std::f64::consts::TAU;
                        (cx + r * a.cos(), r * a.sin())
                    })
                    .collect();
                pts.push(pts[0]);
                pts
            };
            let mut polys = vec![vec![star(&outer, 0.0)]];
            if with_hole {
                polys[0].push(star(&hole, 0.0));
            }
            polys.push(vec![star(&outer, 700.0)]);
            let geometry = PostGeometry::MultiPolygon(
                polys
                    .iter()
                    .map(|p| p.iter().map(|r| r.iter().map(|&(x, y)| ll(x, y)).collect()).collect())
                    .collect(),
            );
            let post = PreparedPost::new(PostKind::Area, &geometry, None, Some(radius_m));
            let Shape::Presence(shape) = &post.shape else { unreachable!() };
            // The oracle in the post's own projection, computed independently.
            let pp = LocalProjection::new(ll(polys[0][0][0].0, polys[0][0][0].1));
            let geo_polys: Vec<Polygon<f64>> = polys
                .iter()
                .map(|p| {
                    let ring = |r: &Vec<(f64, f64)>| -> LineString<f64> {
                        r.iter().map(|&(x, y)| pp.to_xy(ll(x, y))).collect::<Vec<_>>().into()
                    };
                    Polygon::new(ring(&p[0]), p[1..].iter().map(ring).collect())
                })
                .collect();
            let mut scratch = Vec::new();
            for &(x, y) in &points {
                let (px, py) = pp.to_xy(ll(x, y));
                let d = geo_polys
                    .iter()
                    .map(|g| Euclidean.distance(&Point::new(px, py), g))
                    .fold(f64::INFINITY, f64::min);
                if (d - radius_m).abs() < 1e-6 {
                    continue;
                }
                prop_assert_eq!(shape.contains(px, py, &mut scratch), d <= radius_m, "{} {} d={}", x, y, d);
            }
        }
    }

    /// Thousands of random cases against the oracles, with the agreement figures printed
    /// (`cargo test --release -p patrol-server --lib coverage -- --ignored --nocapture`).
    #[test]
    #[ignore = "a long sweep; run in release"]
    fn oracle_sweep_report() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = route_case();
        let cases = 5000;
        let (mut worst_rel, mut worst_m, mut sum_rel) = (0.0f64, 0.0f64, 0.0);
        let (mut mismatches, mut samples, mut covered_cases) = (0usize, 0usize, 0usize);
        for _ in 0..cases {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            let a = route_oracle(&case);
            let rel = a.diff_m / a.length_m;
            worst_rel = worst_rel.max(rel);
            worst_m = worst_m.max(a.diff_m);
            sum_rel += rel;
            mismatches += a.hard_mismatches;
            samples += a.samples;
            if route_of(&case.evaluate(&case.fixes)).covered_m > 0.0 {
                covered_cases += 1;
            }
        }
        println!(
            "route oracle: {cases} cases ({covered_cases} with coverage), {samples} samples, \
             {mismatches} pointwise mismatches; covered length within {worst_m:.4} m, \
             worst {:.5} % of the route, mean {:.6} %",
            worst_rel * 100.0,
            sum_rel / cases as f64 * 100.0
        );
        assert_eq!(mismatches, 0);
        assert!(worst_rel <= 0.005);

        let strategy = presence_case();
        let mut checked = 0;
        for _ in 0..cases {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            match presence_oracle(&case) {
                Ok(()) => checked += 1,
                Err(TestCaseError::Reject(_)) => {}
                Err(e) => panic!("{e} in {case:?}"),
            }
        }
        println!(
            "presence oracle: {checked} of {cases} cases agree exactly (the rest had a fix within 1 cm of the radius)"
        );
    }

    // ---- micro-benchmark -------------------------------------------------------------------

    /// 100 000 fixes on an 8 km route (`cargo test --release -p patrol-server --lib coverage
    /// -- --ignored --nocapture`).
    #[test]
    #[ignore = "a benchmark; run in release"]
    fn bench_route_100k_fixes() {
        use std::time::Instant;
        // A zigzag route of 40 vertices, about 8 km.
        let pts: Vec<(f64, f64)> = (0..40)
            .map(|i| (i as f64 * 200.0, if i % 2 == 0 { 0.0 } else { 60.0 }))
            .collect();
        let post = route_post(&[&pts], 30.0);
        let line = MeasuredLine::from_projected(pts.clone());
        let len = line.length_m();
        let members = 20u128;
        let per_member = 5_000;
        let mut seed = 0x1234_5678_u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut fixes = Vec::with_capacity((members * per_member) as usize);
        for m in 1..=members {
            let mut t = 0i64;
            let mut along = rnd() * len;
            let mut dir = 1.0;
            for _ in 0..per_member {
                t += if rnd() < 0.05 { 200 } else { 5 };
                along += dir * 6.5;
                if !(0.0..=len).contains(&along) {
                    dir = -dir;
                    along = along.clamp(0.0, len);
                }
                let (x, y) = line.point_at(along);
                fixes.push(fix(
                    m,
                    t,
                    x + (rnd() - 0.5) * 20.0,
                    y + (rnd() - 0.5) * 20.0,
                ));
            }
        }
        let members: Vec<u128> = (1..=members).collect();
        let mut s = shift(10, &members);
        s.ends_at = at(per_member as i64 * 30);
        let set = CoverageSettings::default();
        let now = s.ends_at;
        let time = |fixes: &[FixIn]| {
            let mut best = f64::INFINITY;
            let mut result = None;
            for _ in 0..10 {
                let start = Instant::now();
                let c = evaluate(&post, &s, fixes, now, &set);
                best = best.min(start.elapsed().as_secs_f64());
                result = Some(c);
            }
            (best, result.unwrap())
        };
        let (sorted_s, c) = time(&fixes);
        // As a database hands them out: in time order across all members.
        let mut by_time = fixes.clone();
        by_time.sort_by_key(|f| f.recorded_at);
        let (by_time_s, c1) = time(&by_time);
        let shuffled_fixes = shuffled(&fixes, 42);
        let (shuffled_s, c2) = time(&shuffled_fixes);
        assert_eq!(c, c1);
        assert_eq!(c, c2);
        let r = route_of(&c);
        let n = fixes.len() as f64;
        println!(
            "route: {} fixes, covered {:.1} % in {} stretches; by member and time {:.2} ms ({:.2} M fixes/s), by time {:.2} ms ({:.2} M fixes/s), shuffled {:.2} ms ({:.2} M fixes/s)",
            fixes.len(),
            r.covered_fraction * 100.0,
            r.uncovered.len(),
            sorted_s * 1e3,
            n / sorted_s / 1e6,
            by_time_s * 1e3,
            n / by_time_s / 1e6,
            shuffled_s * 1e3,
            n / shuffled_s / 1e6,
        );
        let kiosk_fixes: Vec<FixIn> = fixes
            .iter()
            .map(|f| {
                let mut g = *f;
                let (x, y) = proj().to_xy(f.position);
                g.position = ll(x / 100.0, y);
                g
            })
            .collect();
        let start = Instant::now();
        let k = evaluate(&kiosk(), &s, &kiosk_fixes, now, &set);
        let ks = start.elapsed().as_secs_f64();
        println!(
            "kiosk: {} fixes, present {:.1} % in {:.2} ms ({:.2} M fixes/s)",
            kiosk_fixes.len(),
            presence_of(&k).present_fraction * 100.0,
            ks * 1e3,
            n / ks / 1e6
        );
    }
}
