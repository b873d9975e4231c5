//! The reducer stage as plain state: the partition's counts, the running
//! window totals, the output feed's decisions, the snapshots the count log
//! makes due, eviction, and the answers to count and top-N queries.
//!
//! [`ReducerActor`](super::ReducerActor) is glue around it (metrics, the
//! gateway's watermark, the hand-off to the writer), and
//! [`PartitionCore`](crate::core::PartitionCore) runs the very same code
//! without actors, so the reference model tests what the service runs.
//!
//! One batch, in order ([`ReducerCore::apply`]):
//! 1. its increments are added to the counts, which write each counter's new
//!    total back into the batch (the writer stores totals, never reads);
//! 2. the watermark follows the batch's;
//! 3. the running window totals take the late clicks, then move to the
//!    newest closed (and newest final) minute;
//! 4. the feed is decided: a `correction` per closed minute whose counters
//!    the batch changed, a `close` (counts and tops) per minute it closed, a
//!    `final` marker and final tops per minute it made final; final tops are
//!    also stored;
//! 5. the minutes the count log holds are snapshot when due.

use super::history::History;
use super::minute_counts::{split_at_floor, MinuteCounts};
use super::snapshots::MinuteSnapshots;
use super::top_n::top_n;
use super::window_sums::WindowSums;
use crate::batch::{Batch, Increments};
use crate::click::{AdId, Filter, FilterKinds, FilterQuery};
use crate::feed::{AggregateFeed, CountersPacker, FeedItem, Publication, StoredTop};
use crate::settings::PipelineSettings;
use crate::store::{Recovered, StoreError};
use crate::time::event_clock::{closed_until, final_until, NO_WATERMARK};
use crate::time::MINUTE_MS;
use std::collections::HashMap;
use std::sync::Arc;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// The partition's watermark when answering.
    pub watermark: i64,
    /// Whether a minute of the range was rewritten by `adclick reconcile
    /// --repair` (its counts are a recount of the raw clicks).
    pub reconciled: bool,
}

/// What a reducer resumes from: the checkpoint's counts and what the count
/// log holds of them.
pub struct ReducerStart {
    /// The partition number (feed subjects and message ids).
    pub partition: u32,
    /// Counts recovered from the checkpoint.
    pub counts: MinuteCounts,
    /// Minutes whose totals recovery read from the count log.
    pub logged_minutes: Vec<i64>,
    /// How many totals recovery replayed from the count log.
    pub logged_totals: usize,
    /// Watermark at the checkpoint.
    pub watermark: i64,
    /// The last committed output-feed version.
    pub feed_version: u64,
    /// Minutes `adclick reconcile --repair` rewrote.
    pub reconciled: Vec<i64>,
}

impl ReducerStart {
    /// What a reducer resumes from after `recovered` was read: the counts
    /// built from its totals (the list is freed), the count log's minutes.
    /// In ownership epoch `epoch` (0: one process owns every partition) the
    /// feed's versions start at `epoch << 32` at the least, so a replaced
    /// owner's late message never carries a version this owner uses.
    pub fn recovered(partition: u32, recovered: &mut Recovered, epoch: u64) -> ReducerStart {
        let mut counts = MinuteCounts::new(recovered.counts_from);
        counts.set_totals(&recovered.counts, &recovered.derive);
        recovered.counts = Vec::new();
        recovered.derive = Vec::new();
        ReducerStart {
            partition,
            counts,
            logged_minutes: std::mem::take(&mut recovered.logged_minutes),
            logged_totals: recovered.logged_totals,
            watermark: recovered.watermark,
            feed_version: recovered.feed_version.max(epoch << 32),
            reconciled: std::mem::take(&mut recovered.reconciled),
        }
    }

    /// A partition that has seen nothing.
    pub fn empty(partition: u32) -> ReducerStart {
        ReducerStart {
            partition,
            counts: MinuteCounts::new(i64::MIN),
            logged_minutes: Vec::new(),
            logged_totals: 0,
            watermark: NO_WATERMARK,
            feed_version: 0,
            reconciled: Vec::new(),
        }
    }
}

/// The reducer's state: see the module doc.
pub struct ReducerCore {
    settings: Arc<PipelineSettings>,
    counts: MinuteCounts,
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
    /// Minutes a repair rewrote (sorted): answers over them say so.
    reconciled: Vec<i64>,
}

impl ReducerCore {
    /// A reducer resumed from `start`.
    pub fn new(settings: Arc<PipelineSettings>, start: ReducerStart) -> ReducerCore {
        let windows: Vec<WindowSums> = settings
            .feed
            .top_windows
            .iter()
            .map(|w| WindowSums::new(*w))
            .collect();
        let (mut latest, mut finals) = (windows.clone(), windows);
        if start.watermark != NO_WATERMARK {
            let lateness = settings.allowed_lateness_ms;
            for sums in &mut latest {
                sums.advance(&start.counts, closed_until(start.watermark) - MINUTE_MS);
            }
            for sums in &mut finals {
                sums.advance(
                    &start.counts,
                    final_until(start.watermark, lateness) - MINUTE_MS,
                );
            }
        }
        ReducerCore {
            snapshots: MinuteSnapshots::resumed(
                settings.snapshot_log_floor,
                start.logged_minutes,
                start.logged_totals,
            )
            .logging_finest_only(FilterKinds::of(&settings.dimension_sets)),
            feed: AggregateFeed::new(
                start.partition,
                start.feed_version,
                settings.feed.max_payload,
            ),
            counts: start.counts,
            watermark: start.watermark,
            finals,
            latest,
            previous: Vec::new(),
            reconciled: {
                let mut minutes = start.reconciled;
                minutes.sort_unstable();
                minutes
            },
            settings,
        }
    }

    /// Applies one batch (see the module doc) and adds to it what the
    /// writer commits with it: counter totals, feed items, stored tops,
    /// snapshots. Fails only if `history` cannot be read (a final top-N
    /// summed over minutes no longer in memory).
    pub fn apply(&mut self, batch: &mut Batch, history: &dyn History) -> Result<(), StoreError> {
        let before = self.watermark;
        self.counts.apply_all(&mut batch.delta.increments);
        self.watermark = self.watermark.max(batch.delta.watermark);
        self.move_windows(&batch.delta.increments, before);
        self.decide_feed(batch, before, history)?;
        let lateness = self.settings.allowed_lateness_ms;
        self.snapshots.after_batch(
            &self.counts,
            batch,
            final_until(before, lateness),
            final_until(self.watermark, lateness),
        );
        Ok(())
    }

    /// Drops from memory the minutes that are committed, final and older
    /// than the memory span, given the watermark of the last finished commit
    /// (queries then read them from the history).
    pub fn evict(&mut self, committed_watermark: i64) {
        if committed_watermark == NO_WATERMARK {
            return;
        }
        let settings = &self.settings;
        let keep_from = closed_until(committed_watermark)
            .saturating_sub(settings.memory_minutes.saturating_mul(MINUTE_MS));
        let final_end = final_until(committed_watermark, settings.allowed_lateness_ms);
        self.counts.evict_before(keep_from.min(final_end));
    }

    /// The watermark after the last batch.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The counts in memory.
    pub fn counts(&self) -> &MinuteCounts {
        &self.counts
    }

    /// Clicks of one ad in a range, with the watermark it was computed at.
    pub fn count(&self, q: &CountQuery, history: &dyn History) -> Result<Answer<u64>, StoreError> {
        // A value no partition ever stored has no clicks here.
        let value = match q.filter.resolve() {
            None => 0,
            Some(filter) => {
                let (stored, in_memory) = split_at_floor(q.from, q.to, self.counts.floor());
                history.read_count(&q.ad, &filter, stored.0, stored.1)?
                    + self.counts.count(&q.ad, &filter, in_memory.0, in_memory.1)
            }
        };
        Ok(self.answer(value, q.from, q.to))
    }

    /// The most clicked ads of a range, with the watermark it was computed at.
    pub fn top(
        &mut self,
        q: &TopQuery,
        history: &dyn History,
    ) -> Result<Answer<Vec<(AdId, u64)>>, StoreError> {
        // A value no partition ever stored has no clicks here. A query that
        // names no dimension resolves to `Filter::ALL`, the filter the running
        // window sums and the stored top-N serve.
        let value = match q.filter.resolve() {
            None => Vec::new(),
            Some(filter) => self.top_of(filter, q.from, q.to, q.n, history)?,
        };
        Ok(self.answer(value, q.from, q.to))
    }

    fn answer<T>(&self, value: T, from: i64, to: i64) -> Answer<T> {
        let at = self.reconciled.partition_point(|m| *m < from);
        Answer {
            value,
            watermark: self.watermark,
            reconciled: self.reconciled.get(at).is_some_and(|m| *m < to),
        }
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
        let lateness = self.settings.allowed_lateness_ms;
        if final_until(after, lateness) != final_until(before, lateness) {
            let end = final_until(after, lateness) - MINUTE_MS;
            for sums in &mut self.finals {
                sums.advance(&self.counts, end);
            }
        }
        if closed_until(after) == closed_until(before) {
            return;
        }
        self.previous = self.latest.clone();
        let end = closed_until(after) - MINUTE_MS;
        for sums in &mut self.latest {
            sums.advance(&self.counts, end);
        }
    }

    /// Sets the batch's feed items and stored tops: the closed minutes its
    /// late clicks corrected, the minutes it closed, and the minutes it made
    /// final (see [`crate::feed`]).
    fn decide_feed(
        &mut self,
        batch: &mut Batch,
        before: i64,
        history: &dyn History,
    ) -> Result<(), StoreError> {
        let after = self.watermark;
        let lateness = self.settings.allowed_lateness_ms;
        let feed_on = self.settings.feed.enabled;
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
                .delta
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
        let closed = self.counts.minutes_within(closed_before, closed_after);
        let finals = self.counts.minutes_within(final_before, final_after);
        let settings = self.settings.clone();
        let (windows, n) = (&settings.feed.top_windows, settings.feed.top_n);
        if feed_on {
            for minute in closed {
                // Packed as memory lists them: the publisher sorts and renders
                // them after the commit (see `crate::feed`).
                let mut packer = CountersPacker::default();
                self.counts
                    .for_each_counter_of(minute, |ad, filter, count| {
                        packer.push(ad, filter, count)
                    });
                items.push(FeedItem::Counts(self.feed.counts(
                    minute,
                    Publication::Close,
                    packer,
                )));
                for &window in windows {
                    let top = self.window_top(window, minute, n, history)?;
                    items.push(FeedItem::Message(self.feed.top(
                        window,
                        minute,
                        Publication::Close,
                        &top,
                    )));
                }
            }
        }
        for minute in finals {
            if feed_on {
                let counters = self.counts.counters_in(minute);
                items.push(FeedItem::Message(self.feed.final_marker(minute, counters)));
            }
            for &window in windows {
                let ads = self.window_top(window, minute, n, history)?;
                if feed_on {
                    items.push(FeedItem::Message(self.feed.top(
                        window,
                        minute,
                        Publication::Final,
                        &ads,
                    )));
                }
                batch.delta.tops.push(StoredTop {
                    window,
                    minute,
                    ads,
                });
            }
        }
        batch.delta.feed = items;
        Ok(())
    }

    /// The top `n` over all clicks of the `window` minutes ending with `minute`.
    fn window_top(
        &mut self,
        window: i64,
        minute: i64,
        n: usize,
        history: &dyn History,
    ) -> Result<Vec<(AdId, u64)>, StoreError> {
        let from = minute - (window - 1) * MINUTE_MS;
        self.top_of(Filter::ALL, from, minute + MINUTE_MS, n, history)
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
        history: &dyn History,
    ) -> Result<Vec<(AdId, u64)>, StoreError> {
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
        let feed = &self.settings.feed;
        let lateness = self.settings.allowed_lateness_ms;
        if filter == Filter::ALL
            && n <= feed.top_n
            && feed.top_windows.contains(&window)
            && last < final_until(self.watermark, lateness)
            && self.watermark != NO_WATERMARK
        {
            if let Some(mut ads) = history.read_top(window, last)? {
                ads.truncate(n);
                return Ok(ads);
            }
        }
        let (stored, in_memory) = split_at_floor(from, to, self.counts.floor());
        let mut sums = HashMap::new();
        history.add_sums(&filter, stored.0, stored.1, &mut sums)?;
        self.counts
            .add_sums(&filter, in_memory.0, in_memory.1, &mut sums);
        Ok(top_n(sums.into_iter().collect(), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Increment;
    use crate::feed::FeedItem;
    use crate::reducer::history::NoHistory;
    use std::cell::Cell;
    use std::path::PathBuf;

    const M: i64 = MINUTE_MS;
    const T0: i64 = 1_000 * M;
    const LATENESS: i64 = 2 * M;

    fn settings() -> Arc<PipelineSettings> {
        let mut s = PipelineSettings::with_defaults(1);
        s.allowed_lateness_ms = LATENESS;
        s.memory_minutes = 2;
        s.feed.top_windows = vec![1, 2];
        s.feed.top_n = 2;
        Arc::new(s)
    }

    fn ad(name: &str) -> AdId {
        AdId::parse(name).unwrap()
    }

    /// A batch as the window hands it on: one increment per (ad, minute) of
    /// `Filter::ALL`, and the watermark after it.
    fn batch(clicks: &[(&str, i64, u64)], watermark: i64) -> Batch {
        let mut batch = Batch::default();
        batch.delta.watermark = watermark;
        batch.delta.increments = clicks
            .iter()
            .map(|&(name, minute, count)| Increment {
                minute,
                ad: ad(name),
                filter: Filter::ALL,
                count,
                total: 0,
            })
            .collect();
        batch
    }

    /// What a feed item says, in short: (kind of message, minute, detail).
    fn kinds(items: &[FeedItem]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                FeedItem::Counts(c) => {
                    let text = c.render(0).unwrap()[0].payload.clone();
                    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
                    format!("{} {} {}", v["kind"], c.minute / M - 1_000, v["counts"])
                }
                FeedItem::Message(m) => {
                    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                    if m.subject.starts_with("agg.counts.") {
                        format!("{} {} counters={}", v["kind"], v["minute"], v["counters"])
                    } else {
                        format!("{} {} {} {}", m.subject, v["kind"], v["to"], v["ads"])
                    }
                }
            })
            .collect()
    }

    fn count(core: &ReducerCore, name: &str, from: i64, to: i64, history: &dyn History) -> u64 {
        let q = CountQuery {
            ad: ad(name),
            filter: FilterQuery::default(),
            from,
            to,
        };
        core.count(&q, history).unwrap().value
    }

    #[test]
    fn a_batch_sets_the_totals_the_writer_stores() {
        let mut core = ReducerCore::new(settings(), ReducerStart::empty(0));
        let mut first = batch(&[("a", T0, 2), ("b", T0, 1)], T0 + 10_000);
        core.apply(&mut first, &NoHistory).unwrap();
        let mut second = batch(&[("a", T0, 3)], T0 + 20_000);
        core.apply(&mut second, &NoHistory).unwrap();
        let totals: Vec<u64> = second.delta.increments.iter().map(|d| d.total).collect();
        assert_eq!(totals, vec![5]);
        assert_eq!(core.watermark(), T0 + 20_000);
        assert_eq!(count(&core, "a", T0, T0 + M, &NoHistory), 5);
        // Nothing closed yet: no feed.
        assert!(first.delta.feed.is_empty() && second.delta.feed.is_empty());
    }

    #[test]
    fn the_feed_closes_corrects_and_finalizes_each_minute() {
        let mut core = ReducerCore::new(settings(), ReducerStart::empty(7));
        let mut open = batch(&[("a", T0, 2), ("b", T0, 3)], T0 + 30_000);
        core.apply(&mut open, &NoHistory).unwrap();

        // The watermark passes the minute's end: close, with its tops.
        let mut close = batch(&[("a", T0 + M, 1)], T0 + M + 1);
        core.apply(&mut close, &NoHistory).unwrap();
        assert_eq!(
            kinds(&close.delta.feed),
            vec![
                r#""close" 0 [{"ad_id":"a","count":2,"filter":{}},{"ad_id":"b","count":3,"filter":{}}]"#,
                r#"agg.top.1 "close" "1970-01-01T16:41:00Z" [{"ad_id":"b","count":3},{"ad_id":"a","count":2}]"#,
                r#"agg.top.2 "close" "1970-01-01T16:41:00Z" [{"ad_id":"b","count":3},{"ad_id":"a","count":2}]"#,
            ]
        );

        // A late click of the closed minute: a correction with the new total.
        let mut late = batch(&[("a", T0, 4)], T0 + M + 2);
        core.apply(&mut late, &NoHistory).unwrap();
        assert_eq!(
            kinds(&late.delta.feed),
            vec![r#""correction" 0 [{"ad_id":"a","count":6,"filter":{}}]"#]
        );

        // Past allowed lateness of minute 0 (which closes minute 1 too): the
        // final marker and final tops, which are stored as well.
        let mut fin = batch(&[], T0 + 3 * M);
        core.apply(&mut fin, &NoHistory).unwrap();
        assert_eq!(
            kinds(&fin.delta.feed),
            vec![
                r#""close" 1 [{"ad_id":"a","count":1,"filter":{}}]"#,
                r#"agg.top.1 "close" "1970-01-01T16:42:00Z" [{"ad_id":"a","count":1}]"#,
                r#"agg.top.2 "close" "1970-01-01T16:42:00Z" [{"ad_id":"a","count":7},{"ad_id":"b","count":3}]"#,
                r#""final" "1970-01-01T16:40:00Z" counters=2"#,
                r#"agg.top.1 "final" "1970-01-01T16:41:00Z" [{"ad_id":"a","count":6},{"ad_id":"b","count":3}]"#,
                r#"agg.top.2 "final" "1970-01-01T16:41:00Z" [{"ad_id":"a","count":6},{"ad_id":"b","count":3}]"#,
            ]
        );
        let both = vec![(ad("a"), 6), (ad("b"), 3)];
        let stored: Vec<StoredTop> = fin.delta.tops.clone();
        assert_eq!(
            stored,
            vec![
                StoredTop {
                    window: 1,
                    minute: T0,
                    ads: both.clone(),
                },
                StoredTop {
                    window: 2,
                    minute: T0,
                    ads: both,
                },
            ]
        );
        // Versions are consecutive from 1, one per message.
        let last = fin.delta.feed.last().unwrap().last_version();
        assert_eq!(last, 10);
    }

    #[test]
    fn the_feed_off_still_stores_final_tops() {
        let mut s = (*settings()).clone();
        s.feed.enabled = false;
        let mut core = ReducerCore::new(Arc::new(s), ReducerStart::empty(0));
        let mut b = batch(&[("a", T0, 1)], T0 + M + LATENESS);
        core.apply(&mut b, &NoHistory).unwrap();
        assert!(b.delta.feed.is_empty());
        assert_eq!(b.delta.tops.len(), 2);
    }

    /// History that holds `a` with 10 clicks in every minute it is asked
    /// for, a stored top for any window, and records the ranges asked.
    struct Stored {
        reads: Cell<usize>,
        ranges: std::cell::RefCell<Vec<(i64, i64)>>,
        fail: bool,
    }

    impl Stored {
        fn new(fail: bool) -> Stored {
            Stored {
                reads: Cell::new(0),
                ranges: Default::default(),
                fail,
            }
        }
    }

    impl Stored {
        fn io(&self) -> StoreError {
            StoreError::Io {
                path: PathBuf::from("partition-0.redb"),
                what: "read",
                message: "planted".into(),
            }
        }
    }

    impl History for Stored {
        fn read_count(&self, a: &AdId, _: &Filter, from: i64, to: i64) -> Result<u64, StoreError> {
            self.reads.set(self.reads.get() + 1);
            self.ranges.borrow_mut().push((from, to));
            if self.fail {
                return Err(self.io());
            }
            Ok(if a.as_str() == "a" {
                10 * ((to - from).max(0) / M) as u64
            } else {
                0
            })
        }
        fn add_sums(
            &self,
            _: &Filter,
            _: i64,
            _: i64,
            _: &mut HashMap<AdId, u64>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn read_top(&self, _: i64, _: i64) -> Result<Option<Vec<(AdId, u64)>>, StoreError> {
            self.reads.set(self.reads.get() + 1);
            Ok(Some(vec![(AdId::parse("stored").unwrap(), 99)]))
        }
    }

    #[test]
    fn eviction_keeps_only_committed_final_minutes_out_of_memory() {
        let mut core = ReducerCore::new(settings(), ReducerStart::empty(0));
        for minute in 0..6 {
            let mut b = batch(&[("a", T0 + minute * M, 1)], T0 + minute * M + 1);
            core.apply(&mut b, &NoHistory).unwrap();
        }
        // Nothing is committed yet: nothing leaves memory.
        core.evict(NO_WATERMARK);
        assert_eq!(count(&core, "a", T0, T0 + 6 * M, &NoHistory), 6);
        // Committed up to minute 5: minutes before 5 - 2 (memory) = 3 and
        // final (before 5 - 2 lateness = 3) go.
        core.evict(T0 + 5 * M + 1);
        assert_eq!(count(&core, "a", T0, T0 + 6 * M, &NoHistory), 3);
        // The rest is read from the history: 3 minutes stored, 3 in memory.
        let history = Stored::new(false);
        assert_eq!(count(&core, "a", T0, T0 + 6 * M, &history), 30 + 3);
        assert_eq!(history.ranges.borrow().last(), Some(&(T0, T0 + 3 * M)));
        // A range entirely in memory asks the file for no minute.
        assert_eq!(count(&core, "a", T0 + 3 * M, T0 + 6 * M, &history), 3);
        let (from, to) = *history.ranges.borrow().last().unwrap();
        assert!(from >= to, "asked the file for [{from}, {to})");
    }

    #[test]
    fn a_final_configured_window_is_one_read_of_the_stored_top() {
        let mut core = ReducerCore::new(settings(), ReducerStart::empty(0));
        let mut b = batch(&[("a", T0, 1)], T0 + 10 * M);
        core.apply(&mut b, &NoHistory).unwrap();
        let history = Stored::new(false);
        let top = |core: &mut ReducerCore, window: i64, n: usize| {
            let q = TopQuery {
                filter: FilterQuery::default(),
                from: T0 - (window - 1) * M,
                to: T0 + M,
                n,
            };
            core.top(&q, &history).unwrap().value
        };
        // Window 2 ending at T0 is final and configured: the stored answer,
        // one read.
        assert_eq!(top(&mut core, 2, 2), vec![(ad("stored"), 99)]);
        assert_eq!(history.reads.get(), 1);
        // Window 3 is not configured: summed over the minutes, no stored top read.
        assert_eq!(top(&mut core, 3, 2), vec![(ad("a"), 1)]);
        // More ads than the stored top-N holds: summed too.
        assert_eq!(top(&mut core, 2, 3), vec![(ad("a"), 1)]);
        assert_eq!(history.reads.get(), 1);
    }

    #[test]
    fn unknown_values_and_unreadable_files() {
        let core = ReducerCore::new(settings(), ReducerStart::empty(0));
        // A dimension value no partition stored resolves to nothing: 0.
        let q = CountQuery {
            ad: ad("a"),
            filter: FilterQuery {
                extras: vec![("device".into(), "never-seen".into())],
                ..FilterQuery::default()
            },
            from: T0,
            to: T0 + M,
        };
        let failing = Stored::new(true);
        assert_eq!(core.count(&q, &failing).unwrap().value, 0);
        assert_eq!(failing.reads.get(), 0);
        // A file that cannot be read is an error, never a short count.
        let mut core = ReducerCore::new(settings(), ReducerStart::empty(0));
        for minute in 0..6 {
            let mut b = batch(&[("a", T0 + minute * M, 1)], T0 + minute * M + 1);
            core.apply(&mut b, &NoHistory).unwrap();
        }
        core.evict(T0 + 5 * M + 1);
        let q = CountQuery {
            filter: FilterQuery::default(),
            ..q
        };
        assert!(matches!(
            core.count(&q, &failing),
            Err(StoreError::Io { .. })
        ));
    }
}
