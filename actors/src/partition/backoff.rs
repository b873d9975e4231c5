//! How long a partition waits before rebuilding a failed chain.
//!
//! A chain that keeps failing soon after it starts (a damaged message, a
//! broker that refuses it) is retried after 200 ms, 400 ms, … up to 5 s, so
//! it does not spin; a chain that ran healthily for a while before failing
//! starts the count afresh and is rebuilt after 200 ms.

use std::time::Duration;

/// A chain that ran this long without failing resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The failures of one partition's chains, in a row.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestartBackoff {
    failures_in_a_row: u32,
}

impl RestartBackoff {
    /// Counts a failure of a chain that ran for `ran` (`None`: it never
    /// finished starting) and returns how long to wait before the rebuild.
    pub fn failed(&mut self, ran: Option<Duration>) -> Duration {
        if ran.is_some_and(|ran| ran > HEALTHY_AFTER) {
            self.failures_in_a_row = 0;
        }
        self.failures_in_a_row += 1;
        let wait = Duration::from_millis(100u64 << self.failures_in_a_row.min(6));
        wait.min(MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quick_failures_back_off_up_to_five_seconds() {
        let mut backoff = RestartBackoff::default();
        let waits: Vec<Duration> = (0..8)
            .map(|_| backoff.failed(Some(Duration::from_secs(1))))
            .collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(ms));
    }

    #[test]
    fn a_chain_that_never_started_counts_as_a_quick_failure() {
        let mut backoff = RestartBackoff::default();
        assert_eq!(backoff.failed(None), ms(200));
        assert_eq!(backoff.failed(None), ms(400));
    }

    #[test]
    fn a_healthy_run_starts_the_count_afresh() {
        let mut backoff = RestartBackoff::default();
        for _ in 0..5 {
            backoff.failed(None);
        }
        assert_eq!(backoff.failed(Some(HEALTHY_AFTER + ms(1))), ms(200));
        assert_eq!(backoff.failed(Some(HEALTHY_AFTER)), ms(400));
    }
}
