//! What the next redb commit of a partition will write: everything the
//! batches since the last commit carried.

use crate::batch::{Batch, MinuteSnapshot};
use crate::click::{AdId, Filter};
use crate::reducer::aggregate_feed::{FeedItem, StoredTop};
use crate::reject::Rejected;
use crate::writer::packed_counts::PackedCounts;

/// The state delta of one or more batches, committed in one transaction.
#[derive(Default)]
pub struct Checkpoint {
    /// Highest stream sequence applied.
    pub last_seq: u64,
    /// Watermark after the last batch.
    pub watermark: i64,
    /// Click ids to remember, with their minute.
    pub new_ids: Vec<(i64, u128)>,
    /// The totals the batches set, in order, packed as one count-log record
    /// (a counter changed twice appears twice: replaying in order leaves the
    /// later total, and appending costs less than merging).
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

    /// Folds a batch's deltas in. Batches arrive in order, so its watermark is the newest.
    pub fn absorb(&mut self, batch: &mut Batch) {
        self.last_seq = self.last_seq.max(batch.last_seq);
        self.watermark = self.watermark.max(batch.watermark);
        self.new_ids.append(&mut batch.new_ids);
        self.log.push_deltas(&batch.deltas);
        self.snapshots.append(&mut batch.snapshots);
        self.full_snapshot |= batch.full_snapshot;
        self.admitted.append(&mut batch.admitted);
        self.rejects.append(&mut batch.rejects);
        self.feed.append(&mut batch.feed);
        if batch.closes_minute && self.first_close_fetched_at.is_none() {
            self.first_close_fetched_at = batch.fetched_at;
        }
        self.tops.append(&mut batch.tops);
        self.batches += 1;
        self.credits += usize::from(batch.holds_credit);
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
        next.log = PackedCounts::with_capacity(self.log.as_bytes().len());
        next.new_ids = Vec::with_capacity(self.new_ids.len());
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
