//! A cache hint for the hot tables (dedup's buckets, the ad and group
//! indexes, the counters): ask for a line a few items ahead so that the
//! misses of consecutive items overlap instead of queueing.

/// Asks the CPU to bring the cache line holding `value` into cache. A hint:
/// it never faults and has no effect on results.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults or reads into the program; the
    // pointer is to a live value besides.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
