//! Plausibility rules for GPS fixes.
//!
//! Every fix is stored; these rules only attach [`Flags`] to the suspicious ones, and flagged
//! fixes never count towards coverage. The rules are deliberately forgiving of honest receivers
//! (accuracy is slack in every distance, real receivers jitter) and strict about the traces
//! fake-GPS apps leave (teleports, bit-identical repeats, the OS mock flag).
//!
//! Speed is judged against neighbours in `recorded_at` order, never arrival order: an offline
//! phone uploads its queue late, and a late fix may fall between fixes that are already stored.
//! Neighbours that are themselves implausible or mocked are skipped, so one teleport does not
//! drag the honest fixes around it down with it.

use std::ops::BitOr;

use chrono::{DateTime, TimeDelta, Utc};

use super::geodesy::{LonLat, distance_m};

/// One fix as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixSample {
    /// Device time of the fix.
    pub recorded_at: DateTime<Utc>,
    /// WGS-84 position.
    pub position: LonLat,
    /// Horizontal accuracy radius in metres, as the device reports it.
    pub accuracy_m: f64,
    /// Speed the device reports, if any.
    pub speed_mps: Option<f64>,
}

/// The flags a fix can carry, as a bit set stored in an integer column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub i32);

/// Every named flag in the fixed order of [`Flags::names`]; the bit values are stored in the
/// database, so they must never be renumbered.
const NAMED: [(Flags, &str); 6] = [
    (Flags::LOW_ACCURACY, "low_accuracy"),
    (Flags::IMPLAUSIBLE_SPEED, "implausible_speed"),
    (Flags::CLOCK_SKEW, "clock_skew"),
    (Flags::MOCK_LOCATION, "mock_location"),
    (Flags::STATIC_REPEAT, "static_repeat"),
    (Flags::OUTSIDE_SHIFT, "outside_shift"),
];

impl Flags {
    /// Accuracy radius above `max_accuracy_m`.
    pub const LOW_ACCURACY: Flags = Flags(1);
    /// Unreachable from a credible neighbour at the member's plausible speed.
    pub const IMPLAUSIBLE_SPEED: Flags = Flags(1 << 1);
    /// Device clock ahead of the server by more than the tolerance.
    pub const CLOCK_SKEW: Flags = Flags(1 << 2);
    /// The operating system reported a mock location provider.
    pub const MOCK_LOCATION: Flags = Flags(1 << 3);
    /// Part of a run of bit-identical fixes, the signature of a fake-GPS app.
    pub const STATIC_REPEAT: Flags = Flags(1 << 4);
    /// Recorded while the member had no shift (decided by the caller, not by these rules).
    pub const OUTSIDE_SHIFT: Flags = Flags(1 << 5);

    /// Flags whose fixes must not serve as speed neighbours: judging against a teleport or a
    /// mocked position would condemn the honest fix next to it.
    const NOT_A_NEIGHBOUR: Flags = Flags(Self::IMPLAUSIBLE_SPEED.0 | Self::MOCK_LOCATION.0);

    /// No flag at all.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// True when every flag of `other` is set in `self` (so always true for an empty `other`).
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets every flag of `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// The names of the set flags, in a fixed order; unknown bits are left out.
    pub fn names(self) -> Vec<&'static str> {
        NAMED
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect()
    }

    /// The flags with these names (duplicates are harmless); `None` for an unknown name.
    pub fn from_names(names: &[&str]) -> Option<Flags> {
        names.iter().try_fold(Flags::empty(), |acc, name| {
            NAMED
                .iter()
                .find(|(_, known)| known == name)
                .map(|(flag, _)| acc | *flag)
        })
    }

    /// Flags that exclude a fix from coverage: implausible_speed and mock_location (product
    /// rule: "no mock_location or implausible_speed flag"; low accuracy is judged separately
    /// against max_accuracy_m).
    pub const fn excludes_from_coverage(self) -> bool {
        self.0 & (Self::IMPLAUSIBLE_SPEED.0 | Self::MOCK_LOCATION.0) != 0
    }

    /// Whether a fix with these flags may not serve as a speed neighbour.
    const fn disqualifies_neighbour(self) -> bool {
        self.0 & Self::NOT_A_NEIGHBOUR.0 != 0
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// The thresholds, from settings.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Accuracy radius (metres) above which a fix is low_accuracy.
    pub max_accuracy_m: f64,
    /// Highest plausible speed on foot (also volunteers and kiosk crews), m/s.
    pub max_speed_foot_mps: f64,
    /// Highest plausible speed of a vehicle patrol, m/s.
    pub max_speed_vehicle_mps: f64,
    /// Seconds the device clock may run ahead of the server before clock_skew.
    pub clock_skew_tolerance_s: i64,
    /// Identical fixes in a row (counting the new one) that raise static_repeat.
    pub static_repeat_run: usize,
}

impl Default for Thresholds {
    /// The documented setting defaults: 50 m, 25 km/h on foot, 160 km/h by vehicle, 60 s, 10.
    fn default() -> Self {
        Self {
            max_accuracy_m: 50.0,
            max_speed_foot_mps: 7.0,
            max_speed_vehicle_mps: 45.0,
            clock_skew_tolerance_s: 60,
            static_repeat_run: 10,
        }
    }
}

impl Thresholds {
    /// The speed limit that applies to a member moving this way.
    pub fn max_speed_mps(&self, mobility: Mobility) -> f64 {
        match mobility {
            Mobility::Foot => self.max_speed_foot_mps,
            Mobility::Vehicle => self.max_speed_vehicle_mps,
        }
    }
}

/// Whether the member moves on foot or by vehicle (from their team kinds; decided by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mobility {
    /// Foot patrols, volunteers, kiosk crews.
    Foot,
    /// Vehicle patrols.
    Vehicle,
}

/// The speed needed to go from a to b, with each fix's accuracy as slack: max(0, distance -
/// acc_a - acc_b) / |dt|; when dt is 0, infinite if that slack-corrected distance is above 0,
/// else 0.
pub fn apparent_speed_mps(a: &FixSample, b: &FixSample) -> f64 {
    // A negative or NaN accuracy must not shrink the slack below nothing (`max` drops NaN).
    let slack = a.accuracy_m.max(0.0) + b.accuracy_m.max(0.0);
    let gap = (distance_m(a.position, b.position) - slack).max(0.0);
    let dt = (b.recorded_at - a.recorded_at).as_seconds_f64().abs();
    if dt == 0.0 {
        if gap > 0.0 { f64::INFINITY } else { 0.0 }
    } else {
        gap / dt
    }
}

/// implausible_speed: the new fix is implausible when the apparent speed to its nearest earlier
/// credible neighbour or to its nearest later one (in recorded_at order; `None` when there is
/// none) exceeds the mobility's limit.
pub fn implausible_speed(
    prev: Option<&FixSample>,
    fix: &FixSample,
    next: Option<&FixSample>,
    mobility: Mobility,
    t: &Thresholds,
) -> bool {
    let limit = t.max_speed_mps(mobility);
    prev.is_some_and(|p| apparent_speed_mps(p, fix) > limit)
        || next.is_some_and(|n| apparent_speed_mps(fix, n) > limit)
}

/// Whether two fixes carry bit-for-bit the same reading (position, accuracy and speed).
fn same_reading(a: &FixSample, b: &FixSample) -> bool {
    // Bits, not `==`: fake-GPS apps replay exact values, and bits also treat NaN as equal to
    // itself, so a replayed NaN cannot break a run.
    let bits = |s: &FixSample| {
        (
            s.position.lon.to_bits(),
            s.position.lat.to_bits(),
            s.accuracy_m.to_bits(),
            s.speed_mps.map(f64::to_bits),
        )
    };
    bits(a) == bits(b)
}

/// static_repeat: `earlier` holds the member's fixes immediately before `fix` in recorded_at
/// order (most recent last); true when fix and the run right before it are bit-identical in
/// position, accuracy and speed for at least `static_repeat_run` fixes in total.
pub fn static_repeat(earlier: &[FixSample], fix: &FixSample, t: &Thresholds) -> bool {
    let needed = t.static_repeat_run;
    // Stop scanning once the run is long enough: a frozen device can repeat for hours.
    let run = 1 + earlier
        .iter()
        .rev()
        .take(needed.saturating_sub(1))
        .take_while(|e| same_reading(e, fix))
        .count();
    run >= needed
}

/// clock_skew: recorded_at is ahead of received_at by more than the tolerance (the API rejects
/// more than 5 minutes ahead outright; this flags the milder cases).
pub fn clock_skew(recorded_at: DateTime<Utc>, received_at: DateTime<Utc>, t: &Thresholds) -> bool {
    recorded_at - received_at > TimeDelta::seconds(t.clock_skew_tolerance_s)
}

/// Everything that needs no other fix: low_accuracy, clock_skew, mock_location.
pub fn intrinsic_flags(
    fix: &FixSample,
    mock: bool,
    received_at: DateTime<Utc>,
    t: &Thresholds,
) -> Flags {
    let mut flags = Flags::empty();
    // An accuracy that is not a number promises nothing, so it cannot be good enough.
    if fix.accuracy_m.is_nan() || fix.accuracy_m > t.max_accuracy_m {
        flags.insert(Flags::LOW_ACCURACY);
    }
    if clock_skew(fix.recorded_at, received_at, t) {
        flags.insert(Flags::CLOCK_SKEW);
    }
    if mock {
        flags.insert(Flags::MOCK_LOCATION);
    }
    flags
}

/// A stored fix of the member with the flags it already has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoredFix {
    /// The fix itself.
    pub sample: FixSample,
    /// Flags attached when it was stored; never changed by [`judge_batch`].
    pub flags: Flags,
}

/// Where an entry of the merged, time-ordered sequence came from.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// A stored fix with its flags, which are final.
    Stored(Flags),
    /// The new fix at this index of the `new` argument.
    New(usize),
}

/// Flags for new fixes (any order) judged together with the member's stored fixes around them
/// (any order), in input order of `new`.
///
/// Fixes are merged in recorded_at order (ties: stored before new, then input order) and judged
/// in that order, so the fixes of one batch are each other's neighbours and a late fix is
/// judged against the stored fix after it too. Speed neighbours are fixes not flagged
/// implausible_speed or mock_location; a new fix judged implausible stops being a neighbour for
/// the ones after it. A later neighbour that is a new, not yet judged fix is passed over when it
/// contradicts the fix being judged and there is evidence that it, not that fix, is the odd one:
/// the earlier neighbour contradicts it as well, or the fix after it contradicts it while
/// agreeing with the fix being judged (a teleport must not condemn the honest fix before it).
/// Without such evidence the plain rule applies. Intrinsic flags are included; stored flags are
/// never changed.
pub fn judge_batch(
    stored: &[StoredFix],
    new: &[(FixSample, bool)],
    received_at: DateTime<Utc>,
    mobility: Mobility,
    t: &Thresholds,
) -> Vec<Flags> {
    let mut order: Vec<(FixSample, Origin)> = stored
        .iter()
        .map(|s| (s.sample, Origin::Stored(s.flags)))
        .chain(
            new.iter()
                .enumerate()
                .map(|(i, (s, _))| (*s, Origin::New(i))),
        )
        .collect();
    // Stable, so ties keep stored before new and then input order.
    order.sort_by_key(|(s, _)| s.recorded_at);
    let samples: Vec<FixSample> = order.iter().map(|(s, _)| *s).collect();

    let mut out: Vec<Flags> = new
        .iter()
        .map(|(s, mock)| intrinsic_flags(s, *mock, received_at, t))
        .collect();
    // Whether each entry may serve as a speed neighbour. For stored fixes and mocked new fixes
    // this is known up front; a new fix loses it when it is judged implausible.
    let mut usable: Vec<bool> = order
        .iter()
        .map(|(_, origin)| match origin {
            Origin::Stored(flags) => !flags.disqualifies_neighbour(),
            Origin::New(i) => !new[*i].1,
        })
        .collect();

    let limit = t.max_speed_mps(mobility);
    let mut last_usable: Option<usize> = None;
    for (i, (fix, origin)) in order.iter().enumerate() {
        if let Origin::New(index) = *origin {
            let prev = last_usable.map(|p| &samples[p]);
            let next = later_neighbour(&samples, &order, &usable, i, prev, limit);
            if implausible_speed(prev, fix, next, mobility, t) {
                out[index].insert(Flags::IMPLAUSIBLE_SPEED);
                usable[i] = false;
            }
            if static_repeat(&samples[..i], fix, t) {
                out[index].insert(Flags::STATIC_REPEAT);
            }
        }
        if usable[i] {
            last_usable = Some(i);
        }
    }
    out
}

/// The later speed neighbour of the new fix at `i` of the merged sequence, given its earlier
/// neighbour `prev`: the first usable fix after it, except that a new (not yet judged) fix that
/// contradicts it is passed over when there is evidence that it is the odd one (see
/// [`judge_batch`]).
fn later_neighbour<'a>(
    samples: &'a [FixSample],
    order: &[(FixSample, Origin)],
    usable: &[bool],
    i: usize,
    prev: Option<&FixSample>,
    limit: f64,
) -> Option<&'a FixSample> {
    let fix = &samples[i];
    let contradicts = |a: &FixSample, b: &FixSample| apparent_speed_mps(a, b) > limit;
    if prev.is_some_and(|p| contradicts(p, fix)) {
        // Implausible whatever comes later, and the evidence below assumes prev agrees.
        return None;
    }
    let next_usable = |from: usize| (from..samples.len()).find(|&j| usable[j]);
    let mut from = i + 1;
    while let Some(j) = next_usable(from) {
        let candidate = &samples[j];
        // A stored fix's flags are final, so a usable one is trusted as it is.
        if matches!(order[j].1, Origin::Stored(_)) || !contradicts(fix, candidate) {
            return Some(candidate);
        }
        let after = next_usable(j + 1).map(|k| &samples[k]);
        let candidate_is_odd = prev.is_some_and(|p| contradicts(p, candidate))
            || after.is_some_and(|m| contradicts(candidate, m) && !contradicts(fix, m));
        if !candidate_is_odd {
            return Some(candidate);
        }
        from = j + 1;
    }
    None
}
