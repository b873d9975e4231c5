//! A hash index onto dense numbers (0, 1, 2, … in insertion order), for
//! tables that keep their keys in a vector of their own and look them up by
//! a hash computed once.
//!
//! Two hot lookups use it: the reducer's ad numbering
//! ([`crate::reducer::ad_slots`]) and the window's (ad, minute) groups of a
//! batch ([`crate::window::increment_fold`]). A `HashMap` stored a 72- to
//! 80-byte key per bucket and missed the cache twice a lookup (control
//! bytes, then the entry). Here a bucket is 8 bytes: the number plus one in
//! the low 32 bits (0 marks an empty bucket) and the high 32 bits of the
//! key's hash, so most mismatches are seen without reading the key; and a
//! bucket's address is known from the hash alone, so it can be prefetched.
//!
//! The index never sees a key: the caller confirms a candidate number
//! (`is_key`), and gives the hashes of all numbers when the index grows.

use crate::prefetch::prefetch;

/// The bits of a bucket that hold the number plus one.
const NUMBER_MASK: u64 = u32::MAX as u64;

/// Hash → dense number; open addressing with linear probing, a power-of-two
/// number of buckets (or none), at most half full.
#[derive(Default)]
pub struct DenseIndex {
    buckets: Vec<u64>,
    /// Numbers given out: the next one is `len`.
    len: usize,
}

/// What [`DenseIndex::find_or_insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The key's number.
    Old(u32),
    /// The key was not there: it is given this number (the caller stores
    /// the key under it).
    New(u32),
}

impl DenseIndex {
    /// Numbers given out so far.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The low bits pick the bucket, the high ones are the tag.
        (hash as usize) & (self.buckets.len() - 1)
    }

    #[inline]
    fn tag(hash: u64) -> u64 {
        hash & !NUMBER_MASK
    }

    /// The number of the key with `hash` that `is_key` confirms, or, if
    /// there is none, the next number, given to it. `rehash` gives the hash
    /// of any number already out, for when the index grows.
    #[inline]
    pub fn find_or_insert(
        &mut self,
        hash: u64,
        is_key: impl Fn(u32) -> bool,
        rehash: impl Fn(u32) -> u64,
    ) -> Found {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow(rehash);
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home(hash);
        loop {
            let bucket = self.buckets[at];
            if bucket == 0 {
                let number = self.len as u32;
                self.buckets[at] = Self::tag(hash) | (u64::from(number) + 1);
                self.len += 1;
                return Found::New(number);
            }
            let number = (bucket & NUMBER_MASK) as u32 - 1;
            if bucket & !NUMBER_MASK == Self::tag(hash) && is_key(number) {
                return Found::Old(number);
            }
            at = (at + 1) & mask;
        }
    }

    /// The number of the key with `hash` that `is_key` confirms, if any.
    pub fn find(&self, hash: u64, is_key: impl Fn(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home(hash);
        loop {
            let bucket = self.buckets[at];
            if bucket == 0 {
                return None;
            }
            let number = (bucket & NUMBER_MASK) as u32 - 1;
            if bucket & !NUMBER_MASK == Self::tag(hash) && is_key(number) {
                return Some(number);
            }
            at = (at + 1) & mask;
        }
    }

    /// Asks the CPU for the home bucket of `hash` (a hint; no effect on
    /// results).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if !self.buckets.is_empty() {
            prefetch(&self.buckets[self.home(hash)]);
        }
    }

    /// The number the home bucket of `hash` holds, if its tag matches: the
    /// likely number of the key, for prefetching the key itself once the
    /// bucket is in cache (a hint; the key may still be elsewhere).
    #[inline]
    pub fn likely(&self, hash: u64) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let bucket = self.buckets[self.home(hash)];
        (bucket != 0 && bucket & !NUMBER_MASK == Self::tag(hash))
            .then(|| (bucket & NUMBER_MASK) as u32 - 1)
    }

    /// Forgets every number (the buckets' memory is kept).
    pub fn clear(&mut self) {
        self.buckets.fill(0);
        self.len = 0;
    }

    /// Doubles the buckets and puts every number back from its hash.
    #[cold]
    fn grow(&mut self, rehash: impl Fn(u32) -> u64) {
        let size = (self.buckets.len() * 2).max(16);
        self.buckets.clear();
        self.buckets.resize(size, 0);
        let mask = size - 1;
        for number in 0..self.len as u32 {
            let hash = rehash(number);
            let mut at = (hash as usize) & mask;
            while self.buckets[at] != 0 {
                at = (at + 1) & mask;
            }
            self.buckets[at] = Self::tag(hash) | (u64::from(number) + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A poor hash on purpose: many keys share buckets and tags, so the
    /// probing and the caller's confirmation are exercised.
    fn hash(key: u32) -> u64 {
        u64::from(key % 37).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(key % 5) << 40
    }

    proptest! {
        /// Numbers keys densely in first-seen order, as a `HashMap` would,
        /// through every growth and clear; `find` finds exactly those.
        #[test]
        fn numbers_like_a_hash_map(rounds in prop::collection::vec(prop::collection::vec(0u32..500, 0..400), 1..3)) {
            let mut index = DenseIndex::default();
            for keys in rounds {
                index.clear();
                let mut stored: Vec<u32> = Vec::new();
                let mut naive: HashMap<u32, u32> = HashMap::new();
                for key in keys {
                    index.prefetch(hash(key));
                    if let Some(n) = index.likely(hash(key)) {
                        prop_assert!((n as usize) < stored.len());
                    }
                    let next = naive.len() as u32;
                    let want = *naive.entry(key).or_insert(next);
                    let found = index.find_or_insert(hash(key), |n| stored[n as usize] == key, |n| hash(stored[n as usize]));
                    match found {
                        Found::Old(n) => prop_assert_eq!(n, want),
                        Found::New(n) => {
                            prop_assert_eq!(n, want);
                            prop_assert_eq!(n as usize, stored.len());
                            stored.push(key);
                        }
                    }
                }
                prop_assert_eq!(index.len(), naive.len());
                for key in 0..500 {
                    prop_assert_eq!(index.find(hash(key), |n| stored[n as usize] == key), naive.get(&key).copied());
                }
            }
        }
    }
}
