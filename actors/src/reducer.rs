//! Reducer: holds the partition's minute counts in memory, answers the
//! gateway's queries (counts and top-N over any range), and passes batches to
//! the writer. The logic is [`ReducerCore`]'s; the actor adds the metrics,
//! the gateway's watermark, eviction once the writer committed, and the
//! hand-off.

pub mod ad_slots;
pub mod counter_table;
pub mod history;
pub mod minute_counts;
pub mod reducer_core;
pub mod snapshots;
pub mod top_n;
pub mod window_sums;

use crate::batch::{Batch, NextStage};
use crate::store::{PartitionStore, StoreError};
use crate::telemetry::PartitionMeters;
use crate::time::event_clock::{SharedWatermark, NO_WATERMARK};
use crate::time::now_ms;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
pub use reducer_core::{Answer, CountQuery, ReducerCore, ReducerStart, TopQuery};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Where a count answer goes.
pub type CountReply = RpcReplyPort<Result<Answer<u64>, StoreError>>;

/// Where a top-N answer goes: ads with their counts, ranked.
pub type TopReply = RpcReplyPort<Result<Answer<Vec<(crate::click::AdId, u64)>>, StoreError>>;

/// Messages to the reducer.
pub enum ReducerMsg {
    /// A batch from the window.
    Batch(Box<Batch>),
    /// A count query from the gateway.
    Count(CountQuery, CountReply),
    /// A top-N query from the gateway.
    Top(TopQuery, TopReply),
}

/// What the reducer starts from.
pub struct ReducerArgs {
    /// The reducer's state at the checkpoint.
    pub core: ReducerCore,
    /// Where batches go (the writer).
    pub next: NextStage,
    /// The partition's file, for minutes no longer in memory.
    pub store: Arc<PartitionStore>,
    /// Watermark of the last finished commit (written by the writer).
    pub committed_watermark: Arc<AtomicI64>,
    /// Where the gateway reads the partition's watermark.
    pub watermark: Arc<SharedWatermark>,
    /// Metric handles.
    pub meters: PartitionMeters,
}

/// The reducer actor.
pub struct ReducerActor;

impl Actor for ReducerActor {
    type Msg = ReducerMsg;
    type State = ReducerArgs;
    type Arguments = ReducerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ReducerMsg>,
        args: ReducerArgs,
    ) -> Result<ReducerArgs, ActorProcessingErr> {
        args.watermark.advance(args.core.watermark());
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReducerMsg>,
        message: ReducerMsg,
        state: &mut ReducerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ReducerMsg::Batch(mut batch) => {
                state.core.apply(&mut batch, state.store.as_ref())?;
                let watermark = state.core.watermark();
                state.watermark.advance(watermark);
                if watermark != NO_WATERMARK {
                    let lag = (now_ms() - watermark) as f64 / 1000.0;
                    state.meters.watermark_lag.set(lag);
                }
                state
                    .core
                    .evict(state.committed_watermark.load(Ordering::Acquire));
                if let Some(fetched) = batch.control.fetched_at {
                    let freshness = fetched.elapsed().as_secs_f64();
                    state.meters.consumed_to_queryable.record(freshness);
                }
                state.next.send(batch)?;
            }
            // The asker may have timed out; nothing to do then.
            ReducerMsg::Count(query, reply) => {
                let _ = reply.send(state.core.count(&query, state.store.as_ref()));
            }
            ReducerMsg::Top(query, reply) => {
                let _ = reply.send(state.core.top(&query, state.store.as_ref()));
            }
        }
        Ok(())
    }
}
