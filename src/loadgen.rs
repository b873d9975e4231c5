//! `adclick loadgen`: a reproducible synthetic click stream.
//!
//! The same seed and options give the same clicks (ids, ads, countries, ip
//! types, which are repeats, late or invalid); only `ts` follows the wall
//! clock, unless `--start-ts` pins event time too. Ads are drawn from a Zipf
//! distribution so a few ads are hot, as in real traffic.

use anyhow::Context as _;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod progress;

pub use progress::ProgressMode;
use progress::{Goal, ProgressReporter, PublishCounters};

/// Options of `adclick loadgen` (also used by `adclick demo`).
#[derive(clap::Args, Clone, Debug)]
pub struct LoadgenArgs {
    /// NATS server URL.
    #[arg(
        long,
        env = "ADCLICK_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// TOML configuration file whose `nats_*` keys (credentials, TLS) to
    /// connect with, as `adclick serve` does; ADCLICK_NATS_* variables too.
    #[arg(long, env = "ADCLICK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Credentials and TLS already loaded (the demo passes the service's);
    /// when absent, read from --config and the environment. Boxed: it is
    /// large, and rarely there.
    #[arg(skip)]
    pub nats_security: Option<Box<crate::nats::NatsSecurity>>,
    /// Clicks per second; 0 publishes as fast as the broker acknowledges.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Stop after this long (e.g. 30s, 5m); without it and without --count, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Number of distinct ads.
    #[arg(long, default_value_t = 1000)]
    pub ads: u32,
    /// Zipf exponent of ad popularity (0: uniform; ~1: realistic skew).
    #[arg(long, default_value_t = 1.0)]
    pub skew: f64,
    /// Seed of the stream: same seed, same clicks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of messages that repeat an earlier click (same click_id and payload).
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_ratio: f64,
    /// Share of clicks whose ts lies in the past by --late-by (corrections).
    #[arg(long, default_value_t = 0.02)]
    pub late_ratio: f64,
    /// How far in the past late clicks are (keep it under allowed_lateness to see corrections).
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    pub late_by: Duration,
    /// Share of clicks whose ts lies 10 minutes ahead of the wall clock (rejected as future).
    #[arg(long, default_value_t = 0.0)]
    pub future_ratio: f64,
    /// Share of messages that are invalid (bad JSON, missing field, ad id mismatch).
    #[arg(long, default_value_t = 0.001)]
    pub invalid_ratio: f64,
    /// Do not set the Nats-Msg-Id header (JetStream then cannot drop repeats; adclick still does).
    #[arg(long)]
    pub no_msg_id: bool,
    /// Pin event time: the first click's ts, advancing 1000/rate ms per click, or
    /// 0.1 ms with --rate 0 (reproducible to the byte).
    #[arg(long)]
    pub start_ts: Option<i64>,
    /// Write the payloads as JSON lines (one SPEC §1 payload per line) to this file instead of publishing.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a JSON report of what was sent to this file (`-` for stdout).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Most publishes awaiting their JetStream ack.
    #[arg(long, default_value_t = 4096)]
    pub max_inflight: usize,
    /// Progress while publishing, on standard error: `auto` redraws a line
    /// (bar, sent, acked, failed, rate, ETA) on a terminal and logs a line
    /// every 5 s elsewhere; `bar`, `plain` or `never` choose.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

/// What a run sent.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Report {
    /// Messages handed to NATS (or written to the file).
    pub sent: u64,
    /// Messages JetStream acknowledged.
    pub acked: u64,
    /// Of those, ones JetStream dropped as duplicate `Nats-Msg-Id`s.
    pub acked_duplicate: u64,
    /// Publishes that failed (no ack, error).
    pub failed: u64,
    /// Messages that repeat an earlier click.
    pub duplicates: u64,
    /// Clicks with a past ts.
    pub late: u64,
    /// Clicks with a ts 10 minutes ahead.
    pub future: u64,
    /// Invalid messages.
    pub invalid: u64,
    /// Seconds the run took.
    pub elapsed_seconds: f64,
    /// Messages per second achieved.
    pub rate: f64,
    /// Seconds the publish loop waited for JetStream acks with `max_inflight`
    /// publishes outstanding: near `elapsed_seconds`, the broker is the bottleneck.
    pub ack_wait_seconds: f64,
    /// Seconds the publish loop waited for clicks to be made (pacing sleeps
    /// excluded): near `elapsed_seconds`, the generator is the bottleneck.
    pub generator_wait_seconds: f64,
}

/// SplitMix64: tiny, fast, and good enough for synthetic traffic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n.max(1) as u128) >> 64) as u64
    }
}

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// `clicks.<ad_id>`.
    pub subject: String,
    /// The JSON payload.
    pub payload: Bytes,
    /// The click id, for `Nats-Msg-Id` (empty with `--no-msg-id`: the
    /// payload holds it).
    pub click_id: String,
}

const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA"];

/// The deterministic click source.
pub struct ClickGenerator {
    args: LoadgenArgs,
    rng: Rng,
    zipf: ZipfTable,
    /// The draws of the last 1,024 clicks, for repeats: a repeat is rendered
    /// again from them, byte for byte, instead of keeping a copy of each
    /// message.
    recent: VecDeque<Drawn>,
    next: u64,
    /// Counts of what was generated.
    pub report: Report,
    /// The payload being written, reused from click to click.
    scratch: String,
    /// Payloads are copied here and handed out as slices of it: one
    /// allocation per ~64 KiB of payloads instead of one a click, and no
    /// free a click on the publisher's thread (the buffer goes when its last
    /// slice does).
    payloads: BytesMut,
}

/// Room the payload buffer takes at a time.
const PAYLOAD_BLOCK: usize = 64 * 1024;

/// Everything random about one click: enough to render it again.
#[derive(Clone, Copy, Debug)]
struct Drawn {
    i: u64,
    rank: usize,
    ts: i64,
    country: &'static str,
    /// `Some(group)` for an IPv6 address, else the three last IPv4 octets.
    ip: (Option<u64>, [u64; 3]),
    /// `Some(kind)` for an invalid message.
    invalid: Option<u64>,
    user: u64,
}

/// The cumulative distribution of `ads` ads ranked by a Zipf law: rank `r`
/// has weight `1 / r^skew`.
pub fn zipf_cdf(ads: u32, skew: f64) -> Vec<f64> {
    let ads = ads.max(1) as usize;
    let mut cdf = Vec::with_capacity(ads);
    let mut total = 0.0;
    for rank in 1..=ads {
        total += 1.0 / (rank as f64).powf(skew.max(0.0));
        cdf.push(total);
    }
    for c in &mut cdf {
        *c /= total;
    }
    cdf
}

/// The rank (1-based) a uniform `draw` in [0, 1) picks from [`zipf_cdf`].
pub fn zipf_rank(cdf: &[f64], draw: f64) -> usize {
    (cdf.partition_point(|c| *c < draw) + 1).min(cdf.len())
}

/// [`zipf_rank`] with an index: where each 1/65,536th of [0, 1) starts in
/// the distribution, so a draw searches a few entries instead of 100,000
/// (~17 cache misses a click). Same ranks as [`zipf_rank`], always.
struct ZipfTable {
    cdf: Vec<f64>,
    starts: Vec<usize>,
}

impl ZipfTable {
    const BUCKETS: usize = 1 << 16;

    fn new(cdf: Vec<f64>) -> ZipfTable {
        let starts = (0..=Self::BUCKETS)
            .map(|k| cdf.partition_point(|c| *c < k as f64 / Self::BUCKETS as f64))
            .collect();
        ZipfTable { cdf, starts }
    }

    fn rank(&self, draw: f64) -> usize {
        let k = ((draw * Self::BUCKETS as f64) as usize).min(Self::BUCKETS - 1);
        let (lo, hi) = (self.starts[k], self.starts[k + 1]);
        // The answer lies in [lo, hi] when the bucket holds the draw; should
        // rounding put it next door, search everything.
        let holds =
            (lo == 0 || self.cdf[lo - 1] < draw) && (hi == self.cdf.len() || self.cdf[hi] >= draw);
        if !holds {
            return zipf_rank(&self.cdf, draw);
        }
        let at = lo + self.cdf[lo..hi].partition_point(|c| *c < draw);
        (at + 1).min(self.cdf.len())
    }
}

impl ClickGenerator {
    /// A generator for these options.
    pub fn new(args: &LoadgenArgs) -> ClickGenerator {
        ClickGenerator {
            args: args.clone(),
            rng: Rng::new(args.seed),
            zipf: ZipfTable::new(zipf_cdf(args.ads, args.skew)),
            recent: VecDeque::with_capacity(1024),
            scratch: String::with_capacity(256),
            payloads: BytesMut::new(),
            next: 0,
            report: Report::default(),
        }
    }

    /// The ad id of a popularity rank.
    pub fn ad_name(rank: usize) -> String {
        format!("ad-{rank}")
    }

    /// The next message; `now` is the wall clock (ignored with `--start-ts`).
    pub fn next_message(&mut self, now: i64) -> Outgoing {
        let i = self.next;
        self.next += 1;
        let roll = self.rng.unit();
        if roll < self.args.duplicate_ratio && !self.recent.is_empty() {
            let pick = self.rng.below(self.recent.len() as u64) as usize;
            if let Some(again) = self.recent.get(pick).copied() {
                self.report.duplicates += 1;
                return self.render(&again);
            }
        }
        let draw = self.rng.unit();
        let rank = self.zipf.rank(draw);
        let mut ts = match self.args.start_ts {
            Some(start) => {
                let per_second = if self.args.rate == 0 {
                    10_000
                } else {
                    self.args.rate
                };
                start + (i as f64 * 1000.0 / per_second as f64) as i64
            }
            None => now,
        };
        if self.rng.unit() < self.args.late_ratio {
            ts -= self.args.late_by.as_millis() as i64;
            self.report.late += 1;
        } else if self.args.future_ratio > 0.0 && self.rng.unit() < self.args.future_ratio {
            ts += 10 * 60_000;
            self.report.future += 1;
        }
        let country = COUNTRIES[self.rng.below(COUNTRIES.len() as u64) as usize];
        let ip = if self.rng.below(4) == 0 {
            (Some(self.rng.below(65_536)), [0; 3])
        } else {
            let octets = [
                self.rng.below(256),
                self.rng.below(256),
                self.rng.below(256),
            ];
            (None, octets)
        };
        let (invalid, user) = if self.rng.unit() < self.args.invalid_ratio {
            self.report.invalid += 1;
            (Some(self.rng.below(3)), 0)
        } else {
            (None, self.rng.below(100_000))
        };
        let drawn = Drawn {
            i,
            rank,
            ts,
            country,
            ip,
            invalid,
            user,
        };
        if self.recent.len() == 1024 {
            self.recent.pop_front();
        }
        self.recent.push_back(drawn);
        self.render(&drawn)
    }

    /// The message of a drawn click (written without `format!`: the
    /// generator runs beside the publisher and must cost little per click).
    fn render(&mut self, d: &Drawn) -> Outgoing {
        // The subject first: the payload takes the ad id from it (one
        // allocation fewer a click).
        let mut subject = String::with_capacity(20);
        subject.push_str("clicks.ad-");
        push_decimal(&mut subject, d.rank as u64);
        let ad = &subject["clicks.".len()..];
        let mut p = std::mem::take(&mut self.scratch);
        p.clear();
        p.push_str(r#"{"click_id":""#);
        let id_start = p.len();
        push_hex(&mut p, self.args.seed);
        p.push('-');
        push_decimal(&mut p, d.i);
        // Kept apart only when it goes out as `Nats-Msg-Id`.
        let click_id = if self.args.no_msg_id {
            String::new()
        } else {
            p[id_start..].to_string()
        };
        p.push_str(r#"","ad_id":""#);
        match d.invalid {
            Some(0) => {
                p.clear();
                p.push_str("{not json");
            }
            Some(1) => {
                p.push_str(ad);
                p.push_str(r#""}"#);
            }
            Some(_) => {
                p.push_str(r#"other","ts":"#);
                push_signed(&mut p, d.ts);
                p.push('}');
            }
            None => {
                p.push_str(ad);
                p.push_str(r#"","ts":"#);
                push_signed(&mut p, d.ts);
                p.push_str(r#","user_id":"u"#);
                push_decimal(&mut p, d.user);
                p.push_str(r#"","ip":""#);
                match d.ip {
                    (Some(group), _) => {
                        p.push_str("2001:db8::");
                        push_hex(&mut p, group);
                    }
                    (None, [a, b, c]) => {
                        p.push_str("10.");
                        for (n, octet) in [a, b, c].into_iter().enumerate() {
                            if n > 0 {
                                p.push('.');
                            }
                            push_decimal(&mut p, octet);
                        }
                    }
                }
                p.push_str(r#"","country":""#);
                p.push_str(d.country);
                p.push_str(r#""}"#);
            }
        }
        if self.payloads.capacity() < p.len() {
            self.payloads.reserve(PAYLOAD_BLOCK.max(p.len()));
        }
        self.payloads.extend_from_slice(p.as_bytes());
        let payload = self.payloads.split().freeze();
        self.scratch = p;
        Outgoing {
            subject,
            payload,
            click_id,
        }
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|d| *d as char));
}

/// Appends `n` in decimal, with its sign.
fn push_signed(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_decimal(out, n.unsigned_abs());
}

/// Appends `n` in lower-case hexadecimal.
fn push_hex(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|d| *d as char));
}

/// Runs the load generator until its count or duration is reached, or `stop` fires.
pub async fn run(
    args: LoadgenArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Report> {
    let mut generator = ClickGenerator::new(&args);
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let total = args.count.unwrap_or(u64::MAX);
    tokio::pin!(stop);

    if let Some(path) = &args.out {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let limit = if args.count.is_none() && args.duration.is_none() {
            1_000_000
        } else {
            total
        };
        for _ in 0..limit {
            let m = generator.next_message(adclick_actors::time::now_ms());
            out.write_all(&m.payload)?;
            out.write_all(b"\n")?;
            generator.report.sent += 1;
        }
        out.flush()?;
        return Ok(finish(generator.report, started));
    }

    let security = match &args.nats_security {
        Some(security) => (**security).clone(),
        None => crate::config::Config::load_nats_security(args.config.as_deref())?,
    };
    let client = crate::nats::connect(&args.nats_url, &security).await?;
    let js = async_nats::jetstream::new(client);
    // As fast as possible: clicks are made on a thread of their own, so the
    // publish loop hands messages to async-nats back to back (interleaving
    // generation made it write fewer messages per syscall, measured ~15%
    // slower than a bare publisher on two cores). Paced runs make them inline,
    // so `ts` follows the wall clock at the moment of sending.
    let mut source = if args.rate == 0 {
        Source::spawn_thread(generator, total)?
    } else {
        Source::Inline(Box::new(generator))
    };
    let mut report = Report::default();
    let mut inflight: VecDeque<AckFuture> = VecDeque::new();
    let counters = Arc::new(PublishCounters::default());
    let goal = Goal {
        clicks: args.count,
        time: args.duration,
    };
    let reporter = ProgressReporter::start(args.progress, counters.clone(), goal, started);
    loop {
        if report.sent >= total || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Pace: publish in small bursts and sleep until the next burst is due.
        if args.rate > 0 {
            let due = Duration::from_secs_f64(report.sent as f64 / args.rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                tokio::select! {
                    _ = tokio::time::sleep(due - elapsed) => {}
                    _ = &mut stop => break,
                }
            }
        }
        let burst = (args.rate / 100)
            .clamp(1, CHUNK as u64)
            .min(total - report.sent);
        let waiting = Instant::now();
        let messages = match &mut source {
            Source::Inline(generator) => {
                let now = adclick_actors::time::now_ms();
                (0..burst).map(|_| generator.next_counted(now)).collect()
            }
            Source::Thread(chunks) => tokio::select! {
                chunk = chunks.recv() => match chunk {
                    Some(chunk) => chunk,
                    None => anyhow::bail!("the click generator thread stopped (panicked)"),
                },
                _ = &mut stop => break,
            },
        };
        report.generator_wait_seconds += waiting.elapsed().as_secs_f64();
        for (m, kind) in messages {
            if report.sent >= total {
                break;
            }
            let mut message = PublishMessage::build().payload(m.payload);
            if !args.no_msg_id {
                message = message.message_id(&m.click_id);
            }
            match js.send_publish(m.subject, message).await {
                Ok(ack) => inflight.push_back(std::future::IntoFuture::into_future(ack)),
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!("publish failed: {e}");
                }
            }
            report.sent += 1;
            kind.add_to(&mut report);
            while inflight.len() >= args.max_inflight {
                // async-nats holds one of its 5,000 per-connection permits until
                // each ack future is awaited: await the oldest before sending more.
                // The clock is read only when the ack has not come yet (two
                // clock reads a message were ~2% of the loop's CPU).
                let Some(mut ack) = inflight.pop_front() else {
                    break;
                };
                let result = match futures::FutureExt::now_or_never(&mut ack) {
                    Some(result) => result,
                    None => {
                        let waiting = Instant::now();
                        let result = ack.await;
                        report.ack_wait_seconds += waiting.elapsed().as_secs_f64();
                        result
                    }
                };
                settle(result, &mut report);
            }
        }
        // A paced run rarely fills `max_inflight`: take the acks already
        // in, oldest first, so the progress shows them as they come (a poll
        // of a ready future; the unpaced loop is left as measured).
        if args.rate > 0 {
            while let Some(ack) = inflight.front_mut() {
                let Some(result) = futures::FutureExt::now_or_never(ack) else {
                    break;
                };
                inflight.pop_front();
                settle(result, &mut report);
            }
        }
        // Once a burst (up to 256 messages), for the progress thread.
        counters.store(report.sent, report.acked, report.failed);
        if futures::FutureExt::now_or_never(&mut stop).is_some() {
            break;
        }
    }
    let waiting = Instant::now();
    while let Some(ack) = inflight.pop_front() {
        settle(ack.await, &mut report);
        counters.store(report.sent, report.acked, report.failed);
    }
    report.ack_wait_seconds += waiting.elapsed().as_secs_f64();
    if let Some(reporter) = reporter {
        reporter.finish();
    }
    let report = finish(report, started);
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(report)
}

/// An ack being awaited (async-nats boxes it when it is first awaited
/// anyway: here when it is queued, so a paced run can poll the oldest).
type AckFuture = <PublishAckFuture as std::future::IntoFuture>::IntoFuture;

/// Messages made per burst (and per chunk of the generator thread).
const CHUNK: usize = 256;
/// Chunks the generator thread may be ahead of the publisher.
const CHUNKS_AHEAD: usize = 16;

/// Which kinds of click a generated message is, for the report of what was
/// actually sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kind {
    duplicate: bool,
    late: bool,
    future: bool,
    invalid: bool,
}

impl Kind {
    fn add_to(self, report: &mut Report) {
        report.duplicates += u64::from(self.duplicate);
        report.late += u64::from(self.late);
        report.future += u64::from(self.future);
        report.invalid += u64::from(self.invalid);
    }
}

impl ClickGenerator {
    /// The next message and what kind of click it is.
    pub fn next_counted(&mut self, now: i64) -> (Outgoing, Kind) {
        let before = self.report.clone();
        let m = self.next_message(now);
        let after = &self.report;
        let kind = Kind {
            duplicate: after.duplicates != before.duplicates,
            late: after.late != before.late,
            future: after.future != before.future,
            invalid: after.invalid != before.invalid,
        };
        (m, kind)
    }
}

/// Where the publish loop takes its messages from.
enum Source {
    /// Made in the loop, at the moment of sending.
    Inline(Box<ClickGenerator>),
    /// Made ahead on a thread, in chunks.
    Thread(tokio::sync::mpsc::Receiver<Vec<(Outgoing, Kind)>>),
}

impl Source {
    /// Starts a thread making `total` messages in chunks; it stops early when
    /// the publisher drops the receiver.
    fn spawn_thread(mut generator: ClickGenerator, total: u64) -> anyhow::Result<Source> {
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        std::thread::Builder::new()
            .name("loadgen-clicks".into())
            .spawn(move || {
                let mut made = 0u64;
                while made < total {
                    let n = (total - made).min(CHUNK as u64);
                    let now = adclick_actors::time::now_ms();
                    let chunk: Vec<_> = (0..n).map(|_| generator.next_counted(now)).collect();
                    made += n;
                    if tx.blocking_send(chunk).is_err() {
                        return; // the publisher stopped
                    }
                }
            })
            .context("cannot start the click generator thread")?;
        Ok(Source::Thread(rx))
    }
}

/// Counts an ack's outcome.
fn settle(
    result: Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    >,
    report: &mut Report,
) {
    match result {
        Ok(ack) => {
            report.acked += 1;
            report.acked_duplicate += u64::from(ack.duplicate);
        }
        Err(e) => {
            report.failed += 1;
            tracing::warn!("publish not acknowledged: {e}");
        }
    }
}

fn finish(mut report: Report, started: Instant) -> Report {
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.rate = report.sent as f64 / report.elapsed_seconds.max(1e-9);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    #[test]
    fn same_seed_same_stream() {
        let args = Cli::parse_from([
            "x",
            "--start-ts",
            "1000",
            "--seed",
            "7",
            "--invalid-ratio",
            "0.1",
        ])
        .args;
        let mut a = ClickGenerator::new(&args);
        let mut b = ClickGenerator::new(&args);
        for _ in 0..2000 {
            let (x, y) = (a.next_message(0), b.next_message(99));
            assert_eq!((x.subject, x.payload), (y.subject, y.payload));
        }
        assert!(a.report.duplicates > 0 && a.report.late > 0 && a.report.invalid > 0);
    }

    #[test]
    fn messages_are_the_json_the_spec_describes_and_repeats_are_exact() {
        let args = Cli::parse_from([
            "x",
            "--start-ts=-5",
            "--rate",
            "0",
            "--seed",
            "255",
            "--invalid-ratio",
            "0.2",
            "--duplicate-ratio",
            "0.2",
        ])
        .args;
        let mut g = ClickGenerator::new(&args);
        let mut by_id = std::collections::HashMap::new();
        let (mut valid, mut repeats) = (0, 0);
        for _ in 0..5000 {
            let m = g.next_message(0);
            if let Some(first) = by_id.insert(m.click_id.clone(), m.clone()) {
                repeats += 1;
                assert_eq!(
                    (first.subject, first.payload),
                    (m.subject.clone(), m.payload.clone())
                );
            }
            assert!(m.click_id.starts_with("ff-"), "{}", m.click_id);
            let ad = m.subject.strip_prefix("clicks.").unwrap();
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            if json.get("user_id").is_none() {
                continue;
            }
            valid += 1;
            assert_eq!(json["click_id"], m.click_id.as_str());
            assert_eq!(json["ad_id"], ad);
            let ip: std::net::IpAddr = json["ip"].as_str().unwrap().parse().unwrap();
            let country = json["country"].as_str().unwrap();
            assert!(COUNTRIES.contains(&country), "{ip} {country}");
            let ts = json["ts"].as_i64().unwrap();
            let i: i64 = m.click_id[3..].parse().unwrap();
            assert!(
                ts == -5 + i / 10 || ts == -5 + i / 10 - 120_000,
                "{ts} for click {i}"
            );
        }
        assert!(
            valid > 3000 && repeats > 500,
            "{valid} valid, {repeats} repeats"
        );
    }

    #[test]
    fn zipf_index_picks_the_ranks_a_full_search_picks() {
        for (ads, skew) in [(1, 1.0), (7, 0.0), (100_000, 1.0), (1_000, 2.5)] {
            let table = ZipfTable::new(zipf_cdf(ads, skew));
            let mut rng = Rng::new(ads as u64);
            let edges = (0..=ZipfTable::BUCKETS).map(|k| k as f64 / ZipfTable::BUCKETS as f64);
            let draws = (0..20_000).map(|_| rng.unit()).collect::<Vec<_>>();
            for draw in edges
                .chain(draws)
                .chain(table.cdf.clone())
                .filter(|d| *d < 1.0)
            {
                assert_eq!(
                    table.rank(draw),
                    zipf_rank(&table.cdf, draw),
                    "{ads} ads, draw {draw}"
                );
            }
        }
    }

    #[test]
    fn zipf_makes_the_first_ad_the_hottest() {
        let args = Cli::parse_from([
            "x",
            "--ads",
            "100",
            "--skew",
            "1.0",
            "--duplicate-ratio",
            "0",
        ])
        .args;
        let mut g = ClickGenerator::new(&args);
        let mut hits = vec![0u32; 101];
        for _ in 0..20_000 {
            let m = g.next_message(0);
            let rank: usize = m.subject.trim_start_matches("clicks.ad-").parse().unwrap();
            hits[rank] += 1;
        }
        assert!(hits[1] > hits[2] && hits[2] > hits[50], "{:?}", &hits[..5]);
    }
}
