//! Folds the counted clicks of one batch into one increment per
//! (ad, minute, filter), so the reducer and the writer touch each key once.
//!
//! Clicks are grouped by (ad, minute) first: one hash of the ad id per click,
//! and a short scan for its filters. The increments leave grouped the same
//! way, which lets the reducer look each ad up once.

use crate::batch::Increments;
use crate::click::{AdId, Click, Filter};
use crate::dense_index::{DenseIndex, Found};
use crate::fast_hash::FastHash;
use crate::settings::DimensionSet;
use std::hash::BuildHasher;

/// The increments of one (ad, minute) in this batch: a chain of entries.
struct Group {
    ad: AdId,
    minute: i64,
    /// The group's first and last entry in `IncrementFold::entries`.
    first: u32,
    last: u32,
    /// The group's newest entry of each [`kind`]; [`END`] while none.
    kinds: [u32; KINDS],
}

/// The clicks of one group under one filter, and the group's next entry.
struct Entry {
    filter: Filter,
    count: u64,
    /// Index of the group's next entry (first-seen order, what `drain`
    /// follows); [`END`] after its last.
    next: u32,
    /// Index of the group's previous entry of the same [`kind`] (what a
    /// click's filter is searched among); [`END`] after the kind's first.
    next_alike: u32,
}

/// Ends a group's chain of entries.
const END: u32 = u32::MAX;

/// Kinds of filter: whether they constrain the country, the ip type.
const KINDS: usize = 4;

/// A filter's kind. Filters of different kinds are never equal (one has a
/// country or ip type, the other none), so a filter is only searched among
/// its kind's entries. Extra dimensions do not make kinds: a click's value
/// code may be 0 (none), making two sets' filters equal.
#[inline]
fn kind(set: DimensionSet) -> usize {
    usize::from(set.country) * 2 + usize::from(set.ip_type)
}

/// The increments of one batch.
///
/// Groups and their entries live in two flat vectors, filled in order and
/// cleared (not freed) per batch: a group's entries are mostly adjacent
/// (a click appends its filters together), where a vector per group put
/// every group's filters in an allocation of its own, a cache miss each.
///
/// Each group also chains its entries by [`kind`], so a click's filter is
/// compared with the entries of its kind only: a popular ad's group holds
/// every country × ip type, and walking all of them for each of a click's
/// filters, a mispredicted comparison each, was most of the window's time.
#[derive(Default)]
pub struct IncrementFold {
    /// (ad, minute) → its group. (A `HashMap` keyed by (ad, minute) held
    /// an 80-byte key per bucket and copied it in for every new group.)
    index: DenseIndex,
    hasher: FastHash,
    /// Groups in first-seen order.
    groups: Vec<Group>,
    entries: Vec<Entry>,
}

impl IncrementFold {
    /// Counts `click` in `minute` under each configured filter.
    pub fn add(&mut self, click: &Click, minute: i64, sets: &[DimensionSet]) {
        let at = self.group_of(click.ad, minute);
        let group = &mut self.groups[at];
        for set in sets {
            let filter = click.project(*set);
            let head = &mut group.kinds[kind(*set)];
            let mut e = *head;
            while e != END {
                let entry = &mut self.entries[e as usize];
                if entry.filter == filter {
                    entry.count += 1;
                    break;
                }
                e = entry.next_alike;
            }
            if e == END {
                let added = self.entries.len() as u32;
                self.entries.push(Entry {
                    filter,
                    count: 1,
                    next: END,
                    next_alike: *head,
                });
                *head = added;
                match group.last {
                    END => group.first = added,
                    last => self.entries[last as usize].next = added,
                }
                group.last = added;
            }
        }
    }

    /// The index of the (ad, minute) group, started if it is new.
    #[inline]
    fn group_of(&mut self, ad: AdId, minute: i64) -> usize {
        let hash = self.hasher.hash_one((&ad, minute));
        let (groups, hasher) = (&self.groups, &self.hasher);
        let found = self.index.find_or_insert(
            hash,
            |g| {
                let group = &groups[g as usize];
                group.minute == minute && group.ad == ad
            },
            |g| {
                let group = &groups[g as usize];
                hasher.hash_one((&group.ad, group.minute))
            },
        );
        match found {
            Found::Old(g) => g as usize,
            Found::New(g) => {
                self.groups.push(Group {
                    ad,
                    minute,
                    first: END,
                    last: END,
                    kinds: [END; KINDS],
                });
                g as usize
            }
        }
    }

    /// Takes the increments out, grouped by (ad, minute) in first-seen
    /// order (filters too), leaving the fold empty (its memory is kept).
    pub fn drain(&mut self) -> Increments {
        let mut out = Increments::with_capacity(self.groups.len(), self.entries.len());
        // A group without entries (no dimension set configured) is left
        // out: readers take every group for a counted (ad, minute).
        for group in self.groups.iter().filter(|g| g.first != END) {
            out.start_group(group.minute, group.ad);
            let mut e = group.first;
            while let Some(entry) = self.entries.get(e as usize) {
                out.push(entry.filter, entry.count);
                e = entry.next;
            }
        }
        self.index.clear();
        self.groups.clear();
        self.entries.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Increment;
    use crate::click::{Country, IpType};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn click(ad: u8, country: u8, ip: u8, extras: [u32; 2]) -> Click {
        Click {
            id: 0,
            ad: AdId::parse(&format!("ad-{ad}")).unwrap(),
            ts: 0,
            country: Country::parse(["US", "DE", "FR"][country as usize]).unwrap(),
            ip_type: [IpType::V4, IpType::V6, IpType::Unknown][ip as usize],
            extras: [extras[0], extras[1], 0, 0],
            seq: 0,
            repeat: false,
        }
    }

    /// Any dimension sets over the built-ins and two extra dimensions,
    /// repeats included (sets whose filters can be equal).
    fn sets() -> impl Strategy<Value = Vec<DimensionSet>> {
        prop_oneof![
            Just(DimensionSet::defaults()),
            prop::collection::vec(
                (any::<bool>(), any::<bool>(), 0u8..4).prop_map(|(country, ip_type, extra)| {
                    DimensionSet {
                        country,
                        ip_type,
                        extra,
                    }
                }),
                1..6,
            ),
        ]
    }

    proptest! {
        /// Over batches that reuse the fold: one increment per (ad, minute,
        /// filter) holding its clicks, groups in first-seen order with each
        /// group's increments together, filters in first-seen order.
        #[test]
        fn folds_like_a_naive_count(
            sets in sets(),
            batches in prop::collection::vec(
                prop::collection::vec(
                    // Popular ads (long chains) among many (the index grows).
                    (prop_oneof![0u8..5, 0u8..100], 0i64..3, 0u8..3, 0u8..3, (0u32..3, 0u32..3)),
                    0..150),
                1..4),
        ) {
            let mut fold = IncrementFold::default();
            for clicks in batches {
                let mut naive: HashMap<(AdId, i64, Filter), u64> = HashMap::new();
                let mut order: Vec<(AdId, i64, Filter)> = Vec::new();
                let mut groups: Vec<(AdId, i64)> = Vec::new();
                for (ad, minute, country, ip, (extra0, extra1)) in clicks {
                    // Extra codes name their dimension: 1..=2 the first's, 11..=12 the second's.
                    let extras = [extra0, if extra1 == 0 { 0 } else { 10 + extra1 }];
                    let c = click(ad, country, ip, extras);
                    fold.add(&c, minute, &sets);
                    if !groups.contains(&(c.ad, minute)) {
                        groups.push((c.ad, minute));
                    }
                    for set in &sets {
                        let key = (c.ad, minute, c.project(*set));
                        if !naive.contains_key(&key) {
                            order.push(key);
                        }
                        *naive.entry(key).or_insert(0) += 1;
                    }
                }
                // First-seen order within each group, groups in first-seen order.
                let want: Vec<Increment> = groups
                    .iter()
                    .flat_map(|g| order.iter().filter(move |k| (k.0, k.1) == *g))
                    .map(|k| Increment { minute: k.1, ad: k.0, filter: k.2, count: naive[k], total: 0 })
                    .collect();
                let drained = fold.drain();
                // One group per (ad, minute), its increments together.
                prop_assert_eq!(drained.group_heads().len(), groups.len());
                prop_assert_eq!(drained.iter().collect::<Vec<_>>(), want);
            }
        }
    }
}
