//! Counter totals packed into one value: the count log's records and the
//! minute snapshots of a partition's redb file.
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
//! Layout: groups of counters sharing a minute and an ad (the window emits
//! an ad's increments of a minute together, one per filter, so the minute
//! and the ad are written once per group, not once per counter):
//! `minute: i64 LE, ad length: u8, ad bytes, counters: u8`, then per counter
//! a filter and its total as a LEB128 varint. A filter is a tag byte
//! (1: country, 2: ip type, 4: extra dimensions) then the country's two
//! letters if tagged, the ip type's code (1 v4, 2 v6, 3 unknown) if tagged,
//! and for extra dimensions the filter's key text ([`Filter::key`], which
//! names every dimension) behind a `u16` LE length. Extra dimensions are
//! stored as text because their in-memory codes are numbered per process.

use crate::batch::CountDelta;
use crate::click::{AdId, Country, Filter, IpType, AD_ID_MAX};

const COUNTRY: u8 = 1;
const IP_TYPE: u8 = 2;
const EXTRAS: u8 = 4;

/// Counter totals being packed.
#[derive(Default, Clone, Debug)]
pub struct PackedCounts {
    bytes: Vec<u8>,
    /// The open group: its minute, ad, and where its counter count is.
    group: Option<(i64, AdId, usize)>,
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

    /// Appends a counter's total.
    pub fn push(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) {
        if !filter.extras.is_empty() {
            self.push_slow(minute, ad, filter, total);
            return;
        }
        // The common case (built-in filters only) is assembled on the stack
        // and appended at once: one capacity check instead of one a field.
        let mut out = [0u8; 8 + 1 + AD_ID_MAX + 1 + 4 + 10];
        let mut len = 0;
        let at = match self.open_group(minute, ad) {
            Some(at) => at,
            None => {
                let id = ad.as_bytes();
                out[..8].copy_from_slice(&minute.to_le_bytes());
                // An AdId is at most 64 bytes: its length fits a byte.
                out[8] = id.len() as u8;
                out[9..9 + id.len()].copy_from_slice(id);
                len = 9 + id.len() + 1; // then the group's counter count
                let at = self.bytes.len() + len - 1;
                self.group = Some((minute, *ad, at));
                at
            }
        };
        out[len] = if filter.country.is_some() { COUNTRY } else { 0 }
            | if filter.ip_type.is_some() { IP_TYPE } else { 0 };
        len += 1;
        if let Some(country) = filter.country {
            out[len..len + 2].copy_from_slice(country.as_bytes());
            len += 2;
        }
        if let Some(ip_type) = filter.ip_type {
            out[len] = ip_type_code(ip_type);
            len += 1;
        }
        let mut n = total;
        while n >= 0x80 {
            out[len] = (n as u8) | 0x80;
            n >>= 7;
            len += 1;
        }
        out[len] = n as u8;
        len += 1;
        self.bytes.extend_from_slice(&out[..len]);
        self.bytes[at] += 1;
        self.counters += 1;
    }

    /// Where the open group's counter count is, if the counter joins it.
    #[inline]
    fn open_group(&self, minute: i64, ad: &AdId) -> Option<usize> {
        match &self.group {
            Some((m, a, at)) if *m == minute && a == ad && self.bytes[*at] < u8::MAX => Some(*at),
            _ => None,
        }
    }

    /// [`PackedCounts::push`] for any filter, field by field.
    fn push_slow(&mut self, minute: i64, ad: &AdId, filter: &Filter, total: u64) {
        let at = match self.open_group(minute, ad) {
            Some(at) => at,
            None => {
                self.bytes.extend_from_slice(&minute.to_le_bytes());
                let id = ad.as_bytes();
                self.bytes.push(id.len() as u8);
                self.bytes.extend_from_slice(id);
                self.bytes.push(0);
                let at = self.bytes.len() - 1;
                self.group = Some((minute, *ad, at));
                at
            }
        };
        self.bytes[at] += 1;
        self.counters += 1;
        push_filter(&mut self.bytes, filter);
        push_varint(&mut self.bytes, total);
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

pub(crate) fn push_filter(out: &mut Vec<u8>, filter: &Filter) {
    if !filter.extras.is_empty() {
        // A few dimensions of at most 64-byte values: far below 64 KiB.
        let key = filter.key();
        out.push(EXTRAS);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
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

/// Appends `n` as a LEB128 varint (7 bits a byte, low first).
pub(crate) fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads packed counters back (`count` and `total` both set to the stored
/// total). `None` if the bytes are not packed counters.
pub fn read(mut bytes: &[u8]) -> Option<Vec<CountDelta>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let minute = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().ok()?);
        let ad_len = take(&mut bytes, 1)?[0] as usize;
        let ad = AdId::parse(std::str::from_utf8(take(&mut bytes, ad_len)?).ok()?)?;
        let counters = take(&mut bytes, 1)?[0];
        if counters == 0 {
            return None;
        }
        for _ in 0..counters {
            let filter = read_filter(&mut bytes)?;
            let total = read_varint(&mut bytes)?;
            out.push(CountDelta {
                minute,
                ad,
                filter,
                count: total,
                total,
            });
        }
    }
    Some(out)
}

pub(crate) fn read_filter(bytes: &mut &[u8]) -> Option<Filter> {
    let tag = take(bytes, 1)?[0];
    if tag == EXTRAS {
        let len = u16::from_le_bytes(take(bytes, 2)?.try_into().ok()?) as usize;
        return Filter::from_key(std::str::from_utf8(take(bytes, len)?).ok()?);
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
        Some(match take(bytes, 1)?[0] {
            1 => IpType::V4,
            2 => IpType::V6,
            3 => IpType::Unknown,
            _ => return None,
        })
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

    proptest! {
        /// Whatever the order and grouping, reading gives back every pushed
        /// counter in order.
        #[test]
        fn pushed_counters_read_back_in_order(
            counters in prop::collection::vec((-3i64..3, 0usize..3, 0usize..5, any::<u64>()), 0..600)
        ) {
            let ads = ["a", "b-2", &"x".repeat(64)];
            let filters = filters();
            let mut packed = PackedCounts::default();
            let mut expected = Vec::new();
            for (minute, ad, filter, total) in counters {
                let (minute, ad) = (minute * 60_000, AdId::parse(ads[ad]).unwrap());
                packed.push(minute, &ad, &filters[filter], total);
                expected.push(CountDelta { minute, ad, filter: filters[filter], count: total, total });
            }
            prop_assert_eq!(packed.counters(), expected.len());
            prop_assert_eq!(read(packed.as_bytes()), Some(expected));
        }
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
        for cut in 1..bytes.len() {
            assert_eq!(read(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut damaged = bytes.clone();
        let tag = bytes.len() - 3;
        damaged[tag] = 8;
        assert_eq!(read(&damaged), None);
        let mut empty_group = bytes;
        empty_group[8 + 1 + 2] = 0;
        assert_eq!(read(&empty_group), None);
    }
}
