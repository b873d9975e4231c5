//! `adclick rebuild --partition N`: recomputes one partition's file from the
//! messages the `CLICKS` stream still retains.
//!
//! A damaged file (or, with `--force`, a readable one or one of a newer
//! format) is moved aside (never deleted), a fresh one is created, and
//! the partition's ordinary pipeline replays the stream from its first
//! retained message until nothing is pending; then it commits and exits.
//! Limits: only what the stream retains (`stream_max_age`, default 7 days)
//! can be recounted; rejects are republished (JetStream drops the repeats
//! only within the rejected stream's 10-minute duplicate window).

use crate::config::Config;
use adclick_actors::partitions::Partitions;
use adclick_actors::store::{PartitionStore, StoreError};
use anyhow::{bail, Context as _};
use std::sync::Arc;
use std::time::Duration;

/// Rebuilds `partition`. With `force`, a readable file is replaced too.
pub async fn run(config: Config, partition: u32, force: bool) -> anyhow::Result<()> {
    if config.cluster {
        bail!(
            "rebuild runs a partition outside the cluster's leases, so it refuses cluster = true: \
             in a cluster, a member whose partition file is damaged restores the state shipped \
             to the object store by itself and replays the stream after it"
        );
    }
    let settings = Arc::new(config.pipeline.clone());
    if partition >= settings.partitions {
        bail!(
            "partition {partition} does not exist: partitions are 0..{}",
            settings.partitions
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join(format!("partition-{partition}.redb"));
    if path.exists() {
        // How the file moved aside is named: what it was.
        let what = match PartitionStore::open(&config.data_dir, partition) {
            Ok(_) if !force => bail!(
                "{} is readable; rebuilding would replace it. Pass --force to rebuild anyway",
                path.display()
            ),
            Ok(_) => "damaged",
            Err(StoreError::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }) => bail!(
                "{} is in use: stop `adclick serve` before rebuilding its partitions",
                path.display()
            ),
            // Not damaged: a newer adclick reads it. Replaced only on demand.
            Err(e @ StoreError::NewerFormat { .. }) if !force => {
                bail!("{e}. Rebuilding would replace it: pass --force to rebuild anyway")
            }
            Err(StoreError::NewerFormat { .. }) => "newer-format",
            Err(_) => "damaged",
        };
        let aside = path.with_extension(format!("redb.{what}-{}", adclick_actors::time::now_ms()));
        std::fs::rename(&path, &aside)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        eprintln!("moved {} to {}", path.display(), aside.display());
    }

    let client = crate::nats::connect(&config.nats_url, &config.nats_security).await?;
    let js = async_nats::jetstream::new(client);
    crate::nats::ensure_streams(&js, &config).await?;
    let partitions = Partitions::new(settings.clone(), config.query_timeout);
    partitions.start(&js, &config.data_dir, partition).await?;

    let stream = js.get_stream(&settings.stream).await?;
    let consumer = settings.consumer_name(partition, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !partitions.is_ready(partition) {
            continue;
        }
        let Ok(info) = stream.consumer_info(&consumer).await else {
            continue;
        };
        eprintln!(
            "partition {partition}: {} pending, {} awaiting commit",
            info.num_pending, info.num_ack_pending
        );
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
    }
    let committed = partitions.drain(config.shutdown_timeout).await;
    partitions.stop().await;
    if !committed {
        bail!("the final commit did not finish within shutdown_timeout");
    }
    eprintln!("partition {partition} rebuilt from the retained stream");
    Ok(())
}
