//! Counter totals packed into one value: the count log's records of a
//! partition's redb file (and, in layout 1, the minute snapshots of format
//! versions 3 and 4, table `minute_counts`).
//!
//! A counter of an open minute changes in almost every commit (a hot ad gets
//! clicks every 100 ms). Writing each changed counter as its own B-tree row
//! cost ~2.7 µs per row per commit, which made checkpointing several times
//! dearer than counting. Instead, each commit appends one count-log record:
//! the totals its batches set, in order, packed into one value; and from
//! time to time the reducer writes whole minutes as snapshots (see
//! [`crate::reducer::snapshots`]), after which older records are deleted.
//! Recovery loads the snapshots and replays the newer records in commit
//! order (totals, so the last one wins).
//!
//! Layout 2 (format version 5 on, see [`crate::store`]): a format byte
//! `0x01`, then groups of counters sharing a minute and an ad (the window
//! emits an ad's increments of a minute together, one per filter, so the ad
//! is written once per group, not once per counter). A group is `head: u8` (the ad
//! id's length, 1 to 64, plus `0x80` when the group's minute follows the
//! ad), the ad bytes, the minute (`i64` LE) only if flagged — most groups of
//! a commit share the previous group's minute, and the first group always
//! names it —, `counters: u8`, then per counter a filter and its total as a
//! LEB128 varint. A filter is one tag byte: bits 0–1 the ip type (0 none,
//! 1 v4, 2 v6, 3 unknown), bit 2 set when a country follows as the low 8
//! bits of its [`Country::index`] (bits 4–5 of the tag hold the index's
//! high bits), or the tag `0x08` then the filter's key text
//! ([`Filter::key`], which names every dimension) behind a `u16` LE length
//! for filters with extra dimensions, stored as text because their
//! in-memory codes are numbered per process. About 13.5 bytes a click where
//! layout 1 took 21 (bench `whole_with_checkpoints`, four default filters).
//!
//! Layout 3 (format version 6 on): the format byte `0x02`, the mask of the
//! counted filter kinds ([`FilterKinds`]), then layout 2's groups holding
//! only the counters of the finest kind. Where the counted filters have a
//! finest one (the default four: none, country, ip type, both), each
//! click changes one finest counter and the coarser counters are sums of
//! finest ones, so logging the finest alone loses nothing: recovery sets
//! each finest total and adds its change to the coarser counters (see
//! [`crate::store::DeriveRun`]). A click then logs about one total instead
//! of three or four: ~8.3 bytes instead of ~13.5, most of them the ad id
//! once per (minute, ad). Layout 2 stays for filters without a finest
//! kind, or with extra dimensions (whose kinds are named by configuration
//! position, which a restart may change).
//!
//! Layout 1 (read only: records of format versions 3 and 4, and their
//! minute snapshots): the same groups without the format
//! byte, each `minute: i64 LE, ad length: u8, ad bytes, counters: u8`, and
//! per counter a tag byte (1: country, 2: ip type, 4: extra dimensions)
//! then the country's two letters if tagged, the ip type's code (1 v4,
//! 2 v6, 3 unknown) if tagged, and for extra dimensions the key text as in
//! layout 2. Minute snapshots ([`crate::store::packed_minute`]) still
//! write their filters this way.
//!
//! Which layout a value is in is the file's format version's to say
//! (see [`crate::store`]): [`read_log_record`] reads a count-log record in
//! layout 2 or 3, or, in a file upgraded from layout 1 whose log may still
//! hold it, layout 1 too; [`read_layout_1`] reads `minute_counts`. The
//! first byte of layouts 2 and 3 is a record format tag: a layout-1 value
//! starts with a minute, a multiple of 60,000 ms (so of 32), whose first
//! byte is never `0x01` or `0x02`.

use crate::batch::{Increment, Increments};
use crate::click::{AdId, Country, Filter, FilterKinds, IpType};

/// Layout 1's filter tags (minute snapshots still use them).
const COUNTRY: u8 = 1;
const IP_TYPE: u8 = 2;
const EXTRAS: u8 = 4;

/// First byte of a layout-2 value.
const LAYOUT_2: u8 = 0x01;
/// First byte of a layout-3 record; the counted kinds' mask follows.
const LAYOUT_3: u8 = 0x02;
/// In a layout-2 group's head: the group's minute follows its ad.
const MINUTE_FOLLOWS: u8 = 0x80;
/// Layout 2's filter tag: the ip type's code, in the low two bits.
const TAG_IP_TYPE: u8 = 0b11;
/// Layout 2's filter tag: a country byte follows.
const TAG_COUNTRY: u8 = 0b100;
/// Layout 2's filter tag, alone: extra dimensions, as key text.
const TAG_EXTRAS: u8 = 0b1000;
/// Where layout 2's filter tag keeps the country index's high bits.
const TAG_COUNTRY_HIGH: u32 = 4;

/// Counter totals being packed: layout 2, or layout 3 when only the finest
/// counters are logged.
#[derive(Default, Clone, Debug)]
pub struct PackedCounts {
    bytes: Vec<u8>,
    /// Set when only the finest counters of these kinds are logged (layout 3).
    finest_only: Option<FilterKinds>,
    /// The open group: its minute, ad, and where its counter count is.
    group: Option<(i64, AdId, usize)>,
    /// The minute of the last group started: a group of the same minute
    /// does not repeat it.
    minute: Option<i64>,
    counters: usize,
}

impl PackedCounts {
    /// Empty, with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> PackedCounts {
        PackedCounts {
            bytes: Vec::with_capacity(bytes),
            ..PackedCounts::default()
        }
    }

    /// Empty, in layout 3: [`PackedCounts::push_increments`] keeps only the
    /// counters of the finest of `kinds`, and the record names `kinds` so
    /// recovery derives the others.
    pub fn finest_only(kinds: FilterKinds, bytes: usize) -> PackedCounts {
        PackedCounts {
            finest_only: Some(kinds),
            ..PackedCounts::with_capacity(bytes)
        }
    }

    /// The kinds whose finest counters alone are logged, if so.
    pub fn logs_finest_only(&self) -> Option<FilterKinds> {
        self.finest_only
    }

    /// Appends a counter's total (in layout 3, a finest counter's).
    pub fn push(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) {
        debug_assert!(
            self.finest_only.is_none_or(|kinds| kinds.is_finest(filter)),
            "a layout-3 record holds finest counters only"
        );
        let at = match self.open_group(minute, ad) {
            Some(at) => at,
            None => self.start_group(minute, ad),
        };
        self.bytes[at] += 1;
        self.counters += 1;
        push_counter(&mut self.bytes, filter, total);
    }

    /// Appends the totals of a batch's increments, in order: what
    /// [`PackedCounts::push`] of each would write, with one group look-up
    /// per (minute, ad) group of the increments, not one per counter.
    /// In layout 3, only the finest counters are appended.
    pub fn push_increments(&mut self, increments: &Increments) {
        let finest_only = self.finest_only;
        for (group, counts) in increments.groups() {
            let mut counts = counts
                .iter()
                .filter(|c| finest_only.is_none_or(|kinds| kinds.is_finest(&c.filter)))
                .peekable();
            while counts.peek().is_some() {
                let at = match self.open_group(group.minute, &group.ad) {
                    Some(at) => at,
                    None => self.start_group(group.minute, &group.ad),
                };
                // A record's group holds at most 255 counters: the rest start another.
                let room = usize::from(u8::MAX - self.bytes[at]);
                let mut n = 0;
                for c in counts.by_ref().take(room) {
                    push_counter(&mut self.bytes, &c.filter, c.total);
                    n += 1;
                }
                self.bytes[at] += n as u8;
                self.counters += n;
            }
        }
    }

    /// Where the open group's counter count is, if the counter joins it.
    #[inline]
    fn open_group(&self, minute: i64, ad: &AdId) -> Option<usize> {
        match &self.group {
            Some((m, a, at)) if *m == minute && a == ad && self.bytes[*at] < u8::MAX => Some(*at),
            _ => None,
        }
    }

    /// Starts a group of no counters yet; returns where its count is.
    fn start_group(&mut self, minute: i64, ad: &AdId) -> usize {
        if self.bytes.is_empty() {
            match self.finest_only {
                None => self.bytes.push(LAYOUT_2),
                Some(kinds) => self.bytes.extend_from_slice(&[LAYOUT_3, kinds.mask()]),
            }
        }
        let id_len = ad.as_bytes().len();
        let new_minute = self.minute != Some(minute);
        // An AdId is 1 to 64 bytes: its length leaves the head's top bit free.
        let head = id_len as u8 | if new_minute { MINUTE_FOLLOWS } else { 0 };
        self.bytes.push(head);
        // Copied padded, then cut to the id's length: cheaper than a
        // copy of a variable length (see `AdId::padded`).
        let end = self.bytes.len() + id_len;
        self.bytes.extend_from_slice(ad.padded());
        self.bytes.truncate(end);
        if new_minute {
            self.bytes.extend_from_slice(&minute.to_le_bytes());
            self.minute = Some(minute);
        }
        self.bytes.push(0);
        let at = self.bytes.len() - 1;
        self.group = Some((minute, *ad, at));
        at
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Counters pushed.
    pub fn counters(&self) -> usize {
        self.counters
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.counters == 0
    }
}

/// Most bytes a counter of built-in filters takes in layout 2: tag,
/// country, a u64's varint.
const COUNTER_MAX: usize = 2 + 10;

/// Appends a counter in layout 2: its filter's tag (and country byte, or
/// key text), then its total.
#[inline(always)]
fn push_counter(out: &mut Vec<u8>, filter: &Filter, total: u64) {
    if !filter.extras.is_empty() {
        push_extras_counter(out, filter, total);
        return;
    }
    // Assembled on the stack, appended as a fixed-size copy (a few moves,
    // not a `memcpy` call), then cut to its length.
    let mut counter = [0u8; COUNTER_MAX];
    let mut len = 1;
    counter[0] = filter.ip_type.map_or(0, ip_type_code);
    if let Some(country) = filter.country {
        // Below 26 × 26 = 676: ten bits, two of them in the tag.
        let index = country.index();
        counter[0] |= TAG_COUNTRY | ((index >> 8) as u8) << TAG_COUNTRY_HIGH;
        counter[1] = index as u8;
        len = 2;
    }
    let mut n = total;
    while n >= 0x80 {
        counter[len] = (n as u8) | 0x80;
        n >>= 7;
        len += 1;
    }
    counter[len] = n as u8;
    let end = out.len() + len + 1;
    out.extend_from_slice(&counter);
    out.truncate(end);
}

/// [`push_counter`] for a filter with extra dimensions: its key text.
#[cold]
fn push_extras_counter(out: &mut Vec<u8>, filter: &Filter, total: u64) {
    out.push(TAG_EXTRAS);
    push_key_text(out, filter);
    push_varint(out, total);
}

/// Appends a filter's key text ([`Filter::key`]) behind its `u16` LE
/// length: how both layouts store a filter with extra dimensions.
fn push_key_text(out: &mut Vec<u8>, filter: &Filter) {
    // A few dimensions of at most 64-byte values: far below 64 KiB.
    let key = filter.key();
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

/// Reads what [`push_key_text`] wrote off the front of `bytes`.
fn read_key_text(bytes: &mut &[u8]) -> Option<Filter> {
    let len = u16::from_le_bytes(take(bytes, 2)?.try_into().ok()?) as usize;
    Filter::from_key(std::str::from_utf8(take(bytes, len)?).ok()?)
}

/// Appends a filter in layout 1 (minute snapshots' sections).
pub(crate) fn push_filter(out: &mut Vec<u8>, filter: &Filter) {
    if !filter.extras.is_empty() {
        out.push(EXTRAS);
        push_key_text(out, filter);
        return;
    }
    let tag = if filter.country.is_some() { COUNTRY } else { 0 }
        | if filter.ip_type.is_some() { IP_TYPE } else { 0 };
    out.push(tag);
    if let Some(country) = filter.country {
        out.extend_from_slice(country.as_bytes());
    }
    if let Some(ip_type) = filter.ip_type {
        out.push(ip_type_code(ip_type));
    }
}

fn ip_type_code(ip_type: IpType) -> u8 {
    match ip_type {
        IpType::V4 => 1,
        IpType::V6 => 2,
        IpType::Unknown => 3,
    }
}

fn ip_type_of_code(code: u8) -> Option<IpType> {
    match code {
        1 => Some(IpType::V4),
        2 => Some(IpType::V6),
        3 => Some(IpType::Unknown),
        _ => None,
    }
}

/// Appends `n` as a LEB128 varint (7 bits a byte, low first).
pub(crate) fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A count-log record as read: its totals, in order, and for a layout-3
/// record the kinds whose coarser counters recovery derives from them.
#[derive(Debug, PartialEq)]
pub struct LogRecord {
    /// The totals (`count` and `total` both set to the stored total).
    pub totals: Vec<Increment>,
    /// Set for a layout-3 record: the totals are finest counters of these
    /// kinds, and each one's change adds to its coarser counters.
    pub derive: Option<FilterKinds>,
}

/// Reads a count-log record in layout 2 or 3, or (where `layout_1` says the
/// file may hold it) layout 1. `None` if the bytes are none of them.
pub fn read_log_record(bytes: &[u8], layout_1: bool) -> Option<LogRecord> {
    match bytes {
        [LAYOUT_3] | [LAYOUT_3, _] => None,
        [LAYOUT_3, mask, groups @ ..] => {
            let kinds = FilterKinds::from_mask(*mask)?;
            let totals = read_groups_2(groups)?;
            // A coarser counter here would be derived from as if finest.
            totals
                .iter()
                .all(|t| kinds.is_finest(&t.filter))
                .then_some(LogRecord {
                    derive: Some(kinds),
                    totals,
                })
        }
        _ => Some(LogRecord {
            totals: if layout_1 {
                read(bytes)?
            } else {
                read_layout_2(bytes)?
            },
            derive: None,
        }),
    }
}

/// Whether a count-log record starts with a record format tag (layouts 2
/// and 3): a layout-1 record starts with a minute, whose first byte never
/// is one.
pub fn is_tagged(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&LAYOUT_2) | Some(&LAYOUT_3))
}

/// Reads packed counters back from a file that may hold both layouts,
/// told apart by layout 2's format tag (`count` and `total` both set to the
/// stored total). `None` if the bytes are not packed counters.
fn read(bytes: &[u8]) -> Option<Vec<Increment>> {
    if is_layout_2(bytes) {
        read_layout_2(bytes)
    } else {
        read_layout_1(bytes)
    }
}

/// Whether a value starts with layout 2's format tag.
fn is_layout_2(bytes: &[u8]) -> bool {
    bytes.first() == Some(&LAYOUT_2)
}

/// Reads a layout-2 value, format tag first. `None` if the bytes are not
/// packed counters in layout 2.
fn read_layout_2(bytes: &[u8]) -> Option<Vec<Increment>> {
    match bytes.split_first() {
        // Never written without a group.
        Some((&LAYOUT_2, [])) => None,
        Some((&LAYOUT_2, rest)) => read_groups_2(rest),
        _ => None,
    }
}

/// Reads layout 2's groups (after the format byte).
fn read_groups_2(mut bytes: &[u8]) -> Option<Vec<Increment>> {
    let mut out = Vec::new();
    let mut minute = None;
    while !bytes.is_empty() {
        let head = take(&mut bytes, 1)?[0];
        let ad_len = (head & !MINUTE_FOLLOWS) as usize;
        let ad = AdId::parse(std::str::from_utf8(take(&mut bytes, ad_len)?).ok()?)?;
        if head & MINUTE_FOLLOWS != 0 {
            minute = Some(i64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?));
        }
        // The first group must name its minute.
        read_group(&mut bytes, minute?, ad, read_filter_2, &mut out)?;
    }
    Some(out)
}

/// Reads a group's counters (their count, then each one's filter, read
/// with the layout's `read_filter`, and total) onto `out`.
fn read_group(
    bytes: &mut &[u8],
    minute: i64,
    ad: AdId,
    read_filter: fn(&mut &[u8]) -> Option<Filter>,
    out: &mut Vec<Increment>,
) -> Option<()> {
    let counters = take(bytes, 1)?[0];
    if counters == 0 {
        return None;
    }
    for _ in 0..counters {
        let filter = read_filter(bytes)?;
        let total = read_varint(bytes)?;
        out.push(Increment {
            minute,
            ad,
            filter,
            count: total,
            total,
        });
    }
    Some(())
}

/// Reads a layout-2 filter off the front of `bytes`.
fn read_filter_2(bytes: &mut &[u8]) -> Option<Filter> {
    let tag = take(bytes, 1)?[0];
    if tag == TAG_EXTRAS {
        return read_key_text(bytes);
    }
    let high = tag >> TAG_COUNTRY_HIGH;
    if high > 0b11 || tag & TAG_EXTRAS != 0 {
        return None;
    }
    let country = if tag & TAG_COUNTRY != 0 {
        let low = take(bytes, 1)?[0];
        Some(Country::from_index(
            usize::from(high) << 8 | usize::from(low),
        )?)
    } else if high != 0 {
        return None;
    } else {
        None
    };
    let ip_type = match tag & TAG_IP_TYPE {
        0 => None,
        code => Some(ip_type_of_code(code)?),
    };
    Some(Filter {
        country,
        ip_type,
        ..Filter::ALL
    })
}

/// Reads a layout-1 value. `None` if the bytes are not packed counters in
/// layout 1.
pub fn read_layout_1(mut bytes: &[u8]) -> Option<Vec<Increment>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let minute = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let ad_len = take(&mut bytes, 1)?[0] as usize;
        let ad = AdId::parse(std::str::from_utf8(take(&mut bytes, ad_len)?).ok()?)?;
        read_group(&mut bytes, minute, ad, read_filter, &mut out)?;
    }
    Some(out)
}

/// Reads a layout-1 filter off the front of `bytes`.
pub(crate) fn read_filter(bytes: &mut &[u8]) -> Option<Filter> {
    let tag = take(bytes, 1)?[0];
    if tag == EXTRAS {
        return read_key_text(bytes);
    }
    if tag & !(COUNTRY | IP_TYPE) != 0 {
        return None;
    }
    let country = if tag & COUNTRY != 0 {
        Some(Country::parse(std::str::from_utf8(take(bytes, 2)?).ok()?)?)
    } else {
        None
    };
    let ip_type = if tag & IP_TYPE != 0 {
        Some(ip_type_of_code(take(bytes, 1)?[0])?)
    } else {
        None
    };
    Some(Filter {
        country,
        ip_type,
        ..Filter::ALL
    })
}

/// Reads a LEB128 varint off the front of `bytes`; `None` if cut or longer
/// than a u64.
pub(crate) fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = take(bytes, 1)?[0];
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// Splits the first `n` bytes off `bytes`.
pub(crate) fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dimension::{intern, ExtraCodes};
    use proptest::prelude::*;

    #[test]
    fn a_finest_only_record_keeps_the_finest_counters_and_names_the_kinds() {
        use crate::click::FilterKinds;
        let kinds = FilterKinds::of(&crate::DimensionSet::defaults()).unwrap();
        let ad = AdId::parse("ad-1").unwrap();
        let mut increments = Increments::default();
        increments.start_group(60_000, ad);
        for filter in filters() {
            increments.push(filter, 1);
        }
        let mut packed = PackedCounts::finest_only(kinds, 0);
        packed.push_increments(&increments);
        let bytes = packed.as_bytes();
        assert_eq!(bytes[..2], [LAYOUT_3, 0b1111]);
        assert!(is_tagged(bytes));
        let record = read_log_record(bytes, false).unwrap();
        assert_eq!(record.derive, Some(kinds));
        let finest: Vec<Filter> = filters()
            .into_iter()
            .filter(|f| kinds.is_finest(f))
            .collect();
        assert_eq!(finest.len(), 1, "one filter of the finest kind among them");
        assert_eq!(
            record.totals.iter().map(|t| t.filter).collect::<Vec<_>>(),
            finest
        );
        // Layout 2 still reads as itself, with nothing to derive.
        let mut every = PackedCounts::default();
        every.push_increments(&increments);
        let record = read_log_record(every.as_bytes(), true).unwrap();
        assert_eq!(
            (record.totals.len(), record.derive),
            (filters().len(), None)
        );
        // A coarser counter in a layout-3 record: refused.
        let mut coarse = PackedCounts::finest_only(kinds, 0);
        coarse.finest_only = None;
        coarse.bytes.extend_from_slice(&[LAYOUT_3, kinds.mask()]);
        coarse.push(60_000, &ad, &Filter::ALL, 1);
        assert_eq!(read_log_record(coarse.as_bytes(), false), None);
        // A mask no counted filters make, or no groups: refused.
        let mut bad = bytes.to_vec();
        bad[1] = 0b0110;
        assert_eq!(read_log_record(&bad, false), None);
        assert_eq!(read_log_record(&bytes[..2], false), None);
    }

    /// One filter of each shape: all, country, ip type, both, extras.
    pub(crate) fn filters() -> Vec<Filter> {
        vec![
            Filter::ALL,
            Filter {
                country: Country::parse("US"),
                ..Filter::ALL
            },
            Filter {
                ip_type: Some(IpType::Unknown),
                ..Filter::ALL
            },
            Filter {
                country: Country::parse("DE"),
                ip_type: Some(IpType::V6),
                ..Filter::ALL
            },
            Filter {
                country: Country::parse("FR"),
                extras: ExtraCodes::from_codes([intern("s_device", "a&b=%")]).unwrap(),
                ..Filter::ALL
            },
        ]
    }

    /// Packs `counters` in layout 1, as versions before layout 2 wrote the
    /// count log and the minute snapshots of `minute_counts`.
    pub(crate) fn layout_1(counters: &[(i64, AdId, Filter, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut group: Option<(i64, AdId, usize)> = None;
        for (minute, ad, filter, total) in counters {
            let at = match group {
                Some((m, a, at)) if m == *minute && a == *ad && out[at] < u8::MAX => at,
                _ => {
                    out.extend_from_slice(&minute.to_le_bytes());
                    out.push(ad.as_bytes().len() as u8);
                    out.extend_from_slice(ad.as_bytes());
                    out.push(0);
                    group = Some((*minute, *ad, out.len() - 1));
                    out.len() - 1
                }
            };
            out[at] += 1;
            push_filter(&mut out, filter);
            push_varint(&mut out, *total);
        }
        out
    }

    fn deltas(counters: &[(i64, AdId, Filter, u64)]) -> Vec<Increment> {
        counters
            .iter()
            .map(|(minute, ad, filter, total)| Increment {
                minute: *minute,
                ad: *ad,
                filter: *filter,
                count: *total,
                total: *total,
            })
            .collect()
    }

    /// Any counters over three ads, five filters and six minutes.
    fn counters() -> impl Strategy<Value = Vec<(i64, AdId, Filter, u64)>> {
        let ads = ["a", "b-2", &"x".repeat(64)].map(|a| AdId::parse(a).unwrap());
        let filters = filters();
        prop::collection::vec((-3i64..3, 0usize..3, 0usize..5, any::<u64>()), 0..600).prop_map(
            move |counters| {
                counters
                    .into_iter()
                    .map(|(minute, ad, filter, total)| {
                        (minute * 60_000, ads[ad], filters[filter], total)
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// Whatever the order and grouping, reading gives back every pushed
        /// counter in order, and pushing a batch's increments at once writes
        /// what pushing them one by one does.
        #[test]
        fn pushed_counters_read_back_in_order(
            counters in counters(),
            cuts in prop::collection::vec(0usize..600, 0..4),
        ) {
            let mut packed = PackedCounts::default();
            for (minute, ad, filter, total) in &counters {
                packed.push(*minute, ad, filter, *total);
            }
            let expected = deltas(&counters);
            prop_assert_eq!(packed.counters(), expected.len());
            let read_back = read(packed.as_bytes());
            if expected.is_empty() {
                // Nothing pushed, nothing written (the log stores no empty record).
                prop_assert!(packed.as_bytes().is_empty());
            } else {
                prop_assert_eq!(read_back, Some(expected.clone()));
            }
            // The same increments as batches, cut anywhere.
            let mut by_batch = PackedCounts::default();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(expected.len())).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts.into_iter().chain([expected.len()]) {
                by_batch.push_increments(&expected[from..cut].iter().copied().collect());
                from = cut;
            }
            prop_assert_eq!(by_batch.as_bytes(), packed.as_bytes());
            prop_assert_eq!(by_batch.counters(), packed.counters());
        }

        /// Records and snapshots of earlier versions (layout 1) still read
        /// back exactly.
        #[test]
        fn layout_1_values_read_back(counters in counters()) {
            prop_assert_eq!(read(&layout_1(&counters)), Some(deltas(&counters)));
        }

        /// A layout-1 value starts with its first minute, a multiple of
        /// 60,000 ms: never with layout 2's format byte.
        #[test]
        fn a_layout_1_value_never_starts_like_layout_2(minute in any::<i64>()) {
            let minute = minute / 60_000 * 60_000;
            prop_assert_ne!(minute.to_le_bytes()[0], LAYOUT_2);
        }
    }

    /// A group of more than 255 counters (a record's count byte) goes on
    /// in another group, both when pushed one by one and as increments.
    #[test]
    fn long_groups_split_alike() {
        let ad = AdId::parse("ad-long").unwrap();
        let counters: Vec<_> = (0..600u64)
            .map(|n| (60_000, ad, filters()[(n % 5) as usize], n))
            .collect();
        let mut one_by_one = PackedCounts::default();
        for (minute, ad, filter, total) in &counters {
            one_by_one.push(*minute, ad, filter, *total);
        }
        let mut grouped = PackedCounts::default();
        let increments: Increments = deltas(&counters).into_iter().collect();
        assert_eq!(increments.group_heads().len(), 1);
        grouped.push_increments(&increments);
        assert_eq!(grouped.as_bytes(), one_by_one.as_bytes());
        assert_eq!(read(grouped.as_bytes()), Some(deltas(&counters)));

        // A group left part-full by the previous batch, then a batch of two
        // adjacent groups of the same (minute, ad) past 255 in all.
        let (head, tail) = counters.split_at(200);
        let mut carried = PackedCounts::default();
        for (minute, ad, filter, total) in head {
            carried.push(*minute, ad, filter, *total);
        }
        let mut increments = Increments::default();
        for (n, (minute, ad, filter, total)) in tail.iter().enumerate() {
            if n == 0 || n == 150 {
                increments.start_group(*minute, *ad);
            }
            increments.push(*filter, 0);
            increments.counts_mut()[n].total = *total;
        }
        assert_eq!(increments.group_heads().len(), 2);
        carried.push_increments(&increments);
        assert_eq!(carried.as_bytes(), one_by_one.as_bytes());
    }

    #[test]
    fn layout_1_is_the_one_earlier_versions_wrote() {
        // Bytes as the previous version's `PackedCounts::push` wrote them.
        let ad = AdId::parse("ad").unwrap();
        let de_v6 = filters()[3];
        let written = layout_1(&[(60_000, ad, Filter::ALL, 300), (60_000, ad, de_v6, 2)]);
        let mut expected = 60_000i64.to_le_bytes().to_vec();
        expected.extend_from_slice(&[2, b'a', b'd', 2, 0, 0xAC, 0x02, 3, b'D', b'E', 2, 2]);
        assert_eq!(written, expected);
        let read_back = read(&written).unwrap();
        assert_eq!(read_back.len(), 2);
        assert_eq!((read_back[1].filter, read_back[1].total), (de_v6, 2));
    }

    #[test]
    fn layout_2_writes_a_minute_once_per_run_and_countries_in_ten_bits() {
        let (a, b) = (AdId::parse("a").unwrap(), AdId::parse("b").unwrap());
        let zz = Filter {
            country: Country::parse("ZZ"),
            ip_type: Some(IpType::V6),
            ..Filter::ALL
        };
        let mut packed = PackedCounts::default();
        packed.push(60_000, &a, &Filter::ALL, 1);
        packed.push(60_000, &b, &zz, 2);
        packed.push(0, &a, &Filter::ALL, 3);
        let mut expected = vec![LAYOUT_2, 0x80 | 1, b'a'];
        expected.extend_from_slice(&60_000i64.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 1]);
        // ZZ is index 675 = 0b10_1010_0011: high bits 2 in the tag.
        expected.extend_from_slice(&[1, b'b', 1, 2 | TAG_COUNTRY | 2 << 4, 0xA3, 2]);
        expected.extend_from_slice(&[0x80 | 1, b'a']);
        expected.extend_from_slice(&0i64.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 3]);
        assert_eq!(packed.as_bytes(), expected);
        let totals: Vec<(i64, u64)> = read(packed.as_bytes())
            .unwrap()
            .iter()
            .map(|d| (d.minute, d.total))
            .collect();
        assert_eq!(totals, vec![(60_000, 1), (60_000, 2), (0, 3)]);
    }

    #[test]
    fn every_country_round_trips_in_layout_2() {
        let ad = AdId::parse("ad").unwrap();
        let mut packed = PackedCounts::default();
        let mut expected = Vec::new();
        for index in 0..Country::COUNT {
            let country = Country::from_index(index).unwrap();
            assert_eq!(country.index(), index);
            let filter = Filter {
                country: Some(country),
                ..Filter::ALL
            };
            packed.push(0, &ad, &filter, index as u64);
            expected.push(filter);
        }
        assert_eq!(Country::from_index(Country::COUNT), None);
        let read_back: Vec<Filter> = read(packed.as_bytes())
            .unwrap()
            .iter()
            .map(|d| d.filter)
            .collect();
        assert_eq!(read_back, expected);
    }

    #[test]
    fn a_group_of_more_than_255_counters_is_split() {
        let ad = AdId::parse("ad").unwrap();
        let mut packed = PackedCounts::default();
        for total in 0..600 {
            packed.push(0, &ad, &Filter::ALL, total);
        }
        let read = read(packed.as_bytes()).unwrap();
        assert_eq!(read.len(), 600);
        assert!(read.iter().enumerate().all(|(i, d)| d.total == i as u64));
    }

    #[test]
    fn a_cut_or_damaged_value_is_refused() {
        let mut packed = PackedCounts::default();
        packed.push(0, &AdId::parse("ad").unwrap(), &Filter::ALL, 300);
        let bytes = packed.as_bytes().to_vec();
        // Format, head, "ad", minute, counters, tag, total (2 bytes).
        assert_eq!(bytes.len(), 1 + 1 + 2 + 8 + 1 + 1 + 2);
        for cut in 1..bytes.len() {
            assert_eq!(read(&bytes[..cut]), None, "cut at {cut}");
        }
        let damaged = |at: usize, byte: u8| {
            let mut damaged = bytes.clone();
            damaged[at] = byte;
            read(&damaged)
        };
        let (head, counters, tag) = (1, 12, 13);
        assert_eq!(damaged(tag, 0x80), None, "tag bits beyond the country's");
        assert_eq!(damaged(tag, TAG_EXTRAS | 1), None);
        assert_eq!(
            damaged(tag, 1 << TAG_COUNTRY_HIGH),
            None,
            "high bits without a country"
        );
        assert_eq!(damaged(counters, 0), None, "an empty group");
        assert_eq!(damaged(head, 2), None, "a first group without its minute");
        // Country index 3 << 8 | 0xAC = 940: past ZZ.
        assert_eq!(damaged(tag, TAG_COUNTRY | 3 << TAG_COUNTRY_HIGH), None);
    }
}
