//! Commits: one write transaction per checkpoint, pruning what aged out.

use super::checkpoint::Checkpoint;
use super::schema::*;
use super::{PartitionStore, StoreError};
use crate::feed::{encode_top, FeedItem};
use crate::time::event_clock::NO_WATERMARK;
use redb::ReadableTable;

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

impl PartitionStore {
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
                self.prune_legacy_counts(&txn, prune_before)?;
            }
            // The checkpoint packed each minute's ids as they came: one
            // row per minute, its block copied in place.
            let mut blocks = txn
                .open_table(SEEN_IDS)
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
                self.forget_seen_rows(&txn, final_until)?;
                self.forget_seen_blocks(&txn, final_until)?;
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
        self.last_commit
            .record(checkpoint.last_seq, crate::time::now_ms());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::click::Filter;
    use crate::feed::Publication;
    use crate::store::tests::{ad, snapshot};
    use crate::time::MINUTE_MS;
    use std::collections::HashMap;

    #[test]
    fn commit_then_recover_round_trips_and_fences() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 3).unwrap();
        let first = store.recover(60).unwrap();
        assert_eq!((first.last_seq, first.watermark), (0, NO_WATERMARK));

        let mut cp = Checkpoint::resume(0, NO_WATERMARK);
        cp.last_seq = 42;
        cp.watermark = 10 * MINUTE_MS;
        // Ids as dedup keeps them: the low 24 bits are not stored.
        cp.new_ids = [(MINUTE_MS, 7 << 24), (9 * MINUTE_MS, 8 << 24)]
            .into_iter()
            .collect();
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
            vec![(9 * MINUTE_MS, 8 << 24)],
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
    fn ids_of_many_minutes_in_one_commit_are_each_kept_with_their_minute() {
        for minutes in [3, 40] {
            let dir = tempfile::tempdir().unwrap();
            let store = PartitionStore::open(dir.path(), 0).unwrap();
            let generation = store.recover(60).unwrap().generation;
            let mut cp = Checkpoint::resume(1, 50 * MINUTE_MS);
            // Interleaved, as late clicks arrive among current ones.
            let ids: Vec<(i64, u128)> = (0..minutes * 5)
                .map(|i| ((i % minutes) as i64 * MINUTE_MS, (1000 + i as u128) << 24))
                .collect();
            cp.new_ids = ids.iter().copied().collect();
            store.commit(generation, &cp, NO_WATERMARK).unwrap();
            let mut seen = store.recover(60).unwrap().seen;
            seen.sort_unstable_by_key(|(_, id)| *id);
            assert_eq!(seen, ids, "{minutes} minutes");
        }
    }
}
