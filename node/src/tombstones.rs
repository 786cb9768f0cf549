//! Tombstone collection: a deleted key does not take space forever.
//!
//! A delete writes a *tombstone*, a record that says "deleted at version V", so
//! that the delete wins over the older value everywhere. The tombstone must
//! stay until every replica has it. A replica that missed the delete still
//! holds the old value. If the others forgot the delete first, anti-entropy
//! and read repair would copy that value back, and the delete would be undone.
//!
//! So a node drops a tombstone only once it is older than the grace period
//! (`--tombstone-grace`, default 24 hours). Anti-entropy runs every second, so
//! by then every replica that was up has long had the tombstone. Anti-entropy
//! also stops comparing tombstones that old (`collected_before_ms` in its
//! requests). Two nodes that collect at different moments therefore do not
//! copy a tombstone back and forth between them.
//!
//! The rule has the limit that Cassandra's `gc_grace_seconds` has: a node that
//! was down for longer than the grace period, and comes back with its old
//! data, can bring deleted keys back. docs/replication.md says so.

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use crate::{state::NodeState, version::unix_ms};

/// The shortest grace period allowed. Anti-entropy leaves writes younger than
/// [`crate::antientropy::SETTLE`] (3 s) alone, and a replica needs a few of its
/// one-second rounds after that to receive a tombstone it missed.
pub const MIN_GRACE: Duration = Duration::from_secs(10);

/// Parses `--tombstone-grace`: a duration of at least [`MIN_GRACE`].
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    let grace = certs::flags::duration(text)?;
    if grace < MIN_GRACE {
        return Err(format!(
            "{text} is too short: a replica that missed a delete needs time to receive \
             the tombstone before the others drop it; choose {} or more",
            humantime::format_duration(MIN_GRACE)
        ));
    }
    Ok(grace)
}

/// Tombstones stamped before this time (Unix ms) are past their grace period.
pub fn cutoff_ms(grace: Duration) -> u64 {
    unix_ms().saturating_sub(grace.as_millis() as u64)
}

/// How often to look for tombstones past their grace: a tenth of it, between
/// 1 second and 1 minute.
fn interval(grace: Duration) -> Duration {
    (grace / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Collects tombstones past their grace period, forever.
pub async fn run(state: Arc<NodeState>) {
    let grace = state.tombstone_grace;
    let mut ticker = tokio::time::interval(interval(grace));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let before = cutoff_ms(grace);
        // Stopped with this task (the node stopping), the collection stops.
        let abandoned = tokio_util::sync::CancellationToken::new();
        let _if_dropped = abandoned.clone().drop_guard();
        let collecting = move |s: &crate::store::Store| s.collect_tombstones(before, &abandoned);
        match state.store.run(collecting).await {
            Ok(0) => {}
            Ok(collected) => {
                let grace = humantime::format_duration(grace);
                info!(collected, %grace, "collected tombstones past their grace period");
                let noun = if collected == 1 {
                    "tombstone"
                } else {
                    "tombstones"
                };
                state.events.publish(
                    "tombstones.collected",
                    &state.name,
                    format!("dropped {collected} {noun} older than {grace}"),
                );
            }
            Err(e) => warn!(error = %e, "collecting tombstones failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_shorter_than_the_minimum_is_refused_with_the_minimum() {
        let err = parse_grace("2s").unwrap_err();
        assert!(err.contains("2s is too short"), "{err}");
        assert!(err.contains("choose 10s or more"), "{err}");
        assert_eq!(parse_grace("10s").unwrap(), MIN_GRACE);
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn the_collector_looks_a_tenth_of_the_grace_apart_within_bounds() {
        assert_eq!(interval(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(
            interval(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
    }
}
