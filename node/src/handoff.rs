//! Handoff: a node gives the records it holds for keys it no longer replicates
//! to the nodes that now do.
//!
//! Anti-entropy ([`crate::antientropy`]) compares only the keys two nodes both
//! replicate. That mends every copy as long as, through a change of the ring,
//! each key keeps at least one replica that holds its newest write. Two changes
//! can take all of them away at once:
//!
//! - **Nodes join.** A key lives on {A, B, C}, and C missed its last write (C
//!   was down; A and B made the quorum). D and E join, and the key's replicas
//!   become {D, E, C}. The newest write is on A and B alone, and neither
//!   replicates the key any more.
//! - **A partition heals.** Five nodes, N = 3: two of them, cut off from the
//!   other three, see those dead and make a ring of their own, where every key's
//!   replicas are the two of them, a write quorum of W = 2. They go on taking
//!   writes (a *sloppy quorum*, as Dynamo calls it). When the cut heals, a key
//!   whose replicas are the other three has its newest write on two nodes that do
//!   not replicate it.
//!
//! So after each anti-entropy round, a node writes every settled record it holds
//! for a key it does not replicate to that key's replicas, with `Replica.Write`.
//! The highest version wins, so a record sent twice, or to a replica that holds
//! something newer, changes nothing. Once a write quorum of the replicas answer
//! that they hold it or something newer, the record is *handed off*, and it is
//! not sent again while this node holds that version. The node keeps its own
//! copy: an older version loses to a newer one wherever it goes, and the node may
//! replicate the key again after the next change of the ring. (Cassandra keeps
//! such copies too, until an operator runs `nodetool cleanup`.) What was handed
//! off is remembered in memory only, so a restarted node sends its records once
//! more.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::StreamExt;
use proto::WriteRequest;
use tracing::{debug, info};

use crate::{
    Result, coordinator::REPLICA_TIMEOUT, limits, placement::Ring, state::NodeState, store::Record,
    version::Version,
};

/// Records handed off per round at most, so that a node holding many (after
/// a large change of the ring) spreads the work over rounds.
const PER_ROUND: usize = 256;
/// Records being handed off at once.
const AT_ONCE: usize = 16;

/// A record this node holds for a key it does not replicate: its key and the
/// version it holds.
pub type Held = (String, Version);

/// The version of each key this node has handed off. Only keys it still holds
/// for others are remembered.
#[derive(Debug, Default)]
pub struct HandedOff(HashMap<String, Version>);

impl HandedOff {
    /// The records of `held` not yet handed off at the version held now.
    /// Forgets the keys no longer in `held`: this node replicates them again,
    /// or no longer holds them.
    fn pending(&mut self, held: Vec<Held>) -> Vec<Held> {
        let keys: HashSet<&str> = held.iter().map(|(key, _)| key.as_str()).collect();
        self.0.retain(|key, _| keys.contains(key.as_str()));
        held.into_iter()
            .filter(|(key, version)| self.0.get(key) != Some(version))
            .collect()
    }
}

/// Hands off up to [`PER_ROUND`] of the records this node `held` (found in the
/// round's pass over the store) to the replicas `ring` gives their keys, among
/// the `alive` peers.
pub async fn hand_off(
    state: &Arc<NodeState>,
    ring: &Ring,
    alive: &[String],
    held: Vec<Held>,
    handed: &mut HandedOff,
) -> Result<()> {
    let keys: Vec<String> = handed
        .pending(held)
        .into_iter()
        .take(PER_ROUND)
        .map(|(key, _)| key)
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    // Read now, with their values: a record may have changed since the pass.
    let records = state.store.run(move |s| s.get_many(&keys)).await?;
    let quorum = state.replication.default_quorum(state.membership.known());
    let alive: HashSet<&str> = alive.iter().map(String::as_str).collect();
    let outcomes: Vec<(Record, usize)> = futures::stream::iter(records.into_iter().flatten())
        .map(|record| {
            let owners: Vec<String> = ring
                .replicas_of(&record.key)
                .into_iter()
                .filter(|owner| alive.contains(owner))
                .map(String::from)
                .collect();
            async move {
                let holding = futures::future::join_all(
                    owners.iter().map(|owner| give(state, owner, &record)),
                )
                .await
                .into_iter()
                .filter(|&holds| holds)
                .count();
                (record, holding)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let tried = outcomes.len();
    let mut done = 0;
    for (record, holding) in outcomes {
        if holding >= quorum {
            handed.0.insert(record.key, record.version);
            done += 1;
        }
    }
    if done > 0 {
        info!(
            records = done,
            "handed off records held for keys this node no longer replicates"
        );
        state.events.publish(
            "repair.handed_off",
            &state.name,
            format!(
                "{done} records held here for keys this node no longer replicates \
                 are on a quorum ({quorum}) of their replicas"
            ),
        );
    }
    if done < tried {
        debug!(
            records = tried - done,
            "records not yet on a quorum of their replicas; will try again"
        );
    }
    Ok(())
}

/// Writes `record` to `owner`; whether `owner` now holds it or a newer version.
async fn give(state: &NodeState, owner: &str, record: &Record) -> bool {
    if state.faults.check_link(Some(owner)).is_err() {
        return false;
    }
    let Some(mut client) = state.membership.client(owner) else {
        return false;
    };
    let request = WriteRequest {
        record: Some(record.clone().into()),
        request_id: String::new(),
        from: state.name.clone(),
    };
    let answer = tokio::time::timeout(REPLICA_TIMEOUT, client.write(request)).await;
    let stored = match answer {
        Ok(Ok(response)) => response.into_inner().stored,
        Ok(Err(status)) => {
            debug!(%owner, key = %record.key, error = %status.message(), "handoff write failed");
            return false;
        }
        Err(_) => {
            debug!(%owner, key = %record.key, "handoff write timed out");
            return false;
        }
    };
    match stored {
        Some(stored) if limits::check_version(&stored).is_ok() => {
            let stored = Version::from(stored);
            state.clock.observe(&stored);
            stored >= record.version
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_pending_until_handed_off_at_the_version_held_now() {
        let mut handed = HandedOff::default();
        let held = vec![
            ("a".to_string(), Version::at(1)),
            ("b".to_string(), Version::at(1)),
        ];
        assert_eq!(handed.pending(held.clone()), held);

        handed.0.insert("a".into(), Version::at(1));
        assert_eq!(handed.pending(held.clone()), vec![held[1].clone()]);

        // A newer version of a handed-off key is pending again.
        let newer = vec![
            ("a".to_string(), Version::at(2)),
            ("b".to_string(), Version::at(1)),
        ];
        assert_eq!(handed.pending(newer.clone()), newer);
    }

    #[test]
    fn keys_no_longer_held_for_others_are_forgotten() {
        let mut handed = HandedOff::default();
        handed.0.insert("a".into(), Version::at(1));
        handed.0.insert("gone".into(), Version::at(1));
        let held = vec![("a".to_string(), Version::at(1))];
        assert!(handed.pending(held).is_empty());
        assert_eq!(handed.0.len(), 1, "{handed:?}");
        assert!(handed.0.contains_key("a"));
    }
}
