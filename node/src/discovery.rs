//! Discovery by DNS: find the other processes by resolving one name, again and again.
//!
//! In docker compose the service name (`node`) resolves, through Docker's
//! embedded DNS, to the address of every running replica of the service; a
//! killed container drops out of the answer at once and a new one appears in
//! it. So re-resolving the name every second is enough to follow the cluster
//! as it scales: nodes use it for `--peers-dns`, the balancer for `--nodes-dns`.

use std::{collections::BTreeSet, time::Duration};

use tracing::{debug, info, warn};

/// How often the name is resolved again.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Resolves `host_port` every [`INTERVAL`], forever, handing each answer (as
/// `IP:PORT` strings) to `found`, or the lookup's failure. `flag` names the
/// option in log lines. A failure is logged once, not every second, and
/// then retried.
pub async fn resolve_forever(
    host_port: String,
    flag: &str,
    mut found: impl FnMut(Result<BTreeSet<String>, String>),
) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        ticker.tick().await;
        match tokio::net::lookup_host(host_port.as_str()).await {
            Ok(answer) => {
                let addrs: BTreeSet<String> = answer.map(|a| a.to_string()).collect();
                if last_error.take().is_some() {
                    info!(name = %host_port, found = addrs.len(), "{flag} resolves again");
                }
                debug!(name = %host_port, ?addrs, "resolved {flag}");
                found(Ok(addrs));
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    warn!(name = %host_port, error = %message, "cannot resolve {flag}; will keep trying");
                    last_error = Some(message.clone());
                }
                found(Err(message));
            }
        }
    }
}
