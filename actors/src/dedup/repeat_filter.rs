//! The dedup stage as plain state: drops clicks whose id was already counted.

use crate::batch::Batch;
use crate::click::Click;
use crate::dedup::seen_clicks::SeenClicks;
use crate::time::minute_floor;
use crate::window::event_clock::{EventClock, Timeliness};

/// How many clicks ahead `apply` asks for a click's buckets: enough for the
/// cache misses of a few clicks to overlap, few enough that the lines are
/// still cached when their click comes.
const PREFETCH_AHEAD: usize = 8;

/// Remembered ids plus the clock that says when a minute (and so its ids) is final.
pub struct RepeatFilter {
    seen: SeenClicks,
    clock: EventClock,
    /// The last batch's decisions, kept for its allocation.
    keep: Vec<bool>,
}

impl RepeatFilter {
    /// Resumes from a checkpoint's ids and watermark.
    pub fn new(clock: EventClock, ids: Vec<(i64, u128)>) -> RepeatFilter {
        // Sized for them at once: no growth while loading.
        let mut seen = SeenClicks::with_capacity(ids.len());
        for (minute, id) in ids {
            seen.insert(id, minute);
        }
        RepeatFilter {
            seen,
            clock,
            keep: Vec::new(),
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
        // Decide first, click by click, prefetching the buckets of the click
        // PREFETCH_AHEAD places on; then drop the repeats in one `retain`
        // (moving each kept click once).
        let mut keep = std::mem::take(&mut self.keep);
        keep.clear();
        for (at, click) in batch.clicks.iter().enumerate() {
            if let Some(ahead) = batch.clicks.get(at + PREFETCH_AHEAD) {
                self.seen.prefetch(ahead.id);
            }
            keep.push(self.keep(click, &mut batch.new_ids));
        }
        let mut decisions = keep.iter();
        batch
            .clicks
            .retain(|_| decisions.next().copied().unwrap_or(true));
        self.keep = keep;
        batch.duplicates = before - batch.clicks.len();
        if let Some(now) = batch.idle_tick {
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
