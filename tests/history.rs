//! Minutes older than `memory_minutes` are answered from the partition
//! files' minute snapshots: exactly, before and after a restart (which loads
//! only the minutes memory keeps, so the older ones can only come from the
//! file). A low snapshot floor makes full snapshots and log trims happen
//! often, and late corrections change closed minutes in between.

mod common;

use adclick::loadgen::Rng;
use common::*;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const SETTINGS: &[(&str, &str)] = &[
    ("ADCLICK_PARTITIONS", "2"),
    ("ADCLICK_WATERMARK_DELAY", "1s"),
    ("ADCLICK_ALLOWED_LATENESS", "1m"),
    // The watermark follows event time only, so the old clicks below are on time.
    ("ADCLICK_IDLE_TIMEOUT", "1h"),
    ("ADCLICK_MEMORY_MINUTES", "60"),
    ("ADCLICK_SNAPSHOT_LOG_FLOOR", "50"),
];
const COUNTRIES: [Option<&str>; 3] = [Some("US"), Some("DE"), None];
const SPAN: i64 = 78;

async fn answers_match(service: &Adclick, oracle: &Oracle, ads: &[String], t0: i64) {
    eventually(Duration::from_secs(60), || async {
        for ad in ads {
            for m in (0..20).chain([40, 70]) {
                let from = t0 + m * MINUTE;
                count_matches(service, oracle, ad, "", from, from + MINUTE).await?;
            }
            count_matches(service, oracle, ad, "", t0, t0 + SPAN * MINUTE).await?;
            let us = "country=US";
            count_matches(service, oracle, ad, us, t0, t0 + 30 * MINUTE).await?;
        }
        for at in [10, 70] {
            let at = t0 + at * MINUTE;
            let (_, v) = service
                .get(&format!("/v1/ads/popular?count=6&window=5&at={at}"))
                .await;
            let want = oracle.top("", at - 5 * MINUTE, at, 6);
            if ranked(&v) != want {
                return Err(format!("popular at {at}: got {v}, want {want:?}"));
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minutes_beyond_memory_are_answered_from_snapshots_exactly() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(&nats, data.path(), SETTINGS);
    service.wait_ready().await;
    let js = nats.jetstream().await;

    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - (SPAN + 2) * MINUTE;
    let mut rng = Rng::new(11);
    let mut oracle = Oracle::default();
    let ads: Vec<String> = (0..6).map(|i| format!("ad-{i}")).collect();
    let mut clicks = Vec::new();
    for m in 0..SPAN {
        for (a, ad) in ads.iter().enumerate() {
            for k in 0..(1 + (a as i64 + m) % 3) {
                clicks.push(TestClick {
                    click_id: format!("c-{m}-{a}-{k}"),
                    ad: ad.clone(),
                    ts: t0 + m * MINUTE + rng.below(MINUTE as u64) as i64,
                    country: COUNTRIES[rng.below(3) as usize],
                    ip: None,
                });
            }
        }
    }
    // Nearly in event-time order: a click may come up to 30 s after later
    // ones, i.e. after its minute closed (a correction) but well within the
    // lateness, so every click counts.
    let mut keyed: Vec<(i64, TestClick)> = clicks
        .into_iter()
        .map(|c| (c.ts + rng.below(30_000) as i64, c))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    let clicks: Vec<TestClick> = keyed.into_iter().map(|(_, c)| c).collect();
    count_and_publish(&js, &mut oracle, &clicks).await;
    answers_match(&service, &oracle, &ads, t0).await;

    // A clean stop commits everything, so the restart re-reads nothing: the
    // minutes before memory can only come from the file.
    assert!(service.terminate(Duration::from_secs(15)).success());
    service.restart();
    service.wait_ready().await;
    answers_match(&service, &oracle, &ads, t0).await;
    let (_, metrics) = adclick::http::get(service.addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("adclick_events_consumed_total"),
        "metric present"
    );
    assert_eq!(service.metric("adclick_events_consumed_total").await, 0.0);
}
