//! A partition's chain without actors or NATS: dedup → window → reducer, run
//! synchronously on batches. The actors run exactly these pieces (the
//! reducer's whole logic is [`ReducerCore`]); tests (the event-time reference
//! model) and benchmarks drive this directly.

use crate::batch::Batch;
use crate::dedup::deduplicator::Deduplicator;
use crate::reducer::history::NoHistory;
use crate::reducer::minute_counts::MinuteCounts;
use crate::reducer::{ReducerCore, ReducerStart};
use crate::settings::PipelineSettings;
use crate::store::Recovered;
use crate::time::event_clock::EventClock;
use crate::window::minute_assigner::{Assigned, MinuteAssigner};
use std::sync::Arc;

/// Dedup, window and reducer of one partition.
pub struct PartitionCore {
    filter: Deduplicator,
    assigner: MinuteAssigner,
    /// The reducer, as the reducer actor holds it.
    pub reducer: ReducerCore,
}

impl PartitionCore {
    /// A partition that has seen nothing.
    pub fn new(partition: u32, settings: &PipelineSettings) -> PartitionCore {
        PartitionCore::build(settings, Vec::new(), ReducerStart::empty(partition))
    }

    /// A partition resumed from its checkpoint, as the supervisor builds it.
    pub fn resume(
        partition: u32,
        settings: &PipelineSettings,
        mut recovered: Recovered,
    ) -> PartitionCore {
        let start = ReducerStart::recovered(partition, &mut recovered, 0);
        PartitionCore::build(settings, recovered.seen, start)
    }

    fn build(
        settings: &PipelineSettings,
        seen: Vec<(i64, u128)>,
        start: ReducerStart,
    ) -> PartitionCore {
        let clock = EventClock::new(
            settings.watermark_delay_ms,
            settings.allowed_lateness_ms,
            start.watermark,
        );
        let partition = start.partition;
        PartitionCore {
            filter: Deduplicator::new(clock.clone(), seen),
            assigner: MinuteAssigner::new(partition, clock, settings.dimension_sets.clone()),
            reducer: ReducerCore::new(Arc::new(settings.clone()), start),
        }
    }

    /// Runs one batch through dedup, window and reducer. The batch keeps what
    /// the writer needs (ids, increments, rejects, watermark, feed, tops,
    /// snapshots). The core never evicts and reads no file ([`NoHistory`]):
    /// it knows the minutes it counted and, after [`PartitionCore::resume`],
    /// those recovery loaded into memory; nothing can fail.
    pub fn process(&mut self, batch: &mut Batch) -> Assigned {
        self.filter.apply(batch);
        let done = self.assigner.apply(batch);
        if let Err(never) = self.reducer.apply(batch, &NoHistory) {
            unreachable!("NoHistory never fails: {never}");
        }
        done
    }

    /// The watermark after the last batch.
    pub fn watermark(&self) -> i64 {
        self.reducer.watermark()
    }

    /// The counts, as the reducer holds them.
    pub fn counts(&self) -> &MinuteCounts {
        self.reducer.counts()
    }

    /// Click ids remembered for dedup.
    pub fn remembered(&self) -> usize {
        self.filter.remembered()
    }
}
