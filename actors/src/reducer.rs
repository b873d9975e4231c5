//! Reducer: holds the partition's minute counts in memory, answers the
//! gateway's queries (counts and top-N over any range), and passes batches to
//! the writer. Minutes older than the in-memory span are read from redb.

pub mod counter_table;
pub mod minute_counts;
pub mod top_n;

use crate::batch::Batch;
use crate::click::{AdId, FilterQuery};
use crate::partition::directory::PartitionSlot;
use crate::settings::PipelineSettings;
use crate::telemetry::PartitionMeters;
use crate::time::{now_ms, MINUTE_MS};
use crate::window::event_clock::{closed_until, final_until, NO_WATERMARK};
use crate::writer::store::PartitionStore;
use crate::writer::WriterMsg;
use minute_counts::{split_at_floor, MinuteCounts};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Clicks of one ad in a range of minutes.
#[derive(Clone, Debug)]
pub struct CountQuery {
    /// The ad.
    pub ad: AdId,
    /// The filter, as asked (resolved by the partition).
    pub filter: FilterQuery,
    /// First minute, epoch ms (inclusive).
    pub from: i64,
    /// End, epoch ms (exclusive).
    pub to: i64,
}

/// The most clicked ads of a partition in a range of minutes.
#[derive(Clone, Debug)]
pub struct TopQuery {
    /// The filter, as asked (resolved by the partition).
    pub filter: FilterQuery,
    /// First minute, epoch ms (inclusive).
    pub from: i64,
    /// End, epoch ms (exclusive).
    pub to: i64,
    /// How many ads.
    pub n: usize,
}

/// A partition's answer, with the watermark it was computed at.
#[derive(Clone, Debug)]
pub struct Answer<T> {
    /// The result.
    pub value: T,
    /// The partition's watermark when answering.
    pub watermark: i64,
}

/// Where a top-N answer goes: ads with their counts, ranked.
pub type TopReply = RpcReplyPort<Result<Answer<Vec<(AdId, u64)>>, String>>;

/// Messages to the reducer.
pub enum ReducerMsg {
    /// A batch from the window.
    Batch(Box<Batch>),
    /// A count query from the gateway.
    Count(CountQuery, RpcReplyPort<Result<Answer<u64>, String>>),
    /// A top-N query from the gateway.
    Top(TopQuery, TopReply),
}

/// What the reducer starts from.
pub struct ReducerArgs {
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// Where batches go.
    pub next: ActorRef<WriterMsg>,
    /// The partition's file, for minutes no longer in memory.
    pub store: Arc<PartitionStore>,
    /// Counts recovered from the checkpoint.
    pub counts: MinuteCounts,
    /// Watermark at the last checkpoint.
    pub watermark: i64,
    /// Watermark of the last finished commit (written by the writer).
    pub committed_watermark: Arc<AtomicI64>,
    /// Where the gateway reads the partition's watermark.
    pub slot: Arc<PartitionSlot>,
    /// Metric handles.
    pub meters: PartitionMeters,
}

/// The reducer actor.
pub struct ReducerActor;

/// The reducer's running state.
pub struct ReducerState {
    args: ReducerArgs,
    watermark: i64,
}

impl Actor for ReducerActor {
    type Msg = ReducerMsg;
    type State = ReducerState;
    type Arguments = ReducerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReducerMsg>,
        args: ReducerArgs,
    ) -> Result<ReducerState, ActorProcessingErr> {
        args.slot.set_watermark(args.watermark);
        Ok(ReducerState {
            watermark: args.watermark,
            args,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReducerMsg>,
        message: ReducerMsg,
        state: &mut ReducerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReducerMsg::Batch(batch) => {
                state.apply(&batch);
                state.args.next.cast(WriterMsg::Batch(batch))?;
            }
            ReducerMsg::Count(query, reply) => {
                let answer = state.count(&query).map(|value| Answer {
                    value,
                    watermark: state.watermark,
                });
                // The asker may have timed out; nothing to do then.
                let _ = reply.send(answer);
            }
            ReducerMsg::Top(query, reply) => {
                let answer = state.top(&query).map(|value| Answer {
                    value,
                    watermark: state.watermark,
                });
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

impl ReducerState {
    fn apply(&mut self, batch: &Batch) {
        let counts = &mut self.args.counts;
        counts.apply_all(&batch.deltas);
        self.watermark = self.watermark.max(batch.watermark);
        self.args.slot.set_watermark(self.watermark);
        if self.watermark != NO_WATERMARK {
            self.args
                .meters
                .watermark_lag
                .set((now_ms() - self.watermark) as f64 / 1000.0);
        }
        // Evict only what is committed, final, and older than the memory span.
        let committed = self.args.committed_watermark.load(Ordering::Acquire);
        if committed != NO_WATERMARK {
            let settings = &self.args.settings;
            let keep_from = closed_until(committed)
                .saturating_sub(settings.memory_minutes.saturating_mul(MINUTE_MS));
            let evict_before = keep_from.min(final_until(committed, settings.allowed_lateness_ms));
            counts.evict_before(evict_before);
        }
    }

    fn count(&self, q: &CountQuery) -> Result<u64, String> {
        // A value no partition ever stored has no clicks here.
        let Some(filter) = q.filter.resolve() else {
            return Ok(0);
        };
        let counts = &self.args.counts;
        let (stored, in_memory) = split_at_floor(q.from, q.to, counts.floor());
        let from_store = self
            .args
            .store
            .read_count(&q.ad, &filter, stored.0, stored.1)
            .map_err(|e| e.to_string())?;
        Ok(from_store + counts.count(&q.ad, &filter, in_memory.0, in_memory.1))
    }

    fn top(&self, q: &TopQuery) -> Result<Vec<(AdId, u64)>, String> {
        let Some(filter) = q.filter.resolve() else {
            return Ok(Vec::new());
        };
        let counts = &self.args.counts;
        let (stored, in_memory) = split_at_floor(q.from, q.to, counts.floor());
        let mut sums = HashMap::new();
        self.args
            .store
            .add_sums(&filter, stored.0, stored.1, &mut sums)
            .map_err(|e| e.to_string())?;
        counts.add_sums(&filter, in_memory.0, in_memory.1, &mut sums);
        Ok(top_n::top_n(sums.into_iter().collect(), q.n))
    }
}
