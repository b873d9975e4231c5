//! The tables of a partition's file (see [`crate::store`] for what each
//! holds) and its format version.
//!
//! # Format versions
//!
//! Each change of a file's layout is a version:
//!
//! 1. ids as `seen` rows (one per id), counts as `counts` rows (one per
//!    counter).
//! 2. ids in `seen_blocks`, packed per minute and commit; counts still rows.
//! 3. counts in the `count_log` (records in layout 1, see
//!    [`crate::store::packed_counts`]) and minute snapshots in
//!    `minute_counts` (packed like the log).
//! 4. minute snapshots in `minute_snapshots`, packed by filter
//!    ([`crate::store::packed_minute`]); the log still in layout 1.
//! 5. count-log records in layout 2, whose first byte is a format tag; the
//!    first version recorded in `meta`.
//! 6. ids in `seen_ids`, 13 bytes each (the 104 bits dedup keeps);
//!    count-log records in layout 3 as well: only the finest counters'
//!    totals, with the counted filter kinds, where the counted filters have
//!    a finest one (the default four do); recovery derives the coarser
//!    counters. Layout 2 is still written where they have none, so it is
//!    not an older layout.
//!
//! Tables added without changing how anything older is read (the outboxes,
//! `dimension_values`, `tops`, `reconciled`) need no version: they are created empty.
//!
//! An upgrade does not rewrite what older versions wrote: those records
//! stay, read where nothing newer covers them, until pruning drops them. So
//! a file says two things in `meta`:
//!
//! - `format_version`: the newest layout it may hold, [`FORMAT_VERSION`]
//!   once this binary opened it. A file whose version is newer than
//!   [`FORMAT_VERSION`] is refused at open, before anything is written, so a
//!   rolled-back binary never misreads a newer layout.
//! - `oldest_format_version`: the oldest layout whose records it may still
//!   hold. Readers of an older layout look only when this says the layout may
//!   be there (`Format::may_hold`), never by sniffing bytes. Where it says
//!   the count log may hold layout-1 records beside layout-2 ones, layout
//!   2's first byte is a record format tag telling them apart (layout 1
//!   never starts with it); elsewhere a record without it is damage.
//!
//! A file without `format_version` was written before versions were
//! recorded: [`crate::store::PartitionStore::open`] looks once at what it
//! holds (which older tables have rows, whether a count-log record lacks
//! layout 2's tag), and writes both keys. An upgraded file is looked at again
//! at each open until its older records are gone, so its oldest version only
//! rises.

use redb::TableDefinition;

/// The layout this binary writes, and the newest it reads.
pub const FORMAT_VERSION: i64 = 6;

/// `meta` key: the newest layout the file may hold.
pub(super) const FORMAT_VERSION_KEY: &str = "format_version";
/// `meta` key: the oldest layout whose records the file may still hold.
pub(super) const OLDEST_FORMAT_VERSION_KEY: &str = "oldest_format_version";

/// A file's format, as `meta` says (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Format {
    /// The newest layout the file may hold.
    pub(super) version: i64,
    /// The oldest layout whose records the file may still hold.
    pub(super) oldest: i64,
}

impl Format {
    /// A file holding only what this binary writes.
    pub(super) const CURRENT: Format = Format {
        version: FORMAT_VERSION,
        oldest: FORMAT_VERSION,
    };

    /// Whether the file may hold records of `layout`.
    pub(super) fn may_hold(self, layout: OlderLayout) -> bool {
        self.oldest <= layout.last_version()
    }
}

/// A layout this binary reads but no longer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OlderLayout {
    /// `seen` rows.
    SeenRows,
    /// `counts` rows.
    CountRows,
    /// `minute_counts` snapshots.
    MinuteCounts,
    /// Count-log records in layout 1.
    LogLayout1,
    /// `seen_blocks`: ids of 16 bytes.
    SeenBlocks,
}

impl OlderLayout {
    /// Every older layout, oldest first.
    pub(super) const ALL: [OlderLayout; 5] = [
        OlderLayout::SeenRows,
        OlderLayout::CountRows,
        OlderLayout::MinuteCounts,
        OlderLayout::LogLayout1,
        OlderLayout::SeenBlocks,
    ];

    /// The last version that wrote it.
    pub(super) const fn last_version(self) -> i64 {
        match self {
            OlderLayout::SeenRows => 1,
            OlderLayout::CountRows => 2,
            OlderLayout::MinuteCounts => 3,
            OlderLayout::LogLayout1 => 4,
            OlderLayout::SeenBlocks => 5,
        }
    }
}

/// Key → integer: `last_seq`, `watermark`, `feed_version`, and the format
/// keys above.
pub(super) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// `(minute, commit's last sequence)` → that minute's new ids,
/// [`ID_BYTES`](crate::store::checkpoint::ID_BYTES) each.
pub(super) const SEEN_IDS: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("seen_ids");
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

/// Minute → when `adclick reconcile --repair` rewrote it (epoch ms).
pub(super) const RECONCILED: TableDefinition<i64, i64> = TableDefinition::new("reconciled");

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
    /// `(minute, commit's last sequence)` → that minute's new ids, 16 bytes
    /// each (the whole 128-bit key, LE).
    pub(in crate::store) const SEEN_BLOCKS: TableDefinition<(i64, u64), &[u8]> =
        TableDefinition::new("seen_blocks");
}
