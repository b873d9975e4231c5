//! The REST API's protections over real HTTP against a real `adclick serve`:
//! bearer tokens (401 / 403 / 200, probes open), TLS with a test CA, and the
//! limits a slow or flooding client meets (a JSON 414 for a long query, 431
//! for an oversized head, slow and idle connections cut off, a connection
//! cap that holds). The TLS files are test-only fixtures:
//! tests/fixtures/rest-tls/regenerate.sh makes them.

mod common;

use adclick::http::HttpResponse;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-token-5b0e2f3c9a7d41e8b6c2";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rest-tls")
        .join(name)
}

/// The digest of `token` as `adclick token-hash` prints it (the operator's way).
fn token_hash(token: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_adclick"))
        .arg("token-hash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run adclick token-hash");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{token}").expect("write the token");
    drop(stdin);
    let out = child.wait_with_output().expect("token-hash output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    adclick::http::get_with(addr, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn json(response: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.body))
}

#[test]
fn token_hash_prints_the_sha256_of_the_token_line() {
    // printf %s secret | sha256sum
    assert_eq!(
        token_hash("secret"),
        "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_the_api_but_not_the_probes() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let digest = token_hash(TOKEN);
    // A second digest, so the right token is not simply the only one.
    let other = token_hash("another-token-4c1d9e7f2a6b8035");
    let digests = format!("{other},{digest}");
    let service = Adclick::start(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_API_TOKEN_SHA256", &digests),
            ("ADCLICK_METRICS_REQUIRE_TOKEN", "true"),
        ],
    );
    // /readyz needs no token: the harness's wait works unchanged.
    service.wait_ready().await;
    let addr = service.addr;
    let bearer = format!("Bearer {TOKEN}");
    let right = [("Authorization", bearer.as_str())];

    for open in ["/healthz", "/readyz", "/openapi.json", "/docs"] {
        assert_eq!(get(addr, open, &[]).await.status, 200, "{open}");
    }
    let doc = json(&get(addr, "/openapi.json", &[]).await);
    assert_eq!(
        doc["paths"]["/v1/ads/popular"]["get"]["security"],
        serde_json::json!([{"bearer_token": []}])
    );

    // Clicks to count, in a minute three minutes ago.
    let minute = (now_ms() / 60_000 - 3) * 60_000;
    let clicks: Vec<(String, String, Option<String>)> = (0..5)
        .map(|i| {
            let payload =
                serde_json::json!({"click_id": format!("c{i}"), "ad_id": "ad-sec", "ts": minute + i * 1000});
            ("clicks.ad-sec".to_string(), payload.to_string(), None)
        })
        .collect();
    publish_raw(&nats.jetstream().await, &clicks).await;
    let count_path = format!(
        "/v1/ads/ad-sec/aggregated_count?from={minute}&to={}",
        minute + 60_000
    );

    for path in [
        count_path.as_str(),
        "/v1/ads/popular",
        "/metrics",
        "/no-such-path",
    ] {
        for (headers, status, code) in [
            (vec![], 401, "unauthorized"),
            (
                vec![("Authorization", "Basic dGVzdDp0ZXN0")],
                401,
                "unauthorized",
            ),
            (vec![("Authorization", "Bearer")], 401, "unauthorized"),
            (
                vec![("Authorization", "Bearer wrong-token-000000000000")],
                403,
                "forbidden",
            ),
            // A stored digest is not a token.
            (
                vec![("Authorization", &format!("Bearer {digest}") as &str)],
                403,
                "forbidden",
            ),
        ] {
            let response = get(addr, path, &headers).await;
            let body = json(&response);
            assert_eq!(
                (response.status, body["code"].as_str()),
                (status, Some(code)),
                "{path} with {headers:?}: {}",
                response.body
            );
            assert!(body["error"].is_string(), "{path}: {}", response.body);
            if status == 401 {
                let challenge = response.header("www-authenticate").unwrap_or_default();
                assert!(challenge.starts_with("Bearer"), "{path}: {challenge:?}");
            }
        }
    }

    // The right token: real answers.
    eventually(Duration::from_secs(20), || async {
        let response = get(addr, &count_path, &right).await;
        let body = json(&response);
        match (response.status, body["count"].as_u64()) {
            (200, Some(5)) => Ok(()),
            other => Err(format!("{other:?}: {}", response.body)),
        }
    })
    .await;
    let popular = get(addr, "/v1/ads/popular", &right).await;
    assert_eq!(popular.status, 200, "{}", popular.body);
    assert!(json(&popular)["ads"].is_array());
    let metrics = get(addr, "/metrics", &right).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("adclick_http_request_duration_seconds"),
        "refusals are measured too"
    );
    assert_eq!(get(addr, "/no-such-path", &right).await.status, 404);
}

/// A TLS client that trusts only the test CA.
fn test_ca_client() -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(fixture("ca.pem")).expect("tests/fixtures/rest-tls/ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("a PEM certificate")).expect("a CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn https_get(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    let tls = client.connect(name, tcp).await?;
    adclick::http::exchange(tls, "localhost", path, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_tls_with_the_configured_certificate() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let cert = fixture("server.pem").display().to_string();
    let key = fixture("server.key").display().to_string();
    let digest = token_hash(TOKEN);
    let service = Adclick::start(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_HTTP_TLS_CERT", &cert),
            ("ADCLICK_HTTP_TLS_KEY", &key),
            ("ADCLICK_API_TOKEN_SHA256", &digest),
        ],
    );
    let client = test_ca_client();
    let addr = service.addr;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match https_get(&client, addr, "/readyz", &[]).await {
            Ok(response) if response.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "not ready over https within 30 s: {other:?}; log:\n{}",
                service.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bearer = format!("Bearer {TOKEN}");
    let popular = https_get(
        &client,
        addr,
        "/v1/ads/popular",
        &[("Authorization", &bearer)],
    )
    .await
    .expect("https GET");
    assert_eq!(popular.status, 200, "{}", popular.body);
    let refused = https_get(&client, addr, "/v1/ads/popular", &[])
        .await
        .expect("https GET");
    assert_eq!(refused.status, 401);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = adclick::http::get(addr, "/healthz").await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the test CA refuses the server.
    let stranger = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    ));
    let refused = https_get(&stranger, addr, "/healthz", &[]).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("UnknownIssuer")),
        "an untrusted CA must fail the handshake"
    );
}

#[test]
fn bad_tls_files_and_token_digests_stop_start_up_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let cert = fixture("server.pem").display().to_string();
    let key = fixture("server.key").display().to_string();
    let ca = fixture("ca.pem").display().to_string();
    for (env, want) in [
        (
            vec![
                ("ADCLICK_HTTP_TLS_CERT", "/no/such/cert.pem"),
                ("ADCLICK_HTTP_TLS_KEY", key.as_str()),
            ],
            vec!["http_tls_cert", "/no/such/cert.pem"],
        ),
        (
            vec![
                ("ADCLICK_HTTP_TLS_CERT", key.as_str()),
                ("ADCLICK_HTTP_TLS_KEY", key.as_str()),
            ],
            vec!["http_tls_cert", "no PEM certificate"],
        ),
        (
            vec![
                ("ADCLICK_HTTP_TLS_CERT", cert.as_str()),
                ("ADCLICK_HTTP_TLS_KEY", ca.as_str()),
            ],
            vec!["http_tls_key", "no usable PEM private key"],
        ),
        (
            vec![("ADCLICK_HTTP_TLS_CERT", cert.as_str())],
            vec!["http_tls_key", "must be set when http_tls_cert is"],
        ),
        (
            vec![("ADCLICK_API_TOKEN_SHA256", TOKEN)],
            vec!["api_token_sha256", "not a SHA-256 digest"],
        ),
    ] {
        // NATS is never reached: these are refused first.
        let (status, log) = Adclick::run_to_exit("nats://127.0.0.1:1", data.path(), &env);
        assert!(!status.success(), "{env:?}");
        for part in want {
            assert!(log.contains(part), "{env:?}: no `{part}` in\n{log}");
        }
        assert!(!log.contains(TOKEN), "the log shows a token: {log}");
    }
}

/// A connection that sends part of a request head, then nothing.
async fn stalled(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /v1/ads/popular HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write a partial head");
    stream
}

/// Whether the server closes `stream` within `within`.
async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// How long until the server closes `stream` (at most `within`).
async fn closed_after(mut stream: TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept a stalled connection open for {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_flooding_and_oversized_requests_meet_the_limits() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut service = Adclick::start(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_HTTP_HEADER_READ_TIMEOUT", "1s"),
            ("ADCLICK_HTTP_MAX_CONNECTIONS", "4"),
            ("ADCLICK_HTTP_MAX_QUERY_BYTES", "1000"),
            ("ADCLICK_HTTP_MAX_HEADER_BYTES", "8192"),
        ],
    );
    service.wait_ready().await;
    let addr = service.addr;

    // A query string over the limit: a JSON 414 naming the key.
    let long = format!("/v1/ads/popular?window=1&x={}", "a".repeat(1000));
    let response = get(addr, &long, &[]).await;
    let body = json(&response);
    assert_eq!(
        (response.status, body["code"].as_str()),
        (414, Some("query_too_long"))
    );
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("http_max_query_bytes"));
    let within = format!("/v1/ads/popular?window=1&count={}", "0".repeat(950) + "5");
    assert_eq!(get(addr, &within, &[]).await.status, 200);

    // An oversized head: refused by hyper before any handler.
    let big = "b".repeat(10_000);
    let response = get(addr, "/healthz", &[("X-Big", &big)]).await;
    assert_eq!(response.status, 431);

    // A slow client (half a head) and an idle one (nothing) are cut off
    // after the header read timeout.
    let slow = closed_after(stalled(addr).await, Duration::from_secs(5)).await;
    let idle = TcpStream::connect(addr).await.unwrap();
    let idle = closed_after(idle, Duration::from_secs(5)).await;
    for (what, after) in [("slow", slow), ("idle", idle)] {
        assert!(
            after >= Duration::from_millis(800) && after < Duration::from_secs(4),
            "{what} connection closed after {after:?}"
        );
    }

    // Every connection held by stalled clients: a query waits for the
    // timeout to free one, never longer, and is answered.
    let held: Vec<TcpStream> = futures::future::join_all((0..4).map(|_| stalled(addr))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = get(addr, "/v1/ads/popular", &[]).await;
    let waited = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(4),
        "answered after {waited:?}: the connection cap held, and the timeout freed it"
    );
    drop(held);

    // SIGTERM with a keep-alive connection open: it is closed after its
    // request, and the process exits cleanly.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = kept.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    assert!(
        service.terminate(Duration::from_secs(15)).success(),
        "{}",
        service.log()
    );
    closed_after(kept, Duration::from_secs(1)).await;
}

/// A connection to `addr` from `source`, an address of the loopback range
/// (a second client on the same machine).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("an address"))
        .expect("bind the client address");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_hold_every_connection() {
    let nats = NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    // Four connections in all, three per client, and a header read timeout
    // long enough that anything cut sooner was cut by the per-client cap.
    let service = Adclick::start(
        &nats,
        data.path(),
        &[
            ("ADCLICK_PARTITIONS", "2"),
            ("ADCLICK_HTTP_MAX_CONNECTIONS", "4"),
            ("ADCLICK_HTTP_MAX_CONNECTIONS_PER_IP", "3"),
            ("ADCLICK_HTTP_HEADER_READ_TIMEOUT", "30s"),
        ],
    );
    service.wait_ready().await;
    let addr = service.addr;

    // Client 127.0.0.1 opens four stalled connections: at most three stay
    // open (the one past its share is closed as soon as it is accepted:
    // usually the fourth, an earlier one if the connection of the last
    // readiness probe still counted), so the last connection is free.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(stalled(addr).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = futures::future::join_all(
        held.iter_mut()
            .map(|c| closes_within(c, Duration::from_secs(10))),
    )
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert!(
        (1..=3).contains(&open),
        "{open} of 4 stalled connections from one address stayed open"
    );

    // So another client is answered, without waiting for the first one's
    // connections to time out.
    let started = Instant::now();
    let other = connect_from("127.0.0.2", addr).await;
    let response = adclick::http::exchange(other, "127.0.0.1", "/v1/ads/popular", &[])
        .await
        .expect("GET from 127.0.0.2");
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Once the first client closes them, its slots come back.
    drop(held);
    eventually(Duration::from_secs(10), || async {
        match adclick::http::get(addr, "/v1/ads/popular").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
