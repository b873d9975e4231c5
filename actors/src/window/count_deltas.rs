//! Folds the counted clicks of one batch into one increment per
//! (ad, minute, filter), so the reducer and the writer touch each key once.
//!
//! Clicks are grouped by (ad, minute) first: one hash of the ad id per click,
//! and a short scan for its filters. The increments leave grouped the same
//! way, which lets the reducer look each ad up once.

use crate::batch::CountDelta;
use crate::click::{AdId, Click, Filter};
use crate::fast_hash::FastMap;
use crate::settings::DimensionSet;

/// The increments of one (ad, minute) in this batch.
struct Group {
    ad: AdId,
    minute: i64,
    filters: Vec<(Filter, u64)>,
}

/// The increments of one batch.
#[derive(Default)]
pub struct CountDeltas {
    index: FastMap<(AdId, i64), u32>,
    /// Groups in first-seen order; the first `used` are this batch's (the
    /// rest keep their allocations for the next batch).
    groups: Vec<Group>,
    used: usize,
}

impl CountDeltas {
    /// Counts `click` in `minute` under each configured filter.
    pub fn add(&mut self, click: &Click, minute: i64, sets: &[DimensionSet]) {
        let used = &mut self.used;
        let groups = &mut self.groups;
        let at = *self.index.entry((click.ad, minute)).or_insert_with(|| {
            let at = *used;
            *used += 1;
            match groups.get_mut(at) {
                Some(group) => {
                    group.ad = click.ad;
                    group.minute = minute;
                    group.filters.clear();
                }
                None => groups.push(Group {
                    ad: click.ad,
                    minute,
                    filters: Vec::with_capacity(sets.len()),
                }),
            }
            at as u32
        });
        let filters = &mut groups[at as usize].filters;
        for set in sets {
            let filter = click.project(*set);
            match filters.iter_mut().find(|(f, _)| *f == filter) {
                Some((_, n)) => *n += 1,
                None => filters.push((filter, 1)),
            }
        }
    }

    /// Takes the increments out, grouped by (ad, minute), leaving the fold
    /// empty (its memory is kept).
    pub fn drain(&mut self) -> Vec<CountDelta> {
        let groups = &self.groups[..self.used];
        let mut out = Vec::with_capacity(groups.iter().map(|g| g.filters.len()).sum());
        for group in groups {
            out.extend(group.filters.iter().map(|(filter, count)| CountDelta {
                minute: group.minute,
                ad: group.ad,
                filter: *filter,
                count: *count,
                total: 0,
            }));
        }
        self.index.clear();
        self.used = 0;
        out
    }
}
