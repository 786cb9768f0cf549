//! Revocation through real processes: `clusterlab-certs revoke` takes effect on
//! running nodes and balancers, on new connections and on ones already open,
//! and on clients checking a server, while everyone else keeps working.

use std::time::Duration;

use proto::{PutRequest, key_value_client::KeyValueClient};
use tests::{TestCluster, block_on, channel_as, wait_until};

/// How long a revocation may take to reach a running process: it checks the
/// list every second.
const RELOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Asserts that a client command was refused at the handshake as revoked.
fn assert_refused_as_revoked(out: &tests::Output) {
    assert!(
        out.stderr
            .contains("rejected our certificate: certificate revoked"),
        "{}",
        out.stderr
    );
}

/// Asserts that the revoked writer cannot write through `client`, and is
/// not told that its write may have been applied: a server that refuses a
/// certificate reads no request.
fn assert_writer_refused(client: tests::Client) {
    let out = client
        .args(["--identity", "writer", "put", "k", "v"])
        .fails();
    assert_refused_as_revoked(&out);
    assert!(
        !out.stderr.contains("may still have been applied"),
        "{}",
        out.stderr
    );
}

/// Waits until node 0 has reloaded the revocation list with the writer on it
/// (the villain "revoked" and the writer: two). Each process reloads on its
/// own timer.
fn wait_writer_revoked_on_node(cluster: &TestCluster) {
    cluster.wait_log(
        "the node to put the list with the writer in force",
        |line| line.contains("revocation list reloaded") && line.contains("revoked=2"),
    );
}

#[test]
fn the_revoked_villain_is_refused_at_the_handshake() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v"]).ok();
    let out = cluster
        .client()
        .args(["--identity", "revoked", "get", "k"])
        .fails();
    assert_refused_as_revoked(&out);
    cluster.wait_rejection_logged("revoked: it is on the cluster's revocation list");
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
}

#[test]
fn a_revocation_reaches_running_processes_on_new_and_open_connections() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let balancer = cluster.balancers[0].addr.to_string();
    let put = |key: &str| PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    };

    block_on(async {
        // A writer with a connection open from before the revocation.
        let channel = channel_as(&cluster.certs, "writer", &balancer)
            .await
            .unwrap();
        let mut writer = KeyValueClient::new(channel);
        writer.put(put("before")).await.expect("writer may write");

        let said = cluster.certs_tool(&["revoke", "writer"]);
        assert!(
            said.starts_with("spiffe://clusterlab/client/writer revoked (serial "),
            "{said}"
        );

        // The open connection is refused within a reload, by the balancer's
        // per-request check (its handshake happened before the revocation).
        let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
        let status = loop {
            match writer.put(put("after")).await {
                Err(status) => break status,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => panic!("the revoked writer could still write after {RELOAD_DEADLINE:?}"),
            }
        };
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status
                .message()
                .contains("spiffe://clusterlab/client/writer may not call KeyValue/Put: its certificate has been revoked"),
            "{status:?}"
        );
    });

    // A new connection fails at the handshake, on the balancer and on the node
    // (which reloads on its own timer, not the balancer's).
    wait_writer_revoked_on_node(&cluster);
    for client in [cluster.client_to_balancer(0), cluster.client()] {
        assert_writer_refused(client);
    }
    assert!(
        cluster.balancers[0]
            .log_text()
            .contains("revocation list reloaded")
    );

    // Everyone else is unaffected.
    cluster
        .client_to_balancer(0)
        .args(["put", "k", "admin was here"])
        .ok();
    let got = cluster
        .client_to_balancer(0)
        .args(["--identity", "reader", "get", "k"])
        .ok();
    assert_eq!(got.stdout, "admin was here");

    // A revoked *server* is refused by the client that dials it.
    cluster.certs_tool(&["revoke", "balancer"]);
    let out = cluster.client_to_balancer(0).args(["get", "k"]).fails();
    assert!(out.stderr.contains("revoked"), "{}", out.stderr);
    assert_eq!(
        cluster.client().args(["get", "k"]).ok().stdout,
        "admin was here"
    );
}

/// A feed of events opened before a revocation (`clusterlab events`, left
/// following) ends with PERMISSION_DENIED at its next event, instead of
/// delivering it: each request is checked as it begins, and a feed does not
/// end on its own, so it went on for as long as its caller liked.
#[test]
fn an_event_feed_opened_before_a_revocation_ends_at_its_next_event() {
    use proto::{EventsRequest, admin_client::AdminClient};
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let balancer = cluster.balancers[0].addr.to_string();
    let ended = block_on(async {
        let channel = channel_as(&cluster.certs, "admin", &balancer)
            .await
            .unwrap();
        let mut feed = AdminClient::new(channel)
            .events(EventsRequest {
                history_only: false,
            })
            .await
            .expect("admin may follow the events")
            .into_inner();
        let first = feed
            .message()
            .await
            .expect("an event")
            .expect("the feed goes on");
        assert!(!first.kind.is_empty(), "{first:?}");

        cluster.certs_tool(&["revoke", "admin"]);
        wait_until("the balancer to take up the list", RELOAD_DEADLINE, || {
            cluster.balancers[0]
                .log_text()
                .lines()
                .any(|line| line.contains("revocation list reloaded") && line.contains("revoked=2"))
        });
        // An event: the node goes, and the balancer ejects it.
        cluster.kill(0);
        let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
        loop {
            let next = tokio::time::timeout_at(deadline, feed.message())
                .await
                .expect("the feed neither ended nor delivered an event in time");
            match next {
                // Sent before the list was taken up.
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the feed ended without saying why"),
                Err(status) => break status,
            }
        }
    });
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(
        ended.message().starts_with(
            "spiffe://clusterlab/client/admin: its certificate has been revoked (crl.pem) \
             since this call began, so it ends here; whoever holds the CA's key can issue it \
             a new one"
        ),
        "{ended:?}"
    );
}

/// A client whose certificates came without `crl.pem` (copied by hand)
/// cannot refuse a revoked server: it says so, on stderr, and goes on.
#[test]
fn a_client_without_the_revocation_list_says_it_cannot_refuse_revoked_servers() {
    let cluster = TestCluster::start(1);
    let copied = tempfile::tempdir().unwrap();
    for file in ["ca.pem", "admin.pem", "admin.key"] {
        std::fs::copy(cluster.certs.join(file), copied.path().join(file)).unwrap();
    }
    let addr = cluster.nodes[0].addr.to_string();
    let out = tests::Client::bare()
        .args(["--addr", &addr, "--identity", "admin"])
        .args(["--certs".as_ref(), copied.path().as_os_str()])
        .args(["put", "k", "v"])
        .ok();
    let warning = format!(
        "warning: {} is missing, so a server whose certificate was revoked is not refused",
        copied.path().join("crl.pem").display()
    );
    assert!(out.stderr.starts_with(&warning), "{}", out.stderr);
    assert_eq!(out.stderr.matches("warning:").count(), 1, "{}", out.stderr);
    // With the list, nothing to say.
    let out = cluster.client().args(["get", "k"]).ok();
    assert_eq!(out.stdout, "v");
    assert!(!out.stderr.contains("crl.pem"), "{}", out.stderr);
}

/// A node revoked while its connections are open is cut off from the side that
/// dials it too: the balancer's health checks and the other nodes' probes run
/// on connections that were checked at their handshake, long before.
#[test]
fn a_node_revoked_while_connected_is_ejected_and_left_by_its_peers() {
    let mut cluster = TestCluster::start(2);
    // A node with an identity of its own, so that it can be revoked alone.
    cluster.certs_tool(&["issue", "--kind", "node", "--name", "n3"]);
    cluster.add_node(&["--identity", "n3"]);
    cluster.wait_formed();
    cluster.start_balancer(&[]);

    let said = cluster.certs_tool(&["revoke", "n3"]);
    assert!(
        said.starts_with("spiffe://clusterlab/node/n3 revoked"),
        "{said}"
    );
    wait_until("the balancer to eject n3", RELOAD_DEADLINE, || {
        cluster.backend_health(0, "n3").as_deref() == Some("ejected")
    });
    let status = cluster.balancer_status(0).unwrap();
    let n3 = status.backends.iter().find(|b| b.name == "n3").unwrap();
    assert!(n3.reason.contains("revoked"), "{n3:?}");
    wait_until("n1 to stop calling n3 alive", RELOAD_DEADLINE, || {
        matches!(cluster.member_state(0, "n3"), Some("suspect" | "dead"))
    });

    // n1 and n2 carry on without it.
    cluster.client_to_balancer(0).args(["put", "k", "v"]).ok();
    assert_eq!(cluster.client_to(1).args(["get", "k"]).ok().stdout, "v");
    // n3 itself says why its peers refuse it.
    wait_until("n3 to say it is revoked", RELOAD_DEADLINE, || {
        let log = cluster.nodes[2].log_text();
        log.contains("this process's own certificate is on the revocation list")
    });
    // And how to replace it: `issue` refuses a name whose file is there.
    let log = cluster.nodes[2].log_text();
    assert!(log.contains("n3.key, and issue it again"), "{log}");
}

/// Moving `crl.pem` away used to put an empty list in force within a second,
/// and the revoked writer could write again; an older copy put back would
/// have done the same. Both are refused with a warning naming the file, said
/// once, and the list in force stays.
#[test]
fn a_list_moved_away_or_replaced_by_an_older_copy_un_revokes_nobody() {
    let cluster = TestCluster::start(1);
    let crl = cluster.certs.join("crl.pem");
    let older = cluster.dir().join("crl-before-writer.pem");
    std::fs::copy(&crl, &older).unwrap();
    cluster.certs_tool(&["revoke", "writer"]);
    wait_writer_revoked_on_node(&cluster);

    std::fs::rename(&crl, cluster.dir().join("crl-moved.pem")).unwrap();
    let missing = |line: &str| {
        line.contains("WARN")
            && line.contains(&format!("cannot read {}", crl.display()))
            && line.contains("stays in force (2 revoked)")
    };
    cluster.wait_log("a warning that crl.pem is missing", missing);
    assert_writer_refused(cluster.client());

    std::fs::copy(&older, &crl).unwrap();
    cluster.wait_log("a warning that the list put back is older", |line| {
        line.contains("WARN") && line.contains("its CRL number, 1, is not above the 2")
    });
    assert_writer_refused(cluster.client());

    let log = cluster.nodes[0].log_text();
    assert_eq!(
        log.lines().filter(|line| missing(line)).count(),
        1,
        "the missing file is said once, not every second:\n{log}"
    );
    assert!(
        !log.contains("revoked=0") && !log.contains("revoked=1"),
        "{log}"
    );
    cluster.client().args(["put", "k", "admin"]).ok();
}

/// A PKI directory without `crl.pem` (deleted, or copied without it) revokes
/// nobody: the node says so at start, once, and takes up the list that
/// `clusterlab-certs revoke` then writes.
#[test]
fn a_node_started_without_a_list_warns_and_takes_up_one_written_later() {
    let mut cluster = TestCluster::empty();
    let crl = cluster.certs.join("crl.pem");
    std::fs::remove_file(&crl).unwrap();
    cluster.add_node(&[]);
    cluster.wait_ready(0);
    let warning = |line: &str| {
        line.contains("WARN")
            && line.contains("no revocation list")
            && line.contains(&crl.display().to_string())
    };
    cluster.wait_log("a warning that there is no list", warning);
    // The warning is true: the villain the list would refuse gets in.
    let out = cluster
        .client()
        .args(["--identity", "revoked", "whoami"])
        .ok();
    assert!(out.stdout.contains("client/revoked"), "{}", out.stdout);

    cluster.certs_tool(&["revoke", "writer"]);
    cluster.wait_log("the new list put in force", |line| {
        line.contains("revocation list reloaded") && line.contains("revoked=1")
    });
    assert_writer_refused(cluster.client());
    let log = cluster.nodes[0].log_text();
    assert_eq!(log.lines().filter(|l| warning(l)).count(), 1, "{log}");
}
