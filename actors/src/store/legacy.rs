//! Older layouts of a partition's file: read where nothing newer covers
//! them, pruned as they age out, never written.
//!
//! - `seen`: one row per id (now `seen_blocks`).
//! - `counts`: one row per counter (now the count log and minute snapshots).
//! - `minute_counts`: minute snapshots packed like the count log's layout 1
//!   (now `minute_snapshots`, packed by filter).

use super::recovery::read_snapshot;
use super::schema::legacy::{COUNTS, MINUTE_COUNTS, SEEN};
use super::{PartitionStore, StoreError, PRUNE_ROWS_PER_COMMIT};
use crate::batch::CountDelta;
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::writer::packed_counts;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

impl PartitionStore {
    /// Creates the older layouts' tables, so readers never meet a missing one.
    pub(super) fn create_legacy_tables(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(SEEN).map_err(|e| self.io("open seen", e))?;
        txn.open_table(COUNTS)
            .map_err(|e| self.io("open counts", e))?;
        txn.open_table(MINUTE_COUNTS)
            .map_err(|e| self.io("open minute counts", e))?;
        Ok(())
    }

    /// Appends the ids of `seen` rows to `seen`.
    pub(super) fn read_seen_rows(
        &self,
        txn: &ReadTransaction,
        seen: &mut Vec<(i64, u128)>,
    ) -> Result<(), StoreError> {
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
        counts: &mut Vec<CountDelta>,
    ) -> Result<(), StoreError> {
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
        Ok(())
    }

    /// Calls `each` for the `minute_counts` snapshots in `minutes`, except
    /// those in `newer` (sorted).
    pub(super) fn for_each_previous_snapshot(
        &self,
        txn: &ReadTransaction,
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
        let mut seen = txn.open_table(SEEN).map_err(|e| self.io("open seen", e))?;
        seen.retain_in(..(final_until, 0u128), |_, _| false)
            .map_err(|e| self.io("forget seen", e))?;
        Ok(())
    }

    /// Deletes `minute_counts` snapshots of minutes before `prune_before`,
    /// and up to [`PRUNE_ROWS_PER_COMMIT`] of their `counts` rows.
    pub(super) fn prune_legacy_counts(
        &self,
        txn: &WriteTransaction,
        prune_before: i64,
    ) -> Result<(), StoreError> {
        // One row a minute: few to delete at a time.
        txn.open_table(MINUTE_COUNTS)
            .map_err(|e| self.io("open minute counts", e))?
            .retain_in(..prune_before, |_, _| false)
            .map_err(|e| self.io("prune minute counts", e))?;
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
    use crate::store::schema::{COUNT_LOG, META};
    use crate::store::tests::{ad, snapshot};
    use crate::time::event_clock::NO_WATERMARK;
    use crate::time::MINUTE_MS;
    use redb::ReadableDatabase;
    use std::collections::HashMap;

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
}
