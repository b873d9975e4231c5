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

/// Stops and restarts the service `cycles` times at random moments while
/// `clicks` messages are published (3% repeats; 1% too late, which must land
/// on the rejected stream exactly once despite replays).
async fn restart_mid_stream(how: Stop, cycles: usize, clicks: usize) {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start_settled(&nats, data.path(), SETTINGS).await;
    let js = nats.jetstream().await;

    let now = now_ms();
    let t0 = now.div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(7);
    let mut oracle = Oracle::default();
    let mut messages = Vec::new();
    let mut sent: Vec<TestClick> = Vec::new();
    let mut repeats = 0;
    let mut too_late = 0;
    for i in 0..clicks {
        if rng.below(100) == 0 {
            let old = TestClick {
                click_id: format!("old-{i}"),
                ad: "ad-0".into(),
                ts: now - 3 * 3_600_000,
                country: None,
                ip: None,
            };
            messages.push(("clicks.ad-0".to_string(), old.payload(), None));
            too_late += 1;
            continue;
        }
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
    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
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
                count_matches(&service, &oracle, ad, "", from, from + MINUTE)
                    .await
                    .map_err(|e| format!("{how:?}: {e}"))?;
            }
            let us_v6 = "country=US&ip_type=v6";
            count_matches(&service, &oracle, ad, us_v6, t0, t0 + 5 * MINUTE)
                .await
                .map_err(|e| format!("{how:?}: {e}"))?;
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
    let got = ranked(&v);
    assert_eq!(got, oracle.top("", t0, t0 + 5 * MINUTE, 20));
    // The last process resumed after its checkpoint: it did not re-read
    // committed messages (which dedup would also have caught).
    let dropped = service.metric("adclick_events_duplicate_total").await;
    assert!(
        dropped <= repeats as f64,
        "{how:?}: {dropped} duplicates dropped, only {repeats} sent"
    );
    eventually(Duration::from_secs(30), || async {
        match stored_messages(&js, "CLICKS_REJECTED", "rejected.too_late").await {
            n if n == too_late => Ok(()),
            n => Err(format!(
                "{how:?}: {n} too-late rejects stored, {too_late} sent"
            )),
        }
    })
    .await;
    eprintln!("{how:?}: {cycles} restarts over {clicks} messages ({repeats} repeats, {too_late} too late): exact");
}

/// Cycles and messages of the SIGKILL run: short by default, long with
/// ADCLICK_SOAK=1 (docs/RELIABILITY.md gives the figures of the long run).
fn kill_run() -> (usize, usize) {
    if std::env::var("ADCLICK_SOAK").is_ok_and(|v| v == "1") {
        (12, 120_000)
    } else {
        (4, 30_000)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_is_exact() {
    restart_mid_stream(Stop::Term, 2, 30_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_is_exact() {
    let (cycles, clicks) = kill_run();
    restart_mid_stream(Stop::Kill, cycles, clicks).await;
}

/// A damaged partition file: start-up refuses it (see startup.rs), and
/// `adclick rebuild` recounts that partition from the retained stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_partition_is_rebuilt_from_the_stream() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(&nats, data.path(), SETTINGS);
    service.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(11);
    let mut oracle = Oracle::default();
    let mut messages = Vec::new();
    for i in 0..4_000 {
        let click = TestClick {
            click_id: format!("d-{i}"),
            ad: format!("ad-{}", rng.below(20)),
            ts: t0 + rng.below(5 * MINUTE as u64) as i64,
            country: None,
            ip: None,
        };
        oracle.count(&click);
        messages.push((format!("clicks.{}", click.ad), click.payload(), None));
    }
    publish_raw(&nats.jetstream().await, &messages).await;
    let ads: Vec<String> = (0..20).map(|i| format!("ad-{i}")).collect();
    let exact = |service: &Adclick| {
        let (ads, oracle) = (&ads, &oracle);
        let addr = service.addr;
        async move {
            for ad in ads {
                let path = format!(
                    "/v1/ads/{ad}/aggregated_count?from={t0}&to={}",
                    t0 + 5 * MINUTE
                );
                let (_, body) = adclick::http::get(addr, &path)
                    .await
                    .map_err(|e| e.to_string())?;
                let v: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let want = oracle.range(ad, "", t0, t0 + 5 * MINUTE);
                if v["count"] != want {
                    return Err(format!("{ad}: got {v}, want {want}"));
                }
            }
            Ok(())
        }
    };
    eventually(Duration::from_secs(30), || exact(&service)).await;

    let env: Vec<(&str, &str)> = SETTINGS.to_vec();
    let (status, log) = Adclick::run_command(
        &["rebuild", "--partition", "2"],
        &nats.url(),
        data.path(),
        &env,
    );
    assert!(
        !status.success() && log.contains("stop `adclick serve`"),
        "refused while serving: {log}"
    );

    assert!(service.terminate(Duration::from_secs(10)).success());
    std::fs::write(data.path().join("partition-2.redb"), vec![0xAB; 4096]).unwrap();
    let (status, log) = Adclick::run_command(
        &["rebuild", "--partition", "2"],
        &nats.url(),
        data.path(),
        &env,
    );
    assert!(status.success(), "rebuild: {log}");
    assert!(log.contains("moved") && log.contains("rebuilt"), "{log}");
    let aside = std::fs::read_dir(data.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("partition-2.redb.damaged-")
        });
    assert!(aside, "the damaged file is kept, moved aside");

    service.restart();
    service.wait_ready().await;
    eventually(Duration::from_secs(30), || exact(&service)).await;
}
