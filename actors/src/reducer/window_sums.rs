//! Running per-ad totals of the configured windows that end with the latest
//! closed minute, so the most common `popular` query (a configured window
//! ending now) is a top-N of a ready map instead of a sum over the window.
//!
//! When a minute closes, the window moves by one minute: the new minute's
//! counters are added and the leaving minute's subtracted. A late click in a
//! minute the window covers is added as it comes. The top-N is cached until
//! the totals change again.

use crate::batch::Increments;
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::reducer::minute_counts::MinuteCounts;
use crate::reducer::top_n::top_n;
use crate::time::MINUTE_MS;

/// Per-ad totals of all clicks over the `window` minutes ending with `end`.
#[derive(Clone)]
pub struct WindowSums {
    window: i64,
    /// Last minute covered; `None` until built (or when memory cannot cover it).
    end: Option<i64>,
    totals: FastMap<AdId, u64>,
    /// The ranking computed since the last change, and how many it holds.
    ranked: Option<(usize, Vec<(AdId, u64)>)>,
}

impl WindowSums {
    /// Totals of a window of `window` minutes, not built yet.
    pub fn new(window: i64) -> WindowSums {
        WindowSums {
            window,
            end: None,
            totals: FastMap::default(),
            ranked: None,
        }
    }

    /// The window length, minutes.
    pub fn window(&self) -> i64 {
        self.window
    }

    /// The last minute covered, if built.
    pub fn end(&self) -> Option<i64> {
        self.end
    }

    /// Adds the batch's increments (already applied to the counts) of the
    /// minutes the window covers: late clicks of closed minutes.
    pub fn correct(&mut self, increments: &Increments) {
        let Some(end) = self.end else { return };
        let first = end - (self.window - 1) * MINUTE_MS;
        for (group, counts) in increments.groups() {
            if group.minute < first || group.minute > end {
                continue;
            }
            for c in counts.iter().filter(|c| c.filter == Filter::ALL) {
                *self.totals.entry(group.ad).or_insert(0) += c.count;
                self.ranked = None;
            }
        }
    }

    /// Moves the window to end with `end`, reading minutes from `counts`.
    pub fn advance(&mut self, counts: &MinuteCounts, end: i64) {
        let first = end - (self.window - 1) * MINUTE_MS;
        if first < counts.floor() {
            // Part of the window is no longer in memory: not maintained.
            self.end = None;
            self.totals.clear();
            self.ranked = None;
            return;
        }
        match self.end {
            Some(old) if old <= end && end - old < self.window * MINUTE_MS => {
                let mut minute = old + MINUTE_MS;
                while minute <= end {
                    let totals = &mut self.totals;
                    counts.for_each_counter(&Filter::ALL, minute, minute + MINUTE_MS, |ad, n| {
                        *totals.entry(ad).or_insert(0) += n;
                    });
                    let leaving = minute - self.window * MINUTE_MS;
                    counts.for_each_counter(&Filter::ALL, leaving, leaving + MINUTE_MS, |ad, n| {
                        if let Some(total) = totals.get_mut(&ad) {
                            *total = total.saturating_sub(n);
                            if *total == 0 {
                                totals.remove(&ad);
                            }
                        }
                    });
                    minute += MINUTE_MS;
                }
            }
            _ => {
                self.totals.clear();
                let totals = &mut self.totals;
                counts.for_each_counter(&Filter::ALL, first, end + MINUTE_MS, |ad, n| {
                    *totals.entry(ad).or_insert(0) += n;
                });
            }
        }
        self.end = Some(end);
        self.ranked = None;
    }

    /// The first `n` ads by total (count descending, ad id ascending), exact.
    pub fn top(&mut self, n: usize) -> Vec<(AdId, u64)> {
        let fresh = matches!(&self.ranked, Some((k, _)) if *k >= n);
        if !fresh {
            // Rank a few more than asked, so the usual sizes share one ranking.
            let k = n.max(100);
            let all: Vec<(AdId, u64)> = self.totals.iter().map(|(a, t)| (*a, *t)).collect();
            self.ranked = Some((k, top_n(all, k)));
        }
        match &self.ranked {
            Some((_, ranked)) => ranked.iter().take(n).copied().collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Increment;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ad(i: u8) -> AdId {
        AdId::parse(&format!("a{i}")).unwrap()
    }

    proptest! {
        /// After any sequence of increments (late ones included) and moves,
        /// the ranking equals a fresh sum over the window.
        #[test]
        fn equals_a_fresh_sum(
            steps in prop::collection::vec(
                // (ad, minute, clicks, whether under a country filter, not `{}`)
                (prop::collection::vec((0u8..6, 0i64..12, 1u64..4, any::<bool>()), 0..20), 0i64..3),
                1..25,
            ),
            window in 1i64..5,
        ) {
            let germany = Filter { country: crate::click::Country::parse("DE"), ..Filter::ALL };
            let mut counts = MinuteCounts::new(0);
            let mut sums = WindowSums::new(window);
            let mut end = window - 1; // in minutes
            for (adds, forward) in steps {
                let mut increments: Increments = adds.iter()
                    .filter(|(_, m, _, _)| *m <= end + 1) // nothing far in the future
                    .map(|(a, m, n, by_country)| Increment {
                        minute: m * MINUTE_MS,
                        ad: ad(*a),
                        // Only `{}` counts feed the sums: others must be skipped.
                        filter: if *by_country { germany } else { Filter::ALL },
                        count: *n,
                        total: 0,
                    })
                    .collect();
                counts.apply_all(&mut increments);
                sums.correct(&increments);
                end += forward;
                sums.advance(&counts, end * MINUTE_MS);
                let mut fresh = HashMap::new();
                counts.add_sums(&Filter::ALL, (end - window + 1) * MINUTE_MS, (end + 1) * MINUTE_MS, &mut fresh);
                let want = top_n(fresh.into_iter().collect(), 4);
                prop_assert_eq!(sums.top(4), want);
            }
        }
    }
}
