//! Fault injection for the reliability tests, compiled only with the
//! `fault-injection` cargo feature (never in a release build of the service).
//!
//! `ADCLICK_FAULT=<point>:<partition>:<n>` makes the `n`-th pass of partition
//! `partition` through `point` fail, once per process:
//!
//! | point | where | what |
//! |---|---|---|
//! | `panic-window` | window actor, on a batch | panics (the supervisor rebuilds the partition) |
//! | `abort-before-commit` | writer, after rejects are published, before the redb commit | aborts the process |
//! | `abort-after-commit` | writer, after the redb commit, before the ack | aborts the process |
//! | `abort-before-feed` | writer's publisher, before publishing a commit's counts publications (committed, unrendered) | aborts the process |
//! | `drop-delivery` | ingest, on a delivered message | drops it, as if lost in transit |

/// Marks a pass through `point` for `partition`; fails there if configured.
#[cfg(feature = "fault-injection")]
pub fn hit(point: &str, partition: u32) {
    if fires(point, partition) {
        tracing::warn!(point, partition, "injected fault");
        if point.starts_with("panic") {
            panic!("injected fault at {point} in partition {partition}");
        }
        std::process::abort();
    }
}

/// Whether a `drop-…` point says to lose this pass.
#[cfg(feature = "fault-injection")]
pub fn drops(point: &str, partition: u32) -> bool {
    let fire = fires(point, partition);
    if fire {
        tracing::warn!(point, partition, "injected fault: dropped");
    }
    fire
}

#[cfg(feature = "fault-injection")]
fn fires(point: &str, partition: u32) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PLAN: OnceLock<Option<(String, u32, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let plan = PLAN.get_or_init(|| {
        let text = std::env::var("ADCLICK_FAULT").ok()?;
        let mut parts = text.split(':');
        let point = parts.next()?.to_string();
        let partition = parts.next()?.parse().ok()?;
        let nth = parts.next()?.parse().ok()?;
        Some((point, partition, nth))
    });
    let Some((want, p, nth)) = plan else {
        return false;
    };
    want == point && *p == partition && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *nth
}

/// Without the feature: nothing, and compiled away.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit(_point: &str, _partition: u32) {}

/// Without the feature: never drops.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn drops(_point: &str, _partition: u32) -> bool {
    false
}
