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
use crate::partition::directory::PartitionDirectory;
use crate::partition::{PartitionArgs, PartitionMsg, PartitionSupervisor};
use crate::reducer::top_n::top_n;
use crate::reducer::ReducerMsg;
use crate::settings::PipelineSettings;
use crate::store::{PartitionStore, StoreError};
use crate::time::event_clock::NO_WATERMARK;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
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

/// The partitions of the stream, as seen from the rest of the service.
pub struct Partitions {
    settings: Arc<PipelineSettings>,
    directory: PartitionDirectory,
    query_timeout: Duration,
    /// The supervisors started here, to drain and stop.
    supervisors: Mutex<Vec<ActorRef<PartitionMsg>>>,
}

impl Partitions {
    /// Every partition of `settings`, none started yet.
    pub fn new(settings: Arc<PipelineSettings>, query_timeout: Duration) -> Partitions {
        Partitions {
            directory: PartitionDirectory::new(settings.partitions),
            settings,
            query_timeout,
            supervisors: Mutex::default(),
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
        let args = PartitionArgs {
            partition,
            settings: self.settings.clone(),
            js: js.clone(),
            store: Arc::new(store),
            entry,
        };
        let (supervisor, _) = Actor::spawn(None, PartitionSupervisor, args)
            .await
            .map_err(|e| StartError::Spawn {
                partition,
                message: e.to_string(),
            })?;
        match self.supervisors.lock() {
            Ok(mut supervisors) => supervisors.push(supervisor),
            Err(poisoned) => poisoned.into_inner().push(supervisor),
        }
        Ok(())
    }

    /// Stops consuming on every partition started here, then commits and acks
    /// what was consumed. Returns whether every partition committed within
    /// `timeout` (if not, the next start replays the rest: nothing is lost).
    /// Queries are still answered; [`Partitions::stop`] ends the partitions.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let mut waits = Vec::new();
        for supervisor in self.started() {
            let (done, wait) = oneshot::channel();
            if supervisor.cast(PartitionMsg::Drain(done)).is_ok() {
                waits.push(wait);
            }
        }
        let all = futures::future::join_all(waits);
        // A drain whose chain failed drops its sender: that is not a commit.
        tokio::time::timeout(timeout, all)
            .await
            .is_ok_and(|results| results.iter().all(Result::is_ok))
    }

    /// Stops every partition started here (after [`Partitions::drain`], or a
    /// restart replays what was not committed).
    pub fn stop(&self) {
        for supervisor in self.started() {
            supervisor.stop(None);
        }
    }

    fn started(&self) -> Vec<ActorRef<PartitionMsg>> {
        match self.supervisors.lock() {
            Ok(supervisors) => supervisors.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The watermark of `partition` (`NO_WATERMARK` before its first click).
    pub fn watermark(&self, partition: u32) -> Result<i64, QueryError> {
        self.directory
            .entry(partition)
            .map(|entry| entry.watermark())
            .ok_or(QueryError::NotServed { partition })
    }

    /// The slowest partition's watermark: what every partition has passed.
    pub fn slowest_watermark(&self) -> i64 {
        let entries = self.directory.entries().iter();
        entries.map(|s| s.watermark()).min().unwrap_or(NO_WATERMARK)
    }

    /// The fastest partition's watermark.
    pub fn newest_watermark(&self) -> i64 {
        let entries = self.directory.entries().iter();
        entries.map(|s| s.watermark()).max().unwrap_or(NO_WATERMARK)
    }

    /// Whether `partition` has loaded its checkpoint and consumes.
    pub fn is_ready(&self, partition: u32) -> bool {
        self.directory
            .entry(partition)
            .is_some_and(|entry| entry.is_ready())
    }

    /// The partitions not ready yet, in order.
    pub fn not_ready(&self) -> Vec<u32> {
        let entries = self.directory.entries().iter();
        entries
            .filter(|s| !s.is_ready())
            .map(|s| s.partition)
            .collect()
    }

    /// Clicks of one ad in a range, answered by the ad's partition, with that
    /// partition's watermark.
    pub async fn count(&self, query: CountQuery) -> Result<Answer<u64>, QueryError> {
        let partition = self.partition_of(&query.ad);
        let reducer = self.reducer(partition)?;
        self.ask(&reducer, partition, |reply| ReducerMsg::Count(query, reply))
            .await
    }

    /// The exact top `query.n` ads of the range over every partition, with the
    /// slowest answering partition's watermark. All clicks of an ad are in one
    /// partition, so the partitions' exact top-N lists merge into the exact
    /// global top-N. Fails unless every partition answers.
    pub async fn top(&self, query: TopQuery) -> Result<Answer<Vec<(AdId, u64)>>, QueryError> {
        let not_ready = self.not_ready();
        if !not_ready.is_empty() {
            return Err(QueryError::NotReady {
                partitions: not_ready,
            });
        }
        let mut asks = Vec::new();
        for entry in self.directory.entries() {
            let reducer = self.reducer(entry.partition)?;
            let query = query.clone();
            asks.push(async move {
                self.ask(&reducer, entry.partition, |reply| {
                    ReducerMsg::Top(query, reply)
                })
                .await
            });
        }
        let mut merged = Vec::new();
        let mut watermark = i64::MAX;
        for answer in futures::future::join_all(asks).await {
            let answer = answer?;
            watermark = watermark.min(answer.watermark);
            merged.extend(answer.value);
        }
        Ok(Answer {
            value: top_n(merged, query.n),
            watermark: if watermark == i64::MAX {
                NO_WATERMARK
            } else {
                watermark
            },
        })
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
        match reducer.call(make, Some(self.query_timeout)).await {
            Ok(CallResult::Success(answer)) => {
                answer.map_err(|source| QueryError::Storage { partition, source })
            }
            Ok(CallResult::Timeout) => Err(QueryError::Timeout {
                partition,
                after: self.query_timeout,
            }),
            Ok(CallResult::SenderError) | Err(_) => Err(QueryError::Restarting { partition }),
        }
    }
}
