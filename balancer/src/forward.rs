//! Forwarding: the balancer's `KeyValue` service.
//!
//! For each request: pick a healthy node by policy, forward the request over
//! that node's pooled connection, and if the node fails in a way that is safe to
//! retry, try another node, within the request's deadline and the retry budget.
//! Whatever happens goes into the response's trace (balancer, policy, why this
//! node, every attempt) or, on failure, into the status message.

use std::{
    future::Future,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use proto::{
    Attempt, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest, PutResponse,
    ScanRequest, ScanResponse, Trace, key_value_client::KeyValueClient, key_value_server::KeyValue,
};
use tonic::{Request, Response, Status};

use crate::{
    backend::{Backend, Backends, InFlight},
    busy_poll::BusyPoll,
    connection::{Http2, is_connection_failure},
    policy::{Candidate, Picker, Policy},
    retry::RetryBudget,
};

/// The deadline of a request that does not bring its own (`grpc-timeout`).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// At most this many nodes are tried for one request.
const MAX_ATTEMPTS: usize = 3;

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
    ) -> Self {
        Router {
            name,
            backends,
            policy: RwLock::new(policy),
            picker: Picker::default(),
            budget: RetryBudget::new(retry_budget),
            busy,
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

    /// Picks a healthy node not in `tried`, with the reason.
    fn pick(&self, key: &str, tried: &[String]) -> Option<(Arc<Backend>, String)> {
        let healthy: Vec<Arc<Backend>> = self
            .backends
            .list()
            .into_iter()
            .filter(|b| b.is_healthy() && !tried.contains(&b.addr))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let names: Vec<String> = healthy.iter().map(|b| b.name()).collect();
        let candidates: Vec<Candidate<'_>> = healthy
            .iter()
            .zip(&names)
            .map(|(b, name)| Candidate {
                name,
                in_flight: b.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        let (i, reason) = self.picker.pick(self.policy(), &candidates, key);
        Some((healthy[i].clone(), reason))
    }

    /// Sends `message` to nodes until one answers or it is not worth trying
    /// again; `call` makes the RPC on one node's client.
    async fn forward<M, R, F>(
        &self,
        request: Request<M>,
        key: &str,
        call: impl Fn(KeyValueClient<Http2>, Request<M>) -> F,
    ) -> Result<Response<R>, Status>
    where
        M: Clone,
        R: Traced,
        F: Future<Output = Result<Response<R>, Status>>,
    {
        // While requests come one at a time, this keeps the thread awake.
        let _busy = self.busy.request();
        let deadline = Instant::now() + client_deadline(&request).unwrap_or(DEFAULT_DEADLINE);
        let message = request.into_inner();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.budget.deposit();
        let policy = self.policy();
        let mut trace = Trace {
            balancer: self.name.clone(),
            policy: policy.name().to_string(),
            ..Trace::default()
        };
        let mut tried: Vec<String> = Vec::new();
        let mut last_failure: Option<Status> = None;
        while tried.len() < MAX_ATTEMPTS {
            let Some((backend, reason)) = self.pick(key, &tried) else {
                break;
            };
            if !tried.is_empty() {
                if !self.budget.withdraw() {
                    self.retries_refused.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                self.retries.fetch_add(1, Ordering::Relaxed);
            } else {
                trace.choice = reason;
            }
            tried.push(backend.addr.clone());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut attempt = Request::new(message.clone());
            attempt.set_timeout(remaining);
            if tried.len() > 1 {
                // Tells the node that this write may already have been applied.
                attempt.metadata_mut().insert(
                    node::kv::RETRY_HEADER,
                    tonic::metadata::MetadataValue::from(tried.len() as u64 - 1),
                );
            }
            let started = Instant::now();
            let result = {
                let _in_flight = InFlight::start(backend.clone());
                match backend.key_value().await {
                    Ok(client) => call(client, attempt).await,
                    Err(unreachable) => Err(unreachable),
                }
            };
            let latency_us = started.elapsed().as_micros() as u64;
            match result {
                Ok(mut response) => {
                    let coordinator = response
                        .get_ref()
                        .trace()
                        .map(|t| t.coordinator.clone())
                        .unwrap_or_default();
                    backend.learn_name(&coordinator);
                    trace.attempts.push(Attempt {
                        node: backend.name(),
                        outcome: "OK".into(),
                        latency_us,
                        detail: String::new(),
                    });
                    // The node's part (coordinator, replicas) with ours on top.
                    let node_part = response.get_mut().trace_mut().take().unwrap_or_default();
                    trace.coordinator = node_part.coordinator;
                    trace.quorum = node_part.quorum;
                    trace.replicas = node_part.replicas;
                    *response.get_mut().trace_mut() = Some(trace);
                    return Ok(response);
                }
                Err(status) => {
                    backend.errors.fetch_add(1, Ordering::Relaxed);
                    if is_connection_failure(&status) {
                        let reason = format!("connection failed: {}", status.message());
                        backend.eject(reason, self.backends.events());
                    }
                    trace.attempts.push(Attempt {
                        node: backend.name(),
                        outcome: proto::code_name(status.code()).to_string(),
                        latency_us,
                        detail: status.message().to_string(),
                    });
                    let retry = is_retryable(&status) && Instant::now() < deadline;
                    last_failure = Some(status);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(self.explain(last_failure, &trace))
    }

    /// The status to give the client when no attempt succeeded.
    fn explain(&self, last: Option<Status>, trace: &Trace) -> Status {
        let attempts: Vec<String> = trace
            .attempts
            .iter()
            .map(|a| format!("{} {}: {}", a.node, a.outcome, a.detail))
            .collect();
        match last {
            Some(status) if attempts.len() == 1 => status,
            Some(status) => Status::new(
                status.code(),
                format!(
                    "{} attempts failed ({}); {}",
                    attempts.len(),
                    attempts.join("; "),
                    budget_note(attempts.len())
                ),
            ),
            None => {
                let nodes: Vec<String> = self
                    .backends
                    .list()
                    .iter()
                    .map(|b| format!("{} {}", b.name(), b.health().name()))
                    .collect();
                Status::unavailable(format!(
                    "no healthy node to send the request to ({}); {}",
                    nodes.join(", "),
                    match attempts.is_empty() {
                        true => "see `clusterlab status` and the balancer's log".to_string(),
                        false => format!("tried: {}", attempts.join("; ")),
                    }
                ))
            }
        }
    }
}

fn budget_note(attempts: usize) -> &'static str {
    if attempts >= MAX_ATTEMPTS {
        "no more retries for this request"
    } else {
        "the balancer stopped retrying (deadline, retry budget, or no other healthy node)"
    }
}

/// The deadline the client sent as `grpc-timeout`, if any.
fn client_deadline<M>(request: &Request<M>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Worth trying on another node. UNAVAILABLE means the node (or its replicas)
/// could not serve it; anything else (a bad key, a deadline) would fail again.
fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown
    ) || is_connection_failure(status)
}

/// A response that carries a trace.
pub trait Traced {
    fn trace(&self) -> Option<&Trace>;
    fn trace_mut(&mut self) -> &mut Option<Trace>;
}

macro_rules! traced {
    ($($response:ty),*) => {$(
        impl Traced for $response {
            fn trace(&self) -> Option<&Trace> {
                self.trace.as_ref()
            }
            fn trace_mut(&mut self) -> &mut Option<Trace> {
                &mut self.trace
            }
        }
    )*};
}
traced!(GetResponse, PutResponse, DeleteResponse, ScanResponse);

/// Serves `clusterlab.v1.KeyValue` by forwarding.
#[derive(Debug, Clone)]
pub struct ForwardService {
    router: Arc<Router>,
}

impl ForwardService {
    pub fn new(router: Arc<Router>) -> Self {
        ForwardService { router }
    }
}

#[tonic::async_trait]
impl KeyValue for ForwardService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = request.get_ref().key.clone();
        self.router
            .forward(request, &key, |mut c, r| async move { c.get(r).await })
            .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let key = request.get_ref().key.clone();
        self.router
            .forward(request, &key, |mut c, r| async move { c.put(r).await })
            .await
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let key = request.get_ref().key.clone();
        self.router
            .forward(request, &key, |mut c, r| async move { c.delete(r).await })
            .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let key = request.get_ref().prefix.clone();
        self.router
            .forward(request, &key, |mut c, r| async move { c.scan(r).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let with = |value: &str| {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("grpc-timeout", value.parse().unwrap());
            client_deadline(&request)
        };
        assert_eq!(with("10S"), Some(Duration::from_secs(10)));
        assert_eq!(with("500m"), Some(Duration::from_millis(500)));
        assert_eq!(with("2M"), Some(Duration::from_secs(120)));
        assert_eq!(with("x"), None);
        assert_eq!(client_deadline(&Request::new(())), None);
    }
}
