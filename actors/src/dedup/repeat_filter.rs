//! The dedup stage as plain state: drops clicks whose id was already counted.

use crate::batch::Batch;
use crate::dedup::seen_clicks::SeenClicks;
use crate::time::minute_floor;
use crate::window::event_clock::{EventClock, Timeliness};

/// How many clicks ahead dedup prefetches the ids' buckets: enough to
/// overlap the misses, few enough that the lines are still in cache when used.
const PREFETCH_AHEAD: usize = 8;

/// Remembered ids plus the clock that says when a minute (and so its ids) is final.
pub struct RepeatFilter {
    seen: SeenClicks,
    clock: EventClock,
    /// Reused between batches: the batch's ids, to prefetch ahead.
    ids: Vec<u128>,
}

impl RepeatFilter {
    /// Resumes from a checkpoint's ids and watermark.
    pub fn new(clock: EventClock, ids: impl IntoIterator<Item = (i64, u128)>) -> RepeatFilter {
        let mut seen = SeenClicks::default();
        for (minute, id) in ids {
            seen.insert(id, minute);
        }
        RepeatFilter {
            seen,
            clock,
            ids: Vec::new(),
        }
    }

    /// Removes repeats from the batch, records first sightings in
    /// `batch.new_ids` and their number in `batch.duplicates`.
    ///
    /// A click of a final minute passes untouched and unremembered: the
    /// window rejects it as too late. Only the clicks it keeps move its clock,
    /// exactly as they will move the window's. `new_ids` holds each id with
    /// the minute whose finality frees it (the checkpoint's `seen` key).
    pub fn apply(&mut self, batch: &mut Batch) {
        let before = batch.clicks.len();
        let clock = &mut self.clock;
        let seen = &mut self.seen;
        let new_ids = &mut batch.new_ids;
        let ids = &mut self.ids;
        ids.clear();
        ids.extend(batch.clicks.iter().map(|click| click.id));
        for id in ids.iter().take(PREFETCH_AHEAD) {
            seen.prefetch(*id);
        }
        let mut next = 0;
        batch.clicks.retain(|click| {
            if let Some(ahead) = ids.get(next + PREFETCH_AHEAD) {
                seen.prefetch(*ahead);
            }
            next += 1;
            let minute = minute_floor(click.ts);
            if clock.timeliness(minute) == Timeliness::TooLate {
                return true;
            }
            // Keep the id until the minute it lands in is final, and for a
            // correction (a click of an already closed minute) at least until
            // the minute open now is final: a full lateness after it counted.
            let keep_until = minute.max(clock.closed_until());
            if !seen.insert(click.id, keep_until) {
                return false;
            }
            new_ids.push((keep_until, click.id));
            let final_before = clock.final_until();
            clock.observe_event(click.ts);
            // Forget as soon as a minute turns final, not at the batch's end:
            // where batches are cut must never change what counts.
            if clock.final_until() != final_before {
                seen.forget_before(clock.final_until());
            }
            true
        });
        batch.duplicates = before - batch.clicks.len();
        if let Some(now) = batch.idle_tick {
            self.clock.observe_idle(now);
            self.seen.forget_before(self.clock.final_until());
        }
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
