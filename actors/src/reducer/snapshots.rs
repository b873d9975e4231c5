//! When the reducer snapshots whole minutes, so the count log stays short.
//!
//! Each commit appends the totals its batches changed to the count log (see
//! [`crate::store::packed_counts`]): cheap per commit, but the log grows
//! with the click rate, and recovery replays it. A snapshot writes every
//! counter of a minute at once; the log's older totals of that minute are
//! then moot. Two moments call for one:
//!
//! - **Full snapshot**, when the totals logged since the last full snapshot
//!   reach twice the counters of the minutes they touched (and at least a
//!   floor, [`SNAPSHOT_LOG_FLOOR`](crate::settings::SNAPSHOT_LOG_FLOOR) by
//!   default): every such minute is written, and the writer deletes the
//!   older log records. Snapshots then cost at most one packed counter per two
//!   logged ones, and recovery replays at most about twice the live state.
//!   Where the log holds only the finest counters (count-log layout 3, see
//!   [`crate::store::packed_counts`]), each finest total counts as two
//!   (`FINEST_TOTAL_WEIGHT`): full snapshots come a little more than half as
//!   often as with every counter logged, and recovery replays at most about
//!   the live state's counters in finest totals, each setting one counter
//!   and deriving the coarser ones.
//! - **Final snapshot**, when a minute turns final and the log still holds
//!   totals of it: its history must not depend on the log, which the next
//!   full snapshot trims without it.

use crate::batch::{Batch, Increments, MinuteSnapshot};
use crate::click::FilterKinds;
use crate::reducer::minute_counts::MinuteCounts;
use crate::store::packed_minute::PackedMinute;
use crate::time::event_clock::NO_WATERMARK;
use std::collections::BTreeSet;

/// What a finest total of count-log layout 3 counts as, in totals logged.
/// Recovery writes it and derives the coarser counters from it (four
/// counters with the default filters). Counted once, full snapshots were
/// rarest, but a restart after 10 minutes at 20,000 clicks/s replayed 11 M
/// totals in 4.2 s (2.4 s with every counter logged); counted as the four
/// counters recovery writes, snapshots came more often than with every
/// counter logged and cost more than the log saved (`benches/core.rs`).
const FINEST_TOTAL_WEIGHT: usize = 2;

/// The minutes the count log holds totals of since their last snapshot.
#[derive(Debug)]
pub struct MinuteSnapshots {
    logged_minutes: BTreeSet<i64>,
    /// Totals logged since the last full snapshot.
    logged: usize,
    floor: usize,
    /// Set when the log holds only the finest counters of these kinds (as
    /// the writer's checkpoints log them): only those count, as
    /// `FINEST_TOTAL_WEIGHT` totals each.
    finest_only: Option<FilterKinds>,
}

impl MinuteSnapshots {
    /// Nothing logged yet; full snapshots once `floor` totals are logged (and
    /// twice the counters they touched).
    #[cfg(test)]
    pub fn new(floor: usize) -> MinuteSnapshots {
        MinuteSnapshots::resumed(floor, Vec::new(), 0)
    }

    /// Resumes with what recovery replayed from the log.
    pub fn resumed(floor: usize, logged_minutes: Vec<i64>, logged: usize) -> MinuteSnapshots {
        MinuteSnapshots {
            logged_minutes: logged_minutes.into_iter().collect(),
            logged,
            floor,
            finest_only: None,
        }
    }

    /// Counts as logged only the finest counters of `kinds`, as the count
    /// log holds them where the counted filters have a finest one (see
    /// [`crate::store::checkpoint::Checkpoint::logging_finest_only`]).
    pub fn logging_finest_only(mut self, kinds: Option<FilterKinds>) -> MinuteSnapshots {
        self.finest_only = kinds;
        self
    }

    /// Notes the totals a batch logs (its increments, as `counts` just applied
    /// them) and adds to it the snapshots that are due. `final_before` and
    /// `final_after` are the first non-final minute before and after the batch.
    pub fn after_batch(
        &mut self,
        counts: &MinuteCounts,
        batch: &mut Batch,
        final_before: i64,
        final_after: i64,
    ) {
        self.note(&batch.delta.increments);
        if self.logged >= self.floor {
            let counters: usize = self
                .logged_minutes
                .iter()
                .map(|m| counts.counters_in(*m))
                .sum();
            if self.logged >= 2 * counters {
                self.logged = 0;
                for minute in std::mem::take(&mut self.logged_minutes) {
                    batch.delta.snapshots.extend(snapshot(counts, minute));
                }
                batch.delta.full_snapshot = true;
                return;
            }
        }
        if final_after != final_before && final_after != NO_WATERMARK {
            let still_open = self.logged_minutes.split_off(&final_after);
            for minute in std::mem::replace(&mut self.logged_minutes, still_open) {
                batch.delta.snapshots.extend(snapshot(counts, minute));
            }
        }
    }

    fn note(&mut self, increments: &Increments) {
        self.logged += match self.finest_only {
            None => increments.len(),
            Some(kinds) => {
                let finest: usize = increments
                    .groups()
                    .map(|(_, counts)| counts.iter().filter(|c| kinds.is_finest(&c.filter)).count())
                    .sum();
                finest * FINEST_TOTAL_WEIGHT
            }
        };
        let mut last = None;
        for group in increments.group_heads() {
            // Groups of one minute mostly follow each other.
            if last != Some(group.minute) {
                self.logged_minutes.insert(group.minute);
                last = Some(group.minute);
            }
        }
    }

    /// Minutes the log holds totals of that no snapshot covers yet.
    #[cfg(test)]
    pub fn logged_minutes(&self) -> impl Iterator<Item = i64> + '_ {
        self.logged_minutes.iter().copied()
    }
}

/// Every counter of `minute`, packed; `None` for a minute below the counts'
/// floor (evicted, so already final and snapshot: memory no longer holds it,
/// and an empty snapshot would replace the good one).
fn snapshot(counts: &MinuteCounts, minute: i64) -> Option<MinuteSnapshot> {
    if minute < counts.floor() {
        return None;
    }
    // About 12 bytes a counter (an ad id like `ad-12345`, its length and a
    // short total): sized once instead of doubling through a large minute.
    let mut packed = PackedMinute::with_capacity(counts.counters_in(minute) * 12);
    // Filter by filter, so each filter is packed once per section.
    counts.for_each_counter_of(minute, |ad, filter, total| {
        packed.push(filter, ad, total);
    });
    Some(MinuteSnapshot { minute, packed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Increment;
    use crate::click::{AdId, Filter};
    use crate::settings::SNAPSHOT_LOG_FLOOR;
    use crate::time::MINUTE_MS;

    fn delta(minute: i64, ad: &str) -> Increment {
        Increment {
            minute: minute * MINUTE_MS,
            ad: AdId::parse(ad).unwrap(),
            filter: Filter::ALL,
            count: 1,
            total: 0,
        }
    }

    fn run(
        counts: &mut MinuteCounts,
        snapshots: &mut MinuteSnapshots,
        deltas: Vec<Increment>,
        finals: (i64, i64),
    ) -> Batch {
        let mut batch = Batch::default();
        batch.delta.increments = deltas.into_iter().collect();
        counts.apply_all(&mut batch.delta.increments);
        snapshots.after_batch(
            counts,
            &mut batch,
            finals.0 * MINUTE_MS,
            finals.1 * MINUTE_MS,
        );
        batch
    }

    #[test]
    fn a_minute_turning_final_is_snapshot_only_if_the_log_holds_it() {
        let mut counts = MinuteCounts::default();
        let mut snapshots = MinuteSnapshots::new(SNAPSHOT_LOG_FLOOR);
        let batch = run(
            &mut counts,
            &mut snapshots,
            vec![delta(1, "a"), delta(1, "a"), delta(2, "b"), delta(3, "c")],
            (0, 0),
        );
        assert!(batch.delta.snapshots.is_empty());
        assert_eq!(snapshots.logged_minutes().collect::<Vec<_>>().len(), 3);

        let batch = run(&mut counts, &mut snapshots, vec![], (0, 3));
        let minutes: Vec<i64> = batch.delta.snapshots.iter().map(|s| s.minute).collect();
        assert_eq!(minutes, vec![MINUTE_MS, 2 * MINUTE_MS]);
        assert!(!batch.delta.full_snapshot);
        let read = crate::store::packed_minute::read(
            MINUTE_MS,
            batch.delta.snapshots[0].packed.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            read.iter()
                .map(|d| (d.ad.to_string(), d.total))
                .collect::<Vec<_>>(),
            vec![("a".to_string(), 2)]
        );
        let batch = run(&mut counts, &mut snapshots, vec![], (3, 4));
        let minutes: Vec<i64> = batch.delta.snapshots.iter().map(|s| s.minute).collect();
        assert_eq!(minutes, vec![3 * MINUTE_MS]);
        let batch = run(&mut counts, &mut snapshots, vec![], (4, 9));
        assert!(batch.delta.snapshots.is_empty(), "nothing left in the log");
    }

    #[test]
    fn a_minute_below_the_floor_is_never_snapshot_empty() {
        // Memory answers from minute 5 on; the log (after a restart) names
        // minute 3, whose snapshot the file already holds.
        let mut counts = MinuteCounts::new(5 * MINUTE_MS);
        let mut snapshots = MinuteSnapshots::resumed(SNAPSHOT_LOG_FLOOR, vec![3 * MINUTE_MS], 10);
        let batch = run(&mut counts, &mut snapshots, vec![delta(6, "a")], (3, 7));
        let minutes: Vec<i64> = batch.delta.snapshots.iter().map(|s| s.minute).collect();
        assert_eq!(minutes, vec![6 * MINUTE_MS]);
    }

    #[test]
    fn with_finest_counters_logged_only_those_count_at_their_weight() {
        let kinds = FilterKinds::of(&crate::DimensionSet::defaults());
        let mut counts = MinuteCounts::default();
        let mut snapshots = MinuteSnapshots::new(SNAPSHOT_LOG_FLOOR).logging_finest_only(kinds);
        let fine = Filter {
            country: crate::click::Country::parse("US"),
            ip_type: Some(crate::click::IpType::V4),
            ..Filter::ALL
        };
        let mut deltas = vec![delta(1, "a"), delta(1, "b")];
        deltas.push(Increment {
            filter: fine,
            ..delta(1, "a")
        });
        run(&mut counts, &mut snapshots, deltas, (0, 0));
        assert_eq!(snapshots.logged, FINEST_TOTAL_WEIGHT, "one finest total");
        assert_eq!(
            snapshots.logged_minutes().collect::<Vec<_>>(),
            vec![MINUTE_MS]
        );
    }

    #[test]
    fn a_full_snapshot_comes_once_the_log_is_twice_the_state() {
        let mut counts = MinuteCounts::default();
        let mut snapshots = MinuteSnapshots::new(SNAPSHOT_LOG_FLOOR);
        // Ten hot counters in two minutes: the log grows, the state does not.
        let mut logged = 0;
        loop {
            let deltas: Vec<Increment> = (0..1000)
                .map(|i| delta(1 + i % 2, &format!("ad{}", i % 5)))
                .collect();
            logged += deltas.len();
            let batch = run(&mut counts, &mut snapshots, deltas, (0, 0));
            if batch.delta.full_snapshot {
                break;
            }
            assert!(batch.delta.snapshots.is_empty());
            assert!(
                logged < 2 * SNAPSHOT_LOG_FLOOR,
                "no snapshot after {logged} totals"
            );
        }
        assert!(logged >= SNAPSHOT_LOG_FLOOR);
        assert_eq!(snapshots.logged_minutes().count(), 0);
    }
}
