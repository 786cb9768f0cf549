//! Counting the requests a server is working on, so that a drain knows when
//! it is done.
//!
//! A graceful HTTP/2 shutdown sends GOAWAY and then waits for the client to
//! answer a PING before it closes the connection. A client that is paused
//! (`docker pause`, SIGSTOP) never answers, so the server would wait out its
//! whole drain deadline with nothing left to do, and `docker stop` would kill
//! it first. Counting requests, bodies included, lets the drain end once every
//! request has finished ([`crate::lifecycle::serve_with_drain`]), a health
//! `Watch` excepted ([`counts`]). The balancer's own HTTP/2 server counts its
//! requests with the same type, and the same exception.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;
use tonic::{Status, body::Body, codegen::Bytes};
use tower::{Layer, Service};

/// How many requests are running: a tower layer for the server, and the
/// count for whoever drains it. Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Counter>);

#[derive(Debug, Default)]
struct Counter {
    /// Requests admitted whose answers are not yet handed to HTTP/2 whole
    /// (which sends them as fast as each client's window lets it).
    running: AtomicUsize,
    /// How many have finished, ever: a drain waits for a quiet moment in
    /// which this does not move.
    finished: AtomicU64,
    /// Set once someone waits for the count to reach zero: only then does a
    /// finishing request need to wake anyone.
    watched: AtomicBool,
    /// Wakes [`InFlight::idle`] when `running` reaches zero.
    idle: Notify,
}

impl InFlight {
    /// Requests admitted and not yet answered in full.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// Returns once no request has run or finished for `quiet`. A request
    /// may still start on a connection that has not seen the GOAWAY yet, and
    /// one that just finished may still have its answer on the way out.
    pub async fn settled(&self, quiet: Duration) {
        loop {
            self.idle().await;
            let finished = self.finished();
            tokio::time::sleep(quiet).await;
            if self.running() == 0 && self.finished() == finished {
                return;
            }
        }
    }

    /// Requests finished since the start: unchanged over a while, none
    /// has come and gone meanwhile.
    fn finished(&self) -> u64 {
        self.0.finished.load(Ordering::SeqCst)
    }

    /// Returns once no request is running.
    async fn idle(&self) {
        self.0.watched.store(true, Ordering::SeqCst);
        loop {
            let finished = self.0.idle.notified();
            tokio::pin!(finished);
            // Registered before the count is read, so a request finishing
            // between the two still wakes us.
            finished.as_mut().enable();
            if self.running() == 0 {
                return;
            }
            finished.await;
        }
    }

    /// Counts a request until the returned guard is dropped (the layer does
    /// this for a tonic server; the balancer's own server calls it).
    pub fn start(&self) -> Running {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        Running(self.0.clone())
    }
}

/// One request, counted until dropped.
#[derive(Debug)]
pub struct Running(Arc<Counter>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::SeqCst);
        let left = self.0.running.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == 0 && self.0.watched.load(Ordering::SeqCst) {
            self.0.idle.notify_waiters();
        }
    }
}

impl<S> Layer<S> for InFlight {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            in_flight: self.clone(),
        }
    }
}

/// `grpc.health.v1.Health/Watch`, the one stream a drain does not wait for.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Whether a request to `path` is counted. A health watch is not: it is
/// answered until its client hangs up, and a drain that waited for it would
/// wait out its deadline. It has nothing left to tell once the process says
/// NOT_SERVING, an early step of the drain.
pub fn counts(path: &str) -> bool {
    path != HEALTH_WATCH
}

/// The service [`InFlight`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // A health watch goes uncounted ([`counts`]).
        if !counts(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let running = self.in_flight.start();
        let response = self.inner.call(request);
        Box::pin(async move {
            // A streamed answer is still running after its headers: the
            // count goes with the body, and ends when the body is done. (An
            // answer with no body, a gRPC error's, ends it here: `Body::new`
            // makes an empty body of one at its end.)
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(CountedBody {
                    body,
                    _running: running,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted until it is dropped.
struct CountedBody {
    body: Body,
    /// Held for its `Drop`, which ends the count.
    _running: Running,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests count until their answers' bodies are done, but a health
    /// watch, which lasts as long as its client wants, does not count.
    #[tokio::test]
    async fn answers_count_until_done_but_a_health_watch_does_not() {
        let in_flight = InFlight::default();
        // A body not yet read: an empty one would be done at once.
        let body = || Body::new(http_body_util::Full::new(Bytes::from_static(b"answer")));
        let answer =
            move |_: http::Request<()>| async move { Ok::<_, Status>(http::Response::new(body())) };
        let mut service = in_flight.layer(tower::service_fn(answer));
        let call = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        let watch = service.call(call(HEALTH_WATCH)).await.unwrap();
        assert_eq!(in_flight.running(), 0);
        let get = service
            .call(call("/clusterlab.v1.KeyValue/Get"))
            .await
            .unwrap();
        assert_eq!(in_flight.running(), 1);
        drop(get);
        assert_eq!(in_flight.running(), 0);
        drop(watch);
    }

    #[tokio::test]
    async fn idle_waits_for_the_last_request_to_finish() {
        let in_flight = InFlight::default();
        // Nothing running: idle at once.
        in_flight.idle().await;

        let first = in_flight.start();
        let second = in_flight.start();
        assert_eq!(in_flight.running(), 2);
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "idle with a request still running");
        drop(second);
        // A lost wake-up would hang here: fail instead.
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the last request to finish woke nobody")
            .unwrap();
        assert_eq!(in_flight.running(), 0);
        assert_eq!(in_flight.finished(), 2);
    }

    /// A request that comes and goes during the quiet spell starts it again.
    /// (The clock is tokio's paused one: it moves only as the test says.)
    #[tokio::test(start_paused = true)]
    async fn settled_waits_for_a_whole_quiet_spell() {
        let in_flight = InFlight::default();
        let first = in_flight.start();
        let start = tokio::time::Instant::now();
        let settled = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.settled(Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(900)).await;
        drop(in_flight.start());
        settled.await.unwrap();
        // Quiet from 0.5 s, broken at 1.4 s, quiet again for a second after.
        assert!(
            start.elapsed() >= Duration::from_millis(2400),
            "{:?}",
            start.elapsed()
        );
    }

    /// The count lasts as long as the answer's body, not just its headers.
    #[tokio::test]
    async fn a_request_runs_until_its_body_is_dropped() {
        let in_flight = InFlight::default();
        // A body with something in it: an empty one is done as it is made.
        let routes = tower::service_fn(|_: http::Request<()>| async {
            let body = http_body_util::Full::new(Bytes::from_static(b"answer"));
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new(body)))
        });
        let mut counted = in_flight.layer(routes);
        let response = counted.call(http::Request::new(())).await.unwrap();
        assert_eq!(in_flight.running(), 1, "answered, but the body is not done");
        drop(response);
        assert_eq!(in_flight.running(), 0);
        // A request whose answer never came (its future dropped) ends too.
        drop(counted.call(http::Request::new(())));
        assert_eq!(in_flight.running(), 0);
    }
}
