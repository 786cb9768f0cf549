//! The balancer's HTTP/2 server, driven with the `h2` crate itself.
//!
//! Why not hyper's server (or tonic's, which is hyper's with layers on top)?
//! hyper serves any body, of any size, from any service, and every request
//! pays for that: it spawns a task per request, then pipes the response into
//! the stream while it watches for resets, checks the headers again for
//! connection-specific fields and fills in a content length. Counted with
//! callgrind, serving straight from h2 took the balancer from 87,500 to 84,200
//! instructions per forwarded request (docs/performance.md).
//!
//! Here one task per connection accepts its streams, and one task per request
//! calls the service and writes the answer: headers, then the body's frames.
//! A body of one message with its trailers (every forwarded `KeyValue`
//! answer) goes out at once. A body that streams (`Admin.Events`) is written
//! as flow control allows, and is dropped if the client resets the stream.
//!
//! What hyper did for the connection is done here too, with hyper's values:
//! flow-control windows, header and buffer limits, a keepalive ping, and a
//! graceful shutdown that lets the requests in flight finish.

use std::{
    convert::Infallible,
    future::{Future, poll_fn},
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use certs::listener::Conn;
use futures::FutureExt as _;
use h2::{
    RecvStream, SendStream,
    server::{Builder, SendResponse},
};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use node::in_flight::{self, InFlight, Running};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tower::{Service, ServiceExt};
use tracing::debug;

/// At most this many requests run at once on one client connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// A ping goes to a client this often, so a vanished one is noticed...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... when it has not answered within this (hyper's default).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows, header and send-buffer limits: hyper's server
/// defaults, which the balancer served with before.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// How long a client has to take the rest of a message once it first makes
/// no room for it, before its stream is reset: until then the message is
/// held here, and its request counted as in flight. A client that answers
/// pings but never reads, or makes room a byte at a time, would otherwise
/// hold both for as long as it likes. Each byte of room it makes adds
/// `1 / MIN_TAKE_RATE` s, so a slow but steady reader (a mebibyte over a
/// slow link) takes its answer whole, however long that takes. Per stream:
/// answers taken at once share the connection's room, which h2 hands out
/// in turn, so one that waits behind the others that long is reset however
/// fast they go (docs/security.md).
const STALLED: Duration = Duration::from_secs(10);
/// The slowest a client may take an answer (bytes a second) and still be
/// given more time than [`STALLED`]. Room is counted as the client makes
/// it, not as it reads, and the window it opened is room: one that opens a
/// large window and then reads nothing buys a second for each 32 KiB of it
/// that the answer fills (64 s for a 2 MiB window, hyper's; about two
/// minutes for an answer of 4 MiB, the most a message holds), no more.
const MIN_TAKE_RATE: f64 = 32.0 * 1024.0;
/// How many streams a client may get reset for its own protocol errors
/// before its connection is closed (hyper's default): a client that makes
/// the server do that work on purpose is attacking it, not talking to it.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// What every request carries: its body, as the client streams it.
pub type Request = http::Request<RequestBody>;

/// An HTTP/2 server that answers every request with one tower service, which
/// cannot fail: a failure is a gRPC status in the response.
#[derive(Debug, Clone)]
pub struct Server<S> {
    service: S,
    /// Counts each request until its answer is written, for the drain.
    in_flight: InFlight,
}

impl<S> Server<S>
where
    S: Service<Request, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    pub fn new(service: S, in_flight: InFlight) -> Self {
        Server { service, in_flight }
    }

    /// Serves HTTP/2 on every connection `incoming` yields until `signal`
    /// completes; then stops accepting, asks every client to finish (GOAWAY) and
    /// waits for the requests in flight (the caller bounds that wait). It cannot
    /// fail: a connection that breaks ends alone.
    pub async fn serve(
        self,
        mut incoming: impl Stream<Item = std::io::Result<Conn>> + Unpin,
        signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Result<(), Infallible> {
        // Every connection holds a receiver: `true` asks it to wind down, and
        // when the last one has gone, every connection has ended.
        let (draining, connections) = watch::channel(false);
        tokio::pin!(signal);
        loop {
            let conn = tokio::select! {
                () = &mut signal => break,
                next = incoming.next() => match next {
                    Some(Ok(conn)) => conn,
                    // The accept loop logs what it refuses; the next may do better.
                    Some(Err(e)) => {
                        debug!(cause = %e, "connection not accepted");
                        continue;
                    }
                    None => break,
                },
            };
            tokio::spawn(self.clone().serve_connection(conn, connections.clone()));
        }
        // Stop accepting: dropping the stream stops the accept loop.
        drop(incoming);
        drop(connections);
        let _ = draining.send(true);
        draining.closed().await;
        Ok(())
    }

    /// Serves one client connection until the client closes it, it breaks, the
    /// client stops answering pings, or a drain has let its requests finish.
    async fn serve_connection(self, conn: Conn, mut draining: watch::Receiver<bool>) {
        // Who is calling, for the authorization check and `WhoAmI`: every request
        // on this connection carries it.
        let peer = conn.connect_info();
        let handshake = Builder::new()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            // A balancer stopped for a while (`docker pause`) wakes to every
            // request its clients sent and gave up on meanwhile: with h2's
            // 20 it closed a `load`'s connection (ENHANCE_YOUR_CALM).
            .max_pending_accept_reset_streams(node::server::MAX_PENDING_RESETS)
            .handshake::<_, Bytes>(conn);
        let mut connection = tokio::select! {
            handshake = handshake => match handshake {
                Ok(connection) => connection,
                Err(e) => {
                    debug!(cause = %e, "client's HTTP/2 handshake failed");
                    return;
                }
            },
            _ = draining.wait_for(|draining| *draining) => return,
        };
        let ping_pong = connection.ping_pong().expect("asked for only once");
        let keepalive = keepalive(ping_pong, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT);
        tokio::pin!(keepalive);
        let mut winding_down = false;
        loop {
            tokio::select! {
                accepted = connection.accept() => match accepted {
                    Some(Ok((request, respond))) => {
                        let mut request = request.map(RequestBody::new);
                        request.extensions_mut().insert(peer.clone());
                        let counted = in_flight::counts(request.uri().path());
                        let running = counted.then(|| self.in_flight.start());
                        let response = self.service.clone().oneshot(request);
                        tokio::spawn(answer(response, respond, running));
                    }
                    Some(Err(e)) => {
                        debug!(cause = %e, "client connection ended");
                        return;
                    }
                    None => return,
                },
                _ = draining.wait_for(|draining| *draining), if !winding_down => {
                    // GOAWAY: no new requests; `accept` ends once those in flight are done.
                    connection.graceful_shutdown();
                    winding_down = true;
                }
                reason = &mut keepalive => {
                    debug!(%reason, "closing a client connection");
                    return;
                }
            }
        }
    }
}

/// Pings every `interval` until a ping is not answered within `timeout` or
/// fails; returns why. Both sides of the balancer's HTTP/2 use it: client
/// connections here, node connections in [`crate::connection`].
pub async fn keepalive(
    mut ping_pong: h2::PingPong,
    interval: Duration,
    timeout: Duration,
) -> String {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("ping failed: {e}"),
            Err(_) => return format!("no answer to a ping within {timeout:?}"),
        }
    }
}

/// Waits for the service's response and writes it to the stream: headers,
/// then the body's data and trailers. A body that ends with an error resets
/// the stream, as hyper did.
///
/// A client that resets the stream first (it gave up: Ctrl-C, its deadline)
/// drops the request where it is, as hyper's server does: waiting for a
/// node, or queued for a connection to one, it goes no further, and a request
/// already sent is reset on the node too. A write the client abandoned must
/// not be applied later, after a newer one it went on to make.
///
/// `_running` counts the request until the answer is written, or given up
/// (`None`: not counted, a health watch).
async fn answer<F>(response: F, mut respond: SendResponse<Bytes>, _running: Option<Running>)
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, Infallible>>,
{
    // A stream already reset when it was taken up (its client gave up while
    // this balancer was frozen, and the write and its reset were read
    // together): h2 can hand it out all the same, its message whole. It is
    // dropped before anything goes to a node. (Defensive: a test cannot make
    // the reads fall that way every time.)
    if let Some(reason) = poll_fn(|cx| respond.poll_reset(cx)).now_or_never() {
        debug!(reason = ?reason, "the client reset the stream before it was taken up; dropped");
        return;
    }
    let response = tokio::select! {
        biased;
        Ok(response) = response => response,
        reason = poll_fn(|cx| respond.poll_reset(cx)) => {
            debug!(reason = ?reason, "the client reset the stream; its request is dropped");
            return;
        }
    };
    let (head, mut body) = response.into_parts();
    let end = body.is_end_stream();
    let mut stream = match respond.send_response(http::Response::from_parts(head, ()), end) {
        Ok(stream) => stream,
        Err(e) => {
            debug!(cause = %e, "response not sent");
            return;
        }
    };
    if end {
        return;
    }
    loop {
        // A stream that never ends on its own (`Admin.Events`) ends when the
        // client resets it. The body first: a forwarded answer is all there.
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let (sent, last) = match frame.map(|frame| frame.map(Frame::into_data)) {
            None => (stream.send_data(Bytes::new(), true), true),
            Some(Ok(Ok(data))) => (send_data(&mut stream, data).await, false),
            Some(Ok(Err(frame))) => match frame.into_trailers() {
                Ok(trailers) => (stream.send_trailers(trailers), true),
                Err(_) => continue,
            },
            Some(Err(status)) => {
                debug!(%status, "response body failed; resetting the stream");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
        };
        if let Err(e) = sent {
            debug!(cause = %e, "response not sent");
            return;
        }
        if last {
            return;
        }
    }
}

/// Sends `data` as the client's flow-control window allows. A message that
/// fits the window goes at once; a larger one goes in pieces as the client
/// makes room, so a client that stops reading holds up only its own stream,
/// and that for [`STALLED`] at most, plus the time the room it made is worth
/// at [`MIN_TAKE_RATE`]: then the stream is reset (CANCEL).
async fn send_data(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    // From the first time the client makes no room, not from the last time
    // it made some: a byte of room now and then must not keep the message.
    let mut give_up_at: Option<tokio::time::Instant> = None;
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let mut capacity = stream.capacity();
        while capacity == 0 {
            let deadline = *give_up_at.get_or_insert_with(|| tokio::time::Instant::now() + STALLED);
            let room = tokio::time::timeout_at(deadline, poll_fn(|cx| stream.poll_capacity(cx)));
            capacity = match room.await {
                Ok(Some(capacity)) => {
                    let capacity = capacity?;
                    if let Some(at) = &mut give_up_at {
                        *at += Duration::from_secs_f64(capacity as f64 / MIN_TAKE_RATE);
                    }
                    capacity
                }
                // The stream was reset or closed; `send_data` says which.
                Ok(None) => return stream.send_data(data, false),
                Err(_) => {
                    debug!("the client did not take its answer in time; resetting the stream");
                    stream.send_reset(h2::Reason::CANCEL);
                    return Err(h2::Reason::CANCEL.into());
                }
            };
        }
        let piece = data.split_to(capacity.min(data.len()));
        stream.send_data(piece, false)?;
    }
    Ok(())
}

/// A request's body as the client streams it. Each piece read gives the
/// client the same room back (flow control), so a request body is never held
/// up by a window the balancer forgot to open.
#[derive(Debug)]
pub struct RequestBody {
    stream: RecvStream,
    data_done: bool,
    done: bool,
}

impl RequestBody {
    fn new(stream: RecvStream) -> Self {
        let done = stream.is_end_stream();
        RequestBody {
            stream,
            data_done: done,
            done,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only if the stream is gone, which the next read reports.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.stream.poll_trailers(cx));
        this.done = true;
        Poll::Ready(trailers.transpose().map(|t| t.map(Frame::trailers)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
