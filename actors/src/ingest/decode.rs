//! Payload → [`Click`]: the validation rules of SPEC §1, as a pure function.
//!
//! Two readers, one meaning. [`scan`] walks the usual payload (a flat object
//! of plain strings and integers, valid) once and builds the click; whenever
//! it is not sure (anything invalid, or valid but unusual: escapes, nesting,
//! floats, repeated fields) it declines, and serde_json reads the payload
//! into [`Wire`], after which [`validate`] applies the rules one by one and
//! words the reject reason. The property tests at the bottom hold the fast
//! reader to the serde one.

pub mod ip_text;
mod scan;

use crate::click::{AdId, Click, Country};
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
    decode_with(subject_ad, seq, payload, &[], &mut RawExtras::default())
}

/// Like [`decode`], and also reads the declared extra fields `fields`
/// (top-level, at most [`MAX_EXTRA_DIMENSIONS`]). Their values never make a
/// click invalid (a non-string reads as `None`), except that a declared field
/// given twice is, as for every field adclick reads. The click's
/// `extras` codes are left 0: ingest sets them once the values are admitted.
/// The fields' raw values are written to `extras` (by position in
/// `fields`); they mean nothing when the click is refused.
pub fn decode_with<'p>(
    subject_ad: &str,
    seq: u64,
    payload: &'p Bytes,
    fields: &[String],
    extras: &mut RawExtras<'p>,
) -> Result<Click, String> {
    decode_any(Some(subject_ad), seq, payload, fields, extras)
}

/// Decodes and validates a payload read without its subject, as a file of
/// SPEC §1 payloads holds them (`adclick reconcile --input`): every rule of
/// [`decode`] but the one that compares `ad_id` with the subject, which
/// there is none of. The same two readers, so a file line and a message
/// with the same bytes read alike.
pub fn decode_payload(seq: u64, payload: &[u8]) -> Result<Click, String> {
    decode_any(None, seq, payload, &[], &mut RawExtras::default())
}

/// [`decode`] of a payload held as a slice (a recount of archived messages):
/// with `subject_ad`, every rule of [`decode`]; without, those of
/// [`decode_payload`].
pub fn decode_message(subject_ad: Option<&str>, seq: u64, payload: &[u8]) -> Result<Click, String> {
    decode_any(subject_ad, seq, payload, &[], &mut RawExtras::default())
}

/// [`decode_with`] and [`decode_payload`]: `subject_ad` is `None` when the
/// payload came without a subject.
fn decode_any<'p>(
    subject_ad: Option<&str>,
    seq: u64,
    payload: &'p [u8],
    fields: &[String],
    extras: &mut RawExtras<'p>,
) -> Result<Click, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!(
            "payload is {} bytes, more than the {MAX_PAYLOAD}-byte limit",
            payload.len()
        ));
    }
    if let Some(click) = scan::click_into(subject_ad, seq, payload, fields, extras) {
        return Ok(click);
    }
    let (click, raw) = decode_slow(subject_ad, seq, payload, fields)?;
    *extras = raw;
    Ok(click)
}

/// The serde_json reading and the rules one by one: for every payload the
/// fast reader declines, and the oracle it is tested against.
fn decode_slow<'p>(
    subject_ad: Option<&str>,
    seq: u64,
    payload: &'p [u8],
    fields: &[String],
) -> Result<(Click, RawExtras<'p>), String> {
    // serde_json checks UTF-8 only in the strings it reads; SPEC §1 wants
    // the whole payload UTF-8 (the fast reader declines on any other text,
    // so checking here, off the hot path, covers both readers).
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(format!(
            "payload is not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ));
    }
    match read_slow(payload, fields) {
        Ok(wire) => validate(subject_ad, seq, wire),
        Err(e) => Err(format!("payload is not a valid click JSON object: {e}")),
    }
}

/// Applies SPEC §1's rules to the fields read, in a fixed order: the first
/// rule broken is the reject reason.
fn validate<'p>(
    subject_ad: Option<&str>,
    seq: u64,
    wire: Wire<'p>,
) -> Result<(Click, RawExtras<'p>), String> {
    let click_id = wire.click_id.ok_or("missing required field click_id")?;
    let chars = click_id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS {
        return Err(format!(
            "click_id must be 1 to {MAX_ID_CHARS} characters, got {chars}"
        ));
    }
    let ad_text = wire.ad_id.ok_or("missing required field ad_id")?;
    let ad = AdId::parse(&ad_text).ok_or("ad_id must match [A-Za-z0-9_-]{1,64}")?;
    if let Some(subject_ad) = subject_ad.filter(|s| *s != ad.as_str()) {
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
        id: click_key(ad.as_str().as_bytes(), click_id.as_bytes()),
        ad,
        ts,
        country: wire
            .country
            .as_deref()
            .and_then(Country::parse)
            .unwrap_or(Country::UNKNOWN),
        ip_type: ip_text::ip_type_of(wire.ip.as_deref()),
        extras: [0; MAX_EXTRA_DIMENSIONS],
        seq,
        repeat: false,
    };
    Ok((click, wire.extras))
}

/// The dedup key of a click: a 128-bit hash of the text of its ad id and click id.
///
/// The ad id is part of it because dedup runs per partition and partitions
/// are chosen by ad: a click id reused by two different ads is two clicks,
/// whichever partitions the ads happen to share.
pub fn click_key(ad: &[u8], click: &[u8]) -> u128 {
    // One-shot hashing of the joined bytes equals streaming them (xxh3's
    // definition), and skips the streaming state's setup: ~3x faster here.
    // Usual ids fit 48 bytes: a small buffer is cheaper to clear.
    let len = ad.len() + 1 + click.len();
    if len <= 48 {
        let mut joined = [0u8; 48];
        joined[..ad.len()].copy_from_slice(ad);
        joined[ad.len() + 1..len].copy_from_slice(click);
        return xxhash_rust::xxh3::xxh3_128(&joined[..len]);
    }
    let mut joined = [0u8; 256];
    if len <= joined.len() {
        joined[..ad.len()].copy_from_slice(ad);
        joined[ad.len() + 1..len].copy_from_slice(click);
        return xxhash_rust::xxh3::xxh3_128(&joined[..len]);
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(ad);
    hasher.update(&[0]); // ad ids never contain NUL: the pair is unambiguous
    hasher.update(click);
    hasher.digest128()
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
    use crate::click::IpType;
    use proptest::prelude::*;

    fn run(ad: &str, json: &str) -> Result<Click, String> {
        decode(ad, 1, &Bytes::copy_from_slice(json.as_bytes()))
    }

    #[test]
    fn a_payload_without_subject_keeps_the_ad_it_names() {
        let c = decode_payload(9, br#"{"click_id":"c1","ad_id":"other","ts":61000}"#).unwrap();
        assert_eq!((c.ad.as_str(), c.ts, c.seq), ("other", 61000, 9));
        assert_eq!(c.id, click_key(b"other", b"c1"));
        let slow = decode_payload(9, br#"{"ts":61000,"ad_id":"ot\u0068er","click_id":"c1"}"#);
        assert_eq!(slow.unwrap().id, c.id);
        assert_eq!(
            decode_payload(1, br#"{"click_id":"c1","ad_id":"a.b","ts":1}"#).unwrap_err(),
            "ad_id must match [A-Za-z0-9_-]{1,64}"
        );
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
        assert_eq!(c.id, click_key(b"ad-1", b"c1"));
        assert_ne!(
            click_key(b"ad-1", b"c1"),
            click_key(b"ad-2", b"c1"),
            "per ad"
        );
        assert_ne!(
            click_key(b"a", b"bc"),
            click_key(b"ab", b"c"),
            "unambiguous"
        );
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
        assert_eq!(c.id, click_key(b"a", b"c1"));
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

    /// [`decode_with`]'s click and raw extras as one result.
    fn decode_pair<'p>(
        subject_ad: &str,
        seq: u64,
        payload: &'p Bytes,
        fields: &[String],
    ) -> Result<(Click, RawExtras<'p>), String> {
        let mut extras = RawExtras::default();
        decode_with(subject_ad, seq, payload, fields, &mut extras).map(|c| (c, extras))
    }

    /// A decoding's outcome as plain values, for comparing the two readers.
    type Outcome = Result<(u128, String, i64, Country, IpType, u64, Vec<Option<String>>), String>;

    fn outcome(read: Result<(Click, RawExtras), String>) -> Outcome {
        read.map(|(c, extras)| {
            assert_eq!(
                c.extras, [0; MAX_EXTRA_DIMENSIONS],
                "codes are set by ingest"
            );
            let extras = extras
                .iter()
                .map(|e| e.as_deref().map(str::to_string))
                .collect();
            (
                c.id,
                c.ad.to_string(),
                c.ts,
                c.country,
                c.ip_type,
                c.seq,
                extras,
            )
        })
    }

    #[test]
    fn the_fast_reader_reads_the_usual_payload_and_declines_the_unusual() {
        let usual = Bytes::from_static(
            br#" {"click_id":"c1", "ad_id":"ad-1","ts":1000,"user_id":"u","ip":"10.1.2.3","country":"us","ok":true} "#,
        );
        let (click, _) =
            scan::click("ad-1", 7, &usual, &[]).expect("the usual payload is read fast");
        assert_eq!(
            outcome(Ok((click, RawExtras::default()))),
            Ok((
                click_key(b"ad-1", b"c1"),
                "ad-1".into(),
                1000,
                Country::parse("US").unwrap(),
                IpType::V4,
                7,
                vec![None; 4]
            ))
        );
        let base = r#""click_id":"c","ad_id":"a","ts":1"#;
        for unusual in [
            r#"{"click_id":"c\u0031","ad_id":"a","ts":1}"#.to_string(),
            format!(r#"{{{base},"x":1.0}}"#),
            format!(r#"{{{base},"x":-1}}"#),
            format!(r#"{{{base},"x":[1]}}"#),
            format!(r#"{{{base},"ts":1}}"#),
            format!(r#"{{{base},"ip":null}}"#),
            format!(r#"{{{base}}} x"#),
            // Valid JSON but not a valid click: serde words the reason.
            r#"{"click_id":"c","ad_id":"b","ts":1}"#.to_string(),
            r#"{"click_id":"","ad_id":"a","ts":1}"#.to_string(),
            r#"{"ad_id":"a","ts":1}"#.to_string(),
        ] {
            let payload = Bytes::from(unusual.clone());
            assert!(scan::click("a", 1, &payload, &[]).is_none(), "{unusual}");
        }
    }

    fn extras_of(json: &str, fields: &[&str]) -> Result<Vec<Option<String>>, String> {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let payload = Bytes::copy_from_slice(json.as_bytes());
        let mut raw = RawExtras::default();
        let click = decode_with("a", 1, &payload, &fields, &mut raw)?;
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

    /// Keys of the generated payloads: the fields adclick reads, declared
    /// extra fields, unknown ones, and the same names escaped or non-ASCII.
    const KEYS: [&str; 21] = [
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
        "clé",
        "ts ",
        // Near the known keys, for the word-at-a-time key match.
        "click_idx",
        "countryy",
        "ts2",
        "ad_id_",
        "ipx",
        "user_i",
        "c",
    ];
    /// Values: valid and invalid for each field, escapes, unicode, control
    /// characters, nesting, and numbers at the edges of what `ts` takes.
    const VALUES: [&str; 40] = [
        "\"c1\"",
        "\"a\"",
        "\"\"",
        "\"a\\\"b\"",
        "\"\\u0061\"",
        "\"\\ud83d\\ude00\"",
        "\"\\x\"",
        "12",
        "0",
        "01",
        "-0",
        "-3",
        "1.5",
        "1e3",
        "1E2",
        "1795946400000",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999",
        "true",
        "false",
        "null",
        "nul",
        "[1]",
        "{}",
        "{\"a\":[1,{\"b\":null}],\"c\":\"d\"}",
        "[\"x\",1.5,-2]",
        "\"é\"",
        "\"\u{1F600}\"",
        "\"\u{1}\"",
        "\"\t\"",
        "\"us\"",
        "\"Us\"",
        "\"10.0.0.1\"",
        "\"2001:db8::1\"",
        "\"256.0.0.1\"",
        "\"ad-1\"",
        "\"a.b\"",
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
        "\"ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé\"",
    ];
    /// Whitespace between tokens: JSON's four, none, and two that are not JSON's.
    const SPACES: [&str; 6] = ["", " ", "\n\t", "\r\n ", "\u{b}", "\u{a0}"];

    /// A payload of the generated `fields` (key, value, space around them),
    /// with a valid `click_id`, `ad_id` (`a`) and `ts` inserted first when
    /// `base`, and one byte inserted or the tail cut when asked.
    fn payload(
        fields: &[(usize, usize, usize)],
        base: bool,
        junk: Option<(usize, u8)>,
        cut: Option<usize>,
    ) -> Bytes {
        let mut body: Vec<String> = fields
            .iter()
            .map(|(k, v, w)| {
                let sp = SPACES[*w];
                format!("{sp}\"{}\"{sp}:{sp}{}{sp}", KEYS[*k], VALUES[*v])
            })
            .collect();
        if base {
            body.insert(
                0,
                r#""click_id":"c1","ad_id":"a","ts":1795946400000"#.to_string(),
            );
        }
        let mut bytes = format!("{{{}}}", body.join(",")).into_bytes();
        if let Some((at, b)) = junk {
            let at = at % (bytes.len() + 1);
            bytes.insert(at, b);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut);
        }
        Bytes::from(bytes)
    }

    proptest! {
        /// Whatever buffer the key is hashed from, it is the hash of the ad
        /// id, a NUL and the click id (ids written by earlier versions stay
        /// recognised after a restart).
        #[test]
        fn click_keys_hash_the_joined_ids(ad in "[a-z]{1,64}", click in ".{1,300}") {
            let mut streamed = xxhash_rust::xxh3::Xxh3::new();
            streamed.update(ad.as_bytes());
            streamed.update(&[0]);
            streamed.update(click.as_bytes());
            prop_assert_eq!(click_key(ad.as_bytes(), click.as_bytes()), streamed.digest128());
        }

        /// Every click the fast reader accepts, serde_json's reading and the
        /// rules one by one accept too, with the very same values; what it
        /// declines goes to that path, so decode's outcome is always serde's.
        #[test]
        fn the_fast_reader_agrees_with_serde(
            fields in prop::collection::vec((0..KEYS.len(), 0..VALUES.len(), 0..SPACES.len()), 0..8),
            base in any::<bool>(),
            cut in prop::option::of(0usize..300),
            junk in prop::option::of((0usize..300, any::<u8>())),
            declared in 0usize..3,
        ) {
            // No extra dimension, `device`, or `device` and `placement`.
            let declared: Vec<String> = ["device", "placement"][..declared]
                .iter().map(|f| f.to_string()).collect();
            let bytes = payload(&fields, base, junk, cut);
            let slow = outcome(decode_slow(Some("a"), 3, &bytes, &declared));
            if let Some(fast) = scan::click("a", 3, &bytes, &declared) {
                prop_assert_eq!(outcome(Ok(fast)), slow.clone());
            }
            prop_assert_eq!(outcome(decode_pair("a", 3, &bytes, &declared)), slow);
        }

        /// Without a subject, a payload reads as it does with the subject of
        /// the ad it names: the same click; what it refuses, a subject never
        /// makes valid.
        #[test]
        fn a_payload_without_subject_reads_as_with_its_own(
            fields in prop::collection::vec((0..KEYS.len(), 0..VALUES.len(), 0..SPACES.len()), 0..8),
            base in any::<bool>(),
            cut in prop::option::of(0usize..300),
            junk in prop::option::of((0usize..300, any::<u8>())),
        ) {
            let bytes = payload(&fields, base, junk, cut);
            let alone = decode_payload(3, &bytes);
            let ad = match &alone {
                Ok(click) => click.ad.as_str().to_string(),
                Err(_) => "a".to_string(),
            };
            let with_subject = decode(&ad, 3, &bytes);
            match (&alone, &with_subject) {
                (Ok(_), _) => prop_assert_eq!(outcome(alone.map(|c| (c, RawExtras::default()))), outcome(with_subject.map(|c| (c, RawExtras::default())))),
                (Err(why), _) => prop_assert!(with_subject.is_err(), "accepted with a subject only: {}", why),
            }
        }

        /// The fast reader is not merely safe but complete on plain
        /// payloads (strings without escapes, integers that fit, literals
        /// where adclick reads nothing, any JSON whitespace): it reads every
        /// click serde accepts there, and so serde runs only for rejects.
        #[test]
        fn the_fast_reader_reads_every_valid_plain_payload(
            fields in prop::collection::vec((0..KEYS.len(), 0..VALUES.len(), 0..4usize), 0..8),
            base in any::<bool>(),
            declared in 0usize..3,
        ) {
            let plain = |k: usize, v: usize| {
                let (key, value) = (KEYS[k], VALUES[v]);
                let escaped = key.contains('\\') || value.contains('\\');
                let nested = value.starts_with(['[', '{']);
                // Non-negative integers that fit i64, as JSON writes them.
                let number_ok = !value.starts_with('-')
                    && (!value.starts_with(|c: char| c.is_ascii_digit())
                        || value.parse::<i64>().is_ok() && !(value.len() > 1 && value.starts_with('0')));
                let control = value.contains(|c: char| c < ' ');
                // serde reads `null` in a field adclick reads as "absent".
                let null_read = value == "null" && k <= 5;
                !escaped && !nested && number_ok && !control && !null_read && value != "nul"
            };
            let fields: Vec<_> = fields.into_iter().filter(|(k, v, _)| plain(*k, *v)).collect();
            let declared: Vec<String> = ["device", "placement"][..declared]
                .iter().map(|f| f.to_string()).collect();
            let bytes = payload(&fields, base, None, None);
            let slow = outcome(decode_slow(Some("a"), 3, &bytes, &declared));
            let fast = scan::click("a", 3, &bytes, &declared).map(|read| outcome(Ok(read)));
            prop_assert_eq!(fast.is_some(), slow.is_ok(), "{:?}", std::str::from_utf8(&bytes));
            if let Some(fast) = fast {
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
