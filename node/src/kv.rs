//! The `KeyValue` gRPC service: checks each request against the limits and hands
//! it to the [`Coordinator`].

use tonic::{Request, Response, Status};

use proto::{
    DeleteRequest, DeleteResponse, Entry, GetRequest, GetResponse, PutRequest, PutResponse,
    ScanRequest, ScanResponse, key_value_server::KeyValue,
};

use std::sync::{Arc, atomic::Ordering};

use crate::{
    capacity::Capacity,
    coordinator::{Coordinator, Write},
    limits::{self, Validate},
    state::NodeState,
};

/// Metadata a balancer adds to the second and later attempts of a request.
pub const RETRY_HEADER: &str = "clusterlab-retry";

/// True when a balancer says this request is a retry.
fn is_retry<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(RETRY_HEADER)
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
    /// `capacity` requests per second (0: no limit).
    pub fn new(state: Arc<NodeState>, capacity: u32) -> Self {
        KeyValueService {
            coordinator: Coordinator::new(state.clone()),
            state,
            capacity: Arc::new(Capacity::new(capacity)),
        }
    }

    /// Every request is counted, waits its turn under `--capacity`, then meets
    /// the faults.
    async fn admit(&self) -> Result<(), Status> {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        self.capacity.admit().await;
        self.state.faults.enter(None).await
    }
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.admit().await?;
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
            // No record, or a tombstone: the key does not exist.
            _ => GetResponse {
                trace: Some(trace),
                ..GetResponse::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.admit().await?;
        let retry = is_retry(&request);
        let request = request.into_inner();
        request.validate()?;
        let write = Write {
            key: request.key,
            value: Some(request.value),
            write_quorum: request.write_quorum,
            request_id: request.request_id,
            retry,
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
        self.admit().await?;
        let retry = is_retry(&request);
        let request = request.into_inner();
        request.validate()?;
        let write = Write {
            key: request.key,
            value: None,
            write_quorum: request.write_quorum,
            request_id: request.request_id,
            retry,
        };
        let (version, trace) = self.coordinator.write(write).await?;
        Ok(Response::new(DeleteResponse {
            version: Some(version.into()),
            trace: Some(trace),
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.admit().await?;
        let request = request.into_inner();
        request.validate()?;
        let limit = limits::scan_limit(request.limit)?;
        let (records, more, trace) = self
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
            more,
            trace: Some(trace),
        }))
    }
}
