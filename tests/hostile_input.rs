//! The committed decoder corpus (actors/tests/decode_corpus) published to a
//! real nats-server, interleaved with valid clicks: every hostile payload
//! lands on `rejected.invalid` byte for byte with a reason, is counted in
//! the metrics, and the valid clicks count exactly; the service stays up.

mod common;

use async_nats::jetstream;
use common::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

const MINUTE: i64 = 60_000;

/// The corpus's `invalid-…` payloads, by file name.
fn hostile_payloads() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("actors/tests/decode_corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the decoder corpus is committed")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("invalid-") && name.ends_with(".json")
        })
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (name, std::fs::read(&p).expect("corpus file"))
        })
        .collect();
    files.sort();
    files
}

/// Every message on the rejected stream: payload → reason header.
async fn rejected(js: &jetstream::Context) -> HashMap<Vec<u8>, String> {
    let stream = js
        .get_stream("CLICKS_REJECTED")
        .await
        .expect("rejected stream");
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("inspection consumer");
    let pending = consumer.info().await.expect("consumer info").num_pending as usize;
    let mut out = HashMap::new();
    let mut read = 0;
    // One fetch may return fewer than asked (a pull's size limits): fetch
    // until every message pending at the start is read.
    while read < pending {
        let mut messages = consumer
            .fetch()
            .max_messages(pending - read)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        let before = read;
        while let Some(Ok(m)) = messages.next().await {
            read += 1;
            assert_eq!(m.subject.as_str(), "rejected.invalid");
            let reason = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Adclick-Reject-Reason"))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            out.insert(m.payload.to_vec(), reason);
        }
        assert!(
            read > before,
            "the rejected stream stopped short: {read} of {pending}"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_are_rejected_with_a_reason_and_valid_clicks_count_exactly() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let settings = [
        ("ADCLICK_PARTITIONS", "2"),
        ("ADCLICK_WATERMARK_DELAY", "2s"),
        ("ADCLICK_ALLOWED_LATENESS", "1h"),
        ("ADCLICK_IDLE_TIMEOUT", "300ms"),
    ];
    let service = Adclick::start_settled(&nats, data.path(), &settings).await;
    let js = nats.jetstream().await;

    let hostile = hostile_payloads();
    assert!(hostile.len() >= 30, "{} hostile payloads", hostile.len());
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 2 * MINUTE;
    let mut oracle = Oracle::default();
    // Each hostile payload between two valid clicks of the same ad, so a
    // reject that stalled or crashed its partition would hold up counting.
    let mut clicks = Vec::new();
    for (i, (_, payload)) in hostile.iter().enumerate() {
        for k in 0..2 {
            let click = TestClick {
                click_id: format!("v-{i}-{k}"),
                ad: "ad-1".into(),
                ts: t0 + (i as i64 * 997) % MINUTE,
                country: None,
                ip: None,
            };
            oracle.count(&click);
            clicks.push(("clicks.ad-1".to_string(), click.payload().into_bytes()));
            if k == 0 {
                clicks.push(("clicks.ad-1".to_string(), payload.clone()));
            }
        }
    }
    for (subject, payload) in clicks {
        js.publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    eventually(Duration::from_secs(30), || async {
        count_matches(&service, &oracle, "ad-1", "", t0, t0 + MINUTE).await?;
        let invalid = service.metric("adclick_events_invalid_total").await;
        // Rejects are stored after their commit: wait for all of them.
        let stored = stored_messages(&js, "CLICKS_REJECTED", "rejected.invalid").await;
        if invalid == hostile.len() as f64 && stored == hostile.len() as u64 {
            Ok(())
        } else {
            Err(format!(
                "{invalid} counted invalid, {stored} stored, of {}",
                hostile.len()
            ))
        }
    })
    .await;
    let stored = rejected(&js).await;
    let mut missing = Vec::new();
    for (name, payload) in &hostile {
        match stored.get(payload) {
            Some(reason) if !reason.trim().is_empty() => {}
            Some(_) => missing.push(format!("{name}: rejected without a reason")),
            None => missing.push(format!("{name}: not on rejected.invalid")),
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    // Reasons name what is wrong (a few kinds checked by their words).
    let reason_of = |name: &str| {
        let payload = &hostile
            .iter()
            .find(|(n, _)| n.starts_with(name))
            .expect(name)
            .1;
        stored[payload].clone()
    };
    assert!(reason_of("invalid-oversize-4097").contains("4096-byte limit"));
    assert!(reason_of("invalid-utf8-in-ignored-value").contains("not UTF-8"));
    assert!(reason_of("invalid-overflow-ts-i64-plus-one").contains("ts"));
    assert_eq!(
        service.metric("adclick_events_counted_total").await,
        oracle.total() as f64
    );
    let (status, _) = service.get("/readyz").await;
    assert_eq!(status, 200, "still ready after the hostile payloads");
}
