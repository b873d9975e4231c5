//! `adclick reconcile --from T --to T`: recounts a range of minutes from the
//! raw clicks (the archive, then the stream after it) and compares it with
//! what the partitions stored; `--repair` writes the recount over the
//! minutes that differ.
//!
//! The steps, in order:
//! 1. The rejects (`rejected.too_late`, `rejected.future`) of the range are
//!    read first, so that each recounted click the live path refused can be
//!    named as the reason of a difference.
//! 2. The clicks: the archive's hours that overlap the range, then the
//!    stream's messages after the last archived sequence, through the last
//!    one at the start of the run. Each goes through
//!    [`FilteredRecount`]: the live decoder (subject rule included), dedup
//!    by (ad, click id) over everything read, every configured filter, no
//!    lateness limit.
//! 3. The partitions' files: their counters of the range's **final**
//!    minutes (a minute still open to late clicks is not compared; the
//!    report says from which minute on). A missing file reads as no counts.
//! 4. [`diff::compare`], and the report.
//! 5. With `--repair`: each (partition, minute) that differs gets the
//!    recount's counters in one transaction (`PartitionStore::repair_minute`),
//!    and the comparison is made again from the files.
//!
//! The partition files must not be open elsewhere (redb allows one opener):
//! run it with `adclick serve` stopped, or on a copy of the data directory
//! (`--data-dir`, e.g. a volume snapshot) for a report.

use super::diff::{self, Comparison, Counters, Explained, ReportContext};
use super::ReconcileError;
use crate::archive::{self, Archive, Dataset};
use crate::config::Config;
use adclick_actors::partitions::partition_of;
use adclick_actors::recount::FilteredRecount;
use adclick_actors::store::{MinuteRepair, PartitionStore, StoreError};
use adclick_actors::time::event_clock::{final_until, NO_WATERMARK};
use adclick_actors::time::MINUTE_MS;
use adclick_actors::AdId;
use async_nats::jetstream;
use futures::StreamExt as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the clicks of a range are read from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// The archive if one is configured, then the stream after it.
    #[default]
    Auto,
    /// Only the archive.
    Archive,
    /// Only the stream (what it still retains).
    Stream,
}

/// Which partition files a range run compares with.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stored {
    /// The files in the data directory.
    #[default]
    Files,
    /// The states the cluster's members shipped to NATS.
    Shipped,
}

/// Copies each partition's latest shipped state into `dir` (a partition
/// that shipped nothing has no file there, and reads as missing).
pub async fn fetch_shipped(config: &Config, dir: &Path) -> Result<(), ReconcileError> {
    let client = crate::nats::connect(&config.nats_url, &config.nats_security)
        .await
        .map_err(|e| ReconcileError::Range(format!("{e:#}")))?;
    let js = jetstream::new(client);
    let shipped =
        adclick_actors::cluster::fetch_shipped_states(&js, dir, config.pipeline.partitions)
            .await
            .map_err(|e| ReconcileError::Range(format!("the shipped states: {e}")))?;
    for (partition, seq) in shipped {
        match seq {
            Some(seq) => eprintln!("partition {partition}: shipped state through sequence {seq}"),
            None => eprintln!("partition {partition}: nothing shipped yet (read as missing)"),
        }
    }
    Ok(())
}

/// The payload limit the feed chunks of a repair are cut for.
const REPAIR_CHUNK_PAYLOAD: usize = 64 * 1024;

/// One counter of a minute: (ad, filter, clicks).
type MinuteCounter = (AdId, adclick_actors::Filter, u64);

/// What a range run found.
pub struct RangeOutcome {
    /// The comparison before any repair.
    pub comparison: Comparison,
    /// The rest of the report.
    pub context: ReportContext,
    /// Whether the files equal the recount at the end (after a repair, the
    /// comparison made again).
    pub agree: bool,
    /// Whether the recount read every click of the range (no gaps).
    pub complete: bool,
}

/// Why the live path refused a click that a recount counts.
#[derive(Clone, Copy)]
enum Refusal {
    TooLate,
    Future,
}

/// What the run needs besides the range.
pub struct RangeJob<'a> {
    /// The service's configuration (partitions, lateness, streams, feed).
    pub config: &'a Config,
    /// The archive's location, if any.
    pub archive_url: Option<String>,
    /// Where the clicks come from.
    pub source: Source,
    /// The partitions' files.
    pub data_dir: &'a Path,
    /// Whether to write the recount over differing minutes.
    pub repair: bool,
    /// The archive's retention (what it may have deleted), ms.
    pub archive_retention_ms: i64,
    /// Whether a repair may lower a minute's all-clicks count.
    pub allow_decrease: bool,
}

/// Runs the comparison of `[from, to)` (minutes, epoch ms).
pub async fn run(job: RangeJob<'_>, from: i64, to: i64) -> Result<RangeOutcome, ReconcileError> {
    let settings = &job.config.pipeline;
    if job.repair && !settings.extra_dimensions.is_empty() {
        return Err(ReconcileError::Range(
            "--repair rewrites whole minutes, and a recount does not replay the admission of \
             extra-dimension values (extra_dimensions is set): compare without --repair"
                .into(),
        ));
    }
    if job.repair && job.config.cluster {
        return Err(ReconcileError::Usage(
            "--repair with cluster = true: a member restores a partition from the state shipped \
             to NATS, not from its volume, so a repair of a member's files would be undone. \
             Repairs in a cluster are not supported yet (docs/RECONCILIATION.md)"
                .into(),
        ));
    }
    let mut count = RangeCount {
        recount: FilteredRecount::new(&settings.dimension_sets),
        refused: HashMap::new(),
        explained: HashMap::new(),
        invalid_by_reason: BTreeMap::new(),
        progress: Progress::new(),
    };
    let mut sources = serde_json::Map::new();
    let mut gaps: Vec<String> = Vec::new();
    // Copies of a click just outside the range decide whether one inside is
    // a repeat (the live path remembers ids until their minute is final):
    // the archive's hours are read with a margin on both sides.
    let margin = settings.allowed_lateness_ms + settings.watermark_delay_ms + 60 * MINUTE_MS;
    let (read_from, read_to) = (from.saturating_sub(margin), to.saturating_add(margin));
    // A click the live path could count in the range was received after
    // this (a later `ts` than the arrival plus the skew is refused as future).
    let countable_since = from.saturating_sub(settings.max_future_skew_ms);

    let archive = match (job.source, &job.archive_url) {
        (Source::Stream, _) => None,
        (source, Some(url)) => match existing_archive(url)? {
            Some(archive) => Some(archive),
            None if source == Source::Archive => {
                return Err(ReconcileError::Range(format!(
                    "no archive at {url}: nothing was ever archived there (check archive_url \
                     or --archive)"
                )))
            }
            None => None,
        },
        (Source::Archive, None) => {
            return Err(ReconcileError::Range(
                "--source archive needs an archive: set archive_url or pass --archive".into(),
            ))
        }
        (Source::Auto, None) => None,
    };
    let js = match job.source {
        Source::Archive => None,
        _ => {
            let client = crate::nats::connect(&job.config.nats_url, &job.config.nats_security)
                .await
                .map_err(|e| ReconcileError::Range(format!("{e:#}")))?;
            Some(jetstream::new(client))
        }
    };
    let archive_error = |e: archive::ArchiveError| ReconcileError::Range(e.to_string());

    // 1. Every reject (archive, then stream) before any click, so each
    // recounted click the live path refused is named.
    let mut through = (0u64, 0u64);
    if let Some(archive) = &archive {
        let rejects = archive::read_range(archive, Dataset::Rejects, read_from, read_to, |m| {
            note_refusal(&mut count.refused, m.subject, m.seq, m.payload, None);
        })
        .await
        .map_err(archive_error)?;
        through.1 = rejects.archived_through;
        sources.insert(
            "archive_rejects".into(),
            json!({
                "files": rejects.files, "messages": rejects.messages,
                "through_seq": rejects.archived_through,
            }),
        );
    }
    if let Some(js) = &js {
        let rejects = read_stream(
            js,
            &settings.rejected_stream,
            through.1 + 1,
            |seq, subject, payload, source_seq| {
                note_refusal(&mut count.refused, subject, seq, payload, source_seq);
            },
        )
        .await?;
        sources.insert("stream_rejects".into(), rejects.json());
    }

    // 2. The clicks: the archive's hours around the range, then the stream
    // after the archive's last sequence.
    if let Some(archive) = &archive {
        let clicks = archive::read_range(archive, Dataset::Clicks, read_from, read_to, |m| {
            count.count(m.seq, m.subject, m.payload);
        })
        .await
        .map_err(archive_error)?;
        through.0 = clicks.archived_through;
        let manifests = archive
            .manifests(Dataset::Clicks)
            .await
            .map_err(archive_error)?;
        gaps.extend(archive_gaps(
            &manifests,
            countable_since,
            from,
            job.archive_retention_ms,
        ));
        sources.insert(
            "archive".into(),
            json!({
                "files": clicks.files, "clicks": clicks.messages,
                "clicks_through_seq": clicks.archived_through,
            }),
        );
    }
    match &js {
        Some(js) => {
            let clicks = read_stream(
                js,
                &settings.stream,
                through.0 + 1,
                |seq, subject, payload, _| count.count(seq, subject, payload),
            )
            .await?;
            if clicks.from > through.0 + 1 {
                // The stream no longer holds what follows the archive (or
                // the stream's start, without one).
                let dropped_before_range = through.0 == 0
                    && first_received(js, &settings.stream, clicks.from)
                        .await
                        .is_some_and(|received| received <= countable_since);
                if !dropped_before_range {
                    gaps.push(format!(
                        "sequences {}..{} of {} are neither archived nor still in the stream",
                        through.0 + 1,
                        clicks.from - 1,
                        settings.stream
                    ));
                }
            }
            sources.insert("stream".into(), clicks.json());
        }
        None => gaps.push(format!(
            "--source archive reads no stream: clicks after sequence {} (the archive's last) \
             are not counted; --source auto reads the stream after the archive",
            through.0
        )),
    }
    count.progress.done();
    let RangeCount {
        recount,
        explained,
        invalid_by_reason,
        ..
    } = count;
    let tally = recount.tally();
    let recounted: Counters = recount
        .finish()
        .into_iter()
        .filter(|((minute, _, _), _)| (from..to).contains(minute))
        .collect();

    // 3. The partitions' files.
    let partitions = settings.partitions;
    let lateness = settings.allowed_lateness_ms;
    let mut stores: BTreeMap<u32, PartitionStore> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut compared_until: BTreeMap<u32, i64> = BTreeMap::new();
    let mut stored = Counters::new();
    for p in 0..partitions {
        let path = job.data_dir.join(format!("partition-{p}.redb"));
        if !path.exists() {
            missing.push(p);
            compared_until.insert(p, to);
            continue;
        }
        let store = PartitionStore::open(job.data_dir, p).map_err(|e| in_use(e, &path))?;
        let watermark = store.watermark().map_err(store_error)?;
        let until = if watermark == NO_WATERMARK {
            from
        } else {
            final_until(watermark, lateness).clamp(from, to)
        };
        compared_until.insert(p, until);
        let totals = store.stored_totals(from, until).map_err(store_error)?;
        if let Some(((_, ad, _), _)) = totals
            .iter()
            .find(|((_, ad, _), _)| partition_of(ad.as_str(), partitions) != p)
        {
            return Err(ReconcileError::Range(format!(
                "{} holds ad {} of partition {}: this run's `partitions` ({partitions}) is not \
                 the service's",
                path.display(),
                ad.as_str(),
                partition_of(ad.as_str(), partitions)
            )));
        }
        stored.extend(totals);
        stores.insert(p, store);
    }

    // 4. Compare.
    let place = |ad: &AdId| partition_of(ad.as_str(), partitions);
    let compared = |p: u32, minute: i64| compared_until.get(&p).is_some_and(|u| minute < *u);
    let comparison = diff::compare(&recounted, &stored, place, compared, &explained);
    let mut context = ReportContext {
        from,
        to,
        sources: Value::Object(sources),
        read: (tally.payloads, tally.valid, tally.repeats, tally.invalid),
        invalid_by_reason,
        missing_partitions: missing.clone(),
        not_final_from: compared_until
            .iter()
            .filter(|(_, until)| **until < to)
            .map(|(p, until)| (*p, *until))
            .collect(),
        repair: None,
        gaps: gaps.clone(),
    };
    let mut agree = comparison.agree();

    // 5. Repair.
    if job.repair && !agree && !gaps.is_empty() {
        return Err(ReconcileError::Range(format!(
            "no repair: the recount did not read every click of the range ({})",
            gaps.join("; ")
        )));
    }
    if job.repair && !agree && !job.allow_decrease {
        let lower: Vec<&diff::Difference> = comparison
            .differences
            .iter()
            .filter(|d| d.filter == adclick_actors::Filter::ALL && d.recounted < d.stored)
            .collect();
        if let Some(d) = lower.first() {
            return Err(ReconcileError::Range(format!(
                "no repair: {} counters would go down (e.g. {} at {}: stored {}, recounted {}). \
                 A recount normally finds clicks the live path missed, not fewer; check the \
                 sources and the configuration, then pass --allow-decrease to repair anyway",
                lower.len(),
                d.ad.as_str(),
                adclick_actors::time::format_rfc3339(d.minute),
                d.stored,
                d.recounted
            )));
        }
    }
    if job.repair && !agree {
        if let Some(p) = comparison
            .differing
            .iter()
            .map(|(p, _)| *p)
            .find(|p| missing.contains(p))
        {
            return Err(ReconcileError::Range(format!(
                "partition {p}'s file is missing: a repair writes minutes, not a whole file. Run \
                 `adclick rebuild --partition {p}` (it replays the stream), then reconcile again"
            )));
        }
        let at_ms = adclick_actors::time::now_ms();
        let mut by_minute: BTreeMap<(u32, i64), Vec<MinuteCounter>> = comparison
            .differing
            .iter()
            .map(|key| (*key, Vec::new()))
            .collect();
        for ((minute, ad, filter), n) in &recounted {
            if let Some(counters) = by_minute.get_mut(&(place(ad), *minute)) {
                counters.push((*ad, *filter, *n));
            }
        }
        let mut written = Vec::new();
        let (mut counters, mut dropped) = (0usize, 0usize);
        for ((p, minute), minute_counters) in by_minute {
            let Some(store) = stores.get(&p) else {
                continue;
            };
            let repaired = store
                .repair_minute(&MinuteRepair {
                    minute,
                    counters: minute_counters,
                    at_ms,
                    publish: settings.feed.enabled,
                    // The server's limit is not known here: chunks small
                    // enough for any server (more of them, nothing else).
                    max_payload: REPAIR_CHUNK_PAYLOAD,
                })
                .map_err(store_error)?;
            counters += repaired.counters;
            dropped += repaired.dropped;
            written.push(json!({
                "partition": p,
                "minute": adclick_actors::time::format_rfc3339(minute),
                "counters": repaired.counters,
                "dropped": repaired.dropped,
                "feed_versions": repaired.versions.map(|(a, b)| json!([a, b])),
                "tops_deleted": repaired.tops_deleted,
            }));
        }
        // Read back: the repair is done only if the files now agree.
        let mut after = Counters::new();
        for (p, store) in &stores {
            let until = compared_until.get(p).copied().unwrap_or(from);
            after.extend(
                store
                    .stored_totals(from, until)
                    .map_err(store_error)?
                    .into_iter()
                    .filter(|((_, ad, _), _)| place(ad) == *p),
            );
        }
        agree = diff::compare(&recounted, &after, place, compared, &explained).agree();
        context.repair = Some(json!({
            "minutes": written.len(),
            "counters": counters,
            "dropped": dropped,
            "agree_after": agree,
            "written": written,
        }));
    }
    Ok(RangeOutcome {
        complete: context.gaps.is_empty(),
        comparison,
        context,
        agree,
    })
}

/// The archive at `url`, or `None` when nothing was ever archived there
/// (opening it would create an empty one, and an empty recount is wrong).
fn existing_archive(url: &str) -> Result<Option<Archive>, ReconcileError> {
    let root = archive::parse_archive_url(url)
        .map_err(|e| ReconcileError::Usage(format!("archive {url:?}: {e}")))?;
    if !root.join("_manifests").is_dir() {
        return Ok(None);
    }
    Archive::open(url)
        .map(Some)
        .map_err(|e| ReconcileError::Range(e.to_string()))
}

/// What the archive's manifests leave unread of clicks countable from
/// `countable_since` (epoch ms) in a range starting at `from`:
/// - its first range starts after sequence 1, and its messages were not all
///   received before `countable_since` (every message before it was received
///   before it was committed);
/// - a gap between two ranges while the range is older than the archive's
///   retention (within it, a gap is only a range whose files retention
///   deleted, all of other hours).
fn archive_gaps(
    manifests: &[crate::archive::layout::Manifest],
    countable_since: i64,
    from: i64,
    retention_ms: i64,
) -> Vec<String> {
    let mut gaps = Vec::new();
    if let Some(first) = manifests.first() {
        if first.first_seq > 1 && first.created_ms > countable_since {
            gaps.push(format!(
                "the archive starts at sequence {} (committed at {}): earlier messages, \
                 received before that, may hold clicks of the range",
                first.first_seq,
                adclick_actors::time::format_rfc3339(first.created_ms)
            ));
        }
    }
    let within_retention = from >= adclick_actors::time::now_ms() - retention_ms;
    for pair in manifests.windows(2) {
        if pair[1].first_seq > pair[0].last_seq + 1 && !within_retention {
            gaps.push(format!(
                "archived sequences {}..{} are missing (deleted by retention?)",
                pair[0].last_seq + 1,
                pair[1].first_seq - 1
            ));
        }
    }
    gaps
}

/// When the stream received its message `seq` (epoch ms), if it still holds it.
async fn first_received(js: &jetstream::Context, stream: &str, seq: u64) -> Option<i64> {
    let stream = js.get_stream(stream).await.ok()?;
    let message = stream.get_raw_message(seq).await.ok()?;
    i64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The recount of a range in progress, and what it learns on the way.
struct RangeCount {
    recount: FilteredRecount,
    /// Clicks the live path refused (read first), and why.
    refused: HashMap<(AdId, u128), (Refusal, Option<u64>)>,
    /// Per (minute, ad): recounted clicks the live path refused.
    explained: HashMap<(i64, AdId), Explained>,
    /// Invalid messages by reason.
    invalid_by_reason: BTreeMap<String, u64>,
    progress: Progress,
}

impl RangeCount {
    /// Counts one message, naming the live path's refusal of a click it counts.
    fn count(&mut self, seq: u64, subject: &str, payload: &[u8]) {
        self.progress.tick();
        let subject_ad = subject.rsplit('.').next();
        match self.recount.add(seq, subject_ad, payload) {
            Ok(Some(click)) => {
                // Refused live, and (where the reject says which message it
                // was) this very copy: a retry refused after its first copy
                // was counted explains nothing.
                let refusal = self
                    .refused
                    .get(&(click.ad, click.id))
                    .filter(|(_, source)| source.is_none_or(|s| s == seq));
                if let Some((why, _)) = refusal {
                    let e = self.explained.entry((click.minute, click.ad)).or_default();
                    match why {
                        Refusal::TooLate => e.too_late += 1,
                        Refusal::Future => e.future += 1,
                    }
                }
            }
            Ok(None) => {}
            Err(reason) => {
                *self
                    .invalid_by_reason
                    .entry(super::reason_kind(&reason).to_string())
                    .or_insert(0) += 1;
            }
        }
    }
}

/// Remembers a click the live path refused as too late or future, with the
/// sequence of the message refused when the reject says it.
fn note_refusal(
    refused: &mut HashMap<(AdId, u128), (Refusal, Option<u64>)>,
    subject: &str,
    seq: u64,
    payload: &[u8],
    source_seq: Option<u64>,
) {
    let why = match subject {
        s if s.ends_with("too_late") => Refusal::TooLate,
        s if s.ends_with("future") => Refusal::Future,
        _ => return,
    };
    if let Ok(click) = adclick_actors::recount::decode_message(None, seq, payload) {
        refused.insert((click.ad, click.id), (why, source_seq));
    }
}

/// What a stream read covered.
struct StreamRead {
    messages: u64,
    /// The first sequence read from (the one asked for, or the stream's
    /// first when it no longer holds that one).
    from: u64,
    through: u64,
}

impl StreamRead {
    fn json(&self) -> Value {
        json!({"messages": self.messages, "from_seq": self.from, "through_seq": self.through})
    }
}

/// Reads `stream` from sequence `from` through its last sequence at the
/// start of the read, with an ordered consumer (nothing acknowledged,
/// nothing left behind on the server).
async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    mut each: impl FnMut(u64, &str, &[u8], Option<u64>),
) -> Result<StreamRead, ReconcileError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        ReconcileError::Range(format!("stream {stream}: {what}: {e}"))
    };
    let mut handle = js
        .get_stream(stream)
        .await
        .map_err(|e| failed("cannot open it", &e))?;
    let info = handle
        .info()
        .await
        .map_err(|e| failed("cannot read its state", &e))?;
    let through = info.state.last_sequence;
    let from = from.max(info.state.first_sequence);
    let mut read = StreamRead {
        messages: 0,
        from,
        through,
    };
    if info.state.messages == 0 || from > through {
        return Ok(read);
    }
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| failed("cannot read it", &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| failed("cannot read it", &e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| failed("reading", &e))?;
        let seq = message
            .info()
            .map_err(|e| failed("a message without its sequence", &e))?
            .stream_sequence;
        if seq > through {
            break;
        }
        read.messages += 1;
        let source_seq = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Adclick-Source-Sequence"))
            .and_then(|v| v.as_str().parse().ok());
        each(seq, message.subject.as_str(), &message.payload, source_seq);
        if seq == through {
            break;
        }
    }
    Ok(read)
}

fn store_error(e: StoreError) -> ReconcileError {
    ReconcileError::Range(e.to_string())
}

/// A partition file that cannot be opened: in use by `serve`, most likely.
fn in_use(e: StoreError, path: &Path) -> ReconcileError {
    match e {
        StoreError::Open {
            source: redb::DatabaseError::DatabaseAlreadyOpen,
            ..
        } => ReconcileError::Range(format!(
            "{} is in use: stop `adclick serve` first, or compare a copy of the data \
             directory (--data-dir)",
            path.display()
        )),
        e => store_error(e),
    }
}

/// Messages read so far, on standard error: a line redrawn in place on a
/// terminal, a line every 10 s otherwise.
struct Progress {
    read: u64,
    started: Instant,
    shown: Instant,
    terminal: bool,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            read: 0,
            started: now,
            shown: now,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    #[inline]
    fn tick(&mut self) {
        self.read += 1;
        if self.read.is_multiple_of(65_536) {
            let every = if self.terminal {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(10)
            };
            if self.shown.elapsed() >= every {
                self.shown = Instant::now();
                self.show(if self.terminal { "\r" } else { "" }, "");
            }
        }
    }

    fn show(&self, start: &str, end: &str) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "{start}recounting: {} messages read ({:.0}/s){end}{}",
            self.read,
            self.read as f64 / secs,
            if self.terminal { "" } else { "\n" }
        );
    }

    fn done(&self) {
        if self.terminal && self.read >= 65_536 {
            self.show("\r", "\n");
        }
    }
}

/// The UTC day `day` names (`YYYY-MM-DD`, `today` or `yesterday`, as of
/// `now_ms`) as the range `[midnight, next midnight)`.
pub fn parse_day(day: &str, now_ms: i64) -> Result<(i64, i64), ReconcileError> {
    const DAY_MS: i64 = 24 * 60 * MINUTE_MS;
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS;
    let start = match day {
        "today" => Some(today),
        "yesterday" => Some(today - DAY_MS),
        text => adclick_actors::time::parse_rfc3339(&format!("{text}T00:00:00Z")),
    }
    .ok_or_else(|| {
        ReconcileError::Usage(format!(
            "--day {day:?} is none of YYYY-MM-DD, today, yesterday"
        ))
    })?;
    Ok((start, start + DAY_MS))
}

/// The minute range `[from, to)` of the command line: RFC 3339 or epoch
/// milliseconds, floored to minutes, `from` before `to`.
pub fn parse_range(from: &str, to: &str) -> Result<(i64, i64), ReconcileError> {
    let parse = |name: &str, text: &str| -> Result<i64, ReconcileError> {
        text.parse::<i64>()
            .ok()
            .or_else(|| adclick_actors::time::parse_rfc3339(text))
            // From 1970 to the end of year 9999, as RFC 3339 writes them.
            .filter(|ms| (0..=253_402_300_799_999).contains(ms))
            .map(adclick_actors::time::minute_floor)
            .ok_or_else(|| {
                ReconcileError::Usage(format!(
                    "--{name} {text:?} is neither RFC 3339 (2026-11-29T10:00:00Z) nor epoch milliseconds from 1970 to 9999"
                ))
            })
    };
    let (f, t) = (parse("from", from)?, parse("to", to)?);
    if f >= t {
        return Err(ReconcileError::Usage(format!(
            "--from must be before --to (floored to minutes: {} and {})",
            adclick_actors::time::format_rfc3339(f),
            adclick_actors::time::format_rfc3339(t)
        )));
    }
    if (t - f) / MINUTE_MS > 31 * 24 * 60 {
        return Err(ReconcileError::Usage(
            "a range longer than 31 days: reconcile it a day at a time".into(),
        ));
    }
    Ok((f, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_its_utc_midnights() {
        // 2026-11-29T10:00:00Z.
        let now = 1_795_946_400_000;
        let midnight = 1_795_910_400_000;
        let day = 24 * 60 * MINUTE_MS;
        assert_eq!(parse_day("today", now).unwrap(), (midnight, midnight + day));
        assert_eq!(
            parse_day("yesterday", now).unwrap(),
            (midnight - day, midnight)
        );
        assert_eq!(
            parse_day("2026-11-29", 0).unwrap(),
            (midnight, midnight + day)
        );
        assert!(parse_day("2026-02-30", 0).is_err());
        assert!(parse_day("monday", 0).is_err());
        assert!(parse_range("10", "5").is_err());
        assert!(parse_range("-9223372036854775808", "9223372036854775807").is_err());
        assert_eq!(parse_range("60000", "180001").unwrap(), (60_000, 180_000));
    }
}
