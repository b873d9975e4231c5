//! Bytes per remembered click id and per live counter, measured by filling
//! the real state structs and reading the process's resident memory.
//!
//! `cargo bench --bench memory` prints one line per structure. (Run alone:
//! RSS is per process.)

use adclick_actors::batch::CountDelta;
use adclick_actors::click::{AdId, Filter};
use adclick_actors::dedup::seen_clicks::SeenClicks;
use adclick_actors::reducer::minute_counts::MinuteCounts;
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

fn main() {
    // `cargo test` runs benches once: keep that run small.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = if full { 2_000_000 } else { 10_000 };

    let before = rss();
    let mut seen = SeenClicks::default();
    for i in 0..n {
        let id = u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        seen.insert(id, (i % 11) as i64 * MINUTE_MS); // ids spread over 11 minutes
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
                counts.apply(&CountDelta {
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
}
