//! STUB until the archive branch merges.
#![allow(missing_docs, dead_code)]
use std::path::Path;
pub struct ArchivedMessage<'a> {
    pub seq: u64,
    pub received_ms: i64,
    pub subject: &'a str,
    pub payload: &'a [u8],
    pub reason: Option<&'a str>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    Clicks,
    Rejects,
}
pub struct RangeRead {
    pub files: usize,
    pub messages: u64,
    pub archived_through: u64,
}
#[derive(Debug, thiserror::Error)]
#[error("archive")]
pub struct ArchiveError;
pub struct Archive;
impl Archive {
    pub fn open(_url: &str) -> Result<Archive, ArchiveError> {
        Ok(Archive)
    }
}
pub async fn read_range(
    _a: &Archive,
    _d: Dataset,
    _f: i64,
    _t: i64,
    _each: impl FnMut(ArchivedMessage<'_>),
) -> Result<RangeRead, ArchiveError> {
    Ok(RangeRead {
        files: 0,
        messages: 0,
        archived_through: 0,
    })
}
pub mod parquet_file {
    use super::*;
    pub fn for_each_payload(_p: &Path, _each: impl FnMut(u64, &[u8])) -> Result<u64, ArchiveError> {
        Ok(0)
    }
    pub fn write_counts(
        _p: &Path,
        _rows: impl Iterator<Item = (i64, String, u64)>,
    ) -> Result<(), ArchiveError> {
        Ok(())
    }
    pub fn write_top(
        _p: &Path,
        _rows: impl Iterator<Item = (i64, u32, String, u64)>,
    ) -> Result<(), ArchiveError> {
        Ok(())
    }
}
