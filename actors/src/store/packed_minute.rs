//! A whole minute's counters packed by filter: the minute snapshots of a
//! partition's redb file (table `minute_snapshots`).
//!
//! The reducer keeps a minute's counters in one table per filter, so a
//! snapshot walks them filter by filter. Writing them in that order, the
//! filter is written once per section instead of once per counter, and the
//! minute not at all (it is the row's key): about 10 bytes a counter (ad id
//! and total) where the count log's (minute, ad) groups take ~30 when every
//! counter starts a group. A reader that wants one filter (history queries)
//! skips the other sections by their length, without decoding them.
//!
//! Layout: `sections: u32 LE` (so a value cut at a section's end is
//! refused too), then the sections, each `filter` (as in layout 1 of
//! [`crate::store::packed_counts`]), `counters: u32 LE`, `length: u32 LE`
//! (bytes of the counters that follow),
//! then per counter `ad length: u8, ad bytes, total` (LEB128 varint). The
//! row's value is the writing commit's stream sequence (`u64 LE`) followed
//! by these bytes.

use crate::batch::Increment;
use crate::click::{AdId, Filter};
use crate::store::packed_counts::{push_filter, push_varint, read_filter, read_varint, take};

/// Bytes of a section's header after its filter: counters and length.
const HEADER: usize = 8;

/// A minute's counters being packed, section by section.
#[derive(Default, Clone, Debug)]
pub struct PackedMinute {
    bytes: Vec<u8>,
    /// The open section: its filter, and where its header starts.
    open: Option<(Filter, usize)>,
    counters: usize,
}

impl PackedMinute {
    /// Empty, with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> PackedMinute {
        PackedMinute {
            bytes: Vec::with_capacity(bytes),
            ..PackedMinute::default()
        }
    }

    /// Appends a counter. Counters of one filter should come together: each
    /// change of filter starts a section (correct either way, smaller so).
    pub fn push(&mut self, filter: &Filter, ad: &AdId, total: u64) {
        let header = match &self.open {
            Some((open, at)) if open == filter => *at,
            _ => {
                if self.bytes.is_empty() {
                    self.bytes.extend_from_slice(&[0; 4]);
                }
                add_u32(&mut self.bytes[..4], 1);
                push_filter(&mut self.bytes, filter);
                let at = self.bytes.len();
                self.bytes.extend_from_slice(&[0; HEADER]);
                self.open = Some((*filter, at));
                at
            }
        };
        let id_len = ad.as_bytes().len();
        // An AdId is at most 64 bytes: its length fits a byte.
        self.bytes.push(id_len as u8);
        // Copied padded, then cut to the id's length: a copy of a fixed
        // size is a few moves, a copy of the id's length a `memcpy` call.
        let end = self.bytes.len() + id_len;
        self.bytes.extend_from_slice(ad.padded());
        self.bytes.truncate(end);
        push_varint(&mut self.bytes, total);
        // The section's counters and length, rewritten whole: one 8-byte
        // store instead of two read-modify-writes.
        let mut fields = [0; HEADER];
        fields.copy_from_slice(&self.bytes[header..header + HEADER]);
        let counters =
            u32::from_le_bytes([fields[0], fields[1], fields[2], fields[3]]).wrapping_add(1);
        let length = (self.bytes.len() - header - HEADER) as u32;
        fields[..4].copy_from_slice(&counters.to_le_bytes());
        fields[4..].copy_from_slice(&length.to_le_bytes());
        self.bytes[header..header + HEADER].copy_from_slice(&fields);
        self.counters += 1;
    }

    /// The packed sections (without the sequence the row puts first).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Counters pushed.
    pub fn counters(&self) -> usize {
        self.counters
    }
}

fn add_u32(field: &mut [u8], n: u32) {
    let mut word = [0; 4];
    word.copy_from_slice(field);
    field.copy_from_slice(&u32::from_le_bytes(word).wrapping_add(n).to_le_bytes());
}

/// One section: its filter, counter count and packed counters.
struct Section<'a> {
    filter: Filter,
    counters: u32,
    packed: &'a [u8],
}

/// Splits packed sections; `None` if the bytes are not sections.
fn sections(mut bytes: &[u8]) -> Option<Vec<Section<'_>>> {
    if bytes.is_empty() {
        // A minute without counters.
        return Some(Vec::new());
    }
    let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
    let mut out = Vec::with_capacity(count.min(64) as usize);
    for _ in 0..count {
        let filter = read_filter(&mut bytes)?;
        let counters = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let length = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let packed = take(&mut bytes, length as usize)?;
        out.push(Section {
            filter,
            counters,
            packed,
        });
    }
    bytes.is_empty().then_some(out)
}

/// Calls `each` for every counter of a section; `None` if it is damaged.
fn for_each_in(section: &Section<'_>, mut each: impl FnMut(AdId, u64)) -> Option<()> {
    let mut bytes = section.packed;
    for _ in 0..section.counters {
        let len = take(&mut bytes, 1)?[0] as usize;
        let ad = AdId::from_bytes(take(&mut bytes, len)?)?;
        each(ad, read_varint(&mut bytes)?);
    }
    bytes.is_empty().then_some(())
}

/// Every counter of the packed minute (`count` and `total` both set to the
/// stored total); `None` if the bytes are not a packed minute.
pub fn read(minute: i64, bytes: &[u8]) -> Option<Vec<Increment>> {
    let sections = sections(bytes)?;
    let mut out = Vec::with_capacity(sections.iter().map(|s| s.counters as usize).sum());
    for section in &sections {
        for_each_in(section, |ad, total| {
            out.push(Increment {
                minute,
                ad,
                filter: section.filter,
                count: total,
                total,
            })
        })?;
    }
    Some(out)
}

/// Calls `each(ad, total)` for the counters of `filter` only, skipping the
/// other sections unread; `None` if the bytes are not a packed minute.
pub fn for_each_of_filter(
    bytes: &[u8],
    filter: &Filter,
    mut each: impl FnMut(&AdId, u64),
) -> Option<()> {
    for section in sections(bytes)? {
        if section.filter == *filter {
            for_each_in(&section, |ad, total| each(&ad, total))?;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::packed_counts::tests::filters;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the order of filters, every counter reads back, in order,
        /// and a one-filter read gives exactly that filter's counters.
        #[test]
        fn pushed_counters_read_back(
            counters in prop::collection::vec((0usize..5, 0usize..3, any::<u64>()), 0..400)
        ) {
            let ads = ["a", "b-2", &"x".repeat(64)];
            let filters = filters();
            let mut packed = PackedMinute::default();
            let mut expected = Vec::new();
            for (filter, ad, total) in counters {
                let ad = AdId::parse(ads[ad]).unwrap();
                packed.push(&filters[filter], &ad, total);
                expected.push(Increment { minute: 60_000, ad, filter: filters[filter], count: total, total });
            }
            prop_assert_eq!(packed.counters(), expected.len());
            prop_assert_eq!(read(60_000, packed.as_bytes()), Some(expected.clone()));
            for filter in &filters {
                let mut got = Vec::new();
                prop_assert!(for_each_of_filter(packed.as_bytes(), filter, |ad, n| got.push((*ad, n))).is_some());
                let want: Vec<(AdId, u64)> = expected
                    .iter()
                    .filter(|d| d.filter == *filter)
                    .map(|d| (d.ad, d.total))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn a_filter_is_written_once_per_section() {
        let mut packed = PackedMinute::default();
        for i in 0..100 {
            packed.push(&Filter::ALL, &AdId::parse(&format!("ad{i:02}")).unwrap(), 1);
        }
        // Section count, tag, header, then 100 × (length byte, 4 id bytes,
        // 1 total byte).
        assert_eq!(packed.as_bytes().len(), 4 + 1 + HEADER + 100 * 6);
    }

    #[test]
    fn a_cut_or_damaged_value_is_refused() {
        let mut packed = PackedMinute::default();
        packed.push(&Filter::ALL, &AdId::parse("ad").unwrap(), 300);
        packed.push(&filters()[1], &AdId::parse("b").unwrap(), 1);
        let bytes = packed.as_bytes().to_vec();
        for cut in 1..bytes.len() {
            assert_eq!(read(0, &bytes[..cut]), None, "cut at {cut}");
        }
        let mut damaged = bytes.clone();
        damaged[4 + 1] = 2; // one counter more than the section holds
        assert_eq!(read(0, &damaged), None);
        let mut bad_id = bytes;
        bad_id[4 + 1 + HEADER + 1] = b'!';
        assert_eq!(read(0, &bad_id), None);
        assert_eq!(read(0, &[]), Some(Vec::new()));
    }
}
