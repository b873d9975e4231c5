//! The status page at `/`, in a real browser: headless Chromium driven by
//! Selenium (`tests/page/check_page.py`) against a live service fed by
//! `adclick loadgen`. The script checks what a person sees: every partition
//! consuming, the top ads of a window equal to `GET /v1/ads/popular` for the
//! same window and end, the totals moving, and an ad's sparkline total equal
//! to `GET /v1/ads/{ad_id}/series`; the window is chosen with the keyboard.
//! Screenshots land in `target/tmp/page/`.
//!
//! Needs Chromium, chromedriver and Selenium: `scripts/test` installs them
//! (`scripts/lib/browser.sh`); without them the test fails saying so.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the browser and its driver are: the environment `scripts/test`
/// sets, else the Debian paths and the pinned Selenium under `.tools/`.
fn browser_setup() -> (String, String, PathBuf) {
    let from = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let chromium = from("ADCLICK_CHROMIUM", "/usr/bin/chromium");
    let driver = from("ADCLICK_CHROMEDRIVER", "/usr/bin/chromedriver");
    let selenium = std::env::var("ADCLICK_SELENIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/selenium-4.50.0"));
    let missing: Vec<String> = [&chromium, &driver]
        .into_iter()
        .filter(|p| !Path::new(p.as_str()).exists())
        .cloned()
        .chain((!selenium.join("selenium").exists()).then(|| selenium.display().to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "the page test needs Chromium, chromedriver and Selenium; missing: {missing:?}. \
         Run scripts/test, which installs them (scripts/lib/browser.sh)"
    );
    (chromium, driver, selenium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_api_answers_and_moves() {
    let (chromium, driver, selenium) = browser_setup();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Adclick::start(
        &nats,
        dir.path(),
        &[
            ("ADCLICK_PARTITIONS", "4"),
            ("ADCLICK_WATERMARK_DELAY", "1s"),
            ("ADCLICK_IDLE_TIMEOUT", "500ms"),
        ],
    );
    service.wait_ready().await;
    let loadgen = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_adclick"))
            .arg("loadgen")
            .args(["--nats-url", &nats.url()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start adclick loadgen")
    };
    // Clicks two minutes ago (a closed minute inside the 5-minute window),
    // then a live trickle with repeats and invalid ones, so every tile moves.
    let two_minutes_ago = (now_ms().div_euclid(60_000) - 2) * 60_000;
    let past = loadgen(&[
        "--rate",
        "0",
        "--count",
        "3000",
        "--ads",
        "40",
        "--start-ts",
        &two_minutes_ago.to_string(),
    ])
    .wait_with_output()
    .expect("run adclick loadgen");
    assert!(past.status.success(), "loadgen failed");
    let mut live = loadgen(&[
        "--rate",
        "200",
        "--duration",
        "3m",
        "--ads",
        "40",
        "--seed",
        "2",
        "--duplicate-ratio",
        "0.02",
        "--invalid-ratio",
        "0.01",
        // Late clicks would correct the closed minutes the page and the API
        // are compared on, between the two reads.
        "--late-ratio",
        "0",
    ]);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page");
    let check = tokio::task::spawn_blocking({
        let base = format!("http://{}", service.addr);
        let shots = shots.clone();
        move || {
            Command::new("python3")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/page/check_page.py"))
                .args([base.as_str(), &shots.display().to_string(), "4"])
                .env("PYTHONPATH", &selenium)
                .env("ADCLICK_CHROMIUM", &chromium)
                .env("ADCLICK_CHROMEDRIVER", &driver)
                .output()
                .expect("run python3 tests/page/check_page.py")
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(240), check)
        .await
        .expect("the page check did not finish within 240 s")
        .unwrap();
    let _ = live.kill();
    let _ = live.wait();
    assert!(
        out.status.success(),
        "the page check failed (screenshots in {}):\n{}\n{}\nadclick's log:\n{}",
        shots.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        service.log()
    );
    assert!(shots.join("page.png").exists());
    eprintln!(
        "page check: {} (screenshots in {})",
        String::from_utf8_lossy(&out.stdout).trim(),
        shots.display()
    );
}
