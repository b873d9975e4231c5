//! The partition supervisor: builds the five actors of one partition from
//! its checkpoint, and rebuilds all of them when any one fails.
//!
//! Rebuilding the whole chain (not just the failed actor) is deliberate: the
//! other actors hold state that is ahead of the checkpoint, and the only state
//! known to be consistent is the committed one. The store's generation fence
//! makes sure a commit still in flight from the old chain cannot land after
//! the new chain has loaded the checkpoint.

pub mod backoff;
pub mod directory;

use crate::batch::NextStage;
use crate::dedup::{DedupActor, DedupArgs, DedupMsg};
use crate::ingest::{IngestActor, IngestArgs, IngestMsg};
use crate::reducer::{ReducerActor, ReducerArgs, ReducerCore, ReducerMsg, ReducerStart};
use crate::settings::PipelineSettings;
use crate::store::{PartitionStore, StoreError};
use crate::telemetry::PartitionMeters;
use crate::tenure::Tenure;
use crate::window::{WindowActor, WindowArgs, WindowMsg};
use crate::writer::{WriterActor, WriterArgs, WriterMsg};
use async_nats::jetstream::Context;
use backoff::RestartBackoff;
use directory::PartitionEntry;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// Messages to a partition supervisor.
pub enum PartitionMsg {
    /// (Re)build the chain from the checkpoint.
    Build,
    /// Stop consuming, commit what was consumed, then answer.
    Drain(oneshot::Sender<()>),
}

/// What a partition supervisor needs.
pub struct PartitionArgs {
    /// The partition number.
    pub partition: u32,
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// JetStream.
    pub js: Context,
    /// The partition's file (opened once, shared by every rebuild).
    pub store: Arc<PartitionStore>,
    /// Until when this process acts for the partition (the lease's fence).
    pub tenure: Arc<Tenure>,
    /// The gateway's view of this partition.
    pub entry: Arc<PartitionEntry>,
}

/// The supervisor actor.
pub struct PartitionSupervisor;

/// The supervisor's state.
pub struct PartitionState {
    args: PartitionArgs,
    meters: PartitionMeters,
    children: Vec<ActorCell>,
    ingest: Option<ActorRef<IngestMsg>>,
    backoff: RestartBackoff,
    built_at: Option<std::time::Instant>,
    draining: bool,
    /// Held by a writer's commit task until its ack is sent, and by a
    /// rebuild while it loads the checkpoint: a replaced chain's ack must
    /// land before the new chain recreates the durable consumer (same name),
    /// or it would act on the new consumer. A commit that starts after the
    /// rebuild loaded the checkpoint is fenced and never acks.
    commit_gate: Arc<tokio::sync::Mutex<()>>,
}

impl Actor for PartitionSupervisor {
    type Msg = PartitionMsg;
    type State = PartitionState;
    type Arguments = PartitionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PartitionMsg>,
        args: PartitionArgs,
    ) -> Result<PartitionState, ActorProcessingErr> {
        myself.cast(PartitionMsg::Build)?;
        Ok(PartitionState {
            meters: PartitionMeters::new(args.partition),
            args,
            children: Vec::new(),
            ingest: None,
            backoff: RestartBackoff::default(),
            built_at: None,
            draining: false,
            commit_gate: Arc::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PartitionMsg>,
        message: PartitionMsg,
        state: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PartitionMsg::Build if state.draining => {}
            PartitionMsg::Build => {
                state.stop_children();
                match state.build(&myself).await {
                    Ok(()) => {
                        state.built_at = Some(std::time::Instant::now());
                        tracing::info!(partition = state.args.partition, "partition consuming");
                    }
                    Err(e) => {
                        state.stop_children();
                        tracing::error!(
                            partition = state.args.partition,
                            "partition start failed: {e}"
                        );
                        state.retry_later(&myself);
                    }
                }
            }
            PartitionMsg::Drain(done) => {
                state.draining = true;
                match &state.ingest {
                    Some(ingest) => ingest.cast(IngestMsg::Drain(done))?,
                    None => {
                        let _ = done.send(());
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PartitionMsg>,
        state: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        // A build that finished while the stop was on its way published a
        // chain that dies with this supervisor: take it back from the gateway.
        state.stop_children();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PartitionMsg>,
        event: SupervisionEvent,
        state: &mut PartitionState,
    ) -> Result<(), ActorProcessingErr> {
        let (who, why) = match &event {
            SupervisionEvent::ActorFailed(who, err) => (who.get_id(), err.to_string()),
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                (who.get_id(), format!("stopped: {reason:?}"))
            }
            _ => return Ok(()),
        };
        if !state.children.iter().any(|c| c.get_id() == who) {
            return Ok(()); // a child of a chain we already replaced
        }
        let partition = state.args.partition;
        let restarts = state.args.entry.count_restart();
        state.meters.restarts.increment(1);
        tracing::error!(
            partition,
            restarts,
            "partition actor failed ({why}); rebuilding from checkpoint"
        );
        state.stop_children();
        state.retry_later(&myself);
        Ok(())
    }
}

impl PartitionState {
    fn stop_children(&mut self) {
        self.args.entry.set_reducer(None);
        self.ingest = None;
        // kill, not stop: an ingest waiting for a credit that its dead writer
        // will never return would never reach the next message to see a stop,
        // and would keep its pull subscription alive.
        for child in self.children.drain(..) {
            child.kill();
        }
    }

    fn retry_later(&mut self, myself: &ActorRef<PartitionMsg>) {
        let ran = self.built_at.take().map(|t| t.elapsed());
        let wait = self.backoff.failed(ran);
        myself.send_after(wait, || PartitionMsg::Build);
    }

    /// Loads the checkpoint and spawns writer, reducer, window, dedup, ingest
    /// (each needs the next one's address), then opens the partition to queries.
    async fn build(&mut self, myself: &ActorRef<PartitionMsg>) -> Result<(), ActorProcessingErr> {
        let args = &self.args;
        // A member that lost the partition's lease builds nothing: the new
        // owner's consumer and outputs are not to be disturbed.
        args.tenure
            .check()
            .map_err(|e| format!("partition {}: {e}", args.partition))?;
        let settings = args.settings.clone();
        let store = args.store.clone();
        let (memory_minutes, lateness) = (settings.memory_minutes, settings.allowed_lateness_ms);
        let started = std::time::Instant::now();
        let gate = tokio::time::timeout(
            Duration::from_secs(10),
            self.commit_gate.clone().lock_owned(),
        )
        .await;
        if gate.is_err() {
            tracing::warn!(
                partition = args.partition,
                "the replaced chain's commit did not finish within 10 s; rebuilding anyway"
            );
        }
        // Both block for a while with a big state: off the async workers.
        let (partition, core_settings) = (args.partition, settings.clone());
        let epoch = args.tenure.epoch();
        let (mut recovered, reducer_core, counters, read_ms) =
            tokio::task::spawn_blocking(move || {
                let mut recovered = store.recover_keeping(memory_minutes, lateness)?;
                let read_ms = started.elapsed().as_millis();
                let counters = recovered.counts.len();
                // The counts take the totals; the list is freed before the rest is built.
                let start = ReducerStart::recovered(partition, &mut recovered, epoch);
                let core = ReducerCore::new(core_settings, start);
                Ok::<_, StoreError>((recovered, core, counters, read_ms))
            })
            .await??;
        drop(gate);
        let (ids, logged) = (recovered.seen.len(), recovered.logged_totals);
        let committed_watermark = Arc::new(AtomicI64::new(recovered.watermark));
        let credits = Arc::new(Semaphore::new(settings.max_batches_in_flight));
        let supervisor = myself.get_cell();
        let meters = self.meters.clone();

        let (writer, _) = Actor::spawn_linked(
            None,
            WriterActor,
            WriterArgs {
                partition: args.partition,
                settings: settings.clone(),
                js: args.js.clone(),
                store: args.store.clone(),
                generation: recovered.generation,
                last_seq: recovered.last_seq,
                outbox: std::mem::take(&mut recovered.outbox),
                feed_outbox: std::mem::take(&mut recovered.feed_outbox),
                committed_watermark: committed_watermark.clone(),
                commit_gate: self.commit_gate.clone(),
                credits: credits.clone(),
                tenure: args.tenure.clone(),
                meters: meters.clone(),
            },
            supervisor.clone(),
        )
        .await?;
        self.children.push(writer.get_cell());

        let (reducer, _) = Actor::spawn_linked(
            None,
            ReducerActor,
            ReducerArgs {
                core: reducer_core,
                next: NextStage::actor(writer, WriterMsg::Batch),
                store: args.store.clone(),
                committed_watermark,
                watermark: args.entry.shared_watermark(),
                meters: meters.clone(),
            },
            supervisor.clone(),
        )
        .await?;
        self.children.push(reducer.get_cell());

        let (window, _) = Actor::spawn_linked(
            None,
            WindowActor,
            WindowArgs {
                partition: args.partition,
                settings: settings.clone(),
                next: NextStage::actor(reducer.clone(), ReducerMsg::Batch),
                watermark: recovered.watermark,
                meters: meters.clone(),
            },
            supervisor.clone(),
        )
        .await?;
        self.children.push(window.get_cell());

        let (dedup, _) = Actor::spawn_linked(
            None,
            DedupActor,
            DedupArgs {
                settings: settings.clone(),
                next: NextStage::actor(window, WindowMsg::Batch),
                seen: recovered.seen,
                watermark: recovered.watermark,
                meters: meters.clone(),
            },
            supervisor.clone(),
        )
        .await?;
        self.children.push(dedup.get_cell());

        let (ingest, _) = Actor::spawn_linked(
            None,
            IngestActor,
            IngestArgs {
                partition: args.partition,
                settings,
                js: args.js.clone(),
                next: NextStage::actor(dedup, DedupMsg::Batch),
                resume_after: recovered.last_seq,
                epoch: args.tenure.epoch(),
                credits,
                meters,
                admitted: recovered.admitted,
            },
            supervisor,
        )
        .await?;
        self.children.push(ingest.get_cell());
        ingest.cast(IngestMsg::Pull)?;
        self.ingest = Some(ingest);
        self.args.entry.set_reducer(Some(reducer));
        // Restart time is a target (docs/PERFORMANCE.md): say where it goes.
        tracing::info!(
            partition = self.args.partition,
            read_ms,
            built_ms = started.elapsed().as_millis() - read_ms,
            ids,
            counters,
            logged,
            "checkpoint loaded"
        );
        Ok(())
    }
}
