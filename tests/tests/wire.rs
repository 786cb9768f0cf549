//! Standard gRPC tooling works against a node and a balancer: health checks
//! and reflection.

use std::time::Duration;

use tests::{TestCluster, admin_channel, block_on, health_check, wait_until};
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

/// The services a process at `addr` lists through reflection.
fn reflected_services(certs: &std::path::Path, addr: &str) -> Vec<String> {
    block_on(async {
        let channel = admin_channel(certs, addr).await.unwrap();
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
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    })
}

/// Each process lists exactly what it serves: a balancer forwards KeyValue
/// and has its own Admin, but no Replica (nodes call that on each other).
#[test]
fn reflection_lists_the_services_each_process_serves() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let common = [
        "clusterlab.v1.Admin",
        "clusterlab.v1.KeyValue",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];
    let mut node = common.to_vec();
    node.push("clusterlab.v1.Replica");
    for (addr, expected) in [
        (cluster.nodes[0].addr.to_string(), node),
        (cluster.balancers[0].addr.to_string(), common.to_vec()),
    ] {
        let mut services = reflected_services(&cluster.certs, &addr);
        services.sort();
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        expected.sort();
        assert_eq!(services, expected, "{addr}");
    }
    // A balancer serves once a node is in rotation.
    let balancer = cluster.balancers[0].addr.to_string();
    wait_until(
        "the balancer to report SERVING",
        Duration::from_secs(10),
        || health_check(Some(&cluster.certs), &balancer) == Ok(true),
    );
}
