//! The `Replica` gRPC service: what nodes ask of each other.
//!
//! A replica never decides anything. It stores whatever version is highest,
//! answers reads from its own disk, answers probes, and summarises or streams
//! its records for anti-entropy. All the deciding happens in the coordinator.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
};

use certs::repeats::{self, Repeats};
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tracing::warn;

use proto::{
    DigestRequest, DigestResponse, LocalScanRequest, LocalScanResponse, ProbeRequest,
    ProbeResponse, RangeDigest, RangeRequest, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse, replica_client::ReplicaClient, replica_server::Replica,
};

use crate::{
    antientropy::Shared,
    limits::{self, MAX_MESSAGE_BYTES, Validate},
    state::NodeState,
    store::Record,
    telemetry::escaped,
};

/// Metadata on every `Replica` call but a probe: the name of the member the
/// call is meant for. An address can change hands: a member stops, and
/// another node starts on its port before the others have found the member
/// gone. The node there answers only for itself, or its one disk would count
/// as two replicas' copies of a write.
pub const TO_HEADER: &str = "clusterlab-to";

/// A `Replica` client for one member: each of its calls names the member
/// ([`TO_HEADER`]).
pub type PeerClient = ReplicaClient<InterceptedService<Channel, Addressed>>;

/// A `Replica` client over `channel` whose calls are meant for `member`.
pub fn client_for(channel: Channel, member: &str) -> PeerClient {
    // Names are a-z, 0-9 and a few marks (checked as they arrive), so
    // always a valid value; were one not, its calls would go unaddressed.
    let to = AsciiMetadataValue::try_from(member).ok();
    ReplicaClient::with_interceptor(channel, Addressed(to))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Names the member a call is meant for ([`TO_HEADER`]).
#[derive(Debug, Clone)]
pub struct Addressed(Option<AsciiMetadataValue>);

impl Interceptor for Addressed {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(to) = &self.0 {
            request.metadata_mut().insert(TO_HEADER, to.clone());
        }
        Ok(request)
    }
}

/// Serves `clusterlab.v1.Replica`.
#[derive(Debug, Clone)]
pub struct ReplicaService {
    state: Arc<NodeState>,
    /// Late writes refused, for the log: said once in a while per peer.
    late: Arc<Repeats>,
}

impl ReplicaService {
    /// The service for the node described by `state`.
    pub fn new(state: Arc<NodeState>) -> Self {
        ReplicaService {
            state,
            late: Arc::default(),
        }
    }

    /// Refuses a call meant for another member ([`TO_HEADER`]): this node
    /// answers at an address the caller still has for that member. A call
    /// that names no member (from a tool) is this node's.
    fn for_me<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let me = &self.state.name;
        match request.metadata().get(TO_HEADER).map(|to| to.to_str()) {
            Some(Ok(to)) if to != me => Err(Status::unavailable(format!(
                "{me} answers at this address, not {to}: {to} has left it (stopped or moved), \
                 and {me} does not answer for another member, whose copies it does not hold",
                to = escaped(to)
            ))),
            _ => Ok(()),
        }
    }

    /// Describes what a (validated) digest or range request compares.
    /// The window of time is the caller's, so both sides compare the same
    /// records whatever their own settings.
    fn shared(&self, range_count: u32, for_node: String, window: (u64, u64)) -> Shared {
        Shared::new(&self.state, for_node, range_count, window)
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<proto::Record, Status>> + Send>>;

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        self.for_me(&request)?;
        let write_by = crate::kv::write_by(&request);
        let request = request.into_inner();
        // How long a fault (latency, pause) held it, if one was set as it
        // arrived: the likeliest reason it is stored late, if it is.
        let faulted = self.state.faults.get();
        let faulted = !faulted.latency.is_zero() || faulted.pause;
        let arrived = std::time::Instant::now();
        self.state.faults.enter(Some(&request.from)).await?;
        let held = faulted.then(|| arrived.elapsed());
        request.validate()?;
        // A write held up on its way here (its coordinator stopped, added
        // latency) past the moment its sender gave: the client has given up
        // on it, and a delete newer than it may have been made and collected
        // meanwhile, so that applied, it would bring the deleted value back.
        // So with a read repair's write, and a handoff's (see crate::handoff).
        // The store checks the moment once the write's turn has come.
        let record = Record::from(request.record.unwrap_or_default());
        let key = record.key.clone();
        let applied = self.state.store.run(move |s| s.apply_by(&record, write_by));
        let late = match applied.await {
            Ok(applied) => {
                self.state.clock.observe(&applied.stored);
                return Ok(Response::new(WriteResponse {
                    stored: Some(applied.stored.into()),
                }));
            }
            Err(crate::Error::Overdue(late)) => late,
            Err(e) => return Err(e.for_a_peer()),
        };
        if let Some(unsaid) = self.late.admit(&request.from) {
            warn!(
                from = %request.from,
                key = %escaped(&key),
                overdue = ?late,
                not_logged = repeats::not_logged(unsaid),
                "refused a replica write that came to be stored after its deadline"
            );
        }
        Err(Status::deadline_exceeded(stored_too_late(
            &self.state.name,
            late,
            held,
        )))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        self.for_me(&request)?;
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.from)).await?;
        request.validate()?;
        let key = request.key;
        // A read is quick and never waits for a writer: no blocking pool (see store.rs).
        let record = self
            .state
            .store
            .get(&key)
            .map_err(crate::Error::for_a_peer)?;
        Ok(Response::new(ReadResponse {
            record: record.map(Into::into),
        }))
    }

    async fn probe(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let membership = &self.state.membership;
        let request = request.into_inner();
        request.validate()?;
        let caller = request.from.unwrap_or_default();
        self.state.faults.enter_probe(&caller.name).await?;
        membership.heard_from(&caller);
        // Counted here, not on the blocking pool: there each thread may be a
        // write waiting for the store's one writer, and a probe queued behind
        // hundreds of them (a node busy writing) would be taken for silence.
        // A read never waits for a writer (see store.rs). While the store
        // cannot be read for a while (a reopen under way, or one that failed
        // and is tried again), the last count, as `status` gives: the node
        // still answers, and a peer that took it for silent would declare it
        // dead and copy its keys away. Its status says what is wrong.
        // One refused for good (a failed fsync, its file gone) fails the
        // probe: its peers declare it dead and restore N copies elsewhere.
        // (Asked first: a database stopped by a failed fsync stays in its
        // slot, and still counts its keys from its cache.)
        // Said to the peer, not logged again at each probe (the store has
        // logged it once), as a storage failure's status would be.
        if let Some(refused) = self.state.store.refused_for_good() {
            return Err(Status::unavailable(format!(
                "its store is refused until it restarts: {refused}"
            )));
        }
        let keys = match self.state.store.len() {
            Ok(keys) => {
                self.state.records.store(keys, Ordering::Relaxed);
                keys
            }
            Err(_) => self.state.records.load(Ordering::Relaxed),
        };
        Ok(Response::new(ProbeResponse {
            me: Some(membership.me()),
            members: membership.gossip(),
            keys,
            replicas: self.state.replication.replicas as u32,
        }))
    }

    async fn digest(
        &self,
        request: Request<DigestRequest>,
    ) -> Result<Response<DigestResponse>, Status> {
        self.for_me(&request)?;
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.for_node)).await?;
        request.validate()?;
        let window = (request.older_than_ms, request.collected_before_ms);
        let shared = self.shared(request.range_count, request.for_node, window);
        // The peer gives up after a while, and asks again at its next round:
        // a scan of a large store that no one waits for any more stops, or
        // such scans would pile up, each holding a read transaction.
        let abandoned = CancellationToken::new();
        let _when_dropped = abandoned.clone().drop_guard();
        let digest = (self.state.store)
            .run(move |s| shared.digest(s, &abandoned))
            .await
            .map_err(crate::Error::for_a_peer)?;
        let named: HashSet<u32> = request.ranges.iter().copied().collect();
        let wanted = |range: u32| named.is_empty() || named.contains(&range);
        let ranges = digest
            .into_iter()
            .enumerate()
            .map(|(range, (records, hash))| RangeDigest {
                range: range as u32,
                records,
                hash,
            })
            .filter(|d| wanted(d.range))
            .collect();
        Ok(Response::new(DigestResponse { ranges }))
    }

    type StreamRangeStream = RecordStream;

    async fn stream_range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        self.for_me(&request)?;
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.for_node)).await?;
        request.validate()?;
        let shared = self.shared(
            request.range_count,
            request.for_node.clone(),
            (request.older_than_ms, request.collected_before_ms),
        );
        let ranges: HashSet<u32> = request.ranges.iter().copied().collect();
        // A bounded channel: the store is read only as fast as the peer takes
        // records, so a slow peer cannot make us buffer the whole range.
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let store = self.state.store.clone();
        // The store blocks, so it is read on the blocking pool; the stream ends
        // when the task drops `tx`.
        tokio::task::spawn_blocking(move || {
            let send = |record: Record| {
                let mut record = proto::Record::from(record);
                if request.keys_only {
                    record.value.clear();
                    record.request_id.clear();
                }
                tx.blocking_send(Ok(record)).is_ok()
            };
            let sent = if request.keys.is_empty() {
                let listened = || !tx.is_closed();
                shared.each_in_ranges(&store, &ranges, listened, send)
            } else {
                shared.each_of(&store, &request.keys, send)
            };
            if let Err(e) = sent {
                // In the store's words, as a read's failure is: the peer's
                // round logs it, and "see its log" would be ours.
                let _ = tx.blocking_send(Err(e.for_a_peer()));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn scan_local(
        &self,
        request: Request<LocalScanRequest>,
    ) -> Result<Response<LocalScanResponse>, Status> {
        self.for_me(&request)?;
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.from)).await?;
        request.validate()?;
        let limit = limits::scan_limit(request.limit)?;
        let (records, more) = self
            .state
            .store
            .run(move |s| s.scan(&request.prefix, &request.start_after, limit, true))
            .await
            .map_err(crate::Error::for_a_peer)?;
        Ok(Response::new(LocalScanResponse {
            records: records.into_iter().map(Into::into).collect(),
            more,
        }))
    }
}

/// Why `replica` did not apply a write it came to store `late` past the
/// deadline it carries, which the coordinator (or the client before it) set
/// by its own clock; with how long a fault injected into it `held` it
/// first, if one did, which is likely why.
pub(crate) fn stored_too_late(
    replica: &str,
    late: std::time::Duration,
    held: Option<std::time::Duration>,
) -> String {
    let why = match held {
        Some(held) => format!(
            "the fault injected into it held it {:?} first; `clusterlab fault {replica} --clear` \
             ends it",
            std::time::Duration::from_millis(held.as_millis() as u64)
        ),
        None => format!(
            "it waited on a slow disk or in a process that was stopped, or the sender's clock \
             and {replica}'s disagree"
        ),
    };
    format!(
        "{replica} came to store this write {late:?} after its deadline, and did not apply it ({why})"
    )
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::version::{Version, unix_ms};

    /// A write of `key` to be applied by `write_by`, as handoff sends one.
    fn write(key: &str, write_by: u64) -> Request<WriteRequest> {
        let record = Record {
            key: key.into(),
            version: Version::at(unix_ms()),
            value: Some(b"v".to_vec()),
            request_id: String::new(),
        };
        let mut request = Request::new(WriteRequest {
            record: Some(record.into()),
            from: "n2".into(),
        });
        request
            .metadata_mut()
            .insert(proto::deadline::WRITE_BY_HEADER, write_by.into());
        request
    }

    /// A probe is answered while every thread of the blocking pool is taken
    /// (writes waiting for the store's writer, on a node busy writing):
    /// waiting for one, it was late, and the node was taken for silent.
    #[test]
    fn a_probe_is_answered_while_the_blocking_pool_is_full() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let state = crate::in_process::node_state(dir.path());
            let replica = ReplicaService::new(state);
            let (release, held) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || held.recv());
            let probe = Request::new(ProbeRequest {
                from: Some(proto::Member {
                    name: "n2".into(),
                    addr: "127.0.0.1:7102".into(),
                    ..proto::Member::default()
                }),
            });
            let patience = std::time::Duration::from_secs(5);
            let answered = tokio::time::timeout(patience, replica.probe(probe)).await;
            release.send(()).unwrap();
            busy.await.unwrap().unwrap();
            let answer = answered
                .expect("the probe waited for the blocking pool")
                .unwrap();
            assert_eq!(answer.into_inner().keys, 0);
        });
    }

    /// A node whose store is being reopened still answers probes, with the
    /// last count it had: a failed probe is silence to its peers, which
    /// declared it dead (as "silent") and copied its keys away. One whose
    /// store is refused for good (until a restart) fails them: its peers
    /// are to declare it dead, and restore N copies of its keys elsewhere.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the reopen is to be under way while the probe runs; nothing else takes it"
    )]
    async fn a_probe_is_answered_while_the_store_is_reopened_not_once_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        state
            .store
            .apply(&crate::store::Record {
                key: "k".into(),
                version: Version::at(unix_ms()),
                value: Some(b"v".to_vec()),
                request_id: String::new(),
            })
            .unwrap();
        let replica = ReplicaService::new(state.clone());
        let probe = || {
            Request::new(ProbeRequest {
                from: Some(proto::Member {
                    name: "n2".into(),
                    addr: "127.0.0.1:7102".into(),
                    ..proto::Member::default()
                }),
            })
        };
        assert_eq!(replica.probe(probe()).await.unwrap().into_inner().keys, 1);
        {
            let _reopening = state.store.as_during_a_reopen();
            assert!(state.store.len().is_err(), "the store still reads");
            let answer = replica.probe(probe()).await.expect("a probe answered");
            assert_eq!(answer.into_inner().keys, 1, "the last count");
        }
        state.store.stop_as_after_a_failed_fsync();
        let refused = replica.probe(probe()).await.expect_err("a probe answered");
        assert!(refused.message().contains("storage"), "{refused}");
    }

    /// A peer's scan, digest or range stream that meets a storage failure
    /// answers in the store's own words, as a read does, for the
    /// coordinator's failure (or the anti-entropy round's) to name: not "see
    /// its log", which is another node's.
    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the reopen is to be under way while the scan runs; nothing else takes it"
    )]
    async fn a_peers_scan_digest_or_range_that_meets_a_storage_failure_says_what_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let replica = ReplicaService::new(state.clone());
        let _reopening = state.store.as_during_a_reopen();
        let scan = Request::new(LocalScanRequest {
            from: "n2".into(),
            ..LocalScanRequest::default()
        });
        let read = Request::new(ReadRequest {
            key: "k".into(),
            from: "n2".into(),
        });
        let digest = Request::new(DigestRequest {
            range_count: 64,
            for_node: "n2".into(),
            ..DigestRequest::default()
        });
        let range = Request::new(RangeRequest {
            range_count: 64,
            ranges: (0..64).collect(),
            for_node: "n2".into(),
            ..RangeRequest::default()
        });
        let (logged, _logging) = certs::testing::captured();
        let scan = replica.scan_local(scan).await.expect_err("scanned");
        let digest = replica.digest(digest).await.expect_err("digested");
        let read = replica.read(read).await.expect_err("read");
        // The stream is opened; its one item is the failure.
        let mut records = replica.stream_range(range).await.unwrap().into_inner();
        let streamed = tokio_stream::StreamExt::next(&mut records).await;
        let streamed = streamed.expect("an item").expect_err("a record streamed");
        assert_eq!(scan.code(), tonic::Code::Internal, "{scan}");
        assert!(scan.message().starts_with("storage error: "), "{scan}");
        assert_eq!(scan.message(), read.message());
        assert_eq!(digest.message(), read.message());
        assert_eq!(streamed.code(), tonic::Code::Internal, "{streamed}");
        assert_eq!(streamed.message(), read.message());
        assert!(
            logged.text().contains("storage failure"),
            "{}",
            logged.text()
        );
    }

    /// A failed fsync in a commit leaves the stopped database in its slot,
    /// whose cache still counts the keys: its probes fail all the same, so
    /// that its peers declare it dead and restore N copies elsewhere (it was
    /// kept alive, failing every write sent to it).
    #[tokio::test]
    async fn a_probe_fails_after_a_failed_fsync_though_the_cache_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let replica = ReplicaService::new(state.clone());
        state.store.as_after_a_failed_fsync_in_a_commit();
        assert!(
            state.store.len().is_ok(),
            "the stopped database's cache counts"
        );
        let (logged, _logging) = certs::testing::captured();
        for _ in 0..3 {
            let probe = Request::new(ProbeRequest {
                from: Some(proto::Member {
                    name: "n2".into(),
                    addr: "127.0.0.1:7102".into(),
                    ..proto::Member::default()
                }),
            });
            let refused = replica.probe(probe).await.expect_err("a probe answered");
            assert!(refused.message().contains("an fsync of"), "{refused}");
        }
        // Its peers probe it twice a second each, for as long as it runs.
        assert!(
            !logged.text().contains("storage failure"),
            "{}",
            logged.text()
        );
    }

    /// Step 2 of anti-entropy lists keys and versions, and leaves out what
    /// it does not compare: values, and the request ids (up to 128 bytes a
    /// record) the caller would hold for every key in the differing ranges.
    #[tokio::test]
    async fn a_keys_only_listing_carries_no_values_or_request_ids() {
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let replica = ReplicaService::new(state.clone());
        let version = Version::at(unix_ms());
        let record = Record {
            key: "k".into(),
            version: version.clone(),
            value: Some(b"v".to_vec()),
            request_id: "req-1".into(),
        };
        state.store.apply(&record).unwrap();
        let request = proto::RangeRequest {
            range_count: 1,
            ranges: vec![0],
            for_node: state.name.clone(),
            older_than_ms: u64::MAX,
            keys_only: true,
            ..proto::RangeRequest::default()
        };
        let listed = replica.stream_range(Request::new(request)).await.unwrap();
        let listed: Vec<proto::Record> = listed.into_inner().map(Result::unwrap).collect().await;
        let expected = proto::Record {
            key: "k".into(),
            version: Some(version.into()),
            ..proto::Record::default()
        };
        assert_eq!(listed, [expected]);
    }

    /// An address can change hands: a member stops and another node starts
    /// on its port. Calls meant for the member are refused there, or the
    /// other node's one disk would count as two replicas' copies; a tool's
    /// call, which names no member, is answered.
    #[tokio::test]
    async fn a_call_meant_for_another_member_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let router = tonic::transport::Server::builder().add_service(
            proto::replica_server::ReplicaServer::new(ReplicaService::new(state.clone())),
        );
        let channel = crate::in_process::channel(router).await;
        let in_time = || write("k", unix_ms() + 60_000);

        let mut meant_for_n3 = client_for(channel.clone(), "n3");
        let refused = meant_for_n3.write(in_time()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused
                .message()
                .starts_with("n1 answers at this address, not n3"),
            "{refused:?}"
        );
        let read = ReadRequest {
            key: "k".into(),
            from: "n2".into(),
        };
        let refused = meant_for_n3.read(read.clone()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(state.store.get("k").unwrap().is_none());

        client_for(channel.clone(), "n1")
            .write(in_time())
            .await
            .unwrap();
        assert!(state.store.get("k").unwrap().is_some());
        let mut unaddressed = ReplicaClient::new(channel);
        let answer = unaddressed.read(read).await.unwrap().into_inner();
        assert!(answer.record.is_some(), "{answer:?}");
    }

    /// A write held here past the moment it had to be applied by is refused
    /// and changes nothing: a handoff's, landing late, could bring back a key
    /// deleted meanwhile (crate::handoff).
    #[tokio::test]
    async fn a_write_past_its_deadline_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let replica = ReplicaService::new(state.clone());

        let late = replica.write(write("late", unix_ms() - 1_000)).await;
        let refused = late.unwrap_err();
        assert_eq!(refused.code(), Code::DeadlineExceeded, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("after its deadline, and did not apply it (it waited"),
            "{refused:?}"
        );
        assert!(state.store.get("late").unwrap().is_none());

        replica
            .write(write("in-time", unix_ms() + 60_000))
            .await
            .unwrap();
        assert!(state.store.get("in-time").unwrap().is_some());
    }
}
