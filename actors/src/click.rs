//! A click as the pipeline sees it after decoding: fixed-size, `Copy`-able
//! fields, so the hot path never allocates per click.

use bytes::Bytes;
use std::fmt;

/// Longest ad id the contract allows (`[A-Za-z0-9_-]{1,64}`).
pub const AD_ID_MAX: usize = 64;

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
        let raw = text.as_bytes();
        if raw.is_empty()
            || raw.len() > AD_ID_MAX
            || !raw
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
        {
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
}

impl AdId {
    /// The id as little-endian 8-byte words, the last one zero-padded
    /// (bytes past `len` are always zero).
    #[inline]
    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.bytes[..(self.len as usize).div_ceil(8) * 8]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
    }
}

/// Compares the used words only: typical ids are one or two words, where a
/// 65-byte `memcmp` call cost more than the rest of a map lookup.
impl PartialEq for AdId {
    #[inline]
    fn eq(&self, other: &AdId) -> bool {
        self.len == other.len && self.words().eq(other.words())
    }
}

impl Eq for AdId {}

/// Hashes the id's text only, not the unused tail of the inline buffer.
impl std::hash::Hash for AdId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..self.len as usize]);
    }
}

impl Ord for AdId {
    fn cmp(&self, other: &AdId) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
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
        match text.as_bytes() {
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
    /// Classifies the `ip` field of a click.
    pub fn of(ip: Option<&str>) -> IpType {
        match ip.map(str::parse::<std::net::IpAddr>) {
            Some(Ok(std::net::IpAddr::V4(_))) => IpType::V4,
            Some(Ok(std::net::IpAddr::V6(_))) => IpType::V6,
            _ => IpType::Unknown,
        }
    }

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
/// clicks, `{country: US}`, `{country: US, ip_type: v6}`, …
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Filter {
    /// The country, when the filter constrains it.
    pub country: Option<Country>,
    /// The ip type, when the filter constrains it.
    pub ip_type: Option<IpType>,
}

impl Filter {
    /// The filter that matches every click.
    pub const ALL: Filter = Filter {
        country: None,
        ip_type: None,
    };

    /// The canonical text used as the storage key: dimension names in
    /// alphabetical order, `name=value` joined by `&` (`""` for [`Filter::ALL`]).
    pub fn key(&self) -> String {
        let mut parts = Vec::with_capacity(2);
        if let Some(c) = self.country {
            parts.push(format!("country={}", c.as_str()));
        }
        if let Some(t) = self.ip_type {
            parts.push(format!("ip_type={}", t.as_str()));
        }
        parts.join("&")
    }

    /// The inverse of [`Filter::key`].
    pub fn from_key(key: &str) -> Option<Filter> {
        let mut filter = Filter::ALL;
        for part in key.split('&').filter(|p| !p.is_empty()) {
            match part.split_once('=')? {
                ("country", v) => filter.country = Some(Country::parse(v)?),
                ("ip_type", v) => filter.ip_type = Some(IpType::parse(v)?),
                _ => return None,
            }
        }
        Some(filter)
    }

    /// The filter's dimensions as JSON object entries, for responses.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(c) = self.country {
            out.push(("country", c.as_str().to_string()));
        }
        if let Some(t) = self.ip_type {
            out.push(("ip_type", t.as_str().to_string()));
        }
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
    /// Stream sequence of the message, for rejects and tracing.
    pub seq: u64,
    /// The original payload (shared, not copied), kept so a too-late click can
    /// be republished as it came.
    pub payload: Bytes,
}

impl Click {
    /// The click's values restricted to the dimensions a filter set keeps.
    pub fn project(&self, set: crate::DimensionSet) -> Filter {
        Filter {
            country: set.country.then_some(self.country),
            ip_type: set.ip_type.then_some(self.ip_type),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        assert_eq!(f.key(), "country=US&ip_type=v6");
        assert_eq!(Filter::from_key(&f.key()), Some(f));
        assert_eq!(Filter::from_key(""), Some(Filter::ALL));
        assert_eq!(Filter::from_key("contry=US"), None);
    }

    #[test]
    fn ip_types() {
        assert_eq!(IpType::of(Some("10.0.0.1")), IpType::V4);
        assert_eq!(IpType::of(Some("::1")), IpType::V6);
        assert_eq!(IpType::of(Some("nope")), IpType::Unknown);
        assert_eq!(IpType::of(None), IpType::Unknown);
    }
}
