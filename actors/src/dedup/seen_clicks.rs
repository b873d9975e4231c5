//! The click ids a partition has counted, for as long as a repeat could still
//! change a count.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Hashes a [`Remembered`] id: its bits are already uniformly random, so the
/// hash is the top 64 of them.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for other keys; fold the bytes in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Low bits of a stored id that hold its minute instead.
const MINUTE_BITS: u32 = 24;
const MINUTE_MASK: u128 = (1 << MINUTE_BITS) - 1;

/// One remembered click in 16 bytes: the top 104 bits of its id say which
/// click it is, the low 24 bits the minute (mod 2^24, ~32 years) until which
/// it is kept. Equality and hash look at the id bits only.
#[derive(Clone, Copy)]
struct Remembered(u128);

impl Remembered {
    fn new(id: u128, minute: i64) -> Remembered {
        Remembered((id & !MINUTE_MASK) | minute_number(minute))
    }

    /// Whether it is kept until before `minute` (so may be forgotten).
    fn kept_before(self, minute: i64) -> bool {
        // Differences of live ids are a few lateness spans: far below 2^23.
        let diff = ((self.0 & MINUTE_MASK) as u32).wrapping_sub(minute_number(minute) as u32);
        diff & (1 << (MINUTE_BITS - 1)) != 0
    }
}

fn minute_number(minute: i64) -> u128 {
    (minute.div_euclid(crate::time::MINUTE_MS) as u128) & MINUTE_MASK
}

impl PartialEq for Remembered {
    fn eq(&self, other: &Remembered) -> bool {
        self.0 >> MINUTE_BITS == other.0 >> MINUTE_BITS
    }
}

impl Eq for Remembered {}

impl Hash for Remembered {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((self.0 >> 64) as u64);
    }
}

/// The set of remembered ids, each with the minute whose finality frees it.
///
/// Ids are 128-bit hashes; 104 of their bits identify a click here (two
/// clicks collide with odds of n²/2^105: below 10^-17 for ten million ids).
/// Forgetting scans the set, once per minute that turns final; in exchange
/// there is no second index and an id costs its 16 bytes plus the table's slack.
pub struct SeenClicks {
    ids: HashSet<Remembered, BuildHasherDefault<IdHasher>>,
    /// The latest `forget_before` minute.
    forgotten_before: i64,
}

impl Default for SeenClicks {
    fn default() -> SeenClicks {
        SeenClicks {
            ids: HashSet::default(),
            forgotten_before: i64::MIN,
        }
    }
}

impl SeenClicks {
    /// Records `id` under `minute`. Returns `false` if the id was already there.
    pub fn insert(&mut self, id: u128, minute: i64) -> bool {
        self.ids.insert(Remembered::new(id, minute))
    }

    /// Forgets the ids of every minute before `minute`. Returns how many.
    pub fn forget_before(&mut self, minute: i64) -> usize {
        // Nothing is before "no watermark", and the floor never moves back
        // (so the wrapped minute comparison only ever spans live minutes).
        if minute == i64::MIN || minute < self.forgotten_before {
            return 0;
        }
        self.forgotten_before = minute;
        let before = self.ids.len();
        self.ids.retain(|id| !id.kept_before(minute));
        before - self.ids.len()
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
                let minute = minute * crate::time::MINUTE_MS;
                if forget {
                    floor = floor.max(minute);
                    let before = naive.len();
                    naive.retain(|(_, m)| *m >= floor);
                    prop_assert_eq!(seen.forget_before(floor), before - naive.len());
                } else {
                    let fresh = !naive.iter().any(|(i, _)| *i == id);
                    if fresh { naive.push((id, minute)); }
                    // Real ids are uniform hashes: spread the small test ids likewise.
                    prop_assert_eq!(seen.insert(id.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835), minute), fresh);
                }
                prop_assert_eq!(seen.len(), naive.len());
            }
        }
    }
}
