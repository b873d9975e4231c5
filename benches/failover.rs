//! Many members (`cluster = true`): how long a partition is unanswerable
//! when its member dies or stops, how fast 1, 2 and 3 members drain a
//! backlog, and what shipping the partitions' state costs. Real
//! nats-server and `adclick serve` processes on loopback, started by the
//! integration tests' harness (`tests/common/mod.rs`).
//!
//! ```text
//! export NATS_SERVER_BIN=/path/to/nats-server   # 2.11 or newer
//! cargo bench --bench failover                  # or build with --no-run and run the binary with --bench
//! ```
//!
//! Without `--bench` (e.g. `cargo test --all-targets`) it does nothing.
//!
//! Phases (all on one machine; broker, members and this client share its cores):
//!
//! 1. **Failover after SIGKILL.** Three members (`m0`, `m1`, `m2`) on one
//!    nats-server, `adclick loadgen --rate FAILOVER_RATE` publishing in the
//!    background. Each round picks a member holding partitions (round robin,
//!    `adclick_partitions_held`), reads which partitions it holds from the
//!    `ADCLICK_LEASES` bucket, waits a random part of a member's round
//!    (`lease_ttl / 4`, so the signal does not always land just after the
//!    victim renewed), notes when the server will expire its leases and its
//!    `ADCLICK_MEMBERS` entry (their last write + `lease_ttl`), SIGKILLs it
//!    at t0, then polls: the lease of each of those partitions (when it
//!    left the victim, when a survivor holds it) and, once a survivor holds
//!    it, `GET /v1/ads/<ad>/aggregated_count?minutes=5` for one ad of the
//!    partition (a hot loadgen ad, found with `partition_of`) via a
//!    surviving member. Failover time: t0 to the moment the last of them
//!    answered 200 (its lease naming a survivor first, so an answer from
//!    the old owner never counts). Then the member is restarted (same id,
//!    same data dir) and the round ends once the leases are back to the
//!    three-member assignment and every partition answers.
//! 2. **Planned handover (SIGTERM).** The same rounds on the same cluster,
//!    with SIGTERM instead of SIGKILL; also the time to the process's exit.
//! 3. **Throughput of 1, 2 and 3 members.** One fresh nats-server: a
//!    non-cluster `adclick serve` creates the streams and is stopped,
//!    `adclick loadgen --rate 0` fills `CLICKS` with `FAILOVER_N` clicks
//!    (100,000 ads, Zipf 1, 1% repeats dropped by JetStream, none late or
//!    invalid: as `scripts/bench-drain`). Before every run, everything but
//!    `CLICKS` is reset (its consumers, the cluster's buckets and object
//!    store, the feed and rejects streams). A run starts M members at once
//!    on empty data dirs and times, from their start, (a) the sum of
//!    `adclick_events_consumed_total` over them reaching the stream's count
//!    (what `scripts/bench-drain` times) and (b) every partition's newest
//!    consumer having nothing pending or unacknowledged (all committed:
//!    (a) counts a replayed message twice, (b) does not). Start-up, the
//!    first rounds and any hand-over that balances the partitions are in
//!    it; the rate from the moment each member holds its share is printed
//!    beside it. The reference is a bare consumer on the same backlog:
//!    `benches/broker.rs consume`'s filtered topology (a durable pull
//!    consumer per partition, AckAll per chunk of 1,000, each payload
//!    decoded), run in this process. Each run is repeated
//!    `FAILOVER_DRAIN_REPS` times, interleaved; the table gives medians.
//! 4. **Cost of shipping state.** The M = 3 and M = 1 drains again with
//!    `state_ship_interval = 1s`: bytes shipped
//!    (`adclick_state_shipped_bytes_total`) per click consumed, and members'
//!    CPU (`/proc/<pid>/stat` utime + stime, start-up included) per click,
//!    against the runs of phase 3. A member ships at its rounds, every
//!    `lease_ttl / 4`, so "1 s" ships every 1.5 s with the default lease.
//!
//! Member settings: phases 1–2 use `tests/cluster.rs`'s (watermark delay
//! 2 s, lateness 1 h, idle 300 ms, batch 200) with 16 partitions; phases
//! 3–4 use adclick's defaults (batch 1,000, as `scripts/bench-drain`) with
//! 16 partitions. Both: `cluster = true`, `lease_ttl` and
//! `state_ship_interval` below.
//!
//! Environment (defaults in brackets):
//! - `FAILOVER_PHASES` [`failover,handover,throughput,shipping`]: which run;
//! - `FAILOVER_ROUNDS` [10]: SIGKILL rounds; `FAILOVER_HANDOVER_ROUNDS` [10];
//! - `FAILOVER_RATE` [500]: background clicks/s during phases 1–2;
//! - `FAILOVER_LEASE_TTL` [6s]; `FAILOVER_SHIP_INTERVAL` [30s] (phases 1–3);
//! - `FAILOVER_SEED` [1]: the random waits before each signal;
//! - `FAILOVER_N` [2000000]: clicks in the backlog (phases 3–4);
//! - `FAILOVER_DRAIN_REPS` [3]: repetitions of each drain;
//! - `FAILOVER_ROUND_TIMEOUT` [120]: seconds before a round counts as failed;
//! - `FAILOVER_KEEP` [unset]: `1` keeps the members' data dirs and logs
//!   (`adclick.log` in each) and prints where.

#[path = "../tests/common/mod.rs"]
mod common;

use adclick_actors::cluster::assignment::assign;
use adclick_actors::partitions::partition_of;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv};
use common::{Adclick, NatsServer};
use futures::StreamExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMBERS: [&str; 3] = ["m0", "m1", "m2"];

struct Config {
    phases: Vec<String>,
    kill_rounds: usize,
    term_rounds: usize,
    rate: u64,
    n: u64,
    partitions: u32,
    lease_ttl: String,
    ship_interval: String,
    round_timeout: Duration,
    keep: bool,
    seed: u64,
    drain_reps: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} does not parse")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Config {
        let phases: String = env_or(
            "FAILOVER_PHASES",
            "failover,handover,throughput,shipping".to_string(),
        );
        Config {
            phases: phases.split(',').map(|s| s.trim().to_string()).collect(),
            kill_rounds: env_or("FAILOVER_ROUNDS", 10),
            term_rounds: env_or("FAILOVER_HANDOVER_ROUNDS", 10),
            rate: env_or("FAILOVER_RATE", 500),
            n: env_or("FAILOVER_N", 2_000_000),
            partitions: 16,
            lease_ttl: env_or("FAILOVER_LEASE_TTL", "6s".to_string()),
            ship_interval: env_or("FAILOVER_SHIP_INTERVAL", "30s".to_string()),
            round_timeout: Duration::from_secs(env_or("FAILOVER_ROUND_TIMEOUT", 120)),
            keep: std::env::var("FAILOVER_KEEP").is_ok_and(|v| v == "1"),
            seed: env_or("FAILOVER_SEED", 1),
            drain_reps: env_or("FAILOVER_DRAIN_REPS", 3),
        }
    }

    fn ttl(&self) -> Duration {
        adclick::config::parse_duration(&self.lease_ttl).expect("FAILOVER_LEASE_TTL is a duration")
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    /// A work directory, kept (and named) with `FAILOVER_KEEP=1`.
    fn work_dir(&self, what: &str) -> Work {
        let dir = tempfile::Builder::new()
            .prefix(&format!("failover-{what}-"))
            .tempdir()
            .expect("temp dir");
        if self.keep {
            let path = dir.keep();
            eprintln!(
                "[failover] {what}: data dirs and logs kept in {}",
                path.display()
            );
            Work::Kept(path)
        } else {
            Work::Temp(dir)
        }
    }

    /// Phases 1–2: tests/cluster.rs's settings, 16 partitions.
    fn round_env(&self, member: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("ADCLICK_WATERMARK_DELAY", "2s".to_string()),
            ("ADCLICK_ALLOWED_LATENESS", "1h".to_string()),
            ("ADCLICK_IDLE_TIMEOUT", "300ms".to_string()),
            ("ADCLICK_BATCH_SIZE", "200".to_string()),
        ];
        env.extend(self.cluster_env(member, &self.ship_interval));
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Phases 3–4: adclick's defaults, 16 partitions, the cluster keys.
    fn drain_env(&self, member: &str, ship: &str) -> Vec<(String, String)> {
        self.cluster_env(member, ship)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn cluster_env(&self, member: &str, ship: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ADCLICK_PARTITIONS", self.partitions.to_string()),
            ("ADCLICK_CLUSTER", "true".to_string()),
            ("ADCLICK_LEASE_TTL", self.lease_ttl.clone()),
            ("ADCLICK_STATE_SHIP_INTERVAL", ship.to_string()),
            ("ADCLICK_MEMBER_ID", member.to_string()),
        ]
    }
}

enum Work {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Work {
    fn path(&self) -> &Path {
        match self {
            Work::Temp(dir) => dir.path(),
            Work::Kept(path) => path,
        }
    }
}

fn start_member(nats: &NatsServer, dir: &Path, id: &str, env: &[(String, String)]) -> Adclick {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Adclick::start(nats, &dir.join(id), &env)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ── HTTP and metrics, never panicking (a member may be going away) ──

async fn http(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(10), adclick::http::get(addr, path))
        .await
        .ok()?
        .ok()
}

/// The sum of a metric over its label sets; `None` if /metrics did not answer.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http(addr, "/metrics").await?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

async fn ready(addr: SocketAddr) -> bool {
    matches!(http(addr, "/readyz").await, Some((200, _)))
}

fn count_path(ad: &str) -> String {
    format!("/v1/ads/{ad}/aggregated_count?minutes=5")
}

/// One ad per partition: the hottest loadgen ad (`ad-<rank>`, rank 1 the
/// hottest) that lands in it.
fn ads_by_partition(partitions: u32) -> Vec<String> {
    let mut ads: Vec<Option<String>> = vec![None; partitions as usize];
    let mut rank = 1;
    while ads.iter().any(Option::is_none) {
        let ad = format!("ad-{rank}");
        let p = partition_of(&ad, partitions) as usize;
        if ads[p].is_none() {
            ads[p] = Some(ad);
        }
        rank += 1;
    }
    ads.into_iter().map(Option::unwrap_or_default).collect()
}

/// Who holds each partition's lease now.
async fn lease_map(leases: &kv::Store, partitions: u32) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let holder = match leases.get(format!("p{p}")).await {
            Ok(Some(value)) => serde_json::from_slice::<serde_json::Value>(&value)
                .ok()
                .and_then(|v| v["member"].as_str().map(str::to_string)),
            _ => None,
        };
        out.push(holder);
    }
    out
}

/// Seconds until the server expires `key` (its last write + `ttl`).
async fn expires_in(bucket: &kv::Store, key: &str, ttl: f64) -> f64 {
    match bucket.entry(key).await {
        Ok(Some(entry)) => ttl - (async_nats::datetime::now() - entry.created).as_seconds_f64(),
        _ => f64::NAN,
    }
}

// ── processes: CPU of the members and the broker ──

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// (parent pid, utime + stime in seconds) of a process.
fn proc_stat(pid: u32) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((ppid, (utime + stime) / clock_ticks()))
}

fn cpu_seconds(pid: Option<u32>) -> f64 {
    pid.and_then(proc_stat).map_or(f64::NAN, |(_, cpu)| cpu)
}

/// A child process of this one whose NUL-separated `file` (cmdline or
/// environ) holds `needle`.
fn child_pid(file: &str, needle: &[u8]) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if proc_stat(pid).map(|(ppid, _)| ppid) != Some(me) {
            continue;
        }
        let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{file}")) else {
            continue;
        };
        let bytes = [b"\0".as_slice(), &bytes].concat();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return Some(pid);
        }
    }
    None
}

fn member_pid(member: &Adclick) -> Option<u32> {
    child_pid(
        "environ",
        format!("\0ADCLICK_HTTP_ADDR={}\0", member.addr).as_bytes(),
    )
}

fn nats_pid(nats: &NatsServer) -> Option<u32> {
    child_pid("cmdline", format!("\0-p\0{}\0", nats.port).as_bytes())
}

/// A background `adclick loadgen`, stopped when dropped.
struct Trickle(Child);

impl Trickle {
    fn start(url: &str, rate: u64) -> Trickle {
        let child = Command::new(env!("CARGO_BIN_EXE_adclick"))
            .args(["loadgen", "--nats-url", url, "--rate", &rate.to_string()])
            .args(["--duration", "2h", "--invalid-ratio", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start adclick loadgen");
        Trickle(child)
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ── phases 1–2 ──

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

/// One round's times, in seconds from the signal.
struct Round {
    victim: String,
    moved: usize,
    /// When the server was due to expire the last of the victim's leases
    /// and its membership (their last write + lease_ttl).
    lease_due: f64,
    member_due: f64,
    /// The last of the moved leases gone from the old owner (expired or deleted).
    freed: f64,
    /// The last of them held by a survivor.
    acquired: f64,
    /// The first and the last of them answering 200 on a survivor.
    first_answer: f64,
    failover: f64,
    /// SIGTERM to the process's exit.
    exit: Option<f64>,
    /// Restart to the three-member assignment answering again.
    rejoin: f64,
}

struct Cluster<'a> {
    cfg: &'a Config,
    nats: &'a NatsServer,
    dir: &'a Path,
    members: Vec<Option<Adclick>>,
    leases: kv::Store,
    membership: kv::Store,
    expected: Vec<Option<String>>,
    ads: Vec<String>,
    rng: adclick::loadgen::Rng,
}

impl Cluster<'_> {
    fn addr(&self, i: usize) -> SocketAddr {
        self.members[i].as_ref().expect("member running").addr
    }

    /// Waits until the leases are the three-member assignment, every member
    /// is ready and holds its share, and every partition answers via `via`.
    async fn settle(&self, via: usize) -> Result<(), String> {
        let deadline = Instant::now() + self.cfg.round_timeout;
        loop {
            let why = self.unsettled(via).await;
            match why {
                None => return Ok(()),
                Some(why) if Instant::now() > deadline => return Err(why),
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn unsettled(&self, via: usize) -> Option<String> {
        let now = lease_map(&self.leases, self.cfg.partitions).await;
        if now != self.expected {
            return Some(format!("leases {now:?}, want {:?}", self.expected));
        }
        let mut held = 0.0;
        for (i, id) in MEMBERS.iter().enumerate().take(self.members.len()) {
            let addr = self.addr(i);
            if !ready(addr).await {
                return Some(format!("{id} not ready"));
            }
            held += metric(addr, "adclick_partitions_held").await.unwrap_or(0.0);
        }
        if held != f64::from(self.cfg.partitions) {
            return Some(format!("{held} partitions held"));
        }
        for ad in &self.ads {
            match http(self.addr(via), &count_path(ad)).await {
                Some((200, _)) => {}
                other => return Some(format!("{ad}: {other:?}")),
            }
        }
        None
    }

    async fn round(&mut self, number: usize, stop: Stop) -> Result<Round, String> {
        let n = self.members.len();
        // A member holding partitions, round robin from `number`.
        let mut victim = None;
        for k in 0..n {
            let i = (number + k) % n;
            if metric(self.addr(i), "adclick_partitions_held")
                .await
                .unwrap_or(0.0)
                >= 1.0
            {
                victim = Some(i);
                break;
            }
        }
        let victim = victim.ok_or("no member holds a partition")?;
        let id = MEMBERS[victim];
        // The signal lands at a random point of the victim's round (every
        // lease_ttl / 4), not just after the round that settled the cluster.
        let period = self.cfg.ttl() / 4;
        tokio::time::sleep(period.mul_f64(self.rng.unit()) + Duration::from_millis(200)).await;
        let survivor = (victim + 1) % n;
        let via = self.addr(survivor);
        let before = lease_map(&self.leases, self.cfg.partitions).await;
        let moved: Vec<usize> = (0..before.len())
            .filter(|p| before[*p].as_deref() == Some(id))
            .collect();
        if moved.is_empty() {
            return Err(format!("{id} holds no lease: {before:?}"));
        }

        let ttl = secs(self.cfg.ttl());
        let mut lease_due = f64::NAN;
        for &p in &moved {
            lease_due = lease_due.max(expires_in(&self.leases, &format!("p{p}"), ttl).await);
        }
        let member_due = expires_in(&self.membership, id, ttl).await;
        let t0 = Instant::now();
        let exiting = match stop {
            Stop::Kill => {
                if let Some(m) = self.members[victim].as_mut() {
                    m.kill();
                }
                None
            }
            Stop::Term => {
                let mut m = self.members[victim].take().expect("member running");
                Some(tokio::task::spawn_blocking(move || {
                    let status = m.terminate(Duration::from_secs(60));
                    (m, status, t0.elapsed())
                }))
            }
        };

        let mut freed = vec![None; self.cfg.partitions as usize];
        let mut acquired = vec![None; self.cfg.partitions as usize];
        let mut answered = vec![None; self.cfg.partitions as usize];
        let deadline = t0 + self.cfg.round_timeout;
        let outcome = loop {
            let now = lease_map(&self.leases, self.cfg.partitions).await;
            let t = secs(t0.elapsed());
            for &p in &moved {
                if now[p].as_deref() != Some(id) {
                    freed[p].get_or_insert(t);
                }
                if now[p].as_ref().is_some_and(|m| m != id) {
                    acquired[p].get_or_insert(t);
                }
            }
            let asks = moved
                .iter()
                .filter(|p| acquired[**p].is_some() && answered[**p].is_none())
                .map(|&p| {
                    let path = count_path(&self.ads[p]);
                    async move { (p, http(via, &path).await) }
                });
            for (p, answer) in futures::future::join_all(asks).await {
                if let Some((200, _)) = answer {
                    answered[p] = Some(secs(t0.elapsed()));
                }
            }
            if moved.iter().all(|p| answered[*p].is_some()) {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(format!(
                    "{id}'s partitions {moved:?} not all answering after {:?}: leases {now:?}",
                    self.cfg.round_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        let mut exit = None;
        if let Some(exiting) = exiting {
            match exiting.await {
                Ok((m, status, took)) => {
                    if !status.success() {
                        eprintln!("[failover] {id} exited with {status:?}");
                    }
                    exit = Some(secs(took));
                    self.members[victim] = Some(m);
                }
                Err(e) => {
                    eprintln!("[failover] {id} did not exit in time: {e}");
                    let env = self.cfg.round_env(id);
                    self.members[victim] = Some(tokio::task::block_in_place(|| {
                        start_member(self.nats, self.dir, id, &env)
                    }));
                }
            }
        }
        // Restarted even after a failed round, so the next one has three.
        let restarted = Instant::now();
        if let Some(m) = self.members[victim].as_mut() {
            tokio::task::block_in_place(|| m.restart());
        }
        outcome?;
        self.settle(survivor).await?;
        let max = |v: &[Option<f64>]| moved.iter().filter_map(|p| v[*p]).fold(f64::NAN, f64::max);
        let first_answer = moved
            .iter()
            .filter_map(|p| answered[*p])
            .fold(f64::NAN, f64::min);
        Ok(Round {
            victim: id.to_string(),
            moved: moved.len(),
            lease_due,
            member_due,
            freed: max(&freed),
            acquired: max(&acquired),
            first_answer,
            failover: max(&answered),
            exit,
            rejoin: secs(restarted.elapsed()),
        })
    }
}

async fn rounds_phases(cfg: &Config) -> (Vec<Round>, usize, Vec<Round>, usize) {
    let nats = NatsServer::start();
    let work = cfg.work_dir("rounds");
    let dir = work.path();
    let js = nats.jetstream().await;
    let members: Vec<Option<Adclick>> = MEMBERS
        .iter()
        .map(|id| Some(start_member(&nats, dir, id, &cfg.round_env(id))))
        .collect();
    let leases = js
        .get_key_value(adclick_actors::cluster::LEASES_BUCKET)
        .await
        .expect("the members created the leases bucket");
    let membership = js
        .get_key_value(adclick_actors::cluster::MEMBERS_BUCKET)
        .await
        .expect("the members created the members bucket");
    let names: Vec<String> = MEMBERS.iter().map(|m| m.to_string()).collect();
    let expected = assign(cfg.partitions, &names)
        .into_iter()
        .map(|o| o.map(|i| names[i].clone()))
        .collect();
    let mut cluster = Cluster {
        cfg,
        nats: &nats,
        dir,
        members,
        leases,
        membership,
        expected,
        ads: ads_by_partition(cfg.partitions),
        rng: adclick::loadgen::Rng::new(cfg.seed),
    };
    cluster
        .settle(0)
        .await
        .unwrap_or_else(|e| panic!("three members never settled: {e}"));
    let _trickle = Trickle::start(&nats.url(), cfg.rate);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut results = Vec::new();
    for (stop, count) in [(Stop::Kill, cfg.kill_rounds), (Stop::Term, cfg.term_rounds)] {
        let wanted = match stop {
            Stop::Kill => "failover",
            Stop::Term => "handover",
        };
        let mut done = Vec::new();
        let mut failed = 0;
        if cfg.runs(wanted) {
            for number in 0..count {
                match cluster.round(number, stop).await {
                    Ok(r) => {
                        eprintln!(
                            "[failover] {wanted} round {number}: {} ({} partitions): leases due to expire {:.2} s, membership {:.2} s; lease freed {:.2} s, held by a survivor {:.2} s, answering {:.2}..{:.2} s{}; rejoined in {:.2} s",
                            r.victim,
                            r.moved,
                            r.lease_due,
                            r.member_due,
                            r.freed,
                            r.acquired,
                            r.first_answer,
                            r.failover,
                            r.exit.map(|e| format!(", exited {e:.2} s")).unwrap_or_default(),
                            r.rejoin
                        );
                        done.push(r);
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("[failover] {wanted} round {number} FAILED: {e}");
                        // Bring every member back before the next round.
                        for (member, id) in cluster.members.iter_mut().zip(MEMBERS) {
                            if member.is_none() {
                                let env = cfg.round_env(id);
                                *member = Some(tokio::task::block_in_place(|| {
                                    start_member(&nats, dir, id, &env)
                                }));
                            }
                        }
                        if let Err(e) = cluster.settle(0).await {
                            panic!("the cluster did not recover after a failed round: {e}");
                        }
                    }
                }
            }
        }
        results.push((done, failed));
    }
    let (handover, term_failed) = results.pop().unwrap_or_default();
    let (failover, kill_failed) = results.pop().unwrap_or_default();
    (failover, kill_failed, handover, term_failed)
}

// ── phases 3–4 ──

/// One nats-server whose `CLICKS` holds the backlog (filled once); every
/// run starts from it with no consumer, no cluster bucket and no feed.
struct Backlog {
    nats: NatsServer,
    js: jetstream::Context,
    stored: u64,
    publish_rate: f64,
}

/// A fresh nats-server; a non-cluster `adclick serve` creates the streams
/// and stops; `adclick loadgen --rate 0` publishes `n` clicks (JetStream
/// drops the repeats: the stream holds the rest).
async fn backlog(cfg: &Config, dir: &Path) -> Backlog {
    let nats = NatsServer::start();
    let partitions = cfg.partitions.to_string();
    let mut streams = Adclick::start(
        &nats,
        &dir.join("streams"),
        &[("ADCLICK_PARTITIONS", partitions.as_str())],
    );
    streams.wait_ready().await;
    tokio::task::block_in_place(|| streams.terminate(Duration::from_secs(30)));
    let js = nats.jetstream().await;
    reset(&js).await;
    let report = dir.join("fill.json");
    let start_ts = common::now_ms() - 600_000;
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_adclick"))
            .args(["loadgen", "--nats-url", &nats.url(), "--rate", "0"])
            .args(["--count", &cfg.n.to_string(), "--ads", "100000"])
            .args(["--start-ts", &start_ts.to_string()])
            .args(["--duplicate-ratio", "0.01", "--late-ratio", "0"])
            .args(["--invalid-ratio", "0", "--report"])
            .arg(&report)
            .stdin(Stdio::null())
            .output()
            .expect("run adclick loadgen")
    });
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("loadgen report"))
            .expect("loadgen report is JSON");
    let mut stream = js.get_stream("CLICKS").await.expect("CLICKS exists");
    let stored = stream.info().await.expect("stream info").state.messages;
    Backlog {
        nats,
        js,
        stored,
        publish_rate: report["rate"].as_f64().unwrap_or(f64::NAN),
    }
}

/// Back to a filled `CLICKS` alone: every consumer on it, the cluster's
/// buckets and object store, the feed and the rejects deleted (the members
/// recreate what they need).
async fn reset(js: &jetstream::Context) {
    use adclick_actors::cluster::{LEASES_BUCKET, MEMBERS_BUCKET, POINTERS_BUCKET, STATE_BUCKET};
    let stream = js.get_stream("CLICKS").await.expect("CLICKS exists");
    let names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    for name in names {
        stream
            .delete_consumer(&name)
            .await
            .expect("delete a consumer");
    }
    for bucket in [MEMBERS_BUCKET, LEASES_BUCKET, POINTERS_BUCKET] {
        let _ = js.delete_key_value(bucket).await;
    }
    let _ = js.delete_object_store(STATE_BUCKET).await;
    for other in ["ADCLICK_AGG", "CLICKS_REJECTED"] {
        let _ = js.delete_stream(other).await;
    }
}

/// Whether every partition's newest consumer (`adclick-p<N>-e<epoch>`) has
/// nothing left to deliver and nothing unacknowledged: all committed.
async fn all_acked(js: &jetstream::Context, partitions: u32) -> bool {
    let Ok(stream) = js.get_stream("CLICKS").await else {
        return false;
    };
    let mut newest: std::collections::BTreeMap<u32, (u64, bool)> = Default::default();
    let mut infos = stream.consumers();
    while let Some(info) = infos.next().await {
        let Ok(info) = info else {
            return false;
        };
        let parsed = info
            .name
            .strip_prefix("adclick-p")
            .and_then(|rest| rest.split_once("-e"))
            .and_then(|(p, e)| Some((p.parse::<u32>().ok()?, e.parse::<u64>().ok()?)));
        if let Some((p, epoch)) = parsed {
            let done = info.num_pending == 0 && info.num_ack_pending == 0;
            if newest.get(&p).is_none_or(|(e, _)| epoch > *e) {
                newest.insert(p, (epoch, done));
            }
        }
    }
    newest.len() == partitions as usize && newest.values().all(|(_, done)| *done)
}

struct Drain {
    members: usize,
    ship: String,
    stored: u64,
    /// Start to the sum of consumed reaching the stream's count.
    seconds: f64,
    /// Start to every partition's newest consumer fully acknowledged.
    acked: f64,
    /// Seconds to each member holding its share of the assignment, and how
    /// many clicks had been consumed by then.
    balanced: Option<(f64, f64)>,
    member_cpu: f64,
    broker_cpu: f64,
    shipped_bytes: f64,
    restored: f64,
    leases_lost: usize,
    /// Consumed per member when all were acknowledged.
    per_member: Vec<f64>,
}

impl Drain {
    fn rate(&self) -> f64 {
        self.stored as f64 / self.seconds
    }

    fn acked_rate(&self) -> f64 {
        self.stored as f64 / self.acked
    }

    fn balanced_rate(&self) -> Option<f64> {
        let (at, consumed) = self.balanced?;
        let left = self.stored as f64 - consumed;
        (self.seconds > at && left > 0.0).then(|| left / (self.seconds - at))
    }

    fn per_click_us(&self, x: f64) -> f64 {
        x / self.stored as f64 * 1e6
    }
}

/// Starts `members` members at once on empty data dirs and times the drain.
async fn drain(backlog: &Backlog, cfg: &Config, dir: &Path, members: usize, ship: &str) -> Drain {
    reset(&backlog.js).await;
    let stored = backlog.stored;
    let broker = nats_pid(&backlog.nats);
    let broker_cpu0 = cpu_seconds(broker);
    let envs: Vec<Vec<(String, String)>> = MEMBERS[..members]
        .iter()
        .map(|id| cfg.drain_env(id, ship))
        .collect();
    let nats = &backlog.nats;
    let t0 = Instant::now();
    let running: Vec<Adclick> = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..members)
                .map(|i| {
                    let env = &envs[i];
                    s.spawn(move || start_member(nats, dir, MEMBERS[i], env))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("member started"))
                .collect()
        })
    });
    let pids: Vec<Option<u32>> = running.iter().map(member_pid).collect();
    // Each member's share once balanced: what the assignment gives it.
    let names: Vec<String> = MEMBERS[..members].iter().map(|m| m.to_string()).collect();
    let mut share = vec![0.0; members];
    for owner in assign(cfg.partitions, &names).into_iter().flatten() {
        share[owner] += 1.0;
    }
    let mut balanced = None;
    let deadline = t0 + Duration::from_secs(600);
    let consumed_sum = |running: &[Adclick]| {
        let addrs: Vec<SocketAddr> = running.iter().map(|m| m.addr).collect();
        async move {
            let mut each = Vec::new();
            for addr in addrs {
                each.push(
                    metric(addr, "adclick_events_consumed_total")
                        .await
                        .unwrap_or(0.0),
                );
            }
            each
        }
    };
    let seconds = loop {
        let consumed: f64 = consumed_sum(&running).await.iter().sum();
        let mut held = Vec::new();
        for m in &running {
            held.push(
                metric(m.addr, "adclick_partitions_held")
                    .await
                    .unwrap_or(0.0),
            );
        }
        let t = secs(t0.elapsed());
        if balanced.is_none() && held == share {
            balanced = Some((t, consumed));
        }
        if consumed >= stored as f64 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "{members} members consumed {consumed} of {stored} in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let member_cpu: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let broker_cpu = cpu_seconds(broker) - broker_cpu0;
    let mut shipped_bytes = 0.0;
    for m in &running {
        shipped_bytes += metric(m.addr, "adclick_state_shipped_bytes_total")
            .await
            .unwrap_or(f64::NAN);
    }
    let acked = loop {
        if all_acked(&backlog.js, cfg.partitions).await {
            break secs(t0.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "{members} members never acknowledged everything"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let per_member = consumed_sum(&running).await;
    let mut restored = 0.0;
    for m in &running {
        restored += metric(m.addr, "adclick_state_restored_total")
            .await
            .unwrap_or(f64::NAN);
    }
    let leases_lost = running
        .iter()
        .map(|m| m.log().matches("lease lost to another member").count())
        .sum();
    drop(running);
    Drain {
        members,
        ship: ship.to_string(),
        stored,
        seconds,
        acked,
        balanced,
        member_cpu,
        broker_cpu,
        shipped_bytes,
        restored,
        leases_lost,
        per_member,
    }
}

struct Bare {
    stored: u64,
    seconds: f64,
    cpu: f64,
    broker_cpu: f64,
}

/// `benches/broker.rs consume`, filtered topology: a fresh durable pull
/// consumer per partition on `clicks.p.<P>.*`, AckAll on each chunk's last
/// message, chunks of 1,000, max_ack_pending as adclick sizes it; every
/// payload decoded. Timed from before the connection to the last message.
async fn bare(backlog: &Backlog, cfg: &Config) -> Bare {
    reset(&backlog.js).await;
    let stored = backlog.stored;
    let broker = nats_pid(&backlog.nats);
    let broker_cpu0 = cpu_seconds(broker);
    let cpu0 = own_cpu_seconds();
    let t0 = Instant::now();
    let js = backlog.nats.jetstream().await;
    let consumed = Arc::new(AtomicU64::new(0));
    let batch = 1000;
    let max_ack_pending = (2 * batch * 16 + batch) as i64;
    let mut tasks = Vec::new();
    for p in 0..cfg.partitions {
        let (js, consumed) = (js.clone(), consumed.clone());
        tasks.push(tokio::spawn(async move {
            let stream = js.get_stream("CLICKS").await.expect("CLICKS");
            let consumer = stream
                .create_consumer_strict(pull::Config {
                    durable_name: Some(format!("bare-p{p}")),
                    filter_subject: format!("clicks.p.{p}.*"),
                    ack_policy: AckPolicy::All,
                    deliver_policy: DeliverPolicy::All,
                    max_ack_pending,
                    ack_wait: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .expect("bare consumer");
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .expect("bare consumer's messages")
                .ready_chunks(batch);
            use adclick_actors::testing::decode;
            while let Some(chunk) = messages.next().await {
                let n = chunk.len() as u64;
                let mut last = None;
                for item in chunk {
                    let message = item.expect("a message");
                    let seq = message.info().expect("JetStream info").stream_sequence;
                    let (message, acker) = message.split();
                    if let Some((_, ad)) = decode::split_subject(&message.subject) {
                        let _ = std::hint::black_box(decode::decode(ad, seq, &message.payload));
                    }
                    last = Some(acker);
                }
                if let Some(acker) = last {
                    acker.ack().await.expect("ack");
                }
                consumed.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    while consumed.load(Ordering::Relaxed) < stored {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the bare consumer did not finish"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = secs(t0.elapsed());
    let cpu = own_cpu_seconds() - cpu0;
    let broker_cpu = cpu_seconds(broker) - broker_cpu0;
    for t in tasks {
        t.abort();
    }
    Bare {
        stored,
        seconds,
        cpu,
        broker_cpu,
    }
}

/// Phases 3–4: `FAILOVER_DRAIN_REPS` repetitions of each run, interleaved.
async fn drain_phases(cfg: &Config) -> (Vec<Bare>, Vec<Vec<Drain>>, f64) {
    let work = cfg.work_dir("drains");
    let dir = work.path();
    let backlog = backlog(cfg, dir).await;
    eprintln!(
        "[failover] CLICKS holds {} clicks (published at {:.0}/s)",
        backlog.stored, backlog.publish_rate
    );
    let mut runs: Vec<(usize, String)> = Vec::new();
    if cfg.runs("throughput") {
        runs.extend((1..=3).map(|m| (m, cfg.ship_interval.clone())));
    }
    if cfg.runs("shipping") {
        runs.extend([(3, "1s".to_string()), (1, "1s".to_string())]);
    }
    let mut bares = Vec::new();
    let mut drains: Vec<Vec<Drain>> = runs.iter().map(|_| Vec::new()).collect();
    for rep in 0..cfg.drain_reps {
        if cfg.runs("throughput") {
            let b = bare(&backlog, cfg).await;
            eprintln!(
                "[failover] rep {rep}: bare consumer {:.0} clicks/s",
                b.stored as f64 / b.seconds
            );
            bares.push(b);
        }
        for (k, (m, ship)) in runs.iter().enumerate() {
            let run_dir = dir.join(format!("rep{rep}-{m}-members-ship-{ship}"));
            let d = drain(&backlog, cfg, &run_dir, *m, ship).await;
            eprintln!(
                "[failover] rep {rep}: {m} member(s), ship {ship}: consumed in {:.2} s ({:.0}/s), all acked {:.2} s ({:.0}/s); cpu {:.2} µs/click, broker {:.2}; shipped {:.1} B/click; restored {}, leases lost {}; consumed per member {:?}",
                d.seconds,
                d.rate(),
                d.acked,
                d.acked_rate(),
                d.per_click_us(d.member_cpu),
                d.per_click_us(d.broker_cpu),
                d.shipped_bytes / d.stored as f64,
                d.restored,
                d.leases_lost,
                d.per_member
            );
            drains[k].push(d);
        }
    }
    (bares, drains, backlog.publish_rate)
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

// ── the report ──

/// Nearest-rank percentile (with 10 samples, p99 is the maximum).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    percentile(&sorted(values), 0.5)
}

fn summary(label: &str, values: Vec<f64>) {
    let v = sorted(values);
    println!(
        "  {label:<40} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    );
}

fn print_rounds(title: &str, rounds: &[Round], failed: usize) {
    println!(
        "\n{title}: {} rounds ({failed} failed), seconds from the signal",
        rounds.len()
    );
    println!(
        "  {:<40} {:>7} {:>7} {:>7} {:>7}",
        "", "p50", "p99", "min", "max"
    );
    summary(
        "every moved partition answering",
        rounds.iter().map(|r| r.failover).collect(),
    );
    summary(
        "first moved partition answering",
        rounds.iter().map(|r| r.first_answer).collect(),
    );
    let killed = rounds.iter().all(|r| r.exit.is_none());
    if killed {
        summary(
            "last lease due to expire (write + ttl)",
            rounds.iter().map(|r| r.lease_due).collect(),
        );
        summary(
            "membership due to expire (write + ttl)",
            rounds.iter().map(|r| r.member_due).collect(),
        );
    }
    summary(
        "last lease gone from the old owner",
        rounds.iter().map(|r| r.freed).collect(),
    );
    summary(
        "last lease held by a survivor",
        rounds.iter().map(|r| r.acquired).collect(),
    );
    if killed {
        summary(
            "held - max(lease, membership due)",
            rounds
                .iter()
                .map(|r| r.acquired - r.lease_due.max(r.member_due))
                .collect(),
        );
    }
    summary(
        "held -> answering (last of each)",
        rounds.iter().map(|r| r.failover - r.acquired).collect(),
    );
    if rounds.iter().any(|r| r.exit.is_some()) {
        summary(
            "SIGTERM -> process exit",
            rounds.iter().filter_map(|r| r.exit).collect(),
        );
    }
    summary(
        "restart -> all 16 back and answering",
        rounds.iter().map(|r| r.rejoin).collect(),
    );
    summary(
        "partitions moved",
        rounds.iter().map(|r| r.moved as f64).collect(),
    );
}

fn print_drains(bares: &[Bare], drains: &[Vec<Drain>], stored: u64, publish_rate: f64) {
    println!(
        "\nDrain of a pre-filled CLICKS ({stored} clicks, published at {publish_rate:.0}/s; 16 partitions), members started at once; median of the repetitions [min-max]"
    );
    println!(
        "  {:<22} {:>4} {:>22} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "run",
        "reps",
        "consumed: clicks/s",
        "acked /s",
        "balanced /s",
        "cpu µs/c",
        "broker µs",
        "ship B/c",
        "restored",
        "lost"
    );
    if !bares.is_empty() {
        let rates = sorted(bares.iter().map(|b| b.stored as f64 / b.seconds));
        println!(
            "  {:<22} {:>4} {:>22} {:>9} {:>11} {:>9.2} {:>9.2} {:>9} {:>9} {:>9}",
            "bare consumer",
            bares.len(),
            format!(
                "{:.0} [{:.0}-{:.0}]",
                percentile(&rates, 0.5),
                rates[0],
                rates[rates.len() - 1]
            ),
            "",
            "",
            median(bares.iter().map(|b| b.cpu / b.stored as f64 * 1e6)),
            median(bares.iter().map(|b| b.broker_cpu / b.stored as f64 * 1e6)),
            "",
            "",
            ""
        );
    }
    for runs in drains.iter().filter(|r| !r.is_empty()) {
        let rates = sorted(runs.iter().map(Drain::rate));
        println!(
            "  {:<22} {:>4} {:>22} {:>9.0} {:>11.0} {:>9.2} {:>9.2} {:>9.1} {:>9} {:>9}",
            format!("{} member(s), ship {}", runs[0].members, runs[0].ship),
            runs.len(),
            format!(
                "{:.0} [{:.0}-{:.0}]",
                percentile(&rates, 0.5),
                rates[0],
                rates[rates.len() - 1]
            ),
            median(runs.iter().map(Drain::acked_rate)),
            median(runs.iter().filter_map(Drain::balanced_rate)),
            median(runs.iter().map(|d| d.per_click_us(d.member_cpu))),
            median(runs.iter().map(|d| d.per_click_us(d.broker_cpu))),
            median(runs.iter().map(|d| d.shipped_bytes / d.stored as f64)),
            runs.iter().map(|d| d.restored).sum::<f64>(),
            runs.iter().map(|d| d.leases_lost).sum::<usize>(),
        );
    }
    println!("  consumed: start to the sum of adclick_events_consumed_total reaching the stream's count;");
    println!("  acked: start to every partition's newest consumer with nothing pending or unacknowledged (all committed);");
    println!("  balanced: from each member holding its share to consumed; cpu µs/c: the members' CPU (start-up");
    println!("  included) per click; broker µs: nats-server's CPU during the drain per click (bare: its own CPU);");
    println!("  ship B/c: state shipped per click by the end; restored, lost: partitions restored from shipped state");
    println!("  and leases lost (\"lease lost to another member\" in the logs), summed over the repetitions.");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "failover: run by `cargo bench --bench failover` (it needs --bench); nothing to do."
        );
        return;
    }
    let cfg = Config::from_env();
    common::nats_server_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let rounds = if cfg.runs("failover") || cfg.runs("handover") {
            Some(rounds_phases(&cfg).await)
        } else {
            None
        };
        let drains = if cfg.runs("throughput") || cfg.runs("shipping") {
            Some(drain_phases(&cfg).await)
        } else {
            None
        };

        println!(
            "\n== adclick multi-node bench: 16 partitions, lease_ttl {}, state_ship_interval {} (phases 1-3), {} clicks/s in the background (1-2), N = {} (3-4) ==",
            cfg.lease_ttl, cfg.ship_interval, cfg.rate, cfg.n
        );
        if let Some((failover, kill_failed, handover, term_failed)) = &rounds {
            if cfg.runs("failover") {
                print_rounds("Failover after SIGKILL (3 members)", failover, *kill_failed);
            }
            if cfg.runs("handover") {
                print_rounds(
                    "Planned handover on SIGTERM (3 members)",
                    handover,
                    *term_failed,
                );
            }
        }
        if let Some((bares, drains, publish_rate)) = &drains {
            let stored = drains
                .iter()
                .flatten()
                .map(|d| d.stored)
                .chain(bares.iter().map(|b| b.stored))
                .next()
                .unwrap_or(0);
            print_drains(bares, drains, stored, *publish_rate);
        }
        println!("\ntotal bench time {:.0} s", secs(started.elapsed()));
    });
}
