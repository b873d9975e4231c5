//! The malloc settings every adclick command starts with.
//!
//! Each batch allocates buffers of 100 KB to a few hundred KB (its clicks,
//! their payloads, the window's increments) and frees them milliseconds
//! later. glibc's malloc, left to its defaults, hands the top of the heap
//! back to the kernel whenever more than 128 KiB are free there
//! (`M_TRIM_THRESHOLD`), and serves large requests from fresh mappings below
//! a threshold that moves with what was freed (`M_MMAP_THRESHOLD`). So the
//! next batch takes its pages again, one page fault (and a zeroed page) each:
//! on the core bench, 10% of the time went to the kernel.
//!
//! Fixing both thresholds keeps that memory in the process: up to 64 MiB of
//! free heap top is kept, and allocations of 4 MiB or more (the dedup and
//! counter tables as they grow) still get mappings of their own, so they go
//! back to the kernel when freed. Figures: `docs/PERFORMANCE.md`.

/// Sets malloc's trim and mmap thresholds (glibc only; elsewhere nothing).
/// Returns whether they were set.
pub fn keep_batch_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning; it takes plain
        // integers and is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
