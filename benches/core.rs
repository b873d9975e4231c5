//! The partition core, stage by stage and whole, without NATS:
//! decode → dedup → window → reduce, on a reproducible Zipf workload
//! (100,000 ads, 1% repeats, 2% late clicks), in batches of 1,000.
//!
//! `cargo bench --bench core` prints clicks/s per stage (criterion's
//! "thrpt"). `ADCLICK_BENCH_FILE=clicks.jsonl cargo bench --bench core` runs
//! the whole-core bench on a JSON-lines file instead (one SPEC §1 payload per
//! line, as `adclick loadgen --out` writes), so other engines can be run on the
//! very same input.
//!
//! Profiling: `ADCLICK_BENCH_PROFILE=<stage>` (decode, dedup, window, reduce,
//! whole (dedup, window and counts), whole_with_feed (the reducer's output
//! feed and running window sums too), or checkpoints: whole_with_feed with
//! its snapshots and commits, a commit every 16 batches) skips criterion and runs that one stage once over the
//! workload, inside `profiled_stage`, so a profiler can count only it:
//!
//! ```text
//! ADCLICK_BENCH_PROFILE=whole ADCLICK_BENCH_CLICKS=100000 valgrind --tool=callgrind \
//!     --collect-atstart=no --toggle-collect='core::profiled_stage' target/release/deps/core-<hash> --bench
//! ```
//!
//! Callgrind's instruction count divided by the clicks is noise-free on a
//! busy machine, unlike the timings (`ADCLICK_BENCH_CLICKS` sets the
//! workload's size, 500,000 by default). `ADCLICK_BENCH_COMMIT_BATCHES=N`
//! makes commits wait for N batches instead of 8 (see `bench`);
//! `ADCLICK_BENCH_IDS_ONLY=1` commits only the ids (see `with_checkpoints`).

use adclick::loadgen::{ClickGenerator, LoadgenArgs};
use adclick_actors::click::{AdId, Click, Country, FilterKinds, IpType};
use adclick_actors::settings::{FeedSettings, PipelineSettings};
use adclick_actors::store::checkpoint::{Checkpoint, ID_BYTES};
use adclick_actors::store::PartitionStore;
use adclick_actors::testing::decode::decode;
use adclick_actors::testing::AdSlots;
use adclick_actors::testing::Batch;
use adclick_actors::testing::Deduplicator;
use adclick_actors::testing::MinuteAssigner;
use adclick_actors::testing::MinuteCounts;
use adclick_actors::testing::PartitionCore;
use adclick_actors::time::event_clock::final_until;
use adclick_actors::time::event_clock::{EventClock, NO_WATERMARK};
use adclick_actors::time::minute_floor;
use bytes::Bytes;
use clap::Parser;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BATCH: usize = 1_000;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

/// (ad token, payload) pairs: from the file if given, else generated.
fn workload() -> Vec<(String, Bytes)> {
    if let Ok(path) = std::env::var("ADCLICK_BENCH_FILE") {
        let text = std::fs::read_to_string(&path).expect("ADCLICK_BENCH_FILE readable");
        return text
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                let ad = v["ad_id"].as_str().unwrap_or("").to_string();
                (ad, Bytes::copy_from_slice(line.as_bytes()))
            })
            .collect();
    }
    // A full run when benchmarking; a small one when `cargo test` runs benches once.
    let n = if let Some(n) = std::env::var("ADCLICK_BENCH_CLICKS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        n
    } else if std::env::args().any(|a| a == "--bench") {
        500_000
    } else {
        5_000
    };
    let args = Cli::parse_from([
        "bench",
        "--ads",
        "100000",
        "--skew",
        "1.0",
        "--duplicate-ratio",
        "0.01",
        "--late-ratio",
        "0.02",
        "--late-by",
        "2m",
        "--invalid-ratio",
        "0",
        "--start-ts",
        "1795946400000",
        "--rate",
        "20000",
        "--seed",
        "9",
    ])
    .args;
    let mut generator = ClickGenerator::new(&args);
    (0..n)
        .map(|_| {
            let m = generator.next_message(0);
            (
                m.subject.trim_start_matches("clicks.").to_string(),
                m.payload,
            )
        })
        .collect()
}

/// A decoded batch's clicks and their payloads.
type Decoded = (Vec<Click>, Vec<Bytes>);

fn decoded(work: &[(String, Bytes)]) -> Vec<Decoded> {
    work.chunks(BATCH)
        .enumerate()
        .map(|(b, chunk)| {
            let batch = decoded_batch(b, chunk);
            (batch.clicks, batch.payloads)
        })
        .collect()
}

fn batches(clicks: &[Decoded]) -> Vec<Batch> {
    clicks
        .iter()
        .map(|(clicks, payloads)| Batch {
            clicks: clicks.clone(),
            payloads: payloads.clone(),
            ..Batch::default()
        })
        .collect()
}

/// One stage, run once over its prepared input: the function a profiler
/// restricts its counts to (never inlined, so it has a symbol of its own).
#[inline(never)]
fn profiled_stage(stage: &str, prepared: &mut Prepared, settings: &PipelineSettings) -> usize {
    match stage {
        "decode" => decoded(&prepared.work).len(),
        "dedup" => {
            let mut filter = Deduplicator::new(clock(settings), Vec::new());
            for batch in &mut prepared.batches {
                filter.apply(batch);
            }
            filter.remembered()
        }
        "window" => {
            let mut assigner =
                MinuteAssigner::new(0, clock(settings), settings.dimension_sets.clone());
            for batch in &mut prepared.batches {
                assigner.apply(batch);
            }
            prepared.batches.len()
        }
        "reduce" => {
            let mut counts = MinuteCounts::new(i64::MIN);
            for batch in &mut prepared.batches {
                counts.apply_all(&mut batch.delta.increments);
            }
            counts.ads_numbered()
        }
        "digests" => {
            let (_, store, generation) = prepared.store.as_ref().expect("a store");
            let split = DigestSplit::default();
            let work = &prepared.work;
            with_digest_checkpoints(work, settings, store, *generation, &split);
            split.report();
            split.clicks.load(Relaxed) as usize
        }
        "checkpoints" => {
            let (_, store, generation) = prepared.store.as_ref().expect("a store");
            let split = CpuSplit::default();
            let work = &prepared.work;
            with_checkpoints(
                work,
                settings,
                store,
                *generation,
                Commits::ByBatches,
                &split,
            );
            split.report();
            split.clicks.load(Relaxed) as usize
        }
        _ => {
            let mut core = PartitionCore::new(0, settings);
            for (i, chunk) in prepared.work.chunks(BATCH).enumerate() {
                let mut batch = decoded_batch(i, chunk);
                core.process(&mut batch);
            }
            core.watermark() as usize
        }
    }
}

/// The workload and the batches a stage starts from.
struct Prepared {
    work: Vec<(String, Bytes)>,
    batches: Vec<Batch>,
    /// For `checkpoints`: an empty partition file (in its directory).
    store: Option<(tempfile::TempDir, PartitionStore, u64)>,
}

/// Runs `stage` once under `profiled_stage`, for a profiler.
fn profile(stage: &str, settings: &PipelineSettings) {
    let work = workload();
    let clicks = decoded(&work);
    let mut filter = Deduplicator::new(clock(settings), Vec::new());
    let mut assigner = MinuteAssigner::new(0, clock(settings), settings.dimension_sets.clone());
    let mut batches = Vec::new();
    for mut batch in self::batches(&clicks) {
        if stage == "dedup" {
            batches.push(batch);
            continue;
        }
        filter.apply(&mut batch);
        if stage == "reduce" {
            assigner.apply(&mut batch);
        }
        batches.push(batch);
    }
    let n = work.len();
    let store = (stage == "checkpoints" || stage == "digests").then(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, generation) = open_store(dir.path(), settings);
        (dir, store, generation)
    });
    let mut prepared = Prepared {
        work,
        batches,
        store,
    };
    let out = profiled_stage(stage, &mut prepared, settings);
    println!("profiled {stage} over {n} clicks ({out})");
}

fn clock(settings: &PipelineSettings) -> EventClock {
    EventClock::new(
        settings.watermark_delay_ms,
        settings.allowed_lateness_ms,
        NO_WATERMARK,
    )
}

fn bench(c: &mut Criterion) {
    // What every adclick command does first (see adclick::allocator).
    adclick::allocator::keep_batch_memory();
    let mut settings = PipelineSettings::with_defaults(1);
    // ADCLICK_BENCH_COMMIT_BATCHES=N: commits wait for N batches of 1,000
    // clicks (the default's `max_batches_in_flight` / 2 = 16), or the 100 ms
    // interval: how a checkpoint's cost depends on the clicks a commit covers.
    if let Some(n) = std::env::var("ADCLICK_BENCH_COMMIT_BATCHES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        settings.max_batches_in_flight = 2 * n.max(1);
    }
    // Snapshots are checkpoint work: measured in whole_with_checkpoints only.
    let no_snapshots = PipelineSettings {
        snapshot_log_floor: usize::MAX,
        ..settings.clone()
    };
    // `whole` is dedup, window and counts: the reducer without its output
    // feed and running window sums, which `whole_with_feed` adds.
    let counts_only = PipelineSettings {
        feed: FeedSettings {
            enabled: false,
            top_windows: Vec::new(),
            ..settings.feed.clone()
        },
        ..no_snapshots.clone()
    };
    // The digest prototype's: minutes snapshot when they turn final only.
    let only_final_snapshots = no_snapshots.clone();
    if let Ok(stage) = std::env::var("ADCLICK_BENCH_PROFILE") {
        // As the benches below run: snapshots with checkpoints only.
        match stage.as_str() {
            "checkpoints" => profile(&stage, &settings),
            // The digest design needs no full snapshots (see below).
            "digests" => profile(&stage, &only_final_snapshots),
            "whole_with_feed" => profile(&stage, &no_snapshots),
            _ => profile(&stage, &counts_only),
        }
        return;
    }
    let work = workload();
    let clicks = decoded(&work);
    let n = work.len() as u64;
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);

    group.bench_function("decode", |b| b.iter(|| decoded(&work)));

    let clock = || clock(&settings);
    group.bench_function("dedup", |b| {
        b.iter_batched(
            || (batches(&clicks), Deduplicator::new(clock(), Vec::new())),
            |(mut batches, mut filter)| {
                for batch in &mut batches {
                    filter.apply(batch);
                }
                batches
            },
            BatchSize::LargeInput,
        )
    });

    let deduped: Vec<Decoded> = {
        let mut filter = Deduplicator::new(clock(), Vec::new());
        batches(&clicks)
            .into_iter()
            .map(|mut batch| {
                filter.apply(&mut batch);
                (batch.clicks, batch.payloads)
            })
            .collect()
    };
    group.bench_function("window", |b| {
        b.iter_batched(
            || {
                (
                    batches(&deduped),
                    MinuteAssigner::new(0, clock(), settings.dimension_sets.clone()),
                )
            },
            |(mut batches, mut assigner)| {
                for batch in &mut batches {
                    assigner.apply(batch);
                }
                batches
            },
            BatchSize::LargeInput,
        )
    });

    let mut assigner = MinuteAssigner::new(0, clock(), settings.dimension_sets.clone());
    let mut windowed: Vec<Batch> = batches(&deduped)
        .into_iter()
        .map(|mut batch| {
            assigner.apply(&mut batch);
            batch
        })
        .collect();
    group.bench_function("reduce", |b| {
        b.iter(|| {
            let mut counts = MinuteCounts::new(i64::MIN);
            for batch in &mut windowed {
                counts.apply_all(&mut batch.delta.increments);
            }
            counts
        })
    });

    let split = CpuSplit::default();
    group.bench_function("whole", |b| {
        b.iter(|| {
            let started = thread_cpu_ns();
            let mut core = PartitionCore::new(0, &counts_only);
            for (i, chunk) in work.chunks(BATCH).enumerate() {
                let mut batch = decoded_batch(i, chunk);
                core.process(&mut batch);
            }
            split.core.fetch_add(thread_cpu_ns() - started, Relaxed);
            split.core_clicks.fetch_add(work.len() as u64, Relaxed);
            core.watermark()
        })
    });
    group.bench_function("whole_with_feed", |b| {
        b.iter(|| {
            let started = thread_cpu_ns();
            let mut core = PartitionCore::new(0, &no_snapshots);
            for (i, chunk) in work.chunks(BATCH).enumerate() {
                let mut batch = decoded_batch(i, chunk);
                core.process(&mut batch);
            }
            split.fed.fetch_add(thread_cpu_ns() - started, Relaxed);
            split.fed_clicks.fetch_add(work.len() as u64, Relaxed);
            core.watermark()
        })
    });
    // The whole core plus its checkpoints, committed on the same thread (the
    // service commits on a blocking thread, beside the pipeline: this is the
    // upper bound of what checkpointing costs), at the default
    // `checkpoint_interval` (100 ms) or when `max_batches_in_flight` / 2
    // batches wait, whichever comes first, as the writer does.
    let dir = tempfile::tempdir().expect("temp dir");
    group.bench_function("whole_with_checkpoints", |b| {
        b.iter_batched(
            || open_store(dir.path(), &settings),
            |(store, generation)| {
                with_checkpoints(
                    &work,
                    &settings,
                    &store,
                    generation,
                    Commits::AsTheWriter,
                    &split,
                )
            },
            BatchSize::PerIteration,
        )
    });
    if std::env::var_os("ADCLICK_BENCH_DIGESTS").is_some() {
        let digests = DigestSplit::default();
        group.bench_function("whole_with_digest_checkpoints_prototype", |b| {
            b.iter_batched(
                || open_store(dir.path(), &settings),
                |(store, generation)| {
                    with_digest_checkpoints(
                        &work,
                        &only_final_snapshots,
                        &store,
                        generation,
                        &digests,
                    )
                },
                BatchSize::PerIteration,
            )
        });
        digests.report();
    }
    group.finish();
    split.report();
}

/// A fresh partition file in `dir`, recovered (empty): the store and its generation.
fn open_store(dir: &std::path::Path, settings: &PipelineSettings) -> (PartitionStore, u64) {
    let store = PartitionStore::open(dir, rand_partition()).expect("store");
    let generation = store
        .recover(settings.memory_minutes)
        .expect("recover")
        .generation;
    (store, generation)
}

/// When [`with_checkpoints`] commits.
#[derive(Clone, Copy)]
enum Commits {
    /// As the writer does: at the checkpoint interval or when
    /// `max_batches_in_flight` / 2 batches wait, whichever comes first.
    AsTheWriter,
    /// Every `max_batches_in_flight` / 2 batches only: what the writer does
    /// at full speed, and the same commits however slow the run (under
    /// callgrind, the interval would fire on almost every batch).
    ByBatches,
}

/// The whole core plus its checkpoints, committed on the same thread (the
/// service commits on a blocking thread, beside the pipeline: this is the
/// upper bound of what checkpointing costs), at the default
/// `checkpoint_interval` (100 ms) or when `max_batches_in_flight` / 2
/// batches wait, as `commits` says. Adds its CPU time and bytes to `split`.
fn with_checkpoints(
    work: &[(String, Bytes)],
    settings: &PipelineSettings,
    store: &PartitionStore,
    generation: u64,
    commits: Commits,
    split: &CpuSplit,
) -> i64 {
    let started = thread_cpu_ns();
    let mut core = PartitionCore::new(0, settings);
    // As the writer logs: only the finest counters where the filters allow.
    let mut pending =
        Checkpoint::default().logging_finest_only(FilterKinds::of(&settings.dimension_sets));
    let interval = std::time::Duration::from_millis(settings.checkpoint_interval_ms as u64);
    let mut last_commit = std::time::Instant::now();
    // ADCLICK_BENCH_IDS_ONLY=1: commit the ids and the sequence alone (no
    // count log, no snapshots), the floor of any checkpoint that keeps
    // SPEC §2's one transaction. Recovery could not rebuild counts from it.
    let ids_only = std::env::var_os("ADCLICK_BENCH_IDS_ONLY").is_some();
    let commit = |pending: &mut Checkpoint| {
        let mut cp = pending.take();
        if ids_only {
            cp.log = Default::default();
            cp.snapshots.clear();
            cp.full_snapshot = false;
        }
        split
            .log_bytes
            .fetch_add(cp.log.as_bytes().len() as u64, Relaxed);
        split
            .id_bytes
            .fetch_add((ID_BYTES * cp.new_ids.len()) as u64, Relaxed);
        let snapshots = cp.snapshots.iter().map(|s| s.packed.as_bytes().len());
        split
            .snapshot_bytes
            .fetch_add(snapshots.sum::<usize>() as u64, Relaxed);
        let final_until = final_until(cp.watermark, settings.allowed_lateness_ms);
        let t = thread_cpu_ns();
        store.commit(generation, &cp, final_until).expect("commit");
        split.commit.fetch_add(thread_cpu_ns() - t, Relaxed);
    };
    for (i, chunk) in work.chunks(BATCH).enumerate() {
        let mut batch = decoded_batch(i, chunk);
        core.process(&mut batch);
        batch.control.holds_credit = true;
        let t = thread_cpu_ns();
        pending.absorb(&mut batch);
        split.absorb.fetch_add(thread_cpu_ns() - t, Relaxed);
        let interval_passed = match commits {
            Commits::AsTheWriter => last_commit.elapsed() >= interval,
            Commits::ByBatches => false,
        };
        if interval_passed || pending.credits * 2 >= settings.max_batches_in_flight {
            last_commit = std::time::Instant::now();
            commit(&mut pending);
        }
    }
    // The writer commits what is left at its next interval: counted too.
    if pending.batches > 0 {
        commit(&mut pending);
    }
    split.all.fetch_add(thread_cpu_ns() - started, Relaxed);
    split.clicks.fetch_add(work.len() as u64, Relaxed);
    core.watermark()
}

/// A prototype of another checkpoint design, measured, not built: no count
/// log. Each new click id would be stored with a digest of the counters its
/// click touched (ad slot, country, ip type, minute), and recovery would
/// rebuild the counts from the minutes' snapshots plus the digests of ids
/// committed after them. Ids live until their minute is final, so the log
/// never needs a full snapshot: minutes are snapshot once, when they turn
/// final (`settings` should say so).
///
/// What it costs per click, as the current design's [`with_checkpoints`]
/// measures it: building the digests (with an `AdSlots` of its own, where
/// the reducer's lookup could be reused: an upper bound), absorbing the
/// batch without its deltas, and the commit, its digests stored as extra
/// ids in the minute's block (the same bytes and the same redb
/// operations as ids carrying their digests). Recovery is not built.
fn with_digest_checkpoints(
    work: &[(String, Bytes)],
    settings: &PipelineSettings,
    store: &PartitionStore,
    generation: u64,
    split: &DigestSplit,
) -> i64 {
    let mut core = PartitionCore::new(0, settings);
    let mut pending = Checkpoint::default();
    let mut slots = AdSlots::default();
    // A commit's digests, packed, and their bytes per id minute.
    let mut digests: Vec<u8> = Vec::new();
    let mut digest_minutes: Vec<(i64, usize)> = Vec::new();
    let mut fake_id = u128::MAX;
    for (i, chunk) in work.chunks(BATCH).enumerate() {
        let mut batch = decoded_batch(i, chunk);
        // The clicks as the window sees them (bench bookkeeping, untimed:
        // in the design the window would write the digests as it counts).
        let clicks: Vec<(u128, AdId, i64, Country, IpType)> = batch
            .clicks
            .iter()
            .map(|c| (c.id, c.ad, c.ts, c.country, c.ip_type))
            .collect();
        let t = thread_cpu_ns();
        core.process(&mut batch);
        split.core.fetch_add(thread_cpu_ns() - t, Relaxed);
        let t = thread_cpu_ns();
        // Dedup lists the batch's new ids in click order.
        let mut new = batch.delta.new_ids.iter().peekable();
        for (id, ad, ts, country, ip_type) in &clicks {
            let Some((keep_until, _)) = new.next_if(|(_, new_id)| new_id == id) else {
                continue;
            };
            let before = digests.len();
            push_digest(
                &mut digests,
                slots.slot(ad),
                *keep_until,
                *ts,
                *country,
                *ip_type,
            );
            let added = digests.len() - before;
            match digest_minutes
                .iter_mut()
                .rev()
                .find(|(m, _)| m == keep_until)
            {
                Some((_, n)) => *n += added,
                None => digest_minutes.push((*keep_until, added)),
            }
        }
        split.digest.fetch_add(thread_cpu_ns() - t, Relaxed);
        batch.delta.increments.clear();
        batch.control.holds_credit = true;
        let t = thread_cpu_ns();
        pending.absorb(&mut batch);
        split.absorb.fetch_add(thread_cpu_ns() - t, Relaxed);
        if pending.credits * 2 >= settings.max_batches_in_flight {
            let mut cp = pending.take();
            split
                .id_bytes
                .fetch_add((ID_BYTES * cp.new_ids.len()) as u64, Relaxed);
            split.digest_bytes.fetch_add(digests.len() as u64, Relaxed);
            let snapshots = cp.snapshots.iter().map(|s| s.packed.as_bytes().len());
            split
                .snapshot_bytes
                .fetch_add(snapshots.sum::<usize>() as u64, Relaxed);
            // The digests' bytes, as extra ids of their minutes' blocks.
            for (minute, bytes) in digest_minutes.drain(..) {
                for _ in 0..bytes.div_ceil(ID_BYTES) {
                    cp.new_ids.push(minute, fake_id);
                    fake_id -= 1;
                }
            }
            digests.clear();
            let final_until = final_until(cp.watermark, settings.allowed_lateness_ms);
            let t = thread_cpu_ns();
            store.commit(generation, &cp, final_until).expect("commit");
            split.commit.fetch_add(thread_cpu_ns() - t, Relaxed);
        }
    }
    split.clicks.fetch_add(work.len() as u64, Relaxed);
    split.ads.store(slots.len() as u64, Relaxed);
    // What the final snapshots would write, once each minute turns final
    // (none does within the workload): every counter of every minute.
    let minutes = core.counts().minutes_within(i64::MIN, i64::MAX);
    let counters: usize = minutes.iter().map(|m| core.counts().counters_in(*m)).sum();
    split.counters.store(counters as u64, Relaxed);
    split.run_clicks.store(work.len() as u64, Relaxed);
    core.watermark()
}

/// A click's digest: its ad slot (LEB128), then 16 bits: the country's
/// index (10), the ip type (2) and the click's minute before its id's
/// minute (4; 15 and a byte more when further back).
fn push_digest(
    out: &mut Vec<u8>,
    slot: u32,
    keep_until: i64,
    ts: i64,
    country: Country,
    ip_type: IpType,
) {
    let mut n = slot;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    let back = ((keep_until - minute_floor(ts)) / 60_000).clamp(0, 255) as u16;
    let ip = match ip_type {
        IpType::V4 => 0,
        IpType::V6 => 1,
        IpType::Unknown => 2,
    };
    let packed = country.index() as u16 | ip << 10 | back.min(15) << 12;
    out.extend_from_slice(&packed.to_le_bytes());
    if back >= 15 {
        out.push(back as u8);
    }
}

/// What [`with_digest_checkpoints`] spends, per click.
#[derive(Default)]
struct DigestSplit {
    core: AtomicU64,
    digest: AtomicU64,
    absorb: AtomicU64,
    commit: AtomicU64,
    id_bytes: AtomicU64,
    digest_bytes: AtomicU64,
    snapshot_bytes: AtomicU64,
    clicks: AtomicU64,
    ads: AtomicU64,
    /// Counters in memory at the end of the last run, and its clicks.
    counters: AtomicU64,
    run_clicks: AtomicU64,
}

impl DigestSplit {
    fn report(&self) {
        let clicks = self.clicks.load(Relaxed).max(1) as f64;
        let per_click = |n: &AtomicU64| n.load(Relaxed) as f64 / clicks;
        eprintln!(
            "digest prototype CPU per click: {:.0} ns core, {:.0} ns building digests, \
             {:.0} ns absorbing, {:.0} ns committing; bytes per click: {:.1} ids, \
             {:.1} digests, {:.1} snapshots ({} ad slots)",
            per_click(&self.core),
            per_click(&self.digest),
            per_click(&self.absorb),
            per_click(&self.commit),
            per_click(&self.id_bytes),
            per_click(&self.digest_bytes),
            per_click(&self.snapshot_bytes),
            self.ads.load(Relaxed),
        );
        eprintln!(
            "digest prototype: {:.2} counters per click to snapshot once their minutes turn final",
            self.counters.load(Relaxed) as f64 / self.run_clicks.load(Relaxed).max(1) as f64,
        );
    }
}

/// Where whole_with_checkpoints spends its thread's CPU time (fsync waits
/// are not CPU time, and in the service they overlap the pipeline).
#[derive(Default)]
struct CpuSplit {
    /// `whole`: the core alone, and its clicks.
    core: AtomicU64,
    core_clicks: AtomicU64,
    /// `whole_with_feed`: what the service's chain runs besides checkpoints.
    fed: AtomicU64,
    fed_clicks: AtomicU64,
    all: AtomicU64,
    /// Bytes committed: count-log records, ids, minute snapshots.
    log_bytes: AtomicU64,
    id_bytes: AtomicU64,
    snapshot_bytes: AtomicU64,
    absorb: AtomicU64,
    commit: AtomicU64,
    clicks: AtomicU64,
}

impl CpuSplit {
    fn report(&self) {
        let clicks = self.clicks.load(Relaxed).max(1) as f64;
        let per_click = |n: &AtomicU64| n.load(Relaxed) as f64 / clicks;
        let core_clicks = self.core_clicks.load(Relaxed);
        if core_clicks == 0 {
            // A profile run: no `whole` to compare with.
            eprintln!(
                "whole_with_checkpoints CPU per click: {:.0} ns in all, {:.0} ns absorbing, \
                 {:.0} ns committing",
                per_click(&self.all),
                per_click(&self.absorb),
                per_click(&self.commit),
            );
        } else {
            let core = self.core.load(Relaxed) as f64 / core_clicks as f64;
            // `whole` runs neither the feed nor snapshots: the checkpoint's
            // share is the line after, over `whole_with_feed`.
            eprintln!(
                "whole_with_checkpoints CPU per click: {:.0} ns in all, {:.0} ns absorbing, \
                 {:.0} ns committing; whole (counts only): {core:.0} ns",
                per_click(&self.all),
                per_click(&self.absorb),
                per_click(&self.commit),
            );
            let fed_clicks = self.fed_clicks.load(Relaxed);
            if fed_clicks > 0 {
                // The checkpoint's own share: the same chain (feed and window
                // sums included) with and without it.
                let fed = self.fed.load(Relaxed) as f64 / fed_clicks as f64;
                eprintln!(
                    "whole_with_feed (the same chain, no checkpoints): {fed:.0} ns; \
                     checkpoints cost {:.0} ns over it, {:.1}%",
                    per_click(&self.all) - fed,
                    100.0 * (per_click(&self.all) - fed) / fed,
                );
            }
        }
        eprintln!(
            "whole_with_checkpoints bytes per click: {:.1} count log, {:.1} ids, {:.1} snapshots",
            per_click(&self.log_bytes),
            per_click(&self.id_bytes),
            per_click(&self.snapshot_bytes),
        );
    }
}

/// CPU time of the calling thread, in ns, exact to the call (unlike
/// /proc's schedstat, which a running thread updates only at ticks).
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
    if !ok {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Batch `i` of the workload, decoded as ingest does (which sizes the
/// clicks for the whole chunk up front).
fn decoded_batch(i: usize, chunk: &[(String, Bytes)]) -> Batch {
    let mut batch = Batch {
        clicks: Vec::with_capacity(chunk.len()),
        payloads: Vec::with_capacity(chunk.len()),
        ..Batch::default()
    };
    for (j, (ad, payload)) in chunk.iter().enumerate() {
        if let Ok(click) = decode(ad, (i * BATCH + j) as u64, payload) {
            batch.clicks.push(click);
            // Ingest moves the message's payload in; the bench holds the
            // workload's, so it takes a reference (what dropping the
            // message would otherwise cost).
            batch.payloads.push(payload.clone());
        }
    }
    batch
}

/// A fresh partition number per iteration, so each starts with an empty file.
fn rand_partition() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

criterion_group!(benches, bench);
criterion_main!(benches);
