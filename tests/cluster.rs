//! Many `adclick serve` members on one NATS (`cluster = true`): each
//! partition owned by one member at a time, moved when a member is killed
//! (after `lease_ttl`), when one stops (at once: it hands over) and when one
//! joins; any member answers for every partition, and the answers stay
//! exactly the oracle's throughout: nothing lost, nothing counted twice.

mod common;

use adclick::loadgen::Rng;
use common::*;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const PARTITIONS: f64 = 8.0;
const SETTINGS: &[(&str, &str)] = &[
    ("ADCLICK_PARTITIONS", "8"),
    ("ADCLICK_WATERMARK_DELAY", "2s"),
    ("ADCLICK_ALLOWED_LATENESS", "1h"),
    ("ADCLICK_IDLE_TIMEOUT", "300ms"),
    ("ADCLICK_BATCH_SIZE", "200"),
    ("ADCLICK_CLUSTER", "true"),
    ("ADCLICK_LEASE_TTL", "2s"),
    ("ADCLICK_STATE_SHIP_INTERVAL", "1s"),
];
const ADS: usize = 24;

fn member(nats: &NatsServer, dir: &tempfile::TempDir, id: &str) -> Adclick {
    let mut env = SETTINGS.to_vec();
    env.push(("ADCLICK_MEMBER_ID", id));
    Adclick::start(nats, &dir.path().join(id), &env)
}

/// Clicks over the last ten minutes, `repeats` of them sent twice (the same
/// click id: counted once).
fn clicks(rng: &mut Rng, batch: &str, n: usize, t0: i64) -> Vec<TestClick> {
    (0..n)
        .map(|i| TestClick {
            click_id: format!("{batch}-{i}"),
            ad: format!("ad-{}", rng.below(ADS as u64)),
            ts: t0 + rng.below(9 * MINUTE as u64) as i64,
            country: Some(["US", "DE", "FR"][rng.below(3) as usize]),
            ip: Some(["10.0.0.1", "2001:db8::1"][rng.below(2) as usize]),
        })
        .collect()
}

/// Publishes `batch` (every fifth click twice), counting each click once.
async fn publish(js: &async_nats::jetstream::Context, oracle: &mut Oracle, batch: &[TestClick]) {
    for c in batch {
        oracle.count(c);
    }
    let mut messages: Vec<(String, String, Option<String>)> = Vec::new();
    for (i, c) in batch.iter().enumerate() {
        let message = (format!("clicks.{}", c.ad), c.payload(), None);
        if i % 5 == 0 {
            messages.push(message.clone());
        }
        messages.push(message);
    }
    publish_raw(js, &messages).await;
}

/// Every partition held by exactly one of `members` (their held gauges sum
/// to the partition count, and each answers ready).
async fn all_held(members: &[&Adclick]) -> Result<(), String> {
    let mut held = 0.0;
    for m in members {
        held += m.metric("adclick_partitions_held").await;
        let (status, body) = m.get("/readyz").await;
        if status != 200 {
            return Err(format!("{} not ready: {body}", m.addr));
        }
    }
    if held == PARTITIONS {
        Ok(())
    } else {
        Err(format!("{held} partitions held, want {PARTITIONS}"))
    }
}

/// Every ad's count, and the top 5, asked of `via`, equal the oracle's.
async fn exact(via: &Adclick, oracle: &Oracle, t0: i64) -> Result<(), String> {
    let (from, to) = (t0, t0 + 10 * MINUTE);
    for ad in 0..ADS {
        count_matches(via, oracle, &format!("ad-{ad}"), "", from, to).await?;
    }
    count_matches(via, oracle, "ad-3", "country=US&ip_type=v6", from, to).await?;
    let (status, v) = via
        .get(&format!("/v1/ads/popular?count=5&window=10&at={to}"))
        .await;
    let want = oracle.top("", from, to, 5);
    if status != 200 || ranked(&v) != want {
        return Err(format!("popular: got {status} {v}, want {want:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_members_and_answers_stay_exact() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = nats.jetstream().await;
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(11);
    let mut oracle = Oracle::default();
    let within = Duration::from_secs(60);

    let mut m0 = member(&nats, &dir, "m0");
    let mut m1 = member(&nats, &dir, "m1");
    let m2 = member(&nats, &dir, "m2");
    let first = [&m0, &m1, &m2];
    eventually(within, || all_held(&first)).await;
    for m in first {
        let held = m.metric("adclick_partitions_held").await;
        assert!(
            held >= 1.0,
            "{} holds no partition: balanced assignment",
            m.addr
        );
    }
    publish(&js, &mut oracle, &clicks(&mut rng, "a", 3_000, t0)).await;
    for via in [&m0, &m1, &m2] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }

    // A member dies: its partitions resume on the others once its leases expire.
    m1.kill();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 3_000, t0)).await;
    let rest = [&m0, &m2];
    eventually(within, || all_held(&rest)).await;
    for via in [&m0, &m2] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
    // They took over from the state m1 shipped, not from an empty file.
    let restored = m0.metric("adclick_state_restored_total").await
        + m2.metric("adclick_state_restored_total").await;
    assert!(restored >= 1.0, "no partition restored from shipped state");

    // A member joins: some partitions move to it.
    let m3 = member(&nats, &dir, "m3");
    eventually(within, || async {
        let held = m3.metric("adclick_partitions_held").await;
        match held >= 1.0 {
            true => all_held(&[&m0, &m2, &m3][..]).await,
            false => Err("the new member holds nothing yet".into()),
        }
    })
    .await;
    publish(&js, &mut oracle, &clicks(&mut rng, "c", 3_000, t0)).await;
    eventually(within, || exact(&m3, &oracle, t0)).await;

    // A member stops: it hands its partitions over before it exits, so no
    // lease of it is left to expire.
    let status = m0.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exit: {status:?}\n{}", m0.log());
    let leases = js.get_key_value("ADCLICK_LEASES").await.unwrap();
    for p in 0..8 {
        if let Ok(Some(value)) = leases.get(format!("p{p}")).await {
            let owner: serde_json::Value = serde_json::from_slice(&value).unwrap();
            assert_ne!(
                owner["member"], "m0",
                "p{p} still leased to the stopped member"
            );
        }
    }
    publish(&js, &mut oracle, &clicks(&mut rng, "d", 3_000, t0)).await;
    let last = [&m2, &m3];
    eventually(within, || all_held(&last)).await;
    for via in [&m2, &m3] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
}
