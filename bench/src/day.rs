//! A generated day of a district, the same for the same seed and scale: posts, staff and
//! volunteers on shifts, and where each phone is every 30 s.
//!
//! Everything is a pure function of the seed, the member and the time, so the fixes of a
//! member or of a moment can be produced on demand without holding the day in memory.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

/// Seconds between two fixes of a phone.
pub const FIX_EVERY_S: i64 = 30;
/// Fixes a phone sends in a day at that rate.
pub const FIXES_PER_DAY: i64 = 86_400 / FIX_EVERY_S;
/// Routes, checkpoints and kiosks of the reference district.
pub const ROUTES: usize = 18;
/// Checkpoints.
pub const CHECKPOINTS: usize = 15;
/// Kiosks.
pub const KIOSKS: usize = 20;
/// Posts staffed by full-time patrol staff.
pub const STAFF_POSTS: usize = ROUTES + CHECKPOINTS + KIOSKS;
/// Eight-hour shifts a day at each staff post.
const STAFF_SLOTS: usize = 3;
/// Full-time patrol staff and volunteers at scale 1.
const STAFF: f64 = 1_000.0;
const VOLUNTEERS: f64 = 10_000.0;
/// Volunteer squads' areas at scale 1.
const AREAS: f64 = 600.0;
/// Where the district's local plane is anchored.
const LAT0: f64 = 34.25;
const LON0: f64 = 108.90;
const M_PER_DEG_LAT: f64 = 111_320.0;
/// Walking speed on a route, m/s.
const WALK_MPS: f64 = 1.2;
/// Side of a volunteer area, metres.
const AREA_SIDE_M: f64 = 300.0;

/// Which day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Phones send only while on duty.
    Reference,
    /// Every phone sends every 30 s all day: at its post on duty, at home otherwise.
    Worst,
}

/// What a post is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostKind {
    /// A line walked by patrol staff.
    Route,
    /// A point held by two.
    Checkpoint,
    /// A point held by one.
    Kiosk,
    /// A volunteer squad's patch.
    Area,
}

/// A post: its code, kind and geometry in local metres (x east, y north).
#[derive(Clone, Debug)]
pub struct Post {
    /// Code (`R01`, `C01`, `K01`, `A001`).
    pub code: String,
    /// Kind.
    pub kind: PostKind,
    /// A route's vertices, a point's single vertex, an area's square ring.
    pub vertices: Vec<(f64, f64)>,
}

impl Post {
    /// The post as the body of `POST /api/v1/posts`.
    pub fn to_json(&self, unit_id: Uuid) -> serde_json::Value {
        let coords: Vec<[f64; 2]> = self.vertices.iter().map(|&(x, y)| lon_lat(x, y)).collect();
        let (kind, geometry, extra) = match self.kind {
            PostKind::Route => (
                "route",
                serde_json::json!({"type": "LineString", "coordinates": coords}),
                serde_json::json!({"corridor_m": 30.0, "min_headcount": 1, "staffing": "24x7"}),
            ),
            PostKind::Checkpoint => (
                "checkpoint",
                serde_json::json!({"type": "Point", "coordinates": coords[0]}),
                serde_json::json!({"radius_m": 50.0, "min_headcount": 2, "staffing": "24x7"}),
            ),
            PostKind::Kiosk => (
                "kiosk",
                serde_json::json!({"type": "Point", "coordinates": coords[0]}),
                serde_json::json!({"radius_m": 30.0, "min_headcount": 1, "staffing": "24x7"}),
            ),
            PostKind::Area => (
                "area",
                serde_json::json!({"type": "Polygon", "coordinates": [coords]}),
                serde_json::json!({"radius_m": 20.0, "min_headcount": 1, "staffing": "rostered"}),
            ),
        };
        let mut body = serde_json::json!({
            "code": self.code, "name": format!("Post {}", self.code), "kind": kind,
            "unit_id": unit_id, "geometry": geometry,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    }

    fn length_m(&self) -> f64 {
        self.vertices
            .windows(2)
            .map(|w| ((w[1].0 - w[0].0).powi(2) + (w[1].1 - w[0].1).powi(2)).sqrt())
            .sum()
    }

    /// The point `d` metres along a route (clamped to its ends).
    fn along(&self, mut d: f64) -> (f64, f64) {
        for w in self.vertices.windows(2) {
            let len = ((w[1].0 - w[0].0).powi(2) + (w[1].1 - w[0].1).powi(2)).sqrt();
            if d <= len && len > 0.0 {
                let f = d / len;
                return (
                    w[0].0 + f * (w[1].0 - w[0].0),
                    w[0].1 + f * (w[1].1 - w[0].1),
                );
            }
            d -= len;
        }
        self.vertices.last().copied().unwrap_or((0.0, 0.0))
    }
}

/// A roster entry: a post, a span, the people on it.
#[derive(Clone, Debug)]
pub struct Shift {
    /// Index into [`Day::posts`].
    pub post: usize,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// End.
    pub ends_at: DateTime<Utc>,
    /// Indexes of the members on it.
    pub members: Vec<usize>,
}

/// How a member does their duty.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Conduct {
    /// Arrives on time and stays.
    Diligent,
    /// Arrives this many minutes late.
    Late(i64),
    /// Leaves for this many minutes in the middle.
    Break(i64),
    /// Never comes.
    Absent,
}

/// A member: staff or volunteer, their one shift of the day, and how they do it.
#[derive(Clone, Debug)]
pub struct Member {
    /// `staff0001` or `vol00001`.
    pub username: String,
    /// Whether a volunteer.
    pub volunteer: bool,
    /// Index into [`Day::shifts`].
    pub shift: usize,
    conduct: Conduct,
    home: (f64, f64),
    /// Where along a route the member starts, metres.
    phase_m: f64,
}

/// One fix: when, where, how accurate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fix {
    /// Device time.
    pub recorded_at: DateTime<Utc>,
    /// Latitude, WGS-84.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: f64,
    /// The device's id for the fix (a version 4 UUID from the seed).
    pub client_id: Uuid,
}

/// The generated day.
pub struct Day {
    /// Which day.
    pub kind: Kind,
    /// 00:00 UTC of the day.
    pub start: DateTime<Utc>,
    /// Posts: routes, checkpoints, kiosks, then areas.
    pub posts: Vec<Post>,
    /// Shifts: staff shifts first, then one per volunteer.
    pub shifts: Vec<Shift>,
    /// Members: staff first, then volunteers.
    pub members: Vec<Member>,
    seed: u64,
}

/// SplitMix64: a small, good, seedable mixer (no dependency needed for this).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed) ^ a) ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// A number in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// `[lon, lat]` of a local point.
fn lon_lat(x: f64, y: f64) -> [f64; 2] {
    let lat = LAT0 + y / M_PER_DEG_LAT;
    let lon = LON0 + x / (M_PER_DEG_LAT * LAT0.to_radians().cos());
    [lon, lat]
}

impl Day {
    /// The day `start` (00:00 UTC) at `scale` (1.0: 1,000 staff, 10,000 volunteers, 600
    /// areas), from `seed`.
    pub fn new(kind: Kind, start: DateTime<Utc>, scale: f64, seed: u64) -> Day {
        let staff = ((STAFF * scale).round() as usize).max(1);
        let volunteers = ((VOLUNTEERS * scale).round() as usize).max(1);
        let areas = ((AREAS * scale).round() as usize).max(1);
        let mut posts = Vec::new();
        for r in 0..ROUTES {
            // A zigzag of four legs, 3 to 8 km in all, one route every 600 m north.
            let length = 3_000.0 + 5_000.0 * r as f64 / (ROUTES - 1) as f64;
            let leg = length / 4.0;
            let y0 = r as f64 * 600.0;
            let dx = (leg * leg - 150.0 * 150.0).sqrt();
            let vertices = (0..5)
                .map(|i| (i as f64 * dx, y0 + if i % 2 == 1 { 150.0 } else { 0.0 }))
                .collect();
            posts.push(Post {
                code: format!("R{:02}", r + 1),
                kind: PostKind::Route,
                vertices,
            });
        }
        for c in 0..CHECKPOINTS {
            posts.push(Post {
                code: format!("C{:02}", c + 1),
                kind: PostKind::Checkpoint,
                vertices: vec![(9_000.0, c as f64 * 700.0)],
            });
        }
        for k in 0..KIOSKS {
            posts.push(Post {
                code: format!("K{:02}", k + 1),
                kind: PostKind::Kiosk,
                vertices: vec![(10_000.0, k as f64 * 500.0)],
            });
        }
        for a in 0..areas {
            let (x, y) = (11_000.0 + (a % 25) as f64 * 600.0, (a / 25) as f64 * 600.0);
            let s = AREA_SIDE_M;
            posts.push(Post {
                code: format!("A{:03}", a + 1),
                kind: PostKind::Area,
                vertices: vec![(x, y), (x + s, y), (x + s, y + s), (x, y + s), (x, y)],
            });
        }

        let mut shifts = Vec::new();
        let staff_shifts = (STAFF_POSTS * STAFF_SLOTS).min(staff);
        for s in 0..staff_shifts {
            let starts_at = start + TimeDelta::hours(8 * (s / STAFF_POSTS) as i64);
            shifts.push(Shift {
                post: s % STAFF_POSTS,
                starts_at,
                ends_at: starts_at + TimeDelta::hours(8),
                members: Vec::new(),
            });
        }
        let mut members = Vec::with_capacity(staff + volunteers);
        for i in 0..staff + volunteers {
            let volunteer = i >= staff;
            let h = hash(seed, i as u64, 0);
            let shift = if volunteer {
                let v = i - staff;
                let hour = 7 + (h % 12) as i64;
                let hours = 2 + ((h >> 8) % 3) as i64;
                let starts_at = start + TimeDelta::hours(hour);
                shifts.push(Shift {
                    post: STAFF_POSTS + v % areas,
                    starts_at,
                    ends_at: starts_at + TimeDelta::hours(hours),
                    members: vec![i],
                });
                shifts.len() - 1
            } else {
                shifts[i % staff_shifts].members.push(i);
                i % staff_shifts
            };
            let roll = (h >> 16) % 100;
            let conduct = match roll {
                0..5 => Conduct::Absent,
                5..20 => Conduct::Late(20 + ((h >> 24) % 21) as i64),
                20..30 => Conduct::Break(45),
                _ => Conduct::Diligent,
            };
            // Homes lie south of every post, outside the boxes the coverage looks in.
            let home = ((i % 100) as f64 * 200.0, -3_000.0 - (i / 100) as f64 * 30.0);
            members.push(Member {
                username: if volunteer {
                    format!("vol{:05}", i - staff + 1)
                } else {
                    format!("staff{:04}", i + 1)
                },
                volunteer,
                shift,
                conduct,
                home,
                phase_m: unit(hash(seed, i as u64, 1)) * 10_000.0,
            });
        }
        Day {
            kind,
            start,
            posts,
            shifts,
            members,
            seed,
        }
    }

    /// Fixes of the day in all.
    pub fn fix_count(&self) -> u64 {
        (0..self.members.len())
            .map(|m| self.fixes_of(m).len() as u64)
            .sum()
    }

    /// The fixes of member `m` in time order.
    pub fn fixes_of(&self, m: usize) -> Vec<Fix> {
        (0..FIXES_PER_DAY)
            .filter_map(|slot| self.fix_at(m, slot))
            .collect()
    }

    /// Member `m`'s fix in 30-second slot `slot` of the day, if the phone sends one.
    pub fn fix_at(&self, m: usize, slot: i64) -> Option<Fix> {
        let member = &self.members[m];
        let shift = &self.shifts[member.shift];
        let h = hash(self.seed, m as u64, 1_000 + slot as u64);
        // Devices stamp fixes a few hundred milliseconds off the slot.
        let recorded_at =
            self.start + TimeDelta::milliseconds(slot * FIX_EVERY_S * 1000 + (h % 900) as i64);
        let on_duty = recorded_at >= shift.starts_at
            && recorded_at < shift.ends_at
            && match member.conduct {
                Conduct::Diligent => true,
                Conduct::Absent => false,
                Conduct::Late(min) => recorded_at >= shift.starts_at + TimeDelta::minutes(min),
                Conduct::Break(min) => {
                    let mid = shift.starts_at + (shift.ends_at - shift.starts_at) / 2;
                    recorded_at < mid || recorded_at >= mid + TimeDelta::minutes(min)
                }
            };
        let jitter = |k: u64, r: f64| (unit(hash(h, k, 0)) * 2.0 - 1.0) * r;
        let (x, y) = if on_duty {
            let post = &self.posts[shift.post];
            let since = (recorded_at - shift.starts_at).num_milliseconds() as f64 / 1000.0;
            match post.kind {
                PostKind::Route => {
                    // Back and forth along the route.
                    let length = post.length_m();
                    let d = (member.phase_m + WALK_MPS * since) % (2.0 * length);
                    let d = if d > length { 2.0 * length - d } else { d };
                    let (x, y) = post.along(d);
                    (x + jitter(1, 5.0), y + jitter(2, 5.0))
                }
                PostKind::Checkpoint | PostKind::Kiosk => {
                    let (x, y) = post.vertices[0];
                    (x + jitter(1, 12.0), y + jitter(2, 12.0))
                }
                PostKind::Area => {
                    // A slow loop inside the square.
                    let (x0, y0) = post.vertices[0];
                    let w = since / 600.0 + member.phase_m;
                    let c = AREA_SIDE_M / 2.0;
                    (
                        x0 + c + 0.4 * AREA_SIDE_M * w.cos() + jitter(1, 5.0),
                        y0 + c + 0.4 * AREA_SIDE_M * (1.3 * w).sin() + jitter(2, 5.0),
                    )
                }
            }
        } else if self.kind == Kind::Worst {
            (
                member.home.0 + jitter(1, 10.0),
                member.home.1 + jitter(2, 10.0),
            )
        } else {
            return None;
        };
        // One fix in thirty-three comes with a poor accuracy and does not count.
        let accuracy_m = if h.is_multiple_of(33) {
            80.0
        } else {
            4.0 + (h >> 40) as f64 % 16.0
        };
        let [lon, lat] = lon_lat(x, y);
        let id = hash(self.seed ^ 0x5EED, m as u64, slot as u64);
        let bytes = (u128::from(id) << 64 | u128::from(mix(id))).to_le_bytes();
        Some(Fix {
            recorded_at,
            lat,
            lon,
            accuracy_m,
            client_id: uuid::Builder::from_random_bytes(bytes).into_uuid(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        let a = Day::new(Kind::Reference, start(), 0.01, 7);
        let b = Day::new(Kind::Reference, start(), 0.01, 7);
        let c = Day::new(Kind::Reference, start(), 0.01, 8);
        assert_eq!(a.fixes_of(3), b.fixes_of(3));
        assert_ne!(a.fixes_of(3), c.fixes_of(3));
    }

    #[test]
    fn a_full_scale_day_has_the_planned_size() {
        let day = Day::new(Kind::Worst, start(), 1.0, 1);
        assert_eq!(day.members.len(), 11_000);
        assert_eq!(day.posts.len(), STAFF_POSTS + 600);
        assert_eq!(day.shifts.len(), STAFF_POSTS * STAFF_SLOTS + 10_000);
        // Every phone every 30 s all day: 31.68 M fixes.
        assert_eq!(day.fixes_of(0).len() as i64, FIXES_PER_DAY);
        assert_eq!(day.fixes_of(10_999).len() as i64, FIXES_PER_DAY);
    }

    #[test]
    fn reference_fixes_are_on_duty_and_walk_plausibly() {
        let day = Day::new(Kind::Reference, start(), 0.05, 3);
        for m in 0..day.members.len() {
            let shift = &day.shifts[day.members[m].shift];
            let fixes = day.fixes_of(m);
            for f in &fixes {
                assert!(f.recorded_at >= shift.starts_at && f.recorded_at < shift.ends_at);
            }
            for w in fixes.windows(2) {
                let dt = (w[1].recorded_at - w[0].recorded_at).num_milliseconds() as f64 / 1e3;
                let dy = (w[1].lat - w[0].lat) * M_PER_DEG_LAT;
                let dx = (w[1].lon - w[0].lon) * M_PER_DEG_LAT * LAT0.to_radians().cos();
                assert!(
                    (dx * dx + dy * dy).sqrt() / dt < 3.0,
                    "member {m} is too fast"
                );
            }
        }
    }
}
