//! Which member should own each partition: a pure function of the partition
//! count and the live members, so every member computes the same answer from
//! the same membership and no coordinator is needed.
//!
//! Rendezvous hashing scores every (partition, member) pair; the pairs are
//! taken from the highest score down, and a pair places its partition on its
//! member unless the partition is placed already or the member holds its
//! share, ⌈partitions / members⌉. Plain rendezvous hashing (each partition
//! on its top member) moves the fewest partitions when membership changes
//! but can leave half the partitions on one member; the cap keeps the load
//! balanced, and taking the strongest preferences first keeps moves few.

use xxhash_rust::xxh3::xxh3_64;

/// The owner of each partition (index = partition), as indices into
/// `members`, which must be sorted and free of repeats. `None` when there is
/// no member.
pub fn assign(partitions: u32, members: &[String]) -> Vec<Option<usize>> {
    let mut owners = vec![None; partitions as usize];
    if members.is_empty() {
        return owners;
    }
    let cap = (partitions as usize).div_ceil(members.len());
    let mut pairs: Vec<(u64, u32, usize)> = (0..partitions)
        .flat_map(|p| (0..members.len()).map(move |i| (p, i)))
        .map(|(p, i)| (score(p, &members[i]), p, i))
        .collect();
    // Strongest preference first; ties (never in practice) by partition, member.
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut load = vec![0usize; members.len()];
    for (_, p, i) in pairs {
        let owner = &mut owners[p as usize];
        if owner.is_none() && load[i] < cap {
            *owner = Some(i);
            load[i] += 1;
        }
    }
    owners
}

/// The rendezvous score of `member` for partition `p`.
fn score(p: u32, member: &str) -> u64 {
    let mut key = Vec::with_capacity(4 + member.len());
    key.extend_from_slice(&p.to_le_bytes());
    key.extend_from_slice(member.as_bytes());
    xxh3_64(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("adclick-{i}")).collect()
    }

    fn loads(owners: &[Option<usize>], n: usize) -> Vec<usize> {
        let mut load = vec![0; n];
        for owner in owners.iter().flatten() {
            load[*owner] += 1;
        }
        load
    }

    #[test]
    fn every_partition_has_one_owner_and_no_member_more_than_its_share() {
        for n in 1..=7 {
            for partitions in [1u32, 5, 16, 64] {
                let owners = assign(partitions, &members(n));
                assert!(owners.iter().all(Option::is_some));
                let load = loads(&owners, n);
                let cap = (partitions as usize).div_ceil(n);
                assert!(
                    load.iter().all(|l| *l <= cap),
                    "{n}, {partitions}: {load:?}"
                );
                if partitions as usize >= 2 * n {
                    assert!(load.iter().all(|l| *l >= 1), "an idle member: {load:?}");
                }
            }
        }
    }

    #[test]
    fn every_member_computes_the_same_assignment() {
        let a = assign(16, &members(3));
        let b = assign(16, &members(3));
        assert_eq!(a, b);
    }

    /// Partitions whose owner (by name) differs between two memberships.
    fn moved(partitions: u32, before: &[String], after: &[String]) -> usize {
        let (a, b) = (assign(partitions, before), assign(partitions, after));
        (0..partitions as usize)
            .filter(|&p| before[a[p].unwrap()] != after[b[p].unwrap()])
            .count()
    }

    #[test]
    fn a_membership_change_moves_few_partitions() {
        for partitions in [16u32, 64] {
            for n in 2..=6 {
                let (small, big) = (members(n), members(n + 1));
                // The least a change can move: the joining or leaving member's share.
                let share = partitions as usize / (n + 1);
                let joined = moved(partitions, &small, &big);
                let left = moved(partitions, &big, &small);
                assert!(
                    joined >= share && joined <= 2 * share + 2,
                    "join {n}: {joined}"
                );
                assert!(left >= share && left <= 2 * share + 2, "leave {n}: {left}");
            }
        }
    }

    #[test]
    fn no_member_no_owner() {
        assert_eq!(assign(3, &[]), vec![None, None, None]);
    }
}
