//! The numbering of a partition's ads: slot → ad id, and ad id → slot in
//! an open-addressing index whose lookups can be prefetched.
//!
//! Why not a `HashMap<AdId, u32>`: with 100,000 ads the map is megabytes, and
//! each lookup was a cache miss (two: hashbrown's control bytes, then the
//! 72-byte entry) that the reducer waited for once per ad of a batch. Here
//! an index bucket is 8 bytes (the slot and 32 bits of the id's hash), its
//! address is known from the hash alone, and the id to compare with is
//! `ids[slot]`: the reducer asks for the bucket of an ad a few ads ahead, then
//! (once that bucket is in cache) for the id it names, so both misses
//! overlap with the work on the ads before.

use crate::click::AdId;
use crate::fast_hash::FastHash;
use std::hash::BuildHasher;

/// Ad id → slot (dense numbers from 0, in first-seen order) and back.
#[derive(Default)]
pub struct AdSlots {
    /// The ad of each slot.
    ids: Vec<AdId>,
    /// Power-of-two length (or empty), at most half full. A bucket is the
    /// slot plus one (low 32 bits; 0 = empty) and the high 32 bits of the
    /// id's hash (so most mismatches are seen without reading `ids`).
    index: Vec<u64>,
    hasher: FastHash,
}

/// The bits of a bucket that hold the slot plus one.
const SLOT_MASK: u64 = u32::MAX as u64;

impl AdSlots {
    /// The hash the index is keyed on: computed once per ad and passed to
    /// [`prefetch_bucket`](Self::prefetch_bucket),
    /// [`prefetch_id`](Self::prefetch_id) and [`slot_hashed`](Self::slot_hashed).
    #[inline]
    pub fn hash(&self, ad: &AdId) -> u64 {
        self.hasher.hash_one(ad)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The low bits pick the bucket, the high ones are the tag.
        (hash as usize) & (self.index.len() - 1)
    }

    #[inline]
    fn tag(hash: u64) -> u64 {
        hash & !SLOT_MASK
    }

    /// The slot of `ad`, numbering it if it is new.
    pub fn slot(&mut self, ad: &AdId) -> u32 {
        self.slot_hashed(ad, self.hash(ad))
    }

    /// [`slot`](Self::slot) with the ad's [`hash`](Self::hash) already known.
    pub fn slot_hashed(&mut self, ad: &AdId, hash: u64) -> u32 {
        if (self.ids.len() + 1) * 2 > self.index.len() {
            self.grow();
        }
        let mask = self.index.len() - 1;
        let mut at = self.home(hash);
        loop {
            let bucket = self.index[at];
            if bucket == 0 {
                let slot = self.ids.len() as u32;
                self.ids.push(*ad);
                self.index[at] = Self::tag(hash) | (u64::from(slot) + 1);
                return slot;
            }
            let slot = (bucket & SLOT_MASK) as u32 - 1;
            if bucket & !SLOT_MASK == Self::tag(hash) && self.ids[slot as usize] == *ad {
                return slot;
            }
            at = (at + 1) & mask;
        }
    }

    /// The slot of `ad`, if it is numbered.
    pub fn get(&self, ad: &AdId) -> Option<u32> {
        if self.index.is_empty() {
            return None;
        }
        let hash = self.hash(ad);
        let mask = self.index.len() - 1;
        let mut at = self.home(hash);
        loop {
            let bucket = self.index[at];
            if bucket == 0 {
                return None;
            }
            let slot = (bucket & SLOT_MASK) as u32 - 1;
            if bucket & !SLOT_MASK == Self::tag(hash) && self.ids[slot as usize] == *ad {
                return Some(slot);
            }
            at = (at + 1) & mask;
        }
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
        if !self.index.is_empty() {
            prefetch(&self.index[self.home(hash)]);
        }
    }

    /// Asks the CPU for the id that the ad's home bucket names, if its tag
    /// matches: issued after [`prefetch_bucket`](Self::prefetch_bucket) had
    /// time to bring the bucket in (a hint; no effect on results).
    #[inline]
    pub fn prefetch_id(&self, hash: u64) {
        if self.index.is_empty() {
            return;
        }
        let bucket = self.index[self.home(hash)];
        if bucket != 0 && bucket & !SLOT_MASK == Self::tag(hash) {
            if let Some(id) = self.ids.get(((bucket & SLOT_MASK) - 1) as usize) {
                prefetch(id);
            }
        }
    }

    fn grow(&mut self) {
        let len = (self.index.len() * 2).max(16);
        self.index = vec![0; len];
        let mask = len - 1;
        for (slot, ad) in self.ids.iter().enumerate() {
            let hash = self.hasher.hash_one(ad);
            let mut at = (hash as usize) & mask;
            while self.index[at] != 0 {
                at = (at + 1) & mask;
            }
            self.index[at] = Self::tag(hash) | (slot as u64 + 1);
        }
    }
}

#[inline]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults or reads into the program; the
    // pointer is to a live value besides.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
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
