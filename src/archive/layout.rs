//! Where the archive's objects are (Hive paths, staging, manifests), and the
//! steps of the exactly-once protocol on them: [`commit`] a flush,
//! [`recover`] at start, [`prune`] for retention. The module doc of
//! [`crate::archive`] tells the protocol; each step here says which part.

use super::{Archive, ArchiveError, Dataset, HOUR_MS};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The manifests' format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// A committed range of one dataset: the commit point of a flush.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// `clicks` or `rejects`.
    pub dataset: String,
    /// The first stream sequence of the range.
    pub first_seq: u64,
    /// The last stream sequence of the range (every message of the stream
    /// in `[first_seq, last_seq]` is in the files, once).
    pub last_seq: u64,
    /// When it was committed, epoch ms.
    pub created_ms: i64,
    /// The files, by hour.
    pub files: Vec<ManifestFile>,
}

/// One file of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the dataset's folder: `dt=YYYY-MM-DD/hour=HH/part-….parquet`.
    pub path: String,
    /// The hour of its rows, epoch ms of its start.
    pub hour_ms: i64,
    /// Rows (messages) in it.
    pub rows: u64,
    /// Its first and last stream sequences.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A file a flush writes: where (relative to the dataset's folder) and what.
#[derive(Clone, Debug)]
pub struct StagedFile {
    /// What the manifest will say of it.
    pub entry: ManifestFile,
    /// The Parquet bytes.
    pub bytes: Bytes,
}

/// `(year, month, day)` of a day counted from 1970-01-01 (the proleptic
/// Gregorian calendar, as `dt=` folders and SQL dates read it).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The hour (epoch ms of its start) of an epoch ms.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// `dt=YYYY-MM-DD/hour=HH` of the hour starting at `hour_ms`.
pub fn hour_dir(hour_ms: i64) -> String {
    let days = hour_ms.div_euclid(86_400_000);
    let hour = hour_ms.rem_euclid(86_400_000) / HOUR_MS;
    let (y, m, d) = civil_from_days(days);
    format!("dt={y:04}-{m:02}-{d:02}/hour={hour:02}")
}

/// `dt=…/hour=…/part-<first:020>-<last:020>.parquet`, relative to the dataset.
pub fn file_path(hour_ms: i64, first_seq: u64, last_seq: u64) -> String {
    format!(
        "{}/part-{first_seq:020}-{last_seq:020}.parquet",
        hour_dir(hour_ms)
    )
}

/// A file's place relative to the archive root: `<dataset>/<path>`.
pub fn data_path(dataset: Dataset, path: &str) -> String {
    format!("{}/{path}", dataset.name())
}

/// The staging folder of the range `[first_seq, last_seq]`.
pub fn staging_dir(dataset: Dataset, first_seq: u64, last_seq: u64) -> String {
    format!("_staging/{}/{first_seq:020}-{last_seq:020}", dataset.name())
}

/// The folder of a dataset's manifests.
pub fn manifest_dir(dataset: Dataset) -> String {
    format!("_manifests/{}", dataset.name())
}

/// The manifest of the range starting at `first_seq` (named by the start
/// alone, so a second commit of the same start is refused).
pub fn manifest_path(dataset: Dataset, first_seq: u64) -> String {
    format!("{}/{first_seq:020}.json", manifest_dir(dataset))
}

/// Every manifest of `dataset`, in sequence order.
pub async fn read_manifests(
    archive: &Archive,
    dataset: Dataset,
) -> Result<Vec<Manifest>, ArchiveError> {
    let mut out = Vec::new();
    for path in archive.list(&manifest_dir(dataset)).await? {
        if !path.ends_with(".json") {
            continue;
        }
        let Some(bytes) = archive.get(&path).await? else {
            continue; // deleted by retention meanwhile
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Manifest {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(ArchiveError::Manifest {
                path,
                problem: format!(
                    "format {} is newer than this adclick reads ({MANIFEST_FORMAT})",
                    manifest.format
                ),
            });
        }
        out.push(manifest);
    }
    out.sort_by_key(|m| m.first_seq);
    Ok(out)
}

/// The bytes of a committed file: in place, or still staged (a crash
/// between the commit and the move).
pub async fn read_committed_file(
    archive: &Archive,
    manifest: &Manifest,
    file: &ManifestFile,
) -> Result<Bytes, ArchiveError> {
    let dataset = dataset_of(manifest)?;
    let in_place = data_path(dataset, &file.path);
    if let Some(bytes) = archive.get(&in_place).await? {
        return Ok(bytes);
    }
    let staged = format!(
        "{}/{}",
        staging_dir(dataset, manifest.first_seq, manifest.last_seq),
        file.path
    );
    archive
        .get(&staged)
        .await?
        .ok_or_else(|| ArchiveError::Missing {
            manifest: manifest_path(dataset, manifest.first_seq),
            file: in_place,
        })
}

fn dataset_of(manifest: &Manifest) -> Result<Dataset, ArchiveError> {
    Dataset::ALL
        .into_iter()
        .find(|d| d.name() == manifest.dataset)
        .ok_or_else(|| ArchiveError::Manifest {
            path: manifest_path(Dataset::Clicks, manifest.first_seq),
            problem: format!("unknown dataset `{}`", manifest.dataset),
        })
}

/// Step 3 of a commit (and of recovery): moves the manifest's staged files
/// into place; a file already moved is left alone. Then the staging folder
/// goes.
async fn finish(archive: &Archive, manifest: &Manifest) -> Result<(), ArchiveError> {
    let dataset = dataset_of(manifest)?;
    let staging = staging_dir(dataset, manifest.first_seq, manifest.last_seq);
    for file in &manifest.files {
        let in_place = data_path(dataset, &file.path);
        let staged = format!("{staging}/{}", file.path);
        if !archive.rename(&staged, &in_place).await? && !archive.exists(&in_place).await? {
            return Err(ArchiveError::Missing {
                manifest: manifest_path(dataset, manifest.first_seq),
                file: in_place,
            });
        }
    }
    // Anything else staged for this range was not committed.
    for leftover in archive.list(&staging).await? {
        archive.delete(&leftover).await?;
    }
    archive.remove_local_dir(&staging);
    Ok(())
}

/// A test-only crash point (feature `fault-injection`, never in a release
/// build): `ADCLICK_FAULT=<point>:<dataset>:<n>` (dataset 0 clicks, 1
/// rejects) aborts the process at the `n`-th pass of that dataset through
/// `point`: `abort-archive-staged` (files staged, no manifest yet) or
/// `abort-archive-committed` (manifest written, files not moved).
#[cfg(feature = "fault-injection")]
fn fault(point: &str, dataset: Dataset) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    let index = match dataset {
        Dataset::Clicks => 0usize,
        Dataset::Rejects => 1,
    };
    let Ok(plan) = std::env::var("ADCLICK_FAULT") else {
        return;
    };
    let mut parts = plan.split(':');
    let (Some(want), Some(Ok(which)), Some(Ok(nth))) = (
        parts.next(),
        parts.next().map(str::parse::<usize>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    if want == point && which == index && PASSES[index].fetch_add(1, Ordering::SeqCst) + 1 == nth {
        tracing::warn!(point, dataset = dataset.name(), "injected fault");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault(_point: &str, _dataset: Dataset) {}

/// Commits the flush of `[first_seq, last_seq]` with `files`: stages them,
/// writes the manifest (the commit point, refused if another archiver
/// committed this start: [`ArchiveError::Conflict`]), moves them into
/// place. Returns the manifest.
pub async fn commit(
    archive: &Archive,
    dataset: Dataset,
    first_seq: u64,
    last_seq: u64,
    files: Vec<StagedFile>,
) -> Result<Manifest, ArchiveError> {
    let staging = staging_dir(dataset, first_seq, last_seq);
    let mut entries = Vec::with_capacity(files.len());
    for file in &files {
        archive
            .put(
                &format!("{staging}/{}", file.entry.path),
                file.bytes.clone(),
            )
            .await?;
        entries.push(file.entry.clone());
    }
    fault("abort-archive-staged", dataset);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        dataset: dataset.name().to_string(),
        first_seq,
        last_seq,
        created_ms: adclick_actors::time::now_ms(),
        files: entries,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Manifest {
        path: manifest_path(dataset, first_seq),
        problem: e.to_string(),
    })?;
    if !archive
        .create(&manifest_path(dataset, first_seq), Bytes::from(json))
        .await?
    {
        // The staged files stay: if the winner's range is this very one,
        // they are its files too (the same messages, the same bytes), and
        // it moves them; if not, the next `recover` deletes them.
        return Err(ArchiveError::Conflict { dataset, first_seq });
    }
    fault("abort-archive-committed", dataset);
    let finished = finish(archive, &manifest).await;
    if let Err(ArchiveError::Missing { .. }) = finished {
        // Committed, but the staged files are gone: a second archiver
        // started by mistake ran `recover` between the staging and the
        // commit and deleted them as uncommitted. The bytes are still
        // here: they go straight into place.
        for file in files {
            let in_place = data_path(dataset, &file.entry.path);
            if !archive.exists(&in_place).await? {
                archive.put(&in_place, file.bytes).await?;
            }
        }
        finish(archive, &manifest).await?;
    } else {
        finished?;
    }
    Ok(manifest)
}

/// What [`recover`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The committed manifests, in sequence order.
    pub manifests: Vec<Manifest>,
    /// Staged ranges with a manifest, moved into place.
    pub finished: usize,
    /// Staged ranges without a manifest (never committed), deleted.
    pub discarded: usize,
    /// Data files no manifest lists, deleted.
    pub orphans: usize,
}

impl Recovery {
    /// The highest committed sequence (0 if none): the stream resumes after it.
    pub fn archived_through(&self) -> u64 {
        self.manifests.last().map_or(0, |m| m.last_seq)
    }
}

/// At start: finishes every committed range whose files are still staged,
/// deletes staged ranges that never committed, and data files no manifest
/// lists that were written before `orphan_cutoff_ms` (the retention
/// cutoff: only [`prune`] leaves such files, and only that old; a younger
/// unlisted file is left alone and logged, so a second archiver started by
/// mistake cannot delete the first one's fresh files). Idempotent: a crash
/// in the middle of it is repaired by the next.
pub async fn recover(
    archive: &Archive,
    dataset: Dataset,
    orphan_cutoff_ms: i64,
) -> Result<Recovery, ArchiveError> {
    let manifests = read_manifests(archive, dataset).await?;
    let by_start: BTreeMap<u64, &Manifest> = manifests.iter().map(|m| (m.first_seq, m)).collect();
    let mut recovery = Recovery::default();

    // Staged ranges, by folder.
    let staging_root = format!("_staging/{}/", dataset.name());
    let mut staged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in archive.list(&staging_root).await? {
        if let Some(rest) = path.strip_prefix(&staging_root) {
            let folder = rest.split('/').next().unwrap_or_default().to_string();
            staged.entry(folder).or_default().push(path);
        }
    }
    for (folder, files) in staged {
        let range = folder
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        match range.and_then(|(a, b)| by_start.get(&a).filter(|m| m.last_seq == b)) {
            Some(manifest) => {
                finish(archive, manifest).await?;
                recovery.finished += 1;
            }
            None => {
                for file in files {
                    archive.delete(&file).await?;
                }
                archive.remove_local_dir(&format!("{staging_root}{folder}"));
                recovery.discarded += 1;
            }
        }
    }

    // Data files no manifest lists: retention removed their entries, then
    // a crash stopped it deleting them.
    let listed: BTreeSet<String> = manifests
        .iter()
        .flat_map(|m| m.files.iter().map(|f| data_path(dataset, &f.path)))
        .collect();
    for (path, written_ms) in archive
        .list_modified(&format!("{}/", dataset.name()))
        .await?
    {
        if listed.contains(&path) {
            continue;
        }
        if written_ms < orphan_cutoff_ms {
            tracing::info!(file = %path, "archive: deleting a file retention removed from its manifest");
            archive.delete(&path).await?;
            recovery.orphans += 1;
        } else {
            tracing::warn!(file = %path, "archive: a recent data file no manifest lists (another archiver?); left alone");
        }
    }
    recovery.manifests = manifests;
    Ok(recovery)
}

/// What [`prune`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Data files.
    pub files: usize,
    /// Manifests left with no file.
    pub manifests: usize,
}

/// Retention: deletes every file whose hour ends and whose manifest was
/// created before `cutoff_ms`. Each manifest is rewritten without them
/// first (so a crash leaves an unlisted file, which [`recover`] deletes,
/// never a listed one missing); a manifest left empty is deleted unless it
/// is the newest (it holds the resume point). `manifests` (in sequence
/// order) is updated to match.
pub async fn prune(
    archive: &Archive,
    dataset: Dataset,
    manifests: &mut Vec<Manifest>,
    cutoff_ms: i64,
) -> Result<Pruned, ArchiveError> {
    let mut pruned = Pruned::default();
    let newest = manifests.last().map(|m| m.first_seq);
    let mut kept = Vec::with_capacity(manifests.len());
    for mut manifest in std::mem::take(manifests) {
        if manifest.created_ms >= cutoff_ms
            || !manifest
                .files
                .iter()
                .any(|f| f.hour_ms + HOUR_MS <= cutoff_ms)
        {
            kept.push(manifest);
            continue;
        }
        let (old, young): (Vec<ManifestFile>, Vec<ManifestFile>) = manifest
            .files
            .into_iter()
            .partition(|f| f.hour_ms + HOUR_MS <= cutoff_ms);
        manifest.files = young;
        let path = manifest_path(dataset, manifest.first_seq);
        if manifest.files.is_empty() && Some(manifest.first_seq) != newest {
            archive.delete(&path).await?;
            pruned.manifests += 1;
        } else {
            let json =
                serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Manifest {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
            archive.put(&path, Bytes::from(json)).await?;
            kept.push(manifest);
        }
        for file in old {
            archive.delete(&data_path(dataset, &file.path)).await?;
            pruned.files += 1;
        }
    }
    *manifests = kept;
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> (tempfile::TempDir, Archive) {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(&dir.path().display().to_string()).unwrap();
        (dir, archive)
    }

    fn staged(hour_ms: i64, first_seq: u64, last_seq: u64, text: &str) -> StagedFile {
        StagedFile {
            entry: ManifestFile {
                path: file_path(hour_ms, first_seq, last_seq),
                hour_ms,
                rows: last_seq - first_seq + 1,
                first_seq,
                last_seq,
                bytes: text.len() as u64,
            },
            bytes: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    /// Every object of the archive, relative to its root.
    fn tree(dir: &tempfile::TempDir) -> Vec<String> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir.path(), dir.path(), &mut out);
        out.sort();
        out
    }

    const H: i64 = 1_765_000_800_000 / HOUR_MS * HOUR_MS;

    #[test]
    fn hive_paths() {
        assert_eq!(hour_dir(0), "dt=1970-01-01/hour=00");
        // 2026-12-07T08:00:00Z
        assert_eq!(hour_dir(1_796_630_400_000), "dt=2026-12-07/hour=08");
        assert_eq!(hour_dir(951_782_400_000), "dt=2000-02-29/hour=00");
        assert_eq!(hour_of(1_796_630_400_000 + 3_599_999), 1_796_630_400_000);
        assert_eq!(
            file_path(0, 1, 20),
            "dt=1970-01-01/hour=00/part-00000000000000000001-00000000000000000020.parquet"
        );
        assert_eq!(
            hour_dir(super::super::parquet_file::MAX_TS_MS / HOUR_MS * HOUR_MS),
            "dt=9999-12-31/hour=23"
        );
    }

    #[tokio::test]
    async fn a_commit_puts_files_in_place_and_resumes_after_it() {
        let (dir, archive) = archive();
        commit(
            &archive,
            Dataset::Clicks,
            1,
            10,
            vec![staged(H, 1, 4, "a"), staged(H + HOUR_MS, 5, 10, "b")],
        )
        .await
        .unwrap();
        commit(
            &archive,
            Dataset::Clicks,
            11,
            12,
            vec![staged(H, 11, 12, "c")],
        )
        .await
        .unwrap();
        assert_eq!(
            tree(&dir),
            vec![
                "_manifests/clicks/00000000000000000001.json".to_string(),
                "_manifests/clicks/00000000000000000011.json".into(),
                format!("clicks/{}", file_path(H, 1, 4)),
                format!("clicks/{}", file_path(H, 11, 12)),
                format!("clicks/{}", file_path(H + HOUR_MS, 5, 10)),
            ]
        );
        let recovery = recover(&archive, Dataset::Clicks, 0).await.unwrap();
        assert_eq!(recovery.archived_through(), 12);
        assert_eq!(
            (recovery.finished, recovery.discarded, recovery.orphans),
            (0, 0, 0)
        );
        assert_eq!(
            recover(&archive, Dataset::Rejects, 0)
                .await
                .unwrap()
                .archived_through(),
            0
        );
        // A second commit of the same start is refused; what it staged goes
        // at the next recovery.
        let conflict = commit(
            &archive,
            Dataset::Clicks,
            11,
            15,
            vec![staged(H, 11, 15, "d")],
        )
        .await;
        assert!(matches!(
            conflict,
            Err(ArchiveError::Conflict { first_seq: 11, .. })
        ));
        assert_eq!(tree(&dir).len(), 6);
        let recovery = recover(&archive, Dataset::Clicks, 0).await.unwrap();
        assert_eq!((recovery.discarded, recovery.archived_through()), (1, 12));
        assert_eq!(tree(&dir).len(), 5);
    }

    #[tokio::test]
    async fn staged_files_without_a_manifest_are_deleted() {
        let (dir, archive) = archive();
        commit(&archive, Dataset::Clicks, 1, 3, vec![staged(H, 1, 3, "a")])
            .await
            .unwrap();
        // A flush that crashed before its manifest.
        let staging = staging_dir(Dataset::Clicks, 4, 9);
        archive
            .put(
                &format!("{staging}/{}", file_path(H, 4, 9)),
                Bytes::from_static(b"x"),
            )
            .await
            .unwrap();
        let recovery = recover(&archive, Dataset::Clicks, 0).await.unwrap();
        assert_eq!((recovery.finished, recovery.discarded), (0, 1));
        assert_eq!(recovery.archived_through(), 3);
        assert_eq!(
            tree(&dir),
            vec![
                "_manifests/clicks/00000000000000000001.json".to_string(),
                format!("clicks/{}", file_path(H, 1, 3)),
            ]
        );
        assert!(!dir
            .path()
            .join("_staging/clicks")
            .join("00000000000000000004-00000000000000000009")
            .exists());
    }

    #[tokio::test]
    async fn a_manifest_with_staged_files_is_finished() {
        let (dir, archive) = archive();
        // A crash after the commit, with one file moved and one not: stage
        // both, write the manifest, move one by hand.
        let files = [staged(H, 1, 2, "a"), staged(H + HOUR_MS, 3, 5, "b")];
        let staging = staging_dir(Dataset::Rejects, 1, 5);
        for f in &files {
            archive
                .put(&format!("{staging}/{}", f.entry.path), f.bytes.clone())
                .await
                .unwrap();
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataset: "rejects".into(),
            first_seq: 1,
            last_seq: 5,
            created_ms: 1,
            files: files.iter().map(|f| f.entry.clone()).collect(),
        };
        archive
            .put(
                &manifest_path(Dataset::Rejects, 1),
                Bytes::from(serde_json::to_vec(&manifest).unwrap()),
            )
            .await
            .unwrap();
        assert!(archive
            .rename(
                &format!("{staging}/{}", files[0].entry.path),
                &data_path(Dataset::Rejects, &files[0].entry.path),
            )
            .await
            .unwrap());
        // Readers through the manifests see both files already.
        let read = read_committed_file(&archive, &manifest, &manifest.files[1])
            .await
            .unwrap();
        assert_eq!(&read[..], b"b");

        let recovery = recover(&archive, Dataset::Rejects, 0).await.unwrap();
        assert_eq!((recovery.finished, recovery.discarded), (1, 0));
        assert_eq!(recovery.archived_through(), 5);
        let want = vec![
            "_manifests/rejects/00000000000000000001.json".to_string(),
            format!("rejects/{}", file_path(H, 1, 2)),
            format!("rejects/{}", file_path(H + HOUR_MS, 3, 5)),
        ];
        assert_eq!(tree(&dir), want);
        // Idempotent.
        let again = recover(&archive, Dataset::Rejects, 0).await.unwrap();
        assert_eq!((again.finished, again.discarded, again.orphans), (0, 0, 0));
        assert_eq!(tree(&dir), want);
    }

    #[tokio::test]
    async fn retention_deletes_old_hours_and_keeps_the_resume_point() {
        let (dir, archive) = archive();
        commit(&archive, Dataset::Clicks, 1, 2, vec![staged(H, 1, 2, "a")])
            .await
            .unwrap();
        commit(
            &archive,
            Dataset::Clicks,
            3,
            4,
            vec![staged(H, 3, 3, "b"), staged(H + 5 * HOUR_MS, 4, 4, "c")],
        )
        .await
        .unwrap();
        commit(&archive, Dataset::Clicks, 5, 5, vec![staged(H, 5, 5, "d")])
            .await
            .unwrap();
        let mut manifests = read_manifests(&archive, Dataset::Clicks).await.unwrap();
        // Everything was written now: nothing is old enough by write time.
        let now = adclick_actors::time::now_ms();
        let none = prune(&archive, Dataset::Clicks, &mut manifests, now - 60_000)
            .await
            .unwrap();
        assert_eq!(none, Pruned::default());
        // A cutoff after everything's write and after hour H (not H + 5h).
        let pruned = prune(
            &archive,
            Dataset::Clicks,
            &mut manifests,
            now + HOUR_MS * 10_000,
        )
        .await
        .unwrap();
        assert_eq!(
            pruned,
            Pruned {
                files: 4,
                manifests: 2
            }
        );
        // The newest manifest stays, empty, for the resume point.
        assert_eq!(
            tree(&dir),
            vec!["_manifests/clicks/00000000000000000005.json".to_string()]
        );
        assert_eq!(
            recover(&archive, Dataset::Clicks, 0)
                .await
                .unwrap()
                .archived_through(),
            5
        );
        assert_eq!(manifests.len(), 1);
    }

    #[tokio::test]
    async fn a_data_file_no_manifest_lists_is_deleted_at_recovery() {
        let (dir, archive) = archive();
        commit(&archive, Dataset::Clicks, 1, 2, vec![staged(H, 1, 2, "a")])
            .await
            .unwrap();
        archive
            .put(
                &data_path(Dataset::Clicks, &file_path(H, 3, 4)),
                Bytes::from_static(b"x"),
            )
            .await
            .unwrap();
        // Not yet older than the cutoff: left alone.
        let young = recover(&archive, Dataset::Clicks, 0).await.unwrap();
        assert_eq!(young.orphans, 0);
        let now = adclick_actors::time::now_ms();
        let recovery = recover(&archive, Dataset::Clicks, now + 60_000)
            .await
            .unwrap();
        assert_eq!(recovery.orphans, 1);
        assert_eq!(tree(&dir).len(), 2);
    }
}
