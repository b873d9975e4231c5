//! Dedup: drops clicks whose `click_id` was already counted.
//!
//! An id is remembered until its minute is final (the watermark has passed
//! the minute's end plus `allowed_lateness`): exactly as long as a repeat
//! could still change a count. After that a repeat is too late anyway and
//! the window rejects it. Dedup runs its own [`EventClock`] over the same
//! clicks and ticks the window will see, so both agree on finality.

pub mod seen_clicks;

use crate::batch::Batch;
use crate::settings::PipelineSettings;
use crate::telemetry::PartitionMeters;
use crate::time::minute_floor;
use crate::window::event_clock::{EventClock, Timeliness};
use crate::window::WindowMsg;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use seen_clicks::SeenClicks;
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
    /// Where batches go.
    pub next: ActorRef<WindowMsg>,
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
    next: ActorRef<WindowMsg>,
    seen: SeenClicks,
    clock: EventClock,
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
        let mut seen = SeenClicks::default();
        for (minute, id) in args.seen {
            seen.insert(id, minute);
        }
        Ok(DedupState {
            next: args.next,
            seen,
            clock: EventClock::new(
                args.settings.watermark_delay_ms,
                args.settings.allowed_lateness_ms,
                args.watermark,
            ),
            meters: args.meters,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DedupMsg>,
        DedupMsg::Batch(mut batch): DedupMsg,
        state: &mut DedupState,
    ) -> Result<(), ActorProcessingErr> {
        state.dedup(&mut batch);
        state.next.cast(WindowMsg::Batch(batch))?;
        Ok(())
    }
}

impl DedupState {
    /// Removes repeats from the batch and records first sightings in `batch.new_ids`.
    pub fn dedup(&mut self, batch: &mut Batch) {
        let before = batch.clicks.len();
        let clock = &mut self.clock;
        let seen = &mut self.seen;
        let new_ids = &mut batch.new_ids;
        batch.clicks.retain(|click| {
            let minute = minute_floor(click.ts);
            if clock.timeliness(minute) == Timeliness::TooLate {
                return true; // the window rejects it; nothing to remember
            }
            if !seen.insert(click.id, minute) {
                return false;
            }
            new_ids.push((minute, click.id));
            clock.observe_event(click.ts);
            true
        });
        batch.duplicates = before - batch.clicks.len();
        if let Some(now) = batch.idle_tick {
            self.clock.observe_idle(now);
        }
        self.seen.forget_before(self.clock.final_until());
        self.meters.duplicate.increment(batch.duplicates as u64);
        self.meters.dedup_ids.set(self.seen.len() as f64);
    }
}
