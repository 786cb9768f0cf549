//! Load-balancing policies: which healthy node gets the next request, and why.
//!
//! - **round-robin**: each node in turn. Even, simple, blind to how busy a node is.
//! - **least-request**: pick two nodes at random and send to the one with fewer
//!   requests in flight ("the power of two choices"). Nearly as good as asking
//!   every node, at the cost of two looks; a slow node builds up in-flight
//!   requests and so gets fewer new ones.
//! - **random**: any node. A baseline to compare the others with.
//! - **key-affinity**: the node that rendezvous hashing ranks first for the key,
//!   which is one of the key's replicas, so the coordinator saves a hop. (A
//!   scan has no key: it goes round-robin.)
//!
//! A retry (another node, after one failed) never takes a turn of the
//! rotation: with n1 failing every request, each retry would otherwise take
//! the turn of the node after it, and that node would never be sent a first
//! attempt.

use std::{
    fmt,
    sync::atomic::{AtomicUsize, Ordering},
};

/// How the balancer picks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    KeyAffinity,
}

impl Policy {
    /// The policy's name as the command line and traces spell it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastRequest => "least-request",
            Policy::Random => "random",
            Policy::KeyAffinity => "key-affinity",
        }
    }

    /// Parses a name as [`Policy::name`] spells it.
    pub fn parse(name: &str) -> Result<Self, String> {
        [
            Policy::RoundRobin,
            Policy::LeastRequest,
            Policy::Random,
            Policy::KeyAffinity,
        ]
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| {
            let [first @ .., last] = proto::admin::POLICIES;
            format!(
                "unknown policy {name:?}; use {} or {last}",
                first.join(", ")
            )
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a policy needs to know about one candidate node.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub in_flight: u64,
}

/// Picks among candidates; holds the round-robin positions.
#[derive(Debug, Default)]
pub struct Picker {
    /// First attempts' turns.
    next: AtomicUsize,
    /// Retries' turns, apart from them (see the module's docs).
    next_retry: AtomicUsize,
}

impl Picker {
    /// The index of the chosen candidate and the reason, for the trace.
    /// `candidates` must not be empty. `key` is `None` for a scan, and
    /// `retry` says a node has already failed this request.
    pub fn pick(
        &self,
        policy: Policy,
        candidates: &[Candidate<'_>],
        key: Option<&str>,
        retry: bool,
    ) -> (usize, String) {
        let n = candidates.len();
        let in_turn = |before: &str| {
            let turns = if retry { &self.next_retry } else { &self.next };
            let i = turns.fetch_add(1, Ordering::Relaxed) % n;
            let reason = Reason::new(before).text("next in rotation (").number(i + 1);
            (i, reason.text(" of ").number(n).text(")").into())
        };
        match (policy, key) {
            (Policy::RoundRobin, _) => in_turn(""),
            (Policy::KeyAffinity, None) => in_turn("a scan has no key, so "),
            (Policy::KeyAffinity, Some(key)) => {
                let first = node::placement::first_of(key, candidates.iter().map(|c| c.name));
                let i = candidates
                    .iter()
                    .position(|c| Some(c.name) == first)
                    .unwrap_or(0);
                // Among those in rotation: with the key's first node out, it
                // is the next of the key's replicas.
                let reason = Reason::new("ranks first for the key among the ").number(n);
                (i, reason.text(" nodes in rotation").into())
            }
            (Policy::Random, _) => (
                rand::random_range(0..n),
                Reason::new("random among ").number(n).into(),
            ),
            (Policy::LeastRequest, _) if n == 1 => (0, "the only healthy node".into()),
            (Policy::LeastRequest, _) => {
                let a = rand::random_range(0..n);
                let b = (a + rand::random_range(1..n)) % n;
                let (i, other) = match candidates[a].in_flight <= candidates[b].in_flight {
                    true => (a, b),
                    false => (b, a),
                };
                let fewer = match candidates[i].in_flight < candidates[other].in_flight {
                    true => "fewer in-flight requests than ",
                    false => "as few in-flight requests as ",
                };
                let reason = Reason::new(fewer)
                    .text(candidates[other].name)
                    .text(" (")
                    .number(candidates[i].in_flight)
                    .text(" vs ")
                    .number(candidates[other].in_flight)
                    .text(")");
                (i, reason.into())
            }
        }
    }
}

/// A reason for the trace, put together without `format!`. A policy picks for
/// every request, and the formatting machinery costs several times what the
/// pick itself does: "next in rotation (2 of 3)" took about 750 instructions
/// with `format!` (counted with callgrind, docs/performance.md).
struct Reason(String);

impl Reason {
    fn new(text: &str) -> Self {
        let mut reason = String::with_capacity(48);
        reason.push_str(text);
        Reason(reason)
    }

    fn text(mut self, text: &str) -> Self {
        self.0.push_str(text);
        self
    }

    fn number(mut self, number: impl itoa::Integer) -> Self {
        self.0.push_str(itoa::Buffer::new().format(number));
        self
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(in_flight: &[u64]) -> Vec<(String, u64)> {
        in_flight
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("n{}", i + 1), *f))
            .collect()
    }

    fn view(c: &[(String, u64)]) -> Vec<Candidate<'_>> {
        c.iter()
            .map(|(name, in_flight)| Candidate {
                name,
                in_flight: *in_flight,
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_turns() {
        let picker = Picker::default();
        let c = candidates(&[0, 0, 0]);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                picker
                    .pick(Policy::RoundRobin, &view(&c), Some("k"), false)
                    .0
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let (_, reason) = picker.pick(Policy::RoundRobin, &view(&c), Some("k"), false);
        assert_eq!(reason, "next in rotation (1 of 3)");
    }

    #[test]
    fn least_request_never_picks_the_busiest_of_two() {
        let picker = Picker::default();
        let c = candidates(&[5, 0]);
        for _ in 0..50 {
            let (i, reason) = picker.pick(Policy::LeastRequest, &view(&c), Some("k"), false);
            assert_eq!(i, 1, "{reason}");
            assert_eq!(reason, "fewer in-flight requests than n1 (0 vs 5)");
        }
        let (_, reason) = picker.pick(
            Policy::LeastRequest,
            &view(&candidates(&[2, 2])),
            Some("k"),
            false,
        );
        assert!(
            reason.starts_with("as few in-flight requests as n"),
            "{reason}"
        );
        assert!(reason.ends_with(" (2 vs 2)"), "{reason}");
        let (_, reason) = picker.pick(Policy::Random, &view(&c), Some("k"), false);
        assert_eq!(reason, "random among 2");
    }

    #[test]
    fn key_affinity_is_stable_per_key_and_spreads_keys() {
        let picker = Picker::default();
        let c = candidates(&[0, 0, 0]);
        let first = picker
            .pick(Policy::KeyAffinity, &view(&c), Some("user:1"), false)
            .0;
        for _ in 0..10 {
            assert_eq!(
                picker
                    .pick(Policy::KeyAffinity, &view(&c), Some("user:1"), false)
                    .0,
                first
            );
        }
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| {
                let key = format!("k{i}");
                picker
                    .pick(Policy::KeyAffinity, &view(&c), Some(&key), false)
                    .0
            })
            .collect();
        assert_eq!(spread.len(), 3);
    }

    /// With n1 failing every request and each failure retried, the healthy
    /// nodes still share the first attempts evenly: a retry takes no turn
    /// of theirs. (Retries used to: n2 then got no first attempt at all.)
    #[test]
    fn retries_take_no_turn_of_the_rotation() {
        let picker = Picker::default();
        let all = candidates(&[0, 0, 0]);
        let mut firsts = [0; 3];
        for _ in 0..300 {
            let (i, _) = picker.pick(Policy::RoundRobin, &view(&all), Some("k"), false);
            firsts[i] += 1;
            if i == 0 {
                let others = view(&all[1..]);
                picker.pick(Policy::RoundRobin, &others, Some("k"), true);
            }
        }
        assert_eq!(firsts, [100, 100, 100]);
    }

    /// Key affinity says the node ranks first among those in rotation (with
    /// the key's first node out it is another replica), and a scan, which
    /// has no key, goes round the rotation.
    #[test]
    fn key_affinity_says_among_whom_and_scans_take_turns() {
        let picker = Picker::default();
        let c = candidates(&[0, 0, 0]);
        let (_, reason) = picker.pick(Policy::KeyAffinity, &view(&c), Some("user:1"), false);
        assert_eq!(
            reason,
            "ranks first for the key among the 3 nodes in rotation"
        );
        let picks: Vec<(usize, String)> = (0..3)
            .map(|_| picker.pick(Policy::KeyAffinity, &view(&c), None, false))
            .collect();
        assert_eq!(
            picks,
            [
                (0, "a scan has no key, so next in rotation (1 of 3)".into()),
                (1, "a scan has no key, so next in rotation (2 of 3)".into()),
                (2, "a scan has no key, so next in rotation (3 of 3)".into()),
            ]
        );
    }

    /// The names are the wire contract's list, which the client checks
    /// `clusterlab policy NAME` against before sending it.
    #[test]
    fn names_round_trip_and_unknown_ones_are_explained() {
        use clap::ValueEnum;
        let names: Vec<&str> = Policy::value_variants().iter().map(|p| p.name()).collect();
        assert_eq!(names, proto::admin::POLICIES);
        for p in Policy::value_variants() {
            assert_eq!(Policy::parse(p.name()), Ok(*p));
        }
        assert_eq!(
            Policy::parse("fastest"),
            Err(
                "unknown policy \"fastest\"; use round-robin, least-request, random or \
                 key-affinity"
                    .into()
            )
        );
    }
}
