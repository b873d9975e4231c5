//! The pipeline's plain state, for tests and benchmarks: the reference
//! model, the property and memory tests, and the criterion benches drive
//! these directly, without actors or NATS.
//!
//! Not an interface for the service: `serve` and the gateway go through
//! [`crate::partitions::Partitions`]. Everything here may change with the
//! pipeline; a stage module itself stays private to the crate.

pub use crate::batch::{Batch, Increment, Increments};
pub use crate::core::PartitionCore;
pub use crate::dedup::deduplicator::Deduplicator;
pub use crate::dedup::seen_clicks::SeenClicks;
pub use crate::feed::FeedItem;
pub use crate::ingest::decode;
pub use crate::reducer::ad_slots::AdSlots;
pub use crate::reducer::minute_counts::MinuteCounts;
pub use crate::reducer::top_n::top_n;
pub use crate::window::minute_assigner::MinuteAssigner;
