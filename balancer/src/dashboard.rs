//! The dashboard: one web page that shows the cluster as the balancer sees it,
//! for a learner's browser or a workshop's projector (`--dashboard`, port 8080).
//!
//! - `/` is the page: one file ([`PAGE`]), no build step and nothing fetched
//!   from elsewhere. Once a second it asks for `/api/status` and redraws.
//! - `/api/status` is everything on the page, as JSON: the balancer's status
//!   (the shape `clusterlab --json status` prints), each node's own view
//!   (its members, keys and repair backlog, through `Admin.Status` on the
//!   pooled connection), the TLS of every link, and the recent events of the
//!   balancer and the nodes (a node that cannot be asked, by what it
//!   reported last).
//! - `/metrics` is the balancer's status for Prometheus ([`node::metrics`]).
//!
//! Plain HTTP and read-only: it shows names, states and counts, never keys or
//! values, and changes nothing.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header::CONTENT_TYPE},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use certs::{Identity, authz::Denials, tls::TlsMode};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared, join_all},
};
use node::{events::Events, metrics};
use proto::{Event, Link, StatusResponse, json, member};
use serde_json::{Value, json};

use crate::{
    admin,
    backend::{Backend, Health},
    forward::Router as Forwarder,
};

/// The page, served as it is.
pub const PAGE: &str = include_str!("dashboard.html");

/// A node that has not answered for its view by then is shown as unreachable;
/// the page must keep moving while a node hangs.
const NODE_VIEW_TIMEOUT: Duration = Duration::from_millis(500);

/// The most recent events the page shows, from all processes together.
const RECENT_EVENTS: usize = 40;

/// How long an answer to `/api/status` is given again to whoever asks, from
/// when it began to be made: the page asks once a second, so every browser
/// still gets a new one each time.
const ANSWER_FRESH_FOR: Duration = Duration::from_millis(250);

/// What the dashboard reads from.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub router: Arc<Forwarder>,
    pub events: Events,
    pub denials: Arc<Denials>,
    /// The certificate the balancer shows its clients; `None` in plaintext.
    pub identity: Option<Identity>,
    /// How clients reach the balancer: the page's first link row shows it,
    /// so nobody mistakes the sniffing lab's plaintext for the real thing.
    pub tls: TlsMode,
    /// `/api/status`' answer as sent, shared ([`OneAtATime`]).
    pub answers: OneAtATime<Bytes>,
}

impl Dashboard {
    /// What [`Dashboard::routes`] serves, for the answer to any other path.
    pub const PAGES: &'static [&'static str] = &["/ (the dashboard)", "/api/status", "/metrics"];

    /// The routes: the page, its data, and the metrics.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/api/status", get(api_status))
            .route("/metrics", get(scrape))
            .with_state(self)
    }

    fn status(&self) -> StatusResponse {
        admin::status(&self.router, &self.denials)
    }
}

async fn scrape(State(dashboard): State<Dashboard>, headers: HeaderMap) -> Response {
    metrics::exposition(dashboard.status(), &headers)
}

/// Every browser with the page open asks once a second, and so can any
/// page elsewhere that asks in a loop: they share one answer, so that the
/// nodes are asked for their views at most once in [`ANSWER_FRESH_FOR`].
async fn api_status(State(dashboard): State<Dashboard>) -> Response {
    let making = dashboard.clone();
    let answer = dashboard.answers.get(ANSWER_FRESH_FOR, || async move {
        Bytes::from(serde_json::to_vec(&answer(&making).await).expect("JSON of a Value"))
    });
    ([(CONTENT_TYPE, "application/json")], answer.await).into_response()
}

/// What `/api/status` answers: see the module's doc.
async fn answer(dashboard: &Dashboard) -> Value {
    let backends = dashboard.router.backends.list();
    let views = join_all(backends.iter().map(|b| node_view(b))).await;
    // Counted once the nodes have answered (up to NODE_VIEW_TIMEOUT), with
    // the moment they were: the page makes rates of the counters between
    // answers, and the time between them is this, not their arrivals'.
    let status = dashboard.status();
    let at_unix_ms = node::version::unix_ms();

    let mut events = dashboard.events.recent();
    let mut links = links(dashboard, &backends);
    let mut nodes = Vec::new();
    for (backend, view) in backends.iter().zip(views) {
        let view = match view {
            Ok((status, node_events)) => {
                events.extend(node_events);
                links.extend(member_links(&status));
                json!({"status": json::status(&status)})
            }
            Err(why) => {
                // What it said before it went quiet stays on the page.
                events.extend(backend.last_events());
                json!({"error": why})
            }
        };
        nodes.push(json!({"backend": *backend.name(), "view": view}));
    }
    // Every process's events in the order they happened, by each one's clock
    // (on one machine or one compose network, the clocks agree closely).
    events.sort_by_key(|e| e.at_unix_ms);
    let skip = events.len().saturating_sub(RECENT_EVENTS);

    json!({
        "at_unix_ms": at_unix_ms,
        "balancer": json::status(&status),
        "links": links,
        "nodes": nodes,
        "events": events[skip..].iter().map(json::event).collect::<Vec<_>>(),
    })
}

/// One answer made at a time, and given to everyone who asks while it is
/// being made or soon after: a single flight. Each is made on a task of its
/// own, so that it is finished even if all who asked went away (a closed
/// tab): left half-made, it would be finished, stale, for the next to ask.
pub struct OneAtATime<T> {
    last: Arc<Mutex<Option<Begun<T>>>>,
}

/// The answer last begun: when, whether its making has finished, and it.
type Begun<T> = (tokio::time::Instant, tokio::task::AbortHandle, Answer<T>);

/// An answer being made, or made, that every clone of it gets.
type Answer<T> = Shared<BoxFuture<'static, T>>;

impl<T: Clone + Send + Sync + 'static> OneAtATime<T> {
    /// The answer: the one being made, or one begun less than `fresh_for`
    /// ago; else a new one, from `make`. (Must be called inside the tokio
    /// runtime.)
    pub fn get<F>(&self, fresh_for: Duration, make: impl FnOnce() -> F) -> Answer<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut last = self.last.lock().expect("answers poisoned");
        if let Some((began, making, answer)) = last.as_ref()
            && (!making.is_finished() || began.elapsed() < fresh_for)
        {
            return answer.clone();
        }
        let task = tokio::spawn(make());
        let making = task.abort_handle();
        let answer = async move { task.await.expect("making an answer panicked") }
            .boxed()
            .shared();
        *last = Some((tokio::time::Instant::now(), making, answer.clone()));
        answer
    }
}

// Not derived: they would ask the same of `T`, which needs neither.
impl<T> Default for OneAtATime<T> {
    fn default() -> Self {
        OneAtATime {
            last: Arc::default(),
        }
    }
}

impl<T> Clone for OneAtATime<T> {
    fn clone(&self) -> Self {
        OneAtATime {
            last: self.last.clone(),
        }
    }
}

impl<T> fmt::Debug for OneAtATime<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneAtATime").finish_non_exhaustive()
    }
}

/// One node's view, or why there is none.
async fn node_view(backend: &Backend) -> Result<(StatusResponse, Vec<Event>), String> {
    if backend.is_gone() {
        return Err("its address no longer resolves: its container was stopped or removed".into());
    }
    match tokio::time::timeout(NODE_VIEW_TIMEOUT, backend.node_view()).await {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(status)) => Err(format!(
            "{}: {}",
            proto::code_name(status.code()),
            status.message()
        )),
        Err(_) => Err(format!("no answer within {NODE_VIEW_TIMEOUT:?}")),
    }
}

/// The TLS of every link the balancer is part of: clients to it, and it to
/// each node (as the node saw that connection).
fn links(dashboard: &Dashboard, backends: &[Arc<Backend>]) -> Vec<Value> {
    let name = &dashboard.router.name;
    let mut clients = json!({
        "from": "clients",
        "to": name,
        "tls": dashboard.tls == TlsMode::Mtls,
        "identity": dashboard.identity.as_ref().map(Identity::uri),
    });
    // The one version our servers accept; the cipher suite is each
    // client's to settle, so there is none to show. (No `version` at all
    // in plaintext: a null one is a link not known yet.)
    if dashboard.tls == TlsMode::Mtls {
        clients["version"] = json!(certs::tls::ONLY_VERSION);
    }
    let mut links = vec![clients];
    links.extend(backends.iter().map(|b| {
        // `None` until the node has passed a health check and been asked.
        let link = b.link().map(|answer| {
            let mut link = json::link(&Link {
                tls_version: answer.tls_version,
                cipher_suite: answer.cipher_suite,
                identity: answer.server_identity,
            });
            link["seen_as"] = json!(non_empty(answer.peer_identity));
            link
        });
        let ejected = matches!(b.health(), Health::Ejected { .. });
        link_row(name, &b.name(), link, ejected.then_some("out of rotation"))
    }));
    links
}

/// The links a node holds to the other members (replication, probes), as it
/// reports them in its own status.
fn member_links(status: &StatusResponse) -> impl Iterator<Item = Value> + '_ {
    status.members.iter().filter(|m| !m.is_self).map(|m| {
        let link = m.link.as_ref().map(json::link);
        let down =
            (m.state != member::State::Alive as i32).then(|| member::State::label_of(m.state));
        link_row(&status.name, &m.name, link, down)
    })
}

/// One row of the links table. `link` is `None` before the first handshake
/// (shown as "not known yet"). A link whose far end is out of rotation, or
/// not alive, is marked `down`, with what the far end is (`far_end`: "out
/// of rotation", "suspect", "dead"): what it shows is the last session it
/// had. (A suspect member may still be connected, only slow to answer.)
fn link_row(from: &str, to: &str, link: Option<Value>, far_end: Option<&str>) -> Value {
    let mut row = match link {
        Some(mut link) => {
            link["down"] = json!(far_end.is_some());
            link["far_end"] = json!(far_end);
            link
        }
        None => json!({"tls": false, "version": null}),
    };
    row["from"] = json!(from);
    row["to"] = json!(to);
    row
}

/// `None` (JSON `null`) for an empty string: plaintext has no identities.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Asked by many at once, the answer is made once; asked again within
    /// `fresh_for` of its beginning, it is given again; after, made anew.
    #[tokio::test(start_paused = true)]
    async fn an_answer_is_made_once_for_everyone_who_asks_meanwhile() {
        let answers = OneAtATime::<usize>::default();
        let made = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let ask = || {
            let (made, mut released) = (made.clone(), released.clone());
            answers.get(ANSWER_FRESH_FOR, move || async move {
                let _ = released.wait_for(|go| *go).await;
                made.fetch_add(1, Ordering::SeqCst) + 1
            })
        };
        // Ten requests while the first answer is being made, for longer
        // than an answer stays fresh: one answer.
        let waiting: Vec<_> = (0..10).map(|_| tokio::spawn(ask())).collect();
        tokio::time::advance(ANSWER_FRESH_FOR * 2).await;
        let late = tokio::spawn(ask());
        release.send(true).unwrap();
        for answer in waiting.into_iter().chain([late]) {
            assert_eq!(answer.await.unwrap(), 1);
        }
        assert_eq!(made.load(Ordering::SeqCst), 1);
        // Made, and begun longer ago than it stays fresh: made anew, and
        // that one given again within its freshness.
        assert_eq!(ask().await, 2);
        tokio::time::advance(ANSWER_FRESH_FOR / 2).await;
        assert_eq!(ask().await, 2);
        tokio::time::advance(ANSWER_FRESH_FOR).await;
        assert_eq!(ask().await, 3);
    }

    /// An answer whose askers all went away (a closed tab) is made all the
    /// same, and is not given, stale, to the next to ask long after: it was
    /// left half-made, and finished for them.
    #[tokio::test(start_paused = true)]
    async fn an_answer_nobody_waits_for_is_finished_and_not_given_stale() {
        let answers = OneAtATime::<tokio::time::Instant>::default();
        let (release, released) = tokio::sync::watch::channel(false);
        // An answer says when it was begun: asked for, not first polled.
        let ask = || {
            let mut released = released.clone();
            answers.get(ANSWER_FRESH_FOR, move || {
                let began = tokio::time::Instant::now();
                async move {
                    let _ = released.wait_for(|go| *go).await;
                    began
                }
            })
        };
        let first = tokio::time::Instant::now();
        // Asked, begun, and left: the tab closed.
        let mut left = ask();
        assert!(futures::poll!(&mut left).is_pending());
        drop(left);
        release.send(true).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        let began = ask().await;
        assert!(
            began >= first + Duration::from_secs(10),
            "{:?}",
            began - first
        );
    }
}
