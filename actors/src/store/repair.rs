//! What `adclick reconcile` reads of a partition's file, and what its
//! `--repair` writes: a final minute's counters replaced by a recount.
//!
//! A repair is one write transaction per minute, so a minute is either
//! wholly repaired or untouched:
//! - the minute's snapshot (`minute_snapshots`) becomes the recounted
//!   counters, every filter;
//! - count-log records lose their totals of that minute (they are older
//!   than the recount, and a record of the same commit as the snapshot
//!   would otherwise win over it at recovery);
//! - stored final top-N whose window holds the minute are deleted, so
//!   `popular` sums the repaired minutes instead of reading a stale list;
//! - `reconciled` records the minute and when, for the REST answers'
//!   `reconciled` field;
//! - the feed outbox gets a `reconciled` publication of every counter of the
//!   minute (0 for counters the recount did not find), numbered after the
//!   partition's last feed version: the service publishes it on `ADCLICK_AGG`
//!   when it next starts, as any committed feed message (docs/FEED.md).
//!
//! The file must not be open elsewhere: redb refuses a second opener, so a
//! repair runs while the partition's service is stopped (or on a copy).

use super::packed_counts::PackedCounts;
use super::recovery::{push_total, replay_totals};
use super::schema::*;
use super::{PartitionStore, StoreError};
use crate::click::{AdId, Filter};
use crate::fast_hash::FastMap;
use crate::feed::{AggregateFeed, CountersPacker, FeedItem, Publication};
use crate::store::packed_minute::PackedMinute;
use crate::time::event_clock::NO_WATERMARK;
use crate::time::MINUTE_MS;
use redb::{ReadableDatabase, ReadableTable};
use std::collections::BTreeMap;

/// The longest window a stored top can span (SPEC §3's 1440 minutes).
const LONGEST_WINDOW: i64 = 1440;

/// One minute's recounted counters, to write over what the file holds.
#[derive(Clone, Debug, Default)]
pub struct MinuteRepair {
    /// Start of the minute, epoch ms.
    pub minute: i64,
    /// Every counter of the minute, every filter, as recounted.
    pub counters: Vec<(AdId, Filter, u64)>,
    /// When the repair was made (epoch ms), recorded with the minute.
    pub at_ms: i64,
    /// Whether to put a `reconciled` publication in the feed outbox (off
    /// when the service runs with `feed = false`).
    pub publish: bool,
    /// The feed's payload limit (the chunking of the publication).
    pub max_payload: usize,
}

/// What a repair wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// Counters in the new snapshot.
    pub counters: usize,
    /// Counters the file held that the recount did not find (now 0).
    pub dropped: usize,
    /// The feed versions of the publication, if one was written.
    pub versions: Option<(u64, u64)>,
    /// Stored top-N deleted.
    pub tops_deleted: usize,
}

impl PartitionStore {
    /// The watermark of the last commit (`NO_WATERMARK` before any).
    pub fn watermark(&self) -> Result<i64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let meta = txn.open_table(META).map_err(|e| self.io("open meta", e))?;
        Ok(meta
            .get("watermark")
            .map_err(|e| self.io("read meta", e))?
            .map_or(NO_WATERMARK, |v| v.value()))
    }

    /// Every committed counter of the minutes in `[from, to)`, as recovery
    /// would rebuild them: snapshots, rows of older files, then the count
    /// log's newer totals (the last one of a counter holds).
    pub fn stored_totals(
        &self,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<(i64, AdId, Filter), u64>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let mut counts = Vec::new();
        let mut snapshot_seq: FastMap<i64, u64> = FastMap::default();
        self.for_each_snapshot(&txn, from..to, |minute, seq, deltas| {
            snapshot_seq.insert(minute, seq);
            counts.extend(deltas);
        })?;
        self.read_count_rows(&txn, from, &snapshot_seq, &mut counts)?;
        let mut runs = Vec::new();
        // A derived total's coarser counters are of its minute: the range
        // can be cut before replaying.
        self.for_each_logged_total(&txn, &snapshot_seq, |delta, kinds| {
            if (from..to).contains(&delta.minute) {
                push_total(&mut counts, &mut runs, delta, kinds)
            }
        })?;
        let mut totals = BTreeMap::new();
        replay_totals(&counts, &runs, &mut totals);
        totals.retain(|(minute, _, _), _| (from..to).contains(minute));
        Ok(totals)
    }

    /// The minutes a repair rewrote, and when (epoch ms).
    pub fn reconciled_minutes(&self) -> Result<BTreeMap<i64, i64>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io("begin read", e))?;
        let table = match txn.open_table(RECONCILED) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.io("open reconciled", e)),
        };
        let mut minutes = BTreeMap::new();
        for row in table.iter().map_err(|e| self.io("read reconciled", e))? {
            let (minute, at) = row.map_err(|e| self.io("read reconciled", e))?;
            minutes.insert(minute.value(), at.value());
        }
        Ok(minutes)
    }

    /// Replaces the counters of `repair.minute` with the recount, in one
    /// transaction (see the module doc). Counters the file holds and the
    /// recount lacks are dropped from the snapshot and published as 0.
    pub fn repair_minute(&self, repair: &MinuteRepair) -> Result<Repaired, StoreError> {
        let minute = repair.minute;
        let stored = self.stored_totals(minute, minute + MINUTE_MS)?;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| self.io("begin write", e))?;
        let mut outcome = Repaired {
            counters: repair.counters.len(),
            dropped: 0,
            versions: None,
            tops_deleted: 0,
        };
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io("open meta", e))?;
            let read = |meta: &redb::Table<&str, i64>, key: &str| -> Result<i64, StoreError> {
                Ok(meta
                    .get(key)
                    .map_err(|e| self.io("read meta", e))?
                    .map_or(0, |v| v.value()))
            };
            let last_seq = read(&meta, "last_seq")?.max(0) as u64;
            let feed_version = read(&meta, "feed_version")?.max(0) as u64;

            // Grouped by filter: the snapshot keeps one section a filter.
            let mut counters: Vec<&(AdId, Filter, u64)> = repair.counters.iter().collect();
            counters.sort_unstable_by_key(|(ad, filter, _)| (*filter, *ad));
            let mut packed = PackedMinute::default();
            for (ad, filter, count) in counters {
                packed.push(filter, ad, *count);
            }
            let bytes = packed.as_bytes();
            let mut snapshots = txn
                .open_table(MINUTE_SNAPSHOTS)
                .map_err(|e| self.io("open minute snapshots", e))?;
            let mut value = snapshots
                .insert_reserve(minute, 8 + bytes.len())
                .map_err(|e| self.io("write minute snapshots", e))?;
            let (seq, counters) = value.as_mut().split_at_mut(8);
            seq.copy_from_slice(&last_seq.to_le_bytes());
            counters.copy_from_slice(bytes);
            drop(value);
            drop(snapshots);

            self.strip_log_of(&txn, minute)?;

            let mut tops = txn.open_table(TOPS).map_err(|e| self.io("open tops", e))?;
            let stale: Vec<(i64, i64)> = tops
                .range((minute, i64::MIN)..(minute + LONGEST_WINDOW * MINUTE_MS, i64::MIN))
                .map_err(|e| self.io("read tops", e))?
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.io("read tops", e))?
                .into_iter()
                .filter(|(last, window)| last - (window - 1) * MINUTE_MS <= minute)
                .collect();
            for key in &stale {
                tops.remove(*key).map_err(|e| self.io("delete tops", e))?;
            }
            outcome.tops_deleted = stale.len();

            let recounted: std::collections::HashSet<(AdId, Filter)> = repair
                .counters
                .iter()
                .map(|(ad, filter, _)| (*ad, *filter))
                .collect();
            let dropped: Vec<(AdId, Filter)> = stored
                .keys()
                .map(|(_, ad, filter)| (*ad, *filter))
                .filter(|key| !recounted.contains(key))
                .collect();
            outcome.dropped = dropped.len();

            if repair.publish {
                let mut packer = CountersPacker::default();
                for (ad, filter, count) in &repair.counters {
                    packer.push(ad, filter, *count);
                }
                for (ad, filter) in &dropped {
                    packer.push(ad, filter, 0);
                }
                let mut feed = AggregateFeed::new(0, feed_version, repair.max_payload);
                let publication = feed.counts(minute, Publication::Reconciled, packer);
                let item = FeedItem::Counts(publication.clone());
                txn.open_table(FEED_COUNTS_OUTBOX)
                    .map_err(|e| self.io("open feed counts outbox", e))?
                    .insert(
                        publication.first_version,
                        (
                            publication.publication.code(),
                            minute,
                            publication.chunks,
                            publication.counters.as_ref(),
                        ),
                    )
                    .map_err(|e| self.io("write feed counts outbox", e))?;
                meta.insert("feed_version", item.last_version() as i64)
                    .map_err(|e| self.io("write meta", e))?;
                outcome.versions = Some((item.first_version(), item.last_version()));
            }

            txn.open_table(RECONCILED)
                .map_err(|e| self.io("open reconciled", e))?
                .insert(minute, repair.at_ms)
                .map_err(|e| self.io("write reconciled", e))?;
        }
        txn.commit().map_err(|e| self.io("commit", e))?;
        Ok(outcome)
    }

    /// Drops the totals of `minute` from every count-log record.
    fn strip_log_of(&self, txn: &redb::WriteTransaction, minute: i64) -> Result<(), StoreError> {
        let mut log = txn
            .open_table(COUNT_LOG)
            .map_err(|e| self.io("open count log", e))?;
        let mut rewritten = Vec::new();
        for row in log.iter().map_err(|e| self.io("read count log", e))? {
            let (seq, record) = row.map_err(|e| self.io("read count log", e))?;
            let seq = seq.value();
            let record = self.read_log_record(seq, record.value())?;
            if record.totals.iter().any(|d| d.minute == minute) {
                // Kept in the record's layout: a layout-3 record still
                // names the kinds its totals derive in.
                let mut kept = match record.derive {
                    Some(kinds) => PackedCounts::finest_only(kinds, 0),
                    None => PackedCounts::with_capacity(0),
                };
                for d in record.totals.iter().filter(|d| d.minute != minute) {
                    kept.push(d.minute, &d.ad, &d.filter, d.total);
                }
                rewritten.push((seq, kept));
            }
        }
        for (seq, kept) in rewritten {
            if kept.is_empty() {
                log.remove(seq).map_err(|e| self.io("write count log", e))?;
            } else {
                log.insert(seq, kept.as_bytes())
                    .map_err(|e| self.io("write count log", e))?;
            }
        }
        Ok(())
    }
}
