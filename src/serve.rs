//! `adclick serve`: wires NATS, the partition supervisors and the REST
//! gateway together, and shuts them down cleanly on SIGTERM.

use crate::config::Config;
use crate::gateway::listener::{self, RestListener};
use crate::gateway::{self, Gateway};
use adclick_actors::cluster::{self, ClusterSettings, Membership};
use adclick_actors::partitions::Partitions;
use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A running service.
pub struct Service {
    /// The partitions, as the gateway sees them.
    pub partitions: Arc<Partitions>,
    /// In a cluster: this member's part in it.
    membership: Option<Membership>,
    /// Where the REST API listens (the bound address, if port 0 was asked).
    pub http_addr: SocketAddr,
    http_stop: oneshot::Sender<()>,
    http_task: tokio::task::JoinHandle<()>,
    /// The raw archive's archiver, with `archive = true`.
    archiver: Option<crate::archive::archiver::Running>,
    config: Config,
}

/// The largest payload the connected server accepts.
fn js_max_payload(js: &async_nats::jetstream::Context) -> usize {
    js.client().server_info().max_payload
}

/// Installs the Prometheus recorder (once per process).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    for (name, buckets) in adclick_actors::telemetry::histogram_buckets() {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .with_context(|| format!("buckets of {name}"))?;
    }
    let flush = crate::archive::archiver::FLUSH_SECONDS;
    builder = builder
        .set_buckets_for_metric(
            Matcher::Full(flush.into()),
            crate::archive::archiver::FLUSH_BUCKETS,
        )
        .with_context(|| format!("buckets of {flush}"))?;
    let handle = builder
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    adclick_actors::telemetry::describe();
    Ok(handle)
}

/// Starts everything: streams, partitions, REST. Returns once the HTTP
/// listener is bound; partitions become ready in the background (`/readyz`).
pub async fn start(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Service> {
    // First, so a bad certificate or key stops start-up before anything else.
    let tls = match &config.http_listener.tls {
        Some(files) => Some(listener::tls_acceptor(files)?),
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let client = crate::nats::connect(&config.nats_url, &config.nats_security).await?;
    let js = async_nats::jetstream::new(client);
    crate::nats::ensure_streams(&js, &config).await?;

    let mut pipeline = config.pipeline.clone();
    // Feed chunks stay well under what this server accepts in one message.
    let server_max = js_max_payload(&js);
    pipeline.feed.max_payload = (server_max / 2).clamp(4096, 1 << 20);
    let settings = Arc::new(pipeline);
    let mut membership = None;
    let partitions = if config.cluster {
        if !crate::nats::version_at_least(&js.client().server_info().version, 2, 11) {
            anyhow::bail!("cluster = true needs nats-server 2.11 or newer (the version adclick's cluster mode is tested with)");
        }
        let partitions = Arc::new(Partitions::clustered(
            settings.clone(),
            config.query_timeout,
            js.client(),
        ));
        let cluster = ClusterSettings {
            member_id: config.member_id.clone(),
            lease_ttl: config.lease_ttl,
            replicas: config.stream_replicas,
            ship_interval: config.state_ship_interval,
            data_dir: config.data_dir.clone(),
            drain_timeout: config.shutdown_timeout,
        };
        membership = Some(
            cluster::join(partitions.clone(), js.clone(), cluster)
                .await
                .context("cannot join the cluster")?,
        );
        partitions
    } else {
        let partitions = Arc::new(Partitions::new(settings.clone(), config.query_timeout));
        for partition in 0..settings.partitions {
            partitions.start(&js, &config.data_dir, partition).await?;
        }
        partitions
    };

    let archiver = if config.archive.enabled {
        Some(crate::archive::archiver::spawn(js.clone(), &config)?)
    } else {
        None
    };

    let tls_on = tls.is_some();
    let listener = RestListener::bind(config.http_addr, tls, config.http_listener.clone()).await?;
    let http_addr = listener.local_addr()?;
    let mut gateway = Gateway::new(partitions.clone(), settings, metrics);
    gateway.access = config.api_access.clone();
    gateway.limits = config.http_limits.clone();
    gateway.member = config.cluster.then(|| config.member_id.clone());
    let router =
        gateway::router(Arc::new(gateway)).context("cannot serialize the OpenAPI document")?;
    let (http_stop, stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(listener.serve(router, async {
        let _ = stopped.await;
    }));
    if config.api_access.enabled() && !tls_on && !http_addr.ip().is_loopback() {
        tracing::warn!(
            %http_addr,
            "API tokens travel in clear text: set http_tls_cert and http_tls_key, or terminate TLS in front"
        );
    }
    let scheme = if tls_on { "https" } else { "http" };
    tracing::info!(%http_addr, scheme, tokens = config.api_access.enabled(), partitions = partitions.len(), "adclick serving");
    Ok(Service {
        partitions,
        membership,
        http_addr,
        http_stop,
        http_task,
        archiver,
        config,
    })
}

impl Service {
    /// Stops consuming, commits and acks what was consumed, stops the REST
    /// server. Bounded by `shutdown_timeout`; returns whether every partition
    /// committed in time (if not, the next start replays the rest: no loss).
    pub async fn shutdown(self) -> bool {
        // The archive flushes while the partitions drain (they share no state).
        let timeout = self.config.shutdown_timeout;
        let archiver = self
            .archiver
            .map(|archiver| tokio::spawn(archiver.stop(timeout)));
        let in_time = match self.membership {
            // Hand every partition over (commit, ship, release) so the other
            // members take them at once.
            Some(membership) => membership.leave().await,
            None => self.partitions.drain(self.config.shutdown_timeout).await,
        };
        if !in_time {
            tracing::warn!(
                "not every partition committed within shutdown_timeout ({:?}); the rest replays on the next start",
                self.config.shutdown_timeout
            );
        }
        if let Some(archiver) = archiver {
            if !matches!(archiver.await, Ok(true)) {
                tracing::warn!("the archive's last flush did not finish within shutdown_timeout; the next start reads it again");
            }
        }
        let _ = self.http_stop.send(());
        let _ = self.http_task.await;
        self.partitions.stop().await;
        in_time
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `adclick serve`: runs until SIGTERM, then shuts down cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let service = start(config, Some(metrics)).await?;
    stop_signal().await;
    tracing::info!("stopping: no more fetches, committing what was consumed");
    service.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
