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
    let wire: Wire = match serde_json::from_slice(payload) {
        Ok(wire) => wire,
        Err(e) => return Err(format!("payload is not a valid click JSON object: {e}")),
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
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(ad_id.as_bytes());
    hasher.update(&[0]); // ad ids never contain NUL: the pair is unambiguous
    hasher.update(click_id.as_bytes());
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
    fn subjects_split() {
        assert_eq!(split_subject("clicks.p.3.ad-1"), Some((3, "ad-1")));
        assert_eq!(split_subject("clicks.ad-1"), None);
    }

    proptest! {
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
