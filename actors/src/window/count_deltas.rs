//! Folds the counted clicks of one batch into one increment per
//! (ad, minute, filter), so the reducer and the writer touch each key once.

use crate::batch::CountDelta;
use crate::click::{AdId, Click, Filter};
use crate::fast_hash::FastMap;
use crate::settings::DimensionSet;

/// The increments of one batch.
#[derive(Default)]
pub struct CountDeltas {
    counts: FastMap<(AdId, i64, Filter), u64>,
}

impl CountDeltas {
    /// Counts `click` in `minute` under each configured filter.
    pub fn add(&mut self, click: &Click, minute: i64, sets: &[DimensionSet]) {
        for set in sets {
            *self
                .counts
                .entry((click.ad, minute, click.project(*set)))
                .or_insert(0) += 1;
        }
    }

    /// Takes the increments out, leaving the fold empty (its memory is kept).
    pub fn drain(&mut self) -> Vec<CountDelta> {
        self.counts
            .drain()
            .map(|((ad, minute, filter), count)| CountDelta {
                minute,
                ad,
                filter,
                count,
            })
            .collect()
    }
}
