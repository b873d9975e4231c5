//! The `adclick` command line: `serve`, `loadgen`, `demo`, `rebuild`, `reconcile`,
//! `archive`, `status`, `token-hash`.

use adclick::config::Config;
use adclick::demo::DemoArgs;
use adclick::gateway::access::TokenDigest;
use adclick::loadgen::LoadgenArgs;
use adclick::logging::LogFormat;
use adclick::reconcile::ReconcileArgs;
use adclick::status::{Readiness, StatusArgs, EXIT_NOT_READY};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Real-time, exactly-once ad-click aggregation over NATS JetStream.
#[derive(Parser)]
#[command(name = "adclick", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: consume clicks, count them, answer REST queries.
    ///
    /// Configuration: built-in defaults, then the --config file, then ADCLICK_*
    /// environment variables (see config/default.toml for every key).
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "ADCLICK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish a synthetic, reproducible click stream to NATS.
    Loadgen(LoadgenArgs),
    /// Run nats-server (if none answers), the service and the load generator
    /// together, and print the URLs to open.
    Demo(DemoArgs),
    /// Recompute one partition's file from the messages the stream retains.
    ///
    /// For a damaged or lost partition file: the file is moved aside (never
    /// deleted), and the partition replays the CLICKS stream from its first
    /// retained message until nothing is pending. Stop `adclick serve` first.
    /// Only what the stream still retains (stream_max_age) can be recounted.
    Rebuild {
        /// The partition to rebuild.
        #[arg(long)]
        partition: u32,
        /// Rebuild even if the current file is readable.
        #[arg(long)]
        force: bool,
        /// TOML configuration file.
        #[arg(long, env = "ADCLICK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the partitions of a running service: owner, state, watermark,
    /// lag, pending, last commit, restarts; and whether it is ready.
    ///
    /// Reads GET /v1/status. Exit codes: 0 ready; 3 answering but not ready
    /// (some partition recovering); 1 no answer or not a status (refused,
    /// timed out after 10 s, 401/403, another program on that port).
    Status(StatusArgs),
    /// Recount clicks in batch: every valid click once, in its event-time
    /// minute, deduplicated by (ad id, click id) over the whole input, with
    /// no lateness limit.
    ///
    /// `--from T --to T` (or `--day D`): recount a range from the raw
    /// archive and the stream, compare it with the partitions' final
    /// minutes, print a report (a table, or `--json`); exit 0 when they
    /// agree, 3 when they differ, 4 when the recount missed clicks of the
    /// range. `--repair` writes the recount over the minutes that differ
    /// (the service stopped). `--input FILE`: a JSON-lines or Parquet file
    /// of payloads counted with no NATS; per-minute counts and top ads as
    /// CSV or Parquet. See docs/RECONCILIATION.md.
    Reconcile(ReconcileArgs),
    /// Archive every message of the clicks and rejected streams to hourly
    /// Parquet files, exactly once (docs/ARCHIVE.md).
    ///
    /// Runs until SIGTERM (then flushes what it holds), or with --once
    /// archives what the streams hold now and exits. Resumes after the
    /// archive's last commit. Run one archiver per archive.
    Archive {
        /// Archive everything the streams hold now, then exit 0.
        #[arg(long)]
        once: bool,
        /// TOML configuration file.
        #[arg(long, env = "ADCLICK_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the SHA-256 digest of an API token read from standard input,
    /// for `api_token_sha256` (the service stores digests, never tokens).
    ///
    /// One trailing line end is ignored. The same as
    /// `printf %s "$TOKEN" | sha256sum`. Make a token with e.g.
    /// `openssl rand -hex 32`.
    TokenHash,
}

/// `adclick token-hash`: the digest of the token on standard input.
fn token_hash() -> ExitCode {
    use std::io::Read as _;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(64 * 1024).read_to_end(&mut input) {
        eprintln!("adclick: cannot read the token from standard input: {e}");
        return ExitCode::FAILURE;
    }
    match TokenDigest::of_token_line(&input) {
        Ok(digest) => {
            if input.trim_ascii_end().len() < 16 {
                eprintln!("adclick: warning: a token under 16 characters can be guessed; use e.g. `openssl rand -hex 32`");
            }
            println!("{}", digest.to_hex());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("adclick: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `adclick reconcile`: a batch job on files, no runtime needed.
fn reconcile(args: &ReconcileArgs) -> ExitCode {
    match adclick::reconcile::run(args) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("adclick reconcile: {e}");
            // 2 for a command line that cannot work, as clap's own errors.
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        // No runtime, no logging: a pipe in, one line out.
        Command::TokenHash => return token_hash(),
        Command::Reconcile(args)
            if args.from.is_none() && args.to.is_none() && args.day.is_none() =>
        {
            return reconcile(args)
        }
        _ => {}
    }
    let log_format = match LogFormat::from_env() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("adclick: {e}");
            return ExitCode::FAILURE;
        }
    };
    let allocator_tuned = adclick::allocator::keep_batch_memory();
    adclick::logging::init(log_format);
    if !allocator_tuned {
        tracing::debug!("malloc thresholds left at their defaults (not glibc)");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("adclick: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                let config = Config::load(config.as_deref())?;
                adclick::serve::run(config).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Loadgen(args) => {
                let report = adclick::loadgen::run(args, adclick::serve::stop_signal()).await?;
                eprintln!(
                    "sent {} ({:.0}/s), acked {}, duplicate acks {}, failed {}; \
                     of {:.1} s, {:.1} s waiting for acks, {:.1} s for clicks",
                    report.sent,
                    report.rate,
                    report.acked,
                    report.acked_duplicate,
                    report.failed,
                    report.elapsed_seconds,
                    report.ack_wait_seconds,
                    report.generator_wait_seconds
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Demo(args) => {
                adclick::demo::run(args).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Rebuild {
                partition,
                force,
                config,
            } => {
                let config = Config::load(config.as_deref())?;
                adclick::rebuild::run(config, partition, force).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Archive { once, config } => {
                let config = Config::load(config.as_deref())?;
                adclick::archive::archiver::run_command(config, once).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Status(args) => match adclick::status::run(&args).await? {
                Readiness::Ready => Ok(ExitCode::SUCCESS),
                Readiness::NotReady => Ok(ExitCode::from(EXIT_NOT_READY)),
            },
            Command::Reconcile(args) => match adclick::reconcile::run_range(&args).await {
                Ok(verdict) => Ok(ExitCode::from(verdict.exit_code())),
                Err(e) => {
                    eprintln!("adclick reconcile: {e}");
                    Ok(ExitCode::from(if e.is_usage() { 2 } else { 1 }))
                }
            },
            // Answered before the runtime started (above).
            Command::TokenHash => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // A collector reading JSON logs gets the reason as one of them.
            if log_format == LogFormat::Json {
                tracing::error!(error = format!("{e:#}"), "adclick stopped");
            } else {
                eprintln!("adclick: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
