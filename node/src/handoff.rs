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
//! So after each anti-entropy round, a node writes the settled records it holds
//! for keys it does not replicate to those keys' replicas, with `Replica.Write`.
//! The highest version wins, so a record sent twice, or to a replica that holds
//! something newer, changes nothing. Once a write quorum of the replicas answer
//! that they hold it or something newer, the record is *handed off*, and the
//! node removes its own copy (if it still holds that version): a copy left
//! behind would be written back one day, after its key was deleted and the
//! delete's tombstone collected, and bring the deleted value back.
//!
//! For the same reason, a record stamped before the tombstone grace period
//! (`--tombstone-grace`, less `MARGIN`, counted when it would be sent) is not
//! written anywhere: a delete newer than it may have been collected already.
//! (Cassandra keeps its hints for less time than its grace period, for the
//! same reason.) Nor may a write sent in time land late, held up at a paused
//! or slowed replica: it carries the moment it must be applied by, and the
//! replica refuses it after that. For an older record the node *reads* the
//! key from its replicas instead, and removes its copy if a quorum of them
//! hold it or something newer: the usual case, a copy left behind by a
//! scale-out. If not, it cannot tell a write its replicas missed from one
//! deleted since, and the copy stays where it is.
//!
//! The quorum is a majority of the key's replicas (N/2+1, fewer while the
//! cluster is smaller than N), whatever `--write-quorum` says.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use certs::repeats::{self, Repeats};
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::{
    Result,
    coordinator::{Coordinator, in_time},
    placement::Ring,
    state::NodeState,
    store::Record,
    telemetry::escaped,
    version::{Version, unix_ms},
};

/// Records handed off per round at most, so that a node holding many (after
/// a large change of the ring) spreads the work over rounds.
const PER_ROUND: usize = 256;
/// Records being handed off at once.
const AT_ONCE: usize = 16;
/// No record starts being handed off this long after the round's first did:
/// a slowed replica (`fault --latency 1.5s`, under its timeout) would
/// otherwise make 256 records, 16 at a time, hold anti-entropy's round, and
/// so every digest exchange, for half a minute. The rest wait for the next
/// round, which goes on where this one stopped.
const BUDGET: Duration = Duration::from_secs(2);
/// How much younger than the tombstone grace period a record must be to be
/// written to its replicas, and how long before the end of that period the
/// replica must apply it: to spare for clocks a little apart, and for the
/// apply after the replica checks the write's deadline.
const MARGIN: Duration = Duration::from_secs(5);

/// A record this node holds for a key it does not replicate: its key and the
/// version it holds.
pub type Held = (String, Version);

/// Where handoff goes on from: the last key the round before tried. Records
/// that cannot be handed off for a while (their replicas are cut off) must not
/// keep the ones after them waiting. And what it has said of records it
/// cannot read, which come round again every round.
#[derive(Debug, Default)]
pub struct Cursor {
    /// The last key tried; `None` before the first round.
    after: Option<String>,
    /// Records that cannot be read are warned of once in a while, not each
    /// round (every second) for as long as they stay.
    unreadable: Repeats,
}

impl Cursor {
    /// Up to `limit` of `held` (in key order), starting after the last key
    /// tried and wrapping around.
    fn next(&self, held: Vec<Held>, limit: usize) -> Vec<Held> {
        let (later, earlier): (Vec<Held>, Vec<Held>) = held
            .into_iter()
            .partition(|(key, _)| self.after.as_ref().is_none_or(|after| key > after));
        later.into_iter().chain(earlier).take(limit).collect()
    }

    /// Remembers the last key `tried`, if any: the next round goes on after it.
    fn tried(&mut self, tried: Option<&String>) {
        if let Some(key) = tried {
            self.after = Some(key.clone());
        }
    }
}

/// `work` on each of `items` in turn, `at_once` at a time, until `budget`
/// has passed since the first began: those not begun by then are left.
/// Returns each outcome, and how many items were begun (the first ones).
async fn within<T, F: Future<Output = Option<O>>, O>(
    items: Vec<T>,
    at_once: usize,
    budget: Duration,
    work: impl FnMut(T) -> F,
) -> (Vec<O>, usize) {
    let until = tokio::time::Instant::now() + budget;
    let begun = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = futures::stream::iter(items)
        .take_while(|_| {
            let in_time = tokio::time::Instant::now() < until;
            if in_time {
                begun.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            std::future::ready(in_time)
        })
        .map(work)
        .buffer_unordered(at_once)
        .filter_map(std::future::ready)
        .collect()
        .await;
    (outcomes, begun.into_inner())
}

/// Hands off up to `PER_ROUND` of the records this node `held` (found in the
/// round's pass over the store) to the replicas `ring` gives their keys, among
/// the `alive` peers, starting none after `BUDGET`. Records too old to hand
/// off ([`may_hand_off`]) are only looked for on the replicas.
pub async fn hand_off(
    state: &Arc<NodeState>,
    ring: &Ring,
    alive: &[String],
    held: Vec<Held>,
    cursor: &mut Cursor,
) -> Result<()> {
    let grace = state.tombstone_grace;
    let keys: Vec<String> = cursor
        .next(held, PER_ROUND)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let quorum = state.replication.default_quorum(state.membership.known());
    let alive: HashSet<&str> = alive.iter().map(String::as_str).collect();
    // A replica that fails once is not asked again this round: one that is
    // stopped would hold every record up for the whole timeout.
    let failing = Mutex::new(HashSet::new());
    let coordinator = Coordinator::new(state.clone());
    let unreadable = &cursor.unreadable;
    let hand_off_one = |key: String| {
        let (coordinator, failing, alive) = (&coordinator, &failing, &alive);
        async move {
            // Read when its turn comes, value and all: it may have changed
            // since the pass, and only the records being handed off are in
            // memory (256 values of 1 MiB would be 256 MiB).
            let read = state.store.run({
                let key = key.clone();
                move |s| s.get(&key)
            });
            let record = match read.await {
                Ok(Some(record)) => record,
                Ok(None) => return None, // Deleted, and the tombstone collected, since.
                // One record that cannot be read holds up none of the others.
                // Said once in a while: it comes round again every round.
                Err(e) => {
                    if let Some(unsaid) = unreadable.admit("unreadable") {
                        let not_logged = repeats::not_logged(unsaid);
                        warn!(key = %escaped(&key), error = %e, not_logged, "a record to hand off cannot be read; skipped this round");
                    }
                    return None;
                }
            };
            let owners: Vec<String> = ring
                .replicas_of(&record.key)
                .into_iter()
                // (Never this node, which does not replicate the key: counted,
                // its own copy would vouch for removing itself.)
                .filter(|owner| alive.contains(owner) && *owner != state.name)
                .map(String::from)
                .collect();
            // Judged when its turn comes, not when the round began: a
            // round may take a while (a peer's digest can take 10 s).
            let write_by = may_hand_off(&record.version, unix_ms(), grace)
                .then(|| write_by(&record.version, grace));
            let holding = futures::future::join_all(
                owners
                    .iter()
                    .map(|owner| holds(coordinator, owner, &record, write_by, failing)),
            )
            .await
            .into_iter()
            .filter(|&holds| holds)
            .count();
            Some(Outcome {
                held: (record.key, record.version),
                holding,
                written: write_by.is_some(),
            })
        }
    };
    let (outcomes, begun): (Vec<Outcome>, usize) =
        within(keys.clone(), AT_ONCE, BUDGET, hand_off_one).await;
    cursor.tried(keys[..begun].last());
    let tried = outcomes.len();
    let (handed, written): (Vec<Held>, Vec<bool>) = outcomes
        .into_iter()
        .filter(|o| o.holding >= quorum)
        .map(|o| (o.held, o.written))
        .unzip();
    let done = handed.len();
    let written = written.into_iter().filter(|&w| w).count();
    let found = done - written;
    if done < tried {
        debug!(
            records = tried - done,
            "records not known to be on a quorum of their replicas; will try again"
        );
    }
    if done == 0 {
        return Ok(());
    }
    let removed = state.store.run(move |s| s.remove_if_at(&handed)).await?;
    let records = if done == 1 { "record" } else { "records" };
    info!(
        records = done,
        written, found, removed, "handed off records held for keys this node no longer replicates"
    );
    let how = match (written, found) {
        // Sent: a replica that held a newer version kept it, and counts.
        (_, 0) => "sent there by this node".to_string(),
        (0, _) => "too old to write, and found there already".to_string(),
        _ => format!(
            "{written} sent there by this node, {found} too old to write and found there \
             already"
        ),
    };
    state.events.publish(
        "repair.handed_off",
        &state.name,
        format!(
            "{done} {records} held here for keys this node no longer replicates are now on \
             a quorum ({quorum}) of their replicas ({how}), and {}",
            match removed {
                r if r == done as u64 => "no longer here".to_string(),
                r => format!(
                    "{r} removed here (the rest were written again, or collected as tombstones, \
                     meanwhile)"
                ),
            }
        ),
    );
    Ok(())
}

/// What handing off one record came to.
struct Outcome {
    held: Held,
    /// How many of its key's replicas hold it or a newer version.
    holding: usize,
    /// Whether it was written to them, or only looked for (too old to write).
    written: bool,
}

/// Whether a record stamped at `version` may still be written to its
/// replicas at `now_ms`: until its `write_by`.
pub fn may_hand_off(version: &Version, now_ms: u64, grace: Duration) -> bool {
    now_ms <= write_by(version, grace)
}

/// The moment (Unix ms) by which a handoff's write of a record stamped at
/// `version` must be applied. Until then no delete newer than the record can
/// have been collected: its tombstone, stamped later than `version`, is still
/// within the `grace` period, with `MARGIN` to spare for clocks a little
/// apart. The replica refuses the write after it, however long the write
/// waited there (a pause, added latency).
fn write_by(version: &Version, grace: Duration) -> u64 {
    version
        .wall_ms
        .saturating_add(grace.as_millis() as u64)
        .saturating_sub(MARGIN.as_millis() as u64)
}

/// Whether `owner` holds `record` or a newer version: after writing it there
/// if given a `write_by` to write it by, else as `owner` answers a read. An
/// owner in `failing` is not asked; one that fails joins it.
async fn holds(
    coordinator: &Coordinator,
    owner: &str,
    record: &Record,
    write_by: Option<u64>,
    failing: &Mutex<HashSet<String>>,
) -> bool {
    let failing_set = || failing.lock().expect("handoff's failing set poisoned");
    if failing_set().contains(owner) {
        return false;
    }
    let (coordinator, owner_name) = (coordinator.clone(), owner.to_string());
    let held = match write_by {
        Some(by) => in_time(coordinator.store_on(owner_name, record.clone(), Some(by)))
            .await
            .map(Some),
        None => in_time(coordinator.read_from(owner_name, record.key.clone()))
            .await
            .map(|held| held.map(|r| r.version)),
    };
    match held {
        Ok(held) => held.is_some_and(|version| version >= record.version),
        Err(e) => {
            let write = write_by.is_some();
            debug!(%owner, key = %escaped(&record.key), write, why = e.detail(), "handoff failed");
            failing_set().insert(owner.to_string());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(keys: &[&str]) -> Vec<Held> {
        keys.iter()
            .map(|k| (k.to_string(), Version::at(1)))
            .collect()
    }

    fn keys(held: &[Held]) -> Vec<&str> {
        held.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// A record is handed off only while a delete newer than it must still
    /// be on its replicas when the write arrives: younger than the grace
    /// period by at least the margin, counted when it is sent.
    #[test]
    fn only_records_younger_than_the_grace_by_the_margin_are_handed_off() {
        let grace = Duration::from_secs(60);
        let now = 1_000_000;
        let edge = now - 60_000 + MARGIN.as_millis() as u64;
        assert!(may_hand_off(&Version::at(now), now, grace));
        assert!(may_hand_off(&Version::at(edge), now, grace));
        assert!(!may_hand_off(&Version::at(edge - 1), now, grace));
        // Young enough when the round began is not enough ten seconds later.
        assert!(!may_hand_off(&Version::at(edge), now + 10_000, grace));
    }

    #[test]
    fn each_round_goes_on_after_the_last_key_tried_and_wraps_around() {
        let mut cursor = Cursor::default();
        let mut take = |held: Vec<Held>, limit: usize| {
            let taken = cursor.next(held, limit);
            cursor.tried(taken.last().map(|(key, _)| key));
            taken
        };
        let all = held(&["a", "b", "c", "d", "e"]);
        assert_eq!(keys(&take(all.clone(), 2)), ["a", "b"]);
        // a and b are still held (say their replicas are cut off): c and d go next.
        assert_eq!(keys(&take(all.clone(), 2)), ["c", "d"]);
        assert_eq!(keys(&take(all.clone(), 2)), ["e", "a"]);
        // Keys handed off meanwhile are not there to take.
        assert_eq!(keys(&take(held(&["a", "d"]), 2)), ["d", "a"]);
        // A round with nothing to take leaves the cursor where it was.
        assert_eq!(keys(&take(Vec::new(), 2)), Vec::<&str>::new());
        assert_eq!(keys(&take(all.clone(), 9)), ["b", "c", "d", "e", "a"]);
        // A round that got through only some of what it took goes on after
        // the last it tried.
        assert_eq!(keys(&cursor.next(all.clone(), 4)), ["b", "c", "d", "e"]);
        cursor.tried(Some(&"c".to_string()));
        assert_eq!(keys(&cursor.next(all, 2)), ["d", "e"]);
    }

    /// Records whose replicas answer slowly (1.5 s each, under their timeout)
    /// hold the round for the budget and what was begun in it, not for all
    /// 256: 16 begin at once, 16 more 1.5 s later, and none after 2 s.
    #[tokio::test(start_paused = true)]
    async fn slow_replicas_hold_a_round_only_for_its_budget() {
        let slow = |i: usize| async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            Some(i)
        };
        let (done, begun) = within((0..PER_ROUND).collect(), AT_ONCE, BUDGET, slow).await;
        assert_eq!(begun, 2 * AT_ONCE);
        assert_eq!(done.len(), begun);
        // Quick ones all fit.
        let quick = |i: usize| async move { Some(i) };
        let (done, begun) = within((0..PER_ROUND).collect(), AT_ONCE, BUDGET, quick).await;
        assert_eq!((done.len(), begun), (PER_ROUND, PER_ROUND));
    }
}
