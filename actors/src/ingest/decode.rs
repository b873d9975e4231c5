//! Payload → [`Click`]: the validation rules of SPEC §1, as a pure function.

use crate::click::{AdId, Click, Country, IpType};
use crate::dimension::MAX_EXTRA_DIMENSIONS;
use bytes::Bytes;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// Longest `click_id` and `user_id`, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// The JSON fields adclick reads; unknown fields are ignored. Strings are
/// borrowed from the payload unless they contain escapes.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Wire<'a> {
    #[serde(borrow)]
    click_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ad_id: Option<Cow<'a, str>>,
    ts: Option<serde_json::Number>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    country: Option<Cow<'a, str>>,
    /// The declared extra dimensions' fields, in configuration order: the
    /// text when the field is a string, `None` when absent or not a string.
    /// Read by [`ExtrasSeed`] on the serde path (the field names are configuration).
    #[serde(skip)]
    extras: RawExtras<'a>,
}

/// The raw values of the declared extra dimensions of one click, in
/// configuration order: the text when the field is a string, `None` when it
/// is absent or not a string (a number, `null`, an array, …).
pub type RawExtras<'a> = [Option<Cow<'a, str>>; MAX_EXTRA_DIMENSIONS];

/// Reads the declared extra fields of a click object with serde: strings are
/// kept (borrowed when unescaped), other values are skipped as `None`, and a
/// declared field given twice is an error, as for the fields adclick always reads.
struct ExtrasSeed<'f> {
    fields: &'f [String],
}

/// One declared field's value: the text of a string, `None` for anything else.
struct MaybeText<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for MaybeText<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeText(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeText(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(MaybeText(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeText(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeText(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeText(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeText(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeText(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeText(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> DeserializeSeed<'de> for ExtrasSeed<'_> {
    type Value = RawExtras<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ExtrasSeed<'_> {
    type Value = RawExtras<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a click object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = RawExtras::default();
        let mut seen = [false; MAX_EXTRA_DIMENSIONS];
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.fields.iter().position(|f| *f == *key) {
                Some(i) if i < MAX_EXTRA_DIMENSIONS => {
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
                    }
                    out[i] = map.next_value::<MaybeText<'de>>()?.0;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// The serde_json reading of a payload: the fields adclick always reads, then
/// the declared extra fields (a second pass, only on this rare path and only
/// when extra dimensions are declared).
fn read_slow<'a>(payload: &'a [u8], fields: &[String]) -> Result<Wire<'a>, serde_json::Error> {
    let mut wire: Wire = serde_json::from_slice(payload)?;
    if !fields.is_empty() {
        let mut de = serde_json::Deserializer::from_slice(payload);
        wire.extras = ExtrasSeed { fields }.deserialize(&mut de)?;
        de.end()?;
    }
    Ok(wire)
}

/// Decodes and validates one message. `subject_ad` is the last token of the
/// message's subject; the payload's `ad_id` must equal it. The error is the
/// human sentence that goes into the reject header.
pub fn decode(subject_ad: &str, seq: u64, payload: &Bytes) -> Result<Click, String> {
    decode_with(subject_ad, seq, payload, &[]).map(|(click, _)| click)
}

/// Like [`decode`], and also reads the declared extra fields `fields`
/// (top-level, at most [`MAX_EXTRA_DIMENSIONS`]). Their values never make a
/// click invalid (a non-string reads as `None`), except that a declared field
/// given twice is, as for every field adclick reads. The click's
/// `extras` codes are left 0: ingest sets them once the values are admitted.
pub fn decode_with<'p>(
    subject_ad: &str,
    seq: u64,
    payload: &'p Bytes,
    fields: &[String],
) -> Result<(Click, RawExtras<'p>), String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "payload is {} bytes, more than the {MAX_PAYLOAD}-byte limit",
            payload.len()
        ));
    }
    // Publishers send flat objects: read those directly, and leave anything
    // unusual (escapes, nesting, floats) to serde_json, whose errors we quote.
    let wire: Wire = match flat::read(payload, fields) {
        Some(wire) => wire,
        None => match read_slow(payload, fields) {
            Ok(wire) => wire,
            Err(e) => return Err(format!("payload is not a valid click JSON object: {e}")),
        },
    };
    let click_id = wire.click_id.ok_or("missing required field click_id")?;
    let chars = click_id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS {
        return Err(format!(
            "click_id must be 1 to {MAX_ID_CHARS} characters, got {chars}"
        ));
    }
    let ad_text = wire.ad_id.ok_or("missing required field ad_id")?;
    let ad = AdId::parse(&ad_text).ok_or("ad_id must match [A-Za-z0-9_-]{1,64}")?;
    if ad.as_str() != subject_ad {
        return Err(format!(
            "ad_id `{}` does not match the subject's ad id `{subject_ad}`",
            ad.as_str()
        ));
    }
    let ts_number = wire.ts.ok_or("missing required field ts")?;
    let ts = ts_number
        .as_i64()
        .ok_or_else(|| format!("ts must be an integer of epoch milliseconds, got {ts_number}"))?;
    if ts < 0 {
        return Err(format!("ts must not be negative, got {ts}"));
    }
    if let Some(user) = &wire.user_id {
        if user.chars().count() > MAX_ID_CHARS {
            return Err(format!("user_id is longer than {MAX_ID_CHARS} characters"));
        }
    }
    let click = Click {
        id: click_key(ad.as_str(), &click_id),
        ad,
        ts,
        country: wire
            .country
            .as_deref()
            .and_then(Country::parse)
            .unwrap_or(Country::UNKNOWN),
        ip_type: IpType::of(wire.ip.as_deref()),
        extras: [0; MAX_EXTRA_DIMENSIONS],
        seq,
        payload: payload.clone(),
    };
    Ok((click, wire.extras))
}

/// The dedup key of a click: a 128-bit hash of its ad id and click id.
///
/// The ad id is part of it because dedup runs per partition and partitions
/// are chosen by ad: a click id reused by two different ads is two clicks,
/// whichever partitions the ads happen to share.
pub fn click_key(ad_id: &str, click_id: &str) -> u128 {
    // One-shot hashing of the joined bytes equals streaming them (xxh3's
    // definition), and skips the streaming state's setup: ~3x faster here.
    let (ad, click) = (ad_id.as_bytes(), click_id.as_bytes());
    let mut joined = [0u8; 256];
    if ad.len() + 1 + click.len() <= joined.len() {
        joined[..ad.len()].copy_from_slice(ad);
        joined[ad.len() + 1..ad.len() + 1 + click.len()].copy_from_slice(click);
        return xxhash_rust::xxh3::xxh3_128(&joined[..ad.len() + 1 + click.len()]);
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(ad_id.as_bytes());
    hasher.update(&[0]); // ad ids never contain NUL: the pair is unambiguous
    hasher.update(click_id.as_bytes());
    hasher.digest128()
}

/// A reader for the flat JSON objects publishers send, without serde.
///
/// It accepts a strict subset of JSON: one object whose values are strings
/// without escapes, non-negative integers, `true`, `false` or `null` (the
/// last three only in fields adclick ignores or declared extra fields). On
/// anything else it returns `None` and the caller asks serde_json, so the two
/// paths accept, reject and read exactly the same payloads (a property test
/// checks it).
mod flat {
    use super::{RawExtras, Wire, MAX_EXTRA_DIMENSIONS};
    use std::borrow::Cow;

    struct Reader<'a> {
        /// The payload. Outside strings only ASCII is accepted, and each
        /// string is checked to be UTF-8 as it is read.
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.at).copied()
        }

        fn skip_space(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
                self.at += 1;
            }
        }

        fn eat(&mut self, byte: u8) -> Option<()> {
            self.skip_space();
            (self.peek()? == byte).then(|| self.at += 1)
        }

        /// A string without escapes or control characters, opening quote next.
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.at;
            let rest = &self.bytes[start..];
            let len = rest.iter().position(|b| *b == b'"')?;
            let raw = &rest[..len];
            // Escapes and control characters: serde_json's business.
            if raw
                .iter()
                .fold(false, |bad, b| bad | (*b == b'\\') | (*b < 0x20))
            {
                return None;
            }
            self.at = start + len + 1;
            std::str::from_utf8(raw).ok()
        }

        fn text(&mut self) -> Option<Cow<'a, str>> {
            self.string().map(Cow::Borrowed)
        }

        /// A non-negative integer that fits i64, written as JSON allows.
        fn integer(&mut self) -> Option<i64> {
            self.skip_space();
            let digits = &self.bytes[self.at..];
            let len = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            // `01` is not JSON; `1.5`, `1e3` are floats: serde_json decides.
            if len == 0 || (len > 1 && digits[0] == b'0') {
                return None;
            }
            if let Some(b'.' | b'e' | b'E') = digits.get(len) {
                return None;
            }
            let mut value: i64 = 0;
            for d in &digits[..len] {
                value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            }
            self.at += len;
            Some(value)
        }

        /// `true`, `false` or `null`.
        fn literal(&mut self) -> Option<()> {
            self.skip_space();
            let rest = &self.bytes[self.at..];
            let len = [&b"true"[..], b"false", b"null"]
                .iter()
                .find(|word| rest.starts_with(word))?
                .len();
            self.at += len;
            Some(())
        }

        fn ignored_value(&mut self) -> Option<()> {
            self.skip_space();
            match self.peek()? {
                b'"' => self.string().map(drop),
                b'0'..=b'9' => self.integer().map(drop),
                _ => self.literal(),
            }
        }
    }

    fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
        // A repeated field is an error serde_json words: let it.
        if slot.is_some() {
            return None;
        }
        *slot = Some(value);
        Some(())
    }

    /// A declared extra field's value: a string's text, `None` for a
    /// non-negative integer, `true`, `false` or `null`; anything else
    /// declines (the outer `None`).
    fn extra_value<'a>(r: &mut Reader<'a>) -> Option<Option<Cow<'a, str>>> {
        r.skip_space();
        match r.peek()? {
            b'"' => r.text().map(Some),
            b'0'..=b'9' => r.integer().map(|_| None),
            _ => r.literal().map(|()| None),
        }
    }

    /// The fields of a flat click object, reading the declared extra
    /// `fields` too, or `None` to ask serde_json.
    pub(super) fn read<'a>(payload: &'a [u8], fields: &[String]) -> Option<Wire<'a>> {
        let mut r = Reader {
            bytes: payload,
            at: 0,
        };
        let mut wire = Wire {
            click_id: None,
            ad_id: None,
            ts: None,
            user_id: None,
            ip: None,
            country: None,
            extras: RawExtras::default(),
        };
        let mut seen = [false; MAX_EXTRA_DIMENSIONS];
        r.eat(b'{')?;
        r.skip_space();
        if r.peek()? == b'}' {
            r.at += 1;
        } else {
            loop {
                let key = r.string()?;
                r.eat(b':')?;
                match key {
                    "click_id" => set(&mut wire.click_id, r.text()?)?,
                    "ad_id" => set(&mut wire.ad_id, r.text()?)?,
                    "user_id" => set(&mut wire.user_id, r.text()?)?,
                    "ip" => set(&mut wire.ip, r.text()?)?,
                    "country" => set(&mut wire.country, r.text()?)?,
                    "ts" => set(&mut wire.ts, serde_json::Number::from(r.integer()?))?,
                    // Declared extra fields (never empty when none is declared: one compare).
                    key => match fields.iter().position(|f| f == key) {
                        Some(i) if i < MAX_EXTRA_DIMENSIONS => {
                            // A repeat is an error serde_json words: let it.
                            if std::mem::replace(&mut seen[i], true) {
                                return None;
                            }
                            wire.extras[i] = extra_value(&mut r)?;
                        }
                        _ => r.ignored_value()?,
                    },
                }
                r.skip_space();
                match r.peek()? {
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
        (r.at == payload.len()).then_some(wire)
    }
}

/// The ad id and partition of a stored subject `clicks.p.<partition>.<ad_id>`.
pub fn split_subject(subject: &str) -> Option<(u32, &str)> {
    let rest = subject.strip_prefix("clicks.p.")?;
    let (partition, ad) = rest.split_once('.')?;
    Some((partition.parse().ok()?, ad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(ad: &str, json: &str) -> Result<Click, String> {
        decode(ad, 1, &Bytes::copy_from_slice(json.as_bytes()))
    }

    #[test]
    fn accepts_a_full_click() {
        let c = run(
            "ad-1",
            r#"{"click_id":"c1","ad_id":"ad-1","ts":1000,"user_id":"u","ip":"::1","country":"us","x":[1]}"#,
        )
        .unwrap();
        assert_eq!(c.ad.as_str(), "ad-1");
        assert_eq!(c.ts, 1000);
        assert_eq!(c.country.as_str(), "US");
        assert_eq!(c.ip_type, IpType::V6);
        assert_eq!(c.id, click_key("ad-1", "c1"));
        assert_ne!(click_key("ad-1", "c1"), click_key("ad-2", "c1"), "per ad");
        assert_ne!(click_key("a", "bc"), click_key("ab", "c"), "unambiguous");
    }

    #[test]
    fn optional_dimensions_default() {
        let c = run(
            "a",
            r#"{"click_id":"c","ad_id":"a","ts":0,"country":"USA","ip":"x"}"#,
        )
        .unwrap();
        assert_eq!(c.country, Country::UNKNOWN);
        assert_eq!(c.ip_type, IpType::Unknown);
    }

    #[test]
    fn escaped_click_ids_hash_by_their_text() {
        let c = run("a", r#"{"click_id":"c\u0031","ad_id":"a","ts":5}"#).unwrap();
        assert_eq!(c.id, click_key("a", "c1"));
    }

    #[test]
    fn rejects_each_bad_input_with_a_reason() {
        let cases = [
            ("a", "not json", "not a valid click JSON"),
            ("a", "[1,2]", "not a valid click JSON"),
            (
                "a",
                r#"{"ad_id":"a","ts":1}"#,
                "missing required field click_id",
            ),
            (
                "a",
                r#"{"click_id":"","ad_id":"a","ts":1}"#,
                "click_id must be",
            ),
            (
                "a",
                r#"{"click_id":"c","ts":1}"#,
                "missing required field ad_id",
            ),
            (
                "a",
                r#"{"click_id":"c","ad_id":"b","ts":1}"#,
                "does not match",
            ),
            (
                "a.b",
                r#"{"click_id":"c","ad_id":"a.b","ts":1}"#,
                "must match",
            ),
            (
                "a",
                r#"{"click_id":"c","ad_id":"a"}"#,
                "missing required field ts",
            ),
            ("a", r#"{"click_id":"c","ad_id":"a","ts":1.5}"#, "integer"),
            (
                "a",
                r#"{"click_id":"c","ad_id":"a","ts":"1"}"#,
                "not a valid click JSON",
            ),
            ("a", r#"{"click_id":"c","ad_id":"a","ts":-1}"#, "negative"),
            (
                "a",
                r#"{"click_id":"c","ad_id":"a","ts":1,"ip":5}"#,
                "not a valid click JSON",
            ),
            (
                "a",
                r#"{"click_id":"c","ad_id":"a","ts":1,"ts":2}"#,
                "duplicate field",
            ),
        ];
        for (ad, json, want) in cases {
            let err = run(ad, json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
        let big = format!(
            r#"{{"click_id":"c","ad_id":"a","ts":1,"pad":"{}"}}"#,
            "x".repeat(MAX_PAYLOAD)
        );
        assert!(run("a", &big).unwrap_err().contains("limit"));
    }

    #[test]
    fn flat_reader_reads_the_usual_payload_and_declines_the_unusual() {
        let usual = br#" {"click_id":"c1", "ad_id":"ad-1","ts":1000,"user_id":"u","ip":"::1","country":"us","ok":true} "#;
        let wire = flat::read(usual, &[]).unwrap();
        assert_eq!(wire.click_id.as_deref(), Some("c1"));
        assert_eq!(wire.ts.and_then(|t| t.as_i64()), Some(1000));
        for unusual in [
            r#"{"click_id":"c\u0031"}"#,
            r#"{"ts":1.0}"#,
            r#"{"ts":-1}"#,
            r#"{"x":[1]}"#,
            r#"{"ts":1,"ts":1}"#,
            r#"{"ip":null}"#,
            r#"{} x"#,
        ] {
            assert!(flat::read(unusual.as_bytes(), &[]).is_none(), "{unusual}");
        }
    }

    fn extras_of(json: &str, fields: &[&str]) -> Result<Vec<Option<String>>, String> {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let payload = Bytes::copy_from_slice(json.as_bytes());
        let (click, raw) = decode_with("a", 1, &payload, &fields)?;
        assert_eq!(
            click.extras, [0; MAX_EXTRA_DIMENSIONS],
            "codes are set by ingest"
        );
        Ok(raw[..fields.len()]
            .iter()
            .map(|v| v.as_deref().map(str::to_string))
            .collect())
    }

    #[test]
    fn reads_declared_extra_fields_on_both_paths() {
        let base = r#""click_id":"c","ad_id":"a","ts":1"#;
        let fields = ["device", "placement"];
        // Flat path: plain strings; a non-string is None and the click stays valid.
        for (json, want) in [
            (
                format!(r#"{{{base},"device":"ios","placement":"top"}}"#),
                [Some("ios"), Some("top")],
            ),
            (
                format!(r#"{{{base},"device":7,"placement":null}}"#),
                [None, None],
            ),
            (format!(r#"{{"placement":true,{base}}}"#), [None, None]),
            // serde path (escapes, arrays, objects, floats), same reading.
            (
                format!(r#"{{{base},"device":"i\u006fs","placement":[1,{{"a":2}}]}}"#),
                [Some("ios"), None],
            ),
            (
                format!(r#"{{{base},"dev\u0069ce":"a\"b","placement":{{"x":"y"}}}}"#),
                [Some("a\"b"), None],
            ),
            (format!(r#"{{{base},"device":1.5,"x":[2]}}"#), [None, None]),
        ] {
            let want: Vec<Option<String>> = want.iter().map(|w| w.map(str::to_string)).collect();
            assert_eq!(extras_of(&json, &fields), Ok(want), "{json}");
        }
        // Undeclared, the same fields are ignored as before.
        let json = format!(r#"{{{base},"device":"ios","device":"android"}}"#);
        assert_eq!(extras_of(&json, &[]), Ok(vec![]));
        // Declared, a repeat is invalid on both paths, like a repeated ts.
        for json in [
            format!(r#"{{{base},"device":"ios","device":"android"}}"#),
            format!(r#"{{{base},"device":"ios","x":[1],"device":2}}"#),
        ] {
            let err = extras_of(&json, &fields).unwrap_err();
            assert!(err.contains("duplicate field `device`"), "{err}");
        }
    }

    #[test]
    fn subjects_split() {
        assert_eq!(split_subject("clicks.p.3.ad-1"), Some((3, "ad-1")));
        assert_eq!(split_subject("clicks.ad-1"), None);
    }

    const KEYS: [&str; 12] = [
        "click_id",
        "ad_id",
        "ts",
        "user_id",
        "ip",
        "country",
        "x",
        "click\\u005fid",
        "",
        "device",
        "placement",
        "dev\\u0069ce",
    ];
    const VALUES: [&str; 18] = [
        "\"c1\"",
        "\"\"",
        "\"a\\\"b\"",
        "12",
        "0",
        "01",
        "-3",
        "1.5",
        "1e3",
        "true",
        "null",
        "[1]",
        "{}",
        "\"é\"",
        "99999999999999999999",
        "\"\u{1}\"",
        "nul",
        "1E2",
    ];

    proptest! {
        /// The flat reader and serde_json agree on every payload the flat
        /// reader accepts; it declines the rest (serde_json then decides).
        #[test]
        fn flat_reader_agrees_with_serde(
            fields in prop::collection::vec((0..KEYS.len(), 0..VALUES.len(), any::<bool>()), 0..8),
            cut in prop::option::of(0usize..200),
            junk in prop::option::of((0usize..200, any::<u8>())),
            declared in 0usize..3,
        ) {
            // No extra dimension, `device`, or `device` and `placement`.
            let declared: Vec<String> = ["device", "placement"][..declared]
                .iter().map(|f| f.to_string()).collect();
            let sp = |b: bool| if b { " \n" } else { "" };
            let body: Vec<String> = fields.iter()
                .map(|(k, v, w)| format!("{}\"{}\"{}:{}{}", sp(*w), KEYS[*k], sp(*w), sp(*w), VALUES[*v]))
                .collect();
            let mut bytes = format!("{{{}}}", body.join(",")).into_bytes();
            if let Some((at, b)) = junk { let at = at % (bytes.len() + 1); bytes.insert(at, b); }
            if let Some(cut) = cut { bytes.truncate(cut); }
            if let Some(fast) = flat::read(&bytes, &declared) {
                let slow: Wire = read_slow(&bytes, &declared).unwrap();
                prop_assert_eq!(fast, slow);
            }
        }

        /// Never panics, and accepts exactly what a naive reading of the rules accepts.
        #[test]
        fn decode_agrees_with_a_naive_validator(
            click_id in "[a-z]{0,3}",
            ad in "[a-z.]{0,3}",
            ts in prop::option::of(-5i64..5),
            junk in any::<Vec<u8>>(),
        ) {
            let mut obj = serde_json::Map::new();
            obj.insert("click_id".into(), click_id.clone().into());
            obj.insert("ad_id".into(), ad.clone().into());
            if let Some(ts) = ts { obj.insert("ts".into(), ts.into()); }
            let json = serde_json::Value::Object(obj).to_string();
            let naive_ok = !click_id.is_empty()
                && !ad.is_empty() && !ad.contains('.')
                && matches!(ts, Some(t) if t >= 0);
            prop_assert_eq!(run(&ad, &json).is_ok(), naive_ok);
            let _ = decode("a", 0, &Bytes::from(junk));
        }
    }
}
