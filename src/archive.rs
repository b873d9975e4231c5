//! The raw archive (issue 16): every message the `CLICKS` stream holds, and
//! every message of `CLICKS_REJECTED` with its reason, in hourly Parquet
//! files, exactly once. DuckDB, Spark or `adclick reconcile` read them;
//! docs/ARCHIVE.md is the operator's page.
//!
//! # Layout
//!
//! Under the archive root (`archive_url`), two datasets and two folders of
//! bookkeeping:
//!
//! ```text
//! clicks/dt=2026-12-07/hour=08/part-<first seq:020>-<last seq:020>.parquet
//! rejects/dt=2026-12-07/hour=08/part-….parquet
//! _manifests/clicks/<range start:020>.json      the commit points
//! _manifests/rejects/…
//! _staging/clicks/<start:020>-<end:020>/…       files written, not yet committed
//! ```
//!
//! A row's hour is the **event hour** of its `ts` when the payload has one
//! (an integer `ts` from 0 to the end of year 9999, see
//! [`parquet_file::Fields`]), so a recount of a time range reads only the
//! hours it needs; else the hour JetStream received it. The columns are in
//! [`parquet_file`]; the `dt` and `hour` of the path are Hive-style
//! partitions (`read_parquet('<root>/clicks/**/*.parquet',
//! hive_partitioning = true)`).
//!
//! # Exactly once
//!
//! Each dataset is archived from its stream in contiguous ranges of stream
//! sequences, and the archive itself is the checkpoint (no consumer state,
//! no acks). A flush of the range `[a, b]`:
//!
//! 1. writes its files (one per event hour the range touches) under
//!    `_staging/<dataset>/<a>-<b>/`;
//! 2. writes the manifest `_manifests/<dataset>/<a>.json` (the range, every
//!    file with its rows, hour and sequences, the time) with
//!    `PutMode::Create`: **this is the commit**. The manifest is named by the
//!    range's start alone, so two archivers that both resume from `a` cannot
//!    both commit: the second gets [`ArchiveError::Conflict`] and starts over
//!    from what the first committed;
//! 3. moves the staged files into place (a rename on a file system);
//! 4. removes the staging folder.
//!
//! At start, [`layout::recover`] finishes step 3 for every manifest whose
//! staged files remain (idempotent: a file already moved is left alone),
//! deletes every staging folder without its manifest (a flush that never
//! committed), deletes any data file no manifest lists (one whose manifest
//! entry retention removed before the crash that stopped it deleting the
//! file), and resumes the stream after the highest committed sequence.
//!
//! # What a reader sees after a crash
//!
//! Never a partial file (each object appears whole, by a rename) and never
//! a message twice. A reader that lists through the manifests
//! ([`Archive::manifests`], [`read_range`]) sees every committed range, even
//! one whose files were still staged when the archiver died (it reads them
//! from staging). A reader that globs the dataset folders sees every
//! committed file that was moved: after a crash between the commit and the
//! moves, a range may be missing until the archiver starts again — it is
//! never half there, file by file.
//!
//! # Retention
//!
//! `archive_retention` (30 days by default): the archiver deletes a file
//! once both its hour and its manifest's creation are older than that, after
//! removing it from the manifest (a manifest left with no files is deleted,
//! unless it is the newest: that one holds the resume point).
//!
//! # Stores
//!
//! Everything goes through `Arc<dyn ObjectStore>` and a prefix; this build
//! has `object_store`'s local file system only (`archive_url` a path or a
//! `file://` URL). S3, GCS and Azure are `object_store` cargo features
//! (`aws`, `gcp`, `azure`) and a scheme in [`Archive::open`] away; on them the
//! move is a copy and a delete, still after the commit, so still exactly once.

pub mod archiver;
pub mod layout;
pub mod parquet_file;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use layout::{Manifest, ManifestFile};

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The two datasets of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// Every message of the `CLICKS` stream, valid or not.
    Clicks,
    /// Every message of the `CLICKS_REJECTED` stream, with its reason.
    Rejects,
}

impl Dataset {
    /// Both datasets.
    pub const ALL: [Dataset; 2] = [Dataset::Clicks, Dataset::Rejects];

    /// The dataset's folder name (and metric label): `clicks` or `rejects`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Clicks => "clicks",
            Dataset::Rejects => "rejects",
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong with the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// `archive_url` (or the URL given to [`Archive::open`]) cannot be used.
    #[error("archive_url `{url}`: {problem}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The object store refused or failed an operation.
    #[error("archive store, {what} {path}: {source}")]
    Store {
        /// The operation (`put`, `get`, `list`, …).
        what: &'static str,
        /// The object or prefix.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A Parquet file could not be written or read.
    #[error("Parquet file {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The parquet crate's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Parquet file lacks what it must hold (a column, a type).
    #[error("Parquet file {path}: {problem}")]
    Format {
        /// The file.
        path: String,
        /// What is missing or wrong.
        problem: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest is unreadable.
    #[error("manifest {path}: {problem}")]
    Manifest {
        /// The manifest.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A manifest lists a file that is neither staged nor in place.
    #[error(
        "manifest {manifest} lists {file}, which is neither in place nor staged (deleted by hand?)"
    )]
    Missing {
        /// The manifest.
        manifest: String,
        /// The file.
        file: String,
    },
    /// Another archiver committed a range starting at the same sequence.
    #[error("another archiver committed {dataset} from sequence {first_seq} first; run one archiver per archive (`adclick archive` as a one-replica Deployment)")]
    Conflict {
        /// The dataset.
        dataset: Dataset,
        /// The start of the range.
        first_seq: u64,
    },
    /// Reading the stream failed.
    #[error("stream {stream}: {problem}")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        problem: String,
    },
    /// A background task failed (a panic while encoding a file).
    #[error("archive task failed: {0}")]
    Task(String),
}

impl ArchiveError {
    fn store(what: &'static str, path: &StorePath, source: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            what,
            path: path.to_string(),
            source,
        }
    }
}

/// The archive settings of the configuration (`archive*` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// `archive`: whether `adclick serve` runs the archiver.
    pub enabled: bool,
    /// `archive_url`: the archive's root, a path or a `file://` URL.
    pub url: String,
    /// `archive_flush_interval`: the longest a message waits in memory.
    pub flush_interval: Duration,
    /// `archive_max_rows`: a flush happens once this many messages wait.
    pub max_rows: usize,
    /// `archive_retention`: files older than this (hour and write) are deleted.
    pub retention: Duration,
}

/// The schemes this build's `archive_url` accepts.
pub const SUPPORTED_SCHEMES: &str = "a plain path or a file:// URL";

/// The local directory an `archive_url` names: a plain path, or a `file://`
/// URL (`file:///var/lib/adclick/archive`). Any other scheme is refused with
/// the schemes this build supports.
pub fn parse_archive_url(url: &str) -> Result<PathBuf, String> {
    let text = url.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        let is_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            if !scheme.eq_ignore_ascii_case("file") {
                return Err(format!(
                    "scheme `{scheme}` is not supported by this build, which takes {SUPPORTED_SCHEMES} \
                     (S3, GCS and Azure are object_store cargo features, see docs/ARCHIVE.md)"
                ));
            }
            // file:///abs/path, or file://localhost/abs/path.
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(format!(
                    "a file:// URL names an absolute path (file:///var/lib/adclick/archive), got `{text}`"
                ));
            }
            return Ok(PathBuf::from(path));
        }
    }
    Ok(PathBuf::from(text))
}

/// An archive: an object store and the prefix of the archive's root in it.
#[derive(Clone, Debug)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// The root on the local file system, when the store is one (to remove
    /// what the store cannot list: a crashed put's temporary file).
    local_root: Option<PathBuf>,
    location: String,
}

impl Archive {
    /// Opens the archive at `url` (the `archive_url` value: a path or a
    /// `file://` URL), creating its root directory if missing: an archive
    /// never written is empty.
    pub fn open(url: &str) -> Result<Archive, ArchiveError> {
        let bad = |problem: String| ArchiveError::Url {
            url: url.to_string(),
            problem,
        };
        let root = parse_archive_url(url).map_err(bad)?;
        std::fs::create_dir_all(&root).map_err(|source| ArchiveError::Io {
            path: root.clone(),
            source,
        })?;
        let root = std::fs::canonicalize(&root).map_err(|source| ArchiveError::Io {
            path: root.clone(),
            source,
        })?;
        // Empty directories go with their last file (staging folders, pruned
        // hours), never above the root.
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| bad(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Archive {
            store: Arc::new(store),
            prefix: StorePath::default(),
            location: root.display().to_string(),
            local_root: Some(root),
        })
    }

    /// An archive in any object store, under `prefix` (e.g. an S3 bucket's
    /// store and `adclick/archive`); `location` names it in messages.
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: StorePath, location: String) -> Archive {
        Archive {
            store,
            prefix,
            local_root: None,
            location,
        }
    }

    /// Where the archive is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The store path of `relative` (`/`-separated) under the root.
    pub(crate) fn path(&self, relative: &str) -> StorePath {
        self.prefix
            .parts()
            .chain(StorePath::from(relative).parts())
            .collect()
    }

    /// `location` relative to the root, `/`-separated.
    pub(crate) fn relative(&self, location: &StorePath) -> Option<String> {
        let parts: Vec<String> = location
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }

    /// Every object under `relative_prefix`, as paths relative to the root.
    pub(crate) async fn list(&self, relative_prefix: &str) -> Result<Vec<String>, ArchiveError> {
        Ok(self
            .list_modified(relative_prefix)
            .await?
            .into_iter()
            .map(|(path, _)| path)
            .collect())
    }

    /// Every object under `relative_prefix`, as paths relative to the root,
    /// with when each was last written (epoch ms), in path order.
    pub(crate) async fn list_modified(
        &self,
        relative_prefix: &str,
    ) -> Result<Vec<(String, i64)>, ArchiveError> {
        let prefix = self.path(relative_prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| ArchiveError::store("list", &prefix, e))?;
        let mut out: Vec<(String, i64)> = metas
            .iter()
            .filter_map(|m| {
                Some((
                    self.relative(&m.location)?,
                    m.last_modified.timestamp_millis(),
                ))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The bytes of `relative`, or `None` when there is no such object.
    pub(crate) async fn get(&self, relative: &str) -> Result<Option<Bytes>, ArchiveError> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|e| ArchiveError::store("get", &path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store("get", &path, e)),
        }
    }

    /// Writes `bytes` to `relative`, replacing any object there.
    pub(crate) async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), ArchiveError> {
        let path = self.path(relative);
        self.store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| ArchiveError::store("put", &path, e))
    }

    /// Writes `bytes` to `relative` only if nothing is there: `false` if
    /// something was.
    pub(crate) async fn create(&self, relative: &str, bytes: Bytes) -> Result<bool, ArchiveError> {
        let path = self.path(relative);
        let options = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self.store.put_opts(&path, bytes.into(), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(ArchiveError::store("create", &path, e)),
        }
    }

    /// Moves `from` to `to`: `false` if `from` does not exist.
    pub(crate) async fn rename(&self, from: &str, to: &str) -> Result<bool, ArchiveError> {
        let (from, to) = (self.path(from), self.path(to));
        match self.store.rename(&from, &to).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ArchiveError::store("rename", &from, e)),
        }
    }

    /// Deletes `relative`; nothing there is fine.
    pub(crate) async fn delete(&self, relative: &str) -> Result<(), ArchiveError> {
        let path = self.path(relative);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ArchiveError::store("delete", &path, e)),
        }
    }

    /// Whether `relative` exists.
    pub(crate) async fn exists(&self, relative: &str) -> Result<bool, ArchiveError> {
        let path = self.path(relative);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ArchiveError::store("head", &path, e)),
        }
    }

    /// Removes a local folder whole (what a store cannot list, e.g. the
    /// temporary file of a put a crash interrupted); nothing on other stores.
    pub(crate) fn remove_local_dir(&self, relative: &str) {
        if let Some(root) = &self.local_root {
            let _ = std::fs::remove_dir_all(root.join(relative));
        }
    }

    /// Every committed manifest of `dataset`, in sequence order: the list
    /// of committed files a reader should use (a glob may miss a range
    /// whose files a crash left staged).
    pub async fn manifests(&self, dataset: Dataset) -> Result<Vec<Manifest>, ArchiveError> {
        layout::read_manifests(self, dataset).await
    }

    /// The highest stream sequence committed for `dataset` (0 if none).
    pub async fn archived_through(&self, dataset: Dataset) -> Result<u64, ArchiveError> {
        Ok(layout::read_manifests(self, dataset)
            .await?
            .last()
            .map_or(0, |m| m.last_seq))
    }
}

/// One archived message.
pub struct ArchivedMessage<'a> {
    /// Its stream sequence (in `CLICKS` or `CLICKS_REJECTED`).
    pub seq: u64,
    /// When JetStream stored it, epoch ms.
    pub received_ms: i64,
    /// Its subject (`clicks.p.<partition>.<ad_id>`, or `rejected.<reason>`).
    pub subject: &'a str,
    /// The raw payload.
    pub payload: &'a [u8],
    /// For rejects: the `Adclick-Reject-Reason` header (`None` for clicks).
    pub reason: Option<&'a str>,
}

/// What a range read covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeRead {
    /// Files read.
    pub files: usize,
    /// Messages given to the callback.
    pub messages: u64,
    /// The highest committed sequence of the dataset, 0 if none.
    pub archived_through: u64,
}

/// Every archived message of `dataset` whose hour directory overlaps
/// `[from_ms, to_ms)`, in seq order within a file (files in manifest order:
/// by range, then hour). Files are listed through the manifests, so a
/// committed file a crash left staged is read from staging. A message's
/// hour is its event hour when its payload has a `ts` (see the module doc):
/// filter on the payload's `ts` for an exact range.
pub async fn read_range(
    archive: &Archive,
    dataset: Dataset,
    from_ms: i64,
    to_ms: i64,
    mut each: impl FnMut(ArchivedMessage<'_>),
) -> Result<RangeRead, ArchiveError> {
    let manifests = archive.manifests(dataset).await?;
    let mut read = RangeRead {
        archived_through: manifests.last().map_or(0, |m| m.last_seq),
        ..RangeRead::default()
    };
    for manifest in &manifests {
        for file in &manifest.files {
            if file.hour_ms >= to_ms || file.hour_ms + HOUR_MS <= from_ms {
                continue;
            }
            let bytes = layout::read_committed_file(archive, manifest, file).await?;
            let name = layout::data_path(dataset, &file.path);
            read.messages += parquet_file::read_messages(bytes, &name, dataset, &mut each)?;
            read.files += 1;
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_urls() {
        assert_eq!(
            parse_archive_url("./archive").unwrap(),
            PathBuf::from("./archive")
        );
        assert_eq!(
            parse_archive_url("file:///var/lib/a").unwrap(),
            PathBuf::from("/var/lib/a")
        );
        assert_eq!(
            parse_archive_url("file://localhost/var/lib/a").unwrap(),
            PathBuf::from("/var/lib/a")
        );
        let s3 = parse_archive_url("s3://bucket/archive").unwrap_err();
        assert!(s3.contains("`s3` is not supported"), "{s3}");
        assert!(s3.contains("file://"), "{s3}");
        assert!(parse_archive_url("file://relative").is_err());
        assert!(parse_archive_url(" ").is_err());
    }
}
