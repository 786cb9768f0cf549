//! `clusterlab-local`: the one command that runs a whole cluster on loopback.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use tests::{Client, bin, wait_until};

/// A balancer port whose node ports (port + 101...) are free too.
fn free_port_block() -> u16 {
    (0..100)
        .map(|i| 20_000 + (std::process::id() as u16 % 200) * 100 + i * 7)
        .find(|&port| {
            [port, port + 101, port + 102, port + 103]
                .iter()
                .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        })
        .expect("a free block of ports")
}

#[test]
fn one_command_starts_three_nodes_and_a_balancer_and_ctrl_c_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let mut local = Command::new(bin("clusterlab-local"))
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .env("CLUSTERLAB_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting clusterlab-local");
    // Collect its output in the background.
    let stdout = local.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let collector = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };

    let client = || {
        Client::bare()
            .args(["--addr", &format!("127.0.0.1:{port}"), "--certs"])
            .arg_path(&dir.path().join("certs"))
    };
    wait_until(
        "the balancer to see three healthy nodes",
        Duration::from_secs(60),
        || {
            let out = client().args(["--json", "status"]).run();
            out.code() == 0
                && out.json()["backends"]
                    .as_array()
                    .is_some_and(|b| b.iter().filter(|b| b["health"] == "healthy").count() == 3)
        },
    );
    client().args(["put", "k", "v"]).ok();

    // Ctrl-C.
    let pid = local.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = local.wait().unwrap();
    collector.join().unwrap();
    assert!(status.success(), "clusterlab-local exited with {status}");
    let lines = lines.lock().unwrap();
    for prefix in ["n1 ", "n2 ", "n3 ", "balancer "] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "no {prefix:?} lines:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("stopped (exit status: 0)"))
            .count(),
        4,
        "{}",
        lines.join("\n")
    );
    // Nothing is left listening.
    for p in [port, port + 101, port + 102, port + 103] {
        assert!(
            TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still in use"
        );
    }
}
