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
//!
//! # One set of fixes, one set of flags
//!
//! The rule: a member's implausible_speed and static_repeat flags are those that one pass of
//! [`judge`] over the member's whole set of fixes gives them, taken in judging order
//! (`recorded_at`, then the reading) as if every fix were new. They depend on that set
//! alone, not on the order the fixes arrived in nor on how they were batched, so a phone
//! that uploads its offline queue ends with the same flags, and the same coverage, as the
//! same phone online. A stored fix's flags are therefore not final: a new fix can change the
//! verdict on stored fixes around it (a later fix contradicting a lone earlier one condemns
//! it; an earlier fix can show that a stored fix was the teleport), and the writer revises
//! them as [`judge`] says, in the transaction that stores the new fix.
//!
//! How far a revision reaches has no bound in theory: the look-ahead of the speed rule
//! passes over any number of contradicting fixes, and a changed verdict changes the earlier
//! neighbour of the fixes after it. The writer hands [`judge`] [`stored_before`] stored
//! fixes before the earliest new one and [`stored_after`] after the latest, and the flags are
//! exactly those of the whole set as long as (a) no more than [`DOUBTFUL_RUN`] fixes in a row
//! are flagged implausible_speed, mock_location or invalid_fix (among the fixes stored at any
//! time), and (b) within `DOUBTFUL_RUN + 1` fixes after the latest new one, one is a
//! neighbour both as stored and as judged again, which holds unless the fixes after the new
//! ones keep contradicting each other (two phones on one account, far apart, alternating);
//! [`Judgement::needs_more_after`] tells the writer when it may not have held. Fixes
//! recorded at the same instant with the same reading are interchangeable.

use std::ops::BitOr;

use chrono::{DateTime, TimeDelta, Utc};

use super::geodesy::{LonLat, distance_m, distance_upper_bound_m};

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
const NAMED: [(Flags, &str); 8] = [
    (Flags::LOW_ACCURACY, "low_accuracy"),
    (Flags::IMPLAUSIBLE_SPEED, "implausible_speed"),
    (Flags::CLOCK_SKEW, "clock_skew"),
    (Flags::MOCK_LOCATION, "mock_location"),
    (Flags::STATIC_REPEAT, "static_repeat"),
    (Flags::OUTSIDE_SHIFT, "outside_shift"),
    (Flags::INVALID_FIX, "invalid_fix"),
    (Flags::UNKNOWN_ACCURACY, "unknown_accuracy"),
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
    /// The device itself said the position is not a valid satellite fix (`valid=false` of
    /// the OsmAnd protocol): kept as evidence, never counted.
    pub const INVALID_FIX: Flags = Flags(1 << 6);
    /// The device sent no accuracy (OsmAnd and Traccar Client may leave it out): the
    /// stored `accuracy_m` means nothing, and whether the fix counts is a setting.
    pub const UNKNOWN_ACCURACY: Flags = Flags(1 << 7);
    /// One more than the largest value of the named flags together.
    pub const LIMIT: i32 = 1 << 8;

    /// Flags whose fixes must not serve as speed neighbours: judging against a teleport or a
    /// mocked position would condemn the honest fix next to it.
    const NOT_A_NEIGHBOUR: Flags =
        Flags(Self::IMPLAUSIBLE_SPEED.0 | Self::MOCK_LOCATION.0 | Self::INVALID_FIX.0);

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
    /// against max_accuracy_m), and invalid_fix (the device disowns the position).
    pub const fn excludes_from_coverage(self) -> bool {
        self.0 & (Self::IMPLAUSIBLE_SPEED.0 | Self::MOCK_LOCATION.0 | Self::INVALID_FIX.0) != 0
    }

    /// Flags that keep a fix off the live board: those that exclude it from coverage, and a
    /// clock ahead of the server, whose time would keep its member "present" and "heard
    /// from" until that time comes.
    pub const fn excludes_from_board(self) -> bool {
        self.excludes_from_coverage() || self.0 & Self::CLOCK_SKEW.0 != 0
    }

    /// Whether a fix with these flags may not serve as a speed neighbour.
    const fn disqualifies_neighbour(self) -> bool {
        self.0 & Self::NOT_A_NEIGHBOUR.0 != 0
    }

    /// These flags with `flag` set or cleared.
    fn with(self, flag: Flags, on: bool) -> Flags {
        Flags(if on {
            self.0 | flag.0
        } else {
            self.0 & !flag.0
        })
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

impl Mobility {
    /// Foot or vehicle from the kinds of the member's teams: members of grid patrols and
    /// checkpoint crews may drive; everyone else walks.
    pub fn of_team_kinds<'a>(mut kinds: impl Iterator<Item = &'a str>) -> Mobility {
        if kinds.any(|k| k == "grid_patrol" || k == "checkpoint_crew") {
            Mobility::Vehicle
        } else {
            Mobility::Foot
        }
    }
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

/// Whether the apparent speed from a to b is above `limit`: `apparent_speed_mps(a, b) >
/// limit`, decided from [`distance_upper_bound_m`] when even that bound is slow enough,
/// which is the case for almost every pair of fixes of a real track, and from the geodesic
/// otherwise.
pub fn faster_than(a: &FixSample, b: &FixSample, limit: f64) -> bool {
    let bound = distance_upper_bound_m(a.position, b.position);
    if bound.is_finite() {
        let slack = a.accuracy_m.max(0.0) + b.accuracy_m.max(0.0);
        let gap = (bound - slack).max(0.0);
        let dt = (b.recorded_at - a.recorded_at).as_seconds_f64().abs();
        // The true gap is no larger, so its speed is no higher.
        if gap == 0.0 || (dt > 0.0 && gap / dt <= limit) {
            return false;
        }
    }
    apparent_speed_mps(a, b) > limit
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
    prev.is_some_and(|p| faster_than(p, fix, limit))
        || next.is_some_and(|n| faster_than(fix, n, limit))
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
    /// Its id, by which a revision of its flags is written.
    pub id: uuid::Uuid,
    /// The fix itself.
    pub sample: FixSample,
    /// Flags attached when it was stored, as revised since; [`judge`] revises only their
    /// implausible_speed and static_repeat.
    pub flags: Flags,
}

/// The longest run of doubtful fixes in a row (flagged implausible_speed, mock_location or
/// invalid_fix) for which [`stored_before`] fixes before new ones are sure to reach back to
/// every fix whose verdict the new ones can change (see the module doc).
pub const DOUBTFUL_RUN: usize = 6;

/// How many fixes after a fix the speed rule can look at while no more than [`DOUBTFUL_RUN`]
/// in a row are doubtful: the candidates it passes over (all judged implausible but the last),
/// the one it takes and the one after that, each possibly behind a run of mocked fixes.
const LOOKAHEAD: usize = 3 * (DOUBTFUL_RUN + 1);

/// How many of the member's stored fixes before the earliest new one [`judge`] needs (or all
/// there are): those whose look-ahead can reach a new fix, and before them enough to hold a
/// credible earlier neighbour; at least the run static_repeat looks back along.
pub fn stored_before(t: &Thresholds) -> usize {
    (LOOKAHEAD + DOUBTFUL_RUN + 1).max(t.static_repeat_run)
}

/// How many of the member's stored fixes after the latest new one [`judge`] needs (or all
/// there are): re-judging settles within `DOUBTFUL_RUN + 1` of them (when condition (b) of
/// the module doc holds), and each fix up to there looks up to [`LOOKAHEAD`] further; at
/// least the run along which a new fix can change static_repeat.
pub fn stored_after(t: &Thresholds) -> usize {
    (LOOKAHEAD + DOUBTFUL_RUN + 1).max(t.static_repeat_run)
}

/// A reading as bits: fake-GPS apps replay exact values, and bits also treat NaN as equal to
/// itself, so a replayed NaN cannot break a run.
fn reading_bits(s: &FixSample) -> (u64, u64, u64, Option<u64>) {
    (
        s.position.lon.to_bits(),
        s.position.lat.to_bits(),
        s.accuracy_m.to_bits(),
        s.speed_mps.map(f64::to_bits),
    )
}

/// Whether two fixes carry bit-for-bit the same reading (position, accuracy and speed).
fn same_reading(a: &FixSample, b: &FixSample) -> bool {
    reading_bits(a) == reading_bits(b)
}

/// The order a member's fixes are judged in: `recorded_at`, then (for fixes recorded at the
/// same instant) the reading, so that it never depends on the order they arrived in.
fn judging_order(a: &FixSample, b: &FixSample) -> std::cmp::Ordering {
    a.recorded_at
        .cmp(&b.recorded_at)
        .then_with(|| reading_bits(a).cmp(&reading_bits(b)))
}

/// Where an entry of the merged sequence came from.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// The stored fix at this index of the `stored` argument.
    Stored(usize),
    /// The new fix at this index of the `new` argument.
    New(usize),
}

/// Stored and new fixes merged in judging order (identical readings at one instant: stored
/// first, then input order), as samples and where each came from.
fn merged(
    stored: &[StoredFix],
    new: impl Iterator<Item = FixSample>,
) -> (Vec<FixSample>, Vec<Origin>) {
    let mut order: Vec<(FixSample, Origin)> = stored
        .iter()
        .enumerate()
        .map(|(i, s)| (s.sample, Origin::Stored(i)))
        .chain(new.enumerate().map(|(i, s)| (s, Origin::New(i))))
        .collect();
    // Stable, for the identical readings.
    order.sort_by(|a, b| judging_order(&a.0, &b.0));
    order.into_iter().unzip()
}

/// For each fix of a sequence in judging order, whether the run of bit-identical readings
/// that ends at it is long enough for static_repeat.
fn repeat_runs(samples: &[FixSample], t: &Thresholds) -> Vec<bool> {
    let needed = t.static_repeat_run.max(1);
    let mut run = 0usize;
    samples
        .iter()
        .enumerate()
        .map(|(k, s)| {
            run = if k > 0 && same_reading(&samples[k - 1], s) {
                run + 1
            } else {
                1
            };
            run >= needed
        })
        .collect()
}

/// What judging new fixes among the member's stored ones decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// The new fixes' flags, in input order, intrinsic ones included.
    pub new: Vec<Flags>,
    /// The stored fixes whose implausible_speed or static_repeat the new fixes change, each
    /// with its flags as they must now be.
    pub revised: Vec<(StoredFix, Flags)>,
    /// Whether a verdict depended on what follows the last fix given: re-judging had not
    /// settled by then, or a look-ahead ran into it. Harmless when the member has no later
    /// fix; otherwise the fixes around the end may deserve other flags.
    pub needs_more_after: bool,
}

/// Judges new fixes (any order) among the member's stored fixes around them (any order), so
/// that every fix ends with the flags one pass over the member's whole set of fixes gives it
/// (the module doc says when that is exact): the new fixes' flags, intrinsic ones included,
/// and the revisions of stored fixes. In `new`, each fix comes with whether it may never be a
/// speed neighbour (mocked, or disowned by its device).
///
/// The pass takes the fixes in judging order (`recorded_at`, then the reading), each as if
/// new. A fix is implausible when the apparent speed to its earlier neighbour (the latest
/// fix before it that is not mocked, invalid or judged implausible) or to its later one
/// exceeds the mobility's limit. The later neighbour is the first fix after it that is not
/// mocked or invalid, except that one that contradicts it is passed over when there is
/// evidence that it, not the fix being judged, is the odd one: the earlier neighbour
/// contradicts it as well, or the fix after it contradicts it while agreeing with the fix
/// being judged (a teleport must not condemn the honest fix before it). Without such
/// evidence the plain rule applies: of two contradicting fixes the later condemns the
/// earlier.
///
/// Only the stretch new fixes can change is judged again: from the first stored fix whose
/// look-ahead reaches a new one to the first fix after the new ones that is a neighbour both
/// as stored and as judged now, after which the pass is the one that gave the stored flags.
/// `stored` must hold [`stored_before`] fixes before the earliest new one, all fixes between
/// the new ones and [`stored_after`] after the latest (fewer when the member has no more).
pub fn judge(
    stored: &[StoredFix],
    new: &[(FixSample, bool)],
    received_at: DateTime<Utc>,
    mobility: Mobility,
    t: &Thresholds,
) -> Judgement {
    let mut out: Vec<Flags> = new
        .iter()
        .map(|(s, mock)| intrinsic_flags(s, *mock, received_at, t))
        .collect();
    let (samples, origins) = merged(stored, new.iter().map(|(s, _)| *s));
    let is_new = |o: &Origin| matches!(o, Origin::New(_));
    let (Some(first_new), Some(last_new)) = (
        origins.iter().position(is_new),
        origins.iter().rposition(is_new),
    ) else {
        return Judgement {
            new: out,
            revised: Vec::new(),
            needs_more_after: false,
        };
    };
    let unusable = Flags(Flags::MOCK_LOCATION.0 | Flags::INVALID_FIX.0);
    // Whether each entry may serve as a speed neighbour until judged: mocked and invalid
    // fixes never do.
    let mut usable: Vec<bool> = origins
        .iter()
        .map(|o| match *o {
            Origin::Stored(i) => stored[i].flags.0 & unusable.0 == 0,
            Origin::New(i) => !new[i].1,
        })
        .collect();
    let credible_as_stored = |k: usize| match origins[k] {
        Origin::Stored(i) => !stored[i].flags.disqualifies_neighbour(),
        Origin::New(_) => false,
    };
    let limit = t.max_speed_mps(mobility);

    // The stored fixes keep their verdicts up to the first whose look-ahead reaches a new fix:
    // until there, the pass over all the fixes is the one that gave them.
    let mut last_usable: Option<usize> = None;
    let mut start = first_new;
    for k in 0..first_new {
        let prev = last_usable.map(|p| &samples[p]);
        if later_neighbour(&samples, &usable, k, prev, limit).1 >= first_new {
            start = k;
            break;
        }
        usable[k] = credible_as_stored(k);
        if usable[k] {
            last_usable = Some(k);
        }
    }

    let mut speed: Vec<Option<bool>> = vec![None; samples.len()];
    let mut settled = false;
    let mut ran_off = false;
    for i in start..samples.len() {
        let prev = last_usable.map(|p| &samples[p]);
        let (next, reach) = later_neighbour(&samples, &usable, i, prev, limit);
        ran_off |= reach >= samples.len();
        let bad = implausible_speed(prev, &samples[i], next, mobility, t);
        speed[i] = Some(bad);
        if bad {
            usable[i] = false;
        }
        if usable[i] {
            last_usable = Some(i);
        }
        // Past the new fixes, a fix that is a neighbour both as stored and as judged now puts
        // the pass back on the one that gave the stored verdicts after it.
        if i > last_new && usable[i] && credible_as_stored(i) {
            settled = true;
            break;
        }
    }

    let repeats = repeat_runs(&samples, t);
    let mut revised = Vec::new();
    for (k, origin) in origins.iter().enumerate() {
        match *origin {
            Origin::New(i) => {
                out[i] = out[i]
                    .with(Flags::IMPLAUSIBLE_SPEED, speed[k] == Some(true))
                    .with(Flags::STATIC_REPEAT, repeats[k]);
            }
            Origin::Stored(i) => {
                let was = stored[i].flags;
                let mut now = was;
                if let Some(bad) = speed[k] {
                    now = now.with(Flags::IMPLAUSIBLE_SPEED, bad);
                }
                // A new fix changes the runs only from where it stands on.
                if k > first_new {
                    now = now.with(Flags::STATIC_REPEAT, repeats[k]);
                }
                if now != was {
                    revised.push((stored[i], now));
                }
            }
        }
    }
    Judgement {
        new: out,
        revised,
        needs_more_after: ran_off || !settled,
    }
}

/// The new fixes' flags of [`judge`], for callers that write no revision of stored fixes.
pub fn judge_batch(
    stored: &[StoredFix],
    new: &[(FixSample, bool)],
    received_at: DateTime<Utc>,
    mobility: Mobility,
    t: &Thresholds,
) -> Vec<Flags> {
    judge(stored, new, received_at, mobility, t).new
}

/// The later speed neighbour of the fix at `i` given its earlier neighbour `prev`, and the
/// index of the last entry the answer depends on (`samples.len()` when it looked to the
/// end): the first usable fix after it, except that one that contradicts it is passed over
/// when there is evidence that it is the odd one (see [`judge`]).
fn later_neighbour<'a>(
    samples: &'a [FixSample],
    usable: &[bool],
    i: usize,
    prev: Option<&FixSample>,
    limit: f64,
) -> (Option<&'a FixSample>, usize) {
    let fix = &samples[i];
    let contradicts = |a: &FixSample, b: &FixSample| faster_than(a, b, limit);
    if prev.is_some_and(|p| contradicts(p, fix)) {
        // Implausible whatever comes later, and the evidence below assumes prev agrees.
        return (None, i);
    }
    let end = samples.len();
    let next_usable = |from: usize| (from..end).find(|&j| usable[j]);
    let mut from = i + 1;
    while let Some(j) = next_usable(from) {
        let candidate = &samples[j];
        if !contradicts(fix, candidate) {
            return (Some(candidate), j);
        }
        let after = next_usable(j + 1);
        let candidate_is_odd = prev.is_some_and(|p| contradicts(p, candidate))
            || after.is_some_and(|m| {
                contradicts(candidate, &samples[m]) && !contradicts(fix, &samples[m])
            });
        if !candidate_is_odd {
            return (Some(candidate), after.unwrap_or(end));
        }
        from = j + 1;
    }
    (None, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::{Destination, Geodesic};
    use proptest::prelude::*;

    /// The reference district (Xi'an, around 34.22°N 108.95°E).
    const DISTRICT: LonLat = LonLat::new(108.95, 34.22);

    /// The point `dist` metres from `from` along the geodesic with initial `bearing` (degrees).
    fn destination(from: LonLat, bearing: f64, dist: f64) -> LonLat {
        Geodesic.destination(from.into(), bearing, dist).into()
    }

    /// An instant `ms` milliseconds after a fixed epoch.
    fn at_ms(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_750_000_000_000 + ms).unwrap()
    }

    /// An instant `s` seconds after the same epoch.
    fn at(s: i64) -> DateTime<Utc> {
        at_ms(s * 1000)
    }

    fn sample(s: i64, position: LonLat, accuracy_m: f64) -> FixSample {
        FixSample {
            recorded_at: at(s),
            position,
            accuracy_m,
            speed_mps: None,
        }
    }

    fn stored(sample: FixSample) -> StoredFix {
        StoredFix {
            id: uuid::Uuid::now_v7(),
            sample,
            flags: Flags::empty(),
        }
    }

    fn honest(samples: &[FixSample]) -> Vec<(FixSample, bool)> {
        samples.iter().map(|s| (*s, false)).collect()
    }

    fn foot(prev: Option<&FixSample>, fix: &FixSample, next: Option<&FixSample>) -> bool {
        implausible_speed(prev, fix, next, Mobility::Foot, &Thresholds::default())
    }

    /// A straight walk east at `speed` m/s, one fix every `every` seconds, 5 m accuracy.
    fn walk(n: usize, speed: f64, every: i64) -> Vec<FixSample> {
        (0..n)
            .map(|i| {
                let s = i as i64 * every;
                sample(s, destination(DISTRICT, 90.0, speed * s as f64), 5.0)
            })
            .collect()
    }

    /// judge_batch with everything new, on foot, received a minute after the last fix.
    fn judge_all_new(samples: &[FixSample]) -> Vec<Flags> {
        let received = samples.iter().map(|s| s.recorded_at).max().unwrap() + TimeDelta::minutes(1);
        judge_batch(
            &[],
            &honest(samples),
            received,
            Mobility::Foot,
            &Thresholds::default(),
        )
    }

    // ---- flags ----------------------------------------------------------------------------

    #[test]
    fn flags_names_in_fixed_order_and_back() {
        let all = Flags::OUTSIDE_SHIFT
            | Flags::STATIC_REPEAT
            | Flags::MOCK_LOCATION
            | Flags::CLOCK_SKEW
            | Flags::IMPLAUSIBLE_SPEED
            | Flags::LOW_ACCURACY;
        assert_eq!(
            all.names(),
            [
                "low_accuracy",
                "implausible_speed",
                "clock_skew",
                "mock_location",
                "static_repeat",
                "outside_shift"
            ]
        );
        assert_eq!(Flags::from_names(&all.names()), Some(all));
        assert_eq!(Flags::empty().names(), Vec::<&str>::new());
        assert_eq!(Flags::from_names(&[]), Some(Flags::empty()));
        assert_eq!(
            Flags::from_names(&["clock_skew", "low_accuracy", "clock_skew"]),
            Some(Flags::CLOCK_SKEW | Flags::LOW_ACCURACY)
        );
        assert_eq!(Flags::from_names(&["low_accuracy", "teleport"]), None);
        // Bits nobody named yet are not invented into names.
        assert_eq!(Flags(1 << 20 | 1).names(), ["low_accuracy"]);
    }

    #[test]
    fn flags_bit_values_are_stable() {
        // The bits are stored in the database: renumbering them would relabel old fixes.
        assert_eq!(Flags::LOW_ACCURACY.0, 1);
        assert_eq!(Flags::IMPLAUSIBLE_SPEED.0, 2);
        assert_eq!(Flags::CLOCK_SKEW.0, 4);
        assert_eq!(Flags::MOCK_LOCATION.0, 8);
        assert_eq!(Flags::STATIC_REPEAT.0, 16);
        assert_eq!(Flags::OUTSIDE_SHIFT.0, 32);
        assert_eq!(Flags::default(), Flags::empty());
    }

    #[test]
    fn flags_contains_insert_and_coverage() {
        let mut f = Flags::empty();
        assert!(f.contains(Flags::empty()));
        assert!(!f.contains(Flags::CLOCK_SKEW));
        f.insert(Flags::CLOCK_SKEW);
        f.insert(Flags::LOW_ACCURACY);
        assert!(f.contains(Flags::CLOCK_SKEW | Flags::LOW_ACCURACY));
        assert!(!f.contains(Flags::CLOCK_SKEW | Flags::MOCK_LOCATION));
        // Low accuracy, skew, repeats and shifts are judged elsewhere or not at all.
        assert!(!(f | Flags::STATIC_REPEAT | Flags::OUTSIDE_SHIFT).excludes_from_coverage());
        assert!(Flags::IMPLAUSIBLE_SPEED.excludes_from_coverage());
        assert!(Flags::MOCK_LOCATION.excludes_from_coverage());
        assert!((f | Flags::MOCK_LOCATION).excludes_from_coverage());
        assert!(!Flags::empty().excludes_from_coverage());
    }

    #[test]
    fn thresholds_default_and_mobility_limits() {
        let t = Thresholds::default();
        assert_eq!(t.max_accuracy_m, 50.0);
        assert_eq!(t.max_speed_foot_mps, 7.0);
        assert_eq!(t.max_speed_vehicle_mps, 45.0);
        assert_eq!(t.clock_skew_tolerance_s, 60);
        assert_eq!(t.static_repeat_run, 10);
        assert_eq!(t.max_speed_mps(Mobility::Foot), 7.0);
        assert_eq!(t.max_speed_mps(Mobility::Vehicle), 45.0);
    }

    // ---- apparent speed and implausible_speed ------------------------------------------------

    #[test]
    fn apparent_speed_uses_accuracy_as_slack_and_is_symmetric() {
        let a = sample(0, DISTRICT, 10.0);
        let b = sample(10, destination(DISTRICT, 0.0, 120.0), 10.0);
        let v = apparent_speed_mps(&a, &b);
        assert!((v - 10.0).abs() < 1e-6, "{v}");
        assert_eq!(v, apparent_speed_mps(&b, &a));
        // Inside the slack: no apparent movement.
        let c = sample(10, destination(DISTRICT, 0.0, 15.0), 10.0);
        assert_eq!(apparent_speed_mps(&a, &c), 0.0);
    }

    #[test]
    fn walking_at_1_4_mps_raises_nothing() {
        let fixes = walk(20, 1.4, 10);
        for i in 1..fixes.len() - 1 {
            assert!(!foot(Some(&fixes[i - 1]), &fixes[i], Some(&fixes[i + 1])));
        }
        assert!(judge_all_new(&fixes).iter().all(|f| *f == Flags::empty()));
    }

    #[test]
    fn ten_km_jump_in_ten_seconds_is_implausible() {
        let a = sample(0, DISTRICT, 5.0);
        let b = sample(10, destination(DISTRICT, 45.0, 10_000.0), 5.0);
        assert!(foot(Some(&a), &b, None));
        assert!(foot(None, &a, Some(&b)));
        assert!(implausible_speed(
            Some(&a),
            &b,
            None,
            Mobility::Vehicle,
            &Thresholds::default()
        ));
        assert!(!foot(None, &b, None));
    }

    #[test]
    fn honest_fix_after_a_teleport_is_not_flagged() {
        let mut fixes = walk(6, 1.4, 10);
        fixes[3].position = destination(DISTRICT, 180.0, 10_000.0);
        let flags = judge_all_new(&fixes);
        let expected: Vec<Flags> = (0..6)
            .map(|i| {
                if i == 3 {
                    Flags::IMPLAUSIBLE_SPEED
                } else {
                    Flags::empty()
                }
            })
            .collect();
        assert_eq!(flags, expected);
        // The single-fix rule, with the teleport skipped as the caller must.
        assert!(!foot(Some(&fixes[2]), &fixes[4], Some(&fixes[5])));
        assert!(foot(Some(&fixes[2]), &fixes[3], Some(&fixes[4])));
    }

    #[test]
    fn teleport_as_first_or_last_fix_of_a_batch() {
        let mut first = walk(5, 1.4, 10);
        first[0].position = destination(DISTRICT, 270.0, 30_000.0);
        let flags = judge_all_new(&first);
        assert_eq!(flags[0], Flags::IMPLAUSIBLE_SPEED);
        assert!(flags[1..].iter().all(|f| *f == Flags::empty()), "{flags:?}");

        let mut last = walk(5, 1.4, 10);
        last[4].position = destination(DISTRICT, 270.0, 30_000.0);
        let flags = judge_all_new(&last);
        assert_eq!(flags[4], Flags::IMPLAUSIBLE_SPEED);
        assert!(flags[..4].iter().all(|f| *f == Flags::empty()), "{flags:?}");
    }

    #[test]
    fn two_lone_contradicting_fixes_flag_one_of_them() {
        // Nothing else to go by: the plain rule (the later fix condemns the earlier one).
        let a = sample(0, DISTRICT, 5.0);
        let b = sample(10, destination(DISTRICT, 0.0, 5_000.0), 5.0);
        assert_eq!(
            judge_all_new(&[a, b]),
            [Flags::IMPLAUSIBLE_SPEED, Flags::empty()]
        );
    }

    #[test]
    fn vehicle_limit_allows_25_mps_that_foot_does_not() {
        let t = Thresholds::default();
        let a = sample(0, DISTRICT, 5.0);
        // 260 m in 10 s less 10 m of slack: 25 m/s.
        let b = sample(10, destination(DISTRICT, 90.0, 260.0), 5.0);
        assert!((apparent_speed_mps(&a, &b) - 25.0).abs() < 1e-6);
        assert!(implausible_speed(Some(&a), &b, None, Mobility::Foot, &t));
        assert!(!implausible_speed(
            Some(&a),
            &b,
            None,
            Mobility::Vehicle,
            &t
        ));
        let new = honest(&[a, b]);
        assert_eq!(
            judge_batch(&[], &new, at(20), Mobility::Foot, &t),
            [Flags::IMPLAUSIBLE_SPEED, Flags::empty()]
        );
        assert_eq!(
            judge_batch(&[], &new, at(20), Mobility::Vehicle, &t),
            [Flags::empty(), Flags::empty()]
        );
    }

    #[test]
    fn accuracy_slack_absorbs_80_m_in_1_s_at_50_m_accuracy() {
        let a = sample(0, DISTRICT, 50.0);
        let b = sample(1, destination(DISTRICT, 10.0, 80.0), 50.0);
        assert_eq!(apparent_speed_mps(&a, &b), 0.0);
        assert!(!foot(Some(&a), &b, None));
        // 50 m is the limit, not over it.
        assert_eq!(judge_all_new(&[a, b]), [Flags::empty(), Flags::empty()]);
    }

    #[test]
    fn zero_dt_is_fine_at_the_same_place_and_infinite_elsewhere() {
        let a = sample(0, DISTRICT, 5.0);
        let same = sample(0, DISTRICT, 5.0);
        assert_eq!(apparent_speed_mps(&a, &same), 0.0);
        assert!(!foot(Some(&a), &same, None));
        // Within the slack counts as the same place.
        let near = sample(0, destination(DISTRICT, 0.0, 9.0), 5.0);
        assert_eq!(apparent_speed_mps(&a, &near), 0.0);
        let away = sample(0, destination(DISTRICT, 0.0, 11.0), 5.0);
        assert_eq!(apparent_speed_mps(&a, &away), f64::INFINITY);
        assert!(foot(Some(&a), &away, None));
    }

    #[test]
    fn sub_second_intervals_count() {
        let a = FixSample {
            recorded_at: at_ms(0),
            ..sample(0, DISTRICT, 0.0)
        };
        let b = FixSample {
            recorded_at: at_ms(500),
            ..sample(0, destination(DISTRICT, 0.0, 3.0), 0.0)
        };
        assert!((apparent_speed_mps(&a, &b) - 6.0).abs() < 1e-6);
    }

    #[test]
    fn late_fix_between_two_stored_fixes_is_judged_against_both() {
        let t = Thresholds::default();
        let s1 = sample(0, DISTRICT, 5.0);
        let s2 = sample(60, destination(DISTRICT, 90.0, 60.0), 5.0);
        let around = [stored(s2), stored(s1)];
        let received = at(3600);

        // On the way from one to the other: fine.
        let between = sample(30, destination(DISTRICT, 90.0, 30.0), 5.0);
        assert_eq!(
            judge_batch(&around, &[(between, false)], received, Mobility::Foot, &t),
            [Flags::empty()]
        );

        // Reachable from the earlier one (190 m less 10 m of slack in 30 s: 6 m/s), but too far
        // from the later one (250 m less slack in 30 s: 8 m/s): only the later neighbour says so.
        let detour = sample(30, destination(DISTRICT, 270.0, 190.0), 5.0);
        assert!(!foot(Some(&s1), &detour, None));
        assert!(foot(None, &detour, Some(&s2)));
        assert_eq!(
            judge_batch(&around, &[(detour, false)], received, Mobility::Foot, &t),
            [Flags::IMPLAUSIBLE_SPEED]
        );
        // And mirrored: 7.3 m/s from the earlier one, 5.3 m/s to the later one. s2 agrees
        // with both, so nothing says which of s1 and `early` is the odd one, and the plain
        // rule condemns the earlier, s1, as it would if the three came in one batch.
        let early = sample(30, destination(DISTRICT, 90.0, 230.0), 5.0);
        assert!(foot(Some(&s1), &early, None));
        assert!(!foot(None, &early, Some(&s2)));
        let j = judge(&around, &[(early, false)], received, Mobility::Foot, &t);
        assert_eq!(j.new, [Flags::empty()]);
        assert_eq!(j.revised, [(around[1], Flags::IMPLAUSIBLE_SPEED)]);
        assert_eq!(
            judge_all_new(&[s1, early, s2]),
            [Flags::IMPLAUSIBLE_SPEED, Flags::empty(), Flags::empty()]
        );
    }

    #[test]
    fn stored_implausible_or_mock_fixes_are_not_neighbours() {
        let t = Thresholds::default();
        let fixes = walk(4, 1.4, 10);
        let far = destination(DISTRICT, 0.0, 20_000.0);
        let teleport = StoredFix {
            id: uuid::Uuid::now_v7(),
            sample: sample(15, far, 5.0),
            flags: Flags::IMPLAUSIBLE_SPEED,
        };
        let mocked = StoredFix {
            id: uuid::Uuid::now_v7(),
            sample: sample(25, far, 5.0),
            flags: Flags::MOCK_LOCATION,
        };
        let store = [stored(fixes[0]), stored(fixes[1]), teleport, mocked];
        let new = honest(&fixes[2..]);
        assert_eq!(
            judge_batch(&store, &new, at(60), Mobility::Foot, &t),
            [Flags::empty(), Flags::empty()]
        );
        // Stored without its flag, the teleport is judged again (its earlier neighbour
        // condemns it) rather than trusted to condemn the new fix.
        let unflagged = [stored(fixes[0]), stored(fixes[1]), stored(teleport.sample)];
        let j = judge(&unflagged, &new, at(60), Mobility::Foot, &t);
        assert_eq!(j.new, [Flags::empty(), Flags::empty()]);
        assert_eq!(j.revised, [(unflagged[2], Flags::IMPLAUSIBLE_SPEED)]);
    }

    #[test]
    fn new_mock_fix_is_flagged_and_skipped_as_a_neighbour() {
        let t = Thresholds::default();
        let fixes = walk(3, 1.4, 10);
        let spoofed = sample(15, destination(DISTRICT, 0.0, 20_000.0), 5.0);
        let new = [
            (fixes[0], false),
            (spoofed, true),
            (fixes[1], false),
            (fixes[2], false),
        ];
        assert_eq!(
            judge_batch(&[], &new, at(60), Mobility::Foot, &t),
            [
                Flags::empty(),
                Flags::MOCK_LOCATION | Flags::IMPLAUSIBLE_SPEED,
                Flags::empty(),
                Flags::empty()
            ]
        );
    }

    #[test]
    fn grid_patrols_and_checkpoint_crews_drive_everyone_else_walks() {
        assert_eq!(
            Mobility::of_team_kinds(["volunteer_squad", "grid_patrol"].into_iter()),
            Mobility::Vehicle
        );
        assert_eq!(
            Mobility::of_team_kinds(["checkpoint_crew"].into_iter()),
            Mobility::Vehicle
        );
        assert_eq!(
            Mobility::of_team_kinds(["kiosk_crew", "volunteer_squad"].into_iter()),
            Mobility::Foot
        );
        assert_eq!(Mobility::of_team_kinds(std::iter::empty()), Mobility::Foot);
    }

    #[test]
    fn judge_batch_returns_flags_in_input_order_and_leaves_nothing_for_no_new_fixes() {
        let t = Thresholds::default();
        let mut fixes = walk(5, 1.4, 10);
        fixes[2].position = destination(DISTRICT, 0.0, 20_000.0);
        let new = honest(&[fixes[4], fixes[2], fixes[0], fixes[3], fixes[1]]);
        assert_eq!(
            judge_batch(&[], &new, at(60), Mobility::Foot, &t),
            [
                Flags::empty(),
                Flags::IMPLAUSIBLE_SPEED,
                Flags::empty(),
                Flags::empty(),
                Flags::empty()
            ]
        );
        let store: Vec<StoredFix> = fixes.iter().copied().map(stored).collect();
        assert!(judge_batch(&store, &[], at(60), Mobility::Foot, &t).is_empty());
    }

    #[test]
    fn ties_in_recorded_at_are_ordered_by_reading_whatever_arrived_first() {
        let here = sample(0, DISTRICT, 5.0);
        let there = sample(0, destination(DISTRICT, 0.0, 1_000.0), 5.0);
        let fixes = honest(&[here, there]);
        // Of two contradicting simultaneous fixes, the first in judging order is condemned;
        // which that is must not depend on which was stored first.
        let first = if judging_order(&here, &there).is_lt() {
            0
        } else {
            1
        };
        let mut expected = [Flags::empty(); 2];
        expected[first] = Flags::IMPLAUSIBLE_SPEED;
        for batches in [
            vec![vec![0], vec![1]],
            vec![vec![1], vec![0]],
            vec![vec![0, 1]],
            vec![vec![1, 0]],
        ] {
            let (flags, _) = arrive(&fixes, &batches, Mobility::Foot, false);
            assert_eq!(flags, expected, "{batches:?}");
        }
    }

    #[test]
    fn a_teleport_first_is_flagged_alike_one_by_one_and_in_one_batch() {
        // A (a teleport) first, then B and C, which agree with each other far from
        // A. Judged one by one with stored flags final, A was kept and B and C condemned.
        let a = sample(0, destination(DISTRICT, 270.0, 30_000.0), 5.0);
        let b = sample(20, DISTRICT, 5.0);
        let c = sample(40, destination(DISTRICT, 90.0, 28.0), 5.0);
        let fixes = honest(&[a, b, c]);
        let expected = [Flags::IMPLAUSIBLE_SPEED, Flags::empty(), Flags::empty()];
        assert_eq!(judge_all_new(&[a, b, c]), expected);
        for batches in [
            vec![vec![0], vec![1], vec![2]],
            vec![vec![2], vec![1], vec![0]],
            vec![vec![1], vec![0, 2]],
            vec![vec![0, 1, 2]],
        ] {
            for windowed in [false, true] {
                let (flags, _) = arrive(&fixes, &batches, Mobility::Foot, windowed);
                assert_eq!(flags, expected, "{batches:?}");
            }
        }
        // B's arrival revises the stored A.
        let stored_a = stored(a);
        let j = judge(
            &[stored_a],
            &[(b, false)],
            at(60),
            Mobility::Foot,
            &Thresholds::default(),
        );
        assert_eq!(j.new, [Flags::empty()]);
        assert_eq!(j.revised, [(stored_a, Flags::IMPLAUSIBLE_SPEED)]);
    }

    // ---- static_repeat ------------------------------------------------------------------------

    /// `n` bit-identical readings, 5 s apart.
    fn frozen(n: usize) -> Vec<FixSample> {
        let p = destination(DISTRICT, 33.0, 123.456);
        (0..n)
            .map(|i| FixSample {
                speed_mps: Some(0.25),
                ..sample(i as i64 * 5, p, 12.5)
            })
            .collect()
    }

    #[test]
    fn ten_identical_fixes_raise_static_repeat_on_the_tenth_not_the_ninth() {
        let t = Thresholds::default();
        let fixes = frozen(11);
        assert!(!static_repeat(&fixes[..8], &fixes[8], &t));
        assert!(static_repeat(&fixes[..9], &fixes[9], &t));
        assert!(static_repeat(&fixes[..10], &fixes[10], &t));
        assert!(!static_repeat(&[], &fixes[0], &t));
        let flags = judge_all_new(&fixes);
        for (i, f) in flags.iter().enumerate() {
            let expected = if i >= 9 {
                Flags::STATIC_REPEAT
            } else {
                Flags::empty()
            };
            assert_eq!(*f, expected, "fix {i}");
        }
    }

    #[test]
    fn static_repeat_run_spans_stored_and_new_fixes() {
        let t = Thresholds::default();
        let fixes = frozen(10);
        let store: Vec<StoredFix> = fixes[..7].iter().rev().copied().map(stored).collect();
        let new = honest(&[fixes[9], fixes[8], fixes[7]]);
        assert_eq!(
            judge_batch(&store, &new, at(60), Mobility::Foot, &t),
            [Flags::STATIC_REPEAT, Flags::empty(), Flags::empty()]
        );
    }

    #[test]
    fn jitter_of_1e_7_degrees_breaks_the_run() {
        let t = Thresholds::default();
        let mut fixes = frozen(10);
        fixes[4].position.lat += 1e-7;
        assert!(!static_repeat(&fixes[..9], &fixes[9], &t));
        assert!(judge_all_new(&fixes).iter().all(|f| *f == Flags::empty()));
        // The run starts again after the jittered fix.
        let longer = frozen(15);
        let mut jittered = longer.clone();
        jittered[4].position.lon -= 1e-7;
        assert!(!static_repeat(&jittered[..13], &jittered[13], &t));
        assert!(static_repeat(&jittered[..14], &jittered[14], &t));
    }

    #[test]
    fn static_repeat_compares_accuracy_and_speed_too() {
        let t = Thresholds::default();
        let base = frozen(10);
        let mut other_accuracy = base.clone();
        other_accuracy[0].accuracy_m = 12.500_000_001;
        assert!(!static_repeat(&other_accuracy[..9], &other_accuracy[9], &t));
        let mut no_speed = base.clone();
        no_speed[0].speed_mps = None;
        assert!(!static_repeat(&no_speed[..9], &no_speed[9], &t));
        assert!(static_repeat(&base[..9], &base[9], &t));
    }

    // ---- clock skew, accuracy, mock -----------------------------------------------------------

    #[test]
    fn clock_skew_61_s_ahead_is_flagged_59_s_is_not() {
        let t = Thresholds::default();
        let received = at(1000);
        assert!(clock_skew(at(1061), received, &t));
        assert!(!clock_skew(at(1060), received, &t));
        assert!(!clock_skew(at(1059), received, &t));
        // Behind the server is an upload delay, not skew.
        assert!(!clock_skew(at(-86_400), received, &t));
        let f = sample(1061, DISTRICT, 5.0);
        assert_eq!(intrinsic_flags(&f, false, received, &t), Flags::CLOCK_SKEW);
        let f = sample(1059, DISTRICT, 5.0);
        assert_eq!(intrinsic_flags(&f, false, received, &t), Flags::empty());
    }

    #[test]
    fn low_accuracy_is_over_the_limit() {
        let t = Thresholds::default();
        let received = at(1000);
        let ok = sample(0, DISTRICT, 50.0);
        assert_eq!(intrinsic_flags(&ok, false, received, &t), Flags::empty());
        let coarse = sample(0, DISTRICT, 50.5);
        assert_eq!(
            intrinsic_flags(&coarse, false, received, &t),
            Flags::LOW_ACCURACY
        );
        let unknown = sample(0, DISTRICT, f64::NAN);
        assert_eq!(
            intrinsic_flags(&unknown, false, received, &t),
            Flags::LOW_ACCURACY
        );
    }

    #[test]
    fn mock_is_flagged_intrinsically() {
        let t = Thresholds::default();
        let f = sample(2000, DISTRICT, 80.0);
        assert_eq!(
            intrinsic_flags(&f, true, at(1000), &t),
            Flags::MOCK_LOCATION | Flags::LOW_ACCURACY | Flags::CLOCK_SKEW
        );
        assert_eq!(
            judge_batch(&[], &[(f, true)], at(1000), Mobility::Foot, &t),
            [Flags::MOCK_LOCATION | Flags::LOW_ACCURACY | Flags::CLOCK_SKEW]
        );
    }

    // ---- properties ---------------------------------------------------------------------------

    /// One step of a random walk: speed (m/s), heading (°), seconds since the previous fix,
    /// jitter distance (m) and bearing (°) of the reported position, accuracy (m), and how the
    /// fix is handed to judge_batch: a shuffle key and whether it is stored.
    type Step = (f64, f64, f64, f64, f64, f64, u32, bool);

    fn step() -> impl Strategy<Value = Step> {
        (
            0.0f64..2.0,
            0.0f64..360.0,
            15.0f64..60.0,
            0.0f64..5.0,
            0.0f64..360.0,
            3.0f64..30.0,
            any::<u32>(),
            any::<bool>(),
        )
    }

    /// The reported fixes of a walk starting in the district, in time order.
    fn walk_from(steps: &[Step]) -> Vec<FixSample> {
        let mut truth = DISTRICT;
        let mut ms = 0i64;
        steps
            .iter()
            .map(|&(speed, heading, dt, jd, jb, acc, _, _)| {
                let dt_ms = (dt * 1000.0).round() as i64;
                ms += dt_ms;
                truth = destination(truth, heading, speed * dt_ms as f64 / 1000.0);
                FixSample {
                    recorded_at: at_ms(ms),
                    position: destination(truth, jb, jd),
                    accuracy_m: acc,
                    speed_mps: Some(speed),
                }
            })
            .collect()
    }

    /// Hands the fixes to judge_batch shuffled by `keys` and split by `to_store` (stored fixes
    /// carry `stored_flags`); returns the flags per fix in the original order, `None` for the
    /// stored ones.
    fn judge_split(
        fixes: &[(FixSample, bool)],
        stored_flags: &[Flags],
        keys: &[u32],
        to_store: &[bool],
        mobility: Mobility,
    ) -> Vec<Option<Flags>> {
        let mut idx: Vec<usize> = (0..fixes.len()).collect();
        idx.sort_by_key(|&i| (keys[i], i));
        let (stored_idx, new_idx): (Vec<usize>, Vec<usize>) =
            idx.into_iter().partition(|&i| to_store[i]);
        let store: Vec<StoredFix> = stored_idx
            .iter()
            .map(|&i| StoredFix {
                id: uuid::Uuid::from_u128(i as u128),
                sample: fixes[i].0,
                flags: stored_flags[i],
            })
            .collect();
        let new: Vec<(FixSample, bool)> = new_idx.iter().map(|&i| fixes[i]).collect();
        let received = fixes.iter().map(|f| f.0.recorded_at).max().unwrap() + TimeDelta::hours(1);
        let flags = judge_batch(&store, &new, received, mobility, &Thresholds::default());
        let mut out = vec![None; fixes.len()];
        for (k, &i) in new_idx.iter().enumerate() {
            out[i] = Some(flags[k]);
        }
        out
    }

    /// A time to receive the fixes at, after all of them (so that no clock_skew is raised).
    fn received_after(fixes: &[(FixSample, bool)]) -> DateTime<Utc> {
        fixes.iter().map(|f| f.0.recorded_at).max().unwrap_or(at(0)) + TimeDelta::hours(1)
    }

    /// The flags the rule gives the fixes: one pass over all of them as new.
    fn canonical(fixes: &[(FixSample, bool)], mobility: Mobility) -> Vec<Flags> {
        let received = received_after(fixes);
        judge_batch(&[], fixes, received, mobility, &Thresholds::default())
    }

    /// Whether no more than [`DOUBTFUL_RUN`] fixes in a row (in judging order) carry a flag
    /// that keeps them from being speed neighbours.
    fn doubtful_runs_within_bound(fixes: &[FixSample], flags: &[Flags]) -> bool {
        let mut idx: Vec<usize> = (0..fixes.len()).collect();
        idx.sort_by(|&a, &b| judging_order(&fixes[a], &fixes[b]));
        let mut run = 0;
        idx.into_iter().all(|i| {
            run = if flags[i].disqualifies_neighbour() {
                run + 1
            } else {
                0
            };
            run <= DOUBTFUL_RUN
        })
    }

    /// Stores a member's fixes batch by batch as the writer does: each batch judged with
    /// [`judge`] among the stored fixes (all of them, or with `windowed` those the writer
    /// reads: [`stored_before`] before the batch's span, all within it, [`stored_after`] after
    /// it) and the revisions applied. Answers each fix's final flags, and whether the module
    /// doc promises them exact: no judgement needed more after than it was given while more
    /// was left out, and the stored fixes never held a run of doubtful ones over the bound.
    fn arrive(
        fixes: &[(FixSample, bool)],
        batches: &[Vec<usize>],
        mobility: Mobility,
        windowed: bool,
    ) -> (Vec<Flags>, bool) {
        let t = Thresholds::default();
        let received = received_after(fixes);
        let mut store: Vec<(usize, StoredFix)> = Vec::new();
        let mut promised = true;
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            let new: Vec<(FixSample, bool)> = batch.iter().map(|&i| fixes[i]).collect();
            let from = new.iter().map(|f| f.0.recorded_at).min().unwrap();
            let to = new.iter().map(|f| f.0.recorded_at).max().unwrap();
            store.sort_by(|a, b| judging_order(&a.1.sample, &b.1.sample));
            let all: Vec<StoredFix> = store.iter().map(|(_, s)| *s).collect();
            let (window, left_out_after) = if windowed {
                let before: Vec<StoredFix> = all
                    .iter()
                    .filter(|s| s.sample.recorded_at < from)
                    .copied()
                    .collect();
                let within = all
                    .iter()
                    .filter(|s| (from..=to).contains(&s.sample.recorded_at));
                let after: Vec<StoredFix> = all
                    .iter()
                    .filter(|s| s.sample.recorded_at > to)
                    .copied()
                    .collect();
                let window: Vec<StoredFix> = before
                    [before.len().saturating_sub(stored_before(&t))..]
                    .iter()
                    .chain(within)
                    .chain(after.iter().take(stored_after(&t)))
                    .copied()
                    .collect();
                (window, after.len() > stored_after(&t))
            } else {
                (all, false)
            };
            let judged = judge(&window, &new, received, mobility, &t);
            promised &= !(judged.needs_more_after && left_out_after);
            for (fix, flags) in judged.revised {
                let entry = store.iter_mut().find(|(_, s)| s.id == fix.id).unwrap();
                entry.1.flags = flags;
            }
            for (k, &i) in batch.iter().enumerate() {
                store.push((
                    i,
                    StoredFix {
                        id: uuid::Uuid::from_u128(i as u128),
                        sample: fixes[i].0,
                        flags: judged.new[k],
                    },
                ));
            }
            let now: Vec<(FixSample, bool)> = store.iter().map(|(i, _)| fixes[*i]).collect();
            let samples: Vec<FixSample> = now.iter().map(|f| f.0).collect();
            promised &= doubtful_runs_within_bound(&samples, &canonical(&now, mobility));
        }
        let mut out = vec![Flags::empty(); fixes.len()];
        for (i, s) in store {
            out[i] = s.flags;
        }
        (out, promised)
    }

    /// What a fix of a messy day is.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        /// The next fix of a walk, at up to 9 m/s (so now and then too fast on foot).
        Step,
        /// A single fix 5 to 50 km off the walk.
        Teleport,
        /// A mocked fix up to 30 km off the walk.
        Mock,
        /// The walk goes on 5 to 50 km away.
        Move,
        /// The previous reading again, bit for bit.
        Repeat,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            60 => Just(Kind::Step),
            6 => Just(Kind::Teleport),
            6 => Just(Kind::Mock),
            1 => Just(Kind::Move),
            4 => Just(Kind::Repeat),
        ]
    }

    /// One fix of a messy day: its kind, milliseconds since the previous fix, a bearing, a
    /// share of the kind's distance, the accuracy, and how it arrives: a shuffle key and a
    /// batch number.
    type Part = (Kind, i64, f64, f64, f64, u32, usize);

    /// The fixes of a messy day in time order, each with whether it is mocked.
    fn messy_day(parts: &[Part]) -> Vec<(FixSample, bool)> {
        let mut truth = DISTRICT;
        let mut ms = 0;
        let mut out: Vec<(FixSample, bool)> = Vec::new();
        for &(kind, gap_ms, bearing, share, accuracy_m, _, _) in parts {
            ms += gap_ms;
            let fix = |position| FixSample {
                recorded_at: at_ms(ms),
                position,
                accuracy_m,
                speed_mps: None,
            };
            let far = 5_000.0 + 45_000.0 * share;
            let next = match kind {
                Kind::Step => {
                    truth = destination(truth, bearing, 9.0 * share.powi(3) * gap_ms as f64 / 1e3);
                    (fix(truth), false)
                }
                Kind::Teleport => (fix(destination(truth, bearing, far)), false),
                Kind::Mock => (fix(destination(truth, bearing, 30_000.0 * share)), true),
                Kind::Move => {
                    truth = destination(truth, bearing, far);
                    (fix(truth), false)
                }
                Kind::Repeat => match out.last() {
                    Some(&(prev, mock)) => (
                        FixSample {
                            recorded_at: at_ms(ms),
                            ..prev
                        },
                        mock,
                    ),
                    None => (fix(truth), false),
                },
            };
            out.push(next);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The cheap decision is the exact one: for pairs of fixes whose speed is anywhere
        /// from far under to far over the limit, and right at it.
        #[test]
        fn prop_faster_than_decides_as_the_geodesic_does(
            bearing in 0.0f64..360.0,
            dist in 0.0f64..5_000.0,
            dt_ms in 0i64..600_000,
            acc_a in 0.0f64..100.0,
            acc_b in 0.0f64..100.0,
            lat in -80.0f64..80.0,
            at_limit in any::<bool>(),
        ) {
            let a = sample(0, LonLat::new(108.95, lat), acc_a);
            let b = FixSample {
                position: destination(a.position, bearing, dist),
                accuracy_m: acc_b,
                recorded_at: at_ms(dt_ms),
                speed_mps: None,
            };
            let exact = apparent_speed_mps(&a, &b);
            let limit = if at_limit { exact } else { 7.0 };
            prop_assert_eq!(faster_than(&a, &b, limit), exact > limit);
            prop_assert_eq!(faster_than(&b, &a, limit), apparent_speed_mps(&b, &a) > limit);
        }

        /// A normal walk raises no flag at all, whatever order and split judge_batch gets it in.
        #[test]
        fn prop_normal_walk_raises_nothing(steps in prop::collection::vec(step(), 2..30)) {
            let fixes = walk_from(&steps);
            for i in 0..fixes.len() {
                let prev = i.checked_sub(1).map(|p| &fixes[p]);
                prop_assert!(!foot(prev, &fixes[i], fixes.get(i + 1)));
                prop_assert!(!static_repeat(&fixes[..i], &fixes[i], &Thresholds::default()));
            }
            let keys: Vec<u32> = steps.iter().map(|s| s.6).collect();
            let split: Vec<bool> = steps.iter().map(|s| s.7).collect();
            let none = vec![Flags::empty(); fixes.len()];
            let out = judge_split(&honest(&fixes), &none, &keys, &split, Mobility::Foot);
            for f in out.into_iter().flatten() {
                prop_assert_eq!(f, Flags::empty());
            }
        }

        /// One teleport (20+ km away) inserted anywhere into a walk is flagged, and judge_batch
        /// flags nothing else, whatever the order and split of the walk.
        #[test]
        fn prop_teleport_is_flagged_alone(
            steps in prop::collection::vec(step(), 2..30),
            at_index in any::<prop::sample::Index>(),
            bearing in 0.0f64..360.0,
            dist in 20_000.0f64..200_000.0,
            key in any::<u32>(),
        ) {
            let walk = walk_from(&steps);
            let k = at_index.index(walk.len() + 1);
            let when = match k {
                0 => walk[0].recorded_at - TimeDelta::seconds(30),
                k if k == walk.len() => walk[k - 1].recorded_at + TimeDelta::seconds(30),
                k => walk[k - 1].recorded_at + (walk[k].recorded_at - walk[k - 1].recorded_at) / 2,
            };
            let teleport = FixSample {
                recorded_at: when,
                position: destination(walk[k.min(walk.len() - 1)].position, bearing, dist),
                accuracy_m: 10.0,
                speed_mps: None,
            };
            prop_assert!(foot(k.checked_sub(1).map(|p| &walk[p]), &teleport, walk.get(k)));

            let mut fixes = walk.clone();
            fixes.insert(k, teleport);
            let mut keys: Vec<u32> = steps.iter().map(|s| s.6).collect();
            keys.insert(k, key);
            let mut split: Vec<bool> = steps.iter().map(|s| s.7).collect();
            split.insert(k, false);
            let none = vec![Flags::empty(); fixes.len()];
            let out = judge_split(&honest(&fixes), &none, &keys, &split, Mobility::Foot);
            for (i, f) in out.into_iter().enumerate() {
                let expected = if i == k { Flags::IMPLAUSIBLE_SPEED } else { Flags::empty() };
                if let Some(f) = f {
                    prop_assert_eq!(f, expected, "fix {} of {}", i, fixes.len());
                }
            }
        }

        /// However a frozen device's fixes arrive (one by one, in one batch, in shuffled
        /// batches, newer first), once all are stored with [`judge`]'s flags and revisions
        /// applied, each carries static_repeat exactly when the run ending at it in time
        /// order is `run` long or longer.
        #[test]
        fn prop_static_repeat_ends_the_same_whatever_the_order_of_arrival(
            walk_steps in prop::collection::vec(step(), 0..6),
            run in 2usize..8,
            pieces in prop::collection::vec((1i64..60, 0usize..3, any::<u32>(), 0usize..4), 2..24),
        ) {
            let t = Thresholds { static_repeat_run: run, ..Thresholds::default() };
            let walk = walk_from(&walk_steps);
            let mut when = walk.last().map_or(at(0), |f| f.recorded_at);
            // Runs of three readings, interleaved as `pieces` says.
            let places: Vec<LonLat> = (0..3).map(|k| destination(DISTRICT, 90.0 * k as f64, 40.0)).collect();
            let mut fixes = walk.clone();
            for &(gap, reading, _, _) in &pieces {
                when += TimeDelta::seconds(gap);
                fixes.push(FixSample { recorded_at: when, position: places[reading], accuracy_m: 5.0, speed_mps: None });
            }
            let expected: Vec<bool> = (0..fixes.len())
                .map(|i| static_repeat(&fixes[..i], &fixes[i], &t))
                .collect();
            // Arrival: shuffled by key, cut into batches by the batch numbers.
            let keys: Vec<u32> = walk_steps.iter().map(|s| s.6)
                .chain(pieces.iter().map(|p| p.2)).collect();
            let batch_of: Vec<usize> = walk_steps.iter().map(|s| s.6 as usize % 4)
                .chain(pieces.iter().map(|p| p.3)).collect();
            let mut idx: Vec<usize> = (0..fixes.len()).collect();
            idx.sort_by_key(|&i| (batch_of[i], keys[i], i));
            let mut store: Vec<(usize, StoredFix)> = Vec::new();
            for b in 0..4 {
                let arriving: Vec<usize> = idx.iter().copied().filter(|&i| batch_of[i] == b).collect();
                if arriving.is_empty() {
                    continue;
                }
                let stored: Vec<StoredFix> = store.iter().map(|(_, s)| *s).collect();
                let new: Vec<FixSample> = arriving.iter().map(|&i| fixes[i]).collect();
                let with_mock: Vec<(FixSample, bool)> = new.iter().map(|f| (*f, false)).collect();
                let Judgement { new: flags, revised, .. } =
                    judge(&stored, &with_mock, when, Mobility::Vehicle, &t);
                for (revised, f) in revised {
                    let s = store.iter_mut().find(|(_, s)| s.id == revised.id).unwrap();
                    s.1.flags = f;
                }
                for (k, &i) in arriving.iter().enumerate() {
                    store.push((i, StoredFix { id: uuid::Uuid::from_u128(i as u128), sample: fixes[i], flags: flags[k] }));
                }
            }
            for (i, s) in &store {
                prop_assert_eq!(s.flags.contains(Flags::STATIC_REPEAT), expected[*i], "fix {}", i);
            }
        }

        /// A frozen device (one reading repeated) after a walk raises static_repeat from the
        /// run-th repeat on, both fix by fix and in judge_batch.
        #[test]
        fn prop_frozen_device_raises_static_repeat_from_the_run_th_fix(
            walk_steps in prop::collection::vec(step(), 0..10),
            run in 2usize..12,
            extra in 0usize..8,
            gaps in prop::collection::vec((1i64..120, any::<u32>(), any::<bool>()), 20),
            acc in 3.0f64..30.0,
            speed in prop::option::of(0.0f64..2.0),
        ) {
            let t = Thresholds { static_repeat_run: run, ..Thresholds::default() };
            let walk = walk_from(&walk_steps);
            let last = walk.last().map_or(at(0), |f| f.recorded_at);
            let place = destination(walk.last().map_or(DISTRICT, |f| f.position), 45.0, 3.0);
            let mut fixes = walk.clone();
            let mut when = last;
            for &(gap, _, _) in &gaps[..run + extra] {
                when += TimeDelta::seconds(gap);
                fixes.push(FixSample { recorded_at: when, position: place, accuracy_m: acc, speed_mps: speed });
            }
            let expected = |i: usize| i >= walk.len() && i + 1 - walk.len() >= run;
            for i in 0..fixes.len() {
                prop_assert_eq!(static_repeat(&fixes[..i], &fixes[i], &t), expected(i), "fix {}", i);
            }

            let keys: Vec<u32> =
                walk_steps.iter().map(|s| s.6).chain(gaps.iter().map(|g| g.1)).collect();
            let split: Vec<bool> =
                walk_steps.iter().map(|s| s.7).chain(gaps.iter().map(|g| g.2)).collect();
            let mut idx: Vec<usize> = (0..fixes.len()).collect();
            idx.sort_by_key(|&i| (keys[i], i));
            let (stored_idx, new_idx): (Vec<usize>, Vec<usize>) =
                idx.into_iter().partition(|&i| split[i]);
            let store: Vec<StoredFix> = stored_idx.iter().map(|&i| stored(fixes[i])).collect();
            let new: Vec<(FixSample, bool)> = new_idx.iter().map(|&i| (fixes[i], false)).collect();
            let flags = judge_batch(&store, &new, when, Mobility::Foot, &t);
            for (k, &i) in new_idx.iter().enumerate() {
                prop_assert_eq!(flags[k].contains(Flags::STATIC_REPEAT), expected(i), "fix {}", i);
                prop_assert!(!flags[k].contains(Flags::IMPLAUSIBLE_SPEED));
            }
        }

        /// judge_batch gives every new fix the same flags whatever order `new` and `stored` come
        /// in, for messy input: teleports, mocks, flagged stored fixes, repeats.
        #[test]
        fn prop_judge_batch_ignores_input_order(
            fixes in prop::collection::vec(
                (
                    1i64..90_000,
                    prop_oneof![
                        4 => (0.0f64..360.0, 0.0f64..300.0),
                        1 => (0.0f64..360.0, 5_000.0f64..50_000.0),
                    ],
                    prop_oneof![Just(5.0f64), 3.0f64..80.0],
                    any::<bool>(),
                    prop_oneof![
                        3 => Just(Flags::empty()),
                        1 => Just(Flags::IMPLAUSIBLE_SPEED),
                        1 => Just(Flags::MOCK_LOCATION),
                    ],
                    any::<(bool, bool, u32, u32)>(),
                ),
                1..25,
            ),
            vehicle in any::<bool>(),
        ) {
            // Distinct times (strictly increasing gaps), so no ties decide anything.
            let mut ms = 0;
            let mut all: Vec<(FixSample, bool)> = Vec::new();
            let mut stored_flags = Vec::new();
            let mut split = Vec::new();
            let (mut keys_a, mut keys_b) = (Vec::new(), Vec::new());
            for &(gap, (bearing, dist), acc, repeat, flags, (mock, to_store, ka, kb)) in &fixes {
                ms += gap;
                // A repeat copies the previous reading exactly, as a frozen device would.
                let (position, accuracy_m) = match all.last() {
                    Some((prev, _)) if repeat => (prev.position, prev.accuracy_m),
                    _ => (destination(DISTRICT, bearing, dist), acc),
                };
                all.push((
                    FixSample { recorded_at: at_ms(ms), position, accuracy_m, speed_mps: None },
                    mock && !to_store,
                ));
                stored_flags.push(flags);
                split.push(to_store);
                keys_a.push(ka);
                keys_b.push(kb);
            }
            let mobility = if vehicle { Mobility::Vehicle } else { Mobility::Foot };
            let a = judge_split(&all, &stored_flags, &keys_a, &split, mobility);
            let b = judge_split(&all, &stored_flags, &keys_b, &split, mobility);
            prop_assert_eq!(a, b);
        }

        /// However a member's fixes arrive (one by one in time order or shuffled, in one
        /// batch, in shuffled batches), once stored with [`judge`]'s flags and revisions each
        /// carries the flags one pass over all of them gives it: always when every stored fix
        /// is at hand, and with the writer's window whenever the module doc promises it.
        #[test]
        fn prop_flags_do_not_depend_on_the_order_of_arrival(
            parts in prop::collection::vec(
                (kind(), 1_000i64..90_000, 0.0f64..360.0, 0.0f64..1.0, 3.0f64..30.0, any::<u32>(), 0usize..5),
                1..80,
            ),
            vehicle in any::<bool>(),
        ) {
            let mobility = if vehicle { Mobility::Vehicle } else { Mobility::Foot };
            let fixes = messy_day(&parts);
            let expected = canonical(&fixes, mobility);
            let n = fixes.len();
            let mut shuffled: Vec<usize> = (0..n).collect();
            shuffled.sort_by_key(|&i| (parts[i].5, i));
            let in_time: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
            let one_by_one: Vec<Vec<usize>> = shuffled.iter().map(|&i| vec![i]).collect();
            let one_batch = vec![shuffled.clone()];
            let batches: Vec<Vec<usize>> = (0..5)
                .map(|b| shuffled.iter().copied().filter(|&i| parts[i].6 == b).collect())
                .collect();
            for (how, arrival) in [
                ("one by one in time order", &in_time),
                ("one by one shuffled", &one_by_one),
                ("in one batch", &one_batch),
                ("in shuffled batches", &batches),
            ] {
                let (flags, _) = arrive(&fixes, arrival, mobility, false);
                prop_assert_eq!(&flags, &expected, "{} with every stored fix at hand", how);
                let (flags, promised) = arrive(&fixes, arrival, mobility, true);
                if promised {
                    prop_assert_eq!(&flags, &expected, "{} with the writer's window", how);
                }
            }
        }

        /// Names and bits round-trip for every combination of the known flags.
        #[test]
        fn prop_flag_names_round_trip(bits in 0i32..64) {
            let flags = Flags(bits);
            let names = flags.names();
            prop_assert_eq!(Flags::from_names(&names), Some(flags));
            prop_assert_eq!(names.len(), bits.count_ones() as usize);
            for name in names {
                prop_assert!(flags.contains(Flags::from_names(&[name]).unwrap()));
            }
        }
    }
}
