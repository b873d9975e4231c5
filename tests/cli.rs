//! The command line an operator uses beside the service: `adclick status`
//! against a real service (table, `--json`, tokens, exit codes), the
//! progress `adclick loadgen` draws, and `ADCLICK_LOG_FORMAT=json`.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "status-token-7f3a9c2e5b1d8064";

/// Runs `adclick <args>` with no ADCLICK_* variables from the caller's
/// environment but `env`.
fn adclick(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_adclick"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ADCLICK_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run adclick")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_row_a_partition_of_a_ready_service_and_its_body_with_json() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let digest = adclick::gateway::access::TokenDigest::of_token_line(TOKEN.as_bytes())
        .unwrap()
        .to_hex();
    let service = Adclick::start(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "4"),
            ("ADCLICK_API_TOKEN_SHA256", &digest),
        ],
    );
    service.wait_ready().await;
    let url = format!("http://{}", service.addr);

    // Without the token: refused, and the message says what to pass.
    let out = adclick(&["status", "--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("401") && err.contains("--token"), "{err}");

    // With it (from the environment): the table.
    let out = adclick(&["status", "--url", &url], &[("ADCLICK_API_TOKEN", TOKEN)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("READY · 4 partitions: 4 consuming here, 0 recovering"),
        "{stdout}"
    );
    let header = lines
        .iter()
        .position(|l| l.starts_with("PARTITION"))
        .unwrap_or_else(|| panic!("no table header:\n{stdout}"));
    let rows: Vec<Vec<&str>> = lines[header + 1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(
            row[..3],
            [n.to_string().as_str(), "here", "consuming"],
            "{stdout}"
        );
        // Restarts, the last column: none.
        assert_eq!(row.last(), Some(&"0"), "{stdout}");
    }

    // --json: the body as the service sent it.
    let out = adclick(&["status", "--url", &url, "--json", "--token", TOKEN], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(body["ready"], true);
    assert_eq!(body["partitions"].as_array().map(Vec::len), Some(4));
    assert_eq!(body["partitions"][3]["runs_here"], true);
}

#[test]
fn status_of_nothing_listening_exits_1_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = adclick(&["status", "--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach adclick at {url}")) && err.contains("--url"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A one-shot HTTP server answering `body` to the first request, on a
/// free port; returns its URL.
fn answer_once(status_line: &'static str, body: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status_line}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn status_of_a_service_still_recovering_exits_3_and_still_shows_the_table() {
    let url = answer_once(
        "200 OK",
        r#"{"now":"2026-12-07T06:45:30Z","ready":false,"partitions":[
            {"partition":0,"runs_here":true,"ready":true,"restarts":0},
            {"partition":1,"runs_here":true,"ready":false,"restarts":1}]}"#,
    );
    let out = adclick(&["status", "--url", &url], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("NOT READY · 2 partitions: 1 consuming here, 1 recovering"));
    assert!(stdout.contains("  1  here   recovering"), "{stdout}");
}

#[test]
fn status_of_something_else_on_the_port_exits_1() {
    let url = answer_once("200 OK", "<html>not adclick</html>");
    let out = adclick(&["status", "--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is it adclick?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_level_fields_and_target() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(
        &nats,
        data.path(),
        &[("ADCLICK_PARTITIONS", "2"), ("ADCLICK_LOG_FORMAT", "json")],
    );
    service.wait_ready().await;
    assert!(service.terminate(Duration::from_secs(20)).success());
    let log = service.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "start-up and drain log something:\n{log}");
    for line in &lines {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nlog:\n{log}"));
        assert!(event["level"].is_string(), "{line}");
        assert!(event["target"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
        assert!(event["timestamp"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains(r#""level":"INFO""#)),
        "{log}"
    );
}

#[test]
fn with_json_logs_the_reason_start_up_failed_is_a_json_line_too() {
    let data = tempfile::tempdir().unwrap();
    let (status, log) = Adclick::run_to_exit(
        "nats://127.0.0.1:1",
        data.path(),
        &[
            ("ADCLICK_LOG_FORMAT", "json"),
            ("ADCLICK_WATERMARK_DELAY", "5"),
        ],
    );
    assert!(!status.success());
    let events: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "ERROR"
            && e["fields"]["error"]
                .as_str()
                .is_some_and(|error| error.contains("ADCLICK_WATERMARK_DELAY"))),
        "{log}"
    );
}

#[test]
fn an_unknown_log_format_stops_start_up_naming_the_variable() {
    let data = tempfile::tempdir().unwrap();
    let (status, log) = Adclick::run_to_exit(
        "nats://127.0.0.1:1",
        data.path(),
        &[("ADCLICK_LOG_FORMAT", "yaml")],
    );
    assert!(!status.success());
    assert!(
        log.contains("ADCLICK_LOG_FORMAT") && log.contains("`yaml`"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_draws_its_progress_and_keeps_the_final_report_line() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    // The service makes the CLICKS stream loadgen publishes into.
    let service = Adclick::start(&nats, data.path(), &[("ADCLICK_PARTITIONS", "2")]);
    service.wait_ready().await;
    let out = adclick(
        &[
            "loadgen",
            "--nats-url",
            &nats.url(),
            "--count",
            "3000",
            "--rate",
            "2000",
            "--progress",
            "bar",
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Redrawn lines: carriage return, bar, counts; the last one erased.
    let draws: Vec<&str> = err
        .split('\r')
        .filter(|d| d.starts_with('[') && d.contains("acked"))
        .collect();
    // About 6 redraws in 1.5 s; 2 leave room for a loaded machine.
    assert!(draws.len() >= 2, "1.5 s at 4 redraws a second:\n{err:?}");
    assert!(
        draws
            .iter()
            .all(|d| d.contains("% ") && d.contains(" sent ") && d.contains("/s")),
        "{err:?}"
    );
    // A paced run shows acks as they come, not only at the end.
    assert!(draws.iter().any(|d| !d.contains("acked 0 ")), "{err:?}");
    // The bar is erased before the report (a log line may come between).
    let erased = err.rfind("\r\x1b[K").expect("the bar is erased");
    let report = err.rfind("sent 3000 (").expect("the final report");
    assert!(erased < report, "{err:?}");
    assert!(
        !err[erased..].contains("\r["),
        "a redraw after the erase: {err:?}"
    );
    assert!(err.contains("acked 3000,"), "{err:?}");

    // Not a terminal and `auto`: no redrawn line, the same report.
    let out = adclick(
        &[
            "loadgen",
            "--nats-url",
            &nats.url(),
            "--count",
            "300",
            "--rate",
            "0",
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains('\r') && err.contains("acked 300,"), "{err:?}");
}
