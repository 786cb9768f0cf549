//! Mutual TLS in action: the villains are refused with a reason, on both sides,
//! and the node keeps serving everyone else.

use std::time::Duration;

use tests::{TestCluster, wait_until};

/// Runs `get` as `identity` and returns its stderr, asserting exit status 1.
fn refused(cluster: &TestCluster, extra: &[&str]) -> String {
    let out = cluster.client().args(extra).args(["get", "k"]).fails();
    assert_eq!(out.stdout, "");
    out.stderr
}

#[test]
fn a_certificate_from_another_ca_is_refused_as_unknown_issuer() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v"]).ok();
    let stderr = refused(&cluster, &["--identity", "intruder"]);
    assert!(stderr.starts_with("UNAVAILABLE:"), "{stderr}");
    assert!(
        stderr.contains("rejected our certificate: unknown issuer"),
        "{stderr}"
    );
    cluster.wait_rejection_logged("unknown issuer: it was not signed by the cluster's CA");
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
}

/// `check` and `load` as a villain: the connect succeeds (in TLS 1.3 the
/// server judges the certificate after the client's half of the handshake),
/// and every request would be refused. Each stops before its first, with
/// the reason, rather than send thousands into the refusal for its whole
/// duration and ask whether the cluster is up.
#[test]
fn a_check_or_load_whose_certificate_is_refused_stops_and_says_why() {
    let cluster = TestCluster::start(1);
    let said = format!(
        "UNAVAILABLE: TLS with {} failed: the server rejected our certificate: unknown issuer",
        cluster.nodes[0].addr
    );
    for command in ["check", "load"] {
        let out = cluster
            .client()
            .args(["--identity", "intruder", command, "--duration", "20s"])
            .fails();
        assert!(
            out.stderr.contains(&said) && !out.stderr.contains("is the cluster up?"),
            "{command}:\n{}\n{}",
            out.stderr,
            out.stdout
        );
    }
}

#[test]
fn an_expired_certificate_is_refused_as_expired() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v"]).ok();
    let stderr = refused(&cluster, &["--identity", "expired"]);
    assert!(
        stderr.contains("rejected our certificate: certificate expired"),
        "{stderr}"
    );
    cluster.wait_rejection_logged("expired: its validity period has ended");
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
}

#[test]
fn plaintext_to_a_tls_port_is_refused_as_tls_required() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v"]).ok();
    let stderr = refused(&cluster, &["--tls", "plaintext"]);
    // The README's villains lab quotes this line.
    let said = format!(
        "UNAVAILABLE: {} closed a plaintext connection at its first byte, without a word: \
         it requires TLS (drop --tls plaintext)",
        cluster.nodes[0].addr
    );
    assert!(stderr.starts_with(&said), "{stderr}");
    // A write too: a port that requires TLS read none of it, so it was not
    // applied, whatever the connection's end looked like here. (It said the
    // write may have been applied.)
    let out = cluster
        .client()
        .args(["--tls", "plaintext", "put", "k", "other"])
        .fails();
    assert!(out.stderr.contains("requires TLS"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("may still have been applied"),
        "{}",
        out.stderr
    );
    // The plaintext came from the variable: unset it, not drop a flag.
    let out = cluster
        .client()
        .env("CLUSTERLAB_TLS", "plaintext")
        .args(["put", "k", "other"])
        .fails();
    assert!(
        out.stderr
            .contains("(unset CLUSTERLAB_TLS, which asks for --tls plaintext)"),
        "{}",
        out.stderr
    );
    cluster.wait_rejection_logged("plaintext HTTP/2");
    cluster.wait_rejection_logged("this port requires TLS");
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
}

#[test]
fn a_missing_identity_names_the_file_and_the_identities_there_are() {
    let cluster = TestCluster::start(1);
    let out = cluster.client().args(["--identity", "nobody", "get", "k"]);
    let stderr = out.usage_error().stderr;
    assert!(stderr.contains("nobody.pem"), "{stderr}");
    // A name never made is most likely mistyped: the error lists the real ones.
    assert!(stderr.contains("the identities in "), "{stderr}");
    assert!(stderr.contains("admin, "), "{stderr}");
    assert!(!stderr.contains("clusterlab-certs init"), "{stderr}");
    // No name at all is said to be that.
    let out = cluster.client().args(["--identity", "", "get", "k"]);
    let stderr = out.usage_error().stderr;
    assert!(
        stderr.contains("for '--identity <IDENTITY>': it is empty; give the name of a certificate"),
        "{stderr}"
    );
}

/// A damaged `crl.pem` beside the client's identity is named as that file,
/// not taken for a problem with the identity.
#[test]
fn a_damaged_revocation_list_is_named_as_that_file() {
    let cluster = TestCluster::start(1);
    let copy = cluster.dir().join("client-certs");
    std::fs::create_dir(&copy).unwrap();
    for file in ["ca.pem", "admin.pem", "admin.key"] {
        std::fs::copy(cluster.certs.join(file), copy.join(file)).unwrap();
    }
    std::fs::write(copy.join("crl.pem"), "garbage\n").unwrap();
    let out = tests::Client::bare()
        .args(["--addr", &cluster.nodes[0].addr.to_string()])
        .args(["--certs", copy.to_str().unwrap(), "get", "k"]);
    let stderr = out.usage_error().stderr;
    assert!(
        stderr.starts_with("error: cannot load the TLS files for identity \"admin\": ")
            && stderr.contains(&copy.join("crl.pem").display().to_string()),
        "{stderr}"
    );
}

/// A client that starts a handshake and leaves (it gave up on a paused node)
/// is logged as having hung up, not as a failed handshake, which next to
/// the villains' refusals reads like a certificate problem.
#[test]
fn a_client_that_hangs_up_mid_handshake_is_said_to_have_hung_up() {
    use std::io::Write;
    let cluster = TestCluster::start(1);
    let mut tcp = std::net::TcpStream::connect(cluster.nodes[0].addr).unwrap();
    // The first bytes of a TLS record header (a handshake), and no more.
    tcp.write_all(&[0x16, 0x03, 0x01]).unwrap();
    drop(tcp);
    cluster.wait_rejection_logged("the client hung up during the TLS handshake");
}

#[test]
fn a_slow_handshake_does_not_block_other_clients() {
    let mut cluster = TestCluster::empty();
    // Longer than the client gives its own handshake (3 s at most): were
    // handshakes done one at a time, the put's would wait for the stalled
    // one's deadline, and fail.
    cluster.add_node(&["--handshake-timeout", "10s"]);
    // A client that connects and says nothing holds a handshake open...
    let stalled = std::net::TcpStream::connect(cluster.nodes[0].addr).unwrap();
    // ...while everyone else is served.
    cluster.client().args(["put", "k", "v"]).ok();
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
    // And the silent one is disconnected after the timeout.
    cluster.wait_rejection_logged("the handshake did not finish within 10s");
    let mut stalled = stalled;
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut stalled, &mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the stalled connection should be closed, got {read:?}"
    );
}

#[test]
fn plaintext_mode_serves_plaintext_clients_and_says_so_loudly() {
    let mut cluster = TestCluster::empty();
    cluster.add_node(&["--tls", "plaintext"]);
    assert!(
        cluster.nodes[0].log_text().contains("PLAINTEXT MODE"),
        "{}",
        cluster.nodes[0].log_text()
    );
    let put = cluster
        .client()
        .args(["--tls", "plaintext", "put", "k", "v"])
        .ok();
    assert!(!put.stderr.contains("--identity"), "{}", put.stderr);
    // An identity given is said not to apply: the reader's put is let through.
    let as_reader = [
        "--tls",
        "plaintext",
        "--identity",
        "reader",
        "put",
        "k",
        "v",
    ];
    let put = cluster.client().args(as_reader).ok();
    assert!(
        put.stderr
            .contains("note: --identity reader does not apply with --tls plaintext"),
        "{}",
        put.stderr
    );
    let whoami = cluster.client().args(["--tls", "plaintext", "whoami"]).ok();
    assert!(whoami.stdout.contains("PLAINTEXT"), "{}", whoami.stdout);
    // And in JSON, no TLS version or identity, rather than empty ones.
    let json = cluster
        .client()
        .args(["--tls", "plaintext", "--json", "whoami"])
        .ok()
        .json();
    assert_eq!(json["plaintext"], true, "{json}");
    for field in [
        "tls_version",
        "cipher_suite",
        "client_identity",
        "server_identity",
    ] {
        assert!(json[field].is_null(), "{field}: {json}");
    }
    for field in ["identity", "tls_version", "cipher_suite"] {
        assert!(json["server_saw"][field].is_null(), "{field}: {json}");
    }
    // A TLS client is told the server did not answer in TLS.
    let out = cluster.client().args(["get", "k"]).fails();
    assert!(
        out.stderr.contains("did not answer in TLS"),
        "{}",
        out.stderr
    );
}

/// The line `clusterlab status` prints for `member`, as node 0 sees it, or
/// why the status call failed (as on a machine too busy to answer in time).
fn member_line(cluster: &TestCluster, extra: &[&str], member: &str) -> String {
    let out = cluster.client_to(0).args(extra).args(["status"]).run();
    if out.code() != 0 {
        return format!("status failed: {}", out.stderr);
    }
    out.stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(member))
        .unwrap_or_else(|| panic!("no line for {member} in:\n{}", out.stdout))
        .to_string()
}

#[test]
fn node_status_shows_how_each_member_is_reached() {
    let mut cluster = TestCluster::start(2);
    // Formed means n1 has probed n2, so the connection is there. On a busy
    // machine n1 may find n2 suspect for a moment, and then says "(last
    // session)": wait for the plain line.
    let mut line = String::new();
    let live = tests::poll_every(tests::PROCESS_POLL, Duration::from_secs(15), || {
        line = member_line(&cluster, &[], "n2");
        line.ends_with("TLSv1.3")
    });
    assert!(live, "{line}");
    let json = cluster.client_to(0).args(["--json", "status"]).ok().json();
    let n2 = json["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "n2"))
        .unwrap_or_else(|| panic!("no n2 in {json}"));
    assert_eq!(n2["link"]["tls"], true, "{n2}");
    assert_eq!(
        n2["link"]["cipher_suite"], "TLS13_AES_256_GCM_SHA384",
        "{n2}"
    );
    assert!(
        n2["link"]["identity"]
            .as_str()
            .is_some_and(|i| i.starts_with("spiffe://clusterlab/node/")),
        "{n2}"
    );
    // Once n2 stops answering, n1 still reports the last session it had, and
    // the text says that is what it is.
    cluster.kill(1);
    wait_until("n1 to find n2 suspect", Duration::from_secs(15), || {
        matches!(cluster.member_state(0, "n2"), Some("suspect" | "dead"))
    });
    let line = member_line(&cluster, &[], "n2");
    assert!(line.ends_with("TLSv1.3 (last session)"), "{line}");

    let plaintext = TestCluster::start_with(2, &["--tls", "plaintext"]);
    let line = member_line(&plaintext, &["--tls", "plaintext"], "n2");
    assert!(line.ends_with("PLAINTEXT"), "{line}");
}

/// A balancer in front of node 0, started by hand so that a test chooses its
/// flags and its environment. It logs to `NAME.log` in the cluster's
/// directory and is killed when dropped.
struct HandMadeBalancer {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl HandMadeBalancer {
    fn start(cluster: &TestCluster, name: &str, flags: &[&str], env: &[(&str, &str)]) -> Self {
        let log = cluster.dir().join(format!("{name}.log"));
        let mut command = std::process::Command::new(tests::bin("clusterlab-balancer"));
        let child = tests::without_clusterlab_env(&mut command)
            .args(["--dashboard", "off", "--certs"])
            .arg(&cluster.certs)
            .args(["--listen", &format!("127.0.0.1:{}", tests::free_port())])
            .args(["--nodes", &cluster.nodes[0].addr.to_string()])
            .args(flags)
            .env("CLUSTERLAB_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the balancer log"))
            .spawn()
            .expect("starting clusterlab-balancer");
        HandMadeBalancer { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 30 s) for a log line containing `what`; false if none came.
    fn logs(&self, what: &str) -> bool {
        tests::poll_until(Duration::from_secs(30), || self.log_text().contains(what))
    }
}

impl Drop for HandMadeBalancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A balancer started with `--tls plaintext` in front of nodes that require
/// TLS says why it cannot reach them, not only "connection reset", and says
/// it once: the reason used to quote the error, a reset one second and a
/// broken pipe the next, so a line came every second.
#[test]
fn a_plaintext_balancer_in_front_of_tls_nodes_says_why_it_cannot_reach_them() {
    let cluster = TestCluster::start(1);
    let balancer = HandMadeBalancer::start(&cluster, "plaintext", &["--tls", "plaintext"], &[]);
    // Five seconds on, and ten health checks later.
    assert!(
        balancer.logs("backend still not in rotation"),
        "{}",
        balancer.log_text()
    );
    let log = balancer.log_text();
    let said = "closed the connection before answering; it probably requires TLS (the \
                default), which this balancer's --tls plaintext cannot speak";
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("backend not in rotation yet"))
        .collect();
    assert!(lines.len() == 1 && lines[0].contains(said), "{log}");
    // Started with `--dashboard off`, as every balancer here: it says so.
    assert!(
        log.contains("no dashboard and no /metrics: --dashboard turned them off"),
        "{log}"
    );
}

/// `SSLKEYLOGFILE` naming a file: the secrets of every TLS session are written
/// there, and the log says so loudly. Set but empty, as compose leaves it
/// unless a learner asks for the decryption lab: no secrets and no warning.
#[test]
fn session_keys_are_written_only_when_sslkeylogfile_names_a_file() {
    let cluster = TestCluster::start(1);
    let keys = cluster.dir().join("keys.log");
    let keys_env = keys.to_str().expect("a UTF-8 temp path");
    let logging = HandMadeBalancer::start(&cluster, "logging", &[], &[("SSLKEYLOGFILE", keys_env)]);
    let quiet = HandMadeBalancer::start(&cluster, "quiet", &[], &[("SSLKEYLOGFILE", "")]);
    // In rotation means each has dialled the node over TLS and been answered.
    for balancer in [&logging, &quiet] {
        assert!(balancer.logs("backend healthy"), "{}", balancer.log_text());
    }

    let secrets = std::fs::read_to_string(&keys).expect("the key log");
    assert!(secrets.contains("CLIENT_TRAFFIC_SECRET_0 "), "{secrets}");
    let log = logging.log_text();
    assert!(log.contains("SSLKEYLOGFILE is set"), "{log}");

    let log = quiet.log_text();
    assert!(
        !log.contains("SSLKEYLOGFILE") && !log.contains("key log"),
        "an empty SSLKEYLOGFILE was taken for a file name:\n{log}"
    );
}

/// A client's key log (in compose, the balancer's health check shares its
/// `SSLKEYLOGFILE`) goes to the owner of its directory, as the balancer's
/// does: made by rustls as root, it was root's, mode 0600, and a learner who
/// had deleted it could no longer read the one that came back. Others on the
/// machine cannot read it: it decrypts every session it lists.
#[test]
fn a_clients_key_log_goes_to_the_owner_of_its_directory() {
    use std::os::unix::fs::MetadataExt;
    let cluster = TestCluster::start(1);
    let dir = cluster.dir().join("captures");
    std::fs::create_dir(&dir).unwrap();
    // As root (in CI, say), the directory is given to someone else, as a
    // learner's bind-mounted ./captures is.
    if std::fs::metadata(&dir).unwrap().uid() == 0 {
        std::os::unix::fs::chown(&dir, Some(4242), Some(4243)).unwrap();
    }
    // The person who runs it is told where the keys go, or that they cannot.
    let whoami_logging_to = |keys: &std::path::Path, said: &str| {
        let stderr = cluster
            .client()
            .env("SSLKEYLOGFILE", keys)
            .args(["whoami"])
            .ok()
            .stderr;
        let said = format!("warning: SSLKEYLOGFILE is set{said}");
        assert!(stderr.contains(&said), "{said}\n{stderr}");
    };
    let keys = dir.join("keys.log");
    let written = format!(
        ": this command's TLS session keys are written to {}",
        keys.display()
    );
    whoami_logging_to(&keys, &written);
    let nowhere = dir.join("no such directory").join("keys.log");
    let unwritable = format!(", but {} cannot be written", nowhere.display());
    whoami_logging_to(&nowhere, &unwritable);
    let secrets = std::fs::read_to_string(&keys).expect("the key log");
    assert!(secrets.contains("CLIENT_TRAFFIC_SECRET_0 "), "{secrets}");
    let (dir, file) = (
        std::fs::metadata(&dir).unwrap(),
        std::fs::metadata(&keys).unwrap(),
    );
    assert_eq!((file.uid(), file.gid()), (dir.uid(), dir.gid()));
    assert_eq!(
        file.mode() & 0o777,
        0o600,
        "the key log is readable by others"
    );
}

/// `--addr` given the dashboard's port (8080 for 7000 is an easy slip) is
/// told that it may be a web port, not only that TLS failed.
#[test]
fn a_client_pointed_at_the_dashboard_hears_it_may_be_a_web_port() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let dashboard = cluster.balancers[0].dashboard.to_string();
    let out = cluster.client_at(&dashboard).args(["get", "k"]).fails();
    assert!(
        out.stderr
            .contains("or is this a web port (the dashboard, /metrics)"),
        "{}",
        out.stderr
    );
}

/// The warning a new node, started with `flags` and `seed` as its only
/// `--peers`, logs once the seed has failed to answer for a while.
fn seed_warning(cluster: &mut TestCluster, flags: &[&str], seed: String) -> String {
    let node = cluster.add_node_with_peers(flags, vec![seed]);
    tests::wait_for_line(
        || cluster.nodes[node].log_text(),
        "cannot reach a --peers seed",
        Duration::from_secs(30),
    )
}

/// A `--tls plaintext` node seeded with a TLS node: the TLS node hangs up on
/// the plaintext preface, and the warning says TLS is the likely reason, not
/// h2's "transport error" or "operation was canceled" by turns.
#[test]
fn a_plaintext_node_whose_seed_requires_tls_says_so() {
    let mut cluster = TestCluster::start(1);
    let seed = cluster.nodes[0].addr.to_string();
    let warning = seed_warning(&mut cluster, &["--tls", "plaintext"], seed);
    assert!(
        warning
            .contains("it probably requires TLS, which this node's --tls plaintext cannot speak"),
        "{warning}"
    );
}

/// A balancer's address given as a node's `--peers` seed: the node's warning
/// says what answered there and what was expected, not rustls's `Debug`.
#[test]
fn a_node_whose_seed_is_a_balancer_says_so() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let balancer = cluster.balancers[0].addr.to_string();
    let warning = seed_warning(&mut cluster, &[], balancer);
    assert!(
        warning.contains("but a node was expected (is that a balancer's port?)")
            && !warning.contains("WrongKind"),
        "{warning}"
    );
}
