//! The unit that travels the chain. One `Batch` is also one checkpoint
//! barrier: each actor adds the state delta the writer must commit with it.

use crate::ack::AckAll;
use crate::click::{AdId, Click, Filter};
use crate::feed::{FeedItem, StoredTop};
use crate::reject::Rejected;
use crate::store::packed_minute::PackedMinute;
use bytes::Bytes;
use ractor::ActorRef;
use tokio::sync::oneshot;

/// `n` more clicks for one ad, minute and filter, with the counter's total:
/// one increment of [`Increments`] on its own (what recovery reads back
/// from the count log and snapshots, and what tests build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Increment {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// The ad.
    pub ad: AdId,
    /// The filter the count is kept under.
    pub filter: Filter,
    /// How many clicks to add.
    pub count: u64,
    /// The counter's total (see [`FilterIncrement::total`]).
    pub total: u64,
}

/// A batch's increments, grouped by (ad, minute): each group's ad and
/// minute once, then its filters' counts together. What the window folds
/// and the reducer, the snapshots and the checkpoint read.
///
/// Grouped because a click makes ~3 increments of one (ad, minute) with the
/// default filters: each group holds the 65-byte ad id and the minute once,
/// so an increment is 40 bytes (112 as a lone [`Increment`]), and readers
/// take the groups as given instead of finding one ad's runs by comparing ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Increments {
    groups: Vec<IncrementGroup>,
    counts: Vec<FilterIncrement>,
}

/// One (ad, minute) of [`Increments`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementGroup {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// The ad.
    pub ad: AdId,
    /// Where the group's counts start in [`Increments`]' counts (they end
    /// where the next group's start).
    start: u32,
}

/// `count` more clicks under one filter, in an [`IncrementGroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterIncrement {
    /// The filter the count is kept under.
    pub filter: Filter,
    /// How many clicks to add.
    pub count: u64,
    /// The counter's total once this increment is added: set by the
    /// reducer, and what the writer stores (so a commit writes totals,
    /// never reads).
    pub total: u64,
}

impl Increments {
    /// Empty, with room for `groups` groups and `counts` counts.
    pub fn with_capacity(groups: usize, counts: usize) -> Increments {
        Increments {
            groups: Vec::with_capacity(groups),
            counts: Vec::with_capacity(counts),
        }
    }

    /// Starts a group: the counts pushed next are its. (A batch holds at
    /// most a few counts per click: far below `u32::MAX`.)
    pub fn start_group(&mut self, minute: i64, ad: AdId) {
        debug_assert!(self.counts.len() < u32::MAX as usize);
        self.groups.push(IncrementGroup {
            minute,
            ad,
            start: self.counts.len() as u32,
        });
    }

    /// Adds a count to the last group started (there must be one).
    #[inline]
    pub fn push(&mut self, filter: Filter, count: u64) {
        debug_assert!(!self.groups.is_empty(), "a count outside any group");
        self.counts.push(FilterIncrement {
            filter,
            count,
            total: 0,
        });
    }

    /// Adds one increment, in a new group unless it has the last group's
    /// (ad, minute).
    pub fn push_increment(&mut self, delta: &Increment) {
        match self.groups.last() {
            Some(g) if g.minute == delta.minute && g.ad == delta.ad => {}
            _ => self.start_group(delta.minute, delta.ad),
        }
        self.push(delta.filter, delta.count);
        if let Some(last) = self.counts.last_mut() {
            last.total = delta.total;
        }
    }

    /// The number of increments (counters touched).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether there is no increment.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The groups with their counts, in order.
    pub fn groups(&self) -> impl Iterator<Item = (&IncrementGroup, &[FilterIncrement])> + '_ {
        let ends = self.groups.iter().skip(1).map(|g| g.start as usize);
        let ends = ends.chain([self.counts.len()]);
        (self.groups.iter().zip(ends)).map(|(g, end)| (g, &self.counts[g.start as usize..end]))
    }

    /// The groups alone, in order.
    pub fn group_heads(&self) -> &[IncrementGroup] {
        &self.groups
    }

    /// Every count in order (their groups given by [`Increments::groups`]).
    pub fn counts_mut(&mut self) -> &mut [FilterIncrement] {
        &mut self.counts
    }

    /// Each increment as a [`Increment`] (a copy: for tests and cold paths).
    pub fn iter(&self) -> impl Iterator<Item = Increment> + '_ {
        self.groups().flat_map(|(g, counts)| {
            counts.iter().map(move |c| Increment {
                minute: g.minute,
                ad: g.ad,
                filter: c.filter,
                count: c.count,
                total: c.total,
            })
        })
    }

    /// Empties, keeping the memory.
    pub fn clear(&mut self) {
        self.groups.clear();
        self.counts.clear();
    }
}

impl FromIterator<Increment> for Increments {
    /// Groups runs of one (ad, minute), in order.
    fn from_iter<I: IntoIterator<Item = Increment>>(deltas: I) -> Increments {
        let mut out = Increments::default();
        for d in deltas {
            out.push_increment(&d);
        }
        out
    }
}

/// Every counter of one minute, packed (see [`crate::store::packed_minute`]):
/// written whole, it makes the count log's older totals of that minute moot.
#[derive(Debug, Clone)]
pub struct MinuteSnapshot {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// The minute's counters.
    pub packed: PackedMinute,
}

/// A run of consecutive messages of one partition, and what each stage made
/// of it. Three kinds of thing travel together, and the types say which:
/// the [`Control`] of the run (credits, acks, drains, timing), its data (the
/// clicks still to be dealt with), and the [`CheckpointDelta`] each stage
/// adds to, which the writer commits with the batch in one transaction: a
/// batch is also a checkpoint barrier.
#[derive(Default)]
pub struct Batch {
    /// Where the run came from, and what its commit must set off.
    pub control: Control,
    /// Valid clicks not yet dealt with. Dedup marks repeats
    /// ([`Click::repeat`]); window turns the rest into increments or rejects
    /// and empties it.
    pub clicks: Vec<Click>,
    /// The payload of each click, at the click's index in `clicks` (moved
    /// from its message, never cloned): kept so that a too-late click can be
    /// republished as it came. Kept apart so that a click moves 32 bytes
    /// less and takes no reference count.
    pub payloads: Vec<Bytes>,
    /// What the writer commits with the batch.
    pub delta: CheckpointDelta,
}

/// A batch's control: nothing of it is committed.
#[derive(Default)]
pub struct Control {
    /// Whether this batch holds one of ingest's in-flight credits, returned
    /// by the writer once the batch is committed.
    pub holds_credit: bool,
    /// Messages consumed from JetStream for this batch (including skipped ones).
    pub consumed: usize,
    /// Set when the partition was idle: the wall-clock time the watermark may follow.
    pub idle_tick: Option<i64>,
    /// Acknowledges every message up to the highest stream sequence the
    /// batch delivered (AckAll), after the commit.
    pub ack: Option<AckAll>,
    /// Set by dedup: repeats it dropped (for metrics).
    pub duplicates: usize,
    /// When ingest received the batch's messages (or decided its idle tick):
    /// the start of the freshness metrics.
    pub fetched_at: Option<std::time::Instant>,
    /// Set by window when the batch closed at least one minute (its commit
    /// does not wait for the interval).
    pub closes_minute: bool,
    /// Set on the last batch of a drain: answered once it is committed.
    pub flush: Option<oneshot::Sender<()>>,
}

/// The state a batch changes, as each stage adds it: what the writer commits
/// with the batch, in one transaction, so the file always holds what some
/// prefix of the stream produced.
#[derive(Default)]
pub struct CheckpointDelta {
    /// Set by ingest: the highest stream sequence in the batch; 0 when it has
    /// no message.
    pub last_seq: u64,
    /// Added by ingest, then window: messages that will not be counted,
    /// bound for the rejected stream (through the outbox).
    pub rejects: Vec<Rejected>,
    /// Added by ingest: extra-dimension values admitted by this batch's
    /// clicks, as (dimension, value).
    pub admitted: Vec<(String, String)>,
    /// Added by dedup: click ids first seen in this batch, with their minute.
    pub new_ids: Vec<(i64, u128)>,
    /// Added by window: count increments, grouped by (ad, minute); the
    /// reducer sets each one's total.
    pub increments: Increments,
    /// Set by window: the watermark after this batch.
    pub watermark: i64,
    /// Added by reducer: output-feed messages this batch caused (minutes
    /// closed, corrected or turned final).
    pub feed: Vec<FeedItem>,
    /// Added by reducer: final top-N to store.
    pub tops: Vec<StoredTop>,
    /// Added by reducer: snapshots of minutes whose counters the count log
    /// holds (see [`crate::reducer::snapshots`]).
    pub snapshots: Vec<MinuteSnapshot>,
    /// Set by reducer when `snapshots` covers every minute the count log
    /// holds: older log records can go.
    pub full_snapshot: bool,
}

/// Where a stage hands its batches on: the next stage of the partition's
/// chain, as the partition supervisor wired it. A stage never names the
/// stage after it, so each one reads, tests and changes alone.
pub struct NextStage {
    send: Box<dyn Fn(Box<Batch>) -> Result<(), NextStageGone> + Send + Sync>,
}

/// The next stage has stopped (its chain is being rebuilt).
#[derive(Debug, thiserror::Error)]
#[error("the next stage of the partition's chain has stopped")]
pub struct NextStageGone;

impl NextStage {
    /// Batches go to the actor `to`, wrapped in its message by `wrap`.
    pub fn actor<M: ractor::Message>(to: ActorRef<M>, wrap: fn(Box<Batch>) -> M) -> NextStage {
        NextStage {
            send: Box::new(move |batch| to.cast(wrap(batch)).map_err(|_| NextStageGone)),
        }
    }

    /// Hands `batch` on.
    pub fn send(&self, batch: Box<Batch>) -> Result<(), NextStageGone> {
        (self.send)(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::click::Country;

    fn delta(minute: i64, ad: &str, country: Option<&str>, count: u64) -> Increment {
        Increment {
            minute,
            ad: AdId::parse(ad).unwrap(),
            filter: Filter {
                country: country.and_then(Country::parse),
                ..Filter::ALL
            },
            count,
            total: 0,
        }
    }

    #[test]
    fn runs_of_one_ad_and_minute_make_one_group_each() {
        let empty = Increments::default();
        assert!(empty.is_empty());
        assert_eq!(empty.groups().count(), 0);
        assert_eq!(empty.iter().count(), 0);

        let deltas = vec![
            delta(0, "a", None, 1),
            delta(0, "a", Some("US"), 2),
            delta(0, "b", None, 3),
            // The same ad in another minute, then back: new groups each time.
            delta(60_000, "b", None, 4),
            delta(0, "a", Some("DE"), 5),
        ];
        let increments: Increments = deltas.iter().copied().collect();
        assert_eq!(increments.len(), 5);
        assert_eq!(increments.group_heads().len(), 4);
        let groups: Vec<(i64, String, Vec<u64>)> = increments
            .groups()
            .map(|(g, counts)| {
                let counts = counts.iter().map(|c| c.count).collect();
                (g.minute, g.ad.as_str().to_string(), counts)
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                (0, "a".to_string(), vec![1, 2]),
                (0, "b".to_string(), vec![3]),
                (60_000, "b".to_string(), vec![4]),
                (0, "a".to_string(), vec![5]),
            ]
        );
        assert_eq!(increments.iter().collect::<Vec<_>>(), deltas);
    }
}
