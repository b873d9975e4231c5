//! The raw archive against a real nats-server and real `adclick` processes:
//! exactly once across SIGKILL (every stream sequence in exactly one
//! committed file, no file outside the manifests), DuckDB reading the
//! archive with Hive partitions and getting the test's own counts, and
//! `adclick serve` with `archive = true` flushing what it holds on SIGTERM.

mod common;

use adclick::archive::{read_range, Archive, Dataset};
use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use common::{all_messages, duckdb_path, now_ms, Adclick, NatsServer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADCLICK: &str = env!("CARGO_BIN_EXE_adclick");
const HOUR: i64 = 3_600_000;

/// `adclick archive` (with `args`) on `nats`, writing to `root`; its log
/// appended to `log`.
fn archiver(nats: &NatsServer, root: &Path, log: &Path, args: &[&str]) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = Command::new(ADCLICK);
    command
        .arg("archive")
        .args(args)
        .env("ADCLICK_NATS_URL", nats.url())
        .env("ADCLICK_ARCHIVE_URL", root)
        .env(
            "ADCLICK_HTTP_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        )
        // Small flushes, often: a kill lands between commits and inside them.
        .env("ADCLICK_ARCHIVE_MAX_ROWS", "37")
        .env("ADCLICK_ARCHIVE_FLUSH_INTERVAL", "50ms")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    command
}

/// One message the test publishes.
struct Published {
    subject: String,
    payload: String,
    reason: Option<String>,
}

/// The test's own expectations: distinct valid (ad, click id) per (ad,
/// minute), and the event hours (`YYYY-MM-DD`, hour) of the valid clicks.
#[derive(Default)]
struct Expected {
    clicks: HashMap<(String, i64), HashSet<String>>,
    hours: BTreeSet<(String, String)>,
}

impl Expected {
    fn valid(&mut self, ad: &str, click_id: &str, ts: i64) {
        self.clicks
            .entry((ad.to_string(), ts.div_euclid(60_000) * 60_000))
            .or_default()
            .insert(click_id.to_string());
        let text = adclick_actors::time::format_rfc3339(ts);
        self.hours
            .insert((text[..10].to_string(), text[11..13].to_string()));
    }

    fn counts(&self) -> BTreeMap<(String, i64), u64> {
        self.clicks
            .iter()
            .map(|(k, ids)| (k.clone(), ids.len() as u64))
            .collect()
    }
}

/// Round `round`'s messages: valid clicks over the last three hours, exact
/// repeats, payloads that are not JSON, an ad id that is not the subject's,
/// and rejects with and without a reason.
fn round(round: usize, base: i64, expected: &mut Expected) -> Vec<Published> {
    let mut out = Vec::new();
    let mut valid: Vec<(String, String)> = Vec::new();
    for i in 0..200usize {
        let ad = format!("ad-{}", i % 5);
        let subject = format!("clicks.{ad}");
        let payload = if i % 10 == 9 {
            format!("not json {round}-{i}")
        } else if i % 13 == 12 {
            format!(r#"{{"click_id":"m{round}-{i}","ad_id":"other","ts":{base}}}"#)
        } else if i % 7 == 6 && !valid.is_empty() {
            let (subject, payload) = valid[i % valid.len()].clone();
            out.push(Published {
                subject,
                payload,
                reason: None,
            });
            continue;
        } else {
            let ts = base + ((i as i64 * 37_123 + round as i64 * 1_000_003) % (3 * HOUR));
            let click_id = format!("c{round}-{i}");
            expected.valid(&ad, &click_id, ts);
            let payload = format!(
                r#"{{"click_id":"{click_id}","ad_id":"{ad}","ts":{ts},"country":"us","ip":"10.0.0.{i}"}}"#
            );
            valid.push((subject.clone(), payload.clone()));
            payload
        };
        out.push(Published {
            subject,
            payload,
            reason: None,
        });
    }
    for i in 0..30usize {
        let kind = ["invalid", "too_late", "future"][i % 3];
        out.push(Published {
            subject: format!("rejected.{kind}"),
            payload: format!(r#"{{"click_id":"x{round}-{i}","ad_id":"ad-1","ts":{base}}}"#),
            reason: (i != 4).then(|| format!("{kind} because {round}-{i}")),
        });
    }
    out
}

async fn publish(js: &jetstream::Context, messages: &[Published]) {
    let mut acks = Vec::new();
    for m in messages {
        let mut message = PublishMessage::build().payload(m.payload.clone().into());
        if let Some(reason) = &m.reason {
            message = message.header("Adclick-Reject-Reason", reason.as_str());
        }
        acks.push(
            js.send_publish(m.subject.clone(), message)
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
}

/// Every message of `stream`: (seq, subject, payload, reject reason).
async fn stream_messages(
    js: &jetstream::Context,
    stream: &str,
) -> Vec<(u64, String, Vec<u8>, Option<String>)> {
    all_messages(js, stream)
        .await
        .into_iter()
        .map(|m| {
            let seq = m.info().expect("info").stream_sequence;
            let reason = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Adclick-Reject-Reason"))
                .map(|v| v.as_str().to_string());
            (seq, m.subject.to_string(), m.payload.to_vec(), reason)
        })
        .collect()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn manifests_of(root: &Path, dataset: &str) -> usize {
    files_under(&root.join("_manifests").join(dataset)).len()
}

/// Waits until `check` holds (the condition, never a duration, decides).
async fn wait_until(what: &str, log: &Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; archiver log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The messages read back through the reader API, in sequence order.
async fn archived(
    archive: &Archive,
    dataset: Dataset,
) -> (Vec<(u64, String, Vec<u8>, Option<String>)>, u64) {
    let mut out = Vec::new();
    let read = read_range(archive, dataset, i64::MIN / 2, i64::MAX / 2, |m| {
        out.push((
            m.seq,
            m.subject.to_string(),
            m.payload.to_vec(),
            m.reason.map(str::to_string),
        ))
    })
    .await
    .expect("read the archive");
    assert_eq!(read.messages as usize, out.len());
    out.sort_by_key(|m| m.0);
    (out, read.archived_through)
}

const DUCKDB_QUERIES: &str = r#"
import duckdb, json, sys
root = sys.argv[1]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
clicks = f"read_parquet('{root}/clicks/**/*.parquet', hive_partitioning = true)"
rejects = f"read_parquet('{root}/rejects/**/*.parquet', hive_partitioning = true)"
# As docs/ARCHIVE.md shows: DuckDB types `hour` by the values it finds (text
# while one has a leading zero, an integer otherwise) unless told.
typed = f"read_parquet('{root}/clicks/**/*.parquet', hive_types = {{'dt': DATE, 'hour': INTEGER}})"
texts = f"read_parquet('{root}/clicks/**/*.parquet', hive_types = {{'dt': DATE, 'hour': VARCHAR}})"
out = {
    "click_seqs": [r[0] for r in con.execute(f"SELECT seq FROM {clicks} ORDER BY seq").fetchall()],
    "rejects": [[r[0], r[1]] for r in con.execute(f"SELECT seq, reason FROM {rejects} ORDER BY seq").fetchall()],
    "counts": [[r[0], r[1], r[2]] for r in con.execute(
        f"SELECT ad_id, epoch_ms(date_trunc('minute', ts)) AS minute, count(DISTINCT click_id) "
        f"FROM {clicks} WHERE valid GROUP BY ALL ORDER BY ALL").fetchall()],
    "misfiled": con.execute(
        f"SELECT count(*) FROM {typed} WHERE valid AND (dt <> CAST(ts AS DATE) OR hour <> hour(ts))"
    ).fetchone()[0],
    "hours": [[str(r[0]), r[1]] for r in con.execute(
        f"SELECT DISTINCT dt, hour FROM {texts} WHERE valid ORDER BY ALL").fetchall()],
}
print(json.dumps(out))
"#;

fn duckdb(root: &Path) -> Value {
    let duckdb = duckdb_path();
    let out = Command::new("python3")
        .args(["-c", DUCKDB_QUERIES])
        .arg(root)
        .env("PYTHONPATH", &duckdb)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "DuckDB failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("DuckDB's JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_sigkill_and_duckdb_agrees() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let log = dir.path().join("archiver.log");
    let mut child = archiver(&nats, &root, &log, &[]).spawn().unwrap();
    let js = nats.jetstream().await;
    // The archiver creates both streams.
    let deadline = Instant::now() + Duration::from_secs(20);
    while js.get_stream("CLICKS_REJECTED").await.is_err() {
        assert!(Instant::now() < deadline, "no streams within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let base = (now_ms() / HOUR - 3) * HOUR;
    let mut expected = Expected::default();
    let mut kills = 0;
    for r in 0..3 {
        let before = manifests_of(&root, "clicks");
        publish(&js, &round(r, base, &mut expected)).await;
        // Killed as soon as a flush of this round committed: mid-way
        // through the round's 230 messages (37 a flush).
        wait_until("a commit of this round", &log, || {
            manifests_of(&root, "clicks") > before
        })
        .await;
        kill(child);
        kills += 1;
        child = archiver(&nats, &root, &log, &[]).spawn().unwrap();
    }
    kill(child);
    // --once archives what the streams hold, and exits 0.
    let status = archiver(&nats, &root, &log, &["--once"])
        .status()
        .expect("adclick archive --once");
    assert!(
        status.success(),
        "--once: {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(kills, 3);

    let clicks = stream_messages(&js, "CLICKS").await;
    let rejects = stream_messages(&js, "CLICKS_REJECTED").await;
    assert_eq!((clicks.len(), rejects.len()), (600, 90));

    // Every stream message once, through the manifests, as the stream has it.
    let archive = Archive::open(&root.display().to_string()).unwrap();
    let (got, through) = archived(&archive, Dataset::Clicks).await;
    assert_eq!(through, clicks.last().unwrap().0);
    assert_eq!(got, clicks);
    let (got, through) = archived(&archive, Dataset::Rejects).await;
    assert_eq!(through, rejects.last().unwrap().0);
    assert_eq!(got, rejects);

    // No file outside the manifests, nothing left staged.
    let mut listed = Vec::new();
    for dataset in Dataset::ALL {
        for manifest in archive.manifests(dataset).await.unwrap() {
            for file in manifest.files {
                listed.push(format!("{}/{}", dataset.name(), file.path));
            }
        }
    }
    listed.sort();
    let on_disk: Vec<String> = files_under(&root)
        .into_iter()
        .filter(|f| !f.starts_with("_manifests/"))
        .collect();
    assert_eq!(on_disk, listed);
    assert!(listed.len() > 10, "{listed:?}");

    // DuckDB on the archive: the same sequences, reasons, counts and hours.
    let duck = duckdb(&root);
    let seqs: Vec<u64> = clicks.iter().map(|m| m.0).collect();
    assert_eq!(duck["click_seqs"], serde_json::json!(seqs));
    let reasons: Vec<Value> = rejects
        .iter()
        .map(|m| serde_json::json!([m.0, m.3]))
        .collect();
    assert_eq!(duck["rejects"], Value::Array(reasons));
    let counts: Vec<Value> = expected
        .counts()
        .into_iter()
        .map(|((ad, minute), n)| serde_json::json!([ad, minute, n]))
        .collect();
    assert_eq!(duck["counts"], Value::Array(counts));
    assert_eq!(duck["misfiled"], 0);
    let hours: Vec<Value> = expected
        .hours
        .iter()
        .map(|(dt, hour)| serde_json::json!([dt, hour]))
        .collect();
    assert_eq!(hours.len(), 3);
    assert_eq!(duck["hours"], Value::Array(hours));

    // A running `adclick archive` serves its metrics, has nothing left to
    // archive, and exits 0 on SIGTERM.
    let port = common::free_port();
    let mut running = archiver(&nats, &root, &log, &[])
        .env("ADCLICK_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, text)) = adclick::http::get(addr, "/metrics").await {
            // Both datasets measured their lag: nothing behind.
            let lags: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("adclick_archive_lag_messages{"))
                .collect();
            if lags.len() == 2 {
                assert!(lags.iter().all(|l| l.ends_with(" 0")), "{lags:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no archive metrics within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status();
    let status = running.wait().unwrap();
    assert!(status.success(), "SIGTERM: {status}");
    assert_eq!(
        files_under(&root).len(),
        listed.len() + manifests_count(&root)
    );
}

fn manifests_count(root: &Path) -> usize {
    files_under(&root.join("_manifests")).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_archive_flushes_what_it_holds_on_sigterm() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let root_text = root.display().to_string();
    let mut service = Adclick::start(
        &nats,
        &dir.path().join("data"),
        &[
            ("ADCLICK_ARCHIVE", "true"),
            ("ADCLICK_ARCHIVE_URL", &root_text),
            // Only the stop flushes.
            ("ADCLICK_ARCHIVE_FLUSH_INTERVAL", "1h"),
        ],
    );
    service.wait_ready().await;
    let js = nats.jetstream().await;
    let ts = now_ms();
    let messages: Vec<Published> = (0..40)
        .map(|i| Published {
            subject: format!("clicks.ad-{}", i % 3),
            payload: format!(r#"{{"click_id":"s{i}","ad_id":"ad-{}","ts":{ts}}}"#, i % 3),
            reason: None,
        })
        .collect();
    publish(&js, &messages).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.metric("adclick_archive_buffered_messages").await != 40.0 {
        assert!(
            Instant::now() < deadline,
            "the archiver did not buffer 40 messages; log:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(manifests_of(&root, "clicks"), 0, "flushed before the stop");
    let status = service.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}; log:\n{}", service.log());

    let archive = Archive::open(&root_text).unwrap();
    let manifests = archive.manifests(Dataset::Clicks).await.unwrap();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!((manifests[0].first_seq, manifests[0].last_seq), (1, 40));
    let (got, through) = archived(&archive, Dataset::Clicks).await;
    assert_eq!(through, 40);
    assert_eq!(got, stream_messages(&js, "CLICKS").await);
}

/// A crash inside a flush, at each step of the protocol (fault points: the
/// `fault-injection` feature, which scripts/test turns on): after staging
/// (no manifest: the staged files are discarded and read again from the
/// stream) and after the manifest (the commit: readers through the
/// manifests already see it; the next start moves the files into place).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_flush_is_repaired_at_the_next_start() {
    for (point, manifests_after_crash) in
        [("abort-archive-staged", 1), ("abort-archive-committed", 2)]
    {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let log = dir.path().join("archiver.log");
        let mut crashing = archiver(&nats, &root, &log, &[])
            .env("ADCLICK_FAULT", format!("{point}:0:2"))
            .spawn()
            .unwrap();
        let js = nats.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while js.get_stream("CLICKS").await.is_err() {
            assert!(Instant::now() < deadline, "no stream within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let base = (now_ms() / HOUR - 1) * HOUR;
        publish(&js, &round(0, base, &mut Expected::default())).await;
        // The second flush of clicks aborts the process.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = crashing.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{point}: no crash within 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(!status.success(), "{point}: {status}");
        assert_eq!(
            manifests_of(&root, "clicks"),
            manifests_after_crash,
            "{point}"
        );
        let staged = files_under(&root.join("_staging/clicks"));
        assert!(!staged.is_empty(), "{point}: nothing staged");
        let archive = Archive::open(&root.display().to_string()).unwrap();
        let (seen, _) = archived(&archive, Dataset::Clicks).await;
        assert_eq!(seen.len(), 37 * manifests_after_crash, "{point}");

        let status = archiver(&nats, &root, &log, &["--once"]).status().unwrap();
        assert!(
            status.success(),
            "{point}: --once: {status}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let repaired = if point == "abort-archive-staged" {
            "discarded=1"
        } else {
            "finished=1"
        };
        assert!(text.contains(repaired), "{point}: {text}");
        let clicks = stream_messages(&js, "CLICKS").await;
        let (got, through) = archived(&archive, Dataset::Clicks).await;
        assert_eq!(through, 200);
        assert_eq!(got, clicks, "{point}");
        assert!(files_under(&root.join("_staging")).is_empty(), "{point}");
        let mut listed: Vec<String> = archive
            .manifests(Dataset::Clicks)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|m| m.files.into_iter().map(|f| format!("clicks/{}", f.path)))
            .collect();
        listed.sort();
        assert_eq!(
            files_under(&root.join("clicks"))
                .into_iter()
                .map(|f| format!("clicks/{f}"))
                .collect::<Vec<_>>(),
            listed
        );
    }
}

/// What `adclick archive` may publish with the default stream names, as
/// docs/ARCHIVE.md lists it (it subscribes to `_INBOX.>` only).
const ARCHIVER_PUBLISH: &[&str] = &[
    "$JS.API.STREAM.INFO.CLICKS",
    "$JS.API.STREAM.CREATE.CLICKS",
    "$JS.API.STREAM.INFO.CLICKS_REJECTED",
    "$JS.API.STREAM.CREATE.CLICKS_REJECTED",
    "$JS.API.CONSUMER.CREATE.CLICKS",
    "$JS.API.CONSUMER.CREATE.CLICKS_REJECTED",
    "$JS.API.CONSUMER.MSG.NEXT.CLICKS.>",
    "$JS.API.CONSUMER.MSG.NEXT.CLICKS_REJECTED.>",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archiver_needs_only_the_documented_permissions() {
    let allowed: Vec<String> = ARCHIVER_PUBLISH.iter().map(|s| format!("{s:?}")).collect();
    let nats = NatsServer::start_with_config(&format!(
        r#"
accounts {{
  ADS {{
    jetstream: enabled
    users: [
      {{ user: archiver, password: archiver, permissions: {{ publish: [{}], subscribe: ["_INBOX.>"] }} }}
      {{ user: admin, password: admin }}
    ]
  }}
}}
"#,
        allowed.join(", ")
    ));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let log = dir.path().join("archiver.log");
    // --once on nothing: it creates both streams, finds them empty, exits.
    let status = archiver(&nats, &root, &log, &["--once"])
        .env("ADCLICK_NATS_USER", "archiver")
        .env("ADCLICK_NATS_PASSWORD", "archiver")
        .status()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status}; log:\n{}", text());
    let admin = async_nats::ConnectOptions::new()
        .user_and_password("admin".into(), "admin".into())
        .connect(nats.url())
        .await
        .expect("admin connects");
    let js = jetstream::new(admin);
    let base = (now_ms() / HOUR - 1) * HOUR;
    let messages = round(0, base, &mut Expected::default());
    publish(&js, &messages).await;
    let status = archiver(&nats, &root, &log, &["--once"])
        .env("ADCLICK_NATS_USER", "archiver")
        .env("ADCLICK_NATS_PASSWORD", "archiver")
        .status()
        .unwrap();
    assert!(status.success(), "{status}; log:\n{}", text());
    assert!(!text().contains("Permissions Violation"), "{}", text());
    let archive = Archive::open(&root.display().to_string()).unwrap();
    assert_eq!(
        archived(&archive, Dataset::Clicks).await.0,
        stream_messages(&js, "CLICKS").await
    );
    assert_eq!(
        archived(&archive, Dataset::Rejects).await.0,
        stream_messages(&js, "CLICKS_REJECTED").await
    );
}
