//! A click as the pipeline sees it after decoding: fixed-size, `Copy`-able
//! fields, so the hot path never allocates per click.

use crate::dimension::{self, ExtraCodes, MAX_EXTRA_DIMENSIONS};
use std::fmt;

/// Longest ad id the contract allows (`[A-Za-z0-9_-]{1,64}`).
pub const AD_ID_MAX: usize = 64;

/// Which bytes an ad id may hold (`[A-Za-z0-9_-]`): one table lookup per
/// byte instead of four range checks.
const AD_ID_BYTE: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    allowed
};

/// An ad id stored inline: no heap allocation, cheap to copy and hash.
/// Ordered as its text (ties in top-N break by ad id ascending).
#[derive(Clone, Copy)]
pub struct AdId {
    len: u8,
    bytes: [u8; AD_ID_MAX],
}

impl AdId {
    /// Accepts exactly the ids the contract allows: 1 to 64 of `[A-Za-z0-9_-]`.
    pub fn parse(text: &str) -> Option<AdId> {
        AdId::from_bytes(text.as_bytes())
    }

    /// [`AdId::parse`] on the raw bytes (the decoder's fast path reads
    /// bytes, never needing the text as `str`).
    pub fn from_bytes(raw: &[u8]) -> Option<AdId> {
        if raw.is_empty() || raw.len() > AD_ID_MAX || !raw.iter().all(|c| AD_ID_BYTE[*c as usize]) {
            return None;
        }
        let mut bytes = [0u8; AD_ID_MAX];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(AdId {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes ever enter an AdId (checked in `parse`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// The id's bytes (ASCII), without the UTF-8 check of [`AdId::as_str`].
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The id's bytes followed by zeros up to [`AD_ID_MAX`]: a copy of a
    /// fixed size is a few vector moves, where a copy of the id's own
    /// length is a `memcpy` call.
    #[inline]
    pub fn padded(&self) -> &[u8; AD_ID_MAX] {
        &self.bytes
    }
}

impl AdId {
    /// The `i`th 8 bytes of the id as one little-endian word (bytes past
    /// `len` are always zero, so the last word is zero-padded).
    #[inline]
    fn word(&self, i: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.bytes[i * 8..i * 8 + 8]);
        u64::from_le_bytes(word)
    }
}

/// Compares the used words only, first word first: typical ids are one or
/// two words, where a 65-byte `memcmp` call (or an iterator over the words,
/// which did not compile to a plain loop) cost more than the rest of a map
/// lookup.
impl PartialEq for AdId {
    #[inline]
    fn eq(&self, other: &AdId) -> bool {
        if self.len != other.len {
            return false;
        }
        (0..(self.len as usize).div_ceil(8)).all(|i| self.word(i) == other.word(i))
    }
}

impl Eq for AdId {}

/// Hashes the used words only, not the unused tail of the inline buffer.
/// The zero-padded words say the length too (no id byte is zero), so they
/// alone determine the id. Whole words, where hashing the text's bytes
/// copied its last partial word into place first: reading that word back
/// stalled on the copy (store forwarding), the window's main cost per click.
impl std::hash::Hash for AdId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for i in 0..(self.len as usize).div_ceil(8) {
            state.write_u64(self.word(i));
        }
    }
}

/// The order of the ids as text, compared a word at a time: no id byte is
/// zero and the buffer is zero past `len`, so the zero-padded words, read
/// big-endian, order as the texts do (a shorter prefix first). Sorting a
/// minute's counters for the feed compares ids ~800,000 times; through
/// `as_str` (a UTF-8 check) and `memcmp` that was most of the sort.
impl Ord for AdId {
    #[inline]
    fn cmp(&self, other: &AdId) -> std::cmp::Ordering {
        let words = (self.len.max(other.len) as usize).div_ceil(8);
        for i in 0..words {
            let (a, b) = (self.word(i).swap_bytes(), other.word(i).swap_bytes());
            if a != b {
                return a.cmp(&b);
            }
        }
        std::cmp::Ordering::Equal
    }
}

impl PartialOrd for AdId {
    fn partial_cmp(&self, other: &AdId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for AdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdId({})", self.as_str())
    }
}

impl fmt::Display for AdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An upper-case two-letter country code; `ZZ` when absent or invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Country([u8; 2]);

impl Country {
    /// The code used for a missing or invalid country.
    pub const UNKNOWN: Country = Country(*b"ZZ");

    /// Two ASCII letters, upper-cased; anything else is `None`.
    pub fn parse(text: &str) -> Option<Country> {
        Country::from_bytes(text.as_bytes())
    }

    /// [`Country::parse`] on raw bytes.
    pub fn from_bytes(text: &[u8]) -> Option<Country> {
        match text {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }

    /// The code's two ASCII letters.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; 2] {
        &self.0
    }

    /// Number of distinct codes: [`Country::index`] is below it.
    pub const COUNT: usize = 26 * 26;

    /// The code as a number in `0..COUNT` (`AA` is 0, `ZZ` the last), for
    /// tables indexed by country instead of hashed.
    pub fn index(&self) -> usize {
        // Only upper-case letters ever enter a Country (checked in
        // `from_bytes`); the `%` keeps any other byte in range regardless.
        let letter = |b: u8| usize::from(b.wrapping_sub(b'A')) % 26;
        letter(self.0[0]) * 26 + letter(self.0[1])
    }

    /// The code whose [`Country::index`] is `index`; `None` past the last.
    pub fn from_index(index: usize) -> Option<Country> {
        if index >= Country::COUNT {
            return None;
        }
        Some(Country([
            b'A' + (index / 26) as u8,
            b'A' + (index % 26) as u8,
        ]))
    }
}

/// The `ip_type` dimension: which address family the click's `ip` was.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum IpType {
    /// An IPv4 address.
    V4,
    /// An IPv6 address.
    V6,
    /// No `ip`, or text that is not an address.
    Unknown,
}

impl IpType {
    /// Parses a query value: `v4`, `v6` or `unknown`.
    pub fn parse(text: &str) -> Option<IpType> {
        match text {
            "v4" => Some(IpType::V4),
            "v6" => Some(IpType::V6),
            "unknown" => Some(IpType::Unknown),
            _ => None,
        }
    }

    /// The value as shown in filters.
    pub fn as_str(&self) -> &'static str {
        match self {
            IpType::V4 => "v4",
            IpType::V6 => "v6",
            IpType::Unknown => "unknown",
        }
    }
}

/// A combination of dimension values a count is kept under: `{}` for all
/// clicks, `{country: US}`, `{country: US, ip_type: v6}`, `{device: ios}`, …
///
/// `Copy` and 20 bytes: extra-dimension values are codes of the process-wide
/// table in [`crate::dimension`], turned into text only for storage keys and
/// answers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Filter {
    /// The country, when the filter constrains it.
    pub country: Option<Country>,
    /// The ip type, when the filter constrains it.
    pub ip_type: Option<IpType>,
    /// The extra-dimension values the filter constrains.
    pub extras: ExtraCodes,
}

/// Escapes the characters that separate a filter key's parts (`&`, `=`) and
/// the escape character itself, so any value round-trips. Built-in values
/// never contain them, so keys written before extra dimensions are unchanged.
fn escape_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            '&' => out.push_str("%26"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

fn unescape_value(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let c = match rest.get(at + 1..at + 3)? {
            "25" => '%',
            "26" => '&',
            "3D" => '=',
            _ => return None,
        };
        out.push(c);
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl Filter {
    /// The filter that matches every click.
    pub const ALL: Filter = Filter {
        country: None,
        ip_type: None,
        extras: ExtraCodes::NONE,
    };

    /// The filter's dimensions as (name, value), names in alphabetical order.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(c) = self.country {
            out.push(("country".to_string(), c.as_str().to_string()));
        }
        if let Some(t) = self.ip_type {
            out.push(("ip_type".to_string(), t.as_str().to_string()));
        }
        for code in self.extras.iter() {
            // Every code in a filter came from the table: it always resolves.
            if let Some((name, value)) = dimension::resolve(code) {
                out.push((name.to_string(), value.to_string()));
            }
        }
        out.sort();
        out
    }

    /// The canonical text used as the storage key: dimension names in
    /// alphabetical order, `name=value` joined by `&` (`""` for
    /// [`Filter::ALL`]); `%`, `&` and `=` in values are escaped as `%25`,
    /// `%26`, `%3D`.
    pub fn key(&self) -> String {
        if self.extras.is_empty() {
            // The hot common case, without the sort of `entries`.
            let mut parts = Vec::with_capacity(2);
            if let Some(c) = self.country {
                parts.push(format!("country={}", c.as_str()));
            }
            if let Some(t) = self.ip_type {
                parts.push(format!("ip_type={}", t.as_str()));
            }
            return parts.join("&");
        }
        let mut key = String::new();
        for (name, value) in self.entries() {
            if !key.is_empty() {
                key.push('&');
            }
            key.push_str(&name);
            key.push('=');
            escape_value(&value, &mut key);
        }
        key
    }

    /// The inverse of [`Filter::key`]. Names other than the built-ins are
    /// read as extra dimensions whether or not they are declared now, so a
    /// file stays readable after a dimension is dropped from the configuration.
    pub fn from_key(key: &str) -> Option<Filter> {
        let mut filter = Filter::ALL;
        let mut codes = Vec::new();
        for part in key.split('&').filter(|p| !p.is_empty()) {
            match part.split_once('=')? {
                ("country", v) => filter.country = Some(Country::parse(v)?),
                ("ip_type", v) => filter.ip_type = Some(IpType::parse(v)?),
                (name, v) => {
                    dimension::check_name(name).ok()?;
                    codes.push(dimension::intern(name, &unescape_value(v)?));
                }
            }
        }
        filter.extras = ExtraCodes::from_codes(codes)?;
        Some(filter)
    }
}

/// A filter as a query states it: extra-dimension values as text. The
/// partition that answers resolves it to a [`Filter`] ([`FilterQuery::resolve`]),
/// after its admitted values are loaded, so a query never adds codes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FilterQuery {
    /// The country, when the query constrains it.
    pub country: Option<Country>,
    /// The ip type, when the query constrains it.
    pub ip_type: Option<IpType>,
    /// (dimension, value) of the extra dimensions the query constrains.
    pub extras: Vec<(String, String)>,
}

impl FilterQuery {
    /// The filter counted under, or `None` when some value was never stored
    /// (so nothing can match: counts are 0).
    pub fn resolve(&self) -> Option<Filter> {
        let mut codes = Vec::with_capacity(self.extras.len());
        for (name, value) in &self.extras {
            codes.push(dimension::lookup(name, value)?);
        }
        Some(Filter {
            country: self.country,
            ip_type: self.ip_type,
            extras: ExtraCodes::from_codes(codes)?,
        })
    }

    /// The query's dimensions as (name, value), names in alphabetical order, for answers.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(2 + self.extras.len());
        if let Some(c) = self.country {
            out.push(("country".to_string(), c.as_str().to_string()));
        }
        if let Some(t) = self.ip_type {
            out.push(("ip_type".to_string(), t.as_str().to_string()));
        }
        out.extend(self.extras.iter().cloned());
        out.sort();
        out
    }
}

/// One valid click, decoded from its JetStream message.
#[derive(Clone, Debug)]
pub struct Click {
    /// 128-bit hash of (`ad_id`, `click_id`): the dedup key (the strings are not kept).
    pub id: u128,
    /// The ad clicked.
    pub ad: AdId,
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// The `country` dimension.
    pub country: Country,
    /// The `ip_type` dimension.
    pub ip_type: IpType,
    /// Value codes of the declared extra dimensions, in configuration order
    /// (0 where none is declared); set by ingest once the value is admitted.
    pub extras: [u32; MAX_EXTRA_DIMENSIONS],
    /// Stream sequence of the message, for rejects and tracing.
    pub seq: u64,
    /// Set by dedup when the id was already counted: the window skips the
    /// click. Repeats are marked, not removed, so no later click moves (and
    /// `Batch::payloads` stays parallel to `Batch::clicks`).
    pub repeat: bool,
}

/// Which of the four built-in filter kinds (no dimension, `country`,
/// `ip_type`, both) a partition counts, when one of them, the *finest*,
/// keeps every dimension the others keep: then each click is counted once
/// under the finest kind, and every coarser counter is a sum of finest ones.
///
/// The count log stores only the finest counters' totals where the counted
/// sets allow it (see [`crate::store::packed_counts`]), and recovery derives
/// the coarser counters from them ([`FilterKinds::coarser`]). Sets with
/// extra dimensions are left out: their bits name dimensions by
/// configuration position, which a restart may reorder.
///
/// A kind is `country as u8 * 2 + ip_type as u8`; bit `k` of the mask is
/// set when kind `k` is counted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FilterKinds {
    mask: u8,
    /// The finest counted kind.
    finest: u8,
}

impl FilterKinds {
    /// The kinds `sets` count, if none has extra dimensions, no two are
    /// the same (a set listed twice counts its clicks twice, so coarser
    /// counters would not be sums of finest ones), and one of them keeps
    /// every dimension the others keep.
    pub fn of(sets: &[crate::DimensionSet]) -> Option<FilterKinds> {
        if sets.iter().any(|s| s.extra != 0) {
            return None;
        }
        let mask = sets.iter().fold(0u8, |mask, s| {
            mask | 1 << (u8::from(s.country) * 2 + u8::from(s.ip_type))
        });
        if mask.count_ones() as usize != sets.len() {
            return None;
        }
        FilterKinds::from_mask(mask)
    }

    /// The kinds of a stored mask, if it is one [`FilterKinds::of`] makes.
    pub fn from_mask(mask: u8) -> Option<FilterKinds> {
        if mask == 0 || mask >= 16 {
            return None;
        }
        let counted = || (0..4u8).filter(move |k| mask & 1 << k != 0);
        let finest = counted().find(|fine| counted().all(|k| k & fine == k))?;
        Some(FilterKinds { mask, finest })
    }

    /// The mask, as stored.
    pub fn mask(self) -> u8 {
        self.mask
    }

    /// Whether `filter` is a counter of the finest kind.
    #[inline]
    pub fn is_finest(self, filter: &Filter) -> bool {
        kind_of(filter) == self.finest && filter.extras.is_empty()
    }

    /// The coarser counters a finest counter adds to: its projection onto
    /// every other counted kind.
    pub fn coarser(self, fine: Filter) -> impl Iterator<Item = Filter> {
        (0..4u8)
            .filter(move |k| self.mask & 1 << k != 0 && *k != self.finest)
            .map(move |k| Filter {
                country: if k & 2 != 0 { fine.country } else { None },
                ip_type: if k & 1 != 0 { fine.ip_type } else { None },
                extras: ExtraCodes::NONE,
            })
    }
}

/// A built-in filter's kind (see [`FilterKinds`]).
#[inline]
fn kind_of(filter: &Filter) -> u8 {
    u8::from(filter.country.is_some()) * 2 + u8::from(filter.ip_type.is_some())
}

impl Click {
    /// The click's values restricted to the dimensions a filter set keeps.
    #[inline]
    pub fn project(&self, set: crate::DimensionSet) -> Filter {
        Filter {
            country: set.country.then_some(self.country),
            ip_type: set.ip_type.then_some(self.ip_type),
            extras: if set.extra == 0 {
                ExtraCodes::NONE
            } else {
                ExtraCodes::pick(&self.extras, set.extra)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_kinds_need_a_finest_set_without_extra_dimensions() {
        use crate::DimensionSet;
        let set = |country, ip_type, extra| DimensionSet {
            country,
            ip_type,
            extra,
        };
        let kinds = FilterKinds::of(&DimensionSet::defaults()).unwrap();
        assert_eq!(kinds.mask(), 0b1111);
        let fine = Filter {
            country: Country::parse("US"),
            ip_type: Some(IpType::V6),
            ..Filter::ALL
        };
        assert!(kinds.is_finest(&fine));
        assert!(!kinds.is_finest(&Filter::ALL));
        let coarser: Vec<Filter> = kinds.coarser(fine).collect();
        assert_eq!(
            coarser,
            vec![
                Filter::ALL,
                Filter {
                    ip_type: Some(IpType::V6),
                    ..Filter::ALL
                },
                Filter {
                    country: Country::parse("US"),
                    ..Filter::ALL
                },
            ]
        );
        // Country alone and all clicks: country is the finest.
        let kinds = FilterKinds::of(&[set(false, false, 0), set(true, false, 0)]).unwrap();
        let us = Filter {
            country: Country::parse("US"),
            ..Filter::ALL
        };
        assert!(kinds.is_finest(&us));
        assert_eq!(kinds.coarser(us).collect::<Vec<_>>(), vec![Filter::ALL]);
        // Country and ip type, but never both: no finest kind.
        assert_eq!(
            FilterKinds::of(&[set(true, false, 0), set(false, true, 0)]),
            None
        );
        // Extra dimensions, or a set listed twice: left out.
        assert_eq!(FilterKinds::of(&[set(true, true, 1)]), None);
        assert_eq!(
            FilterKinds::of(&[set(true, true, 0), set(true, true, 0)]),
            None
        );
        assert_eq!(FilterKinds::from_mask(0), None);
        assert_eq!(FilterKinds::from_mask(0b0110), None);
        assert_eq!(FilterKinds::from_mask(16), None);
    }

    proptest::proptest! {
        /// Ids order as their texts do (prefixes, word boundaries, any length).
        #[test]
        fn ad_ids_order_as_text(a in "[A-Za-z0-9_-]{1,64}", b in "[A-Za-z0-9_-]{1,64}", cut in 0usize..64) {
            let (x, y) = (AdId::parse(&a).unwrap(), AdId::parse(&b).unwrap());
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            let prefix = &a[..cut.clamp(1, a.len())];
            let p = AdId::parse(prefix).unwrap();
            proptest::prop_assert_eq!(p.cmp(&x), prefix.cmp(a.as_str()));
            proptest::prop_assert_eq!(x.cmp(&p), a.as_str().cmp(prefix));
        }
    }

    #[test]
    fn ad_ids_follow_the_contract() {
        assert_eq!(
            AdId::parse("ad-1_X").map(|a| a.to_string()),
            Some("ad-1_X".into())
        );
        assert!(AdId::parse("").is_none());
        assert!(AdId::parse("ad.1").is_none());
        assert!(AdId::parse(&"a".repeat(64)).is_some());
        assert!(AdId::parse(&"a".repeat(65)).is_none());
        assert!(AdId::parse("é").is_none());
        assert!(
            AdId::parse("ad-11") < AdId::parse("ad-3"),
            "ordered as text, not by length"
        );
    }

    #[test]
    fn filter_keys_round_trip() {
        let f = Filter {
            country: Country::parse("us"),
            ip_type: Some(IpType::V6),
            ..Filter::ALL
        };
        assert_eq!(
            f.key(),
            "country=US&ip_type=v6",
            "as files before extras hold it"
        );
        assert_eq!(Filter::from_key(&f.key()), Some(f));
        assert_eq!(Filter::from_key(""), Some(Filter::ALL));
        assert_eq!(Filter::from_key("country=USA"), None);
        assert_eq!(Filter::from_key("=US"), None);
        assert_eq!(Filter::from_key("2x=US"), None);
        assert_eq!(Filter::from_key("k_device=a%2"), None, "bad escape");
    }

    #[test]
    fn filters_stay_small() {
        // The counters' hot path copies and compares filters per click and set.
        assert_eq!(std::mem::size_of::<Filter>(), 20);
    }

    #[test]
    fn filter_keys_with_extra_dimensions_round_trip() {
        let odd = "a&b=c%d é";
        let f = Filter {
            country: Country::parse("DE"),
            extras: ExtraCodes::from_codes([
                dimension::intern("k_placement", "top"),
                dimension::intern("k_device", odd),
            ])
            .unwrap(),
            ..Filter::ALL
        };
        assert_eq!(
            f.key(),
            "country=DE&k_device=a%26b%3Dc%25d é&k_placement=top",
            "names alphabetical, separators escaped"
        );
        assert_eq!(Filter::from_key(&f.key()), Some(f));
        let asked = FilterQuery {
            country: Country::parse("de"),
            ip_type: None,
            extras: vec![
                ("k_placement".into(), "top".into()),
                ("k_device".into(), odd.into()),
            ],
        };
        assert_eq!(asked.resolve(), Some(f));
        assert_eq!(
            asked.entries(),
            f.entries(),
            "answers echo the same filter either way"
        );
        let unseen = FilterQuery {
            extras: vec![("k_device".into(), "never-counted".into())],
            ..FilterQuery::default()
        };
        assert_eq!(unseen.resolve(), None);
        assert_eq!(
            Filter::from_key("k_a=1&k_b=2&k_c=3&k_d=4&k_e=5"),
            None,
            "more extra dimensions than a filter holds"
        );
    }

    proptest::proptest! {
        /// Any value text round-trips through the storage key.
        #[test]
        fn any_extra_value_round_trips(value in "\\PC{0,20}") {
            let f = Filter {
                extras: ExtraCodes::from_codes([dimension::intern("k_any", &value)]).unwrap(),
                ..Filter::ALL
            };
            proptest::prop_assert_eq!(Filter::from_key(&f.key()), Some(f));
        }
    }
}
