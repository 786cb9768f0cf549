//! The villains: every wrong certificate and wrong TLS client the labs offer,
//! through real processes. Each case asserts the refusal, the reason the
//! refused side is given, the reason the server logs, and that a good client is
//! served meanwhile. (Unknown issuer, expired, plaintext and the stalled
//! handshake are in `tls.rs`; revocation is in `revocation.rs`.)

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use certs::{revocation::Revocations, tls::ServerIdentityVerifier};
use rustls_pki_types::{PrivateKeyDer, ServerName, pem::PemObject};
use tests::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The good client is served: a write and a read back.
fn still_serving(cluster: &TestCluster, key: &str) {
    cluster.client().args(["put", key, "served"]).ok();
    assert_eq!(cluster.client().args(["get", key]).ok().stdout, "served");
}

/// `clusterlab --identity NAME get k` is refused at the handshake: the client
/// hears `client_hears`, the node logs `node_logs`, and others are served.
fn refused_with_identity(name: &str, client_hears: &str, node_logs: &str) {
    let cluster = TestCluster::start(1);
    still_serving(&cluster, "before");
    let out = cluster
        .client()
        .args(["--identity", name, "get", "before"])
        .fails();
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with("UNAVAILABLE:") && out.stderr.contains(client_hears),
        "{name}: {}",
        out.stderr
    );
    cluster.wait_rejection_logged(node_logs);
    still_serving(&cluster, "after");
}

#[test]
fn a_certificate_not_valid_yet_is_refused() {
    refused_with_identity(
        "notyet",
        "the server rejected our certificate: certificate expired (or not yet valid)",
        "not valid yet: its validity period has not started",
    );
}

#[test]
fn a_server_certificate_presented_by_a_client_is_refused_for_its_purpose() {
    refused_with_identity(
        "server-only",
        "the server rejected our certificate",
        "wrong purpose: its extended key usage does not allow this role",
    );
}

#[test]
fn a_ca_certificate_used_as_a_leaf_is_refused() {
    refused_with_identity(
        "ca-leaf",
        "the server rejected our certificate: certificate refused",
        "a CA certificate, not a leaf",
    );
}

#[test]
fn a_certificate_with_two_identities_is_refused_even_if_one_is_admin() {
    let cluster = TestCluster::start(1);
    // Our own client will not even present it...
    let out = cluster
        .client()
        .args(["--identity", "two-names", "get", "k"])
        .usage_error();
    assert!(
        out.stderr
            .contains("two-names.pem: the certificate has 2 URI SANs"),
        "{}",
        out.stderr
    );
    // ...and a hand-made client that does is refused by the node.
    let ended = attempt(
        &cluster.certs,
        cluster.nodes[0].addr,
        &[&rustls::version::TLS13],
        Some(&cluster.certs.join("two-names.pem")),
    );
    assert!(ended.contains("CertificateUnknown"), "{ended}");
    cluster.wait_rejection_logged(
        "the certificate has 2 URI SANs; a clusterlab identity needs exactly one",
    );
    still_serving(&cluster, "k");
}

/// A TLS server that is not ours: it presents `DIR/NAME.pem` and completes any
/// handshake, without asking for a client certificate. Runs until the test ends.
fn rogue_server(certs: &Path, name: &str) -> SocketAddr {
    let chain = certs::files::load_certs(&certs.join(format!("{name}.pem"))).unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("{name}.key"))).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(certs::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        tests::block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // Complete the handshake if the client lets us, then hang up.
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
    });
    addr
}

/// `clusterlab get` against a rogue server presenting `name`'s certificate:
/// returns what the client says, after checking the real node still serves.
fn client_refuses_server(name: &str) -> String {
    let cluster = TestCluster::start(1);
    let rogue = rogue_server(&cluster.certs, name);
    let out = cluster
        .client_at(&rogue.to_string())
        .args(["get", "k"])
        .fails();
    assert_eq!(out.stdout, "");
    still_serving(&cluster, "k");
    out.stderr
}

#[test]
fn a_client_certificate_presented_by_a_server_is_refused_by_the_client() {
    let stderr = client_refuses_server("writer");
    assert!(
        stderr.contains("we refused the server's certificate: wrong purpose"),
        "{stderr}"
    );
}

#[test]
fn a_server_whose_certificate_names_no_identity_is_refused_by_the_client() {
    let stderr = client_refuses_server("wrong-san");
    assert!(
        stderr.contains(
            "we refused the server's certificate: the certificate has no \
             spiffe://clusterlab/... URI SAN, so it names nobody"
        ),
        "{stderr}"
    );
}

/// A balancer pointed at another balancer as if it were a node used to find it
/// healthy and forward every request to it, where each was refused
/// PERMISSION_DENIED. It is refused at the handshake, saying what it is, and
/// never put in rotation; the `clusterlab` client still takes either kind.
#[test]
fn a_balancer_given_a_balancer_for_a_node_refuses_it_at_the_handshake() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let first = cluster.balancers[0].addr.to_string();
    let second = cluster.spawn_balancer(&[
        "--name".into(),
        "b2".into(),
        "--nodes".into(),
        first.clone(),
    ]);
    let expected = "we refused the server's certificate: 127.0.0.1 proved \
         spiffe://clusterlab/balancer/balancer, but a node was expected \
         (is that a balancer's port?)";
    let backend = || {
        let status = cluster.balancer_status(second).ok()?;
        status.backends.into_iter().find(|b| b.addr == first)
    };
    tests::wait_until(
        "b2 to give the reason it refuses b1",
        Duration::from_secs(30),
        || backend().is_some_and(|b| b.reason.contains(expected)),
    );
    let backend = backend().unwrap();
    assert_ne!(backend.health, "healthy", "{backend:?}");
    assert!(
        backend.reason.contains(&format!("cannot reach {first}: ")),
        "{backend:?}"
    );
    let out = cluster
        .client_to_balancer(second)
        .args(["get", "k"])
        .fails();
    assert!(!out.stderr.contains("PERMISSION_DENIED"), "{}", out.stderr);
    // The first balancer is still a server the client accepts.
    cluster.client_to_balancer(0).args(["put", "k", "v"]).ok();
}

/// Connects to `addr` with a hand-made TLS client, sends the HTTP/2 preface,
/// and returns what happened: the error, "closed", or "answered" when the
/// server sent HTTP/2 data back (it accepted us).
fn attempt(
    certs_dir: &Path,
    addr: SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_cert: Option<&Path>,
) -> String {
    // It checks the node as our own client does (the node is genuine); what
    // it gets wrong is on its own side.
    let verifier = ServerIdentityVerifier::new(certs_dir, Revocations::load(certs_dir).unwrap());
    let builder = rustls::ClientConfig::builder_with_provider(certs::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier.unwrap()));
    let mut config = match client_cert {
        Some(pem) => builder
            .with_client_auth_cert(
                certs::files::load_certs(pem).unwrap(),
                PrivateKeyDer::from_pem_file(pem.with_extension("key")).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tests::block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("node").unwrap();
        let mut tls = match connector.connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return e.to_string(),
        };
        // TLS 1.3: the client's side of the handshake is done before the
        // server has judged its certificate; the verdict arrives as an alert.
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 1024];
        let deadline = Duration::from_secs(10);
        match tokio::time::timeout(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) => "closed".to_string(),
            Ok(Ok(_)) => "answered".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {deadline:?}"),
        }
    })
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let cluster = TestCluster::start(1);
    let ended = attempt(
        &cluster.certs,
        cluster.nodes[0].addr,
        &[&rustls::version::TLS13],
        None,
    );
    assert!(ended.contains("CertificateRequired"), "{ended}");
    cluster.wait_rejection_logged("the client presented no certificate; mutual TLS requires one");
    still_serving(&cluster, "k");
}

#[test]
fn a_tls_1_2_only_client_is_refused_even_with_a_good_certificate() {
    let cluster = TestCluster::start(1);
    let ended = attempt(
        &cluster.certs,
        cluster.nodes[0].addr,
        &[&rustls::version::TLS12],
        Some(&cluster.certs.join("writer.pem")),
    );
    assert!(ended.contains("ProtocolVersion"), "{ended}");
    cluster.wait_rejection_logged("the client cannot speak what we require (TLS 1.3)");
    still_serving(&cluster, "k");
}

#[test]
fn a_good_hand_made_client_gets_through_so_the_refusals_above_are_real() {
    // The negative control for `attempt`: with a good certificate and TLS 1.3
    // the same hand-made client is not refused, the node answers HTTP/2.
    let cluster = TestCluster::start(1);
    let ended = attempt(
        &cluster.certs,
        cluster.nodes[0].addr,
        &[&rustls::version::TLS13],
        Some(&cluster.certs.join("writer.pem")),
    );
    assert_eq!(ended, "answered");
}
