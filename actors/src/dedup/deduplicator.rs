//! The dedup stage as plain state: drops clicks whose id was already counted.

use crate::batch::Batch;
use crate::click::Click;
use crate::dedup::seen_clicks::SeenClicks;
use crate::time::event_clock::{EventClock, Timeliness};
use crate::time::minute_floor;

/// How many clicks ahead `apply` asks for a click's buckets: enough for the
/// cache misses of a few clicks to overlap, few enough that the lines are
/// still cached when their click comes.
const PREFETCH_AHEAD: usize = 8;

/// Remembered ids plus the clock that says when a minute (and so its ids) is final.
pub struct Deduplicator {
    seen: SeenClicks,
    clock: EventClock,
}

impl Deduplicator {
    /// Resumes from a checkpoint's ids and watermark.
    pub fn new(clock: EventClock, ids: Vec<(i64, u128)>) -> Deduplicator {
        // Sized for them at once: no growth while loading.
        let mut seen = SeenClicks::with_capacity(ids.len());
        for (minute, id) in ids {
            seen.insert(id, minute);
        }
        Deduplicator { seen, clock }
    }

    /// Marks the batch's repeats ([`Click::repeat`]), records first
    /// sightings in `batch.delta.new_ids` and their number in `batch.control.duplicates`.
    ///
    /// A click of a final minute passes untouched and unremembered: the
    /// window rejects it as too late. Only the clicks it keeps move its clock,
    /// exactly as they will move the window's. `new_ids` holds each id with
    /// the minute whose finality frees it (the checkpoint's `seen` key).
    ///
    /// Repeats are marked in place rather than removed: removing one shifts
    /// every later click of the batch (each over 100 bytes), and the window
    /// reads every click anyway.
    pub fn apply(&mut self, batch: &mut Batch) {
        let mut duplicates = 0;
        // Nearly every click is new: one allocation, not a doubling series
        // of them, each copying the ids so far.
        batch.delta.new_ids.reserve(batch.clicks.len());
        for at in 0..batch.clicks.len() {
            // Ask for the buckets of the click PREFETCH_AHEAD places on, so
            // the cache misses of consecutive clicks overlap.
            if let Some(ahead) = batch.clicks.get(at + PREFETCH_AHEAD) {
                self.seen.prefetch(ahead.id);
            }
            let click = &mut batch.clicks[at];
            if !self.keep(click, &mut batch.delta.new_ids) {
                click.repeat = true;
                duplicates += 1;
            }
        }
        batch.control.duplicates = duplicates;
        if let Some(now) = batch.control.idle_tick {
            self.clock.observe_idle(now);
            self.seen.forget_before(self.clock.final_until());
        }
    }

    /// Whether `click` goes on: not a repeat, or too late to be one (see
    /// [`apply`](Self::apply)). Records a first sighting.
    fn keep(&mut self, click: &Click, new_ids: &mut Vec<(i64, u128)>) -> bool {
        let clock = &mut self.clock;
        let minute = minute_floor(click.ts);
        if clock.timeliness(minute) == Timeliness::TooLate {
            return true;
        }
        // Keep the id until the minute it lands in is final, and for a
        // correction (a click of an already closed minute) at least until
        // the minute open now is final: a full lateness after it counted.
        let keep_until = minute.max(clock.closed_until());
        if !self.seen.insert(click.id, keep_until) {
            return false;
        }
        new_ids.push((keep_until, click.id));
        let final_before = clock.final_until();
        clock.observe_event(click.ts);
        // Forget as soon as a minute turns final, not at the batch's end:
        // where batches are cut must never change what counts.
        if clock.final_until() != final_before {
            self.seen.forget_before(clock.final_until());
        }
        true
    }

    /// Ids remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// The stage's watermark.
    pub fn watermark(&self) -> i64 {
        self.clock.watermark()
    }
}
