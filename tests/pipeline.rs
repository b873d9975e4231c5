//! End to end against a real nats-server: a known stream with repeats (with
//! and without `Nats-Msg-Id`), disorder, late corrections, several ads,
//! countries and ip types, too-late, future and invalid messages. Every REST
//! answer must equal an independent oracle exactly.

mod common;

use adclick::loadgen::Rng;
use adclick_actors::partitions::partition_of;
use common::*;
use serde_json::Value;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const SETTINGS: &[(&str, &str)] = &[
    ("ADCLICK_PARTITIONS", "4"),
    ("ADCLICK_WATERMARK_DELAY", "2s"),
    ("ADCLICK_ALLOWED_LATENESS", "1h"),
    ("ADCLICK_IDLE_TIMEOUT", "300ms"),
];
const COUNTRIES: [Option<&str>; 4] = [Some("US"), Some("de"), None, Some("XYZ")];
const IPS: [Option<&str>; 4] = [Some("10.0.0.1"), Some("2001:db8::1"), None, Some("garbage")];

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_answers_equal_the_oracle_exactly() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = Adclick::start_settled(&nats, data.path(), SETTINGS).await;
    let js = nats.jetstream().await;

    let now = now_ms();
    let t0 = now.div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(42);
    let mut oracle = Oracle::default();
    let ads: Vec<String> = (0..12).map(|i| format!("ad-{i}")).collect();

    // Closed minutes t0..t0+5 (late corrections: lateness is 1 h), counts built to tie.
    let mut clicks = Vec::new();
    for (a, ad) in ads.iter().enumerate() {
        for m in 0..5 {
            for k in 0..((a % 4) + (m % 2) + 1) {
                clicks.push(TestClick {
                    click_id: format!("c-{a}-{m}-{k}"),
                    ad: ad.clone(),
                    ts: t0 + m as i64 * MINUTE + rng.below(MINUTE as u64) as i64,
                    country: COUNTRIES[rng.below(4) as usize],
                    ip: IPS[rng.below(4) as usize],
                });
            }
        }
    }
    // Live clicks, disordered within the watermark delay.
    for i in 0..40 {
        clicks.push(TestClick {
            click_id: format!("live-{i}"),
            ad: ads[i % 3].clone(),
            ts: now - rng.below(1500) as i64,
            country: COUNTRIES[i % 4],
            ip: IPS[(i / 4) % 4],
        });
    }
    // Boundaries: the first and last millisecond of a minute.
    for (i, ts) in [t0 + MINUTE, t0 + 2 * MINUTE - 1].into_iter().enumerate() {
        clicks.push(TestClick {
            click_id: format!("edge-{i}"),
            ad: "ad-edge".into(),
            ts,
            country: None,
            ip: None,
        });
    }
    for c in &clicks {
        oracle.count(c);
    }

    // Messages: even clicks carry Nats-Msg-Id, odd ones do not.
    let mut messages: Vec<(String, String, Option<String>)> = clicks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("clicks.{}", c.ad),
                c.payload(),
                (i % 2 == 0).then(|| c.click_id.clone()),
            )
        })
        .collect();
    // Repeats: the broker drops the ones with the same Nats-Msg-Id; adclick must drop the rest.
    let mut repeats_reaching_adclick = 0;
    for i in (0..clicks.len()).step_by(7) {
        let c = &clicks[i];
        let with_id = i % 2 == 0 && i % 3 == 0;
        if !with_id {
            repeats_reaching_adclick += 1;
        }
        messages.push((
            format!("clicks.{}", c.ad),
            c.payload(),
            with_id.then(|| c.click_id.clone()),
        ));
    }
    // Too late (older than allowed lateness), future, invalid: never counted.
    for (i, ad) in ads.iter().enumerate().take(7) {
        let c = TestClick {
            click_id: format!("old-{i}"),
            ad: ad.clone(),
            ts: now - 2 * 3_600_000,
            country: None,
            ip: None,
        };
        messages.push((format!("clicks.{}", c.ad), c.payload(), None));
    }
    for (i, ad) in ads.iter().enumerate().take(5) {
        let c = TestClick {
            click_id: format!("future-{i}"),
            ad: ad.clone(),
            ts: now + 10 * MINUTE,
            country: None,
            ip: None,
        };
        messages.push((format!("clicks.{}", c.ad), c.payload(), None));
    }
    let invalid = [
        ("clicks.ad-1", "{not json".to_string()),
        (
            "clicks.ad-1",
            r#"{"click_id":"x1","ad_id":"ad-1"}"#.to_string(),
        ),
        (
            "clicks.ad-1",
            format!(r#"{{"click_id":"x2","ad_id":"ad-2","ts":{now}}}"#),
        ),
        (
            "clicks.ad-1",
            format!(r#"{{"click_id":"x3","ad_id":"ad-1","ts":{now}.5}}"#),
        ),
        (
            "clicks.ad-1",
            format!(r#"{{"click_id":"","ad_id":"ad-1","ts":{now}}}"#),
        ),
        (
            "clicks.ad-1",
            format!(
                r#"{{"click_id":"x4","ad_id":"ad-1","ts":{now},"pad":"{}"}}"#,
                "p".repeat(5000)
            ),
        ),
    ];
    for (subject, payload) in &invalid {
        messages.push((subject.to_string(), payload.clone(), None));
    }
    shuffle(&mut messages[..], &mut rng);
    publish_raw(&js, &messages).await;

    // Counts per ad and minute, unfiltered.
    let check_minutes = || async {
        for ad in ads.iter().chain(std::iter::once(&"ad-edge".to_string())) {
            for m in 0..5 {
                let from = t0 + m * MINUTE;
                count_matches(&service, &oracle, ad, "", from, from + MINUTE).await?;
            }
        }
        Ok(())
    };
    eventually(Duration::from_secs(30), check_minutes).await;

    // Every filter combination over the whole range, with RFC 3339 bounds.
    let from_text = adclick_actors::time::format_rfc3339(t0);
    let to_text = adclick_actors::time::format_rfc3339(t0 + 5 * MINUTE);
    let mut filters = vec![(String::new(), String::new())];
    for c in ["US", "DE", "ZZ"] {
        filters.push((format!("&country={c}"), format!("country={c}")));
        for t in ["v4", "v6", "unknown"] {
            filters.push((
                format!("&country={c}&ip_type={t}"),
                format!("country={c}&ip_type={t}"),
            ));
        }
    }
    for t in ["v4", "v6", "unknown"] {
        filters.push((format!("&ip_type={t}"), format!("ip_type={t}")));
    }
    for ad in &ads {
        for (query, key) in &filters {
            let (status, v) = service
                .get(&format!(
                    "/v1/ads/{ad}/aggregated_count?from={from_text}&to={to_text}{query}"
                ))
                .await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(
                v["count"],
                oracle.range(ad, key, t0, t0 + 5 * MINUTE),
                "{ad} {key}: {v}"
            );
            assert_eq!(v["complete"], true, "{v}");
            assert_eq!(v["final"], false, "lateness is 1 h: {v}");
            assert_eq!(v["from"], from_text.as_str());
        }
    }

    // Live minutes (the open one included).
    let live_from = now.div_euclid(MINUTE) * MINUTE - MINUTE;
    for ad in &ads[..3] {
        let (_, v) = service
            .get(&format!(
                "/v1/ads/{ad}/aggregated_count?from={live_from}&to={}",
                live_from + 3 * MINUTE
            ))
            .await;
        assert_eq!(
            v["count"],
            oracle.range(ad, "", live_from, live_from + 3 * MINUTE),
            "{v}"
        );
        assert_eq!(v["complete"], false, "the range reaches open minutes: {v}");
    }

    // Top-N over the closed window, with ties broken by ad id.
    for (query, key, n) in [
        ("", "", 5usize),
        ("&country=US", "country=US", 3),
        ("&ip_type=v6", "ip_type=v6", 1000),
    ] {
        let (status, v) = service
            .get(&format!(
                "/v1/ads/popular?count={n}&window=5&at={}{query}",
                t0 + 5 * MINUTE
            ))
            .await;
        assert_eq!(status, 200, "{v}");
        let got = ranked(&v);
        assert_eq!(
            got,
            oracle.top(key, t0, t0 + 5 * MINUTE, n),
            "popular{query}"
        );
        assert_eq!(v["complete"], true);
        assert_eq!(v["window_minutes"], 5);
    }
    let (_, v) = service
        .get(&format!(
            "/v1/ads/popular?count=3&window=1&at={}",
            t0 + MINUTE
        ))
        .await;
    let top1: Vec<Value> = oracle
        .top("", t0, t0 + MINUTE, 3)
        .into_iter()
        .map(|(a, c)| serde_json::json!({"ad_id": a, "count": c}))
        .collect();
    assert_eq!(v["ads"], Value::Array(top1), "sliding window of one minute");

    // Nothing lost: every rejected message is on CLICKS_REJECTED, and counted.
    assert_eq!(
        stored_messages(&js, "CLICKS_REJECTED", "rejected.invalid").await,
        invalid.len() as u64
    );
    assert_eq!(
        stored_messages(&js, "CLICKS_REJECTED", "rejected.too_late").await,
        7
    );
    assert_eq!(
        stored_messages(&js, "CLICKS_REJECTED", "rejected.future").await,
        5
    );
    assert_eq!(
        service.metric("adclick_events_invalid_total").await,
        invalid.len() as f64
    );
    assert_eq!(service.metric("adclick_events_too_late_total").await, 7.0);
    assert_eq!(service.metric("adclick_events_future_total").await, 5.0);
    assert_eq!(
        service.metric("adclick_events_duplicate_total").await,
        repeats_reaching_adclick as f64
    );
    assert_eq!(
        service.metric("adclick_events_counted_total").await,
        oracle.total() as f64
    );
    // Every histogram is a cumulative one (buckets add up across pods), and
    // the batch sizes add up to the messages consumed.
    let (_, exposition) = adclick::http::get(service.addr, "/metrics")
        .await
        .expect("GET /metrics");
    assert!(
        !exposition.contains("quantile="),
        "a histogram is exported as a summary"
    );
    assert_eq!(
        service.metric("adclick_batch_messages_sum").await,
        service.metric("adclick_events_consumed_total").await
    );
    assert!(
        service
            .metric("adclick_checkpoint_duration_seconds_count")
            .await
            > 0.0
    );

    // The status an operator reads says the same, partition by partition.
    let (status, v) = service.get("/v1/status").await;
    assert_eq!(status, 200, "{v}");
    let totals = &v["totals"];
    assert_eq!(totals["counted"], oracle.total() as f64, "{v}");
    assert_eq!(totals["rejected"]["invalid"], invalid.len() as f64, "{v}");
    assert_eq!(totals["rejected"]["too_late"], 7.0, "{v}");
    assert_eq!(totals["rejected"]["future"], 5.0, "{v}");
    assert_eq!(totals["duplicate"], repeats_reaching_adclick as f64, "{v}");
    assert_eq!(
        totals["consumed"],
        service.metric("adclick_events_consumed_total").await,
        "{v}"
    );
    let rows = v["partitions"].as_array().expect("partitions");
    assert_eq!(rows.len(), 4, "{v}");
    for (p, row) in rows.iter().enumerate() {
        assert_eq!(row["partition"], p as u64, "{row}");
        assert_eq!(
            (row["ready"].as_bool(), row["runs_here"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(row["pending"], 0, "{row}");
        assert_eq!(row["restarts"], 0, "{row}");
        assert!(
            row["last_commit"].is_string() && row["watermark"].is_string(),
            "{row}"
        );
    }
    assert_eq!(v["ready"], true);

    // adclick's partition function is the broker's.
    let stream = js.get_stream("CLICKS").await.unwrap();
    for ad in &ads {
        let subject = format!("clicks.p.{}.{ad}", partition_of(ad, 4));
        assert!(
            stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .is_ok(),
            "{subject} holds the ad's clicks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = Adclick::start_settled(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_DIMENSION_SETS", ";country"),
            ("ADCLICK_IDLE_TIMEOUT", "300ms"),
        ],
    )
    .await;

    let cases = [
        (
            "/v1/ads/ad-1/aggregated_count?contry=US",
            400,
            "unknown_parameter",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?ip_type=v4",
            400,
            "unsupported_filter",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?country=USA",
            400,
            "invalid_filter_value",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?from=0",
            400,
            "missing_parameter",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?from=0&to=60000&minutes=3",
            400,
            "conflicting_parameters",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?from=120000&to=60000",
            400,
            "invalid_range",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?from=yesterday&to=0",
            400,
            "invalid_time",
        ),
        (
            "/v1/ads/ad-1/aggregated_count?minutes=0",
            400,
            "invalid_parameter",
        ),
        ("/v1/ads/ad.1/aggregated_count", 400, "invalid_ad_id"),
        // Not UTF-8 once percent-decoded: was axum's text/plain 400, outside the
        // documented JSON error body.
        ("/v1/ads/%FF/aggregated_count", 400, "invalid_ad_id"),
        ("/v1/ads/popular?count=1001", 400, "invalid_parameter"),
        ("/v1/ads/popular?window=2000", 400, "invalid_parameter"),
        ("/v1/ads/popular?count=5&count=6", 400, "repeated_parameter"),
        ("/nope", 404, "not_found"),
        // Before the retained history (30 days behind the watermark): refused, not 0.
        (
            "/v1/ads/ad-1/aggregated_count?from=0&to=60000",
            400,
            "outside_retention",
        ),
        ("/v1/ads/popular?at=60000", 400, "outside_retention"),
    ];
    for (path, status, code) in cases {
        let (got, v) = service.get(path).await;
        assert_eq!(
            (got, v["code"].as_str()),
            (status, Some(code)),
            "{path}: {v}"
        );
        assert!(
            v["error"].as_str().is_some_and(|e| e.len() > 10),
            "{path}: a sentence: {v}"
        );
    }
    let (status, v) = service
        .get("/v1/ads/unknown-ad/aggregated_count?minutes=5&country=us")
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["count"], 0, "an ad with no clicks counts 0: {v}");
    assert_eq!(v["filter"]["country"], "US");

    let (status, v) = service.get("/healthz").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    let (status, v) = service.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/ads/{ad_id}/aggregated_count",
        "/v1/ads/popular",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(v["paths"][path].is_object(), "openapi documents {path}");
    }
    let (status, _) = adclick::http::get(service.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let (status, page) = adclick::http::get(service.addr, "/docs").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("fetch(\"/openapi.json\")"),
        "the docs page renders the OpenAPI document"
    );
}

/// More rejects at once than async-nats lets a connection await (5,000):
/// all of them reach the rejected stream, and counting goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_messages_is_rejected_without_stalling() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(&nats, data.path(), &[("ADCLICK_PARTITIONS", "8")]);
    service.wait_ready().await; // creates the streams
    assert!(service.terminate(Duration::from_secs(10)).success());
    // A backlog, so that every partition starts with full batches of rejects.
    let js = nats.jetstream().await;
    let flood: Vec<(String, String, Option<String>)> = (0..24_000)
        .map(|i| {
            (
                format!("clicks.ad-{}", i % 64),
                format!("not json {i}"),
                None,
            )
        })
        .collect();
    publish_raw(&js, &flood).await;
    let click = TestClick {
        click_id: "after".into(),
        ad: "ad-1".into(),
        ts: now_ms(),
        country: None,
        ip: None,
    };
    publish_raw(&js, &[("clicks.ad-1".into(), click.payload(), None)]).await;
    service.restart();
    eventually(Duration::from_secs(60), || async {
        let rejected = stored_messages(&js, "CLICKS_REJECTED", "rejected.invalid").await;
        let counted = service.metric("adclick_events_counted_total").await;
        if rejected == 24_000 && counted == 1.0 {
            Ok(())
        } else {
            Err(format!("{rejected} rejected, {counted} counted"))
        }
    })
    .await;
}

/// A backlog far larger than what may be in flight: ingest never has more
/// than `max_batches_in_flight` batches uncommitted (so memory stays
/// bounded, whatever the backlog), and the service catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_drains_with_bounded_work_in_flight() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let settings = [
        ("ADCLICK_PARTITIONS", "2"),
        ("ADCLICK_BATCH_SIZE", "50"),
        ("ADCLICK_MAX_BATCHES_IN_FLIGHT", "3"),
        ("ADCLICK_ALLOWED_LATENESS", "1h"),
    ];
    let mut service = Adclick::start(&nats, data.path(), &settings);
    service.wait_ready().await;
    assert!(service.terminate(Duration::from_secs(10)).success());
    let ts = now_ms() - MINUTE;
    let backlog: Vec<(String, String, Option<String>)> = (0..40_000)
        .map(|i| {
            let c = TestClick {
                click_id: format!("b-{i}"),
                ad: format!("ad-{}", i % 50),
                ts,
                country: None,
                ip: None,
            };
            (format!("clicks.{}", c.ad), c.payload(), None)
        })
        .collect();
    publish_raw(&nats.jetstream().await, &backlog).await;
    service.restart();
    let mut most = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = adclick::http::get(service.addr, "/metrics")
            .await
            .unwrap_or_default();
        for line in body
            .lines()
            .filter(|l| l.starts_with("adclick_batches_in_flight{"))
        {
            most = most.max(
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0),
            );
        }
        if service.metric("adclick_events_counted_total").await == 40_000.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backlog not drained in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most > 0.0, "the gauge was observed while draining");
    assert!(
        most <= 3.0,
        "at most 3 batches in flight per partition, saw {most}"
    );
}
