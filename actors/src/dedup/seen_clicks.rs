//! The click ids a partition has counted, for as long as a repeat could still
//! change a count.
//!
//! # Layout: a bucketed cuckoo table of our own
//!
//! An id is remembered in 16 bytes (104 bits of the click's 128-bit key plus
//! the 24-bit minute whose finality frees it, see [`Remembered`]). The table
//! is an array of 128-byte buckets of eight such slots, two cache lines
//! each, and every id has exactly two buckets it may live in (its two *choices*,
//! computed from two different 64-bit windows of its bits). So:
//!
//! - a lookup reads two buckets, whose addresses are known from the id
//!   alone, so the caller can [prefetch](SeenClicks::prefetch) them a few
//!   clicks ahead and the misses overlap;
//! - an insertion into two full buckets moves a resident to *its* other
//!   choice (and so on: cuckoo hashing), which keeps the table working at
//!   92% full, where linear probing would scan dozens of slots per miss;
//!   with eight slots a bucket, both choices are rarely full;
//! - forgetting clears slots in place: an id's two buckets are fixed, so
//!   there are no probe chains to keep intact and no tombstones.
//!
//! # Why the bytes per id stay at most ~23
//!
//! The bucket count is any number, not a power of two: an id's bucket is the
//! high half of `window × buckets` (multiply-shift range reduction), so the
//! table grows by 30% at a time when it reaches 92% full. Its fill then
//! always lies between 0.92 / 1.3 ≈ 71% and 92%: 17.4 to 22.6 bytes per id.
//! (A `HashSet` doubles: 44% to 87%, up to 39 bytes per id.) The table
//! grows in place (see [`SeenClicks::grow`]): no second table is allocated.
//!
//! The price is the work of growing from empty: each growth moves every id,
//! so a table grown to n ids has moved about n / 0.3 ids on the way (a
//! doubling table moves about n). A partition in its steady state does not
//! grow (each minute forgets about as many ids as it adds), and a restart
//! sizes the table for what it loads; see docs/PERFORMANCE.md for what this
//! costs the dedup benchmark, which starts from empty.
//!
//! # Why 16 bytes and not 12
//!
//! A 96-bit fingerprint would make a *new* click look like a repeat (a lost
//! click) with odds of about `remembered ids / 2^96` per click. At 200,000
//! clicks/s with a dedup horizon of ~12 minutes (lateness 10 m, plus the
//! watermark delay and the minute in progress: 144 M ids), that is ~2e-12 per
//! day with 16 partitions and ~3e-11 with one. With 104 bits it is 256 times
//! less (below 1.3e-13 per day even with one partition, 8e-15 with 16), see
//! docs/SEMANTICS.md. A table per minute (so that forgetting drops a whole
//! table) was not taken either: a retry may carry another timestamp, so a
//! lookup would have to read every live minute's table, a dozen cache misses
//! per click instead of two.
//!
//! # When an id finds no place
//!
//! Ids are uniform hashes, so a cuckoo insertion almost always ends within a
//! few moves; if it does not within [`MAX_MOVES`], the table grows (when at
//! least [`GROW_ON_FAILURE_PERCENT`] full) or the homeless id goes to a small
//! overflow list, the *stash*, which every lookup also reads while it is not
//! empty. Only ids crafted to share their choices (which would need partial
//! xxh3 collisions) reach the stash; they cost time, never correctness or
//! unbounded growth.

/// Low bits of a stored id that hold its minute instead.
const MINUTE_BITS: u32 = 24;
const MINUTE_MASK: u128 = (1 << MINUTE_BITS) - 1;

/// Slots per bucket: eight 16-byte ids, two 64-byte cache lines. (With four,
/// both choices of an insertion are full so often at this fill that the
/// cuckoo moves, a cache miss each, cost more than the wider lookups.)
const SLOTS: usize = 8;

/// The table grows when more than this share (in 1/100) of its slots is used.
const MAX_LOAD_PERCENT: usize = 92;

/// Each growth multiplies the bucket count by this (in 1/100).
const GROWTH_PERCENT: usize = 130;

/// After forgetting, the table shrinks when less than this share (in 1/100)
/// is used: a partition whose traffic fell gives its memory back.
const SHRINK_LOAD_PERCENT: usize = 40;

/// Cuckoo moves tried before an insertion is declared homeless.
const MAX_MOVES: usize = 200;

/// A homeless id makes the table grow only if at least this share (in 1/100)
/// is used; below, growing would not help (the id's choices are crowded, not
/// the table) and the id goes to the stash.
const GROW_ON_FAILURE_PERCENT: usize = 75;

/// The smallest table, in buckets.
const MIN_BUCKETS: usize = 16;

/// One remembered click in 16 bytes: the top 104 bits of its key say which
/// click it is, the low 24 bits the minute (mod 2^24, ~32 years) until which
/// it is kept. Zero means an empty slot: a key whose 104 bits are all zero is
/// stored with its lowest id bit set instead (one more key in 2^104 that it
/// equals, which the collision odds above already dwarf).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Remembered(u128);

impl Remembered {
    fn new(id: u128, minute: i64) -> Remembered {
        let mut click = id & !MINUTE_MASK;
        if click == 0 {
            click = 1 << MINUTE_BITS;
        }
        Remembered(click | minute_number(minute))
    }

    /// Whether both are the same click, whatever their minutes.
    fn same_click(self, other: Remembered) -> bool {
        (self.0 ^ other.0) >> MINUTE_BITS == 0
    }

    /// Whether it is kept until before `minute` (so may be forgotten).
    fn kept_before(self, minute: i64) -> bool {
        // Differences of live ids are a few lateness spans: far below 2^23.
        let diff = ((self.0 & MINUTE_MASK) as u32).wrapping_sub(minute_number(minute) as u32);
        diff & (1 << (MINUTE_BITS - 1)) != 0
    }

    /// The two 64-bit windows of the click bits that choose its buckets: bits
    /// 64..128 and 24..88. The range reduction uses a window's high bits, so
    /// for any table below 2^40 buckets the two choices depend on disjoint
    /// bits of the key, i.e. are independent.
    fn windows(id: u128) -> (u64, u64) {
        ((id >> 64) as u64, (id >> MINUTE_BITS) as u64)
    }
}

fn minute_number(minute: i64) -> u128 {
    (minute.div_euclid(crate::time::MINUTE_MS) as u128) & MINUTE_MASK
}

/// The table's memory: `SLOTS` slots per bucket, the first bucket on a
/// 64-byte boundary so that each bucket is exactly two cache lines.
///
/// A `Vec<u128>` of zeros is `calloc`ed: the kernel hands out zero pages
/// lazily instead of the process writing every byte of a new table (a
/// 64-byte-aligned element type would be zeroed by hand). So it is a few
/// slots longer than the buckets need, and `first` skips to the boundary.
struct Table {
    slots: Vec<u128>,
    first: usize,
    buckets: usize,
}

impl Table {
    fn new(buckets: usize) -> Table {
        let slots = vec![0u128; buckets * SLOTS + SLOTS - 1];
        // At most SLOTS - 1 slots (16 bytes each) to a 64-byte boundary; if
        // the platform cannot say, unaligned buckets only cost speed.
        let first = slots.as_ptr().align_offset(64).min(SLOTS - 1);
        Table {
            slots,
            first,
            buckets,
        }
    }

    #[inline]
    fn bucket(&self, at: usize) -> &[u128] {
        let start = self.first + at * SLOTS;
        &self.slots[start..start + SLOTS]
    }

    #[inline]
    fn bucket_mut(&mut self, at: usize) -> &mut [u128] {
        let start = self.first + at * SLOTS;
        &mut self.slots[start..start + SLOTS]
    }

    /// Makes room for `buckets` buckets (more than now), keeping the
    /// contents of the old ones and zeroing the new ones.
    ///
    /// The vector is grown by `realloc`, which for a large table is an
    /// `mremap`: the old pages are kept, not copied, and only the new part
    /// is touched. If the block moved to another 64-byte offset, the slots
    /// are shifted back onto the boundary.
    fn extend(&mut self, buckets: usize) {
        let used = self.buckets * SLOTS;
        let len = buckets * SLOTS + SLOTS - 1;
        // Exactly: the amortized doubling of `resize` would be memory held
        // for a growth of 30%.
        self.slots.reserve_exact(len - self.slots.len());
        self.slots.resize(len, 0);
        let first = self.slots.as_ptr().align_offset(64).min(SLOTS - 1);
        if first != self.first {
            self.slots.copy_within(self.first..self.first + used, first);
            self.slots[first + used..].fill(0);
            self.first = first;
        }
        self.buckets = buckets;
    }

    fn all_slots_mut(&mut self) -> &mut [u128] {
        let end = self.first + self.buckets * SLOTS;
        &mut self.slots[self.first..end]
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u128>()
    }

    #[inline]
    fn prefetch(&self, at: usize) {
        let bucket = self.bucket(at);
        // Both cache lines of the bucket (slots 0..4 and 4..8).
        crate::prefetch::prefetch(&bucket[0]);
        crate::prefetch::prefetch(&bucket[SLOTS / 2]);
    }
}

/// Whether a bucket holds `key`'s click.
#[inline]
fn holds(bucket: &[u128], key: Remembered) -> bool {
    // No early exit: eight compares without branches beat a loop. They
    // compare the high 64 bits, which are id bits only: another click
    // matches there once in 2^64, so the full compare (a 128-bit shift a
    // slot) runs only when the click is most likely there.
    let high = (key.0 >> 64) as u64;
    let maybe = bucket
        .iter()
        .fold(false, |maybe, &slot| maybe | ((slot >> 64) as u64 == high));
    maybe && bucket.iter().any(|&slot| Remembered(slot).same_click(key))
}

#[inline]
fn free_slot(bucket: &[u128]) -> Option<usize> {
    bucket.iter().position(|&slot| slot == 0)
}

/// Where a key sitting in bucket `at` of a table of `old` buckets goes in a
/// table of `new` buckets: the same choice (first or second) it occupied.
fn same_choice(slot: u128, at: usize, old: usize, new: usize) -> usize {
    let (first, second) = Remembered::windows(slot);
    if reduce(first, old) == at {
        reduce(first, new)
    } else {
        reduce(second, new)
    }
}

/// The bucket a window falls in, for a table of `buckets` buckets: the high
/// half of the product spreads the window's range evenly over any count.
#[inline]
fn reduce(window: u64, buckets: usize) -> usize {
    ((u128::from(window) * buckets as u128) >> 64) as usize
}

/// The set of remembered ids, each with the minute whose finality frees it.
///
/// Ids are 128-bit hashes; 104 of their bits identify a click here (two
/// clicks collide with odds of n²/2^105: below 10^-17 for ten million ids).
/// Forgetting scans the table, once per minute that turns final; in exchange
/// there is no second index and an id costs its 16 bytes plus the table's
/// slack (see the module docs).
pub struct SeenClicks {
    table: Table,
    /// Ids in `table` (the stash excluded).
    len: usize,
    /// Ids that found no place (see the module docs); almost always empty.
    stash: Vec<Remembered>,
    /// The latest `forget_before` minute.
    forgotten_before: i64,
    /// xorshift state that picks which resident a cuckoo move evicts, so
    /// that a walk does not cycle between the same few slots.
    victim_state: u64,
}

impl Default for SeenClicks {
    fn default() -> SeenClicks {
        SeenClicks::with_capacity(0)
    }
}

impl SeenClicks {
    /// An empty set with room for `ids` ids before it grows (a restart knows
    /// how many it will load, and skips the growths).
    pub fn with_capacity(ids: usize) -> SeenClicks {
        SeenClicks::empty(buckets_for(ids))
    }

    fn empty(buckets: usize) -> SeenClicks {
        SeenClicks {
            table: Table::new(buckets.max(MIN_BUCKETS)),
            len: 0,
            stash: Vec::new(),
            forgotten_before: i64::MIN,
            victim_state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Records `id` under `minute`. Returns `false` if the id was already
    /// there (its minute is then left as it was).
    pub fn insert(&mut self, id: u128, minute: i64) -> bool {
        let key = Remembered::new(id, minute);
        let (first, second) = self.choices(key);
        if holds(self.table.bucket(first), key)
            || holds(self.table.bucket(second), key)
            || (!self.stash.is_empty() && self.stash.iter().any(|s| s.same_click(key)))
        {
            return false;
        }
        if (self.len + 1) * 100 > self.slots() * MAX_LOAD_PERCENT {
            self.grow(grown(self.table.buckets));
        }
        if let Err(homeless) = self.place(key) {
            self.rehome(homeless);
        }
        true
    }

    /// Asks the CPU to bring `id`'s two buckets into cache (a hint: no
    /// effect on results). Issued a few clicks ahead of `insert`, it lets
    /// the cache misses of consecutive clicks overlap.
    #[inline]
    pub fn prefetch(&self, id: u128) {
        let (first, second) = self.choices(Remembered::new(id, 0));
        self.table.prefetch(first);
        self.table.prefetch(second);
    }

    /// Forgets the ids of every minute before `minute`. Returns how many.
    pub fn forget_before(&mut self, minute: i64) -> usize {
        // Nothing is before "no watermark", and the floor never moves back
        // (so the wrapped minute comparison only ever spans live minutes).
        if minute == i64::MIN || minute < self.forgotten_before {
            return 0;
        }
        self.forgotten_before = minute;
        let mut forgotten = 0;
        for slot in self.table.all_slots_mut() {
            if *slot != 0 && Remembered(*slot).kept_before(minute) {
                *slot = 0;
                forgotten += 1;
            }
        }
        self.len -= forgotten;
        let stashed = self.stash.len();
        self.stash.retain(|id| !id.kept_before(minute));
        forgotten += stashed - self.stash.len();
        if self.table.buckets > MIN_BUCKETS && self.len * 100 < self.slots() * SHRINK_LOAD_PERCENT {
            self.rebuild(buckets_for(self.len), None);
        }
        forgotten
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.len + self.stash.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the set holds on the heap (its table and stash).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.stash.capacity() * std::mem::size_of::<Remembered>()
    }

    fn slots(&self) -> usize {
        self.table.buckets * SLOTS
    }

    #[inline]
    fn choices(&self, key: Remembered) -> (usize, usize) {
        let (a, b) = Remembered::windows(key.0);
        (reduce(a, self.table.buckets), reduce(b, self.table.buckets))
    }

    /// Puts a key known to be absent into the table, moving residents to
    /// their other choice as needed. On failure returns the key left in hand
    /// (not necessarily `key`: every other key is then in the table).
    fn place(&mut self, key: Remembered) -> Result<(), Remembered> {
        let (first, _) = self.choices(key);
        self.place_from(key, first)
    }

    /// Like [`place`](Self::place), trying `bucket` (one of the key's
    /// choices) first.
    fn place_from(&mut self, key: Remembered, bucket: usize) -> Result<(), Remembered> {
        let (first, second) = self.choices(key);
        let other = if bucket == first { second } else { first };
        for at in [bucket, other] {
            if self.put(at, key) {
                return Ok(());
            }
        }
        // Both full: take a resident's slot, carry the resident to its other
        // choice, and so on until one has room.
        let (mut key, mut at) = (key, bucket);
        for _ in 0..MAX_MOVES {
            let victim = self.next_victim();
            let slot = &mut self.table.bucket_mut(at)[victim];
            key = Remembered(std::mem::replace(slot, key.0));
            let (first, second) = self.choices(key);
            at = if at == first { second } else { first };
            if self.put(at, key) {
                return Ok(());
            }
        }
        Err(key)
    }

    /// Puts `key` into a free slot of bucket `at`, if it has one.
    #[inline]
    fn put(&mut self, at: usize, key: Remembered) -> bool {
        let bucket = self.table.bucket_mut(at);
        match free_slot(bucket) {
            Some(slot) => {
                bucket[slot] = key.0;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Finds a place for a key no move sequence could fit: a bigger table
    /// if this one is full enough for that to be the cause, else the stash.
    fn rehome(&mut self, homeless: Remembered) {
        if self.len * 100 >= self.slots() * GROW_ON_FAILURE_PERCENT {
            self.rebuild(grown(self.table.buckets), Some(homeless));
        } else {
            self.stash.push(homeless);
        }
    }

    /// Grows the table in place to `buckets` buckets.
    ///
    /// Every key's bucket under the new count is at or after its bucket now
    /// (`reduce` is monotonic in the count), so going through the old
    /// buckets from the last one down, each key moves to a bucket that holds
    /// only keys already moved: the table never holds keys of two layouts
    /// in one bucket, and no second table is allocated. A key whose new
    /// bucket is full waits until every key has moved, then takes the usual
    /// way in. Writes stream backwards through the table.
    fn grow(&mut self, buckets: usize) {
        let old_buckets = self.table.buckets;
        self.table.extend(buckets);
        let mut waiting = Vec::new();
        for at in (0..old_buckets).rev() {
            let mut keys = [0u128; SLOTS];
            keys.copy_from_slice(self.table.bucket(at));
            self.table.bucket_mut(at).fill(0);
            for slot in keys.into_iter().filter(|&slot| slot != 0) {
                self.len -= 1;
                let moved_to = same_choice(slot, at, old_buckets, buckets);
                if !self.put(moved_to, Remembered(slot)) {
                    waiting.push(Remembered(slot));
                }
            }
        }
        for key in waiting {
            if let Err(homeless) = self.place(key) {
                self.stash.push(homeless);
            }
        }
    }

    /// Moves everything into a table of `buckets` buckets (plus `extra`).
    ///
    /// Old buckets are read in order and each key goes first to the same
    /// choice (first or second) it occupied, which scaled by the size ratio
    /// is about the same position: writes stream through the new table.
    fn rebuild(&mut self, buckets: usize, extra: Option<Remembered>) {
        let mut new = SeenClicks::empty(buckets);
        new.forgotten_before = self.forgotten_before;
        new.victim_state = self.victim_state;
        let (old_buckets, new_buckets) = (self.table.buckets, new.table.buckets);
        let mut homeless = Vec::new();
        for at in 0..old_buckets {
            for &slot in self.table.bucket(at) {
                if slot == 0 {
                    continue;
                }
                let start = same_choice(slot, at, old_buckets, new_buckets);
                if !new.put(start, Remembered(slot)) {
                    if let Err(left) = new.place_from(Remembered(slot), start) {
                        homeless.push(left);
                    }
                }
            }
        }
        for key in extra.into_iter().chain(self.stash.drain(..)) {
            if let Err(left) = new.place(key) {
                homeless.push(left);
            }
        }
        // The new table has room to spare: a key left over now has crowded
        // choices, and the stash is the place for it.
        new.stash = homeless;
        *self = new;
    }

    fn next_victim(&mut self) -> usize {
        let mut x = self.victim_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.victim_state = x;
        (x >> (64 - SLOTS.trailing_zeros())) as usize
    }
}

/// A bucket count whose fill after holding `ids` is the fill right after a
/// growth (so the table neither wastes memory nor grows at once).
fn buckets_for(ids: usize) -> usize {
    let slots = ids.saturating_mul(GROWTH_PERCENT) / MAX_LOAD_PERCENT;
    slots.div_ceil(SLOTS).max(MIN_BUCKETS)
}

fn grown(buckets: usize) -> usize {
    (buckets * GROWTH_PERCENT).div_ceil(100).max(MIN_BUCKETS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MINUTE_MS;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Ids equal in their high 64 bits (where lookups compare first) are
    /// still told apart by the id bits below them, and not by the minute.
    #[test]
    fn ids_sharing_their_high_half_stay_apart() {
        let mut seen = SeenClicks::default();
        let high = 0xDEAD_BEEF_u128 << 64;
        assert!(seen.insert(high | (1 << 40), 0));
        assert!(seen.insert(high | (1 << 41), 0));
        assert!(!seen.insert(high | (1 << 40), MINUTE_MS));
        assert!(!seen.insert(high | (1 << 41) | 5, 0));
        assert_eq!(seen.len(), 2);
    }

    /// Real ids are uniform hashes: spread small test ids likewise.
    fn spread(id: u128) -> u128 {
        id.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    }

    /// The oracle: id → the minute it was first recorded under, forgetting by
    /// the same rule, in a std map.
    #[derive(Default)]
    struct Oracle {
        ids: HashMap<u128, i64>,
        floor: i64,
    }

    impl Oracle {
        fn insert(&mut self, id: u128, minute: i64) -> bool {
            if self.ids.contains_key(&id) {
                return false;
            }
            self.ids.insert(id, minute);
            true
        }

        fn forget_before(&mut self, minute: i64) -> usize {
            if minute < self.floor {
                return 0;
            }
            self.floor = minute;
            let before = self.ids.len();
            self.ids.retain(|_, m| *m >= minute);
            before - self.ids.len()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { id: u128, minute: i64 },
        Forget { minute: i64 },
    }

    /// Mostly inserts over a pool of ids small enough to repeat, some
    /// forgetting; long enough runs to cross several growths (16 buckets
    /// hold 117 ids) and the shrink after a big forget.
    fn ops(pool: u128, len: usize) -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                30 => (0..pool, 0i64..12).prop_map(|(id, m)| Op::Insert { id, minute: m * MINUTE_MS }),
                1 => (0i64..12).prop_map(|m| Op::Forget { minute: m * MINUTE_MS }),
            ],
            0..len,
        )
    }

    fn run(
        ops: &[Op],
        pool: u128,
        mut seen: SeenClicks,
        id_of: impl Fn(u128) -> u128,
    ) -> Result<(), TestCaseError> {
        let mut oracle = Oracle::default();
        for op in ops {
            match *op {
                Op::Insert { id, minute } => {
                    prop_assert_eq!(
                        seen.insert(id_of(id), minute),
                        oracle.insert(id, minute),
                        "insert {:?}",
                        op
                    );
                }
                Op::Forget { minute } => {
                    prop_assert_eq!(
                        seen.forget_before(minute),
                        oracle.forget_before(minute),
                        "{:?}",
                        op
                    );
                }
            }
            prop_assert_eq!(seen.len(), oracle.ids.len());
        }
        // Every remembered id is still found, every forgotten one is not.
        for id in 0..pool {
            let fresh = !oracle.ids.contains_key(&id);
            prop_assert_eq!(
                seen.insert(id_of(id), oracle.floor),
                fresh,
                "final lookup of {}",
                id
            );
        }
        Ok(())
    }

    proptest! {
        /// Against the oracle: insert reports exactly the first sighting
        /// among ids not yet forgotten, and forgetting removes exactly the
        /// ids of earlier minutes, across growths and shrinks.
        #[test]
        fn matches_a_map_through_growths(ops in ops(2_000, 3_000)) {
            run(&ops, 2_000, SeenClicks::default(), spread)?;
        }

        /// The same with few distinct ids, so repeats and forgetting dominate.
        #[test]
        fn matches_a_map_with_many_repeats(ops in ops(40, 400)) {
            run(&ops, 40, SeenClicks::default(), spread)?;
        }

        /// Ids that share all bits the buckets are chosen by (so they all
        /// compete for the same two buckets, as only crafted hashes would):
        /// they overflow into the stash and are still exact.
        #[test]
        fn crowded_ids_go_to_the_stash_and_stay_exact(ops in ops(60, 600)) {
            run(&ops, 60, SeenClicks::default(), |id| (0xABCD_u128 << 100) | (id << MINUTE_BITS))?;
        }

        /// A set sized ahead holds the same answers.
        #[test]
        fn presized_matches_too(ops in ops(500, 800), capacity in 0usize..2_000) {
            run(&ops, 500, SeenClicks::with_capacity(capacity), spread)?;
        }
    }

    #[test]
    fn the_fill_stays_between_growths_bounds() {
        let mut seen = SeenClicks::default();
        let mut worst = 0.0f64;
        let mut best = f64::MAX;
        for i in 0..200_000u128 {
            assert!(seen.insert(spread(i), 0));
            if i >= 10_000 {
                let per_id = seen.heap_bytes() as f64 / seen.len() as f64;
                worst = worst.max(per_id);
                best = best.min(per_id);
            }
        }
        // 16 bytes per slot, filled between 92%/1.3 and 92%.
        assert!(worst <= 16.0 * 1.3 / 0.92 + 0.1, "worst {worst}");
        assert!(best >= 16.0 / 0.92 - 0.1, "best {best}");
        assert!(seen.stash.is_empty(), "uniform ids never need the stash");
    }

    #[test]
    fn a_zero_key_is_remembered() {
        let mut seen = SeenClicks::default();
        assert!(seen.insert(0, 0));
        assert!(!seen.insert(0, MINUTE_MS));
        assert!(
            !seen.insert(7, 0),
            "the minute bits are not part of the key"
        );
        assert_eq!(seen.len(), 1);
        assert_eq!(seen.forget_before(MINUTE_MS), 1);
        assert!(seen.insert(0, MINUTE_MS));
    }

    #[test]
    fn forgetting_a_big_minute_shrinks_the_table() {
        let mut seen = SeenClicks::default();
        for i in 0..100_000u128 {
            seen.insert(spread(i), if i < 1_000 { MINUTE_MS } else { 0 });
        }
        let full = seen.heap_bytes();
        assert_eq!(seen.forget_before(MINUTE_MS), 99_000);
        assert_eq!(seen.len(), 1_000);
        assert!(
            seen.heap_bytes() < full / 50,
            "{} of {full}",
            seen.heap_bytes()
        );
        for i in 0..100_000u128 {
            assert_eq!(seen.insert(spread(i), MINUTE_MS), i >= 1_000);
        }
    }
}
