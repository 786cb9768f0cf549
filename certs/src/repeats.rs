//! Warnings that repeat, said once in a while instead of every time.
//!
//! A revoked node keeps calling its peers twice a second, and each call is a
//! refusal worth a warning; a script can retry a denied call in a loop. Every
//! one of them is still refused and counted (`clusterlab status` shows the
//! denials); the log says the first, then at most one line per kind every
//! [`EVERY`], with how many were not logged since the last line (`not_logged=`,
//! left out when there were none: [`not_logged`]).
//! A log that scrolls by faster than anyone can read hides the line that matters.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How often a repeating warning is said at most, unless told otherwise.
pub const EVERY: Duration = Duration::from_secs(10);

/// Kinds remembered at most: past this, the memory starts over (and each kind
/// is said once more), so that endless distinct kinds cannot grow it.
const MAX_KINDS: usize = 1024;

/// Decides which warnings of a repeating kind to say.
#[derive(Debug)]
pub struct Repeats {
    every: Duration,
    kinds: Mutex<HashMap<String, Kind>>,
}

#[derive(Debug)]
struct Kind {
    said_at: Instant,
    /// Warnings of this kind not said since `said_at`.
    folded: u64,
}

impl Default for Repeats {
    fn default() -> Self {
        Repeats::every(EVERY)
    }
}

impl Repeats {
    /// Says each kind at most once per `every`.
    pub fn every(every: Duration) -> Self {
        Repeats {
            every,
            kinds: Mutex::default(),
        }
    }

    /// One more warning of `kind`, now: `Some(not_logged)` to say it, with the
    /// number of the same kind left unsaid since the last line; `None` to
    /// leave it unsaid.
    pub fn admit(&self, kind: &str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().expect("repeats lock poisoned");
        if let Some(seen) = kinds.get_mut(kind) {
            if now.duration_since(seen.said_at) < self.every {
                seen.folded += 1;
                return None;
            }
            let folded = seen.folded;
            *seen = Kind {
                said_at: now,
                folded: 0,
            };
            return Some(folded);
        }
        if kinds.len() >= MAX_KINDS {
            kinds.clear();
        }
        kinds.insert(
            kind.to_string(),
            Kind {
                said_at: now,
                folded: 0,
            },
        );
        Some(0)
    }
}

/// The `not_logged` field of a warning [`Repeats::admit`] let through: left
/// out of the line (a `None` field is not written) when no warning of its
/// kind went unsaid, so that `not_logged=0` does not end every first line.
pub fn not_logged(unsaid: u64) -> Option<u64> {
    (unsaid > 0).then_some(unsaid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_logged_is_written_only_when_something_was_left_out() {
        assert_eq!(not_logged(0), None);
        assert_eq!(not_logged(3), Some(3));
    }

    #[test]
    fn a_kind_is_said_first_then_once_per_period_with_what_was_folded() {
        let repeats = Repeats::every(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(repeats.admit_at("revoked n2", at(0)), Some(0));
        assert_eq!(repeats.admit_at("revoked n2", at(1)), None);
        assert_eq!(repeats.admit_at("revoked n2", at(9)), None);
        // Another kind is its own.
        assert_eq!(repeats.admit_at("unknown issuer", at(9)), Some(0));
        assert_eq!(repeats.admit_at("revoked n2", at(10)), Some(2));
        assert_eq!(repeats.admit_at("revoked n2", at(11)), None);
        assert_eq!(repeats.admit_at("revoked n2", at(30)), Some(1));
        assert_eq!(repeats.admit_at("revoked n2", at(41)), Some(0));
    }

    #[test]
    fn endless_distinct_kinds_do_not_grow_the_memory() {
        let repeats = Repeats::default();
        let now = Instant::now();
        for i in 0..3 * MAX_KINDS {
            assert_eq!(repeats.admit_at(&i.to_string(), now), Some(0));
        }
        assert!(repeats.kinds.lock().unwrap().len() <= MAX_KINDS);
    }
}
