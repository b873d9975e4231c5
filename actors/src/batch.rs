//! The unit that travels the chain. One `Batch` is also one checkpoint
//! barrier: each actor adds the state delta the writer must commit with it.

use crate::click::{AdId, Click, Filter};
use crate::reducer::aggregate_feed::{FeedItem, StoredTop};
use crate::reject::Rejected;
use crate::writer::packed_minute::PackedMinute;
use async_nats::jetstream::message::Acker;
use bytes::Bytes;
use tokio::sync::oneshot;

/// `n` more clicks for one ad, minute and filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountDelta {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// The ad.
    pub ad: AdId,
    /// The filter the count is kept under.
    pub filter: Filter,
    /// How many clicks to add.
    pub count: u64,
    /// The counter's total once this increment is added: set by the reducer,
    /// and what the writer stores (so a commit writes totals, never reads).
    pub total: u64,
}

/// Every counter of one minute, packed (see [`crate::writer::packed_minute`]):
/// written whole, it makes the count log's older totals of that minute moot.
#[derive(Debug, Clone)]
pub struct MinuteSnapshot {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// The minute's counters.
    pub packed: PackedMinute,
}

/// A run of consecutive messages of one partition, and what each stage made of it.
#[derive(Default)]
pub struct Batch {
    /// Whether this batch holds one of ingest's in-flight credits, returned
    /// by the writer once the batch is committed.
    pub holds_credit: bool,
    /// Messages consumed from JetStream for this batch (including skipped ones).
    pub consumed: usize,
    /// Highest stream sequence in the batch; 0 when it has no message.
    pub last_seq: u64,
    /// Valid clicks not yet dealt with. Dedup marks repeats
    /// ([`Click::repeat`]); window turns the rest into `deltas` or rejects
    /// and empties it.
    pub clicks: Vec<Click>,
    /// The payload of each click, at the click's index in `clicks` (moved
    /// from its message, never cloned): kept so that a too-late click can be
    /// republished as it came. Kept apart so that a click moves 32 bytes
    /// less and takes no reference count.
    pub payloads: Vec<Bytes>,
    /// Messages that will not be counted, bound for the rejected stream.
    pub rejects: Vec<Rejected>,
    /// Added by ingest: extra-dimension values admitted by this batch's
    /// clicks, as (dimension, value), committed with its counts.
    pub admitted: Vec<(String, String)>,
    /// Set when the partition was idle: the wall-clock time the watermark may follow.
    pub idle_tick: Option<i64>,
    /// Acknowledges every message up to `last_seq` (AckAll), after the commit.
    pub ack: Option<Acker>,
    /// Added by dedup: click ids first seen in this batch, with their minute.
    pub new_ids: Vec<(i64, u128)>,
    /// Duplicates dedup dropped (for metrics).
    pub duplicates: usize,
    /// Added by window: count increments.
    pub deltas: Vec<CountDelta>,
    /// Added by window: the watermark after this batch.
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
    /// When ingest received the batch's messages (or decided its idle tick):
    /// the start of the freshness metrics.
    pub fetched_at: Option<std::time::Instant>,
    /// Set by window when the batch closed at least one minute.
    pub closes_minute: bool,
    /// Set on the last batch of a drain: answered once it is committed.
    pub flush: Option<oneshot::Sender<()>>,
}
