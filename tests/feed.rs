//! The output feed (`ADCLICK_AGG`) against a real nats-server: what it
//! publishes when minutes close, are corrected and turn final must equal the
//! REST answers and an independent oracle, and a restart must not publish
//! anything twice.
//!
//! Event time drives the watermark here (the idle timeout is an hour): clicks
//! half an hour old, then a "pusher" click per ad moves each partition's
//! watermark past the minutes under test.

mod common;

use adclick_actors::partitions::partition_of;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const MINUTE: i64 = 60_000;
const PARTITIONS: u32 = 2;
const SETTINGS: &[(&str, &str)] = &[
    ("ADCLICK_PARTITIONS", "2"),
    ("ADCLICK_WATERMARK_DELAY", "1s"),
    ("ADCLICK_ALLOWED_LATENESS", "2m"),
    ("ADCLICK_IDLE_TIMEOUT", "1h"),
    ("ADCLICK_TOP_WINDOWS", "1,3"),
    ("ADCLICK_TOP_N", "3"),
];

/// Per (partition, minute): the latest count of each (ad, filter key), and
/// whether a `final` publication was seen.
type Replayed = BTreeMap<(u64, String), (HashMap<(String, String), u64>, bool)>;

/// A minute's counts on the feed, merged over `partitions`.
fn feed_counts_of(
    state: &Replayed,
    partitions: impl Iterator<Item = u64>,
    minute: &str,
) -> HashMap<(String, String), u64> {
    let mut merged = HashMap::new();
    for p in partitions {
        if let Some((counts, _)) = state.get(&(p, minute.to_string())) {
            merged.extend(counts.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
    merged
}

/// A minute's counts by the oracle: (ad, filter key) → clicks.
fn oracle_counts_of(oracle: &Oracle, minute: i64) -> HashMap<(String, String), u64> {
    oracle
        .counts
        .iter()
        .filter(|((_, m, _), _)| *m == minute)
        .map(|((ad, _, filter), n)| ((ad.clone(), filter.clone()), *n))
        .collect()
}

/// Replays `agg.counts.*` in stream order.
fn replay_counts(messages: &[(String, Value)]) -> Replayed {
    let mut state = Replayed::new();
    let mut last_version: HashMap<u64, u64> = HashMap::new();
    for (subject, v) in messages
        .iter()
        .filter(|(s, _)| s.starts_with("agg.counts."))
    {
        let partition = v["partition"].as_u64().unwrap();
        assert_eq!(subject, &format!("agg.counts.{partition}"));
        let version = v["version"].as_u64().unwrap();
        let last = last_version.entry(partition).or_insert(0);
        assert!(version > *last, "versions increase per partition");
        *last = version;
        let entry = state
            .entry((partition, v["minute"].as_str().unwrap().to_string()))
            .or_default();
        for c in v["counts"].as_array().unwrap() {
            let filter = filter_key(&c["filter"]);
            entry.0.insert(
                (c["ad_id"].as_str().unwrap().to_string(), filter),
                c["count"].as_u64().unwrap(),
            );
        }
        entry.1 |= v["final"] == true;
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_equals_the_rest_answers() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(&nats, data.path(), SETTINGS);
    service.wait_ready().await;
    let js = nats.jetstream().await;

    let t0 = (now_ms() - 30 * MINUTE).div_euclid(MINUTE) * MINUTE;
    let ads: Vec<String> = (0..8).map(|i| format!("ad-{i}")).collect();
    let countries = [Some("US"), Some("DE"), None];
    let ips = [Some("10.0.0.1"), Some("2001:db8::1"), None];
    let mut oracle = Oracle::default();
    let mut clicks = Vec::new();
    // Minutes t0..t0+3, in time order (so none is late yet).
    for m in 0..4i64 {
        for (a, ad) in ads.iter().enumerate() {
            for k in 0..(a + m as usize) % 4 + 1 {
                clicks.push(TestClick {
                    click_id: format!("c-{m}-{a}-{k}"),
                    ad: ad.clone(),
                    ts: t0 + m * MINUTE + (k as i64 * 997 + a as i64 * 13) % MINUTE,
                    country: countries[(a + k) % 3],
                    ip: ips[(a * 7 + k) % 3],
                });
            }
        }
    }
    clicks.sort_by_key(|c| c.ts);
    // Pushers: one per ad, 5 s into minute t0+4: closes t0..t0+3 (delay 1 s)
    // and makes t0 and t0+1 final (lateness 2 min).
    for ad in &ads {
        clicks.push(TestClick {
            click_id: format!("push-1-{ad}"),
            ad: ad.clone(),
            ts: t0 + 4 * MINUTE + 5_000,
            country: None,
            ip: None,
        });
    }
    count_and_publish(&js, &mut oracle, &clicks).await;

    // Closes of t0..t0+3 and finals of t0, t0+1 are on the feed.
    let closed_minutes: Vec<String> = (0..4)
        .map(|m| adclick_actors::time::format_rfc3339(t0 + m * MINUTE))
        .collect();
    eventually(Duration::from_secs(30), || async {
        let state = replay_counts(&feed_messages(&js).await);
        let closed = closed_minutes
            .iter()
            .filter(|m| state.keys().any(|(_, minute)| minute == *m))
            .count();
        let finals = state.values().filter(|(_, f)| *f).count();
        if closed == 4 && finals >= 2 {
            Ok(())
        } else {
            Err(format!("{closed} of 4 minutes closed, {finals} final"))
        }
    })
    .await;
    let before_corrections = feed_messages(&js).await.len();

    // Corrections: late clicks for t0+3 (closed, not final) on three ads.
    let late: Vec<TestClick> = (0..3)
        .map(|a| TestClick {
            click_id: format!("late-{a}"),
            ad: ads[a].clone(),
            ts: t0 + 3 * MINUTE + 30_000,
            country: Some("US"),
            ip: Some("10.0.0.1"),
        })
        .collect();
    count_and_publish(&js, &mut oracle, &late).await;
    eventually(Duration::from_secs(20), || async {
        let messages = feed_messages(&js).await;
        let corrections: Vec<&Value> = messages[before_corrections..]
            .iter()
            .filter(|(_, v)| v["kind"] == "correction")
            .map(|(_, v)| v)
            .collect();
        let corrected: usize = corrections
            .iter()
            .map(|v| v["counts"].as_array().map_or(0, |c| c.len()))
            .sum();
        // Three ads × the four default filters they changed.
        if corrected == 12 {
            Ok(())
        } else {
            Err(format!("{corrected} corrected counters so far"))
        }
    })
    .await;

    // `popular` over a configured window ending with the latest closed minute
    // (t0+3) reads the running window totals, late clicks included.
    for window in [1i64, 3] {
        let (status, v) = service
            .get(&format!("/v1/ads/popular?count=3&window={window}"))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["to"],
            adclick_actors::time::format_rfc3339(t0 + 4 * MINUTE),
            "the latest closed minute is t0+3: {v}"
        );
        let want = oracle.top("", t0 + (4 - window) * MINUTE, t0 + 4 * MINUTE, 3);
        assert_eq!(ranked(&v), want, "running top of window {window}");
    }

    // Second pushers: everything up to t0+3 becomes final.
    let pushers: Vec<TestClick> = ads
        .iter()
        .map(|ad| TestClick {
            click_id: format!("push-2-{ad}"),
            ad: ad.clone(),
            ts: t0 + 7 * MINUTE,
            country: None,
            ip: None,
        })
        .collect();
    count_and_publish(&js, &mut oracle, &pushers).await;
    eventually(Duration::from_secs(30), || async {
        let state = replay_counts(&feed_messages(&js).await);
        let finals = closed_minutes
            .iter()
            .filter(|m| {
                (0..PARTITIONS as u64).all(|p| {
                    state
                        .get(&(p, m.to_string()))
                        .is_some_and(|(_, is_final)| *is_final)
                })
            })
            .count();
        if finals == 4 {
            Ok(())
        } else {
            Err(format!("{finals} of 4 minutes final on every partition"))
        }
    })
    .await;

    // Replaying the feed gives, for every minute, exactly the oracle's and
    // the REST API's counts.
    let messages = feed_messages(&js).await;
    let state = replay_counts(&messages);
    // Each `final` marker says how many counters its minute has.
    for (_, v) in messages
        .iter()
        .filter(|(s, v)| s.starts_with("agg.counts.") && v["kind"] == "final")
    {
        let key = (
            v["partition"].as_u64().unwrap(),
            v["minute"].as_str().unwrap().to_string(),
        );
        assert_eq!(v["counts"], serde_json::json!([]), "{v}");
        assert_eq!(
            v["counters"].as_u64(),
            state.get(&key).map(|(c, _)| c.len() as u64),
            "{v}"
        );
    }
    for m in 0..4i64 {
        let minute = t0 + m * MINUTE;
        let text = adclick_actors::time::format_rfc3339(minute);
        let want = oracle_counts_of(&oracle, minute);
        assert_eq!(
            feed_counts_of(&state, 0..PARTITIONS as u64, &text),
            want,
            "minute {text}: feed vs oracle"
        );
        for ((ad, filter), n) in &want {
            count_matches(&service, &oracle, ad, filter, minute, minute + MINUTE)
                .await
                .unwrap_or_else(|e| panic!("REST vs oracle, {e}"));
            assert!(*n > 0);
        }
        for ad in &ads {
            let p = u64::from(partition_of(ad, PARTITIONS));
            assert!(
                state.contains_key(&(p, text.clone())),
                "{ad}'s partition {p} published minute {text}"
            );
        }
    }

    // Final top-N per window, merged over partitions, equals `popular` (one
    // stored read per partition) and the oracle.
    for window in [1i64, 3] {
        for m in (window - 1)..4 {
            let minute = t0 + m * MINUTE;
            let text = adclick_actors::time::format_rfc3339(minute + MINUTE);
            let mut merged: Vec<(String, u64)> = messages
                .iter()
                .filter(|(s, v)| {
                    s == &format!("agg.top.{window}") && v["final"] == true && v["to"] == text
                })
                .flat_map(|(_, v)| ranked(v))
                .collect();
            merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            merged.truncate(3);
            let want = oracle.top("", minute - (window - 1) * MINUTE, minute + MINUTE, 3);
            assert_eq!(merged, want, "feed top {window} ending {text}");
            let (status, v) = service
                .get(&format!(
                    "/v1/ads/popular?count=3&window={window}&at={}",
                    minute + MINUTE
                ))
                .await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(ranked(&v), want, "popular {window} ending {text}");
        }
    }

    // A SIGKILL and restart publishes nothing twice: committed messages that
    // go out again carry the same ids, and JetStream drops them.
    let total = messages.len();
    service.kill();
    service.restart();
    service.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        feed_messages(&js).await.len(),
        total,
        "no feed message twice"
    );
}

/// A crash after a minute's close was committed and before its counts
/// publication went out (it is committed unrendered): the restart renders
/// it from the outbox and publishes it under the versions it was given, so
/// every version of each partition is on the feed exactly once, and the
/// feed equals the oracle.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_committed_but_not_published_goes_out_once_after_a_crash() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut settings = SETTINGS.to_vec();
    settings.push(("ADCLICK_FAULT", "abort-before-feed:0:1"));
    let mut service = Adclick::start(&nats, data.path(), &settings);
    service.wait_ready().await;
    let js = nats.jetstream().await;

    let t0 = (now_ms() - 30 * MINUTE).div_euclid(MINUTE) * MINUTE;
    let ads: Vec<String> = (0..8).map(|i| format!("ad-{i}")).collect();
    assert!(
        ads.iter().any(|ad| partition_of(ad, PARTITIONS) == 0),
        "partition 0 has a minute to close"
    );
    let mut oracle = Oracle::default();
    let mut clicks = Vec::new();
    for m in 0..2i64 {
        for (a, ad) in ads.iter().enumerate() {
            for k in 0..a + 1 {
                clicks.push(TestClick {
                    click_id: format!("c-{m}-{a}-{k}"),
                    ad: ad.clone(),
                    ts: t0 + m * MINUTE + k as i64 * 1_000,
                    country: [Some("US"), None][k % 2],
                    ip: [Some("10.0.0.1"), Some("2001:db8::1")][(a + k) % 2],
                });
            }
        }
    }
    clicks.sort_by_key(|c| c.ts);
    // One pusher per ad closes t0 and t0+1 in every partition.
    clicks.extend(ads.iter().map(|ad| TestClick {
        click_id: format!("push-{ad}"),
        ad: ad.clone(),
        ts: t0 + 2 * MINUTE + 5_000,
        country: None,
        ip: None,
    }));
    count_and_publish(&js, &mut oracle, &clicks).await;
    let status = service.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success() && service.log().contains("injected fault"),
        "the process died before publishing partition 0's close"
    );
    service.unset_env("ADCLICK_FAULT");
    service.restart();
    service.wait_ready().await;

    let minutes: Vec<String> = (0..2)
        .map(|m| adclick_actors::time::format_rfc3339(t0 + m * MINUTE))
        .collect();
    let partitions: std::collections::BTreeSet<u64> = ads
        .iter()
        .map(|ad| u64::from(partition_of(ad, PARTITIONS)))
        .collect();
    eventually(Duration::from_secs(30), || async {
        let state = replay_counts(&feed_messages(&js).await);
        let closed = partitions
            .iter()
            .flat_map(|p| minutes.iter().map(move |m| (*p, m.clone())))
            .filter(|key| state.contains_key(key))
            .count();
        if closed == partitions.len() * minutes.len() {
            Ok(())
        } else {
            Err(format!("{closed} partition minutes closed on the feed"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let messages = feed_messages(&js).await;
    for p in &partitions {
        let mut versions: Vec<u64> = messages
            .iter()
            .filter(|(_, v)| v["partition"].as_u64() == Some(*p))
            .map(|(_, v)| v["version"].as_u64().unwrap())
            .collect();
        versions.sort_unstable();
        let want: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, want, "partition {p}: every version exactly once");
    }
    let state = replay_counts(&messages);
    for (m, text) in minutes.iter().enumerate() {
        let minute = t0 + m as i64 * MINUTE;
        assert_eq!(
            feed_counts_of(&state, partitions.iter().copied(), text),
            oracle_counts_of(&oracle, minute),
            "minute {text}: feed vs oracle"
        );
    }
}
