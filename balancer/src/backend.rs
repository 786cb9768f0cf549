//! The nodes behind the balancer, their health, and how they come and go.
//!
//! A backend is one node address with one pooled connection
//! ([`NodeConnection`]): every request to the node is multiplexed over a single
//! HTTP/2 connection (one TLS handshake, not one per request), which is made
//! again after a failure.
//!
//! Health has two sources:
//! - **active**: every `--health-interval` the balancer asks the node's
//!   grpc.health.v1 service. No answer within [`CHECK_TIMEOUT`] (a hung or
//!   SIGSTOPped node) or NOT_SERVING ejects it; the first good answer brings it
//!   back into rotation.
//! - **passive**: a forwarded request whose connection is refused or reset
//!   ejects the node at once, without waiting for the next check. So does a
//!   node shutting down gracefully (it sent GOAWAY), but the reads it took
//!   wait for its answers ([`Waiting`]). So do
//!   [`FAILURES_TO_EJECT`] requests in a row that the node failed to serve
//!   (`UNAVAILABLE`, `INTERNAL`, ...: [`is_outlier_failure`]) and another node
//!   then served, while its health checks still pass: this is *outlier
//!   detection*. A failure every node shares (a quorum that cannot be met) is
//!   the cluster's trouble, not one node's, and counts against none. An
//!   outlier is held out for a while before its health checks may bring it
//!   back, a hold that doubles each time it is ejected again ([`hold_for`]),
//!   and never more than half the nodes that serve are held out this way.
//!
//! Every ejection and return is a log line and an event.
//!
//! A node found by `--nodes-dns` whose address stops resolving (Docker drops a
//! stopped container from its DNS at once) is not forgotten at once: it stays,
//! ejected, with that reason, for [`FORGET_GONE_AFTER`]. So a killed container
//! shows as ejected rather than vanishing, and when it comes back (at its old
//! address, or a new one under its old name) it *returns*, its counts kept.

use std::{
    collections::BTreeSet,
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard, RwLock, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use certs::dial::Dialer;
use node::events::Events;
use proto::{
    Event, EventsRequest, StatusRequest, StatusResponse, WhoAmIRequest, WhoAmIResponse,
    admin_client::AdminClient,
};
use tokio::{sync::Notify, task::AbortHandle};
use tonic::Status;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::{info, warn};

use crate::connection::{Http2, NodeConnection, is_shutting_down, is_worn_out_connection};

/// A health check not answered within this counts as failed. With checks every
/// 500 ms, a node that stops answering is ejected within 1.5 s.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a node may stay out of rotation from the start (unreachable, or
/// not yet serving) before the balancer warns: a node's own patience with
/// its `--peers` seeds.
const WAITING_PATIENCE: Duration = Duration::from_secs(5);

/// Requests in a row a node must fail to serve before it is ejected as an
/// outlier. One or two failures can be bad luck; five in a row, while the
/// other nodes answer, is a sick node (Envoy's `consecutive_5xx` uses 5 too).
pub const FAILURES_TO_EJECT: u32 = 5;
/// How long a node's first outlier ejection holds it out of rotation.
pub const FIRST_HOLD: Duration = Duration::from_secs(1);
/// The longest hold: each outlier ejection doubles the hold up to this.
pub const MAX_HOLD: Duration = Duration::from_secs(30);
/// An outlier ejection this long after the previous one starts again at
/// [`FIRST_HOLD`]: the node has behaved in between.
const OUTLIER_MEMORY: Duration = Duration::from_secs(60);
/// How long a discovered node that no longer resolves is kept, ejected,
/// before it is forgotten: long enough to stop a container and start it again
/// during a lab, short enough that a scaled-down cluster is soon tidy.
pub const FORGET_GONE_AFTER: Duration = Duration::from_secs(300);
/// Why a node that no longer resolves is out of rotation.
/// Its messages say "5 min": keep them in step with [`FORGET_GONE_AFTER`].
const GONE_REASON: &str = "its address no longer resolves (its container was stopped or removed); \
                           forgotten after 5 min unless it comes back";

/// A gone node's health, now that it resolves again: what it was out for
/// before it went, if anything (an outlier's hold, which still holds), not
/// that its address no longer resolves.
fn back_from_gone(health: Health) -> Health {
    match health {
        Health::Ejected {
            since,
            reason,
            held_until,
        } => {
            let reason = match reason.strip_suffix(GONE_REASON) {
                Some(before) => before.strip_suffix("; then ").unwrap_or(before).to_string(),
                None => reason,
            };
            let reason = match reason.is_empty() {
                true => "it resolves again, and no health check has passed yet".to_string(),
                false => reason,
            };
            Health::Ejected {
                since,
                reason,
                held_until,
            }
        }
        other => other,
    }
}

/// What the reads waiting on a node's answers do when it is ejected
/// ([`Backend::ejection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Give up on it and go to another node: it hung, or is failing.
    GiveUp,
    /// Wait on: it is shutting down gracefully, and answers what it took.
    Stay,
}

/// A backend's health, as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not in rotation yet: no health check has found it serving. `reason`
    /// says why the last one failed (a node still starting, say); `None`
    /// before the first check.
    Waiting { reason: Option<String> },
    /// In rotation.
    Healthy,
    /// Out of rotation until a health check succeeds, and not before
    /// `held_until` (an outlier's hold; `None` for other ejections).
    Ejected {
        since: Instant,
        reason: String,
        held_until: Option<Instant>,
    },
}

impl Health {
    /// "waiting", "healthy" or "ejected".
    pub fn name(&self) -> &'static str {
        match self {
            Health::Waiting { .. } => "waiting",
            Health::Healthy => "healthy",
            Health::Ejected { .. } => "ejected",
        }
    }
}

/// One node behind the balancer.
#[derive(Debug)]
pub struct Backend {
    pub addr: String,
    /// The node's `--name`, asked for (`Admin.WhoAmI`) after its first good
    /// health check and kept up to date from the traces of its answers; its
    /// address until then.
    /// An `Arc`, so that naming the node on every request costs no copy.
    name: Mutex<Arc<str>>,
    connection: NodeConnection,
    /// What the node said of our connection to it (`Admin.WhoAmI`), asked
    /// with its name: the TLS of this link, for the dashboard.
    link: Mutex<Option<WhoAmIResponse>>,
    /// The connection (its count of dials) `link` was asked on: asked again
    /// on each new one, which may reach another node (one started on a
    /// stopped node's port) whose name and identity are its own.
    asked_on: AtomicU64,
    /// The name another node at this address had, when this one renamed
    /// it: said as an event at its next passed check ([`Backends::passed_check`]).
    renamed_from: Mutex<Option<Arc<str>>>,
    /// The events the node last reported (`node_view`), for the dashboard
    /// to go on showing once the node can no longer be asked: a killed
    /// node's last words are what a learner looks for.
    last_events: Mutex<Vec<Event>>,
    health: Mutex<Health>,
    /// Wakes the requests waiting on this node when it is ejected.
    ejected: Notify,
    /// Requests in a row this node failed to serve ([`is_outlier_failure`]).
    failures_in_a_row: AtomicU32,
    /// Kept in rotation, failing, because too few nodes would be left: said
    /// once until it serves a request again.
    kept_in: AtomicBool,
    /// Its outlier ejections, for the next hold.
    outliers: Mutex<OutlierHistory>,
    /// Since when its address has not resolved (a `--nodes-dns` node whose
    /// container stopped); `None` while it resolves. Tokio's clock, so a test
    /// can let five minutes pass without waiting them.
    gone_since: Mutex<Option<tokio::time::Instant>>,
    /// When it was added, and whether it has been warned of as never coming
    /// into rotation ([`WAITING_PATIENCE`]).
    added: Instant,
    warned_waiting: AtomicBool,
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub ejections: AtomicU64,
}

impl Backend {
    fn new(addr: String, connection: NodeConnection) -> Self {
        Backend {
            name: Mutex::new(addr.as_str().into()),
            addr,
            connection,
            link: Mutex::new(None),
            asked_on: AtomicU64::new(0),
            renamed_from: Mutex::new(None),
            last_events: Mutex::new(Vec::new()),
            health: Mutex::new(Health::Waiting { reason: None }),
            ejected: Notify::new(),
            failures_in_a_row: AtomicU32::new(0),
            kept_in: AtomicBool::new(false),
            outliers: Mutex::new(OutlierHistory::default()),
            gone_since: Mutex::new(None),
            added: Instant::now(),
            warned_waiting: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// The node's name (or its address, before its first answer).
    pub fn name(&self) -> Arc<str> {
        self.name.lock().expect("name poisoned").clone()
    }

    /// Takes note of the name the node gave in a trace.
    pub fn learn_name(&self, name: &str) {
        if name.is_empty() {
            return;
        }
        let mut current = self.name.lock().expect("name poisoned");
        if **current != *name {
            let was = std::mem::replace(&mut *current, name.into());
            // Logged after the lock is let go: the list is sorted by name
            // under its own lock, which requests wait on.
            drop(current);
            match *was == *self.addr {
                true => info!(addr = %self.addr, node = %name, "backend named"),
                // Another node answers at the address now (started on a
                // stopped one's port): what it counted is the address's.
                false => {
                    warn!(
                        addr = %self.addr, node = %name, %was,
                        "another node answers at this backend's address now; its counts so \
                         far are the address's, both nodes'"
                    );
                    *self.renamed_from.lock().expect("renamed poisoned") = Some(was);
                }
            }
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().expect("health poisoned").clone()
    }

    /// In rotation? Asked for every backend on every request, so it looks
    /// without copying the health (and its reason).
    pub fn is_healthy(&self) -> bool {
        *self.health.lock().expect("health poisoned") == Health::Healthy
    }

    /// Completes when the node is next ejected, with the reason. Call it
    /// before sending: an ejection after the call is never missed.
    pub fn ejection(&self) -> impl Future<Output = String> + '_ {
        let ejected = self.ejected.notified();
        async move {
            ejected.await;
            match self.health() {
                Health::Ejected { reason, .. } => reason,
                // Back already: rare, and the reason went with the ejection.
                other => format!("it is {} again by now", other.name()),
            }
        }
    }

    /// The pooled connection to the node, dialed if need be.
    pub async fn connection(&self) -> Result<Http2, Status> {
        self.connection.ready().await
    }

    /// Takes note of a forwarded request the node served: its run of
    /// failures, if any, is over. Called for every answer, so it writes only
    /// when there is a run to end.
    pub fn served(&self) {
        if self.failures_in_a_row.load(Ordering::Relaxed) != 0 {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
        }
        // Apart from the run: a node kept in has its run counted afresh, so
        // its run may be over (zero) while it has not yet served since.
        if self.kept_in.load(Ordering::Relaxed) {
            self.kept_in.store(false, Ordering::Relaxed);
        }
    }

    /// Takes note of a forwarded request the node failed to serve (and
    /// another node served). The [`FAILURES_TO_EJECT`]th in a row ejects it as
    /// an outlier, held out of rotation for [`hold_for`] its ejections, if
    /// `may_hold_out` agrees: it says no (`None`) when too few other nodes
    /// would be left, and its yes is a guard held until the node is out, so
    /// that two nodes cannot both be let go on the same count. True if it was
    /// ejected.
    pub fn failed<G>(
        &self,
        status: &Status,
        may_hold_out: impl FnOnce() -> Option<G>,
        events: &Events,
    ) -> bool {
        let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failures != FAILURES_TO_EJECT {
            return false;
        }
        // Failures are taken note of once another node has served the
        // request: by then this one may be out already, for a reason of its
        // own. Out, it is neither held out nor "kept in", and no hold is
        // counted in its history that was never applied.
        if !self.is_healthy() {
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            return false;
        }
        let code = proto::code_name(status.code());
        let last = status.message();
        let Some(_decided) = may_hold_out() else {
            // Counted afresh, so that it is held out once the others recover.
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            if self.kept_in.swap(true, Ordering::Relaxed) {
                return false;
            }
            let name = self.name();
            warn!(
                node = %name, addr = %self.addr, failures, last = %format_args!("{code}: {last}"),
                "backend failing, but kept in rotation: holding it out would leave too few nodes"
            );
            events.publish(
                "backend.failing",
                &name,
                format!(
                    "{name} failed {failures} requests in a row (last: {code}: {last}), \
                     but stays in rotation: at least half the nodes must stay in"
                ),
            );
            return false;
        };
        self.kept_in.store(false, Ordering::Relaxed);
        // Counted in the history only once applied: a health check (on
        // another thread, with --threads) may have ejected it meanwhile.
        let mut outliers = self.outliers.lock().expect("outliers poisoned");
        let mut counted = *outliers;
        let hold = counted.next_hold(Instant::now());
        let reason = format!(
            "{failures} requests in a row failed (last: {code}: {last}); \
             held out for {}s before health checks may return it",
            hold.as_secs()
        );
        let held = self.take_out(reason, Some(Instant::now() + hold), Waiting::GiveUp, events);
        if held {
            *outliers = counted;
        }
        held
    }

    /// Puts the node back into rotation (or in for the first time), after a
    /// health check asked at `asked`, unless it is an outlier whose hold has
    /// not ended, or it was ejected after `asked`: a request found its
    /// connection broken while the check was out, and that is newer news
    /// than the check's answer (the next check decides).
    pub fn mark_healthy(&self, asked: Instant, events: &Events) {
        let before = {
            let mut health = self.health.lock().expect("health poisoned");
            // A check that passed just as the address stopped resolving.
            if self.is_gone() {
                return;
            }
            match *health {
                Health::Ejected {
                    held_until: Some(until),
                    ..
                } if Instant::now() < until => return,
                Health::Ejected { since, .. } if since > asked => return,
                _ => {}
            }
            std::mem::replace(&mut *health, Health::Healthy)
        };
        if before == Health::Healthy {
            // Still in: a passing check says nothing of its requests.
            return;
        }
        // Back, or in for the first time: its requests start with a clean slate.
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        self.kept_in.store(false, Ordering::Relaxed);
        let name = self.name();
        match before {
            Health::Healthy => {}
            Health::Waiting { .. } => {
                info!(node = %name, addr = %self.addr, "backend healthy");
                events.publish(
                    "backend.healthy",
                    &name,
                    format!("{name} ({}) takes traffic", self.addr),
                );
            }
            Health::Ejected {
                since,
                reason,
                held_until,
            } => {
                let out = format!("{:.1}s", since.elapsed().as_secs_f64());
                info!(node = %name, addr = %self.addr, out, was = %reason, "backend returned");
                let message = match held_until {
                    None => {
                        format!("{name} answers health checks again after {out}; back in rotation")
                    }
                    Some(_) => {
                        // What a next ejection would hold it out for: longer
                        // only up to MAX_HOLD, and only within OUTLIER_MEMORY.
                        let ejections = self.outliers.lock().expect("outliers poisoned").ejections;
                        format!(
                            "{name} is back in rotation after {out}: its hold is over and it \
                             answers health checks (an outlier again within {}s of its \
                             ejection, it is held out for {}s)",
                            OUTLIER_MEMORY.as_secs(),
                            hold_for(ejections + 1).as_secs()
                        )
                    }
                };
                events.publish("backend.returned", &name, message);
            }
        }
    }

    /// Takes the node out of rotation because of `reason`. A node that has
    /// never been in rotation is not ejected: it goes on waiting, and the
    /// reason is logged when it changes (a node still starting is no news).
    /// Nor is one ejected again: while it is out, the reason is brought up to
    /// date (a node that said it was shutting down, and is now not reachable).
    ///
    /// `waiting` says what the reads waiting on the node's answers do.
    pub fn eject(&self, reason: String, waiting: Waiting, events: &Events) {
        self.take_out(reason, None, waiting, events);
    }

    /// [`Backend::eject`], with an outlier's hold. True if it was in rotation.
    fn take_out(
        &self,
        reason: String,
        held_until: Option<Instant>,
        waiting: Waiting,
        events: &Events,
    ) -> bool {
        let mut health = self.health.lock().expect("health poisoned");
        match &mut *health {
            // An outlier's reason (the failures, the hold) stays while it is
            // held, and a hold is never named where none was set. Once the
            // hold is over, it is out for what came next (it died, say).
            Health::Ejected {
                reason: last,
                held_until: hold,
                ..
            } if held_until.is_none() && hold.is_none_or(|until| Instant::now() >= until) => {
                *hold = None;
                if *last != reason {
                    info!(node = %self.name(), addr = %self.addr, %reason, "backend still out of rotation");
                    *last = reason;
                }
                drop(health);
                // Out as shutting down, and now hung: the reads waiting on
                // it give up after all.
                if waiting == Waiting::GiveUp {
                    self.ejected.notify_waiters();
                }
                return false;
            }
            Health::Ejected { .. } => return false,
            Health::Waiting { reason: last } => {
                // Nodes started with the balancer come up a moment apart:
                // worth a warning only once it has been a while.
                let waited = self.added.elapsed();
                if waited >= WAITING_PATIENCE && !self.warned_waiting.swap(true, Ordering::Relaxed)
                {
                    warn!(
                        addr = %self.addr, %reason, waited = ?Duration::from_secs(waited.as_secs()),
                        "backend still not in rotation; is the node running, and is the address right?"
                    );
                } else if last.as_ref() != Some(&reason) {
                    info!(addr = %self.addr, %reason, "backend not in rotation yet");
                }
                *last = Some(reason);
                return false;
            }
            Health::Healthy => {}
        }
        *health = Health::Ejected {
            since: Instant::now(),
            reason: reason.clone(),
            held_until,
        };
        drop(health);
        if waiting == Waiting::GiveUp {
            self.ejected.notify_waiters();
        }
        self.ejections.fetch_add(1, Ordering::Relaxed);
        let name = self.name();
        // A node that is shutting down (`Waiting::Stay`) was stopped on
        // purpose: news, not trouble.
        match waiting {
            Waiting::Stay => info!(node = %name, addr = %self.addr, %reason, "backend ejected"),
            Waiting::GiveUp => warn!(node = %name, addr = %self.addr, %reason, "backend ejected"),
        }
        events.publish(
            "backend.ejected",
            &name,
            format!("{name} ejected: {reason}"),
        );
        true
    }

    /// Whether its address has stopped resolving (see [`FORGET_GONE_AFTER`]).
    pub fn is_gone(&self) -> bool {
        self.gone_since().is_some()
    }

    fn gone_since(&self) -> Option<tokio::time::Instant> {
        *self.gone_since.lock().expect("gone_since poisoned")
    }

    /// Its address no longer resolves: out of rotation (if it was in) with
    /// that reason, kept for [`FORGET_GONE_AFTER`]. False if it was never in
    /// rotation: there is nothing to remember, and it can go at once.
    fn went_away(&self, events: &Events) -> bool {
        let name = self.name();
        let before = {
            // Under the health lock, so that a check passing at this moment
            // cannot put it back in rotation ([`Backend::mark_healthy`]).
            let mut health = self.health.lock().expect("health poisoned");
            *self.gone_since.lock().expect("gone_since poisoned") =
                Some(tokio::time::Instant::now());
            // Already out (a graceful stop, a failed check), the reason says
            // so first: the container leaving the DNS is what came after.
            let (since, held_until, reason) = match &*health {
                Health::Waiting { .. } => return false,
                Health::Healthy => (Instant::now(), None, GONE_REASON.to_string()),
                Health::Ejected {
                    since,
                    held_until,
                    reason,
                } => {
                    // Not twice: a node back under an outlier's hold keeps
                    // its old reason, and may leave the DNS again.
                    let reason = match reason.ends_with(GONE_REASON) {
                        true => reason.clone(),
                        false => format!("{reason}; then {GONE_REASON}"),
                    };
                    (*since, *held_until, reason)
                }
            };
            std::mem::replace(
                &mut *health,
                Health::Ejected {
                    since,
                    reason,
                    // An outlier's hold still holds, should it come back.
                    held_until,
                },
            )
        };
        self.ejected.notify_waiters();
        match before {
            Health::Healthy => {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                warn!(node = %name, addr = %self.addr, reason = GONE_REASON, "backend ejected");
                events.publish(
                    "backend.ejected",
                    &name,
                    format!("{name} ejected: {GONE_REASON}"),
                );
            }
            _ => {
                info!(node = %name, addr = %self.addr, "backend gone from DNS; kept, ejected, in case it comes back");
                events.publish(
                    "backend.gone",
                    &name,
                    format!("{name} (out of rotation) {GONE_REASON}"),
                );
            }
        }
        true
    }

    /// This new backend is `old` come back (a container started again, at
    /// its old address or another): it takes over `old`'s counts and its
    /// ejection, so that its first good check is a return.
    ///
    /// A newcomer already past its first check (it told its name late) keeps
    /// its own health. If that is in rotation, no check will say the node
    /// returned, so this says it instead, or the feed would show the old entry
    /// gone for good. (One out of rotation says so when it comes back.)
    fn take_over(&self, old: &Backend, events: &Events) {
        for (mine, theirs) in [
            (&self.requests, &old.requests),
            (&self.errors, &old.errors),
            (&self.ejections, &old.ejections),
        ] {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let in_rotation = {
            let mut health = self.health.lock().expect("health poisoned");
            if let Health::Waiting { .. } = *health {
                // Its hold, with the history that set it: a node that fails
                // again is held out longer, as the return event says (up to
                // MAX_HOLD).
                *self.outliers.lock().expect("outliers poisoned") =
                    *old.outliers.lock().expect("outliers poisoned");
                *health = back_from_gone(old.health());
            }
            *health == Health::Healthy
        };
        let name = self.name();
        info!(node = %name, from = %old.addr, to = %self.addr, "backend resolves again");
        if in_rotation {
            events.publish(
                "backend.returned",
                &name,
                format!(
                    "{name} is back, at {} (was {}); its old entry, which stopped resolving, \
                     merges into this one",
                    self.addr, old.addr
                ),
            );
        }
    }

    /// Asks the node its name, so that status, traces and logs can use it,
    /// and what it makes of our connection; by `deadline` (the health
    /// check's, which it is part of), else at the next check.
    async fn ask_name(&self, deadline: tokio::time::Instant) {
        let ask = async {
            let connection = self.connection.ready().await?;
            // The connection asked on, once answered: a later one may
            // reach another node.
            let dial = self.connection.dials();
            let answer = AdminClient::with_origin(connection, self.connection.origin())
                .who_am_i(WhoAmIRequest {})
                .await?;
            Ok::<_, Status>((answer.into_inner(), dial))
        };
        if let Ok(Ok((answer, dial))) = tokio::time::timeout_at(deadline, ask).await {
            self.learn_name(&answer.server_name);
            *self.link.lock().expect("link poisoned") = Some(answer);
            self.asked_on.store(dial, Ordering::Relaxed);
        }
    }

    /// The node's answer to `Admin.WhoAmI` about our connection, once asked:
    /// the identity its certificate proves, the TLS version and cipher suite.
    pub fn link(&self) -> Option<WhoAmIResponse> {
        self.link.lock().expect("link poisoned").clone()
    }

    /// The node's own view, for the dashboard: its `Admin.Status` (members,
    /// keys, repair backlog) and its recent events.
    pub async fn node_view(&self) -> Result<(StatusResponse, Vec<Event>), Status> {
        let connection = self.connection.ready().await?;
        let mut admin = AdminClient::with_origin(connection, self.connection.origin());
        let status = admin.status(StatusRequest {}).await?.into_inner();
        let history_only = EventsRequest { history_only: true };
        let mut feed = admin.events(history_only).await?.into_inner();
        let mut events = Vec::new();
        while let Some(event) = feed.message().await? {
            events.push(event);
        }
        *self.last_events.lock().expect("events poisoned") = events.clone();
        Ok((status, events))
    }

    /// The events the node reported when it was last asked ([`Self::node_view`]).
    pub fn last_events(&self) -> Vec<Event> {
        self.last_events.lock().expect("events poisoned").clone()
    }

    /// One active health check: Ok, or why it failed and what the reads
    /// waiting on the node should do.
    async fn check(&self) -> Result<(), (String, Waiting)> {
        // Whether a connection was made: out of time before, nothing answered
        // at the address at all (a container gone, say), not the node.
        let connected = AtomicBool::new(false);
        let check_once = || async {
            let mut connection = self.connection.ready().await?;
            connected.store(true, Ordering::Relaxed);
            // Our own failure (a node shutting down, say), not tonic's
            // "Service was not ready" around it.
            tower::ServiceExt::ready(&mut connection).await?;
            let request = HealthCheckRequest {
                service: String::new(),
            };
            HealthClient::with_origin(connection, self.connection.origin())
                .check(request)
                .await
        };
        // A connection the balancer closed under the check says nothing of
        // the node: checked again, once, on a new one (the failure marked
        // the old one ended).
        let check = async {
            match check_once().await {
                Err(status) if is_worn_out_connection(&status) => check_once().await,
                checked => checked,
            }
        };
        // One deadline for the check and the name asked after it: a node
        // that answers the one and hangs before the other is checked again
        // (and ejected) on time.
        let deadline = tokio::time::Instant::now() + CHECK_TIMEOUT;
        match tokio::time::timeout_at(deadline, check).await {
            Err(_) if !connected.load(Ordering::Relaxed) => Err((
                format!(
                    "no connection within {CHECK_TIMEOUT:?}: nothing answered at its address \
                     (a container stopped or gone, or a process paused?)"
                ),
                Waiting::GiveUp,
            )),
            Err(_) => Err((
                format!("health check not answered within {CHECK_TIMEOUT:?}"),
                Waiting::GiveUp,
            )),
            Ok(Err(status)) if is_shutting_down(&status) => {
                Err((status.message().to_string(), Waiting::Stay))
            }
            Ok(Err(status)) => Err((
                format!("health check failed: {}", status.message()),
                Waiting::GiveUp,
            )),
            Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                if self.asked_on.load(Ordering::Relaxed) != self.connection.dials() {
                    self.ask_name(deadline).await;
                }
                Ok(())
            }
            Ok(Ok(_)) => Err((
                "node reports NOT_SERVING (starting, shutting down, or paused by `clusterlab fault --pause`)"
                    .into(),
                Waiting::GiveUp,
            )),
        }
    }
}

/// Whether a failed request counts toward ejecting its node as an outlier:
/// the node could not serve it. Not an answer about the request (a bad key,
/// a refusal), not the client's deadline or cancellation, and not overload
/// (`RESOURCE_EXHAUSTED`): ejecting a node for being busy would pile its load
/// onto the others. A broken connection ejects on its own.
pub fn is_outlier_failure(status: &Status) -> bool {
    use tonic::Code::*;
    matches!(status.code(), Unavailable | Unknown | Internal | DataLoss)
}

/// How long an outlier's `ejections`th ejection in a row holds it out:
/// [`FIRST_HOLD`], doubling each time, up to [`MAX_HOLD`].
pub fn hold_for(ejections: u32) -> Duration {
    let doublings = ejections.saturating_sub(1).min(16);
    (FIRST_HOLD * 2u32.pow(doublings)).min(MAX_HOLD)
}

/// A backend's outlier ejections: how many in a row, and the last one.
#[derive(Debug, Default, Clone, Copy)]
struct OutlierHistory {
    ejections: u32,
    last: Option<Instant>,
}

impl OutlierHistory {
    /// Counts an ejection at `now` and returns its hold. An ejection more
    /// than [`OUTLIER_MEMORY`] after the last one starts the count again.
    fn next_hold(&mut self, now: Instant) -> Duration {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) > OUTLIER_MEMORY)
        {
            self.ejections = 0;
        }
        self.ejections += 1;
        self.last = Some(now);
        hold_for(self.ejections)
    }
}

/// Counts a request in flight on a backend for as long as it lives.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn start(backend: Arc<Backend>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(backend)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every backend, and the tasks that check them.
#[derive(Debug)]
pub struct Backends {
    dialer: Dialer,
    events: Events,
    interval: Duration,
    /// `--nodes`: always kept.
    fixed: BTreeSet<String>,
    /// A std lock: read on every request, written when nodes come or go, never
    /// held across an `.await`.
    all: RwLock<Vec<(Arc<Backend>, AbortHandle)>>,
    /// Taken to decide on holding a node out, and held until it is out.
    outlier_decisions: Mutex<()>,
}

/// The order nodes are listed in, everywhere: by name, a number at its end by
/// its value (`node-2` before `node-10`), then by address (a node not yet
/// named is known by its address).
pub fn name_order(name: &str, addr: &str) -> (String, Option<u64>, String) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (
        stem.to_string(),
        number.parse::<u64>().ok(),
        addr.to_string(),
    )
}

impl Backends {
    /// Backends for the `fixed` addresses, checked every `interval`.
    pub fn new(
        fixed: Vec<String>,
        interval: Duration,
        dialer: Dialer,
        events: Events,
    ) -> Arc<Self> {
        let backends = Arc::new(Backends {
            dialer,
            events,
            interval,
            fixed: fixed.iter().cloned().collect(),
            all: RwLock::new(Vec::new()),
            outlier_decisions: Mutex::new(()),
        });
        backends.reconcile(&BTreeSet::new());
        backends
    }

    /// A snapshot of every backend.
    pub fn list(&self) -> Vec<Arc<Backend>> {
        let all = self.all.read().expect("backends poisoned");
        all.iter().map(|(b, _)| b.clone()).collect()
    }

    /// Whether `candidate` may be held out as an outlier: at most half the
    /// nodes that serve (in rotation, or held out as outliers) are held out
    /// at once, and another node stays in rotation. A node that never came
    /// up, or is out as down, is no node to keep the rest company: counted,
    /// it let two of three serving nodes be held out beside it. A yes is a
    /// guard: hold it until the node is out, so that the next decision
    /// counts it.
    pub fn may_hold_out(&self, candidate: &Backend) -> Option<MutexGuard<'_, ()>> {
        let decided = self
            .outlier_decisions
            .lock()
            .expect("outlier lock poisoned");
        let all = self.all.read().expect("backends poisoned");
        let (mut serving, mut held, mut others_healthy) = (0, 0, 0);
        let now = Instant::now();
        // A node that no longer resolves is not one of the nodes, but for
        // one held out: come back under its hold (a container restarted), it
        // takes the hold up again, and counts as held.
        for (backend, _) in all.iter() {
            let gone = backend.is_gone();
            match backend.health() {
                Health::Ejected {
                    held_until: Some(until),
                    ..
                } if !gone || until > now => held += 1,
                _ if gone => continue,
                Health::Healthy if !std::ptr::eq(&**backend, candidate) => others_healthy += 1,
                Health::Healthy => {}
                _ => continue,
            }
            serving += 1;
        }
        ((held + 1) * 2 <= serving && others_healthy > 0).then_some(decided)
    }

    /// The events feed backends report to.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Makes the backend set `--nodes` plus `discovered`: adds new addresses
    /// (and starts checking them); ejects discovered ones that went away, and
    /// forgets them [`FORGET_GONE_AFTER`] later unless they come back.
    ///
    /// An address that resolves again gets a new backend, even if one that
    /// went away had it: Docker may have given the address to another
    /// container. The node's name, once it answers, says whether it is the
    /// one that went away (see `take_over_namesake`).
    pub fn reconcile(self: &Arc<Self>, discovered: &BTreeSet<String>) {
        let wanted: BTreeSet<&String> = self.fixed.iter().chain(discovered).collect();
        let mut all = self.all.write().expect("backends poisoned");
        all.retain(|(backend, checker)| {
            if wanted.contains(&backend.addr) && !backend.is_gone() {
                return true;
            }
            let name = backend.name();
            match backend.gone_since() {
                None => {
                    checker.abort();
                    let kept = backend.went_away(&self.events);
                    if !kept {
                        info!(addr = %backend.addr, "backend gone from DNS before it took traffic; removed");
                        self.events.publish(
                            "backend.removed",
                            &name,
                            format!("{name} no longer resolves, and never took traffic; removed"),
                        );
                    }
                    kept
                }
                Some(since) if since.elapsed() >= FORGET_GONE_AFTER => {
                    info!(node = %name, addr = %backend.addr, "backend forgotten: gone from DNS for 5 min");
                    self.events.publish(
                        "backend.removed",
                        &name,
                        format!("{name} has not resolved for 5 min; forgotten"),
                    );
                    false
                }
                Some(_) => true,
            }
        });
        for addr in wanted {
            if all.iter().any(|(b, _)| &b.addr == addr && !b.is_gone()) {
                continue;
            }
            let connection = match NodeConnection::new(addr, self.dialer.clone()) {
                Ok(connection) => connection,
                Err(e) => {
                    warn!(%addr, error = %e, "not a usable node address");
                    continue;
                }
            };
            let backend = Arc::new(Backend::new(addr.clone(), connection));
            let checker = self.check(backend.clone());
            info!(%addr, "backend added");
            all.push((backend, checker));
        }
        all.sort_by_cached_key(|(b, _)| name_order(&b.name(), &b.addr));
    }

    /// Starts checking `backend` every `--health-interval`.
    fn check(self: &Arc<Self>, backend: Arc<Backend>) -> AbortHandle {
        let checker = tokio::spawn(check_forever(backend, Arc::downgrade(self), self.interval));
        checker.abort_handle()
    }

    /// `backend` passed a health check: perhaps a node we knew, back at a new
    /// address ([`Backends::take_over_namesake`]), and in rotation unless
    /// held out.
    ///
    /// It looks for a namesake at every check, not only the first: the node
    /// may not have told its name in time for it (it is asked again at each
    /// check until it does), or its old entry may go only after it came. A
    /// backend already in rotation that takes over an entry gains its counts
    /// only: it stays in rotation, and an outlier hold on the old entry lapses.
    fn passed_check(&self, backend: &Arc<Backend>, asked: Instant) {
        let renamed = backend
            .renamed_from
            .lock()
            .expect("renamed poisoned")
            .take();
        if let Some(was) = renamed {
            let name = backend.name();
            self.events.publish(
                "backend.renamed",
                &name,
                format!(
                    "{name} answers at {} now, where {was} did (started on its port?); the \
                     counts so far are the address's, both nodes'",
                    backend.addr
                ),
            );
        }
        self.take_over_namesake(backend);
        self.keep_in_name_order();
        backend.mark_healthy(asked, &self.events);
    }

    /// Keeps the list in [`name_order`], as status and the dashboard show it,
    /// so that round-robin's "next in rotation (2 of 3)" counts in the order a
    /// learner reads. A node tells its name at a health check, so the order is
    /// looked at after each: under the read lock, which does not hold up the
    /// requests that read the list, and sorted only when it is out of order.
    fn keep_in_name_order(&self) {
        let key = |(b, _): &(Arc<Backend>, AbortHandle)| name_order(&b.name(), &b.addr);
        if self
            .all
            .read()
            .expect("backends poisoned")
            .is_sorted_by_key(key)
        {
            return;
        }
        self.all
            .write()
            .expect("backends poisoned")
            .sort_by_cached_key(key);
    }

    /// If a node that no longer resolves has `newcomer`'s name, the newcomer
    /// is that node come back: it takes over the old entry.
    fn take_over_namesake(&self, newcomer: &Arc<Backend>) {
        let name = newcomer.name();
        if *name == *newcomer.addr {
            return;
        }
        let is_namesake =
            |b: &Arc<Backend>| b.is_gone() && !Arc::ptr_eq(b, newcomer) && b.name() == name;
        // Looked for at every passing check, so first under the read lock,
        // which does not hold up the requests that read the list.
        let any = self
            .all
            .read()
            .expect("backends poisoned")
            .iter()
            .any(|(b, _)| is_namesake(b));
        if !any {
            return;
        }
        let mut all = self.all.write().expect("backends poisoned");
        // Still one of ours: it may have gone while it was being checked.
        let listed = all
            .iter()
            .any(|(b, _)| Arc::ptr_eq(b, newcomer) && !b.is_gone());
        let namesake = all.iter().position(|(b, _)| is_namesake(b));
        let (true, Some(at)) = (listed, namesake) else {
            return;
        };
        let (old, checker) = all.remove(at);
        checker.abort();
        newcomer.take_over(&old, &self.events);
    }

    /// Re-resolves `host_port` every second and reconciles, forever.
    pub async fn resolve_forever(self: Arc<Self>, host_port: String) {
        // A failed lookup changes nothing: the nodes found before stay,
        // each health-checked (discovery logs the failure).
        node::discovery::resolve_forever(host_port, "--nodes-dns", |answer| {
            if let Ok(addrs) = answer {
                self.reconcile(&addrs);
            }
        })
        .await;
    }
}

/// How often a `--nodes` name is looked up again for the addresses of more
/// than one node ([`warn_if_several_nodes`]): a compose service may be scaled
/// out at any time, and a lookup is one packet to its resolver.
const SEVERAL_LOOKUP_EVERY: Duration = Duration::from_secs(10);

/// Looks `host_port`, one `--nodes` entry, up now and then until it resolves
/// to the addresses of more than one node; then warns once, in the log and
/// the events, and ends. A `--nodes` entry is one backend, dialed at the
/// first of its addresses that answers: given a compose service scaled out
/// (`--nodes node:7100` for `--nodes-dns node:7100`), the balancer would send
/// every request to one node, and nothing would say why the others sit idle.
pub async fn warn_if_several_nodes(host_port: String, events: Events) {
    if host_port.parse::<std::net::SocketAddr>().is_ok() {
        return;
    }
    let mut ticker = tokio::time::interval(SEVERAL_LOOKUP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A name that does not resolve is the backend's own failure to say.
        let Ok(answer) = tokio::net::lookup_host(host_port.as_str()).await else {
            continue;
        };
        if let Some(warning) = several_nodes(&host_port, answer) {
            warn!(name = %host_port, "{warning}");
            events.publish("backend.several_addresses", &host_port, warning);
            return;
        }
    }
}

/// What to say of `host_port`, a `--nodes` entry, if `addrs` (what it
/// resolves to) are more than one node's. Two addresses of one family are; a
/// single IPv4 address and a single IPv6 one are taken for one dual-stack
/// machine (`localhost` is 127.0.0.1 and ::1), which a warning would only
/// confuse.
fn several_nodes(
    host_port: &str,
    addrs: impl IntoIterator<Item = std::net::SocketAddr>,
) -> Option<String> {
    let ips: BTreeSet<std::net::IpAddr> = addrs.into_iter().map(|a| a.ip()).collect();
    let v4 = ips.iter().filter(|ip| ip.is_ipv4()).count();
    if v4 < 2 && ips.len() - v4 < 2 {
        return None;
    }
    let listed = ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>();
    Some(format!(
        "--nodes {host_port} resolves to {} addresses ({}), but is one backend: every \
         request it gets goes to whichever address answered first. If they are several \
         nodes (a compose service scaled out), the others get none: give --nodes-dns \
         {host_port}, which makes each address a node of its own. (One machine with \
         several addresses is one node: then all is well.)",
        ips.len(),
        listed.join(", ")
    ))
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Ok(all) = self.all.read() {
            for (_, checker) in all.iter() {
                checker.abort();
            }
        }
    }
}

/// Checks one backend every `interval`, forever, ejecting and returning it;
/// a node that shuts its connection gracefully is ejected at once. It ends
/// when the set of backends is dropped.
async fn check_forever(backend: Arc<Backend>, backends: Weak<Backends>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let checked = tokio::select! {
            // A pass says when it was asked: see `Backend::mark_healthy`.
            _ = ticker.tick() => {
                let asked = Instant::now();
                backend.check().await.map(|()| asked)
            }
            // Out at once, rather than at the next check.
            reason = backend.connection.said_goodbye() => Err((reason, Waiting::Stay)),
        };
        let Some(backends) = backends.upgrade() else {
            return;
        };
        match checked {
            Ok(asked) => backends.passed_check(&backend, asked),
            Err((reason, waiting)) => backend.eject(reason, waiting, &backends.events),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outlier_ejection_in_a_row_doubles_the_hold_up_to_the_cap() {
        let holds: Vec<u64> = (1..=8).map(|n| hold_for(n).as_secs()).collect();
        assert_eq!(holds, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(hold_for(u32::MAX), MAX_HOLD);
    }

    #[test]
    fn an_outlier_that_behaved_for_a_while_starts_again_at_the_first_hold() {
        let mut history = OutlierHistory::default();
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(history.next_hold(at(0)), FIRST_HOLD);
        assert_eq!(history.next_hold(at(10)), FIRST_HOLD * 2);
        assert_eq!(history.next_hold(at(40)), FIRST_HOLD * 4);
        // More than a minute after the last: a fresh start.
        assert_eq!(history.next_hold(at(101)), FIRST_HOLD);
    }

    /// A `--nodes` name that stands for several nodes is warned about, with
    /// what to give instead; one machine's IPv4 and IPv6 addresses are not.
    #[test]
    fn a_nodes_name_of_several_nodes_is_told_to_be_nodes_dns() {
        let at = |ips: &[&str]| -> Vec<std::net::SocketAddr> {
            ips.iter()
                .map(|ip| (ip.parse::<std::net::IpAddr>().unwrap(), 7100).into())
                .collect()
        };
        let scaled = at(&["172.18.0.3", "172.18.0.4", "172.18.0.3", "172.18.0.5"]);
        let warning = several_nodes("node:7100", scaled).expect("three nodes behind one name");
        assert!(
            warning.starts_with(
                "--nodes node:7100 resolves to 3 addresses \
             (172.18.0.3, 172.18.0.4, 172.18.0.5), but is one backend"
            ),
            "{warning}"
        );
        assert!(
            warning.contains(
                "If they are several nodes (a compose service scaled out), the others get \
                 none: give --nodes-dns node:7100, which makes each address a node of its own"
            ),
            "{warning}"
        );
        assert!(several_nodes("node:7100", at(&["fd00::3", "fd00::4"])).is_some());
        // One machine, dual-stack, or one address given twice: no warning.
        assert_eq!(
            several_nodes("localhost:7101", at(&["127.0.0.1", "::1"])),
            None
        );
        assert_eq!(
            several_nodes("n1:7100", at(&["172.18.0.3", "172.18.0.3"])),
            None
        );
        assert_eq!(several_nodes("n1:7100", at(&[])), None);
    }

    fn backend() -> Backend {
        let connection = NodeConnection::new("node-1:7100", Dialer::new(None)).unwrap();
        Backend::new("node-1:7100".into(), connection)
    }

    fn kinds(events: &Events) -> Vec<String> {
        events.recent().into_iter().map(|e| e.kind).collect()
    }

    /// The fifth failure in a row ejects, however many health checks pass
    /// in between: a check says nothing of the node's requests.
    #[test]
    fn five_failures_in_a_row_eject_and_passing_checks_do_not_reset_the_count() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        let failure = Status::unavailable("injected fault");
        for _ in 0..4 {
            assert!(!node.failed(&failure, || Some(()), &events));
            node.mark_healthy(Instant::now(), &events);
        }
        assert!(node.failed(&failure, || Some(()), &events));
        let (reason, held_until) = ejected_for(&node);
        assert!(
            reason.starts_with("5 requests in a row failed (last: UNAVAILABLE: injected fault)")
        );
        assert!(held_until.is_some());
        // Its checks pass, but its hold is not over.
        node.mark_healthy(Instant::now(), &events);
        assert_eq!(node.health().name(), "ejected");
        assert_eq!(kinds(&events), ["backend.healthy", "backend.ejected"]);
    }

    /// An outlier back from its hold is said to be held out for the next
    /// hold if it fails again soon: longer, up to the cap (it said "longer"
    /// at the cap too).
    #[test]
    fn an_outlier_back_from_its_hold_is_told_its_next_hold() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        let failure = Status::unavailable("injected fault");
        for (ejections, next) in [(1, 2), (6, 30)] {
            node.outliers.lock().unwrap().ejections = ejections - 1;
            for _ in 0..FAILURES_TO_EJECT {
                node.failed(&failure, || Some(()), &events);
            }
            if let Health::Ejected { held_until, .. } = &mut *node.health.lock().unwrap() {
                *held_until = Some(Instant::now());
            }
            node.mark_healthy(Instant::now(), &events);
            let back = events.recent().pop().expect("an event");
            assert_eq!(back.kind, "backend.returned");
            assert!(
                back.message.ends_with(&format!(
                    "(an outlier again within 60s of its ejection, it is held out for {next}s)"
                )),
                "{}",
                back.message
            );
        }
    }

    /// A check that was asked before a request ejected the node (its
    /// connection broke while the check was out) does not put it back: the
    /// ejection is the newer news. A check asked after it does.
    #[test]
    fn a_check_asked_before_an_ejection_does_not_undo_it() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        // Asked a moment ago, and still out.
        let asked = Instant::now() - Duration::from_millis(1);
        let reason = "connection failed: connection reset".to_string();
        node.eject(reason.clone(), Waiting::GiveUp, &events);
        node.mark_healthy(asked, &events);
        assert_eq!(ejected_for(&node).0, reason);
        node.mark_healthy(Instant::now(), &events);
        assert_eq!(node.health(), Health::Healthy);
        assert_eq!(
            kinds(&events),
            ["backend.healthy", "backend.ejected", "backend.returned"]
        );
    }

    /// A success ends the run; kept in because too few nodes would be left,
    /// a failing node is reported once per failing run, and counted afresh.
    #[test]
    fn a_success_ends_the_run_and_a_node_kept_in_is_reported_once() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        let failure = Status::internal("storage");
        for _ in 0..4 {
            node.failed(&failure, || Some(()), &events);
        }
        node.served();
        for _ in 0..4 {
            assert!(!node.failed(&failure, || Some(()), &events));
        }
        for _ in 0..16 {
            assert!(!node.failed(&failure, || None::<()>, &events));
        }
        assert_eq!(node.health(), Health::Healthy);
        assert_eq!(kinds(&events), ["backend.healthy", "backend.failing"]);
        // Once it has served, failing again is news again, though its run
        // was already counted afresh.
        node.served();
        for _ in 0..FAILURES_TO_EJECT {
            assert!(!node.failed(&failure, || None::<()>, &events));
        }
        assert_eq!(
            kinds(&events),
            ["backend.healthy", "backend.failing", "backend.failing"]
        );
        // Once the others are back, five more failures hold it out.
        for _ in 0..4 {
            assert!(!node.failed(&failure, || Some(()), &events));
        }
        assert!(node.failed(&failure, || Some(()), &events));
    }

    /// A node shutting down answers the reads it took: they wait for it when
    /// it is ejected. From a node that hung they go elsewhere.
    #[test]
    fn reads_wait_on_a_node_shutting_down_and_give_up_on_one_that_hung() {
        let events = Events::new("balancer");
        for (waiting, gives_up) in [(Waiting::Stay, false), (Waiting::GiveUp, true)] {
            let node = backend();
            node.mark_healthy(Instant::now(), &events);
            let mut ejection = std::pin::pin!(node.ejection());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(ejection.as_mut().poll(&mut cx).is_pending());
            node.eject("why".into(), waiting, &events);
            let woken = ejection.as_mut().poll(&mut cx).is_ready();
            assert_eq!(woken, gives_up, "{waiting:?}");
            if !woken {
                // Out as shutting down, then hung: they give up after all.
                node.eject("hung".into(), Waiting::GiveUp, &events);
                assert!(ejection.as_mut().poll(&mut cx).is_ready());
            }
        }
    }

    /// Once out, a node is not ejected again, but the reason status shows is
    /// the latest: a node that said it was shutting down, then cannot be reached.
    #[test]
    fn while_out_the_reason_is_brought_up_to_date_without_another_ejection() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        node.eject("it is shutting down".into(), Waiting::Stay, &events);
        node.eject("cannot reach it".into(), Waiting::GiveUp, &events);
        let reason = ejected_because(&node);
        assert_eq!(reason, "cannot reach it");
        assert_eq!(node.ejections.load(Ordering::Relaxed), 1);
        // An outlier's hold is not named where none was set.
        let failure = Status::unavailable("injected fault");
        for _ in 0..FAILURES_TO_EJECT {
            node.failed(&failure, || Some(()), &events);
        }
        let (reason, held_until) = ejected_for(&node);
        assert_eq!((reason.as_str(), held_until), ("cannot reach it", None));
        assert_eq!(kinds(&events), ["backend.healthy", "backend.ejected"]);
        // Nor is a hold counted that was never applied: back, and an
        // outlier for the first time, it is held for the first hold.
        node.mark_healthy(Instant::now(), &events);
        for _ in 0..FAILURES_TO_EJECT {
            node.failed(&failure, || Some(()), &events);
        }
        let reason = ejected_because(&node);
        assert!(
            reason.ends_with("held out for 1s before health checks may return it"),
            "{reason}"
        );
    }

    /// An outlier whose hold is over, and which now fails its health checks,
    /// is out for that: it used to keep "held out for 1s" until it was back.
    #[test]
    fn an_outliers_reason_gives_way_once_its_hold_is_over() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        let failure = Status::unavailable("injected fault");
        for _ in 0..FAILURES_TO_EJECT {
            node.failed(&failure, || Some(()), &events);
        }
        // Still held: the failures stay the reason.
        node.eject("cannot reach it".into(), Waiting::GiveUp, &events);
        let (reason, held_until) = ejected_for(&node);
        assert!(reason.contains("requests in a row failed"), "{reason}");
        assert!(held_until.is_some_and(|until| until > Instant::now()));
        // The hold ends now.
        if let Health::Ejected { held_until, .. } = &mut *node.health.lock().unwrap() {
            *held_until = Some(Instant::now());
        }
        node.eject("cannot reach it".into(), Waiting::GiveUp, &events);
        let (reason, held_until) = ejected_for(&node);
        assert_eq!((reason.as_str(), held_until), ("cannot reach it", None));
        assert_eq!(node.ejections.load(Ordering::Relaxed), 1);
    }

    /// An ejection that comes first (a health check, on another thread) is
    /// not an outlier hold, and is not counted as one: the node's next
    /// outlier hold is its first, of a second, not its second, of two.
    #[test]
    fn an_outlier_hold_not_applied_is_not_counted() {
        let events = Events::new("balancer");
        let node = backend();
        node.mark_healthy(Instant::now(), &events);
        let failure = Status::unavailable("injected fault");
        for _ in 0..FAILURES_TO_EJECT - 1 {
            assert!(!node.failed(&failure, || Some(()), &events));
        }
        let checked_first = || {
            node.eject(
                "no answer to a health check".into(),
                Waiting::GiveUp,
                &events,
            );
            Some(())
        };
        assert!(!node.failed(&failure, checked_first, &events), "not held");
        assert_eq!(
            ejected_for(&node),
            ("no answer to a health check".into(), None)
        );
        node.mark_healthy(Instant::now(), &events);
        for _ in 0..FAILURES_TO_EJECT {
            node.failed(&failure, || Some(()), &events);
        }
        let (reason, _) = ejected_for(&node);
        assert!(reason.contains("held out for 1s"), "{reason}");
    }

    /// Backends discovered at `all`, the first `serving` of them healthy
    /// (the rest never came up): the set, and those serving.
    fn serving(all: &[&str], serving: usize) -> (Arc<Backends>, Vec<Arc<Backend>>) {
        let backends = discovering();
        backends.reconcile(&addrs(all));
        let up: Vec<Arc<Backend>> = all[..serving]
            .iter()
            .map(|addr| listed(&backends, addr).unwrap())
            .collect();
        for node in &up {
            node.mark_healthy(Instant::now(), backends.events());
        }
        (backends, up)
    }

    /// Fails `node`'s requests until it would be ejected: whether it was
    /// held out as an outlier (`may_hold_out` agreeing).
    fn fail_until_ejected(backends: &Backends, node: &Backend) -> bool {
        let failure = Status::unavailable("injected fault");
        let mut held = false;
        for _ in 0..FAILURES_TO_EJECT {
            held |= node.failed(&failure, || backends.may_hold_out(node), backends.events());
        }
        held
    }

    /// At most half the nodes that serve are held out at once: a node that
    /// never came up is not one of them. Counted, it let two of three
    /// serving nodes be held out beside it, the third left alone.
    #[tokio::test]
    async fn a_node_that_never_served_does_not_make_room_for_another_hold() {
        let all = [
            "10.0.0.1:7100",
            "10.0.0.2:7100",
            "10.0.0.3:7100",
            "10.0.0.4:7100",
        ];
        let (backends, serving) = serving(&all, 3);
        assert!(
            fail_until_ejected(&backends, &serving[0]),
            "one of three held out"
        );
        assert!(
            !fail_until_ejected(&backends, &serving[1]),
            "a second would be two of three"
        );
        assert_eq!(serving[1].health(), Health::Healthy);
    }

    /// A node held out that stops resolving (its container restarted) is
    /// still counted as held: back under its hold, it takes the hold up
    /// again, and two of three would be held out.
    #[tokio::test]
    async fn a_held_node_gone_from_dns_still_counts_as_held() {
        let all = ["10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"];
        let (backends, serving) = serving(&all, 3);
        assert!(
            fail_until_ejected(&backends, &serving[0]),
            "one of three held out"
        );
        backends.reconcile(&addrs(&all[1..]));
        assert!(serving[0].is_gone());
        assert!(
            !fail_until_ejected(&backends, &serving[1]),
            "a second would be two of three"
        );
    }

    /// The backend at `addr`: the one checked now, else one that went away.
    fn listed(backends: &Backends, addr: &str) -> Option<Arc<Backend>> {
        let mut at: Vec<Arc<Backend>> = backends.list();
        at.retain(|b| b.addr == addr);
        at.sort_by_key(|b| b.is_gone());
        at.into_iter().next()
    }

    /// The list, and so the rotation, is in name order, as status shows it,
    /// whatever order the addresses came in or the names were learned.
    /// (It never awaits, so the health checkers never run: the test names
    /// the nodes.)
    #[tokio::test]
    async fn the_rotation_follows_the_names_not_the_addresses() {
        let backends = discovering();
        backends.reconcile(&addrs(&["10.0.0.1:7100", "10.0.0.2:7100", "10.0.0.3:7100"]));
        // Docker hands out addresses in the order containers start.
        for (addr, name) in [
            ("10.0.0.1:7100", "node-10"),
            ("10.0.0.2:7100", "node-3"),
            ("10.0.0.3:7100", "node-2"),
        ] {
            let backend = listed(&backends, addr).unwrap();
            backend.learn_name(name);
            backends.passed_check(&backend, Instant::now());
        }
        let names: Vec<Arc<str>> = backends.list().iter().map(|b| b.name()).collect();
        assert_eq!(names, ["node-2", "node-3", "node-10"].map(Arc::from));
        // A new address, not yet named, goes by its address.
        backends.reconcile(&addrs(&[
            "10.0.0.1:7100",
            "10.0.0.2:7100",
            "10.0.0.3:7100",
            "10.0.0.0:7100",
        ]));
        assert_eq!(&*backends.list()[0].name(), "10.0.0.0:7100");
    }

    /// Backends found by DNS alone, with no `--nodes`.
    fn discovering() -> Arc<Backends> {
        let events = Events::new("balancer");
        Backends::new(vec![], Duration::from_secs(1), Dialer::new(None), events)
    }

    fn addrs(addrs: &[&str]) -> BTreeSet<String> {
        addrs.iter().map(|a| a.to_string()).collect()
    }

    // The tests below never await, so the health checkers reconcile spawns
    // never run: the test alone decides each backend's health.

    /// Nodes discovered at 10.0.0.1 and 10.0.0.2, the second known as n2
    /// and in rotation.
    fn two_discovered_with_n2_healthy() -> (Arc<Backends>, Arc<Backend>) {
        let backends = discovering();
        backends.reconcile(&addrs(&["10.0.0.1:7100", "10.0.0.2:7100"]));
        let n2 = listed(&backends, "10.0.0.2:7100").unwrap();
        n2.learn_name("n2");
        n2.mark_healthy(Instant::now(), backends.events());
        (backends, n2)
    }

    /// Why `backend` is out of rotation; panics if it is not.
    fn ejected_because(backend: &Backend) -> String {
        ejected_for(backend).0
    }

    /// Why `backend` is out of rotation, and until when it is held out, if
    /// it is an outlier; panics if it is not out.
    fn ejected_for(backend: &Backend) -> (String, Option<Instant>) {
        match backend.health() {
            Health::Ejected {
                reason, held_until, ..
            } => (reason, held_until),
            other => panic!("not ejected: {other:?}"),
        }
    }

    /// A node stopped gracefully is ejected as shutting down before Docker
    /// drops it from the DNS: its status keeps saying so, then what followed
    /// (a killed one, in rotation until then, says only that it is gone).
    #[tokio::test]
    async fn a_node_out_already_when_it_stops_resolving_keeps_its_reason_first() {
        let (backends, n2) = two_discovered_with_n2_healthy();
        let goodbye = "10.0.0.2:7100 is shutting down: it sent GOAWAY";
        n2.eject(goodbye.into(), Waiting::Stay, backends.events());

        backends.reconcile(&addrs(&["10.0.0.1:7100"]));
        let reason = ejected_because(&n2);
        assert_eq!(reason, format!("{goodbye}; then {GONE_REASON}"));
        assert_eq!(n2.ejections.load(Ordering::Relaxed), 1);
        // Gone again with that reason (back under an outlier's hold, which
        // keeps it, and gone once more): said once.
        assert!(n2.went_away(backends.events()));
        assert_eq!(ejected_because(&n2), reason);
    }

    /// A killed container drops out of Docker's DNS: its node stays, ejected
    /// with that reason, and returns with its counts when it resolves again.
    #[tokio::test]
    async fn a_node_that_stops_resolving_is_kept_ejected_and_returns() {
        let (backends, n2) = two_discovered_with_n2_healthy();
        n2.requests.fetch_add(7, Ordering::Relaxed);

        backends.reconcile(&addrs(&["10.0.0.1:7100"]));
        let n2 = listed(&backends, "10.0.0.2:7100").expect("kept");
        let reason = ejected_because(&n2);
        assert!(reason.contains("no longer resolves"), "{reason}");
        assert!(n2.is_gone());
        // Another round changes nothing.
        backends.reconcile(&addrs(&["10.0.0.1:7100"]));
        assert_eq!(n2.ejections.load(Ordering::Relaxed), 1);
        assert_eq!(ejected_because(&n2), reason, "a second round said it again");
        // The first node never took traffic: it goes at once when it goes.
        backends.reconcile(&addrs(&[]));
        assert!(listed(&backends, "10.0.0.1:7100").is_none());

        // Resolving again, the address is checked afresh: Docker may have
        // given it to another container. Its name says it is n2 again.
        backends.reconcile(&addrs(&["10.0.0.2:7100"]));
        let again = listed(&backends, "10.0.0.2:7100").unwrap();
        assert!(!again.is_gone());
        again.learn_name("n2");
        backends.take_over_namesake(&again);
        assert_eq!(backends.list().len(), 1, "the old entry was not taken over");
        again.mark_healthy(Instant::now(), backends.events());
        assert_eq!(again.requests.load(Ordering::Relaxed), 7);
        assert_eq!(
            kinds(backends.events()),
            [
                "backend.healthy",
                "backend.ejected",
                "backend.removed",
                "backend.returned"
            ]
        );
    }

    /// A node held out as an outlier whose container is restarted comes
    /// back under the hold, with the failures that set it as the reason,
    /// not "no longer resolves ... forgotten after 5 min", and with the
    /// history that makes its next hold longer, as its return event says.
    #[tokio::test]
    async fn a_node_back_under_an_outliers_hold_keeps_the_hold_not_the_gone_reason() {
        let (backends, n2) = two_discovered_with_n2_healthy();
        let failure = Status::unavailable("injected fault");
        for _ in 0..FAILURES_TO_EJECT {
            n2.failed(&failure, || Some(()), backends.events());
        }
        let (failed, held_until) = ejected_for(&n2);
        backends.reconcile(&addrs(&["10.0.0.1:7100"]));
        assert!(ejected_because(&n2).contains("no longer resolves"));

        backends.reconcile(&addrs(&["10.0.0.1:7100", "10.0.0.9:7100"]));
        let new = listed(&backends, "10.0.0.9:7100").unwrap();
        new.learn_name("n2");
        backends.take_over_namesake(&new);
        assert_eq!(ejected_for(&new), (failed, held_until));
        assert_eq!(new.outliers.lock().unwrap().ejections, 1);
    }

    /// Started again, a container may get a new address: under its old name
    /// it takes over the old entry, and returns rather than joins.
    #[tokio::test]
    async fn a_node_back_at_a_new_address_takes_over_its_old_entry() {
        let backends = discovering();
        backends.reconcile(&addrs(&["10.0.0.2:7100", "10.0.0.3:7100"]));
        let old = listed(&backends, "10.0.0.2:7100").unwrap();
        old.learn_name("n2");
        old.mark_healthy(Instant::now(), backends.events());
        old.eject(
            "connection reset".into(),
            Waiting::GiveUp,
            backends.events(),
        );
        old.requests.fetch_add(5, Ordering::Relaxed);
        backends.reconcile(&addrs(&["10.0.0.3:7100"]));
        assert!(old.is_gone());

        backends.reconcile(&addrs(&["10.0.0.3:7100", "10.0.0.9:7100"]));
        let new = listed(&backends, "10.0.0.9:7100").unwrap();
        // Another node's name does not match.
        listed(&backends, "10.0.0.3:7100").unwrap().learn_name("n3");
        new.learn_name("n2");
        backends.take_over_namesake(&new);
        assert!(
            listed(&backends, "10.0.0.2:7100").is_none(),
            "the old entry was not taken over"
        );
        assert_eq!(new.requests.load(Ordering::Relaxed), 5);
        assert_eq!(new.ejections.load(Ordering::Relaxed), 1);
        new.mark_healthy(Instant::now(), backends.events());
        assert_eq!(
            kinds(backends.events()),
            [
                "backend.healthy",
                "backend.ejected",
                "backend.gone",
                "backend.returned"
            ]
        );
    }

    /// A node back at a new address that did not tell its name at its first
    /// good check joins as a new node; once it does, it takes over its old
    /// entry all the same, in rotation as it is.
    #[tokio::test]
    async fn a_node_back_that_tells_its_name_late_still_takes_over_its_old_entry() {
        let backends = discovering();
        backends.reconcile(&addrs(&["10.0.0.2:7100"]));
        let old = listed(&backends, "10.0.0.2:7100").unwrap();
        old.learn_name("n2");
        backends.passed_check(&old, Instant::now());
        old.requests.fetch_add(5, Ordering::Relaxed);
        backends.reconcile(&addrs(&[]));
        assert!(old.is_gone());

        backends.reconcile(&addrs(&["10.0.0.9:7100"]));
        let new = listed(&backends, "10.0.0.9:7100").unwrap();
        backends.passed_check(&new, Instant::now());
        assert!(new.is_healthy(), "unnamed, it joins as a new node");
        assert_eq!(backends.list().len(), 2);

        new.learn_name("n2");
        backends.passed_check(&new, Instant::now());
        assert!(
            listed(&backends, "10.0.0.2:7100").is_none(),
            "the old entry was not taken over"
        );
        assert!(new.is_healthy());
        assert_eq!(new.requests.load(Ordering::Relaxed), 5);
        assert_eq!(
            kinds(backends.events()),
            [
                "backend.healthy",
                "backend.ejected",
                "backend.healthy",
                "backend.returned"
            ]
        );
        let said = backends.events().recent().pop().unwrap().message;
        assert!(
            said.contains("n2 is back, at 10.0.0.9:7100 (was 10.0.0.2:7100)"),
            "{said}"
        );
    }

    /// A node that shuts down while its connection is idle (`docker stop`
    /// with no traffic) is ejected as shutting down when it says goodbye,
    /// not at the next health check, which may come too late to say so.
    #[tokio::test]
    async fn a_node_shutting_down_on_an_idle_connection_is_ejected_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (_, health) = tonic_health::server::health_reporter();
        let node = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        // Checked once, at once, and not again for an hour.
        let events = Events::new("balancer");
        let interval = Duration::from_secs(3600);
        let backends = Backends::new(vec![addr.clone()], interval, Dialer::new(None), events);
        let n1 = listed(&backends, &addr).unwrap();
        let reason = |n1: &Backend| match n1.health() {
            Health::Ejected { reason, .. } => Some(reason),
            _ => None,
        };
        let within = Duration::from_secs(10);
        let healthy = async {
            while !n1.is_healthy() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(within, healthy)
            .await
            .expect("n1 in rotation");

        stop.send(()).unwrap();
        node.await.unwrap().unwrap();
        let ejected = async {
            loop {
                match reason(&n1) {
                    Some(reason) => break reason,
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        let reason = tokio::time::timeout(within, ejected)
            .await
            .expect("n1 ejected when it said goodbye");
        assert!(
            reason.contains("is shutting down: it sent GOAWAY"),
            "{reason}"
        );
        assert_eq!(
            kinds(backends.events()),
            ["backend.healthy", "backend.ejected"]
        );
    }

    /// Another node given a gone node's address is a new node: it takes
    /// over nothing, and the gone one stays gone. A check passing just as a
    /// node goes does not put it back.
    #[tokio::test]
    async fn another_node_at_a_gone_nodes_address_is_new() {
        let backends = discovering();
        backends.reconcile(&addrs(&["10.0.0.2:7100"]));
        let n2 = listed(&backends, "10.0.0.2:7100").unwrap();
        n2.learn_name("n2");
        n2.mark_healthy(Instant::now(), backends.events());
        backends.reconcile(&addrs(&[]));
        n2.mark_healthy(Instant::now(), backends.events());
        assert_eq!(n2.health().name(), "ejected");

        backends.reconcile(&addrs(&["10.0.0.2:7100"]));
        let n4 = listed(&backends, "10.0.0.2:7100").unwrap();
        n4.learn_name("n4");
        backends.take_over_namesake(&n4);
        assert_eq!(backends.list().len(), 2);
        assert!(n2.is_gone());
        n4.mark_healthy(Instant::now(), backends.events());
        assert_eq!(n4.ejections.load(Ordering::Relaxed), 0);
        assert_eq!(
            kinds(backends.events()),
            ["backend.healthy", "backend.ejected", "backend.healthy"]
        );
    }

    /// A node gone for [`FORGET_GONE_AFTER`] is forgotten: a scaled-down
    /// cluster does not show its removed nodes for ever, and one gone a little
    /// less is kept.
    #[tokio::test(start_paused = true)]
    async fn a_node_gone_long_enough_is_forgotten() {
        let backends = discovering();
        backends.reconcile(&addrs(&["10.0.0.2:7100"]));
        let n2 = listed(&backends, "10.0.0.2:7100").unwrap();
        n2.mark_healthy(Instant::now(), backends.events());
        backends.reconcile(&addrs(&[]));
        backends.reconcile(&addrs(&[]));
        assert!(listed(&backends, "10.0.0.2:7100").is_some());
        tokio::time::advance(FORGET_GONE_AFTER - Duration::from_secs(1)).await;
        backends.reconcile(&addrs(&[]));
        assert!(listed(&backends, "10.0.0.2:7100").is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        backends.reconcile(&addrs(&[]));
        assert!(listed(&backends, "10.0.0.2:7100").is_none());
    }

    #[test]
    fn only_failures_of_the_node_count_toward_ejecting_it() {
        for status in [
            Status::unavailable("injected fault"),
            Status::internal("storage"),
            Status::unknown("h2"),
        ] {
            assert!(is_outlier_failure(&status), "{status:?}");
        }
        for status in [
            Status::invalid_argument("key too long"),
            Status::permission_denied("reader"),
            Status::deadline_exceeded("client deadline"),
            Status::resource_exhausted("busy"),
            Status::cancelled("client went away"),
        ] {
            assert!(!is_outlier_failure(&status), "{status:?}");
        }
    }
}
