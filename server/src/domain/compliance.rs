//! The programme's monthly marks (domain.md, "Accountability"): who is named, who gets a
//! yellow card or a veto, who is commended.
//!
//! The input is, for every unit of one level in the district, its score in the reported
//! month and in the two months before (`None`: not ranked that month). One ranking covers
//! every unit of the level; who asks only decides which rows they are shown, never the marks.
//!
//! The rule, month by month:
//!
//! * **Ranked.** A unit is ranked in a month when it had rostered duty in it: finished
//!   shifts, or roster-gap hours on a round-the-clock post. A month before the unit's first
//!   roster has neither and is not ranked: no rank, no marks, and it is not a bottom-2
//!   month. (Roster-gap hours of a post count only from its first rostered shift onward;
//!   before it the programme had not begun for that post. The caller applies this when it
//!   adds up the hours.)
//! * **Compared at a fixed precision.** Scores are compared rounded to [`SCORE_DECIMALS`]
//!   decimal places (0.01 percentage point): they are sums of hours in floating point, and
//!   two units whose duty was equally good must not be split by rounding noise. A score that
//!   is not a finite number is not ranked.
//! * **Ties.** Equal scores share a rank (competition ranking: 1, 2, 2, 4) and share their
//!   fate: no mark is decided by a unit's code or by the order units are listed in.
//! * **Too few units.** With fewer than [`MIN_RANKED`] ranked units the month is not marked
//!   at all ([`Withheld::TooFewUnits`]): no unit is in the bottom 2 or the top 3. Ranks are
//!   still given.
//! * **Bottom 2.** A unit is in the bottom 2 when fewer than two ranked units scored strictly
//!   below it and at least one ranked unit scored strictly above it. A level where all units
//!   tie thus names no one, and a tie that straddles the bottom-2 boundary is named whole:
//!   with scores 0.9, 0.8, 0.8, 0.8 the three units at 0.8 are all named, so more than two
//!   units may be named.
//! * **Top 3.** A unit is in the top 3 when fewer than three ranked units scored strictly
//!   above it and it met some of its duty (a score above 0): where every unit scored 0 all
//!   tie for first, and a unit that met none of its duty has nothing to be commended for.
//! * **Months running.** A run counts consecutive ranked months in the bottom 2, ending with
//!   the reported month; a month not ranked, or not marked, ends it (an unranked month
//!   between two bottom-2 months does not join them). One month is `named`, two months
//!   running a `yellow_card`, three a `veto`; only three months are looked at, as the plan
//!   acts on no more.
//! * **Commended.** In the top 3 this month and last month, and never while in the bottom 2
//!   this month. So a unit is never both commended and named, carded or vetoed, and a unit
//!   that scored 0 in either month is never commended.

/// Decimal places of a score (a share between 0 and 1) at which units are compared.
pub const SCORE_DECIMALS: i32 = 4;

/// Fewest ranked units a month needs for its marks to be given.
pub const MIN_RANKED: usize = 3;

/// A score rounded to the precision at which units are compared; `None` for a score that
/// is not a finite number.
pub fn rounded(score: f64) -> Option<f64> {
    let scale = 10f64.powi(SCORE_DECIMALS);
    score.is_finite().then(|| (score * scale).round() / scale)
}

/// A score as an integer of the compared precision, so equality is exact.
fn key(score: Option<f64>) -> Option<i64> {
    let scale = 10f64.powi(SCORE_DECIMALS);
    score
        .filter(|s| s.is_finite())
        .map(|s| (s * scale).round() as i64)
}

/// One unit's scores: `None` where the unit is not ranked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// The reported month.
    pub month: Option<f64>,
    /// The month before it.
    pub last: Option<f64>,
    /// The month before that.
    pub before_last: Option<f64>,
}

/// Why a month's marks are not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// Fewer than [`MIN_RANKED`] units were ranked.
    TooFewUnits,
}

/// What the plan does to a unit in the bottom 2, by months running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consequence {
    /// One month: named district-wide, under key management.
    Named,
    /// Two months running.
    YellowCard,
    /// Three months running.
    Veto,
}

impl Consequence {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Consequence::Named => "named",
            Consequence::YellowCard => "yellow_card",
            Consequence::Veto => "veto",
        }
    }
}

/// One unit's place in one month's ranking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Place {
    rank: Option<u32>,
    tied: u32,
    bottom2: bool,
    top3: bool,
}

/// One month's ranking of every unit of a level.
struct Month {
    ranked: usize,
    withheld: Option<Withheld>,
    places: Vec<Place>,
}

fn rank_month(scores: impl Iterator<Item = Option<f64>>) -> Month {
    let keys: Vec<Option<i64>> = scores.map(key).collect();
    let mut ranked: Vec<i64> = keys.iter().flatten().copied().collect();
    ranked.sort_unstable();
    let withheld = (ranked.len() < MIN_RANKED).then_some(Withheld::TooFewUnits);
    let places = keys
        .iter()
        .map(|k| {
            let Some(k) = *k else {
                return Place::default();
            };
            // `ranked` is sorted: the units below end where `k` starts, those above after it ends.
            let below = ranked.partition_point(|&x| x < k);
            let not_above = ranked.partition_point(|&x| x <= k);
            let above = ranked.len() - not_above;
            let marked = withheld.is_none();
            Place {
                rank: Some(above as u32 + 1),
                tied: (not_above - below) as u32,
                bottom2: marked && below < 2 && above >= 1,
                top3: marked && above < 3 && k > 0,
            }
        })
        .collect();
    Month {
        ranked: ranked.len(),
        withheld,
        places,
    }
}

/// One unit's marks in the reported month.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// Competition rank, 1 = best; `None` when not ranked.
    pub rank: Option<u32>,
    /// Ranked units sharing this rank, this one included (0 when not ranked).
    pub tied: u32,
    /// In the bottom 2.
    pub bottom2: bool,
    /// Consecutive ranked months in the bottom 2 ending with this one (0 to 3).
    pub months_in_bottom2: u32,
    /// The consequence of those months.
    pub consequence: Option<Consequence>,
    /// In the top 3 this month and last, and not in the bottom 2.
    pub commended: bool,
}

/// The reported month's marks of every unit of a level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranking {
    /// Units ranked in the reported month.
    pub ranked: usize,
    /// Why the reported month is not marked, if it is not.
    pub withheld: Option<Withheld>,
    /// The units' marks, in the order given.
    pub marks: Vec<Marks>,
}

/// Marks every unit of a level for the reported month (module doc).
pub fn marks(units: &[Scores]) -> Ranking {
    let month = rank_month(units.iter().map(|u| u.month));
    let last = rank_month(units.iter().map(|u| u.last));
    let before_last = rank_month(units.iter().map(|u| u.before_last));
    let marks = (0..units.len())
        .map(|i| {
            let this = month.places[i];
            let months_in_bottom2 = [&month, &last, &before_last]
                .iter()
                .take_while(|m| m.places[i].bottom2)
                .count() as u32;
            let consequence = match months_in_bottom2 {
                0 => None,
                1 => Some(Consequence::Named),
                2 => Some(Consequence::YellowCard),
                _ => Some(Consequence::Veto),
            };
            Marks {
                rank: this.rank,
                tied: this.tied,
                bottom2: this.bottom2,
                months_in_bottom2,
                consequence,
                commended: this.top3 && last.places[i].top3 && !this.bottom2,
            }
        })
        .collect();
    Ranking {
        ranked: month.ranked,
        withheld: month.withheld,
        marks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One unit's scores: the reported month, the month before, the month before that.
    fn history(month: Option<f64>, last: Option<f64>, before_last: Option<f64>) -> Scores {
        Scores {
            month,
            last,
            before_last,
        }
    }

    /// Units with the same score in each of the three months.
    fn steady(scores: &[Option<f64>]) -> Vec<Scores> {
        scores
            .iter()
            .map(|&s| Scores {
                month: s,
                last: s,
                before_last: s,
            })
            .collect()
    }

    fn this_month(scores: &[Option<f64>]) -> Vec<Scores> {
        scores
            .iter()
            .map(|&s| Scores {
                month: s,
                ..Scores::default()
            })
            .collect()
    }

    fn named(r: &Ranking) -> Vec<usize> {
        (0..r.marks.len()).filter(|&i| r.marks[i].bottom2).collect()
    }

    #[test]
    fn the_bottom_two_of_one_month_are_named() {
        let r = marks(&this_month(&[Some(0.9), Some(0.5), Some(0.7), Some(0.8)]));
        assert_eq!(r.ranked, 4);
        assert_eq!(r.withheld, None);
        let ranks: Vec<_> = r.marks.iter().map(|m| m.rank).collect();
        assert_eq!(ranks, [Some(1), Some(4), Some(3), Some(2)]);
        assert_eq!(named(&r), [1, 2]);
        for i in [1, 2] {
            assert_eq!(r.marks[i].months_in_bottom2, 1);
            assert_eq!(r.marks[i].consequence, Some(Consequence::Named));
        }
        assert!(r.marks.iter().all(|m| !m.commended), "no top 3 last month");
    }

    #[test]
    fn two_months_running_is_a_yellow_card_three_a_veto() {
        let units = [
            history(Some(0.1), Some(0.1), Some(0.9)),
            history(Some(0.2), Some(0.2), Some(0.2)),
            history(Some(0.8), Some(0.8), Some(0.1)),
            history(Some(0.9), Some(0.9), Some(0.8)),
        ];
        let r = marks(&units);
        assert_eq!(r.marks[0].months_in_bottom2, 2);
        assert_eq!(r.marks[0].consequence, Some(Consequence::YellowCard));
        assert_eq!(r.marks[1].months_in_bottom2, 3);
        assert_eq!(r.marks[1].consequence, Some(Consequence::Veto));
        assert_eq!(r.marks[2].consequence, None);
        assert_eq!(r.marks[2].months_in_bottom2, 0);
    }

    #[test]
    fn the_top_three_two_months_running_are_commended() {
        let units = [
            history(Some(1.0), Some(1.0), None),
            history(Some(0.95), Some(0.5), None),
            history(Some(0.9), Some(0.9), None),
            history(Some(0.3), Some(0.95), None),
            history(Some(0.2), Some(0.2), None),
        ];
        let r = marks(&units);
        let commended: Vec<bool> = r.marks.iter().map(|m| m.commended).collect();
        // The second was fourth last month, the fourth has fallen out of the top 3.
        assert_eq!(commended, [true, false, true, false, false]);
    }

    #[test]
    fn equal_scores_share_a_rank_and_their_fate() {
        let r = marks(&steady(&[Some(0.9), Some(0.8), Some(0.8), Some(0.5)]));
        let ranks: Vec<_> = r.marks.iter().map(|m| m.rank).collect();
        assert_eq!(ranks, [Some(1), Some(2), Some(2), Some(4)]);
        let tied: Vec<_> = r.marks.iter().map(|m| m.tied).collect();
        assert_eq!(tied, [1, 2, 2, 1]);
        assert_eq!(r.marks[1], r.marks[2]);
        // One unit below the tie: the tie is in the bottom 2 as a whole.
        assert_eq!(named(&r), [1, 2, 3]);
    }

    #[test]
    fn a_tie_straddling_the_bottom_two_is_named_whole() {
        let r = marks(&this_month(&[Some(0.9), Some(0.8), Some(0.8), Some(0.8)]));
        assert_eq!(named(&r), [1, 2, 3], "three units named, not two");
        let r = marks(&this_month(&[
            Some(0.9),
            Some(0.7),
            Some(0.6),
            Some(0.6),
            Some(0.95),
        ]));
        assert_eq!(named(&r), [2, 3]);
        // Two below it: a tie just above the bottom 2 is not named.
        let r = marks(&this_month(&[
            Some(0.9),
            Some(0.8),
            Some(0.8),
            Some(0.1),
            Some(0.2),
        ]));
        assert_eq!(named(&r), [3, 4]);
    }

    #[test]
    fn a_level_where_all_tie_names_no_one() {
        let r = marks(&steady(&[Some(1.0); 4]));
        assert_eq!(r.withheld, None);
        assert!(named(&r).is_empty());
        assert!(r.marks.iter().all(|m| m.rank == Some(1) && m.tied == 4));
        // All share the top: all are commended.
        assert!(r.marks.iter().all(|m| m.commended));
        // All tie at 0: no one is named, and no one is commended for doing nothing.
        let r = marks(&steady(&[Some(0.0); 3]));
        assert!(named(&r).is_empty());
        assert!(r.marks.iter().all(|m| m.rank == Some(1) && !m.commended));
    }

    #[test]
    fn scores_equal_at_the_compared_precision_tie() {
        let r = marks(&this_month(&[
            Some(0.3),
            Some(0.1 + 0.2),
            Some(0.9),
            Some(0.29996),
        ]));
        assert_eq!(r.marks[0].rank, r.marks[1].rank);
        assert_eq!(r.marks[0].rank, r.marks[3].rank);
        assert_eq!(rounded(0.123_456), Some(0.1235));
        assert_eq!(rounded(f64::NAN), None);
    }

    #[test]
    fn months_before_the_first_roster_are_not_ranked() {
        let units = [
            // Rostered only from this month: it has no run behind it.
            history(Some(0.1), None, None),
            history(Some(0.5), Some(0.5), Some(0.5)),
            history(Some(0.9), Some(0.9), Some(0.9)),
            history(Some(0.95), Some(0.95), Some(0.95)),
            // Not rostered yet.
            Scores::default(),
        ];
        let r = marks(&units);
        assert_eq!(r.ranked, 4);
        assert_eq!(r.marks[0].months_in_bottom2, 1);
        assert_eq!(r.marks[0].consequence, Some(Consequence::Named));
        assert_eq!(r.marks[4], Marks::default());
    }

    #[test]
    fn an_unranked_month_ends_a_run() {
        let units = [
            history(Some(0.1), None, Some(0.1)),
            history(Some(0.2), Some(0.2), Some(0.2)),
            history(Some(0.8), Some(0.8), Some(0.8)),
            history(Some(0.9), Some(0.9), Some(0.9)),
        ];
        let r = marks(&units);
        assert_eq!(r.marks[0].months_in_bottom2, 1);
        assert_eq!(r.marks[0].consequence, Some(Consequence::Named));
        assert_eq!(r.marks[1].consequence, Some(Consequence::Veto));
    }

    #[test]
    fn too_few_units_are_not_marked() {
        let units = [
            history(Some(0.0), Some(0.0), Some(0.0)),
            history(Some(1.0), Some(1.0), Some(1.0)),
            Scores::default(),
        ];
        let r = marks(&units);
        assert_eq!(r.ranked, 2);
        assert_eq!(r.withheld, Some(Withheld::TooFewUnits));
        assert_eq!(r.marks[0].rank, Some(2));
        assert_eq!(r.marks[1].rank, Some(1));
        assert!(
            r.marks
                .iter()
                .all(|m| !m.bottom2 && !m.commended && m.consequence.is_none())
        );
        // A month with too few units is not a bottom-2 month either.
        let mut grown = steady(&[Some(0.0), Some(1.0), Some(0.5)]);
        grown[2].last = None;
        grown[2].before_last = None;
        let r = marks(&grown);
        assert_eq!(r.marks[0].months_in_bottom2, 1);
        assert!(!r.marks[1].commended, "last month was not marked");
    }

    #[test]
    fn the_bottom_two_are_never_commended() {
        // Three units: the bottom 2 are also in the top 3.
        let r = marks(&steady(&[Some(1.0), Some(0.5), Some(0.0)]));
        assert_eq!(named(&r), [1, 2]);
        assert_eq!(r.marks[2].consequence, Some(Consequence::Veto));
        let commended: Vec<bool> = r.marks.iter().map(|m| m.commended).collect();
        assert_eq!(commended, [true, false, false]);
    }

    fn scores() -> impl Strategy<Value = Option<f64>> {
        // Few distinct values, so that ties are common.
        prop_oneof![
            1 => Just(None),
            4 => (0u8..=5).prop_map(|k| Some(f64::from(k) / 5.0)),
        ]
    }

    fn units() -> impl Strategy<Value = Vec<Scores>> {
        prop::collection::vec(
            (scores(), scores(), scores()).prop_map(|(month, last, before_last)| Scores {
                month,
                last,
                before_last,
            }),
            0..12,
        )
    }

    proptest! {
        #[test]
        fn the_order_units_come_in_changes_no_mark(
            (units, order) in units().prop_flat_map(|u| {
                let n = u.len();
                (Just(u), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            })
        ) {
            let r = marks(&units);
            let shuffled: Vec<Scores> = order.iter().map(|&i| units[i]).collect();
            let s = marks(&shuffled);
            prop_assert_eq!(r.ranked, s.ranked);
            prop_assert_eq!(r.withheld, s.withheld);
            for (k, &i) in order.iter().enumerate() {
                prop_assert_eq!(r.marks[i], s.marks[k]);
            }
        }

        #[test]
        fn marks_follow_the_rule(units in units()) {
            let r = marks(&units);
            for (i, m) in r.marks.iter().enumerate() {
                // Equal scores, equal marks.
                for (j, n) in r.marks.iter().enumerate() {
                    if units[i] == units[j] {
                        prop_assert_eq!(m, n);
                    }
                }
                prop_assert!(!(m.bottom2 && m.commended));
                prop_assert_eq!(m.consequence.is_some(), m.bottom2);
                prop_assert_eq!(m.rank.is_some(), units[i].month.is_some());
                if r.withheld.is_some() {
                    prop_assert!(!m.bottom2 && !m.commended);
                }
                if units[i].month == Some(0.0) || units[i].last == Some(0.0) {
                    prop_assert!(!m.commended);
                }
            }
            let ranked: Vec<f64> = units.iter().filter_map(|u| u.month).collect();
            let all_tie = ranked.windows(2).all(|w| w[0] == w[1]);
            let any_named = r.marks.iter().any(|m| m.bottom2);
            prop_assert_eq!(any_named, ranked.len() >= MIN_RANKED && !all_tie);
        }
    }
}
