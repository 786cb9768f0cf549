//! Standard gRPC tooling works against a node: health checks and reflection.

use tests::{TestCluster, admin_channel, block_on, health_check};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[test]
fn the_node_reports_serving_over_grpc_health() {
    let cluster = TestCluster::start(1);
    assert_eq!(
        health_check(Some(&cluster.certs), &cluster.nodes[0].addr.to_string()),
        Ok(true)
    );
}

#[test]
fn reflection_lists_every_clusterlab_service() {
    let cluster = TestCluster::start(1);
    let services = block_on(async {
        let channel = admin_channel(&cluster.certs, &cluster.nodes[0].addr.to_string())
            .await
            .unwrap();
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.next().await.unwrap().unwrap();
        match response.message_response.unwrap() {
            MessageResponse::ListServicesResponse(list) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    });
    for service in [
        "clusterlab.v1.KeyValue",
        "clusterlab.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} not in {services:?}"
        );
    }
}
