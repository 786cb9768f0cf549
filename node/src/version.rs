//! Versions and the hybrid logical clock that stamps them.
//!
//! Replicas must agree on which of two writes to a key is newer, without asking
//! each other. clusterlab stamps every write with a [`Version`] at the node that
//! coordinates it, and every replica keeps the highest version it has seen
//! ("last writer wins").
//!
//! Wall clocks alone are a poor stamp: two writes in the same millisecond tie, and a
//! clock that steps backwards (NTP) would stamp a *later* write with an *older*
//! time. A *hybrid logical clock* (HLC) keeps the wall-clock reading when it moves
//! forward and otherwise counts up a logical component, and it never goes below a
//! version it has already seen. The node name breaks the last ties, so no two
//! versions from different nodes are ever equal.

use std::{
    fmt,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

/// A write's position in the order of writes to one key. Ordered by wall clock,
/// then logical counter, then node name (the field order; `Ord` is derived).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub wall_ms: u64,
    pub logical: u32,
    pub node: String,
}

impl Version {
    /// Version `wall_ms.0@n1`, for tests.
    #[cfg(test)]
    pub(crate) fn at(wall_ms: u64) -> Self {
        Version {
            wall_ms,
            logical: 0,
            node: "n1".into(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.node)
    }
}

impl From<proto::Version> for Version {
    fn from(v: proto::Version) -> Self {
        Version {
            wall_ms: v.wall_ms,
            logical: v.logical,
            node: v.node,
        }
    }
}

impl From<Version> for proto::Version {
    fn from(v: Version) -> Self {
        proto::Version {
            wall_ms: v.wall_ms,
            logical: v.logical,
            node: v.node,
        }
    }
}

/// The highest counter a clock stamps: a peer refuses a version with none
/// left above it ([`crate::limits::check_version`]), so a clock that has
/// observed this one moves on to the next millisecond instead.
pub const MAX_LOGICAL: u32 = u32::MAX - 1;

/// The hybrid logical clock of one node.
#[derive(Debug)]
pub struct Hlc {
    node: String,
    /// The last (wall_ms, logical) handed out or observed. A std mutex: it is held
    /// for a few instructions and never across an `.await`.
    last: Mutex<(u64, u32)>,
    /// Reads the wall clock; a parameter so tests can make time stand still or
    /// run backwards.
    wall_clock: fn() -> u64,
}

/// The wall clock in milliseconds since the Unix epoch, as versions, events
/// and the anti-entropy and tombstone cutoffs read it.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Hlc {
    /// A clock for `node`, reading the system clock.
    pub fn new(node: impl Into<String>) -> Self {
        Self::with_wall_clock(node, unix_ms)
    }

    fn with_wall_clock(node: impl Into<String>, wall_clock: fn() -> u64) -> Self {
        Hlc {
            node: node.into(),
            last: Mutex::new((0, 0)),
            wall_clock,
        }
    }

    /// A new version, higher than every version this clock has stamped or observed.
    pub fn now(&self) -> Version {
        let wall = (self.wall_clock)();
        let mut last = self.last.lock().expect("clock mutex poisoned");
        *last = if wall > last.0 {
            (wall, 0)
        } else if last.1 < MAX_LOGICAL {
            (last.0, last.1 + 1)
        } else {
            // The counter is spent: move on to the next millisecond.
            (last.0.saturating_add(1), 0)
        };
        Version {
            wall_ms: last.0,
            logical: last.1,
            node: self.node.clone(),
        }
    }

    /// Takes note of a version stamped elsewhere, so our next stamp is higher
    /// (a write that follows a read is then ordered after what was read).
    pub fn observe(&self, seen: &Version) {
        let mut last = self.last.lock().expect("clock mutex poisoned");
        if (seen.wall_ms, seen.logical) > *last {
            *last = (seen.wall_ms, seen.logical);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_counter_moves_on_to_the_next_millisecond() {
        let clock = Hlc::with_wall_clock("n1", || 1_000);
        clock.observe(&Version {
            wall_ms: 1_000,
            logical: u32::MAX,
            node: "n2".into(),
        });
        let next = clock.now();
        assert_eq!((next.wall_ms, next.logical), (1_001, 0));
        // The highest counter a peer takes is spent too: a stamp above it
        // would be refused by every other replica.
        clock.observe(&Version {
            wall_ms: 2_000,
            logical: MAX_LOGICAL,
            node: "n2".into(),
        });
        let next = clock.now();
        assert_eq!((next.wall_ms, next.logical), (2_001, 0));
        assert!(crate::limits::check_version(&next.into()).is_ok());
    }

    #[test]
    fn versions_increase_even_when_the_wall_clock_stands_still() {
        let clock = Hlc::with_wall_clock("n1", || 1_000);
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        assert_eq!((b.wall_ms, b.logical), (1_000, 1));
    }

    #[test]
    fn a_clock_behind_an_observed_version_stamps_above_it() {
        let clock = Hlc::with_wall_clock("n1", || 1_000);
        let from_the_future = Version {
            wall_ms: 5_000,
            logical: 7,
            node: "n2".into(),
        };
        clock.observe(&from_the_future);
        assert!(clock.now() > from_the_future);
    }

    #[test]
    fn node_name_breaks_ties() {
        let a = Version {
            wall_ms: 1,
            logical: 0,
            node: "a".into(),
        };
        let b = Version {
            node: "b".into(),
            ..a.clone()
        };
        assert!(b > a);
    }
}
