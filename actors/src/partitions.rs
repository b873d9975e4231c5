//! [`Partitions`]: the one door into the pipeline from outside the crate.
//!
//! The REST gateway asks it for counts and top-N and for readiness; `serve`
//! and `rebuild` start partitions through it and drain them on the way out.
//! Nothing outside this crate builds an actor message or a reply port, so the
//! way a question reaches a partition can change (another process owning it,
//! in the multi-node work) without touching the gateway.
//!
//! Answers are exact or an error, never silently short: a partition that is
//! not ready, restarting, slow or unable to read its file turns into a
//! [`QueryError`] whose variant tells the caller what to answer (503 or 500).

use crate::click::AdId;
use crate::cluster::routing::{Question, Remote, Reply};
use crate::partition::directory::PartitionDirectory;
use crate::partition::{PartitionArgs, PartitionMsg, PartitionSupervisor};
use crate::reducer::top_n::top_n;
use crate::reducer::ReducerMsg;
use crate::settings::PipelineSettings;
use crate::store::{PartitionStore, StoreError};
use crate::tenure::Tenure;
use crate::time::event_clock::NO_WATERMARK;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

pub use crate::partition::directory::partition_of;
pub use crate::reducer::{Answer, CountQuery, TopQuery};

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The partition does not exist in this process.
    #[error("partition {partition} is not served here")]
    NotServed {
        /// The partition asked for.
        partition: u32,
    },
    /// Partitions are still loading their checkpoints.
    #[error("{} still recovering; retry shortly", name_partitions(.partitions))]
    NotReady {
        /// The partitions not ready yet.
        partitions: Vec<u32>,
    },
    /// The partition's chain failed while it was asked, and is being rebuilt.
    #[error("partition {partition} is restarting; retry shortly")]
    Restarting {
        /// The partition asked.
        partition: u32,
    },
    /// The partition did not answer in time.
    #[error("partition {partition} did not answer within {after:?}")]
    Timeout {
        /// The partition asked.
        partition: u32,
        /// The query timeout.
        after: Duration,
    },
    /// The partition could not read minutes from its file.
    #[error("partition {partition} could not read its data: {source}")]
    Storage {
        /// The partition asked.
        partition: u32,
        /// What the file said.
        source: StoreError,
    },
    /// The partition's owner (another member) could not read its data, or
    /// answered something unreadable.
    #[error("partition {partition} could not answer: {message}")]
    StorageElsewhere {
        /// The partition asked.
        partition: u32,
        /// What its owner said.
        message: String,
    },
}

fn name_partitions(partitions: &[u32]) -> String {
    let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
    match list.as_slice() {
        [one] => format!("partition {one} is"),
        _ => format!("partitions {} are", list.join(", ")),
    }
}

/// Why a partition could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its file could not be opened (the error names the file).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The partition number is not below the configured count.
    #[error("partition {partition} does not exist: `partitions` is {partitions}")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u32,
        /// The configured count.
        partitions: u32,
    },
    /// Its supervisor could not be spawned.
    #[error("cannot start partition {partition}: {message}")]
    Spawn {
        /// The partition.
        partition: u32,
        /// What ractor or tokio said.
        message: String,
    },
}

/// What an operator sees of one partition: the status page and
/// `adclick status` show one row of these per partition.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionStatus {
    /// The partition number.
    pub partition: u32,
    /// Whether this process runs it.
    pub runs_here: bool,
    /// In a cluster: the member holding its lease, as last read (`None`
    /// when nobody holds it, or outside a cluster).
    pub owner: Option<String>,
    /// Whether it answers queries here (recovered and consuming).
    pub ready: bool,
    /// Its watermark (`NO_WATERMARK` before its first click).
    pub watermark: i64,
    /// Rebuilds after a failure since this process started.
    pub restarts: u64,
    /// The stream sequence and time (epoch ms) of this process's latest
    /// commit of it.
    pub last_commit: Option<(u64, i64)>,
}

/// The partitions of the stream, as seen from the rest of the service.
pub struct Partitions {
    settings: Arc<PipelineSettings>,
    directory: PartitionDirectory,
    query_timeout: Duration,
    /// The partitions running in this process.
    running: Mutex<BTreeMap<u32, Running>>,
    /// In a cluster: how questions reach partitions owned elsewhere.
    remote: Option<Remote>,
}

/// A partition running in this process.
struct Running {
    supervisor: ActorRef<PartitionMsg>,
    store: Arc<PartitionStore>,
    tenure: Arc<Tenure>,
    /// Answers other members' questions for this partition (cluster only).
    answering: Option<tokio::task::JoinHandle<()>>,
}

impl Partitions {
    /// Every partition of `settings`, none started yet: one process owns
    /// them all (start each with [`Partitions::start`]).
    pub fn new(settings: Arc<PipelineSettings>, query_timeout: Duration) -> Partitions {
        Partitions {
            directory: PartitionDirectory::new(settings.partitions),
            settings,
            query_timeout,
            running: Mutex::default(),
            remote: None,
        }
    }

    /// Every partition of `settings`, shared with the other members of a
    /// cluster: partitions owned elsewhere are asked over `client`.
    pub fn clustered(
        settings: Arc<PipelineSettings>,
        query_timeout: Duration,
        client: async_nats::Client,
    ) -> Partitions {
        Partitions {
            remote: Some(Remote::new(client, settings.partitions)),
            ..Partitions::new(settings, query_timeout)
        }
    }

    /// The settings the partitions run with.
    pub fn settings(&self) -> &Arc<PipelineSettings> {
        &self.settings
    }

    /// How many partitions the stream has.
    pub fn len(&self) -> usize {
        self.directory.entries().len()
    }

    /// Whether there are none (never, for a valid configuration).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The partition that counts `ad`.
    pub fn partition_of(&self, ad: &AdId) -> u32 {
        partition_of(ad.as_str(), self.settings.partitions)
    }

    /// Opens partition `partition`'s file under `data_dir` (a damaged file
    /// stops here, named) and starts its supervisor, which builds the chain
    /// from the checkpoint and opens the partition to queries once loaded.
    pub async fn start(
        &self,
        js: &async_nats::jetstream::Context,
        data_dir: &Path,
        partition: u32,
    ) -> Result<(), StartError> {
        self.start_for(js, data_dir, partition, Arc::new(Tenure::forever()))
            .await
    }

    /// Like [`Partitions::start`], for the tenure of a lease (cluster).
    pub(crate) async fn start_for(
        &self,
        js: &async_nats::jetstream::Context,
        data_dir: &Path,
        partition: u32,
        tenure: Arc<Tenure>,
    ) -> Result<(), StartError> {
        let entry = self
            .directory
            .entry(partition)
            .ok_or(StartError::NoSuchPartition {
                partition,
                partitions: self.settings.partitions,
            })?
            .clone();
        let dir = data_dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || PartitionStore::open(&dir, partition))
            .await
            .map_err(|e| StartError::Spawn {
                partition,
                message: format!("opening the file panicked: {e}"),
            })??;
        let store = Arc::new(store);
        let args = PartitionArgs {
            partition,
            settings: self.settings.clone(),
            js: js.clone(),
            store: store.clone(),
            tenure: tenure.clone(),
            entry: entry.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, PartitionSupervisor, args)
            .await
            .map_err(|e| StartError::Spawn {
                partition,
                message: e.to_string(),
            })?;
        let answering = self
            .remote
            .as_ref()
            .map(|remote| remote.answer(partition, entry, self.query_timeout));
        let running = Running {
            supervisor,
            store,
            tenure,
            answering,
        };
        self.lock_running().insert(partition, running);
        Ok(())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partitions running in this process.
    pub fn running(&self) -> Vec<u32> {
        self.lock_running().keys().copied().collect()
    }

    /// Stops consuming on every partition running here, then commits and
    /// acks what was consumed. Returns whether every partition committed
    /// within `timeout` (if not, the next start replays the rest: nothing is
    /// lost). Queries are still answered; [`Partitions::stop`] ends them.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = self.running();
        self.drain_some(&all, timeout).await
    }

    /// [`Partitions::drain`] for some partitions.
    pub(crate) async fn drain_some(&self, partitions: &[u32], timeout: Duration) -> bool {
        let mut waits = Vec::new();
        let mut all_asked = true;
        for supervisor in self.supervisors(partitions) {
            let (done, wait) = oneshot::channel();
            match supervisor.cast(PartitionMsg::Drain(done)) {
                Ok(()) => waits.push(wait),
                // A supervisor that is gone commits nothing.
                Err(_) => all_asked = false,
            }
        }
        let all = futures::future::join_all(waits);
        // A drain whose chain failed drops its sender: that is not a commit.
        let committed = tokio::time::timeout(timeout, all)
            .await
            .is_ok_and(|results| results.iter().all(Result::is_ok));
        all_asked && committed
    }

    /// Stops every partition running here (after [`Partitions::drain`], or a
    /// restart replays what was not committed).
    pub async fn stop(&self) {
        let all = self.running();
        for partition in all {
            self.stop_one(partition).await;
        }
    }

    /// Stops one partition and waits until its actors are gone (its file is
    /// closed then); it no longer answers, and its tenure ends.
    pub(crate) async fn stop_one(&self, partition: u32) {
        let Some(running) = self.lock_running().remove(&partition) else {
            return;
        };
        running.tenure.end();
        if let Some(entry) = self.directory.entry(partition) {
            entry.set_reducer(None);
        }
        if let Some(answering) = running.answering {
            answering.abort();
        }
        let wait = Some(Duration::from_secs(10));
        if running.supervisor.stop_and_wait(None, wait).await.is_err() {
            // Stuck in a build: kill drops it, so it cannot publish a chain
            // into the entry after this.
            let _ = running.supervisor.kill_and_wait(wait).await;
        }
        if let Some(entry) = self.directory.entry(partition) {
            entry.set_reducer(None);
        }
        drop(running.store);
    }

    /// The file of a partition running here (to ship its state).
    pub(crate) fn store(&self, partition: u32) -> Option<Arc<PartitionStore>> {
        self.lock_running().get(&partition).map(|r| r.store.clone())
    }

    fn supervisors(&self, partitions: &[u32]) -> Vec<ActorRef<PartitionMsg>> {
        let running = self.lock_running();
        partitions
            .iter()
            .filter_map(|p| running.get(p).map(|r| r.supervisor.clone()))
            .collect()
    }

    /// The remote side, in a cluster.
    pub(crate) fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// The watermark of `partition` (`NO_WATERMARK` before its first click):
    /// as this process last saw it, or as its owner last reported it.
    pub fn watermark(&self, partition: u32) -> Result<i64, QueryError> {
        let entry = self
            .directory
            .entry(partition)
            .ok_or(QueryError::NotServed { partition })?;
        let reported = self.remote.as_ref().map(|r| r.watermark(partition));
        Ok(entry.watermark().max(reported.unwrap_or(NO_WATERMARK)))
    }

    fn watermarks(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.settings.partitions).filter_map(|p| self.watermark(p).ok())
    }

    /// The slowest partition's watermark: what every partition has passed.
    pub fn slowest_watermark(&self) -> i64 {
        self.watermarks().min().unwrap_or(NO_WATERMARK)
    }

    /// The fastest partition's watermark.
    pub fn newest_watermark(&self) -> i64 {
        self.watermarks().max().unwrap_or(NO_WATERMARK)
    }

    /// Every partition's status, in partition order.
    pub fn status(&self) -> Vec<PartitionStatus> {
        let running = self.lock_running();
        self.directory
            .entries()
            .iter()
            .map(|entry| {
                let p = entry.partition;
                let here = running.get(&p);
                PartitionStatus {
                    partition: p,
                    runs_here: here.is_some(),
                    owner: self.remote.as_ref().and_then(|r| r.owner(p)),
                    ready: entry.is_ready(),
                    watermark: self.watermark(p).unwrap_or(NO_WATERMARK),
                    restarts: entry.restarts(),
                    last_commit: here.and_then(|r| r.store.last_commit().get()),
                }
            })
            .collect()
    }

    /// Whether `partition` has loaded its checkpoint here and consumes.
    pub fn is_ready(&self, partition: u32) -> bool {
        self.directory
            .entry(partition)
            .is_some_and(|entry| entry.is_ready())
    }

    /// The partitions this process serves that are not ready yet, in order:
    /// every partition when one process owns them all; in a cluster, those
    /// this member runs or should run ([`Partitions::set_assigned`]).
    pub fn not_ready(&self) -> Vec<u32> {
        let mine: Vec<u32> = match &self.remote {
            None => (0..self.settings.partitions).collect(),
            Some(remote) => remote.assigned(),
        };
        mine.into_iter().filter(|p| !self.is_ready(*p)).collect()
    }

    /// In a cluster: the partitions this member should own now.
    pub(crate) fn set_assigned(&self, partitions: Vec<u32>) {
        if let Some(remote) = &self.remote {
            remote.set_assigned(partitions);
        }
    }

    /// Clicks of one ad in a range, answered by the ad's partition (here, or
    /// its owner), with that partition's watermark.
    pub async fn count(&self, query: CountQuery) -> Result<Answer<u64>, QueryError> {
        let partition = self.partition_of(&query.ad);
        match self.route(partition, Question::Count(query)).await? {
            Reply::Count(answer) => Ok(answer),
            Reply::Top(_) => Err(QueryError::Restarting { partition }),
        }
    }

    /// Asks `partition` here if it runs here, else its owner (cluster).
    async fn route(&self, partition: u32, question: Question) -> Result<Reply, QueryError> {
        match (self.reducer(partition), &self.remote) {
            (Ok(reducer), _) => match question {
                Question::Count(q) => self
                    .ask(&reducer, partition, |reply| ReducerMsg::Count(q, reply))
                    .await
                    .map(Reply::Count),
                Question::Top(q) => self
                    .ask(&reducer, partition, |reply| ReducerMsg::Top(q, reply))
                    .await
                    .map(Reply::Top),
            },
            (Err(_), Some(remote)) => remote.ask(partition, question, self.query_timeout).await,
            (Err(e), None) => Err(e),
        }
    }

    /// The exact top `query.n` ads of the range over every partition, with the
    /// slowest answering partition's watermark. All clicks of an ad are in one
    /// partition, so the partitions' exact top-N lists merge into the exact
    /// global top-N. Fails unless every partition answers.
    pub async fn top(&self, query: TopQuery) -> Result<Answer<Vec<(AdId, u64)>>, QueryError> {
        // In a cluster each partition's owner says for itself (below).
        let not_ready = match self.remote {
            None => self.not_ready(),
            Some(_) => Vec::new(),
        };
        if !not_ready.is_empty() {
            return Err(QueryError::NotReady {
                partitions: not_ready,
            });
        }
        let asks = (0..self.settings.partitions).map(|p| self.top_of(p, query.clone()));
        let mut merged = Vec::new();
        let mut watermark = i64::MAX;
        let mut reconciled = false;
        for answer in futures::future::join_all(asks).await {
            let answer = answer?;
            watermark = watermark.min(answer.watermark);
            reconciled |= answer.reconciled;
            merged.extend(answer.value);
        }
        Ok(Answer {
            value: top_n(merged, query.n),
            reconciled,
            watermark: if watermark == i64::MAX {
                NO_WATERMARK
            } else {
                watermark
            },
        })
    }

    /// One partition's top-N (here, or from its owner).
    async fn top_of(
        &self,
        partition: u32,
        query: TopQuery,
    ) -> Result<Answer<Vec<(AdId, u64)>>, QueryError> {
        match self.route(partition, Question::Top(query)).await? {
            Reply::Top(answer) => Ok(answer),
            Reply::Count(_) => Err(QueryError::Restarting { partition }),
        }
    }

    fn reducer(&self, partition: u32) -> Result<ActorRef<ReducerMsg>, QueryError> {
        let entry = self
            .directory
            .entry(partition)
            .ok_or(QueryError::NotServed { partition })?;
        entry.reducer().ok_or(QueryError::NotReady {
            partitions: vec![partition],
        })
    }

    async fn ask<T: Send + 'static>(
        &self,
        reducer: &ActorRef<ReducerMsg>,
        partition: u32,
        make: impl FnOnce(RpcReplyPort<Result<Answer<T>, StoreError>>) -> ReducerMsg,
    ) -> Result<Answer<T>, QueryError> {
        ask_reducer(reducer, partition, self.query_timeout, make).await
    }
}

/// Asks a partition's reducer, waiting at most `timeout`.
pub(crate) async fn ask_reducer<T: Send + 'static>(
    reducer: &ActorRef<ReducerMsg>,
    partition: u32,
    timeout: Duration,
    make: impl FnOnce(RpcReplyPort<Result<Answer<T>, StoreError>>) -> ReducerMsg,
) -> Result<Answer<T>, QueryError> {
    match reducer.call(make, Some(timeout)).await {
        Ok(CallResult::Success(answer)) => {
            answer.map_err(|source| QueryError::Storage { partition, source })
        }
        Ok(CallResult::Timeout) => Err(QueryError::Timeout {
            partition,
            after: timeout,
        }),
        Ok(CallResult::SenderError) | Err(_) => Err(QueryError::Restarting { partition }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_names_one_partition_or_several() {
        let one = QueryError::NotReady {
            partitions: vec![3],
        };
        assert_eq!(
            one.to_string(),
            "partition 3 is still recovering; retry shortly"
        );
        let two = QueryError::NotReady {
            partitions: vec![1, 4],
        };
        assert_eq!(
            two.to_string(),
            "partitions 1, 4 are still recovering; retry shortly"
        );
    }

    #[tokio::test]
    async fn a_partition_not_started_is_not_ready_never_empty() {
        let settings = Arc::new(PipelineSettings::with_defaults(2));
        let partitions = Partitions::new(settings, Duration::from_millis(50));
        assert_eq!(partitions.not_ready(), vec![0, 1]);
        let query = CountQuery {
            ad: AdId::parse("ad-1").unwrap(),
            filter: crate::click::FilterQuery::default(),
            from: 0,
            to: 60_000,
        };
        let asked = partitions.count(query).await;
        assert!(
            matches!(asked, Err(QueryError::NotReady { .. })),
            "{asked:?}"
        );
        let top = TopQuery {
            filter: crate::click::FilterQuery::default(),
            from: 0,
            to: 60_000,
            n: 3,
        };
        let asked = partitions.top(top).await;
        let Err(QueryError::NotReady {
            partitions: missing,
        }) = asked
        else {
            panic!("{asked:?}");
        };
        assert_eq!(missing, vec![0, 1]);
        // Draining nothing that runs commits nothing, and says so truthfully.
        assert!(partitions.drain(Duration::from_millis(10)).await);
    }
}
