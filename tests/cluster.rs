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
/// Each copy has a message id of its own, so a publish retried while the
/// broker elects a new stream leader (a node down) is stored once, while
/// the second copy still reaches adclick's own dedup.
async fn publish(js: &async_nats::jetstream::Context, oracle: &mut Oracle, batch: &[TestClick]) {
    for c in batch {
        oracle.count(c);
    }
    publish_copies(js, batch, |i| if i % 5 == 0 { 2 } else { 1 }).await;
}

/// Clicks two hours old, past the hour of lateness: each must land on
/// `rejected.too_late` exactly once, whichever member decides it, however
/// often a handover replays it.
async fn publish_too_late(js: &async_nats::jetstream::Context, batch: &str, n: usize, t0: i64) {
    let old: Vec<TestClick> = (0..n)
        .map(|i| TestClick {
            click_id: format!("{batch}-late-{i}"),
            ad: format!("ad-{}", i % ADS),
            ts: t0 - 120 * MINUTE,
            country: None,
            ip: None,
        })
        .collect();
    publish_copies(js, &old, |_| 1).await;
}

/// Publishes `copies(i)` copies of click `i`, waiting for each to be stored.
async fn publish_copies(
    js: &async_nats::jetstream::Context,
    batch: &[TestClick],
    copies: impl Fn(usize) -> usize,
) {
    use async_nats::jetstream::message::PublishMessage as Publish;
    for (i, c) in batch.iter().enumerate() {
        for copy in 0..copies(i) {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let message = Publish::build()
                    .payload(c.payload().into())
                    .message_id(format!("{}#{copy}", c.click_id));
                let sent = js.send_publish(format!("clicks.{}", c.ad), message).await;
                let stored = match sent {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(()) => break,
                    Err(e) if std::time::Instant::now() > deadline => panic!("publish: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
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
    publish_too_late(&js, "a", 40, t0).await;
    for via in [&m0, &m1, &m2] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }

    // A member dies: its partitions resume on the others once its leases expire.
    m1.kill();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 3_000, t0)).await;
    publish_too_late(&js, "b", 40, t0).await;
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
    publish_too_late(&js, "c", 40, t0).await;
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
    publish_too_late(&js, "d", 40, t0).await;
    let last = [&m2, &m3];
    eventually(within, || all_held(&last)).await;
    for via in [&m2, &m3] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
    eventually(within, || async {
        match stored_messages(&js, "CLICKS_REJECTED", "rejected.too_late").await {
            160 => Ok(()),
            n => Err(format!(
                "{n} too-late rejects stored, want 160 (each exactly once)"
            )),
        }
    })
    .await;
}

type FeedKey = (String, String, String);

/// The feed as a subscriber applies it: per partition in version order, the
/// last total of each (minute, ad, filter) wins; with each key's history
/// (partition, version, kind, total) for failure messages. Fails if one
/// version of a partition carries two different messages.
async fn feed_state(
    js: &async_nats::jetstream::Context,
) -> Result<std::collections::HashMap<FeedKey, Vec<(u64, u64, String, u64)>>, String> {
    use std::collections::{BTreeMap, HashMap};
    let mut by_version: BTreeMap<(u64, u64), serde_json::Value> = BTreeMap::new();
    for (subject, v) in feed_messages(js).await {
        if !subject.starts_with("agg.counts.") {
            continue;
        }
        let key = (
            v["partition"].as_u64().unwrap(),
            v["version"].as_u64().unwrap(),
        );
        if let Some(seen) = by_version.insert(key, v.clone()) {
            if seen != v {
                return Err(format!("version {key:?} published with two contents"));
            }
        }
    }
    let mut history: HashMap<FeedKey, Vec<(u64, u64, String, u64)>> = HashMap::new();
    for ((p, version), v) in &by_version {
        for c in v["counts"].as_array().unwrap() {
            let key = (
                v["minute"].as_str().unwrap().to_string(),
                c["ad_id"].as_str().unwrap().to_string(),
                filter_key(&c["filter"]),
            );
            let kind = v["kind"].as_str().unwrap().to_string();
            let entry = (*p, *version, kind, c["count"].as_u64().unwrap());
            history.entry(key).or_default().push(entry);
        }
    }
    Ok(history)
}

/// The feed's totals of every closed minute equal the oracle's.
async fn feed_exact(
    js: &async_nats::jetstream::Context,
    oracle: &Oracle,
    closed_before: i64,
) -> Result<(), String> {
    let state = feed_state(js).await?;
    for ((ad, minute, filter), want) in &oracle.counts {
        if *minute >= closed_before {
            continue;
        }
        let key = (
            adclick_actors::time::format_rfc3339(*minute),
            ad.clone(),
            filter.clone(),
        );
        let history = state.get(&key).cloned().unwrap_or_default();
        let got = history.last().map_or(0, |h| h.3);
        if got != *want {
            let shown: Vec<String> = history
                .iter()
                .map(|(p, v, kind, n)| format!("p{p} e{} #{} {kind} {n}", v >> 32, v & 0xffff_ffff))
                .collect();
            return Err(format!(
                "feed {key:?}: {got}, want {want}; history: {shown:?}"
            ));
        }
    }
    Ok(())
}

/// A member frozen for longer than its leases (SIGSTOP: a GC pause, a hung
/// host) loses its partitions to the other; when it runs on (SIGCONT) it
/// must not commit, ack or publish for them any more. Counts stay exact, and
/// the feed, applied in version order, equals the oracle: whatever the
/// frozen member had decided is superseded, never mixed in under a version
/// the new owner uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_loses_its_partitions_and_writes_nothing_after() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = nats.jetstream().await;
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(12);
    let mut oracle = Oracle::default();
    let within = Duration::from_secs(60);

    let m0 = member(&nats, &dir, "m0");
    let m1 = member(&nats, &dir, "m1");
    let both = [&m0, &m1];
    eventually(within, || all_held(&both)).await;
    publish(&js, &mut oracle, &clicks(&mut rng, "a", 2_000, t0)).await;
    eventually(within, || exact(&m1, &oracle, t0)).await;

    m1.pause();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 2_000, t0)).await;
    let alone = [&m0];
    eventually(within, || all_held(&alone)).await;
    eventually(within, || exact(&m0, &oracle, t0)).await;

    m1.resume();
    publish(&js, &mut oracle, &clicks(&mut rng, "c", 2_000, t0)).await;
    eventually(within, || all_held(&both)).await;
    for via in both {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
    assert!(
        m1.log().contains("lease lost") || m1.log().contains("no longer held"),
        "the resumed member never noticed it lost its leases:\n{}",
        m1.log()
    );
    let closed_before = now_ms().div_euclid(MINUTE) * MINUTE - MINUTE;
    eventually(within, || feed_exact(&js, &oracle, closed_before)).await;
}

/// The members on a JetStream cluster of three nodes with every stream and
/// bucket replicated three times: one node killed, the cluster carries on
/// (a quorum of two) and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_node_down_loses_nothing() {
    let mut nodes = NatsServer::cluster(3).await;
    let url = cluster_url(&nodes);
    let dir = tempfile::tempdir().unwrap();
    let mut env = SETTINGS.to_vec();
    env.retain(|(k, _)| *k != "ADCLICK_LEASE_TTL");
    env.extend([
        ("ADCLICK_STREAM_REPLICAS", "3"),
        ("ADCLICK_LEASE_TTL", "4s"),
    ]);
    let start = |id: &'static str| {
        let mut env = env.clone();
        env.push(("ADCLICK_MEMBER_ID", id));
        Adclick::start_at(&url, &dir.path().join(id), &env)
    };
    let (m0, m1) = (start("m0"), start("m1"));
    let both = [&m0, &m1];
    let within = Duration::from_secs(90);
    eventually(within, || all_held(&both)).await;
    let js = async_nats::jetstream::new(connect_all(&url).await);
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(13);
    let mut oracle = Oracle::default();
    publish(&js, &mut oracle, &clicks(&mut rng, "a", 2_000, t0)).await;
    eventually(within, || exact(&m0, &oracle, t0)).await;

    nodes[1].stop();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 2_000, t0)).await;
    eventually(within, || all_held(&both)).await;
    for via in both {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
}
