//! The tables of a partition's file (see [`crate::store`] for what each
//! holds).

use redb::TableDefinition;

/// Key → integer: `last_seq`, `watermark`, `feed_version`.
pub(super) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// `(minute, commit's last sequence)` → that minute's new ids, 16 bytes each.
pub(super) const SEEN_BLOCKS: TableDefinition<(i64, u64), &[u8]> =
    TableDefinition::new("seen_blocks");
/// Commit's last sequence → packed totals.
pub(super) const COUNT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("count_log");
/// Minute → writing commit's last sequence (8 bytes LE), counters packed by filter.
pub(super) const MINUTE_SNAPSHOTS: TableDefinition<i64, &[u8]> =
    TableDefinition::new("minute_snapshots");
/// Seq → (subject, payload, reason kind, reason text).
pub(super) const OUTBOX: TableDefinition<u64, (&str, &[u8], &str, &str)> =
    TableDefinition::new("outbox");
/// (dimension, value) of admitted extra-dimension values.
pub(super) const DIMENSION_VALUES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("dimension_values");
/// Feed version → (subject, payload).
pub(super) const FEED_OUTBOX: TableDefinition<u64, (&str, &[u8])> =
    TableDefinition::new("feed_outbox");
/// First feed version → (kind code, minute, chunks, packed counters).
pub(super) const FEED_COUNTS_OUTBOX: TableDefinition<u64, (u8, i64, u32, &[u8])> =
    TableDefinition::new("feed_counts_outbox");
/// (last minute, window minutes) → `ad:count,…`; ordered by minute for pruning.
pub(super) const TOPS: TableDefinition<(i64, i64), &str> = TableDefinition::new("tops");

/// Tables of older layouts: read and pruned, never written.
pub(super) mod legacy {
    use redb::TableDefinition;

    /// `(minute, id)` → (): one row per id.
    pub(in crate::store) const SEEN: TableDefinition<(i64, u128), ()> =
        TableDefinition::new("seen");
    /// `(minute, ad_id, filter key)` → clicks: one row per counter.
    pub(in crate::store) const COUNTS: TableDefinition<(i64, &str, &str), u64> =
        TableDefinition::new("counts");
    /// Minute → writing commit's last sequence (8 bytes LE), counters packed
    /// like the count log's layout 1.
    pub(in crate::store) const MINUTE_COUNTS: TableDefinition<i64, &[u8]> =
        TableDefinition::new("minute_counts");
}
