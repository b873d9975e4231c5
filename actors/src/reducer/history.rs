//! The minutes a reducer no longer holds in memory: what it reads to answer
//! a range that reaches past its memory, and the final top-N stored when a
//! configured window's last minute turned final.
//!
//! [`ReducerCore`](super::reducer_core::ReducerCore) asks through this trait so
//! that it stays plain state: the running service hands it the partition's
//! redb file, the pure tests and benchmarks [`NoHistory`].

use crate::click::{AdId, Filter};
use crate::store::{PartitionStore, StoreError};
use std::collections::HashMap;

/// Read access to a partition's committed minutes.
pub trait History {
    /// Committed clicks of `ad` under `filter` in `[from, to)`.
    fn read_count(&self, ad: &AdId, filter: &Filter, from: i64, to: i64)
        -> Result<u64, StoreError>;

    /// Adds each ad's committed clicks under `filter` in `[from, to)` to `sums`.
    fn add_sums(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        sums: &mut HashMap<AdId, u64>,
    ) -> Result<(), StoreError>;

    /// The stored final top-N of the `window` minutes ending with `last`, if any.
    fn read_top(&self, window: i64, last: i64) -> Result<Option<Vec<(AdId, u64)>>, StoreError>;
}

impl History for PartitionStore {
    fn read_count(
        &self,
        ad: &AdId,
        filter: &Filter,
        from: i64,
        to: i64,
    ) -> Result<u64, StoreError> {
        PartitionStore::read_count(self, ad, filter, from, to)
    }

    fn add_sums(
        &self,
        filter: &Filter,
        from: i64,
        to: i64,
        sums: &mut HashMap<AdId, u64>,
    ) -> Result<(), StoreError> {
        PartitionStore::add_sums(self, filter, from, to, sums)
    }

    fn read_top(&self, window: i64, last: i64) -> Result<Option<Vec<(AdId, u64)>>, StoreError> {
        PartitionStore::read_top(self, window, last)
    }
}

/// No committed history: every minute is in memory (tests, benchmarks, and a
/// core that never evicts).
pub struct NoHistory;

impl History for NoHistory {
    fn read_count(&self, _: &AdId, _: &Filter, _: i64, _: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn add_sums(
        &self,
        _: &Filter,
        _: i64,
        _: i64,
        _: &mut HashMap<AdId, u64>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn read_top(&self, _: i64, _: i64) -> Result<Option<Vec<(AdId, u64)>>, StoreError> {
        Ok(None)
    }
}
