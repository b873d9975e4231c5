//! Per-minute counts held in memory: the reducer's state and what queries read.
//!
//! The layout is built for the hot path, one increment per (ad, minute,
//! filter) of each batch. Ads and filters are numbered once ([`AdSlots`],
//! filter codes), so a counter is a 4-byte ad slot and an 8-byte count in a
//! small-keyed map: 16 bytes instead of an 80-byte (ad id, count) entry, so
//! four times more counters stay in cache. Minutes are a sorted vector, and
//! the last minute and ad touched are remembered, because the window sends
//! the increments of one ad and minute together.

use crate::batch::{Increment, Increments};
use crate::click::{AdId, Country, Filter};
use crate::fast_hash::FastMap;
use crate::reducer::ad_slots::AdSlots;
use crate::reducer::counter_table::CounterTable;
use crate::store::{replay_totals, CounterTotals, DeriveRun};
use std::collections::HashMap;

/// Where a filter without extra dimensions sits in [`MinuteCounts`]'s dense
/// table of their codes: one slot per (country or none, ip type or none).
fn builtin_index(filter: &Filter) -> usize {
    let country = filter.country.map_or(Country::COUNT, |c| c.index());
    let ip_type = filter.ip_type.map_or(3, |t| t as usize);
    country * 4 + ip_type
}

/// Size of the dense table: every country and none, times three ip types and none.
const BUILTIN_FILTERS: usize = (Country::COUNT + 1) * 4;

/// Marks a filter of the dense table that has no code yet.
const NO_CODE: u32 = u32::MAX;

/// One minute's counters: per filter code, ad slot → clicks.
type MinuteTable = Vec<CounterTable>;

/// How many increments ahead the reducer prefetches counters: enough to
/// overlap the misses, few enough that the lines are still in cache when used.
const PREFETCH_AHEAD: usize = 8;

/// How many (ad, minute) groups of increments ahead the reducer prefetches
/// the ad's id (and twice as many, its index bucket).
const AD_AHEAD: usize = 4;

/// Counts of recent minutes: minute → filter → ad → clicks.
///
/// Memory holds every minute from [`MinuteCounts::floor`] on; minutes before
/// it were evicted and are read from the partition's redb file instead.
pub struct MinuteCounts {
    ads: AdSlots,
    filters: Vec<Filter>,
    filter_codes: FastMap<Filter, u32>,
    /// The codes of the filters without extra dimensions (the four default
    /// sets make one filter per click each), by [`builtin_index`]: an index
    /// instead of a hash or a scan per increment. Empty until first used.
    builtin_codes: Vec<u32>,
    /// Sorted by minute.
    minutes: Vec<(i64, MinuteTable)>,
    floor: i64,
    /// The last (ad, slot) and minute index touched: consecutive increments
    /// usually share both.
    last_ad: Option<(AdId, u32)>,
    last_minute: usize,
    /// Ads numbered when unused ones were last looked for.
    ads_at_last_look: usize,
    /// Reused between batches: each increment as (minute index, filter code, slot, n).
    resolved: Vec<(u32, u32, u32, u64)>,
    /// Reused between batches: the hash of each group's ad.
    hashes: Vec<u64>,
}

impl CounterTotals for MinuteCounts {
    fn replace(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) -> u64 {
        let slot = self.slot_of(ad);
        let code = self.filter_code(filter);
        self.counter_mut(minute, code).replace(slot, total)
    }

    fn add_wrapping(&mut self, minute: i64, ad: &AdId, filter: &Filter, change: u64) {
        let slot = self.slot_of(ad);
        let code = self.filter_code(filter);
        self.counter_mut(minute, code).add_wrapping(slot, change);
    }
}

impl Default for MinuteCounts {
    fn default() -> MinuteCounts {
        MinuteCounts::new(i64::MIN)
    }
}

impl MinuteCounts {
    /// Empty counts that are authoritative from `floor` on.
    pub fn new(floor: i64) -> MinuteCounts {
        MinuteCounts {
            ads: AdSlots::default(),
            filters: Vec::new(),
            filter_codes: FastMap::default(),
            builtin_codes: Vec::new(),
            minutes: Vec::new(),
            floor,
            last_ad: None,
            last_minute: 0,
            ads_at_last_look: 0,
            resolved: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// Adds an increment.
    pub fn apply(&mut self, delta: &Increment) {
        self.apply_all(&mut Increments::from_iter([*delta]));
    }

    /// Adds a batch's increments and sets each one's `total`: first each is
    /// resolved to its counter table and ad slot (creating what is missing),
    /// then the counters are added with the buckets a few increments ahead
    /// prefetched.
    ///
    /// The increments come grouped by (ad, minute): an ad's slot is looked
    /// up once per group, with the index bucket of the group `2 × AD_AHEAD`
    /// on and then the id that bucket names (`AD_AHEAD` on) prefetched, so
    /// the misses into a table of every ad overlap.
    pub fn apply_all(&mut self, increments: &mut Increments) {
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.clear();
        let groups = increments.group_heads();
        hashes.extend(groups.iter().map(|g| self.ads.hash(&g.ad)));
        let mut resolved = std::mem::take(&mut self.resolved);
        resolved.clear();
        for (g, (group, counts)) in increments.groups().enumerate() {
            if let Some(&hash) = hashes.get(g + 2 * AD_AHEAD) {
                self.ads.prefetch_bucket(hash);
            }
            if let Some(&hash) = hashes.get(g + AD_AHEAD) {
                self.ads.prefetch_id(hash);
            }
            let slot = self.ads.slot_hashed(&group.ad, hashes[g]);
            let mut top_code = 0;
            for c in counts {
                let code = self.filter_code(&c.filter);
                top_code = top_code.max(code);
                // Minute indices shift while minutes are added: set below.
                resolved.push((0, code as u32, slot, c.count));
            }
            let table = self.minute_mut(group.minute);
            if table.len() <= top_code {
                table.resize_with(top_code + 1, CounterTable::default);
            }
        }
        self.hashes = hashes;
        // No minute is added from here on: indices are stable.
        let mut at = 0;
        for (group, counts) in increments.groups() {
            let m = self.minute_index(group.minute) as u32;
            for r in &mut resolved[at..at + counts.len()] {
                r.0 = m;
            }
            at += counts.len();
        }
        let counts = increments.counts_mut();
        for (i, (r, c)) in resolved.iter().zip(counts.iter_mut()).enumerate() {
            if let Some(&(m, code, slot, _)) = resolved.get(i + PREFETCH_AHEAD) {
                self.minutes[m as usize].1[code as usize].prefetch(slot);
            }
            let (m, code, slot, n) = *r;
            c.total = self.minutes[m as usize].1[code as usize].add(slot, n);
        }
        self.resolved = resolved;
    }

    /// Sets counters to recovered totals, in order: a later total of the
    /// same counter replaces an earlier one (recovery hands snapshots first,
    /// then the count log's newer totals, so no map of counters is needed).
    /// The totals of `runs` are finest counters whose changes also go to
    /// their coarser counters (see [`DeriveRun`]).
    pub fn set_totals(&mut self, totals: &[Increment], runs: &[DeriveRun]) {
        replay_totals(totals, runs, self);
    }

    /// The counters of one filter code in `minute`, created if missing.
    fn counter_mut(&mut self, minute: i64, code: usize) -> &mut CounterTable {
        let table = self.minute_mut(minute);
        if table.len() <= code {
            table.resize_with(code + 1, CounterTable::default);
        }
        &mut table[code]
    }

    fn slot_of(&mut self, ad: &AdId) -> u32 {
        match self.last_ad {
            Some((last, slot)) if last == *ad => slot,
            _ => {
                let slot = self.ads.slot(ad);
                self.last_ad = Some((*ad, slot));
                slot
            }
        }
    }

    /// The code of `filter`, numbering it if it is new.
    #[inline]
    fn filter_code(&mut self, filter: &Filter) -> usize {
        // Filters carry the click's values (`country=US`, …): there are
        // hundreds of them, so a short scan misses and hashing a 20-byte
        // key per increment is the cost to avoid. A built-in filter already
        // numbered (nearly every increment) is one load, inline.
        if filter.extras.is_empty() {
            if let Some(&code) = self.builtin_codes.get(builtin_index(filter)) {
                if code != NO_CODE {
                    return code as usize;
                }
            }
        }
        self.new_or_extra_filter_code(filter)
    }

    /// [`MinuteCounts::filter_code`] for a filter with extra dimensions, or
    /// one seen for the first time.
    #[inline(never)]
    fn new_or_extra_filter_code(&mut self, filter: &Filter) -> usize {
        let builtin = filter.extras.is_empty().then(|| builtin_index(filter));
        if let Some(at) = builtin {
            match self.builtin_codes.get(at) {
                Some(&code) if code != NO_CODE => return code as usize,
                Some(_) => {}
                None => self.builtin_codes.resize(BUILTIN_FILTERS, NO_CODE),
            }
        } else if let Some(code) = self.filter_codes.get(filter) {
            return *code as usize;
        }
        let code = match self.filter_codes.get(filter) {
            Some(code) => *code,
            None => {
                let code = self.filters.len() as u32;
                self.filters.push(*filter);
                self.filter_codes.insert(*filter, code);
                code
            }
        };
        if let Some(slot) = builtin.and_then(|at| self.builtin_codes.get_mut(at)) {
            *slot = code;
        }
        code as usize
    }

    fn minute_mut(&mut self, minute: i64) -> &mut MinuteTable {
        let at = match self.minutes.get(self.last_minute) {
            Some((m, _)) if *m == minute => self.last_minute,
            _ => match self.minutes.binary_search_by_key(&minute, |(m, _)| *m) {
                Ok(at) => at,
                Err(at) => {
                    self.minutes.insert(at, (minute, Vec::new()));
                    at
                }
            },
        };
        self.last_minute = at;
        &mut self.minutes[at].1
    }

    /// The index of a minute that is present.
    fn minute_index(&mut self, minute: i64) -> usize {
        if let Some((m, _)) = self.minutes.get(self.last_minute) {
            if *m == minute {
                return self.last_minute;
            }
        }
        let at = self.minutes.partition_point(|(m, _)| *m < minute);
        self.last_minute = at;
        at
    }

    /// The in-memory minutes of `[from, to)`, at or after the floor.
    fn range(&self, from: i64, to: i64) -> &[(i64, MinuteTable)] {
        let from = from.max(self.floor);
        if from >= to {
            return &[];
        }
        let start = self.minutes.partition_point(|(m, _)| *m < from);
        let end = self.minutes.partition_point(|(m, _)| *m < to);
        &self.minutes[start..end.max(start)]
    }

    /// The first minute memory answers for.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    /// Clicks of `ad` under `filter` in the minutes of `[from, to)` that are in memory.
    pub fn count(&self, ad: &AdId, filter: &Filter, from: i64, to: i64) -> u64 {
        let (Some(slot), Some(code)) = (self.ads.get(ad), self.filter_codes.get(filter)) else {
            return 0;
        };
        self.range(from, to)
            .iter()
            .filter_map(|(_, table)| table.get(*code as usize)?.get(slot))
            .sum()
    }

    /// Calls `each(ad, clicks)` for every counter under `filter` in the
    /// in-memory minutes of `[from, to)` (an ad once per minute it has clicks in).
    pub fn for_each_counter(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        mut each: impl FnMut(AdId, u64),
    ) {
        let Some(code) = self.filter_codes.get(filter) else {
            return;
        };
        for (_, table) in self.range(from, to) {
            if let Some(ads) = table.get(*code as usize) {
                for (slot, n) in ads.iter() {
                    each(*self.ads.id(slot), n);
                }
            }
        }
    }

    /// Adds each ad's clicks under `filter` in the in-memory minutes of `[from, to)` to `sums`.
    pub fn add_sums(&self, filter: &Filter, from: i64, to: i64, sums: &mut HashMap<AdId, u64>) {
        let Some(code) = self.filter_codes.get(filter) else {
            return;
        };
        // Sum by slot first (cheap keys), then name the ads once.
        let mut by_slot: FastMap<u32, u64> = FastMap::default();
        for (_, table) in self.range(from, to) {
            if let Some(ads) = table.get(*code as usize) {
                for (slot, n) in ads.iter() {
                    *by_slot.entry(slot).or_insert(0) += n;
                }
            }
        }
        sums.reserve(by_slot.len());
        for (slot, n) in by_slot {
            *sums.entry(*self.ads.id(slot)).or_insert(0) += n;
        }
    }

    /// The minutes in memory within `[from, to)`, ascending.
    pub fn minutes_within(&self, from: i64, to: i64) -> Vec<i64> {
        self.range(from, to).iter().map(|(m, _)| *m).collect()
    }

    /// How many counters `minute` has in memory (every filter).
    pub fn counters_in(&self, minute: i64) -> usize {
        self.range(minute, minute.saturating_add(1))
            .iter()
            .map(|(_, table)| table.iter().map(CounterTable::len).sum::<usize>())
            .sum()
    }

    /// Calls `each(ad, filter, clicks)` for every counter of `minute`, the
    /// counters of one filter together, in no other particular order.
    pub fn for_each_counter_of(&self, minute: i64, mut each: impl FnMut(&AdId, &Filter, u64)) {
        for (_, table) in self.range(minute, minute.saturating_add(1)) {
            for (code, ads) in table.iter().enumerate() {
                let filter = &self.filters[code];
                for (slot, n) in ads.iter() {
                    each(self.ads.id(slot), filter, n);
                }
            }
        }
    }

    /// Drops minutes before `minute` (they are committed and final) and moves the floor.
    pub fn evict_before(&mut self, minute: i64) {
        if minute <= self.floor {
            return;
        }
        let gone = self.minutes.partition_point(|(m, _)| *m < minute);
        self.minutes.drain(..gone);
        self.last_minute = 0;
        self.floor = minute;
        self.forget_unused_ads();
    }

    /// Renumbers the ads when most slots belong to ads no longer in memory,
    /// so ad churn over days does not grow memory without bound.
    ///
    /// Looking costs a scan of every counter in memory, so it is done only
    /// when the numbered ads have doubled since the last look.
    fn forget_unused_ads(&mut self) {
        if self.ads.len() < 4096 || self.ads.len() < 2 * self.ads_at_last_look {
            return;
        }
        self.ads_at_last_look = self.ads.len();
        let mut renumbered: FastMap<u32, u32> = FastMap::default();
        for (_, table) in &self.minutes {
            for ads in table {
                for (slot, _) in ads.iter() {
                    let next = renumbered.len() as u32;
                    renumbered.entry(slot).or_insert(next);
                }
            }
        }
        if renumbered.len() * 2 > self.ads.len() {
            return;
        }
        let mut ads = AdSlots::default();
        let mut old: Vec<(u32, u32)> = renumbered.into_iter().collect();
        old.sort_unstable_by_key(|(_, new)| *new);
        for (old_slot, _) in &old {
            ads.slot(self.ads.id(*old_slot));
        }
        let map: FastMap<u32, u32> = old.into_iter().collect();
        for (_, table) in &mut self.minutes {
            for ads in table.iter_mut() {
                let mut renamed = CounterTable::default();
                for (slot, n) in ads.iter() {
                    renamed.add(map[&slot], n);
                }
                *ads = renamed;
            }
        }
        self.ads = ads;
        self.ads_at_last_look = self.ads.len();
        self.last_ad = None;
    }

    /// Number of ads numbered (live or not yet renumbered away).
    pub fn ads_numbered(&self) -> usize {
        self.ads.len()
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
        /// Counts and sums equal a naive scan over every increment applied.
        #[test]
        fn answers_equal_a_naive_scan(
            deltas in prop::collection::vec((0u8..4, 0i64..10, any::<bool>(), 1u64..5), 0..80),
            from in 0i64..10, len in 0i64..10, evict in 0i64..10,
        ) {
            let us = Filter { country: Country::parse("US"), ..Filter::ALL };
            let mut counts = MinuteCounts::new(0);
            let all: Vec<Increment> = deltas.iter().map(|(a, m, f, n)| Increment {
                minute: m * MINUTE_MS, ad: ad(*a), filter: if *f { us } else { Filter::ALL }, count: *n, total: 0,
            }).collect();
            for d in &all { counts.apply(d); }
            counts.evict_before(evict * MINUTE_MS);
            let (from, to) = (from * MINUTE_MS, (from + len) * MINUTE_MS);
            let live = |d: &&Increment| d.minute >= evict * MINUTE_MS && d.minute >= from && d.minute < to;
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

    /// Filters of every shape: none, countries at both ends of the dense
    /// table, ip types, both, and extra dimensions with and without them.
    fn filters() -> Vec<Filter> {
        use crate::click::IpType;
        use crate::dimension::{intern, ExtraCodes};
        let country = |c: &str| Country::parse(c);
        let extra = |v: &str| ExtraCodes::from_codes([intern("k_minute_counts", v)]).unwrap();
        vec![
            Filter::ALL,
            Filter {
                country: country("AA"),
                ..Filter::ALL
            },
            Filter {
                country: country("ZZ"),
                ..Filter::ALL
            },
            Filter {
                country: country("US"),
                ..Filter::ALL
            },
            Filter {
                ip_type: Some(IpType::V4),
                ..Filter::ALL
            },
            Filter {
                ip_type: Some(IpType::Unknown),
                ..Filter::ALL
            },
            Filter {
                country: country("ZZ"),
                ip_type: Some(IpType::V6),
                extras: ExtraCodes::NONE,
            },
            Filter {
                country: country("US"),
                ip_type: Some(IpType::V4),
                extras: ExtraCodes::NONE,
            },
            Filter {
                extras: extra("a"),
                ..Filter::ALL
            },
            Filter {
                country: country("US"),
                ip_type: None,
                extras: extra("b"),
            },
        ]
    }

    proptest! {
        /// Each filter counts only its own increments, and totals are the
        /// running sums, whatever order filters are first seen in.
        #[test]
        fn filters_count_apart(
            deltas in prop::collection::vec((0u8..3, 0i64..3, 0usize..10, 1u64..5), 0..120),
            split in 0usize..120,
        ) {
            let filters = filters();
            let all: Vec<Increment> = deltas.iter().map(|(a, m, f, n)| Increment {
                minute: m * MINUTE_MS, ad: ad(*a), filter: filters[*f], count: *n, total: 0,
            }).collect();
            let mut counts = MinuteCounts::new(0);
            let split = split.min(all.len());
            let mut first: Increments = all[..split].iter().copied().collect();
            let mut second: Increments = all[split..].iter().copied().collect();
            counts.apply_all(&mut first);
            counts.apply_all(&mut second);
            let applied: Vec<Increment> = first.iter().chain(second.iter()).collect();
            // The same increments in the same order, each with its total.
            let without_totals: Vec<Increment> = applied.iter().map(|d| Increment { total: 0, ..*d }).collect();
            prop_assert_eq!(&without_totals, &all);
            let mut naive: HashMap<(u8, i64, usize), u64> = HashMap::new();
            for ((a, m, f, n), applied) in deltas.iter().zip(&applied) {
                let total = naive.entry((*a, *m, *f)).or_insert(0);
                *total += n;
                prop_assert_eq!(applied.total, *total);
            }
            for a in 0..3u8 {
                for (f, filter) in filters.iter().enumerate() {
                    let want: u64 = (0..3).map(|m| naive.get(&(a, m, f)).copied().unwrap_or(0)).sum();
                    prop_assert_eq!(counts.count(&ad(a), filter, 0, 3 * MINUTE_MS), want);
                }
            }
        }
    }

    #[test]
    fn recovered_totals_are_set_the_last_one_winning() {
        let ad = AdId::parse("a").unwrap();
        let total = |minute, total| Increment {
            minute,
            ad,
            filter: Filter::ALL,
            count: total,
            total,
        };
        let mut counts = MinuteCounts::new(0);
        let totals = [total(0, 5), total(60_000, 2), total(0, 9), total(0, 7)];
        counts.set_totals(&totals, &[]);
        assert_eq!(counts.count(&ad, &Filter::ALL, 0, 60_000), 7);
        assert_eq!(counts.count(&ad, &Filter::ALL, 0, 120_000), 9);
        // Increments after recovery add to the set totals.
        counts.apply(&total(0, 1));
        assert_eq!(counts.count(&ad, &Filter::ALL, 0, 60_000), 8);
    }

    #[test]
    fn renumbers_ads_once_most_are_evicted() {
        let mut counts = MinuteCounts::new(0);
        let ads: Vec<AdId> = (0..5_000)
            .map(|i| AdId::parse(&format!("ad-{i}")).unwrap())
            .collect();
        for ad in &ads {
            counts.apply(&Increment {
                minute: 0,
                ad: *ad,
                filter: Filter::ALL,
                count: 1,
                total: 0,
            });
        }
        for ad in ads.iter().rev().take(10) {
            counts.apply(&Increment {
                minute: MINUTE_MS,
                ad: *ad,
                filter: Filter::ALL,
                count: 2,
                total: 0,
            });
        }
        counts.evict_before(MINUTE_MS);
        assert_eq!(counts.ads_numbered(), 10);
        for (i, ad) in ads.iter().enumerate() {
            let want = if i >= 4_990 { 2 } else { 0 };
            assert_eq!(
                counts.count(ad, &Filter::ALL, 0, 2 * MINUTE_MS),
                want,
                "{ad}"
            );
        }
        // New ads after the renumbering get fresh slots.
        counts.apply(&Increment {
            minute: MINUTE_MS,
            ad: ads[0],
            filter: Filter::ALL,
            count: 5,
            total: 0,
        });
        assert_eq!(counts.count(&ads[0], &Filter::ALL, 0, 2 * MINUTE_MS), 5);
        assert_eq!(counts.count(&ads[4_999], &Filter::ALL, 0, 2 * MINUTE_MS), 2);
    }

    #[test]
    fn split_at_floor_covers_the_range() {
        assert_eq!(split_at_floor(0, 10, 5), ((0, 5), (5, 10)));
        assert_eq!(split_at_floor(0, 10, -5), ((0, 0), (0, 10)));
        assert_eq!(split_at_floor(0, 10, 50), ((0, 10), (10, 10)));
    }
}
