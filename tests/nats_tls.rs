//! adclick over TLS to a nats-server that verifies client certificates,
//! with the test-only CA and certificates of tests/fixtures/nats-tls
//! (`regenerate.sh` there remakes them): counts are exact; without its
//! client certificate adclick stops at start-up saying it could not connect.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;

const MINUTE: i64 = 60_000;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nats-tls")
        .join(name)
        .display()
        .to_string()
}

fn tls_server() -> NatsServer {
    NatsServer::start_with_config(&format!(
        r#"
tls {{
  cert_file: "{}"
  key_file: "{}"
  ca_file: "{}"
  verify: true
  timeout: 5
}}
"#,
        fixture("server.pem"),
        fixture("server-key.pem"),
        fixture("ca.pem")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_counts_are_exact() {
    let nats = tls_server();
    let data = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        fixture("ca.pem"),
        fixture("client.pem"),
        fixture("client-key.pem"),
    );
    let env = [
        ("ADCLICK_PARTITIONS", "2"),
        ("ADCLICK_WATERMARK_DELAY", "2s"),
        ("ADCLICK_ALLOWED_LATENESS", "1h"),
        ("ADCLICK_IDLE_TIMEOUT", "300ms"),
        ("ADCLICK_NATS_TLS_CA_FILE", ca.as_str()),
        ("ADCLICK_NATS_TLS_CERT_FILE", cert.as_str()),
        ("ADCLICK_NATS_TLS_KEY_FILE", key.as_str()),
    ];
    let service = Adclick::start_settled(&nats, data.path(), &env).await;
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone().into())
        .add_client_certificate(cert.clone().into(), key.clone().into())
        .require_tls(true)
        .connect(nats.url())
        .await
        .expect("the test connects over TLS");
    let js = async_nats::jetstream::new(client);
    let t0 = now_ms().div_euclid(MINUTE) * MINUTE - 2 * MINUTE;
    let mut oracle = Oracle::default();
    let clicks: Vec<TestClick> = (0..120)
        .map(|i| TestClick {
            click_id: format!("t-{i}"),
            ad: format!("ad-{}", i % 5),
            ts: t0 + i as i64 * 300,
            country: Some("US"),
            ip: None,
        })
        .collect();
    count_and_publish(&js, &mut oracle, &clicks).await;
    eventually(Duration::from_secs(30), || async {
        for ad in (0..5).map(|a| format!("ad-{a}")) {
            count_matches(&service, &oracle, &ad, "", t0, t0 + MINUTE).await?;
            count_matches(&service, &oracle, &ad, "country=US", t0, t0 + MINUTE).await?;
        }
        Ok(())
    })
    .await;
    let log = service.log();
    assert!(
        log.contains("TLS required") && log.contains("client certificate"),
        "the start-up log says how it connects; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_client_certificate_start_up_fails_clearly() {
    let nats = tls_server();
    let data = tempfile::tempdir().unwrap();
    let ca = fixture("ca.pem");
    let (status, log) = Adclick::run_to_exit(
        &nats.url(),
        data.path(),
        &[("ADCLICK_NATS_TLS_CA_FILE", ca.as_str())],
    );
    assert!(!status.success(), "start-up must fail; log:\n{log}");
    assert!(
        log.contains("cannot connect to NATS") && log.contains("nats_tls_"),
        "says it could not connect and points at the TLS keys; log:\n{log}"
    );
}
