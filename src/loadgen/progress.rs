//! What `adclick loadgen` shows while it publishes: on a terminal, one line
//! redrawn four times a second (a bar when the end is known, sent, acked,
//! failed, the current rate, elapsed and ETA); elsewhere a log line every
//! five seconds.
//!
//! The publish loop only stores its running totals in three atomics once a
//! burst (no clock reads, no syscalls a click); a thread of its own reads
//! them, does the arithmetic and writes to standard error.

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A redrawn line when standard error is a terminal, else plain lines.
    #[default]
    Auto,
    /// The redrawn line, wherever standard error goes.
    Bar,
    /// A log line every five seconds.
    Plain,
    /// Nothing until the final report.
    Never,
}

/// How often the terminal line is redrawn.
pub const BAR_INTERVAL: Duration = Duration::from_millis(250);
/// How often a plain line is logged.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
/// Characters of the bar between its brackets.
const BAR_WIDTH: usize = 24;

/// The publish loop's running totals, as the progress thread reads them.
#[derive(Debug, Default)]
pub struct PublishCounters {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
}

impl PublishCounters {
    /// Stores the totals so far (relaxed: a display may lag a burst).
    pub fn store(&self, sent: u64, acked: u64, failed: u64) {
        self.sent.store(sent, Ordering::Relaxed);
        self.acked.store(acked, Ordering::Relaxed);
        self.failed.store(failed, Ordering::Relaxed);
    }

    fn load(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Where the run stops: after `clicks` messages or `time`, whichever comes
/// first (neither: at Ctrl-C).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Goal {
    /// `--count`.
    pub clicks: Option<u64>,
    /// `--duration`.
    pub time: Option<Duration>,
}

/// One reading of the counters, with what the line shows of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressSample {
    /// Messages handed to NATS.
    pub sent: u64,
    /// Messages JetStream acknowledged.
    pub acked: u64,
    /// Publishes that failed.
    pub failed: u64,
    /// Messages a second since the previous reading.
    pub rate: f64,
    /// Since the run started.
    pub elapsed: Duration,
    /// Where the run stops.
    pub goal: Goal,
}

impl ProgressSample {
    /// How far along the run is, 0 to 1, when it has an end.
    pub fn fraction(&self) -> Option<f64> {
        let by_clicks = self.goal.clicks.map(|n| self.sent as f64 / n.max(1) as f64);
        let by_time = self
            .goal
            .time
            .map(|t| self.elapsed.as_secs_f64() / t.as_secs_f64().max(1e-9));
        let fraction = match (by_clicks, by_time) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        Some(fraction.clamp(0.0, 1.0))
    }

    /// Time left: the sooner of the duration's end and the count at the
    /// average rate so far (unknown before the first message).
    pub fn eta(&self) -> Option<Duration> {
        let by_time = self.goal.time.map(|t| t.saturating_sub(self.elapsed));
        let average = self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let by_clicks = self
            .goal
            .clicks
            .filter(|_| self.sent > 0)
            .map(|n| Duration::from_secs_f64(n.saturating_sub(self.sent) as f64 / average));
        match (by_time, by_clicks) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The terminal line: `[#####-----]  45%  sent 45,000  acked 44,800
/// failed 0  9,950/s  4.5 s, ETA 5.5 s` (no bar, percentage or ETA when the
/// run has no end).
pub fn bar_line(s: &ProgressSample) -> String {
    let mut line = String::new();
    if let Some(fraction) = s.fraction() {
        let filled = (fraction * BAR_WIDTH as f64).floor() as usize;
        line.push('[');
        line.push_str(&"#".repeat(filled));
        line.push_str(&"-".repeat(BAR_WIDTH - filled));
        line.push_str(&format!("] {:>3.0}%  ", fraction * 100.0));
    }
    line.push_str(&format!(
        "sent {}  acked {}  failed {}  {}/s  {}",
        grouped(s.sent),
        grouped(s.acked),
        grouped(s.failed),
        grouped(s.rate.round() as u64),
        seconds(s.elapsed)
    ));
    if let Some(eta) = s.eta().filter(|_| s.fraction().is_some()) {
        line.push_str(&format!(", ETA {}", seconds(eta)));
    }
    line
}

/// The plain line: `sent 45000, acked 44800, failed 0, 9950/s, 4.5 s
/// elapsed, 45%, ETA 5.5 s`.
pub fn plain_line(s: &ProgressSample) -> String {
    let mut line = format!(
        "sent {}, acked {}, failed {}, {:.0}/s, {} elapsed",
        s.sent,
        s.acked,
        s.failed,
        s.rate,
        seconds(s.elapsed)
    );
    if let (Some(fraction), Some(eta)) = (s.fraction(), s.eta()) {
        line.push_str(&format!(", {:.0}%, ETA {}", fraction * 100.0, seconds(eta)));
    }
    line
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `4.5 s`, `2 min 05 s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// The thread that shows progress; [`ProgressReporter::finish`] (or a
/// drop, on an error) stops it.
pub struct ProgressReporter {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressReporter {
    /// Starts showing the counters as `mode` says (`None`: nothing to show).
    pub fn start(
        mode: ProgressMode,
        counters: Arc<PublishCounters>,
        goal: Goal,
        started: Instant,
    ) -> Option<ProgressReporter> {
        let bar = match mode {
            ProgressMode::Never => return None,
            ProgressMode::Bar => true,
            ProgressMode::Plain => false,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        };
        let (stop, stopped) = mpsc::channel();
        let every = if bar { BAR_INTERVAL } else { PLAIN_INTERVAL };
        let thread = std::thread::Builder::new()
            .name("loadgen-progress".into())
            .spawn(move || {
                let mut previous = (0u64, started);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let (sent, acked, failed) = counters.load();
                    let now = Instant::now();
                    let dt = now.duration_since(previous.1).as_secs_f64();
                    let sample = ProgressSample {
                        sent,
                        acked,
                        failed,
                        rate: sent.saturating_sub(previous.0) as f64 / dt.max(1e-9),
                        elapsed: now.duration_since(started),
                        goal,
                    };
                    previous = (sent, now);
                    if bar {
                        // Erase to the line's end: a shorter line leaves no tail.
                        let mut err = std::io::stderr().lock();
                        let _ = write!(err, "\r{}\x1b[K", bar_line(&sample));
                        let _ = err.flush();
                    } else {
                        tracing::info!(sent, acked, failed, "loadgen: {}", plain_line(&sample));
                    }
                }
                if bar {
                    // The final report takes the line.
                    let _ = write!(std::io::stderr(), "\r\x1b[K");
                }
            })
            .ok()?;
        Some(ProgressReporter {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the display (clearing the terminal line) before the report.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for ProgressReporter {
    /// Waits for the line to be cleared, so what is printed next (the
    /// report, an error) starts on a clean line.
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent: u64, elapsed_ms: u64, goal: Goal) -> ProgressSample {
        ProgressSample {
            sent,
            acked: sent.saturating_sub(200),
            failed: 1,
            rate: 9_950.4,
            elapsed: Duration::from_millis(elapsed_ms),
            goal,
        }
    }

    #[test]
    fn a_count_draws_a_bar_with_percentage_and_eta() {
        let goal = Goal {
            clicks: Some(100_000),
            time: None,
        };
        assert_eq!(
            bar_line(&sample(45_000, 4_500, goal)),
            "[##########--------------]  45%  sent 45,000  acked 44,800  failed 1  9,950/s  4.5 s, ETA 5.5 s"
        );
        assert_eq!(
            plain_line(&sample(45_000, 4_500, goal)),
            "sent 45000, acked 44800, failed 1, 9950/s, 4.5 s elapsed, 45%, ETA 5.5 s"
        );
        assert_eq!(
            bar_line(&sample(100_000, 10_000, goal)),
            "[########################] 100%  sent 100,000  acked 99,800  failed 1  9,950/s  10.0 s, ETA 0.0 s"
        );
    }

    #[test]
    fn a_duration_draws_the_bar_by_time_and_the_sooner_end_wins() {
        let goal = Goal {
            clicks: None,
            time: Some(Duration::from_secs(120)),
        };
        assert_eq!(
            bar_line(&sample(300_000, 30_000, goal)),
            "[######------------------]  25%  sent 300,000  acked 299,800  failed 1  9,950/s  30.0 s, ETA 1 min 30 s"
        );
        // 60% of the count at 10,000/s: 20 s left, before the 90 s of time.
        let both = Goal {
            clicks: Some(500_000),
            time: Some(Duration::from_secs(120)),
        };
        let s = sample(300_000, 30_000, both);
        assert_eq!(s.fraction(), Some(0.6));
        assert_eq!(s.eta(), Some(Duration::from_secs(20)));
    }

    #[test]
    fn without_an_end_there_is_no_bar_and_no_eta() {
        assert_eq!(
            bar_line(&sample(1_234_567, 125_000, Goal::default())),
            "sent 1,234,567  acked 1,234,367  failed 1  9,950/s  2 min 05 s"
        );
        assert_eq!(
            plain_line(&sample(0, 100, Goal::default())),
            "sent 0, acked 0, failed 1, 9950/s, 0.1 s elapsed"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(12_345_678), "12,345,678");
    }
}
