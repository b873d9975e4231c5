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
//!
//! The store is a leaf shared by the stages: the writer commits (`commit`),
//! the partition supervisor recovers (`recovery`), the reducer reads history
//! (here). `schema` defines the tables, `legacy` reads the older layouts,
//! `checkpoint` is what one commit writes.

pub mod checkpoint;
mod commit;
mod legacy;
mod recovery;
mod schema;

pub use commit::{CommitStats, PRUNE_ROWS_PER_COMMIT};
pub use recovery::Recovered;

use crate::click::{AdId, Filter};
use crate::feed::decode_top;
use crate::writer::packed_minute;
use redb::{Database, ReadableDatabase, ReadableTableMetadata};
use schema::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
            txn.open_table(SEEN_BLOCKS)
                .map_err(|e| store.io("open seen", e))?;
            txn.open_table(COUNT_LOG)
                .map_err(|e| store.io("open count log", e))?;
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
            store.create_legacy_tables(&txn)?;
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
    /// from older layouts.
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
        // Minutes no snapshot covers may be in older layouts.
        self.for_each_stored_legacy(&txn, filter, from..to, snapshot_minutes, each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::MinuteSnapshot;
    use crate::time::MINUTE_MS;

    pub(super) fn ad(s: &str) -> AdId {
        AdId::parse(s).unwrap()
    }

    /// A snapshot of minute `minute` (in minutes) holding `counters`.
    pub(super) fn snapshot(minute: i64, counters: &[(&str, Filter, u64)]) -> MinuteSnapshot {
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
