//! NATS wiring: connecting, checking the server, and creating or verifying
//! the `CLICKS` and `CLICKS_REJECTED` streams (SPEC §1).

pub mod security;

pub use security::NatsSecurity;

use crate::config::Config;
use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, stream};
use std::sync::Mutex;
use std::time::Duration;

/// The subject transform destination for `partitions` partitions.
pub fn partition_transform(partitions: u32) -> String {
    format!("clicks.p.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}")
}

/// The last refusal the server sent this process (a permissions violation,
/// an authorization violation), so a start-up step that then times out can
/// say why; the log has every one.
static LAST_REFUSAL: Mutex<Option<String>> = Mutex::new(None);
/// The last reason the client gave for a failed connection attempt.
static LAST_CONNECT_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// The last refusal the NATS server sent this process, if any: e.g.
/// `Permissions Violation for Publish to "$JS.API.STREAM.CREATE.CLICKS"`.
pub fn last_refusal() -> Option<String> {
    LAST_REFUSAL.lock().ok().and_then(|r| r.clone())
}

fn remember(slot: &Mutex<Option<String>>, text: String) {
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(text);
    }
}

/// `error`, with the server's last refusal added when there is one: a
/// JetStream request whose publish the server refused only times out, and
/// the refusal is what tells an operator which permission is missing.
pub fn with_refusal(error: anyhow::Error) -> anyhow::Error {
    match last_refusal() {
        Some(refusal) => error.context(format!(
            "the NATS server refused: {refusal} (docs/NATS-PERMISSIONS.md lists what adclick needs)"
        )),
        None => error,
    }
}

/// Logs what the client reports. Without this, async-nats drops its events,
/// and a permissions violation (which the server answers with `-ERR` and
/// otherwise ignores) would show only as a request timing out.
async fn report_event(event: async_nats::Event) {
    use async_nats::{Event, ServerError};
    match event {
        Event::ServerError(ServerError::AuthorizationViolation) => {
            let text = "authorization violation: the server refused adclick's credentials \
                        (nats_creds_file, nats_nkey_seed_file, nats_user/nats_password or nats_token)";
            tracing::error!("NATS: {text}");
            remember(&LAST_REFUSAL, text.to_string());
        }
        Event::ServerError(ServerError::Other(text)) if text.contains("Permissions Violation") => {
            tracing::error!(
                "NATS refused: {text}; adclick's NATS user lacks this permission \
                 (docs/NATS-PERMISSIONS.md lists what adclick needs)"
            );
            remember(&LAST_REFUSAL, text);
        }
        Event::ServerError(other) => tracing::warn!("NATS server error: {other}"),
        Event::ClientError(error) => {
            tracing::warn!("NATS client: {error}");
            // The bare reason (a connect attempt's, e.g. "authorization
            // violation"), without Display's "nats: " prefix.
            let reason = match error {
                async_nats::ClientError::Other(reason) => reason,
                other => other.to_string(),
            };
            remember(&LAST_CONNECT_ERROR, reason);
        }
        Event::Disconnected => tracing::warn!("NATS: disconnected; reconnecting"),
        Event::Connected => tracing::info!("NATS: connected"),
        Event::LameDuckMode => tracing::warn!("NATS: the server is entering lame duck mode"),
        other => tracing::debug!("NATS: {other}"),
    }
}

/// Connects to NATS with `security` (credentials, TLS) and checks the
/// server can run adclick (2.10 or newer). Every process that connects
/// comes through here.
pub async fn connect(url: &str, security: &NatsSecurity) -> anyhow::Result<async_nats::Client> {
    // Messages show the URL without any user:password in it.
    let shown = security::redacted_url(url);
    // `nats_url` may list several servers (a cluster), comma-separated: the
    // client tries them all and reconnects to another when one goes.
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let options = async_nats::ConnectOptions::new()
        .name("adclick")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(report_event);
    let options = security
        .apply(options)
        .with_context(|| format!("cannot use the NATS credentials ({})", security.describe()))?;
    tracing::info!("connecting to NATS at {shown} with {}", security.describe());
    let client = options
        .connect(urls.as_slice())
        .await
        .with_context(|| format!("cannot connect to NATS at {shown}"))?;
    // With retry_on_initial_connect the connect returns at once; wait for the server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        let last_error = LAST_CONNECT_ERROR.lock().ok().and_then(|e| e.clone());
        if last_error.as_deref() == Some("authorization violation") {
            bail!(
                "NATS at {shown} refused adclick's credentials ({}): authorization violation",
                security.describe()
            );
        }
        if tokio::time::Instant::now() > deadline {
            let why = last_error
                .map(|e| format!(" (last attempt: {e})"))
                .unwrap_or_default();
            bail!(
                "cannot connect to NATS at {shown}: no answer within 10 s{why} (is nats-server running? do its TLS settings match nats_tls_*?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let version = client.server_info().version;
    if !version_at_least(&version, 2, 10) {
        bail!("nats-server {version} at {shown} is too old: adclick needs 2.10 or newer (subject transforms)");
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
/// A failure says which permission the server refused, if it refused one.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
    create_or_check_streams(js, config)
        .await
        .map_err(with_refusal)
}

async fn create_or_check_streams(js: &jetstream::Context, config: &Config) -> anyhow::Result<()> {
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
