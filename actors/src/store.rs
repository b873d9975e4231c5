//! The redb file of one partition: the checkpoint and the minute history.
//!
//! Tables:
//! - `meta`: `last_seq` (last applied stream sequence), `watermark`.
//! - `seen_blocks`: `(minute, commit's last sequence)` → the 16-byte ids of
//!   that minute first seen by that commit, packed: one row per minute per
//!   commit instead of one per click. (`seen`, one row per id, is what older
//!   files hold; it is still read and pruned.)
//! - `count_log`: commit's last sequence → the counter totals that commit
//!   set, in order, packed (see [`crate::writer::packed_counts`]). Records
//!   older than the last full snapshot are deleted.
//! - `minute_snapshots`: minute → the sequence of the commit that wrote it,
//!   then every counter of the minute, packed by filter (see
//!   [`crate::writer::packed_minute`]): a snapshot (see
//!   [`crate::reducer::snapshots`]). The minute's history once it is final.
//! - `minute_counts`: snapshots as files of the previous version wrote them
//!   (packed like the count log). Still read for minutes `minute_snapshots`
//!   lacks, and pruned; no longer written.
//! - `counts`: `(minute, ad_id, filter key)` → clicks: how files of earlier
//!   versions stored counts, one row per counter. Still read (a minute's
//!   snapshot wins over its rows) and pruned, no longer written.
//! - `outbox`: stream sequence → a rejected message (subject, payload, reason)
//!   decided by a committed batch and not yet confirmed stored on the rejected
//!   stream.
//! - `dimension_values`: `(dimension, value)` for every extra-dimension value
//!   the partition admitted (see [`crate::dimension`]). Files written before
//!   extra dimensions get the table, empty, when opened.
//! - `feed_outbox`: feed version → an output-feed message (subject, payload)
//!   not yet confirmed stored on the `ADCLICK_AGG` stream; `meta.feed_version`
//!   is the last version handed out.
//! - `feed_counts_outbox`: first version → an `agg.counts` publication not
//!   yet confirmed stored, unrendered: (kind, minute, chunks, packed
//!   counters), one row for all its chunks (see
//!   [`crate::feed::CountsPublication`]).
//! - `tops`: `(last minute, window minutes)` → the partition's final top-N of
//!   that window (`ad:count,…`), so `popular` over a past window is one read.
//!
//! One [`PartitionStore::commit`] writes all of them in one transaction, so the
//! file always holds a state that some prefix of the stream produced.

pub mod checkpoint;

use crate::batch::CountDelta;
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::feed::{decode_top, encode_top, CountsPublication, FeedItem, FeedMessage, Publication};
use crate::time::event_clock::NO_WATERMARK;
use crate::writer::{packed_counts, packed_minute};
use checkpoint::Checkpoint;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const SEEN: TableDefinition<(i64, u128), ()> = TableDefinition::new("seen");
const SEEN_BLOCKS: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("seen_blocks");
const COUNTS: TableDefinition<(i64, &str, &str), u64> = TableDefinition::new("counts");
/// commit's last sequence → packed totals.
const COUNT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("count_log");
/// minute → writing commit's last sequence (8 bytes LE), packed counters
/// (previous version's snapshots: read and pruned only).
const MINUTE_COUNTS: TableDefinition<i64, &[u8]> = TableDefinition::new("minute_counts");
/// minute → writing commit's last sequence (8 bytes LE), counters packed by filter.
const MINUTE_SNAPSHOTS: TableDefinition<i64, &[u8]> = TableDefinition::new("minute_snapshots");
/// seq → (subject, payload, reason kind, reason text).
const OUTBOX: TableDefinition<u64, (&str, &[u8], &str, &str)> = TableDefinition::new("outbox");
/// (dimension, value) of admitted extra-dimension values.
const DIMENSION_VALUES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("dimension_values");
/// feed version → (subject, payload).
const FEED_OUTBOX: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("feed_outbox");
/// first feed version → (kind code, minute, chunks, packed counters).
const FEED_COUNTS_OUTBOX: TableDefinition<u64, (u8, i64, u32, &[u8])> =
    TableDefinition::new("feed_counts_outbox");
/// (last minute, window minutes) → `ad:count,…`; ordered by minute for pruning.
const TOPS: TableDefinition<(i64, i64), &str> = TableDefinition::new("tops");

/// A storage failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened: corrupt, truncated, locked or unreadable.
    #[error(
        "cannot open partition file {path}: {source}. If the file is damaged, move it aside; \
         the partition then restarts from the beginning of the retained stream"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("partition file {path}: {what}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// What redb said.
        message: String,
    },
    /// A commit from a pipeline that was replaced by a restart was refused.
    #[error("partition file {path}: commit from a replaced pipeline refused")]
    Fenced {
        /// The file.
        path: PathBuf,
    },
}

/// What a partition resumes from.
pub struct Recovered {
    /// Fencing token: commits must present it.
    pub generation: u64,
    /// Last applied stream sequence (0: none).
    pub last_seq: u64,
    /// Watermark at the last commit.
    pub watermark: i64,
    /// Ids that may still repeat.
    pub seen: Vec<(i64, u128)>,
    /// Totals of counters of minutes from `counts_from` on, oldest first: a
    /// counter may appear more than once, and its last total is the one that
    /// holds (see [`crate::reducer::minute_counts::MinuteCounts::set_totals`]).
    pub counts: Vec<CountDelta>,
    /// First minute whose counts were loaded.
    pub counts_from: i64,
    /// Minutes whose totals came from the count log (no snapshot covers them).
    pub logged_minutes: Vec<i64>,
    /// How many totals were replayed from the count log.
    pub logged_totals: usize,
    /// Rejects committed but not yet confirmed published.
    pub outbox: Vec<crate::reject::Rejected>,
    /// Extra-dimension values admitted so far, as (dimension, value).
    pub admitted: Vec<(String, String)>,
    /// Feed messages and counts publications committed but not yet
    /// confirmed published, in version order.
    pub feed_outbox: Vec<FeedItem>,
    /// The last feed version handed out.
    pub feed_version: u64,
}

/// Sizes of one commit, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitStats {
    /// Counter totals written: logged, and in snapshots.
    pub count_rows: usize,
    /// Ids written.
    pub ids: usize,
}

/// Most count rows one commit prunes.
pub const PRUNE_ROWS_PER_COMMIT: usize = 2_000;

/// One partition's redb file.
pub struct PartitionStore {
    db: Database,
    path: PathBuf,
    /// The current generation; bumped by every recovery, checked by every commit,
    /// so a commit still in flight from a replaced pipeline can never land.
    generation: Mutex<u64>,
}

impl PartitionStore {
    /// Opens (or creates) the file of `partition` in `dir`.
    pub fn open(dir: &Path, partition: u32) -> Result<PartitionStore, StoreError> {
        let path = dir.join(format!("partition-{partition}.redb"));
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = PartitionStore {
            db,
            path,
            generation: Mutex::new(0),
        };
        // Create the tables once so readers never meet a missing table.
        let txn = store.db.begin_write().map_err(|e| store.io("begin", e))?;
        {
            txn.open_table(META).map_err(|e| store.io("open meta", e))?;
            txn.open_table(SEEN).map_err(|e| store.io("open seen", e))?;
            txn.open_table(SEEN_BLOCKS)
                .map_err(|e| store.io("open seen", e))?;
            txn.open_table(COUNTS)
                .map_err(|e| store.io("open counts", e))?;
            txn.open_table(COUNT_LOG)
                .map_err(|e| store.io("open count log", e))?;
            txn.open_table(MINUTE_COUNTS)
                .map_err(|e| store.io("open minute counts", e))?;
            txn.open_table(MINUTE_SNAPSHOTS)
                .map_err(|e| store.io("open minute snapshots", e))?;
            txn.open_table(OUTBOX)
                .map_err(|e| store.io("open outbox", e))?;
            txn.open_table(DIMENSION_VALUES)
                .map_err(|e| store.io("open dimension_values", e))?;
            txn.open_table(FEED_OUTBOX)
                .map_err(|e| store.io("open feed outbox", e))?;
            txn.open_table(FEED_COUNTS_OUTBOX)
                .map_err(|e| store.io("open feed counts outbox", e))?;
            txn.open_table(TOPS).map_err(|e| store.io("open tops", e))?;
        }
        txn.commit().map_err(|e| store.io("commit", e))?;
        Ok(store)
    }

    fn io(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            what,
            message: e.to_string(),
        }
    }

    fn lock_generation(&self) -> std::sync::MutexGuard<'_, u64> {
        // A panic while holding the lock leaves a plain integer behind: still valid.
        self.generation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads the checkpoint and starts a new generation. Counts are loaded for
    /// minutes from `memory_minutes` before the last closed minute on.
    pub fn recover(&self, memory_minutes: i64) -> Result<Recovered, StoreError> {
        self.recover_keeping(memory_minutes, 0)
    }

    /// Like [`PartitionStore::recover`], and never leaves out a minute that
    /// is not final under `allowed_lateness_ms` (when the lateness is longer
    /// than memory, such minutes are still open to corrections and their
    /// latest totals may be only in the count log).
    pub fn recover_keeping(
        &self,
        memory_minutes: i64,
        allowed_lateness_ms: i64,
    ) -> Result<Recovered, StoreError> {
        let mut generation = self.lock_generation();
        *generation += 1;
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let meta = txn.open_table(META).map_err(|e| self.io("open meta", e))?;
        let get = |key: &str| -> Result<Option<i64>, StoreError> {
            Ok(meta
                .get(key)
                .map_err(|e| self.io("read meta", e))?
                .map(|v| v.value()))
        };
        let last_seq = get("last_seq")?.unwrap_or(0).max(0) as u64;
        let watermark = get("watermark")?.unwrap_or(NO_WATERMARK);
        let mut seen = Vec::new();
        for row in txn
            .open_table(SEEN)
            .map_err(|e| self.io("open seen", e))?
            .iter()
            .map_err(|e| self.io("read seen", e))?
        {
            let (key, _) = row.map_err(|e| self.io("read seen", e))?;
            seen.push(key.value());
        }
        for row in txn
            .open_table(SEEN_BLOCKS)
            .map_err(|e| self.io("open seen", e))?
            .iter()
            .map_err(|e| self.io("read seen", e))?
        {
            let (key, ids) = row.map_err(|e| self.io("read seen", e))?;
            let (minute, _) = key.value();
            seen.extend(ids.value().chunks_exact(16).map(|id| {
                (
                    minute,
                    u128::from_le_bytes(id.try_into().unwrap_or([0; 16])),
                )
            }));
        }
        let counts_from = crate::time::event_clock::closed_until(watermark)
            .saturating_sub(memory_minutes.saturating_mul(crate::time::MINUTE_MS))
            .min(crate::time::event_clock::final_until(
                watermark,
                allowed_lateness_ms,
            ));
        // Snapshots first, then rows of minutes without one (older files),
        // then the log's newer totals, in commit order, the last one winning.
        let mut counts = Vec::new();
        let mut snapshot_seq: FastMap<i64, u64> = FastMap::default();
        self.for_each_snapshot(&txn, counts_from..i64::MAX, |minute, seq, deltas| {
            snapshot_seq.insert(minute, seq);
            counts.extend(deltas);
        })?;
        let table = txn
            .open_table(COUNTS)
            .map_err(|e| self.io("open counts", e))?;
        for row in table
            .range((counts_from, "", "")..)
            .map_err(|e| self.io("read counts", e))?
        {
            let (key, value) = row.map_err(|e| self.io("read counts", e))?;
            let (minute, ad, filter) = key.value();
            if snapshot_seq.contains_key(&minute) {
                continue;
            }
            match (AdId::parse(ad), Filter::from_key(filter)) {
                (Some(ad), Some(filter)) => counts.push(CountDelta {
                    minute,
                    ad,
                    filter,
                    count: value.value(),
                    total: value.value(),
                }),
                _ => {
                    return Err(self.io(
                        "read counts",
                        format!("unreadable row ({minute}, {ad:?}, {filter:?})"),
                    ))
                }
            }
        }
        // Appended after the snapshots and rows, in commit order: whoever
        // builds the counts sets totals in this order, the last one winning.
        let mut logged_minutes = std::collections::BTreeSet::new();
        let mut logged_totals = 0;
        for row in txn
            .open_table(COUNT_LOG)
            .map_err(|e| self.io("open count log", e))?
            .iter()
            .map_err(|e| self.io("read count log", e))?
        {
            let (seq, record) = row.map_err(|e| self.io("read count log", e))?;
            let seq = seq.value();
            let deltas = packed_counts::read(record.value())
                .ok_or_else(|| self.io("read count log", format!("unreadable record {seq}")))?;
            for delta in deltas {
                // A snapshot from a later commit already holds a newer total.
                let superseded = snapshot_seq.get(&delta.minute).is_some_and(|s| *s > seq);
                if delta.minute < counts_from || superseded {
                    continue;
                }
                logged_totals += 1;
                logged_minutes.insert(delta.minute);
                counts.push(delta);
            }
        }
        let mut outbox = Vec::new();
        for row in txn
            .open_table(OUTBOX)
            .map_err(|e| self.io("open outbox", e))?
            .iter()
            .map_err(|e| self.io("read outbox", e))?
        {
            let (seq, value) = row.map_err(|e| self.io("read outbox", e))?;
            let (subject, payload, kind, text) = value.value();
            outbox.push(crate::reject::Rejected {
                seq: seq.value(),
                subject: subject.to_string(),
                payload: bytes::Bytes::copy_from_slice(payload),
                reason: crate::reject::RejectReason::from_stored(kind, text),
            });
        }
        let mut admitted = Vec::new();
        for row in txn
            .open_table(DIMENSION_VALUES)
            .map_err(|e| self.io("open dimension_values", e))?
            .iter()
            .map_err(|e| self.io("read dimension_values", e))?
        {
            let (key, _) = row.map_err(|e| self.io("read dimension_values", e))?;
            let (dimension, value) = key.value();
            admitted.push((dimension.to_string(), value.to_string()));
        }
        let mut feed_outbox = Vec::new();
        for row in txn
            .open_table(FEED_OUTBOX)
            .map_err(|e| self.io("open feed outbox", e))?
            .iter()
            .map_err(|e| self.io("read feed outbox", e))?
        {
            let (version, value) = row.map_err(|e| self.io("read feed outbox", e))?;
            let (subject, payload) = value.value();
            feed_outbox.push(FeedItem::Message(FeedMessage {
                version: version.value(),
                subject: subject.to_string(),
                payload: bytes::Bytes::copy_from_slice(payload),
            }));
        }
        for row in txn
            .open_table(FEED_COUNTS_OUTBOX)
            .map_err(|e| self.io("open feed counts outbox", e))?
            .iter()
            .map_err(|e| self.io("read feed counts outbox", e))?
        {
            let (version, value) = row.map_err(|e| self.io("read feed counts outbox", e))?;
            let first_version = version.value();
            let (kind, minute, chunks, counters) = value.value();
            let publication = Publication::from_code(kind).ok_or_else(|| {
                self.io(
                    "read feed counts outbox",
                    format!("unknown kind {kind} of publication {first_version}"),
                )
            })?;
            feed_outbox.push(FeedItem::Counts(CountsPublication {
                minute,
                publication,
                first_version,
                chunks: chunks.max(1),
                counters: bytes::Bytes::copy_from_slice(counters),
            }));
        }
        // Published in version order, as they were decided.
        feed_outbox.sort_by_key(FeedItem::first_version);
        Ok(Recovered {
            feed_outbox,
            feed_version: get("feed_version")?.unwrap_or(0).max(0) as u64,
            outbox,
            admitted,
            generation: *generation,
            last_seq,
            watermark,
            seen,
            counts,
            counts_from,
            logged_minutes: logged_minutes.into_iter().collect(),
            logged_totals,
        })
    }

    /// Writes a checkpoint in one transaction: counts, new ids, forgets ids of
    /// minutes before `final_until`, and records sequence and watermark.
    /// Blocks: call it from a blocking thread.
    pub fn commit(
        &self,
        generation: u64,
        checkpoint: &Checkpoint,
        final_until: i64,
    ) -> Result<CommitStats, StoreError> {
        self.commit_and_prune(generation, checkpoint, final_until, NO_WATERMARK)
    }

    /// Like [`PartitionStore::commit`], and also deletes up to
    /// [`PRUNE_ROWS_PER_COMMIT`] count rows of minutes before `prune_before`,
    /// so pruning a long history never makes one commit long.
    pub fn commit_and_prune(
        &self,
        generation: u64,
        checkpoint: &Checkpoint,
        final_until: i64,
        prune_before: i64,
    ) -> Result<CommitStats, StoreError> {
        let current = self.lock_generation();
        if *current != generation {
            return Err(StoreError::Fenced {
                path: self.path.clone(),
            });
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.io("begin write", e))?;
        {
            // Totals, not increments: nothing to read first, and writing the
            // same checkpoint twice changes nothing.
            let mut log = txn
                .open_table(COUNT_LOG)
                .map_err(|e| self.io("open count log", e))?;
            if !checkpoint.log.is_empty() {
                log.insert(checkpoint.last_seq, checkpoint.log.as_bytes())
                    .map_err(|e| self.io("write count log", e))?;
            }
            if checkpoint.full_snapshot {
                log.retain_in(..checkpoint.last_seq, |_, _| false)
                    .map_err(|e| self.io("trim count log", e))?;
            }
            let mut snapshots = txn
                .open_table(MINUTE_SNAPSHOTS)
                .map_err(|e| self.io("open minute snapshots", e))?;
            for snapshot in &checkpoint.snapshots {
                // Written in place: a minute can be megabytes, copy it once.
                let packed = snapshot.packed.as_bytes();
                let mut value = snapshots
                    .insert_reserve(snapshot.minute, 8 + packed.len())
                    .map_err(|e| self.io("write minute snapshots", e))?;
                let (seq, counters) = value.as_mut().split_at_mut(8);
                seq.copy_from_slice(&checkpoint.last_seq.to_le_bytes());
                counters.copy_from_slice(packed);
            }
            if prune_before != NO_WATERMARK {
                // One row a minute: few to delete at a time.
                snapshots
                    .retain_in(..prune_before, |_, _| false)
                    .map_err(|e| self.io("prune minute snapshots", e))?;
                txn.open_table(MINUTE_COUNTS)
                    .map_err(|e| self.io("open minute counts", e))?
                    .retain_in(..prune_before, |_, _| false)
                    .map_err(|e| self.io("prune minute counts", e))?;
                // Rows of older files: a bounded number per commit.
                let mut counts = txn
                    .open_table(COUNTS)
                    .map_err(|e| self.io("open counts", e))?;
                let old: Vec<(i64, String, String)> = counts
                    .range(..(prune_before, "", ""))
                    .map_err(|e| self.io("read old counts", e))?
                    .take(PRUNE_ROWS_PER_COMMIT)
                    .map(|row| {
                        row.map(|(k, _)| {
                            let (m, a, f) = k.value();
                            (m, a.to_string(), f.to_string())
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.io("read old counts", e))?;
                for (m, a, f) in &old {
                    counts
                        .remove((*m, a.as_str(), f.as_str()))
                        .map_err(|e| self.io("prune counts", e))?;
                }
            }
            // The checkpoint packed each minute's ids as they came: one
            // row per minute, its block copied in place.
            let mut blocks = txn
                .open_table(SEEN_BLOCKS)
                .map_err(|e| self.io("open seen", e))?;
            for (minute, ids) in checkpoint.new_ids.blocks() {
                blocks
                    .insert_reserve((minute, checkpoint.last_seq), ids.len())
                    .map_err(|e| self.io("write seen", e))?
                    .as_mut()
                    .copy_from_slice(ids);
            }
            if final_until != NO_WATERMARK {
                blocks
                    .retain_in(..(final_until, 0u64), |_, _| false)
                    .map_err(|e| self.io("forget seen", e))?;
                let mut seen = txn.open_table(SEEN).map_err(|e| self.io("open seen", e))?;
                seen.retain_in(..(final_until, 0u128), |_, _| false)
                    .map_err(|e| self.io("forget seen", e))?;
            }
            let mut outbox = txn
                .open_table(OUTBOX)
                .map_err(|e| self.io("open outbox", e))?;
            for seq in &checkpoint.published {
                outbox
                    .remove(*seq)
                    .map_err(|e| self.io("clear outbox", e))?;
            }
            for r in &checkpoint.rejects {
                let why = r.reason.describe();
                let row = (
                    r.subject.as_str(),
                    r.payload.as_ref(),
                    r.reason.kind(),
                    why.as_str(),
                );
                outbox
                    .insert(r.seq, row)
                    .map_err(|e| self.io("write outbox", e))?;
            }
            if !checkpoint.admitted.is_empty() {
                let mut values = txn
                    .open_table(DIMENSION_VALUES)
                    .map_err(|e| self.io("open dimension_values", e))?;
                for (dimension, value) in &checkpoint.admitted {
                    values
                        .insert((dimension.as_str(), value.as_str()), ())
                        .map_err(|e| self.io("write dimension_values", e))?;
                }
            }
            let mut feed = txn
                .open_table(FEED_OUTBOX)
                .map_err(|e| self.io("open feed outbox", e))?;
            let mut feed_counts = txn
                .open_table(FEED_COUNTS_OUTBOX)
                .map_err(|e| self.io("open feed counts outbox", e))?;
            // A published item's key is its first version, in whichever
            // table holds it (versions are never reused).
            for version in &checkpoint.feed_published {
                feed.remove(*version)
                    .map_err(|e| self.io("clear feed outbox", e))?;
                feed_counts
                    .remove(*version)
                    .map_err(|e| self.io("clear feed counts outbox", e))?;
            }
            for item in &checkpoint.feed {
                match item {
                    FeedItem::Message(m) => {
                        feed.insert(m.version, (m.subject.as_str(), m.payload.as_ref()))
                            .map_err(|e| self.io("write feed outbox", e))?;
                    }
                    FeedItem::Counts(c) => {
                        let row = (
                            c.publication.code(),
                            c.minute,
                            c.chunks,
                            c.counters.as_ref(),
                        );
                        feed_counts
                            .insert(c.first_version, row)
                            .map_err(|e| self.io("write feed counts outbox", e))?;
                    }
                }
            }
            let mut tops = txn.open_table(TOPS).map_err(|e| self.io("open tops", e))?;
            for top in &checkpoint.tops {
                tops.insert((top.minute, top.window), encode_top(&top.ads).as_str())
                    .map_err(|e| self.io("write tops", e))?;
            }
            if prune_before != NO_WATERMARK {
                let old: Vec<(i64, i64)> = tops
                    .range(..(prune_before, i64::MIN))
                    .map_err(|e| self.io("read old tops", e))?
                    .take(PRUNE_ROWS_PER_COMMIT)
                    .map(|row| row.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.io("read old tops", e))?;
                for key in old {
                    tops.remove(key).map_err(|e| self.io("prune tops", e))?;
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| self.io("open meta", e))?;
            if let Some(last) = checkpoint.feed.last() {
                meta.insert("feed_version", last.last_version() as i64)
                    .map_err(|e| self.io("write meta", e))?;
            }
            meta.insert("last_seq", checkpoint.last_seq as i64)
                .map_err(|e| self.io("write meta", e))?;
            meta.insert("watermark", checkpoint.watermark)
                .map_err(|e| self.io("write meta", e))?;
        }
        txn.commit().map_err(|e| self.io("commit", e))?;
        Ok(CommitStats {
            count_rows: checkpoint.log.counters()
                + checkpoint
                    .snapshots
                    .iter()
                    .map(|s| s.packed.counters())
                    .sum::<usize>(),
            ids: checkpoint.new_ids.len(),
        })
    }

    /// How many count-log records the file holds.
    pub fn count_log_records(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let log = txn
            .open_table(COUNT_LOG)
            .map_err(|e| self.io("open count log", e))?;
        log.len().map_err(|e| self.io("read count log", e))
    }

    /// The stored final top-N of the `window` minutes ending with `minute`, if any.
    pub fn read_top(
        &self,
        window: i64,
        minute: i64,
    ) -> Result<Option<Vec<(AdId, u64)>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let tops = txn.open_table(TOPS).map_err(|e| self.io("open tops", e))?;
        let Some(value) = tops
            .get((minute, window))
            .map_err(|e| self.io("read top", e))?
        else {
            return Ok(None);
        };
        decode_top(value.value())
            .map(Some)
            .ok_or_else(|| self.io("read top", format!("unreadable top ({window}, {minute})")))
    }

    /// Committed clicks of `ad` under `filter` in `[from, to)`, as the
    /// minutes' snapshots (or older files' rows) hold them: final minutes are
    /// exact; open ones are in memory, where queries read them.
    pub fn read_count(
        &self,
        ad: &AdId,
        filter: &Filter,
        from: i64,
        to: i64,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        self.for_each_stored(filter, from, to, |a, n| {
            if a == ad {
                total += n;
            }
        })?;
        Ok(total)
    }

    /// Adds each ad's committed clicks under `filter` in `[from, to)` to
    /// `sums` (see [`PartitionStore::read_count`]).
    pub fn add_sums(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        sums: &mut HashMap<AdId, u64>,
    ) -> Result<(), StoreError> {
        self.for_each_stored(filter, from, to, |ad, n| {
            *sums.entry(*ad).or_insert(0) += n;
        })
    }

    /// Calls `each(ad, clicks)` for every stored counter under `filter` in
    /// `[from, to)`: from the minutes' snapshots, and for minutes without one,
    /// from rows.
    fn for_each_stored(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        mut each: impl FnMut(&AdId, u64),
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let mut snapshot_minutes = Vec::new();
        for row in txn
            .open_table(MINUTE_SNAPSHOTS)
            .map_err(|e| self.io("open minute snapshots", e))?
            .range(from..to)
            .map_err(|e| self.io("read minute snapshots", e))?
        {
            let (minute, value) = row.map_err(|e| self.io("read minute snapshots", e))?;
            let minute = minute.value();
            // Only the filter's section is decoded.
            value
                .value()
                .get(8..)
                .and_then(|packed| packed_minute::for_each_of_filter(packed, filter, &mut each))
                .ok_or_else(|| {
                    self.io(
                        "read minute snapshots",
                        format!("unreadable minute {minute}"),
                    )
                })?;
            snapshot_minutes.push(minute);
        }
        let mut previous = Vec::new();
        self.for_each_previous_snapshot(&txn, from..to, &snapshot_minutes, |minute, _, deltas| {
            previous.push(minute);
            for d in deltas.iter().filter(|d| d.filter == *filter) {
                each(&d.ad, d.total);
            }
        })?;
        snapshot_minutes.extend(previous);
        snapshot_minutes.sort_unstable();
        let table = txn
            .open_table(COUNTS)
            .map_err(|e| self.io("open counts", e))?;
        let filter_key = filter.key();
        for row in table
            .range((from, "", "")..(to, "", ""))
            .map_err(|e| self.io("read counts", e))?
        {
            let (key, value) = row.map_err(|e| self.io("read counts", e))?;
            let (minute, ad, row_filter) = key.value();
            if row_filter != filter_key || snapshot_minutes.binary_search(&minute).is_ok() {
                continue;
            }
            if let Some(ad) = AdId::parse(ad) {
                each(&ad, value.value());
            }
        }
        Ok(())
    }
}

impl PartitionStore {
    /// Calls `each(minute, writing commit's sequence, counters)` for every
    /// minute snapshot in `minutes`: `minute_snapshots`, then the previous
    /// version's `minute_counts` for minutes the first lacks.
    fn for_each_snapshot(
        &self,
        txn: &redb::ReadTransaction,
        minutes: std::ops::Range<i64>,
        mut each: impl FnMut(i64, u64, Vec<CountDelta>),
    ) -> Result<(), StoreError> {
        let mut written = Vec::new();
        for row in txn
            .open_table(MINUTE_SNAPSHOTS)
            .map_err(|e| self.io("open minute snapshots", e))?
            .range(minutes.clone())
            .map_err(|e| self.io("read minute snapshots", e))?
        {
            let (minute, value) = row.map_err(|e| self.io("read minute snapshots", e))?;
            let minute = minute.value();
            let (seq, deltas) = read_snapshot(minute, value.value(), packed_minute::read)
                .ok_or_else(|| {
                    self.io(
                        "read minute snapshots",
                        format!("unreadable minute {minute}"),
                    )
                })?;
            written.push(minute);
            each(minute, seq, deltas);
        }
        self.for_each_previous_snapshot(txn, minutes, &written, each)
    }

    /// Calls `each` for the previous version's snapshots (`minute_counts`)
    /// in `minutes`, except those in `newer` (sorted).
    fn for_each_previous_snapshot(
        &self,
        txn: &redb::ReadTransaction,
        minutes: std::ops::Range<i64>,
        newer: &[i64],
        mut each: impl FnMut(i64, u64, Vec<CountDelta>),
    ) -> Result<(), StoreError> {
        for row in txn
            .open_table(MINUTE_COUNTS)
            .map_err(|e| self.io("open minute counts", e))?
            .range(minutes)
            .map_err(|e| self.io("read minute counts", e))?
        {
            let (minute, value) = row.map_err(|e| self.io("read minute counts", e))?;
            let minute = minute.value();
            if newer.binary_search(&minute).is_ok() {
                continue;
            }
            let (seq, deltas) = read_snapshot(minute, value.value(), |_, packed| {
                packed_counts::read(packed)
            })
            .ok_or_else(|| self.io("read minute counts", format!("unreadable minute {minute}")))?;
            each(minute, seq, deltas);
        }
        Ok(())
    }
}

/// Splits a snapshot row's value into the writing commit's sequence and the
/// minute's counters, read by `read`.
fn read_snapshot(
    minute: i64,
    value: &[u8],
    read: impl FnOnce(i64, &[u8]) -> Option<Vec<CountDelta>>,
) -> Option<(u64, Vec<CountDelta>)> {
    let (seq, packed) = value.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(seq.try_into().ok()?),
        read(minute, packed)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::MinuteSnapshot;
    use crate::time::MINUTE_MS;

    fn ad(s: &str) -> AdId {
        AdId::parse(s).unwrap()
    }

    /// A snapshot of minute `minute` (in minutes) holding `counters`.
    fn snapshot(minute: i64, counters: &[(&str, Filter, u64)]) -> MinuteSnapshot {
        let mut packed = packed_minute::PackedMinute::default();
        for (a, filter, n) in counters {
            packed.push(filter, &ad(a), *n);
        }
        MinuteSnapshot {
            minute: minute * MINUTE_MS,
            packed,
        }
    }

    #[test]
    fn commit_then_recover_round_trips_and_fences() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 3).unwrap();
        let first = store.recover(60).unwrap();
        assert_eq!((first.last_seq, first.watermark), (0, NO_WATERMARK));

        let mut cp = Checkpoint::resume(0, NO_WATERMARK);
        cp.last_seq = 42;
        cp.watermark = 10 * MINUTE_MS;
        cp.new_ids = [(MINUTE_MS, 7), (9 * MINUTE_MS, 8)].into_iter().collect();
        cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 3);
        cp.log_total(2 * MINUTE_MS, &ad("b"), &Filter::ALL, 1);
        cp.snapshots.push(snapshot(2, &[("b", Filter::ALL, 1)]));
        store.commit(first.generation, &cp, 5 * MINUTE_MS).unwrap();
        // Checkpoints carry totals: committing one again changes nothing.
        store.commit(first.generation, &cp, 5 * MINUTE_MS).unwrap();

        // Minute 2 has its snapshot: stored history. Minute 9 is only in the
        // log, which recovery reads (below).
        assert_eq!(
            store
                .read_count(&ad("b"), &Filter::ALL, 0, 10 * MINUTE_MS)
                .unwrap(),
            1
        );
        let mut sums = HashMap::new();
        store
            .add_sums(&Filter::ALL, 0, 10 * MINUTE_MS, &mut sums)
            .unwrap();
        assert_eq!(sums.get(&ad("b")), Some(&1));

        drop(store);
        let store = PartitionStore::open(dir.path(), 3).unwrap();
        let again = store.recover(3).unwrap();
        assert_eq!(again.last_seq, 42);
        assert_eq!(again.watermark, 10 * MINUTE_MS);
        assert_eq!(
            again.seen,
            vec![(9 * MINUTE_MS, 8)],
            "ids of final minutes forgotten"
        );
        assert_eq!(again.counts_from, 7 * MINUTE_MS);
        assert_eq!(
            again.counts.len(),
            1,
            "only minutes in memory range are loaded"
        );
        let newer = store.recover(3).unwrap();
        assert!(newer.generation > again.generation);
        assert!(matches!(
            store.commit(again.generation, &cp, 0),
            Err(StoreError::Fenced { .. })
        ));
    }

    #[test]
    fn rejects_stay_in_the_outbox_until_marked_published() {
        use crate::reject::{RejectReason, Rejected};
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let generation = store.recover(60).unwrap().generation;
        let mut cp = Checkpoint::resume(0, NO_WATERMARK);
        cp.last_seq = 9;
        cp.rejects = vec![
            Rejected {
                seq: 7,
                subject: "clicks.p.0.a".into(),
                payload: bytes::Bytes::from_static(b"{x"),
                reason: RejectReason::Invalid("not JSON".into()),
            },
            Rejected {
                seq: 9,
                subject: "clicks.p.0.b".into(),
                payload: bytes::Bytes::from_static(b"{}"),
                reason: RejectReason::TooLate,
            },
        ];
        store.commit(generation, &cp, NO_WATERMARK).unwrap();
        let recovered = store.recover(60).unwrap();
        let outbox: Vec<_> = recovered
            .outbox
            .iter()
            .map(|r| (r.seq, r.reason.clone(), r.payload.clone()))
            .collect();
        assert_eq!(
            outbox,
            vec![
                (
                    7,
                    RejectReason::Invalid("not JSON".into()),
                    bytes::Bytes::from_static(b"{x")
                ),
                (9, RejectReason::TooLate, bytes::Bytes::from_static(b"{}")),
            ]
        );
        let mut next = Checkpoint::resume(9, NO_WATERMARK);
        next.mark_published([7]);
        store
            .commit(recovered.generation, &next, NO_WATERMARK)
            .unwrap();
        let left: Vec<u64> = store
            .recover(60)
            .unwrap()
            .outbox
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(left, vec![9]);
    }

    #[test]
    fn feed_items_stay_in_the_outbox_in_version_order_until_marked_published() {
        use crate::feed::{AggregateFeed, CountersPacker};
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 4).unwrap();
        let generation = store.recover(60).unwrap().generation;
        // A close of ~2,000 counters in 4 KiB chunks, then a top.
        let mut feed = AggregateFeed::new(4, 10, 4096);
        let mut packer = CountersPacker::default();
        for i in 0..2_000 {
            packer.push(&ad(&format!("ad-{i}")), &Filter::ALL, i);
        }
        let close = feed.counts(5 * MINUTE_MS, Publication::Close, packer);
        assert!(close.chunks > 1);
        let top = feed.top(1, 5 * MINUTE_MS, Publication::Close, &[(ad("ad-1"), 1)]);
        let mut cp = Checkpoint::resume(0, NO_WATERMARK);
        cp.last_seq = 5;
        cp.feed = vec![
            FeedItem::Counts(close.clone()),
            FeedItem::Message(top.clone()),
        ];
        store.commit(generation, &cp, NO_WATERMARK).unwrap();

        let recovered = store.recover(60).unwrap();
        assert_eq!(
            recovered.feed_version, top.version,
            "numbered on from every chunk of the close"
        );
        assert_eq!(top.version, close.first_version + u64::from(close.chunks));
        assert_eq!(
            recovered.feed_outbox,
            vec![
                FeedItem::Counts(close.clone()),
                FeedItem::Message(top.clone())
            ]
        );
        // What a restart renders is what the first run would have published.
        let FeedItem::Counts(stored) = &recovered.feed_outbox[0] else {
            panic!("a counts publication")
        };
        assert_eq!(stored.render(4).unwrap(), close.render(4).unwrap());

        let mut next = Checkpoint::resume(5, NO_WATERMARK);
        next.mark_feed_published([close.first_version]);
        store
            .commit(recovered.generation, &next, NO_WATERMARK)
            .unwrap();
        let left = store.recover(60).unwrap().feed_outbox;
        assert_eq!(left, vec![FeedItem::Message(top)]);
    }

    #[test]
    fn pruning_deletes_old_minutes_a_bounded_number_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let generation = store.recover(60).unwrap().generation;
        // Rows as files of earlier versions hold them.
        let ads: Vec<String> = (0..(PRUNE_ROWS_PER_COMMIT + 500))
            .map(|i| format!("ad-{i}"))
            .collect();
        let txn = store.db.begin_write().unwrap();
        {
            let mut counts = txn.open_table(COUNTS).unwrap();
            for a in &ads {
                counts.insert((0, a.as_str(), ""), 1).unwrap();
                counts.insert((MINUTE_MS, a.as_str(), ""), 1).unwrap();
            }
        }
        txn.commit().unwrap();
        let mut cp = Checkpoint::resume(0, NO_WATERMARK);
        cp.snapshots.push(snapshot(0, &[("snap", Filter::ALL, 5)]));
        cp.snapshots.push(snapshot(2, &[("snap", Filter::ALL, 7)]));
        store.commit(generation, &cp, NO_WATERMARK).unwrap();
        let remaining = |store: &PartitionStore| {
            let mut sums = HashMap::new();
            store
                .add_sums(&Filter::ALL, 0, MINUTE_MS, &mut sums)
                .unwrap();
            sums.len()
        };
        assert_eq!(
            remaining(&store),
            1,
            "a minute's snapshot wins over its rows"
        );
        let empty = Checkpoint::resume(0, NO_WATERMARK);
        store
            .commit_and_prune(generation, &empty, NO_WATERMARK, MINUTE_MS)
            .unwrap();
        let rows = |store: &PartitionStore, minute: i64| {
            let txn = store.db.begin_read().unwrap();
            let counts = txn.open_table(COUNTS).unwrap();
            counts
                .range((minute, "", "")..(minute + 1, "", ""))
                .unwrap()
                .count()
        };
        assert_eq!(rows(&store, 0), 500, "one commit prunes at most the bound");
        assert_eq!(
            remaining(&store),
            500,
            "the snapshot of minute 0 is pruned, its last rows are read"
        );
        store
            .commit_and_prune(generation, &empty, NO_WATERMARK, MINUTE_MS)
            .unwrap();
        assert_eq!(rows(&store, 0), 0);
        assert_eq!(rows(&store, MINUTE_MS), ads.len(), "newer minutes kept");
        let ad = AdId::parse("ad-7").unwrap();
        assert_eq!(
            store
                .read_count(&ad, &Filter::ALL, MINUTE_MS, 2 * MINUTE_MS)
                .unwrap(),
            1,
            "rows of a minute without a snapshot are read"
        );
        assert_eq!(
            store
                .read_count(
                    &AdId::parse("snap").unwrap(),
                    &Filter::ALL,
                    0,
                    3 * MINUTE_MS
                )
                .unwrap(),
            7
        );
    }

    #[test]
    fn admitted_values_and_their_counts_commit_together_and_reload() {
        use crate::dimension::{intern, DimensionValues, ExtraCodes, ExtraDimension};
        let dir = tempfile::tempdir().unwrap();
        let dims = [ExtraDimension {
            name: "s_device".into(),
            cap: 2,
        }];
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let first = store.recover(60).unwrap();
        assert!(first.admitted.is_empty());
        let mut values = DimensionValues::new(&dims, &first.admitted);
        let mut cp = Checkpoint::resume(0, NO_WATERMARK);
        cp.last_seq = 3;
        let mut mapped = Vec::new();
        for v in ["a&=%", "b", "c"] {
            mapped.push(values.map(0, Some(v), &mut cp.admitted));
        }
        assert!(mapped[2].overflow);
        for m in &mapped {
            let filter = Filter {
                extras: ExtraCodes::from_codes([m.code]).unwrap(),
                ..Filter::ALL
            };
            cp.log_total(0, &ad("x"), &filter, 1);
        }
        store.commit(first.generation, &cp, NO_WATERMARK).unwrap();

        drop(store);
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let again = store.recover(60).unwrap();
        let mut reloaded = DimensionValues::new(&dims, &again.admitted);
        let mut none = Vec::new();
        for (v, before) in ["a&=%", "b", "c"].iter().zip(&mapped) {
            assert_eq!(reloaded.map(0, Some(v), &mut none), *before, "{v}");
        }
        assert!(none.is_empty(), "nothing admitted twice");
        let other = Filter {
            extras: ExtraCodes::from_codes([intern("s_device", "other")]).unwrap(),
            ..Filter::ALL
        };
        assert!(again
            .counts
            .iter()
            .any(|d| d.filter == other && d.count == 1));
    }

    #[test]
    fn recovery_replays_the_log_over_snapshots_by_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let generation = std::cell::Cell::new(store.recover(60).unwrap().generation);
        let recover = || {
            let recovered = store.recover(60).unwrap();
            generation.set(recovered.generation);
            recovered
        };
        let ca = Filter {
            country: crate::click::Country::parse("CA"),
            ..Filter::ALL
        };
        // What the counts end up holding: each counter's last total.
        let sorted = |counts: Vec<CountDelta>| {
            let mut last = std::collections::BTreeMap::new();
            for d in counts {
                last.insert((d.minute, d.ad, d.filter), d.total);
            }
            last.into_iter()
                .map(|((minute, ad, filter), total)| {
                    (minute / MINUTE_MS, ad.to_string(), filter, total)
                })
                .collect::<Vec<_>>()
        };
        let commit = |seq: u64, fill: &dyn Fn(&mut Checkpoint)| {
            let mut cp = Checkpoint::resume(seq, 9 * MINUTE_MS);
            fill(&mut cp);
            store.commit(generation.get(), &cp, 5 * MINUTE_MS).unwrap();
        };
        commit(1, &|cp| {
            cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 3);
            cp.log_total(9 * MINUTE_MS, &ad("a"), &ca, 1);
        });
        commit(2, &|cp| {
            cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 4);
            cp.log_total(8 * MINUTE_MS, &ad("c"), &Filter::ALL, 1);
            cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 5);
        });
        let recovered = recover();
        assert_eq!(
            sorted(recovered.counts),
            vec![
                (8, "c".into(), Filter::ALL, 1),
                (9, "a".into(), Filter::ALL, 5),
                (9, "a".into(), ca, 1),
            ],
            "the later total wins"
        );
        assert_eq!(recovered.logged_minutes, vec![8 * MINUTE_MS, 9 * MINUTE_MS]);
        assert_eq!(recovered.logged_totals, 5);

        // Minute 8 turns final with more clicks than the log's record 2 says:
        // that older record must not undo the snapshot.
        commit(3, &|cp| {
            cp.snapshots.push(snapshot(8, &[("c", Filter::ALL, 4)]));
            cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 6);
        });
        let recovered = recover();
        let expected = vec![
            (8, "c".to_string(), Filter::ALL, 4),
            (9, "a".to_string(), Filter::ALL, 6),
            (9, "a".to_string(), ca, 1),
        ];
        assert_eq!(sorted(recovered.counts), expected);
        assert_eq!(recovered.logged_minutes, vec![9 * MINUTE_MS]);
        assert_eq!(store.count_log_records().unwrap(), 3);

        // A full snapshot: earlier records go, nothing changes.
        commit(4, &|cp| {
            cp.snapshots
                .push(snapshot(9, &[("a", Filter::ALL, 6), ("a", ca, 1)]));
            cp.full_snapshot = true;
        });
        assert_eq!(store.count_log_records().unwrap(), 0);
        let recovered = recover();
        assert_eq!(sorted(recovered.counts), expected);
        assert!(recovered.logged_minutes.is_empty());
        assert_eq!(
            store
                .read_count(&ad("a"), &ca, 9 * MINUTE_MS, 10 * MINUTE_MS)
                .unwrap(),
            1
        );
    }

    #[test]
    fn ids_of_many_minutes_in_one_commit_are_each_kept_with_their_minute() {
        for minutes in [3, 40] {
            let dir = tempfile::tempdir().unwrap();
            let store = PartitionStore::open(dir.path(), 0).unwrap();
            let generation = store.recover(60).unwrap().generation;
            let mut cp = Checkpoint::resume(1, 50 * MINUTE_MS);
            // Interleaved, as late clicks arrive among current ones.
            let ids: Vec<(i64, u128)> = (0..minutes * 5)
                .map(|i| ((i % minutes) as i64 * MINUTE_MS, 1000 + i as u128))
                .collect();
            cp.new_ids = ids.iter().copied().collect();
            store.commit(generation, &cp, NO_WATERMARK).unwrap();
            let mut seen = store.recover(60).unwrap().seen;
            seen.sort_unstable_by_key(|(_, id)| *id);
            assert_eq!(seen, ids, "{minutes} minutes");
        }
    }

    #[test]
    fn snapshots_of_the_previous_layout_are_read_where_no_newer_one_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        // Minutes 7 and 8 as the previous version wrote them (by commit 1).
        let txn = store.db.begin_write().unwrap();
        {
            let mut previous = txn.open_table(MINUTE_COUNTS).unwrap();
            for (minute, n) in [(7, 5u64), (8, 7)] {
                let packed = packed_counts::tests::layout_1(&[(
                    minute * MINUTE_MS,
                    ad("a"),
                    Filter::ALL,
                    n,
                )]);
                let mut value = 1u64.to_le_bytes().to_vec();
                value.extend_from_slice(&packed);
                previous
                    .insert(minute * MINUTE_MS, value.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let generation = store.recover(60).unwrap().generation;
        // Minute 8 snapshot again, in the current layout, with more clicks.
        let mut cp = Checkpoint::resume(2, 9 * MINUTE_MS);
        cp.snapshots.push(snapshot(8, &[("a", Filter::ALL, 9)]));
        store.commit(generation, &cp, NO_WATERMARK).unwrap();

        let stored = |from: i64, to: i64| {
            store
                .read_count(&ad("a"), &Filter::ALL, from * MINUTE_MS, to * MINUTE_MS)
                .unwrap()
        };
        assert_eq!(stored(7, 8), 5, "the previous layout alone");
        assert_eq!(stored(8, 9), 9, "the newer snapshot wins");
        assert_eq!(stored(7, 9), 14);
        let recovered = store.recover(60).unwrap();
        let counts: Vec<(i64, u64)> = recovered
            .counts
            .iter()
            .map(|d| (d.minute / MINUTE_MS, d.total))
            .collect();
        assert_eq!(counts, vec![(8, 9), (7, 5)]);
    }

    #[test]
    fn count_log_records_of_the_previous_layout_replay_before_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let us = Filter {
            country: crate::click::Country::parse("US"),
            ..Filter::ALL
        };
        // Commits 1 and 2 as the previous version wrote them (layout 1).
        let txn = store.db.begin_write().unwrap();
        {
            let mut log = txn.open_table(COUNT_LOG).unwrap();
            let record_1 = packed_counts::tests::layout_1(&[
                (9 * MINUTE_MS, ad("a"), Filter::ALL, 3),
                (9 * MINUTE_MS, ad("a"), us, 2),
                (8 * MINUTE_MS, ad("b"), Filter::ALL, 1),
            ]);
            let record_2 = packed_counts::tests::layout_1(&[(9 * MINUTE_MS, ad("a"), us, 4)]);
            log.insert(1, record_1.as_slice()).unwrap();
            log.insert(2, record_2.as_slice()).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("last_seq", 2).unwrap();
            meta.insert("watermark", 9 * MINUTE_MS).unwrap();
        }
        txn.commit().unwrap();
        let generation = store.recover(60).unwrap().generation;
        // Commit 3 by this version (layout 2): newer totals win.
        let mut cp = Checkpoint::resume(3, 9 * MINUTE_MS);
        cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 5);
        store.commit(generation, &cp, NO_WATERMARK).unwrap();

        let recovered = store.recover(60).unwrap();
        let mut last = std::collections::BTreeMap::new();
        for d in &recovered.counts {
            last.insert(
                (d.minute / MINUTE_MS, d.ad.to_string(), d.filter.key()),
                d.total,
            );
        }
        let expected: std::collections::BTreeMap<_, _> = [
            ((8, "b".to_string(), Filter::ALL.key()), 1),
            ((9, "a".to_string(), Filter::ALL.key()), 5),
            ((9, "a".to_string(), us.key()), 4),
        ]
        .into_iter()
        .collect();
        assert_eq!(last, expected);
        assert_eq!(recovered.logged_totals, 5);
        assert_eq!(recovered.logged_minutes, vec![8 * MINUTE_MS, 9 * MINUTE_MS]);
        assert_eq!(recovered.last_seq, 3);
    }

    #[test]
    fn minutes_open_to_corrections_are_recovered_even_beyond_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let generation = store.recover(60).unwrap().generation;
        // Watermark at minute 200: with 60 minutes of memory, minute 100 is
        // out of memory, but a lateness of 2 h keeps it open to corrections.
        let mut cp = Checkpoint::resume(1, 200 * MINUTE_MS);
        cp.log_total(100 * MINUTE_MS, &ad("a"), &Filter::ALL, 4);
        store.commit(generation, &cp, NO_WATERMARK).unwrap();
        let kept = store.recover_keeping(60, 120 * MINUTE_MS).unwrap();
        assert_eq!(kept.counts_from, 80 * MINUTE_MS);
        assert_eq!(kept.logged_minutes, vec![100 * MINUTE_MS]);
        assert_eq!(kept.counts.len(), 1);
        let short = store.recover_keeping(60, 10 * MINUTE_MS).unwrap();
        assert_eq!(short.counts_from, 140 * MINUTE_MS);
        assert!(short.counts.is_empty());
    }

    #[test]
    fn a_damaged_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("partition-0.redb"), b"garbage, not redb").unwrap();
        let err = PartitionStore::open(dir.path(), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("partition-0.redb"), "{err}");
        assert!(err.contains("move it aside"), "{err}");
    }
}
