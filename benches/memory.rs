//! Bytes per remembered click id and per live counter, measured by filling
//! the real state structs and reading the process's resident memory.
//!
//! `cargo bench --bench memory` prints one line per structure at 2,000,000
//! entries, then the dedup ids' cost at every 5% step from 100,000 to
//! 4,000,000 ids with the worst and the best step, and the table's own
//! bytes per id at its worst and best over every single insertion. (Run alone: RSS is per
//! process. It re-runs itself with glibc's mmap threshold fixed: see
//! [`FIXED_MMAP_THRESHOLD`].)

use adclick_actors::click::{AdId, Filter};
use adclick_actors::testing::Increment;
use adclick_actors::testing::MinuteCounts;
use adclick_actors::testing::SeenClicks;
use adclick_actors::time::MINUTE_MS;
use adclick_actors::{Country, IpType};

/// Resident memory of this process, bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Click ids spread over 11 minutes, as a partition's live horizon holds them.
fn id_and_minute(i: u64) -> (u128, i64) {
    let id = u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    (id, (i % 11) as i64 * MINUTE_MS)
}

/// Fills one `SeenClicks` up to `n` ids and prints the bytes per id at every
/// 5% step from `first`, then the worst and the best step: a hash table's
/// cost per id swings with its fill between two growths, so one size says
/// little.
fn sweep_ids(first: u64, n: u64) {
    let before = rss();
    let mut seen = SeenClicks::default();
    let mut inserted = 0u64;
    let mut at = first;
    let mut worst = (0.0f64, 0u64);
    let mut best = (f64::MAX, 0u64);
    // The table's own bytes after every single insertion: the exact worst
    // case (right after a growth), which the 5% steps may straddle.
    let mut table_worst = (0.0f64, 0u64);
    let mut table_best = (f64::MAX, 0u64);
    while at <= n {
        while inserted < at {
            let (id, minute) = id_and_minute(inserted);
            seen.insert(id, minute);
            inserted += 1;
            if inserted >= first {
                let per_id = seen.heap_bytes() as f64 / inserted as f64;
                if per_id > table_worst.0 {
                    table_worst = (per_id, inserted);
                }
                if per_id < table_best.0 {
                    table_best = (per_id, inserted);
                }
            }
        }
        let per_id = rss().saturating_sub(before) as f64 / at as f64;
        println!("dedup: {at:>9} ids remembered, {per_id:5.1} bytes per id");
        if per_id > worst.0 {
            worst = (per_id, at);
        }
        if per_id < best.0 {
            best = (per_id, at);
        }
        at = (at + at / 20).max(at + 1);
    }
    println!(
        "dedup sweep {first}..{n}: worst {:.1} bytes per id (at {} ids), best {:.1} (at {} ids)",
        worst.0, worst.1, best.0, best.1
    );
    println!(
        "dedup table alone, after every insertion {first}..{n}: worst {:.1} bytes per id (at {} ids), best {:.1} (at {} ids)",
        table_worst.0, table_worst.1, table_best.0, table_best.1
    );
    drop(seen);
}

/// glibc's malloc raises its mmap threshold (up to 32 MiB) each time a large
/// mmapped block is freed, so the tables a growing set leaves behind end up on
/// the heap, where they stay resident: the RSS would then measure the
/// allocator's history, not the structure. Fixing the threshold turns that
/// adjustment off; the bench re-runs itself with it unless the caller chose.
const FIXED_MMAP_THRESHOLD: &str = "glibc.malloc.mmap_threshold=131072";

fn main() {
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        let rerun = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env("GLIBC_TUNABLES", FIXED_MMAP_THRESHOLD)
                .status()
        });
        match rerun {
            Ok(status) => std::process::exit(status.code().unwrap_or(1)),
            Err(e) => {
                eprintln!("could not re-run with {FIXED_MMAP_THRESHOLD} ({e}); measuring as is")
            }
        }
    }
    // `cargo test` runs benches once: keep that run small.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = if full { 2_000_000 } else { 10_000 };

    let before = rss();
    let mut seen = SeenClicks::default();
    for i in 0..n {
        let (id, minute) = id_and_minute(i);
        seen.insert(id, minute);
    }
    let per_id = (rss() - before) as f64 / n as f64;
    println!("dedup: {n} ids remembered, {per_id:.1} bytes per id");
    drop(seen);

    // Counters: 100,000 ads × minutes × the four default filters.
    let before = rss();
    let mut counts = MinuteCounts::new(i64::MIN);
    let us = Country::parse("US");
    let filters = [
        Filter::ALL,
        Filter {
            country: us,
            ..Filter::ALL
        },
        Filter {
            ip_type: Some(IpType::V4),
            ..Filter::ALL
        },
        Filter {
            country: us,
            ip_type: Some(IpType::V4),
            ..Filter::ALL
        },
    ];
    let ads: Vec<AdId> = (0..100_000)
        .map(|i| AdId::parse(&format!("ad-{i}")).unwrap_or_else(|| unreachable!()))
        .collect();
    let mut counters = 0u64;
    'fill: for minute in 0.. {
        for ad in &ads {
            for filter in &filters {
                counts.apply(&Increment {
                    minute: minute * MINUTE_MS,
                    ad: *ad,
                    filter: *filter,
                    count: 1,
                    total: 0,
                });
                counters += 1;
                if counters == n {
                    break 'fill;
                }
            }
        }
    }
    let per_counter = (rss() - before) as f64 / counters as f64;
    println!("reducer: {counters} live (ad, minute, filter) counters, {per_counter:.1} bytes per counter");
    drop(counts);

    if full {
        sweep_ids(100_000, 4_000_000);
    }
}
