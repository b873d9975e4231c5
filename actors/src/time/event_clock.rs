//! The watermark of one partition and what it says about each minute.
//!
//! Watermark = max(largest event time seen − `watermark_delay`, latest idle
//! wall-clock time − `watermark_delay`); it never goes back. Minute `m` is
//! *closed* once the watermark reaches `m + 60 s`, and *final* once it reaches
//! `m + 60 s + allowed_lateness`. A click for a closed, non-final minute is a
//! correction; one for a final minute is too late.

use crate::time::minute_floor;
use std::sync::atomic::{AtomicI64, Ordering};

/// The watermark before anything was seen.
pub const NO_WATERMARK: i64 = i64::MIN;

/// How a click's minute stands against the watermark.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timeliness {
    /// The minute is still open.
    OnTime,
    /// The minute is closed but still takes corrections.
    Late,
    /// The minute is final; the click is not counted.
    TooLate,
}

/// Watermark plus the lateness policy.
#[derive(Clone, Debug)]
pub struct EventClock {
    delay_ms: i64,
    lateness_ms: i64,
    watermark: i64,
    /// [`closed_until`] and [`final_until`] of the watermark, kept as it
    /// moves: dedup and window ask for them several times per click, and
    /// each is a division, while the watermark moves for few clicks.
    closed_until: i64,
    final_until: i64,
}

impl EventClock {
    /// A clock resuming at `watermark` (use [`NO_WATERMARK`] for a fresh partition).
    pub fn new(delay_ms: i64, lateness_ms: i64, watermark: i64) -> EventClock {
        EventClock {
            delay_ms,
            lateness_ms,
            watermark,
            closed_until: closed_until(watermark),
            final_until: final_until(watermark, lateness_ms),
        }
    }

    /// Moves the watermark to `to` if that is forward.
    fn advance(&mut self, to: i64) {
        if to > self.watermark {
            self.watermark = to;
            self.closed_until = closed_until(to);
            self.final_until = final_until(to, self.lateness_ms);
        }
    }

    /// The current watermark, epoch ms.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// A counted click's event time moves the watermark forward.
    pub fn observe_event(&mut self, ts: i64) {
        self.advance(ts.saturating_sub(self.delay_ms));
    }

    /// An idle partition follows the wall clock (never backwards).
    pub fn observe_idle(&mut self, now: i64) {
        self.advance(now.saturating_sub(self.delay_ms));
    }

    /// Where a click of `minute` stands now.
    pub fn timeliness(&self, minute: i64) -> Timeliness {
        if minute < self.final_until() {
            Timeliness::TooLate
        } else if minute < self.closed_until() {
            Timeliness::Late
        } else {
            Timeliness::OnTime
        }
    }

    /// Every minute before this one is closed.
    pub fn closed_until(&self) -> i64 {
        self.closed_until
    }

    /// Every minute before this one is final.
    pub fn final_until(&self) -> i64 {
        self.final_until
    }
}

/// A partition's watermark as its reducer last set it, for readers on other
/// threads (the gateway). It only moves forward.
#[derive(Debug)]
pub struct SharedWatermark(AtomicI64);

impl Default for SharedWatermark {
    fn default() -> SharedWatermark {
        SharedWatermark(AtomicI64::new(NO_WATERMARK))
    }
}

impl SharedWatermark {
    /// The watermark (`NO_WATERMARK` before the partition's first click).
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves it to `watermark` if that is later.
    pub fn advance(&self, watermark: i64) {
        self.0.fetch_max(watermark, Ordering::AcqRel);
    }
}

/// Every minute before the result is closed under `watermark`.
pub fn closed_until(watermark: i64) -> i64 {
    if watermark == NO_WATERMARK {
        return NO_WATERMARK;
    }
    minute_floor(watermark)
}

/// Every minute before the result is final under `watermark`.
pub fn final_until(watermark: i64, lateness_ms: i64) -> i64 {
    if watermark == NO_WATERMARK {
        return NO_WATERMARK;
    }
    minute_floor(watermark.saturating_sub(lateness_ms).max(NO_WATERMARK / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    const MINUTE: i64 = crate::time::MINUTE_MS;
    use proptest::prelude::*;

    #[test]
    fn minutes_close_then_become_final() {
        let mut clock = EventClock::new(5_000, 120_000, NO_WATERMARK);
        assert_eq!(clock.timeliness(0), Timeliness::OnTime);
        clock.observe_event(64_999); // watermark 59_999
        assert_eq!(clock.timeliness(0), Timeliness::OnTime);
        clock.observe_event(65_000); // watermark 60_000: minute 0 closes
        assert_eq!(clock.timeliness(0), Timeliness::Late);
        clock.observe_event(185_000); // watermark 180_000 = 0 + 60 s + 120 s
        assert_eq!(clock.timeliness(0), Timeliness::TooLate);
        assert_eq!(clock.timeliness(60_000), Timeliness::Late);
        clock.observe_event(1); // never backwards
        assert_eq!(clock.watermark(), 180_000);
        clock.observe_idle(100); // nor with a wall clock that jumped back
        assert_eq!(clock.watermark(), 180_000);
    }

    proptest! {
        /// Against the definitions written out by hand.
        #[test]
        fn timeliness_matches_the_definition(
            events in prop::collection::vec(0i64..1_000_000, 1..20),
            minute in 0i64..20,
            delay in 0i64..100_000,
            lateness in 0i64..300_000,
        ) {
            let mut clock = EventClock::new(delay, lateness, NO_WATERMARK);
            for ts in &events { clock.observe_event(*ts); }
            let wm = events.iter().max().unwrap() - delay;
            prop_assert_eq!(clock.watermark(), wm);
            let m = minute * MINUTE;
            let want = if wm >= m + MINUTE + lateness {
                Timeliness::TooLate
            } else if wm >= m + MINUTE {
                Timeliness::Late
            } else {
                Timeliness::OnTime
            };
            prop_assert_eq!(clock.timeliness(m), want);
            prop_assert_eq!(clock.closed_until(), closed_until(wm));
            prop_assert_eq!(clock.final_until(), final_until(wm, lateness));
        }
    }
}
