//! Faults, each injected for real (fault points need the `fault-injection`
//! feature, which `scripts/test` turns on): an actor panics; the process dies
//! right before or right after a commit; nats-server goes away and comes back.
//! After each, the answers equal the oracle exactly.
#![cfg(feature = "fault-injection")]

mod common;

use adclick::loadgen::Rng;
use common::*;
use std::time::Duration;

const MINUTE: i64 = 60_000;

fn settings(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = vec![
        ("ADCLICK_PARTITIONS", "4"),
        ("ADCLICK_WATERMARK_DELAY", "2s"),
        ("ADCLICK_ALLOWED_LATENESS", "1h"),
        ("ADCLICK_IDLE_TIMEOUT", "300ms"),
        ("ADCLICK_BATCH_SIZE", "100"),
    ];
    all.extend_from_slice(extra);
    all
}

/// A stream of `n` clicks over 12 ads in five closed minutes, 3% repeats.
fn stream(n: usize, seed: u64, t0: i64) -> (Vec<(String, String, Option<String>)>, Oracle) {
    let mut rng = Rng::new(seed);
    let mut oracle = Oracle::default();
    let mut sent: Vec<TestClick> = Vec::new();
    let mut messages = Vec::new();
    for i in 0..n {
        if !sent.is_empty() && rng.below(100) < 3 {
            let again = &sent[rng.below(sent.len() as u64) as usize];
            messages.push((format!("clicks.{}", again.ad), again.payload(), None));
            continue;
        }
        let click = TestClick {
            click_id: format!("f{seed}-{i}"),
            ad: format!("ad-{}", rng.below(12)),
            ts: t0 + rng.below(5 * MINUTE as u64) as i64,
            country: [Some("US"), Some("JP"), None][rng.below(3) as usize],
            ip: [Some("10.0.0.9"), Some("::1")][rng.below(2) as usize],
        };
        oracle.count(&click);
        messages.push((format!("clicks.{}", click.ad), click.payload(), None));
        sent.push(click);
    }
    (messages, oracle)
}

async fn assert_exact(service: &Adclick, oracle: &Oracle, t0: i64, what: &str) {
    eventually(Duration::from_secs(60), || async {
        for a in 0..12 {
            let ad = format!("ad-{a}");
            for m in 0..5 {
                let from = t0 + m * MINUTE;
                count_matches(service, oracle, &ad, "country=US", from, from + MINUTE)
                    .await
                    .map_err(|e| format!("{what}: {e}"))?;
            }
            count_matches(service, oracle, &ad, "", t0, t0 + 5 * MINUTE)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(())
    })
    .await;
}

async fn started(
    nats: &NatsServer,
    data: &std::path::Path,
    extra: &[(&'static str, &'static str)],
) -> Adclick {
    Adclick::start_settled(nats, data, &settings(extra)).await
}

fn t0() -> i64 {
    now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_is_rebuilt_from_its_checkpoint_and_the_rest_keep_going() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = started(&nats, data.path(), &[("ADCLICK_FAULT", "panic-window:1:5")]).await;
    let t0 = t0();
    let (messages, oracle) = stream(8_000, 1, t0);
    publish_raw(&nats.jetstream().await, &messages).await;
    assert_exact(&service, &oracle, t0, "after a panic").await;
    let restarts = service
        .metric("adclick_actor_restarts_total{partition=\"1\"}")
        .await;
    assert_eq!(restarts, 1.0, "partition 1 was rebuilt once");
    assert_eq!(
        service.metric("adclick_actor_restarts_total").await,
        1.0,
        "no other partition restarted"
    );
    assert!(
        service.log().contains("injected fault"),
        "the fault really fired"
    );
}

async fn crash_at(point: &'static str) {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let fault = match point {
        "abort-before-commit" => "abort-before-commit:2:4",
        _ => "abort-after-commit:2:4",
    };
    let mut service = started(&nats, data.path(), &[("ADCLICK_FAULT", fault)]).await;
    let t0 = t0();
    let (messages, oracle) = stream(8_000, 2, t0);
    publish_raw(&nats.jetstream().await, &messages).await;
    let status = service.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "{point}: the process died at the fault point"
    );
    service.unset_env("ADCLICK_FAULT");
    service.restart();
    service.wait_ready().await;
    assert_exact(&service, &oracle, t0, point).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_fetch_and_commit_loses_nothing() {
    crash_at("abort-before-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_ack_counts_nothing_twice() {
    crash_at("abort-after-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_going_away_and_back_is_survived() {
    let mut nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = started(&nats, data.path(), &[]).await;
    let t0 = t0();
    let (messages, oracle) = stream(6_000, 3, t0);
    let (first, second) = messages.split_at(3_000);
    publish_raw(&nats.jetstream().await, first).await;

    nats.stop();
    eventually(Duration::from_secs(60), || async {
        match service.get("/readyz").await {
            (503, _) => Ok(()),
            (status, v) => Err(format!("readyz still {status} {v} without a server")),
        }
    })
    .await;
    nats.restart();
    service.wait_ready().await;
    publish_raw(&nats.jetstream().await, second).await;
    assert_exact(&service, &oracle, t0, "after nats-server restarted").await;
}

/// A delivery lost between the server and adclick (a short reconnect): the
/// next delivery's consumer sequence shows the hole, and the partition
/// rebuilds from its checkpoint instead of acking the lost message away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_lost_in_transit_is_fetched_again_not_acked_away() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = started(
        &nats,
        data.path(),
        &[("ADCLICK_FAULT", "drop-delivery:3:50")],
    )
    .await;
    let t0 = t0();
    let (messages, oracle) = stream(4_000, 4, t0);
    publish_raw(&nats.jetstream().await, &messages).await;
    assert_exact(&service, &oracle, t0, "after a lost delivery").await;
    assert!(
        service.log().contains("injected fault: dropped"),
        "the fault really fired"
    );
    let restarts = service
        .metric("adclick_actor_restarts_total{partition=\"3\"}")
        .await;
    // Once a CI run saw two rebuilds (not reproduced since): say why if so.
    assert_eq!(
        restarts,
        1.0,
        "partition 3 rebuilt once; the service's log:\n{}",
        service.log()
    );
}
