//! Window: assigns each click to its event-time minute, keeps the watermark,
//! and decides on-time, late (a correction) or too late (rejected). Turns the
//! batch's clicks into increments for the reducer.

pub mod increment_fold;
pub mod minute_assigner;

use crate::batch::{Batch, NextStage};
use crate::settings::PipelineSettings;
use crate::telemetry::PartitionMeters;
use crate::time::event_clock::{EventClock, NO_WATERMARK};
use crate::time::now_ms;
use minute_assigner::MinuteAssigner;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;

/// Messages to the window actor.
pub enum WindowMsg {
    /// A batch from dedup.
    Batch(Box<Batch>),
}

/// What the window starts from.
pub struct WindowArgs {
    /// The partition number (for reject subjects).
    pub partition: u32,
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// Where batches go (the reducer).
    pub next: NextStage,
    /// Watermark at the last checkpoint.
    pub watermark: i64,
    /// Metric handles.
    pub meters: PartitionMeters,
}

/// The window actor.
pub struct WindowActor;

/// The window's running state.
pub struct WindowState {
    partition: u32,
    next: NextStage,
    assigner: MinuteAssigner,
    meters: PartitionMeters,
}

impl Actor for WindowActor {
    type Msg = WindowMsg;
    type State = WindowState;
    type Arguments = WindowArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WindowMsg>,
        args: WindowArgs,
    ) -> Result<WindowState, ActorProcessingErr> {
        let clock = EventClock::new(
            args.settings.watermark_delay_ms,
            args.settings.allowed_lateness_ms,
            args.watermark,
        );
        Ok(WindowState {
            partition: args.partition,
            next: args.next,
            assigner: MinuteAssigner::new(
                args.partition,
                clock,
                args.settings.dimension_sets.clone(),
            ),
            meters: args.meters,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WindowMsg>,
        WindowMsg::Batch(mut batch): WindowMsg,
        state: &mut WindowState,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::hit("panic-window", state.partition);
        let done = state.assigner.apply(&mut batch);
        let meters = &state.meters;
        meters.counted.increment(done.counted);
        meters.late_corrections.increment(done.late);
        meters.too_late.increment(done.too_late);
        if done.closed_after > done.closed_before && done.closed_before != NO_WATERMARK {
            meters
                .window_close_lag
                .record((now_ms() - done.closed_after).max(0) as f64 / 1000.0);
        }
        batch.control.closes_minute = done.closed_after > done.closed_before;
        state.next.send(batch)?;
        Ok(())
    }
}
