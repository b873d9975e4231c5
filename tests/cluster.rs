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

/// Which member's lease each partition is under (`None`: no lease), from
/// the leases bucket itself.
async fn lease_holders(js: &async_nats::jetstream::Context) -> Vec<Option<String>> {
    let leases = js.get_key_value("ADCLICK_LEASES").await.unwrap();
    let mut holders = Vec::new();
    for p in 0..PARTITIONS as u32 {
        let holder = match leases.entry(format!("p{p}")).await {
            Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
                v["member"].as_str().map(str::to_string)
            }
            _ => None,
        };
        holders.push(holder);
    }
    holders
}

/// Every partition under the lease of one of `members` (read from the
/// bucket, not summed from gauges), their held gauges agreeing, and each
/// member ready.
async fn all_held(
    js: &async_nats::jetstream::Context,
    members: &[(&str, &Adclick)],
) -> Result<(), String> {
    let holders = lease_holders(js).await;
    for (p, holder) in holders.iter().enumerate() {
        if !holder
            .as_deref()
            .is_some_and(|h| members.iter().any(|(id, _)| *id == h))
        {
            return Err(format!("partition {p} is under {holder:?}"));
        }
    }
    let mut held = 0.0;
    for (id, m) in members {
        held += m.metric("adclick_partitions_held").await;
        let leased = holders.iter().filter(|h| h.as_deref() == Some(*id)).count();
        if leased == 0 {
            return Err(format!(
                "{id} holds no partition: the assignment is balanced"
            ));
        }
        let (status, body) = m.get("/readyz").await;
        if status != 200 {
            return Err(format!("{id} not ready: {body}"));
        }
    }
    if held == PARTITIONS {
        Ok(())
    } else {
        Err(format!(
            "the members report {held} partitions held, want {PARTITIONS}"
        ))
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
    let first = [("m0", &m0), ("m1", &m1), ("m2", &m2)];
    eventually(within, || all_held(&js, &first)).await;
    publish(&js, &mut oracle, &clicks(&mut rng, "a", 3_000, t0)).await;
    publish_too_late(&js, "a", 40, t0).await;
    for via in [&m0, &m1, &m2] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }

    // A member dies: its partitions resume on the others once its leases
    // expire, from the state it shipped.
    let restored_before = m0.metric("adclick_state_restored_total").await
        + m2.metric("adclick_state_restored_total").await;
    m1.kill();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 3_000, t0)).await;
    publish_too_late(&js, "b", 40, t0).await;
    let rest = [("m0", &m0), ("m2", &m2)];
    eventually(within, || all_held(&js, &rest)).await;
    for via in [&m0, &m2] {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
    let restored = m0.metric("adclick_state_restored_total").await
        + m2.metric("adclick_state_restored_total").await;
    assert!(
        restored > restored_before,
        "the killed member's partitions were not restored from its shipped state"
    );

    // A member joins: some partitions move to it.
    let m3 = member(&nats, &dir, "m3");
    let three = [("m0", &m0), ("m2", &m2), ("m3", &m3)];
    eventually(within, || all_held(&js, &three)).await;
    publish(&js, &mut oracle, &clicks(&mut rng, "c", 3_000, t0)).await;
    publish_too_late(&js, "c", 40, t0).await;
    eventually(within, || exact(&m3, &oracle, t0)).await;

    // A member stops: it hands its partitions over before it exits. Its
    // leases are deleted, not left to expire (they would still be there:
    // the test looks at once, well within lease_ttl).
    let status = m0.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exit: {status:?}\n{}", m0.log());
    let holders = lease_holders(&js).await;
    assert!(
        !holders.iter().any(|h| h.as_deref() == Some("m0")),
        "a lease of the stopped member is left to expire: {holders:?}"
    );
    publish(&js, &mut oracle, &clicks(&mut rng, "d", 3_000, t0)).await;
    publish_too_late(&js, "d", 40, t0).await;
    let last = [("m2", &m2), ("m3", &m3)];
    eventually(within, || all_held(&js, &last)).await;
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
    let both = [("m0", &m0), ("m1", &m1)];
    eventually(within, || all_held(&js, &both)).await;
    publish(&js, &mut oracle, &clicks(&mut rng, "a", 2_000, t0)).await;
    eventually(within, || exact(&m1, &oracle, t0)).await;

    m1.pause();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 2_000, t0)).await;
    let alone = [("m0", &m0)];
    eventually(within, || all_held(&js, &alone)).await;
    eventually(within, || exact(&m0, &oracle, t0)).await;

    m1.resume();
    publish(&js, &mut oracle, &clicks(&mut rng, "c", 2_000, t0)).await;
    eventually(within, || all_held(&js, &both)).await;
    for (_, via) in both {
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
    let both = [("m0", &m0), ("m1", &m1)];
    let within = Duration::from_secs(90);
    let js = async_nats::jetstream::new(connect_all(&url).await);
    eventually(within, || all_held(&js, &both)).await;
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 10 * MINUTE;
    let mut rng = Rng::new(13);
    let mut oracle = Oracle::default();
    publish(&js, &mut oracle, &clicks(&mut rng, "a", 2_000, t0)).await;
    eventually(within, || exact(&m0, &oracle, t0)).await;

    // Down goes the node leading the clicks stream: a new leader must be
    // elected among the two left.
    let mut clicks_stream = js.get_stream("CLICKS").await.unwrap();
    let info = clicks_stream.info().await.unwrap();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    let index: usize = leader.trim_start_matches('n').parse().unwrap();
    nodes[index].stop();
    publish(&js, &mut oracle, &clicks(&mut rng, "b", 2_000, t0)).await;
    eventually(within, || all_held(&js, &both)).await;
    for (_, via) in both {
        eventually(within, || exact(via, &oracle, t0)).await;
    }
}

/// SIGTERM while the broker is gone: the handover cannot happen, and the
/// member still exits within `shutdown_timeout + lease_ttl` (the leases then
/// expire by themselves) rather than retrying NATS for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stops_in_bounded_time_without_its_broker() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = nats.jetstream().await;
    let mut env = SETTINGS.to_vec();
    env.extend([
        ("ADCLICK_MEMBER_ID", "m0"),
        ("ADCLICK_SHUTDOWN_TIMEOUT", "2s"),
    ]);
    let mut m0 = Adclick::start(&nats, &dir.path().join("m0"), &env);
    let alone = [("m0", &m0)];
    eventually(Duration::from_secs(60), || all_held(&js, &alone)).await;
    nats.stop();
    let started = std::time::Instant::now();
    // shutdown_timeout 2 s + lease_ttl 2 s, and room for a loaded machine.
    let status = m0.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}; log:\n{}", m0.log());
    eprintln!("stopped in {:?} without a broker", started.elapsed());
}
