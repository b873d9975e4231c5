//! # adclick-actors: the per-partition pipeline
//!
//! Every partition of the `CLICKS` stream runs the same chain of five actors,
//! owned by one [`partition::PartitionSupervisor`]:
//!
//! ```text
//!  JetStream ──► ingest ──► dedup ──► window ──► reducer ──► writer ──► redb commit ──► ack
//!               decode      drop       event      counts      one write
//!               validate    repeated   time,      in memory,  transaction,
//!                           click ids  lateness   queries     then AckAll
//! ```
//!
//! A [`batch::Batch`] travels the chain; each actor applies its pure state to the
//! batch and adds what the checkpoint needs (new click ids, count increments, the
//! watermark). The writer commits everything a batch carries in one redb
//! transaction together with the last stream sequence, and only then acks the
//! JetStream messages, so a crash at any point replays exactly what was not
//! committed.
//!
//! Each actor lives in its own file beside the plain state it wraps, and
//! the actor is glue: it calls the state, records metrics, hands the batch
//! on through a [`batch::NextStage`] the supervisor wired.
//!
//! | stage | actor | plain state |
//! |---|---|---|
//! | ingest | [`ingest::IngestActor`] | [`ingest::decode`], [`ingest::delivery_order::DeliveryOrder`], [`ingest::pull_subscription::Owed`] |
//! | dedup | [`dedup::DedupActor`] | [`dedup::deduplicator::Deduplicator`] over [`dedup::seen_clicks::SeenClicks`] |
//! | window | [`window::WindowActor`] | [`window::minute_assigner::MinuteAssigner`], [`window::increment_fold::IncrementFold`] |
//! | reducer | [`reducer::ReducerActor`] | [`reducer::ReducerCore`] |
//! | writer | [`writer::WriterActor`] | [`store::checkpoint::Checkpoint`], [`writer::commit_timing::CommitTiming`] |
//!
//! Layers (ARCHITECTURE.md; `tests/layering.rs` holds them): a stage never
//! names another stage; shared leaves ([`batch`], [`click`], [`time`],
//! [`feed`], [`store`], …) name only leaves; the wiring ([`core`],
//! [`partition`], [`partitions`], [`recount`], [`testing`]) puts stages
//! together. From outside the crate, the service sees
//! [`partitions::Partitions`] (and, for `adclick reconcile --input`, the
//! batch [`recount::Recount`]), tests and benchmarks [`testing`].

// The stages and the wiring: reached from outside only through `partitions`
// (the service) and `testing` (tests and benchmarks).
pub(crate) mod ack;
pub(crate) mod batch;
pub(crate) mod core;
pub(crate) mod dedup;
pub(crate) mod dense_index;
pub(crate) mod fast_hash;
pub(crate) mod fault;
pub(crate) mod feed;
pub(crate) mod ingest;
pub(crate) mod partition;
pub(crate) mod prefetch;
pub(crate) mod reducer;
pub(crate) mod reject;
pub(crate) mod tenure;
pub(crate) mod window;
pub(crate) mod writer;

// The public interface: the façade, and the vocabulary it speaks.
pub mod click;
pub mod cluster;
pub mod dimension;
pub mod partitions;
pub mod recount;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod time;

pub use click::{AdId, Click, Country, Filter, FilterQuery, IpType};
pub use settings::{DimensionSet, FeedSettings, PipelineSettings};
