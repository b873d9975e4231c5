//! The Grafana dashboard `grafana/adclick.json` against the metrics a real
//! service exports: every `adclick_…` name any panel's query uses must be a
//! series in `/metrics` (a histogram only through its `_bucket`, `_sum` or
//! `_count`, judged by the `# TYPE` lines), and the file must be a dashboard
//! Grafana imports (unique ids, a query in every target, Prometheus picked
//! through the `${datasource}` variable).
//!
//! The panels of the row titled "Cluster …" use metrics only members started
//! with `cluster = true` export, so they are checked against one such member.
//! Three of those counters appear only after their first event (a failed
//! acquire, a failed shipment, a restore), which a healthy run never has:
//! they are checked against the names in `actors/src/telemetry.rs` instead
//! (`APPEAR_ON_FAILURE`).

mod common;

use adclick_actors::telemetry;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DASHBOARD: &str = include_str!("../grafana/adclick.json");
const TELEMETRY_SOURCE: &str = include_str!("../actors/src/telemetry.rs");
const MINUTE: i64 = 60_000;
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];
/// The label selector every metric on the dashboard carries.
const SELECTOR: &str = r#"{job=~"$job",instance=~"$instance"}"#;
/// Counters registered at their first increment, which only a failure (or a
/// restore after one) brings: absent from a healthy member's `/metrics`.
const APPEAR_ON_FAILURE: [&str; 3] = [
    telemetry::ACQUIRE_FAILED,
    telemetry::SHIP_FAILED,
    telemetry::STATE_RESTORED,
];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("grafana/adclick.json is JSON")
}

/// Every panel with the title of the row it sits under: the panels after a
/// row panel on the top level, and a collapsed row's own `panels`.
fn panels(dashboard: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    let mut row = String::new();
    for panel in dashboard["panels"].as_array().expect("panels is a list") {
        if panel["type"] == "row" {
            row = panel["title"].as_str().unwrap_or_default().to_string();
            for nested in panel["panels"].as_array().into_iter().flatten() {
                out.push((row.clone(), nested));
            }
        }
        out.push((row.clone(), panel));
    }
    out
}

fn in_cluster_row(row: &str) -> bool {
    row.starts_with("Cluster")
}

/// Every query of the dashboard, with the row of its panel.
fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|(row, panel)| {
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (row.clone(), t["expr"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `adclick_…` identifiers of a PromQL expression, each with the text
/// that follows it.
fn metric_refs(expr: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(found) = expr[start..].find("adclick_") {
        let at = start + found;
        let name_end = expr[at..]
            .find(|c: char| !is_name_char(c))
            .map_or(expr.len(), |n| at + n);
        let preceded = expr[..at].chars().next_back().is_some_and(is_name_char);
        if !preceded {
            out.push((expr[at..name_end].to_string(), &expr[name_end..]));
        }
        start = name_end;
    }
    out
}

/// The metric names the dashboard uses: all, or those of the cluster row / the others.
fn names_used(dashboard: &Value, cluster_row: Option<bool>) -> BTreeSet<String> {
    exprs(dashboard)
        .into_iter()
        .filter(|(row, _)| cluster_row.is_none_or(|c| in_cluster_row(row) == c))
        .flat_map(|(_, expr)| {
            metric_refs(&expr)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `# TYPE name kind` of a `/metrics` text.
fn types(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

fn has_samples(metrics: &str, series: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with(series) && l[series.len()..].starts_with(['{', ' ']))
}

/// Whether `name`, as a query uses it, is a series of `metrics`: a counter or
/// gauge by its own name, a histogram only by `_bucket`, `_sum` or `_count`.
fn resolve(metrics: &str, name: &str) -> Result<(), String> {
    let types = types(metrics);
    let family = match types.get(name).map(String::as_str) {
        Some("histogram") => {
            return Err(format!(
                "{name} is a histogram: query its _bucket, _sum or _count"
            ))
        }
        Some(_) => name,
        None => HISTOGRAM_SUFFIXES
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            .ok_or_else(|| format!("{name} is not in /metrics (no # TYPE line for it)"))?,
    };
    if has_samples(metrics, name) {
        Ok(())
    } else {
        Err(format!("{name} ({family}) has a TYPE line but no samples"))
    }
}

/// Every metric name `actors/src/telemetry.rs` declares (`pub const X: &str = "adclick_…";`).
fn telemetry_names() -> BTreeSet<String> {
    TELEMETRY_SOURCE
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (_, value) = rest.split_once(": &str = \"")?;
            Some(value.strip_suffix("\";")?.to_string())
        })
        .collect()
}

/// The telemetry name `used` stands for (a histogram's series → the
/// histogram); none for a histogram's bare name, which is no series.
fn telemetry_family(used: &str, names: &BTreeSet<String>) -> Option<String> {
    let histograms: Vec<&str> = telemetry::histogram_buckets()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    if names.contains(used) && !histograms.contains(&used) {
        return Some(used.to_string());
    }
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|s| used.strip_suffix(s))
        .find(|base| histograms.contains(base))
        .map(str::to_string)
}

/// Checks `names` against a live `/metrics` text; returns every failure.
fn missing(metrics: &str, names: &BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| resolve(metrics, n).err())
        .collect()
}

async fn metrics_text(service: &Adclick) -> String {
    let (status, body) = adclick::http::get(service.addr, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn the_dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let variables = d["templating"]["list"].as_array().expect("templating");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(variable(name)["type"], "query", "${name}");
        assert_eq!(variable(name)["datasource"]["uid"], "${datasource}");
    }

    let all = panels(&d);
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for (row, panel) in &all {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: id {id} used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                && grid["h"].as_u64().is_some_and(|h| h > 0)
                && grid["y"].as_u64().is_some(),
            "{title}: gridPos {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(!row.is_empty(), "{title} sits above the first row");
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: {expr}");
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId twice"
            );
            let used = metric_refs(expr);
            assert!(!used.is_empty(), "{title}: {expr} uses no adclick metric");
            for (name, after) in used {
                assert!(
                    after.starts_with(SELECTOR),
                    "{title}: {name} without the {SELECTOR} selector in {expr}"
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
    assert!(
        all.iter()
            .any(|(row, p)| in_cluster_row(row) && p["type"] != "row"),
        "no cluster row"
    );
}

/// Offline, before any service: each name is one `telemetry.rs` declares, and
/// the dashboard shows every metric `telemetry.rs` declares.
#[test]
fn the_dashboard_uses_exactly_the_metrics_of_telemetry_rs() {
    let names = telemetry_names();
    assert!(names.len() >= 25, "telemetry.rs parsed to {names:?}");
    let used = names_used(&dashboard(), None);
    let mut shown = BTreeSet::new();
    for name in &used {
        let family = telemetry_family(name, &names).unwrap_or_else(|| {
            panic!("{name} is not a series of a metric of actors/src/telemetry.rs")
        });
        shown.insert(family);
    }
    let not_shown: Vec<&String> = names.difference(&shown).collect();
    assert!(not_shown.is_empty(), "no panel shows {not_shown:?}");
}

/// The alert rules grafana/README.md suggests name metrics that exist too.
#[test]
fn the_suggested_alert_rules_use_metrics_of_telemetry_rs() {
    let readme = include_str!("../grafana/README.md");
    let rules = readme
        .split("```yaml")
        .nth(1)
        .and_then(|r| r.split("```").next())
        .expect("grafana/README.md has a yaml block of alert rules");
    let names = telemetry_names();
    let used = metric_refs(rules);
    assert!(used.len() >= 10, "{used:?}");
    for (name, _) in used {
        assert!(
            telemetry_family(&name, &names).is_some(),
            "grafana/README.md alerts on {name}, not a series of telemetry.rs"
        );
    }
}

/// The checker itself: a histogram by its bare name, a gauge with a
/// histogram's suffix and a misspelt name all fail; the right forms pass.
#[test]
fn the_checker_reads_histograms_by_their_type_lines() {
    let metrics = "\
# TYPE adclick_dedup_ids gauge
adclick_dedup_ids{partition=\"0\"} 3
# TYPE adclick_checkpoint_rows histogram
adclick_checkpoint_rows_bucket{partition=\"0\",le=\"1\"} 1
adclick_checkpoint_rows_sum{partition=\"0\"} 0
adclick_checkpoint_rows_count{partition=\"0\"} 1
# TYPE adclick_events_consumed_total counter
";
    for good in [
        "adclick_dedup_ids",
        "adclick_checkpoint_rows_bucket",
        "adclick_checkpoint_rows_sum",
        "adclick_checkpoint_rows_count",
    ] {
        assert_eq!(resolve(metrics, good), Ok(()), "{good}");
    }
    for bad in [
        "adclick_checkpoint_rows",
        "adclick_dedup_ids_count",
        "adclick_dedup_id",
        "adclick_events_consumed_total",
    ] {
        assert!(resolve(metrics, bad).is_err(), "{bad} passed");
    }
    let refs = metric_refs(r#"sum(rate(adclick_a_bucket{x="adclick_no"}[1m])) / xadclick_b"#);
    let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["adclick_a_bucket", "adclick_no"]);
}

/// One node, driven through every path the panels show: valid clicks, a
/// repeat, a late correction, an invalid message, a too-late and a future
/// click, REST requests; then every metric outside the cluster row is in
/// `/metrics`, and the driven counters moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_is_in_metrics_of_a_single_node() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = Adclick::start_settled(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_WATERMARK_DELAY", "1s"),
            ("ADCLICK_IDLE_TIMEOUT", "300ms"),
            ("ADCLICK_EXTRA_DIMENSIONS", "device"),
        ],
    )
    .await;
    let js = nats.jetstream().await;

    let now = now_ms();
    let click = |id: &str, ts: i64| TestClick {
        click_id: id.into(),
        ad: "ad-1".into(),
        ts,
        country: Some("US"),
        ip: Some("10.0.0.1"),
    };
    let clicks = [
        click("a", now),
        click("b", now),
        click("a", now),                     // a repeat
        click("late", now - 3 * MINUTE),     // a correction to a closed minute
        click("old", now - 2 * 3_600_000),   // too late (allowed_lateness 10m)
        click("ahead", now + 2 * 3_600_000), // future (max_future_skew 1m)
    ];
    let mut messages: Vec<(String, String, Option<String>)> = clicks
        .iter()
        .map(|c| (format!("clicks.{}", c.ad), c.payload(), None))
        .collect();
    messages.push(("clicks.ad-1".into(), "not json".into(), None));
    publish_raw(&js, &messages).await;

    let published = messages.len() as f64;
    eventually(Duration::from_secs(10), || async {
        let consumed = service.metric(telemetry::CONSUMED).await;
        let committed = service
            .metric("adclick_checkpoint_duration_seconds_count")
            .await;
        if consumed == published && committed > 0.0 {
            Ok(())
        } else {
            Err(format!("consumed {consumed} of {published}"))
        }
    })
    .await;
    let (status, _) = service
        .get(&format!(
            "/v1/ads/ad-1/aggregated_count?from={}&to={}",
            now - 10 * MINUTE,
            now + MINUTE
        ))
        .await;
    assert_eq!(status, 200);
    let (status, _) = service.get("/v1/ads/popular?window=1").await;
    assert_eq!(status, 200);

    // What was driven shows: each counter a panel plots moved.
    for (name, want) in [
        (telemetry::COUNTED, 3.0),
        (telemetry::DUPLICATE, 1.0),
        (telemetry::LATE_CORRECTIONS, 1.0),
        (telemetry::INVALID, 1.0),
        (telemetry::TOO_LATE, 1.0),
        (telemetry::FUTURE, 1.0),
    ] {
        eventually(Duration::from_secs(5), || async {
            let got = service.metric(name).await;
            (got == want)
                .then_some(())
                .ok_or(format!("{name} = {got}, want {want}"))
        })
        .await;
    }

    let metrics = metrics_text(&service).await;
    let used = names_used(&dashboard(), Some(false));
    assert!(used.len() >= 20, "{used:?}");
    let failures = missing(&metrics, &used);
    assert!(
        failures.is_empty(),
        "the dashboard uses metrics /metrics does not have:\n  {}\n/metrics:\n{metrics}",
        failures.join("\n  ")
    );
    for route in ["/v1/ads/{ad_id}/aggregated_count", "/v1/ads/popular"] {
        assert!(
            metrics.contains(&format!(
                "adclick_http_request_duration_seconds_count{{route=\"{route}\",status=\"200\"}}"
            )),
            "no HTTP series of {route}"
        );
    }
}

/// One member with `cluster = true`: every metric of the cluster row is in its
/// `/metrics` once it has shipped a changed partition, except the counters
/// only a failure registers, which must be names of `telemetry.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_metric_is_in_metrics_of_a_cluster_member() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let service = Adclick::start(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_CLUSTER", "true"),
            ("ADCLICK_MEMBER_ID", "m1"),
            ("ADCLICK_LEASE_TTL", "2s"),
            ("ADCLICK_STATE_SHIP_INTERVAL", "1s"),
            ("ADCLICK_IDLE_TIMEOUT", "300ms"),
        ],
    );
    service.wait_ready().await;
    let js = nats.jetstream().await;
    let now = now_ms();
    let messages: Vec<(String, String, Option<String>)> = (0..4)
        .map(|i| {
            let c = TestClick {
                click_id: format!("c-{i}"),
                ad: format!("ad-{i}"),
                ts: now,
                country: None,
                ip: None,
            };
            (format!("clicks.{}", c.ad), c.payload(), None)
        })
        .collect();
    publish_raw(&js, &messages).await;
    eventually(Duration::from_secs(10), || async {
        let shipped = service.metric(telemetry::STATE_SHIPPED_BYTES).await;
        let held = service.metric(telemetry::PARTITIONS_HELD).await;
        if shipped > 0.0 && held == 2.0 {
            Ok(())
        } else {
            Err(format!("shipped {shipped} bytes, holds {held} partitions"))
        }
    })
    .await;

    let metrics = metrics_text(&service).await;
    let known = telemetry_names();
    let used = names_used(&dashboard(), Some(true));
    assert!(used.len() >= 3, "{used:?}");
    let (on_failure, live): (BTreeSet<String>, BTreeSet<String>) = used
        .into_iter()
        .partition(|n| APPEAR_ON_FAILURE.contains(&n.as_str()));
    let failures = missing(&metrics, &live);
    assert!(
        failures.is_empty(),
        "the cluster row uses metrics a member's /metrics does not have:\n  {}\n/metrics:\n{metrics}",
        failures.join("\n  ")
    );
    for name in &on_failure {
        assert!(known.contains(name), "{name} is not in telemetry.rs");
    }
    assert_eq!(
        on_failure.len(),
        APPEAR_ON_FAILURE.len(),
        "the cluster row should show every failure counter"
    );
}
