//! The edges of event time, one named test each, with the numbers written
//! out by hand. Settings: watermark delay 5 s, allowed lateness 2 min.

use adclick_actors::click::{AdId, Click, Country, Filter, IpType};
use adclick_actors::settings::PipelineSettings;
use adclick_actors::store::checkpoint::Checkpoint;
use adclick_actors::store::PartitionStore;
use adclick_actors::testing::top_n;
use adclick_actors::testing::Batch;
use adclick_actors::testing::PartitionCore;
use adclick_actors::time::event_clock::{closed_until, final_until, NO_WATERMARK};
use std::collections::HashMap;

const MINUTE: i64 = 60_000;
const DELAY: i64 = 5_000;
const LATENESS: i64 = 2 * MINUTE;
/// 10:00:00 on some day, as epoch ms.
const T: i64 = 1_000 * MINUTE;

fn settings() -> PipelineSettings {
    let mut s = PipelineSettings::with_defaults(1);
    s.watermark_delay_ms = DELAY;
    s.allowed_lateness_ms = LATENESS;
    s
}

fn click(id: u128, ad: &str, ts: i64) -> Click {
    Click {
        // Real ids are 128-bit hashes: spread the small test ids the same way.
        id: id.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
        ad: AdId::parse(ad).unwrap(),
        ts,
        country: Country::parse("US").unwrap(),
        ip_type: IpType::V4,
        extras: [0; 4],
        seq: 0,
        repeat: false,
    }
}

/// Runs one batch of clicks; returns (duplicates, too late).
fn feed(core: &mut PartitionCore, clicks: Vec<Click>) -> (usize, usize) {
    let mut batch = Batch {
        clicks,
        ..Batch::default()
    };
    core.process(&mut batch);
    (batch.control.duplicates, batch.delta.rejects.len())
}

fn tick(core: &mut PartitionCore, now: i64) {
    let mut batch = Batch::default();
    batch.control.idle_tick = Some(now);
    core.process(&mut batch);
}

fn count(core: &PartitionCore, ad: &str, minute: i64) -> u64 {
    core.counts().count(
        &AdId::parse(ad).unwrap(),
        &Filter::ALL,
        minute,
        minute + MINUTE,
    )
}

fn top(core: &PartitionCore, from: i64, to: i64, n: usize) -> Vec<(String, u64)> {
    let mut sums = HashMap::new();
    core.counts().add_sums(&Filter::ALL, from, to, &mut sums);
    top_n(sums.into_iter().collect(), n)
        .into_iter()
        .map(|(a, c)| (a.to_string(), c))
        .collect()
}

#[test]
fn a_partition_that_never_receives_a_click_closes_minutes_by_idle_ticks() {
    let mut core = PartitionCore::new(0, &settings());
    assert_eq!(
        core.watermark(),
        NO_WATERMARK,
        "nothing closed before anything happened"
    );
    tick(&mut core, T + 30_000);
    assert_eq!(core.watermark(), T + 25_000);
    assert_eq!(
        closed_until(core.watermark()),
        T,
        "every minute before 10:00 is closed"
    );
    assert_eq!(count(&core, "ad-1", T - MINUTE), 0, "and counts 0");
}

#[test]
fn when_all_partitions_are_idle_they_close_the_same_minutes() {
    let mut partitions: Vec<PartitionCore> =
        (0..4).map(|p| PartitionCore::new(p, &settings())).collect();
    for core in &mut partitions {
        tick(core, T + 65_000);
    }
    let slowest = partitions.iter().map(|c| closed_until(c.watermark())).min();
    assert_eq!(
        slowest,
        Some(T + MINUTE),
        "popular's default window ends at 10:01"
    );
}

#[test]
fn a_burst_after_a_long_idle_is_counted_within_lateness_and_rejected_beyond() {
    let mut core = PartitionCore::new(0, &settings());
    tick(&mut core, T + 10 * MINUTE); // watermark 10:09:55
    let burst = vec![
        click(1, "a", T + 9 * MINUTE),          // 10:09: open
        click(2, "a", T + 7 * MINUTE + 1), // 10:07: closed, correctable until 10:10 → correction
        click(3, "a", T + 5 * MINUTE + 59_999), // 10:05: final since 10:08 → too late
    ];
    let (_, too_late) = feed(&mut core, burst);
    assert_eq!(too_late, 1);
    assert_eq!(count(&core, "a", T + 9 * MINUTE), 1);
    assert_eq!(count(&core, "a", T + 7 * MINUTE), 1);
    assert_eq!(count(&core, "a", T + 5 * MINUTE), 0);
}

#[test]
fn clicks_exactly_at_minute_boundaries_belong_to_the_minute_they_start() {
    let mut core = PartitionCore::new(0, &settings());
    feed(
        &mut core,
        vec![
            click(1, "a", T),
            click(2, "a", T + MINUTE - 1),
            click(3, "a", T + MINUTE),
        ],
    );
    assert_eq!(count(&core, "a", T), 2);
    assert_eq!(count(&core, "a", T + MINUTE), 1);
    // The watermark reaching a minute's end exactly closes it.
    feed(&mut core, vec![click(4, "a", T + MINUTE + DELAY)]);
    assert_eq!(core.watermark(), T + MINUTE);
    assert_eq!(closed_until(core.watermark()), T + MINUTE);
}

#[test]
fn disorder_larger_than_the_watermark_delay_becomes_a_correction() {
    let mut core = PartitionCore::new(0, &settings());
    feed(&mut core, vec![click(1, "a", T + MINUTE + 30_000)]); // watermark 10:01:25: 10:00 closed
    let (_, too_late) = feed(&mut core, vec![click(2, "a", T + 10_000)]); // 80 s out of order
    assert_eq!(too_late, 0);
    assert_eq!(
        count(&core, "a", T),
        1,
        "counted as a correction to the closed minute"
    );
    assert_eq!(
        core.watermark(),
        T + MINUTE + 25_000,
        "and it does not move the watermark"
    );
}

#[test]
fn a_late_click_inside_lateness_changes_the_top_n_of_a_sliding_window() {
    let mut core = PartitionCore::new(0, &settings());
    feed(
        &mut core,
        vec![click(1, "a", T), click(2, "a", T + 1), click(3, "b", T + 2)],
    );
    feed(&mut core, vec![click(4, "z", T + 3 * MINUTE)]); // closes 10:00..10:02
    assert_eq!(top(&core, T, T + 2 * MINUTE, 1), vec![("a".to_string(), 2)]);
    feed(&mut core, vec![click(5, "b", T + 5), click(6, "b", T + 6)]);
    assert_eq!(
        top(&core, T, T + 2 * MINUTE, 2),
        vec![("b".to_string(), 3), ("a".to_string(), 2)]
    );
}

#[test]
fn a_repeat_after_its_minute_closed_is_still_dropped() {
    let mut core = PartitionCore::new(0, &settings());
    feed(&mut core, vec![click(1, "a", T + 10_000)]);
    feed(&mut core, vec![click(2, "a", T + MINUTE + DELAY)]); // 10:00 closes
    let (duplicates, too_late) = feed(&mut core, vec![click(1, "a", T + 10_000)]);
    assert_eq!((duplicates, too_late), (1, 0));
    assert_eq!(count(&core, "a", T), 1);
}

/// The dedup horizon is the lateness: an id is kept until its minute is
/// final. A repeat after that is not counted either: it is too late.
#[test]
fn a_repeat_just_outside_the_dedup_horizon_is_too_late_not_counted() {
    let mut core = PartitionCore::new(0, &settings());
    feed(&mut core, vec![click(1, "a", T + 10_000)]);
    assert_eq!(core.remembered(), 1);
    feed(
        &mut core,
        vec![click(2, "b", T + MINUTE + LATENESS + DELAY)],
    ); // 10:00 final
    assert_eq!(final_until(core.watermark(), LATENESS), T + MINUTE);
    assert_eq!(core.remembered(), 1, "id 1 forgotten, id 2 remembered");
    let (duplicates, too_late) = feed(&mut core, vec![click(1, "a", T + 10_000)]);
    assert_eq!((duplicates, too_late), (0, 1));
    assert_eq!(count(&core, "a", T), 1);
}

/// A correction's id is kept a full lateness after it counted, not only
/// until its own (older) minute is final: a retry with a fresh ts soon after
/// is still a repeat.
#[test]
fn a_corrections_id_is_remembered_a_full_lateness_after_it_counted() {
    let mut core = PartitionCore::new(0, &settings());
    feed(&mut core, vec![click(1, "b", T + 3 * MINUTE - 1)]); // watermark 10:02:54.999
    feed(&mut core, vec![click(2, "a", T + 30_000)]); // correction to 10:00, final at 10:03
    feed(&mut core, vec![click(3, "b", T + 3 * MINUTE + DELAY)]); // 10:00 final now
    let (duplicates, _) = feed(&mut core, vec![click(2, "a", T + 3 * MINUTE + 6_000)]);
    assert_eq!(
        duplicates, 1,
        "the retry (same click id, fresh ts) is not counted again"
    );
}

#[test]
fn ts_of_zero_is_valid_but_too_late_once_time_has_moved() {
    let mut fresh = PartitionCore::new(0, &settings());
    let (_, too_late) = feed(&mut fresh, vec![click(1, "a", 0)]);
    assert_eq!(
        too_late, 0,
        "a partition that has seen nothing has no watermark yet"
    );
    let mut running = PartitionCore::new(0, &settings());
    tick(&mut running, T);
    let (_, too_late) = feed(&mut running, vec![click(1, "a", 0)]);
    assert_eq!(too_late, 1);
    // Negative, non-integer and far-future ts are refused before the core:
    // see ingest::decode's tests and the end-to-end test's rejected.future.
}

#[test]
fn a_restart_between_a_minutes_close_and_its_commit_replays_to_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = PartitionStore::open(dir.path(), 0).unwrap();
    let mut core = PartitionCore::resume(0, &settings(), store.recover(60).unwrap());
    let batch_of = |last_seq, clicks| {
        let mut batch = Batch {
            clicks,
            ..Batch::default()
        };
        batch.delta.last_seq = last_seq;
        batch
    };
    let first = || batch_of(2, vec![click(1, "a", T + 1), click(2, "a", T + 2)]);
    let closing = || batch_of(3, vec![click(3, "a", T + MINUTE + DELAY)]);
    let mut cp = Checkpoint::resume(0, NO_WATERMARK);
    let mut batch = first();
    core.process(&mut batch);
    cp.absorb(&mut batch);
    store.commit(1, &cp.take(), NO_WATERMARK).unwrap();
    let mut batch = closing();
    core.process(&mut batch); // 10:00 closes here…
    assert_eq!(closed_until(core.watermark()), T + MINUTE);
    // …and the process dies before that batch is committed.
    let recovered = store.recover(60).unwrap();
    assert_eq!(
        (recovered.last_seq, recovered.watermark),
        (2, T + 2 - DELAY)
    );
    let mut core = PartitionCore::resume(0, &settings(), recovered);
    assert_eq!(count(&core, "a", T), 2);
    let mut batch = closing(); // redelivered from sequence 3
    core.process(&mut batch);
    assert_eq!(closed_until(core.watermark()), T + MINUTE);
    assert_eq!(count(&core, "a", T), 2);
    assert_eq!(count(&core, "a", T + MINUTE), 1);
}

#[test]
fn the_wall_clock_jumping_backwards_never_moves_the_watermark_back() {
    let mut core = PartitionCore::new(0, &settings());
    tick(&mut core, T + 10 * MINUTE);
    tick(&mut core, T); // NTP stepped the clock back ten minutes
    assert_eq!(core.watermark(), T + 10 * MINUTE - DELAY);
    let (_, too_late) = feed(&mut core, vec![click(1, "a", T + 9 * MINUTE)]);
    assert_eq!(
        too_late, 0,
        "10:09 is still correctable: nothing reopened, nothing lost"
    );
}
