//! Post geometries: GeoJSON read and checked against the kind of post, converted to
//! WGS-84, measured.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    datum::Datum,
    geodesy::{LonLat, polyline_length_m},
};

/// Most vertices a post geometry may have.
pub const MAX_VERTICES: usize = 10_000;

/// Kind of a post.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostKind {
    /// A patrol route: LineString or MultiLineString, covered within `corridor_m`.
    Route,
    /// An armed checkpoint: a Point, present within `radius_m`.
    Checkpoint,
    /// A security kiosk: a Point, present within `radius_m`.
    Kiosk,
    /// A volunteer squad's patch: Polygon or MultiPolygon, present inside or within `radius_m`.
    Area,
}

impl PostKind {
    /// Every kind.
    pub const ALL: [PostKind; 4] = [
        PostKind::Route,
        PostKind::Checkpoint,
        PostKind::Kiosk,
        PostKind::Area,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PostKind::Route => "route",
            PostKind::Checkpoint => "checkpoint",
            PostKind::Kiosk => "kiosk",
            PostKind::Area => "area",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<PostKind> {
        PostKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The GeoJSON types this kind accepts.
    pub fn accepted_types(self) -> &'static [&'static str] {
        match self {
            PostKind::Route => &["LineString", "MultiLineString"],
            PostKind::Checkpoint | PostKind::Kiosk => &["Point"],
            PostKind::Area => &["Polygon", "MultiPolygon"],
        }
    }
}

/// One thing wrong with a geometry: where (a JSON path below the geometry) and what.
#[derive(Clone, Debug, PartialEq)]
pub struct GeometryError {
    /// Path below the geometry object, e.g. `coordinates[3][1]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A checked geometry in WGS-84.
#[derive(Clone, Debug, PartialEq)]
pub enum PostGeometry {
    /// A single position.
    Point(LonLat),
    /// One line (`LineString`).
    LineString(Vec<LonLat>),
    /// Several lines.
    MultiLineString(Vec<Vec<LonLat>>),
    /// Rings: the outer one first, then holes.
    Polygon(Vec<Vec<LonLat>>),
    /// Several polygons.
    MultiPolygon(Vec<Vec<Vec<LonLat>>>),
}

fn err(path: impl Into<String>, message: impl Into<String>) -> GeometryError {
    GeometryError {
        path: path.into(),
        message: message.into(),
    }
}

fn round7(v: f64) -> f64 {
    (v * 1e7).round() / 1e7
}

struct Reader {
    errors: Vec<GeometryError>,
    vertices: usize,
}

impl Reader {
    fn position(&mut self, v: &Value, path: &str) -> Option<LonLat> {
        self.vertices += 1;
        let Some(items) = v.as_array() else {
            self.errors
                .push(err(path, "a position must be an array [lon, lat]"));
            return None;
        };
        if !(2..=3).contains(&items.len()) {
            self.errors.push(err(
                path,
                "a position must have 2 numbers (an optional third, altitude, is ignored)",
            ));
            return None;
        }
        let nums: Vec<Option<f64>> = items.iter().map(Value::as_f64).collect();
        let (Some(lon), Some(lat)) = (nums[0], nums[1]) else {
            self.errors
                .push(err(path, "longitude and latitude must be numbers"));
            return None;
        };
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            self.errors.push(err(
                format!("{path}[0]"),
                "longitude must be between -180 and 180",
            ));
            return None;
        }
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            self.errors.push(err(
                format!("{path}[1]"),
                "latitude must be between -90 and 90",
            ));
            return None;
        }
        if lon == 0.0 && lat == 0.0 {
            self.errors
                .push(err(path, "(0, 0) is not a real place of duty"));
            return None;
        }
        Some(LonLat { lon, lat })
    }

    fn positions(&mut self, v: &Value, path: &str, min: usize, what: &str) -> Option<Vec<LonLat>> {
        let Some(items) = v.as_array() else {
            self.errors
                .push(err(path, format!("{what} must be an array of positions")));
            return None;
        };
        if items.len() < min {
            self.errors
                .push(err(path, format!("{what} needs at least {min} positions")));
            return None;
        }
        // Over the limit: counted, not read, so a huge geometry costs no more than its size.
        if self.vertices + items.len() > MAX_VERTICES {
            self.vertices += items.len();
            return None;
        }
        let before = self.errors.len();
        let out: Vec<LonLat> = items
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.position(p, &format!("{path}[{i}]")))
            .collect();
        (self.errors.len() == before).then_some(out)
    }

    fn line(&mut self, v: &Value, path: &str) -> Option<Vec<LonLat>> {
        let line = self.positions(v, path, 2, "a line")?;
        if polyline_length_m(&line) <= 0.0 {
            self.errors.push(err(
                path,
                "a line needs at least 2 distinct positions (its length must be above 0)",
            ));
            return None;
        }
        Some(line)
    }

    fn ring(&mut self, v: &Value, path: &str) -> Option<Vec<LonLat>> {
        let ring = self.positions(v, path, 4, "a polygon ring")?;
        if ring.first() != ring.last() {
            self.errors.push(err(
                path,
                "a polygon ring must be closed: its last position equal to its first",
            ));
            return None;
        }
        // Linear, not a comparison of every pair: a ring may have thousands of positions.
        let distinct = ring[..ring.len() - 1]
            .iter()
            .map(|p| ((p.lon + 0.0).to_bits(), (p.lat + 0.0).to_bits()))
            .collect::<std::collections::HashSet<_>>()
            .len();
        if distinct < 3 {
            self.errors.push(err(
                path,
                "a polygon ring needs at least 3 distinct positions",
            ));
            return None;
        }
        Some(ring)
    }

    fn list<T>(
        &mut self,
        v: &Value,
        path: &str,
        what: &str,
        mut each: impl FnMut(&mut Self, &Value, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(items) = v.as_array() else {
            self.errors
                .push(err(path, format!("must be an array of {what}")));
            return None;
        };
        if items.is_empty() {
            self.errors
                .push(err(path, format!("needs at least one of {what}")));
            return None;
        }
        let before = self.errors.len();
        let mut out = Vec::with_capacity(items.len().min(1024));
        for (i, item) in items.iter().enumerate() {
            if self.vertices > MAX_VERTICES {
                return None;
            }
            if let Some(t) = each(self, item, &format!("{path}[{i}]")) {
                out.push(t);
            }
        }
        (self.errors.len() == before).then_some(out)
    }
}

impl PostGeometry {
    /// Reads a GeoJSON geometry for a post of `kind`, given in `datum`, and returns it in
    /// WGS-84 (rounded to 1e-7°, about 1 cm), or every problem found.
    pub fn parse(
        kind: PostKind,
        value: &Value,
        datum: Datum,
    ) -> Result<PostGeometry, Vec<GeometryError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![err("", "must be a GeoJSON geometry object")]);
        };
        if let Some(key) = object
            .keys()
            .find(|k| !["type", "coordinates", "bbox"].contains(&k.as_str()))
        {
            return Err(vec![err(
                key.as_str(),
                "is not a member of a GeoJSON geometry",
            )]);
        }
        let Some(kind_name) = object.get("type").and_then(Value::as_str) else {
            return Err(vec![err("type", "must be a GeoJSON geometry type")]);
        };
        if !kind.accepted_types().contains(&kind_name) {
            return Err(vec![err(
                "type",
                format!(
                    "a {} post needs a {} geometry, not {kind_name:?}",
                    kind.as_str(),
                    kind.accepted_types().join(" or ")
                ),
            )]);
        }
        let Some(coordinates) = object.get("coordinates") else {
            return Err(vec![err("coordinates", "is required")]);
        };
        let mut r = Reader {
            errors: Vec::new(),
            vertices: 0,
        };
        let path = "coordinates";
        let parsed = match kind_name {
            "Point" => r.position(coordinates, path).map(PostGeometry::Point),
            "LineString" => r.line(coordinates, path).map(PostGeometry::LineString),
            "MultiLineString" => r
                .list(coordinates, path, "lines", Reader::line)
                .map(PostGeometry::MultiLineString),
            "Polygon" => r
                .list(coordinates, path, "rings", Reader::ring)
                .map(PostGeometry::Polygon),
            "MultiPolygon" => r
                .list(coordinates, path, "polygons", |r, v, p| {
                    r.list(v, p, "rings", Reader::ring)
                })
                .map(PostGeometry::MultiPolygon),
            _ => unreachable!("accepted_types holds only these"),
        };
        if r.vertices > MAX_VERTICES {
            return Err(vec![err(
                path,
                format!(
                    "has at least {} positions; at most {MAX_VERTICES} are allowed",
                    r.vertices
                ),
            )]);
        }
        match parsed {
            Some(g) if r.errors.is_empty() => Ok(g.map(|p| {
                let w = datum.to_wgs84(p);
                LonLat {
                    lon: round7(w.lon),
                    lat: round7(w.lat),
                }
            })),
            _ => Err(r.errors),
        }
    }

    fn map(self, f: impl Fn(LonLat) -> LonLat + Copy) -> PostGeometry {
        let line = |l: Vec<LonLat>| l.into_iter().map(f).collect::<Vec<_>>();
        let rings = |rs: Vec<Vec<LonLat>>| rs.into_iter().map(line).collect::<Vec<_>>();
        match self {
            PostGeometry::Point(p) => PostGeometry::Point(f(p)),
            PostGeometry::LineString(l) => PostGeometry::LineString(line(l)),
            PostGeometry::MultiLineString(ls) => PostGeometry::MultiLineString(rings(ls)),
            PostGeometry::Polygon(rs) => PostGeometry::Polygon(rings(rs)),
            PostGeometry::MultiPolygon(ps) => {
                PostGeometry::MultiPolygon(ps.into_iter().map(rings).collect())
            }
        }
    }

    /// Every position, in order.
    pub fn positions(&self) -> Vec<LonLat> {
        match self {
            PostGeometry::Point(p) => vec![*p],
            PostGeometry::LineString(l) => l.clone(),
            PostGeometry::MultiLineString(ls) | PostGeometry::Polygon(ls) => ls.concat(),
            PostGeometry::MultiPolygon(ps) => ps.iter().flat_map(|rs| rs.concat()).collect(),
        }
    }

    /// The lines of a route (empty for other geometries).
    pub fn lines(&self) -> Vec<&[LonLat]> {
        match self {
            PostGeometry::LineString(l) => vec![l.as_slice()],
            PostGeometry::MultiLineString(ls) => ls.iter().map(Vec::as_slice).collect(),
            _ => Vec::new(),
        }
    }

    /// Length in metres along every line; `None` for points and polygons.
    pub fn length_m(&self) -> Option<f64> {
        match self {
            PostGeometry::LineString(_) | PostGeometry::MultiLineString(_) => {
                Some(self.lines().into_iter().map(polyline_length_m).sum())
            }
            _ => None,
        }
    }

    /// `[min_lon, min_lat, max_lon, max_lat]`.
    pub fn bbox(&self) -> [f64; 4] {
        self.positions().iter().fold(
            [
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ],
            |b, p| {
                [
                    b[0].min(p.lon),
                    b[1].min(p.lat),
                    b[2].max(p.lon),
                    b[3].max(p.lat),
                ]
            },
        )
    }

    /// The GeoJSON geometry object.
    pub fn to_geojson(&self) -> Value {
        let pos = |p: &LonLat| json!([p.lon, p.lat]);
        let line = |l: &Vec<LonLat>| l.iter().map(pos).collect::<Vec<_>>();
        let rings = |rs: &Vec<Vec<LonLat>>| rs.iter().map(line).collect::<Vec<_>>();
        match self {
            PostGeometry::Point(p) => json!({"type": "Point", "coordinates": pos(p)}),
            PostGeometry::LineString(l) => json!({"type": "LineString", "coordinates": line(l)}),
            PostGeometry::MultiLineString(ls) => {
                json!({"type": "MultiLineString", "coordinates": rings(ls)})
            }
            PostGeometry::Polygon(rs) => json!({"type": "Polygon", "coordinates": rings(rs)}),
            PostGeometry::MultiPolygon(ps) => {
                json!({"type": "MultiPolygon", "coordinates": ps.iter().map(rings).collect::<Vec<_>>()})
            }
        }
    }

    /// Reads back a stored geometry (already checked and in WGS-84).
    pub fn from_stored(kind: PostKind, text: &str) -> Option<PostGeometry> {
        let value: Value = serde_json::from_str(text).ok()?;
        PostGeometry::parse(kind, &value, Datum::Wgs84).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed ring of `n` distinct positions on a small circle, as GeoJSON coordinates.
    fn circle(n: usize) -> serde_json::Value {
        let mut ring: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let a = i as f64 / n as f64 * std::f64::consts::TAU;
                [108.95 + 0.01 * a.cos(), 34.22 + 0.01 * a.sin()]
            })
            .collect();
        ring.push(ring[0]);
        serde_json::json!([ring])
    }

    #[test]
    fn a_huge_polygon_is_refused_by_its_size_without_reading_it() {
        let geometry = serde_json::json!({"type": "Polygon", "coordinates": circle(200_000)});
        let errors = PostGeometry::parse(PostKind::Area, &geometry, Datum::Wgs84).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("at most 10000"), "{errors:?}");
        // Many rings that are each small but together too many stop at the limit as well.
        let rings: Vec<serde_json::Value> = (0..3000).map(|_| circle(4)[0].clone()).collect();
        let geometry = serde_json::json!({"type": "Polygon", "coordinates": rings});
        let errors = PostGeometry::parse(PostKind::Area, &geometry, Datum::Wgs84).unwrap_err();
        assert!(errors[0].message.contains("at most 10000"), "{errors:?}");
    }

    #[test]
    fn a_ring_at_the_limit_is_read_and_its_distinct_positions_counted_once() {
        let geometry = serde_json::json!({"type": "Polygon", "coordinates": circle(9_000)});
        assert!(PostGeometry::parse(PostKind::Area, &geometry, Datum::Wgs84).is_ok());
        // A ring whose only difference is the sign of a zero has two distinct positions.
        let geometry = serde_json::json!({"type": "Polygon",
            "coordinates": [[[0.0, 51.0], [-0.0, 51.0], [0.001, 51.001], [0.0, 51.0]]]});
        let errors = PostGeometry::parse(PostKind::Area, &geometry, Datum::Wgs84).unwrap_err();
        assert!(errors[0].message.contains("3 distinct"), "{errors:?}");
    }

    fn paths(kind: PostKind, v: Value) -> Vec<String> {
        PostGeometry::parse(kind, &v, Datum::Wgs84)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn each_kind_takes_its_own_types() {
        let point = json!({"type": "Point", "coordinates": [108.95, 34.22]});
        let line = json!({"type": "LineString", "coordinates": [[108.95, 34.22], [108.96, 34.22]]});
        let poly = json!({"type": "Polygon", "coordinates": [[[108.95, 34.22], [108.96, 34.22], [108.96, 34.23], [108.95, 34.22]]]});
        assert!(PostGeometry::parse(PostKind::Kiosk, &point, Datum::Wgs84).is_ok());
        assert!(PostGeometry::parse(PostKind::Checkpoint, &point, Datum::Wgs84).is_ok());
        assert!(PostGeometry::parse(PostKind::Route, &line, Datum::Wgs84).is_ok());
        assert!(PostGeometry::parse(PostKind::Area, &poly, Datum::Wgs84).is_ok());
        assert_eq!(paths(PostKind::Route, point.clone()), ["type"]);
        assert_eq!(paths(PostKind::Kiosk, line.clone()), ["type"]);
        assert_eq!(paths(PostKind::Area, line), ["type"]);
        assert_eq!(paths(PostKind::Route, poly), ["type"]);
    }

    #[test]
    fn bad_positions_are_named() {
        assert_eq!(
            paths(
                PostKind::Kiosk,
                json!({"type": "Point", "coordinates": [181.0, 34.0]})
            ),
            ["coordinates[0]"]
        );
        assert_eq!(
            paths(
                PostKind::Kiosk,
                json!({"type": "Point", "coordinates": [108.0, -91]})
            ),
            ["coordinates[1]"]
        );
        assert_eq!(
            paths(
                PostKind::Kiosk,
                json!({"type": "Point", "coordinates": [0, 0]})
            ),
            ["coordinates"]
        );
        assert_eq!(
            paths(
                PostKind::Kiosk,
                json!({"type": "Point", "coordinates": [1]})
            ),
            ["coordinates"]
        );
        assert_eq!(
            paths(
                PostKind::Kiosk,
                json!({"type": "Point", "coordinates": ["a", 1]})
            ),
            ["coordinates"]
        );
        assert_eq!(
            paths(PostKind::Kiosk, json!({"type": "Point"})),
            ["coordinates"]
        );
        assert_eq!(
            paths(
                PostKind::Kiosk,
                json!({"type": "Point", "coordinates": [1, 2], "crs": 1})
            ),
            ["crs"]
        );
        assert_eq!(paths(PostKind::Kiosk, json!([1, 2])), [""]);
        let two_bad = json!({"type": "LineString", "coordinates": [[108.95, 34.22], [200, 34.22], [108.9, 95]]});
        assert_eq!(
            paths(PostKind::Route, two_bad),
            ["coordinates[1][0]", "coordinates[2][1]"]
        );
    }

    #[test]
    fn lines_need_length_and_rings_need_closing() {
        let same = json!({"type": "LineString", "coordinates": [[108.95, 34.22], [108.95, 34.22]]});
        assert_eq!(paths(PostKind::Route, same), ["coordinates"]);
        let short = json!({"type": "LineString", "coordinates": [[108.95, 34.22]]});
        assert_eq!(paths(PostKind::Route, short), ["coordinates"]);
        let multi = json!({"type": "MultiLineString", "coordinates": [[[108.95, 34.22], [108.96, 34.22]], [[108.95, 34.22]]]});
        assert_eq!(paths(PostKind::Route, multi), ["coordinates[1]"]);
        let empty = json!({"type": "MultiLineString", "coordinates": []});
        assert_eq!(paths(PostKind::Route, empty), ["coordinates"]);
        let open = json!({"type": "Polygon", "coordinates": [[[108.95, 34.22], [108.96, 34.22], [108.96, 34.23], [108.95, 34.23]]]});
        assert_eq!(paths(PostKind::Area, open), ["coordinates[0]"]);
        let three = json!({"type": "Polygon", "coordinates": [[[108.95, 34.22], [108.96, 34.22], [108.95, 34.22]]]});
        assert_eq!(paths(PostKind::Area, three), ["coordinates[0]"]);
        let flat = json!({"type": "Polygon", "coordinates": [[[108.95, 34.22], [108.96, 34.22], [108.96, 34.22], [108.95, 34.22]]]});
        assert_eq!(paths(PostKind::Area, flat), ["coordinates[0]"]);
        let mp = json!({"type": "MultiPolygon", "coordinates": [[[[108.95, 34.22], [108.96, 34.22], [108.96, 34.23], [108.95, 34.22]]], [[[1, 1]]]]});
        assert_eq!(paths(PostKind::Area, mp), ["coordinates[1][0]"]);
    }

    #[test]
    fn too_many_vertices_are_refused() {
        let coords: Vec<Value> = (0..=MAX_VERTICES)
            .map(|i| json!([108.0 + i as f64 * 1e-5, 34.0]))
            .collect();
        let v = json!({"type": "LineString", "coordinates": coords});
        assert_eq!(paths(PostKind::Route, v), ["coordinates"]);
    }

    #[test]
    fn length_bbox_and_round_trip() {
        let v = json!({"type": "MultiLineString", "coordinates": [[[108.95, 34.22], [108.95, 34.23]], [[108.96, 34.22], [108.96, 34.23, 400.0]]]});
        let g = PostGeometry::parse(PostKind::Route, &v, Datum::Wgs84).unwrap();
        let len = g.length_m().unwrap();
        // 0.01° of latitude near 34°N is about 1,109 m; two such lines.
        assert!((len - 2.0 * 1109.0).abs() < 5.0, "{len}");
        assert_eq!(g.bbox(), [108.95, 34.22, 108.96, 34.23]);
        let back = PostGeometry::from_stored(PostKind::Route, &g.to_geojson().to_string()).unwrap();
        assert_eq!(back, g);
        assert_eq!(
            PostGeometry::parse(
                PostKind::Kiosk,
                &json!({"type": "Point", "coordinates": [108.95, 34.22]}),
                Datum::Wgs84
            )
            .unwrap()
            .length_m(),
            None
        );
    }

    #[test]
    fn gcj02_geometry_is_converted_to_wgs84() {
        let v = json!({"type": "Point", "coordinates": [108.95, 34.22]});
        let g = PostGeometry::parse(PostKind::Kiosk, &v, Datum::Gcj02).unwrap();
        let PostGeometry::Point(p) = g else { panic!() };
        let moved = crate::domain::geodesy::distance_m(
            p,
            LonLat {
                lon: 108.95,
                lat: 34.22,
            },
        );
        assert!(
            (100.0..1000.0).contains(&moved),
            "GCJ-02 offsets are hundreds of metres: {moved}"
        );
    }
}
