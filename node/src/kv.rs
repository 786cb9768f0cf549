//! The `KeyValue` gRPC service: checks each request against the limits and hands
//! it to the [`Coordinator`].

use tonic::{Request, Response, Status};

use proto::{
    DeleteRequest, DeleteResponse, Entry, GetRequest, GetResponse, PutRequest, PutResponse,
    ScanRequest, ScanResponse, key_value_server::KeyValue,
};

use std::sync::Arc;

use crate::{coordinator::Coordinator, fault::Faults, limits, state::NodeState};

/// Serves `clusterlab.v1.KeyValue`.
#[derive(Debug, Clone)]
pub struct KeyValueService {
    coordinator: Coordinator,
    faults: Arc<Faults>,
}

impl KeyValueService {
    /// The service for the node described by `state`.
    pub fn new(state: Arc<NodeState>) -> Self {
        KeyValueService {
            faults: state.faults.clone(),
            coordinator: Coordinator::new(state),
        }
    }
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.faults.enter(None).await?;
        let request = request.into_inner();
        limits::check_key(&request.key)?;
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
        self.faults.enter(None).await?;
        let request = request.into_inner();
        limits::check_key(&request.key)?;
        limits::check_value(&request.value)?;
        let (version, trace) = self
            .coordinator
            .write(request.key, Some(request.value), request.write_quorum)
            .await?;
        Ok(Response::new(PutResponse {
            version: Some(version.into()),
            trace: Some(trace),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.faults.enter(None).await?;
        let request = request.into_inner();
        limits::check_key(&request.key)?;
        let (version, trace) = self
            .coordinator
            .write(request.key, None, request.write_quorum)
            .await?;
        Ok(Response::new(DeleteResponse {
            version: Some(version.into()),
            trace: Some(trace),
        }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.faults.enter(None).await?;
        let request = request.into_inner();
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
