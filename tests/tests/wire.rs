//! Standard gRPC tooling works against a node and a balancer: health checks
//! and reflection.

use std::time::Duration;

use tests::{TestCluster, admin_channel, block_on, health_check, wait_until};
use tokio_stream::StreamExt;

#[test]
fn the_node_reports_serving_over_grpc_health() {
    let cluster = TestCluster::start(1);
    assert_eq!(
        health_check(Some(&cluster.certs), &cluster.nodes[0].addr.to_string()),
        Ok(true)
    );
}

/// The services the process at `addr` lists through reflection, asked in
/// `$version` of its protocol: `v1`, or `v1alpha`, the only one tools older
/// than 2022's ask (Debian bookworm's grpcurl 1.8.7). A macro, as each
/// version's messages are types of their own.
macro_rules! reflected_services {
    ($version:ident, $certs:expr, $addr:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        block_on(async {
            let channel = admin_channel($certs, $addr).await.unwrap();
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
                MessageResponse::ListServicesResponse(list) => list
                    .service
                    .into_iter()
                    .map(|s| s.name)
                    .collect::<Vec<String>>(),
                other => panic!("unexpected reflection answer {other:?}"),
            }
        })
    }};
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
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let mut node = common.to_vec();
    node.push("clusterlab.v1.Replica");
    for (addr, expected) in [
        (cluster.nodes[0].addr.to_string(), node),
        (cluster.balancers[0].addr.to_string(), common.to_vec()),
    ] {
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        expected.sort();
        // Asked either way, the same answer.
        for mut services in [
            reflected_services!(v1, &cluster.certs, &addr),
            reflected_services!(v1alpha, &cluster.certs, &addr),
        ] {
            services.sort();
            assert_eq!(services, expected, "{addr}");
        }
    }
    // A balancer serves once a node is in rotation.
    let balancer = cluster.balancers[0].addr.to_string();
    wait_until(
        "the balancer to report SERVING",
        Duration::from_secs(10),
        || health_check(Some(&cluster.certs), &balancer) == Ok(true),
    );
}
