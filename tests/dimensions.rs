//! Extra dimensions end to end, against a real nats-server: declared fields
//! become filters, values past a dimension's cap count as `other` (per
//! partition, in stream order), the overflow metric says how many, an
//! undeclared combination is a 400 naming the supported ones, and the
//! admitted values survive a restart. Every count is checked against an
//! oracle that applies the documented rules on its own, through the REST
//! API and through the output feed (`ADCLICK_AGG`), whose `filter` objects
//! carry the extra values as text.

mod common;

use adclick::loadgen::Rng;
use adclick_actors::partitions::partition_of;
use adclick_actors::time::parse_rfc3339;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const PARTITIONS: u32 = 2;
const DEVICE_CAP: usize = 3;

/// A device field as published: a string, absent, or not a string.
#[derive(Clone, Debug)]
enum Field {
    Text(String),
    Absent,
    Number,
}

/// The oracle's reading of the cap rules (docs/SEMANTICS.md, "Extra
/// dimensions"), kept per partition and dimension.
#[derive(Default)]
struct Admission {
    admitted: HashMap<(u32, &'static str), Vec<String>>,
    overflow: u64,
}

impl Admission {
    fn value(&mut self, partition: u32, dim: &'static str, cap: usize, field: &Field) -> String {
        let text = match field {
            Field::Text(t) if !t.is_empty() => t.clone(),
            _ => return "unknown".into(),
        };
        if text == "other" || text == "unknown" {
            return text;
        }
        if text.len() > 64 {
            self.overflow += 1;
            return "other".into();
        }
        let admitted = self.admitted.entry((partition, dim)).or_default();
        if admitted.contains(&text) {
            return text;
        }
        if admitted.len() < cap {
            admitted.push(text.clone());
            return text;
        }
        self.overflow += 1;
        "other".into()
    }
}

fn payload(click_id: &str, ad: &str, ts: i64, country: &str, fields: &[(&str, &Field)]) -> String {
    let mut v = json!({"click_id": click_id, "ad_id": ad, "ts": ts, "country": country});
    for (name, field) in fields {
        match field {
            Field::Text(t) => v[*name] = t.clone().into(),
            Field::Number => v[*name] = 42.into(),
            Field::Absent => {}
        }
    }
    v.to_string()
}

/// The latest count of each (ad, minute, filter key) on the output feed, in
/// stream order: `{"device":"ios","country":"US"}` → `country=US&device=ios`.
async fn feed_counts(
    js: &async_nats::jetstream::Context,
) -> Result<HashMap<(String, i64, String), u64>, String> {
    let mut out = HashMap::new();
    for (subject, v) in feed_messages(js).await {
        if !subject.starts_with("agg.counts.") {
            continue;
        }
        let minute = parse_rfc3339(v["minute"].as_str().unwrap_or_default())
            .ok_or_else(|| format!("bad minute in {v}"))?;
        for c in v["counts"].as_array().into_iter().flatten() {
            let ad = c["ad_id"].as_str().unwrap_or_default().to_string();
            out.insert(
                (ad, minute, filter_key(&c["filter"])),
                c["count"].as_u64().unwrap_or(0),
            );
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_dimensions_count_exactly_with_a_cap() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = Adclick::start_settled(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_WATERMARK_DELAY", "2s"),
            ("ADCLICK_ALLOWED_LATENESS", "1h"),
            ("ADCLICK_IDLE_TIMEOUT", "300ms"),
            ("ADCLICK_EXTRA_DIMENSIONS", "device,placement"),
            ("ADCLICK_DIMENSION_CAP", "100"),
            ("ADCLICK_DIMENSION_CAPS", "device=3"),
            (
                "ADCLICK_DIMENSION_SETS",
                ";device;country,device;device,placement",
            ),
        ],
    )
    .await;
    let js = nats.jetstream().await;

    let ads: Vec<String> = (0..6).map(|i| format!("ad-{i}")).collect();
    assert!(
        (0..PARTITIONS).all(|p| ads.iter().any(|a| partition_of(a, PARTITIONS) == p)),
        "the ads cover every partition"
    );
    let devices: Vec<Field> = ["ios", "android", "web", "tv", "car", "watch", "other", ""]
        .iter()
        .map(|d| Field::Text(d.to_string()))
        .chain([Field::Absent, Field::Number, Field::Text("x".repeat(65))])
        .collect();
    let placements = [
        Field::Text("top".into()),
        Field::Text("side".into()),
        Field::Absent,
    ];
    let countries = ["US", "DE"];

    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(7);
    let mut admission = Admission::default();
    let mut oracle = Oracle::default();
    let mut messages = Vec::new();
    // Published in this order, which is the stream order the cap follows.
    for i in 0..400 {
        let ad = &ads[rng.below(ads.len() as u64) as usize];
        let ts = t0 + rng.below(4 * MINUTE as u64) as i64;
        let device = &devices[rng.below(devices.len() as u64) as usize];
        let placement = &placements[rng.below(3) as usize];
        let country = countries[rng.below(2) as usize];
        let id = format!("c-{i}");
        messages.push((
            format!("clicks.{ad}"),
            payload(
                &id,
                ad,
                ts,
                country,
                &[("device", device), ("placement", placement)],
            ),
            Some(id),
        ));
        let p = partition_of(ad, PARTITIONS);
        let d = admission.value(p, "device", DEVICE_CAP, device);
        let pl = admission.value(p, "placement", 100, placement);
        let minute = ts.div_euclid(MINUTE) * MINUTE;
        for key in [
            String::new(),
            format!("device={d}"),
            format!("country={country}&device={d}"),
            format!("device={d}&placement={pl}"),
        ] {
            *oracle.counts.entry((ad.clone(), minute, key)).or_insert(0) += 1;
        }
    }
    assert!(admission.overflow > 20, "the test drives the cap");
    publish_raw(&js, &messages).await;

    let (from, to) = (t0, t0 + 4 * MINUTE);
    let total = oracle.total() as f64;
    eventually(Duration::from_secs(30), || async {
        let counted = service.metric("adclick_events_counted_total").await;
        if counted == total {
            Ok(())
        } else {
            Err(format!("{counted} of {total} counted"))
        }
    })
    .await;

    // Every filter the oracle knows, and values that never counted here.
    let mut keys: Vec<String> = oracle.counts.keys().map(|(_, _, k)| k.clone()).collect();
    keys.extend(
        [
            "device=ios",
            "device=car",
            "device=watch",
            "device=never",
            "device=other",
            "device=unknown",
            "country=US&device=other",
            "device=other&placement=unknown",
        ]
        .map(String::from),
    );
    keys.sort();
    keys.dedup();
    for ad in &ads {
        for key in &keys {
            count_matches(&service, &oracle, ad, key, from, to)
                .await
                .unwrap();
        }
    }
    // Per minute too, for one filter.
    for m in 0..4 {
        let f = t0 + m * MINUTE;
        count_matches(&service, &oracle, &ads[0], "device=other", f, f + MINUTE)
            .await
            .unwrap();
    }

    // popular under extra-dimension filters, and the filter echoed back.
    for (query, key) in [
        ("device=other", "device=other"),
        ("device=ios&placement=top", "device=ios&placement=top"),
        ("country=DE&device=unknown", "country=DE&device=unknown"),
    ] {
        let (status, v) = service
            .get(&format!(
                "/v1/ads/popular?count=10&window=4&at={to}&{query}"
            ))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(ranked(&v), oracle.top(key, from, to, 10), "popular?{query}");
        let echoed: Vec<String> = v["filter"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        assert_eq!(echoed.join("&"), key, "{v}");
    }

    assert_eq!(
        service.metric("adclick_dimension_overflow_total").await,
        admission.overflow as f64
    );

    // The output feed: once the minutes are closed, its latest count of
    // every counter is the oracle's, filters rendered with the values' text.
    eventually(Duration::from_secs(30), || async {
        let feed = feed_counts(&js).await?;
        for (counter, want) in &oracle.counts {
            let got = feed.get(counter).copied().unwrap_or(0);
            if got != *want {
                return Err(format!("feed has {got} for {counter:?}, the oracle {want}"));
            }
        }
        let extra = feed
            .iter()
            .filter(|(k, n)| **n != 0 && !oracle.counts.contains_key(*k))
            .count();
        if extra != 0 {
            return Err(format!("{extra} feed counters the oracle does not know"));
        }
        Ok(())
    })
    .await;

    // Undeclared combinations and dimensions.
    for (query, code) in [
        ("placement=top", "unsupported_filter"),
        ("country=US", "unsupported_filter"),
        ("device=ios&ip_type=v4", "unsupported_filter"),
        ("browser=firefox", "unknown_parameter"),
    ] {
        let (status, v) = service
            .get(&format!("/v1/ads/ad-1/aggregated_count?minutes=5&{query}"))
            .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (400, Some(code)),
            "{query}: {v}"
        );
        if code == "unsupported_filter" {
            assert!(
                v["error"].as_str().unwrap_or_default().contains(
                    "supported combinations: [], [device], [country, device], [device, placement]"
                ),
                "{v}"
            );
        }
    }
    let (status, v) = service
        .get("/v1/ads/popular?placement=top&country=US")
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("unsupported_filter"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_values_survive_a_restart() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let settings = [
        ("ADCLICK_PARTITIONS", "1"),
        ("ADCLICK_ALLOWED_LATENESS", "1h"),
        ("ADCLICK_IDLE_TIMEOUT", "300ms"),
        ("ADCLICK_EXTRA_DIMENSIONS", "device"),
        ("ADCLICK_DIMENSION_CAP", "2"),
        ("ADCLICK_DIMENSION_SETS", ";device"),
    ];
    let mut service = Adclick::start_settled(&nats, data.path(), &settings).await;
    let js = nats.jetstream().await;
    let ts = now_ms() - 2 * MINUTE;
    let publish = |devices: &'static [&'static str], first: usize| {
        let js = js.clone();
        async move {
            let messages: Vec<(String, String, Option<String>)> = devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let id = format!("r-{}", first + i);
                    let p = payload(
                        &id,
                        "ad-r",
                        ts,
                        "US",
                        &[("device", &Field::Text(d.to_string()))],
                    );
                    ("clicks.ad-r".to_string(), p, Some(id))
                })
                .collect();
            publish_raw(&js, &messages).await;
        }
    };
    let counted = |service: &Adclick, want: f64| {
        let addr = service.addr;
        async move {
            eventually(Duration::from_secs(30), || async move {
                let (_, body) = adclick::http::get(addr, "/metrics")
                    .await
                    .unwrap_or_default();
                let got: f64 = body
                    .lines()
                    .filter(|l| l.starts_with("adclick_events_counted_total{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got} counted, want {want}"))
                }
            })
            .await
        }
    };

    // a and b take the two places; c is past the cap.
    publish(&["a", "b", "c"], 0).await;
    counted(&service, 3.0).await;
    assert!(service.terminate(Duration::from_secs(10)).success());
    service.restart();
    service.wait_ready().await;

    // After the restart (nothing replayed: all was committed), c stays
    // `other` and d cannot take a place: the admitted values came from the file.
    publish(&["c", "d", "a"], 3).await;
    counted(&service, 3.0).await;
    let from = ts.div_euclid(MINUTE) * MINUTE;
    for (device, want) in [("a", 2), ("b", 1), ("c", 0), ("d", 0), ("other", 3)] {
        let (status, v) = service
            .get(&format!(
                "/v1/ads/ad-r/aggregated_count?from={from}&to={}&device={device}",
                from + MINUTE
            ))
            .await;
        assert_eq!(
            (status, v["count"].as_u64()),
            (200, Some(want)),
            "device={device}: {v}"
        );
        assert_eq!(v["filter"], json!({"device": device}));
    }
    assert_eq!(
        service.metric("adclick_dimension_overflow_total").await,
        2.0,
        "c and d, since this start"
    );
}
