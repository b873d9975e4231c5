//! The numbering of a partition's ads: slot → ad id, and ad id → slot in
//! a [`DenseIndex`] whose lookups can be prefetched.
//!
//! Why not a `HashMap<AdId, u32>`: with 100,000 ads the map is megabytes, and
//! each lookup was a cache miss (two: hashbrown's control bytes, then the
//! 72-byte entry) that the reducer waited for once per ad of a batch. Here
//! the reducer asks for the index bucket of an ad a few ads ahead, then
//! (once that bucket is in cache) for the id it names in `ids`, so both
//! misses overlap with the work on the ads before.

use crate::click::AdId;
use crate::dense_index::{DenseIndex, Found};
use crate::fast_hash::FastHash;
use crate::prefetch::prefetch;
use std::hash::BuildHasher;

/// Ad id → slot (dense numbers from 0, in first-seen order) and back.
#[derive(Default)]
pub struct AdSlots {
    /// The ad of each slot.
    ids: Vec<AdId>,
    /// Each ad's hash → its slot.
    index: DenseIndex,
    hasher: FastHash,
}

impl AdSlots {
    /// The hash the index is keyed on: computed once per ad and passed to
    /// [`prefetch_bucket`](Self::prefetch_bucket),
    /// [`prefetch_id`](Self::prefetch_id) and [`slot_hashed`](Self::slot_hashed).
    #[inline]
    pub fn hash(&self, ad: &AdId) -> u64 {
        self.hasher.hash_one(ad)
    }

    /// The slot of `ad`, numbering it if it is new.
    pub fn slot(&mut self, ad: &AdId) -> u32 {
        self.slot_hashed(ad, self.hash(ad))
    }

    /// [`slot`](Self::slot) with the ad's [`hash`](Self::hash) already known.
    pub fn slot_hashed(&mut self, ad: &AdId, hash: u64) -> u32 {
        let (ids, hasher) = (&self.ids, &self.hasher);
        match self.index.find_or_insert(
            hash,
            |slot| ids[slot as usize] == *ad,
            |slot| hasher.hash_one(ids[slot as usize]),
        ) {
            Found::Old(slot) => slot,
            Found::New(slot) => {
                self.ids.push(*ad);
                slot
            }
        }
    }

    /// The slot of `ad`, if it is numbered.
    pub fn get(&self, ad: &AdId) -> Option<u32> {
        self.index
            .find(self.hash(ad), |slot| self.ids[slot as usize] == *ad)
    }

    /// The ad of `slot`.
    #[inline]
    pub fn id(&self, slot: u32) -> &AdId {
        &self.ids[slot as usize]
    }

    /// Number of ads numbered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no ad is numbered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Asks the CPU for the index bucket of the ad with `hash` (a hint; no
    /// effect on results).
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Asks the CPU for the id that the ad's home bucket names, if its tag
    /// matches: issued after [`prefetch_bucket`](Self::prefetch_bucket) had
    /// time to bring the bucket in (a hint; no effect on results).
    #[inline]
    pub fn prefetch_id(&self, hash: u64) {
        if let Some(id) = self
            .index
            .likely(hash)
            .and_then(|slot| self.ids.get(slot as usize))
        {
            prefetch(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ad(i: u32) -> AdId {
        AdId::parse(&format!("ad-{i}")).unwrap()
    }

    proptest! {
        /// Numbers ads densely in first-seen order, as a `HashMap` would,
        /// through every growth; `get` finds exactly the numbered ones.
        #[test]
        fn numbers_like_a_hash_map(ads in prop::collection::vec(0u32..400, 0..800)) {
            let mut slots = AdSlots::default();
            let mut naive: HashMap<AdId, u32> = HashMap::new();
            for a in ads {
                let hash = slots.hash(&ad(a));
                slots.prefetch_bucket(hash);
                slots.prefetch_id(hash);
                let next = naive.len() as u32;
                let want = *naive.entry(ad(a)).or_insert(next);
                prop_assert_eq!(slots.slot_hashed(&ad(a), hash), want);
            }
            prop_assert_eq!(slots.len(), naive.len());
            for a in 0..400 {
                prop_assert_eq!(slots.get(&ad(a)), naive.get(&ad(a)).copied());
            }
            for (id, slot) in &naive {
                prop_assert_eq!(slots.id(*slot), id);
            }
        }
    }

    #[test]
    fn ids_of_one_word_and_many_words_stay_apart() {
        let long = |c: char| AdId::parse(&c.to_string().repeat(64)).unwrap();
        let mut slots = AdSlots::default();
        assert!(slots.get(&long('a')).is_none());
        assert_eq!(slots.slot(&long('a')), 0);
        assert_eq!(slots.slot(&AdId::parse("a").unwrap()), 1);
        assert_eq!(slots.slot(&long('b')), 2);
        assert_eq!(slots.slot(&long('a')), 0);
        assert_eq!(slots.get(&AdId::parse("a").unwrap()), Some(1));
        assert!(slots.get(&AdId::parse("b").unwrap()).is_none());
    }
}
