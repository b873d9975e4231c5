//! Recovery: what a partition resumes from, read from its file.

use super::schema::*;
use super::{PartitionStore, StoreError};
use crate::batch::Increment;
use crate::click::{AdId, Filter, FilterKinds};
use crate::fast_hash::FastMap;
use crate::feed::{CountsPublication, FeedItem, FeedMessage, Publication};
use crate::store::checkpoint::{id_of_stored, ID_BYTES};
use crate::store::packed_minute;
use crate::time::event_clock::NO_WATERMARK;
use redb::{ReadableDatabase, ReadableTable};

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
    pub counts: Vec<Increment>,
    /// The runs of `counts` that are finest counters of layout-3 records:
    /// their coarser counters are derived from them, in order.
    pub derive: Vec<DeriveRun>,
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
    /// Minutes `adclick reconcile --repair` rewrote, oldest first.
    pub reconciled: Vec<i64>,
}

/// Totals of finest counters, read from layout-3 records (see
/// [`crate::store::packed_counts`]): whoever builds counts sets each one and
/// adds its change (the new total minus the counter's total so far, 0 if
/// none) to its coarser counters ([`FilterKinds::coarser`]). Across a
/// record the changes add up to what its clicks added, even where a
/// snapshot was taken between two of its batches (the earlier total then
/// takes back what the later one adds again).
#[derive(Clone, Debug, PartialEq)]
pub struct DeriveRun {
    /// Where the run is in the list of totals.
    pub totals: std::ops::Range<usize>,
    /// The kinds its records counted.
    pub kinds: FilterKinds,
}

/// Counters that recovered totals are replayed onto (the reducer's counts,
/// or a map of them).
pub trait CounterTotals {
    /// Sets a counter's total; returns the total it had (0 if none).
    fn replace(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) -> u64;
    /// Adds `change` to a counter, modulo 2^64.
    fn add_wrapping(&mut self, minute: i64, ad: &AdId, filter: &Filter, change: u64);
}

/// Sets `totals` onto `counters` in order (a later total of a counter
/// replaces an earlier one); the totals in `runs` also add their change to
/// their coarser counters (see [`DeriveRun`]).
pub fn replay_totals(totals: &[Increment], runs: &[DeriveRun], counters: &mut impl CounterTotals) {
    let mut runs = runs.iter().peekable();
    for (at, t) in totals.iter().enumerate() {
        while runs.next_if(|run| run.totals.end <= at).is_some() {}
        let before = counters.replace(t.minute, &t.ad, &t.filter, t.total);
        if let Some(run) = runs.peek().filter(|run| run.totals.contains(&at)) {
            let change = t.total.wrapping_sub(before);
            for coarse in run.kinds.coarser(t.filter) {
                counters.add_wrapping(t.minute, &t.ad, &coarse, change);
            }
        }
    }
}

impl CounterTotals for std::collections::BTreeMap<(i64, AdId, Filter), u64> {
    fn replace(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) -> u64 {
        self.insert((minute, *ad, *filter), total).unwrap_or(0)
    }

    fn add_wrapping(&mut self, minute: i64, ad: &AdId, filter: &Filter, change: u64) {
        let count = self.entry((minute, *ad, *filter)).or_insert(0);
        *count = count.wrapping_add(change);
    }
}

/// Appends a replayed total to `counts`, extending or starting the run of
/// derived totals it belongs to.
pub(super) fn push_total(
    counts: &mut Vec<Increment>,
    runs: &mut Vec<DeriveRun>,
    delta: Increment,
    derive: Option<FilterKinds>,
) {
    if let Some(kinds) = derive {
        let at = counts.len();
        match runs.last_mut() {
            Some(run) if run.totals.end == at && run.kinds == kinds => run.totals.end += 1,
            _ => runs.push(DeriveRun {
                totals: at..at + 1,
                kinds,
            }),
        }
    }
    counts.push(delta);
}

impl PartitionStore {
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
        self.read_seen_rows(&txn, &mut seen)?;
        self.read_seen_blocks(&txn, &mut seen)?;
        self.read_id_blocks(&txn, SEEN_IDS, ID_BYTES, id_of_stored, &mut seen)?;
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
        self.read_count_rows(&txn, counts_from, &snapshot_seq, &mut counts)?;
        // Appended after the snapshots and rows, in commit order: whoever
        // builds the counts sets totals in this order, the last one winning.
        let mut logged_minutes = std::collections::BTreeSet::new();
        let mut logged_totals = 0;
        let mut derive = Vec::new();
        self.for_each_logged_total(&txn, &snapshot_seq, |delta, kinds| {
            if delta.minute >= counts_from {
                logged_totals += 1;
                logged_minutes.insert(delta.minute);
                push_total(&mut counts, &mut derive, delta, kinds);
            }
        })?;
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
        let mut reconciled = Vec::new();
        for row in txn
            .open_table(RECONCILED)
            .map_err(|e| self.io("open reconciled", e))?
            .iter()
            .map_err(|e| self.io("read reconciled", e))?
        {
            let (minute, _) = row.map_err(|e| self.io("read reconciled", e))?;
            reconciled.push(minute.value());
        }
        Ok(Recovered {
            reconciled,
            feed_outbox,
            feed_version: get("feed_version")?.unwrap_or(0).max(0) as u64,
            outbox,
            admitted,
            generation: *generation,
            last_seq,
            watermark,
            seen,
            counts,
            derive,
            counts_from,
            logged_minutes: logged_minutes.into_iter().collect(),
            logged_totals,
        })
    }

    /// Calls `each(minute, writing commit's sequence, counters)` for every
    /// minute snapshot in `minutes`: `minute_snapshots`, then older layouts'
    /// snapshots of minutes the first lacks.
    pub(super) fn for_each_snapshot(
        &self,
        txn: &redb::ReadTransaction,
        minutes: std::ops::Range<i64>,
        mut each: impl FnMut(i64, u64, Vec<Increment>),
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
}

impl PartitionStore {
    /// Appends the ids of a table of id blocks (`(minute, commit's last
    /// sequence)` → ids of `width` bytes each, read by `id`) to `seen`.
    pub(super) fn read_id_blocks(
        &self,
        txn: &redb::ReadTransaction,
        table: redb::TableDefinition<(i64, u64), &[u8]>,
        width: usize,
        id: fn(&[u8]) -> u128,
        seen: &mut Vec<(i64, u128)>,
    ) -> Result<(), StoreError> {
        for row in txn
            .open_table(table)
            .map_err(|e| self.io("open seen", e))?
            .iter()
            .map_err(|e| self.io("read seen", e))?
        {
            let (key, ids) = row.map_err(|e| self.io("read seen", e))?;
            let (minute, _) = key.value();
            seen.extend(ids.value().chunks_exact(width).map(|b| (minute, id(b))));
        }
        Ok(())
    }

    /// Calls `each` with every count-log total, in commit order, except
    /// those of a minute whose snapshot (`snapshot_seq`: minute → the
    /// writing commit) a later commit wrote: that snapshot holds a newer
    /// total. Whoever builds counts from them sets totals in this order,
    /// after the snapshots, the last one winning; a total of a layout-3
    /// record comes with the kinds its coarser counters derive in (see
    /// [`DeriveRun`]).
    pub(super) fn for_each_logged_total(
        &self,
        txn: &redb::ReadTransaction,
        snapshot_seq: &FastMap<i64, u64>,
        mut each: impl FnMut(Increment, Option<FilterKinds>),
    ) -> Result<(), StoreError> {
        for row in txn
            .open_table(COUNT_LOG)
            .map_err(|e| self.io("open count log", e))?
            .iter()
            .map_err(|e| self.io("read count log", e))?
        {
            let (seq, record) = row.map_err(|e| self.io("read count log", e))?;
            let seq = seq.value();
            let record = self.read_log_record(seq, record.value())?;
            for delta in record.totals {
                // A minute's totals of a record go all or none: a derived
                // total's coarser counters are of its minute.
                if snapshot_seq.get(&delta.minute).is_none_or(|s| *s <= seq) {
                    each(delta, record.derive);
                }
            }
        }
        Ok(())
    }
}

/// Splits a snapshot row's value into the writing commit's sequence and the
/// minute's counters, read by `read`.
pub(super) fn read_snapshot(
    minute: i64,
    value: &[u8],
    read: impl FnOnce(i64, &[u8]) -> Option<Vec<Increment>>,
) -> Option<(u64, Vec<Increment>)> {
    let (seq, packed) = value.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(seq.try_into().ok()?),
        read(minute, packed)?,
    ))
}

#[cfg(test)]
mod tests {
    use crate::batch::Increment;
    use crate::click::Filter;
    use crate::store::checkpoint::Checkpoint;
    use crate::store::tests::{ad, snapshot};
    use crate::store::PartitionStore;
    use crate::time::event_clock::NO_WATERMARK;
    use crate::time::MINUTE_MS;

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
        let sorted = |counts: Vec<Increment>| {
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
    fn coarser_counters_are_derived_from_the_finest_ones_logged() {
        use crate::click::{Country, FilterKinds, IpType};
        use crate::store::recovery::replay_totals;
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStore::open(dir.path(), 0).unwrap();
        let generation = std::cell::Cell::new(store.recover(60).unwrap().generation);
        let kinds = FilterKinds::of(&crate::DimensionSet::defaults());
        let f = |country: Option<&str>, ip: Option<IpType>| Filter {
            country: country.and_then(Country::parse),
            ip_type: ip,
            ..Filter::ALL
        };
        let (us_v4, de_v6) = (
            f(Some("US"), Some(IpType::V4)),
            f(Some("DE"), Some(IpType::V6)),
        );
        let coarse = [
            f(None, None),
            f(Some("US"), None),
            f(Some("DE"), None),
            f(None, Some(IpType::V4)),
            f(None, Some(IpType::V6)),
        ];
        // Every counter of minute 9, ad "a", in the order above, then the
        // finest two.
        let recovered = || {
            let r = store.recover(60).unwrap();
            generation.set(r.generation);
            let mut totals = std::collections::BTreeMap::new();
            replay_totals(&r.counts, &r.derive, &mut totals);
            coarse
                .iter()
                .chain([&us_v4, &de_v6])
                .map(|filter| totals.get(&(9 * MINUTE_MS, ad("a"), *filter)).copied())
                .collect::<Vec<_>>()
        };
        let commit = |seq: u64, finest: bool, fill: &dyn Fn(&mut Checkpoint)| {
            let mut cp = Checkpoint::resume(seq, 9 * MINUTE_MS)
                .logging_finest_only(kinds.filter(|_| finest));
            fill(&mut cp);
            store.commit(generation.get(), &cp, 5 * MINUTE_MS).unwrap();
        };
        let m = 9 * MINUTE_MS;
        commit(1, true, &|cp| {
            cp.log_total(m, &ad("a"), &us_v4, 1);
            cp.log_total(m, &ad("a"), &us_v4, 2);
            cp.log_total(m, &ad("a"), &de_v6, 1);
        });
        let some = |v: [u64; 7]| v.map(Some).to_vec();
        assert_eq!(recovered(), some([3, 2, 1, 2, 1, 2, 1]));

        // A full snapshot taken between the batches of a commit: the
        // record's earlier total (3) is below the snapshot's (4), and the
        // changes still add up to what came after the snapshot.
        commit(2, true, &|cp| {
            cp.log_total(m, &ad("a"), &us_v4, 3);
            cp.log_total(m, &ad("a"), &us_v4, 4);
            let mut counters: Vec<(&str, Filter, u64)> = coarse
                .iter()
                .zip([5, 4, 1, 4, 1])
                .map(|(filter, n)| ("a", *filter, n))
                .collect();
            counters.extend([("a", us_v4, 4), ("a", de_v6, 1)]);
            cp.snapshots.push(snapshot(9, &counters));
            cp.full_snapshot = true;
            cp.log_total(m, &ad("a"), &us_v4, 5);
            cp.log_total(m, &ad("a"), &de_v6, 2);
        });
        assert_eq!(store.count_log_records().unwrap(), 1);
        assert_eq!(recovered(), some([7, 5, 2, 5, 2, 5, 2]));

        // A record of every counter (layout 2) between them, then layout 3.
        commit(3, false, &|cp| {
            for (filter, n) in coarse.iter().zip([8, 6, 2, 6, 2]) {
                cp.log_total(m, &ad("a"), filter, n);
            }
            cp.log_total(m, &ad("a"), &us_v4, 6);
        });
        commit(4, true, &|cp| cp.log_total(m, &ad("a"), &de_v6, 3));
        let expected = some([9, 6, 3, 6, 3, 6, 3]);
        assert_eq!(recovered(), expected);
        // Reconciling reads the same totals.
        let stored = store.stored_totals(m, m + MINUTE_MS).unwrap();
        let read: Vec<Option<u64>> = coarse
            .iter()
            .chain([&us_v4, &de_v6])
            .map(|filter| stored.get(&(m, ad("a"), *filter)).copied())
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn records_of_other_kinds_derive_with_their_own() {
        use crate::click::{Country, FilterKinds, IpType};
        use crate::store::recovery::{push_total, replay_totals};
        use crate::DimensionSet;
        // All clicks and country, then (a restart later) the default four.
        let before = FilterKinds::of(&[
            DimensionSet::default(),
            DimensionSet {
                country: true,
                ..DimensionSet::default()
            },
        ]);
        let after = FilterKinds::of(&DimensionSet::defaults());
        let us = Filter {
            country: Country::parse("US"),
            ..Filter::ALL
        };
        let us_v4 = Filter {
            ip_type: Some(IpType::V4),
            ..us
        };
        let total = |filter, total| Increment {
            minute: 9 * MINUTE_MS,
            ad: ad("a"),
            filter,
            count: total,
            total,
        };
        let (mut counts, mut runs) = (Vec::new(), Vec::new());
        push_total(&mut counts, &mut runs, total(us, 2), before);
        push_total(&mut counts, &mut runs, total(us_v4, 1), after);
        assert_eq!(runs.len(), 2);
        let mut totals = std::collections::BTreeMap::new();
        replay_totals(&counts, &runs, &mut totals);
        let v4 = Filter {
            ip_type: Some(IpType::V4),
            ..Filter::ALL
        };
        let got: Vec<(Filter, u64)> = totals.into_iter().map(|((_, _, f), n)| (f, n)).collect();
        let mut expected = vec![(Filter::ALL, 3), (us, 3), (v4, 1), (us_v4, 1)];
        expected.sort();
        assert_eq!(got, expected);
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
}
