//! `/metrics` in the Prometheus text format, and the plain-HTTP port that
//! serves it (`--metrics` on a node; the balancer serves it beside its
//! dashboard).
//!
//! Nothing on a request's path is added for metrics. At each scrape the
//! handler takes the same snapshot `Admin.Status` answers with (the counters
//! the process keeps anyway), and [`StatusMetrics`] writes it out with
//! prometheus-client. So `clusterlab status` and Prometheus can never
//! disagree, and a busy node pays nothing between scrapes.
//!
//! The port is plain HTTP, not mutual TLS: Prometheus and a browser can read
//! it without a client certificate. It shows names, states and counts, never
//! keys or values.

use std::{fmt, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use proto::{StatusResponse, member};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::warn;

/// What Prometheus expects from an OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The same text for a browser, which shows it: it offers to download
/// `application/openmetrics-text`, a type it does not know.
pub const PLAIN: &str = "text/plain; charset=utf-8";

/// OpenMetrics for a scraper that asks for it (Prometheus does, in its
/// `Accept` header), plain text for anyone else.
fn content_type(headers: &HeaderMap) -> &'static str {
    let asks_for_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|accept| accept.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    match asks_for_openmetrics {
        true => CONTENT_TYPE,
        false => PLAIN,
    }
}

/// The most connections the port holds at once. A browser tab keeps one or
/// two, Prometheus one; past this, new ones wait to be accepted, and the
/// process keeps its file descriptors for its own work.
const MAX_CONNECTIONS: usize = 256;

/// A connection that has not sent a whole request's headers within this
/// time, from its start or since its last answer, is closed: the port needs
/// no certificate, and a client that opens connections and sends nothing
/// must not hold them (and the process's descriptors) for good.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until the task is aborted (with the rest of
/// the process's background work). A failure to accept is logged, not fatal:
/// the cluster keeps serving. A path it does not serve is answered with the
/// `pages` it does, not an empty 404.
pub async fn serve(listener: TcpListener, router: Router, pages: &'static [&'static str]) {
    let router = router.fallback(move |uri: Uri| async move { not_here(&uri, pages) });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Said once in a while, not ten times a second.
    let repeats = certs::repeats::Repeats::default();
    loop {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: a moment, and again.
                if let Some(unsaid) = repeats.admit(&e.to_string()) {
                    let not_logged = certs::repeats::not_logged(unsaid);
                    warn!(error = %e, not_logged, "the HTTP port (metrics, dashboard) cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            // Its end, however it ends, is no news: a browser closing a tab.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

/// 404 for `uri`, naming the pages this port has.
fn not_here(uri: &Uri, pages: &[&str]) -> Response {
    let body = format!(
        "nothing at {}; this port serves {}\n",
        uri.path(),
        pages.join(", ")
    );
    (StatusCode::NOT_FOUND, body).into_response()
}

/// The `/metrics` response for `status`, to a request with `headers`.
pub fn exposition(status: StatusResponse, headers: &HeaderMap) -> Response {
    let mut registry = Registry::with_prefix("clusterlab");
    registry.register_collector(Box::new(StatusMetrics(status)));
    let mut body = String::new();
    match encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, content_type(headers))], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
            .into_response(),
    }
}

/// One process's `Admin.Status`, written as metric families: a node's store
/// and members, or a balancer's traffic and backends.
#[derive(Debug)]
pub struct StatusMetrics(pub StatusResponse);

impl Collector for StatusMetrics {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let status = &self.0;
        let mut out = Families(encoder);
        let role = status.role.as_str();
        out.gauge(
            "info",
            "Which process this is: its name and role, always 1.",
            [(vec![("name", status.name.as_str()), ("role", role)], 1)],
        )?;
        out.counter(
            "denied",
            "Calls refused (or event feeds ended) after the handshake: by the authorization \
             table, or because the caller's certificate was revoked or expired since its \
             connection opened.",
            [(vec![], status.denied)],
        )?;
        match role {
            "balancer" => balancer(status, &mut out),
            _ => node(status, &mut out),
        }
    }
}

fn node(status: &StatusResponse, out: &mut Families<'_>) -> fmt::Result {
    let me = status.members.iter().find(|m| m.is_self);
    out.counter(
        "node_requests",
        "KeyValue requests this node received, as coordinator.",
        [(vec![], status.requests)],
    )?;
    out.gauge(
        "node_keys",
        "Keys stored on this node, tombstones included (while the store cannot be read, \
         the last count read).",
        [(vec![], me.map_or(0, |m| m.keys))],
    )?;
    out.gauge(
        "node_store_ok",
        "1 while this node's store can be read and is not refused until a restart; 0 \
         when it is (`clusterlab status` says why and what to do). A full disk is not \
         counted: each write it refuses says so, and the next after space is freed is \
         taken.",
        [(vec![], u64::from(status.store.is_empty()))],
    )?;
    out.gauge(
        "node_faulted",
        "1 while a fault is injected into this node (`clusterlab fault`), else 0.",
        [(vec![], u64::from(!status.fault.is_empty()))],
    )?;
    out.gauge(
        "node_under_replicated_keys",
        "Keys held here that have lacked an up-to-date copy on another replica, \
         or waited to be handed off to the nodes that replicate them now, for \
         three anti-entropy rounds running.",
        [(vec![], status.under_replicated)],
    )?;
    out.gauge(
        "node_member_state",
        "Each member as this node sees it: 1 for its current state.",
        status.members.iter().map(|m| {
            let state = member::State::label_of(m.state);
            (vec![("member", m.name.as_str()), ("state", state)], 1)
        }),
    )?;
    out.gauge(
        "node_member_keys",
        "Keys each member reported in its last answer to a probe.",
        status
            .members
            .iter()
            .map(|m| (vec![("member", m.name.as_str())], m.keys)),
    )?;
    out.gauge(
        "node_quorum",
        "N, W and R: the copies of each key (fewer than --replicas while the cluster has \
         fewer members), and the replicas a write and a read wait for.",
        [
            (vec![("of", "replicas")], u64::from(status.copies())),
            (vec![("of", "write")], u64::from(status.write_quorum)),
            (vec![("of", "read")], u64::from(status.read_quorum)),
        ],
    )
}

fn balancer(status: &StatusResponse, out: &mut Families<'_>) -> fmt::Result {
    out.gauge(
        "balancer_policy",
        "The load-balancing policy in force: 1 for its name.",
        [(vec![("policy", status.policy.as_str())], 1)],
    )?;
    out.counter(
        "balancer_requests",
        "KeyValue requests received from clients.",
        [(vec![], status.requests)],
    )?;
    out.counter(
        "balancer_retries",
        "Attempts made on another node after one failed.",
        [(vec![], status.retries)],
    )?;
    out.counter(
        "balancer_retries_refused",
        "Retries the retry budget refused.",
        [(vec![], status.retries_refused)],
    )?;
    out.gauge(
        "backend_health",
        "Each backend: 1 for its health (healthy, ejected or waiting).",
        status.backends.iter().map(|b| {
            let mut labels = label(b);
            labels.push(("health", b.health.as_str()));
            (labels, 1)
        }),
    )?;
    out.gauge(
        "backend_in_flight",
        "Requests being forwarded to each backend now.",
        status.backends.iter().map(|b| (label(b), b.in_flight)),
    )?;
    out.counter(
        "backend_requests",
        "Attempts forwarded to each backend.",
        status.backends.iter().map(|b| (label(b), b.requests)),
    )?;
    out.counter(
        "backend_errors",
        "Attempts on each backend that the node failed (a refused bad request is not one).",
        status.backends.iter().map(|b| (label(b), b.errors)),
    )?;
    out.counter(
        "backend_ejections",
        "Times each backend was taken out of rotation.",
        status.backends.iter().map(|b| (label(b), b.ejections)),
    )
}

/// A backend's labels: its node's name and its address.
fn label(b: &proto::BackendStatus) -> Labels<'_> {
    vec![("node", b.name.as_str()), ("addr", b.addr.as_str())]
}

/// Labels of one sample, as name and value.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes metric families: a name, a help line, and one sample per label set.
struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    fn counter<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
    ) -> fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.family(name, help, MetricType::Counter, samples)
    }

    fn gauge<'l>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'l>, u64)>,
    ) -> fmt::Result {
        // Every gauge here is a count, far below i64::MAX.
        let samples = samples
            .into_iter()
            .map(|(l, v)| (l, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))));
        self.family(name, help, MetricType::Gauge, samples)
    }

    fn family<'l, M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        metric_type: MetricType,
        samples: impl IntoIterator<Item = (Labels<'l>, M)>,
    ) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, metric_type)?;
        for (labels, metric) in samples {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proto::{BackendStatus, MemberStatus};

    use super::*;

    /// What Prometheus sends (`scrape_protocols`' default).
    const PROMETHEUS_ACCEPTS: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
        text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    fn text(status: StatusResponse) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, PROMETHEUS_ACCEPTS.parse().unwrap());
        let response = exposition(status, &headers);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("a body");
        String::from_utf8(body.to_vec()).expect("UTF-8")
    }

    /// A browser (or curl) gets the text as text, which it shows, rather
    /// than a file to save.
    #[test]
    fn a_browser_gets_plain_text_and_prometheus_openmetrics() {
        let mut browser = HeaderMap::new();
        browser.insert(
            header::ACCEPT,
            "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
        );
        for headers in [HeaderMap::new(), browser] {
            let response = exposition(StatusResponse::default(), &headers);
            assert_eq!(response.headers()[header::CONTENT_TYPE], PLAIN);
        }
    }

    #[test]
    fn a_node_exposes_its_keys_members_and_quorums() {
        let member = |name: &str, state: member::State, keys, is_self| MemberStatus {
            name: name.into(),
            addr: format!("{name}:7100"),
            state: state as i32,
            keys,
            is_self,
            link: None,
        };
        let text = text(StatusResponse {
            name: "n1".into(),
            role: "node".into(),
            members: vec![
                member("n1", member::State::Alive, 42, true),
                member("n2", member::State::Suspect, 40, false),
            ],
            under_replicated: 7,
            replicas: 3,
            write_quorum: 2,
            read_quorum: 2,
            denied: 5,
            requests: 9,
            ..StatusResponse::default()
        });
        for line in [
            "clusterlab_info{name=\"n1\",role=\"node\"} 1",
            "clusterlab_denied_total 5",
            "clusterlab_node_keys 42",
            "clusterlab_node_store_ok 1",
            "clusterlab_node_faulted 0",
            "clusterlab_node_requests_total 9",
            "clusterlab_node_under_replicated_keys 7",
            "clusterlab_node_member_state{member=\"n2\",state=\"suspect\"} 1",
            "clusterlab_node_member_keys{member=\"n2\"} 40",
            "clusterlab_node_quorum{of=\"write\"} 2",
            // Two members: two copies of each key, though --replicas is 3.
            "clusterlab_node_quorum{of=\"replicas\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("# TYPE clusterlab_denied counter"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("backend"), "{text}");

        // A store that stopped after a failed fsync, and a fault, show.
        let troubled = self::text(StatusResponse {
            role: "node".into(),
            store: "takes no more writes after a failed fsync; restart the node".into(),
            fault: "paused".into(),
            ..StatusResponse::default()
        });
        for line in ["clusterlab_node_store_ok 0", "clusterlab_node_faulted 1"] {
            let found = troubled.lines().any(|l| l == line);
            assert!(found, "no `{line}` in:\n{troubled}");
        }
    }

    #[test]
    fn a_balancer_exposes_its_traffic_and_backends() {
        let text = text(StatusResponse {
            name: "lb".into(),
            role: "balancer".into(),
            policy: "least-request".into(),
            requests: 100,
            retries: 3,
            retries_refused: 1,
            backends: vec![BackendStatus {
                name: "n2".into(),
                addr: "10.0.0.2:7100".into(),
                health: "ejected".into(),
                reason: "connection refused".into(),
                in_flight: 4,
                requests: 60,
                errors: 2,
                ejections: 1,
            }],
            ..StatusResponse::default()
        });
        let labels = "node=\"n2\",addr=\"10.0.0.2:7100\"";
        for line in [
            "clusterlab_info{name=\"lb\",role=\"balancer\"} 1".to_string(),
            "clusterlab_balancer_policy{policy=\"least-request\"} 1".into(),
            "clusterlab_balancer_requests_total 100".into(),
            "clusterlab_balancer_retries_total 3".into(),
            "clusterlab_balancer_retries_refused_total 1".into(),
            format!("clusterlab_backend_health{{{labels},health=\"ejected\"}} 1"),
            format!("clusterlab_backend_in_flight{{{labels}}} 4"),
            format!("clusterlab_backend_requests_total{{{labels}}} 60"),
            format!("clusterlab_backend_errors_total{{{labels}}} 2"),
            format!("clusterlab_backend_ejections_total{{{labels}}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("node_keys"), "{text}");
    }
}
