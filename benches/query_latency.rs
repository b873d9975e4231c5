//! Query latency under load: an open-loop HTTP load client for a running
//! `adclick serve` (docs/PERFORMANCE.md, "Query latency").
//!
//! Requests are *scheduled* at a fixed rate (every 1/rate s, by a dedicated
//! timer thread) whatever the server does, and each latency is measured from
//! its scheduled time to the last byte of the response. A stall therefore shows
//! up in every request scheduled during it, instead of being hidden by a client
//! that waits (no coordinated omission). The time from the actual send to the
//! last byte (the service time) is reported too, so client-side lag is visible.
//!
//! HTTP/1.1 over loopback with a hand-written client: by default, keep-alive
//! connections from a pool that grows on demand up to `--max-connections` (a
//! request that finds no idle connection opens one, so a slow answer never
//! delays the next request's send); `--connection-per-request` opens a new
//! connection with `Connection: close` for every request instead.
//!
//! The mix (`--mix count=9,popular=1`) draws, per request:
//! - `aggregated_count`: an ad from the same Zipf population as
//!   `adclick loadgen` (`--ads`, `--skew`), `minutes=` (`--minutes`), and one
//!   of the default filters at random: none, `country`, `ip_type`, or both;
//! - `popular`: `window=` (`--window`) and `count=` (`--top`), default `at`.
//!
//! Usage (scripts/bench-query starts the service, builds the state and runs this):
//!
//! ```text
//! cargo bench --bench query_latency -- --addr 127.0.0.1:8080 --rate 1000 --duration 60s --mix count=1
//! ```
//!
//! Without `--addr` and outside `cargo bench` (e.g. `cargo test --all-targets`)
//! it does nothing and exits successfully.

use adclick::loadgen::{zipf_cdf, zipf_rank, Rng};
use anyhow::{bail, Context as _};
use clap::Parser;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The countries `adclick loadgen` draws from.
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA"];
/// The ip types a filter may name (SPEC §1).
const IP_TYPES: [&str; 2] = ["v4", "v6"];

/// Options of the load client.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "query_latency",
    about = "Open-loop query latency client for adclick"
)]
struct Args {
    /// Address of the adclick REST API (host:port).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Requests per second, scheduled every 1/rate seconds.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to send (after the warm-up), e.g. 60s.
    #[arg(long, value_parser = adclick::config::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Requests sent at the start at the same rate but not recorded, e.g. 5s.
    #[arg(long, value_parser = adclick::config::parse_duration, default_value = "5s")]
    warmup: Duration,
    /// Weights of the endpoints, e.g. `count=1`, `popular=1`, `count=9,popular=1`.
    #[arg(long, default_value = "count=1")]
    mix: String,
    /// Ads in the Zipf population of `aggregated_count` (as `loadgen --ads`).
    #[arg(long, default_value_t = 100_000)]
    ads: u32,
    /// Zipf exponent of the ad population (as `loadgen --skew`).
    #[arg(long, default_value_t = 1.0)]
    skew: f64,
    /// `minutes=` of `aggregated_count`.
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    /// `window=` of `popular`.
    #[arg(long, default_value_t = 60)]
    window: u32,
    /// `count=` of `popular`.
    #[arg(long, default_value_t = 100)]
    top: u32,
    /// Seed of the request stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most connections open at once; a request that finds none idle waits for one.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// A request without a full response after this long counts as an error.
    #[arg(long, value_parser = adclick::config::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Open a connection per request (`Connection: close`) instead of keep-alive.
    #[arg(long)]
    connection_per_request: bool,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The two endpoints measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Count,
    Popular,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Count => "aggregated_count",
            Endpoint::Popular => "popular",
        }
    }
}

/// One scheduled request.
struct Job {
    endpoint: Endpoint,
    path: String,
    scheduled: Instant,
    recorded: bool,
}

/// What happened to one request.
struct Sample {
    endpoint: Endpoint,
    /// Scheduled time → last byte of the response.
    latency: Duration,
    /// Actual send → last byte.
    service: Duration,
    /// HTTP status, or the transport error.
    outcome: Result<u16, String>,
    /// Scheduled time, seconds since the first recorded request.
    at: f64,
}

/// Parses `count=9,popular=1` into (count weight, popular weight).
fn parse_mix(text: &str) -> anyhow::Result<(u32, u32)> {
    let (mut count, mut popular) = (0, 0);
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .with_context(|| format!("--mix: `{part}` is not NAME=WEIGHT (e.g. count=9)"))?;
        let weight: u32 = weight
            .parse()
            .with_context(|| format!("--mix: weight `{weight}` is not a whole number"))?;
        match name {
            "count" | "aggregated_count" => count = weight,
            "popular" => popular = weight,
            _ => bail!("--mix: unknown endpoint `{name}`; use count or popular"),
        }
    }
    if count + popular == 0 {
        bail!("--mix `{text}`: at least one weight must be above 0");
    }
    Ok((count, popular))
}

/// Draws the requests: the same seed gives the same sequence of paths.
struct RequestMaker {
    rng: Rng,
    zipf_cdf: Vec<f64>,
    count_weight: u32,
    total_weight: u32,
    minutes: u32,
    popular_path: String,
}

impl RequestMaker {
    fn new(args: &Args, (count, popular): (u32, u32)) -> RequestMaker {
        // The same Zipf population as `adclick loadgen`.
        RequestMaker {
            rng: Rng::new(args.seed),
            zipf_cdf: zipf_cdf(args.ads, args.skew),
            count_weight: count,
            total_weight: count + popular,
            minutes: args.minutes,
            popular_path: format!("/v1/ads/popular?window={}&count={}", args.window, args.top),
        }
    }

    fn next(&mut self) -> (Endpoint, String) {
        if self.rng.below(u64::from(self.total_weight)) >= u64::from(self.count_weight) {
            return (Endpoint::Popular, self.popular_path.clone());
        }
        let draw = self.rng.unit();
        let rank = zipf_rank(&self.zipf_cdf, draw);
        let country = COUNTRIES[self.rng.below(COUNTRIES.len() as u64) as usize];
        let ip_type = IP_TYPES[self.rng.below(IP_TYPES.len() as u64) as usize];
        let filter = match self.rng.below(4) {
            0 => String::new(),
            1 => format!("&country={country}"),
            2 => format!("&ip_type={ip_type}"),
            _ => format!("&country={country}&ip_type={ip_type}"),
        };
        (
            Endpoint::Count,
            format!(
                "/v1/ads/ad-{rank}/aggregated_count?minutes={}{filter}",
                self.minutes
            ),
        )
    }
}

/// A connection and the bytes read past the last response (none without pipelining).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A parsed response head.
struct Head {
    status: u16,
    /// Bytes of the head, including the blank line.
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let mut head = Head {
        status,
        len: end + 4,
        content_length: None,
        chunked: false,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().context("bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(head))
}

/// Where a complete chunked body ends in `body`, if it is complete.
fn chunked_end(body: &[u8]) -> anyhow::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(line) = body[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&body[at..at + line]).context("bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        at += line + 2;
        if size == 0 {
            // No trailers from axum: the body ends with the empty line.
            return Ok((body.len() >= at + 2).then_some(at + 2));
        }
        if body.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends a GET and reads the whole response. Returns the status, the body
    /// and whether the connection may be reused.
    async fn get(
        &mut self,
        addr: SocketAddr,
        path: &str,
        keep_alive: bool,
    ) -> anyhow::Result<(u16, Vec<u8>, bool)> {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n\r\n");
        self.stream.write_all(request.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        let mut head: Option<Head> = None;
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                // EOF: a complete answer only if it had no length (read to close).
                match &head {
                    Some(h) if h.content_length.is_none() && !h.chunked => {
                        let body = self.buf[h.len..].to_vec();
                        return Ok((h.status, body, false));
                    }
                    _ => bail!(
                        "connection closed after {} bytes of the response",
                        self.buf.len()
                    ),
                }
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if head.is_none() {
                head = parse_head(&self.buf)?;
            }
            let Some(h) = &head else { continue };
            let body = &self.buf[h.len..];
            let done = if let Some(len) = h.content_length {
                (body.len() >= len).then(|| body[..len].to_vec())
            } else if h.chunked {
                chunked_end(body)?.map(|end| body[..end].to_vec())
            } else {
                None
            };
            if let Some(body) = done {
                return Ok((h.status, body, keep_alive && !h.close));
            }
        }
    }
}

/// Connections not in use, and how many exist.
struct Pool {
    idle: Mutex<Vec<Conn>>,
    open: AtomicUsize,
    opened_total: AtomicUsize,
    returned: tokio::sync::Notify,
}

impl Pool {
    /// An idle connection, or `None` when the caller may open a new one;
    /// waits while `max` are open and busy.
    async fn take(&self, max: usize) -> Option<Conn> {
        loop {
            // Register interest before looking, so a return in between is not missed.
            let returned = self.returned.notified();
            if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                return Some(conn);
            }
            if self.open.load(Ordering::Acquire) < max {
                self.open.fetch_add(1, Ordering::AcqRel);
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            returned.await;
        }
    }

    fn give_back(&self, conn: Option<Conn>) {
        match conn {
            Some(conn) => self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn),
            None => {
                self.open.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.returned.notify_one();
    }
}

/// Runs one job on a pooled (or new) connection and records its sample.
#[allow(clippy::too_many_arguments)]
async fn run_job(
    job: Job,
    recorded_from: Instant,
    conn: Option<Conn>,
    args: Arc<Args>,
    addr: SocketAddr,
    pool: Arc<Pool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    first_bodies: Arc<Mutex<[Option<String>; 2]>>,
) {
    let keep_alive = !args.connection_per_request;
    let sent = Instant::now();
    let attempt = async {
        let reused = conn.is_some();
        let mut conn = match conn {
            Some(c) => c,
            None => Conn::open(addr).await?,
        };
        match conn.get(addr, &job.path, keep_alive).await {
            Ok((status, body, reusable)) => Ok((status, body, reusable.then_some(conn))),
            // The server may have closed an idle keep-alive connection: retry once
            // on a new one (the time spent stays in the latency).
            Err(_) if reused => {
                let mut conn = Conn::open(addr).await?;
                let (status, body, reusable) = conn.get(addr, &job.path, keep_alive).await?;
                Ok((status, body, reusable.then_some(conn)))
            }
            Err(e) => Err(e),
        }
    };
    // The deadline counts from the scheduled time: time spent waiting for a
    // connection is part of the budget, so a run ends at most `timeout` late.
    let deadline = tokio::time::Instant::from_std(job.scheduled + args.timeout);
    let result = tokio::time::timeout_at(deadline, attempt).await;
    let done = Instant::now();
    let (outcome, conn) = match result {
        Ok(Ok((status, body, conn))) => {
            let slot = match job.endpoint {
                Endpoint::Count => 0,
                Endpoint::Popular => 1,
            };
            let mut first = first_bodies.lock().unwrap_or_else(|e| e.into_inner());
            if first[slot].is_none() && job.recorded {
                let text = String::from_utf8_lossy(&body);
                first[slot] = Some(format!("{} {} -> {status} {text}", job.path, body.len()));
            }
            (Ok(status), conn)
        }
        Ok(Err(e)) => (Err(format!("{e:#}")), None),
        Err(_) => (
            Err(format!(
                "no response within {:?} of the scheduled time",
                args.timeout
            )),
            None,
        ),
    };
    pool.give_back(conn);
    if job.recorded {
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sample {
                endpoint: job.endpoint,
                latency: done.saturating_duration_since(job.scheduled),
                service: done.saturating_duration_since(sent),
                outcome,
                at: job
                    .scheduled
                    .saturating_duration_since(recorded_from)
                    .as_secs_f64(),
            });
    }
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn report(args: &Args, samples: &[Sample], elapsed: Duration, pool: &Pool) {
    let mode = if args.connection_per_request {
        "a connection per request"
    } else {
        "keep-alive"
    };
    println!(
        "query_latency: {} requests/s scheduled (open loop) for {:.1} s after {:?} warm-up, mix {}, HTTP/1.1 {mode}, {} connections opened",
        args.rate,
        elapsed.as_secs_f64(),
        args.warmup,
        args.mix,
        pool.opened_total.load(Ordering::Relaxed),
    );
    println!(
        "{:<17} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "endpoint (ms)", "what", "requests", "p50", "p90", "p99", "p99.9", "max", "errors"
    );
    for endpoint in [Endpoint::Count, Endpoint::Popular] {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.endpoint == endpoint).collect();
        if mine.is_empty() {
            continue;
        }
        let errors = mine.iter().filter(|s| s.outcome != Ok(200)).count();
        for (what, pick) in [
            ("sched", (|s: &Sample| s.latency) as fn(&Sample) -> Duration),
            ("serv", |s: &Sample| s.service),
        ] {
            // Percentiles over the 200 answers; errors are counted apart.
            let mut ok: Vec<Duration> = mine
                .iter()
                .filter(|s| s.outcome == Ok(200))
                .map(|s| pick(s))
                .collect();
            ok.sort_unstable();
            println!(
                "{:<17} {:>6} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9}",
                endpoint.name(),
                what,
                mine.len(),
                percentile(&ok, 50.0),
                percentile(&ok, 90.0),
                percentile(&ok, 99.0),
                percentile(&ok, 99.9),
                ok.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
                errors,
            );
        }
        let mut kinds: Vec<String> = mine
            .iter()
            .filter_map(|s| match &s.outcome {
                Ok(200) => None,
                Ok(status) => Some(format!("HTTP {status}")),
                Err(e) => Some(e.clone()),
            })
            .collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds.iter().take(5) {
            println!("  error seen: {kind}");
        }
    }
    println!(
        "(sched: from the scheduled send time; serv: from the actual send; both to the last byte)"
    );
    print_stalls(samples);
}

/// The seconds of the run with the most requests slower than 10 ms (from the
/// scheduled time): periodic stalls (a minute closing every 60 s) show here.
fn print_stalls(samples: &[Sample]) {
    let mut per_second: std::collections::BTreeMap<u64, (usize, Duration)> = Default::default();
    for s in samples
        .iter()
        .filter(|s| s.latency > Duration::from_millis(10))
    {
        let entry = per_second.entry(s.at as u64).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(s.latency);
    }
    if per_second.is_empty() {
        println!("no request slower than 10 ms");
        return;
    }
    let mut worst: Vec<(u64, (usize, Duration))> = per_second.into_iter().collect();
    worst.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
    worst.truncate(8);
    worst.sort_by_key(|(second, _)| *second);
    let shown: Vec<String> = worst
        .iter()
        .map(|(second, (n, max))| format!("{second}s: {n} (max {:.0} ms)", max.as_secs_f64() * 1e3))
        .collect();
    println!(
        "seconds with the most requests over 10 ms: {}",
        shown.join(", ")
    );
}

async fn run(args: Args, addr: SocketAddr) -> anyhow::Result<()> {
    if args.rate == 0 {
        bail!("--rate must be above 0");
    }
    let mix = parse_mix(&args.mix)?;
    // Fail early and clearly when nothing listens there.
    let (status, body) = adclick::http::get(addr, "/readyz")
        .await
        .with_context(|| format!("adclick does not answer at {addr}; is `adclick serve` running there (ADCLICK_HTTP_ADDR)?"))?;
    if status != 200 {
        bail!("adclick at {addr} is not ready (GET /readyz: {status} {body})");
    }
    let args = Arc::new(args);
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let warmup_jobs = (args.warmup.as_secs_f64() * args.rate as f64).round() as u64;
    let total_jobs = warmup_jobs + (args.duration.as_secs_f64() * args.rate as f64).round() as u64;

    // The schedule runs on its own thread with std sleeps (hrtimer precision,
    // tens of µs), not on tokio's 1 ms timer wheel, which would add up to 1 ms
    // of scheduling error to every request.
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let mut maker = RequestMaker::new(&args, mix);
    let start = Instant::now() + Duration::from_millis(20);
    let recorded_from = start + period.mul_f64(warmup_jobs as f64);
    let scheduler = std::thread::spawn(move || {
        for i in 0..total_jobs {
            let scheduled = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let (endpoint, path) = maker.next();
            let job = Job {
                endpoint,
                path,
                scheduled,
                recorded: i >= warmup_jobs,
            };
            if tx.send(job).is_err() {
                return;
            }
        }
    });

    let pool = Arc::new(Pool {
        idle: Mutex::new(Vec::new()),
        open: AtomicUsize::new(0),
        opened_total: AtomicUsize::new(0),
        returned: tokio::sync::Notify::new(),
    });
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total_jobs as usize)));
    let first_bodies = Arc::new(Mutex::new([None, None]));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(job) = rx.recv().await {
        let conn = if args.connection_per_request {
            pool.open.fetch_add(1, Ordering::AcqRel);
            pool.opened_total.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            let deadline = tokio::time::Instant::from_std(job.scheduled + args.timeout);
            match tokio::time::timeout_at(deadline, pool.take(args.max_connections)).await {
                Ok(conn) => conn,
                Err(_) => {
                    // Every connection stayed busy until the request's deadline:
                    // the server is not keeping up. Count it, never send it late.
                    if job.recorded {
                        let waited = job.scheduled.elapsed();
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Sample {
                                endpoint: job.endpoint,
                                latency: waited,
                                service: Duration::ZERO,
                                at: job
                                    .scheduled
                                    .saturating_duration_since(recorded_from)
                                    .as_secs_f64(),
                                outcome: Err(format!(
                                    "not sent: all {} connections busy for {:?}",
                                    args.max_connections, args.timeout
                                )),
                            });
                    }
                    continue;
                }
            }
        };
        tasks.spawn(run_job(
            job,
            recorded_from,
            conn,
            args.clone(),
            addr,
            pool.clone(),
            samples.clone(),
            first_bodies.clone(),
        ));
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().saturating_sub(args.warmup);
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    for body in first_bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flatten()
    {
        let shown: String = body.chars().take(300).collect();
        eprintln!("first answer: {shown}");
    }
    report(&args, &samples, elapsed, &pool);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let Some(addr) = args.addr else {
        if args.bench {
            eprintln!("query_latency: give --addr HOST:PORT of a running `adclick serve` (scripts/bench-query starts one)");
            return std::process::ExitCode::from(2);
        }
        // `cargo test --all-targets` runs benches without arguments: nothing to measure.
        println!("query_latency: no --addr, nothing to measure");
        return std::process::ExitCode::SUCCESS;
    };
    // One thread for the client: the box has 2 cores and the server needs them.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("query_latency: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, addr)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("query_latency: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
