//! Payload → [`Click`]: the validation rules of SPEC §1, as a pure function.

use crate::click::{AdId, Click, Country, IpType};
use bytes::Bytes;
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
}

/// Decodes and validates one message. `subject_ad` is the last token of the
/// message's subject; the payload's `ad_id` must equal it. The error is the
/// human sentence that goes into the reject header.
pub fn decode(subject_ad: &str, seq: u64, payload: &Bytes) -> Result<Click, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "payload is {} bytes, more than the {MAX_PAYLOAD}-byte limit",
            payload.len()
        ));
    }
    // Publishers send flat objects: read those directly, and leave anything
    // unusual (escapes, nesting, floats) to serde_json, whose errors we quote.
    let wire: Wire = match flat::read(payload) {
        Some(wire) => wire,
        None => match serde_json::from_slice(payload) {
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
    Ok(Click {
        id: click_key(ad.as_str(), &click_id),
        ad,
        ts,
        country: wire
            .country
            .as_deref()
            .and_then(Country::parse)
            .unwrap_or(Country::UNKNOWN),
        ip_type: IpType::of(wire.ip.as_deref()),
        seq,
        payload: payload.clone(),
    })
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
/// last three only in fields adclick ignores). On anything else it returns
/// `None` and the caller asks serde_json, so the two paths accept, reject and
/// read exactly the same payloads (a property test checks it).
mod flat {
    use super::Wire;
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

    /// The fields of a flat click object, or `None` to ask serde_json.
    pub(super) fn read(payload: &[u8]) -> Option<Wire<'_>> {
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
        };
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
                    _ => r.ignored_value()?,
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
        let wire = flat::read(usual).unwrap();
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
            assert!(flat::read(unusual.as_bytes()).is_none(), "{unusual}");
        }
    }

    #[test]
    fn subjects_split() {
        assert_eq!(split_subject("clicks.p.3.ad-1"), Some((3, "ad-1")));
        assert_eq!(split_subject("clicks.ad-1"), None);
    }

    const KEYS: [&str; 9] = [
        "click_id",
        "ad_id",
        "ts",
        "user_id",
        "ip",
        "country",
        "x",
        "click\\u005fid",
        "",
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
        ) {
            let sp = |b: bool| if b { " \n" } else { "" };
            let body: Vec<String> = fields.iter()
                .map(|(k, v, w)| format!("{}\"{}\"{}:{}{}", sp(*w), KEYS[*k], sp(*w), sp(*w), VALUES[*v]))
                .collect();
            let mut bytes = format!("{{{}}}", body.join(",")).into_bytes();
            if let Some((at, b)) = junk { let at = at % (bytes.len() + 1); bytes.insert(at, b); }
            if let Some(cut) = cut { bytes.truncate(cut); }
            if let Some(fast) = flat::read(&bytes) {
                let slow: Wire = serde_json::from_slice(&bytes).unwrap();
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
