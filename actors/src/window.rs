//! Window: assigns each click to its event-time minute, keeps the watermark,
//! and decides on-time, late (a correction) or too late (rejected). Turns the
//! batch's clicks into count deltas for the reducer.

pub mod count_deltas;
pub mod event_clock;

use crate::batch::Batch;
use crate::reducer::ReducerMsg;
use crate::reject::{RejectReason, Rejected};
use crate::settings::{DimensionSet, PipelineSettings};
use crate::telemetry::PartitionMeters;
use crate::time::{minute_floor, now_ms};
use count_deltas::CountDeltas;
use event_clock::{EventClock, Timeliness};
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
    /// Where batches go.
    pub next: ActorRef<ReducerMsg>,
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
    next: ActorRef<ReducerMsg>,
    clock: EventClock,
    sets: Vec<DimensionSet>,
    deltas: CountDeltas,
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
        Ok(WindowState {
            partition: args.partition,
            next: args.next,
            clock: EventClock::new(
                args.settings.watermark_delay_ms,
                args.settings.allowed_lateness_ms,
                args.watermark,
            ),
            sets: args.settings.dimension_sets.clone(),
            deltas: CountDeltas::default(),
            meters: args.meters,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WindowMsg>,
        WindowMsg::Batch(mut batch): WindowMsg,
        state: &mut WindowState,
    ) -> Result<(), ActorProcessingErr> {
        state.assign(&mut batch);
        state.next.cast(ReducerMsg::Batch(batch))?;
        Ok(())
    }
}

impl WindowState {
    /// Moves the batch's clicks into count deltas or rejects, and stamps the watermark.
    pub fn assign(&mut self, batch: &mut Batch) {
        let closed_before = self.clock.closed_until();
        let (mut counted, mut late, mut too_late) = (0u64, 0u64, 0u64);
        for click in batch.clicks.drain(..) {
            let minute = minute_floor(click.ts);
            match self.clock.timeliness(minute) {
                Timeliness::TooLate => {
                    too_late += 1;
                    batch.rejects.push(Rejected {
                        seq: click.seq,
                        subject: format!("clicks.p.{}.{}", self.partition, click.ad),
                        payload: click.payload,
                        reason: RejectReason::TooLate,
                    });
                    continue;
                }
                Timeliness::Late => late += 1,
                Timeliness::OnTime => {}
            }
            counted += 1;
            self.deltas.add(&click, minute, &self.sets);
            self.clock.observe_event(click.ts);
        }
        if let Some(now) = batch.idle_tick {
            self.clock.observe_idle(now);
        }
        batch.deltas = self.deltas.drain();
        batch.watermark = self.clock.watermark();
        let closed_now = self.clock.closed_until();
        if closed_now > closed_before && closed_before != event_clock::NO_WATERMARK {
            self.meters
                .window_close_lag
                .record((now_ms() - closed_now).max(0) as f64 / 1000.0);
        }
        self.meters.counted.increment(counted);
        self.meters.late_corrections.increment(late);
        self.meters.too_late.increment(too_late);
    }
}
