//! The fast path of decoding: one pass over the bytes of a usual payload,
//! straight to a validated [`Click`].
//!
//! Publishers send flat objects of plain strings and integers, almost always
//! valid. This reader walks such a payload once, byte by byte only where it
//! must: string bodies are searched eight bytes at a time for the few bytes
//! that end or complicate them (see [`special_in`]), the known keys are
//! matched as byte strings, and each rule of SPEC §1 is checked on the field
//! as it is read. Nothing is allocated.
//!
//! It *declines* (returns `None`) whenever it is not certain, and the caller
//! then runs the serde_json path, which decides and words every error:
//!
//! - anything invalid (a missing or malformed field, a mismatched ad id, …):
//!   the fast path only ever accepts, so rejects keep serde's reasons;
//! - anything unusual but valid: escapes, control characters, nested values,
//!   negative or fractional numbers, `null` in a field adclick reads, a
//!   repeated field.
//!
//! So the two paths accept the same clicks and read them the same way; the
//! property tests in `decode.rs` hold this reader to the serde path.

use super::{click_key, RawExtras, MAX_ID_CHARS};
use crate::click::{AdId, Click, Country, IpType};
use crate::dimension::MAX_EXTRA_DIMENSIONS;
use bytes::Bytes;
use std::borrow::Cow;

/// The valid click a usual payload holds, with the raw values of the
/// declared extra `fields`; `None` to let the serde path decide.
pub(super) fn click<'p>(
    subject_ad: &str,
    seq: u64,
    payload: &'p Bytes,
    fields: &[String],
) -> Option<(Click, RawExtras<'p>)> {
    let mut r = Scanner {
        bytes: payload,
        at: 0,
    };
    let mut read = Fields::default();
    let mut extras = RawExtras::default();
    r.expect(b'{')?;
    if r.peek_past_space()? == b'}' {
        r.at += 1;
    } else {
        loop {
            r.expect(b'"')?;
            let key = r.key()?;
            r.expect(b':')?;
            r.skip_space();
            read.field(&mut r, key, fields, &mut extras)?;
            match r.peek_past_space()? {
                b',' => r.at += 1,
                b'}' => {
                    r.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    r.skip_space();
    if r.at != payload.len() {
        return None;
    }
    read.into_click(subject_ad, seq).map(|c| (c, extras))
}

/// A string's raw bytes (between the quotes, no escapes) and whether they
/// are all ASCII (then the character count is the length, and no UTF-8
/// check is needed).
#[derive(Clone, Copy)]
struct Text<'a> {
    raw: &'a [u8],
    ascii: bool,
}

impl<'a> Text<'a> {
    /// The text as `str`; `None` if it is not UTF-8.
    fn as_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.raw).ok()
    }

    /// Characters, as serde_json's `str` would count them; `None` if not UTF-8.
    fn chars(self) -> Option<usize> {
        if self.ascii {
            return Some(self.raw.len());
        }
        Some(self.as_str()?.chars().count())
    }
}

/// An object key: one of the fields adclick always reads, or any other.
#[derive(Clone, Copy)]
enum Key<'a> {
    ClickId,
    AdId,
    Ts,
    UserId,
    Ip,
    Country,
    Other(Text<'a>),
}

/// The keys adclick always reads, each with its closing quote: a key that
/// starts with one of these byte strings *is* that key.
const KNOWN_KEYS: [(&[u8], Key<'static>); 6] = [
    (b"click_id\"", Key::ClickId),
    (b"ad_id\"", Key::AdId),
    (b"ts\"", Key::Ts),
    (b"user_id\"", Key::UserId),
    (b"ip\"", Key::Ip),
    (b"country\"", Key::Country),
];

/// The fields of SPEC §1 as read so far. A field read twice declines
/// (serde_json's "duplicate field" error).
#[derive(Default)]
struct Fields<'a> {
    click_id: Option<Text<'a>>,
    ad_id: Option<Text<'a>>,
    ts: Option<i64>,
    user_id: bool,
    ip: Option<IpType>,
    country: Option<Country>,
    /// Declared extra fields already read.
    extras_seen: [bool; MAX_EXTRA_DIMENSIONS],
}

/// Stores `value` unless the field was read before.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

impl<'a> Fields<'a> {
    /// Reads the value of `key` (the scanner is at its first byte),
    /// checking what can be checked on the field alone.
    fn field(
        &mut self,
        r: &mut Scanner<'a>,
        key: Key<'a>,
        declared: &[String],
        extras: &mut RawExtras<'a>,
    ) -> Option<()> {
        match key {
            Key::ClickId => {
                let id = r.string()?;
                if !(1..=MAX_ID_CHARS).contains(&id.chars()?) {
                    return None;
                }
                once(&mut self.click_id, id)
            }
            Key::AdId => once(&mut self.ad_id, r.string()?),
            Key::Ts => once(&mut self.ts, r.integer()?),
            Key::UserId => {
                if std::mem::replace(&mut self.user_id, true) || r.string()?.chars()? > MAX_ID_CHARS
                {
                    return None;
                }
                Some(())
            }
            Key::Ip => {
                let ip = r.string()?;
                // A non-ASCII `ip` is no address, but serde would still
                // refuse it if it were not UTF-8.
                let kind = if ip.ascii {
                    IpType::classify(ip.raw)
                } else {
                    ip.as_str().map(|_| IpType::Unknown)?
                };
                once(&mut self.ip, kind)
            }
            Key::Country => {
                let text = r.string()?;
                if !text.ascii {
                    text.as_str()?;
                }
                once(
                    &mut self.country,
                    Country::from_bytes(text.raw).unwrap_or(Country::UNKNOWN),
                )
            }
            Key::Other(key) => {
                // Keys are strings serde checks for UTF-8, read or not.
                let name = if key.ascii {
                    key.raw
                } else {
                    key.as_str()?.as_bytes()
                };
                match declared.iter().position(|f| f.as_bytes() == name) {
                    Some(i) if i < MAX_EXTRA_DIMENSIONS => {
                        if std::mem::replace(&mut self.extras_seen[i], true) {
                            return None;
                        }
                        extras[i] = r.extra_value()?;
                        Some(())
                    }
                    _ => r.ignored_value(),
                }
            }
        }
    }

    /// The click, if every required field is there and the ad id is the
    /// subject's; `None` otherwise (serde then words the error).
    fn into_click(self, subject_ad: &str, seq: u64) -> Option<Click> {
        let (click_id, ad_text) = (self.click_id?, self.ad_id?);
        if ad_text.raw != subject_ad.as_bytes() {
            return None;
        }
        let ad = AdId::from_bytes(ad_text.raw)?;
        Some(Click {
            id: click_key(ad_text.raw, click_id.raw),
            ad,
            ts: self.ts?,
            country: self.country.unwrap_or(Country::UNKNOWN),
            ip_type: self.ip.unwrap_or(IpType::Unknown),
            extras: [0; MAX_EXTRA_DIMENSIONS],
            seq,
            repeat: false,
        })
    }
}

/// A cursor over the payload.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    /// JSON's four whitespace bytes.
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek_past_space(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte` after optional whitespace.
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek_past_space()? == byte).then(|| self.at += 1)
    }

    /// A key whose opening quote is consumed, through its closing quote.
    ///
    /// The usual keys are recognised by their bytes (and their closing
    /// quote, so `"ts2"` is not `"ts"`), without searching for the end of
    /// the string first; any other key is read as a string.
    fn key(&mut self) -> Option<Key<'a>> {
        let rest = self.bytes.get(self.at..)?;
        let first = *rest.first()?;
        for (bytes, key) in KNOWN_KEYS {
            if bytes[0] == first && rest.starts_with(bytes) {
                self.at += bytes.len();
                return Some(key);
            }
        }
        self.string_body().map(Key::Other)
    }

    /// A string value: `"`, a body, `"`.
    fn string(&mut self) -> Option<Text<'a>> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        self.string_body()
    }

    /// The rest of a string whose opening quote is consumed, through the
    /// closing quote. Declines on escapes and control characters.
    fn string_body(&mut self) -> Option<Text<'a>> {
        let start = self.at;
        let mut at = start;
        let mut ascii = true;
        loop {
            at = special_in(self.bytes, at)?;
            match self.bytes[at] {
                b'"' => break,
                // Escapes and raw control characters: serde's business.
                b'\\' | 0..=0x1f => return None,
                // Non-ASCII: allowed, checked as UTF-8 where it matters.
                _ => {
                    ascii = false;
                    at += 1;
                }
            }
        }
        self.at = at + 1;
        Some(Text {
            raw: &self.bytes[start..at],
            ascii,
        })
    }

    /// A non-negative integer that fits `i64`, as JSON writes it (no `+`,
    /// no leading zero). A fraction or exponent declines: serde reads a float.
    fn integer(&mut self) -> Option<i64> {
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.bytes.get(self.at) {
            value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes.get(self.at) {
            return None;
        }
        Some(value)
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self) -> Option<()> {
        let rest = self.bytes.get(self.at..)?;
        let word: &[u8] = [&b"true"[..], b"false", b"null"]
            .into_iter()
            .find(|word| rest.starts_with(word))?;
        self.at += word.len();
        Some(())
    }

    /// The value of a field adclick does not read: a string, an integer or
    /// a literal; anything nested or fractional declines.
    fn ignored_value(&mut self) -> Option<()> {
        match self.bytes.get(self.at)? {
            b'"' => {
                let text = self.string()?;
                // serde would not check this text; declining is merely safe.
                (text.ascii || text.as_str().is_some()).then_some(())
            }
            b'0'..=b'9' => self.integer().map(drop),
            _ => self.literal(),
        }
    }

    /// A declared extra field's value: the text of a string, `None` for an
    /// integer or a literal (as the serde path reads them).
    fn extra_value(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.bytes.get(self.at)? {
            b'"' => Some(Some(Cow::Borrowed(self.string()?.as_str()?))),
            b'0'..=b'9' => self.integer().map(|_| None),
            _ => self.literal().map(|()| None),
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that may be a quote, a backslash, a
/// control character (< 0x20) or non-ASCII (≥ 0x80).
///
/// The usual bit tricks: `x - 0x01…` borrows out of a byte exactly when it
/// is 0, so `(x - 0x01…) & !x` marks zero bytes (of `word ^ '"'…`: quotes);
/// `word - 0x20…` marks bytes below 0x20 the same way. A borrow can carry
/// into the bytes *after* a marked one and mark them falsely, never into
/// the ones before: the lowest mark is always exact, and it is the only
/// one used.
fn special_bytes(word: u64) -> u64 {
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x;
    let quotes = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslashes = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    let controls = word.wrapping_sub(ONES * 0x20);
    (quotes | backslashes | controls | word) & HIGH_BITS
}

/// The index of the first byte at or after `from` that is `"`, `\`, a
/// control character or non-ASCII; `None` if there is none.
///
/// Eight bytes at a time, where a byte-by-byte loop would branch on every
/// byte of every string: most strings here end within one or two words.
fn special_in(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let marks = special_bytes(u64::from_le_bytes(word));
        if marks != 0 {
            // Little-endian: the lowest mark is the earliest byte.
            return Some(at + (marks.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter()
        .position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f | 0x80..=0xff))
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time search finds what a byte-by-byte search finds.
        #[test]
        fn special_in_agrees_with_a_byte_scan(bytes in any::<Vec<u8>>(), from in 0usize..40) {
            let naive = bytes
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, b)| matches!(b, b'"' | b'\\' | 0..=0x1f | 0x80..=0xff))
                .map(|(i, _)| i);
            prop_assert_eq!(special_in(&bytes, from), naive);
        }
    }

    #[test]
    fn special_in_finds_each_kind_in_every_lane() {
        for lane in 0..20 {
            for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
                let mut bytes = vec![b'a'; 20];
                bytes[lane] = special;
                assert_eq!(special_in(&bytes, 0), Some(lane), "{special:#x} at {lane}");
            }
        }
        // Bytes next to the special ones in value are not special.
        assert_eq!(special_in(b" !#[]^\x7f\x7f ~ x", 0), None);
    }
}
