//! A partition's chain without actors or NATS: dedup → window → counts (and
//! the snapshots the counts make due), run
//! synchronously on batches. The actors run exactly these pieces; tests
//! (the event-time reference model) and benchmarks drive this directly.

use crate::batch::Batch;
use crate::dedup::repeat_filter::RepeatFilter;
use crate::reducer::minute_counts::MinuteCounts;
use crate::reducer::snapshots::MinuteSnapshots;
use crate::settings::PipelineSettings;
use crate::window::event_clock::{final_until, EventClock, NO_WATERMARK};
use crate::window::minute_assigner::{Assigned, MinuteAssigner};
use crate::writer::store::Recovered;

/// Dedup, window and the reducer's counts of one partition.
pub struct PartitionCore {
    filter: RepeatFilter,
    assigner: MinuteAssigner,
    /// The counts, as the reducer holds them.
    pub counts: MinuteCounts,
    snapshots: MinuteSnapshots,
    allowed_lateness_ms: i64,
    watermark: i64,
}

impl PartitionCore {
    /// A partition that has seen nothing.
    pub fn new(partition: u32, settings: &PipelineSettings) -> PartitionCore {
        PartitionCore::build(
            partition,
            settings,
            NO_WATERMARK,
            Vec::new(),
            MinuteCounts::new(i64::MIN),
            MinuteSnapshots::new(settings.snapshot_log_floor),
        )
    }

    /// A partition resumed from its checkpoint, as the supervisor builds it.
    pub fn resume(
        partition: u32,
        settings: &PipelineSettings,
        recovered: Recovered,
    ) -> PartitionCore {
        let mut counts = MinuteCounts::new(recovered.counts_from);
        counts.set_totals(&recovered.counts);
        PartitionCore::build(
            partition,
            settings,
            recovered.watermark,
            recovered.seen,
            counts,
            MinuteSnapshots::resumed(
                settings.snapshot_log_floor,
                recovered.logged_minutes,
                recovered.logged_totals,
            ),
        )
    }

    fn build(
        partition: u32,
        settings: &PipelineSettings,
        watermark: i64,
        seen: Vec<(i64, u128)>,
        counts: MinuteCounts,
        snapshots: MinuteSnapshots,
    ) -> PartitionCore {
        let clock = EventClock::new(
            settings.watermark_delay_ms,
            settings.allowed_lateness_ms,
            watermark,
        );
        PartitionCore {
            filter: RepeatFilter::new(clock.clone(), seen),
            assigner: MinuteAssigner::new(partition, clock, settings.dimension_sets.clone()),
            counts,
            snapshots,
            allowed_lateness_ms: settings.allowed_lateness_ms,
            watermark,
        }
    }

    /// Runs one batch through dedup, window and counts. The batch keeps what
    /// the writer needs (ids, deltas, rejects, watermark, snapshots).
    pub fn process(&mut self, batch: &mut Batch) -> Assigned {
        self.filter.apply(batch);
        let done = self.assigner.apply(batch);
        self.counts.apply_all(&mut batch.increments);
        let before = self.watermark;
        self.watermark = self.watermark.max(batch.watermark);
        self.snapshots.after_batch(
            &self.counts,
            batch,
            final_until(before, self.allowed_lateness_ms),
            final_until(self.watermark, self.allowed_lateness_ms),
        );
        done
    }

    /// The watermark after the last batch.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Click ids remembered for dedup.
    pub fn remembered(&self) -> usize {
        self.filter.remembered()
    }
}
