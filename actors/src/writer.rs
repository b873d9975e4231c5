//! Writer: the last actor of a partition. Folds batches into a
//! [`Checkpoint`], and commits it: one redb transaction writes counts, ids,
//! watermark, the last stream sequence and the batch's rejects (into an
//! outbox); then the JetStream messages are acknowledged (AckAll up to the
//! last one); then the rejects are published and, once JetStream has stored
//! them, dropped from the outbox by the next commit. So a reject is published
//! only if the decision behind it was committed, and a crash before it was
//! stored leaves it in the outbox, published again at the next start.
//!
//! Commits never block the actor: one runs at a time on a blocking thread,
//! at most every `checkpoint_interval` (sooner when half the in-flight
//! batches wait, or a batch closed a minute), and batches that arrive
//! meanwhile join the next one (group commit), so the commit rate adapts to
//! the load.
//! Publishing (rejects, output feed) is a separate task fed in commit order:
//! a minute's feed burst goes out while the next commits proceed. It also
//! renders the feed's counts publications (sorting a closed minute's
//! counters and writing their JSON), one partition at a time in the process,
//! so that work never delays a commit of its own partition and takes at most
//! one core from the others' closes.

pub mod commit_timing;

use crate::ack::AckAll;
use crate::batch::Batch;
use crate::click::FilterKinds;
use crate::feed::{FeedItem, FeedMessage, UnreadableCounts};
use crate::settings::PipelineSettings;
use crate::store::checkpoint::Checkpoint;
use crate::store::{history_start, CommitStats, PartitionStore, StoreError};
use crate::telemetry::PartitionMeters;
use crate::tenure::{Tenure, TenureOver};
use crate::time::event_clock::final_until;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use bytes::Bytes;
use commit_timing::{CommitDue, CommitTiming, Waiting};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// Why a commit or a publication failed. Either fails the writer, and the
/// supervisor rebuilds the partition from its checkpoint; the outboxes keep
/// whatever was committed and not yet published.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The partition file refused the commit (or fenced it).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A committed counts publication could not be read back to render it.
    #[error(transparent)]
    Feed(#[from] UnreadableCounts),
    /// NATS did not take an ack or a publication.
    #[error("{what} failed: {message}")]
    Nats {
        /// What was sent.
        what: &'static str,
        /// What the client said.
        message: String,
    },
    /// This process no longer holds the partition's lease: it must not
    /// commit, ack or publish for it any more.
    #[error(transparent)]
    Fenced(#[from] TenureOver),
    /// A blocking task or a semaphore failed.
    #[error("{what} failed: {message}")]
    Task {
        /// The task.
        what: &'static str,
        /// What tokio said.
        message: String,
    },
}

/// Messages to the writer.
pub enum WriterMsg {
    /// A batch from the reducer.
    Batch(Box<Batch>),
    /// A commit finished (sent by the commit task to the writer).
    Committed(Result<Done, WriterError>),
    /// The checkpoint interval since the last commit passed.
    Tick,
    /// The publisher stored a commit's rejects and feed messages on
    /// JetStream: (reject sequences, feed items' first versions), for the
    /// outbox cleanup.
    Published(Result<(Vec<u64>, Vec<u64>), WriterError>),
}

/// What a finished commit hands back.
pub struct Done {
    credits: usize,
    watermark: i64,
    stats: CommitStats,
    started: Instant,
    /// From consuming the batch that closed a minute to its commit (not
    /// counting the ack and publications after it).
    close_to_committed: Option<Duration>,
}

/// What the writer starts from.
pub struct WriterArgs {
    /// The partition number.
    pub partition: u32,
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// JetStream, for rejects and acks.
    pub js: Context,
    /// The partition's file.
    pub store: Arc<PartitionStore>,
    /// Fencing token from the recovery this pipeline started from.
    pub generation: u64,
    /// Last committed sequence.
    pub last_seq: u64,
    /// Rejects committed but not confirmed published before the last stop.
    pub outbox: Vec<crate::reject::Rejected>,
    /// Feed items committed but not confirmed published before the last stop.
    pub feed_outbox: Vec<FeedItem>,
    /// Last committed watermark; updated after each commit.
    pub committed_watermark: Arc<AtomicI64>,
    /// Held from a commit's start until its ack is sent (see
    /// [`crate::partition`]: a rebuild waits for it).
    pub commit_gate: Arc<tokio::sync::Mutex<()>>,
    /// Ingest's credits, returned after each commit.
    pub credits: Arc<Semaphore>,
    /// Until when this process acts for the partition: checked before every
    /// commit, ack and publication.
    pub tenure: Arc<Tenure>,
    /// Metric handles.
    pub meters: PartitionMeters,
}

/// The writer actor.
pub struct WriterActor;

/// What a commit leaves to publish, handed to the publisher in commit order.
struct ToPublish {
    rejects: Vec<crate::reject::Rejected>,
    feed: Vec<FeedItem>,
    /// Drains waiting for this commit: answered once it is published too.
    flushes: Vec<oneshot::Sender<()>>,
}

/// The writer's running state.
pub struct WriterState {
    /// To the publisher task: publications run beside the next commits (in
    /// commit order), so a minute's feed burst never holds up a commit.
    publisher: tokio::sync::mpsc::UnboundedSender<ToPublish>,
    args: WriterArgs,
    pending: Checkpoint,
    ack: Option<AckAll>,
    flushes: Vec<oneshot::Sender<()>>,
    committing: bool,
    timing: CommitTiming,
    last_commit_at: Instant,
    tick_scheduled: bool,
}

impl Actor for WriterActor {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WriterMsg>,
        args: WriterArgs,
    ) -> Result<WriterState, ActorProcessingErr> {
        let watermark = args.committed_watermark.load(Ordering::Acquire);
        let mut pending = Checkpoint::resume(args.last_seq, watermark)
            .logging_finest_only(FilterKinds::of(&args.settings.dimension_sets));
        // Finish what the last run committed but may not have published.
        let out = Outlet {
            js: args.js.clone(),
            partition: args.partition,
            tenure: args.tenure.clone(),
        };
        out.publish_rejects(&args.outbox).await?;
        pending.mark_published(args.outbox.iter().map(|r| r.seq));
        out.publish_feed(&args.feed_outbox).await?;
        pending.mark_feed_published(args.feed_outbox.iter().map(FeedItem::first_version));
        let (publisher, mut queue) = tokio::sync::mpsc::unbounded_channel::<ToPublish>();
        let partition = args.partition;
        // Ends when the writer is gone (its sender dropped, or casts refused).
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                if job.feed.iter().any(|i| matches!(i, FeedItem::Counts(_))) {
                    crate::fault::hit("abort-before-feed", partition);
                }
                let result = async {
                    out.publish_rejects(&job.rejects).await?;
                    out.publish_feed(&job.feed).await
                }
                .await;
                let ok = result.is_ok();
                let done = result.map(|()| {
                    (
                        job.rejects.iter().map(|r| r.seq).collect(),
                        job.feed.iter().map(FeedItem::first_version).collect(),
                    )
                });
                if myself.cast(WriterMsg::Published(done)).is_err() || !ok {
                    break;
                }
                for flush in job.flushes {
                    let _ = flush.send(());
                }
            }
        });
        let settings = &args.settings;
        let timing = CommitTiming {
            interval: Duration::from_millis(settings.checkpoint_interval_ms.max(0) as u64),
            max_batches_in_flight: settings.max_batches_in_flight,
        };
        Ok(WriterState {
            timing,
            publisher,
            pending,
            args,
            ack: None,
            flushes: Vec::new(),
            committing: false,
            last_commit_at: Instant::now(),
            tick_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WriterMsg>,
        message: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WriterMsg::Batch(mut batch) => {
                state.pending.absorb(&mut batch);
                if let Some(ack) = batch.control.ack.take() {
                    let higher = |held: &AckAll| ack.stream_sequence() >= held.stream_sequence();
                    if state.ack.as_ref().is_none_or(higher) {
                        state.ack = Some(ack);
                    }
                }
                state.flushes.extend(batch.control.flush.take());
            }
            WriterMsg::Committed(result) => {
                state.committing = false;
                // A failed commit fails the actor: the supervisor rebuilds the
                // partition from the last good checkpoint and replays the rest.
                let done =
                    result.map_err(|e| format!("partition {}: {e}", state.args.partition))?;
                state.finish(done);
            }
            WriterMsg::Tick => state.tick_scheduled = false,
            WriterMsg::Published(result) => {
                // A failed publication fails the actor, as a failed commit does:
                // the rebuild publishes the outbox again.
                let (rejects, feed) =
                    result.map_err(|e| format!("partition {}: {e}", state.args.partition))?;
                state.pending.mark_published(rejects);
                state.pending.mark_feed_published(feed);
            }
        }
        if !state.committing && !state.pending.is_empty() {
            let waiting = Waiting {
                credits: state.pending.credits,
                closes_minute: state.pending.first_close_fetched_at.is_some(),
                drain: !state.flushes.is_empty(),
            };
            match state.timing.due(state.last_commit_at.elapsed(), waiting) {
                CommitDue::Now => state.start_commit(myself),
                CommitDue::After(rest) if !state.tick_scheduled => {
                    state.tick_scheduled = true;
                    myself.send_after(rest, || WriterMsg::Tick);
                }
                CommitDue::After(_) => {}
            }
        }
        Ok(())
    }
}

impl WriterState {
    fn finish(&mut self, done: Done) {
        let meters = &self.args.meters;
        meters
            .checkpoint_seconds
            .record(done.started.elapsed().as_secs_f64());
        meters
            .checkpoint_rows
            .record((done.stats.count_rows + done.stats.ids) as f64);
        if let Some(took) = done.close_to_committed {
            meters.close_to_committed.record(took.as_secs_f64());
        }
        self.args
            .committed_watermark
            .store(done.watermark, Ordering::Release);
        self.args.credits.add_permits(done.credits);
    }

    fn start_commit(&mut self, myself: ActorRef<WriterMsg>) {
        self.committing = true;
        self.last_commit_at = Instant::now();
        let checkpoint = self.pending.take();
        let ack = self.ack.take();
        let flushes = std::mem::take(&mut self.flushes);
        let args = &self.args;
        let (store, generation) = (args.store.clone(), args.generation);
        let final_until = final_until(checkpoint.watermark, args.settings.allowed_lateness_ms);
        let prune_before = history_start(checkpoint.watermark, args.settings.history_retention_ms);
        let partition = args.partition;
        let publisher = self.publisher.clone();
        let gate = args.commit_gate.clone();
        let tenure = args.tenure.clone();
        tokio::spawn(async move {
            let held = gate.lock_owned().await;
            let started = Instant::now();
            let result = async {
                let credits = checkpoint.credits;
                let first_close_fetched_at = checkpoint.first_close_fetched_at;
                let watermark = checkpoint.watermark;
                crate::fault::hit("abort-before-commit", partition);
                tenure.check()?;
                let (stats, checkpoint) = tokio::task::spawn_blocking(move || {
                    let stats =
                        store.commit_and_prune(generation, &checkpoint, final_until, prune_before);
                    stats.map(|s| (s, checkpoint))
                })
                .await
                .map_err(|e| WriterError::Task {
                    what: "the commit task",
                    message: e.to_string(),
                })??;
                let close_to_committed = first_close_fetched_at.map(|t| t.elapsed());
                crate::fault::hit("abort-after-commit", partition);
                if let Some(ack) = ack {
                    tenure.check()?;
                    ack.send().await.map_err(|e| WriterError::Nats {
                        what: "the ack after the commit",
                        message: e.to_string(),
                    })?;
                }
                drop(held);
                let Checkpoint { rejects, feed, .. } = checkpoint;
                // Gone only with the writer; the outbox keeps the messages then.
                let _ = publisher.send(ToPublish {
                    rejects,
                    feed,
                    flushes,
                });
                Ok(Done {
                    credits,
                    watermark,
                    stats,
                    started,
                    close_to_committed,
                })
            }
            .await;
            // If the writer is gone (partition rebuilt), the fence already
            // refused or will refuse anything stale; nothing else to do.
            let _ = myself.cast(WriterMsg::Committed(result));
        });
    }
}

/// One feed rendering at a time in the process: at a minute boundary every
/// partition has a closed minute to render, and on a box with few cores the
/// renderings would otherwise take every core from the closes (commits) of
/// the partitions still closing.
static RENDERING: Semaphore = Semaphore::const_new(1);

/// Renders feed items into their messages, in version order: counts
/// publications on a blocking thread, one at a time in the process.
async fn render_feed(partition: u32, items: &[FeedItem]) -> Result<Vec<FeedMessage>, WriterError> {
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        match item {
            FeedItem::Message(m) => messages.push(m.clone()),
            FeedItem::Counts(counts) => {
                let task = |e: &dyn std::fmt::Display| WriterError::Task {
                    what: "feed rendering",
                    message: e.to_string(),
                };
                let _turn = RENDERING.acquire().await.map_err(|e| task(&e))?;
                let counts = counts.clone();
                let rendered = tokio::task::spawn_blocking(move || counts.render(partition))
                    .await
                    .map_err(|e| task(&e))??;
                messages.extend(rendered);
            }
        }
    }
    Ok(messages)
}

/// Where a partition's publications go, and the fence they pass.
struct Outlet {
    js: Context,
    partition: u32,
    tenure: Arc<Tenure>,
}

/// Most publishes awaiting their ack per partition. async-nats holds a
/// permit (5,000 per connection, shared by all partitions) until each ack
/// future is awaited, so unbounded sends before awaiting would deadlock.
const ACKS_IN_FLIGHT: usize = 128;

impl Outlet {
    /// Publishes output-feed items to `ADCLICK_AGG` and waits for JetStream
    /// to store them; the message id (per partition and version) makes a
    /// second publication after a crash a no-op within the stream's
    /// duplicate window.
    async fn publish_feed(&self, items: &[FeedItem]) -> Result<(), WriterError> {
        let partition = self.partition;
        let messages = render_feed(partition, items).await?;
        let each = messages.iter().map(|m| {
            let message = PublishMessage::build()
                .payload(Bytes::clone(&m.payload))
                .message_id(m.msg_id(partition));
            (m.subject.clone(), message)
        });
        self.publish_stored(each, "publishing to the output feed")
            .await
    }

    /// Republishes rejects to `rejected.<kind>` and waits for JetStream to
    /// store them. The message id makes publishing an outbox entry again
    /// (after a crash between publish and outbox cleanup) a no-op within the
    /// rejected stream's duplicate window.
    async fn publish_rejects(
        &self,
        rejects: &[crate::reject::Rejected],
    ) -> Result<(), WriterError> {
        let partition = self.partition;
        let each = rejects.iter().map(|reject| {
            let reason: String = reject
                .reason
                .describe()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let message = PublishMessage::build()
                .payload(Bytes::clone(&reject.payload))
                .message_id(format!("adclick-p{partition}-{}", reject.seq))
                .header("Adclick-Reject-Reason", reason.as_str())
                .header("Adclick-Source-Subject", reject.subject.as_str())
                .header("Adclick-Source-Sequence", reject.seq.to_string().as_str());
            (format!("rejected.{}", reject.reason.kind()), message)
        });
        self.publish_stored(each, "publishing a reject").await
    }

    /// Publishes each (subject, message) with at most [`ACKS_IN_FLIGHT`] acks
    /// pending, and returns once JetStream has stored every one. Each send
    /// first checks the tenure: a process that lost the partition's lease
    /// publishes nothing more for it.
    async fn publish_stored(
        &self,
        messages: impl Iterator<Item = (String, PublishMessage)>,
        what: &'static str,
    ) -> Result<(), WriterError> {
        let mut pending = std::collections::VecDeque::with_capacity(ACKS_IN_FLIGHT);
        for (subject, message) in messages {
            if pending.len() == ACKS_IN_FLIGHT {
                await_stored(pending.pop_front()).await?;
            }
            self.tenure.check()?;
            let ack =
                self.js
                    .send_publish(subject, message)
                    .await
                    .map_err(|e| WriterError::Nats {
                        what,
                        message: e.to_string(),
                    })?;
            pending.push_back(ack);
        }
        while let Some(ack) = pending.pop_front() {
            await_stored(Some(ack)).await?;
        }
        Ok(())
    }
}

async fn await_stored(
    ack: Option<async_nats::jetstream::context::PublishAckFuture>,
) -> Result<(), WriterError> {
    if let Some(ack) = ack {
        ack.await.map_err(|e| WriterError::Nats {
            what: "storing a published message on JetStream",
            message: e.to_string(),
        })?;
    }
    Ok(())
}
