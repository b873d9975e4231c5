//! Restarts mid-stream on the same data dir: after SIGTERM (drain, commit,
//! ack, exit 0) and after SIGKILL (no chance to commit), the answers are
//! still exactly the oracle's: nothing lost, nothing counted twice.

mod common;

use adclick::loadgen::Rng;
use common::*;
use std::time::{Duration, Instant};

const MINUTE: i64 = 60_000;
const SETTINGS: &[(&str, &str)] = &[
    ("ADCLICK_PARTITIONS", "4"),
    ("ADCLICK_WATERMARK_DELAY", "2s"),
    ("ADCLICK_ALLOWED_LATENESS", "1h"),
    ("ADCLICK_IDLE_TIMEOUT", "300ms"),
    ("ADCLICK_BATCH_SIZE", "200"),
];

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

async fn restart_mid_stream(how: Stop) {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(&nats, data.path(), SETTINGS);
    service.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let js = nats.jetstream().await;

    let now = now_ms();
    let t0 = now.div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(7);
    let mut oracle = Oracle::default();
    let mut messages = Vec::new();
    let mut sent: Vec<TestClick> = Vec::new();
    let mut repeats = 0;
    for i in 0..30_000 {
        // About 3% repeat an earlier click (no Nats-Msg-Id: adclick must drop
        // them), often one published before the restart.
        if !sent.is_empty() && rng.below(100) < 3 {
            let again = &sent[rng.below(sent.len() as u64) as usize];
            messages.push((format!("clicks.{}", again.ad), again.payload(), None));
            repeats += 1;
            continue;
        }
        let click = TestClick {
            click_id: format!("r-{i}"),
            ad: format!("ad-{}", rng.below(20)),
            ts: t0 + rng.below(5 * MINUTE as u64) as i64,
            country: [Some("US"), Some("FR"), None][rng.below(3) as usize],
            ip: [Some("10.1.1.1"), Some("::1")][rng.below(2) as usize],
        };
        oracle.count(&click);
        messages.push((format!("clicks.{}", click.ad), click.payload(), None));
        sent.push(click);
    }

    // Publish at about 5,000 messages a second while the service is stopped and restarted.
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for chunk in messages.chunks(500) {
                publish_raw(&js, chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for pause in [1500, 1500] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match how {
            Stop::Term => {
                let asked = Instant::now();
                let status = service.terminate(Duration::from_secs(10));
                assert!(
                    status.success(),
                    "SIGTERM exits 0, got {status}; log:\n{}",
                    service.log()
                );
                assert!(asked.elapsed() < Duration::from_secs(10));
                assert!(
                    service.log().contains("stopping: no more fetches"),
                    "drain logged"
                );
                service.restart();
            }
            Stop::Kill => service.restart(), // SIGKILL, then start again
        }
        service.wait_ready().await;
    }
    publisher.await.unwrap();

    let ads: Vec<String> = (0..20).map(|i| format!("ad-{i}")).collect();
    eventually(Duration::from_secs(60), || async {
        for ad in &ads {
            for m in 0..5 {
                let from = t0 + m * MINUTE;
                let (_, v) = service
                    .get(&format!(
                        "/v1/ads/{ad}/aggregated_count?from={from}&to={}",
                        from + MINUTE
                    ))
                    .await;
                let want = oracle.range(ad, "", from, from + MINUTE);
                if v["count"] != want {
                    return Err(format!("{how:?}: {ad} minute {m}: got {v}, want {want}"));
                }
            }
            let (_, v) = service
                .get(&format!(
                    "/v1/ads/{ad}/aggregated_count?from={t0}&to={}&country=US&ip_type=v6",
                    t0 + 5 * MINUTE
                ))
                .await;
            let want = oracle.range(ad, "country=US&ip_type=v6", t0, t0 + 5 * MINUTE);
            if v["count"] != want {
                return Err(format!("{how:?}: {ad} US/v6: got {v}, want {want}"));
            }
        }
        Ok(())
    })
    .await;
    let (_, v) = service
        .get(&format!(
            "/v1/ads/popular?count=20&window=5&at={}",
            t0 + 5 * MINUTE
        ))
        .await;
    let got: Vec<(String, u64)> = v["ads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["ad_id"].as_str().unwrap().to_string(),
                a["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, oracle.top("", t0, t0 + 5 * MINUTE, 20));
    // The last process resumed after its checkpoint: it did not re-read
    // committed messages (which dedup would also have caught).
    let dropped = service.metric("adclick_events_duplicate_total").await;
    assert!(
        dropped <= repeats as f64,
        "{how:?}: {dropped} duplicates dropped, only {repeats} sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_is_exact() {
    restart_mid_stream(Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_is_exact() {
    restart_mid_stream(Stop::Kill).await;
}
