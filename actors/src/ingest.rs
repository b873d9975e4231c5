//! Ingest: the first actor of a partition. Pulls messages from the
//! partition's durable JetStream consumer, decodes and validates them, and
//! sends them on as a [`Batch`]. It owns the backpressure: a batch may only
//! leave when a credit is free, and the writer returns credits after each
//! commit, so at most `max_batches_in_flight` batches exist at once.

pub mod decode;
pub mod delivery_order;
pub mod pull_subscription;

use crate::batch::{Batch, Control, NextStage};
use crate::dimension::DimensionValues;
use crate::reject::{RejectReason, Rejected};
use crate::settings::PipelineSettings;
use crate::telemetry::PartitionMeters;
use crate::time::now_ms;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::Context;
use delivery_order::{Delivery, DeliveryOrder};
use futures::StreamExt;
use pull_subscription::{AckSubject, PullSubscription};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// How long one pull waits for messages before checking for idleness.
const PULL_WAIT: Duration = Duration::from_millis(250);
/// How often an idle partition sends a wall-clock tick down the chain.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// How often the consumer's pending count is refreshed.
const PENDING_EVERY: Duration = Duration::from_secs(5);

/// Messages to the ingest actor.
pub enum IngestMsg {
    /// Pull the next batch (the actor sends this to itself in a loop).
    Pull,
    /// Stop pulling, push a final flush through the chain, and answer once
    /// everything pulled is committed and acknowledged.
    Drain(oneshot::Sender<()>),
}

/// What ingest starts from.
pub struct IngestArgs {
    /// The partition number.
    pub partition: u32,
    /// Service settings.
    pub settings: Arc<PipelineSettings>,
    /// JetStream.
    pub js: Context,
    /// Where batches go.
    pub next: NextStage,
    /// Last stream sequence committed: consumption resumes after it.
    pub resume_after: u64,
    /// In-flight credits, shared with the writer.
    pub credits: Arc<Semaphore>,
    /// Metric handles.
    pub meters: PartitionMeters,
    /// The ownership epoch (0: one process owns every partition): names the
    /// consumer.
    pub epoch: u64,
    /// Extra-dimension values the checkpoint says were admitted.
    pub admitted: Vec<(String, String)>,
}

/// The ingest actor.
pub struct IngestActor;

/// Ingest's running state.
pub struct IngestState {
    args: IngestArgs,
    /// For the consumer's pending count.
    consumer: PullConsumer,
    /// Where the deliveries come from.
    pull: PullSubscription,
    /// New, redelivered, or lost: each delivery's consumer and stream sequence.
    deliveries: DeliveryOrder,
    last_message_at: Instant,
    last_tick_at: Instant,
    last_pending_at: Instant,
    draining: bool,
    /// Names of the declared extra fields, for the decoder.
    extra_fields: Vec<String>,
    /// Which extra-dimension values count as themselves (see [`crate::dimension`]).
    /// Admission happens here, in stream order, so a replay from the
    /// checkpoint admits exactly what the lost run did.
    values: DimensionValues,
    /// `adclick_dimension_overflow_total` per extra dimension.
    overflow: Vec<metrics::Counter>,
}

/// Creates the partition's durable consumer afresh, starting right after the
/// committed sequence. The checkpoint, not the consumer's ack floor, is the
/// truth about what was applied, so the consumer is rebuilt on every start.
async fn open_consumer(args: &IngestArgs) -> Result<PullConsumer, ActorProcessingErr> {
    let settings = &args.settings;
    let stream = args.js.get_stream(&settings.stream).await.map_err(|e| {
        format!(
            "partition {}: cannot open stream {}: {e}",
            args.partition, settings.stream
        )
    })?;
    let name = settings.consumer_name(args.partition, args.epoch);
    // Absent on first start. If the delete failed for another reason, the
    // strict create below fails too (the old consumer still exists), and the
    // supervisor retries: a reused consumer would deliver from the wrong place.
    let _ = stream.delete_consumer(&name).await;
    if args.epoch > 0 {
        // Earlier owners' consumers of this partition: a replaced owner's
        // pulls and acks then find nothing. Never a later epoch's: a replaced
        // owner that still runs must not disturb the new one.
        let unowned = settings.consumer_name(args.partition, 0);
        let prefix = format!("{unowned}-e");
        let mut names = stream.consumer_names();
        while let Some(Ok(other)) = names.next().await {
            let epoch = match other.strip_prefix(&prefix) {
                Some(epoch) => epoch.parse::<u64>().ok(),
                None => (other == unowned).then_some(0),
            };
            if epoch.is_some_and(|e| e < args.epoch) {
                let _ = stream.delete_consumer(&other).await;
            }
        }
    }
    let deliver_policy = if args.resume_after == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: args.resume_after + 1,
        }
    };
    let in_flight = settings.batch_size * settings.max_batches_in_flight;
    let consumer = stream
        .create_consumer_strict(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: settings.partition_subject(args.partition),
            ack_policy: AckPolicy::All,
            deliver_policy,
            // Room for every batch in flight plus one pull's prefetch.
            max_ack_pending: (2 * in_flight + settings.batch_size) as i64,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            format!(
                "partition {}: cannot create consumer {name}: {e}",
                args.partition
            )
        })?;
    Ok(consumer)
}

impl Actor for IngestActor {
    type Msg = IngestMsg;
    type State = IngestState;
    type Arguments = IngestArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<IngestMsg>,
        args: IngestArgs,
    ) -> Result<IngestState, ActorProcessingErr> {
        let consumer = open_consumer(&args).await?;
        // Every JetStream context adclick makes has the default API prefix.
        let pull = PullSubscription::open(
            args.js.client(),
            "$JS.API",
            &args.settings.stream,
            &args.settings.consumer_name(args.partition, args.epoch),
            args.settings.batch_size,
        )
        .await
        .map_err(|e| format!("partition {}: cannot start pulling: {e}", args.partition))?;
        let now = Instant::now();
        let dims = &args.settings.extra_dimensions;
        Ok(IngestState {
            extra_fields: dims.iter().map(|d| d.name.clone()).collect(),
            values: DimensionValues::new(dims, &args.admitted),
            overflow: PartitionMeters::overflow(args.partition, dims),
            deliveries: DeliveryOrder::resume(args.resume_after),
            args,
            consumer,
            pull,
            last_message_at: now,
            last_tick_at: now,
            last_pending_at: now - PENDING_EVERY,
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<IngestMsg>,
        message: IngestMsg,
        state: &mut IngestState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IngestMsg::Pull if state.draining => Ok(()),
            IngestMsg::Pull => {
                state.pull_once().await?;
                myself.cast(IngestMsg::Pull)?;
                Ok(())
            }
            IngestMsg::Drain(done) => {
                state.draining = true;
                let mut flush = Batch::default();
                flush.control.flush = Some(done);
                state.args.next.send(Box::new(flush))?;
                Ok(())
            }
        }
    }
}

impl IngestState {
    /// Waits for a credit, then for messages (or idleness), and sends one batch on.
    async fn pull_once(&mut self) -> Result<(), ActorProcessingErr> {
        let credit = self.args.credits.clone().acquire_owned().await?;
        let batch = match tokio::time::timeout(PULL_WAIT, self.pull.next()).await {
            Ok(Ok(chunk)) => self.decode_chunk(chunk)?,
            Ok(Err(e)) => return Err(format!("partition {}: {e}", self.args.partition).into()),
            // The wait ended while gathering: what was gathered goes now (an
            // idle tick must never overtake deliveries already received).
            Err(_idle) if self.pull.has_gathered() => {
                let chunk = self.pull.take_gathered();
                self.decode_chunk(chunk)?
            }
            Err(_idle) => {
                // Requests lost to a reconnect or a silent server are made again.
                (self.pull.check_alive().await)
                    .map_err(|e| format!("partition {}: {e}", self.args.partition))?;
                match self.idle_tick().await {
                    Some(batch) => batch,
                    None => {
                        drop(credit); // nothing sent: the credit goes back
                        self.refresh_pending().await;
                        return Ok(());
                    }
                }
            }
        };
        credit.forget(); // the writer returns it after the commit
        let in_flight = (self.args.settings.max_batches_in_flight)
            .saturating_sub(self.args.credits.available_permits());
        self.args.meters.batches_in_flight.set(in_flight as f64);
        self.args.next.send(Box::new(batch))?;
        Ok(())
    }

    /// A tick when the partition has been quiet for `idle_timeout` and the
    /// consumer has nothing pending (a pause in delivering a backlog is not
    /// idleness: ticking then would make the rest of the backlog too late).
    /// At most once per second.
    async fn idle_tick(&mut self) -> Option<Batch> {
        let idle_for = self.last_message_at.elapsed();
        if idle_for.as_millis() < self.args.settings.idle_timeout_ms as u128
            || self.last_tick_at.elapsed() < TICK_EVERY
        {
            return None;
        }
        self.last_tick_at = Instant::now();
        match self.consumer.info().await {
            // Nothing undelivered, and nothing delivered but unacknowledged
            // (committed batches are acknowledged within a commit interval;
            // a delivery lost in transit stays unacknowledged until its
            // redelivery shows the gap, and no tick may pass it before).
            Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                self.args.meters.consumer_pending.set(0.0);
            }
            Ok(info) => {
                self.args
                    .meters
                    .consumer_pending
                    .set(info.num_pending as f64);
                return None;
            }
            Err(_) => return None, // cannot tell: do not guess
        }
        let control = Control {
            holds_credit: true,
            idle_tick: Some(now_ms()),
            fetched_at: Some(Instant::now()),
            ..Control::default()
        };
        Some(Batch {
            control,
            ..Batch::default()
        })
    }

    async fn refresh_pending(&mut self) {
        if self.last_pending_at.elapsed() < PENDING_EVERY {
            return;
        }
        self.last_pending_at = Instant::now();
        if let Ok(info) = self.consumer.info().await {
            self.args
                .meters
                .consumer_pending
                .set(info.num_pending as f64);
        }
    }

    fn decode_chunk(
        &mut self,
        chunk: pull_subscription::Deliveries,
    ) -> Result<Batch, ActorProcessingErr> {
        let p = self.args.partition;
        let settings = &self.args.settings;
        let latest_allowed = now_ms().saturating_add(settings.max_future_skew_ms);
        let mut batch = Batch {
            control: Control {
                holds_credit: true,
                consumed: chunk.len(),
                fetched_at: Some(Instant::now()),
                ..Control::default()
            },
            clicks: Vec::with_capacity(chunk.len()),
            payloads: Vec::with_capacity(chunk.len()),
            ..Batch::default()
        };
        let (mut invalid, mut future) = (0u64, 0u64);
        // The reply of the delivery with the highest stream sequence: the ack.
        let mut ack: Option<(u64, async_nats::Subject)> = None;
        for message in chunk {
            if crate::fault::drops("drop-delivery", p) {
                continue;
            }
            let Some(sequences) = message.reply.as_deref().and_then(AckSubject::parse) else {
                return Err(format!(
                    "partition {p}: {}",
                    pull_subscription::PullError::NotJetStream {
                        subject: message.subject.to_string(),
                        reply: message.reply.as_ref().map(|r| r.to_string()),
                    }
                )
                .into());
            };
            let seq = sequences.stream_sequence;
            let delivery = (self.deliveries)
                .take(sequences.consumer_sequence, seq)
                .map_err(|lost| format!("partition {p}: {lost}"))?;
            if ack.as_ref().is_none_or(|(acked, _)| seq > *acked) {
                ack = message.reply.map(|reply| (seq, reply));
            }
            if delivery == Delivery::Redelivered {
                continue;
            }
            batch.delta.last_seq = seq;
            let mut raw = decode::RawExtras::default();
            let decoded = match decode::split_subject(&message.subject) {
                Some((_, ad)) => {
                    decode::decode_with(ad, seq, &message.payload, &self.extra_fields, &mut raw)
                }
                None => Err(format!(
                    "subject `{}` is not a click subject",
                    message.subject
                )),
            };
            let reason = match decoded {
                Ok(click) if click.ts > latest_allowed => {
                    future += 1;
                    RejectReason::Future
                }
                Ok(mut click) => {
                    // A valid click that is not from the future admits its
                    // values (even if it later proves a repeat or too late).
                    for (i, value) in raw.iter().enumerate().take(self.extra_fields.len()) {
                        let mapped =
                            self.values
                                .map(i, value.as_deref(), &mut batch.delta.admitted);
                        click.extras[i] = mapped.code;
                        if mapped.overflow {
                            self.overflow[i].increment(1);
                        }
                    }
                    batch.clicks.push(click);
                    batch.payloads.push(message.payload);
                    continue;
                }
                Err(why) => {
                    invalid += 1;
                    RejectReason::Invalid(why)
                }
            };
            batch.delta.rejects.push(Rejected {
                seq,
                subject: message.subject.to_string(),
                payload: message.payload,
                reason,
            });
        }
        batch.control.ack = ack.map(|(seq, reply)| self.pull.ack_all(reply, seq));
        self.last_message_at = Instant::now();
        let meters = &self.args.meters;
        meters.consumed.increment(batch.control.consumed as u64);
        meters.batch_messages.record(batch.control.consumed as f64);
        meters.invalid.increment(invalid);
        meters.future.increment(future);
        Ok(batch)
    }
}
