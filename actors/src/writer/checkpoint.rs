//! What the next redb commit of a partition will write: everything the
//! batches since the last commit carried.

use crate::batch::{Batch, CountDelta};
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::reducer::aggregate_feed::{FeedMessage, StoredTop};
use crate::reject::Rejected;

/// The state delta of one or more batches, committed in one transaction.
#[derive(Default)]
pub struct Checkpoint {
    /// Highest stream sequence applied.
    pub last_seq: u64,
    /// Watermark after the last batch.
    pub watermark: i64,
    /// Click ids to remember, with their minute.
    pub new_ids: Vec<(i64, u128)>,
    /// The latest total per (minute, ad, filter) the batches changed.
    pub counts: FastMap<(i64, AdId, Filter), u64>,
    /// Extra-dimension values admitted, as (dimension, value).
    pub admitted: Vec<(String, String)>,
    /// Messages to republish on the rejected stream: written to the outbox by
    /// the commit, published after it.
    pub rejects: Vec<Rejected>,
    /// Outbox entries (by stream sequence) published since the last commit,
    /// to delete with the next one.
    pub published: Vec<u64>,
    /// Output-feed messages: written to the feed outbox, published after the commit.
    pub feed: Vec<FeedMessage>,
    /// Feed outbox entries (by version) published since the last commit.
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
        // Batches arrive in order: a later total replaces an earlier one.
        for CountDelta {
            minute,
            ad,
            filter,
            total,
            ..
        } in batch.deltas.drain(..)
        {
            self.counts.insert((minute, ad, filter), total);
        }
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

    /// Whether no batch was folded in since the last commit.
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }

    /// Starts the next checkpoint, keeping the sequence and watermark reached.
    pub fn take(&mut self) -> Checkpoint {
        let next = Checkpoint::resume(self.last_seq, self.watermark);
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
