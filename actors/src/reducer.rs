//! Reducer: holds the partition's minute counts in memory, answers the
//! gateway's queries (counts and top-N over any range), and passes batches to
//! the writer. Minutes older than the in-memory span are read from redb.

pub mod ad_slots;
pub mod aggregate_feed;
pub mod counter_table;
pub mod minute_counts;
pub mod snapshots;
pub mod top_n;
pub mod window_sums;

use crate::batch::{Batch, Increments};
use crate::click::{AdId, Filter, FilterQuery};
use crate::partition::directory::PartitionSlot;
use crate::settings::PipelineSettings;
use crate::telemetry::PartitionMeters;
use crate::time::{now_ms, MINUTE_MS};
use crate::window::event_clock::{closed_until, final_until, NO_WATERMARK};
use crate::writer::store::PartitionStore;
use crate::writer::WriterMsg;
use aggregate_feed::{AggregateFeed, CountersPacker, FeedItem, Publication, StoredTop};
use minute_counts::{split_at_floor, MinuteCounts};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use snapshots::MinuteSnapshots;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use window_sums::WindowSums;

/// Clicks of one ad in a range of minutes.
#[derive(Clone, Debug)]
pub struct CountQuery {
    /// The ad.
    pub ad: AdId,
    /// The filter, as asked (resolved by the partition).
    pub filter: FilterQuery,
    /// First minute, epoch ms (inclusive).
    pub from: i64,
    /// End, epoch ms (exclusive).
    pub to: i64,
}

/// The most clicked ads of a partition in a range of minutes.
#[derive(Clone, Debug)]
pub struct TopQuery {
    /// The filter, as asked (resolved by the partition).
    pub filter: FilterQuery,
    /// First minute, epoch ms (inclusive).
    pub from: i64,
    /// End, epoch ms (exclusive).
    pub to: i64,
    /// How many ads.
    pub n: usize,
}

/// A partition's answer, with the watermark it was computed at.
#[derive(Clone, Debug)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// The partition's watermark when answering.
    pub watermark: i64,
}

/// Where a top-N answer goes: ads with their counts, ranked.
pub type TopReply = RpcReplyPort<Result<Answer<Vec<(AdId, u64)>>, String>>;

/// Messages to the reducer.
pub enum ReducerMsg {
    /// A batch from the window.
    Batch(Box<Batch>),
    /// A count query from the gateway.
    Count(CountQuery, RpcReplyPort<Result<Answer<u64>, String>>),
    /// A top-N query from the gateway.
    Top(TopQuery, TopReply),
}

/// What the reducer starts from.
pub struct ReducerArgs {
    /// The partition number (for feed subjects).
    pub partition: u32,
    /// The last committed output-feed version.
    pub feed_version: u64,
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// Where batches go.
    pub next: ActorRef<WriterMsg>,
    /// The partition's file, for minutes no longer in memory.
    pub store: Arc<PartitionStore>,
    /// Counts recovered from the checkpoint.
    pub counts: MinuteCounts,
    /// Minutes whose totals recovery read from the count log.
    pub logged_minutes: Vec<i64>,
    /// How many totals recovery replayed from the count log.
    pub logged_totals: usize,
    /// Watermark at the last checkpoint.
    pub watermark: i64,
    /// Watermark of the last finished commit (written by the writer).
    pub committed_watermark: Arc<AtomicI64>,
    /// Where the gateway reads the partition's watermark.
    pub slot: Arc<PartitionSlot>,
    /// Metric handles.
    pub meters: PartitionMeters,
}

/// The reducer actor.
pub struct ReducerActor;

/// The reducer's running state.
pub struct ReducerState {
    args: ReducerArgs,
    watermark: i64,
    feed: AggregateFeed,
    /// Totals of the configured windows ending with the latest closed minute,
    /// and (`previous`) with the one before, for partitions a little behind.
    latest: Vec<WindowSums>,
    previous: Vec<WindowSums>,
    /// Totals of the same windows ending with the latest final minute: the
    /// top-N stored and published when a minute turns final.
    finals: Vec<WindowSums>,
    /// Which minutes the count log holds, and when to snapshot them.
    snapshots: MinuteSnapshots,
}

impl Actor for ReducerActor {
    type Msg = ReducerMsg;
    type State = ReducerState;
    type Arguments = ReducerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReducerMsg>,
        mut args: ReducerArgs,
    ) -> Result<ReducerState, ActorProcessingErr> {
        args.slot.set_watermark(args.watermark);
        let windows: Vec<WindowSums> = args
            .settings
            .feed
            .top_windows
            .iter()
            .map(|w| WindowSums::new(*w))
            .collect();
        let (mut latest, mut finals) = (windows.clone(), windows);
        if args.watermark != NO_WATERMARK {
            let lateness = args.settings.allowed_lateness_ms;
            for sums in &mut latest {
                sums.advance(&args.counts, closed_until(args.watermark) - MINUTE_MS);
            }
            for sums in &mut finals {
                sums.advance(
                    &args.counts,
                    final_until(args.watermark, lateness) - MINUTE_MS,
                );
            }
        }
        Ok(ReducerState {
            snapshots: MinuteSnapshots::resumed(
                args.settings.snapshot_log_floor,
                std::mem::take(&mut args.logged_minutes),
                args.logged_totals,
            ),
            finals,
            latest,
            previous: Vec::new(),
            watermark: args.watermark,
            feed: AggregateFeed::new(
                args.partition,
                args.feed_version,
                args.settings.feed.max_payload,
            ),
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReducerMsg>,
        message: ReducerMsg,
        state: &mut ReducerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReducerMsg::Batch(mut batch) => {
                state.apply(&mut batch)?;
                if let Some(fetched) = batch.fetched_at {
                    state
                        .args
                        .meters
                        .consumed_to_queryable
                        .record(fetched.elapsed().as_secs_f64());
                }
                state.args.next.cast(WriterMsg::Batch(batch))?;
            }
            ReducerMsg::Count(query, reply) => {
                let answer = state.count(&query).map(|value| Answer {
                    value,
                    watermark: state.watermark,
                });
                // The asker may have timed out; nothing to do then.
                let _ = reply.send(answer);
            }
            ReducerMsg::Top(query, reply) => {
                let answer = state.top(&query).map(|value| Answer {
                    value,
                    watermark: state.watermark,
                });
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

impl ReducerState {
    fn apply(&mut self, batch: &mut Batch) -> Result<(), String> {
        let before = self.watermark;
        self.args.counts.apply_all(&mut batch.increments);
        self.watermark = self.watermark.max(batch.watermark);
        self.move_windows(&batch.increments, before);
        self.publish(batch, before)?;
        let lateness = self.args.settings.allowed_lateness_ms;
        self.snapshots.after_batch(
            &self.args.counts,
            batch,
            final_until(before, lateness),
            final_until(self.watermark, lateness),
        );
        let counts = &mut self.args.counts;
        self.args.slot.set_watermark(self.watermark);
        if self.watermark != NO_WATERMARK {
            self.args
                .meters
                .watermark_lag
                .set((now_ms() - self.watermark) as f64 / 1000.0);
        }
        // Evict only what is committed, final, and older than the memory span.
        let committed = self.args.committed_watermark.load(Ordering::Acquire);
        if committed != NO_WATERMARK {
            let settings = &self.args.settings;
            let keep_from = closed_until(committed)
                .saturating_sub(settings.memory_minutes.saturating_mul(MINUTE_MS));
            let evict_before = keep_from.min(final_until(committed, settings.allowed_lateness_ms));
            counts.evict_before(evict_before);
        }
        Ok(())
    }

    /// Keeps the running window totals current: late clicks first (against
    /// the windows as they were), then the move to the newest closed minute.
    fn move_windows(&mut self, increments: &Increments, before: i64) {
        for sums in self.latest.iter_mut().chain(self.previous.iter_mut()) {
            sums.correct(increments);
        }
        let after = self.watermark;
        if after == NO_WATERMARK {
            return;
        }
        let lateness = self.args.settings.allowed_lateness_ms;
        if final_until(after, lateness) != final_until(before, lateness) {
            let end = final_until(after, lateness) - MINUTE_MS;
            for sums in &mut self.finals {
                sums.advance(&self.args.counts, end);
            }
        }
        if closed_until(after) == closed_until(before) {
            return;
        }
        self.previous = self.latest.clone();
        let end = closed_until(after) - MINUTE_MS;
        for sums in &mut self.latest {
            sums.advance(&self.args.counts, end);
        }
    }

    /// Adds to the batch the feed messages and stored top-N it causes: the
    /// minutes it closed, the closed minutes its late clicks corrected, and
    /// the minutes it made final (see [`aggregate_feed`]).
    fn publish(&mut self, batch: &mut Batch, before: i64) -> Result<(), String> {
        let after = self.watermark;
        let lateness = self.args.settings.allowed_lateness_ms;
        let feed_on = self.args.settings.feed.enabled;
        let floor = |t: i64| if t == NO_WATERMARK { i64::MIN } else { t };
        let (closed_before, closed_after) =
            (floor(closed_until(before)), floor(closed_until(after)));
        let (final_before, final_after) = (
            floor(final_until(before, lateness)),
            floor(final_until(after, lateness)),
        );
        let mut items = Vec::new();
        if feed_on {
            // Corrections: counters of minutes closed before this batch, with
            // the totals the counts just set (a batch has one increment per
            // counter: the window folds it).
            let mut corrected: Vec<_> = batch
                .increments
                .groups()
                .filter(|(g, _)| g.minute < closed_before)
                .collect();
            corrected.sort_by_key(|(g, _)| g.minute);
            for minute in corrected.chunk_by(|a, b| a.0.minute == b.0.minute) {
                let mut packer = CountersPacker::default();
                for (g, counts) in minute {
                    for c in *counts {
                        packer.push(&g.ad, &c.filter, c.total);
                    }
                }
                items.push(FeedItem::Counts(self.feed.counts(
                    minute[0].0.minute,
                    Publication::Correction,
                    packer,
                )));
            }
        }
        let counts = &self.args.counts;
        let closed = counts.minutes_within(closed_before, closed_after);
        let finals = counts.minutes_within(final_before, final_after);
        let windows = self.args.settings.feed.top_windows.clone();
        let n = self.args.settings.feed.top_n;
        for minute in closed {
            if !feed_on {
                break;
            }
            // Packed as memory lists them: the publisher sorts and renders
            // them after the commit (see `aggregate_feed`).
            let mut packer = CountersPacker::default();
            self.args
                .counts
                .for_each_counter_of(minute, |ad, filter, count| packer.push(ad, filter, count));
            items.push(FeedItem::Counts(self.feed.counts(
                minute,
                Publication::Close,
                packer,
            )));
            for &window in &windows {
                let top = self.window_top(window, minute, n)?;
                items.push(FeedItem::Message(self.feed.top(
                    window,
                    minute,
                    Publication::Close,
                    &top,
                )));
            }
        }
        for minute in finals {
            if feed_on {
                let counters = self.args.counts.counters_in(minute);
                items.push(FeedItem::Message(self.feed.final_marker(minute, counters)));
            }
            for &window in &windows {
                let ads = self.window_top(window, minute, n)?;
                if feed_on {
                    items.push(FeedItem::Message(self.feed.top(
                        window,
                        minute,
                        Publication::Final,
                        &ads,
                    )));
                }
                batch.tops.push(StoredTop {
                    window,
                    minute,
                    ads,
                });
            }
        }
        batch.feed = items;
        Ok(())
    }

    /// The top `n` over all clicks of the `window` minutes ending with `minute`.
    fn window_top(
        &mut self,
        window: i64,
        minute: i64,
        n: usize,
    ) -> Result<Vec<(AdId, u64)>, String> {
        self.top_of(
            Filter::ALL,
            minute - (window - 1) * MINUTE_MS,
            minute + MINUTE_MS,
            n,
        )
    }

    fn count(&self, q: &CountQuery) -> Result<u64, String> {
        // A value no partition ever stored has no clicks here.
        let Some(filter) = q.filter.resolve() else {
            return Ok(0);
        };
        let counts = &self.args.counts;
        let (stored, in_memory) = split_at_floor(q.from, q.to, counts.floor());
        let from_store = self
            .args
            .store
            .read_count(&q.ad, &filter, stored.0, stored.1)
            .map_err(|e| e.to_string())?;
        Ok(from_store + counts.count(&q.ad, &filter, in_memory.0, in_memory.1))
    }

    fn top(&mut self, q: &TopQuery) -> Result<Vec<(AdId, u64)>, String> {
        // A value no partition ever stored has no clicks here. A query that
        // names no dimension resolves to `Filter::ALL`, the filter the running
        // window sums and the stored top-N serve.
        let Some(filter) = q.filter.resolve() else {
            return Ok(Vec::new());
        };
        self.top_of(filter, q.from, q.to, q.n)
    }

    /// The top `n` ads of `filter` over [`from`, `to`): from the running
    /// window sums or the stored top-N when they serve it (only
    /// [`Filter::ALL`]), else summed over the minutes.
    fn top_of(
        &mut self,
        filter: Filter,
        from: i64,
        to: i64,
        n: usize,
    ) -> Result<Vec<(AdId, u64)>, String> {
        let window = (to - from) / MINUTE_MS;
        let last = to - MINUTE_MS;
        if filter == Filter::ALL {
            let running = self
                .latest
                .iter_mut()
                .chain(self.previous.iter_mut())
                .chain(self.finals.iter_mut())
                .find(|s| s.window() == window && s.end() == Some(last));
            if let Some(sums) = running {
                return Ok(sums.top(n));
            }
        }
        // A configured window whose last minute is final was stored when it
        // turned final: one read instead of summing the window.
        let feed = &self.args.settings.feed;
        let lateness = self.args.settings.allowed_lateness_ms;
        if filter == Filter::ALL
            && n <= feed.top_n
            && feed.top_windows.contains(&window)
            && last < final_until(self.watermark, lateness)
            && self.watermark != NO_WATERMARK
        {
            if let Some(mut ads) = self
                .args
                .store
                .read_top(window, last)
                .map_err(|e| e.to_string())?
            {
                ads.truncate(n);
                return Ok(ads);
            }
        }
        self.top_computed(&filter, from, to, n)
    }

    fn top_computed(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        n: usize,
    ) -> Result<Vec<(AdId, u64)>, String> {
        let counts = &self.args.counts;
        let (stored, in_memory) = split_at_floor(from, to, counts.floor());
        let mut sums = HashMap::new();
        self.args
            .store
            .add_sums(filter, stored.0, stored.1, &mut sums)
            .map_err(|e| e.to_string())?;
        counts.add_sums(filter, in_memory.0, in_memory.1, &mut sums);
        Ok(top_n::top_n(sums.into_iter().collect(), n))
    }
}
