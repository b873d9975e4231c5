//! NATS wiring: connecting, checking the server, and creating or verifying
//! the `CLICKS` and `CLICKS_REJECTED` streams (SPEC §1).

use crate::config::Config;
use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// The subject transform destination for `partitions` partitions.
pub fn partition_transform(partitions: u32) -> String {
    format!("clicks.p.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}")
}

/// Connects to NATS and checks the server can run adclick (2.10 or newer).
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    // `nats_url` may list several servers (a cluster), comma-separated: the
    // client tries them all and reconnects to another when one goes.
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = async_nats::ConnectOptions::new()
        .name("adclick")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .connect(urls.as_slice())
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    // With retry_on_initial_connect the connect returns at once; wait for the server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "cannot connect to NATS at {url}: no answer within 10 s (is nats-server running?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let version = client.server_info().version;
    if !version_at_least(&version, 2, 10) {
        bail!("nats-server {version} at {url} is too old: adclick needs 2.10 or newer (subject transforms)");
    }
    Ok(client)
}

/// Whether a `major.minor.patch` version is at least `major.minor`.
pub fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Creates the clicks and rejected streams, or checks that the existing ones fit.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    let settings = &config.pipeline;
    let transform = partition_transform(settings.partitions);
    let clicks = js
        .get_or_create_stream(stream::Config {
            name: settings.stream.clone(),
            subjects: vec!["clicks.*".into()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: config.stream_max_age,
            max_bytes: config.stream_max_bytes,
            duplicate_window: config.duplicate_window,
            subject_transform: Some(stream::SubjectTransform {
                source: "clicks.*".into(),
                destination: transform.clone(),
            }),
            num_replicas: config.stream_replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create or open stream {}: {e} (is JetStream enabled? start nats-server with -js)",
                settings.stream
            )
        })?;
    let existing = clicks
        .cached_info()
        .config
        .subject_transform
        .as_ref()
        .map(|t| t.destination.clone());
    if existing.as_deref() != Some(transform.as_str()) {
        bail!(
            "stream {} exists with subject transform {:?}, but adclick is configured for {} partitions ({transform}). \
             The partition count is fixed when the stream is created: set ADCLICK_PARTITIONS to match, or recreate the stream",
            settings.stream,
            existing,
            settings.partitions
        );
    }
    js.get_or_create_stream(stream::Config {
        name: settings.rejected_stream.clone(),
        subjects: vec!["rejected.>".into()],
        storage: stream::StorageType::File,
        max_age: config.rejected_max_age,
        // Replays after a crash republish the same rejects; this window drops them.
        duplicate_window: Duration::from_secs(600),
        num_replicas: config.stream_replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot create or open stream {}: {e}",
            settings.rejected_stream
        )
    })?;
    if settings.feed.enabled {
        js.get_or_create_stream(stream::Config {
            name: config.feed_stream.clone(),
            subjects: vec!["agg.>".into()],
            storage: stream::StorageType::File,
            max_age: config.feed_max_age,
            // A replay after a crash republishes committed feed messages
            // with the same ids; this window drops them.
            duplicate_window: Duration::from_secs(600),
            num_replicas: config.stream_replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create or open stream {}: {e}", config.feed_stream))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_at_least("2.10.0", 2, 10));
        assert!(version_at_least("2.15.1", 2, 10));
        assert!(version_at_least("3.0.0", 2, 10));
        assert!(!version_at_least("2.9.25", 2, 10));
        assert!(!version_at_least("garbage", 2, 10));
    }

    #[test]
    fn transform_text() {
        assert_eq!(
            partition_transform(16),
            "clicks.p.{{partition(16,1)}}.{{wildcard(1)}}"
        );
    }
}
