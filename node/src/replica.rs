//! The `Replica` gRPC service: what nodes ask of each other.
//!
//! A replica never decides anything. It stores whatever version is highest,
//! answers reads from its own disk, answers probes, and summarises or streams
//! its records for anti-entropy. All the deciding happens in the coordinator.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use proto::{
    DigestRequest, DigestResponse, LocalScanRequest, LocalScanResponse, ProbeRequest,
    ProbeResponse, RangeDigest, RangeRequest, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse, replica_server::Replica,
};

use crate::{
    antientropy::Shared,
    limits::{self, Validate},
    state::NodeState,
    store::Record,
};

/// Serves `clusterlab.v1.Replica`.
#[derive(Debug, Clone)]
pub struct ReplicaService {
    state: Arc<NodeState>,
}

impl ReplicaService {
    /// The service for the node described by `state`.
    pub fn new(state: Arc<NodeState>) -> Self {
        ReplicaService { state }
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
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.from)).await?;
        request.validate()?;
        let record = Record::from(request.record.unwrap_or_default());
        let applied = self.state.store.run(move |s| s.apply(&record)).await?;
        self.state.clock.observe(&applied.stored);
        Ok(Response::new(WriteResponse {
            stored: Some(applied.stored.into()),
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.from)).await?;
        request.validate()?;
        let key = request.key;
        // A read is quick and never waits for a writer: no blocking pool (see store.rs).
        let record = self.state.store.get(&key)?;
        Ok(Response::new(ReadResponse {
            record: record.map(Into::into),
        }))
    }

    async fn probe(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let membership = &self.state.membership;
        let caller = request.into_inner().from.unwrap_or_default();
        self.state.faults.enter(Some(&caller.name)).await?;
        membership.heard_from(&caller);
        let keys = self.state.store.run(|s| s.len()).await?;
        Ok(Response::new(ProbeResponse {
            me: Some(membership.me()),
            members: membership.gossip(),
            keys,
        }))
    }

    async fn digest(
        &self,
        request: Request<DigestRequest>,
    ) -> Result<Response<DigestResponse>, Status> {
        let request = request.into_inner();
        self.state.faults.enter(Some(&request.for_node)).await?;
        request.validate()?;
        let window = (request.older_than_ms, request.collected_before_ms);
        let shared = self.shared(request.range_count, request.for_node, window);
        let digest = self.state.store.run(move |s| shared.digest(s)).await?;
        let wanted = |range: u32| request.ranges.is_empty() || request.ranges.contains(&range);
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
                }
                tx.blocking_send(Ok(record)).is_ok()
            };
            let sent = if request.keys.is_empty() {
                shared.each_in_ranges(&store, &ranges, send)
            } else {
                shared.each_of(&store, &request.keys, send)
            };
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn scan_local(
        &self,
        request: Request<LocalScanRequest>,
    ) -> Result<Response<LocalScanResponse>, Status> {
        self.state.faults.enter(None).await?;
        let request = request.into_inner();
        request.validate()?;
        let limit = limits::scan_limit(request.limit)?;
        let (records, more) = self
            .state
            .store
            .run(move |s| s.scan(&request.prefix, &request.start_after, limit, true))
            .await?;
        Ok(Response::new(LocalScanResponse {
            records: records.into_iter().map(Into::into).collect(),
            more,
        }))
    }
}
