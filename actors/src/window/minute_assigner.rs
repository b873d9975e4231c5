//! The window stage as plain state: puts each click in its minute, decides
//! on time / late correction / too late, and folds the counted ones into increments.

use crate::batch::Batch;
use crate::reject::{RejectReason, Rejected};
use crate::settings::DimensionSet;
use crate::time::event_clock::{EventClock, Timeliness};
use crate::time::minute_floor;
use crate::window::increment_fold::IncrementFold;

/// What one batch did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// Clicks counted (on time or as corrections).
    pub counted: u64,
    /// Of those, corrections to closed minutes.
    pub late: u64,
    /// Clicks rejected as too late.
    pub too_late: u64,
    /// Minutes before this were closed before the batch.
    pub closed_before: i64,
    /// Minutes before this are closed after it.
    pub closed_after: i64,
}

/// The window's clock, the filters to count, and a reusable fold.
pub struct MinuteAssigner {
    partition: u32,
    clock: EventClock,
    sets: Vec<DimensionSet>,
    deltas: IncrementFold,
}

impl MinuteAssigner {
    /// Resumes from a checkpoint's watermark (inside `clock`).
    pub fn new(partition: u32, clock: EventClock, sets: Vec<DimensionSet>) -> MinuteAssigner {
        MinuteAssigner {
            partition,
            clock,
            sets,
            deltas: IncrementFold::default(),
        }
    }

    /// Turns the batch's clicks (repeats skipped) into `batch.delta.increments` or
    /// `batch.delta.rejects`, emptying `clicks` and `payloads`; then
    /// applies an idle tick and stamps `batch.delta.watermark`.
    pub fn apply(&mut self, batch: &mut Batch) -> Assigned {
        let mut done = Assigned {
            closed_before: self.clock.closed_until(),
            ..Assigned::default()
        };
        // Read in place (no click is moved), then dropped together.
        for (at, click) in batch.clicks.iter().enumerate() {
            if click.repeat {
                continue;
            }
            let minute = minute_floor(click.ts);
            match self.clock.timeliness(minute) {
                Timeliness::TooLate => {
                    done.too_late += 1;
                    batch.delta.rejects.push(Rejected {
                        seq: click.seq,
                        subject: format!("clicks.p.{}.{}", self.partition, click.ad),
                        payload: batch
                            .payloads
                            .get_mut(at)
                            .map(std::mem::take)
                            .unwrap_or_default(),
                        reason: RejectReason::TooLate,
                    });
                    continue;
                }
                Timeliness::Late => done.late += 1,
                Timeliness::OnTime => {}
            }
            done.counted += 1;
            self.deltas.add(click, minute, &self.sets);
            self.clock.observe_event(click.ts);
        }
        batch.clicks.clear();
        batch.payloads.clear();
        if let Some(now) = batch.control.idle_tick {
            self.clock.observe_idle(now);
        }
        batch.delta.increments = self.deltas.drain();
        batch.delta.watermark = self.clock.watermark();
        done.closed_after = self.clock.closed_until();
        done
    }
}
