//! Placement: which members hold a key, and which key range a key falls in.
//!
//! clusterlab uses *rendezvous hashing* (highest random weight): for a key, every
//! member gets a score, `hash(key, member)`, and the N members with the highest
//! scores are the key's replicas. Every node computes the same answer from the
//! same member list, without talking to anyone. When a member leaves, only the
//! keys it held move (each to the member that scored next); when one joins, it
//! takes over exactly the keys on which it now scores in the top N.
//!
//! The hash is xxh3: fast, well spread, and the same on every machine, which
//! matters because nodes must agree on it.

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use crate::version::Version;

/// How many ranges anti-entropy splits the key space into. Two nodes compare one
/// small digest per range, and copy only the ranges that differ.
pub const RANGES: u32 = 64;

/// Seeds keep the three uses of the hash independent of each other.
const RANGE_SEED: u64 = 0x636c_7573_7465_7231;
const WEIGHT_SEED: u64 = 0x636c_7573_7465_7232;
const DIGEST_SEED: u64 = 0x636c_7573_7465_7233;

/// The range (0..`range_count`) that `key` belongs to.
pub fn range_of(key: &str, range_count: u32) -> u32 {
    (xxh3_64_with_seed(key.as_bytes(), RANGE_SEED) % u64::from(range_count.max(1))) as u32
}

/// The score of `member` for `key`: the higher, the sooner it is a replica.
fn weight(key: &str, member: &str) -> u64 {
    let mut hasher = Xxh3::with_seed(WEIGHT_SEED);
    hasher.update(key.as_bytes());
    // A separator, so ("ab", "c") and ("a", "bc") hash differently.
    hasher.update(&[0]);
    hasher.update(member.as_bytes());
    hasher.digest()
}

/// The member that rendezvous hashing ranks first for `key`: the first of
/// [`Ring::replicas_of`] over the same members, found without sorting them.
/// The balancer's `key-affinity` policy asks this for every request.
pub fn first_of<'a>(key: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members.into_iter().max_by_key(|m| (weight(key, m), *m))
}

/// A hash of one record's identity, combined by XOR into a range digest: equal
/// digests mean (with overwhelming probability) the same keys at the same versions.
pub fn record_hash(key: &str, version: &Version) -> u64 {
    let mut hasher = Xxh3::with_seed(DIGEST_SEED);
    hasher.update(key.as_bytes());
    hasher.update(&[0]);
    hasher.update(&version.wall_ms.to_be_bytes());
    hasher.update(&version.logical.to_be_bytes());
    hasher.update(version.node.as_bytes());
    hasher.digest()
}

/// The members that hold keys, as one node sees them at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    members: Vec<String>,
    replicas: usize,
}

impl Ring {
    /// A ring over `members` (names, in any order) keeping `replicas` copies of
    /// each key, or fewer when there are fewer members.
    pub fn new(mut members: Vec<String>, replicas: usize) -> Self {
        members.sort();
        members.dedup();
        Ring { members, replicas }
    }

    /// The member names, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// N: copies per key, the configured replica count capped at the member count.
    pub fn replication(&self) -> usize {
        self.replicas.min(self.members.len())
    }

    /// The replicas of `key`, best first.
    pub fn replicas_of(&self, key: &str) -> Vec<&str> {
        let mut scored: Vec<(u64, &str)> = self
            .members
            .iter()
            .map(|m| (weight(key, m), m.as_str()))
            .collect();
        // Highest weight first; the name breaks the (astronomically rare) tie.
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored
            .into_iter()
            .take(self.replication())
            .map(|(_, m)| m)
            .collect()
    }

    /// True when `member` is one of `key`'s replicas.
    pub fn is_replica(&self, key: &str, member: &str) -> bool {
        self.replicas_of(key).contains(&member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(names: &[&str], n: usize) -> Ring {
        Ring::new(names.iter().map(|s| s.to_string()).collect(), n)
    }

    fn keys() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("key-{i}"))
    }

    #[test]
    fn every_key_gets_n_distinct_replicas_and_n_is_capped() {
        // A name given twice is one member.
        let r = ring(&["n1", "n2", "n3", "n2", "n4"], 3);
        assert_eq!(r.members(), ["n1", "n2", "n3", "n4"]);
        for key in keys().take(100) {
            let replicas = r.replicas_of(&key);
            let distinct: std::collections::BTreeSet<_> = replicas.iter().collect();
            assert_eq!((replicas.len(), distinct.len()), (3, 3), "{replicas:?}");
        }
        assert_eq!(ring(&["n1", "n2"], 3).replicas_of("k").len(), 2);
        assert_eq!(ring(&["n1", "n2"], 3).replication(), 2);
    }

    #[test]
    fn the_member_order_given_does_not_matter() {
        let a = ring(&["n1", "n2", "n3", "n4"], 2);
        let b = ring(&["n4", "n2", "n1", "n3"], 2);
        for key in keys().take(100) {
            assert_eq!(a.replicas_of(&key), b.replicas_of(&key));
        }
    }

    /// `first_of` is what `key-affinity` routes by: it must name the key's
    /// first replica, whatever order the members come in.
    #[test]
    fn first_of_is_the_rings_first_replica() {
        let names = ["n1", "n2", "n3", "n4", "n5"];
        let r = ring(&names, 3);
        for key in keys().take(1000) {
            let first = first_of(&key, names.iter().rev().copied());
            assert_eq!(first, r.replicas_of(&key).first().copied(), "{key}");
        }
        assert_eq!(first_of("k", []), None);
    }

    #[test]
    fn load_spreads_evenly() {
        let r = ring(&["n1", "n2", "n3", "n4"], 1);
        let mut counts = std::collections::HashMap::new();
        for key in keys() {
            *counts
                .entry(r.replicas_of(&key)[0].to_string())
                .or_insert(0) += 1;
        }
        for (member, count) in counts {
            // 2,500 expected; a spread beyond 10% would mean a biased hash.
            assert!((2250..=2750).contains(&count), "{member} got {count}");
        }
    }

    /// A member leaving moves only the keys it held, each to the member that
    /// ranked next (N+1st) for it; every other key keeps its replicas, in
    /// their order. (Five members to four, N=3: with as many members as
    /// copies, every key is everywhere, and nothing could fail.) A member
    /// joining is the same, read backwards.
    #[test]
    fn a_member_leaving_moves_only_its_own_keys() {
        let five = ["n1", "n2", "n3", "n4", "n5"];
        let before = ring(&five, 3);
        let after = ring(&five[..4], 3);
        let every = ring(&five, five.len());
        let mut moved = 0;
        for key in keys().take(1000) {
            let old = before.replicas_of(&key);
            let new = after.replicas_of(&key);
            if !old.contains(&"n5") {
                assert_eq!(new, old, "{key}: a key n5 did not hold moved");
                continue;
            }
            moved += 1;
            // The survivors, then the member that ranked fourth.
            let ranked = every.replicas_of(&key);
            let mut expected: Vec<&str> = old.iter().copied().filter(|m| *m != "n5").collect();
            expected.push(ranked[3]);
            let (mut new, mut expected) = (new, expected);
            new.sort_unstable();
            expected.sort_unstable();
            assert_eq!(new, expected, "{key}");
        }
        // About three in five keys were n5's.
        assert!((500..700).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn ranges_cover_the_key_space() {
        let mut seen = vec![false; RANGES as usize];
        for key in keys().take(2000) {
            seen[range_of(&key, RANGES) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
