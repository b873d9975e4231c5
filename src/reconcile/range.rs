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
    let mut progress = Progress::new();
    let mut recount = FilteredRecount::new(&settings.dimension_sets);
    let mut refused: HashMap<(AdId, u128), Refusal> = HashMap::new();
    let mut explained: HashMap<(i64, AdId), Explained> = HashMap::new();
    let mut invalid_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut sources = serde_json::Map::new();

    let archive = match (job.source, &job.archive_url) {
        (Source::Stream, _) => None,
        (_, Some(url)) => {
            Some(Archive::open(url).map_err(|e| ReconcileError::Range(e.to_string()))?)
        }
        (Source::Archive, None) => {
            return Err(ReconcileError::Range(
                "--source archive needs an archive: set archive_url or pass --archive".into(),
            ))
        }
        (Source::Auto, None) => None,
    };

    // 1. Rejects, then 2. clicks: archive first, the stream after it.
    let mut through = (0u64, 0u64);
    if let Some(archive) = &archive {
        let rejects = archive::read_range(archive, Dataset::Rejects, from, to, |m| {
            note_refusal(&mut refused, m.subject, m.seq, m.payload);
        })
        .await
        .map_err(|e| ReconcileError::Range(e.to_string()))?;
        let clicks = archive::read_range(archive, Dataset::Clicks, from, to, |m| {
            progress.tick();
            count_one(
                &mut recount,
                &refused,
                &mut explained,
                &mut invalid_by_reason,
                m.seq,
                m.subject,
                m.payload,
            );
        })
        .await
        .map_err(|e| ReconcileError::Range(e.to_string()))?;
        through = (clicks.archived_through, rejects.archived_through);
        sources.insert(
            "archive".into(),
            json!({
                "files": clicks.files + rejects.files,
                "clicks": clicks.messages,
                "rejects": rejects.messages,
                "clicks_through_seq": clicks.archived_through,
                "rejects_through_seq": rejects.archived_through,
            }),
        );
    }
    if job.source != Source::Archive {
        let client = crate::nats::connect(&job.config.nats_url, &job.config.nats_security)
            .await
            .map_err(|e| ReconcileError::Range(format!("{e:#}")))?;
        let js = jetstream::new(client);
        let rejects = read_stream(
            &js,
            &settings.rejected_stream,
            through.1 + 1,
            |seq, subject, payload| {
                note_refusal(&mut refused, subject, seq, payload);
            },
        )
        .await?;
        let clicks = read_stream(
            &js,
            &settings.stream,
            through.0 + 1,
            |seq, subject, payload| {
                progress.tick();
                count_one(
                    &mut recount,
                    &refused,
                    &mut explained,
                    &mut invalid_by_reason,
                    seq,
                    subject,
                    payload,
                );
            },
        )
        .await?;
        sources.insert(
            "stream".into(),
            json!({
                "clicks": clicks.messages, "clicks_from_seq": clicks.from, "clicks_through_seq": clicks.through,
                "rejects": rejects.messages, "rejects_from_seq": rejects.from, "rejects_through_seq": rejects.through,
            }),
        );
    }
    progress.done();
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
        stored.extend(
            store
                .stored_totals(from, until)
                .map_err(store_error)?
                .into_iter()
                .filter(|((_, ad, _), _)| partition_of(ad.as_str(), partitions) == p),
        );
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
    };
    let mut agree = comparison.agree();

    // 5. Repair.
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
                    max_payload: settings.feed.max_payload,
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
        comparison,
        context,
        agree,
    })
}

/// Counts one message, naming the live path's refusal of a click it counts.
fn count_one(
    recount: &mut FilteredRecount,
    refused: &HashMap<(AdId, u128), Refusal>,
    explained: &mut HashMap<(i64, AdId), Explained>,
    invalid_by_reason: &mut BTreeMap<String, u64>,
    seq: u64,
    subject: &str,
    payload: &[u8],
) {
    let subject_ad = subject.rsplit('.').next();
    match recount.add(seq, subject_ad, payload) {
        Ok(Some(click)) => {
            if let Some(why) = refused.get(&(click.ad, click.id)) {
                let e = explained.entry((click.minute, click.ad)).or_default();
                match why {
                    Refusal::TooLate => e.too_late += 1,
                    Refusal::Future => e.future += 1,
                }
            }
        }
        Ok(None) => {}
        Err(reason) => {
            *invalid_by_reason
                .entry(super::reason_kind(&reason).to_string())
                .or_insert(0) += 1;
        }
    }
}

/// Remembers a click the live path refused as too late or future.
fn note_refusal(
    refused: &mut HashMap<(AdId, u128), Refusal>,
    subject: &str,
    seq: u64,
    payload: &[u8],
) {
    let why = match subject {
        s if s.ends_with("too_late") => Refusal::TooLate,
        s if s.ends_with("future") => Refusal::Future,
        _ => return,
    };
    if let Ok(click) = adclick_actors::recount::decode_message(None, seq, payload) {
        refused.insert((click.ad, click.id), why);
    }
}

/// What a stream read covered.
struct StreamRead {
    messages: u64,
    from: u64,
    through: u64,
}

/// Reads `stream` from sequence `from` through its last sequence at the
/// start of the read, with an ordered consumer (nothing acknowledged,
/// nothing left behind on the server).
async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    mut each: impl FnMut(u64, &str, &[u8]),
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
        each(seq, message.subject.as_str(), &message.payload);
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
            .map(adclick_actors::time::minute_floor)
            .ok_or_else(|| {
                ReconcileError::Usage(format!(
                    "--{name} {text:?} is neither RFC 3339 (2026-11-29T10:00:00Z) nor epoch milliseconds"
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
        assert_eq!(parse_range("60000", "180001").unwrap(), (60_000, 180_000));
    }
}
