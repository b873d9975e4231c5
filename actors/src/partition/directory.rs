//! Where the gateway finds each partition: its reducer, whether it is ready,
//! and its watermark. Written by the partition's actors, read by HTTP handlers.

use crate::reducer::ReducerMsg;
use crate::time::event_clock::SharedWatermark;
use ractor::ActorRef;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One partition's entry.
pub struct PartitionEntry {
    /// The partition number.
    pub partition: u32,
    reducer: RwLock<Option<ActorRef<ReducerMsg>>>,
    ready: AtomicBool,
    watermark: Arc<SharedWatermark>,
    restarts: AtomicU64,
}

impl PartitionEntry {
    fn new(partition: u32) -> PartitionEntry {
        PartitionEntry {
            partition,
            reducer: RwLock::new(None),
            ready: AtomicBool::new(false),
            watermark: Arc::default(),
            restarts: AtomicU64::new(0),
        }
    }

    /// The reducer to query, if the partition is recovered and consuming.
    pub fn reducer(&self) -> Option<ActorRef<ReducerMsg>> {
        if !self.ready.load(Ordering::Acquire) {
            return None;
        }
        self.reducer.read().ok()?.clone()
    }

    /// Publishes a freshly built pipeline (or `None` while rebuilding).
    pub fn set_reducer(&self, reducer: Option<ActorRef<ReducerMsg>>) {
        self.ready.store(reducer.is_some(), Ordering::Release);
        if let Ok(mut held) = self.reducer.write() {
            *held = reducer;
        }
    }

    /// Whether the partition answers queries.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The partition's current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark.get()
    }

    /// Where the partition's reducer publishes its watermark.
    pub fn shared_watermark(&self) -> Arc<SharedWatermark> {
        self.watermark.clone()
    }

    /// Counts a rebuild after a failure.
    pub fn count_restart(&self) -> u64 {
        self.restarts.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Rebuilds after a failure since this process started.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }
}

/// All partitions of the stream, indexed by partition number.
pub struct PartitionDirectory {
    entries: Vec<Arc<PartitionEntry>>,
}

impl PartitionDirectory {
    /// A directory of `partitions` partitions, none ready yet.
    pub fn new(partitions: u32) -> PartitionDirectory {
        PartitionDirectory {
            entries: (0..partitions)
                .map(|p| Arc::new(PartitionEntry::new(p)))
                .collect(),
        }
    }

    /// The entry of partition `p`.
    pub fn entry(&self, p: u32) -> Option<&Arc<PartitionEntry>> {
        self.entries.get(p as usize)
    }

    /// Every entry.
    pub fn entries(&self) -> &[Arc<PartitionEntry>] {
        &self.entries
    }
}

/// The partition of an ad: the same FNV-1a hash nats-server's
/// `partition(P, 1)` subject transform applies to the ad id token.
pub fn partition_of(ad_id: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in ad_id.as_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}
