//! Many `adclick serve` processes sharing the partitions (`cluster = true`),
//! on machinery NATS already has: JetStream KV buckets for membership and
//! leases, a JetStream object store for the partitions' state.
//!
//! Two tasks per member, each every `lease_ttl / 4`:
//! - the **renewer** does nothing slow: it renews the member's key in
//!   `ADCLICK_MEMBERS` (a bucket whose entries expire after `lease_ttl`: a
//!   member that stops renewing drops out) and, all at once, the leases it
//!   holds in `ADCLICK_LEASES` (also expiring after `lease_ttl`) by
//!   compare-and-set on their revision; each renewal extends the
//!   partition's tenure. A lease found to be another member's is lost: the
//!   tenure ends at once and the partition stops here.
//! - the **member loop** may be slow (downloads, drains, shipments) without
//!   delaying a renewal: it computes from the live members who should own
//!   each partition ([`assignment::assign`]: the same answer on every
//!   member); hands over the partitions it holds but should not (a member
//!   joined): drain (commit), end the tenure, stop, ship the state, delete
//!   the lease; acquires the partitions it should own and nobody holds:
//!   create the lease, claim the state pointer with the partition's next
//!   epoch, restore the shipped state unless the local file is that state
//!   or newer, start; and ships each held partition's state every
//!   `state_ship_interval` when it changed.
//!
//! Fencing: a partition's tenure ([`crate::tenure`]) ends a margin before
//! its lease could expire; the writer checks it before every commit, ack and
//! publication. A partition's epoch is one more than the last owner's, taken
//! by compare-and-set on its state pointer (`ADCLICK_STATE_POINTERS`), so
//! epochs of a partition are unique and increasing. Each epoch consumes
//! through a consumer of its own, and a new owner deletes older epochs'
//! consumers; the pointer moves only by compare-and-set from the revision
//! the owner claimed, so a replaced owner's late shipment fails; feed
//! versions of epoch `e` start at `e << 32`, so a replaced owner's late
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
use std::sync::{Arc, Mutex};
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
    /// How long the partitions handed over together may take to commit
    /// (`shutdown_timeout`).
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
    /// The longest a leave may take: the drain's bound plus one lease, past
    /// which the leases expire by themselves and waiting gains nothing.
    leave_within: Duration,
}

impl Membership {
    /// Hands over every partition held (commit, ship, release) and leaves, so
    /// the others take them at once instead of after `lease_ttl`. Returns
    /// whether every partition committed and shipped in time. Bounded by
    /// `drain_timeout + lease_ttl` even when NATS does not answer (the member
    /// loop may be stuck retrying it): then it stops the loop and returns
    /// false, and what was not committed replays on the next owner.
    pub async fn leave(self) -> bool {
        let Membership {
            leave,
            mut task,
            leave_within,
        } = self;
        let handover = async {
            let (done, answer) = oneshot::channel();
            if leave.send(done).await.is_err() {
                return false;
            }
            let in_time = answer.await.unwrap_or(false);
            let _ = (&mut task).await;
            in_time
        };
        match tokio::time::timeout(leave_within, handover).await {
            Ok(in_time) => in_time,
            Err(_) => {
                tracing::warn!(
                    ?leave_within,
                    "the handover did not finish in time (is NATS answering?); leaving without it"
                );
                task.abort();
                false
            }
        }
    }
}

/// Joins the cluster: opens the buckets, renews in the background, takes
/// part in one round at once (so this member's share is known before it
/// reports ready), then keeps taking part in the background.
pub async fn join(
    partitions: Arc<Partitions>,
    js: Context,
    mut settings: ClusterSettings,
) -> Result<Membership, ClusterError> {
    let replicas = settings.replicas;
    let members = key_value(&js, MEMBERS_BUCKET, settings.lease_ttl, replicas).await?;
    let leases = key_value(&js, LEASES_BUCKET, settings.lease_ttl, replicas).await?;
    // A bucket made earlier with a shorter TTL expires leases sooner than
    // this member would count: count with the shorter of the two.
    if let Ok(info) = leases.status().await {
        let max_age = info.info.config.max_age;
        if !max_age.is_zero() && max_age < settings.lease_ttl {
            tracing::warn!(
                ?max_age,
                lease_ttl = ?settings.lease_ttl,
                "the leases bucket expires entries sooner than lease_ttl; counting with its max_age"
            );
            settings.lease_ttl = max_age;
        }
    }
    let pointers = key_value(&js, POINTERS_BUCKET, Duration::ZERO, replicas).await?;
    let objects = object_store(&js, replicas).await?;
    let shared = Arc::new(Shared {
        members,
        leases,
        member_id: settings.member_id.clone(),
        partitions: partitions.clone(),
        held: Mutex::default(),
        lease_ttl: settings.lease_ttl,
        lost: Mutex::default(),
    });
    let leave_within = settings.drain_timeout + settings.lease_ttl;
    let every = (settings.lease_ttl / 4).max(Duration::from_millis(100));
    let renewing = tokio::spawn(shared.clone().renew_forever(every));
    let mut member = Member {
        shared,
        partitions,
        js,
        settings,
        pointers,
        objects,
        owned: BTreeMap::new(),
        live: Vec::new(),
    };
    member.round().await;
    let (leave, mut leaving) = mpsc::channel::<oneshot::Sender<bool>>(1);
    // A member leaving (its key deleted) or joining (a key not seen yet) is
    // acted on at once rather than at the next tick: a handover then waits
    // for no timer. Expired keys raise no event; the ticks find them.
    let mut changes = member.shared.members.watch_all().await.ok();
    let task = tokio::spawn(async move {
        // Renewing ends with this loop, also when a leave that took too long
        // aborts it: a member that left must not keep its leases alive.
        let renewing = AbortOnDrop(renewing);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = leaving.recv() => {
                    let in_time = member.leave().await;
                    drop(renewing);
                    if let Some(done) = done {
                        let _ = done.send(in_time);
                    }
                    return;
                }
                _ = ticks.tick() => member.round().await,
                change = next_change(&mut changes) => match change {
                    Some(entry) => {
                        let joined = !member.live.contains(&entry.key);
                        if entry.operation != Operation::Put || joined {
                            member.round().await;
                        }
                    }
                    // The watch ended: the ticks carry on alone.
                    None => changes = None,
                },
            }
        }
    });
    Ok(Membership {
        leave,
        task,
        leave_within,
    })
}

/// Aborts its task when dropped (a `JoinHandle` alone lets it run on).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next entry of the members watch; pending for ever without one.
async fn next_change(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    use futures::StreamExt;
    match watch {
        Some(watch) => watch.next().await.and_then(Result::ok),
        None => std::future::pending().await,
    }
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

/// A lease this member holds, as the renewer sees it.
struct HeldLease {
    /// The lease's latest revision (what the next renewal compares with).
    revision: u64,
    tenure: Arc<Tenure>,
}

/// What the renewer and the member loop share.
struct Shared {
    members: kv::Store,
    leases: kv::Store,
    member_id: String,
    partitions: Arc<Partitions>,
    held: Mutex<BTreeMap<u32, HeldLease>>,
    /// The lease TTL counted with (the bucket's, if shorter).
    lease_ttl: Duration,
    /// Partitions whose lease the renewer found lost, for the loop to stop.
    lost: Mutex<Vec<u32>>,
}

/// A partition this member owns, as the member loop sees it.
#[derive(Clone, Copy)]
struct Owned {
    epoch: u64,
    /// The state pointer's revision this member last wrote.
    pointer_revision: u64,
    shipped_at: Instant,
    /// The stream sequence of the last shipped state.
    shipped_seq: u64,
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

/// Copies the latest shipped state of each of `partitions` into `dir` as
/// its partition file, for a job that reads the cluster's partitions
/// without owning them (`adclick reconcile --stored shipped`). Returns,
/// per partition, the stream sequence the copy holds, or `None` when the
/// partition has shipped nothing yet (no file is written for it). The
/// copies are at most `state_ship_interval` behind their owners.
pub async fn fetch_shipped_states(
    js: &Context,
    dir: &std::path::Path,
    partitions: u32,
) -> Result<Vec<(u32, Option<u64>)>, ClusterError> {
    let open = |bucket: &'static str| {
        move |e: &dyn std::fmt::Display| ClusterError::Bucket {
            bucket,
            message: e.to_string(),
        }
    };
    let pointers = js
        .get_key_value(POINTERS_BUCKET)
        .await
        .map_err(|e| open(POINTERS_BUCKET)(&e))?;
    let objects = js
        .get_object_store(STATE_BUCKET)
        .await
        .map_err(|e| open(STATE_BUCKET)(&e))?;
    let mut out = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let pointer = pointers
            .entry(partition_key(partition))
            .await
            .map_err(|e| nats("reading the state pointer", partition)(&e))?
            .filter(|e| e.operation == Operation::Put)
            .and_then(|e| Pointer::decode(&e.value));
        let Some((object, last_seq)) = pointer.and_then(|p| Some((p.object?, p.last_seq))) else {
            out.push((partition, None));
            continue;
        };
        import_shipped(&objects, &object, dir, partition, last_seq).await?;
        out.push((partition, Some(last_seq)));
    }
    Ok(out)
}

/// Fetches the shipped `object` and makes it the file of `partition` in
/// `dir`, once it proves to hold `last_seq` ([`PartitionStore::import`]).
async fn import_shipped(
    objects: &ObjectStore,
    object: &str,
    dir: &std::path::Path,
    partition: u32,
    last_seq: u64,
) -> Result<(), ClusterError> {
    let mut reader = (objects.get(object).await)
        .map_err(|e| nats("fetching the shipped state", partition)(&e))?;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| nats("reading the shipped state", partition)(&e))?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || PartitionStore::import(&dir, partition, &bytes, last_seq))
        .await
        .map_err(|e| nats("replacing the partition file", partition)(&e))??;
    Ok(())
}

/// The key of a partition's lease and of its state pointer.
fn partition_key(partition: u32) -> String {
    format!("p{partition}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An error from NATS about `partition`, for `what`.
fn nats(what: &'static str, partition: u32) -> impl Fn(&dyn std::fmt::Display) -> ClusterError {
    move |e| ClusterError::Nats {
        what,
        partition,
        message: e.to_string(),
    }
}

impl Shared {
    /// The end of a tenure renewed at `sent`: a margin before the server
    /// could let the lease expire.
    fn tenure_end(&self, sent: Instant) -> Instant {
        let ttl = self.lease_ttl;
        sent + ttl - (ttl / 5).max(Duration::from_millis(200))
    }

    fn lease_value(&self, partition: u32) -> bytes::Bytes {
        let watermark = self.partitions.watermark(partition).unwrap_or(i64::MIN);
        json!({"member": self.member_id, "watermark": watermark})
            .to_string()
            .into()
    }

    fn is_mine(&self, value: &[u8]) -> bool {
        serde_json::from_slice::<Value>(value)
            .ok()
            .and_then(|v| {
                v.get("member")
                    .and_then(Value::as_str)
                    .map(|m| m == self.member_id)
            })
            .unwrap_or(false)
    }

    async fn renew_forever(self: Arc<Shared>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.renew_all().await;
        }
    }

    /// Renews the membership and every held lease, all at once.
    async fn renew_all(&self) {
        if let Err(e) = self.members.put(&self.member_id, "{}".into()).await {
            tracing::warn!(member = %self.member_id, "cannot renew membership: {e}");
        }
        let held: Vec<(u32, u64, Arc<Tenure>)> = lock(&self.held)
            .iter()
            .map(|(p, h)| (*p, h.revision, h.tenure.clone()))
            .collect();
        let renewals = held
            .into_iter()
            .map(|(partition, revision, tenure)| async move {
                let sent = Instant::now();
                let key = partition_key(partition);
                let value = self.lease_value(partition);
                let renewed = match self.leases.update(&key, value, revision).await {
                    Ok(next) => Ok(next),
                    // The update may have landed with its reply lost, or the
                    // lease gone to another member: the entry says which.
                    Err(e) => match self.leases.entry(&key).await {
                        Ok(Some(entry))
                            if entry.operation == Operation::Put && self.is_mine(&entry.value) =>
                        {
                            Ok(entry.revision)
                        }
                        Ok(_) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(true),
                        _ => {
                            tracing::warn!(partition, "cannot renew the lease: {e}");
                            Err(false)
                        }
                    },
                };
                (partition, tenure, sent, renewed)
            });
        for (partition, tenure, sent, renewed) in futures::future::join_all(renewals).await {
            match renewed {
                Ok(next) => {
                    if let Some(h) = lock(&self.held).get_mut(&partition) {
                        if Arc::ptr_eq(&h.tenure, &tenure) {
                            h.revision = next;
                            tenure.extend_to(self.tenure_end(sent));
                        }
                    }
                }
                Err(true) => {
                    tracing::warn!(partition, "lease lost to another member; stopping here");
                    tenure.end();
                    lock(&self.lost).push(partition);
                }
                // Unknown: the tenure runs out by itself unless a renewal gets through.
                Err(false) => {}
            }
        }
    }
}

struct Member {
    shared: Arc<Shared>,
    partitions: Arc<Partitions>,
    js: Context,
    settings: ClusterSettings,
    pointers: kv::Store,
    objects: ObjectStore,
    owned: BTreeMap<u32, Owned>,
    /// The live members last read (kept when a read fails).
    live: Vec<String>,
}

impl Member {
    /// One round of the member loop (see the module doc). Failures are
    /// logged and retried next round: the tenures keep the partitions safe.
    async fn round(&mut self) {
        let me = self.settings.member_id.clone();
        self.stop_lost().await;
        self.refresh_live(&me).await;
        let count = self.partitions.settings().partitions;
        let owners = assignment::assign(count, &self.live);
        let mine: Vec<u32> = (0..count)
            .filter(|p| owners[*p as usize].map(|i| &self.live[i]) == Some(&me))
            .collect();
        self.partitions.set_assigned(mine.clone());
        let leaving: Vec<u32> = self
            .owned
            .keys()
            .copied()
            .filter(|p| !mine.contains(p))
            .collect();
        if !leaving.is_empty() {
            self.release(&leaving).await;
        }
        for &partition in &mine {
            if !self.owned.contains_key(&partition) {
                if let Err(e) = self.acquire(partition).await {
                    metrics::counter!(crate::telemetry::ACQUIRE_FAILED).increment(1);
                    tracing::warn!(partition, "cannot take the partition yet: {e}");
                }
            }
        }
        metrics::gauge!(crate::telemetry::PARTITIONS_HELD).set(self.owned.len() as f64);
        self.note_watermarks(count).await;
        let due: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, o)| o.shipped_at.elapsed() >= self.settings.ship_interval)
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            if let Err(e) = self.ship_held(partition).await {
                metrics::counter!(crate::telemetry::SHIP_FAILED).increment(1);
                tracing::warn!(partition, "cannot ship the partition's state: {e}");
            }
        }
    }

    /// Stops the partitions whose lease was lost or whose tenure ran out.
    async fn stop_lost(&mut self) {
        let mut lost = std::mem::take(&mut *lock(&self.shared.lost));
        for (partition, held) in lock(&self.shared.held).iter() {
            if let Err(e) = held.tenure.check() {
                // Frozen past the lease (a pause, a hung host): another
                // member may own the partition now.
                tracing::warn!(partition, "tenure ran out: {e}; stopping here");
                lost.push(*partition);
            }
        }
        lost.sort_unstable();
        lost.dedup();
        for partition in lost {
            if let Some(held) = lock(&self.shared.held).remove(&partition) {
                held.tenure.end();
            }
            self.owned.remove(&partition);
            self.partitions.stop_one(partition).await;
        }
    }

    async fn refresh_live(&mut self, me: &str) {
        use futures::TryStreamExt;
        let read = match self.shared.members.keys().await {
            Ok(keys) => keys
                .try_collect::<Vec<String>>()
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match read {
            Ok(mut live) => {
                live.push(me.to_string());
                live.sort();
                live.dedup();
                self.live = live;
            }
            // Acting on "I am alone" would take every partition: keep the
            // last membership seen until a read gets through.
            Err(e) => {
                tracing::warn!("cannot read the members: {e}");
                if self.live.is_empty() {
                    self.live = vec![me.to_string()];
                }
            }
        }
    }

    /// Hands partitions over together: drain (commit) all of them within
    /// `drain_timeout`, then for each: end the tenure, stop it, ship the
    /// state it committed (the export waits for a commit still running),
    /// delete the lease. Returns whether every one committed and shipped.
    async fn release(&mut self, partitions: &[u32]) -> bool {
        let mut in_time = self
            .partitions
            .drain_some(partitions, self.settings.drain_timeout)
            .await;
        for &partition in partitions {
            let store = self.partitions.store(partition);
            let held = lock(&self.shared.held).remove(&partition);
            if let Some(held) = &held {
                held.tenure.end();
            }
            self.partitions.stop_one(partition).await;
            let owned = self.owned.remove(&partition);
            if let (Some(store), Some(owned)) = (store, owned) {
                match self.ship(partition, store, &owned).await {
                    Ok(_) => {}
                    Err(e) => {
                        in_time = false;
                        metrics::counter!(crate::telemetry::SHIP_FAILED).increment(1);
                        tracing::warn!(partition, "cannot ship the state at handover: {e}");
                    }
                }
            }
            if let Some(held) = held {
                let key = partition_key(partition);
                let deleted = self
                    .shared
                    .leases
                    .delete_expect_revision(&key, Some(held.revision));
                if let Err(e) = deleted.await {
                    tracing::warn!(
                        partition,
                        "cannot release the lease (it expires by itself): {e}"
                    );
                }
            }
            tracing::info!(partition, "partition handed over");
        }
        in_time
    }

    async fn leave(&mut self) -> bool {
        let held: Vec<u32> = self.owned.keys().copied().collect();
        let in_time = self.release(&held).await;
        if let Err(e) = self.shared.members.delete(&self.settings.member_id).await {
            tracing::warn!("cannot delete the membership (it expires by itself): {e}");
        }
        in_time
    }

    async fn acquire(&mut self, partition: u32) -> Result<(), ClusterError> {
        let key = partition_key(partition);
        let sent = Instant::now();
        let value = self.shared.lease_value(partition);
        let revision = match self.shared.leases.create(&key, value).await {
            Ok(revision) => revision,
            // Held by the previous owner until it hands over or its lease expires.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(nats("creating the lease", partition)(&e)),
        };
        let acquired = self.claim_restore_start(partition, revision, sent).await;
        if acquired.is_err() {
            if let Some(held) = lock(&self.shared.held).remove(&partition) {
                held.tenure.end();
            }
            let deleted = self
                .shared
                .leases
                .delete_expect_revision(&key, Some(revision));
            if let Err(e) = deleted.await {
                tracing::warn!(
                    partition,
                    "cannot release the lease (it expires by itself): {e}"
                );
            }
        }
        acquired
    }

    /// Claims the state pointer with the partition's next epoch (so a
    /// replaced owner can no longer move it), brings the local file up to
    /// the latest shipped state, and starts the partition.
    async fn claim_restore_start(
        &mut self,
        partition: u32,
        lease_revision: u64,
        sent: Instant,
    ) -> Result<(), ClusterError> {
        let me = self.settings.member_id.clone();
        let dir = self.settings.data_dir.clone();
        let (shipped, claimed, pointer_revision) = self.claim(partition).await?;
        let tenure = Arc::new(Tenure::until(claimed.epoch, self.shared.tenure_end(sent)));
        lock(&self.shared.held).insert(
            partition,
            HeldLease {
                revision: lease_revision,
                tenure: tenure.clone(),
            },
        );
        let local = local_last_seq(&dir, partition).await;
        match shipped
            .as_ref()
            .and_then(|p| p.object.clone().map(|o| (p, o)))
        {
            // Our own shipment, and the file has it (or more of our own work).
            Some((pointer, _)) if pointer.member == me && local >= Some(pointer.last_seq) => {}
            Some((pointer, object)) => {
                self.restore(partition, &object, pointer.last_seq).await?;
            }
            // Claimed by another member that shipped nothing: its state is
            // lost with it, and a local file may be of an older lineage:
            // replay the stream from the start.
            None if shipped.as_ref().is_some_and(|p| p.member != me) && local.is_some() => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || PartitionStore::remove(&dir, partition))
                    .await
                    .map_err(|e| nats("removing the stale file", partition)(&e))??;
            }
            None => {}
        }
        self.partitions
            .start_for(&self.js, &dir, partition, tenure)
            .await?;
        self.owned.insert(
            partition,
            Owned {
                epoch: claimed.epoch,
                pointer_revision,
                shipped_at: Instant::now(),
                shipped_seq: shipped.map_or(0, |p| p.last_seq),
            },
        );
        tracing::info!(partition, epoch = claimed.epoch, "partition acquired");
        Ok(())
    }

    /// Moves the pointer to this member with the next epoch, by
    /// compare-and-set (retried if it moved meanwhile). Returns the pointer
    /// as it was, as claimed, and its new revision.
    async fn claim(&self, partition: u32) -> Result<(Option<Pointer>, Pointer, u64), ClusterError> {
        let key = partition_key(partition);
        for _attempt in 0..3 {
            let entry = (self.pointers.entry(&key).await)
                .map_err(|e| nats("reading the state pointer", partition)(&e))?;
            let current = entry
                .as_ref()
                .filter(|e| e.operation == Operation::Put)
                .and_then(|e| Pointer::decode(&e.value).map(|p| (p, e.revision)));
            let claimed = Pointer {
                object: current.as_ref().and_then(|(p, _)| p.object.clone()),
                last_seq: current.as_ref().map_or(0, |(p, _)| p.last_seq),
                epoch: current.as_ref().map_or(0, |(p, _)| p.epoch) + 1,
                member: self.settings.member_id.clone(),
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
                Ok(revision) => return Ok((current.map(|(p, _)| p), claimed, revision)),
                // A replaced owner's last shipment moved it: read it again.
                Err(e) => tracing::warn!(partition, "state pointer moved while claiming: {e}"),
            }
        }
        Err(ClusterError::Nats {
            what: "claiming the state pointer",
            partition,
            message: "it kept moving".into(),
        })
    }

    /// Replaces the local file with the shipped `object`, checked to hold
    /// `last_seq` before it replaces anything.
    async fn restore(
        &self,
        partition: u32,
        object: &str,
        last_seq: u64,
    ) -> Result<(), ClusterError> {
        import_shipped(
            &self.objects,
            object,
            &self.settings.data_dir,
            partition,
            last_seq,
        )
        .await?;
        metrics::counter!(crate::telemetry::STATE_RESTORED).increment(1);
        tracing::info!(partition, object, last_seq, "restored the shipped state");
        Ok(())
    }

    /// The periodic shipment of a held partition, when its state changed
    /// and its tenure holds.
    async fn ship_held(&mut self, partition: u32) -> Result<(), ClusterError> {
        let Some(store) = self.partitions.store(partition) else {
            return Ok(());
        };
        let tenure = lock(&self.shared.held)
            .get(&partition)
            .map(|h| h.tenure.clone());
        let Some(tenure) = tenure else {
            return Ok(());
        };
        tenure
            .check()
            .map_err(|e| nats("shipping", partition)(&e))?;
        let Some(owned) = self.owned.get(&partition) else {
            return Ok(());
        };
        let unchanged = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.last_seq())
                .await
                .map_err(|e| nats("reading the partition file", partition)(&e))??
                == owned.shipped_seq
        };
        if unchanged {
            if let Some(owned) = self.owned.get_mut(&partition) {
                owned.shipped_at = Instant::now();
            }
            return Ok(());
        }
        let Some(owned) = self.owned.get(&partition).copied() else {
            return Ok(());
        };
        let (revision, last_seq) = self.ship(partition, store, &owned).await?;
        if let Some(owned) = self.owned.get_mut(&partition) {
            owned.pointer_revision = revision;
            owned.shipped_at = Instant::now();
            owned.shipped_seq = last_seq;
        }
        Ok(())
    }

    /// Ships a partition's file: a new object, then the pointer moved to it
    /// by compare-and-set from the revision this member last wrote, then
    /// the previous object deleted. Returns the pointer's new revision and
    /// the sequence shipped.
    async fn ship(
        &self,
        partition: u32,
        store: Arc<PartitionStore>,
        owned: &Owned,
    ) -> Result<(u64, u64), ClusterError> {
        let (last_seq, bytes) = tokio::task::spawn_blocking(move || store.export())
            .await
            .map_err(|e| nats("exporting the partition file", partition)(&e))??;
        let name = format!("p{partition}-e{}-s{last_seq}", owned.epoch);
        let mut reader = bytes.as_slice();
        self.objects
            .put(name.as_str(), &mut reader)
            .await
            .map_err(|e| nats("storing the state", partition)(&e))?;
        let key = partition_key(partition);
        let previous = match self.pointers.get(&key).await {
            Ok(value) => value.and_then(|v| Pointer::decode(&v)),
            Err(e) => {
                tracing::warn!(partition, "cannot read the state pointer: {e}");
                None
            }
        };
        let pointer = Pointer {
            object: Some(name.clone()),
            last_seq,
            epoch: owned.epoch,
            member: self.settings.member_id.clone(),
        };
        let moved = match self
            .pointers
            .update(&key, pointer.encode(), owned.pointer_revision)
            .await
        {
            Ok(revision) => Ok(revision),
            // The update may have landed with its reply lost.
            Err(e) => match self.pointers.entry(&key).await {
                Ok(Some(entry)) if Pointer::decode(&entry.value).as_ref() == Some(&pointer) => {
                    Ok(entry.revision)
                }
                _ => Err(nats("moving the state pointer", partition)(&e)),
            },
        };
        let revision = match moved {
            Ok(revision) => revision,
            Err(e) => {
                // Nothing points at it: do not leave it behind.
                if let Err(e) = self.objects.delete(&name).await {
                    tracing::warn!(partition, "cannot delete an unused state object: {e}");
                }
                return Err(e);
            }
        };
        if let Some(old) = previous.and_then(|p| p.object).filter(|o| *o != name) {
            if let Err(e) = self.objects.delete(&old).await {
                tracing::warn!(partition, "cannot delete the previous state object: {e}");
            }
        }
        metrics::counter!(crate::telemetry::STATE_SHIPPED_BYTES).increment(bytes.len() as u64);
        Ok((revision, last_seq))
    }

    /// Notes every partition's watermark as its owner last reported it.
    async fn note_watermarks(&self, count: u32) {
        let Some(remote) = self.partitions.remote() else {
            return;
        };
        for partition in 0..count {
            match self.shared.leases.get(partition_key(partition)).await {
                Ok(Some(value)) => {
                    let lease = serde_json::from_slice::<Value>(&value).ok();
                    let field = |name: &str| lease.as_ref().and_then(|v| v.get(name).cloned());
                    if let Some(watermark) = field("watermark").and_then(|w| w.as_i64()) {
                        remote.set_watermark(partition, watermark);
                    }
                    let member = field("member").and_then(|m| m.as_str().map(str::to_string));
                    remote.set_owner(partition, member);
                }
                Ok(None) => remote.set_owner(partition, None),
                // Unknown this round: keep what was read last.
                Err(_) => {}
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
