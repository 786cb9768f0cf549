//! The coordinator: the node that takes a client's request and sees it through.
//!
//! Any node coordinates any request; there is no leader. For a key, the
//! coordinator finds the key's N replicas on the ring (see [`crate::placement`])
//! and talks to all of them at once:
//!
//! - **Write**: stamp the record with a new version from this node's clock, send
//!   it to every replica, and acknowledge once W of them have it on disk. The
//!   others carry on in the background; the trace marks them `PENDING`. If a
//!   replica in the quorum already held a *newer* version (another node's clock
//!   runs ahead of ours), it keeps that one (`SUPERSEDED`), and the write is
//!   stamped again above it and sent again: acknowledged means it is newer
//!   than every write acknowledged before it began. A version still newer on
//!   the third stamp wins (`SUPERSEDED` on the last stamp: not stamped
//!   again): most likely a concurrent write's, and docs/replication.md says
//!   what else it can be. A write that has taken over a second by then is
//!   refused (`ABORTED`) rather than stamped again: it may be a stale copy.
//! - **Read**: ask R replicas, this node first if it is one and suspect ones
//!   last, and answer with the newest version among their answers. A replica that fails is replaced by
//!   one not yet asked; if R have not answered within [`READ_HEDGE_AFTER`], the
//!   rest are asked too (a *hedged* read), so one slow replica does not slow
//!   every read. Replicas that answered with something older are sent the
//!   newest version before the answer goes back (*read repair*), and replicas
//!   that answer late are repaired in the background.
//!
//! With R + W > N, every read quorum overlaps every write quorum in at least one
//! replica, so a read sees the latest acknowledged write. Too few replicas
//! answering is `UNAVAILABLE`, with the count and the reasons.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use certs::repeats::{self, Repeats};
use proto::{LocalScanRequest, ReadRequest, WriteRequest, member::State, replica_report::Outcome};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    Error, Result, limits,
    state::{NodeState, Replication},
    store::Record,
    telemetry::escaped,
    trace::TraceBuilder,
    version::Version,
};

/// How long the coordinator waits for one replica. A replica that takes longer is
/// reported `TIMED_OUT`; the quorum may still be met by the others.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(2);

/// A read repair must reach its replica within this of the start of the read
/// that found it needed. Every answer comes within two [`REPLICA_TIMEOUT`]s
/// of it (those asked last are asked once the first have answered), and each
/// repair is given one more. Well under the shortest tombstone grace (10 s):
/// a repair that lands later may find a delete newer than its record made,
/// and collected, meanwhile, and bring the deleted value back.
const REPAIR_WITHIN: Duration = Duration::from_secs(3 * REPLICA_TIMEOUT.as_secs());

/// How many times one write may be stamped: again each time a replica in its
/// quorum turns out to hold a newer version (see [`Coordinator::write`]).
const MAX_STAMPS: usize = 3;

/// A write is stamped again only this soon after it began. One that has taken
/// longer (its node was paused, say) may be a late copy of a write that a client
/// has since retried elsewhere and followed with another: stamped again, it
/// would overwrite that newer write. It is refused instead.
const RESTAMP_WITHIN: Duration = Duration::from_secs(1);

/// How long a read waits for its first R replicas before it asks the others
/// too. Replicas answer in well under a millisecond on a cluster that is not
/// overloaded, so this is rare there; a replica slowed by a fault or a pause
/// then costs a read this long instead of its whole delay. On an overloaded
/// node more reads pass this mark, but a hedge asks only the replicas not yet
/// asked: at worst a read asks all N, never more.
pub const READ_HEDGE_AFTER: Duration = Duration::from_millis(10);
/// How long a read one of whose first R replicas held nothing waits for the
/// others ([`Coordinator::read`]) before it answers (with "not found", when
/// none holds the key): they are live, so they answer within this unless
/// paused or overloaded, and a paused one must not hold every missing key's
/// read for the whole replica timeout.
const SECOND_LOOK: Duration = Duration::from_secs(1);

/// Pages a scan may merge before it answers with what it has.
const MAX_SCAN_ROUNDS: usize = 16;

/// Why one replica did not do what was asked.
#[derive(Debug, Clone)]
pub(crate) enum ReplicaError {
    TimedOut,
    Failed(String),
    /// A write's version already stands for another write there (the store
    /// refuses it: [`crate::store::Store::apply`]); the write is stamped
    /// again, and on its last stamp the replica counts as one that failed.
    Taken(String),
}

impl ReplicaError {
    fn outcome(&self) -> Outcome {
        match self {
            ReplicaError::TimedOut => Outcome::TimedOut,
            ReplicaError::Failed(_) => Outcome::Failed,
            // Reported as a failure only on a write's last stamp, where the
            // replica is one that did not store it (before, it is reported
            // as superseded, and the write is stamped again).
            ReplicaError::Taken(_) => Outcome::Failed,
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            ReplicaError::TimedOut => format!("no answer within {REPLICA_TIMEOUT:?}"),
            ReplicaError::Failed(why) | ReplicaError::Taken(why) => why.clone(),
        }
    }
}

pub(crate) type ReplicaResult<T> = std::result::Result<T, ReplicaError>;

/// One replica's answer to a read: what it held, and when it answered.
struct Answer {
    replica: String,
    held: Option<Record>,
    /// Time into the request.
    at: Duration,
}

/// Coordinates requests on behalf of clients.
#[derive(Debug, Clone)]
pub struct Coordinator {
    state: Arc<NodeState>,
    /// Writes refused as overdue are logged once in a while, not each: a
    /// client whose clock is behind this node's (or that sends a passed
    /// deadline on purpose) has every write refused.
    overdue: Arc<Repeats>,
}

/// A write to coordinate: a put (`value` is `Some`) or a delete.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: String,
    pub value: Option<Vec<u8>>,
    /// W for this request; 0 for the default.
    pub write_quorum: u32,
    /// The client's id for this logical write; empty if it gave none.
    pub request_id: String,
    /// The balancer marked this as a retry: the write may already be done.
    pub retry: bool,
    /// The moment after which it must not be stamped
    /// ([`proto::deadline::WRITE_BY_HEADER`]): its sender's, or its call's
    /// end if sooner ([`crate::kv::WithDeadline`] sets one on every
    /// `KeyValue` write).
    pub write_by: Option<u64>,
}

/// The replicas of one key and the quorum a request needs from them.
#[derive(Debug)]
struct Plan {
    replicas: Vec<String>,
    quorum: usize,
}

/// What stays of a write not stamped again, for its refusal: the copies the
/// earlier stamps made. A `newer` version wins over them once it reaches
/// them; another write at the same version never does (a read takes either).
fn what_stays(newer: bool) -> &'static str {
    match newer {
        true => {
            "what the replica holds wins, but the copies the earlier stamp made stay until it \
             reaches them, so a read may see your value meanwhile"
        }
        false => {
            "the copies the earlier stamp made stay beside the other write, at the same \
             version, and a read may see either"
        }
    }
}

/// When a write was found overdue, for [`Coordinator::refuse_if_overdue`]'s message.
#[derive(Debug, Clone, Copy)]
enum Overdue<'a> {
    /// As it arrived: this attempt did nothing, though an earlier one may
    /// have, when it is a `retry`.
    OnArrival { retry: bool },
    /// After a retry looked for its first attempt, and found it on too few
    /// replicas: those copies stay.
    AfterLookingForTheFirstAttempt,
    /// Before stamping it again above what a replica holds instead of it
    /// (`holds`): a newer version, or (`newer` false) another write at this
    /// write's own.
    BeforeStampingAgain { holds: &'a str, newer: bool },
}

impl Coordinator {
    /// A coordinator for the node described by `state`.
    pub fn new(state: Arc<NodeState>) -> Self {
        Coordinator {
            state,
            overdue: Arc::default(),
        }
    }

    /// Finds `key`'s replicas and checks the quorum: the request's own (`requested`,
    /// 0 for none), else the configured one, else a majority.
    fn plan(
        &self,
        key: &str,
        requested: u32,
        configured: Option<usize>,
        what: &str,
    ) -> Result<Plan> {
        let Replication { replicas: n, .. } = self.state.replication;
        let ring = self.state.membership.ring();
        let replicas: Vec<String> = ring
            .replicas_of(key)
            .into_iter()
            .map(String::from)
            .collect();
        let quorum = match requested as usize {
            0 => configured.unwrap_or_else(|| {
                let members = self.state.membership.known();
                self.state.replication.default_quorum(members)
            }),
            q if q <= n => q,
            q => {
                return Err(Error::InvalidArgument(format!(
                    "{what} quorum {q} is more than the {n} replica(s) each key has; use 1 to {n}"
                )));
            }
        };
        // (A quorum no cluster could meet is refused first: retrying it
        // once the node is ready would not help.)
        self.ensure_ready()?;
        if replicas.len() < quorum {
            let members = ring.members().join(", ");
            let membership = &self.state.membership;
            let unanswered = membership.unanswered();
            // Every member this node knows is in the ring, and no address it
            // was given or told of goes unanswered: the cluster is smaller
            // than the quorum, with no one dead or cut off to blame.
            let smaller = membership.known() <= replicas.len() && unanswered.is_empty();
            let why = match smaller {
                true => format!(
                    "the cluster has {} member(s) ({members}), so each key is kept on {} of \
                     them; add nodes, or ask for at most {}",
                    replicas.len(),
                    replicas.len(),
                    replicas.len()
                ),
                false => format!(
                    "only {} member(s) are in the ring ({members}); the others are dead, cut \
                     off from this node, or not yet found{}",
                    replicas.len(),
                    match unanswered.is_empty() {
                        true => String::new(),
                        false => format!(" (nothing answers at {})", unanswered.join(", ")),
                    }
                ),
            };
            return Err(Error::Refused(format!(
                "{what} quorum {quorum} cannot be met: {why}"
            )));
        }
        Ok(Plan { replicas, quorum })
    }

    /// The cluster's W: `--write-quorum`, or a majority of N.
    fn write_quorum(&self) -> usize {
        let members = self.state.membership.known();
        self.state.replication.quorums(members).0
    }

    /// A node that has just started does not know its peers yet, and would put
    /// every key on itself alone: it refuses to coordinate until it does.
    fn ensure_ready(&self) -> Result<()> {
        match self.state.membership.is_ready() {
            true => Ok(()),
            false => Err(Error::Refused(format!(
                "{} has just started and is still finding its peers; retry in a moment",
                self.state.name
            ))),
        }
    }

    /// `replicas` in the order a read asks them: this node first, as its answer
    /// needs no trip over the network, then the others that answer probes,
    /// then the suspect ones (a paused node is suspect within 2.5 s: asked
    /// first, it would cost each read the hedge delay), each in ring order.
    fn nearest_first(&self, replicas: &[String]) -> VecDeque<String> {
        let membership = &self.state.membership;
        let rank = |replica: &String| match replica == &self.state.name {
            true => 0,
            false if membership.state_of(replica) == Some(State::Alive) => 1,
            false => 2,
        };
        let mut order = replicas.to_vec();
        // Stable: ring order within each rank.
        order.sort_by_key(rank);
        order.into()
    }

    /// Runs `op` against every replica at once. Answers arrive on the returned
    /// channel as they come.
    fn fan_out<T, F>(
        &self,
        replicas: &[String],
        op: impl Fn(Coordinator, String) -> F,
    ) -> mpsc::Receiver<(String, ReplicaResult<T>)>
    where
        T: Send + 'static,
        F: Future<Output = ReplicaResult<T>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(replicas.len().max(1));
        for replica in replicas {
            ask(replica, op(self.clone(), replica.clone()), &tx);
        }
        rx
    }

    /// Makes `record` durable on `replica` (this node or another), unless
    /// `write_by` (Unix ms) has passed by then, by the clock of the node that
    /// would store it: a write's sender has given up on it, and a read
    /// repair's or [handoff](crate::handoff)'s record may have been deleted,
    /// and the tombstone collected, meanwhile.
    pub(crate) async fn store_on(
        self,
        replica: String,
        record: Record,
        write_by: Option<u64>,
    ) -> ReplicaResult<Version> {
        let state = &self.state;
        if replica == state.name {
            // Checked here too: this node may have been stopped between
            // stamping the write and storing it.
            let applied = state
                .store
                .run(move |s| s.apply_by(&record, write_by))
                .await
                .map_err(|e| match e {
                    Error::Aborted(why) => ReplicaError::Taken(why),
                    Error::Overdue(late) => ReplicaError::Failed(format!(
                        "DEADLINE_EXCEEDED: {}",
                        // (This node's own faults held the request before it
                        // was stamped, and found it on time.)
                        crate::replica::stored_too_late(&state.name, late, None)
                    )),
                    e => ReplicaError::Failed(e.to_string()),
                })?;
            state.clock.observe(&applied.stored);
            return Ok(applied.stored);
        }
        let mut client = self.peer(&replica)?;
        let mut request = tonic::Request::new(WriteRequest {
            record: Some(record.into()),
            from: self.state.name.clone(),
        });
        if let Some(by) = write_by {
            request
                .metadata_mut()
                .insert(proto::deadline::WRITE_BY_HEADER, by.into());
        }
        let response = client.write(request).await.map_err(|status| {
            // A replica answers ABORTED to a write only when its version is taken.
            match status.code() {
                tonic::Code::Aborted => ReplicaError::Taken(status.message().to_string()),
                _ => unreachable(status),
            }
        })?;
        // Counted as a durable copy, so an answer that does not say what it
        // stored, or with a version no clock can follow, is a failure.
        let stored = response.into_inner().stored.ok_or_else(|| {
            ReplicaError::Failed(format!("{replica} answered without the version it stored"))
        })?;
        check(&replica, &stored)?;
        let stored = Version::from(stored);
        // Higher than ours if the replica held a newer write: stamp above it next.
        state.clock.observe(&stored);
        Ok(stored)
    }

    /// What `replica` holds for `key`.
    pub(crate) async fn read_from(
        self,
        replica: String,
        key: String,
    ) -> ReplicaResult<Option<Record>> {
        if replica == self.state.name {
            // A read is quick and never waits for a writer: no blocking pool (see store.rs).
            return self
                .state
                .store
                .get(&key)
                .map_err(|e| ReplicaError::Failed(e.to_string()));
        }
        let mut client = self.peer(&replica)?;
        let response = client
            .read(ReadRequest {
                key,
                from: self.state.name.clone(),
            })
            .await
            .map_err(unreachable)?;
        let record = response.into_inner().record;
        if let Some(version) = record.as_ref().and_then(|r| r.version.as_ref()) {
            check(&replica, version)?;
        }
        Ok(record.map(Record::from))
    }

    fn peer(&self, replica: &str) -> ReplicaResult<crate::replica::PeerClient> {
        if let Err(cut) = self.state.faults.check_link(Some(replica)) {
            return Err(ReplicaError::Failed(cut.message().to_string()));
        }
        self.state
            .membership
            .client(replica)
            .ok_or_else(|| ReplicaError::Failed(format!("{replica} is not a known member")))
    }

    /// Writes `value` (or a tombstone, for `None`) under `key` at a new version.
    pub async fn write(&self, write: Write) -> Result<(Version, proto::Trace)> {
        let Write {
            key,
            value,
            write_quorum,
            request_id,
            retry,
            write_by,
        } = write;
        let plan = self
            .plan(
                &key,
                write_quorum,
                self.state.replication.write_quorum,
                "write",
            )
            // This attempt did nothing, but an earlier one may have.
            .map_err(|e| match e {
                Error::Refused(why) if retry => Error::Unavailable(why),
                other => other,
            })?;
        // Its sender may have given up on it already: nothing to look for.
        self.refuse_if_overdue(&key, write_by, Overdue::OnArrival { retry })?;
        // A retry of a write that did get through (its answer was lost, say)
        // must not become a second write: look for it first. Found on fewer
        // than W replicas, it did not get through: the first attempt failed
        // for want of its quorum, and this one must meet it, or fail too.
        // What the look found goes with a refusal that follows it.
        let mut looked_up = None;
        if retry && !request_id.is_empty() {
            // Read from at least W replicas: found on fewer it counts as not
            // through, and a read of R < W (`put --w 3`) could never find it
            // on enough, so every retry would write it again.
            let looked = match self.plan(&key, 0, self.state.replication.read_quorum, "read") {
                Ok(read) => {
                    let read_quorum = read.quorum.max(plan.quorum) as u32;
                    self.read(key.clone(), read_quorum).await
                }
                Err(e) => Err(e),
            };
            let (found, trace) = looked.map_err(|e| {
                let reworded = |e| match e {
                    Error::Unavailable(why) | Error::Refused(why) => Error::Unavailable(format!(
                        "this write is a retry, and checking whether its first attempt was \
                         applied failed: {why}"
                    )),
                    other => other,
                };
                // The read's trace, if it asked replicas, shows what they did.
                match e {
                    Error::Traced { error, trace } => {
                        reworded(*error).with_trace(as_looked_up(*trace))
                    }
                    other => reworded(other),
                }
            })?;
            if let Some(done) = found.filter(|r| r.request_id == request_id) {
                let copies = copies_of(&trace, &done.version);
                if copies >= plan.quorum {
                    debug!(key = %escaped(&key), request_id = %escaped(&request_id), version = %done.version, copies, "retried write was already applied");
                    return Ok((
                        done.version.clone(),
                        as_written(trace, &done.version, plan.quorum),
                    ));
                }
                debug!(key = %escaped(&key), request_id = %escaped(&request_id), copies, quorum = plan.quorum, "retried write found short of its quorum; writing it again");
            }
            looked_up = Some(trace);
        }
        // Looking for a retry's first attempt takes replica round trips.
        let checked = match retry && !request_id.is_empty() {
            true => Overdue::AfterLookingForTheFirstAttempt,
            false => Overdue::OnArrival { retry },
        };
        self.refuse_if_overdue(&key, write_by, checked)
            .map_err(|e| match looked_up {
                Some(trace) => e.with_trace(as_looked_up(trace)),
                None => e,
            })?;
        let mut trace = TraceBuilder::new(&self.state.name, plan.quorum);
        let record = Record {
            key,
            version: self.state.clock.now(),
            value,
            request_id,
        };
        // A failure from here on comes after replicas were asked: it carries
        // what they did, as an answer does.
        match self.stamp(&plan, record, write_by, &mut trace).await {
            Ok(version) => Ok((version, trace.finish())),
            Err(e) => Err(e.with_trace(trace.finish())),
        }
    }

    /// Writes `record` to the replicas in `plan`, stamping it again (up to
    /// [`MAX_STAMPS`] stamps) above a newer version a replica holds; the
    /// version it was written at.
    async fn stamp(
        &self,
        plan: &Plan,
        mut record: Record,
        write_by: Option<u64>,
        trace: &mut TraceBuilder,
    ) -> Result<Version> {
        let started = Instant::now();
        for stamp in 1..=MAX_STAMPS {
            let Some(newer) = self
                .write_round(plan, &record, write_by, stamp, trace, started)
                .await?
            else {
                break;
            };
            // What a replica holds instead of this write, for the messages:
            // a newer version, or another write at this one.
            let holds = match newer == record.version {
                true => format!(
                    "another write at this write's version {} of {}",
                    record.version, record.key
                ),
                false => format!(
                    "version {newer} of {}, newer than this write's {}",
                    record.key, record.version
                ),
            };
            if stamp == MAX_STAMPS {
                // From the second stamp on, each is above every version the round
                // before found. Write quorums overlap, so that includes every write
                // acknowledged before this one began: what is newer still most
                // likely comes from a concurrent writer (replication.md says what
                // else), and wins by its version.
                debug!(key = %escaped(&record.key), version = %record.version, %newer, "a newer version won on the last stamp");
                break;
            }
            let took = started.elapsed();
            if took >= RESTAMP_WITHIN {
                return Err(Error::Aborted(format!(
                    "a replica holds {holds}, and after {:.1}s the write is too old to stamp \
                     again (it may be a late copy of one already retried), so it was not: {}; \
                     write again if yours should win",
                    took.as_secs_f64(),
                    what_stays(newer != record.version)
                )));
            }
            // `store_on` has shown the clock the newer version: stamp above it,
            // unless the sender has given up on the write meanwhile.
            let overdue = Overdue::BeforeStampingAgain {
                holds: &holds,
                newer: newer != record.version,
            };
            self.refuse_if_overdue(&record.key, write_by, overdue)?;
            record.version = self.state.clock.now();
            debug!(key = %escaped(&record.key), %newer, version = %record.version, "a replica held a newer version; stamping the write again");
        }
        Ok(record.version)
    }

    /// Refuses a write whose sender has given up on it: `write_by`
    /// ([`proto::deadline::WRITE_BY_HEADER`]) has passed. Stamped now, it would
    /// be the newest write to `key`, above any the client made after giving up
    /// (a node stopped with the write unread reads it only when it wakes).
    /// Checked before every stamp: the first, or one above what a replica
    /// holds instead of the write; `when` says which, for the message.
    fn refuse_if_overdue(&self, key: &str, write_by: Option<u64>, when: Overdue<'_>) -> Result<()> {
        let Some(late) = write_by.and_then(proto::deadline::overdue) else {
            return Ok(());
        };
        let name = &self.state.name;
        let said = |kind: &str| self.overdue.admit(kind).map(repeats::not_logged);
        // Refused on arrival, a first attempt did nothing at all: marked so.
        let refusal = match when {
            Overdue::OnArrival { retry: false } => Error::ArrivedLate,
            _ => Error::DeadlineExceeded,
        };
        Err(refusal(match when {
            Overdue::OnArrival { retry } => {
                if let Some(not_logged) = said("on arrival") {
                    warn!(key = %escaped(key), overdue = ?late, not_logged, "refused a write that arrived after its deadline");
                }
                let earlier = match retry {
                    true => {
                        "; it is a retry, and an earlier attempt may have been applied, so read \
                         the key before writing it again"
                    }
                    false => "",
                };
                format!(
                    "{name} received this write {late:?} after its deadline had passed (it \
                     waited in a queue or in a process that was stopped, or the sender's clock \
                     and this node's disagree), and did not apply it{earlier}"
                )
            }
            Overdue::AfterLookingForTheFirstAttempt => {
                if let Some(not_logged) = said("looking") {
                    warn!(key = %escaped(key), overdue = ?late, not_logged, "a retried write's deadline passed while its first attempt was looked for");
                }
                format!(
                    "this write is a retry, and its deadline passed {late:?} ago while {name} \
                     looked for its first attempt (found on too few replicas to count, or on \
                     none); {name} did not write it again, but any copies the first attempt \
                     made stay, so later reads may see the value"
                )
            }
            Overdue::BeforeStampingAgain { holds, newer } => {
                if let Some(not_logged) = said("stamping") {
                    warn!(key = %escaped(key), overdue = ?late, holds = %escaped(holds), not_logged, "refused to stamp a write again after its deadline");
                }
                let stays = what_stays(newer);
                format!(
                    "a replica holds {holds}, and the write's deadline had passed {late:?} \
                     before {name} could stamp it again (its replicas answered late, or it was \
                     stopped), so it did not: {stays}; write again if yours should win"
                )
            }
        }))
    }

    /// Sends `record`, stamped for the `stamp`th time, to every replica and
    /// waits for the write quorum, reporting each answer in `trace`. Returns the
    /// newest version a replica in the quorum kept instead of `record`'s, if
    /// any: once every replica has both, that version wins over the write
    /// (last writer wins), so acknowledging the write would lose it.
    async fn write_round(
        &self,
        plan: &Plan,
        record: &Record,
        write_by: Option<u64>,
        stamp: usize,
        trace: &mut TraceBuilder,
        started: Instant,
    ) -> Result<Option<Version>> {
        // Every report of a later round says which it is, or the trace would
        // seem to list the replicas twice.
        let round = match stamp {
            1 => String::new(),
            n => format!("stamp {n} of at most {MAX_STAMPS}"),
        };
        let in_round = |detail: String| match (detail.is_empty(), round.is_empty()) {
            (_, true) => detail,
            (true, false) => round.clone(),
            (false, false) => format!("{detail}; {round}"),
        };
        // The sender's deadline goes with the write: a replica that would
        // receive it only after that (this node stopped between stamping and
        // sending, say) refuses it, as this node did before stamping.
        let mut answers = self.fan_out(&plan.replicas, |this, replica| {
            this.store_on(replica, record.clone(), write_by)
        });
        let mut tally = Tally::new(&plan.replicas);
        let mut newer: Option<Version> = None;
        // Of the replicas that count toward the quorum, those that kept a
        // newer version (or, before the last stamp, hold another write at
        // this one's) did not store this write.
        let mut kept_their_own = 0;
        while tally.ok < plan.quorum {
            let Some((replica, result)) = answers.recv().await else {
                break;
            };
            match result {
                Ok(stored) if stored > record.version => {
                    // On the last stamp it wins: most likely a concurrent
                    // write's (replication.md says what else it can be).
                    let last = match stamp == MAX_STAMPS {
                        true => {
                            ", and wins: not stamped again (most likely a concurrent write's; \
                             see docs/replication.md)"
                        }
                        false => "",
                    };
                    let detail = in_round(format!(
                        "kept its newer version, above this write's {}{last}",
                        record.version
                    ));
                    trace.replica(
                        &replica,
                        Outcome::Superseded,
                        Some(&stored),
                        started.elapsed(),
                        detail,
                    );
                    tally.succeeded(&replica);
                    kept_their_own += 1;
                    newer = newer.max(Some(stored));
                }
                Ok(stored) => {
                    trace.replica(
                        &replica,
                        Outcome::Acked,
                        Some(&stored),
                        started.elapsed(),
                        in_round(String::new()),
                    );
                    tally.succeeded(&replica);
                }
                // Another write holds this very version there: answered, and,
                // like a newer version, a reason to stamp the write again. On
                // the last stamp it is what it is, a replica that did not
                // store the write: no version of its own wins over the write.
                Err(ReplicaError::Taken(why)) if stamp < MAX_STAMPS => {
                    // Its words end by asking to send the write again: this
                    // node does, stamping it anew if still in time (the
                    // trace's next round, or the failure, says whether).
                    let why = why.replace(
                        crate::store::SEND_IT_AGAIN,
                        "this write was not stored there",
                    );
                    trace.replica(
                        &replica,
                        Outcome::Superseded,
                        Some(&record.version),
                        started.elapsed(),
                        in_round(why),
                    );
                    tally.succeeded(&replica);
                    kept_their_own += 1;
                    newer = newer.max(Some(record.version.clone()));
                }
                Err(e) => {
                    let detail = in_round(e.detail());
                    trace.replica(&replica, e.outcome(), None, started.elapsed(), detail);
                    tally.failed(&replica, &e);
                }
            }
        }
        // Enough answered, but a replica that kept a version of its own
        // stored nothing: no quorum of this stamp was met.
        let ended = match (newer.is_some(), stamp == MAX_STAMPS) {
            (false, _) => "quorum met before it answered",
            (true, false) => {
                "this stamp's round ended before it answered: the replicas that answered met \
                 no quorum of it, some keeping a version of their own"
            }
            (true, true) => {
                "the round ended before it answered: enough replicas answered, and one kept \
                 a newer version, which wins"
            }
        };
        trace.pending_after(tally.waiting(), started.elapsed(), &round, ended);
        if tally.ok < plan.quorum {
            let kept = match kept_their_own {
                0 => String::new(),
                n => format!(", {n} kept a version of their own"),
            };
            let short = format!(
                "write needed {} durable copies but only {} of {} replicas stored it{kept} ({}); \
                 any copies that were made stay, so later reads may see the value",
                plan.quorum,
                tally.ok - kept_their_own,
                plan.replicas.len(),
                tally.reasons()
            );
            // Its sender has given up on it (the replicas that refused it
            // say so): no other node should try it again for them.
            return Err(match write_by.and_then(proto::deadline::overdue) {
                Some(_) => Error::DeadlineExceeded(short),
                None => Error::Unavailable(short),
            });
        }
        Ok(newer)
    }

    /// Reads the newest record for `key` (which may be a tombstone) from a read
    /// quorum, repairing replicas that answered with something older.
    pub async fn read(
        &self,
        key: String,
        read_quorum: u32,
    ) -> Result<(Option<Record>, proto::Trace)> {
        let plan = self.plan(
            &key,
            read_quorum,
            self.state.replication.read_quorum,
            "read",
        )?;
        let mut trace = TraceBuilder::new(&self.state.name, plan.quorum);
        let started = Instant::now();
        // What the replicas hold is news only for a while: from the start,
        // for a node stopped anywhere between asking and repairing.
        let repair_by = proto::deadline::write_by(REPAIR_WITHIN);
        let mut unasked = self.nearest_first(&plan.replicas);
        let (tx, mut answers) = mpsc::channel(plan.replicas.len().max(1));
        let mut tally = Tally::new(&[]);
        // Why each replica beyond the first R was asked, for the trace.
        let mut extra: Vec<(String, String)> = Vec::new();
        let ask_one = |replica: String, tally: &mut Tally| {
            tally.asked(&replica);
            ask(
                &replica,
                self.clone().read_from(replica.clone(), key.clone()),
                &tx,
            );
        };
        for replica in unasked.drain(..plan.quorum) {
            ask_one(replica, &mut tally);
        }
        let hedge_after = self.state.replication.hedge_after;
        let hedge = tokio::time::sleep(hedge_after);
        tokio::pin!(hedge);
        let mut answered: Vec<Answer> = Vec::new();
        // How many answers to wait for: R, and more if one of those R found
        // nothing (a second look, which waits only so long).
        let mut wanted = plan.quorum;
        let second_look = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(second_look);
        loop {
            while tally.ok < wanted && tally.is_waiting() {
                tokio::select! {
                    // An answer already in beats the hedge.
                    biased;
                    Some((replica, result)) = answers.recv() => match result {
                        Ok(held) => {
                            tally.succeeded(&replica);
                            answered.push(Answer { replica, held, at: started.elapsed() });
                        }
                        Err(e) => {
                            trace.replica(&replica, e.outcome(), None, started.elapsed(), e.detail());
                            tally.failed(&replica, &e);
                            // Another replica in its place, if there is one left.
                            if let Some(next) = unasked.pop_front() {
                                extra.push((next.clone(), format!("asked in place of {replica}")));
                                ask_one(next, &mut tally);
                            }
                        }
                    },
                    () = &mut hedge, if !unasked.is_empty() => {
                        debug!(key = %escaped(&key), after = ?hedge_after, "no read quorum yet; asking the other replicas too");
                        for replica in unasked.drain(..) {
                            let why = format!("asked too: no quorum after {hedge_after:?}");
                            extra.push((replica.clone(), why));
                            ask_one(replica, &mut tally);
                        }
                    }
                    () = &mut second_look, if wanted > plan.quorum => break,
                    else => break,
                }
            }
            // A replica that holds nothing at all may be a node that joined a
            // moment ago and is not filled yet: two nodes joining at once can
            // take both of a key's first places, and one joining beside a
            // replica that missed the last write leaves that replica the only
            // other answer. Its "nothing" is no answer (Riak's `notfound_ok =
            // false`): a read that promises the latest acknowledged write (R
            // and the cluster's W overlap: R + W > N) asks the other live
            // replicas too. A missing key costs N reads instead of R; a key
            // every replica holds costs nothing more. A read that does not
            // overlap W (`--r 1` with W = 2 of 3) promises nothing, and shows
            // what it means. The second look waits for all it asked (up to
            // SECOND_LOOK), not for the first that holds something: with
            // N = 5 two are left to ask, and the first to answer may hold an
            // older version.
            let one_empty = answered.iter().any(|answer| answer.held.is_none());
            // Asked last, as it asks membership: most passes end before it.
            let promised = || plan.quorum + self.write_quorum() > plan.replicas.len();
            if tally.ok < plan.quorum || !one_empty || wanted > plan.quorum || !promised() {
                break;
            }
            let membership = &self.state.membership;
            let live: Vec<String> = unasked
                .drain(..)
                .filter(|replica| membership.state_of(replica) == Some(State::Alive))
                .collect();
            // Those the hedge asked already may still answer, too.
            let in_flight = tally.waiting().count();
            if live.is_empty() && in_flight == 0 {
                break;
            }
            debug!(key = %escaped(&key), asking = live.len(), in_flight, "a replica in the read quorum holds nothing; asking the other replicas too");
            wanted = tally.ok + in_flight + live.len();
            second_look
                .as_mut()
                .reset(tokio::time::Instant::now() + SECOND_LOOK);
            for replica in live {
                let why = "asked too: a replica of the first to answer held nothing".to_string();
                extra.push((replica.clone(), why));
                ask_one(replica, &mut tally);
            }
        }
        // Only the tasks still running keep the channel open now, for `repair_late`.
        drop(tx);
        if tally.ok < plan.quorum {
            let failed = Error::Unavailable(format!(
                "read needed answers from {} replicas but only {} of {} answered ({})",
                plan.quorum,
                tally.ok,
                plan.replicas.len(),
                tally.reasons()
            ));
            for answer in &answered {
                let version = answer.held.as_ref().map(|r| &r.version);
                trace.replica(&answer.replica, Outcome::Answered, version, answer.at, "");
            }
            let trace = finish_read(trace, &tally, &extra, started);
            return Err(failed.with_trace(trace));
        }
        let newest = answered
            .iter()
            .filter_map(|answer| answer.held.as_ref())
            .max_by(|a, b| a.version.cmp(&b.version))
            .cloned();
        if let Some(record) = &newest {
            self.state.clock.observe(&record.version);
        }
        self.repair_answered(&answered, newest.as_ref(), repair_by, &mut trace, started)
            .await;
        if let Some(newest) = newest.clone() {
            tokio::spawn(self.clone().repair_late(answers, newest, repair_by));
        }
        Ok((newest, finish_read(trace, &tally, &extra, started)))
    }

    /// Read repair for the replicas in the quorum: those behind get `newest`
    /// before the client gets its answer, so a second read cannot go backwards.
    async fn repair_answered(
        &self,
        answered: &[Answer],
        newest: Option<&Record>,
        repair_by: u64,
        trace: &mut TraceBuilder,
        started: Instant,
    ) {
        let is_stale = |held: &Option<Record>| match (held, newest) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(held), Some(newest)) => held.version < newest.version,
        };
        let repairs = answered.iter().filter(|answer| is_stale(&answer.held)).map(
            |Answer { replica, held, .. }| {
                let newest = newest.cloned().expect("stale implies a newest record");
                let this = self.clone();
                async move {
                    let result =
                        in_time(this.store_on(replica.clone(), newest.clone(), Some(repair_by)))
                            .await;
                    // Its own end, not the slowest repair's.
                    (replica, held, newest.version, result, started.elapsed())
                }
            },
        );
        for (replica, held, sent, result, at) in futures::future::join_all(repairs).await {
            let had = held
                .as_ref()
                .map_or_else(|| "nothing".to_string(), |r| r.version.to_string());
            let mut version = held.as_ref().map(|r| r.version.clone());
            let (outcome, detail) = match result {
                // A write newer still reached it between its answer and the
                // repair: it holds neither what it had nor what was sent.
                Ok(stored) if stored > sent => {
                    let detail = format!("had {had}; sent {sent}, but it holds the newer {stored}");
                    version = Some(stored);
                    (Outcome::Answered, detail)
                }
                Ok(_) => (Outcome::Repaired, format!("had {had}; sent {sent}")),
                Err(ReplicaError::TimedOut) => {
                    (Outcome::Answered, format!("had {had}; repair timed out"))
                }
                Err(e) => (
                    Outcome::Answered,
                    format!("had {had}; repair failed: {}", e.detail()),
                ),
            };
            trace.replica(replica, outcome, version.as_ref(), at, detail);
        }
        for answer in answered.iter().filter(|answer| !is_stale(&answer.held)) {
            let version = answer.held.as_ref().map(|r| &r.version);
            trace.replica(&answer.replica, Outcome::Answered, version, answer.at, "");
        }
    }

    /// Read repair for replicas that answered after the client got its answer.
    async fn repair_late(
        self,
        mut answers: mpsc::Receiver<(String, ReplicaResult<Option<Record>>)>,
        newest: Record,
        repair_by: u64,
    ) {
        while let Some((replica, result)) = answers.recv().await {
            let behind = match result {
                Ok(Some(held)) => held.version < newest.version,
                Ok(None) => true,
                Err(_) => false,
            };
            if behind {
                debug!(%replica, key = %escaped(&newest.key), "read repair after the answer");
                let repair = self
                    .clone()
                    .store_on(replica, newest.clone(), Some(repair_by));
                let _ = in_time(repair).await;
            }
        }
    }

    /// Live entries in key order across the whole cluster: every member is asked
    /// for a page of its records, and the pages are merged keeping the newest
    /// version of each key. Succeeds when every key has at least one replica that
    /// answered, that is when fewer than N members fail.
    pub async fn scan(
        &self,
        prefix: String,
        start_after: String,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<String>, proto::Trace)> {
        self.ensure_ready()?;
        let ring = self.state.membership.ring();
        let members = ring.members().to_vec();
        // A node cut off from the rest would scan its own data alone: stale,
        // and blind to what the other side writes. As for reads and writes,
        // only a side of the cluster that could make a default quorum answers.
        let quorum = self
            .state
            .replication
            .default_quorum(self.state.membership.known());
        if members.len() < quorum {
            return Err(Error::Unavailable(format!(
                "scan needs {quorum} members in the ring, a quorum, but only {} are ({}); \
                 the others are dead, cut off from this node, or not yet found",
                members.len(),
                members.join(", ")
            )));
        }
        let tolerated = ring.replication().saturating_sub(1);
        let needed = members.len() - tolerated;
        let mut trace = TraceBuilder::new(&self.state.name, needed);
        let started = Instant::now();
        let mut found: Vec<Record> = Vec::new();
        let mut budget = limits::ScanBudget::new(limit);
        let mut cursor = start_after;
        let mut rounds = 0;
        // A member that failed a round is not asked again in this scan: it
        // counts as failed in every round after, and a paused one would
        // cost each round the replica timeout.
        let mut asked = members.clone();
        let mut failed: Vec<(String, ReplicaError)> = Vec::new();
        let mut heard = ScanHeard::default();
        // Where the rest begins, if there is more.
        let next = loop {
            rounds += 1;
            let page = self
                .scan_page(&asked, &prefix, &cursor, limit, started)
                .await;
            heard.round(rounds, page.counts, &page.failures);
            asked.retain(|member| page.failures.iter().all(|(m, ..)| m != member));
            failed.extend(page.failures.into_iter().map(|(m, e, _)| (m, e)));
            if failed.len() > tolerated {
                let reasons: Vec<String> = failed
                    .iter()
                    .map(|(m, e)| format!("{m}: {}", e.detail()))
                    .collect();
                let failure = Error::Unavailable(format!(
                    "scan needs {needed} of {} members to answer so that every key has a \
                     replica in the answer, but {} failed ({})",
                    members.len(),
                    failed.len(),
                    reasons.join("; ")
                ));
                heard.report(rounds, &mut trace);
                return Err(failure.with_trace(trace.finish()));
            }
            let mut left_over = false;
            for record in page.complete.into_iter().filter(|r| r.value.is_some()) {
                if !budget.take(record.size()) {
                    left_over = true;
                    break;
                }
                found.push(record);
            }
            match page.cutoff {
                // A record that did not fit: the rest begins after the last one that did.
                // Or after the last key looked at, if later: the entry may
                // be from an earlier round, with deleted keys since.
                _ if left_over => {
                    let last = found.last().map(|record| record.key.clone());
                    break Some(last.map_or(cursor.clone(), |last| last.max(cursor)));
                }
                // Every member has reported everything up to `cutoff`: go on from there.
                Some(cutoff) if !budget.is_full() && rounds < MAX_SCAN_ROUNDS => cursor = cutoff,
                // Enough for one answer; the rest, deleted keys too, after `cutoff`.
                Some(cutoff) => break Some(cutoff),
                None => break None,
            }
        };
        heard.report(rounds, &mut trace);
        Ok((found, next, trace.finish()))
    }

    /// One round of a scan: a page from every member, merged; each answer
    /// and failure noted with when it came, that time after `started`.
    async fn scan_page(
        &self,
        members: &[String],
        prefix: &str,
        after: &str,
        limit: usize,
        started: Instant,
    ) -> ScanPage {
        let request = LocalScanRequest {
            prefix: prefix.to_string(),
            start_after: after.to_string(),
            limit: limit as u32,
            from: self.state.name.clone(),
        };
        let mut answers = self.fan_out(members, |this, member| {
            let request = request.clone();
            async move {
                if member == this.state.name {
                    let LocalScanRequest {
                        prefix,
                        start_after,
                        limit,
                        ..
                    } = request;
                    return this
                        .state
                        .store
                        .run(move |s| s.scan(&prefix, &start_after, limit as usize, true))
                        .await
                        .map_err(|e| ReplicaError::Failed(e.to_string()));
                }
                let mut client = this.peer(&member)?;
                let page = client
                    .scan_local(request)
                    .await
                    .map_err(unreachable)?
                    .into_inner();
                Ok((
                    page.records.into_iter().map(Record::from).collect(),
                    page.more,
                ))
            }
        });
        let mut merged: BTreeMap<String, Record> = BTreeMap::new();
        let mut page = ScanPage::default();
        while let Some((member, result)) = answers.recv().await {
            let at = started.elapsed();
            match result {
                Ok((records, more)) => {
                    page.counts.push((member, records.len(), at));
                    if more && let Some(last) = records.last() {
                        let cutoff = page.cutoff.get_or_insert_with(|| last.key.clone());
                        if last.key < *cutoff {
                            cutoff.clone_from(&last.key);
                        }
                    }
                    for record in records {
                        match merged.get(&record.key) {
                            Some(held) if held.version >= record.version => {}
                            _ => {
                                merged.insert(record.key.clone(), record);
                            }
                        }
                    }
                }
                Err(e) => page.failures.push((member, e, at)),
            }
        }
        // Past the cutoff, a member that stopped early may hold newer versions.
        page.complete = merged
            .into_values()
            .filter(|r| page.cutoff.as_ref().is_none_or(|c| r.key <= *c))
            .collect();
        page
    }
}

/// The merged pages of one scan round.
#[derive(Debug, Default)]
struct ScanPage {
    /// Records up to the cutoff, newest version of each key, in key order.
    complete: Vec<Record>,
    /// The smallest "last key" of members that had more; `None` if none had.
    cutoff: Option<String>,
    /// Each member that answered: its records, and when it answered.
    counts: Vec<(String, usize, Duration)>,
    /// Each member that failed: why, and when.
    failures: Vec<(String, ReplicaError, Duration)>,
}

/// What each member said over a scan's rounds, for its trace: every
/// member's failure, in whichever round it came (a member that answered the
/// first rounds and then failed leaves each key it holds with a copy fewer
/// in the answer), and the records of those that answered every round.
#[derive(Debug, Default)]
struct ScanHeard {
    /// Who answered every round so far: records in all, and when last.
    answered: Vec<(String, usize, Duration)>,
    /// Who failed a round (and was asked no more), and when.
    failed: Vec<(String, Outcome, String, Duration)>,
}

impl ScanHeard {
    /// Round `round`'s answers and failures, each with when it came.
    fn round(
        &mut self,
        round: usize,
        counts: Vec<(String, usize, Duration)>,
        failures: &[(String, ReplicaError, Duration)],
    ) {
        for (member, count, at) in counts {
            match self.answered.iter_mut().find(|(m, ..)| *m == member) {
                Some((_, total, last)) => (*total, *last) = (*total + count, at),
                None => self.answered.push((member, count, at)),
            }
        }
        for (member, e, at) in failures {
            self.answered.retain(|(m, ..)| m != member);
            let detail = match round {
                1 => e.detail(),
                n => format!(
                    "{} (in the scan's round {n}; it answered the rounds before)",
                    e.detail()
                ),
            };
            self.failed.push((member.clone(), e.outcome(), detail, *at));
        }
    }

    /// Into `trace`, once the scan took `rounds` rounds.
    fn report(self, rounds: usize, trace: &mut TraceBuilder) {
        for (member, records, at) in self.answered {
            let detail = match rounds {
                1 => format!("{records} records"),
                n => format!("{records} records in {n} rounds"),
            };
            trace.replica(&member, Outcome::Answered, None, at, detail);
        }
        for (member, outcome, detail, at) in self.failed {
            trace.replica(&member, outcome, None, at, detail);
        }
    }
}

/// A read's trace, finished: the replicas still working marked pending, and
/// why each one beyond the first R was asked (`extra`) put before its report.
fn finish_read(
    mut trace: TraceBuilder,
    tally: &Tally,
    extra: &[(String, String)],
    started: Instant,
) -> proto::Trace {
    trace.pending(tally.waiting(), started.elapsed(), "");
    for (replica, why) in extra {
        trace.annotate(replica, why);
    }
    trace.finish()
}

/// Runs `work` against `replica` in a task of its own, giving up after
/// [`REPLICA_TIMEOUT`], and sends the answer to `answers`. The task runs to the
/// end even if the coordinator has answered and stopped listening.
fn ask<T, F>(replica: &str, work: F, answers: &mpsc::Sender<(String, ReplicaResult<T>)>)
where
    T: Send + 'static,
    F: Future<Output = ReplicaResult<T>> + Send + 'static,
{
    let answers = answers.clone();
    let replica = replica.to_string();
    tokio::spawn(async move {
        let result = in_time(work).await;
        // Nobody listening any more is fine.
        let _ = answers.send((replica, result)).await;
    });
}

/// `work` with one replica, given up on after [`REPLICA_TIMEOUT`].
pub(crate) async fn in_time<T>(work: impl Future<Output = ReplicaResult<T>>) -> ReplicaResult<T> {
    tokio::time::timeout(REPLICA_TIMEOUT, work)
        .await
        .unwrap_or(Err(ReplicaError::TimedOut))
}

/// Who has answered a fan-out so far.
struct Tally {
    waiting: Vec<String>,
    ok: usize,
    failures: Vec<String>,
}

impl Tally {
    fn new(replicas: &[String]) -> Self {
        Tally {
            waiting: replicas.to_vec(),
            ok: 0,
            failures: Vec::new(),
        }
    }

    fn asked(&mut self, replica: &str) {
        self.waiting.push(replica.to_string());
    }

    /// Whether any replica asked has not answered yet.
    fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn succeeded(&mut self, replica: &str) {
        self.waiting.retain(|r| r != replica);
        self.ok += 1;
    }

    fn failed(&mut self, replica: &str, error: &ReplicaError) {
        self.waiting.retain(|r| r != replica);
        self.failures.push(format!("{replica}: {}", error.detail()));
    }

    /// Replicas that have not answered yet.
    fn waiting(&self) -> impl Iterator<Item = &str> {
        self.waiting.iter().map(String::as_str)
    }

    fn reasons(&self) -> String {
        let mut reasons = self.failures.clone();
        reasons.extend(self.waiting.iter().map(|r| format!("{r}: no answer yet")));
        reasons.join("; ")
    }
}

/// Whether our clocks can follow `version`, as `replica` sent it: a version
/// near the end of time would leave a clock that observed it no room to stamp
/// a later write higher.
fn check(replica: &str, version: &proto::Version) -> ReplicaResult<()> {
    limits::check_version(version)
        .map_err(|e| ReplicaError::Failed(format!("{replica} answered with a bad version: {e}")))
}

/// A failed call to another node, as a reason for the trace: "unreachable"
/// when the call never got an answer (the connection failed: tonic gives the
/// status a source), else the status the node answered with (an injected
/// fault, a node still starting), by its gRPC name.
fn unreachable(status: tonic::Status) -> ReplicaError {
    let message = status.message();
    let connection_failed = std::error::Error::source(&status).is_some();
    ReplicaError::Failed(match status.code() {
        tonic::Code::Unavailable if connection_failed => format!("unreachable: {message}"),
        code => format!("{}: {message}", proto::code_name(code)),
    })
}

/// The trace of the read that found a retried write already applied, as
/// the write's: its quorum W, not the read's (a client that learns its
/// quorums from traces, as `clusterlab check` does, would take W + R > N),
/// and each replica that holds the write now as having acknowledged it:
/// those [`copies_of`] counts.
fn as_written(mut trace: proto::Trace, version: &Version, quorum: usize) -> proto::Trace {
    use proto::replica_report::Outcome;
    let wanted = proto::Version::from(version.clone());
    trace.quorum = quorum as u32;
    for replica in &mut trace.replicas {
        let detail = match replica.outcome() {
            Outcome::Answered if replica.version.as_ref() == Some(&wanted) => {
                "held it already: an earlier attempt stored it"
            }
            Outcome::Repaired => "did not hold it yet: this look for it gave it",
            _ => continue,
        };
        replica.set_outcome(Outcome::Acked);
        replica.version = Some(wanted.clone());
        replica.detail = detail.into();
    }
    trace
}

/// The trace of the read a retried write made to look for its first
/// attempt, for a failure of the write that follows it: each report says it
/// was the look's (a read's outcomes, at a read's quorum, under a put).
fn as_looked_up(mut trace: proto::Trace) -> proto::Trace {
    for replica in &mut trace.replicas {
        crate::trace::put_before(replica, "read to look for this retry's first attempt");
    }
    trace
}

/// How many replicas a read's trace shows holding `version`: those that
/// answered with it, and those read repair just gave it to.
fn copies_of(trace: &proto::Trace, version: &Version) -> usize {
    use proto::replica_report::Outcome;
    let wanted = proto::Version::from(version.clone());
    trace
        .replicas
        .iter()
        .filter(|r| match Outcome::try_from(r.outcome) {
            Ok(Outcome::Answered) => r.version.as_ref() == Some(&wanted),
            Ok(Outcome::Repaired) => true,
            _ => false,
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scan's trace names a member that failed in a later round, not
    /// only in the first, and counts each other's records over every round
    /// (it showed the first round's alone, and a member that failed after
    /// it as answered).
    #[test]
    fn a_scans_trace_names_a_failure_in_any_round() {
        let mut heard = ScanHeard::default();
        let ms = Duration::from_millis;
        // n2 answers each round last, later than n1.
        let counts = |at: u64, n3: bool| {
            let mut counts = vec![
                ("n1".to_string(), 2, ms(at)),
                ("n2".to_string(), 1, ms(at + 300)),
            ];
            counts.extend(n3.then(|| ("n3".to_string(), 2, ms(at + 1))));
            counts
        };
        heard.round(1, counts(5, true), &[]);
        heard.round(
            2,
            counts(400, false),
            &[("n3".into(), ReplicaError::TimedOut, ms(2400))],
        );
        heard.round(3, counts(2500, false), &[]);
        let mut trace = TraceBuilder::new("n1", 1);
        heard.report(3, &mut trace);
        let replicas = trace.finish().replicas;
        // Each member's last answer, or its failure, when it came.
        let at: Vec<(&str, u64)> = replicas
            .iter()
            .map(|r| (r.node.as_str(), r.latency_us / 1000))
            .collect();
        assert_eq!(at, [("n1", 2500), ("n2", 2800), ("n3", 2400)]);
        let said: Vec<(String, Outcome, String)> = replicas
            .into_iter()
            .map(|r| (r.node.clone(), r.outcome(), r.detail))
            .collect();
        let n3 = "no answer within 2s (in the scan's round 2; it answered the rounds before)";
        assert_eq!(
            said,
            [
                (
                    "n1".into(),
                    Outcome::Answered,
                    "6 records in 3 rounds".into()
                ),
                (
                    "n2".into(),
                    Outcome::Answered,
                    "3 records in 3 rounds".into()
                ),
                ("n3".into(), Outcome::TimedOut, n3.into()),
            ]
        );
    }

    /// Writes refused as overdue (a client whose clock is behind, or that
    /// sends a passed deadline on purpose) are refused each, and logged once
    /// in a while: the log is not a client's to fill.
    #[test]
    fn writes_refused_as_overdue_are_logged_once_in_a_while() {
        let (logged, _logging) = certs::testing::captured();
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Coordinator::new(crate::in_process::node_state(dir.path()));
        let passed = proto::deadline::write_by(Duration::ZERO) - 1_000;
        for _ in 0..100 {
            let arrival = Overdue::OnArrival { retry: false };
            assert!(
                coordinator
                    .refuse_if_overdue("k", Some(passed), arrival)
                    .is_err()
            );
        }
        let text = logged.text();
        assert_eq!(
            text.matches("refused a write that arrived after its deadline")
                .count(),
            1,
            "{text}"
        );
    }

    /// A quorum beyond N is the request's mistake, said at once, even by a
    /// node still finding its peers (whose refusal says to retry, which
    /// would not help); a quorum it could meet waits for it to be ready.
    #[test]
    fn a_quorum_beyond_n_is_refused_before_the_node_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Coordinator::new(crate::in_process::node_state(dir.path()));
        assert!(!coordinator.state.membership.is_ready());
        match coordinator.plan("k", 2, None, "write") {
            Err(Error::InvalidArgument(why)) => assert_eq!(
                why,
                "write quorum 2 is more than the 1 replica(s) each key has; use 1 to 1"
            ),
            other => panic!("not refused as beyond N: {other:?}"),
        }
        match coordinator.plan("k", 1, None, "write") {
            Err(Error::Refused(why)) => {
                assert!(why.contains("is still finding its peers"), "{why}")
            }
            other => panic!("not refused as not ready: {other:?}"),
        }
    }

    /// A replica kept a newer version, and by the time the coordinator could
    /// stamp the write again its sender had given up on it: refused, and the
    /// newer version named. (Through real processes the replicas now refuse
    /// such a write themselves first, so this check is seldom reached.)
    #[test]
    fn a_write_overdue_before_its_second_stamp_is_refused_naming_the_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = Coordinator::new(crate::in_process::node_state(dir.path()));
        let newer = Version::at(node_clock_ahead());
        let passed = proto::deadline::write_by(Duration::ZERO) - 1_000;
        let holds = format!("version {newer} of k");
        let again = Overdue::BeforeStampingAgain {
            holds: &holds,
            newer: true,
        };
        match coordinator.refuse_if_overdue("k", Some(passed), again) {
            Err(Error::DeadlineExceeded(why)) => {
                assert!(why.contains("before n1 could stamp it again"), "{why}");
                assert!(
                    why.contains("earlier stamp made stay until it reaches them"),
                    "{why}"
                );
                assert!(why.contains(&newer.to_string()), "{why}");
            }
            other => panic!("not refused as overdue: {other:?}"),
        }
        // Another write at the same version does not win over the copies:
        // a read may see either.
        let holds = "another write at this write's version".to_string();
        let again = Overdue::BeforeStampingAgain {
            holds: &holds,
            newer: false,
        };
        match coordinator.refuse_if_overdue("k", Some(passed), again) {
            Err(Error::DeadlineExceeded(why)) => {
                assert!(why.contains("a read may see either"), "{why}");
                assert!(!why.contains("wins"), "{why}");
            }
            other => panic!("not refused as overdue: {other:?}"),
        }
        // A retry found overdue after looking for its first attempt does not
        // say it was not applied: the first attempt's copies stay.
        let checked = Overdue::AfterLookingForTheFirstAttempt;
        match coordinator.refuse_if_overdue("k", Some(passed), checked) {
            Err(Error::DeadlineExceeded(why)) => {
                assert!(
                    why.contains("any copies the first attempt made stay"),
                    "{why}"
                );
                assert!(!why.contains("did not apply it"), "{why}");
            }
            other => panic!("not refused as overdue: {other:?}"),
        }
        // Overdue on arrival: this attempt did nothing, which a first attempt
        // is marked with, and a retry's words say an earlier one may have
        // done something.
        for retry in [false, true] {
            let refused = coordinator
                .refuse_if_overdue("k", Some(passed), Overdue::OnArrival { retry })
                .expect_err("not refused as overdue");
            let why = refused.to_string();
            assert_eq!(
                why.contains("an earlier attempt may have been applied"),
                retry,
                "{why}"
            );
            let status = tonic::Status::from(refused);
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{why}");
            assert_eq!(proto::was_not_applied(&status), !retry, "{why}");
        }
        let due = proto::deadline::write_by(Duration::from_secs(60));
        assert!(coordinator.refuse_if_overdue("k", Some(due), again).is_ok());
        assert!(coordinator.refuse_if_overdue("k", None, again).is_ok());
    }

    /// A replica that took a newer write between its answer and the read
    /// repair holds neither: it is not said to be repaired, and does not
    /// count as a copy of what was sent (a retry looking for its first
    /// attempt would count it toward W).
    #[tokio::test]
    async fn a_repair_refused_for_a_newer_version_is_no_copy_of_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let coordinator = Coordinator::new(state.clone());
        let record = |ms: u64| Record {
            key: "k".into(),
            version: Version::at(ms),
            value: Some(b"v".to_vec()),
            request_id: String::new(),
        };
        let now = node_clock_ahead();
        let (held, sent, newer) = (record(now), record(now + 1), record(now + 2));
        state.store.apply(&newer).unwrap();
        let answered = [Answer {
            replica: state.name.clone(),
            held: Some(held.clone()),
            at: Duration::ZERO,
        }];
        let mut trace = TraceBuilder::new(&state.name, 1);
        let repair_by = proto::deadline::write_by(Duration::from_secs(60));
        coordinator
            .repair_answered(
                &answered,
                Some(&sent),
                repair_by,
                &mut trace,
                Instant::now(),
            )
            .await;
        let trace = trace.finish();
        let report = &trace.replicas[0];
        assert_eq!(
            report.outcome(),
            proto::replica_report::Outcome::Answered,
            "{report:?}"
        );
        assert!(
            report.detail.contains("but it holds the newer"),
            "{report:?}"
        );
        assert_eq!(copies_of(&trace, &sent.version), 0, "{trace:?}");
        assert_eq!(copies_of(&trace, &newer.version), 1, "{trace:?}");
    }

    /// A replica that holds another write at a write's very version is a
    /// reason to stamp the write again; on its last stamp it is a replica
    /// that did not store it, not one that counts toward the quorum.
    #[tokio::test]
    async fn a_version_taken_by_another_write_counts_toward_no_quorum_on_the_last_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let coordinator = Coordinator::new(state.clone());
        let version = Version::at(node_clock_ahead());
        let write = |value: &str| Record {
            key: "k".into(),
            version: version.clone(),
            value: Some(value.as_bytes().to_vec()),
            request_id: String::new(),
        };
        state.store.apply(&write("theirs")).unwrap();
        let plan = Plan {
            replicas: vec!["n1".into()],
            quorum: 1,
        };
        let mine = write("mine");
        let round = |stamp| {
            let (coordinator, plan, mine) = (&coordinator, &plan, &mine);
            async move {
                let mut trace = TraceBuilder::new("n1", 1);
                let result = coordinator
                    .write_round(plan, mine, None, stamp, &mut trace, Instant::now())
                    .await;
                (result, trace.finish())
            }
        };
        let (first, trace) = round(1).await;
        assert_eq!(first.unwrap(), Some(version.clone()), "stamp again");
        // Not quoting the store's "send it again": this node does.
        let detail = &trace.replicas[0].detail;
        assert!(
            detail.ends_with("this write was not stored there") && !detail.contains("send it"),
            "{detail}"
        );
        let (last, trace) = round(MAX_STAMPS).await;
        match last {
            Err(Error::Unavailable(why)) => {
                assert!(why.contains("needed 1 durable copies but only 0"), "{why}");
                assert!(why.contains("already stands for another write"), "{why}");
            }
            other => panic!("acknowledged on no copy: {other:?}"),
        }
        let outcomes: Vec<_> = trace.replicas.iter().map(|r| r.outcome()).collect();
        assert_eq!(outcomes, [Outcome::Failed]);
        let stored = state.store.get("k").unwrap().unwrap();
        assert_eq!(stored.value.as_deref(), Some(&b"theirs"[..]));
    }

    /// A write of `value` to key `k` at version `ms` (Unix ms).
    fn key_k_at(ms: u64, value: &str) -> Record {
        Record {
            key: "k".into(),
            version: Version::at(ms),
            value: Some(value.as_bytes().to_vec()),
            request_id: String::new(),
        }
    }

    /// A newer version found on the last stamp wins: the trace says the
    /// write was not stamped again above it, where it read as one more
    /// reason to stamp it again.
    #[tokio::test]
    async fn a_newer_version_on_the_last_stamp_is_said_to_win() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let coordinator = Coordinator::new(state.clone());
        let now = crate::version::unix_ms();
        state
            .store
            .apply(&key_k_at(now + 60_000, "theirs"))
            .unwrap();
        let plan = Plan {
            replicas: vec!["n1".into()],
            quorum: 1,
        };
        let mine = key_k_at(now, "mine");
        for (stamp, said) in [(1, false), (MAX_STAMPS, true)] {
            let mut trace = TraceBuilder::new("n1", 1);
            let newer = coordinator
                .write_round(&plan, &mine, None, stamp, &mut trace, Instant::now())
                .await
                .unwrap();
            assert!(newer.is_some(), "stamp {stamp}");
            let trace = trace.finish();
            assert_eq!(trace.replicas[0].outcome(), Outcome::Superseded);
            let detail = &trace.replicas[0].detail;
            assert_eq!(
                detail.contains("and wins: not stamped again"),
                said,
                "{detail}"
            );
        }
    }

    /// A write short of its quorum says how many replicas stored it: not
    /// those that kept a newer version, which count toward the quorum only
    /// as a reason to stamp the write again ("only 1 of 2 stored it", when
    /// none had).
    #[tokio::test]
    async fn a_write_short_of_its_quorum_does_not_count_a_newer_version_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let coordinator = Coordinator::new(state.clone());
        let now = crate::version::unix_ms();
        state.store.apply(&key_k_at(now + 60_000, "newer")).unwrap();
        // n2 is no member: asking it fails.
        let plan = Plan {
            replicas: vec!["n1".into(), "n2".into()],
            quorum: 2,
        };
        let mut trace = TraceBuilder::new("n1", 2);
        let result = coordinator
            .write_round(
                &plan,
                &key_k_at(now, "mine"),
                None,
                1,
                &mut trace,
                Instant::now(),
            )
            .await;
        match result {
            Err(Error::Unavailable(why)) => assert!(
                why.contains("needed 2 durable copies but only 0 of 2 replicas stored it, 1 kept a version of their own ("),
                "{why}"
            ),
            other => panic!("not short of its quorum: {other:?}"),
        }
        // Each report of a later stamp says which it is, a failure's too.
        let mut trace = TraceBuilder::new("n1", 2);
        let mine = key_k_at(now, "mine");
        let _ = (coordinator.write_round(&plan, &mine, None, 2, &mut trace, Instant::now())).await;
        let trace = trace.finish();
        let round = format!("; stamp 2 of at most {MAX_STAMPS}");
        assert_eq!(trace.replicas.len(), 2, "{trace:?}");
        assert!(
            trace.replicas.iter().all(|r| r.detail.ends_with(&round)),
            "{trace:?}"
        );
    }

    /// The coordinator's own copy is refused as a replica's is once the
    /// write's moment has passed: it may have been stopped between stamping
    /// the write and storing it. (Only the other replicas' were refused.)
    #[tokio::test]
    async fn the_coordinators_own_copy_of_an_overdue_write_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let coordinator = Coordinator::new(state.clone());
        let record = |key: &str| Record {
            key: key.into(),
            version: Version::at(node_clock_ahead()),
            value: Some(b"v".to_vec()),
            request_id: String::new(),
        };
        let passed = proto::deadline::write_by(Duration::ZERO) - 1_000;
        let refused = coordinator
            .clone()
            .store_on("n1".into(), record("late"), Some(passed))
            .await;
        match refused {
            Err(ReplicaError::Failed(why)) => assert!(why.contains("after its deadline"), "{why}"),
            other => panic!("an overdue write was stored: {other:?}"),
        }
        assert!(state.store.get("late").unwrap().is_none());

        let due = proto::deadline::write_by(Duration::from_secs(60));
        let stored = coordinator
            .store_on("n1".into(), record("on-time"), Some(due))
            .await;
        assert!(stored.is_ok(), "{stored:?}");
        assert!(state.store.get("on-time").unwrap().is_some());
    }

    /// A retried write found applied is answered as the write: its quorum,
    /// and every replica that holds it now acknowledged, the one the look
    /// for it repaired too (it counted toward W, and showed REPAIRED).
    #[test]
    fn a_retry_found_applied_is_answered_as_the_write() {
        use proto::replica_report::Outcome;
        let version = Version::at(1_795_000_000_000);
        let wanted = proto::Version::from(version.clone());
        let report = |node: &str, outcome: Outcome, version: Option<proto::Version>| {
            let mut report = proto::ReplicaReport {
                node: node.into(),
                version,
                ..Default::default()
            };
            report.set_outcome(outcome);
            report
        };
        let read = proto::Trace {
            quorum: 3,
            replicas: vec![
                report("n1", Outcome::Answered, Some(wanted.clone())),
                report("n2", Outcome::Repaired, None),
                report("n3", Outcome::Failed, None),
            ],
            ..Default::default()
        };
        assert_eq!(copies_of(&read, &version), 2);
        let written = as_written(read, &version, 2);
        assert_eq!(written.quorum, 2);
        let outcomes: Vec<_> = written.replicas.iter().map(|r| r.outcome()).collect();
        assert_eq!(outcomes, [Outcome::Acked, Outcome::Acked, Outcome::Failed]);
        assert_eq!(written.replicas[1].version.as_ref(), Some(&wanted));
    }

    /// An hour past now, as a version from a clock running ahead.
    fn node_clock_ahead() -> u64 {
        crate::version::unix_ms() + 3_600_000
    }
}
