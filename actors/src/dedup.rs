//! Dedup: drops clicks whose `click_id` was already counted.
//!
//! An id is remembered until its minute is final (the watermark has passed
//! the minute's end plus `allowed_lateness`): exactly as long as a repeat
//! could still change a count. After that a repeat is too late anyway and
//! the window rejects it. Dedup runs its own [`EventClock`] over the same
//! clicks and ticks the window will see, so both agree on finality.

pub mod deduplicator;
pub mod seen_clicks;

use crate::batch::{Batch, NextStage};
use crate::settings::PipelineSettings;
use crate::telemetry::PartitionMeters;
use crate::time::event_clock::EventClock;
use deduplicator::Deduplicator;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;

/// Messages to the dedup actor.
pub enum DedupMsg {
    /// A batch from ingest.
    Batch(Box<Batch>),
}

/// What dedup starts from.
pub struct DedupArgs {
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// Where batches go (the window).
    pub next: NextStage,
    /// Ids remembered at the last checkpoint.
    pub seen: Vec<(i64, u128)>,
    /// Watermark at the last checkpoint.
    pub watermark: i64,
    /// Metric handles.
    pub meters: PartitionMeters,
}

/// The dedup actor.
pub struct DedupActor;

/// Dedup's running state.
pub struct DedupState {
    next: NextStage,
    filter: Deduplicator,
    meters: PartitionMeters,
}

impl Actor for DedupActor {
    type Msg = DedupMsg;
    type State = DedupState;
    type Arguments = DedupArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DedupMsg>,
        args: DedupArgs,
    ) -> Result<DedupState, ActorProcessingErr> {
        let clock = EventClock::new(
            args.settings.watermark_delay_ms,
            args.settings.allowed_lateness_ms,
            args.watermark,
        );
        Ok(DedupState {
            next: args.next,
            filter: Deduplicator::new(clock, args.seen),
            meters: args.meters,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DedupMsg>,
        DedupMsg::Batch(mut batch): DedupMsg,
        state: &mut DedupState,
    ) -> Result<(), ActorProcessingErr> {
        state.filter.apply(&mut batch);
        state
            .meters
            .duplicate
            .increment(batch.control.duplicates as u64);
        state.meters.dedup_ids.set(state.filter.remembered() as f64);
        state.next.send(batch)?;
        Ok(())
    }
}
