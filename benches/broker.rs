//! The broker's own ceiling, for `scripts/bench-e2e`: a bare JetStream
//! publisher and a bare consumer with adclick's topology, so adclick's
//! figures can be quoted as a ratio of what NATS and async-nats reach on the
//! same machine, against the same server, in the same run.
//!
//! A `harness = false` bench target, run by hand (the script builds it with
//! `cargo bench --bench broker --no-run` and calls the binary):
//!
//! - `broker publish [loadgen options]` publishes `--count` clicks made by
//!   `adclick::loadgen::ClickGenerator` (generated *before* the clock starts),
//!   with pipelined acks (`--max-inflight` awaiting, like loadgen), with or
//!   without `Nats-Msg-Id` (`--no-msg-id`). Prints a JSON line.
//! - `broker consume` drains the stream as adclick does: per partition a fresh
//!   durable pull consumer filtered on `clicks.p.<P>.*`, AckAll, the same
//!   batch size and max_ack_pending as adclick's defaults; each payload is
//!   decoded with `adclick_actors::testing::decode::decode`, each batch acked
//!   with AckAll on its last message. No dedup, window, counts or redb.
//!   `--topology single` instead runs one consumer over the whole stream and
//!   routes by the partition token (the alternative SPEC §2 asks to measure).
//!   Prints a JSON line.
//! - `broker stored` prints how many messages the stream holds; `broker
//!   purge` empties it.
//!
//! Run by `cargo bench` without a verb (it passes `--bench`), it prints its
//! usage and exits successfully, so it never breaks `cargo bench`.

use adclick::loadgen::{ClickGenerator, LoadgenArgs, Outgoing};
use adclick_actors::testing::decode;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::{self, Context};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Bare JetStream publisher and consumer (see the file's doc comment).
#[derive(Parser)]
#[command(name = "broker")]
struct Cli {
    #[command(subcommand)]
    verb: Option<Verb>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Subcommand)]
enum Verb {
    /// Publish generated clicks with pipelined acks; prints a JSON line.
    Publish {
        #[command(flatten)]
        args: LoadgenArgs,
    },
    /// Drain the stream with adclick's consumer topology; prints a JSON line.
    Consume(ConsumeArgs),
    /// Print the number of messages the stream holds.
    Stored(StreamArgs),
    /// Remove every message from the stream.
    Purge(StreamArgs),
}

#[derive(clap::Args)]
struct StreamArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "ADCLICK_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// The clicks stream.
    #[arg(long, default_value = "CLICKS")]
    stream: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Topology {
    /// One durable pull consumer per partition, filtered on `clicks.p.<P>.*` (adclick's).
    Filtered,
    /// One pull consumer over the whole stream, routing by the partition token.
    Single,
}

#[derive(clap::Args)]
struct ConsumeArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Partition count of the stream (its subject transform).
    #[arg(long, env = "ADCLICK_PARTITIONS", default_value_t = 16)]
    partitions: u32,
    /// Messages per pull and per AckAll (adclick's `batch_size`).
    #[arg(long, env = "ADCLICK_BATCH_SIZE", default_value_t = 1000)]
    batch_size: usize,
    /// adclick's `max_batches_in_flight`: max_ack_pending is sized from it as adclick does.
    #[arg(long, env = "ADCLICK_MAX_BATCHES_IN_FLIGHT", default_value_t = 32)]
    max_batches_in_flight: usize,
    /// Consumer topology.
    #[arg(long, value_enum, default_value = "filtered")]
    topology: Topology,
    /// Stop after this many messages (default: what the stream holds at start).
    #[arg(long)]
    expect: Option<u64>,
    /// Live runs: consume while a publisher runs, and stop once this file
    /// exists and as many messages as it names have been consumed.
    #[arg(long, conflicts_with = "expect")]
    expect_file: Option<std::path::PathBuf>,
    /// Give up after this long without reaching `expect`.
    #[arg(long, default_value = "600")]
    timeout_seconds: u64,
}

fn main() {
    let cli = Cli::parse();
    let Some(verb) = cli.verb else {
        eprintln!(
            "broker: bare JetStream publisher/consumer for scripts/bench-e2e; \
             verbs: publish, consume, stored, purge (see --help). Nothing to do."
        );
        return;
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match verb {
            Verb::Publish { args } => publish(args).await,
            Verb::Consume(args) => consume(args).await,
            Verb::Stored(args) => {
                let js = connect(&args.nats_url).await?;
                println!("{}", stored(&js, &args.stream).await?);
                Ok(())
            }
            Verb::Purge(args) => {
                let js = connect(&args.nats_url).await?;
                let stream = js.get_stream(&args.stream).await?;
                stream.purge().await?;
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        eprintln!("broker: {e}");
        std::process::exit(1);
    }
}

async fn connect(url: &str) -> BenchResult<Context> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    Ok(jetstream::new(client))
}

async fn stored(js: &Context, stream: &str) -> BenchResult<u64> {
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("cannot open stream {stream}: {e}"))?;
    Ok(stream.get_info().await?.state.messages)
}

/// The bare publisher: loadgen's messages, loadgen's in-flight window, and
/// nothing else in the loop.
async fn publish(args: LoadgenArgs) -> BenchResult<()> {
    let count = args
        .count
        .ok_or("publish needs --count (the messages are generated before timing)")?;
    let mut generator = ClickGenerator::new(&args);
    let now = adclick_actors::time::now_ms();
    let messages: Vec<Outgoing> = (0..count).map(|_| generator.next_message(now)).collect();
    let js = connect(&args.nats_url).await?;
    let started = Instant::now();
    let mut inflight: VecDeque<PublishAckFuture> = VecDeque::with_capacity(args.max_inflight);
    let (mut sent, mut acked, mut duplicate, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut settle = |result: Result<jetstream::publish::PublishAck, _>| match result {
        Ok(ack) => {
            acked += 1;
            duplicate += u64::from(ack.duplicate);
        }
        Err(e) => {
            if failed == 0 {
                eprintln!("broker: publish not acknowledged: {e}");
            }
            failed += 1;
        }
    };
    for m in messages {
        let mut message = PublishMessage::build().payload(m.payload);
        if !args.no_msg_id {
            message = message.message_id(&m.click_id);
        }
        inflight.push_back(js.send_publish(m.subject, message).await?);
        sent += 1;
        // Await the oldest ack before async-nats runs out of its 5,000
        // per-connection permits (each is held until its future is awaited).
        while inflight.len() >= args.max_inflight {
            if let Some(ack) = inflight.pop_front() {
                settle(ack.await);
            }
        }
    }
    while let Some(ack) = inflight.pop_front() {
        settle(ack.await);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        r#"{{"sent":{sent},"acked":{acked},"acked_duplicate":{duplicate},"failed":{failed},"elapsed_seconds":{seconds:.3},"rate":{:.0}}}"#,
        sent as f64 / seconds
    );
    Ok(())
}

/// Decodes one chunk as ingest does; returns (clicks decoded, invalid, the last acker).
fn decode_chunk(
    chunk: Vec<Result<jetstream::Message, pull::MessagesError>>,
) -> BenchResult<(u64, u64, Option<Acker>)> {
    let (mut ok, mut invalid, mut last) = (0u64, 0u64, None);
    for item in chunk {
        let message = item?;
        let seq = message.info()?.stream_sequence;
        let (message, acker) = message.split();
        let decoded = match decode::split_subject(&message.subject) {
            Some((_, ad)) => decode::decode(ad, seq, &message.payload),
            None => Err("not a click subject".into()),
        };
        match decoded {
            Ok(_) => ok += 1,
            Err(_) => invalid += 1,
        }
        last = Some(acker);
    }
    Ok((ok, invalid, last))
}

struct Totals {
    consumed: AtomicU64,
    invalid: AtomicU64,
}

/// One consumer: pull, decode, AckAll per chunk, until `stop` is set.
async fn drain_one(
    js: Context,
    stream: String,
    name: String,
    filter: String,
    batch: usize,
    max_ack_pending: i64,
    totals: Arc<Totals>,
) -> BenchResult<()> {
    let stream = js.get_stream(&stream).await?;
    let _ = stream.delete_consumer(&name).await; // absent on a fresh run
    let consumer = stream
        .create_consumer_strict(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: filter,
            ack_policy: AckPolicy::All,
            deliver_policy: DeliverPolicy::All,
            max_ack_pending,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create consumer {name}: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?
        .ready_chunks(batch);
    while let Some(chunk) = messages.next().await {
        let n = chunk.len() as u64;
        let (_, invalid, last) = decode_chunk(chunk)?;
        if let Some(acker) = last {
            acker.ack().await?;
        }
        totals.invalid.fetch_add(invalid, Ordering::Relaxed);
        totals.consumed.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// The bare consumer: times from start (before the consumers exist, as the
/// script times `adclick serve` from its launch) to the last message.
async fn consume(args: ConsumeArgs) -> BenchResult<()> {
    let started = Instant::now();
    let js = connect(&args.stream.nats_url).await?;
    let mut expect = match (args.expect, &args.expect_file) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX, // until the file says
        (None, None) => stored(&js, &args.stream.stream).await?,
    };
    let totals = Arc::new(Totals {
        consumed: AtomicU64::new(0),
        invalid: AtomicU64::new(0),
    });
    let in_flight = args.batch_size * args.max_batches_in_flight;
    let max_ack_pending = (2 * in_flight + args.batch_size) as i64;
    let consumers: Vec<(String, String, i64)> = match args.topology {
        Topology::Filtered => (0..args.partitions)
            .map(|p| {
                (
                    format!("bare-p{p}"),
                    format!("clicks.p.{p}.*"),
                    max_ack_pending,
                )
            })
            .collect(),
        Topology::Single => vec![(
            "bare-all".into(),
            "clicks.p.*.*".into(),
            max_ack_pending * i64::from(args.partitions),
        )],
    };
    let mut tasks = Vec::new();
    for (name, filter, pending) in &consumers {
        tasks.push(tokio::spawn(drain_one(
            js.clone(),
            args.stream.stream.clone(),
            name.clone(),
            filter.clone(),
            args.batch_size,
            *pending,
            totals.clone(),
        )));
    }
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let mut first_at = None;
    loop {
        let consumed = totals.consumed.load(Ordering::Relaxed);
        if consumed > 0 && first_at.is_none() {
            first_at = Some(started.elapsed());
        }
        if expect == u64::MAX {
            if let Some(path) = &args.expect_file {
                if let Ok(text) = std::fs::read_to_string(path) {
                    if let Ok(n) = text.trim().parse() {
                        expect = n;
                    }
                }
            }
        }
        if consumed >= expect {
            break;
        }
        if let Some(failed) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(failed);
            match task.await {
                Ok(Ok(())) => return Err("a consumer's message stream ended".into()),
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(format!("a consumer task failed: {e}").into()),
            }
        }
        if Instant::now() > deadline {
            return Err(format!("consumed {consumed} of {expect} before the timeout").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    for task in &tasks {
        task.abort();
    }
    let consumed = totals.consumed.load(Ordering::Relaxed);
    let first = first_at.unwrap_or_default().as_secs_f64();
    let cpu = process_cpu_seconds();
    println!(
        r#"{{"consumed":{consumed},"invalid":{},"consumers":{},"batch_size":{},"max_ack_pending":{},"elapsed_seconds":{seconds:.3},"first_message_seconds":{first:.3},"done_epoch":{done_epoch:.3},"cpu_seconds":{cpu:.3},"rate":{:.0}}}"#,
        totals.invalid.load(Ordering::Relaxed),
        consumers.len(),
        args.batch_size,
        consumers[0].2,
        consumed as f64 / seconds
    );
    // Leave the server as we found it: the next measurement starts fresh.
    if let Ok(stream) = js.get_stream(&args.stream.stream).await {
        for (name, _, _) in &consumers {
            let _ = stream.delete_consumer(name).await;
        }
    }
    Ok(())
}

/// CPU time (user + system) this process has used, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
