//! The `KeyValue` gRPC service: checks each request against the limits and hands
//! it to the [`Coordinator`], within the request's deadline ([`WithDeadline`]).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::{BoxFuture, Either};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{Service, http},
    server::NamedService,
};

use proto::{
    DeleteRequest, DeleteResponse, Entry, GetRequest, GetResponse, PutRequest, PutResponse,
    ScanRequest, ScanResponse,
    key_value_server::{KeyValue, KeyValueServer},
};

use crate::{
    capacity::Capacity,
    coordinator::{Coordinator, Write},
    limits::{self, MAX_MESSAGE_BYTES, Validate},
    state::NodeState,
};

/// Metadata on a write sent again, whose earlier attempt may have been
/// applied: a balancer adds it to such attempts, and a client may to its own.
pub const RETRY_HEADER: &str = "clusterlab-retry";

/// A retried write's refusal before it began: not marked as not applied,
/// and not told it is safe to send again (a refusal at shutdown says so),
/// since its first attempt may have been applied.
fn as_a_retried_writes(status: Status) -> Status {
    let status = proto::maybe_applied(status);
    let safe = format!("; {}", crate::fault::SAFE_TO_SEND_AGAIN);
    match status.message().strip_suffix(&safe) {
        Some(before) => Status::with_metadata(
            status.code(),
            format!("{before}: {A_RETRY_MAY_HAVE_BEEN_APPLIED}"),
            status.metadata().clone(),
        ),
        None => status,
    }
}

/// What a retried write that changed nothing is told: an earlier attempt,
/// whose answer was lost, may have been applied.
const A_RETRY_MAY_HAVE_BEEN_APPLIED: &str = "this attempt changed nothing, but it is a retry, \
    and an earlier attempt may have been applied, so read the key before writing it again";

/// True when a balancer says this request is a retry.
fn is_retry<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(RETRY_HEADER)
}

/// The moment a write must be stamped by: its sender's
/// ([`proto::deadline::WRITE_BY_HEADER`]) or its call's deadline, whichever
/// is sooner ([`WithDeadline`] puts it in).
pub(crate) fn write_by<T>(request: &Request<T>) -> Option<u64> {
    write_by_header(request.metadata().as_ref())
}

/// The [`proto::deadline::WRITE_BY_HEADER`] in `headers`, if one parses.
fn write_by_header(headers: &http::HeaderMap) -> Option<u64> {
    proto::deadline::parse_write_by(headers.get(proto::deadline::WRITE_BY_HEADER)?.as_bytes())
}

/// Serves `clusterlab.v1.KeyValue`.
#[derive(Debug, Clone)]
pub struct KeyValueService {
    state: Arc<NodeState>,
    coordinator: Coordinator,
    capacity: Arc<Capacity>,
}

impl KeyValueService {
    /// The service for the node described by `state`, starting at most
    /// `capacity` requests per second (0: no limit). Serve it through
    /// [`server`], which adds the node's deadline.
    pub fn new(state: Arc<NodeState>, capacity: u32) -> Self {
        KeyValueService {
            coordinator: Coordinator::new(state.clone()),
            state,
            capacity: Arc::new(Capacity::new(capacity)),
        }
    }

    /// Every request is counted, waits its turn under `--capacity`, then meets
    /// the faults. Past them, it has [`Begun`]. A node that starts to shut
    /// down refuses the requests still waiting, as not applied: the drain
    /// would otherwise hold a queue that outlasts it. A retry's refusal is not
    /// marked so: its first attempt may have been applied.
    /// A retried write is not told either that it is safe to send again.
    async fn admit<T>(&self, request: &Request<T>, write: bool) -> Result<(), Status> {
        match (is_retry(request), write) {
            (true, true) => self.admit_any(request).await.map_err(as_a_retried_writes),
            (true, false) => self.admit_any(request).await.map_err(proto::maybe_applied),
            (false, _) => self.admit_any(request).await,
        }
    }

    /// Gives way once before a write begins, so that hyper looks for a reset
    /// of its stream first. A node frozen (SIGSTOP, `docker pause`) with a
    /// write waiting in its socket, and the reset its client sent on giving
    /// up, reads both when it wakes; hyper polls the call before it looks
    /// for a reset, and in one poll the write would be stamped and sent to
    /// the replicas, later than anything the client went on to write.
    async fn unless_abandoned(&self) {
        tokio::task::yield_now().await;
    }

    /// [`KeyValueService::admit`], its refusals marked as not applied.
    async fn admit_any<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            // Without --capacity there is no wait: the request goes on,
            // shutting down or not (a drain serves it). With it, a request
            // whose start is free goes on too; one that must wait for its
            // start is refused.
            biased;
            () = self.capacity.admit() => {}
            refused = self.state.faults.refused_at_shutdown("queued behind --capacity") => {
                return Err(refused);
            }
        }
        self.state.faults.enter(None).await?;
        if let Some(begun) = request.extensions().get::<Begun>() {
            begun.0.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Whether a call got past its wait to be admitted (its turn under
/// `--capacity`, a pause, added latency): only from then on can a write take
/// effect. [`WithDeadline`] puts one in each call it times, so that a call it
/// ends before then can say that nothing was changed.
#[derive(Debug, Clone, Default)]
struct Begun(Arc<AtomicBool>);

/// The calls, each within its deadline ([`WithDeadline`], around the server).
#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.admit(&request, false).await?;
        let request = request.into_inner();
        request.validate()?;
        let (record, trace) = self
            .coordinator
            .read(request.key, request.read_quorum)
            .await?;
        let response = match record {
            Some(record) if record.value.is_some() => GetResponse {
                found: true,
                value: record.value.unwrap_or_default(),
                version: Some(record.version.into()),
                trace: Some(trace),
            },
            // A tombstone: the key does not exist, and the delete's
            // version says since when.
            Some(tombstone) => GetResponse {
                version: Some(tombstone.version.into()),
                trace: Some(trace),
                ..GetResponse::default()
            },
            None => GetResponse {
                trace: Some(trace),
                ..GetResponse::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.unless_abandoned().await;
        self.admit(&request, true).await?;
        let retry = is_retry(&request);
        let write_by = write_by(&request);
        let request = request.into_inner();
        request.validate()?;
        let write = Write {
            key: request.key,
            value: Some(request.value),
            write_quorum: request.write_quorum,
            request_id: request.request_id,
            retry,
            write_by,
        };
        let (version, trace) = self.coordinator.write(write).await?;
        Ok(Response::new(PutResponse {
            version: Some(version.into()),
            trace: Some(trace),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.unless_abandoned().await;
        self.admit(&request, true).await?;
        let retry = is_retry(&request);
        let write_by = write_by(&request);
        let request = request.into_inner();
        request.validate()?;
        let write = Write {
            key: request.key,
            value: None,
            write_quorum: request.write_quorum,
            request_id: request.request_id,
            retry,
            write_by,
        };
        let (version, trace) = self.coordinator.write(write).await?;
        Ok(Response::new(DeleteResponse {
            version: Some(version.into()),
            trace: Some(trace),
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.admit(&request, false).await?;
        let request = request.into_inner();
        request.validate()?;
        let limit = limits::scan_limit(request.limit)?;
        let (records, next, trace) = self
            .coordinator
            .scan(request.prefix, request.start_after, limit)
            .await?;
        let entries = records
            .into_iter()
            .map(|r| Entry {
                key: r.key,
                value: r.value.unwrap_or_default(),
                version: Some(r.version.into()),
            })
            .collect();
        Ok(Response::new(ScanResponse {
            entries,
            more: next.is_some(),
            trace: Some(trace),
            next_start_after: next.unwrap_or_default(),
        }))
    }
}

/// `KeyValue` as the node serves it: [`KeyValueService`] behind the message
/// size limit, giving up on a request after `request_timeout` unless its
/// client's deadline is sooner ([`WithDeadline`]).
pub fn server(
    state: Arc<NodeState>,
    capacity: u32,
    request_timeout: Duration,
) -> WithDeadline<KeyValueServer<KeyValueService>> {
    WithDeadline {
        name: state.name.clone().into(),
        request_timeout,
        inner: KeyValueServer::new(KeyValueService::new(state, capacity))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
    }
}

/// The paths of the `KeyValue` calls that write.
const PUT_PATH: &str = "/clusterlab.v1.KeyValue/Put";
const DELETE_PATH: &str = "/clusterlab.v1.KeyValue/Delete";

/// Ends a call at the node's `--request-timeout`, counted from when its
/// headers arrived: a paused node, a full `--capacity` queue, or a client that
/// never finishes sending its message must not hold a request for ever. The
/// answer says whether the call had `Begun`: if not, nothing was changed and
/// the client may simply send it again. A client's sooner deadline
/// (`grpc-timeout`) is left to tonic, which ends the call then (CANCELLED,
/// "Timeout expired", see [`proto::deadline::is_timeout_expired`]).
#[derive(Debug, Clone)]
pub struct WithDeadline<S> {
    inner: S,
    name: Arc<str>,
    request_timeout: Duration,
}

impl<S: NamedService> NamedService for WithDeadline<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for WithDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let theirs = proto::deadline::of(request.headers());
        let (deadline, ours) = proto::deadline::sooner(theirs, self.request_timeout);
        let write = matches!(request.uri().path(), PUT_PATH | DELETE_PATH);
        // A retry not begun here may have been applied by its first attempt.
        let retry = request.headers().contains_key(RETRY_HEADER);
        // A write must be stamped and stored by the end of this call: its
        // client has moved on by then, and a copy held up past it (on its way
        // to a slow replica, or in this node, stopped after reading it) must
        // not land later, perhaps after a delete of its key has been
        // collected. Its client's moment if sooner; a client that sent none
        // (any gRPC client but clusterlab's own and the balancer), or one
        // that does not parse, gets the call's. (A write that waited unread
        // in a stopped node's socket is timed from when it is read: only
        // the client's clock could say how long it waited, and only
        // clusterlab's clients send it.)
        if write {
            let ours = proto::deadline::write_by(deadline);
            let by = write_by_header(request.headers()).map_or(ours, |theirs| theirs.min(ours));
            request.headers_mut().insert(
                proto::deadline::WRITE_BY_HEADER,
                http::HeaderValue::from(by),
            );
        }
        if !ours {
            return Either::Left(self.inner.call(request));
        }
        let begun = Begun::default();
        request.extensions_mut().insert(begun.clone());
        let call = self.inner.call(request);
        let name = self.name.clone();
        Either::Right(Box::pin(async move {
            let out_of_time = || {
                let gave_up = format!(
                    "{name} gave up on the request after {deadline:?} (its --request-timeout)"
                );
                let begun = begun.0.load(Ordering::Relaxed);
                let status = Status::deadline_exceeded(if begun && write {
                    format!(
                        "{gave_up}; the write may still have been applied, so read the key \
                         before writing it again"
                    )
                } else if begun {
                    format!("{gave_up}; a read changes nothing, so it is safe to send again")
                } else {
                    let before = format!(
                        "{gave_up} before starting it (its message had not arrived, or it was \
                         held by --capacity, a pause or added latency)"
                    );
                    match retry && write {
                        true => format!("{before}: {A_RETRY_MAY_HAVE_BEEN_APPLIED}"),
                        false => {
                            format!("{before}: nothing was changed, so it is safe to send again")
                        }
                    }
                });
                // Not begun, it changed nothing: marked so, as every refusal
                // before any work is (`clusterlab check` counts it failed,
                // not maybe applied).
                let status = match begun || retry {
                    true => status,
                    false => proto::not_applied(status),
                };
                Ok(status.into_http())
            };
            tokio::time::timeout(deadline, call)
                .await
                .unwrap_or_else(|_| out_of_time())
        }))
    }
}

/// The service through tonic, in-process ([`crate::in_process`]): what a
/// client on the network would get, without starting a node.
#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use proto::{DeleteRequest, GetRequest, PutRequest, ScanRequest, limits::MAX_VALUE_BYTES};
    use tonic::{Code, Request};

    use super::KeyValueService;
    use crate::{fault::Fault, in_process};

    /// `--request-timeout`'s default.
    const TEN_SECONDS: Duration = Duration::from_secs(10);

    /// A write from a client that sends no write-by (grpcurl, a program of
    /// the learner's) must be stamped and applied by the end of its call,
    /// as one through the balancer must: a copy held up past it must not
    /// land after its client has moved on. One that sends it keeps it, and
    /// a read gets none.
    #[tokio::test]
    async fn a_write_without_a_write_by_gets_its_calls_deadline() {
        use tonic::codegen::{Service, http};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let inner = {
            let seen = seen.clone();
            tower::service_fn(move |request: http::Request<()>| {
                let by = request
                    .headers()
                    .get(proto::deadline::WRITE_BY_HEADER)
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                seen.lock().unwrap().push(by);
                async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        tonic::body::Body::empty(),
                    ))
                }
            })
        };
        let mut service = super::WithDeadline {
            inner,
            name: "n1".into(),
            request_timeout: TEN_SECONDS,
        };
        let call = |path: &str, header: Option<(&str, &str)>| {
            let mut request = http::Request::builder().uri(path);
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            request.body(()).unwrap()
        };
        let before = proto::deadline::write_by(TEN_SECONDS);
        service.call(call(super::PUT_PATH, None)).await.unwrap();
        service
            .call(call(super::DELETE_PATH, Some(("grpc-timeout", "2S"))))
            .await
            .unwrap();
        let after = proto::deadline::write_by(TEN_SECONDS);
        let header = |value| Some((proto::deadline::WRITE_BY_HEADER, value));
        service
            .call(call(super::PUT_PATH, header("42")))
            .await
            .unwrap();
        let hour_ahead = proto::deadline::write_by(Duration::from_secs(3600)).to_string();
        service
            .call(call(super::PUT_PATH, header(&hour_ahead)))
            .await
            .unwrap();
        service
            .call(call(super::PUT_PATH, header("soon")))
            .await
            .unwrap();
        service
            .call(call("/clusterlab.v1.KeyValue/Get", None))
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let put = seen[0].expect("a put without one gets a write-by");
        assert!(
            before <= put && put <= after,
            "{before} <= {put} <= {after}"
        );
        let delete = seen[1].expect("a delete without one gets a write-by");
        assert!(
            delete + 7_000 < put,
            "the client's sooner 2 s: {delete} vs {put}"
        );
        assert_eq!(seen[2], Some(42), "a sender's own, sooner, is kept");
        let later = seen[3].unwrap();
        let end = proto::deadline::write_by(TEN_SECONDS);
        assert!(
            before <= later && later <= end,
            "an hour ahead is the call's end: {later}"
        );
        let unreadable = seen[4].unwrap();
        assert!(
            before <= unreadable && unreadable <= end,
            "replaced: {unreadable}"
        );
        assert_eq!(seen[5], None, "a read has none");
    }

    fn get(key: &str) -> GetRequest {
        GetRequest {
            key: key.into(),
            ..GetRequest::default()
        }
    }

    fn put(key: &str, value: &str) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            ..PutRequest::default()
        }
    }

    #[tokio::test]
    async fn a_put_is_read_back_with_its_version_and_a_delete_hides_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = in_process::key_value(in_process::node_state(dir.path()), TEN_SECONDS).await;
        let put = kv
            .put(PutRequest {
                key: "k".into(),
                value: b"v1".to_vec(),
                ..PutRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let got = kv.get(get("k")).await.unwrap().into_inner();
        assert!(got.found);
        assert_eq!(got.value, b"v1");
        assert_eq!(got.version, put.version);
        let trace = got.trace.expect("every answer carries a trace");
        assert_eq!(trace.coordinator, "n1");
        assert_eq!(trace.replicas.len(), 1, "{trace:?}");

        let deleted = kv
            .delete(DeleteRequest {
                key: "k".into(),
                ..DeleteRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(deleted.version, put.version);
        let got = kv.get(get("k")).await.unwrap().into_inner();
        assert!(!got.found, "{got:?}");
    }

    /// A scan looks through deleted keys, and stops after a number of pages
    /// with what it has: maybe nothing. It says where the rest begins, past
    /// the deleted keys it looked at, so that a page of none still leads on
    /// (its last entry, the old hint, was nothing: "start after ''", the
    /// beginning again, for good).
    #[tokio::test]
    async fn a_scan_of_only_deleted_keys_says_where_the_rest_begins() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = in_process::key_value(in_process::node_state(dir.path()), TEN_SECONDS).await;
        for i in 0..40 {
            let key = format!("t/{i:02}");
            let put = PutRequest {
                key: key.clone(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            };
            kv.put(put).await.unwrap();
            let delete = DeleteRequest {
                key,
                ..DeleteRequest::default()
            };
            kv.delete(delete).await.unwrap();
        }
        let live = PutRequest {
            key: "t/zz".into(),
            value: b"live".to_vec(),
            ..PutRequest::default()
        };
        kv.put(live).await.unwrap();
        let mut start_after = String::new();
        let mut pages = 0;
        let found = loop {
            pages += 1;
            assert!(pages <= 40, "the scan never reached t/zz");
            let scan = ScanRequest {
                prefix: "t/".into(),
                start_after: start_after.clone(),
                limit: 1,
            };
            let page = kv.scan(scan).await.unwrap().into_inner();
            if let Some(entry) = page.entries.first() {
                break entry.key.clone();
            }
            assert!(page.more, "a page of none, and no more: {page:?}");
            assert!(
                page.next_start_after > start_after,
                "no step forward from {start_after:?}: {page:?}"
            );
            start_after = page.next_start_after;
        };
        assert_eq!(found, "t/zz");
        assert!(pages > 1, "one page looked through all 40 deleted keys");
    }

    #[tokio::test]
    async fn a_value_over_the_limit_is_refused_naming_it_and_the_node_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = in_process::key_value(in_process::node_state(dir.path()), TEN_SECONDS).await;
        let refused = kv
            .put(PutRequest {
                key: "big".into(),
                value: vec![0; MAX_VALUE_BYTES + 1],
                ..PutRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused
                .message()
                .contains(&format!("the limit is {MAX_VALUE_BYTES}")),
            "{refused:?}"
        );
        assert!(!kv.get(get("big")).await.unwrap().into_inner().found);
    }

    /// A node that starts to shut down refuses the requests still queued
    /// behind `--capacity`, as not applied: the drain would otherwise wait
    /// out a queue that can be longer than it, and then cut them off.
    #[tokio::test(start_paused = true)]
    async fn requests_queued_behind_capacity_are_refused_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let state = in_process::node_state(dir.path());
        let kv = Arc::new(KeyValueService::new(state.clone(), 1));
        // The first takes this second's start; the next queues for a second.
        kv.admit(&Request::new(()), true).await.unwrap();
        let queued = tokio::spawn({
            let kv = kv.clone();
            async move { kv.admit(&Request::new(()), true).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!queued.is_finished(), "--capacity 1 started two at once");
        state.faults.close();
        let refused = queued.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable);
        assert!(proto::was_not_applied(&refused), "{refused:?}");
        assert!(
            refused.message().contains("(queued behind --capacity)"),
            "{refused:?}"
        );
    }

    /// A retry refused before it starts (an injected error, a shutdown) is
    /// not marked as not applied: its first attempt may have been, and a
    /// client counting the mark (`clusterlab check`) would call a write that
    /// may exist one that was never made.
    #[tokio::test]
    async fn a_retry_refused_before_it_starts_is_not_said_to_be_unapplied() {
        let dir = tempfile::tempdir().unwrap();
        let state = in_process::node_state(dir.path());
        let kv = KeyValueService::new(state.clone(), 0);
        state.faults.set(Fault {
            error_rate: 1.0,
            ..Fault::default()
        });
        let retry = || {
            let mut retry = Request::new(());
            retry
                .metadata_mut()
                .insert(super::RETRY_HEADER, "1".parse().unwrap());
            retry
        };
        let first = kv.admit(&Request::new(()), true).await.unwrap_err();
        assert!(proto::was_not_applied(&first), "{first:?}");
        let again = kv.admit(&retry(), true).await.unwrap_err();
        assert_eq!(again.code(), Code::Unavailable, "{again:?}");
        assert!(!proto::was_not_applied(&again), "{again:?}");
        // Held by a pause when the node starts to shut down.
        state.faults.set(Fault {
            pause: true,
            ..Fault::default()
        });
        state.faults.close();
        let held = kv.admit(&retry(), true).await.unwrap_err();
        assert!(held.message().contains("is shutting down"), "{held:?}");
        assert!(!proto::was_not_applied(&held), "{held:?}");
        // Nor told it is safe to send again, as a first attempt is.
        assert!(
            held.message().ends_with(
                "(held by a pause): this attempt changed nothing, but it is a retry, and an \
                 earlier attempt may have been applied, so read the key before writing it again"
            ),
            "{held:?}"
        );
        // Leaving, whatever the write's history: a balancer fails it over.
        assert!(proto::is_leaving(&held), "{held:?}");
        // A retried read changes nothing: it may be sent again.
        let read = kv.admit(&retry(), false).await.unwrap_err();
        assert!(
            read.message()
                .ends_with("(held by a pause); it is safe to send again"),
            "{read:?}"
        );
    }

    /// A paused node holds a request that brings no deadline until its own
    /// --request-timeout; a client's sooner deadline ends it first (tonic's
    /// timer: CANCELLED, "Timeout expired").
    #[tokio::test]
    async fn a_request_without_a_deadline_ends_at_the_request_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let state = in_process::node_state(dir.path());
        let mut kv = in_process::key_value(state.clone(), Duration::from_millis(200)).await;
        state.faults.set(Fault {
            pause: true,
            ..Fault::default()
        });
        let answer = tokio::time::timeout(Duration::from_secs(60), kv.get(get("k"))).await;
        let status = answer
            .expect("no answer in a minute: the node has no deadline of its own")
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().starts_with(
                "n1 gave up on the request after 200ms (its --request-timeout) before starting \
                 it (its message had not arrived, or it was held by --capacity, a pause or \
                 added latency): nothing was changed"
            ),
            "{status:?}"
        );
        assert!(proto::was_not_applied(&status), "{status:?}");
        // A write too; not a retry, whose first attempt may have been applied.
        let status = kv.put(put("k", "v")).await.unwrap_err();
        assert!(proto::was_not_applied(&status), "{status:?}");
        let mut retry = tonic::Request::new(put("k", "v"));
        retry
            .metadata_mut()
            .insert(super::RETRY_HEADER, "1".parse().unwrap());
        let status = kv.put(retry).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(!proto::was_not_applied(&status), "{status:?}");
        // Nor do its words say nothing was changed.
        assert!(
            status.message().ends_with(
                "this attempt changed nothing, but it is a retry, and an earlier \
                     attempt may have been applied, so read the key before writing it again"
            ),
            "{status:?}"
        );

        let mut sooner = tonic::Request::new(get("k"));
        sooner.set_timeout(Duration::from_millis(50));
        let status = kv.get(sooner).await.unwrap_err();
        assert!(proto::deadline::is_timeout_expired(&status), "{status:?}");

        state.faults.set(Fault::default());
        assert!(!kv.get(get("k")).await.unwrap().into_inner().found);
    }
}
