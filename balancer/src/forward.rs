//! Forwarding: the balancer's `KeyValue` service.
//!
//! For each request: pick a healthy node by policy, forward the request over
//! that node's pooled connection, and if the node fails in a way that is safe to
//! retry, try another node, within the request's deadline and the retry budget
//! (a node taken out of rotation under the request is failed over without it).
//! Whatever happens goes into the response's trace (balancer, policy, why this
//! node, every attempt) or, on failure, into the status message.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue,
    header::{CONTENT_TYPE, TE},
};
use http_body_util::{BodyExt, Full};
use node::limits::MAX_MESSAGE_BYTES;
use proto::{Attempt, Trace};
use tonic::{Status, body::Body, server::NamedService};
use tower::BoxError;

use crate::{
    backend::{Backend, Backends, InFlight, Waiting, is_outlier_failure},
    busy_poll::BusyPoll,
    connection::{is_connection_failure, is_hung, is_shutting_down, is_worn_out_connection},
    grpc::{Method, read_unary},
    policy::{Candidate, Picker, Policy},
    retry::RetryBudget,
};

/// At most this many nodes are tried for one request.
const MAX_ATTEMPTS: usize = 3;
/// The header that carries a call's deadline. A `HeaderName` made once, so
/// that looking it up does not parse the name again on every request.
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The header that carries a write's deadline as a moment (see
/// [`proto::deadline::WRITE_BY_HEADER`]).
const WRITE_BY: HeaderName = HeaderName::from_static(proto::deadline::WRITE_BY_HEADER);

/// What the forwarding path shares: the backends, the policy and the counters.
#[derive(Debug)]
pub struct Router {
    pub name: String,
    pub backends: Arc<Backends>,
    /// A std lock: read per request, written by `SetPolicy`.
    policy: RwLock<Policy>,
    picker: Picker,
    budget: RetryBudget,
    busy: Arc<BusyPoll>,
    /// `--request-timeout`: the most time a request gets, and all it gets when
    /// its client sends no deadline of its own.
    request_timeout: Duration,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub retries_refused: AtomicU64,
}

impl Router {
    pub fn new(
        name: String,
        backends: Arc<Backends>,
        policy: Policy,
        retry_budget: f64,
        busy: Arc<BusyPoll>,
        request_timeout: Duration,
    ) -> Self {
        Router {
            name,
            backends,
            policy: RwLock::new(policy),
            picker: Picker::default(),
            budget: RetryBudget::new(retry_budget),
            busy,
            request_timeout,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retries_refused: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> Policy {
        *self.policy.read().expect("policy poisoned")
    }

    /// Switches the policy; returns the previous one.
    pub fn set_policy(&self, policy: Policy) -> Policy {
        std::mem::replace(&mut *self.policy.write().expect("policy poisoned"), policy)
    }

    /// Picks a healthy node not in `tried` by `policy`, with the reason.
    fn pick(
        &self,
        policy: Policy,
        key: Option<&str>,
        tried: &[Arc<Backend>],
    ) -> Option<(Arc<Backend>, String)> {
        let mut healthy = self.backends.list();
        healthy.retain(|b| b.is_healthy() && !tried.iter().any(|t| Arc::ptr_eq(t, b)));
        if healthy.is_empty() {
            return None;
        }
        let names: Vec<Arc<str>> = healthy.iter().map(|b| b.name()).collect();
        let candidates: Vec<Candidate<'_>> = healthy
            .iter()
            .zip(&names)
            .map(|(b, name)| Candidate {
                name,
                in_flight: b.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        let (i, reason) = self
            .picker
            .pick(policy, &candidates, key, !tried.is_empty());
        Some((healthy.swap_remove(i), reason))
    }

    /// Forwards one `KeyValue` call: to nodes, in turn, until one answers or
    /// it is not worth trying again. The request and the answer travel as the
    /// bytes they came as (see [`crate::grpc`]).
    async fn forward<B>(&self, request: http::Request<B>) -> Result<http::Response<Body>, Status>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        // While requests come one at a time, this keeps the thread awake.
        let _busy = self.busy.request();
        let (head, body) = request.into_parts();
        let Some(method) = Method::from_path(head.uri.path()) else {
            return Err(Status::unimplemented(format!(
                "{} is not a method of clusterlab.v1.KeyValue (Get, Put, Delete, Scan)",
                head.uri.path()
            )));
        };
        // A KeyValue request received, whatever comes of it: one refused
        // here for its message (too large, undecodable, never sent) counts.
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = head
            .uri
            .into_parts()
            .path_and_query
            .expect("a request path");
        // The client's deadline, if it is the sooner; else ours.
        let (time, ours) =
            proto::deadline::sooner(client_deadline(&head.headers), self.request_timeout);
        // A write's moment to be stamped by, as its client sent it: passed
        // on if sooner than ours, which counts from now, not from when the
        // client sent it (this balancer may have been stopped meanwhile).
        let clients_write_by = match method.is_read() {
            true => None,
            false => head
                .headers
                .get(WRITE_BY)
                .and_then(|by| proto::deadline::parse_write_by(by.as_bytes())),
        };
        let deadline = Instant::now() + time;
        // A write its client sends again, marked as such (kv.proto): its
        // first attempt may have been applied, so each attempt is a retry.
        let clients_retry = !method.is_read() && head.headers.contains_key(node::kv::RETRY_HEADER);
        // A write refused before any node saw it was not applied, unless it
        // is the client's retry, whose first attempt may have been.
        let not_sent = |refused: Status| match method.is_read() || clients_retry {
            true => refused,
            false => proto::not_applied(refused),
        };
        let body = body.map_err(|e| Status::from_error(e.into()));
        let mut read = std::pin::pin!(read_unary(body, MAX_MESSAGE_BYTES));
        // The message nearly always came with the headers, and the read is
        // done at its first poll. Only if it is not does the read get a timer
        // (a box and a timer entry): a client that sends its message slowly,
        // or never, is held to the deadline, even to its own, which a client
        // that never sends its message may not keep either.
        let unary = match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(unary) => unary.map_err(not_sent)?,
            Poll::Pending => Box::pin(tokio::time::timeout_at(deadline.into(), read))
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "the request's message did not arrive within {time:?} ({})",
                        whose(ours)
                    ))
                })
                .and_then(|unary| unary)
                .map_err(not_sent)?,
        };
        let Some(message) = unary.message else {
            return Err(not_sent(Status::internal(
                "the request carried no message; a unary call sends exactly one",
            )));
        };
        let key = message.key().map_err(not_sent)?;
        // A scan's field 1 is its prefix, not a key.
        let keyed = (method != Method::Scan).then_some(key.as_str());
        // A write is retried on another node only under an id that names it:
        // the node looks for it before writing again. Our client always sends
        // one; a write that came without one (from grpcurl, say) gets one here.
        let carries_id =
            !method.is_read() && message.carries_request_id(method).map_err(not_sent)?;
        let message = match !method.is_read() && !carries_id {
            true => message.with_request_id(method, proto::new_request_id()),
            false => message,
        };
        self.budget.deposit();
        let policy = self.policy();
        let mut trace = Trace {
            balancer: self.name.clone(),
            policy: policy.name().to_string(),
            ..Trace::default()
        };
        let mut tried: Vec<Arc<Backend>> = Vec::with_capacity(MAX_ATTEMPTS);
        let mut last_failure: Option<Status> = None;
        // The trace of the last failure that carried one: what its
        // coordinator's replicas did. (A failed dial carries none.)
        let mut coordinated: Option<Trace> = None;
        // Did the last attempt fail because its node was taken out of rotation
        // (its connection broke, or it hung and was ejected)? Then the next one
        // is a failover, which the budget does not limit: an ejected node gets
        // no new requests, so failovers are bounded by the requests that were
        // in flight on it and cannot grow into a retry storm.
        let mut failing_over = false;
        // Nodes that failed this request while it might still succeed
        // elsewhere. Only if another node then serves it do their failures
        // count toward ejecting them: a request every node fails (a quorum
        // that cannot be met) is the cluster's trouble, not one node's.
        let mut failed_on: Vec<(Arc<Backend>, Status)> = Vec::new();
        // Whether every attempt so far was refused before anything was done
        // (true while there were none): then the client is told so, and
        // `clusterlab check` counts a write that never reached a node as
        // unapplied, not as one whose outcome is unknown. Not for a client's
        // retry, whose first attempt, sent before this one, may have been.
        let mut every_refused = !clients_retry;
        // Why no further attempt was made, for the client's failure. Unless
        // the loop breaks, it ends at the most attempts.
        let mut stopped = Stopped::MostAttempts;
        while tried.len() < MAX_ATTEMPTS {
            // The policy the trace names, read once: a `SetPolicy` meanwhile
            // applies to the next request.
            let Some((backend, reason)) = self.pick(policy, keyed, &tried) else {
                stopped = Stopped::NoNodeLeft;
                break;
            };
            if !tried.is_empty() {
                if !failing_over && !self.budget.withdraw() {
                    self.retries_refused.fetch_add(1, Ordering::Relaxed);
                    stopped = Stopped::BudgetSpent;
                    break;
                }
                self.retries.fetch_add(1, Ordering::Relaxed);
            } else {
                trace.choice = reason;
            }
            tried.push(backend.clone());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut headers = HeaderMap::with_capacity(4);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(TE, HeaderValue::from_static("trailers"));
            headers.insert(GRPC_TIMEOUT, grpc_timeout(remaining));
            if !method.is_read() {
                headers.insert(WRITE_BY, write_by(remaining, clients_write_by));
            }
            // Tells the node that this write may already have been applied:
            // by the client's own earlier attempt, or by one of ours that
            // was not refused before it started. After refusals alone it
            // is a first write, and a node's refusal of it says so.
            if !every_refused {
                let retries = tried.len() - 1 + usize::from(clients_retry);
                headers.insert(node::kv::RETRY_HEADER, HeaderValue::from(retries));
            }
            let started = Instant::now();
            let (result, ejected) = {
                let _in_flight = InFlight::start(backend.clone());
                // Whether the request went out, for a deadline that passed.
                let sent = AtomicBool::new(false);
                let attempt = async {
                    // No connection, no request sent: nothing was done.
                    let node = backend.connection().await.map_err(proto::not_applied)?;
                    sent.store(true, Ordering::Relaxed);
                    let framed = message.clone().into_bytes();
                    node.unary(path.clone(), headers, framed).await
                };
                // The node ends the call at the deadline passed on to it, but
                // a node that hangs ends nothing. A client's own deadline is
                // the client's to keep: it stops waiting and resets the
                // stream, which drops this (`http2::answer`). Ours is kept
                // here, on the dial too. (Boxed: the timer would make every
                // request's future larger to move.)
                let attempt = async {
                    if !ours {
                        return attempt.await;
                    }
                    let timed = Box::pin(tokio::time::timeout_at(deadline.into(), attempt)).await;
                    timed.unwrap_or_else(|_| match sent.load(Ordering::Relaxed) {
                        true => Err(out_of_time(&backend.name(), time, true, method)),
                        false => Err(not_connected_in_time(&backend.name(), time)),
                    })
                };
                if method.is_read() {
                    // A node that hangs (SIGSTOP) is ejected within 1.5 s; the
                    // reads waiting on it go elsewhere then, instead of waiting
                    // out their deadline. Writes wait: a write abandoned here
                    // could still be applied when the node wakes, after the
                    // client has written the key again.
                    tokio::select! {
                        reason = backend.ejection() => (Err(Status::unavailable(format!(
                            "{} was ejected while this read waited for it: {reason}",
                            backend.name()
                        ))), true),
                        result = attempt => (result, false),
                    }
                } else {
                    (attempt.await, false)
                }
            };
            let latency_us = started.elapsed().as_micros() as u64;
            match result {
                Ok(answer) => {
                    backend.served();
                    for (node, status) in failed_on {
                        let may_hold_out = || self.backends.may_hold_out(&node);
                        node.failed(&status, may_hold_out, self.backends.events());
                    }
                    if let Ok(name) = answer.message.coordinator(method) {
                        backend.learn_name(&name);
                    }
                    trace.attempts.push(Attempt {
                        node: backend.name().to_string(),
                        outcome: "OK".into(),
                        latency_us,
                        detail: String::new(),
                    });
                    // Our part of the trace goes on top of the node's.
                    let body = answer.message.with_trace(method, &trace).into_bytes();
                    let trailers = answer.trailers;
                    let body = Full::new(body).with_trailers(async { Some(Ok(trailers)) });
                    return Ok(http::Response::from_parts(answer.head, Body::new(body)));
                }
                Err(status) => {
                    let status = match proto::deadline::is_timeout_expired(&status) {
                        true => out_of_time(&backend.name(), time, ours, method),
                        false => status,
                    };
                    let blame = blame(&status);
                    if is_node_failure(&status) && !matches!(blame, Blame::Leaving | Blame::Ours) {
                        backend.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let events = self.backends.events();
                    match blame {
                        // It answers the reads it took: they wait for it.
                        Blame::Leaving => {
                            let reason = match proto::is_leaving(&status) {
                                true => format!(
                                    "{} is shutting down: it turned away the requests it held \
                                     unstarted, and finishes those it began",
                                    backend.name()
                                ),
                                false => status.message().to_string(),
                            };
                            backend.eject(reason, Waiting::Stay, events)
                        }
                        Blame::Broken => {
                            let reason = format!("connection failed: {}", status.message());
                            backend.eject(reason, Waiting::GiveUp, events);
                        }
                        Blame::Outlier if !ejected => {
                            failed_on.push((backend.clone(), status.clone()))
                        }
                        _ => {}
                    }
                    failing_over = ejected || blame.fails_over();
                    trace.attempts.push(Attempt {
                        node: backend.name().to_string(),
                        outcome: proto::code_name(status.code()).to_string(),
                        latency_us,
                        detail: status.message().to_string(),
                    });
                    // A write on a node that hung may be applied when it wakes,
                    // after the client has written the key again: not sent on.
                    // This is the answer, whatever the attempts before it.
                    if !method.is_read() && is_hung(&status) {
                        let failure = held_by_a_hung_node(&status, &trace.attempts);
                        return Err(failed_with_trace(failure, &trace, coordinated));
                    }
                    every_refused &= proto::was_not_applied(&status);
                    if let Some(theirs) = proto::details::trace_of(&status) {
                        coordinated = Some(theirs);
                    }
                    let stop = why_stop(&status, method, Instant::now() >= deadline);
                    last_failure = Some(status);
                    if let Some(stop) = stop {
                        stopped = stop;
                        break;
                    }
                }
            }
        }
        let failure = self.explain(last_failure, &trace, stopped);
        let failure = failed_with_trace(failure, &trace, coordinated);
        Err(marked(failure, every_refused))
    }

    /// Each backend that `which` selects, with its health: "n1 ejected".
    fn nodes(&self, which: impl Fn(&Backend) -> bool) -> Vec<String> {
        self.backends
            .list()
            .iter()
            .filter(|b| which(b))
            .map(|b| format!("{} {}", b.name(), b.health().name()))
            .collect()
    }

    /// The status to give the client when no attempt succeeded: every
    /// attempt's failure, and why there was no other.
    fn explain(&self, last: Option<Status>, trace: &Trace, stopped: Stopped) -> Status {
        let attempts: Vec<String> = trace
            .attempts
            .iter()
            .map(|a| format!("{} {}: {}", a.node, a.outcome, a.detail))
            .collect();
        let why_no_other = || match stopped {
            Stopped::MostAttempts => format!("{MAX_ATTEMPTS} attempts are the most a request gets"),
            Stopped::NoNodeLeft => {
                // The nodes not tried, and their health: why they were passed over.
                let untried = self.nodes(|b| !trace.attempts.iter().any(|a| *a.node == *b.name()));
                match untried.is_empty() {
                    true => "every node was tried".to_string(),
                    false => format!("no healthy node was left to try ({})", untried.join(", ")),
                }
            }
            Stopped::BudgetSpent => format!(
                "the retry budget is spent (retries may add {}% to the requests, \
                 --retry-budget; `clusterlab status` counts the retries refused)",
                // As given, less the noise of binary fractions: 20, 0.4, 0.004.
                (self.budget.ratio() * 100.0 * 1e6).round() / 1e6
            ),
            Stopped::NotRetryable(code) => format!(
                "{} is not retried (only UNAVAILABLE, UNKNOWN and a broken connection are, \
                 and for a read INTERNAL and DATA_LOSS, unless the node could not decode the \
                 request)",
                proto::code_name(code)
            ),
            Stopped::OutOfTime => "the request's deadline had passed".to_string(),
        };
        match last {
            // One attempt: its own status, as the node gave it, and only if
            // a retry was wanted, why none was made.
            Some(status) if attempts.len() == 1 => match stopped {
                // Its own words say the deadline passed.
                Stopped::OutOfTime if status.code() == tonic::Code::DeadlineExceeded => status,
                Stopped::NoNodeLeft | Stopped::BudgetSpent | Stopped::OutOfTime => {
                    Status::with_details_and_metadata(
                        status.code(),
                        format!("{}; not retried: {}", status.message(), why_no_other()),
                        status.details().to_vec().into(),
                        status.metadata().clone(),
                    )
                }
                _ => status,
            },
            Some(status) => Status::new(
                status.code(),
                format!(
                    "{} attempts failed ({}); no further attempt: {}",
                    attempts.len(),
                    attempts.join("; "),
                    why_no_other()
                ),
            ),
            None => {
                let known = self.nodes(|_| true);
                let which = match known.is_empty() {
                    // Only with --nodes-dns: no node up yet, the name not
                    // found, or every node gone long enough to be forgotten.
                    true => "it knows no node: --nodes-dns finds none, as when no node is up \
                             or the name resolves to no address"
                        .to_string(),
                    false => known.join(", "),
                };
                Status::unavailable(format!(
                    "no healthy node to send the request to ({which}); {}",
                    match attempts.is_empty() {
                        true => "see `clusterlab status` and the balancer's log".to_string(),
                        false => format!("tried: {}", attempts.join("; ")),
                    }
                ))
            }
        }
    }
}

/// Why a request that failed was not tried again: said in its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// It had [`MAX_ATTEMPTS`].
    MostAttempts,
    /// Every healthy node had failed it.
    NoNodeLeft,
    /// The retry budget had no token left.
    BudgetSpent,
    /// The last failure was one that another node would not mend.
    NotRetryable(tonic::Code),
    /// The request's deadline had passed.
    OutOfTime,
}

/// Why no further attempt is made after one that failed with `status`, if
/// one is not: it would fail the same on another node, or the request's
/// deadline has passed (`out_of_time`). An attempt that ran out the deadline
/// says so, not that its DEADLINE_EXCEEDED is not retried: a retry had no time
/// left, whatever the code.
fn why_stop(status: &Status, method: Method, out_of_time: bool) -> Option<Stopped> {
    match is_retryable(status, method) {
        false if out_of_time && status.code() == tonic::Code::DeadlineExceeded => {
            Some(Stopped::OutOfTime)
        }
        false => Some(Stopped::NotRetryable(status.code())),
        true if out_of_time => Some(Stopped::OutOfTime),
        true => None,
    }
}

/// The deadline the client sent as `grpc-timeout`, if any.
fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    proto::deadline::parse(headers.get(GRPC_TIMEOUT)?.to_str().ok()?)
}

/// What to tell the client when `node` did not answer in `time`: the node
/// ended the call when the deadline we passed on to it ran out, and tonic
/// reports that as `CANCELLED` "Timeout expired". It is `DEADLINE_EXCEEDED`,
/// and whose deadline it was (`ours`: the balancer's --request-timeout). A
/// write may still have been applied; a read changed nothing.
fn out_of_time(node: &str, time: Duration, ours: bool, method: Method) -> Status {
    let after = match method.is_read() {
        true => "a read changes nothing, so it is safe to send again",
        false => "the write may still have been applied, so read the key before writing it again",
    };
    Status::deadline_exceeded(format!(
        "{node} did not answer before the request's deadline ({time:?}: {}); {after}",
        whose(ours)
    ))
}

/// The failure of a write that a hung node holds (`hung`, the last of
/// `attempts`): not sent on, its outcome unknown, with the attempts before
/// it in words (one of those may have been applied too), for a client that
/// does not read the trace in the status's details.
fn held_by_a_hung_node(hung: &Status, attempts: &[Attempt]) -> Status {
    let before = &attempts[..attempts.len().saturating_sub(1)];
    let tried = match before.is_empty() {
        true => String::new(),
        false => format!(
            " (tried before it: {})",
            before
                .iter()
                .map(|a| format!("{} {}: {}", a.node, a.outcome, a.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    Status::unavailable(format!(
        "{}; it still holds this write and may apply it when it wakes, so the write was not \
         sent to another node after it: its outcome is unknown (read the key to see){tried}",
        hung.message()
    ))
}

/// `failure` with the balancer's trace (policy, choice, attempts) in its
/// details, on top of `node_part`, the last node's that came with a failure
/// (the coordinator and what its replicas did): the client shows it as it
/// shows a success's. No node tried, no trace.
fn failed_with_trace(failure: Status, ours: &Trace, node_part: Option<Trace>) -> Status {
    if ours.attempts.is_empty() {
        return failure;
    }
    let trace = Trace {
        balancer: ours.balancer.clone(),
        policy: ours.policy.clone(),
        choice: ours.choice.clone(),
        attempts: ours.attempts.clone(),
        ..node_part.unwrap_or_default()
    };
    proto::details::with_trace(failure, &trace)
}

/// A request's failure, marked as not applied if every attempt was refused
/// before it started (never so for a client's retry: see `every_refused`).
/// Otherwise the mark the last attempt may carry (a failed dial marks its
/// own) is taken off: an earlier attempt, ours or the client's own first,
/// may have been applied.
fn marked(failure: Status, every_refused: bool) -> Status {
    match every_refused {
        true => proto::not_applied(failure),
        false => proto::maybe_applied(failure),
    }
}

/// What to tell the client when no connection to `node` was made in `time`,
/// the balancer's `--request-timeout`: the request was never sent.
fn not_connected_in_time(node: &str, time: Duration) -> Status {
    proto::not_applied(Status::deadline_exceeded(format!(
        "no connection to {node} was made before the request's deadline ({time:?}: {}), \
         so the request was not sent and can be sent again",
        whose(true)
    )))
}

/// Whose deadline a request had: ours, or the client's, if it was the sooner.
fn whose(ours: bool) -> &'static str {
    match ours {
        true => "the balancer's --request-timeout",
        false => "the client's deadline",
    }
}

/// `remaining` as a `grpc-timeout` value: at most eight digits, then a unit.
fn grpc_timeout(remaining: Duration) -> HeaderValue {
    let micros = remaining.as_micros();
    let (amount, unit) = match u64::try_from(micros) {
        Ok(micros) if micros < 100_000_000 => (micros, b'u'),
        _ => (remaining.as_secs().min(99_999_999), b'S'),
    };
    // Every forwarded request comes here: itoa writes the digits on the
    // stack, at a third of the instructions of `format!`.
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(amount).as_bytes();
    let mut text = [0u8; 9];
    text[..digits.len()].copy_from_slice(digits);
    text[digits.len()] = unit;
    let mut value = HeaderValue::from_bytes(&text[..=digits.len()]).expect("digits and a unit");
    // Every request's deadline differs, so HPACK should not remember it: an
    // indexed value would push a new entry into the connection's header table
    // on every request and evict the entries that do repeat. "Sensitive"
    // makes h2 send it as a literal that is never indexed.
    value.set_sensitive(true);
    value
}

/// The moment a write `remaining` from its deadline must be stamped by, as a
/// [`WRITE_BY`] value, or the client's moment if that is sooner. Never
/// indexed by HPACK: it differs every time.
fn write_by(remaining: Duration, clients: Option<u64>) -> HeaderValue {
    let ours = proto::deadline::write_by(remaining);
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(clients.map_or(ours, |theirs| theirs.min(ours)));
    let mut value = HeaderValue::from_str(digits).expect("digits");
    value.set_sensitive(true);
    value
}

/// What a failed attempt says about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// It is shutting down (GOAWAY without an error, or its refusal of a
    /// request it held unstarted, [`proto::LEAVING`]): it took no new
    /// requests, and did not fail. Out of rotation; the reads it took wait
    /// for it.
    Leaving,
    /// Its connection broke: out of rotation at once.
    Broken,
    /// It could not serve the request: one toward ejecting it as an outlier,
    /// if another node then serves it.
    Outlier,
    /// The balancer closed the connection itself ([`is_worn_out_connection`]).
    Ours,
    /// Nothing: an answer about the request, a deadline, overload.
    Nothing,
}

impl Blame {
    /// Whether the request goes on to another node without spending the
    /// retry budget: its node, or its connection, is out, and such moves are
    /// bounded by what was in flight there (see retry.rs). A node shutting
    /// down fails every request queued for it at once (past its 256
    /// streams), none of which reached it: budgeted, all but ten failed.
    fn fails_over(self) -> bool {
        matches!(self, Blame::Leaving | Blame::Broken | Blame::Ours)
    }
}

/// What `status`, an attempt's failure, says about its node ([`Blame`]).
fn blame(status: &Status) -> Blame {
    if is_shutting_down(status) || proto::is_leaving(status) {
        Blame::Leaving
    } else if is_worn_out_connection(status) {
        Blame::Ours
    } else if is_connection_failure(status) {
        Blame::Broken
    } else if is_outlier_failure(status) {
        Blame::Outlier
    } else {
        Blame::Nothing
    }
}

/// Worth trying on another node. UNAVAILABLE or UNKNOWN means the node (or
/// its replicas) could not serve it, and so does a broken connection. A read,
/// which changes nothing, is tried elsewhere after INTERNAL or DATA_LOSS too
/// (a node whose disk fails): served there, it counts toward ejecting the
/// node as an outlier, which a request that ended on the node could not. A
/// write that failed so may have been applied, and is not sent on. Anything
/// else (a bad key, a deadline, a request no node can decode) would fail again.
fn is_retryable(status: &Status, method: Method) -> bool {
    use tonic::Code::*;
    match status.code() {
        Unavailable | Unknown => true,
        Internal | DataLoss => method.is_read() && !is_undecodable(status),
        _ => is_connection_failure(status),
    }
}

/// A node's answer to a request it could not decode: `INTERNAL`, as gRPC
/// servers answer, with prost's "failed to decode Protobuf message" (tonic's
/// codec passes prost's error on). The request was at fault, not the node:
/// the balancer decodes only a request's key, so a message whose other
/// fields have the wrong types reaches a node (docs/security.md).
fn is_undecodable(status: &Status) -> bool {
    status.code() == tonic::Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
}

/// Whether a failed attempt was the node's failure (it could not serve the
/// request), not its answer about the request itself: a bad key, a quorum
/// larger than N. Only the node's failures count as its errors in `status`,
/// on the dashboard and in `/metrics`; a learner's typo is not a sick node.
fn is_node_failure(status: &Status) -> bool {
    !proto::is_about_the_request(status.code()) && !is_undecodable(status)
}

/// Serves `clusterlab.v1.KeyValue` by forwarding. It is a plain tower service,
/// not one generated by tonic, because it passes messages on without decoding
/// them. It takes the request body as the HTTP/2 server streams it
/// ([`crate::http2`]; [`crate::server`] routes `KeyValue` calls here before
/// tonic's router sees them).
#[derive(Debug, Clone)]
pub struct ForwardService {
    router: Arc<Router>,
}

impl ForwardService {
    pub fn new(router: Arc<Router>) -> Self {
        ForwardService { router }
    }
}

impl NamedService for ForwardService {
    const NAME: &'static str = proto::key_value_server::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for ForwardService
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.forward(request).await;
            Ok(response.unwrap_or_else(Status::into_http))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            client_deadline(&headers)
        };
        assert_eq!(with("10S"), Some(Duration::from_secs(10)));
        assert_eq!(with("500m"), Some(Duration::from_millis(500)));
        assert_eq!(with("2M"), Some(Duration::from_secs(120)));
        assert_eq!(with("x"), None);
        assert_eq!(client_deadline(&HeaderMap::new()), None);
    }

    /// A failure goes to the client with the balancer's part of the trace
    /// over the node's (which the node's status carried in its details), in
    /// place of the node's alone; with no node tried, with none.
    #[test]
    fn a_failure_carries_the_balancers_trace_over_the_nodes() {
        let node_part = Trace {
            coordinator: "n2".into(),
            quorum: 2,
            ..Trace::default()
        };
        let from_node = proto::details::with_trace(Status::aborted("a newer write"), &node_part);
        let mut ours = Trace {
            balancer: "b1".into(),
            policy: "round-robin".into(),
            choice: "next in rotation".into(),
            ..Trace::default()
        };
        let untraced = failed_with_trace(from_node.clone(), &ours, None);
        assert_eq!(untraced.details(), from_node.details(), "no node tried");
        ours.attempts.push(Attempt {
            node: "n2".into(),
            outcome: "ABORTED".into(),
            latency_us: 5,
            detail: "a newer write".into(),
        });
        let node_part = proto::details::trace_of(&from_node);
        let failure = failed_with_trace(from_node, &ours, node_part);
        assert_eq!(failure.code(), tonic::Code::Aborted);
        let trace = proto::details::trace_of(&failure).expect("a trace");
        assert_eq!((trace.balancer.as_str(), trace.attempts.len()), ("b1", 1));
        assert_eq!((trace.coordinator.as_str(), trace.quorum), ("n2", 2));
    }

    /// A write held by a hung node names the attempts before it in words:
    /// one of them may have been applied too.
    #[test]
    fn a_write_held_by_a_hung_node_names_the_attempts_before_it() {
        let attempt = |node: &str, outcome: &str, detail: &str| Attempt {
            node: node.into(),
            outcome: outcome.into(),
            latency_us: 1,
            detail: detail.into(),
        };
        let hung = Status::unavailable("n2 stopped answering");
        let alone = held_by_a_hung_node(&hung, &[attempt("n2", "UNAVAILABLE", "stopped")]);
        assert!(
            alone
                .message()
                .ends_with("its outcome is unknown (read the key to see)"),
            "{alone:?}"
        );
        let after = held_by_a_hung_node(
            &hung,
            &[
                attempt("n1", "UNAVAILABLE", "no quorum"),
                attempt("n2", "UNAVAILABLE", "stopped"),
            ],
        );
        assert!(
            after
                .message()
                .starts_with("n2 stopped answering; it still holds this write")
                && after
                    .message()
                    .ends_with(" (tried before it: n1 UNAVAILABLE: no quorum)"),
            "{after:?}"
        );
    }

    /// One attempt that failed as another node might not have: the client
    /// hears its own words, and why no other node was tried, when one was
    /// wanted; not when the failure was one another node would not mend.
    #[test]
    fn a_single_failure_says_why_it_was_not_retried() {
        let router = router_of(vec![], 0.2);
        let failed = |status: Status, stopped: Stopped| {
            let trace = Trace {
                attempts: vec![Attempt {
                    node: "n1".into(),
                    outcome: proto::code_name(status.code()).into(),
                    latency_us: 1,
                    detail: status.message().into(),
                }],
                ..Trace::default()
            };
            router.explain(Some(status), &trace, stopped)
        };
        let late = failed(
            Status::unavailable("n1 is shutting down"),
            Stopped::OutOfTime,
        );
        assert_eq!(late.code(), tonic::Code::Unavailable);
        assert_eq!(
            late.message(),
            "n1 is shutting down; not retried: the request's deadline had passed"
        );
        let answer = Status::invalid_argument("key is empty");
        let refused = failed(answer, Stopped::NotRetryable(tonic::Code::InvalidArgument));
        assert_eq!(refused.message(), "key is empty");
        // A node's own deadline failure says it already.
        let timed_out = Status::deadline_exceeded("n1 did not answer within 10s");
        let timed_out = failed(timed_out, Stopped::OutOfTime);
        assert_eq!(timed_out.message(), "n1 did not answer within 10s");
    }

    /// A router of `backends` (none healthy yet), with `--retry-budget`.
    fn router_of(backends: Vec<String>, retry_budget: f64) -> Router {
        let events = node::events::Events::new("balancer");
        let backends = crate::backend::Backends::new(
            backends,
            Duration::from_secs(1),
            certs::dial::Dialer::new(None),
            events,
        );
        Router::new(
            "balancer".into(),
            backends,
            Policy::RoundRobin,
            retry_budget,
            BusyPoll::new(Duration::ZERO),
            Duration::from_secs(10),
        )
    }

    /// A retry cut off by the deadline says the deadline passed, not that
    /// DEADLINE_EXCEEDED is not retried, as if another outcome would have
    /// earned one more attempt; a spent budget names the fraction given.
    #[test]
    fn why_no_further_attempt_names_the_deadline_and_the_budget_as_given() {
        let late = Status::deadline_exceeded("n2 did not answer before the request's deadline");
        assert!(matches!(
            why_stop(&late, Method::Put, true),
            Some(Stopped::OutOfTime)
        ));
        assert!(matches!(
            why_stop(&late, Method::Put, false),
            Some(Stopped::NotRetryable(tonic::Code::DeadlineExceeded))
        ));
        let down = Status::unavailable("n1 is shutting down");
        assert!(why_stop(&down, Method::Get, false).is_none());
        assert!(matches!(
            why_stop(&down, Method::Get, true),
            Some(Stopped::OutOfTime)
        ));
        let attempt = |node: &str, status: &Status| Attempt {
            node: node.into(),
            outcome: proto::code_name(status.code()).into(),
            latency_us: 1,
            detail: status.message().into(),
        };
        let trace = Trace {
            attempts: vec![attempt("n1", &down), attempt("n2", &late)],
            ..Trace::default()
        };
        let router = router_of(vec![], 0.004);
        let failure = router.explain(Some(late.clone()), &trace, Stopped::OutOfTime);
        assert!(
            failure
                .message()
                .ends_with("no further attempt: the request's deadline had passed"),
            "{failure:?}"
        );
        let failure = router.explain(Some(down.clone()), &trace, Stopped::BudgetSpent);
        assert!(
            failure
                .message()
                .contains("retries may add 0.4% to the requests"),
            "{failure:?}"
        );
        for (budget, said) in [(0.2, "20%"), (0.333, "33.3%"), (0.00004, "0.004%")] {
            let router = router_of(vec![], budget);
            let failure = router.explain(Some(down.clone()), &trace, Stopped::BudgetSpent);
            assert!(
                failure
                    .message()
                    .contains(&format!("retries may add {said} to the requests")),
                "{failure:?}"
            );
        }
    }

    /// A client's retry that no node took (none healthy, its message refused
    /// here, or its node not dialed) is not said to be unapplied: its first
    /// attempt may have been. The same write sent once is.
    #[tokio::test]
    async fn a_clients_retry_refused_here_is_not_marked_not_applied() {
        let router = router_of(vec!["127.0.0.1:1".into()], 0.2);
        let put = proto::PutRequest {
            key: "k".into(),
            value: b"v".to_vec(),
            request_id: "r1".into(),
            ..Default::default()
        };
        let encoded = prost::Message::encode_to_vec(&put);
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        // The write, sent once or as the client's retry: how it failed.
        let failed = |message: Vec<u8>, retry: bool| {
            let mut request = http::Request::post("/clusterlab.v1.KeyValue/Put");
            if retry {
                request = request.header(node::kv::RETRY_HEADER, "1");
            }
            let request = request.body(Full::new(Bytes::from(message))).unwrap();
            let router = &router;
            async move { router.forward(request).await.expect_err("no node takes it") }
        };
        for (message, why) in [
            (framed.clone(), "no healthy node"),
            (vec![], "carried no message"),
        ] {
            for retry in [false, true] {
                let failure = failed(message.clone(), retry).await;
                assert!(failure.message().contains(why), "{failure:?}");
                let not_applied = proto::was_not_applied(&failure);
                assert_eq!(not_applied, !retry, "retry {retry}: {failure:?}");
            }
        }
        // A node in rotation that cannot be dialed: the failed dial marks its
        // own failure not applied, and for a client's retry the mark goes.
        let backend = router.backends.list()[0].clone();
        for retry in [false, true] {
            backend.mark_healthy(Instant::now(), router.backends.events());
            assert!(backend.is_healthy());
            let failure = failed(framed.clone(), retry).await;
            let not_applied = proto::was_not_applied(&failure);
            assert_eq!(not_applied, !retry, "retry {retry}: {failure:?}");
        }
    }

    /// A node's own failure is tried on another node; a read also after one
    /// that a write may have been applied despite (so a node failing reads
    /// with INTERNAL can be ejected as an outlier); an answer about the
    /// request is not, nor a request the node could not decode.
    #[test]
    fn reads_are_retried_after_internal_and_writes_are_not() {
        use Method::*;
        for method in [Get, Scan, Put, Delete] {
            assert!(is_retryable(&Status::unavailable("down"), method));
            assert!(is_retryable(&Status::unknown("injected"), method));
            for failed in [Status::internal("storage"), Status::data_loss("damaged")] {
                let retried = is_retryable(&failed, method);
                assert_eq!(retried, method.is_read(), "{method:?} {failed:?}");
            }
            let undecodable = Status::internal(
                "failed to decode Protobuf message: PutRequest.write_quorum: invalid wire type",
            );
            assert!(!is_retryable(&undecodable, method), "{method:?}");
            for answer in [
                Status::invalid_argument("bad key"),
                Status::deadline_exceeded("too slow"),
                Status::resource_exhausted("busy"),
            ] {
                assert!(!is_retryable(&answer, method), "{method:?} {answer:?}");
            }
        }
    }

    /// A deadline that passed before the node was reached says the request
    /// was not sent, and marks it so (`clusterlab check` counts such a write
    /// as not applied); one that passed after it was sent says it may have
    /// been applied.
    #[test]
    fn a_deadline_passed_while_dialing_says_nothing_was_sent() {
        let time = Duration::from_millis(500);
        let dialing = not_connected_in_time("n2", time);
        assert_eq!(dialing.code(), tonic::Code::DeadlineExceeded);
        assert!(proto::was_not_applied(&dialing), "{dialing:?}");
        assert!(
            dialing.message().contains("no connection to n2 was made"),
            "{dialing:?}"
        );
        let waiting = out_of_time("n2", time, true, Method::Put);
        assert_eq!(waiting.code(), tonic::Code::DeadlineExceeded);
        assert!(!proto::was_not_applied(&waiting), "{waiting:?}");
        assert!(waiting.message().contains("may still have been applied"));
        // A read's says it changed nothing.
        let reading = out_of_time("n2", time, true, Method::Get);
        assert!(
            reading
                .message()
                .ends_with("a read changes nothing, so it is safe to send again")
        );
    }

    #[test]
    fn only_failures_of_the_node_count_as_its_errors() {
        let node_failures = [
            Status::unavailable("n2 is shutting down"),
            Status::deadline_exceeded("replicas too slow"),
            Status::internal("storage failed"),
            Status::unknown("injected fault"),
        ];
        for status in node_failures {
            assert!(is_node_failure(&status), "{status:?}");
        }
        let answers = [
            Status::invalid_argument("write quorum 4 is more than the 3 replicas"),
            Status::out_of_range("decoded message length too large"),
            Status::permission_denied("reader may not Put"),
            Status::internal("failed to decode Protobuf message: invalid wire type"),
        ];
        for status in answers {
            assert!(!is_node_failure(&status), "{status:?}");
        }
    }

    /// What each failure does to its node: a connection the balancer
    /// closed itself, worn out by late answers, neither ejects it nor counts
    /// toward ejecting it, nor as its error; it is still tried elsewhere.
    #[test]
    fn a_connection_closed_by_the_balancer_is_not_the_nodes_failure() {
        let worn_out = crate::connection::worn_out("n1:7100");
        assert_eq!(blame(&worn_out), Blame::Ours);
        assert!(is_retryable(&worn_out, Method::Put), "{worn_out:?}");
        assert!(
            worn_out.message().contains("stays in rotation"),
            "{worn_out:?}"
        );
        let leaving = crate::connection::shutting_down("n1:7100");
        assert_eq!(blame(&leaving), Blame::Leaving);
        // Its refusal of a request it held, before its GOAWAY: not an outlier's.
        let turned_away = proto::leaving(Status::unavailable("n1 is shutting down"));
        assert_eq!(blame(&turned_away), Blame::Leaving);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let broken = Status::from_error(Box::new(refused));
        assert_eq!(blame(&broken), Blame::Broken);
        assert_eq!(blame(&Status::unavailable("no quorum")), Blame::Outlier);
        assert_eq!(blame(&Status::invalid_argument("bad key")), Blame::Nothing);
        // Off a node or connection that is out, free of the retry budget.
        for (status, fails_over) in [
            (&worn_out, true),
            (&leaving, true),
            (&turned_away, true),
            (&broken, true),
            (&Status::unavailable("no quorum"), false),
        ] {
            assert_eq!(blame(status).fails_over(), fails_over, "{status:?}");
        }
    }

    #[test]
    fn deadlines_are_passed_on_in_eight_digits_or_fewer() {
        let sent = |d: Duration| grpc_timeout(d).to_str().unwrap().to_string();
        assert_eq!(sent(Duration::from_millis(1500)), "1500000u");
        assert_eq!(sent(Duration::from_secs(3600)), "3600S");
        assert_eq!(sent(Duration::ZERO), "0u");
        // The largest count of microseconds, then whole seconds.
        assert_eq!(sent(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(sent(Duration::from_secs(100)), "100S");
        assert_eq!(sent(Duration::MAX), "99999999S");
        for d in [Duration::ZERO, Duration::from_secs(99), Duration::MAX] {
            let value = grpc_timeout(d);
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.clone());
            assert!(value.len() <= 9, "{value:?}");
            assert!(client_deadline(&headers).is_some(), "{value:?}");
        }
    }
}
