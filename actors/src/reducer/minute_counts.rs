//! Per-minute counts held in memory: the reducer's state and what queries read.

use crate::batch::CountDelta;
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use std::collections::{BTreeMap, HashMap};

/// Counts of recent minutes: minute → filter → ad → clicks.
///
/// Memory holds every minute from [`MinuteCounts::floor`] on; minutes before
/// it were evicted and are read from the partition's redb file instead.
#[derive(Default)]
pub struct MinuteCounts {
    minutes: BTreeMap<i64, FastMap<Filter, FastMap<AdId, u64>>>,
    floor: i64,
}

impl MinuteCounts {
    /// Empty counts that are authoritative from `floor` on.
    pub fn new(floor: i64) -> MinuteCounts {
        MinuteCounts {
            minutes: BTreeMap::new(),
            floor,
        }
    }

    /// Adds an increment.
    pub fn apply(&mut self, delta: &CountDelta) {
        *self
            .minutes
            .entry(delta.minute)
            .or_default()
            .entry(delta.filter)
            .or_default()
            .entry(delta.ad)
            .or_insert(0) += delta.count;
    }

    /// The first minute memory answers for.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// Clicks of `ad` under `filter` in the minutes of `[from, to)` that are in memory.
    pub fn count(&self, ad: &AdId, filter: &Filter, from: i64, to: i64) -> u64 {
        let from = from.max(self.floor);
        if from >= to {
            return 0;
        }
        self.minutes
            .range(from..to)
            .filter_map(|(_, filters)| filters.get(filter)?.get(ad))
            .sum()
    }

    /// Adds each ad's clicks under `filter` in the in-memory minutes of `[from, to)` to `sums`.
    pub fn add_sums(&self, filter: &Filter, from: i64, to: i64, sums: &mut HashMap<AdId, u64>) {
        let from = from.max(self.floor);
        if from >= to {
            return;
        }
        for (_, filters) in self.minutes.range(from..to) {
            if let Some(ads) = filters.get(filter) {
                for (ad, n) in ads {
                    *sums.entry(*ad).or_insert(0) += n;
                }
            }
        }
    }

    /// Drops minutes before `minute` (they are committed and final) and moves the floor.
    pub fn evict_before(&mut self, minute: i64) {
        if minute <= self.floor {
            return;
        }
        self.minutes = self.minutes.split_off(&minute);
        self.floor = minute;
    }
}

/// The minutes `[from, to)` split at `floor`: the part before it (read from
/// redb) and the part from it on (in memory). Either may be empty.
pub fn split_at_floor(from: i64, to: i64, floor: i64) -> ((i64, i64), (i64, i64)) {
    let cut = floor.clamp(from, to.max(from));
    ((from, cut), (cut, to.max(cut)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::click::Country;
    use crate::time::MINUTE_MS;
    use proptest::prelude::*;

    fn ad(i: u8) -> AdId {
        AdId::parse(&format!("a{i}")).unwrap()
    }

    proptest! {
        /// Counts and sums equal a naive scan over every delta applied.
        #[test]
        fn answers_equal_a_naive_scan(
            deltas in prop::collection::vec((0u8..4, 0i64..10, any::<bool>(), 1u64..5), 0..80),
            from in 0i64..10, len in 0i64..10, evict in 0i64..10,
        ) {
            let us = Filter { country: Country::parse("US"), ip_type: None };
            let mut counts = MinuteCounts::new(0);
            let all: Vec<CountDelta> = deltas.iter().map(|(a, m, f, n)| CountDelta {
                minute: m * MINUTE_MS, ad: ad(*a), filter: if *f { us } else { Filter::ALL }, count: *n,
            }).collect();
            for d in &all { counts.apply(d); }
            counts.evict_before(evict * MINUTE_MS);
            let (from, to) = (from * MINUTE_MS, (from + len) * MINUTE_MS);
            let live = |d: &&CountDelta| d.minute >= evict * MINUTE_MS && d.minute >= from && d.minute < to;
            for a in 0..4u8 {
                let naive: u64 = all.iter().filter(live).filter(|d| d.ad == ad(a) && d.filter == us).map(|d| d.count).sum();
                prop_assert_eq!(counts.count(&ad(a), &us, from, to), naive);
            }
            let mut sums = HashMap::new();
            counts.add_sums(&Filter::ALL, from, to, &mut sums);
            let mut naive = HashMap::new();
            for d in all.iter().filter(live).filter(|d| d.filter == Filter::ALL) {
                *naive.entry(d.ad).or_insert(0) += d.count;
            }
            prop_assert_eq!(sums, naive);
        }
    }

    #[test]
    fn split_at_floor_covers_the_range() {
        assert_eq!(split_at_floor(0, 10, 5), ((0, 5), (5, 10)));
        assert_eq!(split_at_floor(0, 10, -5), ((0, 0), (0, 10)));
        assert_eq!(split_at_floor(0, 10, 50), ((0, 10), (10, 10)));
    }
}
