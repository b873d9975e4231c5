//! Many `adclick serve` processes sharing the partitions (`cluster = true`),
//! on machinery NATS already has: JetStream KV buckets for membership and
//! leases, a JetStream object store for the partitions' state.
//!
//! Every `lease_ttl / 4` each member:
//! 1. renews its key in `ADCLICK_MEMBERS` (a bucket whose entries expire
//!    after `lease_ttl`: a member that stops renewing drops out);
//! 2. computes from the live members who should own each partition
//!    ([`assignment::assign`]: the same answer on every member);
//! 3. renews the leases it holds in `ADCLICK_LEASES` (also expiring after
//!    `lease_ttl`) by compare-and-set on their revision; a lease it cannot
//!    renew, or whose tenure ran out, is lost: the partition stops here;
//! 4. hands over the partitions it holds but should not (a member joined):
//!    stop consuming, commit, ship the state, stop, delete the lease;
//! 5. acquires the partitions it should own and nobody holds: create the
//!    lease (its revision is the new epoch), restore the latest shipped
//!    state unless the local file is that state, claim the state pointer,
//!    start the partition;
//! 6. ships the state of the partitions it holds every `state_ship_interval`.
//!
//! Fencing: a partition's tenure ([`crate::tenure`]) ends a margin before
//! its lease could expire; the writer checks it before every commit, ack and
//! publication. Each epoch consumes through a consumer of its own, and a new
//! owner deletes older epochs' consumers; the state pointer
//! (`ADCLICK_STATE_POINTERS`) moves only by compare-and-set from the
//! revision the owner claimed, so a replaced owner's late shipment fails;
//! feed versions of epoch `e` start at `e << 32`, so a replaced owner's late
//! message never carries a version the new owner uses.

pub mod assignment;
pub mod routing;

use crate::partitions::Partitions;
use crate::store::{PartitionStore, StoreError};
use crate::tenure::Tenure;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::Context;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

/// The KV bucket of live members.
pub const MEMBERS_BUCKET: &str = "ADCLICK_MEMBERS";
/// The KV bucket of partition leases.
pub const LEASES_BUCKET: &str = "ADCLICK_LEASES";
/// The KV bucket pointing at each partition's latest shipped state.
pub const POINTERS_BUCKET: &str = "ADCLICK_STATE_POINTERS";
/// The object store of shipped partition files.
pub const STATE_BUCKET: &str = "ADCLICK_STATE";

/// How a member takes part.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This member's unique name.
    pub member_id: String,
    /// How long a silent member's leases live.
    pub lease_ttl: Duration,
    /// Replicas of the buckets (3 on a 3-node JetStream cluster).
    pub replicas: usize,
    /// How often a held partition's state is shipped.
    pub ship_interval: Duration,
    /// Where partition files live.
    pub data_dir: PathBuf,
    /// How long a handover may take to commit (`shutdown_timeout`).
    pub drain_timeout: Duration,
}

/// A cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bucket or object store could not be opened or created.
    #[error("cannot open JetStream bucket {bucket}: {message}")]
    Bucket {
        /// The bucket.
        bucket: &'static str,
        /// What JetStream said.
        message: String,
    },
    /// A KV or object operation failed.
    #[error("{what} for partition {partition}: {message}")]
    Nats {
        /// The operation.
        what: &'static str,
        /// The partition.
        partition: u32,
        /// What NATS said.
        message: String,
    },
    /// The partition file could not be read or replaced.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The partition could not be started.
    #[error(transparent)]
    Start(#[from] crate::partitions::StartError),
}

/// A running membership: hand everything over with [`Membership::leave`].
pub struct Membership {
    leave: mpsc::Sender<oneshot::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Hands over every partition held (commit, ship, release) and leaves, so
    /// the others take them at once instead of after `lease_ttl`. Returns
    /// whether every partition committed in time.
    pub async fn leave(self) -> bool {
        let (done, answer) = oneshot::channel();
        if self.leave.send(done).await.is_err() {
            return false;
        }
        let in_time = answer.await.unwrap_or(false);
        let _ = self.task.await;
        in_time
    }
}

/// Joins the cluster: opens the buckets, takes part in one round at once
/// (so this member's share is known before it reports ready), then keeps
/// taking part in the background.
pub async fn join(
    partitions: Arc<Partitions>,
    js: Context,
    settings: ClusterSettings,
) -> Result<Membership, ClusterError> {
    let ttl = settings.lease_ttl;
    let replicas = settings.replicas;
    let members = key_value(&js, MEMBERS_BUCKET, ttl, replicas).await?;
    let leases = key_value(&js, LEASES_BUCKET, ttl, replicas).await?;
    let pointers = key_value(&js, POINTERS_BUCKET, Duration::ZERO, replicas).await?;
    let objects = object_store(&js, replicas).await?;
    let mut member = Member {
        partitions,
        js,
        settings,
        members,
        leases,
        pointers,
        objects,
        held: BTreeMap::new(),
    };
    member.round().await;
    let (leave, mut leaving) = mpsc::channel::<oneshot::Sender<bool>>(1);
    let task = tokio::spawn(async move {
        let every = (member.settings.lease_ttl / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                done = leaving.recv() => {
                    let in_time = member.leave().await;
                    if let Some(done) = done {
                        let _ = done.send(in_time);
                    }
                    return;
                }
                _ = tokio::time::sleep(every) => member.round().await,
            }
        }
    });
    Ok(Membership { leave, task })
}

async fn key_value(
    js: &Context,
    bucket: &'static str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::Bucket {
        bucket,
        message: e.to_string(),
    })
}

async fn object_store(js: &Context, replicas: usize) -> Result<ObjectStore, ClusterError> {
    if let Ok(store) = js.get_object_store(STATE_BUCKET).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: STATE_BUCKET.to_string(),
        num_replicas: replicas,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::Bucket {
        bucket: STATE_BUCKET,
        message: e.to_string(),
    })
}

/// A partition this member holds the lease of.
struct Held {
    /// The lease's latest revision (what the next renewal compares with).
    revision: u64,
    tenure: Arc<Tenure>,
    /// The state pointer's revision this member last wrote.
    pointer_revision: u64,
    shipped_at: Instant,
}

/// Where a partition's latest shipped state is.
#[derive(Clone, Debug, PartialEq)]
struct Pointer {
    /// The object holding the file (`None`: claimed, nothing shipped yet).
    object: Option<String>,
    last_seq: u64,
    epoch: u64,
    member: String,
}

impl Pointer {
    fn encode(&self) -> bytes::Bytes {
        json!({
            "object": self.object, "last_seq": self.last_seq,
            "epoch": self.epoch, "member": self.member,
        })
        .to_string()
        .into()
    }

    fn decode(bytes: &[u8]) -> Option<Pointer> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        Some(Pointer {
            object: v.get("object")?.as_str().map(str::to_string),
            last_seq: v.get("last_seq")?.as_u64()?,
            epoch: v.get("epoch")?.as_u64()?,
            member: v.get("member")?.as_str()?.to_string(),
        })
    }
}

struct Member {
    partitions: Arc<Partitions>,
    js: Context,
    settings: ClusterSettings,
    members: kv::Store,
    leases: kv::Store,
    pointers: kv::Store,
    objects: ObjectStore,
    held: BTreeMap<u32, Held>,
}

fn lease_key(partition: u32) -> String {
    format!("p{partition}")
}

impl Member {
    /// One round of steps 1–6 (see the module doc). Failures are logged and
    /// retried next round: the tenures keep the partitions safe meanwhile.
    async fn round(&mut self) {
        let me = self.settings.member_id.clone();
        if let Err(e) = self.members.put(&me, "{}".into()).await {
            tracing::warn!(member = %me, "cannot renew membership: {e}");
        }
        let live = self.live_members(&me).await;
        let count = self.partitions.settings().partitions;
        let owners = assignment::assign(count, &live);
        let mine: Vec<u32> = (0..count)
            .filter(|p| owners[*p as usize].map(|i| &live[i]) == Some(&me))
            .collect();
        self.partitions.set_assigned(mine.clone());
        let held: Vec<u32> = self.held.keys().copied().collect();
        for partition in held {
            if !mine.contains(&partition) {
                self.release(partition).await;
            } else {
                self.renew(partition).await;
            }
        }
        for &partition in &mine {
            if !self.held.contains_key(&partition) {
                if let Err(e) = self.acquire(partition).await {
                    tracing::warn!(partition, "cannot take the partition yet: {e}");
                }
            }
        }
        metrics::gauge!(crate::telemetry::PARTITIONS_HELD).set(self.held.len() as f64);
        self.note_watermarks(count).await;
        let due: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.shipped_at.elapsed() >= self.settings.ship_interval)
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            if let Err(e) = self.ship(partition).await {
                tracing::warn!(partition, "cannot ship the partition's state: {e}");
            }
        }
    }

    /// The live members, sorted, this one included.
    async fn live_members(&self, me: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let mut live: Vec<String> = match self.members.keys().await {
            Ok(keys) => keys.try_collect().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if !live.iter().any(|m| m == me) {
            live.push(me.to_string());
        }
        live.sort();
        live.dedup();
        live
    }

    fn lease_value(&self, partition: u32) -> bytes::Bytes {
        let watermark = self.partitions.watermark(partition).unwrap_or(i64::MIN);
        json!({"member": self.settings.member_id, "watermark": watermark})
            .to_string()
            .into()
    }

    /// The end of a tenure renewed at `sent`: a margin before the server
    /// could let the lease expire.
    fn tenure_end(&self, sent: Instant) -> Instant {
        let ttl = self.settings.lease_ttl;
        sent + ttl - (ttl / 5).max(Duration::from_millis(200))
    }

    async fn renew(&mut self, partition: u32) {
        let Some(held) = self.held.get(&partition) else {
            return;
        };
        let (revision, tenure) = (held.revision, held.tenure.clone());
        let sent = Instant::now();
        let value = self.lease_value(partition);
        match self
            .leases
            .update(lease_key(partition), value, revision)
            .await
        {
            Ok(next) => {
                tenure.extend_to(self.tenure_end(sent));
                if let Some(held) = self.held.get_mut(&partition) {
                    held.revision = next;
                }
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(partition, "lease lost to another member; stopping here");
                self.lose(partition).await;
            }
            Err(e) => {
                tracing::warn!(partition, "cannot renew the lease: {e}");
                if tenure.check().is_err() {
                    self.lose(partition).await;
                }
            }
        }
    }

    /// The lease is gone: stop at once, ship nothing.
    async fn lose(&mut self, partition: u32) {
        if let Some(held) = self.held.remove(&partition) {
            held.tenure.end();
        }
        self.partitions.stop_one(partition).await;
    }

    /// Hands a partition over: stop consuming, commit, ship, stop, release.
    async fn release(&mut self, partition: u32) -> bool {
        let committed = self
            .partitions
            .drain_some(&[partition], self.settings.drain_timeout)
            .await;
        if let Err(e) = self.ship(partition).await {
            tracing::warn!(partition, "cannot ship the state at handover: {e}");
        }
        let Some(held) = self.held.remove(&partition) else {
            return committed;
        };
        held.tenure.end();
        self.partitions.stop_one(partition).await;
        let key = lease_key(partition);
        if let Err(e) = self
            .leases
            .delete_expect_revision(&key, Some(held.revision))
            .await
        {
            tracing::warn!(
                partition,
                "cannot release the lease (it expires by itself): {e}"
            );
        }
        tracing::info!(partition, committed, "partition handed over");
        committed
    }

    async fn leave(&mut self) -> bool {
        let held: Vec<u32> = self.held.keys().copied().collect();
        let mut in_time = true;
        for partition in held {
            in_time &= self.release(partition).await;
        }
        let _ = self.members.delete(&self.settings.member_id).await;
        in_time
    }

    async fn acquire(&mut self, partition: u32) -> Result<(), ClusterError> {
        let key = lease_key(partition);
        let sent = Instant::now();
        let epoch = match self.leases.create(&key, self.lease_value(partition)).await {
            Ok(revision) => revision,
            // Held by the previous owner until it hands over or its lease expires.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(()),
            Err(e) => {
                return Err(ClusterError::Nats {
                    what: "creating the lease",
                    partition,
                    message: e.to_string(),
                })
            }
        };
        let tenure = Arc::new(Tenure::until(epoch, self.tenure_end(sent)));
        let started = self
            .restore_and_start(partition, epoch, tenure.clone())
            .await;
        match started {
            Ok(pointer_revision) => {
                self.held.insert(
                    partition,
                    Held {
                        revision: epoch,
                        tenure,
                        pointer_revision,
                        shipped_at: Instant::now(),
                    },
                );
                tracing::info!(partition, epoch, "partition acquired");
                Ok(())
            }
            Err(e) => {
                tenure.end();
                let _ = self.leases.delete_expect_revision(&key, Some(epoch)).await;
                Err(e)
            }
        }
    }

    /// Brings the local file up to the latest shipped state, claims the
    /// state pointer for `epoch` (so a replaced owner can no longer move
    /// it), and starts the partition. Returns the pointer's revision.
    async fn restore_and_start(
        &mut self,
        partition: u32,
        epoch: u64,
        tenure: Arc<Tenure>,
    ) -> Result<u64, ClusterError> {
        let key = lease_key(partition);
        let nats = |what: &'static str| {
            move |e: &dyn std::fmt::Display| ClusterError::Nats {
                what,
                partition,
                message: e.to_string(),
            }
        };
        let dir = self.settings.data_dir.clone();
        let me = self.settings.member_id.clone();
        for _attempt in 0..3 {
            let entry = (self.pointers.entry(&key).await)
                .map_err(|e| nats("reading the state pointer")(&e))?;
            let current = entry
                .as_ref()
                .filter(|e| e.operation == Operation::Put)
                .and_then(|e| Pointer::decode(&e.value).map(|p| (p, e.revision)));
            let local = local_last_seq(&dir, partition).await;
            let pointer = match &current {
                Some((pointer, _)) => pointer.clone(),
                None => Pointer {
                    object: None,
                    last_seq: local.unwrap_or(0),
                    epoch,
                    member: me.clone(),
                },
            };
            if let Some(object) = &pointer.object {
                let ours = pointer.member == me && local == Some(pointer.last_seq);
                if !ours {
                    let mut reader = (self.objects.get(object).await)
                        .map_err(|e| nats("fetching the shipped state")(&e))?;
                    let mut bytes = Vec::new();
                    reader
                        .read_to_end(&mut bytes)
                        .await
                        .map_err(|e| nats("reading the shipped state")(&e))?;
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || {
                        PartitionStore::import(&dir, partition, &bytes)
                    })
                    .await
                    .map_err(|e| nats("replacing the partition file")(&e))??;
                    metrics::counter!(crate::telemetry::STATE_RESTORED).increment(1);
                    tracing::info!(
                        partition,
                        object = %object,
                        last_seq = pointer.last_seq,
                        "restored the state another member shipped"
                    );
                }
            }
            let claimed = Pointer {
                epoch,
                member: me.clone(),
                ..pointer
            };
            let written = match &current {
                Some((_, revision)) => self
                    .pointers
                    .update(&key, claimed.encode(), *revision)
                    .await
                    .map_err(|e| e.to_string()),
                None => self
                    .pointers
                    .create(&key, claimed.encode())
                    .await
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(revision) => {
                    let data_dir = self.settings.data_dir.clone();
                    self.partitions
                        .start_for(&self.js, &data_dir, partition, tenure)
                        .await?;
                    return Ok(revision);
                }
                // Someone moved the pointer meanwhile (a replaced owner's last
                // shipment): restore from the newer state.
                Err(e) => tracing::warn!(partition, "state pointer moved while claiming: {e}"),
            }
        }
        Err(ClusterError::Nats {
            what: "claiming the state pointer",
            partition,
            message: "it kept moving".into(),
        })
    }

    /// Ships a held partition's file: a new object, then the pointer moved
    /// to it by compare-and-set, then the previous object deleted.
    async fn ship(&mut self, partition: u32) -> Result<(), ClusterError> {
        let Some(held) = self.held.get(&partition) else {
            return Ok(());
        };
        let (tenure, pointer_revision) = (held.tenure.clone(), held.pointer_revision);
        let Some(store) = self.partitions.store(partition) else {
            return Ok(());
        };
        let nats = |what: &'static str| {
            move |e: &dyn std::fmt::Display| ClusterError::Nats {
                what,
                partition,
                message: e.to_string(),
            }
        };
        tenure.check().map_err(|e| nats("shipping")(&e))?;
        let (last_seq, bytes) = tokio::task::spawn_blocking(move || store.export())
            .await
            .map_err(|e| nats("exporting the partition file")(&e))??;
        let epoch = tenure.epoch();
        let name = format!("p{partition}-e{epoch}-s{last_seq}");
        let mut reader = bytes.as_slice();
        self.objects
            .put(name.as_str(), &mut reader)
            .await
            .map_err(|e| nats("storing the state")(&e))?;
        let key = lease_key(partition);
        let previous = self
            .pointers
            .get(&key)
            .await
            .ok()
            .flatten()
            .and_then(|v| Pointer::decode(&v));
        let pointer = Pointer {
            object: Some(name.clone()),
            last_seq,
            epoch,
            member: self.settings.member_id.clone(),
        };
        tenure.check().map_err(|e| nats("shipping")(&e))?;
        let revision = (self
            .pointers
            .update(&key, pointer.encode(), pointer_revision)
            .await)
            .map_err(|e| nats("moving the state pointer")(&e))?;
        if let Some(held) = self.held.get_mut(&partition) {
            held.pointer_revision = revision;
            held.shipped_at = Instant::now();
        }
        if let Some(old) = previous.and_then(|p| p.object).filter(|o| *o != name) {
            let _ = self.objects.delete(&old).await;
        }
        metrics::counter!(crate::telemetry::STATE_SHIPPED_BYTES).increment(bytes.len() as u64);
        Ok(())
    }

    /// Notes every partition's watermark as its owner last reported it.
    async fn note_watermarks(&self, count: u32) {
        let Some(remote) = self.partitions.remote() else {
            return;
        };
        for partition in 0..count {
            if let Ok(Some(value)) = self.leases.get(lease_key(partition)).await {
                let reported = serde_json::from_slice::<Value>(&value)
                    .ok()
                    .and_then(|v| v.get("watermark").and_then(Value::as_i64));
                if let Some(watermark) = reported {
                    remote.set_watermark(partition, watermark);
                }
            }
        }
    }
}

/// The stream sequence the local file of `partition` holds, if it exists
/// and opens.
async fn local_last_seq(dir: &std::path::Path, partition: u32) -> Option<u64> {
    let path = dir.join(format!("partition-{partition}.redb"));
    if !path.exists() {
        return None;
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        PartitionStore::open(&dir, partition)
            .and_then(|store| store.last_seq())
            .ok()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_read_back() {
        let p = Pointer {
            object: Some("p3-e17-s4000".into()),
            last_seq: 4000,
            epoch: 17,
            member: "adclick-1".into(),
        };
        assert_eq!(Pointer::decode(&p.encode()), Some(p.clone()));
        let claimed = Pointer { object: None, ..p };
        assert_eq!(Pointer::decode(&claimed.encode()), Some(claimed));
        assert_eq!(Pointer::decode(b"{}"), None);
    }
}
