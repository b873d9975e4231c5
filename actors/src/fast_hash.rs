//! A fast hasher for the hot maps keyed by ad, minute and filter.
//!
//! std's SipHash is built to resist hash flooding from untrusted keys and
//! costs ~20 ns per short key; the window and the reducer hash several keys
//! per click. This is a multiply-and-rotate hash over 8-byte words (the
//! FxHash idea) with a per-process random seed, so keys that collide are not
//! predictable from outside. Ad ids are validated (64 ASCII characters at most).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// The multiplier: a 64-bit multiplicative-congruential constant with good
/// spectral properties from Steele and Vigna, "Computationally easy,
/// spectrally good multipliers for congruential pseudorandom number
/// generators" (Software: Practice and Experience, 2022), the one rustc-hash
/// 2 also multiplies by. The rotation after each word brings the well-mixed
/// high bits of the product down into the bits the next word is xored with.
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// The hasher state.
#[derive(Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(26);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // MurmurHash3's 64-bit finaliser: every output bit, the low ones that
        // pick hashbrown's bucket included, depends on every input bit.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// Builds [`FastHasher`]s from the process's seed.
#[derive(Clone, Copy)]
pub struct FastHash {
    seed: u64,
}

impl Default for FastHash {
    fn default() -> FastHash {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x5eed_u64));
        FastHash { seed }
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

/// A `HashMap` with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash<T: Hash>(t: &T) -> u64 {
        FastHash::default().hash_one(t)
    }

    #[test]
    fn distinguishes_close_keys() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("ad-{i}")).collect();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            assert!(seen.insert(hash(&id.as_bytes())), "collision on {id}");
        }
        assert_ne!(hash(&b"ab".as_slice()), hash(&b"ab\0".as_slice()));
        // The bucket bits (low 10 here) spread too.
        let buckets: std::collections::HashSet<u64> =
            ids.iter().map(|id| hash(&id.as_bytes()) & 1023).collect();
        assert!(
            buckets.len() > 900,
            "{} of 1024 buckets used",
            buckets.len()
        );
    }
}
