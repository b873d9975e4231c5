//! One minute's clicks per ad under one filter: an open-addressing table
//! from ad slot to count, 16 bytes a counter.
//!
//! Why not a `HashMap`: counting is bound by cache misses, one per counter
//! touched, and a table we lay out ourselves can be *prefetched*: the reducer
//! asks for the bucket of the increment a few places ahead while it adds the
//! current one, so the misses overlap instead of queueing.

use crate::prefetch::prefetch;

/// Ad slot → clicks, for one (minute, filter).
#[derive(Default)]
pub struct CounterTable {
    /// Power-of-two length (or empty); at most 3/4 full.
    entries: Vec<Entry>,
    len: usize,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    /// The ad slot plus one; 0 marks an empty bucket.
    key: u32,
    count: u64,
}

impl CounterTable {
    fn home(&self, slot: u32) -> usize {
        // Fibonacci hashing: dense slot numbers spread over the whole table.
        let bits = self.entries.len().trailing_zeros();
        (u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// Adds `n` clicks to `slot`; returns its new total.
    #[inline]
    pub fn add(&mut self, slot: u32, n: u64) -> u64 {
        let count = self.count_mut(slot);
        *count += n;
        *count
    }

    /// Sets the clicks of `slot` to `n` (recovery: a stored total); returns
    /// what it held (0 if missing).
    pub fn replace(&mut self, slot: u32, n: u64) -> u64 {
        std::mem::replace(self.count_mut(slot), n)
    }

    /// Adds `change` to `slot`, modulo 2^64: recovery's derived counters
    /// take changes that are negative (as two's complement) partway
    /// through a record and add up by its end (see
    /// [`crate::store::DeriveRun`]).
    pub fn add_wrapping(&mut self, slot: u32, change: u64) {
        let count = self.count_mut(slot);
        *count = count.wrapping_add(change);
    }

    /// The count of `slot`, inserted at zero if it is missing.
    #[inline]
    fn count_mut(&mut self, slot: u32) -> &mut u64 {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let mask = self.entries.len() - 1;
        let mut at = self.home(slot);
        loop {
            let key = self.entries[at].key;
            if key == slot + 1 {
                break;
            }
            if key == 0 {
                self.entries[at] = Entry {
                    key: slot + 1,
                    count: 0,
                };
                self.len += 1;
                break;
            }
            at = (at + 1) & mask;
        }
        &mut self.entries[at].count
    }

    /// The clicks of `slot`, if it has any.
    pub fn get(&self, slot: u32) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let mut at = self.home(slot);
        loop {
            let entry = self.entries[at];
            if entry.key == slot + 1 {
                return Some(entry.count);
            }
            if entry.key == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Asks the CPU to bring `slot`'s bucket into cache (a hint; no effect on results).
    #[inline]
    pub fn prefetch(&self, slot: u32) {
        if self.entries.is_empty() {
            return;
        }
        prefetch(&self.entries[self.home(slot)]);
    }

    /// Every (slot, clicks) pair, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.key != 0)
            .map(|e| (e.key - 1, e.count))
    }

    /// Number of ads counted.
    pub fn len(&self) -> usize {
        self.len
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.entries);
        self.entries = vec![Entry::default(); (old.len() * 2).max(8)];
        self.len = 0;
        for e in old.into_iter().filter(|e| e.key != 0) {
            self.add(e.key - 1, e.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Behaves as a `HashMap` of sums, through every growth.
        #[test]
        fn sums_like_a_hash_map(adds in prop::collection::vec((0u32..300, 1u64..5), 0..600)) {
            let mut table = CounterTable::default();
            let mut naive: HashMap<u32, u64> = HashMap::new();
            for (slot, n) in adds {
                table.prefetch(slot);
                table.add(slot, n);
                *naive.entry(slot).or_insert(0) += n;
            }
            prop_assert_eq!(table.len(), naive.len());
            for slot in 0..300 {
                prop_assert_eq!(table.get(slot), naive.get(&slot).copied());
            }
            let all: HashMap<u32, u64> = table.iter().collect();
            prop_assert_eq!(all, naive);
        }
    }
}
