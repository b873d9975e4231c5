//! `adclick reconcile --from --to` against a real service's files: it finds
//! the planted differences and only those (clicks refused as too late, a
//! partition file deleted in a copy, counts changed in a copy), `--repair`
//! makes it agree, a second repair writes nothing, and the restarted
//! service answers the repaired numbers, says they were reconciled, and
//! publishes them on the feed.
//!
//! The oracle is the test's own: every click it published, counted once
//! per (ad, click id) in its minute, under every default filter.

mod common;

use adclick_actors::store::{MinuteRepair, PartitionStore};
use adclick_actors::{AdId, Filter};
use common::*;
use futures::StreamExt as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const PARTITIONS: u32 = 4;

fn partition_of(ad: &str) -> u32 {
    adclick_actors::partitions::partition_of(ad, PARTITIONS)
}

/// Runs `adclick reconcile` with `args`; returns its exit code, stdout
/// parsed as JSON (the runs here all pass `--json`; `null` when it printed
/// no report) and stderr.
fn reconcile(nats: &NatsServer, data_dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adclick"))
        .arg("reconcile")
        .args(args)
        .env("ADCLICK_NATS_URL", nats.url())
        .env("ADCLICK_DATA_DIR", data_dir)
        .env("ADCLICK_PARTITIONS", PARTITIONS.to_string())
        .env("ADCLICK_ALLOWED_LATENESS", "2m")
        .output()
        .expect("run adclick reconcile");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // A run that could not finish prints its reason on stderr, no report.
    let json = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "reconcile printed something else than JSON: {}\nstderr: {stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// (partition, minute, ad).
type RowKey = (u32, i64, String);
/// (stored, recounted, too_late, unexplained).
type Row = (u64, u64, u64, i64);

/// The all-clicks differences of a report: (partition, minute ms, ad) →
/// (stored, recounted, too_late, unexplained).
fn all_clicks_rows(report: &Value) -> BTreeMap<RowKey, Row> {
    report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .filter(|d| d["filter"] == serde_json::json!({}))
        .map(|d| {
            let minute =
                adclick_actors::time::parse_rfc3339(d["minute"].as_str().unwrap()).unwrap();
            (
                (
                    d["partition"].as_u64().unwrap() as u32,
                    minute,
                    d["ad_id"].as_str().unwrap().to_string(),
                ),
                (
                    d["stored"].as_u64().unwrap(),
                    d["recounted"].as_u64().unwrap(),
                    d["too_late"].as_u64().unwrap(),
                    d["unexplained"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_planted_differences_and_repair_makes_it_agree() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env_counting = [
        ("ADCLICK_PARTITIONS", "4"),
        ("ADCLICK_IDLE_TIMEOUT", "200ms"),
        ("ADCLICK_WATERMARK_DELAY", "1s"),
        ("ADCLICK_ALLOWED_LATENESS", "1h"),
    ];
    let now = adclick_actors::time::now_ms();
    let t0 = now.div_euclid(MINUTE) * MINUTE - 20 * MINUTE;
    let ads: Vec<String> = (0..12).map(|i| format!("ad-{i}")).collect();

    // Phase 1: late but within an hour's lateness: counted.
    let mut service = Adclick::start_settled(&nats, &data, &env_counting).await;
    let mut counted = Oracle::default();
    let mut clicks = Vec::new();
    for i in 0..600usize {
        clicks.push(TestClick {
            click_id: format!("c-{i}"),
            ad: ads[(i * 7) % ads.len()].clone(),
            ts: t0 + ((i as i64 * 997) % (5 * MINUTE)),
            country: [Some("US"), Some("DE"), None][i % 3],
            ip: [Some("10.0.0.1"), Some("::1"), None][i % 3],
        });
    }
    count_and_publish(&js, &mut counted, &clicks).await;
    // Repeats: counted once by both sides.
    let repeats: Vec<(String, String, Option<String>)> = clicks
        .iter()
        .step_by(10)
        .map(|c| (format!("clicks.{}", c.ad), c.payload(), None))
        .collect();
    publish_raw(&js, &repeats).await;
    eventually(Duration::from_secs(30), || async {
        let (_, v) = service.get("/v1/status").await;
        let consumed = v["totals"]["consumed"].as_f64().unwrap_or(0.0);
        let want = (clicks.len() + repeats.len()) as f64;
        if consumed >= want {
            Ok(())
        } else {
            Err(format!("consumed {consumed} of {want}"))
        }
    })
    .await;
    assert_eq!(service.terminate(Duration::from_secs(20)).code(), Some(0));

    // Phase 2: two minutes of lateness: the range is final, and these are
    // too late (refused live, counted by the recount).
    let env_final = [
        ("ADCLICK_PARTITIONS", "4"),
        ("ADCLICK_IDLE_TIMEOUT", "200ms"),
        ("ADCLICK_WATERMARK_DELAY", "1s"),
        ("ADCLICK_ALLOWED_LATENESS", "2m"),
    ];
    let mut service = Adclick::start_settled(&nats, &data, &env_final).await;
    let mut all = Oracle::default();
    for c in &clicks {
        all.count(c);
    }
    let too_late: Vec<TestClick> = (0..9)
        .map(|i| TestClick {
            click_id: format!("late-{i}"),
            ad: ads[i % 3].clone(),
            ts: t0 + (i as i64 % 2) * MINUTE + 30_000,
            country: Some("US"),
            ip: None,
        })
        .collect();
    count_and_publish(&js, &mut all, &too_late).await;
    eventually(Duration::from_secs(30), || async {
        match stored_messages(&js, "CLICKS_REJECTED", "rejected.too_late").await {
            9 => Ok(()),
            n => Err(format!("{n} of 9 too-late clicks on the rejected stream")),
        }
    })
    .await;
    // Every stored minute of the range is what the service counted.
    for ad in &ads {
        let (_, v) = service
            .get(&format!(
                "/v1/ads/{ad}/aggregated_count?from={t0}&to={}",
                t0 + 5 * MINUTE
            ))
            .await;
        assert_eq!(
            v["count"],
            counted.range(ad, "", t0, t0 + 5 * MINUTE),
            "{v}"
        );
        assert!(v.get("reconciled").is_none(), "nothing repaired yet: {v}");
    }
    assert_eq!(service.terminate(Duration::from_secs(20)).code(), Some(0));

    let from = t0.to_string();
    let to = (t0 + 5 * MINUTE).to_string();
    let range = [
        "--from",
        from.as_str(),
        "--to",
        to.as_str(),
        "--json",
        "--source",
        "stream",
    ];

    // The too-late clicks, and nothing else, differ; each explained.
    let (code, report, stderr) = reconcile(&nats, &data, &range);
    assert_eq!(code, 3, "differences exit 3: {report}\n{stderr}");
    assert_eq!(report["agree"], false);
    assert_eq!(report["complete"], true, "{}", report["gaps"]);
    let mut expected_late: BTreeMap<(u32, i64, String), u64> = BTreeMap::new();
    for c in &too_late {
        *expected_late
            .entry((
                partition_of(&c.ad),
                c.ts.div_euclid(MINUTE) * MINUTE,
                c.ad.clone(),
            ))
            .or_insert(0) += 1;
    }
    let rows = all_clicks_rows(&report);
    let expected: BTreeMap<_, _> = expected_late
        .iter()
        .map(|((p, m, ad), late)| {
            let recount = all.range(ad, "", *m, m + MINUTE);
            ((*p, *m, ad.clone()), (recount - late, recount, *late, 0i64))
        })
        .collect();
    assert_eq!(rows, expected, "{report}");
    assert_eq!(report["totals"]["recounted"], all.total());
    assert_eq!(report["totals"]["stored"], counted.total());
    assert_eq!(report["read"]["repeats"], repeats.len());
    assert!(
        report["not_final_from"].as_object().unwrap().is_empty(),
        "{report}"
    );

    // The same recount from the raw archive: `adclick archive --once`
    // writes what the streams hold, and the report is the stream's, row for
    // row; with `auto`, the stream after the archive adds nothing.
    let archive = dir.path().join("archive");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_adclick"))
        .args(["archive", "--once"])
        .env("ADCLICK_NATS_URL", nats.url())
        .env("ADCLICK_PARTITIONS", PARTITIONS.to_string())
        .env("ADCLICK_ARCHIVE_URL", &archive)
        .env("ADCLICK_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("adclick archive --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive_url = archive.display().to_string();
    for source in ["archive", "auto"] {
        let mut args: Vec<&str> = range[..5].to_vec();
        args.extend(["--source", source, "--archive", archive_url.as_str()]);
        let (code, from_archive, stderr) = reconcile(&nats, &data, &args);
        // The archive alone cannot know what the stream got after it.
        let (want, complete) = if source == "archive" {
            (4, false)
        } else {
            (3, true)
        };
        assert_eq!(code, want, "--source {source}: {stderr}");
        assert_eq!(
            from_archive["complete"], complete,
            "{}",
            from_archive["gaps"]
        );
        assert_eq!(
            from_archive["differences"], report["differences"],
            "--source {source}"
        );
        assert_eq!(from_archive["totals"], report["totals"]);
        let stream_total = report["sources"]["stream"]["messages"].as_u64().unwrap();
        assert_eq!(
            from_archive["sources"]["archive"]["clicks"].as_u64(),
            Some(stream_total),
            "every click is in the range's hours: {}",
            from_archive["sources"]
        );
        if source == "auto" {
            assert_eq!(
                from_archive["sources"]["stream"]["messages"], 0,
                "{}",
                from_archive["sources"]
            );
        }
    }

    // A copy with one partition file deleted and one counter changed.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for p in 0..PARTITIONS {
        let name = format!("partition-{p}.redb");
        std::fs::copy(data.join(&name), copy.join(&name)).unwrap();
    }
    let deleted = partition_of(&ads[5]);
    std::fs::remove_file(copy.join(format!("partition-{deleted}.redb"))).unwrap();
    let changed_ad = ads
        .iter()
        .find(|a| partition_of(a) != deleted && !too_late.iter().any(|c| &c.ad == *a))
        .expect("an ad apart from the others")
        .clone();
    let changed_minute = t0 + 3 * MINUTE;
    let changed_p = partition_of(&changed_ad);
    {
        let store = PartitionStore::open(&copy, changed_p).unwrap();
        let mut counters: Vec<(AdId, Filter, u64)> = store
            .stored_totals(changed_minute, changed_minute + MINUTE)
            .unwrap()
            .into_iter()
            .map(|((_, ad, filter), n)| (ad, filter, n))
            .collect();
        for (ad, filter, n) in &mut counters {
            if ad.as_str() == changed_ad && *filter == Filter::ALL {
                *n += 5;
            }
        }
        store
            .repair_minute(&MinuteRepair {
                minute: changed_minute,
                counters,
                at_ms: 0,
                publish: false,
                max_payload: 1 << 20,
            })
            .unwrap();
    }
    let copy_dir = copy.display().to_string();
    let mut planted = range.to_vec();
    planted.extend(["--data-dir", copy_dir.as_str()]);
    let (code, report, stderr) = reconcile(&nats, &data, &planted);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(report["missing_partitions"], serde_json::json!([deleted]));
    let mut expected: BTreeMap<_, _> = expected
        .into_iter()
        .filter(|((p, _, _), _)| *p != deleted)
        .collect();
    for ad in ads.iter().filter(|a| partition_of(a) == deleted) {
        for m in 0..5 {
            let minute = t0 + m * MINUTE;
            let recount = all.range(ad, "", minute, minute + MINUTE);
            if recount > 0 {
                let late = expected_late
                    .get(&(deleted, minute, ad.clone()))
                    .copied()
                    .unwrap_or(0);
                expected.insert(
                    (deleted, minute, ad.clone()),
                    (0, recount, late, recount as i64 - late as i64),
                );
            }
        }
    }
    let recount = all.range(&changed_ad, "", changed_minute, changed_minute + MINUTE);
    expected.insert(
        (changed_p, changed_minute, changed_ad.clone()),
        (recount + 5, recount, 0, -5),
    );
    assert_eq!(all_clicks_rows(&report), expected, "{report}");
    // A repair would lower the changed counter: refused, nothing written.
    let mut lowering = planted.clone();
    lowering.push("--repair");
    let (code, _, stderr) = reconcile(&nats, &data, &lowering);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("counters would go down"), "{stderr}");
    let (_, unchanged, _) = reconcile(&nats, &data, &planted);
    assert_eq!(all_clicks_rows(&unchanged), expected);

    // Repair the real files: then they agree, and a second repair writes nothing.
    let mut repair = range.to_vec();
    repair.push("--repair");
    let (code, report, stderr) = reconcile(&nats, &data, &repair);
    assert_eq!(code, 0, "the repair makes them agree: {report}\n{stderr}");
    let repaired: BTreeSet<(u32, i64)> = expected_late.keys().map(|(p, m, _)| (*p, *m)).collect();
    assert_eq!(report["repair"]["minutes"], repaired.len(), "{report}");
    assert_eq!(report["repair"]["agree_after"], true);
    let (code, again, _) = reconcile(&nats, &data, &repair);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["agree"], true);
    assert!(again.get("repair").is_none(), "nothing to write: {again}");

    // The service answers the recount, and says so; untouched ranges do not.
    let service = Adclick::start_settled(&nats, &data, &env_final).await;
    for (_, minute, ad) in expected_late.keys() {
        let (_, v) = service
            .get(&format!(
                "/v1/ads/{ad}/aggregated_count?from={minute}&to={}",
                minute + MINUTE
            ))
            .await;
        assert_eq!(
            v["count"],
            all.range(ad, "", *minute, minute + MINUTE),
            "{v}"
        );
        assert_eq!(v["reconciled"], true, "{v}");
        let (_, v) = service
            .get(&format!(
                "/v1/ads/{ad}/aggregated_count?from={minute}&to={}&country=US",
                minute + MINUTE
            ))
            .await;
        assert_eq!(
            v["count"],
            all.range(ad, "country=US", *minute, minute + MINUTE),
            "{v}"
        );
    }
    let untouched = t0 + 4 * MINUTE;
    let (_, v) = service
        .get(&format!(
            "/v1/ads/{}/aggregated_count?from={untouched}&to={}",
            ads[0],
            untouched + MINUTE
        ))
        .await;
    assert!(v.get("reconciled").is_none(), "{v}");
    let (_, v) = service
        .get(&format!(
            "/v1/ads/popular?window=5&at={}&count=100",
            t0 + 5 * MINUTE
        ))
        .await;
    assert_eq!(v["reconciled"], true, "{v}");
    let top: Vec<(String, u64)> = v["ads"]
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
    assert_eq!(top, all.top("", t0, t0 + 5 * MINUTE, 100));

    // The feed carries each repaired minute once, as `reconciled`, with the
    // recount's totals.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let feed = loop {
        let feed = reconciled_feed(&js).await;
        let minutes: BTreeSet<(u32, i64)> = feed.keys().map(|(p, m, _)| (*p, *m)).collect();
        if minutes == repaired {
            break feed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reconciled minutes on the feed: {minutes:?}, want {repaired:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for ((p, minute, ad), n) in &feed {
        assert_eq!(partition_of(ad), *p);
        assert_eq!(
            *n,
            all.range(ad, "", *minute, minute + MINUTE),
            "{ad} {minute}"
        );
    }
}

/// Every all-clicks counter of the feed's `reconciled` messages:
/// (partition, minute, ad) → count.
async fn reconciled_feed(js: &async_nats::jetstream::Context) -> BTreeMap<(u32, i64, String), u64> {
    let stream = js.get_stream("ADCLICK_AGG").await.expect("feed stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "agg.counts.>".into(),
            ..Default::default()
        })
        .await
        .expect("feed consumer");
    let pending = stream.cached_info().state.last_sequence;
    let mut messages = consumer.messages().await.expect("feed messages");
    let mut out = BTreeMap::new();
    let mut seen = 0;
    while seen < pending {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(500), messages.next()).await
        else {
            break;
        };
        seen = message.info().map(|i| i.stream_sequence).unwrap_or(pending);
        let v: Value = serde_json::from_slice(&message.payload).unwrap();
        if v["kind"] != "reconciled" {
            continue;
        }
        assert_eq!(v["final"], true, "{v}");
        let minute = adclick_actors::time::parse_rfc3339(v["minute"].as_str().unwrap()).unwrap();
        let p = v["partition"].as_u64().unwrap() as u32;
        for c in v["counts"].as_array().unwrap() {
            if c["filter"] == serde_json::json!({}) {
                out.insert(
                    (p, minute, c["ad_id"].as_str().unwrap().to_string()),
                    c["count"].as_u64().unwrap(),
                );
            }
        }
    }
    out
}

/// In a running cluster the members hold their files open: the daily
/// report compares with the states they ship to NATS instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cluster_is_compared_through_its_shipped_states() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("member");
    let service = Adclick::start_settled(
        &nats,
        &data,
        &[
            ("ADCLICK_PARTITIONS", "4"),
            ("ADCLICK_CLUSTER", "true"),
            ("ADCLICK_MEMBER_ID", "m0"),
            ("ADCLICK_LEASE_TTL", "2s"),
            ("ADCLICK_STATE_SHIP_INTERVAL", "1s"),
            ("ADCLICK_IDLE_TIMEOUT", "200ms"),
            ("ADCLICK_WATERMARK_DELAY", "1s"),
            ("ADCLICK_ALLOWED_LATENESS", "1h"),
        ],
    )
    .await;
    let now = adclick_actors::time::now_ms();
    let t0 = now.div_euclid(MINUTE) * MINUTE - 20 * MINUTE;
    let mut oracle = Oracle::default();
    let clicks: Vec<TestClick> = (0..200)
        .map(|i| TestClick {
            click_id: format!("s-{i}"),
            ad: format!("ad-{}", i % 9),
            ts: t0 + (i as i64 * 1_499) % (3 * MINUTE),
            country: Some("FR"),
            ip: Some("10.1.1.1"),
        })
        .collect();
    count_and_publish(&js, &mut oracle, &clicks).await;
    let from = t0.to_string();
    let to = (t0 + 3 * MINUTE).to_string();
    let args = [
        "--from",
        from.as_str(),
        "--to",
        to.as_str(),
        "--json",
        "--source",
        "stream",
        "--stored",
        "shipped",
    ];
    // The shipped states catch up within a few ship intervals.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let empty = dir.path().join("unused");
    let report = loop {
        let (code, report, stderr) = reconcile(&nats, &empty, &args);
        if code == 0 {
            break report;
        }
        assert_eq!(code, 3, "{report}\n{stderr}");
        assert!(
            std::time::Instant::now() < deadline,
            "the shipped states never agreed: {}\n{stderr}\n{}",
            &report.to_string()[..600.min(report.to_string().len())],
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(report["totals"]["stored"], oracle.total(), "{report}");
    assert_eq!(report["totals"]["recounted"], oracle.total());
    assert_eq!(report["missing_partitions"], serde_json::json!([]));
    // The member kept running, its files open, throughout.
    let (status, _) = service.get("/readyz").await;
    assert_eq!(status, 200);
}
