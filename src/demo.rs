//! `adclick demo`: nats-server (started if none answers), the service and the
//! load generator in one command, printing the URLs to open and, every ten
//! seconds, the current top 10.

use crate::config::Config;
use crate::loadgen::{self, LoadgenArgs};
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of `adclick demo`.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Clicks per second the load generator sends.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Number of distinct ads.
    #[arg(long, default_value_t = 1000)]
    pub ads: u32,
    /// nats-server binary to start when no server answers at the NATS URL.
    #[arg(long, env = "ADCLICK_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: String,
    /// Config file (defaults otherwise; ADCLICK_* variables apply as for serve).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The host and port of a `nats://host:port` URL.
fn host_port(url: &str) -> (String, u16) {
    let first = url.split(',').next().unwrap_or(url);
    let rest = first.split("://").nth(1).unwrap_or(first);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) => (
            host.to_string(),
            port.trim_end_matches('/').parse().unwrap_or(4222),
        ),
        None => (rest.to_string(), 4222),
    }
}

async fn nats_answers(url: &str) -> bool {
    let (host, port) = host_port(url);
    tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Starts nats-server with JetStream on the URL's port, storing under `dir`.
async fn start_nats(binary: &str, url: &str, dir: &Path) -> anyhow::Result<tokio::process::Child> {
    let (host, port) = host_port(url);
    std::fs::create_dir_all(dir)?;
    let mut command = tokio::process::Command::new(binary);
    // Its own process group: Ctrl-C in the terminal must reach only the demo,
    // which then drains (commit and ack need the server) before stopping it.
    #[cfg(unix)]
    command.process_group(0);
    let child = command
        .args(["-js", "-a", &host, "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("no NATS server answers at {url}, and `{binary}` could not be started (run scripts/demo, which installs it)")
        })?;
    for _ in 0..100 {
        if nats_answers(url).await {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("started {binary}, but it does not answer at {url}")
}

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let nats = if nats_answers(&config.nats_url).await {
        println!(
            "Using the NATS server at {}",
            crate::nats::security::redacted_url(&config.nats_url)
        );
        None
    } else {
        let dir = config.data_dir.join("nats");
        println!(
            "Starting nats-server at {} (store: {})",
            config.nats_url,
            dir.display()
        );
        Some(start_nats(&args.nats_server, &config.nats_url, &dir).await?)
    };
    let metrics = crate::serve::install_metrics()?;
    let service = crate::serve::start(config.clone(), Some(metrics)).await?;
    let base = format!("http://{}", service.http_addr);
    println!();
    println!("adclick is running. Watch it live at:");
    println!();
    println!("  {base}/");
    println!();
    println!("Or ask the API:");
    println!("  {base}/v1/ads/popular?count=10&window=1");
    println!("  {base}/v1/ads/popular?count=10&window=5&country=US");
    println!("  {base}/v1/ads/ad-1/aggregated_count?minutes=5");
    println!("  {base}/v1/status   (or: adclick status --url {base})");
    println!("  {base}/readyz");
    println!("  {base}/metrics");
    println!("  {base}/openapi.json");
    println!();
    println!(
        "Publishing {} clicks/s over {} ads. The first minute closes at most ~65 s from now (watermark delay {} ms). Ctrl-C stops.",
        args.rate, args.ads, config.pipeline.watermark_delay_ms
    );

    let load = LoadgenArgs {
        nats_url: config.nats_url.clone(),
        config: None,
        nats_security: Some(Box::new(config.nats_security.clone())),
        rate: args.rate,
        duration: None,
        count: None,
        ads: args.ads,
        skew: 1.0,
        seed: adclick_actors::time::now_ms() as u64,
        duplicate_ratio: 0.01,
        late_ratio: 0.02,
        late_by: Duration::from_secs(90),
        future_ratio: 0.0,
        invalid_ratio: 0.001,
        no_msg_id: false,
        start_ts: None,
        out: None,
        report: None,
        max_inflight: 4096,
        // The service logs on the same standard error: no redrawn line.
        progress: loadgen::ProgressMode::Plain,
    };
    let (stop_load, load_stopped) = tokio::sync::oneshot::channel::<()>();
    let load_task = tokio::spawn(loadgen::run(load, async {
        let _ = load_stopped.await;
    }));

    let addr = service.http_addr;
    let printer = tokio::spawn(async move {
        // First look after ten seconds: partitions are still recovering at start.
        let every = Duration::from_secs(10);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            match crate::http::get(addr, "/v1/ads/popular?count=10&window=1").await {
                Ok((200, body)) => print_top(&body),
                Ok((status, body)) => println!("popular: {status} {body}"),
                Err(e) => println!("popular: {e}"),
            }
        }
    });

    crate::serve::stop_signal().await;
    println!("Stopping…");
    printer.abort();
    let _ = stop_load.send(());
    if let Ok(Ok(report)) = load_task.await {
        println!(
            "Load generator sent {} clicks ({:.0}/s), {} acked, {} failed",
            report.sent, report.rate, report.acked, report.failed
        );
    }
    service.shutdown().await;
    if let Some(mut nats) = nats {
        let _ = nats.kill().await;
    }
    Ok(())
}

fn print_top(body: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        println!("popular: {body}");
        return;
    };
    let ads = v["ads"].as_array().cloned().unwrap_or_default();
    if ads.is_empty() {
        println!(
            "Top 10 [{} .. {}): no closed minute yet, waiting…",
            v["from"].as_str().unwrap_or("?"),
            v["to"].as_str().unwrap_or("?")
        );
        return;
    }
    // Closed but not final: late clicks may still raise these numbers (corrections).
    println!(
        "Top 10 for [{} .. {}) complete={} final={}:",
        v["from"].as_str().unwrap_or("?"),
        v["to"].as_str().unwrap_or("?"),
        v["complete"],
        v["final"]
    );
    for (i, ad) in ads.iter().enumerate() {
        println!(
            "  {:>2}. {:<12} {}",
            i + 1,
            ad["ad_id"].as_str().unwrap_or("?"),
            ad["count"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn nats_urls() {
        assert_eq!(
            host_port("nats://127.0.0.1:4222"),
            ("127.0.0.1".into(), 4222)
        );
        assert_eq!(
            host_port("nats://u:p@localhost:5000,nats://b:1"),
            ("localhost".into(), 5000)
        );
        assert_eq!(host_port("localhost"), ("localhost".into(), 4222));
    }
}
