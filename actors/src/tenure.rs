//! How long this process may still act for a partition: the fence a writer
//! checks before each commit, ack and publication.
//!
//! With one process owning every partition (the embedded default) the tenure
//! never ends. In a cluster, a partition's lease in the NATS KV bucket
//! expires `lease_ttl` after its last renewal unless renewed; the owner
//! counts its tenure from the moment it *sent* the renewal, minus a margin,
//! so it stops acting before the server could let another member acquire
//! the lease. A process paused past that point (a GC pause, SIGSTOP, a
//! network split) finds its tenure over when it resumes and acts no more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A partition's tenure in this process.
#[derive(Debug)]
pub struct Tenure {
    /// The ownership epoch (the lease's revision when acquired; 0 embedded).
    epoch: u64,
    /// When the process's clock started (tenure instants are offsets from it).
    origin: Instant,
    /// Milliseconds after `origin` until which the tenure holds; `u64::MAX`:
    /// forever.
    until_ms: AtomicU64,
    /// Set by [`Tenure::end`]: no renewal brings it back.
    ended: std::sync::atomic::AtomicBool,
}

/// The tenure is over: another member may own the partition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the lease of epoch {epoch} is no longer held: this process no longer acts for the partition"
)]
pub struct TenureOver {
    /// The epoch that ended.
    pub epoch: u64,
}

impl Tenure {
    /// A tenure that never ends (one process owns every partition).
    pub fn forever() -> Tenure {
        Tenure {
            epoch: 0,
            origin: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
            ended: Default::default(),
        }
    }

    /// A tenure of `epoch` holding until `until`.
    pub fn until(epoch: u64, until: Instant) -> Tenure {
        let tenure = Tenure {
            epoch,
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
            ended: Default::default(),
        };
        tenure.extend_to(until);
        tenure
    }

    /// The ownership epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Moves the end to `until` (after a renewal); never shortens it, and
    /// does nothing once [`Tenure::end`] was called.
    pub fn extend_to(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.origin).as_millis();
        self.until_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX - 1), Ordering::AcqRel);
    }

    /// Ends the tenure now, for good (the lease was lost or released).
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.until_ms.store(0, Ordering::Release);
    }

    /// Whether the process may still act for the partition.
    pub fn check(&self) -> Result<(), TenureOver> {
        if self.ended.load(Ordering::Acquire) {
            return Err(TenureOver { epoch: self.epoch });
        }
        let until = self.until_ms.load(Ordering::Acquire);
        if until == u64::MAX {
            return Ok(());
        }
        let now = self.origin.elapsed();
        if now < Duration::from_millis(until) {
            Ok(())
        } else {
            Err(TenureOver { epoch: self.epoch })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forever_never_ends_until_ended() {
        let tenure = Tenure::forever();
        assert_eq!(tenure.check(), Ok(()));
        assert_eq!(tenure.epoch(), 0);
    }

    #[test]
    fn a_tenure_ends_at_its_time_unless_extended() {
        let tenure = Tenure::until(7, Instant::now() + Duration::from_millis(30));
        assert_eq!(tenure.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(tenure.check(), Err(TenureOver { epoch: 7 }));
        tenure.extend_to(Instant::now() + Duration::from_secs(5));
        assert_eq!(tenure.check(), Ok(()));
        tenure.end();
        assert_eq!(tenure.check(), Err(TenureOver { epoch: 7 }));
        tenure.extend_to(Instant::now() + Duration::from_secs(5));
        assert_eq!(
            tenure.check(),
            Err(TenureOver { epoch: 7 }),
            "ended for good"
        );
        let forever = Tenure::forever();
        forever.end();
        assert!(forever.check().is_err());
    }
}
