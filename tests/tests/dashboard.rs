//! What a learner sees without the command line: the balancer's dashboard
//! (its page, `/api/status`) and `/metrics` on the balancer and the nodes,
//! read over plain HTTP as a browser or Prometheus would.

use std::{net::TcpListener, process::Command, time::Duration};

use proto::PutRequest;
use serde_json::{Value, json};
use tests::{TestCluster, bin, block_on, free_port, http_get, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// Writes `n` keys through balancer 0, one at a time.
fn put_through_balancer(cluster: &TestCluster, n: usize) {
    block_on(async {
        let mut client = cluster.key_value_via_balancer(0).await.expect("connecting");
        for i in 0..n {
            let put = PutRequest {
                key: format!("dash/{i}"),
                value: b"v".to_vec(),
                ..Default::default()
            };
            client.put(put).await.expect("a put through the balancer");
        }
    });
}

/// `GET path` from balancer 0's dashboard port; must answer 200.
fn get(cluster: &TestCluster, path: &str) -> String {
    let addr = cluster.balancers[0].dashboard.to_string();
    let (code, body) = http_get(&addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(code, 200, "GET {path} answered {code}: {body}");
    body
}

fn api_status(cluster: &TestCluster) -> Value {
    serde_json::from_str(&get(cluster, "/api/status")).expect("/api/status is JSON")
}

/// What the dashboard's own script draws from `status` (an `/api/status`
/// answer) and from the states `tests/js/dashboard-harness.js` makes of it,
/// run under Node.js, which the machines this is built on have.
fn drawn_by_the_page(dir: &std::path::Path, status: &Value) -> Value {
    drawn_in(dir, status, &[])
}

/// [`drawn_by_the_page`], in `only` the harness's scenarios named (all, if
/// none): most are made from a cluster of three.
fn drawn_in(dir: &std::path::Path, status: &Value, only: &[&str]) -> Value {
    let page = include_str!("../../balancer/src/dashboard.html");
    let (_, script) = page.split_once("<script>").expect("the page has a script");
    let (script, _) = script.split_once("</script>").expect("the script ends");
    let (script_path, status_path) = (dir.join("dashboard.js"), dir.join("status.json"));
    std::fs::write(&script_path, script).unwrap();
    std::fs::write(&status_path, status.to_string()).unwrap();
    let harness = concat!(env!("CARGO_MANIFEST_DIR"), "/js/dashboard-harness.js");
    let out = Command::new("node")
        .args([
            harness.as_ref(),
            script_path.as_os_str(),
            status_path.as_os_str(),
        ])
        .args((!only.is_empty()).then(|| only.join(",")))
        .output()
        .unwrap_or_else(|e| {
            panic!("the dashboard's script is run with Node.js: cannot run `node`: {e}")
        });
    assert!(
        out.status.success(),
        "the dashboard's script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the harness prints JSON")
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What the node called `name` shows of itself on the dashboard.
fn node_view<'a>(status: &'a Value, name: &str) -> &'a Value {
    view_of(status, name).unwrap_or_else(|| panic!("no view of {name} in {status}"))
}

/// [`node_view`], if there is one.
fn view_of<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["backend"] == name)
        .map(|n| &n["view"])
}

#[test]
fn the_dashboard_shows_traffic_keys_links_and_events_and_metrics_agree() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    put_through_balancer(&cluster, 30);

    let page = get(&cluster, "/");
    assert!(page.contains("<title>clusterlab</title>"), "{page}");
    assert!(
        page.contains("fetch(\"/api/status\""),
        "the page polls its data"
    );
    // Its key counts, which a delete does not lower, say why.
    assert!(
        page.contains("a delete does not\n      lower the count"),
        "{page}"
    );
    let (code, body) = http_get(&cluster.balancers[0].dashboard.to_string(), "/nope").unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "nothing at /nope; this port serves / (the dashboard), /api/status, /metrics\n"
    );

    // Every node holds all 30 keys once the third copies land (N=3, W=2).
    // The snapshot asserted on below is one where that holds, and where each
    // node and member is seen healthy: a busy machine can make one miss a
    // check for a moment, which is not what this test is about.
    let mut status = serde_json::Value::Null;
    wait_until("every node to report 30 keys, all healthy", SETTLE, || {
        status = api_status(&cluster);
        let all_in = status["balancer"]["backends"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["health"] == "healthy"));
        all_in
            && ["n1", "n2", "n3"].iter().all(|name| {
                let members = view_of(&status, name)
                    .and_then(|view| view["status"]["members"].as_array().cloned())
                    .unwrap_or_default();
                let me = members.iter().find(|m| m["self"] == true);
                members.iter().all(|m| m["state"] == "alive")
                    && me.is_some_and(|me| me["keys"] == 30)
            })
    });
    let balancer = &status["balancer"];
    assert_eq!(balancer["requests"], 30, "{balancer}");
    let backends = balancer["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 3, "{balancer}");
    assert!(
        backends.iter().all(|b| b["health"] == "healthy"),
        "{balancer}"
    );
    // A node counts attempts: a put retried elsewhere (a node that missed
    // a check on a busy machine, say) is counted on both.
    let attempts = 30 + balancer["retries"].as_u64().expect("retries");
    let forwarded: u64 = backends
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert!((30..=attempts).contains(&forwarded), "{balancer}");
    for name in ["n1", "n2", "n3"] {
        let view = &node_view(&status, name)["status"];
        assert_eq!(view["name"], name, "{view}");
        let members = view["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{view}");
        assert!(members.iter().all(|m| m["state"] == "alive"), "{view}");
    }

    // Every link: clients to the balancer, the balancer to each node, and
    // each node to each other node. Mutual TLS, with the identity the far
    // end proved.
    let links = status["links"].as_array().expect("links");
    assert_eq!(links[0]["from"], "clients");
    // Its version is the one the balancer accepts; its suite, each client's.
    assert_eq!(links[0]["version"], "TLSv1.3", "{links:?}");
    assert_eq!(links[0]["cipher_suite"], Value::Null, "{links:?}");
    assert_eq!(
        links[0]["identity"], "spiffe://clusterlab/balancer/balancer",
        "{links:?}"
    );
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for link in &links[1..] {
        let (from, to) = (link["from"].as_str().unwrap(), link["to"].as_str().unwrap());
        pairs.push((from, to));
        assert_eq!(link["tls"], true, "{link}");
        assert_eq!(link["down"], false, "{link}");
        assert_eq!(link["version"], "TLSv1.3", "{link}");
        assert!(
            link["identity"]
                .as_str()
                .is_some_and(|i| i.starts_with("spiffe://clusterlab/node/")),
            "{link}"
        );
    }
    pairs.sort();
    let names = ["n1", "n2", "n3"];
    let mut expected: Vec<(&str, &str)> = names.iter().map(|n| ("balancer", *n)).collect();
    for from in names {
        expected.extend(names.iter().filter(|to| **to != from).map(|to| (from, *to)));
    }
    expected.sort();
    assert_eq!(pairs, expected, "{links:?}");
    // Events from the balancer and from the nodes, together.
    let events = status["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"balancer.started"), "{kinds:?}");
    assert!(kinds.contains(&"node.started"), "{kinds:?}");

    // The page's own script draws this answer, and the states a learner
    // makes from it, without a NaN or an `undefined` on the projector.
    let drawn = drawn_by_the_page(cluster.dir(), &status);
    let everything = drawn.to_string();
    for junk in ["NaN", "undefined", "[object Object]", "Infinity"] {
        assert!(!everything.contains(junk), "{junk} drawn: {drawn:#}");
    }
    let tiles = |scenario: &str| -> Vec<String> {
        let tiles = drawn[scenario]["tiles"].as_array().expect("tiles");
        tiles
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    let tile = |scenario: &str, name: &str| {
        tiles(scenario)
            .into_iter()
            .find(|t| t.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no tile for {name} in {scenario}: {drawn:#}"))
    };
    // Every answer drew whole: the page's script throwing part-way (after
    // the tiles, say) shows only its own banner, which no other assertion
    // would notice.
    let unanswered = ["paused", "failing", "notStatus"];
    for (scenario, seen) in drawn.as_object().unwrap() {
        let shown = seen["banner"]["shown"].as_str();
        let expected = match unanswered.contains(&scenario.as_str()) {
            true => "block",
            false => "none",
        };
        assert_eq!(shown, Some(expected), "{scenario}: {seen:#}");
    }
    assert_eq!(tiles("healthy").len(), 3, "{drawn:#}");
    for name in ["n1", "n2", "n3"] {
        let tile = tile("healthy", name);
        assert!(
            tile.starts_with(&format!(
                "{name} alive balancer: in rotation · other nodes: alive "
            )),
            "{tile}"
        );
    }
    let shown = drawn["healthy"]["links"].as_str().unwrap();
    assert!(
        shown.contains("TLSv1.3 (the only version accepted; each client settles its cipher suite)"),
        "{shown}"
    );
    let quorum = drawn["healthy"]["quorum"].as_str().unwrap();
    assert!(quorum.starts_with("N=3 copies of each key"), "{quorum}");
    assert!(quorum.ends_with("Every key has its copies."), "{quorum}");
    // A node's injected fault is on its tile, and only on its tile.
    assert!(!tile("healthy", "n2").contains("fault"), "{drawn:#}");
    let n2 = tile("faulted", "n2");
    assert!(n2.ends_with("fault injected: latency 300ms"), "{n2}");
    assert!(!tile("faulted", "n1").contains("fault"), "{drawn:#}");
    // So is a store in trouble.
    let n3 = tile("faulted", "n3");
    assert!(
        n3.ends_with("store: takes no more writes: an fsync of /data/clusterlab.redb failed"),
        "{n3}"
    );
    assert!(!tile("faulted", "n2").contains("store:"), "{drawn:#}");
    // Keys it cannot take are not said to be repaired.
    let quorum = drawn["faulted"]["quorum"].as_str().unwrap();
    assert!(
        quorum.ends_with(
            "8 keys (counted on each node that holds one) lack an up-to-date copy on another \
             live replica, and n3 cannot store them until its store takes writes again (see \
             its tile)."
        ),
        "{quorum}"
    );
    // A cut link: both ends serve, and most of the others see them alive.
    let n1 = tile("cut", "n1");
    assert!(n1.contains("other nodes: alive (n3 sees it dead)"), "{n1}");
    assert!(
        tile("cut", "n2").contains("other nodes: alive "),
        "{drawn:#}"
    );
    // Every node serves, so the keys each end counts short are being repaired,
    // not kept short for want of nodes (as n1's own view alone would say).
    let quorum = drawn["cut"]["quorum"].as_str().unwrap();
    assert!(
        quorum.ends_with(
            "Anti-entropy is repairing: 10 keys (counted on each node that holds one) lack \
             an up-to-date copy on another live replica."
        ),
        "{quorum}"
    );
    // n1 cut off from both: two nodes alive by the others' word, not one.
    let quorum = drawn["partition"]["quorum"].as_str().unwrap();
    assert!(
        quorum.contains("Only 2 nodes are alive for 3 copies: 15 keys"),
        "{quorum}"
    );
    // Every node cut off from every other: each holds its own copies, and
    // no word of the others can count it out ("0 copies").
    let quorum = drawn["isolated"]["quorum"].as_str().unwrap();
    assert!(
        quorum.ends_with(
            "Only 1 node is alive for 3 copies: 15 keys (counted on each node that holds \
             one) have 1 copy until a node returns or joins."
        ),
        "{quorum}"
    );
    // A node the others find suspect keeps its keys: what it lacks is not
    // being repaired (the page said so, of "another live replica"); one
    // node missing its answers for a moment is not the others' word.
    let quorum = drawn["suspectToAll"]["quorum"].as_str().unwrap();
    assert!(
        quorum.ends_with(
            "12 keys (counted on each node that holds one) lack an up-to-date copy, some on \
             n3, suspect to the others (not answering): a suspect node keeps its keys, so no \
             copy is made elsewhere until it is declared dead, nor to it until it answers \
             again."
        ),
        "{quorum}"
    );
    let quorum = drawn["suspect"]["quorum"].as_str().unwrap();
    assert!(
        quorum.contains("Anti-entropy is repairing: 2 keys"),
        "{quorum}"
    );
    // A link's far end is named for what it is: dead at the cut, only
    // suspect to a node missing its answers for a moment, not "down".
    let links = |scenario: &str| drawn[scenario]["links"].as_str().unwrap().to_string();
    assert!(
        links("cut").contains("(last session: n3 is dead)"),
        "{drawn:#}"
    );
    let suspect = links("suspect");
    assert!(
        suspect.contains("(last session: n3 is suspect)") && !suspect.contains("is down"),
        "{suspect}"
    );
    // No node found by --nodes-dns, the one way a balancer lists none: the
    // page does not ask for the flag it was given.
    assert_eq!(
        drawn["noNodes"]["tiles"],
        json!([
            "No nodes yet: --nodes-dns finds none (no node is up, or the name resolves \
                to no address from the balancer)."
        ]),
        "{drawn:#}"
    );
    // ...nor says a node did not answer.
    assert_eq!(drawn["noNodes"]["quorum"], "No nodes yet.", "{drawn:#}");
    // A killed node: ejected, and its keys short of a copy for want of nodes.
    assert!(tile("killed", "n3").starts_with("n3 ejected "), "{drawn:#}");
    // One dead before the balancer started, which knows it only by its
    // address: the others' word names it, and says it is dead.
    let n3 = tile("deadBeforeStart", "n3");
    assert!(
        n3.starts_with("n3 dead balancer: waiting · other nodes: dead "),
        "{n3}"
    );
    let quorum = drawn["killed"]["quorum"].as_str().unwrap();
    assert!(
        quorum.ends_with(
            "Only 2 nodes are alive for 3 copies: 60 keys (counted on each node that holds \
             one) have 2 copies until a node returns or joins."
        ),
        "{quorum}"
    );
    // A paused balancer: the page says so, and its last picture is greyed
    // out, with no request rate, rather than shown as if live.
    assert_eq!(drawn["paused"]["banner"]["shown"], "block", "{drawn:#}");
    assert_eq!(
        drawn["paused"]["banner"]["text"],
        "The balancer does not answer (no answer within 3 s); still trying every second. \
         What is shown is its last answer, not live.",
        "{drawn:#}"
    );
    // The header's counts too: they are the last answer's.
    assert_eq!(drawn["paused"]["page"], "stale", "{drawn:#}");
    assert_eq!(drawn["paused"]["head"], "stale", "{drawn:#}");
    assert_eq!(
        drawn["failing"]["banner"]["text"],
        "The balancer's status came back as an error (HTTP 502), which the balancer never \
         sends: is it down behind a proxy, or is another program on its port? Still trying \
         every second. What is shown is its last answer, not live.",
        "{drawn:#}"
    );
    // Another program on the port (a page, not JSON) is not "the balancer".
    assert_eq!(
        drawn["notStatus"]["banner"]["text"],
        "What answers here is not the balancer's status (Unexpected token '<', \"<!doctype \"... \
         is not valid JSON): is another program on its port? Still trying every second. \
         What is shown is its last answer, not live.",
        "{drawn:#}"
    );
    assert_eq!(drawn["paused"]["rps"], "—", "{drawn:#}");
    // The first answer back is live, but a rate needs two: not known, not 0.
    assert_eq!(drawn["back"]["page"], "", "{drawn:#}");
    assert_eq!(drawn["back"]["head"], "", "{drawn:#}");
    // Each tile shows a rate and a bar (the checks below look at each).
    for scenario in ["back", "rates", "renamed"] {
        let count = |what: &str| drawn[scenario][what].as_array().map(Vec::len);
        assert_eq!(count("tileRps"), count("tiles"), "{scenario}: {drawn:#}");
        assert_eq!(count("bars"), count("tiles"), "{scenario}: {drawn:#}");
    }
    assert_eq!(drawn["back"]["rps"], "—", "{drawn:#}");
    let first = drawn["back"]["tileRps"].as_array().unwrap();
    assert!(
        first.iter().all(|r| r == "—  req/s via this balancer"),
        "{drawn:#}"
    );
    // Back, the page is live again, and a rate is requests over the time
    // between the balancer's counts: 300 in 1.5 s.
    assert_eq!(drawn["rates"]["page"], "", "{drawn:#}");
    assert_eq!(drawn["rates"]["banner"]["shown"], "none", "{drawn:#}");
    assert_eq!(drawn["rates"]["rps"], "200", "{drawn:#}");
    // All of them to the node named `constructor`: its tile and bar say so.
    let tile_rates = drawn["rates"]["tileRps"].as_array().unwrap();
    let bars = drawn["rates"]["bars"].as_array().unwrap();
    let tiles = drawn["rates"]["tiles"].as_array().unwrap();
    let at = tiles
        .iter()
        .position(|t| t.as_str().unwrap().starts_with("constructor "))
        .expect("a tile for `constructor`");
    for (i, (rate, bar)) in tile_rates.iter().zip(bars).enumerate() {
        let (rate_now, width) = match i == at {
            true => ("200  req/s via this balancer", "100%"),
            false => ("0  req/s via this balancer", "0%"),
        };
        assert_eq!(
            (rate.as_str(), bar.as_str()),
            (Some(rate_now), Some(width)),
            "{drawn:#}"
        );
    }

    // A tile under a name it was not counted under a moment ago (a node
    // that told its name) has no rate yet; the others do.
    let tiles = drawn["renamed"]["tiles"].as_array().unwrap();
    let rates = drawn["renamed"]["tileRps"].as_array().unwrap();
    for (tile, rate) in tiles.iter().zip(rates) {
        let expected = match tile.as_str().unwrap().starts_with("n1 ") {
            true => "—  req/s via this balancer",
            false => "0  req/s via this balancer",
        };
        assert_eq!(rate, expected, "{drawn:#}");
    }
    // A balancer restarted between two answers counts fewer than before:
    // its rates are not known, not 0.
    assert_eq!(drawn["restarted"]["rps"], "—", "{drawn:#}");
    let rates = drawn["restarted"]["tileRps"].as_array().unwrap();
    assert!(!rates.is_empty(), "{drawn:#}");
    assert!(
        rates.iter().all(|r| r == "—  req/s via this balancer"),
        "{drawn:#}"
    );

    // /metrics counts the same requests, per node too.
    let metrics = get(&cluster, "/metrics");
    assert_eq!(
        sample(&metrics, "clusterlab_balancer_requests_total"),
        Some(30),
        "{metrics}"
    );
    let per_node: u64 = backends
        .iter()
        .map(|b| {
            let series = format!(
                "clusterlab_backend_requests_total{{node=\"{}\",addr=\"{}\"}}",
                b["name"].as_str().unwrap(),
                b["addr"].as_str().unwrap()
            );
            sample(&metrics, &series).unwrap_or_else(|| panic!("no {series} in {metrics}"))
        })
        .sum();
    // Attempts, per node: a request tried on two nodes (a retry, after a
    // failed dial too) counts on each.
    assert!((30..=attempts).contains(&per_node), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}

#[test]
fn a_killed_node_turns_ejected_and_suspect_on_the_dashboard() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    let from_n2 = |status: &Value| -> Vec<String> {
        status["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["source"] == "n2")
            .filter_map(|e| e["kind"].as_str().map(String::from))
            .collect()
    };
    wait_until("the page to show n2's own events", SETTLE, || {
        !from_n2(&api_status(&cluster)).is_empty()
    });
    cluster.kill(1);

    // The snapshot asserted on below: n2 out, and n1 and n3 seen in (a busy
    // machine can make one of them miss a check for a moment).
    let mut status = Value::Null;
    wait_until(
        "n2 to show as ejected and down, n1 and n3 as up",
        SETTLE,
        || {
            status = api_status(&cluster);
            let health = |name: &str| {
                status["balancer"]["backends"]
                    .as_array()
                    .and_then(|b| b.iter().find(|b| b["name"] == name))
                    .map(|b| b["health"].clone())
            };
            let state_seen_by = |by: &str, of: &str| {
                view_of(&status, by)
                    .and_then(|view| view["status"]["members"].as_array())
                    .and_then(|m| m.iter().find(|m| m["name"] == of))
                    .map(|m| m["state"].clone())
            };
            health("n2").is_some_and(|h| h == "ejected")
                && state_seen_by("n1", "n2").is_some_and(|s| s != "alive")
                && ["n1", "n3"]
                    .iter()
                    .all(|n| health(n).is_some_and(|h| h == "healthy"))
                && state_seen_by("n1", "n3").is_some_and(|s| s == "alive")
                && state_seen_by("n3", "n1").is_some_and(|s| s == "alive")
        },
    );
    // The page stays up: n2's own view is an error, not a hang.
    let error = node_view(&status, "n2")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !error.is_empty(),
        "n2 cannot answer, and says why: {status}"
    );
    let kinds: Vec<&str> = status["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"backend.ejected"), "{kinds:?}");
    // What n2 said before it was killed stays on the page.
    assert!(
        from_n2(&status).contains(&"node.started".to_string()),
        "n2's events are gone from the page: {kinds:?}"
    );
    // Links to n2 show their last session, marked down; the others are up.
    let links = status["links"].as_array().expect("links");
    let down = |from: &str, to: &str| {
        links
            .iter()
            .find(|l| l["from"] == from && l["to"] == to)
            .unwrap_or_else(|| panic!("no link {from} → {to} in {links:?}"))["down"]
            .clone()
    };
    assert_eq!(down("balancer", "n2"), true, "{links:?}");
    assert_eq!(down("n1", "n2"), true, "{links:?}");
    let far_end = |from: &str, to: &str| {
        let link = links.iter().find(|l| l["from"] == from && l["to"] == to);
        link.map(|l| l["far_end"].clone()).unwrap_or_default()
    };
    assert_eq!(far_end("balancer", "n2"), "out of rotation", "{links:?}");
    // Suspect, or dead by now: what n1 says of n2 at that moment.
    assert!(
        ["suspect", "dead"].contains(&far_end("n1", "n2").as_str().unwrap_or_default()),
        "{links:?}"
    );
    for (from, to) in [
        ("balancer", "n1"),
        ("balancer", "n3"),
        ("n1", "n3"),
        ("n3", "n1"),
    ] {
        assert_eq!(down(from, to), false, "{from} → {to}: {links:?}");
    }

    let metrics = get(&cluster, "/metrics");
    let n2 = cluster.nodes[1].addr;
    let series =
        format!("clusterlab_backend_health{{node=\"n2\",addr=\"{n2}\",health=\"ejected\"}}");
    assert_eq!(sample(&metrics, &series), Some(1), "{metrics}");
}

/// The plain-HTTP port needs no certificate: a connection that sends
/// nothing, or half a request, is closed once the header timeout passes
/// (they used to stay open for good, each holding a file descriptor), and
/// the port goes on answering.
#[test]
fn a_connection_that_sends_no_whole_request_is_closed() {
    use std::io::{Read, Write};
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let _cluster = TestCluster::start_with(1, &["--metrics", &metrics_addr]);
    let silent = std::net::TcpStream::connect(&metrics_addr).unwrap();
    let mut half = std::net::TcpStream::connect(&metrics_addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Under hyper's own default (30 s), so that the test fails if ours is
    // not set.
    let patience = node::metrics::HEADER_READ_TIMEOUT * 2;
    for mut stream in [silent, half] {
        stream.set_read_timeout(Some(patience)).unwrap();
        let mut answer = Vec::new();
        // The end of the stream; a timeout here is an error, and fails.
        stream
            .read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("still open after {patience:?}: {e}"));
    }
    let (code, _) = http_get(&metrics_addr, "/metrics").expect("the port still answers");
    assert_eq!(code, 200);
}

/// A cluster of one keeps one copy of each key, whatever `--replicas` (3)
/// says, and the page says so, as `clusterlab status` does: it said N=3
/// with W=1 and R=1, a setup that looked broken, and copies that did not
/// exist.
#[test]
fn the_dashboard_of_a_cluster_of_one_says_one_copy() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    put_through_balancer(&cluster, 1);
    // A node's view has half a second to come: a busy machine may miss it.
    let mut status = Value::Null;
    wait_until("n1's view in /api/status", SETTLE, || {
        status = api_status(&cluster);
        view_of(&status, "n1").is_some_and(|view| !view["status"].is_null())
    });
    assert_eq!(node_view(&status, "n1")["status"]["copies"], 1, "{status}");
    let drawn = drawn_in(cluster.dir(), &status, &["healthy"]);
    let quorum = drawn["healthy"]["quorum"].as_str().unwrap();
    assert!(
        quorum.starts_with(
            "N=1 copy of each key (--replicas 3, but 1 member); a write waits for W=1, a read \
             for R=1. "
        ),
        "{quorum}"
    );
    // Its keys count as short of copies (the cluster has fewer members than
    // --replicas), and the page says why, not that they are being repaired.
    let mut short = status.clone();
    short["nodes"][0]["view"]["status"]["under_replicated"] = 5.into();
    let drawn = drawn_in(cluster.dir(), &short, &["healthy"]);
    let quorum = drawn["healthy"]["quorum"].as_str().unwrap();
    assert!(
        quorum.ends_with(
            "Only 1 node is alive for 3 copies: 5 keys (counted on each node that holds one) \
             have 1 copy until a node returns or joins."
        ),
        "{quorum}"
    );
}

#[test]
fn a_node_serves_its_metrics_when_asked_to() {
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let cluster = TestCluster::start_with(1, &["--metrics", &metrics_addr]);
    for i in 0..5 {
        cluster.client().args(["put", &format!("m/{i}"), "v"]).ok();
    }
    let (code, metrics) = http_get(&metrics_addr, "/metrics").expect("node metrics");
    assert_eq!(code, 200, "{metrics}");
    assert_eq!(
        sample(&metrics, "clusterlab_node_keys"),
        Some(5),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "clusterlab_node_requests_total"),
        Some(5),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "clusterlab_info{name=\"n1\",role=\"node\"}"),
        Some(1),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "clusterlab_node_member_state{member=\"n1\",state=\"alive\"}"
        ),
        Some(1),
        "{metrics}"
    );
    // A mistyped path is told what the port does serve.
    let (code, body) = http_get(&metrics_addr, "/metric").expect("node metrics port");
    assert_eq!(code, 404, "{body}");
    assert_eq!(body, "nothing at /metric; this port serves /metrics\n");
}

#[test]
fn a_busy_dashboard_port_stops_the_balancer_and_says_what_to_do() {
    let cluster = TestCluster::start(1);
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let busy = taken.local_addr().unwrap().to_string();
    // Given as a flag, then by its variable, as compose gives every setting,
    // which the error names: it is on no command line a learner can see.
    for (typed, from) in [
        (true, "(--dashboard)"),
        (false, "(--dashboard, from CLUSTERLAB_DASHBOARD)"),
    ] {
        let mut command = Command::new(bin("clusterlab-balancer"));
        tests::without_clusterlab_env(&mut command)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--nodes", &cluster.addrs()])
            .arg("--certs")
            .arg(&cluster.certs)
            .stderr(std::process::Stdio::piped());
        match typed {
            true => command.args(["--dashboard", &busy]),
            false => command.env("CLUSTERLAB_DASHBOARD", &busy),
        };
        let mut balancer = command.spawn().expect("running clusterlab-balancer");
        // One that went on serving would otherwise hold the test for good.
        let status = tests::exit_within(&mut balancer, SETTLE);
        assert!(
            status.is_some_and(|s| !s.success()),
            "the balancer did not stop at a busy --dashboard port: {status:?}"
        );
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut balancer.stderr.take().unwrap(), &mut stderr).unwrap();
        for needle in [busy.as_str(), from, "in use", "--dashboard off"] {
            assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
        }
    }
}
