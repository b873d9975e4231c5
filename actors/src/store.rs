//! The redb file of one partition: the checkpoint and the minute history.
//!
//! Tables:
//! - `meta`: `last_seq` (last applied stream sequence), `watermark`,
//!   `format_version` and `oldest_format_version` (the newest and oldest
//!   layouts the file may hold, see [`schema`]).
//! - `seen_ids`: `(minute, commit's last sequence)` → the ids of that
//!   minute first seen by that commit, 13 bytes each (the 104 bits dedup
//!   keeps), packed: one row per minute per commit instead of one per
//!   click. (`seen`, one row per id, is what format 1 files hold, and
//!   `seen_blocks`, 16 bytes an id, what formats 2 to 5 hold; both are
//!   still read and pruned.)
//! - `count_log`: commit's last sequence → the counter totals that commit
//!   set, in order, packed (see [`crate::store::packed_counts`]): with the
//!   default filters only the finest counters' (country and ip type), the
//!   coarser ones derived at recovery. Records older than the last full
//!   snapshot are deleted.
//! - `minute_snapshots`: minute → the sequence of the commit that wrote it,
//!   then every counter of the minute, packed by filter (see
//!   [`crate::store::packed_minute`]): a snapshot (see
//!   [`crate::reducer::snapshots`]). The minute's history once it is final.
//! - `minute_counts`: snapshots as format 3 wrote them (packed like the
//!   count log's layout 1). Still read for minutes `minute_snapshots` lacks,
//!   and pruned; no longer written.
//! - `counts`: `(minute, ad_id, filter key)` → clicks: how formats 1 and 2
//!   stored counts, one row per counter. Still read (a minute's snapshot
//!   wins over its rows) and pruned, no longer written.
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
//! - `reconciled`: minute → when `adclick reconcile --repair` rewrote it
//!   (see [`repair`]).
//!
//! One [`PartitionStore::commit`] writes all of them in one transaction, so the
//! file always holds a state that some prefix of the stream produced.
//!
//! The store is a leaf shared by the stages: the writer commits (`commit`),
//! the partition supervisor recovers (`recovery`), the reducer reads history
//! (here). `schema` defines the tables and the format versions, `legacy`
//! reads the older layouts, `checkpoint` is what one commit writes.

pub mod checkpoint;
mod commit;
mod legacy;
pub mod packed_counts;
pub mod packed_minute;
mod recovery;
mod repair;
pub mod schema;

pub use commit::{CommitStats, PRUNE_ROWS_PER_COMMIT};
pub use recovery::{replay_totals, CounterTotals, DeriveRun, Recovered};
pub use repair::{MinuteRepair, Repaired};
pub use schema::FORMAT_VERSION;

use crate::click::{AdId, Filter};
use crate::feed::decode_top;
use crate::time::event_clock::NO_WATERMARK;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableError};
use schema::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The first minute of retained history under `watermark` (minutes before it
/// are pruned and refused by queries), or `NO_WATERMARK` when nothing is.
pub fn history_start(watermark: i64, retention_ms: i64) -> i64 {
    if watermark == NO_WATERMARK {
        return watermark;
    }
    crate::time::minute_floor(watermark.saturating_sub(retention_ms))
}

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
    /// The file is in a newer format than this binary reads: it was written
    /// by a newer adclick. Nothing in it was changed.
    #[error(
        "partition file {path} is in format version {found}, newer than this adclick reads \
         (format versions up to {known}). Run the newer version, or recount the partition \
         from the stream with this one (`adclick rebuild --partition N --force`, see \
         docs/RELIABILITY.md)"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The file's format version.
        found: i64,
        /// The newest format version this binary reads.
        known: i64,
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
    /// Which layouts the file may hold, as `meta` says once opened.
    format: Format,
    /// The latest commit this process made, for the status page.
    last_commit: LastCommit,
}

/// When this process last committed a partition's file, and up to which
/// stream sequence: what an operator reads to see that a partition advances.
#[derive(Debug, Default)]
pub struct LastCommit {
    seq: std::sync::atomic::AtomicU64,
    at_ms: std::sync::atomic::AtomicI64,
}

impl LastCommit {
    fn record(&self, seq: u64, at_ms: i64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.seq.store(seq, Relaxed);
        self.at_ms.store(at_ms, Relaxed);
    }

    /// The stream sequence and wall-clock time (epoch ms) of the latest
    /// commit, or `None` before the first one of this process.
    pub fn get(&self) -> Option<(u64, i64)> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.at_ms.load(Relaxed) {
            0 => None,
            at => Some((self.seq.load(Relaxed), at)),
        }
    }
}

impl PartitionStore {
    /// Opens (or creates) the file of `partition` in `dir`. Refuses a file
    /// of a newer format than this binary reads, changing nothing in it.
    pub fn open(dir: &Path, partition: u32) -> Result<PartitionStore, StoreError> {
        let path = dir.join(format!("partition-{partition}.redb"));
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let mut store = PartitionStore {
            db,
            path,
            generation: Mutex::new(0),
            format: Format::CURRENT,
            last_commit: LastCommit::default(),
        };
        let read = store
            .db
            .begin_read()
            .map_err(|e| store.io("begin read", e))?;
        let stored = store.read_format(&read)?;
        // What older records remain: looked at in a file from before
        // versions, and in an upgraded one until they are gone.
        let oldest = store.oldest_held(&read, stored.map_or(1, |f| f.oldest))?;
        drop(read);
        store.format = Format {
            version: FORMAT_VERSION,
            oldest,
        };
        // Record the format, and create the tables it may hold so readers
        // never meet a missing one.
        let txn = store.db.begin_write().map_err(|e| store.io("begin", e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| store.io("open meta", e))?;
            if stored != Some(store.format) {
                meta.insert(FORMAT_VERSION_KEY, store.format.version)
                    .map_err(|e| store.io("write format version", e))?;
                meta.insert(OLDEST_FORMAT_VERSION_KEY, store.format.oldest)
                    .map_err(|e| store.io("write format version", e))?;
            }
            txn.open_table(SEEN_IDS)
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
            txn.open_table(RECONCILED)
                .map_err(|e| store.io("open reconciled", e))?;
            store.create_legacy_tables(&txn)?;
        }
        txn.commit().map_err(|e| store.io("commit", e))?;
        Ok(store)
    }

    /// The format `meta` records; `None` for a file from before versions
    /// (or a new one). Refuses one newer than [`FORMAT_VERSION`].
    fn read_format(&self, txn: &ReadTransaction) -> Result<Option<Format>, StoreError> {
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.io("open meta", e)),
        };
        let get = |key: &str| -> Result<Option<i64>, StoreError> {
            Ok(meta
                .get(key)
                .map_err(|e| self.io("read format version", e))?
                .map(|v| v.value()))
        };
        let Some(version) = get(FORMAT_VERSION_KEY)? else {
            return Ok(None);
        };
        if version > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                path: self.path.clone(),
                found: version,
                known: FORMAT_VERSION,
            });
        }
        let oldest = get(OLDEST_FORMAT_VERSION_KEY)?.unwrap_or(version);
        if !(1..=version).contains(&oldest) {
            return Err(self.io(
                "read format version",
                format!("format version {version}, oldest {oldest}: not a format adclick writes"),
            ));
        }
        Ok(Some(Format { version, oldest }))
    }

    fn io(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            what,
            message: e.to_string(),
        }
    }

    /// The latest commit this process made to the file.
    pub fn last_commit(&self) -> &LastCommit {
        &self.last_commit
    }

    /// The last applied stream sequence the file holds (0: none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let meta = txn.open_table(META).map_err(|e| self.io("open meta", e))?;
        let last = meta.get("last_seq").map_err(|e| self.io("read meta", e))?;
        Ok(last.map_or(0, |v| v.value().max(0) as u64))
    }

    /// The whole file as it stands after the last commit, with the stream
    /// sequence it holds: what a partition ships to the cluster's state
    /// store. No commit runs while the bytes are read (the commit lock is
    /// held), so they are one committed state; the file's header still says
    /// it is open, so whoever opens the copy lets redb check it first.
    pub fn export(&self) -> Result<(u64, Vec<u8>), StoreError> {
        let _no_commit = self.lock_generation();
        let last_seq = self.last_seq()?;
        let bytes = std::fs::read(&self.path).map_err(|e| self.io("read the file to export", e))?;
        Ok((last_seq, bytes))
    }

    /// Replaces the file of `partition` in `dir` with `bytes` (a state
    /// shipped by another member) once they prove to be a partition file
    /// holding `last_seq`: written and opened beside it, then renamed over
    /// it. The partition must not be open in this process.
    pub fn import(
        dir: &Path,
        partition: u32,
        bytes: &[u8],
        last_seq: u64,
    ) -> Result<(), StoreError> {
        use std::io::Write as _;
        let path = dir.join(format!("partition-{partition}.redb"));
        let incoming_dir = dir.join(format!(".incoming-p{partition}"));
        let incoming = incoming_dir.join(format!("partition-{partition}.redb"));
        let io = |what: &'static str| {
            let path = path.clone();
            move |e: std::io::Error| StoreError::Io {
                path,
                what,
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(&incoming_dir).map_err(io("create the incoming directory"))?;
        let mut file = std::fs::File::create(&incoming).map_err(io("create the incoming file"))?;
        file.write_all(bytes)
            .map_err(io("write the incoming file"))?;
        file.sync_all().map_err(io("sync the incoming file"))?;
        drop(file);
        let held = PartitionStore::open(&incoming_dir, partition)?.last_seq()?;
        if held != last_seq {
            return Err(StoreError::Io {
                path: incoming,
                what: "check the shipped state",
                message: format!("it holds sequence {held}, its pointer says {last_seq}"),
            });
        }
        std::fs::rename(&incoming, &path).map_err(io("replace the file"))?;
        let _ = std::fs::remove_dir(&incoming_dir);
        Ok(())
    }

    /// Removes the file of `partition` in `dir`, if any (the partition then
    /// starts from the beginning of the retained stream).
    pub fn remove(dir: &Path, partition: u32) -> Result<(), StoreError> {
        let path = dir.join(format!("partition-{partition}.redb"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
                path,
                what: "remove a stale file",
                message: e.to_string(),
            }),
            _ => Ok(()),
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

    /// Writes the file of partition 0 in `dir` as a binary from before
    /// format versions would (`fill` adds what older layouts hold), then
    /// opens it.
    pub(super) fn open_legacy(
        dir: &Path,
        fill: impl FnOnce(&redb::WriteTransaction),
    ) -> PartitionStore {
        let db = Database::create(dir.join("partition-0.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        fill(&txn);
        txn.commit().unwrap();
        drop(db);
        PartitionStore::open(dir, 0).unwrap()
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

    /// What partition 0's file in `dir` holds: its tables, and `meta`'s
    /// format keys, read without the store.
    pub(super) fn raw_format(dir: &Path) -> (Vec<String>, Option<i64>, Option<i64>) {
        use redb::TableHandle;
        let db = Database::create(dir.join("partition-0.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let mut tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        tables.sort();
        let meta = txn.open_table(META).unwrap();
        let get = |key: &str| meta.get(key).unwrap().map(|v| v.value());
        let format = (get(FORMAT_VERSION_KEY), get(OLDEST_FORMAT_VERSION_KEY));
        (tables, format.0, format.1)
    }

    #[test]
    fn a_new_file_records_the_current_format_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.format, Format::CURRENT);
        drop(store);
        let (tables, version, oldest) = raw_format(dir.path());
        assert_eq!(version, Some(FORMAT_VERSION));
        assert_eq!(oldest, Some(FORMAT_VERSION), "nothing older to read");
        for older in ["seen", "counts", "minute_counts"] {
            assert!(!tables.iter().any(|t| t == older), "{older} in {tables:?}");
        }
        let again = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(again.format, Format::CURRENT);
    }

    #[test]
    fn a_file_of_a_newer_format_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let newer = FORMAT_VERSION + 1;
        {
            let db = Database::create(dir.path().join("partition-0.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(FORMAT_VERSION_KEY, newer).unwrap();
                meta.insert(OLDEST_FORMAT_VERSION_KEY, newer).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = PartitionStore::open(dir.path(), 0).err().unwrap();
        assert!(
            matches!(
                err,
                StoreError::NewerFormat { found, known, .. }
                    if found == newer && known == FORMAT_VERSION
            ),
            "{err:?}"
        );
        let message = err.to_string();
        for part in [
            "partition-0.redb".to_string(),
            format!("format version {newer}"),
            format!("up to {FORMAT_VERSION}"),
        ] {
            assert!(message.contains(&part), "{part:?} not in {message}");
        }
        assert_eq!(
            raw_format(dir.path()),
            (vec!["meta".to_string()], Some(newer), Some(newer)),
            "nothing written to a refused file"
        );
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
