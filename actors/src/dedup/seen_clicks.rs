//! The click ids a partition has counted, for as long as a repeat could still
//! change a count.
//!
//! An open-addressing table we lay out ourselves, like the reducer's
//! counters, for the same reason: the set is far larger than the caches, so
//! every lookup is a miss, and only a table whose bucket we can compute can
//! be *prefetched* a few clicks ahead ([`SeenClicks::prefetch`]), so the
//! misses of a batch overlap instead of queueing.

/// Low bits of a stored id that hold its minute instead.
const MINUTE_BITS: u32 = 24;
const MINUTE_MASK: u128 = (1 << MINUTE_BITS) - 1;

/// One remembered click in 16 bytes: the top 104 bits of its id say which
/// click it is, the low 24 bits the minute (mod 2^24, ~32 years) until which
/// it is kept. Equality looks at the id bits only.
#[derive(Clone, Copy)]
struct Remembered(u128);

impl Remembered {
    fn new(id: u128, minute: i64) -> Remembered {
        Remembered((id & !MINUTE_MASK) | minute_number(minute))
    }

    /// The bits that identify the click.
    fn id_bits(self) -> u128 {
        self.0 >> MINUTE_BITS
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

/// A free bucket. No stored id has all id bits zero (that one id is kept
/// aside, in `SeenClicks::zero`), so no stored value is 0.
const FREE: u128 = 0;

/// The set of remembered ids, each with the minute whose finality frees it.
///
/// Ids are 128-bit hashes; 104 of their bits identify a click here (two
/// clicks collide with odds of n²/2^105: below 10^-17 for ten million ids).
/// Forgetting scans the set, once per minute that turns final; in exchange
/// there is no second index and an id costs its 16 bytes plus the table's slack.
pub struct SeenClicks {
    /// Power-of-two length (or empty), at most 3/4 full, linear probing from
    /// the bucket the id's top bits name (they are uniform: ids are hashes).
    buckets: Vec<u128>,
    /// Ids in `buckets`.
    len: usize,
    /// The id whose id bits are all zero, if remembered.
    zero: Option<Remembered>,
    /// The latest `forget_before` minute.
    forgotten_before: i64,
}

impl Default for SeenClicks {
    fn default() -> SeenClicks {
        SeenClicks {
            buckets: Vec::new(),
            len: 0,
            zero: None,
            forgotten_before: i64::MIN,
        }
    }
}

impl SeenClicks {
    /// The bucket an id starts its probe at (`buckets` is not empty).
    fn home(&self, id: u128) -> usize {
        let bits = self.buckets.len().trailing_zeros();
        ((id >> 64) as u64 >> (64 - bits)) as usize
    }

    /// Records `id` under `minute`. Returns `false` if the id was already there.
    pub fn insert(&mut self, id: u128, minute: i64) -> bool {
        let new = Remembered::new(id, minute);
        if new.id_bits() == 0 {
            let fresh = self.zero.is_none();
            self.zero.get_or_insert(new);
            return fresh;
        }
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.rebuild(self.buckets.len() * 2, i64::MIN);
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home(new.0);
        loop {
            let bucket = &mut self.buckets[at];
            if *bucket == FREE {
                *bucket = new.0;
                self.len += 1;
                return true;
            }
            if Remembered(*bucket).id_bits() == new.id_bits() {
                return false;
            }
            at = (at + 1) & mask;
        }
    }

    /// Asks the CPU to bring the bucket `id` would be looked up in into
    /// cache (a hint; no effect on results).
    #[inline]
    pub fn prefetch(&self, id: u128) {
        if self.buckets.is_empty() {
            return;
        }
        let bucket = &self.buckets[self.home(id)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults or reads into the program; the
        // pointer is to a live element besides.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>((bucket as *const u128).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }

    /// Forgets the ids of every minute before `minute`. Returns how many.
    pub fn forget_before(&mut self, minute: i64) -> usize {
        // Nothing is before "no watermark", and the floor never moves back
        // (so the wrapped minute comparison only ever spans live minutes).
        if minute == i64::MIN || minute < self.forgotten_before {
            return 0;
        }
        self.forgotten_before = minute;
        let before = self.len();
        if self.zero.is_some_and(|id| id.kept_before(minute)) {
            self.zero = None;
        }
        // Same size: a partition's rate changes slowly, and the set refills.
        self.rebuild(self.buckets.len(), minute);
        before - self.len()
    }

    /// Moves every id not kept before `forget` into a table of `size` buckets.
    fn rebuild(&mut self, size: usize, forget: i64) {
        let old = std::mem::replace(&mut self.buckets, vec![FREE; size.max(8)]);
        self.len = 0;
        let mask = self.buckets.len() - 1;
        for id in old.into_iter().filter(|b| *b != FREE).map(Remembered) {
            if forget != i64::MIN && id.kept_before(forget) {
                continue;
            }
            let mut at = self.home(id.0);
            while self.buckets[at] != FREE {
                at = (at + 1) & mask;
            }
            self.buckets[at] = id.0;
            self.len += 1;
        }
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
                    // Real ids are uniform hashes: spread the small test ids
                    // likewise, except id 0, which packs to the all-zero id
                    // bits the table keeps aside.
                    // Odd ids share their top 64 bits, so their home bucket:
                    // long probe runs, wrapping round the table's end.
                    let spread = match id {
                        0 => 0x12,
                        odd if odd % 2 == 1 => odd << 30,
                        even => even.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
                    };
                    prop_assert_eq!(seen.insert(spread, minute), fresh);
                }
                prop_assert_eq!(seen.len(), naive.len());
            }
        }
    }
}
