//! Exact top-N: highest count first, ties by ad id ascending.

use crate::click::AdId;
use std::cmp::Ordering;

/// The ranking order: count descending, then ad id ascending.
pub fn rank(a: &(AdId, u64), b: &(AdId, u64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
}

/// The first `n` of `sums` in ranking order. Runs in O(len) plus the sort of
/// the `n` kept, so a large window with a small `n` stays cheap.
pub fn top_n(mut sums: Vec<(AdId, u64)>, n: usize) -> Vec<(AdId, u64)> {
    if n == 0 {
        return Vec::new();
    }
    if sums.len() > n {
        sums.select_nth_unstable_by(n - 1, rank);
        sums.truncate(n);
    }
    sums.sort_unstable_by(rank);
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Unpadded numbers, so text order differs from numeric and length order.
    fn ad(i: u8) -> AdId {
        AdId::parse(&format!("ad-{i}")).unwrap()
    }

    #[test]
    fn ties_break_by_ad_id() {
        let got = top_n(vec![(ad(2), 5), (ad(11), 5), (ad(3), 9), (ad(4), 1)], 3);
        assert_eq!(got, vec![(ad(3), 9), (ad(11), 5), (ad(2), 5)]);
    }

    proptest! {
        /// Equals a full sort then truncate.
        #[test]
        fn equals_sorting_everything(
            counts in prop::collection::btree_map(0u8..200, 0u64..10, 0..100),
            n in 0usize..120,
        ) {
            let sums: Vec<_> = counts.iter().map(|(k, v)| (ad(*k), *v)).collect();
            let mut naive = sums.clone();
            naive.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_str().cmp(b.0.as_str())));
            naive.truncate(n);
            prop_assert_eq!(top_n(sums, n), naive);
        }
    }
}
