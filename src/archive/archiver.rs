//! The archiver: for each dataset, an ordered consumer from the sequence
//! after the archive's last commit → a buffer of raw messages → a flush
//! (Parquet files per event hour, then [`layout::commit`]).
//!
//! A flush happens when `archive_max_rows` messages wait, when the first of
//! them has waited `archive_flush_interval`, and at a stop (SIGTERM: flush
//! what is buffered, then exit). The consumer is ephemeral and acks nothing:
//! the archive is the checkpoint. Any error (the stream, the store, a
//! conflict with another archiver) drops the buffer and starts the dataset
//! over from [`layout::recover`] a second later: what was buffered is read
//! again from the stream, so nothing is lost and nothing doubled. Retention
//! ([`layout::prune`]) runs at start and every ten minutes.
//!
//! Runs as `adclick archive` ([`run_command`]; `--once`: archive what the
//! streams hold, then exit) or inside `adclick serve` with `archive = true`
//! ([`spawn`]).

use super::layout::{self, Manifest, ManifestFile, StagedFile};
use super::parquet_file::{self, Fields, Message, Rows};
use super::{Archive, ArchiveError, ArchiveSettings, Dataset};
use crate::config::Config;
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Messages committed to the archive, by dataset.
pub const ARCHIVED_MESSAGES: &str = "adclick_archive_messages_total";
/// Parquet files committed, by dataset.
pub const ARCHIVED_FILES: &str = "adclick_archive_files_total";
/// Duration of one flush (encode, stage, commit, move), seconds, by dataset.
pub const FLUSH_SECONDS: &str = "adclick_archive_flush_duration_seconds";
/// The stream's last sequence minus the archive's last committed one, by dataset.
pub const LAG: &str = "adclick_archive_lag_messages";
/// Messages read and waiting for the next flush, by dataset.
pub const BUFFERED: &str = "adclick_archive_buffered_messages";
/// Files deleted by retention, by dataset.
pub const PRUNED_FILES: &str = "adclick_archive_pruned_files_total";
/// Flushes or starts that failed (the dataset then starts over), by dataset.
pub const FAILURES: &str = "adclick_archive_failures_total";

/// Buckets of [`FLUSH_SECONDS`].
pub const FLUSH_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How often the lag is measured (and, with `--once`, whether the stream ended).
const TICK: Duration = Duration::from_secs(1);
/// The pause before a dataset starts over after an error.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Describes the metrics (once, with the recorder installed).
pub fn describe() {
    metrics::describe_counter!(ARCHIVED_MESSAGES, "Messages committed to the raw archive");
    metrics::describe_counter!(ARCHIVED_FILES, "Parquet files committed to the raw archive");
    metrics::describe_histogram!(
        FLUSH_SECONDS,
        metrics::Unit::Seconds,
        "One archive flush: encode, stage, commit, move"
    );
    metrics::describe_gauge!(
        LAG,
        "Stream's last sequence minus the archive's last committed one"
    );
    metrics::describe_gauge!(
        BUFFERED,
        "Messages read, waiting for the next archive flush"
    );
    metrics::describe_counter!(PRUNED_FILES, "Archive files deleted by retention");
    metrics::describe_counter!(
        FAILURES,
        "Archive flushes or starts that failed (then retried)"
    );
}

/// What the archiver needs besides the archive.
#[derive(Clone, Debug)]
pub struct ArchiverSettings {
    /// The archive keys of the configuration.
    pub archive: ArchiveSettings,
    /// The clicks stream's name (`stream_name`).
    pub clicks_stream: String,
    /// The rejected stream's name (`rejected_stream_name`).
    pub rejects_stream: String,
}

impl ArchiverSettings {
    /// From the service's configuration.
    pub fn of(config: &Config) -> ArchiverSettings {
        ArchiverSettings {
            archive: config.archive.clone(),
            clicks_stream: config.pipeline.stream.clone(),
            rejects_stream: config.pipeline.rejected_stream.clone(),
        }
    }

    fn stream(&self, dataset: Dataset) -> &str {
        match dataset {
            Dataset::Clicks => &self.clicks_stream,
            Dataset::Rejects => &self.rejects_stream,
        }
    }
}

/// Groups `messages` (in sequence order) by hour into Parquet files.
pub fn build_files(
    dataset: Dataset,
    messages: &[Message],
) -> Result<Vec<StagedFile>, ArchiveError> {
    let mut by_hour: BTreeMap<i64, Rows> = BTreeMap::new();
    for message in messages {
        let fields = Fields::of(&message.payload);
        let hour = layout::hour_of(fields.ts.unwrap_or(message.received_ms));
        by_hour
            .entry(hour)
            .or_insert_with(|| Rows::new(dataset))
            .push(message, &fields);
    }
    let mut files = Vec::with_capacity(by_hour.len());
    for (hour_ms, rows) in by_hour {
        let (first, last) = match (rows.seq.first(), rows.seq.last()) {
            (Some(f), Some(l)) => (*f as u64, *l as u64),
            _ => continue,
        };
        let path = layout::file_path(hour_ms, first, last);
        let bytes = parquet_file::write_rows(&rows).map_err(|source| ArchiveError::Parquet {
            path: layout::data_path(dataset, &path),
            source,
        })?;
        files.push(StagedFile {
            entry: ManifestFile {
                path,
                hour_ms,
                rows: rows.len() as u64,
                first_seq: first,
                last_seq: last,
                bytes: bytes.len() as u64,
            },
            bytes: bytes.into(),
        });
    }
    Ok(files)
}

/// One dataset's archiving: its place in the stream and its buffer.
struct DatasetArchiver<'a> {
    archive: &'a Archive,
    dataset: Dataset,
    settings: &'a ArchiverSettings,
    manifests: Vec<Manifest>,
    /// The highest committed sequence.
    archived: u64,
    buffer: Vec<Message>,
    /// When the oldest buffered message arrived.
    first_at: Option<Instant>,
}

impl DatasetArchiver<'_> {
    fn label(&self) -> [(&'static str, &'static str); 1] {
        [("dataset", self.dataset.name())]
    }

    /// Commits what is buffered, as the range after the last commit.
    async fn flush(&mut self) -> Result<(), ArchiveError> {
        let Some(last_seq) = self.buffer.last().map(|m| m.seq) else {
            return Ok(());
        };
        let first_seq = self.archived + 1;
        let started = std::time::Instant::now();
        let messages = std::mem::take(&mut self.buffer);
        self.first_at = None;
        let dataset = self.dataset;
        let count = messages.len() as u64;
        let files = tokio::task::spawn_blocking(move || build_files(dataset, &messages))
            .await
            .map_err(|e| ArchiveError::Task(e.to_string()))??;
        let manifest = layout::commit(self.archive, dataset, first_seq, last_seq, files).await?;
        let label = self.label();
        metrics::counter!(ARCHIVED_MESSAGES, &label).increment(count);
        metrics::counter!(ARCHIVED_FILES, &label).increment(manifest.files.len() as u64);
        metrics::histogram!(FLUSH_SECONDS, &label).record(started.elapsed().as_secs_f64());
        metrics::gauge!(BUFFERED, &label).set(0.0);
        tracing::debug!(
            dataset = dataset.name(),
            first_seq,
            last_seq,
            messages = count,
            files = manifest.files.len(),
            "archive: committed"
        );
        self.archived = last_seq;
        self.manifests.push(manifest);
        Ok(())
    }

    async fn prune(&mut self) -> Result<(), ArchiveError> {
        let cutoff = cutoff_ms(self.settings);
        let pruned = layout::prune(self.archive, self.dataset, &mut self.manifests, cutoff).await?;
        if pruned.files > 0 {
            metrics::counter!(PRUNED_FILES, &self.label()).increment(pruned.files as u64);
            tracing::info!(
                dataset = self.dataset.name(),
                files = pruned.files,
                manifests = pruned.manifests,
                "archive: retention deleted old files"
            );
        }
        Ok(())
    }
}

/// Now minus `archive_retention`.
fn cutoff_ms(settings: &ArchiverSettings) -> i64 {
    let retention = i64::try_from(settings.archive.retention.as_millis()).unwrap_or(i64::MAX);
    adclick_actors::time::now_ms().saturating_sub(retention)
}

/// Whether `stop` has fired (or its sender is gone).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Archives `dataset` until `stop` (flushing what is buffered), or with
/// `once` until the stream's last message at start is committed.
async fn run_dataset(
    js: &jetstream::Context,
    archive: &Archive,
    dataset: Dataset,
    settings: &ArchiverSettings,
    stop: &mut watch::Receiver<bool>,
    once: bool,
) -> Result<(), ArchiveError> {
    let stream_name = settings.stream(dataset).to_string();
    let stream_error = |problem: String| ArchiveError::Stream {
        stream: stream_name.clone(),
        problem,
    };
    let recovery = layout::recover(archive, dataset, cutoff_ms(settings)).await?;
    if recovery.finished + recovery.discarded + recovery.orphans > 0 {
        tracing::info!(
            dataset = dataset.name(),
            finished = recovery.finished,
            discarded = recovery.discarded,
            orphans = recovery.orphans,
            "archive: recovered after an interrupted run"
        );
    }
    let archived = recovery.archived_through();
    let mut this = DatasetArchiver {
        archive,
        dataset,
        settings,
        manifests: recovery.manifests,
        archived,
        buffer: Vec::new(),
        first_at: None,
    };
    this.prune().await?;
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| stream_error(e.to_string()))?;
    let last_at_start = stream
        .info()
        .await
        .map_err(|e| stream_error(e.to_string()))?
        .state
        .last_sequence;
    let label = this.label();
    metrics::gauge!(LAG, &label).set(last_at_start.saturating_sub(archived) as f64);
    tracing::info!(
        dataset = dataset.name(),
        stream = %stream_name,
        archived_through = archived,
        stream_last = last_at_start,
        "archive: resuming"
    );
    if once && last_at_start <= archived {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: archived + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error(format!("cannot create a consumer: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| stream_error(format!("cannot consume: {e}")))?;
    let max_rows = settings.archive.max_rows.max(1);
    let flush_interval = settings.archive.flush_interval;
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    let mut last_seen = archived;
    loop {
        if stopped(stop) {
            return this.flush().await;
        }
        let now = Instant::now();
        let flush_due = this.first_at.map(|t| t + flush_interval);
        let wake = flush_due.map_or(now + TICK, |due| due.min(now + TICK));
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep_until(wake) => {
                if flush_due.is_some_and(|due| Instant::now() >= due) {
                    this.flush().await?;
                }
                let info = stream
                    .info()
                    .await
                    .map_err(|e| stream_error(e.to_string()))?;
                let state = &info.state;
                let last = state.last_sequence;
                metrics::gauge!(LAG, &label).set(last.saturating_sub(this.archived) as f64);
                // Messages the stream's limits deleted before they were
                // read are not coming: they count as seen.
                let seen = last_seen.max(state.first_sequence.saturating_sub(1));
                if once && (last <= seen || state.messages == 0) {
                    // Nothing more (the stream's end was deleted by its limits).
                    return this.flush().await;
                }
                if Instant::now() >= next_prune {
                    this.prune().await?;
                    next_prune = Instant::now() + PRUNE_EVERY;
                }
            }
            next = messages.next() => {
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => return Err(stream_error(format!("consuming failed: {e}"))),
                    None => return Err(stream_error("the consumer ended".into())),
                };
                let (seq, received_ms) = {
                    let info = message
                        .info()
                        .map_err(|e| stream_error(format!("a message without JetStream info: {e}")))?;
                    let ms = info.published.unix_timestamp_nanos() / 1_000_000;
                    (info.stream_sequence, i64::try_from(ms).unwrap_or(i64::MAX))
                };
                if seq <= last_seen {
                    continue; // a redelivery (the ordered consumer recreated itself)
                }
                if seq > last_seen + 1 {
                    tracing::warn!(
                        dataset = dataset.name(),
                        from = last_seen + 1,
                        to = seq - 1,
                        "archive: these sequences are not in the stream (deleted by its limits \
                         before they were archived, or by hand)"
                    );
                }
                last_seen = seq;
                let (message, _) = message.split();
                let reason = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Adclick-Reject-Reason"))
                    .map(|v| bytes::Bytes::copy_from_slice(v.as_str().as_bytes()));
                this.buffer.push(Message {
                    seq,
                    received_ms,
                    subject: bytes::Bytes::copy_from_slice(message.subject.as_str().as_bytes()),
                    payload: message.payload,
                    reason,
                });
                if this.first_at.is_none() {
                    this.first_at = Some(Instant::now());
                }
                metrics::gauge!(BUFFERED, &label).set(this.buffer.len() as f64);
                if this.buffer.len() >= max_rows {
                    this.flush().await?;
                }
                if once && seq >= last_at_start {
                    return this.flush().await;
                }
            }
        }
    }
}

/// Archives `dataset` until `stop`; an error starts it over after a pause
/// (with `once`, an error ends it).
async fn archive_dataset(
    js: jetstream::Context,
    archive: Arc<Archive>,
    dataset: Dataset,
    settings: Arc<ArchiverSettings>,
    mut stop: watch::Receiver<bool>,
    once: bool,
) -> Result<(), ArchiveError> {
    loop {
        match run_dataset(&js, &archive, dataset, &settings, &mut stop, once).await {
            Ok(()) => return Ok(()),
            Err(e) if once => return Err(e),
            Err(e) => {
                metrics::counter!(FAILURES, "dataset" => dataset.name()).increment(1);
                tracing::error!(
                    dataset = dataset.name(),
                    error = %e,
                    "archive: failed; starting over from the last commit"
                );
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = stop.changed() => {}
                }
                if stopped(&stop) {
                    return Ok(());
                }
            }
        }
    }
}

/// Archives both datasets until `stop` fires (each flushes what it
/// buffered), or with `once` until everything the streams held at start is
/// committed.
pub async fn run(
    js: jetstream::Context,
    archive: Arc<Archive>,
    settings: ArchiverSettings,
    stop: watch::Receiver<bool>,
    once: bool,
) -> Result<(), ArchiveError> {
    let settings = Arc::new(settings);
    let tasks: Vec<_> = Dataset::ALL
        .into_iter()
        .map(|dataset| {
            tokio::spawn(archive_dataset(
                js.clone(),
                archive.clone(),
                dataset,
                settings.clone(),
                stop.clone(),
                once,
            ))
        })
        .collect();
    let mut result = Ok(());
    for task in tasks {
        let outcome = task
            .await
            .map_err(|e| ArchiveError::Task(e.to_string()))
            .and_then(|r| r);
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

/// The archiver running inside `adclick serve`: [`Running::stop`] it.
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ArchiveError>>,
}

/// Starts the archiver in the background (`adclick serve` with `archive = true`).
pub fn spawn(js: jetstream::Context, config: &Config) -> Result<Running, ArchiveError> {
    let archive = Arc::new(Archive::open(&config.archive.url)?);
    describe();
    let (stop, stopped) = watch::channel(false);
    let settings = ArchiverSettings::of(config);
    tracing::info!(
        archive = archive.location(),
        "archive: archiving both streams"
    );
    let task = tokio::spawn(run(js, archive, settings, stopped, false));
    Ok(Running { stop, task })
}

impl Running {
    /// Flushes what is buffered and stops, within `within`; returns whether
    /// it finished in time (if not, the next start reads the rest again
    /// from the stream: no loss).
    pub async fn stop(self, within: Duration) -> bool {
        let _ = self.stop.send(true);
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "archive: the final flush failed; the next start reads it again");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "archive: the archiver task failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// Serves `/healthz` and `/metrics` (the archive's metrics) on `http_addr`,
/// with the service's TLS and tokens (`metrics_require_token`), until `stop`.
async fn serve_probes(
    config: &Config,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use crate::gateway::listener::{self, RestListener};
    let handle = crate::serve::install_metrics()?;
    describe();
    let tls = match &config.http_listener.tls {
        Some(files) => Some(listener::tls_acceptor(files)?),
        None => None,
    };
    let listener = RestListener::bind(config.http_addr, tls, config.http_listener.clone()).await?;
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config.api_access.clone()),
            crate::gateway::access::require_token,
        ));
    tracing::info!(http_addr = %listener.local_addr()?, "archive: /healthz and /metrics");
    Ok(tokio::spawn(listener.serve(router, async {
        let _ = stop.await;
    })))
}

/// `adclick archive`: archives until SIGTERM (flushing what is buffered),
/// or with `once` what the streams hold now, then returns. Serves
/// `/healthz` and `/metrics` on `http_addr` meanwhile.
pub async fn run_command(config: Config, once: bool) -> anyhow::Result<()> {
    let archive = Arc::new(Archive::open(&config.archive.url)?);
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel();
    let http = serve_probes(&config, http_stopped).await?;
    let client = crate::nats::connect(&config.nats_url, &config.nats_security).await?;
    let js = jetstream::new(client);
    // The clicks and rejected streams only: the output feed is not the
    // archiver's (so its NATS user needs no right on it).
    let mut streams = config.clone();
    streams.pipeline.feed.enabled = false;
    crate::nats::ensure_streams(&js, &streams).await?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        crate::serve::stop_signal().await;
        tracing::info!("stopping: flushing what is buffered");
        let _ = stop.send(true);
    });
    tracing::info!(
        archive = archive.location(),
        once,
        "archive: archiving both streams"
    );
    let result = run(js, archive, ArchiverSettings::of(&config), stopped, once)
        .await
        .context("archive");
    let _ = http_stop.send(());
    let _ = http.await;
    result?;
    tracing::info!("archive: stopped");
    Ok(())
}
