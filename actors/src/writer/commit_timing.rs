//! When the writer commits: the group-commit decision as plain state.
//!
//! A commit is due when the checkpoint interval has passed since the last
//! one, when half the batches ingest may have in flight are waiting (ingest
//! would soon stall on credits), when a waiting batch closed a minute (feed
//! subscribers and history readers wait for it), or when a drain waits.
//! Otherwise the writer waits out the rest of the interval; batches that
//! arrive meanwhile join the same commit.

use std::time::Duration;

/// The writer's commit rule.
#[derive(Clone, Copy, Debug)]
pub struct CommitTiming {
    /// The longest a batch waits for its commit (`checkpoint_interval`).
    pub interval: Duration,
    /// Ingest's in-flight batch budget (`max_batches_in_flight`).
    pub max_batches_in_flight: usize,
}

/// What the writer has waiting for a commit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Waiting {
    /// Batches holding one of ingest's credits.
    pub credits: usize,
    /// Whether one of them closed a minute.
    pub closes_minute: bool,
    /// Whether a drain waits for the commit.
    pub drain: bool,
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitDue {
    /// Commit now.
    Now,
    /// Look again after this long (the rest of the interval).
    After(Duration),
}

impl CommitTiming {
    /// Whether what is `waiting` commits now, `since_last` after the last
    /// commit started.
    pub fn due(&self, since_last: Duration, waiting: Waiting) -> CommitDue {
        if since_last >= self.interval
            || waiting.credits * 2 >= self.max_batches_in_flight
            || waiting.closes_minute
            || waiting.drain
        {
            CommitDue::Now
        } else {
            CommitDue::After(self.interval - since_last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: CommitTiming = CommitTiming {
        interval: Duration::from_millis(100),
        max_batches_in_flight: 16,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_few_batches_wait_out_the_interval() {
        let waiting = Waiting {
            credits: 7,
            ..Waiting::default()
        };
        assert_eq!(TIMING.due(ms(30), waiting), CommitDue::After(ms(70)));
        assert_eq!(TIMING.due(ms(100), waiting), CommitDue::Now);
        assert_eq!(TIMING.due(ms(250), waiting), CommitDue::Now);
    }

    #[test]
    fn half_the_credits_waiting_commit_at_once() {
        let waiting = Waiting {
            credits: 8,
            ..Waiting::default()
        };
        assert_eq!(TIMING.due(ms(1), waiting), CommitDue::Now);
    }

    #[test]
    fn a_closed_minute_or_a_drain_does_not_wait() {
        let closes = Waiting {
            credits: 1,
            closes_minute: true,
            ..Waiting::default()
        };
        let drain = Waiting {
            drain: true,
            ..Waiting::default()
        };
        assert_eq!(TIMING.due(ms(0), closes), CommitDue::Now);
        assert_eq!(TIMING.due(ms(0), drain), CommitDue::Now);
    }
}
