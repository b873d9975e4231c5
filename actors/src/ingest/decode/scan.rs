//! The fast path of decoding: one pass over the bytes of a usual payload,
//! straight to a validated [`Click`].
//!
//! Publishers send flat objects of plain strings and integers, almost always
//! valid. This reader walks such a payload once, byte by byte only where it
//! must: string bodies are searched eight bytes at a time for the few bytes
//! that end or complicate them (see [`special_in`]), the known keys are
//! matched as one 8-byte word each and lead straight to their value's
//! reading, integers are read eight digits at a time (see
//! [`leading_digits`]), and each rule of SPEC §1 is checked on the field as
//! it is read. Nothing is allocated.
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
use std::borrow::Cow;

/// The valid click a usual payload holds, with the raw values of the
/// declared extra `fields`; `None` to let the serde path decide.
#[cfg(test)]
pub(super) fn click<'p>(
    subject_ad: &str,
    seq: u64,
    payload: &'p [u8],
    fields: &[String],
) -> Option<(Click, RawExtras<'p>)> {
    let mut extras = RawExtras::default();
    click_into(Some(subject_ad), seq, payload, fields, &mut extras).map(|c| (c, extras))
}

/// The valid click a usual payload holds, the raw values of the declared
/// extra `fields` written to `extras` (which mean nothing if it declines);
/// `None` to let the serde path decide. The click is returned, not a
/// (click, extras) pair: a pair of 224 bytes was copied at every return.
/// `subject_ad` is `None` for a payload read without its subject (a file):
/// then any valid ad id is accepted.
pub(super) fn click_into<'p>(
    subject_ad: Option<&str>,
    seq: u64,
    payload: &'p [u8],
    fields: &[String],
    extras: &mut RawExtras<'p>,
) -> Option<Click> {
    let mut r = Scanner {
        bytes: payload,
        at: 0,
    };
    let mut read = Fields::default();
    r.expect(b'{')?;
    if r.peek_past_space()? == b'}' {
        r.at += 1;
    } else {
        r.expect(b'"')?;
        loop {
            read.key_and_value(&mut r, subject_ad, fields, extras)?;
            if !r.next_key()? {
                break;
            }
        }
    }
    r.skip_space();
    if r.at != payload.len() {
        return None;
    }
    read.into_click(subject_ad, seq)
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

/// A known key with its closing quote, as [`Fields::key_and_value`] compares it:
/// its first (up to) eight bytes as a little-endian word, the mask of those
/// bytes, and its length.
const fn key_word(key: &[u8]) -> (u64, u64, usize) {
    let mut word = 0u64;
    let mut mask = 0u64;
    let mut i = 0;
    while i < key.len() && i < 8 {
        word |= (key[i] as u64) << (8 * i);
        mask |= 0xff << (8 * i);
        i += 1;
    }
    (word, mask, key.len())
}

// `click_id"` is nine bytes: its word is the first eight, the quote is
// checked on its own.
const CLICK_ID: (u64, u64, usize) = key_word(b"click_id");
const AD_ID: (u64, u64, usize) = key_word(b"ad_id\"");
const TS: (u64, u64, usize) = key_word(b"ts\"");
const USER_ID: (u64, u64, usize) = key_word(b"user_id\"");
const IP: (u64, u64, usize) = key_word(b"ip\"");
const COUNTRY: (u64, u64, usize) = key_word(b"country\"");

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
    /// Whether `ad_id` was found equal to the subject's ad id as it was read.
    ad_is_subject: bool,
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
    /// Reads a key whose opening quote is consumed, the `:` after it, and
    /// its value, checking what can be checked on the field alone.
    ///
    /// The usual keys are recognised by their bytes (and their closing
    /// quote, so `"ts2"` is not `"ts"`), without searching for the end of
    /// the string first: the next eight bytes are compared as one word with
    /// the one known key that starts with the same letter (two for `c`).
    /// Each match leads straight to its value's reading: naming the key and
    /// then dispatching on the name cost a second jump per field.
    #[inline(always)]
    fn key_and_value(
        &mut self,
        r: &mut Scanner<'a>,
        subject_ad: Option<&str>,
        declared: &[String],
        extras: &mut RawExtras<'a>,
    ) -> Option<()> {
        let rest = r.bytes.get(r.at..)?;
        let Some(head) = rest.first_chunk::<9>() else {
            // Near the end of the payload: only the short keys fit.
            let key = r.short_key(rest)?;
            r.colon()?;
            return self.field(r, key, subject_ad, declared, extras);
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[..8]);
        let word = u64::from_le_bytes(word);
        let mut past = |len: usize| {
            r.at += len;
            r.colon()
        };
        match head[0] {
            b'c' if word == CLICK_ID.0 && head[8] == b'"' => {
                past(9)?;
                self.click_id(r)
            }
            b'c' if word == COUNTRY.0 => {
                past(COUNTRY.2)?;
                self.country(r)
            }
            b'a' if word & AD_ID.1 == AD_ID.0 => {
                past(AD_ID.2)?;
                self.ad_id(r, subject_ad)
            }
            b't' if word & TS.1 == TS.0 => {
                past(TS.2)?;
                once(&mut self.ts, r.integer()?)
            }
            b'u' if word == USER_ID.0 => {
                past(USER_ID.2)?;
                self.user_id(r)
            }
            b'i' if word & IP.1 == IP.0 => {
                past(IP.2)?;
                self.ip(r)
            }
            _ => {
                let key = r.string_body()?;
                r.colon()?;
                self.other_field(r, key, declared, extras)
            }
        }
    }

    /// Reads the value of `key` (the scanner is at its first byte): what
    /// [`Fields::key_and_value`] does near the end of a payload.
    fn field(
        &mut self,
        r: &mut Scanner<'a>,
        key: Key<'a>,
        subject_ad: Option<&str>,
        declared: &[String],
        extras: &mut RawExtras<'a>,
    ) -> Option<()> {
        match key {
            Key::ClickId => self.click_id(r),
            Key::AdId => self.ad_id(r, subject_ad),
            Key::Ts => once(&mut self.ts, r.integer()?),
            Key::UserId => self.user_id(r),
            Key::Ip => self.ip(r),
            Key::Country => self.country(r),
            Key::Other(key) => self.other_field(r, key, declared, extras),
        }
    }

    #[inline(always)]
    fn click_id(&mut self, r: &mut Scanner<'a>) -> Option<()> {
        let id = r.string()?;
        if !(1..=MAX_ID_CHARS).contains(&id.chars()?) {
            return None;
        }
        once(&mut self.click_id, id)
    }

    #[inline(always)]
    fn ad_id(&mut self, r: &mut Scanner<'a>, subject_ad: Option<&str>) -> Option<()> {
        // Almost always the subject's ad id: compared in place.
        // `into_click` checks its bytes, so a subject holding a quote
        // can never make this accept.
        let Some(subject_ad) = subject_ad else {
            return once(&mut self.ad_id, r.string()?);
        };
        let text = match r.exact_string(subject_ad.as_bytes()) {
            Some(text) => {
                self.ad_is_subject = true;
                text
            }
            None => r.string()?,
        };
        once(&mut self.ad_id, text)
    }

    #[inline(always)]
    fn user_id(&mut self, r: &mut Scanner<'a>) -> Option<()> {
        if std::mem::replace(&mut self.user_id, true) || r.string()?.chars()? > MAX_ID_CHARS {
            return None;
        }
        Some(())
    }

    #[inline(always)]
    fn ip(&mut self, r: &mut Scanner<'a>) -> Option<()> {
        let ip = r.string()?;
        // A non-ASCII `ip` is no address, but serde would still
        // refuse it if it were not UTF-8.
        let kind = if ip.ascii {
            super::ip_text::classify(ip.raw)
        } else {
            ip.as_str().map(|_| IpType::Unknown)?
        };
        once(&mut self.ip, kind)
    }

    #[inline(always)]
    fn country(&mut self, r: &mut Scanner<'a>) -> Option<()> {
        let text = r.string()?;
        if !text.ascii {
            text.as_str()?;
        }
        once(
            &mut self.country,
            Country::from_bytes(text.raw).unwrap_or(Country::UNKNOWN),
        )
    }

    /// The value of a key adclick does not always read: a declared extra
    /// field, or one to skip. Kept out of [`Fields::field`], whose usual
    /// keys are the hot path.
    #[inline(never)]
    fn other_field(
        &mut self,
        r: &mut Scanner<'a>,
        key: Text<'a>,
        declared: &[String],
        extras: &mut RawExtras<'a>,
    ) -> Option<()> {
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

    /// The click, if every required field is there and the ad id is the
    /// subject's; `None` otherwise (serde then words the error).
    fn into_click(self, subject_ad: Option<&str>, seq: u64) -> Option<Click> {
        let (click_id, ad_text) = (self.click_id?, self.ad_id?);
        if let Some(subject_ad) = subject_ad {
            if !self.ad_is_subject && ad_text.raw != subject_ad.as_bytes() {
                return None;
            }
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
    #[inline(always)]
    fn skip_space(&mut self) {
        // Compact JSON has none: every byte above the space is not one.
        if self.bytes.get(self.at).is_some_and(|b| *b > b' ') {
            return;
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    fn peek_past_space(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte` after optional whitespace.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek_past_space()? == byte).then(|| self.at += 1)
    }

    /// The `:` after a key, and the whitespace around it.
    #[inline(always)]
    fn colon(&mut self) -> Option<()> {
        if self.bytes.get(self.at) == Some(&b':') {
            self.at += 1;
        } else {
            self.expect(b':')?;
        }
        self.skip_space();
        Some(())
    }

    /// After a value: `true` past a `,` and the next key's opening quote,
    /// `false` past the object's closing `}`; `None` for anything else.
    #[inline(always)]
    fn next_key(&mut self) -> Option<bool> {
        // Compact JSON: `,"` straight after the value.
        if self.bytes.get(self.at..self.at + 2) == Some(b",\"") {
            self.at += 2;
            return Some(true);
        }
        match self.peek_past_space()? {
            b',' => {
                self.at += 1;
                self.expect(b'"')?;
                Some(true)
            }
            b'}' => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A key whose opening quote is consumed, through its closing quote,
    /// near the end of the payload (fewer than nine bytes left): a known
    /// key if one fits, else any key, read as a string.
    fn short_key(&mut self, rest: &[u8]) -> Option<Key<'a>> {
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
    #[inline(always)]
    fn string(&mut self) -> Option<Text<'a>> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        self.string_body()
    }

    /// The rest of a string whose opening quote is consumed, through the
    /// closing quote. Declines on escapes and control characters.
    #[inline(always)]
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
    ///
    /// Digits are read eight at a time (a `ts` has 13): see [`leading_digits`].
    fn integer(&mut self) -> Option<i64> {
        let start = self.at;
        let mut value: u64 = 0;
        let mut words = 0;
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let (digits, read) = leading_digits(u64::from_le_bytes(word));
            value = value * POWERS_OF_TEN[digits] + read;
            self.at += digits;
            words += 1;
            if digits < 8 {
                return self.integer_end(start, value);
            }
            if words == 2 {
                // 16 digits and maybe more: past what surely fits.
                return self.long_integer(start);
            }
        }
        // The payload's last bytes: one at a time (at most 7 digits here,
        // after at most 8 above).
        while let Some(d @ b'0'..=b'9') = self.bytes.get(self.at) {
            value = value * 10 + u64::from(d - b'0');
            self.at += 1;
        }
        self.integer_end(start, value)
    }

    /// Checks the digits read from `start` as JSON's integer grammar and
    /// what follows them.
    fn integer_end(&mut self, start: usize, value: u64) -> Option<i64> {
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes.get(self.at) {
            return None;
        }
        // At most 15 digits reach here: always fits.
        i64::try_from(value).ok()
    }

    /// [`Scanner::integer`] from 16 digits on: one at a time, with overflow checks.
    #[cold]
    fn long_integer(&mut self, start: usize) -> Option<i64> {
        self.at = start;
        let mut value: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.bytes.get(self.at) {
            value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.at += 1;
        }
        if self.bytes[start] == b'0' {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes.get(self.at) {
            return None;
        }
        Some(value)
    }

    /// A string value that is exactly `expected`, or `None` with nothing
    /// consumed. `expected` must hold no byte that [`special_in`] stops at
    /// (the caller checks the bytes read): then the quote after it is the
    /// string's end, found without searching.
    #[inline(always)]
    fn exact_string(&mut self, expected: &[u8]) -> Option<Text<'a>> {
        let rest = self.bytes.get(self.at..)?;
        let end = 1 + expected.len();
        if rest.first() == Some(&b'"')
            && rest.get(1..end) == Some(expected)
            && rest.get(end) == Some(&b'"')
        {
            self.at += end + 1;
            return Some(Text {
                raw: &rest[1..end],
                ascii: true,
            });
        }
        None
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

/// 10ⁿ for the digit counts [`leading_digits`] returns.
const POWERS_OF_TEN: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `word` (little-endian: the first byte is
/// the lowest) are decimal digits before the first that is not, and the
/// number they write.
///
/// `word - '0'…` makes each digit byte its value and any other byte 10 or
/// more (or sets its high bit); adding 0x76 sets the high bit of each byte
/// that is 10 or more. A borrow or carry only reaches bytes *after* a
/// non-digit, so the lowest marked byte is always exact, and only it is
/// used. The value is then folded pairwise: digit pairs, fours, eight.
fn leading_digits(word: u64) -> (usize, u64) {
    let d = word.wrapping_sub(ONES * u64::from(b'0'));
    let not_digits = (d | d.wrapping_add(ONES * 0x76)) & HIGH_BITS;
    let count = (not_digits.trailing_zeros() / 8) as usize;
    if count == 0 {
        return (0, 0);
    }
    // Move the digits to the top bytes: the zero bytes shifted in below are
    // leading zeros of the number.
    let v = d << (8 * (8 - count));
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    let v = (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff;
    (count, v)
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
#[inline(always)]
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
#[inline(always)]
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

    proptest! {
        /// Eight bytes at a time read what a byte-by-byte reading reads.
        #[test]
        fn leading_digits_agree_with_a_byte_reading(bytes in any::<[u8; 8]>(), digits in "[0-9]{0,8}") {
            // Random bytes, and digit runs of every length followed by them.
            let mut mixed = bytes;
            mixed[..digits.len()].copy_from_slice(digits.as_bytes());
            for word in [bytes, mixed] {
                let count = word.iter().take_while(|b| b.is_ascii_digit()).count();
                let value = word[..count].iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
                prop_assert_eq!(leading_digits(u64::from_le_bytes(word)), (count, value));
            }
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
