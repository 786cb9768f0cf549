//! Authorization through real processes: every cell of the table, allowed and
//! denied, on a node and on a balancer, while a good client keeps working.
//!
//! The expectations below are written out by hand, cell by cell, rather than
//! read from `certs::authz::RULES`: a test that derived its answers from the
//! table it checks could never catch a wrong table.

use std::{path::Path, time::Duration};

use tests::{TestCluster, block_on, channel_as};
use tonic::{Code, codegen::http::uri::PathAndQuery};

/// The identities that call, in the order of the columns below. `alice` is a
/// client the CA signed but no rule names.
const CALLERS: [&str; 6] = ["admin", "writer", "reader", "balancer", "node", "alice"];

/// One row per method: the method, then whether each caller may call it on a
/// node and on the balancer (`Y` allowed, `.` denied), in `CALLERS` order.
type Row = (&'static str, &'static str, &'static str);

const MATRIX: &[Row] = &[
    //                                         node      balancer
    ("/clusterlab.v1.KeyValue/Get", "YYYY..", "YYY..."),
    ("/clusterlab.v1.KeyValue/Put", "YY.Y..", "YY...."),
    ("/clusterlab.v1.KeyValue/Delete", "YY.Y..", "YY...."),
    ("/clusterlab.v1.KeyValue/Scan", "YYYY..", "YYY..."),
    ("/clusterlab.v1.Replica/Write", "Y...Y.", "Y....."),
    ("/clusterlab.v1.Replica/Read", "Y...Y.", "Y....."),
    ("/clusterlab.v1.Replica/Probe", "Y...Y.", "Y....."),
    ("/clusterlab.v1.Replica/Digest", "Y...Y.", "Y....."),
    ("/clusterlab.v1.Replica/StreamRange", "Y...Y.", "Y....."),
    ("/clusterlab.v1.Replica/ScanLocal", "Y...Y.", "Y....."),
    ("/clusterlab.v1.Admin/Status", "Y..Y..", "Y....."),
    ("/clusterlab.v1.Admin/Events", "Y..Y..", "Y....."),
    ("/clusterlab.v1.Admin/SetFault", "Y.....", "Y....."),
    ("/clusterlab.v1.Admin/SetPolicy", "Y.....", "Y....."),
    ("/clusterlab.v1.Admin/WhoAmI", "YYYYYY", "YYYYYY"),
    ("/grpc.health.v1.Health/Check", "YYYYYY", "YYYYYY"),
    ("/grpc.health.v1.Health/Watch", "YYYYYY", "YYYYYY"),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "YYYYYY",
        "YYYYYY",
    ),
];

/// Calls `path` on `addr` as `identity` with an empty request message and
/// returns the status code it ends with (`Ok` when the call was accepted).
///
/// An empty protobuf message is a valid request of every type, and the verdict
/// on authorization comes before any handler runs, so one generic call serves
/// every method. Called as server streaming, so that a method that streams
/// forever (Events, Health/Watch) answers as soon as it has accepted.
async fn call(channel: tonic::transport::Channel, path: &'static str) -> (Code, String) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let mut request = tonic::Request::new(());
    request.set_timeout(Duration::from_secs(5));
    match grpc
        .server_streaming(request, PathAndQuery::from_static(path), codec)
        .await
    {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

/// Checks every cell of one server's column of `MATRIX`; returns the denials seen.
fn check_server(certs: &Path, addr: &str, server: &str, column: fn(&Row) -> &'static str) -> u64 {
    let mut denials = 0;
    let mut wrong = Vec::new();
    block_on(async {
        for (i, identity) in CALLERS.iter().enumerate() {
            let channel = channel_as(certs, identity, addr)
                .await
                .unwrap_or_else(|e| panic!("{identity} cannot connect to the {server}: {e}"));
            for row in MATRIX {
                let path = row.0;
                let expect_allowed = column(row).as_bytes()[i] == b'Y';
                let (code, message) = call(channel.clone(), path).await;
                let denied = code == Code::PermissionDenied;
                if denied {
                    denials += 1;
                    let (service, method) = path[1..].split_once('/').unwrap();
                    let short = format!("{}/{method}", service.rsplit('.').next().unwrap());
                    // The denial names the identity, the method and the rule.
                    for needle in [format!("/{identity} may not call"), short] {
                        if !message.contains(&needle) {
                            wrong.push(format!(
                                "{identity} {path} on the {server}: {message:?} lacks {needle:?}"
                            ));
                        }
                    }
                    if !(message.contains("rule \"") || message.contains("default deny")) {
                        wrong.push(format!("{identity} {path}: {message:?} names no rule"));
                    }
                }
                if denied == expect_allowed {
                    wrong.push(format!(
                        "{identity} calling {path} on the {server}: expected {}, got {code:?} {message:?}",
                        if expect_allowed { "allowed" } else { "PERMISSION_DENIED" },
                    ));
                }
                // Allowed is answered by the method itself: not refused
                // another way, nor lost on the way. The balancer serves no
                // Replica method (nodes call each other directly).
                let unserved = server == "balancer" && path.starts_with("/clusterlab.v1.Replica/");
                let answered = match code {
                    Code::Unimplemented => unserved,
                    // What the method says of an empty request (SetPolicy
                    // on a node: FAILED_PRECONDITION, a node has no policy).
                    Code::Ok
                    | Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition => !unserved,
                    _ => false,
                };
                if expect_allowed && !answered {
                    wrong.push(format!(
                        "{identity} calling {path} on the {server}: allowed, but answered \
                         {code:?} {message:?}"
                    ));
                }
            }
        }
    });
    assert!(
        wrong.is_empty(),
        "{} wrong cells:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    denials
}

#[test]
fn every_cell_of_the_authorization_table_holds_on_nodes_and_balancer() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    cluster.certs_tool(&["issue", "--kind", "client", "--name", "alice"]);
    let node = cluster.nodes[0].addr.to_string();
    let balancer = cluster.balancers[0].addr.to_string();
    let on_node = check_server(&cluster.certs, &node, "node", |row| row.1);
    let on_balancer = check_server(&cluster.certs, &balancer, "balancer", |row| row.2);
    // Every denial was counted where it happened, and logged with its reason.
    assert_eq!(cluster.status(0).unwrap().denied, on_node);
    assert_eq!(cluster.balancer_status(0).unwrap().denied, on_balancer);
    let log = cluster.nodes[0].log_text();
    assert!(
        log.lines().any(|l| l.contains("permission denied")
            && l.contains("spiffe://clusterlab/client/reader")
            && l.contains("method=KeyValue/")
            && l.contains("rule=\"reader\"")),
        "{log}"
    );
    // Meanwhile the cluster kept serving the identities that may write.
    cluster
        .client_to_balancer(0)
        .args(["--identity", "writer", "put", "still", "serving"])
        .ok();
    let got = cluster
        .client_to_balancer(0)
        .args(["--identity", "reader", "get", "still"])
        .ok();
    assert_eq!(got.stdout, "serving");
}

#[test]
fn a_denied_command_says_who_may_not_do_what_and_whoami_lists_what_may_be_done() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let out = cluster
        .client_to_balancer(0)
        .args(["--identity", "reader", "put", "k", "v"])
        .fails();
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.starts_with(
            "PERMISSION_DENIED: spiffe://clusterlab/client/reader may not call \
             KeyValue/Put on a balancer: rule \"reader\" does not grant it"
        ),
        "{}",
        out.stderr
    );

    let status = cluster
        .client_to_balancer(0)
        .args(["--json", "status"])
        .ok();
    assert_eq!(status.json()["denied"], 1, "{}", status.stdout);

    let whoami = cluster
        .client_to_balancer(0)
        .args(["--identity", "reader", "whoami"])
        .ok();
    assert!(
        whoami
            .stdout
            .contains("you may call KeyValue/Get, KeyValue/Scan, Health/*"),
        "{}",
        whoami.stdout
    );
    let admin = cluster
        .client_to_balancer(0)
        .args(["--json", "whoami"])
        .ok();
    assert_eq!(admin.json()["allowed"], serde_json::json!(["everything"]));
}
