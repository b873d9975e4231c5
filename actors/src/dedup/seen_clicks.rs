//! The click ids a partition has counted, for as long as a repeat could still
//! change a count.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a click id hash: it is already uniformly random, so take its low bits.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u128 keys; fold the bytes in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64;
    }
}

/// The set of remembered ids, plus an index by minute to forget whole minutes
/// once they are final.
#[derive(Default)]
pub struct SeenClicks {
    ids: HashSet<u128, BuildHasherDefault<IdHasher>>,
    by_minute: BTreeMap<i64, Vec<u128>>,
}

impl SeenClicks {
    /// Records `id` under `minute`. Returns `false` if the id was already there.
    pub fn insert(&mut self, id: u128, minute: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.by_minute.entry(minute).or_default().push(id);
        true
    }

    /// Forgets the ids of every minute before `minute`. Returns how many.
    pub fn forget_before(&mut self, minute: i64) -> usize {
        let keep = self.by_minute.split_off(&minute);
        let gone = std::mem::replace(&mut self.by_minute, keep);
        let mut n = 0;
        for id in gone.into_values().flatten() {
            self.ids.remove(&id);
            n += 1;
        }
        n
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a naive list of (id, minute): insert reports exactly the
        /// first sighting among ids not yet forgotten.
        #[test]
        fn matches_a_naive_list(ops in prop::collection::vec((0u128..20, 0i64..6, any::<bool>()), 0..200)) {
            let mut seen = SeenClicks::default();
            let mut naive: Vec<(u128, i64)> = Vec::new();
            let mut floor = 0;
            for (id, minute, forget) in ops {
                if forget {
                    floor = floor.max(minute);
                    let before = naive.len();
                    naive.retain(|(_, m)| *m >= floor);
                    prop_assert_eq!(seen.forget_before(floor), before - naive.len());
                } else {
                    let fresh = !naive.iter().any(|(i, _)| *i == id);
                    if fresh { naive.push((id, minute)); }
                    prop_assert_eq!(seen.insert(id, minute), fresh);
                }
                prop_assert_eq!(seen.len(), naive.len());
            }
        }
    }
}
