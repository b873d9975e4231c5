//! What the next redb commit of a partition will write: everything the
//! batches since the last commit carried.

use crate::batch::{Batch, MinuteSnapshot};
use crate::click::{AdId, Filter, FilterKinds};
use crate::feed::{FeedItem, StoredTop};
use crate::reject::Rejected;
use crate::store::packed_counts::PackedCounts;

/// The state delta of one or more batches, committed in one transaction.
#[derive(Default)]
pub struct Checkpoint {
    /// Highest stream sequence applied.
    pub last_seq: u64,
    /// Watermark after the last batch.
    pub watermark: i64,
    /// Click ids to remember, packed per minute as the commit writes them.
    pub new_ids: NewIds,
    /// The totals the batches set, in order, packed as one count-log record
    /// (a counter changed twice appears twice: replaying in order leaves the
    /// later total, and appending costs less than merging); only the finest
    /// counters' where the counted filters allow it (see
    /// [`Checkpoint::logging_finest_only`]).
    pub log: PackedCounts,
    /// Whole minutes to write (see [`crate::reducer::snapshots`]).
    pub snapshots: Vec<MinuteSnapshot>,
    /// Whether a full snapshot was taken: log records of earlier commits can go.
    pub full_snapshot: bool,
    /// Extra-dimension values admitted, as (dimension, value).
    pub admitted: Vec<(String, String)>,
    /// Messages to republish on the rejected stream: written to the outbox by
    /// the commit, published after it.
    pub rejects: Vec<Rejected>,
    /// Outbox entries (by stream sequence) published since the last commit,
    /// to delete with the next one.
    pub published: Vec<u64>,
    /// Output-feed messages and counts publications: written to the feed
    /// outbox, published after the commit.
    pub feed: Vec<FeedItem>,
    /// Feed outbox entries (by first version) published since the last commit.
    pub feed_published: Vec<u64>,
    /// Final top-N to store.
    pub tops: Vec<StoredTop>,
    /// When the earliest absorbed batch that closed a minute was fetched.
    pub first_close_fetched_at: Option<std::time::Instant>,
    /// Batches folded in.
    pub batches: usize,
    /// Of those, batches that hold an ingest credit.
    pub credits: usize,
}

impl Checkpoint {
    /// A checkpoint that starts from the committed sequence and watermark.
    pub fn resume(last_seq: u64, watermark: i64) -> Checkpoint {
        Checkpoint {
            last_seq,
            watermark,
            ..Checkpoint::default()
        }
    }

    /// Logs only the finest counters of `kinds` (count-log layout 3, see
    /// [`crate::store::packed_counts`]), this checkpoint and the ones it
    /// hands on: a click then logs one total instead of one per counted
    /// filter, and recovery derives the coarser counters. `None` keeps
    /// every counter (layout 2), as where the counted filters have no finest
    /// one ([`FilterKinds::of`]).
    pub fn logging_finest_only(mut self, kinds: Option<FilterKinds>) -> Checkpoint {
        self.log = match kinds {
            Some(kinds) => PackedCounts::finest_only(kinds, 0),
            None => PackedCounts::default(),
        };
        self
    }

    /// Folds a batch's state deltas in (ids, increments, snapshots, …).
    /// Batches arrive in order, so its watermark is the newest.
    pub fn absorb(&mut self, batch: &mut Batch) {
        self.last_seq = self.last_seq.max(batch.delta.last_seq);
        self.watermark = self.watermark.max(batch.delta.watermark);
        self.new_ids.extend(&batch.delta.new_ids);
        batch.delta.new_ids.clear();
        self.log.push_increments(&batch.delta.increments);
        self.snapshots.append(&mut batch.delta.snapshots);
        self.full_snapshot |= batch.delta.full_snapshot;
        self.admitted.append(&mut batch.delta.admitted);
        self.rejects.append(&mut batch.delta.rejects);
        self.feed.append(&mut batch.delta.feed);
        if batch.control.closes_minute && self.first_close_fetched_at.is_none() {
            self.first_close_fetched_at = batch.control.fetched_at;
        }
        self.tops.append(&mut batch.delta.tops);
        self.batches += 1;
        self.credits += usize::from(batch.control.holds_credit);
    }

    /// Appends a counter's new total to the log record.
    pub fn log_total(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) {
        self.log.push(minute, ad, filter, total);
    }

    /// Whether no batch was folded in since the last commit.
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }

    /// Starts the next checkpoint, keeping the sequence and watermark reached.
    pub fn take(&mut self) -> Checkpoint {
        let mut next = Checkpoint::resume(self.last_seq, self.watermark);
        // Commits at a steady rate log similar amounts: start at the last
        // sizes (growing by doubling cost a realloc and a copy each time).
        let room = self.log.as_bytes().len();
        next.log = match self.log.logs_finest_only() {
            Some(kinds) => PackedCounts::finest_only(kinds, room),
            None => PackedCounts::with_capacity(room),
        };
        next.new_ids = NewIds::with_capacity(self.new_ids.len());
        std::mem::replace(self, next)
    }

    /// Notes outbox entries that JetStream has stored.
    pub fn mark_published(&mut self, seqs: impl IntoIterator<Item = u64>) {
        self.published.extend(seqs);
    }

    /// Notes feed outbox entries that JetStream has stored.
    pub fn mark_feed_published(&mut self, versions: impl IntoIterator<Item = u64>) {
        self.feed_published.extend(versions);
    }
}

/// Bytes a stored click id takes: the 104 bits of its 128-bit key that
/// dedup keeps (bits 24 to 127, see [`crate::dedup`]'s `SeenClicks`),
/// little-endian. The low 24 bits, which dedup never reads, are not stored.
pub const ID_BYTES: usize = 13;

/// Where a stored id starts in its key's 16 bytes (LE): past the 3 bytes
/// dedup never reads.
const ID_SKIPPED: usize = 16 - ID_BYTES;

/// An id as stored: its key's top [`ID_BYTES`] bytes.
#[inline]
pub fn stored_id(id: u128) -> [u8; ID_BYTES] {
    let mut out = [0; ID_BYTES];
    out.copy_from_slice(&id.to_le_bytes()[ID_SKIPPED..]);
    out
}

/// The key a stored id stands for, its unstored low bits 0: dedup takes it
/// for the same click.
#[inline]
pub fn id_of_stored(stored: &[u8]) -> u128 {
    let mut bytes = [0; 16];
    bytes[ID_SKIPPED..].copy_from_slice(&stored[..ID_BYTES]);
    u128::from_le_bytes(bytes)
}

/// A checkpoint's new click ids, packed per minute (the minute that frees
/// them) as `seen_ids` stores them: each id's [`ID_BYTES`], in arrival
/// order.
///
/// Packing them as they arrive, rather than keeping `(minute, id)` pairs
/// for the commit to sort out, writes each id once into 13 bytes instead of
/// 32 (the pair's alignment), and leaves the commit one copy per minute
/// instead of one pass over every id per minute.
#[derive(Default, Clone, Debug)]
pub struct NewIds {
    /// (minute, its ids packed), in the order their minutes first came.
    blocks: Vec<(i64, Vec<u8>)>,
    /// The block the last id went to: ids come in runs of one minute.
    last: usize,
    len: usize,
    /// Bytes the first block starts with room for.
    first_capacity: usize,
}

impl NewIds {
    /// Empty; the first minute's block starts with room for `ids` ids (a
    /// commit's ids are mostly of the open minute, and doubling through a
    /// large block costs a reallocation and a copy each time).
    pub fn with_capacity(ids: usize) -> NewIds {
        NewIds {
            first_capacity: ids * ID_BYTES,
            ..NewIds::default()
        }
    }

    /// Adds an id freed with `minute`.
    pub fn push(&mut self, minute: i64, id: u128) {
        let at = match self.blocks.get(self.last) {
            Some((m, _)) if *m == minute => self.last,
            // Few minutes are open at once: a scan, newest first.
            _ => match self.blocks.iter().rposition(|(m, _)| *m == minute) {
                Some(at) => at,
                None => {
                    let room = if self.blocks.is_empty() {
                        self.first_capacity
                    } else {
                        0
                    };
                    self.blocks.push((minute, Vec::with_capacity(room)));
                    self.blocks.len() - 1
                }
            },
        };
        self.last = at;
        self.blocks[at].1.extend_from_slice(&stored_id(id));
        self.len += 1;
    }

    /// Adds a batch's new ids, in order.
    pub fn extend(&mut self, ids: &[(i64, u128)]) {
        for (minute, id) in ids {
            self.push(*minute, *id);
        }
    }

    /// Ids added.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no id was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each minute's ids, packed, in the order the minutes first came.
    pub fn blocks(&self) -> impl Iterator<Item = (i64, &[u8])> {
        self.blocks.iter().map(|(m, ids)| (*m, ids.as_slice()))
    }

    /// Every id with its minute, as stored (low bits 0), minute by minute
    /// (what tests compare; the commit copies the blocks whole).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (i64, u128)> + '_ {
        self.blocks().flat_map(|(minute, ids)| {
            ids.chunks_exact(ID_BYTES)
                .map(move |id| (minute, id_of_stored(id)))
        })
    }
}

/// Tests build a checkpoint's ids from pairs; the pipeline pushes them.
#[cfg(test)]
impl FromIterator<(i64, u128)> for NewIds {
    fn from_iter<T: IntoIterator<Item = (i64, u128)>>(ids: T) -> NewIds {
        let mut out = NewIds::default();
        for (minute, id) in ids {
            out.push(minute, id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the interleaving of minutes, each minute's block holds
        /// its ids in arrival order, and the blocks come in the order their
        /// minutes first came.
        #[test]
        fn ids_are_packed_per_minute_in_arrival_order(
            ids in prop::collection::vec((0i64..20, any::<u128>()), 0..300),
            capacity in 0usize..100,
        ) {
            let mut packed = NewIds::with_capacity(capacity);
            packed.extend(&ids);
            let mut minutes: Vec<i64> = Vec::new();
            for (minute, _) in &ids {
                if !minutes.contains(minute) {
                    minutes.push(*minute);
                }
            }
            // Stored without the 24 low bits dedup never reads.
            let expected: Vec<(i64, u128)> = minutes
                .iter()
                .flat_map(|m| ids.iter().filter(move |(minute, _)| minute == m).copied())
                .map(|(minute, id)| (minute, id & !0xFF_FFFF))
                .collect();
            prop_assert_eq!(packed.len(), ids.len());
            prop_assert_eq!(packed.iter().collect::<Vec<_>>(), expected);
            let block_minutes: Vec<i64> = packed.blocks().map(|(m, _)| m).collect();
            prop_assert_eq!(block_minutes, minutes);
            prop_assert!(packed.blocks().all(|(_, ids)| ids.len() % ID_BYTES == 0 && !ids.is_empty()));
        }
    }

    #[test]
    fn an_id_is_its_top_13_bytes_little_endian() {
        let mut packed = NewIds::default();
        let id = 0x0102_u128 << 24 | 0xAB_CDEF;
        packed.push(60_000, id);
        let blocks: Vec<(i64, &[u8])> = packed.blocks().collect();
        let mut expected = [0u8; ID_BYTES];
        expected[..2].copy_from_slice(&[0x02, 0x01]);
        assert_eq!(blocks, vec![(60_000, &expected[..])]);
        assert_eq!(id_of_stored(&expected), id & !0xFF_FFFF);
        let top = u128::MAX << 24;
        assert_eq!(id_of_stored(&stored_id(top | 7)), top);
    }
}
