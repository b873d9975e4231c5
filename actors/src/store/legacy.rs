//! Older layouts of a partition's file: read where nothing newer covers
//! them, pruned as they age out, never written. Each is looked at only if
//! the file's format says it may be there (`Format::may_hold`).
//!
//! - `seen`: one row per id (now `seen_ids`).
//! - `seen_blocks`: ids of 16 bytes (now 13, in `seen_ids`).
//! - `counts`: one row per counter (now the count log and minute snapshots).
//! - `minute_counts`: minute snapshots packed like the count log's layout 1
//!   (now `minute_snapshots`, packed by filter).
//! - count-log records in layout 1 (now layout 2).

use super::recovery::read_snapshot;
use super::schema::legacy::{COUNTS, MINUTE_COUNTS, SEEN, SEEN_BLOCKS};
use super::schema::{OlderLayout, COUNT_LOG, FORMAT_VERSION};
use super::{PartitionStore, StoreError, PRUNE_ROWS_PER_COMMIT};
use crate::batch::Increment;
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::store::packed_counts;
use redb::{
    Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableError, Value,
    WriteTransaction,
};

impl PartitionStore {
    /// The oldest version whose records the file holds, looking only at
    /// layouts of version `from` on (older ones are known gone):
    /// [`FORMAT_VERSION`] if none. Reads every count-log record of a file
    /// that may hold layout 1.
    pub(super) fn oldest_held(&self, txn: &ReadTransaction, from: i64) -> Result<i64, StoreError> {
        for layout in OlderLayout::ALL {
            // `seen_blocks` is looked at whatever the file says: a binary
            // from before versions were recorded writes ids there into a
            // file of any version, and missing them would count repeats.
            if layout.last_version() < from && layout != OlderLayout::SeenBlocks {
                continue;
            }
            let held = match layout {
                OlderLayout::SeenRows => self.has_rows(txn, SEEN)?,
                OlderLayout::CountRows => self.has_rows(txn, COUNTS)?,
                OlderLayout::MinuteCounts => self.has_rows(txn, MINUTE_COUNTS)?,
                OlderLayout::LogLayout1 => self.has_untagged_log_record(txn)?,
                OlderLayout::SeenBlocks => self.has_rows(txn, SEEN_BLOCKS)?,
            };
            if held {
                return Ok(layout.last_version());
            }
        }
        Ok(FORMAT_VERSION)
    }

    /// Whether the table exists and has a row.
    fn has_rows<K: Key + 'static, V: Value + 'static>(
        &self,
        txn: &ReadTransaction,
        table: TableDefinition<K, V>,
    ) -> Result<bool, StoreError> {
        match txn.open_table(table) {
            Ok(table) => Ok(!table
                .is_empty()
                .map_err(|e| self.io("read older tables", e))?),
            Err(TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(self.io("open older tables", e)),
        }
    }

    /// Whether a count-log record lacks a record format tag (layout 1).
    fn has_untagged_log_record(&self, txn: &ReadTransaction) -> Result<bool, StoreError> {
        let log = match txn.open_table(COUNT_LOG) {
            Ok(log) => log,
            Err(TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(self.io("open count log", e)),
        };
        for row in log.iter().map_err(|e| self.io("read count log", e))? {
            let (_, record) = row.map_err(|e| self.io("read count log", e))?;
            if !packed_counts::is_tagged(record.value()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Creates the tables of the older layouts the file may hold, so their
    /// readers never meet a missing one.
    pub(super) fn create_legacy_tables(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.format.may_hold(OlderLayout::SeenRows) {
            txn.open_table(SEEN).map_err(|e| self.io("open seen", e))?;
        }
        if self.format.may_hold(OlderLayout::CountRows) {
            txn.open_table(COUNTS)
                .map_err(|e| self.io("open counts", e))?;
        }
        if self.format.may_hold(OlderLayout::MinuteCounts) {
            txn.open_table(MINUTE_COUNTS)
                .map_err(|e| self.io("open minute counts", e))?;
        }
        if self.format.may_hold(OlderLayout::SeenBlocks) {
            txn.open_table(SEEN_BLOCKS)
                .map_err(|e| self.io("open seen blocks", e))?;
        }
        Ok(())
    }

    /// Reads a count-log record. Layouts 2 and 3 start with a record format
    /// tag; where the format says layout-1 records may be there, a record
    /// without one is layout 1, elsewhere it is unreadable.
    pub(super) fn read_log_record(
        &self,
        seq: u64,
        record: &[u8],
    ) -> Result<packed_counts::LogRecord, StoreError> {
        packed_counts::read_log_record(record, self.format.may_hold(OlderLayout::LogLayout1))
            .ok_or_else(|| self.io("read count log", format!("unreadable record {seq}")))
    }

    /// Appends the ids of `seen` rows to `seen`.
    pub(super) fn read_seen_rows(
        &self,
        txn: &ReadTransaction,
        seen: &mut Vec<(i64, u128)>,
    ) -> Result<(), StoreError> {
        if !self.format.may_hold(OlderLayout::SeenRows) {
            return Ok(());
        }
        for row in txn
            .open_table(SEEN)
            .map_err(|e| self.io("open seen", e))?
            .iter()
            .map_err(|e| self.io("read seen", e))?
        {
            let (key, _) = row.map_err(|e| self.io("read seen", e))?;
            seen.push(key.value());
        }
        Ok(())
    }

    /// Appends the `counts` rows of minutes from `from` on to `counts`,
    /// except minutes a snapshot covers (keys of `snapshot_seq`).
    pub(super) fn read_count_rows(
        &self,
        txn: &ReadTransaction,
        from: i64,
        snapshot_seq: &FastMap<i64, u64>,
        counts: &mut Vec<Increment>,
    ) -> Result<(), StoreError> {
        if !self.format.may_hold(OlderLayout::CountRows) {
            return Ok(());
        }
        let table = txn
            .open_table(COUNTS)
            .map_err(|e| self.io("open counts", e))?;
        for row in table
            .range((from, "", "")..)
            .map_err(|e| self.io("read counts", e))?
        {
            let (key, value) = row.map_err(|e| self.io("read counts", e))?;
            let (minute, ad, filter) = key.value();
            if snapshot_seq.contains_key(&minute) {
                continue;
            }
            match (AdId::parse(ad), Filter::from_key(filter)) {
                (Some(ad), Some(filter)) => counts.push(Increment {
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
        Ok(())
    }

    /// Calls `each` for the `minute_counts` snapshots in `minutes`, except
    /// those in `newer` (sorted).
    pub(super) fn for_each_previous_snapshot(
        &self,
        txn: &ReadTransaction,
        minutes: std::ops::Range<i64>,
        newer: &[i64],
        mut each: impl FnMut(i64, u64, Vec<Increment>),
    ) -> Result<(), StoreError> {
        if !self.format.may_hold(OlderLayout::MinuteCounts) {
            return Ok(());
        }
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
                packed_counts::read_layout_1(packed)
            })
            .ok_or_else(|| self.io("read minute counts", format!("unreadable minute {minute}")))?;
            each(minute, seq, deltas);
        }
        Ok(())
    }

    /// Calls `each(ad, clicks)` for the counters under `filter` of minutes
    /// in `minutes` that older layouts hold and `snapshot_minutes` (sorted)
    /// lacks: `minute_counts` snapshots, then `counts` rows of minutes
    /// without either.
    pub(super) fn for_each_stored_legacy(
        &self,
        txn: &ReadTransaction,
        filter: &Filter,
        minutes: std::ops::Range<i64>,
        mut snapshot_minutes: Vec<i64>,
        mut each: impl FnMut(&AdId, u64),
    ) -> Result<(), StoreError> {
        let mut previous = Vec::new();
        self.for_each_previous_snapshot(
            txn,
            minutes.clone(),
            &snapshot_minutes,
            |minute, _, deltas| {
                previous.push(minute);
                for d in deltas.iter().filter(|d| d.filter == *filter) {
                    each(&d.ad, d.total);
                }
            },
        )?;
        if !self.format.may_hold(OlderLayout::CountRows) {
            return Ok(());
        }
        snapshot_minutes.extend(previous);
        snapshot_minutes.sort_unstable();
        let table = txn
            .open_table(COUNTS)
            .map_err(|e| self.io("open counts", e))?;
        let filter_key = filter.key();
        for row in table
            .range((minutes.start, "", "")..(minutes.end, "", ""))
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

    /// Deletes `seen` rows of minutes before `final_until`.
    pub(super) fn forget_seen_rows(
        &self,
        txn: &WriteTransaction,
        final_until: i64,
    ) -> Result<(), StoreError> {
        if !self.format.may_hold(OlderLayout::SeenRows) {
            return Ok(());
        }
        let mut seen = txn.open_table(SEEN).map_err(|e| self.io("open seen", e))?;
        seen.retain_in(..(final_until, 0u128), |_, _| false)
            .map_err(|e| self.io("forget seen", e))?;
        Ok(())
    }

    /// Appends the 16-byte ids of `seen_blocks` rows to `seen`.
    pub(super) fn read_seen_blocks(
        &self,
        txn: &ReadTransaction,
        seen: &mut Vec<(i64, u128)>,
    ) -> Result<(), StoreError> {
        if !self.format.may_hold(OlderLayout::SeenBlocks) {
            return Ok(());
        }
        let whole = |bytes: &[u8]| {
            let mut id = [0; 16];
            id.copy_from_slice(bytes);
            u128::from_le_bytes(id)
        };
        self.read_id_blocks(txn, SEEN_BLOCKS, 16, whole, seen)
    }

    /// Deletes the `seen_blocks` rows of minutes before `final_until`.
    pub(super) fn forget_seen_blocks(
        &self,
        txn: &WriteTransaction,
        final_until: i64,
    ) -> Result<(), StoreError> {
        if !self.format.may_hold(OlderLayout::SeenBlocks) {
            return Ok(());
        }
        txn.open_table(SEEN_BLOCKS)
            .map_err(|e| self.io("open seen blocks", e))?
            .retain_in(..(final_until, 0u64), |_, _| false)
            .map_err(|e| self.io("forget seen blocks", e))?;
        Ok(())
    }

    /// Deletes `minute_counts` snapshots of minutes before `prune_before`,
    /// and up to [`PRUNE_ROWS_PER_COMMIT`] of their `counts` rows.
    pub(super) fn prune_legacy_counts(
        &self,
        txn: &WriteTransaction,
        prune_before: i64,
    ) -> Result<(), StoreError> {
        if self.format.may_hold(OlderLayout::MinuteCounts) {
            // One row a minute: few to delete at a time.
            txn.open_table(MINUTE_COUNTS)
                .map_err(|e| self.io("open minute counts", e))?
                .retain_in(..prune_before, |_, _| false)
                .map_err(|e| self.io("prune minute counts", e))?;
        }
        if !self.format.may_hold(OlderLayout::CountRows) {
            return Ok(());
        }
        // One row a counter: a bounded number per commit.
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::checkpoint::Checkpoint;
    use crate::store::schema::legacy::SEEN_BLOCKS;
    use crate::store::schema::{Format, META, OLDEST_FORMAT_VERSION_KEY};
    use crate::store::tests::{ad, open_legacy, raw_format, snapshot};
    use crate::time::event_clock::NO_WATERMARK;
    use crate::time::MINUTE_MS;
    use redb::ReadableDatabase;
    use std::collections::HashMap;

    #[test]
    fn pruning_deletes_old_minutes_a_bounded_number_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        // Rows as files of earlier versions hold them.
        let ads: Vec<String> = (0..(PRUNE_ROWS_PER_COMMIT + 500))
            .map(|i| format!("ad-{i}"))
            .collect();
        let store = open_legacy(dir.path(), |txn| {
            let mut counts = txn.open_table(COUNTS).unwrap();
            for a in &ads {
                counts.insert((0, a.as_str(), ""), 1).unwrap();
                counts.insert((MINUTE_MS, a.as_str(), ""), 1).unwrap();
            }
        });
        let generation = store.recover(60).unwrap().generation;
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
    fn snapshots_of_the_previous_layout_are_read_where_no_newer_one_exists() {
        let dir = tempfile::tempdir().unwrap();
        // Minutes 7 and 8 as the previous version wrote them (by commit 1).
        let store = open_legacy(dir.path(), |txn| {
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
        });
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
        let us = Filter {
            country: crate::click::Country::parse("US"),
            ..Filter::ALL
        };
        // Commits 1 and 2 as the previous version wrote them (layout 1).
        let store = open_legacy(dir.path(), |txn| {
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
        });
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

    /// A count-log record in layout 1 or 2, of one counter.
    fn record(layout: u8, minute: i64, a: &str, total: u64) -> Vec<u8> {
        if layout == 1 {
            return packed_counts::tests::layout_1(&[(
                minute * MINUTE_MS,
                ad(a),
                Filter::ALL,
                total,
            )]);
        }
        let mut packed = packed_counts::PackedCounts::default();
        packed.push(minute * MINUTE_MS, &ad(a), &Filter::ALL, total);
        packed.as_bytes().to_vec()
    }

    /// A `minute_counts` value: written by commit `seq`, one counter.
    fn previous_snapshot(seq: u64, minute: i64, a: &str, total: u64) -> Vec<u8> {
        let mut value = seq.to_le_bytes().to_vec();
        value.extend_from_slice(&record(1, minute, a, total));
        value
    }

    #[test]
    fn a_file_from_before_versions_is_the_oldest_layout_it_holds() {
        type Fill = fn(&WriteTransaction);
        let cases: [(&str, Fill, i64); 8] = [
            ("nothing", |_| {}, FORMAT_VERSION),
            (
                "16-byte ids",
                |txn| {
                    let mut blocks = txn.open_table(SEEN_BLOCKS).unwrap();
                    blocks
                        .insert((9 * MINUTE_MS, 1u64), 2u128.to_le_bytes().as_slice())
                        .unwrap();
                },
                5,
            ),
            (
                "layout-2 records",
                |txn| {
                    let mut log = txn.open_table(COUNT_LOG).unwrap();
                    log.insert(1, record(2, 9, "a", 1).as_slice()).unwrap();
                },
                FORMAT_VERSION,
            ),
            (
                "a layout-1 record before layout-2 ones",
                |txn| {
                    let mut log = txn.open_table(COUNT_LOG).unwrap();
                    log.insert(1, record(1, 9, "a", 1).as_slice()).unwrap();
                    log.insert(2, record(2, 9, "a", 2).as_slice()).unwrap();
                },
                4,
            ),
            (
                "minute_counts",
                |txn| {
                    let mut previous = txn.open_table(MINUTE_COUNTS).unwrap();
                    let value = previous_snapshot(1, 8, "a", 1);
                    previous.insert(8 * MINUTE_MS, value.as_slice()).unwrap();
                },
                3,
            ),
            (
                "counts rows",
                |txn| {
                    let mut counts = txn.open_table(COUNTS).unwrap();
                    counts.insert((0, "a", ""), 1).unwrap();
                },
                2,
            ),
            (
                "seen rows",
                |txn| {
                    let mut seen = txn.open_table(SEEN).unwrap();
                    seen.insert((0, 7u128), ()).unwrap();
                },
                1,
            ),
            (
                "every older layout",
                |txn| {
                    txn.open_table(SEEN)
                        .unwrap()
                        .insert((0, 7u128), ())
                        .unwrap();
                    txn.open_table(COUNTS)
                        .unwrap()
                        .insert((0, "a", ""), 1)
                        .unwrap();
                    let mut log = txn.open_table(COUNT_LOG).unwrap();
                    log.insert(1, record(1, 9, "a", 1).as_slice()).unwrap();
                },
                1,
            ),
        ];
        for (what, fill, oldest) in cases {
            let dir = tempfile::tempdir().unwrap();
            let store = open_legacy(dir.path(), fill);
            let format = Format {
                version: FORMAT_VERSION,
                oldest,
            };
            assert_eq!(store.format, format, "{what}");
            drop(store);
            let (_, version_kept, oldest_kept) = raw_format(dir.path());
            assert_eq!(
                (version_kept, oldest_kept),
                (Some(FORMAT_VERSION), Some(oldest)),
                "{what}: written to meta"
            );
        }
    }

    #[test]
    fn a_file_from_before_versions_gets_its_version_and_recovers_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        // Every older layout, as a file upgraded since version 1 holds them,
        // and the current ones.
        let store = open_legacy(dir.path(), |txn| {
            let mut seen = txn.open_table(SEEN).unwrap();
            seen.insert((9 * MINUTE_MS, 1u128), ()).unwrap();
            let mut blocks = txn.open_table(SEEN_BLOCKS).unwrap();
            blocks
                .insert((9 * MINUTE_MS, 3u64), 2u128.to_le_bytes().as_slice())
                .unwrap();
            let mut counts = txn.open_table(COUNTS).unwrap();
            counts.insert((7 * MINUTE_MS, "a", ""), 2).unwrap();
            counts.insert((8 * MINUTE_MS, "a", ""), 1).unwrap();
            let mut previous = txn.open_table(MINUTE_COUNTS).unwrap();
            let value = previous_snapshot(1, 8, "a", 5);
            previous.insert(8 * MINUTE_MS, value.as_slice()).unwrap();
            let mut log = txn.open_table(COUNT_LOG).unwrap();
            log.insert(2, record(1, 9, "a", 3).as_slice()).unwrap();
            log.insert(3, record(2, 9, "a", 4).as_slice()).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("last_seq", 3).unwrap();
            meta.insert("watermark", 9 * MINUTE_MS).unwrap();
        });
        let upgraded = Format {
            version: FORMAT_VERSION,
            oldest: 1,
        };
        assert_eq!(store.format, upgraded);
        // What the file holds, each counter's last total.
        let state = |store: &PartitionStore| {
            let recovered = store.recover(60).unwrap();
            let mut seen = recovered.seen.clone();
            seen.sort_unstable();
            let mut last = std::collections::BTreeMap::new();
            for d in &recovered.counts {
                last.insert((d.minute / MINUTE_MS, d.ad.to_string()), d.total);
            }
            (recovered.last_seq, recovered.watermark, seen, last)
        };
        let expected = (
            3,
            9 * MINUTE_MS,
            vec![(9 * MINUTE_MS, 1), (9 * MINUTE_MS, 2)],
            [
                ((7, "a".to_string()), 2),
                ((8, "a".to_string()), 5),
                ((9, "a".to_string()), 4),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(state(&store), expected);
        assert_eq!(
            store
                .read_count(&ad("a"), &Filter::ALL, 7 * MINUTE_MS, 9 * MINUTE_MS)
                .unwrap(),
            7,
            "history: minute 7's row, minute 8's snapshot over its row"
        );
        drop(store);
        let (_, version, oldest) = raw_format(dir.path());
        assert_eq!(
            (version, oldest),
            (Some(FORMAT_VERSION), Some(1)),
            "written"
        );
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.format, upgraded, "the older records are still there");
        assert_eq!(state(&store), expected);
    }

    #[test]
    fn ids_of_16_bytes_are_read_and_pruned_and_new_ones_take_13() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_legacy(dir.path(), |txn| {
            let mut blocks = txn.open_table(SEEN_BLOCKS).unwrap();
            // The low bits of an older file's ids are kept as they were.
            for (minute, id) in [(8, 0xABu128), (9, 0xCD)] {
                blocks
                    .insert((minute * MINUTE_MS, 1u64), id.to_le_bytes().as_slice())
                    .unwrap();
            }
        });
        assert_eq!(store.format.oldest, 5);
        let recovered = store.recover(60).unwrap();
        assert_eq!(
            recovered.seen,
            vec![(8 * MINUTE_MS, 0xAB), (9 * MINUTE_MS, 0xCD)]
        );
        let mut cp = Checkpoint::resume(2, 9 * MINUTE_MS);
        cp.new_ids = [(9 * MINUTE_MS, 0xEF << 24)].into_iter().collect();
        // Minute 8 is final: its 16-byte block goes.
        store
            .commit(recovered.generation, &cp, 9 * MINUTE_MS)
            .unwrap();
        let mut seen = store.recover(60).unwrap().seen;
        seen.sort_unstable();
        assert_eq!(
            seen,
            vec![(9 * MINUTE_MS, 0xCD), (9 * MINUTE_MS, 0xEF << 24)]
        );
        let generation = store.recover(60).unwrap().generation;
        let cp = Checkpoint::resume(3, 10 * MINUTE_MS);
        store.commit(generation, &cp, 10 * MINUTE_MS).unwrap();
        drop(store);
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.format.oldest, FORMAT_VERSION, "no 16-byte id left");
        assert!(store.recover(60).unwrap().seen.is_empty());
    }

    #[test]
    fn ids_of_16_bytes_are_read_even_from_a_file_of_the_current_version() {
        // A binary from before versions were recorded, run on a current
        // file, writes its ids there: they must not be missed.
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.format, Format::CURRENT);
        let txn = store.db.begin_write().unwrap();
        txn.open_table(SEEN_BLOCKS)
            .unwrap()
            .insert((9 * MINUTE_MS, 1u64), 0xCDu128.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(store);
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.format.oldest, 5);
        assert_eq!(store.recover(60).unwrap().seen, vec![(9 * MINUTE_MS, 0xCD)]);
    }

    #[test]
    fn readers_follow_the_version_not_the_bytes() {
        // A record without layout 2's tag: layout 1 in a file upgraded from
        // it, damage in one that never held layout 1.
        for (oldest, readable) in [(4, true), (FORMAT_VERSION, false)] {
            let dir = tempfile::tempdir().unwrap();
            let store = PartitionStore::open(dir.path(), 0).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut log = txn.open_table(COUNT_LOG).unwrap();
                log.insert(1, record(1, 9, "a", 3).as_slice()).unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(OLDEST_FORMAT_VERSION_KEY, oldest).unwrap();
            }
            txn.commit().unwrap();
            drop(store);
            let store = PartitionStore::open(dir.path(), 0).unwrap();
            assert_eq!(store.format.oldest, oldest);
            match store.recover(60) {
                Ok(recovered) => {
                    assert!(readable, "read as layout 1 at version {oldest}");
                    assert_eq!(recovered.counts.len(), 1);
                }
                Err(e) => {
                    assert!(!readable, "{e}");
                    assert!(e.to_string().contains("unreadable record 1"), "{e}");
                }
            }
        }
    }

    #[test]
    fn an_upgraded_file_reaches_the_current_version_once_its_older_records_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_legacy(dir.path(), |txn| {
            let mut log = txn.open_table(COUNT_LOG).unwrap();
            log.insert(1, record(1, 9, "a", 3).as_slice()).unwrap();
        });
        assert_eq!(store.format.oldest, 4);
        let generation = store.recover(60).unwrap().generation;
        // A full snapshot: the log's earlier records go.
        let mut cp = Checkpoint::resume(2, 9 * MINUTE_MS);
        cp.snapshots.push(snapshot(9, &[("a", Filter::ALL, 3)]));
        cp.log_total(9 * MINUTE_MS, &ad("a"), &Filter::ALL, 3);
        cp.full_snapshot = true;
        store.commit(generation, &cp, NO_WATERMARK).unwrap();
        assert_eq!(store.format.oldest, 4, "decided at open");
        drop(store);
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        assert_eq!(store.format, Format::CURRENT);
        drop(store);
        assert_eq!(raw_format(dir.path()).2, Some(FORMAT_VERSION));
    }
}
