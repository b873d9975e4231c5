//! Hostile input for the click decoder: a fuzz harness that runs in CI for a
//! bounded number of cases, and the committed corpus (`decode_corpus/`)
//! replayed on every run.
//!
//! Every input must decode to a valid click or be refused with a reason,
//! never panic, and agree with [`reference`]: SPEC §1 read independently
//! through `serde_json::Value`, rule by rule. The decoder's own tests hold
//! its fast reader to its serde reader; this holds both to the
//! specification, on inputs made to break them: arbitrary bytes, and valid
//! payloads mutated (bytes flipped, inserted, cut; NULs, invalid UTF-8,
//! deep nesting, numbers past every integer type, repeated fields).
//!
//! More cases: `ADCLICK_FUZZ_CASES=200000 cargo test -p adclick-actors
//! --release --test decode_fuzz` (the default keeps CI to a few seconds).

use adclick_actors::click::Click;
use adclick_actors::testing::decode::{click_key, decode, MAX_ID_CHARS, MAX_PAYLOAD};
use bytes::Bytes;
use proptest::prelude::*;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The ad id of the subject every input is decoded under.
const SUBJECT_AD: &str = "ad-1";
/// The fields adclick reads; the others are ignored.
const READ_FIELDS: [&str; 6] = ["click_id", "ad_id", "ts", "user_id", "ip", "country"];

/// What SPEC §1 makes of a payload.
#[derive(Debug, PartialEq)]
enum Expected {
    /// A click, with the values the decoder must produce.
    Valid {
        id: u128,
        ad: String,
        ts: i64,
        country: String,
        ip_type: &'static str,
    },
    /// Not a click (the reason is the decoder's to word).
    Invalid,
}

/// A top-level JSON object as adclick sees it: every key in order (repeats
/// kept, which a `serde_json::Value` would merge), with the value of each
/// field adclick reads. Other values are checked as JSON and skipped, as
/// they carry nothing adclick uses (so `1e400` or a depth beyond
/// `Value`'s recursion limit is no reason to refuse them).
fn top_level(payload: &[u8]) -> Option<Vec<(String, Option<Value>)>> {
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = Vec<(String, Option<Value>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut fields = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = if READ_FIELDS.contains(&key.as_str()) {
                    Some(map.next_value::<Value>()?)
                } else {
                    map.next_value::<IgnoredAny>()?;
                    None
                };
                fields.push((key, value));
            }
            Ok(fields)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let fields = (&mut de).deserialize_map(Fields).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// SPEC §1, rule by rule, on the fields as `serde_json::Value`s.
fn reference(subject_ad: &str, payload: &[u8]) -> Expected {
    use Expected::Invalid;
    if payload.len() > MAX_PAYLOAD || std::str::from_utf8(payload).is_err() {
        return Invalid;
    }
    let Some(fields) = top_level(payload) else {
        return Invalid;
    };
    // A field adclick reads, given twice, is ambiguous: refused.
    for field in READ_FIELDS {
        if fields.iter().filter(|(k, _)| k == field).count() > 1 {
            return Invalid;
        }
    }
    let object: serde_json::Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    // A read field is absent when missing or null; otherwise a string
    // (a number for ts), or the payload is refused.
    let text = |field: &str| -> Result<Option<&str>, ()> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(()),
        }
    };
    let (Ok(click_id), Ok(ad), Ok(user), Ok(ip), Ok(country)) = (
        text("click_id"),
        text("ad_id"),
        text("user_id"),
        text("ip"),
        text("country"),
    ) else {
        return Invalid;
    };
    let ts = match object.get("ts") {
        None | Some(Value::Null) => return Invalid,
        Some(Value::Number(n)) => n.as_i64(),
        Some(_) => return Invalid,
    };
    let Some(click_id) = click_id.filter(|c| (1..=MAX_ID_CHARS).contains(&c.chars().count()))
    else {
        return Invalid;
    };
    let Some(ad) = ad.filter(|a| {
        (1..=64).contains(&a.len())
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) else {
        return Invalid;
    };
    if ad != subject_ad {
        return Invalid;
    }
    let Some(ts) = ts.filter(|ts| *ts >= 0) else {
        return Invalid;
    };
    if user.is_some_and(|u| u.chars().count() > MAX_ID_CHARS) {
        return Invalid;
    }
    let country = match country.map(str::as_bytes) {
        Some([a, b]) if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            String::from_utf8(vec![a.to_ascii_uppercase(), b.to_ascii_uppercase()])
                .unwrap_or_default()
        }
        _ => "ZZ".into(),
    };
    let ip_type = match ip.map(str::parse::<std::net::IpAddr>) {
        Some(Ok(std::net::IpAddr::V4(_))) => "v4",
        Some(Ok(std::net::IpAddr::V6(_))) => "v6",
        _ => "unknown",
    };
    Expected::Valid {
        id: click_key(ad.as_bytes(), click_id.as_bytes()),
        ad: ad.to_string(),
        ts,
        country,
        ip_type,
    }
}

/// What the decoder made of it, in the reference's terms.
fn outcome(read: &Result<Click, String>) -> Expected {
    match read {
        Ok(click) => Expected::Valid {
            id: click.id,
            ad: click.ad.as_str().to_string(),
            ts: click.ts,
            country: click.country.as_str().to_string(),
            ip_type: click.ip_type.as_str(),
        },
        Err(_) => Expected::Invalid,
    }
}

/// Decodes `payload` and checks it against the reference: the one property
/// every input, fuzzed or committed, must hold. Returns the decoder's answer.
fn check(payload: &[u8]) -> Result<Result<Click, String>, String> {
    let bytes = Bytes::copy_from_slice(payload);
    let read = decode(SUBJECT_AD, 7, &bytes);
    if let Err(reason) = &read {
        if reason.trim().is_empty() {
            return Err("refused without a reason".into());
        }
    }
    if let Ok(click) = &read {
        if click.seq != 7 || click.repeat {
            return Err(format!(
                "a decoded click carries the wrong seq or flag: {click:?}"
            ));
        }
    }
    let (got, want) = (outcome(&read), reference(SUBJECT_AD, payload));
    if got != want {
        return Err(format!(
            "decoder {got:?} ({:?}), specification {want:?}",
            read.as_ref().err()
        ));
    }
    Ok(read)
}

// ── structure-aware generation ──────────────────────────────────────────

/// Keys: the read fields, near misses, and an ignored one.
const KEYS: &[&str] = &[
    "click_id", "ad_id", "ts", "user_id", "ip", "country", "Click_id", "ts ", "x", "",
];
/// Number texts, from plain to past every integer type.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1795946400000",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "99999999999999999999999999999999999999999999",
    "1e400",
    "-1e400",
    "1.5",
    "1795946400000.0",
    "1E3",
    "01",
    "-",
    "1.",
    "0x10",
    "NaN",
    "-1",
];

/// One JSON value's text: a well-encoded string (any characters, NULs and
/// controls included), a raw string (broken escapes, lone surrogates), a
/// number, a literal, or a nested value.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        2 => "[a-zA-Z0-9_-]{0,70}".prop_map(|s| format!("\"{s}\"")),
        1 => prop::sample::select(vec![
            "\"\\u0000\"", "\"a\u{0}b\"", "\"\\ud800\"", "\"\\udc00x\"", "\"\\x\"",
            "\"\\u12\"", "\"\u{1}\"", "\"ad-1\\u0000\"", "\"10.0.0.1\"", "\"::1\"",
            "\"us\"", "\"ad-1\"", "\"\\u0061d-1\"",
        ])
        .prop_map(str::to_string),
        3 => prop::sample::select(NUMBERS).prop_map(str::to_string),
        1 => prop::sample::select(vec!["null", "true", "false", "nul", "tru"]).prop_map(str::to_string),
        1 => (0usize..200).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth))),
        1 => (0usize..200).prop_map(|depth| format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth))),
    ]
}

/// A payload: a valid click (optionally), then generated fields.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec((prop::sample::select(KEYS), value_text()), 0..6),
    )
        .prop_map(|(base, fields)| {
            let mut parts: Vec<String> = Vec::new();
            if base {
                parts.push(r#""click_id":"c-1","ad_id":"ad-1","ts":1795946400000"#.into());
            }
            parts.extend(fields.into_iter().map(|(k, v)| format!("\"{k}\":{v}")));
            format!("{{{}}}", parts.join(",")).into_bytes()
        })
}

/// A change to a payload's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// A copy of a slice inserted elsewhere (repeated fields, stray brackets).
    Duplicate(usize, usize, usize),
    /// The payload repeated until it passes `MAX_PAYLOAD` by some bytes.
    Oversize(usize),
    /// The whole payload as the value of an ignored field, `depth` times.
    Nest(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u8),
                Just(0xFF),
                Just(0xC0),
                Just(b'"'),
                Just(b'\\'),
                any::<u8>()
            ]
        )
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..40, any::<usize>())
            .prop_map(|(a, n, b)| Mutation::Duplicate(a, n, b)),
        (0usize..8).prop_map(Mutation::Oversize),
        (1usize..300).prop_map(Mutation::Nest),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    let len = bytes.len();
    match *mutation {
        Mutation::Flip(at, b) if len > 0 => bytes[at % len] ^= b,
        Mutation::Insert(at, b) => bytes.insert(at % (len + 1), b),
        Mutation::Remove(at) if len > 0 => {
            bytes.remove(at % len);
        }
        Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
        Mutation::Duplicate(from, n, to) if len > 0 => {
            let from = from % len;
            let piece: Vec<u8> = bytes[from..(from + n).min(len)].to_vec();
            let to = to % (len + 1);
            bytes.splice(to..to, piece);
        }
        Mutation::Oversize(extra) => {
            // Padding inside an ignored string keeps the payload valid JSON:
            // only the size can refuse it.
            let target = MAX_PAYLOAD + 1 + extra;
            if let Some(close) = bytes.iter().rposition(|b| *b == b'}') {
                let pad = target.saturating_sub(len + 8);
                let field = format!(",\"pad\":\"{}\"", "p".repeat(pad));
                bytes.splice(close..close, field.into_bytes());
            }
        }
        Mutation::Nest(depth) => {
            let mut nested = "{\"n\":".repeat(depth).into_bytes();
            nested.extend_from_slice(&bytes);
            nested.extend(std::iter::repeat_n(b'}', depth));
            bytes = nested;
        }
        _ => {}
    }
    bytes
}

fn cases() -> u32 {
    std::env::var("ADCLICK_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes: refused with a reason (or, rarely, a click the
    /// specification agrees is one), never a panic.
    #[test]
    fn arbitrary_bytes_are_refused_with_a_reason_or_agree(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes).map(drop).map_err(TestCaseError::fail)?;
    }

    /// Payloads built from the fields adclick reads, with hostile values,
    /// then mutated: the decoder and the specification agree on every one.
    #[test]
    fn mutated_payloads_agree_with_the_specification(
        base in payload(),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let bytes = mutations.iter().fold(base, mutate);
        check(&bytes).map(drop).map_err(|e| {
            TestCaseError::fail(format!("{e}\npayload: {:?}", String::from_utf8_lossy(&bytes)))
        })?;
    }
}

// ── the committed corpus ────────────────────────────────────────────────

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/decode_corpus")
}

/// The corpus files, by name: `valid-…` must decode, `invalid-…` must not.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .expect("actors/tests/decode_corpus is committed")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let bytes = std::fs::read(&p).expect("corpus file readable");
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_corpus_decodes_as_its_names_say_and_agrees_with_the_specification() {
    let files = corpus();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        match check(bytes) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(read) => {
                let want_valid = name.starts_with("valid-");
                if read.is_ok() != want_valid {
                    failures.push(format!("{name}: decoded as {read:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The hostile kinds the issue names each have corpus files.
#[test]
fn the_corpus_holds_every_hostile_kind() {
    let files = corpus();
    for kind in ["oversize", "nested", "utf8", "nul", "overflow"] {
        assert!(
            files
                .iter()
                .any(|(name, _)| name.starts_with("invalid-") && name.contains(kind)),
            "no invalid-*{kind}* file in the corpus"
        );
    }
    let oversize = files
        .iter()
        .find(|(n, _)| n.contains("oversize"))
        .map(|(_, b)| b.len());
    assert!(oversize.is_some_and(|n| n > MAX_PAYLOAD));
}
